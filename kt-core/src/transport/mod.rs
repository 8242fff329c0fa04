//! The transport: a kube-rs port-forward to the shadow's SSH port, an SSH session over
//! it (host key pinned, ephemeral client key), and the supervisor that re-establishes
//! both when they drop.

mod decouple;
mod remote;

pub(crate) use remote::{Accepted, RemoteForward, RemoteForwards};

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use russh::client::{ChannelOpenHandle, Config, Handle, Handler};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelOpenFailure, client::Msg};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::cluster::map_error;
use crate::error::{Error, Result};
use crate::events::{Event, EventBus};

/// Everything needed to (re)establish the transport.
pub(crate) struct TransportConfig {
    pub(crate) pods: Api<Pod>,
    pub(crate) server: String,
    pub(crate) namespace: String,
    pub(crate) pod: String,
    /// The pod's UID when the session created it: every link first checks that the pod
    /// of that name still has it (see [`check_identity`]).
    pub(crate) uid: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) key: Arc<PrivateKey>,
    /// The host key every link pins: reported by kt-shadow in its log (see
    /// `shadow::host_key`), or made by the session for the OpenSSH shadow.
    pub(crate) host_key: PublicKey,
    /// Bound on one port-forward + handshake + login.
    pub(crate) attempt_timeout: Duration,
    /// Bound on opening one channel (the shadow's connect included).
    pub(crate) open_timeout: Duration,
    /// How long to keep trying after a drop before giving up.
    pub(crate) reconnect_timeout: Duration,
}

/// The SSH client settings: big windows for throughput, keepalives so a silently dead
/// port-forward is noticed.
fn ssh_config() -> Arc<Config> {
    Arc::new(Config {
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 32 * 1024,
        channel_buffer_size: 128,
        keepalive_interval: Some(Duration::from_secs(10)),
        keepalive_max: 3,
        nodelay: true,
        ..Config::default()
    })
}

/// The russh client handler: accepts exactly the pinned host key, and marks the link
/// dead when the SSH session task ends (the handler is dropped with it).
struct Client {
    host_key: PublicKey,
    /// Where `forwarded-tcpip` channels go.
    remote: RemoteForwards,
    /// Whether the server offered the pinned key (for a precise error message).
    offered: Arc<std::sync::Mutex<Option<String>>>,
    _dead: DropGuard,
}

impl Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let ok = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                if let Ok(mut offered) = self.offered.lock() {
                    *offered = key.to_openssh().ok();
                }
                key.key_data() == self.host_key.key_data()
            }
            PublicKeyOrCertificate::Certificate(_) => false,
        };
        Ok(ok)
    }

    /// A connection to a port the shadow listens on for us (`tcpip-forward`): handed to
    /// whoever registered that port, refused when no one did.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        let accepted = Accepted {
            channel,
            bound_port: connected_port,
            peer: format!("{originator_address}:{originator_port}"),
        };
        match self
            .remote
            .deliver(connected_address, connected_port, accepted)
        {
            Ok(()) => reply.accept().await,
            Err(why) => {
                tracing::debug!(
                    target: "kt",
                    "refused a forwarded connection to {connected_address}:{connected_port}: {why}"
                );
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
            }
        }
        Ok(())
    }
}

/// What a channel opened with [`Tunnel::open_kind`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    /// A TCP connection (`direct-tcpip`).
    Tcp,
    /// A UDP flow (`direct-udp@kt.dev`, kt-shadow only; see `kt_proto::channel`).
    Udp,
}

/// One established port-forward + SSH session.
pub(crate) struct Link {
    handle: Handle<Client>,
    /// Cancelled when the link is known to be dead.
    pub(crate) dead: CancellationToken,
    /// Ends the port-forward's background task when the link is dropped.
    _forward: AbortOnDrop,
    /// Ends the write pump when the link is dropped.
    _pump: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::AbortHandle);

/// Stops a port-forward's background task when dropped.
struct ForwarderGuard(kube::api::Portforwarder);

