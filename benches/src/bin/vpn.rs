//! VPN mode, measured where a developer would use it: from inside the lab's laptop
//! network namespace, which reaches only the API server. Bulk throughput (`GET
//! /bytes/<n>`, every byte checked, median of 3) and small-request latency (2000
//! `GET /healthz` on one kept-alive connection, p50/p99) to the echo pod, through:
//!
//! 1. `ktctl connect --mode vpn --dns off`: straight to the pod IP over the tun device;
//! 2. `ktctl connect --mode proxy`: its SOCKS5 proxy, `CONNECT <pod IP>:8080`;
//! 3. `kubectl port-forward pod/<echo> :8080`;
//! 4. sshuttle over OpenSSH: a stock sshd pod (the benches' OpenSSH peer), `kubectl
//!    port-forward` to it, `sshuttle -r root@127.0.0.1:<port> <pod CIDR>`, straight to
//!    the pod IP.
//!
//! Every contender runs in the laptop namespace (`ip netns exec ktlab-laptop`), and so
//! does the client (a runtime whose threads joined the namespace). kt's VPN and
//! sshuttle both capture the pod range, so they cannot run at once: the run has two
//! phases, (1)-(3) then (4), with kubectl port-forward measured again in the second as
//! its reference. The namespace's links, routes, firewall rules and resolver files must
//! be the same at the end as at the start.
//!
//! `cargo build --release -p ktctl -p kt-benches && target/release/vpn [--mib 256 --runs 3 --requests 2000 --warmup 100 --sshuttle true]`

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use kt_benches::laptop::{self, LaptopProcess, LaptopRoute, LaptopRuntime, Snapshot, Stream};
use kt_benches::stats::{median, us};
use kt_benches::{
    Bench, ECHO_HTTP_PORT, Route, SshdPod, Summary, download, get_once, healthz_latencies,
    mib_per_s, ratio,
};
use nix::sys::signal::Signal;

const USAGE: &str = "usage: vpn [--mib N (default 256, 1..=1024)] [--runs N (default 3, 1..=5)] \
                     [--requests N (default 2000, 1..=20000)] [--warmup N (default 100)] \
                     [--sshuttle true|false (default true)]\n\
                     Needs root, the lab, and ktctl built next to this binary \
                     (cargo build --release -p ktctl -p kt-benches) or named by $KTCTL.";

/// How long `ktctl connect` may take to print its ready line.
const CONNECT_LIMIT: Duration = Duration::from_secs(150);

/// How long kubectl port-forward and sshuttle may take to come up.
const START_LIMIT: Duration = Duration::from_secs(90);

/// Requests at least this slow are counted apart (a delayed-ACK stall is ~40 ms).
const SLOW: Duration = Duration::from_millis(20);

/// sshuttle's ssh login on the sshd pod.
const SSH_USER: &str = "root";

fn main() -> std::process::ExitCode {
    kt_benches::main_with("vpn", Duration::from_secs(30 * 60), run)
}

/// The command line.
struct Config {
    mib: u64,
    runs: usize,
    requests: usize,
    warmup: usize,
    sshuttle: bool,
}

impl Config {
    fn parse() -> Result<Config> {
        let args = kt_benches::parse_args(USAGE)?;
        kt_benches::check_args(
            &args,
            &["mib", "runs", "requests", "warmup", "sshuttle"],
            USAGE,
        )?;
        let c = Config {
            mib: kt_benches::arg(&args, "mib", 256)?,
            runs: kt_benches::arg(&args, "runs", 3)?,
            requests: kt_benches::arg(&args, "requests", 2000)?,
            warmup: kt_benches::arg(&args, "warmup", 100)?,
            sshuttle: kt_benches::arg(&args, "sshuttle", true)?,
        };
        ensure!((1..=1024).contains(&c.mib), "--mib must be 1..=1024");
        ensure!((1..=5).contains(&c.runs), "--runs must be 1..=5");
        ensure!(
            (1..=20_000).contains(&c.requests),
            "--requests must be 1..=20000"
        );
        ensure!(c.warmup <= 10_000, "--warmup must be at most 10000");
        Ok(c)
    }

