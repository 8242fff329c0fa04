//! Refreshing the shadow pod's heartbeat annotation, so `kt clean` can tell a live
//! session from a leftover.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kt_proto::annotations;
use kube::api::{Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::events::{Event, EventBus};

/// The merge patch setting the heartbeat annotation to `time`.
pub(crate) fn patch(time: SystemTime) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "annotations": {
                annotations::HEARTBEAT: annotations::format_heartbeat(time),
            }
        }
    })
}

/// Patches the annotation every `interval` until cancelled. Failures are reported as
/// [`Event::HeartbeatFailed`] (once per failure streak) and retried at the next tick.
pub(crate) async fn run(
    cluster: Cluster,
    pod: String,
    interval: Duration,
    cancel: CancellationToken,
    events: Arc<EventBus>,
) {
    let api = cluster.pods();
    let mut failing = false;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let body = patch(SystemTime::now());
        let params = PatchParams::default();
        let merge = Patch::Merge(&body);
        let res = tokio::select! {
            () = cancel.cancelled() => return,
            res = api.patch(&pod, &params, &merge) => res,
        };
        match res {
            Ok(_) => failing = false,
            Err(e) => {
                if !failing {
                    events.emit(Event::HeartbeatFailed {
                        reason: e.to_string(),
                    });
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn patch_sets_only_the_heartbeat_annotation() {
        let t = UNIX_EPOCH + Duration::from_secs(1_738_324_800);
        assert_eq!(
            patch(t).to_string(),
            r#"{"metadata":{"annotations":{"kt.dev/heartbeat":"2025-01-31T12:00:00Z"}}}"#
        );
    }
}
