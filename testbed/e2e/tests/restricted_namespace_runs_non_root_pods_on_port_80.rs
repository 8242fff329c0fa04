//! In a namespace that enforces the restricted Pod Security Standard from its creation,
//! the node runs images as the user the pod names, as a real node does: the echo app
//! (uid 65532) deploys, and a pod of the echo image serves HTTP on port 80 as uid 65532
//! with runAsNonRoot, no capabilities, the runtime's default seccomp profile and a
//! read-only root filesystem, because the node's pods let any user bind ports below
//! 1024 (`net.ipv4.ip_unprivileged_port_start=0`, as containerd's pods do). A pod that
//! would run as root is refused.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, ensure};
use kt_lab_tests::{EchoReply, Lab, Poll, WAIT, wait_until};

/// A pod of the echo image serving HTTP on port 80 as uid 65532, and a Service for it.
const WEB80: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web80
  labels:
    app: web80
spec:
  terminationGracePeriodSeconds: 5
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: echo
    image: kt.invalid/echo
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
      readOnlyRootFilesystem: true
    env:
    - name: HTTP_PORT
      value: "80"
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    ports:
    - name: http
      containerPort: 80
    readinessProbe:
      httpGet:
        path: /healthz
        port: 80
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web80
spec:
  selector:
    app: web80
  ports:
  - name: http
    port: 80
    targetPort: 80
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_root_pod_serves_port_80_in_a_restricted_namespace() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.restricted_namespace("restricted-80").await?;

    // Enforcement is on from the start: a pod that would run as root is refused.
    let out = ns
        .kubectl_output(&[
            "run",
            "as-root",
            "--image=kt.invalid/shell",
            "--restart=Never",
            "--",
            "sleep",
            "60",
        ])
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains(r#"violates PodSecurity "restricted"#),
        "a root pod in namespace {} must be refused by Pod Security admission; kubectl run \
         exited {} saying: {stderr}",
        ns.name(),
        out.status
    );

    // The echo app runs as uid 65532.
    let echo = ns.deploy_echo(1).await?;
    let client = &echo.pods[0];

    // A non-root pod on port 80: admitted, started, and Ready through its httpGet probe.
    ns.apply(WEB80).await?;
    let pod = ns.wait_pod_ready("web80").await?;
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("pod web80 has no IP")?;
    let user = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.run_as_user);
    ensure!(
        user == Some(65532),
        "pod web80 was admitted with runAsUser {user:?}"
    );
    ns.wait_endpoints("web80", &BTreeSet::from([ip.clone()]))
        .await?;

    // Port 80 answers from another pod, straight and through the Service (kube-proxy
    // programs it asynchronously: bounded wait for the first answer).
    for url in [
        format!("http://{ip}/direct"),
        "http://web80/by-service".to_owned(),
    ] {
        let what = format!("GET {url} from pod {client} to be answered by pod web80");
        let res = wait_until(&what, WAIT, || async {
            let out = ns
                .exec_output(client, &["curl", "-sS", "--fail", "--max-time", "5", &url])
                .await?;
            if !out.status.success() {
                return Ok(Poll::NotYet(
                    String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                ));
            }
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            let replies = EchoReply::parse_all(&body)?;
            Ok(match replies.as_slice() {
                [r] if r.pod == "web80" && url.ends_with(&r.path) => Poll::Done(()),
                _ => Poll::NotYet(format!("reply {body}")),
            })
        })
        .await;
        ns.explain(res).await?;
    }
    Ok(())
}
