//! Helpers for the lab's end-to-end conformance tests.
//!
//! The tests in `tests/` prove that the lab started by `testbed/up` behaves like a
//! real Kubernetes cluster for the real clients kt relies on: kubectl and kube-rs.
//! Every test talks to the running lab; none of them can pass without it.
//!
//! - [`Lab::connect`] finds the lab's kubeconfig (`$KUBECONFIG`, else
//!   `/run/ktlab/admin.kubeconfig`) and kubectl (`$KUBECTL`, else
//!   `/run/ktlab/bin/kubectl`) and fails with [`LAB_NOT_UP`] when either is missing or
//!   the API server does not answer.
//! - [`TestNamespace`] is a namespace with a unique name, deleted on drop, so tests
//!   can run in parallel and leave nothing behind.
//! - [`probe_bin`] builds kt-probe (testbed/probe), a real HTTP/1.1, h2c, WebSocket and
//!   gRPC peer with matching clients, where pods can run it;
//!   [`TestNamespace::deploy_probe`] serves it behind a Service and
//!   [`TestNamespace::probe`] runs its clients in a pod.
//! - [`wait_until`] and the `wait_*` methods poll with a bounded timeout and, when
//!   it runs out, say what they last saw plus the namespace's objects and events.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let lab = kt_lab_tests::Lab::connect().await?;
//! let ns = lab.namespace("demo").await?;
//! let echo = ns.deploy_echo(2).await?;
//! let reply = ns.exec(&echo.pods[0], &["curl", "-sS", "http://echo/hello"]).await?;
//! println!("{reply}");
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::process::{Child, Command};

/// What every test says when it cannot reach the lab.
pub const LAB_NOT_UP: &str = "the lab is not up: run testbed/up";

/// The lab's admin kubeconfig, used when `KUBECONFIG` is not set.
pub const DEFAULT_KUBECONFIG: &str = "/run/ktlab/admin.kubeconfig";

/// The lab's own kubectl (v1.34.4), used when `KUBECTL` is not set.
pub const DEFAULT_KUBECTL: &str = "/run/ktlab/bin/kubectl";

/// The kubectl binary as seen from inside a pod (`kubectl exec` runs host binaries).
pub const IN_POD_KUBECTL: &str = "/run/ktlab/bin/kubectl";

/// The default bound on every wait: objects becoming ready, rules propagating.
pub const WAIT: Duration = Duration::from_secs(120);

/// The bound on one kubectl invocation that is expected to finish by itself.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(150);

/// How often [`wait_until`] probes.
const POLL: Duration = Duration::from_millis(500);

/// kt's shipped proxy-mode Role file, with the shadow's ServiceAccount.
pub const KT_CONNECT_YAML: &str = include_str!("../../../kt-core/rbac/connect.yaml");

/// Label put on every namespace the tests create, so leftovers can be found.
pub const E2E_LABEL: &str = "kt.dev/e2e";

/// The namespace label that makes Pod Security admission enforce the restricted
/// standard.
pub const ENFORCE_RESTRICTED: (&str, &str) = ("pod-security.kubernetes.io/enforce", "restricted");

/// The lab's image of the OpenSSH shadow (sshd from the machine): the OpenSSH flavour
/// always names its image.
pub const OPENSSH_IMAGE: &str = "kt.invalid/openssh";

/// The lab's image with kt-shadow in it (`$KT_SHADOW_BIN`), for tests of the explicit
/// image path (by default kt ships its agent and needs no image).
pub const KT_SHADOW_IMAGE: &str = "kt.invalid/kt-shadow:0.1.0";

/// The kt-shadow binary the lab runs for image `kt.invalid/kt-shadow`: `$KT_SHADOW_BIN`,
/// else the value `testbed/up` wrote into `/run/ktlab/env`. Fails with what to do when
/// neither is set (the lab then cannot run kt's shadow).
pub fn kt_shadow_bin() -> Result<String> {
    lab_env("KT_SHADOW_BIN").context(
        "KT_SHADOW_BIN is not set (nor in /run/ktlab/env): the lab cannot run the kt-shadow \
         flavour; run testbed/up, which builds kt-shadow and restarts nothing else",
    )
}

/// The variable `name` from this process's environment, else as `testbed/up` wrote it
/// into `/run/ktlab/env` (`export NAME=value`); `None` when neither has a value.
pub fn lab_env(name: &str) -> Option<String> {
    if let Some(v) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
        return Some(v);
    }
    let env = std::fs::read_to_string("/run/ktlab/env").unwrap_or_default();
    let prefix = format!("export {name}=");
    env.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// A handle on the running lab: a kube-rs client plus the kubectl to run.
