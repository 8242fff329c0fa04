//! Host names to addresses, without the C library's resolver.
//!
//! The shipped kt-shadow is one static binary (`kt-shadow/build-static`) so that it runs
//! on any base image, even one with no libc, no shell and no `/etc/nsswitch.conf`
//! (`registry.k8s.io/pause`, or the image of whatever pod it borrows). glibc's
//! `getaddrinfo` in a static binary still loads its NSS modules, which are shared
//! libraries, at run time; such an image has none. So the shadow never calls it: it
//! reads the two files the kubelet writes into every pod and resolves names as the
//! pod's stub resolver would:
//!
//! - an IP literal is the address itself (never looked up: with `ndots:5` a search
//!   would first ask for `10.96.0.1.<namespace>.svc.cluster.local`);
//! - `/etc/hosts`, for the name as given (the pod's own host name, `localhost`, and
//!   `hostAliases`), as the C library's `files` source does;
//! - then DNS with `/etc/resolv.conf`'s `nameserver`s, `search` list and `options
//!   ndots`, `timeout` and `attempts`: the queries, the search walk and the A/AAAA
//!   lookups are hickory-resolver's ([`hickory_resolver::system_conf`] parses the
//!   file). Answers are not cached, as `getaddrinfo` does not cache them either: a
//!   Service created a moment after a failed lookup resolves at the next dial.
//!
//! Both files are read at the first lookup of a name (a shadow that dials only IPs
//! never reads them) and kept: the kubelet does not change them while the pod runs. A
//! missing or unusable `resolv.conf` fails that lookup and is read again at the next.
//!
//! [`Resolver`] is also the HTTP client's resolver for the shadow's Kubernetes client
//! ([`crate::cluster`]), so nothing in the binary calls into NSS.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, TokioResolver};
use tokio::sync::OnceCell;

/// The pod's resolver configuration, written by the kubelet.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The pod's hosts file, written by the kubelet.
pub const HOSTS: &str = "/etc/hosts";

/// Why a name has no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// `resolv.conf` cannot be read or used (no nameserver, say).
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not a valid host name.
    BadName {
        /// The name as given.
        host: String,
        /// Why.
        reason: String,
    },
    /// The nameservers say the name does not exist (after the whole search list).
    NotFound {
        /// The name as given.
        host: String,
    },
    /// The name exists but has no A or AAAA record.
    NoAddress {
        /// The name as given.
        host: String,
    },
    /// No nameserver answered: unreachable, refused, timed out, or answered with an
    /// error (SERVFAIL, REFUSED).
    NoAnswer {
        /// The name as given.
        host: String,
        /// The nameservers asked, as `resolv.conf` lists them.
        nameservers: String,
        /// What went wrong with the last query.
        reason: String,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Config { path, reason } => write!(
                f,
                "cannot use {}: {reason} (the shadow resolves names with the pod's DNS \
                 configuration; check the pod's dnsPolicy and dnsConfig)",
                path.display()
            ),
            ResolveError::BadName { host, reason } => {
                write!(
                    f,
                    "cannot resolve `{host}`: not a valid host name ({reason})"
                )
            }
            ResolveError::NotFound { host } => {
                write!(f, "cannot resolve `{host}`: no such host")
            }
            ResolveError::NoAddress { host } => {
                write!(f, "cannot resolve `{host}`: the name has no address")
            }
            ResolveError::NoAnswer {
                host,
                nameservers,
                reason,
            } => write!(
                f,
                "cannot resolve `{host}`: no answer from the nameserver(s) {nameservers}: {reason}"
            ),
        }
    }
}

impl std::error::Error for ResolveError {}

impl From<ResolveError> for io::Error {
    fn from(err: ResolveError) -> io::Error {
        io::Error::other(err)
    }
}

/// Resolves host names with the pod's `/etc/hosts` and `/etc/resolv.conf` (see the
/// module documentation). Cheap to clone; clones share the files read.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    resolv_conf: PathBuf,
    hosts: PathBuf,
    /// The port every nameserver is asked on: 53 (`resolv.conf` has no port; unit
    /// tests run their nameserver on a port of their own).
    port: u16,
    loaded: OnceCell<Loaded>,
}

