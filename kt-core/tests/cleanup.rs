//! After `close()`, nothing kt made for the session is left anywhere in the cluster:
//! `kubectl get all,secrets,configmaps,leases -A -l app.kubernetes.io/managed-by=kt` lists
//! only the parts of kt's shipped agent (ConfigMaps labelled `kt.dev/role=agent-part`,
//! kept on purpose for later sessions and carrying no session label; `clean` removes
//! them, see `imageless.rs`). While the session lives, its Lease is renewed.
//! The two flavours run one after the other (a shared lock), so that each looks at a
//! cluster where only its own session existed.

mod common;

use anyhow::{Result, ensure};
use common::Fixture;
use kt_core::{Event, ShadowFlavour};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

both_flavours!(close_removes_every_object_kt_created_in_the_cluster);
async fn close_removes_every_object_kt_created_in_the_cluster(
    flavour: ShadowFlavour,
) -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let f = Fixture::start("kt-close", flavour, 1).await?;
    let session_label = format!("kt.dev/session={}", f.session.id());
    // While the session lives: a pod and a Lease, labelled, the Lease owned by the pod;
    // for the OpenSSH shadow also a Secret, owned by the pod. The kt-shadow flavour
    // makes no Secret at all.
    let live = f
        .lab
        .kubectl(&[
            "get",
            "pods,secrets,leases",
            "-A",
            "-l",
            &session_label,
            "-o",
            "name",
        ])
        .await?;
    let mut names: Vec<&str> = live.lines().collect();
    names.sort_unstable();
    let pod = f.session.pod_name().to_owned();
    let mut expected = vec![
        format!("lease.coordination.k8s.io/{pod}"),
        format!("pod/{pod}"),
    ];
    if flavour == ShadowFlavour::OpenSsh {
        expected.push(format!("secret/{pod}"));
    }
    ensure!(names == expected, "objects of the live session: {names:?}");
    let owned: &[&str] = if flavour == ShadowFlavour::OpenSsh {
        &["secret", "lease"]
    } else {
        &["lease"]
    };
    for kind in owned {
        let owner =
            f.ns.kubectl(&[
                "get",
                kind,
                &pod,
                "-o",
                "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
            ])
            .await?;
        ensure!(owner == format!("Pod/{pod}"), "{kind} owner: {owner}");
    }
    let holder =
        f.ns.kubectl(&[
            "get",
            "lease",
            &pod,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await?;
    ensure!(holder == f.session.id(), "lease holder `{holder}`");

    let mut events = f.session.events();
    f.session.close().await?;
    let everything = f
        .lab
        .kubectl(&[
            "get",
            "all,secrets,configmaps,leases",
            "-A",
            "-l",
            "app.kubernetes.io/managed-by=kt,kt.dev/role!=agent-part",
            "-o",
            "name",
        ])
        .await?;
    ensure!(
        everything.trim().is_empty(),
        "left after close(): {everything}"
    );
    // What is left is the agent's parts only, and none of them belongs to a session.
    let parts = f
        .lab
        .kubectl(&[
            "get",
            "configmaps",
            "-A",
            "-l",
            "app.kubernetes.io/managed-by=kt,kt.dev/session",
            "-o",
            "name",
        ])
        .await?;
    ensure!(parts.trim().is_empty(), "session ConfigMaps left: {parts}");
    let mut last = None;
    while let Some(e) = events.next().await {
        last = Some(e);
    }
    ensure!(last == Some(Event::Closed), "last event {last:?}");
    // Closing twice is harmless; the API refuses use after close.
    f.session.close().await?;
    ensure!(matches!(
        f.session.resolve("echo").await,
        Err(kt_core::Error::Closed)
    ));
    Ok(())
}

both_flavours!(the_sessions_lease_is_renewed_while_the_session_lives);
async fn the_sessions_lease_is_renewed_while_the_session_lives(
    flavour: ShadowFlavour,
) -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let f = Box::pin(Fixture::start_with("kt-heartbeat", flavour, 1, |o| {
        o.heartbeat_interval(std::time::Duration::from_secs(1))
    }))
    .await?;
    let pod = f.session.pod_name().to_owned();
    let read = || async {
        let value =
            f.ns.kubectl(&["get", "lease", &pod, "-o", "jsonpath={.spec.renewTime}"])
                .await?;
        value
            .parse::<k8s_openapi::jiff::Timestamp>()
            .map_err(|e| anyhow::anyhow!("renewTime `{value}`: {e}"))
    };
    let first = read().await?;
    kt_lab_tests::wait_until(
        "the Lease's renewTime to advance",
        kt_lab_tests::WAIT,
        || async {
            let now = read().await?;
            Ok(if now > first {
                kt_lab_tests::Poll::Done(())
            } else {
                kt_lab_tests::Poll::NotYet(format!("still {now:?}"))
            })
        },
    )
    .await?;
    f.finish().await
}
