//! The shadow pod: how it learns the client's key and reports its host key, its Secret
//! (the OpenSSH flavour only) and where it is mounted, its SSH port, image, user,
//! ServiceAccount, the session's Lease and exit codes.
//!
//! The client makes a key pair per session, the **client key**: its private half never
//! leaves the client. What happens to its public half and to the shadow's **host key**
//! depends on the flavour:
//!
//! - **kt-shadow**: the client's public key is an argument of the pod
//!   (`serve --authorized-key <key>`, see [`crate::cli`]); a pod's containers' arguments
//!   cannot be changed after it is created, so no one can swap the key. kt-shadow makes its own
//!   host key pair in memory when it starts, never writes it anywhere, and prints the
//!   public half on one line of its log, [`HOST_KEY_LOG_PREFIX`] followed by the key
//!   ([`host_key_log_line`]), before it listens. The client reads that line through the
//!   API server ([`reported_host_key`]) and pins the key. No Secret, so the host key's
//!   private half is never in the API at all.
//! - **OpenSSH** (a stock sshd, which reads its host key and configuration from files):
//!   the client makes the host key too and puts its private half, the client's public
//!   key and the sshd configuration into a Secret mounted at [`MOUNT_DIR`]; the client
//!   pins the host key's public half. Whoever can read that Secret holds the host key,
//!   so this flavour relies on the client's check of the pod's UID alone.

/// The start of the one log line in which kt-shadow reports its host key (a
/// `--authorized-key` shadow): the prefix, then the public key in OpenSSH format
/// (`ssh-ed25519 AAAA...`), on a line of its own at the very start of a line, printed
/// to stdout before the shadow listens, so before any client could make it log
/// anything.
pub const HOST_KEY_LOG_PREFIX: &str = "kt-shadow host-key ";

/// The line kt-shadow prints to report its host key (`openssh_public_key` as written by
/// `PublicKey::to_openssh`), without the line break.
pub fn host_key_log_line(openssh_public_key: &str) -> String {
    format!("{HOST_KEY_LOG_PREFIX}{}", openssh_public_key.trim())
}

/// The host key a shadow reported in `log` (the start of its log): the text after
/// [`HOST_KEY_LOG_PREFIX`] on the **first** complete line (one ending in `\n`) that
/// starts with it, trimmed; `None` when no line does. Only the first counts: kt-shadow
/// prints it before it listens, so any later line that looks the same was written
/// after a client could reach it. A last line without its `\n` (still being written,
/// or cut by a byte limit) does not count.
pub fn reported_host_key(log: &str) -> Option<&str> {
    log.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .find_map(|line| line.strip_prefix(HOST_KEY_LOG_PREFIX))
        .map(str::trim)
}

/// Secret key (OpenSSH flavour) holding the client's ephemeral public key, one OpenSSH
/// `authorized_keys` line (`ssh-ed25519 AAAA... comment`).
pub const SECRET_AUTHORIZED_KEYS: &str = "authorized_keys";

/// Secret key (OpenSSH flavour) holding the shadow's host private key, OpenSSH PEM format
/// (`-----BEGIN OPENSSH PRIVATE KEY-----`), unencrypted, Ed25519.
pub const SECRET_HOST_KEY: &str = "ssh_host_ed25519_key";

/// Directory where the shadow pod mounts its Secret (read-only; OpenSSH flavour, or a
/// kt-shadow started with key files).
pub const MOUNT_DIR: &str = "/etc/kt";

/// [`SECRET_AUTHORIZED_KEYS`] as mounted: [`MOUNT_DIR`]`/authorized_keys`.
pub const AUTHORIZED_KEYS_PATH: &str = "/etc/kt/authorized_keys";

/// [`SECRET_HOST_KEY`] as mounted: [`MOUNT_DIR`]`/ssh_host_ed25519_key`.
pub const HOST_KEY_PATH: &str = "/etc/kt/ssh_host_ed25519_key";

/// File mode for a Secret's files mounted for a kt-shadow that reads its keys from
/// files (`defaultMode`): read-only for owner and group; give the pod `fsGroup` =
/// [`RUN_AS_GROUP`] so the shadow can read them. (kt runs kt-shadow with
/// `--authorized-key` and mounts nothing.)
pub const SECRET_FILE_MODE: i32 = 0o440;

/// The SSH port of the shadow, on the pod's loopback only. The client reaches it
/// through the API server's pod port-forward; other pods cannot.
pub const SSH_PORT: u16 = 2222;

/// The shadow's SSH listen address: loopback, [`SSH_PORT`].
pub const LISTEN_ADDR: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, SSH_PORT),
);

/// The lab's name for the kt-shadow image (its node agent maps it to its local
/// `kt-shadow` binary). Under `.invalid`, a name that can never resolve: kt never pulls
/// it by default (it ships its agent instead); a real cluster gets an image only when
/// the user names one, pushed to their own registry.
pub const IMAGE: &str = "kt.invalid/kt-shadow";

/// Path of the binary inside the image (the image's entrypoint).
pub const BINARY_PATH: &str = "/usr/local/bin/kt-shadow";

/// The binary's name, looked up through the container's `PATH` (the image sets
/// `PATH=/usr/local/bin`): the exec readiness probe uses it, so any runtime that
/// puts the binary on the container's `PATH` works.
pub const BINARY_NAME: &str = "kt-shadow";

