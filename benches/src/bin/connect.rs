//! Connect time: from the `Session::connect` call to the first HTTP response through the
//! session's HTTP proxy (`GET http://echo.<ns>/healthz`), beside `kubectl port-forward
//! pod/<echo pod> :8080` start to the first response through it.
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

/// One kt run: total time to the first response, and when each connect event came.
struct KtRun {
    first_response: Duration,
    close: Duration,
    /// (index into [`STEPS`], time since the connect call).
    events: Vec<(usize, Duration)>,
}

/// The connect progress events reported, in order.
const STEPS: [&str; 6] = [
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
    // the node agent's binaries) are then warm for both.
    eprintln!("warm-up: one kt session and one kubectl port-forward (not counted)");
    kt_run(&bench, &url_host).await.context("warm-up kt run")?;
    kubectl_run(&bench, &pod_target)
        .await
        .context("warm-up kubectl run")?;

    let mut kt = Vec::new();
    let mut kubectl = Vec::new();
    // Alternate, so that load from elsewhere on the machine hits both alike.
    for i in 1..=runs {
        let k = kt_run(&bench, &url_host)
            .await
            .with_context(|| format!("kt run {i}"))?;
        let c = kubectl_run(&bench, &pod_target)
            .await
            .with_context(|| format!("kubectl run {i}"))?;
        let at = |step: usize| {
            k.events
                .iter()
                .find(|(s, _)| *s == step)
                .map_or_else(|| "-".to_owned(), |(_, t)| ms(*t))
        };
        eprintln!(
            "run {i:>2}: kt {} (pod ready at {}, tunnel up at {}; close {}), kubectl port-forward {}",
            ms(k.first_response),
            at(4),
            at(5),
            ms(k.close),
            ms(c)
        );
        kt.push(k);
        kubectl.push(c);
    }

    let kt_times: Vec<Duration> = kt.iter().map(|r| r.first_response).collect();
    let kt_s = Summary::of(&kt_times).context("no kt runs")?;
    let kc_s = Summary::of(&kubectl).context("no kubectl runs")?;
    let close_s =
        Summary::of(&kt.iter().map(|r| r.close).collect::<Vec<_>>()).context("no kt runs")?;

    println!();
    println!(
        "connect: start to first HTTP response, {runs} runs each (namespace {})",
        bench.namespace()
    );
    println!("{:<52} {:>10} {:>10} {:>10}", "path", "min", "p50", "max");
    println!(
        "{:<52} {:>10} {:>10} {:>10}",
        "kt Session::connect + GET via HTTP proxy",
        ms(kt_s.min),
        ms(kt_s.p50),
        ms(kt_s.max)
    );
    println!(
        "{:<52} {:>10} {:>10} {:>10}",
        "kubectl port-forward pod :8080 + GET",
        ms(kc_s.min),
        ms(kc_s.p50),
        ms(kc_s.max)
    );
    println!(
        "{:<52} {:>10} {:>10} {:>10}",
        "(kt Session::close, not counted above)",
        ms(close_s.min),
        ms(close_s.p50),
        ms(close_s.max)
    );

    // When each connect step was reached, median over the runs.
    let mut steps: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for r in &kt {
        for (step, at) in &r.events {
            steps.entry(*step).or_default().push(at.as_secs_f64());
        }
    }
    println!("kt connect steps (median time since the connect call, over the runs that had it):");
    for (step, at) in &steps {
        println!(
            "  {:<28} {:>9.1} ms  ({} runs)",
            STEPS[*step],
            median(at) * 1e3,
            at.len()
        );
    }
    println!(
        "  {:<28} {:>9.1} ms",
        "first HTTP response (p50)",
        kt_s.p50.as_secs_f64() * 1e3
    );
    println!();
    println!(
        "connect: kt {} p50, kubectl port-forward {} p50, ratio {} (kt/kubectl, lower is better)",
        ms(kt_s.p50),
        ms(kc_s.p50),
        ratio(kt_s.p50.as_secs_f64(), kc_s.p50.as_secs_f64())
    );
    Ok(())
}

/// Connects, fetches `http://echo.<ns>/healthz` through the HTTP proxy, closes.
async fn kt_run(bench: &Bench, url_host: &str) -> Result<KtRun> {
    let events: Arc<Mutex<Vec<(usize, Duration)>>> = Arc::default();
    let started = Instant::now();
    let opts = {
        let events = Arc::clone(&events);
        bench.kt_options()?.on_event(move |e| {
            let step = match e {
                Event::Creating { .. } => 0,
                Event::Scheduled { .. } => 1,
                Event::Pulling { .. } => 2,
                Event::ImageReady { .. } => 3,
                Event::Ready { .. } => 4,
                Event::TunnelUp { .. } => 5,
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
