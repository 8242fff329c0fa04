//! Bulk throughput: `GET /bytes/268435456` (256 MiB) from the echo pod, every byte
//! checked, through kt's SOCKS5 proxy, HTTP proxy and local forward, beside `kubectl
//! port-forward` straight to the pod and `ssh -D` over a `kubectl port-forward` to an
//! sshd pod. Best of 3 per contender, rounds interleaved.
//!
//! `cargo run --release -p kt-benches --bin throughput [-- --mib 256 --runs 3 --kt-openssh false]`

use std::time::Duration;

use anyhow::{Context as _, Result};
use kt_benches::stats::median;
use kt_benches::{Bench, Kind, Peers, download, mib_per_s, ratio};

const USAGE: &str = "usage: throughput [--mib N (default 256, 1..=1024)] [--runs N (default 3, 1..=5)] \
                     [--kt-openssh true|false (default false: also kt with the OpenSSH shadow)]";

fn main() -> std::process::ExitCode {
    kt_benches::main_with("throughput", Duration::from_secs(30 * 60), run)
}

async fn run() -> Result<()> {
    let args = kt_benches::parse_args(USAGE)?;
    kt_benches::check_args(&args, &["mib", "runs", "kt-openssh"], USAGE)?;
    let mib: u64 = kt_benches::arg(&args, "mib", 256)?;
    let runs: usize = kt_benches::arg(&args, "runs", 3)?;
    let kt_openssh: bool = kt_benches::arg(&args, "kt-openssh", false)?;
    anyhow::ensure!((1..=1024).contains(&mib), "--mib must be 1..=1024");
    anyhow::ensure!((1..=5).contains(&runs), "--runs must be 1..=5");
    let size = mib << 20;
    // At least 2 MiB/s, or the run is stopped.
    let limit = Duration::from_secs(30 + mib / 2);

    let bench = Bench::start("throughput").await?;
    let mut peers = Peers::start(&bench, kt_openssh).await?;
    let measured = measure(&mut peers, size, runs, limit).await;
    let closed = peers.close().await;
    let results = measured?;
    closed?;
    report(&bench, &results, mib, runs);
    Ok(())
}

/// MiB/s of each run, per contender (in the order of [`Peers::peers`]).
struct Row {
    kind: Kind,
    label: &'static str,
    runs: Vec<f64>,
}

impl Row {
    fn best(&self) -> f64 {
        self.runs.iter().copied().fold(0.0, f64::max)
    }
}

async fn measure(peers: &mut Peers, size: u64, runs: usize, limit: Duration) -> Result<Vec<Row>> {
    // A small verified download on each first: every route works and is warm.
    for p in &peers.peers {
        download(&p.route, 8 << 20, limit)
            .await
            .with_context(|| format!("warm-up download through {}", p.label))?;
    }
    let mut rows: Vec<Row> = peers
        .peers
        .iter()
        .map(|p| Row {
            kind: p.kind,
            label: p.label,
            runs: Vec::new(),
        })
        .collect();
    let list = peers.peers.clone();
    for round in 1..=runs {
        for (p, row) in list.iter().zip(rows.iter_mut()) {
            let elapsed = match download(&p.route, size, limit).await {
                Ok(e) => e,
                Err(e) => {
                    let diag = peers.diagnostics();
                    return Err(e.context(format!("round {round}, {}\n{diag}", p.label)));
                }
            };
            let rate = mib_per_s(size, elapsed);
            eprintln!(
                "round {round}: {:<26} {:>8.1} MiB/s ({:.2} s)",
                p.label,
                rate,
                elapsed.as_secs_f64()
            );
            row.runs.push(rate);
        }
        peers.check_running()?;
    }
    Ok(rows)
}

fn report(bench: &Bench, rows: &[Row], mib: u64, runs: usize) {
    let kubectl = rows
        .iter()
        .find(|r| r.kind == Kind::Kubectl)
        .map_or(0.0, Row::best);
    println!();
    println!(
        "throughput: GET /bytes/{} ({mib} MiB, every byte checked) from pod {} ({}:8080), \
         MiB/s, best of {runs}, namespace {}",
        mib << 20,
        bench.echo_pod,
        bench.echo_ip,
        bench.namespace()
    );
    let mut head = format!("{:<26}", "path");
    for i in 1..=runs {
        head.push_str(&format!(" {:>8}", format!("run {i}")));
    }
    head.push_str(&format!(
        " {:>8} {:>8} {:>11}",
        "best", "median", "vs kubectl"
    ));
    println!("{head}");
    for r in rows {
        let mut line = format!("{:<26}", r.label);
        for v in &r.runs {
            line.push_str(&format!(" {v:>8.1}"));
        }
        line.push_str(&format!(
            " {:>8.1} {:>8.1} {:>11}",
            r.best(),
            median(&r.runs),
            ratio(r.best(), kubectl)
        ));
        println!("{line}");
    }
    println!();
    let line = |name: &str, kind: Kind| {
        if let Some(r) = rows.iter().find(|r| r.kind == kind) {
            println!(
                "throughput: {name} {:.1} MiB/s, kubectl port-forward {kubectl:.1} MiB/s, ratio {}",
                r.best(),
                ratio(r.best(), kubectl)
            );
        }
    };
    line("kt socks5", Kind::KtSocks);
    line("kt HTTP proxy", Kind::KtHttp);
    line("kt forward", Kind::KtForward);
    line("kt socks5 (sshd shadow)", Kind::KtSocksOpenSsh);
    line("ssh -D", Kind::SshD);
    if let (Some(kt), Some(ssh)) = (
        rows.iter().find(|r| r.kind == Kind::KtSocks),
        rows.iter().find(|r| r.kind == Kind::SshD),
    ) {
        println!(
            "throughput: kt socks5 {:.1} MiB/s, ssh -D {:.1} MiB/s, ratio {}",
            kt.best(),
            ssh.best(),
            ratio(kt.best(), ssh.best())
        );
    }
}
