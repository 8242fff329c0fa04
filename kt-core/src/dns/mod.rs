//! Cluster DNS through the tunnel, on hickory-resolver: queries go over DNS-over-TCP on
//! a `direct-tcpip` channel to the cluster DNS Service (this works with both kt-shadow
//! and a stock OpenSSH shadow), with the search list of a pod in the session's namespace
//! applied here, as a pod's resolver would (`ndots:5`).
//!
//! hickory-resolver does the search-list walk, the A/AAAA queries, the cache (positive
//! answers for their TTL within 1–30 s, negative answers — NXDOMAIN, no data — for the
//! SOA minimum within 1–5 s; failures are never cached) and keeps one multiplexed
//! DNS-over-TCP connection (one SSH channel) open, reopening it when CoreDNS or a tunnel
//! reconnect closes it. Its connection provider ([`TunnelRuntime`]) dials through the
//! tunnel instead of the network.
//!
//! What stays ours, because hickory's search returns only the *last* name's outcome:
//! the candidate list ([`SearchList`], the `tried` names of [`Error::NameNotFound`]),
//! and the rule "a [`Error::Dns`] failure only when the server failed every query, else
//! not found" — when the last candidate fails, the candidates are walked one by one
//! (their earlier answers come from hickory's cache). Also ours: IP literals are never
//! looked up (with `ndots:5` hickory would search `10.96.0.1.<ns>.svc…` first), one
//! deadline for the whole lookup (hickory moves on to the next name after a timeout),
//! and concurrent lookups of one name make one lookup (hickory does not coalesce).

pub(crate) mod discover;
pub(crate) mod hosts;
pub(crate) mod install;
pub(crate) mod record;
pub(crate) mod resolved;
pub(crate) mod resolver_dir;
pub(crate) mod server;
pub(crate) mod system;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::Resolver as Hickory;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_resolver::net::runtime::{RuntimeProvider, TokioHandle, TokioTime};
use hickory_resolver::net::{DnsError, NetError};

use crate::error::{Error, Result};
use crate::transport::Tunnel;

/// Port of the cluster DNS Service.
pub(crate) const DNS_PORT: u16 = 53;

/// The search list and `ndots` of a pod in `namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchList {
    pub(crate) domains: Vec<String>,
    pub(crate) ndots: usize,
}

impl SearchList {
    /// `<ns>.svc.<domain> svc.<domain> <domain>`, ndots 5 (what the kubelet writes into
    /// a pod's resolv.conf).
    pub(crate) fn for_namespace(namespace: &str, cluster_domain: &str) -> SearchList {
        SearchList {
            domains: vec![
                format!("{namespace}.svc.{cluster_domain}"),
                format!("svc.{cluster_domain}"),
                cluster_domain.to_owned(),
            ],
            ndots: 5,
        }
    }

    /// The fully qualified names to try for `name`, in order (resolv.conf semantics: a
    /// name with a trailing dot is absolute; one with at least `ndots` dots is tried as
    /// is first; otherwise the search domains come first).
    pub(crate) fn candidates(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        if let Some(absolute) = name.strip_suffix('.') {
            return vec![format!("{absolute}.")];
        }
        let searched = self.domains.iter().map(|d| format!("{name}.{d}."));
        let dots = name.matches('.').count();
        let mut out = Vec::with_capacity(self.domains.len() + 1);
        if dots >= self.ndots {
            out.push(format!("{name}."));
            out.extend(searched);
        } else {
            out.extend(searched);
            out.push(format!("{name}."));
        }
        out
    }
}

/// Answers are cached for their TTL, within these bounds.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(30);
/// Negative answers (NXDOMAIN, no data) are cached for the SOA minimum (CoreDNS: 5 s),
/// at most this long: a Service created right after a failed lookup of its name
/// resolves this much later at worst.
const NEGATIVE_MAX_TTL: Duration = Duration::from_secs(5);

/// Names kept in the cache (hickory's cache holds one entry per name and record type).
const CACHE_LIMIT: usize = 4096;

