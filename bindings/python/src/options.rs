//! `ConnectOptions` and `VpnOptions`: every argument checked once, when the options are
//! made, so a mistake raises before anything happens in the cluster.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kt_core::{DnsMode, ShadowFlavour};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::error::{invalid, option_error};
use crate::events::event_to_py;

/// A duration given as seconds (int or float) or a `datetime.timedelta`, for the
/// option `name`; `None` when not given.
pub(crate) fn duration(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.is_none() {
        return Ok(None);
    }
    let seconds: f64 = if value.hasattr("total_seconds")? {
        value.call_method0("total_seconds")?.extract()?
    } else if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a number of seconds or a datetime.timedelta, not bool"
        )));
    } else {
        value.extract().map_err(|_| {
            let type_name = value
                .get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string());
            PyTypeError::new_err(format!(
                "{name} must be a number of seconds or a datetime.timedelta, not {type_name}"
            ))
        })?
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(invalid(format!(
            "{name} must be a positive, finite number of seconds, not {seconds}"
        )));
    }
    Duration::try_from_secs_f64(seconds)
        .map(Some)
        .map_err(|e| invalid(format!("{name} = {seconds} s: {e}")))
}

/// A TCP/UDP port for the option or argument `name`: 1-65535, or 0 when `zero_ok`
/// (meaning "any free port").
pub(crate) fn port(name: &str, value: i64, zero_ok: bool) -> PyResult<u16> {
    let low = if zero_ok { 0 } else { 1 };
    match u16::try_from(value) {
        Ok(p) if i64::from(p) >= low => Ok(p),
        _ => Err(invalid(format!(
            "{name} {value} is not a port number ({low}-65535)"
        ))),
    }
}

/// A kt-core parser's result, its error naming the option `name`.
fn parsed<T>(name: &'static str, result: kt_core::Result<T>) -> PyResult<T> {
    result.map_err(|e| option_error(name, e))
}

/// Python's `...`: the default of a keyword whose `None` means something (never).
fn ellipsis() -> Py<PyAny> {
    Python::attach(|py| py.Ellipsis())
}

/// VPN mode settings (needs CAP_NET_ADMIN): pass them as `Session.connect(vpn=...)`.
#[pyclass(frozen, module = "ktconnect._native")]
#[derive(Clone)]
pub(crate) struct VpnOptions {
    pub(crate) inner: kt_core::VpnOptions,
    summary: String,
}

#[pymethods]
impl VpnOptions {
    #[new]
    #[pyo3(signature = (*, include=None, exclude=None, discover=true, tun_name=None, mtu=None, address=None, dns="auto", dns_listen=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keyword arguments, one per setting"
    )]
    fn new(
        include: Option<Vec<String>>,
        exclude: Option<Vec<String>>,
        discover: bool,
        tun_name: Option<String>,
        mtu: Option<i64>,
        address: Option<String>,
        dns: &str,
        dns_listen: Option<String>,
    ) -> PyResult<Self> {
        let mut v = kt_core::VpnOptions::new();
        let include = include.unwrap_or_default();
        let exclude = exclude.unwrap_or_default();
        for text in &include {
            v = v.include(parsed("include", kt_core::parse_net(text))?);
        }
        for text in &exclude {
            v = v.exclude(parsed("exclude", kt_core::parse_net(text))?);
        }
        if !discover {
            if include.is_empty() {
                return Err(invalid(
                    "discover=False routes only the `include` ranges, and none were given",
                ));
            }
            v = v.no_discovery();
        }
        if let Some(name) = &tun_name {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                return Err(invalid(format!(
                    "tun_name `{name}` is not a network device name (1-15 characters, no \
                     `/` or spaces)"
                )));
            }
            v = v.tun_name(name.clone());
        }
        if let Some(mtu) = mtu {
            let mtu = u16::try_from(mtu)
                .map_err(|_| invalid(format!("mtu {mtu} is out of range (up to 65535)")))?;
            v = v.mtu(mtu);
        }
        if let Some(text) = &address {
            let ip: Ipv4Addr = text.parse().map_err(|_| {
                invalid(format!(
                    "address `{text}` is not an IPv4 address (the tun device's own, e.g. \
                     198.18.0.1)"
                ))
            })?;
            v = v.address(ip);
        }
        v = v.dns(parsed("dns", dns.parse::<DnsMode>())?);
        if let Some(text) = &dns_listen {
            let addr: SocketAddr = text.parse().map_err(|_| {
                invalid(format!(
                    "dns_listen `{text}` is not an address with a port (`127.0.0.1:53`)"
                ))
            })?;
            v = v.dns_listen(addr);
        }
        let summary = format!(
            "VpnOptions(include={include:?}, exclude={exclude:?}, discover={}, dns={dns:?})",
            if discover { "True" } else { "False" }
        );
        Ok(VpnOptions { inner: v, summary })
    }

    fn __repr__(&self) -> String {
        self.summary.clone()
    }
}

