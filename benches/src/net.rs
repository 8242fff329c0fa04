//! The client side of every measurement: how a request reaches the echo pod (a
//! [`Route`]), one-shot requests, kept-alive connections and verified downloads.
//!
//! The same hyper HTTP/1.1 client runs over every route, so the routes differ only in
//! what carries the bytes.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How a request reaches the echo pod.
#[derive(Debug, Clone)]
pub enum Route {
    /// A SOCKS5 proxy (kt's, or `ssh -D`); `CONNECT` to `host:port`.
    Socks5 {
        /// The proxy.
        proxy: SocketAddr,
        /// The destination host (an IP, or a name the proxy resolves).
        host: String,
        /// The destination port.
        port: u16,
    },
    /// An HTTP proxy taking plain absolute-form requests (`GET http://host:port/path`).
    HttpProxy {
        /// The proxy.
        proxy: SocketAddr,
        /// The destination host.
        host: String,
        /// The destination port.
        port: u16,
    },
    /// An address whose connections reach the destination: a local port that forwards
    /// to it (`kubectl port-forward`, `Session::forward`), or the destination itself
    /// when a VPN (kt's, sshuttle) routes it.
    Local {
        /// The address to connect to.
        addr: SocketAddr,
    },
}

impl Route {
    /// Through the SOCKS5 proxy `proxy` to `host:port`.
    pub fn socks5(proxy: SocketAddr, host: &str, port: u16) -> Route {
        Route::Socks5 {
            proxy,
            host: host.to_owned(),
            port,
        }
    }

    /// Through the HTTP proxy `proxy` to `host:port`.
    pub fn http_proxy(proxy: SocketAddr, host: &str, port: u16) -> Route {
        Route::HttpProxy {
            proxy,
            host: host.to_owned(),
            port,
        }
    }

    /// Straight to `addr` (a forwarding local port, or the destination itself).
    pub fn local(addr: SocketAddr) -> Route {
        Route::Local { addr }
    }

