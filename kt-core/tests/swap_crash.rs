//! Crash safety with no manual step: a process swapping a workload is killed with
//! SIGKILL (no close, no Drop, no signal handler runs) and no kt process is left
//! running. Within the restore TTL plus 10 s, the swap shadow's watchdog has put the
//! cluster back exactly (selector mode and scale mode) and removed its own pod, Lease
//! and identity and the dead session's connect shadow: no kt object of that process is
//! left. A new swap of the same target then works and restores in turn.
//!
//! The swapping process is kt-core's `swap` example, built by the test.

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{Fixture, Shipped};
use kt_core::{PortMap, ShadowFlavour, SwapMode, SwapOptions};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// The restore TTL the killed process asks for.
const TTL: Duration = Duration::from_secs(5);

/// Starts the example swapping `target` in `mode`, waits for its `swapped` line, and
/// kills it with SIGKILL.
async fn swap_and_kill(f: &Fixture, target: &str, port: u16, mode: SwapMode) -> Result<()> {
    let mut child = tokio::process::Command::new(common::build_example("swap")?)
        .args([
            f.ns.name(),
            target,
            &format!("{port}:80"),
            mode.as_str(),
            &TTL.as_secs().to_string(),
        ])
        .env("KUBECONFIG", &f.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the swap example")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let swapped = tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await;
    match swapped {
        Ok(Ok(Some(line))) if line.starts_with("swapped ") => {}
        other => bail!("the swap example did not swap: {other:?}"),
    }
    child.start_kill()?;
    let status = child.wait().await?;
    ensure!(!status.success(), "killed, yet {status}");
    Ok(())
}

async fn a_killed_swap_is_restored_by_its_shadow(mode: SwapMode) -> Result<()> {
    let f = Fixture::start_as(
        &format!("kt-crash-{mode}"),
        ShadowFlavour::KtShadow,
        1,
        Shipped::Inbound,
        |o| o,
    )
    .await?;
    let svc = common::snapshot(&f.ns, "service/echo").await?;
    let deploy = common::snapshot(&f.ns, "deployment/echo").await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();

    swap_and_kill(&f, "deploy/echo", port, mode).await?;
    let killed = tokio::time::Instant::now();
    let changed = common::snapshot(&f.ns, "service/echo").await? != svc
        || common::snapshot(&f.ns, "deployment/echo").await? != deploy;
    ensure!(changed, "the killed swap had changed nothing");

    let session = f.session.id().to_owned();
    common::within(
        killed,
        TTL + Duration::from_secs(10),
        "restored and removed",
        || async {
            if common::snapshot(&f.ns, "service/echo").await? != svc {
                return Ok(Some("the Service differs from its snapshot".to_owned()));
            }
            if common::snapshot(&f.ns, "deployment/echo").await? != deploy {
                return Ok(Some("the Deployment differs from its snapshot".to_owned()));
            }
            let left = common::kt_objects_but(&f.ns, common::INBOUND_KINDS, &session).await?;
            Ok((!left.is_empty()).then(|| format!("left: {left}")))
        },
    )
    .await?;

    // The target is free again: a new swap takes it, and its restore holds in turn.
    let ports = PortMap::parse_list([format!("{port}:80").as_str()])?;
    let swap = f
        .session
        .swap_with("deploy/echo", &ports, SwapOptions::new().mode(mode))
        .await?;
    swap.close().await?;
    ensure!(
        common::snapshot(&f.ns, "service/echo").await? == svc,
        "Service after the second swap"
    );
    ensure!(
        common::snapshot(&f.ns, "deployment/echo").await? == deploy,
        "Deployment after the second swap"
    );
    drop(listener);
    f.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_selector_swap_is_restored_by_its_shadow() -> Result<()> {
    a_killed_swap_is_restored_by_its_shadow(SwapMode::Selector).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_scale_swap_is_restored_by_its_shadow() -> Result<()> {
    a_killed_swap_is_restored_by_its_shadow(SwapMode::Scale).await
}
