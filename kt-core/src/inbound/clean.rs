//! [`clean`] and [`recover`]: what sessions that died left in a namespace, put back
//! and removed by hand (the swap shadow's watchdog and the sweep at every connect do
//! the same by themselves; these are for when neither could run, and for a look at
//! what is there with a dry run).

use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kt_proto::annotations;
use kt_proto::labels;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams};
use serde_json::Value;

use crate::cluster::restore::{self, Ownership, Undo};
use crate::cluster::workload::{TargetKind, TargetName};
use crate::cluster::{Cluster, is_not_found, leftovers};
use crate::error::{Error, Result};
use crate::options::ConnectOptions;

/// What [`clean`] or [`recover`] did, or in a dry run would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanReport {
    /// Whether nothing was changed (a dry run).
    pub dry_run: bool,
    /// One line per action, in words (`restored Service dev/web: /spec/selector`).
    pub actions: Vec<String>,
    /// What was found but left alone, and why (a live session holds it; someone
    /// changed a value kt had written).
    pub left: Vec<String>,
}

impl std::fmt::Display for CleanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "would do" } else { "done" };
        if self.actions.is_empty() {
            writeln!(f, "nothing to clean")?;
        }
        for a in &self.actions {
            writeln!(f, "{verb}: {a}")?;
        }
        for l in &self.left {
            writeln!(f, "left: {l}")?;
        }
        Ok(())
    }
}

const KINDS: [TargetKind; 3] = [
    TargetKind::Service,
    TargetKind::Deployment,
    TargetKind::StatefulSet,
];

fn holds(object: &Value) -> bool {
    object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(annotations::OWNER))
}

/// Puts back one held object if its holder's lease expired.
async fn restore_expired(
    cluster: &Cluster,
    kind: TargetKind,
    object: &Value,
    report: &mut CleanReport,
) -> Result<()> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match kt_proto::guard::ownership(object, "", Timestamp::now())? {
        Ownership::Held(holder) => {
            report.left.push(format!("{holder} (a live session)"));
        }
        Ownership::Expired { holder, record } => {
            let step = record.unwrap_or_else(|| kt_proto::restore::Step {
                object: holder.object.clone(),
                changes: Vec::new(),
            });
            let fields: Vec<&str> = step.changes.iter().map(|c| c.path.as_str()).collect();
            let what = format!(
                "restore {} ({}) left by kt session `{}` whose lease expired",
                holder.object,
                if fields.is_empty() {
                    "its kt annotations".to_owned()
                } else {
                    fields.join(", ")
                },
                holder.session
            );
            if report.dry_run {
                report.actions.push(what);
            } else {
                let undo: Undo = restore::give_back(cluster, &step, &holder.session).await?;
                report.actions.push(what);
                for c in undo.conflicts {
                    report.left.push(c.to_string());
                }
            }
        }
        Ownership::Free | Ownership::Mine => {
            let _ = (kind, name);
        }
    }
    Ok(())
}

async fn held_objects(cluster: &Cluster, kind: TargetKind) -> Result<Vec<Value>> {
    let (ar, plural) = match kind {
        TargetKind::Service => (ApiResource::erase::<Service>(&()), "services"),
        TargetKind::Deployment => (
            ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
            "deployments",
        ),
        TargetKind::StatefulSet => (
            ApiResource::erase::<k8s_openapi::api::apps::v1::StatefulSet>(&()),
            "statefulsets",
        ),
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &ar);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.error(e, "list", plural, "(looking for what kt changed)"))?;
    // The items of a list carry no apiVersion and kind of their own.
    let types = kube::api::TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    };
    Ok(list
        .items
        .into_iter()
        .map(|mut o| {
            o.types = Some(types.clone());
            o
        })
        .filter_map(|o| serde_json::to_value(o).ok())
        .filter(holds)
        .collect())
}

