//! Which address ranges the VPN routes into the cluster: the Service (ClusterIP) ranges
//! and the pod ranges, found with whatever the caller is allowed to read.
//!
//! Cluster-wide objects say it exactly, but a user with the namespace-scoped Role
//! ([`crate::VPN_ROLE_YAML`]) may not read them; every source falls back to the next when
//! the API server refuses it (any API status other than 401 Unauthorized: 403
//! Forbidden, 404 Not Found on clusters without that API, a webhook's refusal, ...).
//! A failure to reach the API server at all is an error.
//!
//! **Services**, first that gives something:
//! 1. the `networking.k8s.io/v1` **ServiceCIDR** objects (cluster-scoped; Kubernetes
//!    1.33+, beta since 1.31): every range the API server allocates ClusterIPs from;
//! 2. the API server's **range hint**: a server-side *dry-run* create of a Service with
//!    a ClusterIP no cluster uses (`0.0.0.1`, and `100::1` for IPv6) is refused with
//!    "... The range of valid IPs is 10.96.0.0/16", which names the range. Dry-run
//!    persists nothing and allocates nothing; it needs `create` on `services` in the
//!    namespace (in the shipped `kt-vpn` Role, not in `kt-connect`). With several
//!    ServiceCIDRs the API server names one of them, picked at random, so the next
//!    step still adds what it missed;
//! 3. the **ClusterIPs of the namespace's Services**, each widened to its /16 (/108
//!    for IPv6, the largest Service range Kubernetes allows), merged. This is a guess:
//!    it covers the Services that exist now and any in the same /16.
//!
//! **Pods**, first that gives something:
//! 1. the Nodes' `spec.podCIDRs` (cluster-scoped; set when the controller-manager
//!    allocates node ranges, as with kubeadm/flannel/kindnet; CNIs with their own IP
//!    pools, such as Calico or Cilium's cluster-pool, leave them empty or unused);
//! 2. the **IPs of the namespace's pods** (host-network pods excluded: theirs are node
//!    addresses), each widened to its /16 (/64 for IPv6), merged. Also a guess: pods on
//!    nodes whose range lies outside those /16s (another IP pool, a large cluster) are
//!    not covered; add them with [`crate::VpnOptions::include`].
//!
//! After either cluster-wide source, namespace Service ClusterIPs and pod IPs that fall
//! outside what it gave are added the same way (widened to /16), so a partial answer
//! (one of several ServiceCIDRs, a CNI's own pool) still reaches the namespace's own
//! pods and Services.
//!
//! [`plan`] turns the ranges into routes: discovered ∪ included, minus excluded, minus
//! what must never go into the tunnel ([`KeepOut`]): the API server's own addresses
//! ([`api_server_addrs`]; routing them would send the tunnel into itself), the
//! kubeconfig's proxy, the upstream DNS servers, the gateways and the machine's local
//! subnets. A discovered range broader than /8 (IPv4) or /32 (IPv6) is dropped with a
//! warning unless the caller includes it explicitly.

use std::fmt::Write as _;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kt_proto::labels;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::core::ObjectList;

use super::Cluster;
use crate::cluster::cidr;
use crate::error::Result;
use ipnet::IpNet;

/// The ranges found in the cluster, and where each came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClusterRanges {
    /// Pod ranges, aggregated.
    pub(crate) pods: Vec<IpNet>,
    /// Service (ClusterIP) ranges, aggregated.
    pub(crate) services: Vec<IpNet>,
    /// One line per finding, for people: "services 10.96.0.0/16 from ServiceCIDR
    /// `kubernetes`", and why a source was skipped.
    pub(crate) sources: Vec<String>,
}

/// The ClusterIPs the range probe asks for, one per family: `0.0.0.0/8` is "this
/// network" and `100::/64` the discard prefix (RFC 6666); neither can be a Service
/// range in practice.
const PROBE_IPS: [&str; 2] = ["0.0.0.1", "100::1"];

/// What the API server's refusal says before the valid range.
const RANGE_MARKER: &str = "The range of valid IPs is ";

/// How far a namespace's Service ClusterIP is widened (IPv4, IPv6) when no cluster-wide
/// source answered.
const SERVICE_GUESS: (u8, u8) = (16, 108);

/// How far a namespace's pod IP is widened (IPv4, IPv6).
const POD_GUESS: (u8, u8) = (16, 64);

