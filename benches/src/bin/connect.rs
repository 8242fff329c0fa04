//! Connect time: from the `Session::connect` call to the first HTTP response through the
//! session's HTTP proxy (`GET http://echo.<ns>/healthz`), beside `kubectl port-forward
//! pod/<echo pod> :8080` start to the first response through it. kt runs three ways:
//! imageless with the agent's parts already in the namespace (the default, after the
//! first session), imageless on first use (the parts deleted before each run, so it
//! uploads them), and with an explicit image (the lab's `kt.invalid/kt-shadow`).
//!
//! `cargo run --release -p kt-benches --bin connect [-- --runs 10]`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kt_benches::stats::{median, ms};
use kt_benches::{Bench, ECHO_HTTP_PORT, Route, Summary, get_once, ratio};
use kt_core::{Event, Session};

const USAGE: &str = "usage: connect [--runs N (default 10, at most 50)]";

/// Bound on one connect + first response (and on one close).
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn main() -> std::process::ExitCode {
    kt_benches::main_with("connect", Duration::from_secs(20 * 60), run)
}

/// How a kt run gets its agent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Imageless, the agent's parts already in the namespace.
    Reused,
    /// Imageless, the parts deleted first: the run uploads them.
    FirstUse,
    /// The lab's kt-shadow image.
    Image,
}

impl Way {
    const ALL: [Way; 3] = [Way::Reused, Way::FirstUse, Way::Image];

    fn label(self) -> &'static str {
        match self {
            Way::Reused => "kt imageless, parts reused (default)",
            Way::FirstUse => "kt imageless, first use (uploads the parts)",
            Way::Image => "kt with an explicit image",
        }
    }
}

/// One kt run: total time to the first response, and when each connect event came.
struct KtRun {
    first_response: Duration,
    close: Duration,
    /// (index into [`STEPS`], time since the connect call).
    events: Vec<(usize, Duration)>,
}

/// The connect progress events reported, in order.
const STEPS: [&str; 7] = [
    "uploading the agent",
    "creating pod",
    "scheduled",
    "pulling image",
    "container started",
    "pod ready",
    "tunnel up (connect returns)",
];

