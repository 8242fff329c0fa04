//! The OpenSSH peer: a stock `sshd` pod (the same spec as kt-core's OpenSSH shadow
//! flavour, with keys made here by `ssh-keygen`), `kubectl port-forward` to its SSH
//! port, and `ssh -D` over that port-forward: what a developer gets without kt. The
//! pod and its keys ([`SshdPod`]) also serve the `vpn` benchmark's sshuttle.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use kt_lab_tests::{KubectlPortForward, TestNamespace};
use kt_proto::shadow;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::ScratchDir;
use kt_lab_tests::socks5_connect;

/// The sshd pod's (and its Secret's) name.
pub const SSHD_POD: &str = "bench-sshd";

/// The image the lab maps to the machine's `/usr/sbin/sshd`.
pub const SSHD_IMAGE: &str = "kt.invalid/openssh";

/// The SSH port on the pod's loopback.
pub const SSHD_PORT: u16 = shadow::SSH_PORT;

/// The alias the pinned host key is filed under in the client's known_hosts.
const HOST_ALIAS: &str = "kt-bench-sshd";

/// How long the sshd pod and the first `ssh -D` may take to come up.
const START_LIMIT: Duration = Duration::from_secs(90);

/// The stock sshd pod [`SSHD_POD`] in a namespace, and the client's side of its keys:
/// a client key it accepts and a known_hosts file that pins its host key (both made
/// here by `ssh-keygen`, in a scratch directory removed when this is dropped). The pod
/// goes with the namespace.
pub struct SshdPod {
    /// The client's private key.
    pub client_key: PathBuf,
    /// A known_hosts file with the pod's host key under the alias the client options
    /// name.
    pub known_hosts: PathBuf,
    dir: ScratchDir,
}

impl SshdPod {
    /// Makes the keys, creates the Secret and the pod in `ns` and waits until the pod
    /// is ready.
    pub async fn create(ns: &TestNamespace) -> Result<SshdPod> {
        let dir = ScratchDir::new(&format!("kt-bench-ssh-{}", ns.name()))?;
        let client_key = dir.path.join("client");
        let host_key = dir.path.join("host");
        for key in [&client_key, &host_key] {
            let key = key.to_str().context("non-UTF-8 temp dir")?;
            let out = kt_lab_tests::host_command(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-C", "kt-bench", "-f", key],
                Duration::from_secs(30),
            )
            .await?;
            kt_lab_tests::check_output("ssh-keygen", out)?;
        }
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let authorized = read(&dir.path.join("client.pub"))?;
        let host_private = read(&host_key)?;
        let host_public = read(&dir.path.join("host.pub"))?;
        let known_hosts = dir.path.join("known_hosts");
        std::fs::write(&known_hosts, format!("{HOST_ALIAS} {host_public}"))?;

        ns.apply(&manifests(&authorized, &host_private)?.to_string())
            .await?;
        ns.wait_pod_ready(SSHD_POD).await?;
        Ok(SshdPod {
            client_key,
            known_hosts,
            dir,
        })
    }

    /// The OpenSSH client options (before the destination) that log in with the client
    /// key and accept only the pinned host key, with no user configuration, no agent and
    /// no prompts.
    pub fn client_options(&self) -> Vec<String> {
        client_options(&self.client_key, &self.known_hosts)
    }
}

/// See [`SshdPod::client_options`].
fn client_options(key: &Path, known_hosts: &Path) -> Vec<String> {
    let mut out: Vec<String> = vec!["-F".into(), "/dev/null".into(), "-i".into()];
    out.push(key.display().to_string());
    out.push("-o".into());
    out.push(format!("UserKnownHostsFile={}", known_hosts.display()));
    for opt in [
        "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes",
        &format!("HostKeyAlias={HOST_ALIAS}"),
        "IdentitiesOnly=yes",
        "BatchMode=yes",
        "ControlMaster=no",
        "ControlPath=none",
        "ConnectTimeout=10",
        "LogLevel=ERROR",
    ] {
        out.push("-o".into());
        out.push(opt.to_owned());
    }
    out
}

/// `ssh -D 127.0.0.1:<port>` to an sshd pod, over `kubectl port-forward`. Dropping it
/// kills both processes (kill on drop); [`SshDynamicForward::stop`] also waits for them.
pub struct SshDynamicForward {
    /// The SOCKS5 proxy `ssh -D` serves.
    pub socks: SocketAddr,
    ssh: Child,
    ssh_log: Arc<Mutex<String>>,
    port_forward: KubectlPortForward,
    _dir: ScratchDir,
}

