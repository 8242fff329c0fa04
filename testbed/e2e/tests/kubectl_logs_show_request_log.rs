//! `kubectl logs` shows the echo app's access log: a request made to a pod shows
//! up as a log line of that pod.

use anyhow::Result;
use kt_lab_tests::{Lab, Poll, WAIT, unique_name, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_show_the_request_just_made() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("logs").await?;
    let echo = ns.deploy_echo(1).await?;
    let pod = &echo.pods[0];
    let path = format!("/{}", unique_name("log-probe"));
    let url = format!("http://127.0.0.1:8080{path}");

    let res = ns
        .exec(pod, &["curl", "-sS", "--fail", "--max-time", "10", &url])
        .await;
    ns.explain(res).await?;

    // The app writes the line when the request ends; the node agent's log file may
    // lag a little behind, so poll (bounded).
    let res = wait_until(
        &format!("`kubectl logs {pod}` to show GET {path}"),
        WAIT,
        || async {
            let logs = ns.kubectl(&["logs", pod]).await?;
            let line = logs.lines().find(|l| l.contains(&path)).map(str::to_owned);
            Ok(match line {
                Some(l) if l.contains("GET") => Poll::Done(l),
                Some(l) => Poll::NotYet(format!("a line names the path but not GET: {l}")),
                None => Poll::NotYet(format!(
                    "no line with {path}; last lines:\n{}",
                    logs.lines().rev().take(10).collect::<Vec<_>>().join("\n")
                )),
            })
        },
    )
    .await;
    let line = ns.explain(res).await?;
    eprintln!("log line: {line}");

    // The same through the Deployment, as a user would ask.
    let logs = ns.kubectl(&["logs", "deployment/echo"]).await?;
    anyhow::ensure!(
        logs.contains(&path),
        "`kubectl logs deployment/echo` does not show {path}:\n{logs}"
    );
    Ok(())
}
