//! A `ktctl connect` a test runs: started, waited for until it is connected, then
//! ended by a signal the way a person ends it (Ctrl-C is SIGINT).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How long connect may take before a test gives up (not a performance bound).
pub(crate) const CONNECT_WAIT: Duration = Duration::from_secs(150);

/// How long ktctl may take to exit after a signal before a test gives up.
const EXIT_WAIT: Duration = Duration::from_secs(90);

/// A running `ktctl connect`.
pub(crate) struct Ktctl {
    child: Child,
    /// Its stdout up to the ready line ("press Ctrl-C ...").
    pub(crate) summary: String,
    stderr: JoinHandle<String>,
}

impl Ktctl {
    /// Runs `cmd` (its stdout and stderr are taken here) and waits until it prints
    /// "press Ctrl-C"; if it exits first, or takes longer than [`CONNECT_WAIT`], it is
    /// killed and the error quotes what it printed.
    pub(crate) async fn spawn(mut cmd: Command) -> Result<Ktctl> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting ktctl")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut stderr = child.stderr.take().context("stderr")?;
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut lines = BufReader::new(stdout).lines();
        let mut summary = String::new();
        let ready = tokio::time::timeout(CONNECT_WAIT, async {
            while let Some(line) = lines.next_line().await? {
                summary.push_str(&line);
                summary.push('\n');
                if line.starts_with("press Ctrl-C") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        if !matches!(ready, Ok(Ok(true))) {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let err = stderr.await.unwrap_or_default();
            bail!("ktctl did not connect ({ready:?}):\nstdout:\n{summary}\nstderr:\n{err}");
        }
        Ok(Ktctl {
            child,
            summary,
            stderr,
        })
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> Result<i32> {
        let pid = self.child.id().context("ktctl already ended")?;
        i32::try_from(pid).context("pid")
    }

    /// Sends `signal` (a `kill -s` name: INT, TERM, KILL, ...) and waits for the exit;
    /// returns (exit code, stderr).
    pub(crate) async fn signal(mut self, signal: &str) -> Result<(Option<i32>, String)> {
        let pid = self.pid()?.to_string();
        let out = Command::new("kill")
            .args(["-s", signal, &pid])
            .output()
            .await?;
        ensure!(out.status.success(), "kill -s {signal} {pid}: {out:?}");
        let status = match tokio::time::timeout(EXIT_WAIT, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                let err = self.stderr.await.unwrap_or_default();
                bail!("ktctl did not exit within {EXIT_WAIT:?} of SIG{signal}; its stderr:\n{err}");
            }
        };
        let err = self.stderr.await.unwrap_or_default();
        Ok((status.code(), err))
    }
}

/// Checks that no pod of kt's is left in `ns` (ktctl ended and closed its session
/// cleanly).
#[allow(
    dead_code,
    reason = "not every test file that includes this module uses it"
)]
pub(crate) async fn no_kt_pods_left(ns: &kt_lab_tests::TestNamespace) -> Result<()> {
    let selector = "app.kubernetes.io/managed-by=kt";
    let pods = (ns.kubectl(&["get", "pods", "-l", selector, "-o", "name"]))
        .await
        .context("listing kt's pods")?;
    ensure!(pods.trim().is_empty(), "kt's pods are still there: {pods}");
    Ok(())
}
