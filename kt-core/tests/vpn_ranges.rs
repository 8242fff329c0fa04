//! VPN mode's route discovery against the lab: exact ranges with cluster-wide read
//! access, usable ranges with the namespace-scoped Role alone, and nothing created
//! in the cluster either way.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use common::{Shipped, scoped_kubeconfig_for, scoped_kubeconfig_with};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kt_core::{ConnectOptions, IpNet, VpnOptions};
use kt_lab_tests::{Lab, TestNamespace};
use kube::api::{Api, ListParams};

/// What discovery found: pods, services, planned routes, sources.
struct Found {
    pods: Vec<IpNet>,
    services: Vec<IpNet>,
    routes: Vec<IpNet>,
    sources: Vec<String>,
}

impl Found {
    fn sources_mention(&self, part: &str) -> Result<()> {
        ensure!(
            self.sources.iter().any(|s| s.contains(part)),
            "no source mentions `{part}`: {:#?}",
            self.sources
        );
        Ok(())
    }
}

async fn discover(kubeconfig: &Path, ns: &str, vpn: &VpnOptions) -> Result<Found> {
    let opts = ConnectOptions::new().kubeconfig(kubeconfig).namespace(ns);
    let (pods, services, routes, sources) = kt_core::discover_ranges(&opts, vpn).await?;
    eprintln!("pods {pods:?}\nservices {services:?}\nroutes {routes:?}");
    for s in &sources {
        eprintln!("source: {s}");
    }
    Ok(Found {
        pods,
        services,
        routes,
        sources,
    })
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn sorted(mut v: Vec<IpNet>) -> Vec<IpNet> {
    v.sort();
    v.dedup();
    v
}

/// The truth, read with the lab's admin credentials: every ServiceCIDR's ranges.
async fn service_cidrs(lab: &Lab) -> Result<Vec<IpNet>> {
    let list = Api::<ServiceCIDR>::all(lab.client())
        .list(&ListParams::default())
        .await?;
    let mut out = Vec::new();
    for item in list {
        for cidr in item.spec.and_then(|s| s.cidrs).unwrap_or_default() {
            out.push(
                cidr.parse()
                    .with_context(|| format!("ServiceCIDR {cidr}"))?,
            );
        }
    }
    Ok(sorted(out))
}

/// The truth, read with the lab's admin credentials: every Node's podCIDRs.
async fn node_pod_cidrs(lab: &Lab) -> Result<Vec<IpNet>> {
    let list = Api::<Node>::all(lab.client())
        .list(&ListParams::default())
        .await?;
    let mut out = Vec::new();
    for node in list {
        for cidr in node.spec.and_then(|s| s.pod_cidrs).unwrap_or_default() {
            out.push(cidr.parse().with_context(|| format!("podCIDR {cidr}"))?);
        }
    }
    Ok(sorted(out))
}

/// The API server's address from the lab's kubeconfig (an IP literal in the lab).
fn api_server_ip(lab: &Lab) -> Result<IpAddr> {
    let kc = kube::config::Kubeconfig::read_from(lab.kubeconfig())?;
    let server = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .context("the lab's kubeconfig has no server")?;
    let uri: hyper::Uri = server.parse()?;
    let host = uri.host().context("no host in the server URL")?;
    Ok(host.trim_matches(|c| c == '[' || c == ']').parse()?)
}

/// The names of the Services in the namespace (admin view).
async fn service_names(ns: &TestNamespace) -> Result<BTreeSet<String>> {
    let list = ns.api::<Service>().list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect())
}

/// With the admin kubeconfig the ranges are the cluster's own: the ServiceCIDRs and the
/// Nodes' podCIDRs, exactly; the planned routes keep the API server out even when an
/// included range holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_reader_gets_the_service_cidrs_and_node_pod_ranges_exactly() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kt-ranges-admin").await?;
    let echo = ns.deploy_echo(1).await?;
    let api_ip = api_server_ip(&lab)?;
    let around_api = IpNet::new(api_ip, 24)?.trunc();
    let vpn = VpnOptions::new().include(around_api);
    let found = discover(lab.kubeconfig(), ns.name(), &vpn).await?;

    let want_services = service_cidrs(&lab).await?;
    let want_pods = node_pod_cidrs(&lab).await?;
    ensure!(
        want_services.contains(&net("10.96.0.0/16")),
        "{want_services:?}"
    );
    ensure!(want_pods.contains(&net("10.244.0.0/24")), "{want_pods:?}");
    ensure!(
        sorted(found.services.clone()) == want_services,
        "services {:?}",
        found.services
    );
    ensure!(
        sorted(found.pods.clone()) == want_pods,
        "pods {:?}",
        found.pods
    );
    found.sources_mention("from ServiceCIDR `kubernetes`")?;
    found.sources_mention("from Node `")?;
    // The namespace's pods and Service lie inside; nothing was guessed.
    for ip in echo.pod_ips.iter().chain([&echo.cluster_ip]) {
        let ip: IpAddr = ip.parse()?;
        ensure!(
            found.routes.iter().any(|n| n.contains(&ip)),
            "{ip} not routed"
        );
    }
    ensure!(
        !found.sources.iter().any(|s| s.contains("covering")),
        "guessed although the cluster said: {:#?}",
        found.sources
    );
    // The API server is never routed, its neighbours in the included range are.
    ensure!(
        !found.routes.iter().any(|n| n.contains(&api_ip)),
        "the API server {api_ip} is routed: {:?}",
        found.routes
    );
    let neighbour = around_api
        .hosts()
        .find(|ip| *ip != api_ip)
        .context("no other address")?;
    ensure!(
        found.routes.iter().any(|n| n.contains(&neighbour)),
        "{neighbour} of the included {around_api} is not routed: {:?}",
        found.routes
    );
    Ok(())
}