#[derive(Clone)]
pub struct Lab {
    client: Client,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl Lab {
    /// Finds the lab's kubeconfig and kubectl and checks that the API server answers.
    ///
    /// Fails with a message starting with [`LAB_NOT_UP`] when it does not.
    pub async fn connect() -> Result<Lab> {
        let kubeconfig = std::env::var_os("KUBECONFIG")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_KUBECONFIG), PathBuf::from);
        let kubectl = std::env::var_os("KUBECTL")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_KUBECTL), PathBuf::from);
        if !kubeconfig.is_file() {
            bail!("{LAB_NOT_UP} (no kubeconfig at {})", kubeconfig.display());
        }
        if !kubectl.is_file() {
            bail!("{LAB_NOT_UP} (no kubectl at {})", kubectl.display());
        }
        let kc = Kubeconfig::read_from(&kubeconfig)
            .with_context(|| format!("{LAB_NOT_UP} (cannot read {})", kubeconfig.display()))?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("{LAB_NOT_UP} (bad kubeconfig {})", kubeconfig.display()))?;
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config)
            .with_context(|| format!("{LAB_NOT_UP} (cannot build a client for {server})"))?;
        let version = tokio::time::timeout(Duration::from_secs(20), client.apiserver_version())
            .await
            .map_err(|_| anyhow!("{LAB_NOT_UP} (API server {server} did not answer in 20 s)"))?
            .with_context(|| format!("{LAB_NOT_UP} (API server {server} did not answer)"))?;
        eprintln!(
            "lab: API server {server} is {} (kubeconfig {}, kubectl {})",
            version.git_version,
            kubeconfig.display(),
            kubectl.display()
        );
        Ok(Lab {
            client,
            kubeconfig,
            kubectl,
        })
    }

    /// The kube-rs client, authenticated as cluster-admin.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The kubeconfig in use.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubectl command with the lab's kubeconfig, not yet started.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs kubectl and returns its stdout; fails (with stderr) unless it exits 0.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl_output(args, None).await?;
        check_output(&describe_kubectl(args), out)
    }

    /// Runs kubectl with `stdin` as its standard input and returns its stdout;
    /// fails (with stderr) unless it exits 0.
    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Result<String> {
        let out = self.kubectl_output(args, Some(stdin)).await?;
        check_output(&describe_kubectl(args), out)
    }

    /// Runs kubectl and returns its whole output, whatever its exit status; for
    /// commands that are expected to fail. Bounded by [`KUBECTL_TIMEOUT`].
    pub async fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let cmd = self.kubectl_command(args);
        run_bounded(cmd, &describe_kubectl(args), stdin, KUBECTL_TIMEOUT).await
    }

    /// Creates a namespace `e2e-<test>-<random>` that is deleted when the handle drops,
    /// with kt's [`KT_CONNECT_YAML`] applied, as in every namespace kt works in (it makes
    /// the shadow pod's ServiceAccount `kt-shadow`; its Role `kt-connect` stays unbound).
    pub async fn namespace(&self, test: &str) -> Result<TestNamespace> {
        self.namespace_with_labels(test, &[]).await
    }

    /// [`Lab::namespace`] enforcing the restricted Pod Security Standard from its
    /// creation on ([`ENFORCE_RESTRICTED`]): every pod in it must run as a non-root
    /// user, drop all capabilities and use the runtime's default seccomp profile. The
    /// echo app ([`TestNamespace::deploy_echo`]) and kt-shadow pass it.
    pub async fn restricted_namespace(&self, test: &str) -> Result<TestNamespace> {
        self.namespace_with_labels(test, &[ENFORCE_RESTRICTED])
            .await
    }

    async fn namespace_with_labels(
        &self,
        test: &str,
        labels: &[(&str, &str)],
    ) -> Result<TestNamespace> {
        let name = unique_name(&format!("e2e-{test}"));
        let api: Api<Namespace> = Api::all(self.client());
        let mut all = std::collections::BTreeMap::from([(E2E_LABEL.to_owned(), "true".to_owned())]);
        all.extend(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(all),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace `{name}`"))?;
        // The namespace's `default` ServiceAccount is made by the controller-manager;
        // pods are refused until it exists.
        let sa_api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.client(), &name);
        let handle = TestNamespace {
            lab: self.clone(),
            name,
        };
        wait_until("the namespace's `default` ServiceAccount", WAIT, || async {
            Ok(match sa_api.get_opt("default").await? {
                Some(_) => Poll::Done(()),
                None => Poll::NotYet("no ServiceAccount `default` yet".to_owned()),
            })
        })
        .await?;
        handle
            .apply(KT_CONNECT_YAML)
            .await
            .context("applying kt-core/rbac/connect.yaml")?;
        Ok(handle)
    }
}

