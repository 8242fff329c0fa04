//! What a connection speaks, from its first bytes, and an IO that gives those bytes
//! back before the rest.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest first line read to recognise an HTTP/1.x request line; a line that is still
/// well-formed at this length is taken to be one (hyper then reads the rest).
pub(crate) const MAX_SNIFF: usize = 16 * 1024;

/// Longest method token accepted (the registered ones are at most 17 bytes).
const MAX_METHOD: usize = 32;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A TLS record (a ClientHello starts with the handshake type 0x16).
    Tls,
    /// The HTTP/2 connection preface (h2c with prior knowledge).
    H2,
    /// An HTTP/1.x request line.
    Http1,
    /// Anything else (another protocol, or a client that sent nothing in time).
    Other,
}

/// Classifies the bytes read so far: `None` while they are a proper prefix of more than
/// one possibility.
pub(crate) fn classify(buf: &[u8]) -> Option<Sniffed> {
    let first = *buf.first()?;
    if first == 0x16 {
        return Some(Sniffed::Tls);
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        if n == H2_PREFACE.len() {
            return Some(Sniffed::H2);
        }
        // Also a prefix of `PRI * HTTP/2.0\r\n` read as an HTTP/1 line: wait.
        return None;
    }
    match request_line(buf) {
        Line::Valid => Some(Sniffed::Http1),
        Line::Invalid => Some(Sniffed::Other),
        Line::Partial if buf.len() >= MAX_SNIFF => Some(Sniffed::Http1),
        Line::Partial => None,
    }
}

/// What a timeout makes of a partial first line: the protocol it is a prefix of.
pub(crate) fn classify_partial(buf: &[u8]) -> Sniffed {
    if buf.is_empty() {
        return Sniffed::Other;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return Sniffed::H2;
    }
    match request_line(buf) {
        Line::Valid | Line::Partial => Sniffed::Http1,
        Line::Invalid => Sniffed::Other,
    }
}

enum Line {
    Valid,
    Invalid,
    Partial,
}

/// An HTTP token character (RFC 9110 §5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks `METHOD SP TARGET SP HTTP/1.D (CR)LF` as far as `buf` goes, after any empty
/// lines (which a server ignores before a request line, RFC 9112 §2.2).
fn request_line(buf: &[u8]) -> Line {
    let mut i = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    if i == buf.len() {
        return Line::Partial;
    }
    let method = i;
    while i < buf.len() && tchar(buf[i]) {
        i += 1;
    }
    if i - method > MAX_METHOD {
        return Line::Invalid;
    }
    if i == buf.len() {
        return Line::Partial;
    }
    if i == method || buf[i] != b' ' {
        return Line::Invalid;
    }
    i += 1;
    let target = i;
    // Request targets are visible ASCII; bytes >= 0x80 are let through for hyper to judge.
    while i < buf.len() && (buf[i] > b' ' && buf[i] != 0x7f) {
        i += 1;
    }
    if i == buf.len() {
        return Line::Partial;
    }
    if i == target || buf[i] != b' ' {
        return Line::Invalid;
    }
    i += 1;
    const VERSION: &[u8] = b"HTTP/1.";
    let rest = &buf[i..];
    let n = rest.len().min(VERSION.len());
    if rest[..n] != VERSION[..n] {
        return Line::Invalid;
    }
    if n < VERSION.len() {
        return Line::Partial;
    }
    match &rest[n..] {
        [] => Line::Partial,
        [d, ..] if !d.is_ascii_digit() => Line::Invalid,
        [_] => Line::Partial,
        [_, b'\n', ..] => Line::Valid,
        [_, b'\r'] => Line::Partial,
        [_, b'\r', b'\n', ..] => Line::Valid,
        _ => Line::Invalid,
    }
}

