//! What comes in through the tunnel: connections to ports a shadow listens on (SSH
//! remote forwards), each handed to a process on this machine. [`swap`], [`expose`] and
//! [`mesh`] build their handles on [`Inbound`]: a shadow of their own (pod, identity, Lease,
//! tunnel) whose forwarded ports survive reconnects.
//!
//! Unlike the layout sketch in DESIGN.md (where `shadow` builds on `inbound`), inbound
//! handles launch their own shadows, so this module uses [`crate::shadow`], and
//! `shadow` does not use it.

pub(crate) mod clean;
pub(crate) mod expose;
pub(crate) mod identity;
pub(crate) mod mesh;
mod pump;
mod router;
pub(crate) mod swap;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kt_proto::{Role, labels};

use crate::cluster::Cluster;
use crate::cluster::workload::ListenPort;
use crate::error::{Error, Result};
use crate::events::{Event, EventBus};
use crate::options::ConnectOptions;
use crate::shadow::{PodShape, Shadow, pod_name};
use crate::task::Tasks;
use crate::transport::RemoteForward;
use identity::{Grants, Made};

/// Label on a swap shadow naming its swap (the selector a swapped Service gets).
pub(crate) const SWAP_LABEL: &str = "kt.dev/swap";

/// Label on an expose shadow naming its expose (the selector of the exposed Service).
pub(crate) const EXPOSE_LABEL: &str = "kt.dev/expose";

/// How long the local-port check waits for a connection.
const LOCAL_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Refuses a local port nothing listens on, before anything changes in the cluster.
pub(crate) async fn check_local(ports: impl IntoIterator<Item = u16>) -> Result<()> {
    for port in ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match tokio::time::timeout(LOCAL_CHECK_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Error::NotListening {
                    port,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(Error::NotListening {
                    port,
                    reason: format!("no answer within {LOCAL_CHECK_TIMEOUT:?}"),
                });
            }
        }
    }
    Ok(())
}

/// When a hold taken now for `ttl` expires.
pub(crate) fn expiry(ttl: Duration) -> k8s_openapi::jiff::Timestamp {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::from_secs(30));
    Timestamp::now()
        .checked_add(ttl)
        .unwrap_or_else(|_| Timestamp::now())
}

/// How long kube-proxy gets to apply an endpoint change before the pod that served
/// is removed (it watches EndpointSlices and reprograms each node asynchronously; on
/// the lab's node this takes well under a second).
pub(crate) const PROXY_SETTLE: Duration = Duration::from_secs(1);

/// How [`wait_for_endpoints`] treats the pod that served while kt held the Service.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Serving<'a> {
    /// Its name: never counted as an original.
    pub(crate) pod: &'a str,
    /// Whether it must have left the endpoints (false when it carries the workload's
    /// labels and leaves only when deleted).
    pub(crate) must_leave: bool,
}

