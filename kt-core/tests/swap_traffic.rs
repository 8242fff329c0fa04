//! What rides through a swap, end to end from a pod in the cluster to processes on
//! this machine: 1,000 concurrent connections each verified (with half-close: the pod
//! shuts its sending side and still reads the whole answer), a 256 MiB upload echoed
//! back and checked, and a WebSocket echo after an HTTP Upgrade. Also: the swap keeps
//! serving across a tunnel reconnect, and a selector someone changes during a swap is
//! not overwritten at close (the restore reports it).

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{Fixture, Shipped};
use futures::{SinkExt as _, StreamExt as _};
use kt_core::{Event, PortMap, ShadowFlavour};
use kt_lab_tests::TestNamespace;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;

/// A TCP echo server on 127.0.0.1: copies each connection back until EOF, then
/// shuts its own sending side (so the peer's half-close is carried both ways).
async fn local_echo() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    Ok(port)
}

/// A WebSocket server on 127.0.0.1 that echoes every message with a prefix.
async fn local_websocket() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() {
                        let text = format!("laptop:{}", msg.to_text().unwrap_or_default());
                        if ws.send(text.into()).await.is_err() {
                            break;
                        }
                    } else if msg.is_close() {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// Runs a Python program (the standard library only) in `pod`; its output.
async fn python(ns: &TestNamespace, pod: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut cmd = vec!["python3.11", "-c", program];
    cmd.extend_from_slice(args);
    let out = ns.exec_output(pod, &cmd).await?;
    ensure!(
        out.status.success(),
        "python in {pod}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// 1,000 connections at once to HOST:PORT; each sends its own 4 KiB, half-closes and
/// must read exactly those bytes back.
const CONCURRENT: &str = r#"
import asyncio, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def one(i):
    data = (f"conn-{i:05d}-".encode() * 400)[:4096]
    for attempt in range(3):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 60)
            break
        except OSError:
            if attempt == 2:
                raise
            await asyncio.sleep(1)
    w.write(data)
    await w.drain()
    w.write_eof()
    got = await asyncio.wait_for(r.read(-1), 120)
    w.close()
    return got == data
async def main():
    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    ok = sum(1 for r in results if r is True)
    errors = [repr(r) for r in results if r is not True][:5]
    print(f"ok={ok} of {n} errors={errors}")
asyncio.run(main())
"#;

/// Uploads SIZE bytes to HOST:PORT while reading the echo back; compares digests.
const UPLOAD: &str = r#"
import hashlib, socket, sys, threading
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=120)
sent = hashlib.sha256()
failure = []
def send():
    try:
        block = bytes(range(256)) * 4096
        left = size
        while left:
            chunk = block[: min(len(block), left)]
            s.sendall(chunk)
            sent.update(chunk)
            left -= len(chunk)
        s.shutdown(socket.SHUT_WR)
    except OSError as e:
        failure.append(repr(e))
t = threading.Thread(target=send)
t.start()
got, n = hashlib.sha256(), 0
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    got.update(b)
    n += len(b)
t.join()
print(f"bytes={n} same={got.digest() == sent.digest()}", *failure)
"#;

/// A WebSocket client by hand (standard library only): Upgrade, one masked text
/// frame, one answer.
const WEBSOCKET: &str = r#"
import base64, os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=30)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
status = head.split(b"\r\n")[0].decode()
payload = b"hello from the cluster"
mask = os.urandom(4)
frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
s.sendall(frame)
hdr = s.recv(2)
n = hdr[1] & 0x7F
body = b""
while len(body) < n:
    body += s.recv(n - len(body))
