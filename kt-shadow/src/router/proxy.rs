//! The mesh router's proxy: each HTTP request that arrives on a meshed Service's port
//! goes to the first developer whose [`Rule`] it matches, else to the origin (a
//! ClusterIP Service that keeps the original selector).
//!
//! # What it does with a connection
//!
//! The first bytes decide (nothing else is parsed by hand: hyper serves and sends
//! HTTP):
//!
//! - a TLS record (first byte 0x16, a ClientHello), or anything that is neither an
//!   HTTP/1.x request line nor the HTTP/2 preface, is spliced to the origin as bytes,
//!   **unrouted**: TLS is passed through by port, and only cleartext HTTP is routed. So
//!   is a connection on which the client sends nothing within the sniff timeout
//!   ([`Timeouts`], 1 s: a protocol in which the server speaks first). So a client
//!   that opens a connection ahead of time and sends its first request on it later
//!   than that is not routed on that connection;
//! - the HTTP/2 preface (h2c with prior knowledge, as gRPC clients use) makes an HTTP/2
//!   server: every stream is routed on its own;
//! - an HTTP/1.x request line makes an HTTP/1.1 server with keep-alive: every request
//!   on a kept-alive connection is routed on its own.
//!
//! # What it does with a request
//!
//! It matches the request's path and headers against the [`Table`] (the first route
//! whose rule matches wins; the table is read per request, so a change applies to the
//! next request, also on a connection already open), then forwards it to
//! `(route.addr, member_port)` or to the origin:
//!
//! - the Host header (HTTP/1.1) or `:authority` (HTTP/2), the request target and every
//!   end-to-end header reach the backend unchanged (header names lower-cased, as HTTP
//!   header names are case-insensitive); the hop-by-hop ones are removed (`Connection`
//!   and the headers it names, `Keep-Alive`, `Proxy-Connection`, `TE` except
//!   `trailers`, `Transfer-Encoding`, `Upgrade` unless upgrading), and the client's
//!   address is appended to `X-Forwarded-For` and as a `Forwarded: for=...;proto=http`
//!   element;
//! - HTTP/1.x requests go upstream over pooled HTTP/1.1 keep-alive connections; HTTP/2
//!   requests over one multiplexed HTTP/2 connection (prior knowledge) per backend, so
//!   gRPC is HTTP/2 end to end. Bodies and trailers stream both ways (gRPC status
//!   trailers; HTTP/1.1 chunked trailers as far as hyper passes them);
//! - `Upgrade` (WebSocket, or any protocol but h2c) on HTTP/1.1, and `CONNECT`: routed
//!   by the upgrade request's headers; when the backend agrees (101, or 2xx to
//!   CONNECT) the two upgraded connections are spliced both ways;
//! - `Upgrade: h2c` (HTTP/2 over the HTTP/1.1 upgrade path, RFC 7540 §3.2, removed
//!   from HTTP/2 by RFC 9113): a server may ignore an upgrade, and the router does: it
//!   drops `Upgrade` and `HTTP2-Settings` and answers over HTTP/1.1, so `curl --http2`
//!   gets its answer and every request is still routed on its own. (Taking the upgrade
//!   would make the router the HTTP/2 server of that connection for a request that
//!   came in HTTP/1.1, with nothing gained for routing.);
//! - a backend that cannot be reached (or fails the request before answering) gives
//!   `502 Bad Gateway` with a one-line text body naming it (`route <name>` or
//!   `origin`, its address) and why.
//!
//! Idle upstream connections are closed after the idle timeout (30 s); a connect gives
//! up after the connect timeout (10 s); see [`Timeouts`].
//!
//! # Dependencies
//!
//! - `hyper` (client and server, HTTP/1 and HTTP/2; `h2` comes with it): the HTTP
//!   implementations, so the router parses no HTTP itself;
//! - `hyper-util` (`tokio`): hyper's glue to tokio sockets, executor and timer only;
//! - `http-body-util`: the one body type that is either a backend's streamed body or
//!   the router's own short text (no boxing per request).

