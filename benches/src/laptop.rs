//! The lab's "laptop": network namespace `ktlab-laptop`, which reaches only the API
//! server (https://10.88.255.1:6443, kubeconfig `$KT_LAPTOP_KUBECONFIG`), as a
//! developer's machine does. The `vpn` benchmark runs every contender and every client
//! there, never in the machine's own namespace:
//!
//! - [`LaptopRuntime`]: a tokio runtime whose threads all live in the namespace, so
//!   every socket the benchmark's HTTP client opens on it is a laptop socket;
//! - [`LaptopProcess`]: a program started with `ip netns exec ktlab-laptop` (ktctl,
//!   kubectl, sshuttle), its output kept, stopped by a signal and, if still running
//!   when dropped, terminated;
//! - [`LaptopRoute`]: a route added for one phase, deleted when dropped;
//! - [`check_idle`] and [`Snapshot`]: the namespace must be free of other VPNs before,
//!   and its links, routes, firewall rules and resolver files the same after.

use std::fmt::Write as _;
use std::future::Future;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// The laptop namespace's name (`ip netns`).
pub const LAPTOP_NS: &str = "ktlab-laptop";

/// Where `ip netns` keeps the namespace.
const LAPTOP_NS_PATH: &str = "/run/netns/ktlab-laptop";

/// The laptop's own resolver files (`ip netns exec` mounts them over /etc's).
const LAPTOP_ETC: [&str; 2] = [
    "/etc/netns/ktlab-laptop/resolv.conf",
    "/etc/netns/ktlab-laptop/hosts",
];

/// Proxy variables removed from every laptop program's environment: the laptop has no
/// proxy, and kubectl would send the API server's traffic to one.
const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// How long a stopped program may take to exit before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// How long a dropped program gets after SIGTERM before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(10);

/// The kubeconfig that reaches the API server from the laptop: `$KT_LAPTOP_KUBECONFIG`,
/// else `/run/ktlab/laptop.kubeconfig`.
pub fn laptop_kubeconfig() -> Result<PathBuf> {
    let path = std::env::var_os("KT_LAPTOP_KUBECONFIG")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from("/run/ktlab/laptop.kubeconfig"),
            PathBuf::from,
        );
    ensure!(
        path.is_file(),
        "no laptop kubeconfig at {} (set KT_LAPTOP_KUBECONFIG; the lab writes it)",
        path.display()
    );
    Ok(path)
}

/// The namespace's identity (device and inode of its nsfs file).
fn ns_id(path: &Path) -> Result<(u64, u64)> {
    let m = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok((m.dev(), m.ino()))
}

/// Whether the calling thread is in the laptop namespace.
pub fn in_laptop_ns() -> Result<bool> {
    Ok(ns_id(Path::new("/proc/thread-self/ns/net"))? == ns_id(Path::new(LAPTOP_NS_PATH))?)
}

