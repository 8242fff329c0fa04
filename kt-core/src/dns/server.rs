//! A local DNS server for system DNS (VPN mode): it answers `A`/`AAAA` queries for
//! cluster names through a [`ClusterResolver`] (a [`Session`](crate::Session) in
//! production) and forwards every other query, unchanged, to the upstream server the
//! machine used before (the previous `nameserver` of resolv.conf).
//!
//! Which names are cluster names (every process on the machine asks this server, so
//! a name that is not the cluster's must neither be answered by the cluster nor sent
//! to it):
//!
//! - names in the cluster domain (`*.cluster.local`): asked as they are; answered by
//!   the cluster only (a name the cluster does not know gets `NXDOMAIN`);
//! - single-label names (`web`): their search-list expansions
//!   (`web.dev.svc.cluster.local.`, `web.svc.cluster.local.`, `web.cluster.local.`), as
//!   in a pod; when the cluster knows none, the query goes to the upstream (so a LAN
//!   host name still resolves);
//! - `svc.ns` names, exactly two labels (`web.dev`), and their `svc.ns.svc` form
//!   (`web.dev.svc`): the upstream first. Only when it has no answer for the name —
//!   `NXDOMAIN`, or `REFUSED` (a resolver serving only its own zones) — is the cluster
//!   asked, for the Service `<svc>.<ns>.svc.<domain>.` alone; when the cluster does not
//!   know it either, the upstream's answer stands. So a real public name (`web.dev`) is
//!   never shadowed by a Service `web` in namespace `dev`. A `NOERROR` answer without
//!   records (the name exists upstream with other record types), `SERVFAIL` or no
//!   answer at all never falls back to the cluster: the first means the name is the
//!   upstream's, the others could change from query to query;
//! - everything else (`www.example.com`, `a.b.c`), and every other record type or
//!   opcode, goes to the upstream only; the cluster never sees it.
//!
//! Only search domains inside the cluster domain are used for the expansions. The
//! proxy-mode resolver ([`Session::resolve`](crate::Session::resolve), SOCKS5/HTTP
//! remote names) is not this server: it keeps a pod's semantics.
//! The server is hickory-server's [`Server`] (one UDP socket and one TCP listener on the
//! same address; a packet shorter than a header is dropped, an undecodable one gets
//! `FORMERR`, a response is dropped), with a [`RequestHandler`] that routes as above.
//! What it costs against the hand-rolled server it replaced, all for lack of a feature
//! in hickory-server:
//!
//! - an upstream answer is decoded and encoded again rather than relayed byte for byte
//!   (hickory-server's [`ResponseHandler`] only sends a message it encodes): record
//!   order and EDNS are kept, but a TSIG/SIG(0) signature is dropped, an upstream
//!   answer that does not decode becomes `SERVFAIL`, and over UDP an answer larger than
//!   the client's EDNS size (512 bytes without EDNS) is truncated with `TC` set (the
//!   client then asks over TCP) instead of being sent as it came;
//! - [`DnsServerConfig::max_in_flight`] bounds the queries being answered, but waiting
//!   UDP queries are tasks in memory rather than packets in the socket buffer, and TCP
//!   connections are not limited (hickory-server has no limit; the listener is local).
//!
//! Who may ask: only the sources of [`DnsServerConfig::allowed_sources`] (loopback by
//! default; VPN mode adds the tun device's own address, from which systemd-resolved's
//! queries to a server on the tun link come, and the listen address). A query from any
//! other address — a neighbour on another interface of the machine, a container bridge,
//! anyone routing to the tun address — is dropped without an answer, counted
//! ([`DnsServer::dropped`]) and logged at debug level once per source. Every allowed
//! source is an address of this machine, so an answer never leaves it (the kernel drops
//! a packet that arrives from outside with one of the machine's own addresses as its
//! source, unless `accept_local` is set). The check is made on each decoded query, so,
//! for lack of a hook before hickory-server decodes a message: a malformed message gets
//! `FORMERR` (its own header echoed, nothing else) whatever its source, and a TCP
//! connection from a source not allowed is accepted and stays open until idle, its
//! queries unanswered.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::{
    Header, HeaderCounts, LowerQuery, Message, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::NetError;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use ipnet::IpNet;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::dns::SearchList;
use crate::error::{Error, Result};

