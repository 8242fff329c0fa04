//! [`Swap`]: a workload's traffic goes to a process on this machine, and everything is
//! put back afterwards.
//!
//! The order of a swap keeps every request served: the swap shadow is Ready and its
//! remote forwards listen before any selector or replica count changes; on close the
//! change is undone first and the shadow removed only once the original pods serve
//! again (scale mode waits for the workload's replicas to be ready).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kt_proto::Role;
use kt_proto::restore::{REPLICAS_PATH, SELECTOR_PATH, Step};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::identity::Grants;
use super::{Inbound, Plan, SWAP_LABEL, check_local, expiry, shadow_options, user_name};
use crate::cluster::Cluster;
use crate::cluster::restore::{self, Hold, Ownership, TakeOver, Taken, Undo};
use crate::cluster::workload::{ListenPort, Resolved, TargetKind, TargetName};
use crate::error::{Error, Result};
use crate::events::{Event, EventBus, Events};
use crate::options::{ConnectOptions, PortMap, SwapMode, SwapOptions};
use crate::task::Teardown;

/// A swap in progress: connections to the target's ports in the cluster arrive at local
/// ports on this machine. Made by [`Session::swap`](crate::Session::swap).
///
/// [`Swap::close`] puts the cluster back exactly (a value someone else changed
/// meanwhile is left alone and reported as [`Event::RestoreConflict`]). Dropping it
/// without `close` does the same in the background. If this process dies, the swap
/// shadow's watchdog restores the cluster itself once the lease on the target has not
/// been renewed for the restore TTL.
pub struct Swap {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    target: String,
    mode: SwapMode,
    services: Vec<String>,
    ports: Vec<ListenPort>,
    cluster: Cluster,
    inbound: Inbound,
    steps: Mutex<Vec<Step>>,
    workload: Option<(TargetKind, String, i32)>,
    ready_timeout: Duration,
    renewal: CancellationToken,
    events: Arc<EventBus>,
    teardown: Teardown,
}

impl std::fmt::Debug for Swap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swap")
            .field("id", &self.inner.id)
            .field("target", &self.inner.target)
            .field("mode", &self.inner.mode)
            .field("pod", &self.inner.inbound.name)
            .finish_non_exhaustive()
    }
}

/// The selector a swapped Service gets: the swap shadow's own label.
fn shadow_selector(id: &str) -> Value {
    serde_json::json!({ SWAP_LABEL: id })
}

/// The `kt-shadow serve` arguments of the restoring watchdog for the objects `steps`
/// will change.
fn watchdog_args(
    id: &str,
    objects: &[(TargetKind, String, String)],
    session_pod: &str,
) -> Vec<String> {
    let mut args = vec![kt_proto::cli::SESSION.to_owned(), id.to_owned()];
    for (kind, name, uid) in objects {
        let kind = match kind {
            TargetKind::Service => "Service",
            TargetKind::Deployment => "Deployment",
            TargetKind::StatefulSet => "StatefulSet",
        };
        args.push(kt_proto::cli::RESTORE.to_owned());
        args.push(format!("{kind}/{name}/{uid}"));
    }
    args.push(kt_proto::cli::SELF_DELETE.to_owned());
    args.extend([kt_proto::cli::DELETE_POD.to_owned(), session_pod.to_owned()]);
    args
}

