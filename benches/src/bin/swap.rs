//! Swap: small HTTP requests from a load-generator pod in the cluster, through a swap
//! to a server on this machine, beside the same requests straight to an original pod;
//! the time from the `swap()` call to the first request served locally; and whether
//! any request is refused while the Service switches to the swap shadow and back.
//!
//! `cargo run --release -p kt-benches --bin swap [-- --requests 2000 --mode selector]`
//!
//! The load generator is a Python program (standard library only) in a pod: one
//! kept-alive HTTP/1.1 connection, `GET /healthz` one after the other, timed with
//! `perf_counter_ns`. The original pod answers with the lab's echo app; the local end
//! is a minimal HTTP server in this process (both answer a few bytes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use kt_core::{PortMap, Session, SwapMode, SwapOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

const USAGE: &str = "usage: swap [--requests N (default 2000, 1..=20000)] \
                     [--mode selector|scale (default selector)]";

/// Sequential keep-alive requests; prints `p50_us p99_us req_per_s`.
const LOAD: &str = r#"
import http.client, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = http.client.HTTPConnection(host, port, timeout=10)
for _ in range(50):
    c.request("GET", "/healthz"); c.getresponse().read()
lat = []
start = time.perf_counter_ns()
for _ in range(n):
    t = time.perf_counter_ns()
    c.request("GET", "/healthz"); c.getresponse().read()
    lat.append(time.perf_counter_ns() - t)
total = time.perf_counter_ns() - start
lat.sort()
p = lambda q: lat[min(len(lat) - 1, max(0, int(q / 100 * len(lat) + 0.999) - 1))] // 1000
print(p(50), p(99), round(n / (total / 1e9)))
"#;

/// New connections to HOST:PORT every 20 ms for SECS seconds; prints `ok failed`.
const POLL: &str = r#"
import http.client, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ok = failed = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    try:
        c = http.client.HTTPConnection(host, port, timeout=5)
        c.request("GET", "/poll"); r = c.getresponse(); r.read(); c.close()
        ok += 1 if r.status == 200 else 0
        failed += 0 if r.status == 200 else 1
    except Exception:
        failed += 1
    time.sleep(0.02)
print(ok, failed)
"#;

/// Polls `http://HOST/whoami` with new connections every 10 ms; prints the wall-clock
/// time (seconds since the epoch) when an answer first contains MARK, then (unless
/// the third argument is `once`) when one first no longer does.
const WATCH: &str = r#"
import http.client, sys, time
host, mark = sys.argv[1], sys.argv[2]
phases = (True,) if sys.argv[3:] == ["once"] else (True, False)
def body():
    try:
        c = http.client.HTTPConnection(host, 80, timeout=2)
        c.request("GET", "/whoami"); b = c.getresponse().read().decode(); c.close()
        return b
    except Exception:
        return ""
for want in phases:
    deadline = time.time() + 120
    while (mark in body()) != want:
        if time.time() > deadline:
            sys.exit("timed out")
        time.sleep(0.01)
    print(time.time(), flush=True)
"#;

