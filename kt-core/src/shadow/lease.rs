//! The session's Lease (`coordination.k8s.io/v1`): how a session says "I am alive".
//!
//! Created right after the shadow pod, with the pod's name, kt's labels, the session id
//! as holder, the shadow timeout as duration, and an owner reference to the pod (the
//! garbage collector removes it with the pod). The client renews `renewTime` every
//! heartbeat interval. The shadow's watchdog (`kt-shadow serve --lease`) and the
//! leftover sweep of later sessions read it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use super::spec::ShadowSpec;
use crate::cluster::Cluster;
use crate::events::{Event, EventBus};

/// The Lease for the shadow `pod` (as created, with its UID) of `spec`, held by the
/// session, lasting `duration` (`None`: it never expires), acquired and renewed `now`.
pub(crate) fn object(
    spec: &ShadowSpec<'_>,
    pod: &Pod,
    duration: Option<Duration>,
    now: Timestamp,
) -> Lease {
    let mut metadata = spec.meta(&std::collections::BTreeMap::new());
    metadata.owner_references = ShadowSpec::owner_reference(pod).map(|o| vec![o]);
    Lease {
        metadata,
        spec: Some(LeaseSpec {
            holder_identity: Some(spec.session.to_owned()),
            lease_duration_seconds: duration.map(whole_seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Seconds, rounded up, at least 1, at most `i32::MAX`.
fn whole_seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

/// How often to renew a Lease lasting `duration`: every `interval`, but at least three
/// times per duration (a short shadow timeout must not expire a live session between
/// two renewals), and not more than once a second.
pub(crate) fn renew_interval(interval: Duration, duration: Option<Duration>) -> Duration {
    let interval = match duration {
        Some(d) => interval.min(d / 3),
        None => interval,
    };
    interval.max(Duration::from_secs(1))
}

/// The merge patch renewing the Lease at `now`.
pub(crate) fn renewal(now: Timestamp) -> serde_json::Value {
    serde_json::json!({ "spec": { "renewTime": MicroTime(now) } })
}

/// Renews Lease `name` every `interval` until cancelled. Failures are reported as
/// [`Event::HeartbeatFailed`] (once per failure streak) and retried at the next tick.
pub(crate) async fn renew(
    cluster: Cluster,
    name: String,
    interval: Duration,
    cancel: CancellationToken,
    events: Arc<EventBus>,
) {
    let api = cluster.leases();
    let mut failing = false;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let body = renewal(Timestamp::now());
        let params = PatchParams::default();
        let merge = Patch::Merge(&body);
        let res = tokio::select! {
            () = cancel.cancelled() => return,
            res = api.patch(&name, &params, &merge) => res,
        };
        match res {
            Ok(_) => failing = false,
            Err(e) => {
                if !failing {
                    events.emit(Event::HeartbeatFailed {
                        reason: format!("renewing the session's Lease `{name}`: {e}"),
                    });
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::options::ConnectOptions;
    use crate::shadow::PodShape;

    #[test]
    fn renewals_come_at_least_three_times_per_duration() {
        let s = Duration::from_secs;
        assert_eq!(renew_interval(s(30), Some(s(600))), s(30));
        assert_eq!(renew_interval(s(30), None), s(30));
        assert_eq!(renew_interval(s(30), Some(s(60))), s(20));
        assert_eq!(renew_interval(s(30), Some(s(3))), s(1));
        assert_eq!(renew_interval(s(1), Some(s(1))), s(1));
    }

    #[test]
    fn renewal_sets_only_the_renew_time() {
        let t = Timestamp::from_second(1_738_324_800).expect("valid time");
        assert_eq!(
            renewal(t).to_string(),
            r#"{"spec":{"renewTime":"2025-01-31T12:00:00.000000Z"}}"#
        );
    }

    #[test]
    fn the_lease_is_held_by_the_session_owned_by_the_pod_and_labelled() {
        let opts = ConnectOptions::new();
        let shape = PodShape::default();
        let spec = shadow_spec(&opts, &shape);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("kt-shadow-s1".to_owned()),
                uid: Some("uid-1".to_owned()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let now = Timestamp::from_second(1_738_324_800).expect("valid time");
        let lease = object(&spec, &pod, Some(Duration::from_millis(1500)), now);
        assert_eq!(lease.metadata.name.as_deref(), Some("kt-shadow-s1"));
        let labels = lease.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("kt.dev/session").map(String::as_str), Some("s1"));
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("kt")
        );
        assert_eq!(
            labels.get("kt.dev/role").map(String::as_str),
            Some("shadow-connect")
        );
        let owners = lease.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                owners[0].uid.as_str()
            ),
            ("Pod", "kt-shadow-s1", "uid-1")
        );
        let spec = lease.spec.unwrap_or_default();
        assert_eq!(spec.holder_identity.as_deref(), Some("s1"));
        assert_eq!(spec.lease_duration_seconds, Some(2));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        let never = object(&shadow_spec(&opts, &shape), &pod, None, now);
        assert_eq!(never.spec.unwrap_or_default().lease_duration_seconds, None);
    }

    static IMAGE: std::sync::LazyLock<crate::shadow::Runtime> = std::sync::LazyLock::new(|| {
        crate::shadow::Runtime::Image("kt.invalid/kt-shadow:0.1.0".to_owned())
    });

    fn shadow_spec<'a>(opts: &'a ConnectOptions, shape: &'a PodShape) -> ShadowSpec<'a> {
        ShadowSpec {
            session: "s1",
            name: "kt-shadow-s1",
            runtime: &IMAGE,
            role: kt_proto::Role::ShadowConnect,
            shape,
            opts,
        }
    }
}
