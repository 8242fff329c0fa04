//! Local forwards: a listener on 127.0.0.1 whose every connection is tunnelled to one
//! destination in the cluster.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpStream;

use crate::cluster::target::Destination;
use crate::error::Result;
use crate::outbound::proxies::local_addr;
use crate::outbound::{Dialer, accept_loop, bind, splice};
use crate::task::Tasks;

/// Listens on 127.0.0.1 (a free port) and serves every connection to `dest`'s `port`
/// on `tasks`; the local address.
pub(crate) async fn start(
    dialer: &Dialer,
    tasks: &Tasks,
    dest: Destination,
    port: u16,
) -> Result<SocketAddr> {
    let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let addr = local_addr(&listener)?;
    let dialer = dialer.clone();
    tasks.spawn(accept_loop(listener, tasks.clone(), move |s| {
        handle(s, dialer.clone(), dest.clone(), port)
    }));
    Ok(addr)
}

/// Serves one local connection of a forward.
pub(crate) async fn handle(local: TcpStream, dialer: Dialer, dest: Destination, port: u16) {
    match dialer.dial_destination(&dest, port).await {
        Ok(remote) => splice(local, remote).await,
        Err(e) => {
            // The local client sees the connection close; say why in the log.
            tracing::warn!(target: "kt", "forward to {dest:?}:{port}: {e}");
        }
    }
}
