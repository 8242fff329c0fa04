"""The same failure has the same kind in every kt front end (C, Python, Node, ktctl):
here, driven against the lab, the cases each front end's suite drives too."""

from __future__ import annotations

import pytest

import ktconnect
from conftest import Lab, Namespace


def test_a_missing_namespace_is_kind_not_found(lab: Lab) -> None:
    with pytest.raises(ktconnect.NotFound) as info:
        ktconnect.Session.connect(kubeconfig=lab.admin_kubeconfig, namespace="kt-no-such-ns")
    assert info.value.kind == "not_found"
    assert "namespace `kt-no-such-ns` does not exist" in str(info.value)


def test_a_call_rbac_forbids_is_kind_forbidden(namespace: Namespace) -> None:
    # The test namespace's kubeconfig may use kt only in its own namespace.
    with pytest.raises(ktconnect.Forbidden) as info:
        ktconnect.Session.connect(kubeconfig=namespace.kubeconfig, namespace="kube-system")
    assert info.value.kind == "forbidden"
    assert "forbidden: you may not" in str(info.value)


def test_a_connection_the_shadow_cannot_open_is_kind_connect(kt_session: ktconnect.Session) -> None:
    """The shadow cannot connect a UDP socket to the broadcast address (the kernel
    refuses it without SO_BROADCAST), so opening the flow fails at once."""
    with pytest.raises(ktconnect.ConnectError) as info:
        kt_session.udp_channel("255.255.255.255", 9)
    assert info.value.kind == "connect"
    assert isinstance(info.value, ktconnect.TunnelError)  # as before kind `connect`
    assert "cannot connect to 255.255.255.255:9 from the shadow pod" in str(info.value)
    # The session is still good after the refusal.
    assert kt_session.resolve("echo")
