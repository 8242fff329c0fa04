//! The shadow's command line, built by the client for the pod spec and parsed by the
//! shadow, from this one definition.
//!
//! ```text
//! kt-shadow serve [--listen 127.0.0.1:2222] [--host-key /etc/kt/ssh_host_ed25519_key]
//!                 [--authorized-keys /etc/kt/authorized_keys] [--idle-exit <secs>]
//!                 [--heartbeat-timeout <secs>] [--lease <name>] [--allow-non-loopback]
//!                 [--remote-forward <port>]... [--max-preauth-connections <n>]
//!                 [--max-channels <n>] [--max-udp-flows <n>]
//!                 [--max-held-connections <n>] [--hold-timeout <secs>]
//!                 [--session <id> --restore <Kind/name/uid>...] [--self-delete]
//! kt-shadow serve [--listen 127.0.0.1:2222] --authorized-key '<openssh public key>' [...]
//! kt-shadow probe [--addr 127.0.0.1:2222]
//! kt-shadow version
//! kt-shadow help
//! ```
//!
//! Options take their value as the next argument or after `=`. A later occurrence of
//! an option replaces an earlier one, except `--remote-forward` and `--restore`, which
//! add a port or an object each time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::restore::Kind;
use crate::{Error, shadow};

/// The `serve` command: run the SSH server.
pub const SERVE: &str = "serve";
/// The `probe` command: exit 0 if the SSH port answers with a banner (readiness probe).
pub const PROBE: &str = "probe";
/// The `version` command: print the version.
pub const VERSION: &str = "version";
/// The `help` command: print usage.
pub const HELP: &str = "help";

/// `serve`: address to listen on.
pub const LISTEN: &str = "--listen";
/// `serve`: path of the host private key (OpenSSH format).
pub const HOST_KEY: &str = "--host-key";
/// `serve`: path of the `authorized_keys` file.
pub const AUTHORIZED_KEYS: &str = "--authorized-keys";
/// `serve`: exit 0 this many seconds after the last client disconnected.
pub const IDLE_EXIT: &str = "--idle-exit";
/// `serve`: exit [`shadow::EXIT_HEARTBEAT_TIMEOUT`] when no client has been connected
/// for this many seconds (counted from start until a first client connects, then from
/// each moment the last client disconnects).
pub const HEARTBEAT_TIMEOUT: &str = "--heartbeat-timeout";
/// `serve`: the session's Lease (`coordination.k8s.io/v1`, in the pod's namespace) to
/// watch with the pod's in-cluster credentials: exit [`shadow::EXIT_LEASE_EXPIRED`]
/// when it is deleted or its holder stops renewing it for its `leaseDurationSeconds`.
/// Without credentials, or while the API server cannot be read, only
/// [`HEARTBEAT_TIMEOUT`] applies.
pub const LEASE: &str = "--lease";
/// `serve`: the one public key allowed to log in, given inline (OpenSSH format, one
/// argument). The shadow then makes its own host key in memory and prints its public
/// half on one log line ([`shadow::host_key_log_line`]) before it listens; no key file
/// is read, so [`HOST_KEY`] and [`AUTHORIZED_KEYS`] cannot be given with it.
pub const AUTHORIZED_KEY: &str = "--authorized-key";
/// `serve`: allow a listen address that is not loopback (off by default, so that
/// exposing the SSH port to the pod network is never an accident).
pub const ALLOW_NON_LOOPBACK: &str = "--allow-non-loopback";
/// `serve`: a port that `tcpip-forward` (SSH remote forward) requests may listen on;
/// repeat it for several. Without it the shadow refuses every remote forward (what a
/// connect shadow runs with). `0` allows requests for port 0 (a free port the shadow
/// picks), for tests and hand-run shadows; kt never passes it.
pub const REMOTE_FORWARD: &str = "--remote-forward";
/// `serve`: how many connections may be open without having logged in yet; one more
/// is sent an SSH disconnect ("too many connections") and closed.
pub const MAX_PREAUTH_CONNECTIONS: &str = "--max-preauth-connections";
/// `serve`: how many channels one SSH connection may have open (any kind, both
/// directions); one more is refused with `RESOURCE_SHORTAGE`.
pub const MAX_CHANNELS: &str = "--max-channels";
/// `serve`: how many `direct-udp@kt.dev` flows one SSH connection may have open; one
/// more is refused with `RESOURCE_SHORTAGE`.
pub const MAX_UDP_FLOWS: &str = "--max-udp-flows";
/// `serve`: how many connections one remote-forwarded port holds while no SSH
/// connection has it registered (between a client's connections); one more is reset.
pub const MAX_HELD_CONNECTIONS: &str = "--max-held-connections";
/// `serve`: how long a connection held on a remote-forwarded port waits for a client to
/// register the port again before it is reset.
pub const HOLD_TIMEOUT: &str = "--hold-timeout";
/// `serve`: an object the session ([`SESSION`]) changed, for the shadow's watchdog to
/// put back when the shadow stops (the watched [`LEASE`] expired or is gone, SIGTERM or
/// SIGINT, or any other reason it stops serving): `KIND/NAME/UID`, KIND one of
/// `Service`, `Deployment`, `StatefulSet`, in the pod's namespace; repeat it for more
/// (restored last first). The object's own `kt.dev/restore` annotation says what to put
/// back; it is restored only while its `kt.dev/owner` is the [`SESSION`] and its UID
/// is UID. Needs [`SESSION`].
pub const RESTORE: &str = "--restore";
/// `serve`: the session id holding the [`RESTORE`] objects (the value of their
/// `kt.dev/owner` annotation). Only with [`RESTORE`].
pub const SESSION: &str = "--session";
/// `serve`: when the watched [`LEASE`] expired or is gone, after restoring (and only if
/// nothing failed), delete the shadow's own pod (its name from the `POD_NAME`
/// environment variable, else the host name), so that what the pod owns (the Lease, a
/// per-swap identity) goes with it. Needs [`LEASE`].
pub const SELF_DELETE: &str = "--self-delete";
/// `serve`: with [`SELF_DELETE`], another pod of the same client to delete first (its
/// session's connect shadow: the client that stopped renewing this Lease is gone, and
/// nothing else would remove that pod). Repeatable.
pub const DELETE_POD: &str = "--delete-pod";
/// `probe`: address to probe.
pub const ADDR: &str = "--addr";
/// The `route` command: run the mesh router in front of a Service.
pub const ROUTE: &str = "route";
/// `route`: the address unmatched requests go to (the ClusterIP of the Service that
/// keeps the meshed Service's original selector).
pub const ORIGIN: &str = "--origin";
/// `route`: a port to listen on (a container port the meshed Service targets); repeat
/// it for each.
pub const PORT: &str = "--port";
/// `route`: a UDP port to pass through to the origin (unrouted); repeat it for each.
pub const UDP_PORT: &str = "--udp-port";
/// `route`: the lease the router keeps on the meshed Service (`kt.dev/lease-expiry`),
/// renewed three times per TTL while the router runs.
pub const TTL: &str = "--ttl";
/// `route`: how long the router runs with no developer's shadow before it puts the
/// Service back and deletes itself.
pub const GRACE: &str = "--grace";
/// Default of [`TTL`].
pub const DEFAULT_ROUTE_TTL: Duration = Duration::from_secs(30);
/// Default of [`GRACE`]: a developer's shadow is created within moments of the router
/// (or of another's leaving); the first one gets longer ([`ROUTE_STARTUP_GRACE`]).
pub const DEFAULT_ROUTE_GRACE: Duration = Duration::from_secs(3);
/// How long a router waits for its first developer's shadow.
pub const ROUTE_STARTUP_GRACE: Duration = Duration::from_secs(120);

