//! `kt_options` and `kt_vpn_options`: what `kt_session_connect` should do.

use std::ffi::c_char;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kt_core::{ConnectOptions, DnsMode, IpNet, ShadowFlavour, VpnOptions};

use crate::handle::Table;
use crate::status::{Failure, guard, handle_out, kt_status, str_arg};

/// How to open a session: kubeconfig, namespace, shadow, timeouts, local ports, VPN
/// mode. Made by `kt_options_new` with every setting at its default (the current
/// kubeconfig context and its namespace, no shadow image: kt ships its agent, proxy
/// mode); each
/// `kt_options_set_*`/`kt_options_add_*` changes one setting.
///
/// Owned by the caller: free it with `kt_options_free` (a session made from it
/// does not need it any more).
///
/// Thread-safety: every function may be called from any thread; calls on one
/// `kt_options` from several threads at once are safe but apply in no set order.
pub struct kt_options {
    _private: [u8; 0],
}

/// VPN mode settings (routes, tun device, system DNS). Made by `kt_vpn_options_new`
/// with routes discovered from the cluster and `KT_DNS_MODE_AUTO`; given to a
/// `kt_options` by `kt_options_set_vpn`, which copies it.
///
/// Owned by the caller: free it with `kt_vpn_options_free`.
///
/// Thread-safety: as `kt_options`.
pub struct kt_vpn_options {
    _private: [u8; 0],
}

/// Which SSH server runs in the shadow pod (`kt_options_set_flavour`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kt_flavour {
    /// kt's own agent `kt-shadow`: non-root, passes the restricted Pod Security
    /// Standard, relays UDP. The default.
    KtShadow = 0,
    /// A stock OpenSSH `sshd` (runs as root; TCP only).
    Openssh = 1,
}

/// Each `kt_flavour` and kt-core's spelling of it (read with its `FromStr`).
const FLAVOURS: [(kt_flavour, &str); 2] = [
    (kt_flavour::KtShadow, "kt-shadow"),
    (kt_flavour::Openssh, "openssh"),
];

/// Which timeout `kt_options_set_timeout` sets.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kt_timeout {
    /// How long the shadow pod may take to become Ready and answer SSH (default 60 s).
    PodReady = 0,
    /// How long one port-forward + SSH handshake + login may take (default 10 s).
    PortForward = 1,
    /// How long opening one connection into the cluster may take (default 30 s).
    Connect = 2,
    /// How long one DNS exchange may take (default 5 s).
    Dns = 3,
    /// How long to keep trying to re-establish a dropped tunnel (default 120 s).
    Reconnect = 4,
    /// How long `kt_session_close` waits for the objects to be gone (default 60 s).
    Close = 5,
    /// How often the session's Lease (named like the shadow pod) is renewed (default
    /// 30 s, at least 1 s).
    HeartbeatInterval = 6,
    /// After how long without a client the shadow exits by itself (default 10 min;
    /// 0 means never).
    ShadowHeartbeat = 7,
}

/// How the system resolver finds cluster names in VPN mode
/// (`kt_vpn_options_set_dns`, `kt_session_vpn_dns`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kt_dns_mode {
    /// The best mode for this machine (systemd-resolved where it runs, else
    /// resolv.conf; /etc/resolver on macOS). The default.
    Auto = 0,
    /// The local DNS server first in /etc/resolv.conf (restored on close).
    ResolvConf = 1,
    /// systemd-resolved, on the tun link only.
    Resolved = 2,
    /// macOS /etc/resolver files.
    ResolverDir = 3,
    /// Hosts-file entries for the Services of some namespaces.
    Hosts = 4,
    /// Leave the system resolver alone (the local DNS server still runs).
    Off = 5,
}

/// Each `kt_dns_mode` and kt-core's spelling of it (read with `DnsMode`'s
/// `FromStr`, written by its `Display`; `hosts` takes `:ns1,ns2`).
const DNS_MODES: [(kt_dns_mode, &str); 6] = [
    (kt_dns_mode::Auto, "auto"),
    (kt_dns_mode::ResolvConf, "resolv-conf"),
    (kt_dns_mode::Resolved, "resolved"),
    (kt_dns_mode::ResolverDir, "resolver-dir"),
    (kt_dns_mode::Hosts, "hosts"),
    (kt_dns_mode::Off, "off"),
];

