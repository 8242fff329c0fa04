//! [`Session`]: the connect sequence, the caller API and close.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use crate::cluster::target::{Destination, Target};
use crate::cluster::{Cluster, Objects, leftovers};
use crate::dns::server::ClusterResolver;
use crate::dns::{Resolver, SearchList};
use crate::error::{Error, Result};
use crate::events::{Event, EventBus, Events};
use crate::options::{ConnectOptions, FALLBACK_DNS_SERVER, ShadowFlavour};
use crate::outbound::udp::{self, DatagramChannel};
use crate::outbound::{Dialer, accept_loop, bind, forward, http, socks};
use crate::shadow::spec::{SessionKeys, ShadowSpec};
use crate::shadow::{heartbeat, wait};
use crate::task::Tasks;
use crate::transport::{Link, TransportConfig, Tunnel};
use crate::vpn::VpnInfo;
use crate::vpn::setup::{VpnContext, VpnState, check_capability, recover_left_overs};

/// An open connection into a cluster: a shadow pod, the tunnel to it, and the local
/// proxies and forwards over that tunnel.
///
/// Close it with [`Session::close`]; dropping it without closing starts a best-effort
/// removal of its objects in the background (if a tokio runtime is still running).
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    cluster: Cluster,
    objects: Objects,
    tunnel: Arc<Tunnel>,
    dialer: Dialer,
    socks5: SocketAddr,
    http_proxy: SocketAddr,
    tasks: Tasks,
    events: Arc<EventBus>,
    cluster_domain: String,
    flavour: ShadowFlavour,
    close_timeout: Duration,
    vpn: Option<VpnState>,
    closing: AtomicBool,
    close_done: tokio::sync::Mutex<bool>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("namespace", &self.inner.cluster.namespace)
            .field("pod", &self.inner.objects.pod)
            .field("socks5", &self.inner.socks5)
            .field("http_proxy", &self.inner.http_proxy)
            .finish()
    }
}

/// What the connect sequence built, before it becomes a [`Session`].
struct Started {
    tunnel: Arc<Tunnel>,
    dns_ip: Option<IpAddr>,
}

impl Session {
    /// Opens a session: creates the shadow's Secret and Pod, waits until the pod is
    /// Ready, port-forwards to it, logs in over SSH with a fresh key and starts the local
    /// proxies. Progress is reported as [`Event`]s. If anything fails, whatever was
    /// created is removed before the error is returned.
    ///
    /// # Errors
    ///
    /// Each failure has its own [`Error`] variant, saying what to do: a bad kubeconfig or
    /// context, an unreachable API server, a missing namespace, a missing permission, a
    /// shadow image that cannot start, a refused port-forward, a failed SSH login.
    pub async fn connect(opts: ConnectOptions) -> Result<Session> {
        // Boxed: the whole sequence is a large future, callers' futures stay small.
        Box::pin(Self::connect_inner(opts)).await
    }

