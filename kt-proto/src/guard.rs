//! Guarded, idempotent changes to objects kt does not own: the JSON Patches that make,
//! undo and renew what a swap changes (a Service's selector, a workload's replica count,
//! annotations), and the ownership decision on a target.
//!
//! Both sides of kt use this one module, so they undo alike: the client (kt-core, on
//! close, on a take-over and in `clean`/`recover`) and the swap shadow's watchdog
//! (kt-shadow, when the session's Lease expires or on SIGTERM). It makes no API calls:
//! each function reads an object's JSON as the API server returns it and gives back a
//! [`json_patch::Patch`] for the caller to send (`PATCH` with
//! `Content-Type: application/json-patch+json`), or a decision.
//!
//! # The three operations
//!
//! - [`step`] snapshots the fields a swap is about to change, giving the
//!   [`Step`] of the session's [`RestorePlan`](crate::restore::RestorePlan).
//! - [`forward`] makes the change: a patch that `test`s the object's UID, its
//!   `resourceVersion` and each field's snapshot value, then writes each field and the
//!   hold annotations ([`crate::annotations`]: owner session, user, since, lease
//!   expiry, and the [`Record`] of the changes). Any change to the object since it was
//!   read fails the patch (HTTP 422, see [`is_stale`]); read it again and recompute.
//! - [`undo`] puts it back, guarded and idempotent, from the object's current JSON:
//!   - a field still holding what kt wrote is `test`ed and set back to its original;
//!   - a field already holding its original is left alone (undo twice = undo once);
//!   - a field holding anything else was changed by someone else meanwhile: it is
//!     **not** overwritten but reported as a [`Conflict`] naming the field, its current
//!     value, the value kt expected and the original.
//!
//!   The hold annotations are removed when they still name the undoing session (the
//!   patch `test`s it), **even if a field conflicted**: whoever changed the field now
//!   owns its value, and a hold kept on a change kt will never undo would refuse every
//!   later swap of the object. The conflict, with the original value, is the report.
//!   When the annotations name another session (it took the object over after this
//!   one's lease expired, having undone this one's record first), undo writes nothing
//!   and says so ([`Skipped::HeldByOther`]); when the UID differs (the object was
//!   deleted and re-created), likewise ([`Skipped::Recreated`]).
//!
//! [`ownership`] decides whether a session may change a target: free, already its own,
//! held by a live other session (refused, with a message naming the holder and since
//! when: [`Holder::refusal`]), or held by an expired one, whose recorded [`Step`] is
//! returned so the caller can [`undo`] it before taking over. [`hold_status`] is the
//! same decision for a caller that holds nothing (`clean`).
//!
//! A caller sending these patches retries, a bounded number of times ([`ATTEMPTS`]),
//! when the API server says the object changed since it was read ([`is_stale`]): read
//! it again and recompute.
//!
//! # Example
//!
//! ```
//! use kt_proto::guard::{Forward, Hold, Undo, forward, step, undo};
//! use kt_proto::restore::SELECTOR_PATH;
//! use serde_json::json;
//!
//! let svc = json!({"apiVersion": "v1", "kind": "Service",
//!     "metadata": {"name": "web", "namespace": "dev", "uid": "u1", "resourceVersion": "7"},
//!     "spec": {"selector": {"app": "web"}}});
//! let hold = Hold::new("s-1", "alice", "2026-12-07T17:00:00Z".parse()?,
//!                      "2026-12-07T17:00:30Z".parse()?);
//! let step = step(&svc, vec![(SELECTOR_PATH.into(), Some(json!({"kt.dev/swap": "s-1"})))])?;
//! let Forward::Apply(patch) = forward(&svc, &step, &hold)? else { panic!("refused") };
//! let mut swapped = svc.clone();
//! json_patch::patch(&mut swapped, &patch)?;   // what the API server does with it
//! assert_eq!(swapped["metadata"]["annotations"]["kt.dev/owner"], "s-1");
//!
//! let Undo { patch: Some(patch), conflicts, .. } = undo(&swapped, &step, "s-1")? else {
//!     panic!("nothing to undo")
//! };
//! assert!(conflicts.is_empty());
//! json_patch::patch(&mut swapped, &patch)?;
//! assert_eq!(swapped, svc);  // the API server would also move the resourceVersion
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

