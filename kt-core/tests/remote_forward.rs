//! Inbound groundwork, with each shadow flavour, as a ServiceAccount bound to the
//! shipped Role only: a port the shadow listens on (an SSH remote forward) reaches a
//! server on this machine, and keeps doing so after the tunnel drops and reconnects
//! (the new link asks the shadow for the port again).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use common::Fixture;
use kt_core::{Event, ShadowFlavour};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// A TCP echo server on 127.0.0.1 that prefixes every reply with `tag`.
async fn local_echo(tag: &'static [u8]) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0
                        || s.write_all(tag).await.is_err()
                        || s.write_all(&buf[..n]).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Connects to the shadow's `port` from inside the cluster (a forward to the shadow
/// pod itself) and sends `msg`; returns what came back.
async fn through_shadow(f: &Fixture, port: u16, msg: &[u8]) -> Result<Vec<u8>> {
    let pod = format!("pod/{}", f.session.pod_name());
    let local = f.session.forward(&pod, port).await?;
    let mut s = tokio::net::TcpStream::connect(local).await?;
    s.write_all(msg).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < msg.len() + 6 {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .context("no answer through the remote forward")??;
        ensure!(n > 0, "the connection closed after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

both_flavours!(a_remote_forward_reaches_a_local_server_and_survives_a_reconnect);
async fn a_remote_forward_reaches_a_local_server_and_survives_a_reconnect(
    flavour: ShadowFlavour,
) -> Result<()> {
    let f = Fixture::start("kt-rfwd", flavour, 1).await?;
    let local = local_echo(b"laptop").await?;
    let port = f.session.remote_forward(0, local).await?;
    ensure!(port != 0, "the shadow reported no port");
    let got = through_shadow(&f, port, b"hello").await?;
    ensure!(
        got == b"laptophello",
        "got {:?}",
        String::from_utf8_lossy(&got)
    );

    let mut events = f.session.events();
    f.session.simulate_tunnel_drop();
    // Wait for the new link, then the same port must reach the laptop again.
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(e) = events.next().await {
            if matches!(e, Event::Reconnected { .. }) {
                break;
            }
        }
    })
    .await
    .context("no Reconnected event")?;
    let got = through_shadow(&f, port, b"again")
        .await
        .context("the remote forward after the reconnect")?;
    ensure!(
        got == b"laptopagain",
        "got {:?}",
        String::from_utf8_lossy(&got)
    );
    f.finish().await
}
