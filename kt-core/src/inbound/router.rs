//! The mesh router of one Service, as the client sees it: found and joined, or
//! created (identity, origin Service, pod, Lease) and switched in; finished by the last
//! developer to leave.
//!
//! One router per Service, named after it (`kt-router-<service>`), so two developers
//! starting at once cannot make two: the second one's create is refused and it joins.
//! The router (`kt-shadow route`) holds the Service: it is the `kt.dev/owner` recorded
//! on it, renews that lease while it runs, and puts the Service back by itself when no
//! developer's shadow is left (a crash of the last one) or on SIGTERM. Requests no rule
//! matches go to the origin Service (`kt-origin-<service>`): the Service's ports with
//! the original selector, owned by the router pod.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kt_proto::cli::{RestoreTarget, RouteArgs};
use kt_proto::mesh;
use kt_proto::restore::{Kind, SELECTOR_PATH};
use kt_proto::{Role, labels};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::Value;

use super::identity::{self, Grants, Made};
use super::{expiry, user_name};
use crate::cluster::restore::{self, Hold, Ownership, TakeOver, Taken};
use crate::cluster::workload::{ListenPort, TargetKind, selector_text};
use crate::cluster::{Cluster, is_not_found};
use crate::error::{Error, Result};
use crate::events::{Event, EventBus};
use crate::options::{ConnectOptions, ShadowFlavour};
use crate::shadow::spec::{PodShape, ShadowSpec};

/// The router a developer routes through.
#[derive(Debug, Clone)]
pub(crate) struct Router {
    /// Its pod's name (also its Lease's, identity's).
    pub(crate) name: String,
    /// Its id: the `kt.dev/owner` on the Service.
    pub(crate) session: String,
    /// The meshed Service.
    pub(crate) service: String,
    /// The origin Service's name.
    pub(crate) origin: String,
}

/// A Kubernetes name `prefix` + `name`, at most 63 characters (a Service name is a
/// DNS label): long names keep their start and get a hash of the whole.
pub(crate) fn derived_name(prefix: &str, name: &str) -> String {
    let full = format!("{prefix}{name}");
    if full.len() <= 63 {
        return full;
    }
    // FNV-1a: stable across versions (std's hasher is not).
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep = 63 - prefix.len() - 9;
    let head = name[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}{head}-{:08x}", hash & 0xffff_ffff)
}

/// The labels of every object of the router: kt's, its id, its role, the Service.
fn router_labels(opts: &ConnectOptions, session: &str, service: &str) -> BTreeMap<String, String> {
    let mut labels = opts.labels.clone();
    labels.insert(
        labels::MANAGED_BY.to_owned(),
        labels::MANAGED_BY_VALUE.to_owned(),
    );
    labels.insert(labels::SESSION.to_owned(), session.to_owned());
    labels.insert(labels::ROLE.to_owned(), Role::Router.as_str().to_owned());
    labels.insert(mesh::SERVICE_LABEL.to_owned(), service.to_owned());
    labels
}

/// The label selector of the developers' shadows of `service`.
pub(crate) fn members_selector(service: &str) -> String {
    format!(
        "{}={service},{}={}",
        mesh::SERVICE_LABEL,
        labels::ROLE,
        Role::ShadowMesh.as_str()
    )
}

/// The developers' shadows of `service` not being deleted: (pod name, rule text).
pub(crate) async fn members(cluster: &Cluster, service: &str) -> Result<Vec<(Pod, String)>> {
    let lp = ListParams::default().labels(&members_selector(service));
    let pods = (cluster.pods().list(&lp).await)
        .map_err(|e| cluster.error(e, "list", "pods", "(the mesh's developers)"))?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let rule = (p.metadata.annotations.as_ref())
                .and_then(|a| a.get(mesh::RULE_ANNOTATION))
                .cloned()
                .unwrap_or_default();
            (p, rule)
        })
        .collect())
}

