"""The public session API: thin Python over the native layer (``ktconnect._native``,
imported as ``_kt``)."""

from __future__ import annotations

import atexit
import collections.abc
import datetime
import os
import sys
import threading
import weakref
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _native as _kt
from ._inbound import (
    Expose,
    Mesh,
    Ports,
    Swap,
    _close_open_handles,
    _expose_args,
    _mesh_args,
    _swap_args,
)
from .events import Event, _from_native

__all__ = ["Session", "Events", "DatagramChannel", "connect_options", "recover_system_dns"]

Address = Tuple[str, int]
Seconds = Any  # int | float | datetime.timedelta
PathLike = Union[str, "os.PathLike[str]"]

# Sessions not closed yet, closed at interpreter exit so that nothing stays in the
# cluster when a script forgets close().
_open_sessions: "weakref.WeakSet[Session]" = weakref.WeakSet()
_open_lock = threading.Lock()
# How long interpreter exit waits for sessions being closed in the background.
_EXIT_CLEANUP_SECONDS = 60.0


@atexit.register
def _close_open_sessions() -> None:
    # Swaps, exposes and meshes first: each puts the cluster back before its session goes.
    _close_open_handles()
    with _open_lock:
        sessions = list(_open_sessions)
    for session in sessions:
        try:
            session.close()
        except Exception:  # noqa: BLE001 - nothing is left to report to at exit
            pass
    # Connects abandoned with Ctrl-C, sessions garbage-collected without close():
    # their clean-up runs on kt's threads, which end with the interpreter.
    if not _kt.wait_for_cleanups(_EXIT_CLEANUP_SECONDS):
        sys.stderr.write(
            "ktconnect: some sessions were still being closed at exit; list what is left "
            "with `kubectl get pods,secrets,services -l app.kubernetes.io/managed-by=kt`, "
            "or put it back with ktconnect.clean()\n"
        )


def _as_dict(value: Any) -> Any:
    """A mapping as the dict the native layer takes; anything else as it is (the
    native layer raises TypeError for it)."""
    if isinstance(value, collections.abc.Mapping) and not isinstance(value, dict):
        return dict(value)
    return value


def _check(name: str, value: Any, types: Any, what: str) -> None:
    """Raises TypeError naming the argument unless ``value`` is None or of ``types``
    (bool never passes for int)."""
    if value is None:
        return
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise TypeError(f"{name} must be {what}, not bool")
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}")


def _require(name: str, value: Any, types: Any, what: str) -> None:
    """:func:`_check` for an argument that cannot be None."""
    if value is None:
        raise TypeError(f"{name} must be {what}, not None")
    _check(name, value, types, what)


def _check_options(values: Dict[str, Any]) -> None:
    for name in (
        "context",
        "namespace",
        "shadow_image",
        "base_image",
        "flavour",
        "shadow_probe_binary",
        "sshd_path",
        "cluster_domain",
        "dns_server",
    ):
        _check(name, values[name], str, "a str")
    _check("kubeconfig", values["kubeconfig"], (str, os.PathLike), "a path (str or os.PathLike)")
    _check("agent_dir", values["agent_dir"], (str, os.PathLike), "a path (str or os.PathLike)")
    for name in ("labels", "annotations", "node_selector"):
        _check(name, values[name], collections.abc.Mapping, "a mapping of str to str")
        for k, v in (values[name] or {}).items():
            _check(f"{name} key", k, str, "a str")
            _check(f"{name}[{k!r}]", v, str, "a str")
    secrets = values["image_pull_secrets"]
    if isinstance(secrets, str):
        raise TypeError("image_pull_secrets must be a list of Secret names, not a str")
    _check("image_pull_secrets", secrets, (list, tuple), "a list of str")
    for name in ("ssh_port", "socks5_port", "http_proxy_port"):
        _check(name, values[name], int, "an int")
    for name in (
        "pod_ready_timeout",
        "port_forward_timeout",
        "connect_timeout",
        "dns_timeout",
        "close_timeout",
        "reconnect_timeout",
        "heartbeat_interval",
    ):
        _check(name, values[name], (int, float, datetime.timedelta), "seconds (int or float) or a timedelta")
    watchdog = values["shadow_heartbeat_timeout"]
    if watchdog is not ...:
        _check(
            "shadow_heartbeat_timeout",
            watchdog,
            (int, float, datetime.timedelta),
            "seconds (int or float), a timedelta, or None (never)",
        )
    _require("proxy_auth", values["proxy_auth"], bool, "a bool")
    _check("vpn", values["vpn"], _kt.VpnOptions, "a ktconnect.VpnOptions")


