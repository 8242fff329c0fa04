//! Typed progress and state events of a session.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

/// Something that happened to a session: connect progress, then tunnel state changes.
///
/// Read them with [`Session::events`](crate::Session::events) (every event since the
/// session started, then new ones) or, while connecting, with
/// [`ConnectOptions::on_event`](crate::ConnectOptions::on_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The shadow pod (and, for the OpenSSH flavour, its Secret) is being created.
    Creating {
        /// The namespace.
        namespace: String,
        /// The shadow pod's name.
        pod: String,
        /// The shadow image.
        image: String,
    },
    /// The scheduler placed the shadow pod on a node.
    Scheduled {
        /// The node.
        node: String,
    },
    /// The node is pulling the image / creating the container.
    Pulling {
        /// The image.
        image: String,
    },
    /// The image is on the node and the container started.
    ImageReady {
        /// The image.
        image: String,
    },
    /// The shadow pod is Ready.
    Ready {
        /// The pod IP.
        pod_ip: String,
    },
    /// The port-forward and SSH session to the shadow are up.
    TunnelUp {
        /// The SOCKS5 proxy's address.
        socks5: SocketAddr,
        /// The HTTP proxy's address.
        http_proxy: SocketAddr,
    },
    /// VPN mode: system DNS settings that a session which died without closing left
    /// behind were put back.
    Recovered {
        /// What was restored (a file, in words).
        what: String,
    },
    /// VPN mode: the tun device is up with its routes.
    VpnUp {
        /// The device's name.
        device: String,
        /// The routed ranges.
        routes: Vec<String>,
    },
    /// VPN mode: the local DNS server runs and the system resolver uses it.
    DnsInstalled {
        /// The local DNS server.
        server: SocketAddr,
        /// What was changed, in words.
        detail: String,
    },
    /// The tunnel dropped; reconnecting.
    Reconnecting {
        /// 1 for the first try after a drop, then 2, 3, ...
        attempt: u32,
        /// Why the tunnel is down (or why the last try failed).
        reason: String,
    },
    /// The tunnel is back after a drop.
    Reconnected {
        /// How many tries it took.
        attempts: u32,
    },
    /// The tunnel could not be re-established; the session is unusable.
    TunnelLost {
        /// The last failure.
        reason: String,
    },
    /// Renewing the session's Lease failed (the session goes on; if renewals keep
    /// failing for the shadow timeout, the shadow ends itself).
    HeartbeatFailed {
        /// What the API server said.
        reason: String,
    },
    /// `close()` started removing the session's objects.
    Closing,
    /// Every object is gone and every task ended. The last event.
    Closed,
    /// Swap, expose: the shadow listens on these ports in the cluster, each forwarded
    /// to a local port (`8080 -> 127.0.0.1:3000`).
    Listening {
        /// `remote -> 127.0.0.1:local`, one per port.
        ports: Vec<String>,
    },
    /// Swap, selector mode: a Service now selects the swap shadow.
    SelectorSwitched {
        /// The Service.
        service: String,
        /// Its new selector (`kt.dev/swap=...`).
        selector: String,
    },
    /// Swap, scale mode: the workload was scaled to 0 (its replica count is recorded
    /// on it, and restored on close).
    Scaled {
        /// `deploy/web`, `sts/db`.
        workload: String,
        /// Replicas before.
        from: u32,
        /// Replicas after.
        to: u32,
    },
    /// Expose: the Service was created.
    ServiceCreated {
        /// Its name.
        service: String,
    },
    /// A connection from the cluster arrived at the shadow and is handed to the local
    /// port.
    Inbound {
        /// Who connected (address in the cluster).
        peer: String,
        /// The shadow's port it connected to.
        port: u32,
    },
    /// Something kt changed was put back (by close, by a take-over of an expired
    /// session, by `clean` or `recover`).
    Restored {
        /// The object (`Service dev/web`).
        object: String,
        /// What was put back.
        detail: String,
    },
    /// A value kt changed was changed again by someone else meanwhile: kt left it as
    /// it is and says so.
    RestoreConflict {
        /// The object, the field, what it holds, what kt wrote and the original.
        detail: String,
    },
    /// The imageless shadow: parts of kt's agent are being uploaded to the namespace
    /// (once per namespace and kt version; later sessions reuse them).
    Uploading {
        /// The namespace.
        namespace: String,
        /// How many parts (ConfigMaps) are uploaded.
        parts: u32,
        /// How many bytes they hold.
        bytes: u32,
    },
    /// A mesh router routes the requests of this rule to this machine.
    Routed {
        /// The meshed Service.
        service: String,
        /// The rule, in canonical text form (`version=alice`).
        rule: String,
        /// The router pod.
        router: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Creating {
                namespace,
                pod,
                image,
            } => write!(f, "creating shadow pod {namespace}/{pod} ({image})"),
            Event::Scheduled { node } => write!(f, "scheduled on node {node}"),
            Event::Pulling { image } => write!(f, "pulling image {image}"),
            Event::ImageReady { image } => write!(f, "image {image} ready, container started"),
            Event::Ready { pod_ip } => write!(f, "shadow pod ready ({pod_ip})"),
            Event::TunnelUp { socks5, http_proxy } => write!(
                f,
                "tunnel up: SOCKS5 on {socks5}, HTTP proxy on {http_proxy}"
            ),
            Event::Recovered { what } => {
                write!(f, "restored {what}, left changed by a session that crashed")
            }
            Event::VpnUp { device, routes } => {
                write!(f, "VPN up on {device}, routing {}", routes.join(", "))
            }
            Event::DnsInstalled { server, detail } => {
                write!(f, "cluster names resolve through {server} ({detail})")
            }
            Event::Reconnecting { attempt, reason } => {
                write!(f, "tunnel down ({reason}); reconnecting, try {attempt}")
            }
            Event::Reconnected { attempts } => {
                write!(f, "tunnel back up after {attempts} tries")
            }
            Event::TunnelLost { reason } => write!(f, "tunnel lost: {reason}"),
            Event::HeartbeatFailed { reason } => write!(f, "heartbeat failed: {reason}"),
            Event::Closing => f.write_str("closing: removing the shadow pod"),
            Event::Closed => f.write_str("closed"),
            Event::Listening { ports } => {
                write!(f, "listening in the cluster: {}", ports.join(", "))
            }
            Event::SelectorSwitched { service, selector } => {
                write!(
                    f,
                    "Service {service} now selects the swap shadow ({selector})"
                )
            }
            Event::Scaled { workload, from, to } => {
                write!(f, "scaled {workload} from {from} to {to} replicas")
            }
            Event::ServiceCreated { service } => write!(f, "created Service {service}"),
            Event::Inbound { peer, port } => write!(f, "connection from {peer} to port {port}"),
            Event::Restored { object, detail } => write!(f, "restored {object}: {detail}"),
            Event::RestoreConflict { detail } => write!(f, "not restored: {detail}"),
            Event::Uploading {
                namespace,
                parts,
                bytes,
            } => write!(
                f,
                "uploading kt's agent to namespace {namespace} ({parts} parts, {} KiB; once, \
                 later sessions reuse them)",
                bytes / 1024
            ),
            Event::Routed {
                service,
                rule,
                router,
            } => write!(
                f,
                "{router} routes requests to {service} matching `{rule}` here"
            ),
        }
    }
}