/// Finds what kt sessions that died left in the namespace of `opts` and puts it back:
/// Services and workloads whose kt lease expired get their recorded values back
/// (guarded: values someone changed meanwhile are left and listed), kt pods whose
/// Lease expired are deleted (a swap shadow restores on the way out), and identities
/// and exposed Services whose shadow pod is gone are removed, and so are the parts of
/// kt's shipped agent (ConfigMaps) that no pod uses. Live sessions are left alone.
/// With `dry_run`, only lists what it would do.
///
/// ```no_run
/// # async fn demo() -> Result<(), kt_core::Error> {
/// let opts = kt_core::ConnectOptions::new().namespace("dev");
/// print!("{}", kt_core::clean(&opts, true).await?); // what a clean would do
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// A missing permission ([`Error::Forbidden`]) or an unreachable API server.
pub async fn clean(opts: &ConnectOptions, dry_run: bool) -> Result<CleanReport> {
    let cluster = Cluster::connect(opts).await?;
    let mut report = CleanReport {
        dry_run,
        ..CleanReport::default()
    };
    for kind in KINDS {
        for object in held_objects(&cluster, kind).await? {
            restore_expired(&cluster, kind, &object, &mut report).await?;
        }
    }
    for (name, why) in leftovers::find(&cluster).await? {
        report.actions.push(format!(
            "delete kt pod {}/{name} ({why})",
            cluster.namespace
        ));
        if !dry_run {
            leftovers::delete(&cluster, &name).await?;
        }
    }
    orphans(&cluster, &mut report).await?;
    for part in crate::shadow::agent::unused_parts(&cluster).await? {
        report.actions.push(format!(
            "delete ConfigMap {}/{part} (a part of kt's agent no pod uses)",
            cluster.namespace
        ));
        if !dry_run {
            crate::shadow::agent::delete_part(&cluster, &part).await?;
        }
    }
    Ok(report)
}

/// Identities (ServiceAccount, Role, RoleBinding) and exposed Services kt made whose
/// shadow pod is gone (normally the garbage collector removes them with the pod).
async fn orphans(cluster: &Cluster, report: &mut CleanReport) -> Result<()> {
    let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let lp = ListParams::default().labels(&selector);
    let pods: Api<Pod> = cluster.pods();
    let pod_names: Vec<String> = pods
        .list(&lp)
        .await
        .map_err(|e| cluster.error(e, "list", "pods", "(kt pods)"))?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    let client = cluster.client.clone();
    let ns = cluster.namespace.clone();
    macro_rules! sweep {
        ($ty:ty, $plural:expr, $owner:expr) => {{
            let api: Api<$ty> = Api::namespaced(client.clone(), &ns);
            let list = api
                .list(&lp)
                .await
                .map_err(|e| cluster.error(e, "list", $plural, "(kt objects)"))?;
            for item in list.items {
                let Some(name) = item.metadata.name.clone() else {
                    continue;
                };
                let owner: Option<String> = $owner(&item.metadata, &name);
                let Some(owner) = owner else { continue };
                if pod_names.contains(&owner) {
                    continue;
                }
                report.actions.push(format!(
                    "delete {} {}/{name} (its kt pod {owner} is gone)",
                    $plural, cluster.namespace
                ));
                if !report.dry_run {
                    match api.delete(&name, &DeleteParams::background()).await {
                        Ok(_) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => {
                            return Err(cluster.error(e, "delete", $plural, &format!("`{name}`")));
                        }
                    }
                }
            }
        }};
    }
    let same_name = |_: &kube::api::ObjectMeta, name: &str| Some(name.to_owned());
    let owner_pod = |meta: &kube::api::ObjectMeta, _: &str| {
        meta.owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Pod")
            .map(|o| o.name.clone())
    };
    sweep!(ServiceAccount, "serviceaccounts", same_name);
    sweep!(Role, "roles", same_name);
    sweep!(RoleBinding, "rolebindings", same_name);
    sweep!(Service, "services", owner_pod);
    Ok(())
}

/// Puts back one target (`deploy/web`, `svc/web`, a bare name, as for
/// [`Session::swap`](crate::Session::swap)) that a kt session which died left
/// changed: its recorded selector or replica count is restored. Refused while a live
/// session holds it. With `dry_run`, only lists what it would do.
///
/// # Errors
///
/// [`Error::TargetHeld`] while a live session holds it; [`Error::TargetNotFound`].
pub async fn recover(opts: &ConnectOptions, target: &str, dry_run: bool) -> Result<CleanReport> {
    let cluster = Cluster::connect(opts).await?;
    let name: TargetName = target.parse()?;
    let resolved = cluster.resolve_swap_target(&name).await?;
    let mut report = CleanReport {
        dry_run,
        ..CleanReport::default()
    };
    let mut objects: Vec<(TargetKind, String)> = resolved
        .services
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .map(|n| (TargetKind::Service, n))
        .collect();
    if let Some(w) = &resolved.workload {
        objects.push((w.kind, w.name.clone()));
    }
    for (kind, object_name) in objects {
        let object = restore::get(&cluster, kind.proto(), &object_name).await?;
        if !holds(&object) {
            continue;
        }
        if let Ownership::Held(holder) = kt_proto::guard::ownership(&object, "", Timestamp::now())?
        {
            return Err(Error::TargetHeld {
                message: format!(
                    "{}; recover puts back only what a session that died left: close that \
                     session, or wait until its lease expires",
                    holder
                ),
            });
        }
        restore_expired(&cluster, kind, &object, &mut report).await?;
    }
    Ok(report)
}
