//! The shadow: a pod kt runs in the cluster with an SSH server, its keys (and, for
//! the OpenSSH flavour, its Secret), the transport to it and the session's Lease.
//! [`Shadow::launch`] makes one for a role (connect today; swap, expose and the mesh
//! router use the same call with their own role and [`PodShape`]) and
//! [`Shadow::close`] removes it.

pub(crate) mod agent;
pub(crate) mod base;
pub(crate) mod host_key;
pub(crate) mod lease;
pub(crate) mod spec;
pub(crate) mod wait;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kt_proto::Role;
use kube::api::{Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ObjectKind, Objects};
use crate::error::{Error, Result};
use crate::events::{Event, EventBus};
use crate::options::{ConnectOptions, ShadowFlavour};
use crate::task::Tasks;
use crate::transport::{TransportConfig, Tunnel};
pub(crate) use spec::PodShape;
pub(crate) use spec::Runtime;
use spec::{SessionKeys, ShadowSpec};

/// A running shadow pod and the tunnel to it.
pub(crate) struct Shadow {
    /// The pod's name (and, for the OpenSSH flavour, its Secret's).
    pub(crate) name: String,
    /// The session id it belongs to.
    pub(crate) session: String,
    /// The pod as created (its UID, for owner references).
    pub(crate) pod: k8s_openapi::api::core::v1::Pod,
    /// The transport to the pod's SSH server, reconnecting by itself.
    pub(crate) tunnel: Arc<Tunnel>,
    cluster: Cluster,
    objects: Objects,
    /// The tunnel's supervisor and the Lease's renewal.
    tasks: Tasks,
    /// Stops renewing the Lease only (tests of the watchdog and the leftover sweep).
    renewal: CancellationToken,
    close_timeout: Duration,
}

impl Shadow {
    /// Creates the shadow's pod and Lease (and, for the OpenSSH flavour, its Secret)
    /// for `role` (named `kt-shadow-<id>` for a connect shadow, `kt-<role>-<id>`
    /// otherwise), waits until the pod is Ready, learns its host key, brings the first
    /// link up, and starts the tunnel's supervisor and the Lease's renewal.
    /// On failure, whatever was created is removed before the error is returned.
    pub(crate) async fn launch(
        cluster: &Cluster,
        opts: &ConnectOptions,
        session: &str,
        role: Role,
        shape: &PodShape,
        events: &Arc<EventBus>,
    ) -> Result<Shadow> {
        let name = pod_name(role, session);
        let runtime = runtime(cluster, opts, shape.borrow_from.as_deref(), events).await?;
        let spec = ShadowSpec {
            session,
            name: &name,
            runtime: &runtime,
            role,
            shape,
            opts,
        };
        events.emit(Event::Creating {
            namespace: cluster.namespace.clone(),
            pod: name.clone(),
            image: runtime.image().to_owned(),
        });
        let mut objects = Objects::new(session);
        match start(cluster, opts, &spec, &mut objects, events).await {
            Ok((tunnel, pod)) => {
                let tasks = Tasks::new();
                tasks
                    .spawn(Arc::clone(&tunnel).supervise(tasks.cancel.clone(), Arc::clone(events)));
                let renewal = tasks.cancel.child_token();
                tasks.spawn(lease::renew(
                    cluster.clone(),
                    name.clone(),
                    lease::renew_interval(opts.heartbeat_interval, opts.shadow_heartbeat_timeout),
                    renewal.clone(),
                    Arc::clone(events),
                ));
                Ok(Shadow {
                    name,
                    session: session.to_owned(),
                    pod,
                    tunnel,
                    cluster: cluster.clone(),
                    objects,
                    tasks,
                    renewal,
                    close_timeout: opts.close_timeout,
                })
            }
            Err(e) => {
                if !objects.is_empty()
                    && let Err(c) = objects.delete(cluster, opts.close_timeout).await
                {
                    tracing::warn!(target: "kt", "after a failed start of {name}: {c}");
                }
                Err(e)
            }
        }
    }

    /// Ends the tunnel and the Lease's renewal, removes the pod (and its Secret) and
    /// waits until the API server no longer has them (nor the Lease, which the garbage
    /// collector removes with the pod).
    pub(crate) async fn close(&self) -> Result<()> {
        self.tasks.cancel.cancel();
        self.tunnel.close().await;
        let deleted = self.objects.delete(&self.cluster, self.close_timeout).await;
        self.tasks.close().await;
        deleted
    }

    /// Stops the shadow's own tasks at once (from a `Drop`, before [`Shadow::close`]
    /// runs in the background).
    pub(crate) fn stop_tasks(&self) {
        self.tasks.cancel.cancel();
    }

    /// Stops renewing the Lease, as a client that froze would (tests of the shadow's
    /// watchdog and of the leftover sweep); the tunnel stays up.
    pub(crate) fn stop_lease_renewal(&self) {
        self.renewal.cancel();
    }

    /// Breaks the current link as a network failure would (tests of reconnects).
    pub(crate) fn break_link(&self) {
        self.tunnel.break_link();
    }
}

/// What a shadow runs: the image the options name, else kt's agent shipped to the
/// namespace (uploaded once, see [`agent`]) on a base image a running pod lends (one
/// matching `prefer` first, see [`base`]).
pub(crate) async fn runtime(
    cluster: &Cluster,
    opts: &ConnectOptions,
    prefer: Option<&str>,
    events: &EventBus,
) -> Result<Runtime> {
    if let Some(image) = opts.image() {
        return Ok(Runtime::Image(image));
    }
    if opts.flavour == ShadowFlavour::OpenSsh {
        return Err(Error::InvalidArgument {
            what: "shadow image".to_owned(),
            value: String::new(),
            expected: "an image with sshd for the openssh flavour (the shadow image option, \
                       --image or KT_SHADOW_IMAGE); kt ships only its own agent"
                .to_owned(),
        });
    }
    let agent = agent::Agent::locate(opts.agent_dir.as_deref())?;
    let shipped = agent::ship(cluster, &agent, events).await?;
    let base = base::choose(cluster, prefer, opts.base_image_or_default()).await;
    Ok(Runtime::Shipped {
        base,
        agent: shipped,
    })
}