/// Default of [`MAX_PREAUTH_CONNECTIONS`]: a kt client logs in over one connection at a
/// time and a readiness probe holds one for a moment; sixteen leaves room for
/// reconnects that overlap a dying link.
pub const DEFAULT_MAX_PREAUTH_CONNECTIONS: usize = 16;
/// Default of [`MAX_CHANNELS`]: five times the busiest kt load tested (200 concurrent
/// TCP connections through one session).
pub const DEFAULT_MAX_CHANNELS: usize = 1024;
/// Default of [`MAX_UDP_FLOWS`]: one flow per (local socket, target) pair; a VPN
/// session resolving and talking to a few hundred peers stays far below it.
pub const DEFAULT_MAX_UDP_FLOWS: usize = 1024;
/// Default of [`MAX_HELD_CONNECTIONS`]: a burst of new connections during a tunnel
/// reconnect of a few seconds, per port.
pub const DEFAULT_MAX_HELD_CONNECTIONS: usize = 256;
/// Default of [`HOLD_TIMEOUT`]: long enough for kt's client to notice a dropped tunnel,
/// reconnect and register its forwards again; short enough that a caller's own
/// timeout is rarely reached first.
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(10);

/// Usage text for `kt-shadow help`.
pub const USAGE: &str = "\
kt-shadow: kt's in-cluster agent, an SSH server for port forwarding

USAGE:
  kt-shadow serve [--listen ADDR] [--host-key PATH] [--authorized-keys PATH]
                  [--idle-exit SECS] [--heartbeat-timeout SECS] [--lease NAME]
                  [--allow-non-loopback] [--remote-forward PORT]...
                  [--max-preauth-connections N] [--max-channels N] [--max-udp-flows N]
                  [--max-held-connections N] [--hold-timeout SECS]
                  [--session ID --restore KIND/NAME/UID...] [--self-delete [--delete-pod NAME]...]
  kt-shadow serve --authorized-key KEY [--listen ADDR] [--idle-exit SECS] [...]
  kt-shadow route --session ID --restore Service/NAME/UID --lease NAME --origin IP
                  --port PORT... [--udp-port PORT]... [--ttl SECS] [--grace SECS]
  kt-shadow probe [--addr ADDR]
  kt-shadow version
  kt-shadow help

SERVE OPTIONS:
  --listen ADDR             listen address [default: 127.0.0.1:2222]; must be loopback
                            unless --allow-non-loopback is given
  --host-key PATH           host private key, OpenSSH format
                            [default: /etc/kt/ssh_host_ed25519_key]
  --authorized-keys PATH    public keys allowed to log in, OpenSSH authorized_keys format
                            [default: /etc/kt/authorized_keys]
  --idle-exit SECS          exit 0 when no client has been connected for SECS seconds
                            after the last one disconnected
  --heartbeat-timeout SECS  exit 3 when no client has been connected for SECS seconds
                            (also if none ever connects)
  --lease NAME              with the pod's ServiceAccount token, watch the session's Lease
                            NAME in the pod's namespace; exit 4 when it is deleted or not
                            renewed for its leaseDurationSeconds (API errors: logged, and
                            only --heartbeat-timeout applies)
  --allow-non-loopback      accept a --listen address that is not loopback
  --authorized-key KEY      the one public key allowed to log in, OpenSSH format, one
                            argument (`ssh-ed25519 AAAA... comment`); the host key is then
                            made in memory, never written, and its public key printed to
                            stdout as `kt-shadow host-key <key>` before listening; not
                            with --host-key or --authorized-keys
  --remote-forward PORT     allow SSH remote forwards (tcpip-forward) on PORT; repeat
                            for more ports [default: none, every request is refused].
                            Bind addresses: 0.0.0.0, ::, \"\" or * (all of the pod's
                            interfaces), localhost, or one of the pod's own IP addresses.
                            PORT 0 allows requests for a free port the shadow picks.
                            A forwarded port's listener belongs to the shadow, not to
                            the SSH connection that asked for it: when that connection
                            ends, the port stays open and new connections on it are
                            held until a client asks for the port again (then they are
                            delivered to it in order) or --hold-timeout passes (then
                            they are reset). The newest request for a port wins.
                            cancel-tcpip-forward closes the port for good
  --max-preauth-connections N
                            connections that have not logged in yet [default: 16]; one
                            more gets an SSH disconnect (too many connections)
  --max-channels N          open channels per SSH connection [default: 1024]; one more
                            is refused with RESOURCE_SHORTAGE
  --max-udp-flows N         open UDP flows per SSH connection [default: 1024]; one more
                            is refused with RESOURCE_SHORTAGE
  --max-held-connections N  connections held per forwarded port while no client has it
                            [default: 256]; one more is reset
  --hold-timeout SECS       how long a held connection waits for a client [default: 10];
                            then it is reset (TCP RST) and logged
  --restore KIND/NAME/UID   an object of the pod's namespace (KIND Service, Deployment or
                            StatefulSet) that --session changed: when kt-shadow stops
                            (--lease expired or gone, SIGTERM/SIGINT, any other reason),
                            it puts back what the object's kt.dev/restore annotation
                            records, with the pod's ServiceAccount token (get and patch),
                            only while kt.dev/owner is the session and the UID matches,
                            never overwriting a value someone else changed meanwhile (that
                            is logged); repeat for more objects (restored last first).
                            Exit 5 if a restore failed
  --session ID              the session holding the --restore objects (their kt.dev/owner);
                            needed with --restore
  --self-delete             with --lease: when the Lease expired or is gone, after
                            restoring without failure, delete the shadow's own pod (name
                            from $POD_NAME, else the host name), then exit 4
  --delete-pod NAME         with --self-delete: delete pod NAME first (the same client's
                            session shadow); repeat for more

ROUTE OPTIONS (the mesh router of Service NAME):
  --session ID              the router's id: the kt.dev/owner it keeps on the Service
  --restore Service/NAME/UID
                            the meshed Service; its selector points at this pod. The
                            router renews its hold, and puts the Service back (as
                            kt.dev/restore records) on SIGTERM or when no developer's
                            shadow (pods labelled kt.dev/mesh=NAME,kt.dev/role=shadow-mesh)
                            has existed for --grace (the first one gets 120 s), then
                            deletes its own pod
  --lease NAME              the router's Lease: it writes the developers' shadows it routes
                            to in its kt.dev/mesh-routes annotation (a JSON array, in match
                            order; `[]` once it listens)
  --origin IP               where requests no rule matches go, on the same port
  --port PORT               listen on 0.0.0.0:PORT; repeat for each port
  --udp-port PORT           relay UDP datagrams on PORT to the origin (unrouted); repeat
  --ttl SECS                the lease on the Service [default: 30]
  --grace SECS              [default: 3]

