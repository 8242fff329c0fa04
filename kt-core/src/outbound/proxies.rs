//! The session's local SOCKS5 and HTTP proxies on 127.0.0.1.
//!
//! They listen on the loopback only. Without credentials, like `kubectl port-forward`
//! and `ssh -D`, any local process (of any user) may use them; with
//! [`ConnectOptions::proxy_auth`](crate::ConnectOptions::proxy_auth) they require the
//! session's random [`ProxyCredentials`], which the URLs they hand out carry.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::outbound::auth::ProxyCredentials;
use crate::outbound::{Upstream, accept_loop, bind, http, socks};
use crate::task::Tasks;

/// Where the proxies listen, and the credentials they require.
#[derive(Clone)]
pub(crate) struct Proxies {
    pub(crate) socks5: SocketAddr,
    pub(crate) http: SocketAddr,
    credentials: Option<Arc<ProxyCredentials>>,
}

impl fmt::Debug for Proxies {
    /// The addresses and whether credentials are required (never the password).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxies")
            .field("socks5", &self.socks5)
            .field("http", &self.http)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl Proxies {
    /// Binds both (port 0: a free port) and serves them on `tasks` until cancelled;
    /// with `credentials`, only to clients that present them.
    pub(crate) async fn start<U: Upstream>(
        upstream: &U,
        tasks: &Tasks,
        socks5_port: u16,
        http_port: u16,
        credentials: Option<ProxyCredentials>,
    ) -> Result<Proxies> {
        let socks_listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, socks5_port))).await?;
        let http_listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, http_port))).await?;
        let proxies = Proxies {
            socks5: local_addr(&socks_listener)?,
            http: local_addr(&http_listener)?,
            credentials: credentials.map(Arc::new),
        };
        {
            let upstream = upstream.clone();
            let credentials = proxies.credentials.clone();
            tasks.spawn(accept_loop(socks_listener, tasks.clone(), move |s| {
                socks::handle(s, upstream.clone(), credentials.clone())
            }));
        }
        {
            let upstream = upstream.clone();
            let credentials = proxies.credentials.clone();
            let inner_tasks = tasks.clone();
            tasks.spawn(accept_loop(http_listener, tasks.clone(), move |s| {
                http::handle(
                    s,
                    upstream.clone(),
                    inner_tasks.clone(),
                    credentials.clone(),
                )
            }));
        }
        Ok(proxies)
    }

    /// `user:password@` when credentials are required, else nothing.
    fn userinfo(&self) -> String {
        self.credentials
            .as_deref()
            .map(ProxyCredentials::userinfo)
            .unwrap_or_default()
    }

    /// The SOCKS5 proxy as a URL with remote name resolution:
    /// `socks5h://[user:password@]127.0.0.1:port`.
    pub(crate) fn socks5_url(&self) -> String {
        format!("socks5h://{}{}", self.userinfo(), self.socks5)
    }

    /// The HTTP proxy as a URL: `http://[user:password@]127.0.0.1:port`.
    pub(crate) fn http_url(&self) -> String {
        format!("http://{}{}", self.userinfo(), self.http)
    }

    /// Environment variables that send a child process's traffic through the proxies
    /// (see `Session::env`).
    pub(crate) fn env(&self) -> BTreeMap<String, String> {
        let http = self.http_url();
        let socks = self.socks5_url();
        let no_proxy = "localhost,127.0.0.1,::1".to_owned();
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("HTTP_PROXY", &http),
            ("HTTPS_PROXY", &http),
            ("ALL_PROXY", &socks),
            ("NO_PROXY", &no_proxy),
        ] {
            env.insert(k.to_owned(), v.clone());
            env.insert(k.to_ascii_lowercase(), v.clone());
        }
        env.insert("NODE_USE_ENV_PROXY".to_owned(), "1".to_owned());
        env
    }
}

/// The address a listener bound.
pub(crate) fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Bind {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        source,
    })
}

#[cfg(test)]
mod tests;
