//! `kt-shadow route`: the mesh router's life, around the data plane of
//! [`super::proxy`].
//!
//! - Listens on every `--port` and proxies with the current routing [`Table`]; relays
//!   every `--udp-port` to the origin ([`super::udp`]).
//! - Finds the developers' shadows by label (`kt.dev/mesh=<service>`,
//!   `kt.dev/role=shadow-mesh`; polled every [`POLL`]: a list per poll, simpler than a
//!   watch that must be re-established, and at this rate a handful of requests a
//!   second per router): a Ready one with an IP and a valid `kt.dev/mesh-rule` becomes
//!   a route, oldest first (the earliest developer wins where rules overlap).
//! - Reports its routes on its Lease (`kt.dev/mesh-routes`, a JSON array of pod names,
//!   `[]` as soon as it listens) and renews that Lease and its hold on the Service
//!   (`kt.dev/lease-expiry`) three times per `--ttl`.
//! - Ends when no developer's shadow has existed for `--grace` (for
//!   [`ROUTE_STARTUP_GRACE`] at start): puts the Service back as its `kt.dev/restore`
//!   records (guarded, as the swap watchdog does), keeps proxying for
//!   [`DRAIN`] while kube-proxy moves the Service away, then deletes its own pod (and
//!   with it the origin Service, its Lease and identity, which it owns). On SIGTERM it
//!   puts the Service back the same way and exits.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kt_proto::cli::{ROUTE_STARTUP_GRACE, RouteArgs};
use kt_proto::mesh::{self, Rule};
use kt_proto::{Role, labels};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::proxy::{Proxy, Route, Table};
use crate::cluster::Cluster;
use crate::restore::{Restorer, own_pod_name};

/// How often the developers' shadows are listed.
pub const POLL: Duration = Duration::from_millis(500);

/// How long the router keeps proxying after putting the Service back.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Runs the router until it ends; returns the process exit code.
pub async fn run(args: RouteArgs, cluster: Cluster, shutdown: CancellationToken) -> i32 {
    let mut listeners = Vec::new();
    for port in &args.ports {
        let addr = SocketAddr::from(([0, 0, 0, 0], *port));
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => listeners.push(l),
            Err(e) => {
                warn!(%addr, error = %e, "cannot listen");
                return 1;
            }
        }
    }
    let mut udp = Vec::new();
    for port in &args.udp_ports {
        let addr = SocketAddr::from(([0, 0, 0, 0], *port));
        match tokio::net::UdpSocket::bind(addr).await {
            Ok(s) => udp.push((s, *port)),
            Err(e) => {
                warn!(%addr, error = %e, "cannot listen (UDP)");
                return 1;
            }
        }
    }
    let (table_tx, table_rx) = watch::channel(Arc::new(Table::default()));
    let serving = CancellationToken::new();
    let mut proxies = Vec::new();
    for (listener, port) in listeners.into_iter().zip(&args.ports) {
        let proxy = Proxy::new(SocketAddr::new(args.origin, *port), *port, table_rx.clone());
        proxies.push(Arc::clone(&proxy));
        tokio::spawn(proxy.serve(listener, serving.clone()));
    }
    for (socket, port) in udp {
        let origin = SocketAddr::new(args.origin, port);
        tokio::spawn(super::udp::relay(socket, origin, serving.clone()));
    }
    info!(ports = ?args.ports, udp_ports = ?args.udp_ports, origin = %args.origin, service = %args.service.name, "routing");
    let mut router = Control {
        args,
        cluster,
        table: table_tx,
        reported: None,
        member_seen_at: None,
        started: Instant::now(),
        renewed: None,
    };
    let end = loop {
        router.poll().await;
        if router.idle() {
            break "no developer's shadow is left";
        }
        tokio::select! {
            () = shutdown.cancelled() => break "stopping (SIGTERM)",
            () = tokio::time::sleep(POLL) => {}
        }
    };
    info!(reason = end, "putting the Service back");
    let restorer = Restorer::new(
        router.cluster.clone(),
        &router.args.session,
        vec![router.args.service.clone()],
    );
    let report = restorer
        .restore(Instant::now() + crate::restore::RESTORE_BUDGET)
        .await;
    tokio::time::sleep(DRAIN).await;
    serving.cancel();
    let (routed, unmatched) = proxies
        .iter()
        .map(|p| p.counts())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    info!(routed, unmatched, "requests proxied");
    if report.failed() {
        return kt_proto::shadow::EXIT_RESTORE_FAILED;
    }
    if !shutdown.is_cancelled()
        && let Some(pod) = own_pod_name()
    {
        let api: Api<Pod> =
            Api::namespaced(router.cluster.client.clone(), &router.cluster.namespace);
        match api.delete(&pod, &DeleteParams::default()).await {
            Ok(_) => info!(pod, "deleted the router's own pod"),
            Err(e) => warn!(pod, error = %e, "cannot delete the router's own pod"),
        }
    }
    0
}

