//! Component tests of the proxies' authentication with real clients: curl (and a
//! byte-level SOCKS5 client where the exact replies matter) through both proxies, with
//! and without per-session credentials. The proxies' upstream is a direct TCP
//! connection to a local origin server instead of the tunnel (the lab tests in
//! `tests/outbound.rs` take the tunnel); every name leads to 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Output;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Connects straight to 127.0.0.1 (names) or the IP asked for.
#[derive(Clone)]
struct Direct;

impl Upstream for Direct {
    type Stream = TcpStream;

    async fn connect(&self, host: &str, port: u16) -> Result<TcpStream> {
        let ip = host.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        self.connect_ip(ip, port).await
    }

    async fn connect_ip(&self, ip: IpAddr, port: u16) -> Result<TcpStream> {
        TcpStream::connect((ip, port))
            .await
            .map_err(|e| Error::Connect {
                host: ip.to_string(),
                port,
                reason: e.to_string(),
            })
    }
}

/// A local HTTP origin whose every response body is the request head it received
/// (so a test sees which headers got through). Runs until `tasks` is cancelled.
async fn origin(tasks: &Tasks) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("binding the origin");
    let addr = listener.local_addr().expect("the origin's address");
    tasks.spawn(accept_loop(listener, tasks.clone(), |mut s| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n",
            head.len()
        );
        let _ = s.write_all(reply.as_bytes()).await;
        let _ = s.write_all(&head).await;
        let _ = s.shutdown().await;
    }));
    addr
}

/// Proxies (with `credentials`) in front of a fresh origin; the origin's URL.
async fn setup(credentials: Option<ProxyCredentials>) -> (Tasks, Proxies, String) {
    let tasks = Tasks::new();
    let origin = origin(&tasks).await;
    let proxies = Proxies::start(&Direct, &tasks, 0, 0, credentials)
        .await
        .expect("starting the proxies");
    // A name, not 127.0.0.1: the proxies' NO_PROXY must not apply to it.
    let url = format!("http://origin.test:{}/hello", origin.port());
    (tasks, proxies, url)
}

/// curl `args`, with no proxy settings of the test's own environment, plus `env`.
async fn curl(args: &[&str], env: &BTreeMap<String, String>) -> Output {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("curl did not end")
        .expect("running curl (is it installed?)")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `url` through the proxy URL `proxy` (`--proxytunnel`: with CONNECT): the HTTP
/// status curl saw from the proxy or the origin, the CONNECT status, and the body.
async fn get(proxy: &str, tunnel: bool, url: &str) -> (String, Output) {
    let mut args = vec!["--proxy", proxy, "-w", "\n%{http_code} %{http_connect}"];
    if tunnel {
        args.push("--proxytunnel");
    }
    args.push(url);
    let out = curl(&args, &BTreeMap::new()).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let codes = stdout.lines().last().unwrap_or_default().to_owned();
    (codes, out)
}

/// The origin's echo of the request: `GET /hello` arrived.
fn reached_origin(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stdout).contains("GET /hello HTTP/1.1")
}

/// `user:password` of the proxies' credentials, out of their URL.
fn user_password(proxies: &Proxies) -> (String, String) {
    let url = proxies.http_url();
    let userinfo = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('@'))
        .map(|(userinfo, _)| userinfo.to_owned())
        .expect("the URL has credentials");
    let (user, password) = userinfo.split_once(':').expect("user:password");
    (user.to_owned(), password.to_owned())
}

/// The proxy URL `url` with `user:password` (or, when empty, no userinfo) in place
/// of its userinfo.
fn with_userinfo(url: &str, userinfo: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if userinfo.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{userinfo}@{host}")
    }
}