/// A namespace that exists for one test and is deleted (without waiting) on drop.
///
/// Set `KT_E2E_KEEP_NAMESPACES=1` to keep it for debugging.
pub struct TestNamespace {
    lab: Lab,
    name: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("KT_E2E_KEEP_NAMESPACES").is_some_and(|v| !v.is_empty()) {
            eprintln!("keeping namespace {} (KT_E2E_KEEP_NAMESPACES)", self.name);
            return;
        }
        // Blocking on purpose: Drop cannot await, and the namespace must be on its
        // way out before the test process exits.
        let res = std::process::Command::new(&self.lab.kubectl)
            .arg("--kubeconfig")
            .arg(&self.lab.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
                "--request-timeout=30s",
            ])
            .stdin(Stdio::null())
            .output();
        match res {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: deleting namespace {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("warning: deleting namespace {} failed: {e}", self.name),
        }
    }
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab this namespace lives in.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// A kube-rs API for namespaced objects of this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.lab.client(), &self.name)
    }

    fn with_ns<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        v
    }

    /// Runs `kubectl -n <ns> <args>`; see [`Lab::kubectl`].
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.lab.kubectl(&self.with_ns(args)).await
    }

    /// Runs `kubectl -n <ns> <args>` and returns its output whatever the exit status.
    pub async fn kubectl_output(&self, args: &[&str]) -> Result<Output> {
        self.lab.kubectl_output(&self.with_ns(args), None).await
    }

    /// Applies YAML manifests into this namespace (`kubectl apply -f -`).
    pub async fn apply(&self, yaml: &str) -> Result<String> {
        self.lab
            .kubectl_stdin(&self.with_ns(&["apply", "-f", "-"]), yaml)
            .await
    }

    /// Runs `cmd` in `pod` with `kubectl exec` and returns its stdout; fails (with
    /// stderr) unless it exits 0.
    pub async fn exec(&self, pod: &str, cmd: &[&str]) -> Result<String> {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(cmd);
        self.kubectl(&args).await
    }

    /// Runs `cmd` in `pod` with `kubectl exec` and returns the whole output,
    /// whatever the exit status; for commands that are expected to fail.
    pub async fn exec_output(&self, pod: &str, cmd: &[&str]) -> Result<Output> {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(cmd);
        self.kubectl_output(&args).await
    }

    /// What the namespace holds right now: objects, pod descriptions and events.
    /// Best effort: a failing kubectl is reported inline.
    pub async fn diagnostics(&self) -> String {
        let mut report = format!("==== diagnostics of namespace {} ====\n", self.name);
        let views: [&[&str]; 4] = [
            &[
                "get",
                "all,endpointslices,serviceaccounts,roles,rolebindings",
                "-o",
                "wide",
            ],
            &["describe", "pods"],
            &["describe", "deployments"],
            &["get", "events", "--sort-by=.lastTimestamp"],
        ];
        for args in views {
            let _ = writeln!(report, "---- kubectl -n {} {}", self.name, args.join(" "));
            match self.kubectl_output(args).await {
                Ok(out) => {
                    report.push_str(&String::from_utf8_lossy(&out.stdout));
                    report.push_str(&String::from_utf8_lossy(&out.stderr));
                }
                Err(e) => {
                    let _ = writeln!(report, "({e:#})");
                }
            }
        }
        let _ = writeln!(report, "---- kubectl get nodes -o wide");
        match self
            .lab
            .kubectl_output(&["get", "nodes", "-o", "wide"], None)
            .await
        {
            Ok(out) => {
                report.push_str(&String::from_utf8_lossy(&out.stdout));
                report.push_str(&String::from_utf8_lossy(&out.stderr));
            }
            Err(e) => {
                let _ = writeln!(report, "({e:#})");
            }
        }
        report
    }

    /// Adds [`TestNamespace::diagnostics`] to an error, so a failure shows what the
    /// cluster looked like.
    pub async fn explain<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                let diag = self.diagnostics().await;
                Err(e.context(diag))
            }
        }
    }

    /// Waits until Deployment `name` is Available with `replicas` updated, ready
    /// pods and nothing else; returns it.
    pub async fn wait_deployment_available(&self, name: &str, replicas: i32) -> Result<Deployment> {
        let api: Api<Deployment> = self.api();
        let what = format!(
            "Deployment `{name}` in `{}` to be Available with {replicas} ready replicas",
            self.name
        );
        let res = wait_until(&what, WAIT, || async {
            let Some(d) = api.get_opt(name).await? else {
                return Ok(Poll::NotYet("deployment not found".to_owned()));
            };
            let status = d.status.clone().unwrap_or_default();
            let available = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Available" && c.status == "True");
            let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(1);
            let done = observed
                && available
                && status.replicas == Some(replicas)
                && status.updated_replicas == Some(replicas)
                && status.ready_replicas == Some(replicas)
                && status.available_replicas == Some(replicas);
            if done {
                return Ok(Poll::Done(d));
            }
            Ok(Poll::NotYet(format!(
                "observedGeneration {:?}/{:?}, replicas {:?}, updated {:?}, ready {:?}, available {:?}, conditions {:?}",
                status.observed_generation,
                d.metadata.generation,
                status.replicas,
                status.updated_replicas,
                status.ready_replicas,
                status.available_replicas,
                status
                    .conditions
                    .iter()
                    .flatten()
                    .map(|c| format!("{}={} ({})", c.type_, c.status, c.message.clone().unwrap_or_default()))
                    .collect::<Vec<_>>()
            )))
        })
        .await;
        self.explain(res).await
    }

    /// Starts pod `client` ([`CLIENT_POD`]: passes the restricted Pod Security
    /// Standard, sleeps) and waits until it is Ready; returns its name. Calls from
    /// inside the cluster exec the host's tools in it (`curl`, `bash`, `python3.11`).
    pub async fn client_pod(&self) -> Result<String> {
        self.apply(CLIENT_POD).await?;
        self.wait_pod_ready("client").await?;
        Ok("client".to_owned())
    }

    /// Waits until pod `name` is Running and Ready; returns it.
    pub async fn wait_pod_ready(&self, name: &str) -> Result<Pod> {
        let api: Api<Pod> = self.api();
        let what = format!("pod `{name}` in `{}` to be Ready", self.name);
        let res = wait_until(&what, WAIT, || async {
            let Some(p) = api.get_opt(name).await? else {
                return Ok(Poll::NotYet("pod not found".to_owned()));
            };
            if is_ready(&p) {
                Ok(Poll::Done(p))
            } else {
                Ok(Poll::NotYet(pod_summary(&p)))
            }
        })
        .await;
        self.explain(res).await
    }

    /// The Ready, not terminating pods matching `selector`, sorted by name.
    pub async fn ready_pods(&self, selector: &str) -> Result<Vec<Pod>> {
        let api: Api<Pod> = self.api();
        let mut pods: Vec<Pod> = api
            .list(&ListParams::default().labels(selector))
            .await
            .with_context(|| format!("listing pods `{selector}` in `{}`", self.name))?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// Waits until exactly `count` pods matching `selector` are Ready (and none is
    /// terminating) and the predicate accepts their names; returns them.
    pub async fn wait_ready_pods(
        &self,
        selector: &str,
        count: usize,
        accept: impl Fn(&BTreeSet<String>) -> bool,
    ) -> Result<Vec<Pod>> {
        let api: Api<Pod> = self.api();
        let what = format!("{count} Ready pods `{selector}` in `{}`", self.name);
        let res = wait_until(&what, WAIT, || async {
            let all = api
                .list(&ListParams::default().labels(selector))
                .await?
                .items;
            let ready: Vec<Pod> = all
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                .cloned()
                .collect();
            let names: BTreeSet<String> = ready.iter().map(pod_name).collect();
            if ready.len() == all.len() && ready.len() == count && accept(&names) {
                let mut ready = ready;
                ready.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                return Ok(Poll::Done(ready));
            }
            Ok(Poll::NotYet(
                all.iter().map(pod_summary).collect::<Vec<_>>().join("; "),
            ))
        })
        .await;
        self.explain(res).await
    }

    /// Waits until the EndpointSlices of Service `service` list exactly `ips` as
    /// ready endpoints.
    pub async fn wait_endpoints(&self, service: &str, ips: &BTreeSet<String>) -> Result<()> {
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let api: Api<EndpointSlice> = self.api();
        let what = format!("EndpointSlices of Service `{service}` to list {ips:?} as ready");
        let selector = format!("kubernetes.io/service-name={service}");
        let res = wait_until(&what, WAIT, || async {
            let slices = api
                .list(&ListParams::default().labels(&selector))
                .await?
                .items;
            let ready: BTreeSet<String> = slices
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            if &ready == ips {
                Ok(Poll::Done(()))
            } else {
                Ok(Poll::NotYet(format!("ready endpoints {ready:?}")))
            }
        })
        .await;
        self.explain(res).await
    }

    /// Deploys the echo app: Deployment `echo` with `replicas` pods of `kt.invalid/echo`
    /// (POD_NAME/POD_NAMESPACE from the downward API, readiness on `/healthz`, uid
    /// 65532 under the restricted Pod Security Standard) and Service `echo` (http
    /// 80→8080, tcp 9000, udp 9001). Waits until the Deployment is Available and the
    /// Service's endpoints list every pod.
    pub async fn deploy_echo(&self, replicas: i32) -> Result<EchoApp> {
        self.apply(&echo_manifest(replicas)).await?;
        self.wait_deployment_available("echo", replicas).await?;
        let count = usize::try_from(replicas).context("negative replica count")?;
        let pods = self.wait_ready_pods("app=echo", count, |_| true).await?;
        let svc: Service = self
            .api()
            .get("echo")
            .await
            .context("reading Service `echo`")?;
        let cluster_ip = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
            .context("Service `echo` has no ClusterIP")?;
        let pod_ips: Vec<String> = pods
            .iter()
            .map(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .with_context(|| format!("pod `{}` has no IP", pod_name(p)))
            })
            .collect::<Result<_>>()?;
        self.wait_endpoints("echo", &pod_ips.iter().cloned().collect())
            .await?;
        // kube-proxy programs the Service asynchronously, as in any cluster: wait
        // (bounded) until its ClusterIP answers from a pod, so tests start from a
        // Service that works.
        let first = pod_name(&pods[0]);
        let url = format!("http://{cluster_ip}/healthz");
        let what = format!("Service `echo` ({url}) to answer from pod {first}");
        let res = wait_until(&what, WAIT, || async {
            let out = self
                .exec_output(&first, &["curl", "-sS", "--fail", "--max-time", "5", &url])
                .await?;
            Ok(if out.status.success() {
                Poll::Done(())
            } else {
                Poll::NotYet(String::from_utf8_lossy(&out.stderr).trim().to_owned())
            })
        })
        .await;
        self.explain(res).await?;
        Ok(EchoApp {
            pods: pods.iter().map(pod_name).collect(),
            pod_ips,
            cluster_ip,
        })
    }

    /// Deploys kt-probe ([`probe_bin`]): Deployment `name` with `replicas` pods of image
    /// `kt.invalid/shell` running `kt-probe serve --listen 0.0.0.0:8080 --name <pod name>`
    /// (uid 65532, restricted Pod Security Standard, readiness on `/healthz`), and Service
    /// `name` with port `http` 80→8080 and, with `grpc_port`, port `grpc` 9090→8080
    /// (appProtocol `kubernetes.io/h2c`; the same server answers gRPC on either). Waits
    /// until the Deployment is Available, the endpoints list every pod and the Service
    /// answers from inside the cluster.
    pub async fn deploy_probe(
        &self,
        name: &str,
        replicas: i32,
        grpc_port: bool,
    ) -> Result<ProbeApp> {
        let bin = probe_bin()?;
        self.apply(&probe_manifest(name, replicas, &bin, grpc_port))
            .await?;
        self.wait_deployment_available(name, replicas).await?;
        let count = usize::try_from(replicas).context("negative replica count")?;
        let pods = self
            .wait_ready_pods(&format!("app={name}"), count, |_| true)
            .await?;
        let svc: Service = self
            .api()
            .get(name)
            .await
            .with_context(|| format!("reading Service `{name}`"))?;
        let cluster_ip = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
            .with_context(|| format!("Service `{name}` has no ClusterIP"))?;
        let pod_ips: Vec<String> = pods
            .iter()
            .map(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .with_context(|| format!("pod `{}` has no IP", pod_name(p)))
            })
            .collect::<Result<_>>()?;
        self.wait_endpoints(name, &pod_ips.iter().cloned().collect())
            .await?;
        // As for the echo app: wait (bounded) until kube-proxy serves the ClusterIP.
        let first = pod_name(&pods[0]);
        let url = format!("http://{cluster_ip}/healthz");
        let what = format!("Service `{name}` ({url}) to answer from pod {first}");
        let res = wait_until(&what, WAIT, || async {
            let out = self
                .exec_output(&first, &["curl", "-sS", "--fail", "--max-time", "5", &url])
                .await?;
            Ok(if out.status.success() {
                Poll::Done(())
            } else {
                Poll::NotYet(String::from_utf8_lossy(&out.stderr).trim().to_owned())
            })
        })
        .await;
        self.explain(res).await?;
        Ok(ProbeApp {
            name: name.to_owned(),
            pods: pods.iter().map(pod_name).collect(),
            pod_ips,
            cluster_ip,
            bin,
        })
    }

    /// Runs kt-probe ([`ProbeApp::bin`]) with `args` in `pod` (e.g. the client pod) and
    /// returns its stdout lines as JSON; fails with its stderr unless it exits 0.
    pub async fn probe(
        &self,
        pod: &str,
        bin: &Path,
        args: &[&str],
    ) -> Result<Vec<serde_json::Value>> {
        let bin = bin.to_str().context("kt-probe's path is not UTF-8")?;
        let mut cmd = vec![bin];
        cmd.extend_from_slice(args);
        let out = self.exec(pod, &cmd).await?;
        out.lines()
            .map(|l| {
                serde_json::from_str(l).with_context(|| {
                    format!("kt-probe {args:?} printed a line that is not JSON: {l}")
                })
            })
            .collect()
    }

    /// Starts `kubectl port-forward <target> :<remote_port>` (a free local port) and
    /// waits for its "Forwarding from 127.0.0.1:<port>" line.
    pub async fn kubectl_port_forward(
        &self,
        target: &str,
        remote_port: u16,
    ) -> Result<KubectlPortForward> {
        let spec = format!(":{remote_port}");
        let args = self.with_ns(&["port-forward", target, &spec]);
        let what = describe_kubectl(&args);
        let mut cmd = self.lab.kubectl_command(&args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = tokio::sync::oneshot::channel::<u16>();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let out_log = Arc::clone(&log);
        // Both readers end when the child is killed (its pipes close).
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut port_tx = Some(port_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = parse_forwarding_port(&line)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(port);
                }
                push_line(&out_log, "stdout", &line);
            }
        });
        let err_log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                push_line(&err_log, "stderr", &line);
            }
        });
        let port = match tokio::time::timeout(Duration::from_secs(60), port_rx).await {
            Ok(Ok(port)) => port,
            Ok(Err(_)) => {
                let status = child.wait().await.ok();
                let seen = log.lock().map(|l| l.clone()).unwrap_or_default();
                let err = anyhow!(
                    "{what} exited ({status:?}) before printing \"Forwarding from\":\n{seen}"
                );
                return self.explain(Err(err)).await;
            }
            Err(_) => {
                let seen = log.lock().map(|l| l.clone()).unwrap_or_default();
                let err = anyhow!(
                    "{what} printed no \"Forwarding from 127.0.0.1\" line in 60 s:\n{seen}"
                );
                return self.explain(Err(err)).await;
            }
        };
        Ok(KubectlPortForward {
            child,
            local_port: port,
            log,
        })
    }

    /// Deletes pod `name` and waits until it is gone (`kubectl delete --wait`).
    pub async fn delete_pod(&self, name: &str) -> Result<()> {
        let res = self
            .kubectl(&["delete", "pod", name, "--wait=true", "--timeout=120s"])
            .await
            .map(drop);
        self.explain(res).await?;
        let api: Api<Pod> = self.api();
        if let Some(p) = api.get_opt(name).await? {
            bail!(
                "pod `{name}` still exists after `kubectl delete --wait`: {}",
                pod_summary(&p)
            );
        }
        Ok(())
    }
}

