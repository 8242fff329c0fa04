"""Every kt-core error kind and event kind reaches Python through the one mapping: a
kind added to kt-core without a class here fails these tests."""

from __future__ import annotations

import builtins

import pytest

import ktconnect
from ktconnect import _native, events

# What a user catches for each kind, and the builtin it also is. The list is written
# out (not read from the binding) so that a changed class is a visible change here.
EXPECTED = {
    "invalid_argument": (ktconnect.InvalidArgument, ValueError),
    "closed": (ktconnect.Closed, None),
    "timeout": (ktconnect.Timeout, TimeoutError),
    "needs_capability": (ktconnect.NeedsCapability, PermissionError),
    "forbidden": (ktconnect.Forbidden, PermissionError),
    "not_found": (ktconnect.NotFound, LookupError),
    "kubeconfig": (ktconnect.ConfigError, None),
    "api_unreachable": (ktconnect.Unreachable, ConnectionError),
    "api": (ktconnect.ApiError, None),
    "shadow": (ktconnect.ShadowError, None),
    "tunnel": (ktconnect.TunnelError, ConnectionError),
    "connect": (ktconnect.ConnectError, ConnectionError),
    "dns": (ktconnect.DnsError, None),
    "unsupported": (ktconnect.Unsupported, None),
    "io": (ktconnect.LocalError, OSError),
    "vpn": (ktconnect.VpnError, OSError),
    "cleanup": (ktconnect.CleanupError, None),
    "internal": (ktconnect.InternalError, None),
    "conflict": (ktconnect.Conflict, None),
}


def test_the_native_module_lists_every_kt_core_error_kind() -> None:
    kinds = _native.ERROR_KINDS
    assert len(kinds) == len(set(kinds)) >= 18
    assert "connect" in kinds and "not_found" in kinds


@pytest.mark.parametrize("kind", _native.ERROR_KINDS)
def test_every_error_kind_raises_its_own_subclass_of_kt_error(kind: str) -> None:
    with pytest.raises(ktconnect.KtError) as info:
        _native._raise_error_example(kind)
    error = info.value
    assert type(error) is not ktconnect.KtError, f"kind {kind} fell back to bare KtError"
    assert kind in EXPECTED, f"kind {kind} is new in kt-core: give it a class and list it here"
    cls, builtin = EXPECTED[kind]
    assert isinstance(error, cls), (kind, type(error))
    if builtin is not None:
        assert isinstance(error, builtin), (kind, type(error).__mro__)
    assert error.kind == kind
    assert error.variant and error.variant.islower()
    assert str(error) and "::" not in str(error), str(error)  # no Rust API names
    assert isinstance(error.transient, bool)
    # Every class is public and importable from the package.
    assert getattr(ktconnect, type(error).__name__) is type(error)
    assert type(error).__name__ in ktconnect.__all__


def test_each_kind_has_a_class_of_its_own() -> None:
    classes = {}
    for kind in _native.ERROR_KINDS:
        with pytest.raises(ktconnect.KtError) as info:
            _native._raise_error_example(kind)
        classes[kind] = type(info.value)
    assert len(set(classes.values())) == len(classes), classes


def test_connect_errors_are_still_tunnel_errors() -> None:
    """`except TunnelError` written before kind `connect` existed still catches it."""
    with pytest.raises(ktconnect.TunnelError) as info:
        _native._raise_error_example("connect")
    assert isinstance(info.value, ktconnect.ConnectError)
    assert isinstance(info.value, builtins.ConnectionError)
    assert info.value.kind == "connect" and info.value.variant == "connect"
    assert "cannot connect to 10.96.0.1:1" in str(info.value)


def test_the_finer_classes_carry_their_kind() -> None:
    assert issubclass(ktconnect.NameNotFound, ktconnect.NotFound)
    assert issubclass(ktconnect.TunnelDown, ktconnect.TunnelError)
    with pytest.raises(ktconnect.TunnelDown) as info:
        _native._raise_error_example("tunnel")  # kt-core's example is TunnelDown
    assert info.value.kind == "tunnel" and info.value.variant == "tunnel_down"


def test_classes_raised_by_python_code_have_their_kind() -> None:
    assert ktconnect.Closed().kind == "closed"
    assert ktconnect.NameNotFound().kind == "not_found"
    assert ktconnect.ConnectError().kind == "connect"
    assert ktconnect.KtError().kind == ""


def test_an_unknown_kind_name_is_an_invalid_argument() -> None:
    with pytest.raises(ktconnect.InvalidArgument, match="invalid error kind `nope`"):
        _native._raise_error_example("nope")


def test_every_event_kind_has_a_typed_event_class() -> None:
    kinds = _native.EVENT_KINDS
    assert len(kinds) == len(set(kinds)) >= 22
    missing = [k for k in kinds if k not in events._BY_KIND]
    assert not missing, f"event kinds without a class in ktconnect.events: {missing}"
    for kind in kinds:
        assert events._BY_KIND[kind].__name__ in events.__all__


def test_a_conflict_names_the_holder() -> None:
    with pytest.raises(ktconnect.Conflict) as info:
        _native._raise_error_example("conflict")
    assert info.value.kind == "conflict" and info.value.variant == "target_held"
    assert "since" in str(info.value)


def test_inbound_events_become_their_typed_classes() -> None:
    """Field names that are Python keywords get a trailing underscore, lists become
    tuples, as for the session's events."""
    scaled = events._from_native(("scaled", "scaled deploy/web", {"workload": "deploy/web", "from": 2, "to": 0}))
    assert isinstance(scaled, events.Scaled)
    assert (scaled.workload, scaled.from_, scaled.to) == ("deploy/web", 2, 0)
    listening = events._from_native(("listening", "listening", {"ports": ["8080"]}))
    assert isinstance(listening, events.Listening) and listening.ports == ("8080",)
    inbound = events._from_native(("inbound", "x", {"peer": "10.0.0.7:4242", "port": 80}))
    assert isinstance(inbound, events.Inbound) and inbound.port == 80
