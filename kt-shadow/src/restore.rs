//! The restoring watchdog of a swap shadow (`--restore KIND/NAME/UID`, `--session ID`,
//! `--self-delete`).
//!
//! A swap points a Service's selector at the shadow, or scales a workload to zero, and
//! records on each such object who holds it and what it changed
//! ([`kt_proto::annotations`], [`kt_proto::guard`]). When the shadow stops (the
//! session's Lease expired or is gone, SIGTERM or SIGINT, or any other reason it stops
//! serving), nothing would be left to serve what the object now points at, so the
//! shadow puts each `--restore` object back itself, with its own credentials
//! ([`crate::cluster`]: the pod's ServiceAccount, whose Role allows `get` and `patch`
//! on exactly those objects), **before** it closes its listeners:
//!
//! - the object is read; it is restored only while its `kt.dev/owner` is the
//!   `--session` and its UID is the one given (a re-created object, or one another
//!   session took over, is left alone);
//! - its own `kt.dev/restore` record is the source of truth for what to put back, and
//!   [`kt_proto::guard::undo`] computes the patch, exactly as the client does: a value
//!   someone else changed meanwhile is left as it is and logged as a conflict;
//! - the guarded patch is sent (`application/json-patch+json`); when the API server
//!   refuses it because the object changed since it was read
//!   ([`kt_proto::guard::is_stale`]), the object is read again, at most
//!   [`kt_proto::guard::ATTEMPTS`] times.
//!
//! Objects are restored last first, one log line each (restored, conflict, nothing to
//! do and why, or failed and why). Every API call is bounded ([`CALL_TIMEOUT`]) and so
//! is the whole ([`RESTORE_BUDGET`]), well under a pod's default 30 s grace period.
//! Errors are logged, never fatal to the rest: the shadow then exits with
//! [`kt_proto::shadow::EXIT_RESTORE_FAILED`], and the record stays on the object for a
//! later kt run (`clean`, `recover`, a take-over) to restore.
//!
//! With `--self-delete`, when the Lease expired or is gone and nothing failed, the
//! shadow then deletes its own pod (name from `POD_NAME`, else `HOSTNAME`, else the
//! kernel's host name), so that what the pod owns (the Lease, a per-swap
//! ServiceAccount and Role) is garbage-collected with it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kt_proto::cli::RestoreTarget;
use kt_proto::guard::{self, Conflict, Undo};
use kt_proto::restore::{Kind, Step};
use kube::api::PatchParams;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::Exit;
use crate::cluster::Cluster;

/// The bound on each API call of the watchdog.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The bound on restoring every object (and deleting the pod): well under the 30 s
/// a pod gets between SIGTERM and SIGKILL by default.
pub const RESTORE_BUDGET: Duration = Duration::from_secs(12);

/// What to do with one object, decided from the object as read ([`decide`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send [`Undo::patch`] (there is one).
    Patch(Box<Undo>),
    /// Nothing to write, and why (a sentence for the log).
    Nothing(String),
}

/// Decides what to do with `target`, held by `session`, from `object` as the API
/// server returned it (`None`: there is no such object).
///
/// Nothing is written unless `kt.dev/owner` is `session` and the UID is the target's.
/// A hold without a `kt.dev/restore` record is released (its annotations removed).
///
/// # Errors
///
/// The object's record cannot be used ([`kt_proto::Error::InvalidRecord`], a field kt
/// does not change, ...): restoring it needs a person, and the message says how.
pub fn decide(
    target: &RestoreTarget,
    session: &str,
    object: Option<&Value>,
) -> Result<Decision, kt_proto::Error> {
    let Some(object) = object else {
        return Ok(Decision::Nothing("it no longer exists".to_owned()));
    };
    let found = guard::object_ref(object)?;
    if found.uid != target.uid {
        return Ok(Decision::Nothing(format!(
            "it was deleted and created again (uid {}, kt changed {}): not the object kt \
             changed",
            found.uid, target.uid
        )));
    }
    let owner = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(kt_proto::annotations::OWNER))
        .and_then(Value::as_str);
    match owner {
        Some(owner) if owner == session => {}
        Some(other) => {
            return Ok(Decision::Nothing(format!(
                "kt session `{other}` holds it now (it took it over after restoring this \
                 session's changes)"
            )));
        }
        None => {
            return Ok(Decision::Nothing(
                "no kt session holds it (already restored)".to_owned(),
            ));
        }
    }
    let step = match guard::recorded_step(object)? {
        Some(step) => step,
        // Held without a record: release the hold.
        None => Step {
            object: found,
            changes: Vec::new(),
        },
    };
    let undone = guard::undo(object, &step, session)?;
    if undone.patch.is_none() {
        return Ok(Decision::Nothing(
            "it already holds what its record says".to_owned(),
        ));
    }
    Ok(Decision::Patch(Box::new(undone)))
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The patch was applied: these fields restored (possibly none, when only the hold
    /// was released), these left as someone else set them.
    Restored {
        /// The fields put back (JSON pointers).
        restored: Vec<String>,
        /// The values left as they are.
        conflicts: Vec<Conflict>,
    },
    /// Nothing to write, and why.
    Nothing(String),
    /// It could not be restored, and why.
    Failed(String),
}

