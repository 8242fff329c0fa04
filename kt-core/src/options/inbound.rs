//! What a caller chooses for the inbound operations: the ports ([`PortMap`]), swap's
//! [`SwapMode`] and [`SwapOptions`], expose's [`ExposeOptions`] and [`ServiceType`],
//! mesh's [`MeshRule`] and [`MeshOptions`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::events::{Callback, Event};

/// The default time after the last heartbeat at which a swap shadow's watchdog puts the
/// cluster back by itself (the client died without closing).
pub const DEFAULT_RESTORE_TTL: Duration = Duration::from_secs(30);

/// The port in the cluster a [`PortMap`] takes traffic from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RemotePort {
    /// The same number as the local port (`--expose 8080`).
    Same,
    /// A port number: a Service port or a container port of the target.
    Number(u16),
    /// A named port: a Service port name or a container port name of the target.
    Name(String),
}

/// One `local[:remote]` pair, as kt-connect's `--expose` takes them: connections to
/// `remote` in the cluster arrive at `127.0.0.1:local` on this machine.
///
/// ```
/// use kt_core::{PortMap, RemotePort};
///
/// let same: PortMap = "8080".parse()?;
/// assert_eq!((same.local, same.remote), (8080, RemotePort::Same));
/// let to_service_port: PortMap = "8080:80".parse()?;
/// assert_eq!(to_service_port.remote, RemotePort::Number(80));
/// let named: PortMap = "3000:http".parse()?;
/// assert_eq!(named.remote, RemotePort::Name("http".into()));
/// assert_eq!(named.to_string(), "3000:http");
/// assert!("0:80".parse::<PortMap>().is_err());
/// # Ok::<(), kt_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortMap {
    /// The port on this machine (on 127.0.0.1) that answers.
    pub local: u16,
    /// The port in the cluster whose traffic it takes.
    pub remote: RemotePort,
}

impl PortMap {
    /// `local` takes the traffic of the same port number in the cluster.
    pub fn new(local: u16) -> PortMap {
        PortMap {
            local,
            remote: RemotePort::Same,
        }
    }

    /// `local` takes the traffic of `remote` (a number or a port name).
    pub fn to(local: u16, remote: RemotePort) -> PortMap {
        PortMap { local, remote }
    }

    /// Parses a list (`8080,9090:grpc` or several values), each as [`FromStr`] does.
    ///
    /// ```
    /// let ports = kt_core::PortMap::parse_list(["8080,9090:grpc", "7000"])?;
    /// assert_eq!(ports.len(), 3);
    /// # Ok::<(), kt_core::Error>(())
    /// ```
    pub fn parse_list<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<PortMap>> {
        let mut ports = Vec::new();
        for value in values {
            for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                ports.push(item.parse()?);
            }
        }
        if ports.is_empty() {
            return Err(invalid_port("", "at least one port"));
        }
        Ok(ports)
    }
}

fn invalid_port(value: &str, expected: &str) -> Error {
    Error::InvalidArgument {
        what: "port".to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

const PORT_FORMS: &str = "`local` or `local:remote`, where local is a port number 1-65535 \
                          and remote a port number or a port name (`8080`, `8080:80`, \
                          `8080:http`)";

fn port_number(text: &str, whole: &str) -> Result<u16> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid_port(whole, PORT_FORMS)),
        Ok(port) => Ok(port),
    }
}

impl FromStr for PortMap {
    type Err = Error;

    fn from_str(s: &str) -> Result<PortMap> {
        let text = s.trim();
        let (local, remote) = match text.split_once(':') {
            None => (text, None),
            Some((local, remote)) => (local, Some(remote)),
        };
        let local = port_number(local, s)?;
        let remote = match remote {
            None => RemotePort::Same,
            Some(r) if r.chars().all(|c| c.is_ascii_digit()) => {
                RemotePort::Number(port_number(r, s)?)
            }
            // An IANA_SVC_NAME: what a container port's or Service port's name may be.
            Some(r)
                if !r.is_empty()
                    && r.len() <= 15
                    && r.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && r.chars().any(|c| c.is_ascii_lowercase()) =>
            {
                RemotePort::Name(r.to_owned())
            }
            Some(_) => return Err(invalid_port(s, PORT_FORMS)),
        };
        Ok(PortMap { local, remote })
    }
}

impl fmt::Display for PortMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.remote {
            RemotePort::Same => write!(f, "{}", self.local),
            RemotePort::Number(n) => write!(f, "{}:{n}", self.local),
            RemotePort::Name(n) => write!(f, "{}:{n}", self.local),
        }
    }
}

/// How a swap takes a workload's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SwapMode {
    /// The Services that select the workload select the swap shadow instead; the
    /// workload keeps running (its own connections and jobs go on). The default.
    #[default]
    Selector,
    /// The swap shadow carries the workload's pod labels and the workload is scaled to
    /// 0, so everything that selects its pods (Services, other selectors) reaches the
    /// shadow. A workload under a HorizontalPodAutoscaler is refused.
    Scale,
}

