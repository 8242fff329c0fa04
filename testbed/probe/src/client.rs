//! kt-probe's clients: `http`, `ws`, `grpc` and `load`. Each prints one JSON line per
//! response to stdout and fails (non-zero exit, message on stderr) on any error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::AbortOnDrop;
use crate::serve::{ProbeBody, box_body, version_name};

/// Parses `-H 'name: value'`.
pub(crate) fn parse_header(h: &str) -> Result<(String, String)> {
    let (k, v) = h
        .split_once(':')
        .with_context(|| format!("bad header `{h}`: write it as 'name: value'"))?;
    let (k, v) = (k.trim(), v.trim());
    ensure!(!k.is_empty(), "bad header `{h}`: the name is empty");
    HeaderName::from_bytes(k.as_bytes())
        .with_context(|| format!("bad header `{h}`: `{k}` is not a header name"))?;
    HeaderValue::from_str(v)
        .with_context(|| format!("bad header `{h}`: `{v}` is not a header value"))?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Parses `--alternate-header 'name: v1,,v2'`: the values in turn, an empty one meaning
/// "no such header".
pub(crate) fn parse_alternate(h: &str) -> Result<(String, Vec<String>)> {
    let (k, values) = h.split_once(':').with_context(|| {
        format!("bad --alternate-header `{h}`: write it as 'name: value1,value2' (an empty value omits the header)")
    })?;
    let k = k.trim();
    HeaderName::from_bytes(k.as_bytes())
        .with_context(|| format!("bad --alternate-header `{h}`: `{k}` is not a header name"))?;
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
    for v in &values {
        HeaderValue::from_str(v).with_context(|| {
            format!("bad --alternate-header `{h}`: `{v}` is not a header value")
        })?;
    }
    Ok((k.to_owned(), values))
}

/// A TCP connection to `host:port`, Nagle off.
pub(crate) async fn connect_tcp(addr: &str) -> Result<TcpStream> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// An `http://` URL's parts.
struct Target {
    uri: Uri,
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header / `:authority` as written in the URL.
    authority: String,
}

fn parse_url(url: &str, scheme: &str, default_port: u16) -> Result<Target> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("bad URL `{url}`: expected {scheme}://host[:port]/path"))?;
    ensure!(
        uri.scheme_str() == Some(scheme),
        "bad URL `{url}`: only {scheme}:// is supported here"
    );
    let authority = uri
        .authority()
        .with_context(|| format!("bad URL `{url}`: no host"))?;
    let port = authority.port_u16().unwrap_or(default_port);
    let host = authority.host();
    Ok(Target {
        addr: format!("{host}:{port}"),
        authority: authority.as_str().to_owned(),
        uri,
    })
}

/// Either protocol's request sender on one connection.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ProbeBody>),
    H2(hyper::client::conn::http2::SendRequest<ProbeBody>),
}

/// One kept-alive connection.
pub(crate) struct HttpConn {
    sender: Sender,
    target: Target,
    _task: AbortOnDrop,
}

/// One response, read in full.
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) version: &'static str,
    pub(crate) body: Bytes,
    pub(crate) trailers: Option<BTreeMap<String, String>>,
}

