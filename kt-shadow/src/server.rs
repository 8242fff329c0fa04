//! The SSH server: listening, per-connection tasks, the client watchdog, shutdown.

use std::borrow::Cow;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kt_proto::cli::ServeArgs;
use kt_proto::shadow;
use russh::keys::PrivateKey;
use russh::server::{Config, run_stream};
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::handler::ConnHandler;
use crate::inbound::{HeldConnections, Inbound};
use crate::keys::{AuthorizedKeys, generate_host_key, host_key_line, load_host_key};
use crate::lease::LeaseWatch;
use crate::limits::{ConnLimits, Slots, refuse, too_many_connections};
use crate::resolve::Resolver;
use crate::restore::Restorer;
use crate::stream::decouple;
use crate::{Error, Exit};

/// Knobs that are constants in production and shortened by tests.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Time a new connection has to finish the SSH handshake and authenticate.
    pub login_grace: Duration,
    /// Time a `direct-tcpip` connect may take.
    pub connect_timeout: Duration,
    /// A `direct-udp@kt.dev` flow with no datagram either way for this long is closed.
    pub udp_idle_timeout: Duration,
    /// After both directions of a TCP channel ended, time allowed for the client to
    /// close the channel before the shadow does.
    pub close_grace: Duration,
    /// Bytes read from a TCP socket at a time.
    pub read_chunk: usize,
    /// SSH channel window (bytes the client may send before the shadow acknowledges).
    pub window_size: u32,
    /// Largest SSH data packet the client may send.
    pub max_packet_size: u32,
    /// SSH messages queued per channel before reading from the connection pauses.
    pub channel_buffer: usize,
    /// How long a write to a TCP peer may make no progress before the channel is
    /// closed. russh 0.65 grants SSH window as soon as data arrives, not as it is
    /// consumed, so a peer that stops reading fills its channel's queue and then
    /// stalls every channel of the connection; this bounds that stall.
    pub write_stall_timeout: Duration,
    /// Bytes of SSH output queued per connection before the session waits for the
    /// socket (see the `stream` module: keeps russh-to-russh connections from
    /// deadlocking when both ends write at once).
    pub write_buffer: usize,
    /// How long a connection refused for `--max-preauth-connections` is kept open to
    /// deliver its disconnect message and read what the client already sent.
    pub refusal_linger: Duration,
    /// How many refused connections may be delivering their disconnect at once; beyond
    /// that a refused connection is closed at once, without a message, so that a flood
    /// of connections holds no more sockets than this.
    pub refusals_in_flight: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            login_grace: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
            udp_idle_timeout: Duration::from_secs(kt_proto::channel::UDP_IDLE_TIMEOUT_SECS),
            close_grace: Duration::from_secs(5),
            read_chunk: 32 * 1024,
            window_size: 4 * 1024 * 1024,
            max_packet_size: 32 * 1024,
            channel_buffer: 32,
            write_buffer: 8 * 1024 * 1024,
            write_stall_timeout: Duration::from_secs(60),
            refusal_linger: Duration::from_secs(2),
            refusals_in_flight: 64,
        }
    }
}

/// Interval between keepalives to a silent client, and how many may go unanswered
/// before the connection is dropped (a vanished client is noticed in about a minute).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_MAX: usize = 4;

/// How long connections get to close after shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Authenticated clients, as seen by the watchdog.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Clients {
    /// Currently connected and authenticated.
    pub(crate) active: usize,
    /// Ever authenticated.
    pub(crate) total: u64,
}

/// Keeps a client counted as connected while alive.
pub(crate) struct ClientGuard(watch::Sender<Clients>);

impl ClientGuard {
    pub(crate) fn new(clients: &watch::Sender<Clients>) -> Self {
        clients.send_modify(|c| {
            c.active += 1;
            c.total += 1;
        });
        ClientGuard(clients.clone())
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0
            .send_modify(|c| c.active = c.active.saturating_sub(1));
    }
}

/// What every connection shares.
pub(crate) struct State {
    pub(crate) authorized: AuthorizedKeys,
    pub(crate) tracker: TaskTracker,
    pub(crate) clients: watch::Sender<Clients>,
    pub(crate) tuning: Arc<Tuning>,
    /// Ports `tcpip-forward` may listen on (`--remote-forward`); empty: none.
    pub(crate) remote_forward_ports: Vec<u16>,
    /// The forwarded ports, which outlive the connections that asked for them.
    pub(crate) inbound: Inbound,
    /// Connections that have not logged in yet (`--max-preauth-connections`).
    preauth: Slots,
    /// Refused connections still delivering their disconnect.
    refusals: Slots,
    max_channels: usize,
    max_udp_flows: usize,
    next_conn: AtomicU64,
    resolver: Resolver,
}

