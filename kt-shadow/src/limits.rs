//! The shadow's limits: connections that have not logged in yet, and channels and UDP
//! flows per connection. Each refusal is an SSH-level failure the client can show
//! (a disconnect message, a channel open failure with a text) and a log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::ChannelOpenFailure;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::tcp::open_failure;

/// `max` slots of one kind; a taken slot is held until its permit is dropped.
#[derive(Debug)]
pub(crate) struct Slots {
    free: Arc<Semaphore>,
    max: usize,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Slots {
        Slots {
            free: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
        }
    }

    /// A slot, or `None` when all `max` are taken.
    pub(crate) fn take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.free).try_acquire_owned().ok()
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// The limits of one SSH connection.
#[derive(Debug)]
pub(crate) struct ConnLimits {
    /// Open channels of any kind, opened by either side.
    pub(crate) channels: Slots,
    /// Open `direct-udp@kt.dev` flows (each also holds a channel slot).
    pub(crate) udp_flows: Slots,
}

impl ConnLimits {
    pub(crate) fn new(max_channels: usize, max_udp_flows: usize) -> ConnLimits {
        ConnLimits {
            channels: Slots::new(max_channels),
            udp_flows: Slots::new(max_udp_flows),
        }
    }

    /// A channel slot, or the open failure to answer with.
    pub(crate) fn channel(&self) -> Result<OwnedSemaphorePermit, ChannelOpenFailure> {
        self.channels.take().ok_or_else(|| {
            open_failure(
                ChannelOpenFailure::ResourceShortage,
                format!(
                    "kt-shadow: this SSH connection already has {} open channels, the shadow's \
                     limit (--max-channels); close some, or open another connection",
                    self.channels.max()
                ),
            )
        })
    }

    /// A UDP flow slot, or the open failure to answer with.
    pub(crate) fn udp_flow(&self) -> Result<OwnedSemaphorePermit, ChannelOpenFailure> {
        self.udp_flows.take().ok_or_else(|| {
            open_failure(
                ChannelOpenFailure::ResourceShortage,
                format!(
                    "kt-shadow: this SSH connection already has {} open UDP flows, the shadow's \
                     limit (--max-udp-flows); close some, or open another connection",
                    self.udp_flows.max()
                ),
            )
        })
    }
}

/// What a connection over the pre-authentication limit receives: the server's
/// identification line, then `SSH_MSG_DISCONNECT` with reason
/// `SSH_DISCONNECT_TOO_MANY_CONNECTIONS` and `message`, as the first binary packet.
/// Before key exchange packets are sent in the clear (RFC 4253, section 6), so this
/// costs no cryptography, and SSH clients show the message.
pub(crate) fn too_many_connections(server_id: &str, message: &str) -> Vec<u8> {
    /// `SSH_MSG_DISCONNECT`.
    const MSG_DISCONNECT: u8 = 1;
    /// Packets are padded to a multiple of 8 bytes without a cipher.
    const BLOCK: usize = 8;
    let mut payload = vec![MSG_DISCONNECT];
    payload.extend_from_slice(&(russh::Disconnect::TooManyConnections as u32).to_be_bytes());
    put_string(&mut payload, message.as_bytes());
    put_string(&mut payload, b"en");
    // packet_length (4) + padding_length (1) + payload + padding is a multiple of
    // BLOCK, with at least 4 bytes of padding.
    let mut padding = BLOCK - (4 + 1 + payload.len()) % BLOCK;
    if padding < 4 {
        padding += BLOCK;
    }
    let packet_length = 1 + payload.len() + padding;
    let mut out = Vec::with_capacity(server_id.len() + 2 + 4 + packet_length);
    out.extend_from_slice(server_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(
        &u32::try_from(packet_length)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.push(u8::try_from(padding).unwrap_or(4));
    out.extend_from_slice(&payload);
    out.resize(out.len() + padding, 0);
    out
}

fn put_string(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    buf.extend_from_slice(s);
}

/// Sends `refusal` (see [`too_many_connections`]) and closes the connection, reading
/// and dropping whatever the client sends for up to `linger` so that the close is
/// orderly (closing with unread input resets the connection, and the client might lose
/// the message).
pub(crate) async fn refuse(
    mut stream: TcpStream,
    peer: SocketAddr,
    refusal: Vec<u8>,
    linger: Duration,
    stop: CancellationToken,
) {
    let send = async {
        stream.write_all(&refusal).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    tokio::select! {
        () = stop.cancelled() => {}
        r = tokio::time::timeout(linger, send) => {
            if let Ok(Err(err)) = r {
                debug!(%peer, error = %err, "refused connection ended");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_an_identification_line_and_one_clear_disconnect_packet() {
        for message in ["", "x", "kt-shadow: too many connections waiting to log in"] {
            let bytes = too_many_connections("SSH-2.0-kt-shadow_0", message);
            let packet = bytes
                .strip_prefix(b"SSH-2.0-kt-shadow_0\r\n".as_slice())
                .unwrap_or_default();
            let (len, rest) = packet.split_at(4);
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            assert_eq!(rest.len(), len, "{message:?}");
            assert_eq!((4 + len) % 8, 0, "{message:?}");
            let padding = usize::from(rest[0]);
            assert!(padding >= 4, "{message:?}");
            let payload = &rest[1..len - padding];
            assert_eq!(payload[0], 1, "SSH_MSG_DISCONNECT");
            assert_eq!(payload[1..5], 12u32.to_be_bytes(), "TOO_MANY_CONNECTIONS");
            let text_len = u32::from_be_bytes([payload[5], payload[6], payload[7], payload[8]]);
            assert_eq!(&payload[9..9 + text_len as usize], message.as_bytes());
            assert_eq!(&payload[9 + text_len as usize..], b"\0\0\0\x02en");
        }
    }

    #[test]
    fn slots_run_out_and_come_back() {
        let limits = ConnLimits::new(2, 1);
        let a = limits.channel();
        let b = limits.channel();
        assert!(a.is_ok() && b.is_ok());
        let refused = limits.channel().err();
        assert_eq!(refused.as_ref().map(ChannelOpenFailure::code), Some(4));
        assert!(
            refused
                .as_ref()
                .is_some_and(|f| f.description().contains("2 open channels")),
            "{refused:?}"
        );
        drop(a);
        assert!(limits.channel().is_ok());
        let flow = limits.udp_flow();
        assert!(flow.is_ok());
        let refused = limits.udp_flow().err();
        assert!(
            refused
                .as_ref()
                .is_some_and(|f| f.code() == 4 && f.description().contains("1 open UDP flows")),
            "{refused:?}"
        );
    }
}
