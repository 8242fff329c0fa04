//! What a caller chooses: [`ConnectOptions`] (and [`VpnOptions`] for VPN mode), the
//! shadow's [`ShadowFlavour`], and the parsers every front end shares
//! ([`FromStr`](std::str::FromStr) for [`ShadowFlavour`] and [`DnsMode`], [`parse_net`]).

mod inbound;
pub mod surface;
mod vpn;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kt_proto::shadow;

use crate::error::{Error, Result};
use crate::events::{Callback, Event};

pub use inbound::{
    DEFAULT_RESTORE_TTL, ExposeOptions, MeshOptions, MeshRule, PortMap, RemotePort, ServiceType,
    SwapMode, SwapOptions,
};
pub use vpn::{DEFAULT_MTU, DnsMode, VpnOptions, parse_net};

/// The SSH user of the OpenSSH shadow (sshd runs as root and needs a real user).
pub(crate) const OPENSSH_USER: &str = "root";

/// Environment variable overriding the default shadow image (both flavours).
pub const SHADOW_IMAGE_ENV: &str = "KT_SHADOW_IMAGE";

/// Environment variable naming a directory with the agent to ship (`kt-shadow`), like
/// [`ConnectOptions::agent_dir`].
pub const AGENT_DIR_ENV: &str = "KT_AGENT_DIR";

/// The base image of the imageless shadow when no running pod in the namespace can lend
/// its image ([`ConnectOptions::base_image`]): the kubelet's own sandbox image, which
/// most nodes already have and which is tiny to pull where they do not.
pub const DEFAULT_BASE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// The cluster DNS address used when the `kube-dns` Service cannot be read (the
/// kubeadm/kind default).
pub const FALLBACK_DNS_SERVER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// Which SSH server runs in the shadow pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ShadowFlavour {
    /// kt's own agent, `kt-shadow` (built from `kt-shadow/`, shipped through the API
    /// server by default, or from an image you name with
    /// [`ConnectOptions::shadow_image`]): a small static binary that runs as a
    /// non-root user under the **restricted** Pod Security Standard, with an exec
    /// readiness probe (`kt-shadow probe`), a watchdog (on the session's Lease, read as
    /// ServiceAccount `kt-shadow`, and on SSH clients) and a UDP channel.
    /// It gets the client's public key as an argument and makes its host key in
    /// memory, reporting the public half on its log: no Secret, no private key in the
    /// API.
    #[default]
    KtShadow,
    /// A stock OpenSSH `sshd` (kt-connect's shadow is sshd with `GatewayPorts yes`),
    /// for clusters where only such an image is available. sshd runs as **root**
    /// (`/usr/sbin/sshd -D -e -f /etc/kt/sshd_config`, configuration from the Secret:
    /// loopback only, the session's keys only, TCP forwarding on), so it needs a
    /// namespace that allows root pods (baseline, not restricted), and the image must
    /// have sshd's privilege-separation directory (`/run/sshd` on Debian). No readiness
    /// probe: the client retries the SSH handshake until sshd answers. Its host key,
    /// made by the client, is in the Secret (sshd reads it from a file), so against a
    /// namespace peer who can read Secrets only the pod UID check protects the session.
    OpenSsh,
}

impl ShadowFlavour {
    /// The SSH user name the client logs in as.
    pub(crate) fn user(self) -> &'static str {
        match self {
            ShadowFlavour::KtShadow => shadow::SSH_USER,
            ShadowFlavour::OpenSsh => OPENSSH_USER,
        }
    }
}

impl fmt::Display for ShadowFlavour {
    /// `kt-shadow` or `openssh`, as `FromStr` reads them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShadowFlavour::KtShadow => "kt-shadow",
            ShadowFlavour::OpenSsh => "openssh",
        })
    }
}

impl std::str::FromStr for ShadowFlavour {
    type Err = Error;

    /// `kt-shadow` or `openssh` (case-insensitive; `_` may stand for `-`).
    fn from_str(s: &str) -> Result<ShadowFlavour> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "kt-shadow" | "ktshadow" => Ok(ShadowFlavour::KtShadow),
            "openssh" | "open-ssh" | "sshd" => Ok(ShadowFlavour::OpenSsh),
            _ => Err(Error::InvalidArgument {
                what: "shadow flavour".to_owned(),
                value: s.to_owned(),
                expected: "kt-shadow or openssh".to_owned(),
            }),
        }
    }
}

