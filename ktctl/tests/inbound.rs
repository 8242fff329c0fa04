//! `ktctl exchange`, `preview`, `mesh`, `clean` and `recover <target>` end to end, driven as a
//! real process against the lab, in a namespace made by `testbed/test-namespace
//! --restricted --role inbound` (restricted Pod Security from the start, the echo
//! app, and a kubeconfig of a ServiceAccount bound to the shipped Roles only). The
//! local process is an HTTP server on 127.0.0.1 answering a token only it knows; an
//! echo pod (or, in scale mode, a client pod) calls the Service by name with curl.
//! Selector mode ended by Ctrl-C, scale mode ended by SIGTERM, ktctl killed with
//! SIGKILL (the swap shadow restores after `--restore-ttl`), preview, a held target,
//! clean and recover dry runs, bad input. A mesh: requests with the printed header
//! reach the local process, the rest the echo pods; the same value is refused.
//!
//! Needs the lab (`testbed/up`); fails when it is down.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kt_lab_tests::Lab;
use tokio::net::TcpListener;
use tokio::process::Command;

mod common;
use common::Ktctl;

/// Every kind of object kt may create for a swap or an expose.
const KT_KINDS: &str = "pods,services,leases,serviceaccounts,roles,rolebindings,secrets";

/// A namespace of `testbed/test-namespace create PREFIX --restricted --role inbound`,
/// deleted on drop.
struct Namespace {
    lab: Lab,
    name: String,
    kubeconfig: String,
}