/// What [`Restorer::restore`] did, one entry per `--restore` object, in the order
/// they were restored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Each object and its outcome.
    pub outcomes: Vec<(RestoreTarget, Outcome)>,
}

impl Report {
    /// Whether any object could not be restored.
    pub fn failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed(_)))
    }
}

/// Restores the `--restore` objects and deletes the shadow's own pod; see the module
/// docs.
pub struct Restorer {
    cluster: Cluster,
    session: String,
    targets: Vec<RestoreTarget>,
    /// The pod to delete after a restore on lease expiry (`--self-delete`).
    own_pod: Option<String>,
    /// The client's other pods, deleted before the own one (`--delete-pod`).
    other_pods: Vec<String>,
}

impl std::fmt::Debug for Restorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restorer")
            .field("namespace", &self.cluster.namespace)
            .field("session", &self.session)
            .field("targets", &self.targets)
            .field("own_pod", &self.own_pod)
            .field("other_pods", &self.other_pods)
            .finish()
    }
}

impl Restorer {
    /// Restores `targets` (in the cluster's namespace) held by `session`.
    pub fn new(cluster: Cluster, session: &str, targets: Vec<RestoreTarget>) -> Restorer {
        Restorer {
            cluster,
            session: session.to_owned(),
            targets,
            own_pod: None,
            other_pods: Vec::new(),
        }
    }

    /// Also deletes `pods` (the same client's session shadow), before the own pod, when
    /// the own pod is deleted.
    #[must_use]
    pub fn delete_pods_on_lease_expiry(mut self, pods: &[String]) -> Restorer {
        self.other_pods = pods.to_vec();
        self
    }

    /// Also deletes pod `name` (the shadow's own) after restoring on lease expiry.
    #[must_use]
    pub fn delete_pod_on_lease_expiry(mut self, name: &str) -> Restorer {
        self.own_pod = Some(name.to_owned());
        self
    }

    /// Whether it deletes pods when the Lease expired (`--self-delete`).
    pub fn deletes_pods(&self) -> bool {
        self.own_pod.is_some()
    }

    /// What the shadow does when it stops for `exit`: restores every object, then
    /// (on [`Exit::LeaseExpired`] with a pod to delete, if nothing failed) deletes the
    /// pod. Returns [`Exit::RestoreFailed`] if an object could not be restored, else
    /// `exit`. Bounded by [`RESTORE_BUDGET`].
    pub async fn on_stop(&self, exit: Exit) -> Exit {
        let deadline = Instant::now() + RESTORE_BUDGET;
        if !self.targets.is_empty() {
            info!(
                reason = ?exit,
                session = %self.session,
                objects = self.targets.len(),
                "the shadow is stopping: restoring what the session changed"
            );
        }
        let report = self.restore(deadline).await;
        if report.failed() {
            error!(
                "restore failed for at least one object (see above); not deleting the pod, \
                 exiting with code {}",
                kt_proto::shadow::EXIT_RESTORE_FAILED
            );
            return Exit::RestoreFailed;
        }
        if exit == Exit::LeaseExpired
            && let Some(pod) = &self.own_pod
        {
            for other in &self.other_pods {
                self.delete_pod(other, deadline).await;
            }
            self.delete_pod(pod, deadline).await;
        }
        exit
    }

    /// Restores every object, last first, within `deadline`; logs one line each.
    pub async fn restore(&self, deadline: Instant) -> Report {
        let mut report = Report::default();
        for target in self.targets.iter().rev() {
            let outcome = tokio::time::timeout_at(deadline, self.restore_one(target))
                .await
                .unwrap_or_else(|_| {
                    Outcome::Failed(format!(
                        "out of time: restoring must finish within {RESTORE_BUDGET:?}"
                    ))
                });
            log(target, &outcome);
            report.outcomes.push((target.clone(), outcome));
        }
        report
    }

