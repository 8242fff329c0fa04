//! Task ownership: [`Tasks`] (every background task of a session or a handle, tracked
//! and cancelled together) and [`Teardown`], the one close/Drop protocol that every
//! handle reuses.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::events::{Event, EventBus};

/// The owner of a session's tasks: every task is tracked (so `close` can wait for it)
/// and ends when the session is cancelled.
#[derive(Clone)]
pub(crate) struct Tasks {
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl Tasks {
    pub(crate) fn new() -> Tasks {
        Tasks {
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Runs `fut` until it ends or the session is cancelled.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = fut => {}
            }
        });
    }

    /// Refuses new tasks and waits (up to 10 s) for the running ones to end; call
    /// after cancelling.
    pub(crate) async fn close(&self) {
        self.tracker.close();
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(target: "kt", "some tasks did not end within 10 s");
        }
    }
}

/// The one close/Drop protocol every handle (session, swap, expose, mesh) reuses:
/// `close()` runs the teardown once (a second call waits for the first and returns
/// `Ok`), anything after it gets [`Error::Closed`], and a handle dropped without
/// `close()` does the urgent part at once and the rest in the background.
pub(crate) struct Teardown {
    closing: AtomicBool,
    done: tokio::sync::Mutex<bool>,
}

impl Teardown {
    /// An open handle.
    pub(crate) fn new() -> Teardown {
        Teardown {
            closing: AtomicBool::new(false),
            done: tokio::sync::Mutex::new(false),
        }
    }

    /// `Err(Error::Closed)` once closing started.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closing.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Runs `teardown` the first time; later calls wait for it and return `Ok(())`.
    pub(crate) async fn close<F>(&self, teardown: F) -> Result<()>
    where
        F: Future<Output = Result<()>>,
    {
        let mut done = self.done.lock().await;
        if *done {
            return Ok(());
        }
        self.closing.store(true, Ordering::SeqCst);
        let result = teardown.await;
        *done = true;
        result
    }

    /// [`Teardown::close`] reporting it: [`Event::Closing`] before `teardown`,
    /// [`Event::Closed`] after (once, however often it is called).
    pub(crate) async fn close_reporting<F>(&self, events: &EventBus, teardown: F) -> Result<()>
    where
        F: Future<Output = Result<()>>,
    {
        self.close(async {
            events.emit(Event::Closing);
            let result = teardown.await;
            events.emit(Event::Closed);
            result
        })
        .await
    }

    /// For `Drop`: unless closing already started, runs `now` (what must not wait for
    /// a runtime, e.g. restoring system files) and spawns `later` on the current tokio
    /// runtime; outside a runtime, logs `leftover()` (what is left and how to remove
    /// it) instead.
    pub(crate) fn on_drop<F>(&self, now: impl FnOnce(), later: F, leftover: impl FnOnce() -> String)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        now();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(later);
            }
            Err(_) => tracing::warn!(target: "kt", "{}", leftover()),
        }
    }
}
