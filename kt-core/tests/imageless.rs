//! The imageless shadow against the lab: with default options and nothing in the
//! lab's image table for kt-shadow's name used, kt ships its agent into a fresh
//! namespace as content-hashed ConfigMaps (once), runs it on an image the node already
//! has, refuses tampered parts, and `clean` removes parts no pod uses. Every namespace
//! here enforces the restricted Pod Security Standard and the user has only the
//! shipped Roles.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, bail, ensure};
use common::{Shipped, options, restrict_for, scoped_kubeconfig_for};
use kt_core::{ConnectOptions, Error, Event, MeshRule, PortMap, Session, ShadowFlavour};
use kt_lab_tests::{Lab, TestNamespace};

/// The label selector of the agent's parts.
const PARTS: &str = "app.kubernetes.io/managed-by=kt,kt.dev/role=agent-part";

/// The agent's parts in `ns`: name → UID.
async fn parts(ns: &TestNamespace) -> Result<BTreeMap<String, String>> {
    let out = ns
        .kubectl(&[
            "get",
            "configmaps",
            "-l",
            PARTS,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid}{\"\\n\"}{end}",
        ])
        .await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, u)| (n.to_owned(), u.to_owned()))
        .collect())
}

/// `opts` recording every event.
fn recording(opts: ConnectOptions) -> (ConnectOptions, Arc<Mutex<Vec<Event>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let opts = opts.on_event(move |e| {
        eprintln!("kt: {e}");
        if let Ok(mut v) = sink.lock() {
            v.push(e.clone());
        }
    });
    (opts, seen)
}