/// Queries in flight on the one DNS connection (hickory's default is 32, beyond which
/// it answers "busy" and re-sends).
const MAX_ACTIVE_QUERIES: usize = 256;

/// A byte stream to the cluster DNS server (an SSH channel in production, an in-memory
/// pipe to a fake server in the tests).
pub(crate) trait DnsConn:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static> DnsConn
    for T
{
}
type BoxConn = Box<dyn DnsConn>;
type DialFuture = Pin<Box<dyn Future<Output = std::io::Result<BoxConn>> + Send>>;

/// How a connection to the DNS server is opened: a channel through the tunnel to
/// `server:53` in production.
type Dial = Arc<dyn Fn() -> DialFuture + Send + Sync>;

/// hickory's runtime, with TCP "connections" that are channels through the tunnel (and
/// no UDP: the cluster DNS is asked over TCP only).
#[derive(Clone)]
pub(crate) struct TunnelRuntime {
    dial: Dial,
    handle: TokioHandle,
    /// Why the last dial failed (hickory reports a failed connection as "no
    /// connections available", without the reason).
    dial_error: Arc<Mutex<Option<String>>>,
}

impl RuntimeProvider for TunnelRuntime {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = tokio::net::UdpSocket;
    type Tcp = AsyncIoTokioAsStd<BoxConn>;

    fn create_handle(&self) -> Self::Handle {
        self.handle.clone()
    }

    fn connect_tcp(
        &self,
        _server_addr: SocketAddr,
        _bind_addr: Option<SocketAddr>,
        _timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = std::io::Result<Self::Tcp>>>> {
        let dial = Arc::clone(&self.dial);
        let dial_error = Arc::clone(&self.dial_error);
        Box::pin(async move {
            let result = dial().await;
            *dial_error.lock().unwrap_or_else(PoisonError::into_inner) =
                result.as_ref().err().map(ToString::to_string);
            Ok(AsyncIoTokioAsStd(result?))
        })
    }

    fn bind_udp(
        &self,
        _local_addr: SocketAddr,
        _server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = std::io::Result<Self::Udp>>>> {
        Box::pin(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the cluster DNS is asked over TCP only",
            ))
        })
    }
}

/// Opens a channel through `tunnel` to `server` (an IP, or a name the shadow resolves)
/// on [`DNS_PORT`].
fn tunnel_dial(tunnel: Arc<Tunnel>, server: String) -> Dial {
    Arc::new(move || {
        let tunnel = Arc::clone(&tunnel);
        let server = server.clone();
        Box::pin(async move {
            let channel = tunnel
                .open(&server, DNS_PORT)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(Box::new(channel.into_stream()) as BoxConn)
        })
    })
}

/// What one query (or one search) came to.
enum Answer {
    /// Addresses.
    Found(Vec<IpAddr>),
    /// The server says the name has no such records (NXDOMAIN, or NOERROR without any).
    Missing,
    /// The server failed (SERVFAIL, REFUSED, ...).
    Failed(ResponseCode),
}

/// The resolver of a session.
pub(crate) struct Resolver {
    /// hickory's resolver; its builder cannot fail without TLS, but if it did, every
    /// lookup reports why.
    inner: std::result::Result<Hickory<TunnelRuntime>, String>,
    /// [`TunnelRuntime::dial_error`].
    dial_error: Arc<Mutex<Option<String>>>,
    /// The DNS server as the shadow connects to it (an IP, or a name the shadow resolves).
    server: String,
    search: SearchList,
    timeout: Duration,
    /// One lock per name: lookups of the same name queue on it, so concurrent
    /// connections to one Service make one lookup (the others then hit the cache).
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Which way [`Resolver::lookup`] goes.
enum Search {
    /// A name, searched by hickory with the search list.
    List,
    /// These absolute names, in order.
    Each(Vec<String>),
}

impl Resolver {
    pub(crate) fn new(
        tunnel: Arc<Tunnel>,
        server: String,
        search: SearchList,
        timeout: Duration,
    ) -> Resolver {
        Self::with_dial(tunnel_dial(tunnel, server.clone()), server, search, timeout)
    }

