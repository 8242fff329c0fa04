//! The restore executor (`cluster/restore.rs`) against the lab's API server: taking a
//! Service's selector and a workload's replica count for a session, giving them back
//! exactly, refusing a live holder, taking over an expired one, renewing, listing, and
//! retrying when the object changes between kt's read and its guarded patch (the
//! change is made for real, by kubectl, at that moment).
//!
//! The executor runs with the lab's admin kubeconfig: the Role that swap needs is
//! swap's to ship and test.

use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, bail, ensure};
use kt_core::restore_testing::{
    Executor, Hold, Kind, Ownership, REPLICAS_PATH, SELECTOR_PATH, SignedDuration, Skipped,
    Timestamp,
};
use kt_core::{ConnectOptions, ErrorKind};
use kt_lab_tests::{Lab, Poll, TestNamespace, WAIT, wait_until};
use serde_json::{Value, json};

/// A Service and a paused Deployment (it makes no pods; its controller still writes
/// its status, as on any cluster) and a one-pod StatefulSet.
const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web, team: shop}
  annotations: {example.com/owner: shop-team}
spec:
  selector: {app: web, tier: frontend}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  paused: true
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: frontend}}
    spec: {containers: [{name: web, image: kt.invalid/echo}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  labels: {app: db}
spec:
  replicas: 1
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: kt.invalid/echo}]}
"#;

struct Setup {
    lab: Lab,
    ns: TestNamespace,
    kt: Executor,
}

async fn setup(test: &str) -> Result<Setup> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace(test).await?;
    ns.apply(OBJECTS).await?;
    for (kind, name) in [("deployment", "web"), ("statefulset", "db")] {
        settled(&ns, kind, name).await?;
    }
    let opts = ConnectOptions::new()
        .kubeconfig(lab.kubeconfig())
        .namespace(ns.name());
    let kt = Executor::connect(&opts).await?;
    Ok(Setup { lab, ns, kt })
}

/// Waits until the workload's controller has seen its latest spec.
async fn settled(ns: &TestNamespace, kind: &str, name: &str) -> Result<()> {
    wait_until(&format!("{kind} {name} to be observed"), WAIT, || async {
        let out = ns
            .kubectl(&[
                "get",
                kind,
                name,
                "-o",
                "jsonpath={.metadata.generation} {.status.observedGeneration}",
            ])
            .await?;
        Ok(match out.split_once(' ') {
            Some((a, b)) if a == b => Poll::Done(()),
            _ => Poll::NotYet(out),
        })
    })
    .await
}

/// What restore must put back exactly: labels, annotations and spec.
async fn content(ns: &TestNamespace, kind: &str, name: &str) -> Result<Value> {
    let text = ns.kubectl(&["get", kind, name, "-o", "json"]).await?;
    let object: Value = serde_json::from_str(&text)?;
    Ok(json!({
        "labels": object["metadata"]["labels"],
        "annotations": object["metadata"]["annotations"],
        "spec": object["spec"],
    }))
}

fn hold(session: &str, since: Timestamp, ttl_secs: i64) -> Hold {
    Hold::new(
        session,
        "alice",
        since,
        since + SignedDuration::from_secs(ttl_secs),
    )
}

/// A `between` hook that does nothing.
fn nothing() -> impl FnMut(u32) -> futures::future::BoxFuture<'static, ()> + Send {
    |_| Box::pin(async {})
}

