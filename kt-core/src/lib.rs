//! `kt-core`: work from your machine, or from a test harness, as if you were inside a
//! Kubernetes cluster — without root and with namespace-scoped permissions only.
//!
//! [`Session::connect`] starts a *shadow* pod running an SSH server (kt's own
//! `kt-shadow`, or a stock OpenSSH `sshd`), port-forwards to it through the API server
//! with a fresh key pair, and serves, on 127.0.0.1:
//!
//! - a SOCKS5 proxy ([`Session::socks5_url`]) and an HTTP proxy
//!   ([`Session::http_proxy_url`], `CONNECT` and plain `http://` forwarding), both
//!   resolving names in the cluster with the search list of a pod in the session's
//!   namespace (`web`, `web.other-ns`, `web.other-ns.svc.cluster.local`), optionally
//!   with per-session credentials ([`ConnectOptions::proxy_auth`]);
//! - per-target local forwards ([`Session::forward`]), and for UDP
//!   ([`Session::forward_udp`], [`Session::udp_channel`]; kt-shadow only);
//! - DNS lookups through the cluster DNS ([`Session::resolve`]);
//! - environment variables for a child process ([`Session::env`]).
//!
//! Progress and tunnel state are typed [`Event`]s. The tunnel reconnects by itself
//! when the port-forward or the API server connection drops. [`Session::close`] removes
//! every object the session created.
//!
//! ```no_run
//! use kt_core::{ConnectOptions, Session};
//!
//! # async fn demo() -> Result<(), kt_core::Error> {
//! let session = Session::connect(ConnectOptions::new().namespace("dev")).await?;
//!
//! // Any HTTP client: point it at the proxy (or pass session.env() to a child process).
//! println!("HTTP_PROXY={}", session.http_proxy_url());
//! println!("ALL_PROXY={}", session.socks5_url());
//!
//! // A local port for one Service, and a DNS lookup in the cluster.
//! let db = session.forward("svc/postgres", 5432).await?;
//! println!("postgres is at {db}");
//! println!("web is {:?}", session.resolve("web").await?);
//!
//! session.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What it creates
//!
//! In the session's namespace, labelled `app.kubernetes.io/managed-by=kt`,
//! `kt.dev/session=<id>` and `kt.dev/role=shadow-connect`:
//!
//! - a Pod `kt-shadow-<id>`, whose SSH server listens on the pod's loopback only. The
//!   kt-shadow pod carries the client's **public** key as an argument and nothing
//!   secret; it makes its own host key in memory and prints the public half on its log,
//!   where the client reads it through the API server and pins it (see Security
//!   notes). It passes the **restricted** Pod Security Standard (non-root 65532, no
//!   privilege escalation, all capabilities dropped, seccomp `RuntimeDefault`, read-only
//!   root filesystem). It runs as ServiceAccount `kt-shadow` (made by the shipped Role
//!   files; its only permission is reading Leases), with its token mounted;
//! - a Lease `kt-shadow-<id>` (`coordination.k8s.io/v1`), held by the session id,
//!   lasting the shadow timeout ([`ConnectOptions::shadow_heartbeat_timeout`]), renewed
//!   every [`ConnectOptions::heartbeat_interval`]; owned by the pod. When the client
//!   stops renewing it (crash, lost network), kt-shadow's watchdog ends the pod, and
//!   the next session in the namespace deletes the pods of expired Leases and ended
//!   pods;
//! - for [`ShadowFlavour::OpenSsh`] only, a Secret `kt-shadow-<id>` with the client's
//!   public key, the sshd host key (made by the client and pinned) and the sshd
//!   configuration, which sshd reads from files; owned by the pod, so deleting the pod
//!   deletes it too.
//!
//! # Errors
//!
//! One [`Error`] enum; each message says what failed and what to do. Branch on
//! [`Error::kind`]: an [`ErrorKind`] has a stable name and number that the C, Python,
//! Node and ktctl front ends all map the same way (see [`ErrorKind::ALL`]).
//!
//! ```no_run
//! use kt_core::{ConnectOptions, ErrorKind, Session};
//!
//! # async fn demo() {
//! match Session::connect(ConnectOptions::new().namespace("dev")).await {
//!     Ok(session) => drop(session),
//!     Err(e) if e.kind() == ErrorKind::Forbidden => eprintln!("apply the Role: {e}"),
//!     Err(e) => eprintln!("{} ({}): {e}", e.kind(), e.kind().code()),
//! }
//! # }
//! ```
//!
//! # Security notes
//!
//! By default the local proxies and forwards have no authentication, like `kubectl
//! port-forward` and `ssh -D`: they listen on 127.0.0.1 only, but while the session
//! lives any process on the machine, of any user, can use them to reach what the
//! shadow pod reaches. [`ConnectOptions::proxy_auth`] makes the proxies require
//! random per-session credentials (SOCKS5 username/password, HTTP `Proxy-Authorization:
//! Basic`), which the URLs of [`Session::env`], [`Session::socks5_url`] and
//! [`Session::http_proxy_url`] carry and kt never logs. Forwards stay plain TCP; on a
//! machine shared with people who should not have that access, use the proxies with
//! credentials, or run kt in a network namespace or container of your own. Text a pod wrote is quoted
//! in errors with its control characters escaped, and helpers run as root
//! (`resolvectl`) are taken from the system directories, never from `PATH`.
//!
//! Every link to the shadow (the first and each reconnect) checks that the pod of the
//! shadow's name still has the UID it was created with, and pins the shadow's host
//! key: a pod recreated under the same name is refused ([`Error::ShadowReplaced`]).
//! With kt-shadow (the default) the host key's private half never leaves the pod's
//! memory: no Secret, no file; the client reads the public half from the pod's log
//! through the API server, between two reads of the pod that show the pinned UID, so
//! the log it read was that pod's; a pod made later, even from the same spec, has
//! another key and cannot answer the handshake. The OpenSSH flavour keeps its host key
//! in a Secret (sshd reads it from a file), so there the UID check alone stands between
//! a peer who can read Secrets and the session.
//!
//! # Permissions
//!
//! A namespace-scoped Role is enough. Two are shipped, by what the user does; each file
//! also makes the shadow's ServiceAccount `kt-shadow` (Role `kt-shadow`: `get` on
//! Leases):
//!
//! - [`CONNECT_ROLE_YAML`] (`kt-core/rbac/connect.yaml`), Role `kt-connect`: proxy mode;
//! - [`VPN_ROLE_YAML`] (`kt-core/rbac/vpn.yaml`), Role `kt-vpn`: VPN mode, `kt-connect`
//!   plus `list` and `create` on Services.
//!
//! | resource | verbs | why |
//! |---|---|---|
//! | `pods` | create, get, list, watch, delete | the shadow pod, its UID check, waiting for it, the leftover sweep |
//! | `pods/portforward` | create, get | the tunnel |
//! | `pods/log` | get | kt-shadow's host key (reported on its log); the shadow's log in error messages |
//! | `secrets` | create, patch, delete | the OpenSSH flavour only: sshd's keys and configuration (patch: the owner reference); never read back |
//! | `leases` | create, get, patch | the session's Lease (patch: renewals; get: the sweep, close) |
//! | `services` | get | `forward("svc/name")` |
//! | `configmaps` | create, get, list, delete | the imageless shadow: kt's agent in parts named by content hash (create: upload once; list: which are there; get: check the loader; delete: `clean`); not needed with a shadow image |
//! | `services` | list (`kt-vpn` only) | VPN mode: the namespace's ClusterIPs, the hosts-file names |
//! | `services` | create (`kt-vpn` only) | VPN mode: a **dry-run** create whose refusal names the Service IP range (nothing is created; the verb would also allow real Services, hence only in `kt-vpn`) |
//!
//! Neither Role can read Secrets or patch pods. A refused call fails with
//! [`Error::Forbidden`], naming the file that grants it; a namespace without the
//! ServiceAccount fails with [`Error::ShadowServiceAccount`].
//!
//! Reading `kube-system/kube-dns` is optional: without it the shadow's resolver finds
//! the cluster DNS server. VPN mode reads the cluster-wide ServiceCIDRs and Nodes when
//! allowed (exact ranges) and otherwise works from the namespace alone.
//!
//! # Shadow flavours
//!
//! [`ShadowFlavour::KtShadow`] (default) runs `kt-shadow` and needs no image: kt
//! uploads the static binary into the namespace once (immutable ConfigMaps named by
//! content hash, later sessions reuse them) and runs it from a volume on an image the
//! node already has, borrowed from a running pod in the namespace (for swap and mesh,
//! the target's own), else [`ConnectOptions::base_image`]. A loader in the pod checks
//! every part and the whole against the SHA-256 in the pod spec before it runs
//! anything. An image built from `kt-shadow/Dockerfile` and pushed where your nodes can
//! pull it still works: [`ConnectOptions::shadow_image`] or `KT_SHADOW_IMAGE`, best
//! pinned by digest. [`ShadowFlavour::OpenSsh`] runs a stock sshd as root (the
//! kt-connect-compatible shadow) from the image you name; see its docs. Only
//! kt-shadow relays UDP: with the OpenSSH shadow, [`Session::forward_udp`] and
//! [`Session::udp_channel`] fail with [`Error::Unsupported`] ("UDP needs the kt-shadow
//! agent; the OpenSSH shadow only carries TCP").
//!
//! # UDP
//!
//! [`Session::forward_udp`] binds a UDP socket on 127.0.0.1 and gives each local
//! sender its own flow to the target: a `direct-udp@kt.dev` channel through kt-shadow,
//! which sends from a UDP socket connected to the target, so replies come back to the
//! sender that caused them. Datagrams keep their boundaries (up to 65 507 bytes); a
//! flow idle for 60 s is closed. [`Session::udp_channel`] is the same flow without a
//! local socket ([`DatagramChannel::send`], [`DatagramChannel::recv`]).
//!
//! ```no_run
//! # async fn demo(session: &kt_core::Session) -> Result<(), kt_core::Error> {
//! // A local UDP port for the cluster DNS Service...
//! let dns = session.forward_udp("kube-dns.kube-system", 53).await?;
//! println!("dig @{} -p {} web.dev.svc.cluster.local", dns.ip(), dns.port());
//!
//! // ...or datagrams straight from the program.
//! let flow = session.udp_channel("svc/statsd", 8125).await?;
//! flow.send(b"hits:1|c").await?;
//! # Ok(())
//! # }
//! ```

