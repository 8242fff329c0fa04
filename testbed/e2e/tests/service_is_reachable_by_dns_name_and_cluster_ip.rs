//! A Service of the echo app answers from inside a pod under every name a pod can
//! use (short, namespaced, fully qualified, ClusterIP), cluster DNS resolves it to
//! its ClusterIP, its TCP and UDP ports echo, and kube-proxy spreads connections
//! over both pods.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};
use kt_lab_tests::{EchoReply, Lab, TestNamespace};

/// One request from `pod` with curl; the echo reply it got.
async fn curl_echo(ns: &TestNamespace, pod: &str, url: &str) -> Result<EchoReply> {
    let body = ns
        .exec(pod, &["curl", "-sS", "--fail", "--max-time", "10", url])
        .await?;
    let replies = EchoReply::parse_all(&body)?;
    ensure!(
        replies.len() == 1,
        "GET {url} gave {} documents: {body}",
        replies.len()
    );
    Ok(replies.into_iter().next().expect("one reply"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_answers_by_name_namespace_fqdn_and_cluster_ip() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("svc-dns").await?;
    let echo = ns.deploy_echo(2).await?;
    let n = ns.name().to_owned();
    let client_pod = echo.pods[0].clone();
    let pods: BTreeSet<String> = echo.pods.iter().cloned().collect();

    let fqdn = format!("echo.{n}.svc.cluster.local");
    // The name as seen by cluster DNS, checked first: everything below depends on it.
    let res = async {
        let out = ns.exec(&client_pod, &["getent", "hosts", &fqdn]).await?;
        let ip = out.split_whitespace().next().unwrap_or_default();
        ensure!(
            ip == echo.cluster_ip,
            "`getent hosts {fqdn}` in pod {client_pod} gave `{}`, expected ClusterIP {}",
            out.trim(),
            echo.cluster_ip
        );
        Ok(())
    }
    .await;
    ns.explain(res).await?;

    let urls = [
        "http://echo/by-name?x=1".to_owned(),
        format!("http://echo.{n}/by-namespace"),
        format!("http://{fqdn}/by-fqdn"),
        format!("http://{}/by-cluster-ip", echo.cluster_ip),
    ];
    for url in &urls {
        let res = async {
            let reply = curl_echo(&ns, &client_pod, url).await?;
            let want_path = url
                .split_once("//")
                .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                .unwrap_or("/");
            let want_path = want_path.split('?').next().unwrap_or(want_path);
            ensure!(
                reply.method == "GET",
                "GET {url}: method echoed as {}",
                reply.method
            );
            ensure!(
                reply.path == want_path,
                "GET {url}: path echoed as {}",
                reply.path
            );
            ensure!(
                pods.contains(&reply.pod),
                "GET {url}: answered by `{}`, not one of {pods:?}",
                reply.pod
            );
            ensure!(
                reply.namespace == n,
                "GET {url}: namespace echoed as {}",
                reply.namespace
            );
            Ok(())
        }
        .await;
        ns.explain(res).await?;
    }

    // The Service's other ports: TCP echo on 9000 and UDP echo on 9001, by name.
    let res = async {
        let tcp = format!(
            "exec 3<>/dev/tcp/{fqdn}/9000 && printf 'tcp-ping' >&3 && timeout 10 head -c 8 <&3"
        );
        let got = ns.exec(&client_pod, &["bash", "-c", &tcp]).await?;
        ensure!(got == "tcp-ping", "TCP echo via {fqdn}:9000 gave {got:?}");
        let udp = format!(
            "exec 3<>/dev/udp/{fqdn}/9001 && printf 'udp-ping' >&3 && timeout 10 head -c 8 <&3"
        );
        let got = ns.exec(&client_pod, &["bash", "-c", &udp]).await?;
        ensure!(got == "udp-ping", "UDP echo via {fqdn}:9001 gave {got:?}");
        Ok(())
    }
    .await;
    ns.explain(res).await?;

    // Load balancing: new connections, one curl each, reach both pods. Bounded: at
    // most 10 rounds of 20 requests (kube-proxy picks at random, so missing a pod
    // in 200 tries has odds of 2^-199).
    let script = "for i in $(seq 1 20); do curl -sS --fail --max-time 10 http://echo/lb || exit 1; echo; done";
    let mut seen = BTreeSet::new();
    let mut requests = 0;
    for _round in 0..10 {
        let res = async {
            let body = ns.exec(&client_pod, &["sh", "-c", script]).await?;
            EchoReply::parse_all(&body)
        }
        .await;
        for reply in ns.explain(res).await? {
            ensure!(reply.path == "/lb", "path echoed as {}", reply.path);
            requests += 1;
            seen.insert(reply.pod);
        }
        if seen == pods {
            break;
        }
    }
    eprintln!("{requests} requests to http://echo reached {seen:?}");
    ensure!(
        seen == pods,
        "{requests} requests to http://echo were answered by {seen:?} only; the pods are {pods:?}"
    );
    Ok(())
}