def connect_options(
    *,
    kubeconfig: Optional[PathLike] = None,
    context: Optional[str] = None,
    namespace: Optional[str] = None,
    shadow_image: Optional[str] = None,
    base_image: Optional[str] = None,
    agent_dir: Optional[PathLike] = None,
    flavour: str = "kt-shadow",
    shadow_probe_binary: Optional[str] = None,
    sshd_path: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    annotations: Optional[Mapping[str, str]] = None,
    image_pull_secrets: Optional[Sequence[str]] = None,
    node_selector: Optional[Mapping[str, str]] = None,
    pod_ready_timeout: Optional[Seconds] = None,
    port_forward_timeout: Optional[Seconds] = None,
    connect_timeout: Optional[Seconds] = None,
    dns_timeout: Optional[Seconds] = None,
    close_timeout: Optional[Seconds] = None,
    reconnect_timeout: Optional[Seconds] = None,
    heartbeat_interval: Optional[Seconds] = None,
    shadow_heartbeat_timeout: Optional[Seconds] = ...,
    ssh_port: Optional[int] = None,
    socks5_port: int = 0,
    http_proxy_port: int = 0,
    proxy_auth: bool = False,
    cluster_domain: Optional[str] = None,
    dns_server: Optional[str] = None,
    vpn: Optional[_kt.VpnOptions] = None,
    on_event: Optional[Callable[[Event], None]] = None,
) -> _kt.ConnectOptions:
    """Checks every option and returns them as a :class:`ktconnect.ConnectOptions`.

    Raises ``TypeError`` for a value of the wrong type and
    :class:`ktconnect.InvalidArgument` for a malformed one (unknown flavour, bad port,
    bad IP address), before anything happens in the cluster. See
    :meth:`Session.connect` for what each option means.
    """
    _check_options(locals())
    callback = None
    if on_event is not None:
        if not callable(on_event):
            raise TypeError("on_event must be callable (it is called with each Event)")

        def callback(raw: Tuple[str, str, Dict[str, Any]]) -> None:
            on_event(_from_native(raw))  # type: ignore[arg-type]

    return _kt.ConnectOptions(
        kubeconfig=kubeconfig,
        context=context,
        namespace=namespace,
        shadow_image=shadow_image,
        base_image=base_image,
        agent_dir=agent_dir,
        flavour=flavour,
        shadow_probe_binary=shadow_probe_binary,
        sshd_path=sshd_path,
        labels=_as_dict(labels),
        annotations=_as_dict(annotations),
        image_pull_secrets=image_pull_secrets,
        node_selector=_as_dict(node_selector),
        pod_ready_timeout=pod_ready_timeout,
        port_forward_timeout=port_forward_timeout,
        connect_timeout=connect_timeout,
        dns_timeout=dns_timeout,
        close_timeout=close_timeout,
        reconnect_timeout=reconnect_timeout,
        heartbeat_interval=heartbeat_interval,
        shadow_heartbeat_timeout=shadow_heartbeat_timeout,
        ssh_port=ssh_port,
        socks5_port=socks5_port,
        http_proxy_port=http_proxy_port,
        proxy_auth=proxy_auth,
        cluster_domain=cluster_domain,
        dns_server=dns_server,
        vpn=vpn,
        on_event=callback,
    )


def _check_target(target: Any, port: Any) -> None:
    _require("target", target, str, 'a str ("svc/name", "name", "pod/name" or an IP)')
    _require("port", port, int, "an int")


class Events:
    """A session's events: every event since it started, then new ones as they
    happen, ending after :class:`ktconnect.events.Closed`.

    Iterate it with ``for`` (blocking) or ``async for``. With ``timeout`` (seconds),
    waiting longer than that for the next event raises :class:`ktconnect.Timeout`.
    Each ``Events`` object has its own position: two iterators see every event each.
    """

    __slots__ = ("_native", "_timeout")

    def __init__(self, native: _kt.NativeEvents, timeout: Optional[float]) -> None:
        self._native = native
        self._timeout = timeout

    def __iter__(self) -> "Events":
        return self

    def __next__(self) -> Event:
        event = _from_native(self._native.next(self._timeout))
        if event is None:
            raise StopIteration
        return event

    def __aiter__(self) -> "Events":
        return self

    async def __anext__(self) -> Event:
        event = _from_native(await self._native.next_async(self._timeout))
        if event is None:
            raise StopAsyncIteration
        return event

    def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, waiting at most ``timeout`` seconds (``None``: for ever);
        ``None`` once the session's events have ended."""
        return _from_native(self._native.next(timeout))

    async def next_async(self, timeout: Optional[float] = None) -> Optional[Event]:
        """:meth:`next` for asyncio."""
        return _from_native(await self._native.next_async(timeout))

    def try_next(self) -> Optional[Event]:
        """The next event if one is waiting, else ``None``; never blocks."""
        return _from_native(self._native.try_next())


