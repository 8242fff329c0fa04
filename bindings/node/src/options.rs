//! `Session.connect(options)`: the JavaScript options object, checked by hand so that
//! every mistake (a wrong type, an unknown key, a bad CIDR) becomes a
//! `KT_INVALID_ARGUMENT` rejection naming the option, never a synchronous throw.
//!
//! Values with a syntax of their own are parsed by kt-core's parsers, as in every
//! other front end: DNS modes (`DnsMode::from_str`), shadow flavours
//! (`ShadowFlavour::from_str`) and ranges (`kt_core::parse_net`). Every kt-core
//! setting has a key here; `test/parity.test.mjs` fails when kt-core gains one that
//! has not.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use kt_core::{ConnectOptions as CoreOptions, DnsMode, IpNet, ShadowFlavour, VpnOptions};
use napi::bindgen_prelude::{Function, JsObjectValue, Object, Unknown};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{JsValue, ValueType};
use napi_derive::napi;

use crate::error::KtError;
use crate::events::{Event, event};

// This struct declares the TypeScript type of the options (index.d.ts); `parse` reads
// the JavaScript object by hand, so `on_event`'s Rust type is a placeholder.
/// Options of `Session.connect`. Every field is optional; durations are in
/// milliseconds. Unknown keys are refused (a typo would otherwise be ignored).
#[napi(object)]
#[derive(Debug, Default)]
pub struct ConnectOptions {
    /// Kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`).
    pub kubeconfig: Option<String>,
    /// Kubeconfig context (default: the current one).
    pub context: Option<String>,
    /// Namespace to work in (default: the context's, else `default`).
    pub namespace: Option<String>,
    /// Run the shadow from this image (default: `KT_SHADOW_IMAGE`, else none: kt ships
    /// its agent into the namespace, once, as ConfigMaps, and runs it on an image the
    /// node already has). Pin it by digest (`registry/kt-shadow@sha256:...`); the
    /// `openssh` flavour needs one (any image with sshd).
    pub shadow_image: Option<String>,
    /// The image the shipped agent runs on when no running pod in the namespace can
    /// lend its own (default `registry.k8s.io/pause:3.10`).
    pub base_image: Option<String>,
    /// A directory with `kt-shadow` (as `kt-shadow/build-static` makes it) to ship
    /// instead of the agent built into kt (default: `KT_AGENT_DIR`); a `kt-loader`
    /// there replaces the built-in loader.
    pub agent_dir: Option<String>,
    /// Which SSH server the shadow pod runs (default `kt-shadow`).
    #[napi(ts_type = "'kt-shadow' | 'openssh'")]
    pub flavour: Option<String>,
    /// The command the kt-shadow readiness probe runs (default `kt-shadow`, found on
    /// the image's `PATH`): for a custom image that keeps the binary elsewhere.
    pub shadow_probe_binary: Option<String>,
    /// Path of `sshd` in the OpenSSH shadow image (default `/usr/sbin/sshd`).
    pub sshd_path: Option<String>,
    /// The SSH port in the shadow pod, on its loopback (default 2222).
    pub ssh_port: Option<u32>,
    /// Extra labels on every object kt creates.
    pub labels: Option<HashMap<String, String>>,
    /// Extra annotations on every object kt creates.
    pub annotations: Option<HashMap<String, String>>,
    /// Image pull Secrets for the shadow pod.
    pub image_pull_secrets: Option<Vec<String>>,
    /// Node selector of the shadow pod.
    pub node_selector: Option<HashMap<String, String>>,
    /// How long the shadow pod may take to become Ready (default 60000).
    pub pod_ready_timeout_ms: Option<f64>,
    /// How long one port-forward + SSH login may take (default 10000).
    pub port_forward_timeout_ms: Option<f64>,
    /// How long opening one connection into the cluster may take (default 30000).
    pub connect_timeout_ms: Option<f64>,
    /// How long one DNS exchange may take (default 5000).
    pub dns_timeout_ms: Option<f64>,
    /// How long `close()` waits for the objects to be gone (default 60000).
    pub close_timeout_ms: Option<f64>,
    /// How long to keep re-establishing a dropped tunnel (default 120000).
    pub reconnect_timeout_ms: Option<f64>,
    /// How often the session's Lease (named like the shadow pod) is renewed (default 30000).
    pub heartbeat_interval_ms: Option<f64>,
    /// The shadow's watchdog: after how long without any connected client kt-shadow
    /// exits on its own, so that the pod of a crashed program stops (default 600000,
    /// 10 minutes; rounded up to whole seconds). `null`: never.
    #[napi(ts_type = "number | null")]
    pub shadow_heartbeat_timeout_ms: Option<f64>,
    /// The cluster's DNS domain (default `cluster.local`).
    pub cluster_domain: Option<String>,
    /// The cluster DNS server's IP (default: found from the cluster).
    pub dns_server: Option<String>,
    /// Local SOCKS5 port (default: any free port on 127.0.0.1).
    pub socks5_port: Option<u32>,
    /// Local HTTP proxy port (default: any free port on 127.0.0.1).
    pub http_proxy_port: Option<u32>,
    /// Whether the local proxies require random per-session credentials (default
    /// false: like `kubectl port-forward`, any local process of any user may use
    /// them). `socks5Url`, `httpProxyUrl` and `env()` carry them
    /// (`http://user:password@127.0.0.1:port`).
    pub proxy_auth: Option<bool>,
    /// VPN mode (needs CAP_NET_ADMIN): a tun device routes the cluster's ranges.
    pub vpn: Option<VpnConnectOptions>,
    /// Called with every event as it happens, from the start of `connect` on (for
    /// progress displays); it must not throw. Does not keep Node running.
    #[napi(ts_type = "(event: Event) => void")]
    pub on_event: Option<String>,
}