async fn run() -> Result<()> {
    let args = kt_benches::parse_args(USAGE)?;
    kt_benches::check_args(&args, &["runs"], USAGE)?;
    let runs: usize = kt_benches::arg(&args, "runs", 10)?;
    anyhow::ensure!((1..=50).contains(&runs), "--runs must be 1..=50");

    let bench = Bench::start("connect").await?;
    let url_host = format!("echo.{}", bench.namespace());
    let pod_target = format!("pod/{}", bench.echo_pod);

    // One untimed round of each first: the lab's caches (kubectl's discovery cache,
    // the node agent's binaries) are then warm for all.
    eprintln!("warm-up: one kt session each way and one kubectl port-forward (not counted)");
    for way in Way::ALL {
        kt_run(&bench, &url_host, way)
            .await
            .with_context(|| format!("warm-up: {}", way.label()))?;
    }
    kubectl_run(&bench, &pod_target)
        .await
        .context("warm-up kubectl run")?;

    let mut kt: BTreeMap<usize, Vec<KtRun>> = BTreeMap::new();
    let mut kubectl = Vec::new();
    // Alternate, so that load from elsewhere on the machine hits all alike.
    for i in 1..=runs {
        for (w, way) in Way::ALL.into_iter().enumerate() {
            let k = kt_run(&bench, &url_host, way)
                .await
                .with_context(|| format!("run {i}: {}", way.label()))?;
            eprintln!(
                "run {i:>2}: {:<46} {} (close {})",
                way.label(),
                ms(k.first_response),
                ms(k.close)
            );
            kt.entry(w).or_default().push(k);
        }
        let c = kubectl_run(&bench, &pod_target)
            .await
            .with_context(|| format!("kubectl run {i}"))?;
        eprintln!("run {i:>2}: {:<46} {}", "kubectl port-forward", ms(c));
        kubectl.push(c);
    }

    let kc_s = Summary::of(&kubectl).context("no kubectl runs")?;
    let summaries: Vec<(Way, Summary, Summary)> = Way::ALL
        .into_iter()
        .enumerate()
        .filter_map(|(w, way)| {
            let runs = kt.get(&w)?;
            let first = Summary::of(&runs.iter().map(|r| r.first_response).collect::<Vec<_>>())?;
            let close = Summary::of(&runs.iter().map(|r| r.close).collect::<Vec<_>>())?;
            Some((way, first, close))
        })
        .collect();

    println!();
    println!(
        "connect: start to first HTTP response, {runs} runs each (namespace {})",
        bench.namespace()
    );
    println!("{:<52} {:>10} {:>10} {:>10}", "path", "min", "p50", "max");
    for (way, s, _) in &summaries {
        println!(
            "{:<52} {:>10} {:>10} {:>10}",
            way.label(),
            ms(s.min),
            ms(s.p50),
            ms(s.max)
        );
    }
    println!(
        "{:<52} {:>10} {:>10} {:>10}",
        "kubectl port-forward pod :8080 + GET",
        ms(kc_s.min),
        ms(kc_s.p50),
        ms(kc_s.max)
    );
    for (way, _, close) in &summaries {
        println!(
            "{:<52} {:>10} {:>10} {:>10}",
            format!("(close: {})", way.label()),
            ms(close.min),
            ms(close.p50),
            ms(close.max)
        );
    }

    // When each connect step was reached, median over the runs.
    for (w, way) in Way::ALL.into_iter().enumerate() {
        let mut steps: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for r in kt.get(&w).into_iter().flatten() {
            for (step, at) in &r.events {
                steps.entry(*step).or_default().push(at.as_secs_f64());
            }
        }
        println!(
            "{} — steps (median time since the connect call):",
            way.label()
        );
        for (step, at) in &steps {
            println!(
                "  {:<28} {:>9.1} ms  ({} runs)",
                STEPS[*step],
                median(at) * 1e3,
                at.len()
            );
        }
    }
    println!();
    let reused = summaries
        .iter()
        .find(|(w, ..)| *w == Way::Reused)
        .map(|(_, s, _)| s.p50);
    for (way, s, _) in &summaries {
        println!(
            "connect p50: {} {} vs kubectl port-forward {}: ratio {} (lower is better){}",
            way.label(),
            ms(s.p50),
            ms(kc_s.p50),
            ratio(s.p50.as_secs_f64(), kc_s.p50.as_secs_f64()),
            reused
                .filter(|_| *way != Way::Reused)
                .map(|r| format!(
                    "; vs parts reused: {}",
                    ratio(s.p50.as_secs_f64(), r.as_secs_f64())
                ))
                .unwrap_or_default()
        );
    }
    Ok(())
}
/// Connects, fetches `http://echo.<ns>/healthz` through the HTTP proxy, closes.
async fn kt_run(bench: &Bench, url_host: &str, way: Way) -> Result<KtRun> {
    let mut opts = bench.kt_options()?;
    match way {
        Way::Reused => {}
        Way::FirstUse => {
            // No session lives between runs: every part is unused, so this removes them.
            bench
                .ns
                .kubectl(&[
                    "delete",
                    "configmaps",
                    "-l",
                    "kt.dev/role=agent-part",
                    "--wait=true",
                ])
                .await?;
        }
        Way::Image => {
            kt_lab_tests::kt_shadow_bin()?;
            opts = opts.shadow_image(kt_lab_tests::KT_SHADOW_IMAGE);
        }
    }
    let events: Arc<Mutex<Vec<(usize, Duration)>>> = Arc::default();
    let started = Instant::now();
    let opts = {
        let events = Arc::clone(&events);
        opts.on_event(move |e| {
            let step = match e {
                Event::Uploading { .. } => 0,
                Event::Creating { .. } => 1,
                Event::Scheduled { .. } => 2,
                Event::Pulling { .. } => 3,
                Event::ImageReady { .. } => 4,
                Event::Ready { .. } => 5,
                Event::TunnelUp { .. } => 6,
                _ => return,
            };
            if let Ok(mut ev) = events.lock() {
                ev.push((step, started.elapsed()));
            }
        })
    };
    let session = tokio::time::timeout(RUN_LIMIT, Box::pin(Session::connect(opts)))
        .await
        .map_err(|_| anyhow::anyhow!("Session::connect took over {RUN_LIMIT:?}"))??;
    let route = Route::http_proxy(session.http_proxy_addr(), url_host, 80);
    let got = get_once(&route, "/healthz", b"ok", RUN_LIMIT).await;
    let first_response = started.elapsed();
    let close_started = Instant::now();
    let closed = tokio::time::timeout(RUN_LIMIT, session.close()).await;
    let close = close_started.elapsed();
    got?;
    closed.map_err(|_| anyhow::anyhow!("Session::close took over {RUN_LIMIT:?}"))??;
    let events = events.lock().map(|e| e.clone()).unwrap_or_default();
    Ok(KtRun {
        first_response,
        close,
        events,
    })
}

/// Starts `kubectl port-forward`, fetches `/healthz` through it, kills it.
async fn kubectl_run(bench: &Bench, target: &str) -> Result<Duration> {
    let started = Instant::now();
    let attempt = async {
        let pf = bench
            .ns
            .kubectl_port_forward(target, ECHO_HTTP_PORT)
            .await?;
        let route = Route::local(([127, 0, 0, 1], pf.local_port).into());
        get_once(&route, "/healthz", b"ok", RUN_LIMIT)
            .await
            .with_context(|| format!("kubectl said:\n{}", pf.output()))?;
        let elapsed = started.elapsed();
        // `pf` is dropped here: kubectl is killed.
        anyhow::Ok(elapsed)
    };
    tokio::time::timeout(RUN_LIMIT, attempt)
        .await
        .map_err(|_| anyhow::anyhow!("kubectl port-forward run took over {RUN_LIMIT:?}"))?
}
