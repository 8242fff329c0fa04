//! The shadow's key pairs, Secret (OpenSSH flavour) and Pod.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapProjection, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, KeyToPath, LocalObjectReference, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, Pod, PodSecurityContext,
    PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kt_proto::cli::{ProbeArgs, ServeArgs};
use kt_proto::{Role, agent, annotations, labels, shadow};
use kube::api::ObjectMeta;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

use super::agent::Shipped;
use super::base::Base;
use crate::error::{Error, Result};
use crate::options::{ConnectOptions, ShadowFlavour};

/// Secret key holding the sshd configuration of the [`ShadowFlavour::OpenSsh`] shadow.
pub(crate) const SECRET_SSHD_CONFIG: &str = "sshd_config";

/// The name of the Secret volume in the shadow pod.
const KEYS_VOLUME: &str = "kt-keys";

/// The shadow container's name.
pub(crate) const CONTAINER: &str = "shadow";

/// The imageless shadow's volumes: the shipped agent's parts (read-only) and the
/// emptyDir the loader assembles kt-shadow in.
const AGENT_VOLUME: &str = "kt-agent";
const RUN_VOLUME: &str = "kt-run";

/// What the shadow container runs, and on which image.
#[derive(Debug, Clone)]
pub(crate) enum Runtime {
    /// An image with the SSH server in it (kt-shadow's Dockerfile, or any sshd image).
    Image(String),
    /// kt's agent shipped in ConfigMaps, run by its loader on an image the node has.
    Shipped {
        /// The image and where it is present.
        base: Base,
        /// The ConfigMaps the pod mounts.
        agent: Shipped,
    },
}

impl Runtime {
    /// The container's image.
    pub(crate) fn image(&self) -> &str {
        match self {
            Runtime::Image(image) => image,
            Runtime::Shipped { base, .. } => &base.image,
        }
    }

    /// The container's command and arguments to run kt-shadow with `args`: the image's
    /// entrypoint with `args`, or the loader that checks and runs the shipped binary.
    fn command(&self, args: Vec<String>) -> (Option<Vec<String>>, Vec<String>) {
        match self {
            Runtime::Image(_) => (None, args),
            Runtime::Shipped { agent: shipped, .. } => {
                let parts: Vec<String> = (shipped.parts.iter())
                    .map(|p| format!("{}/{p}", agent::AGENT_DIR))
                    .collect();
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                let mut argv = vec![shadow::BINARY_NAME.to_owned()];
                argv.extend(args);
                let loader = format!("{}/{}", agent::AGENT_DIR, agent::LOADER_FILE);
                (
                    Some(vec![loader]),
                    agent::loader_args(&shipped.sha256, &parts, &argv),
                )
            }
        }
    }
}

/// The key pairs of a session. The client's private key never leaves this process.
/// The host key pair is made here only for the OpenSSH flavour (sshd reads it from the
/// Secret): kt-shadow makes its own in memory and reports the public half in its log
/// (see [`super::host_key`]).
pub(crate) struct SessionKeys {
    pub(crate) client: Arc<PrivateKey>,
    /// The OpenSSH shadow's host key: its private half goes into the Secret, its
    /// public half is pinned. `None` for kt-shadow.
    pub(crate) host: Option<PrivateKey>,
}

impl SessionKeys {
    /// A fresh Ed25519 client key pair and, for a `flavour` that reads its host key
    /// from the Secret, a fresh Ed25519 host key pair.
    pub(crate) fn generate(session: &str, flavour: ShadowFlavour) -> Result<SessionKeys> {
        let mut rng = rand::rng();
        let mut client = PrivateKey::random(&mut rng, Algorithm::Ed25519)
            .map_err(|source| Error::Keys { source })?;
        client.set_comment(format!("kt-session-{session}"));
        let host = match flavour {
            ShadowFlavour::KtShadow => None,
            ShadowFlavour::OpenSsh => {
                let mut host = PrivateKey::random(&mut rng, Algorithm::Ed25519)
                    .map_err(|source| Error::Keys { source })?;
                host.set_comment(format!("kt-shadow-{session}"));
                Some(host)
            }
        };
        Ok(SessionKeys {
            client: Arc::new(client),
            host,
        })
    }

    /// The client's public key, one OpenSSH line without a line break
    /// (`ssh-ed25519 AAAA... kt-session-<id>`).
    pub(crate) fn client_public(&self) -> Result<String> {
        self.client
            .public_key()
            .to_openssh()
            .map_err(|source| Error::Keys { source })
    }
}

/// The host private key, OpenSSH PEM.
fn host_key_pem(host: &PrivateKey) -> Result<String> {
    let pem = host
        .to_openssh(LineEnding::LF)
        .map_err(|source| Error::Keys { source })?;
    Ok(pem.as_str().to_owned())
}