fn uploads(seen: &Mutex<Vec<Event>>) -> Vec<(u32, u32)> {
    seen.lock()
        .map(|v| {
            v.iter()
                .filter_map(|e| match e {
                    Event::Uploading { parts, bytes, .. } => Some((*parts, *bytes)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The pod `name` as JSON.
async fn pod(ns: &TestNamespace, name: &str) -> Result<serde_json::Value> {
    let json = ns.kubectl(&["get", "pod", name, "-o", "json"]).await?;
    Ok(serde_json::from_str(&json)?)
}

/// The shadow container's image, and the node its affinity pins it to (if any).
fn image_and_node(pod: &serde_json::Value) -> (String, Option<String>) {
    let image = pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let node = pod["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"]
        [0]["values"][0]
        .as_str()
        .map(str::to_owned);
    (image, node)
}

/// Checks that the pod runs the shipped agent through its loader, from ConfigMaps, on
/// `image`.
fn runs_the_shipped_agent(pod: &serde_json::Value, image: &str) -> Result<()> {
    let container = &pod["spec"]["containers"][0];
    ensure!(container["image"] == image, "image {}", container["image"]);
    ensure!(
        container["command"] == serde_json::json!(["/kt/agent/kt-loader"]),
        "command {}",
        container["command"]
    );
    // A shadow's readiness probe runs the shipped binary (the mesh router has none).
    let probe = &container["readinessProbe"];
    ensure!(
        probe.is_null() || probe["exec"]["command"][0] == "/kt/run/kt-shadow",
        "probe {probe}"
    );
    let text = pod.to_string();
    ensure!(
        !text.contains("kt.invalid/kt-shadow"),
        "kt-shadow's image in {text}"
    );
    let volumes = pod["spec"]["volumes"].to_string();
    ensure!(volumes.contains("kt-part-"), "no part mounted: {volumes}");
    ensure!(
        container["securityContext"]["readOnlyRootFilesystem"] == true,
        "{container}"
    );
    Ok(())
}

/// A namespace enforcing the restricted profile with a user bound to `shipped`.
async fn namespace(
    lab: &Lab,
    test: &str,
    shipped: Shipped,
) -> Result<(TestNamespace, std::path::PathBuf)> {
    let ns = lab.namespace(test).await?;
    restrict_for(&ns, ShadowFlavour::KtShadow).await?;
    let kubeconfig = scoped_kubeconfig_for(&ns, shipped, true).await?;
    Ok((ns, kubeconfig))
}

/// Binds the test user also to the Roles `clean` needs (`kt-vpn` and `kt-inbound`: it
/// lists Services and workloads), as a user who cleans up would be.
async fn grant_clean(ns: &TestNamespace) -> Result<()> {
    ns.apply(include_str!("../rbac/vpn.yaml")).await?;
    ns.apply(include_str!("../rbac/inbound.yaml")).await?;
    let sa = format!("--serviceaccount={}:{}", ns.name(), common::TEST_USER);
    for role in ["kt-vpn", "kt-inbound"] {
        let binding = format!("{role}-clean");
        let role = format!("--role={role}");
        ns.kubectl(&["create", "rolebinding", &binding, &role, &sa])
            .await?;
    }
    Ok(())
}

/// The shipped agent's volume (`kt-agent`: the loader and the parts) of a pod.
fn agent_volume(pod: &serde_json::Value) -> serde_json::Value {
    (pod["spec"]["volumes"].as_array().into_iter().flatten())
        .find(|v| v["name"] == "kt-agent")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_options_ship_the_agent_once_and_later_sessions_reuse_it() -> Result<()> {
    let lab = Lab::connect().await?;
    let (ns, kubeconfig) = namespace(&lab, "kt-imageless", Shipped::Connect).await?;
    ensure!(parts(&ns).await?.is_empty(), "a fresh namespace has parts");
    let base = options(ShadowFlavour::KtShadow, ns.name(), &kubeconfig)?;
    ensure!(
        base.image().is_none(),
        "an image is set: {:?}",
        base.image()
    );

    // First session: nothing runs in the namespace, so the shadow runs on the fallback
    // base image, the kubelet's sandbox image, with nothing else in it.
    let (opts, seen) = recording(base.clone());
    let first = ns
        .explain(Session::connect(opts).await.map_err(anyhow::Error::from))
        .await?;
    let uploaded = uploads(&seen);
    ensure!(uploaded.len() == 1, "uploading events: {uploaded:?}");
    let shipped = parts(&ns).await?;
    ensure!(
        shipped.len() == uploaded[0].0 as usize && shipped.len() >= 2,
        "parts {shipped:?}, uploaded {uploaded:?}"
    );
    let first_pod = pod(&ns, first.pod_name()).await?;
    runs_the_shipped_agent(&first_pod, kt_core::DEFAULT_BASE_IMAGE)?;
    // The session works: a name resolved and a Service dialled through the shadow.
    let ips = first.resolve("kubernetes.default").await?;
    ensure!(!ips.is_empty(), "kubernetes.default did not resolve");
    let local = first.forward("kubernetes.default", 443).await?;
    tokio::net::TcpStream::connect(local)
        .await
        .context("the API server's Service through the shadow")?;

    // Second session: every part is there, nothing is uploaded, no ConfigMap is new.
    let (opts, seen) = recording(base.clone());
    let second = ns
        .explain(Session::connect(opts).await.map_err(anyhow::Error::from))
        .await?;
    ensure!(
        uploads(&seen).is_empty(),
        "uploaded again: {:?}",
        uploads(&seen)
    );
    ensure!(parts(&ns).await? == shipped, "the parts changed");
    let second_pod = pod(&ns, second.pod_name()).await?;
    ensure!(
        !agent_volume(&first_pod).is_null()
            && agent_volume(&first_pod) == agent_volume(&second_pod),
        "the sessions mount different parts: {} and {}",
        agent_volume(&first_pod),
        agent_volume(&second_pod)
    );
    // Parts in use are kept by clean.
    grant_clean(&ns).await?;
    let dry = kt_core::clean(&base, true).await?;
    ensure!(
        !dry.actions.iter().any(|a| a.contains("kt-part-")),
        "clean would delete parts in use: {dry}"
    );
    first.close().await?;
    second.close().await?;

    // With the echo app running, the shadow borrows its image and node.
    let echo = ns.deploy_echo(1).await?;
    let echo_pod = ns.ready_pods("app=echo").await?;
    let echo_node = echo_pod[0].spec.as_ref().and_then(|s| s.node_name.clone());
    let (opts, seen) = recording(base.clone());
    let third = ns
        .explain(Session::connect(opts).await.map_err(anyhow::Error::from))
        .await?;
    ensure!(uploads(&seen).is_empty(), "uploaded again");
    let third_pod = pod(&ns, third.pod_name()).await?;
    runs_the_shipped_agent(&third_pod, "kt.invalid/echo")?;
    let (_, node) = image_and_node(&third_pod);
    ensure!(
        node == echo_node,
        "placed on {node:?}, echo on {echo_node:?}"
    );
    let reply = common::curl_echo(
        &["--proxy", &third.http_proxy_url()],
        &format!("http://echo.{}/hello", ns.name()),
    )
    .await?;
    ensure!(echo.pods.contains(&reply.pod), "reply from {}", reply.pod);
    third.close().await?;

    // No pod uses the parts any more: clean removes them, and only them.
    let report = kt_core::clean(&base, false).await?;
    let deleted: Vec<&String> = (report.actions.iter())
        .filter(|a| a.contains("kt-part-"))
        .collect();
    ensure!(deleted.len() == shipped.len(), "clean: {report}");
    ensure!(parts(&ns).await?.is_empty(), "parts left after clean");
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}

/// Replaces ConfigMap `name` by one with the same name and labels but `bytes`.
async fn replace_part(ns: &TestNamespace, name: &str, bytes: &[u8]) -> Result<()> {
    ns.kubectl(&["delete", "configmap", name, "--wait=true"])
        .await?;
    let file = std::env::temp_dir().join(format!("{}-{name}", ns.name()));
    std::fs::write(&file, bytes)?;
    ns.kubectl(&[
        "create",
        "configmap",
        name,
        &format!("--from-file=part={}", file.display()),
    ])
    .await?;
    let _ = std::fs::remove_file(&file);
    ns.kubectl(&[
        "label",
        "configmap",
        name,
        "app.kubernetes.io/managed-by=kt",
        "kt.dev/role=agent-part",
    ])
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tampered_part_is_refused_with_a_clear_error_and_never_run() -> Result<()> {
    let lab = Lab::connect().await?;
    let (ns, kubeconfig) = namespace(&lab, "kt-tamper", Shipped::Connect).await?;
    let base = options(ShadowFlavour::KtShadow, ns.name(), &kubeconfig)?;
    let session = ns
        .explain(
            Session::connect(base.clone())
                .await
                .map_err(anyhow::Error::from),
        )
        .await?;
    session.close().await?;
    let of = |part: &str| {
        let ns = &ns;
        let part = part.to_owned();
        async move {
            ns.kubectl(&[
                "get",
                "configmaps",
                "-l",
                &format!("{PARTS},kt.dev/part-of={part}"),
                "-o",
                "name",
            ])
            .await
            .map(|o| {
                o.lines()
                    .map(|l| l.trim_start_matches("configmap/").to_owned())
                    .collect::<Vec<_>>()
            })
        }
    };
    let shadow_parts = of("kt-shadow").await?;
    let loader = of("kt-loader").await?;
    ensure!(
        shadow_parts.len() >= 2 && loader.len() == 1,
        "{shadow_parts:?} {loader:?}"
    );

    // A part of kt-shadow replaced: the loader in the pod refuses it before running it.
    let victim = &shadow_parts[1];
    replace_part(&ns, victim, b"#!/bin/sh\necho this must never run\n").await?;
    match Session::connect(base.clone()).await {
        Err(e @ Error::AgentTampered { .. }) => {
            let msg = e.to_string();
            ensure!(e.kind() == kt_core::ErrorKind::Shadow, "kind {}", e.kind());
            ensure!(msg.contains(victim.as_str()), "{msg}");
            ensure!(msg.contains("refused"), "{msg}");
            ensure!(msg.contains("ktctl clean"), "{msg}");
        }
        Ok(_) => bail!("a session ran with a tampered part"),
        Err(other) => bail!("expected AgentTampered, got {other}"),
    }
    common::nothing_of_kt_left(&ns, "pods,leases").await?;

    // The loader replaced: refused before any pod is made.
    replace_part(&ns, &loader[0], b"\x7fELF not the loader").await?;
    let (opts, seen) = recording(base.clone());
    match Session::connect(opts).await {
        Err(e @ Error::AgentTampered { .. }) => {
            ensure!(e.to_string().contains(loader[0].as_str()), "{e}");
        }
        Ok(_) => bail!("a session ran with a tampered loader"),
        Err(other) => bail!("expected AgentTampered, got {other}"),
    }
    let created = seen
        .lock()
        .map(|v| v.iter().any(|e| matches!(e, Event::Creating { .. })))
        .unwrap_or(true);
    ensure!(!created, "a pod was created with a tampered loader");
    common::nothing_of_kt_left(&ns, "pods,leases").await?;

    // clean removes what no pod uses, the tampered parts too; kt then uploads again.
    grant_clean(&ns).await?;
    kt_core::clean(&base, false).await?;
    ensure!(parts(&ns).await?.is_empty(), "parts left after clean");
    let (opts, seen) = recording(base);
    let again = ns
        .explain(Session::connect(opts).await.map_err(anyhow::Error::from))
        .await?;
    ensure!(uploads(&seen).len() == 1, "not uploaded again");
    again.close().await?;
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}

/// The directory of the agent kt-core embedded (`KT_AGENT_EMBED`, set by the lab's env).
fn embedded_agent_dir() -> Result<std::path::PathBuf> {
    kt_lab_tests::lab_env("KT_AGENT_EMBED")
        .map(Into::into)
        .context("KT_AGENT_EMBED is not set (nor in /run/ktlab/env): run testbed/up")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_for_another_architecture_is_refused_naming_the_image_option() -> Result<()> {
    let lab = Lab::connect().await?;
    let (ns, kubeconfig) = namespace(&lab, "kt-arch", Shipped::Connect).await?;
    // The lab's agent, marked as an aarch64 build (ELF e_machine 183): the lab's node
    // is amd64, like a cluster of arm64 nodes is to kt's amd64 agent.
    let from = embedded_agent_dir()?;
    let dir = std::env::temp_dir().join(format!("kt-arch-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // A kt-loader in the directory replaces the built-in one; both must be alike.
    let files = [
        ("kt-shadow", std::fs::read(from.join("kt-shadow"))?),
        ("kt-loader", kt_loader::BINARY.to_vec()),
    ];
    for (file, mut elf) in files {
        elf[18..20].copy_from_slice(&183u16.to_le_bytes());
        std::fs::write(dir.join(file), elf)?;
    }
    let opts = options(ShadowFlavour::KtShadow, ns.name(), &kubeconfig)?.agent_dir(&dir);
    let res = Session::connect(opts.clone()).await;
    let _ = std::fs::remove_dir_all(&dir);
    match res {
        Err(e @ Error::ShadowUnschedulable { .. }) => {
            let msg = e.to_string();
            ensure!(e.kind() == kt_core::ErrorKind::Shadow, "kind {}", e.kind());
            ensure!(msg.contains("arm64"), "{msg}");
            ensure!(msg.contains("--image"), "{msg}");
        }
        Ok(_) => bail!("an arm64 agent was scheduled on the lab's amd64 node"),
        Err(other) => bail!("expected ShadowUnschedulable, got {other}"),
    }
    common::nothing_of_kt_left(&ns, "pods,leases").await?;
    grant_clean(&ns).await?;
    kt_core::clean(&opts, false).await?;
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swap_and_mesh_shadows_run_on_the_targets_image_and_node() -> Result<()> {
    let lab = Lab::connect().await?;
    let (ns, kubeconfig) = namespace(&lab, "kt-imageless-in", Shipped::Inbound).await?;
    // A pod older than the target: a connect shadow borrows its image (the oldest
    // pod's), while swap's and mesh's shadows must prefer their target's.
    let client = ns.client_pod().await?;
    let echo = ns.deploy_echo(1).await?;
    let pods = ns.ready_pods("app=echo").await?;
    let echo_node = pods[0].spec.as_ref().and_then(|s| s.node_name.clone());
    // An image's probe binary does not apply to the shipped agent (its path is kt's).
    let opts = options(ShadowFlavour::KtShadow, ns.name(), &kubeconfig)?
        .shadow_probe_binary("/not/in/any/image");
    let session = ns
        .explain(Session::connect(opts).await.map_err(anyhow::Error::from))
        .await?;
    let connect_pod = pod(&ns, session.pod_name()).await?;
    runs_the_shipped_agent(&connect_pod, "kt.invalid/shell")?;
    let local = kt_lab_tests::token_server("imageless".to_owned()).await?;
    let ports = PortMap::parse_list([format!("{local}:80").as_str()])?;

    let swap = session.swap("deploy/echo", &ports).await?;
    let swap_pod = pod(&ns, swap.pod_name()).await?;
    runs_the_shipped_agent(&swap_pod, "kt.invalid/echo")?;
    ensure!(
        !swap_pod["spec"]["containers"][0]["readinessProbe"].is_null(),
        "the swap shadow has no readiness probe"
    );
    ensure!(
        image_and_node(&swap_pod).1 == echo_node,
        "swap shadow's node"
    );
    swap.close().await?;

    let rule: MeshRule = "x-dev=imageless".parse()?;
    let mesh = session.mesh("svc/echo", Some(rule), &ports).await?;
    for name in [mesh.pod_name().to_owned(), mesh.router().to_owned()] {
        let p = pod(&ns, &name).await?;
        runs_the_shipped_agent(&p, "kt.invalid/echo").with_context(|| name.clone())?;
        ensure!(image_and_node(&p).1 == echo_node, "{name}'s node");
    }
    let routed = ns
        .exec(
            &client,
            &[
                "curl",
                "-sS",
                "-H",
                "x-dev: imageless",
                &format!("http://echo.{}/", ns.name()),
            ],
        )
        .await?;
    ensure!(routed.contains("imageless"), "routed reply: {routed}");
    mesh.close().await?;
    session.close().await?;
    let _ = echo;
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_image_still_works_and_ships_nothing() -> Result<()> {
    let lab = Lab::connect().await?;
    let (ns, kubeconfig) = namespace(&lab, "kt-explicit", Shipped::Connect).await?;
    kt_lab_tests::kt_shadow_bin()?;
    let opts = options(ShadowFlavour::KtShadow, ns.name(), &kubeconfig)?
        .shadow_image(kt_lab_tests::KT_SHADOW_IMAGE)
        .shadow_probe_binary("kt-shadow");
    let session = ns
        .explain(Session::connect(opts).await.map_err(anyhow::Error::from))
        .await?;
    let p = pod(&ns, session.pod_name()).await?;
    ensure!(image_and_node(&p).0 == kt_lab_tests::KT_SHADOW_IMAGE, "{p}");
    ensure!(p["spec"]["containers"][0]["command"].is_null(), "{p}");
    ensure!(parts(&ns).await?.is_empty(), "parts shipped with an image");
    session.close().await?;
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}
