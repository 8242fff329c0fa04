//! [`Expose`]: a local port published as a new Service in the cluster.
//!
//! The Service selects the expose shadow and is owned by its pod, so it goes with the
//! pod: on close, and, when this process dies, once the shadow's watchdog sees the
//! Lease expire and removes its own pod.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kt_proto::{Role, labels};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use super::identity::Grants;
use super::{EXPOSE_LABEL, Inbound, Plan, check_local, shadow_options};
use crate::cluster::workload::ListenPort;
use crate::cluster::{Cluster, is_not_found};
use crate::error::{Error, Result};
use crate::events::{Event, EventBus, Events};
use crate::options::{ConnectOptions, ExposeOptions, PortMap, RemotePort, ServiceType};
use crate::task::Teardown;

/// A local port published as a Service: pods reach `name` (and `name.namespace`) and
/// the connection arrives at a local port. Made by
/// [`Session::expose`](crate::Session::expose).
pub struct Expose {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    service: String,
    service_type: ServiceType,
    ports: Vec<ListenPort>,
    cluster: Cluster,
    inbound: Inbound,
    events: Arc<EventBus>,
    teardown: Teardown,
}

impl std::fmt::Debug for Expose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expose")
            .field("id", &self.inner.id)
            .field("service", &self.inner.service)
            .field("pod", &self.inner.inbound.name)
            .finish_non_exhaustive()
    }
}

/// The expose shadow's Lease lasts this long without renewal before its watchdog
/// removes the shadow (and the Service with it).
const EXPOSE_TTL: Duration = Duration::from_secs(30);

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Each `local[:remote]` as a Service port `remote` (default: the local number),
/// served by the shadow on the same number.
fn expose_ports(name: &str, ports: &[PortMap]) -> Result<Vec<ListenPort>> {
    if ports.is_empty() {
        return Err(Error::InvalidArgument {
            what: format!("ports of the expose of `{name}`"),
            value: String::new(),
            expected: "at least one `local[:remote]` port".to_owned(),
        });
    }
    let mut out: Vec<ListenPort> = Vec::new();
    for map in ports {
        let port = match &map.remote {
            RemotePort::Same => map.local,
            RemotePort::Number(n) => *n,
            RemotePort::Name(n) => {
                return Err(Error::InvalidArgument {
                    what: format!("port `{map}` of the expose of `{name}`"),
                    value: n.clone(),
                    expected: "a port number for the new Service (`8080` or `8080:80`); \
                               names refer to ports of existing workloads"
                        .to_owned(),
                });
            }
        };
        if out.iter().any(|p| p.port == port) {
            return Err(Error::InvalidArgument {
                what: format!("port `{map}` of the expose of `{name}`"),
                value: port.to_string(),
                expected: "each Service port once".to_owned(),
            });
        }
        out.push(ListenPort {
            local: map.local,
            port,
            name: None,
        });
    }
    Ok(out)
}