/// What a shadow pod looks like beyond what every shadow has: what inbound shadows
/// (swap, expose, mesh) need from their pod.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodShape {
    /// Labels on the pod only, besides kt's (a swap shadow in scale mode carries the
    /// workload's pod labels so that its Service selects it).
    pub(crate) pod_labels: BTreeMap<String, String>,
    /// Ports the shadow serves to the cluster, declared as container ports
    /// (`(name, port)`; named ports of a Service resolve through them). They are also
    /// the only ports the shadow's SSH remote forwards may listen on
    /// (`kt-shadow serve --remote-forward`, sshd's `PermitListen`): none for connect.
    pub(crate) ports: Vec<(String, u16)>,
    /// UDP ports it serves, declared as container ports (the mesh router passes a
    /// meshed Service's UDP ports through): `(name, port)`.
    pub(crate) udp_ports: Vec<(String, u16)>,
    /// The ServiceAccount the pod runs as instead of `kt-shadow` (an inbound shadow's
    /// own identity, see `inbound::identity`).
    pub(crate) service_account: Option<String>,
    /// Arguments appended to `kt-shadow serve` (the restoring watchdog's).
    pub(crate) extra_args: Vec<String>,
    /// The pod's termination grace period, when it needs more than the default 2 s
    /// (a swap shadow restores on SIGTERM).
    pub(crate) grace_seconds: Option<i64>,
    /// A label selector of the pods whose image an imageless shadow borrows first (a
    /// swap's or mesh's target); see `shadow::base`.
    pub(crate) borrow_from: Option<String>,
}

impl PodShape {
    /// The ports remote forwards may listen on, each once.
    fn listen_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.ports.iter().map(|(_, port)| *port).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// The shadow container's memory request: what kt-shadow uses under a modest load
/// (about 27 MB peak RSS with 20 TCP streams of 1 MiB each way and 20 UDP flows at
/// once; 5 MB idle), so the scheduler places it where that much is free.
const MEMORY_REQUEST: &str = "32Mi";

/// The shadow container's memory limit: about four times kt-shadow's peak at its
/// channel limit (57 MB with 1000 channels open at once), leaving room for data in
/// flight (up to 8 MiB of SSH output queued per connection, socket buffers charged to
/// the pod). A shadow that grows past it is killed, not the node's other pods.
const MEMORY_LIMIT: &str = "256Mi";

/// Everything that names, labels and shapes one shadow's objects.
pub(crate) struct ShadowSpec<'a> {
    pub(crate) session: &'a str,
    pub(crate) name: &'a str,
    pub(crate) runtime: &'a Runtime,
    /// What the shadow is for (the `kt.dev/role` label).
    pub(crate) role: Role,
    pub(crate) shape: &'a PodShape,
    pub(crate) opts: &'a ConnectOptions,
}

