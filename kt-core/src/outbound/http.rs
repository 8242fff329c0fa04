//! An HTTP proxy: `CONNECT host:port` tunnels (what clients use for `https://` URLs) and
//! plain absolute-form requests (`GET http://svc/path`, what clients send for `http://`
//! URLs through `HTTP_PROXY`). Names are resolved in the cluster. With per-session
//! credentials, every request must carry them (`Proxy-Authorization: Basic`); one that
//! does not gets `407 Proxy Authentication Required` with a `Proxy-Authenticate`
//! challenge. The header is never passed on.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::Error;
use crate::outbound::auth::ProxyCredentials;
use crate::outbound::{Tasks, Upstream, splice};

type Body = BoxBody<Bytes, hyper::Error>;

/// Serves one client connection (several requests with keep-alive); with
/// `credentials`, only requests that carry them.
pub(crate) async fn handle<U: Upstream>(
    client: TcpStream,
    upstream: U,
    tasks: Tasks,
    credentials: Option<Arc<ProxyCredentials>>,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let upstream = upstream.clone();
        let tasks = tasks.clone();
        let authorized = credentials.as_deref().is_none_or(|c| authorized(&req, c));
        async move {
            if !authorized {
                tracing::debug!(
                    target: "kt",
                    "HTTP proxy: refused a request without the session's proxy credentials"
                );
                return Ok::<_, Infallible>(authentication_required());
            }
            Ok(proxy(req, upstream, tasks).await)
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(client), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(target: "kt", "HTTP proxy connection: {e}");
    }
}

/// Whether one of the request's `Proxy-Authorization` headers carries `credentials`.
fn authorized(req: &Request<Incoming>, credentials: &ProxyCredentials) -> bool {
    req.headers()
        .get_all(header::PROXY_AUTHORIZATION)
        .iter()
        .any(|value| credentials.matches_basic(value.as_bytes()))
}

/// `407 Proxy Authentication Required` with the `Basic` challenge.
fn authentication_required() -> Response<Body> {
    let mut resp = error(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "kt HTTP proxy: this session's proxies need its credentials: use the proxy URLs \
         of the session's environment (HTTP_PROXY, HTTPS_PROXY), which carry them"
            .to_owned(),
    );
    if let Ok(challenge) = HeaderValue::from_str(&ProxyCredentials::challenge()) {
        resp.headers_mut()
            .insert(header::PROXY_AUTHENTICATE, challenge);
    }
    resp
}

async fn proxy<U: Upstream>(req: Request<Incoming>, upstream: U, tasks: Tasks) -> Response<Body> {
    if req.method() == Method::CONNECT {
        connect(req, upstream, tasks).await
    } else {
        forward(req, upstream, tasks).await
    }
}

/// `CONNECT host:port`: answer 200 once the cluster side is connected, then splice.
async fn connect<U: Upstream>(req: Request<Incoming>, upstream: U, tasks: Tasks) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "kt HTTP proxy: CONNECT needs host:port".to_owned(),
        );
    };
    let host = unbracket(authority.host());
    let port = authority.port_u16().unwrap_or(443);
    match upstream.connect(&host, port).await {
        Ok(remote) => {
            tasks.spawn(async move {
                match hyper::upgrade::on(req).await {
                    Ok(upgraded) => splice(TokioIo::new(upgraded), remote).await,
                    Err(e) => tracing::debug!(target: "kt", "CONNECT upgrade: {e}"),
                }
            });
            Response::new(empty())
        }
        Err(e) => error(status_for(&e), format!("kt HTTP proxy: {e}")),
    }
}

/// A plain request with an absolute-form URI: send it in origin form to the cluster.
async fn forward<U: Upstream>(req: Request<Incoming>, upstream: U, tasks: Tasks) -> Response<Body> {
    let uri = req.uri().clone();
    let Some(authority) = uri.authority().cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "kt HTTP proxy: this is a proxy, not a server: send absolute-form requests \
             (`GET http://service/path`), as clients do when it is set as HTTP_PROXY"
                .to_owned(),
        );
    };
    if uri.scheme_str() != Some("http") {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "kt HTTP proxy: only http:// URLs are forwarded in plain form (got {uri}); \
                 use CONNECT (HTTPS_PROXY) for TLS"
            ),
        );
    }
    let host = unbracket(authority.host());
    let port = authority.port_u16().unwrap_or(80);
    let remote = match upstream.connect(&host, port).await {
        Ok(r) => r,
        Err(e) => return error(status_for(&e), format!("kt HTTP proxy: {e}")),
    };
    let handshake = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(remote))
        .await;
    let (mut sender, conn) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("kt HTTP proxy: connection to {authority} failed: {e}"),
            );
        }
    };
    tasks.spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(target: "kt", "upstream HTTP connection: {e}");
        }
    });
    let (mut parts, body) = req.into_parts();
    parts.uri = origin_form(&uri);
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST)
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, value);
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("kt HTTP proxy: request to {authority} failed: {e}"),
        ),
    }
}

fn unbracket(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// `/path?query` of an absolute URI (`/` when it has none).
fn origin_form(uri: &Uri) -> Uri {
    let pq = uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    pq.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// Removes the headers that concern only one hop (RFC 9110 §7.6.1), including the
/// ones the `Connection` header lists.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn status_for(e: &Error) -> StatusCode {
    match e {
        Error::Connect { reason, .. } if reason.starts_with("no answer") => {
            StatusCode::GATEWAY_TIMEOUT
        }
        Error::TunnelDown { .. } | Error::Closed => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

fn error(status: StatusCode, message: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_uris_become_origin_form() {
        let uri: Uri = "http://echo.ns:8080/a/b?c=d".parse().unwrap_or_default();
        assert_eq!(origin_form(&uri), "/a/b?c=d");
        let uri: Uri = "http://echo".parse().unwrap_or_default();
        assert_eq!(origin_form(&uri), "/");
    }

    #[test]
    fn hop_by_hop_headers_are_removed_with_the_ones_connection_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }
}