fn push_line(log: &Mutex<String>, stream: &str, line: &str) {
    if let Ok(mut l) = log.lock() {
        let _ = writeln!(l, "[{stream}] {line}");
    }
}

/// Parses kubectl's "Forwarding from 127.0.0.1:41234 -> 8080" line.
fn parse_forwarding_port(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("Forwarding from 127.0.0.1:")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A running `kubectl port-forward`; killed on drop.
pub struct KubectlPortForward {
    child: Child,
    /// The local port on 127.0.0.1 that kubectl listens on.
    pub local_port: u16,
    log: Arc<Mutex<String>>,
}

impl KubectlPortForward {
    /// Everything kubectl printed so far.
    pub fn output(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Fails if kubectl has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("kubectl port-forward exited ({status}):\n{}", self.output()),
        }
    }

    /// GET `path` over a fresh TCP connection to the forwarded local port.
    pub async fn http_get(&mut self, path: &str) -> Result<HttpReply> {
        self.check_running()?;
        let addr = ("127.0.0.1", self.local_port);
        let res = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to 127.0.0.1:{}", self.local_port))?;
            tokio::time::timeout(Duration::from_secs(30), http_get(stream, path))
                .await
                .map_err(|_| anyhow!("no full HTTP reply in 30 s"))?
        }
        .await;
        res.with_context(|| {
            format!(
                "GET {path} through kubectl port-forward; kubectl said:\n{}",
                self.output()
            )
        })
    }
}

