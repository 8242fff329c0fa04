//! TCP: `direct-tcpip` channels (connect and splice), the splice that forwarded
//! connections share, and `tcpip-forward` bind addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use crate::resolve::Resolver;
use crate::server::{ConnCtx, Tuning};

/// Bytes moved by one spliced connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moved {
    /// From the SSH client to the TCP peer.
    pub(crate) up: u64,
    /// From the TCP peer to the SSH client.
    pub(crate) down: u64,
}

/// A channel open failure with a message the client shows to its user
/// (`Other` with the standard code keeps the text; the named variants drop it).
pub(crate) fn open_failure(reason: ChannelOpenFailure, message: String) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: reason.code(),
        reason: message,
    }
}

/// Converts an SSH port number (a `u32` on the wire) to a TCP/UDP port.
pub(crate) fn wire_port(port: u32) -> Option<u16> {
    u16::try_from(port).ok()
}

/// Serves a `direct-tcpip` open: connects to `host:port` (names resolved with the pod's
/// files, [`crate::resolve`]), answers the open, then splices until both sides are done.
pub(crate) async fn serve_direct_tcpip(
    ctx: ConnCtx,
    channel: Channel<Msg>,
    reply: russh::server::ChannelOpenHandle,
    host: String,
    port: u32,
) {
    let target = format!("{host}:{port}");
    let Some(port) = wire_port(port).filter(|p| *p != 0) else {
        debug!(conn = ctx.id, %target, "direct-tcpip refused: invalid port");
        reply
            .reject(open_failure(
                ChannelOpenFailure::ConnectFailed,
                format!("kt-shadow: {port} is not a valid TCP port"),
            ))
            .await;
        return;
    };
    let connect =
        tokio::time::timeout(ctx.tuning.connect_timeout, dial(&ctx.resolver, &host, port));
    let stream = tokio::select! {
        () = ctx.cancel.cancelled() => return,
        r = connect => match r {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                debug!(conn = ctx.id, %target, error = %err, "direct-tcpip connect failed");
                reply.reject(open_failure(
                    ChannelOpenFailure::ConnectFailed,
                    format!("kt-shadow: connect to {target} failed: {err}"),
                )).await;
                return;
            }
            Err(_) => {
                debug!(conn = ctx.id, %target, "direct-tcpip connect timed out");
                reply.reject(open_failure(
                    ChannelOpenFailure::ConnectFailed,
                    format!(
                        "kt-shadow: connect to {target} timed out after {:?}",
                        ctx.tuning.connect_timeout
                    ),
                )).await;
                return;
            }
        },
    };
    let _ = stream.set_nodelay(true);
    let id = channel.id();
    reply.accept().await;
    debug!(conn = ctx.id, channel = %id, %target, "direct-tcpip open");
    let moved = splice(channel, stream, &ctx.cancel, &ctx.tuning).await;
    debug!(
        conn = ctx.id,
        channel = %id,
        %target,
        up = moved.up,
        down = moved.down,
        "direct-tcpip closed"
    );
}

/// A TCP connection to `host:port`: each address of the name in turn (IPv4 first), as
/// the standard library's connect to a `(host, port)` does; the error is the last
/// address's, or why the name has none.
async fn dial(resolver: &Resolver, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in resolver.lookup(host, port).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("`{host}` has no address"))))
}

/// How a direction of a splice ended.
enum End {
    /// Orderly end of stream (half-close); the other direction may go on.
    Eof,
    /// The channel or the socket is gone; stop both directions.
    Abort,
}