impl Drop for ForwarderGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Link {
    /// Port-forwards to the shadow, runs the SSH handshake over the stream, pins the host
    /// key and logs in with the session key.
    ///
    /// The port-forward goes to the pod by name, and a namespace peer could delete the
    /// shadow and create a pod of the same name (for the OpenSSH flavour with a copy of
    /// its Secret, so with the pinned host key; a recreated kt-shadow has a host key of
    /// its own, which the handshake refuses). So the pod's UID is checked against the one it was created with
    /// before the port-forward (no connection at all to a stranger, in the common case)
    /// and again once the port-forward is up, before any SSH byte is sent: a pod of that
    /// name with the session's UID still there then means the port-forward reached it
    /// (names are unique and a deleted pod never comes back), so no swap can slip in
    /// between. A different UID, or a pod gone or being deleted, is
    /// [`Error::ShadowReplaced`], which no retry loop retries.
    pub(crate) async fn establish(cfg: &TransportConfig, remote: &RemoteForwards) -> Result<Link> {
        let pf_error = |reason: String| Error::PortForward {
            pod: cfg.pod.clone(),
            port: cfg.port,
            reason,
        };
        check_identity(cfg).await?;
        let mut forwarder = match cfg.pods.portforward(&cfg.pod, &[cfg.port]).await {
            Ok(f) => f,
            Err(e) => {
                return Err(
                    match map_error(
                        e,
                        &cfg.server,
                        &cfg.namespace,
                        "create",
                        "pods/portforward",
                        &format!("(pod `{}`)", cfg.pod),
                    ) {
                        Error::Api { source, .. } => pf_error(source.to_string()),
                        other => other,
                    },
                );
            }
        };
        let stream = forwarder
            .take_stream(cfg.port)
            .ok_or_else(|| pf_error("kube-rs returned no stream for the port".to_owned()))?;
        let port_error = forwarder.take_error(cfg.port);
        // Dropping the forwarder (on an early return) closes the port-forward.
        let forwarder = ForwarderGuard(forwarder);
        check_identity(cfg).await?;
        let dead = CancellationToken::new();
        // The port-forward's background task lives as long as the link: it ends (and
        // stops the forwarder) when the link dies or is dropped, and kills the link
        // when the node reports an error on the port.
        let pf_task = tokio::spawn({
            let dead = dead.clone();
            let pod = cfg.pod.clone();
            let guard = forwarder;
            async move {
                let _guard = guard;
                match port_error {
                    Some(port_error) => {
                        tokio::select! {
                            () = dead.cancelled() => {}
                            msg = port_error => {
                                // Resolved: the port is no longer usable.
                                if let Some(msg) = msg {
                                    tracing::warn!(target: "kt", "port-forward to {pod}: {msg}");
                                }
                                dead.cancel();
                            }
                        }
                    }
                    None => dead.cancelled().await,
                }
                dead.cancelled().await;
            }
        });
        let forward = AbortOnDrop(pf_task.abort_handle());
        let offered = Arc::new(std::sync::Mutex::new(None));
        let handler = Client {
            host_key: cfg.host_key.clone(),
            remote: remote.clone(),
            offered: Arc::clone(&offered),
            _dead: dead.clone().drop_guard(),
        };
        let ssh_error = |reason: String| Error::Ssh {
            pod: cfg.pod.clone(),
            reason,
        };
        // Writes go through a queue so the session never stops reading (see decouple).
        let (stream, pump) = decouple::decouple(stream);
        let pump = AbortOnDrop(tokio::spawn(pump).abort_handle());
        let mut handle = match russh::client::connect_stream(ssh_config(), stream, handler).await {
            Ok(h) => h,
            Err(russh::Error::UnknownKey) => {
                let offered = offered
                    .lock()
                    .ok()
                    .and_then(|o| o.clone())
                    .unwrap_or_default();
                return Err(ssh_error(host_key_mismatch(
                    &offered,
                    &cfg.host_key,
                    cfg.port,
                )));
            }
            Err(e) => {
                return Err(ssh_error(format!(
                    "SSH handshake over the port-forward failed ({e}); the shadow may not be \
                     listening yet on port {}",
                    cfg.port
                )));
            }
        };
        let auth = handle
            .authenticate_publickey(
                cfg.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::clone(&cfg.key), None),
            )
            .await
            .map_err(|e| ssh_error(format!("login failed: {e}")))?;
        if !auth.success() {
            return Err(ssh_error(format!(
                "the shadow refused the session key for user `{}`; the key it was given \
                 (kt-shadow: its --authorized-key argument; OpenSSH: authorized_keys from \
                 the Secret) is not this session's",
                cfg.user
            )));
        }
        let link = Link {
            handle,
            dead,
            _forward: forward,
            _pump: pump,
        };
        // A new link (first or after a drop) asks again for every remote forward.
        for (address, port) in remote.registered() {
            link.listen(&address, port).await.map_err(ssh_error)?;
        }
        Ok(link)
    }

    /// Asks the shadow to listen on `address:port` (`tcpip-forward`; port 0: any free
    /// port); the port it bound.
    async fn listen(&self, address: &str, port: u32) -> Result<u32, String> {
        match self.handle.tcpip_forward(address, port).await {
            Ok(bound) if port == 0 => Ok(bound),
            Ok(_) => Ok(port),
            Err(e) => Err(format!(
                "the shadow refused to listen on {address}:{port} for a remote forward ({e})"
            )),
        }
    }

    /// Opens a `direct-tcpip` channel to `host:port` from the shadow; `kind` decides
    /// the originator address, which marks a `direct-udp@kt.dev` flow.
    async fn open(
        &self,
        host: &str,
        port: u16,
        kind: ChannelKind,
    ) -> Result<Channel<Msg>, russh::Error> {
        let originator = match kind {
            ChannelKind::Tcp => "127.0.0.1",
            ChannelKind::Udp => kt_proto::channel::DIRECT_UDP,
        };
        self.handle
            .channel_open_direct_tcpip(host, u32::from(port), originator, 0)
            .await
    }

    /// Says goodbye to the shadow and ends the link.
    async fn disconnect(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.handle
                .disconnect(russh::Disconnect::ByApplication, "session closed", "en"),
        )
        .await;
        self.dead.cancel();
    }
}

