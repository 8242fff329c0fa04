//! The cost of the language bindings: `connect` and one `resolve("echo")` through the C
//! ABI (kt-ffi), Python (`ktconnect`) and Node (`ktconnect`), beside the same calls made
//! from Rust on kt-core directly, in one run against the same namespace.
//!
//! Each binding runs a small program of `benches/bindings/` (`bench.c`, `bench.py`,
//! `bench.mjs`) in its own process; it times only the kt call and prints one line per
//! measurement (`connect <seconds>`, `resolve <seconds>`). The first run of every path is
//! a warm-up and is not counted (it pays for loading the library, starting the runtime
//! and the lab's first pull of the shadow).
//!
//! ```sh
//! cargo build --release -p kt-ffi -p kt-benches       # libkt for bench.c
//! bindings/node/build.sh                               # the Node addon
//! bindings/python/run-tests --install-only             # the Python venv (or set KT_BENCH_PYTHON)
//! cargo run --release -p kt-benches --bin bindings -- --runs 5
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kt_benches::stats::ms;
use kt_benches::{Bench, ScratchDir, Summary, ratio};
use kt_core::Session;

const USAGE: &str = "usage: bindings [--runs N (default 5, 2..=20)] [--langs c,python,node]";

/// Bound on one connect, resolve or close.
const CALL_LIMIT: Duration = Duration::from_secs(60);

fn main() -> std::process::ExitCode {
    kt_benches::main_with("bindings", Duration::from_secs(20 * 60), run)
}

/// The timings of one path.
#[derive(Default)]
struct Timings {
    connect: Vec<Duration>,
    resolve: Vec<Duration>,
}

impl Timings {
    /// Drops the first (warm-up) measurement of each kind.
    fn without_warmup(mut self) -> Timings {
        if !self.connect.is_empty() {
            self.connect.remove(0);
        }
        if !self.resolve.is_empty() {
            self.resolve.remove(0);
        }
        self
    }
}

async fn run() -> Result<()> {
    let args = kt_benches::parse_args(USAGE)?;
    kt_benches::check_args(&args, &["runs", "langs"], USAGE)?;
    let runs: usize = kt_benches::arg(&args, "runs", 5)?;
    anyhow::ensure!((2..=20).contains(&runs), "--runs must be 2..=20");
    let langs: String = kt_benches::arg(&args, "langs", "c,python,node".to_owned())?;
    let langs: Vec<&str> = langs.split(',').filter(|l| !l.is_empty()).collect();
    for l in &langs {
        anyhow::ensure!(
            ["c", "python", "node"].contains(l),
            "unknown language `{l}` in --langs: c, python or node"
        );
    }
    let root = repo_root();
    let scratch = ScratchDir::new("kt-bench-bindings")?;
    // Prepare every program before anything is measured, so a missing build fails fast.
    let mut programs = Vec::new();
    for lang in &langs {
        programs.push((*lang, program(lang, &root, &scratch.path)?));
    }

    let bench = Bench::start("bindings").await?;
    let kubeconfig = bench.lab.kubeconfig().to_path_buf();

    let mut rows: Vec<(String, Timings)> = Vec::new();
    eprintln!("rust: {runs} runs of Session::connect + resolve(\"echo\") + close");
    rows.push((
        "Rust (kt-core)".to_owned(),
        rust_runs(&bench, runs).await?.without_warmup(),
    ));
    for (lang, cmd) in &programs {
        eprintln!("{lang}: {runs} runs through the binding");
        let t = program_runs(cmd, &kubeconfig, bench.namespace(), runs)
            .await
            .with_context(|| format!("the {lang} bench program"))?;
        rows.push((label(lang).to_owned(), t.without_warmup()));
    }

    println!();
    println!(
        "bindings: connect and resolve(\"echo\") through each binding, {} counted runs each (namespace {})",
        runs - 1,
        bench.namespace()
    );
    println!(
        "{:<22} {:>12} {:>12} {:>12} {:>12}",
        "path", "connect p50", "connect max", "resolve p50", "resolve max"
    );
    let mut summaries = Vec::new();
    for (name, t) in &rows {
        let c = Summary::of(&t.connect).with_context(|| format!("no connect times for {name}"))?;
        let r = Summary::of(&t.resolve).with_context(|| format!("no resolve times for {name}"))?;
        println!(
            "{:<22} {:>12} {:>12} {:>12} {:>12}",
            name,
            ms(c.p50),
            ms(c.max),
            ms(r.p50),
            ms(r.max)
        );
        summaries.push((name.clone(), c, r));
    }
    println!();
    let (_, rust_c, rust_r) = summaries.first().context("no Rust row")?.clone();
    for (name, c, r) in summaries.iter().skip(1) {
        println!(
            "bindings: {name} connect {} p50 against Rust {} p50, ratio {}; resolve {} against {}, ratio {} ({name}/Rust, lower is better)",
            ms(c.p50),
            ms(rust_c.p50),
            ratio(c.p50.as_secs_f64(), rust_c.p50.as_secs_f64()),
            ms(r.p50),
            ms(rust_r.p50),
            ratio(r.p50.as_secs_f64(), rust_r.p50.as_secs_f64()),
        );
    }
    Ok(())
}