pub(crate) static OPTIONS: Table<Mutex<ConnectOptions>> = Table::new(1, "kt_options_new");
static VPN_OPTIONS: Table<Mutex<VpnOptions>> = Table::new(2, "kt_vpn_options_new");

/// Changes the options behind `options` with `f` (nothing changes if `f` fails).
fn update(
    options: *mut kt_options,
    f: impl FnOnce(ConnectOptions) -> Result<ConnectOptions, Failure>,
) -> Result<(), Failure> {
    let entry = OPTIONS.get(options, "options")?;
    let mut opts = entry.lock().unwrap_or_else(PoisonError::into_inner);
    *opts = f(opts.clone())?;
    Ok(())
}

/// As [`update`] for VPN options.
fn update_vpn(
    vpn: *mut kt_vpn_options,
    f: impl FnOnce(VpnOptions) -> Result<VpnOptions, Failure>,
) -> Result<(), Failure> {
    let entry = VPN_OPTIONS.get(vpn, "vpn")?;
    let mut opts = entry.lock().unwrap_or_else(PoisonError::into_inner);
    *opts = f(opts.clone())?;
    Ok(())
}

/// Makes a `kt_options` with every setting at its default and stores it in
/// `*options`. Free it with `kt_options_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_new(
    options: *mut *mut kt_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(options, "options")?;
        out.write(OPTIONS.insert(Mutex::new(ConnectOptions::new())));
        Ok(())
    })
}

/// Frees `options`. Freeing it twice gives `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_free(
    options: *mut kt_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        OPTIONS.remove(options, "options")?;
        Ok(())
    })
}

/// The body of a setter of `options` taking one string `arg` (named `what`).
///
/// # Safety
///
/// `arg` is NULL or a NUL-terminated string.
unsafe fn set_string(
    options: *mut kt_options,
    arg: *const c_char,
    what: &str,
    err: *mut c_char,
    err_len: usize,
    f: impl FnOnce(ConnectOptions, &str) -> Result<ConnectOptions, Failure>,
) -> kt_status {
    guard(err, err_len, || {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let v = unsafe { str_arg(arg, what) }?;
        update(options, |o| f(o, v))
    })
}

/// The body of a setter of `options` taking a key and a value.
///
/// # Safety
///
/// `key` and `value` are NULL or NUL-terminated strings.
unsafe fn set_pair(
    options: *mut kt_options,
    key: *const c_char,
    value: *const c_char,
    err: *mut c_char,
    err_len: usize,
    f: impl FnOnce(ConnectOptions, &str, &str) -> ConnectOptions,
) -> kt_status {
    guard(err, err_len, || {
        // SAFETY: the caller passes NUL-terminated strings or NULL.
        let k = unsafe { str_arg(key, "key") }?;
        // SAFETY: as above.
        let v = unsafe { str_arg(value, "value") }?;
        if k.is_empty() {
            return Err(Failure::invalid("`key` is empty"));
        }
        update(options, |o| Ok(f(o, k, v)))
    })
}

/// The body of a setter of `vpn` taking one string `arg` (named `what`).
///
/// # Safety
///
/// `arg` is NULL or a NUL-terminated string.
unsafe fn set_vpn_string(
    vpn: *mut kt_vpn_options,
    arg: *const c_char,
    what: &str,
    err: *mut c_char,
    err_len: usize,
    f: impl FnOnce(VpnOptions, &str) -> Result<VpnOptions, Failure>,
) -> kt_status {
    guard(err, err_len, || {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let v = unsafe { str_arg(arg, what) }?;
        update_vpn(vpn, |o| f(o, v))
    })
}

fn non_empty<'a>(v: &'a str, what: &str) -> Result<&'a str, Failure> {
    if v.trim().is_empty() {
        Err(Failure::invalid(format!("`{what}` is empty")))
    } else {
        Ok(v)
    }
}