/// An HTTP reply with its body read in full.
#[derive(Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl HttpReply {
    /// The body as JSON; fails with the body's text if it is not.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "HTTP body is not JSON (status {}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Aborts a spawned task when dropped, so no task outlives its owner.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `GET <path>` (HTTP/1.1) over an already connected stream and returns the
/// response head with the body still to be read, plus the connection task's guard.
async fn http_request<S>(
    io: S,
    path: &str,
) -> Result<(hyper::Response<hyper::body::Incoming>, impl Drop + use<S>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP/1.1 handshake")?;
    let guard = AbortOnDrop(tokio::spawn(conn));
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .header("x-kt-e2e", "1")
        .body(Empty::<Bytes>::new())
        .context("building HTTP request")?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("sending GET {path}"))?;
    Ok((resp, guard))
}

/// GET `path` over an already connected stream (TCP, a kube-rs port-forward
/// stream, ...) and read the whole reply.
pub async fn http_get<S>(io: S, path: &str) -> Result<HttpReply>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (resp, _guard) = http_request(io, path).await?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .with_context(|| format!("reading the body of GET {path}"))?
        .to_bytes();
    Ok(HttpReply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// GET `path` over `io` and feed the body, chunk by chunk, to `check` (which gets
/// the chunk's offset); returns the status and the number of body bytes. Bodies of
/// many MiB are never held in memory whole.
pub async fn http_get_streaming<S>(
    io: S,
    path: &str,
    mut check: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<(u16, hyper::HeaderMap, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (resp, _guard) = http_request(io, path).await?;
    let (parts, mut body) = resp.into_parts();
    let mut offset = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.with_context(|| format!("reading the body of GET {path} at byte {offset}"))?;
        if let Ok(data) = frame.into_data() {
            check(offset, &data)?;
            offset += data.len() as u64;
        }
    }
    Ok((parts.status.as_u16(), parts.headers, offset))
}

/// What [`deploy_echo`](TestNamespace::deploy_echo) made.
#[derive(Debug, Clone)]
pub struct EchoApp {
    /// The Ready pods' names, sorted.
    pub pods: Vec<String>,
    /// The pods' IPs, in the order of `pods`.
    pub pod_ips: Vec<String>,
    /// Service `echo`'s ClusterIP.
    pub cluster_ip: String,
}

/// The echo app's Deployment and Service, as YAML. Its pods run as uid 65532 and
/// pass the restricted Pod Security Standard.
pub fn echo_manifest(replicas: i32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  labels:
    app: echo
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: echo
  template:
    metadata:
      labels:
        app: echo
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
          containerPort: 8080
        - name: tcp
          containerPort: 9000
        - name: udp
          containerPort: 9001
          protocol: UDP
        readinessProbe:
          httpGet:
            path: /healthz
            port: 8080
          periodSeconds: 1
          failureThreshold: 3
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  labels:
    app: echo
spec:
  selector:
    app: echo
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: tcp
    port: 9000
    targetPort: 9000
  - name: udp
    port: 9001
    targetPort: 9001
    protocol: UDP
"#
    )
}

