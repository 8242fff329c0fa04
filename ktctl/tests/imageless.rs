//! The imageless shadow from a terminal: without `--image`, ktctl ships kt's agent into
//! the namespace (ConfigMaps, uploaded once) and runs it on an image the node already
//! has. `--agent-dir` naming a directory without the agent is refused with the
//! invalid-argument status before anything is made; a default `ktctl connect` in a
//! fresh namespace prints the upload as progress, and the next one does not upload.
//!
//! Needs the lab (`testbed/up`); fails when it is down.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kt_lab_tests::{Lab, TestNamespace};
use tokio::process::Command;

mod common;
use common::Ktctl;

/// Everything of kt's in the namespace (kt labels every object it makes).
async fn kt_objects(ns: &TestNamespace) -> Result<String> {
    let out = ns
        .kubectl(&[
            "get",
            "pods,secrets,configmaps,services,leases",
            "-l",
            "app.kubernetes.io/managed-by=kt",
            "-o",
            "name",
        ])
        .await?;
    Ok(out.trim().to_owned())
}

/// `ktctl connect` against `ns` with the lab's admin kubeconfig, plus `extra`.
fn connect(lab: &Lab, ns: &TestNamespace, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ktctl"));
    cmd.arg("connect")
        .arg("--kubeconfig")
        .arg(lab.kubeconfig())
        .args(["-n", ns.name()])
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Connects with default options, then Ctrl-C; returns ktctl's stderr.
async fn connect_and_stop(lab: &Lab, ns: &TestNamespace) -> Result<String> {
    let kt = Ktctl::spawn(connect(lab, ns, &[])).await?;
    // The session works: the echo app answers through the HTTP proxy it printed.
    let proxy = (kt.summary.lines())
        .find_map(|l| l.trim().strip_prefix("for a shell: export "))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|p| p.strip_prefix("HTTP_PROXY="))
        })
        .map(str::to_owned)
        .with_context(|| format!("no HTTP_PROXY in:\n{}", kt.summary))?;
    let url = format!("http://echo.{}/imageless", ns.name());
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "--max-time",
            "30",
            "--proxy",
            &proxy,
            &url,
        ])
        .output()
        .await
        .context("running curl")?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("/imageless"),
        "curl {url} through {proxy}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, err) = kt.signal("INT").await?;
    ensure!(code == Some(0), "ktctl exit {code:?}:\n{err}");
    Ok(err)
}

#[tokio::test]
async fn a_missing_agent_is_refused_and_a_default_connect_shows_the_upload_once() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("ktctl-imageless").await?;
    ns.deploy_echo(1).await?;

    // (a) --agent-dir without the agent: exit status 65 (invalid_argument), the
    // missing file named, nothing made.
    let empty = tempdir("ktctl-no-agent")?;
    let mut cmd = connect(&lab, &ns, &["--agent-dir"]);
    cmd.arg(&empty);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .context("ktctl connect --agent-dir did not end")?
        .context("running ktctl")?;
    let _ = std::fs::remove_dir_all(&empty);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(65),
        "exit {:?}:\n{err}",
        out.status
    );
    ensure!(err.contains("error[invalid_argument]"), "{err}");
    let file = empty.join("kt-shadow");
    ensure!(err.contains(&file.display().to_string()), "{err}");
    ensure!(err.contains("build-static"), "{err}");
    let left = kt_objects(&ns).await?;
    ensure!(left.is_empty(), "a refused connect made objects:\n{left}");

    // (b) A default connect in this fresh namespace uploads the agent and says so; the
    // next one reuses it.
    let first = connect_and_stop(&lab, &ns).await?;
    let uploading = format!("ktctl: uploading kt's agent to namespace {}", ns.name());
    ensure!(
        first.matches(&uploading).count() == 1,
        "no upload shown:\n{first}"
    );
    let second = connect_and_stop(&lab, &ns).await?;
    ensure!(
        !second.contains("uploading"),
        "the second connect uploaded again:\n{second}"
    );
    common::no_kt_pods_left(&ns).await
}

/// A new empty directory under the system's temporary directory.
fn tempdir(prefix: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    ));
    std::fs::create_dir(&dir).with_context(|| format!("making {}", dir.display()))?;
    Ok(dir)
}