pub use jiff::Timestamp;
use json_patch::jsonptr::PointerBuf;
use json_patch::{
    AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation, TestOperation,
};
use serde_json::{Map, Value};

use crate::Error;
use crate::annotations;
use crate::restore::{
    FieldChange, ObjectRef, REPLICAS_PATH, Record, SELECTOR_PATH, Step, escape_pointer,
};

type Result<T, E = Error> = std::result::Result<T, E>;

/// How many times a caller reads an object, computes a guarded patch and sends it,
/// while the API server answers that the object changed in between ([`is_stale`]),
/// before giving up. Each retry reads the object again: a busy controller writing
/// status is the usual reason, and it settles within a few writes.
pub const ATTEMPTS: u32 = 5;

/// Whether the API server's refusal of a guarded patch means "the object is not as it
/// was when the patch was computed": read it again, recompute, send again.
///
/// A JSON Patch whose `test` fails (or whose path no longer exists) is refused with
/// HTTP 422, reason `Invalid`, and no field causes (`details.causes` empty); an update
/// racing another write inside the API server is HTTP 409. A 422 **with** causes is a
/// validation failure of the patched object, which no retry fixes.
///
/// ```
/// use kt_proto::guard::is_stale;
///
/// assert!(is_stale(422, false));   // a failed `test`
/// assert!(is_stale(409, false));   // a write conflict
/// assert!(!is_stale(422, true));   // spec.replicas: Invalid value: -1
/// assert!(!is_stale(403, false));
/// ```
pub fn is_stale(code: u16, has_causes: bool) -> bool {
    code == 409 || (code == 422 && !has_causes)
}

const ANNOTATIONS: &str = "/metadata/annotations";
const LABELS: &str = "/metadata/labels";

/// The session taking hold of an object: who, since when, until when.
///
/// ```
/// use kt_proto::guard::{Hold, Timestamp};
///
/// let now: Timestamp = "2026-12-07T17:00:00Z".parse()?;
/// let hold = Hold::new("s-1", "alice", now, now + std::time::Duration::from_secs(30));
/// assert_eq!(hold.expires.to_string(), "2026-12-07T17:00:30Z");
/// # Ok::<(), jiff::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The session id ([`annotations::OWNER`]).
    pub session: String,
    /// The user ([`annotations::OWNER_USER`]).
    pub user: String,
    /// When it took the object ([`annotations::OWNER_SINCE`]); also "now" for the
    /// ownership check of [`forward`].
    pub since: Timestamp,
    /// When the hold expires unless renewed ([`annotations::LEASE_EXPIRY`]).
    pub expires: Timestamp,
}

impl Hold {
    /// A hold by `session` of `user` from `since` until `expires`.
    pub fn new(
        session: impl Into<String>,
        user: impl Into<String>,
        since: Timestamp,
        expires: Timestamp,
    ) -> Hold {
        Hold {
            session: session.into(),
            user: user.into(),
            since,
            expires,
        }
    }
}

/// What [`Holder::refusal`] says after naming the holder: why, and what to do.
pub const REFUSAL_ADVICE: &str = "only one kt session may swap it at a time: wait until that \
     session closes, or until its lease expires (kt then restores what it changed and takes \
     over)";

/// A session's hold on an object, as its annotations say.
///
/// ```
/// use kt_proto::guard::{Ownership, ownership};
/// use serde_json::json;
///
/// let svc = json!({"apiVersion": "v1", "kind": "Service",
///     "metadata": {"name": "web", "namespace": "dev", "uid": "u1", "annotations": {
///         "kt.dev/owner": "s-1", "kt.dev/owner-user": "alice",
///         "kt.dev/owner-since": "2026-12-07T17:00:00Z",
///         "kt.dev/lease-expiry": "2026-12-07T17:00:30Z"}},
///     "spec": {"selector": {"kt.dev/swap": "s-1"}}});
/// let Ownership::Held(holder) = ownership(&svc, "s-2", "2026-12-07T17:00:10Z".parse()?)? else {
///     panic!("held")
/// };
/// assert!(holder.refusal().starts_with(
///     "Service dev/web is held by kt session `s-1` of alice since 2026-12-07T17:00:00Z"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The object held.
    pub object: ObjectRef,
    /// The holding session ([`annotations::OWNER`]).
    pub session: String,
    /// Its user, if recorded.
    pub user: Option<String>,
    /// Since when, if recorded and readable.
    pub since: Option<Timestamp>,
    /// Until when, if recorded and readable (`None`: treated as expired).
    pub expires: Option<Timestamp>,
}