fn label(lang: &str) -> &'static str {
    match lang {
        "c" => "C (kt-ffi)",
        "python" => "Python (ktconnect)",
        _ => "Node (ktconnect)",
    }
}

/// The workspace root (this crate's parent).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `Session::connect`, `resolve("echo")` and `close`, `runs` times, timed like the
/// binding programs time theirs: around the call only.
async fn rust_runs(bench: &Bench, runs: usize) -> Result<Timings> {
    let mut t = Timings::default();
    for i in 1..=runs {
        let opts = bench.kt_options()?;
        let started = Instant::now();
        let session = tokio::time::timeout(CALL_LIMIT, Box::pin(Session::connect(opts)))
            .await
            .map_err(|_| anyhow::anyhow!("Session::connect took over {CALL_LIMIT:?}"))?
            .with_context(|| format!("Rust run {i}: connect"))?;
        t.connect.push(started.elapsed());
        let started = Instant::now();
        let ips = tokio::time::timeout(CALL_LIMIT, session.resolve("echo")).await;
        let elapsed = started.elapsed();
        let closed = tokio::time::timeout(CALL_LIMIT, session.close()).await;
        let ips = ips
            .map_err(|_| anyhow::anyhow!("resolve took over {CALL_LIMIT:?}"))?
            .with_context(|| format!("Rust run {i}: resolve"))?;
        anyhow::ensure!(!ips.is_empty(), "Rust run {i}: `echo` resolved to nothing");
        t.resolve.push(elapsed);
        closed
            .map_err(|_| anyhow::anyhow!("close took over {CALL_LIMIT:?}"))?
            .with_context(|| format!("Rust run {i}: close"))?;
    }
    Ok(t)
}

/// The command that runs the bench program of `lang` (compiling it for C).
fn program(lang: &str, root: &Path, scratch: &Path) -> Result<Vec<String>> {
    let dir = root.join("benches/bindings");
    match lang {
        "c" => {
            // libkt from the same target directory and profile as this binary.
            let exe = std::env::current_exe()?;
            let profile_dir = exe.parent().context("the bench binary has no directory")?;
            let lib = profile_dir.join("libkt.so");
            if !lib.exists() {
                bail!(
                    "{} is missing: build the C library with the same profile first \
                     (`cargo build --release -p kt-ffi`)",
                    lib.display()
                );
            }
            let out = scratch.join("bench-c");
            let status = std::process::Command::new("cc")
                .arg("-O2")
                .arg("-o")
                .arg(&out)
                .arg(dir.join("bench.c"))
                .arg("-I")
                .arg(root.join("kt-ffi/include"))
                .arg("-L")
                .arg(profile_dir)
                .arg(format!("-Wl,-rpath,{}", profile_dir.display()))
                .arg("-lkt")
                .status()
                .context("running cc (install a C compiler)")?;
            anyhow::ensure!(status.success(), "compiling bench.c failed");
            Ok(vec![out.display().to_string()])
        }
        "python" => {
            let python = std::env::var("KT_BENCH_PYTHON").unwrap_or_else(|_| default_python());
            Ok(vec![python, dir.join("bench.py").display().to_string()])
        }
        _ => {
            let addon = root.join("bindings/node/ktconnect.node");
            if !addon.exists() {
                bail!(
                    "{} is missing: build the Node addon first (bindings/node/build.sh)",
                    addon.display()
                );
            }
            Ok(vec![
                "node".to_owned(),
                dir.join("bench.mjs").display().to_string(),
            ])
        }
    }
}