/// Items per list request, so a large cluster's Nodes come in bounded pages.
const PAGE: u32 = 500;

/// Finds the cluster's pod and Service ranges; see the module docs for the sources
/// and their order.
pub(crate) async fn discover(cluster: &Cluster) -> Result<ClusterRanges> {
    let mut out = ClusterRanges::default();
    discover_services(cluster, &mut out).await?;
    discover_pods(cluster, &mut out).await?;
    for line in &out.sources {
        tracing::debug!("VPN ranges: {line}");
    }
    Ok(out)
}

async fn discover_services(cluster: &Cluster, out: &mut ClusterRanges) -> Result<()> {
    let mut skipped = Vec::new();
    match list_all(
        cluster,
        Api::<ServiceCIDR>::all(cluster.client.clone()),
        "servicecidrs",
    )
    .await?
    {
        Ok(items) => {
            for item in items {
                let name = item.metadata.name.unwrap_or_default();
                let nets = parse_nets(item.spec.and_then(|s| s.cidrs).unwrap_or_default());
                if !nets.is_empty() {
                    out.sources.push(format!(
                        "services {} from ServiceCIDR `{name}`",
                        show(&nets)
                    ));
                    out.services.extend(nets);
                }
            }
            if out.services.is_empty() {
                skipped.push("no ServiceCIDR objects".to_owned());
            }
        }
        Err(why) => skipped.push(why),
    }
    if out.services.is_empty() {
        let found = range_hint(cluster).await?;
        match found {
            Ok(nets) if !nets.is_empty() => {
                out.sources.push(format!(
                    "services {} from the API server's answer to a dry-run Service \
                     with an out-of-range ClusterIP ({})",
                    show(&nets),
                    skipped.join("; ")
                ));
                out.services.extend(nets);
            }
            Ok(_) => skipped.push("the dry-run Service's refusal named no range".to_owned()),
            Err(why) => skipped.push(why),
        }
    }
    let found_elsewhere = !out.services.is_empty();
    let ips = match list_all(cluster, cluster.services_in(&cluster.namespace), "services").await? {
        Ok(items) => items.iter().flat_map(cluster_ips).collect(),
        Err(why) => {
            skipped.push(why);
            Vec::new()
        }
    };
    let guessed = widen_uncovered(&out.services, &ips, SERVICE_GUESS);
    if !guessed.is_empty() {
        let mut line = format!(
            "services {} covering the ClusterIPs of the Services in namespace `{}`",
            show(&guessed),
            cluster.namespace
        );
        if found_elsewhere {
            line.push_str(" outside the ranges above");
        } else {
            let _ = write!(
                line,
                " ({}); other Services may lie outside",
                skipped.join("; ")
            );
        }
        out.sources.push(line);
        out.services.extend(guessed);
    }
    if out.services.is_empty() {
        out.sources
            .push(format!("services: no range found ({})", skipped.join("; ")));
    }
    out.services = cidr::aggregate(&out.services);
    Ok(())
}

async fn discover_pods(cluster: &Cluster, out: &mut ClusterRanges) -> Result<()> {
    let mut skipped = Vec::new();
    match list_all(cluster, Api::<Node>::all(cluster.client.clone()), "nodes").await? {
        Ok(items) => {
            let mut names = Vec::new();
            for node in items {
                let spec = node.spec.unwrap_or_default();
                let nets = match spec.pod_cidrs {
                    Some(list) if !list.is_empty() => parse_nets(list),
                    _ => parse_nets(spec.pod_cidr),
                };
                if !nets.is_empty() {
                    names.push(node.metadata.name.unwrap_or_default());
                    out.pods.extend(nets);
                }
            }
            // One line however many Nodes there are.
            match names.as_slice() {
                [] => skipped.push("no Node has spec.podCIDRs".to_owned()),
                [name] => out.sources.push(format!(
                    "pods {} from Node `{name}`",
                    show(&cidr::aggregate(&out.pods))
                )),
                _ => out.sources.push(format!(
                    "pods {} from the podCIDRs of {} Nodes",
                    show(&cidr::aggregate(&out.pods)),
                    names.len()
                )),
            }
        }
        Err(why) => skipped.push(why),
    }
    let found_elsewhere = !out.pods.is_empty();
    let ips = match list_all(cluster, cluster.pods(), "pods").await? {
        Ok(items) => items.iter().flat_map(pod_ips).collect(),
        Err(why) => {
            skipped.push(why);
            Vec::new()
        }
    };
    let guessed = widen_uncovered(&out.pods, &ips, POD_GUESS);
    if !guessed.is_empty() {
        let mut line = format!(
            "pods {} covering the IPs of the pods in namespace `{}`",
            show(&guessed),
            cluster.namespace
        );
        if found_elsewhere {
            line.push_str(" outside the ranges above");
        } else {
            let _ = write!(
                line,
                " ({}); pods on other nodes may lie outside",
                skipped.join("; ")
            );
        }
        out.sources.push(line);
        out.pods.extend(guessed);
    }
    if out.pods.is_empty() {
        out.sources
            .push(format!("pods: no range found ({})", skipped.join("; ")));
    }
    out.pods = cidr::aggregate(&out.pods);
    Ok(())
}

