"""Type stubs of the native module (bindings/python/src). Use the ``ktconnect``
package; this module is its engine."""

import os
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__version__: str
# The base image of the imageless shadow when no running pod lends one.
DEFAULT_BASE_IMAGE: str
SHADOW_IMAGE_ENV: str
# The variable naming a directory with the agent to ship (kt-shadow and kt-loader).
AGENT_DIR_ENV: str
# kt-core's ErrorKind and EventKind names, in code order.
ERROR_KINDS: Tuple[str, ...]
EVENT_KINDS: Tuple[str, ...]
# kt-core's lists of its public surface: CONNECT_OPTIONS, VPN_OPTIONS,
# SESSION_OPERATIONS, FUNCTIONS, SWAP_OPTIONS, EXPOSE_OPTIONS, SWAP_OPERATIONS,
# EXPOSE_OPERATIONS.
SURFACE: Dict[str, List[str]]

Address = Tuple[str, int]
# (kind, message, fields)
RawEvent = Tuple[str, str, Dict[str, Any]]
# int | float seconds, or datetime.timedelta
Seconds = Any

class KtError(Exception):
    """Base class of every error ktconnect raises."""

    kind: str
    variant: str
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
class ConnectError(TunnelError): ...
class DnsError(KtError): ...
class Unsupported(KtError): ...
class Closed(KtError): ...
class LocalError(KtError, OSError): ...
class VpnError(KtError, OSError): ...

class CleanupError(KtError):
    session: str
    namespace: str
    remaining: List[str]

class InternalError(KtError): ...
class Conflict(KtError): ...

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
        base_image: Optional[str] = None,
        agent_dir: Optional[Union[str, os.PathLike[str]]] = None,
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
        vpn: Optional[VpnOptions] = None,
        on_event: Optional[Callable[[RawEvent], None]] = None,
    ) -> None: ...
    @property
    def shadow_image(self) -> Optional[str]:
        """The shadow image given (option or $KT_SHADOW_IMAGE); None: kt ships its agent."""

class NativeEvents:
    def next(self, timeout: Optional[float] = None) -> Optional[RawEvent]: ...
    def next_async(self, timeout: Optional[float] = None) -> Awaitable[Optional[RawEvent]]: ...
    def try_next(self) -> Optional[RawEvent]: ...

class NativeDatagramChannel:
    @property
    def target(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def peer_addr(self) -> Address: ...
    @property
    def closed(self) -> bool: ...
    def send(self, datagram: Union[bytes, bytearray]) -> None: ...
    def send_async(self, datagram: Union[bytes, bytearray]) -> Awaitable[None]: ...
    def recv(self, timeout: Optional[float] = None) -> bytes: ...
    def recv_async(self, timeout: Optional[float] = None) -> Awaitable[bytes]: ...
    def close(self) -> None: ...

# "8080:80,9090" or ["8080:80", "9090"]
Ports = Union[str, Sequence[str]]
# (dry_run, actions, left)
RawReport = Tuple[bool, List[str], List[str]]

# What NativeSwap, NativeExpose and NativeMesh each have (a name of the stub only:
# the native classes have no common base).
class _NativeInbound:
    @property
    def id(self) -> str: ...
    @property
    def pod_name(self) -> str: ...
    @property
    def ports(self) -> List[Tuple[int, int]]: ...
    @property
    def connections(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def events(self) -> NativeEvents: ...
    def close(self) -> None: ...
    def close_async(self) -> Awaitable[None]: ...

class NativeSwap(_NativeInbound):
    @property
    def target(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def services(self) -> List[str]: ...

class NativeExpose(_NativeInbound):
    @property
    def service(self) -> str: ...

class NativeMesh(_NativeInbound):
    @property
    def service(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def header(self) -> Optional[Tuple[str, str]]: ...
    @property
    def router(self) -> str: ...

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
    def socks5_url(self) -> str: ...
    @property
    def http_proxy_url(self) -> str: ...
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
    def udp_channel(self, target: str, port: int) -> NativeDatagramChannel: ...
    def udp_channel_async(self, target: str, port: int) -> Awaitable[NativeDatagramChannel]: ...
    def swap(
        self,
        target: str,
        expose: Ports,
        *,
        mode: str = "selector",
        check_local: bool = True,
        restore_ttl: Optional[Seconds] = None,
        on_event: Optional[Callable[[RawEvent], None]] = None,
    ) -> NativeSwap: ...
    def swap_async(
        self,
        target: str,
        expose: Ports,
        *,
        mode: str = "selector",
        check_local: bool = True,
        restore_ttl: Optional[Seconds] = None,
        on_event: Optional[Callable[[RawEvent], None]] = None,
    ) -> Awaitable[NativeSwap]: ...
    def expose(
        self,
        name: str,
        expose: Ports,
        *,
        service_type: str = "ClusterIP",
        check_local: bool = True,
        on_event: Optional[Callable[[RawEvent], None]] = None,
    ) -> NativeExpose: ...
    def expose_async(
        self,
        name: str,
        expose: Ports,
        *,
        service_type: str = "ClusterIP",
        check_local: bool = True,
        on_event: Optional[Callable[[RawEvent], None]] = None,
    ) -> Awaitable[NativeExpose]: ...
    def mesh(
        self,
        target: str,
        expose: Ports,
        *,
        rule: Optional[str] = None,
        check_local: bool = True,
        restore_ttl: Optional[Seconds] = None,
        on_event: Optional[Callable[[RawEvent], None]] = None,
    ) -> NativeMesh: ...
    def mesh_async(
        self,
        target: str,
        expose: Ports,
        *,
        rule: Optional[str] = None,
        check_local: bool = True,
        restore_ttl: Optional[Seconds] = None,
        on_event: Optional[Callable[[RawEvent], None]] = None,
    ) -> Awaitable[NativeMesh]: ...
    def close(self) -> None: ...
    def close_async(self) -> Awaitable[None]: ...

def connect(options: ConnectOptions) -> NativeSession: ...
def connect_async(options: ConnectOptions) -> Awaitable[NativeSession]: ...
def wait_for_cleanups(timeout: float) -> bool: ...
def recover_system_dns() -> List[str]: ...
def clean(options: ConnectOptions, dry_run: bool = False) -> RawReport: ...
def clean_async(options: ConnectOptions, dry_run: bool = False) -> Awaitable[RawReport]: ...
def recover(options: ConnectOptions, target: str, dry_run: bool = False) -> RawReport: ...
def recover_async(
    options: ConnectOptions, target: str, dry_run: bool = False
) -> Awaitable[RawReport]: ...
def _raise_error_example(kind: str) -> None: ...