impl ShadowSpec<'_> {
    /// Labels of every object: kt's three plus the caller's extras (kt's win).
    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.opts.labels.clone();
        l.insert(
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        );
        l.insert(labels::SESSION.to_owned(), self.session.to_owned());
        l.insert(labels::ROLE.to_owned(), self.role.as_str().to_owned());
        l
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = self.opts.annotations.clone();
        a.insert(
            annotations::VERSION.to_owned(),
            kt_proto::VERSION.to_owned(),
        );
        a
    }

    /// Name, kt's labels plus `extra_labels` (kt's win) and annotations.
    pub(crate) fn meta(&self, extra_labels: &BTreeMap<String, String>) -> ObjectMeta {
        let mut labels = extra_labels.clone();
        // kt's own labels win over the workload's.
        labels.extend(self.labels());
        ObjectMeta {
            name: Some(self.name.to_owned()),
            namespace: None,
            labels: Some(labels),
            annotations: Some(self.annotations()),
            ..ObjectMeta::default()
        }
    }

    /// The OpenSSH shadow's Secret: the client's public key, the host key `host` and
    /// the sshd configuration. Never the client's private key. (kt-shadow has no
    /// Secret: its pod carries the client's public key as an argument and it makes its
    /// host key itself.)
    pub(crate) fn secret(&self, keys: &SessionKeys, host: &PrivateKey) -> Result<Secret> {
        let mut data = BTreeMap::new();
        data.insert(
            shadow::SECRET_AUTHORIZED_KEYS.to_owned(),
            ByteString(format!("{}\n", keys.client_public()?).into_bytes()),
        );
        data.insert(
            shadow::SECRET_HOST_KEY.to_owned(),
            ByteString(host_key_pem(host)?.into_bytes()),
        );
        data.insert(
            SECRET_SSHD_CONFIG.to_owned(),
            ByteString(
                sshd_config_listening(self.opts.ssh_port, &self.shape.listen_ports()).into_bytes(),
            ),
        );
        Ok(Secret {
            metadata: self.meta(&BTreeMap::new()),
            data: Some(data),
            type_: Some("Opaque".to_owned()),
            immutable: Some(true),
            ..Secret::default()
        })
    }

    /// An owner reference to the shadow pod: deleting the pod garbage-collects the
    /// (OpenSSH shadow's) Secret.
    pub(crate) fn owner_reference(pod: &Pod) -> Option<OwnerReference> {
        Some(OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone()?,
            controller: None,
            block_owner_deletion: None,
        })
    }

    /// The shadow pod; `client_public` is the client's public key
    /// ([`SessionKeys::client_public`]), an argument of the kt-shadow pod (the OpenSSH
    /// pod reads it from the Secret instead).
    pub(crate) fn pod(&self, client_public: &str) -> Pod {
        let opts = self.opts;
        let mount = VolumeMount {
            name: KEYS_VOLUME.to_owned(),
            mount_path: shadow::MOUNT_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        };
        let resources = ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("10m".to_owned())),
                ("memory".to_owned(), Quantity(MEMORY_REQUEST.to_owned())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity(MEMORY_LIMIT.to_owned()),
            )])),
            ..ResourceRequirements::default()
        };
        // `watchdog`: the pod runs as ServiceAccount kt-shadow with its token mounted,
        // so that kt-shadow can read the session's Lease (`--lease`).
        let (container, pod_security, secret_volume, watchdog) = match opts.flavour {
            ShadowFlavour::KtShadow => {
                // The client's public key as an argument (a pod's arguments cannot be
                // changed once it exists); no Secret, no volume: the shadow makes its
                // host key in memory and reports its public half in its log.
                let serve = ServeArgs {
                    listen: std::net::SocketAddr::from((
                        std::net::Ipv4Addr::LOCALHOST,
                        opts.ssh_port,
                    )),
                    heartbeat_timeout: opts.shadow_heartbeat_timeout,
                    remote_forward_ports: self.shape.listen_ports(),
                    authorized_key: Some(client_public.to_owned()),
                    // The session's Lease has the pod's name.
                    lease: Some(self.name.to_owned()),
                    ..ServeArgs::default()
                };
                let probe = ProbeArgs { addr: serve.listen };
                let mut probe_command = probe.exec_command();
                match (self.runtime, &opts.shadow_probe_binary) {
                    (Runtime::Shipped { .. }, _) => {
                        agent::ASSEMBLED_PATH.clone_into(&mut probe_command[0]);
                    }
                    (Runtime::Image(_), Some(bin)) => probe_command[0].clone_from(bin),
                    (Runtime::Image(_), None) => {}
                }
                let mut args = serve.to_args();
                args.extend(self.shape.extra_args.iter().cloned());
                // With an image, only args: the image's entrypoint is the binary.
                let (command, args) = self.runtime.command(args);
                let container = Container {
                    name: CONTAINER.to_owned(),
                    image: Some(self.runtime.image().to_owned()),
                    image_pull_policy: self.pull_policy(),
                    command,
                    args: Some(args),
                    volume_mounts: self.agent_mounts(),
                    // The restoring watchdog deletes its own pod by this name.
                    env: Some(vec![EnvVar {
                        name: shadow::POD_NAME_ENV.to_owned(),
                        value_from: Some(EnvVarSource {
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.name".to_owned(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..EnvVarSource::default()
                        }),
                        ..EnvVar::default()
                    }]),
                    readiness_probe: Some(Probe {
                        exec: Some(ExecAction {
                            command: Some(probe_command),
                        }),
                        period_seconds: Some(1),
                        timeout_seconds: Some(2),
                        failure_threshold: Some(3),
                        ..Probe::default()
                    }),
                    security_context: Some(restricted_container()),
                    resources: Some(resources),
                    termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                    ..Container::default()
                };
                let pod_security = PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(shadow::RUN_AS_USER),
                    run_as_group: Some(shadow::RUN_AS_GROUP),
                    seccomp_profile: Some(runtime_default()),
                    ..PodSecurityContext::default()
                };
                (container, pod_security, None, true)
            }
            ShadowFlavour::OpenSsh => {
                let container = Container {
                    name: CONTAINER.to_owned(),
                    image: Some(self.runtime.image().to_owned()),
                    image_pull_policy: self.pull_policy(),
                    command: Some(vec![
                        opts.sshd_path.clone(),
                        "-D".to_owned(),
                        "-e".to_owned(),
                        "-f".to_owned(),
                        format!("{}/{SECRET_SSHD_CONFIG}", shadow::MOUNT_DIR),
                    ]),
                    volume_mounts: Some(vec![mount]),
                    // sshd needs root (privilege separation, setuid to the user); no
                    // readiness probe: the client retries the handshake until it answers.
                    security_context: Some(SecurityContext {
                        run_as_user: Some(0),
                        allow_privilege_escalation: Some(false),
                        seccomp_profile: Some(runtime_default()),
                        ..SecurityContext::default()
                    }),
                    resources: Some(resources),
                    termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                    ..Container::default()
                };
                let pod_security = PodSecurityContext {
                    seccomp_profile: Some(runtime_default()),
                    ..PodSecurityContext::default()
                };
                // sshd refuses a host key that others may read.
                let volume = Volume {
                    name: KEYS_VOLUME.to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(self.name.to_owned()),
                        default_mode: Some(0o400),
                        optional: Some(false),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                };
                // No ServiceAccount token: sshd has no watchdog to use it.
                (container, pod_security, Some(volume), false)
            }
        };
        let mut container = container;
        let declared = |ports: &[(String, u16)], protocol: &str| {
            ports
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: (!name.is_empty()).then(|| name.clone()),
                    container_port: i32::from(*port),
                    protocol: Some(protocol.to_owned()),
                    ..ContainerPort::default()
                })
                .collect::<Vec<_>>()
        };
        let mut ports = declared(&self.shape.ports, "TCP");
        ports.extend(declared(&self.shape.udp_ports, "UDP"));
        if !ports.is_empty() {
            container.ports = Some(ports);
        }
        let mut pull_secrets = opts.image_pull_secrets.clone();
        let mut volumes: Vec<Volume> = secret_volume.into_iter().collect();
        let (mut affinity, mut tolerations) = (None, None);
        if let Runtime::Shipped { base, agent } = self.runtime {
            for name in &base.pull_secrets {
                if !pull_secrets.contains(name) {
                    pull_secrets.push(name.clone());
                }
            }
            volumes.extend(agent_volumes(agent));
            affinity = Some(node_affinity(agent.arch, base.node.as_deref()));
            tolerations = (!base.tolerations.is_empty()).then(|| base.tolerations.clone());
        }
        let pull_secrets = (!pull_secrets.is_empty()).then(|| {
            pull_secrets
                .into_iter()
                .map(|name| LocalObjectReference { name })
                .collect()
        });
        Pod {
            metadata: self.meta(&self.shape.pod_labels),
            spec: Some(PodSpec {
                containers: vec![container],
                restart_policy: Some("Never".to_owned()),
                service_account_name: watchdog.then(|| {
                    (self.shape.service_account.clone())
                        .unwrap_or_else(|| shadow::SERVICE_ACCOUNT.to_owned())
                }),
                automount_service_account_token: Some(watchdog),
                enable_service_links: Some(false),
                termination_grace_period_seconds: Some(self.shape.grace_seconds.unwrap_or(2)),
                security_context: Some(pod_security),
                image_pull_secrets: pull_secrets,
                node_selector: (!opts.node_selector.is_empty()).then(|| opts.node_selector.clone()),
                volumes: (!volumes.is_empty()).then_some(volumes),
                affinity,
                tolerations,
                ..PodSpec::default()
            }),
            status: None,
        }
    }
}

