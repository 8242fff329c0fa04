//! What comes in through the tunnel: connections to ports the shadow listens on (SSH
//! remote forwards), each handed to a process on this machine. swap, expose and mesh
//! build their handles on this.

use std::net::SocketAddr;

use crate::outbound::splice;
use crate::task::Tasks;
use crate::transport::RemoteForward;

/// Splices every connection of `forward` to `local` until the forward or `tasks` ends.
pub(crate) async fn serve(mut forward: RemoteForward, local: SocketAddr, tasks: Tasks) {
    while let Some(accepted) = forward.accept().await {
        tracing::debug!(
            target: "kt",
            "inbound connection from {} on port {}",
            accepted.peer,
            accepted.bound_port
        );
        tasks.spawn(async move {
            match tokio::net::TcpStream::connect(local).await {
                Ok(stream) => splice(stream, accepted.channel.into_stream()).await,
                Err(e) => tracing::warn!(target: "kt", "inbound connection to {local}: {e}"),
            }
        });
    }
}
