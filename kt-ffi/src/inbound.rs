//! Inbound traffic: `kt_swap` (a workload's traffic in the cluster goes to a local
//! port), `kt_expose` (a new Service whose traffic goes to a local port) and `kt_mesh`
//! (only a Service's requests that match a rule go to a local port), their options,
//! and `kt_clean`/`kt_recover`, which put back what dead sessions left.

use std::ffi::{CString, c_char};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kt_core::{
    CleanReport, Events, Expose, ExposeOptions, Mesh, MeshOptions, MeshRule, PortMap, ServiceType,
    Session, Swap, SwapMode, SwapOptions,
};

use crate::event::{EventStream, kt_event, next_event};
use crate::handle::Table;
use crate::list::{List, kt_list};
use crate::options::{kt_options, snapshot};
use crate::session::{kt_session, with_open};
use crate::status::{Failure, Out, cstring, guard, handle_out, kt_status, str_arg};
use crate::{block_on, runtime};

/// How `kt_session_swap` takes the traffic: the mode, the local-port check, the
/// restore TTL. Made by `kt_swap_options_new` with the defaults (selector mode, local
/// ports checked, 30 s); each `kt_swap_options_set_*` changes one setting.
///
/// Owned by the caller: free it with `kt_swap_options_free` (a swap made with it does
/// not need it any more).
///
/// Thread-safety: as `kt_options`.
pub struct kt_swap_options {
    _private: [u8; 0],
}

/// How `kt_session_expose` makes its Service: the type, the local-port check. Made
/// by `kt_expose_options_new` with the defaults (ClusterIP, local ports checked).
///
/// Owned by the caller: free it with `kt_expose_options_free`.
///
/// Thread-safety: as `kt_options`.
pub struct kt_expose_options {
    _private: [u8; 0],
}

/// How `kt_session_mesh` routes: the local-port check, the restore TTL. Made by
/// `kt_mesh_options_new` with the defaults (local ports checked, 30 s).
///
/// Owned by the caller: free it with `kt_mesh_options_free`.
///
/// Thread-safety: as `kt_options`.
pub struct kt_mesh_options {
    _private: [u8; 0],
}

/// A swap in progress, made by `kt_session_swap`: connections to the target's ports
/// in the cluster arrive at local ports here.
///
/// Owned by the caller: `kt_swap_close` puts the cluster back exactly (selector or
/// replica count; a value someone else changed meanwhile is left and reported as a
/// `KT_EVENT_KIND_RESTORE_CONFLICT` event) and waits until the original pods serve
/// again; then `kt_swap_free` releases the handle. Freeing a swap that is not closed
/// starts the restore in the background; when the program exits normally libkt waits
/// for it (with the sessions, up to 30 s). If the process dies, the swap shadow puts
/// the cluster back by itself once the restore TTL passes without a heartbeat.
/// Close the swap before its session.
///
/// Thread-safety: as `kt_session`. Strings it hands out stay valid until
/// `kt_swap_free`.
pub struct kt_swap {
    _private: [u8; 0],
}

/// A preview in progress, made by `kt_session_expose`: a new Service in the cluster
/// whose connections arrive at local ports here.
///
/// Owned by the caller: `kt_expose_close` removes the Service and its shadow (and
/// waits), then `kt_expose_free` releases the handle; otherwise as `kt_swap`.
///
/// Thread-safety: as `kt_session`. Strings it hands out stay valid until
/// `kt_expose_free`.
pub struct kt_expose {
    _private: [u8; 0],
}

/// A developer's place in a meshed Service, made by `kt_session_mesh`: the Service's
/// requests that match the mesh's rule (by default a header `version` with a random
/// value: `kt_mesh_header_name`, `kt_mesh_header_value`) arrive at local ports here;
/// every other request goes to the Service's original pods.
///
/// Owned by the caller: `kt_mesh_close` removes this developer's rule and shadow (the
/// last developer's close also puts the Service back exactly, waits until its
/// original pods serve it, and removes the router); then `kt_mesh_free` releases the
/// handle. Otherwise as `kt_swap` (freed unclosed: closed in the background and
/// waited for at a normal exit; the process died: the rule goes once the restore TTL
/// passes without a heartbeat).
///
/// Thread-safety: as `kt_session`. Strings it hands out stay valid until
/// `kt_mesh_free`.
pub struct kt_mesh {
    _private: [u8; 0],
}

/// How a swap takes a workload's traffic (`kt_swap_options_set_mode`, `kt_swap_mode`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kt_swap_mode {
    /// The Services that select the target select the swap shadow instead; the
    /// workload keeps running. The default.
    Selector = 0,
    /// The swap shadow carries the workload's pod labels and the workload is scaled to
    /// 0 (refused for a workload under a HorizontalPodAutoscaler).
    Scale = 1,
}

/// Each `kt_swap_mode` and kt-core's spelling of it (read with `SwapMode`'s `FromStr`).
const SWAP_MODES: [(kt_swap_mode, &str); 2] = [
    (kt_swap_mode::Selector, "selector"),
    (kt_swap_mode::Scale, "scale"),
];

/// The type of the Service `kt_session_expose` makes
/// (`kt_expose_options_set_service_type`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kt_service_type {
    /// Reachable inside the cluster. The default.
    ClusterIp = 0,
    /// Also on a port of every node.
    NodePort = 1,
    /// Also through the cluster's load balancer, where it has one.
    LoadBalancer = 2,
}

