//! The userspace TCP/IP stack behind the tun device: every TCP connection and UDP flow a
//! local program opens to a routed address becomes one flow of a [`FlowDialer`] (an SSH
//! channel in a session).
//!
//! # Which stack, and why
//!
//! TCP is terminated by [smoltcp](https://docs.rs/smoltcp) (0.12; 0.13 and later need a
//! newer Rust than the workspace's 1.89), driven by one task that owns the interface
//! and reads and writes the device; UDP and ICMP are handled here directly, a few
//! dozen lines each. The plan was `ipstack` (tokio-native, used by tun2proxy), and it
//! was tried first, in this module's own tests; it cannot give what kt promises:
//!
//! - **no half-close**: when the local program shuts down its sending side, ipstack
//!   answers the FIN with its own FIN at once, so the program reads end-of-stream before
//!   the cluster's reply (measured: a client that writes, shuts down writing and reads
//!   got 0 bytes, the server's reply never arrived);
//! - **no usable reset**: dropping a stream sends nothing, and the reset it sends for a
//!   later segment carries a sequence number the kernel discards (RFC 5961), so a client
//!   whose server failed waits until its own timeout (measured: still waiting after
//!   5 s);
//! - (from its source) a FIN carried on a data segment is ignored, and dropping a
//!   stream blocks a runtime worker (`block_in_place`), which panics on a
//!   current-thread runtime.
//!
//! smoltcp is a complete, maintained TCP (retransmission, window scaling, SACK,
//! timestamps) with `close` (FIN, keep receiving) and `abort` (RST) as separate calls,
//! and it answers a segment no socket wants with a correct reset. Its `any_ip` mode lets
//! one interface accept every routed address. The tests in this module prove each
//! promise below on a real tun device.
//!
//! # TCP
//!
//! A SYN for a new connection is held back while the dialer connects to the
//! destination; only then is a socket made for it and the SYN handed to smoltcp, so
//! the local program's `connect` completes only when the remote end exists. When the
//! dial fails, the SYN goes to smoltcp with no socket for it, and smoltcp's reset makes
//! `connect` fail with "connection refused" at once. Retransmitted SYNs that arrive
//! during the dial are dropped (the held one stands for them).
//!
//! Data is copied both ways with **half-close**: the local program's FIN becomes an EOF
//! on the remote stream (its write side is shut down) while the reply keeps flowing;
//! the remote stream's EOF becomes a FIN to the local program. **Resets**: when the
//! remote stream fails (read or write error) the local socket is aborted, so the
//! program sees "connection reset"; when the program resets, the remote stream is
//! dropped. When the VPN stops, every open connection is reset.
//!
//! Each connection has 128 KiB of receive and 128 KiB of send buffer.
//!
//! # MTU
//!
//! smoltcp is told the device's MTU: its segments fit in it and it advertises the
//! matching MSS, so the kernel's segments fit too, and no transfer stalls on an
//! oversized packet. UDP datagrams longer than the MTU, coming from the cluster, are
//! sent to the device as IP fragments, which the kernel reassembles.
//!
//! # UDP
//!
//! One flow per (source, destination) pair, opened with the first datagram; datagrams
//! are relayed whole both ways; a flow closes after 60 s without a datagram either way.
//! When the flow cannot be opened (e.g. the shadow does not relay UDP), the program
//! gets the ICMP error below, so a connected UDP socket sees "no route to host".
//!
//! # ICMP
//!
//! Nothing is relayed: kt's channels carry TCP and UDP only. An echo request (ping) to
//! a routed address is answered with **destination unreachable, communication
//! administratively prohibited** (ICMP type 3 code 13; ICMPv6 type 1 code 1) built from
//! the request, so `ping` ends at once with "Packet filtered" / "Administratively
//! prohibited" instead of waiting for replies that never come. Other ICMP messages and
//! other protocols are dropped (logged at debug level).
//!
//! # Limits
//!
//! - UDP datagrams that the local program sends larger than the MTU arrive as IP
//!   fragments and are dropped (no reassembly); keep them under MTU − 28 bytes (IPv4).
//! - IPv6 packets with extension headers are dropped.
//! - smoltcp scans its sockets for each segment; thousands of simultaneous connections
//!   cost CPU linearly.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr, IpListenEndpoint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DatagramFlow, FlowDialer};
use crate::task::Tasks;

mod packet;

#[cfg(all(test, target_os = "linux"))]
mod netns;
#[cfg(all(test, target_os = "linux"))]
mod tests;

