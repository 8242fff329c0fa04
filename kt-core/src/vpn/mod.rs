//! VPN mode: a tun device whose routes cover the cluster's pod and Service ranges, a
//! userspace TCP/IP stack that turns each flow into an SSH channel, and system DNS for
//! cluster names. Needs CAP_NET_ADMIN; proxy mode (the default) needs nothing.
//!
//! Pieces:
//! - `device`: the tun device, its address, MTU and routes (removed with the device);
//! - `stack`: the userspace stack reading the device, one task per TCP/UDP flow, ICMP;
//! - `cidr`: prefix arithmetic (aggregation, exclusion of the API server's address);
//! - [`VpnOptions`] and [`DnsMode`]: what the caller chooses.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

pub use ipnet::IpNet;

use crate::error::Result;

pub(crate) mod cidr;
pub(crate) mod device;
pub(crate) mod flows;
pub(crate) mod setup;
pub(crate) mod stack;

/// How cluster names reach programs that use the system resolver (VPN mode only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DnsMode {
    /// The best mode for this machine: [`DnsMode::Resolved`] where `/etc/resolv.conf`
    /// points at systemd-resolved's stub and `resolvectl` works, [`DnsMode::ResolverDir`]
    /// on macOS, else [`DnsMode::ResolvConf`] on Linux and [`DnsMode::Off`] elsewhere.
    #[default]
    Auto,
    /// Put the local DNS server first in `/etc/resolv.conf` (restored on close and at
    /// the next start after a crash).
    ResolvConf,
    /// systemd-resolved: the local DNS server and `~<cluster domain>` routing domains on
    /// the tun link only (gone with the link).
    Resolved,
    /// macOS: `/etc/resolver/<cluster domain>` and `/etc/resolver/svc` files (existing
    /// files are never overwritten).
    ResolverDir,
    /// Hosts-file entries for the Services of these namespaces (the session's namespace
    /// when empty), like kt-connect's `hosts` mode; no DNS server is installed.
    Hosts(Vec<String>),
    /// Leave the system resolver alone (the local DNS server still runs; see
    /// [`crate::Session::dns_addr`]).
    Off,
}

/// VPN mode settings: pass them to [`crate::ConnectOptions::vpn`].
#[derive(Debug, Clone)]
pub struct VpnOptions {
    pub(crate) include: Vec<IpNet>,
    pub(crate) exclude: Vec<IpNet>,
    pub(crate) tun_name: Option<String>,
    pub(crate) address: Ipv4Addr,
    pub(crate) mtu: u16,
    pub(crate) dns: DnsMode,
    pub(crate) dns_listen: Option<SocketAddr>,
    pub(crate) discover: bool,
}

impl Default for VpnOptions {
    fn default() -> Self {
        VpnOptions {
            include: Vec::new(),
            exclude: Vec::new(),
            tun_name: None,
            // RFC 2544's benchmarking range: almost never used by real networks.
            address: Ipv4Addr::new(198, 18, 0, 1),
            mtu: DEFAULT_MTU,
            dns: DnsMode::Auto,
            dns_listen: None,
            discover: true,
        }
    }
}

/// What VPN mode set up: [`crate::Session::vpn`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VpnInfo {
    /// The tun device's name.
    pub device: String,
    /// The ranges routed into the cluster.
    pub routes: Vec<IpNet>,
    /// The local DNS server (cluster names through the tunnel, the rest upstream).
    pub dns_addr: Option<SocketAddr>,
    /// The system DNS mode in effect ([`DnsMode::Auto`] resolved to a real one).
    pub dns_mode: DnsMode,
    /// What was changed for system DNS, in words ("/etc/resolv.conf", ...).
    pub dns_detail: String,
}

/// The tun device's default MTU: large, because packets never leave the machine (the
/// device only feeds kt's own stack) and each packet costs the userspace stack the same
/// work whatever its size. Measured in the lab, 256 MiB through the VPN: 35 MB/s at
/// 1500, 83 MB/s at 9000, 115 MB/s at 65000.
pub const DEFAULT_MTU: u16 = 65000;

impl VpnOptions {
    /// Default settings: routes discovered from the cluster, DNS [`DnsMode::Auto`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Also route this range into the cluster (added to the discovered ones).
    pub fn include(mut self, net: IpNet) -> Self {
        self.include.push(net);
        self
    }

    /// Never route this range into the cluster (taken out of every route).
    pub fn exclude(mut self, net: IpNet) -> Self {
        self.exclude.push(net);
        self
    }

