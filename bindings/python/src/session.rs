//! The native session: connect, the session's addresses, forwards, lookups and close,
//! each as a blocking call (GIL released) and as an awaitable (`*_async`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use std::net::SocketAddr;

use kt_core::{DatagramChannel, Session};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::task::{JoinError, JoinHandle};

use crate::error::{Failure, Outcome};
use crate::events::{NativeEvents, address, wait_limit};
use crate::inbound::{
    NativeExpose, NativeMesh, NativeSwap, expose_options, expose_work, mesh_options, mesh_work,
    port_maps, swap_options, swap_work,
};
use crate::options::{ConnectOptions, port};
use crate::runtime::{awaitable, block_on, spawn_cleanup, to_py};

/// A connect running on its own task. If the caller stops waiting (Ctrl-C, a
/// cancelled asyncio task), dropping this lets the connect finish and then closes the
/// session, so nothing it created stays in the cluster.
struct Connecting {
    task: Option<JoinHandle<kt_core::Result<Session>>>,
}

impl Future for Connecting {
    type Output = Result<kt_core::Result<Session>, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(Ok(Err(kt_core::Error::Closed)));
        };
        match Pin::new(task).poll(cx) {
            Poll::Ready(done) => {
                self.task = None;
                Poll::Ready(done)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        spawn_cleanup(async move {
            if let Ok(Ok(session)) = task.await
                && let Err(e) = session.close().await
            {
                tracing_warn(&format!("closing an abandoned connect: {e}"));
            }
        });
    }
}

/// Errors nobody is left to receive go to stderr, as Python's own warnings do.
fn tracing_warn(text: &str) {
    eprintln!("ktconnect: {text}");
}

/// Opens a session; safe to abandon at any point (see [`Connecting`]).
async fn connect_work(opts: kt_core::ConnectOptions) -> Outcome<Session> {
    let connecting = Connecting {
        task: Some(tokio::spawn(Session::connect(opts))),
    };
    match connecting.await {
        Ok(result) => result.map_err(Failure::from),
        Err(e) if e.is_panic() => Err(Failure::Internal("the connect task panicked".to_owned())),
        Err(_) => Err(Failure::Internal(
            "the connect task was cancelled".to_owned(),
        )),
    }
}

fn new_session(py: Python<'_>, session: Session) -> PyResult<Py<PyAny>> {
    to_py(py, NativeSession::new(session))
}

/// Opens a session (blocking; the GIL is released while it connects).
#[pyfunction]
pub(crate) fn connect(py: Python<'_>, options: &ConnectOptions) -> PyResult<NativeSession> {
    let session = NativeSession::new(block_on(py, connect_work(options.build()))?);
    // A Ctrl-C that came while the connect was finishing still interrupts it: without
    // this check Python might see it only after the caller's next statements (or never,
    // at exit). The session is dropped, so it is closed in the background, and
    // interpreter exit waits for that.
    py.check_signals()?;
    Ok(session)
}

/// Opens a session: an awaitable on the running event loop.
#[pyfunction]
pub(crate) fn connect_async<'py>(
    py: Python<'py>,
    options: &ConnectOptions,
) -> PyResult<Bound<'py, PyAny>> {
    awaitable(py, connect_work(options.build()), new_session)
}

/// An open session. Python's `ktconnect.Session` wraps it.
#[pyclass(frozen, module = "ktconnect._native")]
pub(crate) struct NativeSession {
    inner: Arc<Session>,
    /// `close` was called (it may still be running).
    closed: AtomicBool,
}

impl NativeSession {
    fn new(session: Session) -> Self {
        NativeSession {
            inner: Arc::new(session),
            closed: AtomicBool::new(false),
        }
    }

    fn session(&self) -> Arc<Session> {
        Arc::clone(&self.inner)
    }
}

impl Drop for NativeSession {
    /// A session garbage-collected without `close()` is closed on the runtime in the
    /// background (kt-core's own drop could not reach a runtime from here).
    fn drop(&mut self) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let session = Arc::clone(&self.inner);
        spawn_cleanup(async move {
            if let Err(e) = session.close().await {
                tracing_warn(&format!("closing a session that was not closed: {e}"));
            }
        });
    }
}