PROBE OPTIONS:
  --addr ADDR               SSH address to probe [default: 127.0.0.1:2222]; exits 0 if an
                            SSH banner arrives within 1 second
";

/// Arguments of `kt-shadow serve`. [`Default`] is the shadow pod's configuration:
/// loopback [`shadow::SSH_PORT`], keys from [`shadow::MOUNT_DIR`], no timeouts, no
/// remote forwards, the default limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeArgs {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Path of the host private key.
    pub host_key: PathBuf,
    /// Path of the `authorized_keys` file.
    pub authorized_keys: PathBuf,
    /// Exit 0 this long after the last client disconnected (never before a first client).
    pub idle_exit: Option<Duration>,
    /// Exit [`shadow::EXIT_HEARTBEAT_TIMEOUT`] when no client has been connected this long.
    pub heartbeat_timeout: Option<Duration>,
    /// The session's Lease to watch (the shadow pod's name); see [`LEASE`].
    pub lease: Option<String>,
    /// Accept a non-loopback [`ServeArgs::listen`].
    pub allow_non_loopback: bool,
    /// [`AUTHORIZED_KEY`]: the one public key allowed to log in; when set, the host
    /// key is made in memory and [`ServeArgs::host_key`] and
    /// [`ServeArgs::authorized_keys`] are not used (nor written by
    /// [`ServeArgs::to_args`]).
    pub authorized_key: Option<String>,
    /// Ports that `tcpip-forward` requests may listen on ([`REMOTE_FORWARD`]); empty:
    /// every request is refused.
    pub remote_forward_ports: Vec<u16>,
    /// Connections that have not logged in yet ([`MAX_PREAUTH_CONNECTIONS`]).
    pub max_preauth_connections: usize,
    /// Open channels per SSH connection ([`MAX_CHANNELS`]).
    pub max_channels: usize,
    /// Open UDP flows per SSH connection ([`MAX_UDP_FLOWS`]).
    pub max_udp_flows: usize,
    /// Connections held per remote-forwarded port while no client has it registered
    /// ([`MAX_HELD_CONNECTIONS`]).
    pub max_held_connections: usize,
    /// How long a held connection waits for a client ([`HOLD_TIMEOUT`]).
    pub hold_timeout: Duration,
    /// The objects to restore when the shadow stops ([`RESTORE`]), in the order the
    /// session changed them.
    pub restore: Vec<RestoreTarget>,
    /// The session holding [`ServeArgs::restore`] ([`SESSION`]).
    pub session: Option<String>,
    /// Delete the shadow's own pod after restoring on lease expiry ([`SELF_DELETE`]).
    pub self_delete: bool,
    /// Other pods to delete before its own ([`DELETE_POD`]).
    pub delete_pods: Vec<String>,
}

/// One [`RESTORE`] object: `KIND/NAME/UID`, in the pod's namespace.
///
/// ```
/// use kt_proto::cli::RestoreTarget;
/// use kt_proto::restore::Kind;
///
/// let target: RestoreTarget = "Deployment/web/0f6d1f0e-2a53-4c8b-a1c4-6f8b4a2d9c01".parse()?;
/// assert_eq!((target.kind, target.name.as_str()), (Kind::Deployment, "web"));
/// assert_eq!(target.to_string(), "Deployment/web/0f6d1f0e-2a53-4c8b-a1c4-6f8b4a2d9c01");
/// # Ok::<(), kt_proto::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RestoreTarget {
    /// The object's kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Its `metadata.uid` when the session changed it: an object re-created under the
    /// same name is left alone.
    pub uid: String,
}

impl std::fmt::Display for RestoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.name, self.uid)
    }
}

impl std::str::FromStr for RestoreTarget {
    type Err = Error;

    /// Parses `KIND/NAME/UID`; errors name [`RESTORE`] and what a valid value is.
    fn from_str(s: &str) -> Result<RestoreTarget, Error> {
        let invalid = |reason| Error::InvalidValue {
            option: RESTORE,
            value: s.to_owned(),
            reason,
        };
        let mut parts = s.split('/');
        let (Some(kind), Some(name), Some(uid), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(
                "expected KIND/NAME/UID, like Service/web/5b0c6a52-7c43-4f5e-9d1e-0d4a0c1f2e11",
            ));
        };
        let kind = kind.parse().map_err(|_| {
            invalid("expected KIND Service, Deployment or StatefulSet, as in KIND/NAME/UID")
        })?;
        let name = parse_object_name(RESTORE, name.to_owned())
            .map_err(|_| invalid("expected NAME a Kubernetes object name, as in KIND/NAME/UID"))?;
        let uid_ok = !uid.is_empty()
            && uid.len() <= 128
            && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !uid_ok {
            return Err(invalid(
                "expected UID the object's metadata.uid (letters, digits and `-`), as in \
                 KIND/NAME/UID",
            ));
        }
        Ok(RestoreTarget {
            kind,
            name,
            uid: uid.to_owned(),
        })
    }
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            listen: shadow::LISTEN_ADDR,
            host_key: PathBuf::from(shadow::HOST_KEY_PATH),
            authorized_keys: PathBuf::from(shadow::AUTHORIZED_KEYS_PATH),
            idle_exit: None,
            heartbeat_timeout: None,
            lease: None,
            allow_non_loopback: false,
            authorized_key: None,
            remote_forward_ports: Vec::new(),
            max_preauth_connections: DEFAULT_MAX_PREAUTH_CONNECTIONS,
            max_channels: DEFAULT_MAX_CHANNELS,
            max_udp_flows: DEFAULT_MAX_UDP_FLOWS,
            max_held_connections: DEFAULT_MAX_HELD_CONNECTIONS,
            hold_timeout: DEFAULT_HOLD_TIMEOUT,
            restore: Vec::new(),
            session: None,
            self_delete: false,
            delete_pods: Vec::new(),
        }
    }
}

