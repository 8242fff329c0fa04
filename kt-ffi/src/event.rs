//! `kt_event`: one event of a session, a swap or an expose, from
//! `kt_session_next_event`, `kt_swap_next_event` or `kt_expose_next_event`.

use std::ffi::{CString, c_char};
use std::time::Duration;

use kt_core::{Event, EventKind, Events};

use crate::block_on;
use crate::handle::Table;
use crate::status::{Failure, Out, cstring, guard, kt_status, str_arg};

/// One event of a session (connect progress, tunnel state, closing), of a swap or of
/// an expose (listening, selector switched, scaled, inbound connections, restored):
/// its kind, a one-line text, and named fields.
///
/// Owned by the caller: free it with `kt_event_free`. The strings it hands out
/// belong to it and stay valid until then.
///
/// Thread-safety: immutable; any function may be called on it from any thread at
/// the same time, except that `kt_event_free` must come after every other use.
pub struct kt_event {
    _private: [u8; 0],
}

/// What happened. The fields each kind has (for `kt_event_field`) are listed.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kt_event_kind {
    /// The shadow pod (and, for the OpenSSH flavour, its Secret) is being created:
    /// `namespace`, `pod`, `image`.
    Creating = 0,
    /// The shadow pod was placed on a node: `node`.
    Scheduled = 1,
    /// The node is pulling the image: `image`.
    Pulling = 2,
    /// The container started: `image`.
    ImageReady = 3,
    /// The shadow pod is Ready: `pod_ip`.
    Ready = 4,
    /// The tunnel is up: `socks5`, `http_proxy` (`ip:port`).
    TunnelUp = 5,
    /// VPN mode: DNS settings a crashed session left were put back: `what`.
    Recovered = 6,
    /// VPN mode: the tun device is up: `device`, `routes` (comma-separated).
    VpnUp = 7,
    /// VPN mode: system DNS points at the local DNS server: `server`, `detail`.
    DnsInstalled = 8,
    /// The tunnel dropped, reconnecting: `attempt`, `reason`.
    Reconnecting = 9,
    /// The tunnel is back: `attempts`.
    Reconnected = 10,
    /// The tunnel could not be re-established: `reason`.
    TunnelLost = 11,
    /// Refreshing the heartbeat failed (the session goes on): `reason`.
    HeartbeatFailed = 12,
    /// `kt_session_close` started removing the session's objects.
    Closing = 13,
    /// Everything is removed: the last event of a session.
    Closed = 14,
    /// An event this version of the header does not know (only the text and the
    /// fields kt-core gives it).
    Other = 15,
    /// Swap, expose: the shadow listens on its ports in the cluster, each forwarded to
    /// a local port: `ports` (comma-separated `remote -> 127.0.0.1:local`).
    Listening = 16,
    /// Swap, selector mode: a Service now selects the swap shadow: `service`,
    /// `selector`.
    SelectorSwitched = 17,
    /// Swap, scale mode: the workload was scaled: `workload`, `from`, `to`.
    Scaled = 18,
    /// Expose: the Service was created: `service`.
    ServiceCreated = 19,
    /// A connection from the cluster arrived and goes to the local port: `peer` (its
    /// address in the cluster), `port` (the shadow's port).
    Inbound = 20,
    /// Something kt changed was put back: `object`, `detail`.
    Restored = 21,
    /// A value kt changed was changed again by someone else meanwhile and left as it
    /// is: `detail`.
    RestoreConflict = 22,
    /// Mesh: the router routes the requests of this rule here: `service`, `rule`,
    /// `router`.
    Routed = 23,
    /// kt is uploading its agent into the namespace (no shadow image given; the first
    /// session of this kt version there, later ones reuse it): `namespace`, `parts`
    /// (how many ConfigMaps), `bytes`.
    Uploading = 24,
}

