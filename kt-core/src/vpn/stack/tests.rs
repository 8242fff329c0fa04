//! Component tests of the VPN (tier 2): a real tun device, real kernel sockets and real
//! `ping`, each test in its own throwaway network namespace (root needed; nothing
//! touches the machine's own namespace). A fake cluster maps addresses of 10.200.0.0/16
//! to servers on the namespace's loopback; the stack reaches them through a
//! [`FlowDialer`] that dials those servers directly.

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::netns::{self, Netns};
use crate::error::{Error, Result};
use crate::vpn::{DatagramFlow, FlowDialer, IpNet, Vpn, VpnOptions};

/// The routed range of the fake cluster.
fn routed() -> IpNet {
    "10.200.0.0/16".parse().unwrap()
}

/// An address in the routed range.
fn cluster(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 200, 0, 1), port))
}

const ECHO: u16 = 7;
/// Reads until EOF, then answers `received <n> bytes` and closes.
const REPLY_AFTER_EOF: u16 = 9;
/// Resets the connection after reading something.
const RESETS: u16 = 11;
/// Sends a greeting and closes its sending side, then reports what it receives.
const SPEAKS_FIRST: u16 = 13;
/// UDP: answers any datagram with [`BIG_REPLY_LEN`] bytes.
const BIG_REPLY: u16 = 19;
const BIG_REPLY_LEN: usize = 6000;
/// Not mapped: the fake cluster refuses it.
const REFUSED: u16 = 81;

/// Fails a test that hangs instead of letting it run forever (not a speed threshold:
/// every step has seconds of slack).
async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(180), fut)
        .await
        .expect("the test hung")
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The fake cluster's dialer: routed destinations → local servers.
#[derive(Clone)]
struct FakeCluster {
    tcp: Arc<HashMap<SocketAddr, SocketAddr>>,
    udp: Arc<HashMap<SocketAddr, SocketAddr>>,
}

/// What the [`SPEAKS_FIRST`] server received after it closed its side.
type Heard = mpsc::UnboundedReceiver<Vec<u8>>;

fn refused(dst: SocketAddr, reason: String) -> Error {
    Error::Connect {
        host: dst.ip().to_string(),
        port: dst.port(),
        reason,
    }
}

impl FlowDialer for FakeCluster {
    type Tcp = TcpStream;
    type Udp = FakeUdp;

    async fn tcp(&self, dst: SocketAddr) -> Result<TcpStream> {
        let to = self
            .tcp
            .get(&dst)
            .ok_or_else(|| refused(dst, "nothing listens there".into()))?;
        TcpStream::connect(to)
            .await
            .map_err(|e| refused(dst, e.to_string()))
    }

    async fn udp(&self, dst: SocketAddr) -> Result<FakeUdp> {
        let to = self
            .udp
            .get(&dst)
            .ok_or_else(|| refused(dst, "no UDP relay".into()))?;
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| refused(dst, e.to_string()))?;
        socket
            .connect(to)
            .await
            .map_err(|e| refused(dst, e.to_string()))?;
        Ok(FakeUdp(socket))
    }
}

struct FakeUdp(UdpSocket);

impl DatagramFlow for FakeUdp {
    async fn send(&self, datagram: &[u8]) -> Result<()> {
        self.0
            .send(datagram)
            .await
            .map(drop)
            .map_err(|e| Error::TunnelDown {
                reason: e.to_string(),
            })
    }

    async fn recv(&self) -> Result<Bytes> {
        let mut buf = vec![0; 65536];
        let n = self.0.recv(&mut buf).await.map_err(|e| Error::TunnelDown {
            reason: e.to_string(),
        })?;
        buf.truncate(n);
        Ok(buf.into())
    }
}

async fn listen(serve: impl Fn(TcpStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            serve(stream);
        }
    });
    addr
}