/// Why a link was refused when the server offered `offered` (OpenSSH text; empty if
/// unknown) and `pinned` is the shadow's key.
fn host_key_mismatch(offered: &str, pinned: &PublicKey, port: u16) -> String {
    format!(
        "the shadow presented host key `{offered}`, not the one pinned for it (`{}`: the key \
         kt-shadow reported in its log when it started, or the one this session made for the \
         OpenSSH shadow); something other than the shadow answered on port {port} — refusing \
         to continue",
        pinned.to_openssh().unwrap_or_default(),
    )
}

/// Fails with [`Error::ShadowReplaced`] unless the pod named `cfg.pod` is the one the
/// session created (UID `cfg.uid`) and is not being deleted.
async fn check_identity(cfg: &TransportConfig) -> Result<()> {
    let pod = cfg.pods.get_opt(&cfg.pod).await.map_err(|e| {
        map_error(
            e,
            &cfg.server,
            &cfg.namespace,
            "get",
            "pods",
            &format!(
                "(the shadow pod `{}`, to check it is still the one kt created)",
                cfg.pod
            ),
        )
    })?;
    identity(&cfg.uid, pod.as_ref()).map_err(|reason| Error::ShadowReplaced {
        pod: cfg.pod.clone(),
        namespace: cfg.namespace.clone(),
        reason,
    })
}

/// Why `pod` (read by the shadow's name; `None`: not found) is not the shadow created
/// with UID `uid`.
pub(crate) fn identity(uid: &str, pod: Option<&Pod>) -> Result<(), String> {
    let Some(pod) = pod else {
        return Err("it was deleted".to_owned());
    };
    let now = pod.metadata.uid.as_deref().unwrap_or_default();
    if now != uid {
        return Err(format!(
            "a pod of the same name with UID {now} is there now, and this session created \
             UID {uid}"
        ));
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Err("it is being deleted".to_owned());
    }
    Ok(())
}

/// The state of the transport.
#[derive(Clone)]
enum State {
    Up(Arc<Link>),
    Reconnecting,
    Failed(String),
    Closed,
}

/// The transport shared by every proxy, forward and DNS lookup of a session.
pub(crate) struct Tunnel {
    cfg: TransportConfig,
    state: watch::Sender<State>,
    remote: RemoteForwards,
}

/// How [`establish`] retries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    /// The first pause between tries; it doubles up to `max_delay`.
    pub(crate) first_delay: Duration,
    /// The longest pause.
    pub(crate) max_delay: Duration,
    /// Retry every failure (a reconnect: the API server may be restarting), or only
    /// those that mean "not up yet" (the first link: the pod's SSH server may not answer
    /// yet, but a wrong host key or a refused key will not get better).
    pub(crate) any_failure: bool,
}

impl Retry {
    /// The first link of a new shadow.
    pub(crate) const FIRST_LINK: Retry = Retry {
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        any_failure: false,
    };