/// Receive and send buffer of each TCP connection.
const TCP_BUFFER: usize = 128 * 1024;
/// Copy buffer of each direction of a TCP connection.
const COPY_BUFFER: usize = 64 * 1024;
/// A UDP flow closes after this long without a datagram either way.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// Datagrams waiting for a UDP flow (while it opens, or while it sends); more are dropped.
const UDP_QUEUE: usize = 64;
/// Opening a flow that takes longer than this counts as a failure.
const DIAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Packets read from the device before smoltcp runs.
const READ_BATCH: usize = 64;
/// Room for the largest packet the device can hand over.
const MAX_PACKET: usize = 65536;
/// smoltcp's own addresses: the target of its default routes, which `any_ip` needs to
/// accept packets for every address. They never appear on the wire (replies carry the
/// address the program connected to). 192.0.0.8 is the IPv4 dummy address (RFC 7600).
const STACK_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);
const STACK_V6: Ipv6Addr = Ipv6Addr::new(0xfd6b, 0x7400, 0, 0, 0, 0, 0, 1);

/// The stack's side of the tun device: whole IP packets in and out.
pub(crate) trait PacketDevice: Send + Sync + 'static {
    /// Reads one packet into `buf`, returning its length.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Writes one packet.
    fn send(&self, packet: &[u8]) -> impl Future<Output = io::Result<usize>> + Send;
}

/// A TCP connection's (source, destination), as the local program sees it.
type FlowKey = (SocketAddr, SocketAddr);

/// What the stack knows of one TCP connection.
enum Conn {
    /// Its SYN is held while the dialer connects.
    Dialing,
    /// It has a socket.
    Open(SocketHandle),
}

/// Everything smoltcp owns, behind one lock shared by the device task and the
/// connections.
struct Core {
    iface: Interface,
    sockets: SocketSet<'static>,
    queues: Queues,
    tcp: HashMap<FlowKey, Conn>,
    /// Sockets whose connection task has ended, removed once they are closed.
    orphans: Vec<(FlowKey, SocketHandle)>,
}

impl Core {
    /// Runs smoltcp: processes received packets, queues what is due to be sent, and
    /// removes the orphans that are done.
    fn poll(&mut self, now: smoltcp::time::Instant) {
        self.iface.poll(now, &mut self.queues, &mut self.sockets);
        let Core {
            sockets,
            tcp: conns,
            orphans,
            ..
        } = self;
        orphans.retain(|(key, handle)| {
            let socket = sockets.get::<tcp::Socket>(*handle);
            // Closed and nothing left to send (an abort's reset goes out first).
            let done = socket.state() == tcp::State::Closed && socket.local_endpoint().is_none();
            if done {
                sockets.remove(*handle);
                if matches!(conns.get(key), Some(Conn::Open(h)) if h == handle) {
                    conns.remove(key);
                }
            }
            !done
        });
    }

    /// When smoltcp next needs to run, at the latest.
    fn delay(&mut self, now: smoltcp::time::Instant) -> Duration {
        self.iface
            .poll_delay(now, &self.sockets)
            .map_or(Duration::from_secs(3600), |d| {
                Duration::from_micros(d.total_micros())
            })
    }
}

struct Shared {
    core: Mutex<Core>,
    /// Wakes the device task: a connection queued data, read data, or closed.
    kick: Notify,
    epoch: std::time::Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> smoltcp::time::Instant {
        let micros = i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX);
        smoltcp::time::Instant::from_micros(micros)
    }
}

/// smoltcp's device: packets read from the tun device wait in `rx`, packets smoltcp
/// makes wait in `tx` until the device task writes them.
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    mtu: usize,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let r = f(&mut packet);
        self.0.push(packet);
        r
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: smoltcp::time::Instant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// Serves the tun device `device` (MTU `mtu`) until `cancel` fires or the device
/// fails; then resets every open TCP connection and waits for every flow task to end.
/// The device is dropped (and so deleted) when this returns.
pub(crate) async fn run<P, D>(device: P, mtu: u16, dialer: D, cancel: CancellationToken)
where
    P: PacketDevice,
    D: FlowDialer,
{
    let mut queues = Queues {
        rx: VecDeque::new(),
        tx: Vec::new(),
        mtu: usize::from(mtu),
    };
    let epoch = std::time::Instant::now();
    let mut config = Config::new(HardwareAddress::Ip);
    config.random_seed = rand::random();
    let mut iface = Interface::new(config, &mut queues, smoltcp::time::Instant::ZERO);
    iface.update_ip_addrs(|addrs| {
        // Two slots, two addresses: cannot fail.
        let _ = addrs.push(IpCidr::new(STACK_V4.into(), 32));
        let _ = addrs.push(IpCidr::new(STACK_V6.into(), 128));
    });
    let _ = iface.routes_mut().add_default_ipv4_route(STACK_V4);
    let _ = iface.routes_mut().add_default_ipv6_route(STACK_V6);
    iface.set_any_ip(true);

    let tasks = Tasks {
        cancel: cancel.child_token(),
        tracker: TaskTracker::new(),
    };
    let mut stack = Stack {
        shared: Arc::new(Shared {
            core: Mutex::new(Core {
                iface,
                sockets: SocketSet::new(Vec::new()),
                queues,
                tcp: HashMap::new(),
                orphans: Vec::new(),
            }),
            kick: Notify::new(),
            epoch,
        }),
        device: Arc::new(device),
        dialer: Arc::new(dialer),
        tasks,
        mtu: usize::from(mtu),
        udp: HashMap::new(),
        udp_opened: 0,
        replies: Vec::new(),
    };
    stack.serve(&cancel).await;
    stack.reset_all().await;
    stack.tasks.cancel.cancel();
    stack.tasks.tracker.close();
    stack.tasks.tracker.wait().await;
}

