//! UDP through a session (kt-shadow only), as a ServiceAccount bound to the shipped
//! Role: datagrams of 1 to 60 000 bytes echoed through `forward_udp` to the echo
//! Service and to a pod IP, one flow per local sender, `udp_channel` to a pod and its
//! end when the session closes; and the clear refusal with the OpenSSH shadow.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::Fixture;
use kt_core::{DatagramChannel, Error, ErrorKind, ShadowFlavour};
use tokio::net::UdpSocket;

/// The echo app's UDP port (Service `echo` port 9001/UDP, container port 9001).
const ECHO_UDP: u16 = 9001;

/// The sizes sent each way; 60 000 bytes needs IP fragmentation past the shadow.
const SIZES: [usize; 5] = [1, 100, 1400, 8000, 60_000];

/// How long to wait for one echo before sending the datagram again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends of one datagram before giving up (UDP may lose one; the lab hardly does).
const ATTEMPTS: u32 = 5;

/// Distinct content for datagram `seed` of `len` bytes.
fn datagram(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (len as u64) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Something that sends and receives whole datagrams.
#[derive(Clone, Copy)]
enum Udp<'a> {
    /// A local socket connected to a `forward_udp` address.
    Socket(&'a UdpSocket),
    /// A flow from `udp_channel`.
    Channel(&'a DatagramChannel),
}

impl Udp<'_> {
    async fn send(&self, d: &[u8]) -> Result<()> {
        match self {
            Udp::Socket(s) => {
                let sent = s.send(d).await?;
                ensure!(sent == d.len(), "sent {sent} of {} bytes", d.len());
            }
            Udp::Channel(c) => c.send(d).await?,
        }
        Ok(())
    }

    async fn recv(&self) -> Result<Vec<u8>> {
        Ok(match self {
            Udp::Socket(s) => {
                let mut buf = vec![0u8; 65_536];
                let n = s.recv(&mut buf).await?;
                buf.truncate(n);
                buf
            }
            Udp::Channel(c) => c.recv().await?.to_vec(),
        })
    }
}

/// Sends a datagram of each of [`SIZES`] (content from `seed`) and checks that each
/// comes back whole and identical, resending after [`ATTEMPT_TIMEOUT`] at most
/// [`ATTEMPTS`] times. Late echoes of datagrams already checked are skipped.
async fn echo_each_size(udp: Udp<'_>, what: &str, seed: u64) -> Result<()> {
    let mut done: Vec<Vec<u8>> = Vec::new();
    for (i, len) in SIZES.into_iter().enumerate() {
        let sent = datagram(seed * 100 + i as u64, len);
        let mut echoed = false;
        for attempt in 1..=ATTEMPTS {
            udp.send(&sent)
                .await
                .with_context(|| format!("{what}: sending {len} bytes"))?;
            let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
            loop {
                let got = match tokio::time::timeout_at(deadline, udp.recv()).await {
                    Ok(got) => got.with_context(|| format!("{what}: receiving {len} bytes"))?,
                    Err(_) => {
                        eprintln!(
                            "{what}: no echo of {len} bytes within {ATTEMPT_TIMEOUT:?} (try {attempt})"
                        );
                        break;
                    }
                };
                if got == sent {
                    echoed = true;
                    break;
                }
                if done.contains(&got) {
                    continue; // a late echo of a datagram sent twice
                }
                bail!(
                    "{what}: sent {len} bytes, got back {} bytes that are not what was sent",
                    got.len()
                );
            }
            if echoed {
                break;
            }
        }
        ensure!(
            echoed,
            "{what}: {len} bytes not echoed after {ATTEMPTS} tries"
        );
        done.push(sent);
    }
    Ok(())
}

/// A local UDP socket connected to `forward`.
async fn local_socket(forward: SocketAddr) -> Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0").await?;
    s.connect(forward).await?;
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_udp_echoes_every_size_through_the_service_with_a_flow_per_sender() -> Result<()> {
    let f = Fixture::start("kt-udp-svc", ShadowFlavour::KtShadow, 2).await?;
    let fwd = f.session.forward_udp("echo", ECHO_UDP).await?;
    ensure!(fwd.ip().is_loopback(), "forward_udp bound {fwd}");
    let a = local_socket(fwd).await?;
    echo_each_size(Udp::Socket(&a), "forward_udp echo", 1).await?;

    // Two more senders at once, by another name form: each gets only its own echoes.
    let fwd2 = f.session.forward_udp("svc/echo", ECHO_UDP).await?;
    let (b, c) = (local_socket(fwd2).await?, local_socket(fwd2).await?);
    let (rb, rc) = tokio::join!(
        echo_each_size(Udp::Socket(&b), "forward_udp svc/echo sender 1", 2),
        echo_each_size(Udp::Socket(&c), "forward_udp svc/echo sender 2", 3),
    );
    rb?;
    rc?;
    // The first forward still works after the others.
    echo_each_size(Udp::Socket(&a), "forward_udp echo again", 4).await?;
    f.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_udp_and_udp_channel_reach_a_pod_ip() -> Result<()> {
    let f = Fixture::start("kt-udp-pod", ShadowFlavour::KtShadow, 2).await?;
    let pod_ip = f.echo.pod_ips[0].clone();
    let fwd = f.session.forward_udp(&pod_ip, ECHO_UDP).await?;
    let s = local_socket(fwd).await?;
    echo_each_size(Udp::Socket(&s), &format!("forward_udp {pod_ip}"), 5).await?;

    let pod = format!("pod/{}", f.echo.pods[1]);
    let flow = f.session.udp_channel(&pod, ECHO_UDP).await?;
    ensure!(
        flow.peer_addr() == SocketAddr::new(f.echo.pod_ips[1].parse()?, ECHO_UDP),
        "udp_channel {pod} went to {}",
        flow.peer_addr()
    );
    echo_each_size(Udp::Channel(&flow), &format!("udp_channel {pod}"), 6).await?;
    let too_big = flow.send(&vec![0; 65_508]).await;
    ensure!(
        matches!(too_big, Err(Error::DatagramTooLarge { len: 65_508, .. })),
        "{too_big:?}"
    );
    // A destination the shadow cannot open a UDP socket to (the broadcast address)
    // is refused at once, as kind `connect` — the same failure every front end tests.
    match f.session.udp_channel("255.255.255.255", ECHO_UDP).await {
        Err(e @ Error::Connect { .. }) => {
            ensure!(e.kind() == ErrorKind::Connect, "kind {}", e.kind());
        }
        other => bail!("expected a Connect error, got {other:?}"),
    }

    // Closing the session ends the flow: recv wakes with Error::Closed.
    let pending = tokio::spawn(async move {
        let r = flow.recv().await;
        (flow, r)
    });
    f.finish().await?;
    let (_flow, r) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .context("recv() still waiting 10 s after close()")??;
    ensure!(matches!(r, Err(Error::Closed)), "recv after close: {r:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openssh_shadow_refuses_udp_clearly() -> Result<()> {
    let f = Fixture::start("kt-udp-openssh", ShadowFlavour::OpenSsh, 1).await?;
    let forward = f.session.forward_udp("echo", ECHO_UDP).await;
    let channel = f.session.udp_channel("echo", ECHO_UDP).await;
    for (what, err) in [
        ("forward_udp", forward.err()),
        ("udp_channel", channel.err()),
    ] {
        let Some(err @ Error::Unsupported { .. }) = err else {
            bail!("{what} with the OpenSSH shadow: expected Error::Unsupported, got {err:?}");
        };
        let msg = err.to_string();
        ensure!(
            msg.contains("UDP needs the kt-shadow agent; the OpenSSH shadow only carries TCP"),
            "{what}: {msg}"
        );
    }
    // TCP still works in the same session.
    let tcp = f.session.forward("echo", 9000).await?;
    let back = common::echo_round_trip(
        tokio::net::TcpStream::connect(tcp).await?,
        b"still tcp".to_vec(),
    )
    .await?;
    ensure!(back == b"still tcp", "TCP echo gave {back:?}");
    f.finish().await
}