/// What [`deploy_probe`](TestNamespace::deploy_probe) made.
#[derive(Debug, Clone)]
pub struct ProbeApp {
    /// The Deployment's and the Service's name (pods are labelled `app=<name>`).
    pub name: String,
    /// The Ready pods' names, sorted; each pod's replies carry its name.
    pub pods: Vec<String>,
    /// The pods' IPs, in the order of `pods`.
    pub pod_ips: Vec<String>,
    /// The Service's ClusterIP.
    pub cluster_ip: String,
    /// The kt-probe binary the pods run, which any pod can run too.
    pub bin: PathBuf,
}

/// kt-probe's Deployment and Service `name`, as YAML: `replicas` pods of image
/// `kt.invalid/shell` running `bin serve --listen 0.0.0.0:8080 --name $(POD_NAME)` as uid
/// 65532 under the restricted Pod Security Standard; Service port `http` 80→8080, and
/// with `grpc_port` also `grpc` 9090→8080.
pub fn probe_manifest(name: &str, replicas: i32, bin: &Path, grpc_port: bool) -> String {
    let bin = bin.display();
    let grpc = if grpc_port {
        "  - name: grpc\n    port: 9090\n    targetPort: 8080\n    appProtocol: kubernetes.io/h2c\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      terminationGracePeriodSeconds: 5
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: probe
        image: kt.invalid/shell
        command: ["{bin}"]
        args: ["serve", "--listen", "0.0.0.0:8080", "--name", "$(POD_NAME)"]
        securityContext:
          allowPrivilegeEscalation: false
          capabilities:
            drop: [ALL]
          readOnlyRootFilesystem: true
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          httpGet:
            path: /healthz
            port: 8080
          periodSeconds: 1
          failureThreshold: 3
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  selector:
    app: {name}
  ports:
  - name: http
    port: 80
    targetPort: 8080
{grpc}"#
    )
}

/// The kt-probe binary (testbed/probe: HTTP/1.1, h2c, WebSocket and gRPC peer and
/// clients), built once per process with `cargo build -p kt-probe` in this process's
/// profile and target directory (`$CARGO_TARGET_DIR` as the build saw it), then copied
/// to a world-readable 0755 path under the temporary directory, which pods (uid 65532,
/// seeing the host's filesystem) can execute. Copies of the same build share a path.
pub fn probe_bin() -> Result<PathBuf> {
    static BIN: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    BIN.get_or_init(|| build_probe().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("building kt-probe: {e}"))
}