    async fn restore_one(&self, target: &RestoreTarget) -> Outcome {
        let api = api(&self.cluster, target.kind);
        for _ in 1..=guard::ATTEMPTS {
            let object = match bounded(api.get_opt(&target.name)).await {
                Ok(object) => object.map(|o| to_value(o, target.kind)),
                Err(err) => return Outcome::Failed(format!("cannot read it: {err}")),
            };
            let undone = match decide(target, &self.session, object.as_ref()) {
                Ok(Decision::Patch(undone)) => *undone,
                Ok(Decision::Nothing(why)) => return Outcome::Nothing(why),
                Err(err) => return Outcome::Failed(err.to_string()),
            };
            let Some(patch) = undone.patch else {
                return Outcome::Nothing("it already holds what its record says".to_owned());
            };
            let patch = Patch::Json::<()>(patch);
            match bounded(api.patch(&target.name, &PatchParams::default(), &patch)).await {
                Ok(_) => {
                    return Outcome::Restored {
                        restored: undone.restored,
                        conflicts: undone.conflicts,
                    };
                }
                Err(Failure::Api(kube::Error::Api(status))) if status.code == 404 => {
                    return Outcome::Nothing("it no longer exists".to_owned());
                }
                Err(Failure::Api(kube::Error::Api(status)))
                    if guard::is_stale(
                        status.code,
                        status
                            .details
                            .as_ref()
                            .is_some_and(|d| !d.causes.is_empty()),
                    ) => {}
                Err(err) => return Outcome::Failed(format!("cannot patch it: {err}")),
            }
        }
        Outcome::Failed(format!(
            "it changed between each of {} reads and the patch; something keeps writing it",
            guard::ATTEMPTS
        ))
    }

    async fn delete_pod(&self, pod: &str, deadline: Instant) {
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace);
        let deleted =
            tokio::time::timeout_at(deadline, bounded(api.delete(pod, &DeleteParams::default())))
                .await;
        match deleted {
            Ok(Ok(_)) if Some(pod) == self.own_pod.as_deref() => {
                info!(pod, "deleted the shadow's own pod (--self-delete)");
            }
            Ok(Ok(_)) => info!(pod, "deleted the client's other pod (--delete-pod)"),
            Ok(Err(err)) => warn!(pod, error = %err, "cannot delete pod"),
            Err(_) => warn!(pod, "cannot delete pod: out of time"),
        }
    }
}

/// The shadow's own pod name: `POD_NAME` (kt sets it from the downward API), else
/// `HOSTNAME`, else the kernel's host name (a pod's host name is its name unless its
/// spec says otherwise).
pub fn own_pod_name() -> Option<String> {
    let env = |key| std::env::var(key).ok().filter(|v: &String| !v.is_empty());
    env(kt_proto::shadow::POD_NAME_ENV)
        .or_else(|| env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
}

fn log(target: &RestoreTarget, outcome: &Outcome) {
    let object = format!("{} {}", target.kind, target.name);
    match outcome {
        Outcome::Restored {
            restored,
            conflicts,
        } => {
            if restored.is_empty() {
                info!(%object, "released the session's hold; nothing to put back");
            } else {
                info!(%object, ?restored, "restored");
            }
            for conflict in conflicts {
                warn!(%object, "not restored: {conflict}");
            }
        }
        Outcome::Nothing(why) => info!(%object, "nothing to restore: {why}"),
        Outcome::Failed(why) => error!(
            %object,
            "cannot restore: {why}; its kt.dev/restore record stays on it for `ktctl clean` \
             or `ktctl recover`"
        ),
    }
}

fn api(cluster: &Cluster, kind: Kind) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(kind.group(), kind.version(), kind.kind());
    let resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
    Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource)
}

fn to_value(mut object: DynamicObject, kind: Kind) -> Value {
    object.types = Some(kube::api::TypeMeta {
        api_version: kind.api_version().to_owned(),
        kind: kind.kind().to_owned(),
    });
    // A DynamicObject (string keys, JSON values) always serializes.
    serde_json::to_value(object).unwrap_or_else(|e| unreachable!("object JSON: {e}"))
}

/// An API call that failed or took longer than [`CALL_TIMEOUT`].
#[derive(Debug)]
enum Failure {
    Api(kube::Error),
    Timeout,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api(kube::Error::Api(status)) => {
                write!(f, "{} (HTTP {})", status.message, status.code)
            }
            Failure::Api(err) => err.fmt(f),
            Failure::Timeout => write!(f, "the API server did not answer within {CALL_TIMEOUT:?}"),
        }
    }
}

async fn bounded<T>(call: impl Future<Output = kube::Result<T>>) -> Result<T, Failure> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(Failure::Api),
        Err(_) => Err(Failure::Timeout),
    }
}

#[cfg(test)]
mod tests;