/// Resolves cluster names for the [`DnsServer`].
///
/// [`Error::NameNotFound`] means "the cluster does not know this name" (`NXDOMAIN`
/// for cluster-domain names, the upstream's answer for other names); any other error
/// is a failure (`SERVFAIL` for cluster-domain names, the upstream's answer for
/// others).
pub trait ClusterResolver: Send + Sync + 'static {
    /// The addresses of `name` (lower case), IPv4 and IPv6 mixed. The server only asks
    /// absolute names (with a trailing dot: no search list), through
    /// [`ClusterResolver::resolve_first`].
    fn resolve(&self, name: &str) -> impl Future<Output = Result<Vec<IpAddr>>> + Send;

    /// The addresses of the first of `candidates` (absolute names, in order) that the
    /// cluster knows; [`Error::NameNotFound`] when it knows none. The default asks
    /// [`ClusterResolver::resolve`] for each in turn.
    fn resolve_first(
        &self,
        candidates: &[String],
    ) -> impl Future<Output = Result<Vec<IpAddr>>> + Send {
        async move {
            for candidate in candidates {
                match self.resolve(candidate).await {
                    Ok(ips) if !ips.is_empty() => return Ok(ips),
                    Ok(_) | Err(Error::NameNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(Error::NameNotFound {
                name: candidates
                    .first()
                    .map(|c| c.trim_end_matches('.').to_owned())
                    .unwrap_or_default(),
                tried: candidates.to_vec(),
            })
        }
    }
}

/// Settings of a [`DnsServer`].
#[derive(Debug, Clone)]
pub struct DnsServerConfig {
    /// Where to listen (UDP and TCP), e.g. `127.0.0.53:53`; port 0 picks a free port
    /// that is free for both protocols.
    pub listen: SocketAddr,
    /// The upstream server for every non-cluster query (queried over UDP).
    pub upstream: SocketAddr,
    /// The cluster domain, `cluster.local` by default.
    pub cluster_domain: String,
    /// The search list for short names: a pod's in the session's namespace
    /// (`<ns>.svc.<domain> svc.<domain> <domain>`, see [`DnsServerConfig::namespace`]);
    /// namespace `default` unless set.
    pub search: Vec<String>,
    /// A pod's `ndots` (5). The server no longer uses it: only single-label names are
    /// expanded with the search list (see this module's docs); kept so that
    /// existing configurations still build.
    pub ndots: usize,
    /// TTL of answers made from the cluster (5 s by default: Service IPs change).
    pub ttl: u32,
    /// How long to wait for the upstream before answering `SERVFAIL`.
    pub upstream_timeout: Duration,
    /// Queries answered at the same time (UDP and TCP together); further ones wait.
    pub max_in_flight: usize,
    /// The sources whose queries are answered (an IPv4-mapped IPv6 source counts as
    /// its IPv4 address). A query from any other address gets no answer: it is dropped,
    /// counted in [`DnsServer::dropped`] and logged at debug level once per source.
    /// Loopback only ([`DnsServerConfig::loopback`]) unless set; empty: no source.
    pub allowed_sources: Vec<IpNet>,
}

impl DnsServerConfig {
    /// Defaults: cluster domain `cluster.local`, the search list of namespace
    /// `default`, ndots 5, TTL 5 s, upstream timeout 3 s, 256 queries in flight,
    /// queries answered from loopback sources only.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> DnsServerConfig {
        let search = SearchList::for_namespace("default", "cluster.local");
        DnsServerConfig {
            listen,
            upstream,
            cluster_domain: "cluster.local".to_owned(),
            search: search.domains,
            ndots: search.ndots,
            ttl: 5,
            upstream_timeout: Duration::from_secs(3),
            max_in_flight: 256,
            allowed_sources: DnsServerConfig::loopback(),
        }
    }

    /// The loopback ranges, `127.0.0.0/8` and `::1/128`: the default
    /// [`DnsServerConfig::allowed_sources`].
    pub fn loopback() -> Vec<IpNet> {
        vec![
            IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        ]
    }

    /// Whether a query from `source` is answered.
    fn allows(&self, source: IpAddr) -> bool {
        let source = source.to_canonical();
        self.allowed_sources.iter().any(|net| net.contains(&source))
    }

    /// Sets [`DnsServerConfig::search`] to the search list of a pod in `namespace`
    /// (with the current [`DnsServerConfig::cluster_domain`]).
    pub fn namespace(mut self, namespace: &str) -> DnsServerConfig {
        self.search =
            SearchList::for_namespace(namespace, self.cluster_domain.trim_end_matches('.')).domains;
        self
    }
}

/// A running local DNS server; dropping it (or [`DnsServer::shutdown`]) stops it.
pub struct DnsServer {
    addr: SocketAddr,
    tasks: JoinSet<()>,
    dropped: Arc<Dropped>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Sources not allowed that are logged (and counted one by one); queries from further
/// ones are only counted in the total.
const DROPPED_SOURCES_KEPT: usize = 256;

/// The [`RequestHandler`] of the server.
struct Handler<R> {
    config: DnsServerConfig,
    resolver: Arc<R>,
    permits: Semaphore,
    dropped: Arc<Dropped>,
}

/// The queries dropped because their source is not allowed.
#[derive(Default)]
struct Dropped {
    total: AtomicU64,
    sources: Mutex<DroppedSources>,
}

/// Who sent the dropped queries.
#[derive(Default)]
struct DroppedSources {
    /// Queries per source, for the first [`DROPPED_SOURCES_KEPT`] sources.
    counts: HashMap<IpAddr, u64>,
    /// Queries from further sources.
    others: u64,
}

impl Dropped {
    /// Counts a query dropped from `source`; logs the first one of each source (and,
    /// once, that further sources are no longer told apart).
    fn note(&self, source: IpAddr, listen: SocketAddr) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = sources.counts.get_mut(&source) {
            *count += 1;
        } else if sources.counts.len() < DROPPED_SOURCES_KEPT {
            sources.counts.insert(source, 1);
            tracing::debug!(
                target: "kt",
                %source, %listen,
                "local DNS server: dropping queries from {source}, not an allowed source; \
                 further ones from it are counted, not logged"
            );
        } else {
            if sources.others == 0 {
                tracing::debug!(
                    target: "kt",
                    %listen,
                    "local DNS server: queries from more than {DROPPED_SOURCES_KEPT} \
                     sources not allowed; further sources are counted together, not logged"
                );
            }
            sources.others += 1;
        }
    }

    /// Logs what was dropped, per source.
    fn log_summary(&self, listen: SocketAddr) {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return;
        }
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let mut counts: Vec<String> = sources
            .counts
            .iter()
            .map(|(source, count)| format!("{source} ({count})"))
            .collect();
        counts.sort();
        if sources.others > 0 {
            counts.push(format!("further sources ({})", sources.others));
        }
        tracing::debug!(
            target: "kt",
            %listen,
            "local DNS server: dropped {total} queries from sources not allowed: {}",
            counts.join(", ")
        );
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` and starts serving.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when either socket cannot be bound.
    pub async fn start<R: ClusterResolver>(
        config: DnsServerConfig,
        resolver: Arc<R>,
    ) -> Result<DnsServer> {
        let bind_err = |addr, source| Error::Bind { addr, source };
        let mut attempt = 0;
        let (udp, tcp) = loop {
            attempt += 1;
            let udp = UdpSocket::bind(config.listen)
                .await
                .map_err(|e| bind_err(config.listen, e))?;
            let addr = udp.local_addr().map_err(|e| bind_err(config.listen, e))?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp),
                // A port picked for UDP may be taken for TCP: pick another.
                Err(_) if config.listen.port() == 0 && attempt < 16 => continue,
                Err(e) => return Err(bind_err(addr, e)),
            }
        };
        let addr = udp.local_addr().map_err(|e| bind_err(config.listen, e))?;
        // The address bound (the port picked), for the logs.
        let config = DnsServerConfig {
            listen: addr,
            ..config
        };
        let dropped = Arc::new(Dropped::default());
        let mut server = Server::new(Handler {
            permits: Semaphore::new(config.max_in_flight.max(1)),
            config,
            resolver,
            dropped: Arc::clone(&dropped),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
        let mut tasks = JoinSet::new();
        // Dropping the server (when this task is aborted) stops its sockets' tasks.
        tasks.spawn(async move {
            if let Err(e) = server.block_until_done().await {
                tracing::debug!(error = %e, "local DNS server stopped");
            }
        });
        tracing::debug!(%addr, "local DNS server listening");
        Ok(DnsServer {
            addr,
            tasks,
            dropped,
        })
    }

    /// The address the server listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many queries were dropped, unanswered, because their source is not in
    /// [`DnsServerConfig::allowed_sources`].
    pub fn dropped(&self) -> u64 {
        self.dropped.total.load(Ordering::Relaxed)
    }

    /// Stops the server (and logs, at debug level, the queries it dropped by source).
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
        self.dropped.log_summary(self.addr);
    }
}

/// How a name is answered.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Route {
    /// By the cluster only (`NXDOMAIN` when it knows none of these absolute names).
    Cluster(Vec<String>),
    /// By the cluster if it knows one of these absolute names, else by the upstream.
    Search(Vec<String>),
    /// By the upstream; by the cluster (this absolute name) only when the upstream has
    /// no answer for the name.
    UpstreamFirst(String),
    /// By the upstream only.
    Upstream,
}

/// How `name` (lower case, no trailing dot) is answered; see the module docs.
fn route(name: &str, config: &DnsServerConfig) -> Route {
    let domain = config
        .cluster_domain
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let in_domain = |n: &str| n == domain || n.ends_with(&format!(".{domain}"));
    if name.is_empty() {
        return Route::Upstream;
    }
    if in_domain(name) {
        return Route::Cluster(vec![format!("{name}.")]);
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Route::Upstream;
    }
    match labels[..] {
        [_] => Route::Search(
            config
                .search
                .iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .filter(|d| in_domain(d))
                .map(|d| format!("{name}.{d}."))
                .collect(),
        ),
        [svc, ns] | [svc, ns, "svc"] => Route::UpstreamFirst(format!("{svc}.{ns}.svc.{domain}.")),
        _ => Route::Upstream,
    }
}

#[async_trait::async_trait]
impl<R: ClusterResolver> RequestHandler for Handler<R> {
    async fn handle_request<H: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: H,
    ) -> ResponseInfo {
        let source = request.src().ip();
        if !self.config.allows(source) {
            // No answer at all: not even REFUSED, which would say a server is here.
            self.dropped.note(source.to_canonical(), self.config.listen);
            return info(request, ResponseCode::Refused);
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return info(request, ResponseCode::ServFail);
        };
        self.respond(request, &mut response_handle)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "cannot send a DNS answer");
                info(request, ResponseCode::ServFail)
            })
    }
}

impl<R: ClusterResolver> Handler<R> {
    /// Answers `request` from the cluster or the upstream; see the module docs.
    async fn respond<H: ResponseHandler>(
        &self,
        request: &Request,
        response_handle: &mut H,
    ) -> std::result::Result<ResponseInfo, NetError> {
        let (q, name, route) = match request.queries.queries() {
            [q] if request.metadata.op_code == OpCode::Query
                && matches!(q.query_type(), RecordType::A | RecordType::AAAA) =>
            {
                let name = q.original().name().to_ascii().to_ascii_lowercase();
                let route = route(name.trim_end_matches('.'), &self.config);
                (Some(q), name, route)
            }
            _ => (None, String::new(), Route::Upstream),
        };
        match (q, route) {
            (Some(q), Route::Cluster(candidates)) => {
                match self.resolver.resolve_first(&candidates).await {
                    Ok(ips) => self.send_cluster(request, q, &ips, response_handle).await,
                    Err(Error::NameNotFound { .. }) => {
                        send_error(request, ResponseCode::NXDomain, response_handle).await
                    }
                    Err(e) => {
                        tracing::debug!(%name, error = %e, "cluster DNS failed");
                        send_error(request, ResponseCode::ServFail, response_handle).await
                    }
                }
            }
            (Some(q), Route::Search(candidates)) => {
                match self.resolver.resolve_first(&candidates).await {
                    Ok(ips) if !ips.is_empty() => {
                        self.send_cluster(request, q, &ips, response_handle).await
                    }
                    // Not a cluster name after all: the upstream.
                    _ => {
                        let reply = self.upstream(request).await;
                        send_upstream(request, reply, response_handle).await
                    }
                }
            }
            (Some(q), Route::UpstreamFirst(service)) => {
                let reply = self.upstream(request).await;
                let no_answer = reply.as_ref().is_some_and(|r| {
                    matches!(
                        r.metadata.response_code,
                        ResponseCode::NXDomain | ResponseCode::Refused
                    )
                });
                if no_answer {
                    match self.resolver.resolve_first(&[service]).await {
                        Ok(ips) if !ips.is_empty() => {
                            return self.send_cluster(request, q, &ips, response_handle).await;
                        }
                        Ok(_) | Err(Error::NameNotFound { .. }) => {}
                        Err(e) => tracing::debug!(%name, error = %e, "cluster DNS failed"),
                    }
                }
                send_upstream(request, reply, response_handle).await
            }
            _ => {
                let reply = self.upstream(request).await;
                send_upstream(request, reply, response_handle).await
            }
        }
    }

    /// Sends the cluster's addresses `ips` for `q` (those of its type), authoritative.
    async fn send_cluster<H: ResponseHandler>(
        &self,
        request: &Request,
        q: &LowerQuery,
        ips: &[IpAddr],
        response_handle: &mut H,
    ) -> std::result::Result<ResponseInfo, NetError> {
        let records: Vec<Record> = ips
            .iter()
            .filter_map(|ip| match (ip, q.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                _ => None,
            })
            .map(|data| Record::from_rdata(q.original().name().clone(), self.config.ttl, data))
            .collect();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = true;
        let response = MessageResponseBuilder::from_message_request(request).build(
            metadata,
            records.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        response_handle.send_response(response).await
    }

    /// The upstream's answer to `request`, decoded; `None` when it gave none.
    async fn upstream(&self, request: &Request) -> Option<Message> {
        forward(&self.config, request.metadata.id, request.as_slice())
            .await
            .and_then(|reply| Message::from_vec(&reply).ok())
    }
}

/// Sends the upstream's `reply` (encoded again, see the module docs), or `SERVFAIL`
/// when there is none.
async fn send_upstream<H: ResponseHandler>(
    request: &Request,
    reply: Option<Message>,
    response_handle: &mut H,
) -> std::result::Result<ResponseInfo, NetError> {
    let Some(reply) = reply else {
        return send_error(request, ResponseCode::ServFail, response_handle).await;
    };
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(edns) = reply.edns.as_ref() {
        builder.edns(edns);
    }
    let response = builder.build(
        reply.metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        std::iter::empty(),
        reply.additionals.iter(),
    );
    response_handle.send_response(response).await
}

/// Sends an empty answer with `code` (RA set, the question echoed).
async fn send_error<H: ResponseHandler>(
    request: &Request,
    code: ResponseCode,
    response_handle: &mut H,
) -> std::result::Result<ResponseInfo, NetError> {
    let mut response =
        MessageResponseBuilder::from_message_request(request).error_msg(&request.metadata, code);
    response.metadata_mut().recursion_available = true;
    response_handle.send_response(response).await
}

/// What hickory-server records when no answer was sent (`code` says why: `SERVFAIL`
/// for a failure, `REFUSED` for a source that may not ask).
fn info(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// Sends `packet` unchanged to the upstream and returns its answer (matching `id`).
async fn forward(config: &DnsServerConfig, id: u16, packet: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if config.upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let exchange = async {
        let socket = UdpSocket::bind(bind).await.ok()?;
        socket.connect(config.upstream).await.ok()?;
        socket.send(packet).await.ok()?;
        let mut buf = vec![0u8; 65535];
        loop {
            let len = socket.recv(&mut buf).await.ok()?;
            if len >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                buf.truncate(len);
                return Some(buf);
            }
        }
    };
    match tokio::time::timeout(config.upstream_timeout, exchange).await {
        Ok(Some(reply)) => Some(reply),
        _ => {
            tracing::debug!(upstream = %config.upstream, "upstream DNS did not answer");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let config = DnsServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:53".parse().unwrap(),
        )
        .namespace("dev");
        let r = |n| route(n, &config);
        let search = |n: &str| {
            vec![
                format!("{n}.dev.svc.cluster.local."),
                format!("{n}.svc.cluster.local."),
                format!("{n}.cluster.local."),
            ]
        };
        assert_eq!(
            r("echo.dev.svc.cluster.local"),
            Route::Cluster(vec!["echo.dev.svc.cluster.local.".to_owned()])
        );
        assert_eq!(r("echo"), Route::Search(search("echo")));
        assert_eq!(r("wpad"), Route::Search(search("wpad")));
        // `svc.ns` (and `svc.ns.svc`): the upstream first, then the Service name only.
        let service = |n: &str| Route::UpstreamFirst(format!("{n}.svc.cluster.local."));
        assert_eq!(r("echo.dev"), service("echo.dev"));
        assert_eq!(r("echo.dev.svc"), service("echo.dev"));
        // A two-label outside name is the upstream's unless it has no answer; never
        // tried with the search list.
        assert_eq!(r("google.com"), service("google.com"));
        assert_eq!(r("notcluster.local"), service("notcluster.local"));
        // Three labels or more outside the cluster domain: the upstream only.
        assert_eq!(r("www.example.com"), Route::Upstream);
        assert_eq!(r("echo.dev.svc.cluster"), Route::Upstream);
        assert_eq!(r("a.b.c.d.e.example"), Route::Upstream);
        assert_eq!(r("a..b"), Route::Upstream);
        assert_eq!(r(""), Route::Upstream);
        // Search domains outside the cluster domain never send a name to the cluster.
        let mut corp = config.clone();
        corp.search.push("corp.example".to_owned());
        assert_eq!(route("echo", &corp), Route::Search(search("echo")));
    }
}