/// What kind of [`Event`] happened: the stable classification every front end maps
/// (C `kt_event_kind`, Python's and Node's `kind`). New kinds may be added; existing
/// names and codes never change. [`EventKind::ALL`] lists every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// [`Event::Creating`].
    Creating,
    /// [`Event::Scheduled`].
    Scheduled,
    /// [`Event::Pulling`].
    Pulling,
    /// [`Event::ImageReady`].
    ImageReady,
    /// [`Event::Ready`].
    Ready,
    /// [`Event::TunnelUp`].
    TunnelUp,
    /// [`Event::Recovered`].
    Recovered,
    /// [`Event::VpnUp`].
    VpnUp,
    /// [`Event::DnsInstalled`].
    DnsInstalled,
    /// [`Event::Reconnecting`].
    Reconnecting,
    /// [`Event::Reconnected`].
    Reconnected,
    /// [`Event::TunnelLost`].
    TunnelLost,
    /// [`Event::HeartbeatFailed`].
    HeartbeatFailed,
    /// [`Event::Closing`].
    Closing,
    /// [`Event::Closed`].
    Closed,
    /// [`Event::Listening`].
    Listening,
    /// [`Event::SelectorSwitched`].
    SelectorSwitched,
    /// [`Event::Scaled`].
    Scaled,
    /// [`Event::ServiceCreated`].
    ServiceCreated,
    /// [`Event::Inbound`].
    Inbound,
    /// [`Event::Restored`].
    Restored,
    /// [`Event::RestoreConflict`].
    RestoreConflict,
    /// [`Event::Routed`].
    Routed,
    /// [`Event::Uploading`].
    Uploading,
}