    async fn connect_inner(opts: ConnectOptions) -> Result<Session> {
        let events = Arc::new(EventBus::new(opts.on_event.clone()));
        if opts.vpn.is_some() {
            // Fail before anything exists in the cluster, and put back what a crashed
            // session left before anything reads the system DNS settings.
            check_capability()?;
            recover_left_overs(&events);
        }
        let cluster = Cluster::connect(&opts).await?;
        leftovers::sweep(&cluster, &events).await;
        let id = session_id();
        let name = format!("kt-shadow-{id}");
        let image = opts.image();
        let keys = SessionKeys::generate(&id)?;
        let mut objects = Objects {
            session: id.clone(),
            pod: name.clone(),
            secret: name.clone(),
            pod_created: false,
            secret_created: false,
        };
        events.emit(Event::Creating {
            namespace: cluster.namespace.clone(),
            pod: name.clone(),
            image: image.clone(),
        });
        let spec = ShadowSpec {
            session: &id,
            name: &name,
            image: &image,
            opts: &opts,
        };
        let started = start(&cluster, &opts, &spec, &keys, &mut objects, &events).await;
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                if objects.pod_created || objects.secret_created {
                    let cleanup = objects.delete(&cluster, opts.close_timeout).await;
                    if let Err(c) = cleanup {
                        tracing::warn!(target: "kt", "after a failed connect: {c}");
                    }
                }
                return Err(e);
            }
        };
        let session = match Session::finish(
            cluster.clone(),
            objects.clone(),
            &opts,
            started,
            Arc::clone(&events),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                let _ = objects.delete(&cluster, opts.close_timeout).await;
                return Err(e);
            }
        };
        Ok(session)
    }

    /// Picks the DNS server, binds the proxies and starts the background tasks.
    async fn finish(
        cluster: Cluster,
        objects: Objects,
        opts: &ConnectOptions,
        started: Started,
        events: Arc<EventBus>,
    ) -> Result<Session> {
        let Started { tunnel, dns_ip } = started;
        let tasks = Tasks::new();
        let dns_server = match dns_ip {
            Some(ip) => ip.to_string(),
            None => fallback_dns_server(&tunnel, &opts.cluster_domain, opts.dns_timeout).await,
        };
        tracing::debug!(target: "kt", "cluster DNS server: {dns_server}");
        let resolver = Arc::new(Resolver::new(
            Arc::clone(&tunnel),
            dns_server,
            SearchList::for_namespace(&cluster.namespace, &opts.cluster_domain),
            opts.dns_timeout,
        ));
        let dialer = Dialer {
            tunnel: Arc::clone(&tunnel),
            resolver,
        };
        let socks_listener =
            bind(SocketAddr::from((Ipv4Addr::LOCALHOST, opts.socks5_port))).await?;
        let http_listener = bind(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            opts.http_proxy_port,
        )))
        .await?;
        let socks5 = local_addr(&socks_listener)?;
        let http_proxy = local_addr(&http_listener)?;

        tasks.spawn(Arc::clone(&tunnel).supervise(tasks.cancel.clone(), Arc::clone(&events)));
        tasks.spawn(heartbeat::run(
            cluster.clone(),
            objects.pod.clone(),
            opts.heartbeat_interval,
            tasks.cancel.clone(),
            Arc::clone(&events),
        ));
        {
            let dialer = dialer.clone();
            tasks.spawn(accept_loop(socks_listener, tasks.clone(), move |s| {
                socks::handle(s, dialer.clone())
            }));
        }
        {
            let dialer = dialer.clone();
            let inner_tasks = tasks.clone();
            tasks.spawn(accept_loop(http_listener, tasks.clone(), move |s| {
                http::handle(s, dialer.clone(), inner_tasks.clone())
            }));
        }
        events.emit(Event::TunnelUp { socks5, http_proxy });
        let vpn = match &opts.vpn {
            None => None,
            Some(vpn_opts) => {
                let cx = VpnContext {
                    cluster: &cluster,
                    session: &objects.session,
                    cluster_domain: &opts.cluster_domain,
                    dialer: &dialer,
                    tasks: &tasks,
                    events: &events,
                };
                match Box::pin(VpnState::start(vpn_opts, cx)).await {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tasks.cancel.cancel();
                        tunnel.close().await;
                        return Err(e);
                    }
                }
            }
        };
        Ok(Session {
            inner: Arc::new(Inner {
                id: objects.session.clone(),
                cluster,
                objects,
                tunnel,
                dialer,
                socks5,
                http_proxy,
                tasks,
                events,
                cluster_domain: opts.cluster_domain.clone(),
                flavour: opts.flavour,
                close_timeout: opts.close_timeout,
                vpn,
                closing: AtomicBool::new(false),
                close_done: tokio::sync::Mutex::new(false),
            }),
        })
    }

    /// The session id (the `kt.dev/session` label on its objects).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The namespace the session works in.
    pub fn namespace(&self) -> &str {
        &self.inner.cluster.namespace
    }

    /// The shadow pod's name.
    pub fn pod_name(&self) -> &str {
        &self.inner.objects.pod
    }

    /// The local SOCKS5 proxy (no authentication, `CONNECT`, names resolved in the
    /// cluster: use it as `socks5h://`).
    pub fn socks5_addr(&self) -> SocketAddr {
        self.inner.socks5
    }

    /// The local HTTP proxy (`CONNECT` and plain absolute-form requests).
    pub fn http_proxy_addr(&self) -> SocketAddr {
        self.inner.http_proxy
    }

    /// VPN mode's device, routes and DNS ([`None`] in proxy mode).
    pub fn vpn(&self) -> Option<&VpnInfo> {
        self.inner.vpn.as_ref().map(|v| &v.info)
    }

    /// VPN mode's local DNS server (cluster names through the tunnel, the rest to the
    /// previous upstream); [`None`] in proxy mode.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.vpn().and_then(|v| v.dns_addr)
    }

    /// The cluster DNS server the session queries (as the shadow reaches it).
    pub fn dns_server(&self) -> &str {
        self.inner.dialer.resolver.server()
    }

    /// Environment variables that send a child process's traffic through the session:
    /// `HTTP_PROXY`/`HTTPS_PROXY` (and lower case) to the HTTP proxy,
    /// `ALL_PROXY` to the SOCKS5 proxy (`socks5h://`), `NO_PROXY` for loopback, and
    /// `NODE_USE_ENV_PROXY=1` so Node.js's built-in `fetch` honours them.
    pub fn env(&self) -> BTreeMap<String, String> {
        let http = format!("http://{}", self.inner.http_proxy);
        let socks = format!("socks5h://{}", self.inner.socks5);
        let no_proxy = "localhost,127.0.0.1,::1".to_owned();
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("HTTP_PROXY", &http),
            ("HTTPS_PROXY", &http),
            ("ALL_PROXY", &socks),
            ("NO_PROXY", &no_proxy),
        ] {
            env.insert(k.to_owned(), v.clone());
            env.insert(k.to_ascii_lowercase(), v.clone());
        }
        env.insert("NODE_USE_ENV_PROXY".to_owned(), "1".to_owned());
        env
    }

    /// Every event since the session started, then new ones, ending after
    /// [`Event::Closed`].
    pub fn events(&self) -> Events {
        self.inner.events.subscribe()
    }

    /// The addresses of `name` in the cluster, with the search list of a pod in the
    /// session's namespace: `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`,
    /// pod DNS names (`10-244-0-5.ns.pod.cluster.local`), anything CoreDNS answers.
    ///
    /// # Errors
    ///
    /// [`Error::NameNotFound`] (with every name tried), [`Error::Dns`], or a tunnel error.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>> {
        self.check_open()?;
        self.inner.dialer.resolver.resolve(name).await
    }

    /// The addresses of the first of `candidates` (absolute names) the cluster knows,
    /// over one DNS connection: the local DNS server's search-list lookups.
    pub(crate) async fn resolve_first(&self, candidates: &[String]) -> Result<Vec<IpAddr>> {
        self.check_open()?;
        self.inner.dialer.resolver.resolve_first(candidates).await
    }

    /// Listens on 127.0.0.1 (a free port) and tunnels every connection to `target`'s
    /// `port` in the cluster, like `kubectl port-forward` but through the session and for
    /// any number of connections. `target` is parsed as a [`Target`]: a Service name
    /// (`web`, `web.other-ns`, `svc/web`), `pod/name` or an IP address. For a Service,
    /// `port` is the Service port. The forward lives until the session closes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTarget`], [`Error::TargetNotFound`], [`Error::NameNotFound`], or
    /// [`Error::Bind`].
    pub async fn forward(&self, target: &str, port: u16) -> Result<SocketAddr> {
        self.forward_target(target.parse()?, port).await
    }

    /// [`Session::forward`] with an already parsed target.
    ///
    /// # Errors
    ///
    /// As [`Session::forward`].
    pub async fn forward_target(&self, target: Target, port: u16) -> Result<SocketAddr> {
        self.check_open()?;
        let dest = self.destination(&target).await?;
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = local_addr(&listener)?;
        let dialer = self.inner.dialer.clone();
        tracing::info!(target: "kt", "forwarding {addr} to {target} port {port}");
        self.inner
            .tasks
            .spawn(accept_loop(listener, self.inner.tasks.clone(), move |s| {
                forward::handle(s, dialer.clone(), dest.clone(), port)
            }));
        Ok(addr)
    }

    /// Like [`Session::forward`] for UDP: binds a UDP socket on 127.0.0.1 (a free port)
    /// and relays the datagrams it receives to `target`'s UDP `port` in the cluster, and
    /// the replies back to their sender. Each local sender (source address and port)
    /// gets a flow of its own — one `direct-udp@kt.dev` channel through the shadow — so
    /// replies go to the right sender; datagram boundaries are kept both ways (up to
    /// 65 507 bytes each), and a flow with no datagram either way for 60 s is closed
    /// (the next datagram opens a new one). As with any UDP path, a datagram may be
    /// lost. `target` is parsed as for [`Session::forward`]. The forward lives until
    /// the session closes.
    ///
    /// Only the [`ShadowFlavour::KtShadow`] shadow relays UDP.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] with the [`ShadowFlavour::OpenSsh`] shadow ("UDP needs the
    /// kt-shadow agent; the OpenSSH shadow only carries TCP"), and the errors of
    /// [`Session::forward`].
    pub async fn forward_udp(&self, target: &str, port: u16) -> Result<SocketAddr> {
        self.check_open()?;
        udp::check_supported(self.inner.flavour)?;
        let dest = self.destination(&target.parse()?).await?;
        let addr = udp::forward(self.inner.dialer.clone(), &self.inner.tasks, dest, port).await?;
        tracing::info!(target: "kt", "forwarding UDP {addr} to {target} port {port}");
        Ok(addr)
    }

    /// One UDP flow to `target`'s UDP `port` in the cluster, as a [`DatagramChannel`]
    /// with `send`/`recv` of whole datagrams, for callers that want no local socket.
    /// `target` is parsed as for [`Session::forward`]. The flow ends when the channel is
    /// dropped, the session closes, or after 60 s with no datagram either way.
    ///
    /// Only the [`ShadowFlavour::KtShadow`] shadow relays UDP.
    ///
    /// # Errors
    ///
    /// As [`Session::forward_udp`], and [`Error::Connect`] when the shadow cannot open a
    /// UDP socket to the target.
    pub async fn udp_channel(&self, target: &str, port: u16) -> Result<DatagramChannel> {
        self.check_open()?;
        udp::check_supported(self.inner.flavour)?;
        let dest = self.destination(&target.parse()?).await?;
        DatagramChannel::open(&self.inner.dialer, &self.inner.tasks, &dest, target, port).await
    }

    /// Where a forward to `target` goes, looked up in the API (Service, pod) and, for a
    /// name, checked in the cluster DNS now rather than at the first connection.
    async fn destination(&self, target: &Target) -> Result<Destination> {
        let dest = target
            .destination(&self.inner.cluster, &self.inner.cluster_domain)
            .await?;
        if let Destination::Name(name) = &dest {
            self.inner.dialer.resolver.resolve(name).await?;
        }
        Ok(dest)
    }

    /// Removes every object the session created and waits until the API server no
    /// longer has them, ends the tunnel and every task. Calling it again does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Cleanup`] naming what could not be removed (and how to remove it).
    pub async fn close(&self) -> Result<()> {
        let mut done = self.inner.close_done.lock().await;
        if *done {
            return Ok(());
        }
        self.inner.closing.store(true, Ordering::SeqCst);
        let inner = &self.inner;
        inner.events.emit(Event::Closing);
        if let Some(vpn) = &inner.vpn {
            vpn.stop().await;
        }
        inner.tasks.cancel.cancel();
        inner.tunnel.close().await;
        let deleted = inner
            .objects
            .delete(&inner.cluster, inner.close_timeout)
            .await;
        inner.tasks.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), inner.tasks.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(target: "kt", "some session tasks did not end within 10 s");
        }
        *done = true;
        inner.events.emit(Event::Closed);
        deleted
    }

    /// Drops the tunnel's current port-forward and SSH session as a network failure
    /// would, so that tests can watch the session reconnect.
    #[doc(hidden)]
    pub fn simulate_tunnel_drop(&self) {
        self.inner.tunnel.break_link();
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closing.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.inner.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        // System DNS first and synchronously: it must not wait for a runtime.
        if let Some(vpn) = &self.inner.vpn {
            vpn.restore_dns();
        }
        self.inner.tasks.cancel.cancel();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                target: "kt",
                "session {} dropped without close() outside a tokio runtime: its pod and \
                 Secret stay until `kubectl delete pod,secret -n {} -l kt.dev/session={}`",
                self.inner.id, self.inner.cluster.namespace, self.inner.id
            );
            return;
        };
        let inner = Arc::clone(&self.inner);
        runtime.spawn(async move {
            if let Some(vpn) = &inner.vpn {
                vpn.stop().await;
            }
            inner.tunnel.close().await;
            if let Err(e) = inner
                .objects
                .delete(&inner.cluster, inner.close_timeout)
                .await
            {
                tracing::warn!(target: "kt", "session dropped without close(): {e}");
            }
        });
    }
}

