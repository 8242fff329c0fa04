//! The SSH connection's socket, with writes decoupled from reads.
//!
//! russh's session loop writes its output to the socket before it reads again. When
//! both ends of a connection are russh (kt-core and kt-shadow) and both have more
//! to send than the socket buffers hold, both block in a write and neither reads:
//! the connection deadlocks (seen here with 200 busy channels on loopback). Giving
//! the session a write side that is an in-memory pipe, drained into the socket by a
//! separate task, lets the session keep reading while its output waits; the pipe is
//! bounded, so a peer that stops reading still stalls the session instead of growing
//! memory without limit.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// Reads from the socket; writes into a bounded pipe that [`decouple`]'s pump drains.
pub(crate) struct Decoupled {
    read: OwnedReadHalf,
    write: DuplexStream,
}

/// Splits `stream` into the session's side and a pump future that copies the pipe into
/// the socket until the session shuts its write side down or drops it. The pump must be
/// polled (spawned) for anything to be sent.
pub(crate) fn decouple(
    stream: TcpStream,
    pipe_capacity: usize,
) -> (Decoupled, impl Future<Output = ()> + Send + 'static) {
    let (read, mut socket_write) = stream.into_split();
    let (session_side, pump_side) = tokio::io::duplex(pipe_capacity);
    let pump = async move {
        let mut pipe = BufReader::with_capacity(64 * 1024, pump_side);
        let _ = tokio::io::copy_buf(&mut pipe, &mut socket_write).await;
        let _ = socket_write.shutdown().await;
    };
    (
        Decoupled {
            read,
            write: session_side,
        },
        pump,
    )
}

impl AsyncRead for Decoupled {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Decoupled {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.write.is_write_vectored()
    }
}