impl Swap {
    pub(crate) async fn start(
        cluster: &Cluster,
        session_opts: &ConnectOptions,
        session_pod: &str,
        target: &str,
        ports: &[PortMap],
        opts: SwapOptions,
    ) -> Result<Swap> {
        let events = Arc::new(EventBus::new(opts.on_event.clone()));
        let name: TargetName = target.parse()?;
        if ports.is_empty() {
            return Err(Error::InvalidArgument {
                what: format!("ports of the swap of {name}"),
                value: String::new(),
                expected: "at least one `local[:remote]` port".to_owned(),
            });
        }
        let resolved = cluster.resolve_swap_target(&name).await?;
        let listen = resolved.listen_ports(&name.to_string(), ports)?;
        // What changes, before anything is created.
        let objects = changed_objects(cluster, &name, &resolved, opts.mode).await?;
        if opts.check_local {
            check_local(listen.iter().map(|p| p.local).collect::<Vec<_>>()).await?;
        }
        let id = crate::shadow::session_id();
        // Everything the target is made of, whatever the mode: a selector swap of a
        // scaled-away workload (or the reverse) would stack two swaps on one target.
        let related = (resolved.services.iter())
            .filter_map(|s| s.metadata.name.clone())
            .map(|n| (TargetKind::Service, n))
            .chain(resolved.workload.iter().map(|w| (w.kind, w.name.clone())));
        for (kind, object_name) in related {
            refuse_if_held(cluster, kind, &object_name, &id).await?;
        }
        let mut pod_labels = BTreeMap::new();
        if opts.mode == SwapMode::Scale
            && let Some(w) = &resolved.workload
        {
            pod_labels.extend(w.pod_labels.clone());
        }
        pod_labels.insert(SWAP_LABEL.to_owned(), id.clone());
        let shadow_opts = shadow_options(session_opts, opts.restore_ttl);
        let grants = Grants {
            patch: objects.iter().map(|(k, n, _)| (*k, n.clone())).collect(),
            delete_pods: vec![session_pod.to_owned()],
            router: false,
        };
        let inbound = Box::pin(Inbound::launch(Plan {
            cluster,
            opts: &shadow_opts,
            role: Role::ShadowSwap,
            id: &id,
            pod_labels,
            ports: &listen,
            grants,
            watchdog_args: watchdog_args(&id, &objects, session_pod),
            borrow_from: resolved.pod_selector(),
            events: &events,
        }))
        .await?;
        let workload = (opts.mode == SwapMode::Scale)
            .then_some(resolved.workload.as_ref())
            .flatten()
            .map(|w| (w.kind, w.name.clone(), w.replicas.unwrap_or(1)));
        let swap = Swap {
            inner: Arc::new(Inner {
                id: id.clone(),
                target: name.to_string(),
                mode: opts.mode,
                services: resolved
                    .services
                    .iter()
                    .filter_map(|s| s.metadata.name.clone())
                    .collect(),
                ports: listen,
                cluster: cluster.clone(),
                inbound,
                steps: Mutex::new(Vec::new()),
                workload,
                ready_timeout: session_opts.pod_ready_timeout,
                renewal: CancellationToken::new(),
                events: Arc::clone(&events),
                teardown: Teardown::new(),
            }),
        };
        let hold = Hold::new(
            id.clone(),
            user_name(),
            Timestamp::now(),
            expiry(opts.restore_ttl),
        );
        if let Err(e) = swap.inner.take_all(&objects, &hold).await {
            if let Err(c) = swap.inner.shut_down().await {
                tracing::warn!(target: "kt", "after a failed swap of {name}: {c}");
            }
            return Err(e);
        }
        swap.inner.inbound.tasks.spawn(renew(
            Arc::clone(&swap.inner),
            opts.restore_ttl,
            swap.inner.renewal.clone(),
        ));
        Ok(swap)
    }

    /// The swap's id (the `kt.dev/session` label of its objects, the owner recorded on
    /// the objects it changed).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The target as resolved (`deploy/web`, `svc/web`).
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The mode it runs in.
    pub fn mode(&self) -> SwapMode {
        self.inner.mode
    }

    /// The swap shadow pod's name.
    pub fn pod_name(&self) -> &str {
        &self.inner.inbound.name
    }

    /// The Services that select the target (in selector mode, those switched to the
    /// swap shadow).
    pub fn services(&self) -> &[String] {
        &self.inner.services
    }

    /// `(local, remote)` for every port: connections to `remote` on the swap shadow
    /// (a container port of the target) arrive at `127.0.0.1:local`.
    pub fn ports(&self) -> Vec<(u16, u16)> {
        self.inner.ports.iter().map(|p| (p.local, p.port)).collect()
    }

    /// How many connections arrived from the cluster so far (each is also an
    /// [`Event::Inbound`] naming who connected).
    pub fn connections(&self) -> u64 {
        self.inner.inbound.connections.load(Ordering::Relaxed)
    }

    /// Every event of this swap so far, then new ones, until it is closed.
    pub fn events(&self) -> Events {
        self.inner.events.subscribe()
    }