/// Each `kt_service_type` and kt-core's spelling of it.
const SERVICE_TYPES: [(kt_service_type, &str); 3] = [
    (kt_service_type::ClusterIp, "ClusterIP"),
    (kt_service_type::NodePort, "NodePort"),
    (kt_service_type::LoadBalancer, "LoadBalancer"),
];

static SWAP_OPTIONS: Table<Mutex<SwapOptions>> = Table::new(7, "kt_swap_options_new");
static EXPOSE_OPTIONS: Table<Mutex<ExposeOptions>> = Table::new(8, "kt_expose_options_new");
static SWAPS: Table<Entry<Swap>> = Table::new(9, "kt_session_swap");
static EXPOSES: Table<Entry<Expose>> = Table::new(10, "kt_session_expose");
static MESH_OPTIONS: Table<Mutex<MeshOptions>> = Table::new(11, "kt_mesh_options_new");
static MESHES: Table<Entry<Mesh>> = Table::new(12, "kt_session_mesh");

/// What C reads of a swap, an expose or a mesh.
trait Inbound: Send + Sync + 'static {
    /// What C reads of this kind only, kept as C hands it out.
    type Extra: Send + Sync + 'static;
    fn id(&self) -> &str;
    /// The swap's target (`deploy/web`), the exposed or meshed Service's name.
    fn name(&self) -> &str;
    fn pod_name(&self) -> &str;
    fn ports(&self) -> Vec<(u16, u16)>;
    fn connections(&self) -> u64;
    fn events(&self) -> Events;
    fn extra(&self) -> Self::Extra;
    fn close(&self) -> impl Future<Output = kt_core::Result<()>> + Send;
}

/// A C handle type of a swap, an expose or a mesh.
trait Handle: 'static {
    type Inbound: Inbound;
    /// What the C API calls a parameter of this type (`swap`), for messages.
    const WHAT: &'static str;
    /// The live handles of this type.
    fn table() -> &'static Table<Entry<Self::Inbound>>;
}

/// Implements `Inbound` for the kt-core type `$kind` (its own methods of the same
/// names; `$name` gives `Inbound::name`, `$extra` makes the `Extra`) and `Handle` for
/// its C type `$c` (live in `$table`, called `$what`).
macro_rules! inbound {
    ($kind:ident, $name:ident, $extra:ty, $make_extra:expr, $c:ident, $table:ident, $what:literal) => {
        impl Inbound for $kind {
            type Extra = $extra;
            fn id(&self) -> &str {
                $kind::id(self)
            }
            fn name(&self) -> &str {
                $kind::$name(self)
            }
            fn pod_name(&self) -> &str {
                $kind::pod_name(self)
            }
            fn ports(&self) -> Vec<(u16, u16)> {
                $kind::ports(self)
            }
            fn connections(&self) -> u64 {
                $kind::connections(self)
            }
            fn events(&self) -> Events {
                $kind::events(self)
            }
            fn extra(&self) -> $extra {
                $make_extra(self)
            }
            fn close(&self) -> impl Future<Output = kt_core::Result<()>> + Send {
                $kind::close(self)
            }
        }

        impl Handle for $c {
            type Inbound = $kind;
            const WHAT: &'static str = $what;
            fn table() -> &'static Table<Entry<$kind>> {
                &$table
            }
        }
    };
}

inbound! { Swap, target, SwapExtra, SwapExtra::of, kt_swap, SWAPS, "swap" }
inbound! { Expose, service, (), |_: &Expose| (), kt_expose, EXPOSES, "expose" }
inbound! { Mesh, service, MeshExtra, MeshExtra::of, kt_mesh, MESHES, "mesh" }

/// A C handle type of the options of a swap, an expose or a mesh.
trait OptionsHandle: 'static {
    type Options: Clone + Send + 'static;
    /// The live handles of this type.
    fn table() -> &'static Table<Mutex<Self::Options>>;
    /// The options of a NULL handle and of a new one.
    fn defaults() -> Self::Options;
}

/// Implements `OptionsHandle` for the C type `$c` of kt-core's `$options` (live in
/// `$table`).
macro_rules! options_handle {
    ($c:ident, $options:ident, $table:ident) => {
        impl OptionsHandle for $c {
            type Options = $options;
            fn table() -> &'static Table<Mutex<$options>> {
                &$table
            }
            fn defaults() -> $options {
                $options::new()
            }
        }
    };
}

options_handle!(kt_swap_options, SwapOptions, SWAP_OPTIONS);
options_handle!(kt_expose_options, ExposeOptions, EXPOSE_OPTIONS);
options_handle!(kt_mesh_options, MeshOptions, MESH_OPTIONS);

/// What C reads of a swap only.
struct SwapExtra {
    /// The Services that select the target.
    services: Vec<String>,
    mode: kt_swap_mode,
}

impl SwapExtra {
    fn of(swap: &Swap) -> SwapExtra {
        let mode = match swap.mode() {
            SwapMode::Scale => kt_swap_mode::Scale,
            _ => kt_swap_mode::Selector,
        };
        SwapExtra {
            services: swap.services().to_vec(),
            mode,
        }
    }
}

/// What C reads of a mesh only.
struct MeshExtra {
    rule: CString,
    router: CString,
    /// The header to send, `(name, value)`; `None` for a rule without a
    /// header-equality clause.
    header: Option<(CString, CString)>,
}

impl MeshExtra {
    fn of(mesh: &Mesh) -> MeshExtra {
        MeshExtra {
            rule: cstring(&mesh.rule().to_string()),
            router: cstring(mesh.router()),
            header: mesh.header().map(|(n, v)| (cstring(n), cstring(v))),
        }
    }