/// The device task's state.
struct Stack<P, D> {
    shared: Arc<Shared>,
    device: Arc<P>,
    dialer: Arc<D>,
    tasks: Tasks,
    mtu: usize,
    /// Open UDP flows: where their datagrams go.
    udp: HashMap<FlowKey, mpsc::Sender<Bytes>>,
    /// UDP flows opened so far (ended ones are swept from `udp` now and then).
    udp_opened: usize,
    /// Packets the stack made itself (ICMP errors), written with smoltcp's.
    replies: Vec<Vec<u8>>,
}

impl<P: PacketDevice, D: FlowDialer> Stack<P, D> {
    async fn serve(&mut self, cancel: &CancellationToken) {
        let mut buf = vec![0u8; MAX_PACKET];
        loop {
            let delay = {
                let now = self.shared.now();
                self.shared.lock().delay(now)
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                read = self.device.recv(&mut buf) => {
                    match read {
                        Ok(n) => self.incoming(&buf[..n]),
                        Err(e) => {
                            tracing::warn!(target: "kt", "VPN: reading the tun device failed: {e}; the VPN stops");
                            return;
                        }
                    }
                    for _ in 1..READ_BATCH {
                        match self.device.recv(&mut buf).now_or_never() {
                            Some(Ok(n)) => self.incoming(&buf[..n]),
                            _ => break,
                        }
                    }
                }
                () = self.shared.kick.notified() => {}
                () = tokio::time::sleep(delay) => {}
            }
            self.flush().await;
        }
    }

    /// Runs smoltcp and writes every queued packet to the device.
    async fn flush(&mut self) {
        let mut out = {
            let now = self.shared.now();
            let mut core = self.shared.lock();
            core.poll(now);
            std::mem::take(&mut core.queues.tx)
        };
        out.append(&mut self.replies);
        for packet in out {
            if let Err(e) = self.device.send(&packet).await {
                tracing::debug!(target: "kt", "VPN: writing a packet to the tun device failed: {e}");
            }
        }
    }

    /// Resets every TCP connection (the VPN is going away) and sends the resets.
    async fn reset_all(&mut self) {
        {
            let mut core = self.shared.lock();
            let Core {
                sockets,
                tcp: conns,
                ..
            } = &mut *core;
            for conn in conns.values() {
                if let Conn::Open(handle) = conn {
                    sockets.get_mut::<tcp::Socket>(*handle).abort();
                }
            }
        }
        self.flush().await;
    }

    /// Handles one packet from the device.
    fn incoming(&mut self, raw: &[u8]) {
        match packet::parse(raw) {
            packet::Packet::Tcp {
                src,
                dst,
                opening: true,
            } => self.syn((src, dst), raw),
            packet::Packet::Tcp { .. } => self.shared.lock().queues.rx.push_back(raw.to_vec()),
            packet::Packet::Udp { src, dst, payload } => self.datagram((src, dst), payload, raw),
            packet::Packet::EchoRequest => {
                if let Some(reply) = packet::prohibited(raw, self.mtu) {
                    self.replies.push(reply);
                }
            }
            packet::Packet::Other(what) => {
                tracing::debug!(target: "kt", "VPN: dropping a packet: {what}");
            }
            packet::Packet::Malformed => {
                tracing::debug!(target: "kt", "VPN: dropping a malformed packet");
            }
        }
    }

