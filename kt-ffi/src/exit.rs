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

/// The removal of one session's objects, running on the runtime.
pub(crate) struct Removal {
    /// The session's namespace.
    pub(crate) namespace: String,
    /// The session id (its objects' `kt.dev/session` label).
    pub(crate) session: String,
    /// The close.
    pub(crate) handle: JoinHandle<()>,
}

/// Removals started by `kt_session_free` for sessions that were not closed.
static PENDING: Mutex<Vec<Removal>> = Mutex::new(Vec::new());

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
pub(crate) fn track(removal: Removal) {
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    pending.retain(|r| !r.handle.is_finished());
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
    let mut waits: Vec<Removal> =
        std::mem::take(&mut *PENDING.lock().unwrap_or_else(PoisonError::into_inner));
    waits.retain(|r| !r.handle.is_finished());
    let freed = waits.len();
    // Swaps, exposes and meshes first: closing one puts the cluster back through its session.
    let inbound = crate::inbound::close_all_open(rt);
    if !inbound.is_empty() {
        eprintln!(
            "kt: closing {} swap(s), expose(s) or mesh(es) the program left open (at most {} s)",
            inbound.len(),
            EXIT_LIMIT.as_secs()
        );
        wait_for(&inbound);
    }
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
    if !wait_for(&waits) {
        let left: Vec<(&str, &str)> = waits
            .iter()
            .filter(|r| !r.handle.is_finished())
            .map(|r| (r.namespace.as_str(), r.session.as_str()))
            .collect();
        eprintln!("{}", gave_up(&left));
    }
}

/// Waits until every removal has finished, at most [`EXIT_LIMIT`]; whether all did.
/// It polls instead of entering the runtime: by the time `atexit` handlers run, glibc
/// has run the exiting thread's TLS destructors, tokio's context among them, so
/// `Runtime::block_on` would panic on this thread.
fn wait_for(removals: &[Removal]) -> bool {
    let deadline = std::time::Instant::now() + EXIT_LIMIT;
    loop {
        if removals.iter().all(|r| r.handle.is_finished()) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the exit handler says when the removals of `left` (namespace, session id)
/// did not finish in time: a command per session, selecting that session's objects
/// only (never every kt pod in the namespace, which other programs' sessions share).
fn gave_up(left: &[(&str, &str)]) -> String {
    let commands: Vec<String> = left
        .iter()
        .map(|(namespace, session)| {
            format!("`kubectl delete pod,secret -n {namespace} -l kt.dev/session={session}`")
        })
        .collect();
    format!(
        "kt: gave up waiting after {} s: remove what is left with {}",
        EXIT_LIMIT.as_secs(),
        commands.join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_give_up_hint_names_only_this_programs_sessions() {
        let hint = gave_up(&[("dev", "a1b2c3"), ("other", "d4e5f6")]);
        assert_eq!(
            hint,
            "kt: gave up waiting after 30 s: remove what is left with \
             `kubectl delete pod,secret -n dev -l kt.dev/session=a1b2c3` and \
             `kubectl delete pod,secret -n other -l kt.dev/session=d4e5f6`"
        );
        assert!(!hint.contains("managed-by"), "{hint}");
    }
}
