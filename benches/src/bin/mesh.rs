//! Mesh: what the mesh router costs, from a load-generator pod in the cluster. The same
//! sequential requests (HTTP/1.1 `GET`, and gRPC unary `Who`, each over one kept-alive
//! connection) go
//!
//! - straight to an original pod (its IP, port 8080),
//! - to the Service while a developer meshes it, without the developer's header
//!   (unmatched: through the router to the original pod; the cost everyone on the team
//!   pays),
//! - to the Service with the developer's header (matched: through the router and kt's
//!   tunnel to a kt-probe on this machine).
//!
//! `cargo run --release -p kt-benches --bin mesh [-- --requests 2000 --warmup 100]`
//!
//! Every end is kt-probe (testbed/probe): the original pod runs `kt-probe serve`, the
//! load generator is `kt-probe load` in the client pod, the developer's local process
//! is `kt-probe serve` on 127.0.0.1. Replies name who answered, and each run checks that
//! every request was answered by the side it measures.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kt_core::{PortMap, Session};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

const USAGE: &str =
    "usage: mesh [--requests N (default 2000, 1..=20000)] [--warmup N (default 100, 0..=10000)]";

/// One `kt-probe load` run's figures.
struct Figures {
    p50_us: f64,
    p99_us: f64,
    rps: f64,
}

/// Runs `kt-probe load` in the client pod.
struct Loader<'a> {
    bench: &'a kt_benches::Bench,
    pod: String,
    bin: PathBuf,
    requests: u32,
    warmup: u32,
}

impl Loader<'_> {
    /// `requests` timed requests to `url` (gRPC `Who` calls with `grpc`), with `header`;
    /// fails unless every one was answered by `answerer`, and, with `via`, came to it
    /// from that IP (the client pod's when direct, the router's when through it).
    async fn run(
        &self,
        url: &str,
        header: Option<&str>,
        grpc: bool,
        answerer: &str,
        via: Option<&str>,
    ) -> Result<Figures> {
        let n = self.requests.to_string();
        let w = self.warmup.to_string();
        let mut args = vec!["load", "--url", url, "--requests", &n, "--warmup", &w];
        if let Some(h) = header {
            args.extend(["-H", h]);
        }
        if grpc {
            args.push("--grpc");
        }
        let lines = self.bench.ns.probe(&self.pod, &self.bin, &args).await?;
        let v = lines.first().context("kt-probe load printed nothing")?;
        let names = v["names"].as_object().context("no `names` in the report")?;
        for (name, count) in names {
            ensure!(
                name == answerer,
                "{url} (header {header:?}): {count} requests answered by `{name}`, not `{answerer}`"
            );
        }
        if let Some(via) = via {
            let peers = v["peers"].as_object().context("no `peers` in the report")?;
            for (ip, count) in peers {
                ensure!(
                    ip == via,
                    "{url} (header {header:?}): {count} requests reached `{answerer}` from {ip}, not {via}"
                );
            }
        }
        let f = |k: &str| v[k].as_f64().with_context(|| format!("no `{k}` in {v}"));
        Ok(Figures {
            p50_us: f("p50_us")?,
            p99_us: f("p99_us")?,
            rps: f("rps")?,
        })
    }
}

/// Starts `kt-probe serve` on 127.0.0.1 as `name`; the child (killed on drop) and its
/// port.
async fn local_probe(bin: &PathBuf, name: &str) -> Result<(tokio::process::Child, u16)> {
    let mut child = tokio::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--name", name])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the local kt-probe")?;
    let stdout = child.stdout.take().context("the local kt-probe's stdout")?;
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .context("the local kt-probe did not start in 10 s")??
    .context("the local kt-probe printed nothing")?;
    let listening: Value = serde_json::from_str(&first)?;
    let port = listening["listening"]
        .as_str()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("no port in the local kt-probe's first line: {first}"))?;
    Ok((child, port))
}

/// Pod `name`'s IP.
async fn pod_ip(bench: &kt_benches::Bench, name: &str) -> Result<String> {
    let ip = bench
        .ns
        .kubectl(&["get", "pod", name, "-o", "jsonpath={.status.podIP}"])
        .await?;
    ensure!(!ip.trim().is_empty(), "pod `{name}` has no IP");
    Ok(ip.trim().to_owned())
}

fn main() -> std::process::ExitCode {
    kt_benches::main_with("mesh", Duration::from_secs(20 * 60), run)
}