#[tokio::test]
async fn the_http_proxy_with_credentials_answers_407_without_them_and_serves_with_them() {
    let (tasks, proxies, url) = setup(Some(ProxyCredentials::generate())).await;
    let (user, password) = user_password(&proxies);
    let good = proxies.http_url();
    assert_eq!(good, format!("http://{user}:{password}@{}", proxies.http));
    for (what, proxy) in [
        ("no credentials", with_userinfo(&good, "")),
        (
            "a wrong password",
            with_userinfo(&good, &format!("{user}:x{password}")),
        ),
        (
            "a wrong user",
            with_userinfo(&good, &format!("x{user}:{password}")),
        ),
    ] {
        // A plain request: the proxy's own 407 comes back, the origin sees nothing.
        let (codes, out) = get(&proxy, false, &url).await;
        assert_eq!(codes, "407 000", "plain, {what}: {}", text(&out));
        assert!(!reached_origin(&out), "plain, {what}: {}", text(&out));
        // CONNECT: refused with 407, no tunnel.
        let (codes, out) = get(&proxy, true, &url).await;
        assert!(codes.ends_with(" 407"), "CONNECT, {what}: {}", text(&out));
        assert!(!out.status.success(), "CONNECT, {what}: {}", text(&out));
        assert!(!reached_origin(&out), "CONNECT, {what}: {}", text(&out));
    }
    // The 407 carries the Basic challenge (what makes clients send credentials).
    let out = curl(
        &["-i", "--proxy", &with_userinfo(&good, ""), &url],
        &BTreeMap::new(),
    )
    .await;
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 407") && head.contains("proxy-authenticate: basic realm=\"kt\""),
        "{}",
        text(&out)
    );
    // With the credentials both forms reach the origin, and the origin never sees
    // them.
    for tunnel in [false, true] {
        let (codes, out) = get(&good, tunnel, &url).await;
        let expected = if tunnel { "200 200" } else { "200 000" };
        assert_eq!(codes, expected, "tunnel {tunnel}: {}", text(&out));
        assert!(reached_origin(&out), "tunnel {tunnel}: {}", text(&out));
        let seen = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            !seen.contains("proxy-authorization") && !seen.contains(&password.to_lowercase()),
            "the origin saw the credentials: {seen}"
        );
    }
    tasks.cancel.cancel();
}

#[tokio::test]
async fn the_socks5_proxy_with_credentials_refuses_curl_without_them_and_serves_with_them() {
    let (tasks, proxies, url) = setup(Some(ProxyCredentials::generate())).await;
    let (user, password) = user_password(&proxies);
    let good = proxies.socks5_url();
    assert_eq!(
        good,
        format!("socks5h://{user}:{password}@{}", proxies.socks5)
    );
    for (what, proxy) in [
        ("no credentials", with_userinfo(&good, "")),
        (
            "a wrong password",
            with_userinfo(&good, &format!("{user}:x{password}")),
        ),
    ] {
        let (_, out) = get(&proxy, false, &url).await;
        assert!(!out.status.success(), "{what}: {}", text(&out));
        assert!(!reached_origin(&out), "{what}: {}", text(&out));
    }
    let (codes, out) = get(&good, false, &url).await;
    assert_eq!(codes, "200 000", "{}", text(&out));
    assert!(reached_origin(&out), "{}", text(&out));
    tasks.cancel.cancel();
}

/// Reads exactly `N` bytes.
async fn read_n<const N: usize>(s: &mut TcpStream) -> [u8; N] {
    let mut b = [0u8; N];
    s.read_exact(&mut b).await.expect("a reply from the proxy");
    b
}

/// Whether the proxy closed the connection (nothing more to read).
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b).await, Ok(0) | Err(_))
}

#[tokio::test]
async fn the_socks5_proxy_with_credentials_gives_the_rfc_replies() {
    let (tasks, proxies, _) = setup(Some(ProxyCredentials::generate())).await;
    let (user, password) = user_password(&proxies);

    // Only "no authentication" offered: "no acceptable methods", then closed.
    let mut s = TcpStream::connect(proxies.socks5).await.expect("connect");
    s.write_all(&[5, 1, 0]).await.expect("greeting");
    assert_eq!(read_n::<2>(&mut s).await, [5, 0xff]);
    assert!(closed(&mut s).await);

    // Username/password offered (after "no authentication"): chosen; a wrong
    // password gets a failure status (RFC 1929), then closed.
    let mut s = TcpStream::connect(proxies.socks5).await.expect("connect");
    s.write_all(&[5, 2, 0, 2]).await.expect("greeting");
    assert_eq!(read_n::<2>(&mut s).await, [5, 2]);
    let mut auth = vec![1, u8::try_from(user.len()).expect("short")];
    auth.extend_from_slice(user.as_bytes());
    auth.push(5);
    auth.extend_from_slice(b"wrong");
    s.write_all(&auth).await.expect("credentials");
    let [version, status] = read_n::<2>(&mut s).await;
    assert_eq!(version, 1);
    assert_ne!(status, 0);
    assert!(closed(&mut s).await);

    // The right ones: success status, and the connection goes on to the request.
    let mut s = TcpStream::connect(proxies.socks5).await.expect("connect");
    s.write_all(&[5, 1, 2]).await.expect("greeting");
    assert_eq!(read_n::<2>(&mut s).await, [5, 2]);
    let mut auth = vec![1, u8::try_from(user.len()).expect("short")];
    auth.extend_from_slice(user.as_bytes());
    auth.push(u8::try_from(password.len()).expect("short"));
    auth.extend_from_slice(password.as_bytes());
    s.write_all(&auth).await.expect("credentials");
    assert_eq!(read_n::<2>(&mut s).await, [1, 0]);
    tasks.cancel.cancel();
}

