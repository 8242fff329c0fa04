//! The imageless shadow: how kt-core ships the kt-shadow binary through the API server
//! and how the pod runs it.
//!
//! kt-core cuts the static kt-shadow binary into parts of at most [`PART_SIZE`] bytes.
//! Each part is an immutable ConfigMap named [`PART_PREFIX`] + the SHA-256 of its bytes
//! (lower-case hex), the bytes under the binary key [`PART_KEY`], labelled
//! `kt.dev/role=agent-part`. A part is uploaded once per namespace and reused by every
//! later session whose binary contains it; `clean` removes the parts no pod uses.
//!
//! The loader (`kt-loader`, a tiny static program with no libc) is shipped the same way.
//! The shadow pod mounts the loader and the parts read-only at [`AGENT_DIR`] (each part
//! under its ConfigMap's name), and an emptyDir at [`RUN_DIR`]. Its command is the
//! loader, whose arguments ([`loader_args`]) are:
//!
//! ```text
//! <out> <sha256 of the whole binary> <part path>... -- <argv0> <arg>...
//! ```
//!
//! The loader concatenates the parts into `<out>`, checks each part against the hash in
//! its file name and the whole against the hash the client put into the pod spec, and
//! only then executes `<out>` with `argv0 arg...`. Any mismatch ends it with
//! [`LOADER_REFUSED_EXIT`] and a line starting with [`LOADER_REFUSED`] on stderr (the
//! container's termination message), the binary never run.
//!
//! # Example
//!
//! ```
//! use kt_proto::agent;
//!
//! let parts = ["/kt/agent/kt-part-ab", "/kt/agent/kt-part-cd"];
//! let args = agent::loader_args("cafe", &parts, &["kt-shadow".into(), "serve".into()]);
//! assert_eq!(args[0], agent::ASSEMBLED_PATH);
//! assert_eq!(args[1], "cafe");
//! assert_eq!(&args[4..], ["--", "kt-shadow", "serve"]);
//! ```

/// Bytes per part: a ConfigMap holds at most 1 MiB of data, and the API server's request
/// (base64, so 4/3 of the bytes, plus the object's metadata) must stay under etcd's
/// default 1.5 MiB.
pub const PART_SIZE: usize = 960 * 1024;

/// The name of a part's ConfigMap: this prefix and the SHA-256 of its bytes, hex.
pub const PART_PREFIX: &str = "kt-part-";

/// The `binaryData` key holding a part's bytes.
pub const PART_KEY: &str = "part";

/// The `kt.dev/role` label value of a part's ConfigMap.
pub const PART_ROLE: &str = "agent-part";

/// Label on a part's ConfigMap: what it is a part of (`kt-shadow` or `kt-loader`).
pub const PART_OF: &str = "kt.dev/part-of";

/// Where the pod mounts the loader and the parts (read-only, a projected volume).
pub const AGENT_DIR: &str = "/kt/agent";

/// Where the pod mounts the emptyDir the loader assembles the binary in.
pub const RUN_DIR: &str = "/kt/run";

/// The assembled binary.
pub const ASSEMBLED_PATH: &str = "/kt/run/kt-shadow";

/// The loader's file name in [`AGENT_DIR`].
pub const LOADER_FILE: &str = "kt-loader";

/// The separator between the loader's own arguments and the command it runs.
pub const LOADER_SEPARATOR: &str = "--";

/// The start of the loader's line on stderr when it refuses to run the binary.
pub const LOADER_REFUSED: &str = "kt-loader: refused:";

/// The loader's exit code when a part or the whole does not match its hash.
pub const LOADER_REFUSED_EXIT: i32 = 86;

/// The loader's exit code for any other failure (bad arguments, I/O).
pub const LOADER_FAILED_EXIT: i32 = 87;

/// The name of the ConfigMap holding `bytes`: [`PART_PREFIX`] + `sha256_hex`.
pub fn part_name(sha256_hex: &str) -> String {
    format!("{PART_PREFIX}{sha256_hex}")
}

/// The loader's arguments: assemble `parts` (paths in the pod) into [`ASSEMBLED_PATH`],
/// check them against `sha256_hex`, then run it as `command` (argv0 first).
pub fn loader_args(sha256_hex: &str, parts: &[&str], command: &[String]) -> Vec<String> {
    let mut args = Vec::with_capacity(parts.len() + command.len() + 3);
    args.push(ASSEMBLED_PATH.to_owned());
    args.push(sha256_hex.to_owned());
    args.extend(parts.iter().map(|p| (*p).to_owned()));
    args.push(LOADER_SEPARATOR.to_owned());
    args.extend(command.iter().cloned());
    args
}
