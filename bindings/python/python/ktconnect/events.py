"""Typed session events.

Every event has ``kind`` (``"creating"``, ``"tunnel_up"``, ...) and ``message`` (one
line for a person, also ``str(event)``), plus the fields of its kind. A session's events
start with :class:`Creating` (after :class:`Uploading` when kt first ships its
agent to the namespace) and end with :class:`Closed`; a swap's, an expose's or a
mesh's (:meth:`ktconnect.Swap.events`) have their own kinds too (:class:`Listening`,
:class:`SelectorSwitched`, :class:`Scaled`, :class:`Inbound`, :class:`Restored`,
:class:`Routed`, ...)::

    for event in session.events(timeout=30):
        print(event.kind, event)

Addresses are ``(host, port)`` tuples, like :attr:`ktconnect.Session.http_proxy_addr`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Type

__all__ = [
    "Event",
    "Creating",
    "Uploading",
    "Scheduled",
    "Pulling",
    "ImageReady",
    "Ready",
    "TunnelUp",
    "Recovered",
    "VpnUp",
    "DnsInstalled",
    "Reconnecting",
    "Reconnected",
    "TunnelLost",
    "HeartbeatFailed",
    "Closing",
    "Closed",
    "Listening",
    "SelectorSwitched",
    "Scaled",
    "ServiceCreated",
    "Inbound",
    "Restored",
    "RestoreConflict",
    "Routed",
]

Address = Tuple[str, int]


@dataclass(frozen=True)
class Event:
    """Something that happened to a session. Subclasses add the fields of each kind;
    an event of a kind this version does not know arrives as a plain ``Event``."""

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Creating(Event):
    """The shadow pod (and, for the OpenSSH flavour, its Secret) is being created."""

    namespace: str
    pod: str
    image: str


@dataclass(frozen=True)
class Uploading(Event):
    """kt is uploading its agent into ``namespace`` as ``parts`` ConfigMaps holding
    ``bytes`` bytes: the first session of this kt version there (later ones reuse
    them). Only when no shadow image is given."""

    namespace: str
    parts: int
    bytes: int


@dataclass(frozen=True)
class Scheduled(Event):
    """The scheduler placed the shadow pod on a node."""

    node: str


@dataclass(frozen=True)
class Pulling(Event):
    """The node is pulling the image / creating the container."""

    image: str


@dataclass(frozen=True)
class ImageReady(Event):
    """The image is on the node and the container started."""

    image: str


@dataclass(frozen=True)
class Ready(Event):
    """The shadow pod is Ready."""

    pod_ip: str


@dataclass(frozen=True)
class TunnelUp(Event):
    """The port-forward and SSH session are up; the proxies listen."""

    socks5: Address
    http_proxy: Address


@dataclass(frozen=True)
class Recovered(Event):
    """VPN mode: system DNS settings left by a crashed session were put back."""

    what: str


@dataclass(frozen=True)
class VpnUp(Event):
    """VPN mode: the tun device is up with its routes."""

    device: str
    routes: Tuple[str, ...]


@dataclass(frozen=True)
class DnsInstalled(Event):
    """VPN mode: the local DNS server runs and the system resolver uses it."""

    server: Address
    detail: str


@dataclass(frozen=True)
class Reconnecting(Event):
    """The tunnel dropped; kt is re-establishing it (try ``attempt``)."""

    attempt: int
    reason: str


@dataclass(frozen=True)
class Reconnected(Event):
    """The tunnel is back after a drop."""

    attempts: int


@dataclass(frozen=True)
class TunnelLost(Event):
    """The tunnel could not be re-established; the session is unusable."""

    reason: str


@dataclass(frozen=True)
class HeartbeatFailed(Event):
    """Refreshing the shadow pod's heartbeat failed (the session goes on)."""

    reason: str


@dataclass(frozen=True)
class Closing(Event):
    """``close()`` started removing the session's objects."""


@dataclass(frozen=True)
class Closed(Event):
    """Every object is gone and every task ended: the last event."""


@dataclass(frozen=True)
class Listening(Event):
    """Swap or expose: the shadow is ready and listens on these ports (nothing in
    the cluster was changed before this)."""

    ports: Tuple[str, ...]


@dataclass(frozen=True)
class SelectorSwitched(Event):
    """Swap, selector mode: a Service's selector was switched (to the swap shadow, or
    back to the original at close)."""

    service: str
    selector: str


@dataclass(frozen=True)
class Scaled(Event):
    """Swap, scale mode: the workload was scaled from ``from_`` to ``to`` replicas
    (``from`` in kt's other front ends; a keyword in Python)."""

    workload: str
    from_: int
    to: int


@dataclass(frozen=True)
class ServiceCreated(Event):
    """Expose: the new Service exists."""

    service: str


@dataclass(frozen=True)
class Inbound(Event):
    """A connection from the cluster arrived (``peer`` connected to ``port``)."""

    peer: str
    port: int


@dataclass(frozen=True)
class Restored(Event):
    """Close (or a restore after a crash) put a value back on ``object``."""

    object: str
    detail: str


@dataclass(frozen=True)
class RestoreConflict(Event):
    """A value someone else changed meanwhile was left alone, not restored."""

    detail: str


@dataclass(frozen=True)
class Routed(Event):
    """Mesh: the router routes the requests of ``rule`` to this machine."""

    service: str
    rule: str
    router: str


_BY_KIND: Dict[str, Type[Event]] = {
    "creating": Creating,
    "scheduled": Scheduled,
    "pulling": Pulling,
    "image_ready": ImageReady,
    "ready": Ready,
    "tunnel_up": TunnelUp,
    "recovered": Recovered,
    "vpn_up": VpnUp,
    "dns_installed": DnsInstalled,
    "reconnecting": Reconnecting,
    "reconnected": Reconnected,
    "tunnel_lost": TunnelLost,
    "heartbeat_failed": HeartbeatFailed,
    "closing": Closing,
    "closed": Closed,
    "listening": Listening,
    "selector_switched": SelectorSwitched,
    "scaled": Scaled,
    "service_created": ServiceCreated,
    "inbound": Inbound,
    "restored": Restored,
    "restore_conflict": RestoreConflict,
    "routed": Routed,
    "uploading": Uploading,
}


def _from_native(raw: Optional[Tuple[str, str, Dict[str, Any]]]) -> Optional[Event]:
    """The event for the native layer's ``(kind, message, fields)``."""
    if raw is None:
        return None
    kind, message, fields = raw
    cls = _BY_KIND.get(kind)
    if cls is None:
        return Event(kind=kind, message=message)
    for name in ("routes", "ports"):
        if name in fields:
            fields[name] = tuple(fields[name])
    # Python keywords cannot be field names.
    if "from" in fields:
        fields["from_"] = fields.pop("from")
    return cls(kind=kind, message=message, **fields)