impl ServeArgs {
    /// The arguments after the binary name, starting with `serve`. Every option in
    /// use is written out, so the pod spec shows the whole configuration (the key
    /// files only without [`ServeArgs::authorized_key`]). Durations are written in
    /// whole seconds, rounded up.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![SERVE.to_owned(), LISTEN.to_owned(), self.listen.to_string()];
        match &self.authorized_key {
            Some(key) => args.extend([AUTHORIZED_KEY.to_owned(), key.clone()]),
            None => args.extend([
                HOST_KEY.to_owned(),
                self.host_key.display().to_string(),
                AUTHORIZED_KEYS.to_owned(),
                self.authorized_keys.display().to_string(),
            ]),
        }
        if let Some(idle) = self.idle_exit {
            args.extend([IDLE_EXIT.to_owned(), secs_rounded_up(idle).to_string()]);
        }
        if let Some(timeout) = self.heartbeat_timeout {
            args.extend([
                HEARTBEAT_TIMEOUT.to_owned(),
                secs_rounded_up(timeout).to_string(),
            ]);
        }
        if let Some(lease) = &self.lease {
            args.extend([LEASE.to_owned(), lease.clone()]);
        }
        if let Some(session) = &self.session {
            args.extend([SESSION.to_owned(), session.clone()]);
        }
        for target in &self.restore {
            args.extend([RESTORE.to_owned(), target.to_string()]);
        }
        if self.self_delete {
            args.push(SELF_DELETE.to_owned());
        }
        for pod in &self.delete_pods {
            args.extend([DELETE_POD.to_owned(), pod.clone()]);
        }
        if self.allow_non_loopback {
            args.push(ALLOW_NON_LOOPBACK.to_owned());
        }
        for port in &self.remote_forward_ports {
            args.extend([REMOTE_FORWARD.to_owned(), port.to_string()]);
        }
        args.extend([
            MAX_PREAUTH_CONNECTIONS.to_owned(),
            self.max_preauth_connections.to_string(),
            MAX_CHANNELS.to_owned(),
            self.max_channels.to_string(),
            MAX_UDP_FLOWS.to_owned(),
            self.max_udp_flows.to_string(),
        ]);
        // Holding applies to remote-forwarded ports only: written out when there are
        // some, so a connect shadow's arguments stay as they were.
        if !self.remote_forward_ports.is_empty() {
            args.extend([
                MAX_HELD_CONNECTIONS.to_owned(),
                self.max_held_connections.to_string(),
                HOLD_TIMEOUT.to_owned(),
                secs_rounded_up(self.hold_timeout).to_string(),
            ]);
        }
        args
    }
}

/// Arguments of `kt-shadow route`: the mesh router in front of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteArgs {
    /// The router's id ([`SESSION`]): the `kt.dev/owner` of the Service while meshed.
    pub session: String,
    /// The meshed Service ([`RESTORE`], kind Service).
    pub service: RestoreTarget,
    /// The router's Lease ([`LEASE`]), where it reports its routes.
    pub lease: String,
    /// Where unmatched requests go ([`ORIGIN`]).
    pub origin: std::net::IpAddr,
    /// The ports to listen on ([`PORT`]).
    pub ports: Vec<u16>,
    /// The UDP ports relayed to the origin ([`UDP_PORT`]).
    pub udp_ports: Vec<u16>,
    /// The lease kept on the Service ([`TTL`]).
    pub ttl: Duration,
    /// How long without developers before the router ends ([`GRACE`]).
    pub grace: Duration,
}

impl RouteArgs {
    /// The arguments after the binary name, starting with `route`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            ROUTE.to_owned(),
            SESSION.to_owned(),
            self.session.clone(),
            RESTORE.to_owned(),
            self.service.to_string(),
            LEASE.to_owned(),
            self.lease.clone(),
            ORIGIN.to_owned(),
            self.origin.to_string(),
        ];
        for port in &self.ports {
            args.extend([PORT.to_owned(), port.to_string()]);
        }
        for port in &self.udp_ports {
            args.extend([UDP_PORT.to_owned(), port.to_string()]);
        }
        args.extend([
            TTL.to_owned(),
            secs_rounded_up(self.ttl).to_string(),
            GRACE.to_owned(),
            secs_rounded_up(self.grace).to_string(),
        ]);
        args
    }
}

fn parse_route(mut args: impl Iterator<Item = String>) -> Result<RouteArgs, Error> {
    let (mut session, mut service, mut lease, mut origin) = (None, None, None, None);
    let (mut ports, mut udp_ports) = (Vec::new(), Vec::new());
    let (mut ttl, mut grace) = (DEFAULT_ROUTE_TTL, DEFAULT_ROUTE_GRACE);
    while let Some(arg) = args.next() {
        let opt = Opt::split(arg);
        match opt.name.as_str() {
            SESSION => session = Some(parse_session(SESSION, opt.value(SESSION, &mut args)?)?),
            RESTORE => {
                let target: RestoreTarget = opt.value(RESTORE, &mut args)?.parse()?;
                if target.kind != Kind::Service {
                    return Err(Error::InvalidValue {
                        option: RESTORE,
                        value: target.to_string(),
                        reason: "a router fronts a Service: expected Service/NAME/UID",
                    });
                }
                service = Some(target);
            }
            LEASE => lease = Some(parse_object_name(LEASE, opt.value(LEASE, &mut args)?)?),
            ORIGIN => {
                let value = opt.value(ORIGIN, &mut args)?;
                origin = Some(value.parse().map_err(|_| Error::InvalidValue {
                    option: ORIGIN,
                    value,
                    reason: "expected an IP address (the origin Service's ClusterIP)",
                })?);
            }
            PORT | UDP_PORT => {
                let (option, list) = if opt.name == PORT {
                    (PORT, &mut ports)
                } else {
                    (UDP_PORT, &mut udp_ports)
                };
                let port = parse_port(option, opt.value(option, &mut args)?)?;
                if port == 0 {
                    return Err(Error::InvalidValue {
                        option,
                        value: "0".to_owned(),
                        reason: "expected a port from 1 to 65535",
                    });
                }
                if !list.contains(&port) {
                    list.push(port);
                }
            }
            TTL => ttl = parse_secs(TTL, opt.value(TTL, &mut args)?)?,
            GRACE => grace = parse_secs(GRACE, opt.value(GRACE, &mut args)?)?,
            _ => {
                return Err(Error::UnknownOption {
                    command: ROUTE,
                    option: opt.name,
                });
            }
        }
    }
    let needed = |option| Error::NeedsOption {
        option: ROUTE,
        needs: option,
        reason: "a router needs its id, its Service, its Lease, the origin and at least one \
                 port",
    };
    let route = RouteArgs {
        session: session.ok_or_else(|| needed(SESSION))?,
        service: service.ok_or_else(|| needed(RESTORE))?,
        lease: lease.ok_or_else(|| needed(LEASE))?,
        origin: origin.ok_or_else(|| needed(ORIGIN))?,
        ports,
        udp_ports,
        ttl,
        grace,
    };
    if route.ports.is_empty() {
        return Err(needed(PORT));
    }
    Ok(route)
}

/// Arguments of `kt-shadow probe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeArgs {
    /// The SSH address to probe.
    pub addr: SocketAddr,
}

impl Default for ProbeArgs {
    fn default() -> Self {
        ProbeArgs {
            addr: shadow::LISTEN_ADDR,
        }
    }
}

impl ProbeArgs {
    /// The arguments after the binary name, starting with `probe`.
    pub fn to_args(&self) -> Vec<String> {
        vec![PROBE.to_owned(), ADDR.to_owned(), self.addr.to_string()]
    }

    /// The whole command of the shadow container's exec readiness probe:
    /// [`shadow::BINARY_NAME`] (found through the container's `PATH`) followed by
    /// [`ProbeArgs::to_args`]. An exec probe is
    /// needed because the SSH port is loopback-only and kubelet TCP probes dial the
    /// pod IP.
    pub fn exec_command(&self) -> Vec<String> {
        let mut command = vec![shadow::BINARY_NAME.to_owned()];
        command.extend(self.to_args());
        command
    }
}

