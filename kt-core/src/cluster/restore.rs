//! The restore ledger against the API server: take an object for a session (guarded,
//! with a take-over of an expired holder), give it back, renew the hold, and list what
//! is held, for swap, `clean` and `recover`.
//!
//! The patches and decisions are [`kt_proto::guard`]'s (the same code kt-shadow's
//! watchdog runs, so both undo alike); this module reads the objects, sends the
//! patches (`application/json-patch+json`) and retries: when the API server refuses a
//! guarded patch because the object changed since it was read
//! ([`guard::is_stale`]: HTTP 422 from a failed `test`, or 409), the object is read
//! again and the patch recomputed, at most [`guard::ATTEMPTS`] times in all.
//!
//! Every object is addressed by [`Kind`] and name in the session's namespace (a
//! [`Step`] names its own namespace). Errors are kt's: a live holder is
//! [`Error::TargetHeld`] (whose message is [`Holder::refusal`]), a hold lost meanwhile
//! [`Error::HoldLost`], a missing object [`Error::TargetNotFound`], an unreadable
//! record [`Error::Restore`], API refusals as everywhere ([`Error::Forbidden`], ...).

use futures::future::BoxFuture;
pub(crate) use k8s_openapi::jiff::Timestamp;
use kt_proto::guard::{self, Forward};
// What callers pass and get back, from the shared contract.
pub(crate) use kt_proto::guard::{Hold, Holder, Ownership, Skipped, Undo};
pub(crate) use kt_proto::restore::{Kind, Step};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;
use tracing::{info, warn};

use super::{Cluster, is_not_found, map_error};
use crate::error::{Error, Result};

/// What `take` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    /// The change as applied, with each field's original as seen at that moment: what
    /// `give_back` undoes (and what the object's `kt.dev/restore` records).
    pub step: Step,
    /// The expired hold taken over before, if any, and what undoing its record did.
    pub took_over: Option<TakeOver>,
}

/// An expired hold `take` undid before taking the object.
#[derive(Debug, Clone, PartialEq)]
pub struct TakeOver {
    /// The session whose lease had expired.
    pub holder: Holder,
    /// What undoing its record did: the fields restored, and the conflicts (values
    /// someone else had changed meanwhile, left as they were; also logged).
    pub undone: Undo,
}

