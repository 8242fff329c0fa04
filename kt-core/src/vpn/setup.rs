//! VPN mode in a session: recover what a crashed session left, discover the ranges,
//! start the device and stack, the local DNS server and the system DNS hooks; and take
//! them down again in the reverse order.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::ListParams;

use super::flows::TunnelFlows;
use super::{Vpn, VpnInfo};
use crate::cluster::Cluster;
use crate::cluster::ranges;
use crate::dns::hosts::hosts_entries;
use crate::dns::install::{self, SystemDnsGuard, SystemDnsPlan, SystemPaths};
use crate::dns::server::{ClusterResolver, DnsServer, DnsServerConfig};
use crate::dns::system::ResolvConf;
use crate::dns::{DNS_PORT, Resolver, SearchList};
use crate::error::{Error, Result};
use crate::events::{Event, EventBus};
use crate::options::{DnsMode, VpnOptions};
use crate::outbound::Dialer;
use crate::task::Tasks;
use ipnet::IpNet;

/// The running VPN of a session.
pub(crate) struct VpnState {
    pub(crate) info: VpnInfo,
    device: tokio::sync::Mutex<Option<Vpn>>,
    dns_server: tokio::sync::Mutex<Option<DnsServer>>,
    dns_guard: Mutex<Option<SystemDnsGuard>>,
}

/// What the VPN setup needs from the session being built.
pub(crate) struct VpnContext<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) session: &'a str,
    pub(crate) cluster_domain: &'a str,
    pub(crate) dialer: &'a Dialer,
    pub(crate) tasks: &'a Tasks,
    pub(crate) events: &'a EventBus,
}

/// The cluster resolver behind the local DNS server: the session's own.
struct SessionNames(Arc<Resolver>);

impl ClusterResolver for SessionNames {
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>> {
        self.0.resolve(name).await
    }
}

/// Fails with [`Error::NeedsCapability`] when this process cannot create a tun device
/// (no CAP_NET_ADMIN in its effective set), before anything is created in the cluster.
pub(crate) fn check_capability() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    match effective {
        Some(caps) if caps & (1 << CAP_NET_ADMIN) == 0 => Err(Error::NeedsCapability {
            action: "VPN mode (creating a tun device and its routes)".to_owned(),
            capability: "CAP_NET_ADMIN",
        }),
        // Has it, or cannot tell (not Linux): creating the device will say.
        _ => Ok(()),
    }
}

/// Restores system DNS settings left by sessions that died without closing, before
/// anything reads them. Failures are logged, not fatal: install reports them.
pub(crate) fn recover_left_overs(events: &EventBus) {
    match install::recover(&SystemPaths::default()) {
        Ok(restored) => {
            for what in restored {
                events.emit(Event::Recovered { what });
            }
        }
        Err(e) => tracing::warn!(target: "kt", "recovering earlier system DNS changes: {e}"),
    }
}

impl VpnState {
    /// Starts VPN mode. On error, whatever was started is taken down again.
    pub(crate) async fn start(opts: &VpnOptions, cx: VpnContext<'_>) -> Result<VpnState> {
        let routes = plan_routes(opts, cx.cluster, cx.events).await?;
        let flows = TunnelFlows {
            dialer: cx.dialer.clone(),
            tasks: cx.tasks.clone(),
        };
        let vpn = Vpn::start(opts, &routes, flows, cx.tasks.cancel.child_token()).await?;
        cx.events.emit(Event::VpnUp {
            device: vpn.name().to_owned(),
            routes: routes.iter().map(ToString::to_string).collect(),
        });
        let state = VpnState {
            info: VpnInfo {
                device: vpn.name().to_owned(),
                routes: routes.clone(),
                dns_addr: None,
                dns_mode: DnsMode::Off,
                dns_detail: String::new(),
            },
            device: tokio::sync::Mutex::new(Some(vpn)),
            dns_server: tokio::sync::Mutex::new(None),
            dns_guard: Mutex::new(None),
        };
        match state.start_dns(opts, &cx).await {
            Ok(state) => Ok(state),
            Err((state, e)) => {
                state.stop().await;
                Err(e)
            }
        }
    }

