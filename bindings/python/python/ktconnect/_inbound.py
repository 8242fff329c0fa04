"""Inbound traffic: :class:`Swap`, :class:`Expose` and :class:`Mesh` (made by
:meth:`ktconnect.Session.swap`, :meth:`ktconnect.Session.expose` and
:meth:`ktconnect.Session.mesh`), and the module functions :func:`clean` and
:func:`recover`; thin Python over the native layer."""

from __future__ import annotations

import datetime
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import _native as _kt
from .events import Event, _from_native

__all__ = [
    "Swap",
    "Expose",
    "Mesh",
    "CleanReport",
    "clean",
    "clean_async",
    "recover",
    "recover_async",
]

# (local, remote) port pairs.
PortPairs = List[Tuple[int, int]]
# "8080:80,9090" or ["8080:80", "9090"]
Ports = Union[str, Sequence[str]]

# Handles not closed yet: the package closes them at interpreter exit, before the
# sessions (see ``_session._close_open_sessions``).
_open_handles: "weakref.WeakSet[Any]" = weakref.WeakSet()
_open_lock = threading.Lock()


def _close_open_handles() -> None:
    with _open_lock:
        handles = list(_open_handles)
    for handle in handles:
        try:
            handle.close()
        except Exception:  # noqa: BLE001 - nothing is left to report to at exit
            pass


def _check_ports(expose: Any) -> None:
    """Raises TypeError unless ``expose`` is a str or a list/tuple of str (the native
    layer parses them and raises InvalidArgument for a malformed one)."""
    if isinstance(expose, str):
        return
    if isinstance(expose, (list, tuple)) and all(isinstance(p, str) for p in expose):
        return
    raise TypeError(
        'expose must be a str like "8080:80,9090" or a list of such str '
        f"(local[:remote]), not {type(expose).__name__}"
    )


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")


def _native_callback(on_event: Optional[Callable[[Event], None]]) -> Any:
    if on_event is None:
        return None
    if not callable(on_event):
        raise TypeError("on_event must be callable (it is called with each Event)")

    def callback(raw: Tuple[str, str, Dict[str, Any]]) -> None:
        on_event(_from_native(raw))  # type: ignore[arg-type]

    return callback


def _check_target(target: Any) -> None:
    if not isinstance(target, str):
        raise TypeError(
            'target must be a str ("deploy/web", "sts/db", "svc/web" or a bare name), '
            f"not {type(target).__name__}"
        )


def _check_restore_ttl(restore_ttl: Any) -> None:
    if isinstance(restore_ttl, bool) or not isinstance(
        restore_ttl, (int, float, datetime.timedelta)
    ):
        raise TypeError(
            "restore_ttl must be seconds (int or float) or a timedelta, "
            f"not {type(restore_ttl).__name__}"
        )


def _swap_args(
    target: Any, expose: Any, mode: Any, check_local: Any, restore_ttl: Any, on_event: Any
) -> Dict[str, Any]:
    _check_target(target)
    _check_ports(expose)
    if not isinstance(mode, str):
        raise TypeError(f'mode must be "selector" or "scale", not {type(mode).__name__}')
    _check_flag("check_local", check_local)
    _check_restore_ttl(restore_ttl)
    return {
        "mode": mode,
        "check_local": check_local,
        "restore_ttl": restore_ttl,
        "on_event": _native_callback(on_event),
    }


