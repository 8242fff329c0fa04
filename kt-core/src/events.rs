//! Typed progress and state events of a session.

use std::collections::VecDeque;
use std::fmt;
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
    /// The Secret and the shadow pod are being created.
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
        socks5: std::net::SocketAddr,
        /// The HTTP proxy's address.
        http_proxy: std::net::SocketAddr,
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
        server: std::net::SocketAddr,
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
    /// Refreshing the heartbeat annotation failed (the session goes on).
    HeartbeatFailed {
        /// What the API server said.
        reason: String,
    },
    /// `close()` started removing the session's objects.
    Closing,
    /// Every object is gone and every task ended. The last event.
    Closed,
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
            Event::Closing => f.write_str("closing: removing the shadow pod and its Secret"),
            Event::Closed => f.write_str("closed"),
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
        assert_eq!(seen, ["closing: removing the shadow pod and its Secret"]);
    }
}