/// Aborts a task on another runtime when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A multi-threaded tokio runtime (2 workers, like the other benchmarks' on the
/// reference machine) whose threads are all in the laptop namespace: a thread moves
/// itself there with `setns` and then builds the runtime, whose threads inherit the
/// namespace. Dropping it stops the runtime and joins its thread.
pub struct LaptopRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LaptopRuntime {
    /// Starts it; fails if the namespace is missing or `setns` is refused (not root).
    pub fn start() -> Result<LaptopRuntime> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("laptop-ns".to_owned())
            .spawn(move || {
                let built = (|| -> Result<tokio::runtime::Runtime> {
                    let ns = std::fs::File::open(LAPTOP_NS_PATH).with_context(|| {
                        format!("opening {LAPTOP_NS_PATH}: is the lab up (testbed/up)?")
                    })?;
                    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)
                        .context("setns into the laptop namespace (needs root)")?;
                    ensure!(in_laptop_ns()?, "setns did not move the thread");
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name("laptop-ns-worker")
                        .enable_all()
                        .build()
                        .context("building the laptop runtime")
                })();
                match built {
                    Ok(rt) => {
                        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                        if tx.send(Ok((rt.handle().clone(), stop_tx))).is_ok() {
                            rt.block_on(async {
                                let _ = stop_rx.await;
                            });
                        }
                        rt.shutdown_timeout(Duration::from_secs(5));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .context("starting the laptop thread")?;
        let (handle, stop) = rx
            .recv()
            .map_err(|_| anyhow!("the laptop thread ended without a runtime"))??;
        Ok(LaptopRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `fut` on the laptop runtime and waits for it (from any runtime). It first
    /// checks that it runs in the laptop namespace. Dropping the returned future aborts
    /// the task.
    pub async fn run<T, F>(&self, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let mut task = AbortOnDrop(self.handle.spawn(async move {
            ensure!(
                in_laptop_ns()?,
                "a laptop runtime thread is not in the laptop namespace"
            );
            fut.await
        }));
        match (&mut task.0).await {
            Ok(r) => r,
            Err(e) => Err(anyhow!("the laptop task failed: {e}")),
        }
    }
}

impl Drop for LaptopRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A program running in the laptop namespace (`ip netns exec ktlab-laptop <program>`,
/// which becomes the program: the child's pid is the program's), its stdout and stderr
/// kept line by line. [`LaptopProcess::stop`] signals it and waits; dropping a running
/// one sends SIGTERM, waits up to 10 s (blocking) and then kills it.
pub struct LaptopProcess {
    what: String,
    child: Child,
    lines: Arc<Mutex<Vec<(Stream, String)>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl LaptopProcess {
    /// Starts `program args` in the laptop namespace, with no proxy variables; `what`
    /// names it in messages.
    pub fn spawn(what: &str, program: &Path, args: &[&str]) -> Result<LaptopProcess> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", LAPTOP_NS])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {what} in the laptop namespace"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(read_lines(out, Stream::Stdout, Arc::clone(&lines)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(read_lines(err, Stream::Stderr, Arc::clone(&lines)));
        }
        Ok(LaptopProcess {
            what: what.to_owned(),
            child,
            lines,
            readers,
            exited: None,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything it printed so far, each line tagged with its stream.
    pub fn output(&self) -> String {
        let mut out = String::new();
        if let Ok(lines) = self.lines.lock() {
            for (stream, line) in lines.iter() {
                let tag = match stream {
                    Stream::Stdout => "out",
                    Stream::Stderr => "err",
                };
                let _ = writeln!(out, "  [{tag}] {line}");
            }
        }
        out
    }

    /// The lines it printed on `stream` so far.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|(s, _)| *s == stream)
                    .map(|(_, line)| line.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails (with its output) if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.what, self.output());
        }
        Ok(())
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// Waits until a line on `stream` makes `found` return `Some`, within `limit`;
    /// fails with its output if it exits first or the time runs out.
    pub async fn wait_line<T>(
        &mut self,
        stream: Stream,
        limit: Duration,
        found: impl Fn(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let hit = self.lines.lock().ok().and_then(|l| {
                l.iter()
                    .filter(|(s, _)| *s == stream)
                    .find_map(|(_, line)| found(line))
            });
            if let Some(v) = hit {
                return Ok(v);
            }
            if let Some(status) = self.try_wait()? {
                // Let the readers take in its last words.
                for r in &mut self.readers {
                    let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
                }
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.what,
                    self.output()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} was not ready within {limit:?}:\n{}",
                    self.what,
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (unless it has already exited) and waits for the exit (killing
    /// it after a minute). Returns the exit status.
    pub async fn stop(&mut self, signal: Signal) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        if let Some(pid) = self.pid() {
            let pid = Pid::from_raw(i32::try_from(pid).context("pid")?);
            nix::sys::signal::kill(pid, signal)
                .with_context(|| format!("sending {signal} to {}", self.what))?;
        }
        let status = match tokio::time::timeout(STOP_LIMIT, self.child.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "{} did not exit within {STOP_LIMIT:?} of {signal}; killed:\n{}",
                    self.what,
                    self.output()
                );
            }
        };
        self.exited = Some(status);
        for r in &mut self.readers {
            let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
        }
        Ok(status)
    }
}

impl Drop for LaptopProcess {
    fn drop(&mut self) {
        if !matches!(self.try_wait(), Ok(None)) {
            return;
        }
        eprintln!("bench: stopping {} (SIGTERM)", self.what);
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        // Blocking on purpose: Drop cannot await, and the program must be gone (its
        // tun device, its firewall rules) before the benchmark goes on or exits.
        let deadline = std::time::Instant::now() + DROP_GRACE;
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("bench: {} ignored SIGTERM; killing it", self.what);
        let _ = self.child.start_kill();
    }
}

fn read_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    stream: Stream,
    into: Arc<Mutex<Vec<(Stream, String)>>>,
) -> tokio::task::JoinHandle<()> {
    // Ends when the program exits and its pipe closes.
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut l) = into.lock() {
                l.push((stream, line));
            }
        }
    })
}

/// Runs a short command to completion (bounded) and returns its stdout; fails unless
/// it exits 0.
async fn output_of(program: &str, args: &[&str]) -> Result<String> {
    let out = kt_lab_tests::host_command(program, args, Duration::from_secs(30)).await?;
    kt_lab_tests::check_output(&format!("`{program} {}`", args.join(" ")), out)
}

/// A route added to the laptop namespace (`ip route add <spec>`), deleted when dropped
/// (or by [`LaptopRoute::remove`], which says whether that worked).
pub struct LaptopRoute {
    spec: Vec<String>,
    added: bool,
}

impl LaptopRoute {
    /// Adds it; fails if `ip` does (e.g. the route exists already).
    pub async fn add(spec: &[&str]) -> Result<LaptopRoute> {
        let mut args = vec!["-n", LAPTOP_NS, "route", "add"];
        args.extend_from_slice(spec);
        output_of("ip", &args).await?;
        Ok(LaptopRoute {
            spec: spec.iter().map(|s| (*s).to_owned()).collect(),
            added: true,
        })
    }

    /// Deletes it.
    pub async fn remove(mut self) -> Result<()> {
        self.added = false;
        let mut args = vec!["-n", LAPTOP_NS, "route", "del"];
        args.extend(self.spec.iter().map(String::as_str));
        output_of("ip", &args).await.map(drop)
    }
}

impl Drop for LaptopRoute {
    fn drop(&mut self) {
        if !self.added {
            return;
        }
        // Blocking on purpose, as in LaptopProcess's Drop.
        let res = std::process::Command::new("ip")
            .args(["-n", LAPTOP_NS, "route", "del"])
            .args(&self.spec)
            .stdin(Stdio::null())
            .output();
        match res {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: ip -n {LAPTOP_NS} route del {}: {}",
                self.spec.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip route del: {e}"),
        }
    }
}

/// Fails, saying what is there, unless the laptop namespace is free for a VPN: no tun
/// device (kt0, …), no route over `lo`, no ktctl or sshuttle running in it, no
/// sshuttle firewall rules.
pub async fn check_idle() -> Result<()> {
    ensure!(
        Path::new(LAPTOP_NS_PATH).exists(),
        "no laptop namespace ({LAPTOP_NS_PATH}): is the lab up (testbed/up)?"
    );
    let links = output_of("ip", &["-n", LAPTOP_NS, "-o", "-d", "link", "show"]).await?;
    for line in links.lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        if name.starts_with("kt") || line.contains(" tun ") {
            bail!(
                "the laptop namespace already has a tun device ({name}): another VPN \
                 (ktctl --mode vpn, ktctl/tests/vpn.rs) is using it; stop it first\n{line}"
            );
        }
    }
    let routes = output_of("ip", &["-n", LAPTOP_NS, "route", "show"]).await?;
    if let Some(r) = routes.lines().find(|r| r.contains(" dev lo")) {
        bail!(
            "the laptop namespace has a route over lo ({r}), as the vpn benchmark adds for \
             sshuttle: left by a killed run? Delete it (ip -n {LAPTOP_NS} route del ...)"
        );
    }
    let busy = running(|comm, cmdline| comm == "ktctl" || cmdline.contains("sshuttle"))?;
    ensure!(
        busy.is_empty(),
        "ktctl or sshuttle already runs in the laptop namespace; stop it first:\n{}",
        busy.join("\n")
    );
    let rules = iptables().await?;
    ensure!(
        !rules.contains("sshuttle"),
        "the laptop namespace has sshuttle's firewall rules (a running or crashed \
         sshuttle):\n{rules}"
    );
    Ok(())
}

/// The processes in the laptop namespace whose name (`comm`) and command line make
/// `pick` true, as `pid <pid>: <command line>`.
pub fn running(pick: impl Fn(&str, &str) -> bool) -> Result<Vec<String>> {
    let laptop = ns_id(Path::new(LAPTOP_NS_PATH))?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let dir = entry.path();
        // Processes may end while we look; skip those.
        let Ok(id) = ns_id(&dir.join("ns/net")) else {
            continue;
        };
        if id != laptop {
            continue;
        }
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let cmdline = std::fs::read(dir.join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        if pick(comm.trim(), cmdline.trim()) {
            found.push(format!("pid {pid}: {}", cmdline.trim()));
        }
    }
    Ok(found)
}

/// `iptables-save` and `ip6tables-save` of the laptop namespace without comments and
/// counters, and without tables that hold nothing but empty built-in chains with the
/// ACCEPT policy (what iptables-nft leaves behind once the last rule is deleted: the
/// same filtering as no table at all).
pub async fn iptables() -> Result<String> {
    let mut out = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let text = output_of("ip", &["netns", "exec", LAPTOP_NS, tool]).await?;
        let _ = writeln!(out, "# {tool}");
        out.push_str(&normalize_rules(&text));
    }
    Ok(out)
}

/// See [`iptables`].
fn normalize_rules(text: &str) -> String {
    let mut out = String::new();
    let mut table: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        // ":CHAIN POLICY [packets:bytes]" → ":CHAIN POLICY"
        let line = match line.strip_prefix(':') {
            Some(chain) => {
                let kept: Vec<&str> = chain
                    .split_whitespace()
                    .filter(|w| !w.starts_with('['))
                    .collect();
                format!(":{}", kept.join(" "))
            }
            None => line.to_owned(),
        };
        let end = line == "COMMIT";
        table.push(line);
        if end {
            let trivial = table.len() >= 2
                && table[1..table.len() - 1].iter().all(|l| {
                    l.starts_with(':') && l.ends_with(" ACCEPT") && {
                        let chain = l[1..].split_whitespace().next().unwrap_or("");
                        chain.chars().all(|c| c.is_ascii_uppercase())
                    }
                });
            if !trivial {
                for l in &table {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            table.clear();
        }
    }
    for l in &table {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The laptop namespace's network state and resolver files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `ip -o link show`.
    pub links: String,
    /// IPv4 and IPv6 routes of every table.
    pub routes: String,
    /// See [`iptables`].
    pub iptables: String,
    /// The laptop's resolv.conf and hosts.
    pub etc: Vec<Vec<u8>>,
}

impl Snapshot {
    /// Takes one.
    pub async fn take() -> Result<Snapshot> {
        let ip = |args: &'static [&'static str]| output_of("ip", args);
        let mut etc = Vec::new();
        for f in LAPTOP_ETC {
            etc.push(std::fs::read(f).with_context(|| format!("reading {f}"))?);
        }
        Ok(Snapshot {
            links: ip(&["-n", LAPTOP_NS, "-o", "link", "show"]).await?,
            routes: ip(&["-n", LAPTOP_NS, "route", "show", "table", "all"]).await?
                + &ip(&["-n", LAPTOP_NS, "-6", "route", "show", "table", "all"]).await?,
            iptables: iptables().await?,
            etc,
        })
    }

    /// What differs in `after` (`None`: nothing).
    pub fn diff(&self, after: &Snapshot) -> Option<String> {
        let mut out = String::new();
        for (what, a, b) in [
            ("links", &self.links, &after.links),
            ("routes", &self.routes, &after.routes),
            ("firewall rules", &self.iptables, &after.iptables),
        ] {
            if a != b {
                let _ = writeln!(out, "{what} differ\nbefore:\n{a}\nafter:\n{b}");
            }
        }
        for (i, f) in LAPTOP_ETC.iter().enumerate() {
            if self.etc.get(i) != after.etc.get(i) {
                let _ = writeln!(out, "{f} differs");
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_builtin_tables_and_counters_do_not_count() {
        let before = "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n\
                      :FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [3:180]\nCOMMIT\n# Completed\n";
        assert_eq!(normalize_rules(before), "");
        assert_eq!(normalize_rules(""), "");
        let rules = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [9:540]\n\
                     :sshuttle-12300 - [0:0]\n-A OUTPUT -j sshuttle-12300\nCOMMIT\n";
        assert_eq!(
            normalize_rules(rules),
            "*nat\n:PREROUTING ACCEPT\n:OUTPUT ACCEPT\n:sshuttle-12300 -\n\
             -A OUTPUT -j sshuttle-12300\nCOMMIT\n"
        );
        // An empty user chain, or a DROP policy, is something.
        let chain = "*nat\n:OUTPUT ACCEPT [0:0]\n:mine - [0:0]\nCOMMIT\n";
        assert_eq!(
            normalize_rules(chain),
            "*nat\n:OUTPUT ACCEPT\n:mine -\nCOMMIT\n"
        );
        let drop = "*filter\n:INPUT DROP [0:0]\nCOMMIT\n";
        assert_eq!(normalize_rules(drop), "*filter\n:INPUT DROP\nCOMMIT\n");
    }
}