impl ClusterResolver for Session {
    /// [`Session::resolve`](Session::resolve): the cluster DNS through the
    /// tunnel with the search list of a pod in the session's namespace.
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>> {
        Session::resolve(self, name).await
    }

    /// All candidates over one DNS connection through the tunnel.
    async fn resolve_first(&self, candidates: &[String]) -> Result<Vec<IpAddr>> {
        Session::resolve_first(self, candidates).await
    }
}

/// Creates the objects, waits for the pod and brings the first link up.
async fn start(
    cluster: &Cluster,
    opts: &ConnectOptions,
    spec: &ShadowSpec<'_>,
    keys: &SessionKeys,
    objects: &mut Objects,
    events: &EventBus,
) -> Result<Started> {
    let deadline = tokio::time::Instant::now() + opts.pod_ready_timeout;
    let pp = PostParams::default();
    cluster
        .secrets()
        .create(&pp, &spec.secret(keys)?)
        .await
        .map_err(|e| cluster.error(e, "create", "secrets", "(the shadow's keys)"))?;
    objects.secret_created = true;
    let pod = cluster
        .pods()
        .create(&pp, &spec.pod())
        .await
        .map_err(|e| cluster.error(e, "create", "pods", "(the shadow pod)"))?;
    objects.pod_created = true;
    if let Some(owner) = ShadowSpec::owner_reference(&pod) {
        let patch = serde_json::json!({ "metadata": { "ownerReferences": [owner] } });
        cluster
            .secrets()
            .patch(spec.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                cluster.error(e, "patch", "secrets", "(owner reference to the shadow pod)")
            })?;
    }
    let (ready, dns_ip) = tokio::join!(
        wait::pod_ready(
            cluster,
            spec.name,
            spec.image,
            opts.pod_ready_timeout,
            events
        ),
        discover_dns(cluster, opts),
    );
    ready?;
    let cfg = TransportConfig {
        pods: cluster.pods(),
        server: cluster.server.clone(),
        namespace: cluster.namespace.clone(),
        pod: spec.name.to_owned(),
        port: opts.ssh_port,
        user: opts.flavour.user().to_owned(),
        key: Arc::clone(&keys.client),
        host_key: keys.host_public(),
        attempt_timeout: opts.port_forward_timeout,
        open_timeout: opts.connect_timeout,
        reconnect_timeout: opts.reconnect_timeout,
    };
    let link = first_link(&cfg, deadline).await?;
    Ok(Started {
        tunnel: Tunnel::new(cfg, link),
        dns_ip,
    })
}

