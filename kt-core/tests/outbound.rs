//! Outbound access through a session, with each shadow flavour, as a ServiceAccount
//! bound to the shipped Role only: HTTP through the SOCKS5 and HTTP proxies by every
//! name form, a 64 MiB TCP echo through a local forward, DNS, a Service in another
//! namespace, 200 concurrent connections, recovery after the tunnel drops, and the
//! proxies with per-session credentials (`proxy_auth`) reached through `env()`'s URLs.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{Fixture, curl_echo, echo_round_trip};
use kt_core::{Error, Event, ShadowFlavour};
use kt_lab_tests::stream_pattern_fill;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A hang bound for bulk transfers, not a speed requirement.
const TRANSFER_BOUND: Duration = Duration::from_secs(600);

both_flavours!(http_reaches_echo_by_every_name_through_socks5_and_the_http_proxy);
async fn http_reaches_echo_by_every_name_through_socks5_and_the_http_proxy(
    flavour: ShadowFlavour,
) -> Result<()> {
    let f = Fixture::start("kt-http", flavour, 2).await?;
    let ns = f.ns.name().to_owned();
    let socks = format!("127.0.0.1:{}", f.session.socks5_addr().port());
    let http = format!("http://{}", f.session.http_proxy_addr());
    let pod_ip = f.echo.pod_ips[0].clone();
    let targets = [
        ("echo".to_owned(), None),
        (format!("echo.{ns}"), None),
        (format!("echo.{ns}.svc.cluster.local"), None),
        (f.echo.cluster_ip.clone(), None),
        (format!("{pod_ip}:8080"), Some(f.echo.pods[0].clone())),
    ];
    let modes: [(&str, Vec<&str>); 3] = [
        ("SOCKS5", vec!["--socks5-hostname", &socks]),
        ("HTTP proxy", vec!["--proxy", &http]),
        (
            "HTTP proxy CONNECT",
            vec!["--proxytunnel", "--proxy", &http],
        ),
    ];
    for (mode, args) in &modes {
        for (host, pod) in &targets {
            let path = format!("/{}/{}", mode.replace(' ', "-"), host.replace(':', "-"));
            let url = format!("http://{host}{path}");
            let reply = curl_echo(args, &url)
                .await
                .with_context(|| format!("{mode} to {url}"))?;
            ensure!(
                reply.path == path,
                "{mode} {url}: echo saw path {}",
                reply.path
            );
            ensure!(
                reply.namespace == ns,
                "{mode} {url}: answered from {}",
                reply.namespace
            );
            match pod {
                Some(pod) => ensure!(&reply.pod == pod, "{mode} {url}: answered by {}", reply.pod),
                None => ensure!(
                    f.echo.pods.contains(&reply.pod),
                    "{mode} {url}: answered by unknown pod {}",
                    reply.pod
                ),
            }
        }
    }
    // A child process given session.env() and no proxy flags goes through the session.
    let mut curl = tokio::process::Command::new("curl");
    curl.args([
        "-sS",
        "--fail-with-body",
        "--max-time",
        "30",
        "http://echo/from-env",
    ])
    .env_clear()
    .envs(f.session.env());
    let out = kt_lab_tests::run_bounded(
        curl,
        "curl with session.env()",
        None,
        Duration::from_secs(60),
    )
    .await?;
    let body = kt_lab_tests::check_output("curl with session.env()", out)?;
    let reply = kt_lab_tests::EchoReply::from_json(serde_json::from_str(&body)?)?;
    ensure!(reply.path == "/from-env", "{body}");
    f.finish().await
}