impl HttpResponse {
    /// The body as JSON, or as a string when it is not JSON.
    pub(crate) fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    /// The `name` field of a kt-probe reply.
    pub(crate) fn name(&self) -> Option<String> {
        self.body_json()
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

impl HttpConn {
    /// Connects to `url`'s host over HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
    pub(crate) async fn connect(url: &str, h2: bool) -> Result<HttpConn> {
        let target = parse_url(url, "http", 80)?;
        let tcp = connect_tcp(&target.addr).await?;
        let io = TokioIo::new(tcp);
        let (sender, task) = if h2 {
            let (s, c) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .with_context(|| format!("HTTP/2 handshake with {}", target.addr))?;
            (
                Sender::H2(s),
                tokio::spawn(async move {
                    let _ = c.await;
                }),
            )
        } else {
            let (s, c) = hyper::client::conn::http1::handshake(io)
                .await
                .with_context(|| format!("HTTP/1.1 handshake with {}", target.addr))?;
            (
                Sender::H1(s),
                tokio::spawn(async move {
                    let _ = c.await;
                }),
            )
        };
        Ok(HttpConn {
            sender,
            target,
            _task: AbortOnDrop(task),
        })
    }

    /// Sends `method` to the URL's path with `headers` and `body` on this connection;
    /// the response with its body still to read.
    async fn send(
        &mut self,
        method: hyper::Method,
        headers: &[(String, String)],
        body: ProbeBody,
    ) -> Result<hyper::Response<Incoming>> {
        let path = self
            .target
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut b = Request::builder()
            .method(method.clone())
            .uri(match self.sender {
                // HTTP/2 sends scheme and authority as pseudo-headers.
                Sender::H2(_) => self.target.uri.to_string(),
                Sender::H1(_) => path.clone(),
            });
        let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if matches!(self.sender, Sender::H1(_)) && !has_host {
            b = b.header(hyper::header::HOST, &self.target.authority);
        }
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(body).context("building the request")?;
        match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.context("the connection closed")?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await.context("the connection closed")?;
                s.send_request(req).await
            }
        }
        .with_context(|| format!("{method} {path} on {}", self.target.addr))
    }

    /// GET the URL's path with `headers` on this connection.
    pub(crate) async fn get(&mut self, headers: &[(String, String)]) -> Result<HttpResponse> {
        let resp = self
            .send(hyper::Method::GET, headers, box_body(Empty::<Bytes>::new()))
            .await?;
        let status = resp.status().as_u16();
        let version = version_name(resp.version());
        let collected = resp
            .into_body()
            .collect()
            .await
            .context("reading the response body")?;
        let trailers = collected.trailers().map(|t| {
            t.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect()
        });
        Ok(HttpResponse {
            status,
            version,
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// POSTs `len` bytes of [`pattern`] to the URL (kt-probe's `/echo`), streamed in
    /// 64 KiB chunks, and checks that the response body is the same bytes, chunk by
    /// chunk as it arrives; neither body is held whole.
    pub(crate) async fn post_pattern(
        &mut self,
        headers: &[(String, String)],
        len: u64,
    ) -> Result<EchoResult> {
        const CHUNK: u64 = 64 * 1024;
        let chunks = futures::stream::unfold(0u64, move |off| async move {
            if off >= len {
                return None;
            }
            let n = CHUNK.min(len - off);
            let data: Vec<u8> = (off..off + n).map(pattern).collect();
            Some((
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(data))),
                off + n,
            ))
        });
        let mut hs = headers.to_vec();
        hs.push(("content-length".to_owned(), len.to_string()));
        let resp = self
            .send(hyper::Method::POST, &hs, box_body(StreamBody::new(chunks)))
            .await?;
        let status = resp.status().as_u16();
        let version = version_name(resp.version());
        let name = resp
            .headers()
            .get("x-probe-name")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut body = resp.into_body();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.with_context(|| format!("reading the echo at byte {got}"))?;
            if let Ok(data) = frame.into_data() {
                if let Some(k) = (0..data.len()).find(|&k| data[k] != pattern(got + k as u64)) {
                    bail!("the echoed body differs at byte {}", got + k as u64);
                }
                got += data.len() as u64;
            }
        }
        Ok(EchoResult {
            status,
            version,
            name,
            bytes: got,
        })
    }
}

/// Byte `i` of the bodies `--post-bytes` sends: not periodic within 64 KiB chunks.
pub(crate) fn pattern(i: u64) -> u8 {
    ((i % 251) as u8) ^ ((i / 251) as u8)
}

/// What a `--post-bytes` request got back.
pub(crate) struct EchoResult {
    status: u16,
    version: &'static str,
    name: Option<String>,
    bytes: u64,
}