/// Starts the fake cluster's servers (on the current namespace's loopback).
async fn fake_cluster() -> (FakeCluster, Heard) {
    let echo = listen(|mut s| {
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    })
    .await;
    let reply_after_eof = listen(|mut s| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            let reply = format!("received {} bytes", got.len());
            s.write_all(reply.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
        });
    })
    .await;
    let resets = listen(|mut s| {
        tokio::spawn(async move {
            let mut buf = [0; 16];
            let _ = s.read(&mut buf).await;
            // Closing with a zero linger time sends a reset.
            s.set_zero_linger().unwrap();
            drop(s);
        });
    })
    .await;
    let (heard_tx, heard) = mpsc::unbounded_channel();
    let speaks_first = listen(move |mut s| {
        let heard_tx = heard_tx.clone();
        tokio::spawn(async move {
            s.write_all(b"hello from the cluster").await.unwrap();
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            let _ = heard_tx.send(got);
        });
    })
    .await;

    let udp_echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_echo_addr = udp_echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0; 65536];
        while let Ok((n, peer)) = udp_echo.recv_from(&mut buf).await {
            let _ = udp_echo.send_to(&buf[..n], peer).await;
        }
    });
    let udp_big = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_big_addr = udp_big.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0; 65536];
        let reply = pattern(1, BIG_REPLY_LEN);
        while let Ok((_, peer)) = udp_big.recv_from(&mut buf).await {
            let _ = udp_big.send_to(&reply, peer).await;
        }
    });

    let tcp = HashMap::from([
        (cluster(ECHO), echo),
        (cluster(REPLY_AFTER_EOF), reply_after_eof),
        (cluster(RESETS), resets),
        (cluster(SPEAKS_FIRST), speaks_first),
    ]);
    let udp = HashMap::from([
        (cluster(ECHO), udp_echo_addr),
        (cluster(BIG_REPLY), udp_big_addr),
    ]);
    (
        FakeCluster {
            tcp: Arc::new(tcp),
            udp: Arc::new(udp),
        },
        heard,
    )
}

/// `len` bytes of a sequence that differs for every `seed` and every position (a
/// misplaced or repeated block would not match).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

async fn start(opts: VpnOptions, routes: &[IpNet], dialer: FakeCluster) -> Vpn {
    Vpn::start(&opts, routes, dialer, CancellationToken::new())
        .await
        .expect("start the VPN")
}

#[test]
fn tcp_echo_goes_through_the_stack_and_back() {
    init_tracing();
    let ns = Netns::new();
    ns.block_on(|| {
        bounded(async {
            let (dialer, _) = fake_cluster().await;
            let vpn = start(VpnOptions::new(), &[routed()], dialer).await;
            assert!(vpn.name().starts_with("kt"), "{}", vpn.name());
            assert!(vpn.index() > 0);
            assert_eq!(vpn.address(), Ipv4Addr::new(198, 18, 0, 1));

            let mut c = TcpStream::connect(cluster(ECHO)).await.unwrap();
            assert_eq!(c.local_addr().unwrap().ip(), vpn.address());
            c.write_all(b"ping over the tun").await.unwrap();
            let mut buf = [0; 17];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping over the tun");
            c.shutdown().await.unwrap();
            assert_eq!(c.read(&mut buf).await.unwrap(), 0, "the echo's EOF");
            vpn.stop().await;
        })
    });
}

/// Sends 64 MiB to the echo server while reading it back, and compares every byte.
async fn big_echo(mtu: u16) {
    const LEN: usize = 64 << 20;
    let (dialer, _) = fake_cluster().await;
    let vpn = start(VpnOptions::new().mtu(mtu), &[routed()], dialer).await;
    let sent = Arc::new(pattern(u64::from(mtu), LEN));
    let c = TcpStream::connect(cluster(ECHO)).await.unwrap();
    let (mut r, mut w) = c.into_split();
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        })
    };
    let mut back = Vec::with_capacity(LEN);
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), LEN);
    assert!(back == *sent, "the echoed bytes differ from the sent ones");
    vpn.stop().await;
}

#[test]
fn sixty_four_mib_echo_arrives_intact_at_mtu_1500() {
    init_tracing();
    let ns = Netns::new();
    ns.block_on(|| bounded(big_echo(1500)));
}