    /// The header's name or value, or why there is none.
    fn header_part(&self, value: bool) -> Result<*const c_char, Failure> {
        let (n, v) = self.header.as_ref().ok_or_else(|| {
            Failure::new(
                kt_status::NotFound,
                format!(
                    "the mesh's rule `{}` has no header-equality clause (only regexes or path \
                     prefixes): send requests its rule matches (kt_mesh_rule)",
                    self.rule.to_string_lossy()
                ),
            )
        })?;
        Ok(if value { v.as_ptr() } else { n.as_ptr() })
    }
}

/// A swap, an expose or a mesh as C sees it.
struct Entry<T: Inbound> {
    /// Always `Some` until dropped.
    handle: Option<T>,
    id: CString,
    /// The swap's target (`deploy/web`), the exposed or meshed Service's name.
    name: CString,
    pod: CString,
    extra: T::Extra,
    namespace: String,
    events: tokio::sync::Mutex<EventStream>,
    closed: AtomicBool,
}

impl<T: Inbound> Entry<T> {
    fn new(handle: T, namespace: String) -> Self {
        Entry {
            id: cstring(handle.id()),
            name: cstring(handle.name()),
            pod: cstring(handle.pod_name()),
            extra: handle.extra(),
            namespace,
            events: EventStream::new(handle.events()),
            closed: AtomicBool::new(false),
            handle: Some(handle),
        }
    }

    fn get(&self) -> &T {
        self.handle.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl<T: Inbound> Drop for Entry<T> {
    fn drop(&mut self) {
        // kt-core puts back an unclosed swap on a task of the runtime it is dropped
        // in: enter ours, whichever thread drops the last reference.
        let guard = runtime().ok().map(|rt| rt.enter());
        drop(self.handle.take());
        drop(guard);
    }
}

/// The ports text of the C API: a comma-separated list of `local[:remote]`.
fn ports_arg(ports: *const c_char) -> Result<Vec<PortMap>, Failure> {
    // SAFETY: the caller passes a NUL-terminated string or NULL.
    let text = unsafe { str_arg(ports, "ports") }?;
    Ok(PortMap::parse_list([text])?)
}

/// `(local, remote)` pairs as `local:remote` texts.
fn port_texts(ports: &[(u16, u16)]) -> List {
    let texts: Vec<String> = ports.iter().map(|(l, r)| format!("{l}:{r}")).collect();
    List::values(texts.iter().map(String::as_str))
}

/// The options behind `options`, or the defaults for NULL.
fn options_or_defaults<H: OptionsHandle>(options: *const H) -> Result<H::Options, Failure> {
    if options.is_null() {
        return Ok(H::defaults());
    }
    let entry = H::table().get(options, "options")?;
    let opts = entry.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(opts.clone())
}

/// The rest of `kt_session_swap`, `_expose` and `_mesh`: starts the swap, expose or
/// mesh with `start` on the open session behind `session` and stores its new handle.
fn open<H: Handle>(
    session: *const kt_session,
    out: Out<*mut H>,
    start: impl FnOnce(&Session) -> Result<H::Inbound, Failure>,
) -> Result<(), Failure> {
    let namespace = with_open(session, |s| Ok(s.namespace().to_owned()))?;
    let inbound = with_open(session, start)?;
    out.write(H::table().insert(Entry::new(inbound, namespace)));
    crate::exit::arm();
    Ok(())
}

/// Takes over the traffic of `target` in the cluster (`deploy/NAME`, `sts/NAME`,
/// `svc/NAME`, or a bare name: a Service of that name, else a Deployment, else a
/// StatefulSet): connections to its ports arrive at local ports here until
/// `kt_swap_close`. `ports` is a comma-separated list of `local[:remote]`
/// (`"8080:80,9090"`; remote: a Service port, container port or port name of the
/// target, default the same number as local). `options` may be NULL (the defaults of
/// `kt_swap_options_new`). Stores the new swap in `*swap` (NULL on failure). Blocking
/// until the swap shadow serves and the selector or replica count is switched.
///
/// Nothing in the cluster changes when it fails: `KT_STATUS_NOT_FOUND` (no such
/// target), `KT_STATUS_INVALID_ARGUMENT` (bad ports, a port the target lacks),
/// `KT_STATUS_CONNECT` (nothing listens on a local port; see
/// `kt_swap_options_set_check_local`), `KT_STATUS_CONFLICT` (another live session
/// holds the target; the message names it and since when), `KT_STATUS_FORBIDDEN`,
/// `KT_STATUS_CLOSED` (the session is closed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_swap(
    session: *const kt_session,
    target: *const c_char,
    ports: *const c_char,
    options: *const kt_swap_options,
    swap: *mut *mut kt_swap,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(swap, "swap")?;
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let target = unsafe { str_arg(target, "target") }?;
        let ports = ports_arg(ports)?;
        let opts = options_or_defaults(options)?;
        open(session, out, |s| {
            Ok(block_on(s.swap_with(target, &ports, opts))??)
        })
    })
}

