//! `kt-shadow`, kt's in-cluster agent: a small SSH server that the client reaches
//! through the API server's pod port-forward.
//!
//! It serves, to clients holding a key from its `authorized_keys` file only:
//!
//! - `direct-tcpip` channels: connect to a host and port in the cluster (names resolved
//!   with the pod's `/etc/hosts` and `/etc/resolv.conf`, i.e. cluster DNS, by the
//!   shadow itself, not the C library: [`resolve`]) and splice, with half-close;
//! - `tcpip-forward` / `cancel-tcpip-forward`: listen in the pod and open a
//!   `forwarded-tcpip` channel back to the client per accepted connection, with
//!   half-close both ways, only on the ports given with `--remote-forward` (none by
//!   default: a connect shadow refuses every remote forward) and only on the pod's own
//!   addresses. Such a port belongs to the shadow, not to the SSH connection that asked
//!   for it, so a tunnel reconnect does not close it: while no connection has it,
//!   connections to it are held (at most `--max-held-connections` per port, default
//!   256, each for at most `--hold-timeout`, default 10 s) and delivered in arrival
//!   order to the next connection that asks `tcpip-forward` for the same port; past
//!   the wait, or over the count, they are reset (TCP RST), logged and counted
//!   ([`Shadow::held_connections`]). The newest request for a port wins;
//!   `cancel-tcpip-forward` closes it for good. Held connections keep nothing alive:
//!   `--idle-exit` and the watchdogs still end the shadow;
//! - `direct-udp@kt.dev` flows: UDP datagrams framed on a channel (see
//!   [`kt_proto::channel`]), relayed through a connected UDP socket;
//! - `exec kt-health` on a session channel, which prints `ok` (nothing else runs: the
//!   shadow has no shell).
//!
//! It bounds what a peer can hold open: connections waiting to log in
//! (`--max-preauth-connections`, default 16; one more gets an SSH disconnect), and per
//! connection channels (`--max-channels`, default 1024) and UDP flows
//! (`--max-udp-flows`, default 1024; one more of either is refused with
//! `RESOURCE_SHORTAGE`). Every refusal carries a text and is logged.
//!
//! In the shadow pod it runs as `serve --authorized-key <the client's public key>`: it
//! makes its host key pair in memory, never writes it anywhere, and prints the public
//! half on one line of its log (`kt-shadow host-key ssh-ed25519 ...`, see
//! [`kt_proto::shadow`]) before it listens; the client reads that line through the API
//! server and pins the key. So the host key is in no Secret and no file: a pod
//! recreated under the same name (same image, same arguments) has another host key and
//! cannot answer the client's handshake. With `--host-key` and `--authorized-keys` it
//! reads both from files instead (tests, or running it beside kt by hand).
//!
//! It writes nothing to disk, runs as any non-root user, and exits with code 3 when no
//! client has been connected for `--heartbeat-timeout` seconds, and (`--lease NAME`,
//! with the pod's ServiceAccount token) with code 4 when the session's Lease expires or
//! is deleted ([`lease`]).
//!
//! A swap shadow is also told which objects its session changed (`--session ID
//! --restore KIND/NAME/UID...`): whenever it stops (Lease expired or gone, SIGTERM,
//! SIGINT, any other reason), it first puts them back from the record on each object,
//! guarded exactly as the client's own restore ([`restore`]), and exits with code 5 if
//! that failed; with `--self-delete` it then deletes its own pod after a restore on
//! Lease expiry. Its credentials are the pod's ServiceAccount token, or for tests a
//! kubeconfig named by `KT_SHADOW_KUBECONFIG` ([`cluster`]).
//!
//! # Example
//!
//! Run a shadow in-process until Ctrl-C (the binary does the same with its command
//! line):
//!
//! ```no_run
//! use kt_proto::cli::ServeArgs;
//! use kt_shadow::{Exit, Shadow};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> Result<(), kt_shadow::Error> {
//! let args = ServeArgs {
//!     listen: "127.0.0.1:2222".parse().expect("valid address"),
//!     host_key: "/tmp/kt/ssh_host_ed25519_key".into(),
//!     authorized_keys: "/tmp/kt/authorized_keys".into(),
//!     ..ServeArgs::default()
//! };
//! let shadow = Shadow::bind(&args).await?;
//! let shutdown = CancellationToken::new();
//! let on_ctrl_c = shutdown.clone();
//! tokio::spawn(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     on_ctrl_c.cancel();
//! });
//! let exit: Exit = shadow.run(shutdown).await;
//! std::process::exit(exit.code());
//! # }
//! ```

pub mod cluster;
mod error;
mod handler;
mod inbound;
pub mod keys;
pub mod lease;
mod limits;
pub mod probe;
pub mod resolve;
pub mod restore;
pub mod router;
mod server;
mod stream;
mod tcp;
mod udp;

pub use error::Error;
pub use inbound::{HeldConnections, HeldStats};
pub use server::{Shadow, Tuning};

/// Why [`Shadow::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The shutdown token was cancelled (SIGTERM, Ctrl-C, or the embedding program).
    Shutdown,
    /// `--idle-exit`: the last client left and none came back in time.
    IdleExit,
    /// `--heartbeat-timeout`: no client was connected for that long.
    HeartbeatTimeout,
    /// `--lease`: the session's Lease expired or was deleted.
    LeaseExpired,
    /// `--restore`: the shadow stopped (for one of the reasons above) and putting back
    /// at least one object failed ([`restore`]).
    RestoreFailed,
}

impl Exit {
    /// The process exit code for this outcome: 0, 0,
    /// [`kt_proto::shadow::EXIT_HEARTBEAT_TIMEOUT`],
    /// [`kt_proto::shadow::EXIT_LEASE_EXPIRED`] and
    /// [`kt_proto::shadow::EXIT_RESTORE_FAILED`].
    pub const fn code(self) -> i32 {
        match self {
            Exit::Shutdown | Exit::IdleExit => 0,
            Exit::HeartbeatTimeout => kt_proto::shadow::EXIT_HEARTBEAT_TIMEOUT,
            Exit::LeaseExpired => kt_proto::shadow::EXIT_LEASE_EXPIRED,
            Exit::RestoreFailed => kt_proto::shadow::EXIT_RESTORE_FAILED,
        }
    }
}
