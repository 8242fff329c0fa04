//! The binding's tokio runtime and the two ways Python waits for work on it.
//!
//! One multi-threaded runtime per process, made on first use, runs every session's
//! tasks. Runtime threads take the GIL only for short calls (handing a result to an
//! event loop, `on_event` callbacks), and no Python thread waits on the runtime while
//! holding the GIL, so neither side can block the other:
//!
//! - [`block_on`] (the blocking API) spawns the work, then waits for it with the GIL
//!   released, waking every 100 ms to let Python deliver signals: Ctrl-C raises
//!   `KeyboardInterrupt` in the caller and aborts the work.
//! - [`awaitable`] (the asyncio API) spawns the work and returns an `asyncio.Future` of
//!   the running loop; the result is handed over with `loop.call_soon_threadsafe`.
//!   Cancelling the future aborts the work.
//!
//! Work must therefore be safe to drop at any await point; `session::connect` is made
//! so (a connect cut short closes the session it was making).
//!
//! A process forked from one whose runtime runs has none of its threads: there every
//! call raises (instead of hanging) and says to use the `spawn` start method.

use std::future::Future;
use std::sync::{LazyLock, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use pyo3::IntoPyObjectExt as _;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use tokio::task::{AbortHandle, JoinError};

use crate::error::{Failure, Outcome};

/// How often a blocking wait lets Python check for signals.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// How long an interrupted blocking call waits for its aborted task to end.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// The runtime and the process that made it.
static RUNTIME: OnceLock<Result<(Runtime, u32), String>> = OnceLock::new();

/// The runtime, made on first use.
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    let made = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ktconnect")
            .enable_all()
            .build()
            .map(|rt| (rt, std::process::id()))
            .map_err(|e| e.to_string())
    });
    match made {
        Ok((rt, pid)) if *pid == std::process::id() => Ok(rt),
        Ok(_) => Err(PyRuntimeError::new_err(
            "ktconnect cannot be used in a process forked from one that already used it \
             (its threads are not in the child); start worker processes with \
             multiprocessing's \"spawn\" or \"forkserver\" method, or use ktconnect only \
             after forking",
        )),
        Err(e) => Err(PyRuntimeError::new_err(format!(
            "cannot start ktconnect's runtime: {e}"
        ))),
    }
}

fn join_failure(e: JoinError) -> Failure {
    if e.is_panic() {
        let payload = e.into_panic();
        let text = payload
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a task panicked".to_owned());
        Failure::Internal(text)
    } else {
        Failure::Internal("the task was cancelled".to_owned())
    }
}

/// How many clean-ups (closing a session nobody holds any more) are still running.
static CLEANUPS: LazyLock<tokio::sync::watch::Sender<usize>> =
    LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Counts one clean-up for as long as it lives (also when its task panics).
struct CleanupGuard;

