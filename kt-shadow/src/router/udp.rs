//! The router's UDP ports: a meshed Service's UDP traffic reaches the router too (its
//! selector points at it), and is not routed: each datagram is relayed to the origin
//! on the same port, and the replies back to the sender.
//!
//! One flow per sender address: a socket connected to the origin, whose replies go back
//! through the listening socket. A flow idle for [`FLOW_IDLE`] is dropped; at most
//! [`MAX_FLOWS`] at once (one more sender is dropped, its datagram too, and logged).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a flow lives without a datagram either way.
pub const FLOW_IDLE: Duration = Duration::from_secs(60);

/// Most flows at once per port.
pub const MAX_FLOWS: usize = 1024;

struct Flow {
    socket: Arc<UdpSocket>,
    last: Arc<Mutex<Instant>>,
}

/// Relays datagrams arriving on `socket` to `origin` until `cancel`.
pub async fn relay(socket: UdpSocket, origin: SocketAddr, cancel: CancellationToken) {
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut sweep = tokio::time::interval(FLOW_IDLE / 4);
    loop {
        let (len, from) = tokio::select! {
            () = cancel.cancelled() => return,
            _ = sweep.tick() => {
                flows.retain(|_, f| {
                    f.last.lock().unwrap_or_else(PoisonError::into_inner).elapsed() < FLOW_IDLE
                });
                continue;
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "UDP receive");
                    continue;
                }
            },
        };
        if !flows.contains_key(&from) {
            if flows.len() >= MAX_FLOWS {
                warn!(%from, "too many UDP flows; datagram dropped");
                continue;
            }
            match open(&socket, from, origin, cancel.clone()).await {
                Ok(flow) => {
                    flows.insert(from, flow);
                }
                Err(e) => {
                    warn!(%origin, error = %e, "cannot open a UDP flow to the origin");
                    continue;
                }
            }
        }
        if let Some(flow) = flows.get(&from) {
            *flow.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
            if let Err(e) = flow.socket.send(&buf[..len]).await {
                debug!(%origin, error = %e, "UDP send to the origin");
            }
        }
    }
}

/// A flow for `from`: a socket connected to `origin`, its replies sent back to `from`
/// through `listening` until the flow is idle or `cancel`.
async fn open(
    listening: &Arc<UdpSocket>,
    from: SocketAddr,
    origin: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<Flow> {
    let bind: SocketAddr = if origin.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let upstream = Arc::new(UdpSocket::bind(bind).await?);
    upstream.connect(origin).await?;
    let last = Arc::new(Mutex::new(Instant::now()));
    let (reader, back, seen) = (
        Arc::clone(&upstream),
        Arc::clone(listening),
        Arc::clone(&last),
    );
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let idle_for = seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed();
            let Some(left) = FLOW_IDLE.checked_sub(idle_for) else {
                return;
            };
            let len = tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(left) => continue,
                received = reader.recv(&mut buf) => match received {
                    Ok(len) => len,
                    // ICMP port unreachable from the origin, for one: keep the flow.
                    Err(_) => continue,
                },
            };
            *seen.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
            if let Err(e) = back.send_to(&buf[..len], from).await {
                debug!(%from, error = %e, "UDP reply");
            }
        }
    });
    Ok(Flow {
        socket: upstream,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_go_to_the_origin_and_replies_come_back() {
        // The origin: an echo that prefixes what it got.
        let origin = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = origin.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((len, from)) = origin.recv_from(&mut buf).await {
                let mut reply = b"origin:".to_vec();
                reply.extend_from_slice(&buf[..len]);
                let _ = origin.send_to(&reply, from).await;
            }
        });
        let router = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let router_addr = router.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(relay(router, origin_addr, cancel.clone()));
        for who in ["a", "b"] {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.connect(router_addr).await.unwrap();
            for i in 0..3 {
                let msg = format!("{who}{i}");
                client.send(msg.as_bytes()).await.unwrap();
                let mut buf = [0u8; 1500];
                let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(&buf[..len], format!("origin:{msg}").as_bytes());
            }
        }
        cancel.cancel();
    }
}
