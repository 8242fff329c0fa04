"""ktconnect: work from Python as if inside a Kubernetes cluster.

kt starts a *shadow* pod in a namespace, tunnels SSH to it through the API server's
port-forward, and serves on 127.0.0.1 a SOCKS5 proxy and an HTTP proxy that resolve
names in the cluster, local forwards to Services and pods, and DNS lookups through the
cluster DNS::

    import requests
    from ktconnect import Session

    with Session.connect(namespace="dev") as session:
        r = requests.get("http://web/hello", proxies=session.requests_proxies())
        print(r.text, session.resolve("web"), session.forward("svc/postgres", 5432))

``await Session.connect_async(...)`` / ``async with Session.connect_async(...) as s``
is the same for asyncio. Errors are subclasses of :class:`KtError`, one per kind of failure (``KtError.kind``
names it, as every kt front end does); progress comes as
typed events (:mod:`ktconnect.events`). The pytest plugin (:mod:`ktconnect.pytest_plugin`)
gives tests a ``kt_session`` fixture and a ``kt_swap`` factory.

The other way round, ``with session.swap("deploy/web", "8080:80") as swap:`` sends the
traffic that pods send to ``web`` to ``127.0.0.1:8080`` here until the block ends
(then the cluster is exactly as before); ``session.expose("preview", "3000:80")``
publishes a local port as a new Service; ``with session.mesh("svc/web", "8080:80") as
mesh:`` sends only the requests that carry ``mesh.header`` here, the rest of the team's
keep reaching the Service's pods; :func:`clean` and :func:`recover` put back what
sessions that died left.
"""

from . import events
from ._native import (
    ApiError,
    CleanupError,
    Closed,
    Conflict,
    ConfigError,
    ConnectError,
    ConnectOptions,
    DnsError,
    Forbidden,
    InternalError,
    InvalidArgument,
    KtError,
    LocalError,
    NameNotFound,
    NeedsCapability,
    NotFound,
    ShadowError,
    Timeout,
    TunnelDown,
    TunnelError,
    Unreachable,
    Unsupported,
    VpnError,
    VpnOptions,
    __version__,
)
from ._inbound import (
    CleanReport,
    Expose,
    Mesh,
    Swap,
    clean,
    clean_async,
    recover,
    recover_async,
)
from ._session import DatagramChannel, Events, Session, connect_options, recover_system_dns
from .events import Event

__all__ = [
    "Session",
    "ConnectOptions",
    "VpnOptions",
    "connect_options",
    "recover_system_dns",
    "clean",
    "clean_async",
    "recover",
    "recover_async",
    "CleanReport",
    "Swap",
    "Expose",
    "Mesh",
    "DatagramChannel",
    "Events",
    "Event",
    "events",
    "KtError",
    "InvalidArgument",
    "ConfigError",
    "Unreachable",
    "NotFound",
    "NameNotFound",
    "Forbidden",
    "NeedsCapability",
    "Timeout",
    "ApiError",
    "ShadowError",
    "TunnelError",
    "TunnelDown",
    "ConnectError",
    "DnsError",
    "Unsupported",
    "Closed",
    "LocalError",
    "VpnError",
    "CleanupError",
    "InternalError",
    "Conflict",
    "__version__",
]