/// Makes a new Service `name` (it must not exist) whose connections arrive at local
/// ports here until `kt_expose_close`. `ports` is a comma-separated list of
/// `local[:remote]` (remote: the Service's port, default the same number as local).
/// `options` may be NULL (a ClusterIP Service, local ports checked). Stores the new
/// expose in `*expose` (NULL on failure). Blocking.
///
/// `KT_STATUS_CONFLICT` when a Service of that name exists, `KT_STATUS_CONNECT` when
/// nothing listens on a local port, `KT_STATUS_INVALID_ARGUMENT` (bad name or ports),
/// `KT_STATUS_FORBIDDEN`, `KT_STATUS_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_expose(
    session: *const kt_session,
    name: *const c_char,
    ports: *const c_char,
    options: *const kt_expose_options,
    expose: *mut *mut kt_expose,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(expose, "expose")?;
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let name = unsafe { str_arg(name, "name") }?;
        let ports = ports_arg(ports)?;
        let opts = options_or_defaults(options)?;
        open(session, out, |s| {
            Ok(block_on(s.expose_with(name, &ports, opts))??)
        })
    })
}

/// Meshes `target` (`svc/NAME`, or a workload or bare name one Service selects, as
/// for `kt_session_swap`): the Service's requests that match `rule` arrive at local
/// ports here until `kt_mesh_close`; every other request still goes to its original
/// pods. `rule` is a text such as `"version=alice"` (kt-connect's `"version:alice"`
/// too), `"x-dev~^a.*"` (a header matching a regex), `"/api"` (a path prefix), joined
/// by `&&` or `||`; NULL gives kt-connect's mark, a header `version` with a random
/// value (`kt_mesh_header_name`/`kt_mesh_header_value` say what to send). `ports` as
/// for `kt_session_swap`. `options` may be NULL (the defaults of
/// `kt_mesh_options_new`). Stores the new mesh in `*mesh` (NULL on failure).
/// Blocking until the router routes the rule here. Several developers (programs,
/// machines) mesh one Service at once, each with their own rule.
///
/// `KT_STATUS_CONFLICT` when another developer already routes the same header value
/// (the message names them and since when), `KT_STATUS_INVALID_ARGUMENT` (a bad
/// rule or ports, a target no single Service selects), `KT_STATUS_NOT_FOUND`,
/// `KT_STATUS_CONNECT` (nothing listens on a local port), `KT_STATUS_FORBIDDEN`,
/// `KT_STATUS_CLOSED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_session_mesh(
    session: *const kt_session,
    target: *const c_char,
    rule: *const c_char,
    ports: *const c_char,
    options: *const kt_mesh_options,
    mesh: *mut *mut kt_mesh,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(mesh, "mesh")?;
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let target = unsafe { str_arg(target, "target") }?;
        let rule: Option<MeshRule> = if rule.is_null() {
            None
        } else {
            // SAFETY: the caller passes a NUL-terminated string (not NULL here).
            Some(unsafe { str_arg(rule, "rule") }?.parse()?)
        };
        let ports = ports_arg(ports)?;
        let opts = options_or_defaults(options)?;
        open(session, out, |s| {
            Ok(block_on(s.mesh_with(target, rule, &ports, opts))??)
        })
    })
}

// ---- options ----

/// Makes a `kt_swap_options` with the defaults (selector mode, local ports checked,
/// restore TTL 30 s) and stores it in `*options`. Free it with `kt_swap_options_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_options_new(
    options: *mut *mut kt_swap_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || new_options(options))
}

/// Frees `options`. Freeing it twice gives `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_options_free(
    options: *mut kt_swap_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || free_options(options))
}

/// The body of `kt_swap_options_new`, `kt_expose_options_new`, `kt_mesh_options_new`.
fn new_options<H: OptionsHandle>(options: *mut *mut H) -> Result<(), Failure> {
    let out = handle_out(options, "options")?;
    out.write(H::table().insert(Mutex::new(H::defaults())));
    Ok(())
}

/// The body of `kt_swap_options_free`, `kt_expose_options_free`, `kt_mesh_options_free`.
fn free_options<H: OptionsHandle>(options: *mut H) -> Result<(), Failure> {
    H::table().remove(options, "options")?;
    Ok(())
}

/// Changes the options behind `options` with `f`.
fn update<H: OptionsHandle>(
    options: *mut H,
    f: impl FnOnce(H::Options) -> H::Options,
) -> Result<(), Failure> {
    let entry = H::table().get(options, "options")?;
    let mut opts = entry.lock().unwrap_or_else(PoisonError::into_inner);
    *opts = f(opts.clone());
    Ok(())
}

/// The mode: a `kt_swap_mode` value. Any other number gives
/// `KT_STATUS_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_options_set_mode(
    options: *mut kt_swap_options,
    mode: u32,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let mode = SWAP_MODES
            .iter()
            .find(|(c, _)| *c as u32 == mode)
            .map(|(_, spelling)| spelling.parse::<SwapMode>())
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "{mode} is not a kt_swap_mode; use KT_SWAP_MODE_SELECTOR (0) or \
                     KT_SWAP_MODE_SCALE (1)"
                ))
            })??;
        update(options, |o| o.mode(mode))
    })
}

/// Whether `kt_session_swap` refuses (`KT_STATUS_CONNECT`) when nothing listens on a
/// local port (default true). Turn it off to start the local process after the swap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_options_set_check_local(
    options: *mut kt_swap_options,
    check: bool,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || update(options, |o| o.check_local(check)))
}

/// How long after the last heartbeat the swap shadow puts the cluster back by
/// itself (this process died), in milliseconds (default 30 000; a value below 3 000
/// is raised to 3 000; at most 30 days). 0 gives `KT_STATUS_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_options_set_restore_ttl_ms(
    options: *mut kt_swap_options,
    millis: u64,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let ttl = restore_ttl(millis)?;
        update(options, |o| o.restore_ttl(ttl))
    })
}

