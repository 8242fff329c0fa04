//! The SSH session's byte stream, with writes decoupled from reads.
//!
//! russh's session loop finishes writing its output before it reads again, and
//! kube-rs's port-forward loop finishes writing what came from the pod before it takes
//! the next chunk going to the pod. With bulk data flowing both ways, each ends up
//! blocked writing into the other's full buffer and neither reads: the tunnel
//! deadlocks (a 64 MiB echo stalls after a few MiB). Here the session writes into an
//! in-memory queue that a separate pump drains into the port-forward stream, so the
//! session always gets back to reading.
//!
//! The queue is unbounded, but what the session can queue is bounded by the SSH
//! protocol itself: channel data only up to the windows the shadow granted, plus small
//! control messages.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

/// Reads from the stream; writes into the pump's queue.
pub(crate) struct Decoupled<S> {
    read: ReadHalf<S>,
    queue: Option<mpsc::UnboundedSender<Bytes>>,
}

/// Splits `stream` into the session's side and the pump, which must be spawned: it
/// writes the queue into the stream until the session shuts down or drops its side.
pub(crate) fn decouple<S>(stream: S) -> (Decoupled<S>, impl Future<Output = ()> + Send + 'static)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Decoupled {
            read,
            queue: Some(tx),
        },
        pump(rx, write),
    )
}

async fn pump<S: AsyncWrite>(mut rx: mpsc::UnboundedReceiver<Bytes>, mut write: WriteHalf<S>) {
    let mut batch = Vec::with_capacity(256 * 1024);
    while let Some(first) = rx.recv().await {
        // Coalesce what is already queued into one write.
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if write.write_all(&batch).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

impl<S: AsyncRead> AsyncRead for Decoupled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for Decoupled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let sent = match &self.queue {
            Some(q) => q.send(Bytes::copy_from_slice(buf)).is_ok(),
            None => false,
        };
        if sent {
            Poll::Ready(Ok(buf.len()))
        } else {
            self.queue = None;
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the port-forward stream is closed",
            )))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.queue = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// Both ends write 8 MiB before reading anything, through a 64 KiB pipe: without
    /// decoupling this cannot finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_sides_writing_at_once_do_not_deadlock() {
        const TOTAL: usize = 8 << 20;
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut a, pump) = decouple(a);
        tokio::spawn(pump);
        let data = vec![7u8; TOTAL];
        // The peer, like kube-rs's forwarder loop, also writes everything before it
        // reads.
        let peer = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(b);
            w.write_all(&vec![9u8; TOTAL]).await?;
            w.shutdown().await?;
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.map(|_| got)
        });
        // The session side writes everything first (like russh's loop), then reads.
        let session = async {
            a.write_all(&data).await?;
            a.shutdown().await?;
            let mut back = Vec::new();
            a.read_to_end(&mut back).await.map(|_| back)
        };
        let back = tokio::time::timeout(std::time::Duration::from_secs(60), session).await;
        let back = back.ok().and_then(Result::ok).unwrap_or_default();
        assert_eq!(back.len(), TOTAL);
        let got = peer.await.ok().and_then(Result::ok).unwrap_or_default();
        assert_eq!(got.len(), TOTAL);
    }
}
