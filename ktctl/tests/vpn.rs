//! VPN mode end to end, entirely inside the lab's laptop network namespace: `ktctl
//! connect --mode vpn` runs there (through `ip netns exec`, which also bind-mounts the
//! laptop's own resolv.conf and hosts files over /etc's), and plain programs with no
//! proxy settings (curl, getent, ping, python) reach the cluster by name and address.
//! Nothing here touches the machine's root namespace: every check compares the laptop
//! namespace's links, routes, resolv.conf and hosts file with a snapshot taken before.
//!
//! Needs the lab (`testbed/up`) and root. Tests run one at a time (one tun device and
//! one resolv.conf per namespace). Two tests give ktctl its own resolv.conf through a
//! private mount namespace (`unshare --mount`) inside the laptop's; the laptop's files
//! stay untouched. One of them also runs its own office resolver (the lab's CoreDNS
//! binary on 127.0.0.53 in the laptop namespace) and asks getent inside ktctl's mount
//! namespace (`nsenter --mount`). One test runs ktctl outside the laptop namespace: a
//! missing namespace ends it with the `not_found` exit status. One runs the laptop with
//! systemd-resolved as its resolver (`testbed/laptop-resolved`: the distribution's
//! resolved and a D-Bus system bus in a mount namespace of their own, entered with
//! `nsenter --mount`) and adds a neighbour of the laptop: a network namespace of its
//! own (`ktlab-nb<pid>`, deleted at the end, also on failure) behind a veth pair.

use std::process::Stdio;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kt_lab_tests::{EchoApp, Lab, TestNamespace};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

mod common;
use common::Ktctl;

const LAPTOP_NS: &str = "ktlab-laptop";
const LAPTOP_RESOLV: &str = "/etc/netns/ktlab-laptop/resolv.conf";
const LAPTOP_HOSTS: &str = "/etc/netns/ktlab-laptop/hosts";
/// The API server as the laptop reaches it: never routed into the tunnel.
const API_FROM_LAPTOP: &str = "10.88.255.1";
/// An address of the laptop's own subnet (10.88.255.0/30 on eth0) that only the main
/// table routes (not the laptop's address, not the broadcast address).
const LAPTOP_SUBNET_ADDR: &str = "10.88.255.0";
/// The upstream DNS server in the resolv.conf one test gives ktctl (TEST-NET-2).
const TEST_UPSTREAM: &str = "198.51.100.53";

/// One VPN test at a time: they share the laptop namespace.
static LAPTOP: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

fn laptop_kubeconfig() -> String {
    std::env::var("KT_LAPTOP_KUBECONFIG")
        .unwrap_or_else(|_| "/run/ktlab/laptop.kubeconfig".to_owned())
}