/// VPN mode settings (`ConnectOptions.vpn`); an empty object means the defaults.
#[napi(object)]
#[derive(Debug, Default)]
pub struct VpnConnectOptions {
    /// Extra ranges to route into the cluster: CIDRs (`10.96.0.0/12`) or single
    /// addresses (`10.96.0.10`, a /32).
    pub include: Option<Vec<String>>,
    /// Ranges never to route into the cluster, written as `include`.
    pub exclude: Option<Vec<String>>,
    /// Route only `include`; ask the cluster for no ranges.
    pub no_discovery: Option<bool>,
    /// How the system resolver finds cluster names (default `auto`); `hosts:ns1,ns2`
    /// writes hosts-file entries for those namespaces' Services.
    #[napi(
        ts_type = "'auto' | 'resolv-conf' | 'resolved' | 'resolver-dir' | 'off' | 'hosts' | `hosts:${string}`"
    )]
    pub dns: Option<String>,
    /// The tun device's name (default: `kt0`, `kt1`, ...).
    pub tun_name: Option<String>,
    /// The tun device's MTU (default 65000).
    pub mtu: Option<u32>,
    /// The tun device's own IPv4 address (default 198.18.0.1).
    pub address: Option<String>,
    /// Where the local DNS server listens, `ip:port` (default 127.0.0.1:53 when free,
    /// else another loopback address on port 53).
    pub dns_listen: Option<String>,
}

/// The keys `Session.connect` accepts, for the message about an unknown one.
const CONNECT_KEYS: &[&str] = &[
    "kubeconfig",
    "context",
    "namespace",
    "shadowImage",
    "baseImage",
    "agentDir",
    "flavour",
    "shadowProbeBinary",
    "sshdPath",
    "sshPort",
    "labels",
    "annotations",
    "nodeSelector",
    "imagePullSecrets",
    "podReadyTimeoutMs",
    "portForwardTimeoutMs",
    "connectTimeoutMs",
    "dnsTimeoutMs",
    "closeTimeoutMs",
    "reconnectTimeoutMs",
    "heartbeatIntervalMs",
    "shadowHeartbeatTimeoutMs",
    "clusterDomain",
    "dnsServer",
    "socks5Port",
    "httpProxyPort",
    "proxyAuth",
    "vpn",
    "onEvent",
];

/// The keys of `options.vpn`, for the message about an unknown one.
const VPN_KEYS: &[&str] = &[
    "include",
    "exclude",
    "noDiscovery",
    "dns",
    "tunName",
    "mtu",
    "address",
    "dnsListen",
];

/// Builds kt-core's options from what JavaScript passed (`undefined` and `null` mean
/// the defaults).
pub(crate) fn parse(options: Option<Unknown<'_>>) -> Result<CoreOptions, KtError> {
    parse_with(options, &[]).map(|(opts, _)| opts)
}

