//! Node.js bindings of kt: the native addon of the npm package `ktconnect`.
//!
//! `Session.connect(options)` returns a Promise of a `Session` (a shadow pod, the SSH
//! tunnel to it through the API server, local SOCKS5 and HTTP proxies); its methods
//! return Promises and reject with an `Error` carrying a stable `code`, `KT_` and
//! kt-core's `ErrorKind` name (`KT_NOT_FOUND`, `KT_FORBIDDEN`, ...; see `error.rs`).
//! Arguments are checked by hand (`options.rs`) so that a bad one rejects rather than
//! throws. Events are an async iterable of objects built from kt-core's
//! `Event::kind`/`fields` (`events.rs`). `udpChannel` is in `udp.rs`,
//! `recoverSystemDns` in `system.rs`; `swap`, `expose`, `mesh` (their `Swap`,
//! `Expose` and `Mesh` handles), `clean` and `recover` in `inbound.rs`.
//!
//! The futures run on the tokio runtime napi-rs owns (`tokio_rt` feature). The
//! JavaScript side (`index.js`) loads this library and adds `Symbol.asyncDispose`;
//! `index.d.ts` is generated from the `#[napi]` items (`scripts/gen-dts.mjs`).
//!
//! Every `#[napi]` function and method has `catch_unwind`: a panic (a bug) becomes a
//! JavaScript exception instead of aborting the Node process (a panic cannot unwind
//! through the C callback napi-rs hands to Node); futures' panics are caught by
//! napi-rs and reject their Promise. `test/panic.test.mjs` checks both, and that no
//! function lacks it.
//!
//! No `unsafe` here (the workspace denies it): the FFI glue is napi-derive's, and
//! JavaScript values are read through napi's checked conversions.

mod error;
mod events;
mod inbound;
mod options;
mod session;
mod system;
mod udp;

pub use error::{error_example, error_kinds, panic_for_test, panic_for_test_async};
pub use events::{
    Event, EventField, EventKey, EventShape, EventStream, event_examples, event_kinds,
};
pub use inbound::{
    CleanReport, Expose, ExposeOptionsShape, Mesh, MeshOptionsShape, PortPair, Swap,
    SwapOptionsShape, clean, recover,
};
pub use options::{ConnectOptions, VpnConnectOptions};
pub use session::{LocalAddress, Session, VpnInfo};
pub use system::{recover_system_dns, surface};
pub use udp::UdpChannel;
