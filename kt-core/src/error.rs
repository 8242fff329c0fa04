//! The error type of `kt-core`: one enum, each message saying what failed and what to do.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the namespace-scoped Role `kt-connect` (proxy mode) is shipped, with the
/// shadow's ServiceAccount (see the crate docs).
pub const CONNECT_ROLE_YAML: &str = "kt-core/rbac/connect.yaml";

/// Where the namespace-scoped Role `kt-vpn` (VPN mode: `kt-connect` plus reading and
/// dry-run creating Services) is shipped, with the shadow's ServiceAccount.
pub const VPN_ROLE_YAML: &str = "kt-core/rbac/vpn.yaml";

/// Where the namespace-scoped Role `kt-inbound` (what swap, expose, clean and recover
/// add to `kt-connect`) is shipped.
pub const INBOUND_ROLE_YAML: &str = "kt-core/rbac/inbound.yaml";

/// The shipped Role file and Role name that grant `verb` on `resource`: `inbound.yaml`
/// (`kt-inbound`) for what only swap and expose do, `vpn.yaml` (`kt-vpn`) for what only
/// VPN mode does (listing and dry-run creating Services), `connect.yaml`
/// (`kt-connect`) for the rest.
pub(crate) fn role_for(verb: &str, resource: &str) -> (&'static str, &'static str) {
    let inbound_only = matches!(
        resource,
        "deployments"
            | "statefulsets"
            | "horizontalpodautoscalers"
            | "endpointslices"
            | "serviceaccounts"
            | "roles"
            | "rolebindings"
    ) || (resource == "services" && (verb == "patch" || verb == "delete"));
    if inbound_only {
        return (INBOUND_ROLE_YAML, "kt-inbound");
    }
    let vpn_only = resource == "services" && (verb == "list" || verb.starts_with("create"));
    if vpn_only {
        (VPN_ROLE_YAML, "kt-vpn")
    } else {
        (CONNECT_ROLE_YAML, "kt-connect")
    }
}

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while opening, using or closing a [`Session`](crate::Session).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kubeconfig could not be read or parsed, or names a context, cluster or user
    /// that it does not define.
    #[error(
        "cannot use kubeconfig {path}{}: {source}; check the file (KUBECONFIG or the \
         kubeconfig option) and the context name (`kubectl config get-contexts`)",
        context.as_deref().map(|c| format!(" with context `{c}`")).unwrap_or_default()
    )]
    Kubeconfig {
        /// The kubeconfig file, or `the default kubeconfig` when none was given.
        path: String,
        /// The context asked for, if any.
        context: Option<String>,
        /// What kube-rs reported.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// No kubeconfig was given and none could be found (nor an in-cluster configuration).
    #[error(
        "no Kubernetes configuration found: {source}; set KUBECONFIG, write ~/.kube/config, \
         or pass a kubeconfig file"
    )]
    NoConfig {
        /// What kube-rs reported.
        #[source]
        source: kube::config::InferConfigError,
    },

    /// The configuration is valid but no client can be built from it (TLS settings,
    /// proxy URL with an unsupported scheme, ...).
    #[error(
        "cannot build a Kubernetes client for {server}: {source}; check the kubeconfig's TLS and proxy-url settings"
    )]
    Client {
        /// The API server URL.
        server: String,
        /// What kube-rs reported.
        #[source]
        source: kube::Error,
    },

    /// The API server did not answer (connection refused, DNS failure, TLS failure,
    /// timeout, authentication plugin failure).
    #[error(
        "the Kubernetes API server {server} is unreachable while trying to {action}: {source}; \
         check that the cluster is running, the kubeconfig's server address and proxy-url, \
         your VPN, and your credentials (`kubectl --request-timeout=5s get --raw /version`)"
    )]
    ApiUnreachable {
        /// The API server URL.
        server: String,
        /// What kt was doing.
        action: String,
        /// The underlying failure.
        #[source]
        source: kube::Error,
    },

    /// The namespace the session should use does not exist.
    #[error(
        "namespace `{namespace}` does not exist; create it (`kubectl create namespace {namespace}`) \
         or choose another namespace"
    )]
    NamespaceNotFound {
        /// The namespace.
        namespace: String,
    },

    /// RBAC refused a call kt needs. The message names the shipped Role file that
    /// grants it: [`CONNECT_ROLE_YAML`], or [`VPN_ROLE_YAML`] for what only VPN mode does.
    #[error(
        "forbidden: you may not {verb} {resource} in namespace `{namespace}` ({message}); \
         kt needs the namespace-scoped Role `{role}` shipped in {file}: \
         `kubectl apply -n {namespace} -f {file}` and bind it to your user or ServiceAccount \
         (`kubectl create rolebinding kt --role={role} -n {namespace} --user=<you>`){vpn}",
        file = role_for(verb, resource).0,
        role = role_for(verb, resource).1,
        vpn = if role_for(verb, resource).0 == CONNECT_ROLE_YAML {
            format!("; for VPN mode use {VPN_ROLE_YAML} (Role `kt-vpn`, a superset) instead")
        } else {
            String::new()
        }
    )]
    Forbidden {
        /// The verb (`create`, `get`, `watch`, ...).
        verb: &'static str,
        /// The resource (`pods`, `secrets`, `pods/portforward`, ...).
        resource: &'static str,
        /// The namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },

    /// Any other failed API call.
    #[error("Kubernetes API call failed while trying to {action}: {source}")]
    Api {
        /// What kt was doing.
        action: String,
        /// What kube-rs reported.
        #[source]
        source: kube::Error,
    },

    /// The shadow pod's image cannot be pulled or started.
    #[error(
        "the shadow pod `{pod}` cannot start image `{image}`: {reason}{}; check that the image \
         exists for this cluster's architecture and that the nodes can pull it (registry access, \
         an image pull Secret), or choose another shadow image (the shadow image option or \
         the KT_SHADOW_IMAGE environment variable)",
        if message.is_empty() { String::new() } else { format!(" ({message})") }
    )]
    ShadowImage {
        /// The shadow pod.
        pod: String,
        /// The image.
        image: String,
        /// The kubelet's reason (`ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`, ...).
        reason: String,
        /// The kubelet's message.
        message: String,
    },

    /// The shadow pod started but failed (exited, was evicted, was deleted).
    #[error(
        "the shadow pod `{pod}` failed: {reason}{}; see `kubectl describe pod {pod} -n {namespace}`",
        if log.is_empty() { String::new() } else { format!("; its last log lines:\n{log}") }
    )]
    ShadowFailed {
        /// The shadow pod.
        pod: String,
        /// Its namespace.
        namespace: String,
        /// What happened.
        reason: String,
        /// The end of its log, if it could be read.
        log: String,
    },

    /// The kt-shadow pod did not report a host key kt can pin: no
    /// `kt-shadow host-key <key>` line at the start of its log in time, or one without
    /// a public key. kt-shadow makes its host key in memory and reports only the
    /// public half there, so without it the client cannot know whom it talks to.
    #[error(
        "the shadow pod `{pod}` did not report its SSH host key: {reason}. kt-shadow prints \
         `kt-shadow host-key <key>` on its log when it starts: check that the shadow image \
         is kt-shadow of the same version as this kt (`kt-shadow version`) and see \
         `kubectl logs {pod} -n {namespace}`{}",
        if log.is_empty() { String::new() } else { format!("; its log begins:\n{log}") }
    )]
    ShadowHostKey {
        /// The shadow pod.
        pod: String,
        /// Its namespace.
        namespace: String,
        /// What is wrong with the line, or that it is missing.
        reason: String,
        /// The start of its log, control characters escaped.
        log: String,
    },

    /// The pod under the shadow's name is not the one the session created: another pod
    /// of the same name (a different UID), or the pod was deleted or is being deleted.
    /// The tunnel refuses to reconnect to it (whoever made it could receive the
    /// session's traffic): the session fails at once, no retry. The tunnel's
    /// [`Error::TunnelDown`] and `Event::TunnelLost` carry this message.
    #[error(
        "the shadow pod `{pod}` was replaced or removed: {reason}; kt does not reconnect to \
         a pod it did not create, so nothing was sent through it. Close this session and \
         connect again, and check who can delete and create pods in namespace `{namespace}` \
         (`kubectl get events -n {namespace}`)"
    )]
    ShadowReplaced {
        /// The shadow pod's name.
        pod: String,
        /// Its namespace.
        namespace: String,
        /// What changed: the UID it has now and the one it was created with, or that it
        /// is gone or being deleted.
        reason: String,
    },

    /// The kt-shadow pod runs as ServiceAccount `kt-shadow` (its watchdog reads the
    /// session's Lease with it), and the namespace has none: the shipped Role file was
    /// not applied there.
    #[error(
        "the shadow pod cannot be created in namespace `{namespace}`: its ServiceAccount \
         `kt-shadow` does not exist there ({message}); apply kt's Role file in that namespace, \
         which makes it: `kubectl apply -n {namespace} -f {CONNECT_ROLE_YAML}` \
         (or {VPN_ROLE_YAML} for VPN mode)"
    )]
    ShadowServiceAccount {
        /// The namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },

    /// There is no kt-shadow binary to ship to the cluster (the imageless shadow, the
    /// default when no shadow image is given).
    #[error(
        "kt has no kt-shadow binary to ship to the cluster ({tried}); build one with \
         `kt-shadow/build-static` and name its directory with the agent directory option \
         or KT_AGENT_DIR, use a kt built with KT_AGENT_EMBED, or give a shadow image built \
         from kt-shadow/Dockerfile (the shadow image option, --image or KT_SHADOW_IMAGE)"
    )]
    AgentMissing {
        /// Where kt looked.
        tried: String,
    },

    /// The binary to ship cannot run on a node as it is (not a static Linux executable,
    /// an unknown architecture, a loader too big for one part).
    #[error("cannot ship {path} to the cluster: {reason}")]
    AgentInvalid {
        /// The file (or `embedded`).
        path: String,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A part of the shipped agent in the namespace does not hold what kt uploaded:
    /// the ConfigMap was changed or replaced. kt does not run it.
    #[error(
        "ConfigMap `{configmap}` in namespace `{namespace}` does not hold what kt uploaded \
         ({detail}); kt refused to run it. Find out who changed it, then delete it \
         (`kubectl delete configmap {configmap} -n {namespace}`, or `ktctl clean`, which \
         removes the parts no pod uses) so that kt uploads it again"
    )]
    AgentTampered {
        /// The namespace.
        namespace: String,
        /// The ConfigMap.
        configmap: String,
        /// What did not match.
        detail: String,
    },

    /// The scheduler cannot place the shadow pod: no node matches what it needs.
    #[error(
        "the shadow pod `{pod}` cannot be scheduled: {message}; {hint}; see \
         `kubectl describe pod {pod} -n {namespace}`"
    )]
    ShadowUnschedulable {
        /// The shadow pod.
        pod: String,
        /// Its namespace.
        namespace: String,
        /// The scheduler's message.
        message: String,
        /// What to do.
        hint: String,
    },

    /// The shadow pod did not become ready in time.
    #[error(
        "the shadow pod `{pod}` was not ready within {timeout:?} (last seen: {last}); \
         see `kubectl describe pod {pod} -n {namespace}`, or raise the pod-ready timeout"
    )]
    PodReadyTimeout {
        /// The shadow pod.
        pod: String,
        /// Its namespace.
        namespace: String,
        /// The bound that ran out.
        timeout: Duration,
        /// The pod's state when it ran out.
        last: String,
    },

    /// The API server or the node refused or broke the port-forward to the shadow.
    #[error(
        "port-forward to pod `{pod}` port {port} failed: {reason}; check the `create \
         pods/portforward` permission ({CONNECT_ROLE_YAML}), that the API server and any proxy in \
         front of it allow WebSocket upgrades, and that the shadow listens on port {port}"
    )]
    PortForward {
        /// The shadow pod.
        pod: String,
        /// The pod port.
        port: u16,
        /// What went wrong.
        reason: String,
    },

    /// The SSH session to the shadow could not be set up (handshake, host key, login).
    #[error("SSH to the shadow pod `{pod}` failed: {reason}")]
    Ssh {
        /// The shadow pod.
        pod: String,
        /// What went wrong, and what to do.
        reason: String,
    },

    /// A name has no address in the cluster's DNS.
    #[error(
        "`{name}` does not resolve in the cluster (tried {}); check the spelling, add the \
         namespace (`name.namespace`) for a Service in another namespace, and check that the \
         Service exists (`kubectl get svc -A`)",
        tried.join(", ")
    )]
    NameNotFound {
        /// The name asked for.
        name: String,
        /// Every fully qualified name that was tried, in order.
        tried: Vec<String>,
    },

    /// A DNS lookup failed for another reason than the name not existing.
    #[error("DNS lookup of `{name}` through the cluster DNS server {server} failed: {reason}")]
    Dns {
        /// The name asked for.
        name: String,
        /// The DNS server (address or name as seen from the shadow).
        server: String,
        /// What went wrong.
        reason: String,
    },

    /// The shadow could not connect to a host and port in the cluster.
    #[error("cannot connect to {host}:{port} from the shadow pod: {reason}")]
    Connect {
        /// The host (IP address or name) asked for.
        host: String,
        /// The port.
        port: u16,
        /// What the shadow or the tunnel reported.
        reason: String,
    },

    /// A forward target that cannot be parsed.
    #[error(
        "invalid target `{target}`: {reason}; write a Service name (`web`, `web.other-ns`), \
         `svc/web`, `pod/web-0`, or an IP address"
    )]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// Why it was refused.
        reason: String,
    },

    /// A setting that cannot be parsed or is out of range (a DNS mode, a shadow
    /// flavour, a CIDR, a port).
    #[error("invalid {what} `{value}`; expected {expected}")]
    InvalidArgument {
        /// What was being parsed ("DNS mode", "CIDR", ...).
        what: String,
        /// The value as given.
        value: String,
        /// What would be accepted.
        expected: String,
    },

    /// A Service or pod named as a forward target does not exist.
    #[error("{kind} `{name}` not found in namespace `{namespace}`{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    TargetNotFound {
        /// `Service` or `pod`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The namespace searched.
        namespace: String,
        /// More detail (e.g. the pod has no IP yet).
        detail: String,
    },

    /// The session's shadow cannot do what was asked: UDP
    /// ([`Session::forward_udp`](crate::Session::forward_udp),
    /// [`Session::udp_channel`](crate::Session::udp_channel)) with the
    /// [`OpenSsh`](crate::ShadowFlavour::OpenSsh) shadow.
    #[error("{feature} is not available in this session: {reason}")]
    Unsupported {
        /// What was asked for (`UDP`).
        feature: &'static str,
        /// Why not, and what to do instead.
        reason: String,
    },

    /// A datagram longer than a UDP flow carries (65 507 bytes, the largest UDP payload
    /// over IPv4).
    #[error("a {len}-byte datagram is longer than the {max} bytes a UDP flow carries")]
    DatagramTooLarge {
        /// The datagram's length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A UDP flow ([`DatagramChannel`](crate::DatagramChannel)) has ended.
    #[error("the UDP flow to {target} port {port} is closed: {reason}; open a new one")]
    FlowClosed {
        /// The target as given.
        target: String,
        /// The port.
        port: u16,
        /// Why it ended.
        reason: String,
    },

    /// The tunnel is down and could not be re-established.
    #[error("the tunnel to the shadow pod is down: {reason}; close this session and connect again")]
    TunnelDown {
        /// Why.
        reason: String,
    },

    /// The session was closed.
    #[error("the session is closed")]
    Closed,

    /// A local listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Generating or encoding the session's SSH keys failed.
    #[error("cannot make the session's SSH keys: {source}")]
    Keys {
        /// What ssh-key reported.
        #[source]
        source: russh::keys::ssh_key::Error,
    },

    /// A kubeconfig file given explicitly could not be read.
    #[error("cannot read kubeconfig {}: {source}", path.display())]
    ReadKubeconfig {
        /// The file.
        path: PathBuf,
        /// What kube-rs reported.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// VPN mode needs a capability this process does not have.
    #[error(
        "{action} needs {capability}: run as root, grant it (`sudo setcap cap_net_admin+ep \
         <program>`), or use proxy mode instead (the SOCKS5 and HTTP proxies, the proxy \
         environment variables and local forwards need no privileges)"
    )]
    NeedsCapability {
        /// What kt was doing ("creating the tun device kt0").
        action: String,
        /// The capability, e.g. `CAP_NET_ADMIN`.
        capability: &'static str,
    },

    /// Setting up or running the VPN (tun device, routes, userspace stack) failed.
    #[error("VPN: cannot {action}: {source}")]
    Vpn {
        /// What kt was doing.
        action: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Installing or restoring the system DNS configuration failed.
    #[error(
        "system DNS: cannot {action} {}: {source}; check the file's permissions (VPN mode \
         runs as root), or choose another DNS mode (`off` leaves it alone)",
        path.display()
    )]
    SystemDns {
        /// What kt was doing.
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Another kt session holds what a swap or expose asked for (a Service or workload
    /// under a live lease, a Service name already taken).
    #[error("{message}")]
    TargetHeld {
        /// Who holds it, since when, and what to do.
        message: String,
    },

    /// Nothing listens on a local port that a swap or expose would send cluster traffic
    /// to.
    #[error(
        "nothing listens on 127.0.0.1:{port} ({reason}): start the local process first, \
         or turn the check off (`check_local(false)`, ktctl `--skip-local-check`)"
    )]
    NotListening {
        /// The local port.
        port: u16,
        /// What connecting to it said.
        reason: String,
    },

    /// A failure inside kt that the caller cannot fix.
    #[error("internal error: {what}")]
    Internal {
        /// What failed.
        what: String,
    },

    /// An object a session held is no longer held by it (deleted, released, or taken
    /// over by another session after the hold expired): the heartbeat cannot renew it.
    #[error(
        "kt session `{session}` no longer holds {object}: {reason}; what the swap changed \
         there may have been restored or taken over: close the swap and start it again"
    )]
    HoldLost {
        /// The object (`Service dev/web`).
        object: String,
        /// The session.
        session: String,
        /// What happened to it.
        reason: String,
    },

    /// A guarded change kept being refused because the object changed between every
    /// read and write.
    #[error(
        "{object} changed between each of kt's {attempts} reads and its guarded write: \
         something keeps writing it; try again, or find the writer (`kubectl get -w`)"
    )]
    ObjectBusy {
        /// The object (`Service dev/web`).
        object: String,
        /// How many times kt read and tried.
        attempts: u32,
    },

    /// A restore record or change kt cannot use (a field kt does not change on that
    /// kind, an unreadable `kt.dev/restore` annotation, ...): the message says what to
    /// do.
    #[error(transparent)]
    Restore {
        /// What [`kt_proto::guard`] reported.
        #[from]
        source: kt_proto::Error,
    },

    /// Closing could not remove every object the session created.
    #[error(
        "could not remove everything the session created: {}; delete them with \
         `kubectl delete pod,secret -n {namespace} -l kt.dev/session={session}`",
        remaining.join(", ")
    )]
    Cleanup {
        /// The session id.
        session: String,
        /// The namespace.
        namespace: String,
        /// What was left, and why.
        remaining: Vec<String>,
    },
}