impl ShadowSpec<'_> {
    /// The mesh router's pod: the kt-shadow container of [`ShadowSpec::pod`] (same
    /// image, security context, resources, `POD_NAME`, ports, ServiceAccount) running
    /// `args` (`kt-shadow route ...`), with no SSH readiness probe (the client waits
    /// for the router to report on its Lease instead). `self.opts` must be of the
    /// kt-shadow flavour.
    pub(crate) fn router_pod(&self, args: Vec<String>) -> Pod {
        let mut pod = self.pod("");
        if let Some(container) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
            let (command, args) = self.runtime.command(args);
            container.command = command;
            container.args = Some(args);
            container.readiness_probe = None;
        }
        pod
    }

    /// `IfNotPresent` for a shipped agent's base (present on the node it is placed on)
    /// and for a pinned image; the cluster default (`Always`) otherwise.
    fn pull_policy(&self) -> Option<String> {
        match self.runtime {
            Runtime::Image(image) => pull_policy(image),
            Runtime::Shipped { .. } => Some("IfNotPresent".to_owned()),
        }
    }

    /// The shipped agent's mounts: its parts, read-only, and the loader's emptyDir.
    fn agent_mounts(&self) -> Option<Vec<VolumeMount>> {
        let Runtime::Shipped { .. } = self.runtime else {
            return None;
        };
        Some(vec![
            VolumeMount {
                name: AGENT_VOLUME.to_owned(),
                mount_path: agent::AGENT_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: RUN_VOLUME.to_owned(),
                mount_path: agent::RUN_DIR.to_owned(),
                ..VolumeMount::default()
            },
        ])
    }
}

