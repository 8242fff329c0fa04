//! After `close()`, nothing kt made is left anywhere in the cluster:
//! `kubectl get all,secrets,configmaps -A -l app.kubernetes.io/managed-by=kt` is empty.
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
    // While the session lives: a pod, labelled; for the OpenSSH shadow also a Secret,
    // owned by the pod. The kt-shadow flavour makes no Secret at all.
    let live = f
        .lab
        .kubectl(&[
            "get",
            "pods,secrets",
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
    let expected = if flavour == ShadowFlavour::OpenSsh {
        vec![format!("pod/{pod}"), format!("secret/{pod}")]
    } else {
        vec![format!("pod/{pod}")]
    };
    ensure!(names == expected, "objects of the live session: {names:?}");
    if flavour == ShadowFlavour::OpenSsh {
        let owner =
            f.ns.kubectl(&[
                "get",
                "secret",
                &pod,
                "-o",
                "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
            ])
            .await?;
        ensure!(owner == format!("Pod/{pod}"), "secret owner: {owner}");
    }
    let heartbeat =
        f.ns.kubectl(&[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.metadata.annotations.kt\\.dev/heartbeat}",
        ])
        .await?;
    ensure!(
        kt_proto::annotations::parse_heartbeat(&heartbeat).is_ok(),
        "heartbeat `{heartbeat}`"
    );

    let mut events = f.session.events();
    f.session.close().await?;
    let everything = f
        .lab
        .kubectl(&[
            "get",
            "all,secrets,configmaps",
            "-A",
            "-l",
            "app.kubernetes.io/managed-by=kt",
            "-o",
            "name",
        ])
        .await?;
    ensure!(
        everything.trim().is_empty(),
        "left after close(): {everything}"
    );
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

both_flavours!(the_heartbeat_annotation_is_refreshed_while_the_session_lives);
async fn the_heartbeat_annotation_is_refreshed_while_the_session_lives(
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
            f.ns.kubectl(&[
                "get",
                "pod",
                &pod,
                "-o",
                "jsonpath={.metadata.annotations.kt\\.dev/heartbeat}",
            ])
            .await?;
        kt_proto::annotations::parse_heartbeat(&value).map_err(anyhow::Error::from)
    };
    let first = read().await?;
    kt_lab_tests::wait_until(
        "the heartbeat annotation to advance",
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