/// `kt-probe http`.
pub(crate) async fn http(
    url: &str,
    h2: bool,
    headers: &[(String, String)],
    requests: u32,
    alternate: Option<(String, Vec<String>)>,
    post_bytes: Option<u64>,
) -> Result<()> {
    let mut conn = HttpConn::connect(url, h2).await?;
    for i in 0..requests {
        let mut hs = headers.to_vec();
        let mut sent = Value::Null;
        if let Some((name, values)) = &alternate {
            let v = &values[i as usize % values.len()];
            if !v.is_empty() {
                hs.push((name.clone(), v.clone()));
                sent = Value::String(v.clone());
            }
        }
        let what = || {
            format!(
                "request {} of {requests} (one kept-alive connection)",
                i + 1
            )
        };
        if let Some(len) = post_bytes {
            let r = conn.post_pattern(&hs, len).await.with_context(what)?;
            let mut line = json!({
                "request": i,
                "status": r.status,
                "version": r.version,
                "name": r.name,
                "sent_bytes": len,
                "echoed_bytes": r.bytes,
            });
            if alternate.is_some() {
                line["sent"] = sent;
            }
            println!("{line}");
            ensure!(
                (200..300).contains(&r.status),
                "{}: status {}",
                what(),
                r.status
            );
            ensure!(
                r.bytes == len,
                "{}: sent {len} bytes, {} came back",
                what(),
                r.bytes
            );
            continue;
        }
        let resp = conn.get(&hs).await.with_context(what)?;
        let mut line = json!({
            "request": i,
            "status": resp.status,
            "version": resp.version,
            "name": resp.name(),
            "body": resp.body_json(),
        });
        if alternate.is_some() {
            line["sent"] = sent;
        }
        if let Some(t) = &resp.trailers {
            line["trailers"] = json!(t);
        }
        println!("{line}");
        if !(200..300).contains(&resp.status) {
            bail!(
                "request {} of {requests}: status {}: {}",
                i + 1,
                resp.status,
                String::from_utf8_lossy(&resp.body).trim_end()
            );
        }
    }
    Ok(())
}

/// `kt-probe ws`.
pub(crate) async fn ws(url: &str, headers: &[(String, String)], message: &str) -> Result<()> {
    let target = parse_url(url, "ws", 80)?;
    let mut req = url
        .into_client_request()
        .with_context(|| format!("bad WebSocket URL `{url}`"))?;
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes())?,
            HeaderValue::from_str(v)?,
        );
    }
    let tcp = connect_tcp(&target.addr).await?;
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .with_context(|| format!("WebSocket handshake with {url}"))?;
    let upgraded_by = resp
        .headers()
        .get("x-probe-name")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    ws.send(Message::text(message))
        .await
        .context("sending the message")?;
    let reply = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => break t.as_str().to_owned(),
            Some(Ok(Message::Binary(b))) => break String::from_utf8_lossy(&b).into_owned(),
            Some(Ok(Message::Close(c))) => bail!("the server closed the WebSocket: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading the reply"),
            None => bail!("the WebSocket ended before a reply"),
        }
    };
    let name = reply
        .strip_suffix(message)
        .and_then(|p| p.strip_suffix(':'))
        .map(str::to_owned);
    println!(
        "{}",
        json!({"reply": reply, "name": name, "upgraded_by": upgraded_by})
    );
    let _ = ws.close(None).await;
    ensure!(
        name.is_some(),
        "the reply `{reply}` is not `NAME:{message}`: the server is not a kt-probe"
    );
    Ok(())
}

/// What `kt-probe grpc` calls.
pub(crate) enum GrpcCall {
    Unary(String),
    Stream(u32),
}

/// `kt-probe grpc`.
pub(crate) async fn grpc(addr: &str, headers: Vec<(String, String)>, call: GrpcCall) -> Result<()> {
    let mut client = crate::grpc::Client::connect(addr, headers).await?;
    match call {
        GrpcCall::Unary(text) => {
            let r = client
                .who(&text)
                .await
                .map_err(|s| anyhow::anyhow!("Who on {addr}: {s}"))?;
            println!(
                "{}",
                json!({"name": r.name, "text": r.text, "headers": r.headers, "peer": r.peer})
            );
        }
        GrpcCall::Stream(n) => {
            let got = client
                .count(n, |r| println!("{}", json!({"name": r.name, "i": r.i})))
                .await
                .map_err(|s| anyhow::anyhow!("Count on {addr}: {s}"))?;
            ensure!(
                got == n,
                "Count on {addr}: asked for {n} replies, got {got}"
            );
        }
    }
    Ok(())
}