def _expose_args(
    name: Any, expose: Any, service_type: Any, check_local: Any, on_event: Any
) -> Dict[str, Any]:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (the new Service's name), not {type(name).__name__}")
    _check_ports(expose)
    if not isinstance(service_type, str):
        raise TypeError(
            'service_type must be "ClusterIP", "NodePort" or "LoadBalancer", '
            f"not {type(service_type).__name__}"
        )
    _check_flag("check_local", check_local)
    return {
        "service_type": service_type,
        "check_local": check_local,
        "on_event": _native_callback(on_event),
    }


def _mesh_args(
    target: Any, expose: Any, rule: Any, check_local: Any, restore_ttl: Any, on_event: Any
) -> Dict[str, Any]:
    _check_target(target)
    _check_ports(expose)
    if rule is not None and not isinstance(rule, str):
        raise TypeError(
            'rule must be None or a str like "version=alice", "x-dev~^a.*" or "/api", '
            f"not {type(rule).__name__}"
        )
    _check_flag("check_local", check_local)
    _check_restore_ttl(restore_ttl)
    return {
        "rule": rule,
        "check_local": check_local,
        "restore_ttl": restore_ttl,
        "on_event": _native_callback(on_event),
    }


class _Handle:
    """What :class:`Swap`, :class:`Expose` and :class:`Mesh` share: events,
    connections, close."""

    __slots__ = ("_native", "__weakref__")
    _native: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"a {type(self).__name__} is made by Session.{type(self).__name__.lower()}(...)")

    @classmethod
    def _adopt(cls, native: Any) -> Any:
        self = object.__new__(cls)
        self._native = native
        with _open_lock:
            _open_handles.add(self)
        return self

    @property
    def id(self) -> str:
        """Its id: the ``kt.dev/session`` label of its objects."""
        return self._native.id

    @property
    def pod_name(self) -> str:
        """The shadow pod that accepts the cluster's connections."""
        return self._native.pod_name

    @property
    def ports(self) -> PortPairs:
        """``(local, remote)`` for every port: connections to ``remote`` in the
        cluster arrive at ``127.0.0.1:local``."""
        return self._native.ports

    @property
    def connections(self) -> int:
        """How many connections arrived from the cluster so far (each is also an
        :class:`ktconnect.events.Inbound` event naming who connected)."""
        return self._native.connections

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native.closed

    def events(self, timeout: Optional[float] = None) -> Any:
        """Its events (a :class:`ktconnect.Events`: every event so far, then new ones,
        ending after :class:`ktconnect.events.Closed`); ``timeout`` bounds each wait."""
        from ._session import Events

        return Events(self._native.events(), timeout)

    def close(self) -> None:
        """Puts the cluster back and removes the shadow (blocking); calling it again
        does nothing."""
        try:
            self._native.close()
        finally:
            with _open_lock:
                _open_handles.discard(self)

    async def close_async(self) -> None:
        """:meth:`close` for asyncio."""
        try:
            await self._native.close_async()
        finally:
            with _open_lock:
                _open_handles.discard(self)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close_async()


class Swap(_Handle):
    """A workload's traffic going to a process on this machine: what
    :meth:`ktconnect.Session.swap` returns. Use it as ``with session.swap(...) as
    swap:`` (or ``async with``), or call :meth:`close`.

    :meth:`close` puts the cluster back exactly as it was (a value someone else changed
    meanwhile is left alone and reported as a
    :class:`ktconnect.events.RestoreConflict` event), waits until the original pods
    serve again, then removes the swap shadow. A swap garbage-collected or still open
    at interpreter exit is closed then; if the process dies, the swap shadow restores
    the cluster by itself once ``restore_ttl`` has passed without a heartbeat.
    """

    __slots__ = ()
    _native: _kt.NativeSwap

    @property
    def target(self) -> str:
        """The target as resolved (``deploy/web``, ``sts/db``, ``svc/web``)."""
        return self._native.target

    @property
    def mode(self) -> str:
        """``"selector"`` or ``"scale"``."""
        return self._native.mode

    @property
    def services(self) -> List[str]:
        """The Services that select the target (in selector mode, those switched to
        the swap shadow)."""
        return self._native.services

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ktconnect.Swap {self.id} {self.target} mode={self.mode} ports={self.ports} {state}>"


class Expose(_Handle):
    """Local ports published as a new Service: what :meth:`ktconnect.Session.expose`
    returns. :meth:`close` (or the ``with`` block) removes the Service and its shadow.
    """

    __slots__ = ()
    _native: _kt.NativeExpose

    @property
    def service(self) -> str:
        """The Service's name."""
        return self._native.service

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ktconnect.Expose {self.id} service={self.service} ports={self.ports} {state}>"


class Mesh(_Handle):
    """A developer's place in a meshed Service: what :meth:`ktconnect.Session.mesh`
    returns. Requests to the Service that match :attr:`rule` (send :attr:`header`)
    arrive at local ports here; every other request keeps reaching the Service's
    pods. Use it as ``with session.mesh(...) as mesh:`` (or ``async with``), or call
    :meth:`close`.

    :meth:`close` removes this developer's rule and shadow; the last developer's
    close also puts the Service back exactly and removes the router. A mesh
    garbage-collected or still open at interpreter exit is closed then; if the process
    dies, its rule goes once ``restore_ttl`` has passed without a heartbeat.
    """

    __slots__ = ()
    _native: _kt.NativeMesh

    @property
    def service(self) -> str:
        """The meshed Service's name."""
        return self._native.service

    @property
    def rule(self) -> str:
        """Which requests come here, in canonical text (``version=alice``)."""
        return self._native.rule

    @property
    def header(self) -> Optional[Dict[str, str]]:
        """The header to send for a request to come here, as ``{name: value}`` (pass
        it as a client's headers: ``requests.get(url, headers=mesh.header)``); with
        the default rule, ``{"version": <random>}``. ``None`` for a rule of only
        regexes and path prefixes."""
        pair = self._native.header
        return None if pair is None else {pair[0]: pair[1]}

    @property
    def router(self) -> str:
        """The router pod (shared by every developer of the Service)."""
        return self._native.router

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ktconnect.Mesh {self.id} service={self.service} rule={self.rule!r} {state}>"


