//! A session's events: plain objects `{ kind, message, ...fields }`, read with
//! `for await (const ev of session.events())` or pulled with `nextEvent(timeoutMs)`.
//!
//! An event object is built from kt-core's [`kt_core::Event::kind`] and
//! [`kt_core::Event::fields`], never by matching the variants: `kind` is the
//! [`EventKind`] name in PascalCase (`tunnel_up` -> `TunnelUp`), each field's name in
//! camelCase (`pod_ip` -> `podIp`), so a kind or field kt-core adds reaches
//! JavaScript without a change here. `test/kinds.test.mjs` checks that `index.d.ts`
//! declares every kind and field.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use kt_core::{EventKind, EventValue};
use napi::bindgen_prelude::{AsyncGenerator, Either3, PromiseRaw, Unknown};
use napi::{Env, ValueType};
use napi_derive::napi;

use crate::error::{KtError, promise, rejected};
use crate::options::millis;

/// The name of one property of an event object; the properties keep kt-core's order
/// (`kind`, `message`, then the fields as kt-core lists them).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventKey {
    order: usize,
    name: String,
}

impl AsRef<str> for EventKey {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

/// A property's value: text (also addresses, `ip:port`), a number, or a list.
pub type EventField = Either3<String, u32, Vec<String>>;

/// An event as JavaScript gets it: an object `{ kind, message, ...fields }`, typed by
/// the `Event` interface of `index.d.ts` ([`EventShape`]).
pub type Event = BTreeMap<EventKey, EventField>;

/// `snake_case` to `PascalCase`, or to `camelCase` when `upper_first` is false.
fn case(snake: &str, upper_first: bool) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = upper_first;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The JavaScript `kind` of an event kind: its name in PascalCase (`TunnelUp`).
pub(crate) fn kind_name(kind: EventKind) -> String {
    case(kind.name(), true)
}

/// A field's value in JavaScript: a number, an array of strings, or else its text
/// (kt-core's `Display`: the text itself, `ip:port` for an address).
fn field(value: EventValue) -> EventField {
    match value {
        EventValue::Number(n) => Either3::B(n),
        EventValue::List(items) => Either3::C(items),
        other => Either3::A(other.to_string()),
    }
}

/// The JavaScript object of a kt-core event.
pub(crate) fn event(e: &kt_core::Event) -> Event {
    let head = [
        ("kind".to_owned(), Either3::A(kind_name(e.kind()))),
        ("message".to_owned(), Either3::A(e.to_string())),
    ];
    let fields = e
        .fields()
        .into_iter()
        .map(|(name, value)| (case(name, false), field(value)));
    head.into_iter()
        .chain(fields)
        .enumerate()
        .map(|(order, (name, value))| (EventKey { order, name }, value))
        .collect()
}

// Declares the TypeScript type of an event object (index.d.ts); `event` builds the
// objects.
/// One event of a session. `kind` says what happened; the other fields are set for
/// the kinds that have them.
#[napi(object, js_name = "Event")]
#[derive(Debug, Clone, Default)]
pub struct EventShape {
    /// What happened.
    #[napi(
        ts_type = "'Creating' | 'Scheduled' | 'Pulling' | 'ImageReady' | 'Ready' | 'TunnelUp' | 'Recovered' | 'VpnUp' | 'DnsInstalled' | 'Reconnecting' | 'Reconnected' | 'TunnelLost' | 'HeartbeatFailed' | 'Closing' | 'Closed' | 'Listening' | 'SelectorSwitched' | 'Scaled' | 'ServiceCreated' | 'Inbound' | 'Restored' | 'RestoreConflict' | 'Routed' | 'Uploading'"
    )]
    pub kind: String,
    /// The event in words (as kt logs it).
    pub message: String,
    /// Creating, Uploading: the namespace.
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
    /// DnsInstalled: the local DNS server (`ip:port`).
    pub server: Option<String>,
    /// DnsInstalled: what was changed; Restored: what was put back; RestoreConflict:
    /// the value left alone and why.
    pub detail: Option<String>,
    /// Reconnecting: the try number (1, 2, ...).
    pub attempt: Option<u32>,
    /// Reconnected: how many tries it took.
    pub attempts: Option<u32>,
    /// Reconnecting, TunnelLost, HeartbeatFailed: why.
    pub reason: Option<String>,
    /// Listening: `remote -> 127.0.0.1:local`, one per port.
    pub ports: Option<Vec<String>>,
    /// SelectorSwitched: the Service; ServiceCreated: the new Service; Routed: the
    /// meshed Service.
    pub service: Option<String>,
    /// SelectorSwitched: the Service's new selector.
    pub selector: Option<String>,
    /// Scaled: the workload (`deploy/web`).
    pub workload: Option<String>,
    /// Scaled: the replicas before.
    pub from: Option<u32>,
    /// Scaled: the replicas after.
    pub to: Option<u32>,
    /// Inbound: who connected (an address in the cluster).
    pub peer: Option<String>,
    /// Inbound: the shadow's port it connected to.
    pub port: Option<u32>,
    /// Restored: the object (`Service dev/web`).
    pub object: Option<String>,
    /// Routed: the mesh's rule (`version=alice`).
    pub rule: Option<String>,
    /// Routed: the router pod.
    pub router: Option<String>,
    /// Uploading: how many parts (ConfigMaps) of kt's agent are uploaded.
    pub parts: Option<u32>,
    /// Uploading: how many bytes they hold.
    pub bytes: Option<u32>,
}

