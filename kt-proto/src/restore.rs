//! The restore ledger: what kt changed on objects it does not own, and how to put it back.
//!
//! A [`RestorePlan`] is written by the client when a swap changes a Service selector or a
//! workload's replica count, and handed to the swap shadow, whose watchdog runs it when
//! the client's heartbeats stop. Each [`Step`] names one object ([`ObjectRef`], with its
//! UID so a re-created object of the same name is never touched) and the
//! [`FieldChange`]s kt made to it: the value seen before (`original`) and the value kt
//! wrote (`written`). Undo is guarded: a field is put back only while it still holds what
//! kt wrote.
//!
//! The same record is kept **on the object itself**, so that a later kt run can restore
//! it without the plan (`clean`, `recover`, taking over an expired lease): see
//! [`annotations`](crate::annotations) for the keys, and [`Record`] for the JSON in
//! [`annotations::RESTORE`](crate::annotations::RESTORE).
//!
//! [`crate::guard`] computes the guarded patches that make and undo these changes; the
//! swap shadow's watchdog is told which objects to restore ([`Kind`], name, UID on its
//! command line, see [`crate::cli`]) and reads each one's record from the object itself.
//!
//! # Example
//!
//! ```
//! use kt_proto::restore::{FieldChange, ObjectRef, RestorePlan, Step};
//! use serde_json::json;
//!
//! let plan = RestorePlan::new(
//!     "s-1a2b",
//!     "alice",
//!     "2026-12-07T18:00:30Z",
//!     vec![Step {
//!         object: ObjectRef::new("v1", "Service", "dev", "web", "3f1c-uid"),
//!         changes: vec![FieldChange::selector(
//!             Some(json!({"app": "web"})),
//!             json!({"kt.dev/swap": "s-1a2b"}),
//!         )],
//!     }],
//! );
//! let text = plan.to_json();
//! assert_eq!(RestorePlan::from_json(&text)?, plan);
//! # Ok::<(), kt_proto::Error>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// The version of [`RestorePlan`] and [`Record`] this kt writes and the newest it reads.
/// Bumped when a field changes meaning; readers refuse newer versions rather than guess.
pub const PLAN_VERSION: u32 = 1;

/// JSON pointer of a Service's selector (`spec.selector`), changed in selector mode.
pub const SELECTOR_PATH: &str = "/spec/selector";

/// JSON pointer of a Deployment's or StatefulSet's replica count (`spec.replicas`),
/// changed in scale mode.
pub const REPLICAS_PATH: &str = "/spec/replicas";

/// The kinds of object a swap changes, and so the only ones kt restores.
///
/// ```
/// use kt_proto::restore::Kind;
///
/// let kind: Kind = "StatefulSet".parse()?;
/// assert_eq!((kind.api_version(), kind.plural()), ("apps/v1", "statefulsets"));
/// assert_eq!(Kind::Service.to_string(), "Service");
/// assert!("Pod".parse::<Kind>().is_err());
/// # Ok::<(), kt_proto::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `v1` Service: its selector (selector mode).
    Service,
    /// `apps/v1` Deployment: its replica count (scale mode).
    Deployment,
    /// `apps/v1` StatefulSet: its replica count (scale mode).
    StatefulSet,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Service, Kind::Deployment, Kind::StatefulSet];

    /// The kind's name, as in an object's `kind`.
    pub const fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
        }
    }

    /// The API group (`""` for the core group).
    pub const fn group(self) -> &'static str {
        match self {
            Kind::Service => "",
            Kind::Deployment | Kind::StatefulSet => "apps",
        }
    }

    /// The version within the group.
    pub const fn version(self) -> &'static str {
        "v1"
    }

    /// The `apiVersion` of its objects (`v1`, `apps/v1`).
    pub const fn api_version(self) -> &'static str {
        match self {
            Kind::Service => "v1",
            Kind::Deployment | Kind::StatefulSet => "apps/v1",
        }
    }

    /// The resource name in URLs and RBAC rules (`services`, ...).
    pub const fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
        }
    }

    /// The kind of `object`, if it is one of these (same `apiVersion` and `kind`).
    pub fn of(object: &ObjectRef) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.kind() == object.kind && k.api_version() == object.api_version)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl std::str::FromStr for Kind {
    type Err = Error;

    /// Parses the kind's name exactly (`Service`, `Deployment`, `StatefulSet`).
    fn from_str(s: &str) -> Result<Kind, Error> {
        Kind::ALL
            .into_iter()
            .find(|k| k.kind() == s)
            .ok_or_else(|| Error::UnknownKind(s.to_owned()))
    }
}