    /// A link after a drop.
    pub(crate) const RECONNECT: Retry = Retry {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(3),
        any_failure: true,
    };

    fn retries(&self, err: &Error) -> bool {
        if matches!(err, Error::ShadowReplaced { .. }) {
            // Not the session's pod any more: no retry can make it so.
            return false;
        }
        self.any_failure
            || match err {
                Error::Ssh { reason, .. } => {
                    !reason.contains("host key") && !reason.contains("refused the session key")
                }
                Error::PortForward { .. } | Error::ApiUnreachable { .. } => true,
                _ => false,
            }
    }
}

/// How [`establish`] ended.
pub(crate) enum Established {
    /// Up after `attempts` tries.
    Up(Link, u32),
    /// Not retried any more: the last failure, after `attempts` tries.
    GaveUp(Error, u32),
    /// `cancel` fired.
    Cancelled,
}

/// The one link-establishment loop: tries `Link::establish` (each bounded by the
/// attempt timeout) with back-off until it works, `retry` says stop, `until` passes or
/// `cancel` fires. `on_try(n, last_failure)` runs before each try.
pub(crate) async fn establish(
    cfg: &TransportConfig,
    remote: &RemoteForwards,
    retry: Retry,
    until: tokio::time::Instant,
    cancel: &CancellationToken,
    mut on_try: impl FnMut(u32, Option<&Error>),
) -> Established {
    let mut delay = retry.first_delay;
    let mut last: Option<Error> = None;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        on_try(attempt, last.as_ref());
        let result = tokio::select! {
            () = cancel.cancelled() => return Established::Cancelled,
            r = tokio::time::timeout(cfg.attempt_timeout, Link::establish(cfg, remote)) => r,
        };
        let err = match result {
            Ok(Ok(link)) => return Established::Up(link, attempt),
            Ok(Err(e)) => e,
            Err(_) => Error::PortForward {
                pod: cfg.pod.clone(),
                port: cfg.port,
                reason: format!(
                    "port-forward and SSH login did not finish within {:?}",
                    cfg.attempt_timeout
                ),
            },
        };
        tracing::debug!(target: "kt", "link to {} try {attempt} failed: {err}", cfg.pod);
        if !retry.retries(&err) || tokio::time::Instant::now() + delay >= until {
            return Established::GaveUp(err, attempt);
        }
        last = Some(err);
        tokio::select! {
            () = cancel.cancelled() => return Established::Cancelled,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(retry.max_delay);
    }
}

impl Tunnel {
    /// Brings the first link up (retrying while the shadow's SSH server is not
    /// answering yet, until `until`) and returns the tunnel over it.
    pub(crate) async fn open_first(
        cfg: TransportConfig,
        until: tokio::time::Instant,
    ) -> Result<Arc<Tunnel>> {
        let remote = RemoteForwards::default();
        let never = CancellationToken::new();
        match establish(&cfg, &remote, Retry::FIRST_LINK, until, &never, |_, _| {}).await {
            Established::Up(link, _) => {
                let (state, _) = watch::channel(State::Up(Arc::new(link)));
                Ok(Arc::new(Tunnel { cfg, state, remote }))
            }
            Established::GaveUp(err, _) => Err(err),
            Established::Cancelled => Err(Error::Closed),
        }
    }

    /// Asks the shadow to listen on `address:port` (0: a free port) and registers the
    /// port, so every later link asks again; connections arrive on the returned
    /// [`RemoteForward`].
    pub(crate) async fn remote_forward(&self, address: &str, port: u16) -> Result<RemoteForward> {
        let link = self.current().await?;
        let bound = link
            .listen(address, u32::from(port))
            .await
            .map_err(|reason| Error::Ssh {
                pod: self.cfg.pod.clone(),
                reason,
            })?;
        Ok(self.remote.register(address, bound))
    }

    /// The current link, waiting (up to the open timeout) for a reconnect in progress.
    async fn current(&self) -> Result<Arc<Link>> {
        let deadline = tokio::time::Instant::now() + self.cfg.open_timeout;
        self.current_until(deadline, || Error::TunnelDown {
            reason: format!(
                "reconnecting, and not back within {:?}",
                self.cfg.open_timeout
            ),
        })
        .await
    }

