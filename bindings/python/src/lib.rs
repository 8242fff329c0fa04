//! Python bindings of kt: the native module `ktconnect._native`.
//!
//! The Python package `ktconnect` (in `python/ktconnect/`) is the public API; this
//! module is its engine:
//!
//! - `connect` / `connect_async` open a kt-core [`kt_core::Session`] from a
//!   `ConnectOptions` (checked when made, so bad input raises before anything happens);
//! - `NativeSession` has each operation twice: a blocking call that releases the GIL and
//!   an `*_async` call that returns an `asyncio.Future`;
//! - `NativeEvents` reads the session's events, `NativeDatagramChannel` is one UDP flow;
//! - `NativeSwap`, `NativeExpose` and `NativeMesh` are the inbound handles, `clean` / `recover` the
//!   module functions that put back what dead sessions left (see [`inbound`]);
//! - every error becomes a subclass of `ktconnect.KtError` (see [`error`]).
//!
//! The sync API, context managers, typed events and the pytest plugin are thin Python
//! over these.

mod error;
mod events;
mod inbound;
mod options;
mod runtime;
mod session;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_BASE_IMAGE", kt_core::DEFAULT_BASE_IMAGE)?;
    m.add("SHADOW_IMAGE_ENV", kt_core::SHADOW_IMAGE_ENV)?;
    m.add("AGENT_DIR_ENV", kt_core::AGENT_DIR_ENV)?;
    error::register(m)?;
    events::register(m)?;
    surface(m)?;
    m.add_class::<options::ConnectOptions>()?;
    m.add_class::<options::VpnOptions>()?;
    m.add_class::<session::NativeSession>()?;
    m.add_class::<events::NativeEvents>()?;
    m.add_class::<session::NativeDatagramChannel>()?;
    m.add_class::<inbound::NativeSwap>()?;
    m.add_class::<inbound::NativeExpose>()?;
    m.add_class::<inbound::NativeMesh>()?;
    m.add_function(wrap_pyfunction!(session::connect, m)?)?;
    m.add_function(wrap_pyfunction!(session::connect_async, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::wait_for_cleanups, m)?)?;
    m.add_function(wrap_pyfunction!(session::recover_system_dns, m)?)?;
    m.add_function(wrap_pyfunction!(inbound::clean, m)?)?;
    m.add_function(wrap_pyfunction!(inbound::clean_async, m)?)?;
    m.add_function(wrap_pyfunction!(inbound::recover, m)?)?;
    m.add_function(wrap_pyfunction!(inbound::recover_async, m)?)?;
    Ok(())
}

/// `SURFACE`: kt-core's lists of every public option, operation and function, which
/// `tests/test_parity.py` compares with what this package exposes.
fn surface(m: &Bound<'_, PyModule>) -> PyResult<()> {
    use kt_core::surface;
    let d = pyo3::types::PyDict::new(m.py());
    d.set_item("CONNECT_OPTIONS", surface::CONNECT_OPTIONS.to_vec())?;
    d.set_item("VPN_OPTIONS", surface::VPN_OPTIONS.to_vec())?;
    d.set_item("SESSION_OPERATIONS", surface::SESSION_OPERATIONS.to_vec())?;
    d.set_item("FUNCTIONS", surface::FUNCTIONS.to_vec())?;
    d.set_item("SWAP_OPTIONS", surface::SWAP_OPTIONS.to_vec())?;
    d.set_item("EXPOSE_OPTIONS", surface::EXPOSE_OPTIONS.to_vec())?;
    d.set_item("SWAP_OPERATIONS", surface::SWAP_OPERATIONS.to_vec())?;
    d.set_item("EXPOSE_OPERATIONS", surface::EXPOSE_OPERATIONS.to_vec())?;
    d.set_item("MESH_OPTIONS", surface::MESH_OPTIONS.to_vec())?;
    d.set_item("MESH_OPERATIONS", surface::MESH_OPERATIONS.to_vec())?;
    m.add("SURFACE", d)
}
