//! [`Session`]: connect options, the connect sequence, the caller API and close.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kt_proto::shadow;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use crate::cluster::spec::{OPENSSH_USER, SessionKeys, ShadowSpec};
use crate::cluster::target::{Destination, Target};
use crate::cluster::{Cluster, Objects, heartbeat, leftovers, wait};
use crate::dns::{Resolver, SearchList};
use crate::error::{Error, Result};
use crate::events::{Callback, Event, EventBus, Events};
use crate::tunnel::transport::{Link, TransportConfig, Tunnel};
use crate::tunnel::udp::{self, DatagramChannel};
use crate::tunnel::{Dialer, Tasks, accept_loop, bind, forward, http, socks};
use crate::vpn::setup::{VpnContext, VpnState, check_capability, recover_left_overs};
use crate::vpn::{VpnInfo, VpnOptions};

/// Environment variable overriding the default shadow image (both flavours).
pub const SHADOW_IMAGE_ENV: &str = "KT_SHADOW_IMAGE";

/// The default image of the [`ShadowFlavour::OpenSsh`] shadow: any image with
/// `/usr/sbin/sshd` works (e.g. `debian` plus the `openssh-server` package); this name
/// is the one the lab (`testbed/`) maps to the machine's sshd.
pub const DEFAULT_OPENSSH_IMAGE: &str = "kt.dev/openssh";

/// The cluster DNS address used when the `kube-dns` Service cannot be read (the
/// kubeadm/kind default).
pub const FALLBACK_DNS_SERVER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// Which SSH server runs in the shadow pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ShadowFlavour {
    /// kt's own agent, `kt-shadow` (built from `kt-shadow/`, image
    /// `kt.dev/kt-shadow:<version>` by default): a small static binary that runs as a
    /// non-root user under the **restricted** Pod Security Standard, with an exec
    /// readiness probe (`kt-shadow probe`), a heartbeat watchdog and a UDP channel.
    #[default]
    KtShadow,
    /// A stock OpenSSH `sshd` (kt-connect's shadow is sshd with `GatewayPorts yes`),
    /// for clusters where only such an image is available. sshd runs as **root**
    /// (`/usr/sbin/sshd -D -e -f /etc/kt/sshd_config`, configuration from the Secret:
    /// loopback only, the session's keys only, TCP forwarding on), so it needs a
    /// namespace that allows root pods (baseline, not restricted), and the image must
    /// have sshd's privilege-separation directory (`/run/sshd` on Debian). No readiness
    /// probe: the client retries the SSH handshake until sshd answers.
    OpenSsh,
}

impl ShadowFlavour {
    /// The SSH user name the client logs in as.
    fn user(self) -> &'static str {
        match self {
            ShadowFlavour::KtShadow => shadow::SSH_USER,
            ShadowFlavour::OpenSsh => OPENSSH_USER,
        }
    }
}