class DatagramChannel:
    """One UDP flow to a host and port in the cluster, through the session's
    kt-shadow, with no local socket: what :meth:`Session.udp_channel` returns.

    Each :meth:`send` is one datagram to the target, each :meth:`recv` one datagram
    from it (only the target's replies come back). As with any UDP socket, datagrams
    may be lost. The flow ends with :meth:`close` (or the ``with`` block), when the
    session closes, or after 60 s with no datagram either way; then ``send`` and
    ``recv`` raise :class:`ktconnect.Closed` and a new channel must be opened. Every
    method may be called from any thread.
    """

    __slots__ = ("_native",)
    _native: _kt.NativeDatagramChannel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("open a channel with Session.udp_channel(target, port)")

    @classmethod
    def _adopt(cls, native: _kt.NativeDatagramChannel) -> "DatagramChannel":
        self = object.__new__(cls)
        self._native = native
        return self

    @property
    def target(self) -> str:
        """The target as given (``"echo"``, ``"svc/kube-dns.kube-system"``, an IP)."""
        return self._native.target

    @property
    def port(self) -> int:
        """The target's UDP port."""
        return self._native.port

    @property
    def peer_addr(self) -> Address:
        """The address the shadow sends to, ``(host, port)``: the Service's ClusterIP,
        the pod's IP, or what the name resolved to."""
        return self._native.peer_addr

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native.closed

    def send(self, datagram: Union[bytes, bytearray]) -> None:
        """Sends one datagram (up to 65 507 bytes; empty is allowed). Raises
        :class:`ktconnect.InvalidArgument` for a longer one, :class:`ktconnect.Closed`
        once the flow or the session is closed."""
        _require("datagram", datagram, (bytes, bytearray), "bytes")
        self._native.send(datagram)

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """The next datagram from the target, waiting at most ``timeout`` seconds
        (``None``: until one comes); raises :class:`ktconnect.Timeout` when none came,
        :class:`ktconnect.Closed` once the flow or the session is closed."""
        return self._native.recv(timeout)

    async def send_async(self, datagram: Union[bytes, bytearray]) -> None:
        """:meth:`send` for asyncio."""
        _require("datagram", datagram, (bytes, bytearray), "bytes")
        await self._native.send_async(datagram)

    async def recv_async(self, timeout: Optional[float] = None) -> bytes:
        """:meth:`recv` for asyncio."""
        return await self._native.recv_async(timeout)

    def close(self) -> None:
        """Ends the flow; a ``recv`` waiting on another thread raises
        :class:`ktconnect.Closed`. Calling it again does nothing."""
        self._native.close()

    def __enter__(self) -> "DatagramChannel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "DatagramChannel":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        host, port = self.peer_addr
        state = "closed" if self.closed else "open"
        return f"<ktconnect.DatagramChannel {self.target} port {self.port} ({host}:{port}) {state}>"


def recover_system_dns() -> List[str]:
    """Undoes every system DNS change (resolv.conf, hosts entries, ``/etc/resolver``
    files) that a VPN-mode kt process left behind when it crashed or was killed; returns
    one line per change undone (empty when there was nothing to do). Changes of a kt
    process still running are left alone. Restore records are read from
    ``$KT_STATE_DIR/restore`` (default ``/var/lib/kt/restore``); undoing them needs
    the rights to write those files (root). A session in VPN mode calls it itself
    before changing system DNS. Raises :class:`ktconnect.VpnError` when a change cannot
    be undone (its record is kept to retry)."""
    return _kt.recover_system_dns()


class _Connecting(collections.abc.Coroutine):  # type: ignore[type-arg]
    """What :meth:`Session.connect_async` returns: await it for a :class:`Session`, or
    use it directly as ``async with Session.connect_async(...) as session``.

    It is a coroutine, so ``asyncio.create_task`` takes it too.
    """

    __slots__ = ("_options", "_coro", "_session")

    def __init__(self, options: _kt.ConnectOptions) -> None:
        self._options = options
        self._coro: Optional[collections.abc.Coroutine] = None  # type: ignore[type-arg]
        self._session: Optional[Session] = None

    async def _connect(self) -> "Session":
        native = await _kt.connect_async(self._options)
        return Session._adopt(native)

    def _inner(self) -> collections.abc.Coroutine:  # type: ignore[type-arg]
        if self._coro is None:
            self._coro = self._connect()
        return self._coro

    def __await__(self) -> Generator[Any, None, "Session"]:
        return self._inner().__await__()

    def send(self, value: Any) -> Any:
        return self._inner().send(value)

    def throw(self, *args: Any) -> Any:
        return self._inner().throw(*args)

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    async def __aenter__(self) -> "Session":
        self._session = await self._inner()
        return self._session

    async def __aexit__(self, *exc: Any) -> None:
        if self._session is not None:
            await self._session.close_async()