/// A parsed `kt-shadow` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing `ServeArgs` would only make matching clumsier"
)]
pub enum Command {
    /// `kt-shadow serve ...`
    Serve(ServeArgs),
    /// `kt-shadow probe ...`
    Probe(ProbeArgs),
    /// `kt-shadow route ...`
    Route(RouteArgs),
    /// `kt-shadow version` (also `--version`, `-V`)
    Version,
    /// `kt-shadow help` (also `--help`, `-h`)
    Help,
}

impl Command {
    /// Parses the arguments after the binary name (`std::env::args().skip(1)`).
    ///
    /// # Errors
    ///
    /// [`Error::MissingCommand`], [`Error::UnknownCommand`], [`Error::UnknownOption`],
    /// [`Error::MissingValue`], [`Error::InvalidValue`] or [`Error::UnexpectedValue`],
    /// each naming the argument at fault.
    pub fn parse<I, S>(args: I) -> Result<Command, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut args = args.into_iter().map(Into::into);
        let command = args.next().ok_or(Error::MissingCommand)?;
        match command.as_str() {
            SERVE => parse_serve(args).map(Command::Serve),
            PROBE => parse_probe(args).map(Command::Probe),
            ROUTE => parse_route(args).map(Command::Route),
            VERSION | "--version" | "-V" => no_more_args(VERSION, args).map(|()| Command::Version),
            HELP | "--help" | "-h" => Ok(Command::Help),
            _ => Err(Error::UnknownCommand(command)),
        }
    }

    /// The arguments after the binary name; [`Command::parse`] gives back `self`.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Command::Serve(serve) => serve.to_args(),
            Command::Probe(probe) => probe.to_args(),
            Command::Route(route) => route.to_args(),
            Command::Version => vec![VERSION.to_owned()],
            Command::Help => vec![HELP.to_owned()],
        }
    }
}

/// One `--name value` / `--name=value` / `--flag` option taken off the command line.
struct Opt {
    name: String,
    inline_value: Option<String>,
}

impl Opt {
    fn split(arg: String) -> Opt {
        match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => Opt {
                name: name.to_owned(),
                inline_value: Some(value.to_owned()),
            },
            _ => Opt {
                name: arg,
                inline_value: None,
            },
        }
    }

    fn value(
        self,
        option: &'static str,
        rest: &mut impl Iterator<Item = String>,
    ) -> Result<String, Error> {
        match self.inline_value {
            Some(value) => Ok(value),
            None => rest.next().ok_or(Error::MissingValue(option)),
        }
    }

    fn flag(self, option: &'static str) -> Result<(), Error> {
        match self.inline_value {
            Some(_) => Err(Error::UnexpectedValue(option)),
            None => Ok(()),
        }
    }
}

fn parse_serve(mut args: impl Iterator<Item = String>) -> Result<ServeArgs, Error> {
    let mut serve = ServeArgs::default();
    let mut key_files = false;
    while let Some(arg) = args.next() {
        let opt = Opt::split(arg);
        match opt.name.as_str() {
            LISTEN => serve.listen = parse_addr(LISTEN, opt.value(LISTEN, &mut args)?)?,
            HOST_KEY => {
                key_files = true;
                serve.host_key = parse_path(HOST_KEY, opt.value(HOST_KEY, &mut args)?)?;
            }
            AUTHORIZED_KEYS => {
                key_files = true;
                let value = opt.value(AUTHORIZED_KEYS, &mut args)?;
                serve.authorized_keys = parse_path(AUTHORIZED_KEYS, value)?;
            }
            AUTHORIZED_KEY => {
                let value = opt.value(AUTHORIZED_KEY, &mut args)?;
                serve.authorized_key = Some(parse_public_key(AUTHORIZED_KEY, value)?);
            }
            IDLE_EXIT => {
                let value = opt.value(IDLE_EXIT, &mut args)?;
                serve.idle_exit = Some(parse_secs(IDLE_EXIT, value)?);
            }
            HEARTBEAT_TIMEOUT => {
                let value = opt.value(HEARTBEAT_TIMEOUT, &mut args)?;
                serve.heartbeat_timeout = Some(parse_secs(HEARTBEAT_TIMEOUT, value)?);
            }
            LEASE => {
                let value = opt.value(LEASE, &mut args)?;
                serve.lease = Some(parse_object_name(LEASE, value)?);
            }
            ALLOW_NON_LOOPBACK => {
                opt.flag(ALLOW_NON_LOOPBACK)?;
                serve.allow_non_loopback = true;
            }
            REMOTE_FORWARD => {
                let value = opt.value(REMOTE_FORWARD, &mut args)?;
                let port = parse_port(REMOTE_FORWARD, value)?;
                if !serve.remote_forward_ports.contains(&port) {
                    serve.remote_forward_ports.push(port);
                }
            }
            MAX_PREAUTH_CONNECTIONS => {
                let value = opt.value(MAX_PREAUTH_CONNECTIONS, &mut args)?;
                serve.max_preauth_connections = parse_count(MAX_PREAUTH_CONNECTIONS, value)?;
            }
            MAX_CHANNELS => {
                let value = opt.value(MAX_CHANNELS, &mut args)?;
                serve.max_channels = parse_count(MAX_CHANNELS, value)?;
            }
            MAX_UDP_FLOWS => {
                let value = opt.value(MAX_UDP_FLOWS, &mut args)?;
                serve.max_udp_flows = parse_count(MAX_UDP_FLOWS, value)?;
            }
            MAX_HELD_CONNECTIONS => {
                let value = opt.value(MAX_HELD_CONNECTIONS, &mut args)?;
                serve.max_held_connections = parse_count(MAX_HELD_CONNECTIONS, value)?;
            }
            HOLD_TIMEOUT => {
                let value = opt.value(HOLD_TIMEOUT, &mut args)?;
                serve.hold_timeout = parse_secs(HOLD_TIMEOUT, value)?;
            }
            RESTORE => {
                let target: RestoreTarget = opt.value(RESTORE, &mut args)?.parse()?;
                let same_object = serve
                    .restore
                    .iter()
                    .find(|t| t.kind == target.kind && t.name == target.name);
                match same_object {
                    Some(t) if t.uid == target.uid => {}
                    Some(_) => {
                        return Err(Error::InvalidValue {
                            option: RESTORE,
                            value: target.to_string(),
                            reason: "the same object was given before with another UID; give \
                                     each object once",
                        });
                    }
                    None => serve.restore.push(target),
                }
            }
            SESSION => {
                let value = opt.value(SESSION, &mut args)?;
                serve.session = Some(parse_session(SESSION, value)?);
            }
            SELF_DELETE => {
                opt.flag(SELF_DELETE)?;
                serve.self_delete = true;
            }
            DELETE_POD => {
                let value = opt.value(DELETE_POD, &mut args)?;
                serve.delete_pods.push(parse_session(DELETE_POD, value)?);
            }
            _ => {
                return Err(Error::UnknownOption {
                    command: SERVE,
                    option: opt.name,
                });
            }
        }
    }
    if !serve.restore.is_empty() && serve.session.is_none() {
        return Err(Error::NeedsOption {
            option: RESTORE,
            needs: SESSION,
            reason: "the session holding the objects (their kt.dev/owner annotation): only \
                     its changes are restored",
        });
    }
    if serve.session.is_some() && serve.restore.is_empty() {
        return Err(Error::NeedsOption {
            option: SESSION,
            needs: RESTORE,
            reason: "--session names the holder of the objects to restore; give at least \
                     one",
        });
    }
    if !serve.delete_pods.is_empty() && !serve.self_delete {
        return Err(Error::NeedsOption {
            option: DELETE_POD,
            needs: SELF_DELETE,
            reason: "other pods are deleted only on the way out of a shadow that deletes \
                     itself",
        });
    }
    if serve.self_delete && serve.lease.is_none() {
        return Err(Error::NeedsOption {
            option: SELF_DELETE,
            needs: LEASE,
            reason: "the pod deletes itself when the session's Lease expired or is gone",
        });
    }
    match serve.authorized_key {
        Some(key) if key_files => Err(Error::InvalidValue {
            option: AUTHORIZED_KEY,
            value: key,
            reason: "it cannot be combined with --host-key or --authorized-keys: with \
                     --authorized-key the shadow makes its host key in memory and reads no \
                     key file",
        }),
        _ => Ok(serve),
    }
}

