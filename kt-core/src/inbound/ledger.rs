//! Runs the guarded changes of [`crate::cluster::restore`] against the API server:
//! take an object (write kt's values and the ownership record in one JSON Patch),
//! renew the lease kept on it, give it back. Each patch carries `test` operations, so a
//! concurrent writer makes it fail with 422 (or 409) instead of being overwritten; the
//! object is then read again and the change recomputed, a bounded number of times.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kt_proto::restore::{ObjectRef, Step};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::cluster::restore::{self, Forward, Hold, Ownership, Undo};
use crate::cluster::workload::TargetKind;
use crate::cluster::{Cluster, is_not_found};
use crate::error::{Error, Result};

/// How many times a change is recomputed after a concurrent write.
const ATTEMPTS: usize = 8;

/// What [`take`] did.
#[derive(Debug)]
pub(crate) struct Taken {
    /// The change as applied (originals as seen when it was applied).
    pub(crate) step: Step,
    /// When the object was held by a session whose lease had expired: what undoing
    /// its record did before taking over.
    pub(crate) took_over: Option<(String, Undo)>,
}

fn resource(kind: TargetKind) -> (ApiResource, &'static str) {
    match kind {
        TargetKind::Service => (ApiResource::erase::<Service>(&()), "services"),
        TargetKind::Deployment => (ApiResource::erase::<Deployment>(&()), "deployments"),
        TargetKind::StatefulSet => (ApiResource::erase::<StatefulSet>(&()), "statefulsets"),
    }
}

pub(crate) fn kind_of(object: &ObjectRef) -> Option<TargetKind> {
    match object.kind.as_str() {
        "Service" => Some(TargetKind::Service),
        "Deployment" => Some(TargetKind::Deployment),
        "StatefulSet" => Some(TargetKind::StatefulSet),
        _ => None,
    }
}

fn api(cluster: &Cluster, kind: TargetKind) -> (Api<DynamicObject>, &'static str) {
    let (ar, plural) = resource(kind);
    (
        Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &ar),
        plural,
    )
}

/// The object as JSON, `None` if it does not exist.
pub(crate) async fn get(cluster: &Cluster, kind: TargetKind, name: &str) -> Result<Option<Value>> {
    let (api, plural) = api(cluster, kind);
    let found = api
        .get_opt(name)
        .await
        .map_err(|e| cluster.error(e, "get", plural, &format!("`{name}`")))?;
    found
        .map(|o| {
            serde_json::to_value(o).map_err(|e| Error::Internal {
                what: format!("{plural} `{name}` as JSON: {e}"),
            })
        })
        .transpose()
}

/// Whether a failed patch is a lost race (a `test` failed, or a conflict).
fn lost_race(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409 || s.code == 422)
}

async fn apply(
    cluster: &Cluster,
    kind: TargetKind,
    name: &str,
    patch: &json_patch::Patch,
) -> std::result::Result<(), kube::Error> {
    let (api, _) = api(cluster, kind);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::<()>::Json(patch.clone()),
    )
    .await
    .map(drop)
}

