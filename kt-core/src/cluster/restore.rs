//! The restore ledger's pure core: the JSON Patches that make, undo and guard the changes
//! a swap makes to objects kt does not own (a Service's selector, a workload's replica
//! count, annotations), and the ownership decision on a target.
//!
//! **Not yet wired**: swap and expose (issue 12) will call this; nothing in kt does yet.
//! It makes no API calls: each function reads an object's JSON as the API server returns
//! it and gives back a [`json_patch::Patch`] for the caller to send
//! (`kube::api::Patch::Json`), or a decision.
//!
//! # The three operations
//!
//! - [`step`] snapshots the fields a swap is about to change, giving the
//!   [`Step`] of the session's [`RestorePlan`](kt_proto::restore::RestorePlan).
//! - [`forward`] makes the change: a patch that `test`s the object's UID, its
//!   `resourceVersion` and each field's snapshot value, then writes each field and the
//!   hold annotations ([`kt_proto::annotations`]: owner session, user, since, lease
//!   expiry, and the [`Record`] of the changes). Any change to the object since it was
//!   read fails the patch (HTTP 422); read it again and recompute.
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
//! when: [`Holder::refusal`]), or held by an expired one, whose [`Record`] is returned so
//! the caller can [`undo`] it before taking over.
//!
//! # Example
//!
//! (Crate-internal, so not a doctest; the unit test `module_example` runs this code.)
//!
//! ```ignore
//! let svc = json!({"apiVersion": "v1", "kind": "Service",
//!     "metadata": {"name": "web", "namespace": "dev", "uid": "u1", "resourceVersion": "7"},
//!     "spec": {"selector": {"app": "web"}}});
//! let hold = Hold::new("s-1", "alice", now, now + 30s);
//! let step = step(&svc, vec![(SELECTOR_PATH.into(), Some(json!({"kt.dev/swap": "s-1"})))])?;
//! let Forward::Apply(patch) = forward(&svc, &step, &hold)? else { panic!() };
//! let mut swapped = svc.clone();
//! json_patch::patch(&mut swapped, &patch)?;
//! let Undo { patch: Some(patch), conflicts, .. } = undo(&swapped, &step, "s-1")? else { panic!() };
//! assert!(conflicts.is_empty());
//! json_patch::patch(&mut swapped, &patch)?;   // swapped == svc again, but resourceVersion
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use json_patch::jsonptr::PointerBuf;
use json_patch::{
    AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation, TestOperation,
};
use k8s_openapi::jiff::Timestamp;
use kt_proto::annotations;
use kt_proto::restore::{
    FieldChange, ObjectRef, REPLICAS_PATH, Record, SELECTOR_PATH, Step, escape_pointer,
};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

const ANNOTATIONS: &str = "/metadata/annotations";
const LABELS: &str = "/metadata/labels";

/// The session taking hold of an object: who, since when, until when.
///
/// ```ignore
/// let hold = Hold::new("s-1", "alice", now, now + SignedDuration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hold {
    /// The session id ([`annotations::OWNER`]).
    pub(crate) session: String,
    /// The user ([`annotations::OWNER_USER`]).
    pub(crate) user: String,
    /// When it took the object ([`annotations::OWNER_SINCE`]); also "now" for the
    /// ownership check of [`forward`].
    pub(crate) since: Timestamp,
    /// When the hold expires unless renewed ([`annotations::LEASE_EXPIRY`]).
    pub(crate) expires: Timestamp,
}

