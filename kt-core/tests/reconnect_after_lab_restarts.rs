//! The session survives real failures of the path it rides on: the node agent
//! (which serves the kubelet's port-forward) restarts, then the API server
//! restarts. Each time the port-forward stream dies; the session must notice,
//! reconnect, and carry new requests.
//!
//! This binary restarts lab components with `testbed/restart`, so it holds one
//! test only: cargo runs test binaries one after another, so no other test sees
//! the restarts.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{Fixture, curl_echo};
use kt_core::{Event, Events, ShadowFlavour};

fn restart(component: &str) -> Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testbed/restart");
    let status = std::process::Command::new(&script)
        .arg(component)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        status.success(),
        "testbed/restart {component} failed: {status}"
    );
    Ok(())
}

/// Waits (bounded) for the next `Reconnected` event.
async fn reconnected(events: &mut Events, after: &str) -> Result<()> {
    let wait = async {
        while let Some(e) = events.next().await {
            match e {
                Event::Reconnected { .. } => return Ok(()),
                Event::TunnelLost { reason } => {
                    bail!("tunnel lost for good after {after}: {reason}")
                }
                _ => {}
            }
        }
        bail!("the event stream ended after {after}")
    };
    tokio::time::timeout(Duration::from_secs(150), wait)
        .await
        .with_context(|| format!("no Reconnected event within 150 s after {after}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_recovers_when_the_node_agent_and_then_the_api_server_restart() -> Result<()> {
    let f = Fixture::start("kt-restart", ShadowFlavour::KtShadow, 1).await?;
    let proxy = format!("http://{}", f.session.http_proxy_addr());
    let reply = curl_echo(&["--proxy", &proxy], "http://echo/before").await?;
    ensure!(reply.path == "/before");
    let mut events = f.session.events();
    // Skip what happened before now.
    while events.try_next().is_some() {}

    restart("node")?;
    reconnected(&mut events, "the node agent restarted").await?;
    let reply = curl_echo(&["--proxy", &proxy], "http://echo/after-node").await?;
    ensure!(reply.path == "/after-node");

    restart("kube-apiserver")?;
    reconnected(&mut events, "the API server restarted").await?;
    let reply = curl_echo(
        &["--proxy", &proxy],
        "http://echo.{ns}/after-apiserver"
            .replace("{ns}", f.ns.name())
            .as_str(),
    )
    .await?;
    ensure!(reply.path == "/after-apiserver");

    f.finish().await
}