    fn size(&self) -> u64 {
        self.mib << 20
    }

    /// One download: at least 2 MiB/s, or it is stopped.
    fn download_limit(&self) -> Duration {
        Duration::from_secs(30 + self.mib / 2)
    }

    /// One latency run: at least 100 requests/s on average, or it is stopped.
    fn latency_limit(&self) -> Duration {
        Duration::from_secs(30 + (self.requests + self.warmup) as u64 / 100)
    }
}

/// The programs the benchmark runs in the laptop namespace.
struct Tools {
    ktctl: PathBuf,
    kubectl: PathBuf,
    /// The laptop's kubeconfig.
    kubeconfig: String,
    /// sshuttle, or why it cannot be used.
    sshuttle: Result<PathBuf, String>,
}

impl Tools {
    fn find(cfg: &Config) -> Result<Tools> {
        let ktctl = match std::env::var_os("KTCTL").filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()?
                .parent()
                .context("the benchmark's directory")?
                .join("ktctl"),
        };
        ensure!(
            ktctl.is_file(),
            "no ktctl at {}: build it beside the benchmark (cargo build --release -p ktctl \
             -p kt-benches) or set KTCTL",
            ktctl.display()
        );
        let kubectl = std::env::var_os("KUBECTL")
            .filter(|v| !v.is_empty())
            .map_or_else(
                || PathBuf::from(kt_lab_tests::DEFAULT_KUBECTL),
                PathBuf::from,
            );
        ensure!(kubectl.is_file(), "no kubectl at {}", kubectl.display());
        let kubeconfig = laptop::laptop_kubeconfig()?
            .to_str()
            .context("non-UTF-8 kubeconfig path")?
            .to_owned();
        let sshuttle = if !cfg.sshuttle {
            Err("--sshuttle false".to_owned())
        } else {
            let p = PathBuf::from("/usr/bin/sshuttle");
            if p.is_file() {
                Ok(p)
            } else {
                Err("/usr/bin/sshuttle is not installed (Debian package sshuttle)".to_owned())
            }
        };
        eprintln!("bench: ktctl {}", ktctl.display());
        Ok(Tools {
            ktctl,
            kubectl,
            kubeconfig,
            sshuttle,
        })
    }

    /// `ktctl connect --mode <mode>` in the laptop namespace, waited for until its
    /// ready line; returns it and its summary (stdout).
    async fn ktctl(
        &self,
        ns: &str,
        mode: &str,
        extra: &[&str],
    ) -> Result<(LaptopProcess, Vec<String>)> {
        let mut args = vec![
            "connect",
            "--mode",
            mode,
            "--kubeconfig",
            &self.kubeconfig,
            "-n",
            ns,
        ];
        args.extend_from_slice(extra);
        let mut p = LaptopProcess::spawn(&format!("ktctl --mode {mode}"), &self.ktctl, &args)?;
        p.wait_line(Stream::Stdout, CONNECT_LIMIT, |l| {
            l.starts_with("press Ctrl-C").then_some(())
        })
        .await?;
        let summary = p.lines(Stream::Stdout);
        eprintln!("bench: ktctl --mode {mode}:\n  {}", summary.join("\n  "));
        Ok((p, summary))
    }

    /// `kubectl port-forward <target> :<port>` in the laptop namespace; returns it and
    /// its local port (on the laptop's 127.0.0.1).
    async fn port_forward(
        &self,
        ns: &str,
        target: &str,
        port: u16,
    ) -> Result<(LaptopProcess, u16)> {
        let spec = format!(":{port}");
        let args = [
            "--kubeconfig",
            &self.kubeconfig,
            "-n",
            ns,
            "port-forward",
            target,
            &spec,
        ];
        let mut p = LaptopProcess::spawn(
            &format!("kubectl port-forward {target}"),
            &self.kubectl,
            &args,
        )?;
        let local = p
            .wait_line(Stream::Stdout, START_LIMIT, |l| {
                l.strip_prefix("Forwarding from 127.0.0.1:")?
                    .split_whitespace()
                    .next()?
                    .parse::<u16>()
                    .ok()
            })
            .await?;
        Ok((p, local))
    }
}