#[test]
fn sixty_four_mib_echo_arrives_intact_at_mtu_1280() {
    init_tracing();
    let ns = Netns::new();
    ns.block_on(|| bounded(big_echo(1280)));
    // (the device really had that MTU: checked in `the_device_gets_its_name_mtu_and_routes`)
}

#[test]
fn a_client_that_stops_sending_still_gets_the_reply() {
    init_tracing();
    let ns = Netns::new();
    ns.block_on(|| {
        bounded(async {
            let (dialer, _) = fake_cluster().await;
            let vpn = start(VpnOptions::new(), &[routed()], dialer).await;
            let mut c = TcpStream::connect(cluster(REPLY_AFTER_EOF)).await.unwrap();
            c.write_all(&[7; 100_000]).await.unwrap();
            c.shutdown().await.unwrap();
            let mut reply = String::new();
            c.read_to_string(&mut reply).await.unwrap();
            assert_eq!(reply, "received 100000 bytes");
            vpn.stop().await;
        })
    });
}

#[test]
fn a_server_that_stops_sending_still_gets_the_clients_data() {
    init_tracing();
    let ns = Netns::new();
    ns.block_on(|| {
        bounded(async {
            let (dialer, mut heard) = fake_cluster().await;
            let vpn = start(VpnOptions::new(), &[routed()], dialer).await;
            let mut c = TcpStream::connect(cluster(SPEAKS_FIRST)).await.unwrap();
            let mut greeting = String::new();
            c.read_to_string(&mut greeting).await.unwrap();
            assert_eq!(greeting, "hello from the cluster");
            // The server's side is closed; ours is not.
            c.write_all(b"and this came after your FIN").await.unwrap();
            c.shutdown().await.unwrap();
            assert_eq!(heard.recv().await.unwrap(), b"and this came after your FIN");
            vpn.stop().await;
        })
    });
}

#[test]
fn a_destination_the_cluster_refuses_is_refused_locally() {
    init_tracing();
    let ns = Netns::new();
    ns.block_on(|| {
        bounded(async {
            let (dialer, _) = fake_cluster().await;
            let vpn = start(VpnOptions::new(), &[routed()], dialer).await;
            let err = TcpStream::connect(cluster(REFUSED)).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
            // The stack is still fine afterwards.
            let mut c = TcpStream::connect(cluster(ECHO)).await.unwrap();
            c.write_all(b"x").await.unwrap();
            let mut b = [0; 1];
            c.read_exact(&mut b).await.unwrap();
            vpn.stop().await;
        })
    });
}

#[test]
fn a_reset_in_the_cluster_resets_the_local_connection() {
    init_tracing();
    let ns = Netns::new();
    ns.block_on(|| {
        bounded(async {
            let (dialer, _) = fake_cluster().await;
            let vpn = start(VpnOptions::new(), &[routed()], dialer).await;
            let mut c = TcpStream::connect(cluster(RESETS)).await.unwrap();
            c.write_all(b"anything").await.unwrap();
            let mut buf = [0; 16];
            let err = c.read(&mut buf).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
            vpn.stop().await;
        })
    });
}

#[test]
fn udp_datagrams_go_both_ways_and_long_replies_are_fragmented() {
    init_tracing();
    let ns = Netns::new();
    ns.block_on(|| {
        bounded(async {
            let (dialer, _) = fake_cluster().await;
            let vpn = start(VpnOptions::new().mtu(1280), &[routed()], dialer).await;
            let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
            socket.connect(cluster(ECHO)).await.unwrap();
            let mut buf = vec![0; 65536];
            for i in 0..5u8 {
                let datagram = pattern(u64::from(i), 1000);
                socket.send(&datagram).await.unwrap();
                let n = socket.recv(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], &datagram[..]);
            }

            let big = UdpSocket::bind("0.0.0.0:0").await.unwrap();
            big.connect(cluster(BIG_REPLY)).await.unwrap();
            big.send(b"give me a lot").await.unwrap();
            let n = big.recv(&mut buf).await.unwrap();
            assert_eq!(n, BIG_REPLY_LEN);
            assert_eq!(&buf[..n], &pattern(1, BIG_REPLY_LEN)[..]);
            vpn.stop().await;
        })
    });
}