    /// Drops the swap shadow's current link as a network failure would (tests of
    /// reconnects: the shadow keeps its listeners and the forwards are asked for again).
    #[doc(hidden)]
    pub fn simulate_tunnel_drop(&self) {
        self.inner.inbound.shadow.break_link();
    }

    /// Puts the cluster back as it was (selector or replica count), waits until the
    /// original pods serve again, then removes the swap shadow and its identity.
    /// Calling it again does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Cleanup`] naming what could not be removed; API errors while
    /// restoring (the watchdog and `clean` restore what this could not).
    pub async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        inner
            .teardown
            .close_reporting(&inner.events, inner.shut_down())
            .await
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        let inner = Arc::clone(&self.inner);
        let leftover = || {
            format!(
                "swap {} of {} dropped without close() outside a tokio runtime: its shadow \
                 restores the cluster when its lease expires",
                self.inner.id, self.inner.target
            )
        };
        self.inner.teardown.on_drop(
            || self.inner.renewal.cancel(),
            async move {
                if let Err(e) = inner.shut_down().await {
                    tracing::warn!(target: "kt", "swap dropped without close(): {e}");
                }
            },
            leftover,
        );
    }
}

/// The objects the swap changes: (kind, name, uid).
async fn changed_objects(
    cluster: &Cluster,
    name: &TargetName,
    resolved: &Resolved,
    mode: SwapMode,
) -> Result<Vec<(TargetKind, String, String)>> {
    let uid = |meta: &kube::api::ObjectMeta| meta.uid.clone().unwrap_or_default();
    match mode {
        SwapMode::Selector => {
            if resolved.services.is_empty() {
                return Err(Error::InvalidTarget {
                    target: name.to_string(),
                    reason: "no Service selects its pods, so there is no selector to \
                             switch: use scale mode, or `expose` to publish a local port \
                             as a new Service"
                        .to_owned(),
                });
            }
            Ok(resolved
                .services
                .iter()
                .map(|s| {
                    (
                        TargetKind::Service,
                        s.metadata.name.clone().unwrap_or_default(),
                        uid(&s.metadata),
                    )
                })
                .collect())
        }
        SwapMode::Scale => {
            let Some(workload) = &resolved.workload else {
                return Err(Error::InvalidTarget {
                    target: name.to_string(),
                    reason: "scale mode needs the Deployment or StatefulSet behind it, and \
                             exactly one must match the Service's selector; name it \
                             (`deploy/NAME`, `sts/NAME`) or use selector mode"
                        .to_owned(),
                });
            };
            cluster.refuse_autoscaled(workload).await?;
            let object = restore::get(cluster, workload.kind.proto(), &workload.name).await?;
            let uid = object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            Ok(vec![(workload.kind, workload.name.clone(), uid)])
        }
    }
}

/// Refuses (before anything is created) an object a live session holds.
async fn refuse_if_held(cluster: &Cluster, kind: TargetKind, name: &str, id: &str) -> Result<()> {
    let object = restore::get(cluster, kind.proto(), name).await?;
    match kt_proto::guard::ownership(&object, id, Timestamp::now())? {
        Ownership::Held(holder) => Err(Error::TargetHeld {
            message: holder.refusal(),
        }),
        _ => Ok(()),
    }
}

impl Inner {
    async fn take_all(&self, objects: &[(TargetKind, String, String)], hold: &Hold) -> Result<()> {
        for (kind, name, _) in objects {
            let writes = match self.mode {
                SwapMode::Selector => {
                    vec![(SELECTOR_PATH.to_owned(), Some(shadow_selector(&self.id)))]
                }
                SwapMode::Scale => vec![(REPLICAS_PATH.to_owned(), Some(Value::from(0)))],
            };
            let Taken { step, took_over } =
                restore::take(&self.cluster, kind.proto(), name, writes, hold).await?;
            if let Some(TakeOver { holder, undone }) = took_over {
                self.report(
                    &format!("took over from expired session `{}`", holder.session),
                    &step,
                    &undone,
                );
            }
            match self.mode {
                SwapMode::Selector => self.events.emit(Event::SelectorSwitched {
                    service: name.clone(),
                    selector: format!("{SWAP_LABEL}={}", self.id),
                }),
                SwapMode::Scale => {
                    let from = step.changes[0]
                        .original
                        .as_ref()
                        .and_then(Value::as_u64)
                        .unwrap_or(1);
                    self.events.emit(Event::Scaled {
                        workload: format!("{}/{name}", kind.short()),
                        from: u32::try_from(from).unwrap_or(u32::MAX),
                        to: 0,
                    });
                }
            }
            self.steps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(step);
        }
        Ok(())
    }

