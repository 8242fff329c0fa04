//! kt-probe in the lab: two pods serve HTTP/1.1, h2c (prior knowledge and upgrade),
//! WebSocket and gRPC behind a
//! Service, and the client pod (uid 65532, restricted namespace) reaches each protocol by
//! the Service's name, with kt-probe's own clients and with curl. Every reply names a
//! pod of the Deployment, and the request's headers arrive as sent.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, ensure};
use kt_lab_tests::Lab;
use serde_json::Value;

fn names(lines: &[Value], field: &str) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| l[field].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn probe_answers_http1_h2c_upgrade_websocket_and_grpc_by_service_name() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.restricted_namespace("probe").await?;
    let web = ns.deploy_probe("web", 2, true).await?;
    let client = ns.client_pod().await?;
    let pods: BTreeSet<String> = web.pods.iter().cloned().collect();
    let bin = web.bin.clone();

    // HTTP/1.1, kept alive: the headers as sent, Host as written in the URL.
    let l = ns
        .probe(
            &client,
            &bin,
            &[
                "http",
                "--url",
                "http://web/hello",
                "-H",
                "X-Forwarded-For: 192.0.2.7",
                "--requests",
                "3",
                "--alternate-header",
                "version: v1,",
            ],
        )
        .await?;
    ensure!(l.len() == 3, "{l:?}");
    ensure!(
        names(&l, "name").is_subset(&pods),
        "{l:?} not from {pods:?}"
    );
    for v in &l {
        ensure!(v["version"] == "HTTP/1.1", "{v}");
        ensure!(v["body"]["headers"]["host"] == "web", "{v}");
        ensure!(
            v["body"]["headers"]["x-forwarded-for"] == "192.0.2.7",
            "{v}"
        );
        ensure!(v["body"]["headers"]["version"] == v["sent"], "{v}");
        // One kept-alive connection: kube-proxy sent it to one pod.
        ensure!(
            v["name"] == l[0]["name"] && v["body"]["peer"] == l[0]["body"]["peer"],
            "{l:?}"
        );
    }

    // h2c with prior knowledge, kt-probe's client and curl.
    let l = ns
        .probe(
            &client,
            &bin,
            &["http", "--url", "http://web/h2", "--h2c-prior-knowledge"],
        )
        .await?;
    ensure!(
        l[0]["version"] == "HTTP/2" && l[0]["body"]["version"] == "HTTP/2",
        "{l:?}"
    );
    ensure!(l[0]["body"]["headers"][":authority"] == "web", "{l:?}");
    ensure!(names(&l, "name").is_subset(&pods), "{l:?}");
    let out = ns
        .exec(
            &client,
            &[
                "curl",
                "-sS",
                "--fail",
                "--http2-prior-knowledge",
                "http://web/curl",
            ],
        )
        .await?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("curl: {out}"))?;
    ensure!(v["version"] == "HTTP/2", "{v}");
    ensure!(pods.contains(v["name"].as_str().unwrap_or_default()), "{v}");

    // HTTP/2 over the upgrade path (curl --http2): the upgrade request answered as
    // stream 1, in HTTP/2.
    let out = ns
        .exec(
            &client,
            &["curl", "-sS", "--fail", "--http2", "http://web/upgrade"],
        )
        .await?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("curl: {out}"))?;
    ensure!(v["version"] == "HTTP/2" && v["path"] == "/upgrade", "{v}");
    ensure!(pods.contains(v["name"].as_str().unwrap_or_default()), "{v}");

    // WebSocket.
    let l = ns
        .probe(
            &client,
            &bin,
            &["ws", "--url", "ws://web/ws", "--message", "hi"],
        )
        .await?;
    let name = l[0]["name"].as_str().unwrap_or_default();
    ensure!(pods.contains(name), "{l:?}");
    ensure!(l[0]["reply"] == format!("{name}:hi"), "{l:?}");

    // gRPC on the Service's grpc port: unary with metadata, and server streaming.
    let l = ns
        .probe(
            &client,
            &bin,
            &[
                "grpc",
                "--addr",
                "web:9090",
                "-H",
                "version: v2",
                "unary",
                "yo",
            ],
        )
        .await?;
    ensure!(
        l[0]["text"] == "yo" && l[0]["headers"]["version"] == "v2",
        "{l:?}"
    );
    ensure!(l[0]["headers"][":authority"] == "web:9090", "{l:?}");
    ensure!(names(&l, "name").is_subset(&pods), "{l:?}");
    let l = ns
        .probe(
            &client,
            &bin,
            &["grpc", "--addr", "web:9090", "stream", "4"],
        )
        .await?;
    ensure!(l.len() == 4, "{l:?}");
    ensure!(
        names(&l, "name").len() == 1 && names(&l, "name").is_subset(&pods),
        "{l:?}"
    );

    // The load generator, both kinds.
    for grpc in [false, true] {
        let mut args = vec![
            "load",
            "--url",
            "http://web/",
            "--requests",
            "50",
            "--warmup",
            "5",
        ];
        if grpc {
            args.push("--grpc");
        }
        let l = ns.probe(&client, &bin, &args).await?;
        ensure!(l[0]["requests"] == 50, "{l:?}");
        let answered: u64 = l[0]["names"]
            .as_object()
            .context("no names")?
            .iter()
            .filter(|(k, _)| pods.contains(k.as_str()))
            .filter_map(|(_, v)| v.as_u64())
            .sum();
        ensure!(answered == 50, "{l:?}");
    }
    Ok(())
}
