//! `kubectl get nodes` shows the lab's node, Ready, and the API agrees.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Node;
use kt_lab_tests::Lab;
use kube::Api;

const NODE: &str = "ktlab-node";

#[tokio::test]
async fn kubectl_get_nodes_shows_ktlab_node_ready() -> Result<()> {
    let lab = Lab::connect().await?;

    let table = lab.kubectl(&["get", "nodes"]).await?;
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(NODE))
        .with_context(|| format!("`kubectl get nodes` does not list {NODE}:\n{table}"))?;
    let status = row.split_whitespace().nth(1).unwrap_or_default();
    ensure!(
        status == "Ready",
        "{NODE} is `{status}`, not `Ready`:\n{table}"
    );

    let node = Api::<Node>::all(lab.client()).get(NODE).await?;
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .with_context(|| format!("{NODE} has no Ready condition"))?;
    ensure!(ready.status == "True", "{NODE} Ready condition: {ready:?}");
    let kubelet = node
        .status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.clone())
        .unwrap_or_default();
    ensure!(
        kubelet.starts_with("v1.34"),
        "{NODE} reports kubelet version `{kubelet}`, expected v1.34.x"
    );
    Ok(())
}