//! # VPN mode
//!
//! With [`ConnectOptions::vpn`], every program on the machine reaches the cluster with
//! no proxy settings, as with kt-connect's default mode. Needs CAP_NET_ADMIN (root);
//! without it, connect fails with [`Error::NeedsCapability`] before creating anything.
//!
//! - A tun device (`kt0`, ...) gets routes for the cluster's pod and Service ranges,
//!   found with namespace-only permissions where possible (Node pod CIDRs, ServiceCIDR
//!   objects, the range hint of a dry-run Service, the namespace's own pod and Service
//!   IPs), plus [`VpnOptions::include`], minus [`VpnOptions::exclude`]. The API
//!   server's own address is never routed into the tunnel (a covering route is split
//!   around it).
//! - A userspace TCP/IP stack ([smoltcp](https://docs.rs/smoltcp) for TCP; UDP and
//!   ICMP by kt itself) ends each TCP connection and UDP flow locally and opens an SSH
//!   channel to its destination through the shadow. A connection is accepted only
//!   once its channel is open, so a refused destination is refused locally too;
//!   half-closes and resets carry over; ICMP echo to a routed address is answered
//!   with "administratively prohibited", so `ping` fails at once. (`ipstack` was
//!   tried first and dropped: it lost half-closes and resets.)
//! - A local DNS server answers cluster names through the tunnel and passes every
//!   other query to the previous upstream; [`DnsMode`] says how the system resolver
//!   is pointed at it (resolv.conf, systemd-resolved per link, macOS
//!   `/etc/resolver`, or hosts-file entries). What it changes is recorded on disk first
//!   and restored on close, on drop, and at the next start after a crash
//!   ([`recover_system_dns`]). The device and its routes vanish with the process.
//!
//! ```no_run
//! use kt_core::{ConnectOptions, DnsMode, Session, VpnOptions};
//!
//! # async fn demo() -> Result<(), kt_core::Error> {
//! let vpn = VpnOptions::new().dns(DnsMode::ResolvConf);
//! let session = Session::connect(ConnectOptions::new().namespace("dev").vpn(vpn)).await?;
//! let info = session.vpn().expect("VPN mode");
//! println!("{} routes {:?}; DNS {:?}", info.device, info.routes, info.dns_addr);
//! // Now `curl http://web.dev.svc.cluster.local` works from any shell.
//! session.close().await?; // restores resolv.conf, removes the device and the pod
//! # Ok(())
//! # }
//! ```