impl EventKind {
    /// Every kind, in code order.
    pub const ALL: &'static [EventKind] = &[
        EventKind::Creating,
        EventKind::Scheduled,
        EventKind::Pulling,
        EventKind::ImageReady,
        EventKind::Ready,
        EventKind::TunnelUp,
        EventKind::Recovered,
        EventKind::VpnUp,
        EventKind::DnsInstalled,
        EventKind::Reconnecting,
        EventKind::Reconnected,
        EventKind::TunnelLost,
        EventKind::HeartbeatFailed,
        EventKind::Closing,
        EventKind::Closed,
        EventKind::Listening,
        EventKind::SelectorSwitched,
        EventKind::Scaled,
        EventKind::ServiceCreated,
        EventKind::Inbound,
        EventKind::Restored,
        EventKind::RestoreConflict,
        EventKind::Routed,
        EventKind::Uploading,
    ];

    /// The stable name, `snake_case` (`tunnel_up`, ...).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Creating => "creating",
            EventKind::Scheduled => "scheduled",
            EventKind::Pulling => "pulling",
            EventKind::ImageReady => "image_ready",
            EventKind::Ready => "ready",
            EventKind::TunnelUp => "tunnel_up",
            EventKind::Recovered => "recovered",
            EventKind::VpnUp => "vpn_up",
            EventKind::DnsInstalled => "dns_installed",
            EventKind::Reconnecting => "reconnecting",
            EventKind::Reconnected => "reconnected",
            EventKind::TunnelLost => "tunnel_lost",
            EventKind::HeartbeatFailed => "heartbeat_failed",
            EventKind::Closing => "closing",
            EventKind::Closed => "closed",
            EventKind::Listening => "listening",
            EventKind::SelectorSwitched => "selector_switched",
            EventKind::Scaled => "scaled",
            EventKind::ServiceCreated => "service_created",
            EventKind::Inbound => "inbound",
            EventKind::Restored => "restored",
            EventKind::RestoreConflict => "restore_conflict",
            EventKind::Routed => "routed",
            EventKind::Uploading => "uploading",
        }
    }

    /// The stable number (the C `kt_event_kind`). 15 is never a kind's: it is the C
    /// ABI's "a kind this header does not know"; a new kind takes the next free
    /// number after the largest (16, 17, ...).
    pub fn code(self) -> u32 {
        match self {
            EventKind::Creating => 0,
            EventKind::Scheduled => 1,
            EventKind::Pulling => 2,
            EventKind::ImageReady => 3,
            EventKind::Ready => 4,
            EventKind::TunnelUp => 5,
            EventKind::Recovered => 6,
            EventKind::VpnUp => 7,
            EventKind::DnsInstalled => 8,
            EventKind::Reconnecting => 9,
            EventKind::Reconnected => 10,
            EventKind::TunnelLost => 11,
            EventKind::HeartbeatFailed => 12,
            EventKind::Closing => 13,
            EventKind::Closed => 14,
            EventKind::Listening => 16,
            EventKind::SelectorSwitched => 17,
            EventKind::Scaled => 18,
            EventKind::ServiceCreated => 19,
            EventKind::Inbound => 20,
            EventKind::Restored => 21,
            EventKind::RestoreConflict => 22,
            EventKind::Routed => 23,
            EventKind::Uploading => 24,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The value of one field of an [`Event`] ([`Event::fields`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventValue {
    /// Words: a name, a reason, an image.
    Text(String),
    /// A count (`attempt`, `attempts`).
    Number(u32),
    /// A local address (`socks5`, `http_proxy`, `server`).
    Addr(SocketAddr),
    /// A list (`routes`).
    List(Vec<String>),
}

impl fmt::Display for EventValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventValue::Text(t) => f.write_str(t),
            EventValue::Number(n) => write!(f, "{n}"),
            EventValue::Addr(a) => write!(f, "{a}"),
            EventValue::List(l) => f.write_str(&l.join(",")),
        }
    }
}

impl Event {
    /// The kind of event.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Creating { .. } => EventKind::Creating,
            Event::Scheduled { .. } => EventKind::Scheduled,
            Event::Pulling { .. } => EventKind::Pulling,
            Event::ImageReady { .. } => EventKind::ImageReady,
            Event::Ready { .. } => EventKind::Ready,
            Event::TunnelUp { .. } => EventKind::TunnelUp,
            Event::Recovered { .. } => EventKind::Recovered,
            Event::VpnUp { .. } => EventKind::VpnUp,
            Event::DnsInstalled { .. } => EventKind::DnsInstalled,
            Event::Reconnecting { .. } => EventKind::Reconnecting,
            Event::Reconnected { .. } => EventKind::Reconnected,
            Event::TunnelLost { .. } => EventKind::TunnelLost,
            Event::HeartbeatFailed { .. } => EventKind::HeartbeatFailed,
            Event::Closing => EventKind::Closing,
            Event::Closed => EventKind::Closed,
            Event::Listening { .. } => EventKind::Listening,
            Event::SelectorSwitched { .. } => EventKind::SelectorSwitched,
            Event::Scaled { .. } => EventKind::Scaled,
            Event::ServiceCreated { .. } => EventKind::ServiceCreated,
            Event::Inbound { .. } => EventKind::Inbound,
            Event::Restored { .. } => EventKind::Restored,
            Event::RestoreConflict { .. } => EventKind::RestoreConflict,
            Event::Routed { .. } => EventKind::Routed,
            Event::Uploading { .. } => EventKind::Uploading,
        }
    }

    /// The event's fields by name (`pod_ip`, `attempt`, ...), in declaration order:
    /// what the bindings turn into their own objects, so that every front end sees the
    /// same names.
    pub fn fields(&self) -> Vec<(&'static str, EventValue)> {
        let t = |s: &String| EventValue::Text(s.clone());
        match self {
            Event::Creating {
                namespace,
                pod,
                image,
            } => vec![
                ("namespace", t(namespace)),
                ("pod", t(pod)),
                ("image", t(image)),
            ],
            Event::Scheduled { node } => vec![("node", t(node))],
            Event::Pulling { image } | Event::ImageReady { image } => vec![("image", t(image))],
            Event::Ready { pod_ip } => vec![("pod_ip", t(pod_ip))],
            Event::TunnelUp { socks5, http_proxy } => vec![
                ("socks5", EventValue::Addr(*socks5)),
                ("http_proxy", EventValue::Addr(*http_proxy)),
            ],
            Event::Recovered { what } => vec![("what", t(what))],
            Event::VpnUp { device, routes } => vec![
                ("device", t(device)),
                ("routes", EventValue::List(routes.clone())),
            ],
            Event::DnsInstalled { server, detail } => {
                vec![("server", EventValue::Addr(*server)), ("detail", t(detail))]
            }
            Event::Reconnecting { attempt, reason } => vec![
                ("attempt", EventValue::Number(*attempt)),
                ("reason", t(reason)),
            ],
            Event::Reconnected { attempts } => vec![("attempts", EventValue::Number(*attempts))],
            Event::TunnelLost { reason } | Event::HeartbeatFailed { reason } => {
                vec![("reason", t(reason))]
            }
            Event::Closing | Event::Closed => Vec::new(),
            Event::Listening { ports } => vec![("ports", EventValue::List(ports.clone()))],
            Event::SelectorSwitched { service, selector } => {
                vec![("service", t(service)), ("selector", t(selector))]
            }
            Event::Scaled { workload, from, to } => vec![
                ("workload", t(workload)),
                ("from", EventValue::Number(*from)),
                ("to", EventValue::Number(*to)),
            ],
            Event::ServiceCreated { service } => vec![("service", t(service))],
            Event::Inbound { peer, port } => {
                vec![("peer", t(peer)), ("port", EventValue::Number(*port))]
            }
            Event::Restored { object, detail } => {
                vec![("object", t(object)), ("detail", t(detail))]
            }
            Event::RestoreConflict { detail } => vec![("detail", t(detail))],
            Event::Uploading {
                namespace,
                parts,
                bytes,
            } => vec![
                ("namespace", t(namespace)),
                ("parts", EventValue::Number(*parts)),
                ("bytes", EventValue::Number(*bytes)),
            ],
            Event::Routed {
                service,
                rule,
                router,
            } => vec![
                ("service", t(service)),
                ("rule", t(rule)),
                ("router", t(router)),
            ],
        }
    }
}