/// Asks the API server which ClusterIPs it accepts: a dry-run create of a Service with
/// an out-of-range ClusterIP, per family, and the range named in the refusal.
async fn range_hint(cluster: &Cluster) -> Result<std::result::Result<Vec<IpNet>, String>> {
    let api = cluster.services_in(&cluster.namespace);
    let params = probe_params();
    let mut nets = Vec::new();
    let mut refused = None;
    for ip in PROBE_IPS {
        match api.create(&params, &probe_service(ip)).await {
            // Accepted: the IP is in a range after all (dry-run: nothing was made), and
            // the refusal that would name it never came.
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code != 401 => {
                let found = parse_range_hint(&status.message);
                if found.is_empty() && status.code != 422 {
                    // Not the validation error asked for (403, a webhook, quota, ...):
                    // the other family would be refused the same way.
                    refused = Some(format!(
                        "dry-run create services: {} {}",
                        status.code, status.reason
                    ));
                    break;
                }
                // 422 without a range: this family is not configured on the cluster.
                nets.extend(found);
            }
            Err(e) => {
                return Err(cluster.error(
                    e,
                    "create (dry-run)",
                    "services",
                    "to learn the Service range",
                ));
            }
        }
    }
    Ok(match refused {
        Some(why) if nets.is_empty() => Err(why),
        _ => Ok(nets),
    })
}

/// How the probe is sent: as a dry run, so that even an accepted probe persists and
/// allocates nothing.
fn probe_params() -> PostParams {
    PostParams {
        dry_run: true,
        field_manager: Some("kt".to_owned()),
    }
}

