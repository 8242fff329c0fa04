//! The watchdog's decision on objects shaped as the API server returns them, held by a
//! session through the client's own code path (`kt_proto::guard::forward`); the API
//! calls are proven against the lab in `tests/restore.rs`.

use kt_proto::guard::{Forward, Hold, Timestamp, forward, step};
use kt_proto::restore::{REPLICAS_PATH, SELECTOR_PATH};
use serde_json::json;

use super::*;

fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "dev", "uid": "uid-svc",
                     "resourceVersion": "10", "annotations": {"example.com/team": "shop"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "dev", "uid": "uid-deploy",
                     "resourceVersion": "20"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}}
    })
}

fn target(kind: Kind, uid: &str) -> RestoreTarget {
    RestoreTarget {
        kind,
        name: "web".to_owned(),
        uid: uid.to_owned(),
    }
}

/// `object` as the client leaves it after taking it for `session`.
fn held(object: &Value, path: &str, value: Value, session: &str) -> Value {
    let now: Timestamp = "2026-12-07T17:00:00Z".parse().unwrap();
    let hold = Hold::new(session, "alice", now, now + Duration::from_secs(30));
    let step = step(object, vec![(path.to_owned(), Some(value))]).unwrap();
    let Forward::Apply(patch) = forward(object, &step, &hold).unwrap() else {
        panic!("the client's take was refused")
    };
    let mut object = object.clone();
    json_patch::patch(&mut object, &patch).unwrap();
    object
}

fn apply(object: &Value, decision: Decision) -> (Value, Undo) {
    let Decision::Patch(undone) = decision else {
        panic!("expected a patch, got {decision:?}")
    };
    let mut object = object.clone();
    json_patch::patch(&mut object, undone.patch.as_ref().unwrap()).unwrap();
    (object, *undone)
}

#[test]
fn the_sessions_own_changes_are_put_back_exactly() {
    for (original, kind, path, value) in [
        (
            service(),
            Kind::Service,
            SELECTOR_PATH,
            json!({"kt.dev/swap": "s1"}),
        ),
        (deployment(), Kind::Deployment, REPLICAS_PATH, json!(0)),
    ] {
        let uid = original["metadata"]["uid"].as_str().unwrap().to_owned();
        let swapped = held(&original, path, value, "s1");
        let decision = decide(&target(kind, &uid), "s1", Some(&swapped)).unwrap();
        let (restored, undone) = apply(&swapped, decision);
        assert_eq!(undone.restored, [path]);
        assert!(undone.conflicts.is_empty() && undone.released);
        assert_eq!(restored, original, "{kind}");
    }
}

#[test]
fn a_value_someone_else_changed_is_left_and_reported_and_the_hold_released() {
    let mut swapped = held(&deployment(), REPLICAS_PATH, json!(0), "s1");
    swapped["spec"]["replicas"] = json!(5);
    let decision = decide(
        &target(Kind::Deployment, "uid-deploy"),
        "s1",
        Some(&swapped),
    )
    .unwrap();
    let (after, undone) = apply(&swapped, decision);
    assert_eq!(after["spec"]["replicas"], 5);
    assert!(after["metadata"].get("annotations").is_none(), "{after}");
    let [conflict] = undone.conflicts.as_slice() else {
        panic!("one conflict: {undone:?}")
    };
    assert_eq!(conflict.current, Some(json!(5)));
    assert_eq!(conflict.original, Some(json!(3)));
}

#[test]
fn objects_not_held_by_the_session_are_left_alone() {
    let s1 = held(
        &service(),
        SELECTOR_PATH,
        json!({"kt.dev/swap": "s1"}),
        "s1",
    );
    let cases = [
        // Gone.
        (None, "s1", "uid-svc", "no longer exists"),
        // Another session took it over.
        (Some(&s1), "s2", "uid-svc", "kt session `s1` holds it now"),
        // Re-created under the same name.
        (Some(&s1), "s1", "uid-old", "deleted and created again"),
    ];
    for (object, session, uid, expected) in cases {
        let decision = decide(&target(Kind::Service, uid), session, object).unwrap();
        let Decision::Nothing(why) = decision else {
            panic!("{expected}: expected nothing, got {decision:?}")
        };
        assert!(why.contains(expected), "{why}");
    }
    // Never held, or already restored.
    let decision = decide(&target(Kind::Service, "uid-svc"), "s1", Some(&service())).unwrap();
    assert!(matches!(decision, Decision::Nothing(ref why) if why.contains("already restored")));
}

#[test]
fn a_hold_without_a_record_is_released() {
    let mut swapped = held(
        &service(),
        SELECTOR_PATH,
        json!({"kt.dev/swap": "s1"}),
        "s1",
    );
    swapped["spec"]["selector"] = json!({"app": "web"});
    let annotations = swapped["metadata"]["annotations"].as_object_mut().unwrap();
    annotations.remove("kt.dev/restore");
    let decision = decide(&target(Kind::Service, "uid-svc"), "s1", Some(&swapped)).unwrap();
    let (after, undone) = apply(&swapped, decision);
    assert!(undone.released && undone.restored.is_empty());
    assert_eq!(after, service());
}

#[test]
fn a_record_kt_cannot_use_is_an_error_saying_what_to_do() {
    let mut swapped = held(
        &service(),
        SELECTOR_PATH,
        json!({"kt.dev/swap": "s1"}),
        "s1",
    );
    swapped["metadata"]["annotations"]["kt.dev/restore"] = json!("{not json");
    let err = decide(&target(Kind::Service, "uid-svc"), "s1", Some(&swapped)).unwrap_err();
    assert!(
        err.to_string().contains("restore the fields yourself"),
        "{err}"
    );
    // A forged record naming a field kt never changes is refused, not applied.
    swapped["metadata"]["annotations"]["kt.dev/restore"] = json!(
        r#"{"version":1,"changes":[{"path":"/spec/ports","original":[],"written":[{"port":80}]}]}"#
    );
    let err = decide(&target(Kind::Service, "uid-svc"), "s1", Some(&swapped)).unwrap_err();
    assert!(err.to_string().contains("/spec/ports"), "{err}");
}

#[test]
fn a_report_fails_when_one_object_failed() {
    let ok = (
        target(Kind::Service, "u1"),
        Outcome::Nothing("already restored".to_owned()),
    );
    let failed = (
        target(Kind::Deployment, "u2"),
        Outcome::Failed("403".to_owned()),
    );
    assert!(
        !Report {
            outcomes: vec![ok.clone()]
        }
        .failed()
    );
    assert!(
        Report {
            outcomes: vec![ok, failed]
        }
        .failed()
    );
}
