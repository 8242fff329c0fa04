//! Remote-forwarded ports that outlive one SSH connection: connections that arrive
//! while no client has the port are held and delivered to the next client that asks
//! for it, or reset after `--hold-timeout`; `cancel-tcpip-forward` closes the port;
//! the newest of two live registrations wins; half-close both ways, large transfers.
//! Real russh clients against an in-process shadow.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Shadowed, TestResult, pattern};
use kt_shadow::{Exit, HeldStats, Tuning};
use russh::keys::PublicKey;
use russh::{ChannelMsg, Disconnect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the client does with each forwarded connection.
#[derive(Clone, Copy)]
enum Mode {
    /// Sends its tag, then echoes every byte as it arrives; EOF after the peer's EOF.
    Echo,
    /// Reads until the peer's EOF, then sends its tag and everything it read, then EOF.
    ReplyAfterEof,
    /// Sends its tag and EOF at once, then keeps what arrives until EOF in `received`.
    SpeakFirst,
}

/// A russh client handler pinned to the shadow's host key that serves forwarded
/// connections per [`Mode`] and records their originator ports in arrival order.
#[derive(Clone)]
struct Client {
    pinned: PublicKey,
    tag: &'static [u8],
    mode: Mode,
    opened: Arc<Mutex<Vec<u32>>>,
    received: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Client {
    fn new(shadow: &Shadowed, tag: &'static [u8], mode: Mode) -> TestResult<Client> {
        Ok(Client {
            pinned: PublicKey::from_openssh(&shadow.host_public)?,
            tag,
            mode,
            opened: Arc::default(),
            received: Arc::default(),
        })
    }

    fn opened(&self) -> Vec<u32> {
        self.opened.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn received(&self) -> Option<Vec<u8>> {
        self.received.lock().ok().and_then(|r| r.clone())
    }

    async fn login(&self, shadow: &Shadowed) -> TestResult<russh::client::Handle<Client>> {
        shadow
            .russh_login(TcpStream::connect(shadow.addr).await?, self.clone())
            .await
    }
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match server_public_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.pinned.key_data()
            }
            russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
        })
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        if let Ok(mut opened) = self.opened.lock() {
            opened.push(originator_port);
        }
        reply.accept().await;
        let (tag, mode, received) = (self.tag, self.mode, Arc::clone(&self.received));
        tokio::spawn(async move {
            let mut channel = channel;
            let mut kept = Vec::new();
            if !matches!(mode, Mode::ReplyAfterEof) && channel.data(tag).await.is_err() {
                return;
            }
            if matches!(mode, Mode::SpeakFirst) && channel.eof().await.is_err() {
                return;
            }
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => match mode {
                        Mode::Echo => {
                            if channel.data(&data[..]).await.is_err() {
                                return;
                            }
                        }
                        Mode::ReplyAfterEof | Mode::SpeakFirst => kept.extend_from_slice(&data),
                    },
                    ChannelMsg::Eof => {
                        match mode {
                            Mode::Echo => {}
                            Mode::ReplyAfterEof => {
                                let mut reply = tag.to_vec();
                                reply.extend_from_slice(&kept);
                                if channel.data(&reply[..]).await.is_err() {
                                    return;
                                }
                            }
                            Mode::SpeakFirst => {
                                if let Ok(mut r) = received.lock() {
                                    *r = Some(std::mem::take(&mut kept));
                                }
                                continue;
                            }
                        }
                        let _ = channel.eof().await;
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
        });
        Ok(())
    }
}

fn local(port: u32) -> TestResult<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], u16::try_from(port)?)))
}

