//! A local DNS server for system DNS (VPN mode): it answers `A`/`AAAA` queries for
//! cluster names through a [`ClusterResolver`] (a [`Session`](crate::Session) in
//! production) and forwards every other query, unchanged, to the upstream server the
//! machine used before (the previous `nameserver` of resolv.conf).
//!
//! Which names are cluster names:
//!
//! - names in the cluster domain (`*.cluster.local`): asked as they are; answered by
//!   the cluster only (a name the cluster does not know gets `NXDOMAIN`);
//! - names ending in `.svc` (`web.dev.svc`): their search-list expansions
//!   (`web.dev.svc.dev.svc.cluster.local.`, ..., `web.dev.svc.cluster.local.`), cluster
//!   only;
//! - other names with fewer dots than `ndots` (`web`, `web.dev`, but also
//!   `google.com`): only their search-list expansions go to the cluster, never the name
//!   as it is; when none is known, the query goes to the upstream. So `google.com` is
//!   answered by the upstream, not by the cluster DNS's own upstream (which may see a
//!   different, e.g. corporate or split-horizon, view);
//! - everything else, and every other record type or opcode, goes to the upstream.
//!
//! Only search domains inside the cluster domain are used for the expansions.
//!
//! The server is hand-rolled on hickory-proto's message codec (no hickory-server): one
//! UDP socket and one TCP listener on the same address, bounded concurrency, and
//! undecodable packets are dropped.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::dns::SearchList;
use crate::error::{Error, Result};

/// Resolves cluster names for the [`DnsServer`].
///
/// [`Error::NameNotFound`] means "the cluster does not know this name" (`NXDOMAIN`
/// for cluster-domain names, fall back to the upstream for short names); any other
/// error is a failure (`SERVFAIL` for cluster-domain names).
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
    /// Names with fewer dots than this are expanded with the search list (5, as in a
    /// pod).
    pub ndots: usize,
    /// TTL of answers made from the cluster (5 s by default: Service IPs change).
    pub ttl: u32,
    /// How long to wait for the upstream before answering `SERVFAIL`.
    pub upstream_timeout: Duration,
    /// Queries handled at the same time (UDP and TCP together); further UDP packets
    /// wait in the socket buffer.
    pub max_in_flight: usize,
}

impl DnsServerConfig {
    /// Defaults: cluster domain `cluster.local`, the search list of namespace
    /// `default`, ndots 5, TTL 5 s, upstream timeout 3 s, 256 queries in flight.
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
        }
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
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Largest UDP query read (EDNS payloads beyond this are not expected from stubs).
const MAX_UDP: usize = 4096;
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

struct Shared<R> {
    config: DnsServerConfig,
    resolver: Arc<R>,
    permits: Arc<Semaphore>,
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
        let shared = Arc::new(Shared {
            permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            resolver,
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_udp(Arc::new(udp), Arc::clone(&shared)));
        tasks.spawn(serve_tcp(tcp, shared));
        tracing::debug!(%addr, "local DNS server listening");
        Ok(DnsServer { addr, tasks })
    }

    /// The address the server listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn serve_udp<R: ClusterResolver>(socket: Arc<UdpSocket>, shared: Arc<Shared<R>>) {
    let mut buf = vec![0u8; MAX_UDP];
    let mut handlers = JoinSet::new();
    loop {
        while handlers.try_join_next().is_some() {}
        let Ok(permit) = Arc::clone(&shared.permits).acquire_owned().await else {
            return;
        };
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems.
                tracing::trace!(error = %e, "DNS UDP receive");
                continue;
            }
        };
        let packet = buf[..len].to_vec();
        let socket = Arc::clone(&socket);
        let shared = Arc::clone(&shared);
        handlers.spawn(async move {
            if let Some(reply) = handle(&shared, &packet).await {
                let _ = socket.send_to(&reply, peer).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp<R: ClusterResolver>(listener: TcpListener, shared: Arc<Shared<R>>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if connections.len() >= shared.config.max_in_flight.max(1) {
            continue; // dropped: too many connections
        }
        connections.spawn(serve_tcp_connection(stream, Arc::clone(&shared)));
    }
}

async fn serve_tcp_connection<R: ClusterResolver>(mut stream: TcpStream, shared: Arc<Shared<R>>) {
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let mut packet = vec![0u8; usize::from(len)];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Ok(permit) = shared.permits.acquire().await else {
            return;
        };
        let reply = handle(&shared, &packet).await;
        drop(permit);
        let Some(reply) = reply else { return };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut wire = Vec::with_capacity(reply.len() + 2);
        wire.extend_from_slice(&len.to_be_bytes());
        wire.extend_from_slice(&reply);
        if stream.write_all(&wire).await.is_err() {
            return;
        }
    }
}

/// How a name is answered.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Route {
    /// By the cluster only (`NXDOMAIN` when it knows none of these absolute names).
    Cluster(Vec<String>),
    /// By the cluster if it knows one of these absolute names, else by the upstream.
    Search(Vec<String>),
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
    let expanded = || {
        config
            .search
            .iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| in_domain(d))
            .map(|d| format!("{name}.{d}."))
            .collect()
    };
    if name == "svc" || name.ends_with(".svc") {
        Route::Cluster(expanded())
    } else if name.matches('.').count() < config.ndots {
        Route::Search(expanded())
    } else {
        Route::Upstream
    }
}

