//! What a proxy changes in the headers it forwards: hop-by-hop fields go (RFC 9110
//! §7.6.1), `X-Forwarded-For` and `Forwarded` (RFC 7239) get the client.

use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, BytesMut};
use hyper::header::{CONNECTION, FORWARDED, HeaderMap, HeaderName, HeaderValue, TE, UPGRADE};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Whether the comma-separated header has `token` (case-insensitive).
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    (headers.get_all(name).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The protocol an HTTP/1.1 request asks to switch to, when it asks (`Connection:
/// upgrade` and an `Upgrade` header), h2c aside: a server may ignore an Upgrade, and
/// the router ignores that one (answers over HTTP/1.1, see the module docs).
pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && has_token(headers, &CONNECTION, "upgrade")
        && !has_token(headers, &UPGRADE, "h2c")
}

/// Removes the hop-by-hop fields: `Connection` and the fields it names, `Keep-Alive`,
/// `Proxy-Connection`, `HTTP2-Settings`, `Transfer-Encoding` (hyper frames the body
/// again), `TE` unless it is `trailers` (kept as exactly that), and `Upgrade` unless
/// `upgrade` (then `Connection: upgrade` is put back, as the next hop needs it).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(&CONNECTION) {
        // Rare in HTTP/1.1 (curl sends none); allocation only here.
        let named: Vec<HeaderName> = (headers.get_all(&CONNECTION).iter())
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        headers.remove(&CONNECTION);
        for name in named {
            // `Connection: te` must not take away `TE: trailers` (handled below).
            if name != UPGRADE && name != TE {
                headers.remove(&name);
            }
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(&HTTP2_SETTINGS);
    headers.remove(hyper::header::TRANSFER_ENCODING);
    if headers.contains_key(&TE) {
        let trailers = has_token(headers, &TE, "trailers");
        headers.remove(&TE);
        if trailers {
            headers.insert(&TE, HeaderValue::from_static("trailers"));
        }
    }
    if upgrade {
        headers.insert(&CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(&UPGRADE);
    }
}

/// The client's entries for `X-Forwarded-For` and `Forwarded`, made once per
/// connection.
#[derive(Debug, Clone)]
pub(crate) struct ClientFields {
    x_forwarded_for: HeaderValue,
    forwarded: HeaderValue,
}

impl ClientFields {
    pub(crate) fn new(peer: SocketAddr) -> Self {
        let ip = peer.ip().to_canonical();
        let forwarded = match ip {
            IpAddr::V4(ip) => format!("for={ip};proto=http"),
            // RFC 7239 §6: an IPv6 node is quoted and bracketed.
            IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto=http"),
        };
        ClientFields {
            x_forwarded_for: HeaderValue::try_from(ip.to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            forwarded: HeaderValue::try_from(forwarded)
                .unwrap_or(HeaderValue::from_static("for=unknown;proto=http")),
        }
    }

    /// Appends the client to both lists (one field line each: earlier entries, then
    /// this hop's).
    pub(crate) fn append_to(&self, headers: &mut HeaderMap) {
        append_list(headers, &X_FORWARDED_FOR, &self.x_forwarded_for);
        append_list(headers, &FORWARDED, &self.forwarded);
    }
}

/// Sets `name` to its present values and `value`, comma-separated, on one line (many
/// applications read only the first line of `X-Forwarded-For`).
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let mut old = headers.get_all(name).iter().peekable();
    if old.peek().is_none() {
        headers.insert(name, value.clone());
        return;
    }
    let mut joined = BytesMut::new();
    for v in old {
        joined.put_slice(v.as_bytes());
        joined.put_slice(b", ");
    }
    joined.put_slice(value.as_bytes());
    // Only visible bytes went in, from valid values.
    if let Ok(v) = HeaderValue::from_maybe_shared(joined.freeze()) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_fields_go_end_to_end_ones_stay() {
        let mut h = map(&[
            ("host", "example.test"),
            ("connection", "keep-alive, X-Hop, te"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers, deflate"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-custom", "stays"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["host", "te", "x-custom"]);
        assert_eq!(h["te"], "trailers");

        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
        ]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn h2c_is_not_an_upgrade_the_router_takes() {
        let h = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert!(!wants_upgrade(&h));
        assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn the_client_is_appended_to_forwarding_lists() {
        let v4 = ClientFields::new("10.1.2.3:5000".parse().unwrap());
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        v4.append_to(&mut h);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(h["forwarded"], "for=10.1.2.3;proto=http");

        let v6 = ClientFields::new("[fd00::1]:5000".parse().unwrap());
        let mut h = map(&[("forwarded", "for=1.1.1.1")]);
        v6.append_to(&mut h);
        assert_eq!(h["forwarded"], "for=1.1.1.1, for=\"[fd00::1]\";proto=http");
        assert_eq!(h["x-forwarded-for"], "fd00::1");

        let mapped = ClientFields::new("[::ffff:10.0.0.9]:1".parse().unwrap());
        let mut h = HeaderMap::new();
        mapped.append_to(&mut h);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
    }
}
