//! `kt-loader`, the imageless shadow's loader: it joins the parts of kt-shadow that kt
//! shipped as ConfigMaps, checks every part and the whole against their SHA-256, and
//! only then executes the result.
//!
//! # Example
//!
//! kt-core ships the loader's bytes ([`BINARY`]) like any part, and starts the shadow
//! container with it (the paths are `kt_proto::agent`'s):
//!
//! ```text
//! /kt/agent/kt-loader /kt/run/kt-shadow <sha256 of kt-shadow> \
//!     /kt/agent/kt-part-<sha256 of part 1> /kt/agent/kt-part-<sha256 of part 2> \
//!     -- kt-shadow serve --authorized-key ...
//! ```
//!
//! ```no_run
//! // The static loader program, to put into the namespace.
//! let loader: &[u8] = kt_loader::BINARY;
//! assert_eq!(&loader[..4], b"\x7fELF");
//! ```
//!
//! # The contract
//!
//! `kt-loader <out> <sha256 of the whole> <part>... -- <argv0> [<arg>...]`, as
//! `kt_proto::agent::loader_args` writes it:
//!
//! 1. it checks the command line: a part's file name (its ConfigMap's name) must be
//!    `kt-part-` and 64 lower-case hex digits, the whole's hash 64 lower-case hex digits;
//! 2. it removes `<out>` if it exists (a restarted container finds the last one in its
//!    emptyDir) and creates it anew (`O_EXCL`, mode 0500, also against the umask);
//! 3. it streams each part through one 64 KiB buffer into `<out>`, hashing the part and
//!    the whole as it goes, and compares the part's hash with its name;
//! 4. it compares the whole's hash with the second argument;
//! 5. it executes `<out>` with the arguments after `--` (the first of them as `argv[0]`)
//!    and its own environment.
//!
//! A part or the whole that does not match: `<out>` removed, one line on stderr starting
//! with `kt-loader: refused:` that names the part (its ConfigMap), the expected and the
//! actual hash and what to do, exit code 86 ([`REFUSED_EXIT`]). Anything else (a bad
//! command line, a missing part, an I/O error with its errno, a failed `execve`): one
//! line starting with `kt-loader: `, exit code 87 ([`FAILED_EXIT`]). The binary runs only
//! after every check passed; nothing else is ever executed. Tests hold these numbers
//! and texts to `kt_proto::agent`'s.
//!
//! # Why no libc
//!
//! The shadow borrows its base image from a pod in the namespace, which can be anything,
//! `registry.k8s.io/pause` included: no libc, no shell, no dynamic loader. So the loader
//! is a static x86_64 ELF with no interpreter and no dynamic section, linked with no C
//! library at all: its own `_start` ([`start`]), and eight raw Linux system calls
//! (`openat`, `read`, `write`, `close`, `fchmod`, `unlinkat`, `execve`, `exit_group`)
//! through one `asm!` block in its `sys` module, the crate's only `unsafe` code (each
//! block with its `SAFETY:` argument). That is smaller and simpler than a dependency:
//! rustix has these calls, but `execve` only in its `runtime` module, which it documents
//! as experimental and hides from its docs, and `origin` (program start-up) brings
//! threads, TLS and signal handling the loader does not need. SHA-256 is the `sha2`
//! crate without default features (no `alloc`). Messages are written into a fixed
//! buffer without `core::fmt`.
//!
//! # How it is built
//!
//! A `#![no_std]` program needs `panic = "abort"`: with unwinding, rustc asks for the
//! `eh_personality` language item, which only `std` (or nightly Rust) provides. Cargo
//! sets the panic strategy per profile for the whole build, a per-package profile
//! override cannot set it, and kt-shadow, built with the same profiles, must unwind (a
//! panicking connection task must not take the agent down). So the program lives in
//! its own small workspace, `kt-shadow/loader/program` (a `_start` and a panic handler
//! over this crate), whose release profile aborts and is tuned for size; this crate's
//! build script builds it there (`cargo build --release --locked`, target
//! `x86_64-unknown-linux-gnu`, in `OUT_DIR`, whatever profile the workspace is built
//! with, with none of the outer build's `RUSTFLAGS`) and embeds the result as
//! [`BINARY`] (feature `embed`, on by default). The program's build script passes the
//! link arguments (`-nostartfiles -nostdlib -static`); no `RUSTFLAGS` are needed.
//! By hand:
//!
//! ```text
//! cargo build --release --locked --target x86_64-unknown-linux-gnu \
//!     --manifest-path kt-shadow/loader/program/Cargo.toml
//! # -> $CARGO_TARGET_DIR (or kt-shadow/loader/program/target)/x86_64-unknown-linux-gnu/release/kt-loader
//! readelf -lW <that file>   # no INTERP, no DYNAMIC
//! ```
//!
//! # Size
//!
//! 22,984 bytes (Rust 1.95, sha2 0.11.1; `opt-level = "s"`, LTO, one codegen unit,
//! stripped), of which sha2's portable SHA-256 is about 10 KB and its SHA-NI path 0.5 KB
//! (chosen at run time by CPUID). Measured per `opt-level`: "s" 22,984, "z" 23,680,
//! 2 29,528, 3 34,296, 1 34,624 bytes. A test fails past 64 KiB.

#![no_std]

// The unit tests run on the host with std (its macros too).
#[cfg(test)]
#[macro_use]
extern crate std;

mod args;
mod hex;
mod message;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[allow(
    unsafe_code,
    reason = "raw system calls and the process's start-up stack (no libc)"
)]
mod sys;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[allow(
    unsafe_code,
    reason = "the program's entry point reads the start-up stack"
)]
mod run;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use run::{panicked, start};

/// The exit code when a part or the whole does not match its hash
/// (`kt_proto::agent::LOADER_REFUSED_EXIT`).
pub const REFUSED_EXIT: i32 = 86;

/// The exit code of any other failure: bad arguments, I/O, `execve`
/// (`kt_proto::agent::LOADER_FAILED_EXIT`).
pub const FAILED_EXIT: i32 = 87;

/// The assembled binary's mode: read and execute for its owner, nothing else; never
/// writable once assembled.
pub const OUT_MODE: usize = 0o500;

/// How much of a part is read at once: the loader's only buffer (on the stack), so
/// its memory does not grow with the binary.
pub const BUFFER_SIZE: usize = 64 * 1024;

/// The static loader program (x86_64 Linux ELF, no libc), built by this crate's build
/// script from `kt-shadow/loader/program`: what kt-core ships to the namespace.
#[cfg(feature = "embed")]
pub const BINARY: &[u8] = include_bytes!(env!("KT_LOADER_BINARY"));