    /// The local DNS server and the system hook.
    async fn start_dns(
        mut self,
        opts: &VpnOptions,
        cx: &VpnContext<'_>,
    ) -> std::result::Result<VpnState, (VpnState, Error)> {
        let paths = SystemPaths::default();
        let mode = install::resolve_auto(&opts.dns, &paths);
        let found = self
            .device
            .get_mut()
            .as_ref()
            .map(|v| (v.name().to_owned(), v.index(), v.address()));
        let Some((name, index, address)) = found else {
            return Ok(self);
        };
        let search = SearchList::for_namespace(&cx.cluster.namespace, cx.cluster_domain).domains;
        let upstream = current_upstream(&paths);
        let server = match start_dns_server(opts, &mode, address, upstream, cx).await {
            Ok(s) => s,
            Err(e) => return Err((self, e)),
        };
        let listen = server.local_addr();
        *self.dns_server.get_mut() = Some(server);
        let hosts = match &mode {
            DnsMode::Hosts(namespaces) => match hosts_for(cx, namespaces).await {
                Ok(h) => h,
                Err(e) => return Err((self, e)),
            },
            _ => Vec::new(),
        };
        let plan = SystemDnsPlan {
            mode: mode.clone(),
            listen,
            search,
            cluster_domain: cx.cluster_domain.to_owned(),
            link: Some((name, index)),
            hosts,
            session: cx.session.to_owned(),
            paths,
        };
        let detail = describe(&plan);
        let installed = tokio::task::spawn_blocking(move || install::install(&plan)).await;
        let guard = match installed {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => return Err((self, e)),
            Err(e) => {
                let e = Error::Vpn {
                    action: "install system DNS".to_owned(),
                    source: std::io::Error::other(e.to_string()),
                };
                return Err((self, e));
            }
        };
        let mode = guard.mode().clone();
        cx.events.emit(Event::DnsInstalled {
            server: listen,
            detail: detail.clone(),
        });
        *self
            .dns_guard
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Some(guard);
        self.info.dns_addr = Some(listen);
        self.info.dns_mode = mode;
        self.info.dns_detail = detail;
        Ok(self)
    }

    /// Restores system DNS, stops the DNS server and removes the device (with its
    /// routes). Safe to call twice.
    pub(crate) async fn stop(&self) {
        self.restore_dns();
        if let Some(server) = self.dns_server.lock().await.take() {
            server.shutdown().await;
        }
        if let Some(vpn) = self.device.lock().await.take() {
            vpn.stop().await;
        }
    }

    /// Puts the system DNS configuration back (synchronous: also used on drop).
    pub(crate) fn restore_dns(&self) {
        let guard = self
            .dns_guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(guard) = guard
            && let Err(e) = guard.restore()
        {
            tracing::warn!(target: "kt", "restoring system DNS: {e}");
        }
    }
}

/// The upstream the local DNS server forwards to: the first nameserver of the
/// resolv.conf in effect now (after recovery), else systemd-resolved's stub address.
fn current_upstream(paths: &SystemPaths) -> SocketAddr {
    let content = std::fs::read_to_string(&paths.resolv_conf).unwrap_or_default();
    let ip = ResolvConf::upstream(&content).unwrap_or(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)));
    SocketAddr::new(ip, DNS_PORT)
}

/// What a plan changes, in words (for the event and `VpnInfo`).
fn describe(plan: &SystemDnsPlan) -> String {
    let p = &plan.paths;
    match &plan.mode {
        DnsMode::ResolvConf => format!("first nameserver in {}", p.resolv_conf.display()),
        DnsMode::Resolved => match &plan.link {
            Some((name, _)) => format!("systemd-resolved on link {name}"),
            None => "systemd-resolved".to_owned(),
        },
        DnsMode::ResolverDir => format!("files in {}", p.resolver_dir.display()),
        DnsMode::Hosts(_) => format!(
            "{} Service names in {}",
            plan.hosts
                .iter()
                .map(|(_, names)| names.len())
                .sum::<usize>(),
            p.hosts.display()
        ),
        _ => "system resolver left alone".to_owned(),
    }
}