/// How to open a [`Session`]; a builder. Every setting has a default, so
/// `ConnectOptions::new()` connects with the current kubeconfig context and namespace.
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) kubeconfig: Option<PathBuf>,
    pub(crate) context: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) shadow_image: Option<String>,
    pub(crate) flavour: ShadowFlavour,
    pub(crate) shadow_probe_binary: Option<String>,
    pub(crate) sshd_path: String,
    pub(crate) ssh_port: u16,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) image_pull_secrets: Vec<String>,
    pub(crate) node_selector: BTreeMap<String, String>,
    pub(crate) pod_ready_timeout: Duration,
    pub(crate) port_forward_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) shadow_heartbeat_timeout: Option<Duration>,
    pub(crate) reconnect_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) dns_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) cluster_domain: String,
    pub(crate) dns_server: Option<IpAddr>,
    pub(crate) socks5_port: u16,
    pub(crate) http_proxy_port: u16,
    pub(crate) on_event: Option<Callback>,
    pub(crate) vpn: Option<VpnOptions>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            kubeconfig: None,
            context: None,
            namespace: None,
            shadow_image: None,
            flavour: ShadowFlavour::KtShadow,
            shadow_probe_binary: None,
            sshd_path: "/usr/sbin/sshd".to_owned(),
            ssh_port: shadow::SSH_PORT,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            image_pull_secrets: Vec::new(),
            node_selector: BTreeMap::new(),
            pod_ready_timeout: Duration::from_secs(60),
            port_forward_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            shadow_heartbeat_timeout: Some(Duration::from_secs(600)),
            reconnect_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(30),
            dns_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(60),
            cluster_domain: "cluster.local".to_owned(),
            dns_server: None,
            socks5_port: 0,
            http_proxy_port: 0,
            on_event: None,
            vpn: None,
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("kubeconfig", &self.kubeconfig)
            .field("context", &self.context)
            .field("namespace", &self.namespace)
            .field("shadow_image", &self.shadow_image)
            .field("flavour", &self.flavour)
            .field("ssh_port", &self.ssh_port)
            .field("labels", &self.labels)
            .field("annotations", &self.annotations)
            .field("pod_ready_timeout", &self.pod_ready_timeout)
            .field("port_forward_timeout", &self.port_forward_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("reconnect_timeout", &self.reconnect_timeout)
            .field("on_event", &self.on_event.is_some())
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// The defaults: current kubeconfig context and its namespace, the kt-shadow image.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this kubeconfig file instead of the default loading rules (`KUBECONFIG`,
    /// `~/.kube/config`, in-cluster).
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// Use this kubeconfig context instead of the current one.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Work in this namespace (default: the context's namespace, else `default`). The
    /// shadow runs here and short names resolve here.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The shadow image. Default: `$KT_SHADOW_IMAGE` if set, else
    /// `kt.dev/kt-shadow:<version>` ([`ShadowFlavour::KtShadow`]) or
    /// [`DEFAULT_OPENSSH_IMAGE`] ([`ShadowFlavour::OpenSsh`]). On a real cluster, build
    /// `kt-shadow/Dockerfile`, push it to a registry the nodes can pull from, and name it here.
    pub fn shadow_image(mut self, image: impl Into<String>) -> Self {
        self.shadow_image = Some(image.into());
        self
    }

    /// Which SSH server the shadow runs (default [`ShadowFlavour::KtShadow`]).
    pub fn flavour(mut self, flavour: ShadowFlavour) -> Self {
        self.flavour = flavour;
        self
    }

    /// The command the readiness probe runs to find the kt-shadow binary (default
    /// `kt-shadow`, looked up through the container's `PATH`, which the image sets).
    /// Set it for a custom image that keeps the binary off its `PATH`.
    pub fn shadow_probe_binary(mut self, path: impl Into<String>) -> Self {
        self.shadow_probe_binary = Some(path.into());
        self
    }

    /// Path of `sshd` in the [`ShadowFlavour::OpenSsh`] image (default `/usr/sbin/sshd`).
    pub fn sshd_path(mut self, path: impl Into<String>) -> Self {
        self.sshd_path = path.into();
        self
    }

    /// The SSH port in the shadow pod, on its loopback (default 2222).
    pub fn ssh_port(mut self, port: u16) -> Self {
        self.ssh_port = port;
        self
    }

    /// An extra label on every object kt creates (kt's own labels cannot be overridden).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// An extra annotation on every object kt creates.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// An image pull Secret for the shadow pod (for private registries).
    pub fn image_pull_secret(mut self, name: impl Into<String>) -> Self {
        self.image_pull_secrets.push(name.into());
        self
    }

    /// A node selector entry for the shadow pod.
    pub fn node_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }

    /// How long the shadow pod may take to become Ready and answer SSH (default 60 s).
    pub fn pod_ready_timeout(mut self, timeout: Duration) -> Self {
        self.pod_ready_timeout = timeout;
        self
    }

    /// How long one port-forward + SSH handshake + login may take (default 10 s).
    pub fn port_forward_timeout(mut self, timeout: Duration) -> Self {
        self.port_forward_timeout = timeout;
        self
    }

    /// How often the heartbeat annotation on the shadow pod is refreshed (default 30 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(Duration::from_secs(1));
        self
    }

    /// After how long without any connected client kt-shadow exits on its own
    /// (`--heartbeat-timeout`; default 10 min; `None` never). Leftovers of a crashed
    /// client then stop running even before `kt clean` removes them.
    pub fn shadow_heartbeat_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.shadow_heartbeat_timeout = timeout;
        self
    }

    /// How long to keep trying to re-establish a dropped tunnel (default 120 s).
    pub fn reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = timeout;
        self
    }

    /// How long opening one connection into the cluster may take (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one DNS exchange may take (default 5 s).
    pub fn dns_timeout(mut self, timeout: Duration) -> Self {
        self.dns_timeout = timeout;
        self
    }

    /// How long `close()` waits for the objects to be gone (default 60 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The cluster's DNS domain (default `cluster.local`).
    pub fn cluster_domain(mut self, domain: impl Into<String>) -> Self {
        self.cluster_domain = domain.into().trim_matches('.').to_owned();
        self
    }

    /// The cluster DNS server (default: the `kube-dns` Service in `kube-system`, read
    /// from the API; if that is not allowed, `kube-dns.kube-system` as resolved by the
    /// shadow pod; else 10.96.0.10).
    pub fn dns_server(mut self, ip: IpAddr) -> Self {
        self.dns_server = Some(ip);
        self
    }

    /// The local SOCKS5 port (default: any free port on 127.0.0.1).
    pub fn socks5_port(mut self, port: u16) -> Self {
        self.socks5_port = port;
        self
    }

    /// The local HTTP proxy port (default: any free port on 127.0.0.1).
    pub fn http_proxy_port(mut self, port: u16) -> Self {
        self.http_proxy_port = port;
        self
    }

    /// VPN mode: besides the proxies, a tun device routes the cluster's pod and Service
    /// ranges through the tunnel, and cluster names resolve for every program on the
    /// machine (see [`VpnOptions`] and [`crate::DnsMode`]). Needs CAP_NET_ADMIN (root);
    /// without it, [`Session::connect`] fails with [`Error::NeedsCapability`] before
    /// anything is created in the cluster.
    pub fn vpn(mut self, vpn: VpnOptions) -> Self {
        self.vpn = Some(vpn);
        self
    }

    /// Called with every [`Event`] as it happens, from connect on (for progress
    /// displays). Keep it quick: it runs on kt's tasks.
    pub fn on_event(mut self, callback: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(callback));
        self
    }

    /// The image the shadow pod will run.
    pub fn image(&self) -> String {
        if let Some(image) = &self.shadow_image {
            return image.clone();
        }
        if let Some(image) = std::env::var(SHADOW_IMAGE_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            return image;
        }
        match self.flavour {
            ShadowFlavour::KtShadow => format!("{}:{}", shadow::IMAGE, kt_proto::VERSION),
            ShadowFlavour::OpenSsh => DEFAULT_OPENSSH_IMAGE.to_owned(),
        }
    }
}

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

    #[test]
    fn default_images_follow_the_flavour() {
        if std::env::var_os(SHADOW_IMAGE_ENV).is_some() {
            return;
        }
        assert_eq!(
            ConnectOptions::new().image(),
            format!("kt.dev/kt-shadow:{}", kt_proto::VERSION)
        );
        assert_eq!(
            ConnectOptions::new()
                .flavour(ShadowFlavour::OpenSsh)
                .image(),
            "kt.dev/openssh"
        );
        assert_eq!(ConnectOptions::new().shadow_image("x/y:1").image(), "x/y:1");
    }
}