/// A command run inside the laptop namespace, with no proxy variables.
fn laptop(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", LAPTOP_NS, program])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs a command in the laptop namespace; returns (success, stdout, stderr).
async fn run_laptop(program: &str, args: &[&str]) -> Result<(bool, String, String)> {
    let out = tokio::time::timeout(Duration::from_secs(120), laptop(program, args).output())
        .await
        .with_context(|| format!("{program} {args:?} in the laptop namespace did not end"))?
        .with_context(|| format!("running {program} in the laptop namespace"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Runs a command in the laptop namespace and insists that it succeeds.
async fn laptop_ok(program: &str, args: &[&str]) -> Result<String> {
    let (ok, out, err) = run_laptop(program, args).await?;
    ensure!(
        ok,
        "{program} {args:?} failed in the laptop namespace:\n{out}\n{err}"
    );
    Ok(out)
}

/// The laptop namespace's network and resolver state.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    links: String,
    routes: String,
    resolv: Vec<u8>,
    hosts: Vec<u8>,
}

async fn snapshot() -> Result<Snapshot> {
    let ip = |args: &'static [&'static str]| async move {
        let out = Command::new("ip").args(args).output().await?;
        ensure!(out.status.success(), "ip {args:?}: {out:?}");
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    Ok(Snapshot {
        links: ip(&["-n", LAPTOP_NS, "-o", "link", "show"]).await?,
        routes: ip(&["-n", LAPTOP_NS, "route", "show", "table", "all"]).await?
            + &ip(&["-n", LAPTOP_NS, "-6", "route", "show", "table", "all"]).await?,
        resolv: std::fs::read(LAPTOP_RESOLV).context(LAPTOP_RESOLV)?,
        hosts: std::fs::read(LAPTOP_HOSTS).context(LAPTOP_HOSTS)?,
    })
}

fn assert_same(before: &Snapshot, after: &Snapshot, when: &str) -> Result<()> {
    ensure!(
        before.links == after.links,
        "{when}: links differ\nbefore:\n{}\nafter:\n{}",
        before.links,
        after.links
    );
    ensure!(
        before.routes == after.routes,
        "{when}: routes differ\nbefore:\n{}\nafter:\n{}",
        before.routes,
        after.routes
    );
    ensure!(
        before.resolv == after.resolv,
        "{when}: resolv.conf differs\nbefore:\n{}\nafter:\n{}",
        String::from_utf8_lossy(&before.resolv),
        String::from_utf8_lossy(&after.resolv)
    );
    ensure!(
        before.hosts == after.hosts,
        "{when}: hosts differs\nbefore:\n{}\nafter:\n{}",
        String::from_utf8_lossy(&before.hosts),
        String::from_utf8_lossy(&after.hosts)
    );
    Ok(())
}

/// `GET http://{host}/{path}` from the laptop with plain curl (no proxy); fails unless
/// the echo app reports that path.
async fn laptop_get_echo(host: &str, path: &str) -> Result<()> {
    let url = format!("http://{host}/{path}");
    let body = laptop_ok("curl", &["-sS", "--fail", "--max-time", "20", &url]).await?;
    ensure!(body.contains(&format!("\"path\":\"/{path}\"")), "{body}");
    Ok(())
}

/// Ends ktctl with Ctrl-C. The test's own failure (`result`) is reported first, with
/// ktctl's stderr; then ktctl must have exited 0 and the laptop must read as `before`.
async fn stop_and_compare(
    kt: Ktctl,
    result: Result<()>,
    before: &Snapshot,
    when: &str,
) -> Result<()> {
    let (code, stderr) = kt.signal("INT").await?;
    if let Err(e) = result {
        bail!("{e:#}\nktctl stderr:\n{stderr}");
    }
    ensure!(code == Some(0), "ktctl exit {code:?} {when}:\n{stderr}");
    assert_same(before, &snapshot().await?, when)
}

/// Ways to start `ktctl connect` in the laptop namespace.
impl Ktctl {
    /// Starts it in VPN mode and waits for "press Ctrl-C"; fails with its stderr if it
    /// exits.
    async fn start(ns: &TestNamespace, extra: &[&str]) -> Result<Ktctl> {
        Self::start_mode(ns, "vpn", extra).await
    }

    /// Starts it in `mode` (vpn or proxy).
    async fn start_mode(ns: &TestNamespace, mode: &str, extra: &[&str]) -> Result<Ktctl> {
        Self::start_wrapped(ns, mode, extra, &[]).await
    }

    /// Starts it in `mode`, run by the program and arguments of `wrapper` (none: run
    /// directly) inside the laptop namespace.
    async fn start_wrapped(
        ns: &TestNamespace,
        mode: &str,
        extra: &[&str],
        wrapper: &[&str],
    ) -> Result<Ktctl> {
        let kubeconfig = laptop_kubeconfig();
        let mut args = vec![
            "connect",
            "--mode",
            mode,
            "--kubeconfig",
            &kubeconfig,
            "-n",
            ns.name(),
        ];
        args.extend_from_slice(extra);
        let (program, args) = match wrapper {
            [] => (env!("CARGO_BIN_EXE_ktctl"), args),
            [program, rest @ ..] => {
                let mut all = rest.to_vec();
                all.push(env!("CARGO_BIN_EXE_ktctl"));
                all.extend(args);
                (*program, all)
            }
        };
        Ktctl::spawn(laptop(program, &args))
            .await
            .context("ktctl in the laptop namespace")
    }
}

async fn setup(test: &str) -> Result<(Lab, TestNamespace, EchoApp)> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace(test).await?;
    let echo = ns.deploy_echo(1).await?;
    Ok((lab, ns, echo))
}

#[tokio::test]
async fn plain_programs_reach_services_pods_and_names_then_everything_is_restored() -> Result<()> {
    let _one = LAPTOP.lock().await;
    let (_lab, ns, echo) = setup("vpn-reach").await?;
    let before = snapshot().await?;
    let n = ns.name();
    let kt = Ktctl::start(&ns, &["--dns", "resolv-conf"]).await?;
    let result = async {
        // Names: FQDN, namespace-qualified, short (resolv.conf search list), by getent
        // (the libc resolver every program uses) and by curl.
        let fqdn = format!("echo.{n}.svc.cluster.local");
        let hosts = laptop_ok("getent", &["hosts", &fqdn]).await?;
        ensure!(
            hosts.contains(&echo.cluster_ip),
            "getent hosts {fqdn}: {hosts:?}, want {}",
            echo.cluster_ip
        );
        for host in [fqdn.clone(), format!("echo.{n}"), "echo".to_owned()] {
            let url = format!("http://{host}/hello");
            let body = laptop_ok("curl", &["-sS", "--fail", "--max-time", "20", &url]).await?;
            ensure!(body.contains("\"path\":\"/hello\""), "{url}: {body}");
        }
        // Addresses: the ClusterIP and the pod IP.
        for url in [
            format!("http://{}/by-ip", echo.cluster_ip),
            format!("http://{}:8080/by-pod-ip", echo.pod_ips[0]),
        ] {
            let body = laptop_ok("curl", &["-sS", "--fail", "--max-time", "20", &url]).await?;
            ensure!(body.contains("\"path\":\"/by-"), "{url}: {body}");
        }
        // Names outside the cluster still go to the laptop's own DNS server.
        let corp = laptop_ok("getent", &["hosts", "intranet.corp.test"]).await?;
        ensure!(corp.contains("192.0.2.80"), "intranet.corp.test: {corp:?}");
        // UDP echo through the tun device.
        let udp = laptop_ok("python3", &["-c", UDP_ECHO, &echo.cluster_ip, "9001"]).await?;
        ensure!(udp.trim() == "udp ok", "UDP echo: {udp}");
        // 64 MiB down (the /bytes pattern) and 64 MiB up and back through the TCP echo,
        // which answers only after our half-close: both verified byte for byte.
        let big = laptop_ok("python3", &["-c", BIG_TRANSFER, &fqdn]).await?;
        ensure!(
            big.trim() == "download ok\necho ok",
            "64 MiB transfers: {big}"
        );
        // A closed port is refused or reset at once, not left to time out.
        let (ok, _, err) = run_laptop(
            "curl",
            &[
                "-sS",
                "--max-time",
                "30",
                &format!("http://{}:1/", echo.pod_ips[0]),
            ],
        )
        .await?;
        ensure!(
            !ok && !err.contains("timed out"),
            "a closed port should fail fast: {err}"
        );
        // ICMP to a cluster address ends with an answer (an ICMP error), not silence.
        let (_, out, err) = run_laptop("ping", &["-c", "1", "-W", "5", &echo.pod_ips[0]]).await?;
        ensure!(
            out.contains("From ") || out.contains("bytes from"),
            "ping {} got no answer at all:\n{out}\n{err}",
            echo.pod_ips[0]
        );
        // The API server stays on the laptop's own link.
        let via = laptop_ok("ip", &["route", "get", API_FROM_LAPTOP]).await?;
        ensure!(via.contains("dev eth0"), "API server route: {via}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    stop_and_compare(kt, result, &before, "after Ctrl-C").await?;
    common::no_kt_pods_left(&ns).await
}

#[tokio::test]
async fn after_kill_9_the_next_start_restores_resolv_conf() -> Result<()> {
    let _one = LAPTOP.lock().await;
    let (_lab, ns, _echo) = setup("vpn-kill").await?;
    let before = snapshot().await?;
    let kt = Ktctl::start(&ns, &["--dns", "resolv-conf"]).await?;
    let during = snapshot().await?;
    ensure!(
        during.resolv != before.resolv,
        "resolv.conf unchanged while connected"
    );
    ensure!(
        during.links != before.links,
        "no tun device while connected"
    );
    let (code, _) = kt.signal("KILL").await?;
    ensure!(
        code.is_none(),
        "ktctl should have died of SIGKILL, got {code:?}"
    );
    // The device and its routes die with the process; resolv.conf stays changed...
    let killed = snapshot().await?;
    ensure!(
        killed.links == before.links && killed.routes == before.routes,
        "{killed:?}"
    );
    ensure!(
        killed.resolv == during.resolv,
        "resolv.conf changed by itself?"
    );
    // ...until the next start puts it back (and says so).
    let kt = Ktctl::start(&ns, &["--dns", "resolv-conf"]).await?;
    let (code, stderr) = kt.signal("TERM").await?;
    ensure!(code == Some(0), "ktctl exit {code:?}:\n{stderr}");
    ensure!(
        stderr.contains("restored"),
        "no recovery reported:\n{stderr}"
    );
    assert_same(
        &before,
        &snapshot().await?,
        "after kill -9 and a new session",
    )?;
    // `ktctl recover` finds nothing left.
    let out = laptop_ok(env!("CARGO_BIN_EXE_ktctl"), &["recover"]).await?;
    ensure!(out.contains("nothing to recover"), "{out}");
    Ok(())
}

#[tokio::test]
async fn a_killed_clients_shadow_ends_itself_and_the_next_session_deletes_it() -> Result<()> {
    let _one = LAPTOP.lock().await;
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kill-proxy").await?;
    let kt = Ktctl::start_mode(&ns, "proxy", &["--shadow-timeout", "3"]).await?;
    let pods = ns.kubectl(&["get", "pods", "-o", "name"]).await?;
    let first = pods.trim().to_owned();
    ensure!(first.starts_with("pod/kt-shadow-"), "pods: {pods}");
    kt.signal("KILL").await?;
    // The shadow's watchdog sees no client for 3 s and exits: the pod ends.
    let mut phase = String::new();
    for _ in 0..60 {
        phase = ns
            .kubectl(&["get", &first, "-o", "jsonpath={.status.phase}"])
            .await?;
        if phase == "Failed" || phase == "Succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ensure!(
        phase == "Failed" || phase == "Succeeded",
        "the shadow of a killed client is still {phase}"
    );
    // The next session in the namespace removes it.
    let kt = Ktctl::start_mode(&ns, "proxy", &[]).await?;
    let (code, stderr) = kt.signal("INT").await?;
    ensure!(code == Some(0), "ktctl exit {code:?}:\n{stderr}");
    ensure!(
        stderr.contains(&format!(
            "ended shadow pod {}/{}",
            ns.name(),
            &first["pod/".len()..]
        )),
        "no sweep reported:\n{stderr}"
    );
    // The deletion is in the background: wait for it (bounded).
    let mut left = String::new();
    for _ in 0..30 {
        left = ns.kubectl(&["get", "pods,secrets", "-o", "name"]).await?;
        if !left.contains("kt-shadow") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("left behind: {left}")
}

#[tokio::test]
async fn hosts_mode_writes_and_removes_service_names() -> Result<()> {
    let _one = LAPTOP.lock().await;
    let (_lab, ns, echo) = setup("vpn-hosts").await?;
    let before = snapshot().await?;
    let n = ns.name();
    let kt = Ktctl::start(&ns, &["--dns", "hosts"]).await?;
    let result = async {
        let hosts = String::from_utf8(std::fs::read(LAPTOP_HOSTS)?)?;
        ensure!(
            hosts.contains(&format!("echo.{n}.svc.cluster.local")),
            "{hosts}"
        );
        ensure!(
            before.resolv == snapshot().await?.resolv,
            "hosts mode changed resolv.conf"
        );
        let got = laptop_ok("getent", &["hosts", &format!("echo.{n}")]).await?;
        ensure!(
            got.contains(&echo.cluster_ip),
            "getent hosts echo.{n}: {got}"
        );
        laptop_get_echo(&format!("echo.{n}"), "h").await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    stop_and_compare(kt, result, &before, "after hosts mode").await?;
    common::no_kt_pods_left(&ns).await
}

#[tokio::test]
async fn a_route_covering_the_api_server_is_split_around_it() -> Result<()> {
    let _one = LAPTOP.lock().await;
    let (_lab, ns, echo) = setup("vpn-api").await?;
    let before = snapshot().await?;
    // 10.88.0.0/16 holds the API server's address as the laptop reaches it.
    let kt = Ktctl::start(
        &ns,
        &[
            "--dns",
            "off",
            "--include-cidr",
            "10.88.0.0/16",
            "--exclude-cidr",
            "10.244.0.0/24",
        ],
    )
    .await?;
    let result = async {
        let via = laptop_ok("ip", &["route", "get", API_FROM_LAPTOP]).await?;
        ensure!(via.contains("dev eth0"), "API server route: {via}");
        let routed = laptop_ok("ip", &["route", "get", "10.88.1.1"]).await?;
        ensure!(
            !routed.contains("dev eth0"),
            "10.88.1.1 should go to the tun: {routed}"
        );
        // Excluded: the pod range is not routed, the Service range still is.
        // (The laptop has no default route: "unreachable" is the answer without kt.)
        let (_, pod, err) = run_laptop("ip", &["route", "get", &echo.pod_ips[0]]).await?;
        ensure!(
            !pod.contains("dev kt") && (pod.contains("dev eth0") || err.contains("unreachable")),
            "excluded pod range routed: {pod} {err}"
        );
        ensure!(
            kt.summary.contains("10.96."),
            "no Service range in the summary:\n{}",
            kt.summary
        );
        laptop_get_echo(&echo.cluster_ip, "x").await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    stop_and_compare(kt, result, &before, "after the session").await
}

#[tokio::test]
async fn the_upstream_resolver_and_the_local_subnet_stay_out_of_an_include() -> Result<()> {
    let _one = LAPTOP.lock().await;
    let (_lab, ns, echo) = setup("vpn-keepout").await?;
    let before = snapshot().await?;
    // ktctl sees its own resolv.conf (a private mount over the laptop's), whose upstream
    // lies inside an included range; the laptop's subnet 10.88.255.0/30 lies inside the
    // other include.
    let resolv = std::env::temp_dir().join(format!("kt-vpn-keepout-{}.conf", std::process::id()));
    std::fs::write(
        &resolv,
        format!("search corp.test\nnameserver {TEST_UPSTREAM}\n"),
    )
    .with_context(|| resolv.display().to_string())?;
    let resolv_path = resolv.display().to_string();
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#,
        &resolv_path,
    ];
    let started = Ktctl::start_wrapped(
        &ns,
        "vpn",
        &[
            "--dns",
            "off",
            "--include-cidr",
            "198.51.100.0/24",
            "--include-cidr",
            "10.88.0.0/16",
        ],
        &wrapper,
    )
    .await;
    let _ = std::fs::remove_file(&resolv);
    let kt = started?;
    let result = async {
        // Not routed: the answer is the laptop's own (eth0, or "unreachable" as the laptop
        // has no default route), never the tun device.
        for (addr, what) in [
            (TEST_UPSTREAM, "the upstream resolver"),
            (LAPTOP_SUBNET_ADDR, "the laptop's own subnet"),
            (API_FROM_LAPTOP, "the API server"),
        ] {
            let (_, via, err) = run_laptop("ip", &["route", "get", addr]).await?;
            ensure!(
                !via.contains("dev kt")
                    && (via.contains("dev eth0") || err.contains("unreachable")),
                "{what} ({addr}) is routed into the tunnel: {via} {err}"
            );
        }
        // The rest of each include is.
        for addr in ["198.51.100.54", "10.88.1.1"] {
            let via = laptop_ok("ip", &["route", "get", addr]).await?;
            ensure!(via.contains("dev kt"), "{addr} should go to the tun: {via}");
        }
        laptop_get_echo(&echo.cluster_ip, "k").await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    stop_and_compare(kt, result, &before, "after the session").await?;
    common::no_kt_pods_left(&ns).await
}

/// The office resolver of the next test: its own loopback address in the laptop
/// namespace (kt's local server takes 127.0.0.1 to 127.0.0.4).
const OFFICE_UPSTREAM: &str = "127.0.0.53";

#[tokio::test]
async fn an_upstream_name_equal_to_a_services_svc_ns_is_the_upstreams() -> Result<()> {
    let _one = LAPTOP.lock().await;
    let (_lab, ns, echo) = setup("vpn-noshadow").await?;
    let n = ns.name();
    // An ExternalName Service named like a public name (the upstream's `ext.<ns>`).
    ns.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\n  namespace: {n}\n\
         spec:\n  type: ExternalName\n  externalName: intranet.corp.test\n"
    ))
    .await?;
    let before = snapshot().await?;
    // An office resolver that knows `echo.<ns>` and `ext.<ns>` (as a public zone named
    // like the namespace would) and, like the lab's office DNS, `intranet.corp.test`;
    // it refuses every other zone. It runs in the laptop namespace; ktctl and getent
    // see it through their own resolv.conf (a private mount namespace: the laptop's
    // files stay untouched).
    let dir = std::env::temp_dir().join(format!("kt-vpn-noshadow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let corefile = dir.join("Corefile");
    std::fs::write(
        &corefile,
        format!(
            "{n}:53 {{\n  bind {OFFICE_UPSTREAM}\n  hosts {{\n    192.0.2.77 echo.{n}\n    \
             192.0.2.78 ext.{n}\n  }}\n}}\ncorp.test:53 {{\n  bind {OFFICE_UPSTREAM}\n  \
             hosts {{\n    192.0.2.80 intranet.corp.test\n  }}\n}}\n"
        ),
    )?;
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("search corp.test\nnameserver {OFFICE_UPSTREAM}\n"),
    )?;
    let coredns = std::env::var("KT_COREDNS").unwrap_or_else(|_| "/run/ktlab/bin/coredns".into());
    let corefile_path = corefile.display().to_string();
    let mut office = laptop(&coredns, &["-conf", &corefile_path])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the test's office resolver")?;
    let resolv_path = resolv.display().to_string();
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#,
        &resolv_path,
    ];
    let started = async {
        // The office resolver answers before ktctl reads its upstream.
        let mut ready = false;
        for _ in 0..50 {
            let (ok, out, _) = run_laptop(
                "dig",
                &[
                    &format!("@{OFFICE_UPSTREAM}"),
                    "+short",
                    &format!("echo.{n}"),
                ],
            )
            .await?;
            if ok && out.contains("192.0.2.77") {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(
            ready,
            "the test's office resolver did not answer (its log is above)"
        );
        Ktctl::start_wrapped(&ns, "vpn", &["--dns", "resolv-conf"], &wrapper).await
    }
    .await;
    let kt = match started {
        Ok(kt) => kt,
        Err(e) => {
            let _ = office.start_kill();
            let _ = office.wait().await;
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let result = async {
        // getent in ktctl's mount namespace: it sees the resolv.conf ktctl installed.
        let pid = kt.pid()?.to_string();
        let lookup = |name: String| {
            let pid = pid.clone();
            async move {
                let (_, out, err) = run_laptop(
                    "nsenter",
                    &["--target", &pid, "--mount", "getent", "ahostsv4", &name],
                )
                .await?;
                Ok::<_, anyhow::Error>(format!("{out}{err}"))
            }
        };
        for (name, want) in [
            (format!("echo.{n}"), "192.0.2.77"),
            (format!("ext.{n}"), "192.0.2.78"),
            (
                format!("echo.{n}.svc.cluster.local"),
                echo.cluster_ip.as_str(),
            ),
            ("echo".to_owned(), echo.cluster_ip.as_str()),
            ("intranet.corp.test".to_owned(), "192.0.2.80"),
        ] {
            let got = lookup(name.clone()).await?;
            ensure!(
                got.split_whitespace().next() == Some(want),
                "getent ahostsv4 {name}: {got:?}, want {want} first"
            );
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let (code, stderr) = kt.signal("INT").await?;
    let _ = office.start_kill();
    let _ = office.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        bail!("{e:#}\nktctl stderr:\n{stderr}");
    }
    ensure!(code == Some(0), "ktctl exit {code:?}:\n{stderr}");
    assert_same(&before, &snapshot().await?, "after the session")?;
    common::no_kt_pods_left(&ns).await
}

/// The lab's laptop with systemd-resolved as its resolver (`testbed/laptop-resolved`):
/// resolved, its D-Bus system bus and an /etc such as a resolved machine has, in a
/// mount namespace of their own inside the laptop namespace. Ended when dropped, with
/// everything it started.
struct LaptopResolved {
    child: Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl LaptopResolved {
    /// Starts it and waits until resolved answers on its bus.
    async fn start() -> Result<LaptopResolved> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../testbed/laptop-resolved");
        let mut child = Command::new(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {script}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut stderr = child.stderr.take().context("stderr")?;
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut lines = BufReader::new(stdout).lines();
        // Long enough to download the package on first use; a guard against a hang only.
        let ready = tokio::time::timeout(Duration::from_secs(300), async {
            while let Some(line) = lines.next_line().await? {
                if line == "ready" {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        let mut started = LaptopResolved { child, stderr };
        match ready {
            Ok(Ok(true)) => Ok(started),
            other => {
                let err = started.stop().await;
                bail!("testbed/laptop-resolved did not get ready ({other:?}):\n{err}")
            }
        }
    }

    /// nsenter's option that enters its mount namespace (the process it runs as holds
    /// that namespace).
    fn enter_mounts(&self) -> Result<String> {
        let pid = self.child.id().context("laptop-resolved already ended")?;
        Ok(format!("--mount=/proc/{pid}/ns/mnt"))
    }

    /// Ends it; returns its stderr (resolved's log).
    async fn stop(&mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        (&mut self.stderr).await.unwrap_or_default()
    }
}

/// A neighbour of the laptop, as a host on another interface of a laptop or a
/// container on a bridge is: a network namespace of its own joined to the laptop by a
/// veth pair (10.88.254.1/30 on the laptop, 10.88.254.2/30 here), with a route to one
/// address through the laptop. Deleted, veth pair and all, when dropped.
struct Neighbour {
    ns: String,
    /// The laptop's end of the veth pair.
    link: String,
}

/// The neighbour's address, on its link to the laptop.
const NEIGHBOUR_IP: &str = "10.88.254.2";
/// The laptop's address on its link to the neighbour.
const NEIGHBOUR_GATEWAY: &str = "10.88.254.1";

impl Neighbour {
    /// Creates it, routing `target` (an address of the laptop) through the laptop.
    fn create(target: &str) -> Result<Neighbour> {
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output()?;
            ensure!(out.status.success(), "ip {args:?}: {out:?}");
            Ok::<_, anyhow::Error>(())
        };
        let id = std::process::id();
        let ns = format!("ktlab-nb{id}");
        ip(&["netns", "add", &ns])?;
        // From here on, dropping it deletes whatever was made.
        let neighbour = Neighbour {
            ns,
            link: format!("nb{id}"),
        };
        let (ns, link) = (neighbour.ns.as_str(), neighbour.link.as_str());
        ip(&[
            "-n", LAPTOP_NS, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns",
            ns,
        ])?;
        ip(&[
            "-n",
            LAPTOP_NS,
            "addr",
            "add",
            &format!("{NEIGHBOUR_GATEWAY}/30"),
            "dev",
            link,
        ])?;
        ip(&["-n", LAPTOP_NS, "link", "set", link, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{NEIGHBOUR_IP}/30"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            &format!("{target}/32"),
            "via",
            NEIGHBOUR_GATEWAY,
        ])?;
        Ok(neighbour)
    }

    /// Runs a command in the neighbour's namespace; returns (exit code, stdout+stderr).
    async fn run(&self, program: &str, args: &[&str]) -> Result<(Option<i32>, String)> {
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            Command::new("ip")
                .args(["netns", "exec", &self.ns, program])
                .args(args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .with_context(|| format!("{program} {args:?} in the neighbour did not end"))??;
        Ok((
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        // The laptop's end first: deleting it deletes the pair at once (a namespace's
        // devices go asynchronously after `netns del`).
        let _ = std::process::Command::new("ip")
            .args(["-n", LAPTOP_NS, "link", "del", &self.link])
            .stderr(Stdio::null())
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
    }
}

#[tokio::test]
async fn in_resolved_mode_the_laptop_resolves_cluster_names_and_its_neighbour_gets_no_answer()
-> Result<()> {
    let _one = LAPTOP.lock().await;
    let (_lab, ns, echo) = setup("vpn-resolved").await?;
    let n = ns.name();
    let before = snapshot().await?;
    let mut resolved = LaptopResolved::start().await?;
    let result = async {
        let mounts = resolved.enter_mounts()?;
        let kt = Ktctl::start_wrapped(
            &ns,
            "vpn",
            &["--dns", "resolved", "--debug"],
            &["nsenter", &mounts],
        )
        .await?;
        let checks = async {
            // The local DNS server listens on the tun address, port 53.
            let dns = kt
                .summary
                .lines()
                .find_map(|l| l.trim().strip_prefix("dns"))
                .and_then(|rest| rest.split_whitespace().next())
                .with_context(|| format!("no dns line in ktctl's summary:\n{}", kt.summary))?
                .to_owned();
            ensure!(
                kt.summary.contains("systemd-resolved on link"),
                "not in resolved mode:\n{}",
                kt.summary
            );
            let tun_ip = dns
                .strip_suffix(":53")
                .with_context(|| format!("the DNS server is not on port 53: {dns}"))?
                .to_owned();
            let fqdn = format!("echo.{n}.svc.cluster.local");
            // The laptop itself: through resolved (getent, glibc, the stub 127.0.0.53,
            // resolved's query to the server on the tun link) and directly (dig).
            for (program, args) in [
                ("getent", vec!["ahostsv4", fqdn.as_str()]),
                (
                    "dig",
                    vec![
                        "+short",
                        "+time=5",
                        "+tries=2",
                        &format!("@{tun_ip}"),
                        &fqdn,
                    ],
                ),
            ] {
                let mut full = vec![mounts.as_str(), program];
                full.extend(args.iter().copied());
                let out = laptop_ok("nsenter", &full).await?;
                ensure!(
                    out.split_whitespace().next() == Some(echo.cluster_ip.as_str()),
                    "{program} {args:?} on the laptop: {out:?}, want {}",
                    echo.cluster_ip
                );
            }
            // The neighbour reaches the tun address (ping) but gets no DNS answer from
            // it, over UDP or TCP.
            let neighbour = Neighbour::create(&tun_ip)?;
            let (code, out) = neighbour
                .run("ping", &["-c", "1", "-W", "10", &tun_ip])
                .await?;
            ensure!(
                code == Some(0),
                "the neighbour cannot reach {tun_ip} at all: {out}"
            );
            for transport in ["+notcp", "+tcp"] {
                let server = format!("@{tun_ip}");
                let (code, out) = neighbour
                    .run("dig", &["+time=3", "+tries=2", transport, &server, &fqdn])
                    .await?;
                // dig's exit status 9: no reply from the server.
                ensure!(
                    code == Some(9) && !out.contains("status:"),
                    "the neighbour asked {tun_ip} ({transport}) and got an answer \
                     (dig exit {code:?}):\n{out}"
                );
            }
            drop(neighbour);
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let (code, stderr) = kt.signal("INT").await?;
        if let Err(e) = checks {
            bail!("{e:#}\nktctl stderr:\n{stderr}");
        }
        ensure!(code == Some(0), "ktctl exit {code:?}:\n{stderr}");
        // The server decided: the neighbour's queries were dropped, not lost.
        ensure!(
            stderr.contains(&format!("dropping queries from {NEIGHBOUR_IP}")),
            "ktctl's debug log does not say it dropped the neighbour's queries:\n{stderr}"
        );
        Ok(())
    }
    .await;
    let log = resolved.stop().await;
    if let Err(e) = result {
        bail!("{e:#}\nlaptop-resolved's log:\n{log}");
    }
    assert_same(&before, &snapshot().await?, "after the session")?;
    common::no_kt_pods_left(&ns).await
}

#[tokio::test]
async fn without_cap_net_admin_it_says_so_and_creates_nothing() -> Result<()> {
    let _one = LAPTOP.lock().await;
    let lab = Lab::connect().await?;
    let ns = lab.namespace("vpn-nocap").await?;
    let kubeconfig = laptop_kubeconfig();
    let out = laptop(
        "setpriv",
        &[
            "--inh-caps=-net_admin",
            "--bounding-set=-net_admin",
            env!("CARGO_BIN_EXE_ktctl"),
            "connect",
            "--mode",
            "vpn",
            "--kubeconfig",
            &kubeconfig,
            "-n",
            ns.name(),
        ],
    )
    .output()
    .await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "ktctl connected without CAP_NET_ADMIN: {err}"
    );
    ensure!(
        err.contains("CAP_NET_ADMIN") && err.contains("proxy mode"),
        "the error should name the capability and suggest proxy mode: {err}"
    );
    let pods = ns.kubectl(&["get", "pods,secrets", "-o", "name"]).await?;
    ensure!(
        !pods.contains("kt-shadow"),
        "objects were created before the capability check: {pods}"
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_namespace_exits_with_the_not_found_status_and_names_the_kind() -> Result<()> {
    let lab = Lab::connect().await?;
    let missing = format!(
        "ktctl-missing-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_ktctl"))
            .arg("connect")
            .arg("--kubeconfig")
            .arg(lab.kubeconfig())
            .args(["-n", &missing])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("ktctl connect to a missing namespace did not end")??;
    let err = String::from_utf8_lossy(&out.stderr);
    // not_found's code is 9: kt_core::ErrorKind::NotFound.code(), libkt's KT_STATUS_NOT_FOUND.
    ensure!(
        out.status.code() == Some(9),
        "exit {:?}, expected 9 (not_found):\n{err}",
        out.status.code()
    );
    ensure!(
        err.contains("error[not_found]: ") && err.contains(&missing),
        "stderr should say `error[not_found]: ...` and name the namespace:\n{err}"
    );
    ensure!(
        err.contains("kubectl create namespace"),
        "the error should say what to do:\n{err}"
    );
    Ok(())
}

/// UDP echo: argv host port; prints "udp ok".
const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for attempt in range(5):
    msg = b"kt-udp-%d" % attempt
    s.sendto(msg, (sys.argv[1], int(sys.argv[2])))
    try:
        data, _ = s.recvfrom(2048)
    except socket.timeout:
        continue
    if data == msg:
        print("udp ok")
        sys.exit(0)
sys.exit("no UDP echo")
"#;

/// 64 MiB download of the /bytes pattern over HTTP, then 64 MiB through the TCP
/// echo (port 9000) with a half-close after sending; argv: the Service's name.
const BIG_TRANSFER: &str = r#"
import socket, sys, threading
host = sys.argv[1]
N = 64 * 1024 * 1024
pattern = bytes((i * 31 + 7) % 256 for i in range(256))
def check(buf, offset):
    for j in range(0, len(buf), 256):
        k = (offset + j) % 256
        chunk = buf[j:j + 256]
        want = (pattern[k:] + pattern[:k])[:len(chunk)]
        if chunk != want:
            sys.exit("mismatch near byte %d" % (offset + j))

s = socket.create_connection((host, 80), timeout=60)
s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (N, host.encode()))
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(65536)
head, body = head.split(b"\r\n\r\n", 1)
if b" 200 " not in head.split(b"\r\n")[0]:
    sys.exit("HTTP: %r" % head)
got = 0
pending = body
while True:
    if pending:
        check(pending, got)
        got += len(pending)
    pending = s.recv(1 << 20)
    if not pending:
        break
if got != N:
    sys.exit("download: %d of %d bytes" % (got, N))
print("download ok")

e = socket.create_connection((host, 9000), timeout=60)
def send():
    block = pattern * 4096
    sent = 0
    while sent < N:
        e.sendall(block)
        sent += len(block)
    e.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
got = 0
while True:
    data = e.recv(1 << 20)
    if not data:
        break
    check(data, got)
    got += len(data)
t.join()
if got != N:
    sys.exit("echo: %d of %d bytes" % (got, N))
print("echo ok")
"#;