/// What `ensure` needs to know of the Service.
pub(crate) struct Plan<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) opts: &'a ConnectOptions,
    pub(crate) service: &'a Service,
    /// Every TCP port the Service targets, resolved to container ports.
    pub(crate) ports: &'a [ListenPort],
    /// Its UDP ports' container ports: (name, port); the router relays them unrouted.
    pub(crate) udp_ports: &'a [(Option<String>, u16)],
    /// The Service's selector (its original, if a dead session's hold is on it).
    pub(crate) selector: BTreeMap<String, String>,
    pub(crate) ttl: Duration,
    pub(crate) events: &'a EventBus,
}

impl Router {
    /// Joins the Service's router, or creates one and switches the Service to it.
    pub(crate) async fn ensure(plan: &Plan<'_>) -> Result<Router> {
        let cluster = plan.cluster;
        let service = plan.service.metadata.name.clone().unwrap_or_default();
        let name = derived_name("kt-router-", &service);
        let deadline = tokio::time::Instant::now() + plan.opts.pod_ready_timeout;
        loop {
            let found = Router::find(cluster, &service, &name, plan.opts.pod_ready_timeout).await?;
            if let Some(router) = found {
                return Ok(router);
            }
            match Router::create(plan, &service, &name).await {
                Err(Error::Internal { what }) if what == ALREADY_EXISTS => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::PodReadyTimeout {
                            pod: name,
                            namespace: cluster.namespace.clone(),
                            timeout: plan.opts.pod_ready_timeout,
                            last: "another developer's router kept appearing and going".to_owned(),
                        });
                    }
                }
                other => return other,
            }
        }
    }

    /// The live router of the Service, once it holds the Service and listens; `None`
    /// when there is none (or it is going away: then after it is gone).
    async fn find(
        cluster: &Cluster,
        service: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<Router>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pod = (cluster.pods().get_opt(name).await)
                .map_err(|e| cluster.error(e, "get", "pods", &format!("`{name}`")))?;
            let Some(pod) = pod else { return Ok(None) };
            let session = (pod.metadata.labels.as_ref())
                .and_then(|l| l.get(labels::SESSION))
                .cloned()
                .unwrap_or_default();
            let ended = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if pod.metadata.deletion_timestamp.is_none() && !ended {
                let object = restore::get(cluster, Kind::Service, service).await?;
                let held = matches!(
                    kt_proto::guard::ownership(&object, "", Timestamp::now())?,
                    Ownership::Held(ref h) if h.session == session
                );
                if held && routes(cluster, name).await?.is_some() {
                    return Ok(Some(Router {
                        name: name.to_owned(),
                        session,
                        service: service.to_owned(),
                        origin: derived_name("kt-origin-", service),
                    }));
                }
            } else if ended {
                // A router that exited and was not deleted (its restore failed): the
                // Service's hold expires and is taken over; the pod goes now.
                let _ = cluster.pods().delete(name, &DeleteParams::default()).await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::PodReadyTimeout {
                    pod: name.to_owned(),
                    namespace: cluster.namespace.clone(),
                    timeout,
                    last: format!(
                        "it did not start routing for Service `{service}` (see `kubectl logs \
                         {name}`)"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn create(plan: &Plan<'_>, service: &str, name: &str) -> Result<Router> {
        let cluster = plan.cluster;
        let object = restore::get(cluster, Kind::Service, service).await?;
        // A live swap holds it: refused before anything is created.
        if let Ownership::Held(holder) = kt_proto::guard::ownership(&object, "", Timestamp::now())?
        {
            return Err(Error::TargetHeld {
                message: holder.refusal(),
            });
        }
        let uid = (object.pointer("/metadata/uid").and_then(Value::as_str))
            .unwrap_or_default()
            .to_owned();
        let session = crate::shadow::session_id();
        let router = Router {
            name: name.to_owned(),
            session: session.clone(),
            service: service.to_owned(),
            origin: derived_name("kt-origin-", service),
        };
        let labels = router_labels(plan.opts, &session, service);
        let mut made = Vec::new();
        let grants = Grants {
            patch: vec![(TargetKind::Service, service.to_owned())],
            delete_pods: Vec::new(),
            router: true,
        };
        let meta = identity::meta(name, labels.clone());
        // What this call made, so that a failure removes only that: an object that
        // already exists is another developer's router being made at this moment.
        let (mut origin_made, mut pod_made) = (false, false);
        let result = async {
            identity::create(cluster, &meta, name, &grants, &mut made)
                .await
                .map_err(|e| if is_conflict(&e) { already_exists() } else { e })?;
            let origin_ip = router.create_origin(plan, &labels).await?;
            origin_made = true;
            let pod = router.create_pod(plan, &labels, &uid, origin_ip).await?;
            pod_made = true;
            router
                .create_lease(cluster, &labels, &pod, plan.ttl)
                .await?;
            identity::hand_to(cluster, name, &pod, &made).await?;
            router.hand_origin_to(cluster, &pod).await?;
            router
                .wait_listening(cluster, plan.opts.pod_ready_timeout)
                .await?;
            router.switch(plan).await
        }
        .await;
        match result {
            Ok(()) => Ok(router),
            Err(e) => {
                if pod_made {
                    // The pod, its Lease, the origin Service and the identity.
                    router.remove(cluster).await;
                } else {
                    if origin_made {
                        router.delete_origin(cluster).await;
                    }
                    identity::delete(cluster, name, &made).await;
                }
                Err(e)
            }
        }
    }

    /// The origin Service: the meshed Service's ports on their container-port numbers,
    /// its original selector. Returns its ClusterIP.
    async fn create_origin(
        &self,
        plan: &Plan<'_>,
        labels: &BTreeMap<String, String>,
    ) -> Result<std::net::IpAddr> {
        // One port per container port and protocol, named after it, targeting it by
        // number (or by name where the router resolved a name): what the router sends
        // to `origin:<container port>` reaches the same container port of an original.
        let mut ports: Vec<ServicePort> = Vec::new();
        let tcp = plan.ports.iter().map(|p| ("TCP", p.name.clone(), p.port));
        let udp = (plan.udp_ports.iter()).map(|(name, port)| ("UDP", name.clone(), *port));
        for (i, (protocol, name, port)) in tcp.chain(udp).enumerate() {
            ports.push(ServicePort {
                name: Some(format!("{}-{i}", protocol.to_ascii_lowercase())),
                port: i32::from(port),
                target_port: Some(match name {
                    Some(name) => IntOrString::String(name),
                    None => IntOrString::Int(i32::from(port)),
                }),
                protocol: Some(protocol.to_owned()),
                ..ServicePort::default()
            });
        }
        let origin = Service {
            metadata: ObjectMeta {
                name: Some(self.origin.clone()),
                labels: Some(labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(plan.selector.clone()),
                ports: Some(ports),
                type_: Some("ClusterIP".to_owned()),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let api: Api<Service> =
            Api::namespaced(plan.cluster.client.clone(), &plan.cluster.namespace);
        let created = match api.create(&PostParams::default(), &origin).await {
            Ok(created) => created,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Without its router pod, it was left by a router that failed before
                // it owned it: removed, so the next attempt makes it again. With one,
                // another developer is making the router right now.
                if matches!(plan.cluster.pods().get_opt(&self.name).await, Ok(None)) {
                    self.delete_origin(plan.cluster).await;
                }
                return Err(already_exists());
            }
            Err(e) => {
                return Err(plan.cluster.error(
                    e,
                    "create",
                    "services",
                    "(the mesh's origin Service, for requests no rule matches)",
                ));
            }
        };
        (created.spec.and_then(|s| s.cluster_ip))
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| Error::Internal {
                what: format!("origin Service `{}` got no ClusterIP", self.origin),
            })
    }

    async fn create_pod(
        &self,
        plan: &Plan<'_>,
        labels: &BTreeMap<String, String>,
        uid: &str,
        origin: std::net::IpAddr,
    ) -> Result<Pod> {
        let mut ports: Vec<u16> = plan.ports.iter().map(|p| p.port).collect();
        ports.dedup();
        let args = RouteArgs {
            session: self.session.clone(),
            service: RestoreTarget {
                kind: Kind::Service,
                name: self.service.clone(),
                uid: uid.to_owned(),
            },
            lease: self.name.clone(),
            origin,
            ports,
            udp_ports: plan.udp_ports.iter().map(|(_, p)| *p).collect(),
            ttl: plan.ttl,
            grace: kt_proto::cli::DEFAULT_ROUTE_GRACE,
        };
        let mut pod_labels = labels.clone();
        pod_labels.insert(mesh::ROUTER_LABEL.to_owned(), self.service.clone());
        let shape = PodShape {
            pod_labels,
            ports: (plan.ports.iter())
                .map(|p| (p.name.clone().unwrap_or_default(), p.port))
                .collect(),
            udp_ports: (plan.udp_ports.iter())
                .map(|(name, port)| (name.clone().unwrap_or_default(), *port))
                .collect(),
            service_account: Some(self.name.clone()),
            extra_args: Vec::new(),
            grace_seconds: Some(20),
            borrow_from: Some(selector_text(&plan.selector)),
        };
        // The router is kt-shadow whatever flavour the session's shadow is.
        let mut opts = plan.opts.clone();
        if opts.flavour != ShadowFlavour::KtShadow {
            opts.flavour = ShadowFlavour::KtShadow;
            opts.shadow_image = None;
        }
        let runtime = crate::shadow::runtime(
            plan.cluster,
            &opts,
            shape.borrow_from.as_deref(),
            plan.events,
        )
        .await?;
        let image = runtime.image().to_owned();
        let spec = ShadowSpec {
            session: &self.session,
            name: &self.name,
            runtime: &runtime,
            role: Role::Router,
            shape: &shape,
            opts: &opts,
        };
        let pod = spec.router_pod(args.to_args());
        match plan
            .cluster
            .pods()
            .create(&PostParams::default(), &pod)
            .await
        {
            Ok(pod) => {
                plan.events.emit(Event::Creating {
                    namespace: plan.cluster.namespace.clone(),
                    pod: self.name.clone(),
                    image,
                });
                Ok(pod)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Err(already_exists()),
            Err(e) => Err(plan.cluster.error(e, "create", "pods", "(the mesh router)")),
        }
    }

    async fn create_lease(
        &self,
        cluster: &Cluster,
        labels: &BTreeMap<String, String>,
        pod: &Pod,
        ttl: Duration,
    ) -> Result<()> {
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels.clone()),
                owner_references: ShadowSpec::owner_reference(pod).map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.session.clone()),
                lease_duration_seconds: Some(i32::try_from(ttl.as_secs().max(1)).unwrap_or(30)),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        };
        cluster
            .leases()
            .create(&PostParams::default(), &lease)
            .await
            .map(drop)
            .map_err(|e| cluster.error(e, "create", "leases", "(the mesh router's)"))
    }

    async fn hand_origin_to(&self, cluster: &Cluster, pod: &Pod) -> Result<()> {
        let Some(owner) = ShadowSpec::owner_reference(pod) else {
            return Ok(());
        };
        let patch = serde_json::json!({ "metadata": { "ownerReferences": [owner] } });
        let api: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        api.patch(&self.origin, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|e| cluster.error(e, "patch", "services", "(owner of the origin Service)"))
    }

    /// Waits until the router reports its routes (it does once it listens).
    async fn wait_listening(&self, cluster: &Cluster, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if routes(cluster, &self.name).await?.is_some() {
                return Ok(());
            }
            if let Ok(Some(pod)) = cluster.pods().get_opt(&self.name).await {
                if let Some(e) = crate::shadow::wait::unschedulable(&pod, &cluster.namespace) {
                    return Err(e);
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
                if matches!(phase.as_deref(), Some("Failed" | "Succeeded")) {
                    let reason = "the mesh router exited before it listened".to_owned();
                    return Err(crate::shadow::wait::failed(cluster, &self.name, reason).await);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::PodReadyTimeout {
                    pod: self.name.clone(),
                    namespace: cluster.namespace.clone(),
                    timeout,
                    last: "the mesh router did not report that it listens".to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Points the Service at the router, recording the router as its holder.
    async fn switch(&self, plan: &Plan<'_>) -> Result<()> {
        let selector = serde_json::json!({ mesh::ROUTER_LABEL: self.service });
        let hold = Hold::new(
            self.session.clone(),
            user_name(),
            Timestamp::now(),
            expiry(plan.ttl),
        );
        let Taken { took_over, .. } = restore::take(
            plan.cluster,
            Kind::Service,
            &self.service,
            vec![(SELECTOR_PATH.to_owned(), Some(selector))],
            &hold,
        )
        .await?;
        if let Some(TakeOver { holder, undone }) = took_over {
            plan.events.emit(Event::Restored {
                object: format!("Service {}/{}", plan.cluster.namespace, self.service),
                detail: format!(
                    "took over from expired session `{}`: {}",
                    holder.session,
                    undone.restored.join(", ")
                ),
            });
        }
        plan.events.emit(Event::SelectorSwitched {
            service: self.service.clone(),
            selector: format!("{}={}", mesh::ROUTER_LABEL, self.service),
        });
        self.wait_endpoints(plan.cluster, plan.opts.pod_ready_timeout)
            .await;
        Ok(())
    }

    /// Waits (bounded; a warning when it runs out) until the Service's EndpointSlices
    /// list the router and nothing else: from then on, what kube-proxy sends to the
    /// Service reaches the router once kube-proxy applied it, given
    /// [`super::PROXY_SETTLE`].
    async fn wait_endpoints(&self, cluster: &Cluster, timeout: Duration) {
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let api: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let lp =
            ListParams::default().labels(&format!("kubernetes.io/service-name={}", self.service));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(slices) = api.list(&lp).await {
                let names: Vec<Option<String>> = (slices.items.iter())
                    .flat_map(|s| s.endpoints.iter())
                    .map(|e| e.target_ref.as_ref().and_then(|r| r.name.clone()))
                    .collect();
                if !names.is_empty() && names.iter().all(|n| n.as_deref() == Some(&self.name)) {
                    tokio::time::sleep(super::PROXY_SETTLE).await;
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    target: "kt",
                    "Service {}: its endpoints did not move to the router within {timeout:?}",
                    self.service
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the router routes to `member`.
    pub(crate) async fn wait_routed(
        &self,
        cluster: &Cluster,
        member: &str,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match routes(cluster, &self.name).await? {
                Some(routes) if routes.iter().any(|r| r == member) => return Ok(()),
                Some(_) => {}
                None => {
                    return Err(Error::ShadowFailed {
                        pod: self.name.clone(),
                        namespace: cluster.namespace.clone(),
                        reason: "the mesh router went away while this developer joined (the \
                                 last one left at that moment): try again"
                            .to_owned(),
                        log: String::new(),
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::PodReadyTimeout {
                    pod: self.name.clone(),
                    namespace: cluster.namespace.clone(),
                    timeout,
                    last: format!("the mesh router did not route to `{member}`"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the router no longer routes to `member` (it drops a shadow being
    /// deleted at its next list of the developers' shadows) or is gone, at most
    /// `timeout`: so that once a developer's close returns, no request of theirs is
    /// proxied to a shadow that is no longer there. Whether it happened in time.
    pub(crate) async fn wait_unrouted(
        &self,
        cluster: &Cluster,
        member: &str,
        timeout: Duration,
    ) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match routes(cluster, &self.name).await? {
                Some(routes) if routes.iter().any(|r| r == member) => {}
                _ => return Ok(true),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last developer left: puts the Service back (as the router's record says),
    /// waits until its endpoints are the originals again, then removes the router.
    /// Returns what was restored and the conflicts, as events.
    pub(crate) async fn finish(&self, cluster: &Cluster, events: &EventBus, timeout: Duration) {
        let mut restored = false;
        match restore::get(cluster, Kind::Service, &self.service).await {
            Ok(object) => match kt_proto::guard::recorded_step(&object) {
                Ok(Some(step))
                    if matches!(
                        kt_proto::guard::ownership(&object, &self.session, Timestamp::now()),
                        Ok(Ownership::Mine)
                    ) =>
                {
                    match restore::give_back(cluster, &step, &self.session).await {
                        Ok(undo) => {
                            restored = undo.conflicts.is_empty();
                            if !undo.restored.is_empty() {
                                events.emit(Event::Restored {
                                    object: step.object.to_string(),
                                    detail: format!("put back: {}", undo.restored.join(", ")),
                                });
                            }
                            for conflict in &undo.conflicts {
                                events.emit(Event::RestoreConflict {
                                    detail: conflict.to_string(),
                                });
                            }
                        }
                        Err(e) => tracing::warn!(target: "kt", "restoring {}: {e}", self.service),
                    }
                }
                _ => {}
            },
            Err(e) => tracing::warn!(target: "kt", "reading {}: {e}", self.service),
        }
        if restored {
            super::wait_for_endpoints(
                cluster,
                std::slice::from_ref(&self.service),
                super::Serving {
                    pod: &self.name,
                    must_leave: true,
                },
                true,
                timeout,
            )
            .await;
        }
        self.remove(cluster).await;
    }

    /// Deletes the router pod, its Lease, the origin Service and its identity (they
    /// would go with the pod by garbage collection; deleted here so that nothing is
    /// left when `close` returns).
    pub(crate) async fn remove(&self, cluster: &Cluster) {
        let dp = DeleteParams::background();
        if let Err(e) = cluster.pods().delete(&self.name, &dp).await
            && !is_not_found(&e)
        {
            tracing::warn!(target: "kt", "deleting mesh router {}: {e}", self.name);
        }
        let _ = cluster.leases().delete(&self.name, &dp).await;
        self.delete_origin(cluster).await;
        identity::delete(
            cluster,
            &self.name,
            &[Made::ServiceAccount, Made::Role, Made::RoleBinding],
        )
        .await;
        // The pod runs the router's own SIGTERM restore (a no-op now) before it goes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            match cluster.pods().get_opt(&self.name).await {
                Ok(None) | Err(_) => return,
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Router {
    async fn delete_origin(&self, cluster: &Cluster) {
        let api: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        if let Err(e) = api.delete(&self.origin, &DeleteParams::background()).await
            && !is_not_found(&e)
        {
            tracing::warn!(target: "kt", "deleting origin Service {}: {e}", self.origin);
        }
    }
}

fn already_exists() -> Error {
    Error::Internal {
        what: ALREADY_EXISTS.to_owned(),
    }
}

/// Whether `e` is the API server's 409: the object exists.
fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Api { source: kube::Error::Api(s), .. } if s.code == 409)
}

/// Marks a create refused because the object exists (another developer made the
/// router at the same moment): `ensure` then joins.
const ALREADY_EXISTS: &str = "kt: mesh router already exists";

/// The routes the router reports on its Lease: `None` before it listens (or when the
/// Lease is gone).
pub(crate) async fn routes(cluster: &Cluster, name: &str) -> Result<Option<Vec<String>>> {
    let lease = (cluster.leases().get_opt(name).await)
        .map_err(|e| cluster.error(e, "get", "leases", &format!("`{name}`")))?;
    Ok(lease
        .and_then(|l| l.metadata.annotations)
        .and_then(|a| a.get(mesh::ROUTES_ANNOTATION).cloned())
        .and_then(|text| serde_json::from_str(&text).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_a_dns_label() {
        assert_eq!(derived_name("kt-router-", "web"), "kt-router-web");
        let long = "a".repeat(63);
        let name = derived_name("kt-origin-", &long);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with("kt-origin-aaa"));
        assert_ne!(name, derived_name("kt-origin-", &"a".repeat(62)));
        assert_eq!(
            members_selector("web"),
            "kt.dev/mesh=web,kt.dev/role=shadow-mesh"
        );
    }
}
