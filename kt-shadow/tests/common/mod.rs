//! Shared fixtures: a kt-shadow started in-process on 127.0.0.1 with fresh keys made
//! by `ssh-keygen`, the OpenSSH client pinned to its host key, echo servers, a SOCKS5
//! client and a russh client.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fixtures"
)]
#![allow(unreachable_pub, reason = "test helpers")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kt_proto::cli::ServeArgs;
use kt_shadow::{Exit, HeldConnections, Shadow, Tuning};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Turns on kt-shadow's logs in tests when `KT_SHADOW_LOG` is set (e.g. `debug`).
pub fn init_logs() {
    if let Some(level) = std::env::var("KT_SHADOW_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
    {
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_test_writer()
            .try_init();
    }
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TestResult<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "kt-shadow-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes an Ed25519 key pair with `ssh-keygen`; returns the private key path.
pub fn keygen(dir: &Path, name: &str) -> TestResult<PathBuf> {
    let path = dir.join(name);
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("ssh-keygen failed: {status}").into());
    }
    Ok(path)
}

fn public_line(private: &Path) -> TestResult<String> {
    let mut pub_path = private.as_os_str().to_owned();
    pub_path.push(".pub");
    Ok(std::fs::read_to_string(pub_path)?.trim().to_owned())
}

/// A running in-process kt-shadow with its keys.
pub struct Shadowed {
    pub dir: TempDir,
    pub addr: SocketAddr,
    /// The client's private key (in `authorized_keys`).
    pub client_key: PathBuf,
    /// The host public key line (`ssh-ed25519 AAAA... host`).
    pub host_public: String,
    /// known_hosts pinning the host key for `addr`.
    pub known_hosts: PathBuf,
    /// Counters of connections held on forwarded ports.
    pub held: HeldConnections,
    shutdown: CancellationToken,
    server: Option<JoinHandle<Exit>>,
}

impl Shadowed {
    pub async fn start() -> TestResult<Shadowed> {
        Self::start_with(|_| {}, Tuning::default()).await
    }

    pub async fn start_with(
        configure: impl FnOnce(&mut ServeArgs),
        tuning: Tuning,
    ) -> TestResult<Shadowed> {
        init_logs();
        let dir = TempDir::new()?;
        let host_key = keygen(dir.path(), "host")?;
        let client_key = keygen(dir.path(), "client")?;
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(&authorized_keys, public_line(&client_key)? + "\n")?;
        let mut args = ServeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            host_key,
            authorized_keys,
            ..ServeArgs::default()
        };
        configure(&mut args);
        let shadow = Shadow::bind_with(&args, tuning).await?;
        let addr = shadow.local_addr()?;
        let held = shadow.held_connections();
        let host_public = public_line(&args.host_key)?;
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{} {host_public}\n", addr.port()),
        )?;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(shadow.run(shutdown.clone()));
        Ok(Shadowed {
            dir,
            addr,
            client_key,
            host_public,
            known_hosts,
            held,
            shutdown,
            server: Some(server),
        })
    }

    /// `ssh` with the pinned host key, the client key and no user configuration.
    /// Add the forwarding flags and (optionally) a command.
    pub fn ssh(&self) -> tokio::process::Command {
        self.ssh_with(&self.client_key, &self.known_hosts)
    }

    pub fn ssh_with(&self, key: &Path, known_hosts: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.arg("-F")
            .arg("/dev/null")
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "IdentityAgent=none"])
            .args(["-o", "ExitOnForwardFailure=yes"])
            .args(["-o", "ConnectTimeout=5"])
            .arg("-i")
            .arg(key)
            .args(["-p", &self.addr.port().to_string()])
            .args(["-l", kt_proto::shadow::SSH_USER])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Cancels the server and waits for it.
    pub async fn stop(mut self) -> TestResult<Exit> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits for the server to stop by itself.
    pub async fn wait(&mut self) -> TestResult<Exit> {
        match self.server.take() {
            Some(server) => Ok(server.await?),
            None => Err("server already awaited".into()),
        }
    }

    /// Whether the server is still running.
    pub fn is_running(&self) -> bool {
        self.server.as_ref().is_some_and(|s| !s.is_finished())
    }

    /// Connects and authenticates a russh client.
    pub async fn russh_client(&self) -> TestResult<russh::client::Handle<PinnedHost>> {
        let key = PrivateKey::read_openssh_file(&self.client_key)?;
        self.russh_client_with(key, russh_client_config()).await
    }

    pub async fn russh_client_with(
        &self,
        key: PrivateKey,
        config: russh::client::Config,
    ) -> TestResult<russh::client::Handle<PinnedHost>> {
        let pinned = PublicKey::from_openssh(&self.host_public)?;
        let mut handle =
            russh::client::connect(Arc::new(config), self.addr, PinnedHost(pinned)).await?;
        let auth = handle
            .authenticate_publickey(
                kt_proto::shadow::SSH_USER,
                PrivateKeyWithHashAlg::new(Arc::new(key), None),
            )
            .await?;
        if !auth.success() {
            return Err("russh client: public key refused".into());
        }
        Ok(handle)
    }

    /// Runs the SSH handshake over `stream` (a connection to the shadow, opened
    /// earlier) with `handler`, and logs in with the client key.
    pub async fn russh_login<H>(
        &self,
        stream: TcpStream,
        handler: H,
    ) -> TestResult<russh::client::Handle<H>>
    where
        H: russh::client::Handler<Error = russh::Error> + Send + 'static,
    {
        let key = PrivateKey::read_openssh_file(&self.client_key)?;
        let mut handle =
            russh::client::connect_stream(Arc::new(russh_client_config()), stream, handler).await?;
        let auth = handle
            .authenticate_publickey(
                kt_proto::shadow::SSH_USER,
                PrivateKeyWithHashAlg::new(Arc::new(key), None),
            )
            .await?;
        if !auth.success() {
            return Err("russh client: public key refused".into());
        }
        Ok(handle)
    }

    /// A client handler pinned to this shadow's host key that records what the shadow
    /// says besides the protocol's codes.
    pub fn recorder(&self) -> TestResult<Recorder> {
        Ok(Recorder {
            pinned: PublicKey::from_openssh(&self.host_public)?,
            said: Arc::default(),
        })
    }
}