/// The kinds of event, by kt-core name (`creating`, `tunnel_up`, ...); an event's
/// `kind` is the name in PascalCase (`TunnelUp`). New kinds may be added.
#[napi(catch_unwind)]
pub fn event_kinds() -> Vec<&'static str> {
    EventKind::ALL.iter().map(|k| k.name()).collect()
}

/// For the tests: one event of each kind as JavaScript gets it (the test checks that
/// they cover `eventKinds()` and that `index.d.ts` declares their fields).
#[doc(hidden)]
#[napi(catch_unwind, js_name = "__eventExamples", ts_return_type = "Event[]")]
pub fn event_examples() -> Vec<Event> {
    use kt_core::Event as E;
    let text = |s: &str| s.to_owned();
    let addr = SocketAddr::from(([127, 0, 0, 1], 1080));
    [
        E::Creating {
            namespace: text("dev"),
            pod: text("kt-shadow-example"),
            image: text("kt.invalid/kt-shadow"),
        },
        E::Scheduled {
            node: text("node-1"),
        },
        E::Pulling {
            image: text("kt.invalid/kt-shadow"),
        },
        E::ImageReady {
            image: text("kt.invalid/kt-shadow"),
        },
        E::Ready {
            pod_ip: text("10.244.0.7"),
        },
        E::TunnelUp {
            socks5: addr,
            http_proxy: addr,
        },
        E::Recovered {
            what: text("/etc/resolv.conf"),
        },
        E::VpnUp {
            device: text("kt0"),
            routes: vec![text("10.96.0.0/12")],
        },
        E::DnsInstalled {
            server: addr,
            detail: text("resolv.conf"),
        },
        E::Reconnecting {
            attempt: 1,
            reason: text("example"),
        },
        E::Reconnected { attempts: 2 },
        E::TunnelLost {
            reason: text("example"),
        },
        E::HeartbeatFailed {
            reason: text("example"),
        },
        E::Closing,
        E::Closed,
        E::Listening {
            ports: vec![text("80 -> 127.0.0.1:8080")],
        },
        E::SelectorSwitched {
            service: text("web"),
            selector: text("kt.dev/swap=a1b2c3d4"),
        },
        E::Scaled {
            workload: text("deploy/web"),
            from: 2,
            to: 0,
        },
        E::ServiceCreated {
            service: text("preview"),
        },
        E::Inbound {
            peer: text("10.244.0.9:41234"),
            port: 80,
        },
        E::Restored {
            object: text("Service dev/web"),
            detail: text("/spec/selector"),
        },
        E::RestoreConflict {
            detail: text("example"),
        },
        E::Routed {
            service: text("web"),
            rule: text("version=alice"),
            router: text("kt-router-web"),
        },
        E::Uploading {
            namespace: text("dev"),
            parts: 3,
            bytes: 2_000_000,
        },
    ]
    .iter()
    .map(event)
    .collect()
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
        async move { Ok(events.lock().await.next().await.map(|e| event(&e))) }
    }
}

#[napi]
impl EventStream {
    /// The next event; `null` if none came within `timeoutMs` (default: wait as long as
    /// it takes) or the stream has ended (after `Closed`).
    #[napi(
        catch_unwind,
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
                let next = async { events.lock().await.next().await.map(|e| event(&e)) };
                Ok::<_, KtError>(match timeout {
                    None => next.await,
                    Some(t) => tokio::time::timeout(t, next).await.unwrap_or(None),
                })
            },
            |e| e,
        )
    }

    /// Every event already waiting, without blocking (an empty array if none).
    #[napi(catch_unwind)]
    pub fn drain(&self) -> Vec<Event> {
        let Ok(mut events) = self.events.try_lock() else {
            return Vec::new();
        };
        std::iter::from_fn(|| events.try_next())
            .map(|e| event(&e))
            .collect()
    }
}
