//! A namespace peer who can read the shadow's Secret recreates the shadow pod under the
//! same name with the same keys: the session must refuse it (it reconnects by name, and
//! the impostor holds the pinned host key), fail with a clear error, and never log in.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::Fixture;
use kt_core::{Error, Event, ShadowFlavour};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_recreated_under_the_same_name_with_its_keys_is_refused() -> Result<()> {
    let f = Fixture::start("kt-impostor", ShadowFlavour::KtShadow, 1).await?;
    let name = f.session.pod_name().to_owned();
    f.session
        .resolve("echo")
        .await
        .context("resolve before the swap")?;

    // What a peer who can read the pod and its Secret copies.
    let pod = fresh(&f.ns.kubectl(&["get", "pod", &name, "-o", "json"]).await?)?;
    let secret = fresh(
        &f.ns
            .kubectl(&["get", "secret", &name, "-o", "json"])
            .await?,
    )?;
    let original_uid =
        f.ns.kubectl(&["get", "pod", &name, "-o", "jsonpath={.metadata.uid}"])
            .await?;

    // The swap: the Secret belongs to the pod (garbage-collected with it), so it is
    // recreated from the copy, without the owner reference.
    f.ns.kubectl(&[
        "delete",
        "pod",
        &name,
        "--grace-period=0",
        "--force",
        "--wait=true",
    ])
    .await?;
    f.ns.kubectl(&[
        "delete",
        "secret",
        &name,
        "--ignore-not-found",
        "--wait=true",
    ])
    .await?;
    create(&f.ns, &secret).await?;
    create(&f.ns, &pod).await?;
    let impostor = f.ns.wait_pod_ready(&name).await?;
    let impostor_uid = impostor.metadata.uid.clone().unwrap_or_default();
    ensure!(
        impostor_uid != original_uid.trim(),
        "the recreated pod has the original UID {impostor_uid}"
    );

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

    // No SSH login reached the impostor (kt-shadow logs every successful one).
    let log = f.ns.kubectl(&["logs", &name]).await?;
    ensure!(
        log.contains("kt-shadow listening"),
        "the impostor's log does not show its start (log level?): {log}"
    );
    ensure!(
        !log.contains("client authenticated"),
        "a client logged in to the impostor: {log}"
    );

    // Clean up what the session can still remove (the impostor carries its labels).
    let _ = f.session.close().await;
    Ok(())
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
