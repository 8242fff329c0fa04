//! The session survives real failures of the path it rides on: the node agent
//! (which serves the kubelet's port-forward) restarts, then the API server
//! restarts. Each time the port-forward stream dies; the session must notice,
//! reconnect, and carry new requests.
//!
//! This binary restarts lab components with `testbed/restart`, so it holds one
//! test only: cargo runs test binaries one after another, so no other test sees
//! the restarts.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{Fixture, curl_echo};
use kt_core::ShadowFlavour;

/// `curl_echo` through the session's HTTP proxy, tried again for up to 60 s while the
/// cluster's own DNS settles: after an API server restart, CoreDNS's readiness follows
/// its API watch, and while it is not ready the `kube-dns` ClusterIP refuses
/// connections from every pod (seen as "cannot connect to 10.96.0.10:53 from the
/// shadow pod"). kt's tunnel is already back (a `Reconnected` event came); if it were
/// not, every try fails and so does the test.
async fn curl_through_settling_lab(proxy: &str, url: &str) -> Result<kt_lab_tests::EchoReply> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match curl_echo(&["--proxy", proxy], url).await {
            Ok(reply) => return Ok(reply),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("not yet ({e:#}); trying again in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.context(format!("{url} through {proxy}, for 60 s"))),
        }
    }
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

    common::restart("node")?;
    common::reconnected(&mut events, "the node agent restarted").await?;
    let reply = curl_through_settling_lab(&proxy, "http://echo/after-node").await?;
    ensure!(reply.path == "/after-node");

    common::restart("kube-apiserver")?;
    common::reconnected(&mut events, "the API server restarted").await?;
    let url = format!("http://echo.{}/after-apiserver", f.ns.name());
    let reply = curl_through_settling_lab(&proxy, &url).await?;
    ensure!(reply.path == "/after-apiserver");

    f.finish().await
}