both_flavours!(forward_carries_64_mib_of_tcp_echo_intact);
async fn forward_carries_64_mib_of_tcp_echo_intact(flavour: ShadowFlavour) -> Result<()> {
    const TOTAL: u64 = 64 << 20;
    const CHUNK: usize = 256 << 10;
    let f = Fixture::start("kt-bulk", flavour, 1).await?;
    let local = f.session.forward("svc/echo", 9000).await?;
    let stream = tokio::net::TcpStream::connect(local).await?;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let mut off = 0u64;
        while off < TOTAL {
            let n = usize::try_from((TOTAL - off).min(CHUNK as u64))?;
            stream_pattern_fill(off, &mut buf[..n]);
            wr.write_all(&buf[..n])
                .await
                .with_context(|| format!("writing at {off}"))?;
            off += n as u64;
        }
        wr.shutdown().await?;
        anyhow::Ok(wr)
    });
    let reader = async {
        let mut buf = vec![0u8; CHUNK];
        let mut want = vec![0u8; CHUNK];
        let mut off = 0u64;
        loop {
            let n = rd
                .read(&mut buf)
                .await
                .with_context(|| format!("reading at {off}"))?;
            if n == 0 {
                break;
            }
            ensure!(off + n as u64 <= TOTAL, "more bytes back than sent");
            stream_pattern_fill(off, &mut want[..n]);
            if buf[..n] != want[..n] {
                let at = buf[..n]
                    .iter()
                    .zip(&want[..n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                bail!("byte {} differs", off + at as u64);
            }
            off += n as u64;
        }
        ensure!(off == TOTAL, "the echo ended after {off} of {TOTAL} bytes");
        anyhow::Ok(off)
    };
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(TRANSFER_BOUND, reader)
        .await
        .context("the 64 MiB echo hung")??;
    let _wr = writer.await??;
    eprintln!(
        "64 MiB echoed through forward() ({flavour:?}) in {:?}",
        started.elapsed()
    );
    ensure!(got == TOTAL);
    f.finish().await
}

both_flavours!(resolve_answers_every_name_form_and_explains_missing_names);
async fn resolve_answers_every_name_form_and_explains_missing_names(
    flavour: ShadowFlavour,
) -> Result<()> {
    let f = Fixture::start("kt-dns", flavour, 1).await?;
    let ns = f.ns.name().to_owned();
    let cluster_ip: std::net::IpAddr = f.echo.cluster_ip.parse()?;
    for name in [
        "echo".to_owned(),
        format!("echo.{ns}"),
        format!("echo.{ns}.svc"),
        format!("echo.{ns}.svc.cluster.local"),
        format!("echo.{ns}.svc.cluster.local."),
        format!("ECHO.{ns}"),
    ] {
        let ips = f
            .session
            .resolve(&name)
            .await
            .with_context(|| format!("resolving {name}"))?;
        ensure!(
            ips == [cluster_ip],
            "{name} resolved to {ips:?}, not {cluster_ip}"
        );
    }
    // kubernetes.default: another namespace, by the search list's svc.cluster.local.
    let api = f.session.resolve("kubernetes.default").await?;
    ensure!(
        api == [std::net::IpAddr::from([10, 96, 0, 1])],
        "kubernetes.default is {api:?}"
    );
    // A pod DNS name (CoreDNS `pods insecure`).
    let pod_ip: std::net::IpAddr = f.echo.pod_ips[0].parse()?;
    let pod_name = format!("{}.{ns}.pod", f.echo.pod_ips[0].replace('.', "-"));
    let ips = f.session.resolve(&pod_name).await?;
    ensure!(ips == [pod_ip], "{pod_name} resolved to {ips:?}");
    // An IP literal comes back as is.
    ensure!(f.session.resolve(&f.echo.cluster_ip).await? == [cluster_ip]);

    let missing = f.session.resolve("no-such-service").await;
    match missing {
        Err(Error::NameNotFound { name, tried }) => {
            ensure!(name == "no-such-service");
            ensure!(
                tried.first().map(String::as_str)
                    == Some(format!("no-such-service.{ns}.svc.cluster.local").as_str()),
                "tried {tried:?}"
            );
            ensure!(tried.len() == 4, "tried {tried:?}");
        }
        other => bail!("expected NameNotFound, got {other:?}"),
    }
    let msg = f
        .session
        .resolve("no-such-service")
        .await
        .err()
        .map(|e| e.to_string());
    let msg = msg.unwrap_or_default();
    ensure!(msg.contains("does not resolve in the cluster"), "{msg}");
    // Through the SOCKS5 proxy a missing name is "host unreachable" (reply code 4).
    let refused =
        kt_lab_tests::socks5_connect(f.session.socks5_addr(), "no-such-service", 80).await;
    let refused = refused.err().map(|e| e.to_string()).unwrap_or_default();
    ensure!(refused.contains("reply code 4"), "{refused}");
    f.finish().await
}

both_flavours!(a_service_in_a_second_namespace_is_reached_by_name_and_forward);
async fn a_service_in_a_second_namespace_is_reached_by_name_and_forward(
    flavour: ShadowFlavour,
) -> Result<()> {
    let f = Fixture::start("kt-ns1", flavour, 1).await?;
    let other = f.lab.namespace("kt-ns2").await?;
    let other_echo = other.deploy_echo(1).await?;
    let other_ns = other.name().to_owned();
    let socks = format!("127.0.0.1:{}", f.session.socks5_addr().port());
    let reply = curl_echo(
        &["--socks5-hostname", &socks],
        &format!("http://echo.{other_ns}/other"),
    )
    .await?;
    ensure!(
        reply.namespace == other_ns,
        "answered from {}",
        reply.namespace
    );
    ensure!(other_echo.pods.contains(&reply.pod));
    let ips = f.session.resolve(&format!("echo.{other_ns}")).await?;
    ensure!(ips == [other_echo.cluster_ip.parse::<std::net::IpAddr>()?]);
    // By DNS name through a forward (the Role grants nothing in the other namespace).
    let local = f.session.forward(&format!("echo.{other_ns}"), 9000).await?;
    let back = echo_round_trip(
        tokio::net::TcpStream::connect(local).await?,
        b"hello".to_vec(),
    )
    .await?;
    ensure!(back == b"hello", "echo through the forward gave {back:?}");
    f.finish().await
}

both_flavours!(two_hundred_concurrent_connections_each_get_their_own_bytes_back);
async fn two_hundred_concurrent_connections_each_get_their_own_bytes_back(
    flavour: ShadowFlavour,
) -> Result<()> {
    let f = Fixture::start("kt-conc", flavour, 2).await?;
    let proxy = f.session.socks5_addr();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        tasks.spawn(async move {
            let len = 16 * 1024 + usize::try_from(i)? * 13;
            let mut data = vec![0u8; len];
            stream_pattern_fill(i << 32, &mut data);
            let stream = kt_lab_tests::socks5_connect(proxy, "echo", 9000)
                .await
                .with_context(|| format!("connection {i}"))?;
            let back = echo_round_trip(stream, data.clone()).await?;
            ensure!(
                back == data,
                "connection {i}: {} bytes back, differ",
                back.len()
            );
            anyhow::Ok(())
        });
    }
    let all = tokio::time::timeout(TRANSFER_BOUND, async {
        let mut ok = 0;
        while let Some(res) = tasks.join_next().await {
            res??;
            ok += 1;
        }
        anyhow::Ok(ok)
    })
    .await
    .context("200 concurrent connections hung")??;
    ensure!(all == 200);
    f.finish().await
}

