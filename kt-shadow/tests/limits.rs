//! The shadow's listeners and limits, against a russh client (what kt-core uses):
//! remote forwards only on the ports given with `--remote-forward`; at most
//! `--max-preauth-connections` connections waiting to log in; at most `--max-channels`
//! channels and `--max-udp-flows` UDP flows per connection. Each refusal is an SSH
//! failure with a text, and below the limits everything works.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use common::{EchoServer, GREETING, Shadowed, TestResult, UdpEchoServer, free_port};
use kt_proto::channel::DIRECT_UDP;
use kt_shadow::Tuning;
use kt_shadow::probe::{PROBE_TIMEOUT, probe};
use russh::ChannelMsg;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a retry loop waits for a slot the shadow gives back after a close (the
/// shadow's task ends a moment after the channel is closed).
const SLOT_BACK: Duration = Duration::from_secs(10);

/// `RESOURCE_SHORTAGE`, the code of an open refused for a limit.
const RESOURCE_SHORTAGE: u32 = 4;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The code of a refused channel open, or an error saying what happened instead.
fn open_failure_code<T: std::fmt::Debug>(opened: Result<T, russh::Error>) -> TestResult<u32> {
    match opened {
        Err(russh::Error::ChannelOpenFailure(reason)) => Ok(reason.code()),
        other => Err(format!("expected a channel open failure, got {other:?}").into()),
    }
}

/// Retries `open` until it succeeds (a slot came back) or [`SLOT_BACK`] passes.
async fn open_once_a_slot_is_back<T, F, Fut>(mut open: F) -> TestResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, russh::Error>>,
{
    let deadline = tokio::time::Instant::now() + SLOT_BACK;
    loop {
        match open().await {
            Ok(opened) => return Ok(opened),
            Err(russh::Error::ChannelOpenFailure(reason))
                if tokio::time::Instant::now() < deadline && reason.code() == RESOURCE_SHORTAGE =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(format!("no slot came back: {err:?}").into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_without_remote_forward_ports_refuses_every_tcpip_forward() -> TestResult {
    let shadow = Shadowed::start().await?;
    let echo = EchoServer::start().await?;
    let client = shadow.russh_client().await?;
    let port = free_port().await?;
    for (address, asked) in [
        ("0.0.0.0", port),
        ("127.0.0.1", port),
        ("localhost", port),
        ("", 0),
    ] {
        let answer = client.tcpip_forward(address, u32::from(asked)).await;
        assert!(
            matches!(answer, Err(russh::Error::RequestDenied)),
            "tcpip-forward {address}:{asked} gave {answer:?}"
        );
    }
    assert!(
        TcpStream::connect(loopback(port)).await.is_err(),
        "something listens on the refused port"
    );
    // The refusals leave the connection working.
    let channel = client
        .channel_open_direct_tcpip("127.0.0.1", u32::from(echo.addr.port()), "127.0.0.1", 1)
        .await?;
    channel.close().await?;
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forwards_listen_only_on_the_given_ports_and_the_pods_own_addresses() -> TestResult {
    let allowed = free_port().await?;
    let other = free_port().await?;
    let shadow = Shadowed::start_with(
        |args| args.remote_forward_ports = vec![allowed],
        Tuning::default(),
    )
    .await?;
    let client = shadow.russh_client().await?;
    for (address, asked) in [
        // Other ports, also port 0 (a free port the shadow would pick).
        ("0.0.0.0", other),
        ("127.0.0.1", other),
        ("0.0.0.0", 0),
        // The allowed port, on addresses that are not the pod's own.
        ("localhost.example", allowed),
        ("kubernetes.default", allowed),
        ("192.0.2.1", allowed),
    ] {
        let answer = client.tcpip_forward(address, u32::from(asked)).await;
        assert!(
            matches!(answer, Err(russh::Error::RequestDenied)),
            "tcpip-forward {address}:{asked} gave {answer:?}"
        );
    }
    assert!(TcpStream::connect(loopback(other)).await.is_err());

    // (The reply names no port: only a request for port 0 gets one back.)
    client
        .tcpip_forward("127.0.0.1", u32::from(allowed))
        .await?;
    assert!(TcpStream::connect(loopback(allowed)).await.is_ok());
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_17th_connection_waiting_to_log_in_is_refused_while_16_wait() -> TestResult {
    // The default limit: what the shadow pod runs with.
    let shadow = Shadowed::start().await?;
    assert_eq!(kt_proto::cli::DEFAULT_MAX_PREAUTH_CONNECTIONS, 16);
    let mut waiting = Vec::new();
    for _ in 0..16 {
        // Connected and silent: the shadow has sent its banner and waits for ours.
        waiting.push(TcpStream::connect(shadow.addr).await?);
    }

    let recorder = shadow.recorder()?;
    let seventeenth = shadow
        .russh_login(TcpStream::connect(shadow.addr).await?, recorder.clone())
        .await;
    assert!(seventeenth.is_err(), "the 17th connection logged in");
    let said = recorder.said();
    assert!(
        said.iter().any(|s| s.starts_with("disconnect 12: ")
            && s.contains("too many connections waiting to log in (16")),
        "the 17th connection was not told why: {said:?}"
    );

    // The readiness probe still sees the banner (the refusal starts with it).
    let banner = probe(shadow.addr, PROBE_TIMEOUT).await?;
    assert!(banner.starts_with("SSH-2.0-kt-shadow_"), "{banner}");

    // The 16 are still waiting: one of them logs in now...
    let first = waiting.remove(0);
    let logged_in = shadow.russh_login(first, shadow.recorder()?).await?;
    // ... which gives its slot back at once: a new connection logs in too.
    let another = shadow.russh_client().await?;
    let echo = EchoServer::start().await?;
    let echo_port = u32::from(echo.addr.port());
    logged_in
        .channel_open_direct_tcpip("127.0.0.1", echo_port, "127.0.0.1", 1)
        .await?
        .close()
        .await?;
    another
        .channel_open_direct_tcpip("127.0.0.1", echo_port, "127.0.0.1", 1)
        .await?
        .close()
        .await?;

    // Another silent connection is refused again: 15 wait, plus the new one makes 16.
    waiting.push(TcpStream::connect(shadow.addr).await?);
    let recorder = shadow.recorder()?;
    let refused = shadow
        .russh_login(TcpStream::connect(shadow.addr).await?, recorder.clone())
        .await;
    assert!(refused.is_err(), "a 17th waiting connection logged in");
    assert!(
        recorder
            .said()
            .iter()
            .any(|s| s.starts_with("disconnect 12: ")),
        "{:?}",
        recorder.said()
    );
    drop(waiting);
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_over_the_limit_is_refused_with_resource_shortage() -> TestResult {
    let shadow = Shadowed::start_with(|args| args.max_channels = 3, Tuning::default()).await?;
    let echo = EchoServer::start().await?;
    let echo_port = u32::from(echo.addr.port());
    let recorder = shadow.recorder()?;
    let client = shadow
        .russh_login(TcpStream::connect(shadow.addr).await?, recorder.clone())
        .await?;

    // Three channels of two kinds: the limit.
    let session = client.channel_open_session().await?;
    let first = client
        .channel_open_direct_tcpip("127.0.0.1", echo_port, "127.0.0.1", 1)
        .await?;
    let second = client
        .channel_open_direct_tcpip("127.0.0.1", echo_port, "127.0.0.1", 2)
        .await?;

    let tcp = client
        .channel_open_direct_tcpip("127.0.0.1", echo_port, "127.0.0.1", 3)
        .await;
    assert_eq!(open_failure_code(tcp)?, RESOURCE_SHORTAGE);
    assert_eq!(
        open_failure_code(client.channel_open_session().await)?,
        RESOURCE_SHORTAGE
    );
    // (The second refusal's answer came after the first one's text was recorded.)
    let said = recorder.said();
    assert!(
        said.iter().any(|s| s.starts_with("open failure 4: ")
            && s.contains("already has 3 open channels")
            && s.contains("--max-channels")),
        "the refusal says no why: {said:?}"
    );

    // The channels below the limit work.
    let mut stream = first.into_stream();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"below the limit").await?;
    let mut back = [0u8; 15];
    stream.read_exact(&mut back).await?;
    assert_eq!(&back, b"below the limit");

    // Closing a channel gives its slot back.
    second.close().await?;
    let again = open_once_a_slot_is_back(|| {
        client.channel_open_direct_tcpip("127.0.0.1", echo_port, "127.0.0.1", 4)
    })
    .await?;
    again.close().await?;
    session.close().await?;
    let session_again = open_once_a_slot_is_back(|| client.channel_open_session()).await?;
    session_again.close().await?;
    shadow.stop().await?;
    Ok(())
}

/// Connects to `addr` and reads until the peer closes: what it sent, or the first
/// error (a reset, from the connect call or from a read).
async fn read_all(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_a_remote_forward_over_the_channel_limit_is_closed() -> TestResult {
    let port = free_port().await?;
    let shadow = Shadowed::start_with(
        |args| {
            args.max_channels = 1;
            args.remote_forward_ports = vec![port];
        },
        Tuning::default(),
    )
    .await?;
    let echo = EchoServer::start().await?;
    // This client greets every forwarded connection.
    let client = shadow
        .russh_login(TcpStream::connect(shadow.addr).await?, shadow.recorder()?)
        .await?;
    client.tcpip_forward("127.0.0.1", u32::from(port)).await?;
    let held = client
        .channel_open_direct_tcpip("127.0.0.1", u32::from(echo.addr.port()), "127.0.0.1", 1)
        .await?;

    // The listener accepts, finds no channel slot and resets the connection: no
    // greeting. The reset can arrive before the connect call returns, which then
    // fails with it.
    let got = read_all(loopback(port)).await;
    assert!(
        got.as_ref().is_ok_and(Vec::is_empty)
            || got
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "a connection over the limit got {got:?}"
    );

    // With the slot back, a connection reaches the client.
    held.close().await?;
    let deadline = tokio::time::Instant::now() + SLOT_BACK;
    loop {
        let got = read_all(loopback(port)).await.unwrap_or_default();
        if got == GREETING {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no greeting through the forward after the slot came back: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_flow_over_the_limit_is_refused_with_resource_shortage() -> TestResult {
    let shadow = Shadowed::start_with(|args| args.max_udp_flows = 2, Tuning::default()).await?;
    let udp_echo = UdpEchoServer::start().await?;
    let udp_port = u32::from(udp_echo.addr.port());
    let echo = EchoServer::start().await?;
    let recorder = shadow.recorder()?;
    let client = shadow
        .russh_login(TcpStream::connect(shadow.addr).await?, recorder.clone())
        .await?;

    let first = client
        .channel_open_direct_tcpip("127.0.0.1", udp_port, DIRECT_UDP, 0)
        .await?;
    let second = client
        .channel_open_direct_tcpip("127.0.0.1", udp_port, DIRECT_UDP, 0)
        .await?;
    let third = client
        .channel_open_direct_tcpip("127.0.0.1", udp_port, DIRECT_UDP, 0)
        .await;
    assert_eq!(open_failure_code(third)?, RESOURCE_SHORTAGE);
    // TCP channels are not UDP flows: they still open.
    let tcp = client
        .channel_open_direct_tcpip("127.0.0.1", u32::from(echo.addr.port()), "127.0.0.1", 1)
        .await?;
    tcp.close().await?;
    // (russh records the refusal's text after the open returns, before it handles the
    // next packet from the shadow, such as the answer to the open above.)
    let said = recorder.said();
    assert!(
        said.iter().any(|s| s.starts_with("open failure 4: ")
            && s.contains("already has 2 open UDP flows")
            && s.contains("--max-udp-flows")),
        "the refusal says no why: {said:?}"
    );

    // A flow below the limit relays datagrams.
    let codec = kt_proto::DatagramCodec::new();
    let mut frame = Vec::new();
    codec.encode(b"ping", &mut frame)?;
    let (mut rx, tx) = first.split();
    tx.data_bytes(frame).await?;
    let mut reader = kt_proto::DatagramReader::new(codec);
    let echoed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    reader.push(&data);
                    if let Some(d) = reader.next_datagram()? {
                        return Ok::<_, kt_proto::Error>(Some(d.to_vec()));
                    }
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return Ok(None),
                Some(_) => {}
            }
        }
    })
    .await??;
    assert_eq!(echoed.as_deref(), Some(b"ping".as_slice()));

    // Closing a flow gives its slot back.
    second.close().await?;
    let again = open_once_a_slot_is_back(|| {
        client.channel_open_direct_tcpip("127.0.0.1", udp_port, DIRECT_UDP, 0)
    })
    .await?;
    again.close().await?;
    tx.close().await?;
    shadow.stop().await?;
    Ok(())
}

/// Reads until `stream` has delivered the refusal's disconnect text (the connection
/// stays open: the test holds it).
async fn read_refusal(stream: &mut TcpStream) -> TestResult<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&got).contains("try again in a moment") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_connections_holds_a_bounded_number_of_sockets() -> TestResult {
    let tuning = Tuning {
        refusals_in_flight: 3,
        // Refused connections stay until the client closes them (for the test).
        refusal_linger: Duration::from_secs(600),
        ..Tuning::default()
    };
    let shadow = Shadowed::start_with(|args| args.max_preauth_connections = 1, tuning).await?;
    let _waiting = TcpStream::connect(shadow.addr).await?;

    // Three refusals in flight, each told why...
    let mut refused = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(shadow.addr).await?;
        let got = read_refusal(&mut stream).await?;
        assert!(
            got.starts_with(b"SSH-2.0-kt-shadow_")
                && String::from_utf8_lossy(&got).contains("too many connections waiting"),
            "{got:?}"
        );
        refused.push(stream);
    }
    // ... and the next one is closed at once, without a word.
    let mut closed = TcpStream::connect(shadow.addr).await?;
    let mut got = Vec::new();
    let read = closed.read_to_end(&mut got).await;
    assert!(
        got.is_empty() && (matches!(read, Ok(0)) || read.is_err()),
        "over the refusals in flight: {read:?} {got:?}"
    );

    // Once the refused clients hang up, refusals carry their message again.
    drop(refused);
    let deadline = tokio::time::Instant::now() + SLOT_BACK;
    loop {
        let mut stream = TcpStream::connect(shadow.addr).await?;
        let got = read_refusal(&mut stream).await?;
        if String::from_utf8_lossy(&got).contains("too many connections waiting") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusals still silent after the refused clients left: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shadow.stop().await?;
    Ok(())
}
