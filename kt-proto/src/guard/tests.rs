//! The ledger on real-shaped objects: JSON as the API server returns it, patched with the
//! `json-patch` crate the way the API server applies a JSON Patch.

use jiff::SignedDuration;
use serde_json::json;

use super::*;

fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn now() -> Timestamp {
    t("2026-12-07T17:00:00Z")
}

fn hold(session: &str, user: &str, since: Timestamp) -> Hold {
    Hold::new(session, user, since, since + SignedDuration::from_secs(30))
}

fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "dev",
            "uid": "5b0c6a52-7c43-4f5e-9d1e-0d4a0c1f2e11",
            "resourceVersion": "48213",
            "creationTimestamp": "2026-12-01T09:12:44Z",
            "labels": {"app": "web", "team": "shop"},
            "annotations": {"example.com/owner": "shop-team"},
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                               "apiVersion": "v1", "time": "2026-12-01T09:12:44Z"}]
        },
        "spec": {
            "clusterIP": "10.96.41.7",
            "clusterIPs": ["10.96.41.7"],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}],
            "selector": {"app": "web", "tier": "frontend"},
            "sessionAffinity": "None",
            "type": "ClusterIP"
        },
        "status": {"loadBalancer": {}}
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "dev",
            "uid": "0f6d1f0e-2a53-4c8b-a1c4-6f8b4a2d9c01",
            "resourceVersion": "48190",
            "generation": 4,
            "creationTimestamp": "2026-12-01T09:12:44Z",
            "labels": {"app": "web"},
            "annotations": {"deployment.kubernetes.io/revision": "3"}
        },
        "spec": {
            "progressDeadlineSeconds": 600,
            "replicas": 3,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "frontend"}},
                "spec": {"containers": [{"name": "web", "image": "ghcr.io/shop/web:1.4.2",
                                         "ports": [{"name": "http", "containerPort": 8080}]}]}
            }
        },
        "status": {"availableReplicas": 3, "readyReplicas": 3, "replicas": 3,
                   "updatedReplicas": 3, "observedGeneration": 4}
    })
}

fn statefulset() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "db",
            "namespace": "dev",
            "uid": "c2a9e6b4-1d7f-4e0a-8b3c-5d6e7f809a1b",
            "resourceVersion": "50001",
            "generation": 1,
            "labels": {"app": "db"}
        },
        "spec": {
            "replicas": 2,
            "serviceName": "db",
            "podManagementPolicy": "OrderedReady",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                         "spec": {"containers": [{"name": "db", "image": "postgres:17"}]}}
        },
        "status": {"replicas": 2, "readyReplicas": 2}
    })
}

/// Applies `patch` as the API server would, then bumps the resourceVersion as it does on
/// every write.
fn apply(object: &mut Value, patch: &Patch) {
    json_patch::patch(object, patch).unwrap_or_else(|e| panic!("{e}: {patch:?}"));
    bump(object);
}

fn bump(object: &mut Value) {
    let version = object["metadata"]["resourceVersion"].as_str().unwrap();
    let next = version.parse::<u64>().unwrap() + 1;
    object["metadata"]["resourceVersion"] = Value::from(next.to_string());
}

/// The object without its resourceVersion (restore is exact in everything else).
fn content(object: &Value) -> Value {
    let mut object = object.clone();
    object["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    object
}

fn forward_patch(object: &Value, step: &Step, hold: &Hold) -> Patch {
    match forward(object, step, hold).unwrap() {
        Forward::Apply(patch) => patch,
        other => panic!("expected a patch, got {other:?}"),
    }
}

/// Makes `step`'s change on `object` as `hold`.
fn make(object: &mut Value, step: &Step, hold: &Hold) {
    let patch = forward_patch(object, step, hold);
    apply(object, &patch);
}

fn swap_selector(svc: &Value, session: &str) -> Step {
    step(
        svc,
        vec![(
            SELECTOR_PATH.to_owned(),
            Some(json!({"kt.dev/swap": session})),
        )],
    )
    .unwrap()
}

fn scale_to_zero(workload: &Value) -> Step {
    step(workload, vec![(REPLICAS_PATH.to_owned(), Some(json!(0)))]).unwrap()
}

#[test]
fn module_example() {
    // The code of the module docs' example.
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "dev", "uid": "u1", "resourceVersion": "7"},
        "spec": {"selector": {"app": "web"}}});
    let hold = hold("s-1", "alice", now());
    let step = step(
        &svc,
        vec![(SELECTOR_PATH.into(), Some(json!({"kt.dev/swap": "s-1"})))],
    )
    .unwrap();
    let Forward::Apply(patch) = forward(&svc, &step, &hold).unwrap() else {
        panic!("refused")
    };
    let mut swapped = svc.clone();
    json_patch::patch(&mut swapped, &patch).unwrap();
    let Undo {
        patch: Some(patch),
        conflicts,
        ..
    } = undo(&swapped, &step, "s-1").unwrap()
    else {
        panic!("nothing to undo")
    };
    assert!(conflicts.is_empty());
    json_patch::patch(&mut swapped, &patch).unwrap();
    assert_eq!(swapped, svc);
}