struct Loaded {
    dns: TokioResolver,
    hosts: Hosts,
    /// The nameservers, for messages.
    nameservers: String,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("resolv_conf", &self.inner.resolv_conf)
            .field("hosts", &self.inner.hosts)
            .finish_non_exhaustive()
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new(RESOLV_CONF, HOSTS)
    }
}

impl Resolver {
    /// A resolver that reads these files (at its first lookup of a name) instead of
    /// [`RESOLV_CONF`] and [`HOSTS`].
    pub fn new(resolv_conf: impl Into<PathBuf>, hosts: impl Into<PathBuf>) -> Resolver {
        Resolver::with_port(resolv_conf.into(), hosts.into(), 53)
    }

    fn with_port(resolv_conf: PathBuf, hosts: PathBuf, port: u16) -> Resolver {
        Resolver {
            inner: Arc::new(Inner {
                resolv_conf,
                hosts,
                port,
                loaded: OnceCell::new(),
            }),
        }
    }

    /// The addresses of `host` with `port`, in the order to try them (IPv4 first).
    ///
    /// # Errors
    ///
    /// [`ResolveError`]: why there is none.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        Ok(self
            .lookup_ips(host)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    async fn lookup_ips(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = Name::from_str(host).map_err(|e| ResolveError::BadName {
            host: host.to_owned(),
            reason: e.to_string(),
        })?;
        let loaded = self
            .inner
            .loaded
            .get_or_try_init(|| async { self.load() })
            .await?;
        let from_file = loaded.hosts_file(&name);
        if !from_file.is_empty() {
            return Ok(from_file);
        }
        match loaded.dns.lookup_ip(name).await {
            Ok(found) => {
                let ips: Vec<IpAddr> = found.iter().collect();
                if ips.is_empty() {
                    Err(ResolveError::NoAddress {
                        host: host.to_owned(),
                    })
                } else {
                    Ok(ips)
                }
            }
            Err(err) => Err(loaded.classify(host, err)),
        }
    }

    /// Reads both files and builds the DNS resolver.
    fn load(&self) -> Result<Loaded, ResolveError> {
        let conf_path = &self.inner.resolv_conf;
        let config_error = |reason: String| ResolveError::Config {
            path: conf_path.clone(),
            reason,
        };
        let text = std::fs::read(conf_path).map_err(|e| config_error(e.to_string()))?;
        let (config, opts) = hickory_resolver::system_conf::parse_resolv_conf(text)
            .map_err(|e| config_error(e.to_string()))?;
        let hosts = read_hosts(&self.inner.hosts);
        let loaded = Loaded::new(config, opts, hosts, self.inner.port)
            .map_err(|e| config_error(e.to_string()))?;
        Ok(loaded)
    }
}

/// The hosts file; an absent or unreadable one is empty (as for the C library).
fn read_hosts(path: &Path) -> Hosts {
    let mut hosts = Hosts::default();
    if let Ok(file) = std::fs::File::open(path) {
        // A line it cannot parse is skipped (hickory logs it); a read error leaves
        // what was read so far.
        let _ = hosts.read_hosts_conf(file);
    }
    hosts
}