/// An event as C sees it.
pub(crate) struct EventData {
    kind: kt_event_kind,
    text: CString,
    fields: Vec<(&'static str, CString)>,
}

static EVENTS: Table<EventData> = Table::new(4, "kt_session_next_event");

impl kt_event_kind {
    /// Every kind this header declares (`Other` aside), in numeric order: the number
    /// is kt-core's `EventKind::code`.
    pub(crate) const KNOWN: [kt_event_kind; 24] = [
        kt_event_kind::Creating,
        kt_event_kind::Scheduled,
        kt_event_kind::Pulling,
        kt_event_kind::ImageReady,
        kt_event_kind::Ready,
        kt_event_kind::TunnelUp,
        kt_event_kind::Recovered,
        kt_event_kind::VpnUp,
        kt_event_kind::DnsInstalled,
        kt_event_kind::Reconnecting,
        kt_event_kind::Reconnected,
        kt_event_kind::TunnelLost,
        kt_event_kind::HeartbeatFailed,
        kt_event_kind::Closing,
        kt_event_kind::Closed,
        kt_event_kind::Listening,
        kt_event_kind::SelectorSwitched,
        kt_event_kind::Scaled,
        kt_event_kind::ServiceCreated,
        kt_event_kind::Inbound,
        kt_event_kind::Restored,
        kt_event_kind::RestoreConflict,
        kt_event_kind::Routed,
        kt_event_kind::Uploading,
    ];

    /// The C kind numbered `kind.code()`; `Other` for a kind this header does not
    /// declare (a newer kt-core).
    pub(crate) fn of(kind: EventKind) -> kt_event_kind {
        kt_event_kind::KNOWN
            .iter()
            .find(|k| **k as u32 == kind.code())
            .copied()
            .unwrap_or(kt_event_kind::Other)
    }
}

impl EventData {
    /// The C view of `event`: kt-core's kind and fields (each value as text: numbers
    /// in decimal, addresses as `ip:port`, lists comma-separated), so every kind,
    /// also one this header does not name, keeps its fields.
    pub(crate) fn new(event: &Event) -> EventData {
        EventData {
            kind: kt_event_kind::of(event.kind()),
            text: cstring(&event.to_string()),
            fields: event
                .fields()
                .into_iter()
                .map(|(name, value)| (name, cstring(&value.to_string())))
                .collect(),
        }
    }

    pub(crate) fn into_handle(self) -> *mut kt_event {
        EVENTS.insert(self)
    }
}

/// The events of a session, swap or expose, and whether the closed event was handed
/// out.
pub(crate) struct EventStream {
    events: Events,
    ended: bool,
}

impl EventStream {
    pub(crate) fn new(events: Events) -> tokio::sync::Mutex<EventStream> {
        tokio::sync::Mutex::new(EventStream {
            events,
            ended: false,
        })
    }
}

/// The body of the `_next_event` functions: waits up to `timeout_ms` for the next
/// event of `stream`, which belongs to a `owner` (`session`, `swap`, `expose`).
pub(crate) fn next_event(
    stream: &tokio::sync::Mutex<EventStream>,
    timeout_ms: u64,
    owner: &str,
) -> Result<*mut kt_event, Failure> {
    let ended = || {
        Failure::new(
            kt_status::Closed,
            format!("the {owner}'s event stream has ended (its closed event was returned already)"),
        )
    };
    // The wait covers taking the stream too: callers on several threads take turns
    // without overrunning their own timeouts. (A year stands in for "forever".)
    let wait = Duration::from_millis(timeout_ms.min(365 * 24 * 3600 * 1000));
    let next = block_on(async {
        let take = async {
            let mut stream = stream.lock().await;
            if stream.ended {
                return Err(ended());
            }
            let next = if timeout_ms == 0 {
                stream.events.try_next()
            } else {
                match stream.events.next().await {
                    None => {
                        stream.ended = true;
                        return Err(ended());
                    }
                    some => some,
                }
            };
            if next == Some(Event::Closed) {
                stream.ended = true;
            }
            Ok(next)
        };
        match tokio::time::timeout(wait, take).await {
            Ok(Ok(Some(event))) => Ok(event),
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) | Err(_) => Err(Failure::new(
                kt_status::Timeout,
                format!("no event within {timeout_ms} ms"),
            )),
        }
    })??;
    Ok(EventData::new(&next).into_handle())
}

