//! The `kt-shadow` binary itself: command line, exit codes, probe.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{PinnedHost, Shadowed, TempDir, TestResult, free_port, keygen};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use tokio::process::Command;

fn kt_shadow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kt-shadow"));
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn version_and_help_print_and_exit_zero() -> TestResult {
    let out = kt_shadow().arg("version").output().await?;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("kt-shadow {}\n", kt_proto::VERSION)
    );
    let out = kt_shadow().arg("help").output().await?;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--heartbeat-timeout"));
    Ok(())
}

#[tokio::test]
async fn a_bad_command_line_exits_64_naming_the_problem() -> TestResult {
    let out = kt_shadow().args(["serve", "--port", "22"]).output().await?;
    assert_eq!(out.status.code(), Some(kt_proto::shadow::EXIT_USAGE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option `--port`"));
    Ok(())
}

#[tokio::test]
async fn serve_refuses_a_non_loopback_address_and_missing_keys() -> TestResult {
    let out = kt_shadow()
        .args(["serve", "--listen", "0.0.0.0:2222"])
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(kt_proto::shadow::EXIT_FAILURE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));

    let out = kt_shadow()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--host-key",
            "/nonexistent/key",
        ])
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(kt_proto::shadow::EXIT_FAILURE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the host key"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exits_zero_on_a_shadow_and_one_on_a_closed_port() -> TestResult {
    let shadow = Shadowed::start().await?;
    let out = kt_shadow()
        .args(["probe", "--addr", &shadow.addr.to_string()])
        .output()
        .await?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let closed = free_port().await?;
    let out = kt_shadow()
        .args(["probe", "--addr", &format!("127.0.0.1:{closed}")])
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    shadow.stop().await?;
    Ok(())
}

#[tokio::test]
async fn serve_exits_3_when_no_client_comes_within_the_heartbeat_timeout() -> TestResult {
    let dir = TempDir::new()?;
    let host = keygen(dir.path(), "host")?;
    let client = keygen(dir.path(), "client")?;
    let port = free_port().await?;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        kt_shadow()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--host-key")
            .arg(&host)
            .arg("--authorized-keys")
            .arg(format!("{}.pub", client.display()))
            .args(["--heartbeat-timeout", "1"])
            .output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("heartbeat timeout"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn without_in_cluster_credentials_the_lease_is_not_watched_and_the_idle_timer_still_ends_it()
-> TestResult {
    let dir = TempDir::new()?;
    let host = keygen(dir.path(), "host")?;
    let client = keygen(dir.path(), "client")?;
    let port = free_port().await?;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        kt_shadow()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--host-key")
            .arg(&host)
            .arg("--authorized-keys")
            .arg(format!("{}.pub", client.display()))
            .args(["--heartbeat-timeout", "1", "--lease", "kt-shadow-test"])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(kt_proto::shadow::EXIT_HEARTBEAT_TIMEOUT),
        "{stderr}"
    );
    assert!(
        stderr.contains("no in-cluster credentials: the session's Lease is not watched"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_with_code_zero() -> TestResult {
    let dir = TempDir::new()?;
    let host = keygen(dir.path(), "host")?;
    let client = keygen(dir.path(), "client")?;
    let port = free_port().await?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let child = kt_shadow()
        .args(["serve", "--listen", &addr.to_string()])
        .arg("--host-key")
        .arg(&host)
        .arg("--authorized-keys")
        .arg(format!("{}.pub", client.display()))
        .stderr(Stdio::piped())
        .spawn()?;
    common::wait_listening(addr).await?;
    let pid = child.id().ok_or("no pid")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    Ok(())
}

/// What the shadow pod runs: the client's public key on the command line, the host key
/// made in memory. The key reported on stdout is the one the server presents: a client
/// pinning it logs in with the given key (and only that one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_inline_authorized_key_the_printed_host_key_is_the_served_one() -> TestResult {
    let dir = TempDir::new()?;
    let client = keygen(dir.path(), "client")?;
    let other = keygen(dir.path(), "other")?;
    let client_public = std::fs::read_to_string(format!("{}.pub", client.display()))?;
    let port = free_port().await?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = kt_shadow()
        .args(["serve", "--listen", &addr.to_string()])
        .args(["--authorized-key", client_public.trim()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = tokio::time::timeout(Duration::from_secs(20), first_line(stdout)).await??;
    let reported = kt_proto::shadow::reported_host_key(&line)
        .ok_or_else(|| format!("no host-key line on stdout: {line:?}"))?;
    let pinned = PublicKey::from_openssh(reported)?;
    common::wait_listening(addr).await?;

    let config = Arc::new(common::russh_client_config());
    let mut handle = russh::client::connect(Arc::clone(&config), addr, PinnedHost(pinned.clone()))
        .await
        .map_err(|e| format!("handshake with the reported host key pinned: {e}"))?;
    let login = |key: &std::path::Path| {
        PrivateKey::read_openssh_file(key).map(|k| PrivateKeyWithHashAlg::new(Arc::new(k), None))
    };
    let auth = handle
        .authenticate_publickey(kt_proto::shadow::SSH_USER, login(&client)?)
        .await?;
    assert!(auth.success(), "the --authorized-key key was refused");

    let mut stranger = russh::client::connect(config, addr, PinnedHost(pinned)).await?;
    let auth = stranger
        .authenticate_publickey(kt_proto::shadow::SSH_USER, login(&other)?)
        .await?;
    assert!(
        !auth.success(),
        "a key not given with --authorized-key logged in"
    );
    child.kill().await?;
    Ok(())
}

/// The host-key line is written before the shadow listens (so before any client could
/// make it log anything): with its port taken, the line is there and binding fails
/// after it. And the key given is checked: not a key, exit 1 naming the option.
#[tokio::test]
async fn the_host_key_line_comes_before_listening_and_a_bad_key_is_refused() -> TestResult {
    let dir = TempDir::new()?;
    let client = keygen(dir.path(), "client")?;
    let client_public = std::fs::read_to_string(format!("{}.pub", client.display()))?;
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        kt_shadow()
            .args(["serve", "--listen", &taken.local_addr()?.to_string()])
            .args(["--authorized-key", client_public.trim()])
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(kt_proto::shadow::EXIT_FAILURE),
        "{stderr}"
    );
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    let reported = kt_proto::shadow::reported_host_key(&stdout);
    assert!(
        reported.is_some_and(|k| PublicKey::from_openssh(k).is_ok()),
        "no host-key line before the bind failed: {stdout:?}"
    );
    drop(taken);

    let out = kt_shadow()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--authorized-key", "ssh-ed25519 not-a-key"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(kt_proto::shadow::EXIT_FAILURE),
        "{stderr}"
    );
    assert!(
        stderr.contains("--authorized-key `ssh-ed25519 not-a-key` is not"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "a host key was reported for a refused start"
    );
    Ok(())
}

/// The first line `stdout` writes, with its line break.
async fn first_line(stdout: tokio::process::ChildStdout) -> std::io::Result<String> {
    use tokio::io::AsyncBufReadExt as _;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await?;
    Ok(line)
}