impl Loaded {
    fn new(
        config: ResolverConfig,
        mut opts: ResolverOpts,
        hosts: Hosts,
        port: u16,
    ) -> Result<Loaded, NetError> {
        let mut servers = config.name_servers().to_vec();
        for server in &mut servers {
            for connection in &mut server.connections {
                connection.port = port;
            }
        }
        let nameservers = servers
            .iter()
            .map(|s| match port {
                53 => s.ip.to_string(),
                _ => SocketAddr::new(s.ip, port).to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let config =
            ResolverConfig::from_parts(config.domain().cloned(), config.search().to_vec(), servers);
        // Both families, as `getaddrinfo` asks for them (A and AAAA in parallel, the
        // IPv4 addresses first).
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // No cache (see the module documentation): nothing kept, and nothing would
        // stay valid.
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        // The hosts file is ours (for the name as given only, and from our path).
        opts.use_hosts_file = ResolveHosts::Never;
        let dns = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()?;
        Ok(Loaded {
            dns,
            hosts,
            nameservers,
        })
    }

    /// The addresses the hosts file gives `name` (IPv4 first), if any.
    fn hosts_file(&self, name: &Name) -> Vec<IpAddr> {
        [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|kind| {
                self.hosts
                    .lookup_static_host(&Query::query(name.clone(), kind))
            })
            .flat_map(|lookup| {
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| r.data.ip_addr())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn classify(&self, host: &str, err: NetError) -> ResolveError {
        let no_answer = |reason: String| ResolveError::NoAnswer {
            host: host.to_owned(),
            nameservers: self.nameservers.clone(),
            reason,
        };
        match err {
            NetError::Dns(DnsError::NoRecordsFound(no)) => match no.response_code {
                ResponseCode::NXDomain => ResolveError::NotFound {
                    host: host.to_owned(),
                },
                ResponseCode::NoError => ResolveError::NoAddress {
                    host: host.to_owned(),
                },
                code => no_answer(format!("the answer was {code}")),
            },
            NetError::Dns(DnsError::ResponseCode(code)) => {
                no_answer(format!("the answer was {code}"))
            }
            NetError::Timeout => no_answer("timed out".to_owned()),
            NetError::Io(e) => no_answer(e.to_string()),
            NetError::Proto(e) => ResolveError::BadName {
                host: host.to_owned(),
                reason: e.to_string(),
            },
            other => no_answer(other.to_string()),
        }
    }
}

/// The future of [`Resolver`]'s `tower::Service` (the HTTP client's DNS).
pub type Resolving =
    Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

/// The resolver of hyper-util's HTTP connector (the Kubernetes client, [`crate::cluster`]):
/// addresses with port 0, which the connector replaces with the URL's.
impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let resolver = self.clone();
        Box::pin(async move {
            let addrs = resolver.lookup(name.as_str(), 0).await?;
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    //! The glue, against a real nameserver on the loopback (a UDP socket of the test's
    //! own that answers from a table and records what it was asked).

    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    use hickory_resolver::proto::op::{Message, MessageType};
    use hickory_resolver::proto::rr::rdata::{A, SOA};
    use hickory_resolver::proto::rr::{RData, Record};
    use tokio::net::UdpSocket;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const WEB: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 7);

    /// A nameserver for `web.dev.svc.cluster.local` and `web.dev` (absolute) only;
    /// NXDOMAIN for the rest, or no answer at all when `silent`.
    struct Nameserver {
        port: u16,
        asked: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Nameserver {
        async fn start(silent: bool) -> io::Result<Nameserver> {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let port = socket.local_addr()?.port();
            let asked = Arc::new(Mutex::new(Vec::new()));
            let record = Arc::clone(&asked);
            let task = tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
                    let Ok(query) = Message::from_vec(&buf[..len]) else {
                        continue;
                    };
                    let Some(q) = query.queries.first().cloned() else {
                        continue;
                    };
                    let name = q.name().to_ascii();
                    record
                        .lock()
                        .expect("not poisoned")
                        .push(format!("{name} {}", q.query_type()));
                    if silent {
                        continue;
                    }
                    let mut reply = Message::new(
                        query.metadata.id,
                        MessageType::Response,
                        query.metadata.op_code,
                    );
                    reply.metadata.recursion_desired = query.metadata.recursion_desired;
                    reply.metadata.recursion_available = true;
                    reply.add_query(q.clone());
                    if name == "web.dev.svc.cluster.local." || name == "web.dev." {
                        if q.query_type() == RecordType::A {
                            reply.add_answer(Record::from_rdata(
                                q.name().clone(),
                                30,
                                RData::A(A(WEB)),
                            ));
                        }
                    } else {
                        reply.metadata.response_code = ResponseCode::NXDomain;
                        let soa = SOA::new(
                            Name::from_ascii("ns.dns.cluster.local.").expect("valid"),
                            Name::from_ascii("hostmaster.cluster.local.").expect("valid"),
                            1,
                            7200,
                            1800,
                            86400,
                            5,
                        );
                        reply.add_authority(Record::from_rdata(
                            Name::from_ascii("cluster.local.").expect("valid"),
                            5,
                            RData::SOA(soa),
                        ));
                    }
                    let Ok(bytes) = reply.to_vec() else { continue };
                    let _ = socket.send_to(&bytes, peer).await;
                }
            });
            Ok(Nameserver { port, asked, task })
        }

        /// The names asked, in order, each once (A and AAAA go out together).
        fn names(&self) -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            for a in self.asked.lock().expect("not poisoned").iter() {
                let name = a.split(' ').next().unwrap_or_default().to_owned();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            out
        }
    }

    impl Drop for Nameserver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A directory with `resolv.conf` and `hosts`, removed on drop.
    struct Files(PathBuf);

    impl Files {
        fn new(resolv_conf: &str, hosts: &str) -> io::Result<Files> {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("kt-shadow-resolve-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("resolv.conf"), resolv_conf)?;
            std::fs::write(dir.join("hosts"), hosts)?;
            Ok(Files(dir))
        }

        fn resolver(&self, port: u16) -> Resolver {
            Resolver::with_port(self.0.join("resolv.conf"), self.0.join("hosts"), port)
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A pod's resolv.conf as the kubelet writes it (ClusterFirst), with a short timeout.
    const POD: &str = "nameserver 127.0.0.1\n\
                       search dev.svc.cluster.local svc.cluster.local cluster.local\n\
                       options ndots:5 timeout:1 attempts:1\n";

    #[tokio::test]
    async fn a_short_name_is_found_through_the_search_list() -> TestResult {
        let ns = Nameserver::start(false).await?;
        let files = Files::new(POD, "")?;
        let found = files.resolver(ns.port).lookup("web", 8080).await?;
        assert_eq!(found, vec![SocketAddr::from((WEB, 8080))]);
        assert_eq!(ns.names(), ["web.dev.svc.cluster.local."]);
        Ok(())
    }

    #[tokio::test]
    async fn ndots_decides_whether_the_name_is_tried_as_is_first() -> TestResult {
        // ndots:5: `web.dev` (one dot) goes through the search list first.
        let ns = Nameserver::start(false).await?;
        let files = Files::new(POD, "")?;
        let found = files.resolver(ns.port).lookup("web.dev", 80).await?;
        assert_eq!(found, vec![SocketAddr::from((WEB, 80))]);
        assert_eq!(ns.names()[0], "web.dev.dev.svc.cluster.local.");

        // ndots:1: the same name is tried as an absolute name first.
        let ns = Nameserver::start(false).await?;
        let files = Files::new(&POD.replace("ndots:5", "ndots:1"), "")?;
        let found = files.resolver(ns.port).lookup("web.dev", 80).await?;
        assert_eq!(found, vec![SocketAddr::from((WEB, 80))]);
        assert_eq!(ns.names(), ["web.dev."]);
        Ok(())
    }

    #[tokio::test]
    async fn a_name_found_nowhere_is_not_found_after_the_whole_search_list() -> TestResult {
        let ns = Nameserver::start(false).await?;
        let files = Files::new(POD, "")?;
        let err = files
            .resolver(ns.port)
            .lookup("nope", 80)
            .await
            .expect_err("no such name");
        assert_eq!(
            err,
            ResolveError::NotFound {
                host: "nope".to_owned()
            }
        );
        assert_eq!(err.to_string(), "cannot resolve `nope`: no such host");
        assert_eq!(
            ns.names(),
            [
                "nope.dev.svc.cluster.local.",
                "nope.svc.cluster.local.",
                "nope.cluster.local.",
                "nope."
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn ip_literals_never_touch_dns_or_the_files() -> TestResult {
        let ns = Nameserver::start(true).await?;
        // Not even read: the files do not exist.
        let resolver = Resolver::with_port(
            PathBuf::from("/nonexistent/resolv.conf"),
            PathBuf::from("/nonexistent/hosts"),
            ns.port,
        );
        assert_eq!(
            resolver.lookup("10.96.0.1", 443).await?,
            vec![SocketAddr::from(([10, 96, 0, 1], 443))]
        );
        assert_eq!(
            resolver.lookup("fd00::1", 53).await?,
            vec!["[fd00::1]:53".parse::<SocketAddr>()?]
        );
        assert!(ns.names().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn the_hosts_file_answers_before_dns() -> TestResult {
        let ns = Nameserver::start(true).await?;
        let files = Files::new(
            POD,
            "127.0.0.1 localhost\n::1 localhost\n10.244.0.9 shadow-abc shadow-abc.dev.pod\n",
        )?;
        let resolver = files.resolver(ns.port);
        assert_eq!(
            resolver.lookup("shadow-abc", 22).await?,
            vec![SocketAddr::from(([10, 244, 0, 9], 22))]
        );
        assert_eq!(
            resolver.lookup("localhost", 80).await?,
            vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, 80)),
                "[::1]:80".parse::<SocketAddr>()?
            ]
        );
        assert!(ns.names().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn an_unreachable_nameserver_is_an_error_naming_it() -> TestResult {
        // A port nothing listens on (the socket is closed again).
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await?
            .local_addr()?
            .port();
        let files = Files::new("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n", "")?;
        let err = files
            .resolver(port)
            .lookup("web.dev.svc.cluster.local", 80)
            .await
            .expect_err("nobody answers");
        let ResolveError::NoAnswer { nameservers, .. } = &err else {
            return Err(format!("expected NoAnswer, got {err:?}").into());
        };
        assert_eq!(nameservers, &format!("127.0.0.1:{port}"));
        assert!(err.to_string().starts_with(&format!(
            "cannot resolve `web.dev.svc.cluster.local`: no answer from the nameserver(s) \
             127.0.0.1:{port}: "
        )));
        Ok(())
    }

    #[tokio::test]
    async fn a_silent_nameserver_times_out_retried_as_resolv_conf_says() -> TestResult {
        let mut a_queries = Vec::new();
        for attempts in [1, 3] {
            let ns = Nameserver::start(true).await?;
            let files = Files::new(
                &format!("nameserver 127.0.0.1\noptions timeout:1 attempts:{attempts}\n"),
                "",
            )?;
            let err = files
                .resolver(ns.port)
                .lookup("web.dev.svc.cluster.local", 80)
                .await
                .expect_err("nobody answers");
            assert!(
                matches!(&err, ResolveError::NoAnswer { reason, .. } if reason == "timed out"),
                "{err:?}"
            );
            let asked = ns.asked.lock().expect("not poisoned").clone();
            a_queries.push(asked.iter().filter(|q| q.ends_with(" A")).count());
        }
        assert!(a_queries[0] < a_queries[1], "A queries sent: {a_queries:?}");
        Ok(())
    }

    #[tokio::test]
    async fn an_unusable_resolv_conf_says_which_file_and_is_read_again() -> TestResult {
        let ns = Nameserver::start(false).await?;
        let files = Files::new("search dev.svc.cluster.local\n", "")?;
        let resolver = files.resolver(ns.port);
        let err = resolver.lookup("web", 80).await.expect_err("no nameserver");
        assert!(
            matches!(&err, ResolveError::Config { path, .. } if path.ends_with("resolv.conf")),
            "{err:?}"
        );
        assert!(err.to_string().contains("no nameservers"), "{err}");

        // Fixed: the next lookup reads it again.
        std::fs::write(files.0.join("resolv.conf"), POD)?;
        assert_eq!(
            resolver.lookup("web", 80).await?,
            vec![SocketAddr::from((WEB, 80))]
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_bad_name_is_refused_without_a_query() -> TestResult {
        let ns = Nameserver::start(true).await?;
        let files = Files::new(POD, "")?;
        let err = files
            .resolver(ns.port)
            .lookup("bad..name", 80)
            .await
            .expect_err("invalid name");
        assert!(matches!(err, ResolveError::BadName { .. }), "{err:?}");
        assert!(ns.names().is_empty());
        Ok(())
    }
}