/// Called between reading an object and sending the patch computed from it, with the
/// attempt's number (from 1). Nothing in kt; tests change the object there to prove
/// the retry.
pub type Between<'a> = &'a mut (dyn FnMut(u32) -> BoxFuture<'static, ()> + Send);

/// Reads the object `name` of `kind` in the session's namespace, as the API server
/// returns it.
///
/// # Errors
///
/// [`Error::TargetNotFound`] when there is none; API errors.
pub(crate) async fn get(cluster: &Cluster, kind: Kind, name: &str) -> Result<Value> {
    get_opt(cluster, kind, &cluster.namespace, name)
        .await?
        .ok_or_else(|| not_found(kind, name, &cluster.namespace))
}

/// Takes the object for `hold.session` and writes `writes` (JSON pointer, new value or
/// `None` to remove it) with the hold annotations, in one guarded JSON Patch.
///
/// - Held by another live session: [`Error::TargetHeld`], whose message is
///   [`Holder::refusal`] (who, since when, until when).
/// - Held by a session whose lease expired (at `hold.since`): its record is undone
///   first (a take-over; conflicts are logged and returned in [`Taken::took_over`]),
///   then the object is taken.
/// - Already held by `hold.session` with exactly these writes (a retry whose first
///   patch landed): nothing is sent; the recorded step is returned.
///
/// # Errors
///
/// Besides the above: [`Error::TargetNotFound`]; [`Error::Restore`] for a path kt does
/// not change on that kind, for other changes already held by this session, or for an
/// expired holder's unreadable record; [`Error::ObjectBusy`] when the object kept
/// changing for [`guard::ATTEMPTS`] reads; API errors.
pub(crate) async fn take(
    cluster: &Cluster,
    kind: Kind,
    name: &str,
    writes: Vec<(String, Option<Value>)>,
    hold: &Hold,
) -> Result<Taken> {
    take_with(cluster, kind, name, writes, hold, &mut |_| {
        Box::pin(async {})
    })
    .await
}

/// [`take`] with a [`Between`] hook.
pub(crate) async fn take_with(
    cluster: &Cluster,
    kind: Kind,
    name: &str,
    writes: Vec<(String, Option<Value>)>,
    hold: &Hold,
    between: Between<'_>,
) -> Result<Taken> {
    let namespace = cluster.namespace.as_str();
    let mut took_over = None;
    let mut stale = None;
    for attempt in 1..=guard::ATTEMPTS {
        let object = get(cluster, kind, name).await?;
        match guard::ownership(&object, &hold.session, hold.since)? {
            Ownership::Held(holder) => {
                return Err(Error::TargetHeld {
                    message: holder.refusal(),
                });
            }
            Ownership::Expired { holder, record } => {
                let record = match record {
                    Some(record) => record,
                    // A hold without a record: undoing nothing releases it.
                    None => Step {
                        object: guard::object_ref(&object)?,
                        changes: Vec::new(),
                    },
                };
                let undone = guard::undo(&object, &record, &holder.session)?;
                between(attempt).await;
                if let Some(patch) = &undone.patch {
                    match send(cluster, kind, namespace, name, patch).await? {
                        Sent::Done => {}
                        Sent::Stale(err) => {
                            stale = Some(err);
                            continue;
                        }
                        Sent::Gone => return Err(not_found(kind, name, namespace)),
                    }
                }
                for conflict in &undone.conflicts {
                    warn!(%conflict, "taking over an expired hold: a value was changed meanwhile");
                }
                warn!(
                    object = %record.object,
                    expired = %holder,
                    restored = ?undone.restored,
                    "took over an expired hold after restoring what it recorded"
                );
                took_over = Some(TakeOver { holder, undone });
                // Read it again, now free.
            }
            own @ (Ownership::Free | Ownership::Mine) => {
                let recorded = match own {
                    Ownership::Mine => guard::recorded_step(&object)?,
                    _ => None,
                };
                let step = match recorded {
                    // A retry whose first patch landed: the step as it was taken.
                    Some(recorded) if same_writes(&recorded, &writes) => recorded,
                    _ => guard::step(&object, writes.clone())?,
                };
                let patch = match guard::forward(&object, &step, hold)? {
                    Forward::Apply(patch) => patch,
                    Forward::AlreadyApplied => return Ok(Taken { step, took_over }),
                    Forward::Refused(holder) => {
                        return Err(Error::TargetHeld {
                            message: holder.refusal(),
                        });
                    }
                };
                between(attempt).await;
                match send(cluster, kind, namespace, name, &patch).await? {
                    Sent::Done => return Ok(Taken { step, took_over }),
                    Sent::Stale(err) => stale = Some(err),
                    Sent::Gone => return Err(not_found(kind, name, namespace)),
                }
            }
        }
    }
    Err(kept_changing(kind, name, namespace, stale))
}

/// Puts back what `step` changed (made by `session`), guarded, from the object as it
/// is now; retries like [`take`]. Idempotent: a second call finds nothing to do.
///
/// The returned [`Undo`] lists the fields restored and the conflicts (values someone
/// else changed meanwhile, left as they are; also logged). The hold annotations are
/// removed even when a field conflicted (see [`kt_proto::guard`]). Nothing is written
/// when the object is gone ([`Skipped::Gone`]), was re-created under the same name
/// ([`Skipped::Recreated`]) or is held by another session now
/// ([`Skipped::HeldByOther`]).
///
/// # Errors
///
/// [`Error::Restore`] for a step of a kind kt does not change or that does not fit the
/// object; [`Error::ObjectBusy`] when the object kept changing for [`guard::ATTEMPTS`]
/// reads; API errors.
pub(crate) async fn give_back(cluster: &Cluster, step: &Step, session: &str) -> Result<Undo> {
    give_back_with(cluster, step, session, &mut |_| Box::pin(async {})).await
}

/// [`give_back`] with a [`Between`] hook.
pub(crate) async fn give_back_with(
    cluster: &Cluster,
    step: &Step,
    session: &str,
    between: Between<'_>,
) -> Result<Undo> {
    let kind = kind_of(step)?;
    let (namespace, name) = (step.object.namespace.as_str(), step.object.name.as_str());
    let gone = || Undo {
        skipped: Some(Skipped::Gone),
        ..Undo::default()
    };
    let mut stale = None;
    for attempt in 1..=guard::ATTEMPTS {
        let Some(object) = get_opt(cluster, kind, namespace, name).await? else {
            info!(object = %step.object, "nothing to restore: the object no longer exists");
            return Ok(gone());
        };
        let undone = guard::undo(&object, step, session)?;
        between(attempt).await;
        if let Some(patch) = &undone.patch {
            match send(cluster, kind, namespace, name, patch).await? {
                Sent::Done => {}
                Sent::Stale(err) => {
                    stale = Some(err);
                    continue;
                }
                Sent::Gone => return Ok(gone()),
            }
        }
        for conflict in &undone.conflicts {
            warn!(%conflict, "not restored: changed by someone else meanwhile");
        }
        match &undone.skipped {
            Some(skipped) => info!(object = %step.object, "nothing to restore: {skipped}"),
            None => info!(object = %step.object, restored = ?undone.restored, "restored"),
        }
        return Ok(undone);
    }
    Err(kept_changing(kind, name, namespace, stale))
}

/// Moves `kt.dev/lease-expiry` of `session`'s hold to `expires` on every object of
/// `steps` (the heartbeat), guarded by the owner annotation; every object is tried.
///
/// # Errors
///
/// [`Error::HoldLost`] for the first object no longer held by `session` (deleted,
/// released, or taken over after the hold expired: the message says which); API
/// errors.
pub(crate) async fn renew(
    cluster: &Cluster,
    steps: &[Step],
    session: &str,
    expires: Timestamp,
) -> Result<()> {
    let patch = guard::renew(session, expires);
    let mut first_error = None;
    for step in steps {
        let result = renew_one(cluster, step, session, &patch).await;
        if let Err(err) = result {
            warn!(object = %step.object, error = %err, "cannot renew the hold");
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn renew_one(
    cluster: &Cluster,
    step: &Step,
    session: &str,
    patch: &json_patch::Patch,
) -> Result<()> {
    let kind = kind_of(step)?;
    let (namespace, name) = (step.object.namespace.as_str(), step.object.name.as_str());
    let lost = |reason: String| Error::HoldLost {
        object: step.object.to_string(),
        session: session.to_owned(),
        reason,
    };
    let mut stale = None;
    for _ in 1..=guard::ATTEMPTS {
        match send(cluster, kind, namespace, name, patch).await? {
            Sent::Done => return Ok(()),
            Sent::Gone => return Err(lost("it was deleted".to_owned())),
            Sent::Stale(err) => stale = Some(err),
        }
        // Refused: is it still ours (a write race), or not any more?
        let Some(object) = get_opt(cluster, kind, namespace, name).await? else {
            return Err(lost("it was deleted".to_owned()));
        };
        let found = guard::object_ref(&object)?;
        if !step.object.uid.is_empty() && found.uid != step.object.uid {
            return Err(lost(Skipped::Recreated { uid: found.uid }.to_string()));
        }
        match guard::ownership(&object, session, Timestamp::now())? {
            Ownership::Mine => {}
            Ownership::Free => {
                return Err(lost(
                    "its kt.dev/owner annotation was removed (restored by someone else, or \
                     by `clean`)"
                        .to_owned(),
                ));
            }
            Ownership::Held(holder) | Ownership::Expired { holder, .. } => {
                return Err(lost(Skipped::HeldByOther(holder).to_string()));
            }
        }
    }
    Err(kept_changing(kind, name, namespace, stale))
}

/// The objects of `kind` in the session's namespace carrying `kt.dev/owner`, each with
/// its [`Ownership`] now: [`Ownership::Held`] (live) or [`Ownership::Expired`] (with
/// its record, for `clean` and `recover` to undo as that session).
///
/// # Errors
///
/// [`Error::Restore`] naming the object when an expired hold's record cannot be read
/// (restore that object by hand: the message says how); API errors.
pub(crate) async fn held(cluster: &Cluster, kind: Kind) -> Result<Vec<(Value, Ownership)>> {
    let now = Timestamp::now();
    let list = api(cluster, kind, &cluster.namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.error(e, "list", kind.plural(), "to find the ones kt holds"))?;
    let mut found = Vec::new();
    for object in list.items {
        let held = object
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(kt_proto::annotations::OWNER));
        if !held {
            continue;
        }
        let object = to_value(object, kind);
        match guard::hold_status(&object, now)? {
            Ownership::Free | Ownership::Mine => {}
            ownership => found.push((object, ownership)),
        }
    }
    Ok(found)
}

/// Whether `recorded` makes exactly `writes` (same paths, same values, same order).
fn same_writes(recorded: &Step, writes: &[(String, Option<Value>)]) -> bool {
    recorded.changes.len() == writes.len()
        && recorded
            .changes
            .iter()
            .zip(writes)
            .all(|(c, (path, value))| c.path == *path && c.written == *value)
}

fn kind_of(step: &Step) -> Result<Kind> {
    Kind::of(&step.object).ok_or_else(|| Error::InvalidArgument {
        what: "object to restore".to_owned(),
        value: format!("{} {}", step.object.api_version, step.object),
        expected: "a v1 Service, or an apps/v1 Deployment or StatefulSet".to_owned(),
    })
}

fn api(cluster: &Cluster, kind: Kind, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(kind.group(), kind.version(), kind.kind());
    let resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
    Api::namespaced_with(cluster.client.clone(), namespace, &resource)
}

fn to_value(mut object: DynamicObject, kind: Kind) -> Value {
    // List items come without apiVersion and kind; every object read here has them.
    object.types = Some(kube::core::TypeMeta {
        api_version: kind.api_version().to_owned(),
        kind: kind.kind().to_owned(),
    });
    // Serializing a DynamicObject (string keys, JSON values) cannot fail.
    serde_json::to_value(object).unwrap_or_else(|e| unreachable!("object JSON: {e}"))
}

async fn get_opt(
    cluster: &Cluster,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>> {
    match api(cluster, kind, namespace).get_opt(name).await {
        Ok(object) => Ok(object.map(|o| to_value(o, kind))),
        Err(e) => Err(map_error(
            e,
            &cluster.server,
            namespace,
            "get",
            kind.plural(),
            &format!("`{name}`"),
        )),
    }
}

/// How a guarded patch went.
enum Sent {
    /// Applied.
    Done,
    /// Refused because the object changed since it was read: read again.
    Stale(kube::Error),
    /// The object is gone.
    Gone,
}

async fn send(
    cluster: &Cluster,
    kind: Kind,
    namespace: &str,
    name: &str,
    patch: &json_patch::Patch,
) -> Result<Sent> {
    let patch = Patch::Json::<()>(patch.clone());
    match api(cluster, kind, namespace)
        .patch(name, &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(Sent::Done),
        Err(e) if is_not_found(&e) => Ok(Sent::Gone),
        Err(kube::Error::Api(status))
            if guard::is_stale(
                status.code,
                status
                    .details
                    .as_ref()
                    .is_some_and(|d| !d.causes.is_empty()),
            ) =>
        {
            Ok(Sent::Stale(kube::Error::Api(status)))
        }
        Err(e) => Err(map_error(
            e,
            &cluster.server,
            namespace,
            "patch",
            kind.plural(),
            &format!("`{name}`"),
        )),
    }
}

fn not_found(kind: Kind, name: &str, namespace: &str) -> Error {
    Error::TargetNotFound {
        kind: kind.kind(),
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        detail: String::new(),
    }
}

fn kept_changing(kind: Kind, name: &str, namespace: &str, last: Option<kube::Error>) -> Error {
    if let Some(last) = last {
        tracing::debug!(error = %last, "the last refusal of a guarded patch");
    }
    Error::ObjectBusy {
        object: format!("{kind} {namespace}/{name}"),
        attempts: guard::ATTEMPTS,
    }
}

#[cfg(test)]
mod tests;

/// The executor for kt-core's lab tests (`tests/restore.rs`), against a real API
/// server. Not part of kt's API.
#[doc(hidden)]
pub mod testing {
    pub use k8s_openapi::jiff::{SignedDuration, Timestamp};
    pub use kt_proto::guard::{Conflict, Hold, Holder, Ownership, Skipped, Undo};
    pub use kt_proto::restore::{Kind, REPLICAS_PATH, SELECTOR_PATH, Step};
    use serde_json::Value;

    pub use super::{Between, TakeOver, Taken};
    use crate::cluster::Cluster;
    use crate::{ConnectOptions, Result};

    /// A cluster client in the options' namespace.
    pub struct Executor(Cluster);

    impl Executor {
        /// Loads the configuration as a session does.
        pub async fn connect(opts: &ConnectOptions) -> Result<Executor> {
            Cluster::connect(opts).await.map(Executor)
        }

        /// `get`.
        pub async fn get(&self, kind: Kind, name: &str) -> Result<Value> {
            super::get(&self.0, kind, name).await
        }

        /// `take`, with a [`Between`] hook.
        pub async fn take(
            &self,
            kind: Kind,
            name: &str,
            writes: Vec<(String, Option<Value>)>,
            hold: &Hold,
            between: Between<'_>,
        ) -> Result<Taken> {
            super::take_with(&self.0, kind, name, writes, hold, between).await
        }

        /// `give_back`, with a [`Between`] hook.
        pub async fn give_back(
            &self,
            step: &Step,
            session: &str,
            between: Between<'_>,
        ) -> Result<Undo> {
            super::give_back_with(&self.0, step, session, between).await
        }

        /// `renew`.
        pub async fn renew(&self, steps: &[Step], session: &str, expires: Timestamp) -> Result<()> {
            super::renew(&self.0, steps, session, expires).await
        }

        /// `held`.
        pub async fn held(&self, kind: Kind) -> Result<Vec<(Value, Ownership)>> {
            super::held(&self.0, kind).await
        }
    }
}