/// [`parse`] for a function that takes the connection options and a few keys of its
/// own (`extra`, e.g. `clean`'s `dryRun`): those come back with their values.
pub(crate) fn parse_with<'env>(
    options: Option<Unknown<'env>>,
    extra: &[&str],
) -> Result<(CoreOptions, Vec<(String, Unknown<'env>)>), KtError> {
    let mut opts = CoreOptions::new();
    let mut own = Vec::new();
    let Some(obj) = optional_object(options, "options")? else {
        return Ok((opts, own));
    };
    for (key, value) in entries(&obj, "options")? {
        if extra.contains(&key.as_str()) {
            own.push((key, value));
            continue;
        }
        let path = format!("options.{key}");
        opts = match key.as_str() {
            "kubeconfig" => opts.kubeconfig(non_empty(value, &path)?),
            "context" => opts.context(non_empty(value, &path)?),
            "namespace" => opts.namespace(non_empty(value, &path)?),
            "shadowImage" => opts.shadow_image(non_empty(value, &path)?),
            "baseImage" => opts.base_image(non_empty(value, &path)?),
            "agentDir" => opts.agent_dir(non_empty(value, &path)?),
            "flavour" => opts.flavour(parsed::<ShadowFlavour>(value, &path)?),
            "shadowProbeBinary" => opts.shadow_probe_binary(non_empty(value, &path)?),
            "sshdPath" => opts.sshd_path(non_empty(value, &path)?),
            "sshPort" => opts.ssh_port(port(value, &path, false)?),
            "labels" => string_map(value, &path)?
                .into_iter()
                .fold(opts, |o, (k, v)| o.label(k, v)),
            "annotations" => string_map(value, &path)?
                .into_iter()
                .fold(opts, |o, (k, v)| o.annotation(k, v)),
            "nodeSelector" => string_map(value, &path)?
                .into_iter()
                .fold(opts, |o, (k, v)| o.node_selector(k, v)),
            "imagePullSecrets" => string_array(value, &path)?
                .into_iter()
                .fold(opts, |o, s| o.image_pull_secret(s)),
            "podReadyTimeoutMs" => opts.pod_ready_timeout(millis(value, &path)?),
            "portForwardTimeoutMs" => opts.port_forward_timeout(millis(value, &path)?),
            "connectTimeoutMs" => opts.connect_timeout(millis(value, &path)?),
            "dnsTimeoutMs" => opts.dns_timeout(millis(value, &path)?),
            "closeTimeoutMs" => opts.close_timeout(millis(value, &path)?),
            "reconnectTimeoutMs" => opts.reconnect_timeout(millis(value, &path)?),
            "heartbeatIntervalMs" => opts.heartbeat_interval(millis(value, &path)?),
            // null: the watchdog never fires (kt-core's `None`).
            "shadowHeartbeatTimeoutMs" => {
                if is(&value, ValueType::Null) {
                    opts.shadow_heartbeat_timeout(None)
                } else {
                    let timeout = millis(value, &path).map_err(|mut e| {
                        e.message.push_str(", or null for never");
                        e
                    })?;
                    opts.shadow_heartbeat_timeout(Some(timeout))
                }
            }
            "clusterDomain" => opts.cluster_domain(non_empty(value, &path)?),
            "dnsServer" => opts.dns_server(ip(value, &path)?),
            "socks5Port" => opts.socks5_port(port(value, &path, true)?),
            "httpProxyPort" => opts.http_proxy_port(port(value, &path, true)?),
            "proxyAuth" => opts.proxy_auth(boolean(value, &path)?),
            "vpn" => opts.vpn(vpn(value, &path)?),
            "onEvent" => {
                if !is(&value, ValueType::Function) {
                    return Err(wrong(&path, "a function", &value));
                }
                let callback: Function<'_, Event, ()> = obj
                    .get_named_property(&key)
                    .map_err(|e| napi_failed(&path, &e))?;
                // Weak: a session's callback must not keep the process alive.
                let tsfn = callback
                    .build_threadsafe_function()
                    .weak::<true>()
                    .callee_handled::<false>()
                    .build()
                    .map_err(|e| napi_failed(&path, &e))?;
                opts.on_event(move |e| {
                    // Queued for the JavaScript thread; never blocks kt's tasks.
                    tsfn.call(event(e), ThreadsafeFunctionCallMode::NonBlocking);
                })
            }
            _ => {
                let known: Vec<&str> = CONNECT_KEYS.iter().chain(extra).copied().collect();
                return Err(KtError::invalid(format!(
                    "unknown option `{key}`; known options: {}",
                    known.join(", ")
                )));
            }
        };
    }
    Ok((opts, own))
}

fn vpn(value: Unknown<'_>, path: &str) -> Result<VpnOptions, KtError> {
    let mut vpn = VpnOptions::new();
    let obj = object(value, path)?;
    for (key, value) in entries(&obj, path)? {
        let path = format!("{path}.{key}");
        vpn = match key.as_str() {
            "include" => cidrs(value, &path)?
                .into_iter()
                .fold(vpn, |v, n| v.include(n)),
            "exclude" => cidrs(value, &path)?
                .into_iter()
                .fold(vpn, |v, n| v.exclude(n)),
            "noDiscovery" => {
                if boolean(value, &path)? {
                    vpn.no_discovery()
                } else {
                    vpn
                }
            }
            "dns" => vpn.dns(parsed::<DnsMode>(value, &path)?),
            "tunName" => vpn.tun_name(non_empty(value, &path)?),
            "mtu" => {
                let mtu = integer(value, &path, 576, 65535)?;
                vpn.mtu(u16::try_from(mtu).unwrap_or(u16::MAX))
            }
            "address" => match ip(value, &path)? {
                IpAddr::V4(a) => vpn.address(a),
                IpAddr::V6(_) => {
                    return Err(KtError::invalid(format!(
                        "{path} must be an IPv4 address (like 198.18.0.1)"
                    )));
                }
            },
            "dnsListen" => {
                let s = string(value, &path)?;
                let addr = s.trim().parse::<SocketAddr>().map_err(|e| {
                    KtError::invalid(format!(
                        "{path}: `{s}` is not an address and port (like 127.0.0.1:53): {e}"
                    ))
                })?;
                vpn.dns_listen(addr)
            }
            _ => {
                return Err(KtError::invalid(format!(
                    "unknown option `{path}`; known VPN options: {}",
                    VPN_KEYS.join(", ")
                )));
            }
        };
    }
    Ok(vpn)
}

/// The name of a value's JavaScript type, for messages.
pub(crate) fn type_name(value: &Unknown<'_>) -> &'static str {
    match value.get_type() {
        Ok(ValueType::Undefined) => "undefined",
        Ok(ValueType::Null) => "null",
        Ok(ValueType::Boolean) => "a boolean",
        Ok(ValueType::Number) => "a number",
        Ok(ValueType::String) => "a string",
        Ok(ValueType::Symbol) => "a symbol",
        Ok(ValueType::Function) => "a function",
        Ok(ValueType::BigInt) => "a bigint",
        Ok(ValueType::Object) if value.is_array().unwrap_or(false) => "an array",
        Ok(ValueType::Object) => "an object",
        _ => "a value of unknown type",
    }
}

fn is(value: &Unknown<'_>, ty: ValueType) -> bool {
    value.get_type().ok() == Some(ty)
}

fn wrong(path: &str, expected: &str, value: &Unknown<'_>) -> KtError {
    KtError::invalid(format!(
        "{path} must be {expected}, got {}",
        type_name(value)
    ))
}

fn napi_failed(path: &str, e: &napi::Error) -> KtError {
    KtError::invalid(format!("cannot read {path}: {}", e.reason))
}

/// `None` for `undefined`/`null`, the object otherwise (not an array or function).
fn optional_object<'env>(
    value: Option<Unknown<'env>>,
    path: &str,
) -> Result<Option<Object<'env>>, KtError> {
    match value {
        None => Ok(None),
        Some(v) if is(&v, ValueType::Undefined) || is(&v, ValueType::Null) => Ok(None),
        Some(v) => object(v, path).map(Some),
    }
}

