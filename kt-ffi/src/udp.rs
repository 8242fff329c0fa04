//! `kt_udp_channel`: a UDP flow to one target in the cluster, without a local socket
//! (kt-core's `DatagramChannel`): the program sends and receives whole datagrams.

use std::ffi::c_char;
use std::time::Duration;

use kt_core::DatagramChannel;

use crate::block_on;
use crate::handle::Table;
use crate::status::{Failure, Out, guard, kt_status};

/// A UDP flow through the session's shadow to one target, made by
/// `kt_session_udp_channel` (kt-shadow flavour only). Datagrams keep their
/// boundaries (up to 65 507 bytes); the shadow ends a flow that carried nothing
/// either way for 60 s, after which send and receive give `KT_STATUS_CLOSED` and a
/// new channel is needed. As with any UDP socket, a datagram may be lost.
///
/// Owned by the caller: free it with `kt_udp_channel_free` (closing the session
/// ends it too; then calls give `KT_STATUS_CLOSED`).
///
/// Thread-safety: any function may be called from any thread, also at the same time
/// (one thread receiving while another sends); receivers on several threads take
/// turns. `kt_udp_channel_free` must come after every other use.
pub struct kt_udp_channel {
    _private: [u8; 0],
}

static CHANNELS: Table<DatagramChannel> = Table::new(6, "kt_session_udp_channel");

/// Stores `channel` as a new handle.
pub(crate) fn insert(channel: DatagramChannel) -> *mut kt_udp_channel {
    CHANNELS.insert(channel)
}

/// Sends one datagram of `len` bytes from `data` (`data` may be NULL when `len` is
/// 0). Blocks only while 256 earlier datagrams still wait for the tunnel.
/// `KT_STATUS_INVALID_ARGUMENT` for more than 65 507 bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_udp_channel_send(
    channel: *const kt_udp_channel,
    data: *const u8,
    len: usize,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let chan = CHANNELS.get(channel, "channel")?;
        let datagram: &[u8] = if len == 0 {
            &[]
        } else if data.is_null() {
            return Err(Failure::null("data"));
        } else {
            // SAFETY: the caller passes `len` readable bytes at `data`.
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        block_on(chan.send(datagram))??;
        Ok(())
    })
}

/// Waits up to `timeout_ms` milliseconds (0: does not wait) for the next datagram
/// from the target and copies it into `buf` (`cap` bytes). Stores in `*len` the
/// datagram's whole length: when it is larger than `cap`, only the first `cap` bytes
/// were copied and the rest is lost (as with `recv` on a UDP socket). Gives
/// `KT_STATUS_TIMEOUT` (and `*len` 0) when none came in time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_udp_channel_recv(
    channel: *const kt_udp_channel,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    timeout_ms: u64,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(len, "len")?;
        if buf.is_null() && cap > 0 {
            return Err(Failure::null("buf"));
        }
        let chan = CHANNELS.get(channel, "channel")?;
        let wait = Duration::from_millis(timeout_ms);
        // The timer is made inside the runtime (block_on enters it).
        let got = match block_on(async { tokio::time::timeout(wait, chan.recv()).await })? {
            Ok(datagram) => datagram?,
            Err(_) => {
                out.write(0);
                return Err(Failure::new(
                    kt_status::Timeout,
                    format!("no datagram from the target within {timeout_ms} ms"),
                ));
            }
        };
        let n = got.len().min(cap);
        if n > 0 {
            // SAFETY: the caller passes `cap` writable bytes at `buf` (not NULL here).
            let dst = unsafe { std::slice::from_raw_parts_mut(buf, cap) };
            dst[..n].copy_from_slice(&got[..n]);
        }
        out.write(got.len());
        Ok(())
    })
}

/// The address in the cluster the shadow sends to (the Service's ClusterIP, the
/// pod's IP, or what the name resolved to); only `ip` and `port` are meaningful
/// as a remote address.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_udp_channel_peer_addr(
    channel: *const kt_udp_channel,
    addr: *mut crate::kt_addr,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(addr, "addr")?;
        let chan = CHANNELS.get(channel, "channel")?;
        out.write(crate::kt_addr::from_socket(chan.peer_addr()));
        Ok(())
    })
}

/// Frees `channel` and ends its flow. Freeing it twice gives
/// `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_udp_channel_free(
    channel: *mut kt_udp_channel,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        CHANNELS.remove(channel, "channel")?;
        Ok(())
    })
}