/// After a Service was put back, before the pod that served it goes: waits (up to
/// `timeout`) until every Service's EndpointSlices list a ready endpoint other than
/// `serving.pod` (with `expect_originals`) and, if `serving.must_leave`, no longer
/// list it; then gives kube-proxy [`PROXY_SETTLE`].
pub(crate) async fn wait_for_endpoints(
    cluster: &Cluster,
    services: &[String],
    serving: Serving<'_>,
    expect_originals: bool,
    timeout: Duration,
) {
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
    let api: kube::Api<EndpointSlice> =
        kube::Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    let moved = || async {
        for service in services {
            let lp = kube::api::ListParams::default()
                .labels(&format!("kubernetes.io/service-name={service}"));
            let Ok(slices) = api.list(&lp).await else {
                return true;
            };
            let endpoints = || slices.items.iter().flat_map(|s| s.endpoints.iter());
            let is_serving = |e: &Endpoint| {
                e.target_ref
                    .as_ref()
                    .is_some_and(|r| r.name.as_deref() == Some(serving.pod))
            };
            if serving.must_leave && endpoints().any(is_serving) {
                return false;
            }
            let original_ready = endpoints().any(|e| {
                !is_serving(e) && e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
            });
            if expect_originals && !original_ready {
                return false;
            }
        }
        true
    };
    loop {
        if moved().await {
            tokio::time::sleep(PROXY_SETTLE).await;
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                target: "kt",
                "{}: the original pods were not serving again within {timeout:?}",
                services.join(", ")
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The user name kt writes on objects it holds (`kt.dev/owner-user`).
pub(crate) fn user_name() -> String {
    ["KT_USER", "USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The options of an inbound shadow: the session's, with its Lease lasting `ttl` and
/// renewed at least three times per `ttl`, no session callback, and no test hooks.
pub(crate) fn shadow_options(session: &ConnectOptions, ttl: Duration) -> ConnectOptions {
    let mut shadow = session.clone();
    shadow.shadow_heartbeat_timeout = Some(ttl);
    shadow.heartbeat_interval = ttl / 3;
    shadow.on_event = None;
    shadow.remote_forward_ports = Vec::new();
    shadow
}

/// What an inbound shadow is launched with.
pub(crate) struct Plan<'a> {
    pub(crate) cluster: &'a Cluster,
    /// The session's options (image, timeouts, labels), with the Lease's duration and
    /// renewal already set for this handle.
    pub(crate) opts: &'a ConnectOptions,
    pub(crate) role: Role,
    /// The handle's id: the `kt.dev/session` label of its objects, its Lease's holder.
    pub(crate) id: &'a str,
    pub(crate) pod_labels: BTreeMap<String, String>,
    pub(crate) ports: &'a [ListenPort],
    pub(crate) grants: Grants,
    /// `kt-shadow serve` arguments of the restoring watchdog.
    pub(crate) watchdog_args: Vec<String>,
    /// The pods whose image an imageless shadow borrows first (the target's).
    pub(crate) borrow_from: Option<String>,
    pub(crate) events: &'a Arc<EventBus>,
}

/// A running inbound shadow: its pod, identity and forwards.
pub(crate) struct Inbound {
    pub(crate) name: String,
    pub(crate) shadow: Shadow,
    cluster: Cluster,
    made: Vec<Made>,
    pub(crate) tasks: Tasks,
    pub(crate) connections: Arc<AtomicU64>,
}

impl Inbound {
    /// Creates the identity, the shadow pod (Ready, tunnel up), hands the identity to
    /// the pod, and starts a remote forward per port. On failure everything created is
    /// removed before the error is returned.
    pub(crate) async fn launch(plan: Plan<'_>) -> Result<Inbound> {
        let name = pod_name(plan.role, plan.id);
        let mut labels = plan.opts.labels.clone();
        labels.insert(
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        );
        labels.insert(labels::SESSION.to_owned(), plan.id.to_owned());
        labels.insert(labels::ROLE.to_owned(), plan.role.as_str().to_owned());
        let mut made = Vec::new();
        let meta = identity::meta(&name, labels);
        let created = identity::create(plan.cluster, &meta, &name, &plan.grants, &mut made).await;
        if let Err(e) = created {
            undo_identity(plan.cluster, &name, &made).await;
            return Err(e);
        }
        let shape = PodShape {
            pod_labels: plan.pod_labels,
            ports: (plan.ports.iter())
                .map(|p| (p.name.clone().unwrap_or_default(), p.port))
                .collect(),
            udp_ports: Vec::new(),
            service_account: Some(name.clone()),
            extra_args: plan.watchdog_args,
            grace_seconds: Some(20),
            borrow_from: plan.borrow_from,
        };
        let shadow = match Shadow::launch(
            plan.cluster,
            plan.opts,
            plan.id,
            plan.role,
            &shape,
            plan.events,
        )
        .await
        {
            Ok(shadow) => shadow,
            Err(e) => {
                undo_identity(plan.cluster, &name, &made).await;
                return Err(e);
            }
        };
        let inbound = Inbound {
            name,
            shadow,
            cluster: plan.cluster.clone(),
            made,
            tasks: Tasks::new(),
            connections: Arc::new(AtomicU64::new(0)),
        };
        match inbound.start(plan.ports, plan.events).await {
            Ok(()) => Ok(inbound),
            Err(e) => {
                if let Err(c) = inbound.stop().await {
                    tracing::warn!(target: "kt", "after a failed start of {}: {c}", inbound.name);
                }
                Err(e)
            }
        }
    }

    async fn start(&self, ports: &[ListenPort], events: &Arc<EventBus>) -> Result<()> {
        identity::hand_to(&self.cluster, &self.name, &self.shadow.pod, &self.made).await?;
        let mut listening = Vec::new();
        for port in ports {
            let forward = self
                .shadow
                .tunnel
                .remote_forward("0.0.0.0", port.port)
                .await?;
            let local = SocketAddr::from(([127, 0, 0, 1], port.local));
            self.tasks.spawn(serve(
                forward,
                local,
                self.tasks.clone(),
                Arc::clone(&self.connections),
                Arc::clone(events),
            ));
            listening.push(format!("{} -> {local}", port.port));
        }
        events.emit(Event::Listening { ports: listening });
        Ok(())
    }

    /// Ends the forwards, removes the pod (and with it, by garbage collection, its
    /// Lease) and the identity, and waits until they are gone.
    pub(crate) async fn stop(&self) -> Result<()> {
        self.tasks.cancel.cancel();
        let removed = self.shadow.close().await;
        let left = identity::delete(&self.cluster, &self.name, &self.made).await;
        self.tasks.close().await;
        match (removed, left.is_empty()) {
            (Ok(()), true) => Ok(()),
            (
                Err(Error::Cleanup {
                    session,
                    namespace,
                    mut remaining,
                }),
                _,
            ) => {
                remaining.extend(left);
                Err(Error::Cleanup {
                    session,
                    namespace,
                    remaining,
                })
            }
            (Err(e), true) => Err(e),
            (Err(_) | Ok(()), false) => Err(Error::Cleanup {
                session: self.shadow.session.clone(),
                namespace: self.cluster.namespace.clone(),
                remaining: left,
            }),
        }
    }

    /// Stops the tasks at once (from a `Drop`).
    pub(crate) fn stop_tasks(&self) {
        self.tasks.cancel.cancel();
        self.shadow.stop_tasks();
    }
}

async fn undo_identity(cluster: &Cluster, name: &str, made: &[Made]) {
    let left = identity::delete(cluster, name, made).await;
    if !left.is_empty() {
        tracing::warn!(target: "kt", "after a failed start of {name}: left {}", left.join(", "));
    }
}

/// Splices every connection of `forward` to `local` until the forward or `tasks` ends.
pub(crate) async fn serve(
    mut forward: RemoteForward,
    local: SocketAddr,
    tasks: Tasks,
    count: Arc<AtomicU64>,
    events: Arc<EventBus>,
) {
    while let Some(accepted) = forward.accept().await {
        count.fetch_add(1, Ordering::Relaxed);
        events.emit(Event::Inbound {
            peer: accepted.peer.to_string(),
            port: accepted.bound_port,
        });
        tasks.spawn(async move {
            match tokio::net::TcpStream::connect(local).await {
                Ok(stream) => {
                    // Request/response traffic must not wait for Nagle's algorithm.
                    let _ = stream.set_nodelay(true);
                    pump::splice_channel(stream, accepted.channel).await;
                }
                Err(e) => tracing::warn!(target: "kt", "inbound connection to {local}: {e}"),
            }
        });
    }
}