/// Which contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Vpn,
    Socks,
    Kubectl,
    Sshuttle,
    /// kubectl port-forward again, in sshuttle's phase.
    Kubectl2,
}

impl Key {
    fn label(self) -> &'static str {
        match self {
            Key::Vpn => "kt vpn",
            Key::Socks => "kt socks5 (proxy mode)",
            Key::Kubectl => "kubectl port-forward",
            Key::Sshuttle => "sshuttle",
            Key::Kubectl2 => "kubectl port-forward (2)",
        }
    }

    /// The reference of its phase.
    fn reference(self) -> Key {
        match self {
            Key::Sshuttle | Key::Kubectl2 => Key::Kubectl2,
            _ => Key::Kubectl,
        }
    }

    fn phase(self) -> u8 {
        match self {
            Key::Sshuttle | Key::Kubectl2 => 2,
            _ => 1,
        }
    }
}

/// A contender's results.
struct Row {
    key: Key,
    /// MiB/s of each round.
    rates: Vec<f64>,
    latency: Summary,
    /// Requests at least [`SLOW`].
    slow: usize,
}

impl Row {
    fn median(&self) -> f64 {
        median(&self.rates)
    }

    fn best(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }
}

/// What happened to sshuttle.
enum SshuttleOutcome {
    /// Measured.
    Ran,
    /// Not used, or could not start: why.
    Skipped(String),
    /// Started, then failed while measured: the error (the run fails, after the report).
    Failed(String),
}

/// The processes started in the laptop namespace. Dropping it stops what still runs
/// (SIGTERM, then SIGKILL); it is declared after the namespace's handle, so it goes
/// first.
#[derive(Default)]
struct Procs {
    vpn: Option<LaptopProcess>,
    proxy: Option<LaptopProcess>,
    kubectl: Option<LaptopProcess>,
    sshd_forward: Option<LaptopProcess>,
    sshuttle: Option<LaptopProcess>,
    /// The pod range's route for sshuttle's phase.
    route: Option<LaptopRoute>,
}

impl Procs {
    fn all(&mut self) -> impl Iterator<Item = &mut LaptopProcess> {
        [
            &mut self.vpn,
            &mut self.proxy,
            &mut self.kubectl,
            &mut self.sshd_forward,
            &mut self.sshuttle,
        ]
        .into_iter()
        .flatten()
    }

    fn check_running(&mut self) -> Result<()> {
        self.all().try_for_each(LaptopProcess::check_running)
    }