/// What a connection's tasks need: its id for logs, its cancellation (fired when the
/// connection ends or the server shuts down), the task tracker, the tuning, its limits.
#[derive(Clone)]
pub(crate) struct ConnCtx {
    pub(crate) id: u64,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) tuning: Arc<Tuning>,
    pub(crate) limits: Arc<ConnLimits>,
    /// Resolves the names of `direct-tcpip` and `direct-udp@kt.dev` targets.
    pub(crate) resolver: Resolver,
}

/// A bound, ready-to-run shadow SSH server.
pub struct Shadow {
    listener: TcpListener,
    config: Arc<Config>,
    state: Arc<State>,
    idle_exit: Option<Duration>,
    heartbeat_timeout: Option<Duration>,
    lease: Option<LeaseWatch>,
    restorer: Option<Restorer>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("idle_exit", &self.idle_exit)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("lease", &self.lease)
            .field("restorer", &self.restorer)
            .finish_non_exhaustive()
    }
}

impl Shadow {
    /// Makes or loads the keys `args` ask for, checks the listen address and binds it.
    ///
    /// With [`ServeArgs::authorized_key`] (what the shadow pod runs), that key is the
    /// only one allowed to log in and the host key is made in memory
    /// ([`generate_host_key`]): it is never written anywhere, and its public half is
    /// written to stdout as one line ([`kt_proto::shadow::host_key_log_line`]) before
    /// the listen socket exists, so the line is in the log before any client can make
    /// the shadow log anything. The client reads it there and pins it. Otherwise the
    /// keys come from the files [`ServeArgs::host_key`] and
    /// [`ServeArgs::authorized_keys`], and nothing is printed.
    ///
    /// # Errors
    ///
    /// [`Error::NonLoopbackListen`], key errors ([`Error::AuthorizedKeyArg`],
    /// [`Error::GenerateHostKey`], [`Error::ReportHostKey`], [`Error::ReadFile`],
    /// [`Error::HostKey`], [`Error::AuthorizedKeysLine`], ...) or [`Error::Bind`].
    pub async fn bind(args: &ServeArgs) -> Result<Shadow, Error> {
        Self::bind_with(args, Tuning::default()).await
    }