    /// The current link, waiting until `deadline` for a reconnect in progress;
    /// `too_late()` when it passes.
    async fn current_until(
        &self,
        deadline: tokio::time::Instant,
        too_late: impl Fn() -> Error,
    ) -> Result<Arc<Link>> {
        let mut rx = self.state.subscribe();
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                State::Up(link) => return Ok(link),
                State::Failed(reason) => return Err(Error::TunnelDown { reason }),
                State::Closed => return Err(Error::Closed),
                State::Reconnecting => {
                    if tokio::time::timeout_at(deadline, rx.changed())
                        .await
                        .is_err()
                    {
                        return Err(too_late());
                    }
                }
            }
        }
    }

    /// Opens a channel to `host:port` in the cluster, waiting for a reconnect in progress.
    pub(crate) async fn open(&self, host: &str, port: u16) -> Result<Channel<Msg>> {
        self.open_kind(host, port, ChannelKind::Tcp).await
    }

    /// [`Tunnel::open`] for a TCP connection or a UDP flow.
    pub(crate) async fn open_kind(
        &self,
        host: &str,
        port: u16,
        kind: ChannelKind,
    ) -> Result<Channel<Msg>> {
        let deadline = tokio::time::Instant::now() + self.cfg.open_timeout;
        let too_late = || Error::Connect {
            host: host.to_owned(),
            port,
            reason: format!(
                "the tunnel is reconnecting and was not back within {:?}",
                self.cfg.open_timeout
            ),
        };
        loop {
            let link = self.current_until(deadline, too_late).await?;
            let opened = tokio::time::timeout_at(deadline, link.open(host, port, kind)).await;
            match opened {
                Ok(Ok(channel)) => return Ok(channel),
                Ok(Err(russh::Error::ChannelOpenFailure(why))) => {
                    return Err(Error::Connect {
                        host: host.to_owned(),
                        port,
                        reason: open_failure(&why),
                    });
                }
                Ok(Err(e)) => {
                    // The session is gone: mark the link dead so the supervisor
                    // reconnects, then wait for the new one.
                    tracing::debug!(target: "kt", "channel open on a dead link: {e}");
                    link.dead.cancel();
                    self.state.send_if_modified(|s| match s {
                        State::Up(current) if Arc::ptr_eq(current, &link) => {
                            *s = State::Reconnecting;
                            true
                        }
                        _ => false,
                    });
                }
                Err(_) => {
                    return Err(Error::Connect {
                        host: host.to_owned(),
                        port,
                        reason: format!("no answer within {:?}", self.cfg.open_timeout),
                    });
                }
            }
        }
    }

    /// Watches the current link and re-establishes it when it dies, until `cancel`.
    pub(crate) async fn supervise(
        self: Arc<Self>,
        cancel: CancellationToken,
        events: Arc<EventBus>,
    ) {
        loop {
            let link = match self.state.borrow().clone() {
                State::Up(link) => Some(link),
                State::Reconnecting => None,
                State::Failed(_) | State::Closed => return,
            };
            if let Some(link) = link {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    () = link.dead.cancelled() => {}
                }
                if cancel.is_cancelled() || matches!(*self.state.borrow(), State::Closed) {
                    return;
                }
                self.state.send_if_modified(|s| match s {
                    State::Up(current) if Arc::ptr_eq(current, &link) => {
                        *s = State::Reconnecting;
                        true
                    }
                    _ => false,
                });
            }
            let reason = "the port-forward or SSH session to the shadow closed".to_owned();
            let Some(next) = self.reconnect(reason, &cancel, &events).await else {
                return;
            };
            let up = matches!(next, State::Up(_));
            // Never overwrite a close that happened meanwhile.
            let mut next = Some(next);
            self.state.send_if_modified(|s| {
                if matches!(s, State::Reconnecting) {
                    if let Some(n) = next.take() {
                        *s = n;
                    }
                    true
                } else {
                    false
                }
            });
            if let Some(State::Up(link)) = next {
                link.disconnect().await;
                return;
            }
            if !up {
                return;
            }
        }
    }

    /// Re-establishes the link after a drop, for at most the reconnect timeout, with
    /// events. `None` when cancelled.
    async fn reconnect(
        &self,
        reason: String,
        cancel: &CancellationToken,
        events: &EventBus,
    ) -> Option<State> {
        let give_up = tokio::time::Instant::now() + self.cfg.reconnect_timeout;
        let on_try = |attempt: u32, last: Option<&Error>| {
            events.emit(Event::Reconnecting {
                attempt,
                reason: last.map_or_else(|| reason.clone(), ToString::to_string),
            });
        };
        match establish(
            &self.cfg,
            &self.remote,
            Retry::RECONNECT,
            give_up,
            cancel,
            on_try,
        )
        .await
        {
            Established::Up(link, attempts) => {
                events.emit(Event::Reconnected { attempts });
                Some(State::Up(Arc::new(link)))
            }
            Established::GaveUp(err, attempts) => {
                let reason = match err {
                    // Not a reconnect that ran out of time: refused at once.
                    Error::ShadowReplaced { .. } => err.to_string(),
                    _ => format!(
                        "gave up reconnecting after {attempts} tries in {:?}: {err}",
                        self.cfg.reconnect_timeout
                    ),
                };
                events.emit(Event::TunnelLost {
                    reason: reason.clone(),
                });
                Some(State::Failed(reason))
            }
            Established::Cancelled => None,
        }
    }

    /// Ends the current link and refuses new channels.
    pub(crate) async fn close(&self) {
        let previous = self.state.send_replace(State::Closed);
        if let State::Up(link) = previous {
            link.disconnect().await;
        }
    }

    /// Kills the current link as if the network dropped (for tests of reconnects).
    pub(crate) fn break_link(&self) {
        if let State::Up(link) = &*self.state.borrow() {
            link.dead.cancel();
        }
    }
}