    fn with_dial(dial: Dial, server: String, search: SearchList, timeout: Duration) -> Resolver {
        // The address only labels hickory's statistics: the dial ignores it.
        let ip = server.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let name_server = NameServerConfig::new(ip, true, vec![ConnectionConfig::tcp()]);
        let domains = search
            .domains
            .iter()
            .filter_map(|d| Name::from_ascii(format!("{}.", d.trim_end_matches('.'))).ok())
            .collect();
        let config = ResolverConfig::from_parts(None, domains, vec![name_server]);
        let mut opts = ResolverOpts::default();
        opts.ndots = search.ndots;
        opts.timeout = timeout;
        // One try per query (retries would multiply the timeout).
        opts.attempts = 0;
        opts.edns0 = false;
        // A and AAAA in parallel, the A addresses first.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.cache_size = 2 * CACHE_LIMIT as u64;
        // Never the laptop's /etc/hosts for cluster names.
        opts.use_hosts_file = ResolveHosts::Never;
        opts.positive_min_ttl = Some(MIN_TTL);
        opts.positive_max_ttl = Some(MAX_TTL);
        opts.negative_min_ttl = Some(MIN_TTL);
        opts.negative_max_ttl = Some(NEGATIVE_MAX_TTL);
        opts.max_active_requests = MAX_ACTIVE_QUERIES;
        let dial_error = Arc::default();
        let runtime = TunnelRuntime {
            dial,
            handle: TokioHandle::default(),
            dial_error: Arc::clone(&dial_error),
        };
        let inner = Hickory::builder_with_config(config, runtime)
            .with_options(opts)
            .build()
            .map_err(|e| format!("cannot set up the resolver: {e}"));
        Resolver {
            inner,
            dial_error,
            server,
            search,
            timeout,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The DNS server in use.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// The addresses of `name` (IPv4 first); an IP literal is returned as is.
    pub(crate) async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>> {
        let trimmed = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let key = name.to_ascii_lowercase();
        self.guarded(&key, &key, Search::List).await
    }

    /// The addresses of the first of `candidates` (absolute names, tried in order) that
    /// the cluster knows. The local DNS server uses it to try a short name's search-list
    /// expansions without ever asking the cluster for the name as it is.
    pub(crate) async fn resolve_first(&self, candidates: &[String]) -> Result<Vec<IpAddr>> {
        let candidates: Vec<String> = candidates
            .iter()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.ends_with('.') { c } else { format!("{c}.") }
            })
            .collect();
        // A space never occurs in a name: these keys never meet `resolve`'s.
        let key = candidates.join(" ");
        let name = candidates
            .first()
            .map(|c| c.trim_end_matches('.').to_owned())
            .unwrap_or_default();
        self.guarded(&key, &name, Search::Each(candidates)).await
    }

    /// Looks `name` up (`how`) under the lock of `key`, within the timeout.
    async fn guarded(&self, key: &str, name: &str, how: Search) -> Result<Vec<IpAddr>> {
        if name.is_empty() || name.len() > 253 {
            return Err(Error::NameNotFound {
                name: name.to_owned(),
                tried: Vec::new(),
            });
        }
        let slot = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match inflight.get(key) {
                Some(slot) => Arc::clone(slot),
                None => {
                    if inflight.len() >= CACHE_LIMIT {
                        inflight.clear();
                    }
                    Arc::clone(inflight.entry(key.to_owned()).or_default())
                }
            }
        };
        let _turn = slot.lock().await;
        // One deadline for the whole search: hickory would try the next name after a
        // timeout.
        tokio::time::timeout(self.timeout, self.lookup(name, how))
            .await
            .unwrap_or_else(|_| Err(self.no_answer(name)))
    }

    fn dns_error(&self, name: &str, reason: String) -> Error {
        Error::Dns {
            name: name.to_owned(),
            server: self.server.clone(),
            reason,
        }
    }

    fn no_answer(&self, name: &str) -> Error {
        self.dns_error(name, format!("no answer within {:?}", self.timeout))
    }