/// With the namespace-scoped Role alone (ServiceCIDRs and Nodes are forbidden) the
/// Service range still comes out exact, from the dry-run hint, and the pod range is
/// the /16 around the namespace's pods; the dry run leaves no Service behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_scoped_role_gets_the_service_range_from_a_dry_run_and_creates_nothing()
-> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kt-ranges-ns").await?;
    let echo = ns.deploy_echo(2).await?;
    let kubeconfig = scoped_kubeconfig_for(&ns, Shipped::Vpn, true).await?;
    let before = service_names(&ns).await?;
    let found = discover(&kubeconfig, ns.name(), &VpnOptions::new()).await;
    let _ = std::fs::remove_file(&kubeconfig);
    let found = found?;

    ensure!(
        sorted(found.services.clone()) == service_cidrs(&lab).await?,
        "services {:?}",
        found.services
    );
    ensure!(
        found.services == vec![net("10.96.0.0/16")],
        "{:?}",
        found.services
    );
    found.sources_mention("list servicecidrs: 403")?;
    found.sources_mention(
        "services 10.96.0.0/16 from the API server's answer to a dry-run Service",
    )?;

    let pod_ips: Vec<IpAddr> = echo
        .pod_ips
        .iter()
        .map(|ip| ip.parse())
        .collect::<Result<_, _>>()?;
    let want_pods = sorted(
        pod_ips
            .iter()
            .map(|ip| IpNet::new(*ip, 16).map(|n| n.trunc()))
            .collect::<Result<_, _>>()?,
    );
    ensure!(
        found.pods == want_pods,
        "pods {:?} for IPs {pod_ips:?}",
        found.pods
    );
    ensure!(found.pods == vec![net("10.244.0.0/16")], "{:?}", found.pods);
    for node_range in node_pod_cidrs(&lab).await? {
        ensure!(
            found.pods.iter().any(|n| n.contains(&node_range)),
            "the node range {node_range} is not covered by {:?}",
            found.pods
        );
    }
    found.sources_mention("list nodes: 403")?;

    let after = service_names(&ns).await?;
    ensure!(
        before == after,
        "Services before {before:?}, after {after:?}"
    );
    ensure!(
        !after.iter().any(|n| n.starts_with("kt-range-probe")),
        "{after:?}"
    );
    Ok(())
}

/// Without `create` on services (no dry-run hint) the Service range is the /16 around
/// the namespace's ClusterIPs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_create_on_services_the_range_covers_the_namespace_cluster_ips() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kt-ranges-nocreate").await?;
    let echo = ns.deploy_echo(1).await?;
    let rule = r#"verbs: ["get", "list", "create"]"#;
    let vpn = Shipped::Vpn.yaml();
    ensure!(
        vpn.matches(rule).count() == 1,
        "the shipped kt-vpn Role's services rule changed; update this test"
    );
    let role = vpn.replace(rule, r#"verbs: ["get", "list"]"#);
    let kubeconfig = scoped_kubeconfig_with(&ns, &role, Shipped::Vpn.role(), true).await?;
    let found = discover(&kubeconfig, ns.name(), &VpnOptions::new()).await;
    let _ = std::fs::remove_file(&kubeconfig);
    let found = found?;

    let cluster_ip: IpAddr = echo.cluster_ip.parse()?;
    let want = IpNet::new(cluster_ip, 16)?.trunc();
    ensure!(
        found.services == vec![want],
        "services {:?}",
        found.services
    );
    found.sources_mention("dry-run create services: 403")?;
    found.sources_mention("covering the ClusterIPs")?;
    let after = service_names(&ns).await?;
    ensure!(after == BTreeSet::from(["echo".to_owned()]), "{after:?}");
    Ok(())
}
