//! The identity of an inbound shadow (swap, expose): a ServiceAccount, a Role and a
//! RoleBinding of its own, all named like its pod, made before the pod and owned by it
//! afterwards (so the garbage collector removes them with the pod).
//!
//! Why per shadow and not one shipped in YAML: the watchdog of a swap shadow puts the
//! cluster back when its client dies, so it must be able to patch the swapped Service
//! or workload, and nothing else. RBAC can narrow a rule to objects by name
//! (`resourceNames`), and those names are known only when the swap starts. A shipped
//! ServiceAccount would need `patch` on every Service and Deployment of the namespace.
//! The user's own Role stays namespace-scoped: creating a Role needs no cluster-wide
//! verb, and RBAC lets a user grant only what they hold themselves.
//!
//! The Role lets the shadow
//! - `get` its session's Lease (the watchdog reads it),
//! - `get` and `delete` its own pod (after restoring, it removes itself, and with it
//!   everything it owns) and its session's connect shadow (the client that stopped
//!   renewing is gone, and nothing else would remove that pod),
//! - `get` and `patch` exactly the objects the swap changes.
//!
//! A mesh router's Role also lets it `list` and `watch` pods (the developers' shadows
//! are found by label) and `patch` its own Lease (where it reports its routes).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use crate::cluster::Cluster;
use crate::cluster::workload::TargetKind;
use crate::error::Result;

/// What a shadow's Role allows beyond its Lease and its own pod.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grants {
    /// Objects the watchdog may read and patch: (kind, name).
    pub(crate) patch: Vec<(TargetKind, String)>,
    /// Other pods of the same client the watchdog may delete (its session's connect
    /// shadow, removed with the inbound shadow when the client is gone).
    pub(crate) delete_pods: Vec<String>,
    /// A mesh router's: it lists and watches the developers' shadow pods (by label, so
    /// not by name), and patches its own Lease (its routes, its renewals).
    pub(crate) router: bool,
}

fn rule(group: &str, resource: &str, verbs: &[&str], names: Vec<String>) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        resource_names: Some(names),
        ..PolicyRule::default()
    }
}

/// The Role's rules for the shadow pod `name` (its Lease has the same name).
pub(crate) fn rules(name: &str, grants: &Grants) -> Vec<PolicyRule> {
    let lease_verbs: &[&str] = if grants.router {
        &["get", "patch"]
    } else {
        &["get"]
    };
    let mut rules = vec![
        rule(
            "coordination.k8s.io",
            "leases",
            lease_verbs,
            vec![name.to_owned()],
        ),
        rule(
            "",
            "pods",
            &["get", "delete"],
            std::iter::once(name.to_owned())
                .chain(grants.delete_pods.iter().cloned())
                .collect(),
        ),
    ];
    if grants.router {
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".to_owned()]),
            verbs: vec!["list".to_owned(), "watch".to_owned()],
            ..PolicyRule::default()
        });
    }
    for kind in [
        TargetKind::Service,
        TargetKind::Deployment,
        TargetKind::StatefulSet,
    ] {
        let names: Vec<String> = (grants.patch.iter())
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.clone())
            .collect();
        if names.is_empty() {
            continue;
        }
        let (group, resource) = match kind {
            TargetKind::Service => ("", "services"),
            TargetKind::Deployment => ("apps", "deployments"),
            TargetKind::StatefulSet => ("apps", "statefulsets"),
        };
        rules.push(rule(group, resource, &["get", "patch"], names));
    }
    rules
}

