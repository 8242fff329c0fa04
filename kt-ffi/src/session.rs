//! `kt_session`: connect, the session's addresses, forwards, DNS, environment,
//! events and close.

use std::ffi::{CString, c_char};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use kt_core::Session;

use crate::event::{EventStream, kt_event, next_event};
use crate::handle::Table;
use crate::list::{List, kt_list};
use crate::options::kt_options;
use crate::options::{dns_mode_value, kt_dns_mode, snapshot};
use crate::status::{Failure, Out, cstring, guard, handle_out, kt_status, str_arg};
use crate::{block_on, kt_addr, runtime};

/// An open session: a shadow pod in the cluster, the tunnel to it, and the local
/// proxies and forwards over it. Made by `kt_session_connect`.
///
/// Owned by the caller: `kt_session_close` removes what it made in the cluster
/// (waiting for it), then `kt_session_free` releases the handle. Freeing a session
/// that is not closed starts the removal in the background without waiting. When the
/// program exits normally (a return from `main`, `exit()`), libkt closes the sessions
/// it left open and waits for those removals, up to 30 s in all. After
/// close, the functions that use the tunnel give `KT_STATUS_CLOSED`; the id,
/// namespace and pod name stay readable until free.
///
/// Thread-safety: every function may be called from any thread, also at the same
/// time on one session (e.g. `kt_session_next_event` blocking in one thread while
/// another forwards or closes), except that `kt_session_free` must come after every
/// other use. Strings a session hands out stay valid until `kt_session_free`.
pub struct kt_session {
    _private: [u8; 0],
}

/// A session as C sees it.
struct Entry {
    /// Always `Some` until dropped.
    session: Option<Session>,
    id: CString,
    namespace: CString,
    pod: CString,
    dns_server: CString,
    /// The proxies' URLs, with the credentials when the proxies require them.
    socks5_url: CString,
    http_proxy_url: CString,
    vpn_device: Option<CString>,
    vpn_dns_detail: Option<CString>,
    /// The session's events since it started, for `kt_session_next_event`.
    events: tokio::sync::Mutex<EventStream>,
    closed: AtomicBool,
}

impl Entry {
    fn session(&self) -> &Session {
        self.session.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// The session, unless it was closed.
    fn open(&self) -> Result<&Session, Failure> {
        if self.closed.load(Ordering::SeqCst) {
            Err(kt_core::Error::Closed.into())
        } else {
            Ok(self.session())
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // kt-core removes an unclosed session's objects on a task of the runtime it is
        // dropped in: enter ours, whichever thread drops the last reference.
        let guard = runtime().ok().map(|rt| rt.enter());
        drop(self.session.take());
        drop(guard);
    }
}

static SESSIONS: Table<Entry> = Table::new(3, "kt_session_connect");

/// Runs `f` with the open session behind `session` (`KT_STATUS_CLOSED` after close).
pub(crate) fn with_open<T>(
    session: *const kt_session,
    f: impl FnOnce(&Session) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let entry = SESSIONS.get(session, "session")?;
    f(entry.open()?)
}

/// Opens a session with `options` (which stays the caller's): creates the shadow pod
/// (and, for the OpenSSH flavour, its Secret), waits until it is Ready, tunnels to it
/// and starts the local proxies. Blocks until connected or failed; whatever was
/// created is removed again on failure. Stores the new session in `*session` (NULL on failure).
///
/// Errors: `KT_STATUS_CONFIG` (kubeconfig), `KT_STATUS_UNREACHABLE` (API server),
/// `KT_STATUS_NOT_FOUND` (namespace), `KT_STATUS_FORBIDDEN` (RBAC),
/// `KT_STATUS_SHADOW`/`KT_STATUS_TIMEOUT` (the shadow pod), `KT_STATUS_TUNNEL`
/// (port-forward, SSH),
/// and in VPN mode `KT_STATUS_NEEDS_CAPABILITY` (nothing is created) or
/// `KT_STATUS_SYSTEM`; the message says what to do.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_connect(
    options: *const kt_options,
    session: *mut *mut kt_session,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(session, "session")?;
        let opts = snapshot(options)?;
        let s = block_on(Session::connect(opts))??;
        let vpn = s.vpn();
        let entry = Entry {
            id: cstring(s.id()),
            namespace: cstring(s.namespace()),
            pod: cstring(s.pod_name()),
            dns_server: cstring(s.dns_server()),
            socks5_url: cstring(&s.socks5_url()),
            http_proxy_url: cstring(&s.http_proxy_url()),
            vpn_device: vpn.map(|v| cstring(&v.device)),
            vpn_dns_detail: vpn.map(|v| cstring(&v.dns_detail)),
            events: EventStream::new(s.events()),
            closed: AtomicBool::new(false),
            session: Some(s),
        };
        out.write(SESSIONS.insert(entry));
        crate::exit::arm();
        Ok(())
    })
}

