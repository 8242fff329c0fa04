"""Swap and expose from Python, against the lab, in a namespace enforcing the
restricted Pod Security Standard, as a ServiceAccount bound to the shipped Roles only
(``vpn.yaml`` and ``inbound.yaml``): a pod in the cluster calls the Service and gets
the answer of a server in this process (a token only it knows); after the ``with``
block the Service and the Deployment equal a snapshot taken before and no kt object
is left."""

from __future__ import annotations

import asyncio
import http.server
import json
import secrets
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, Optional

import pytest

import ktconnect
from ktconnect import events
from conftest import ROOT, Lab, Namespace

# Every kind of object kt may create for a swap or an expose.
KT_KINDS = "pods,services,leases,serviceaccounts,roles,rolebindings,secrets"

CLIENT_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 0
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: client
    image: kt.invalid/shell
    command: ["sleep", "3600"]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
"""


class LocalServer:
    """An HTTP server on 127.0.0.1 that answers every request with its token."""

    def __init__(self) -> None:
        self.token = "py-laptop-" + secrets.token_hex(8)
        token = self.token.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self.send_response(200)
                self.send_header("content-length", str(len(token)))
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(token)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local() -> Iterator[LocalServer]:
    server = LocalServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def inbound(lab: Lab) -> Iterator[Namespace]:
    """A namespace with the echo app, enforcing restricted from the start, and a
    kubeconfig for a ServiceAccount bound to the shipped Roles kt-vpn and kt-inbound;
    plus the client pod."""
    made = subprocess.run(
        [str(ROOT / "testbed" / "test-namespace"), "create", "py-swap", "--restricted", "--role", "inbound"],
        env=lab.env,
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.fail(f"testbed/test-namespace create failed: {made.stderr.strip()}", pytrace=False)
    values = dict(line.split("=", 1) for line in made.stdout.split() if "=" in line)
    ns = Namespace(lab, values["KT_TEST_NAMESPACE"], values["KT_TEST_KUBECONFIG"])
    try:
        labels = ns.lab.kubectl("get", "namespace", ns.name, "-o", "jsonpath={.metadata.labels}")
        assert "restricted" in labels, labels
        subprocess.run(
            ["kubectl", "-n", ns.name, "apply", "-f", "-"],
            input=CLIENT_POD,
            env=lab.env,
            check=True,
            capture_output=True,
            text=True,
        )
        ns.kubectl("wait", "--for=condition=Ready", "pod/client", "--timeout=120s")
        yield ns
    finally:
        subprocess.run(
            [str(ROOT / "testbed" / "test-namespace"), "delete", ns.name],
            env=lab.env,
            check=False,
        )


def curl(ns: Namespace, url: str, headers: Optional[Dict[str, str]] = None) -> str:
    """``curl`` from the client pod, with ``headers``; the body (raises when it
    fails)."""
    sent = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    return ns.kubectl(
        "exec", "client", "--", "curl", "-sS", "--fail", "--max-time", "10", *sent, url
    )


def wait_answer(
    ns: Namespace,
    url: str,
    want: str,
    timeout: float = 60.0,
    headers: Optional[Dict[str, str]] = None,
) -> None:
    """Waits (bounded) until ``url`` (sent with ``headers``) answers ``want`` from the
    client pod: kube-proxy applies a new selector asynchronously, as in any cluster."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = curl(ns, url, headers)
            if want in last:
                return
        except AssertionError as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"{url} from the client pod never answered {want!r}; last: {last}")


def snapshot(ns: Namespace, obj: str) -> Dict[str, Any]:
    """What must be equal before and after: spec, labels, annotations."""
    v = json.loads(ns.kubectl("get", obj, "-o", "json"))
    return {
        "spec": v["spec"],
        "labels": v["metadata"].get("labels"),
        "annotations": v["metadata"].get("annotations"),
    }


def swap_objects(ns: Namespace, swap_id: str) -> str:
    """The objects of one swap or expose (labelled with its id)."""
    return ns.kubectl("get", KT_KINDS, "-l", f"kt.dev/session={swap_id}", "-o", "name").strip()


def kt_objects_but(ns: Namespace, session_id: str) -> str:
    """kt's objects in the namespace other than the session's own."""
    selector = f"app.kubernetes.io/managed-by=kt,kt.dev/session!={session_id}"
    return ns.kubectl("get", KT_KINDS, "-l", selector, "-o", "name").strip()