    /// How a hickory error reads: `Ok` for an answer of the server, `Err` for "stop
    /// here" (no answer, the tunnel).
    fn classify(&self, name: &str, error: NetError) -> Result<Answer> {
        match error {
            NetError::Dns(DnsError::NoRecordsFound(no)) => Ok(match no.response_code {
                ResponseCode::NXDomain | ResponseCode::NoError => Answer::Missing,
                code => Answer::Failed(code),
            }),
            NetError::Dns(DnsError::ResponseCode(code)) => Ok(Answer::Failed(code)),
            NetError::Timeout => Err(self.no_answer(name)),
            NetError::Io(_) | NetError::NoConnections => {
                let reason = self
                    .dial_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_else(|| match &error {
                        NetError::Io(e) => e.to_string(),
                        other => other.to_string(),
                    });
                Err(self.dns_error(name, format!("cannot reach the DNS server: {reason}")))
            }
            other => Err(self.dns_error(name, other.to_string())),
        }
    }

    async fn lookup(&self, name: &str, how: Search) -> Result<Vec<IpAddr>> {
        let inner = self
            .inner
            .as_ref()
            .map_err(|e| self.dns_error(name, e.clone()))?;
        let candidates = match how {
            Search::Each(candidates) => candidates,
            Search::List => {
                // hickory's `&str` names go through IDNA; ours are ASCII only.
                let Ok(query) = Name::from_ascii(name) else {
                    return self.walk(inner, name, &self.search.candidates(name)).await;
                };
                let answer = match inner.lookup_ip(query).await {
                    Ok(found) => {
                        let ips: Vec<IpAddr> = found.iter().collect();
                        if ips.is_empty() {
                            Answer::Missing
                        } else {
                            Answer::Found(ips)
                        }
                    }
                    Err(e) => self.classify(name, e)?,
                };
                let candidates = self.search.candidates(name);
                match answer {
                    Answer::Found(ips) => return Ok(ips),
                    // The last candidate answered: not a failure of the server, and
                    // hickory asked every candidate in this order.
                    Answer::Missing => {
                        return Err(Error::NameNotFound {
                            name: name.to_owned(),
                            tried: candidates
                                .iter()
                                .filter(|c| Name::from_ascii(c).is_ok())
                                .map(|c| c.trim_end_matches('.').to_owned())
                                .collect(),
                        });
                    }
                    // Did the server fail every query, or only some? hickory only
                    // tells the last one: ask each (the answers are cached).
                    Answer::Failed(_) => candidates,
                }
            }
        };
        self.walk(inner, name, &candidates).await
    }