async fn run() -> Result<()> {
    let args = kt_benches::parse_args(USAGE)?;
    kt_benches::check_args(&args, &["requests", "warmup"], USAGE)?;
    let requests: u32 = kt_benches::arg(&args, "requests", 2000)?;
    let warmup: u32 = kt_benches::arg(&args, "warmup", 100)?;
    ensure!(
        (1..=20_000).contains(&requests),
        "--requests must be 1..=20000"
    );
    ensure!(warmup <= 10_000, "--warmup must be 0..=10000");

    let bench = kt_benches::Bench::start("mesh").await?;
    eprintln!("bench: building kt-probe and deploying it as Deployment and Service `web`");
    let web = bench.ns.deploy_probe("web", 1, true).await?;
    let original = web.pods.first().cloned().context("no kt-probe pod")?;
    let original_ip = web.pod_ips.first().cloned().context("no kt-probe pod IP")?;
    let loader = Loader {
        bench: &bench,
        pod: bench.ns.client_pod().await?,
        bin: web.bin.clone(),
        requests,
        warmup,
    };
    let (_local, local_port) = local_probe(&web.bin, "laptop").await?;

    let direct_url = format!("http://{original_ip}:8080/");
    eprintln!("bench: {requests} requests straight to the original pod {original}");
    let client_ip = pod_ip(&bench, &loader.pod).await?;
    let direct = Some(client_ip.as_str());
    let direct_h1 = loader
        .run(&direct_url, None, false, &original, direct)
        .await?;
    let direct_grpc = loader
        .run(&direct_url, None, true, &original, direct)
        .await?;

    let session = Session::connect(bench.kt_options()?).await?;
    let ports = PortMap::parse_list([format!("{local_port}:80").as_str()])?;
    let mesh = session.mesh("svc/web", None, &ports).await?;
    let (hname, hvalue) = mesh.header().context("the default rule has a header")?;
    let header = format!("{hname}: {hvalue}");
    eprintln!(
        "bench: svc/web meshed (router {}), matched requests carry `{header}`",
        mesh.router()
    );

    // mesh() returns once the router routes this developer's requests; kube-proxy may
    // still send a new connection to the Service straight to the original pod for a
    // moment. Measure only once new connections go through the router.
    let router_ip = pod_ip(&bench, mesh.router()).await?;
    let via_router = Some(router_ip.as_str());
    let switched = std::time::Instant::now();
    loop {
        let l = bench
            .ns
            .probe(&loader.pod, &loader.bin, &["http", "--url", "http://web/"])
            .await?;
        let peer = l
            .first()
            .and_then(|v| v["body"]["peer"].as_str())
            .unwrap_or_default()
            .to_owned();
        if peer.rsplit_once(':').is_some_and(|(ip, _)| ip == router_ip) {
            break;
        }
        ensure!(
            switched.elapsed() < Duration::from_secs(60),
            "after 60 s, new connections to Service `web` still reach the original pod from \
             {peer}, not through the router ({router_ip})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "bench: new connections to the Service go through the router {:.1} s after mesh() returned",
        switched.elapsed().as_secs_f64()
    );

    eprintln!("bench: {requests} requests to the Service, unmatched");
    let un_h1 = loader
        .run("http://web/", None, false, &original, via_router)
        .await?;
    let un_grpc = loader
        .run("http://web:9090/", None, true, &original, via_router)
        .await?;
    eprintln!("bench: {requests} requests to the Service, matched (to this machine)");
    let m_h1 = loader
        .run("http://web/", Some(&header), false, "laptop", None)
        .await?;
    let m_grpc = loader
        .run("http://web:9090/", Some(&header), true, "laptop", None)
        .await?;
    mesh.close().await?;
    session.close().await?;

    println!(
        "mesh: {requests} sequential requests over one kept-alive connection from a pod \
         ({warmup} untimed first), kt-probe at both ends"
    );
    println!("| protocol | path | p50 | p99 | requests/s |");
    println!("|---|---|---|---|---|");
    let rows = [
        ("HTTP/1.1 GET", "straight to the original pod", &direct_h1),
        ("HTTP/1.1 GET", "Service via the router, unmatched", &un_h1),
        (
            "HTTP/1.1 GET",
            "Service via the router, matched (this machine)",
            &m_h1,
        ),
        ("gRPC unary", "straight to the original pod", &direct_grpc),
        ("gRPC unary", "Service via the router, unmatched", &un_grpc),
        (
            "gRPC unary",
            "Service via the router, matched (this machine)",
            &m_grpc,
        ),
    ];
    for (proto, path, f) in rows {
        println!(
            "| {proto} | {path} | {} us | {} us | {} |",
            f.p50_us, f.p99_us, f.rps
        );
    }
    for (proto, direct, un, m) in [
        ("HTTP/1.1", &direct_h1, &un_h1, &m_h1),
        ("gRPC", &direct_grpc, &un_grpc, &m_grpc),
    ] {
        println!(
            "{proto} unmatched overhead: p50 {:+} us (aim <= 300), p99 {:+} us (aim <= 1000)",
            un.p50_us - direct.p50_us,
            un.p99_us - direct.p99_us
        );
        println!(
            "{proto} latency p50: unmatched {} us, direct {} us, ratio {}; matched {} us, ratio {}",
            un.p50_us,
            direct.p50_us,
            kt_benches::stats::ratio(un.p50_us, direct.p50_us),
            m.p50_us,
            kt_benches::stats::ratio(m.p50_us, direct.p50_us)
        );
        println!(
            "{proto} requests/s: unmatched {}, direct {}, ratio {}; matched {}, ratio {}",
            un.rps,
            direct.rps,
            kt_benches::stats::ratio(un.rps, direct.rps),
            m.rps,
            kt_benches::stats::ratio(m.rps, direct.rps)
        );
    }
    Ok(())
}