@pytest.fixture
def session(inbound: Namespace) -> Iterator[ktconnect.Session]:
    with ktconnect.Session.connect(**inbound.connect_options()) as s:
        yield s


def test_a_selector_swap_of_the_echo_deployment_reaches_this_process_and_is_undone_by_the_with_block(
    inbound: Namespace, session: ktconnect.Session, local: LocalServer
) -> None:
    svc_before = snapshot(inbound, "service/echo")
    deploy_before = snapshot(inbound, "deployment/echo")
    seen: list = []

    with session.swap("deploy/echo", [f"{local.port}:80"], on_event=seen.append) as swap:
        assert isinstance(swap, ktconnect.Swap)
        assert swap.mode == "selector"
        assert swap.target == "deploy/echo"
        assert swap.services == ["echo"]
        assert swap.ports == [(local.port, 8080)]
        assert swap.pod_name and swap.id and not swap.closed
        wait_answer(inbound, "http://echo/hello", local.token)
        assert swap.connections >= 1

        # While swapped, the Service selects the swap shadow.
        held = json.loads(inbound.kubectl("get", "service/echo", "-o", "json"))
        assert held["spec"]["selector"]["kt.dev/swap"] == swap.id

        stream = swap.events(timeout=120)

    assert swap.closed
    kinds = [type(e) for e in stream]
    assert events.Listening in kinds
    assert events.SelectorSwitched in kinds
    assert events.Inbound in kinds
    assert events.Restored in kinds
    assert kinds[-1] is events.Closed
    inbound_events = [e for e in seen if isinstance(e, events.Inbound)]
    assert inbound_events and inbound_events[0].port == 8080, seen

    assert snapshot(inbound, "service/echo") == svc_before
    assert snapshot(inbound, "deployment/echo") == deploy_before
    assert kt_objects_but(inbound, session.id) == ""
    assert swap_objects(inbound, swap.id) == ""
    # The original pods serve again. kube-proxy applies the restored selector
    # asynchronously: a request right after close() can still be refused (reported to
    # kt-core), so this waits (bounded) for the echo app's own answer.
    wait_answer(inbound, "http://echo/hello", '"pod":"echo-')
    reply = json.loads(curl(inbound, "http://echo/hello"))
    assert reply["pod"] in inbound.echo_pods()
    swap.close()  # again: nothing to do


def test_a_scale_swap_takes_the_workload_and_a_second_swap_of_it_is_a_conflict(
    inbound: Namespace, session: ktconnect.Session, local: LocalServer
) -> None:
    deploy_before = snapshot(inbound, "deployment/echo")
    svc_before = snapshot(inbound, "service/echo")
    with session.swap("deploy/echo", f"{local.port}:http", mode="scale", restore_ttl=20) as swap:
        assert swap.mode == "scale"
        assert swap.ports == [(local.port, 8080)]
        replicas = inbound.kubectl("get", "deployment/echo", "-o", "jsonpath={.spec.replicas}")
        assert replicas.strip() == "0"
        wait_answer(inbound, "http://echo/hello", local.token)

        # A second swap of the same target is refused, naming the holder and since when.
        with pytest.raises(ktconnect.Conflict) as refused:
            session.swap("deploy/echo", f"{local.port}:http", mode="scale")
        assert refused.value.kind == "conflict" and refused.value.variant == "target_held"
        assert swap.id in str(refused.value) and "since" in str(refused.value)
        stream = swap.events(timeout=120)
    scaled = [e for e in stream if isinstance(e, events.Scaled)]
    assert scaled and (scaled[0].from_, scaled[0].to) == (1, 0), scaled
    assert snapshot(inbound, "deployment/echo") == deploy_before
    assert snapshot(inbound, "service/echo") == svc_before
    # close() returned once the original pods were ready again.
    ready = inbound.kubectl("get", "deployment/echo", "-o", "jsonpath={.status.readyReplicas}")
    assert ready.strip() == "1"
    assert swap_objects(inbound, swap.id) == ""
    assert kt_objects_but(inbound, session.id) == ""


