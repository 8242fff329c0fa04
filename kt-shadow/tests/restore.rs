//! The restoring watchdog for real: the `kt-shadow` binary, run beside the lab with a
//! kubeconfig for a ServiceAccount whose Role allows exactly what a swap shadow gets
//! (`get` and `patch` on the swapped objects by name, `get` on its Lease, `delete` on
//! its own pod), given through `KT_SHADOW_KUBECONFIG` (the one difference from a shadow
//! pod, which uses its mounted token).
//!
//! The objects are taken for the session the way kt-core's client does (the guarded
//! patch of `kt_proto::guard::forward`, sent with kubectl), then the session "dies":
//! its Lease is never renewed, or the shadow gets SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TempDir, TestResult, free_port, keygen, wait_listening};
use kt_lab_tests::{Lab, Poll, TestNamespace, WAIT, wait_until};
use kt_proto::guard::{Forward, Hold, Timestamp, forward, step};
use kt_proto::restore::{REPLICAS_PATH, SELECTOR_PATH};
use kt_proto::shadow::{EXIT_LEASE_EXPIRED, EXIT_RESTORE_FAILED};
use serde_json::{Value, json};
use tokio::process::Command;

const SESSION: &str = "s1a2b3c4";
const POD: &str = "kt-shadow-s1a2b3c4";

/// The swapped objects (a paused Deployment makes no pods), the session's Lease, and a
/// pod standing for the shadow's own (never scheduled, so deleting it is immediate).
fn objects(lease_secs: u32) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {{app: web}}
  annotations: {{example.com/team: shop}}
spec:
  selector: {{app: web, tier: frontend}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  paused: true
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web, tier: frontend}}}}
    spec: {{containers: [{{name: web, image: kt.invalid/echo}}]}}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: {POD}
spec:
  holderIdentity: {SESSION}
  leaseDurationSeconds: {lease_secs}
---
apiVersion: v1
kind: Pod
metadata:
  name: {POD}
spec:
  schedulerName: kt-test-never-scheduled
  containers: [{{name: shadow, image: kt.invalid/kt-shadow}}]
"#
    )
}

/// The swap shadow's identity: exactly the verbs its watchdog uses, on exactly its
/// objects (`workload_verbs` lets a test withhold `patch`).
fn identity(workload_verbs: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {POD}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {POD}
rules:
- apiGroups: [""]
  resources: [services]
  resourceNames: [web]
  verbs: [get, patch]
- apiGroups: [apps]
  resources: [deployments]
  resourceNames: [web]
  verbs: {workload_verbs}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [{POD}]
  verbs: [get]
- apiGroups: [""]
  resources: [pods]
  resourceNames: [{POD}]
  verbs: [delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {POD}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {POD}}}
subjects: [{{kind: ServiceAccount, name: {POD}}}]
"#
    )
}

struct Swapped {
    ns: TestNamespace,
    dir: TempDir,
    kubeconfig: std::path::PathBuf,
    /// `--restore` values.
    restore: Vec<String>,
    /// Labels, annotations and spec of each object before the swap.
    before: Vec<Value>,
}

const KINDS: [(&str, &str); 2] = [("service", "Service"), ("deployment", "Deployment")];

async fn object(ns: &TestNamespace, kind: &str) -> TestResult<Value> {
    Ok(serde_json::from_str(
        &ns.kubectl(&["get", kind, "web", "-o", "json"]).await?,
    )?)
}

fn content(object: &Value) -> Value {
    json!({
        "labels": object["metadata"]["labels"],
        "annotations": object["metadata"]["annotations"],
        "spec": object["spec"],
    })
}