/// Uses this kubeconfig file instead of the default loading rules (`KUBECONFIG`,
/// `~/.kube/config`, in-cluster).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_kubeconfig(
    options: *mut kt_options,
    path: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, path, "path", err, err_len, |o, v| {
            Ok(o.kubeconfig(non_empty(v, "path")?))
        })
    }
}
/// Uses this kubeconfig context instead of the current one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_context(
    options: *mut kt_options,
    context: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, context, "context", err, err_len, |o, v| {
            Ok(o.context(non_empty(v, "context")?))
        })
    }
}
/// Works in this namespace (default: the context's namespace, else `default`):
/// the shadow runs here and short names resolve here.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_namespace(
    options: *mut kt_options,
    namespace: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, namespace, "namespace", err, err_len, |o, v| {
            Ok(o.namespace(non_empty(v, "namespace")?))
        })
    }
}
/// Runs the shadow from this image (default: `$KT_SHADOW_IMAGE`, else none: kt ships
/// its agent into the namespace, once, as ConfigMaps, and runs it on an image the node
/// already has). Pin an image by digest (`registry/kt-shadow@sha256:...`);
/// `KT_FLAVOUR_OPENSSH` needs one (any image with sshd).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_shadow_image(
    options: *mut kt_options,
    image: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, image, "image", err, err_len, |o, v| {
            Ok(o.shadow_image(non_empty(v, "image")?))
        })
    }
}
/// The image the shipped agent runs on when no running pod in the namespace can lend
/// its own (default `registry.k8s.io/pause:3.10`); not used with a shadow image.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_base_image(
    options: *mut kt_options,
    image: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, image, "image", err, err_len, |o, v| {
            Ok(o.base_image(non_empty(v, "image")?))
        })
    }
}
/// Ships the agent from directory `path` (UTF-8), which holds `kt-shadow` as
/// `kt-shadow/build-static` makes it (a `kt-loader` there replaces the built-in
/// loader), instead of the agent built into
/// libkt (default: `$KT_AGENT_DIR`, else the built-in one). The files are read at
/// connect; a directory without them fails the connect with
/// `KT_STATUS_INVALID_ARGUMENT` naming the missing file.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_agent_dir(
    options: *mut kt_options,
    path: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, path, "path", err, err_len, |o, v| {
            Ok(o.agent_dir(non_empty(v, "path")?))
        })
    }
}
/// An image pull Secret for the shadow pod (for private registries); may be given
/// several times.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_add_image_pull_secret(
    options: *mut kt_options,
    name: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, name, "name", err, err_len, |o, v| {
            Ok(o.image_pull_secret(non_empty(v, "name")?))
        })
    }
}
/// The cluster's DNS domain (default `cluster.local`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_cluster_domain(
    options: *mut kt_options,
    domain: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, domain, "domain", err, err_len, |o, v| {
            Ok(o.cluster_domain(non_empty(v, "domain")?))
        })
    }
}
/// The cluster DNS server's IP address (default: the `kube-dns` Service).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_dns_server(
    options: *mut kt_options,
    ip: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, ip, "ip", err, err_len, |o, v| {
            let ip: IpAddr = v.trim().parse().map_err(|_| {
                Failure::invalid(format!(
                    "`{v}` is not an IP address (write e.g. 10.96.0.10)"
                ))
            })?;
            Ok(o.dns_server(ip))
        })
    }
}
/// Path of `sshd` in an OpenSSH shadow image (default `/usr/sbin/sshd`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_sshd_path(
    options: *mut kt_options,
    path: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, path, "path", err, err_len, |o, v| {
            Ok(o.sshd_path(non_empty(v, "path")?))
        })
    }
}
/// The command the kt-shadow readiness probe runs (default `kt-shadow`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_shadow_probe_binary(
    options: *mut kt_options,
    path: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_string(options, path, "path", err, err_len, |o, v| {
            Ok(o.shadow_probe_binary(non_empty(v, "path")?))
        })
    }
}
/// An extra label on every object kt creates (kt's own labels win).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_add_label(
    options: *mut kt_options,
    key: *const c_char,
    value: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe { set_pair(options, key, value, err, err_len, |o, k, v| o.label(k, v)) }
}
/// An extra annotation on every object kt creates.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_add_annotation(
    options: *mut kt_options,
    key: *const c_char,
    value: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_pair(options, key, value, err, err_len, |o, k, v| {
            o.annotation(k, v)
        })
    }
}
/// A node selector entry for the shadow pod.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_add_node_selector(
    options: *mut kt_options,
    key: *const c_char,
    value: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_pair(options, key, value, err, err_len, |o, k, v| {
            o.node_selector(k, v)
        })
    }
}