mod cluster;
mod dns;
mod error;
mod events;
mod inbound;
mod options;
mod outbound;
mod session;
mod shadow;
mod task;
mod transport;
mod vpn;

#[doc(hidden)]
pub use cluster::restore::testing as restore_testing;
pub use cluster::target::Target;
pub use dns::install::{STATE_DIR_ENV, SystemPaths, recover as recover_system_dns};
pub use dns::server::{ClusterResolver, DnsServer, DnsServerConfig};
pub use dns::system::{ResolvConf, ResolvConfGuard};
pub use error::{CONNECT_ROLE_YAML, Error, ErrorKind, INBOUND_ROLE_YAML, Result, VPN_ROLE_YAML};
pub use events::{Event, EventKind, EventValue, Events};
pub use inbound::clean::{CleanReport, clean, recover};
pub use inbound::expose::Expose;
pub use inbound::mesh::Mesh;
pub use inbound::swap::Swap;
pub use ipnet::IpNet;
pub use options::surface;
pub use options::{
    AGENT_DIR_ENV, ConnectOptions, DEFAULT_BASE_IMAGE, DEFAULT_MTU, DEFAULT_RESTORE_TTL, DnsMode,
    ExposeOptions, FALLBACK_DNS_SERVER, MeshOptions, MeshRule, PortMap, RemotePort,
    SHADOW_IMAGE_ENV, ServiceType, ShadowFlavour, SwapMode, SwapOptions, VpnOptions, parse_net,
};
pub use outbound::udp::DatagramChannel;
pub use session::Session;
pub use shadow::spec::sshd_config as openssh_sshd_config;
pub use vpn::VpnInfo;
#[doc(hidden)]
pub use vpn::setup::discover_ranges;