impl SwapMode {
    /// `selector` or `scale`.
    pub fn as_str(self) -> &'static str {
        match self {
            SwapMode::Selector => "selector",
            SwapMode::Scale => "scale",
        }
    }
}

impl fmt::Display for SwapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SwapMode {
    type Err = Error;

    /// ```
    /// use kt_core::SwapMode;
    /// assert_eq!("scale".parse::<SwapMode>()?, SwapMode::Scale);
    /// assert!("everything".parse::<SwapMode>().is_err());
    /// # Ok::<(), kt_core::Error>(())
    /// ```
    fn from_str(s: &str) -> Result<SwapMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "selector" => Ok(SwapMode::Selector),
            "scale" => Ok(SwapMode::Scale),
            _ => Err(Error::InvalidArgument {
                what: "swap mode".to_owned(),
                value: s.to_owned(),
                expected: "`selector` (switch the Service's selector) or `scale` (scale \
                           the workload to 0)"
                    .to_owned(),
            }),
        }
    }
}

/// How to run a [`Session::swap`](crate::Session::swap); a builder.
#[derive(Clone)]
pub struct SwapOptions {
    pub(crate) mode: SwapMode,
    pub(crate) check_local: bool,
    pub(crate) restore_ttl: Duration,
    pub(crate) on_event: Option<Callback>,
}

impl Default for SwapOptions {
    fn default() -> Self {
        SwapOptions {
            mode: SwapMode::Selector,
            check_local: true,
            restore_ttl: DEFAULT_RESTORE_TTL,
            on_event: None,
        }
    }
}

impl fmt::Debug for SwapOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwapOptions")
            .field("mode", &self.mode)
            .field("check_local", &self.check_local)
            .field("restore_ttl", &self.restore_ttl)
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

impl SwapOptions {
    /// Selector mode, local ports checked, restore TTL 30 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Selector (default) or scale mode.
    pub fn mode(mut self, mode: SwapMode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether to refuse a swap when nothing listens on a local port (default: true).
    /// Turn it off to start the local process after the swap.
    pub fn check_local(mut self, check: bool) -> Self {
        self.check_local = check;
        self
    }

    /// How long after the last heartbeat the swap shadow's watchdog restores the
    /// cluster by itself (default 30 s, at least 3 s). The heartbeat renews the lease
    /// at least three times per TTL.
    pub fn restore_ttl(mut self, ttl: Duration) -> Self {
        self.restore_ttl = ttl.max(Duration::from_secs(3));
        self
    }

    /// Called with every event of the swap as it happens (before `swap` returns too).
    pub fn on_event(mut self, callback: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(callback));
        self
    }
}

/// The type of the Service [`Session::expose`](crate::Session::expose) creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ServiceType {
    /// Reachable inside the cluster (the default).
    #[default]
    ClusterIp,
    /// Also on a port of every node.
    NodePort,
    /// Also through the cluster's load balancer, where it has one.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes name: `ClusterIP`, `NodePort`, `LoadBalancer`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceType {
    type Err = Error;

    /// Case-insensitive: `ClusterIP`, `clusterip`, `NodePort`, `LoadBalancer`.
    ///
    /// ```
    /// use kt_core::ServiceType;
    /// assert_eq!("nodeport".parse::<ServiceType>()?, ServiceType::NodePort);
    /// # Ok::<(), kt_core::Error>(())
    /// ```
    fn from_str(s: &str) -> Result<ServiceType> {
        match s.trim().to_ascii_lowercase().as_str() {
            "clusterip" => Ok(ServiceType::ClusterIp),
            "nodeport" => Ok(ServiceType::NodePort),
            "loadbalancer" => Ok(ServiceType::LoadBalancer),
            _ => Err(Error::InvalidArgument {
                what: "Service type".to_owned(),
                value: s.to_owned(),
                expected: "ClusterIP, NodePort or LoadBalancer".to_owned(),
            }),
        }
    }
}

/// How to run a [`Session::expose`](crate::Session::expose); a builder.
#[derive(Clone, Default)]
pub struct ExposeOptions {
    pub(crate) service_type: ServiceType,
    pub(crate) check_local: bool,
    pub(crate) on_event: Option<Callback>,
}

impl fmt::Debug for ExposeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExposeOptions")
            .field("service_type", &self.service_type)
            .field("check_local", &self.check_local)
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

impl ExposeOptions {
    /// A ClusterIP Service, local ports checked.
    pub fn new() -> Self {
        ExposeOptions {
            check_local: true,
            ..ExposeOptions::default()
        }
    }

    /// The Service's type (default ClusterIP).
    pub fn service_type(mut self, service_type: ServiceType) -> Self {
        self.service_type = service_type;
        self
    }

    /// Whether to refuse when nothing listens on a local port (default: true).
    pub fn check_local(mut self, check: bool) -> Self {
        self.check_local = check;
        self
    }

    /// Called with every event of the expose as it happens.
    pub fn on_event(mut self, callback: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(callback));
        self
    }
}