/// Seconds since the epoch, as the pod's clock shows it (the lab's pods share this
/// machine's clock).
fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The same switch by hand: `kubectl patch` of the Service's selector to a second,
/// ready Deployment and back (selector mode: seconds to the first answer from the
/// other side each way), or `kubectl scale` to 0 and back (scale mode: seconds until
/// the originals stop answering, and until they answer again).
async fn by_hand(bench: &kt_benches::Bench, client: &str, mode: SwapMode) -> Result<(f64, f64)> {
    if mode == SwapMode::Selector {
        // A second Deployment, ready, for the selector to point at.
        let manifest = kt_lab_tests::echo_manifest(1)
            .replace("name: echo\n", "name: hand\n")
            .replace("app: echo", "app: hand");
        bench.ns.apply(&manifest).await?;
        bench.ns.wait_deployment_available("hand", 1).await?;
    }
    let ns = bench.ns.name().to_owned();
    let mark = match mode {
        SwapMode::Scale => "echo-",
        _ => "hand-",
    };
    let mut watch = bench.lab.kubectl_command(&[
        "-n",
        &ns,
        "exec",
        client,
        "--",
        "python3.11",
        "-c",
        WATCH,
        "echo",
        mark,
    ]);
    watch.stdout(std::process::Stdio::piped());
    let mut child = watch.spawn()?;
    let stdout = child.stdout.take().context("watcher stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (over, back): (Vec<&str>, Vec<&str>) = match mode {
        SwapMode::Scale => (
            vec!["scale", "deployment/echo", "--replicas=0"],
            vec!["scale", "deployment/echo", "--replicas=1"],
        ),
        _ => (
            vec![
                "patch",
                "service/echo",
                "-p",
                r#"{"spec":{"selector":{"app":"hand"}}}"#,
            ],
            vec![
                "patch",
                "service/echo",
                "-p",
                r#"{"spec":{"selector":{"app":"echo"}}}"#,
            ],
        ),
    };
    // Selector: first "hand-" answer after the patch, first original after the patch
    // back. Scale: the watcher looks for the originals ("echo-"): it sees them at once,
    // then their absence after scaling to 0; the scale back is timed separately.
    let t0 = now_epoch();
    bench.ns.kubectl(&over).await?;
    let seen_over: f64 = lines.next_line().await?.context("watcher")?.parse()?;
    let seen_gone: f64 = match mode {
        SwapMode::Scale => {
            let gone: f64 = lines.next_line().await?.context("watcher")?.parse()?;
            gone
        }
        _ => 0.0,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t1 = now_epoch();
    bench.ns.kubectl(&back).await?;
    let result = match mode {
        SwapMode::Scale => {
            // Watch for the originals again.
            let out = python(bench, client, WATCH, &["echo", mark, "once"]).await?;
            let first: f64 = out.lines().next().context("watcher")?.parse()?;
            (seen_gone - t0, first - t1)
        }
        _ => {
            let back_seen: f64 = lines.next_line().await?.context("watcher")?.parse()?;
            (seen_over - t0, back_seen - t1)
        }
    };
    let _ = child.kill().await;
    Ok(result)
}

/// A minimal HTTP/1.1 server (keep-alive) answering `ok`; counts requests and notes
/// when the first one came.
async fn local_server(first: Arc<Mutex<Option<Instant>>>, count: Arc<AtomicU64>) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let first = Arc::clone(&first);
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        first.lock().await.get_or_insert_with(Instant::now);
                        count.fetch_add(1, Ordering::Relaxed);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    Ok(port)
}

