//! UDP through the tunnel (kt-shadow only): each flow is one `direct-udp@kt.dev`
//! channel carrying length-framed datagrams (see `kt_proto::channel`), used either
//! behind a local UDP forward ([`forward`], one flow per local peer) or directly as a
//! [`DatagramChannel`].
//!
//! A flow's relay task is spawned on the session's [`Tasks`], so closing the session
//! ends it. Datagrams are never merged or split: each frame on the channel is one
//! datagram. Where a queue is full a datagram is dropped, as a full socket buffer
//! would; the SSH session is never made to wait for a slow local reader.

use std::collections::HashMap;
use std::fmt;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use kt_proto::channel::{DATAGRAM_HEADER_LEN, MAX_DATAGRAM_LEN, UDP_IDLE_TIMEOUT_SECS};
use kt_proto::{DatagramCodec, DatagramReader};
use russh::client::Msg;
use russh::{Channel, ChannelMsg};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::cluster::target::Destination;
use crate::error::{Error, Result};
use crate::options::ShadowFlavour;
use crate::outbound::{Dialer, Tasks};
use crate::transport::ChannelKind;

/// A local forward's flow with no datagram either way for this long is closed (the
/// shadow closes its end after the same time).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(UDP_IDLE_TIMEOUT_SECS);

/// Datagrams queued per flow and direction before new ones are dropped.
const QUEUE: usize = 256;

/// Why UDP is refused with the OpenSSH shadow.
pub(crate) const OPENSSH_UNSUPPORTED: &str = "UDP needs the kt-shadow agent; the OpenSSH \
     shadow only carries TCP. Connect with the kt-shadow flavour (the default) for UDP \
     forwards and channels";

/// Fails unless the session's shadow relays UDP.
pub(crate) fn check_supported(flavour: ShadowFlavour) -> Result<()> {
    match flavour {
        ShadowFlavour::KtShadow => Ok(()),
        ShadowFlavour::OpenSsh => Err(Error::Unsupported {
            feature: "UDP",
            reason: OPENSSH_UNSUPPORTED.to_owned(),
        }),
    }
}

/// One datagram as a frame: the 2-byte big-endian length, then the payload.
fn frame(codec: &DatagramCodec, datagram: &[u8]) -> Result<Bytes> {
    let header = codec
        .header(datagram.len())
        .map_err(|_| Error::DatagramTooLarge {
            len: datagram.len(),
            max: codec.max_len(),
        })?;
    let mut frame = BytesMut::with_capacity(DATAGRAM_HEADER_LEN + datagram.len());
    frame.put_slice(&header);
    frame.put_slice(datagram);
    Ok(frame.freeze())
}

/// Where a flow's datagrams from the cluster go.
enum Sink {
    /// To a local peer, from the forward's socket.
    Socket(Arc<UdpSocket>, SocketAddr),
    /// To a [`DatagramChannel`]'s queue.
    Queue(mpsc::Sender<Bytes>),
}

impl Sink {
    /// Hands one datagram on; false when no one will read any more.
    async fn deliver(&self, datagram: Bytes) -> bool {
        match self {
            Sink::Socket(socket, peer) => {
                if let Err(e) = socket.send_to(&datagram, *peer).await {
                    // The local peer may be gone; UDP has no connection to lose.
                    tracing::debug!(target: "kt", "UDP reply to {peer} dropped: {e}");
                }
                true
            }
            Sink::Queue(queue) => match queue.try_send(datagram) {
                Ok(()) => true,
                Err(TrySendError::Full(d)) => {
                    tracing::debug!(
                        target: "kt",
                        "UDP datagram of {} bytes dropped: {QUEUE} are waiting unread",
                        d.len()
                    );
                    true
                }
                Err(TrySendError::Closed(_)) => false,
            },
        }
    }
}

/// Relays one flow: frames from `up` are written to the channel, datagrams from the
/// channel are handed to `sink`. Ends, closing the channel, when `up` closes, the
/// shadow closes the channel, the sink is gone, or nothing moved for `idle`. Returns
/// why it ended.
async fn relay(
    channel: Channel<Msg>,
    mut up: mpsc::Receiver<Bytes>,
    sink: &Sink,
    idle: Option<Duration>,
) -> String {
    let (mut rx, tx) = channel.split();
    let activity = Notify::new();
    // The two directions run concurrently: a write waiting for window space never
    // keeps the channel from being read.
    let upstream = async {
        while let Some(frame) = up.recv().await {
            activity.notify_one();
            if let Err(e) = tx.data_bytes(frame).await {
                return format!("the tunnel dropped it ({e})");
            }
        }
        "closed locally".to_owned()
    };
    let downstream = async {
        let mut reader = DatagramReader::new(DatagramCodec::new());
        loop {
            match rx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    activity.notify_one();
                    reader.push(&data);
                    loop {
                        match reader.next_datagram() {
                            Ok(Some(d)) => {
                                if !sink.deliver(Bytes::copy_from_slice(d)).await {
                                    return "closed locally".to_owned();
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return format!("the shadow broke the framing ({e})"),
                        }
                    }
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                    return format!(
                        "the shadow closed it (idle for {UDP_IDLE_TIMEOUT_SECS} s, or the \
                         tunnel dropped)"
                    );
                }
                Some(_) => {}
            }
        }
    };
    let quiet = async {
        match idle {
            Some(idle) => {
                while tokio::time::timeout(idle, activity.notified())
                    .await
                    .is_ok()
                {}
                format!("idle for {} s", idle.as_secs())
            }
            None => std::future::pending().await,
        }
    };
    let reason = tokio::select! {
        r = upstream => r,
        r = downstream => r,
        r = quiet => r,
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), tx.close()).await;
    reason
}