/// The shipped agent's volumes: one projected volume with the loader (executable) and
/// kt-shadow's parts, each file named after its ConfigMap, and an emptyDir for the
/// assembled binary, sized for it.
fn agent_volumes(shipped: &Shipped) -> [Volume; 2] {
    let item = |configmap: &str, path: &str, mode: i32| VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: configmap.to_owned(),
            items: Some(vec![KeyToPath {
                key: agent::PART_KEY.to_owned(),
                path: path.to_owned(),
                mode: Some(mode),
            }]),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    };
    let mut sources = vec![item(&shipped.loader, agent::LOADER_FILE, 0o555)];
    sources.extend(shipped.parts.iter().map(|p| item(p, p, 0o444)));
    let mib = shipped.size.div_ceil(1024 * 1024) + 8;
    [
        Volume {
            name: AGENT_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o444),
                sources: Some(sources),
            }),
            ..Volume::default()
        },
        Volume {
            name: RUN_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(Quantity(format!("{mib}Mi"))),
            }),
            ..Volume::default()
        },
    ]
}

/// Nodes of `arch` running Linux, and only `node` when given (where the base image is).
fn node_affinity(arch: &str, node: Option<&str>) -> Affinity {
    let is = |key: &str, value: &str| NodeSelectorRequirement {
        key: key.to_owned(),
        operator: "In".to_owned(),
        values: Some(vec![value.to_owned()]),
    };
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![
                        is("kubernetes.io/arch", arch),
                        is("kubernetes.io/os", "linux"),
                    ]),
                    match_fields: node.map(|n| vec![is("metadata.name", n)]),
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// `IfNotPresent` for a pinned tag or digest; the cluster default (`Always`) otherwise.
fn pull_policy(image: &str) -> Option<String> {
    let last = image.rsplit('/').next().unwrap_or(image);
    let pinned =
        image.contains('@') || last.split_once(':').is_some_and(|(_, tag)| tag != "latest");
    pinned.then(|| "IfNotPresent".to_owned())
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

/// The container security context the restricted Pod Security Standard asks for.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(shadow::RUN_AS_USER),
        run_as_group: Some(shadow::RUN_AS_GROUP),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

/// The configuration of the OpenSSH shadow: loopback only, the session's keys from the
/// Secret, public-key login only, TCP forwarding, and no remote forward (`PermitListen
/// none`, what a connect shadow needs). Public so that tools running their own sshd
/// beside kt (benchmarks, kt-connect-style images) use the same file.
pub fn sshd_config(port: u16) -> String {
    sshd_config_listening(port, &[])
}

/// [`sshd_config`] whose remote forwards may listen on `listen_ports` (reachable from
/// other pods, as kt-connect's `GatewayPorts yes`); none when empty.
pub(crate) fn sshd_config_listening(port: u16, listen_ports: &[u16]) -> String {
    let dir = shadow::MOUNT_DIR;
    let permit_listen = if listen_ports.is_empty() {
        "none".to_owned()
    } else {
        let ports: Vec<String> = listen_ports.iter().map(u16::to_string).collect();
        ports.join(" ")
    };
    format!(
        "# Written by kt for one session.\n\
         Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {dir}/{host}\n\
         AuthorizedKeysFile {dir}/{auth}\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         StrictModes no\n\
         AllowTcpForwarding yes\n\
         GatewayPorts yes\n\
         PermitListen {permit_listen}\n\
         X11Forwarding no\n\
         PermitTTY no\n\
         UseDNS no\n\
         PidFile none\n\
         UsePAM no\n\
         MaxStartups 100:30:200\n\
         ClientAliveInterval 30\n",
        host = shadow::SECRET_HOST_KEY,
        auth = shadow::SECRET_AUTHORIZED_KEYS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_images_are_not_pulled_every_time() {
        assert_eq!(
            pull_policy("kt.invalid/kt-shadow:0.1.0").as_deref(),
            Some("IfNotPresent")
        );
        assert_eq!(
            pull_policy("registry:5000/kt-shadow@sha256:ab").as_deref(),
            Some("IfNotPresent")
        );
        assert_eq!(pull_policy("registry:5000/kt-shadow"), None);
        assert_eq!(pull_policy("kt.invalid/kt-shadow:latest"), None);
    }

    #[test]
    fn sshd_config_listens_on_loopback_with_session_keys_only() {
        let c = sshd_config(2222);
        for line in [
            "Port 2222",
            "ListenAddress 127.0.0.1",
            "HostKey /etc/kt/ssh_host_ed25519_key",
            "AuthorizedKeysFile /etc/kt/authorized_keys",
            "PasswordAuthentication no",
            "AllowTcpForwarding yes",
            "GatewayPorts yes",
            "PermitListen none",
            "PidFile none",
            "UsePAM no",
        ] {
            assert!(c.lines().any(|l| l == line), "missing `{line}` in\n{c}");
        }
        let c = sshd_config_listening(2222, &[80, 8080]);
        assert!(c.lines().any(|l| l == "PermitListen 80 8080"), "{c}");
        assert_eq!(c.matches("PermitListen").count(), 1, "{c}");
    }

    /// The `--remote-forward` ports of a kt-shadow pod, and sshd's `PermitListen` line.
    fn listen_config(role: Role, shape: &PodShape, flavour: ShadowFlavour) -> Vec<String> {
        let opts = ConnectOptions::new().flavour(flavour);
        let spec = ShadowSpec {
            session: "t4",
            name: "kt-t4",
            runtime: &Runtime::Image("kt.invalid/kt-shadow:0.1.0".to_owned()),
            role,
            shape,
            opts: &opts,
        };
        match flavour {
            ShadowFlavour::KtShadow => {
                let args = spec
                    .pod("ssh-ed25519 AAAA t4")
                    .spec
                    .unwrap_or_default()
                    .containers[0]
                    .args
                    .clone()
                    .unwrap_or_default();
                args.windows(2)
                    .filter(|w| w[0] == kt_proto::cli::REMOTE_FORWARD)
                    .map(|w| w[1].clone())
                    .collect()
            }
            _ => {
                let keys = SessionKeys::generate("t4", flavour).expect("keys");
                let host = keys.host.as_ref().expect("sshd's host key");
                let data = (spec.secret(&keys, host).expect("secret").data).unwrap_or_default();
                let config = String::from_utf8_lossy(&data[SECRET_SSHD_CONFIG].0).into_owned();
                config
                    .lines()
                    .filter(|l| l.starts_with("PermitListen"))
                    .map(str::to_owned)
                    .collect()
            }
        }
    }

    #[test]
    fn remote_forwards_are_allowed_on_the_shapes_ports_only() {
        let connect = PodShape::default();
        let swap = PodShape {
            ports: vec![("http".to_owned(), 8080), (String::new(), 9090)],
            ..PodShape::default()
        };
        assert!(listen_config(Role::ShadowConnect, &connect, ShadowFlavour::KtShadow).is_empty());
        assert_eq!(
            listen_config(Role::ShadowSwap, &swap, ShadowFlavour::KtShadow),
            ["8080", "9090"]
        );
        assert_eq!(
            listen_config(Role::ShadowConnect, &connect, ShadowFlavour::OpenSsh),
            ["PermitListen none"]
        );
        assert_eq!(
            listen_config(Role::ShadowSwap, &swap, ShadowFlavour::OpenSsh),
            ["PermitListen 8080 9090"]
        );
    }

    #[test]
    fn both_flavours_request_and_limit_memory() {
        for flavour in [ShadowFlavour::KtShadow, ShadowFlavour::OpenSsh] {
            let opts = ConnectOptions::new().flavour(flavour);
            let spec = ShadowSpec {
                session: "t5",
                name: "kt-shadow-t5",
                runtime: &Runtime::Image("kt.invalid/kt-shadow:0.1.0".to_owned()),
                role: Role::ShadowConnect,
                shape: &PodShape::default(),
                opts: &opts,
            };
            let resources = spec
                .pod("ssh-ed25519 AAAA t5")
                .spec
                .unwrap_or_default()
                .containers[0]
                .resources
                .clone()
                .unwrap_or_default();
            let memory = |map: Option<BTreeMap<String, Quantity>>| {
                map.unwrap_or_default().get("memory").map(|q| q.0.clone())
            };
            assert_eq!(
                memory(resources.requests).as_deref(),
                Some("32Mi"),
                "{flavour}"
            );
            assert_eq!(
                memory(resources.limits).as_deref(),
                Some("256Mi"),
                "{flavour}"
            );
        }
    }

    /// Lines of `key`'s OpenSSH PEM that carry key material unique to it.
    fn private_lines(key: &PrivateKey) -> Vec<String> {
        let pem = key.to_openssh(LineEnding::LF).expect("pem");
        let unique: Vec<String> = pem
            .lines()
            .skip(3)
            .filter(|l| l.len() > 20 && !l.starts_with("-----"))
            .map(str::to_owned)
            .collect();
        assert!(!unique.is_empty());
        unique
    }

    #[test]
    fn the_kt_shadow_pod_carries_the_client_public_key_only_and_no_secret() {
        let keys = SessionKeys::generate("t0", ShadowFlavour::KtShadow).expect("keys");
        assert!(keys.host.is_none(), "a host key made by the client");
        let client_public = keys.client_public().expect("public key");
        assert!(client_public.starts_with("ssh-ed25519 "), "{client_public}");
        assert!(client_public.ends_with(" kt-session-t0"), "{client_public}");
        let opts = ConnectOptions::new();
        let spec = ShadowSpec {
            session: "t0",
            name: "kt-shadow-t0",
            runtime: &Runtime::Image("kt.invalid/kt-shadow:0.1.0".to_owned()),
            role: Role::ShadowConnect,
            shape: &PodShape::default(),
            opts: &opts,
        };
        let pod = spec.pod(&client_public);
        let pod_spec = pod.spec.clone().unwrap_or_default();
        let args = pod_spec.containers[0].args.clone().unwrap_or_default();
        let at = args.iter().position(|a| a == "--authorized-key");
        assert_eq!(
            at.and_then(|i| args.get(i + 1)),
            Some(&client_public),
            "{args:?}"
        );
        for files in ["--host-key", "--authorized-keys"] {
            assert!(!args.iter().any(|a| a == files), "{args:?}");
        }
        // Nothing mounted, nothing from a Secret.
        assert_eq!(pod_spec.volumes, None);
        assert_eq!(pod_spec.containers[0].volume_mounts, None);
        let json = serde_json::to_string(&pod).expect("json");
        assert!(!json.to_lowercase().contains("secret"), "{json}");
        // No private key material anywhere in the pod.
        assert!(!json.contains("PRIVATE KEY"), "{json}");
        for line in private_lines(&keys.client) {
            assert!(
                !json.contains(&line),
                "client private key material in the pod"
            );
        }
        // The kt-shadow command line the pod runs parses back to that one key.
        let parsed = kt_proto::cli::Command::parse(args).expect("the shadow's arguments");
        let kt_proto::cli::Command::Serve(serve) = parsed else {
            panic!("not a serve command: {parsed:?}");
        };
        assert_eq!(
            serve.authorized_key.as_deref(),
            Some(client_public.as_str())
        );
    }

    #[test]
    fn the_openssh_secret_holds_public_client_key_and_host_key_but_no_client_private_key() {
        let keys = SessionKeys::generate("t1", ShadowFlavour::OpenSsh).expect("key generation");
        let host = keys
            .host
            .as_ref()
            .expect("sshd's host key is made by the client");
        let opts = ConnectOptions::new().flavour(ShadowFlavour::OpenSsh);
        let spec = ShadowSpec {
            session: "t1",
            name: "kt-shadow-t1",
            runtime: &Runtime::Image("kt.invalid/kt-shadow:0.1.0".to_owned()),
            role: Role::ShadowConnect,
            shape: &PodShape::default(),
            opts: &opts,
        };
        let secret = spec
            .secret(&keys, host)
            .expect("secret")
            .data
            .unwrap_or_default();
        let auth = String::from_utf8_lossy(&secret[shadow::SECRET_AUTHORIZED_KEYS].0).into_owned();
        assert!(auth.starts_with("ssh-ed25519 "), "{auth}");
        let host_pem = String::from_utf8_lossy(&secret[shadow::SECRET_HOST_KEY].0).into_owned();
        let parsed = PrivateKey::from_openssh(&host_pem).expect("host key parses");
        assert_eq!(parsed.public_key().key_data(), host.public_key().key_data());
        let unique = private_lines(&keys.client);
        for value in secret.values() {
            let text = String::from_utf8_lossy(&value.0);
            for line in &unique {
                assert!(
                    !text.contains(line.as_str()),
                    "client private key material in the Secret"
                );
            }
            if let Ok(k) = PrivateKey::from_openssh(text.as_ref()) {
                assert_ne!(
                    k.public_key().key_data(),
                    keys.client.public_key().key_data()
                );
            }
        }
        assert!(secret.contains_key(SECRET_SSHD_CONFIG));
        // The sshd pod mounts it; the client's key is not an argument.
        let pod = spec.pod(&keys.client_public().expect("public key"));
        let pod_spec = pod.spec.unwrap_or_default();
        let volume = pod_spec.volumes.unwrap_or_default();
        assert_eq!(
            volume[0]
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("kt-shadow-t1")
        );
        assert_eq!(pod_spec.containers[0].args, None);
    }

    #[test]
    fn kt_shadow_pod_passes_the_restricted_profile() {
        let opts = ConnectOptions::new();
        let spec = ShadowSpec {
            session: "t2",
            name: "kt-shadow-t2",
            runtime: &Runtime::Image("kt.invalid/kt-shadow:0.1.0".to_owned()),
            role: Role::ShadowConnect,
            shape: &PodShape::default(),
            opts: &opts,
        };
        let pod = spec.pod("ssh-ed25519 AAAA kt-session-t2");
        let pod_spec = pod.spec.unwrap_or_default();
        let psc = pod_spec.security_context.unwrap_or_default();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        let c = &pod_spec.containers[0];
        let sc = c.security_context.clone().unwrap_or_default();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            sc.seccomp_profile.map(|s| s.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let probe = c
            .readiness_probe
            .clone()
            .and_then(|p| p.exec)
            .and_then(|e| e.command)
            .unwrap_or_default();
        assert_eq!(probe, ["kt-shadow", "probe", "--addr", "127.0.0.1:2222"]);
        let args = c.args.clone().unwrap_or_default();
        assert_eq!(args[0], "serve");
        // The watchdog reads the session's Lease (named like the pod) with the token
        // of ServiceAccount kt-shadow.
        let lease = args
            .iter()
            .position(|a| a == "--lease")
            .map(|i| &args[i + 1]);
        assert_eq!(lease.map(String::as_str), Some("kt-shadow-t2"));
        assert_eq!(pod_spec.service_account_name.as_deref(), Some("kt-shadow"));
        assert_eq!(pod_spec.automount_service_account_token, Some(true));
        assert!(
            !pod.metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .contains_key("kt.dev/heartbeat")
        );
        let l = pod.metadata.labels.unwrap_or_default();
        assert_eq!(
            l.get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("kt")
        );
        assert_eq!(l.get("kt.dev/session").map(String::as_str), Some("t2"));
        assert_eq!(
            l.get("kt.dev/role").map(String::as_str),
            Some("shadow-connect")
        );
    }

    #[test]
    fn the_openssh_pod_has_no_service_account_token() {
        let opts = ConnectOptions::new().flavour(ShadowFlavour::OpenSsh);
        let spec = ShadowSpec {
            session: "t4",
            name: "kt-shadow-t4",
            runtime: &Runtime::Image("example/sshd:1".to_owned()),
            role: Role::ShadowConnect,
            shape: &PodShape::default(),
            opts: &opts,
        };
        let pod_spec = spec
            .pod("ssh-ed25519 AAAA kt-session-t4")
            .spec
            .unwrap_or_default();
        assert_eq!(pod_spec.service_account_name, None);
        assert_eq!(pod_spec.automount_service_account_token, Some(false));
    }

    #[test]
    fn role_and_shape_reach_the_pod_and_kt_labels_win() {
        let opts = ConnectOptions::new();
        let shape = PodShape {
            pod_labels: BTreeMap::from([
                ("app".to_owned(), "web".to_owned()),
                (labels::ROLE.to_owned(), "spoofed".to_owned()),
            ]),
            ports: vec![("http".to_owned(), 8080), (String::new(), 9090)],
            udp_ports: vec![("dns".to_owned(), 5353)],
            service_account: Some("kt-shadow-swap-t3".to_owned()),
            extra_args: vec!["--self-delete".to_owned()],
            grace_seconds: Some(20),
            borrow_from: None,
        };
        let spec = ShadowSpec {
            session: "t3",
            name: "kt-shadow-t3",
            runtime: &Runtime::Image("kt.invalid/kt-shadow:0.1.0".to_owned()),
            role: Role::ShadowSwap,
            shape: &shape,
            opts: &opts,
        };
        let pod = spec.pod("ssh-ed25519 AAAA kt-session-t3");
        let pod_spec = pod.spec.clone().unwrap_or_default();
        // The inbound shadow's own identity, watchdog arguments and grace period.
        assert_eq!(
            pod_spec.service_account_name.as_deref(),
            Some("kt-shadow-swap-t3")
        );
        assert_eq!(pod_spec.termination_grace_period_seconds, Some(20));
        let args = pod_spec.containers[0].args.clone().unwrap_or_default();
        assert_eq!(args.last().map(String::as_str), Some("--self-delete"));
        let l = pod.metadata.labels.unwrap_or_default();
        assert_eq!(l.get("app").map(String::as_str), Some("web"));
        assert_eq!(l.get(labels::ROLE).map(String::as_str), Some("shadow-swap"));
        let ports = pod.spec.unwrap_or_default().containers[0]
            .ports
            .clone()
            .unwrap_or_default();
        let ports: Vec<_> = ports
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.container_port,
                    p.protocol.clone().unwrap_or_default(),
                )
            })
            .collect();
        let tcp = || "TCP".to_owned();
        assert_eq!(
            ports,
            [
                (Some("http".to_owned()), 8080, tcp()),
                (None, 9090, tcp()),
                (Some("dns".to_owned()), 5353, "UDP".to_owned())
            ]
        );
        // The (OpenSSH shadow's) Secret carries the role but not the workload's labels.
        let keys = SessionKeys::generate("t3", ShadowFlavour::OpenSsh).expect("keys");
        let host = keys.host.as_ref().expect("host key");
        let secret_labels = spec
            .secret(&keys, host)
            .expect("secret")
            .metadata
            .labels
            .unwrap_or_default();
        assert!(!secret_labels.contains_key("app"));
        assert_eq!(
            secret_labels.get(labels::ROLE).map(String::as_str),
            Some("shadow-swap")
        );
    }
}