/// A namespace where session [`SESSION`] has swapped Service `web`'s selector and
/// scaled Deployment `web` to zero, as kt-core's client does.
async fn swapped(test: &str, lease_secs: u32, workload_verbs: &str) -> TestResult<Swapped> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace(test).await?;
    ns.apply(&objects(lease_secs)).await?;
    ns.apply(&identity(workload_verbs)).await?;
    wait_until("the Deployment to be observed", WAIT, || async {
        let out = ns
            .kubectl(&[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.metadata.generation} {.status.observedGeneration}",
            ])
            .await?;
        Ok(match out.split_once(' ') {
            Some((a, b)) if a == b => Poll::Done(()),
            _ => Poll::NotYet(out),
        })
    })
    .await?;

    let now = Timestamp::now();
    let hold = Hold::new(SESSION, "alice", now, now + Duration::from_secs(3600));
    let mut restore = Vec::new();
    let mut before = Vec::new();
    for ((kind, kind_name), (path, value)) in KINDS.into_iter().zip([
        (SELECTOR_PATH, json!({"kt.dev/swap": SESSION})),
        (REPLICAS_PATH, json!(0)),
    ]) {
        let original = object(&ns, kind).await?;
        before.push(content(&original));
        let uid = original["metadata"]["uid"].as_str().ok_or("no uid")?;
        restore.push(format!("{kind_name}/web/{uid}"));
        let step = step(&original, vec![(path.to_owned(), Some(value))])?;
        let Forward::Apply(patch) = forward(&original, &step, &hold)? else {
            return Err("the take was refused".into());
        };
        let patch = serde_json::to_string(&patch)?;
        ns.kubectl(&["patch", kind, "web", "--type=json", "-p", &patch])
            .await?;
    }

    let dir = TempDir::new()?;
    let kubeconfig = scoped_kubeconfig(&lab, &ns, &dir).await?;
    Ok(Swapped {
        ns,
        dir,
        kubeconfig,
        restore,
        before,
    })
}

/// A kubeconfig authenticating as the shadow's ServiceAccount, in the namespace.
async fn scoped_kubeconfig(
    lab: &Lab,
    ns: &TestNamespace,
    dir: &TempDir,
) -> TestResult<std::path::PathBuf> {
    let token = ns
        .kubectl(&["create", "token", POD, "--duration=1h"])
        .await?;
    let admin = kube::config::Kubeconfig::read_from(lab.kubeconfig())?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or("the admin kubeconfig has no cluster")?;
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data}}],
        "users": [{"name": POD, "user": {"token": token.trim()}}],
        "contexts": [{"name": "shadow", "context": {
            "cluster": "lab", "user": POD, "namespace": ns.name()}}],
        "current-context": "shadow",
    });
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&config)?)?;
    Ok(path)
}

/// `kt-shadow serve` as a swap shadow of [`SESSION`] with `--lease`, `--restore` for
/// each object and `--self-delete`.
async fn swap_shadow(s: &Swapped, listen: std::net::SocketAddr) -> TestResult<Command> {
    let host = keygen(s.dir.path(), "host")?;
    let client = keygen(s.dir.path(), "client")?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kt-shadow"));
    cmd.args(["serve", "--listen", &listen.to_string()])
        .arg("--host-key")
        .arg(&host)
        .arg("--authorized-keys")
        .arg(format!("{}.pub", client.display()))
        .args(["--lease", POD, "--session", SESSION, "--self-delete"]);
    for target in &s.restore {
        cmd.args(["--restore", target]);
    }
    cmd.env("KT_SHADOW_KUBECONFIG", &s.kubeconfig)
        .env("POD_NAME", POD)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(cmd)
}

async fn pod_exists(ns: &TestNamespace) -> TestResult<bool> {
    let out = ns
        .kubectl(&["get", "pod", POD, "--ignore-not-found", "-o", "name"])
        .await?;
    Ok(!out.trim().is_empty())
}