/// Everything one session changed on objects it does not own, in the order it changed
/// them (undo runs in reverse order).
///
/// ```
/// use kt_proto::restore::{RestorePlan, PLAN_VERSION};
///
/// let plan = RestorePlan::new("s-1", "alice", "2026-12-07T18:00:30Z", vec![]);
/// assert_eq!(plan.version, PLAN_VERSION);
/// assert!(plan.to_json().contains(r#""leaseExpiry":"2026-12-07T18:00:30Z""#));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    /// The schema version ([`PLAN_VERSION`] when written by this kt).
    pub version: u32,
    /// The session id (the `kt.dev/session` label of its objects, the holder of its Lease).
    pub session: String,
    /// Who runs the session: the user name kt reports to the cluster's objects.
    pub owner: String,
    /// When the lease on the changed objects expires unless renewed, RFC 3339 in UTC
    /// (`2026-12-07T18:00:30Z`). Heartbeats renew the copy on each object
    /// ([`annotations::LEASE_EXPIRY`](crate::annotations::LEASE_EXPIRY)); this is the
    /// expiry when the plan was written.
    pub lease_expiry: String,
    /// The changed objects, in the order kt changed them.
    pub steps: Vec<Step>,
}

impl RestorePlan {
    /// A plan of the current [`PLAN_VERSION`].
    pub fn new(
        session: impl Into<String>,
        owner: impl Into<String>,
        lease_expiry: impl Into<String>,
        steps: Vec<Step>,
    ) -> RestorePlan {
        RestorePlan {
            version: PLAN_VERSION,
            session: session.into(),
            owner: owner.into(),
            lease_expiry: lease_expiry.into(),
            steps,
        }
    }

    /// The plan as compact JSON.
    ///
    /// ```
    /// # use kt_proto::restore::RestorePlan;
    /// let text = RestorePlan::new("s-1", "alice", "2026-12-07T18:00:30Z", vec![]).to_json();
    /// assert!(text.starts_with(r#"{"version":1,"session":"s-1""#));
    /// ```
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Reads a plan, refusing one written by a newer kt ([`Error::NewerRestoreVersion`])
    /// and malformed JSON ([`Error::InvalidRestore`]).
    ///
    /// ```
    /// # use kt_proto::restore::RestorePlan;
    /// let err = RestorePlan::from_json(r#"{"version":9}"#).unwrap_err();
    /// assert!(err.to_string().contains("version 9"));
    /// ```
    pub fn from_json(text: &str) -> Result<RestorePlan, Error> {
        from_json(text, "restore plan")
    }
}

/// One object kt changed, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The object.
    pub object: ObjectRef,
    /// What kt changed on it; each path at most once.
    pub changes: Vec<FieldChange>,
}

/// An object by API version, kind, namespace, name and UID.
///
/// ```
/// use kt_proto::restore::ObjectRef;
///
/// let web = ObjectRef::new("apps/v1", "Deployment", "dev", "web", "9d2e");
/// assert_eq!(web.to_string(), "Deployment dev/web");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// `v1`, `apps/v1`, ...
    pub api_version: String,
    /// `Service`, `Deployment`, `StatefulSet`, ...
    pub kind: String,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// `metadata.uid` when kt changed it: an object re-created under the same name is
    /// another object, and undo leaves it alone.
    pub uid: String,
}