fn build_probe() -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let exe = std::env::current_exe().context("this process's path")?;
    // Test binaries live in <target>/<profile>/deps, examples in .../examples, bins
    // (benches) in <target>/<profile>.
    let mut profile_dir = exe.parent().context("this process's directory")?;
    if profile_dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        profile_dir = profile_dir.parent().context("the profile directory")?;
    }
    let target_dir = profile_dir.parent().context("the target directory")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(&cargo)
        .args(["build", "-p", "kt-probe", "--profile", &profile])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{cargo} build -p kt-probe`"))?;
    ensure!(
        out.status.success(),
        "`cargo build -p kt-probe --profile {profile}` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let built = profile_dir.join("kt-probe");
    let meta =
        std::fs::metadata(&built).with_context(|| format!("cargo built no {}", built.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let root = std::env::temp_dir().join("kt-probe-bin");
    let dir = root.join(format!("{}-{mtime}", meta.len()));
    let dest = dir.join("kt-probe");
    if !dest.is_file() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for d in [&root, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} world-readable", d.display()))?;
        }
        // Another test process may copy the same build at once: copy aside, then rename.
        let tmp = dir.join(format!("kt-probe.{}.tmp", std::process::id()));
        std::fs::copy(&built, &tmp)
            .with_context(|| format!("copying {} to {}", built.display(), tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    }
    Ok(dest)
}

/// A pod named `client` that passes the restricted Pod Security Standard and only
/// sleeps (see [`TestNamespace::client_pod`]).
pub const CLIENT_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 0
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: client
    image: kt.invalid/shell
    command: ["sleep", "3600"]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
"#;

/// An HTTP server on 127.0.0.1 (a stand-in for a developer's local process) that
/// answers every request with `token`, a value only it knows; returns its port.
pub async fn token_server(token: String) -> Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let token = token.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{token}",
                    token.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(port)
}

/// One reply of the echo app's HTTP endpoint.
#[derive(Debug, Clone)]
pub struct EchoReply {
    /// The request method, e.g. `GET`.
    pub method: String,
    /// The request path as received.
    pub path: String,
    /// The pod that answered (from POD_NAME).
    pub pod: String,
    /// The namespace of that pod (from POD_NAMESPACE).
    pub namespace: String,
    /// The whole JSON document.
    pub raw: serde_json::Value,
}

impl EchoReply {
    /// Reads the echo app's JSON reply.
    pub fn from_json(v: serde_json::Value) -> Result<EchoReply> {
        let field = |name: &str| -> Result<String> {
            v.get(name)
                .and_then(|f| f.as_str())
                .map(str::to_owned)
                .with_context(|| format!("echo reply has no string field `{name}`: {v}"))
        };
        Ok(EchoReply {
            method: field("method")?,
            path: field("path")?,
            pod: field("pod")?,
            namespace: field("namespace")?,
            raw: v.clone(),
        })
    }

    /// Reads every echo reply in `text` (JSON documents one after another, as
    /// printed by several curl runs).
    pub fn parse_all(text: &str) -> Result<Vec<EchoReply>> {
        serde_json::Deserializer::from_str(text)
            .into_iter::<serde_json::Value>()
            .map(|v| {
                EchoReply::from_json(
                    v.with_context(|| format!("not a stream of JSON documents: {text}"))?,
                )
            })
            .collect()
    }
}

/// Byte `i` of the echo app's `/bytes/<n>` body.
pub fn echo_bytes_pattern(i: u64) -> u8 {
    // Reduce first so the arithmetic cannot overflow; equal to (i*31+7) mod 256.
    (((i % 256) * 31 + 7) % 256) as u8
}

/// A deterministic, non-periodic byte stream for round-trip tests: byte `i` of
/// the stream is byte `i % 8` (little-endian) of splitmix64(`i / 8`).
pub fn stream_pattern_fill(offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        let i = offset + k as u64;
        let word = splitmix64(i / 8);
        *b = word.to_le_bytes()[(i % 8) as usize];
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether a pod is Ready (condition Ready=True).
pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A pod's name (empty if it has none).
pub fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// A one-line summary of a pod's state, for timeout messages.
pub fn pod_summary(p: &Pod) -> String {
    let status = p.status.clone().unwrap_or_default();
    let conds: Vec<String> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| format!("{}={}", c.type_, c.status))
        .collect();
    let containers: Vec<String> = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| {
            let state = c.state.as_ref().map_or_else(
                || "unknown".to_owned(),
                |s| {
                    if let Some(w) = &s.waiting {
                        format!("waiting({})", w.reason.clone().unwrap_or_default())
                    } else if let Some(t) = &s.terminated {
                        format!(
                            "terminated({}, exit {})",
                            t.reason.clone().unwrap_or_default(),
                            t.exit_code
                        )
                    } else {
                        "running".to_owned()
                    }
                },
            );
            format!(
                "{}: {state} ready={} restarts={}",
                c.name, c.ready, c.restart_count
            )
        })
        .collect();
    format!(
        "pod {} phase={} ip={} deleting={} conditions=[{}] containers=[{}]",
        pod_name(p),
        status.phase.unwrap_or_default(),
        status.pod_ip.unwrap_or_default(),
        p.metadata.deletion_timestamp.is_some(),
        conds.join(","),
        containers.join(", ")
    )
}

/// What a probe of [`wait_until`] found.
pub enum Poll<T> {
    /// The condition holds; here is the value.
    Done(T),
    /// Not yet; this is what was seen instead.
    NotYet(String),
}

/// Probes every 500 ms until `probe` returns [`Poll::Done`] or `timeout` runs out.
/// An `Err` from the probe counts as "not yet" (the API may be briefly unavailable)
/// and is reported if the wait times out.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>>>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut probes = 0u32;
    loop {
        probes += 1;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let seen = match tokio::time::timeout(remaining.max(Duration::from_secs(1)), probe()).await
        {
            Ok(Ok(Poll::Done(v))) => {
                if probes > 1 {
                    eprintln!("waited {:?} ({probes} probes) for {what}", start.elapsed());
                }
                return Ok(v);
            }
            Ok(Ok(Poll::NotYet(seen))) => seen,
            Ok(Err(e)) => format!("error: {e:#}"),
            Err(_) => "the probe itself did not finish".to_owned(),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {seen}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `prefix-<6 random [a-z0-9]>`, cut to a valid namespace name (at most 63 chars).
pub fn unique_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut clean: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(63 - 7);
    let clean = clean.trim_end_matches('-');
    let suffix: String = (0..6)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect();
    format!("{clean}-{suffix}")
}

fn describe_kubectl(args: &[&str]) -> String {
    format!("`kubectl {}`", args.join(" "))
}

/// Runs a command to completion within `timeout` (killing it after), feeding it
/// `stdin` if given.
pub async fn run_bounded(
    mut cmd: Command,
    what: &str,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Output> {
    cmd.kill_on_drop(true)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("no stdin pipe")?;
        let input = input.to_owned();
        // Write concurrently with reading output, so a large input cannot deadlock.
        tokio::spawn(async move {
            let _ = pipe.write_all(input.as_bytes()).await;
            let _ = pipe.shutdown().await;
        });
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(res) => res.with_context(|| format!("running {what}")),
        Err(_) => bail!("{what} did not finish within {timeout:?} (killed)"),
    }
}

/// Returns stdout if the command exited 0; otherwise an error with its status,
/// stderr and stdout.
pub fn check_output(what: &str, out: Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    bail!(
        "{what} failed ({})\n--- stderr:\n{}\n--- stdout:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end(),
        stdout.trim_end()
    )
}

/// Runs a host command (not kubectl), bounded by `timeout`, and returns its output
/// whatever the exit status.
pub async fn host_command(program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let what = format!("`{program} {}`", args.join(" "));
    run_bounded(cmd, &what, None, timeout).await
}

/// A TCP stream to `host:port` through the SOCKS5 proxy `proxy` (no authentication; an
/// IP literal is sent as an address, anything else as a name the proxy resolves).
pub async fn socks5_connect(
    proxy: std::net::SocketAddr,
    host: &str,
    port: u16,
) -> Result<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(proxy)
        .await
        .with_context(|| format!("connecting to the SOCKS5 proxy {proxy}"))?;
    s.set_nodelay(true)?;
    s.write_all(&[5, 1, 0]).await?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method)
        .await
        .with_context(|| format!("SOCKS5 greeting to {proxy}"))?;
    anyhow::ensure!(method == [5, 0], "SOCKS5 proxy {proxy} refused: {method:?}");
    let mut req = vec![5, 1, 0];
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            req.push(4);
            req.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            req.push(3);
            req.push(u8::try_from(host.len()).context("host name too long for SOCKS5")?);
            req.extend_from_slice(host.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .await
        .with_context(|| format!("SOCKS5 CONNECT {host}:{port} through {proxy}"))?;
    if head[1] != 0 {
        anyhow::bail!(
            "SOCKS5 proxy {proxy}: CONNECT {host}:{port} refused with reply code {}",
            head[1]
        );
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => usize::from(s.read_u8().await?) + 2,
        other => anyhow::bail!("bad address type {other} in the SOCKS5 reply"),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).await?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_namespace_names() {
        let n = unique_name("e2e-A_very/long test name that goes on and on and on and on and on");
        assert!(n.len() <= 63, "{n}");
        assert!(n.starts_with("e2e-a-very-long"), "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_ne!(unique_name("x"), unique_name("x"));
    }

    #[test]
    fn forwarding_line_is_parsed() {
        assert_eq!(
            parse_forwarding_port("Forwarding from 127.0.0.1:41234 -> 8080"),
            Some(41234)
        );
        assert_eq!(
            parse_forwarding_port("Forwarding from [::1]:41234 -> 8080"),
            None
        );
    }

    #[test]
    fn echo_pattern_matches_the_documented_formula() {
        for i in [0u64, 1, 255, 256, 1 << 40] {
            assert_eq!(u64::from(echo_bytes_pattern(i)), (i * 31 + 7) % 256);
        }
    }

    #[test]
    fn stream_pattern_is_the_same_whatever_the_chunking() {
        let mut whole = vec![0u8; 1000];
        stream_pattern_fill(0, &mut whole);
        let mut parts = vec![0u8; 1000];
        let (a, b) = parts.split_at_mut(333);
        stream_pattern_fill(0, a);
        stream_pattern_fill(333, b);
        assert_eq!(whole, parts);
        assert_ne!(whole[..8], whole[8..16]);
    }

    #[test]
    fn echo_replies_are_parsed_from_concatenated_json() {
        let text = r#"{"method":"GET","path":"/a","pod":"p1","namespace":"n"}
{"method":"GET","path":"/b","pod":"p2","namespace":"n","headers":{}}"#;
        let r = EchoReply::parse_all(text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].pod, "p2");
        assert_eq!(r[0].path, "/a");
    }
}