/// `q`th percentile (nearest rank) of sorted `v`, in microseconds.
fn percentile_us(sorted: &[Duration], q: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_micros()
}

/// The IP of an `ip:port` (IPv6 in brackets).
fn peer_ip(addr: &str) -> String {
    addr.parse::<std::net::SocketAddr>()
        .map_or_else(|_| addr.to_owned(), |a| a.ip().to_string())
}

/// `kt-probe load`.
pub(crate) async fn load(
    url: &str,
    headers: Vec<(String, String)>,
    requests: u32,
    warmup: u32,
    grpc: bool,
) -> Result<()> {
    ensure!(requests > 0, "--requests must be at least 1");
    let mut names: BTreeMap<String, u32> = BTreeMap::new();
    let mut peers: BTreeMap<String, u32> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(requests as usize);
    let total;
    if grpc {
        let target = parse_url(url, "http", 80)?;
        let mut client = crate::grpc::Client::connect(&target.addr, headers).await?;
        for i in 0..warmup {
            client
                .who("warmup")
                .await
                .map_err(|s| anyhow::anyhow!("warm-up call {} on {url}: {s}", i + 1))?;
        }
        let start = Instant::now();
        for i in 0..requests {
            let t = Instant::now();
            let r = client
                .who("load")
                .await
                .map_err(|s| anyhow::anyhow!("call {} of {requests} on {url}: {s}", i + 1))?;
            latencies.push(t.elapsed());
            *names.entry(r.name).or_default() += 1;
            *peers.entry(peer_ip(&r.peer)).or_default() += 1;
        }
        total = start.elapsed();
    } else {
        let mut conn = HttpConn::connect(url, false).await?;
        for i in 0..warmup {
            let r = conn
                .get(&headers)
                .await
                .with_context(|| format!("warm-up request {}", i + 1))?;
            ensure!(
                r.status == 200,
                "warm-up request {}: status {}",
                i + 1,
                r.status
            );
        }
        let start = Instant::now();
        for i in 0..requests {
            let t = Instant::now();
            let r = conn
                .get(&headers)
                .await
                .with_context(|| format!("request {} of {requests}", i + 1))?;
            latencies.push(t.elapsed());
            ensure!(
                r.status == 200,
                "request {} of {requests}: status {}: {}",
                i + 1,
                r.status,
                String::from_utf8_lossy(&r.body).trim_end()
            );
            *names.entry(r.name().unwrap_or_default()).or_default() += 1;
            let peer = r.body_json()["peer"]
                .as_str()
                .map(peer_ip)
                .unwrap_or_default();
            *peers.entry(peer).or_default() += 1;
        }
        total = start.elapsed();
    }
    latencies.sort();
    println!(
        "{}",
        json!({
            "requests": requests,
            "p50_us": percentile_us(&latencies, 50.0),
            "p99_us": percentile_us(&latencies, 99.0),
            "rps": (f64::from(requests) / total.as_secs_f64()).round(),
            "names": names,
            "peers": peers,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_bad_ones_say_how_to_write_them() {
        assert_eq!(
            parse_header("X-Dev:  alice ").unwrap_or_default(),
            ("X-Dev".to_owned(), "alice".to_owned())
        );
        let e = parse_header("X-Dev alice").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("'name: value'")));
    }

    #[test]
    fn alternate_header_empty_value_means_omitted() {
        let (k, v) = parse_alternate("version: a,,b").unwrap_or_default();
        assert_eq!(k, "version");
        assert_eq!(v, ["a", "", "b"]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&v, 50.0), 50);
        assert_eq!(percentile_us(&v, 99.0), 99);
        assert_eq!(percentile_us(&v[..1], 99.0), 1);
    }
}
