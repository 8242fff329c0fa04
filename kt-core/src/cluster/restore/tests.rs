//! The executor's pure parts; the API calls are proven against the lab in
//! `tests/restore.rs`.

use kt_proto::guard::Holder;
use kt_proto::restore::{FieldChange, ObjectRef, REPLICAS_PATH};
use serde_json::json;

use super::*;
use crate::ErrorKind;

fn holder() -> Holder {
    Holder {
        object: ObjectRef::new("v1", "Service", "dev", "web", "u1"),
        session: "s-1".to_owned(),
        user: Some("alice".to_owned()),
        since: "2026-12-07T17:00:00Z".parse().ok(),
        expires: "2026-12-07T17:00:30Z".parse().ok(),
    }
}

#[test]
fn a_refused_take_reads_as_the_holders_refusal() {
    let holder = holder();
    let err = Error::TargetHeld {
        message: holder.refusal(),
    };
    assert_eq!(err.to_string(), holder.refusal());
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.to_string().starts_with(
            "Service dev/web is held by kt session `s-1` of alice since 2026-12-07T17:00:00Z \
             (lease until 2026-12-07T17:00:30Z); only one kt session may swap it"
        ),
        "{err}"
    );
}

#[test]
fn guard_errors_keep_their_message_and_are_invalid_arguments() {
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "dev", "uid": "u1"}, "spec": {}});
    let proto = guard::step(&svc, vec![("/spec/ports".to_owned(), None)])
        .expect_err("kt never changes a Service's ports");
    let text = proto.to_string();
    let err = Error::from(proto);
    assert_eq!(err.to_string(), text);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        text.contains("field to change on Service dev/web `/spec/ports`"),
        "{text}"
    );
}

#[test]
fn a_lost_hold_and_a_busy_object_are_conflicts_that_say_what_to_do() {
    let lost = Error::HoldLost {
        object: "Service dev/web".to_owned(),
        session: "s-1".to_owned(),
        reason: "it was deleted".to_owned(),
    };
    assert_eq!(lost.kind(), ErrorKind::Conflict);
    assert!(
        lost.to_string()
            .contains("no longer holds Service dev/web: it was deleted")
            && lost.to_string().contains("start it again"),
        "{lost}"
    );
    let busy = kept_changing(Kind::Deployment, "web", "dev", None);
    assert_eq!(busy.kind(), ErrorKind::Conflict);
    assert!(
        busy.to_string()
            .starts_with("Deployment dev/web changed between each of kt's 5 reads"),
        "{busy}"
    );
}

#[test]
fn a_retried_take_recognizes_its_own_writes() {
    let step = Step {
        object: ObjectRef::new("apps/v1", "Deployment", "dev", "web", "u2"),
        changes: vec![FieldChange::replicas(Some(3), 0)],
    };
    let writes = |v| vec![(REPLICAS_PATH.to_owned(), Some(json!(v)))];
    assert!(same_writes(&step, &writes(0)));
    assert!(!same_writes(&step, &writes(1)));
    assert!(!same_writes(&step, &[]));
}

#[test]
fn a_step_of_a_kind_kt_does_not_change_is_refused() {
    let step = Step {
        object: ObjectRef::new("v1", "Pod", "dev", "web-0", "u3"),
        changes: vec![],
    };
    let err = kind_of(&step).expect_err("kt never changes pods");
    assert!(err.to_string().contains("v1 Pod dev/web-0"), "{err}");
    let step = Step {
        object: ObjectRef::new("apps/v1", "StatefulSet", "dev", "db", "u4"),
        changes: vec![],
    };
    assert_eq!(kind_of(&step).ok(), Some(Kind::StatefulSet));
}
