"""Bad arguments of swap, expose, mesh, clean and recover raise before anything happens in
the cluster: TypeError for a wrong type, InvalidArgument (a ValueError) for a malformed
value, each saying what is accepted. No lab needed: the checks come first."""

from __future__ import annotations

import pytest

import ktconnect
from ktconnect import _native


class _FakeNative:
    """Stands in for an open native session: every argument check happens before
    the native call, which this records."""

    def __init__(self) -> None:
        self.calls: list = []

    def swap(self, *args, **kwargs):  # pragma: no cover - reached only on a bug
        self.calls.append(("swap", args, kwargs))
        raise AssertionError("the native swap was called")

    def expose(self, *args, **kwargs):  # pragma: no cover
        self.calls.append(("expose", args, kwargs))
        raise AssertionError("the native expose was called")

    def mesh(self, *args, **kwargs):  # pragma: no cover
        self.calls.append(("mesh", args, kwargs))
        raise AssertionError("the native mesh was called")


def _session() -> ktconnect.Session:
    s = object.__new__(ktconnect.Session)
    s._native = _FakeNative()  # type: ignore[assignment]
    return s


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"expose": 8080}, TypeError, "expose must be a str"),
        ({"expose": [8080]}, TypeError, "expose must be a str"),
        ({"expose": "8080", "mode": 1}, TypeError, "mode must be"),
        ({"expose": "8080", "check_local": "yes"}, TypeError, "check_local must be a bool"),
        ({"expose": "8080", "restore_ttl": "30"}, TypeError, "restore_ttl must be seconds"),
        ({"expose": "8080", "restore_ttl": True}, TypeError, "restore_ttl must be seconds"),
        ({"expose": "8080", "on_event": 3}, TypeError, "on_event must be callable"),
    ],
)
def test_swap_checks_its_argument_types(kwargs, error, match) -> None:
    s = _session()
    with pytest.raises(error, match=match):
        s.swap("deploy/web", **kwargs)
    assert s._native.calls == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"expose": 8080}, TypeError, "expose must be a str"),
        ({"expose": "8080", "rule": 1}, TypeError, "rule must be None or a str"),
        ({"expose": "8080", "rule": {"version": "a"}}, TypeError, "rule must be None or a str"),
        ({"expose": "8080", "check_local": 1}, TypeError, "check_local must be a bool"),
        ({"expose": "8080", "restore_ttl": None}, TypeError, "restore_ttl must be seconds"),
        ({"expose": "8080", "on_event": "print"}, TypeError, "on_event must be callable"),
    ],
)
def test_mesh_checks_its_argument_types(kwargs, error, match) -> None:
    s = _session()
    with pytest.raises(error, match=match):
        s.mesh("svc/web", **kwargs)
    with pytest.raises(TypeError, match="target must be a str"):
        s.mesh(["svc/web"], "8080")  # type: ignore[arg-type]
    assert s._native.calls == []  # type: ignore[attr-defined]


def test_swap_and_expose_check_the_target_type() -> None:
    s = _session()
    with pytest.raises(TypeError, match="target must be a str"):
        s.swap(None, "8080")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a str"):
        s.expose(3, "8080")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="service_type must be"):
        s.expose("preview", "8080", service_type=None)  # type: ignore[arg-type]


def test_handles_cannot_be_made_directly() -> None:
    with pytest.raises(TypeError, match=r"Session\.swap"):
        ktconnect.Swap()
    with pytest.raises(TypeError, match=r"Session\.expose"):
        ktconnect.Expose()
    with pytest.raises(TypeError, match=r"Session\.mesh"):
        ktconnect.Mesh()


def test_clean_and_recover_check_their_arguments() -> None:
    with pytest.raises(TypeError, match="dry_run must be a bool"):
        ktconnect.clean(dry_run="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="target must be a str"):
        ktconnect.recover(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'namepsace'"):
        ktconnect.clean(namepsace="dev")
    with pytest.raises(TypeError, match="either options= or connection keywords"):
        ktconnect.clean(options=ktconnect.connect_options(), namespace="dev")
    with pytest.raises(ktconnect.InvalidArgument, match="namespace is empty"):
        ktconnect.recover("deploy/web", namespace="")


def test_clean_report_reads_like_the_other_front_ends() -> None:
    report = ktconnect.CleanReport(dry_run=True, actions=("delete kt pod dev/x",), left=("svc: held",))
    assert str(report) == "would do: delete kt pod dev/x\nleft: svc: held"
    assert str(ktconnect.CleanReport(dry_run=False, actions=(), left=())) == "nothing to clean"