@dataclass(frozen=True)
class CleanReport:
    """What :func:`clean` or :func:`recover` did, or in a dry run would do."""

    dry_run: bool
    """Whether nothing was changed."""
    actions: Tuple[str, ...]
    """One line per action (``restored Service dev/web: /spec/selector``)."""
    left: Tuple[str, ...]
    """What was found but left alone, and why (a live session holds it; someone
    changed a value kt had written)."""

    @classmethod
    def _from_native(cls, raw: Tuple[bool, List[str], List[str]]) -> "CleanReport":
        dry_run, actions, left = raw
        return cls(dry_run=dry_run, actions=tuple(actions), left=tuple(left))

    def __str__(self) -> str:
        verb = "would do" if self.dry_run else "done"
        lines = [] if self.actions else ["nothing to clean"]
        lines += [f"{verb}: {a}" for a in self.actions]
        lines += [f"left: {item}" for item in self.left]
        return "\n".join(lines)


def _options(options: Optional[_kt.ConnectOptions], connect_args: Dict[str, Any]) -> _kt.ConnectOptions:
    from ._session import connect_options

    if options is None:
        return connect_options(**connect_args)
    if connect_args:
        raise TypeError(
            "pass either options= or connection keywords, not both "
            f"(got {', '.join(sorted(connect_args))})"
        )
    if not isinstance(options, _kt.ConnectOptions):
        raise TypeError(f"options must be a ktconnect.ConnectOptions, not {type(options).__name__}")
    return options


def clean(
    *, dry_run: bool = False, options: Optional[_kt.ConnectOptions] = None, **connect_args: Any
) -> CleanReport:
    """Finds what kt sessions that died left in the namespace, puts it back and
    removes it: objects whose hold expired are restored (guarded: a value someone
    changed meanwhile is left and listed in ``left``), kt pods whose lease expired are
    deleted, identities and exposed Services whose shadow is gone are removed. Live
    sessions are left alone. With ``dry_run=True`` it only lists what it would do.

    Takes the connection keywords of :meth:`ktconnect.Session.connect` (``kubeconfig``,
    ``context``, ``namespace``, ...) or ``options=``; opens no session. Raises
    :class:`ktconnect.Forbidden` without the rights of the shipped Role ``kt-inbound``.
    """
    _check_flag("dry_run", dry_run)
    return CleanReport._from_native(_kt.clean(_options(options, connect_args), dry_run))


async def clean_async(
    *, dry_run: bool = False, options: Optional[_kt.ConnectOptions] = None, **connect_args: Any
) -> CleanReport:
    """:func:`clean` for asyncio."""
    _check_flag("dry_run", dry_run)
    raw = await _kt.clean_async(_options(options, connect_args), dry_run)
    return CleanReport._from_native(raw)


def _check_target(target: Any) -> None:
    if not isinstance(target, str):
        raise TypeError(
            'target must be a str ("deploy/web", "sts/db", "svc/web" or a bare name), '
            f"not {type(target).__name__}"
        )


def recover(
    target: str,
    *,
    dry_run: bool = False,
    options: Optional[_kt.ConnectOptions] = None,
    **connect_args: Any,
) -> CleanReport:
    """Puts back one target (``deploy/web``, ``sts/db``, ``svc/web`` or a bare name)
    that a kt session which died left changed: its recorded selector or replica count
    is restored. Raises :class:`ktconnect.Conflict` while a live session holds it,
    :class:`ktconnect.NotFound` for a missing target. ``dry_run`` and the connection
    keywords as for :func:`clean`."""
    _check_target(target)
    _check_flag("dry_run", dry_run)
    return CleanReport._from_native(_kt.recover(_options(options, connect_args), target, dry_run))


async def recover_async(
    target: str,
    *,
    dry_run: bool = False,
    options: Optional[_kt.ConnectOptions] = None,
    **connect_args: Any,
) -> CleanReport:
    """:func:`recover` for asyncio."""
    _check_target(target)
    _check_flag("dry_run", dry_run)
    raw = await _kt.recover_async(_options(options, connect_args), target, dry_run)
    return CleanReport._from_native(raw)