#[test]
fn a_selector_swap_is_undone_exactly() {
    let original = service();
    let step = swap_selector(&original, "s-1");
    assert_eq!(
        step.changes[0].original,
        Some(json!({"app": "web", "tier": "frontend"}))
    );
    let mut svc = original.clone();
    make(&mut svc, &step, &hold("s-1", "alice", now()));

    assert_eq!(svc["spec"]["selector"], json!({"kt.dev/swap": "s-1"}));
    let notes = &svc["metadata"]["annotations"];
    assert_eq!(notes["example.com/owner"], "shop-team");
    assert_eq!(notes["kt.dev/owner"], "s-1");
    assert_eq!(notes["kt.dev/owner-user"], "alice");
    assert_eq!(notes["kt.dev/owner-since"], "2026-12-07T17:00:00Z");
    assert_eq!(notes["kt.dev/lease-expiry"], "2026-12-07T17:00:30Z");
    let record = Record::from_json(notes["kt.dev/restore"].as_str().unwrap()).unwrap();
    assert_eq!(record.changes, step.changes);
    // Everything else untouched.
    assert_eq!(svc["spec"]["ports"], original["spec"]["ports"]);
    assert_eq!(svc["metadata"]["labels"], original["metadata"]["labels"]);

    let undone = undo(&svc, &step, "s-1").unwrap();
    assert_eq!(undone.restored, vec![SELECTOR_PATH.to_owned()]);
    assert!(undone.conflicts.is_empty() && undone.released && undone.skipped.is_none());
    apply(&mut svc, undone.patch.as_ref().unwrap());
    assert_eq!(content(&svc), content(&original));
}

#[test]
fn scale_mode_is_undone_exactly_on_a_deployment_and_a_statefulset() {
    for original in [deployment(), statefulset()] {
        let step = scale_to_zero(&original);
        let mut workload = original.clone();
        make(&mut workload, &step, &hold("s-1", "alice", now()));
        assert_eq!(workload["spec"]["replicas"], 0);
        // The replica count is on the workload itself, not only in the plan.
        let record = recorded_step(&workload).unwrap().unwrap();
        assert_eq!(
            record.changes[0].original,
            Some(original["spec"]["replicas"].clone())
        );
        // The controller reports status meanwhile; restore does not care.
        workload["status"]["replicas"] = json!(0);
        bump(&mut workload);

        let undone = undo(&workload, &step, "s-1").unwrap();
        apply(&mut workload, undone.patch.as_ref().unwrap());
        workload["status"] = original["status"].clone();
        assert_eq!(
            content(&workload),
            content(&original),
            "{}",
            original["kind"]
        );
    }
}

#[test]
fn an_object_without_annotations_gets_none_back() {
    // The StatefulSet has no annotations at all: the map kt made is removed again.
    let original = statefulset();
    assert!(original.pointer(ANNOTATIONS).is_none());
    let step = step(
        &original,
        vec![
            (REPLICAS_PATH.to_owned(), Some(json!(0))),
            (annotation_path("example.com/swapped-by"), Some(json!("kt"))),
            (
                "/metadata/labels/kt.dev~1swapped".to_owned(),
                Some(json!("yes")),
            ),
        ],
    )
    .unwrap();
    let mut sts = original.clone();
    make(&mut sts, &step, &hold("s-1", "alice", now()));
    assert_eq!(
        sts["metadata"]["annotations"]["example.com/swapped-by"],
        "kt"
    );
    assert_eq!(sts["metadata"]["labels"]["kt.dev/swapped"], "yes");

    let undone = undo(&sts, &step, "s-1").unwrap();
    assert_eq!(undone.restored.len(), 3);
    apply(&mut sts, undone.patch.as_ref().unwrap());
    assert_eq!(content(&sts), content(&original));
}

