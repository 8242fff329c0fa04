//! One inbound connection: an SSH channel the shadow opened, spliced with a TCP
//! connection to the local process, without ever stalling the SSH session.
//!
//! russh hands a channel's data to a bounded queue from its session loop and waits
//! when that queue is full, and it grants the peer more window when data arrives,
//! not when it is consumed. So a local process that stops reading stops the whole
//! session: no other channel moves and no window adjustment is read. With an echo-like
//! local process (it writes back what it reads) that is a deadlock: the process waits
//! for its answer to be sent, the answer waits for window the stalled session never
//! reads, and the session waits for the process to read (measured: a 256 MiB echo
//! through a swap stopped after 14-28 MiB and the shadow dropped the SSH connection for
//! missed keepalives).
//!
//! Here a drain task takes the channel's data as soon as it arrives into a queue that
//! another task writes to the local connection. The drain waits only when the queue
//! holds [`QUEUE_BYTES`] (256 MiB), and gives the connection up (closes it) when the
//! local process then reads nothing for [`STALL_TIMEOUT`], so one connection can never
//! stall the others for long. Measured with a 256 MiB echo from a pod: with a 32 MiB
//! bound the queue filled and the session stalled (twice in two runs); with a larger
//! bound the queue never held more than 1 MiB (three runs), because the session keeps
//! reading and both directions keep moving.

use std::sync::Arc;

use bytes::Bytes;
use russh::client::Msg;
use russh::{Channel, ChannelMsg};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

/// How much data from the cluster may wait for the local process, per connection.
pub(crate) const QUEUE_BYTES: usize = 256 << 20;

/// How long the drain waits for the local process to make room before it gives up on
/// the connection (rather than stall every connection of the swap).
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How much is read from the local process at a time.
const READ_BUF: usize = 32 << 10;

/// Splices `channel` and `local` until both directions ended; each direction's end
/// (EOF) is passed on as a half-close.
pub(crate) async fn splice_channel(local: TcpStream, channel: Channel<Msg>) {
    let (mut from_cluster, to_cluster) = channel.split();
    let (mut local_read, mut local_write) = local.into_split();
    let budget = Arc::new(Semaphore::new(QUEUE_BYTES));
    // `None`: the cluster side sent EOF (or closed).
    let (queue, mut queued) = mpsc::unbounded_channel::<Option<Bytes>>();

    let drain = {
        let budget = Arc::clone(&budget);
        async move {
            while let Some(msg) = from_cluster.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        let n = u32::try_from(data.len().min(QUEUE_BYTES)).unwrap_or(u32::MAX);
                        match tokio::time::timeout(STALL_TIMEOUT, budget.acquire_many(n)).await {
                            Ok(Ok(permit)) => permit.forget(),
                            // The local side is gone.
                            Ok(Err(_)) => return,
                            Err(_) => {
                                tracing::warn!(
                                    target: "kt",
                                    "inbound connection: the local process read nothing of \
                                     the {} MiB waiting for it for {STALL_TIMEOUT:?}; closing \
                                     this connection so the others keep moving",
                                    QUEUE_BYTES >> 20
                                );
                                budget.close();
                                return;
                            }
                        }
                        if queue.send(Some(data)).is_err() {
                            return;
                        }
                    }
                    ChannelMsg::Eof | ChannelMsg::Close => break,
                    _ => {}
                }
            }
            let _ = queue.send(None);
        }
    };
    let deliver = async move {
        while let Some(item) = queued.recv().await {
            let Some(data) = item else {
                let _ = local_write.shutdown().await;
                return;
            };
            if let Err(e) = local_write.write_all(&data).await {
                tracing::debug!(target: "kt", "inbound connection, writing locally: {e}");
                // Unblocks the drain, which then ends.
                budget.close();
                return;
            }
            budget.add_permits(data.len().min(QUEUE_BYTES));
        }
    };
    let send = async {
        let mut buf = vec![0u8; READ_BUF];
        loop {
            match local_read.read(&mut buf).await {
                Ok(0) => {
                    let _ = to_cluster.eof().await;
                    return;
                }
                Ok(n) => {
                    if to_cluster
                        .data_bytes(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(target: "kt", "inbound connection, reading locally: {e}");
                    let _ = to_cluster.eof().await;
                    return;
                }
            }
        }
    };
    tokio::join!(drain, deliver, send);
    let _ = to_cluster.close().await;
}