    /// A TCP connection ready for HTTP (the SOCKS5 handshake done).
    pub async fn open(&self) -> Result<TcpStream> {
        let stream = match self {
            Route::Socks5 { proxy, host, port } => {
                kt_lab_tests::socks5_connect(*proxy, host, *port).await?
            }
            Route::HttpProxy { proxy, .. } => TcpStream::connect(proxy)
                .await
                .with_context(|| format!("connecting to the HTTP proxy {proxy}"))?,
            Route::Local { addr } => TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// The request target for `path`: absolute-form for an HTTP proxy, else `path`.
    pub fn target(&self, path: &str) -> String {
        match self {
            Route::HttpProxy { host, port, .. } => {
                if *port == 80 {
                    format!("http://{host}{path}")
                } else {
                    format!("http://{host}:{port}{path}")
                }
            }
            Route::Socks5 { .. } | Route::Local { .. } => path.to_owned(),
        }
    }

    /// The `Host` header.
    pub fn host_header(&self) -> String {
        match self {
            Route::Socks5 { host, port, .. } | Route::HttpProxy { host, port, .. } => {
                if *port == 80 {
                    host.clone()
                } else {
                    format!("{host}:{port}")
                }
            }
            Route::Local { addr } => addr.to_string(),
        }
    }
}

/// Aborts the HTTP connection task when dropped.
struct ConnTask(tokio::task::JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP/1.1 connection over a [`Route`], kept alive for many requests.
pub struct KeepAlive {
    route: Route,
    sender: SendRequest<Empty<Bytes>>,
    _conn: ConnTask,
}

impl KeepAlive {
    /// Opens the connection.
    pub async fn open(route: &Route) -> Result<KeepAlive> {
        let stream = route.open().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(KeepAlive {
            route: route.clone(),
            sender,
            _conn: ConnTask(task),
        })
    }

    /// `GET path`; fails unless the status is 200. Returns the body.
    pub async fn get(&mut self, path: &str) -> Result<Bytes> {
        let (status, body) = self.request(path).await?;
        ensure!(
            status == 200,
            "GET {path}: status {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(body)
    }

    /// `GET path` and its status and whole body.
    pub async fn request(&mut self, path: &str) -> Result<(u16, Bytes)> {
        self.sender
            .ready()
            .await
            .context("the kept-alive connection closed")?;
        let req = hyper::Request::get(self.route.target(path))
            .header(hyper::header::HOST, self.route.host_header())
            .body(Empty::<Bytes>::new())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the body of GET {path}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// `GET path` streaming the body to `check(offset, chunk)`; fails unless the status
    /// is 200. Returns the number of body bytes.
    pub async fn get_streaming(
        &mut self,
        path: &str,
        mut check: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<u64> {
        self.sender
            .ready()
            .await
            .context("the kept-alive connection closed")?;
        let req = hyper::Request::get(self.route.target(path))
            .header(hyper::header::HOST, self.route.host_header())
            .body(Empty::<Bytes>::new())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            bail!(
                "GET {path}: status {status}: {}",
                String::from_utf8_lossy(&text)
            );
        }
        let mut offset = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.with_context(|| format!("GET {path}: body at byte {offset}"))?;
            if let Ok(data) = frame.into_data() {
                check(offset, &data)?;
                offset += data.len() as u64;
            }
        }
        Ok(offset)
    }
}

/// Opens a connection over `route`, `GET path`, checks for 200 and `expect` as the
/// body, within `limit`. What the connect benchmark counts as "first response".
pub async fn get_once(route: &Route, path: &str, expect: &[u8], limit: Duration) -> Result<()> {
    let attempt = async {
        let mut conn = KeepAlive::open(route).await?;
        let body = conn.get(path).await?;
        ensure!(
            body.as_ref() == expect,
            "GET {path}: body {:?}, expected {:?}",
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(expect)
        );
        Ok(())
    };
    tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| anyhow!("GET {path} over {route:?}: no answer within {limit:?}"))?
}

/// Bytes of the reference pattern checked at once.
const SPAN: usize = 64 * 1024;

/// The echo app's `/bytes` pattern, one period (256 bytes) longer than [`SPAN`], so any
/// [`SPAN`]-long slice at any offset is a subslice.
static PATTERN: LazyLock<Vec<u8>> = LazyLock::new(|| {
    (0..(SPAN + 256) as u64)
        .map(kt_lab_tests::echo_bytes_pattern)
        .collect()
});

/// Checks `data`, found at body offset `offset`, against the echo pattern (a memcmp
/// per 64 KiB, so the whole body is checked at memory speed).
pub fn check_pattern(offset: u64, data: &[u8]) -> Result<()> {
    let mut off = offset;
    for piece in data.chunks(SPAN) {
        let start = (off % 256) as usize;
        let want = &PATTERN[start..start + piece.len()];
        if piece != want {
            let at = piece
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            bail!(
                "byte {} of the body is {:#04x}, expected {:#04x}",
                off + at as u64,
                piece[at],
                want[at]
            );
        }
        off += piece.len() as u64;
    }
    Ok(())
}

/// Downloads `/bytes/<size>` over a fresh connection on `route`, checks every byte and
/// the count, within `limit`. Returns the time from opening the connection to the last
/// byte.
pub async fn download(route: &Route, size: u64, limit: Duration) -> Result<Duration> {
    let path = format!("/bytes/{size}");
    let started = Instant::now();
    let attempt = async {
        let mut conn = KeepAlive::open(route).await?;
        conn.get_streaming(&path, check_pattern).await
    };
    let got = tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| anyhow!("GET {path} over {route:?}: not done within {limit:?}"))??;
    let elapsed = started.elapsed();
    ensure!(got == size, "GET {path}: {got} body bytes, expected {size}");
    Ok(elapsed)
}

/// `warmup` then `requests` sequential `GET /healthz` over one kept-alive connection on
/// `route`, every body checked (`ok`). Returns the durations of the timed requests.
pub async fn healthz_latencies(
    route: &Route,
    requests: usize,
    warmup: usize,
) -> Result<Vec<Duration>> {
    let mut conn = KeepAlive::open(route).await?;
    for _ in 0..warmup {
        let body = conn.get("/healthz").await?;
        ensure!(body.as_ref() == b"ok", "/healthz said {body:?}");
    }
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let body = conn.get("/healthz").await?;
        samples.push(started.elapsed());
        ensure!(body.as_ref() == b"ok", "/healthz said {body:?}");
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_check_accepts_the_pattern_at_any_offset_and_finds_a_bad_byte() {
        let body: Vec<u8> = (0..300_000u64)
            .map(kt_lab_tests::echo_bytes_pattern)
            .collect();
        check_pattern(0, &body).unwrap();
        check_pattern(77, &body[77..100_077]).unwrap();
        let mut bad = body[1000..200_000].to_vec();
        bad[150_000] ^= 1;
        let err = check_pattern(1000, &bad).unwrap_err().to_string();
        assert!(err.contains("byte 151000 "), "{err}");
        assert!(check_pattern(1, &body[..10]).is_err());
    }

    #[test]
    fn proxy_routes_send_absolute_form_and_others_origin_form() {
        let proxy: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let http = Route::http_proxy(proxy, "10.0.0.1", 8080);
        assert_eq!(http.target("/healthz"), "http://10.0.0.1:8080/healthz");
        assert_eq!(http.host_header(), "10.0.0.1:8080");
        let web = Route::http_proxy(proxy, "echo.ns", 80);
        assert_eq!(web.target("/healthz"), "http://echo.ns/healthz");
        let socks = Route::socks5(proxy, "10.0.0.1", 8080);
        assert_eq!(socks.target("/healthz"), "/healthz");
    }
}