impl Expose {
    pub(crate) async fn start(
        cluster: &Cluster,
        session_opts: &ConnectOptions,
        session_pod: &str,
        name: &str,
        ports: &[PortMap],
        opts: ExposeOptions,
    ) -> Result<Expose> {
        let events = Arc::new(EventBus::new(opts.on_event.clone()));
        if !valid_service_name(name) {
            return Err(Error::InvalidArgument {
                what: "Service name".to_owned(),
                value: name.to_owned(),
                expected: "a DNS label: lowercase letters, digits and `-`, starting with a \
                           letter, at most 63 characters"
                    .to_owned(),
            });
        }
        let listen = expose_ports(name, ports)?;
        let services: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        if let Some(existing) = services
            .get_opt(name)
            .await
            .map_err(|e| cluster.error(e, "get", "services", &format!("`{name}`")))?
        {
            let by_kt = existing
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::SESSION).cloned());
            return Err(Error::TargetHeld {
                message: format!(
                    "Service `{name}` already exists in namespace `{}`{}: expose creates a \
                     new Service and never changes an existing one; pick another name, or \
                     swap the existing Service's workload instead",
                    cluster.namespace,
                    by_kt
                        .map(|s| format!(" (made by kt session `{s}`)"))
                        .unwrap_or_default()
                ),
            });
        }
        if opts.check_local {
            check_local(listen.iter().map(|p| p.local).collect::<Vec<_>>()).await?;
        }
        let id = crate::shadow::session_id();
        let shadow_opts = shadow_options(session_opts, EXPOSE_TTL);
        let inbound = Box::pin(Inbound::launch(Plan {
            cluster,
            opts: &shadow_opts,
            role: Role::ShadowExpose,
            id: &id,
            pod_labels: BTreeMap::from([(EXPOSE_LABEL.to_owned(), id.clone())]),
            ports: &listen,
            grants: Grants {
                delete_pods: vec![session_pod.to_owned()],
                ..Grants::default()
            },
            watchdog_args: vec![
                kt_proto::cli::SELF_DELETE.to_owned(),
                kt_proto::cli::DELETE_POD.to_owned(),
                session_pod.to_owned(),
            ],
            borrow_from: None,
            events: &events,
        }))
        .await?;
        let expose = Expose {
            inner: Arc::new(Inner {
                id,
                service: name.to_owned(),
                service_type: opts.service_type,
                ports: listen,
                cluster: cluster.clone(),
                inbound,
                events: Arc::clone(&events),
                teardown: Teardown::new(),
            }),
        };
        if let Err(e) = expose.inner.create_service(session_opts).await {
            if let Err(c) = expose.inner.inbound.stop().await {
                tracing::warn!(target: "kt", "after a failed expose of {name}: {c}");
            }
            return Err(e);
        }
        Ok(expose)
    }

    /// The expose's id (the `kt.dev/session` label of its objects).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The Service's name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The expose shadow pod's name.
    pub fn pod_name(&self) -> &str {
        &self.inner.inbound.name
    }

    /// `(local, remote)` for every port: connections to the Service's port `remote`
    /// arrive at `127.0.0.1:local`.
    pub fn ports(&self) -> Vec<(u16, u16)> {
        self.inner.ports.iter().map(|p| (p.local, p.port)).collect()
    }

    /// How many connections arrived from the cluster so far.
    pub fn connections(&self) -> u64 {
        self.inner.inbound.connections.load(Ordering::Relaxed)
    }

    /// Every event of this expose so far, then new ones, until it is closed.
    pub fn events(&self) -> Events {
        self.inner.events.subscribe()
    }

    /// Removes the Service, the shadow and its identity, and waits until they are
    /// gone. Calling it again does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Cleanup`] naming what could not be removed.
    pub async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        inner
            .teardown
            .close_reporting(&inner.events, inner.shut_down())
            .await
    }
}

impl Drop for Expose {
    fn drop(&mut self) {
        let inner = Arc::clone(&self.inner);
        let leftover = || {
            format!(
                "expose {} dropped without close() outside a tokio runtime: Service `{}` \
                 goes when its shadow's lease expires",
                self.inner.id, self.inner.service
            )
        };
        self.inner.teardown.on_drop(
            || self.inner.inbound.stop_tasks(),
            async move {
                if let Err(e) = inner.shut_down().await {
                    tracing::warn!(target: "kt", "expose dropped without close(): {e}");
                }
            },
            leftover,
        );
    }
}

impl Inner {
    async fn create_service(&self, session_opts: &ConnectOptions) -> Result<()> {
        let mut labels = session_opts.labels.clone();
        labels.insert(
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        );
        labels.insert(labels::SESSION.to_owned(), self.id.clone());
        labels.insert(
            labels::ROLE.to_owned(),
            Role::ShadowExpose.as_str().to_owned(),
        );
        let owner = crate::shadow::spec::ShadowSpec::owner_reference(&self.inbound.shadow.pod);
        let service = Service {
            metadata: ObjectMeta {
                name: Some(self.service.clone()),
                labels: Some(labels),
                owner_references: owner.map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(self.service_type.as_str().to_owned()),
                selector: Some(BTreeMap::from([(EXPOSE_LABEL.to_owned(), self.id.clone())])),
                ports: Some(
                    self.ports
                        .iter()
                        .map(|p| ServicePort {
                            name: (self.ports.len() > 1).then(|| format!("port-{}", p.port)),
                            port: i32::from(p.port),
                            target_port: Some(IntOrString::Int(i32::from(p.port))),
                            protocol: Some("TCP".to_owned()),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let api: Api<Service> =
            Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace);
        api.create(&PostParams::default(), &service)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 409 => Error::TargetHeld {
                    message: format!(
                        "Service `{}` was created by someone else while kt started the \
                         expose; pick another name",
                        self.service
                    ),
                },
                _ => self
                    .cluster
                    .error(e, "create", "services", &format!("`{}`", self.service)),
            })?;
        self.events.emit(Event::ServiceCreated {
            service: self.service.clone(),
        });
        Ok(())
    }

    async fn shut_down(&self) -> Result<()> {
        let api: Api<Service> =
            Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace);
        let deleted = match api.delete(&self.service, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => {
                Err(self
                    .cluster
                    .error(e, "delete", "services", &format!("`{}`", self.service)))
            }
        };
        let stopped = self.inbound.stop().await;
        deleted.and(stopped)
    }
}