    /// A SYN: passed on for a known connection, dropped while its dial runs, else held
    /// while a new dial runs.
    fn syn(&mut self, key: FlowKey, raw: &[u8]) {
        let mut core = self.shared.lock();
        match core.tcp.get(&key) {
            Some(Conn::Open(_)) => core.queues.rx.push_back(raw.to_vec()),
            Some(Conn::Dialing) => {}
            None => {
                core.tcp.insert(key, Conn::Dialing);
                drop(core);
                self.tasks.spawn(open_tcp(
                    self.shared.clone(),
                    self.dialer.clone(),
                    key,
                    raw.to_vec(),
                ));
            }
        }
    }

    /// A UDP datagram: to its flow, opening one when there is none.
    fn datagram(&mut self, key: FlowKey, payload: &[u8], raw: &[u8]) {
        let datagram = Bytes::copy_from_slice(payload);
        let datagram = match self
            .udp
            .get(&key)
            .map(|flow| flow.try_send(datagram.clone()))
        {
            None => datagram,
            Some(Ok(())) => return,
            Some(Err(mpsc::error::TrySendError::Full(_))) => {
                tracing::debug!(target: "kt", "VPN: UDP {} → {}: queue full, dropping a datagram", key.0, key.1);
                return;
            }
            // The flow ended (idle, or failed): open a new one.
            Some(Err(mpsc::error::TrySendError::Closed(_))) => datagram,
        };
        self.open_udp(key, datagram, raw);
    }

    fn open_udp(&mut self, key: FlowKey, first: Bytes, raw: &[u8]) {
        let (tx, rx) = mpsc::channel(UDP_QUEUE);
        // A fresh channel has room.
        let _ = tx.try_send(first);
        self.udp.insert(key, tx);
        self.udp_opened += 1;
        if self.udp_opened.is_multiple_of(256) {
            self.udp.retain(|_, tx| !tx.is_closed());
        }
        self.tasks.spawn(udp_flow(
            self.dialer.clone(),
            self.device.clone(),
            key,
            rx,
            raw.to_vec(),
            self.mtu,
        ));
    }
}

/// Dials the destination of a held SYN, then hands the SYN to smoltcp: with a socket
/// listening for it when the dial worked (and relays the connection), without one when
/// it failed (smoltcp's reset refuses the connection).
async fn open_tcp<D: FlowDialer>(shared: Arc<Shared>, dialer: Arc<D>, key: FlowKey, syn: Vec<u8>) {
    let (src, dst) = key;
    let dialed = match tokio::time::timeout(DIAL_TIMEOUT, dialer.tcp(dst)).await {
        Ok(Ok(remote)) => Ok(remote),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {DIAL_TIMEOUT:?}")),
    };
    let remote = match dialed {
        Ok(remote) => remote,
        Err(e) => {
            tracing::debug!(target: "kt", "VPN: refusing TCP {src} → {dst}: {e}");
            let mut core = shared.lock();
            core.tcp.remove(&key);
            core.queues.rx.push_back(syn);
            drop(core);
            shared.kick.notify_one();
            return;
        }
    };
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    socket.set_nagle_enabled(false);
    socket.set_ack_delay(None);
    let listening = socket.listen(IpListenEndpoint {
        addr: Some(dst.ip().into()),
        port: dst.port(),
    });
    let handle = {
        let now = shared.now();
        let mut core = shared.lock();
        if let Err(e) = listening {
            tracing::debug!(target: "kt", "VPN: refusing TCP {src} → {dst}: {e}");
            core.tcp.remove(&key);
            core.queues.rx.push_back(syn);
            drop(core);
            shared.kick.notify_one();
            return;
        }
        let handle = core.sockets.add(socket);
        core.tcp.insert(key, Conn::Open(handle));
        core.queues.rx.push_back(syn);
        // Process the SYN now: the socket leaves LISTEN before anything reads it.
        core.poll(now);
        handle
    };
    shared.kick.notify_one();
    let mut local = LocalTcp {
        shared,
        handle,
        key,
        clean: false,
    };
    let mut remote = remote;
    match tokio::io::copy_bidirectional_with_sizes(
        &mut local,
        &mut remote,
        COPY_BUFFER,
        COPY_BUFFER,
    )
    .await
    {
        Ok((up, down)) => {
            local.clean = true;
            tracing::trace!(target: "kt", "VPN: TCP {src} → {dst} done, {up} bytes up, {down} down");
        }
        Err(e) => tracing::debug!(target: "kt", "VPN: TCP {src} → {dst} reset: {e}"),
    }
}

