//! [`Mesh`]: only the requests that match a developer's rule (a header, a path) reach
//! a process on this machine; the rest of the team keeps using the shared Service.
//!
//! Each developer has a mesh shadow of their own (pod, identity, Lease, tunnel; the
//! rule in its `kt.dev/mesh-rule` annotation) and routes through the Service's one
//! router ([`super::router`]), which the first developer creates and the last one
//! removes, putting the Service back. If this process dies, its shadow's watchdog
//! deletes the shadow once its lease expired, and the router stops routing to it; if
//! it was the last one, the router puts the Service back and deletes itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kt_proto::{Role, annotations, mesh};

use super::identity::Grants;
use super::router::{self, Router};
use super::{Inbound, Plan, check_local, shadow_options, user_name};
use crate::cluster::Cluster;
use crate::cluster::workload::{ListenPort, TargetName};
use crate::error::{Error, Result};
use crate::events::{Event, EventBus, Events};
use crate::options::{ConnectOptions, MeshOptions, MeshRule, PortMap, RemotePort};
use crate::task::Teardown;

/// A developer's place in a meshed Service: requests matching [`Mesh::rule`] arrive
/// at local ports on this machine, every other request goes to the Service's original
/// pods. Made by [`Session::mesh`](crate::Session::mesh).
///
/// [`Mesh::close`] removes this developer's rule; the last developer's close also
/// puts the Service back exactly and removes the router. Dropping it without `close`
/// does the same in the background.
pub struct Mesh {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    service: String,
    rule: MeshRule,
    router: Router,
    ports: Vec<ListenPort>,
    cluster: Cluster,
    inbound: Inbound,
    ready_timeout: std::time::Duration,
    events: Arc<EventBus>,
    teardown: Teardown,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("id", &self.inner.id)
            .field("service", &self.inner.service)
            .field("rule", &self.inner.rule.to_string())
            .field("router", &self.inner.router.name)
            .field("pod", &self.inner.inbound.name)
            .finish_non_exhaustive()
    }
}

