//! Shadow pods whose client vanished. Every session renews a Lease named like its
//! shadow pod; when the client crashes or loses the network for good, renewals stop.
//! The shadow's watchdog then ends the pod by itself, and every new session in the
//! namespace (this sweep, at connect) deletes the kt pods that are leftovers:
//!
//! - the pod has ended (its process exited: watchdog, crash, eviction), or
//! - its Lease expired: `renewTime + leaseDurationSeconds` is in the past (a Lease
//!   without a duration never expires), or
//! - it has no Lease and is older than [`LEASELESS_GRACE`] (the client creates the
//!   Lease right after the pod, so such a pod lost its client before that).
//!
//! Live sessions' pods are never touched: their Lease is renewed, or too young to
//! judge. When the Lease cannot be read (RBAC, the API), the pod is left alone. The
//! expiry compares the holder's `renewTime` with this machine's clock, so clocks
//! that disagree by more than the shadow timeout could end a live session: keep
//! them synchronised (NTP). The Lease (and an OpenSSH shadow's Secret) go with the
//! pod: it owns them.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kt_proto::labels;
use kube::api::{DeleteParams, ListParams};

use crate::cluster::{Cluster, is_not_found};
use crate::events::{Event, EventBus};

/// How old a kt pod without a Lease must be before it counts as a leftover.
pub(crate) const LEASELESS_GRACE: Duration = Duration::from_secs(300);

/// What the sweep knows about a pod's Lease.
#[derive(Debug)]
pub(crate) enum LeaseState {
    /// The Lease as read.
    Found(Box<Lease>),
    /// The API server says there is none.
    Missing,
    /// It could not be read; nothing is concluded.
    Unknown,
}

/// Why a kt pod is a leftover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leftover {
    /// Its process exited.
    Ended,
    /// Its Lease was not renewed within its duration.
    Expired,
    /// It has no Lease and is older than [`LEASELESS_GRACE`].
    NoLease,
}

impl Leftover {
    fn describe(self) -> &'static str {
        match self {
            Leftover::Ended => "the ended shadow pod",
            Leftover::Expired => "the shadow pod (its Lease expired)",
            Leftover::NoLease => "the shadow pod (it has no Lease)",
        }
    }
}

/// Whether a kt pod has ended (its process exited: watchdog, crash, or eviction).
fn ended(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether `lease` expired by `now`: renewed (or acquired) longer than its duration ago.
fn expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let (Some(renewed), Some(secs)) = (
        spec.renew_time.as_ref().or(spec.acquire_time.as_ref()),
        spec.lease_duration_seconds,
    ) else {
        return false;
    };
    renewed
        .0
        .checked_add(SignedDuration::from_secs(i64::from(secs)))
        .is_ok_and(|end| end < now)
}

/// Whether `pod`, with `lease`, is a leftover at `now` (and why); `None` for a live
/// session's pod, one being deleted, or one that cannot be judged.
pub(crate) fn leftover(pod: &Pod, lease: &LeaseState, now: Timestamp) -> Option<Leftover> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if ended(pod) {
        return Some(Leftover::Ended);
    }
    match lease {
        LeaseState::Found(lease) => expired(lease, now).then_some(Leftover::Expired),
        LeaseState::Missing => {
            let grace = SignedDuration::try_from(LEASELESS_GRACE).ok()?;
            let created = pod.metadata.creation_timestamp.as_ref()?.0;
            let old = created.checked_add(grace).is_ok_and(|end| end < now);
            old.then_some(Leftover::NoLease)
        }
        LeaseState::Unknown => None,
    }
}

/// The kt pods of the session's namespace that are leftovers (see the module docs),
/// with why.
///
/// # Errors
///
/// Listing kt pods failed (RBAC, the API).
pub(crate) async fn find(cluster: &Cluster) -> crate::error::Result<Vec<(String, &'static str)>> {
    let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let pods = (cluster
        .pods()
        .list(&ListParams::default().labels(&selector))
        .await)
        .map_err(|e| cluster.error(e, "list", "pods", "(looking for leftover kt pods)"))?
        .items;
    let leases = cluster.leases();
    let mut found = Vec::new();
    for pod in &pods {
        let Some(name) = pod.metadata.name.as_deref() else {
            continue;
        };
        let lease = if ended(pod) || pod.metadata.deletion_timestamp.is_some() {
            LeaseState::Unknown
        } else {
            match leases.get_opt(name).await {
                Ok(Some(lease)) => LeaseState::Found(Box::new(lease)),
                Ok(None) => LeaseState::Missing,
                Err(e) => {
                    tracing::debug!(target: "kt", "reading the Lease of kt pod {name}: {e}");
                    LeaseState::Unknown
                }
            }
        };
        if let Some(why) = leftover(pod, &lease, Timestamp::now()) {
            found.push((name.to_owned(), why.describe()));
        }
    }
    Ok(found)
}

