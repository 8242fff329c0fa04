//! Small-request latency: `GET /healthz` over one kept-alive HTTP/1.1 connection, 100
//! warm-up requests then 2000 timed ones, one after the other, through kt's SOCKS5
//! proxy, HTTP proxy and local forward, beside `kubectl port-forward` straight to the
//! pod and `ssh -D` over a `kubectl port-forward` to an sshd pod. p50 and p99.
//!
//! `cargo run --release -p kt-benches --bin latency [-- --requests 2000 --warmup 100 --kt-openssh false]`

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kt_benches::stats::us;
use kt_benches::{Bench, Kind, Peer, Peers, Summary, healthz_latencies, ratio};

const USAGE: &str = "usage: latency [--requests N (default 2000, 1..=20000)] [--warmup N (default 100)] \
                     [--kt-openssh true|false (default false: also kt with the OpenSSH shadow)]";

fn main() -> std::process::ExitCode {
    kt_benches::main_with("latency", Duration::from_secs(20 * 60), run)
}

async fn run() -> Result<()> {
    let args = kt_benches::parse_args(USAGE)?;
    kt_benches::check_args(&args, &["requests", "warmup", "kt-openssh"], USAGE)?;
    let requests: usize = kt_benches::arg(&args, "requests", 2000)?;
    let warmup: usize = kt_benches::arg(&args, "warmup", 100)?;
    let kt_openssh: bool = kt_benches::arg(&args, "kt-openssh", false)?;
    ensure!(
        (1..=20_000).contains(&requests),
        "--requests must be 1..=20000"
    );
    ensure!(warmup <= 10_000, "--warmup must be at most 10000");
    // Each contender: at least 100 requests/s on average, or the run is stopped.
    let limit = Duration::from_secs(30 + (requests + warmup) as u64 / 100);

    let bench = Bench::start("latency").await?;
    let mut peers = Peers::start(&bench, kt_openssh).await?;
    let measured = measure(&mut peers, requests, warmup, limit).await;
    let closed = peers.close().await;
    let results = measured?;
    closed?;
    report(&bench, &results, requests, warmup);
    Ok(())
}

async fn measure(
    peers: &mut Peers,
    requests: usize,
    warmup: usize,
    limit: Duration,
) -> Result<Vec<(Kind, &'static str, Stats)>> {
    let mut out = Vec::new();
    for p in peers.peers.clone() {
        let stats = match tokio::time::timeout(limit, one(&p, requests, warmup)).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => return Err(e.context(format!("{}\n{}", p.label, peers.diagnostics()))),
            Err(_) => anyhow::bail!(
                "{}: not done within {limit:?}\n{}",
                p.label,
                peers.diagnostics()
            ),
        };
        eprintln!(
            "{:<26} p50 {:>8}  p99 {:>8}  {} of {requests} took >= {SLOW:?}",
            p.label,
            us(stats.0.p50),
            us(stats.0.p99),
            stats.1
        );
        out.push((p.kind, p.label, stats));
        peers.check_running()?;
    }
    Ok(out)
}

/// `warmup` then `requests` sequential `GET /healthz` over one connection.
async fn one(p: &Peer, requests: usize, warmup: usize) -> Result<Stats> {
    let samples = healthz_latencies(&p.route, requests, warmup).await?;
    let slow = samples.iter().filter(|d| **d >= SLOW).count();
    Ok((Summary::of(&samples).context("no samples")?, slow))
}

/// Requests at least this slow are counted apart (a delayed-ACK stall is ~40 ms).
const SLOW: Duration = Duration::from_millis(20);

/// The statistics of one contender, and how many requests took [`SLOW`] or more.
type Stats = (Summary, usize);

fn report(bench: &Bench, rows: &[(Kind, &'static str, Stats)], requests: usize, warmup: usize) {
    let kubectl = rows.iter().find(|r| r.0 == Kind::Kubectl).map(|r| r.2.0);
    let secs = |d: Duration| d.as_secs_f64();
    println!();
    println!(
        "latency: GET /healthz over one kept-alive connection, {requests} requests after \
         {warmup} warm-up, pod {} ({}:8080), namespace {}",
        bench.echo_pod,
        bench.echo_ip,
        bench.namespace()
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
    for (_, label, (s, slow)) in rows {
        let (r50, r99) = kubectl.map_or_else(
            || ("n/a".to_owned(), "n/a".to_owned()),
            |k| {
                (
                    ratio(secs(s.p50), secs(k.p50)),
                    ratio(secs(s.p99), secs(k.p99)),
                )
            },
        );
        println!(
            "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>11}",
            label,
            us(s.min),
            us(s.p50),
            us(s.p99),
            us(s.max),
            us(s.mean),
            slow,
            r50,
            r99
        );
    }
    println!(
        "(kt HTTP proxy: one kept-alive connection to the proxy; kt opens a new upstream \
         connection per plain request)"
    );
    println!();
    let Some(k) = kubectl else {
        return;
    };
    for (kind, name) in [
        (Kind::KtSocks, "kt socks5"),
        (Kind::KtHttp, "kt HTTP proxy"),
        (Kind::KtForward, "kt forward"),
        (Kind::KtSocksOpenSsh, "kt socks5 (sshd shadow)"),
        (Kind::SshD, "ssh -D"),
    ] {
        if let Some((_, _, (s, _))) = rows.iter().find(|r| r.0 == kind) {
            println!(
                "latency: {name} p50 {} p99 {}, kubectl port-forward p50 {} p99 {}, \
                 ratio p50 {} p99 {} (lower is better)",
                us(s.p50),
                us(s.p99),
                us(k.p50),
                us(k.p99),
                ratio(secs(s.p50), secs(k.p50)),
                ratio(secs(s.p99), secs(k.p99))
            );
        }
    }
}
