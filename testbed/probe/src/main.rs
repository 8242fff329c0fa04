//! `kt-probe`: a real multi-protocol test peer for kt's lab tests and benchmarks.
//!
//! `kt-probe serve --listen 0.0.0.0:8080 --name web-1` answers on one port:
//!
//! - HTTP/1.1 (kept alive) and HTTP/2 with prior knowledge (h2c): any path gives 200 and
//!   JSON `{"name","method","path","query","version","authority","peer","body_bytes",
//!   "headers":{...}}`, every request header as received (repeated ones joined with
//!   `, `; HTTP/2's `:authority` included). `/echo` streams the request body back;
//!   `/trailers` ends its body with the trailer `x-probe-name: NAME` (HTTP/1.1 only when
//!   the request says `TE: trailers`). Every response has the header `x-probe-name`.
//!   HTTP/2 is also reached over the upgrade path (`Upgrade: h2c`, as `curl --http2`
//!   asks): `101 Switching Protocols`, then the upgrade request is answered as HTTP/2
//!   stream 1 and the connection goes on in HTTP/2. (A request with a body, or with
//!   headers too large for one frame, is answered in HTTP/1.1 instead.)
//! - WebSocket on `/ws`: every message comes back prefixed `NAME:`.
//! - gRPC (`content-type: application/grpc`): `probe.Probe` of `probe.proto`, unary
//!   `Who` and server-streaming `Count`.
//!
//! The clients (`http`, `ws`, `grpc`, `load`) print one JSON line per response and exit
//! non-zero, with a message on stderr, on any error (a non-2xx status included).
//!
//! ```sh
//! kt-probe serve --listen 127.0.0.1:8080 --name a &
//! kt-probe http --url http://127.0.0.1:8080/x --requests 4 --alternate-header 'version: v1,'
//! kt-probe grpc --addr 127.0.0.1:8080 unary hello
//! ```

mod client;
mod grpc;
mod h2c;
mod serve;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::{Parser, Subcommand};

/// A real multi-protocol test peer: HTTP/1.1, h2c, WebSocket and gRPC on one port, each
/// reply naming the server; and the matching clients.
#[derive(Parser)]
#[command(name = "kt-probe", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP/1.1, h2c, WebSocket (/ws) and gRPC (probe.Probe) on one port.
    Serve {
        /// host:port to listen on (port 0: any free port; the first stdout line says which).
        #[arg(long)]
        listen: String,
        /// The name every reply carries.
        #[arg(long)]
        name: String,
    },
    /// GET a URL (or POST a checked body with --post-bytes), N times on one kept-alive
    /// connection.
    Http {
        /// The URL, http://host:port/path (port 80 when left out).
        #[arg(long)]
        url: String,
        /// HTTP/2 without upgrade (h2c prior knowledge) instead of HTTP/1.1.
        #[arg(long)]
        h2c_prior_knowledge: bool,
        /// A request header, 'name: value' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// How many requests, one after the other on one connection.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        requests: u32,
        /// 'name: v1,v2,...': request i carries value i mod count (an empty value: no
        /// such header), printed as `sent` beside the name that answered.
        #[arg(long)]
        alternate_header: Option<String>,
        /// POST this many bytes instead of GET, streamed, and check that the response
        /// body (kt-probe's `/echo`) is the same bytes.
        #[arg(long)]
        post_bytes: Option<u64>,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Send one WebSocket message and print the reply.
    Ws {
        /// The URL, ws://host:port/path (port 80 when left out).
        #[arg(long)]
        url: String,
        /// A handshake header, 'name: value' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The text to send.
        #[arg(long)]
        message: String,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Call probe.Probe over gRPC (h2c).
    Grpc {
        /// host:port
        #[arg(long)]
        addr: String,
        /// Metadata, 'name: value' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        #[command(subcommand)]
        call: GrpcCommand,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Sequential requests on one kept-alive connection (HTTP/1.1 GET, or gRPC `Who`);
    /// prints {"requests","p50_us","p99_us","rps","names","peers"}: who answered, and
    /// from which client IP the servers saw the requests come, with counts.
    Load {
        /// The URL, http://host:port/path (port 80 when left out).
        #[arg(long)]
        url: String,
        /// A request header or gRPC metadata, 'name: value' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Timed requests.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        requests: u32,
        /// Untimed requests first.
        #[arg(long, default_value_t = 50)]
        warmup: u32,
        /// gRPC unary `Who` calls instead of HTTP/1.1 GETs.
        #[arg(long)]
        grpc: bool,
        #[command(flatten)]
        timeout: Timeout,
    },
}

#[derive(Subcommand)]
enum GrpcCommand {
    /// Unary `Who(text)`.
    Unary {
        /// The text to send.
        text: String,
    },
    /// Server-streaming `Count(n)`.
    Stream {
        /// How many replies.
        n: u32,
    },
}

#[derive(clap::Args)]
struct Timeout {
    /// Give up (exit 1) after this many seconds.
    #[arg(long = "timeout", default_value_t = 120)]
    secs: u64,
}

/// Aborts a spawned task when dropped, so no task outlives its owner.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn headers(raw: &[String]) -> Result<Vec<(String, String)>> {
    raw.iter().map(|h| client::parse_header(h)).collect()
}

async fn bounded(t: Timeout, what: &str, f: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(t.secs), f)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {} s (--timeout)", t.secs))?
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { listen, name } => serve::run(&listen, name).await,
        Command::Http {
            url,
            h2c_prior_knowledge,
            headers: h,
            requests,
            alternate_header,
            post_bytes,
            timeout,
        } => {
            let h = headers(&h)?;
            let alt = alternate_header
                .as_deref()
                .map(client::parse_alternate)
                .transpose()?;
            bounded(
                timeout,
                &url,
                client::http(&url, h2c_prior_knowledge, &h, requests, alt, post_bytes),
            )
            .await
        }
        Command::Ws {
            url,
            headers: h,
            message,
            timeout,
        } => {
            let h = headers(&h)?;
            bounded(timeout, &url, client::ws(&url, &h, &message)).await
        }
        Command::Grpc {
            addr,
            headers: h,
            call,
            timeout,
        } => {
            let h = headers(&h)?;
            let call = match call {
                GrpcCommand::Unary { text } => client::GrpcCall::Unary(text),
                GrpcCommand::Stream { n } => client::GrpcCall::Stream(n),
            };
            bounded(timeout, &addr, client::grpc(&addr, h, call)).await
        }
        Command::Load {
            url,
            headers: h,
            requests,
            warmup,
            grpc,
            timeout,
        } => {
            let h = headers(&h)?;
            bounded(timeout, &url, client::load(&url, h, requests, warmup, grpc)).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kt-probe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kt-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