#[test]
fn a_udp_flow_the_cluster_cannot_open_is_reported_unreachable() {
    init_tracing();
    let ns = Netns::new();
    ns.block_on(|| {
        bounded(async {
            let (dialer, _) = fake_cluster().await;
            let vpn = start(VpnOptions::new(), &[routed()], dialer).await;
            let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
            socket.connect(cluster(REFUSED)).await.unwrap();
            socket.send(b"anyone?").await.unwrap();
            let mut buf = [0; 16];
            let err = socket.recv(&mut buf).await.unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(nix::errno::Errno::EHOSTUNREACH as i32),
                "{err}"
            );
            vpn.stop().await;
        })
    });
}

#[test]
fn ping_to_a_routed_address_fails_at_once_as_prohibited() {
    init_tracing();
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.block_on(|| {
        bounded(async move {
            let (dialer, _) = fake_cluster().await;
            let routes = [routed(), "fd00:200::/64".parse().unwrap()];
            let vpn = start(VpnOptions::new(), &routes, dialer).await;
            // An IPv6 source address for the kernel to use (kt itself gives the device
            // an IPv4 address only).
            let added = tokio::process::Command::new("ip")
                .args([
                    "-n",
                    &name,
                    "addr",
                    "add",
                    "fd00:198::1/128",
                    "dev",
                    vpn.name(),
                    "nodad",
                ])
                .status()
                .await
                .unwrap();
            assert!(added.success());

            for (family, target, says) in [
                ("-4", "10.200.0.7", "Packet filtered"),
                ("-6", "fd00:200::7", "Administratively prohibited"),
            ] {
                let out = tokio::process::Command::new("ip")
                    .args(["netns", "exec", &name, "ping", family, "-c1", "-W3", target])
                    .output()
                    .await
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(!out.status.success(), "ping {target} succeeded: {stdout}");
                // The answer came: one error for the one request (a timeout would
                // say "0 received" and no error).
                assert!(stdout.contains(says), "ping {target}: {stdout}");
                assert!(stdout.contains("+1 errors"), "ping {target}: {stdout}");
            }
            vpn.stop().await;
        })
    });
}