/// A UDP flow to one host and port in the cluster, through the session's kt-shadow:
/// what [`Session::udp_channel`](crate::Session::udp_channel) returns.
///
/// Each [`send`](Self::send) is one datagram to the target, each
/// [`recv`](Self::recv) one datagram from it (the shadow sends from one UDP socket
/// connected to the target, so only the target's replies come back). Both take
/// `&self`: share the channel (e.g. in an `Arc`) to send and receive from different
/// tasks.
///
/// The flow ends when the channel is dropped, when the session closes, or when the
/// shadow closes it after 60 s with no datagram either way; then `send` and `recv`
/// fail with [`Error::FlowClosed`] (or [`Error::Closed`] once the session is closed)
/// and a new channel must be opened. As with any UDP socket, datagrams may be lost:
/// up to 256 received datagrams wait for `recv`, and further ones are dropped.
pub struct DatagramChannel {
    target: String,
    port: u16,
    peer: SocketAddr,
    codec: DatagramCodec,
    up: mpsc::Sender<Bytes>,
    down: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
    ended: Arc<Mutex<Option<String>>>,
    cancel: CancellationToken,
}

impl fmt::Debug for DatagramChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramChannel")
            .field("target", &self.target)
            .field("port", &self.port)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl DatagramChannel {
    /// Opens a flow to `dest:port` and starts its relay task on `tasks`.
    pub(crate) async fn open(
        dialer: &Dialer,
        tasks: &Tasks,
        dest: &Destination,
        target: &str,
        port: u16,
    ) -> Result<DatagramChannel> {
        let (channel, ip) = dialer
            .open_destination(dest, port, ChannelKind::Udp)
            .await?;
        let (up_tx, up_rx) = mpsc::channel(QUEUE);
        let (down_tx, down_rx) = mpsc::channel(QUEUE);
        let ended = Arc::new(Mutex::new(None));
        let end = Arc::clone(&ended);
        tasks.spawn(async move {
            let sink = Sink::Queue(down_tx);
            let reason = relay(channel, up_rx, &sink, None).await;
            *end.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
            // Only now may `recv` see the end, with its reason set.
            drop(sink);
        });
        Ok(DatagramChannel {
            target: target.to_owned(),
            port,
            peer: SocketAddr::new(ip, port),
            codec: DatagramCodec::new(),
            up: up_tx,
            down: tokio::sync::Mutex::new(down_rx),
            ended,
            cancel: tasks.cancel.clone(),
        })
    }

    /// The address the shadow sends to (the Service's ClusterIP, the pod's IP, or the
    /// address the name resolved to).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one datagram (up to 65 507 bytes; an empty one is allowed). Waits only
    /// while 256 earlier datagrams are still queued for the tunnel.
    ///
    /// # Errors
    ///
    /// [`Error::DatagramTooLarge`], [`Error::FlowClosed`] when the flow has ended, or
    /// [`Error::Closed`] when the session is closed.
    pub async fn send(&self, datagram: &[u8]) -> Result<()> {
        let frame = frame(&self.codec, datagram)?;
        if self.cancel.is_cancelled() {
            return Err(Error::Closed);
        }
        self.up.send(frame).await.map_err(|_| self.ended_error())
    }

    /// Receives the next datagram from the target, waiting for one. Datagrams that
    /// arrived before the flow ended are still returned first.
    ///
    /// # Errors
    ///
    /// [`Error::FlowClosed`] when the flow has ended, or [`Error::Closed`] when the
    /// session is closed.
    pub async fn recv(&self) -> Result<Bytes> {
        let mut down = self.down.lock().await;
        down.recv().await.ok_or_else(|| self.ended_error())
    }

    fn ended_error(&self) -> Error {
        if self.cancel.is_cancelled() {
            return Error::Closed;
        }
        let reason = self
            .ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "its relay ended".to_owned());
        Error::FlowClosed {
            target: self.target.clone(),
            port: self.port,
            reason,
        }
    }
}

