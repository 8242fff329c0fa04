"""Lab set-up for the ktconnect tests.

Every test talks to the lab (``testbed/up``); when the lab is down, every test fails
with a message saying so (never a skip). One namespace is made for the run with
``testbed/test-namespace create py --restricted`` (echo app, kt's Role bound to a
ServiceAccount, a kubeconfig that authenticates as that ServiceAccount only) and
deleted at the end.

The plugin's ``kt_connect_options`` fixture is overridden here, so ``kt_session``,
``kt_requests`` and ``kt_httpx`` work in that namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[3]
STATE = Path(os.environ.get("KTLAB_STATE", "/run/ktlab"))


def _lab_env() -> Dict[str, str]:
    """The variables /run/ktlab/env exports (KUBECONFIG, PATH with the lab's kubectl,
    KT_SHADOW_BIN, ...)."""
    env_file = STATE / "env"
    if not env_file.exists():
        pytest.fail(
            f"the lab is not up ({env_file} is missing): run `sudo testbed/up` first",
            pytrace=False,
        )
    out = subprocess.run(
        ["bash", "-c", f"set -a; source {env_file}; env -0"],
        check=True,
        capture_output=True,
    ).stdout
    env = dict(os.environ)
    for entry in out.split(b"\0"):
        if b"=" in entry:
            k, v = entry.decode().split("=", 1)
            env[k] = v
    return env


@dataclass
class Lab:
    """The lab, as the admin sees it."""

    env: Dict[str, str]

    def kubectl(self, *args: str) -> str:
        done = subprocess.run(
            ["kubectl", "--request-timeout=30s", *args],
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    @property
    def admin_kubeconfig(self) -> str:
        return self.env["KUBECONFIG"]


@dataclass
class Namespace:
    """A test namespace: the echo app, kt's Role, and a kubeconfig scoped to it."""

    lab: Lab
    name: str
    kubeconfig: str

    def kubectl(self, *args: str) -> str:
        return self.lab.kubectl("-n", self.name, *args)

    def connect_options(self) -> Dict[str, Any]:
        return {"kubeconfig": self.kubeconfig, "namespace": self.name}

    def objects_of_session(self, session_id: str) -> List[str]:
        """Names of the pods and Secrets labelled with the session id."""
        out = self.kubectl("get", "pods,secrets", "-l", f"kt.dev/session={session_id}", "-o", "name")
        return out.split()

    def echo_pods(self) -> List[str]:
        out = self.kubectl("get", "pods", "-l", "app=echo", "-o", "jsonpath={.items[*].metadata.name}")
        return out.split()

    def wait_gone(self, selector: str, timeout: float = 90.0) -> List[str]:
        """Waits until nothing matches ``selector`` (pods and Secrets); returns what
        is left when ``timeout`` runs out (empty when all went)."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.kubectl("get", "pods,secrets", "-l", selector, "-o", "name").split()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)


@pytest.fixture(scope="session")
def lab() -> Lab:
    lab = Lab(_lab_env())
    try:
        lab.kubectl("get", "--raw", "/readyz")
    except AssertionError as e:
        pytest.fail(f"the lab's API server does not answer: {e}", pytrace=False)
    except FileNotFoundError:
        pytest.fail("kubectl is not on the lab's PATH (/run/ktlab/bin): is the lab up?", pytrace=False)
    return lab


def make_namespace(lab: Lab, prefix: str) -> Iterator[Namespace]:
    """A new restricted namespace with the shipped Role bound to a test user (made by
    ``testbed/test-namespace``), deleted when the generator is closed."""
    made = subprocess.run(
        [str(ROOT / "testbed" / "test-namespace"), "create", prefix, "--restricted"],
        env=lab.env,
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.fail(f"testbed/test-namespace create failed: {made.stderr.strip()}", pytrace=False)
    values = dict(line.split("=", 1) for line in made.stdout.split() if "=" in line)
    ns = Namespace(lab, values["KT_TEST_NAMESPACE"], values["KT_TEST_KUBECONFIG"])
    try:
        yield ns
    finally:
        subprocess.run(
            [str(ROOT / "testbed" / "test-namespace"), "delete", ns.name],
            env=lab.env,
            check=False,
        )


@pytest.fixture(scope="session")
def namespace(lab: Lab) -> Iterator[Namespace]:
    yield from make_namespace(lab, "py")


@pytest.fixture(scope="session")
def kt_connect_options(namespace: Namespace) -> Dict[str, Any]:
    """The plugin's options fixture, pointed at the test namespace."""
    return namespace.connect_options()


def echo_reply(body: bytes) -> Dict[str, Any]:
    """The echo app's JSON answer to /hello."""
    return json.loads(body)
