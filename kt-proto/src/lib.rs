//! The contract between kt's client library (`kt-core`) and its in-cluster agent
//! (`kt-shadow`), defined once so the two sides cannot drift apart.
//!
//! - [`labels`] and [`annotations`]: the names kt puts on every Kubernetes object it
//!   creates and the [`Role`] of a pod.
//! - [`shadow`]: how the shadow learns the client's key and reports its host key, the
//!   OpenSSH flavour's Secret keys and mount point, the SSH port, image, user id,
//!   ServiceAccount, session Lease, exit codes and the `kt-health` liveness command.
//! - [`cli`]: the shadow's command line, both built (by the client, for the pod spec)
//!   and parsed (by the shadow) from the same code.
//! - [`restore`]: the [`RestorePlan`](restore::RestorePlan) of changes a swap makes to
//!   objects it does not own, and the record kept on each of them.
//! - [`guard`]: the guarded, idempotent JSON Patches that make, renew and undo those
//!   changes, and who holds an object, computed alike by the client and the shadow's
//!   watchdog.
//! - [`mesh`]: the routing [`Rule`](mesh::Rule) of a mesh and the names by which the
//!   router finds each developer's shadow.
//! - [`agent`]: the imageless shadow, kt-shadow shipped in ConfigMap parts and
//!   assembled and checked by a loader in the pod.
//! - [`channel`]: SSH channel and request names, and the framing of UDP datagrams on a
//!   `direct-udp@kt.dev` channel ([`DatagramCodec`], [`DatagramReader`]).
//!
//! This crate has no async runtime and no I/O: it only names and encodes things (JSON via
//! serde for the restore ledger, JSON Patches for [`guard`]).
//!
//! # Example
//!
//! The client builds the shadow container's arguments; the shadow parses them back.
//!
//! ```
//! use std::time::Duration;
//! use kt_proto::cli::{Command, ServeArgs};
//! use kt_proto::{labels, Role};
//!
//! let serve = ServeArgs {
//!     heartbeat_timeout: Some(Duration::from_secs(90)),
//!     ..ServeArgs::default()
//! };
//! let args = serve.to_args();
//! assert_eq!(args[0], "serve");
//! assert_eq!(Command::parse(args)?, Command::Serve(serve));
//!
//! let role: Role = "shadow-swap".parse()?;
//! assert_eq!((labels::ROLE, role.as_str()), ("kt.dev/role", "shadow-swap"));
//! # Ok::<(), kt_proto::Error>(())
//! ```
//!
//! Datagrams on a `direct-udp@kt.dev` channel are framed with a 2-byte big-endian
//! length; the reader reassembles frames split across SSH data messages:
//!
//! ```
//! use kt_proto::{DatagramCodec, DatagramReader};
//!
//! let codec = DatagramCodec::new();
//! let mut wire = Vec::new();
//! codec.encode(b"query", &mut wire)?;
//! codec.encode(b"", &mut wire)?; // empty datagrams are legal UDP
//!
//! let mut reader = DatagramReader::new(codec);
//! reader.push(&wire[..3]); // a split in the middle of a frame
//! assert_eq!(reader.next_datagram()?, None);
//! reader.push(&wire[3..]);
//! assert_eq!(reader.next_datagram()?, Some(&b"query"[..]));
//! assert_eq!(reader.next_datagram()?, Some(&b""[..]));
//! assert_eq!(reader.next_datagram()?, None);
//! # Ok::<(), kt_proto::Error>(())
//! ```

pub mod agent;
pub mod annotations;
pub mod channel;
pub mod cli;
mod error;
pub mod guard;
pub mod labels;
pub mod mesh;
pub mod restore;
pub mod shadow;

pub use channel::{DatagramCodec, DatagramReader, Decoded};
pub use error::Error;
pub use labels::Role;

/// The version of this crate, written to the `kt.dev/version` annotation
/// ([`annotations::VERSION`]) and printed by `kt-shadow version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