fn parse_probe(mut args: impl Iterator<Item = String>) -> Result<ProbeArgs, Error> {
    let mut probe = ProbeArgs::default();
    while let Some(arg) = args.next() {
        let opt = Opt::split(arg);
        match opt.name.as_str() {
            ADDR => probe.addr = parse_addr(ADDR, opt.value(ADDR, &mut args)?)?,
            _ => {
                return Err(Error::UnknownOption {
                    command: PROBE,
                    option: opt.name,
                });
            }
        }
    }
    Ok(probe)
}

fn no_more_args(
    command: &'static str,
    mut args: impl Iterator<Item = String>,
) -> Result<(), Error> {
    match args.next() {
        Some(option) => Err(Error::UnknownOption { command, option }),
        None => Ok(()),
    }
}

fn parse_addr(option: &'static str, value: String) -> Result<SocketAddr, Error> {
    value.parse().map_err(|_| Error::InvalidValue {
        option,
        value,
        reason: "expected an IP address and port, like 127.0.0.1:2222 or [::1]:2222",
    })
}

fn parse_path(option: &'static str, value: String) -> Result<PathBuf, Error> {
    if value.is_empty() {
        return Err(Error::InvalidValue {
            option,
            value,
            reason: "expected a file path",
        });
    }
    Ok(PathBuf::from(value))
}

/// A Kubernetes object name (a DNS-1123 subdomain): 1 to 253 characters of `a-z`,
/// `0-9`, `-` and `.`, starting and ending with a letter or digit.
fn parse_object_name(option: &'static str, value: String) -> Result<String, Error> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = !value.is_empty()
        && value.len() <= 253
        && value.chars().all(ok_char)
        && alnum(value.chars().next())
        && alnum(value.chars().last());
    if valid {
        Ok(value)
    } else {
        Err(Error::InvalidValue {
            option,
            value,
            reason: "expected a Kubernetes object name (lowercase letters, digits, `-` and `.`, \
                     at most 253 characters, starting and ending with a letter or digit)",
        })
    }
}

/// A session id, the value of a `kt.dev/owner` annotation: 1 to 63 letters, digits, `-`,
/// `_` and `.`, starting and ending with a letter or digit (what kt's 8-character ids
/// always are).
fn parse_session(option: &'static str, value: String) -> Result<String, Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = (1..=63).contains(&value.len())
        && value.chars().all(ok_char)
        && alnum(value.chars().next())
        && alnum(value.chars().last());
    if valid {
        Ok(value)
    } else {
        Err(Error::InvalidValue {
            option,
            value,
            reason: "expected a kt session id (1 to 63 letters, digits, `-`, `_` and `.`, \
                     starting and ending with a letter or digit)",
        })
    }
}

/// One OpenSSH public key line, checked only for its shape here (the shadow parses the
/// key itself).
fn parse_public_key(option: &'static str, value: String) -> Result<String, Error> {
    let value = value.trim().to_owned();
    if value.is_empty() || value.contains(['\n', '\r']) {
        return Err(Error::InvalidValue {
            option,
            value,
            reason: "expected one OpenSSH public key on one line, like \
                     `ssh-ed25519 AAAA... comment`",
        });
    }
    Ok(value)
}

fn parse_secs(option: &'static str, value: String) -> Result<Duration, Error> {
    match value.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(Error::InvalidValue {
            option,
            value,
            reason: "expected a whole number of seconds greater than 0",
        }),
    }
}

fn parse_port(option: &'static str, value: String) -> Result<u16, Error> {
    value.parse().map_err(|_| Error::InvalidValue {
        option,
        value,
        reason: "expected a port number from 0 to 65535",
    })
}

/// A limit: a whole number from 1 to 1 000 000 (beyond that it limits nothing).
fn parse_count(option: &'static str, value: String) -> Result<usize, Error> {
    match value.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(Error::InvalidValue {
            option,
            value,
            reason: "expected a whole number from 1 to 1000000",
        }),
    }
}