/// Sends `request`, half-closes, and reads the whole answer.
async fn ask(mut stream: TcpStream, request: &[u8]) -> TestResult<Vec<u8>> {
    stream.write_all(request).await?;
    stream.shutdown().await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// Waits (up to 10 s) until `ready` holds; the error names `what`.
async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("still waiting for {what} after 10 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Connects to `addr`, writes `request` and reads: the shadow gives the connection up,
/// so it must end in a reset (which the connect or the write may already see: the
/// shadow accepts a connection before it resets it).
async fn expect_reset(addr: SocketAddr, request: &[u8]) -> TestResult {
    let reset = |err: &std::io::Error| err.kind() == std::io::ErrorKind::ConnectionReset;
    let mut stream = match TcpStream::connect(addr).await {
        Err(err) if reset(&err) => return Ok(()),
        other => other?,
    };
    match stream.write_all(request).await {
        Err(err) if reset(&err) => return Ok(()),
        other => other?,
    }
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest).await {
        Err(err) if reset(&err) => Ok(()),
        other => Err(format!("expected a connection reset, got {other:?} ({rest:?})").into()),
    }
}

async fn leave(client: russh::client::Handle<Client>) -> TestResult {
    client
        .disconnect(Disconnect::ByApplication, "leaving", "en")
        .await?;
    wait_for("the client's connection to close", || client.is_closed()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_the_gap_are_held_and_delivered_in_order_to_the_next_client() -> TestResult {
    let shadow = Shadowed::start_with(
        |args| args.remote_forward_ports = vec![0],
        Tuning::default(),
    )
    .await?;
    let first = Client::new(&shadow, b"first:", Mode::Echo)?;
    let first_conn = first.login(&shadow).await?;
    let port = first_conn.tcpip_forward("127.0.0.1", 0).await?;
    let addr = local(port)?;
    assert_eq!(
        ask(TcpStream::connect(addr).await?, b"a").await?,
        b"first:a"
    );
    leave(first_conn).await?;

    // No client now: the port is still open, and what arrives waits.
    let mut waiting = Vec::new();
    for i in 0..3u64 {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("request {i}");
        stream.write_all(request.as_bytes()).await?;
        stream.shutdown().await?;
        wait_for("the connection to be held", || {
            shadow.held.snapshot().held == i + 1
        })
        .await?;
        waiting.push((u32::from(stream.local_addr()?.port()), stream, request));
    }

    let second = Client::new(&shadow, b"second:", Mode::Echo)?;
    let second_conn = second.login(&shadow).await?;
    second_conn.tcpip_forward("127.0.0.1", port).await?;
    let order: Vec<u32> = waiting.iter().map(|(p, _, _)| *p).collect();
    for (_, mut stream, request) in waiting {
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        assert_eq!(answer, format!("second:{request}").into_bytes());
    }
    assert_eq!(second.opened(), order, "held connections arrive in order");
    assert_eq!(first.opened().len(), 1);
    assert_eq!(
        shadow.held.snapshot(),
        HeldStats {
            held: 3,
            delivered: 3,
            expired: 0,
            overflowed: 0
        }
    );
    // The port goes on serving the new client.
    assert_eq!(
        ask(TcpStream::connect(addr).await?, b"b").await?,
        b"second:b"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_past_the_hold_timeout_is_reset_and_counted() -> TestResult {
    let shadow = Shadowed::start_with(
        |args| {
            args.remote_forward_ports = vec![0];
            args.hold_timeout = Duration::from_secs(1);
        },
        Tuning::default(),
    )
    .await?;
    let first = Client::new(&shadow, b"first:", Mode::Echo)?;
    let first_conn = first.login(&shadow).await?;
    let port = first_conn.tcpip_forward("127.0.0.1", 0).await?;
    leave(first_conn).await?;

    expect_reset(local(port)?, b"nobody reads this").await?;
    assert_eq!(
        shadow.held.snapshot(),
        HeldStats {
            held: 1,
            delivered: 0,
            expired: 1,
            overflowed: 0
        }
    );

    // A client that comes back later gets the port, not the expired connection.
    let second = Client::new(&shadow, b"second:", Mode::Echo)?;
    let second_conn = second.login(&shadow).await?;
    second_conn.tcpip_forward("127.0.0.1", port).await?;
    assert_eq!(
        ask(TcpStream::connect(local(port)?).await?, b"c").await?,
        b"second:c"
    );
    assert_eq!(second.opened().len(), 1);
    assert_eq!(shadow.held.snapshot().delivered, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_more_than_max_held_is_reset_and_counted() -> TestResult {
    let shadow = Shadowed::start_with(
        |args| {
            args.remote_forward_ports = vec![0];
            args.max_held_connections = 1;
        },
        Tuning::default(),
    )
    .await?;
    let first = Client::new(&shadow, b"first:", Mode::Echo)?;
    let first_conn = first.login(&shadow).await?;
    let port = first_conn.tcpip_forward("127.0.0.1", 0).await?;
    leave(first_conn).await?;

    let mut kept = TcpStream::connect(local(port)?).await?;
    kept.write_all(b"kept").await?;
    kept.shutdown().await?;
    wait_for("the connection to be held", || {
        shadow.held.snapshot().held == 1
    })
    .await?;
    expect_reset(local(port)?, b"one too many").await?;
    assert_eq!(shadow.held.snapshot().overflowed, 1);

    let second = Client::new(&shadow, b"second:", Mode::Echo)?;
    let second_conn = second.login(&shadow).await?;
    second_conn.tcpip_forward("127.0.0.1", port).await?;
    let mut answer = Vec::new();
    kept.read_to_end(&mut answer).await?;
    assert_eq!(answer, b"second:kept");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_closes_the_port_for_good_from_any_connection() -> TestResult {
    let shadow = Shadowed::start_with(
        |args| args.remote_forward_ports = vec![0],
        Tuning::default(),
    )
    .await?;
    let client = Client::new(&shadow, b"c:", Mode::Echo)?;

    // Cancelled by the connection that asked for it.
    let conn = client.login(&shadow).await?;
    let port = conn.tcpip_forward("127.0.0.1", 0).await?;
    assert_eq!(
        ask(TcpStream::connect(local(port)?).await?, b"x").await?,
        b"c:x"
    );
    conn.cancel_tcpip_forward("127.0.0.1", port).await?;
    let refused = TcpStream::connect(local(port)?).await.err();
    assert_eq!(
        refused.map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    // Gone for good: asking for it again is refused (only port 0 may be asked for).
    assert!(conn.tcpip_forward("127.0.0.1", port).await.is_err());

    // Cancelled by a later connection, after the one that asked for it left.
    let port = conn.tcpip_forward("127.0.0.1", 0).await?;
    leave(conn).await?;
    let later = client.login(&shadow).await?;
    later.cancel_tcpip_forward("127.0.0.1", port).await?;
    let refused = TcpStream::connect(local(port)?).await.err();
    assert_eq!(
        refused.map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    // Cancelling what is not forwarded is refused.
    assert!(later.cancel_tcpip_forward("127.0.0.1", port).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_live_connections_the_newest_request_for_a_port_wins() -> TestResult {
    let shadow = Shadowed::start_with(
        |args| args.remote_forward_ports = vec![0],
        Tuning::default(),
    )
    .await?;
    let first = Client::new(&shadow, b"first:", Mode::Echo)?;
    let second = Client::new(&shadow, b"second:", Mode::Echo)?;
    let first_conn = first.login(&shadow).await?;
    let second_conn = second.login(&shadow).await?;
    let port = first_conn.tcpip_forward("127.0.0.1", 0).await?;
    let addr = local(port)?;
    assert_eq!(
        ask(TcpStream::connect(addr).await?, b"1").await?,
        b"first:1"
    );

    second_conn.tcpip_forward("127.0.0.1", port).await?;
    assert_eq!(
        ask(TcpStream::connect(addr).await?, b"2").await?,
        b"second:2"
    );
    assert_eq!(first.opened().len(), 1);

    first_conn.tcpip_forward("127.0.0.1", port).await?;
    assert_eq!(
        ask(TcpStream::connect(addr).await?, b"3").await?,
        b"first:3"
    );
    assert_eq!(second.opened().len(), 1);
    assert_eq!(shadow.held.snapshot(), HeldStats::default());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_connections_carry_half_close_both_ways_and_large_transfers() -> TestResult {
    let shadow = Shadowed::start_with(
        |args| args.remote_forward_ports = vec![0],
        Tuning::default(),
    )
    .await?;

    // The TCP peer ends its side first; the client answers after that EOF.
    let replier = Client::new(&shadow, b"reply:", Mode::ReplyAfterEof)?;
    let conn = replier.login(&shadow).await?;
    let port = conn.tcpip_forward("127.0.0.1", 0).await?;
    let upload = pattern(16 * 1024 * 1024, 1);
    let answer = ask(TcpStream::connect(local(port)?).await?, &upload).await?;
    assert_eq!(answer.len(), b"reply:".len() + upload.len());
    assert!(answer.starts_with(b"reply:"));
    assert!(answer.ends_with(&upload), "the upload came back intact");
    leave(conn).await?;

    // The client ends its side first; the TCP peer reads that EOF, then sends.
    let speaker = Client::new(&shadow, b"hello", Mode::SpeakFirst)?;
    let conn = speaker.login(&shadow).await?;
    conn.tcpip_forward("127.0.0.1", port).await?;
    let mut stream = TcpStream::connect(local(port)?).await?;
    let mut greeting = Vec::new();
    stream.read_to_end(&mut greeting).await?;
    assert_eq!(greeting, b"hello");
    let upload = pattern(8 * 1024 * 1024, 2);
    stream.write_all(&upload).await?;
    stream.shutdown().await?;
    wait_for("the client to receive the upload and its EOF", || {
        speaker.received().is_some()
    })
    .await?;
    assert!(
        speaker.received() == Some(upload),
        "the upload arrived intact"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_ports_do_not_keep_the_shadow_alive_and_close_when_it_exits() -> TestResult {
    let mut shadow = Shadowed::start_with(
        |args| {
            args.remote_forward_ports = vec![0];
            args.idle_exit = Some(Duration::from_secs(1));
        },
        Tuning::default(),
    )
    .await?;
    let client = Client::new(&shadow, b"c:", Mode::Echo)?;
    let conn = client.login(&shadow).await?;
    let port = conn.tcpip_forward("127.0.0.1", 0).await?;
    leave(conn).await?;
    let mut held = TcpStream::connect(local(port)?).await?;
    held.write_all(b"waiting").await?;
    wait_for("the connection to be held", || {
        shadow.held.snapshot().held == 1
    })
    .await?;

    // A held connection is not a client: --idle-exit still ends the shadow, which
    // resets what it held and closes the port.
    let exit = tokio::time::timeout(Duration::from_secs(30), shadow.wait()).await??;
    assert_eq!(exit, Exit::IdleExit);
    let mut rest = Vec::new();
    let read = held.read_to_end(&mut rest).await;
    assert_eq!(
        read.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionReset)
    );
    let refused = TcpStream::connect(local(port)?).await.err();
    assert_eq!(
        refused.map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    assert_eq!(shadow.held.snapshot().expired, 0);
    Ok(())
}