/// Which SSH server the shadow runs: a `kt_flavour` value. Any other number gives
/// `KT_STATUS_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_flavour(
    options: *mut kt_options,
    flavour: u32,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let flavour = FLAVOURS
            .iter()
            .find(|(c, _)| *c as u32 == flavour)
            .map(|(_, spelling)| spelling.parse::<ShadowFlavour>())
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "{flavour} is not a kt_flavour; use KT_FLAVOUR_KT_SHADOW (0) or \
                     KT_FLAVOUR_OPENSSH (1)"
                ))
            })??;
        update(options, |o| Ok(o.flavour(flavour)))
    })
}

/// Sets one timeout, `which` being a `kt_timeout` value, to `millis` milliseconds
/// (at most 30 days). 0 is refused except for `KT_TIMEOUT_SHADOW_HEARTBEAT` (never).
/// Any other `which` gives `KT_STATUS_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_timeout(
    options: *mut kt_options,
    which: u32,
    millis: u64,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        const MAX_MILLIS: u64 = 30 * 24 * 3600 * 1000;
        if millis > MAX_MILLIS {
            return Err(Failure::invalid(format!(
                "a timeout of {millis} ms is more than 30 days; give at most {MAX_MILLIS} ms"
            )));
        }
        let d = Duration::from_millis(millis);
        if millis == 0 && which != kt_timeout::ShadowHeartbeat as u32 && which <= 7 {
            return Err(Failure::invalid(
                "a timeout of 0 ms would fail at once; give a positive number of milliseconds",
            ));
        }
        update(options, |o| {
            Ok(match which {
                0 => o.pod_ready_timeout(d),
                1 => o.port_forward_timeout(d),
                2 => o.connect_timeout(d),
                3 => o.dns_timeout(d),
                4 => o.reconnect_timeout(d),
                5 => o.close_timeout(d),
                6 => o.heartbeat_interval(d),
                7 => o.shadow_heartbeat_timeout((millis > 0).then_some(d)),
                other => {
                    return Err(Failure::invalid(format!(
                        "{other} is not a kt_timeout; use KT_TIMEOUT_POD_READY (0) to \
                         KT_TIMEOUT_SHADOW_HEARTBEAT (7)"
                    )));
                }
            })
        })
    })
}

/// The local SOCKS5 proxy's port on 127.0.0.1 (default 0: any free port).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_socks5_port(
    options: *mut kt_options,
    port: u16,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        update(options, |o| Ok(o.socks5_port(port)))
    })
}

/// The local HTTP proxy's port on 127.0.0.1 (default 0: any free port).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_http_proxy_port(
    options: *mut kt_options,
    port: u16,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        update(options, |o| Ok(o.http_proxy_port(port)))
    })
}

/// Whether the local SOCKS5 and HTTP proxies require per-session credentials
/// (default false). Without them, like `kubectl port-forward` and `ssh -D`, any
/// process on the machine, of any user, can use the proxies while the session
/// lives. With `required` true, the session makes a random user name and password
/// and the proxies require them (SOCKS5 username/password; HTTP
/// `Proxy-Authorization: Basic`, else `407`); `kt_session_socks5_url`,
/// `kt_session_http_proxy_url` and `kt_session_env` carry them in their URLs
/// (`http://user:password@127.0.0.1:port`). Local forwards stay open to every local
/// process.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_proxy_auth(
    options: *mut kt_options,
    required: bool,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        update(options, |o| Ok(o.proxy_auth(required)))
    })
}

/// The SSH port inside the shadow pod, on its loopback (default 2222).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_ssh_port(
    options: *mut kt_options,
    port: u16,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        if port == 0 {
            return Err(Failure::invalid("the SSH port must not be 0"));
        }
        update(options, |o| Ok(o.ssh_port(port)))
    })
}

