//! The watchdog on the session's Lease (`--lease NAME`).
//!
//! The client renews a `coordination.k8s.io/v1` Lease named like the shadow pod every
//! heartbeat interval. The shadow reads it with its pod's ServiceAccount token
//! (ServiceAccount `kt-shadow`, allowed to `get` Leases) and ends itself with
//! [`kt_proto::shadow::EXIT_LEASE_EXPIRED`] when
//!
//! - the Lease, once seen, is gone (deleted, or garbage-collected), or
//! - its `renewTime` has not changed for its `leaseDurationSeconds`, measured on the
//!   shadow's own monotonic clock from the moment the shadow first saw the current
//!   value. The timestamps themselves are never compared with the shadow's clock, so
//!   a client whose clock is off by any amount is not ended early.
//!
//! Without in-cluster credentials ([`crate::cluster`]), or while the API server cannot
//! be read (network, RBAC, a Lease not created yet), the watchdog only logs: the
//! SSH-idle timer (`--heartbeat-timeout`) stays the fallback and is always on.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{info, warn};

/// How often the Lease is read when it has no duration (only its deletion counts).
const POLL_WITHOUT_DURATION: Duration = Duration::from_secs(30);

/// The longest pause between two reads of a Lease with a duration.
const MAX_POLL: Duration = Duration::from_secs(10);

/// The shortest pause between two reads.
const MIN_POLL: Duration = Duration::from_secs(1);

/// One read of the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The Lease exists: its renew mark (`renewTime`, else `acquireTime`, as written)
    /// and its duration.
    Present {
        /// `spec.renewTime` (or `spec.acquireTime` when never renewed), as text.
        renewed: Option<String>,
        /// `spec.leaseDurationSeconds`; `None`: it never expires.
        duration: Option<Duration>,
    },
    /// The API server says there is no such Lease.
    Missing,
    /// The read failed (network, RBAC, ...): nothing is concluded.
    Unreadable(String),
}

/// What the watchdog concludes after an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The session is alive (or nothing can be concluded).
    Alive,
    /// Not renewed for its whole duration, as seen from here.
    Expired {
        /// The Lease's duration.
        duration: Duration,
    },
    /// It existed and is gone.
    Gone,
}

/// The watchdog's memory: the last renew mark and since when (shadow clock) it holds.
#[derive(Debug)]
pub struct Watchdog {
    /// The renew mark last seen (`None` until the Lease was first seen).
    seen: Option<Option<String>>,
    /// When that mark was first seen (or when the watchdog started).
    since: Instant,
}

impl Watchdog {
    /// A watchdog started at `now` that has not seen the Lease yet.
    pub fn new(now: Instant) -> Watchdog {
        Watchdog {
            seen: None,
            since: now,
        }
    }

    /// Takes one observation made at `now`.
    pub fn observe(&mut self, now: Instant, observation: Observation) -> Verdict {
        match observation {
            Observation::Present { renewed, duration } => {
                if self.seen.as_ref() != Some(&renewed) {
                    self.seen = Some(renewed);
                    self.since = now;
                }
                match duration {
                    Some(d) if now.saturating_duration_since(self.since) > d => {
                        Verdict::Expired { duration: d }
                    }
                    _ => Verdict::Alive,
                }
            }
            // Before the first sighting the client may simply not have created it yet.
            Observation::Missing if self.seen.is_some() => Verdict::Gone,
            Observation::Missing | Observation::Unreadable(_) => Verdict::Alive,
        }
    }
}

/// How long the watchdog reads a Lease it has not seen yet every [`MIN_POLL`].
const UNSEEN_FAST: Duration = Duration::from_secs(60);

