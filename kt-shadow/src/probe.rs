//! `kt-shadow probe`: is the SSH port answering?

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::Error;

/// How long `kt-shadow probe` waits for the banner.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The most bytes read while looking for the banner (RFC 4253 §4.2 lets a server send
/// other lines first; the identification line itself is at most 255 bytes).
const MAX_BANNER_BYTES: usize = 4096;

/// Connects to `addr` and waits up to `timeout` for an SSH identification line
/// (`SSH-2.0-...`), which it returns. Sends nothing and hangs up.
///
/// # Errors
///
/// [`Error::ProbeConnect`], [`Error::ProbeTimeout`] or [`Error::ProbeNotSsh`].
pub async fn probe(addr: SocketAddr, timeout: Duration) -> Result<String, Error> {
    match tokio::time::timeout(timeout, read_banner(addr)).await {
        Ok(result) => result,
        Err(_) => Err(Error::ProbeTimeout { addr, timeout }),
    }
}

async fn read_banner(addr: SocketAddr) -> Result<String, Error> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| Error::ProbeConnect { addr, source })?;
    let mut buf = Vec::with_capacity(256);
    let mut line_start = 0;
    loop {
        let mut chunk = [0u8; 256];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|source| Error::ProbeConnect { addr, source })?;
        if n == 0 {
            return Err(Error::ProbeNotSsh {
                addr,
                answer: String::from_utf8_lossy(&buf).trim_end().to_owned(),
            });
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        while let Some(offset) = buf
            .get(line_start..)
            .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
        {
            let line = buf.get(line_start..line_start + offset).unwrap_or_default();
            let line = String::from_utf8_lossy(line).trim_end().to_owned();
            if line.starts_with("SSH-") {
                return Ok(line);
            }
            line_start += offset + 1;
        }
        if buf.len() > MAX_BANNER_BYTES {
            return Err(Error::ProbeNotSsh {
                addr,
                answer: String::from_utf8_lossy(buf.get(..80).unwrap_or_default()).into_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A one-connection server writing `answer`, then holding the socket open for a
    /// while or hanging up at once.
    async fn serve_once(answer: &'static [u8], hold: bool) -> Option<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await.ok()?;
        let addr = listener.local_addr().ok()?;
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(answer).await;
                if hold {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            }
        });
        Some(addr)
    }

    #[tokio::test]
    async fn a_banner_after_other_lines_is_found() {
        let addr = serve_once(b"hello\r\nSSH-2.0-test_1\r\n", true).await;
        let Some(addr) = addr else {
            panic!("no listener")
        };
        let banner = probe(addr, PROBE_TIMEOUT).await.ok();
        assert_eq!(banner.as_deref(), Some("SSH-2.0-test_1"));
    }

    #[tokio::test]
    async fn silence_is_a_timeout() {
        let Some(addr) = serve_once(b"", true).await else {
            panic!("no listener")
        };
        let err = probe(addr, Duration::from_millis(200)).await.err();
        assert!(matches!(err, Some(Error::ProbeTimeout { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn another_protocol_is_named() {
        let Some(addr) = serve_once(b"HTTP/1.1 400 Bad Request\r\n\r\n", false).await else {
            panic!("no listener")
        };
        let err = probe(addr, PROBE_TIMEOUT).await.err();
        let Some(Error::ProbeNotSsh { answer, .. }) = err else {
            panic!("expected ProbeNotSsh, got {err:?}");
        };
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.ok();
        let addr = listener.and_then(|l| l.local_addr().ok());
        let Some(addr) = addr else {
            panic!("no listener")
        };
        let err = probe(addr, PROBE_TIMEOUT).await.err();
        assert!(matches!(err, Some(Error::ProbeConnect { .. })), "{err:?}");
    }
}