/// A russh client handler accepting only the pinned host key and recording the texts
/// of channel open failures (`open failure <code>: <text>`) and of a disconnect
/// (`disconnect <code>: <text>`). It greets remote-forwarded connections.
#[derive(Clone)]
pub struct Recorder {
    pinned: PublicKey,
    pub said: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    /// Everything recorded so far.
    pub fn said(&self) -> Vec<String> {
        self.said.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn record(&self, line: String) {
        if let Ok(mut said) = self.said.lock() {
            said.push(line);
        }
    }
}

impl russh::client::Handler for Recorder {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        PinnedHost(self.pinned.clone())
            .check_server_key(server_public_key)
            .await
    }

    async fn channel_open_failure(
        &mut self,
        _channel: russh::ChannelId,
        reason: russh::ChannelOpenFailure,
        description: &str,
        _language: &str,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        self.record(format!("open failure {}: {description}", reason.code()));
        Ok(())
    }

    async fn disconnected(
        &mut self,
        reason: russh::client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            russh::client::DisconnectReason::ReceivedDisconnect(info) => {
                self.record(format!(
                    "disconnect {}: {}",
                    info.reason_code as u32, info.message
                ));
                Ok(())
            }
            russh::client::DisconnectReason::Error(e) => Err(e),
        }
    }

    /// Accepts every remote-forwarded connection and greets it with [`GREETING`], then
    /// EOF.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        tokio::spawn(async move {
            let _ = channel.data_bytes(GREETING).await;
            let _ = channel.eof().await;
            // Keep the channel until the shadow closes it.
            let mut channel = channel;
            while channel.wait().await.is_some() {}
        });
        Ok(())
    }
}

/// What a [`Recorder`] client sends on each remote-forwarded connection.
pub const GREETING: &[u8] = b"forwarded by the client";

impl Drop for Shadowed {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The client-side settings kt-core is expected to use: big window and packets.
pub fn russh_client_config() -> russh::client::Config {
    russh::client::Config {
        window_size: 4 * 1024 * 1024,
        maximum_packet_size: 32 * 1024,
        nodelay: true,
        ..Default::default()
    }
}

/// A russh client handler accepting only the pinned host key.
pub struct PinnedHost(pub PublicKey);

impl russh::client::Handler for PinnedHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match server_public_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.0.key_data()
            }
            russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
        })
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub async fn free_port() -> TestResult<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

/// Polls until `addr` accepts a connection.
pub async fn wait_listening(addr: SocketAddr) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{addr} did not start listening within 10 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP echo server on 127.0.0.1: echoes every connection until EOF, then closes.
pub struct EchoServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start() -> TestResult<EchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                conns.spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Ok(EchoServer { addr, task })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP echo server on 127.0.0.1: sends every datagram back to its sender.
pub struct UdpEchoServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl UdpEchoServer {
    pub async fn start() -> TestResult<UdpEchoServer> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(buf.get(..n).unwrap_or_default(), from).await;
            }
        });
        Ok(UdpEchoServer { addr, task })
    }
}

impl Drop for UdpEchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `len` bytes of a pattern that differs per `seed`, so crossed streams are caught.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Writes `data` to `stream` while reading the echo; returns what came back.
pub async fn round_trip(stream: TcpStream, data: &[u8]) -> TestResult<Vec<u8>> {
    let (mut r, mut w) = stream.into_split();
    let to_send = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&to_send).await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let mut back = Vec::with_capacity(data.len());
    r.read_to_end(&mut back).await?;
    writer.await??;
    Ok(back)
}

/// Opens a TCP connection through a SOCKS5 proxy (no authentication, CONNECT by name).
pub async fn socks5_connect(proxy: SocketAddr, host: &str, port: u16) -> TestResult<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(&[5, 1, 0]).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await?;
    if choice != [5, 0] {
        return Err(format!("SOCKS5 method refused: {choice:?}").into());
    }
    let mut req = vec![5, 1, 0, 3, u8::try_from(host.len())?];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[1] != 0 {
        return Err(format!("SOCKS5 CONNECT failed with reply {}", head[1]).into());
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            usize::from(len[0]) + 2
        }
        other => return Err(format!("SOCKS5 reply has address type {other}").into()),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).await?;
    Ok(s)
}