/// The user id the shadow runs as (non-root, the "nonroot" id of distroless images).
pub const RUN_AS_USER: i64 = 65532;

/// The group id the shadow runs as.
pub const RUN_AS_GROUP: i64 = 65532;

/// The SSH user name the client logs in as. The shadow accepts any user name; only the
/// key counts.
pub const SSH_USER: &str = "kt";

/// The one command the shadow executes on a session channel: it prints
/// [`HEALTH_OUTPUT`] and exits 0 (an end-to-end liveness check through SSH).
pub const HEALTH_COMMAND: &str = "kt-health";

/// What [`HEALTH_COMMAND`] prints.
pub const HEALTH_OUTPUT: &str = "ok\n";

/// Exit code of `kt-shadow serve` when no client was connected for
/// `--heartbeat-timeout` seconds: the client vanished, the cluster needs restoring.
pub const EXIT_HEARTBEAT_TIMEOUT: i32 = 3;

/// The ServiceAccount the kt-shadow flavour's pod runs as. Its only permission is
/// reading Leases (the shipped `connect.yaml` and `vpn.yaml` make it, with Role and
/// RoleBinding `kt-shadow`), so that the shadow's watchdog can see its session's
/// Lease (`--lease`).
pub const SERVICE_ACCOUNT: &str = "kt-shadow";

/// Exit code of `kt-shadow serve --lease NAME` when the session's Lease expired (its
/// holder stopped renewing it for `leaseDurationSeconds`, as seen by the shadow) or
/// was deleted: the client is gone, the cluster needs restoring.
///
/// The Lease (`coordination.k8s.io/v1`) has the shadow pod's name, is owned by the
/// pod, is held by the session id and renewed by the client every heartbeat interval.
pub const EXIT_LEASE_EXPIRED: i32 = 4;

/// Exit code of `kt-shadow serve --restore ...` when putting back an object failed
/// (the API server refused or did not answer in time, or the object's record could not
/// be read): the log names the object and why, and the record stays on the object for
/// a later kt run (`clean`, `recover`, or a take-over) to restore. Conflicts (a value
/// someone else changed meanwhile, left as it is) are logged but are not failures.
pub const EXIT_RESTORE_FAILED: i32 = 5;

/// Exit code for a usage error (bad command line), as in BSD `sysexits.h`.
pub const EXIT_USAGE: i32 = 64;

/// Exit code of `kt-shadow serve` when it cannot start or fails while running
/// (unreadable keys, port in use, refused listen address).
pub const EXIT_FAILURE: i32 = 1;

/// The environment variable that tells kt-shadow its own pod's name (kt sets it from
/// the downward API, `metadata.name`): `serve --self-delete` deletes that pod.
pub const POD_NAME_ENV: &str = "POD_NAME";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_paths_are_the_mount_dir_plus_the_secret_keys() {
        assert_eq!(
            AUTHORIZED_KEYS_PATH,
            format!("{MOUNT_DIR}/{SECRET_AUTHORIZED_KEYS}")
        );
        assert_eq!(HOST_KEY_PATH, format!("{MOUNT_DIR}/{SECRET_HOST_KEY}"));
    }

    #[test]
    fn the_host_key_line_is_found_by_its_prefix_and_only_the_first_counts() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPDBp3khpUoQDgs/jC6tYksSwC/LKe35IRMRz4hAr1x4";
        let line = host_key_log_line(&format!("{key}\n"));
        assert_eq!(line, format!("kt-shadow host-key {key}"));
        let log = format!(
            "2026-01-01T00:00:00Z  INFO warming up\n{line}\r\n\
             2026-01-01T00:00:01Z  INFO kt-shadow listening\n\
             kt-shadow host-key ssh-ed25519 AAAAlater\n"
        );
        assert_eq!(reported_host_key(&log), Some(key));
        // Not at the start of a line: not the line.
        assert_eq!(reported_host_key(&format!("INFO user said {line}\n")), None);
        assert_eq!(reported_host_key("kt-shadow listening\n"), None);
        assert_eq!(reported_host_key(""), None);
        // A line with the prefix and garbage is still the line (the caller refuses it).
        assert_eq!(
            reported_host_key("kt-shadow host-key nonsense\n"),
            Some("nonsense")
        );
        // A line cut short (a byte limit, or still being written) is not a line yet.
        assert_eq!(reported_host_key(&line[..line.len() - 3]), None);
        assert_eq!(reported_host_key(&line), None);
    }

    #[test]
    fn ssh_listens_on_loopback_only() {
        assert!(LISTEN_ADDR.ip().is_loopback());
        assert_eq!(LISTEN_ADDR.port(), SSH_PORT);
        assert_eq!(LISTEN_ADDR.to_string(), "127.0.0.1:2222");
    }

    #[test]
    fn exit_codes_are_distinct_and_nonzero() {
        let codes = [
            EXIT_FAILURE,
            EXIT_HEARTBEAT_TIMEOUT,
            EXIT_LEASE_EXPIRED,
            EXIT_RESTORE_FAILED,
            EXIT_USAGE,
        ];
        assert!(codes.iter().all(|c| *c != 0));
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), codes.len());
    }

    #[test]
    fn runs_as_a_non_root_user() {
        assert_ne!(RUN_AS_USER, 0);
        assert_ne!(RUN_AS_GROUP, 0);
    }
}
