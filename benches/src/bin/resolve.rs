//! Cluster DNS through a session: `Session::resolve` of names it has not seen (each a
//! different pod DNS name, `10-0-<a>-<b>.<ns>.pod.cluster.local`, so no cache can
//! answer), of the echo Service's short name the first time (search list walked), and
//! of that name again (answered from the session's cache).
//!
//! `cargo run --release -p kt-benches --bin resolve [-- --lookups 200]`
//!
//! Run it on two builds of kt-core (before and after a change) and compare the p50s.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kt_benches::stats::us;
use kt_benches::{Bench, Summary};
use kt_core::Session;

const USAGE: &str = "usage: resolve [--lookups N (default 200, at most 5000)]";

fn main() -> std::process::ExitCode {
    kt_benches::main_with("resolve", Duration::from_secs(10 * 60), run)
}

async fn run() -> Result<()> {
    let args = kt_benches::parse_args(USAGE)?;
    kt_benches::check_args(&args, &["lookups"], USAGE)?;
    let lookups: usize = kt_benches::arg(&args, "lookups", 200)?;
    anyhow::ensure!((1..=5000).contains(&lookups), "--lookups must be 1..=5000");

    let bench = Bench::start("resolve").await?;
    let ns = bench.namespace().to_owned();
    let session = Session::connect(bench.kt_options()?)
        .await
        .context("connecting")?;

    // Warm the tunnel and the DNS path once (not counted).
    session
        .resolve("kubernetes.default")
        .await
        .context("warm-up")?;

    let mut fresh = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let name = format!("10-0-{}-{}.{ns}.pod.cluster.local", i / 250, i % 250 + 1);
        let t = Instant::now();
        let ips = session.resolve(&name).await.with_context(|| name.clone())?;
        fresh.push(t.elapsed());
        anyhow::ensure!(!ips.is_empty(), "{name}: no address");
    }

    let t = Instant::now();
    let first = session.resolve("echo").await.context("echo")?;
    let short_first = t.elapsed();
    anyhow::ensure!(!first.is_empty(), "echo: no address");

    let mut cached = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let t = Instant::now();
        let ips = session.resolve("echo").await.context("echo again")?;
        cached.push(t.elapsed());
        anyhow::ensure!(
            ips == first,
            "echo changed its address: {ips:?} vs {first:?}"
        );
    }
    session.close().await.context("closing")?;

    let f = Summary::of(&fresh).context("no samples")?;
    let c = Summary::of(&cached).context("no samples")?;
    println!("resolve: {lookups} lookups each (namespace {ns})");
    println!("{:<44} {:>10} {:>10} {:>10}", "lookup", "p50", "p99", "max");
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "uncached FQDN (pod DNS name)",
        us(f.p50),
        us(f.p99),
        us(f.max)
    );
    println!(
        "{:<44} {:>10}",
        "short name, first time (search list)",
        us(short_first)
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "short name, cached",
        us(c.p50),
        us(c.p99),
        us(c.max)
    );
    println!(
        "resolve: uncached p50 {}, cached p50 {}",
        us(f.p50),
        us(c.p50)
    );
    Ok(())
}