/// The one Service a mesh target names: `svc/NAME`, or the one Service selecting a
/// workload (or a bare name as swap resolves it).
fn the_service(
    name: &TargetName,
    resolved: &crate::cluster::workload::Resolved,
) -> Result<k8s_openapi::api::core::v1::Service> {
    match resolved.services.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::InvalidTarget {
            target: name.to_string(),
            reason: "no Service selects its pods, and a mesh routes a Service's requests; \
                     use swap (scale mode) or expose"
                .to_owned(),
        }),
        many => Err(Error::InvalidTarget {
            target: name.to_string(),
            reason: format!(
                "several Services select its pods ({}); name the one to mesh, as `svc/NAME`",
                (many.iter())
                    .filter_map(|s| s.metadata.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Refuses a rule whose header value another developer of the Service already routes.
async fn refuse_shared_value(cluster: &Cluster, service: &str, rule: &MeshRule) -> Result<()> {
    for (pod, text) in router::members(cluster, service).await? {
        let Ok(theirs) = text.parse::<mesh::Rule>() else {
            continue;
        };
        if let Some((header, value)) = rule.0.shares_header_value(&theirs) {
            let meta = &pod.metadata;
            let note = |key| {
                (meta.annotations.as_ref())
                    .and_then(|a| a.get(key))
                    .cloned()
                    .unwrap_or_else(|| "?".to_owned())
            };
            return Err(Error::TargetHeld {
                message: format!(
                    "requests with `{header}: {value}` to Service `{service}` already go to \
                     {} (mesh shadow {}, rule `{text}`, since {}); choose another value",
                    note(annotations::OWNER_USER),
                    meta.name.clone().unwrap_or_default(),
                    note(annotations::OWNER_SINCE),
                ),
            });
        }
    }
    Ok(())
}

impl Mesh {
    pub(crate) async fn start(
        cluster: &Cluster,
        session_opts: &ConnectOptions,
        session_pod: &str,
        target: &str,
        rule: Option<MeshRule>,
        ports: &[PortMap],
        opts: MeshOptions,
    ) -> Result<Mesh> {
        let events = Arc::new(EventBus::new(opts.on_event.clone()));
        let rule = rule.unwrap_or_else(MeshRule::version_mark);
        let name: TargetName = target.parse()?;
        if ports.is_empty() {
            return Err(Error::InvalidArgument {
                what: format!("ports of the mesh of {name}"),
                value: String::new(),
                expected: "at least one `local[:remote]` port".to_owned(),
            });
        }
        let resolved = cluster.resolve_swap_target(&name).await?;
        let service = the_service(&name, &resolved)?;
        let service_name = service.metadata.name.clone().unwrap_or_default();
        let listen = resolved.listen_ports(&name.to_string(), ports)?;
        // The router takes every port of the Service (the others go to the origin).
        let every_port: Vec<PortMap> = (service.spec.iter())
            .flat_map(|s| s.ports.iter().flatten())
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| u16::try_from(p.port).ok())
            .map(|p| PortMap::to(p, RemotePort::Number(p)))
            .collect();
        // Several Service ports may target one container port: each is listened on once.
        let mut all_ports: Vec<ListenPort> = Vec::new();
        for port in &every_port {
            for listen in resolved.listen_ports(&name.to_string(), std::slice::from_ref(port))? {
                if !all_ports.iter().any(|p| p.port == listen.port) {
                    all_ports.push(listen);
                }
            }
        }
        // UDP ports are relayed to the originals, unrouted.
        let udp_ports = resolved.udp_ports(&name.to_string())?;
        if opts.check_local {
            check_local(listen.iter().map(|p| p.local).collect::<Vec<_>>()).await?;
        }
        refuse_shared_value(cluster, &service_name, &rule).await?;
        let selector = crate::cluster::workload::service_selector(&service);
        let router = Box::pin(Router::ensure(&router::Plan {
            cluster,
            opts: session_opts,
            service: &service,
            ports: &all_ports,
            udp_ports: &udp_ports,
            selector,
            ttl: opts.restore_ttl,
            events: &events,
        }))
        .await?;
        let id = crate::shadow::session_id();
        let mut shadow_opts = shadow_options(session_opts, opts.restore_ttl);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        shadow_opts.annotations.extend([
            (mesh::RULE_ANNOTATION.to_owned(), rule.to_string()),
            (annotations::OWNER_USER.to_owned(), user_name()),
            (annotations::OWNER_SINCE.to_owned(), now),
        ]);
        let launched = Box::pin(Inbound::launch(Plan {
            cluster,
            opts: &shadow_opts,
            role: Role::ShadowMesh,
            id: &id,
            pod_labels: BTreeMap::from([(mesh::SERVICE_LABEL.to_owned(), service_name.clone())]),
            ports: &listen,
            grants: Grants {
                delete_pods: vec![session_pod.to_owned()],
                ..Grants::default()
            },
            watchdog_args: vec![
                kt_proto::cli::SELF_DELETE.to_owned(),
                kt_proto::cli::DELETE_POD.to_owned(),
                session_pod.to_owned(),
            ],
            borrow_from: resolved.pod_selector(),
            events: &events,
        }))
        .await;
        let inbound = match launched {
            Ok(inbound) => inbound,
            Err(e) => {
                finish_if_last(cluster, &router, &events, session_opts.pod_ready_timeout).await;
                return Err(e);
            }
        };
        let mesh = Mesh {
            inner: Arc::new(Inner {
                id,
                service: service_name.clone(),
                rule,
                router,
                ports: listen,
                cluster: cluster.clone(),
                inbound,
                ready_timeout: session_opts.pod_ready_timeout,
                events: Arc::clone(&events),
                teardown: Teardown::new(),
            }),
        };
        let inner = &mesh.inner;
        if let Err(e) = (inner.router)
            .wait_routed(cluster, &inner.inbound.name, inner.ready_timeout)
            .await
        {
            if let Err(c) = inner.shut_down().await {
                tracing::warn!(target: "kt", "after a failed mesh of {service_name}: {c}");
            }
            return Err(e);
        }
        events.emit(Event::Routed {
            service: service_name,
            rule: inner.rule.to_string(),
            router: inner.router.name.clone(),
        });
        Ok(mesh)
    }

    /// The mesh's id (the `kt.dev/session` label of this developer's shadow).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The meshed Service's name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Which requests come here.
    pub fn rule(&self) -> &MeshRule {
        &self.inner.rule
    }

    /// The header to send for a request to come here, as `(name, value)` (the rule's
    /// first header-equality clause; with the default rule, `version` and a random
    /// value). `None` for a rule of only regexes and path prefixes.
    pub fn header(&self) -> Option<(&str, &str)> {
        self.inner.rule.header()
    }

    /// The router pod's name (shared by every developer of the Service).
    pub fn router(&self) -> &str {
        &self.inner.router.name
    }

    /// This developer's mesh shadow pod.
    pub fn pod_name(&self) -> &str {
        &self.inner.inbound.name
    }

    /// `(local, remote)` for every port: matching requests to `remote` (a container
    /// port of the Service's pods) arrive at `127.0.0.1:local`.
    pub fn ports(&self) -> Vec<(u16, u16)> {
        self.inner.ports.iter().map(|p| (p.local, p.port)).collect()
    }

    /// How many connections arrived from the router so far.
    pub fn connections(&self) -> u64 {
        self.inner.inbound.connections.load(Ordering::Relaxed)
    }

    /// Every event of this mesh so far, then new ones, until it is closed.
    pub fn events(&self) -> Events {
        self.inner.events.subscribe()
    }

    /// Removes this developer's rule and shadow; if no other developer is left, puts
    /// the Service back, waits until its original pods serve it again and removes the
    /// router. Calling it again does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Cleanup`] naming what could not be removed.
    pub async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        inner
            .teardown
            .close_reporting(&inner.events, Box::pin(inner.shut_down()))
            .await
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let inner = Arc::clone(&self.inner);
        let leftover = || {
            format!(
                "mesh {} of {} dropped without close() outside a tokio runtime: its shadow \
                 goes when its lease expires, and the router with the last one",
                self.inner.id, self.inner.service
            )
        };
        self.inner.teardown.on_drop(
            || self.inner.inbound.stop_tasks(),
            async move {
                if let Err(e) = Box::pin(inner.shut_down()).await {
                    tracing::warn!(target: "kt", "mesh dropped without close(): {e}");
                }
            },
            leftover,
        );
    }
}

/// Removes the router if no developer's shadow is left.
async fn finish_if_last(
    cluster: &Cluster,
    router: &Router,
    events: &EventBus,
    timeout: std::time::Duration,
) {
    match router::members(cluster, &router.service).await {
        Ok(members) if members.is_empty() => router.finish(cluster, events, timeout).await,
        Ok(_) => {}
        Err(e) => tracing::warn!(target: "kt", "listing the mesh's developers: {e}"),
    }
}

impl Inner {
    async fn shut_down(&self) -> Result<()> {
        let stopped = self.inbound.stop().await;
        // The router drops the route at its next poll; until then it would proxy this
        // developer's requests to a shadow that is gone (502) instead of the originals.
        let unrouted = (self.router)
            .wait_unrouted(&self.cluster, &self.inbound.name, self.ready_timeout)
            .await;
        match unrouted {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                target: "kt",
                "the mesh router {} still routes to {} after {:?}",
                self.router.name,
                self.inbound.name,
                self.ready_timeout
            ),
            Err(e) => tracing::warn!(target: "kt", "reading the mesh router's routes: {e}"),
        }
        finish_if_last(
            &self.cluster,
            &self.router,
            &self.events,
            self.ready_timeout,
        )
        .await;
        stopped
    }
}
