//! kt-shadow against the machine's OpenSSH client (`/usr/bin/ssh`), pinned to the
//! shadow's host key, on 127.0.0.1 only.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{
    EchoServer, Shadowed, TestResult, free_port, keygen, pattern, round_trip, socks5_connect,
    wait_listening,
};
use kt_shadow::Tuning;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

/// Starts `ssh -N` with the given forwarding flags and waits until `ready` listens.
async fn ssh_forwarding(
    shadow: &Shadowed,
    flags: &[&str],
    ready: SocketAddr,
) -> TestResult<tokio::process::Child> {
    let mut child = shadow
        .ssh()
        .arg("-N")
        .args(flags)
        .arg("127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Err(err) = wait_listening(ready).await {
        let _ = child.start_kill();
        let out = child.wait_with_output().await?;
        return Err(format!("{err}; ssh said: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_round_trips_mebibytes_byte_exact() -> TestResult {
    let shadow = Shadowed::start().await?;
    let echo = EchoServer::start().await?;
    let port = free_port().await?;
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let spec = format!("127.0.0.1:{port}:127.0.0.1:{}", echo.addr.port());
    let mut ssh = ssh_forwarding(&shadow, &["-L", &spec], local).await?;

    let data = pattern(8 * MIB, 1);
    let back = round_trip(TcpStream::connect(local).await?, &data).await?;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");

    // A second connection through the same forward, half-closed early by the client:
    // the echo's reply still arrives in full after our EOF.
    let small = pattern(1000, 2);
    let back = round_trip(TcpStream::connect(local).await?, &small).await?;
    assert_eq!(back, small);

    ssh.start_kill()?;
    let _ = ssh.wait().await;
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_to_a_closed_port_reports_the_connect_failure() -> TestResult {
    let shadow = Shadowed::start().await?;
    let closed = free_port().await?;
    let port = free_port().await?;
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let spec = format!("127.0.0.1:{port}:127.0.0.1:{closed}");
    let mut ssh = ssh_forwarding(&shadow, &["-L", &spec], local).await?;

    // The local side accepts, then closes once the shadow refuses the channel.
    let mut stream = TcpStream::connect(local).await?;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    ssh.start_kill()?;
    let out = ssh.wait_with_output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connect failed") && stderr.contains(&format!("127.0.0.1:{closed} failed")),
        "ssh stderr: {stderr}"
    );
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_on_port_zero_reaches_a_local_server() -> TestResult {
    // Port 0 is allowed explicitly (kt's shadows never allow it).
    let shadow = Shadowed::start_with(
        |args| args.remote_forward_ports = vec![0],
        Tuning::default(),
    )
    .await?;
    let echo = EchoServer::start().await?;
    let spec = format!("0:127.0.0.1:{}", echo.addr.port());
    let mut ssh = shadow
        .ssh()
        .args(["-N", "-R", &spec, "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = ssh.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    // "Allocated port N for remote forward to 127.0.0.1:P"
    let allocated = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("Allocated port ") {
                let port = rest.split_whitespace().next().unwrap_or_default();
                return Ok::<_, std::io::Error>(port.parse::<u16>().ok());
            }
        }
        Ok(None)
    })
    .await??
    .ok_or("ssh did not report an allocated port")?;

    // The shadow listens on its loopback (OpenSSH asks for "localhost").
    let remote = SocketAddr::from(([127, 0, 0, 1], allocated));
    let data = pattern(2 * MIB, 3);
    let back = round_trip(TcpStream::connect(remote).await?, &data).await?;
    assert!(back == data, "echoed bytes differ");

    ssh.start_kill()?;
    let _ = ssh.wait().await;
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_on_a_fixed_port_outlives_the_client_and_serves_the_next_one() -> TestResult
{
    let port = free_port().await?;
    let shadow = Shadowed::start_with(
        |args| args.remote_forward_ports = vec![port],
        Tuning::default(),
    )
    .await?;
    let echo = EchoServer::start().await?;
    let remote = SocketAddr::from(([127, 0, 0, 1], port));
    let spec = format!("127.0.0.1:{port}:127.0.0.1:{}", echo.addr.port());
    let mut ssh = ssh_forwarding(&shadow, &["-R", &spec], remote).await?;

    let back = round_trip(TcpStream::connect(remote).await?, b"through the shadow").await?;
    assert_eq!(back, b"through the shadow");

    // The client goes away: the port stays open and holds what arrives meanwhile.
    ssh.start_kill()?;
    let _ = ssh.wait().await;
    let data = pattern(MIB, 4);
    let held = TcpStream::connect(remote).await?;
    let to_send = data.clone();
    let waiting = tokio::spawn(async move { round_trip(held, &to_send).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shadow.held.snapshot().held < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection made while no client was there was not held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A new ssh asks for the same port: the held connection reaches its echo server.
    let mut again = shadow
        .ssh()
        .args(["-N", "-R", &spec, "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let back = waiting.await??;
    assert!(back == data, "echoed bytes differ");
    assert_eq!(shadow.held.snapshot().delivered, 1);
    again.start_kill()?;
    let _ = again.wait().await;
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kt_health_prints_ok_and_other_commands_are_refused() -> TestResult {
    let shadow = Shadowed::start().await?;

    let out = shadow
        .ssh()
        .args(["127.0.0.1", "kt-health"])
        .output()
        .await?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));

    let out = shadow.ssh().args(["127.0.0.1", "id"]).output().await?;
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exec request failed"), "{stderr}");

    // No shell either (a shell request without a terminal).
    let out = shadow.ssh().args(["-T", "127.0.0.1"]).output().await?;
    assert_ne!(out.status.code(), Some(0));

    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_shows_why_a_connection_over_the_preauth_limit_is_refused() -> TestResult {
    let shadow =
        Shadowed::start_with(|args| args.max_preauth_connections = 1, Tuning::default()).await?;
    let waiting = TcpStream::connect(shadow.addr).await?;
    let out = shadow
        .ssh()
        .args(["127.0.0.1", "kt-health"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("Received disconnect")
            && stderr.contains("too many connections waiting to log in (1,"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // Once the waiting connection is gone, ssh gets in.
    drop(waiting);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = shadow
            .ssh()
            .args(["127.0.0.1", "kt-health"])
            .output()
            .await?;
        if out.status.success() {
            assert_eq!(out.stdout, b"ok\n");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ssh still refused after the waiting connection closed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_not_in_authorized_keys_is_refused() -> TestResult {
    let shadow = Shadowed::start().await?;
    let stranger = keygen(shadow.dir.path(), "stranger")?;
    let out = shadow
        .ssh_with(&stranger, &shadow.known_hosts)
        .args(["127.0.0.1", "kt-health"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
    assert!(out.stdout.is_empty());
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_host_key_is_refused_by_the_pin() -> TestResult {
    let shadow = Shadowed::start().await?;
    // Pin a different host key for the same address.
    let other = keygen(shadow.dir.path(), "other-host")?;
    let other_pub = std::fs::read_to_string(format!("{}.pub", other.display()))?;
    let wrong_pin = shadow.dir.path().join("wrong_known_hosts");
    std::fs::write(
        &wrong_pin,
        format!("[127.0.0.1]:{} {}", shadow.addr.port(), other_pub.trim()),
    )?;
    let out = shadow
        .ssh_with(&shadow.client_key, &wrong_pin)
        .args(["127.0.0.1", "kt-health"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert!(out.stdout.is_empty());
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_forward_socks_reaches_a_server_by_name_and_by_ip() -> TestResult {
    let shadow = Shadowed::start().await?;
    let echo = EchoServer::start().await?;
    let port = free_port().await?;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let mut ssh = ssh_forwarding(&shadow, &["-D", &format!("127.0.0.1:{port}")], proxy).await?;

    // By IP, and by a name the shadow resolves with the system resolver.
    for host in ["127.0.0.1", "localhost"] {
        let stream = socks5_connect(proxy, host, echo.addr.port()).await?;
        let data = pattern(256 * 1024, 4);
        let back = round_trip(stream, &data).await?;
        assert!(back == data, "echo through SOCKS via {host} differs");
    }

    ssh.start_kill()?;
    let _ = ssh.wait().await;
    shadow.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_stalls_other_channels_only_briefly() -> TestResult {
    let tuning = Tuning {
        write_stall_timeout: Duration::from_secs(1),
        ..Tuning::default()
    };
    let shadow = Shadowed::start_with(|_| {}, tuning).await?;
    let echo = EchoServer::start().await?;
    // A server that accepts and never reads.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_port = sink.local_addr()?.port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = sink.accept().await {
            held.push(s);
        }
    });
    let (stuck_port, echo_port) = (free_port().await?, free_port().await?);
    let stuck = SocketAddr::from(([127, 0, 0, 1], stuck_port));
    let echoed = SocketAddr::from(([127, 0, 0, 1], echo_port));
    let spec_stuck = format!("127.0.0.1:{stuck_port}:127.0.0.1:{sink_port}");
    let spec_echo = format!("127.0.0.1:{echo_port}:127.0.0.1:{}", echo.addr.port());
    let mut ssh = ssh_forwarding(&shadow, &["-L", &spec_stuck, "-L", &spec_echo], stuck).await?;
    wait_listening(echoed).await?;

    // Fill the stuck channel far beyond every buffer on the way.
    let mut writer = TcpStream::connect(stuck).await?;
    let stuffer = tokio::spawn(async move {
        let chunk = vec![0x42u8; 64 * 1024];
        let mut sent = 0usize;
        while sent < 64 * 1024 * 1024 {
            match tokio::io::AsyncWriteExt::write_all(&mut writer, &chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(_) => break,
            }
        }
        sent
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Another channel of the same SSH connection gets through once the shadow gives
    // up on the stuck one.
    let started = tokio::time::Instant::now();
    let back = tokio::time::timeout(
        Duration::from_secs(15),
        round_trip(TcpStream::connect(echoed).await?, b"still moving"),
    )
    .await??;
    assert_eq!(back, b"still moving");
    assert!(started.elapsed() < Duration::from_secs(15));

    stuffer.abort();
    holder.abort();
    ssh.start_kill()?;
    let _ = ssh.wait().await;
    shadow.stop().await?;
    Ok(())
}
