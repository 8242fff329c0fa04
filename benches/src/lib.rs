//! Side-by-side benchmarks of kt against its peers, run against the lab (`testbed/up`).
//!
//! Each benchmark is a binary in `src/bin/` that measures the same work through kt and
//! through the tool a developer would otherwise use — `kubectl port-forward`, and
//! OpenSSH's `ssh -D` over a port-forward to an sshd pod — in one run, then prints a
//! table and one line per comparison ending in the ratio:
//!
//! - `connect`: `Session::connect` to the first HTTP response through its HTTP proxy,
//!   beside `kubectl port-forward` start to the first response;
//! - `throughput`: a 256 MiB download from the echo pod, verified byte for byte;
//! - `latency`: small requests over one kept-alive connection, p50 and p99;
//! - `vpn`: throughput and latency measured from inside the lab's laptop network
//!   namespace ([`laptop`]) through `ktctl --mode vpn`, `ktctl --mode proxy`, `kubectl
//!   port-forward` and sshuttle.
//!
//! Every benchmark creates its own namespace (deleted at the end, also on error or
//! Ctrl-C), closes its sessions, kills the processes it started, only talks to
//! loopback and lab addresses (the `vpn` benchmark: the laptop namespace's loopback,
//! tun device and firewall, which it checks are as before when it ends), and is
//! bounded in count and time.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let bench = kt_benches::Bench::start("demo").await?;
//! let session = kt_core::Session::connect(bench.kt_options()?).await?;
//! let route = kt_benches::Route::socks5(session.socks5_addr(), &bench.echo_ip, 8080);
//! let elapsed = kt_benches::download(&route, 1 << 20, std::time::Duration::from_secs(30)).await?;
//! println!("1 MiB in {elapsed:?}");
//! session.close().await?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use kt_core::{ConnectOptions, ShadowFlavour};
use kt_lab_tests::{EchoApp, Lab, TestNamespace};

pub mod laptop;
pub mod net;
pub mod openssh;
pub mod peers;
pub mod stats;

pub use kt_lab_tests::socks5_connect;
pub use net::{KeepAlive, Route, download, get_once, healthz_latencies};
pub use openssh::{SshDynamicForward, SshdPod};
pub use peers::{Kind, Peer, Peers};
pub use stats::{Summary, mib_per_s, ratio};

/// The echo app's HTTP port in its pods.
pub const ECHO_HTTP_PORT: u16 = 8080;

/// A namespace with one echo pod, made for one benchmark and deleted (without waiting)
/// when dropped.
pub struct Bench {
    /// The lab.
    pub lab: Lab,
    /// The benchmark's namespace.
    pub ns: TestNamespace,
    /// The echo app deployed in it.
    pub echo: EchoApp,
    /// The echo pod's name.
    pub echo_pod: String,
    /// The echo pod's IP.
    pub echo_ip: String,
}

impl Bench {
    /// Connects to the lab, creates namespace `e2e-bench-<name>-<random>` and deploys one
    /// echo pod (Deployment and Service `echo`), waiting until the Service answers.
    pub async fn start(name: &str) -> Result<Bench> {
        let lab = Lab::connect().await?;
        let ns = lab.namespace(&format!("bench-{name}")).await?;
        eprintln!("bench: namespace {}", ns.name());
        let echo = ns.deploy_echo(1).await?;
        let echo_pod = echo.pods.first().cloned().context("no echo pod")?;
        let echo_ip = echo.pod_ips.first().cloned().context("no echo pod IP")?;
        eprintln!("bench: echo pod {echo_pod} at {echo_ip}");
        Ok(Bench {
            lab,
            ns,
            echo,
            echo_pod,
            echo_ip,
        })
    }

    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        self.ns.name()
    }

    /// Options for a kt-shadow session in the benchmark's namespace, as the lab's admin.
    pub fn kt_options(&self) -> Result<ConnectOptions> {
        self.kt_options_for(ShadowFlavour::KtShadow)
    }

    /// Options for a session with `flavour` in the benchmark's namespace.
    pub fn kt_options_for(&self, flavour: ShadowFlavour) -> Result<ConnectOptions> {
        let opts = ConnectOptions::new()
            .kubeconfig(self.lab.kubeconfig())
            .namespace(self.ns.name())
            .flavour(flavour);
        Ok(match flavour {
            ShadowFlavour::OpenSsh => opts.shadow_image(kt_lab_tests::OPENSSH_IMAGE),
            _ => opts,
        })
    }
}

/// A scratch directory under the system temp dir, removed when dropped.
pub struct ScratchDir {
    /// Its path.
    pub path: PathBuf,
}

impl ScratchDir {
    /// Creates `$TMPDIR/<name>` (emptied first if it exists).
    pub fn new(name: &str) -> Result<ScratchDir> {
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs a benchmark's body on a multi-threaded runtime, bounded by `limit`; Ctrl-C or
/// the limit drop the body, so its namespace, sessions and child processes are cleaned
/// up by their destructors. Returns the process exit code.
pub fn main_with<F, Fut>(name: &str, limit: Duration, body: F) -> std::process::ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            res = tokio::time::timeout(limit, body()) => match res {
                Ok(r) => r,
                Err(_) => Err(anyhow!("{name}: did not finish within {limit:?}; stopped")),
            },
            _ = tokio::signal::ctrl_c() => Err(anyhow!("{name}: interrupted")),
        }
    });
    // Let the best-effort cleanup tasks (Session's Drop) run briefly.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses `--name value` options of a benchmark's command line into `(name, value)`
/// pairs; `--help` prints `usage` and exits.
pub fn parse_args(usage: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            println!("{usage}");
            std::process::exit(0);
        }
        let Some(name) = a.strip_prefix("--") else {
            anyhow::bail!("unexpected argument `{a}`\n{usage}");
        };
        let value = args
            .next()
            .with_context(|| format!("--{name} needs a value\n{usage}"))?;
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

/// The value of option `name` in `args` parsed as `T`, else `default`.
pub fn arg<T: std::str::FromStr>(args: &[(String, String)], name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match args.iter().rev().find(|(n, _)| n == name) {
        None => Ok(default),
        Some((_, v)) => v.parse().map_err(|e| anyhow!("--{name} {v}: {e}")),
    }
}

/// Checks that every option in `args` is one of `known`.
pub fn check_args(args: &[(String, String)], known: &[&str], usage: &str) -> Result<()> {
    for (n, _) in args {
        if !known.contains(&n.as_str()) {
            anyhow::bail!("unknown option --{n}\n{usage}");
        }
    }
    Ok(())
}
