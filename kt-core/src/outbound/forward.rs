//! Local forwards: a listener on 127.0.0.1 whose every connection is tunnelled to one
//! destination in the cluster.

use tokio::net::TcpStream;

use crate::cluster::target::Destination;
use crate::outbound::{Dialer, splice};

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