/// Copies bytes both ways between an SSH channel and a TCP stream until both
/// directions reached end of stream, either side closed, or `cancel` fired.
///
/// End of stream is propagated as a half-close: channel EOF shuts down the socket's
/// write side; socket EOF sends channel EOF. Closing the channel is left to the client
/// once both directions are done (so russh forgets the channel), with a fallback.
pub(crate) async fn splice(
    channel: Channel<Msg>,
    stream: TcpStream,
    cancel: &CancellationToken,
    tuning: &Tuning,
) -> Moved {
    let (mut rx, tx) = channel.split();
    let (mut tcp_r, mut tcp_w) = stream.into_split();
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);

    let up = async {
        loop {
            match rx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    // While this write waits, russh cannot hand data to any other
                    // channel of the connection (see `Tuning::write_stall_timeout`).
                    match tokio::time::timeout(tuning.write_stall_timeout, tcp_w.write_all(&data))
                        .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return End::Abort,
                        Err(_) => {
                            warn!(
                                channel = %tx.id(),
                                stalled = ?tuning.write_stall_timeout,
                                "peer read nothing while data was waiting; closing the channel so \
                                 the rest of the SSH connection can move again"
                            );
                            return End::Abort;
                        }
                    }
                    up_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Some(ChannelMsg::Eof) => {
                    let _ = tcp_w.shutdown().await;
                    return End::Eof;
                }
                Some(ChannelMsg::Close) | None => return End::Abort,
                Some(_) => {}
            }
        }
    };
    let down = async {
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(tuning.read_chunk);
            match tcp_r.read_buf(&mut buf).await {
                Ok(0) => {
                    return match tx.eof().await {
                        Ok(()) => End::Eof,
                        Err(_) => End::Abort,
                    };
                }
                Ok(n) => {
                    down_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if tx.data_bytes(buf.split().freeze()).await.is_err() {
                        return End::Abort;
                    }
                }
                Err(_) => return End::Abort,
            }
        }
    };

    let orderly = {
        let mut up = pin!(up);
        let mut down = pin!(down);
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            tokio::select! {
                () = cancel.cancelled() => break,
                end = &mut up, if !up_done => match end {
                    End::Eof => {
                        trace!(channel = %tx.id(), "client sent EOF");
                        up_done = true;
                    }
                    End::Abort => break,
                },
                end = &mut down, if !down_done => match end {
                    End::Eof => {
                        trace!(channel = %tx.id(), "peer sent EOF");
                        down_done = true;
                    }
                    End::Abort => break,
                },
            }
        }
        up_done && down_done
    };

    if orderly {
        // Both sides sent EOF: the client closes the channel in reply. Wait briefly for
        // that, because russh forgets a channel only when the client closes it first.
        let wait_close = async {
            loop {
                match rx.wait().await {
                    Some(ChannelMsg::Close) | None => return,
                    Some(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(tuning.close_grace, wait_close).await;
    }
    let _ = tx.close().await;
    Moved {
        up: up_bytes.load(Ordering::Relaxed),
        down: down_bytes.load(Ordering::Relaxed),
    }
}

/// Where a `tcpip-forward` request asks the shadow to listen: an address of the pod
/// itself, never a name to look up (a lookup would hold up the whole connection, and
/// the client knows the pod's addresses as well as the pod does).
///
/// `""`, `*`, `0.0.0.0` mean every IPv4 interface (the pod IP, so Services reach it);
/// `::` every IPv6 interface; `localhost` the IPv4 loopback; other IP literals
/// themselves (binding an address that is not the pod's then fails: the kernel
/// refuses non-local addresses). Any other name is refused.
pub(crate) fn forward_bind_addr(address: &str, port: u16) -> Result<SocketAddr, String> {
    let ip = match address {
        "" | "*" | "0.0.0.0" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "::" | "[::]" => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .map_err(|_| {
                format!(
                    "`{other}` is not an IP address; ask for 0.0.0.0, ::, localhost or one of \
                     the pod's addresses"
                )
            })?,
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_addresses_follow_openssh_conventions() {
        let v4any = SocketAddr::from(([0, 0, 0, 0], 80));
        for any in ["", "*", "0.0.0.0"] {
            assert_eq!(forward_bind_addr(any, 80).ok(), Some(v4any), "{any:?}");
        }
        assert_eq!(
            forward_bind_addr("localhost", 80).ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 80)))
        );
        assert_eq!(
            forward_bind_addr("::", 0).ok(),
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0))
        );
        assert_eq!(
            forward_bind_addr("[::1]", 5).ok(),
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 5))
        );
        assert_eq!(
            forward_bind_addr("127.0.0.2", 5).ok(),
            Some(SocketAddr::from(([127, 0, 0, 2], 5)))
        );
    }

    #[test]
    fn forward_addresses_are_never_looked_up() {
        for name in [
            "web",
            "kubernetes.default",
            "example.com",
            "127.0.0.1.nip.io",
        ] {
            let refused = forward_bind_addr(name, 80).err().unwrap_or_default();
            assert!(
                refused.contains("is not an IP address"),
                "{name}: {refused}"
            );
        }
    }

    #[test]
    fn wire_ports_above_65535_are_refused() {
        assert_eq!(wire_port(65_535), Some(65_535));
        assert_eq!(wire_port(65_536), None);
        assert_eq!(wire_port(u32::MAX), None);
    }

    #[test]
    fn open_failures_keep_the_standard_code_and_the_message() {
        let f = open_failure(ChannelOpenFailure::ConnectFailed, "no route".into());
        assert_eq!(f.code(), 2);
        assert_eq!(f.description(), "no route");
    }
}
