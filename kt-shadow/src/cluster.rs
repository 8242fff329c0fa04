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
//!
//! The client is kube's default stack (base URL, retries of server errors, credentials,
//! extra headers, rustls over HTTP/1.1 with kube's timeouts) built here around an HTTP
//! connector whose resolver is the shadow's own ([`crate::resolve`]): kube's default
//! connector resolves with `getaddrinfo`, which the static binary must not call. In a pod
//! the server is `KUBERNETES_SERVICE_HOST`, an IP, so nothing is looked up; a
//! kubeconfig's server name is resolved with the host's `/etc/hosts` and
//! `/etc/resolv.conf`. Not supported here: a kubeconfig's `proxy-url` (refused with an
//! error) and the expiry of client certificates from an exec plugin (the shadow's
//! client is made once).

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ConfigExt};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tower::ServiceBuilder;
use tower::retry::RetryLayer;

use crate::resolve::Resolver;

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
        let client = client(config, Resolver::default())?;
        Ok(Cluster { client, namespace })
    }
}

/// kube's default client for `config`, with `resolver` for the server's name.
fn client(config: Config, resolver: Resolver) -> Result<Client, String> {
    if let Some(proxy) = &config.proxy_url {
        return Err(format!(
            "the kubeconfig's proxy-url ({proxy}) is not supported by kt-shadow; use a \
             kubeconfig without it"
        ));
    }
    let namespace = config.default_namespace.clone();
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    let https = config
        .rustls_https_connector_with_connector(http)
        .map_err(|e| e.to_string())?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let retry = config
        .default_retry
        .then(|| RetryLayer::new(RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer().map_err(|e| e.to_string())?)
        .layer(config.extra_headers_layer().map_err(|e| e.to_string())?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(Client::new(service, namespace))
}

#[cfg(test)]
mod tests {
    //! Against the lab's API server.

    use kt_lab_tests::Lab;

    use super::*;

    /// The client resolves the server's name with the shadow's resolver (here: a hosts
    /// file of the test's own that names the lab's API server; the C library's
    /// resolver would not know the name), then talks to it with the kubeconfig's
    /// credentials.
    #[tokio::test]
    async fn the_client_resolves_the_server_name_itself()
    -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let lab = Lab::connect().await?;
        let mut kubeconfig = Kubeconfig::read_from(lab.kubeconfig())?;
        for named in &mut kubeconfig.clusters {
            let cluster = named.cluster.as_mut().expect("a cluster");
            let server = cluster.server.clone().expect("a server URL");
            assert!(server.starts_with("https://127.0.0.1:"), "{server}");
            cluster.server = Some(server.replace("127.0.0.1", "api.kt-lab.invalid"));
            // The certificate names the address, not our name.
            cluster.tls_server_name = Some("127.0.0.1".to_owned());
        }
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let dir = std::env::temp_dir().join(format!("kt-shadow-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("hosts"), "127.0.0.1 api.kt-lab.invalid\n")?;
        // Never asked: the name is in the hosts file.
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n")?;
        let resolver = Resolver::new(dir.join("resolv.conf"), dir.join("hosts"));
        let version = client(config, resolver)?.apiserver_version().await;
        std::fs::remove_dir_all(&dir)?;
        assert!(!version?.git_version.is_empty());
        Ok(())
    }
}
