//! VPN mode: a tun device whose routes cover the cluster's pod and Service ranges, a
//! userspace TCP/IP stack that turns each flow into an SSH channel, and system DNS for
//! cluster names. Needs CAP_NET_ADMIN; proxy mode (the default) needs nothing.
//!
//! Pieces:
//! - `device`: the tun device, its address, MTU and routes (removed with the device);
//! - `stack`: the userspace stack reading the device, one task per TCP/UDP flow, ICMP;
//! - [`VpnOptions`](crate::VpnOptions) and [`DnsMode`]: what the caller chooses
//!   (in `options`).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use ipnet::IpNet;

use crate::error::Result;
use crate::options::{DnsMode, VpnOptions};

pub(crate) mod device;
pub(crate) mod flows;
pub(crate) mod setup;
pub(crate) mod stack;

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