async fn python(
    bench: &kt_benches::Bench,
    pod: &str,
    program: &str,
    args: &[&str],
) -> Result<String> {
    let mut cmd = vec!["python3.11", "-c", program];
    cmd.extend_from_slice(args);
    let out = bench.ns.exec_output(pod, &cmd).await?;
    ensure!(
        out.status.success(),
        "python in {pod}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() -> std::process::ExitCode {
    kt_benches::main_with("swap", Duration::from_secs(20 * 60), run)
}

async fn run() -> Result<()> {
    let args = kt_benches::parse_args(USAGE)?;
    kt_benches::check_args(&args, &["requests", "mode"], USAGE)?;
    let requests: usize = kt_benches::arg(&args, "requests", 2000)?;
    let mode: SwapMode = kt_benches::arg::<String>(&args, "mode", "selector".to_owned())?
        .parse()
        .context("--mode")?;
    ensure!(
        (1..=20_000).contains(&requests),
        "--requests must be 1..=20000"
    );
    let n = requests.to_string();

    let bench = kt_benches::Bench::start("swap").await?;
    let client = "load";
    bench
        .ns
        .kubectl(&[
            "run",
            client,
            "--image=kt.invalid/shell",
            "--restart=Never",
            "--",
            "sleep",
            "3600",
        ])
        .await?;
    bench.ns.wait_pod_ready(client).await?;

    eprintln!("bench: {requests} requests straight to the original pod");
    let direct = python(&bench, client, LOAD, &[&bench.echo_ip, "8080", &n]).await?;

    let first = Arc::new(Mutex::new(None));
    let count = Arc::new(AtomicU64::new(0));
    let port = local_server(Arc::clone(&first), Arc::clone(&count)).await?;
    let session = Session::connect(bench.kt_options()?).await?;

    // Poll the Service with new connections while it switches over and back.
    let poll_for = "40";
    let ns = bench.ns.name().to_owned();
    let mut poll_cmd = bench.lab.kubectl_command(&[
        "-n",
        &ns,
        "exec",
        client,
        "--",
        "python3.11",
        "-c",
        POLL,
        "echo",
        "80",
        poll_for,
    ]);
    let poller = tokio::spawn(async move {
        let out = poll_cmd.output().await?;
        anyhow::Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let called = Instant::now();
    let swap = session
        .swap_with(
            "deploy/echo",
            &PortMap::parse_list([format!("{port}:80").as_str()])?,
            SwapOptions::new().mode(mode),
        )
        .await?;
    let returned = called.elapsed();
    let first_local = loop {
        if let Some(t) = *first.lock().await {
            break t.saturating_duration_since(called);
        }
        ensure!(
            called.elapsed() < Duration::from_secs(60),
            "no request reached the laptop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!("bench: {requests} requests through the swap");
    let swapped = python(&bench, client, LOAD, &["echo", "80", &n]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let closing = Instant::now();
    swap.close().await?;
    let closed = closing.elapsed();
    let polled = poller.await??;
    session.close().await?;
    eprintln!("bench: the same switch by hand with kubectl");
    let (hand_over, hand_back) = by_hand(&bench, client, mode).await?;

    let field = |s: &str, i: usize| -> Result<f64> {
        s.split_whitespace()
            .nth(i)
            .context("load output")?
            .parse::<f64>()
            .context("load output")
    };
    println!(
        "swap ({mode} mode), {requests} sequential GET /healthz over one kept-alive connection from a pod"
    );
    println!("| path | p50 | p99 | requests/s |");
    println!("|---|---|---|---|");
    for (name, out) in [
        ("straight to the original pod", &direct),
        ("through the swap", &swapped),
    ] {
        println!(
            "| {name} | {} us | {} us | {} |",
            field(out, 0)?,
            field(out, 1)?,
            field(out, 2)?
        );
    }
    println!(
        "swap() returned after {returned:?}; first request served locally {first_local:?} after the call"
    );
    println!("close() (restore, originals serving, shadow removed) took {closed:?}");
    let hand = match mode {
        SwapMode::Scale => {
            "kubectl scale deployment/echo --replicas=0 (until the originals stop answering), then =1 (until they answer)"
        }
        _ => "kubectl patch of the Service's selector to a ready Deployment, then back",
    };
    println!(
        "by hand ({hand}): over visible after {:.3} s, back after {:.3} s",
        hand_over, hand_back
    );
    println!(
        "switch over: kt {:.3} s (call to first local answer), by hand {:.3} s; back: kt close() {:.3} s, by hand {:.3} s",
        first_local.as_secs_f64(),
        hand_over,
        closed.as_secs_f64(),
        hand_back
    );
    let (ok, failed) = (field(&polled, 0)?, field(&polled, 1)?);
    println!(
        "new connections to the Service during the switch over and back: {ok} answered, {failed} refused or failed"
    );
    println!(
        "latency p50: swap {} us, direct {} us, ratio {}",
        field(&swapped, 0)?,
        field(&direct, 0)?,
        kt_benches::stats::ratio(field(&swapped, 0)?, field(&direct, 0)?)
    );
    println!(
        "requests/s: swap {}, direct {}, ratio {}",
        field(&swapped, 2)?,
        field(&direct, 2)?,
        kt_benches::stats::ratio(field(&swapped, 2)?, field(&direct, 2)?)
    );
    Ok(())
}
