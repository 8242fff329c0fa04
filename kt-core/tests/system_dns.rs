//! System DNS pieces on loopback, no lab: the local DNS server queried with the real
//! `dig` over UDP and TCP (cluster names from a fake cluster resolver, other names
//! forwarded to a fake upstream), and the resolv.conf installer with its restore
//! record (normal restore, recovery after a simulated crash, and no recovery of a
//! record about another file than the one the path names here, as for a record
//! written in another network namespace). The server's source allow-list is proven
//! with sockets bound to other loopback addresses (127.0.0.2 may ask, 127.0.0.3 may
//! not). Never touches the machine's /etc/resolv.conf: every file is in a temporary
//! directory.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use kt_core::{ClusterResolver, DnsServer, DnsServerConfig, Error, ResolvConf};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// A cluster of a map from absolute names (without the trailing dot) to addresses,
/// remembering every name it was asked.
struct FakeCluster {
    names: HashMap<String, Vec<IpAddr>>,
    asked: Mutex<Vec<String>>,
}

impl FakeCluster {
    fn new(names: HashMap<String, Vec<IpAddr>>) -> FakeCluster {
        FakeCluster {
            names,
            asked: Mutex::new(Vec::new()),
        }
    }
}

impl ClusterResolver for FakeCluster {
    async fn resolve(&self, name: &str) -> kt_core::Result<Vec<IpAddr>> {
        self.asked.lock().unwrap().push(name.to_owned());
        let absolute = name
            .strip_suffix('.')
            .unwrap_or_else(|| panic!("the server asked for `{name}`, a relative name"));
        self.names
            .get(absolute)
            .cloned()
            .ok_or_else(|| Error::NameNotFound {
                name: name.to_owned(),
                tried: vec![name.to_owned()],
            })
    }
}

const OUTSIDE_IP: &str = "203.0.113.7";

/// A UDP DNS responder: `outside.example.com`, `outside.com` and `web.dev` A →
/// 203.0.113.7; `nodata.dev` exists with no A record (`NOERROR`, no answer); names
/// under `refused` are `REFUSED` (as a resolver serving only its own zones answers);
/// anything else NXDOMAIN.
async fn fake_upstream() -> Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
            reply.add_queries(query.queries.iter().cloned());
            match query.queries.first() {
                Some(q) if q.name().to_ascii() == "nodata.dev." => {}
                Some(q) if q.name().to_ascii().ends_with(".refused.") => {
                    reply.metadata.response_code = ResponseCode::Refused;
                }
                Some(q)
                    if ["outside.example.com.", "outside.com.", "web.dev."]
                        .contains(&q.name().to_ascii().as_str())
                        && q.query_type() == RecordType::A =>
                {
                    reply.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(OUTSIDE_IP.parse().unwrap())),
                    ));
                }
                _ => reply.metadata.response_code = ResponseCode::NXDomain,
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    Ok(addr)
}

/// `dig` output: (status, answer IPs).
async fn dig(server: SocketAddr, name: &str, rtype: &str, tcp: bool) -> Result<(String, String)> {
    let mut cmd = tokio::process::Command::new("dig");
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+time=3", "+tries=1", "+noall", "+comments", "+answer"]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd
        .arg(name)
        .arg(rtype)
        .output()
        .await
        .context("running dig")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NONE")
        .to_owned();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last())
        .collect::<Vec<_>>()
        .join(" ");
    Ok((status, answers))
}