/// VPN mode: a copy of `vpn` is kept (changing or freeing `vpn` later does not
/// change `options`). Connecting then needs CAP_NET_ADMIN; without it
/// `kt_session_connect` fails with `KT_STATUS_NEEDS_CAPABILITY` before creating
/// anything.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_options_set_vpn(
    options: *mut kt_options,
    vpn: *const kt_vpn_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let vpn = VPN_OPTIONS
            .get(vpn, "vpn")?
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        update(options, |o| Ok(o.vpn(vpn)))
    })
}

/// Makes a `kt_vpn_options` with the defaults and stores it in `*vpn`. Free it with
/// `kt_vpn_options_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_vpn_options_new(
    vpn: *mut *mut kt_vpn_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = handle_out(vpn, "vpn")?;
        out.write(VPN_OPTIONS.insert(Mutex::new(VpnOptions::new())));
        Ok(())
    })
}

/// Frees `vpn`. Freeing it twice gives `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_vpn_options_free(
    vpn: *mut kt_vpn_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        VPN_OPTIONS.remove(vpn, "vpn")?;
        Ok(())
    })
}

/// A range to route: kt-core's `parse_net` (CIDR, or a single address as /32 or
/// /128), as every kt front end reads it.
fn parse_cidr(v: &str) -> Result<IpNet, Failure> {
    Ok(kt_core::parse_net(v)?)
}

/// Also routes this range into the cluster: CIDR (`10.96.0.0/12`, `fd00::/64`) or
/// a single address (`10.96.0.10`, routed as /32 or /128).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_vpn_options_add_include(
    vpn: *mut kt_vpn_options,
    cidr: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_vpn_string(vpn, cidr, "cidr", err, err_len, |o, v| {
            Ok(o.include(parse_cidr(v)?))
        })
    }
}
/// Never routes this range into the cluster (written as for
/// `kt_vpn_options_add_include`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_vpn_options_add_exclude(
    vpn: *mut kt_vpn_options,
    cidr: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_vpn_string(vpn, cidr, "cidr", err, err_len, |o, v| {
            Ok(o.exclude(parse_cidr(v)?))
        })
    }
}
/// The tun device's name (default: the kernel picks `kt0`, `kt1`, ...); at most 15
/// bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_vpn_options_set_tun_name(
    vpn: *mut kt_vpn_options,
    name: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_vpn_string(vpn, name, "name", err, err_len, |o, v| {
            if v.is_empty() || v.len() > 15 || v.contains(['/', ' ']) {
                return Err(Failure::invalid(format!(
                    "`{v}` is not a network device name: 1 to 15 bytes, no `/` or space"
                )));
            }
            Ok(o.tun_name(v))
        })
    }
}
/// The tun device's own IPv4 address (default 198.18.0.1).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_vpn_options_set_address(
    vpn: *mut kt_vpn_options,
    address: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_vpn_string(vpn, address, "address", err, err_len, |o, v| {
            let ip: Ipv4Addr = v.trim().parse().map_err(|_| {
                Failure::invalid(format!(
                    "`{v}` is not an IPv4 address (write e.g. 198.18.0.1)"
                ))
            })?;
            Ok(o.address(ip))
        })
    }
}
/// Where the local DNS server listens, `ip:port` (default: 127.0.0.1:53 when
/// free, else another loopback address).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_vpn_options_set_dns_listen(
    vpn: *mut kt_vpn_options,
    addr: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    // SAFETY: the caller's contract is the helper's.
    unsafe {
        set_vpn_string(vpn, addr, "addr", err, err_len, |o, v| {
            let addr: SocketAddr = v.trim().parse().map_err(|_| {
                Failure::invalid(format!(
                    "`{v}` is not an ip:port address (write e.g. 127.0.0.2:53)"
                ))
            })?;
            Ok(o.dns_listen(addr))
        })
    }
}

/// The tun device's MTU (default 65000; at least 576).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_vpn_options_set_mtu(
    vpn: *mut kt_vpn_options,
    mtu: u16,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        if mtu < 576 {
            return Err(Failure::invalid(format!(
                "MTU {mtu} is too small; give at least 576 (the default is 65000)"
            )));
        }
        update_vpn(vpn, |o| Ok(o.mtu(mtu)))
    })
}