/// The routes: discovered ranges plus includes, minus excludes and what must never be
/// routed ([`keep_outs`]). Too-broad discovered ranges are dropped with a warning.
async fn plan_routes(
    opts: &VpnOptions,
    cluster: &Cluster,
    events: &EventBus,
) -> Result<Vec<IpNet>> {
    let found = if opts.discover {
        ranges::discover(cluster).await?
    } else {
        ranges::ClusterRanges::default()
    };
    for source in &found.sources {
        tracing::info!(target: "kt", "VPN range: {source}");
    }
    let keep_out = keep_outs(cluster).await?;
    let plan = ranges::plan(&found, &opts.include, &opts.exclude, &keep_out);
    for refused in &plan.refused {
        tracing::warn!(target: "kt", "VPN: {refused}");
    }
    for line in &plan.kept_out {
        tracing::info!(target: "kt", "VPN: {line}");
    }
    if plan.routes.is_empty() {
        return Err(Error::Vpn {
            action: "choose routes".to_owned(),
            source: std::io::Error::other(
                "no range to route: the cluster's ranges were not found and no \
                 include range was given; pass the pod and Service ranges as include \
                 ranges (ktctl --include-cidr 10.244.0.0/16,10.96.0.0/12)",
            ),
        });
    }
    let _ = events;
    Ok(plan.routes)
}

/// What VPN mode must never route, from this process's point of view (its network
/// namespace and its /etc/resolv.conf): the API server and the kubeconfig's proxy
/// (routing them would send the tunnel into itself), the upstream DNS servers (the
/// local DNS server forwards to them), and the machine's local subnets and gateways.
pub(crate) async fn keep_outs(cluster: &Cluster) -> Result<Vec<ranges::KeepOut>> {
    let mut out: Vec<ranges::KeepOut> = ranges::api_server_addrs(&cluster.server)
        .await
        .into_iter()
        .map(|ip| ranges::KeepOut::address(ip, "the API server"))
        .collect();
    if let Some(proxy) = &cluster.proxy {
        let what = "the kubeconfig's proxy-url";
        for ip in ranges::url_host_addrs(proxy, what).await {
            out.push(ranges::KeepOut::address(ip, what));
        }
    }
    let paths = SystemPaths::default();
    for (file, why) in [
        (paths.resolv_conf.as_path(), "an upstream DNS server"),
        (
            std::path::Path::new(RESOLVED_UPSTREAMS),
            "an upstream DNS server of systemd-resolved",
        ),
    ] {
        let content = std::fs::read_to_string(file).unwrap_or_default();
        for ip in nameservers(&content) {
            out.push(ranges::KeepOut::address(
                ip,
                format!("{why} ({})", file.display()),
            ));
        }
    }
    out.extend(super::device::local_networks().await?);
    Ok(out)
}

/// Where systemd-resolved lists the DNS servers it forwards to (when /etc/resolv.conf
/// names only its stub, 127.0.0.53).
const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

/// Every `nameserver` address of a resolv.conf (a `%zone` suffix dropped).
fn nameservers(content: &str) -> Vec<IpAddr> {
    content
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next()?.split('%').next()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Binds the local DNS server: where asked, else port 53 on a loopback address (or on
/// the tun address for systemd-resolved, which wants a server on the link). Wherever it
/// listens, it answers only [`dns_sources`].
async fn start_dns_server(
    opts: &VpnOptions,
    mode: &DnsMode,
    tun_address: Ipv4Addr,
    upstream: SocketAddr,
    cx: &VpnContext<'_>,
) -> Result<DnsServer> {
    let candidates: Vec<SocketAddr> = match (opts.dns_listen, mode) {
        (Some(addr), _) => vec![addr],
        (None, DnsMode::Resolved) => vec![SocketAddr::from((tun_address, DNS_PORT))],
        (None, _) => [1, 2, 3, 4]
            .into_iter()
            .map(|last| SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), DNS_PORT)))
            .collect(),
    };
    let resolver = Arc::new(SessionNames(Arc::clone(&cx.dialer.resolver)));
    let mut last = None;
    for listen in candidates {
        let mut config = DnsServerConfig::new(listen, upstream).namespace(&cx.cluster.namespace);
        config.cluster_domain = cx.cluster_domain.to_owned();
        config.allowed_sources = dns_sources(tun_address, listen);
        match DnsServer::start(config, Arc::clone(&resolver)).await {
            Ok(server) => return Ok(server),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(Error::Closed))
}

/// Who may query the local DNS server: loopback, the tun device's own address (a query
/// to a server on the tun link — systemd-resolved's — comes from it) and the address
/// the server listens on, unless a wildcard (a process of this machine asking that
/// address sends from it). Each is an address of this machine, so an answer never
/// leaves it; a neighbour on another interface, a container bridge or anyone else that
/// routes to the tun address gets none.
fn dns_sources(tun_address: Ipv4Addr, listen: SocketAddr) -> Vec<IpNet> {
    let mut sources = DnsServerConfig::loopback();
    for ip in [IpAddr::V4(tun_address), listen.ip().to_canonical()] {
        if !ip.is_unspecified() && !sources.iter().any(|net| net.contains(&ip)) {
            sources.push(IpNet::from(ip));
        }
    }
    sources
}