impl Holder {
    /// The message refusing a swap of a target held by this live session.
    ///
    /// ```text
    /// Service dev/web is held by kt session `s-1` of alice since 2026-12-07T17:00:00Z
    /// (lease until 2026-12-07T17:00:30Z); only one kt session may swap it at a time: ...
    /// ```
    pub fn refusal(&self) -> String {
        format!("{self}; {REFUSAL_ADVICE}")
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is held by kt session `{}`",
            self.object, self.session
        )?;
        if let Some(user) = &self.user {
            write!(f, " of {user}")?;
        }
        match &self.since {
            Some(since) => write!(f, " since {since}")?,
            None => write!(f, " (since an unrecorded time)")?,
        }
        match &self.expires {
            Some(expires) => write!(f, " (lease until {expires})"),
            None => write!(f, " (no readable lease expiry)"),
        }
    }
}

/// Whether a session may change an object ([`ownership`], [`hold_status`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Ownership {
    /// No kt session holds it.
    Free,
    /// The asking session already holds it.
    Mine,
    /// A live other session holds it: refuse, with [`Holder::refusal`].
    Held(Holder),
    /// Another session held it and its lease expired: [`undo`] `record` (as
    /// `holder.session`), then take over. `record` is `None` when it recorded no changes
    /// (then undo an empty [`Step`] of the object: it removes the hold annotations).
    Expired {
        /// The expired holder.
        holder: Holder,
        /// Its changes, read from [`annotations::RESTORE`].
        record: Option<Step>,
    },
}

/// What [`forward`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Forward {
    /// Send this patch.
    Apply(Patch),
    /// The object already carries exactly this change by this session: nothing to send.
    AlreadyApplied,
    /// Another session holds the object (live or expired: an expired hold is undone
    /// first, see [`Ownership::Expired`]).
    Refused(Holder),
}

/// A field someone else changed while kt held it; undo left it as it is.
///
/// ```text
/// Service dev/web: /spec/selector was changed by someone else while kt held it: it is
/// now {"app":"web-v2"}, kt wrote {"kt.dev/swap":"s-1"}; kt left it as it is (the
/// original was {"app":"web"})
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The object.
    pub object: ObjectRef,
    /// The field (JSON pointer).
    pub path: String,
    /// Its value now (`None`: absent).
    pub current: Option<Value>,
    /// The value kt wrote and expected to find.
    pub expected: Option<Value>,
    /// The value kt would have restored.
    pub original: Option<Value>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} was changed by someone else while kt held it: it is now {}, kt wrote {}; \
             kt left it as it is (the original was {})",
            self.object,
            self.path,
            show(self.current.as_ref()),
            show(self.expected.as_ref()),
            show(self.original.as_ref()),
        )
    }
}

fn show(value: Option<&Value>) -> String {
    value.map_or_else(|| "absent".to_owned(), Value::to_string)
}

/// Why [`undo`] (or a caller that found no object) wrote nothing without looking at the
/// fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Skipped {
    /// There is no object of that name any more (never returned by [`undo`], which
    /// needs an object; set by callers whose read found none).
    Gone,
    /// The object under that name has another UID: the one kt changed is gone.
    Recreated {
        /// The UID found.
        uid: String,
    },
    /// Another session holds the object now (it undid this one's changes to take over).
    HeldByOther(Holder),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::Gone => f.write_str("it no longer exists"),
            Skipped::Recreated { uid } => write!(
                f,
                "it was deleted and created again (uid {uid}): not the object kt changed"
            ),
            Skipped::HeldByOther(holder) => write!(f, "{holder} now"),
        }
    }
}