mod headers;
mod pool;
mod sniff;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kt_proto::mesh::{Clause, Rule};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use self::headers::ClientFields;
use self::pool::{Failure, Pool};
use self::sniff::{Rewind, Sniffed};

/// One developer's route: requests matching `rule` go to `addr` (their shadow pod) on
/// the proxy's member port.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's name in logs and 502 answers (the developer's shadow pod).
    pub name: String,
    /// Which requests it takes.
    pub rule: Rule,
    /// Where they go.
    pub addr: IpAddr,
}

/// The routes, in match order: the first route whose rule matches takes the request.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// The routes.
    pub routes: Vec<Route>,
}

impl Table {
    /// The route a request with this path and these headers takes, if any.
    pub fn route(&self, path: &str, headers: &hyper::HeaderMap) -> Option<&Route> {
        if self.routes.is_empty() {
            return None;
        }
        // Only the headers some rule names are collected, so a request without any
        // (most unmatched ones) allocates nothing here.
        let named = |name: &str| {
            self.routes.iter().any(|r| {
                r.rule.clauses().iter().any(|c| match c {
                    Clause::HeaderEquals { name: n, .. } | Clause::HeaderRegex { name: n, .. } => {
                        n == name
                    }
                    Clause::PathPrefix(_) => false,
                })
            })
        };
        let request = kt_proto::mesh::Request::new(
            path,
            (headers.iter())
                .filter(|(n, _)| named(n.as_str()))
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        self.routes.iter().find(|r| r.rule.matches(&request))
    }
}

/// A byte stream to a backend, as a [`Connector`] makes it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// The future of [`Connector::connect`].
pub type Connecting<'a> = Pin<Box<dyn Future<Output = io::Result<Box<dyn Stream>>> + Send + 'a>>;

/// Opens connections to backends. The proxy uses TCP ([`TcpConnector`]); tests and the
/// fuzz targets plug in in-memory backends.
pub trait Connector: Send + Sync + 'static {
    /// A connection to `addr`.
    fn connect(&self, addr: SocketAddr) -> Connecting<'_>;
}

/// TCP connections with `TCP_NODELAY` (request/response traffic must not wait for
/// Nagle's algorithm).
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, addr: SocketAddr) -> Connecting<'_> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Stream>)
        })
    }
}

/// How long the proxy waits for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a new connection may stay silent before it is taken for a protocol in
    /// which the server speaks first and spliced to the origin (default 1 s).
    pub sniff: Duration,
    /// How long an upstream connection is kept unused (default 30 s).
    pub idle: Duration,
    /// How long a connect to a backend may take (default 10 s).
    pub connect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            sniff: Duration::from_secs(1),
            idle: Duration::from_secs(30),
            connect: Duration::from_secs(10),
        }
    }
}

/// The body of a response to the client: the backend's, streamed, or the router's own.
type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Where a request goes.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Route(&'a Route),
    Origin,
}

/// The mesh router's proxy for one Service port. See the [module docs](self).
pub struct Proxy {
    origin: SocketAddr,
    member_port: u16,
    table: watch::Receiver<Arc<Table>>,
    connector: Arc<dyn Connector>,
    timeouts: Timeouts,
    pool: Pool,
    routed: AtomicU64,
    unrouted: AtomicU64,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("origin", &self.origin)
            .field("member_port", &self.member_port)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// `origin`: where unmatched requests (and non-HTTP / TLS connections) go; matched
    /// requests go to `(route.addr, member_port)`.
    pub fn new(
        origin: SocketAddr,
        member_port: u16,
        table: watch::Receiver<Arc<Table>>,
    ) -> Arc<Proxy> {
        Proxy::with_connector(
            origin,
            member_port,
            table,
            Arc::new(TcpConnector),
            Timeouts::default(),
        )
    }

