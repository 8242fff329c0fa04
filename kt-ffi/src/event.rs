//! `kt_event`: one event of a session, from `kt_session_next_event`.

use std::ffi::{CString, c_char};

use kt_core::Event;

use crate::handle::Table;
use crate::status::{Failure, Out, cstring, guard, kt_status, str_arg};

/// One event of a session (connect progress, tunnel state, closing): its kind, a
/// one-line text, and named fields.
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
    /// The Secret and shadow pod are being created: `namespace`, `pod`, `image`.
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
    /// An event this version of the header does not know (only the text).
    Other = 15,
}

/// An event as C sees it.
pub(crate) struct EventData {
    kind: kt_event_kind,
    text: CString,
    fields: Vec<(&'static str, CString)>,
}

static EVENTS: Table<EventData> = Table::new(4, "kt_session_next_event");

impl EventData {
    pub(crate) fn new(event: &Event) -> EventData {
        use kt_event_kind as K;
        let s = |v: &str| cstring(v);
        let (kind, fields): (kt_event_kind, Vec<(&'static str, CString)>) = match event {
            Event::Creating {
                namespace,
                pod,
                image,
            } => (
                K::Creating,
                vec![
                    ("namespace", s(namespace)),
                    ("pod", s(pod)),
                    ("image", s(image)),
                ],
            ),
            Event::Scheduled { node } => (K::Scheduled, vec![("node", s(node))]),
            Event::Pulling { image } => (K::Pulling, vec![("image", s(image))]),
            Event::ImageReady { image } => (K::ImageReady, vec![("image", s(image))]),
            Event::Ready { pod_ip } => (K::Ready, vec![("pod_ip", s(pod_ip))]),
            Event::TunnelUp { socks5, http_proxy } => (
                K::TunnelUp,
                vec![
                    ("socks5", s(&socks5.to_string())),
                    ("http_proxy", s(&http_proxy.to_string())),
                ],
            ),
            Event::Recovered { what } => (K::Recovered, vec![("what", s(what))]),
            Event::VpnUp { device, routes } => (
                K::VpnUp,
                vec![("device", s(device)), ("routes", s(&routes.join(",")))],
            ),
            Event::DnsInstalled { server, detail } => (
                K::DnsInstalled,
                vec![("server", s(&server.to_string())), ("detail", s(detail))],
            ),
            Event::Reconnecting { attempt, reason } => (
                K::Reconnecting,
                vec![("attempt", s(&attempt.to_string())), ("reason", s(reason))],
            ),
            Event::Reconnected { attempts } => {
                (K::Reconnected, vec![("attempts", s(&attempts.to_string()))])
            }
            Event::TunnelLost { reason } => (K::TunnelLost, vec![("reason", s(reason))]),
            Event::HeartbeatFailed { reason } => (K::HeartbeatFailed, vec![("reason", s(reason))]),
            Event::Closing => (K::Closing, Vec::new()),
            Event::Closed => (K::Closed, Vec::new()),
            _ => (K::Other, Vec::new()),
        };
        EventData {
            kind,
            text: cstring(&event.to_string()),
            fields,
        }
    }

    pub(crate) fn into_handle(self) -> *mut kt_event {
        EVENTS.insert(self)
    }
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
