//! Session events for Python: each [`Event`] becomes `(kind, message, fields)`, which
//! `ktconnect/events.py` turns into a typed dataclass.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kt_core::{Event, EventKind, EventValue};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::error::{Failure, invalid};
use crate::runtime::{awaitable, block_on};

/// `(host, port)` of a local address.
pub(crate) fn address(addr: SocketAddr) -> (String, u16) {
    (addr.ip().to_string(), addr.port())
}

/// A field's value as Python sees it: an address as `(host, port)`, a list as a list
/// of str, a number as int, words as str.
fn value_to_py(py: Python<'_>, value: EventValue) -> PyResult<Bound<'_, PyAny>> {
    Ok(match value {
        EventValue::Text(text) => text.into_pyobject(py)?.into_any(),
        EventValue::Number(n) => n.into_pyobject(py)?.into_any(),
        EventValue::Addr(addr) => address(addr).into_pyobject(py)?.into_any(),
        EventValue::List(items) => items.into_pyobject(py)?.into_any(),
        // A kind of value this binding does not know yet: its text.
        other => other.to_string().into_pyobject(py)?.into_any(),
    })
}

/// `(kind, message, fields)` for one event, from kt-core's [`Event::kind`] name and
/// [`Event::fields`]: the same conversion for every kind of event.
pub(crate) fn event_to_py(py: Python<'_>, event: &Event) -> PyResult<Py<PyAny>> {
    let fields = PyDict::new(py);
    for (name, value) in event.fields() {
        fields.set_item(name, value_to_py(py, value)?)?;
    }
    let tuple = PyTuple::new(
        py,
        [
            event.kind().name().into_pyobject(py)?.into_any(),
            event.to_string().into_pyobject(py)?.into_any(),
            fields.into_any(),
        ],
    )?;
    Ok(tuple.into_any().unbind())
}

/// The names of every kind of event (`EVENT_KINDS` in the native module).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
    m.add("EVENT_KINDS", PyTuple::new(m.py(), kinds)?)?;
    Ok(())
}

fn optional_event(py: Python<'_>, event: Option<Event>) -> PyResult<Py<PyAny>> {
    match event {
        Some(e) => event_to_py(py, &e),
        None => Ok(py.None()),
    }
}

/// A timeout in seconds as a [`Duration`]; `None` waits for ever.
pub(crate) fn wait_limit(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Duration::try_from_secs_f64(t).ok()),
        Some(t) => Err(invalid(format!(
            "timeout must be a non-negative, finite number of seconds (or None), not {t}"
        ))),
    }
}

/// The next event of `events`, waiting at most `limit`.
async fn next(
    events: Arc<tokio::sync::Mutex<kt_core::Events>>,
    limit: Option<Duration>,
) -> Result<Option<Event>, Failure> {
    let wait = async {
        let mut events = events.lock().await;
        events.next().await
    };
    match limit {
        None => Ok(wait.await),
        Some(d) => tokio::time::timeout(d, wait).await.map_err(|_| {
            Failure::Timeout(format!("no session event within {} s", d.as_secs_f64()))
        }),
    }
}

/// The events of one session: every event since it started, then new ones, ending after
/// `closed`. Iterate it from Python (`ktconnect.Events`).
#[pyclass(frozen, module = "ktconnect._native")]
pub(crate) struct NativeEvents {
    inner: Arc<tokio::sync::Mutex<kt_core::Events>>,
}

impl NativeEvents {
    pub(crate) fn new(events: kt_core::Events) -> Self {
        NativeEvents {
            inner: Arc::new(tokio::sync::Mutex::new(events)),
        }
    }
}

#[pymethods]
impl NativeEvents {
    /// The next event as `(kind, message, fields)`, `None` after `closed`; raises
    /// `ktconnect.Timeout` when none comes within `timeout` seconds.
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let limit = wait_limit(timeout)?;
        let event = block_on(py, next(Arc::clone(&self.inner), limit))?;
        optional_event(py, event)
    }

    /// `next` as an awaitable.
    #[pyo3(signature = (timeout=None))]
    fn next_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = wait_limit(timeout)?;
        awaitable(py, next(Arc::clone(&self.inner), limit), optional_event)
    }

    /// The next event if one is waiting, else `None` (never blocks).
    fn try_next(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let event = match self.inner.try_lock() {
            Ok(mut events) => events.try_next(),
            // Another thread is waiting for the next event: nothing for this one now.
            Err(_) => None,
        };
        optional_event(py, event)
    }
}