    /// Asks for each of `candidates` (absolute names) in turn, A and AAAA; the first
    /// with an address wins. A [`Error::Dns`] failure when the server failed every
    /// query, else [`Error::NameNotFound`] with the names tried.
    async fn walk(
        &self,
        inner: &Hickory<TunnelRuntime>,
        name: &str,
        candidates: &[String],
    ) -> Result<Vec<IpAddr>> {
        let mut tried = Vec::new();
        let mut failures = Vec::new();
        for candidate in candidates {
            let Ok(query) = Name::from_ascii(candidate) else {
                continue;
            };
            tried.push(candidate.trim_end_matches('.').to_owned());
            let (v4, v6) = futures::future::join(
                inner.lookup(query.clone(), RecordType::A),
                inner.lookup(query, RecordType::AAAA),
            )
            .await;
            let mut ips = Vec::new();
            for result in [v4, v6] {
                let answer = match result {
                    Ok(found) => Answer::Found(
                        found
                            .answers()
                            .iter()
                            .filter_map(|r| match &r.data {
                                RData::A(a) => Some(IpAddr::V4(a.0)),
                                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                                _ => None,
                            })
                            .collect(),
                    ),
                    Err(e) => self.classify(name, e)?,
                };
                match answer {
                    Answer::Found(found) => ips.extend(found),
                    Answer::Missing => {}
                    Answer::Failed(code) => failures.push(format!("{candidate}: {code}")),
                }
            }
            if !ips.is_empty() {
                return Ok(ips);
            }
        }
        if tried.is_empty() {
            return Err(self.dns_error(name, "not a valid DNS name".to_owned()));
        }
        if failures.len() == tried.len() * 2 {
            return Err(self.dns_error(
                name,
                format!("the server failed every query: {}", failures.join("; ")),
            ));
        }
        Err(Error::NameNotFound {
            name: name.to_owned(),
            tried,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search() -> SearchList {
        SearchList::for_namespace("dev", "cluster.local")
    }

    #[test]
    fn short_names_try_the_namespace_first_then_svc_then_the_domain_then_as_is() {
        assert_eq!(
            search().candidates("echo"),
            [
                "echo.dev.svc.cluster.local.",
                "echo.svc.cluster.local.",
                "echo.cluster.local.",
                "echo."
            ]
        );
        assert_eq!(
            search().candidates("echo.other")[1],
            "echo.other.svc.cluster.local."
        );
    }

    #[test]
    fn fqdn_without_trailing_dot_still_has_fewer_than_five_dots() {
        let c = search().candidates("echo.dev.svc.cluster.local");
        assert_eq!(
            c.last().map(String::as_str),
            Some("echo.dev.svc.cluster.local.")
        );
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn trailing_dot_is_absolute_and_many_dots_go_first() {
        assert_eq!(
            search().candidates("Echo.Dev.svc.cluster.local."),
            ["echo.dev.svc.cluster.local."]
        );
        let c = search().candidates("a.b.c.d.e.f");
        assert_eq!(c[0], "a.b.c.d.e.f.");
        assert_eq!(c.len(), 4);
    }

    // ---- the resolver against a fake DNS-over-TCP server (no cluster)

    use std::sync::atomic::{AtomicUsize, Ordering};

    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, SOA};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// How the fake server answers one query.
    #[derive(Clone, Copy)]
    enum Reply {
        /// This address, with this TTL (an AAAA query gets no data).
        Addr(Ipv4Addr, u32),
        /// NXDOMAIN, with an SOA whose minimum (the negative TTL) is this.
        NxDomain(u32),
        ServFail,
        /// Never answers.
        Silent,
    }

    type Answers = Box<dyn Fn(&str) -> Reply + Send + Sync>;

    struct Fake {
        answers: Answers,
        /// `name TYPE` of every query received, in order.
        asked: Mutex<Vec<String>>,
        dials: AtomicUsize,
        /// Bumped to make the server close every open connection.
        close: tokio::sync::watch::Sender<u32>,
    }

    impl Fake {
        fn new(answers: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Arc<Fake> {
            Arc::new(Fake {
                answers: Box::new(answers),
                asked: Mutex::default(),
                dials: AtomicUsize::new(0),
                close: tokio::sync::watch::channel(0).0,
            })
        }

        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }

        fn dials(&self) -> usize {
            self.dials.load(Ordering::SeqCst)
        }

        fn dial(self: &Arc<Self>) -> Dial {
            let fake = Arc::clone(self);
            Arc::new(move || {
                let fake = Arc::clone(&fake);
                Box::pin(async move {
                    fake.dials.fetch_add(1, Ordering::SeqCst);
                    let (ours, theirs) = tokio::io::duplex(64 << 10);
                    tokio::spawn(fake.serve(theirs));
                    Ok(Box::new(ours) as BoxConn)
                })
            })
        }

        async fn serve(self: Arc<Self>, mut stream: tokio::io::DuplexStream) {
            let mut close = self.close.subscribe();
            loop {
                let len = tokio::select! {
                    _ = close.changed() => return,
                    len = stream.read_u16() => match len { Ok(len) => len, Err(_) => return },
                };
                let mut buf = vec![0; usize::from(len)];
                if stream.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let query = Message::from_vec(&buf).unwrap();
                let q = query.queries[0].clone();
                let name = q.name().to_ascii();
                self.asked
                    .lock()
                    .unwrap()
                    .push(format!("{name} {}", q.query_type()));
                let mut reply = Message::new(
                    query.metadata.id,
                    MessageType::Response,
                    query.metadata.op_code,
                );
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.add_query(q.clone());
                match (self.answers)(&name) {
                    Reply::Addr(ip, ttl) => {
                        if q.query_type() == RecordType::A {
                            reply.add_answer(Record::from_rdata(
                                q.name().clone(),
                                ttl,
                                RData::A(A(ip)),
                            ));
                        }
                    }
                    Reply::NxDomain(minimum) => {
                        reply.metadata.response_code = ResponseCode::NXDomain;
                        let soa = SOA::new(
                            Name::from_ascii("ns.dns.cluster.local.").unwrap(),
                            Name::from_ascii("hostmaster.cluster.local.").unwrap(),
                            1,
                            7200,
                            1800,
                            86400,
                            minimum,
                        );
                        reply.add_authority(Record::from_rdata(
                            Name::from_ascii("cluster.local.").unwrap(),
                            minimum,
                            RData::SOA(soa),
                        ));
                    }
                    Reply::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
                    Reply::Silent => continue,
                }
                let bytes = reply.to_vec().unwrap();
                let mut wire = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
                wire.extend_from_slice(&bytes);
                if stream.write_all(&wire).await.is_err() {
                    return;
                }
            }
        }
    }

    const ECHO: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 7);
    const KUBERNETES: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

    /// `echo` in namespace dev, `kubernetes` in default; nothing else.
    fn cluster(name: &str) -> Reply {
        match name {
            "echo.dev.svc.cluster.local." => Reply::Addr(ECHO, 30),
            "kubernetes.default.svc.cluster.local." => Reply::Addr(KUBERNETES, 30),
            _ => Reply::NxDomain(5),
        }
    }

    fn resolver(fake: &Arc<Fake>, timeout: Duration) -> Resolver {
        Resolver::with_dial(fake.dial(), "10.96.0.10".to_owned(), search(), timeout)
    }

    fn both(name: &str) -> [String; 2] {
        [format!("{name} A"), format!("{name} AAAA")]
    }

    /// The names asked, in order, each once (A and AAAA go out in parallel).
    fn names(asked: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in asked {
            let name = a.split(' ').next().unwrap().to_owned();
            if out.last() != Some(&name) {
                out.push(name);
            }
        }
        out
    }

    #[tokio::test]
    async fn resolves_through_the_search_list_in_order() {
        let fake = Fake::new(cluster);
        let r = resolver(&fake, Duration::from_secs(5));
        assert_eq!(r.resolve("echo").await.unwrap(), [IpAddr::V4(ECHO)]);
        let mut asked = fake.asked();
        asked.sort();
        assert_eq!(asked, both("echo.dev.svc.cluster.local."));

        let fake = Fake::new(cluster);
        let r = resolver(&fake, Duration::from_secs(5));
        assert_eq!(
            r.resolve("Kubernetes.Default").await.unwrap(),
            [IpAddr::V4(KUBERNETES)]
        );
        assert_eq!(
            names(&fake.asked()),
            [
                "kubernetes.default.dev.svc.cluster.local.",
                "kubernetes.default.svc.cluster.local."
            ]
        );
        assert_eq!(fake.asked().len(), 4, "A and AAAA each: {:?}", fake.asked());

        // IP literals are never asked.
        assert_eq!(
            r.resolve("10.96.0.1").await.unwrap(),
            [IpAddr::V4(KUBERNETES)]
        );
        assert_eq!(
            r.resolve("[::1]").await.unwrap(),
            [IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)]
        );
        assert_eq!(fake.asked().len(), 4);
    }

    #[tokio::test]
    async fn a_missing_name_names_every_name_tried() {
        let fake = Fake::new(cluster);
        let r = resolver(&fake, Duration::from_secs(5));
        let Err(Error::NameNotFound { name, tried }) = r.resolve("nope").await else {
            panic!("expected NameNotFound");
        };
        assert_eq!(name, "nope");
        assert_eq!(
            tried,
            [
                "nope.dev.svc.cluster.local",
                "nope.svc.cluster.local",
                "nope.cluster.local",
                "nope"
            ]
        );
        assert_eq!(names(&fake.asked()), search().candidates("nope"));

        // An absolute name is asked as it is, only.
        let Err(Error::NameNotFound { tried, .. }) = r.resolve("nope.dev.svc.cluster.local.").await
        else {
            panic!("expected NameNotFound");
        };
        assert_eq!(tried, ["nope.dev.svc.cluster.local"]);

        // resolve_first: the first candidate that resolves; NameNotFound names them all.
        let candidates = [
            "nope.dev.svc.cluster.local".to_owned(),
            "echo.dev.svc.cluster.local.".to_owned(),
        ];
        assert_eq!(
            r.resolve_first(&candidates).await.unwrap(),
            [IpAddr::V4(ECHO)]
        );
        let Err(Error::NameNotFound { name, tried }) = r.resolve_first(&candidates[..1]).await
        else {
            panic!("expected NameNotFound");
        };
        assert_eq!(
            (name.as_str(), tried.as_slice()),
            (
                "nope.dev.svc.cluster.local",
                &["nope.dev.svc.cluster.local".to_owned()][..]
            )
        );
    }

    #[tokio::test]
    async fn a_failing_upstream_for_one_name_is_still_not_found() {
        // CoreDNS forwards the bare name (the last candidate) to its upstream, which
        // may fail: the cluster still said the name is not one of its own.
        let fake = Fake::new(|name| {
            if name == "nope." {
                Reply::ServFail
            } else {
                cluster(name)
            }
        });
        let r = resolver(&fake, Duration::from_secs(5));
        let Err(Error::NameNotFound { tried, .. }) = r.resolve("nope").await else {
            panic!("expected NameNotFound");
        };
        assert_eq!(tried.len(), 4);
        // The earlier candidates came from the cache the second time: only the
        // failed one was asked again.
        let asked = fake.asked();
        assert_eq!(
            asked.iter().filter(|a| a.starts_with("nope.dev.")).count(),
            2,
            "{asked:?}"
        );
        assert_eq!(
            asked.iter().filter(|a| a.starts_with("nope. ")).count(),
            4,
            "{asked:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_fails_every_query_is_a_dns_error() {
        let fake = Fake::new(|_| Reply::ServFail);
        let r = resolver(&fake, Duration::from_secs(5));
        let Err(Error::Dns {
            name,
            server,
            reason,
        }) = r.resolve("echo").await
        else {
            panic!("expected a DNS error");
        };
        assert_eq!((name.as_str(), server.as_str()), ("echo", "10.96.0.10"));
        assert!(
            reason.starts_with("the server failed every query: echo.dev.svc.cluster.local.: "),
            "{reason}"
        );
        let Err(Error::Dns { reason, .. }) = r
            .resolve_first(&["echo.dev.svc.cluster.local.".to_owned()])
            .await
        else {
            panic!("expected a DNS error");
        };
        assert!(
            reason.starts_with("the server failed every query"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout() {
        let fake = Fake::new(|_| Reply::Silent);
        let timeout = Duration::from_millis(300);
        let r = resolver(&fake, timeout);
        let Err(Error::Dns { reason, .. }) = r.resolve("echo").await else {
            panic!("expected a DNS error");
        };
        assert_eq!(reason, format!("no answer within {timeout:?}"));
        // Failures are not cached: the next lookup asks again.
        let before = fake.asked().len();
        assert!(r.resolve("echo").await.is_err());
        assert!(fake.asked().len() > before);
    }

    #[tokio::test]
    async fn an_unreachable_server_says_so() {
        let dial: Dial = Arc::new(|| {
            Box::pin(async {
                Err(std::io::Error::other(
                    "cannot connect to 10.96.0.10:53 from the shadow pod",
                ))
            })
        });
        let r = Resolver::with_dial(
            dial,
            "10.96.0.10".to_owned(),
            search(),
            Duration::from_secs(5),
        );
        for result in [
            r.resolve("echo").await,
            r.resolve_first(&["echo.dev.svc.cluster.local.".to_owned()])
                .await,
        ] {
            let Err(Error::Dns { reason, .. }) = result else {
                panic!("expected a DNS error, got {result:?}");
            };
            assert!(
                reason.starts_with("cannot reach the DNS server: "),
                "{reason}"
            );
            assert!(reason.contains("from the shadow pod"), "{reason}");
        }
    }

    #[tokio::test]
    async fn answers_are_cached_for_their_ttl() {
        let fake = Fake::new(|name| match name {
            "echo.dev.svc.cluster.local." => Reply::Addr(ECHO, 1),
            _ => Reply::NxDomain(1),
        });
        let r = resolver(&fake, Duration::from_secs(5));
        assert_eq!(r.resolve("echo").await.unwrap(), [IpAddr::V4(ECHO)]);
        assert!(r.resolve("nope").await.is_err());
        let asked = fake.asked().len();
        assert_eq!(r.resolve("ECHO").await.unwrap(), [IpAddr::V4(ECHO)]);
        assert!(matches!(
            r.resolve("nope").await,
            Err(Error::NameNotFound { .. })
        ));
        assert_eq!(
            r.resolve_first(&["echo.dev.svc.cluster.local.".to_owned()])
                .await
                .unwrap(),
            [IpAddr::V4(ECHO)]
        );
        assert_eq!(fake.asked().len(), asked, "{:?}", fake.asked());
        // After the TTL (1 s here), both are asked again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(r.resolve("echo").await.unwrap(), [IpAddr::V4(ECHO)]);
        assert!(r.resolve("nope").await.is_err());
        assert_eq!(fake.asked().len(), 2 * asked, "{:?}", fake.asked());
    }

    #[tokio::test]
    async fn one_connection_is_kept_and_reopened_when_closed() {
        let fake = Fake::new(cluster);
        let r = resolver(&fake, Duration::from_secs(5));
        r.resolve("echo").await.unwrap();
        r.resolve("kubernetes.default").await.unwrap();
        assert_eq!(fake.dials(), 1);
        // The server (or a tunnel reconnect) closes it: the next lookup dials again.
        fake.close.send_modify(|n| *n += 1);
        tokio::task::yield_now().await;
        assert_eq!(
            r.resolve("echo.dev.svc.cluster.local.").await.unwrap(),
            [IpAddr::V4(ECHO)]
        );
        assert!(matches!(
            r.resolve("other").await,
            Err(Error::NameNotFound { .. })
        ));
        assert_eq!(fake.dials(), 2);
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_name_ask_once() {
        let fake = Fake::new(cluster);
        let r = Arc::new(resolver(&fake, Duration::from_secs(5)));
        let lookups: Vec<_> = (0..20)
            .map(|_| {
                let r = Arc::clone(&r);
                tokio::spawn(async move { r.resolve("echo").await })
            })
            .collect();
        for lookup in lookups {
            assert_eq!(lookup.await.unwrap().unwrap(), [IpAddr::V4(ECHO)]);
        }
        assert_eq!(fake.asked().len(), 2, "{:?}", fake.asked());
    }

    /// Prints the cached lookup's p50 (meaningful in a release build:
    /// `cargo test --release -p kt-core --lib cached_resolve_p50 -- --nocapture`).
    #[tokio::test]
    async fn cached_resolve_p50() {
        let fake = Fake::new(cluster);
        let r = resolver(&fake, Duration::from_secs(5));
        for name in ["echo", "kubernetes.default"] {
            r.resolve(name).await.unwrap();
            let asked = fake.asked().len();
            let mut times: Vec<Duration> = Vec::with_capacity(1000);
            for _ in 0..1000 {
                let start = std::time::Instant::now();
                r.resolve(name).await.unwrap();
                times.push(start.elapsed());
            }
            times.sort();
            eprintln!(
                "cached resolve({name}): p50 {:?}, p99 {:?}",
                times[500], times[990]
            );
            assert_eq!(fake.asked().len(), asked);
        }
    }
}
