//! In-cluster config works under a namespace-scoped Role: a pod running as
//! ServiceAccount `lister` has its token and CA mounted, kubectl inside it
//! authenticates as that ServiceAccount through the `kubernetes` Service, may list
//! pods in its own namespace, and is refused ("forbidden") in another.

use anyhow::{Result, ensure};
use kt_lab_tests::{IN_POD_KUBECTL, Lab, Poll, WAIT, wait_until};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn manifest(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: lister
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-lister
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: lister-can-list-pods
subjects:
- kind: ServiceAccount
  name: lister
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-lister
"#
    )
}

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: lister
spec:
  serviceAccountName: lister
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: kt.invalid/shell
    command: ["/bin/sh", "-c", "exec sleep 3600"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_lists_pods_in_its_namespace_and_is_forbidden_elsewhere() -> Result<()> {
    let lab = Lab::connect().await?;
    let a = lab.namespace("rbac-a").await?;
    let b = lab.namespace("rbac-b").await?;
    let a_name = a.name().to_owned();
    let b_name = b.name().to_owned();

    a.apply(&manifest(&a_name)).await?;
    a.apply(POD).await?;
    a.wait_pod_ready("lister").await?;

    // The ServiceAccount's credentials are mounted where client libraries look.
    let res = async {
        for file in ["token", "ca.crt", "namespace"] {
            let path = format!("{SA_DIR}/{file}");
            let out = a.exec_output("lister", &["test", "-s", &path]).await?;
            ensure!(
                out.status.success(),
                "{path} is missing or empty in pod lister ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ns_file = a
            .exec("lister", &["cat", &format!("{SA_DIR}/namespace")])
            .await?;
        ensure!(
            ns_file.trim() == a_name,
            "{SA_DIR}/namespace holds `{ns_file}`, expected `{a_name}`"
        );
        let env = a
            .exec(
                "lister",
                &[
                    "sh",
                    "-c",
                    "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
                ],
            )
            .await?;
        ensure!(
            env.trim() != ":",
            "KUBERNETES_SERVICE_HOST/PORT are not set in the pod (in-cluster config needs them)"
        );
        Ok(())
    }
    .await;
    a.explain(res).await?;

    // kubectl inside the pod uses in-cluster config: it is the ServiceAccount.
    let who = a
        .exec(
            "lister",
            &[
                IN_POD_KUBECTL,
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        )
        .await;
    let who = a.explain(who).await?;
    let want = format!("system:serviceaccount:{a_name}:lister");
    ensure!(
        who.trim() == want,
        "kubectl in the pod is `{who}`, expected `{want}`"
    );

    // Allowed in A. The RoleBinding reaches the authorizer's cache asynchronously,
    // as in any cluster, so wait (bounded) for the first success.
    let list = [
        IN_POD_KUBECTL,
        "get",
        "pods",
        "-n",
        a_name.as_str(),
        "-o",
        "name",
    ];
    let res = wait_until(
        "the pod to list pods in its own namespace",
        WAIT,
        || async {
            let out = a.exec_output("lister", &list).await?;
            Ok(if out.status.success() {
                Poll::Done(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Poll::NotYet(format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ))
            })
        },
    )
    .await;
    let listed = a.explain(res).await?;
    ensure!(
        listed.lines().any(|l| l.trim() == "pod/lister"),
        "`kubectl get pods -n {a_name} -o name` in the pod does not list itself:\n{listed}"
    );

    // Refused in B.
    let out = a
        .exec_output(
            "lister",
            &[
                IN_POD_KUBECTL,
                "get",
                "pods",
                "-n",
                b_name.as_str(),
                "-o",
                "name",
            ],
        )
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("forbidden"),
        "listing pods in {b_name} from the pod should be forbidden; got {} stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr
    );
    ensure!(
        stderr.contains(&format!("system:serviceaccount:{a_name}:lister")),
        "the refusal does not name the ServiceAccount: {stderr}"
    );
    drop(b);
    Ok(())
}