/// The first link, retried while the SSH server is not answering yet (sshd has no
/// readiness probe) until `deadline`.
async fn first_link(cfg: &TransportConfig, deadline: tokio::time::Instant) -> Result<Link> {
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt = tokio::time::timeout(cfg.attempt_timeout, Link::establish(cfg)).await;
        let err = match attempt {
            Ok(Ok(link)) => return Ok(link),
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
        let retry = match &err {
            Error::Ssh { reason, .. } => {
                !reason.contains("host key") && !reason.contains("refused the session key")
            }
            Error::PortForward { .. } | Error::ApiUnreachable { .. } => true,
            _ => false,
        };
        if !retry || tokio::time::Instant::now() + delay >= deadline {
            return Err(err);
        }
        tracing::debug!(target: "kt", "SSH to the shadow not up yet: {err}");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// The ClusterIP of `kube-system/kube-dns` (or the configured server); `None` when it
/// cannot be read (namespace-scoped permissions).
async fn discover_dns(cluster: &Cluster, opts: &ConnectOptions) -> Option<IpAddr> {
    if let Some(ip) = opts.dns_server {
        return Some(ip);
    }
    let api: Api<Service> = cluster.services_in("kube-system");
    match api.get_opt("kube-dns").await {
        Ok(Some(svc)) => svc
            .spec
            .and_then(|s| s.cluster_ip)
            .and_then(|ip| ip.parse().ok()),
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(target: "kt", "cannot read kube-system/kube-dns: {e}");
            None
        }
    }
}

/// When the API would not tell: the shadow's own resolver knows
/// `kube-dns.kube-system`, so ask the server found by that name for its own address
/// (then later lookups need no name resolution in the shadow); failing that, the usual
/// address.
async fn fallback_dns_server(
    tunnel: &Arc<Tunnel>,
    cluster_domain: &str,
    timeout: Duration,
) -> String {
    let name = format!("kube-dns.kube-system.svc.{cluster_domain}");
    let probe = Resolver::new(
        Arc::clone(tunnel),
        name.clone(),
        SearchList::for_namespace("kube-system", cluster_domain),
        timeout,
    );
    match probe.resolve(&format!("{name}.")).await {
        Ok(ips) => ips.first().map_or(name, ToString::to_string),
        Err(e) => {
            tracing::debug!(target: "kt", "shadow cannot reach the DNS server {name}: {e}");
            FALLBACK_DNS_SERVER.to_string()
        }
    }
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Bind {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        source,
    })
}

/// 8 characters of `[a-z0-9]`: unique enough per namespace, short in pod names.
fn session_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn sessions_and_their_futures_can_move_between_threads() {
        assert_send_sync::<Session>();
        assert_send_sync::<ConnectOptions>();
        assert_send_sync::<Error>();
        let connect = Session::connect(ConnectOptions::new());
        assert_send(&connect);
        drop(connect);
    }

    /// Compiles only if every async method's future is `Send` (never called).
    #[expect(dead_code, reason = "a compile-time check")]
    fn method_futures_are_send(s: &Session) {
        assert_send(&s.close());
        assert_send(&s.resolve("x"));
        assert_send(&s.forward("x", 1));
        assert_send(&s.forward_udp("x", 1));
        assert_send(&s.udp_channel("x", 1));
        assert_send(&s.events().next());
    }

    #[test]
    fn session_ids_are_label_safe_and_distinct() {
        let a = session_id();
        assert_eq!(a.len(), 8);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(a, session_id());
    }
}
