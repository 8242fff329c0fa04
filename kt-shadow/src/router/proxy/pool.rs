//! Upstream connections, kept per backend: HTTP/1.1 keep-alive connections, reused one
//! exchange at a time, and one multiplexed HTTP/2 connection (prior knowledge).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use super::Connector;

/// Idle HTTP/1.1 connections kept per backend; more are closed when they finish.
const MAX_IDLE_PER_BACKEND: usize = 64;

/// Why a backend did not answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection could be made.
    Connect(std::io::Error),
    /// The connection was made but the HTTP handshake failed.
    Handshake(hyper::Error),
    /// The request failed on an established connection.
    Request(hyper::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Handshake(e) => write!(f, "HTTP handshake failed: {e}"),
            Failure::Request(e) => {
                write!(f, "request failed: {e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct Conns {
    /// Sent-on HTTP/1.1 connections and when they were last handed out; a connection
    /// is taken again once `is_ready` (its exchange is over).
    h1: Vec<(http1::SendRequest<Incoming>, Instant)>,
    /// The HTTP/2 connection and when it was last used.
    h2: Option<(http2::SendRequest<Incoming>, Instant)>,
}

/// The upstream connections of one proxy.
pub(crate) struct Pool {
    conns: Mutex<HashMap<SocketAddr, Conns>>,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(idle_timeout: Duration, connect_timeout: Duration) -> Self {
        Pool {
            conns: Mutex::new(HashMap::new()),
            idle_timeout,
            connect_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Conns>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a byte stream to `addr` within the connect timeout.
    pub(crate) async fn connect(
        &self,
        connector: &dyn Connector,
        addr: SocketAddr,
    ) -> Result<Box<dyn super::Stream>, Failure> {
        match tokio::time::timeout(self.connect_timeout, connector.connect(addr)).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(e)) => Err(Failure::Connect(e)),
            Err(_) => Err(Failure::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {:?}", self.connect_timeout),
            ))),
        }
    }

    fn take_h1(&self, addr: SocketAddr) -> Option<http1::SendRequest<Incoming>> {
        let mut conns = self.lock();
        let entry = conns.get_mut(&addr)?;
        entry.h1.retain(|(s, _)| !s.is_closed());
        let i = entry.h1.iter().rposition(|(s, _)| s.is_ready())?;
        Some(entry.h1.swap_remove(i).0)
    }

    fn put_h1(&self, addr: SocketAddr, sender: http1::SendRequest<Incoming>) {
        let mut conns = self.lock();
        let entry = conns.entry(addr).or_default();
        if entry.h1.len() < MAX_IDLE_PER_BACKEND {
            entry.h1.push((sender, Instant::now()));
        }
    }

    async fn open_h1(
        &self,
        connector: &dyn Connector,
        addr: SocketAddr,
    ) -> Result<http1::SendRequest<Incoming>, Failure> {
        let io = self.connect(connector, addr).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(Failure::Handshake)?;
        // Ends when the pool drops the sender (idle) or either side closes.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(%addr, "upstream HTTP/1.1 connection ended: {e}");
            }
        });
        Ok(sender)
    }

    /// Sends an HTTP/1.1 request on a pooled connection (or a new one). A request that
    /// a pooled connection could not take (it closed meanwhile) is sent once more on a
    /// new connection; one that was sent is not repeated.
    pub(crate) async fn send_h1(
        &self,
        connector: &dyn Connector,
        addr: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, Failure> {
        loop {
            let (mut sender, fresh) = match self.take_h1(addr) {
                Some(sender) => (sender, false),
                None => (self.open_h1(connector, addr).await?, true),
            };
            // The request is handed to the connection now; the sender goes back at
            // once and is taken again when the connection is ready.
            let response = sender.try_send_request(req);
            self.put_h1(addr, sender);
            match response.await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(Failure::Request(e.into_error())),
                },
            }
        }
    }

    fn get_h2(&self, addr: SocketAddr) -> Option<http2::SendRequest<Incoming>> {
        let mut conns = self.lock();
        let entry = conns.get_mut(&addr)?;
        match &mut entry.h2 {
            Some((sender, used)) if !sender.is_closed() => {
                *used = Instant::now();
                Some(sender.clone())
            }
            _ => None,
        }
    }

    async fn open_h2(
        &self,
        connector: &dyn Connector,
        addr: SocketAddr,
    ) -> Result<http2::SendRequest<Incoming>, Failure> {
        let io = self.connect(connector, addr).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(Failure::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%addr, "upstream HTTP/2 connection ended: {e}");
            }
        });
        // Two requests racing to open: the last one's connection is kept, the other
        // closes when its requests are done.
        self.lock().entry(addr).or_default().h2 = Some((sender.clone(), Instant::now()));
        Ok(sender)
    }

    /// Sends an HTTP/2 request on the backend's connection (made on first use).
    pub(crate) async fn send_h2(
        &self,
        connector: &dyn Connector,
        addr: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, Failure> {
        loop {
            let (mut sender, fresh) = match self.get_h2(addr) {
                Some(sender) => (sender, false),
                None => (self.open_h2(connector, addr).await?, true),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => {
                        self.forget_h2(addr);
                        req = unsent;
                    }
                    _ => return Err(Failure::Request(e.into_error())),
                },
            }
        }
    }

    fn forget_h2(&self, addr: SocketAddr) {
        if let Some(entry) = self.lock().get_mut(&addr) {
            entry.h2 = None;
        }
    }

    /// Closes connections idle for longer than the idle timeout (and forgets closed
    /// ones): dropping the last sender of an idle connection ends it.
    pub(crate) fn reap(&self) {
        let now = Instant::now();
        let old = |since: &Instant| now.duration_since(*since) > self.idle_timeout;
        let mut conns = self.lock();
        for entry in conns.values_mut() {
            entry
                .h1
                .retain(|(s, since)| !(s.is_closed() || (s.is_ready() && old(since))));
            if entry
                .h2
                .as_ref()
                .is_some_and(|(s, since)| s.is_closed() || old(since))
            {
                entry.h2 = None;
            }
        }
        conns.retain(|_, e| !e.h1.is_empty() || e.h2.is_some());
    }

    /// Closes every idle connection (the proxy stops).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}