fn selector(value: Value) -> Vec<(String, Option<Value>)> {
    vec![(SELECTOR_PATH.to_owned(), Some(value))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_swap_is_given_back_exactly_and_only_once() -> Result<()> {
    let s = setup("restore-selector").await?;
    let before = content(&s.ns, "service", "web").await?;
    let swap = json!({"kt.dev/swap": "s1"});
    let taken =
        s.kt.take(
            Kind::Service,
            "web",
            selector(swap.clone()),
            &hold("s1", Timestamp::now(), 60),
            &mut nothing(),
        )
        .await?;
    ensure!(taken.took_over.is_none());
    ensure!(taken.step.changes[0].original == Some(json!({"app": "web", "tier": "frontend"})));
    let during = s.kt.get(Kind::Service, "web").await?;
    ensure!(during["spec"]["selector"] == swap, "{during}");
    let notes = &during["metadata"]["annotations"];
    ensure!(notes["kt.dev/owner"] == "s1" && notes["kt.dev/owner-user"] == "alice");
    ensure!(notes["example.com/owner"] == "shop-team", "{notes}");

    let undone = s.kt.give_back(&taken.step, "s1", &mut nothing()).await?;
    ensure!(undone.restored == [SELECTOR_PATH] && undone.conflicts.is_empty() && undone.released);
    ensure!(content(&s.ns, "service", "web").await? == before);

    // Again: nothing left to do, nothing written.
    let version = |v: &Value| v["metadata"]["resourceVersion"].clone();
    let was = version(&s.kt.get(Kind::Service, "web").await?);
    let again = s.kt.give_back(&taken.step, "s1", &mut nothing()).await?;
    ensure!(
        again.patch.is_none() && again.restored.is_empty(),
        "{again:?}"
    );
    ensure!(version(&s.kt.get(Kind::Service, "web").await?) == was);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_mode_is_given_back_exactly_on_a_deployment_and_a_statefulset() -> Result<()> {
    let s = setup("restore-scale").await?;
    for (kind, kubectl_kind, name, replicas) in [
        (Kind::Deployment, "deployment", "web", 3),
        (Kind::StatefulSet, "statefulset", "db", 1),
    ] {
        let before = content(&s.ns, kubectl_kind, name).await?;
        let writes = vec![(REPLICAS_PATH.to_owned(), Some(json!(0)))];
        let taken =
            s.kt.take(
                kind,
                name,
                writes,
                &hold("s1", Timestamp::now(), 60),
                &mut nothing(),
            )
            .await?;
        ensure!(
            taken.step.changes[0].original == Some(json!(replicas)),
            "{kind}"
        );
        let during = s.kt.get(kind, name).await?;
        ensure!(during["spec"]["replicas"] == 0, "{kind}: {during}");
        // The replica count is kept on the workload itself.
        let record = during["metadata"]["annotations"]["kt.dev/restore"]
            .as_str()
            .context("no kt.dev/restore annotation")?;
        ensure!(
            record.contains(&format!("\"original\":{replicas}")),
            "{record}"
        );

        let undone = s.kt.give_back(&taken.step, "s1", &mut nothing()).await?;
        ensure!(undone.restored == [REPLICAS_PATH] && undone.conflicts.is_empty());
        ensure!(
            content(&s.ns, kubectl_kind, name).await? == before,
            "{kind}"
        );
    }
    Ok(())
}

/// Records each call of the hook and, on the first, runs kubectl with `args`.
fn change_once(
    lab: &Lab,
    ns: &str,
    args: &[&str],
    calls: &Arc<Mutex<Vec<u32>>>,
) -> impl FnMut(u32) -> futures::future::BoxFuture<'static, ()> + Send + use<> {
    let lab = lab.clone();
    let mut command = vec!["-n".to_owned(), ns.to_owned()];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    let calls = Arc::clone(calls);
    move |attempt| {
        calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(attempt);
        let lab = lab.clone();
        let command = command.clone();
        Box::pin(async move {
            if attempt == 1 {
                let args: Vec<&str> = command.iter().map(String::as_str).collect();
                lab.kubectl(&args)
                    .await
                    .expect("kubectl changes the object");
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_between_read_and_patch_is_read_again_not_overwritten() -> Result<()> {
    let s = setup("restore-retry").await?;

    // Take: someone labels the Service after kt read it. The first patch's version
    // test fails (HTTP 422); kt reads again and takes it, keeping the label.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut between = change_once(
        &s.lab,
        s.ns.name(),
        &["label", "service", "web", "extra=1"],
        &calls,
    );
    let swap = json!({"kt.dev/swap": "s1"});
    let taken =
        s.kt.take(
            Kind::Service,
            "web",
            selector(swap.clone()),
            &hold("s1", Timestamp::now(), 60),
            &mut between,
        )
        .await?;
    ensure!(
        *calls.lock().unwrap() == [1, 2],
        "hook calls {:?}",
        calls.lock().unwrap()
    );
    let during = s.kt.get(Kind::Service, "web").await?;
    ensure!(during["spec"]["selector"] == swap && during["metadata"]["labels"]["extra"] == "1");

    // Give back: someone points the selector elsewhere after kt read it. The first
    // patch's test of kt's value fails; kt reads again, reports the conflict and
    // leaves the selector as they set it, releasing its hold.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut between = change_once(
        &s.lab,
        s.ns.name(),
        &[
            "patch",
            "service",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"selector":{"app":"web-v2","kt.dev/swap":null}}}"#,
        ],
        &calls,
    );
    let undone = s.kt.give_back(&taken.step, "s1", &mut between).await?;
    ensure!(
        *calls.lock().unwrap() == [1, 2],
        "hook calls {:?}",
        calls.lock().unwrap()
    );
    ensure!(undone.restored.is_empty() && undone.released, "{undone:?}");
    let [conflict] = undone.conflicts.as_slice() else {
        bail!("expected one conflict: {undone:?}");
    };
    ensure!(
        conflict.current == Some(json!({"app": "web-v2"})),
        "{conflict}"
    );
    ensure!(conflict.original == Some(json!({"app": "web", "tier": "frontend"})));
    let after = s.kt.get(Kind::Service, "web").await?;
    ensure!(
        after["spec"]["selector"] == json!({"app": "web-v2"}),
        "{after}"
    );
    let notes = after["metadata"]["annotations"]
        .as_object()
        .context("annotations")?;
    ensure!(!notes.keys().any(|k| k.starts_with("kt.dev/")), "{notes:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_hold_is_refused_and_an_expired_one_is_restored_then_taken_over() -> Result<()> {
    let s = setup("restore-holders").await?;
    let before = content(&s.ns, "service", "web").await?;
    let now = Timestamp::now();
    // s1's hold is written as already expired (the time is data, not a wait).
    let first =
        s.kt.take(
            Kind::Service,
            "web",
            selector(json!({"kt.dev/swap": "s1"})),
            &hold("s1", now - SignedDuration::from_secs(120), 60),
            &mut nothing(),
        )
        .await?;
    // A live hold: s2 takes the Deployment, s3 is refused.
    s.kt.take(
        Kind::Deployment,
        "web",
        vec![(REPLICAS_PATH.to_owned(), Some(json!(0)))],
        &hold("s2", now, 3600),
        &mut nothing(),
    )
    .await?;
    let refused =
        s.kt.take(
            Kind::Deployment,
            "web",
            vec![(REPLICAS_PATH.to_owned(), Some(json!(0)))],
            &hold("s3", now, 60),
            &mut nothing(),
        )
        .await
        .err()
        .context("a live hold must be refused")?;
    ensure!(refused.kind() == ErrorKind::Conflict, "{refused:?}");
    let text = refused.to_string();
    let holder = format!(
        "Deployment {}/web is held by kt session `s2` of alice since",
        s.ns.name()
    );
    ensure!(
        text.starts_with(&holder) && text.contains("only one kt session"),
        "{text}"
    );

    // clean's view: one live hold, one expired with its record.
    let held = s.kt.held(Kind::Deployment).await?;
    ensure!(matches!(held.as_slice(), [(_, Ownership::Held(h))] if h.session == "s2"));
    let held = s.kt.held(Kind::Service).await?;
    let [
        (
            _,
            Ownership::Expired {
                holder,
                record: Some(record),
            },
        ),
    ] = held.as_slice()
    else {
        bail!("expected s1's expired hold: {held:?}");
    };
    ensure!(holder.session == "s1" && *record == first.step);

    // s2 takes the Service over: s1's change is undone first, then s2's made.
    let second =
        s.kt.take(
            Kind::Service,
            "web",
            selector(json!({"kt.dev/swap": "s2"})),
            &hold("s2", now, 3600),
            &mut nothing(),
        )
        .await?;
    let over = second.took_over.as_ref().context("a take-over")?;
    ensure!(over.holder.session == "s1" && over.undone.restored == [SELECTOR_PATH]);
    ensure!(second.step.changes[0].original == first.step.changes[0].original);

    // s1's watchdog or client, late: not its object any more.
    let late = s.kt.give_back(&first.step, "s1", &mut nothing()).await?;
    ensure!(
        matches!(late.skipped, Some(Skipped::HeldByOther(ref h)) if h.session == "s2"),
        "{late:?}"
    );
    let undone = s.kt.give_back(&second.step, "s2", &mut nothing()).await?;
    ensure!(undone.restored == [SELECTOR_PATH]);
    ensure!(content(&s.ns, "service", "web").await? == before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_moves_the_expiry_and_a_lost_hold_is_reported() -> Result<()> {
    let s = setup("restore-renew").await?;
    let now = Timestamp::now();
    let taken =
        s.kt.take(
            Kind::Service,
            "web",
            selector(json!({"kt.dev/swap": "s1"})),
            &hold("s1", now, 30),
            &mut nothing(),
        )
        .await?;
    let until = now + SignedDuration::from_secs(90);
    s.kt.renew(std::slice::from_ref(&taken.step), "s1", until)
        .await?;
    let svc = s.kt.get(Kind::Service, "web").await?;
    ensure!(svc["metadata"]["annotations"]["kt.dev/lease-expiry"] == until.to_string());

    // Someone removes kt's hold by hand: the heartbeat says so.
    s.ns.kubectl(&["annotate", "service", "web", "kt.dev/owner-"])
        .await?;
    let err =
        s.kt.renew(std::slice::from_ref(&taken.step), "s1", until)
            .await
            .err()
            .context("a lost hold must be reported")?;
    ensure!(err.kind() == ErrorKind::Conflict, "{err:?}");
    ensure!(err.to_string().contains("no longer holds Service"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_is_not_found_and_a_deleted_one_is_nothing_to_give_back() -> Result<()> {
    let s = setup("restore-gone").await?;
    let err =
        s.kt.take(
            Kind::Service,
            "nope",
            selector(json!({"kt.dev/swap": "s1"})),
            &hold("s1", Timestamp::now(), 60),
            &mut nothing(),
        )
        .await
        .err()
        .context("no such Service")?;
    ensure!(err.kind() == ErrorKind::NotFound, "{err:?}");

    let taken =
        s.kt.take(
            Kind::Service,
            "web",
            selector(json!({"kt.dev/swap": "s1"})),
            &hold("s1", Timestamp::now(), 60),
            &mut nothing(),
        )
        .await?;
    s.ns.kubectl(&["delete", "service", "web"]).await?;
    let undone = s.kt.give_back(&taken.step, "s1", &mut nothing()).await?;
    ensure!(undone.skipped == Some(Skipped::Gone), "{undone:?}");

    // A field kt does not change on a Deployment is refused before anything is sent.
    let err =
        s.kt.take(
            Kind::Deployment,
            "web",
            vec![("/spec/template".to_owned(), None)],
            &hold("s1", Timestamp::now(), 60),
            &mut nothing(),
        )
        .await
        .err()
        .context("a field kt does not change")?;
    ensure!(err.kind() == ErrorKind::InvalidArgument, "{err:?}");
    ensure!(
        err.to_string().contains("/spec/replicas of a Deployment"),
        "{err}"
    );
    Ok(())
}