/// A restore TTL in milliseconds as C gives it: 0 and more than 30 days are refused.
fn restore_ttl(millis: u64) -> Result<Duration, Failure> {
    const MAX_MILLIS: u64 = 30 * 24 * 3600 * 1000;
    if millis == 0 || millis > MAX_MILLIS {
        return Err(Failure::invalid(format!(
            "a restore TTL of {millis} ms is not accepted; give 3000 to {MAX_MILLIS} ms"
        )));
    }
    Ok(Duration::from_millis(millis))
}

/// Makes a `kt_expose_options` with the defaults (a ClusterIP Service, local ports
/// checked) and stores it in `*options`. Free it with `kt_expose_options_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_options_new(
    options: *mut *mut kt_expose_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || new_options(options))
}

/// Frees `options`. Freeing it twice gives `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_options_free(
    options: *mut kt_expose_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || free_options(options))
}

/// The Service's type: a `kt_service_type` value. Any other number gives
/// `KT_STATUS_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_options_set_service_type(
    options: *mut kt_expose_options,
    service_type: u32,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let t = SERVICE_TYPES
            .iter()
            .find(|(c, _)| *c as u32 == service_type)
            .map(|(_, spelling)| spelling.parse::<ServiceType>())
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "{service_type} is not a kt_service_type; use KT_SERVICE_TYPE_CLUSTER_IP \
                     (0), KT_SERVICE_TYPE_NODE_PORT (1) or KT_SERVICE_TYPE_LOAD_BALANCER (2)"
                ))
            })??;
        update(options, |o| o.service_type(t))
    })
}

/// Whether `kt_session_expose` refuses (`KT_STATUS_CONNECT`) when nothing listens on
/// a local port (default true).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_options_set_check_local(
    options: *mut kt_expose_options,
    check: bool,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || update(options, |o| o.check_local(check)))
}

/// Makes a `kt_mesh_options` with the defaults (local ports checked, restore TTL
/// 30 s) and stores it in `*options`. Free it with `kt_mesh_options_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_options_new(
    options: *mut *mut kt_mesh_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || new_options(options))
}

/// Frees `options`. Freeing it twice gives `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_options_free(
    options: *mut kt_mesh_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || free_options(options))
}

/// Whether `kt_session_mesh` refuses (`KT_STATUS_CONNECT`) when nothing listens on a
/// local port (default true).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_options_set_check_local(
    options: *mut kt_mesh_options,
    check: bool,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || update(options, |o| o.check_local(check)))
}

/// How long after the last heartbeat this developer's rule is removed by itself
/// (this process died; the last developer's also puts the Service back), in
/// milliseconds; as `kt_swap_options_set_restore_ttl_ms`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_options_set_restore_ttl_ms(
    options: *mut kt_mesh_options,
    millis: u64,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let ttl = restore_ttl(millis)?;
        update(options, |o| o.restore_ttl(ttl))
    })
}

// ---- swap, expose and mesh handles: shared bodies ----

/// The entry behind `handle`.
fn entry<H: Handle>(handle: *const H) -> Result<Arc<Entry<H::Inbound>>, Failure> {
    H::table().get(handle, H::WHAT)
}

/// Stores in `*out` the string of the entry behind `handle` that `f` picks.
fn get_string<H: Handle>(
    handle: *const H,
    out: *mut *const c_char,
    what: &str,
    f: impl FnOnce(&Entry<H::Inbound>) -> &CString,
) -> Result<(), Failure> {
    let out = Out::new(out, what)?;
    let entry = entry(handle)?;
    out.write(f(&entry).as_ptr());
    Ok(())
}

fn get_ports<H: Handle>(handle: *const H, ports: *mut *mut kt_list) -> Result<(), Failure> {
    let out = handle_out(ports, "ports")?;
    let entry = entry(handle)?;
    out.write(port_texts(&entry.get().ports()).into_handle());
    Ok(())
}

fn get_connections<H: Handle>(handle: *const H, count: *mut u64) -> Result<(), Failure> {
    let out = Out::new(count, "count")?;
    let entry = entry(handle)?;
    out.write(entry.get().connections());
    Ok(())
}

fn get_next_event<H: Handle>(
    handle: *const H,
    timeout_ms: u64,
    event: *mut *mut kt_event,
) -> Result<(), Failure> {
    let out = handle_out(event, "event")?;
    let entry = entry(handle)?;
    out.write(next_event(&entry.events, timeout_ms, H::WHAT)?);
    Ok(())
}

fn close<H: Handle>(handle: *const H) -> Result<(), Failure> {
    let entry = entry(handle)?;
    entry.closed.store(true, Ordering::SeqCst);
    block_on(entry.get().close())??;
    Ok(())
}

fn free<H: Handle>(handle: *const H) -> Result<(), Failure> {
    let entry = H::table().remove(handle, H::WHAT)?;
    if !entry.closed.swap(true, Ordering::SeqCst) {
        let what = format!("freed {} {:?}", H::WHAT, entry.id);
        crate::exit::track(close_later(runtime()?, entry, what));
    }
    Ok(())
}

/// Starts closing `entry` on `rt`; a failure is printed after `kt: closing {what}`.
fn close_later<T: Inbound>(
    rt: &tokio::runtime::Runtime,
    entry: Arc<Entry<T>>,
    what: String,
) -> crate::exit::Removal {
    crate::exit::Removal {
        namespace: entry.namespace.clone(),
        session: entry.get().id().to_owned(),
        handle: rt.spawn(async move {
            if let Err(e) = entry.get().close().await {
                eprintln!("kt: closing {what}: {e}");
            }
        }),
    }
}

