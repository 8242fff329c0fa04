//! HTTP/2 over the HTTP/1.1 upgrade path (`Upgrade: h2c`, RFC 7540 §3.2): the server
//! answers `101 Switching Protocols` and the upgrade request becomes HTTP/2 stream 1,
//! answered over HTTP/2 like any later request on the connection.
//!
//! hyper's HTTP/2 server has no way to adopt a request it did not read as stream 1, so
//! the request is handed to it as if the client had sent it: after the client's
//! connection preface and first SETTINGS frame, a HEADERS frame for stream 1 (END_STREAM,
//! HPACK literals without indexing, so neither side's header table changes) is put in
//! front of the rest of what the client sends. From then on the connection is plain
//! HTTP/2, flow control included.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::header::{self, HeaderMap};
use hyper::{Method, Request};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// The client's connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest frame payload every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's
/// initial value).
const MAX_FRAME: usize = 16_384;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_SETTINGS: u8 = 0x4;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Whether `req` asks to upgrade to h2c and can be: HTTP/1.1, `Upgrade: h2c` and
/// `HTTP2-Settings` listed in `Connection`, no body (a body would have to be read before
/// switching).
pub(crate) fn wants_upgrade<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    let tokens = |name: header::HeaderName| -> Vec<String> {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect()
    };
    let connection = tokens(header::CONNECTION);
    let has_body = h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    req.version() == hyper::Version::HTTP_11
        && tokens(header::UPGRADE).iter().any(|t| t == "h2c")
        && connection.iter().any(|t| t == "upgrade")
        && connection.iter().any(|t| t == "http2-settings")
        && h.contains_key("http2-settings")
        && !has_body
}

/// The HEADERS frame (stream 1, END_STREAM) carrying `method`, `path`, the `Host` as
/// `:authority` and every header HTTP/2 allows; `None` if it does not fit one frame.
pub(crate) fn stream_one(method: &Method, path: &str, headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut block = Vec::new();
    literal(&mut block, b":method", method.as_str().as_bytes());
    literal(&mut block, b":scheme", b"http");
    literal(&mut block, b":path", path.as_bytes());
    if let Some(host) = headers.get(header::HOST) {
        literal(&mut block, b":authority", host.as_bytes());
    }
    for (k, v) in headers {
        // Connection-specific headers do not exist in HTTP/2 (RFC 9113 §8.2.2).
        let skip = matches!(
            k.as_str(),
            "host"
                | "connection"
                | "upgrade"
                | "http2-settings"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
        ) || (k == header::TE && v.as_bytes() != b"trailers");
        if !skip {
            literal(&mut block, k.as_str().as_bytes(), v.as_bytes());
        }
    }
    if block.len() > MAX_FRAME {
        return None;
    }
    let len = u32::try_from(block.len()).ok()?.to_be_bytes();
    let mut frame = vec![
        len[1],
        len[2],
        len[3],
        TYPE_HEADERS,
        END_STREAM | END_HEADERS,
    ];
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(&block);
    Some(frame)
}

/// An HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2), both
/// strings raw (not Huffman-coded).
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    for s in [name, value] {
        integer(out, s.len(), 7);
        out.extend_from_slice(s);
    }
}

/// An HPACK integer with an `n`-bit prefix (the prefix's other bits zero).
fn integer(out: &mut Vec<u8>, mut v: usize, n: u32) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(v as u8);
        return;
    }
    out.push(max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// Reads the client's preface and first frame (which must be SETTINGS) from `io` and
/// returns `io` with them, then `headers_frame`, in front of whatever it reads next.
pub(crate) async fn adopt<T>(mut io: T, headers_frame: Vec<u8>) -> io::Result<Prefixed<T>>
where
    T: AsyncRead + Unpin,
{
    let mut start = vec![0u8; PREFACE.len() + 9];
    io.read_exact(&mut start).await?;
    if &start[..PREFACE.len()] != PREFACE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no HTTP/2 connection preface after 101 Switching Protocols",
        ));
    }
    let head = &start[PREFACE.len()..];
    if head[3] != TYPE_SETTINGS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client's first HTTP/2 frame is not SETTINGS",
        ));
    }
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client's SETTINGS frame is too large",
        ));
    }
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    start.extend_from_slice(&payload);
    start.extend_from_slice(&headers_frame);
    Ok(Prefixed {
        prefix: start,
        pos: 0,
        inner: io,
    })
}

/// `inner`, with `prefix` read first.
pub(crate) struct Prefixed<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let pos = self.pos;
            buf.put_slice(&self.prefix[pos..pos + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_follow_rfc7541_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut v = Vec::new();
        integer(&mut v, 10, 5);
        assert_eq!(v, [10]);
        v.clear();
        integer(&mut v, 1337, 5);
        assert_eq!(v, [31, 154, 10]);
    }

    #[test]
    fn upgrade_needs_the_settings_header_and_no_body() {
        let req = |extra: &[(&str, &str)]| {
            let mut b = Request::get("/")
                .header("upgrade", "h2c")
                .header("connection", "Upgrade, HTTP2-Settings");
            for (k, v) in extra {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap_or_default()
        };
        assert!(!wants_upgrade(&req(&[])));
        assert!(wants_upgrade(&req(&[(
            "http2-settings",
            "AAMAAABkAAQCAAAAAAIAAAAA"
        )])));
        assert!(!wants_upgrade(&req(&[
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
            ("content-length", "5"),
        ])));
    }
}