    /// Route only the [`VpnOptions::include`] ranges; ask the cluster for none.
    pub fn no_discovery(mut self) -> Self {
        self.discover = false;
        self
    }

    /// The tun device's name (default: the kernel picks `kt0`, `kt1`, ...).
    pub fn tun_name(mut self, name: impl Into<String>) -> Self {
        self.tun_name = Some(name.into());
        self
    }

    /// The tun device's own address (default 198.18.0.1).
    pub fn address(mut self, address: Ipv4Addr) -> Self {
        self.address = address;
        self
    }

    /// The tun device's MTU (default [`DEFAULT_MTU`]).
    pub fn mtu(mut self, mtu: u16) -> Self {
        self.mtu = mtu;
        self
    }

    /// How the system resolver learns cluster names (default [`DnsMode::Auto`]).
    pub fn dns(mut self, mode: DnsMode) -> Self {
        self.dns = mode;
        self
    }

    /// Where the local DNS server listens (default: 127.0.0.1:53 when free, else
    /// another loopback address on port 53).
    pub fn dns_listen(mut self, addr: SocketAddr) -> Self {
        self.dns_listen = Some(addr);
        self
    }
}

/// Opens flows into the cluster for the userspace stack. `Dialer` implements it over
/// the tunnel; tests implement it over local sockets.
pub(crate) trait FlowDialer: Send + Sync + 'static {
    /// A byte stream to the destination.
    type Tcp: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A datagram flow to the destination.
    type Udp: DatagramFlow;

    /// Connects to `dst` (an address inside a routed range).
    fn tcp(&self, dst: SocketAddr) -> impl Future<Output = Result<Self::Tcp>> + Send;

    /// Opens a UDP flow to `dst`.
    fn udp(&self, dst: SocketAddr) -> impl Future<Output = Result<Self::Udp>> + Send;
}

/// One UDP flow: whole datagrams both ways.
pub(crate) trait DatagramFlow: Send + Sync + 'static {
    /// Sends one datagram.
    fn send(&self, datagram: &[u8]) -> impl Future<Output = Result<()>> + Send;
    /// The next datagram from the destination; an error when the flow has ended.
    fn recv(&self) -> impl Future<Output = Result<Bytes>> + Send;
}

/// A running VPN: the tun device with its address and routes, and the userspace stack
/// serving it on a task (see [`stack`] for what it does with each protocol).
///
/// Dropping it without [`Vpn::stop`] still ends the stack (and so deletes the device),
/// just without waiting for it.
pub(crate) struct Vpn {
    name: String,
    index: u32,
    address: Ipv4Addr,
    /// Ends the stack: a child of the token `start` was given.
    cancel: tokio_util::sync::CancellationToken,
    /// The stack's task, which owns the device.
    stack: Option<tokio::task::JoinHandle<()>>,
}

impl Vpn {
    /// Creates the device, adds `routes`, starts the stack on a task that ends when
    /// `cancel` fires.
    pub(crate) async fn start<D: FlowDialer>(
        opts: &VpnOptions,
        routes: &[IpNet],
        dialer: D,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<Vpn> {
        let device = device::create(opts, routes).await?;
        let cancel = cancel.child_token();
        let (name, index, address) = (device.name, device.index, device.address);
        let stack = tokio::spawn(stack::run(device.tun, device.mtu, dialer, cancel.clone()));
        tracing::info!(target: "kt", "VPN: tun device {name} up, {} route(s)", routes.len());
        Ok(Vpn {
            name,
            index,
            address,
            cancel,
            stack: Some(stack),
        })
    }

    /// The device's name, as the kernel gave it.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The device's interface index.
    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// The device's own address.
    pub(crate) fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Ends the stack (every open TCP connection is reset) and deletes the device, and
    /// with it its routes. Safe when the device is already gone.
    pub(crate) async fn stop(mut self) {
        self.cancel.cancel();
        // Bounded: closing must never hang on the stack or on netlink.
        const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
        if let Some(mut stack) = self.stack.take() {
            match tokio::time::timeout(STOP_WAIT, &mut stack).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(target: "kt", "VPN: the stack task failed: {e}"),
                Err(_) => {
                    tracing::warn!(target: "kt", "VPN: the stack did not stop within 5 s; aborting it");
                    stack.abort();
                }
            }
        }
        match tokio::time::timeout(STOP_WAIT, device::remove(&self.name, self.index)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(target: "kt", "VPN: {e}"),
            Err(_) => tracing::warn!(
                target: "kt",
                "VPN: removing {} took over 5 s; it goes when this process exits",
                self.name
            ),
        }
    }
}

impl Drop for Vpn {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