/// Deletes kt pod `name` with its grace period (a swap shadow restores what its
/// session changed on SIGTERM); gone already counts as deleted.
pub(crate) async fn delete(cluster: &Cluster, name: &str) -> crate::error::Result<()> {
    match cluster
        .pods()
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(cluster.error(e, "delete", "pods", &format!("`{name}` (a leftover)"))),
    }
}

/// Deletes the kt pods of the session's namespace that are leftovers (see the module
/// docs), reporting each as [`Event::Recovered`]. Best effort: failures (a missing
/// permission, the API) are logged and never fail the connect.
pub(crate) async fn sweep(cluster: &Cluster, events: &EventBus) {
    let found = match find(cluster).await {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(target: "kt", "looking for leftover kt pods: {e}");
            return;
        }
    };
    for (name, why) in found {
        match delete(cluster, &name).await {
            Ok(()) => events.emit(Event::Recovered {
                what: format!(
                    "{why} {}/{name} of a session whose client vanished (deleted, with its \
                     Lease, and its Secret if it had one)",
                    cluster.namespace
                ),
            }),
            Err(e) => tracing::warn!(target: "kt", "deleting leftover kt pod {name}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_738_324_800 + secs).expect("valid time")
    }

    fn pod(phase: Option<&str>, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                creation_timestamp: Some(Time(at(created))),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: phase.map(str::to_owned),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn lease(renewed: Option<i64>, duration: Option<i32>) -> LeaseState {
        LeaseState::Found(Box::new(Lease {
            spec: Some(LeaseSpec {
                renew_time: renewed.map(|s| MicroTime(at(s))),
                acquire_time: Some(MicroTime(at(0))),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }))
    }

    #[test]
    fn ended_pods_are_leftovers_whatever_their_lease() {
        for phase in ["Succeeded", "Failed"] {
            for state in [
                lease(Some(100), Some(60)),
                LeaseState::Missing,
                LeaseState::Unknown,
            ] {
                assert_eq!(
                    leftover(&pod(Some(phase), 0), &state, at(101)),
                    Some(Leftover::Ended)
                );
            }
        }
    }

    #[test]
    fn a_renewed_lease_keeps_a_running_pod() {
        let p = pod(Some("Running"), 0);
        assert_eq!(leftover(&p, &lease(Some(100), Some(60)), at(101)), None);
        assert_eq!(leftover(&p, &lease(Some(100), Some(60)), at(160)), None);
        // Pending pods (still pulling) with a live client too.
        assert_eq!(
            leftover(
                &pod(Some("Pending"), 0),
                &lease(Some(100), Some(60)),
                at(150)
            ),
            None
        );
    }

    #[test]
    fn an_expired_lease_makes_a_running_or_pending_pod_a_leftover() {
        for phase in [Some("Running"), Some("Pending"), None] {
            let p = pod(phase, 0);
            assert_eq!(
                leftover(&p, &lease(Some(100), Some(60)), at(161)),
                Some(Leftover::Expired)
            );
        }
        // Never renewed: the acquire time counts.
        let p = pod(Some("Running"), 0);
        assert_eq!(
            leftover(&p, &lease(None, Some(60)), at(61)),
            Some(Leftover::Expired)
        );
    }

    #[test]
    fn a_lease_without_duration_never_expires() {
        let p = pod(Some("Running"), 0);
        assert_eq!(leftover(&p, &lease(Some(0), None), at(86_400 * 365)), None);
    }

    #[test]
    fn a_pod_without_lease_is_a_leftover_only_after_the_grace_period() {
        let p = pod(Some("Running"), 0);
        let grace = i64::try_from(LEASELESS_GRACE.as_secs()).expect("small");
        assert_eq!(leftover(&p, &LeaseState::Missing, at(1)), None);
        assert_eq!(leftover(&p, &LeaseState::Missing, at(grace)), None);
        assert_eq!(
            leftover(&p, &LeaseState::Missing, at(grace + 1)),
            Some(Leftover::NoLease)
        );
    }

    #[test]
    fn an_unreadable_lease_or_a_pod_being_deleted_is_left_alone() {
        let p = pod(Some("Running"), 0);
        assert_eq!(leftover(&p, &LeaseState::Unknown, at(86_400)), None);
        let mut deleting = pod(Some("Failed"), 0);
        deleting.metadata.deletion_timestamp = Some(Time(at(5)));
        assert_eq!(leftover(&deleting, &LeaseState::Missing, at(86_400)), None);
    }
}