/// What kind of failure an [`Error`] is: the stable classification every front end
/// (C status codes, Python exception classes, Node error codes, ktctl exit codes) maps,
/// so that the same failure reads the same everywhere. New kinds may be added;
/// existing names and codes never change. [`ErrorKind::ALL`] lists every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A value kt does not accept: a forward target, a CIDR, a DNS mode, a datagram
    /// that is too long, an option out of range.
    InvalidArgument,
    /// The session (or the UDP flow) is closed.
    Closed,
    /// Something did not happen in time (the shadow pod did not become ready).
    Timeout,
    /// VPN mode needs a capability (CAP_NET_ADMIN) this process does not have.
    NeedsCapability,
    /// Kubernetes RBAC refused a call kt needs.
    Forbidden,
    /// A namespace, Service, pod or DNS name does not exist.
    NotFound,
    /// The kubeconfig cannot be found, read or used.
    Kubeconfig,
    /// The Kubernetes API server does not answer.
    ApiUnreachable,
    /// Another Kubernetes API call failed.
    Api,
    /// The shadow pod cannot start or failed.
    Shadow,
    /// The tunnel to the shadow (port-forward, SSH) failed or is down.
    Tunnel,
    /// The shadow could not connect to a host and port in the cluster (refused,
    /// unreachable, no answer).
    Connect,
    /// A DNS lookup in the cluster failed for another reason than the name missing.
    Dns,
    /// The session cannot do this (UDP with the OpenSSH shadow, VPN off Linux).
    Unsupported,
    /// A local operating-system call failed (binding a local port).
    Io,
    /// VPN mode: the tun device, its routes or the system DNS could not be set up.
    Vpn,
    /// Closing could not remove every object the session created.
    Cleanup,
    /// A failure inside kt that the caller cannot fix (making SSH keys).
    Internal,
    /// Another kt session holds what was asked for (a swapped Service or workload, a
    /// Service name expose would create).
    Conflict,
}