/// Starts closing every swap, expose and mesh that is neither closed nor freed (for the
/// exit handler); returns the closes to wait for.
pub(crate) fn close_all_open(rt: &tokio::runtime::Runtime) -> Vec<crate::exit::Removal> {
    fn start<T: Inbound>(
        table: &Table<Entry<T>>,
        rt: &tokio::runtime::Runtime,
    ) -> Vec<crate::exit::Removal> {
        table
            .values()
            .into_iter()
            .filter(|entry| !entry.closed.swap(true, Ordering::SeqCst))
            .map(|entry| {
                let what = format!("{:?} at exit", entry.id);
                close_later(rt, entry, what)
            })
            .collect()
    }
    let mut all = start(&SWAPS, rt);
    all.extend(start(&EXPOSES, rt));
    all.extend(start(&MESHES, rt));
    all
}

// ---- kt_swap ----

/// Stores in `*id` the swap's id (the `kt.dev/session` label of its objects). The
/// string belongs to the swap (valid until `kt_swap_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_id(
    swap: *const kt_swap,
    id: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_string(swap, id, "id", |e| &e.id))
}

/// Stores in `*target` the target as resolved (`deploy/web`, `svc/web`). The string
/// belongs to the swap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_target(
    swap: *const kt_swap,
    target: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        get_string(swap, target, "target", |e| &e.name)
    })
}

/// Stores in `*mode` the mode the swap runs in.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_get_mode(
    swap: *const kt_swap,
    mode: *mut kt_swap_mode,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(mode, "mode")?;
        out.write(entry(swap)?.extra.mode);
        Ok(())
    })
}

/// Stores in `*pod` the swap shadow pod's name. The string belongs to the swap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_pod_name(
    swap: *const kt_swap,
    pod: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_string(swap, pod, "pod", |e| &e.pod))
}

/// Stores in `*services` a new `kt_list` of the Services that select the target (in
/// selector mode, those switched to the swap shadow). Free it with `kt_list_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_services(
    swap: *const kt_swap,
    services: *mut *mut kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(services, "services")?;
        let entry = entry(swap)?;
        out.write(List::values(entry.extra.services.iter().map(String::as_str)).into_handle());
        Ok(())
    })
}

/// Stores in `*ports` a new `kt_list` with one `local:remote` text per port
/// (`"8080:80"`: connections to the shadow's port 80 arrive at 127.0.0.1:8080).
/// Free it with `kt_list_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_ports(
    swap: *const kt_swap,
    ports: *mut *mut kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_ports(swap, ports))
}

/// Stores in `*count` how many connections arrived from the cluster so far (each is
/// also a `KT_EVENT_KIND_INBOUND` event naming who connected).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_connections(
    swap: *const kt_swap,
    count: *mut u64,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_connections(swap, count))
}

/// As `kt_session_next_event` for the swap's events (from its start: listening,
/// selector switched or scaled, inbound connections, then closing, restored,
/// closed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_next_event(
    swap: *const kt_swap,
    timeout_ms: u64,
    event: *mut *mut kt_event,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_next_event(swap, timeout_ms, event))
}

/// Puts the cluster back as it was (selector or replica count), waits until the
/// original pods serve again, then removes the swap shadow and its identity.
/// Blocking. Calling it again does nothing and gives `KT_STATUS_OK`.
/// `KT_STATUS_CLEANUP` names what could not be removed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_close(
    swap: *mut kt_swap,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || close(swap))
}

/// Frees `swap`. If it was not closed, the cluster is put back in the background
/// (not waited for here; libkt waits at a normal exit). Freeing it twice gives
/// `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_swap_free(
    swap: *mut kt_swap,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || free(swap))
}

// ---- kt_expose ----

/// Stores in `*id` the expose's id (the `kt.dev/session` label of its objects). The
/// string belongs to the expose (valid until `kt_expose_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_id(
    expose: *const kt_expose,
    id: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_string(expose, id, "id", |e| &e.id))
}

/// Stores in `*service` the name of the Service it made. The string belongs to the
/// expose.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_service(
    expose: *const kt_expose,
    service: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        get_string(expose, service, "service", |e| &e.name)
    })
}

/// Stores in `*pod` the expose shadow pod's name. The string belongs to the expose.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_pod_name(
    expose: *const kt_expose,
    pod: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_string(expose, pod, "pod", |e| &e.pod))
}

/// As `kt_swap_ports`: one `local:remote` text per port of the Service.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_ports(
    expose: *const kt_expose,
    ports: *mut *mut kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_ports(expose, ports))
}

/// As `kt_swap_connections`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_connections(
    expose: *const kt_expose,
    count: *mut u64,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_connections(expose, count))
}

/// As `kt_session_next_event` for the expose's events (listening, service
/// created, inbound connections, closing, closed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_next_event(
    expose: *const kt_expose,
    timeout_ms: u64,
    event: *mut *mut kt_event,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_next_event(expose, timeout_ms, event))
}

/// Removes the Service and the expose shadow and waits until they are gone.
/// Blocking. Calling it again does nothing and gives `KT_STATUS_OK`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_close(
    expose: *mut kt_expose,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || close(expose))
}

/// Frees `expose`. If it was not closed, its objects are removed in the background.
/// Freeing it twice gives `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_expose_free(
    expose: *mut kt_expose,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || free(expose))
}