/// Hosts-file entries for the Services of `namespaces` (the session's when empty).
async fn hosts_for(
    cx: &VpnContext<'_>,
    namespaces: &[String],
) -> Result<Vec<(IpAddr, Vec<String>)>> {
    let own = [cx.cluster.namespace.clone()];
    let namespaces = if namespaces.is_empty() {
        &own[..]
    } else {
        namespaces
    };
    let mut services = Vec::new();
    for ns in namespaces {
        let api: Api<Service> = Api::namespaced(cx.cluster.client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| cx.cluster.error(e, "list", "services", ns))?;
        for svc in list {
            let name = svc.metadata.name.clone().unwrap_or_default();
            let ip = svc
                .spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            if let Some(ip) = ip {
                services.push((name, ns.clone(), ip));
            }
        }
    }
    Ok(hosts_entries(
        &services,
        &cx.cluster.namespace,
        cx.cluster_domain,
    ))
}

/// Discovers the ranges with `opts`' kubeconfig and namespace and plans the routes
/// `vpn` would get: `(pods, services, routes, sources)`. For kt's own tests; VPN mode
/// does this itself.
#[doc(hidden)]
pub async fn discover_ranges(
    opts: &crate::ConnectOptions,
    vpn: &VpnOptions,
) -> Result<(Vec<IpNet>, Vec<IpNet>, Vec<IpNet>, Vec<String>)> {
    let cluster = Cluster::connect(opts).await?;
    let ranges = if vpn.discover {
        ranges::discover(&cluster).await?
    } else {
        ranges::ClusterRanges::default()
    };
    let keep_out = keep_outs(&cluster).await?;
    let planned = ranges::plan(&ranges, &vpn.include, &vpn.exclude, &keep_out);
    Ok((ranges.pods, ranges.services, planned.routes, ranges.sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nameserver_of_a_resolv_conf_is_an_upstream() {
        let conf = "# generated\nsearch corp.test\nnameserver 10.88.255.1\n\
                    nameserver fe80::1%eth0\n  nameserver   192.0.2.53  \n\
                    options ndots:2\nnameserver not-an-address\n";
        let want: Vec<IpAddr> = ["10.88.255.1", "fe80::1", "192.0.2.53"]
            .iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect();
        assert_eq!(nameservers(conf), want);
        assert!(nameservers("").is_empty());
    }

    #[test]
    fn dns_answers_loopback_the_tun_address_and_the_listen_address_only() {
        let net = |s: &str| s.parse::<IpNet>().unwrap_or_else(|e| panic!("{s}: {e}"));
        let tun = Ipv4Addr::new(198, 18, 0, 1);
        let loopback = vec![net("127.0.0.0/8"), net("::1/128")];
        let with = |extra: &[&str]| {
            let mut v = loopback.clone();
            v.extend(extra.iter().map(|s| net(s)));
            v
        };
        // Resolved mode: the server listens on the tun address.
        let on_tun = SocketAddr::from((tun, DNS_PORT));
        assert_eq!(dns_sources(tun, on_tun), with(&["198.18.0.1/32"]));
        // Other modes: a loopback address, already covered.
        let on_lo: SocketAddr = "127.0.0.2:53".parse().unwrap();
        assert_eq!(dns_sources(tun, on_lo), with(&["198.18.0.1/32"]));
        // An explicit listen address on another interface: that address too.
        let on_lan: SocketAddr = "10.88.255.2:53".parse().unwrap();
        assert_eq!(
            dns_sources(tun, on_lan),
            with(&["198.18.0.1/32", "10.88.255.2/32"])
        );
        let mapped: SocketAddr = "[::ffff:10.88.255.2]:53".parse().unwrap();
        assert_eq!(
            dns_sources(tun, mapped),
            with(&["198.18.0.1/32", "10.88.255.2/32"])
        );
        // A wildcard adds nothing: every source would match.
        for wildcard in ["0.0.0.0:53", "[::]:53"] {
            let any: SocketAddr = wildcard.parse().unwrap();
            assert_eq!(dns_sources(tun, any), with(&["198.18.0.1/32"]));
        }
    }
}