/// Starts closing every session that is neither closed nor freed (for the exit
/// handler); returns the closes to wait for.
pub(crate) fn close_all_open(rt: &tokio::runtime::Runtime) -> Vec<crate::exit::Removal> {
    SESSIONS
        .values()
        .into_iter()
        .filter(|entry| !entry.closed.swap(true, Ordering::SeqCst))
        .map(|entry| crate::exit::Removal {
            namespace: entry.session().namespace().to_owned(),
            session: entry.session().id().to_owned(),
            handle: rt.spawn(async move {
                if let Err(e) = entry.session().close().await {
                    eprintln!("kt: closing session {:?} at exit: {e}", entry.id);
                }
            }),
        })
        .collect()
}

/// Closes `session`: removes every object it created in the cluster and waits
/// until they are gone, ends the tunnel, the proxies and forwards (and in VPN mode
/// the device, routes and system DNS changes). Blocking. Calling it again does
/// nothing and gives `KT_STATUS_OK`. `KT_STATUS_CLEANUP` names what could not be
/// removed and how to remove it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_close(
    session: *mut kt_session,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let entry = SESSIONS.get(session, "session")?;
        entry.closed.store(true, Ordering::SeqCst);
        block_on(entry.session().close())??;
        Ok(())
    })
}

/// Frees `session`. If it was not closed, its objects are removed in the background
/// (not waited for here: call `kt_session_close` first to be sure; when the program
/// exits normally, libkt waits up to 30 s for such removals). Freeing it twice gives
/// `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_free(
    session: *mut kt_session,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let entry = SESSIONS.remove(session, "session")?;
        if !entry.closed.swap(true, Ordering::SeqCst) {
            let rt = runtime()?;
            crate::exit::track(crate::exit::Removal {
                namespace: entry.session().namespace().to_owned(),
                session: entry.session().id().to_owned(),
                handle: rt.spawn(async move {
                    if let Err(e) = entry.session().close().await {
                        eprintln!("kt: closing freed session {:?}: {e}", entry.id);
                    }
                }),
            });
        }
        Ok(())
    })
}

/// The body of a getter of one of the session's strings.
fn get_string(
    session: *const kt_session,
    out: *mut *const c_char,
    what: &str,
    err: *mut c_char,
    err_len: usize,
    f: impl FnOnce(&Entry) -> Result<*const c_char, Failure>,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(out, what)?;
        let entry = SESSIONS.get(session, "session")?;
        out.write(f(&entry)?);
        Ok(())
    })
}

/// The body of a getter of one of the session's local addresses.
fn get_addr(
    session: *const kt_session,
    addr: *mut kt_addr,
    err: *mut c_char,
    err_len: usize,
    f: impl FnOnce(&Session) -> Result<SocketAddr, Failure>,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(addr, "addr")?;
        let entry = SESSIONS.get(session, "session")?;
        out.write(kt_addr::from_socket(f(entry.open()?)?));
        Ok(())
    })
}

/// The body of `kt_session_forward` and `kt_session_forward_udp`.
///
/// # Safety
///
/// `target` is NULL or a NUL-terminated string.
unsafe fn forward_with(
    session: *const kt_session,
    target: *const c_char,
    port: u16,
    local: *mut kt_addr,
    err: *mut c_char,
    err_len: usize,
    udp: bool,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(local, "local")?;
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let target = unsafe { str_arg(target, "target") }?;
        if port == 0 {
            return Err(Failure::invalid("port 0 is not a port to forward to"));
        }
        let entry = SESSIONS.get(session, "session")?;
        let s = entry.open()?;
        let addr = if udp {
            block_on(s.forward_udp(target, port))??
        } else {
            block_on(s.forward(target, port))??
        };
        out.write(kt_addr::from_socket(addr));
        Ok(())
    })
}

/// Stores in `*id` the session id (the `kt.dev/session` label on its objects).
/// The string belongs to the session (valid until `kt_session_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_id(
    session: *const kt_session,
    id: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    get_string(session, id, "id", err, err_len, |e| Ok(e.id.as_ptr()))
}
/// Stores in `*ns` the namespace the session works in. The string belongs to the
/// session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_namespace(
    session: *const kt_session,
    ns: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    get_string(session, ns, "ns", err, err_len, |e| {
        Ok(e.namespace.as_ptr())
    })
}
/// Stores in `*pod` the shadow pod's name. The string belongs to the session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_pod_name(
    session: *const kt_session,
    pod: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    get_string(session, pod, "pod", err, err_len, |e| Ok(e.pod.as_ptr()))
}
/// Stores in `*server` the cluster DNS server the session queries (as the shadow
/// reaches it). The string belongs to the session. `KT_STATUS_CLOSED` after close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_dns_server(
    session: *const kt_session,
    server: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    get_string(session, server, "server", err, err_len, |e| {
        e.open().map(|_| e.dns_server.as_ptr())
    })
}
/// VPN mode: stores in `*device` the tun device's name. The string belongs to the
/// session. `KT_STATUS_NOT_FOUND` in proxy mode, `KT_STATUS_CLOSED` after close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_vpn_device(
    session: *const kt_session,
    device: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    get_string(session, device, "device", err, err_len, |e| {
        e.open()?;
        e.vpn_device
            .as_ref()
            .map(|d| d.as_ptr())
            .ok_or_else(not_vpn)
    })
}