    /// As [`Proxy::new`], with backends reached through `connector`, and `timeouts`.
    pub fn with_connector(
        origin: SocketAddr,
        member_port: u16,
        table: watch::Receiver<Arc<Table>>,
        connector: Arc<dyn Connector>,
        timeouts: Timeouts,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            origin,
            member_port,
            table,
            connector,
            timeouts,
            pool: Pool::new(timeouts.idle, timeouts.connect),
            routed: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
        })
    }

    /// How many requests went to routes / to the origin (for logs and tests).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.routed.load(Ordering::Relaxed),
            self.unrouted.load(Ordering::Relaxed),
        )
    }

    /// Accepts until `cancel`; each connection handled on its own task (which
    /// `cancel` also ends).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, cancel: CancellationToken) {
        let mut reap = tokio::time::interval(self.timeouts.idle / 2);
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = reap.tick() => self.pool.reap(),
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if let Err(e) = stream.set_nodelay(true) {
                            debug!(%peer, "TCP_NODELAY: {e}");
                        }
                        let proxy = Arc::clone(&self);
                        tokio::spawn(proxy.serve_connection(stream, peer, cancel.clone()));
                    }
                    Err(e) => {
                        // Out of descriptors or memory: wait rather than spin.
                        warn!("router: accept failed: {e}");
                        tokio::select! {
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                },
            }
        }
        self.pool.clear();
    }

    /// Serves one client connection (`peer` is the client's address) until it ends or
    /// `cancel`. Generic over the IO so it can be driven without sockets.
    pub async fn serve_connection<I>(
        self: Arc<Self>,
        io: I,
        peer: SocketAddr,
        cancel: CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = self.connection(io, peer, &cancel) => {}
        }
    }

    async fn connection<I>(self: Arc<Self>, mut io: I, peer: SocketAddr, cancel: &CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (kind, prefix) = match sniff::sniff(&mut io, self.timeouts.sniff).await {
            Ok(Some(sniffed)) => sniffed,
            Ok(None) => return,
            Err(e) => {
                debug!(%peer, "router: reading the first bytes: {e}");
                return;
            }
        };
        let io = Rewind::new(prefix, io);
        match kind {
            Sniffed::Tls | Sniffed::Other => self.splice(io, peer, kind).await,
            Sniffed::H2 => {
                let conn = Arc::new(Conn::new(peer, Version::HTTP_2, cancel.clone()));
                let proxy = Arc::clone(&self);
                let service = service_fn(move |req| {
                    let proxy = Arc::clone(&proxy);
                    let conn = Arc::clone(&conn);
                    async move { Ok::<_, Infallible>(proxy.forward(&conn, req).await) }
                });
                let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(io), service)
                    .await;
                if let Err(e) = served {
                    debug!(%peer, "router: HTTP/2 connection ended: {e}");
                }
            }
            Sniffed::Http1 => {
                let conn = Arc::new(Conn::new(peer, Version::HTTP_11, cancel.clone()));
                let proxy = Arc::clone(&self);
                let service = service_fn(move |req| {
                    let proxy = Arc::clone(&proxy);
                    let conn = Arc::clone(&conn);
                    async move { Ok::<_, Infallible>(proxy.forward(&conn, req).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    // The backend's Date (or none) passes unchanged.
                    .auto_date_header(false)
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades()
                    .await;
                if let Err(e) = served {
                    debug!(%peer, "router: HTTP/1.1 connection ended: {e}");
                }
            }
        }
    }

    /// Splices a connection that is not cleartext HTTP to the origin, bytes unchanged.
    async fn splice<I>(&self, mut io: Rewind<I>, peer: SocketAddr, kind: Sniffed)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut upstream = match self.pool.connect(&*self.connector, self.origin).await {
            Ok(upstream) => upstream,
            Err(e) => {
                warn!(%peer, origin = %self.origin, "router: {kind:?} connection not passed to the origin: {e}");
                return;
            }
        };
        match tokio::io::copy_bidirectional(&mut io, &mut upstream).await {
            Ok((up, down)) => {
                debug!(%peer, ?kind, up, down, "router: passed through to the origin")
            }
            Err(e) => debug!(%peer, ?kind, "router: pass-through ended: {e}"),
        }
        let _ = upstream.shutdown().await;
    }

    /// Routes and forwards one request; answers 502 if the backend cannot be reached.
    async fn forward(&self, conn: &Conn, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let h2 = conn.version == Version::HTTP_2;
        let connect = req.method() == Method::CONNECT;
        if h2 && connect {
            // Tunnels over HTTP/2 streams (RFC 9113 §8.5, RFC 8441) are not routed.
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "kt-shadow router: CONNECT over HTTP/2 is not supported; use HTTP/1.1\n".to_owned(),
            );
        }
        let table = Arc::clone(&self.table.borrow());
        let backend = match table.route(req.uri().path(), req.headers()) {
            Some(route) => {
                self.routed.fetch_add(1, Ordering::Relaxed);
                Backend::Route(route)
            }
            None => {
                self.unrouted.fetch_add(1, Ordering::Relaxed);
                Backend::Origin
            }
        };
        let addr = match backend {
            Backend::Route(route) => SocketAddr::new(route.addr, self.member_port),
            Backend::Origin => self.origin,
        };

        let upgrade = !h2 && (connect || headers::wants_upgrade(req.headers()));
        headers::strip_hop_by_hop(req.headers_mut(), upgrade && !connect);
        conn.client.append_to(req.headers_mut());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let sent = if h2 {
            self.pool.send_h2(&*self.connector, addr, req).await
        } else {
            *req.version_mut() = Version::HTTP_11;
            self.pool.send_h1(&*self.connector, addr, req).await
        };
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(failure) => return bad_gateway(backend, addr, &failure),
        };

        // The backend agreed: 101 to an Upgrade, 2xx to a CONNECT.
        let switched = if connect {
            resp.status().is_success()
        } else {
            resp.status() == StatusCode::SWITCHING_PROTOCOLS
        };
        match client_upgrade {
            Some(client_upgrade) if switched => {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                let cancel = conn.cancel.clone();
                let peer = conn.peer;
                tokio::spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = splice_upgraded(client_upgrade, upstream_upgrade, peer, addr) => {}
                    }
                });
                headers::strip_hop_by_hop(resp.headers_mut(), !connect);
            }
            _ => headers::strip_hop_by_hop(resp.headers_mut(), false),
        }
        resp.map(Either::Left)
    }
}

