//! The inbound operations: a session's `swap`, `expose` and `mesh` (each a handle with
//! its own events and `close`), and the module functions `clean` and `recover`, each
//! as a blocking call (GIL released) and as an awaitable (`*_async`).
//!
//! A handle garbage-collected without `close()` is closed on the runtime in the
//! background, as a session is; interpreter exit waits for that (the package also
//! closes open handles at exit, before sessions).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kt_core::{
    Events, Expose, ExposeOptions, Mesh, MeshOptions, MeshRule, PortMap, ServiceType, Swap,
    SwapMode, SwapOptions,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::error::{Failure, Outcome, option_error};
use crate::events::{NativeEvents, event_to_py};
use crate::options::{ConnectOptions, duration};
use crate::runtime::{awaitable, block_on, spawn_cleanup, to_py};

/// The ports of `expose=`: a str (`"8080:80,9090"`) or a list of such strs, parsed by
/// kt-core (`PortMap::parse_list`).
pub(crate) fn port_maps(value: &Bound<'_, PyAny>) -> PyResult<Vec<PortMap>> {
    let texts: Vec<String> = if let Ok(s) = value.cast::<PyString>() {
        vec![s.extract::<String>()?]
    } else if value.is_instance_of::<pyo3::types::PyList>()
        || value.is_instance_of::<pyo3::types::PyTuple>()
    {
        let mut texts = Vec::new();
        for item in value.try_iter()? {
            let item = item?;
            let Ok(s) = item.cast::<PyString>() else {
                return Err(PyTypeError::new_err(format!(
                    "expose must be a str like \"8080:80\" or a list of them, and this list \
                     holds a {}",
                    type_name(&item)
                )));
            };
            texts.push(s.extract::<String>()?);
        }
        texts
    } else {
        return Err(PyTypeError::new_err(format!(
            "expose must be a str like \"8080:80,9090\" or a list of them, not {}",
            type_name(value)
        )));
    };
    PortMap::parse_list(texts.iter().map(String::as_str)).map_err(|e| option_error("expose", e))
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

/// An `on_event` callback as kt-core takes it: called with `(kind, message, fields)`;
/// an exception it raises is reported as unraisable (it cannot stop the operation).
fn callback(on_event: Py<PyAny>) -> PyResult<impl Fn(&kt_core::Event) + Send + Sync + 'static> {
    Python::attach(|py| {
        if on_event.bind(py).is_callable() {
            Ok(())
        } else {
            Err(PyTypeError::new_err(
                "on_event must be callable (it is called with each Event)",
            ))
        }
    })?;
    Ok(move |event: &kt_core::Event| {
        Python::attach(|py| {
            let called =
                event_to_py(py, event).and_then(|e| on_event.bind(py).call1((e,)).map(drop));
            if let Err(e) = called {
                e.write_unraisable(py, Some(on_event.bind(py)));
            }
        });
    })
}

/// `swap`'s arguments as kt-core's options.
pub(crate) fn swap_options(
    mode: &str,
    check_local: bool,
    restore_ttl: Option<&Bound<'_, PyAny>>,
    on_event: Option<Py<PyAny>>,
) -> PyResult<SwapOptions> {
    let mode: SwapMode = mode.parse().map_err(|e| option_error("mode", e))?;
    let mut opts = SwapOptions::new().mode(mode).check_local(check_local);
    if let Some(ttl) = duration("restore_ttl", restore_ttl)? {
        opts = opts.restore_ttl(ttl);
    }
    if let Some(cb) = on_event {
        opts = opts.on_event(callback(cb)?);
    }
    Ok(opts)
}

