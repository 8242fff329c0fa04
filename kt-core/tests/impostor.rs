//! A namespace peer recreates the shadow pod under the same name, as a copy of the
//! original (same image, same arguments) and, for the OpenSSH flavour, with a copy of
//! its Secret, so holding the pinned host key: the session must refuse it (it
//! reconnects by name), fail with a clear error, and never log in. The kt-shadow
//! flavour has no Secret to copy: the pod holds no private key, and its host key lives
//! only in the original pod's memory, so a copy reports another one.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::Fixture;
use kt_core::{Error, Event, ShadowFlavour};
use russh::keys::PublicKey;
use serde_json::Value;

/// What the session's errors and events say when the shadow pod is not its own.
const REPLACED: &str = "was replaced";

/// Bound on waiting for the session to react (a hang guard, not a timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(300);

/// `object` (a pod or Secret read with `kubectl get -o json`) as a fresh object to
/// create: only its name, labels and annotations kept from the metadata, no status.
fn fresh(object: &str) -> Result<Value> {
    let mut v: Value = serde_json::from_str(object).context("kubectl gave no JSON")?;
    let old = v["metadata"].take();
    let mut meta = serde_json::Map::new();
    for key in ["name", "labels", "annotations"] {
        if let Some(value) = old.get(key) {
            meta.insert(key.to_owned(), value.clone());
        }
    }
    v["metadata"] = Value::Object(meta);
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    Ok(v)
}

both_flavours!(a_shadow_recreated_under_the_same_name_is_refused);
async fn a_shadow_recreated_under_the_same_name_is_refused(flavour: ShadowFlavour) -> Result<()> {
    let f = Fixture::start("kt-impostor", flavour, 1).await?;
    let name = f.session.pod_name().to_owned();
    f.session
        .resolve("echo")
        .await
        .context("resolve before the swap")?;

    // What a peer who can read the pod (and its Secret) copies.
    let pod_json = f.ns.kubectl(&["get", "pod", &name, "-o", "json"]).await?;
    let pod = fresh(&pod_json)?;
    let secrets =
        f.ns.kubectl(&[
            "get",
            "secrets",
            "-l",
            &format!("kt.dev/session={}", f.session.id()),
            "-o",
            "name",
        ])
        .await?;
    let (secret, original_key) = if flavour == ShadowFlavour::OpenSsh {
        let secret =
            f.ns.kubectl(&["get", "secret", &name, "-o", "json"])
                .await?;
        (Some(fresh(&secret)?), None)
    } else {
        // Nothing to copy but the pod, which holds no private key: the client's public
        // key is its argument, and the host key never left the shadow.
        ensure!(
            secrets.trim().is_empty(),
            "the kt-shadow session made Secrets: {secrets}"
        );
        ensure!(
            !pod_json.contains("PRIVATE KEY") && !pod_json.contains("\"secret\""),
            "the kt-shadow pod carries a private key or a Secret: {pod_json}"
        );
        (None, Some(reported_host_key(&f.ns, &name).await?))
    };
    let original_uid =
        f.ns.kubectl(&["get", "pod", &name, "-o", "jsonpath={.metadata.uid}"])
            .await?;

    // The swap. The OpenSSH shadow's Secret belongs to the pod (garbage-collected with
    // it), so it is recreated from the copy, without the owner reference.
    f.ns.kubectl(&[
        "delete",
        "pod",
        &name,
        "--grace-period=0",
        "--force",
        "--wait=true",
    ])
    .await?;
    if let Some(secret) = &secret {
        f.ns.kubectl(&[
            "delete",
            "secret",
            &name,
            "--ignore-not-found",
            "--wait=true",
        ])
        .await?;
        create(&f.ns, secret).await?;
    }
    create(&f.ns, &pod).await?;
    let impostor = f.ns.wait_pod_ready(&name).await?;
    let impostor_uid = impostor.metadata.uid.clone().unwrap_or_default();
    ensure!(
        impostor_uid != original_uid.trim(),
        "the recreated pod has the original UID {impostor_uid}"
    );
    if let Some(original_key) = &original_key {
        // Past the UID check, the impostor would still fail the handshake: made from the
        // same spec, it has a host key of its own, not the one the session pinned.
        let impostor_key = reported_host_key(&f.ns, &name).await?;
        ensure!(
            impostor_key.key_data() != original_key.key_data(),
            "the recreated kt-shadow reports the original host key {}",
            impostor_key.to_openssh().unwrap_or_default()
        );
    }

    // Whether the session already noticed the original going away or not, a drop now
    // makes it reconnect by name, which reaches the impostor.
    let mut events = f.session.events();
    f.session.simulate_tunnel_drop();
    let lost = tokio::time::timeout(HANG_GUARD, async {
        while let Some(e) = events.next().await {
            match e {
                Event::TunnelLost { reason } => return Ok(reason),
                Event::Reconnected { attempts } => {
                    bail!("the session reconnected (after {attempts} tries) to the impostor pod")
                }
                _ => {}
            }
        }
        bail!("the event stream ended without TunnelLost")
    })
    .await
    .context("neither TunnelLost nor Reconnected")??;
    ensure!(
        lost.contains(REPLACED),
        "TunnelLost does not say the pod was replaced: {lost}"
    );

    // Requests through the session fail and say why (`echo` itself may still be
    // answered from the DNS cache: no traffic).
    match f.session.remote_forward(0, "127.0.0.1:9".parse()?).await {
        Err(Error::TunnelDown { reason }) => ensure!(
            reason.contains(REPLACED),
            "TunnelDown does not say the pod was replaced: {reason}"
        ),
        other => bail!("a remote forward through the impostor: expected TunnelDown, got {other:?}"),
    }
    match f.session.resolve("kubernetes.default").await {
        Err(e) => ensure!(
            e.to_string().contains(REPLACED),
            "resolve does not say the pod was replaced: {e}"
        ),
        Ok(addrs) => bail!("resolved a new name through the impostor: {addrs:?}"),
    }

    // No SSH login reached the impostor (both servers log every successful one).
    let log = f.ns.kubectl(&["logs", &name]).await?;
    let (started, logged_in) = if flavour == ShadowFlavour::OpenSsh {
        ("Server listening on", "Accepted publickey")
    } else {
        ("kt-shadow listening", "client authenticated")
    };
    ensure!(
        log.contains(started),
        "the impostor's log does not show its start (log level?): {log}"
    );
    ensure!(
        !log.contains(logged_in),
        "a client logged in to the impostor: {log}"
    );

    // Clean up what the session can still remove (the impostor carries its labels).
    let _ = f.session.close().await;
    Ok(())
}

/// The host key the kt-shadow pod `name` reports on its log.
async fn reported_host_key(ns: &kt_lab_tests::TestNamespace, name: &str) -> Result<PublicKey> {
    let log = ns.kubectl(&["logs", name]).await?;
    let key = kt_proto::shadow::reported_host_key(&log)
        .with_context(|| format!("no host-key line in the log of {name}: {log}"))?;
    PublicKey::from_openssh(key).with_context(|| format!("not a public key: {key}"))
}

/// `kubectl create -f -` in `ns` with a JSON object.
async fn create(ns: &kt_lab_tests::TestNamespace, object: &Value) -> Result<String> {
    ns.lab()
        .kubectl_stdin(
            &["create", "-n", ns.name(), "-f", "-"],
            &serde_json::to_string(object)?,
        )
        .await
}
