//! The mesh router's proxy (`kt_shadow::router::proxy`) with real clients and real
//! backends on loopback: origin on 127.0.0.3:P, developer A on 127.0.0.4:P, developer B
//! on 127.0.0.5:P, the router on 127.0.0.1. Every backend answers with its own name.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kt_shadow::router::proxy::{Proxy, Route, Table, TcpConnector, Timeouts};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Status;
use tonic_prost::ProstCodec;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Boxed = UnsyncBoxBody<Bytes, BoxError>;

const ORIGIN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const DEV_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const DEV_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// Nothing listens here.
const GONE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);

/// Turns a hang into a failure (not a performance bound: every step here takes far
/// less).
const HANG: Duration = Duration::from_secs(120);

// ---- gRPC messages (hand-written prost, no protoc) --------------------------------

#[derive(Clone, PartialEq, prost::Message)]
struct WhoRequest {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WhoReply {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    text: String,
    /// The `version` metadata the backend received.
    #[prost(string, tag = "3")]
    version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountRequest {
    #[prost(uint32, tag = "1")]
    n: u32,
    /// End the stream with an error status (in the trailers) instead of OK.
    #[prost(bool, tag = "2")]
    fail: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountReply {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint32, tag = "2")]
    i: u32,
}

// ---- backends ----------------------------------------------------------------------

fn boxed<B>(body: B) -> Boxed
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

fn text(s: impl Into<String>) -> Boxed {
    boxed(Full::new(Bytes::from(s.into())).map_err(|e: Infallible| match e {}))
}

/// One backend's answer: its name, or (by path) the request's headers, an echo of the
/// body, a body with trailers, a WebSocket echo, or gRPC.
async fn backend_answer(name: &'static str, mut req: Request<Incoming>) -> Response<Boxed> {
    let grpc = (req.headers().get("content-type"))
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return grpc_answer(name, req).await;
    }
    let mut resp = match req.uri().path() {
        "/headers" => {
            let mut out = format!("uri: {}\nversion: {:?}\n", req.uri(), req.version());
            for (k, v) in req.headers() {
                out += &format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes()));
            }
            Response::new(text(out))
        }
        "/echo" => Response::new(boxed(req.into_body())),
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-backend", HeaderValue::from_static(name));
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(name.as_bytes()))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut resp = Response::new(boxed(StreamBody::new(futures::stream::iter(frames))));
            resp.headers_mut()
                .insert("trailer", HeaderValue::from_static("x-backend"));
            resp
        }
        "/ws" => {
            let Some(key) = req.headers().get("sec-websocket-key") else {
                return Response::builder()
                    .status(400)
                    .body(text("no key"))
                    .unwrap();
            };
            let accept = derive_accept_key(key.as_bytes());
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("{name}:{}", t.as_str())),
                        Message::Binary(b) => Message::Binary(b),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
            return Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .body(text(""))
                .unwrap();
        }
        _ => Response::new(text(name)),
    };
    resp.headers_mut()
        .insert("x-backend", HeaderValue::from_static(name));
    resp
}