fn object<'env>(value: Unknown<'env>, path: &str) -> Result<Object<'env>, KtError> {
    if !is(&value, ValueType::Object) || value.is_array().unwrap_or(true) {
        return Err(wrong(path, "an object", &value));
    }
    value.coerce_to_object().map_err(|e| napi_failed(path, &e))
}

/// The own enumerable keys of `obj` whose value is not `undefined`, with their values.
fn entries<'env>(obj: &Object<'env>, path: &str) -> Result<Vec<(String, Unknown<'env>)>, KtError> {
    let keys = Object::keys(obj).map_err(|e| napi_failed(path, &e))?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let value: Unknown<'env> = obj
            .get_named_property(&key)
            .map_err(|e| napi_failed(&format!("{path}.{key}"), &e))?;
        if !is(&value, ValueType::Undefined) {
            out.push((key, value));
        }
    }
    Ok(out)
}

pub(crate) fn string(value: Unknown<'_>, path: &str) -> Result<String, KtError> {
    if !is(&value, ValueType::String) {
        return Err(wrong(path, "a string", &value));
    }
    value
        .coerce_to_string()
        .and_then(|s| s.into_utf8())
        .and_then(|s| s.into_owned())
        .map_err(|e| napi_failed(path, &e))
}

pub(crate) fn non_empty(value: Unknown<'_>, path: &str) -> Result<String, KtError> {
    let s = string(value, path)?;
    if s.trim().is_empty() {
        return Err(KtError::invalid(format!("{path} must not be empty")));
    }
    Ok(s)
}

