//! `kt-probe serve`: one port answering HTTP/1.1 (kept alive), h2c (prior knowledge),
//! WebSocket (`/ws`) and gRPC (`probe.Probe`), every reply naming the server.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::{grpc, h2c};

/// Any error a response body may end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response's body type.
pub(crate) type ProbeBody = UnsyncBoxBody<Bytes, BoxError>;

/// The trailer `/trailers` ends with.
pub(crate) const TRAILER: &str = "x-probe-name";

/// Boxes any body into [`ProbeBody`].
pub(crate) fn box_body<B>(body: B) -> ProbeBody
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

fn full(bytes: impl Into<Bytes>) -> ProbeBody {
    box_body(Full::new(bytes.into()).map_err(|e: Infallible| match e {}))
}

/// `HTTP/1.1`, `HTTP/2`, ...
pub(crate) fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

/// Every request header by name (repeated ones joined with `, `), plus `:authority`
/// when the request has one (HTTP/2 carries it there instead of in `Host`).
pub(crate) fn header_map_json(uri: &Uri, headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        map.entry(k.as_str().to_owned())
            .and_modify(|old| {
                old.push_str(", ");
                old.push_str(&v);
            })
            .or_insert(v);
    }
    if let Some(a) = uri.authority() {
        map.insert(":authority".to_owned(), a.as_str().to_owned());
    }
    map
}

/// What one server knows.
struct Server {
    name: String,
}

/// Serves on `listen` until SIGTERM or SIGINT. Prints one JSON line
/// `{"listening":"<addr>","name":NAME}` to stdout once the port is bound.
pub(crate) async fn run(listen: &str, name: String) -> Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on `{listen}`: give a free host:port, e.g. 0.0.0.0:8080")
    })?;
    let addr = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({"listening": addr.to_string(), "name": name})
    );
    let server = Arc::new(Server { name });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: say so, and go on after a pause.
                    eprintln!("kt-probe: accept on {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let server = Arc::clone(&server);
                async move { Server::handle(&server, peer, req).await }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
            {
                eprintln!("kt-probe: connection from {peer}: {e}");
            }
        });
    }
}

impl Server {
    async fn handle(
        self: &Arc<Self>,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<ProbeBody>, Infallible> {
        if grpc::is_grpc(req.headers()) {
            return grpc::serve(&self.name, peer, req).await;
        }
        if h2c::wants_upgrade(&req) {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            // A request too large for one HEADERS frame is answered in HTTP/1.1.
            if let Some(frame) = h2c::stream_one(req.method(), path, req.headers()) {
                return Ok(self.upgrade_h2c(peer, req, frame));
            }
        }
        let path = req.uri().path();
        if path == "/ws" && is_websocket_upgrade(req.headers()) {
            return Ok(self.websocket(req));
        }
        if path == "/echo" {
            // Streams the request body back as it arrives.
            let mut resp = Response::new(box_body(req.into_body()));
            resp.headers_mut()
                .insert("x-probe-name", header_value(&self.name));
            return Ok(resp);
        }
        let trailers = path == "/trailers";
        let (parts, body) = req.into_parts();
        // Other methods' bodies are read in full and counted.
        let body_bytes = if parts.method == Method::GET || parts.method == Method::HEAD {
            0
        } else {
            match count_body(body).await {
                Ok(n) => n,
                Err(e) => {
                    return Ok(plain(
                        StatusCode::BAD_REQUEST,
                        format!("reading the request body: {e}\n"),
                    ));
                }
            }
        };
        let uri = &parts.uri;
        let reply = serde_json::json!({
            "name": self.name,
            "method": parts.method.as_str(),
            "path": uri.path(),
            "query": uri.query(),
            "version": version_name(parts.version),
            "authority": uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
                parts.headers.get(header::HOST).map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            }),
            "peer": peer.to_string(),
            "body_bytes": body_bytes,
            "headers": header_map_json(uri, &parts.headers),
        });
        let mut text = reply.to_string();
        text.push('\n');
        let body = if trailers {
            let mut t = HeaderMap::new();
            t.insert(TRAILER, header_value(&self.name));
            let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                vec![Ok(Frame::data(Bytes::from(text))), Ok(Frame::trailers(t))];
            box_body(StreamBody::new(futures::stream::iter(frames)))
        } else {
            full(text)
        };
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert("x-probe-name", header_value(&self.name));
        if trailers {
            h.insert(header::TRAILER, HeaderValue::from_static(TRAILER));
        }
        Ok(resp)
    }

    /// Switches the connection to HTTP/2 ([`h2c`]); the upgrade request is answered as
    /// its stream 1.
    fn upgrade_h2c(
        self: &Arc<Self>,
        peer: SocketAddr,
        mut req: Request<Incoming>,
        stream_one: Vec<u8>,
    ) -> Response<ProbeBody> {
        let on_upgrade = hyper::upgrade::on(&mut req);
        let server = Arc::clone(self);
        tokio::spawn(async move {
            let io = match on_upgrade.await {
                Ok(u) => TokioIo::new(u),
                Err(e) => {
                    eprintln!("kt-probe: h2c upgrade from {peer}: {e}");
                    return;
                }
            };
            let io = match h2c::adopt(io, stream_one).await {
                Ok(io) => io,
                Err(e) => {
                    eprintln!("kt-probe: h2c upgrade from {peer}: {e}");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| {
                let server = Arc::clone(&server);
                async move { Server::handle(&server, peer, req).await }
            });
            if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), svc)
                .await
            {
                eprintln!("kt-probe: h2c connection from {peer}: {e}");
            }
        });
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        resp
    }

    /// Accepts the upgrade and echoes every message, prefixed `NAME:`.
    fn websocket(&self, mut req: Request<Incoming>) -> Response<ProbeBody> {
        let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
            return plain(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key\n");
        };
        let accept = derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        let name = self.name.clone();
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("kt-probe: WebSocket upgrade: {e}");
                    return;
                }
            };
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                let reply = match msg {
                    Message::Text(t) => Message::text(format!("{name}:{}", t.as_str())),
                    Message::Binary(b) => {
                        let mut v = format!("{name}:").into_bytes();
                        v.extend_from_slice(&b);
                        Message::binary(v)
                    }
                    _ => continue,
                };
                if ws.send(reply).await.is_err() {
                    break;
                }
            }
        });
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).unwrap_or(HeaderValue::from_static("")),
        );
        h.insert("x-probe-name", header_value(&self.name));
        resp
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("invalid-name"))
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response<ProbeBody> {
    let mut resp = Response::new(full(text.into()));
    *resp.status_mut() = status;
    resp
}

async fn count_body(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// `Connection: upgrade` and `Upgrade: websocket` (case-insensitive, token lists).
fn is_websocket_upgrade(h: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_upgrade_is_recognised_in_token_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_websocket_upgrade(&h));
    }

    #[test]
    fn repeated_headers_are_joined_and_authority_added() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let uri: Uri = "http://svc:80/p".parse().unwrap_or_default();
        let m = header_map_json(&uri, &h);
        assert_eq!(m.get("x-a").map(String::as_str), Some("1, 2"));
        assert_eq!(m.get(":authority").map(String::as_str), Some("svc:80"));
    }
}
