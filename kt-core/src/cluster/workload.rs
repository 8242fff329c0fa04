//! What a swap takes over: the target named by the caller (`deploy/web`, `sts/db`,
//! `svc/web`, a bare name), the Services that select it, its workload, and the ports
//! the swap shadow listens on, resolved from Service ports, container ports and port
//! names.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};

use crate::cluster::{Cluster, is_not_found};
use crate::error::{Error, Result};
use crate::options::{PortMap, RemotePort};

/// A kind of object a swap may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    Deployment,
    StatefulSet,
    Service,
}

impl TargetKind {
    /// The kind as the restore records name it.
    pub(crate) fn proto(self) -> kt_proto::restore::Kind {
        match self {
            TargetKind::Deployment => kt_proto::restore::Kind::Deployment,
            TargetKind::StatefulSet => kt_proto::restore::Kind::StatefulSet,
            TargetKind::Service => kt_proto::restore::Kind::Service,
        }
    }

    /// The short form used in messages and in `kind/name`.
    pub(crate) fn short(self) -> &'static str {
        match self {
            TargetKind::Deployment => "deploy",
            TargetKind::StatefulSet => "sts",
            TargetKind::Service => "svc",
        }
    }
}

/// A swap target as the caller wrote it: a kind (or none, for a bare name) and a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetName {
    pub(crate) kind: Option<TargetKind>,
    pub(crate) name: String,
}

impl FromStr for TargetName {
    type Err = Error;

