//! Everything kt does with the Kubernetes API: loading the configuration, the shadow's
//! Secret, Pod and Lease, waiting for it, looking up forward targets, cleanup.
//! [`restore`] makes and undoes, guarded, the changes a swap makes to objects kt
//! does not own (the pure computation is [`kt_proto::guard`]); [`workload`] finds
//! what a swap takes over.

pub(crate) mod cidr;
mod client;
pub(crate) mod leftovers;
pub(crate) mod ranges;
pub(crate) mod restore;
pub(crate) mod target;
pub(crate) mod workload;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::error::{Error, Result};
use crate::options::ConnectOptions;

/// A kube client plus what error messages need to know about it.
#[derive(Clone)]
pub(crate) struct Cluster {
    pub(crate) client: Client,
    /// The API server URL, for messages.
    pub(crate) server: String,
    /// The kubeconfig's `proxy-url`, if any (VPN mode never routes its host).
    pub(crate) proxy: Option<String>,
    /// The namespace the session works in.
    pub(crate) namespace: String,
}

impl Cluster {
    /// Loads the configuration the way kubectl does and builds a client.
    ///
    /// With an explicit kubeconfig path, that file; otherwise the default loading rules
    /// (`KUBECONFIG`, then `~/.kube/config`) and, when neither exists and no context was
    /// asked for, the in-cluster configuration. `proxy-url` and exec/auth plugins are
    /// handled by kube-rs.
    pub(crate) async fn connect(opts: &ConnectOptions) -> Result<Cluster> {
        let kc_opts = KubeConfigOptions {
            context: opts.context.clone(),
            cluster: None,
            user: None,
        };
        let config = match &opts.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|source| Error::ReadKubeconfig {
                    path: path.clone(),
                    source,
                })?;
                Config::from_custom_kubeconfig(kc, &kc_opts)
                    .await
                    .map_err(|source| Error::Kubeconfig {
                        path: path.display().to_string(),
                        context: opts.context.clone(),
                        source,
                    })?
            }
            None if opts.context.is_some() => {
                Config::from_kubeconfig(&kc_opts)
                    .await
                    .map_err(|source| Error::Kubeconfig {
                        path: "the default kubeconfig".to_owned(),
                        context: opts.context.clone(),
                        source,
                    })?
            }
            None => Config::infer()
                .await
                .map_err(|source| Error::NoConfig { source })?,
        };
        let server = config.cluster_url.to_string();
        let proxy = config.proxy_url.as_ref().map(ToString::to_string);
        let namespace = opts
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = client::build_client(config).map_err(|source| Error::Client {
            server: server.clone(),
            source,
        })?;
        Ok(Cluster {
            client,
            server,
            proxy,
            namespace,
        })
    }

    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(crate) fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(crate) fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(crate) fn services_in(&self, namespace: &str) -> Api<Service> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Turns a kube-rs error into kt's, naming what was being done.
    pub(crate) fn error(
        &self,
        source: kube::Error,
        verb: &'static str,
        resource: &'static str,
        what: &str,
    ) -> Error {
        map_error(source, &self.server, &self.namespace, verb, resource, what)
    }
}

/// Maps a kube-rs error to kt's: RBAC refusals, missing namespaces and unreachable API
/// servers get their own variants.
pub(crate) fn map_error(
    source: kube::Error,
    server: &str,
    namespace: &str,
    verb: &'static str,
    resource: &'static str,
    what: &str,
) -> Error {
    let action = format!("{verb} {resource} {what} in namespace `{namespace}`");
    match &source {
        kube::Error::Api(status) if status.code == 403 => Error::Forbidden {
            verb,
            resource,
            namespace: namespace.to_owned(),
            message: status.message.clone(),
        },
        kube::Error::Api(status)
            if status.code == 404
                && status
                    .message
                    .starts_with(&format!("namespaces \"{namespace}\" not found")) =>
        {
            Error::NamespaceNotFound {
                namespace: namespace.to_owned(),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::Auth(_) => {
            Error::ApiUnreachable {
                server: server.to_owned(),
                action,
                source,
            }
        }
        _ => Error::Api { action, source },
    }
}

/// Whether an error says the object does not exist.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// A kind of object kt creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    /// A shadow pod (deleted without grace: its clients are gone).
    Pod,
    /// A shadow's Secret.
    Secret,
    /// A session's Lease: owned by the pod, so the garbage collector removes it with
    /// the pod (kt may not delete Leases); cleanup waits until it is gone.
    Lease,
}

impl ObjectKind {
    fn noun(self) -> &'static str {
        match self {
            ObjectKind::Pod => "pod",
            ObjectKind::Secret => "secret",
            ObjectKind::Lease => "lease",
        }
    }
}