impl Hold {
    /// A hold by `session` of `user` from `since` until `expires`.
    pub(crate) fn new(
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

/// Another session's hold on an object, as its annotations say.
///
/// ```ignore
/// let Ownership::Held(holder) = ownership(&svc, "s-2", now)? else { panic!() };
/// assert!(holder.refusal().contains("held by kt session `s-1` of alice since"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The object held.
    pub(crate) object: ObjectRef,
    /// The holding session ([`annotations::OWNER`]).
    pub(crate) session: String,
    /// Its user, if recorded.
    pub(crate) user: Option<String>,
    /// Since when, if recorded and readable.
    pub(crate) since: Option<Timestamp>,
    /// Until when, if recorded and readable (`None`: treated as expired).
    pub(crate) expires: Option<Timestamp>,
}

impl Holder {
    /// The message refusing a swap of a target held by this live session.
    ///
    /// ```text
    /// Service dev/web is held by kt session `s-1` of alice since 2026-12-07T17:00:00Z
    /// (lease until 2026-12-07T17:00:30Z); only one kt session may swap it at a time: ...
    /// ```
    pub(crate) fn refusal(&self) -> String {
        format!(
            "{self}; only one kt session may swap it at a time: wait until that session \
             closes, or until its lease expires (kt then restores what it changed and takes \
             over)"
        )
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

/// Whether a session may change an object ([`ownership`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ownership {
    /// No kt session holds it.
    Free,
    /// The asking session already holds it.
    Mine,
    /// A live other session holds it: refuse, with [`Holder::refusal`].
    Held(Holder),
    /// Another session held it and its lease expired: [`undo`] `record` (as
    /// `holder.session`), then take over. `record` is `None` when it recorded no changes.
    Expired {
        /// The expired holder.
        holder: Holder,
        /// Its changes, read from [`annotations::RESTORE`].
        record: Option<Step>,
    },
}

/// What [`forward`] decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Forward {
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
pub(crate) struct Conflict {
    /// The object.
    pub(crate) object: ObjectRef,
    /// The field (JSON pointer).
    pub(crate) path: String,
    /// Its value now (`None`: absent).
    pub(crate) current: Option<Value>,
    /// The value kt wrote and expected to find.
    pub(crate) expected: Option<Value>,
    /// The value kt would have restored.
    pub(crate) original: Option<Value>,
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

/// Why [`undo`] wrote nothing without looking at the fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Skipped {
    /// The object under that name has another UID: the one kt changed is gone.
    Recreated {
        /// The UID found.
        uid: String,
    },
    /// Another session holds the object now (it undid this one's changes to take over).
    HeldByOther(Holder),
}

/// What [`undo`] decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Undo {
    /// The patch to send; `None` when there is nothing to write.
    pub(crate) patch: Option<Patch>,
    /// The fields the patch puts back.
    pub(crate) restored: Vec<String>,
    /// The fields someone else changed; not overwritten.
    pub(crate) conflicts: Vec<Conflict>,
    /// Whether the patch removes the hold annotations.
    pub(crate) released: bool,
    /// Set when undo did not look at the fields at all.
    pub(crate) skipped: Option<Skipped>,
}

/// The reference of an object's JSON (apiVersion, kind, namespace, name, UID); a clear
/// error when one is missing.
pub(crate) fn object_ref(object: &Value) -> Result<ObjectRef> {
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
        _ => Err(Error::InvalidArgument {
            what: "object to restore".to_owned(),
            value: brief(object),
            expected: "a Kubernetes object as the API server returns it, with apiVersion, \
                       kind, metadata.namespace, metadata.name and metadata.uid"
                .to_owned(),
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
/// ```ignore
/// let step = step(&deployment, vec![(REPLICAS_PATH.to_owned(), Some(json!(0)))])?;
/// assert_eq!(step.changes[0].original, Some(json!(3)));
/// ```
pub(crate) fn step(object: &Value, writes: Vec<(String, Option<Value>)>) -> Result<Step> {
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
/// ```ignore
/// match ownership(&svc, "s-2", Timestamp::now())? {
///     Ownership::Free | Ownership::Mine => { /* forward */ }
///     Ownership::Held(holder) => return Err(holder.refusal()),
///     Ownership::Expired { holder, record } => { /* undo(record, holder.session), then forward */ }
/// }
/// ```
pub(crate) fn ownership(object: &Value, session: &str, now: Timestamp) -> Result<Ownership> {
    let object_ref = object_ref(object)?;
    let Some(holder) = holder(object, &object_ref) else {
        return Ok(Ownership::Free);
    };
    if holder.session == session {
        return Ok(Ownership::Mine);
    }
    match holder.expires {
        Some(expires) if now < expires => Ok(Ownership::Held(holder)),
        _ => Ok(Ownership::Expired {
            record: recorded_step(object)?,
            holder,
        }),
    }
}

/// The [`Step`] recorded on `object` in [`annotations::RESTORE`], if any.
pub(crate) fn recorded_step(object: &Value) -> Result<Option<Step>> {
    let object_ref = object_ref(object)?;
    let Some(text) = annotation(object, annotations::RESTORE) else {
        return Ok(None);
    };
    let record = Record::from_json(text).map_err(|e| Error::InvalidArgument {
        what: format!("`{}` annotation on {object_ref}", annotations::RESTORE),
        value: text.to_owned(),
        expected: format!(
            "a restore record written by kt ({e}); restore the fields yourself and remove \
             the kt.dev/owner, kt.dev/owner-user, kt.dev/owner-since, kt.dev/lease-expiry \
             and kt.dev/restore annotations"
        ),
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
/// ```ignore
/// let Forward::Apply(patch) = forward(&svc, &step, &hold)? else { /* refused */ };
/// api.patch(name, &PatchParams::default(), &kube::api::Patch::Json::<()>(patch)).await?;
/// ```
pub(crate) fn forward(object: &Value, step: &Step, hold: &Hold) -> Result<Forward> {
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
            return Err(Error::InvalidArgument {
                what: "change".to_owned(),
                value: format!("{} by session `{}`", step.object, hold.session),
                expected: "one change per object per session: this session already holds \
                           the object with other changes; undo them first"
                    .to_owned(),
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
/// ```ignore
/// let patch = renew("s-1", now + SignedDuration::from_secs(30));
/// ```
pub(crate) fn renew(session: &str, expires: Timestamp) -> Patch {
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
/// ```ignore
/// let undone = undo(&svc_now, &step, "s-1")?;
/// for conflict in &undone.conflicts { warn!("{conflict}") }
/// if let Some(patch) = undone.patch { /* send it */ }
/// ```
pub(crate) fn undo(object: &Value, step: &Step, session: &str) -> Result<Undo> {
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
    json_patch::patch(&mut result, &ops).map_err(|e| Error::InvalidArgument {
        what: "restore step".to_owned(),
        value: format!("{} {:?}", step.object, step.changes),
        expected: format!("changes that apply to the object as it is ({e})"),
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
    Err(Error::InvalidArgument {
        what: "object for this restore step".to_owned(),
        value: format!("{} {found} (uid {})", found.api_version, found.uid),
        expected: format!(
            "the step's object, {} {expected} (uid {}): read that object and pass its JSON",
            expected.api_version, expected.uid
        ),
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
            Err(Error::InvalidArgument {
                what: format!("field to change on {}", step.object),
                value: path.to_owned(),
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