/// How to open a [`Session`](crate::Session); a builder. Every setting has a default, so
/// `ConnectOptions::new()` connects with the current kubeconfig context and namespace.
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) kubeconfig: Option<PathBuf>,
    pub(crate) context: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) shadow_image: Option<String>,
    pub(crate) base_image: Option<String>,
    pub(crate) agent_dir: Option<PathBuf>,
    pub(crate) flavour: ShadowFlavour,
    pub(crate) shadow_probe_binary: Option<String>,
    pub(crate) sshd_path: String,
    pub(crate) ssh_port: u16,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) image_pull_secrets: Vec<String>,
    pub(crate) node_selector: BTreeMap<String, String>,
    pub(crate) pod_ready_timeout: Duration,
    pub(crate) port_forward_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) shadow_heartbeat_timeout: Option<Duration>,
    pub(crate) reconnect_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) dns_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) cluster_domain: String,
    pub(crate) dns_server: Option<IpAddr>,
    pub(crate) socks5_port: u16,
    pub(crate) http_proxy_port: u16,
    pub(crate) proxy_auth: bool,
    pub(crate) on_event: Option<Callback>,
    pub(crate) vpn: Option<VpnOptions>,
    /// Ports the connect shadow may listen on for remote forwards (tests only).
    pub(crate) remote_forward_ports: Vec<NonZeroU16>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            kubeconfig: None,
            context: None,
            namespace: None,
            shadow_image: None,
            base_image: None,
            agent_dir: None,
            flavour: ShadowFlavour::KtShadow,
            shadow_probe_binary: None,
            sshd_path: "/usr/sbin/sshd".to_owned(),
            ssh_port: shadow::SSH_PORT,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            image_pull_secrets: Vec::new(),
            node_selector: BTreeMap::new(),
            pod_ready_timeout: Duration::from_secs(60),
            port_forward_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            shadow_heartbeat_timeout: Some(Duration::from_secs(600)),
            reconnect_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(30),
            dns_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(60),
            cluster_domain: "cluster.local".to_owned(),
            dns_server: None,
            socks5_port: 0,
            http_proxy_port: 0,
            proxy_auth: false,
            on_event: None,
            vpn: None,
            remote_forward_ports: Vec::new(),
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("kubeconfig", &self.kubeconfig)
            .field("context", &self.context)
            .field("namespace", &self.namespace)
            .field("shadow_image", &self.shadow_image)
            .field("base_image", &self.base_image)
            .field("agent_dir", &self.agent_dir)
            .field("flavour", &self.flavour)
            .field("ssh_port", &self.ssh_port)
            .field("labels", &self.labels)
            .field("annotations", &self.annotations)
            .field("pod_ready_timeout", &self.pod_ready_timeout)
            .field("port_forward_timeout", &self.port_forward_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("reconnect_timeout", &self.reconnect_timeout)
            .field("proxy_auth", &self.proxy_auth)
            .field("on_event", &self.on_event.is_some())
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// The defaults: current kubeconfig context and its namespace, the kt-shadow image.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this kubeconfig file instead of the default loading rules (`KUBECONFIG`,
    /// `~/.kube/config`, in-cluster).
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// Use this kubeconfig context instead of the current one.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Work in this namespace (default: the context's namespace, else `default`). The
    /// shadow runs here and short names resolve here.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Run the shadow from this image instead of shipping kt's agent (the default, see
    /// [`agent_dir`](Self::agent_dir)); `$KT_SHADOW_IMAGE` does the same. For
    /// [`ShadowFlavour::KtShadow`], an image built from `kt-shadow/Dockerfile` and pushed
    /// where the nodes pull from; pin it by digest (`registry/kt-shadow@sha256:...`) so
    /// that what runs is exactly what was reviewed. [`ShadowFlavour::OpenSsh`] needs one:
    /// any image with sshd.
    pub fn shadow_image(mut self, image: impl Into<String>) -> Self {
        self.shadow_image = Some(image.into());
        self
    }

    /// The image the imageless shadow runs its shipped agent on when no running pod of
    /// the namespace (or of a swap's or mesh's target) can lend its image (default
    /// [`DEFAULT_BASE_IMAGE`]). The agent needs nothing from it: any Linux image the
    /// nodes have or can pull will do.
    pub fn base_image(mut self, image: impl Into<String>) -> Self {
        self.base_image = Some(image.into());
        self
    }

    /// Ship the agent (`kt-shadow`, a static Linux executable, as
    /// `kt-shadow/build-static` makes it) from this directory instead of the one
    /// embedded at build time; `$KT_AGENT_DIR` does the same. A `kt-loader` in the
    /// directory replaces the loader built into kt-core. Without a shadow image
    /// ([`shadow_image`](Self::shadow_image)), kt uploads the agent into the namespace
    /// as immutable ConfigMaps named by content hash (once; later sessions reuse them,
    /// [`clean`](crate::clean) removes the ones no pod uses) and the shadow runs it from
    /// a volume on an image the node already has.
    pub fn agent_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.agent_dir = Some(dir.into());
        self
    }

    /// Which SSH server the shadow runs (default [`ShadowFlavour::KtShadow`]).
    pub fn flavour(mut self, flavour: ShadowFlavour) -> Self {
        self.flavour = flavour;
        self
    }

    /// The command the readiness probe runs to find the kt-shadow binary in a shadow
    /// image (default `kt-shadow`, looked up through the container's `PATH`, which the
    /// image sets). Set it for a custom image that keeps the binary off its `PATH`.
    /// Without a shadow image it is not used: the probe runs the binary kt shipped
    /// (`/kt/run/kt-shadow`).
    pub fn shadow_probe_binary(mut self, path: impl Into<String>) -> Self {
        self.shadow_probe_binary = Some(path.into());
        self
    }

    /// Path of `sshd` in the [`ShadowFlavour::OpenSsh`] image (default `/usr/sbin/sshd`).
    pub fn sshd_path(mut self, path: impl Into<String>) -> Self {
        self.sshd_path = path.into();
        self
    }

    /// The SSH port in the shadow pod, on its loopback (default 2222).
    pub fn ssh_port(mut self, port: u16) -> Self {
        self.ssh_port = port;
        self
    }

    /// An extra label on every object kt creates (kt's own labels cannot be overridden).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// An extra annotation on every object kt creates.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// An image pull Secret for the shadow pod (for private registries).
    pub fn image_pull_secret(mut self, name: impl Into<String>) -> Self {
        self.image_pull_secrets.push(name.into());
        self
    }

    /// A node selector entry for the shadow pod.
    pub fn node_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }

    /// How long the shadow pod may take to become Ready and answer SSH (default 60 s).
    pub fn pod_ready_timeout(mut self, timeout: Duration) -> Self {
        self.pod_ready_timeout = timeout;
        self
    }

    /// How long one port-forward + SSH handshake + login may take (default 10 s).
    pub fn port_forward_timeout(mut self, timeout: Duration) -> Self {
        self.port_forward_timeout = timeout;
        self
    }

    /// How often the session's Lease (`coordination.k8s.io`, named like the shadow
    /// pod) is renewed (default 30 s; at least 1 s, and at least three times per
    /// [`ConnectOptions::shadow_heartbeat_timeout`], whatever is set here).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(Duration::from_secs(1));
        self
    }

    /// After how long without any connected client kt-shadow exits on its own
    /// (`--heartbeat-timeout`; default 10 min; `None` never). It is also the duration
    /// of the session's Lease: kt-shadow exits when the Lease goes that long without a
    /// renewal, and the next session in the namespace deletes the pod of an expired
    /// Lease (with `None` the Lease never expires). Leftovers of a crashed client thus
    /// stop running, and are removed, without anyone cleaning up by hand.
    pub fn shadow_heartbeat_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.shadow_heartbeat_timeout = timeout;
        self
    }

    /// How long to keep trying to re-establish a dropped tunnel (default 120 s).
    pub fn reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = timeout;
        self
    }

    /// How long opening one connection into the cluster may take (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one DNS exchange may take (default 5 s).
    pub fn dns_timeout(mut self, timeout: Duration) -> Self {
        self.dns_timeout = timeout;
        self
    }

    /// How long `close()` waits for the objects to be gone (default 60 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The cluster's DNS domain (default `cluster.local`).
    pub fn cluster_domain(mut self, domain: impl Into<String>) -> Self {
        self.cluster_domain = domain.into().trim_matches('.').to_owned();
        self
    }

    /// The cluster DNS server (default: the `kube-dns` Service in `kube-system`, read
    /// from the API; if that is not allowed, `kube-dns.kube-system` as resolved by the
    /// shadow pod; else 10.96.0.10).
    pub fn dns_server(mut self, ip: IpAddr) -> Self {
        self.dns_server = Some(ip);
        self
    }

    /// The local SOCKS5 port (default: any free port on 127.0.0.1).
    pub fn socks5_port(mut self, port: u16) -> Self {
        self.socks5_port = port;
        self
    }

    /// The local HTTP proxy port (default: any free port on 127.0.0.1).
    pub fn http_proxy_port(mut self, port: u16) -> Self {
        self.http_proxy_port = port;
        self
    }

    /// Whether the local SOCKS5 and HTTP proxies require per-session credentials
    /// (default `false`).
    ///
    /// The proxies listen on 127.0.0.1 only, but without credentials, like `kubectl
    /// port-forward` and `ssh -D`, any process on the machine, of any user, can use
    /// them to reach what the shadow pod reaches while the session lives. With `true`,
    /// the session makes a random user name and password (from a cryptographically
    /// secure generator) and the proxies require them: SOCKS5 only with
    /// username/password authentication (RFC 1929; a client offering only "no
    /// authentication" is refused), the HTTP proxy only for requests with
    /// `Proxy-Authorization: Basic` (else `407 Proxy Authentication Required`). The
    /// URLs in [`Session::env`](crate::Session::env), [`Session::socks5_url`](crate::Session::socks5_url)
    /// and [`Session::http_proxy_url`](crate::Session::http_proxy_url) carry them
    /// (`socks5h://user:password@127.0.0.1:port`), so programs given those use them
    /// without more ado; kt never logs the password. Local forwards
    /// ([`Session::forward`](crate::Session::forward)) are plain TCP and stay open to
    /// every local process.
    pub fn proxy_auth(mut self, required: bool) -> Self {
        self.proxy_auth = required;
        self
    }

    /// VPN mode: besides the proxies, a tun device routes the cluster's pod and Service
    /// ranges through the tunnel, and cluster names resolve for every program on the
    /// machine (see [`VpnOptions`] and [`crate::DnsMode`]). Needs CAP_NET_ADMIN (root);
    /// without it, [`Session::connect`](crate::Session::connect) fails with [`Error::NeedsCapability`] before
    /// anything is created in the cluster.
    pub fn vpn(mut self, vpn: VpnOptions) -> Self {
        self.vpn = Some(vpn);
        self
    }

    /// Called with every [`Event`] as it happens, from connect on (for progress
    /// displays). Keep it quick: it runs on kt's tasks.
    pub fn on_event(mut self, callback: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(callback));
        self
    }

    /// Lets this session's shadow listen on `port` for
    /// [`Session::remote_forward`](crate::Session::remote_forward): a connect shadow
    /// allows no remote forward otherwise (the inbound roles allow their target ports
    /// themselves). For tests of the remote-forward groundwork; the port is also declared
    /// as a container port of the shadow pod.
    #[doc(hidden)]
    pub fn allow_remote_forward(mut self, port: NonZeroU16) -> Self {
        if !self.remote_forward_ports.contains(&port) {
            self.remote_forward_ports.push(port);
        }
        self
    }

    /// The shadow image given by the option or `$KT_SHADOW_IMAGE`; `None` means the
    /// imageless shadow (kt ships its agent; [`ShadowFlavour::KtShadow`] only).
    pub fn image(&self) -> Option<String> {
        self.image_with(std::env::var(SHADOW_IMAGE_ENV).ok())
    }

    /// [`image`](Self::image), given the value of `KT_SHADOW_IMAGE`.
    fn image_with(&self, from_env: Option<String>) -> Option<String> {
        if let Some(image) = &self.shadow_image {
            return Some(image.clone());
        }
        from_env.filter(|v| !v.trim().is_empty())
    }

    /// The base image of the imageless shadow.
    pub(crate) fn base_image_or_default(&self) -> &str {
        self.base_image.as_deref().unwrap_or(DEFAULT_BASE_IMAGE)
    }
}

/// 8 random characters of `[a-z0-9]`: a session's or handle's id
/// (`shadow::session_id`), and the value of a default mesh mark
/// ([`MeshRule::version_mark`]). Here, at the bottom of the module graph, so that both
/// can use it.
pub(crate) fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_image_means_the_imageless_shadow() {
        assert_eq!(ConnectOptions::new().image_with(None), None);
        // A blank variable counts as unset.
        assert_eq!(ConnectOptions::new().image_with(Some(" ".into())), None);
        assert_eq!(
            ConnectOptions::new().base_image_or_default(),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(
            ConnectOptions::new()
                .base_image("busybox:1.37")
                .base_image_or_default(),
            "busybox:1.37"
        );
    }

    #[test]
    fn the_option_beats_the_environment_which_beats_the_default() {
        let env = Some("lab/kt-shadow:dev".to_owned());
        assert_eq!(
            ConnectOptions::new().image_with(env.clone()).as_deref(),
            Some("lab/kt-shadow:dev")
        );
        assert_eq!(
            ConnectOptions::new()
                .shadow_image("x/y:1")
                .image_with(env)
                .as_deref(),
            Some("x/y:1")
        );
    }
}