async fn resolve_work(session: Arc<Session>, name: String) -> Outcome<Vec<String>> {
    let ips = session.resolve(&name).await?;
    Ok(ips.iter().map(ToString::to_string).collect())
}

async fn forward_work(
    session: Arc<Session>,
    target: String,
    port: u16,
    udp: bool,
) -> Outcome<(String, u16)> {
    let addr = if udp {
        session.forward_udp(&target, port).await?
    } else {
        session.forward(&target, port).await?
    };
    Ok(address(addr))
}

async fn udp_channel_work(
    session: Arc<Session>,
    target: String,
    port: u16,
) -> Outcome<NativeDatagramChannel> {
    let channel = session.udp_channel(&target, port).await?;
    Ok(NativeDatagramChannel::new(channel, target, port))
}

fn new_channel(py: Python<'_>, channel: NativeDatagramChannel) -> PyResult<Py<PyAny>> {
    to_py(py, channel)
}

/// Closes on a task of its own, counted as a clean-up, so a caller who stops waiting
/// (Ctrl-C) does not cut it short, and interpreter exit waits for it.
async fn close_work(session: Arc<Session>) -> Outcome<()> {
    let (done, result) = tokio::sync::oneshot::channel();
    spawn_cleanup(async move {
        let _ = done.send(session.close().await);
    });
    match result.await {
        Ok(closed) => closed.map_err(Failure::from),
        Err(_) => Err(Failure::Internal("the close task panicked".to_owned())),
    }
}

#[pymethods]
impl NativeSession {
    /// The session id (the `kt.dev/session` label on its objects).
    #[getter]
    fn id(&self) -> &str {
        self.inner.id()
    }

    /// The namespace the session works in.
    #[getter]
    fn namespace(&self) -> &str {
        self.inner.namespace()
    }

    /// The shadow pod's name.
    #[getter]
    fn pod_name(&self) -> &str {
        self.inner.pod_name()
    }

    /// The local SOCKS5 proxy as `(host, port)`.
    #[getter]
    fn socks5_addr(&self) -> (String, u16) {
        address(self.inner.socks5_addr())
    }

    /// The local HTTP proxy as `(host, port)`.
    #[getter]
    fn http_proxy_addr(&self) -> (String, u16) {
        address(self.inner.http_proxy_addr())
    }

    /// The SOCKS5 proxy as a URL (`socks5h://`), with the credentials when the
    /// proxies require them.
    #[getter]
    fn socks5_url(&self) -> String {
        self.inner.socks5_url()
    }

    /// The HTTP proxy as a URL, with the credentials when the proxies require them.
    #[getter]
    fn http_proxy_url(&self) -> String {
        self.inner.http_proxy_url()
    }

    /// The cluster DNS server the session queries.
    #[getter]
    fn dns_server(&self) -> &str {
        self.inner.dns_server()
    }

    /// VPN mode's local DNS server as `(host, port)`, `None` in proxy mode.
    #[getter]
    fn dns_addr(&self) -> Option<(String, u16)> {
        self.inner.dns_addr().map(address)
    }

    /// VPN mode's device, routes and DNS as a dict, `None` in proxy mode.
    #[getter]
    fn vpn<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(info) = self.inner.vpn() else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("device", &info.device)?;
        let routes: Vec<String> = info.routes.iter().map(ToString::to_string).collect();
        d.set_item("routes", routes)?;
        d.set_item("dns_addr", info.dns_addr.map(address))?;
        d.set_item("dns_mode", info.dns_mode.to_string())?;
        d.set_item("dns_detail", &info.dns_detail)?;
        Ok(Some(d))
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Environment variables that send a child process's traffic through the session.
    fn env(&self) -> BTreeMap<String, String> {
        self.inner.env()
    }

    /// The session's events.
    fn events(&self) -> NativeEvents {
        NativeEvents::new(self.inner.events())
    }

    /// The addresses of `name` in the cluster (blocking).
    fn resolve(&self, py: Python<'_>, name: String) -> PyResult<Vec<String>> {
        block_on(py, resolve_work(self.session(), name))
    }