async fn grpc_answer(name: &'static str, req: Request<Incoming>) -> Response<Boxed> {
    let resp = match req.uri().path() {
        "/probe.Probe/Who" => {
            let who = tower::service_fn(move |req: tonic::Request<WhoRequest>| async move {
                let version = (req.metadata().get("version"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                Ok::<_, Status>(tonic::Response::new(WhoReply {
                    name: name.to_owned(),
                    text: req.into_inner().text,
                    version,
                }))
            });
            tonic::server::Grpc::new(ProstCodec::<WhoReply, WhoRequest>::default())
                .unary(who, req)
                .await
        }
        "/probe.Probe/Count" => {
            let count = tower::service_fn(move |req: tonic::Request<CountRequest>| async move {
                let CountRequest { n, fail } = req.into_inner();
                let mut items: Vec<Result<CountReply, Status>> = (0..n)
                    .map(|i| {
                        Ok(CountReply {
                            name: name.to_owned(),
                            i,
                        })
                    })
                    .collect();
                if fail {
                    items.push(Err(Status::aborted(format!("{name}: failed as asked"))));
                }
                Ok::<_, Status>(tonic::Response::new(futures::stream::iter(items)))
            });
            tonic::server::Grpc::new(ProstCodec::<CountReply, CountRequest>::default())
                .server_streaming(count, req)
                .await
        }
        _ => return Response::builder().status(404).body(text("")).unwrap(),
    };
    resp.map(boxed)
}

/// Serves HTTP/1.1 (with upgrades) and h2c on `listener`; counts accepted connections.
fn spawn_backend(listener: TcpListener, name: &'static str, accepted: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(move |req| async move {
                    Ok::<_, Infallible>(backend_answer(name, req).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// Three listeners on one port P: origin, A and B.
async fn bind_trio() -> (u16, [TcpListener; 3]) {
    loop {
        let origin = TcpListener::bind((ORIGIN, 0)).await.unwrap();
        let port = origin.local_addr().unwrap().port();
        let (Ok(a), Ok(b)) = (
            TcpListener::bind((DEV_A, port)).await,
            TcpListener::bind((DEV_B, port)).await,
        ) else {
            continue;
        };
        return (port, [origin, a, b]);
    }
}

fn route(name: &str, rule: &str, ip: Ipv4Addr) -> Route {
    Route {
        name: name.to_owned(),
        rule: rule.parse().unwrap(),
        addr: IpAddr::V4(ip),
    }
}

/// A and B by their version mark.
fn two_developers() -> Table {
    Table {
        routes: vec![
            route("dev-a", "version=a", DEV_A),
            route("dev-b", "version=b", DEV_B),
        ],
    }
}

/// Backends and a router in front of them.
struct Mesh {
    router: SocketAddr,
    port: u16,
    proxy: Arc<Proxy>,
    table: watch::Sender<Arc<Table>>,
    /// Connections each backend accepted.
    accepted: HashMap<&'static str, Arc<AtomicUsize>>,
    _stop: DropGuard,
}

async fn mesh() -> Mesh {
    let (port, [origin, a, b]) = bind_trio().await;
    let mut accepted = HashMap::new();
    for (listener, name) in [(origin, "origin"), (a, "a"), (b, "b")] {
        let count = Arc::new(AtomicUsize::new(0));
        accepted.insert(name, Arc::clone(&count));
        spawn_backend(listener, name, count);
    }
    let (table, rx) = watch::channel(Arc::new(two_developers()));
    let proxy = Proxy::new(SocketAddr::from((ORIGIN, port)), port, rx);
    let (router, stop) = serve(&proxy).await;
    Mesh {
        router,
        port,
        proxy,
        table,
        accepted,
        _stop: stop,
    }
}

async fn serve(proxy: &Arc<Proxy>) -> (SocketAddr, DropGuard) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let router = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(Arc::clone(proxy).serve(listener, cancel.clone()));
    (router, cancel.drop_guard())
}

// ---- clients -----------------------------------------------------------------------

async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Boxed> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Boxed> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Boxed> {
    let mut builder = Request::get(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(boxed(
            Empty::<Bytes>::new().map_err(|e: Infallible| match e {}),
        ))
        .unwrap()
}

async fn body_text(resp: Response<Incoming>) -> (StatusCode, String) {
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn curl(args: &[&str]) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn version_header(v: Option<&str>) -> Vec<(&'static str, &str)> {
    v.map(|v| vec![("version", v)]).unwrap_or_default()
}

// ---- HTTP/1.1 ----------------------------------------------------------------------

#[tokio::test]
async fn http1_keep_alive_routes_every_request_on_its_own() {
    let m = mesh().await;
    let mut client = h1_client(m.router).await;
    let marks = [Some("a"), Some("b"), None, Some("b"), Some("a"), None];
    for mark in marks {
        let resp = client
            .send_request(get("/", &version_header(mark)))
            .await
            .unwrap();
        let (status, body) = body_text(resp).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            mark.unwrap_or("origin"),
            "request with version {mark:?}"
        );
    }
    // One client connection carried all six (the same sender, still open).
    assert!(!client.is_closed());
    assert_eq!(m.proxy.counts(), (4, 2));
}

#[tokio::test]
async fn curl_reuses_one_connection_and_each_request_is_routed() {
    let m = mesh().await;
    let url = format!("http://{}/", m.router);
    let w = " %{num_connects} %{http_version}\n";
    let out = curl(&[
        &url,
        "-H",
        "version: b",
        "-w",
        w,
        "--next",
        &url,
        "-H",
        "version: a",
        "-w",
        w,
        "--next",
        &url,
        "-w",
        w,
    ])
    .await;
    // One connection made (the first transfer), reused by the next two.
    assert_eq!(out, "b 1 1.1\na 0 1.1\norigin 0 1.1\n");
}

#[tokio::test]
async fn upstream_http1_connections_are_pooled() {
    let m = mesh().await;
    for _ in 0..10 {
        let mut client = h1_client(m.router).await;
        let resp = client.send_request(get("/", &[])).await.unwrap();
        assert_eq!(body_text(resp).await.1, "origin");
    }
    // Ten client connections, one after the other; the router reused its upstream
    // connection (a new one only if the previous exchange had not been wound up yet).
    let upstream = m.accepted["origin"].load(Ordering::SeqCst);
    assert!(
        upstream < 5,
        "{upstream} upstream connections for 10 requests"
    );
}

/// A backend that reports each connection's end.
async fn closing_backend() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind((ORIGIN, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(|req| async move {
                    Ok::<_, Infallible>(backend_answer("origin", req).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                let _ = tx.send(());
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn idle_upstream_connections_are_closed() {
    let (origin, mut closed) = closing_backend().await;
    let (_, rx) = watch::channel(Arc::new(Table::default()));
    let timeouts = Timeouts {
        idle: Duration::from_millis(100),
        ..Timeouts::default()
    };
    let proxy = Proxy::with_connector(origin, origin.port(), rx, Arc::new(TcpConnector), timeouts);
    let (router, _stop) = serve(&proxy).await;
    // The clients stay connected; only the router's upstream connections go idle.
    let mut h1 = h1_client(router).await;
    let resp = h1.send_request(get("/", &[])).await.unwrap();
    assert_eq!(body_text(resp).await.1, "origin");
    let mut h2 = h2_client(router).await;
    let resp = h2
        .send_request(get(&format!("http://{router}/"), &[]))
        .await
        .unwrap();
    assert_eq!(body_text(resp).await.1, "origin");
    for _ in 0..2 {
        tokio::time::timeout(HANG, closed.recv())
            .await
            .expect("the idle upstream connection was closed");
    }
    assert!(!h1.is_closed() && !h2.is_closed());
    // And a new one is made when needed.
    let resp = h1.send_request(get("/", &[])).await.unwrap();
    assert_eq!(body_text(resp).await.1, "origin");
}

// ---- HTTP/2 ------------------------------------------------------------------------

#[tokio::test]
async fn h2c_prior_knowledge_routes_every_stream_on_its_own() {
    let m = mesh().await;
    let mut client = h2_client(m.router).await;
    let url = format!("http://{}/", m.router);
    for mark in [Some("b"), None, Some("a"), Some("b")] {
        let resp = client
            .send_request(get(&url, &version_header(mark)))
            .await
            .unwrap();
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(body_text(resp).await.1, mark.unwrap_or("origin"));
    }
    // Streams at once on the one connection.
    let answers = futures::future::join_all((0..20).map(|i| {
        let mut client = client.clone();
        let url = url.clone();
        async move {
            let mark = ["a", "b"][i % 2];
            let resp = client
                .send_request(get(&url, &[("version", mark)]))
                .await
                .unwrap();
            (mark, body_text(resp).await.1)
        }
    }))
    .await;
    for (mark, body) in answers {
        assert_eq!(body, mark);
    }
    assert_eq!(m.proxy.counts(), (23, 1));
}

#[tokio::test]
async fn curl_http2_prior_knowledge_is_routed() {
    let m = mesh().await;
    let url = format!("http://{}/", m.router);
    // One transfer per curl: curl 7.88 cannot reuse a prior-knowledge connection
    // (curl/curl#10634, fixed in 7.89); per-stream routing on one connection is shown
    // with hyper's and tonic's clients.
    for mark in [Some("a"), None, Some("b")] {
        let mut args = vec!["--http2-prior-knowledge", &url, "-w", " %{http_version}"];
        let header = mark.map(|m| format!("version: {m}"));
        if let Some(header) = &header {
            args.extend(["-H", header]);
        }
        let out = curl(&args).await;
        assert_eq!(out, format!("{} 2", mark.unwrap_or("origin")));
    }
    assert_eq!(m.proxy.counts(), (2, 1));
}

#[tokio::test]
async fn upstream_http2_is_one_connection_per_backend() {
    let m = mesh().await;
    let url = format!("http://{}/", m.router);
    for _ in 0..5 {
        let mut client = h2_client(m.router).await;
        let resp = client
            .send_request(get(&url, &[("version", "a")]))
            .await
            .unwrap();
        assert_eq!(body_text(resp).await.1, "a");
    }
    assert_eq!(m.accepted["a"].load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn curl_http2_upgrade_is_answered_over_http1_and_routed() {
    let m = mesh().await;
    let url = format!("http://{}/headers", m.router);
    let out = curl(&["--http2", &url, "-H", "version: b", "-w", "%{http_version}"]).await;
    let (body, version) = out.rsplit_once('\n').unwrap();
    // curl asked to upgrade to h2c; the router answered over HTTP/1.1, routed to B.
    assert_eq!(version, "1.1", "{out}");
    assert!(
        body.contains("x-backend") || body.contains("version: b"),
        "{out}"
    );
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines.contains(&"version: b"), "{out}");
    assert!(lines.contains(&"version: HTTP/1.1"), "{out}");
    // The upgrade's hop-by-hop headers did not travel on.
    for hop in ["upgrade:", "http2-settings:", "connection:"] {
        assert!(!body.contains(hop), "{hop} reached the backend: {out}");
    }
    assert_eq!(m.proxy.counts(), (1, 0));

    // Several transfers on one curl connection: each routed.
    let root = format!("http://{}/", m.router);
    let w = " %{num_connects} %{http_version}\n";
    let out = curl(&[
        "--http2",
        &root,
        "-H",
        "version: a",
        "-w",
        w,
        "--next",
        "--http2",
        &root,
        "-w",
        w,
    ])
    .await;
    assert_eq!(out, "a 1 1.1\norigin 0 1.1\n");
}

// ---- gRPC --------------------------------------------------------------------------

async fn grpc_client(addr: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

fn with_version<T>(msg: T, mark: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(mark) = mark {
        req.metadata_mut().insert("version", mark.parse().unwrap());
    }
    req
}

async fn who(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    mark: Option<&str>,
) -> WhoReply {
    client.ready().await.unwrap();
    let req = with_version(
        WhoRequest {
            text: "hi".to_owned(),
        },
        mark,
    );
    client
        .unary(
            req,
            PathAndQuery::from_static("/probe.Probe/Who"),
            ProstCodec::<WhoRequest, WhoReply>::default(),
        )
        .await
        .unwrap()
        .into_inner()
}

async fn count(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    mark: Option<&str>,
    n: u32,
    fail: bool,
) -> (Vec<CountReply>, Result<(), Status>) {
    client.ready().await.unwrap();
    let req = with_version(CountRequest { n, fail }, mark);
    let mut stream = client
        .server_streaming(
            req,
            PathAndQuery::from_static("/probe.Probe/Count"),
            ProstCodec::<CountRequest, CountReply>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut replies = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(reply)) => replies.push(reply),
            Ok(None) => return (replies, Ok(())),
            Err(status) => return (replies, Err(status)),
        }
    }
}

#[tokio::test]
async fn grpc_unary_is_routed_by_metadata() {
    let m = mesh().await;
    let mut client = grpc_client(m.router).await;
    for mark in [Some("a"), Some("b"), None, Some("a")] {
        let reply = who(&mut client, mark).await;
        assert_eq!(reply.name, mark.unwrap_or("origin"));
        assert_eq!(reply.text, "hi");
        assert_eq!(reply.version, mark.unwrap_or(""));
    }
    assert_eq!(m.proxy.counts(), (3, 1));
}

#[tokio::test]
async fn grpc_server_streaming_is_routed_and_its_status_trailers_arrive() {
    let m = mesh().await;
    let mut client = grpc_client(m.router).await;
    for mark in [Some("b"), None, Some("a")] {
        let name = mark.unwrap_or("origin");
        let (replies, end) = count(&mut client, mark, 5, false).await;
        // Ok(None) at the end: the stream ended with grpc-status 0 in its trailers.
        end.unwrap();
        assert_eq!(replies.len(), 5);
        for (i, reply) in replies.iter().enumerate() {
            assert_eq!((reply.name.as_str(), reply.i as usize), (name, i));
        }
        // An error status after messages travels only in the trailers.
        let (replies, end) = count(&mut client, mark, 2, true).await;
        assert_eq!(replies.len(), 2);
        let status = end.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert_eq!(status.message(), format!("{name}: failed as asked"));
    }
}

// ---- WebSocket ---------------------------------------------------------------------

#[tokio::test]
async fn websocket_is_routed_by_the_upgrade_request_and_echoes_both_ways() {
    let m = mesh().await;
    for mark in [Some("b"), Some("a"), None] {
        let name = mark.unwrap_or("origin");
        let mut req = format!("ws://{}/ws", m.router)
            .into_client_request()
            .unwrap();
        if let Some(mark) = mark {
            req.headers_mut()
                .insert("version", HeaderValue::from_str(mark).unwrap());
        }
        let stream = TcpStream::connect(m.router).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        for i in 0..3 {
            ws.send(Message::text(format!("hello {i}"))).await.unwrap();
            let reply = ws.next().await.unwrap().unwrap();
            assert_eq!(reply, Message::text(format!("{name}:hello {i}")));
        }
        let blob: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        ws.send(Message::binary(blob.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(blob));
        ws.close(None).await.unwrap();
    }
    assert_eq!(m.proxy.counts(), (2, 1));
}

// ---- streaming, trailers -----------------------------------------------------------

/// The byte at position `i` of the test stream (position-dependent, so reordering or
/// loss shows).
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i >> 20) as u8
}

/// A request body fed from a channel.
struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

const MIB: u64 = 1 << 20;

/// Streams `total` bytes to `/echo` and checks every byte that comes back. The sender
/// may be at most two MiB ahead of what came back, so a router that held a whole
/// request (or response) before passing it on would stop this.
async fn stream_echo(
    response: impl Future<Output = hyper::Result<Response<Incoming>>>,
    tx: mpsc::Sender<Bytes>,
    total: u64,
) {
    let credit = Arc::new(Semaphore::new(2));
    let sender = {
        let credit = Arc::clone(&credit);
        async move {
            let mut at = 0;
            while at < total {
                credit.acquire().await.unwrap().forget();
                let piece: Vec<u8> = (at..at + MIB).map(pattern).collect();
                tx.send(Bytes::from(piece)).await.unwrap();
                at += MIB;
            }
        }
    };
    let receiver = async {
        let resp = response.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut at = 0u64;
        let mut next_credit = MIB;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            for (k, b) in data.iter().enumerate() {
                assert_eq!(*b, pattern(at + k as u64), "byte {}", at + k as u64);
            }
            at += data.len() as u64;
            while at >= next_credit {
                credit.add_permits(1);
                next_credit += MIB;
            }
        }
        at
    };
    let ((), received) = tokio::time::timeout(HANG, async { tokio::join!(sender, receiver) })
        .await
        .expect("the echo kept streaming");
    assert_eq!(received, total);
}

#[tokio::test]
async fn a_large_http1_body_streams_through_both_ways() {
    let m = mesh().await;
    let mut client = h1_client(m.router).await;
    let (tx, rx) = mpsc::channel(1);
    let req = Request::post("/echo")
        .header("version", "a")
        .body(boxed(ChanBody(rx)))
        .unwrap();
    stream_echo(client.send_request(req), tx, 64 * MIB).await;
    // The connection is still usable.
    let resp = client.send_request(get("/", &[])).await.unwrap();
    assert_eq!(body_text(resp).await.1, "origin");
}

#[tokio::test]
async fn a_large_h2_body_streams_through_both_ways() {
    let m = mesh().await;
    let mut client = h2_client(m.router).await;
    let (tx, rx) = mpsc::channel(1);
    let req = Request::post(format!("http://{}/echo", m.router))
        .header("version", "b")
        .body(boxed(ChanBody(rx)))
        .unwrap();
    stream_echo(client.send_request(req), tx, 64 * MIB).await;
}

async fn trailers_of(resp: Response<Incoming>) -> (String, Option<HeaderMap>) {
    let mut body = resp.into_body();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame.unwrap().into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    (String::from_utf8(data).unwrap(), trailers)
}

#[tokio::test]
async fn h2_response_trailers_reach_the_client() {
    let m = mesh().await;
    let mut client = h2_client(m.router).await;
    for mark in [Some("a"), None] {
        let name = mark.unwrap_or("origin");
        let resp = client
            .send_request(get(
                &format!("http://{}/trailers", m.router),
                &version_header(mark),
            ))
            .await
            .unwrap();
        let (body, trailers) = trailers_of(resp).await;
        assert_eq!(body, name);
        assert_eq!(trailers.expect("trailers")["x-backend"], name);
    }
}

#[tokio::test]
async fn http1_chunked_trailers_reach_a_client_that_accepts_them() {
    let m = mesh().await;
    let mut client = h1_client(m.router).await;
    let resp = client
        .send_request(get("/trailers", &[("version", "b"), ("te", "trailers")]))
        .await
        .unwrap();
    let (body, trailers) = trailers_of(resp).await;
    assert_eq!(body, "b");
    assert_eq!(trailers.expect("trailers")["x-backend"], "b");
}

// ---- headers -----------------------------------------------------------------------

fn header_lines(body: &str) -> Vec<&str> {
    body.lines().collect()
}

#[tokio::test]
async fn host_and_client_headers_arrive_unchanged_and_forwarding_is_added() {
    let m = mesh().await;
    let mut client = h1_client(m.router).await;
    let resp = client
        .send_request(get(
            "/headers?q=1&r=%20x",
            &[
                ("host", "shop.example.test:8080"),
                ("version", "a"),
                ("x-custom", "Mixed Case, \"quoted\"; v=1"),
                ("x-forwarded-for", "192.0.2.7"),
                ("connection", "x-hop"),
                ("x-hop", "not for the backend"),
                ("keep-alive", "timeout=5"),
            ],
        ))
        .await
        .unwrap();
    let (status, body) = body_text(resp).await;
    assert_eq!(status, 200);
    let lines = header_lines(&body);
    for expected in [
        "uri: /headers?q=1&r=%20x",
        "host: shop.example.test:8080",
        "version: a",
        "x-custom: Mixed Case, \"quoted\"; v=1",
        "x-forwarded-for: 192.0.2.7, 127.0.0.1",
        "forwarded: for=127.0.0.1;proto=http",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected:?} missing in:\n{body}"
        );
    }
    for gone in ["x-hop:", "keep-alive:", "connection:"] {
        assert!(!body.contains(gone), "{gone} reached the backend:\n{body}");
    }

    // HTTP/2: the :authority and the path arrive unchanged.
    let mut client = h2_client(m.router).await;
    let resp = client
        .send_request(get(
            "http://api.example.test:9090/headers?x=1",
            &[("version", "b"), ("x-custom", "two")],
        ))
        .await
        .unwrap();
    let (_, body) = body_text(resp).await;
    let lines = header_lines(&body);
    for expected in [
        "uri: http://api.example.test:9090/headers?x=1",
        "version: HTTP/2.0",
        "x-custom: two",
        "x-forwarded-for: 127.0.0.1",
        "forwarded: for=127.0.0.1;proto=http",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected:?} missing in:\n{body}"
        );
    }
}

// ---- routing table -----------------------------------------------------------------

#[tokio::test]
async fn a_table_change_applies_to_the_next_request_on_an_open_connection() {
    let m = mesh().await;
    let mut client = h1_client(m.router).await;
    let mut ask = async |mark: &str| {
        let resp = client
            .send_request(get("/", &[("version", mark)]))
            .await
            .unwrap();
        body_text(resp).await.1
    };
    assert_eq!(ask("c").await, "origin");
    // A third developer (sent to A's address here), first in match order.
    let mut table = two_developers();
    table
        .routes
        .insert(0, route("dev-c", "version=c || /", DEV_A));
    m.table.send(Arc::new(table)).unwrap();
    assert_eq!(ask("c").await, "a");
    assert_eq!(ask("b").await, "a", "first match wins");
    // Everyone leaves.
    m.table.send(Arc::new(Table::default())).unwrap();
    assert_eq!(ask("a").await, "origin");
    assert_eq!(ask("b").await, "origin");
    assert_eq!(m.proxy.counts(), (2, 3));
}

#[tokio::test]
async fn path_and_regex_rules_route() {
    let m = mesh().await;
    m.table
        .send(Arc::new(Table {
            routes: vec![
                route("dev-a", "/api/a", DEV_A),
                route("dev-b", "x-dev~^bo(b|ris)$ && /api", DEV_B),
            ],
        }))
        .unwrap();
    let mut client = h1_client(m.router).await;
    for (path, dev, expect) in [
        ("/api/a/1", None, "a"),
        ("/api/x", Some("boris"), "b"),
        ("/api/x", Some("bobby"), "origin"),
        ("/web", Some("bob"), "origin"),
    ] {
        let headers: Vec<(&str, &str)> = dev.map(|d| vec![("x-dev", d)]).unwrap_or_default();
        let resp = client.send_request(get(path, &headers)).await.unwrap();
        assert_eq!(body_text(resp).await.1, expect, "{path} {dev:?}");
    }
}

// ---- failures ----------------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_backend_is_a_502_naming_it() {
    let m = mesh().await;
    let mut table = two_developers();
    table.routes.push(route("dev-gone", "version=gone", GONE));
    m.table.send(Arc::new(table)).unwrap();
    let gone = SocketAddr::from((GONE, m.port));

    let mut client = h1_client(m.router).await;
    let resp = client
        .send_request(get("/", &[("version", "gone")]))
        .await
        .unwrap();
    let (status, body) = body_text(resp).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body.starts_with(&format!(
            "kt-shadow router: route `dev-gone` ({gone}) did not answer: cannot connect:"
        )),
        "{body}"
    );
    // The client connection stays usable.
    let resp = client
        .send_request(get("/", &[("version", "a")]))
        .await
        .unwrap();
    assert_eq!(body_text(resp).await.1, "a");

    // Over HTTP/2 too.
    let mut client = h2_client(m.router).await;
    let url = format!("http://{}/", m.router);
    let resp = client
        .send_request(get(&url, &[("version", "gone")]))
        .await
        .unwrap();
    let (status, body) = body_text(resp).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("route `dev-gone`"), "{body}");

    // And the origin.
    let (_, rx) = watch::channel(Arc::new(Table::default()));
    let orphan = Proxy::new(gone, m.port, rx);
    let (router, _stop) = serve(&orphan).await;
    let mut client = h1_client(router).await;
    let resp = client.send_request(get("/", &[])).await.unwrap();
    let (status, body) = body_text(resp).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body.starts_with(&format!(
            "kt-shadow router: origin ({gone}) did not answer: cannot connect:"
        )),
        "{body}"
    );
}

