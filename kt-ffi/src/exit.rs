//! Sessions a C program leaves open are closed when it exits normally (a return from
//! `main`, or `exit()`): an `atexit` handler, registered at the first connect, closes
//! every session that was neither closed nor freed, and waits (up to
//! [`EXIT_LIMIT`]) for the removals that `kt_session_free` started in the background
//! for sessions freed without a close. A crash, `_exit()` or a signal skips it; the
//! shadow's heartbeat watchdog ends the pod then.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::runtime;

/// How long the exit handler waits for the removals, all together.
pub(crate) const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// Removals started by `kt_session_free` for sessions that were not closed.
static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

static ARMED: Once = Once::new();

unsafe extern "C" {
    // glibc's `atexit` (from libc_nonshared) registers with this library's DSO handle,
    // so the handler also runs, and is dropped, if the library is unloaded first.
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

/// Registers the exit handler (once per process).
pub(crate) fn arm() {
    ARMED.call_once(|| {
        // SAFETY: `atexit` only stores the pointer of a function that takes nothing
        // and unwinds nothing (`at_exit` catches every panic).
        let registered = unsafe { atexit(at_exit) };
        if registered != 0 {
            eprintln!(
                "kt: could not register the exit handler; close every session before exiting"
            );
        }
    });
}

/// Keeps `removal` so that the exit handler can wait for it.
pub(crate) fn track(removal: JoinHandle<()>) {
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    pending.retain(|h| !h.is_finished());
    pending.push(removal);
}

extern "C" fn at_exit() {
    let _ = catch_unwind(AssertUnwindSafe(close_everything_left));
}

fn close_everything_left() {
    // exit() called on one of kt's own threads cannot block on them.
    if tokio::runtime::Handle::try_current().is_ok() {
        return;
    }
    let Ok(rt) = runtime() else { return };
    let mut waits: Vec<JoinHandle<()>> =
        std::mem::take(&mut *PENDING.lock().unwrap_or_else(PoisonError::into_inner));
    waits.retain(|h| !h.is_finished());
    let freed = waits.len();
    let open = crate::session::close_all_open(rt);
    if open.is_empty() && waits.is_empty() {
        return;
    }
    eprintln!(
        "kt: closing {} session(s) the program left open and waiting for {freed} removal(s) \
         it started (at most {} s)",
        open.len(),
        EXIT_LIMIT.as_secs()
    );
    waits.extend(open);
    let all = async {
        for removal in waits {
            let _ = removal.await;
        }
    };
    if rt.block_on(tokio::time::timeout(EXIT_LIMIT, all)).is_err() {
        eprintln!(
            "kt: gave up waiting after {} s: remove what is left with `kubectl delete \
             pod,secret -l app.kubernetes.io/managed-by=kt`",
            EXIT_LIMIT.as_secs()
        );
    }
}