impl ErrorKind {
    /// Every kind, in code order.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::InvalidArgument,
        ErrorKind::Closed,
        ErrorKind::Timeout,
        ErrorKind::NeedsCapability,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::Kubeconfig,
        ErrorKind::ApiUnreachable,
        ErrorKind::Api,
        ErrorKind::Shadow,
        ErrorKind::Tunnel,
        ErrorKind::Dns,
        ErrorKind::Unsupported,
        ErrorKind::Io,
        ErrorKind::Vpn,
        ErrorKind::Cleanup,
        ErrorKind::Internal,
        ErrorKind::Connect,
        ErrorKind::Conflict,
    ];

    /// The stable name, `snake_case` (`not_found`, `api_unreachable`, ...): Node's
    /// error code is `KT_` and its upper case, Python's `KtError.kind` is the name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NeedsCapability => "needs_capability",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Kubeconfig => "kubeconfig",
            ErrorKind::ApiUnreachable => "api_unreachable",
            ErrorKind::Api => "api",
            ErrorKind::Shadow => "shadow",
            ErrorKind::Tunnel => "tunnel",
            ErrorKind::Connect => "connect",
            ErrorKind::Dns => "dns",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Io => "io",
            ErrorKind::Vpn => "vpn",
            ErrorKind::Cleanup => "cleanup",
            ErrorKind::Internal => "internal",
            ErrorKind::Conflict => "conflict",
        }
    }

    /// The stable number: the C status code (`kt_status`) of this kind. Numbers are
    /// never reused; the gaps (0, 2-4, 20, 21) are the C ABI's own statuses.
    pub fn code(self) -> u32 {
        match self {
            ErrorKind::InvalidArgument => 1,
            ErrorKind::Closed => 5,
            ErrorKind::Timeout => 6,
            ErrorKind::NeedsCapability => 7,
            ErrorKind::Forbidden => 8,
            ErrorKind::NotFound => 9,
            ErrorKind::Kubeconfig => 10,
            ErrorKind::ApiUnreachable => 11,
            ErrorKind::Api => 12,
            ErrorKind::Shadow => 13,
            ErrorKind::Tunnel => 14,
            ErrorKind::Dns => 15,
            ErrorKind::Unsupported => 16,
            ErrorKind::Io => 17,
            ErrorKind::Vpn => 18,
            ErrorKind::Cleanup => 19,
            ErrorKind::Internal => 22,
            ErrorKind::Connect => 23,
            ErrorKind::Conflict => 24,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = Error;

    /// Parses a [`ErrorKind::name`].
    fn from_str(s: &str) -> Result<ErrorKind> {
        ErrorKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::InvalidArgument {
                what: "error kind".to_owned(),
                value: s.to_owned(),
                expected: ErrorKind::ALL
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl Error {
    /// The kind of failure: what front ends branch on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Kubeconfig { .. }
            | Error::NoConfig { .. }
            | Error::Client { .. }
            | Error::ReadKubeconfig { .. } => ErrorKind::Kubeconfig,
            Error::ApiUnreachable { .. } => ErrorKind::ApiUnreachable,
            Error::NamespaceNotFound { .. }
            | Error::NameNotFound { .. }
            | Error::TargetNotFound { .. } => ErrorKind::NotFound,
            Error::Forbidden { .. } | Error::ShadowServiceAccount { .. } => ErrorKind::Forbidden,
            Error::Api { .. } => ErrorKind::Api,
            Error::ShadowImage { .. }
            | Error::ShadowFailed { .. }
            | Error::ShadowHostKey { .. }
            | Error::ShadowReplaced { .. }
            | Error::ShadowUnschedulable { .. }
            | Error::AgentMissing { .. }
            | Error::AgentTampered { .. } => ErrorKind::Shadow,
            Error::PodReadyTimeout { .. } => ErrorKind::Timeout,
            Error::PortForward { .. } | Error::Ssh { .. } | Error::TunnelDown { .. } => {
                ErrorKind::Tunnel
            }
            Error::Connect { .. } => ErrorKind::Connect,
            Error::Dns { .. } => ErrorKind::Dns,
            Error::InvalidTarget { .. }
            | Error::DatagramTooLarge { .. }
            | Error::InvalidArgument { .. }
            | Error::AgentInvalid { .. } => ErrorKind::InvalidArgument,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::FlowClosed { .. } | Error::Closed => ErrorKind::Closed,
            Error::Bind { .. } => ErrorKind::Io,
            Error::Keys { .. } => ErrorKind::Internal,
            Error::NeedsCapability { .. } => ErrorKind::NeedsCapability,
            Error::Vpn { .. } | Error::SystemDns { .. } => ErrorKind::Vpn,
            Error::Cleanup { .. } => ErrorKind::Cleanup,
            Error::TargetHeld { .. } | Error::HoldLost { .. } | Error::ObjectBusy { .. } => {
                ErrorKind::Conflict
            }
            Error::NotListening { .. } => ErrorKind::Connect,
            Error::Internal { .. } => ErrorKind::Internal,
            Error::Restore { .. } => ErrorKind::InvalidArgument,
        }
    }

    /// A representative error of `kind`, for the bindings' tests that walk every
    /// [`ErrorKind`] through their own error mapping.
    #[doc(hidden)]
    pub fn example(kind: ErrorKind) -> Error {
        let text = |s: &str| s.to_owned();
        match kind {
            ErrorKind::InvalidArgument => Error::InvalidArgument {
                what: text("CIDR"),
                value: text("nope"),
                expected: text("address/prefix"),
            },
            ErrorKind::Closed => Error::Closed,
            ErrorKind::Timeout => Error::PodReadyTimeout {
                pod: text("kt-shadow-example"),
                namespace: text("dev"),
                timeout: Duration::from_secs(60),
                last: text("Pending"),
            },
            ErrorKind::NeedsCapability => Error::NeedsCapability {
                action: text("creating the tun device kt0"),
                capability: "CAP_NET_ADMIN",
            },
            ErrorKind::Forbidden => Error::Forbidden {
                verb: "create",
                resource: "pods",
                namespace: text("dev"),
                message: text("pods is forbidden"),
            },
            ErrorKind::NotFound => Error::NamespaceNotFound {
                namespace: text("dev"),
            },
            ErrorKind::Kubeconfig => Error::ReadKubeconfig {
                path: PathBuf::from("/nonexistent/kubeconfig"),
                source: kube::config::KubeconfigError::ReadConfig(
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                    PathBuf::from("/nonexistent/kubeconfig"),
                ),
            },
            ErrorKind::ApiUnreachable => Error::ApiUnreachable {
                server: text("https://127.0.0.1:6443"),
                action: text("list pods"),
                source: kube::Error::Service(Box::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                ))),
            },
            ErrorKind::Api => Error::Api {
                action: text("get pods"),
                source: kube::Error::LinesCodecMaxLineLengthExceeded,
            },
            ErrorKind::Shadow => Error::ShadowFailed {
                pod: text("kt-shadow-example"),
                namespace: text("dev"),
                reason: text("exited with code 1"),
                log: String::new(),
            },
            ErrorKind::Tunnel => Error::TunnelDown {
                reason: text("example"),
            },
            ErrorKind::Connect => Error::Connect {
                host: text("10.96.0.1"),
                port: 1,
                reason: text("connection refused"),
            },
            ErrorKind::Dns => Error::Dns {
                name: text("web"),
                server: text("10.96.0.10"),
                reason: text("SERVFAIL"),
            },
            ErrorKind::Unsupported => Error::Unsupported {
                feature: "UDP",
                reason: text("UDP needs the kt-shadow agent"),
            },
            ErrorKind::Io => Error::Bind {
                addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
            ErrorKind::Vpn => Error::Vpn {
                action: text("add a route"),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
            ErrorKind::Cleanup => Error::Cleanup {
                session: text("example"),
                namespace: text("dev"),
                remaining: vec![text("pod `kt-shadow-example`")],
            },
            ErrorKind::Internal => Error::Keys {
                source: russh::keys::ssh_key::Error::AlgorithmUnknown,
            },
            ErrorKind::Conflict => Error::TargetHeld {
                message: text(
                    "Service dev/web is held by kt session `a1b2c3d4` of alice since \
                     2026-12-07T18:00:00Z",
                ),
            },
        }
    }

    /// Whether the error is about the tunnel being temporarily unusable (a reconnect
    /// may fix it), as opposed to a permanent refusal.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::ApiUnreachable { .. } | Error::PortForward { .. } | Error::Ssh { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn kinds_have_distinct_stable_names_and_codes() {
        let names: HashSet<_> = ErrorKind::ALL.iter().map(|k| k.name()).collect();
        let codes: HashSet<_> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert_eq!(codes.len(), ErrorKind::ALL.len());
        // The C ABI's own statuses (OK, NULL_POINTER, INVALID_UTF8, INVALID_HANDLE,
        // WRONG_THREAD, PANIC) are never a kind's code.
        for reserved in [0, 2, 3, 4, 20, 21] {
            assert!(!codes.contains(&reserved), "{reserved}");
        }
        for kind in ErrorKind::ALL {
            assert_eq!(Error::example(*kind).kind(), *kind);
            assert_eq!(kind.name().parse::<ErrorKind>().ok(), Some(*kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(
            "nope".parse::<ErrorKind>().unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn forbidden_names_the_role_file_that_grants_the_verb() {
        let forbidden = |verb, resource| {
            Error::Forbidden {
                verb,
                resource,
                namespace: "dev".into(),
                message: "no".into(),
            }
            .to_string()
        };
        for (verb, resource) in [
            ("create", "pods"),
            ("create", "leases"),
            ("get", "services"),
            ("create", "secrets"),
        ] {
            let text = forbidden(verb, resource);
            assert!(
                text.contains("`kubectl apply -n dev -f kt-core/rbac/connect.yaml`"),
                "{text}"
            );
            assert!(text.contains("--role=kt-connect"), "{text}");
            assert!(
                text.contains("for VPN mode use kt-core/rbac/vpn.yaml"),
                "{text}"
            );
        }
        for (verb, resource) in [("list", "services"), ("create (dry-run)", "services")] {
            let text = forbidden(verb, resource);
            assert!(
                text.contains("`kubectl apply -n dev -f kt-core/rbac/vpn.yaml`"),
                "{text}"
            );
            assert!(text.contains("--role=kt-vpn"), "{text}");
            assert!(!text.contains("connect.yaml"), "{text}");
        }
        let sa = Error::ShadowServiceAccount {
            namespace: "dev".into(),
            message: "serviceaccount \"kt-shadow\" not found".into(),
        };
        assert_eq!(sa.kind(), ErrorKind::Forbidden);
        let text = sa.to_string();
        assert!(
            text.contains("`kubectl apply -n dev -f kt-core/rbac/connect.yaml`"),
            "{text}"
        );
        assert!(text.contains("kt-core/rbac/vpn.yaml"), "{text}");
    }

    #[test]
    fn messages_name_no_rust_api() {
        let samples = [
            Error::NamespaceNotFound {
                namespace: "x".into(),
            },
            Error::PodReadyTimeout {
                pod: "p".into(),
                namespace: "x".into(),
                timeout: Duration::from_secs(1),
                last: "Pending".into(),
            },
            Error::ShadowImage {
                pod: "p".into(),
                image: "i".into(),
                reason: "ErrImagePull".into(),
                message: String::new(),
            },
            Error::ShadowReplaced {
                pod: "p".into(),
                namespace: "x".into(),
                reason: "it was deleted".into(),
            },
            Error::ShadowServiceAccount {
                namespace: "x".into(),
                message: "serviceaccount \"kt-shadow\" not found".into(),
            },
            Error::ShadowHostKey {
                pod: "p".into(),
                namespace: "x".into(),
                reason: "no host-key line".into(),
                log: String::new(),
            },
            Error::NeedsCapability {
                action: "a".into(),
                capability: "CAP_NET_ADMIN",
            },
            Error::SystemDns {
                action: "write".into(),
                path: "/etc/resolv.conf".into(),
                source: std::io::Error::other("x"),
            },
        ];
        let samples = samples
            .into_iter()
            .chain(ErrorKind::ALL.iter().map(|k| Error::example(*k)));
        for e in samples {
            let text = e.to_string();
            assert!(!text.contains("::"), "{text}");
        }
    }
}