/// `mesh`'s arguments as kt-core's rule and options (`rule=None`: kt-connect's mark,
/// header `version` with a random value).
pub(crate) fn mesh_options(
    rule: Option<&str>,
    check_local: bool,
    restore_ttl: Option<&Bound<'_, PyAny>>,
    on_event: Option<Py<PyAny>>,
) -> PyResult<(Option<MeshRule>, MeshOptions)> {
    let rule = rule
        .map(str::parse::<MeshRule>)
        .transpose()
        .map_err(|e| option_error("rule", e))?;
    let mut opts = MeshOptions::new().check_local(check_local);
    if let Some(ttl) = duration("restore_ttl", restore_ttl)? {
        opts = opts.restore_ttl(ttl);
    }
    if let Some(cb) = on_event {
        opts = opts.on_event(callback(cb)?);
    }
    Ok((rule, opts))
}

/// `expose`'s arguments as kt-core's options.
pub(crate) fn expose_options(
    service_type: &str,
    check_local: bool,
    on_event: Option<Py<PyAny>>,
) -> PyResult<ExposeOptions> {
    let service_type: ServiceType = service_type
        .parse()
        .map_err(|e| option_error("service_type", e))?;
    let mut opts = ExposeOptions::new()
        .service_type(service_type)
        .check_local(check_local);
    if let Some(cb) = on_event {
        opts = opts.on_event(callback(cb)?);
    }
    Ok(opts)
}

/// What a Python handle holds of a swap, an expose or a mesh.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// `swap`, `expose`, `mesh`: for messages.
    const WHAT: &'static str;
    fn events(&self) -> Events;
    fn close(&self) -> impl Future<Output = kt_core::Result<()>> + Send;
}

/// Implements `Inbound` for kt-core's `$kind` by its own methods of the same names.
macro_rules! inbound {
    ($kind:ident, $what:literal) => {
        impl Inbound for $kind {
            const WHAT: &'static str = $what;
            fn events(&self) -> Events {
                $kind::events(self)
            }
            fn close(&self) -> impl Future<Output = kt_core::Result<()>> + Send {
                $kind::close(self)
            }
        }
    };
}

inbound!(Swap, "swap");
inbound!(Expose, "expose");
inbound!(Mesh, "mesh");

/// Makes a swap, an expose or a mesh with `start`, on a task of its own: a caller who
/// stops waiting (Ctrl-C, a cancelled asyncio task) does not cut it short halfway; one
/// that finishes after that is closed.
pub(crate) async fn start_work<T: Inbound>(
    start: impl Future<Output = kt_core::Result<T>> + Send + 'static,
) -> Outcome<Held<T>> {
    let (done, result) = tokio::sync::oneshot::channel();
    spawn_cleanup(async move {
        let made = start.await;
        if let Err(Ok(handle)) = done.send(made) {
            let _ = handle.close().await;
        }
    });
    match result.await {
        Ok(made) => Ok(Held::new(made?)),
        Err(_) => Err(Failure::Internal(format!("the {} task panicked", T::WHAT))),
    }
}

pub(crate) fn swap_work(
    session: Arc<kt_core::Session>,
    target: String,
    ports: Vec<PortMap>,
    opts: SwapOptions,
) -> impl Future<Output = Outcome<Held<Swap>>> + Send + 'static {
    start_work(async move { session.swap_with(&target, &ports, opts).await })
}

pub(crate) fn expose_work(
    session: Arc<kt_core::Session>,
    name: String,
    ports: Vec<PortMap>,
    opts: ExposeOptions,
) -> impl Future<Output = Outcome<Held<Expose>>> + Send + 'static {
    start_work(async move { session.expose_with(&name, &ports, opts).await })
}

pub(crate) fn mesh_work(
    session: Arc<kt_core::Session>,
    target: String,
    rule: Option<MeshRule>,
    ports: Vec<PortMap>,
    opts: MeshOptions,
) -> impl Future<Output = Outcome<Held<Mesh>>> + Send + 'static {
    start_work(async move { session.mesh_with(&target, rule, &ports, opts).await })
}

/// A swap, an expose or a mesh as a Python handle holds it: closed in the background
/// when dropped without `close()`.
pub(crate) struct Held<T: Inbound> {
    inner: Arc<T>,
    closed: AtomicBool,
}