impl ObjectRef {
    /// An object reference.
    pub fn new(
        api_version: impl Into<String>,
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One field kt changed: where (a JSON pointer, RFC 6901), what it held before and what
/// kt wrote. `None` means the field was absent (before) or removed by kt.
///
/// ```
/// use kt_proto::restore::{FieldChange, REPLICAS_PATH};
///
/// let scale = FieldChange::replicas(Some(3), 0);
/// assert_eq!(scale.path, REPLICAS_PATH);
/// assert_eq!(scale.original, Some(serde_json::json!(3)));
///
/// let mark = FieldChange::annotation("example.com/swapped", "yes");
/// assert_eq!(mark.path, "/metadata/annotations/example.com~1swapped");
/// assert_eq!(mark.original, None);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// JSON pointer to the field (`/spec/selector`).
    pub path: String,
    /// The value before kt changed it (`None`: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Value>,
    /// The value kt wrote (`None`: kt removed the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<Value>,
}

impl FieldChange {
    /// A Service's selector: `original` as seen (`None` if it had none), `written` the
    /// selector of the swap shadow.
    pub fn selector(original: Option<Value>, written: Value) -> FieldChange {
        FieldChange {
            path: SELECTOR_PATH.to_owned(),
            original,
            written: Some(written),
        }
    }

    /// A workload's replica count: `original` as seen, `written` what kt set (0 in scale
    /// mode).
    pub fn replicas(original: Option<i64>, written: i64) -> FieldChange {
        FieldChange {
            path: REPLICAS_PATH.to_owned(),
            original: original.map(Value::from),
            written: Some(Value::from(written)),
        }
    }

    /// An annotation kt added (absent before) with `value`.
    pub fn annotation(key: &str, value: &str) -> FieldChange {
        FieldChange {
            path: format!("/metadata/annotations/{}", escape_pointer(key)),
            original: None,
            written: Some(Value::from(value)),
        }
    }
}

/// The JSON kt keeps on a changed object in
/// [`annotations::RESTORE`](crate::annotations::RESTORE): its changes, so that a later
/// kt run can undo them without the session's plan.
///
/// ```
/// use kt_proto::restore::{FieldChange, Record};
///
/// let record = Record::new(vec![FieldChange::replicas(Some(2), 0)]);
/// let text = record.to_json();
/// assert_eq!(text, r#"{"version":1,"changes":[{"path":"/spec/replicas","original":2,"written":0}]}"#);
/// assert_eq!(Record::from_json(&text)?, record);
/// # Ok::<(), kt_proto::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The schema version ([`PLAN_VERSION`] when written by this kt).
    pub version: u32,
    /// What kt changed on the object.
    pub changes: Vec<FieldChange>,
}

impl Record {
    /// A record of the current [`PLAN_VERSION`].
    pub fn new(changes: Vec<FieldChange>) -> Record {
        Record {
            version: PLAN_VERSION,
            changes,
        }
    }

    /// The record as compact JSON (the annotation's value).
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Reads a record, refusing one written by a newer kt and malformed JSON.
    pub fn from_json(text: &str) -> Result<Record, Error> {
        from_json(text, "restore record")
    }
}

/// Escapes an object key for use as one JSON pointer segment (RFC 6901: `~` is `~0`,
/// `/` is `~1`).
///
/// ```
/// assert_eq!(kt_proto::restore::escape_pointer("kt.dev/owner"), "kt.dev~1owner");
/// ```
pub fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing these types cannot fail: string keys, no non-finite floats of our own
    // making (serde_json::Value cannot hold any).
    serde_json::to_string(value).unwrap_or_else(|e| unreachable!("restore JSON: {e}"))
}