both_flavours!(session_reconnects_after_the_tunnel_drops_and_new_requests_succeed);
async fn session_reconnects_after_the_tunnel_drops_and_new_requests_succeed(
    flavour: ShadowFlavour,
) -> Result<()> {
    let f = Fixture::start("kt-reconn", flavour, 1).await?;
    let http = format!("http://{}", f.session.http_proxy_addr());
    curl_echo(&["--proxy", &http], "http://echo/before").await?;
    let mut events = f.session.events();
    for round in 0..3 {
        f.session.simulate_tunnel_drop();
        // The request waits for the new link.
        let reply = curl_echo(&["--proxy", &http], &format!("http://echo/after-{round}")).await?;
        ensure!(reply.path == format!("/after-{round}"));
    }
    let mut reconnected = 0;
    while let Some(e) = events.try_next() {
        if matches!(e, Event::Reconnected { .. }) {
            reconnected += 1;
        }
    }
    ensure!(
        reconnected == 3,
        "saw {reconnected} Reconnected events, expected 3"
    );
    f.finish().await
}

/// curl `args` with `env` only (and `PATH`); (success, stdout, stderr).
async fn curl_with_env(
    args: &[&str],
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(bool, String, String)> {
    let mut curl = tokio::process::Command::new("curl");
    curl.args(["-sS", "--max-time", "30"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env);
    let what = format!("curl {args:?}");
    let out = kt_lab_tests::run_bounded(curl, &what, None, Duration::from_secs(60)).await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proxy_auth_the_env_urls_reach_echo_and_the_bare_proxies_refuse() -> Result<()> {
    let f = Fixture::start_with("kt-pauth", ShadowFlavour::KtShadow, 1, |o| {
        o.proxy_auth(true)
    })
    .await?;
    let env = f.session.env();
    let http_url = f.session.http_proxy_url();
    let socks_url = f.session.socks5_url();
    ensure!(
        env["HTTP_PROXY"] == http_url && env["https_proxy"] == http_url,
        "{env:?}"
    );
    ensure!(env["ALL_PROXY"] == socks_url, "{env:?}");
    let userinfo = http_url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('@'))
        .map(|(userinfo, _)| userinfo.to_owned())
        .with_context(|| format!("no credentials in {http_url}"))?;
    ensure!(
        socks_url == format!("socks5h://{userinfo}@{}", f.session.socks5_addr()),
        "{socks_url}"
    );
    ensure!(
        !format!("{:?}", f.session).contains(&userinfo),
        "Debug shows the credentials"
    );
    // A program given one variable of env() reaches echo through that proxy.
    let cases: [(&str, &str, &[&str]); 3] = [
        ("http_proxy", "/plain", &[]),
        ("http_proxy", "/connect", &["--proxytunnel"]),
        ("ALL_PROXY", "/socks5", &[]),
    ];
    for (var, path, extra) in cases {
        let only = std::collections::BTreeMap::from([(var.to_owned(), env[var].clone())]);
        let url = format!("http://echo{path}");
        let mut args = extra.to_vec();
        args.extend(["--fail-with-body", url.as_str()]);
        let (ok, out, err) = curl_with_env(&args, &only).await?;
        ensure!(ok, "{var} {extra:?}: {out}\n{err}");
        let reply = kt_lab_tests::EchoReply::from_json(serde_json::from_str(&out)?)?;
        ensure!(reply.path == path, "{var}: echo saw {}", reply.path);
        ensure!(f.echo.pods.contains(&reply.pod), "{var}: {}", reply.pod);
    }
    // The same proxies without the credentials refuse.
    let none = std::collections::BTreeMap::new();
    let bare_http = format!("http://{}", f.session.http_proxy_addr());
    let (_, out, err) = curl_with_env(
        &[
            "--proxy",
            &bare_http,
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            "http://echo/",
        ],
        &none,
    )
    .await?;
    ensure!(
        out == "407",
        "plain request without credentials: {out}\n{err}"
    );
    let bare_socks = format!("socks5h://{}", f.session.socks5_addr());
    let (ok, out, err) = curl_with_env(&["--proxy", &bare_socks, "http://echo/"], &none).await?;
    ensure!(!ok, "SOCKS5 without credentials served: {out}\n{err}");
    f.finish().await
}
