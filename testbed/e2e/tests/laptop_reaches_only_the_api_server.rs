//! The `ktlab-laptop` network namespace plays a developer laptop: it reaches the
//! API server at https://10.88.255.1:6443 and nothing inside the cluster — not a
//! pod IP, not a Service ClusterIP — while those do answer from inside the cluster.
//!
//! Every address used here exists only inside the lab's network namespaces; the
//! requests run in them (`ip netns exec`), never in the machine's root namespace.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kt_lab_tests::{Lab, host_command};

const LAPTOP_NS: &str = "ktlab-laptop";
const API_FROM_LAPTOP: &str = "https://10.88.255.1:6443";

/// curl in the laptop namespace; returns (exit code, stdout, stderr).
async fn laptop_curl(args: &[&str]) -> Result<(Option<i32>, String, String)> {
    let mut full = vec!["netns", "exec", LAPTOP_NS, "curl"];
    full.extend_from_slice(args);
    let out = host_command("ip", &full, Duration::from_secs(30)).await?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laptop_reaches_the_api_server_but_no_pod_or_service() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("laptop").await?;
    let echo = ns.deploy_echo(2).await?;
    let pod_ip = echo.pod_ips[0].clone();
    let cluster_ip = echo.cluster_ip.clone();

    // Positive controls from inside the cluster, so the refusals below mean isolation.
    let from = &echo.pods[1];
    for url in [
        format!("http://{pod_ip}:8080/healthz"),
        format!("http://{cluster_ip}/healthz"),
    ] {
        let res = ns
            .exec(
                from,
                &[
                    "curl",
                    "-sS",
                    "--fail",
                    "--connect-timeout",
                    "2",
                    "--max-time",
                    "10",
                    &url,
                ],
            )
            .await;
        let body = ns.explain(res).await?;
        ensure!(body == "ok", "GET {url} from pod {from} said {body:?}");
    }

    // The API server answers the laptop.
    let url = format!("{API_FROM_LAPTOP}/version");
    let (code, body, err) = laptop_curl(&[
        "-sk",
        "--connect-timeout",
        "2",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        &url,
    ])
    .await?;
    ensure!(
        code == Some(0),
        "the laptop cannot reach the API server at {url}: curl exit {code:?}, stderr {err:?} (is the lab up? does {LAPTOP_NS} exist?)"
    );
    let (doc, status) = body.rsplit_once('\n').unwrap_or((body.as_str(), ""));
    let version: serde_json::Value = serde_json::from_str(doc)
        .with_context(|| format!("GET {url} from the laptop: HTTP {status}, not JSON: {doc}"))?;
    ensure!(
        status == "200" && version["major"] == "1" && version["minor"] == "34",
        "GET {url} from the laptop: HTTP {status}, body {doc}"
    );

    // Nothing else does.
    for url in [
        format!("http://{pod_ip}:8080/healthz"),
        format!("http://{cluster_ip}:80/healthz"),
    ] {
        let (code, body, err) =
            laptop_curl(&["-sS", "--connect-timeout", "2", "--max-time", "5", &url]).await?;
        // 7: could not connect (refused/unreachable), 28: timed out.
        ensure!(
            matches!(code, Some(7) | Some(28)),
            "the laptop reached {url} (or curl failed oddly): exit {code:?}, body {body:?}, stderr {err:?}"
        );
    }
    Ok(())
}
