//! Building the kube client with `TCP_NODELAY` on its connections to the API server.
//!
//! kube-rs's default stack (`Client::try_from(Config)`) connects with a plain
//! `HttpConnector`, which leaves Nagle's algorithm on. kt's tunnel is SSH over a
//! port-forward WebSocket on that connection, so small writes that follow an
//! un-ACKed one wait for the server's delayed ACK (~40 ms). This module assembles the
//! same stack kube does (rustls with the config's CA and client certificates, the
//! timeouts, base URI, retries, auth incl. exec plugins and tokens, extra headers), only
//! with `set_nodelay(true)` on the connector.

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ConfigExt};
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// Builds a kube client whose TCP connections have `TCP_NODELAY` set.
///
/// With a `proxy-url` in the configuration, falls back to kube-rs's own stack, which
/// knows how to tunnel through HTTP(S) and SOCKS5 proxies.
pub(crate) fn build_client(config: Config) -> kube::Result<Client> {
    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper_client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);

    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper_client);

    Ok(Client::new(service, config.default_namespace.clone()))
}