/// The venv `bindings/python/run-tests` makes (`$KT_CACHE`, else `~/.cache/kt`).
fn default_python() -> String {
    let cache = std::env::var("KT_CACHE").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
        format!("{home}/.cache/kt")
    });
    let version = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cache}/venv-python-{version}/bin/python")
}

/// Runs a bench program and parses its `connect <s>` / `resolve <s>` lines.
async fn program_runs(
    cmd: &[String],
    kubeconfig: &Path,
    namespace: &str,
    runs: usize,
) -> Result<Timings> {
    let (exe, rest) = cmd.split_first().context("empty command")?;
    let mut c = tokio::process::Command::new(exe);
    c.args(rest)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", namespace, "--runs", &runs.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // `cargo run` points this at target/<profile>/deps, where an older libkt may sit;
        // bench.c's rpath names the library built beside this binary.
        .env_remove("LD_LIBRARY_PATH")
        .kill_on_drop(true);
    let limit = CALL_LIMIT * 3 * u32::try_from(runs).unwrap_or(20);
    let out = tokio::time::timeout(limit, c.output())
        .await
        .map_err(|_| anyhow::anyhow!("`{}` took over {limit:?}", cmd.join(" ")))?
        .with_context(|| format!("starting `{}`", cmd.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "`{}` failed: {}",
        cmd.join(" "),
        out.status
    );
    parse_timings(&String::from_utf8_lossy(&out.stdout), runs)
}

/// Parses `connect <seconds>` and `resolve <seconds>` lines; expects `runs` of each.
fn parse_timings(text: &str, runs: usize) -> Result<Timings> {
    let mut t = Timings::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(value), None) = (words.next(), words.next(), words.next()) else {
            bail!("unexpected line from the bench program: `{line}`");
        };
        let secs: f64 = value
            .parse()
            .with_context(|| format!("not a number of seconds: `{line}`"))?;
        anyhow::ensure!(secs.is_finite() && secs >= 0.0, "not a duration: `{line}`");
        let d = Duration::from_secs_f64(secs);
        match kind {
            "connect" => t.connect.push(d),
            "resolve" => t.resolve.push(d),
            _ => bail!("unexpected measurement `{kind}` from the bench program"),
        }
    }
    anyhow::ensure!(
        t.connect.len() == runs && t.resolve.len() == runs,
        "the bench program reported {} connect and {} resolve times; expected {runs} of each",
        t.connect.len(),
        t.resolve.len()
    );
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_bench_programs_output() -> Result<()> {
        let t = parse_timings(
            "connect 0.25\nresolve 0.001\nconnect 0.5\nresolve 2e-3\n",
            2,
        )?;
        assert_eq!(
            t.connect,
            [Duration::from_millis(250), Duration::from_millis(500)]
        );
        assert_eq!(
            t.resolve,
            [Duration::from_millis(1), Duration::from_millis(2)]
        );
        Ok(())
    }

    #[test]
    fn rejects_missing_or_malformed_measurements() {
        assert!(parse_timings("connect 0.25\n", 1).is_err());
        assert!(parse_timings("connect x\nresolve 1\n", 1).is_err());
        assert!(parse_timings("connect -1\nresolve 1\n", 1).is_err());
        assert!(parse_timings("connected 1\nresolve 1\n", 1).is_err());
    }
}