/// The session's Lease is never renewed: the shadow restores both objects exactly,
/// deletes its own pod and exits 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_lease_expiry_the_shadow_restores_exactly_then_deletes_its_pod() -> TestResult {
    let s = swapped("shadow-restore-lease", 2, "[get, patch]").await?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port().await?));
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        swap_shadow(&s, listen).await?.output(),
    )
    .await??;
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_LEASE_EXPIRED), "{log}");
    for ((kind, kind_name), before) in KINDS.iter().zip(&s.before) {
        let after = object(&s.ns, kind).await?;
        assert_eq!(content(&after), *before, "{kind}\n{log}");
        assert!(log.contains(&format!("{kind_name} web")), "{log}");
    }
    assert!(log.contains("restored"), "{log}");
    assert!(log.contains("deleted the shadow's own pod"), "{log}");
    assert!(!pod_exists(&s.ns).await?, "the pod is still there\n{log}");
    Ok(())
}

/// SIGTERM (the pod deleted, a node drained): the shadow restores before it stops;
/// the replica count someone changed meanwhile is left as they set it and logged; the
/// pod is not deleted (it is being deleted already).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_the_shadow_restores_and_leaves_a_value_changed_meanwhile() -> TestResult {
    let s = swapped("shadow-restore-term", 3600, "[get, patch]").await?;
    s.ns.kubectl(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":5}}"#,
    ])
    .await?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port().await?));
    let child = swap_shadow(&s, listen).await?.spawn()?;
    wait_listening(listen).await?;
    let pid = child.id().ok_or("no pid")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");

    let service = object(&s.ns, "service").await?;
    assert_eq!(content(&service), s.before[0], "{log}");
    let deployment = object(&s.ns, "deployment").await?;
    assert_eq!(deployment["spec"]["replicas"], 5, "{log}");
    let annotations = deployment["metadata"]["annotations"].as_object();
    assert!(
        !annotations.is_some_and(|a| a.keys().any(|k| k.starts_with("kt.dev/"))),
        "the hold is released: {annotations:?}"
    );
    assert!(
        log.contains("not restored: Deployment")
            && log.contains("/spec/replicas was changed by someone else"),
        "{log}"
    );
    assert!(
        pod_exists(&s.ns).await?,
        "SIGTERM must not delete the pod\n{log}"
    );
    Ok(())
}

/// A Role without `patch` on the Deployment: the Service is restored, the Deployment
/// cannot be; the shadow says so, keeps its pod (and log) and exits 5. The record stays
/// on the Deployment for a later kt run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_exits_5_and_keeps_the_pod() -> TestResult {
    let s = swapped("shadow-restore-fail", 2, "[get]").await?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port().await?));
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        swap_shadow(&s, listen).await?.output(),
    )
    .await??;
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_RESTORE_FAILED), "{log}");
    assert_eq!(content(&object(&s.ns, "service").await?), s.before[0]);
    let deployment = object(&s.ns, "deployment").await?;
    assert_eq!(deployment["spec"]["replicas"], 0);
    assert_eq!(
        deployment["metadata"]["annotations"]["kt.dev/owner"], SESSION,
        "the record stays"
    );
    assert!(
        log.contains("cannot restore") && log.contains("forbidden"),
        "{log}"
    );
    assert!(pod_exists(&s.ns).await?, "{log}");
    Ok(())
}

/// Without credentials the shadow refuses to serve a swap it could not undo.
#[tokio::test]
async fn without_credentials_a_restoring_shadow_does_not_start() -> TestResult {
    let dir = TempDir::new()?;
    let host = keygen(dir.path(), "host")?;
    let client = keygen(dir.path(), "client")?;
    let port = free_port().await?;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new(env!("CARGO_BIN_EXE_kt-shadow"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--host-key")
            .arg(&host)
            .arg("--authorized-keys")
            .arg(format!("{}.pub", client.display()))
            .args(["--session", SESSION, "--restore", "Service/web/u1"])
            .env_remove("KT_SHADOW_KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .stdin(Stdio::null())
            .output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(kt_proto::shadow::EXIT_FAILURE),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot restore the --restore objects")
            && stderr.contains("no Kubernetes credentials"),
        "{stderr}"
    );
    Ok(())
}