/// What [`undo`] decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Undo {
    /// The patch to send; `None` when there is nothing to write.
    pub patch: Option<Patch>,
    /// The fields the patch puts back.
    pub restored: Vec<String>,
    /// The fields someone else changed; not overwritten.
    pub conflicts: Vec<Conflict>,
    /// Whether the patch removes the hold annotations.
    pub released: bool,
    /// Set when undo did not look at the fields at all.
    pub skipped: Option<Skipped>,
}

/// The reference of an object's JSON (apiVersion, kind, namespace, name, UID); a clear
/// error when one is missing.
pub fn object_ref(object: &Value) -> Result<ObjectRef> {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let fields = (
        text("/apiVersion"),
        text("/kind"),
        text("/metadata/namespace"),
        text("/metadata/name"),
        text("/metadata/uid"),
    );
    match fields {
        (Some(api_version), Some(kind), Some(namespace), Some(name), Some(uid)) => {
            Ok(ObjectRef::new(api_version, kind, namespace, name, uid))
        }
        _ => Err(Error::NotAnObject {
            value: brief(object),
        }),
    }
}

/// Snapshots the fields about to change: a [`Step`] whose changes record each field's
/// current value as `original` and the value to write (`None`: remove it).
///
/// Refuses a path kt does not change on that kind: `/spec/selector` only on a Service,
/// `/spec/replicas` only on a Deployment or StatefulSet, otherwise only
/// `/metadata/annotations/<key>` and `/metadata/labels/<key>` (not kt's own hold
/// annotations); a path whose parent the object lacks; a path given twice.
///
/// ```
/// use kt_proto::guard::step;
/// use kt_proto::restore::REPLICAS_PATH;
/// use serde_json::json;
///
/// let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
///     "metadata": {"name": "web", "namespace": "dev", "uid": "u2"},
///     "spec": {"replicas": 3}});
/// let step = step(&deployment, vec![(REPLICAS_PATH.to_owned(), Some(json!(0)))])?;
/// assert_eq!(step.changes[0].original, Some(json!(3)));
/// # Ok::<(), kt_proto::Error>(())
/// ```
pub fn step(object: &Value, writes: Vec<(String, Option<Value>)>) -> Result<Step> {
    let object_ref = object_ref(object)?;
    let changes = writes
        .into_iter()
        .map(|(path, written)| FieldChange {
            original: object.pointer(&path).cloned(),
            path,
            written,
        })
        .collect();
    let step = Step {
        object: object_ref,
        changes,
    };
    check_paths(object, &step)?;
    Ok(step)
}

/// Decides whether `session` may change `object` at `now`, from its hold annotations.
///
/// A hold without a readable expiry counts as expired: kt always writes one, and a hold
/// no one can renew must not block the object forever. A malformed or newer
/// [`annotations::RESTORE`] record of an expired hold is an error (restore it by hand).
///
/// ```text
/// match ownership(&svc, "s-2", Timestamp::now())? {
///     Ownership::Free | Ownership::Mine => { /* forward */ }
///     Ownership::Held(holder) => return Err(holder.refusal()),
///     Ownership::Expired { holder, record } => { /* undo(record, holder.session), then forward */ }
/// }
/// ```
pub fn ownership(object: &Value, session: &str, now: Timestamp) -> Result<Ownership> {
    let object_ref = object_ref(object)?;
    match holder(object, &object_ref) {
        Some(holder) if holder.session == session => Ok(Ownership::Mine),
        _ => hold_status(object, now),
    }
}

/// Whether any session holds `object` at `now`: [`Ownership::Free`],
/// [`Ownership::Held`] (its lease is live) or [`Ownership::Expired`] (with its record),
/// never [`Ownership::Mine`]. For callers that hold nothing themselves: `clean` and
/// `recover` list what is held and restore what expired.
///
/// ```
/// use kt_proto::guard::{Ownership, hold_status};
/// use serde_json::json;
///
/// let svc = json!({"apiVersion": "v1", "kind": "Service",
///     "metadata": {"name": "web", "namespace": "dev", "uid": "u1"}, "spec": {}});
/// assert_eq!(hold_status(&svc, "2026-12-07T17:00:00Z".parse()?)?, Ownership::Free);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn hold_status(object: &Value, now: Timestamp) -> Result<Ownership> {
    let object_ref = object_ref(object)?;
    let Some(holder) = holder(object, &object_ref) else {
        return Ok(Ownership::Free);
    };
    match holder.expires {
        Some(expires) if now < expires => Ok(Ownership::Held(holder)),
        _ => Ok(Ownership::Expired {
            record: recorded_step(object)?,
            holder,
        }),
    }
}