fn open_failure(why: &ChannelOpenFailure) -> String {
    match why {
        ChannelOpenFailure::ConnectFailed => {
            "connection failed (refused, unreachable, or the name does not resolve in the pod)"
                .to_owned()
        }
        ChannelOpenFailure::AdministrativelyProhibited => {
            "the shadow does not allow TCP forwarding (sshd: AllowTcpForwarding)".to_owned()
        }
        ChannelOpenFailure::ResourceShortage => "the shadow is out of resources".to_owned(),
        ChannelOpenFailure::UnknownChannelType => {
            "the shadow does not support direct-tcpip channels".to_owned()
        }
        ChannelOpenFailure::Other { code, reason } => format!("refused ({code}: {reason})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, deleting: bool) -> Pod {
        let mut meta = serde_json::json!({ "name": "kt-shadow-t1", "uid": uid });
        if deleting {
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        serde_json::from_value(serde_json::json!({ "metadata": meta })).expect("a pod")
    }

    #[test]
    fn only_the_created_pod_is_the_shadow() {
        assert_eq!(identity("u1", Some(&pod("u1", false))), Ok(()));
        let replaced = identity("u1", Some(&pod("u2", false))).unwrap_err();
        assert!(
            replaced.contains("UID u2") && replaced.contains("UID u1"),
            "{replaced}"
        );
        assert_eq!(
            identity("u1", Some(&pod("u1", true))).unwrap_err(),
            "it is being deleted"
        );
        assert_eq!(identity("u1", None).unwrap_err(), "it was deleted");
    }

    #[test]
    fn a_host_key_mismatch_names_both_keys_and_is_not_retried_on_the_first_link() {
        let pinned = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPDBp3khpUoQDgs/jC6tYksSwC/LKe35IRMRz4hAr1x4",
        )
        .expect("test key");
        let offered =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+CPjJ5Kcn/Hm2zN0Ehqrq02FK9HbW3N9m9gs/5+GLb";
        let reason = host_key_mismatch(offered, &pinned, 2222);
        assert!(
            reason.contains(offered)
                && reason.contains("AAAAIPDBp3khpUoQDgs")
                && reason.contains("reported in its log")
                && reason.contains("refusing to continue"),
            "{reason}"
        );
        let err = Error::Ssh {
            pod: "kt-shadow-t1".to_owned(),
            reason,
        };
        assert!(!Retry::FIRST_LINK.retries(&err));
    }

    #[test]
    fn a_replaced_shadow_is_never_retried() {
        let replaced = Error::ShadowReplaced {
            pod: "kt-shadow-t1".to_owned(),
            namespace: "dev".to_owned(),
            reason: "it was deleted".to_owned(),
        };
        assert!(!Retry::RECONNECT.retries(&replaced));
        assert!(!Retry::FIRST_LINK.retries(&replaced));
        assert!(replaced.to_string().contains("was replaced"), "{replaced}");
        // Everything else is still retried on a reconnect.
        let forward = Error::PortForward {
            pod: "kt-shadow-t1".to_owned(),
            port: 2222,
            reason: "not found".to_owned(),
        };
        assert!(Retry::RECONNECT.retries(&forward));
    }
}