#[tokio::test]
async fn programs_given_env_with_credentials_go_through_both_proxies() {
    let (tasks, proxies, url) = setup(Some(ProxyCredentials::generate())).await;
    let env = proxies.env();
    let (user, password) = user_password(&proxies);
    let userinfo = format!("{user}:{password}@");
    for var in ["HTTP_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        assert!(env[var].contains(&userinfo), "{var}={}", env[var]);
    }
    // HTTP_PROXY (plain), HTTPS_PROXY-style CONNECT, and ALL_PROXY (SOCKS5) alone.
    for (what, keep, extra) in [
        ("HTTP_PROXY", "http_proxy", &[][..]),
        (
            "HTTP_PROXY with CONNECT",
            "http_proxy",
            &["--proxytunnel"][..],
        ),
        ("ALL_PROXY", "ALL_PROXY", &[][..]),
    ] {
        let only: BTreeMap<String, String> = env
            .iter()
            .filter(|(k, _)| *k == keep || k.eq_ignore_ascii_case("no_proxy"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut args = extra.to_vec();
        args.push(&url);
        let out = curl(&args, &only).await;
        assert!(
            out.status.success() && reached_origin(&out),
            "{what}: {}",
            text(&out)
        );
    }
    tasks.cancel.cancel();
}

#[tokio::test]
async fn without_credentials_the_proxies_serve_every_client_as_before() {
    let (tasks, proxies, url) = setup(None).await;
    assert_eq!(proxies.http_url(), format!("http://{}", proxies.http));
    assert_eq!(
        proxies.socks5_url(),
        format!("socks5h://{}", proxies.socks5)
    );
    assert!(!proxies.env().values().any(|v| v.contains('@')));
    for (proxy, tunnel) in [
        (proxies.http_url(), false),
        (proxies.http_url(), true),
        (proxies.socks5_url(), false),
        // Credentials a client sends anyway change nothing.
        (with_userinfo(&proxies.http_url(), "a:b"), false),
        (with_userinfo(&proxies.socks5_url(), "a:b"), false),
    ] {
        let (codes, out) = get(&proxy, tunnel, &url).await;
        assert!(
            codes.starts_with("200 "),
            "{proxy} {tunnel}: {}",
            text(&out)
        );
        assert!(reached_origin(&out), "{proxy} {tunnel}: {}", text(&out));
    }
    // "No authentication" is chosen, as always.
    let mut s = TcpStream::connect(proxies.socks5).await.expect("connect");
    s.write_all(&[5, 1, 0]).await.expect("greeting");
    assert_eq!(read_n::<2>(&mut s).await, [5, 0]);
    tasks.cancel.cancel();
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn refusals_are_logged_without_any_password() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // This thread only: the test's runtime (and so the proxies' tasks) runs on it.
    let _default = tracing::subscriber::set_default(subscriber);
    let (tasks, proxies, url) = setup(Some(ProxyCredentials::generate())).await;
    let (user, password) = user_password(&proxies);
    let wrong = format!("{user}:not-{password}");
    for proxy in [proxies.http_url(), proxies.socks5_url()] {
        for tunnel in [false, true] {
            let _ = get(&with_userinfo(&proxy, &wrong), tunnel, &url).await;
            let _ = get(&proxy, tunnel, &url).await;
        }
    }
    tasks.cancel.cancel();
    let logs = captured.text();
    assert!(
        logs.contains("HTTP proxy: refused") && logs.contains("SOCKS5: refused"),
        "{logs}"
    );
    assert!(!logs.contains(&password), "{logs}");
}

#[test]
fn debug_of_the_proxies_never_shows_the_password() {
    let proxies = Proxies {
        socks5: SocketAddr::from((Ipv4Addr::LOCALHOST, 1080)),
        http: SocketAddr::from((Ipv4Addr::LOCALHOST, 3128)),
        credentials: Some(Arc::new(ProxyCredentials::generate())),
    };
    let (_, password) = user_password(&proxies);
    let shown = format!("{proxies:?}");
    assert!(!shown.contains(&password), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
}