// ---- not HTTP ------------------------------------------------------------------------

/// A raw TCP origin that writes `greeting` on accept, then echoes until EOF.
async fn raw_origin(greeting: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind((ORIGIN, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                stream.write_all(greeting).await.unwrap();
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_and_other_protocols_pass_through_to_the_origin_unrouted() {
    let origin = raw_origin(b"").await;
    let (_, rx) = watch::channel(Arc::new(two_developers()));
    let proxy = Proxy::new(origin, origin.port(), rx);
    let (router, _stop) = serve(&proxy).await;

    // A TLS ClientHello record header and an arbitrary body; then SSH, Redis, binary.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend((0..600u32).map(|i| (i * 7) as u8));
    for sent in [
        hello,
        b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
        b"SET version a\r\n".to_vec(),
        vec![0, 1, 2, 3, 255],
    ] {
        let mut stream = TcpStream::connect(router).await.unwrap();
        stream.write_all(&sent).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, sent);
    }
    assert_eq!(proxy.counts(), (0, 0), "nothing was routed as HTTP");
}

#[tokio::test]
async fn a_protocol_where_the_server_speaks_first_reaches_the_origin() {
    let origin = raw_origin(b"220 origin ready\r\n").await;
    let (_, rx) = watch::channel(Arc::new(two_developers()));
    let proxy = Proxy::new(origin, origin.port(), rx);
    let (router, _stop) = serve(&proxy).await;
    let mut stream = TcpStream::connect(router).await.unwrap();
    // The client says nothing until greeted.
    let mut greeting = [0; 18];
    stream.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220 origin ready\r\n");
    stream.write_all(b"HELO x\r\n").await.unwrap();
    let mut echo = [0; 8];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"HELO x\r\n");
}
