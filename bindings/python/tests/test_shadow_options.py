"""Shadow settings reach the shadow pod: the watchdog timeout
(``shadow_heartbeat_timeout``) and the readiness probe's binary."""

from __future__ import annotations

import datetime
import json
from typing import List

import ktconnect
from conftest import Namespace


def _container(namespace: Namespace, pod: str) -> dict:
    spec = json.loads(namespace.kubectl("get", "pod", pod, "-o", "json"))["spec"]
    return spec["containers"][0]


def _watchdog(args: List[str]) -> object:
    """The value of kt-shadow's ``--heartbeat-timeout``, None when absent."""
    return args[args.index("--heartbeat-timeout") + 1] if "--heartbeat-timeout" in args else None


def test_the_default_shadow_watchdog_is_ten_minutes(
    kt_session: ktconnect.Session, namespace: Namespace
) -> None:
    assert _watchdog(_container(namespace, kt_session.pod_name)["args"]) == "600"


def test_shadow_heartbeat_timeout_sets_the_shadows_watchdog(namespace: Namespace) -> None:
    with ktconnect.Session.connect(
        **namespace.connect_options(), shadow_heartbeat_timeout=datetime.timedelta(minutes=3)
    ) as session:
        assert _watchdog(_container(namespace, session.pod_name)["args"]) == "180"
        assert session.resolve("echo")  # the shadow serves as usual


def test_shadow_heartbeat_timeout_none_turns_the_watchdog_off(namespace: Namespace) -> None:
    with ktconnect.Session.connect(
        **namespace.connect_options(),
        shadow_heartbeat_timeout=None,
        # The probe binary is an image's: the lab's kt-shadow image has it on PATH.
        shadow_image="kt.invalid/kt-shadow:0.1.0",
        shadow_probe_binary="kt-shadow",
    ) as session:
        container = _container(namespace, session.pod_name)
        assert _watchdog(container["args"]) is None
        assert container["readinessProbe"]["exec"]["command"][0] == "kt-shadow"
        assert session.resolve("echo")