/// The [`Step`] recorded on `object` in [`annotations::RESTORE`], if any.
pub fn recorded_step(object: &Value) -> Result<Option<Step>> {
    let object_ref = object_ref(object)?;
    let Some(text) = annotation(object, annotations::RESTORE) else {
        return Ok(None);
    };
    let record = Record::from_json(text).map_err(|e| Error::InvalidRecord {
        object: object_ref.to_string(),
        value: text.to_owned(),
        source: Box::new(e),
    })?;
    let step = Step {
        object: object_ref,
        changes: record.changes,
    };
    check_paths(object, &step)?;
    Ok(Some(step))
}

/// The patch making `step`'s changes on `object` (as just read) for `hold`; see the
/// module docs for its guards.
///
/// `hold.since` is also the "now" of its ownership check.
///
/// ```text
/// let Forward::Apply(patch) = forward(&svc, &step, &hold)? else { /* refused */ };
/// api.patch(name, &PatchParams::default(), &kube::api::Patch::Json::<()>(patch)).await?;
/// ```
pub fn forward(object: &Value, step: &Step, hold: &Hold) -> Result<Forward> {
    let found = object_ref(object)?;
    same_object(&found, &step.object, true)?;
    check_paths(object, step)?;
    match ownership(object, &hold.session, hold.since)? {
        Ownership::Free => {}
        Ownership::Mine => {
            let applied = recorded_step(object)?.is_some_and(|r| r.changes == step.changes)
                && step
                    .changes
                    .iter()
                    .all(|c| object.pointer(&c.path) == c.written.as_ref());
            if applied {
                return Ok(Forward::AlreadyApplied);
            }
            return Err(Error::AlreadyChanged {
                object: step.object.to_string(),
                session: hold.session.clone(),
            });
        }
        Ownership::Held(holder) | Ownership::Expired { holder, .. } => {
            return Ok(Forward::Refused(holder));
        }
    }

    let mut ops = vec![test("/metadata/uid", Value::from(found.uid.clone()))];
    if let Some(version) = object.pointer("/metadata/resourceVersion") {
        ops.push(test("/metadata/resourceVersion", version.clone()));
    }
    let map_missing = |map: &str| object.pointer(map).is_none();
    if step.changes.iter().any(|c| c.path.starts_with(LABELS)) && map_missing(LABELS) {
        ops.push(add(LABELS, Value::Object(Map::new())));
    }
    if map_missing(ANNOTATIONS) {
        ops.push(add(ANNOTATIONS, Value::Object(Map::new())));
    }
    for change in &step.changes {
        if let Some(original) = &change.original {
            ops.push(test(&change.path, original.clone()));
        }
        ops.extend(write(&change.path, &change.original, &change.written));
    }
    let record = Record::new(step.changes.clone()).to_json();
    for (key, value) in [
        (annotations::OWNER, hold.session.clone()),
        (annotations::OWNER_USER, hold.user.clone()),
        (annotations::OWNER_SINCE, hold.since.to_string()),
        (annotations::LEASE_EXPIRY, hold.expires.to_string()),
        (annotations::RESTORE, record),
    ] {
        ops.push(add(&annotation_path(key), Value::from(value)));
    }
    Ok(Forward::Apply(Patch(ops)))
}

/// The heartbeat's patch: moves the lease expiry of `session`'s hold to `expires`,
/// failing (HTTP 422) if the object is no longer held by `session`.
///
/// ```
/// use kt_proto::guard::renew;
///
/// let patch = renew("s-1", "2026-12-07T17:01:00Z".parse()?);
/// assert_eq!(patch.0.len(), 2); // test the owner, replace the expiry
/// # Ok::<(), jiff::Error>(())
/// ```
pub fn renew(session: &str, expires: Timestamp) -> Patch {
    Patch(vec![
        test(&annotation_path(annotations::OWNER), Value::from(session)),
        PatchOperation::Replace(ReplaceOperation {
            path: pointer(&annotation_path(annotations::LEASE_EXPIRY)),
            value: Value::from(expires.to_string()),
        }),
    ])
}