fn number(value: Unknown<'_>, path: &str) -> Result<f64, KtError> {
    if !is(&value, ValueType::Number) {
        return Err(wrong(path, "a number", &value));
    }
    let n = value
        .coerce_to_number()
        .and_then(|n| n.get_double())
        .map_err(|e| napi_failed(path, &e))?;
    if !n.is_finite() {
        return Err(KtError::invalid(format!(
            "{path} must be a finite number, got {n}"
        )));
    }
    Ok(n)
}

pub(crate) fn integer(value: Unknown<'_>, path: &str, min: u32, max: u32) -> Result<u32, KtError> {
    let n = number(value, path)?;
    if n.fract() != 0.0 || n < f64::from(min) || n > f64::from(max) {
        return Err(KtError::invalid(format!(
            "{path} must be an integer from {min} to {max}, got {n}"
        )));
    }
    // Checked just above: an integer within u32.
    Ok(n as u32)
}

/// A port: 1–65535, or 0 ("any free port") where `zero_ok`.
pub(crate) fn port(value: Unknown<'_>, path: &str, zero_ok: bool) -> Result<u16, KtError> {
    let n = integer(value, path, u32::from(!zero_ok), 65535)?;
    Ok(u16::try_from(n).unwrap_or(u16::MAX))
}

/// A positive duration in milliseconds.
pub(crate) fn millis(value: Unknown<'_>, path: &str) -> Result<Duration, KtError> {
    let ms = number(value, path)?;
    if ms <= 0.0 || ms > 1e12 {
        return Err(KtError::invalid(format!(
            "{path} must be a positive number of milliseconds, got {ms}"
        )));
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

fn boolean(value: Unknown<'_>, path: &str) -> Result<bool, KtError> {
    if !is(&value, ValueType::Boolean) {
        return Err(wrong(path, "a boolean", &value));
    }
    value.coerce_to_bool().map_err(|e| napi_failed(path, &e))
}

fn string_array(value: Unknown<'_>, path: &str) -> Result<Vec<String>, KtError> {
    if !value.is_array().unwrap_or(false) {
        return Err(wrong(path, "an array of strings", &value));
    }
    let arr = value
        .coerce_to_object()
        .map_err(|e| napi_failed(path, &e))?;
    let len = arr.get_array_length().map_err(|e| napi_failed(path, &e))?;
    (0..len)
        .map(|i| {
            let item: Unknown<'_> = arr
                .get_element(i)
                .map_err(|e| napi_failed(&format!("{path}[{i}]"), &e))?;
            string(item, &format!("{path}[{i}]"))
        })
        .collect()
}

fn string_map(value: Unknown<'_>, path: &str) -> Result<BTreeMap<String, String>, KtError> {
    let obj = object(value, path)?;
    entries(&obj, path)?
        .into_iter()
        .map(|(k, v)| {
            let p = format!("{path}.{k}");
            Ok((k, string(v, &p)?))
        })
        .collect()
}

/// A string parsed by kt-core's parser for it (`DnsMode`, `ShadowFlavour`): the
/// same spellings and the same message as every other front end.
fn parsed<T: FromStr<Err = kt_core::Error>>(value: Unknown<'_>, path: &str) -> Result<T, KtError> {
    string(value, path)?
        .parse::<T>()
        .map_err(|e| KtError::from(e).at(path))
}

fn ip(value: Unknown<'_>, path: &str) -> Result<IpAddr, KtError> {
    let s = string(value, path)?;
    s.trim().parse().map_err(|e| {
        KtError::invalid(format!(
            "{path}: `{s}` is not an IP address (like 10.96.0.10): {e}"
        ))
    })
}

fn cidrs(value: Unknown<'_>, path: &str) -> Result<Vec<IpNet>, KtError> {
    string_array(value, path)?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            kt_core::parse_net(s).map_err(|e| KtError::from(e).at(&format!("{path}[{i}]")))
        })
        .collect()
}