/// How to open a session; every argument is keyword-only and optional.
#[pyclass(frozen, module = "ktconnect._native")]
pub(crate) struct ConnectOptions {
    inner: kt_core::ConnectOptions,
    summary: String,
}

impl ConnectOptions {
    /// kt-core's options (a copy: each connect gets its own).
    pub(crate) fn build(&self) -> kt_core::ConnectOptions {
        self.inner.clone()
    }
}

#[pymethods]
impl ConnectOptions {
    #[new]
    #[pyo3(signature = (
        *,
        kubeconfig=None,
        context=None,
        namespace=None,
        shadow_image=None,
        base_image=None,
        agent_dir=None,
        flavour="kt-shadow",
        shadow_probe_binary=None,
        sshd_path=None,
        labels=None,
        annotations=None,
        image_pull_secrets=None,
        node_selector=None,
        pod_ready_timeout=None,
        port_forward_timeout=None,
        connect_timeout=None,
        dns_timeout=None,
        close_timeout=None,
        reconnect_timeout=None,
        heartbeat_interval=None,
        shadow_heartbeat_timeout=ellipsis(),
        ssh_port=None,
        socks5_port=0,
        http_proxy_port=0,
        proxy_auth=false,
        cluster_domain=None,
        dns_server=None,
        vpn=None,
        on_event=None,
    ))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keyword arguments, one per setting"
    )]
    fn new(
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        namespace: Option<String>,
        shadow_image: Option<String>,
        base_image: Option<String>,
        agent_dir: Option<PathBuf>,
        flavour: &str,
        shadow_probe_binary: Option<String>,
        sshd_path: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        annotations: Option<BTreeMap<String, String>>,
        image_pull_secrets: Option<Vec<String>>,
        node_selector: Option<BTreeMap<String, String>>,
        pod_ready_timeout: Option<&Bound<'_, PyAny>>,
        port_forward_timeout: Option<&Bound<'_, PyAny>>,
        connect_timeout: Option<&Bound<'_, PyAny>>,
        dns_timeout: Option<&Bound<'_, PyAny>>,
        close_timeout: Option<&Bound<'_, PyAny>>,
        reconnect_timeout: Option<&Bound<'_, PyAny>>,
        heartbeat_interval: Option<&Bound<'_, PyAny>>,
        shadow_heartbeat_timeout: Py<PyAny>,
        ssh_port: Option<i64>,
        socks5_port: i64,
        http_proxy_port: i64,
        proxy_auth: bool,
        cluster_domain: Option<String>,
        dns_server: Option<String>,
        vpn: Option<PyRef<'_, VpnOptions>>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let mut o = kt_core::ConnectOptions::new()
            .flavour(parsed("flavour", flavour.parse::<ShadowFlavour>())?);
        if let Some(path) = &kubeconfig {
            if path.as_os_str().is_empty() {
                return Err(invalid("kubeconfig is an empty path"));
            }
            o = o.kubeconfig(path);
        }
        if let Some(c) = &context {
            o = o.context(c);
        }
        if let Some(ns) = &namespace {
            if ns.is_empty() {
                return Err(invalid(
                    "namespace is empty: name one, or leave it out for the kubeconfig's",
                ));
            }
            o = o.namespace(ns);
        }
        if let Some(image) = &shadow_image {
            if image.trim().is_empty() {
                return Err(invalid("shadow_image is empty"));
            }
            o = o.shadow_image(image);
        }
        if let Some(image) = &base_image {
            if image.trim().is_empty() {
                return Err(invalid("base_image is empty"));
            }
            o = o.base_image(image);
        }
        if let Some(dir) = &agent_dir {
            if dir.as_os_str().is_empty() {
                return Err(invalid(
                    "agent_dir is an empty path: name the directory with kt-shadow \
                     (kt-shadow/build-static makes it), or leave it out",
                ));
            }
            o = o.agent_dir(dir);
        }
        if let Some(path) = &shadow_probe_binary {
            if path.trim().is_empty() {
                return Err(invalid("shadow_probe_binary is empty"));
            }
            o = o.shadow_probe_binary(path);
        }
        if let Some(path) = &sshd_path {
            if path.trim().is_empty() {
                return Err(invalid("sshd_path is empty"));
            }
            o = o.sshd_path(path);
        }
        for (k, v) in labels.unwrap_or_default() {
            o = o.label(k, v);
        }
        for (k, v) in annotations.unwrap_or_default() {
            o = o.annotation(k, v);
        }
        for s in image_pull_secrets.unwrap_or_default() {
            o = o.image_pull_secret(s);
        }
        for (k, v) in node_selector.unwrap_or_default() {
            o = o.node_selector(k, v);
        }
        type Setter = fn(kt_core::ConnectOptions, Duration) -> kt_core::ConnectOptions;
        let timeouts: [(&str, Option<&Bound<'_, PyAny>>, Setter); 7] = [
            (
                "pod_ready_timeout",
                pod_ready_timeout,
                kt_core::ConnectOptions::pod_ready_timeout,
            ),
            (
                "port_forward_timeout",
                port_forward_timeout,
                kt_core::ConnectOptions::port_forward_timeout,
            ),
            (
                "connect_timeout",
                connect_timeout,
                kt_core::ConnectOptions::connect_timeout,
            ),
            (
                "dns_timeout",
                dns_timeout,
                kt_core::ConnectOptions::dns_timeout,
            ),
            (
                "close_timeout",
                close_timeout,
                kt_core::ConnectOptions::close_timeout,
            ),
            (
                "reconnect_timeout",
                reconnect_timeout,
                kt_core::ConnectOptions::reconnect_timeout,
            ),
            (
                "heartbeat_interval",
                heartbeat_interval,
                kt_core::ConnectOptions::heartbeat_interval,
            ),
        ];
        for (name, value, set) in timeouts {
            if let Some(d) = duration(name, value)? {
                o = set(o, d);
            }
        }
        // Not given (`...`): kt-core's default; None: never; else a duration.
        let watchdog = Python::attach(|py| -> PyResult<Option<Option<Duration>>> {
            let value = shadow_heartbeat_timeout.bind(py);
            if value.is(py.Ellipsis().bind(py)) {
                return Ok(None);
            }
            Ok(Some(duration("shadow_heartbeat_timeout", Some(value))?))
        })?;
        if let Some(timeout) = watchdog {
            o = o.shadow_heartbeat_timeout(timeout);
        }
        if let Some(p) = ssh_port {
            o = o.ssh_port(port("ssh_port", p, false)?);
        }
        o = o
            .socks5_port(port("socks5_port", socks5_port, true)?)
            .http_proxy_port(port("http_proxy_port", http_proxy_port, true)?)
            .proxy_auth(proxy_auth);
        if let Some(domain) = &cluster_domain {
            o = o.cluster_domain(domain);
        }
        if let Some(text) = &dns_server {
            let ip: IpAddr = text.parse().map_err(|_| {
                invalid(format!(
                    "dns_server `{text}` is not an IP address (the cluster DNS Service's \
                     ClusterIP, e.g. 10.96.0.10)"
                ))
            })?;
            o = o.dns_server(ip);
        }
        let vpn_summary = vpn.as_ref().map(|v| v.summary.clone());
        if let Some(v) = vpn {
            o = o.vpn(v.inner.clone());
        }
        if let Some(callback) = on_event {
            Python::attach(|py| {
                if !callback.bind(py).is_callable() {
                    return Err(PyTypeError::new_err(
                        "on_event must be callable (it is called with each Event)",
                    ));
                }
                Ok(())
            })?;
            o = o.on_event(move |event| {
                Python::attach(|py| {
                    let called = event_to_py(py, event)
                        .and_then(|e| callback.bind(py).call1((e,)).map(drop));
                    if let Err(e) = called {
                        e.write_unraisable(py, Some(callback.bind(py)));
                    }
                });
            });
        }
        let image = o
            .image()
            .map_or_else(|| "None".to_owned(), |image| format!("{image:?}"));
        let summary = format!(
            "ConnectOptions(kubeconfig={kubeconfig:?}, context={context:?}, \
             namespace={namespace:?}, flavour={flavour:?}, image={image}, proxy_auth={}, vpn={})",
            if proxy_auth { "True" } else { "False" },
            vpn_summary.as_deref().unwrap_or("None"),
        );
        Ok(ConnectOptions { inner: o, summary })
    }

    /// The image the shadow pod will run: the `shadow_image` option, else
    /// `$KT_SHADOW_IMAGE`; `None` when kt ships its agent instead (the default).
    #[getter]
    fn shadow_image(&self) -> Option<String> {
        self.inner.image()
    }

    fn __repr__(&self) -> String {
        self.summary.clone()
    }
}