/// Answers one query packet; `None` drops it (undecodable).
async fn handle<R: ClusterResolver>(shared: &Shared<R>, packet: &[u8]) -> Option<Vec<u8>> {
    let Ok(query) = Message::from_vec(packet) else {
        // Garbage: answer FORMERR when there is at least a header, else drop.
        if packet.len() >= 12 {
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
        return None;
    };
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let cluster = match query.queries.as_slice() {
        [q] if query.metadata.op_code == OpCode::Query
            && matches!(q.query_type(), RecordType::A | RecordType::AAAA) =>
        {
            let name = q.name().to_ascii().to_ascii_lowercase();
            match route(name.trim_end_matches('.'), &shared.config) {
                Route::Cluster(candidates) => Some((name, candidates, true)),
                Route::Search(candidates) => Some((name, candidates, false)),
                Route::Upstream => None,
            }
        }
        _ => None,
    };
    if let Some((name, candidates, cluster_only)) = cluster {
        match shared.resolver.resolve_first(&candidates).await {
            Ok(ips) if !ips.is_empty() || cluster_only => {
                return answer(&query, &ips, shared.config.ttl);
            }
            Err(Error::NameNotFound { .. }) if cluster_only => {
                return error_reply(&query, ResponseCode::NXDomain);
            }
            Err(e) if cluster_only => {
                tracing::debug!(%name, error = %e, "cluster DNS failed");
                return error_reply(&query, ResponseCode::ServFail);
            }
            _ => {} // not a cluster name after all: the upstream
        }
    }
    match forward(&shared.config, query.metadata.id, packet).await {
        Some(reply) => Some(reply),
        None => error_reply(&query, ResponseCode::ServFail),
    }
}

fn reply_to(query: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = code;
    reply.add_queries(query.queries.iter().cloned());
    reply
}

fn error_reply(query: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    reply_to(query, code).to_vec().ok()
}

fn answer(query: &Message, ips: &[IpAddr], ttl: u32) -> Option<Vec<u8>> {
    let q = query.queries.first()?;
    let mut reply = reply_to(query, ResponseCode::NoError);
    reply.metadata.authoritative = true;
    for ip in ips {
        let data = match (ip, q.query_type()) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        reply.add_answer(Record::from_rdata(q.name().clone(), ttl, data));
    }
    reply.to_vec().ok()
}

/// Sends `packet` unchanged to the upstream and returns its answer (matching `id`).
async fn forward(config: &DnsServerConfig, id: u16, packet: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if config.upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
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
        assert_eq!(r("echo.dev.svc"), Route::Cluster(search("echo.dev.svc")));
        assert_eq!(r("echo"), Route::Search(search("echo")));
        assert_eq!(r("echo.dev"), Route::Search(search("echo.dev")));
        // A two-label outside name is tried in the cluster only with the search
        // domains appended, never as it is.
        assert_eq!(r("google.com"), Route::Search(search("google.com")));
        assert_eq!(
            r("notcluster.local"),
            Route::Search(search("notcluster.local"))
        );
        assert_eq!(r("a.b.c.d.e.example"), Route::Upstream);
        assert_eq!(r(""), Route::Upstream);
        // Search domains outside the cluster domain never send a name to the cluster.
        let mut corp = config.clone();
        corp.search.push("corp.example".to_owned());
        assert_eq!(route("echo", &corp), Route::Search(search("echo")));
    }
}