def test_expose_publishes_this_process_as_a_new_service(
    inbound: Namespace, session: ktconnect.Session, local: LocalServer
) -> None:
    # An existing Service name is refused, and nothing is created.
    with pytest.raises(ktconnect.Conflict):
        session.expose("echo", str(local.port))
    assert kt_objects_but(inbound, session.id) == ""

    with session.expose("preview", f"{local.port}:80") as expose:
        assert isinstance(expose, ktconnect.Expose)
        assert expose.service == "preview"
        assert expose.ports == [(local.port, 80)]
        wait_answer(inbound, "http://preview/x", local.token)
        assert expose.connections >= 1
    gone = subprocess.run(
        ["kubectl", "-n", inbound.name, "get", "service/preview"],
        env=inbound.lab.env,
        capture_output=True,
    )
    assert gone.returncode != 0, "Service preview is still there"
    assert kt_objects_but(inbound, session.id) == ""


def test_swap_and_expose_from_asyncio(inbound: Namespace, local: LocalServer) -> None:
    async def main() -> None:
        async with ktconnect.Session.connect_async(**inbound.connect_options()) as s:
            async with await s.expose_async("apreview", [f"{local.port}:80"]) as expose:
                assert expose.service == "apreview"
                await asyncio.to_thread(wait_answer, inbound, "http://apreview/", local.token)
            assert expose.closed
            swap = await s.swap_async("deploy/echo", f"{local.port}:http")
            try:
                assert swap.ports == [(local.port, 8080)]
                await asyncio.to_thread(wait_answer, inbound, "http://echo/", local.token)
            finally:
                await swap.close_async()
            assert kt_objects_but(inbound, s.id) == ""

    before = snapshot(inbound, "service/echo")
    asyncio.run(main())
    assert snapshot(inbound, "service/echo") == before


def test_a_refused_swap_changes_nothing(inbound: Namespace, session: ktconnect.Session) -> None:
    before = snapshot(inbound, "service/echo")
    with socket_unused() as unused:
        with pytest.raises(ktconnect.ConnectError, match=f"127.0.0.1:{unused}"):
            session.swap("deploy/echo", f"{unused}:80")
    with pytest.raises(ktconnect.NotFound):
        session.swap("deploy/nope", "8080", check_local=False)
    # Malformed values, parsed by kt-core, each saying what is accepted.
    for kwargs, match in (
        ({"expose": "8080:HTTP"}, "`local:remote`"),
        ({"expose": ""}, "at least one port"),
        ({"expose": "8080", "mode": "everything"}, "mode: .*`selector`"),
        ({"expose": "8080:81", "check_local": False}, "81"),
    ):
        with pytest.raises(ktconnect.InvalidArgument, match=match):
            session.swap("deploy/echo", **kwargs)
    with pytest.raises(ktconnect.InvalidArgument, match="service_type: .*ClusterIP, NodePort or LoadBalancer"):
        session.expose("preview", "8080", service_type="Ingress", check_local=False)
    assert snapshot(inbound, "service/echo") == before
    assert kt_objects_but(inbound, session.id) == ""