/// A local UDP forward: a socket on 127.0.0.1 and one flow per local peer.
struct Forward {
    socket: Arc<UdpSocket>,
    dialer: Dialer,
    dest: Destination,
    port: u16,
    tasks: Tasks,
    idle: Duration,
    codec: DatagramCodec,
    flows: Mutex<HashMap<SocketAddr, Flow>>,
    next_id: AtomicU64,
}

/// A local peer's flow: the queue to its relay task.
struct Flow {
    id: u64,
    up: mpsc::Sender<Bytes>,
}

/// Binds a UDP socket on 127.0.0.1 (a free port) and relays every local peer's
/// datagrams to `dest:port` over a flow of its own, until the session closes.
pub(crate) async fn forward(
    dialer: Dialer,
    tasks: &Tasks,
    dest: Destination,
    port: u16,
) -> Result<SocketAddr> {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let bind_error = |source| Error::Bind { addr: any, source };
    let socket = UdpSocket::bind(any).await.map_err(bind_error)?;
    let addr = socket.local_addr().map_err(bind_error)?;
    let fwd = Arc::new(Forward {
        socket: Arc::new(socket),
        dialer,
        dest,
        port,
        tasks: tasks.clone(),
        idle: IDLE_TIMEOUT,
        codec: DatagramCodec::new(),
        flows: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
    });
    tasks.spawn(fwd.serve());
    Ok(addr)
}

impl Forward {
    /// Receives local datagrams and hands each to its peer's flow.
    async fn serve(self: Arc<Self>) {
        let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
        loop {
            let (len, peer) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                // An ICMP error for an earlier reply: not this socket's problem.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::warn!(target: "kt", "UDP forward receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let datagram = buf.get(..len).unwrap_or_default();
            match frame(&self.codec, datagram) {
                Ok(frame) => self.dispatch(peer, frame),
                Err(e) => tracing::warn!(target: "kt", "UDP forward from {peer}: {e}"),
            }
        }
    }

    /// Queues `frame` on `peer`'s flow, starting one if it has none.
    fn dispatch(self: &Arc<Self>, peer: SocketAddr, frame: Bytes) {
        let mut flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        let frame = match flows.get(&peer) {
            None => frame,
            Some(flow) => match flow.up.try_send(frame) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => {
                    tracing::debug!(
                        target: "kt",
                        "UDP datagram from {peer} dropped: its flow's queue is full"
                    );
                    return;
                }
                // The flow has just ended: start a new one.
                Err(TrySendError::Closed(frame)) => frame,
            },
        };
        let (up_tx, up_rx) = mpsc::channel(QUEUE);
        let _ = up_tx.try_send(frame);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        flows.insert(peer, Flow { id, up: up_tx });
        drop(flows);
        self.tasks.spawn(Arc::clone(self).run_flow(id, peer, up_rx));
    }

    /// Opens `peer`'s flow and relays it until it ends.
    async fn run_flow(self: Arc<Self>, id: u64, peer: SocketAddr, up: mpsc::Receiver<Bytes>) {
        let opened = self
            .dialer
            .open_destination(&self.dest, self.port, ChannelKind::Udp)
            .await;
        let reason = match opened {
            Ok((channel, ip)) => {
                tracing::debug!(target: "kt", "UDP flow {peer} -> {ip}:{} open", self.port);
                let sink = Sink::Socket(Arc::clone(&self.socket), peer);
                relay(channel, up, &sink, Some(self.idle)).await
            }
            Err(e) => {
                tracing::warn!(
                    target: "kt",
                    "UDP forward to {:?} port {} for {peer}: {e}",
                    self.dest, self.port
                );
                e.to_string()
            }
        };
        tracing::debug!(target: "kt", "UDP flow from {peer} ended: {reason}");
        let mut flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        if flows.get(&peer).is_some_and(|f| f.id == id) {
            flows.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_length_then_payload_and_bounded() {
        let codec = DatagramCodec::new();
        assert_eq!(
            frame(&codec, b"abc").ok().as_deref(),
            Some(&[0, 3, b'a', b'b', b'c'][..])
        );
        assert_eq!(frame(&codec, b"").ok().as_deref(), Some(&[0, 0][..]));
        assert!(frame(&codec, &vec![0; 65_507]).is_ok());
        let err = frame(&codec, &vec![0; 65_508]).err();
        assert!(matches!(
            err,
            Some(Error::DatagramTooLarge {
                len: 65_508,
                max: 65_507
            })
        ));
    }

    #[test]
    fn openssh_sessions_refuse_udp_with_the_reason() {
        assert!(check_supported(ShadowFlavour::KtShadow).is_ok());
        let msg = check_supported(ShadowFlavour::OpenSsh)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("UDP needs the kt-shadow agent; the OpenSSH shadow only carries TCP"),
            "{msg}"
        );
        // Every front end shows this text: no Rust API names in it.
        assert!(!msg.contains("::"), "{msg}");
    }
}
