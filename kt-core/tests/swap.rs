//! Swap and expose end to end, in a namespace enforcing the restricted Pod Security
//! Standard, as a ServiceAccount bound to the shipped Roles only (`vpn.yaml` and
//! `inbound.yaml`): a pod in the cluster calls the Service (by name and by ClusterIP)
//! and gets the answer of a process on this machine (a token only it knows); after
//! close the Service and the workload equal a snapshot taken before, no kt object is
//! left, and the original pods serve again.

mod common;

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use common::{Fixture, Shipped};
use kt_core::{ErrorKind, Event, ExposeOptions, PortMap, ShadowFlavour, SwapMode, SwapOptions};
use kt_lab_tests::TestNamespace;
use serde_json::Value;

/// Every kind of object kt may create for a swap or an expose.
const KT_KINDS: &str = "pods,services,leases,serviceaccounts,roles,rolebindings,secrets";

fn token() -> String {
    format!("laptop-token-{}", kt_lab_tests::unique_name("t"))
}

/// `curl` from `pod`; the body, or the failure.
async fn curl_from(ns: &TestNamespace, pod: &str, url: &str) -> Result<String> {
    let out = ns
        .exec_output(pod, &["curl", "-sS", "--fail", "--max-time", "10", url])
        .await?;
    ensure!(
        out.status.success(),
        "curl {url} from {pod}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits (bounded) until `url` answers `want` from `pod` (kube-proxy applies a new
/// selector asynchronously, as in any cluster).
async fn wait_answer(ns: &TestNamespace, pod: &str, url: &str, want: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = curl_from(ns, pod, url).await;
        match &got {
            Ok(body) if body.contains(want) => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                bail!("{url} from {pod} never answered {want:?}; last: {got:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

async fn fixture(test: &str) -> Result<Fixture> {
    // `start_as` makes the namespace restricted (kt-shadow flavour) before deploying.
    let f = Fixture::start_as(test, ShadowFlavour::KtShadow, 1, Shipped::Inbound, |o| o).await?;
    let labels =
        f.ns.kubectl(&[
            "get",
            "namespace",
            f.ns.name(),
            "-o",
            "jsonpath={.metadata.labels}",
        ])
        .await?;
    ensure!(
        labels.contains("restricted"),
        "namespace must enforce restricted: {labels}"
    );
    Ok(f)
}

fn saw(events: &[Event], pred: impl Fn(&Event) -> bool) -> bool {
    events.iter().any(pred)
}

async fn drain(mut events: kt_core::Events) -> Vec<Event> {
    let mut all = Vec::new();
    while let Some(e) = events.next().await {
        all.push(e);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selector_swap_of_a_deployment_reaches_the_local_process_and_restores_exactly() -> Result<()>
{
    let f = fixture("kt-swap-sel").await?;
    let client = f.ns.client_pod().await?;
    let svc_before = common::snapshot(&f.ns, "service/echo").await?;
    let deploy_before = common::snapshot(&f.ns, "deployment/echo").await?;
    let token = token();
    let local = kt_lab_tests::token_server(token.clone()).await?;

    let ports = PortMap::parse_list([format!("{local}:80").as_str()])?;
    let swap = f.session.swap("deploy/echo", &ports).await?;
    ensure!(swap.mode() == SwapMode::Selector);
    ensure!(
        swap.services() == ["echo".to_owned()],
        "{:?}",
        swap.services()
    );
    ensure!(swap.ports() == [(local, 8080)], "{:?}", swap.ports());
    let cluster_ip = f.echo.cluster_ip.clone();
    wait_answer(&f.ns, &client, "http://echo/hello", &token).await?;
    let by_ip = curl_from(&f.ns, &client, &format!("http://{cluster_ip}/hello")).await?;
    ensure!(by_ip == token, "by ClusterIP: {by_ip:?}");
    ensure!(
        swap.connections() >= 2,
        "{} connections",
        swap.connections()
    );

    // While it is swapped, the Service records who holds it and what to put back.
    let held = f.ns.kubectl(&["get", "service/echo", "-o", "json"]).await?;
    let held: Value = serde_json::from_str(&held)?;
    ensure!(
        held["metadata"]["annotations"]["kt.dev/owner"] == swap.id(),
        "{held}"
    );
    ensure!(
        held["spec"]["selector"]["kt.dev/swap"] == swap.id(),
        "{held}"
    );

    // A second swap of the same target is refused, naming the holder.
    let second = f.session.swap("svc/echo", &ports).await;
    match second {
        Err(e) if e.kind() == ErrorKind::Conflict => {
            let msg = e.to_string();
            ensure!(msg.contains(swap.id()) && msg.contains("since"), "{msg}");
        }
        Err(e) => bail!("second swap: {e}"),
        Ok(_) => bail!("a second swap of a held Service was accepted"),
    }

    // Nor in the other mode, by any name of the target.
    for target in ["deploy/echo", "echo"] {
        let scale = SwapOptions::new().mode(SwapMode::Scale);
        match f.session.swap_with(target, &ports, scale).await {
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            other => bail!("a scale swap of {target} while it is swapped: {other:?}"),
        }
    }
    // clean leaves a live swap alone and says so; recover refuses it.
    let opts = common::options(ShadowFlavour::KtShadow, f.ns.name(), &f.kubeconfig)?;
    let report = kt_core::clean(&opts, true).await?;
    ensure!(report.actions.is_empty(), "{report}");
    ensure!(
        report.left.iter().any(|l| l.contains(swap.id())),
        "{report}"
    );
    match kt_core::recover(&opts, "deploy/echo", false).await {
        Err(e) if e.kind() == ErrorKind::Conflict => {}
        other => bail!("recover of a live swap: {other:?}"),
    }

    let events = swap.events();
    swap.close().await?;
    let events = drain(events).await;
    ensure!(
        saw(&events, |e| matches!(e, Event::SelectorSwitched { .. })),
        "{events:?}"
    );
    ensure!(
        saw(&events, |e| matches!(e, Event::Inbound { .. })),
        "{events:?}"
    );
    ensure!(
        saw(&events, |e| matches!(e, Event::Restored { .. })),
        "{events:?}"
    );

    ensure!(
        common::snapshot(&f.ns, "service/echo").await? == svc_before,
        "Service changed"
    );
    ensure!(
        common::snapshot(&f.ns, "deployment/echo").await? == deploy_before,
        "Deployment changed"
    );
    common::nothing_of_kt_left_but(&f.ns, KT_KINDS, f.session.id()).await?;
    let reply = curl_from(&f.ns, &client, "http://echo/hello").await?;
    ensure!(
        reply.contains(&f.echo.pods[0]),
        "originals do not serve: {reply}"
    );
    f.finish().await
}

/// A StatefulSet and its Service (the echo app, run by a StatefulSet).
async fn deploy_echo_sts(ns: &TestNamespace) -> Result<()> {
    let manifest = kt_lab_tests::echo_manifest(2)
        .replace("kind: Deployment", "kind: StatefulSet")
        .replace(
            "name: echo\n  labels:\n    app: echo\nspec:\n  replicas",
            "name: db\n  labels:\n    app: db\nspec:\n  serviceName: db\n  replicas",
        )
        .replace("app: echo", "app: db")
        .replace("name: echo\n", "name: db\n");
    ns.apply(&manifest).await?;
    ns.wait_ready_pods("app=db", 2, |_| true).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_swap_of_a_statefulset_reaches_the_local_process_and_restores_replicas() -> Result<()>
{
    let f = fixture("kt-swap-sts").await?;
    deploy_echo_sts(&f.ns).await?;
    let client = f.ns.client_pod().await?;
    let svc_before = common::snapshot(&f.ns, "service/db").await?;
    let sts_before = common::snapshot(&f.ns, "statefulset/db").await?;
    let token = token();
    let local = kt_lab_tests::token_server(token.clone()).await?;

    let ports = PortMap::parse_list([format!("{local}:http").as_str()])?;
    let opts = SwapOptions::new().mode(SwapMode::Scale);
    let swap = f.session.swap_with("sts/db", &ports, opts).await?;
    ensure!(swap.ports() == [(local, 8080)], "{:?}", swap.ports());
    let replicas =
        f.ns.kubectl(&["get", "statefulset/db", "-o", "jsonpath={.spec.replicas}"])
            .await?;
    ensure!(replicas.trim() == "0", "replicas while swapped: {replicas}");
    wait_answer(&f.ns, &client, "http://db/hello", &token).await?;

    let events = swap.events();
    swap.close().await?;
    let events = drain(events).await;
    ensure!(
        saw(&events, |e| matches!(
            e,
            Event::Scaled { from: 2, to: 0, .. }
        )),
        "{events:?}"
    );
    ensure!(
        common::snapshot(&f.ns, "service/db").await? == svc_before,
        "Service changed"
    );
    ensure!(
        common::snapshot(&f.ns, "statefulset/db").await? == sts_before,
        "StatefulSet changed"
    );
    // close() returned after the originals were ready again.
    let ready =
        f.ns.kubectl(&[
            "get",
            "statefulset/db",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .await?;
    ensure!(ready.trim() == "2", "ready replicas after close: {ready}");
    common::nothing_of_kt_left_but(&f.ns, KT_KINDS, f.session.id()).await?;
    // The EndpointSlices list the originals when close() returns; kube-proxy then
    // programs them on its own time (under load, a moment later).
    common::within(
        tokio::time::Instant::now(),
        Duration::from_secs(30),
        "the originals serve",
        || async {
            Ok(match curl_from(&f.ns, &client, "http://db/hello").await {
                Ok(reply) if reply.contains("db-") => None,
                Ok(reply) => Some(format!("originals do not serve: {reply}")),
                Err(e) => Some(format!("{e:#}")),
            })
        },
    )
    .await?;
    f.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expose_publishes_a_local_port_as_a_new_service() -> Result<()> {
    let f = fixture("kt-expose").await?;
    let client = f.ns.client_pod().await?;
    let token = token();
    let local = kt_lab_tests::token_server(token.clone()).await?;
    let ports = PortMap::parse_list([format!("{local}:80").as_str()])?;

    // An existing Service name is refused, and nothing is created.
    match f.session.expose("echo", &ports).await {
        Err(e) if e.kind() == ErrorKind::Conflict => {}
        other => bail!("exposing over an existing Service: {other:?}"),
    }
    common::nothing_of_kt_left_but(&f.ns, KT_KINDS, f.session.id()).await?;

    let expose = f
        .session
        .expose_with("preview", &ports, ExposeOptions::new())
        .await?;
    ensure!(expose.service() == "preview");
    wait_answer(&f.ns, &client, "http://preview/x", &token).await?;
    let fqdn = format!("http://preview.{}.svc.cluster.local/x", f.ns.name());
    ensure!(curl_from(&f.ns, &client, &fqdn).await? == token);
    ensure!(expose.connections() >= 2);
    expose.close().await?;
    let gone = f.ns.kubectl_output(&["get", "service/preview"]).await?;
    ensure!(!gone.status.success(), "Service preview still there");
    common::nothing_of_kt_left_but(&f.ns, KT_KINDS, f.session.id()).await?;
    f.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_changes_when_a_swap_is_refused_before_it_starts() -> Result<()> {
    let f = fixture("kt-swap-bad").await?;
    let before = common::snapshot(&f.ns, "service/echo").await?;
    let unused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let cases: Vec<(String, ErrorKind)> = vec![
        (format!("{unused}:80"), ErrorKind::Connect),
        ("8080:81".to_owned(), ErrorKind::InvalidArgument),
    ];
    for (port, kind) in cases {
        let ports = PortMap::parse_list([port.as_str()])?;
        match f.session.swap("deploy/echo", &ports).await {
            Err(e) if e.kind() == kind => eprintln!("refused as expected: {e}"),
            other => bail!("swap with {port}: {other:?}"),
        }
    }
    let ports = PortMap::parse_list(["8080"])?;
    match f.session.swap("deploy/nope", &ports).await {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        other => bail!("swap of a missing Deployment: {other:?}"),
    }
    match f
        .session
        .swap_with(
            "deploy/echo",
            &ports,
            SwapOptions::new().check_local(false).mode(SwapMode::Scale),
        )
        .await
    {
        Ok(swap) => swap.close().await?,
        Err(e) => bail!("swap without the local check: {e}"),
    }
    ensure!(
        common::snapshot(&f.ns, "service/echo").await? == before,
        "Service changed"
    );
    common::nothing_of_kt_left_but(&f.ns, KT_KINDS, f.session.id()).await?;
    f.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_swap_puts_the_cluster_back_in_the_background() -> Result<()> {
    let f = fixture("kt-swap-drop").await?;
    let before = common::snapshot(&f.ns, "service/echo").await?;
    let local = kt_lab_tests::token_server(token()).await?;
    let ports = PortMap::parse_list([format!("{local}:80").as_str()])?;
    let swap = f.session.swap("deploy/echo", &ports).await?;
    ensure!(
        common::snapshot(&f.ns, "service/echo").await? != before,
        "nothing was swapped"
    );
    drop(swap);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let restored = common::snapshot(&f.ns, "service/echo").await? == before;
        let left = common::nothing_of_kt_left_but(&f.ns, KT_KINDS, f.session.id()).await;
        if restored && left.is_ok() {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "60 s after the drop: restored {restored}, {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    f.finish().await
}