    /// The addresses of `name` in the cluster (awaitable).
    fn resolve_async<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, resolve_work(self.session(), name), to_py)
    }

    /// A local TCP port forwarded to `target`'s `port` (blocking).
    fn forward(&self, py: Python<'_>, target: String, port: i64) -> PyResult<(String, u16)> {
        let port = self::port("port", port, false)?;
        block_on(py, forward_work(self.session(), target, port, false))
    }

    /// A local TCP port forwarded to `target`'s `port` (awaitable).
    fn forward_async<'py>(
        &self,
        py: Python<'py>,
        target: String,
        port: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let port = self::port("port", port, false)?;
        awaitable(py, forward_work(self.session(), target, port, false), to_py)
    }

    /// A local UDP port relayed to `target`'s UDP `port` (blocking).
    fn forward_udp(&self, py: Python<'_>, target: String, port: i64) -> PyResult<(String, u16)> {
        let port = self::port("port", port, false)?;
        block_on(py, forward_work(self.session(), target, port, true))
    }

    /// A local UDP port relayed to `target`'s UDP `port` (awaitable).
    fn forward_udp_async<'py>(
        &self,
        py: Python<'py>,
        target: String,
        port: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let port = self::port("port", port, false)?;
        awaitable(py, forward_work(self.session(), target, port, true), to_py)
    }

    /// One UDP flow to `target`'s UDP `port`, without a local socket (blocking).
    fn udp_channel(
        &self,
        py: Python<'_>,
        target: String,
        port: i64,
    ) -> PyResult<NativeDatagramChannel> {
        let port = self::port("port", port, false)?;
        block_on(py, udp_channel_work(self.session(), target, port))
    }

    /// One UDP flow to `target`'s UDP `port`, without a local socket (awaitable).
    fn udp_channel_async<'py>(
        &self,
        py: Python<'py>,
        target: String,
        port: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let port = self::port("port", port, false)?;
        awaitable(
            py,
            udp_channel_work(self.session(), target, port),
            new_channel,
        )
    }

    /// Takes over `target`'s traffic (blocking): see `ktconnect.Session.swap`.
    #[pyo3(signature = (target, expose, *, mode="selector", check_local=true, restore_ttl=None, on_event=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keyword arguments, one per setting"
    )]
    fn swap(
        &self,
        py: Python<'_>,
        target: String,
        expose: &Bound<'_, PyAny>,
        mode: &str,
        check_local: bool,
        restore_ttl: Option<&Bound<'_, PyAny>>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<NativeSwap> {
        let ports = port_maps(expose)?;
        let opts = swap_options(mode, check_local, restore_ttl, on_event)?;
        let swap = block_on(py, swap_work(self.session(), target, ports, opts))?;
        py.check_signals()?;
        Ok(swap.into())
    }

    /// `swap` as an awaitable.
    #[pyo3(signature = (target, expose, *, mode="selector", check_local=true, restore_ttl=None, on_event=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keyword arguments, one per setting"
    )]
    fn swap_async<'py>(
        &self,
        py: Python<'py>,
        target: String,
        expose: &Bound<'_, PyAny>,
        mode: &str,
        check_local: bool,
        restore_ttl: Option<&Bound<'_, PyAny>>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ports = port_maps(expose)?;
        let opts = swap_options(mode, check_local, restore_ttl, on_event)?;
        awaitable(
            py,
            swap_work(self.session(), target, ports, opts),
            |py, h| to_py(py, NativeSwap::from(h)),
        )
    }

    /// Publishes local ports as a new Service `name` (blocking): see
    /// `ktconnect.Session.expose`.
    #[pyo3(signature = (name, expose, *, service_type="ClusterIP", check_local=true, on_event=None))]
    fn expose(
        &self,
        py: Python<'_>,
        name: String,
        expose: &Bound<'_, PyAny>,
        service_type: &str,
        check_local: bool,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<NativeExpose> {
        let ports = port_maps(expose)?;
        let opts = expose_options(service_type, check_local, on_event)?;
        let made = block_on(py, expose_work(self.session(), name, ports, opts))?;
        py.check_signals()?;
        Ok(made.into())
    }

    /// `expose` as an awaitable.
    #[pyo3(signature = (name, expose, *, service_type="ClusterIP", check_local=true, on_event=None))]
    fn expose_async<'py>(
        &self,
        py: Python<'py>,
        name: String,
        expose: &Bound<'_, PyAny>,
        service_type: &str,
        check_local: bool,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ports = port_maps(expose)?;
        let opts = expose_options(service_type, check_local, on_event)?;
        awaitable(
            py,
            expose_work(self.session(), name, ports, opts),
            |py, h| to_py(py, NativeExpose::from(h)),
        )
    }

    /// Meshes `target` (blocking): see `ktconnect.Session.mesh`.
    #[pyo3(signature = (target, expose, *, rule=None, check_local=true, restore_ttl=None, on_event=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keyword arguments, one per setting"
    )]
    fn mesh(
        &self,
        py: Python<'_>,
        target: String,
        expose: &Bound<'_, PyAny>,
        rule: Option<&str>,
        check_local: bool,
        restore_ttl: Option<&Bound<'_, PyAny>>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<NativeMesh> {
        let ports = port_maps(expose)?;
        let (rule, opts) = mesh_options(rule, check_local, restore_ttl, on_event)?;
        let made = block_on(py, mesh_work(self.session(), target, rule, ports, opts))?;
        py.check_signals()?;
        Ok(made.into())
    }

    /// `mesh` as an awaitable.
    #[pyo3(signature = (target, expose, *, rule=None, check_local=true, restore_ttl=None, on_event=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keyword arguments, one per setting"
    )]
    fn mesh_async<'py>(
        &self,
        py: Python<'py>,
        target: String,
        expose: &Bound<'_, PyAny>,
        rule: Option<&str>,
        check_local: bool,
        restore_ttl: Option<&Bound<'_, PyAny>>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ports = port_maps(expose)?;
        let (rule, opts) = mesh_options(rule, check_local, restore_ttl, on_event)?;
        let work = mesh_work(self.session(), target, rule, ports, opts);
        awaitable(py, work, |py, h| to_py(py, NativeMesh::from(h)))
    }

    /// Removes everything the session created (blocking); again does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.closed.store(true, Ordering::SeqCst);
        block_on(py, close_work(self.session()))
    }

    /// Removes everything the session created (awaitable); again does nothing.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.closed.store(true, Ordering::SeqCst);
        awaitable(py, close_work(self.session()), to_py)
    }

    fn __repr__(&self) -> String {
        format!(
            "NativeSession(id={:?}, namespace={:?}, pod={:?})",
            self.inner.id(),
            self.inner.namespace(),
            self.inner.pod_name()
        )
    }
}