impl<T: Inbound> Held<T> {
    fn new(handle: T) -> Self {
        Held {
            inner: Arc::new(handle),
            closed: AtomicBool::new(false),
        }
    }

    fn close_work(&self) -> impl Future<Output = Outcome<()>> + Send + 'static {
        self.closed.store(true, Ordering::SeqCst);
        let handle = Arc::clone(&self.inner);
        close_handle(async move { handle.close().await })
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn events(&self) -> NativeEvents {
        NativeEvents::new(self.inner.events())
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.close_work())
    }

    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.close_work(), to_py)
    }
}

impl<T: Inbound> Drop for Held<T> {
    fn drop(&mut self) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let handle = Arc::clone(&self.inner);
        spawn_cleanup(async move {
            if let Err(e) = handle.close().await {
                warn(&format!("closing a {} that was not closed: {e}", T::WHAT));
            }
        });
    }
}

/// Closes on a task of its own, counted as a clean-up (see `session::close_work`).
async fn close_handle<F>(close: F) -> Outcome<()>
where
    F: Future<Output = kt_core::Result<()>> + Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    spawn_cleanup(async move {
        let _ = done.send(close.await);
    });
    match result.await {
        Ok(closed) => closed.map_err(Failure::from),
        Err(_) => Err(Failure::Internal("the close task panicked".to_owned())),
    }
}

fn warn(text: &str) {
    eprintln!("ktconnect: {text}");
}

/// Defines the Python class `$native` over a `Held<$kind>` with what every handle
/// has (`id`, `pod_name`, `ports`, `connections`, `closed`, `events()`, `close()`,
/// documented by `$close_doc`, and `close_async()`), then `$methods`.
macro_rules! native_handle {
    ($(#[doc = $doc:tt])* $native:ident($kind:ident), $close_doc:tt, { $($methods:tt)* }) => {
        $(#[doc = $doc])*
        #[pyclass(frozen, module = "ktconnect._native")]
        pub(crate) struct $native {
            held: Held<$kind>,
        }

        impl From<Held<$kind>> for $native {
            fn from(held: Held<$kind>) -> Self {
                $native { held }
            }
        }

        #[pymethods]
        impl $native {
            #[getter]
            fn id(&self) -> &str {
                self.held.inner.id()
            }

            #[getter]
            fn pod_name(&self) -> &str {
                self.held.inner.pod_name()
            }

            #[getter]
            fn ports(&self) -> Vec<(u16, u16)> {
                self.held.inner.ports()
            }

            #[getter]
            fn connections(&self) -> u64 {
                self.held.inner.connections()
            }

            #[getter]
            fn closed(&self) -> bool {
                self.held.closed()
            }

            fn events(&self) -> NativeEvents {
                self.held.events()
            }

            #[doc = $close_doc]
            fn close(&self, py: Python<'_>) -> PyResult<()> {
                self.held.close(py)
            }

            /// `close` as an awaitable.
            fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                self.held.close_async(py)
            }

            $($methods)*
        }
    };
}

native_handle! {
    /// A swap in progress (kt-core's `Swap`). Python's `ktconnect.Swap` wraps it.
    NativeSwap(Swap),
    "Puts the cluster back and removes the swap shadow (blocking); again does nothing.",
    {
        #[getter]
        fn target(&self) -> &str {
            self.held.inner.target()
        }

        #[getter]
        fn mode(&self) -> &'static str {
            self.held.inner.mode().as_str()
        }

        #[getter]
        fn services(&self) -> Vec<String> {
            self.held.inner.services().to_vec()
        }

        fn __repr__(&self) -> String {
            format!(
                "NativeSwap(id={:?}, target={:?}, mode={:?}, pod={:?})",
                self.held.inner.id(),
                self.held.inner.target(),
                self.held.inner.mode().as_str(),
                self.held.inner.pod_name()
            )
        }
    }
}