/// The local program's side of one TCP connection, as a byte stream over its smoltcp
/// socket. Dropping it without a clean end aborts the connection (a reset).
struct LocalTcp {
    shared: Arc<Shared>,
    handle: SocketHandle,
    key: FlowKey,
    /// Both sides closed normally: nothing to reset.
    clean: bool,
}

fn reset() -> io::Error {
    io::ErrorKind::ConnectionReset.into()
}

impl AsyncRead for LocalTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut core = this.shared.lock();
        let socket = core.sockets.get_mut::<tcp::Socket>(this.handle);
        match socket.state() {
            tcp::State::SynReceived => {
                socket.register_recv_waker(cx.waker());
                return Poll::Pending;
            }
            // Back in LISTEN: the program reset the connection during the handshake.
            tcp::State::Listen => return Poll::Ready(Err(reset())),
            _ => {}
        }
        let read = socket.recv(|data| {
            let n = data.len().min(buf.remaining());
            buf.put_slice(&data[..n]);
            (n, n)
        });
        match read {
            Ok(0) if buf.remaining() > 0 => {
                socket.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Ok(_) => {
                drop(core);
                // The window opened: smoltcp may have an update to send.
                this.shared.kick.notify_one();
                Poll::Ready(Ok(()))
            }
            // The program's FIN, after all its data.
            Err(tcp::RecvError::Finished) => Poll::Ready(Ok(())),
            Err(_) => Poll::Ready(Err(reset())),
        }
    }
}

impl AsyncWrite for LocalTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut core = this.shared.lock();
        let socket = core.sockets.get_mut::<tcp::Socket>(this.handle);
        match socket.state() {
            tcp::State::SynReceived => {
                socket.register_send_waker(cx.waker());
                return Poll::Pending;
            }
            tcp::State::Listen | tcp::State::Closed => return Poll::Ready(Err(reset())),
            _ if !socket.may_send() => {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            _ => {}
        }
        match socket.send_slice(data) {
            Ok(0) if !data.is_empty() => {
                socket.register_send_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                drop(core);
                this.shared.kick.notify_one();
                Poll::Ready(Ok(n))
            }
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued data is smoltcp's to send; the device task is kicked on every write.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // FIN after the queued data; receiving goes on.
        this.shared
            .lock()
            .sockets
            .get_mut::<tcp::Socket>(this.handle)
            .close();
        this.shared.kick.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LocalTcp {
    fn drop(&mut self) {
        let mut core = self.shared.lock();
        if !self.clean {
            core.sockets.get_mut::<tcp::Socket>(self.handle).abort();
        }
        core.orphans.push((self.key, self.handle));
        drop(core);
        self.shared.kick.notify_one();
    }
}

/// Relays one UDP flow: opens it with the dialer, then datagrams both ways until it has
/// been idle for [`UDP_IDLE`] or either side fails.
async fn udp_flow<D: FlowDialer, P: PacketDevice>(
    dialer: Arc<D>,
    device: Arc<P>,
    key: FlowKey,
    mut datagrams: mpsc::Receiver<Bytes>,
    first_packet: Vec<u8>,
    mtu: usize,
) {
    let (src, dst) = key;
    let opened = match tokio::time::timeout(DIAL_TIMEOUT, dialer.udp(dst)).await {
        Ok(Ok(flow)) => Ok(flow),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {DIAL_TIMEOUT:?}")),
    };
    let flow = match opened {
        Ok(flow) => flow,
        Err(e) => {
            tracing::debug!(target: "kt", "VPN: cannot open UDP {src} → {dst}: {e}");
            if let Some(error) = packet::prohibited(&first_packet, mtu) {
                let _ = device.send(&error).await;
            }
            return;
        }
    };
    let idle = tokio::time::sleep(UDP_IDLE);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            datagram = datagrams.recv() => {
                let Some(datagram) = datagram else { return };
                if let Err(e) = flow.send(&datagram).await {
                    tracing::debug!(target: "kt", "VPN: UDP {src} → {dst}: {e}");
                    return;
                }
            }
            reply = flow.recv() => match reply {
                Ok(reply) => {
                    for packet in packet::udp(dst, src, &reply, mtu) {
                        if let Err(e) = device.send(&packet).await {
                            tracing::debug!(target: "kt", "VPN: writing a packet to the tun device failed: {e}");
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(target: "kt", "VPN: UDP {src} → {dst} ended: {e}");
                    return;
                }
            },
            () = &mut idle => {
                tracing::trace!(target: "kt", "VPN: UDP {src} → {dst} idle, closing");
                return;
            }
        }
        idle.as_mut().reset(tokio::time::Instant::now() + UDP_IDLE);
    }
}