// ---- kt_mesh ----

/// Stores in `*id` the mesh's id (the `kt.dev/session` label of this developer's
/// shadow). The string belongs to the mesh (valid until `kt_mesh_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_id(
    mesh: *const kt_mesh,
    id: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_string(mesh, id, "id", |e| &e.id))
}

/// Stores in `*service` the meshed Service's name. The string belongs to the mesh.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_service(
    mesh: *const kt_mesh,
    service: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        get_string(mesh, service, "service", |e| &e.name)
    })
}

/// Stores in `*rule` the mesh's rule in its canonical text (`version=alice`). The
/// string belongs to the mesh.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_rule(
    mesh: *const kt_mesh,
    rule: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        get_string(mesh, rule, "rule", |e| &e.extra.rule)
    })
}

/// Stores in `*name` the name of the header to send for a request to come here (the
/// rule's first header-equality clause; `version` for the default rule). The string
/// belongs to the mesh. `KT_STATUS_NOT_FOUND` (and NULL) for a rule of only regexes
/// and path prefixes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_header_name(
    mesh: *const kt_mesh,
    name: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || mesh_header(mesh, name, "name", false))
}

/// Stores in `*value` the value of that header (the random mark of the default
/// rule). As `kt_mesh_header_name`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_header_value(
    mesh: *const kt_mesh,
    value: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || mesh_header(mesh, value, "value", true))
}

/// The body of `kt_mesh_header_name` and `kt_mesh_header_value`: NULL is stored
/// when there is no header (or no such mesh).
fn mesh_header(
    mesh: *const kt_mesh,
    out: *mut *const c_char,
    what: &str,
    value: bool,
) -> Result<(), Failure> {
    let out = Out::new(out, what)?;
    let part = entry(mesh).and_then(|entry| entry.extra.header_part(value));
    out.write(*part.as_ref().unwrap_or(&std::ptr::null()));
    part.map(|_| ())
}

/// Stores in `*router` the router pod's name (shared by every developer of the
/// Service). The string belongs to the mesh.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_router(
    mesh: *const kt_mesh,
    router: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        get_string(mesh, router, "router", |e| &e.extra.router)
    })
}

/// Stores in `*pod` this developer's mesh shadow pod's name. The string belongs to
/// the mesh.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_pod_name(
    mesh: *const kt_mesh,
    pod: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_string(mesh, pod, "pod", |e| &e.pod))
}

/// As `kt_swap_ports`: one `local:remote` text per port (matching requests to the
/// Service's pods' port `remote` arrive at 127.0.0.1:`local`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_ports(
    mesh: *const kt_mesh,
    ports: *mut *mut kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_ports(mesh, ports))
}

/// Stores in `*count` how many connections arrived from the router so far.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_connections(
    mesh: *const kt_mesh,
    count: *mut u64,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_connections(mesh, count))
}

/// As `kt_session_next_event` for the mesh's events (listening, routed, inbound
/// connections, then closing, restored when it was the last developer, closed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_next_event(
    mesh: *const kt_mesh,
    timeout_ms: u64,
    event: *mut *mut kt_event,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || get_next_event(mesh, timeout_ms, event))
}

/// Removes this developer's rule and shadow; the last developer's close also puts
/// the Service back, waits until its original pods serve it again and removes the
/// router. Blocking. Calling it again does nothing and gives `KT_STATUS_OK`.
/// `KT_STATUS_CLEANUP` names what could not be removed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_close(
    mesh: *mut kt_mesh,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || close(mesh))
}

/// Frees `mesh`. If it was not closed, it is closed in the background (libkt waits
/// at a normal exit). Freeing it twice gives `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_mesh_free(
    mesh: *mut kt_mesh,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || free(mesh))
}

// ---- clean and recover ----

/// A report as a key/value list: the key says what the line is (`done`, `would do`
/// in a dry run, `left`), the value what, in words.
fn report_list(report: &CleanReport) -> List {
    let verb = if report.dry_run { "would do" } else { "done" };
    List::pairs(
        report
            .actions
            .iter()
            .map(|a| (verb, a.as_str()))
            .chain(report.left.iter().map(|l| ("left", l.as_str()))),
    )
}

/// Puts back and removes what kt sessions that died left in the namespace of
/// `options` (selectors and replica counts they changed, shadow pods whose Lease
/// expired, their identities and Services); live sessions are left alone. With
/// `dry_run`, changes nothing and only lists what it would do.
///
/// On success, `*report` is a new key/value `kt_list`, one item per line: the key is
/// `"done"` (`"would do"` in a dry run) or `"left"` (found but left alone, and why),
/// the value says what, in words; empty when there was nothing to clean. Free it with
/// `kt_list_free`. Blocking. `KT_STATUS_FORBIDDEN`, `KT_STATUS_UNREACHABLE`,
/// `KT_STATUS_CONFIG`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_clean(
    options: *const kt_options,
    dry_run: bool,
    report: *mut *mut kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(report, "report")?;
        let opts = snapshot(options)?;
        let r = block_on(kt_core::clean(&opts, dry_run))??;
        out.write(report_list(&r).into_handle());
        Ok(())
    })
}

