//! `kt-ffi`: the C ABI over kt-core. The header is `include/kt.h` (made by cbindgen
//! from these sources, committed); the library is `libkt` (`-lkt`, pkg-config `kt`).
//!
//! The rules every function follows (handles, ownership, errors, threads) are in the
//! header's opening comment (`cbindgen.toml`) and in `kt-ffi/README.md`.

#![allow(
    unsafe_code,
    reason = "a C ABI reads caller strings and writes caller out-pointers; each unsafe block says why it is sound"
)]
#![allow(
    non_camel_case_types,
    reason = "the C names (kt_session, kt_status, ...) are the Rust names, as cbindgen emits them"
)]
#![allow(
    clippy::missing_safety_doc,
    reason = "every function has the same pointer contract, stated once in the header's opening comment"
)]

use std::ffi::{CStr, c_char};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::LazyLock;

pub mod event;
mod exit;
pub mod handle;
pub mod inbound;
pub mod list;
pub mod options;
pub mod session;
pub mod status;
pub mod udp;

pub use status::kt_status;

use status::{Failure, guard};

/// The one tokio runtime of the process: multi-threaded, made on first use, never shut
/// down (its threads end with the process).
static RUNTIME: LazyLock<std::io::Result<tokio::runtime::Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kt-runtime")
        .build()
});

/// The runtime, or why it could not be made.
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime, Failure> {
    RUNTIME.as_ref().map_err(|e| {
        Failure::new(
            kt_status::Io,
            format!("cannot start kt's runtime threads: {e}"),
        )
    })
}

/// Runs `fut` to completion on the runtime, blocking the calling thread. Refused on one
/// of the runtime's own threads, where blocking would stall kt itself.
pub(crate) fn block_on<F: Future>(fut: F) -> Result<F::Output, Failure> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Failure::new(
            kt_status::WrongThread,
            "a blocking kt function was called from a kt runtime thread; call kt from your \
             own threads only",
        ));
    }
    Ok(runtime()?.block_on(fut))
}

/// The longest IP address text, with its NUL (INET6_ADDRSTRLEN).
pub const KT_IP_LEN: usize = 46;
/// The longest `ip:port` text (`[v6]:port` for IPv6), with its NUL.
pub const KT_ADDR_TEXT_LEN: usize = 64;

/// A local socket address that kt listens on (a proxy, a forward, the VPN's DNS
/// server). A plain value: the caller owns it, nothing to free.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kt_addr {
    /// The IP address as text, NUL-terminated (`127.0.0.1`).
    pub ip: [c_char; KT_IP_LEN],
    /// The port.
    pub port: u16,
    /// `ip:port` (`[ip]:port` for IPv6), NUL-terminated: ready for
    /// `http://%s` or `socks5h://%s`.
    pub text: [c_char; KT_ADDR_TEXT_LEN],
}

impl kt_addr {
    pub(crate) fn from_socket(addr: SocketAddr) -> kt_addr {
        let mut out = kt_addr {
            ip: [0; KT_IP_LEN],
            port: addr.port(),
            text: [0; KT_ADDR_TEXT_LEN],
        };
        fill(&mut out.ip, &addr.ip().to_string());
        fill(&mut out.text, &addr.to_string());
        out
    }
}

/// Copies `s` into a fixed array, NUL-terminated (cut if it does not fit; addresses
/// always fit).
fn fill(dst: &mut [c_char], s: &str) {
    let n = s.len().min(dst.len() - 1);
    for (d, b) in dst.iter_mut().zip(&s.as_bytes()[..n]) {
        *d = c_char::from_ne_bytes([*b]);
    }
    dst[n] = 0;
}

/// The version of libkt, e.g. `"0.1.0"`: a static string, never freed. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn kt_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// The name of a status code, e.g. `"KT_STATUS_NOT_FOUND"`, or `"KT_STATUS_UNKNOWN"`
/// for a number that is no status: a static string, never freed. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn kt_status_name(status: u32) -> *const c_char {
    let name = usize::try_from(status)
        .ok()
        .and_then(|i| kt_status::ALL.get(i))
        .map_or(c"KT_STATUS_UNKNOWN", |s| s.name());
    name.as_ptr()
}

/// Puts back the system DNS settings that a VPN-mode session of a process that died
/// without closing left changed (resolv.conf, hosts entries, /etc/resolver files; the
/// records are kept under `$KT_STATE_DIR/restore`, default `/var/lib/kt/restore`).
/// A VPN-mode connect does this by itself; call it from a "recover" command. Needs the
/// permissions to write those files (root).
///
/// On success, `*restored` is a new `kt_list` with one line per change undone (empty
/// when nothing was left); free it with `kt_list_free`. On failure it is NULL.
/// Blocking; thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_recover_system_dns(
    restored: *mut *mut list::kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = status::handle_out(restored, "restored")?;
        let lines = kt_core::recover_system_dns(&kt_core::SystemPaths::system())?;
        out.write(list::List::values(lines.iter().map(String::as_str)).into_handle());
        Ok(())
    })
}