class Session:
    """An open connection into a Kubernetes cluster through a shadow pod.

    Open it with :meth:`connect` (blocking) or :meth:`connect_async`; close it with
    :meth:`close` / :meth:`close_async`, or use it as a (async) context manager. A
    session that is garbage-collected, or still open at interpreter exit, is closed
    then. Every method may be called from any thread.

    Addresses are ``(host, port)`` tuples (``("127.0.0.1", 41231)``); the ``*_url``
    properties give proxy URLs for HTTP clients.
    """

    __slots__ = ("_native", "__weakref__")
    _native: _kt.NativeSession

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("open a session with Session.connect(...) or Session.connect_async(...)")

    @classmethod
    def _adopt(cls, native: _kt.NativeSession) -> "Session":
        self = object.__new__(cls)
        self._native = native
        with _open_lock:
            _open_sessions.add(self)
        return self

    # -- opening -------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        *,
        kubeconfig: Optional[PathLike] = None,
        context: Optional[str] = None,
        namespace: Optional[str] = None,
        shadow_image: Optional[str] = None,
        base_image: Optional[str] = None,
        agent_dir: Optional[PathLike] = None,
        flavour: str = "kt-shadow",
        shadow_probe_binary: Optional[str] = None,
        sshd_path: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        annotations: Optional[Mapping[str, str]] = None,
        image_pull_secrets: Optional[Sequence[str]] = None,
        node_selector: Optional[Mapping[str, str]] = None,
        pod_ready_timeout: Optional[Seconds] = None,
        port_forward_timeout: Optional[Seconds] = None,
        connect_timeout: Optional[Seconds] = None,
        dns_timeout: Optional[Seconds] = None,
        close_timeout: Optional[Seconds] = None,
        reconnect_timeout: Optional[Seconds] = None,
        heartbeat_interval: Optional[Seconds] = None,
        shadow_heartbeat_timeout: Optional[Seconds] = ...,
        ssh_port: Optional[int] = None,
        socks5_port: int = 0,
        http_proxy_port: int = 0,
        proxy_auth: bool = False,
        cluster_domain: Optional[str] = None,
        dns_server: Optional[str] = None,
        vpn: Optional[_kt.VpnOptions] = None,
        on_event: Optional[Callable[[Event], None]] = None,
        options: Optional[_kt.ConnectOptions] = None,
    ) -> "Session":
        """Opens a session: creates the shadow pod (and, for the OpenSSH flavour, its
        Secret), waits until the pod is Ready, tunnels SSH to it through the API server
        and starts the local proxies. Blocks (with the GIL released; Ctrl-C abandons
        the connect and removes what it created).

        Options (all optional):

        - ``kubeconfig``, ``context``, ``namespace``: default to ``KUBECONFIG`` /
          ``~/.kube/config``, its current context and that context's namespace.
        - ``flavour``: the shadow's SSH server (``"kt-shadow"``, the default, or
          ``"openssh"``).
        - ``shadow_image``: run the shadow from this image (default
          ``$KT_SHADOW_IMAGE``, else none: kt ships its agent into the namespace, once,
          as ConfigMaps, and runs it on an image the node already has). Pin an image by
          digest (``registry/kt-shadow@sha256:...``); ``"openssh"`` needs one (any image
          with sshd).
        - ``base_image``: the image the shipped agent runs on when no running pod in
          the namespace can lend its own (default ``registry.k8s.io/pause:3.10``).
        - ``agent_dir``: a directory (str or ``os.PathLike``) holding ``kt-shadow``
          (``kt-shadow/build-static`` makes it) to ship instead of the
          agent built into kt (default ``$KT_AGENT_DIR``).
        - ``shadow_probe_binary``: the command the kt-shadow readiness probe runs
          (default ``kt-shadow``, looked up on the image's ``PATH``), for a custom image
          that keeps it elsewhere; ``sshd_path``: ``sshd`` in the OpenSSH image (default
          ``/usr/sbin/sshd``).
        - ``labels``, ``annotations``, ``image_pull_secrets``, ``node_selector``: for
          the shadow pod.
        - timeouts in seconds (or ``timedelta``): ``pod_ready_timeout`` (60),
          ``port_forward_timeout`` (10), ``connect_timeout`` (30), ``dns_timeout`` (5),
          ``close_timeout`` (60), ``reconnect_timeout`` (120), ``heartbeat_interval``
          (30).
        - ``shadow_heartbeat_timeout``: the shadow's watchdog: after this long without
          a connected client, kt-shadow exits on its own, so a crashed client's shadow
          stops running (seconds or ``timedelta``; default 10 minutes; ``None``: never).
        - ports: ``ssh_port`` (in the pod), ``socks5_port``, ``http_proxy_port`` (local;
          0 picks a free one).
        - ``proxy_auth``: the local proxies require random per-session credentials
          (default ``False``: like ``kubectl port-forward``, any local process of any
          user may use them). :attr:`Session.http_proxy_url`,
          :attr:`Session.socks5_url` and :meth:`Session.env` carry them
          (``http://user:password@127.0.0.1:<port>``); keep those secret.
        - ``cluster_domain`` (``cluster.local``), ``dns_server`` (an IP).
        - ``vpn``: a :class:`ktconnect.VpnOptions` for VPN mode (needs CAP_NET_ADMIN).
        - ``on_event``: called with each :class:`ktconnect.Event` from the start (on a
          kt thread; keep it quick and do not call the session from it).
        - ``options``: a :class:`ktconnect.ConnectOptions` made earlier, instead of the
          keywords.

        Raises a :class:`ktconnect.KtError` subclass saying what failed and what to do.
        """
        if options is None:
            options = connect_options(
                kubeconfig=kubeconfig,
                context=context,
                namespace=namespace,
                shadow_image=shadow_image,
                base_image=base_image,
                agent_dir=agent_dir,
                flavour=flavour,
                shadow_probe_binary=shadow_probe_binary,
                sshd_path=sshd_path,
                labels=labels,
                annotations=annotations,
                image_pull_secrets=image_pull_secrets,
                node_selector=node_selector,
                pod_ready_timeout=pod_ready_timeout,
                port_forward_timeout=port_forward_timeout,
                connect_timeout=connect_timeout,
                dns_timeout=dns_timeout,
                close_timeout=close_timeout,
                reconnect_timeout=reconnect_timeout,
                heartbeat_interval=heartbeat_interval,
                shadow_heartbeat_timeout=shadow_heartbeat_timeout,
                ssh_port=ssh_port,
                socks5_port=socks5_port,
                http_proxy_port=http_proxy_port,
                proxy_auth=proxy_auth,
                cluster_domain=cluster_domain,
                dns_server=dns_server,
                vpn=vpn,
                on_event=on_event,
            )
        elif not isinstance(options, _kt.ConnectOptions):
            raise TypeError(
                f"options must be a ktconnect.ConnectOptions, not {type(options).__name__}"
            )
        return cls._adopt(_kt.connect(options))

    @classmethod
    def connect_async(
        cls,
        *,
        kubeconfig: Optional[PathLike] = None,
        context: Optional[str] = None,
        namespace: Optional[str] = None,
        shadow_image: Optional[str] = None,
        base_image: Optional[str] = None,
        agent_dir: Optional[PathLike] = None,
        flavour: str = "kt-shadow",
        shadow_probe_binary: Optional[str] = None,
        sshd_path: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        annotations: Optional[Mapping[str, str]] = None,
        image_pull_secrets: Optional[Sequence[str]] = None,
        node_selector: Optional[Mapping[str, str]] = None,
        pod_ready_timeout: Optional[Seconds] = None,
        port_forward_timeout: Optional[Seconds] = None,
        connect_timeout: Optional[Seconds] = None,
        dns_timeout: Optional[Seconds] = None,
        close_timeout: Optional[Seconds] = None,
        reconnect_timeout: Optional[Seconds] = None,
        heartbeat_interval: Optional[Seconds] = None,
        shadow_heartbeat_timeout: Optional[Seconds] = ...,
        ssh_port: Optional[int] = None,
        socks5_port: int = 0,
        http_proxy_port: int = 0,
        proxy_auth: bool = False,
        cluster_domain: Optional[str] = None,
        dns_server: Optional[str] = None,
        vpn: Optional[_kt.VpnOptions] = None,
        on_event: Optional[Callable[[Event], None]] = None,
        options: Optional[_kt.ConnectOptions] = None,
    ) -> _Connecting:
        """:meth:`connect` for asyncio: ``session = await Session.connect_async(...)``
        or ``async with Session.connect_async(...) as session``. The options are
        checked at once (bad ones raise here, not at the ``await``). Cancelling the
        awaiting task abandons the connect and removes what it created."""
        if options is None:
            options = connect_options(
                kubeconfig=kubeconfig,
                context=context,
                namespace=namespace,
                shadow_image=shadow_image,
                base_image=base_image,
                agent_dir=agent_dir,
                flavour=flavour,
                shadow_probe_binary=shadow_probe_binary,
                sshd_path=sshd_path,
                labels=labels,
                annotations=annotations,
                image_pull_secrets=image_pull_secrets,
                node_selector=node_selector,
                pod_ready_timeout=pod_ready_timeout,
                port_forward_timeout=port_forward_timeout,
                connect_timeout=connect_timeout,
                dns_timeout=dns_timeout,
                close_timeout=close_timeout,
                reconnect_timeout=reconnect_timeout,
                heartbeat_interval=heartbeat_interval,
                shadow_heartbeat_timeout=shadow_heartbeat_timeout,
                ssh_port=ssh_port,
                socks5_port=socks5_port,
                http_proxy_port=http_proxy_port,
                proxy_auth=proxy_auth,
                cluster_domain=cluster_domain,
                dns_server=dns_server,
                vpn=vpn,
                on_event=on_event,
            )
        elif not isinstance(options, _kt.ConnectOptions):
            raise TypeError(
                f"options must be a ktconnect.ConnectOptions, not {type(options).__name__}"
            )
        return _Connecting(options)

    # -- what the session is -------------------------------------------------------

    @property
    def id(self) -> str:
        """The session id: the ``kt.dev/session`` label on everything it created."""
        return self._native.id

    @property
    def namespace(self) -> str:
        """The namespace the session works in."""
        return self._native.namespace

    @property
    def pod_name(self) -> str:
        """The shadow pod's name."""
        return self._native.pod_name

    @property
    def socks5_addr(self) -> Address:
        """The local SOCKS5 proxy, ``(host, port)``; names resolve in the cluster."""
        return self._native.socks5_addr

    @property
    def http_proxy_addr(self) -> Address:
        """The local HTTP proxy (``CONNECT`` and plain ``http://``), ``(host, port)``."""
        return self._native.http_proxy_addr

    @property
    def http_proxy_url(self) -> str:
        """The HTTP proxy as a URL: ``http://127.0.0.1:<port>``, or
        ``http://<user>:<password>@127.0.0.1:<port>`` when the session was opened with
        ``proxy_auth=True`` (then keep it secret)."""
        return self._native.http_proxy_url

    @property
    def socks5_url(self) -> str:
        """The SOCKS5 proxy as a URL with remote DNS: ``socks5h://127.0.0.1:<port>``,
        with ``<user>:<password>@`` before the address under ``proxy_auth=True``."""
        return self._native.socks5_url

    @property
    def dns_server(self) -> str:
        """The cluster DNS server the session queries (as the shadow reaches it)."""
        return self._native.dns_server

    @property
    def dns_addr(self) -> Optional[Address]:
        """VPN mode's local DNS server, ``(host, port)``; ``None`` in proxy mode."""
        return self._native.dns_addr

    @property
    def vpn(self) -> Optional[Dict[str, Any]]:
        """VPN mode's ``device``, ``routes``, ``dns_addr``, ``dns_mode`` and
        ``dns_detail``; ``None`` in proxy mode."""
        return self._native.vpn

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native.closed

    def env(self) -> Dict[str, str]:
        """Environment variables that send a child process's traffic through the
        session (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, in both
        cases, and ``NODE_USE_ENV_PROXY``): ``subprocess.run(..., env={**os.environ,
        **session.env()})``. Under ``proxy_auth=True`` the proxy URLs carry the
        session's credentials."""
        return self._native.env()

    def requests_proxies(self) -> Dict[str, str]:
        """``proxies=`` for ``requests``: both schemes through the HTTP proxy."""
        url = self.http_proxy_url
        return {"http": url, "https": url}

    def httpx_proxy(self) -> str:
        """``proxy=`` for ``httpx.Client`` / ``httpx.AsyncClient``."""
        return self.http_proxy_url

    def events(self, timeout: Optional[float] = None) -> Events:
        """The session's events (see :class:`Events`); ``timeout`` bounds each wait."""
        return Events(self._native.events(), timeout)

    # -- blocking operations ---------------------------------------------------------

    def resolve(self, name: str) -> List[str]:
        """The addresses of ``name`` in the cluster, with the search list of a pod in
        the session's namespace (``echo``, ``echo.other-ns``, full names, pod names).
        Raises :class:`ktconnect.NameNotFound` naming every name tried."""
        _require("name", name, str, "a str")
        return self._native.resolve(name)

    def forward(self, target: str, port: int) -> Address:
        """A local TCP port (``(host, port)`` on 127.0.0.1) tunnelled to ``target``'s
        ``port``: a Service (``echo``, ``echo.other-ns``, ``svc/echo``; ``port`` is the
        Service port), ``pod/name``, or an IP. Lives until the session closes."""
        _check_target(target, port)
        return self._native.forward(target, port)

    def forward_udp(self, target: str, port: int) -> Address:
        """Like :meth:`forward` for UDP (kt-shadow only): datagrams to the local port go
        to ``target``'s UDP ``port``, replies come back to their sender."""
        _check_target(target, port)
        return self._native.forward_udp(target, port)

    def udp_channel(self, target: str, port: int) -> DatagramChannel:
        """One UDP flow to ``target``'s UDP ``port`` (kt-shadow only), as a
        :class:`DatagramChannel` with ``send``/``recv`` of whole datagrams and no local
        socket. ``target`` is as for :meth:`forward`. Raises
        :class:`ktconnect.ConnectError` when the shadow cannot open a UDP socket to the
        target, :class:`ktconnect.Unsupported` with the OpenSSH shadow."""
        _check_target(target, port)
        return DatagramChannel._adopt(self._native.udp_channel(target, port))

    def swap(
        self,
        target: str,
        expose: Ports,
        *,
        mode: str = "selector",
        check_local: bool = True,
        restore_ttl: Seconds = 30.0,
        on_event: Optional[Callable[[Event], None]] = None,
    ) -> Swap:
        """Takes over ``target``'s traffic: connections that pods in the cluster make
        to it arrive at local ports on this machine, until the returned
        :class:`ktconnect.Swap` is closed (use it as ``with session.swap(...) as
        swap:``).

        - ``target``: ``deploy/NAME``, ``sts/NAME``, ``svc/NAME`` or a bare name (a
          Service of that name, else a Deployment, else a StatefulSet).
        - ``expose``: ``local[:remote]`` pairs, as a str (``"8080:80,9090"``) or a
          list (``["8080:80", "9090:grpc"]``); ``remote`` (default: the local port's
          number) is a Service port, a container port or a port name of the target.
        - ``mode``: ``"selector"`` (default: the Services that select the workload
          select the swap shadow instead; the workload keeps running) or ``"scale"``
          (the shadow carries the workload's pod labels and the workload is scaled to
          0; a workload under a HorizontalPodAutoscaler is refused).
        - ``check_local``: refuse (:class:`ktconnect.ConnectError`) when nothing
          listens on a local port (default ``True``; ``False`` to start the local
          process afterwards).
        - ``restore_ttl``: seconds (or ``timedelta``) after the last heartbeat at which
          the swap shadow puts the cluster back by itself if this process died
          (default 30, at least 3).
        - ``on_event``: called with each :class:`ktconnect.Event` of the swap (on a kt
          thread; keep it quick).

        Nothing changes before the shadow is ready and listening. Raises
        :class:`ktconnect.Conflict` while another live session holds the target (the
        message names it and since when), :class:`ktconnect.NotFound` for a missing
        target, :class:`ktconnect.InvalidArgument` for a port the target does not
        have, :class:`ktconnect.Forbidden` without the Role ``kt-inbound``.
        """
        args = _swap_args(target, expose, mode, check_local, restore_ttl, on_event)
        return Swap._adopt(self._native.swap(target, expose, **args))

    def expose(
        self,
        name: str,
        expose: Ports,
        *,
        service_type: str = "ClusterIP",
        check_local: bool = True,
        on_event: Optional[Callable[[Event], None]] = None,
    ) -> Expose:
        """Publishes local ports as a new Service ``name`` in the session's namespace:
        pods connecting to ``name:remote`` reach ``127.0.0.1:local`` here, until the
        returned :class:`ktconnect.Expose` is closed (or its ``with`` block ends).

        ``expose`` as for :meth:`swap` (``remote`` is the Service port; default the
        local port's number); ``service_type``: ``"ClusterIP"`` (default),
        ``"NodePort"`` or ``"LoadBalancer"``; ``check_local`` and ``on_event`` as for
        :meth:`swap`. Raises :class:`ktconnect.Conflict` when a Service ``name``
        exists already (nothing is created then).
        """
        args = _expose_args(name, expose, service_type, check_local, on_event)
        return Expose._adopt(self._native.expose(name, expose, **args))

    def mesh(
        self,
        target: str,
        expose: Ports,
        *,
        rule: Optional[str] = None,
        check_local: bool = True,
        restore_ttl: Seconds = 30.0,
        on_event: Optional[Callable[[Event], None]] = None,
    ) -> Mesh:
        """Meshes ``target``'s Service: only its requests that match ``rule`` arrive at
        local ports here, every other request still reaches its pods, until the
        returned :class:`ktconnect.Mesh` is closed (``with session.mesh("svc/web",
        "8080:80") as mesh: requests.get(url, headers=mesh.header)``).

        - ``target``: ``svc/NAME``, or a workload (``deploy/NAME``, ``sts/NAME``, a
          bare name) one Service selects.
        - ``expose``: as for :meth:`swap` (``remote``: a Service port, a container
          port or a port name of its pods).
        - ``rule``: ``None`` (default: kt-connect's mark, a header ``version`` with a
          random value; :attr:`ktconnect.Mesh.header` says what to send), or a text:
          ``"version=alice"`` (``"version:alice"`` too), ``"x-dev~^a.*"`` (a header
          matching a regex), ``"/api"`` (a path prefix), joined by ``&&`` (all) or
          ``||`` (any).
        - ``check_local``, ``restore_ttl`` (after which this developer's rule is
          removed by itself if this process died) and ``on_event`` as for :meth:`swap`.

        Several developers mesh one Service at once, each with their own rule. Raises
        :class:`ktconnect.Conflict` when another developer already routes the same
        header value (the message names them), :class:`ktconnect.InvalidArgument` for
        a bad rule or a target no single Service selects.
        """
        args = _mesh_args(target, expose, rule, check_local, restore_ttl, on_event)
        return Mesh._adopt(self._native.mesh(target, expose, **args))

    def close(self) -> None:
        """Removes the shadow pod and its Secret if any, waits until they are gone, and
        ends every proxy and forward. Calling it again does nothing. Raises
        :class:`ktconnect.CleanupError` (with the kubectl command to finish) if
        something could not be removed."""
        try:
            self._native.close()
        finally:
            with _open_lock:
                _open_sessions.discard(self)

    # -- asyncio ---------------------------------------------------------------------

    async def resolve_async(self, name: str) -> List[str]:
        """:meth:`resolve` for asyncio."""
        _require("name", name, str, "a str")
        return await self._native.resolve_async(name)

    async def forward_async(self, target: str, port: int) -> Address:
        """:meth:`forward` for asyncio."""
        _check_target(target, port)
        return await self._native.forward_async(target, port)

    async def forward_udp_async(self, target: str, port: int) -> Address:
        """:meth:`forward_udp` for asyncio."""
        _check_target(target, port)
        return await self._native.forward_udp_async(target, port)

    async def udp_channel_async(self, target: str, port: int) -> DatagramChannel:
        """:meth:`udp_channel` for asyncio."""
        _check_target(target, port)
        return DatagramChannel._adopt(await self._native.udp_channel_async(target, port))

    async def swap_async(
        self,
        target: str,
        expose: Ports,
        *,
        mode: str = "selector",
        check_local: bool = True,
        restore_ttl: Seconds = 30.0,
        on_event: Optional[Callable[[Event], None]] = None,
    ) -> Swap:
        """:meth:`swap` for asyncio: ``async with await session.swap_async(...) as
        swap:``."""
        args = _swap_args(target, expose, mode, check_local, restore_ttl, on_event)
        return Swap._adopt(await self._native.swap_async(target, expose, **args))

    async def expose_async(
        self,
        name: str,
        expose: Ports,
        *,
        service_type: str = "ClusterIP",
        check_local: bool = True,
        on_event: Optional[Callable[[Event], None]] = None,
    ) -> Expose:
        """:meth:`expose` for asyncio."""
        args = _expose_args(name, expose, service_type, check_local, on_event)
        return Expose._adopt(await self._native.expose_async(name, expose, **args))

    async def mesh_async(
        self,
        target: str,
        expose: Ports,
        *,
        rule: Optional[str] = None,
        check_local: bool = True,
        restore_ttl: Seconds = 30.0,
        on_event: Optional[Callable[[Event], None]] = None,
    ) -> Mesh:
        """:meth:`mesh` for asyncio: ``async with await session.mesh_async(...) as
        mesh:``."""
        args = _mesh_args(target, expose, rule, check_local, restore_ttl, on_event)
        return Mesh._adopt(await self._native.mesh_async(target, expose, **args))

    async def close_async(self) -> None:
        """:meth:`close` for asyncio."""
        try:
            await self._native.close_async()
        finally:
            with _open_lock:
                _open_sessions.discard(self)

    # -- context managers ------------------------------------------------------------

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close_async()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        host, port = self.http_proxy_addr
        return (
            f"<ktconnect.Session {self.id} {state} namespace={self.namespace} "
            f"pod={self.pod_name} http_proxy={host}:{port}>"
        )