struct Control {
    args: RouteArgs,
    cluster: Cluster,
    table: watch::Sender<Arc<Table>>,
    /// The routes last written to the Lease.
    reported: Option<Vec<String>>,
    /// When a developer's shadow last existed.
    member_seen_at: Option<Instant>,
    started: Instant,
    renewed: Option<Instant>,
}

impl Control {
    /// Lists the developers' shadows, updates the table and the Lease, renews.
    async fn poll(&mut self) {
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace);
        let selector = format!(
            "{}={},{}={}",
            mesh::SERVICE_LABEL,
            self.args.service.name,
            labels::ROLE,
            Role::ShadowMesh.as_str()
        );
        match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                let mut pods: Vec<Pod> = (list.items.into_iter())
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| !ended(p))
                    .collect();
                if !pods.is_empty() {
                    self.member_seen_at = Some(Instant::now());
                }
                pods.sort_by(|a, b| {
                    let key = |p: &Pod| {
                        (
                            p.metadata.creation_timestamp.clone().map(|t| t.0),
                            p.metadata.name.clone(),
                        )
                    };
                    key(a).cmp(&key(b))
                });
                let routes: Vec<Route> = pods.iter().filter_map(route_of).collect();
                let names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
                if self.reported.as_ref() != Some(&names) {
                    info!(routes = ?names, "routing table changed");
                    self.table.send_replace(Arc::new(Table { routes }));
                    if self.report(&names).await {
                        self.reported = Some(names);
                        self.renewed = Some(Instant::now());
                    }
                }
            }
            // Keeps routing with the table it has; idle time does not count.
            Err(e) => {
                warn!(error = %e, "cannot list the developers' shadows");
                self.member_seen_at = Some(Instant::now());
            }
        }
        let interval = (self.args.ttl / 3).max(Duration::from_secs(1));
        if self.renewed.is_none_or(|t| t.elapsed() >= interval) {
            self.renew().await;
        }
    }

    /// Whether the router has been without developers long enough to end.
    fn idle(&self) -> bool {
        match self.member_seen_at {
            Some(seen) => seen.elapsed() >= self.args.grace,
            None => self.started.elapsed() >= ROUTE_STARTUP_GRACE,
        }
    }

    /// Writes the routes and a renewal on the Lease; whether it was written.
    async fn report(&self, names: &[String]) -> bool {
        let routes = serde_json::to_string(names).unwrap_or_else(|_| "[]".to_owned());
        let patch = serde_json::json!({
            "metadata": { "annotations": { mesh::ROUTES_ANNOTATION: routes } },
            "spec": { "renewTime": micro_time(Timestamp::now()) },
        });
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace);
        match api
            .patch(
                &self.args.lease,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => true,
            Err(e) => {
                warn!(lease = %self.args.lease, error = %e, "cannot report the routes");
                false
            }
        }
    }

    /// Renews the Lease and the hold on the Service.
    async fn renew(&mut self) {
        let names = self.reported.clone().unwrap_or_default();
        let lease_ok = self.report(&names).await;
        let ttl = SignedDuration::try_from(self.args.ttl).unwrap_or(SignedDuration::from_secs(30));
        let expires = Timestamp::now()
            .checked_add(ttl)
            .unwrap_or_else(|_| Timestamp::now());
        let patch = kt_proto::guard::renew(&self.args.session, expires);
        let api: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace);
        let service = &self.args.service.name;
        match api
            .patch(service, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => {}
            // 422: not (yet, or any more) held by this router; the client takes it
            // right after the router listens.
            Err(kube::Error::Api(s)) if s.code == 422 => {}
            Err(e) => warn!(service, error = %e, "cannot renew the hold on the Service"),
        }
        if lease_ok {
            self.renewed = Some(Instant::now());
        }
    }
}

fn micro_time(t: Timestamp) -> serde_json::Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(t))
        .unwrap_or_default()
}

fn ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The route to a developer's shadow: Ready, with an IP and a valid rule.
fn route_of(pod: &Pod) -> Option<Route> {
    let name = pod.metadata.name.clone()?;
    let status = pod.status.as_ref()?;
    let ready =
        (status.conditions.iter().flatten()).any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    let addr: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let text = pod
        .metadata
        .annotations
        .as_ref()
        .unwrap_or(&BTreeMap::new())
        .get(mesh::RULE_ANNOTATION)?
        .clone();
    match text.parse::<Rule>() {
        Ok(rule) => Some(Route { name, rule, addr }),
        Err(e) => {
            warn!(pod = name, error = %e, "ignoring a developer's shadow with an invalid rule");
            None
        }
    }
}
