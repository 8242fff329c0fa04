//! A local DNS server for system DNS (VPN mode): it answers `A`/`AAAA` queries for
//! cluster names through a [`ClusterResolver`] (a [`Session`](crate::Session) in
//! production) and forwards every other query, unchanged, to the upstream server the
//! machine used before (the previous `nameserver` of resolv.conf).
//!
//! Which names are cluster names:
//!
//! - names in the cluster domain (`*.cluster.local`) or ending in `.svc`: answered by
//!   the cluster only; a name the cluster does not know gets `NXDOMAIN`;
//! - names of one or two labels (`echo`, `echo.dev`): the cluster is tried first (a
//!   pod's `ndots:5` search list applies), and the query goes to the upstream when the
//!   cluster has no answer;
//! - everything else, and every other record type or opcode, goes to the upstream.
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

use crate::error::{Error, Result};

/// Resolves cluster names for the [`DnsServer`].
///
/// [`Error::NameNotFound`] means "the cluster does not know this name" (`NXDOMAIN`
/// for cluster-domain names, fall back to the upstream for short names); any other
/// error is a failure (`SERVFAIL` for cluster-domain names).
pub trait ClusterResolver: Send + Sync + 'static {
    /// The addresses of `name` (lower case), IPv4 and IPv6 mixed. A name in the
    /// cluster domain comes with a trailing dot (absolute: no search list); other
    /// names (`echo`, `echo.dev`, `echo.dev.svc`) come without one and get the search
    /// list of a pod in the session's namespace.
    fn resolve(&self, name: &str) -> impl Future<Output = Result<Vec<IpAddr>>> + Send;
}

impl ClusterResolver for crate::Session {
    /// [`Session::resolve`](crate::Session::resolve): the cluster DNS through the
    /// tunnel with the search list of a pod in the session's namespace.
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>> {
        crate::Session::resolve(self, name).await
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
    /// TTL of answers made from the cluster (5 s by default: Service IPs change).
    pub ttl: u32,
    /// How long to wait for the upstream before answering `SERVFAIL`.
    pub upstream_timeout: Duration,
    /// Queries handled at the same time (UDP and TCP together); further UDP packets
    /// wait in the socket buffer.
    pub max_in_flight: usize,
}

impl DnsServerConfig {
    /// Defaults: cluster domain `cluster.local`, TTL 5 s, upstream timeout 3 s, 256
    /// queries in flight.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> DnsServerConfig {
        DnsServerConfig {
            listen,
            upstream,
            cluster_domain: "cluster.local".to_owned(),
            ttl: 5,
            upstream_timeout: Duration::from_secs(3),
            max_in_flight: 256,
        }
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
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Route {
    /// Cluster only (`NXDOMAIN` when unknown).
    Cluster,
    /// Cluster first, the upstream when the cluster has no answer.
    ClusterThenUpstream,
    /// Upstream only.
    Upstream,
}

fn route(name: &str, cluster_domain: &str) -> Route {
    let domain = cluster_domain.trim_end_matches('.').to_ascii_lowercase();
    if name == domain
        || name.ends_with(&format!(".{domain}"))
        || name == "svc"
        || name.ends_with(".svc")
    {
        Route::Cluster
    } else if name.matches('.').count() <= 1 && !name.is_empty() {
        Route::ClusterThenUpstream
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
            let name = name.trim_end_matches('.').to_owned();
            match route(&name, &shared.config.cluster_domain) {
                Route::Upstream => None,
                r => Some((name, r)),
            }
        }
        _ => None,
    };
    if let Some((name, route)) = cluster {
        // A name in the cluster domain is absolute (no search list in the cluster
        // resolver); `svc` and short names get the pod's search list.
        let domain = shared.config.cluster_domain.trim_end_matches('.');
        let lookup = if name == domain || name.ends_with(&format!(".{domain}")) {
            format!("{name}.")
        } else {
            name.clone()
        };
        match shared.resolver.resolve(&lookup).await {
            Ok(ips) if !ips.is_empty() || route == Route::Cluster => {
                return answer(&query, &ips, shared.config.ttl);
            }
            Err(Error::NameNotFound { .. }) if route == Route::Cluster => {
                return error_reply(&query, ResponseCode::NXDomain);
            }
            Err(e) if route == Route::Cluster => {
                tracing::debug!(%name, error = %e, "cluster DNS failed");
                return error_reply(&query, ResponseCode::ServFail);
            }
            _ => {} // short name the cluster does not know: the upstream
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
        let r = |n| route(n, "cluster.local");
        assert_eq!(r("echo.dev.svc.cluster.local"), Route::Cluster);
        assert_eq!(r("echo.dev.svc"), Route::Cluster);
        assert_eq!(r("echo"), Route::ClusterThenUpstream);
        assert_eq!(r("echo.dev"), Route::ClusterThenUpstream);
        assert_eq!(r("www.example.com"), Route::Upstream);
        assert_eq!(r("notcluster.local"), Route::ClusterThenUpstream);
        assert_eq!(r("a.b.notcluster.local"), Route::Upstream);
    }
}
