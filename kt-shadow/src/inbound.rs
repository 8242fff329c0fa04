//! Remote-forwarded ports (`tcpip-forward`) that outlive one SSH connection.
//!
//! A forwarded port's listener belongs to the server, not to the SSH connection that
//! asked for it. The first `tcpip-forward` for a port binds it; the connection that
//! asked is its *client*, and every connection the port accepts is opened back to that
//! client as a `forwarded-tcpip` channel. When the client's SSH connection ends, the
//! port stays open: connections that arrive meanwhile are *held* (accepted, not read)
//! until a connection asks `tcpip-forward` for the same address and port again, which
//! makes it the client: the held connections are then opened to it in the order they
//! arrived. A held connection that waits longer than `--hold-timeout`, or arrives when
//! `--max-held-connections` are already held, is reset (see [`reset`]) and counted
//! ([`HeldConnections`]). `cancel-tcpip-forward` closes the port for good; shutdown
//! (SIGTERM, `--idle-exit`, `--heartbeat-timeout`, `--lease`) closes every port.
//!
//! Two live connections asking for one port: the newest wins. The shadow has one
//! authorized key, so both are the same client; the usual reason for a second request
//! is a reconnect while the shadow has not yet noticed the old connection is dead
//! (that takes up to a minute of missed keepalives), and refusing it would leave the
//! port without a client for that long. Channels already open on the older connection
//! go on until they end.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use russh::server::Handle;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::server::ConnCtx;
use crate::tcp::splice;

/// Listen backlog of a forwarded port: connections wait here while held connections
/// are being delivered (see [`Port::deliver_held`]).
const BACKLOG: u32 = 1024;

/// Counters of connections held on forwarded ports, shared with the embedding program
/// ([`crate::Shadow::held_connections`]).
#[derive(Debug, Clone, Default)]
pub struct HeldConnections(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    held: AtomicU64,
    delivered: AtomicU64,
    expired: AtomicU64,
    overflowed: AtomicU64,
}

/// A snapshot of [`HeldConnections`]; every count is since the shadow started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldStats {
    /// Connections held because their port had no client.
    pub held: u64,
    /// Held connections later opened to a client.
    pub delivered: u64,
    /// Held connections reset after waiting `--hold-timeout`.
    pub expired: u64,
    /// Connections reset because `--max-held-connections` were already held on their
    /// port.
    pub overflowed: u64,
}

impl HeldConnections {
    /// The counts now.
    pub fn snapshot(&self) -> HeldStats {
        HeldStats {
            held: self.0.held.load(Ordering::Relaxed),
            delivered: self.0.delivered.load(Ordering::Relaxed),
            expired: self.0.expired.load(Ordering::Relaxed),
            overflowed: self.0.overflowed.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The client of a forwarded port: the SSH connection that asked for it last.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) ctx: ConnCtx,
    pub(crate) handle: Handle,
    /// The address as the client asked for it, sent back in each `forwarded-tcpip`
    /// open so the client can match it to its request.
    pub(crate) address: Arc<str>,
}

/// A forwarded port in the registry.
struct Registered {
    client: watch::Sender<Option<Client>>,
    cancel: CancellationToken,
}

/// Every forwarded port of the server, by the address it is bound to.
pub(crate) struct Inbound {
    ports: Mutex<HashMap<SocketAddr, Registered>>,
    max_held: usize,
    hold_timeout: Duration,
    /// Cancelled when the server stops: closes every port.
    stop: CancellationToken,
    tracker: TaskTracker,
    counters: HeldConnections,
}

/// Why a `tcpip-forward` was refused (logged by the caller).
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Not an allowed port and not a port already forwarded.
    NotAllowed,
    /// The port could not be bound.
    Bind(std::io::Error),
}

impl Inbound {
    pub(crate) fn new(max_held: usize, hold_timeout: Duration, tracker: TaskTracker) -> Inbound {
        Inbound {
            ports: Mutex::new(HashMap::new()),
            max_held,
            hold_timeout,
            stop: CancellationToken::new(),
            tracker,
            counters: HeldConnections::default(),
        }
    }

    pub(crate) fn counters(&self) -> HeldConnections {
        self.counters.clone()
    }

    /// Closes every forwarded port (server shutdown).
    pub(crate) fn close(&self) {
        self.stop.cancel();
    }

