//! kube-rs `Api::<Pod>::portforward` (the WebSocket path through the API server and
//! the node agent) carries 64 MiB to the echo pod's TCP echo port and back, every
//! byte intact and in order, while writing and reading at once; and a 64 MiB HTTP
//! download from the pod's `/bytes/<n>` arrives intact.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kt_lab_tests::{Lab, echo_bytes_pattern, http_get_streaming, stream_pattern_fill};
use kube::Api;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TOTAL: u64 = 64 << 20;
const CHUNK: usize = 64 << 10;
/// A hang bound, not a speed requirement.
const TRANSFER_BOUND: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_port_forward_echoes_64_mib_intact() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kube-pf").await?;
    let echo = ns.deploy_echo(1).await?;
    let pod = echo.pods[0].clone();
    let pods: Api<Pod> = ns.api();

    // Run 1: TCP echo on 9000, 64 MiB up and down at the same time.
    let res = async {
        let mut pf = pods
            .portforward(&pod, &[9000])
            .await
            .with_context(|| format!("opening a port-forward to {pod}:9000"))?;
        let stream = pf.take_stream(9000).context("no stream for port 9000")?;
        let port_error = pf
            .take_error(9000)
            .context("no error channel for port 9000")?;
        let (mut rd, mut wr) = tokio::io::split(stream);

        let writer = async move {
            let mut buf = vec![0u8; CHUNK];
            let mut off = 0u64;
            while off < TOTAL {
                let n = usize::try_from((TOTAL - off).min(CHUNK as u64))?;
                stream_pattern_fill(off, &mut buf[..n]);
                wr.write_all(&buf[..n])
                    .await
                    .with_context(|| format!("writing at byte {off}"))?;
                off += n as u64;
            }
            wr.flush().await?;
            // Keep the write half open: closing it ends the whole forwarded stream.
            anyhow::Ok(wr)
        };
        let reader = async move {
            let mut buf = vec![0u8; CHUNK];
            let mut want = vec![0u8; CHUNK];
            let mut off = 0u64;
            while off < TOTAL {
                let n = rd
                    .read(&mut buf)
                    .await
                    .with_context(|| format!("reading at byte {off}"))?;
                if n == 0 {
                    bail!("the stream ended after {off} of {TOTAL} bytes");
                }
                ensure!(
                    off + n as u64 <= TOTAL,
                    "received {} bytes, more than the {TOTAL} sent",
                    off + n as u64
                );
                stream_pattern_fill(off, &mut want[..n]);
                if buf[..n] != want[..n] {
                    let at = buf[..n]
                        .iter()
                        .zip(&want[..n])
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    bail!(
                        "byte {} differs: got {:#04x}, sent {:#04x}",
                        off + at as u64,
                        buf[at],
                        want[at]
                    );
                }
                off += n as u64;
            }
            anyhow::Ok((rd, off))
        };
        let transfer = async { tokio::try_join!(writer, reader) };
        let (wr, (rd, received)) = tokio::time::timeout(TRANSFER_BOUND, async {
            tokio::select! {
                r = transfer => r,
                // A closed error channel without a message disables this branch.
                Some(m) = port_error => Err(anyhow!("the API server reported on port 9000: {m}")),
            }
        })
        .await
        .map_err(|_| anyhow!("64 MiB echo did not finish within {TRANSFER_BOUND:?}"))??;
        ensure!(received == TOTAL, "received {received} bytes, sent {TOTAL}");
        drop((wr, rd));
        tokio::time::timeout(Duration::from_secs(30), pf.join())
            .await
            .map_err(|_| {
                anyhow!("the port-forward did not close within 30 s after both ends were dropped")
            })?
            .context("the port-forward ended with an error")?;
        anyhow::Ok(())
    }
    .await;
    ns.explain(res).await?;

    // Run 2: HTTP on 8080, GET /bytes/<64 MiB>, the documented pattern.
    let res = async {
        let mut pf = pods
            .portforward(&pod, &[8080])
            .await
            .with_context(|| format!("opening a port-forward to {pod}:8080"))?;
        let stream = pf.take_stream(8080).context("no stream for port 8080")?;
        let path = format!("/bytes/{TOTAL}");
        let (status, headers, got) = tokio::time::timeout(
            TRANSFER_BOUND,
            http_get_streaming(stream, &path, |off, chunk| {
                for (k, b) in chunk.iter().enumerate() {
                    let i = off + k as u64;
                    let want = echo_bytes_pattern(i);
                    ensure!(
                        *b == want,
                        "body byte {i} is {b:#04x}, expected {want:#04x}"
                    );
                }
                Ok(())
            }),
        )
        .await
        .map_err(|_| anyhow!("GET {path} did not finish within {TRANSFER_BOUND:?}"))??;
        ensure!(status == 200, "GET {path}: status {status}");
        ensure!(
            got == TOTAL,
            "GET {path}: {got} body bytes, expected {TOTAL}"
        );
        let len = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        ensure!(
            len == TOTAL.to_string(),
            "GET {path}: Content-Length `{len}`"
        );
        let echo_pod = headers
            .get("x-echo-pod")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        ensure!(
            echo_pod == pod,
            "GET {path}: X-Echo-Pod `{echo_pod}`, expected `{pod}`"
        );
        tokio::time::timeout(Duration::from_secs(30), pf.join())
            .await
            .map_err(|_| anyhow!("the port-forward did not close within 30 s after the download"))?
            .context("the port-forward ended with an error")?;
        anyhow::Ok(())
    }
    .await;
    ns.explain(res).await?;
    Ok(())
}
