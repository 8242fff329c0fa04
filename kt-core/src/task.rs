//! Task ownership: [`Tasks`] (every background task of a session or a handle, tracked
//! and cancelled together) and [`Teardown`], the one close/Drop protocol that every
//! handle reuses.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
}