/// Stores the kind of `event` in `*kind`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_event_get_kind(
    event: *const kt_event,
    kind: *mut kt_event_kind,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(kind, "kind")?;
        out.write(EVENTS.get(event, "event")?.kind);
        Ok(())
    })
}

/// Stores in `*text` the event as one line of text (e.g. `"shadow pod ready
/// (10.244.0.5)"`). The string belongs to the event (valid until `kt_event_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_event_get_text(
    event: *const kt_event,
    text: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(text, "text")?;
        out.write(EVENTS.get(event, "event")?.text.as_ptr());
        Ok(())
    })
}

/// Stores in `*value` the field `name` of `event` (the names are listed with each
/// `kt_event_kind`; numbers are given as decimal text). The string belongs to the
/// event. `KT_STATUS_NOT_FOUND` when this kind of event has no such field.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_event_get_field(
    event: *const kt_event,
    name: *const c_char,
    value: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(value, "value")?;
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let name = unsafe { str_arg(name, "name") }?;
        let event = EVENTS.get(event, "event")?;
        match event.fields.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                out.write(v.as_ptr());
                Ok(())
            }
            None => {
                let names: Vec<&str> = event.fields.iter().map(|(n, _)| *n).collect();
                Err(Failure::new(
                    kt_status::NotFound,
                    format!(
                        "this event ({:?}) has no field `{name}`; its fields: {}",
                        event.kind,
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                ))
            }
        }
    })
}

/// Frees `event`. Freeing it twice gives `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_event_free(
    event: *mut kt_event,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        EVENTS.remove(event, "event")?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_has_the_c_kind_numbered_by_its_code() {
        let header = include_str!("../include/kt.h");
        for kind in EventKind::ALL {
            let c = kt_event_kind::of(*kind);
            assert_ne!(c, kt_event_kind::Other, "{kind} fell to OTHER");
            assert_eq!(c as u32, kind.code(), "{kind}");
            let constant = format!(
                "KT_EVENT_KIND_{} = {}",
                kind.name().to_uppercase(),
                kind.code()
            );
            assert!(header.contains(&constant), "kt.h lacks `{constant}`");
        }
        assert_eq!(kt_event_kind::KNOWN.len(), EventKind::ALL.len());
    }

    #[test]
    fn event_fields_are_kt_cores_names_with_values_as_text() {
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let data = EventData::new(&Event::TunnelUp {
            socks5: addr(1080),
            http_proxy: addr(8080),
        });
        assert_eq!(data.kind, kt_event_kind::TunnelUp);
        let fields: Vec<(&str, &str)> = data
            .fields
            .iter()
            .map(|(n, v)| (*n, v.to_str().unwrap_or("?")))
            .collect();
        assert_eq!(
            fields,
            [
                ("socks5", "127.0.0.1:1080"),
                ("http_proxy", "127.0.0.1:8080")
            ]
        );
        let data = EventData::new(&Event::VpnUp {
            device: "kt0".to_owned(),
            routes: vec!["10.96.0.0/12".to_owned(), "10.244.0.0/16".to_owned()],
        });
        assert_eq!(
            data.fields[1].1.to_str().ok(),
            Some("10.96.0.0/12,10.244.0.0/16")
        );
        let data = EventData::new(&Event::Reconnecting {
            attempt: 3,
            reason: "reset".to_owned(),
        });
        assert_eq!(data.fields[0].1.to_str().ok(), Some("3"));
    }
}