/// Undoes `step` (made by `session`) on `object` as it is now; see the module docs.
///
/// ```text
/// let undone = undo(&svc_now, &step, "s-1")?;
/// for conflict in &undone.conflicts { warn!("{conflict}") }
/// if let Some(patch) = undone.patch { /* send it */ }
/// ```
pub fn undo(object: &Value, step: &Step, session: &str) -> Result<Undo> {
    let found = object_ref(object)?;
    same_object(&found, &step.object, false)?;
    if !step.object.uid.is_empty() && found.uid != step.object.uid {
        return Ok(Undo {
            skipped: Some(Skipped::Recreated { uid: found.uid }),
            ..Undo::default()
        });
    }
    check_paths(object, step)?;
    let holder = holder(object, &found);
    if let Some(holder) = holder.as_ref().filter(|h| h.session != session) {
        return Ok(Undo {
            skipped: Some(Skipped::HeldByOther(holder.clone())),
            ..Undo::default()
        });
    }

    let mut undone = Undo::default();
    let mut ops = Vec::new();
    let mut needs_version = false;
    for change in step.changes.iter().rev() {
        let current = object.pointer(&change.path).cloned();
        if current == change.original {
            continue;
        }
        if current != change.written {
            undone.conflicts.push(Conflict {
                object: found.clone(),
                path: change.path.clone(),
                current,
                expected: change.written.clone(),
                original: change.original.clone(),
            });
            continue;
        }
        match &change.written {
            Some(written) => ops.push(test(&change.path, written.clone())),
            // JSON Patch cannot test that a field is absent: guard with the version.
            None => needs_version = true,
        }
        ops.extend(write(&change.path, &change.written, &change.original));
        undone.restored.push(change.path.clone());
    }
    if holder.is_some() {
        ops.push(test(
            &annotation_path(annotations::OWNER),
            Value::from(session),
        ));
        for key in annotations::HOLD {
            if annotation(object, key).is_some() {
                ops.push(remove(&annotation_path(key)));
            }
        }
        undone.released = true;
    }
    if ops.is_empty() {
        return Ok(undone);
    }

    // A map kt's undo leaves empty is removed, as the API server never shows an empty
    // one; guarded by testing the whole map, so a key added meanwhile is never lost.
    let mut result = object.clone();
    json_patch::patch(&mut result, &ops).map_err(|e| Error::StepDoesNotApply {
        object: step.object.to_string(),
        reason: e.to_string(),
    })?;
    for map in [ANNOTATIONS, LABELS] {
        let emptied = result
            .pointer(map)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        let was_full = object
            .pointer(map)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty());
        if emptied && was_full {
            ops.retain(|op| !in_map(op, map));
            ops.push(test(map, object.pointer(map).cloned().unwrap_or_default()));
            ops.push(remove(map));
        }
    }

    let mut guards = vec![test("/metadata/uid", Value::from(found.uid.clone()))];
    if needs_version && let Some(version) = object.pointer("/metadata/resourceVersion") {
        guards.push(test("/metadata/resourceVersion", version.clone()));
    }
    guards.extend(ops);
    undone.patch = Some(Patch(guards));
    Ok(undone)
}

/// The hold recorded on `object`, if its [`annotations::OWNER`] is set.
fn holder(object: &Value, object_ref: &ObjectRef) -> Option<Holder> {
    let session = annotation(object, annotations::OWNER)?;
    let time = |key| annotation(object, key).and_then(|t| Timestamp::from_str(t).ok());
    Some(Holder {
        object: object_ref.clone(),
        session: session.to_owned(),
        user: annotation(object, annotations::OWNER_USER).map(str::to_owned),
        since: time(annotations::OWNER_SINCE),
        expires: time(annotations::LEASE_EXPIRY),
    })
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer(ANNOTATIONS)?.as_object()?.get(key)?.as_str()
}

