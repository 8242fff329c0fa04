//! The shadow's own Kubernetes client, for its watchdogs: reading the session's Lease
//! (`--lease`, [`crate::lease`]) and restoring what the session changed
//! (`--restore`, [`crate::restore`]).
//!
//! In the shadow pod it uses the pod's ServiceAccount token and namespace (the
//! in-cluster configuration). Outside a pod, for tests and for running kt-shadow by
//! hand beside a cluster, the environment variable [`KUBECONFIG_ENV`] names a
//! kubeconfig file to use instead: its current context's cluster, user and namespace.
//! kt never sets it in a shadow pod, and the generic `KUBECONFIG` is not read, so a
//! variable inherited by accident cannot point the shadow elsewhere.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Environment variable naming a kubeconfig file the shadow uses instead of the
/// in-cluster configuration (tests, and kt-shadow run by hand outside a pod).
pub const KUBECONFIG_ENV: &str = "KT_SHADOW_KUBECONFIG";

/// A client and the namespace the shadow works in (its pod's).
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub client: Client,
    /// The pod's namespace (or the kubeconfig context's).
    pub namespace: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The in-cluster configuration, or the kubeconfig named by [`KUBECONFIG_ENV`].
    /// Reads no more than files and the environment: nothing is sent to the API
    /// server yet.
    ///
    /// # Errors
    ///
    /// Why there is no usable configuration, as text for the log: no in-cluster
    /// credentials (`KUBERNETES_SERVICE_HOST` unset, or no token mounted), or an
    /// unreadable kubeconfig.
    pub async fn connect() -> Result<Cluster, String> {
        let config = match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| {
                    format!(
                        "cannot read {KUBECONFIG_ENV}={}: {e}",
                        path.to_string_lossy()
                    )
                })?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot use {KUBECONFIG_ENV}={}: {e}",
                            path.to_string_lossy()
                        )
                    })?
            }
            None => Config::incluster().map_err(|e| e.to_string())?,
        };
        let namespace = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|e| e.to_string())?;
        Ok(Cluster { client, namespace })
    }
}
