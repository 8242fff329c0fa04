//! The error type of this crate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use russh::keys::ssh_key;

/// Everything that stops `kt-shadow` from starting, or makes a probe fail.
///
/// Failures of single channels (a refused connect, a closed listener) are not errors
/// of the server: they are answered on the SSH connection and logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--listen` names an address that is not loopback and `--allow-non-loopback`
    /// was not given.
    #[error(
        "refusing to listen on {addr}: it is not a loopback address, so every pod in the \
         cluster could reach the SSH port; listen on 127.0.0.1 (the client reaches it through \
         port-forward) or pass --allow-non-loopback if this is really meant"
    )]
    NonLoopbackListen {
        /// The refused address.
        addr: SocketAddr,
    },

    /// A key file could not be read.
    #[error(
        "cannot read the {what} at {path}: {source}; is the shadow Secret mounted at /etc/kt \
         and readable by uid 65532?"
    )]
    ReadFile {
        /// Which file: "host key" or "authorized_keys file".
        what: &'static str,
        /// The path given on the command line.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The host key file is not an OpenSSH private key.
    #[error(
        "the host key at {path} is not an OpenSSH private key ({source}); it must be the \
         `-----BEGIN OPENSSH PRIVATE KEY-----` file the client generated"
    )]
    HostKey {
        /// The host key path.
        path: PathBuf,
        /// Why the parser refused it.
        #[source]
        source: ssh_key::Error,
    },

    /// The host key file is encrypted with a passphrase.
    #[error(
        "the host key at {path} is encrypted with a passphrase; kt-shadow cannot ask for one, \
         store the key unencrypted in the Secret"
    )]
    HostKeyEncrypted {
        /// The host key path.
        path: PathBuf,
    },

    /// The host key could not be made in memory (or its public half written).
    #[error("cannot make the host key: {source}")]
    GenerateHostKey {
        /// Why.
        #[source]
        source: ssh_key::Error,
    },

    /// The host-key line could not be written to stdout, so no client could learn
    /// the key to pin.
    #[error(
        "cannot write the host-key line to stdout ({source}); the client reads the host \
         key from the pod's log, so kt-shadow needs its stdout"
    )]
    ReportHostKey {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// `--authorized-key` is not an OpenSSH public key.
    #[error(
        "--authorized-key `{value}` is not an OpenSSH public key ({source}); expected one \
         argument like `ssh-ed25519 AAAA... comment`"
    )]
    AuthorizedKeyArg {
        /// The value as given.
        value: String,
        /// Why the parser refused it.
        #[source]
        source: ssh_key::Error,
    },

    /// A line of the `authorized_keys` file is not a public key.
    #[error(
        "line {line} of {path} is not an OpenSSH public key ({source}); expected a line like \
         `ssh-ed25519 AAAA... comment`"
    )]
    AuthorizedKeysLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why the parser refused it.
        #[source]
        source: ssh_key::Error,
    },

    /// A line of the `authorized_keys` file carries options, which kt-shadow does not
    /// enforce; accepting the key while ignoring its restrictions would be unsafe.
    #[error(
        "line {line} of {path} has key options (`{options}`), which kt-shadow does not \
         enforce; write the key without options"
    )]
    AuthorizedKeysOptions {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The options as written.
        options: String,
    },

    /// The `authorized_keys` file holds no key, so nobody could log in.
    #[error(
        "{path} holds no public key, so no client could log in; the shadow Secret's \
         authorized_keys entry must hold the client's public key"
    )]
    NoAuthorizedKeys {
        /// The file.
        path: PathBuf,
    },

    /// The listen socket could not be opened.
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// `kt-shadow probe` could not connect.
    #[error("probe: cannot connect to {addr}: {source}; is `kt-shadow serve` running?")]
    ProbeConnect {
        /// The probed address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// `kt-shadow probe` got no SSH banner in time.
    #[error(
        "probe: no SSH banner from {addr} within {timeout:?}; the server is stuck or overloaded"
    )]
    ProbeTimeout {
        /// The probed address.
        addr: SocketAddr,
        /// How long the probe waited.
        timeout: Duration,
    },

    /// `kt-shadow probe` got an answer that is not an SSH banner.
    #[error(
        "probe: {addr} answered `{answer}`, which is not an SSH banner; another program holds the port"
    )]
    ProbeNotSsh {
        /// The probed address.
        addr: SocketAddr,
        /// What came back (at most one line, lossily decoded).
        answer: String,
    },

    /// `--restore` or `--self-delete` without Kubernetes credentials: the shadow would
    /// serve a swap it could not undo.
    #[error(
        "cannot restore the --restore objects or delete the pod (--self-delete): no \
         Kubernetes credentials ({reason}); run the shadow pod with its ServiceAccount \
         token mounted (automountServiceAccountToken), or set KT_SHADOW_KUBECONFIG \
         outside a pod"
    )]
    NoCluster {
        /// Why there are none.
        reason: String,
    },

    /// `--self-delete` without a way to know the pod's name.
    #[error(
        "--self-delete needs the pod's name: set the POD_NAME environment variable \
         (downward API, fieldPath metadata.name)"
    )]
    NoPodName,
}