/// Takes `name` for `hold.session`, writing `writes` (JSON pointer, new value; `None`
/// removes the field). Refused with [`Error::TargetHeld`] while another live session
/// holds it; a holder whose lease expired is undone first (a take-over).
pub(crate) async fn take(
    cluster: &Cluster,
    kind: TargetKind,
    name: &str,
    writes: &[(String, Option<Value>)],
    hold: &Hold,
) -> Result<Taken> {
    let (_, plural) = resource(kind);
    let mut took_over = None;
    for _ in 0..ATTEMPTS {
        let object = get(cluster, kind, name)
            .await?
            .ok_or_else(|| Error::TargetNotFound {
                kind: plural,
                name: name.to_owned(),
                namespace: cluster.namespace.clone(),
                detail: "it was deleted while kt was taking it over".to_owned(),
            })?;
        match restore::ownership(&object, &hold.session, Timestamp::now())? {
            Ownership::Held(holder) => {
                return Err(Error::TargetHeld {
                    message: holder.refusal(),
                });
            }
            Ownership::Expired { holder, record } => {
                // A record-less hold (only the annotations) is released all the same.
                let step = record.unwrap_or_else(|| Step {
                    object: holder.object.clone(),
                    changes: Vec::new(),
                });
                if let Some(undo) =
                    give_back_once(cluster, kind, &object, &step, &holder.session).await?
                {
                    tracing::info!(
                        target: "kt",
                        "{}: took over from kt session `{}`, whose lease expired",
                        holder.object,
                        holder.session
                    );
                    took_over = Some((holder.session.clone(), undo));
                }
                continue;
            }
            Ownership::Free | Ownership::Mine => {}
        }
        let step = restore::step(&object, writes.to_vec())?;
        match restore::forward(&object, &step, hold)? {
            Forward::AlreadyApplied => return Ok(Taken { step, took_over }),
            Forward::Refused(holder) => {
                return Err(Error::TargetHeld {
                    message: holder.refusal(),
                });
            }
            Forward::Apply(patch) => match apply(cluster, kind, name, &patch).await {
                Ok(()) => return Ok(Taken { step, took_over }),
                Err(e) if lost_race(&e) => {
                    tracing::debug!(target: "kt", "{plural} `{name}` changed meanwhile: {e}");
                }
                Err(e) => {
                    return Err(cluster.error(e, "patch", plural, &format!("`{name}`")));
                }
            },
        }
    }
    Err(raced(cluster, plural, name))
}

fn raced(cluster: &Cluster, plural: &'static str, name: &str) -> Error {
    Error::TargetHeld {
        message: format!(
            "{plural} `{name}` in namespace `{}` kept changing while kt tried to change it \
             ({ATTEMPTS} tries); something else is writing it (a controller or a deploy \
             tool): try again when it is quiet",
            cluster.namespace
        ),
    }
}

/// One guarded undo of `step` on `object` as read; `None` when the patch lost a race
/// (read again and retry).
async fn give_back_once(
    cluster: &Cluster,
    kind: TargetKind,
    object: &Value,
    step: &Step,
    session: &str,
) -> Result<Option<Undo>> {
    let (_, plural) = resource(kind);
    let undo = restore::undo(object, step, session)?;
    let Some(patch) = &undo.patch else {
        return Ok(Some(undo));
    };
    match apply(cluster, kind, &step.object.name, patch).await {
        Ok(()) => Ok(Some(undo)),
        Err(e) if lost_race(&e) => Ok(None),
        Err(e) if is_not_found(&e) => Ok(Some(Undo::default())),
        Err(e) => Err(cluster.error(e, "patch", plural, &format!("`{}`", step.object.name))),
    }
}

/// Puts back what `step` changed for `session`, guarded: values someone else changed
/// meanwhile are left as they are and reported in [`Undo::conflicts`].
pub(crate) async fn give_back(cluster: &Cluster, step: &Step, session: &str) -> Result<Undo> {
    let kind = kind_of(&step.object).ok_or_else(|| Error::Internal {
        what: format!("no API for {}", step.object),
    })?;
    let (_, plural) = resource(kind);
    for _ in 0..ATTEMPTS {
        let Some(object) = get(cluster, kind, &step.object.name).await? else {
            return Ok(Undo::default());
        };
        if let Some(undo) = give_back_once(cluster, kind, &object, step, session).await? {
            return Ok(undo);
        }
    }
    Err(raced(cluster, plural, &step.object.name))
}

/// Moves the lease expiry kept on the object of `step` to `expires`; guarded by the
/// owner annotation (a lost hold is an error: someone took the object over).
pub(crate) async fn renew(
    cluster: &Cluster,
    step: &Step,
    session: &str,
    expires: Timestamp,
) -> Result<()> {
    let kind = kind_of(&step.object).ok_or_else(|| Error::Internal {
        what: format!("no API for {}", step.object),
    })?;
    let (_, plural) = resource(kind);
    apply(
        cluster,
        kind,
        &step.object.name,
        &restore::renew(session, expires),
    )
    .await
    .map_err(|e| {
        cluster.error(
            e,
            "patch",
            plural,
            &format!("`{}` (lease renewal)", step.object.name),
        )
    })
}