/// A callback receiving every event as it happens.
pub(crate) type Callback = Arc<dyn Fn(&Event) + Send + Sync>;

/// How many events are kept for late subscribers (connect progress is ~7).
const HISTORY: usize = 256;

/// Fans events out to subscribers and remembers them for late ones.
pub(crate) struct EventBus {
    inner: Mutex<BusInner>,
    callback: Option<Callback>,
}

struct BusInner {
    history: VecDeque<Event>,
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    pub(crate) fn new(callback: Option<Callback>) -> EventBus {
        let (tx, _) = broadcast::channel(HISTORY);
        EventBus {
            inner: Mutex::new(BusInner {
                history: VecDeque::new(),
                tx,
            }),
            callback,
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        tracing::info!(target: "kt", "{event}");
        if let Some(cb) = &self.callback {
            cb(&event);
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        // No receiver is fine.
        let _ = inner.tx.send(event);
    }

    pub(crate) fn subscribe(&self) -> Events {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Events {
            backlog: inner.history.clone(),
            rx: inner.tx.subscribe(),
            done: false,
        }
    }
}

/// The events of one session: first every event since it started, then new ones as
/// they happen, ending after [`Event::Closed`].
pub struct Events {
    backlog: VecDeque<Event>,
    rx: broadcast::Receiver<Event>,
    done: bool,
}

impl Events {
    /// The next event; `None` after [`Event::Closed`].
    ///
    /// An event stream read too slowly skips the events it missed (at most 256 are
    /// buffered) rather than holding the session back.
    pub async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let event = match self.backlog.pop_front() {
            Some(e) => e,
            None => loop {
                match self.rx.recv().await {
                    Ok(e) => break e,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        self.done = true;
                        return None;
                    }
                }
            },
        };
        if event == Event::Closed {
            self.done = true;
        }
        Some(event)
    }

