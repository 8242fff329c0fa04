//! `kubectl port-forward` to a pod and to a Service serves the echo app's HTTP on
//! 127.0.0.1, over the API server's port-forward path.

use anyhow::{Result, ensure};
use kt_lab_tests::{EchoReply, Lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_to_pod_and_service_serves_http_locally() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kubectl-pf").await?;
    let echo = ns.deploy_echo(2).await?;
    let pod = &echo.pods[0];

    // pod/<name> :8080 — kubectl picks a free local port.
    let mut pf = ns.kubectl_port_forward(&format!("pod/{pod}"), 8080).await?;
    for i in 0..3 {
        let path = format!("/pod-forward/{i}");
        let res = async {
            let reply = pf.http_get(&path).await?;
            ensure!(reply.status == 200, "GET {path}: status {}", reply.status);
            let echo_pod = reply
                .headers
                .get("x-echo-pod")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            ensure!(
                echo_pod == *pod,
                "GET {path}: X-Echo-Pod is `{echo_pod}`, expected `{pod}`"
            );
            let doc = EchoReply::from_json(reply.json()?)?;
            ensure!(
                doc.pod == *pod,
                "GET {path}: answered by {}, expected {pod}",
                doc.pod
            );
            ensure!(doc.path == path, "GET {path}: path echoed as {}", doc.path);
            ensure!(
                doc.namespace == ns.name(),
                "GET {path}: namespace echoed as {}",
                doc.namespace
            );
            Ok(())
        }
        .await;
        ns.explain(res).await?;
    }
    let health = pf.http_get("/healthz").await?;
    ensure!(
        health.status == 200 && health.body.as_ref() == b"ok",
        "GET /healthz through port-forward: status {} body {:?}",
        health.status,
        String::from_utf8_lossy(&health.body)
    );
    drop(pf);

    // svc/echo :80 — kubectl resolves the Service to one of its pods, port 8080.
    let mut pf = ns.kubectl_port_forward("svc/echo", 80).await?;
    let res = async {
        let reply = pf.http_get("/service-forward").await?;
        ensure!(
            reply.status == 200,
            "GET /service-forward: status {}",
            reply.status
        );
        let doc = EchoReply::from_json(reply.json()?)?;
        ensure!(
            echo.pods.contains(&doc.pod),
            "GET /service-forward answered by {}, not one of {:?}",
            doc.pod,
            echo.pods
        );
        ensure!(
            doc.path == "/service-forward",
            "path echoed as {}",
            doc.path
        );
        Ok(())
    }
    .await;
    ns.explain(res).await?;
    pf.check_running()?;
    Ok(())
}
