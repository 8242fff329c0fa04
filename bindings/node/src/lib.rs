//! Node.js bindings of kt: the native addon of the npm package `ktconnect`.
//!
//! `Session.connect(options)` returns a Promise of a `Session` (a shadow pod, the SSH
//! tunnel to it through the API server, local SOCKS5 and HTTP proxies); its methods
//! return Promises and reject with an `Error` carrying a stable `code`
//! (`KT_NOT_FOUND`, `KT_FORBIDDEN`, `KT_INVALID_ARGUMENT`, ...; see `error.rs`).
//! Arguments are checked by hand (`options.rs`) so that a bad one rejects rather than
//! throws. Events are an async iterable (`events.rs`).
//!
//! The futures run on the tokio runtime napi-rs owns (`tokio_rt` feature). The
//! JavaScript side (`index.js`) loads this library and adds `Symbol.asyncDispose`;
//! `index.d.ts` is generated from the `#[napi]` items (`scripts/gen-dts.mjs`).
//!
//! No `unsafe` here (the workspace denies it): the FFI glue is napi-derive's, and
//! JavaScript values are read through napi's checked conversions.

mod error;
mod events;
mod options;
mod session;

pub use events::{Event, EventStream};
pub use options::{ConnectOptions, VpnConnectOptions};
pub use session::{LocalAddress, Session, VpnInfo};
