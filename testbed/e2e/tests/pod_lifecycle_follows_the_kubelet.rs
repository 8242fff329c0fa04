//! The node agent runs pods the way a kubelet does, for the parts kt relies on:
//! an image it cannot run fails like a pull error, a failing liveness probe
//! restarts the container, volumes and env sources reach the process, and a
//! deleted pod gets SIGTERM before it goes.

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kt_lab_tests::{Lab, Poll, WAIT, wait_until};

fn waiting_reason(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn restart_count(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_image_fails_like_a_pull_error() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("pull").await?;
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: nope}
spec:
  containers:
    - {name: c, image: "registry.example/not-in-the-table:1.0"}
"#,
    )
    .await?;
    let api = ns.api::<Pod>();
    let pod = wait_until("the pod to report a pull failure", WAIT, || async {
        let p = api.get("nope").await?;
        Ok(match waiting_reason(&p).as_deref() {
            Some("ErrImagePull" | "ImagePullBackOff") => Poll::Done(p),
            other => Poll::NotYet(format!("waiting reason {other:?}")),
        })
    })
    .await?;
    let status = pod.status.as_ref().expect("status seen above");
    ensure!(
        status.phase.as_deref() == Some("Pending"),
        "phase {:?}",
        status.phase
    );
    let events = ns
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=nope",
        ])
        .await?;
    ensure!(
        events.contains("not-in-the-table"),
        "no event names the image: {events}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_liveness_probe_restarts_the_container() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("liveness").await?;
    // Healthy until /tmp/kt-live-<ns> disappears: the probe then fails and the
    // kubelet must kill and restart the container.
    let marker = format!("/tmp/kt-live-{}", ns.name());
    ns.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  containers:
    - name: c
      image: kt.invalid/shell
      command: ["/bin/sh", "-c", "touch {marker}; exec sleep 3600"]
      livenessProbe:
        exec: {{command: [test, -e, "{marker}"]}}
        periodSeconds: 1
        failureThreshold: 2
"#
    ))
    .await?;
    ns.wait_pod_ready("live").await?;
    ensure!(restart_count(&ns.api::<Pod>().get("live").await?) == 0);
    std::fs::remove_file(&marker)?;
    let api = ns.api::<Pod>();
    wait_until("the container to be restarted", WAIT, || async {
        let p = api.get("live").await?;
        let n = restart_count(&p);
        Ok(if n >= 1 {
            Poll::Done(())
        } else {
            Poll::NotYet(format!("restartCount {n}"))
        })
    })
    .await?;
    // The restarted container recreated the marker, so it stays healthy.
    ns.wait_pod_ready("live").await?;
    let _ = std::fs::remove_file(&marker);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_and_env_sources_reach_the_process() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("volumes").await?;
    ns.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello-from-configmap}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: vol, labels: {tier: test}}
spec:
  containers:
    - name: c
      image: kt.invalid/shell
      command: ["/bin/sh", "-c", "exec sleep 3600"]
      env:
        - name: FROM_SECRET
          valueFrom: {secretKeyRef: {name: sec, key: password}}
        - name: FROM_CM
          valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}
        - name: MY_POD
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: COMBINED
          value: "$(MY_POD)-$(FROM_CM)"
      volumeMounts:
        - {name: cfg, mountPath: /etc/kt-test/cfg}
        - {name: sec, mountPath: /etc/kt-test/sec, readOnly: true}
        - {name: scratch, mountPath: /var/kt-test/scratch}
        - {name: info, mountPath: /etc/kt-test/info}
  volumes:
    - {name: cfg, configMap: {name: cfg}}
    - {name: sec, secret: {secretName: sec}}
    - {name: scratch, emptyDir: {}}
    - name: info
      downwardAPI:
        items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]
"#,
    )
    .await?;
    ns.wait_pod_ready("vol").await?;
    let sh = |script: &str| {
        let script = script.to_owned();
        let ns = &ns;
        async move {
            Ok::<_, anyhow::Error>(
                ns.exec("vol", &["sh", "-c", &script])
                    .await?
                    .trim()
                    .to_owned(),
            )
        }
    };
    ensure!(sh("cat /etc/kt-test/cfg/greeting").await? == "hello-from-configmap");
    ensure!(sh("cat /etc/kt-test/sec/password").await? == "s3cret");
    ensure!(sh("echo $FROM_SECRET $FROM_CM").await? == "s3cret hello-from-configmap");
    ensure!(sh("echo $COMBINED").await? == "vol-hello-from-configmap");
    ensure!(
        sh("cat /etc/kt-test/info/labels")
            .await?
            .contains("tier=\"test\"")
    );
    ensure!(sh("hostname").await? == "vol");
    sh("echo written > /var/kt-test/scratch/f && cat /var/kt-test/scratch/f").await?;
    // A read-only mount refuses writes.
    let denied = ns
        .exec_output("vol", &["sh", "-c", "echo x > /etc/kt-test/sec/new"])
        .await?;
    ensure!(
        !denied.status.success(),
        "writing to a readOnly secret mount succeeded"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_gets_sigterm_before_it_goes() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("graceful").await?;
    // The shell writes a file on the host when SIGTERM arrives.
    let marker = format!("/tmp/kt-term-{}", ns.name());
    let _ = std::fs::remove_file(&marker);
    ns.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: term}}
spec:
  terminationGracePeriodSeconds: 30
  containers:
    - name: c
      image: kt.invalid/shell
      command: ["/bin/sh", "-c", "trap 'echo got-term > {marker}; exit 0' TERM; while true; do sleep 0.2; done"]
"#
    ))
    .await?;
    ns.wait_pod_ready("term").await?;
    ns.kubectl(&["delete", "pod", "term", "--wait=true", "--timeout=60s"])
        .await?;
    let got = std::fs::read_to_string(&marker).unwrap_or_default();
    let _ = std::fs::remove_file(&marker);
    ensure!(
        got.trim() == "got-term",
        "the container did not see SIGTERM before the pod was removed (marker: {got:?})"
    );
    Ok(())
}