impl Namespace {
    async fn create(lab: &Lab, prefix: &str) -> Result<Namespace> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../testbed/test-namespace");
        let out = Command::new(script)
            .args(["create", prefix, "--restricted", "--role", "inbound"])
            .stdin(Stdio::null())
            .output()
            .await
            .context("running testbed/test-namespace")?;
        ensure!(
            out.status.success(),
            "testbed/test-namespace create failed (is the lab up?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
                .with_context(|| format!("test-namespace printed no {key}: {text}"))
        };
        Ok(Namespace {
            lab: lab.clone(),
            name: value("KT_TEST_NAMESPACE=")?,
            kubeconfig: value("KT_TEST_KUBECONFIG=")?,
        })
    }

    /// `kubectl -n NS <args>` as the lab's admin.
    async fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.lab.kubectl(&all).await
    }

    /// `ktctl <args> --kubeconfig <scoped> -n NS`, not yet started.
    fn ktctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ktctl"));
        cmd.args(args)
            .args(["--kubeconfig", &self.kubeconfig, "-n", &self.name])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `ktctl <args>` to its end; (exit code, stdout, stderr).
    async fn ktctl_run(&self, args: &[&str]) -> Result<(Option<i32>, String, String)> {
        let out = tokio::time::timeout(Duration::from_secs(300), self.ktctl(args).output())
            .await
            .with_context(|| format!("ktctl {args:?} did not end"))?
            .context("running ktctl")?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The spec, labels and annotations of `object`: what a swap must put back.
    async fn snapshot(&self, object: &str) -> Result<String> {
        self.kubectl(&[
            "get",
            object,
            "-o",
            "jsonpath={.spec}{.metadata.labels}{.metadata.annotations}",
        ])
        .await
    }

    /// A running echo pod's name (echo pods call the Service in these tests).
    async fn echo_pod(&self) -> Result<String> {
        let names = self
            .kubectl(&[
                "get",
                "pods",
                "-l",
                "app=echo",
                "--field-selector=status.phase=Running",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ])
            .await?;
        names
            .split_whitespace()
            .next()
            .map(str::to_owned)
            .context("no running echo pod")
    }

    /// Waits (bounded: kube-proxy applies a new selector asynchronously, as in any
    /// cluster) until `url`, fetched with curl in an echo pod, answers with `want`.
    async fn wait_answer(&self, url: &str, want: &str) -> Result<()> {
        let pod = self.echo_pod().await?;
        self.wait_answer_from(&pod, url, want).await
    }

    /// A client pod that passes the restricted standard (for calls while the echo
    /// pods are scaled away); returns its name.
    async fn client_pod(&self) -> Result<String> {
        self.lab
            .kubectl_stdin(
                &["-n", &self.name, "apply", "-f", "-"],
                kt_lab_tests::CLIENT_POD,
            )
            .await?;
        self.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "pod/client",
            "--timeout=120s",
        ])
        .await?;
        Ok("client".to_owned())
    }

    /// As [`Namespace::wait_answer`], from `pod`.
    async fn wait_answer_from(&self, pod: &str, url: &str, want: &str) -> Result<()> {
        self.wait_curl(pod, &[url], want).await
    }

    /// Waits (bounded) until `curl -sS <args>` in `pod` answers with `want`.
    async fn wait_curl(&self, pod: &str, args: &[&str], want: &str) -> Result<()> {
        let mut last = String::new();
        for _ in 0..100 {
            let out = self
                .lab
                .kubectl_output(
                    &[
                        "-n",
                        &self.name,
                        "exec",
                        pod,
                        "--",
                        "curl",
                        "-sS",
                        "--max-time",
                        "10",
                    ]
                    .iter()
                    .chain(args)
                    .copied()
                    .collect::<Vec<_>>(),
                    None,
                )
                .await?;
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() && last.contains(want) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("curl {args:?} from pod {pod} never answered {want:?}; last: {last}")
    }

    /// Fails naming what kt left in the namespace.
    async fn nothing_of_kt_left(&self) -> Result<()> {
        let left = self
            .kubectl(&[
                "get",
                KT_KINDS,
                "-l",
                "app.kubernetes.io/managed-by=kt",
                "-o",
                "name",
            ])
            .await?;
        ensure!(left.trim().is_empty(), "left behind: {left}");
        Ok(())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../testbed/test-namespace");
        let _ = std::process::Command::new(script)
            .args(["delete", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn token() -> String {
    kt_lab_tests::unique_name("ktctl-token")
}

/// A port on 127.0.0.1 where nothing listens (bound, then closed).
async fn unused_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exchange_sends_the_services_traffic_here_and_ctrl_c_puts_it_back() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = Namespace::create(&lab, "ktctl-exchange").await?;
    let svc_before = ns.snapshot("service/echo").await?;
    let deploy_before = ns.snapshot("deployment/echo").await?;

    // Nothing listens locally: refused before anything changes, with the connect kind.
    let idle = unused_port().await?.to_string();
    let (code, _, err) = ns
        .ktctl_run(&["exchange", "deploy/echo", "--expose", &format!("{idle}:80")])
        .await?;
    ensure!(code == Some(23), "exit {code:?}: {err}");
    ensure!(
        err.contains("nothing listens") && err.contains("--skip-local-check"),
        "{err}"
    );
    ns.nothing_of_kt_left().await?;

    let token = token();
    let local = kt_lab_tests::token_server(token.clone()).await?;
    let expose = format!("{local}:80");
    let kt = Ktctl::spawn(ns.ktctl(&["exchange", "deploy/echo", "--expose", &expose])).await?;
    let summary = kt.summary.clone();

    let checks = async {
        ensure!(
            summary.contains("exchanged deploy/echo")
                && summary.contains("selector mode")
                && summary.contains(&format!("8080 -> 127.0.0.1:{local}")),
            "{summary}"
        );
        ns.wait_answer("http://echo/from-ktctl", &token).await?;
        let held = ns
            .kubectl(&[
                "get",
                "service/echo",
                "-o",
                "jsonpath={.metadata.annotations.kt\\.dev/owner}",
            ])
            .await?;
        ensure!(!held.trim().is_empty(), "service/echo records no holder");
        anyhow::Ok(())
    }
    .await;

    let (code, err) = kt.signal("INT").await?;
    if let Err(e) = checks {
        bail!("{e:#}\nktctl stdout:\n{summary}\nktctl stderr:\n{err}");
    }
    ensure!(code == Some(0), "ktctl exit {code:?}:\n{err}");
    ensure!(
        ns.snapshot("service/echo").await? == svc_before,
        "service/echo differs from before the exchange"
    );
    ensure!(
        ns.snapshot("deployment/echo").await? == deploy_before,
        "deployment/echo differs from before the exchange"
    );
    ns.nothing_of_kt_left().await?;
    ns.wait_answer("http://echo/again", "\"path\":\"/again\"")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exchange_in_scale_mode_scales_the_workload_away_and_ctrl_c_brings_it_back() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = Namespace::create(&lab, "ktctl-scale").await?;
    let client = ns.client_pod().await?;
    let svc_before = ns.snapshot("service/echo").await?;
    let deploy_before = ns.snapshot("deployment/echo").await?;
    let token = token();
    let local = kt_lab_tests::token_server(token.clone()).await?;
    let expose = format!("{local}:http");
    let kt = Ktctl::spawn(ns.ktctl(&[
        "exchange",
        "deploy/echo",
        "--expose",
        &expose,
        "--mode",
        "scale",
    ]))
    .await?;
    let summary = kt.summary.clone();
    let checks = async {
        ensure!(summary.contains("(scale mode"), "{summary}");
        ns.wait_answer_from(&client, "http://echo/scaled", &token)
            .await?;
        let replicas = ns
            .kubectl(&["get", "deployment/echo", "-o", "jsonpath={.spec.replicas}"])
            .await?;
        ensure!(
            replicas.trim() == "0",
            "deployment/echo has {replicas} replicas"
        );
        anyhow::Ok(())
    }
    .await;
    let (code, err) = kt.signal("TERM").await?;
    if let Err(e) = checks {
        bail!("{e:#}\nktctl stdout:\n{summary}\nktctl stderr:\n{err}");
    }
    ensure!(code == Some(0), "ktctl exit {code:?}:\n{err}");
    ensure!(
        err.contains("ktctl: scaled"),
        "no scaled event printed:\n{err}"
    );
    ensure!(ns.snapshot("service/echo").await? == svc_before);
    ensure!(
        ns.snapshot("deployment/echo").await? == deploy_before,
        "deployment/echo differs from before the exchange"
    );
    ns.wait_answer_from(&client, "http://echo/back", "\"path\":\"/back\"")
        .await?;
    ns.nothing_of_kt_left().await
}

/// ktctl killed with SIGKILL: nothing of it runs, and the swap shadow's watchdog puts
/// the Service back by itself once `--restore-ttl` passes without a heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_kill_9_the_swap_shadow_puts_the_service_back_after_the_restore_ttl() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = Namespace::create(&lab, "ktctl-kill").await?;
    let svc_before = ns.snapshot("service/echo").await?;
    let token = token();
    let local = kt_lab_tests::token_server(token.clone()).await?;
    let expose = format!("{local}:80");
    let kt = Ktctl::spawn(ns.ktctl(&[
        "exchange",
        "deploy/echo",
        "--expose",
        &expose,
        "--restore-ttl",
        "5",
        "--shadow-timeout",
        "5",
    ]))
    .await?;
    let summary = kt.summary.clone();
    let swap_id = summary
        .split("shadow pod kt-shadow-swap-")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .with_context(|| format!("no swap shadow in:\n{summary}"))?
        .to_owned();
    ns.wait_answer("http://echo/before-kill", &token).await?;
    let (code, _) = kt.signal("KILL").await?;
    ensure!(code.is_none(), "ktctl was not killed: {code:?}");

    // Bounded wait, far above the TTL: the watchdog restores, then the shadow and
    // its identity go.
    let selector = format!("kt.dev/session={swap_id}");
    let mut last = String::new();
    for _ in 0..120 {
        let now = ns.snapshot("service/echo").await?;
        last = ns
            .kubectl(&["get", KT_KINDS, "-l", &selector, "-o", "name"])
            .await?;
        if now == svc_before && last.trim().is_empty() {
            ns.wait_answer("http://echo/after-kill", "\"path\":\"/after-kill\"")
                .await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!(
        "after kill -9 the Service was not put back or the swap's objects stayed:\n{last}\nService now: {}",
        ns.snapshot("service/echo").await?
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_exchange_of_the_same_target_is_refused_naming_the_holder() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = Namespace::create(&lab, "ktctl-conflict").await?;
    let svc_before = ns.snapshot("service/echo").await?;
    let local = kt_lab_tests::token_server(token()).await?;
    let expose = format!("{local}:80");
    let kt = Ktctl::spawn(ns.ktctl(&["exchange", "deploy/echo", "--expose", &expose])).await?;
    let summary = kt.summary.clone();
    let checks = async {
        let held = ns
            .kubectl(&[
                "get",
                "service/echo",
                "-o",
                "jsonpath={.metadata.annotations.kt\\.dev/owner}",
            ])
            .await?;
        ensure!(!held.trim().is_empty(), "service/echo records no holder");
        let during = ns.snapshot("service/echo").await?;
        let (code, _, err) = ns
            .ktctl_run(&["swap", "deploy/echo", "--expose", &expose])
            .await?;
        ensure!(code == Some(24), "second exchange: exit {code:?}: {err}");
        ensure!(
            err.contains("error[conflict]") && err.contains(held.trim()),
            "the refusal does not name holder {held}: {err}"
        );
        ensure!(
            ns.snapshot("service/echo").await? == during,
            "the refused exchange changed service/echo"
        );
        anyhow::Ok(())
    }
    .await;
    let (code, err) = kt.signal("INT").await?;
    if let Err(e) = checks {
        bail!("{e:#}\nktctl stdout:\n{summary}\nktctl stderr:\n{err}");
    }
    ensure!(code == Some(0), "ktctl exit {code:?}:\n{err}");
    ensure!(ns.snapshot("service/echo").await? == svc_before);
    ns.nothing_of_kt_left().await
}

/// The value of the `  send header  NAME: VALUE` line of a mesh summary, as
/// `NAME: VALUE`.
fn header_to_send(summary: &str) -> Result<String> {
    summary
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("send header"))
        .map(|h| h.trim().to_owned())
        .with_context(|| format!("no `send header` line in:\n{summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mesh_sends_requests_with_the_printed_header_here_and_the_rest_to_the_service() -> Result<()>
{
    let lab = Lab::connect().await?;
    let ns = Namespace::create(&lab, "ktctl-mesh").await?;
    let svc_before = ns.snapshot("service/echo").await?;
    let deploy_before = ns.snapshot("deployment/echo").await?;
    let token = token();
    let local = kt_lab_tests::token_server(token.clone()).await?;
    let expose = format!("{local}:80");
    let kt = Ktctl::spawn(ns.ktctl(&["mesh", "svc/echo", "--expose", &expose])).await?;
    let summary = kt.summary.clone();

    let checks = async {
        ensure!(
            summary.contains("meshed Service echo")
                && summary.contains("rule        version=")
                && summary.contains(&format!("8080 -> 127.0.0.1:{local}")),
            "{summary}"
        );
        let header = header_to_send(&summary)?;
        let (name, value) = header.split_once(": ").context("`name: value`")?;
        ensure!(name == "version" && !value.is_empty(), "{header}");
        let pod = ns.echo_pod().await?;
        ns.wait_curl(&pod, &["-H", &header, "http://echo/mine"], &token)
            .await?;
        // Without the header, or with another value: the Service's own pods.
        ns.wait_curl(&pod, &["http://echo/plain"], "\"path\":\"/plain\"")
            .await?;
        let other = format!("version: not-{value}");
        ns.wait_curl(
            &pod,
            &["-H", &other, "http://echo/other"],
            "\"path\":\"/other\"",
        )
        .await?;
        // A second developer with the same value is refused, naming the first.
        let during = ns.snapshot("service/echo").await?;
        let idle = unused_port().await?.to_string();
        let mark = format!("version:{value}");
        let (code, _, err) = ns
            .ktctl_run(&[
                "mesh",
                "svc/echo",
                "--expose",
                &format!("{idle}:80"),
                "--skip-local-check",
                "--versionMark",
                &mark,
            ])
            .await?;
        ensure!(code == Some(24), "second mesh: exit {code:?}: {err}");
        ensure!(
            err.contains("error[conflict]") && err.contains(value),
            "the refusal does not name the value: {err}"
        );
        ensure!(
            ns.snapshot("service/echo").await? == during,
            "the refused mesh changed service/echo"
        );
        ns.wait_curl(&pod, &["-H", &header, "http://echo/still"], &token)
            .await?;
        anyhow::Ok(())
    }
    .await;

    let (code, err) = kt.signal("INT").await?;
    if let Err(e) = checks {
        bail!("{e:#}\nktctl stdout:\n{summary}\nktctl stderr:\n{err}");
    }
    ensure!(code == Some(0), "ktctl exit {code:?}:\n{err}");
    ensure!(
        ns.snapshot("service/echo").await? == svc_before,
        "service/echo differs from before the mesh"
    );
    ensure!(
        ns.snapshot("deployment/echo").await? == deploy_before,
        "deployment/echo differs from before the mesh"
    );
    ns.nothing_of_kt_left().await?;
    let header = header_to_send(&summary)?;
    let pod = ns.echo_pod().await?;
    ns.wait_curl(
        &pod,
        &["-H", &header, "http://echo/back"],
        "\"path\":\"/back\"",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_mesh_input_is_a_usage_error_and_an_unmeshable_target_says_why() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = Namespace::create(&lab, "ktctl-mesh-bad").await?;
    let (code, _, err) = ns
        .ktctl_run(&[
            "mesh",
            "svc/echo",
            "--expose",
            "8080",
            "--rule",
            "a=1 && /x || b=2",
        ])
        .await?;
    ensure!(code == Some(2), "exit {code:?}: {err}");
    ensure!(err.contains("mixes `&&` and `||`"), "{err}");
    let (code, _, err) = ns
        .ktctl_run(&[
            "mesh",
            "svc/no-such",
            "--expose",
            "8080",
            "--skip-local-check",
        ])
        .await?;
    ensure!(code == Some(9), "exit {code:?}: {err}");
    ensure!(
        err.contains("error[not_found]") && err.contains("no-such"),
        "{err}"
    );
    ns.nothing_of_kt_left().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preview_makes_a_service_that_pods_reach_by_name_until_ctrl_c() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = Namespace::create(&lab, "ktctl-preview").await?;
    let token = token();
    let local = kt_lab_tests::token_server(token.clone()).await?;
    let expose = format!("{local}:8081");

    // An existing Service's name is refused as a conflict.
    let (code, _, err) = ns
        .ktctl_run(&["preview", "echo", "--expose", &expose])
        .await?;
    ensure!(code == Some(24), "exit {code:?}: {err}");
    ns.nothing_of_kt_left().await?;

    let kt = Ktctl::spawn(ns.ktctl(&["expose", "mine", "--expose", &expose])).await?;
    let summary = kt.summary.clone();
    let checks = async {
        ensure!(
            summary.contains("previewing Service mine (ClusterIP)"),
            "{summary}"
        );
        ns.wait_answer("http://mine:8081/x", &token).await
    }
    .await;
    let (code, err) = kt.signal("INT").await?;
    if let Err(e) = checks {
        bail!("{e:#}\nktctl stdout:\n{summary}\nktctl stderr:\n{err}");
    }
    ensure!(code == Some(0), "ktctl exit {code:?}:\n{err}");
    let left = ns
        .kubectl(&[
            "get",
            "services",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await?;
    ensure!(left.trim() == "echo", "Services after Ctrl-C: {left}");
    ns.nothing_of_kt_left().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clean_and_recover_dry_runs_list_nothing_on_a_clean_namespace() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = Namespace::create(&lab, "ktctl-clean").await?;
    let svc_before = ns.snapshot("service/echo").await?;
    let (code, out, err) = ns.ktctl_run(&["clean", "--dry-run"]).await?;
    ensure!(code == Some(0), "clean --dry-run: exit {code:?}: {err}");
    ensure!(
        out == "nothing to clean\n",
        "clean --dry-run printed: {out}"
    );
    let (code, out, err) = ns
        .ktctl_run(&["recover", "deploy/echo", "--dry-run"])
        .await?;
    ensure!(code == Some(0), "recover --dry-run: exit {code:?}: {err}");
    ensure!(
        out == "nothing to clean\n",
        "recover --dry-run printed: {out}"
    );
    let (code, out, err) = ns.ktctl_run(&["clean"]).await?;
    ensure!(code == Some(0), "clean: exit {code:?}: {err}");
    ensure!(out == "nothing to clean\n", "clean printed: {out}");
    let (code, _, err) = ns.ktctl_run(&["recover", "deploy/nothing-here"]).await?;
    ensure!(
        code == Some(9),
        "recover of a missing target: exit {code:?}: {err}"
    );
    ensure!(err.contains("nothing-here"), "{err}");
    ensure!(ns.snapshot("service/echo").await? == svc_before);
    ns.nothing_of_kt_left().await
}

/// Bad input never reaches the cluster: clap's usage error (2) with what is accepted.
#[tokio::test]
async fn bad_exchange_input_is_a_usage_error_that_says_what_is_accepted() -> Result<()> {
    for (args, needle) in [
        (
            &["exchange", "deploy/web", "--expose", "8080:"][..],
            "`local:remote`",
        ),
        (
            &["exchange", "deploy/web", "--expose", "http"][..],
            "1-65535",
        ),
        (
            &[
                "exchange",
                "deploy/web",
                "--expose",
                "80",
                "--mode",
                "ephemeral",
            ][..],
            "`scale`",
        ),
        (&["exchange", "deploy/web"][..], "--expose"),
        (
            &["preview", "mine", "--expose", "80", "--type", "Ingress"][..],
            "LoadBalancer",
        ),
        (&["recover", "--dry-run"][..], "<TARGET>"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ktctl"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2),
            "{args:?}: {:?} {err}",
            out.status
        );
        ensure!(err.contains(needle), "{args:?}: no {needle:?} in: {err}");
    }
    Ok(())
}
