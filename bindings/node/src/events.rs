//! A session's events: plain objects `{ kind, message, ...fields }`, read with
//! `for await (const ev of session.events())` or pulled with `nextEvent(timeoutMs)`.

use std::future::Future;
use std::sync::Arc;

use napi::bindgen_prelude::{AsyncGenerator, PromiseRaw, Unknown};
use napi::{Env, ValueType};
use napi_derive::napi;

use crate::error::{KtError, promise, rejected};
use crate::options::millis;

/// One event of a session. `kind` is the kt-core variant; the other fields are set
/// for the kinds that have them.
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// What happened.
    #[napi(
        ts_type = "'Creating' | 'Scheduled' | 'Pulling' | 'ImageReady' | 'Ready' | 'TunnelUp' | 'Recovered' | 'VpnUp' | 'DnsInstalled' | 'Reconnecting' | 'Reconnected' | 'TunnelLost' | 'HeartbeatFailed' | 'Closing' | 'Closed' | 'Other'"
    )]
    pub kind: String,
    /// The event in words (as kt logs it).
    pub message: String,
    /// Creating: the namespace.
    pub namespace: Option<String>,
    /// Creating: the shadow pod's name.
    pub pod: Option<String>,
    /// Creating, Pulling, ImageReady: the shadow image.
    pub image: Option<String>,
    /// Scheduled: the node.
    pub node: Option<String>,
    /// Ready: the shadow pod's IP.
    pub pod_ip: Option<String>,
    /// TunnelUp: the SOCKS5 proxy (`127.0.0.1:port`).
    pub socks5: Option<String>,
    /// TunnelUp: the HTTP proxy (`127.0.0.1:port`).
    pub http_proxy: Option<String>,
    /// Recovered: what was restored.
    pub what: Option<String>,
    /// VpnUp: the tun device.
    pub device: Option<String>,
    /// VpnUp: the routed ranges.
    pub routes: Option<Vec<String>>,
    /// DnsInstalled: the local DNS server.
    pub server: Option<String>,
    /// DnsInstalled: what was changed.
    pub detail: Option<String>,
    /// Reconnecting: the try number (1, 2, ...).
    pub attempt: Option<u32>,
    /// Reconnected: how many tries it took.
    pub attempts: Option<u32>,
    /// Reconnecting, TunnelLost, HeartbeatFailed: why.
    pub reason: Option<String>,
}

impl From<kt_core::Event> for Event {
    fn from(e: kt_core::Event) -> Event {
        use kt_core::Event as E;
        let mut out = Event {
            message: e.to_string(),
            ..Event::default()
        };
        out.kind = match e {
            E::Creating {
                namespace,
                pod,
                image,
            } => {
                out.namespace = Some(namespace);
                out.pod = Some(pod);
                out.image = Some(image);
                "Creating"
            }
            E::Scheduled { node } => {
                out.node = Some(node);
                "Scheduled"
            }
            E::Pulling { image } => {
                out.image = Some(image);
                "Pulling"
            }
            E::ImageReady { image } => {
                out.image = Some(image);
                "ImageReady"
            }
            E::Ready { pod_ip } => {
                out.pod_ip = Some(pod_ip);
                "Ready"
            }
            E::TunnelUp { socks5, http_proxy } => {
                out.socks5 = Some(socks5.to_string());
                out.http_proxy = Some(http_proxy.to_string());
                "TunnelUp"
            }
            E::Recovered { what } => {
                out.what = Some(what);
                "Recovered"
            }
            E::VpnUp { device, routes } => {
                out.device = Some(device);
                out.routes = Some(routes);
                "VpnUp"
            }
            E::DnsInstalled { server, detail } => {
                out.server = Some(server.to_string());
                out.detail = Some(detail);
                "DnsInstalled"
            }
            E::Reconnecting { attempt, reason } => {
                out.attempt = Some(attempt);
                out.reason = Some(reason);
                "Reconnecting"
            }
            E::Reconnected { attempts } => {
                out.attempts = Some(attempts);
                "Reconnected"
            }
            E::TunnelLost { reason } => {
                out.reason = Some(reason);
                "TunnelLost"
            }
            E::HeartbeatFailed { reason } => {
                out.reason = Some(reason);
                "HeartbeatFailed"
            }
            E::Closing => "Closing",
            E::Closed => "Closed",
            _ => "Other",
        }
        .to_owned();
        out
    }
}

/// The events of one session: every event since it started, then new ones, ending
/// after `Closed`. An async iterable (`for await`); `nextEvent(timeoutMs)` pulls one.
/// Each stream has its own position; get as many as you like from `session.events()`.
#[napi(async_iterator)]
pub struct EventStream {
    events: Arc<tokio::sync::Mutex<kt_core::Events>>,
}

impl EventStream {
    pub(crate) fn new(events: kt_core::Events) -> EventStream {
        EventStream {
            events: Arc::new(tokio::sync::Mutex::new(events)),
        }
    }
}

#[napi]
impl AsyncGenerator for EventStream {
    type Yield = Event;
    type Next = ();
    type Return = ();

    fn next(
        &mut self,
        _value: Option<()>,
    ) -> impl Future<Output = napi::Result<Option<Event>>> + Send + 'static {
        let events = Arc::clone(&self.events);
        async move { Ok(events.lock().await.next().await.map(Event::from)) }
    }
}

#[napi]
impl EventStream {
    /// The next event; `null` if none came within `timeoutMs` (default: wait as long as
    /// it takes) or the stream has ended (after `Closed`).
    #[napi(
        ts_args_type = "timeoutMs?: number",
        ts_return_type = "Promise<Event | null>"
    )]
    pub fn next_event<'env>(
        &self,
        env: &'env Env,
        timeout_ms: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Option<Event>>> {
        let timeout = match timeout_ms {
            Some(v) if !matches!(v.get_type(), Ok(ValueType::Undefined | ValueType::Null)) => {
                match millis(v, "timeoutMs") {
                    Ok(d) => Some(d),
                    Err(e) => return rejected(env, e),
                }
            }
            _ => None,
        };
        let events = Arc::clone(&self.events);
        promise(
            env,
            async move {
                let next = async { events.lock().await.next().await.map(Event::from) };
                Ok::<_, KtError>(match timeout {
                    None => next.await,
                    Some(t) => tokio::time::timeout(t, next).await.unwrap_or(None),
                })
            },
            |e| e,
        )
    }

    /// Every event already waiting, without blocking (an empty array if none).
    #[napi]
    pub fn drain(&self) -> Vec<Event> {
        let Ok(mut events) = self.events.try_lock() else {
            return Vec::new();
        };
        std::iter::from_fn(|| events.try_next())
            .map(Event::from)
            .collect()
    }
}