fn annotation_path(key: &str) -> String {
    format!("{ANNOTATIONS}/{}", escape_pointer(key))
}

/// `found` is the object `step` names: same kind, namespace and name (and UID when
/// `uid` is set).
fn same_object(found: &ObjectRef, expected: &ObjectRef, uid: bool) -> Result<()> {
    let same = found.api_version == expected.api_version
        && found.kind == expected.kind
        && found.namespace == expected.namespace
        && found.name == expected.name
        && (!uid || expected.uid.is_empty() || found.uid == expected.uid);
    if same {
        return Ok(());
    }
    Err(Error::WrongObject {
        found: format!("{} {found} (uid {})", found.api_version, found.uid),
        expected: format!("{} {expected} (uid {})", expected.api_version, expected.uid),
    })
}

/// The paths of `step` are ones kt changes on that kind, each once, with a parent the
/// object has.
fn check_paths(object: &Value, step: &Step) -> Result<()> {
    let kind = step.object.kind.as_str();
    let mut seen = BTreeSet::new();
    for change in &step.changes {
        let path = change.path.as_str();
        let bad = |why: String| {
            Err(Error::InvalidField {
                object: step.object.to_string(),
                path: path.to_owned(),
                expected: why,
            })
        };
        if PointerBuf::parse(path).is_err() {
            return bad("a JSON pointer (RFC 6901) such as /spec/selector".to_owned());
        }
        let key_in = |map: &str| {
            path.strip_prefix(map)
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|key| !key.is_empty() && !key.contains('/'))
        };
        let hold_key = key_in(ANNOTATIONS)
            .is_some_and(|key| annotations::HOLD.iter().any(|h| escape_pointer(h) == key));
        let allowed = match path {
            SELECTOR_PATH => kind == "Service",
            REPLICAS_PATH => matches!(kind, "Deployment" | "StatefulSet"),
            _ => (key_in(ANNOTATIONS).is_some() && !hold_key) || key_in(LABELS).is_some(),
        };
        if !allowed {
            return bad(format!(
                "/spec/selector of a Service, /spec/replicas of a Deployment or \
                 StatefulSet, or /metadata/annotations/<key> or /metadata/labels/<key> \
                 (not kt's own {} annotations)",
                annotations::HOLD.join(", ")
            ));
        }
        if !seen.insert(path) {
            return bad("each field once per step".to_owned());
        }
        let parent = &path[..path.rfind('/').unwrap_or(0)];
        let parent_ok = parent == ANNOTATIONS
            || parent == LABELS
            || object.pointer(parent).is_some_and(Value::is_object);
        if !parent_ok {
            return bad(format!(
                "a field whose parent `{parent}` exists in the object (it has none: is this \
                 the full object as the API server returns it?)"
            ));
        }
    }
    Ok(())
}

/// The operation turning `from` into `to` at `path` (none when equal).
fn write(path: &str, from: &Option<Value>, to: &Option<Value>) -> Option<PatchOperation> {
    match (from, to) {
        (Some(_), Some(to)) => Some(PatchOperation::Replace(ReplaceOperation {
            path: pointer(path),
            value: to.clone(),
        })),
        (None, Some(to)) => Some(add(path, to.clone())),
        (Some(_), None) => Some(remove(path)),
        (None, None) => None,
    }
}

fn in_map(op: &PatchOperation, map: &str) -> bool {
    op.path()
        .as_str()
        .strip_prefix(map)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn pointer(path: &str) -> PointerBuf {
    // Every path here is checked by `check_paths` or built from constants and escaped keys.
    PointerBuf::parse(path).unwrap_or_else(|e| unreachable!("JSON pointer `{path}`: {e}"))
}

fn test(path: &str, value: Value) -> PatchOperation {
    PatchOperation::Test(TestOperation {
        path: pointer(path),
        value,
    })
}

fn add(path: &str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(path),
        value,
    })
}

fn remove(path: &str) -> PatchOperation {
    PatchOperation::Remove(RemoveOperation {
        path: pointer(path),
    })
}

/// An object's JSON shortened for a message.
fn brief(object: &Value) -> String {
    let text = object.to_string();
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests;
