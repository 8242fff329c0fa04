//! The session's local SOCKS5 and HTTP proxies on 127.0.0.1.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use crate::error::{Error, Result};
use crate::outbound::{Dialer, accept_loop, bind, http, socks};
use crate::task::Tasks;

/// Where the proxies listen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proxies {
    pub(crate) socks5: SocketAddr,
    pub(crate) http: SocketAddr,
}

impl Proxies {
    /// Binds both (port 0: a free port) and serves them on `tasks` until cancelled.
    pub(crate) async fn start(
        dialer: &Dialer,
        tasks: &Tasks,
        socks5_port: u16,
        http_port: u16,
    ) -> Result<Proxies> {
        let socks_listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, socks5_port))).await?;
        let http_listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, http_port))).await?;
        let proxies = Proxies {
            socks5: local_addr(&socks_listener)?,
            http: local_addr(&http_listener)?,
        };
        {
            let dialer = dialer.clone();
            tasks.spawn(accept_loop(socks_listener, tasks.clone(), move |s| {
                socks::handle(s, dialer.clone())
            }));
        }
        {
            let dialer = dialer.clone();
            let inner_tasks = tasks.clone();
            tasks.spawn(accept_loop(http_listener, tasks.clone(), move |s| {
                http::handle(s, dialer.clone(), inner_tasks.clone())
            }));
        }
        Ok(proxies)
    }
}

impl Proxies {
    /// Environment variables that send a child process's traffic through the proxies
    /// (see `Session::env`).
    pub(crate) fn env(&self) -> BTreeMap<String, String> {
        let http = format!("http://{}", self.http);
        let socks = format!("socks5h://{}", self.socks5);
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
