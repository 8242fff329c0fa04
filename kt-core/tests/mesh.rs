//! Mesh end to end, in a namespace enforcing the restricted Pod Security Standard, as a
//! ServiceAccount bound to the shipped Roles only: two developers (two sessions, each
//! with a local kt-probe answering with its own name) mesh one Service with different
//! header values at once. From a pod in the cluster, real clients of every protocol the
//! router routes (HTTP/1.1 with keep-alive, h2c, gRPC unary and server-streaming,
//! WebSocket) reach A with A's value, B with B's and the original pods without one; a
//! kept-alive HTTP/1.1 connection alternating headers is routed per request. A second
//! mesh with A's value is refused. A leaves: B still works and the rest still reach the
//! originals. B leaves: the Service equals its snapshot and no kt object is left.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{Fixture, Shipped};
use kt_core::{ErrorKind, Event, MeshOptions, MeshRule, PortMap, Session, ShadowFlavour};
use kt_lab_tests::TestNamespace;
use serde_json::Value;

/// Every kind of object kt may create for a mesh.
const KT_KINDS: &str = "pods,services,leases,serviceaccounts,roles,rolebindings,secrets";

/// The `name` field of every reply.
fn names(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// What answers `args` (kt-probe client arguments) from the client pod, retried
/// (bounded) until `want` holds: kube-proxy applies a selector change asynchronously.
async fn answers(
    ns: &TestNamespace,
    client: &str,
    bin: &Path,
    args: &[&str],
    want: impl Fn(&[Value]) -> bool,
) -> Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = ns.probe(client, bin, args).await;
        match got {
            Ok(lines) if want(&lines) => return Ok(lines),
            other if tokio::time::Instant::now() >= deadline => {
                bail!("kt-probe {args:?} never answered as expected; last: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// One developer: a session of their own and their mesh.
async fn developer(
    f: &Fixture,
    value: &str,
    local: &common::LocalProbe,
) -> Result<(Session, kt_core::Mesh, Vec<Event>)> {
    let opts = common::options(ShadowFlavour::KtShadow, f.ns.name(), &f.kubeconfig)?;
    let session = Session::connect(opts).await?;
    let rule: MeshRule = format!("x-dev={value}").parse()?;
    let ports = PortMap::parse_list([format!("{}:80", local.port).as_str()])?;
    let mesh = session
        .mesh_with("svc/web", Some(rule), &ports, MeshOptions::new())
        .await?;
    let events = {
        let mut ev = mesh.events();
        let mut seen = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), ev.next()).await {
            seen.push(e);
        }
        seen
    };
    Ok((session, mesh, events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_developers_mesh_one_service_over_every_protocol() -> Result<()> {
    let f = Fixture::start_as(
        "kt-mesh",
        ShadowFlavour::KtShadow,
        1,
        Shipped::Inbound,
        |o| o,
    )
    .await?;
    let web = f.ns.deploy_probe("web", 2, true).await?;
    let originals: BTreeSet<String> = web.pods.iter().cloned().collect();
    let client = f.ns.client_pod().await?;
    let bin = web.bin.clone();
    let snapshot = common::snapshot(&f.ns, "service/web").await?;
    let alice = common::LocalProbe::start(&bin, "alice").await?;
    let bob = common::LocalProbe::start(&bin, "bob").await?;

    let (sa, ma, events_a) = developer(&f, "alice", &alice).await?;
    ensure!(ma.header() == Some(("x-dev", "alice")), "{:?}", ma.header());
    ensure!(
        events_a
            .iter()
            .any(|e| matches!(e, Event::SelectorSwitched { service, .. } if service == "web")),
        "the first developer switches the Service to the router: {events_a:?}"
    );
    ensure!(
        events_a.iter().any(|e| matches!(e, Event::Routed { .. })),
        "{events_a:?}"
    );
    let (sb, mb, events_b) = developer(&f, "bob", &bob).await?;
    ensure!(ma.router() == mb.router(), "one router per Service");
    ensure!(
        !events_b
            .iter()
            .any(|e| matches!(e, Event::SelectorSwitched { .. })),
        "the second developer joins the router: {events_b:?}"
    );

    let from_original = |l: &[Value]| names(l).iter().all(|n| originals.contains(n));
    let only = |who: &'static str| move |l: &[Value]| names(l).iter().all(|n| n == who);

    // HTTP/1.1: curl, each value and none.
    for (value, want) in [("alice", "alice"), ("bob", "bob")] {
        let out =
            f.ns.exec(
                &client,
                &[
                    "curl",
                    "-sS",
                    "--fail",
                    "-H",
                    &format!("x-dev: {value}"),
                    "http://web/curl",
                ],
            )
            .await?;
        let v: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
        ensure!(v["name"] == want, "curl with x-dev: {value}: {v}");
        // The Host header and the client's headers arrive unchanged; the router adds
        // X-Forwarded-For.
        ensure!(v["headers"]["host"] == "web", "{v}");
        ensure!(v["headers"]["x-dev"] == value, "{v}");
        ensure!(
            v["headers"]["x-forwarded-for"].as_str().is_some(),
            "no X-Forwarded-For: {v}"
        );
    }
    let l = answers(
        &f.ns,
        &client,
        &bin,
        &["http", "--url", "http://web/none"],
        from_original,
    )
    .await?;
    ensure!(from_original(&l), "{l:?}");

    // One kept-alive HTTP/1.1 connection alternating headers: routed per request.
    let l =
        f.ns.probe(
            &client,
            &bin,
            &[
                "http",
                "--url",
                "http://web/alternate",
                "--requests",
                "6",
                "--alternate-header",
                "x-dev: alice,bob,",
            ],
        )
        .await?;
    let got = names(&l);
    ensure!(got.len() == 6, "{l:?}");
    for (i, name) in got.iter().enumerate() {
        match i % 3 {
            0 => ensure!(name == "alice", "request {i}: {got:?}"),
            1 => ensure!(name == "bob", "request {i}: {got:?}"),
            _ => ensure!(originals.contains(name), "request {i}: {got:?}"),
        }
    }

    // h2c with prior knowledge.
    for (header, want) in [("x-dev: alice", "alice"), ("x-dev: bob", "bob")] {
        let l =
            f.ns.probe(
                &client,
                &bin,
                &[
                    "http",
                    "--url",
                    "http://web/h2",
                    "--h2c-prior-knowledge",
                    "-H",
                    header,
                ],
            )
            .await?;
        ensure!(l[0]["version"] == "HTTP/2" && l[0]["name"] == want, "{l:?}");
        ensure!(l[0]["body"]["headers"][":authority"] == "web", "{l:?}");
    }
    let l =
        f.ns.probe(
            &client,
            &bin,
            &["http", "--url", "http://web/h2", "--h2c-prior-knowledge"],
        )
        .await?;
    ensure!(from_original(&l), "h2c without a header: {l:?}");

    // gRPC, unary and server-streaming, by metadata.
    for (header, want) in [("x-dev: alice", "alice"), ("x-dev: bob", "bob")] {
        let l =
            f.ns.probe(
                &client,
                &bin,
                &["grpc", "--addr", "web:9090", "-H", header, "unary", "hi"],
            )
            .await?;
        ensure!(l[0]["name"] == want && l[0]["text"] == "hi", "{l:?}");
        let l =
            f.ns.probe(
                &client,
                &bin,
                &["grpc", "--addr", "web:9090", "-H", header, "stream", "5"],
            )
            .await?;
        ensure!(l.len() == 5 && only(want)(&l), "{l:?}");
    }
    let l =
        f.ns.probe(
            &client,
            &bin,
            &["grpc", "--addr", "web:9090", "stream", "3"],
        )
        .await?;
    ensure!(
        l.len() == 3 && from_original(&l),
        "gRPC without a header: {l:?}"
    );

    // WebSocket, routed by the upgrade request's header; echo both ways after it.
    for (header, want) in [("x-dev: alice", "alice"), ("x-dev: bob", "bob")] {
        let l =
            f.ns.probe(
                &client,
                &bin,
                &["ws", "--url", "ws://web/ws", "-H", header, "--message", "m"],
            )
            .await?;
        ensure!(
            l[0]["name"] == want && l[0]["reply"] == format!("{want}:m"),
            "{l:?}"
        );
    }

    // The same value again is refused, naming who has it; nothing changes.
    let again = sb
        .mesh(
            "svc/web",
            Some("x-dev=alice".parse()?),
            &PortMap::parse_list([format!("{}:80", bob.port).as_str()])?,
        )
        .await;
    match again {
        Err(e) => {
            ensure!(e.kind() == ErrorKind::Conflict, "{e}");
            ensure!(e.to_string().contains("x-dev: alice"), "{e}");
        }
        Ok(m) => {
            m.close().await?;
            bail!("a second mesh with x-dev=alice was accepted");
        }
    }

    // A leaves: B still works, the rest still reach the originals.
    ma.close().await?;
    answers(
        &f.ns,
        &client,
        &bin,
        &["http", "--url", "http://web/", "-H", "x-dev: bob"],
        only("bob"),
    )
    .await?;
    let l =
        f.ns.probe(
            &client,
            &bin,
            &["http", "--url", "http://web/", "-H", "x-dev: alice"],
        )
        .await?;
    ensure!(
        from_original(&l),
        "alice left, her header goes to the originals: {l:?}"
    );
    let l =
        f.ns.probe(
            &client,
            &bin,
            &[
                "grpc",
                "--addr",
                "web:9090",
                "-H",
                "x-dev: bob",
                "unary",
                "x",
            ],
        )
        .await?;
    ensure!(only("bob")(&l), "{l:?}");

    // B leaves: the Service is as it was, nothing of kt is left but the sessions.
    mb.close().await?;
    ensure!(
        common::snapshot(&f.ns, "service/web").await? == snapshot,
        "the Service differs from its snapshot after the last developer left"
    );
    let l =
        f.ns.probe(
            &client,
            &bin,
            &["http", "--url", "http://web/", "-H", "x-dev: bob"],
        )
        .await?;
    ensure!(from_original(&l), "{l:?}");
    let mine = format!(
        "app.kubernetes.io/managed-by=kt,kt.dev/session notin ({},{},{})",
        f.session.id(),
        sa.id(),
        sb.id()
    );
    let left =
        f.ns.kubectl(&["get", KT_KINDS, "-l", &mine, "-o", "name"])
            .await?;
    ensure!(left.trim().is_empty(), "left after the last close: {left}");
    sa.close().await?;
    sb.close().await?;
    drop((alice, bob));
    f.finish().await
}

/// The echo app's Service has a TCP echo (9000) and a UDP echo (9001) besides HTTP: while
/// meshed, requests with the header reach this machine, and the TCP and UDP echoes still
/// reach the original pods (the router relays them unrouted). Close puts the Service
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_meshed_service_keeps_its_other_tcp_and_udp_ports() -> Result<()> {
    let f = Fixture::start_as(
        "kt-mesh-udp",
        ShadowFlavour::KtShadow,
        1,
        Shipped::Inbound,
        |o| o,
    )
    .await?;
    let client = f.ns.client_pod().await?;
    let bin = kt_lab_tests::probe_bin()?;
    let snapshot = common::snapshot(&f.ns, "service/echo").await?;
    let local = common::LocalProbe::start(&bin, "laptop").await?;
    let ports = PortMap::parse_list([format!("{}:80", local.port).as_str()])?;
    let mesh = f.session.mesh("echo", None, &ports).await?;
    let (name, value) = mesh.header().context("the default rule has a header")?;
    ensure!(name == "version" && !value.is_empty(), "{name}: {value}");
    let header = format!("{name}: {value}");
    // kube-proxy applies the switch to the router asynchronously, as any Service change:
    // retried, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out =
            f.ns.exec(
                &client,
                &["curl", "-sS", "--fail", "-H", &header, "http://echo/"],
            )
            .await?;
        if out.contains("\"name\":\"laptop\"") {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "with the mark: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out =
        f.ns.exec(&client, &["curl", "-sS", "--fail", "http://echo/"])
            .await?;
    ensure!(!out.contains("laptop"), "without the mark: {out}");
    let program = "import socket,sys\n\
        u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.settimeout(5)\n\
        u.sendto(b'datagram',('echo',9001));print(u.recvfrom(100)[0].decode())\n\
        t=socket.create_connection(('echo',9000),timeout=5);t.sendall(b'stream')\n\
        t.shutdown(socket.SHUT_WR);print(t.recv(100).decode())";
    let out = f.ns.exec(&client, &["python3.11", "-c", program]).await?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(
        lines == ["datagram", "stream"],
        "UDP and TCP echo through the router: {out}"
    );
    mesh.close().await?;
    ensure!(
        common::snapshot(&f.ns, "service/echo").await? == snapshot,
        "the Service differs from its snapshot"
    );
    common::nothing_of_kt_left_but(&f.ns, KT_KINDS, f.session.id()).await?;
    drop(local);
    f.finish().await
}

/// Two developers mesh the same Service at the same moment: both make it (one router,
/// which the other joins when its create is refused), both are routed, and after both
/// leave the Service equals its snapshot and nothing of kt is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_developers_starting_at_once_share_one_router() -> Result<()> {
    let f = Fixture::start_as(
        "kt-mesh-race",
        ShadowFlavour::KtShadow,
        1,
        Shipped::Inbound,
        |o| o,
    )
    .await?;
    let web = f.ns.deploy_probe("web", 1, false).await?;
    let client = f.ns.client_pod().await?;
    let bin = web.bin.clone();
    let snapshot = common::snapshot(&f.ns, "service/web").await?;
    let alice = common::LocalProbe::start(&bin, "alice").await?;
    let bob = common::LocalProbe::start(&bin, "bob").await?;
    let (a, b) = tokio::join!(developer(&f, "alice", &alice), developer(&f, "bob", &bob));
    let ((sa, ma, _), (sb, mb, _)) = (a?, b?);
    ensure!(ma.router() == mb.router(), "one router per Service");
    for who in ["alice", "bob"] {
        let header = format!("x-dev: {who}");
        let args = ["http", "--url", "http://web/", "-H", header.as_str()];
        answers(&f.ns, &client, &bin, &args, |l: &[Value]| names(l) == [who]).await?;
    }
    let (ca, cb) = tokio::join!(ma.close(), mb.close());
    ca?;
    cb?;
    ensure!(
        common::snapshot(&f.ns, "service/web").await? == snapshot,
        "the Service differs from its snapshot after both left at once"
    );
    let mine = format!(
        "app.kubernetes.io/managed-by=kt,kt.dev/session notin ({},{},{})",
        f.session.id(),
        sa.id(),
        sb.id()
    );
    let left =
        f.ns.kubectl(&["get", KT_KINDS, "-l", &mine, "-o", "name"])
            .await?;
    ensure!(left.trim().is_empty(), "left after both closed: {left}");
    sa.close().await?;
    sb.close().await?;
    drop((alice, bob));
    f.finish().await
}