/// How long to wait before the next read of a Lease of `duration`: a quarter of it,
/// between 1 s and 10 s. `unseen_for`: how long the watchdog has run without seeing
/// the Lease (`None` once seen); the first [`UNSEEN_FAST`] of that, every [`MIN_POLL`].
///
/// The client creates the Lease right after the pod, so a shadow that starts first
/// (its node was quick, the API server slow) sees it within a second. Waiting longer
/// would leave the shadow blind to the session for that long: a Lease deleted or
/// expired before the next read would never be seen at all (only a Lease seen once
/// counts as gone), and the SSH heartbeat would end the shadow instead, without the
/// restore and self-delete a Lease verdict brings. A Lease still unseen after a
/// minute (a client that died before making it, a Role without `get leases`) is read
/// every 30 s: the heartbeat is the fallback then.
pub fn poll_interval(unseen_for: Option<Duration>, duration: Option<Duration>) -> Duration {
    match (unseen_for, duration) {
        (Some(t), _) if t < UNSEEN_FAST => MIN_POLL,
        (Some(_), _) | (None, None) => POLL_WITHOUT_DURATION,
        (None, Some(d)) => (d / 4).clamp(MIN_POLL, MAX_POLL),
    }
}

/// Reads one Lease through the API server until it expires or is gone.
pub struct LeaseWatch {
    api: Api<Lease>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for LeaseWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseWatch")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LeaseWatch {
    /// Watches Lease `name` of `namespace` through `client`.
    pub fn new(client: Client, namespace: &str, name: &str) -> LeaseWatch {
        LeaseWatch {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Reads the Lease until it expires or is gone, then returns the verdict
    /// ([`Verdict::Expired`] or [`Verdict::Gone`]); never returns otherwise.
    pub async fn run(self) -> Verdict {
        let started = Instant::now();
        let mut watchdog = Watchdog::new(started);
        let mut failing = false;
        let mut duration = None;
        info!(namespace = %self.namespace, lease = %self.name, "watching the session's Lease");
        loop {
            let observation = self.read().await;
            match &observation {
                Observation::Unreadable(err) if !failing => {
                    failing = true;
                    warn!(
                        lease = %self.name,
                        error = %err,
                        "cannot read the session's Lease; retrying (--heartbeat-timeout still applies)"
                    );
                }
                Observation::Missing if !failing && watchdog.seen.is_none() => {
                    failing = true;
                    info!(lease = %self.name, "the session's Lease does not exist yet; retrying");
                }
                Observation::Present { duration: d, .. } => {
                    if failing {
                        info!(lease = %self.name, "the session's Lease is readable again");
                    }
                    failing = false;
                    duration = *d;
                }
                _ => {}
            }
            match watchdog.observe(Instant::now(), observation) {
                Verdict::Alive => {}
                verdict @ Verdict::Expired { duration } => {
                    warn!(
                        lease = %self.name,
                        ?duration,
                        "the session's Lease was not renewed within its duration: the client \
                         is gone; exiting with code {} so the cluster can be restored",
                        kt_proto::shadow::EXIT_LEASE_EXPIRED
                    );
                    return verdict;
                }
                Verdict::Gone => {
                    warn!(
                        lease = %self.name,
                        "the session's Lease was deleted: the session is over; exiting with code {}",
                        kt_proto::shadow::EXIT_LEASE_EXPIRED
                    );
                    return Verdict::Gone;
                }
            }
            let unseen_for = watchdog.seen.is_none().then(|| started.elapsed());
            tokio::time::sleep(poll_interval(unseen_for, duration)).await;
        }
    }

    async fn read(&self) -> Observation {
        match self.api.get_opt(&self.name).await {
            Ok(Some(lease)) => {
                let spec = lease.spec.unwrap_or_default();
                let renewed = spec
                    .renew_time
                    .or(spec.acquire_time)
                    .map(|t| t.0.to_string());
                let duration = spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs);
                Observation::Present { renewed, duration }
            }
            Ok(None) => Observation::Missing,
            Err(err) => Observation::Unreadable(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(renewed: &str, secs: Option<u64>) -> Observation {
        Observation::Present {
            renewed: Some(renewed.to_owned()),
            duration: secs.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_lease_renewed_within_its_duration_stays_alive() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0);
        let s = Duration::from_secs;
        assert_eq!(w.observe(t0, present("a", Some(10))), Verdict::Alive);
        assert_eq!(w.observe(t0 + s(9), present("a", Some(10))), Verdict::Alive);
        assert_eq!(
            w.observe(t0 + s(10), present("b", Some(10))),
            Verdict::Alive
        );
        assert_eq!(
            w.observe(t0 + s(19), present("b", Some(10))),
            Verdict::Alive
        );
        assert_eq!(
            w.observe(t0 + s(20), present("c", Some(10))),
            Verdict::Alive
        );
    }

    #[test]
    fn a_lease_not_renewed_for_its_duration_expires() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0);
        let s = Duration::from_secs;
        assert_eq!(w.observe(t0, present("a", Some(10))), Verdict::Alive);
        assert_eq!(
            w.observe(t0 + s(10), present("a", Some(10))),
            Verdict::Alive
        );
        assert_eq!(
            w.observe(t0 + s(11), present("a", Some(10))),
            Verdict::Expired { duration: s(10) }
        );
    }

    #[test]
    fn expiry_counts_from_the_first_sighting_not_from_the_timestamp() {
        // A renew time far in the past (the client's clock is behind) is not expired
        // until the shadow itself has seen it unchanged for the duration.
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0);
        let s = Duration::from_secs;
        let old = "1999-01-01T00:00:00Z";
        assert_eq!(
            w.observe(t0 + s(100), present(old, Some(10))),
            Verdict::Alive
        );
        assert_eq!(
            w.observe(t0 + s(105), present(old, Some(10))),
            Verdict::Alive
        );
        assert_eq!(
            w.observe(t0 + s(111), present(old, Some(10))),
            Verdict::Expired { duration: s(10) }
        );
    }

    #[test]
    fn a_lease_without_duration_never_expires() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0);
        let day = Duration::from_secs(86_400);
        assert_eq!(w.observe(t0, present("a", None)), Verdict::Alive);
        assert_eq!(w.observe(t0 + day, present("a", None)), Verdict::Alive);
    }

    #[test]
    fn a_lease_that_was_seen_and_is_missing_is_gone() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0);
        assert_eq!(w.observe(t0, present("a", None)), Verdict::Alive);
        assert_eq!(w.observe(t0, Observation::Missing), Verdict::Gone);
    }

    #[test]
    fn a_lease_never_seen_or_unreadable_concludes_nothing() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0);
        let s = Duration::from_secs;
        let denied = || Observation::Unreadable("403 Forbidden".to_owned());
        assert_eq!(
            w.observe(t0 + s(3600), Observation::Missing),
            Verdict::Alive
        );
        assert_eq!(w.observe(t0 + s(3600), denied()), Verdict::Alive);
        assert_eq!(
            w.observe(t0 + s(3601), present("a", Some(1))),
            Verdict::Alive
        );
        // Errors after a sighting do not expire it either; a later read that finds it
        // unchanged does.
        assert_eq!(w.observe(t0 + s(7200), denied()), Verdict::Alive);
        assert_eq!(
            w.observe(t0 + s(7200), present("a", Some(1))),
            Verdict::Expired { duration: s(1) }
        );
    }

    #[test]
    fn polls_a_quarter_of_the_duration_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(poll_interval(None, Some(s(2))), s(1));
        assert_eq!(poll_interval(None, Some(s(20))), s(5));
        assert_eq!(poll_interval(None, Some(s(600))), s(10));
        assert_eq!(poll_interval(None, None), s(30));
        // Not seen yet: every second for the first minute, then every 30 s.
        assert_eq!(poll_interval(Some(s(0)), None), s(1));
        assert_eq!(poll_interval(Some(s(59)), Some(s(600))), s(1));
        assert_eq!(poll_interval(Some(s(60)), None), s(30));
    }
}