    fn report(&self, what: &str, step: &Step, undo: &Undo) {
        if !undo.restored.is_empty() {
            self.events.emit(Event::Restored {
                object: step.object.to_string(),
                detail: format!("{what}: {}", undo.restored.join(", ")),
            });
        }
        for conflict in &undo.conflicts {
            self.events.emit(Event::RestoreConflict {
                detail: conflict.to_string(),
            });
        }
    }

    /// Undoes every change (newest first), waits for the originals, removes the shadow.
    async fn shut_down(&self) -> Result<()> {
        self.renewal.cancel();
        let steps: Vec<Step> =
            std::mem::take(&mut *self.steps.lock().unwrap_or_else(PoisonError::into_inner));
        let mut first_error = None;
        let mut conflicts = 0;
        for step in steps.iter().rev() {
            match restore::give_back(&self.cluster, step, &self.id).await {
                Ok(undo) => {
                    conflicts += undo.conflicts.len();
                    self.report("put back", step, &undo);
                }
                Err(e) => {
                    tracing::warn!(target: "kt", "restoring {}: {e}", step.object);
                    first_error.get_or_insert(e);
                }
            }
        }
        // Only what kt put back is waited for: a selector someone else changed
        // meanwhile may select nothing at all.
        if first_error.is_none() && conflicts == 0 && !steps.is_empty() {
            self.wait_for_originals().await;
        }
        let stopped = self.inbound.stop().await;
        match first_error {
            Some(e) => Err(e),
            None => stopped,
        }
    }

    /// After a restore, before the shadow goes: waits until the workload's replicas
    /// are ready (scale mode), then until every Service's endpoints list a ready
    /// original pod and (selector mode) no longer list the shadow (in scale mode the
    /// shadow carries the workload's labels, so it leaves the endpoints only when it is
    /// deleted: connections kube-proxy still sends it in that moment can be refused;
    /// the benchmark reports that gap).
    async fn wait_for_originals(&self) {
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        if let Some((kind, name, replicas)) = &self.workload {
            while !self.workload_ready(*kind, name, *replicas).await {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        target: "kt",
                        "{}: the workload's replicas were not ready again within {:?}",
                        self.target,
                        self.ready_timeout
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let expect_originals = self.workload.as_ref().is_none_or(|(_, _, r)| *r > 0);
        let serving = super::Serving {
            pod: &self.inbound.name,
            // In scale mode the shadow stays an endpoint until it is deleted.
            must_leave: self.workload.is_none(),
        };
        super::wait_for_endpoints(
            &self.cluster,
            &self.services,
            serving,
            expect_originals,
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await;
    }

    async fn workload_ready(&self, kind: TargetKind, name: &str, replicas: i32) -> bool {
        match restore::get(&self.cluster, kind.proto(), name).await {
            Ok(object) => {
                let ready = object
                    .pointer("/status/readyReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                ready >= i64::from(replicas)
            }
            // Gone, or unreadable: nothing to wait for.
            Err(_) => true,
        }
    }
}

/// Renews the lease kept on every changed object until cancelled.
async fn renew(inner: Arc<Inner>, ttl: Duration, cancel: CancellationToken) {
    let interval = (ttl / 3).max(Duration::from_secs(1));
    let mut failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let steps = inner
            .steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let failure = restore::renew(&inner.cluster, &steps, &inner.id, expiry(ttl))
            .await
            .err()
            .map(|e| e.to_string());
        match failure {
            Some(reason) if !failing => {
                failing = true;
                inner.events.emit(Event::HeartbeatFailed { reason });
            }
            Some(_) => {}
            None => failing = false,
        }
    }
}