fn secs_rounded_up(d: Duration) -> u64 {
    let secs = d.as_secs();
    let rounded = if d.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    };
    rounded.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, Error> {
        Command::parse(line.split_whitespace())
    }

    #[test]
    fn bare_serve_is_the_pod_configuration() {
        let cmd = parse("serve").ok();
        assert_eq!(cmd, Some(Command::Serve(ServeArgs::default())));
        let serve = ServeArgs::default();
        assert_eq!(serve.listen.to_string(), "127.0.0.1:2222");
        assert_eq!(
            serve.host_key,
            PathBuf::from("/etc/kt/ssh_host_ed25519_key")
        );
        assert_eq!(
            serve.authorized_keys,
            PathBuf::from("/etc/kt/authorized_keys")
        );
        assert!(serve.remote_forward_ports.is_empty());
        assert_eq!(
            (
                serve.max_preauth_connections,
                serve.max_channels,
                serve.max_udp_flows
            ),
            (16, 1024, 1024)
        );
    }

    #[test]
    fn serve_with_every_option_round_trips() {
        let serve = ServeArgs {
            listen: "[::1]:2200".parse().unwrap_or(shadow::LISTEN_ADDR),
            host_key: PathBuf::from("/k/host"),
            authorized_keys: PathBuf::from("/k/auth"),
            idle_exit: Some(Duration::from_secs(30)),
            heartbeat_timeout: Some(Duration::from_secs(90)),
            lease: Some("kt-shadow-abc".to_owned()),
            allow_non_loopback: true,
            authorized_key: None,
            remote_forward_ports: vec![8080, 0],
            max_preauth_connections: 3,
            max_channels: 40,
            max_udp_flows: 5,
            max_held_connections: 7,
            hold_timeout: Duration::from_secs(3),
            restore: vec![
                RestoreTarget {
                    kind: Kind::Service,
                    name: "web".to_owned(),
                    uid: "5b0c6a52-7c43".to_owned(),
                },
                RestoreTarget {
                    kind: Kind::StatefulSet,
                    name: "db.v2".to_owned(),
                    uid: "c2a9".to_owned(),
                },
            ],
            session: Some("a1b2c3d4".to_owned()),
            self_delete: true,
            delete_pods: vec!["kt-shadow-s1".to_owned()],
        };
        let cmd = Command::Serve(serve);
        let args = cmd.to_args();
        assert_eq!(
            args,
            [
                "serve",
                "--listen",
                "[::1]:2200",
                "--host-key",
                "/k/host",
                "--authorized-keys",
                "/k/auth",
                "--idle-exit",
                "30",
                "--heartbeat-timeout",
                "90",
                "--lease",
                "kt-shadow-abc",
                "--session",
                "a1b2c3d4",
                "--restore",
                "Service/web/5b0c6a52-7c43",
                "--restore",
                "StatefulSet/db.v2/c2a9",
                "--self-delete",
                "--delete-pod",
                "kt-shadow-s1",
                "--allow-non-loopback",
                "--remote-forward",
                "8080",
                "--remote-forward",
                "0",
                "--max-preauth-connections",
                "3",
                "--max-channels",
                "40",
                "--max-udp-flows",
                "5",
                "--max-held-connections",
                "7",
                "--hold-timeout",
                "3"
            ]
        );
        assert_eq!(Command::parse(args).ok(), Some(cmd));
    }

    #[test]
    fn an_inline_authorized_key_replaces_the_key_files_on_the_command_line() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPDBp3khpUoQDgs/jC6tYksSwC/LKe35IRMRz4hAr1x4 kt-session-a1";
        let serve = ServeArgs {
            authorized_key: Some(key.to_owned()),
            ..ServeArgs::default()
        };
        let args = serve.to_args();
        assert_eq!(
            args,
            [
                "serve",
                "--listen",
                "127.0.0.1:2222",
                "--authorized-key",
                key,
                "--max-preauth-connections",
                "16",
                "--max-channels",
                "1024",
                "--max-udp-flows",
                "1024"
            ]
        );
        assert_eq!(
            Command::parse(args).ok(),
            Some(Command::Serve(serve.clone()))
        );
        let inline = Command::parse(["serve".to_owned(), format!("--authorized-key={key}")]);
        assert_eq!(inline.ok(), Some(Command::Serve(serve)));
        // One key, on one line: a second line would be a second key.
        let two = Command::parse(["serve", "--authorized-key", &format!("{key}\n{key}")]);
        let msg = two.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("one OpenSSH public key on one line"), "{msg}");
    }

    #[test]
    fn options_accept_inline_values() {
        let cmd = parse("serve --listen=127.0.0.1:1 --heartbeat-timeout=5").ok();
        let Some(Command::Serve(serve)) = cmd else {
            panic!("not a serve command: {cmd:?}");
        };
        assert_eq!(serve.listen.port(), 1);
        assert_eq!(serve.heartbeat_timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn remote_forward_adds_a_port_each_time_and_limits_are_written_out() {
        let cmd = parse("serve --remote-forward 80 --remote-forward=443 --remote-forward 80").ok();
        let Some(Command::Serve(serve)) = cmd else {
            panic!("not a serve command: {cmd:?}");
        };
        assert_eq!(serve.remote_forward_ports, [80, 443]);
        // The pod spec shows every limit, also the defaults.
        let args = ServeArgs::default().to_args();
        for (option, value) in [
            (MAX_PREAUTH_CONNECTIONS, "16"),
            (MAX_CHANNELS, "1024"),
            (MAX_UDP_FLOWS, "1024"),
        ] {
            let at = args.iter().position(|a| a == option).map(|i| &args[i + 1]);
            assert_eq!(at.map(String::as_str), Some(value), "{option}");
        }
        assert!(!args.iter().any(|a| a == REMOTE_FORWARD));
        // Holding is about forwarded ports: a connect shadow's line does not mention it.
        assert!(
            !args
                .iter()
                .any(|a| a == MAX_HELD_CONNECTIONS || a == HOLD_TIMEOUT)
        );
    }

    #[test]
    fn held_connections_have_defaults_and_are_written_out_with_forwards() {
        let serve = ServeArgs::default();
        assert_eq!(
            (serve.max_held_connections, serve.hold_timeout),
            (256, Duration::from_secs(10))
        );
        let serve = ServeArgs {
            remote_forward_ports: vec![80],
            ..ServeArgs::default()
        };
        let args = serve.to_args();
        for (option, value) in [(MAX_HELD_CONNECTIONS, "256"), (HOLD_TIMEOUT, "10")] {
            let at = args.iter().position(|a| a == option).map(|i| &args[i + 1]);
            assert_eq!(at.map(String::as_str), Some(value), "{option}");
        }
        assert_eq!(Command::parse(args).ok(), Some(Command::Serve(serve)));
        let cmd = parse("serve --max-held-connections=3 --hold-timeout 2").ok();
        let Some(Command::Serve(serve)) = cmd else {
            panic!("not a serve command: {cmd:?}");
        };
        assert_eq!(
            (serve.max_held_connections, serve.hold_timeout),
            (3, Duration::from_secs(2))
        );
    }

    #[test]
    fn restore_targets_are_kept_in_order_once_each_and_need_a_session() {
        let cmd = parse(
            "serve --lease kt-shadow-s1 --session s1 --restore Deployment/web/u1 \
             --restore=Service/web/u2 --restore Deployment/web/u1 --self-delete \
             --delete-pod kt-shadow-s0",
        )
        .ok();
        let Some(Command::Serve(serve)) = cmd else {
            panic!("not a serve command: {cmd:?}");
        };
        assert_eq!(
            serve
                .restore
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["Deployment/web/u1", "Service/web/u2"]
        );
        assert_eq!(serve.session.as_deref(), Some("s1"));
        assert!(serve.self_delete);
        assert_eq!(serve.delete_pods, ["kt-shadow-s0"]);
        assert_eq!(
            Command::parse(serve.to_args()).ok(),
            Some(Command::Serve(serve))
        );
        // Nothing to restore: nothing written, as before these options existed.
        let plain = ServeArgs::default().to_args();
        for opt in [RESTORE, SESSION, SELF_DELETE] {
            assert!(!plain.iter().any(|a| a == opt), "{opt}");
        }
    }

    #[test]
    fn durations_are_written_in_whole_seconds_rounded_up() {
        let serve = ServeArgs {
            idle_exit: Some(Duration::from_millis(1500)),
            heartbeat_timeout: Some(Duration::from_millis(1)),
            ..ServeArgs::default()
        };
        let args = serve.to_args();
        let idle = args
            .iter()
            .position(|a| a == IDLE_EXIT)
            .map(|i| &args[i + 1]);
        let hb = args
            .iter()
            .position(|a| a == HEARTBEAT_TIMEOUT)
            .map(|i| &args[i + 1]);
        assert_eq!(idle.map(String::as_str), Some("2"));
        assert_eq!(hb.map(String::as_str), Some("1"));
    }

    #[test]
    fn probe_defaults_to_the_shadow_port_and_builds_the_exec_probe() {
        assert_eq!(
            parse("probe").ok(),
            Some(Command::Probe(ProbeArgs::default()))
        );
        assert_eq!(
            ProbeArgs::default().exec_command(),
            ["kt-shadow", "probe", "--addr", "127.0.0.1:2222"]
        );
        let cmd = parse("probe --addr 127.0.0.1:9").ok();
        assert_eq!(
            cmd.map(|c| c.to_args()),
            Some(vec!["probe".into(), "--addr".into(), "127.0.0.1:9".into()])
        );
    }

    #[test]
    fn version_and_help_have_their_aliases() {
        for line in ["version", "--version", "-V"] {
            assert_eq!(parse(line).ok(), Some(Command::Version), "{line}");
        }
        for line in ["help", "--help", "-h", "help serve"] {
            assert_eq!(parse(line).ok(), Some(Command::Help), "{line}");
        }
    }

    #[test]
    fn bad_command_lines_name_what_is_wrong() {
        let cases = [
            ("", "missing command"),
            ("shell", "unknown command `shell`"),
            ("serve --port 22", "unknown option `--port`"),
            ("serve --listen", "`--listen` needs a value"),
            (
                "serve --listen localhost:22",
                "invalid value `localhost:22`",
            ),
            ("serve --idle-exit 0", "greater than 0"),
            ("serve --heartbeat-timeout -1", "whole number of seconds"),
            ("serve --host-key=", "expected a file path"),
            ("serve --allow-non-loopback=yes", "takes no value"),
            (
                "serve --remote-forward 65536",
                "port number from 0 to 65535",
            ),
            ("serve --remote-forward http", "port number from 0 to 65535"),
            ("serve --remote-forward", "`--remote-forward` needs a value"),
            ("serve --max-channels 0", "from 1 to 1000000"),
            ("serve --max-udp-flows -3", "from 1 to 1000000"),
            ("serve --max-held-connections 0", "from 1 to 1000000"),
            ("serve --hold-timeout 0", "greater than 0"),
            ("serve --hold-timeout", "`--hold-timeout` needs a value"),
            (
                "serve --max-preauth-connections 1000001",
                "from 1 to 1000000",
            ),
            ("serve --lease", "`--lease` needs a value"),
            ("serve --lease Kt-Shadow", "Kubernetes object name"),
            ("serve --lease -x", "Kubernetes object name"),
            ("serve --lease=a/b", "Kubernetes object name"),
            ("probe --listen 127.0.0.1:1", "for `kt-shadow probe`"),
            ("serve --authorized-key", "`--authorized-key` needs a value"),
            (
                "serve --authorized-key=",
                "one OpenSSH public key on one line",
            ),
            (
                "serve --authorized-key=ssh-ed25519:AAAA --host-key /k",
                "cannot be combined with --host-key or --authorized-keys",
            ),
            (
                "serve --authorized-keys /k --authorized-key=ssh-ed25519:AAAA",
                "cannot be combined with --host-key or --authorized-keys",
            ),
            ("version now", "unknown option `now`"),
            ("serve --restore", "`--restore` needs a value"),
            (
                "serve --restore Pod/web/u1 --session s",
                "KIND Service, Deployment",
            ),
            (
                "serve --restore service/web/u1 --session s",
                "KIND Service, Deployment",
            ),
            (
                "serve --restore Service/web --session s",
                "expected KIND/NAME/UID",
            ),
            (
                "serve --restore Service/web/u/1 --session s",
                "expected KIND/NAME/UID",
            ),
            (
                "serve --restore Service/Web/u1 --session s",
                "NAME a Kubernetes",
            ),
            (
                "serve --restore Service/web/ --session s",
                "UID the object's",
            ),
            (
                "serve --restore=Service/web/u~1 --session s",
                "UID the object's",
            ),
            (
                "serve --restore Service/web/u1 --restore Service/web/u2 --session s",
                "another UID",
            ),
            (
                "serve --restore Service/web/u1",
                "option `--restore` needs `--session`",
            ),
            ("serve --session s", "option `--session` needs `--restore`"),
            (
                "serve --session=-s --restore Service/web/u1",
                "a kt session id",
            ),
            ("serve --session", "`--session` needs a value"),
            (
                "serve --self-delete",
                "option `--self-delete` needs `--lease`",
            ),
            ("serve --lease l --self-delete=yes", "takes no value"),
            (
                "serve --lease l --delete-pod p",
                "option `--delete-pod` needs `--self-delete`",
            ),
        ];
        for (line, expected) in cases {
            let msg = parse(line).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains(expected), "`{line}` gave `{msg}`");
        }
    }

    #[test]
    fn usage_mentions_every_option() {
        for opt in [
            LISTEN,
            HOST_KEY,
            AUTHORIZED_KEYS,
            IDLE_EXIT,
            HEARTBEAT_TIMEOUT,
            LEASE,
            ALLOW_NON_LOOPBACK,
            AUTHORIZED_KEY,
            REMOTE_FORWARD,
            MAX_PREAUTH_CONNECTIONS,
            MAX_CHANNELS,
            MAX_UDP_FLOWS,
            MAX_HELD_CONNECTIONS,
            HOLD_TIMEOUT,
            RESTORE,
            SESSION,
            SELF_DELETE,
            ADDR,
        ] {
            assert!(USAGE.contains(opt), "{opt}");
        }
    }

    #[test]
    fn route_round_trips_and_refuses_what_a_router_cannot_use() {
        let route = RouteArgs {
            session: "r0uter01".to_owned(),
            service: "Service/web/0f6d1f0e-2a53-4c8b-a1c4-6f8b4a2d9c01"
                .parse()
                .unwrap(),
            lease: "kt-router-web".to_owned(),
            origin: "10.96.0.12".parse().unwrap(),
            ports: vec![8080, 9090],
            udp_ports: vec![53],
            ttl: Duration::from_secs(7),
            grace: Duration::from_secs(3),
        };
        let args = route.to_args();
        assert_eq!(args[0], ROUTE);
        assert_eq!(Command::parse(args.clone()).unwrap(), Command::Route(route));
        let without = |option: &str| {
            let mut rest: Vec<String> = Vec::new();
            let mut it = args.iter().skip(1);
            while let Some(a) = it.next() {
                if a == option {
                    it.next();
                } else {
                    rest.push(a.clone());
                }
            }
            std::iter::once(ROUTE.to_owned())
                .chain(rest)
                .collect::<Vec<_>>()
        };
        for option in [SESSION, RESTORE, LEASE, ORIGIN, PORT] {
            let err = Command::parse(without(option)).unwrap_err().to_string();
            assert!(err.contains(option), "{option}: {err}");
        }
        let deployment = args
            .iter()
            .map(|a| a.replace("Service/", "Deployment/"))
            .collect::<Vec<_>>();
        assert!(
            Command::parse(deployment)
                .unwrap_err()
                .to_string()
                .contains("Service/NAME/UID")
        );
        let mut bad_origin = args.clone();
        bad_origin[8] = "web.default".to_owned();
        assert!(
            Command::parse(bad_origin)
                .unwrap_err()
                .to_string()
                .contains("IP address")
        );
        let mut zero = args;
        zero[10] = "0".to_owned();
        assert!(Command::parse(zero).is_err());
    }
}