/// Why a channel's wait ended early.
const CHANNEL_CLOSED: &str = "closed locally";

/// One UDP flow through the session (kt-core's `DatagramChannel`). Python's
/// `ktconnect.DatagramChannel` wraps it.
#[pyclass(frozen, module = "ktconnect._native")]
pub(crate) struct NativeDatagramChannel {
    /// `None` once closed: dropping kt-core's channel ends the flow.
    inner: std::sync::Mutex<Option<Arc<DatagramChannel>>>,
    /// Set by `close`, so a `recv` waiting on another thread returns.
    closing: tokio::sync::watch::Sender<bool>,
    target: String,
    port: u16,
    peer: SocketAddr,
}

impl NativeDatagramChannel {
    fn new(channel: DatagramChannel, target: String, port: u16) -> Self {
        NativeDatagramChannel {
            peer: channel.peer_addr(),
            inner: std::sync::Mutex::new(Some(Arc::new(channel))),
            closing: tokio::sync::watch::channel(false).0,
            target,
            port,
        }
    }

    /// The error of a channel closed by `close`: kt-core's own for an ended flow.
    fn closed_error(target: &str, port: u16) -> Failure {
        Failure::Kt(kt_core::Error::FlowClosed {
            target: target.to_owned(),
            port,
            reason: CHANNEL_CLOSED.to_owned(),
        })
    }

