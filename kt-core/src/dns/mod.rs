//! Cluster DNS through the tunnel: queries go over DNS-over-TCP on a `direct-tcpip`
//! channel to the cluster DNS Service (this works with both kt-shadow and a stock
//! OpenSSH shadow), with the search list of a pod in the session's namespace applied
//! here, as a pod's resolver would (`ndots:5`).

pub(crate) mod discover;
pub(crate) mod hosts;
pub(crate) mod install;
pub(crate) mod record;
pub(crate) mod resolved;
pub(crate) mod resolver_dir;
pub(crate) mod server;
pub(crate) mod system;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

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

/// A cached answer.
#[derive(Clone)]
struct Cached {
    ips: Vec<IpAddr>,
    expires: Instant,
}

/// Answers are cached for their TTL, within these bounds.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(30);

/// Names kept in the cache before it is cleared.
const CACHE_LIMIT: usize = 4096;

/// The resolver of a session.
pub(crate) struct Resolver {
    tunnel: Arc<Tunnel>,
    /// The DNS server as the shadow connects to it (an IP, or a name the shadow resolves).
    server: String,
    search: SearchList,
    timeout: Duration,
    /// One entry per name; lookups of the same name queue on its lock, so concurrent
    /// connections to one Service make one lookup.
    cache: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

impl Resolver {
    pub(crate) fn new(
        tunnel: Arc<Tunnel>,
        server: String,
        search: SearchList,
        timeout: Duration,
    ) -> Resolver {
        Resolver {
            tunnel,
            server,
            search,
            timeout,
            cache: Mutex::new(HashMap::new()),
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
        let candidates = self.search.candidates(&key);
        self.cached(key.clone(), &key, candidates).await
    }

    /// The addresses of the first of `candidates` (absolute names, tried in order over
    /// one connection) that the cluster knows. The local DNS server uses it to try a
    /// short name's search-list expansions without ever asking the cluster for the
    /// name as it is.
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
        self.cached(key, &name, candidates).await
    }

    /// The cached answer under `key`, or a lookup of `candidates` (for `name`).
    async fn cached(
        &self,
        key: String,
        name: &str,
        candidates: Vec<String>,
    ) -> Result<Vec<IpAddr>> {
        let slot = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            Arc::clone(cache.entry(key).or_default())
        };
        let mut entry = slot.lock().await;
        if let Some(cached) = entry.as_ref().filter(|c| c.expires > Instant::now()) {
            return Ok(cached.ips.clone());
        }
        let (ips, ttl) = self.lookup(name, candidates).await?;
        *entry = Some(Cached {
            ips: ips.clone(),
            expires: Instant::now() + ttl.clamp(MIN_TTL, MAX_TTL),
        });
        Ok(ips)
    }

    /// Tries `candidates` (for `name`) over one DNS-over-TCP connection through the
    /// tunnel.
    async fn lookup(&self, name: &str, candidates: Vec<String>) -> Result<(Vec<IpAddr>, Duration)> {
        let dns_error = |reason: String| Error::Dns {
            name: name.to_owned(),
            server: self.server.clone(),
            reason,
        };
        if name.is_empty() || name.len() > 253 {
            return Err(Error::NameNotFound {
                name: name.to_owned(),
                tried: Vec::new(),
            });
        }
        let channel = self
            .tunnel
            .open(&self.server, DNS_PORT)
            .await
            .map_err(|e| dns_error(format!("cannot reach the DNS server: {e}")))?;
        let mut stream = channel.into_stream();
        let mut tried = Vec::new();
        let mut failures = Vec::new();
        for candidate in candidates {
            let Ok(qname) = Name::from_ascii(&candidate) else {
                continue;
            };
            tried.push(candidate.trim_end_matches('.').to_owned());
            let exchange = async {
                let ids = [rand::random::<u16>(), rand::random::<u16>()];
                let mut wire = Vec::new();
                for (id, rtype) in ids.iter().zip([RecordType::A, RecordType::AAAA]) {
                    let mut msg = Message::new(*id, MessageType::Query, OpCode::Query);
                    msg.metadata.recursion_desired = true;
                    msg.add_query(Query::query(qname.clone(), rtype));
                    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
                    let len = u16::try_from(bytes.len()).map_err(|e| e.to_string())?;
                    wire.extend_from_slice(&len.to_be_bytes());
                    wire.extend_from_slice(&bytes);
                }
                stream.write_all(&wire).await.map_err(|e| e.to_string())?;
                let mut answers = Vec::new();
                while answers.len() < 2 {
                    let len = stream.read_u16().await.map_err(|e| e.to_string())?;
                    let mut buf = vec![0u8; usize::from(len)];
                    stream
                        .read_exact(&mut buf)
                        .await
                        .map_err(|e| e.to_string())?;
                    let msg = Message::from_vec(&buf).map_err(|e| e.to_string())?;
                    if ids.contains(&msg.metadata.id) {
                        answers.push(msg);
                    }
                }
                Ok::<_, String>(answers)
            };
            let answers = tokio::time::timeout(self.timeout, exchange)
                .await
                .map_err(|_| dns_error(format!("no answer within {:?}", self.timeout)))?
                .map_err(dns_error)?;
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            let mut ttl = u32::MAX;
            for msg in &answers {
                let code = msg.metadata.response_code;
                if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
                    failures.push(format!("{candidate}: {code}"));
                }
                for record in &msg.answers {
                    match &record.data {
                        RData::A(a) => v4.push(IpAddr::V4(a.0)),
                        RData::AAAA(a) => v6.push(IpAddr::V6(a.0)),
                        _ => continue,
                    }
                    ttl = ttl.min(record.ttl);
                }
            }
            if !v4.is_empty() || !v6.is_empty() {
                v4.extend(v6);
                return Ok((v4, Duration::from_secs(u64::from(ttl))));
            }
        }
        if tried.is_empty() {
            return Err(dns_error("not a valid DNS name".to_owned()));
        }
        if !failures.is_empty() && failures.len() == tried.len() * 2 {
            return Err(dns_error(format!(
                "the server failed every query: {}",
                failures.join("; ")
            )));
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
}
