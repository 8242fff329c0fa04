//! What goes out through the tunnel: the [`Dialer`] (streams and flows to a host and
//! port in the cluster, by IP or by name), the SOCKS5 and HTTP proxies (with optional
//! per-session credentials, [`auth`]), local forwards and UDP flows.

pub(crate) mod auth;
pub(crate) mod forward;
pub(crate) mod http;
pub(crate) mod proxies;
pub(crate) mod socks;
pub(crate) mod udp;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use russh::client::Msg;
use russh::{Channel, ChannelStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::cluster::Cluster;
use crate::cluster::target::{Destination, Target};
use crate::dns::Resolver;
use crate::error::{Error, Result};
use crate::task::Tasks;
use crate::transport::{ChannelKind, Tunnel};

/// A byte stream to a host and port in the cluster.
pub(crate) type RemoteStream = ChannelStream<Msg>;

/// Opens streams into the cluster by IP or by name.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub(crate) tunnel: Arc<Tunnel>,
    pub(crate) resolver: Arc<Resolver>,
}

impl Dialer {
    /// Where a forward to `target` goes, looked up in the API (Service, pod) and, for a
    /// name, checked in the cluster DNS now rather than at the first connection.
    pub(crate) async fn destination(
        &self,
        cluster: &Cluster,
        target: &Target,
        cluster_domain: &str,
    ) -> Result<Destination> {
        let dest = target.destination(cluster, cluster_domain).await?;
        if let Destination::Name(name) = &dest {
            self.resolver.resolve(name).await?;
        }
        Ok(dest)
    }

    /// A stream to `host:port`; a name is resolved through the cluster DNS first, and
    /// each of its addresses is tried in turn.
    pub(crate) async fn dial(&self, host: &str, port: u16) -> Result<RemoteStream> {
        let (channel, _) = self.open_name(host, port, ChannelKind::Tcp).await?;
        Ok(channel.into_stream())
    }

    /// A stream to `ip:port`.
    pub(crate) async fn dial_ip(&self, ip: IpAddr, port: u16) -> Result<RemoteStream> {
        let channel = self.tunnel.open(&ip.to_string(), port).await?;
        Ok(channel.into_stream())
    }

    /// A stream to a forward's destination.
    pub(crate) async fn dial_destination(
        &self,
        dest: &Destination,
        port: u16,
    ) -> Result<RemoteStream> {
        let (channel, _) = self.open_destination(dest, port, ChannelKind::Tcp).await?;
        Ok(channel.into_stream())
    }

    /// A channel of `kind` to a destination, and the address it went to.
    pub(crate) async fn open_destination(
        &self,
        dest: &Destination,
        port: u16,
        kind: ChannelKind,
    ) -> Result<(Channel<Msg>, IpAddr)> {
        match dest {
            Destination::Ip(ip) => {
                let channel = self.tunnel.open_kind(&ip.to_string(), port, kind).await?;
                Ok((channel, *ip))
            }
            Destination::Name(name) => self.open_name(name, port, kind).await,
        }
    }

    /// A channel of `kind` to `host:port`, trying each address of a name in turn; and
    /// the address it went to.
    async fn open_name(
        &self,
        host: &str,
        port: u16,
        kind: ChannelKind,
    ) -> Result<(Channel<Msg>, IpAddr)> {
        let ips = self.resolver.resolve(host).await?;
        let mut last = None;
        for ip in ips {
            match self.tunnel.open_kind(&ip.to_string(), port, kind).await {
                Ok(channel) => return Ok((channel, ip)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NameNotFound {
            name: host.to_owned(),
            tried: Vec::new(),
        }))
    }
}

/// Where the proxies connect their clients to once a request is accepted: the tunnel
/// ([`Dialer`]); the proxies' component tests connect directly over TCP instead.
pub(crate) trait Upstream: Clone + Send + Sync + 'static {
    /// A connection to the destination.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// A stream to `host:port`, `host` being a name (resolved in the cluster) or an IP
    /// literal.
    fn connect(&self, host: &str, port: u16) -> impl Future<Output = Result<Self::Stream>> + Send;

    /// A stream to `ip:port`.
    fn connect_ip(
        &self,
        ip: IpAddr,
        port: u16,
    ) -> impl Future<Output = Result<Self::Stream>> + Send;
}

impl Upstream for Dialer {
    type Stream = RemoteStream;

    async fn connect(&self, host: &str, port: u16) -> Result<RemoteStream> {
        self.dial(host, port).await
    }

    async fn connect_ip(&self, ip: IpAddr, port: u16) -> Result<RemoteStream> {
        self.dial_ip(ip, port).await
    }
}

/// Binds a listener on `addr`.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Accepts connections until the session is cancelled, handling each in its own task.
pub(crate) async fn accept_loop<F, Fut>(listener: TcpListener, tasks: Tasks, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = tasks.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tasks.spawn(handle(stream));
            }
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(target: "kt", "accept failed: {e}");
                tokio::select! {
                    () = tasks.cancel.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// Buffer size of each direction of a spliced connection.
const COPY_BUF: usize = 64 * 1024;

/// Copies both ways until both sides are done; errors end the copy quietly (the peer
/// reset the connection).
pub(crate) async fn splice<L, R>(mut local: L, mut remote: R)
where
    L: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut local, &mut remote, COPY_BUF, COPY_BUF).await
    {
        tracing::debug!(target: "kt", "connection ended: {e}");
    }
}