fn not_vpn() -> Failure {
    Failure::new(
        kt_status::NotFound,
        "the session is in proxy mode; VPN details exist only for a session connected with \
         kt_options_set_vpn",
    )
}

/// Stores in `*addr` the local SOCKS5 proxy (names resolve in the cluster: use it
/// as `socks5h://`). It needs no authentication unless `kt_options_set_proxy_auth`
/// was set; then use `kt_session_socks5_url`, which carries the credentials.
/// `KT_STATUS_CLOSED` after close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_socks5_addr(
    session: *const kt_session,
    addr: *mut kt_addr,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    get_addr(session, addr, err, err_len, |s| Ok(s.socks5_addr()))
}
/// Stores in `*addr` the local HTTP proxy (`CONNECT` and plain `http://`
/// requests). It needs no authentication unless `kt_options_set_proxy_auth` was
/// set; then use `kt_session_http_proxy_url`, which carries the credentials.
/// `KT_STATUS_CLOSED` after close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_http_proxy_addr(
    session: *const kt_session,
    addr: *mut kt_addr,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    get_addr(session, addr, err, err_len, |s| Ok(s.http_proxy_addr()))
}
/// Stores in `*url` the SOCKS5 proxy as a URL: `socks5h://127.0.0.1:<port>`, or
/// `socks5h://<user>:<password>@127.0.0.1:<port>` with `kt_options_set_proxy_auth`
/// (then keep it secret). The string belongs to the session. `KT_STATUS_CLOSED`
/// after close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_socks5_url(
    session: *const kt_session,
    url: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    get_string(session, url, "url", err, err_len, |e| {
        e.open().map(|_| e.socks5_url.as_ptr())
    })
}
/// Stores in `*url` the HTTP proxy as a URL: `http://127.0.0.1:<port>`, or
/// `http://<user>:<password>@127.0.0.1:<port>` with `kt_options_set_proxy_auth`
/// (then keep it secret). The string belongs to the session. `KT_STATUS_CLOSED`
/// after close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_http_proxy_url(
    session: *const kt_session,
    url: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    get_string(session, url, "url", err, err_len, |e| {
        e.open().map(|_| e.http_proxy_url.as_ptr())
    })
}
/// VPN mode: stores in `*addr` the local DNS server (cluster names through the
/// tunnel, the rest to the previous resolver). `KT_STATUS_NOT_FOUND` in proxy
/// mode, `KT_STATUS_CLOSED` after close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_dns_addr(
    session: *const kt_session,
    addr: *mut kt_addr,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    get_addr(session, addr, err, err_len, |s| {
        s.dns_addr().ok_or_else(not_vpn)
    })
}

/// VPN mode: stores in `*mode` the system DNS mode in effect (a `kt_dns_mode`,
/// `KT_DNS_MODE_AUTO` resolved to the real one) and in `*detail` what was changed,
/// in words (a string belonging to the session). `KT_STATUS_NOT_FOUND` in proxy
/// mode, `KT_STATUS_CLOSED` after close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_vpn_dns(
    session: *const kt_session,
    mode: *mut kt_dns_mode,
    detail: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let mode_out = Out::new(mode, "mode")?;
        let detail_out = Out::new(detail, "detail")?;
        let entry = SESSIONS.get(session, "session")?;
        let info = entry.open()?.vpn().ok_or_else(not_vpn)?;
        let text = entry.vpn_dns_detail.as_ref().ok_or_else(not_vpn)?;
        mode_out.write(dns_mode_value(&info.dns_mode));
        detail_out.write(text.as_ptr());
        Ok(())
    })
}

/// VPN mode: stores in `*routes` a new `kt_list` of the ranges routed into the
/// cluster (CIDR text). Free it with `kt_list_free`. `KT_STATUS_NOT_FOUND` in
/// proxy mode, `KT_STATUS_CLOSED` after close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_vpn_routes(
    session: *const kt_session,
    routes: *mut *mut kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(routes, "routes")?;
        let entry = SESSIONS.get(session, "session")?;
        let info = entry.open()?.vpn().ok_or_else(not_vpn)?;
        let texts: Vec<String> = info.routes.iter().map(ToString::to_string).collect();
        out.write(List::values(texts.iter().map(String::as_str)).into_handle());
        Ok(())
    })
}

