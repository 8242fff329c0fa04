//! Shadow pods whose client vanished: the shadow's watchdog ends the pod when
//! heartbeats stop (its client crashed or lost the network for good), and the next
//! session in the namespace deletes such ended pods (an OpenSSH shadow's Secret goes
//! with it: the pod owns it). Live sessions' pods are running and never touched.

use k8s_openapi::api::core::v1::Pod;
use kt_proto::labels;
use kube::api::{DeleteParams, ListParams};

use crate::cluster::{Cluster, is_not_found};
use crate::events::{Event, EventBus};

/// Whether a kt pod has ended (its process exited: watchdog, crash, or eviction).
fn ended(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Deletes the ended kt pods of the session's namespace, reporting each as
/// [`Event::Recovered`]. Best effort: failures (a missing `list` or `delete`
/// permission, the API) are logged and never fail the connect.
pub(crate) async fn sweep(cluster: &Cluster, events: &EventBus) {
    let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let api = cluster.pods();
    let pods = match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!(target: "kt", "looking for ended kt pods: {e}");
            return;
        }
    };
    for pod in pods.iter().filter(|p| ended(p)) {
        let Some(name) = pod.metadata.name.as_deref() else {
            continue;
        };
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => events.emit(Event::Recovered {
                what: format!(
                    "the ended shadow pod {}/{name} of a session whose client vanished \
                     (deleted, with its Secret if it had one)",
                    cluster.namespace
                ),
            }),
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(target: "kt", "deleting ended kt pod {name}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;

    use super::*;

    fn pod(phase: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: phase.map(str::to_owned),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn only_ended_pods_are_leftovers() {
        assert!(ended(&pod(Some("Succeeded"))));
        assert!(ended(&pod(Some("Failed"))));
        assert!(!ended(&pod(Some("Running"))));
        assert!(!ended(&pod(Some("Pending"))));
        assert!(!ended(&pod(None)));
    }
}
