//! A Deployment replaces a deleted pod: the pod goes away, a new one (new name)
//! becomes Ready, and the Deployment is Available again.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kt_lab_tests::Lab;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_is_replaced_by_a_new_pod() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("replace").await?;
    let echo = ns.deploy_echo(2).await?;
    let before: BTreeSet<String> = echo.pods.iter().cloned().collect();
    let victim = echo.pods[0].clone();
    let survivor = echo.pods[1].clone();

    ns.delete_pod(&victim).await?;

    let after = ns
        .wait_ready_pods("app=echo", 2, |names| {
            !names.contains(&victim) && names.iter().any(|n| !before.contains(n))
        })
        .await?;
    let names: BTreeSet<String> = after.iter().map(kt_lab_tests::pod_name).collect();
    ensure!(
        names.contains(&survivor),
        "the pod that was not deleted ({survivor}) is gone too: now {names:?}"
    );
    ns.wait_deployment_available("echo", 2).await?;

    let gone = ns.api::<Pod>().get_opt(&victim).await?;
    ensure!(gone.is_none(), "deleted pod {victim} is back: {gone:?}");

    // The replacement serves: its readiness probe passed, and it answers itself.
    let new_pod = names
        .iter()
        .find(|n| !before.contains(*n))
        .expect("checked by the wait above");
    let res = ns
        .exec(
            new_pod,
            &[
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "10",
                "http://127.0.0.1:8080/healthz",
            ],
        )
        .await;
    let body = ns.explain(res).await?;
    ensure!(body == "ok", "new pod {new_pod} /healthz said {body:?}");
    Ok(())
}