    /// Makes `client` the client of `addr`: of the port already forwarded there if
    /// there is one (a port asked for as 0 is always a new one), otherwise of a new
    /// port bound to `addr` when `allowed`. Returns the bound port and whether it
    /// already existed.
    pub(crate) fn register(
        &self,
        addr: SocketAddr,
        allowed: bool,
        client: Client,
    ) -> Result<(u16, bool), Refusal> {
        let mut ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
        if addr.port() != 0
            && let Some(port) = ports.get(&addr)
            && !port.cancel.is_cancelled()
        {
            // Newest wins (see the module docs).
            port.client.send_replace(Some(client));
            return Ok((addr.port(), true));
        }
        if !allowed {
            return Err(Refusal::NotAllowed);
        }
        let listener = bind(addr).map_err(Refusal::Bind)?;
        let bound = listener.local_addr().map_err(Refusal::Bind)?;
        let (client_tx, client_rx) = watch::channel(Some(client));
        let cancel = self.stop.child_token();
        ports.insert(
            bound,
            Registered {
                client: client_tx,
                cancel: cancel.clone(),
            },
        );
        let port = Port {
            listener,
            bound,
            clients: client_rx,
            cancel,
            held: VecDeque::new(),
            max_held: self.max_held,
            hold_timeout: self.hold_timeout,
            counters: self.counters.clone(),
            tracker: self.tracker.clone(),
        };
        self.tracker.spawn(port.run());
        Ok((bound.port(), false))
    }

    /// `cancel-tcpip-forward`: closes the port bound to `addr` for good; its held
    /// connections are reset. False if there is none.
    pub(crate) fn cancel(&self, addr: SocketAddr) -> bool {
        let removed = self
            .ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&addr);
        match removed {
            Some(port) => {
                port.cancel.cancel();
                true
            }
            None => false,
        }
    }
}

/// Binds a forwarded port with address reuse (a port closed a moment ago with
/// connections in TIME_WAIT can be bound again) and a deep backlog.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Closes a connection that will not be served with a TCP reset rather than an
/// orderly close (FIN). Its peer has sent a request that nobody read: a FIN would look
/// like a server that read it and answered with nothing (to a protocol where the
/// server's EOF ends a response, an empty but complete answer), while a reset says the
/// connection failed, which callers and proxies treat as retryable. It also leaves no
/// TIME_WAIT socket in the shadow.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// A connection whose open failed because its client's connection was gone (`conn`).
struct Again {
    stream: TcpStream,
    peer: SocketAddr,
    conn: u64,
}

/// A connection accepted while its port had no client.
struct Held {
    stream: TcpStream,
    peer: SocketAddr,
    until: Instant,
}

/// One forwarded port's task: accepts, opens each connection to the client, holds
/// them while there is none.
struct Port {
    listener: TcpListener,
    bound: SocketAddr,
    clients: watch::Receiver<Option<Client>>,
    cancel: CancellationToken,
    held: VecDeque<Held>,
    max_held: usize,
    hold_timeout: Duration,
    counters: HeldConnections,
    tracker: TaskTracker,
}