print(status)
print(body.decode())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_connections_a_large_upload_and_a_websocket_ride_one_swap() -> Result<()> {
    let f = Fixture::start_as(
        "kt-swap-load",
        ShadowFlavour::KtShadow,
        1,
        Shipped::Inbound,
        |o| o,
    )
    .await?;
    let client = f.ns.client_pod().await?;
    let echo = local_echo().await?;
    let ws = local_websocket().await?;
    let ports = PortMap::parse_list([format!("{ws}:80,{echo}:tcp").as_str()])?;
    let swap = f.session.swap("svc/echo", &ports).await?;

    // kube-proxy applies the switched selector asynchronously: until it has, the
    // original pods answer (they keep serving; nothing is refused).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let out = loop {
        let out = python(&f.ns, &client, WEBSOCKET, &["echo", "80"]).await?;
        if out.starts_with("HTTP/1.1 101") || tokio::time::Instant::now() >= deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(
        out.starts_with("HTTP/1.1 101") && out.contains("laptop:hello from the cluster"),
        "WebSocket: {out}"
    );

    let before = swap.connections();
    let out = python(&f.ns, &client, CONCURRENT, &["echo", "9000", "1000"]).await?;
    ensure!(out.starts_with("ok=1000 of 1000"), "concurrent: {out}");
    ensure!(
        swap.connections() - before >= 1000,
        "{} connections counted",
        swap.connections() - before
    );

    let size = (256u64 << 20).to_string();
    let out = python(&f.ns, &client, UPLOAD, &["echo", "9000", &size]).await?;
    if out.trim() != format!("bytes={size} same=True") {
        let pod = swap.pod_name();
        let log =
            f.ns.kubectl(&["logs", pod, "--tail=30"])
                .await
                .unwrap_or_default();
        let status =
            f.ns.kubectl(&[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.containerStatuses}",
            ])
            .await
            .unwrap_or_default();
        bail!("upload: {out}\nshadow {pod}: {status}\n{log}");
    }
    swap.close().await?;
    f.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_selector_changed_during_a_swap_is_reported_not_overwritten() -> Result<()> {
    let f = Fixture::start_as(
        "kt-swap-conflict",
        ShadowFlavour::KtShadow,
        1,
        Shipped::Inbound,
        |o| o,
    )
    .await?;
    let echo = local_echo().await?;
    let ports = PortMap::parse_list([format!("{echo}:tcp").as_str()])?;
    let swap = f.session.swap("deploy/echo", &ports).await?;
    let events = swap.events();
    // Someone (a deploy tool) sets another selector while the swap runs.
    f.ns.kubectl(&[
        "patch",
        "service/echo",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"app":"echo","tier":"new"}}}"#,
    ])
    .await?;
    swap.close().await?;
    let mut events = events;
    let mut conflict = None;
    while let Some(e) = events.next().await {
        if let Event::RestoreConflict { detail } = e {
            conflict = Some(detail);
        }
    }
    let detail = conflict.context("no RestoreConflict event")?;
    ensure!(detail.contains("/spec/selector"), "{detail}");
    let selector =
        f.ns.kubectl(&["get", "service/echo", "-o", "jsonpath={.spec.selector}"])
            .await?;
    ensure!(
        selector.contains("\"tier\":\"new\""),
        "the other writer's selector was overwritten: {selector}"
    );
    // kt's ownership record is gone all the same: the Service is not held any more.
    let annotations =
        f.ns.kubectl(&[
            "get",
            "service/echo",
            "-o",
            "jsonpath={.metadata.annotations}",
        ])
        .await?;
    ensure!(!annotations.contains("kt.dev/owner"), "{annotations}");
    f.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_swap_keeps_serving_across_a_tunnel_reconnect() -> Result<()> {
    let f = Fixture::start_as(
        "kt-swap-reconnect",
        ShadowFlavour::KtShadow,
        1,
        Shipped::Inbound,
        |o| o,
    )
    .await?;
    let client = f.ns.client_pod().await?;
    let echo = local_echo().await?;
    let ports = PortMap::parse_list([format!("{echo}:tcp").as_str()])?;
    let swap = f.session.swap("deploy/echo", &ports).await?;
    let mut events = swap.events();
    let first = python(&f.ns, &client, CONCURRENT, &["echo", "9000", "5"]).await;
    if first.is_err() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    swap.simulate_tunnel_drop();
    let reconnected = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(e) = events.next().await {
            if matches!(e, Event::Reconnected { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    if !matches!(reconnected, Ok(true)) {
        bail!("no Reconnected event after the drop");
    }
    let out = python(&f.ns, &client, CONCURRENT, &["echo", "9000", "20"]).await?;
    ensure!(out.starts_with("ok=20 of 20"), "after the reconnect: {out}");
    swap.close().await?;
    f.finish().await
}