/// A new id for a session or an inbound handle (the `kt.dev/session` label of its
/// objects): 8 characters of `[a-z0-9]`, unique enough per namespace, short in pod
/// names.
pub(crate) fn session_id() -> String {
    crate::options::random_id()
}

/// The name of the shadow pod of `role` for `session`: `kt-shadow-<id>` for a connect
/// shadow, `kt-<role>-<id>` otherwise (`kt-shadow-swap-<id>`). Its Lease, and an inbound
/// shadow's ServiceAccount, Role and RoleBinding, have the same name.
pub(crate) fn pod_name(role: Role, session: &str) -> String {
    match role {
        Role::ShadowConnect => format!("kt-shadow-{session}"),
        other => format!("kt-{}-{session}", other.as_str()),
    }
}

/// Creates the objects, waits for the pod, learns its host key and brings the first
/// link up.
///
/// The host key pinned for every link: for kt-shadow, the one the pod reports in its
/// log, read through the API server while the pod is checked to be the one created
/// here ([`host_key::read`] says why a peer can neither forge it nor answer with it
/// later); for the OpenSSH flavour, the one made here and handed over in the Secret
/// (so that flavour relies on the UID check of every link alone: whoever can read the
/// Secret holds its host key).
async fn start(
    cluster: &Cluster,
    opts: &ConnectOptions,
    spec: &ShadowSpec<'_>,
    objects: &mut Objects,
    events: &EventBus,
) -> Result<(Arc<Tunnel>, k8s_openapi::api::core::v1::Pod)> {
    let deadline = tokio::time::Instant::now() + opts.pod_ready_timeout;
    let keys = SessionKeys::generate(spec.session, opts.flavour)?;
    let pp = PostParams::default();
    if let Some(host) = &keys.host {
        cluster
            .secrets()
            .create(&pp, &spec.secret(&keys, host)?)
            .await
            .map_err(|e| cluster.error(e, "create", "secrets", "(the shadow's keys)"))?;
        objects.created(ObjectKind::Secret, spec.name);
    }
    let pod = cluster
        .pods()
        .create(&pp, &spec.pod(&keys.client_public()?))
        .await
        .map_err(|e| pod_create_error(cluster, e))?;
    objects.created(ObjectKind::Pod, spec.name);
    // Pinned: every link checks that the pod of this name is still this one.
    let uid = pod
        .metadata
        .uid
        .clone()
        .ok_or_else(|| Error::ShadowFailed {
            pod: spec.name.to_owned(),
            namespace: cluster.namespace.clone(),
            reason: "the API server returned the created pod without a UID".to_owned(),
            log: String::new(),
        })?;
    let lease = lease::object(spec, &pod, opts.shadow_heartbeat_timeout, Timestamp::now());
    cluster
        .leases()
        .create(&pp, &lease)
        .await
        .map_err(|e| cluster.error(e, "create", "leases", "(the session's Lease)"))?;
    objects.created(ObjectKind::Lease, spec.name);
    // After the Lease, which the shadow looks for as soon as it starts: a `clean`
    // between the upload and the pod's creation removed nothing for good.
    if let Runtime::Shipped { agent, .. } = spec.runtime {
        agent::reship_missing(cluster, agent).await?;
    }
    if keys.host.is_some()
        && let Some(owner) = ShadowSpec::owner_reference(&pod)
    {
        let patch = serde_json::json!({ "metadata": { "ownerReferences": [owner] } });
        cluster
            .secrets()
            .patch(spec.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                cluster.error(e, "patch", "secrets", "(owner reference to the shadow pod)")
            })?;
    }
    wait::pod_ready(
        cluster,
        spec.name,
        spec.runtime,
        opts.pod_ready_timeout,
        events,
    )
    .await?;
    let host_key = match &keys.host {
        Some(host) => host.public_key().clone(),
        None => host_key::read(cluster, spec.name, &uid, spec.runtime.image(), deadline).await?,
    };
    let cfg = TransportConfig {
        pods: cluster.pods(),
        server: cluster.server.clone(),
        namespace: cluster.namespace.clone(),
        pod: spec.name.to_owned(),
        uid,
        port: opts.ssh_port,
        user: opts.flavour.user().to_owned(),
        key: Arc::clone(&keys.client),
        host_key,
        attempt_timeout: opts.port_forward_timeout,
        open_timeout: opts.connect_timeout,
        reconnect_timeout: opts.reconnect_timeout,
    };
    Ok((Tunnel::open_first(cfg, deadline).await?, pod))
}

/// The error for a refused shadow pod: [`Error::ShadowServiceAccount`] when the
/// namespace lacks ServiceAccount `kt-shadow` (the ServiceAccount admission refuses
/// the pod with 403), else as any API error.
fn pod_create_error(cluster: &Cluster, e: kube::Error) -> Error {
    let missing = format!(
        "serviceaccount \"{}\" not found",
        kt_proto::shadow::SERVICE_ACCOUNT
    );
    match &e {
        kube::Error::Api(status) if status.code == 403 && status.message.contains(&missing) => {
            Error::ShadowServiceAccount {
                namespace: cluster.namespace.clone(),
                message: status.message.clone(),
            }
        }
        _ => cluster.error(e, "create", "pods", "(the shadow pod)"),
    }
}