impl SshDynamicForward {
    /// Creates the sshd pod in `ns`, waits for it, starts the port-forward and
    /// `ssh -D`, and waits until a SOCKS5 `CONNECT` to `probe` (`host`, `port`) goes
    /// through.
    pub async fn start(ns: &TestNamespace, probe: (&str, u16)) -> Result<SshDynamicForward> {
        let pod = SshdPod::create(ns).await?;
        let port_forward = ns
            .kubectl_port_forward(&format!("pod/{SSHD_POD}"), SSHD_PORT)
            .await?;
        let dir = pod.dir;
        let client_key = pod.client_key;
        let known_hosts = pod.known_hosts;

        let deadline = tokio::time::Instant::now() + START_LIMIT;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let socks = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
            let mut ssh = spawn_ssh(socks, port_forward.local_port, &client_key, &known_hosts)?;
            let ssh_log = capture_stderr(&mut ssh);
            // Until ssh exits (sshd not listening yet: try again) or the proxy works.
            let up = loop {
                if let Some(status) = ssh.try_wait()? {
                    break Err(anyhow!("ssh exited ({status})"));
                }
                if tokio::time::Instant::now() >= deadline {
                    break Err(anyhow!("no SOCKS5 proxy within {START_LIMIT:?}"));
                }
                let attempt = tokio::time::timeout(
                    Duration::from_secs(5),
                    socks5_connect(socks, probe.0, probe.1),
                )
                .await;
                if let Ok(Ok(_stream)) = attempt {
                    break Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            match up {
                Ok(()) => {
                    eprintln!("bench: ssh -D {socks} up after {tries} tries");
                    return Ok(SshDynamicForward {
                        socks,
                        ssh,
                        ssh_log,
                        port_forward,
                        _dir: dir,
                    });
                }
                Err(e) => {
                    let _ = ssh.kill().await;
                    if tokio::time::Instant::now() >= deadline {
                        let said = ssh_log.lock().map(|l| l.clone()).unwrap_or_default();
                        let diag = ns.diagnostics().await;
                        bail!(
                            "ssh -D over kubectl port-forward to pod {SSHD_POD}: {e}; ssh said:\n\
                             {said}\nkubectl said:\n{}\n{diag}",
                            port_forward.output()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }

    /// Fails if ssh or the port-forward has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.ssh.try_wait()? {
            let said = self.ssh_log.lock().map(|l| l.clone()).unwrap_or_default();
            bail!("ssh -D exited ({status}):\n{said}");
        }
        self.port_forward.check_running()
    }

    /// What ssh and its port-forward printed so far, and whether they still run.
    pub fn diagnostics(&mut self) -> String {
        let said = self.ssh_log.lock().map(|l| l.clone()).unwrap_or_default();
        let state = match self.ssh.try_wait() {
            Ok(None) => "running".to_owned(),
            Ok(Some(status)) => format!("exited ({status})"),
            Err(e) => format!("unknown ({e})"),
        };
        format!(
            "ssh -D: {state}; ssh said:\n{said}kubectl port-forward to {SSHD_POD} said:\n{}",
            self.port_forward.output()
        )
    }

    /// Kills ssh and the port-forward and waits for ssh to exit.
    pub async fn stop(mut self) {
        let _ = self.ssh.kill().await;
        // The port-forward is killed when dropped with `self`.
    }
}

/// A free port on 127.0.0.1 (bound, then released for ssh to bind).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

fn spawn_ssh(socks: SocketAddr, ssh_port: u16, key: &Path, known_hosts: &Path) -> Result<Child> {
    let mut cmd = Command::new("ssh");
    cmd.args(client_options(key, known_hosts))
        .args(["-N", "-T", "-n"])
        .arg("-D")
        .arg(socks.to_string())
        .arg("-p")
        .arg(ssh_port.to_string())
        .args(["-o", "ExitOnForwardFailure=yes", "root@127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().context("starting ssh (OpenSSH client)")
}

fn capture_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let log = Arc::clone(&log);
        // Ends when ssh exits and its pipe closes.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut l) = log.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
    }
    log
}

/// The Secret and Pod, as a `kubectl apply` list. Same sshd configuration and pod shape
/// as kt-core's OpenSSH flavour: loopback only, the session's keys only, sshd as root.
fn manifests(authorized_keys: &str, host_key: &str) -> Result<serde_json::Value> {
    let dir = shadow::MOUNT_DIR;
    let sshd_config = kt_core::openssh_sshd_config(SSHD_PORT);
    let labels = serde_json::json!({ "app": SSHD_POD });
    Ok(serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": SSHD_POD, "labels": labels },
                "type": "Opaque",
                "stringData": {
                    (shadow::SECRET_AUTHORIZED_KEYS): authorized_keys,
                    (shadow::SECRET_HOST_KEY): host_key,
                    "sshd_config": sshd_config,
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": SSHD_POD, "labels": labels },
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "sshd",
                        "image": SSHD_IMAGE,
                        "command": ["/usr/sbin/sshd", "-D", "-e", "-f", format!("{dir}/sshd_config")],
                        "securityContext": { "runAsUser": 0, "allowPrivilegeEscalation": false },
                        "volumeMounts": [{ "name": "keys", "mountPath": dir, "readOnly": true }],
                    }],
                    "volumes": [{
                        "name": "keys",
                        // sshd refuses a host key that others may read.
                        "secret": { "secretName": SSHD_POD, "defaultMode": 0o400 },
                    }],
                },
            },
        ],
    }))
}