impl CleanupGuard {
    fn new() -> Self {
        CLEANUPS.send_modify(|n| *n += 1);
        CleanupGuard
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        CLEANUPS.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Runs a clean-up on the runtime; [`wait_for_cleanups`] waits for it at exit, so a
/// session closed in the background is not cut short when the interpreter ends.
pub(crate) fn spawn_cleanup<F>(cleanup: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let Ok(rt) = runtime() else {
        return;
    };
    let guard = CleanupGuard::new();
    rt.spawn(async move {
        let _guard = guard;
        cleanup.await;
    });
}

/// Waits, with the GIL released, until every background clean-up has finished or
/// `timeout` seconds have passed; returns whether they all finished. The package calls
/// it at interpreter exit.
#[pyfunction]
pub(crate) fn wait_for_cleanups(py: Python<'_>, timeout: f64) -> PyResult<bool> {
    if *CLEANUPS.borrow() == 0 {
        return Ok(true);
    }
    let limit = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::ZERO);
    let mut pending = CLEANUPS.subscribe();
    let done = block_on(py, async move {
        let all_done = pending.wait_for(|n| *n == 0);
        Ok(tokio::time::timeout(limit, all_done).await.is_ok())
    })?;
    Ok(done)
}

/// Runs `work` on the runtime and waits for it with the GIL released.
pub(crate) fn block_on<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    F: Future<Output = Outcome<T>> + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(PyRuntimeError::new_err(
            "a blocking ktconnect call was made from a ktconnect runtime thread (in an \
             on_event callback?): use the callback only to record the event",
        ));
    }
    let mut handle = rt.spawn(work);
    loop {
        let waited = py
            .detach(|| rt.block_on(async { tokio::time::timeout(SIGNAL_POLL, &mut handle).await }));
        match waited {
            Ok(Ok(outcome)) => return outcome.map_err(PyErr::from),
            Ok(Err(join)) => return Err(join_failure(join).into()),
            Err(_elapsed) => {
                if let Err(interrupted) = py.check_signals() {
                    handle.abort();
                    // Until the task has ended, its future (and what its drop starts,
                    // such as a clean-up) may not have run yet.
                    py.detach(|| {
                        rt.block_on(async {
                            let _ = tokio::time::timeout(ABORT_WAIT, &mut handle).await;
                        });
                    });
                    return Err(interrupted);
                }
            }
        }
    }
}

/// Sets the result of an `asyncio.Future` unless it was cancelled meanwhile; called on
/// the loop's thread through `call_soon_threadsafe`.
#[pyfunction]
fn _settle(future: &Bound<'_, PyAny>, ok: bool, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if ok {
        future.call_method1("set_result", (value,))?;
    } else {
        future.call_method1("set_exception", (value,))?;
    }
    Ok(())
}

/// The `asyncio.Future`'s done-callback: aborts the work when the future was cancelled.
#[pyclass(frozen)]
struct AbortOnCancel {
    handle: Mutex<Option<AbortHandle>>,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            let handle = self
                .handle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(h) = handle {
                h.abort();
            }
        }
        Ok(())
    }
}

/// Runs `work` on the runtime; returns an `asyncio.Future` of the running event loop
/// that completes with its result (converted by `convert` on the loop's side of the
/// GIL) or its exception.
pub(crate) fn awaitable<'py, T, F, C>(
    py: Python<'py>,
    work: F,
    convert: C,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Outcome<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let rt = runtime()?;
    let event_loop = py
        .import("asyncio")?
        .call_method0("get_running_loop")?
        .unbind();
    let future = event_loop.bind(py).call_method0("create_future")?;
    let handle = rt.spawn(work);
    let on_cancel = AbortOnCancel {
        handle: Mutex::new(Some(handle.abort_handle())),
    };
    future.call_method1("add_done_callback", (on_cancel,))?;
    let settle = wrap_pyfunction!(_settle, py)?.unbind();
    let target = future.clone().unbind();
    rt.spawn(async move {
        let joined = handle.await;
        Python::attach(|py| {
            let (ok, value) = match joined.map_err(join_failure).and_then(|o| o) {
                Ok(v) => match convert(py, v) {
                    Ok(obj) => (true, obj),
                    Err(e) => (false, e.into_value(py).into_any()),
                },
                Err(f) => (false, f.into_pyerr(py).into_value(py).into_any()),
            };
            let delivered = event_loop.bind(py).call_method1(
                "call_soon_threadsafe",
                (settle.bind(py), target.bind(py), ok, value),
            );
            // A closed loop has no one left to tell; the result is dropped here.
            if let Err(e) = delivered {
                report_undeliverable(py, e);
            }
        });
    });
    Ok(future)
}

/// Reports an error nobody can receive, unless the loop was simply closed.
fn report_undeliverable(py: Python<'_>, e: PyErr) {
    if !e.is_instance_of::<PyRuntimeError>(py) {
        e.write_unraisable(py, None);
    }
}

/// Converts any value Python can take.
pub(crate) fn to_py<T>(py: Python<'_>, v: T) -> PyResult<Py<PyAny>>
where
    T: for<'a> IntoPyObject<'a>,
{
    v.into_py_any(py)
}