#[test]
fn undo_twice_is_undo_once() {
    let original = deployment();
    let step = scale_to_zero(&original);
    let mut deploy = original.clone();
    make(&mut deploy, &step, &hold("s-1", "alice", now()));
    let first = undo(&deploy, &step, "s-1").unwrap();
    apply(&mut deploy, first.patch.as_ref().unwrap());
    let once = deploy.clone();

    let second = undo(&deploy, &step, "s-1").unwrap();
    assert_eq!(second, Undo::default(), "nothing left to do");
    // Undo of an object kt never changed is a no-op too.
    assert_eq!(undo(&original, &step, "s-1").unwrap(), Undo::default());
    assert_eq!(deploy, once);
}

#[test]
fn a_selector_changed_meanwhile_is_reported_not_overwritten() {
    let original = service();
    let step = swap_selector(&original, "s-1");
    let mut svc = original.clone();
    make(&mut svc, &step, &hold("s-1", "alice", now()));
    // Someone points the Service elsewhere during the swap.
    svc["spec"]["selector"] = json!({"app": "web-v2"});
    bump(&mut svc);

    let undone = undo(&svc, &step, "s-1").unwrap();
    assert!(undone.restored.is_empty());
    assert_eq!(
        undone.conflicts,
        vec![Conflict {
            object: step.object.clone(),
            path: SELECTOR_PATH.to_owned(),
            current: Some(json!({"app": "web-v2"})),
            expected: Some(json!({"kt.dev/swap": "s-1"})),
            original: Some(json!({"app": "web", "tier": "frontend"})),
        }]
    );
    let message = undone.conflicts[0].to_string();
    assert!(
        message.contains("Service dev/web: /spec/selector was changed by someone else")
            && message.contains(r#"it is now {"app":"web-v2"}"#)
            && message.contains(r#"kt wrote {"kt.dev/swap":"s-1"}"#)
            && message.contains(r#"the original was {"app":"web","tier":"frontend"}"#),
        "{message}"
    );
    // The hold is released (documented), the selector kept.
    assert!(undone.released);
    apply(&mut svc, undone.patch.as_ref().unwrap());
    assert_eq!(svc["spec"]["selector"], json!({"app": "web-v2"}));
    assert_eq!(
        svc["metadata"]["annotations"],
        original["metadata"]["annotations"]
    );
    // And a second undo finds nothing to write, and still reports the conflict.
    let again = undo(&svc, &step, "s-1").unwrap();
    assert!(again.patch.is_none() && again.conflicts.len() == 1);
}

#[test]
fn a_change_between_read_and_undo_fails_the_patch() {
    // The patch was computed while the selector held kt's value; someone changes it
    // before the patch lands: the API server (here json-patch) refuses it.
    let original = service();
    let step = swap_selector(&original, "s-1");
    let mut svc = original.clone();
    make(&mut svc, &step, &hold("s-1", "alice", now()));
    let undone = undo(&svc, &step, "s-1").unwrap();
    svc["spec"]["selector"] = json!({"app": "web-v2"});
    let before = svc.clone();
    assert!(json_patch::patch(&mut svc, undone.patch.as_ref().unwrap()).is_err());
    assert_eq!(svc, before, "a failed patch changes nothing");
}

#[test]
fn a_change_between_read_and_forward_fails_the_patch() {
    let original = service();
    let step = swap_selector(&original, "s-1");
    let patch = forward_patch(&original, &step, &hold("s-1", "alice", now()));
    // Another writer lands first (even on an unrelated field: the version moved).
    let mut svc = original.clone();
    svc["metadata"]["labels"]["extra"] = json!("1");
    bump(&mut svc);
    assert!(json_patch::patch(&mut svc, &patch).is_err());
    // Same version but another selector (as if the version were not tested): the
    // selector's own test fails.
    let mut svc = original.clone();
    svc["spec"]["selector"] = json!({"app": "other"});
    assert!(json_patch::patch(&mut svc, &patch).is_err());
}

#[test]
fn a_live_hold_is_refused_naming_the_holder_and_since_when() {
    let mut svc = service();
    let first = swap_selector(&svc, "s-1");
    make(&mut svc, &first, &hold("s-1", "alice", now()));

    let later = now() + SignedDuration::from_secs(10);
    let Ownership::Held(holder) = ownership(&svc, "s-2", later).unwrap() else {
        panic!("a live hold must be refused")
    };
    let message = holder.refusal();
    assert!(
        message.starts_with(
            "Service dev/web is held by kt session `s-1` of alice since 2026-12-07T17:00:00Z \
             (lease until 2026-12-07T17:00:30Z)"
        ),
        "{message}"
    );
    let second = swap_selector(&svc, "s-2");
    assert_eq!(
        forward(&svc, &second, &hold("s-2", "bob", later)).unwrap(),
        Forward::Refused(holder)
    );
    assert_eq!(ownership(&svc, "s-1", later).unwrap(), Ownership::Mine);
    assert_eq!(
        ownership(&service(), "s-2", later).unwrap(),
        Ownership::Free
    );
}

#[test]
fn an_expired_hold_is_undone_then_taken_over() {
    let original = service();
    let mut svc = original.clone();
    let first = swap_selector(&svc, "s-1");
    make(&mut svc, &first, &hold("s-1", "alice", now()));

    // s-1 died; its lease (30 s) has run out when s-2 comes.
    let later = now() + SignedDuration::from_secs(31);
    let Ownership::Expired { holder, record } = ownership(&svc, "s-2", later).unwrap() else {
        panic!("the hold has expired")
    };
    assert_eq!(holder.session, "s-1");
    let record = record.expect("the object records s-1's changes");
    assert_eq!(record, first);
    let undone = undo(&svc, &record, &holder.session).unwrap();
    apply(&mut svc, undone.patch.as_ref().unwrap());
    assert_eq!(content(&svc), content(&original));

    let second = swap_selector(&svc, "s-2");
    make(&mut svc, &second, &hold("s-2", "bob", later));
    assert_eq!(svc["metadata"]["annotations"]["kt.dev/owner"], "s-2");

    // s-1's own watchdog waking up late must not touch s-2's swap.
    let late = undo(&svc, &first, "s-1").unwrap();
    assert!(late.patch.is_none());
    assert!(matches!(late.skipped, Some(Skipped::HeldByOther(ref h)) if h.session == "s-2"));

    // s-2's undo still returns the exact original.
    let undone = undo(&svc, &second, "s-2").unwrap();
    apply(&mut svc, undone.patch.as_ref().unwrap());
    assert_eq!(content(&svc), content(&original));
}

#[test]
fn a_hold_without_a_readable_expiry_counts_as_expired() {
    let mut svc = service();
    let first = swap_selector(&svc, "s-1");
    make(&mut svc, &first, &hold("s-1", "alice", now()));
    svc["metadata"]["annotations"]["kt.dev/lease-expiry"] = json!("soon");
    assert!(matches!(
        ownership(&svc, "s-2", now()).unwrap(),
        Ownership::Expired { .. }
    ));
}

#[test]
fn the_heartbeat_renews_only_its_own_hold() {
    let mut svc = service();
    let first = swap_selector(&svc, "s-1");
    make(&mut svc, &first, &hold("s-1", "alice", now()));
    let until = now() + SignedDuration::from_secs(60);
    apply(&mut svc, &renew("s-1", until));
    assert_eq!(
        svc["metadata"]["annotations"]["kt.dev/lease-expiry"],
        "2026-12-07T17:01:00Z"
    );
    assert!(json_patch::patch(&mut svc.clone(), &renew("s-2", until)).is_err());
    assert!(json_patch::patch(&mut service(), &renew("s-1", until)).is_err());
}

#[test]
fn forward_again_by_the_same_session_is_already_applied() {
    let mut svc = service();
    let step = swap_selector(&svc, "s-1");
    let hold = hold("s-1", "alice", now());
    make(&mut svc, &step, &hold);
    assert_eq!(
        forward(&svc, &step, &hold).unwrap(),
        Forward::AlreadyApplied
    );
}

#[test]
fn a_recreated_object_is_left_alone() {
    let original = service();
    let step = swap_selector(&original, "s-1");
    let mut svc = original.clone();
    make(&mut svc, &step, &hold("s-1", "alice", now()));
    svc["metadata"]["uid"] = json!("another-uid");
    let undone = undo(&svc, &step, "s-1").unwrap();
    assert_eq!(
        undone.skipped,
        Some(Skipped::Recreated {
            uid: "another-uid".to_owned()
        })
    );
    assert!(undone.patch.is_none());
}

fn invalid(result: Result<impl fmt::Debug>) -> String {
    match result {
        Err(
            e @ (Error::NotAnObject { .. }
            | Error::InvalidField { .. }
            | Error::WrongObject { .. }
            | Error::InvalidRecord { .. }),
        ) => e.to_string(),
        other => panic!("expected an error about the input, got {other:?}"),
    }
}

#[test]
fn a_field_kt_does_not_change_on_that_kind_is_refused() {
    let message = invalid(step(
        &deployment(),
        vec![(SELECTOR_PATH.to_owned(), Some(json!({"app": "x"})))],
    ));
    assert!(
        message.contains("field to change on Deployment dev/web `/spec/selector`")
            && message.contains("/spec/selector of a Service"),
        "{message}"
    );
    let message = invalid(step(
        &service(),
        vec![(REPLICAS_PATH.to_owned(), Some(json!(0)))],
    ));
    assert!(
        message.contains("/spec/replicas of a Deployment or StatefulSet"),
        "{message}"
    );
    for path in [
        "/spec/template",
        "spec/replicas",
        "/metadata/annotations/kt.dev~1owner",
        "/metadata/annotations/bad~2escape",
        "/metadata/annotations/",
    ] {
        invalid(step(&deployment(), vec![(path.to_owned(), None)]));
    }
    let twice = vec![
        (REPLICAS_PATH.to_owned(), Some(json!(0))),
        (REPLICAS_PATH.to_owned(), Some(json!(1))),
    ];
    assert!(invalid(step(&deployment(), twice)).contains("each field once"));
}

#[test]
fn a_missing_field_path_is_refused_clearly() {
    // A Service JSON without its spec (not the full object).
    let mut svc = service();
    svc.as_object_mut().unwrap().remove("spec");
    let message = invalid(step(
        &svc,
        vec![(SELECTOR_PATH.to_owned(), Some(json!({"a": "b"})))],
    ));
    assert!(message.contains("parent `/spec` exists"), "{message}");

    // An object without kind or uid.
    for pointer in ["/kind", "/metadata/uid"] {
        let mut svc = service();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() { "" } else { parent };
        svc.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key);
        let message = invalid(ownership(&svc, "s-1", now()));
        assert!(message.contains("apiVersion, kind"), "{message}");
    }
    assert!(invalid(object_ref(&json!("not an object"))).contains("object to restore"));
}

#[test]
fn a_step_for_another_object_is_refused() {
    let step = scale_to_zero(&deployment());
    let message = invalid(forward(&statefulset(), &step, &hold("s-1", "alice", now())));
    assert!(
        message.contains("StatefulSet dev/db")
            && message.contains("the step's object, apps/v1 Deployment dev/web"),
        "{message}"
    );
    assert!(undo(&statefulset(), &step, "s-1").is_err());
}

#[test]
fn a_malformed_record_on_an_expired_hold_is_an_error_saying_what_to_do() {
    let mut svc = service();
    let first = swap_selector(&svc, "s-1");
    make(&mut svc, &first, &hold("s-1", "alice", now()));
    svc["metadata"]["annotations"]["kt.dev/restore"] = json!("{\"version\": 7}");
    let later = now() + SignedDuration::from_secs(60);
    let message = invalid(ownership(&svc, "s-2", later));
    assert!(
        message.contains("`kt.dev/restore` annotation on Service dev/web")
            && message.contains("version 7 is newer")
            && message.contains("restore the fields yourself"),
        "{message}"
    );
}

#[test]
fn an_undo_patch_fails_if_the_hold_changed_hands_meanwhile() {
    // s-1's watchdog computes its undo; before it lands, s-2 undoes s-1's changes and
    // takes the object over: s-1's patch must not remove s-2's hold.
    let original = deployment();
    let first = scale_to_zero(&original);
    let mut deploy = original.clone();
    make(&mut deploy, &first, &hold("s-1", "alice", now()));
    let stale = undo(&deploy, &first, "s-1").unwrap();

    let later = now() + SignedDuration::from_secs(31);
    let Ownership::Expired { holder, record } = ownership(&deploy, "s-2", later).unwrap() else {
        panic!("expired")
    };
    let taken = undo(&deploy, &record.unwrap(), &holder.session).unwrap();
    apply(&mut deploy, taken.patch.as_ref().unwrap());
    let second = scale_to_zero(&deploy);
    make(&mut deploy, &second, &hold("s-2", "bob", later));

    let before = deploy.clone();
    assert!(json_patch::patch(&mut deploy, stale.patch.as_ref().unwrap()).is_err());
    assert_eq!(deploy, before);
}

#[test]
fn a_record_naming_a_field_kt_never_changes_is_not_undone() {
    // Annotations anyone with `patch` can write: a forged record must not make a later
    // kt run rewrite arbitrary fields of the object when it takes over.
    let mut deploy = deployment();
    let first = scale_to_zero(&deploy);
    make(&mut deploy, &first, &hold("s-1", "alice", now()));
    let forged = Record::new(vec![FieldChange {
        path: "/spec/template/spec/containers/0/image".to_owned(),
        original: Some(json!("evil:latest")),
        written: Some(json!("ghcr.io/shop/web:1.4.2")),
    }]);
    deploy["metadata"]["annotations"]["kt.dev/restore"] = json!(forged.to_json());
    let later = now() + SignedDuration::from_secs(60);
    let message = invalid(ownership(&deploy, "s-2", later));
    assert!(
        message.contains("/spec/template/spec/containers/0/image")
            && message.contains("/spec/replicas of a Deployment or StatefulSet"),
        "{message}"
    );
}

#[test]
fn hold_status_reports_any_holder_never_mine() {
    let mut svc = service();
    assert_eq!(hold_status(&svc, now()).unwrap(), Ownership::Free);
    let first = swap_selector(&svc, "s-1");
    make(&mut svc, &first, &hold("s-1", "alice", now()));
    // Even for the holding session's own id: hold_status asks for no one.
    let Ownership::Held(holder) = hold_status(&svc, now()).unwrap() else {
        panic!("a live hold")
    };
    assert_eq!(holder.session, "s-1");
    let later = now() + SignedDuration::from_secs(30);
    let Ownership::Expired { holder, record } = hold_status(&svc, later).unwrap() else {
        panic!("expired at its expiry")
    };
    assert_eq!((holder.session.as_str(), record), ("s-1", Some(first)));
}

#[test]
fn an_expired_hold_without_a_record_is_released_by_an_empty_undo() {
    // A hold whose record annotation is gone (edited by hand): the taker undoes an
    // empty step, which only removes the hold annotations.
    let original = service();
    let mut svc = original.clone();
    let first = swap_selector(&svc, "s-1");
    make(&mut svc, &first, &hold("s-1", "alice", now()));
    svc["spec"]["selector"] = original["spec"]["selector"].clone();
    svc["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("kt.dev/restore");
    let later = now() + SignedDuration::from_secs(31);
    let Ownership::Expired {
        holder,
        record: None,
    } = ownership(&svc, "s-2", later).unwrap()
    else {
        panic!("expired, without a record")
    };
    let empty = Step {
        object: object_ref(&svc).unwrap(),
        changes: vec![],
    };
    let undone = undo(&svc, &empty, &holder.session).unwrap();
    assert!(undone.released && undone.restored.is_empty());
    apply(&mut svc, undone.patch.as_ref().unwrap());
    assert_eq!(content(&svc), content(&original));
    assert_eq!(ownership(&svc, "s-2", later).unwrap(), Ownership::Free);
}

#[test]
fn skipped_reasons_read_as_sentences() {
    assert_eq!(Skipped::Gone.to_string(), "it no longer exists");
    let recreated = Skipped::Recreated {
        uid: "u2".to_owned(),
    };
    assert!(
        recreated
            .to_string()
            .contains("deleted and created again (uid u2)")
    );
}