/// Puts back one swap `target` (written as for `kt_session_swap`) that a kt session
/// which died left changed, in the namespace of `options`. With `dry_run`, only
/// lists what it would do. `*report` as for `kt_clean`. Blocking.
/// `KT_STATUS_CONFLICT` while a live session holds the target, `KT_STATUS_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_recover(
    options: *const kt_options,
    target: *const c_char,
    dry_run: bool,
    report: *mut *mut kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(report, "report")?;
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let target = unsafe { str_arg(target, "target") }?;
        let opts = snapshot(options)?;
        let r = block_on(kt_core::recover(&opts, target, dry_run))??;
        out.write(report_list(&r).into_handle());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_c_swap_mode_and_service_type_is_read_by_kt_core() {
        for (c, spelling) in SWAP_MODES {
            let mode: SwapMode = spelling.parse().expect(spelling);
            assert_eq!(mode.as_str(), spelling, "{c:?}");
        }
        for (c, spelling) in SERVICE_TYPES {
            let t: ServiceType = spelling.parse().expect(spelling);
            assert_eq!(t.as_str(), spelling, "{c:?}");
        }
    }

    /// The key and value of every item of `list`, read through the C functions.
    fn items(list: *mut kt_list) -> Vec<(String, String)> {
        let text = |p: *const c_char| {
            // SAFETY: kt_list_key/kt_list_get gave a NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        };
        let mut len = 0;
        // SAFETY: a live list and valid out-pointers.
        unsafe {
            assert_eq!(
                crate::list::kt_list_len(list, &raw mut len, std::ptr::null_mut(), 0),
                kt_status::Ok
            );
            let mut out = Vec::new();
            for i in 0..len {
                let (mut k, mut v) = (std::ptr::null(), std::ptr::null());
                crate::list::kt_list_key(list, i, &raw mut k, std::ptr::null_mut(), 0);
                crate::list::kt_list_get(list, i, &raw mut v, std::ptr::null_mut(), 0);
                out.push((text(k), text(v)));
            }
            crate::list::kt_list_free(list, std::ptr::null_mut(), 0);
            out
        }
    }

    #[test]
    fn reports_are_key_value_lists_saying_what_each_line_is() {
        let mut report = CleanReport::default();
        report.dry_run = true;
        report.actions = vec!["restore Service dev/web: /spec/selector".to_owned()];
        report.left = vec!["Service dev/api: held by a live session".to_owned()];
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            items(report_list(&report).into_handle()),
            [
                pair("would do", "restore Service dev/web: /spec/selector"),
                pair("left", "Service dev/api: held by a live session"),
            ]
        );
        report.dry_run = false;
        assert_eq!(
            items(report_list(&report).into_handle())[0].0,
            "done",
            "a real run's actions are done"
        );
    }

    #[test]
    fn a_mesh_rule_without_a_header_equality_has_no_header_to_send() {
        let extra = |header: Option<(&str, &str)>| MeshExtra {
            rule: cstring("x-dev~^a && /api"),
            router: cstring("router"),
            header: header.map(|(n, v)| (cstring(n), cstring(v))),
        };
        let none = extra(None).header_part(false).unwrap_err();
        assert_eq!(none.status, kt_status::NotFound);
        assert!(
            none.message.contains("`x-dev~^a && /api`"),
            "{}",
            none.message
        );
        let some = extra(Some(("version", "abc")));
        // SAFETY: header_part gives pointers into `some`'s strings.
        let read = |value| unsafe { std::ffi::CStr::from_ptr(some.header_part(value).unwrap()) };
        assert_eq!(read(false).to_str(), Ok("version"));
        assert_eq!(read(true).to_str(), Ok("abc"));
    }

    #[test]
    fn bad_ports_and_options_are_invalid_arguments_that_say_what_is_accepted() {
        let bad = ports_arg(c"8080:".as_ptr()).unwrap_err();
        assert_eq!(bad.status, kt_status::InvalidArgument);
        assert!(bad.message.contains("`local:remote`"), "{}", bad.message);
        assert_eq!(
            ports_arg(std::ptr::null()).unwrap_err().status,
            kt_status::NullPointer
        );
        let ports = ports_arg(c"8080:80, 9090".as_ptr()).expect("two ports");
        assert_eq!(ports.len(), 2);
        let mut opts = std::ptr::null_mut();
        let mut err = [0 as c_char; 256];
        // SAFETY: valid out-pointers and a buffer of its length.
        unsafe {
            assert_eq!(
                kt_swap_options_new(&raw mut opts, std::ptr::null_mut(), 0),
                kt_status::Ok
            );
            assert_eq!(
                kt_swap_options_set_mode(opts, 7, err.as_mut_ptr(), err.len()),
                kt_status::InvalidArgument
            );
            let msg = std::ffi::CStr::from_ptr(err.as_ptr()).to_string_lossy();
            assert!(msg.contains("KT_SWAP_MODE_SCALE"), "{msg}");
            assert_eq!(
                kt_swap_options_set_restore_ttl_ms(opts, 0, std::ptr::null_mut(), 0),
                kt_status::InvalidArgument
            );
            assert_eq!(
                kt_swap_options_set_mode(opts, 1, std::ptr::null_mut(), 0),
                kt_status::Ok
            );
            let mode = SWAP_OPTIONS.get(opts, "options").expect("live");
            let text = format!("{:?}", mode.lock().unwrap_or_else(PoisonError::into_inner));
            assert!(text.contains("Scale"), "{text}");
            assert_eq!(
                kt_swap_options_free(opts, std::ptr::null_mut(), 0),
                kt_status::Ok
            );
            assert_eq!(
                kt_swap_options_free(opts, std::ptr::null_mut(), 0),
                kt_status::InvalidHandle
            );
        }
    }
}