    /// [`Shadow::bind`] with non-default [`Tuning`].
    ///
    /// # Errors
    ///
    /// As [`Shadow::bind`].
    pub async fn bind_with(args: &ServeArgs, tuning: Tuning) -> Result<Shadow, Error> {
        if !args.listen.ip().is_loopback() && !args.allow_non_loopback {
            return Err(Error::NonLoopbackListen { addr: args.listen });
        }
        let (host_key, authorized) = match &args.authorized_key {
            Some(line) => {
                let authorized = AuthorizedKeys::from_arg(line)?;
                let host_key = generate_host_key()?;
                report_host_key(&host_key)?;
                (host_key, authorized)
            }
            None => (
                load_host_key(&args.host_key)?,
                AuthorizedKeys::load(&args.authorized_keys)?,
            ),
        };
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: args.listen,
                source,
            })?;

        let config = Config {
            server_id: SshId::Standard(Cow::Owned(server_id())),
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(500),
            // OpenSSH clients start with a "none" attempt to learn the methods.
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key],
            window_size: tuning.window_size,
            maximum_packet_size: tuning.max_packet_size,
            channel_buffer_size: tuning.channel_buffer,
            max_auth_attempts: 6,
            // Tunnels are idle for long stretches; liveness comes from keepalives.
            inactivity_timeout: None,
            keepalive_interval: Some(KEEPALIVE_INTERVAL),
            keepalive_max: KEEPALIVE_MAX,
            nodelay: true,
            ..Config::default()
        };
        let (clients, _) = watch::channel(Clients::default());
        let tracker = TaskTracker::new();
        let refusals_in_flight = tuning.refusals_in_flight;
        info!(
            listen = %args.listen,
            authorized_keys = authorized.len(),
            version = kt_proto::VERSION,
            remote_forward_ports = ?args.remote_forward_ports,
            max_preauth_connections = args.max_preauth_connections,
            max_channels = args.max_channels,
            max_udp_flows = args.max_udp_flows,
            max_held_connections = args.max_held_connections,
            hold_timeout = ?args.hold_timeout,
            "kt-shadow listening"
        );
        Ok(Shadow {
            listener,
            config: Arc::new(config),
            state: Arc::new(State {
                authorized,
                inbound: Inbound::new(
                    args.max_held_connections,
                    args.hold_timeout,
                    tracker.clone(),
                ),
                tracker,
                clients,
                tuning: Arc::new(tuning),
                remote_forward_ports: args.remote_forward_ports.clone(),
                preauth: Slots::new(args.max_preauth_connections),
                refusals: Slots::new(refusals_in_flight),
                max_channels: args.max_channels,
                max_udp_flows: args.max_udp_flows,
                next_conn: AtomicU64::new(1),
                resolver: Resolver::default(),
            }),
            idle_exit: args.idle_exit,
            heartbeat_timeout: args.heartbeat_timeout,
            lease: None,
            restorer: None,
        })
    }

    /// Also ends [`Shadow::run`] (with [`Exit::LeaseExpired`]) when the session's Lease
    /// expires or is deleted (see [`crate::lease`]). The SSH-idle timer stays on.
    #[must_use]
    pub fn watch_lease(mut self, watch: LeaseWatch) -> Shadow {
        self.lease = Some(watch);
        self
    }

    /// When [`Shadow::run`] stops, for whatever reason, first runs `restorer`
    /// ([`Restorer::on_stop`]: puts back what the session changed, and deletes the
    /// shadow's pod after a Lease expiry with `--self-delete`) while the listeners
    /// still serve, then shuts down; [`Exit::RestoreFailed`] if restoring failed.
    #[must_use]
    pub fn restore_on_stop(mut self, restorer: Restorer) -> Shadow {
        self.restorer = Some(restorer);
        self
    }

    /// The address the server listens on (useful with port 0).
    ///
    /// # Errors
    ///
    /// The socket's error if the address cannot be read.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Counters of connections held on forwarded ports while no client had them (see
    /// `--hold-timeout`); they keep counting while [`Shadow::run`] runs.
    pub fn held_connections(&self) -> HeldConnections {
        self.state.inbound.counters()
    }

    /// Serves until `shutdown` is cancelled, the heartbeat timeout or the idle exit
    /// fires, or the watched Lease ([`Shadow::watch_lease`]) expires. Then restores
    /// (with [`Shadow::restore_on_stop`]), disconnects every client, closes every
    /// listener and waits (up to a few seconds) for every task to finish before
    /// returning why it stopped.
    pub async fn run(self, shutdown: CancellationToken) -> Exit {
        let Shadow {
            listener,
            config,
            state,
            idle_exit,
            heartbeat_timeout,
            lease,
            restorer,
        } = self;
        let lease = async move {
            match lease {
                Some(watch) => watch.run().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(lease);
        let stop = shutdown.child_token();
        let mut clients = state.clients.subscribe();
        let mut last = Clients::default();
        // Since when no client has been connected; `None` while one is.
        let mut empty_since = Some(Instant::now());

        let exit = loop {
            let heartbeat_deadline = empty_since.zip(heartbeat_timeout).map(|(t, d)| t + d);
            let idle_deadline = empty_since
                .filter(|_| last.total > 0)
                .zip(idle_exit)
                .map(|(t, d)| t + d);
            tokio::select! {
                () = stop.cancelled() => break Exit::Shutdown,
                _ = &mut lease => break Exit::LeaseExpired,
                () = sleep_until(heartbeat_deadline) => {
                    warn!(
                        timeout = ?heartbeat_timeout.unwrap_or_default(),
                        ever_connected = last.total > 0,
                        "no SSH client connected within the heartbeat timeout; exiting with code {} \
                         so the cluster can be restored",
                        shadow::EXIT_HEARTBEAT_TIMEOUT,
                    );
                    // A shadow that deletes itself when its client is gone asks the Lease,
                    // which says so, for one more timeout: the SSH connection of a killed
                    // client ends at once, its Lease expires only up to a TTL later, and a
                    // shadow that stopped for the timeout alone would be left as an ended
                    // pod, with the dead client's connect shadow.
                    if restorer.as_ref().is_some_and(Restorer::deletes_pods)
                        && let Some(more) = heartbeat_timeout
                        && tokio::time::timeout(more, &mut lease).await.is_ok()
                    {
                        break Exit::LeaseExpired;
                    }
                    break Exit::HeartbeatTimeout;
                }
                () = sleep_until(idle_deadline) => {
                    info!(idle = ?idle_exit.unwrap_or_default(), "last client left and none came back; exiting");
                    break Exit::IdleExit;
                }
                // `State` owns the sender, so this never fails while `run` runs.
                Ok(()) = clients.changed() => {
                    let now = *clients.borrow_and_update();
                    if now.active > 0 {
                        empty_since = None;
                    } else if last.active > 0 || now.total != last.total {
                        // The last client just left (or came and went in between).
                        empty_since = Some(Instant::now());
                    }
                    last = now;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => spawn_connection(&state, &config, &stop, stream, peer),
                    Err(err) => {
                        warn!(error = %err, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        };

        // Put back what points at this shadow while it still serves: connections that
        // arrive before the Service selects the original pods again are still answered.
        let exit = match &restorer {
            Some(restorer) => restorer.on_stop(exit).await,
            None => exit,
        };
        drop(listener);
        stop.cancel();
        state.inbound.close();
        state.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, state.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                tasks = state.tracker.len(),
                "tasks still running {SHUTDOWN_GRACE:?} after shutdown; exiting anyway"
            );
        }
        exit
    }
}

/// The SSH identification string the shadow sends.
fn server_id() -> String {
    format!("SSH-2.0-kt-shadow_{}", kt_proto::VERSION)
}

/// Writes the host-key line to stdout, flushed (one `write`, so it is one line in
/// the log even beside other output).
fn report_host_key(host_key: &PrivateKey) -> Result<(), Error> {
    let line = format!("{}\n", host_key_line(host_key)?);
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| Error::ReportHostKey { source })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn spawn_connection(
    state: &Arc<State>,
    config: &Arc<Config>,
    stop: &CancellationToken,
    stream: TcpStream,
    peer: SocketAddr,
) {
    // Held by the handler until the client logs in or the connection ends.
    let Some(preauth) = state.preauth.take() else {
        let limit = state.preauth.max();
        let Some(refusing) = state.refusals.take() else {
            // A flood: close at once rather than hold one more socket.
            debug!(%peer, "connection closed: too many refusals in flight");
            return;
        };
        warn!(
            %peer,
            limit,
            "connection refused: {limit} connections are already waiting to log in \
             (--max-preauth-connections)"
        );
        let message = format!(
            "kt-shadow: too many connections waiting to log in ({limit}, the shadow's \
             --max-preauth-connections); try again in a moment"
        );
        let refusal = too_many_connections(&server_id(), &message);
        let linger = state.tuning.refusal_linger;
        let stop = stop.clone();
        state.tracker.spawn(async move {
            let _refusing = refusing;
            refuse(stream, peer, refusal, linger, stop).await;
        });
        return;
    };
    let id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let ctx = ConnCtx {
        id,
        cancel: stop.child_token(),
        tracker: state.tracker.clone(),
        tuning: Arc::clone(&state.tuning),
        limits: Arc::new(ConnLimits::new(state.max_channels, state.max_udp_flows)),
        resolver: state.resolver.clone(),
    };
    let (auth_tx, auth_rx) = oneshot::channel();
    let handler = ConnHandler::new(Arc::clone(state), ctx.clone(), peer, auth_tx, preauth);
    let config = Arc::clone(config);
    let stop = stop.clone();
    let _ = stream.set_nodelay(true);
    let (stream, pump) = decouple(stream, ctx.tuning.write_buffer);
    // The pump ends when the session drops its side; after a shutdown it gets a grace
    // period to deliver the disconnect message, then is dropped.
    let pump_stop = stop.clone();
    state.tracker.spawn(async move {
        tokio::select! {
            () = pump => {}
            () = async {
                pump_stop.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {}
        }
    });
    state.tracker.spawn(async move {
        debug!(conn = id, %peer, "connection accepted");
        let grace = ctx.tuning.login_grace;
        let started = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(grace, run_stream(config, stream, handler)) => r,
        };
        let mut session = match started {
            Ok(Ok(session)) => session,
            // Readiness probes connect, read the banner and hang up: not worth a warning.
            Ok(Err(err)) => {
                debug!(conn = id, %peer, error = %err, "connection closed before the SSH handshake");
                return;
            }
            Err(_) => {
                debug!(conn = id, %peer, "no SSH identification within {grace:?}; dropped");
                return;
            }
        };
        let handle = session.handle();

        let login_deadline = tokio::time::sleep(grace);
        tokio::pin!(login_deadline);
        let mut auth_rx = auth_rx;
        let mut authenticated = false;
        loop {
            tokio::select! {
                result = &mut session => {
                    match result {
                        Ok(()) => debug!(conn = id, %peer, "connection closed"),
                        Err(err) if authenticated => info!(conn = id, %peer, error = %err, "connection ended"),
                        Err(err) => debug!(conn = id, %peer, error = %err, "connection ended before login"),
                    }
                    return;
                }
                r = &mut auth_rx, if !authenticated => {
                    // An Err means the handler is gone; the session result follows.
                    authenticated = r.is_ok();
                    if !authenticated {
                        continue;
                    }
                }
                () = &mut login_deadline, if !authenticated => {
                    info!(conn = id, %peer, "no successful login within {grace:?}; disconnecting");
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, "login timeout".into(), "en".into())
                        .await;
                    break;
                }
                () = stop.cancelled() => {
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::ByApplication,
                            "kt-shadow is shutting down".into(),
                            "en".into(),
                        )
                        .await;
                    break;
                }
            }
        }
        // Disconnect sent: give the session a moment to flush it and end.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, session).await;
    });
}