#[tokio::test(flavor = "multi_thread")]
async fn local_dns_server_answers_cluster_names_and_forwards_the_rest() -> Result<()> {
    let upstream = fake_upstream().await?;
    let cluster = FakeCluster::new(HashMap::from([
        (
            "echo.dev.svc.cluster.local".to_owned(),
            vec!["10.96.0.10".parse()?, "fd00::10".parse()?],
        ),
        (
            "web.other.svc.cluster.local".to_owned(),
            vec!["10.96.0.20".parse()?],
        ),
    ]));
    let server = DnsServer::start(
        DnsServerConfig::new("127.0.0.1:0".parse()?, upstream).namespace("dev"),
        Arc::new(cluster),
    )
    .await?;
    let addr = server.local_addr();
    for tcp in [false, true] {
        let cases = [
            ("echo.dev.svc.cluster.local", "A", "NOERROR", "10.96.0.10"),
            ("echo.dev.svc.cluster.local", "AAAA", "NOERROR", "fd00::10"),
            ("echo", "A", "NOERROR", "10.96.0.10"),
            ("web.other", "A", "NOERROR", "10.96.0.20"),
            ("web.other.svc", "A", "NOERROR", "10.96.0.20"),
            ("outside.example.com", "A", "NOERROR", OUTSIDE_IP),
            ("nothere.dev.svc.cluster.local", "A", "NXDOMAIN", ""),
            ("nothere.example.com", "A", "NXDOMAIN", ""),
            // A short name the cluster does not know goes to the upstream.
            ("nothere", "A", "NXDOMAIN", ""),
        ];
        for (name, rtype, status, answer) in cases {
            let (got_status, got) = dig(addr, name, rtype, tcp).await?;
            ensure!(
                got_status == status && got == answer,
                "{name} {rtype} (tcp {tcp}): got {got_status} [{got}], want {status} [{answer}]"
            );
        }
    }
    // Garbage does not kill the server.
    let probe = UdpSocket::bind("127.0.0.1:0").await?;
    probe
        .send_to(b"\x01\x02garbage-that-is-not-dns", addr)
        .await?;
    probe.send_to(b"x", addr).await?;
    let (status, got) = dig(addr, "echo", "A", false).await?;
    ensure!(
        status == "NOERROR" && got == "10.96.0.10",
        "after garbage: {status} {got}"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_servfail() -> Result<()> {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await?;
    let mut config = DnsServerConfig::new("127.0.0.1:0".parse()?, silent.local_addr()?);
    config.upstream_timeout = Duration::from_millis(300);
    let server = DnsServer::start(config, Arc::new(FakeCluster::new(HashMap::new()))).await?;
    let (status, _) = dig(server.local_addr(), "outside.example.com", "A", false).await?;
    ensure!(status == "SERVFAIL", "got {status}");
    Ok(())
}

/// An `A` query for `name` with message id `id`.
fn a_query(id: u16, name: &str) -> Result<Vec<u8>> {
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(query.to_vec()?)
}

/// The `A` addresses of a DNS answer, after checking its id.
fn a_answers(reply: &[u8], id: u16) -> Result<Vec<String>> {
    let reply = Message::from_vec(reply)?;
    ensure!(
        reply.metadata.id == id,
        "answer to query {}, not {id}",
        reply.metadata.id
    );
    Ok(reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect())
}

/// A TCP connection to `server` from `source`.
async fn tcp_from(source: &str, server: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    Ok(socket.connect(server).await?)
}

/// Reads one length-prefixed DNS message from a TCP stream.
async fn read_tcp_message(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut message = vec![0u8; usize::from(len)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// Waits until the server has dropped `n` queries (it has decided about them: no
/// answer will ever come). The guard only keeps a broken server from hanging the test.
async fn wait_dropped(server: &DnsServer, n: u64) -> Result<()> {
    let guard = tokio::time::timeout(Duration::from_secs(60), async {
        while server.dropped() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    if guard.await.is_err() {
        bail!("the server dropped {} queries, not {n}", server.dropped());
    }
    ensure!(
        server.dropped() == n,
        "dropped {}, want {n}",
        server.dropped()
    );
    Ok(())
}

/// A query from a source outside the allow-list gets nothing back at all (not even
/// `REFUSED`), over UDP and TCP, while one from an allowed source is answered; the
/// default allow-list is loopback.
#[tokio::test(flavor = "multi_thread")]
async fn only_allowed_sources_get_answers() -> Result<()> {
    let upstream = fake_upstream().await?;
    let cluster = FakeCluster::new(HashMap::from([(
        "echo.dev.svc.cluster.local".to_owned(),
        vec!["10.96.0.10".parse()?],
    )]));
    let mut config = DnsServerConfig::new("127.0.0.1:0".parse()?, upstream).namespace("dev");
    let default: Vec<String> = config
        .allowed_sources
        .iter()
        .map(ToString::to_string)
        .collect();
    ensure!(
        default == ["127.0.0.0/8", "::1/128"],
        "default allow-list {default:?}"
    );
    // 127.0.0.3 stands for a neighbour: a source of its own, not in the list.
    config.allowed_sources = vec!["127.0.0.2/32".parse()?];
    let server = DnsServer::start(config, Arc::new(cluster)).await?;
    let addr = server.local_addr();
    let name = "echo.dev.svc.cluster.local.";
    let want = vec!["10.96.0.10".to_owned()];

    // UDP: the neighbour asks first; the allowed source's answer comes back.
    let neighbour = UdpSocket::bind("127.0.0.3:0").await?;
    neighbour.send_to(&a_query(1, name)?, addr).await?;
    let allowed = UdpSocket::bind("127.0.0.2:0").await?;
    allowed.send_to(&a_query(2, name)?, addr).await?;
    let mut buf = vec![0u8; 4096];
    let (len, from) = tokio::time::timeout(Duration::from_secs(30), allowed.recv_from(&mut buf))
        .await
        .context("no answer for the allowed source")??;
    ensure!(from == addr, "answer from {from}");
    ensure!(
        a_answers(&buf[..len], 2)? == want,
        "allowed source's answer"
    );
    wait_dropped(&server, 1).await?;
    match neighbour.try_recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((len, from)) => bail!("the neighbour got {len} bytes from {from}"),
        Err(e) => bail!("the neighbour's socket: {e}"),
    }

    // TCP: the same, on connections from each source.
    let mut neighbour = tcp_from("127.0.0.3", addr).await?;
    let query = a_query(3, name)?;
    neighbour.write_u16(u16::try_from(query.len())?).await?;
    neighbour.write_all(&query).await?;
    let mut allowed = tcp_from("127.0.0.2", addr).await?;
    let query = a_query(4, name)?;
    allowed.write_u16(u16::try_from(query.len())?).await?;
    allowed.write_all(&query).await?;
    let reply = tokio::time::timeout(Duration::from_secs(30), read_tcp_message(&mut allowed))
        .await
        .context("no TCP answer for the allowed source")??;
    ensure!(a_answers(&reply, 4)? == want, "allowed source's TCP answer");
    wait_dropped(&server, 2).await?;
    match neighbour.try_read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(len) => bail!("the neighbour's TCP connection got {len} bytes"),
        Err(e) => bail!("the neighbour's TCP connection: {e}"),
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_label_outside_names_go_to_the_upstream_not_to_the_cluster() -> Result<()> {
    let upstream = fake_upstream().await?;
    // The cluster's DNS would answer `outside.com` itself, through its own upstream
    // (here with another address, as a split-horizon or corporate view would).
    let cluster = Arc::new(FakeCluster::new(HashMap::from([
        ("outside.com".to_owned(), vec!["10.0.0.99".parse()?]),
        (
            "web.other.svc.cluster.local".to_owned(),
            vec!["10.96.0.20".parse()?],
        ),
    ])));
    let server = DnsServer::start(
        DnsServerConfig::new("127.0.0.1:0".parse()?, upstream).namespace("dev"),
        Arc::clone(&cluster),
    )
    .await?;
    let (status, got) = dig(server.local_addr(), "outside.com", "A", false).await?;
    ensure!(
        status == "NOERROR" && got == OUTSIDE_IP,
        "outside.com: got {status} [{got}], want the upstream's {OUTSIDE_IP}"
    );
    // A two-label cluster name still resolves in the cluster.
    let (status, got) = dig(server.local_addr(), "web.other", "A", false).await?;
    ensure!(
        status == "NOERROR" && got == "10.96.0.20",
        "web.other: {status} [{got}]"
    );
    // The upstream knew `outside.com`: the cluster never heard of it, not even with
    // the search list appended.
    let asked = cluster.asked.lock().unwrap().clone();
    ensure!(
        asked == ["web.other.svc.cluster.local."],
        "the cluster was asked for more than `web.other`'s Service name: {asked:?}"
    );
    server.shutdown().await;
    Ok(())
}

/// A cluster that knows `<name>` as a Service in every namespace-ish place the old
/// search-list expansion would have tried.
fn shadowing_cluster() -> Result<Arc<FakeCluster>> {
    let mut names = HashMap::new();
    for name in [
        "web.dev",
        "nodata.dev",
        "www.example.com",
        "outside.example.com",
    ] {
        for suffix in [
            "dev.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ] {
            names.insert(format!("{name}.{suffix}"), vec!["10.96.0.66".parse()?]);
        }
    }
    Ok(Arc::new(FakeCluster::new(names)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_name_is_never_shadowed_nor_sent_to_the_cluster() -> Result<()> {
    let upstream = fake_upstream().await?;
    let cluster = shadowing_cluster()?;
    let server = DnsServer::start(
        DnsServerConfig::new("127.0.0.1:0".parse()?, upstream).namespace("dev"),
        Arc::clone(&cluster),
    )
    .await?;
    let addr = server.local_addr();
    let cases = [
        // A Service `web` in namespace `dev` must not answer the real `web.dev`.
        ("web.dev", "A", "NOERROR", OUTSIDE_IP),
        // The upstream knows the name but has no A record: not the cluster's either.
        ("nodata.dev", "A", "NOERROR", ""),
        // Three labels or more outside the cluster domain: the upstream only, even
        // when it does not know the name.
        ("www.example.com", "A", "NXDOMAIN", ""),
        ("outside.example.com", "A", "NOERROR", OUTSIDE_IP),
    ];
    for tcp in [false, true] {
        for (name, rtype, status, answer) in cases {
            let (got_status, got) = dig(addr, name, rtype, tcp).await?;
            ensure!(
                got_status == status && got == answer,
                "{name} {rtype} (tcp {tcp}): got {got_status} [{got}], want {status} [{answer}]"
            );
        }
    }
    let asked = cluster.asked.lock().unwrap().clone();
    ensure!(
        asked.is_empty(),
        "names the upstream answers were sent to the cluster: {asked:?}"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_names_still_resolve_and_svc_ns_only_when_the_upstream_has_none() -> Result<()> {
    let upstream = fake_upstream().await?;
    let cluster = Arc::new(FakeCluster::new(HashMap::from([
        (
            "echo.dev.svc.cluster.local".to_owned(),
            vec!["10.96.0.10".parse()?],
        ),
        (
            "wpad.dev.svc.cluster.local".to_owned(),
            vec!["10.96.0.11".parse()?],
        ),
        (
            "echo.other.svc.cluster.local".to_owned(),
            vec!["10.96.0.20".parse()?],
        ),
        (
            "echo.refused.svc.cluster.local".to_owned(),
            vec!["10.96.0.30".parse()?],
        ),
    ])));
    let server = DnsServer::start(
        DnsServerConfig::new("127.0.0.1:0".parse()?, upstream).namespace("dev"),
        Arc::clone(&cluster),
    )
    .await?;
    let addr = server.local_addr();
    let cases = [
        // Cluster FQDNs: the cluster only.
        ("echo.dev.svc.cluster.local", "NOERROR", "10.96.0.10"),
        ("nothere.dev.svc.cluster.local", "NXDOMAIN", ""),
        // Single labels: the cluster (with the search list), as the rule says.
        ("echo", "NOERROR", "10.96.0.10"),
        ("wpad", "NOERROR", "10.96.0.11"),
        // `svc.ns` the upstream does not know (NXDOMAIN, or REFUSED from a resolver
        // that serves only its own zones): the cluster's Service.
        ("echo.other", "NOERROR", "10.96.0.20"),
        ("echo.refused", "NOERROR", "10.96.0.30"),
        // Known nowhere: the upstream's NXDOMAIN.
        ("nothere.other", "NXDOMAIN", ""),
    ];
    for (name, status, answer) in cases {
        let (got_status, got) = dig(addr, name, "A", false).await?;
        ensure!(
            got_status == status && got == answer,
            "{name}: got {got_status} [{got}], want {status} [{answer}]"
        );
    }
    // A `svc.ns` name is asked as a Service name only, never with the search list.
    let asked = cluster.asked.lock().unwrap().clone();
    for (name, want) in [
        ("echo.other", "echo.other.svc.cluster.local."),
        ("nothere.other", "nothere.other.svc.cluster.local."),
    ] {
        let got: Vec<_> = asked
            .iter()
            .filter(|n| n.starts_with(&format!("{name}.")))
            .collect();
        ensure!(got == [want], "{name} was asked as {got:?}, want [{want}]");
    }
    server.shutdown().await;
    Ok(())
}

/// System paths under `dir`, with a resolv.conf holding [`ORIGINAL`].
fn paths_with_resolv_conf(dir: &std::path::Path) -> Result<kt_core::SystemPaths> {
    let paths = kt_core::SystemPaths::under(dir);
    let etc = paths
        .resolv_conf
        .parent()
        .context("resolv.conf has no directory")?;
    std::fs::create_dir_all(etc)?;
    std::fs::write(&paths.resolv_conf, ORIGINAL)?;
    Ok(paths)
}

fn temp_dir(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "kt-system-dns-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

const ORIGINAL: &str =
    "# from DHCP\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0 trust-ad\n\n";

#[test]
fn resolv_conf_install_and_restore_byte_exact() -> Result<()> {
    let dir = temp_dir("restore")?;
    let path = dir.join("resolv.conf");
    let records = dir.join("records");
    std::fs::write(&path, ORIGINAL)?;
    let search = [
        "dev.svc.cluster.local".to_owned(),
        "svc.cluster.local".to_owned(),
        "cluster.local".to_owned(),
    ];
    let guard = ResolvConf::install(&path, "127.0.0.53".parse()?, &search, &records)?;
    let installed = std::fs::read_to_string(&path)?;
    ensure!(
        installed.contains("nameserver 127.0.0.53\nnameserver 192.0.2.53\n"),
        "{installed}"
    );
    ensure!(
        installed.contains(
            "search dev.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
        ),
        "{installed}"
    );
    ensure!(
        installed.contains("options edns0 trust-ad\n"),
        "{installed}"
    );
    let record = std::fs::read_to_string(guard.record())?;
    let value: serde_json::Value = serde_json::from_str(&record)?;
    ensure!(value["original"] == ORIGINAL && value["pid"] == std::process::id());
    // Our own live record is not "recovered".
    ensure!(ResolvConf::recover(&path, &records)?.is_empty());
    guard.restore()?;
    ensure!(std::fs::read(&path)? == ORIGINAL.as_bytes());
    ensure!(
        std::fs::read_dir(&records)?.next().is_none(),
        "record left behind"
    );
    // Drop restores too.
    drop(ResolvConf::install(
        &path,
        "127.0.0.53".parse()?,
        &search,
        &records,
    )?);
    ensure!(std::fs::read(&path)? == ORIGINAL.as_bytes());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn resolv_conf_recovers_after_a_crash() -> Result<()> {
    let dir = temp_dir("crash")?;
    let path = dir.join("resolv.conf");
    let records = dir.join("records");
    std::fs::write(&path, ORIGINAL)?;
    let guard = ResolvConf::install(
        &path,
        "127.0.0.53".parse()?,
        &["svc.cluster.local".to_owned()],
        &records,
    )?;
    let record = guard.record().to_owned();
    std::mem::forget(guard); // the process "crashes": nothing restored
    ensure!(std::fs::read(&path)? != ORIGINAL.as_bytes());
    // Rewrite the record as if a dead process had written it.
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record)?)?;
    let dead = dead_pid()?;
    value["pid"] = dead.into();
    std::fs::write(&record, value.to_string())?;
    let restored = ResolvConf::recover(&path, &records)?;
    ensure!(restored == [path.clone()], "{restored:?}");
    ensure!(std::fs::read(&path)? == ORIGINAL.as_bytes());
    ensure!(!record.exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(unix)]
#[test]
fn resolv_conf_symlink_is_put_back() -> Result<()> {
    let dir = temp_dir("symlink")?;
    let target = dir.join("stub-resolv.conf");
    let path = dir.join("resolv.conf");
    std::fs::write(&target, ORIGINAL)?;
    std::os::unix::fs::symlink(&target, &path)?;
    let guard = ResolvConf::install(&path, "127.0.0.53".parse()?, &[], &dir.join("records"))?;
    ensure!(!std::fs::symlink_metadata(&path)?.file_type().is_symlink());
    ensure!(
        std::fs::read(&target)? == ORIGINAL.as_bytes(),
        "the stub file was changed"
    );
    guard.restore()?;
    ensure!(std::fs::read_link(&path)? == target);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Installs on `path`, then "crashes" (nothing restored) and makes the record look
/// like a dead process wrote it; returns the record.
fn install_and_crash(path: &std::path::Path, records: &std::path::Path) -> Result<PathBuf> {
    let guard = ResolvConf::install(
        path,
        "127.0.0.53".parse()?,
        &["svc.cluster.local".to_owned()],
        records,
    )?;
    let record = guard.record().to_owned();
    std::mem::forget(guard);
    edit_record(&record, |v| v["pid"] = dead_pid().unwrap().into())?;
    Ok(record)
}

fn edit_record(record: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) -> Result<()> {
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(record)?)?;
    f(&mut value);
    std::fs::write(record, value.to_string())?;
    Ok(())
}

#[test]
fn a_record_about_another_file_than_the_path_names_now_is_not_applied() -> Result<()> {
    let dir = temp_dir("identity")?;
    let path = dir.join("resolv.conf");
    let records = dir.join("records");
    std::fs::write(&path, ORIGINAL)?;
    let record = install_and_crash(&path, &records)?;
    // The path now names another file: what a process in another namespace sees at
    // /etc/resolv.conf (there, /etc/netns/<ns>/resolv.conf is mounted over it).
    const OTHER: &str = "nameserver 198.51.100.1\n";
    let other = dir.join("other");
    std::fs::write(&other, OTHER)?;
    std::fs::rename(&other, &path)?;
    ensure!(ResolvConf::recover(&path, &records)?.is_empty());
    let paths = {
        let mut p = kt_core::SystemPaths::under(&dir);
        p.record_dir = records.clone();
        p
    };
    ensure!(kt_core::recover_system_dns(&paths)?.is_empty());
    ensure!(
        std::fs::read_to_string(&path)? == OTHER,
        "another file was overwritten"
    );
    ensure!(
        record.exists(),
        "the record must stay for the process that sees its file"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(target_os = "linux")]
#[test]
fn a_record_without_a_file_identity_is_applied_only_in_its_own_namespaces() -> Result<()> {
    let dir = temp_dir("netns")?;
    let path = dir.join("resolv.conf");
    let records = dir.join("records");
    // No file: the record is first written with the parent directory's identity only
    // (a crash before the new file's identity is recorded looks like this).
    let record = install_and_crash(&path, &records)?;
    edit_record(&record, |v| {
        v["identity"]["file"] = serde_json::Value::Null;
        v["identity"]["net_ns"] = serde_json::json!([0, 1]);
    })?;
    ensure!(
        ResolvConf::recover(&path, &records)?.is_empty(),
        "applied from another network namespace"
    );
    ensure!(path.exists() && record.exists());
    let here = std::fs::metadata("/proc/self/ns/net")?;
    edit_record(&record, |v| {
        use std::os::unix::fs::MetadataExt as _;
        v["identity"]["net_ns"] = serde_json::json!([here.dev(), here.ino()]);
    })?;
    ensure!(ResolvConf::recover(&path, &records)? == std::slice::from_ref(&path));
    ensure!(!path.exists(), "the file kt created is removed again");
    ensure!(!record.exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn public_recover_restores_resolv_conf_and_reports_it() -> Result<()> {
    let dir = temp_dir("public-recover")?;
    let paths = paths_with_resolv_conf(&dir)?;
    install_and_crash(&paths.resolv_conf, &paths.record_dir)?;
    let done = kt_core::recover_system_dns(&paths)?;
    ensure!(
        done.len() == 1 && done[0].contains("resolv.conf"),
        "{done:?}"
    );
    ensure!(std::fs::read(&paths.resolv_conf)? == ORIGINAL.as_bytes());
    ensure!(
        kt_core::recover_system_dns(&paths)?.is_empty(),
        "a second recover has nothing to do"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(unix)]
#[test]
fn a_record_in_a_directory_others_can_write_is_not_applied() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir("group-writable")?;
    let paths = paths_with_resolv_conf(&dir)?;
    let record = install_and_crash(&paths.resolv_conf, &paths.record_dir)?;
    let installed = std::fs::read(&paths.resolv_conf)?;
    // Anyone in the directory's group could have written (or swapped) that record.
    std::fs::set_permissions(&paths.record_dir, std::fs::Permissions::from_mode(0o770))?;
    let err = kt_core::recover_system_dns(&paths)
        .err()
        .context("recovered from a group-writable directory")?;
    let shown = err.to_string();
    ensure!(
        shown.contains("writable by its group or others") && shown.contains("chmod 700"),
        "{shown}"
    );
    ensure!(std::fs::read(&paths.resolv_conf)? == installed && record.exists());
    // Fixed as the message says: recovered.
    std::fs::set_permissions(&paths.record_dir, std::fs::Permissions::from_mode(0o700))?;
    ensure!(kt_core::recover_system_dns(&paths)?.len() == 1);
    ensure!(std::fs::read(&paths.resolv_conf)? == ORIGINAL.as_bytes());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_record_naming_a_file_kt_does_not_change_is_never_applied() -> Result<()> {
    let dir = temp_dir("shadow")?;
    let paths = paths_with_resolv_conf(&dir)?;
    // Stands for /etc/shadow.
    let shadow = dir.join("etc/shadow");
    const SHADOW: &str = "root:$6$x:19000:0:99999:7:::\n";
    std::fs::write(&shadow, SHADOW)?;
    let record = install_and_crash(&paths.resolv_conf, &paths.record_dir)?;
    // The record rewritten to name that file (its identity too, so it matches there).
    let id = {
        let probe = dir.join("probe-records");
        let guard = ResolvConf::install(&shadow, "127.0.0.53".parse()?, &[], &probe)?;
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(guard.record())?)?;
        guard.restore()?;
        value["identity"].clone()
    };
    edit_record(&record, |v| {
        v["path"] = shadow.to_string_lossy().into();
        v["original"] = "root::0:0:::\n".into();
        v["identity"] = id;
    })?;
    ensure!(
        kt_core::recover_system_dns(&paths)?.is_empty(),
        "a record about another file was applied"
    );
    ensure!(std::fs::read_to_string(&shadow)? == SHADOW);
    ensure!(record.exists(), "left alone");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The pid of a process that has exited.
fn dead_pid() -> Result<u32> {
    let mut child = std::process::Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}
