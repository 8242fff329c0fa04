//! Each way connecting can fail gives its own error, saying what to do, and leaves
//! nothing behind in the cluster.

mod common;

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use common::{options, scoped_kubeconfig};
use kt_core::{ConnectOptions, Error, ErrorKind, Event, Session, ShadowFlavour};
use kt_lab_tests::Lab;

/// Connecting without the Role bound is refused with the verb, the resource and the
/// Role to apply; nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_permissions_name_the_verb_the_resource_and_the_shipped_role() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kt-rbac").await?;
    let kubeconfig = scoped_kubeconfig(&ns, false).await?;
    let opts = options(ShadowFlavour::OpenSsh, ns.name(), &kubeconfig)?;
    let res = Session::connect(opts).await;
    let _ = std::fs::remove_file(&kubeconfig);
    match res {
        Err(e @ Error::Forbidden { .. }) => {
            ensure!(e.kind() == ErrorKind::Forbidden, "kind {}", e.kind());
            let msg = e.to_string();
            for part in [
                "create secrets",
                ns.name(),
                "kubectl apply -n",
                "kt-core/rbac/connect.yaml",
                "--role=kt-connect",
            ] {
                ensure!(msg.contains(part), "`{part}` missing from: {msg}");
            }
        }
        other => bail!("expected Forbidden, got {other:?}"),
    }
    common::nothing_of_kt_left(&ns, "pods,secrets").await?;
    Ok(())
}

