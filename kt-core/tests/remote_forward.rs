//! Inbound groundwork, with each shadow flavour, as a ServiceAccount bound to the
//! shipped Role only: a port the shadow listens on (an SSH remote forward) reaches a
//! server on this machine, and keeps doing so after the tunnel drops and reconnects
//! (the new link asks the shadow for the port again). A connect shadow listens on no
//! port of its own accord: the test allows its port with the test hook
//! `ConnectOptions::allow_remote_forward`, and without it the shadow refuses.

mod common;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::Fixture;
use kt_core::{Error, ErrorKind, Event, ShadowFlavour};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// The port the shadow listens on (any port works: the pod has its own network).
const PORT: NonZeroU16 = NonZeroU16::new(18080).expect("not zero");

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
    let f = Fixture::start_with("kt-rfwd", flavour, 1, |o| o.allow_remote_forward(PORT)).await?;
    let local = local_echo(b"laptop").await?;
    let port = f.session.remote_forward(PORT.get(), local).await?;
    ensure!(
        port == PORT.get(),
        "the shadow listens on {port}, not {PORT}"
    );
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

both_flavours!(a_connect_shadow_refuses_every_remote_forward);
async fn a_connect_shadow_refuses_every_remote_forward(flavour: ShadowFlavour) -> Result<()> {
    let f = Fixture::start("kt-rfwd-no", flavour, 1).await?;
    let local = local_echo(b"laptop").await?;
    for port in [PORT.get(), 0] {
        match f.session.remote_forward(port, local).await {
            Err(e @ Error::Unsupported { .. }) => {
                ensure!(e.kind() == ErrorKind::Unsupported, "{e:?}");
                let msg = e.to_string();
                ensure!(
                    msg.contains(&format!("refused to listen on 0.0.0.0:{port}"))
                        && msg.contains("none for a connect session"),
                    "the error does not say what happened: {msg}"
                );
            }
            other => bail!("a remote forward on port {port} gave {other:?}"),
        }
    }
    // Nothing listens on the port in the pod, and the session still works.
    let pod = format!("pod/{}", f.session.pod_name());
    let forward = f.session.forward(&pod, PORT.get()).await?;
    let refused = async {
        let mut s = tokio::net::TcpStream::connect(forward).await?;
        let mut buf = [0u8; 16];
        anyhow::Ok(s.read(&mut buf).await?)
    };
    match tokio::time::timeout(Duration::from_secs(30), refused).await {
        Ok(Ok(0) | Err(_)) => {}
        other => bail!("port {PORT} of the connect shadow answered: {other:?}"),
    }
    f.session.resolve("kubernetes.default").await?;
    if flavour == ShadowFlavour::KtShadow {
        let log = f.ns.kubectl(&["logs", f.session.pod_name()]).await?;
        ensure!(
            log.contains("tcpip-forward refused: this shadow may not listen on port 18080"),
            "the shadow's log does not say why: {log}"
        );
    }
    f.finish().await
}
