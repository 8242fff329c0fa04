//! The imageless shadow's base image: one the node already has.
//!
//! The shipped agent needs nothing from its image (a static binary on a volume), so any
//! image will do as long as the node does not have to pull it. By default kt borrows the
//! image of a running pod (a swap's or mesh's target first, else any pod of the
//! namespace that kt did not make) and places the shadow on that pod's node, where the
//! image is present, with that pod's pull Secrets and tolerations. With no running pod
//! it falls back to the base image option (`registry.k8s.io/pause` by default: the
//! kubelet's own sandbox image, present on most nodes and small to pull).

use k8s_openapi::api::core::v1::{Pod, Toleration};
use kt_proto::labels;
use kube::api::ListParams;

use crate::cluster::Cluster;

/// The image an imageless shadow runs on, and where.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Base {
    /// The image.
    pub(crate) image: String,
    /// The node it is present on (the lending pod's), to place the shadow there.
    pub(crate) node: Option<String>,
    /// The lending pod's image pull Secrets (a node configured to pull always needs them).
    pub(crate) pull_secrets: Vec<String>,
    /// The lending pod's tolerations (its node may be tainted).
    pub(crate) tolerations: Vec<Toleration>,
    /// The lending pod, for messages.
    pub(crate) from: Option<String>,
}

impl Base {
    /// The base image named in the options, wherever the scheduler puts it.
    pub(crate) fn named(image: &str) -> Base {
        Base {
            image: image.to_owned(),
            node: None,
            pull_secrets: Vec::new(),
            tolerations: Vec::new(),
            from: None,
        }
    }
}

/// The base for a shadow: borrowed from a running pod matching `prefer` (a label
/// selector: a swap's or mesh's target), else from any running pod of the namespace
/// that kt did not make, else `fallback`.
pub(crate) async fn choose(cluster: &Cluster, prefer: Option<&str>, fallback: &str) -> Base {
    let not_kt = format!("{}!={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let mut selectors = Vec::new();
    if let Some(prefer) = prefer.filter(|p| !p.is_empty()) {
        selectors.push(format!("{prefer},{not_kt}"));
    }
    selectors.push(not_kt);
    for selector in selectors {
        let params = ListParams::default()
            .labels(&selector)
            .fields("status.phase=Running");
        match cluster.pods().list(&params).await {
            Ok(list) => {
                if let Some(base) = pick(&list.items) {
                    return base;
                }
            }
            Err(e) => {
                // Not fatal: the base image option still works.
                tracing::debug!(target: "kt", "listing pods to borrow an image: {e}");
            }
        }
    }
    Base::named(fallback)
}

/// The oldest running, ready Linux pod with a node and a running container, as a
/// [`Base`]; `None` if there is none.
fn pick(pods: &[Pod]) -> Option<Base> {
    let mut candidates: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            labels
                .and_then(|l| l.get(labels::MANAGED_BY))
                .map(String::as_str)
                != Some(labels::MANAGED_BY_VALUE)
        })
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter(|p| {
            let spec = p.spec.as_ref();
            spec.and_then(|s| s.node_name.as_ref()).is_some()
                && spec
                    .and_then(|s| s.node_selector.as_ref())
                    .and_then(|n| n.get("kubernetes.io/os"))
                    .is_none_or(|os| os == "linux")
                && spec
                    .and_then(|s| s.os.as_ref())
                    .is_none_or(|os| os.name == "linux")
        })
        .collect();
    candidates.sort_by_key(|p| {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        (!ready, p.metadata.creation_timestamp.clone().map(|t| t.0))
    });
    candidates.into_iter().find_map(|p| {
        let spec = p.spec.as_ref()?;
        let running: Vec<&str> = (p.status.as_ref()?.container_statuses.iter().flatten())
            .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            .map(|c| c.name.as_str())
            .collect();
        let container = spec
            .containers
            .iter()
            .find(|c| running.contains(&c.name.as_str()) && c.image.is_some())?;
        Some(Base {
            image: container.image.clone()?,
            node: spec.node_name.clone(),
            pull_secrets: (spec.image_pull_secrets.iter().flatten())
                .map(|s| s.name.clone())
                .filter(|n| !n.is_empty())
                .collect(),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            from: p.metadata.name.clone(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::DEFAULT_BASE_IMAGE;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStatus, LocalObjectReference,
        PodCondition, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn pod(name: &str, created: i64, ready: bool, image: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(created).expect("time"),
                )),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(format!("node-{name}")),
                containers: vec![Container {
                    name: "main".to_owned(),
                    image: Some(image.to_owned()),
                    ..Container::default()
                }],
                image_pull_secrets: Some(vec![LocalObjectReference {
                    name: "regcred".to_owned(),
                }]),
                tolerations: Some(vec![Toleration {
                    key: Some("dedicated".to_owned()),
                    operator: Some("Exists".to_owned()),
                    ..Toleration::default()
                }]),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".to_owned()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".to_owned(),
                    status: if ready { "True" } else { "False" }.to_owned(),
                    ..PodCondition::default()
                }]),
                container_statuses: Some(vec![ContainerStatus {
                    name: "main".to_owned(),
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning::default()),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn the_oldest_ready_pod_lends_its_image_node_secrets_and_tolerations() {
        let pods = [
            pod("young", 200, true, "web:2"),
            pod("old-unready", 50, false, "web:0"),
            pod("old", 100, true, "web:1"),
        ];
        let base = pick(&pods).expect("a base");
        assert_eq!(base.image, "web:1");
        assert_eq!(base.node.as_deref(), Some("node-old"));
        assert_eq!(base.pull_secrets, ["regcred"]);
        assert_eq!(base.tolerations.len(), 1);
        assert_eq!(base.from.as_deref(), Some("old"));
    }

    #[test]
    fn kt_pods_pending_pods_windows_pods_and_stopped_containers_lend_nothing() {
        let mut kt = pod("kt", 1, true, "kt:1");
        kt.metadata.labels = Some(BTreeMap::from([(
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        )]));
        let mut pending = pod("pending", 2, true, "p:1");
        pending.status.as_mut().expect("status").phase = Some("Pending".to_owned());
        let mut windows = pod("windows", 3, true, "w:1");
        windows.spec.as_mut().expect("spec").node_selector = Some(BTreeMap::from([(
            "kubernetes.io/os".to_owned(),
            "windows".to_owned(),
        )]));
        let mut stopped = pod("stopped", 4, true, "s:1");
        stopped.status.as_mut().expect("status").container_statuses = Some(Vec::new());
        let mut unscheduled = pod("unscheduled", 5, true, "u:1");
        unscheduled.spec.as_mut().expect("spec").node_name = None;
        assert_eq!(pick(&[kt, pending, windows, stopped, unscheduled]), None);
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn the_named_base_has_no_node() {
        let base = Base::named(DEFAULT_BASE_IMAGE);
        assert_eq!(base.image, "registry.k8s.io/pause:3.10");
        assert_eq!(base.node, None);
    }
}