/// A namespace where the shipped Role file was not applied has no ServiceAccount
/// `kt-shadow`: connecting with the kt-shadow flavour fails saying which file to apply,
/// and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_shadow_service_account_says_to_apply_the_role_file() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kt-no-sa").await?;
    common::restrict_for(&ns, ShadowFlavour::KtShadow).await?;
    let kubeconfig = scoped_kubeconfig(&ns, true).await?;
    ns.kubectl(&["delete", "serviceaccount", "kt-shadow"])
        .await?;
    let opts = options(ShadowFlavour::KtShadow, ns.name(), &kubeconfig)?;
    let res = Session::connect(opts).await;
    let _ = std::fs::remove_file(&kubeconfig);
    match res {
        Err(e @ Error::ShadowServiceAccount { .. }) => {
            ensure!(e.kind() == ErrorKind::Forbidden, "kind {}", e.kind());
            let msg = e.to_string();
            for part in [
                "ServiceAccount `kt-shadow` does not exist",
                &format!(
                    "kubectl apply -n {} -f kt-core/rbac/connect.yaml",
                    ns.name()
                ),
                "kt-core/rbac/vpn.yaml",
            ] {
                ensure!(msg.contains(part), "`{part}` missing from: {msg}");
            }
        }
        other => bail!("expected ShadowServiceAccount, got {other:?}"),
    }
    common::nothing_of_kt_left(&ns, "pods,secrets,leases").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_is_named() -> Result<()> {
    let lab = Lab::connect().await?;
    let opts = ConnectOptions::new()
        .kubeconfig(lab.kubeconfig())
        .namespace("kt-no-such-namespace")
        .flavour(ShadowFlavour::OpenSsh)
        .shadow_image(kt_lab_tests::OPENSSH_IMAGE);
    match Session::connect(opts).await {
        Err(e @ Error::NamespaceNotFound { .. }) => {
            ensure!(e.kind() == ErrorKind::NotFound, "kind {}", e.kind());
            ensure!(e.to_string().contains("kt-no-such-namespace"), "{e}");
            Ok(())
        }
        other => bail!("expected NamespaceNotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_context_is_named() -> Result<()> {
    let lab = Lab::connect().await?;
    let opts = ConnectOptions::new()
        .kubeconfig(lab.kubeconfig())
        .context("no-such-context");
    match Session::connect(opts).await {
        Err(e @ Error::Kubeconfig { .. }) => {
            let msg = e.to_string();
            ensure!(msg.contains("no-such-context"), "{msg}");
            ensure!(msg.contains("kubectl config get-contexts"), "{msg}");
            Ok(())
        }
        other => bail!("expected a kubeconfig error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_named() -> Result<()> {
    let lab = Lab::connect().await?;
    // The lab's kubeconfig, pointed at a port where nothing listens.
    let text = std::fs::read_to_string(lab.kubeconfig())?;
    let server = kube::config::Kubeconfig::read_from(lab.kubeconfig())?
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_default();
    ensure!(!server.is_empty() && text.contains(&server));
    let dead = text.replace(&server, "https://127.0.0.1:1");
    let path = std::env::temp_dir().join(format!(
        "kt-core-unreachable-{}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(&path, dead)?;
    let opts = ConnectOptions::new()
        .kubeconfig(&path)
        .namespace("default")
        .flavour(ShadowFlavour::OpenSsh)
        .shadow_image(kt_lab_tests::OPENSSH_IMAGE);
    let res = tokio::time::timeout(Duration::from_secs(120), Session::connect(opts)).await;
    let _ = std::fs::remove_file(&path);
    match res {
        Ok(Err(e @ Error::ApiUnreachable { .. })) => {
            let msg = e.to_string();
            ensure!(msg.contains("https://127.0.0.1:1"), "{msg}");
            Ok(())
        }
        other => bail!("expected ApiUnreachable, got {other:?}"),
    }
}

/// A shadow image the node cannot pull: the error names the image and the kubelet's
/// reason, and the pod and Secret are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_image_that_cannot_be_pulled_is_named_with_the_reason() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kt-image").await?;
    let kubeconfig = scoped_kubeconfig(&ns, true).await?;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&seen);
    let opts = ConnectOptions::new()
        .kubeconfig(&kubeconfig)
        .namespace(ns.name())
        .flavour(ShadowFlavour::OpenSsh)
        .shadow_image("kt.invalid/no-such-image:1.0")
        .on_event(move |e| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.clone());
            }
        });
    let res = Session::connect(opts).await;
    let _ = std::fs::remove_file(&kubeconfig);
    match res {
        Err(e @ Error::ShadowImage { .. }) => {
            let msg = e.to_string();
            ensure!(msg.contains("kt.invalid/no-such-image:1.0"), "{msg}");
            ensure!(
                msg.contains("ErrImagePull") || msg.contains("ImagePullBackOff"),
                "{msg}"
            );
        }
        other => bail!("expected ShadowImage, got {other:?}"),
    }
    let events = seen.lock().map(|v| v.clone()).unwrap_or_default();
    ensure!(
        matches!(events.first(), Some(Event::Creating { .. })),
        "events: {events:?}"
    );
    ensure!(
        events.iter().any(|e| matches!(e, Event::Scheduled { .. })),
        "events: {events:?}"
    );
    common::nothing_of_kt_left(&ns, "pods,secrets").await?;
    Ok(())
}

/// A forward target that does not exist fails at `forward()`, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_to_a_missing_service_or_pod_names_it() -> Result<()> {
    let f = common::Fixture::start("kt-fwd-missing", ShadowFlavour::OpenSsh, 1).await?;
    let ns = f.ns.name().to_owned();
    match f.session.forward("svc/nope", 80).await {
        Err(Error::TargetNotFound {
            kind,
            name,
            namespace,
            ..
        }) => {
            ensure!(kind == "Service" && name == "nope" && namespace == ns);
        }
        other => bail!("expected TargetNotFound, got {other:?}"),
    }
    match f.session.forward("pod/nope", 80).await {
        Err(Error::TargetNotFound { kind: "pod", .. }) => {}
        other => bail!("expected TargetNotFound, got {other:?}"),
    }
    match f.session.forward("nope", 80).await {
        Err(Error::NameNotFound { .. }) => {}
        other => bail!("expected NameNotFound, got {other:?}"),
    }
    match f.session.forward("deploy/echo", 80).await {
        Err(Error::InvalidTarget { .. }) => {}
        other => bail!("expected InvalidTarget, got {other:?}"),
    }
    // pod/<name> works with the Role (pods get).
    let local = f
        .session
        .forward(&format!("pod/{}", f.echo.pods[0]), 9000)
        .await?;
    let back = common::echo_round_trip(
        tokio::net::TcpStream::connect(local).await?,
        b"pod".to_vec(),
    )
    .await?;
    ensure!(back == b"pod");
    f.finish().await
}