    /// What each program printed, for an error report.
    fn diagnostics(&mut self) -> String {
        self.all()
            .map(|p| {
                let state = match p.check_running() {
                    Ok(()) => "running".to_owned(),
                    Err(e) => format!("{e:#}"),
                };
                format!("{state}\n{}", p.output())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops everything: ktctl with SIGINT (it must exit 0: its session closed), the
    /// rest with SIGTERM; after sshuttle, waits until its helpers and firewall rules are
    /// gone (as in `before`).
    async fn close(&mut self, before: &Snapshot) -> Result<()> {
        let mut errors = Vec::new();
        if let Some(mut s) = self.sshuttle.take() {
            if let Err(e) = s.stop(Signal::SIGTERM).await {
                errors.push(e);
            }
            if let Err(e) = wait_sshuttle_gone(before).await {
                errors.push(e);
            }
        }
        for ktctl in [self.vpn.take(), self.proxy.take()].into_iter().flatten() {
            if let Err(e) = stop_ktctl(ktctl).await {
                errors.push(e);
            }
        }
        for mut p in [self.kubectl.take(), self.sshd_forward.take()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = p.stop(Signal::SIGTERM).await {
                errors.push(e);
            }
        }
        if let Some(route) = self.route.take()
            && let Err(e) = route.remove().await
        {
            errors.push(e);
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// SIGINT (Ctrl-C) to ktctl; it must close its session and exit 0.
async fn stop_ktctl(mut p: LaptopProcess) -> Result<()> {
    let status = p.stop(Signal::SIGINT).await?;
    ensure!(
        status.success(),
        "ktctl exited with {status} after Ctrl-C:\n{}",
        p.output()
    );
    Ok(())
}

async fn run() -> Result<()> {
    let cfg = Config::parse()?;
    let tools = Tools::find(&cfg)?;
    laptop::check_idle().await?;
    let before = Snapshot::take().await?;
    let rt = LaptopRuntime::start()?;
    let bench = Bench::start("vpn").await?;
    let pod_cidr = pod_cidr(&bench).await?;
    eprintln!("bench: pod range {pod_cidr}");
    let mut procs = Procs::default();
    let mut rows = Vec::new();
    let mut sshuttle = SshuttleOutcome::Skipped("not reached".to_owned());
    let setup = Setup {
        cfg: &cfg,
        tools: &tools,
        rt: &rt,
        bench: &bench,
        pod_cidr: &pod_cidr,
        before: &before,
    };
    let outcome = phases(&setup, &mut procs, &mut rows, &mut sshuttle).await;
    let closed = procs.close(&before).await;
    // Whatever happened: the laptop must be as it was.
    let restored = match Snapshot::take().await {
        Ok(after) => match before.diff(&after) {
            None => Ok(()),
            Some(d) => Err(anyhow!(
                "the laptop namespace is not as it was before the benchmark:\n{d}"
            )),
        },
        Err(e) => Err(e.context("snapshot of the laptop namespace after the benchmark")),
    };
    outcome?;
    closed?;
    restored?;
    report(&cfg, &bench, &rows, &sshuttle);
    if let SshuttleOutcome::Failed(e) = sshuttle {
        bail!("sshuttle failed while measured: {e}");
    }
    Ok(())
}

/// What every phase uses.
struct Setup<'a> {
    cfg: &'a Config,
    tools: &'a Tools,
    rt: &'a LaptopRuntime,
    bench: &'a Bench,
    /// The pod range sshuttle captures.
    pod_cidr: &'a str,
    /// The laptop namespace before the benchmark.
    before: &'a Snapshot,
}

async fn phases(
    setup: &Setup<'_>,
    procs: &mut Procs,
    rows: &mut Vec<Row>,
    sshuttle: &mut SshuttleOutcome,
) -> Result<()> {
    let Setup {
        cfg,
        tools,
        rt,
        bench,
        pod_cidr,
        before,
    } = *setup;
    let ns = bench.namespace();
    let ip: Ipv4Addr = bench.echo_ip.parse().context("the echo pod's IP")?;
    let direct = Route::local(SocketAddr::from((ip, ECHO_HTTP_PORT)));

    // Phase 1: kt's VPN, kt's SOCKS5 proxy, kubectl port-forward.
    let (proxy, summary) = tools.ktctl(ns, "proxy", &[]).await?;
    procs.proxy = Some(proxy);
    let socks = summary
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("socks5")?
                .trim()
                .parse::<SocketAddr>()
                .ok()
        })
        .with_context(|| format!("no socks5 address in ktctl's summary:\n{summary:?}"))?;
    let pod = format!("pod/{}", bench.echo_pod);
    let (kubectl, local) = tools.port_forward(ns, &pod, ECHO_HTTP_PORT).await?;
    procs.kubectl = Some(kubectl);
    let kubectl_route = Route::local(SocketAddr::from((Ipv4Addr::LOCALHOST, local)));
    let (vpn, summary) = tools.ktctl(ns, "vpn", &["--dns", "off"]).await?;
    procs.vpn = Some(vpn);
    let routes = summary
        .iter()
        .find_map(|l| l.trim().strip_prefix("vpn"))
        .with_context(|| format!("no vpn line in ktctl's summary:\n{summary:?}"))?;
    ensure!(
        routes
            .split([':', ','])
            .skip(1)
            .any(|net| cidr_contains(net.trim(), ip)),
        "kt's VPN does not route the echo pod's IP {ip}: {routes}"
    );
    let contenders = [
        (Key::Vpn, direct.clone()),
        (
            Key::Socks,
            Route::socks5(socks, &bench.echo_ip, ECHO_HTTP_PORT),
        ),
        (Key::Kubectl, kubectl_route.clone()),
    ];
    rows.extend(measure(cfg, rt, procs, &contenders).await?);
    // kt's VPN ends before sshuttle takes the pod range; its tun device and routes go.
    if let Some(vpn) = procs.vpn.take() {
        stop_ktctl(vpn).await?;
    }
    if let Some(d) = before.diff(&Snapshot::take().await?) {
        bail!("the laptop namespace is not as before after ktctl --mode vpn ended:\n{d}");
    }

    // Phase 2: sshuttle, and kubectl port-forward again as the phase's reference.
    let path = match &tools.sshuttle {
        Ok(p) => p.clone(),
        Err(why) => {
            *sshuttle = SshuttleOutcome::Skipped(why.clone());
            return Ok(());
        }
    };
    let started = start_sshuttle(tools, &path, bench, pod_cidr, rt, &direct, procs).await;
    *sshuttle = match started {
        Err(e) => {
            let why = format!("{e:#}");
            eprintln!("bench: sshuttle skipped: {why}");
            SshuttleOutcome::Skipped(why)
        }
        Ok(()) => {
            let contenders = [(Key::Sshuttle, direct), (Key::Kubectl2, kubectl_route)];
            match measure(cfg, rt, procs, &contenders).await {
                Ok(measured) => {
                    rows.extend(measured);
                    SshuttleOutcome::Ran
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    eprintln!("bench: sshuttle failed: {e}");
                    SshuttleOutcome::Failed(e)
                }
            }
        }
    };
    // sshuttle ends; its firewall helper must take its rules away.
    if let Some(mut s) = procs.sshuttle.take() {
        s.stop(Signal::SIGTERM).await?;
    }
    if let Some(mut f) = procs.sshd_forward.take() {
        f.stop(Signal::SIGTERM).await?;
    }
    wait_sshuttle_gone(before).await?;
    if let Some(route) = procs.route.take() {
        route.remove().await?;
    }
    Ok(())
}

/// The sshd pod, a port-forward to it and sshuttle over it, all from the laptop; ready
/// once a request to the echo pod's IP goes through.
async fn start_sshuttle(
    tools: &Tools,
    sshuttle: &Path,
    bench: &Bench,
    pod_cidr: &str,
    rt: &LaptopRuntime,
    direct: &Route,
    procs: &mut Procs,
) -> Result<()> {
    // The laptop has no default route, and the kernel must find a route to the pod IP
    // before sshuttle's redirect (in the firewall's output hook) sees the packet; a
    // developer's laptop has one. Over `lo`, a packet not redirected goes nowhere.
    procs.route = Some(LaptopRoute::add(&[pod_cidr, "dev", "lo"]).await?);
    let sshd = SshdPod::create(&bench.ns).await?;
    let (forward, port) = tools
        .port_forward(
            bench.namespace(),
            &format!("pod/{}", kt_benches::openssh::SSHD_POD),
            kt_benches::openssh::SSHD_PORT,
        )
        .await?;
    procs.sshd_forward = Some(forward);
    let ssh_cmd = std::iter::once("ssh".to_owned())
        .chain(sshd.client_options())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let remote = format!("{SSH_USER}@127.0.0.1:{port}");
    let args = [
        "--method",
        "nat",
        "-r",
        &remote,
        "--ssh-cmd",
        &ssh_cmd,
        pod_cidr,
    ];
    eprintln!("bench: sshuttle {}", args.join(" "));
    let mut p = LaptopProcess::spawn("sshuttle", sshuttle, &args)?;
    let connected = p
        .wait_line(Stream::Stderr, START_LIMIT, |l| {
            l.contains("Connected to server").then_some(())
        })
        .await;
    procs.sshuttle = Some(p);
    connected?;
    // Its firewall rules come after the server's first message: wait for a request to
    // go through (the laptop has no other route to the pod).
    let deadline = tokio::time::Instant::now() + START_LIMIT;
    loop {
        let route = direct.clone();
        let got = rt
            .run(async move { get_once(&route, "/healthz", b"ok", Duration::from_secs(5)).await })
            .await;
        let rules = laptop::iptables().await?;
        match got {
            Ok(()) if rules.contains("sshuttle") => break,
            Ok(()) => bail!("a request reached the echo pod without sshuttle's rules:\n{rules}"),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                let said = procs
                    .sshuttle
                    .as_ref()
                    .map(LaptopProcess::output)
                    .unwrap_or_default();
                bail!(
                    "no request through sshuttle within {START_LIMIT:?}: {e:#}\nsshuttle said:\n{said}"
                );
            }
            Err(_) => {
                if let Some(s) = &mut procs.sshuttle {
                    s.check_running()?;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!("bench: sshuttle is up");
    // The keys' directory may go: ssh has read them.
    drop(sshd);
    Ok(())
}

/// Waits (bounded) until sshuttle's helpers are gone from the laptop and its firewall
/// rules are as before; fails with the difference otherwise.
async fn wait_sshuttle_gone(before: &Snapshot) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = laptop::running(|comm, cmdline| comm == "ssh" || cmdline.contains("sshuttle"))?;
        let rules = laptop::iptables().await?;
        if left.is_empty() && rules == before.iptables {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "20 s after sshuttle ended, the laptop still has its processes or rules:\n\
                 processes: {left:?}\nrules before:\n{}\nrules now:\n{rules}",
                before.iptables
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Throughput (warm-up, then rounds with the contenders interleaved) and latency (one
/// contender after the other) from the laptop runtime.
async fn measure(
    cfg: &Config,
    rt: &LaptopRuntime,
    procs: &mut Procs,
    contenders: &[(Key, Route)],
) -> Result<Vec<Row>> {
    let fail = |procs: &mut Procs, e: anyhow::Error, what: String| {
        e.context(format!("{what}\n{}", procs.diagnostics()))
    };
    let limit = cfg.download_limit();
    // A small verified download through each first: every route works and is warm.
    for (key, route) in contenders {
        let route = route.clone();
        if let Err(e) = rt
            .run(async move { download(&route, 8 << 20, limit).await })
            .await
        {
            return Err(fail(
                procs,
                e,
                format!("warm-up download through {}", key.label()),
            ));
        }
    }
    let mut rates = vec![Vec::new(); contenders.len()];
    for round in 1..=cfg.runs {
        for ((key, route), rates) in contenders.iter().zip(rates.iter_mut()) {
            let route = route.clone();
            let size = cfg.size();
            let elapsed = match rt
                .run(async move { download(&route, size, limit).await })
                .await
            {
                Ok(e) => e,
                Err(e) => return Err(fail(procs, e, format!("round {round}, {}", key.label()))),
            };
            let rate = mib_per_s(size, elapsed);
            eprintln!(
                "round {round}: {:<26} {rate:>8.1} MiB/s ({:.2} s)",
                key.label(),
                elapsed.as_secs_f64()
            );
            rates.push(rate);
        }
        procs.check_running()?;
    }
    let mut rows = Vec::new();
    for ((key, route), rates) in contenders.iter().zip(rates) {
        let route = route.clone();
        let (requests, warmup, limit) = (cfg.requests, cfg.warmup, cfg.latency_limit());
        let samples = rt
            .run(async move {
                tokio::time::timeout(limit, healthz_latencies(&route, requests, warmup))
                    .await
                    .map_err(|_| anyhow!("not done within {limit:?}"))?
            })
            .await;
        let samples = match samples {
            Ok(s) => s,
            Err(e) => return Err(fail(procs, e, format!("latency, {}", key.label()))),
        };
        let latency = Summary::of(&samples).context("no samples")?;
        let slow = samples.iter().filter(|d| **d >= SLOW).count();
        eprintln!(
            "{:<26} p50 {:>8}  p99 {:>8}  {slow} of {requests} took >= {SLOW:?}",
            key.label(),
            us(latency.p50),
            us(latency.p99),
        );
        rows.push(Row {
            key: *key,
            rates,
            latency,
            slow,
        });
        procs.check_running()?;
    }
    Ok(rows)
}

/// The node's pod range that holds the echo pod's IP (the lab has one node).
async fn pod_cidr(bench: &Bench) -> Result<String> {
    let ip: Ipv4Addr = bench.echo_ip.parse()?;
    let out = bench
        .lab
        .kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].spec.podCIDRs[*]}",
        ])
        .await?;
    out.split_whitespace()
        .find(|c| cidr_contains(c, ip))
        .map(str::to_owned)
        .with_context(|| format!("no node pod range holds the echo pod's IP {ip}: {out:?}"))
}

/// Whether IPv4 range `cidr` (`a.b.c.d/n`) holds `ip`.
fn cidr_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    if len > 32 {
        return false;
    }
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(net) & mask == u32::from(ip) & mask
}

/// `s` quoted for a POSIX shell (sshuttle splits `--ssh-cmd` like one).
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn report(cfg: &Config, bench: &Bench, rows: &[Row], sshuttle: &SshuttleOutcome) {
    let get = |k: Key| rows.iter().find(|r| r.key == k);
    let secs = |d: Duration| d.as_secs_f64();
    println!();
    println!(
        "vpn: measured from the laptop namespace ({}), pod {} ({}:8080), namespace {}; \
         phase 1: kt vpn, kt socks5, kubectl; phase 2: sshuttle, kubectl again; \
         ratios against kubectl port-forward of the same phase",
        laptop::LAPTOP_NS,
        bench.echo_pod,
        bench.echo_ip,
        bench.namespace()
    );
    println!();
    println!(
        "throughput: GET /bytes/{} ({} MiB, every byte checked), MiB/s, median of {}",
        cfg.size(),
        cfg.mib,
        cfg.runs
    );
    let mut head = format!("{:<26} {:>5}", "path", "phase");
    for i in 1..=cfg.runs {
        head.push_str(&format!(" {:>8}", format!("run {i}")));
    }
    head.push_str(&format!(
        " {:>8} {:>8} {:>11}",
        "median", "best", "vs kubectl"
    ));
    println!("{head}");
    for r in rows {
        let mut line = format!("{:<26} {:>5}", r.key.label(), r.key.phase());
        for v in &r.rates {
            line.push_str(&format!(" {v:>8.1}"));
        }
        let reference = get(r.key.reference()).map_or(0.0, Row::median);
        line.push_str(&format!(
            " {:>8.1} {:>8.1} {:>11}",
            r.median(),
            r.best(),
            ratio(r.median(), reference)
        ));
        println!("{line}");
    }
    println!();
    println!(
        "latency: GET /healthz over one kept-alive connection, {} requests after {} warm-up",
        cfg.requests, cfg.warmup
    );
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>11}",
        "path",
        "min",
        "p50",
        "p99",
        "max",
        "mean",
        format!(">={}ms", SLOW.as_millis()),
        "p50 vs kc",
        "p99 vs kc"
    );
    for r in rows {
        let s = &r.latency;
        let (r50, r99) = get(r.key.reference()).map_or_else(
            || ("n/a".to_owned(), "n/a".to_owned()),
            |k| {
                (
                    ratio(secs(s.p50), secs(k.latency.p50)),
                    ratio(secs(s.p99), secs(k.latency.p99)),
                )
            },
        );
        println!(
            "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>11}",
            r.key.label(),
            us(s.min),
            us(s.p50),
            us(s.p99),
            us(s.max),
            us(s.mean),
            r.slow,
            r50,
            r99
        );
    }
    println!();
    match sshuttle {
        SshuttleOutcome::Ran => {}
        SshuttleOutcome::Skipped(why) => println!("sshuttle skipped: {why}"),
        SshuttleOutcome::Failed(e) => println!("sshuttle failed: {e}"),
    }
    let (Some(vpn), Some(socks), Some(kubectl)) =
        (get(Key::Vpn), get(Key::Socks), get(Key::Kubectl))
    else {
        return;
    };
    let shuttle = get(Key::Sshuttle);
    let mut line = format!(
        "vpn throughput: kt vpn {:.1} MiB/s, kt socks5 {:.1}, kubectl port-forward {:.1}",
        vpn.median(),
        socks.median(),
        kubectl.median()
    );
    if let Some(s) = shuttle {
        line.push_str(&format!(", sshuttle {:.1}", s.median()));
    }
    line.push_str(&format!(
        "; vpn/kubectl {}, vpn/socks5 {}",
        ratio(vpn.median(), kubectl.median()),
        ratio(vpn.median(), socks.median())
    ));
    if let Some(s) = shuttle {
        line.push_str(&format!(
            ", vpn/sshuttle {}",
            ratio(vpn.median(), s.median())
        ));
    }
    println!("{line} (higher is better)");
    for (name, pick) in [
        ("p50", (|s: &Summary| s.p50) as fn(&Summary) -> Duration),
        ("p99", |s: &Summary| s.p99),
    ] {
        let v = |r: &Row| pick(&r.latency);
        let mut line = format!(
            "vpn latency {name}: kt vpn {}, kt socks5 {}, kubectl port-forward {}",
            us(v(vpn)),
            us(v(socks)),
            us(v(kubectl))
        );
        if let Some(s) = shuttle {
            line.push_str(&format!(", sshuttle {}", us(v(s))));
        }
        line.push_str(&format!(
            "; vpn/kubectl {}, vpn/socks5 {}",
            ratio(secs(v(vpn)), secs(v(kubectl))),
            ratio(secs(v(vpn)), secs(v(socks)))
        ));
        if let Some(s) = shuttle {
            line.push_str(&format!(
                ", vpn/sshuttle {}",
                ratio(secs(v(vpn)), secs(v(s)))
            ));
        }
        println!("{line} (lower is better)");
    }
    if let (Some(s), Some(k2)) = (shuttle, get(Key::Kubectl2)) {
        println!(
            "vpn phase 2: sshuttle {:.1} MiB/s, p50 {}, p99 {}; kubectl port-forward again \
             {:.1} MiB/s (phase 1: {:.1}), p50 {}, p99 {}; sshuttle/kubectl {} throughput, \
             {} p50",
            s.median(),
            us(s.latency.p50),
            us(s.latency.p99),
            k2.median(),
            kubectl.median(),
            us(k2.latency.p50),
            us(k2.latency.p99),
            ratio(s.median(), k2.median()),
            ratio(secs(s.latency.p50), secs(k2.latency.p50))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_quoting() {
        let ip: Ipv4Addr = "10.244.0.17".parse().unwrap();
        assert!(cidr_contains("10.244.0.0/24", ip));
        assert!(cidr_contains("10.244.0.17/32", ip));
        assert!(cidr_contains("0.0.0.0/0", ip));
        assert!(!cidr_contains("10.96.0.0/12", ip));
        assert!(!cidr_contains("10.244.1.0/24", ip));
        assert!(!cidr_contains("fd00::/8", ip));
        assert_eq!(
            shell_quote("UserKnownHostsFile=/tmp/a"),
            "UserKnownHostsFile=/tmp/a"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