/// The Service the range probe sends (never persisted: the create is a dry run).
fn probe_service(ip: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            generate_name: Some("kt-range-probe-".to_owned()),
            labels: Some(
                [(
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_VALUE.to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: Some(ip.to_owned()),
            cluster_ips: Some(vec![ip.to_owned()]),
            ports: Some(vec![ServicePort {
                port: 1,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The ranges named in an "out of range" refusal: every CIDR following
/// "The range of valid IPs is ".
fn parse_range_hint(message: &str) -> Vec<IpNet> {
    message
        .match_indices(RANGE_MARKER)
        .filter_map(|(at, _)| {
            let rest = &message[at + RANGE_MARKER.len()..];
            let token = rest
                .split(|c: char| c.is_whitespace() || matches!(c, ',' | ']' | '"' | ';'))
                .next()?;
            token.trim_end_matches('.').parse::<IpNet>().ok()
        })
        .map(|n| n.trunc())
        .collect()
}

/// Lists every object of `api` page by page. `Ok(Err(why))` when the API server
/// refused (the caller falls back); `Err` when it could not be asked.
async fn list_all<K>(
    cluster: &Cluster,
    api: Api<K>,
    resource: &'static str,
) -> Result<std::result::Result<Vec<K>, String>>
where
    K: kube::Resource + Clone + std::fmt::Debug + k8s_openapi::serde::de::DeserializeOwned,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page: ObjectList<K> = match api.list(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(status)) if status.code != 401 => {
                return Ok(Err(format!(
                    "list {resource}: {} {}",
                    status.code, status.reason
                )));
            }
            Err(e) => return Err(cluster.error(e, "list", resource, "to find the VPN's ranges")),
        };
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(Ok(items)),
        }
    }
}

/// A Service's ClusterIPs (none for headless and ExternalName Services).
fn cluster_ips(service: &Service) -> Vec<IpAddr> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let ips = match &spec.cluster_ips {
        Some(list) if !list.is_empty() => list.clone(),
        _ => spec.cluster_ip.iter().cloned().collect(),
    };
    ips.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// A pod's IPs, unless it uses the node's network (then they are the node's).
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Vec::new();
    }
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let ips: Vec<String> = match &status.pod_ips {
        Some(list) if !list.is_empty() => list.iter().map(|p| p.ip.clone()).collect(),
        _ => status.pod_ip.iter().cloned().collect(),
    };
    ips.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// The addresses of `ips` that no range of `known` holds, each widened to the prefix
/// of length `v4`/`v6`, merged.
fn widen_uncovered(known: &[IpNet], ips: &[IpAddr], (v4, v6): (u8, u8)) -> Vec<IpNet> {
    let widened: Vec<IpNet> = ips
        .iter()
        .filter(|ip| !known.iter().any(|n| n.contains(*ip)))
        .filter_map(|ip| {
            let len = if ip.is_ipv4() { v4 } else { v6 };
            IpNet::new(*ip, len).ok().map(|n| n.trunc())
        })
        .collect();
    cidr::aggregate(&widened)
}

/// Parses CIDR strings, skipping (and logging) any the API server should not have sent.
fn parse_nets(list: impl IntoIterator<Item = String>) -> Vec<IpNet> {
    list.into_iter()
        .filter_map(|s| match s.parse::<IpNet>() {
            Ok(n) => Some(n.trunc()),
            Err(e) => {
                tracing::warn!("ignoring the range `{s}` from the API server: {e}");
                None
            }
        })
        .collect()
}

/// `10.96.0.0/16, fd00::/108`.
fn show(nets: &[IpNet]) -> String {
    nets.iter()
        .map(IpNet::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The addresses of the API server in `server_url` (a kubeconfig's `server`): the IP
/// literal, or what the system resolver gives for the host name. Empty (and a warning
/// logged) when the URL has no host or the name does not resolve; the kube client
/// would then fail to connect as well.
pub(crate) async fn api_server_addrs(server_url: &str) -> Vec<IpAddr> {
    url_host_addrs(server_url, "the API server").await
}

/// The addresses of the host in `url` (`what` it is, for warnings): the IP literal, or
/// what the system resolver gives for the name. Empty (and a warning logged) when the
/// URL has no host or the name does not resolve.
pub(crate) async fn url_host_addrs(url: &str, what: &str) -> Vec<IpAddr> {
    let uri = match url.parse::<hyper::Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            tracing::warn!("cannot parse the URL of {what} `{url}`: {e}");
            return Vec::new();
        }
    };
    let Some(host) = uri.host() else {
        tracing::warn!("the URL of {what} `{url}` has no host");
        return Vec::new();
    };
    // IPv6 literals come bracketed: `https://[fd00::1]:6443`.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    let port = uri.port_u16().unwrap_or(443);
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.sort_unstable();
            ips.dedup();
            ips
        }
        Err(e) => {
            tracing::warn!("cannot resolve the host `{host}` of {what}: {e}");
            Vec::new()
        }
    }
}

/// The broadest prefix discovery may route on its own (IPv4, IPv6): a discovered range
/// broader than this (a `/7`, `0.0.0.0/0`, `2000::/3`) would take a large part of the
/// internet, or all of it, into the tunnel, and is dropped unless given as an include.
pub(crate) const BROADEST_DISCOVERED: (u8, u8) = (8, 32);

/// An address range the VPN must never route, and why: routing it into the tunnel
/// would cut the machine off from what it needs outside the cluster (the API server
/// itself, the kubeconfig's proxy, the upstream DNS servers, the gateways, the local
/// subnets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeepOut {
    /// The range (a single address as a /32 or /128).
    pub(crate) net: IpNet,
    /// What it is, for people: "the API server", "the local subnet of eth0".
    pub(crate) why: String,
}

impl KeepOut {
    /// `net` (host bits cleared), kept out because of `why`.
    pub(crate) fn new(net: IpNet, why: impl Into<String>) -> KeepOut {
        KeepOut {
            net: net.trunc(),
            why: why.into(),
        }
    }

    /// One address, kept out because of `why`.
    pub(crate) fn address(ip: IpAddr, why: impl Into<String>) -> KeepOut {
        KeepOut::new(IpNet::from(ip), why)
    }
}

