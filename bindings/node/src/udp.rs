//! `session.udpChannel(target, port)`: one UDP flow to a host and port in the cluster,
//! sent and received from JavaScript (kt-core's `DatagramChannel`).

use std::sync::{Arc, Mutex, PoisonError};

use kt_core::DatagramChannel;
use napi::bindgen_prelude::{Buffer, FromNapiValue, PromiseRaw, Uint8Array, Unknown};
use napi::{Env, JsValue, ValueType};
use napi_derive::napi;
use tokio::sync::watch;

use crate::error::{KtError, promise, rejected};
use crate::options::millis;

/// A UDP flow to one host and port in the cluster, through the session's kt-shadow
/// (`session.udpChannel(target, port)`). Each `send` is one datagram to the target,
/// each `recv` one datagram from it. The flow ends with `close()`, when the session
/// closes, or after 60 s with no datagram either way; then `send` and `recv` reject
/// with `KT_CLOSED`. Datagrams may be lost, as with any UDP socket.
#[napi]
pub struct UdpChannel {
    /// `None` once closed.
    channel: Mutex<Option<Arc<DatagramChannel>>>,
    /// Set by `close()`: ends a `recv` that is waiting.
    closed: watch::Sender<bool>,
    target: String,
    port: u16,
    peer: String,
}

impl UdpChannel {
    pub(crate) fn new(channel: DatagramChannel, target: String, port: u16) -> UdpChannel {
        UdpChannel {
            peer: channel.peer_addr().to_string(),
            channel: Mutex::new(Some(Arc::new(channel))),
            closed: watch::Sender::new(false),
            target,
            port,
        }
    }

    /// The channel, or the error of a closed one.
    fn open(&self) -> Result<Arc<DatagramChannel>, KtError> {
        self.channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| self.closed_error())
    }

    fn closed_error(&self) -> KtError {
        KtError::from(kt_core::Error::FlowClosed {
            target: self.target.clone(),
            port: self.port,
            reason: "udpChannel.close() was called".to_owned(),
        })
    }
}

#[napi]
impl UdpChannel {
    /// The address the shadow sends to, `ip:port` (the Service's ClusterIP, the pod's
    /// IP, or the address the name resolved to).
    #[napi(catch_unwind, getter)]
    pub fn peer_addr(&self) -> String {
        self.peer.clone()
    }

    /// Sends one datagram (up to 65 507 bytes; an empty one is allowed).
    #[napi(
        catch_unwind,
        ts_args_type = "datagram: Uint8Array",
        ts_return_type = "Promise<void>"
    )]
    pub fn send<'env>(
        &self,
        env: &'env Env,
        datagram: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let checked = self.open().and_then(|channel| {
            let bytes = bytes(datagram)?;
            Ok((channel, bytes))
        });
        let (channel, bytes) = match checked {
            Ok(v) => v,
            Err(e) => return rejected(env, e),
        };
        promise(
            env,
            async move { channel.send(&bytes).await.map_err(KtError::from) },
            |()| (),
        )
    }

    /// The next datagram from the target; `null` if none came within `timeoutMs`
    /// (default: wait as long as it takes).
    #[napi(
        catch_unwind,
        ts_args_type = "timeoutMs?: number",
        ts_return_type = "Promise<Buffer | null>"
    )]
    pub fn recv<'env>(
        &self,
        env: &'env Env,
        timeout_ms: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Option<Buffer>>> {
        let timeout = match timeout_ms {
            Some(v) if !matches!(v.get_type(), Ok(ValueType::Undefined | ValueType::Null)) => {
                match millis(v, "timeoutMs") {
                    Ok(d) => Some(d),
                    Err(e) => return rejected(env, e),
                }
            }
            _ => None,
        };
        let channel = match self.open() {
            Ok(c) => c,
            Err(e) => return rejected(env, e),
        };
        let mut closed = self.closed.subscribe();
        let closed_error = self.closed_error();
        promise(
            env,
            async move {
                let recv = async {
                    tokio::select! {
                        r = channel.recv() => r.map(|b| Some(b.to_vec())).map_err(KtError::from),
                        _ = closed.wait_for(|c| *c) => Err(closed_error),
                    }
                };
                match timeout {
                    None => recv.await,
                    Some(t) => tokio::time::timeout(t, recv).await.unwrap_or(Ok(None)),
                }
            },
            |b| b.map(Buffer::from),
        )
    }

    /// Ends the flow; a `recv` waiting rejects with `KT_CLOSED`, and so do later
    /// calls. Calling it again does nothing.
    #[napi(catch_unwind)]
    pub fn close(&self) {
        self.channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.closed.send_replace(true);
    }
}

/// The bytes of a `Buffer` or `Uint8Array`.
fn bytes(value: Option<Unknown<'_>>) -> Result<Vec<u8>, KtError> {
    let value = value
        .filter(|v| !matches!(v.get_type(), Ok(ValueType::Undefined)))
        .ok_or_else(|| KtError::invalid("datagram is required"))?;
    if !value.is_typedarray().unwrap_or(false) {
        return Err(KtError::invalid(format!(
            "datagram must be a Buffer or Uint8Array, got {}",
            crate::options::type_name(&value)
        )));
    }
    let view = Uint8Array::from_unknown(value)
        .map_err(|e| KtError::invalid(format!("datagram must be a Uint8Array: {}", e.reason)))?;
    Ok(view.to_vec())
}
