//! Which cluster DNS server a session asks: the configured one, else the ClusterIP of
//! `kube-system/kube-dns` read from the API, else the address the shadow's own
//! resolver finds for that name, else the usual 10.96.0.10.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::Api;

use crate::cluster::Cluster;
use crate::dns::{Resolver, SearchList};
use crate::options::FALLBACK_DNS_SERVER;
use crate::transport::Tunnel;

/// The configured server, else the ClusterIP of `kube-system/kube-dns`; `None` when
/// it cannot be read (namespace-scoped permissions).
pub(crate) async fn from_api(cluster: &Cluster, configured: Option<IpAddr>) -> Option<IpAddr> {
    if let Some(ip) = configured {
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
pub(crate) async fn through_shadow(
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