impl Port {
    async fn run(mut self) {
        let port = self.bound.port();
        // Connections whose open failed because the client's connection was gone, with
        // that connection's id.
        let (again_tx, mut again_rx) = mpsc::unbounded_channel::<Again>();
        let mut had_client = true;
        // A client whose connection failed an open: gone, even if its end has not been
        // noticed yet (until a connection asks for the port again).
        let mut failed: Option<u64> = None;
        loop {
            let client = self
                .clients
                .borrow()
                .clone()
                .filter(|c| !c.ctx.cancel.is_cancelled() && failed != Some(c.ctx.id));
            match &client {
                Some(client) => {
                    if !had_client {
                        info!(
                            conn = client.ctx.id,
                            port,
                            held = self.held.len(),
                            "forwarded port has a client again"
                        );
                    }
                    had_client = true;
                    if !self.deliver_held(client).await {
                        failed = Some(client.ctx.id);
                        continue;
                    }
                }
                None if had_client => {
                    had_client = false;
                    info!(
                        port,
                        hold_timeout = ?self.hold_timeout,
                        max_held = self.max_held,
                        "forwarded port has no client; holding new connections until one asks for it again"
                    );
                }
                None => {}
            }
            let client_gone = async {
                match &client {
                    Some(c) => c.ctx.cancel.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            let expiry = self.held.front().map(|h| h.until);
            tokio::select! {
                () = self.cancel.cancelled() => break,
                changed = self.clients.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    failed = None;
                }
                () = client_gone => {}
                () = sleep_until(expiry) => self.expire(),
                Some(again) = again_rx.recv() => {
                    if client.as_ref().is_some_and(|c| c.ctx.id == again.conn) {
                        failed = Some(again.conn);
                    }
                    self.hold(again.stream, again.peer);
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        match &client {
                            Some(client) => {
                                self.tracker.spawn(open_and_splice(
                                    client.clone(),
                                    port,
                                    stream,
                                    peer,
                                    again_tx.clone(),
                                ));
                            }
                            None => self.hold(stream, peer),
                        }
                    }
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(port, error = %err, "remote forward accept failed");
                        tokio::select! {
                            () = self.cancel.cancelled() => break,
                            () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                },
            }
        }
        let held = self.held.len();
        for h in self.held.drain(..) {
            reset(h.stream);
        }
        info!(port, held_reset = held, "remote forward closed");
    }

    /// Holds a connection, or resets it when the port already holds its maximum.
    fn hold(&mut self, stream: TcpStream, peer: SocketAddr) {
        let port = self.bound.port();
        if self.held.len() >= self.max_held {
            HeldConnections::add(&self.counters.0.overflowed);
            warn!(
                %peer,
                port,
                max_held = self.max_held,
                "forwarded connection reset: the port has no client and already holds \
                 {} connections (--max-held-connections)",
                self.max_held
            );
            reset(stream);
            return;
        }
        HeldConnections::add(&self.counters.0.held);
        debug!(%peer, port, held = self.held.len() + 1, "forwarded connection held");
        self.held.push_back(Held {
            stream,
            peer,
            until: Instant::now() + self.hold_timeout,
        });
    }

    /// Resets the held connections whose wait is over.
    fn expire(&mut self) {
        let now = Instant::now();
        while self.held.front().is_some_and(|h| h.until <= now) {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            HeldConnections::add(&self.counters.0.expired);
            warn!(
                peer = %h.peer,
                port = self.bound.port(),
                waited = ?self.hold_timeout,
                "held connection reset: no client asked for the port within --hold-timeout"
            );
            reset(h.stream);
        }
    }

    /// Opens the held connections to `client` one after the other, so they reach it
    /// in the order they arrived (new connections wait in the backlog meanwhile).
    /// False if the client's connection ended on the way; the rest stay held.
    async fn deliver_held(&mut self, client: &Client) -> bool {
        let port = self.bound.port();
        while let Some(h) = self.held.pop_front() {
            let opened = tokio::select! {
                () = self.cancel.cancelled() => {
                    self.held.push_front(h);
                    return true;
                }
                opened = open(client, port, h.peer) => opened,
            };
            match opened {
                Opened::Channel(channel, slot) => {
                    HeldConnections::add(&self.counters.0.delivered);
                    debug!(conn = client.ctx.id, peer = %h.peer, port, "held connection delivered");
                    let client = client.clone();
                    self.tracker.spawn(async move {
                        let _slot = slot;
                        splice_logged(&client, port, channel, h.stream, h.peer).await;
                    });
                }
                Opened::Refused => reset(h.stream),
                Opened::Gone => {
                    self.held.push_front(h);
                    return false;
                }
            }
        }
        true
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The outcome of opening a `forwarded-tcpip` channel to a client.
enum Opened {
    Channel(
        russh::Channel<russh::server::Msg>,
        tokio::sync::OwnedSemaphorePermit,
    ),
    /// The client refused it, or its connection has no channel free: reset.
    Refused,
    /// The client's connection ended: hold it for the next one.
    Gone,
}

async fn open(client: &Client, port: u16, peer: SocketAddr) -> Opened {
    let slot = match client.ctx.limits.channel() {
        Ok(slot) => slot,
        Err(failure) => {
            warn!(
                conn = client.ctx.id,
                %peer,
                port,
                "forwarded connection reset: {}",
                failure.description()
            );
            return Opened::Refused;
        }
    };
    let open = client.handle.channel_open_forwarded_tcpip(
        client.address.to_string(),
        u32::from(port),
        peer.ip().to_string(),
        u32::from(peer.port()),
    );
    tokio::select! {
        () = client.ctx.cancel.cancelled() => Opened::Gone,
        r = open => match r {
            Ok(channel) => Opened::Channel(channel, slot),
            Err(russh::Error::ChannelOpenFailure(reason)) => {
                debug!(conn = client.ctx.id, %peer, port, ?reason, "client refused forwarded-tcpip");
                Opened::Refused
            }
            Err(err) => {
                debug!(conn = client.ctx.id, %peer, port, error = %err, "forwarded-tcpip open failed");
                Opened::Gone
            }
        },
    }
}

/// Opens a connection to the client and splices it; if the client's connection
/// turns out to be gone, hands the connection back to be held (`again`).
async fn open_and_splice(
    client: Client,
    port: u16,
    stream: TcpStream,
    peer: SocketAddr,
    again: mpsc::UnboundedSender<Again>,
) {
    match open(&client, port, peer).await {
        Opened::Channel(channel, slot) => {
            let _slot = slot;
            splice_logged(&client, port, channel, stream, peer).await;
        }
        Opened::Refused => reset(stream),
        Opened::Gone => {
            let conn = client.ctx.id;
            if let Err(mpsc::error::SendError(again)) = again.send(Again { stream, peer, conn }) {
                reset(again.stream);
            }
        }
    }
}

async fn splice_logged(
    client: &Client,
    port: u16,
    channel: russh::Channel<russh::server::Msg>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let id = channel.id();
    debug!(conn = client.ctx.id, channel = %id, %peer, port, "forwarded-tcpip open");
    let moved = splice(channel, stream, &client.ctx.cancel, &client.ctx.tuning).await;
    debug!(
        conn = client.ctx.id,
        channel = %id,
        %peer,
        port,
        up = moved.up,
        down = moved.down,
        "forwarded-tcpip closed"
    );
}