fn from_json<T: for<'de> Deserialize<'de>>(text: &str, what: &'static str) -> Result<T, Error> {
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<u32>,
    }
    let versioned: Versioned = serde_json::from_str(text).map_err(|e| Error::InvalidRestore {
        what,
        reason: e.to_string(),
    })?;
    match versioned.version {
        None => Err(Error::InvalidRestore {
            what,
            reason: "no `version` field".to_owned(),
        }),
        Some(v) if v > PLAN_VERSION => Err(Error::NewerRestoreVersion {
            what,
            found: v,
            supported: PLAN_VERSION,
        }),
        Some(_) => serde_json::from_str(text).map_err(|e| Error::InvalidRestore {
            what,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn plan() -> RestorePlan {
        RestorePlan::new(
            "s-1a2b",
            "alice",
            "2026-12-07T18:00:30Z",
            vec![
                Step {
                    object: ObjectRef::new("v1", "Service", "dev", "web", "uid-svc"),
                    changes: vec![FieldChange::selector(
                        Some(json!({"app": "web"})),
                        json!({"kt.dev/swap": "s-1a2b"}),
                    )],
                },
                Step {
                    object: ObjectRef::new("apps/v1", "StatefulSet", "dev", "db", "uid-sts"),
                    changes: vec![
                        FieldChange::replicas(Some(3), 0),
                        FieldChange::annotation("example.com/note", "swapped"),
                    ],
                },
            ],
        )
    }

    #[test]
    fn a_plan_round_trips_through_json() {
        let plan = plan();
        let text = plan.to_json();
        assert_eq!(RestorePlan::from_json(&text).unwrap(), plan);
        // And through serde_json::Value, as a caller embedding it would.
        let value = serde_json::to_value(&plan).unwrap();
        assert_eq!(serde_json::from_value::<RestorePlan>(value).unwrap(), plan);
    }

    #[test]
    fn the_plan_json_has_the_documented_shape() {
        let value: Value = serde_json::from_str(&plan().to_json()).unwrap();
        assert_eq!(value["version"], json!(1));
        assert_eq!(value["session"], json!("s-1a2b"));
        assert_eq!(value["owner"], json!("alice"));
        assert_eq!(value["leaseExpiry"], json!("2026-12-07T18:00:30Z"));
        assert_eq!(
            value["steps"][0]["object"],
            json!({"apiVersion": "v1", "kind": "Service", "namespace": "dev",
                   "name": "web", "uid": "uid-svc"})
        );
        assert_eq!(
            value["steps"][1]["changes"][1],
            json!({"path": "/metadata/annotations/example.com~1note", "written": "swapped"})
        );
    }

    #[test]
    fn a_removed_field_and_an_absent_original_round_trip() {
        let change = FieldChange {
            path: "/spec/x".to_owned(),
            original: None,
            written: None,
        };
        let record = Record::new(vec![change]);
        assert_eq!(
            record.to_json(),
            r#"{"version":1,"changes":[{"path":"/spec/x"}]}"#
        );
        assert_eq!(Record::from_json(&record.to_json()).unwrap(), record);
    }

    #[test]
    fn a_newer_plan_is_refused_with_the_versions() {
        let err = RestorePlan::from_json(r#"{"version":2,"whatever":[]}"#).unwrap_err();
        assert!(matches!(
            err,
            Error::NewerRestoreVersion {
                found: 2,
                supported: 1,
                ..
            }
        ));
        assert!(err.to_string().contains("upgrade kt"), "{err}");
    }

    #[test]
    fn malformed_plans_are_refused_clearly() {
        for (text, needle) in [
            ("not json", "expected"),
            ("{}", "no `version` field"),
            (r#"{"version":1,"session":"s"}"#, "missing field `owner`"),
            (r#"{"version":"one"}"#, "invalid type"),
        ] {
            let err = RestorePlan::from_json(text).unwrap_err();
            assert!(
                matches!(err, Error::InvalidRestore { .. }),
                "{text}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(needle), "{text}: {msg}");
            assert!(msg.contains("restore plan"), "{msg}");
        }
    }

    #[test]
    fn pointer_segments_are_escaped() {
        assert_eq!(escape_pointer("a~b/c"), "a~0b~1c");
        assert_eq!(escape_pointer("plain"), "plain");
    }
}