/// The VPN's routes, and what was left out of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoutePlan {
    /// The prefixes to route through the tun device.
    pub(crate) routes: Vec<IpNet>,
    /// Discovered ranges dropped for being too broad, each with how to route it anyway
    /// (warnings).
    pub(crate) refused: Vec<String>,
    /// The keep-out ranges that cut into the routes, with their reasons (for the log).
    pub(crate) kept_out: Vec<String>,
}

/// Whether `net` is broader than discovery may route on its own.
fn too_broad(net: &IpNet) -> bool {
    let (v4, v6) = BROADEST_DISCOVERED;
    match net {
        IpNet::V4(n) => n.prefix_len() < v4,
        IpNet::V6(n) => n.prefix_len() < v6,
    }
}

/// The VPN's routes: the discovered ranges (those no broader than
/// [`BROADEST_DISCOVERED`]) and `include`, minus `exclude`, minus every range of
/// `keep_out`, as the fewest prefixes. Keep-outs win over explicit includes too: an
/// include covering one is split around it.
///
/// Pure: the caller gathers the keep-outs ([`api_server_addrs`],
/// `vpn::setup::keep_outs`).
pub(crate) fn plan(
    ranges: &ClusterRanges,
    include: &[IpNet],
    exclude: &[IpNet],
    keep_out: &[KeepOut],
) -> RoutePlan {
    let mut refused = Vec::new();
    let mut wanted: Vec<IpNet> = include.to_vec();
    for net in ranges.pods.iter().chain(&ranges.services) {
        if !too_broad(net) {
            wanted.push(*net);
        } else if !include.iter().any(|i| i.contains(net)) {
            let (v4, v6) = BROADEST_DISCOVERED;
            refused.push(format!(
                "not routing the discovered range {net}: it is broader than /{v4} (IPv4) \
                 or /{v6} (IPv6) and would take much of the internet into the cluster; if the \
                 cluster really uses it, route it explicitly as an include range \
                 (ktctl --include-cidr {net})"
            ));
        }
    }
    let wanted = cidr::aggregate(&wanted);
    let mut kept_out = Vec::new();
    for keep in keep_out {
        // Two prefixes overlap exactly when one holds the other.
        let cuts = wanted
            .iter()
            .any(|w| w.contains(&keep.net) || keep.net.contains(w));
        if cuts && !kept_out.iter().any(|(n, _)| *n == keep.net) {
            kept_out.push((keep.net, &keep.why));
        }
    }
    let holes: Vec<IpNet> = exclude
        .iter()
        .copied()
        .chain(keep_out.iter().map(|k| k.net))
        .collect();
    RoutePlan {
        routes: cidr::subtract(&wanted, &holes),
        refused,
        kept_out: kept_out
            .into_iter()
            .map(|(net, why)| format!("not routing {net}: {why}"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::cidr::testing::{ip, nets};

    #[test]
    fn range_hint_is_read_from_the_api_servers_refusal() {
        // Kubernetes 1.34's message, as the lab's API server sends it.
        let msg = "Service \"kt-range-probe-x7k2p\" is invalid: spec.clusterIPs: Invalid value: \
                   [\"0.0.0.1\"]: failed to allocate IP 0.0.0.1: the provided IP (0.0.0.1) is \
                   not in the valid range. The range of valid IPs is 10.96.0.0/16";
        assert_eq!(parse_range_hint(msg), nets(&["10.96.0.0/16"]));
        // Several field errors are listed in brackets.
        let msg = "Service \"p\" is invalid: [spec.clusterIPs: Invalid value: [\"100::1\"]: \
                   failed to allocate IP 100::1: the provided IP (100::1) is not in the valid \
                   range. The range of valid IPs is fd00:10:96::/112, spec.ports: x]";
        assert_eq!(parse_range_hint(msg), nets(&["fd00:10:96::/112"]));
        // A family the cluster does not have, or another refusal: no range.
        assert!(
            parse_range_hint(
                "Service \"p\" is invalid: spec.clusterIPs[0]: Invalid value: [\"100::1\"]: \
                 IPv6 is not configured on this cluster"
            )
            .is_empty()
        );
        assert!(parse_range_hint("services is forbidden: User \"x\" cannot create").is_empty());
    }

    #[test]
    fn probe_service_asks_for_the_probe_ip_only() {
        let svc = probe_service("0.0.0.1");
        let spec = svc.spec.unwrap_or_default();
        assert_eq!(spec.cluster_ip.as_deref(), Some("0.0.0.1"));
        assert_eq!(spec.cluster_ips, Some(vec!["0.0.0.1".to_owned()]));
        assert!(
            svc.metadata.name.is_none(),
            "a generated name cannot collide"
        );
        assert!(
            probe_params().dry_run,
            "the probe must never create a Service"
        );
        for probe in PROBE_IPS {
            let probe = ip(probe);
            for range in nets(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"]) {
                assert!(
                    !range.contains(&probe),
                    "{probe} in the usual range {range}"
                );
            }
        }
    }

    #[test]
    fn uncovered_addresses_are_widened_and_merged() {
        let known = nets(&["10.244.0.0/24"]);
        let ips = [
            ip("10.244.0.7"),
            ip("10.245.3.4"),
            ip("10.245.200.1"),
            ip("fd00:1:2:3::9"),
        ];
        assert_eq!(
            widen_uncovered(&known, &ips, POD_GUESS),
            nets(&["10.245.0.0/16", "fd00:1:2:3::/64"])
        );
        assert_eq!(
            widen_uncovered(&[], &[ip("10.96.0.1"), ip("10.97.0.1")], SERVICE_GUESS),
            nets(&["10.96.0.0/15"])
        );
        assert!(widen_uncovered(&known, &[], POD_GUESS).is_empty());
    }

    #[test]
    fn plan_takes_out_exclusions_and_the_api_server() {
        let ranges = ClusterRanges {
            pods: nets(&["10.244.0.0/16"]),
            services: nets(&["10.96.0.0/16"]),
            sources: Vec::new(),
        };
        let routes = plan(
            &ranges,
            &nets(&["10.97.0.0/16", "10.88.0.0/16"]),
            &nets(&["10.244.128.0/17"]),
            &[KeepOut::address(ip("10.88.255.1"), "the API server")],
        )
        .routes;
        let mut want = nets(&["10.96.0.0/15", "10.244.0.0/17"]);
        // 10.88.0.0/16 without one address: 16 prefixes.
        want.extend(cidr::subtract(
            &nets(&["10.88.0.0/16"]),
            &nets(&["10.88.255.1/32"]),
        ));
        assert_eq!(routes, cidr::aggregate(&want));
        assert_eq!(routes.len(), 2 + 16);
        assert!(!routes.iter().any(|n| n.contains(&ip("10.88.255.1"))));
        assert!(routes.iter().any(|n| n.contains(&ip("10.88.255.2"))));
    }

    #[test]
    fn plan_never_routes_an_api_server_inside_a_discovered_range() {
        let ranges = ClusterRanges {
            pods: Vec::new(),
            services: nets(&["10.96.0.0/16", "fd00::/108"]),
            sources: Vec::new(),
        };
        let api = [
            KeepOut::address(ip("10.96.0.1"), "the API server"),
            KeepOut::address(ip("fd00::1"), "the API server"),
        ];
        let routes = plan(&ranges, &[], &[], &api).routes;
        assert!(!routes.iter().any(|n| n.contains(&ip("10.96.0.1"))));
        assert!(!routes.iter().any(|n| n.contains(&ip("fd00::1"))));
        assert!(routes.iter().any(|n| n.contains(&ip("10.96.0.10"))));
        assert_eq!(routes.len(), 16 + 20);
        assert!(
            plan(&ClusterRanges::default(), &[], &[], &[])
                .routes
                .is_empty()
        );
    }

    fn keep(s: &str, why: &str) -> KeepOut {
        KeepOut::new(
            s.parse::<IpNet>().unwrap_or_else(|e| panic!("{s}: {e}")),
            why,
        )
    }

    fn routed(routes: &[IpNet], addr: &str) -> bool {
        routes.iter().any(|n| n.contains(&ip(addr)))
    }

    #[test]
    fn plan_refuses_a_discovered_range_broader_than_slash_8_and_says_how_to_route_it() {
        let ranges = ClusterRanges {
            pods: nets(&["0.0.0.0/0", "10.0.0.0/8", "fd00:10:244::/56", "2000::/3"]),
            services: nets(&["64.0.0.0/2", "2001:db8::/32"]),
            sources: Vec::new(),
        };
        let plan = plan(&ranges, &[], &[], &[]);
        assert_eq!(
            plan.routes,
            nets(&["10.0.0.0/8", "2001:db8::/32", "fd00:10:244::/56"])
        );
        for broad in ["0.0.0.0/0", "64.0.0.0/2", "2000::/3"] {
            let said = plan
                .refused
                .iter()
                .find(|w| w.contains(broad))
                .unwrap_or_else(|| panic!("nothing said about {broad}: {:?}", plan.refused));
            assert!(said.contains(&format!("--include-cidr {broad}")), "{said}");
        }
        assert_eq!(plan.refused.len(), 3, "{:?}", plan.refused);
    }

    #[test]
    fn an_explicit_broad_include_is_routed_around_the_keep_outs() {
        let ranges = ClusterRanges {
            pods: nets(&["0.0.0.0/0"]),
            ..ClusterRanges::default()
        };
        let plan = plan(
            &ranges,
            &nets(&["0.0.0.0/0"]),
            &[],
            &[keep("192.168.1.1/32", "the default gateway")],
        );
        assert!(plan.refused.is_empty(), "{:?}", plan.refused);
        assert!(routed(&plan.routes, "8.8.8.8"));
        assert!(!routed(&plan.routes, "192.168.1.1"));
        assert_eq!(plan.routes.len(), 32);
    }

    #[test]
    fn plan_never_routes_the_resolver_the_gateway_a_local_subnet_or_the_proxy() {
        let ranges = ClusterRanges {
            pods: nets(&["10.244.0.0/16", "fd00:10:244::/56"]),
            services: nets(&["10.96.0.0/12"]),
            sources: Vec::new(),
        };
        let keep_out = [
            keep("10.96.0.10/32", "the upstream DNS server"),
            keep("192.168.1.1/32", "the gateway of the default route"),
            keep("192.168.1.0/24", "the local subnet of wlan0"),
            keep("10.244.7.0/24", "the local subnet of docker0"),
            keep("fd00:10:244:1::/64", "the local subnet of eth1"),
            keep("172.16.5.5/32", "the kubeconfig's proxy"),
            keep("10.88.255.1/32", "the API server"),
        ];
        // Discovered ranges and explicit includes alike are cut around them.
        let plan = plan(
            &ranges,
            &nets(&["192.168.0.0/16", "172.16.0.0/12", "10.88.0.0/16"]),
            &[],
            &keep_out,
        );
        for never in [
            "10.96.0.10",
            "192.168.1.1",
            "192.168.1.77",
            "10.244.7.9",
            "fd00:10:244:1::5",
            "172.16.5.5",
            "10.88.255.1",
        ] {
            assert!(
                !routed(&plan.routes, never),
                "{never} routed: {:?}",
                plan.routes
            );
        }
        for still in [
            "10.96.0.11",
            "192.168.2.1",
            "10.244.8.1",
            "fd00:10:244:2::5",
            "172.16.5.6",
            "10.88.1.1",
        ] {
            assert!(
                routed(&plan.routes, still),
                "{still} not routed: {:?}",
                plan.routes
            );
        }
        // Each keep-out that cut something is named once, with its reason.
        assert_eq!(plan.kept_out.len(), keep_out.len(), "{:?}", plan.kept_out);
        assert!(
            plan.kept_out
                .iter()
                .any(|l| l.contains("192.168.1.0/24") && l.contains("wlan0")),
            "{:?}",
            plan.kept_out
        );
        // A keep-out outside every route is not mentioned.
        let quiet = super::plan(&ranges, &[], &[], &[keep("203.0.113.0/24", "elsewhere")]);
        assert!(quiet.kept_out.is_empty(), "{:?}", quiet.kept_out);
    }

    #[tokio::test]
    async fn api_server_addresses_from_literals_and_names() {
        assert_eq!(
            api_server_addrs("https://10.88.255.1:6443").await,
            vec![ip("10.88.255.1")]
        );
        assert_eq!(
            api_server_addrs("https://[fd00::1]:6443/").await,
            vec![ip("fd00::1")]
        );
        assert_eq!(
            api_server_addrs("https://127.0.0.1").await,
            vec![ip("127.0.0.1")]
        );
        // A name goes through the system resolver.
        let local = api_server_addrs("https://localhost:6443").await;
        assert!(!local.is_empty(), "localhost did not resolve");
        assert!(local.iter().all(IpAddr::is_loopback), "{local:?}");
        // Nothing to route around: no host, or a name that does not resolve.
        assert!(api_server_addrs("not a url").await.is_empty());
        assert!(
            api_server_addrs("https://no-such-host.invalid:6443")
                .await
                .is_empty()
        );
    }
}