/// The objects one owner (a shadow) created, in creation order, for cleanup.
#[derive(Debug, Clone)]
pub(crate) struct Objects {
    /// The session id (for the clean-up hint in errors).
    pub(crate) session: String,
    created: Vec<(ObjectKind, String)>,
}

/// How often cleanup checks whether the deleted objects are gone.
const GONE_POLL: Duration = Duration::from_millis(200);

impl Objects {
    /// Nothing created yet.
    pub(crate) fn new(session: &str) -> Objects {
        Objects {
            session: session.to_owned(),
            created: Vec::new(),
        }
    }

    /// Records that `name` of `kind` now exists.
    pub(crate) fn created(&mut self, kind: ObjectKind, name: &str) {
        self.created.push((kind, name.to_owned()));
    }

    /// Whether anything was created.
    pub(crate) fn is_empty(&self) -> bool {
        self.created.is_empty()
    }

    /// Deletes every object that was created (newest first) and waits (up to
    /// `timeout`) until the API server no longer has them. A Secret is known gone from
    /// the answer to its deletion (kt may not read Secrets); a Lease is removed by the
    /// garbage collector once its pod is gone.
    pub(crate) async fn delete(&self, cluster: &Cluster, timeout: Duration) -> Result<()> {
        let mut remaining = Vec::new();
        for (kind, name) in self.created.iter().rev() {
            let deleted = match kind {
                ObjectKind::Pod => {
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::background()
                    };
                    cluster.pods().delete(name, &dp).await.map(drop)
                }
                ObjectKind::Secret => {
                    match cluster
                        .secrets()
                        .delete(name, &DeleteParams::background())
                        .await
                    {
                        // Deleted at once: the API server answers with a Status.
                        Ok(answer) if answer.is_right() => Ok(()),
                        // The object itself: still there, marked for deletion (a
                        // finalizer holds it).
                        Ok(_) => {
                            remaining.push(format!(
                                "secret `{name}` (still present: a finalizer holds it)"
                            ));
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                ObjectKind::Lease => Ok(()),
            };
            if let Err(e) = deleted
                && !is_not_found(&e)
            {
                remaining.push(format!("{} `{name}` ({e})", kind.noun()));
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut present = Vec::new();
            for (kind, name) in &self.created {
                let exists = match kind {
                    ObjectKind::Pod => exists(&cluster.pods(), name).await,
                    ObjectKind::Secret => false,
                    ObjectKind::Lease => exists(&cluster.leases(), name).await,
                };
                if exists {
                    present.push(format!("{} `{name}` (still present)", kind.noun()));
                }
            }
            if present.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                remaining.extend(present);
                break;
            }
            tokio::time::sleep(GONE_POLL).await;
        }
        if remaining.is_empty() {
            Ok(())
        } else {
            Err(Error::Cleanup {
                session: self.session.clone(),
                namespace: cluster.namespace.clone(),
                remaining,
            })
        }
    }
}

/// Whether the object exists; an API failure counts as "exists" (not proven gone).
async fn exists<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde_json_compat::DeserializeOwned + std::fmt::Debug,
{
    !matches!(api.get_metadata_opt(name).await, Ok(None))
}

/// `serde::de::DeserializeOwned` without a direct serde dependency.
mod serde_json_compat {
    pub(crate) use k8s_openapi::serde::de::DeserializeOwned;
}