/// Which requests of a meshed Service a developer takes: a header equal to a value
/// (`version=alice`, or kt-connect's `version:alice`), a header matching a regex
/// (`x-dev~^ali`), a path prefix (`/api`), several joined by `&&` (all) or `||` (any).
///
/// ```
/// use kt_core::MeshRule;
///
/// let rule: MeshRule = "version:alice".parse()?;
/// assert_eq!(rule.to_string(), "version=alice");
/// assert_eq!(rule.header(), Some(("version", "alice")));
/// let err = "version=a && /api || x=1".parse::<MeshRule>().unwrap_err().to_string();
/// assert!(err.contains("mixes `&&` and `||`"), "{err}");
/// assert_eq!(err.matches("invalid mesh rule").count(), 1, "{err}");
/// let mark = MeshRule::version_mark();
/// assert_eq!(mark.header().map(|h| h.0), Some("version"));
/// # Ok::<(), kt_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshRule(pub(crate) kt_proto::mesh::Rule);

impl MeshRule {
    /// kt-connect's default mark: header `version` equal to a fresh random value.
    pub fn version_mark() -> MeshRule {
        let value = super::random_id();
        MeshRule(kt_proto::mesh::Rule::version_mark(&value))
    }

    /// The header a caller sends to be routed by this rule (its first header-equality
    /// clause), as `(name, value)`.
    pub fn header(&self) -> Option<(&str, &str)> {
        self.0.header()
    }
}

impl fmt::Display for MeshRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MeshRule {
    type Err = Error;

    fn from_str(s: &str) -> Result<MeshRule> {
        s.parse().map(MeshRule).map_err(|e| {
            let reason = match e {
                kt_proto::Error::InvalidRule { reason, .. } => format!("({reason}) "),
                _ => String::new(),
            };
            Error::InvalidArgument {
                what: "mesh rule".to_owned(),
                value: s.chars().take(80).collect(),
                expected: format!(
                    "{reason}`header=value` (or kt-connect's `header:value`), `header~regex` \
                     or `/path-prefix`, several joined by `&&` (all) or `||` (any)"
                ),
            }
        })
    }
}

/// How to run a [`Session::mesh`](crate::Session::mesh); a builder.
#[derive(Clone)]
pub struct MeshOptions {
    pub(crate) check_local: bool,
    pub(crate) restore_ttl: Duration,
    pub(crate) on_event: Option<Callback>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            check_local: true,
            restore_ttl: DEFAULT_RESTORE_TTL,
            on_event: None,
        }
    }
}

impl fmt::Debug for MeshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshOptions")
            .field("check_local", &self.check_local)
            .field("restore_ttl", &self.restore_ttl)
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

impl MeshOptions {
    /// Local ports checked, restore TTL 30 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to refuse when nothing listens on a local port (default: true).
    pub fn check_local(mut self, check: bool) -> Self {
        self.check_local = check;
        self
    }

    /// How long after the last heartbeat this developer's rule is removed by its
    /// shadow's watchdog (and, when it was the last one, the Service put back by the
    /// router) if this process dies without closing (default 30 s, at least 3 s).
    pub fn restore_ttl(mut self, ttl: Duration) -> Self {
        self.restore_ttl = ttl.max(Duration::from_secs(3));
        self
    }

    /// Called with every event of the mesh as it happens.
    pub fn on_event(mut self, callback: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(callback));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_maps_parse_and_print() {
        for (text, local, remote) in [
            ("8080", 8080, RemotePort::Same),
            (" 80:8080 ", 80, RemotePort::Number(8080)),
            ("3000:http", 3000, RemotePort::Name("http".to_owned())),
            ("1:grpc-web", 1, RemotePort::Name("grpc-web".to_owned())),
        ] {
            let map: PortMap = text.parse().unwrap();
            assert_eq!((map.local, map.remote.clone()), (local, remote), "{text}");
            assert_eq!(map.to_string().parse::<PortMap>().unwrap(), map);
        }
    }

    #[test]
    fn bad_port_maps_say_what_is_accepted() {
        for text in [
            "",
            "0",
            "8080:0",
            "70000",
            "8080:",
            ":80",
            "a:80",
            "8080:HTTP",
            "8080:a_b",
            "8080:verylongportname1",
            "1:2:3",
        ] {
            let err = text.parse::<PortMap>().unwrap_err();
            assert!(err.to_string().contains("`local:remote`"), "{text}: {err}");
        }
        assert!(PortMap::parse_list([" , "]).is_err());
    }

    #[test]
    fn modes_and_service_types_round_trip() {
        for mode in [SwapMode::Selector, SwapMode::Scale] {
            assert_eq!(mode.to_string().parse::<SwapMode>().unwrap(), mode);
        }
        for t in [
            ServiceType::ClusterIp,
            ServiceType::NodePort,
            ServiceType::LoadBalancer,
        ] {
            assert_eq!(t.to_string().parse::<ServiceType>().unwrap(), t);
        }
        assert!("Ingress".parse::<ServiceType>().is_err());
    }

    #[test]
    fn restore_ttl_has_a_floor() {
        let opts = SwapOptions::new().restore_ttl(Duration::from_millis(10));
        assert_eq!(opts.restore_ttl, Duration::from_secs(3));
        assert!(ExposeOptions::new().check_local);
        assert!(SwapOptions::new().check_local);
    }
}