/// Reads until the first bytes say what the connection is, for at most `wait`: a
/// client that sends nothing in time (a protocol where the server speaks first) is
/// [`Sniffed::Other`]. Returns the bytes read, which the caller must replay; `None`
/// when the client closed without sending anything.
pub(crate) async fn sniff<I>(io: &mut I, wait: Duration) -> io::Result<Option<(Sniffed, BytesMut)>>
where
    I: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            if buf.len() >= MAX_SNIFF {
                // classify() decided at MAX_SNIFF already; this only bounds the loop.
                return Ok(Some(classify_partial(&buf)));
            }
            if buf.capacity() == buf.len() {
                buf.reserve(buf.len().min(MAX_SNIFF - buf.len()));
            }
            let n = io.read_buf(&mut buf).await?;
            if n == 0 {
                // Closed (or half-closed) before a decision: no complete request line
                // will come, so it is not HTTP (a TCP echo's `stream` + FIN, say): the
                // bytes go to the origin as they are.
                return Ok((!buf.is_empty()).then_some(Sniffed::Other));
            }
            if let Some(kind) = classify(&buf) {
                return Ok(Some(kind));
            }
        }
    };
    let kind = match tokio::time::timeout(wait, read).await {
        Ok(Ok(Some(kind))) => kind,
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(err)) => return Err(err),
        Err(_elapsed) => classify_partial(&buf),
    };
    Ok(Some((kind, buf)))
}

/// An IO whose reads first return `prefix` (the sniffed bytes), then the inner IO's.
#[derive(Debug)]
pub(crate) struct Rewind<I> {
    prefix: BytesMut,
    inner: I,
}

impl<I> Rewind<I> {
    pub(crate) fn new(prefix: BytesMut, inner: I) -> Self {
        Rewind { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Free the sniff buffer once replayed.
                self.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_partial_line_then_end_of_stream_is_not_http() {
        // "stream" could begin a method; the client half-closes after it.
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"stream")
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut client)
            .await
            .unwrap();
        let (kind, bytes) = sniff(&mut server, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((kind, &bytes[..]), (Sniffed::Other, &b"stream"[..]));
        // The same bytes, still open when the wait runs out: a slow HTTP client.
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET /")
            .await
            .unwrap();
        let (kind, _) = sniff(&mut server, Duration::from_millis(50))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kind, Sniffed::Http1);
        drop(client);
    }

    #[test]
    fn first_bytes_decide_the_protocol() {
        for (bytes, expect) in [
            (&b"\x16\x03\x01\x02\x00"[..], Some(Sniffed::Tls)),
            (H2_PREFACE, Some(Sniffed::H2)),
            (b"PRI * HTTP/2.0\r\n", None),
            (b"GET / HTTP/1.1\r\n", Some(Sniffed::Http1)),
            (b"GET / HTTP/1.0\n", Some(Sniffed::Http1)),
            (b"POST /a?b=c HTTP/1.1\r\nHost: x\r\n", Some(Sniffed::Http1)),
            (b"GET /", None),
            (b"GET / HTTP/1.", None),
            (b"GET / HTTP/1.1\r", None),
            (b"SET a b\r\n", Some(Sniffed::Other)),
            (b"GET / HTTP/2.0\r\n", Some(Sniffed::Other)),
            (b"SSH-2.0-OpenSSH\r\n", Some(Sniffed::Other)),
            (b"\x00\x00\x00", Some(Sniffed::Other)),
            (b" GET", Some(Sniffed::Other)),
            (b"GET  / HTTP/1.1", Some(Sniffed::Other)),
            (b"PING\r\n", Some(Sniffed::Other)),
            (b"", None),
            (b"\r\n", None),
            (b"\r\nGET / HTTP/1.1\r\n", Some(Sniffed::Http1)),
        ] {
            assert_eq!(
                classify(bytes),
                expect,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let long = [b"GET /".as_slice(), &[b'a'; MAX_SNIFF]].concat();
        assert_eq!(classify(&long), Some(Sniffed::Http1));
        assert_eq!(classify(&[b'A'; 40]), Some(Sniffed::Other));
    }

    #[test]
    fn a_timeout_takes_what_the_prefix_looks_like() {
        assert_eq!(classify_partial(b""), Sniffed::Other);
        assert_eq!(classify_partial(b"PRI * HT"), Sniffed::H2);
        assert_eq!(classify_partial(b"GET /x"), Sniffed::Http1);
        assert_eq!(classify_partial(b"\x01\x02"), Sniffed::Other);
    }
}