/// Stores in `*env` a new key/value `kt_list` of environment variables that send a
/// child process's traffic through the session (`HTTP_PROXY`, `HTTPS_PROXY`,
/// `ALL_PROXY`, `NO_PROXY`, their lower-case forms, `NODE_USE_ENV_PROXY`); with
/// `kt_options_set_proxy_auth`, the proxy URLs carry the credentials. Free it
/// with `kt_list_free`. `KT_STATUS_CLOSED` after close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_env(
    session: *const kt_session,
    env: *mut *mut kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(env, "env")?;
        let entry = SESSIONS.get(session, "session")?;
        let vars = entry.open()?.env();
        out.write(List::pairs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))).into_handle());
        Ok(())
    })
}

/// Looks `name` up in the cluster DNS with the search list of a pod in the session's
/// namespace (`web`, `web.other-ns`, `web.other-ns.svc.cluster.local`, ...) and
/// stores in `*addresses` a new `kt_list` of its IP addresses (text). Free it with
/// `kt_list_free`. Blocking. `KT_STATUS_NOT_FOUND` (every name tried is in the
/// message), `KT_STATUS_DNS`, `KT_STATUS_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_resolve(
    session: *const kt_session,
    name: *const c_char,
    addresses: *mut *mut kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(addresses, "addresses")?;
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let name = unsafe { str_arg(name, "name") }?;
        let entry = SESSIONS.get(session, "session")?;
        let s = entry.open()?;
        let ips = block_on(s.resolve(name))??;
        let texts: Vec<String> = ips.iter().map(ToString::to_string).collect();
        out.write(List::values(texts.iter().map(String::as_str)).into_handle());
        Ok(())
    })
}

/// Listens on 127.0.0.1 (a free port, stored in `*local`) and tunnels every TCP
/// connection to `target`'s `port` in the cluster. `target`: a Service name
/// (`web`, `web.other-ns`, `svc/web`), `pod/name` or an IP address; for a Service,
/// `port` is the Service port. The forward lives until the session closes.
/// Blocking. `KT_STATUS_INVALID_ARGUMENT` (bad target), `KT_STATUS_NOT_FOUND`,
/// `KT_STATUS_IO`, `KT_STATUS_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_forward(
    session: *const kt_session,
    target: *const c_char,
    port: u16,
    local: *mut kt_addr,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe { forward_with(session, target, port, local, err, err_len, false) }
}
/// As `kt_session_forward` for UDP: a UDP socket on 127.0.0.1 (stored in
/// `*local`) whose datagrams go to `target`'s UDP `port`, replies back to their
/// sender. Only the kt-shadow flavour relays UDP (`KT_STATUS_UNSUPPORTED`
/// otherwise).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_forward_udp(
    session: *const kt_session,
    target: *const c_char,
    port: u16,
    local: *mut kt_addr,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe { forward_with(session, target, port, local, err, err_len, true) }
}

/// Opens a UDP flow to `target`'s `port` in the cluster without a local socket (see
/// `kt_udp_channel`) and stores it in `*channel`. `target` is written as for
/// `kt_session_forward`. Only the kt-shadow flavour relays UDP
/// (`KT_STATUS_UNSUPPORTED` otherwise). Blocking: the shadow opens its socket at
/// once, so `KT_STATUS_CONNECT` when the pod cannot send there (e.g. the broadcast
/// address), `KT_STATUS_NOT_FOUND` for a name that does not resolve.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_udp_channel(
    session: *const kt_session,
    target: *const c_char,
    port: u16,
    channel: *mut *mut crate::udp::kt_udp_channel,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(channel, "channel")?;
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let target = unsafe { str_arg(target, "target") }?;
        if port == 0 {
            return Err(Failure::invalid("port 0 is not a port to send to"));
        }
        let entry = SESSIONS.get(session, "session")?;
        let chan = block_on(entry.open()?.udp_channel(target, port))??;
        out.write(crate::udp::insert(chan));
        Ok(())
    })
}

/// Waits up to `timeout_ms` milliseconds (0: does not wait) for the session's next
/// event and stores it in `*event` (a new `kt_event`; free it with
/// `kt_event_free`). The first calls return every event since connect began, then
/// new ones; `KT_EVENT_KIND_CLOSED` is the last. Gives `KT_STATUS_TIMEOUT` (and
/// `*event` NULL) when none came in time, and `KT_STATUS_CLOSED` once the closed
/// event was returned. Blocking; calls from several threads take turns, each event
/// goes to one caller.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_next_event(
    session: *const kt_session,
    timeout_ms: u64,
    event: *mut *mut kt_event,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(event, "event")?;
        let entry = SESSIONS.get(session, "session")?;
        out.write(next_event(&entry.events, timeout_ms, "session")?);
        Ok(())
    })
}