class socket_unused:
    """A local port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def __exit__(self, *exc: Any) -> None:
        pass


def test_clean_and_recover_report_what_they_did_and_refuse_a_held_target(
    inbound: Namespace, session: ktconnect.Session, local: LocalServer
) -> None:
    opts = inbound.connect_options()
    report = ktconnect.clean(dry_run=True, **opts)
    assert isinstance(report, ktconnect.CleanReport)
    assert report.dry_run is True
    assert isinstance(report.actions, tuple) and isinstance(report.left, tuple)

    with session.swap("deploy/echo", f"{local.port}:80") as swap:
        # A live session holds it: recover refuses and changes nothing.
        with pytest.raises(ktconnect.Conflict, match="held by kt session"):
            ktconnect.recover("svc/echo", **opts)
        svc = json.loads(inbound.kubectl("get", "service/echo", "-o", "json"))
        assert svc["spec"]["selector"]["kt.dev/swap"] == swap.id

    report = ktconnect.clean(**opts)
    assert report.dry_run is False
    assert not any("echo" in a for a in report.actions), report

    report = asyncio.run(ktconnect.recover_async("svc/echo", dry_run=True, **opts))
    assert report.dry_run is True and report.actions == (), report
    assert "nothing to clean" in str(report)


def test_the_kt_swap_fixture_swaps_for_the_test_and_closes_at_teardown(
    pytester: pytest.Pytester, inbound: Namespace
) -> None:
    pytester.makepyfile(
        test_user=f'''
import http.server, json, subprocess, threading
import ktconnect

def test_swap(kt_swap):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    swap = kt_swap("deploy/echo", "%d:80" % server.server_address[1])
    assert isinstance(swap, ktconnect.Swap) and not swap.closed
    with open("swap-id", "w") as f:
        f.write(swap.id)
'''
    )
    result = pytester.runpytest_subprocess(
        f"--kt-kubeconfig={inbound.kubeconfig}", f"--kt-namespace={inbound.name}", "-v"
    )
    result.assert_outcomes(passed=1)
    swap_id = (pytester.path / "swap-id").read_text()
    # Teardown closed it: the Service selects the echo pods again and nothing is left.
    svc = json.loads(inbound.kubectl("get", "service/echo", "-o", "json"))
    assert svc["spec"]["selector"] == {"app": "echo"}
    assert swap_id not in json.dumps(svc)
    assert swap_objects(inbound, swap_id) == ""


def test_a_killed_client_is_restored_by_the_swap_shadow(inbound: Namespace) -> None:
    """kill -9 of a Python process mid-swap: the swap shadow puts the Service back by
    itself once the restore TTL has passed, and the swap's objects are gone (the dead
    session's own shadow stays until its watchdog ends it)."""
    before = snapshot(inbound, "service/echo")
    script = f"""
import os, signal, sys, ktconnect
s = ktconnect.Session.connect(kubeconfig={inbound.kubeconfig!r}, namespace={inbound.name!r})
swap = s.swap("deploy/echo", "8080", check_local=False, restore_ttl=5)
print(swap.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    swap_id = done.stdout.strip()
    assert swap_id, done.stderr
    held = json.loads(inbound.kubectl("get", "service/echo", "-o", "json"))
    assert held["spec"]["selector"].get("kt.dev/swap") == swap_id
    # The restore TTL (5 s) and a bound for the shadow's restore and removal.
    deadline = time.monotonic() + 5 + 60
    while time.monotonic() < deadline:
        if snapshot(inbound, "service/echo") == before and swap_objects(inbound, swap_id) == "":
            break
        time.sleep(1)
    assert snapshot(inbound, "service/echo") == before
    assert swap_objects(inbound, swap_id) == ""


def test_a_swap_left_open_is_closed_at_interpreter_exit(inbound: Namespace) -> None:
    """A script that forgets close(): the package closes the swap at exit, so the
    Service is back as soon as the process has ended (not a TTL later)."""
    before = snapshot(inbound, "service/echo")
    script = f"""
import ktconnect
s = ktconnect.Session.connect(kubeconfig={inbound.kubeconfig!r}, namespace={inbound.name!r})
swap = s.swap("deploy/echo", "8080", check_local=False, restore_ttl=600)
print(swap.id, flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    swap_id = done.stdout.strip()
    assert swap_id, done.stderr
    assert snapshot(inbound, "service/echo") == before
    assert swap_objects(inbound, swap_id) == ""


def test_a_swap_garbage_collected_without_close_is_closed_in_the_background(
    inbound: Namespace, session: ktconnect.Session
) -> None:
    import gc

    before = snapshot(inbound, "service/echo")
    swap = session.swap("deploy/echo", "8080", check_local=False, restore_ttl=600)
    swap_id = swap.id
    del swap
    gc.collect()
    # The close runs on kt's runtime as a counted clean-up; wait for it to finish.
    assert ktconnect._native.wait_for_cleanups(120)
    assert snapshot(inbound, "service/echo") == before
    assert swap_objects(inbound, swap_id) == ""


def test_the_swap_example_takes_over_echo_until_sigint_then_restores_it(inbound: Namespace) -> None:
    import signal

    before = snapshot(inbound, "service/echo")
    message = "example-" + secrets.token_hex(6)
    child = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "python" / "swap.py"),
            "--kubeconfig",
            inbound.kubeconfig,
            "--namespace",
            inbound.name,
            "--message",
            message,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        line = child.stdout.readline()
        assert "swapped deploy/echo (selector mode, Services echo): port 8080 now reaches" in line, line
        wait_answer(inbound, "http://echo/", message)
    finally:
        child.send_signal(signal.SIGINT)
    rest, _ = child.communicate(timeout=180)
    assert child.returncode == 0, rest
    assert "restoring after" in rest and rest.rstrip().endswith("restored"), rest
    assert snapshot(inbound, "service/echo") == before