    fn from_str(s: &str) -> Result<TargetName> {
        let invalid = |reason: &str| Error::InvalidTarget {
            target: s.to_owned(),
            reason: reason.to_owned(),
        };
        let text = s.trim();
        let (kind, name) = match text.split_once('/') {
            None => (None, text),
            Some((kind, name)) => {
                let kind = match kind.to_ascii_lowercase().as_str() {
                    "deploy" | "deployment" | "deployments" | "deployment.apps" => {
                        TargetKind::Deployment
                    }
                    "sts" | "statefulset" | "statefulsets" | "statefulset.apps" => {
                        TargetKind::StatefulSet
                    }
                    "svc" | "service" | "services" => TargetKind::Service,
                    other => {
                        return Err(invalid(&format!(
                            "unknown kind `{other}`: swap takes `deploy/NAME`, `sts/NAME`, \
                             `svc/NAME` or a bare NAME"
                        )));
                    }
                };
                (Some(kind), name)
            }
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err(invalid(
                "not an object name (lowercase letters, digits, `-` and `.`); write \
                 `deploy/NAME`, `sts/NAME`, `svc/NAME` or a bare NAME",
            ));
        }
        Ok(TargetName {
            kind,
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Some(kind) => write!(f, "{}/{}", kind.short(), self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A Deployment or StatefulSet: what its pods look like and how many it runs.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub(crate) kind: TargetKind,
    pub(crate) name: String,
    /// The labels of its pod template (without controller-added ones).
    pub(crate) pod_labels: BTreeMap<String, String>,
    /// `spec.replicas` (`None`: unset, which means 1).
    pub(crate) replicas: Option<i32>,
    /// Container ports of the pod template: (name, number), TCP only.
    pub(crate) ports: Vec<(Option<String>, u16)>,
    /// Its UDP container ports: (name, number).
    pub(crate) udp_ports: Vec<(Option<String>, u16)>,
}

impl Workload {
    fn from_template(
        kind: TargetKind,
        name: &str,
        template: &PodTemplateSpec,
        replicas: Option<i32>,
    ) -> Workload {
        let pod_labels = (template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let of = |protocol: &str| -> Vec<(Option<String>, u16)> {
            (template.spec.as_ref().map(|s| s.containers.as_slice()))
                .unwrap_or_default()
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == protocol)
                .filter_map(|p| Some((p.name.clone(), u16::try_from(p.container_port).ok()?)))
                .collect()
        };
        Workload {
            kind,
            name: name.to_owned(),
            pod_labels,
            replicas,
            ports: of("TCP"),
            udp_ports: of("UDP"),
        }
    }

    /// `deploy/web`.
    pub(crate) fn display(&self) -> String {
        format!("{}/{}", self.kind.short(), self.name)
    }

    /// Whether a Service `selector` selects this workload's pods.
    fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        !selector.is_empty()
            && selector
                .iter()
                .all(|(k, v)| self.pod_labels.get(k) == Some(v))
    }
}

/// A resolved swap target.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The Services whose selector selects the target (selector mode switches these).
    pub(crate) services: Vec<Service>,
    /// The workload behind the target, if one was found.
    pub(crate) workload: Option<Workload>,
}

impl Resolved {
    /// A label selector of the target's pods (`app=web`): its workload's pod labels,
    /// else its first Service's selector. An imageless shadow borrows their image.
    pub(crate) fn pod_selector(&self) -> Option<String> {
        let labels = (self.workload.as_ref())
            .map(|w| w.pod_labels.clone())
            .filter(|l| !l.is_empty())
            .or_else(|| (self.services.first().map(service_selector)).filter(|s| !s.is_empty()))?;
        Some(selector_text(&labels))
    }
}

/// `labels` as a label selector: `k=v,k2=v2`.
pub(crate) fn selector_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One port the swap shadow listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenPort {
    /// The local port connections go to.
    pub(crate) local: u16,
    /// The port number the shadow listens on (a container port of the target).
    pub(crate) port: u16,
    /// The container port's name, if it has one (named Service target ports resolve
    /// through it).
    pub(crate) name: Option<String>,
}

/// The selector that says which workload a Service belongs to: its own, or, while a
/// kt swap holds it (its selector points at the swap shadow), the original one kt
/// recorded on it.
pub(crate) fn service_selector(svc: &Service) -> BTreeMap<String, String> {
    let recorded = (svc.metadata.annotations.as_ref())
        .and_then(|a| a.get(kt_proto::annotations::RESTORE))
        .and_then(|text| kt_proto::restore::Record::from_json(text).ok())
        .and_then(|record| {
            record
                .changes
                .into_iter()
                .find(|c| c.path == kt_proto::restore::SELECTOR_PATH)
        })
        .and_then(|change| change.original)
        .and_then(|original| serde_json::from_value::<BTreeMap<String, String>>(original).ok());
    recorded.unwrap_or_else(|| {
        (svc.spec.as_ref())
            .and_then(|s| s.selector.clone())
            .unwrap_or_default()
    })
}

fn service_name(svc: &Service) -> &str {
    svc.metadata.name.as_deref().unwrap_or_default()
}

impl Cluster {
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn statefulsets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn workload(&self, kind: TargetKind, name: &str) -> Result<Option<Workload>> {
        let found = match kind {
            TargetKind::Deployment => self.deployments().get_opt(name).await.map(|d| {
                d.and_then(|d| {
                    let spec = d.spec?;
                    Some(Workload::from_template(
                        kind,
                        name,
                        &spec.template,
                        spec.replicas,
                    ))
                })
            }),
            TargetKind::StatefulSet => self.statefulsets().get_opt(name).await.map(|s| {
                s.and_then(|s| {
                    let spec = s.spec?;
                    Some(Workload::from_template(
                        kind,
                        name,
                        &spec.template,
                        spec.replicas,
                    ))
                })
            }),
            TargetKind::Service => return Ok(None),
        };
        let resource = match kind {
            TargetKind::Deployment => "deployments",
            _ => "statefulsets",
        };
        found.map_err(|e| self.error(e, "get", resource, &format!("`{name}` (the swap target)")))
    }

    async fn all_workloads(&self) -> Result<Vec<Workload>> {
        let lp = ListParams::default();
        let deployments = (self.deployments().list(&lp).await)
            .map_err(|e| self.error(e, "list", "deployments", "(to find the swap target)"))?;
        let statefulsets = (self.statefulsets().list(&lp).await)
            .map_err(|e| self.error(e, "list", "statefulsets", "(to find the swap target)"))?;
        let mut all = Vec::new();
        for d in deployments {
            if let (Some(name), Some(spec)) = (d.metadata.name.as_deref(), d.spec.as_ref()) {
                all.push(Workload::from_template(
                    TargetKind::Deployment,
                    name,
                    &spec.template,
                    spec.replicas,
                ));
            }
        }
        for s in statefulsets {
            if let (Some(name), Some(spec)) = (s.metadata.name.as_deref(), s.spec.as_ref()) {
                all.push(Workload::from_template(
                    TargetKind::StatefulSet,
                    name,
                    &spec.template,
                    spec.replicas,
                ));
            }
        }
        Ok(all)
    }

    async fn all_services(&self) -> Result<Vec<Service>> {
        let list = (self
            .services_in(&self.namespace)
            .list(&ListParams::default())
            .await)
            .map_err(|e| self.error(e, "list", "services", "(to find the swap target)"))?;
        Ok(list.items)
    }

    /// Finds the target: for a workload, the Services selecting its pods; for a
    /// Service, the workload its selector selects (if exactly one does). A bare name is
    /// a Service if one has that name (as kt-connect's exchange takes it), else a
    /// Deployment, else a StatefulSet.
    pub(crate) async fn resolve_swap_target(&self, target: &TargetName) -> Result<Resolved> {
        let not_found = |detail: String| Error::TargetNotFound {
            kind: target
                .kind
                .map_or("deployment, statefulset or service", |k| match k {
                    TargetKind::Deployment => "deployment",
                    TargetKind::StatefulSet => "statefulset",
                    TargetKind::Service => "service",
                }),
            name: target.name.clone(),
            namespace: self.namespace.clone(),
            detail,
        };
        let services = self.all_services().await?;
        let named_service = || {
            services
                .iter()
                .find(|s| service_name(s) == target.name)
                .cloned()
        };
        let kinds = match target.kind {
            Some(kind) => vec![kind],
            None => vec![
                TargetKind::Service,
                TargetKind::Deployment,
                TargetKind::StatefulSet,
            ],
        };
        for kind in kinds {
            if kind == TargetKind::Service {
                let Some(service) = named_service() else {
                    continue;
                };
                let selector = service_selector(&service);
                if selector.is_empty() {
                    return Err(Error::InvalidTarget {
                        target: target.to_string(),
                        reason: "the Service has no selector (its endpoints are managed by \
                                 hand), so there are no pods to take traffic from"
                            .to_owned(),
                    });
                }
                let mut workloads: Vec<Workload> = (self.all_workloads().await?.into_iter())
                    .filter(|w| w.selected_by(&selector))
                    .collect();
                let workload = match workloads.len() {
                    1 => workloads.pop(),
                    _ => None,
                };
                return Ok(Resolved {
                    services: vec![service],
                    workload,
                });
            }
            if let Some(workload) = self.workload(kind, &target.name).await? {
                let services = (services.iter())
                    .filter(|s| workload.selected_by(&service_selector(s)))
                    .cloned()
                    .collect();
                return Ok(Resolved {
                    services,
                    workload: Some(workload),
                });
            }
        }
        Err(not_found(String::new()))
    }

    /// Refuses a workload a HorizontalPodAutoscaler scales: it would scale it back up
    /// while swapped, and its own `minReplicas` would undo the restore's exactness.
    pub(crate) async fn refuse_autoscaled(&self, workload: &Workload) -> Result<()> {
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let hpas = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => {
                return Err(self.error(
                    e,
                    "list",
                    "horizontalpodautoscalers",
                    "(scale mode refuses autoscaled workloads)",
                ));
            }
        };
        let kind = match workload.kind {
            TargetKind::Deployment => "Deployment",
            _ => "StatefulSet",
        };
        for hpa in hpas {
            let Some(spec) = hpa.spec else { continue };
            if spec.scale_target_ref.kind == kind && spec.scale_target_ref.name == workload.name {
                return Err(Error::Unsupported {
                    feature: "scale mode",
                    reason: format!(
                        "{}: HorizontalPodAutoscaler `{}` scales it and would \
                         scale it back up while it is swapped; use selector mode (the \
                         default), which leaves the replica count alone",
                        workload.display(),
                        hpa.metadata.name.unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Resolved {
    /// The ports the shadow listens on for `ports`: each remote port may be a Service
    /// port (number or name; its target port is followed), or a container port of the
    /// workload (number or name).
    pub(crate) fn listen_ports(&self, target: &str, ports: &[PortMap]) -> Result<Vec<ListenPort>> {
        let mut out: Vec<ListenPort> = Vec::new();
        for map in ports {
            let remote = match &map.remote {
                RemotePort::Same => RemotePort::Number(map.local),
                other => other.clone(),
            };
            let resolved = self
                .resolve_port(&remote)
                .ok_or_else(|| Error::InvalidArgument {
                    what: format!("port `{map}` for {target}"),
                    value: match &remote {
                        RemotePort::Name(n) => n.clone(),
                        RemotePort::Number(n) => n.to_string(),
                        RemotePort::Same => map.local.to_string(),
                    },
                    expected: format!("one of the target's ports: {}", self.known_ports()),
                })?;
            if let Some(other) = out.iter().find(|p| p.port == resolved.0) {
                return Err(Error::InvalidArgument {
                    what: format!("port `{map}` for {target}"),
                    value: resolved.0.to_string(),
                    expected: format!(
                        "each port of the target once (it is already taken by local port {})",
                        other.local
                    ),
                });
            }
            out.push(ListenPort {
                local: map.local,
                port: resolved.0,
                name: resolved.1,
            });
        }
        Ok(out)
    }

    fn container_port(&self, remote: &RemotePort) -> Option<(u16, Option<String>)> {
        let workload = self.workload.as_ref()?;
        workload
            .ports
            .iter()
            .find(|(name, number)| match remote {
                RemotePort::Number(n) => number == n,
                RemotePort::Name(n) => name.as_deref() == Some(n.as_str()),
                RemotePort::Same => false,
            })
            .map(|(name, number)| (*number, name.clone()))
    }

    fn resolve_port(&self, remote: &RemotePort) -> Option<(u16, Option<String>)> {
        for svc in &self.services {
            for port in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                    continue;
                }
                let matches = match remote {
                    RemotePort::Number(n) => i32::from(*n) == port.port,
                    RemotePort::Name(n) => port.name.as_deref() == Some(n.as_str()),
                    RemotePort::Same => false,
                };
                if !matches {
                    continue;
                }
                return match &port.target_port {
                    None => Some((u16::try_from(port.port).ok()?, port.name.clone())),
                    Some(IntOrString::Int(n)) => {
                        let n = u16::try_from(*n).ok()?;
                        let name = self
                            .container_port(&RemotePort::Number(n))
                            .and_then(|(_, name)| name);
                        Some((n, name))
                    }
                    Some(IntOrString::String(name)) => {
                        self.container_port(&RemotePort::Name(name.clone()))
                    }
                };
            }
        }
        self.container_port(remote)
    }

    /// The container ports the Services' UDP ports reach: (name, number), each once.
    /// A named target port no container of the workload declares is an error.
    pub(crate) fn udp_ports(&self, target: &str) -> Result<Vec<(Option<String>, u16)>> {
        let mut out: Vec<(Option<String>, u16)> = Vec::new();
        for svc in &self.services {
            for port in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                if port.protocol.as_deref() != Some("UDP") {
                    continue;
                }
                let declared = |n: u16| {
                    (self.workload.iter())
                        .flat_map(|w| w.udp_ports.iter())
                        .find(|(_, p)| *p == n)
                        .map(|(name, _)| name.clone())
                        .unwrap_or_default()
                };
                let found = match &port.target_port {
                    None => u16::try_from(port.port).ok().map(|n| (declared(n), n)),
                    Some(IntOrString::Int(n)) => u16::try_from(*n).ok().map(|n| (declared(n), n)),
                    Some(IntOrString::String(name)) => (self.workload.iter())
                        .flat_map(|w| w.udp_ports.iter())
                        .find(|(n, _)| n.as_deref() == Some(name.as_str()))
                        .cloned(),
                };
                let Some(found) = found else {
                    return Err(Error::InvalidTarget {
                        target: target.to_owned(),
                        reason: format!(
                            "its UDP port {} targets `{}`, which no container of its workload \
                             declares, so the router could not pass it through",
                            port.port,
                            port.target_port
                                .as_ref()
                                .map_or(String::new(), |t| match t {
                                    IntOrString::Int(n) => n.to_string(),
                                    IntOrString::String(s) => s.clone(),
                                })
                        ),
                    });
                };
                if !out.iter().any(|(_, p)| *p == found.1) {
                    out.push(found);
                }
            }
        }
        Ok(out)
    }

    /// The ports a caller may name, for messages: `80 (http) -> 8080` for Service
    /// ports, `8080 (http)` for container ports.
    fn known_ports(&self) -> String {
        let mut known = Vec::new();
        for svc in &self.services {
            for port in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                let name = port
                    .name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                let target = match &port.target_port {
                    None => String::new(),
                    Some(IntOrString::Int(n)) => format!(" -> {n}"),
                    Some(IntOrString::String(s)) => format!(" -> {s}"),
                };
                known.push(format!(
                    "svc/{} port {}{name}{target}",
                    service_name(svc),
                    port.port
                ));
            }
        }
        if let Some(w) = &self.workload {
            for (name, number) in &w.ports {
                let name = name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                known.push(format!("{} container port {number}{name}", w.display()));
            }
        }
        if known.is_empty() {
            "none (neither a Service port nor a container port is declared)".to_owned()
        } else {
            known.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    use super::*;

    #[test]
    fn target_names_parse() {
        for (text, kind, name) in [
            ("deploy/web", Some(TargetKind::Deployment), "web"),
            ("Deployment/web", Some(TargetKind::Deployment), "web"),
            ("sts/db", Some(TargetKind::StatefulSet), "db"),
            ("statefulset/db-1", Some(TargetKind::StatefulSet), "db-1"),
            ("svc/web", Some(TargetKind::Service), "web"),
            ("web", None, "web"),
        ] {
            let t: TargetName = text.parse().unwrap();
            assert_eq!((t.kind, t.name.as_str()), (kind, name), "{text}");
        }
        for bad in [
            "",
            "pod/web",
            "deploy/",
            "deploy/Web",
            "a/b/c",
            "-web",
            "web_1",
        ] {
            let err = bad.parse::<TargetName>().unwrap_err();
            assert!(err.to_string().contains("NAME"), "{bad}: {err}");
        }
    }

    fn resolved() -> Resolved {
        let port = |name: &str, port: i32, target: Option<IntOrString>| ServicePort {
            name: Some(name.to_owned()),
            port,
            target_port: target,
            ..ServicePort::default()
        };
        let svc = Service {
            metadata: kube::api::ObjectMeta {
                name: Some("web".to_owned()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
                ports: Some(vec![
                    port("http", 80, Some(IntOrString::String("web".to_owned()))),
                    port("admin", 9000, Some(IntOrString::Int(9090))),
                    port("plain", 7000, None),
                ]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        Resolved {
            services: vec![svc],
            workload: Some(Workload {
                kind: TargetKind::Deployment,
                name: "web".to_owned(),
                pod_labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
                replicas: Some(2),
                ports: vec![(Some("web".to_owned()), 8080), (None, 9090)],
                udp_ports: vec![(Some("dns".to_owned()), 5353)],
            }),
        }
    }

    #[test]
    fn udp_ports_resolve_by_number_and_name() {
        let mut r = resolved();
        assert!(r.udp_ports("svc/web").unwrap().is_empty());
        {
            let ports = r.services[0]
                .spec
                .as_mut()
                .unwrap()
                .ports
                .get_or_insert_default();
            for (port, target) in [
                (53, IntOrString::String("dns".to_owned())),
                (54, IntOrString::Int(5353)),
                (55, IntOrString::Int(6000)),
            ] {
                ports.push(ServicePort {
                    port,
                    protocol: Some("UDP".to_owned()),
                    target_port: Some(target),
                    ..ServicePort::default()
                });
            }
        }
        assert_eq!(
            r.udp_ports("svc/web").unwrap(),
            [(Some("dns".to_owned()), 5353), (None, 6000)]
        );
        let ports = r.services[0]
            .spec
            .as_mut()
            .unwrap()
            .ports
            .get_or_insert_default();
        ports.push(ServicePort {
            port: 56,
            protocol: Some("UDP".to_owned()),
            target_port: Some(IntOrString::String("nope".to_owned())),
            ..ServicePort::default()
        });
        let err = r.udp_ports("svc/web").unwrap_err().to_string();
        assert!(err.contains("`nope`"), "{err}");
    }

    #[test]
    fn ports_resolve_through_services_and_containers() {
        let r = resolved();
        let maps = PortMap::parse_list(["1:80,2:admin,4:7000"]).unwrap();
        let ports = r.listen_ports("deploy/web", &maps).unwrap();
        let got: Vec<(u16, u16, Option<&str>)> = ports
            .iter()
            .map(|p| (p.local, p.port, p.name.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 8080, Some("web")),
                (2, 9090, None),
                (4, 7000, Some("plain"))
            ]
        );
        // Container ports by number and by name; the same number as local.
        let ports = r
            .listen_ports("deploy/web", &PortMap::parse_list(["5:web,9090"]).unwrap())
            .unwrap();
        assert_eq!((ports[0].port, ports[1].port), (8080, 9090));
        assert_eq!(ports[0].name.as_deref(), Some("web"));
    }

    #[test]
    fn unknown_and_repeated_ports_are_refused_with_the_known_ones() {
        let r = resolved();
        let err = r
            .listen_ports("deploy/web", &PortMap::parse_list(["1:81"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("svc/web port 80 (http) -> web"), "{err}");
        assert!(
            err.contains("deploy/web container port 8080 (web)"),
            "{err}"
        );
        let err = r
            .listen_ports("deploy/web", &PortMap::parse_list(["1:80,2:8080"]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("already taken by local port 1"), "{err}");
    }

    #[test]
    fn a_swapped_service_is_matched_by_its_recorded_selector() {
        let mut svc = resolved().services.remove(0);
        svc.spec.as_mut().unwrap().selector =
            Some(BTreeMap::from([("kt.dev/swap".to_owned(), "x".to_owned())]));
        let record =
            kt_proto::restore::Record::new(vec![kt_proto::restore::FieldChange::selector(
                Some(serde_json::json!({"app": "web"})),
                serde_json::json!({"kt.dev/swap": "x"}),
            )]);
        svc.metadata.annotations = Some(BTreeMap::from([(
            kt_proto::annotations::RESTORE.to_owned(),
            record.to_json(),
        )]));
        let w = resolved().workload.unwrap();
        assert!(w.selected_by(&service_selector(&svc)));
    }

    #[test]
    fn a_workload_is_selected_only_by_a_matching_non_empty_selector() {
        let w = resolved().workload.unwrap();
        let sel = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(w.selected_by(&sel(&[("app", "web")])));
        assert!(!w.selected_by(&sel(&[])));
        assert!(!w.selected_by(&sel(&[("app", "web"), ("tier", "x")])));
    }
}
