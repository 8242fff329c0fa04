//! kt-shadow against a russh client (what kt-core uses): UDP relay, many concurrent
//! channels, open failures, the watchdog and the readiness probe.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{EchoServer, Shadowed, TestResult, UdpEchoServer, free_port, pattern};
use kt_proto::channel::DIRECT_UDP;
use kt_proto::{DatagramCodec, DatagramReader};
use kt_shadow::probe::{PROBE_TIMEOUT, probe};
use kt_shadow::{Exit, Tuning};
use russh::ChannelMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_udp_preserves_datagram_boundaries() -> TestResult {
    let shadow = Shadowed::start().await?;
    let echo = UdpEchoServer::start().await?;
    let client = shadow.russh_client().await?;
    let channel = client
        .channel_open_direct_tcpip("127.0.0.1", u32::from(echo.addr.port()), DIRECT_UDP, 0)
        .await?;
    let (mut rx, tx) = channel.split();

    let codec = DatagramCodec::new();
    let sizes = [1usize, 0, 100, 1400, 9000, 60_000, 3];
    let datagrams: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, len)| pattern(*len, i as u64))
        .collect();
    let mut wire = Vec::new();
    for d in &datagrams {
        codec.encode(d, &mut wire)?;
    }
    // Frames split across SSH data messages at awkward places (and several per message).
    for chunk in wire.chunks(7_001) {
        tx.data_bytes(chunk.to_vec()).await?;
    }

    let mut reader = DatagramReader::new(codec);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        while got.len() < datagrams.len() {
            match rx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    reader.push(&data);
                    while let Some(d) = reader.next_datagram()? {
                        got.push(d.to_vec());
                    }
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        Ok::<_, kt_proto::Error>(())
    })
    .await;
    assert!(matches!(received, Ok(Ok(()))), "{received:?}");
    // UDP over loopback keeps order, so the echo comes back in sending order.
    assert_eq!(got.len(), datagrams.len());
    for (i, (g, d)) in got.iter().zip(&datagrams).enumerate() {
        assert!(
            g == d,
            "datagram {i} ({} bytes) came back as {} bytes",
            d.len(),
            g.len()
        );
    }

    tx.close().await?;
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_udp_flow_closes_when_idle() -> TestResult {
    let tuning = Tuning {
        udp_idle_timeout: Duration::from_millis(300),
        ..Tuning::default()
    };
    let shadow = Shadowed::start_with(|_| {}, tuning).await?;
    let echo = UdpEchoServer::start().await?;
    let client = shadow.russh_client().await?;
    let mut channel = client
        .channel_open_direct_tcpip("127.0.0.1", u32::from(echo.addr.port()), DIRECT_UDP, 0)
        .await?;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle UDP flow was not closed");
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_udp_to_an_unresolvable_name_is_refused() -> TestResult {
    let shadow = Shadowed::start().await?;
    let client = shadow.russh_client().await?;
    let opened = client
        .channel_open_direct_tcpip("no-such-host.invalid", 53, DIRECT_UDP, 0)
        .await;
    let Err(russh::Error::ChannelOpenFailure(reason)) = opened else {
        return Err(format!("expected an open failure, got {opened:?}").into());
    };
    assert_eq!(reason.code(), 2, "ConnectFailed");
    shadow.stop().await?;
    Ok(())
}

/// Also the regression test for a russh-to-russh deadlock: both session loops blocked
/// writing, neither reading (fixed by the shadow's decoupled write side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_tcp_channels_each_echo_their_own_bytes() -> TestResult {
    let shadow = Shadowed::start().await?;
    let echo = EchoServer::start().await?;
    let client = std::sync::Arc::new(shadow.russh_client().await?);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let client = std::sync::Arc::clone(&client);
        let port = u32::from(echo.addr.port());
        tasks.spawn(async move {
            let channel = client
                .channel_open_direct_tcpip("127.0.0.1", port, "127.0.0.1", 40_000)
                .await?;
            let stream = channel.into_stream();
            let (mut r, mut w) = tokio::io::split(stream);
            let data = pattern(64 * 1024 + i as usize, i);
            let expected = data.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&data).await?;
                w.shutdown().await?; // EOF: the echo server closes after echoing all
                Ok::<_, std::io::Error>(())
            });
            let mut back = Vec::new();
            r.read_to_end(&mut back).await?;
            writer.await??;
            if back != expected {
                return Err(format!("channel {i}: {} bytes back, differ", back.len()).into());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        let mut ok = 0;
        while let Some(result) = tasks.join_next().await {
            result??;
            ok += 1;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ok)
    })
    .await??;
    assert_eq!(all, 200);
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tcpip_to_a_closed_port_fails_with_connect_failed() -> TestResult {
    let shadow = Shadowed::start().await?;
    let closed = free_port().await?;
    let client = shadow.russh_client().await?;
    let opened = client
        .channel_open_direct_tcpip("127.0.0.1", u32::from(closed), "127.0.0.1", 1)
        .await;
    let Err(russh::Error::ChannelOpenFailure(reason)) = opened else {
        return Err(format!("expected an open failure, got {opened:?}").into());
    };
    assert_eq!(reason.code(), 2, "ConnectFailed");
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_sees_the_banner_and_does_not_count_as_a_client() -> TestResult {
    let mut shadow = Shadowed::start_with(
        |args| args.heartbeat_timeout = Some(Duration::from_secs(1)),
        Tuning::default(),
    )
    .await?;
    let started = tokio::time::Instant::now();
    // Probes every 200 ms keep connecting, yet the heartbeat timeout fires.
    while shadow.is_running() && started.elapsed() < Duration::from_secs(5) {
        if let Ok(banner) = probe(shadow.addr, PROBE_TIMEOUT).await {
            assert!(banner.starts_with("SSH-2.0-kt-shadow_"), "{banner}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(shadow.wait().await?, Exit::HeartbeatTimeout);
    assert!(started.elapsed() >= Duration::from_millis(900));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_timeout_fires_when_the_client_leaves_not_while_it_stays() -> TestResult {
    let mut shadow = Shadowed::start_with(
        |args| args.heartbeat_timeout = Some(Duration::from_secs(1)),
        Tuning::default(),
    )
    .await?;
    let client = shadow.russh_client().await?;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(shadow.is_running(), "exited while a client was connected");

    client
        .disconnect(russh::Disconnect::ByApplication, "bye", "en")
        .await?;
    let left = tokio::time::Instant::now();
    let exit = tokio::time::timeout(Duration::from_secs(5), shadow.wait()).await??;
    assert_eq!(exit, Exit::HeartbeatTimeout);
    assert_eq!(exit.code(), 3);
    assert!(
        left.elapsed() >= Duration::from_millis(800),
        "{:?}",
        left.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_exit_waits_for_a_first_client_then_exits_zero() -> TestResult {
    let mut shadow = Shadowed::start_with(
        |args| args.idle_exit = Some(Duration::from_millis(500)),
        Tuning::default(),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        shadow.is_running(),
        "idle exit fired before any client came"
    );

    let client = shadow.russh_client().await?;
    client
        .disconnect(russh::Disconnect::ByApplication, "bye", "en")
        .await?;
    let exit = tokio::time::timeout(Duration::from_secs(5), shadow.wait()).await??;
    assert_eq!(exit, Exit::IdleExit);
    assert_eq!(exit.code(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_clients_and_closes_their_forwards() -> TestResult {
    let shadow = Shadowed::start_with(
        |args| args.remote_forward_ports = vec![0],
        Tuning::default(),
    )
    .await?;
    let client = shadow.russh_client().await?;
    let port = client.tcpip_forward("127.0.0.1", 0).await?;
    let listener = SocketAddr::from(([127, 0, 0, 1], u16::try_from(port)?));
    assert!(tokio::net::TcpStream::connect(listener).await.is_ok());

    let exit = tokio::time::timeout(Duration::from_secs(10), shadow.stop()).await??;
    assert_eq!(exit, Exit::Shutdown);
    assert!(tokio::net::TcpStream::connect(listener).await.is_err());
    assert!(client.is_closed() || client.send_keepalive(true).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_listen_address_is_refused_unless_allowed() -> TestResult {
    let refused = Shadowed::start_with(
        |args| args.listen = SocketAddr::from(([0, 0, 0, 0], 0)),
        Tuning::default(),
    )
    .await;
    let msg = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("not a loopback address"), "{msg}");
    Ok(())
}