/// Creates the ServiceAccount, Role and RoleBinding `name` with `meta`'s labels. Each
/// one created is recorded in `created` (kind noun, name) before the next is made, so
/// that a failure leaves a list to remove.
pub(crate) async fn create(
    cluster: &Cluster,
    meta: &ObjectMeta,
    name: &str,
    grants: &Grants,
    created: &mut Vec<Made>,
) -> Result<()> {
    let pp = PostParams::default();
    let ns = &cluster.namespace;
    let sa = ServiceAccount {
        metadata: meta.clone(),
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), ns)
        .create(&pp, &sa)
        .await
        .map_err(|e| cluster.error(e, "create", "serviceaccounts", "(the shadow's identity)"))?;
    created.push(Made::ServiceAccount);
    let role = Role {
        metadata: meta.clone(),
        rules: Some(rules(name, grants)),
    };
    Api::<Role>::namespaced(cluster.client.clone(), ns)
        .create(&pp, &role)
        .await
        .map_err(|e| cluster.error(e, "create", "roles", "(the shadow's identity)"))?;
    created.push(Made::Role);
    let binding = RoleBinding {
        metadata: meta.clone(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            namespace: Some(ns.clone()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(cluster.client.clone(), ns)
        .create(&pp, &binding)
        .await
        .map_err(|e| cluster.error(e, "create", "rolebindings", "(the shadow's identity)"))?;
    created.push(Made::RoleBinding);
    Ok(())
}

/// An object of a shadow's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Made {
    ServiceAccount,
    Role,
    RoleBinding,
}

/// Makes `pod` the owner of the identity objects `made` (named `name`), so the garbage
/// collector removes them with it.
pub(crate) async fn hand_to(cluster: &Cluster, name: &str, pod: &Pod, made: &[Made]) -> Result<()> {
    let Some(owner) = crate::shadow::spec::ShadowSpec::owner_reference(pod) else {
        return Ok(());
    };
    let patch = serde_json::json!({ "metadata": { "ownerReferences": [owner] } });
    let pp = PatchParams::default();
    let ns = &cluster.namespace;
    for made in made {
        let result = match made {
            Made::ServiceAccount => Api::<ServiceAccount>::namespaced(cluster.client.clone(), ns)
                .patch(name, &pp, &Patch::Merge(&patch))
                .await
                .map(drop),
            Made::Role => Api::<Role>::namespaced(cluster.client.clone(), ns)
                .patch(name, &pp, &Patch::Merge(&patch))
                .await
                .map(drop),
            Made::RoleBinding => Api::<RoleBinding>::namespaced(cluster.client.clone(), ns)
                .patch(name, &pp, &Patch::Merge(&patch))
                .await
                .map(drop),
        };
        result.map_err(|e| {
            cluster.error(
                e,
                "patch",
                made.resource(),
                "(owner reference to the shadow pod)",
            )
        })?;
    }
    Ok(())
}

impl Made {
    pub(crate) fn resource(self) -> &'static str {
        match self {
            Made::ServiceAccount => "serviceaccounts",
            Made::Role => "roles",
            Made::RoleBinding => "rolebindings",
        }
    }
}

/// Deletes the identity objects `made` (named `name`); a missing one counts as
/// deleted. Returns what could not be removed.
pub(crate) async fn delete(cluster: &Cluster, name: &str, made: &[Made]) -> Vec<String> {
    let dp = kube::api::DeleteParams::background();
    let ns = &cluster.namespace;
    let mut left = Vec::new();
    for made in made.iter().rev() {
        let result = match made {
            Made::ServiceAccount => Api::<ServiceAccount>::namespaced(cluster.client.clone(), ns)
                .delete(name, &dp)
                .await
                .map(drop),
            Made::Role => Api::<Role>::namespaced(cluster.client.clone(), ns)
                .delete(name, &dp)
                .await
                .map(drop),
            Made::RoleBinding => Api::<RoleBinding>::namespaced(cluster.client.clone(), ns)
                .delete(name, &dp)
                .await
                .map(drop),
        };
        if let Err(e) = result
            && !crate::cluster::is_not_found(&e)
        {
            left.push(format!("{} `{name}` ({e})", made.resource()));
        }
    }
    left
}

/// Labels for the identity objects: `labels` as they are.
pub(crate) fn meta(name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_names_every_object_it_may_touch() {
        let grants = Grants {
            patch: vec![
                (TargetKind::Service, "web".to_owned()),
                (TargetKind::Service, "web-admin".to_owned()),
                (TargetKind::Deployment, "web".to_owned()),
            ],
            delete_pods: vec!["kt-shadow-s0".to_owned()],
            router: false,
        };
        let rules = rules("kt-shadow-swap-x", &grants);
        assert_eq!(rules.len(), 4);
        for rule in &rules {
            let names = rule.resource_names.as_ref().unwrap();
            assert!(!names.is_empty(), "{rule:?}");
            assert!(
                !rule.verbs.iter().any(|v| v == "list" || v == "*"),
                "{rule:?}"
            );
        }
        assert_eq!(
            rules[2].resource_names.as_deref().unwrap(),
            ["web".to_owned(), "web-admin".to_owned()]
        );
        assert_eq!(rules[3].api_groups.as_deref().unwrap(), ["apps".to_owned()]);
        assert_eq!(rules[1].verbs, ["get", "delete"]);
        assert_eq!(
            rules[1].resource_names.as_deref().unwrap(),
            ["kt-shadow-swap-x".to_owned(), "kt-shadow-s0".to_owned()]
        );
    }
}