    /// The channel and a receiver that fires on `close`, or the error of a closed one.
    fn open(&self) -> PyResult<(Arc<DatagramChannel>, tokio::sync::watch::Receiver<bool>)> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match inner.as_ref() {
            Some(channel) => Ok((Arc::clone(channel), self.closing.subscribe())),
            None => Err(Self::closed_error(&self.target, self.port).into()),
        }
    }

    fn send_work(
        &self,
        datagram: Vec<u8>,
    ) -> PyResult<impl Future<Output = Outcome<()>> + Send + 'static> {
        let (channel, mut closing) = self.open()?;
        let (target, port) = (self.target.clone(), self.port);
        Ok(async move {
            tokio::select! {
                sent = channel.send(&datagram) => sent.map_err(Failure::from),
                _ = closing.wait_for(|c| *c) => Err(Self::closed_error(&target, port)),
            }
        })
    }

    fn recv_work(
        &self,
        timeout: Option<f64>,
    ) -> PyResult<impl Future<Output = Outcome<Vec<u8>>> + Send + 'static> {
        let limit = wait_limit(timeout)?;
        let (channel, mut closing) = self.open()?;
        let (target, port) = (self.target.clone(), self.port);
        Ok(async move {
            let receive = async {
                tokio::select! {
                    got = channel.recv() => got.map(|d| d.to_vec()).map_err(Failure::from),
                    _ = closing.wait_for(|c| *c) => Err(Self::closed_error(&target, port)),
                }
            };
            match limit {
                None => receive.await,
                Some(d) => tokio::time::timeout(d, receive).await.unwrap_or_else(|_| {
                    Err(Failure::Timeout(format!(
                        "no datagram from {target} port {port} within {} s",
                        d.as_secs_f64()
                    )))
                }),
            }
        })
    }
}

fn bytes_to_py(py: Python<'_>, datagram: Vec<u8>) -> PyResult<Py<PyAny>> {
    Ok(PyBytes::new(py, &datagram).into_any().unbind())
}

#[pymethods]
impl NativeDatagramChannel {
    /// The target as given.
    #[getter]
    fn target(&self) -> &str {
        &self.target
    }

    /// The UDP port.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// The address the shadow sends to, `(host, port)`.
    #[getter]
    fn peer_addr(&self) -> (String, u16) {
        address(self.peer)
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        *self.closing.borrow()
    }

    /// Sends one datagram (blocking).
    fn send(&self, py: Python<'_>, datagram: Cow<'_, [u8]>) -> PyResult<()> {
        let work = self.send_work(datagram.into_owned())?;
        block_on(py, work)
    }

    /// Sends one datagram (awaitable).
    fn send_async<'py>(
        &self,
        py: Python<'py>,
        datagram: Cow<'_, [u8]>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let work = self.send_work(datagram.into_owned())?;
        awaitable(py, work, to_py)
    }

    /// The next datagram from the target (blocking), waiting at most `timeout` seconds.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let work = self.recv_work(timeout)?;
        let datagram = block_on(py, work)?;
        bytes_to_py(py, datagram)
    }

    /// The next datagram from the target (awaitable).
    #[pyo3(signature = (timeout=None))]
    fn recv_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let work = self.recv_work(timeout)?;
        awaitable(py, work, bytes_to_py)
    }

    /// Ends the flow; calls waiting on other threads return. Again does nothing.
    fn close(&self) {
        self.closing.send_replace(true);
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    fn __repr__(&self) -> String {
        format!(
            "NativeDatagramChannel(target={:?}, port={}, peer={})",
            self.target, self.port, self.peer
        )
    }
}

/// Undoes the system DNS changes left by kt processes that are no longer running
/// (blocking file work, GIL released); one line per change undone.
#[pyfunction]
pub(crate) fn recover_system_dns(py: Python<'_>) -> PyResult<Vec<String>> {
    py.detach(|| kt_core::recover_system_dns(&kt_core::SystemPaths::system()))
        .map_err(|e| Failure::Kt(e).into())
}