/// Routes only the `kt_vpn_options_add_include` ranges; asks the cluster for none.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_vpn_options_disable_discovery(
    vpn: *mut kt_vpn_options,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || update_vpn(vpn, |o| Ok(o.no_discovery())))
}

/// How the system resolver learns cluster names: `mode` is a `kt_dns_mode` value.
/// For `KT_DNS_MODE_HOSTS`, `namespaces` is a comma-separated list of the
/// namespaces whose Services get hosts entries (NULL, empty or blank: the
/// session's; a list with no name in it, like `","`, is refused); for the other
/// modes it must be NULL or empty. Read as kt-core (and ktctl's `--dns hosts:a,b`)
/// reads it. Any other `mode` gives `KT_STATUS_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_vpn_options_set_dns(
    vpn: *mut kt_vpn_options,
    mode: u32,
    namespaces: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let namespaces = if namespaces.is_null() {
            ""
        } else {
            // SAFETY: the caller passes a NUL-terminated string or NULL.
            unsafe { str_arg(namespaces, "namespaces") }?
        };
        let (c_mode, spelling) = DNS_MODES
            .iter()
            .find(|(c, _)| *c as u32 == mode)
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "{mode} is not a kt_dns_mode; use KT_DNS_MODE_AUTO (0) to \
                     KT_DNS_MODE_OFF (5)"
                ))
            })?;
        let text = match (c_mode, namespaces.trim()) {
            (_, "") => (*spelling).to_owned(),
            (kt_dns_mode::Hosts, list) => format!("{spelling}:{list}"),
            _ => {
                return Err(Failure::invalid(
                    "`namespaces` is only for KT_DNS_MODE_HOSTS; pass NULL",
                ));
            }
        };
        let dns: DnsMode = text.parse()?;
        update_vpn(vpn, |o| Ok(o.dns(dns)))
    })
}

/// The `kt_dns_mode` of `mode`, found by kt-core's spelling of it (`hosts:a,b` is
/// `hosts`). Every mode C declares is found (the test sets each one and reads it
/// back); a mode added to kt-core after this header reads as `KT_DNS_MODE_AUTO`.
pub(crate) fn dns_mode_value(mode: &DnsMode) -> kt_dns_mode {
    let text = mode.to_string();
    let name = text.split(':').next().unwrap_or_default();
    DNS_MODES
        .iter()
        .find(|(_, spelling)| *spelling == name)
        .map_or(kt_dns_mode::Auto, |(c, _)| *c)
}

/// A copy of the options behind `options`.
pub(crate) fn snapshot(options: *const kt_options) -> Result<ConnectOptions, Failure> {
    Ok(OPTIONS
        .get(options, "options")?
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_c_dns_mode_is_read_by_kt_core_and_reads_back() {
        for (c, spelling) in DNS_MODES {
            let mode: DnsMode = spelling.parse().expect(spelling);
            assert_eq!(mode.to_string(), spelling);
            assert_eq!(dns_mode_value(&mode), c, "{spelling}");
        }
        let hosts: DnsMode = "hosts:a,b".parse().expect("hosts:a,b");
        assert_eq!(dns_mode_value(&hosts), kt_dns_mode::Hosts);
    }

    #[test]
    fn every_c_flavour_is_read_by_kt_core_and_reads_back() {
        for (c, spelling) in FLAVOURS {
            let flavour: ShadowFlavour = spelling.parse().expect(spelling);
            assert_eq!(flavour.to_string(), spelling, "{c:?}");
        }
    }

    #[test]
    fn cidrs_are_read_by_kt_cores_parse_net() {
        assert_eq!(
            parse_cidr("10.96.0.10").map(|n| n.to_string()).ok(),
            Some("10.96.0.10/32".to_owned())
        );
        let bad = parse_cidr("banana").unwrap_err();
        assert_eq!(bad.status, kt_status::InvalidArgument);
        assert!(
            bad.message.contains("invalid CIDR `banana`"),
            "{}",
            bad.message
        );
    }
}
