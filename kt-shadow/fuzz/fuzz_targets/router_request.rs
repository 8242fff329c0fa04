//! Arbitrary client bytes through the router's connection handler, over in-memory
//! connections, with in-memory backends: no panic, and no hang (each input runs on a
//! runtime with paused time, so the router's own timeouts pass at once; a connection
//! that is still not done after an hour of that time is a hang).
//!
//! Input: byte 0 chooses how the backends behave, bytes 1-2 (big-endian) how many of
//! the following bytes the client sends; the rest is what a raw backend answers.
#![no_main]

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kt_shadow::router::proxy::{Connecting, Connector, Proxy, Route, Stream, Table, Timeouts};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How backends answer.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// A real HTTP/1.1 + h2c server (hyper): answers with its address, echoes `/echo`.
    Hyper,
    /// Writes the input's backend bytes, then closes.
    Raw,
    /// Accepts and closes at once.
    Close,
    /// Refuses the connection.
    Refuse,
}

struct Backends {
    mode: Mode,
    raw: Bytes,
}

impl Connector for Backends {
    fn connect(&self, addr: SocketAddr) -> Connecting<'_> {
        let mode = self.mode;
        let raw = self.raw.clone();
        Box::pin(async move {
            if let Mode::Refuse = mode {
                return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
            }
            let (ours, theirs) = tokio::io::duplex(16 * 1024);
            tokio::spawn(backend(mode, raw, addr, theirs));
            Ok(Box::new(ours) as Box<dyn Stream>)
        })
    }
}

async fn backend(mode: Mode, raw: Bytes, addr: SocketAddr, mut io: tokio::io::DuplexStream) {
    match mode {
        Mode::Hyper => {
            let service = service_fn(move |req: Request<Incoming>| async move {
                let body = if req.uri().path() == "/echo" {
                    Either::Left(req.into_body())
                } else {
                    Either::Right(Full::new(Bytes::from(addr.to_string())))
                };
                Ok::<_, Infallible>(Response::new(body))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .await;
        }
        Mode::Raw => {
            let _ = io.write_all(&raw).await;
            let _ = io.shutdown().await;
        }
        Mode::Close | Mode::Refuse => {}
    }
}

fn route(name: &str, rule: &str, last: u8) -> Route {
    Route {
        name: name.to_owned(),
        rule: rule.parse().expect("valid rule"),
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, hi, lo, rest @ ..] = data else {
        return;
    };
    let mode = match mode % 4 {
        0 => Mode::Hyper,
        1 => Mode::Raw,
        2 => Mode::Close,
        _ => Mode::Refuse,
    };
    let split = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
    let (client, raw) = rest.split_at(split);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let table = Table {
            routes: vec![
                route("dev-a", "version=a", 4),
                route("dev-b", "x-dev~^b.*$ && /api", 5),
                route("dev-c", "/c || c=1", 6),
            ],
        };
        let (_tx, rx) = watch::channel(Arc::new(table));
        let backends = Backends {
            mode,
            raw: Bytes::copy_from_slice(raw),
        };
        let proxy = Proxy::with_connector(
            SocketAddr::from(([10, 0, 0, 3], 80)),
            8080,
            rx,
            Arc::new(backends),
            Timeouts::default(),
        );
        let (mut ours, theirs) = tokio::io::duplex(16 * 1024);
        let cancel = CancellationToken::new();
        let peer = SocketAddr::from(([10, 1, 2, 3], 40000));
        let served = tokio::spawn(proxy.serve_connection(theirs, peer, cancel.clone()));
        let client = async {
            let _ = ours.write_all(client).await;
            let _ = ours.shutdown().await;
            let mut sink = Vec::new();
            let _ = ours.read_to_end(&mut sink).await;
        };
        let done = tokio::time::timeout(Duration::from_secs(3600), async {
            client.await;
            served.await
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(join)) => std::panic::resume_unwind(join.into_panic()),
            Err(_) => panic!("the router did not finish a connection within an hour"),
        }
        cancel.cancel();
    });
});
