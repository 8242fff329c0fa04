//! The shadow pod: its Secret, where the Secret is mounted, its SSH port, image,
//! user, ServiceAccount, the session's Lease and exit codes.
//!
//! The client makes two key pairs per session. The **client key**'s private half
//! never leaves the client; its public half goes into the Secret under
//! [`SECRET_AUTHORIZED_KEYS`]. The **host key** is made by the client too: its private
//! half goes into the Secret under [`SECRET_HOST_KEY`] and its public half is pinned
//! by the client, so the SSH session cannot be intercepted without the Secret.

/// Secret key holding the client's ephemeral public key, one OpenSSH
/// `authorized_keys` line (`ssh-ed25519 AAAA... comment`).
pub const SECRET_AUTHORIZED_KEYS: &str = "authorized_keys";

/// Secret key holding the shadow's host private key, OpenSSH PEM format
/// (`-----BEGIN OPENSSH PRIVATE KEY-----`), unencrypted, Ed25519.
pub const SECRET_HOST_KEY: &str = "ssh_host_ed25519_key";

/// Directory where the shadow pod mounts its Secret (read-only).
pub const MOUNT_DIR: &str = "/etc/kt";

/// [`SECRET_AUTHORIZED_KEYS`] as mounted: [`MOUNT_DIR`]`/authorized_keys`.
pub const AUTHORIZED_KEYS_PATH: &str = "/etc/kt/authorized_keys";

/// [`SECRET_HOST_KEY`] as mounted: [`MOUNT_DIR`]`/ssh_host_ed25519_key`.
pub const HOST_KEY_PATH: &str = "/etc/kt/ssh_host_ed25519_key";

/// File mode for the mounted Secret's files (`defaultMode`): read-only for owner and
/// group. The pod runs with `fsGroup` = [`RUN_AS_GROUP`] so the shadow can read them.
pub const SECRET_FILE_MODE: i32 = 0o440;

/// The SSH port of the shadow, on the pod's loopback only. The client reaches it
/// through the API server's pod port-forward; other pods cannot.
pub const SSH_PORT: u16 = 2222;

/// The shadow's SSH listen address: loopback, [`SSH_PORT`].
pub const LISTEN_ADDR: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, SSH_PORT),
);

/// The shadow image's name (the lab's node agent maps it to its local `kt-shadow`
/// binary; real clusters pull it from a registry under this name or an override).
pub const IMAGE: &str = "kt.dev/kt-shadow";

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

/// Exit code for a usage error (bad command line), as in BSD `sysexits.h`.
pub const EXIT_USAGE: i32 = 64;

/// Exit code of `kt-shadow serve` when it cannot start or fails while running
/// (unreadable keys, port in use, refused listen address).
pub const EXIT_FAILURE: i32 = 1;

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