/// What the proxy knows of one client connection.
struct Conn {
    peer: SocketAddr,
    version: Version,
    client: ClientFields,
    cancel: CancellationToken,
}

impl Conn {
    fn new(peer: SocketAddr, version: Version, cancel: CancellationToken) -> Self {
        Conn {
            peer,
            version,
            client: ClientFields::new(peer),
            cancel,
        }
    }
}

/// Splices the client's and the backend's upgraded connections both ways.
async fn splice_upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    peer: SocketAddr,
    addr: SocketAddr,
) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (c, u) => {
            debug!(%peer, %addr, client = ?c.err(), upstream = ?u.err(), "router: upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => debug!(%peer, %addr, up, down, "router: upgraded connection done"),
        Err(e) => debug!(%peer, %addr, "router: upgraded connection ended: {e}"),
    }
}

/// `502 Bad Gateway`, saying which backend and why.
fn bad_gateway(backend: Backend<'_>, addr: SocketAddr, failure: &Failure) -> Response<ProxyBody> {
    let who = match backend {
        Backend::Route(route) => format!("route `{}`", route.name),
        Backend::Origin => "origin".to_owned(),
    };
    warn!(backend = %who, %addr, "router: 502: {failure}");
    text(
        StatusCode::BAD_GATEWAY,
        format!("kt-shadow router: {who} ({addr}) did not answer: {failure}\n"),
    )
}

/// A response of the router's own: `status` and a short text.
fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
