"""Type stubs of the native module (bindings/python/src). Use the ``ktconnect``
package; this module is its engine."""

import os
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__version__: str
DEFAULT_OPENSSH_IMAGE: str
SHADOW_IMAGE_ENV: str

Address = Tuple[str, int]
# (kind, message, fields)
RawEvent = Tuple[str, str, Dict[str, Any]]
# int | float seconds, or datetime.timedelta
Seconds = Any

class KtError(Exception):
    """Base class of every error ktconnect raises."""

    kind: str
    transient: bool

class InvalidArgument(KtError, ValueError): ...
class ConfigError(KtError): ...
class Unreachable(KtError, ConnectionError): ...

class NotFound(KtError, LookupError):
    name: str
    namespace: str

class NameNotFound(NotFound):
    tried: List[str]

class Forbidden(KtError, PermissionError):
    verb: str
    resource: str
    namespace: str

class NeedsCapability(KtError, PermissionError):
    capability: str

class Timeout(KtError, TimeoutError): ...
class ApiError(KtError): ...
class ShadowError(KtError): ...
class TunnelError(KtError, ConnectionError): ...
class TunnelDown(TunnelError): ...
class DnsError(KtError): ...
class Unsupported(KtError): ...
class Closed(KtError): ...
class LocalError(KtError, OSError): ...
class VpnError(KtError, OSError): ...

class CleanupError(KtError):
    session: str
    namespace: str
    remaining: List[str]

class VpnOptions:
    """VPN mode settings (needs CAP_NET_ADMIN)."""

    def __init__(
        self,
        *,
        include: Optional[Sequence[str]] = None,
        exclude: Optional[Sequence[str]] = None,
        discover: bool = True,
        tun_name: Optional[str] = None,
        mtu: Optional[int] = None,
        address: Optional[str] = None,
        dns: str = "auto",
        dns_listen: Optional[str] = None,
    ) -> None: ...

class ConnectOptions:
    """How to open a session, checked when made."""

    def __init__(
        self,
        *,
        kubeconfig: Optional[Union[str, os.PathLike[str]]] = None,
        context: Optional[str] = None,
        namespace: Optional[str] = None,
        shadow_image: Optional[str] = None,
        flavour: str = "kt-shadow",
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
        ssh_port: Optional[int] = None,
        socks5_port: int = 0,
        http_proxy_port: int = 0,
        cluster_domain: Optional[str] = None,
        dns_server: Optional[str] = None,
        vpn: Optional[VpnOptions] = None,
        on_event: Optional[Callable[[RawEvent], None]] = None,
    ) -> None: ...
    @property
    def shadow_image(self) -> str: ...

class NativeEvents:
    def next(self, timeout: Optional[float] = None) -> Optional[RawEvent]: ...
    def next_async(self, timeout: Optional[float] = None) -> Awaitable[Optional[RawEvent]]: ...
    def try_next(self) -> Optional[RawEvent]: ...

class NativeSession:
    @property
    def id(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def pod_name(self) -> str: ...
    @property
    def socks5_addr(self) -> Address: ...
    @property
    def http_proxy_addr(self) -> Address: ...
    @property
    def dns_server(self) -> str: ...
    @property
    def dns_addr(self) -> Optional[Address]: ...
    @property
    def vpn(self) -> Optional[Dict[str, Any]]: ...
    @property
    def closed(self) -> bool: ...
    def env(self) -> Dict[str, str]: ...
    def events(self) -> NativeEvents: ...
    def resolve(self, name: str) -> List[str]: ...
    def resolve_async(self, name: str) -> Awaitable[List[str]]: ...
    def forward(self, target: str, port: int) -> Address: ...
    def forward_async(self, target: str, port: int) -> Awaitable[Address]: ...
    def forward_udp(self, target: str, port: int) -> Address: ...
    def forward_udp_async(self, target: str, port: int) -> Awaitable[Address]: ...
    def close(self) -> None: ...
    def close_async(self) -> Awaitable[None]: ...

def connect(options: ConnectOptions) -> NativeSession: ...
def connect_async(options: ConnectOptions) -> Awaitable[NativeSession]: ...
def wait_for_cleanups(timeout: float) -> bool: ...
