//! UDP: `direct-udp@kt.dev` flows (datagrams framed on an SSH channel, relayed through
//! a UDP socket connected to the target).

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;

use kt_proto::channel::{DATAGRAM_HEADER_LEN, MAX_DATAGRAM_LEN};
use kt_proto::{DatagramCodec, DatagramReader};
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::resolve::Resolver;
use crate::server::ConnCtx;
use crate::tcp::{open_failure, wire_port};

/// Datagrams and bytes moved by one UDP flow.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    up_datagrams: u64,
    up_bytes: u64,
    down_datagrams: u64,
    down_bytes: u64,
}

/// Serves a `direct-udp@kt.dev` open: resolves `host:port`, connects a UDP socket to
/// it, answers the open, then relays datagrams until the channel closes or the flow
/// has been idle for the configured time.
pub(crate) async fn serve_direct_udp(
    ctx: ConnCtx,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    host: String,
    port: u32,
) {
    let target_name = format!("{host}:{port}");
    let socket = tokio::select! {
        () = ctx.cancel.cancelled() => return,
        r = connect(&ctx.resolver, &host, port) => match r {
            Ok(socket) => socket,
            Err(message) => {
                debug!(conn = ctx.id, target = %target_name, %message, "direct-udp open refused");
                reply.reject(open_failure(
                    ChannelOpenFailure::ConnectFailed,
                    format!("kt-shadow: UDP to {target_name}: {message}"),
                )).await;
                return;
            }
        },
    };
    let id = channel.id();
    reply.accept().await;
    debug!(conn = ctx.id, channel = %id, target = %target_name, "direct-udp open");
    let counts = relay(&ctx, channel, &socket).await;
    debug!(
        conn = ctx.id,
        channel = %id,
        target = %target_name,
        up_datagrams = counts.up_datagrams,
        up = counts.up_bytes,
        down_datagrams = counts.down_datagrams,
        down = counts.down_bytes,
        "direct-udp closed"
    );
}

/// A UDP socket connected to `host:port`, bound to loopback for a loopback target and
/// to the unspecified address otherwise.
async fn connect(resolver: &Resolver, host: &str, port: u32) -> Result<UdpSocket, String> {
    let port = wire_port(port)
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port} is not a valid UDP port"))?;
    let target = resolver
        .lookup(host, port)
        .await
        .map_err(|err| err.to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| format!("`{host}` resolves to no address"))?;
    let local_ip = match (target.ip(), target.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0))
        .await
        .map_err(|err| format!("cannot open a UDP socket: {err}"))?;
    socket
        .connect(target)
        .await
        .map_err(|err| format!("cannot connect to {target}: {err}"))?;
    Ok(socket)
}

async fn relay(ctx: &ConnCtx, channel: Channel<Msg>, socket: &UdpSocket) -> Counts {
    let (mut rx, tx) = channel.split();
    let codec = DatagramCodec::new();
    let mut reader = DatagramReader::new(codec);
    let mut counts = Counts::default();
    // One receive buffer per flow, big enough for any datagram.
    let mut recv_buf = vec![0u8; MAX_DATAGRAM_LEN];
    let idle = ctx.tuning.udp_idle_timeout;
    let mut idle_timer = pin!(tokio::time::sleep(idle));

    loop {
        tokio::select! {
            () = ctx.cancel.cancelled() => break,
            () = &mut idle_timer => {
                debug!(conn = ctx.id, channel = %tx.id(), ?idle, "direct-udp flow idle, closing");
                break;
            }
            msg = rx.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                    reader.push(&data);
                    if !send_datagrams(ctx, &mut reader, socket, &mut counts).await {
                        break;
                    }
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            received = socket.recv(&mut recv_buf) => match received {
                Ok(len) => {
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                    let datagram = recv_buf.get(..len).unwrap_or_default();
                    let mut frame = Vec::with_capacity(DATAGRAM_HEADER_LEN + len);
                    if codec.encode(datagram, &mut frame).is_err() {
                        // Larger than the IPv4 UDP limit (IPv6 jumbograms): cannot be framed.
                        warn!(conn = ctx.id, len, "dropping a datagram too large to frame");
                        continue;
                    }
                    counts.down_datagrams += 1;
                    counts.down_bytes += len as u64;
                    if tx.data_bytes(frame).await.is_err() {
                        break;
                    }
                }
                // An ICMP "port unreachable" for an earlier datagram: UDP has no
                // connection to lose, keep relaying.
                Err(err) if err.kind() == ErrorKind::ConnectionRefused => {}
                Err(err) => {
                    warn!(conn = ctx.id, error = %err, "direct-udp receive failed, closing the flow");
                    break;
                }
            },
        }
    }
    let _ = tx.close().await;
    counts
}

/// Sends every whole datagram buffered in `reader`. Returns false if the flow must end
/// (the client broke the framing).
async fn send_datagrams(
    ctx: &ConnCtx,
    reader: &mut DatagramReader,
    socket: &UdpSocket,
    counts: &mut Counts,
) -> bool {
    loop {
        match reader.next_datagram() {
            Ok(Some(datagram)) => {
                counts.up_datagrams += 1;
                counts.up_bytes += datagram.len() as u64;
                match socket.send(datagram).await {
                    Ok(_) => {}
                    Err(err) if err.kind() == ErrorKind::ConnectionRefused => {}
                    Err(err) => {
                        debug!(conn = ctx.id, error = %err, "direct-udp send failed, datagram dropped");
                    }
                }
            }
            Ok(None) => return true,
            Err(err) => {
                warn!(conn = ctx.id, error = %err, "closing direct-udp channel");
                return false;
            }
        }
    }
}
