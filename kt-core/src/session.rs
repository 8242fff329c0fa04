//! [`Session`]: the connect sequence, the caller API and close.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use kt_proto::Role;

use crate::cluster::target::{Destination, Target};
use crate::cluster::{Cluster, leftovers};
use crate::dns::server::ClusterResolver;
use crate::dns::{Resolver, SearchList, discover};
#[allow(unused_imports, reason = "rustdoc links name Error variants")]
use crate::error::Error;
use crate::error::Result;
use crate::events::{Event, EventBus, Events};
use crate::inbound;
use crate::inbound::expose::Expose;
use crate::inbound::mesh::Mesh;
use crate::inbound::swap::Swap;
use crate::options::{
    ConnectOptions, ExposeOptions, MeshOptions, MeshRule, PortMap, ShadowFlavour, SwapOptions,
};
use crate::outbound::auth::ProxyCredentials;
use crate::outbound::proxies::Proxies;
use crate::outbound::udp::{self, DatagramChannel};
use crate::outbound::{Dialer, forward};
use crate::shadow::{PodShape, Shadow, session_id};
use crate::task::{Tasks, Teardown};
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
    shadow: Shadow,
    dialer: Dialer,
    proxies: Proxies,
    /// The proxies', forwards' and VPN's tasks (the shadow has its own).
    tasks: Tasks,
    events: Arc<EventBus>,
    cluster_domain: String,
    flavour: ShadowFlavour,
    vpn: Option<VpnState>,
    teardown: Teardown,
    /// The options it was opened with (inbound handles launch their shadows with them).
    opts: ConnectOptions,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("namespace", &self.inner.cluster.namespace)
            .field("pod", &self.inner.shadow.name)
            .field("socks5", &self.inner.proxies.socks5)
            .field("http_proxy", &self.inner.proxies.http)
            .finish()
    }
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
        // A connect shadow serves no port to the cluster, so it allows no remote forward
        // (but for a test's `allow_remote_forward`).
        let shape = PodShape {
            ports: (opts.remote_forward_ports.iter())
                .map(|port| (String::new(), port.get()))
                .collect(),
            ..PodShape::default()
        };
        let (shadow, dns_ip) = tokio::join!(
            Shadow::launch(&cluster, &opts, &id, Role::ShadowConnect, &shape, &events),
            discover::from_api(&cluster, opts.dns_server),
        );
        let shadow = shadow?;
        let tasks = Tasks::new();
        match Session::finish(&cluster, &shadow, &opts, dns_ip, &tasks, &events).await {
            Ok((dialer, proxies, vpn)) => Ok(Session {
                inner: Arc::new(Inner {
                    id,
                    cluster,
                    shadow,
                    dialer,
                    proxies,
                    tasks,
                    events,
                    cluster_domain: opts.cluster_domain.clone(),
                    flavour: opts.flavour,
                    vpn,
                    teardown: Teardown::new(),
                    opts: opts.clone(),
                }),
            }),
            Err(e) => {
                tasks.cancel.cancel();
                if let Err(c) = shadow.close().await {
                    tracing::warn!(target: "kt", "after a failed connect: {c}");
                }
                Err(e)
            }
        }
    }

    /// Picks the DNS server, starts the proxies and, in VPN mode, the VPN.
    async fn finish(
        cluster: &Cluster,
        shadow: &Shadow,
        opts: &ConnectOptions,
        dns_ip: Option<IpAddr>,
        tasks: &Tasks,
        events: &Arc<EventBus>,
    ) -> Result<(Dialer, Proxies, Option<VpnState>)> {
        let tunnel = &shadow.tunnel;
        let dns_server = match dns_ip {
            Some(ip) => ip.to_string(),
            None => discover::through_shadow(tunnel, &opts.cluster_domain, opts.dns_timeout).await,
        };
        tracing::debug!(target: "kt", "cluster DNS server: {dns_server}");
        let resolver = Arc::new(Resolver::new(
            Arc::clone(tunnel),
            dns_server,
            SearchList::for_namespace(&cluster.namespace, &opts.cluster_domain),
            opts.dns_timeout,
        ));
        let dialer = Dialer {
            tunnel: Arc::clone(tunnel),
            resolver,
        };
        let credentials = opts.proxy_auth.then(ProxyCredentials::generate);
        let proxies = Proxies::start(
            &dialer,
            tasks,
            opts.socks5_port,
            opts.http_proxy_port,
            credentials,
        )
        .await?;
        events.emit(Event::TunnelUp {
            socks5: proxies.socks5,
            http_proxy: proxies.http,
        });
        let vpn = match &opts.vpn {
            None => None,
            Some(vpn_opts) => {
                let cx = VpnContext {
                    cluster,
                    session: &shadow.session,
                    cluster_domain: &opts.cluster_domain,
                    dialer: &dialer,
                    tasks,
                    events,
                };
                Some(Box::pin(VpnState::start(vpn_opts, cx)).await?)
            }
        };
        Ok((dialer, proxies, vpn))
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
        &self.inner.shadow.name
    }

    /// The local SOCKS5 proxy (`CONNECT`, names resolved in the cluster: use it as
    /// `socks5h://`). It needs no authentication unless
    /// [`ConnectOptions::proxy_auth`] is set; then use [`Session::socks5_url`], which
    /// carries the credentials.
    pub fn socks5_addr(&self) -> SocketAddr {
        self.inner.proxies.socks5
    }

    /// The local HTTP proxy (`CONNECT` and plain absolute-form requests). It needs no
    /// authentication unless [`ConnectOptions::proxy_auth`] is set; then use
    /// [`Session::http_proxy_url`], which carries the credentials.
    pub fn http_proxy_addr(&self) -> SocketAddr {
        self.inner.proxies.http
    }

    /// The SOCKS5 proxy as a URL with names resolved in the cluster:
    /// `socks5h://127.0.0.1:<port>`, or `socks5h://<user>:<password>@127.0.0.1:<port>`
    /// with [`ConnectOptions::proxy_auth`] (the value of `ALL_PROXY` in
    /// [`Session::env`]). Treat it as a secret then.
    pub fn socks5_url(&self) -> String {
        self.inner.proxies.socks5_url()
    }

    /// The HTTP proxy as a URL: `http://127.0.0.1:<port>`, or
    /// `http://<user>:<password>@127.0.0.1:<port>` with [`ConnectOptions::proxy_auth`]
    /// (the value of `HTTP_PROXY` and `HTTPS_PROXY` in [`Session::env`]). Treat it as a
    /// secret then.
    pub fn http_proxy_url(&self) -> String {
        self.inner.proxies.http_url()
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
    /// `NODE_USE_ENV_PROXY=1` so Node.js's built-in `fetch` honours them. With
    /// [`ConnectOptions::proxy_auth`], the proxy URLs carry the session's credentials
    /// (`http://<user>:<password>@127.0.0.1:<port>`), which clients such as curl,
    /// Python's `requests` and Node's `fetch` send by themselves.
    pub fn env(&self) -> BTreeMap<String, String> {
        self.inner.proxies.env()
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
        let addr = forward::start(&self.inner.dialer, &self.inner.tasks, dest, port).await?;
        tracing::info!(target: "kt", "forwarding {addr} to {target} port {port}");
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

    async fn destination(&self, target: &Target) -> Result<Destination> {
        let inner = &self.inner;
        (inner.dialer)
            .destination(&inner.cluster, target, &inner.cluster_domain)
            .await
    }

    /// Removes every object the session created and waits until the API server no
    /// longer has them, ends the tunnel and every task. Calling it again does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Cleanup`] naming what could not be removed (and how to remove it).
    pub async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        inner
            .teardown
            .close_reporting(&inner.events, inner.shut_down())
            .await
    }

    /// Takes over the traffic of `target` in the cluster: connections to its ports
    /// arrive at local ports on this machine, until the returned [`Swap`] is closed
    /// (or dropped, or this process dies: then the swap shadow's watchdog restores the
    /// cluster within the restore TTL). Selector mode with the defaults of
    /// [`SwapOptions`]; see [`Session::swap_with`].
    ///
    /// `target` is `deploy/NAME`, `sts/NAME`, `svc/NAME` or a bare name (a Service of
    /// that name, else a Deployment, else a StatefulSet). Each [`PortMap`]'s remote
    /// port may be a Service port, a container port or a port name of the target.
    ///
    /// ```no_run
    /// # async fn demo(session: &kt_core::Session) -> Result<(), kt_core::Error> {
    /// use kt_core::PortMap;
    /// // Pods calling the `web` Service now reach 127.0.0.1:8080 here.
    /// let swap = session.swap("deploy/web", &PortMap::parse_list(["8080:80"])?).await?;
    /// // ... run the local process, send requests in the cluster ...
    /// swap.close().await?; // the Service's selector is as it was
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Nothing in the cluster changes when: the target or a port does not exist
    /// ([`Error::TargetNotFound`], [`Error::InvalidArgument`]), nothing listens on a
    /// local port ([`Error::NotListening`]), another live kt session holds the target
    /// ([`Error::TargetHeld`], naming it), or RBAC refuses a call ([`Error::Forbidden`]).
    pub async fn swap(&self, target: &str, ports: &[PortMap]) -> Result<Swap> {
        self.swap_with(target, ports, SwapOptions::new()).await
    }

    /// [`Session::swap`] with options: the mode (selector or scale), the restore TTL,
    /// the local-port check, an event callback.
    pub async fn swap_with(
        &self,
        target: &str,
        ports: &[PortMap],
        opts: SwapOptions,
    ) -> Result<Swap> {
        self.check_open()?;
        let inner = &self.inner;
        Box::pin(Swap::start(
            &inner.cluster,
            &inner.opts,
            &inner.shadow.name,
            target,
            ports,
            opts,
        ))
        .await
    }

    /// Publishes local ports as a new Service `name` in the session's namespace (a
    /// ClusterIP Service by default): pods connecting to `name:remote` reach
    /// `127.0.0.1:local` here, until the returned [`Expose`] is closed.
    ///
    /// ```no_run
    /// # async fn demo(session: &kt_core::Session) -> Result<(), kt_core::Error> {
    /// let preview = session.expose("my-preview", &kt_core::PortMap::parse_list(["3000:80"])?).await?;
    /// // pods reach http://my-preview/ (port 80) -> 127.0.0.1:3000
    /// preview.close().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// An existing Service of that name is refused ([`Error::TargetHeld`]); nothing
    /// listening locally: [`Error::NotListening`].
    pub async fn expose(&self, name: &str, ports: &[PortMap]) -> Result<Expose> {
        self.expose_with(name, ports, ExposeOptions::new()).await
    }

    /// [`Session::expose`] with options: the Service type, the local-port check, an
    /// event callback.
    pub async fn expose_with(
        &self,
        name: &str,
        ports: &[PortMap],
        opts: ExposeOptions,
    ) -> Result<Expose> {
        self.check_open()?;
        let inner = &self.inner;
        Box::pin(Expose::start(
            &inner.cluster,
            &inner.opts,
            &inner.shadow.name,
            name,
            ports,
            opts,
        ))
        .await
    }

    /// Meshes `target` (a Service, `svc/NAME`, or a workload with one Service): requests
    /// to it that match `rule` arrive at local ports here, every other request goes to
    /// its original pods, so the rest of the team keeps using it. `None` makes
    /// kt-connect's mark, header `version` with a random value ([`Mesh::header`] says
    /// what to send). Several developers mesh one Service at once, each with their own
    /// rule; the Service is put back when the last one leaves.
    ///
    /// Routing is per HTTP request (HTTP/1.1, h2c, gRPC, WebSocket by the upgrade
    /// request); TLS and other protocols on the Service's ports pass through to the
    /// original pods unrouted.
    ///
    /// ```no_run
    /// # async fn demo(session: &kt_core::Session) -> Result<(), kt_core::Error> {
    /// let ports = kt_core::PortMap::parse_list(["8080:80"])?;
    /// let mesh = session.mesh("svc/web", None, &ports).await?;
    /// let (name, value) = mesh.header().unwrap_or_default();
    /// println!("send `{name}: {value}` to reach 127.0.0.1:8080");
    /// mesh.close().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Session::swap`]; also [`Error::TargetHeld`] when another developer routes
    /// the same header value, or a swap holds the Service.
    pub async fn mesh(
        &self,
        target: &str,
        rule: Option<MeshRule>,
        ports: &[PortMap],
    ) -> Result<Mesh> {
        self.mesh_with(target, rule, ports, MeshOptions::new())
            .await
    }

    /// [`Session::mesh`] with options: the restore TTL, the local-port check, an event
    /// callback.
    pub async fn mesh_with(
        &self,
        target: &str,
        rule: Option<MeshRule>,
        ports: &[PortMap],
        opts: MeshOptions,
    ) -> Result<Mesh> {
        self.check_open()?;
        let inner = &self.inner;
        Box::pin(Mesh::start(
            &inner.cluster,
            &inner.opts,
            &inner.shadow.name,
            target,
            rule,
            ports,
            opts,
        ))
        .await
    }

    /// Connections to `port` of the shadow pod arrive at `local` on this machine,
    /// through an SSH remote forward that survives reconnects; returns the port the
    /// shadow listens on. The inbound operations build on this. The shadow listens only
    /// on the ports its role allows (none for a connect session, unless allowed with
    /// `ConnectOptions::allow_remote_forward`); any other port fails with
    /// [`Error::Unsupported`].
    #[doc(hidden)]
    pub async fn remote_forward(&self, port: u16, local: SocketAddr) -> Result<u16> {
        self.check_open()?;
        let forward = self
            .inner
            .shadow
            .tunnel
            .remote_forward("0.0.0.0", port)
            .await?;
        let bound = u16::try_from(forward.port).unwrap_or(port);
        self.inner.tasks.spawn(inbound::serve(
            forward,
            local,
            self.inner.tasks.clone(),
            Arc::new(std::sync::atomic::AtomicU64::new(0)),
            Arc::clone(&self.inner.events),
        ));
        Ok(bound)
    }

    /// Drops the tunnel's current port-forward and SSH session as a network failure
    /// would, so that tests can watch the session reconnect.
    #[doc(hidden)]
    pub fn simulate_tunnel_drop(&self) {
        self.inner.shadow.break_link();
    }

    /// Stops renewing the session's Lease while the tunnel stays up, as a client that
    /// froze would, so that tests can watch the shadow's watchdog and the leftover
    /// sweep of other sessions act on an expired Lease.
    #[doc(hidden)]
    pub fn stop_lease_renewal(&self) {
        self.inner.shadow.stop_lease_renewal();
    }

    fn check_open(&self) -> Result<()> {
        self.inner.teardown.check_open()
    }
}

impl Inner {
    /// Everything `close` and a dropped session's background clean-up do.
    async fn shut_down(&self) -> Result<()> {
        if let Some(vpn) = &self.vpn {
            vpn.stop().await;
        }
        self.tasks.cancel.cancel();
        let removed = self.shadow.close().await;
        self.tasks.close().await;
        removed
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let inner = Arc::clone(&self.inner);
        let now = || {
            // System DNS first and synchronously: it must not wait for a runtime.
            if let Some(vpn) = &self.inner.vpn {
                vpn.restore_dns();
            }
            self.inner.tasks.cancel.cancel();
            self.inner.shadow.stop_tasks();
        };
        let later = async move {
            if let Err(e) = inner.shut_down().await {
                tracing::warn!(target: "kt", "session dropped without close(): {e}");
            }
        };
        let leftover = || {
            format!(
                "session {} dropped without close() outside a tokio runtime: its pod and \
                 Secret stay until `kubectl delete pod,secret -n {} -l kt.dev/session={}`",
                self.inner.id, self.inner.cluster.namespace, self.inner.id
            )
        };
        self.inner.teardown.on_drop(now, later, leftover);
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