native_handle! {
    /// An exposed Service (kt-core's `Expose`). Python's `ktconnect.Expose` wraps it.
    NativeExpose(Expose),
    "Removes the Service and the expose shadow (blocking); again does nothing.",
    {
        #[getter]
        fn service(&self) -> &str {
            self.held.inner.service()
        }

        fn __repr__(&self) -> String {
            format!(
                "NativeExpose(id={:?}, service={:?}, pod={:?})",
                self.held.inner.id(),
                self.held.inner.service(),
                self.held.inner.pod_name()
            )
        }
    }
}

native_handle! {
    /// A developer's place in a meshed Service (kt-core's `Mesh`). Python's
    /// `ktconnect.Mesh` wraps it.
    NativeMesh(Mesh),
    "Removes this developer's rule and shadow; the last one's also puts the Service \
     back and removes the router (blocking); again does nothing.",
    {
        #[getter]
        fn service(&self) -> &str {
            self.held.inner.service()
        }

        #[getter]
        fn rule(&self) -> String {
            self.held.inner.rule().to_string()
        }

        /// `(name, value)` of the header to send, or None.
        #[getter]
        fn header(&self) -> Option<(&str, &str)> {
            self.held.inner.header()
        }

        #[getter]
        fn router(&self) -> &str {
            self.held.inner.router()
        }

        fn __repr__(&self) -> String {
            format!(
                "NativeMesh(id={:?}, service={:?}, rule={:?}, pod={:?})",
                self.held.inner.id(),
                self.held.inner.service(),
                self.held.inner.rule().to_string(),
                self.held.inner.pod_name()
            )
        }
    }
}

/// `(dry_run, actions, left)` of a clean or recover.
type Report = (bool, Vec<String>, Vec<String>);

fn report(r: kt_core::CleanReport) -> Report {
    (r.dry_run, r.actions, r.left)
}

async fn clean_work(opts: kt_core::ConnectOptions, dry_run: bool) -> Outcome<Report> {
    Ok(report(kt_core::clean(&opts, dry_run).await?))
}

async fn recover_work(
    opts: kt_core::ConnectOptions,
    target: String,
    dry_run: bool,
) -> Outcome<Report> {
    Ok(report(kt_core::recover(&opts, &target, dry_run).await?))
}

/// Restores and removes what dead kt sessions left in the namespace (blocking);
/// `(dry_run, actions, left)`.
#[pyfunction]
#[pyo3(signature = (options, dry_run=false))]
pub(crate) fn clean(py: Python<'_>, options: &ConnectOptions, dry_run: bool) -> PyResult<Report> {
    block_on(py, clean_work(options.build(), dry_run))
}

/// `clean` as an awaitable.
#[pyfunction]
#[pyo3(signature = (options, dry_run=false))]
pub(crate) fn clean_async<'py>(
    py: Python<'py>,
    options: &ConnectOptions,
    dry_run: bool,
) -> PyResult<Bound<'py, PyAny>> {
    awaitable(py, clean_work(options.build(), dry_run), to_py)
}

/// Puts back one target a dead kt session left changed (blocking);
/// `(dry_run, actions, left)`.
#[pyfunction]
#[pyo3(signature = (options, target, dry_run=false))]
pub(crate) fn recover(
    py: Python<'_>,
    options: &ConnectOptions,
    target: String,
    dry_run: bool,
) -> PyResult<Report> {
    block_on(py, recover_work(options.build(), target, dry_run))
}

/// `recover` as an awaitable.
#[pyfunction]
#[pyo3(signature = (options, target, dry_run=false))]
pub(crate) fn recover_async<'py>(
    py: Python<'py>,
    options: &ConnectOptions,
    target: String,
    dry_run: bool,
) -> PyResult<Bound<'py, PyAny>> {
    awaitable(py, recover_work(options.build(), target, dry_run), to_py)
}
