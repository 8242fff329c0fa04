//! Crash safety of a mesh with no manual step: two developers' processes mesh one
//! Service (kt-core's `mesh` example, built by the test) and are killed with SIGKILL.
//! Within the TTL plus 10 s of A's death, A's rule is gone (its mesh shadow removed
//! itself) while B is still routed; within the TTL plus 10 s of B's death, the Service
//! equals its snapshot (the router put it back by itself) and then no kt object of
//! either process is left.

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{Fixture, Shipped};
use kt_core::ShadowFlavour;
use kt_lab_tests::TestNamespace;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// The TTL the killed processes ask for.
const TTL: Duration = Duration::from_secs(5);

/// Starts the example meshing svc/web with `x-dev=<value>`, waits for its `meshed`
/// line; returns the process and its mesh id.
async fn mesh(f: &Fixture, value: &str, port: u16) -> Result<(tokio::process::Child, String)> {
    let mut child = tokio::process::Command::new(common::build_example("mesh")?)
        .args([
            f.ns.name(),
            "svc/web",
            &format!("{port}:80"),
            &format!("x-dev={value}"),
            &TTL.as_secs().to_string(),
        ])
        .env("KUBECONFIG", &f.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the mesh example")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let meshed = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await;
    let id = match meshed {
        Ok(Ok(Some(line))) if line.starts_with("meshed ") => line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned(),
        other => bail!("the mesh example did not mesh: {other:?}"),
    };
    Ok((child, id))
}

async fn kill(mut child: tokio::process::Child) -> Result<()> {
    child.start_kill()?;
    let status = child.wait().await?;
    ensure!(!status.success(), "killed, yet {status}");
    Ok(())
}

/// Who answers a request with `x-dev: value` (or none) from the client pod.
async fn who(
    ns: &TestNamespace,
    client: &str,
    bin: &std::path::Path,
    value: Option<&str>,
) -> Result<String> {
    let mut args = vec!["http", "--url", "http://web/"];
    let header = value.map(|v| format!("x-dev: {v}"));
    if let Some(h) = &header {
        args.extend(["-H", h.as_str()]);
    }
    let l = ns.probe(client, bin, &args).await?;
    Ok(l.first()
        .and_then(|v| v["name"].as_str())
        .unwrap_or("?")
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_developers_are_removed_and_the_last_one_restores_the_service() -> Result<()> {
    let f = Fixture::start_as(
        "kt-mesh-crash",
        ShadowFlavour::KtShadow,
        1,
        Shipped::Inbound,
        |o| o,
    )
    .await?;
    let web = f.ns.deploy_probe("web", 1, false).await?;
    let original = web.pods[0].clone();
    let client = f.ns.client_pod().await?;
    let bin = web.bin.clone();
    let snapshot = common::snapshot(&f.ns, "service/web").await?;
    let alice = common::LocalProbe::start(&bin, "alice").await?;
    let bob = common::LocalProbe::start(&bin, "bob").await?;

    let (a, a_id) = mesh(&f, "alice", alice.port).await?;
    let (b, _) = mesh(&f, "bob", bob.port).await?;
    ensure!(who(&f.ns, &client, &bin, Some("alice")).await? == "alice");
    ensure!(who(&f.ns, &client, &bin, Some("bob")).await? == "bob");

    kill(a).await?;
    let killed = tokio::time::Instant::now();
    common::within(
        killed,
        TTL + Duration::from_secs(10),
        "A's rule removed",
        || async {
            let pods =
                f.ns.kubectl(&[
                    "get",
                    "pods",
                    "-l",
                    &format!("kt.dev/session={a_id}"),
                    "-o",
                    "name",
                ])
                .await?;
            if !pods.trim().is_empty() {
                return Ok(Some(format!("A's mesh shadow is still there: {pods}")));
            }
            // Until the router's next list of the developers' shadows, it still routes
            // alice to her shadow, which is gone: a 502 then means "not yet".
            match who(&f.ns, &client, &bin, Some("alice")).await {
                Ok(answer) => {
                    Ok((answer != original).then(|| format!("x-dev: alice answered by {answer}")))
                }
                Err(e) => Ok(Some(format!("x-dev: alice failed: {e:#}"))),
            }
        },
    )
    .await?;
    ensure!(
        who(&f.ns, &client, &bin, Some("bob")).await? == "bob",
        "B is affected"
    );
    ensure!(who(&f.ns, &client, &bin, None).await? == original);

    kill(b).await?;
    let killed = tokio::time::Instant::now();
    common::within(
        killed,
        TTL + Duration::from_secs(10),
        "Service restored",
        || async {
            let now = common::snapshot(&f.ns, "service/web").await?;
            Ok((now != snapshot).then(|| format!("the Service is {now}")))
        },
    )
    .await?;
    let session = f.session.id().to_owned();
    common::within(
        killed,
        TTL + Duration::from_secs(30),
        "nothing of kt left",
        || async {
            let left = common::kt_objects_but(&f.ns, common::INBOUND_KINDS, &session).await?;
            Ok((!left.is_empty()).then(|| format!("left: {left}")))
        },
    )
    .await?;
    ensure!(who(&f.ns, &client, &bin, Some("bob")).await? == original);
    drop((alice, bob));
    f.finish().await
}
