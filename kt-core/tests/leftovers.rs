//! Sessions whose client vanished, told apart by their Lease: the shadow ends itself
//! when its Lease is not renewed or is deleted, and the next session in the namespace
//! deletes the pod of an expired Lease, never a live session's.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use common::{Fixture, options};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kt_core::{Event, Session, ShadowFlavour};
use kt_lab_tests::{Poll, TestNamespace, WAIT, wait_until};

/// Waits (bounded) until `pod` has ended; returns its container's exit code.
async fn wait_ended(ns: &TestNamespace, pod: &str) -> Result<String> {
    wait_until("the shadow pod to end by itself", WAIT * 2, || async {
        let out = ns
            .kubectl(&[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.phase} {.status.containerStatuses[0].state.terminated.exitCode}",
            ])
            .await?;
        Ok(match out.split_once(' ') {
            Some(("Failed" | "Succeeded", code)) if !code.is_empty() => Poll::Done(code.to_owned()),
            _ => Poll::NotYet(out),
        })
    })
    .await
}

/// The client stops renewing while its tunnel stays up (so the SSH-idle timer never
/// fires): the shadow reads its Lease, sees no renewal within the 5 s duration, and
/// exits with the Lease's exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_ends_itself_when_its_lease_is_not_renewed() -> Result<()> {
    let f = Box::pin(Fixture::start_with(
        "kt-lease-stale",
        ShadowFlavour::KtShadow,
        1,
        |o| {
            o.heartbeat_interval(Duration::from_secs(1))
                .shadow_heartbeat_timeout(Some(Duration::from_secs(5)))
        },
    ))
    .await?;
    let pod = f.session.pod_name().to_owned();
    f.session.stop_lease_renewal();
    let code = wait_ended(&f.ns, &pod).await?;
    ensure!(
        code == kt_proto::shadow::EXIT_LEASE_EXPIRED.to_string(),
        "exit code {code} (the SSH-idle timer exits {})",
        kt_proto::shadow::EXIT_HEARTBEAT_TIMEOUT
    );
    let _ = f.session.close().await;
    Ok(())
}

/// A live session with a shadow timeout far below the default heartbeat interval
/// (3 s against 30 s) renews its Lease often enough: through several renewals its
/// shadow keeps running and the session keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_with_a_short_shadow_timeout_keeps_its_shadow() -> Result<()> {
    let f = Box::pin(Fixture::start_with(
        "kt-lease-short",
        ShadowFlavour::KtShadow,
        1,
        |o| o.shadow_heartbeat_timeout(Some(Duration::from_secs(3))),
    ))
    .await?;
    let pod = f.session.pod_name().to_owned();
    let read = || async {
        f.ns.kubectl(&["get", "lease", &pod, "-o", "jsonpath={.spec.renewTime}"])
            .await
    };
    let mut seen = vec![read().await?];
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() <= 3 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "fewer than three renewals of the Lease: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = read().await?;
        if seen.last() != Some(&now) {
            seen.push(now);
        }
    }
    let phase =
        f.ns.kubectl(&["get", "pod", &pod, "-o", "jsonpath={.status.phase}"])
            .await?;
    ensure!(phase == "Running", "the live session's shadow is {phase}");
    ensure!(!f.session.resolve("echo").await?.is_empty());
    f.finish().await
}

/// The Lease is deleted (as an admin ending a session would): the shadow exits with
/// the Lease's exit code long before its 10-minute duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_ends_itself_when_its_lease_is_deleted() -> Result<()> {
    let f = Fixture::start("kt-lease-gone", ShadowFlavour::KtShadow, 1).await?;
    let pod = f.session.pod_name().to_owned();
    f.session.stop_lease_renewal();
    f.ns.kubectl(&["delete", "lease", &pod]).await?;
    let code = wait_ended(&f.ns, &pod).await?;
    ensure!(
        code == kt_proto::shadow::EXIT_LEASE_EXPIRED.to_string(),
        "exit code {code}"
    );
    let _ = f.session.close().await;
    Ok(())
}

/// Three sessions in one namespace: `stale` stops renewing and an admin moves its
/// Lease's renewTime an hour back; `live` goes on. A new session's sweep deletes
/// `stale`'s pod and reports it; `live` keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_session_deletes_the_pod_of_an_expired_lease_and_spares_live_ones() -> Result<()> {
    let stale = Box::pin(Fixture::start_with(
        "kt-sweep",
        ShadowFlavour::KtShadow,
        1,
        |o| o.shadow_heartbeat_timeout(Some(Duration::from_secs(120))),
    ))
    .await?;
    let ns = &stale.ns;
    let live_opts = options(ShadowFlavour::KtShadow, ns.name(), &stale.kubeconfig)?;
    let live = ns
        .explain(
            Session::connect(live_opts)
                .await
                .map_err(anyhow::Error::from),
        )
        .await
        .context("the live session")?;
    let stale_pod = stale.session.pod_name().to_owned();
    stale.session.stop_lease_renewal();
    let past = Timestamp::now() - SignedDuration::from_hours(1);
    let patch = serde_json::json!({ "spec": { "renewTime": MicroTime(past) } });
    ns.kubectl(&[
        "patch",
        "lease",
        &stale_pod,
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
    .await?;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let opts = options(ShadowFlavour::KtShadow, ns.name(), &stale.kubeconfig)?.on_event(move |e| {
        if let Ok(mut v) = sink.lock() {
            v.push(e.clone());
        }
    });
    let next = ns
        .explain(Session::connect(opts).await.map_err(anyhow::Error::from))
        .await
        .context("the next session")?;
    let recovered: Vec<String> = seen
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| match e {
            Event::Recovered { what } => Some(what),
            _ => None,
        })
        .collect();
    ensure!(
        recovered.len() == 1
            && recovered[0].contains(&format!("{}/{stale_pod}", ns.name()))
            && recovered[0].contains("its Lease expired"),
        "recovered: {recovered:?}"
    );
    wait_until("the stale session's pod to be gone", WAIT, || async {
        let out = ns.kubectl(&["get", "pods", "-o", "name"]).await?;
        Ok(if out.contains(&stale_pod) {
            Poll::NotYet(out)
        } else {
            Poll::Done(())
        })
    })
    .await?;
    // The live session is untouched and still reaches the cluster.
    let phase = ns
        .kubectl(&[
            "get",
            "pod",
            live.pod_name(),
            "-o",
            "jsonpath={.status.phase}",
        ])
        .await?;
    ensure!(phase == "Running", "the live session's pod is {phase}");
    let ips = live.resolve("echo").await?;
    ensure!(!ips.is_empty(), "echo resolved to nothing");
    next.close().await?;
    live.close().await?;
    let _ = stale.session.close().await;
    Ok(())
}