#[test]
fn the_device_gets_its_name_mtu_and_routes() {
    init_tracing();
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.block_on(|| {
        bounded(async move {
            let (dialer, _) = fake_cluster().await;
            let routes = [routed(), "10.96.0.0/12".parse().unwrap()];
            let opts = VpnOptions::new()
                .tun_name("kttest7")
                .mtu(1280)
                .address(Ipv4Addr::new(198, 18, 0, 9));
            let vpn = start(opts, &routes, dialer).await;
            assert_eq!(vpn.name(), "kttest7");
            let ip = |args: &[&str]| {
                let out = Command::new("ip")
                    .args(["-n", &name])
                    .args(args)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let link = ip(&["-o", "link", "show", "kttest7"]);
            assert!(link.contains("mtu 1280"), "{link}");
            assert!(link.contains(",UP"), "{link}");
            let addr = ip(&["-o", "-4", "addr", "show", "kttest7"]);
            assert!(addr.contains("198.18.0.9/32"), "{addr}");
            let table = ip(&["route"]);
            assert!(table.contains("10.200.0.0/16 dev kttest7"), "{table}");
            assert!(table.contains("10.96.0.0/12 dev kttest7"), "{table}");
            vpn.stop().await;
        })
    });
}

#[test]
fn a_device_name_in_use_is_refused_clearly() {
    init_tracing();
    let ns = Netns::new();
    // A persistent tun device: opening it by name would attach to it.
    ns.ip(&["tuntap", "add", "dev", "ktbusy0", "mode", "tun"]);
    ns.block_on(|| {
        bounded(async {
            let (dialer, _) = fake_cluster().await;
            let opts = VpnOptions::new().tun_name("ktbusy0");
            let err = Vpn::start(&opts, &[routed()], dialer, CancellationToken::new())
                .await
                .err()
                .expect("the name is taken");
            assert!(
                matches!(&err, Error::Vpn { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
                "{err:?}"
            );
            assert!(err.to_string().contains("already exists"), "{err}");
        })
    });
}

#[test]
fn without_cap_net_admin_the_error_says_so() {
    init_tracing();
    let ns = Netns::new();
    ns.run(|| {
        // Capabilities are per thread: only this one loses CAP_NET_ADMIN.
        caps::drop(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_NET_ADMIN,
        )
        .expect("drop CAP_NET_ADMIN");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (dialer, _) = fake_cluster().await;
            let err = Vpn::start(
                &VpnOptions::new(),
                &[routed()],
                dialer,
                CancellationToken::new(),
            )
            .await
            .err()
            .expect("no CAP_NET_ADMIN");
            assert!(
                matches!(
                    &err,
                    Error::NeedsCapability {
                        capability: "CAP_NET_ADMIN",
                        ..
                    }
                ),
                "{err:?}"
            );
        });
    });
    assert!(!ns.ip(&["-o", "link"]).contains("kt"), "a device was left");
}

#[test]
fn stop_resets_connections_and_leaves_no_device_or_route() {
    init_tracing();
    let ns = Netns::new();
    let links = || ns.ip(&["-o", "link"]);
    let routes = || (ns.ip(&["-4", "route"]), ns.ip(&["-6", "route"]));
    let (links_before, routes_before) = (links(), routes());
    let during = ns.block_on(|| {
        bounded(async {
            let (dialer, _) = fake_cluster().await;
            let ranges = [routed(), "fd00:200::/64".parse().unwrap()];
            let vpn = start(VpnOptions::new(), &ranges, dialer).await;
            let during = (links(), routes());
            let mut c = TcpStream::connect(cluster(ECHO)).await.unwrap();
            c.write_all(b"x").await.unwrap();
            let mut b = [0; 1];
            c.read_exact(&mut b).await.unwrap();

            vpn.stop().await;
            let err = c.read(&mut b).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
            during
        })
    });
    assert_ne!(during.0, links_before, "the device was there while running");
    assert!(during.1.0.contains("10.200.0.0/16"), "{}", during.1.0);
    assert!(during.1.1.contains("fd00:200::/64"), "{}", during.1.1);
    assert_eq!(links(), links_before);
    assert_eq!(routes(), routes_before);
}

/// The environment variable naming the namespace for [`holds_a_device_until_killed`].
const HOLDER_NS: &str = "KT_TEST_HOLDER_NETNS";

/// Not a test on its own: the process that [`a_killed_process_leaves_no_device`] kills.
/// Starts a VPN in the namespace named by [`HOLDER_NS`], prints its device, and waits.
#[test]
#[ignore = "helper process of a_killed_process_leaves_no_device"]
fn holds_a_device_until_killed() {
    let Ok(name) = std::env::var(HOLDER_NS) else {
        return;
    };
    netns::enter(&name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (dialer, _) = fake_cluster().await;
        let vpn = start(VpnOptions::new(), &[routed()], dialer).await;
        println!("DEVICE {}", vpn.name());
        std::future::pending::<()>().await;
    });
}

#[test]
fn a_killed_process_leaves_no_device() {
    let ns = Netns::new();
    let (links_before, routes_before) = (ns.ip(&["-o", "link"]), ns.ip(&["route"]));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "vpn::stack::tests::holds_a_device_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER_NS, &ns.name)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // libtest prints the test's name first, on the same line.
        let device = stdout
            .lines()
            .map_while(std::result::Result::ok)
            .find_map(|l| l.split_once("DEVICE ").map(|(_, d)| d.trim().to_owned()));
        let _ = tx.send(device);
    });
    let device = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Some(device)) => device,
        outcome => {
            let _ = child.kill();
            panic!("the helper made no device: {outcome:?}");
        }
    };
    assert!(ns.ip(&["-o", "link"]).contains(&device));
    assert!(ns.ip(&["route"]).contains(&format!("dev {device}")));

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(ns.ip(&["-o", "link"]), links_before);
    assert_eq!(ns.ip(&["route"]), routes_before);
}
