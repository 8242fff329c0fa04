//! A swap survives real failures of the path it rides on: the node agent restarts,
//! then the API server restarts. Each time the port-forward to the swap shadow dies;
//! the swap reconnects (its shadow keeps listening, the client asks for its ports
//! again) and pods keep reaching the local process; close still restores exactly.
//!
//! This binary restarts lab components with `testbed/restart`, so it holds one test
//! only (cargo runs test binaries one after another).

mod common;

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use common::{Fixture, Shipped};
use kt_core::{PortMap, ShadowFlavour};
use kt_lab_tests::TestNamespace;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// A TCP server on 127.0.0.1 answering each connection's first bytes with `laptop:`
/// and those bytes.
async fn local_tagger() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf).await {
                    let _ = s.write_all(b"laptop:").await;
                    let _ = s.write_all(&buf[..n]).await;
                }
            });
        }
    });
    Ok(port)
}

/// From a pod: connects to `echo:9000`, sends `word`, expects `laptop:word`; retried
/// for up to 60 s while the lab settles after a restart.
async fn reaches_laptop(ns: &TestNamespace, pod: &str, word: &str) -> Result<()> {
    let script = format!(
        "exec 3<>/dev/tcp/echo/9000 && printf '{word}' >&3 && timeout 10 head -c {} <&3",
        word.len() + 7
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = ns.exec_output(pod, &["bash", "-c", &script]).await?;
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        if got == format!("laptop:{word}") {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "echo:9000 from {pod} never answered from the laptop: {got:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_serves_again_after_the_node_agent_and_the_api_server_restart() -> Result<()> {
    let f = Fixture::start_as(
        "kt-swap-restart",
        ShadowFlavour::KtShadow,
        1,
        Shipped::Inbound,
        |o| o,
    )
    .await?;
    let client = f.echo.pods[0].clone();
    let before =
        f.ns.kubectl(&["get", "service/echo", "-o", "jsonpath={.spec}"])
            .await?;
    let port = local_tagger().await?;
    let swap = f
        .session
        .swap(
            "svc/echo",
            &PortMap::parse_list([format!("{port}:tcp").as_str()])?,
        )
        .await?;
    reaches_laptop(&f.ns, &client, "before").await?;
    let mut events = swap.events();
    while events.try_next().is_some() {}

    common::restart("node")?;
    common::reconnected(&mut events, "the node agent restarted").await?;
    reaches_laptop(&f.ns, &client, "after-node").await?;

    common::restart("kube-apiserver")?;
    common::reconnected(&mut events, "the API server restarted").await?;
    reaches_laptop(&f.ns, &client, "after-apiserver").await?;

    swap.close().await?;
    let after =
        f.ns.kubectl(&["get", "service/echo", "-o", "jsonpath={.spec}"])
            .await?;
    ensure!(
        after == before,
        "Service spec after close: {after}\nbefore: {before}"
    );
    f.finish().await
}