    /// The next event if one is waiting, without blocking.
    pub fn try_next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let event = match self.backlog.pop_front() {
            Some(e) => e,
            None => loop {
                match self.rx.try_recv() {
                    Ok(e) => break e,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(_) => return None,
                }
            },
        };
        if event == Event::Closed {
            self.done = true;
        }
        Some(event)
    }

    /// The events as a [`futures::Stream`].
    pub fn into_stream(self) -> impl futures::Stream<Item = Event> + Send + Unpin {
        Box::pin(futures::stream::unfold(self, |mut events| async move {
            events.next().await.map(|e| (e, events))
        }))
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("backlog", &self.backlog.len())
            .field("done", &self.done)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_subscribers_see_history_then_live_events_then_end() {
        let bus = EventBus::new(None);
        bus.emit(Event::Scheduled {
            node: "n1".to_owned(),
        });
        let mut events = bus.subscribe();
        bus.emit(Event::Closing);
        bus.emit(Event::Closed);
        assert_eq!(
            events.next().await,
            Some(Event::Scheduled {
                node: "n1".to_owned()
            })
        );
        assert_eq!(events.next().await, Some(Event::Closing));
        assert_eq!(events.next().await, Some(Event::Closed));
        assert_eq!(events.next().await, None);
    }

    #[test]
    fn callback_sees_every_event() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let bus = EventBus::new(Some(Arc::new(move |e: &Event| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e.to_string());
        })));
        bus.emit(Event::Closing);
        let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(seen, ["closing: removing the shadow pod"]);
    }
}
