//! A quick, bounded throughput measurement (not a pass/fail test):
//!
//! ```text
//! cargo test --release -p kt-shadow --test throughput -- --ignored --nocapture
//! ```
//!
//! Moves `KT_BENCH_MIB` (default 256) MiB each way through one channel on loopback:
//! OpenSSH's `ssh -L` to kt-shadow, and a russh client's `direct-tcpip` to kt-shadow.
//! `KT_BENCH_WINDOW`, `KT_BENCH_PACKET`, `KT_BENCH_BUFFER` override the shadow's
//! window size, max packet size and per-channel message buffer.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Shadowed, TestResult, free_port, wait_listening};
use kt_shadow::Tuning;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 256 * 1024;

fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A server on 127.0.0.1: the first byte of a connection picks the test. `u`: read to
/// EOF and answer with the byte count (upload). `d`: send the 8-byte count that follows,
/// then close (download).
async fn bench_server() -> TestResult<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut kind = [0u8; 1];
                if s.read_exact(&mut kind).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; CHUNK];
                if kind[0] == b'u' {
                    let mut n: u64 = 0;
                    while let Ok(k) = s.read(&mut buf).await {
                        if k == 0 {
                            break;
                        }
                        n += k as u64;
                    }
                    let _ = s.write_all(&n.to_be_bytes()).await;
                } else {
                    let mut len = [0u8; 8];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut left = u64::from_be_bytes(len);
                    while left > 0 {
                        let k = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
                        if s.write_all(&buf[..k]).await.is_err() {
                            return;
                        }
                        left -= k as u64;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(addr)
}

async fn upload<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: u64) -> TestResult<f64> {
    let buf = vec![0x5au8; CHUNK];
    let start = Instant::now();
    s.write_all(b"u").await?;
    let mut left = bytes;
    while left > 0 {
        let k = usize::try_from(left.min(CHUNK as u64))?;
        s.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    s.shutdown().await?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await?;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(u64::from_be_bytes(count), bytes);
    Ok(bytes as f64 / (1024.0 * 1024.0) / secs)
}

async fn download<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: u64) -> TestResult<f64> {
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    s.write_all(b"d").await?;
    s.write_all(&bytes.to_be_bytes()).await?;
    let mut got: u64 = 0;
    loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, bytes);
    Ok(bytes as f64 / (1024.0 * 1024.0) / secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand with --release --ignored --nocapture"]
async fn throughput_one_channel_on_loopback() -> TestResult {
    let mib: u64 = env_num("KT_BENCH_MIB").unwrap_or(256);
    let bytes = mib * 1024 * 1024;
    let defaults = Tuning::default();
    let tuning = Tuning {
        window_size: env_num("KT_BENCH_WINDOW").unwrap_or(defaults.window_size),
        max_packet_size: env_num("KT_BENCH_PACKET").unwrap_or(defaults.max_packet_size),
        channel_buffer: env_num("KT_BENCH_BUFFER").unwrap_or(defaults.channel_buffer),
        ..defaults
    };
    println!(
        "kt-shadow tuning: window {} KiB, max packet {} KiB, channel buffer {} messages",
        tuning.window_size / 1024,
        tuning.max_packet_size / 1024,
        tuning.channel_buffer
    );
    let shadow = Shadowed::start_with(|_| {}, tuning).await?;
    let server = bench_server().await?;

    // OpenSSH client, local forward.
    let port = free_port().await?;
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let spec = format!("127.0.0.1:{port}:127.0.0.1:{}", server.port());
    let mut ssh = shadow
        .ssh()
        .args(["-N", "-L", &spec, "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    wait_listening(local).await?;
    let up = upload(TcpStream::connect(local).await?, bytes).await?;
    let down = download(TcpStream::connect(local).await?, bytes).await?;
    println!(
        "ssh -L  -> kt-shadow: upload {up:7.1} MiB/s, download {down:7.1} MiB/s ({mib} MiB each)"
    );
    ssh.start_kill()?;
    let _ = ssh.wait().await;

    // russh client, direct-tcpip.
    let client = shadow.russh_client().await?;
    let port = u32::from(server.port());
    let ch = client
        .channel_open_direct_tcpip("127.0.0.1", port, "127.0.0.1", 1)
        .await?;
    let up = upload(ch.into_stream(), bytes).await?;
    let ch = client
        .channel_open_direct_tcpip("127.0.0.1", port, "127.0.0.1", 1)
        .await?;
    let down = download(ch.into_stream(), bytes).await?;
    println!(
        "russh   -> kt-shadow: upload {up:7.1} MiB/s, download {down:7.1} MiB/s ({mib} MiB each)"
    );

    // Plain loopback TCP for reference.
    let up = upload(TcpStream::connect(server).await?, bytes).await?;
    let down = download(TcpStream::connect(server).await?, bytes).await?;
    println!("direct TCP (no SSH):  upload {up:7.1} MiB/s, download {down:7.1} MiB/s");

    tokio::time::timeout(Duration::from_secs(10), shadow.stop()).await??;
    Ok(())
}
