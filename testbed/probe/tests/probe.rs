//! kt-probe against itself and against curl, on 127.0.0.1: `serve` is started once per
//! test and every client (kt-probe's own and curl in HTTP/1.1, HTTP/2 prior knowledge
//! and HTTP/2 over the upgrade path) talks to it.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

const PROBE: &str = env!("CARGO_BIN_EXE_kt-probe");

/// Bounds every process a test runs, so a broken server fails the test instead of
/// hanging it.
const BOUND: Duration = Duration::from_secs(60);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A running `kt-probe serve` on 127.0.0.1, killed on drop.
struct Server {
    _child: Child,
    addr: String,
}

async fn serve(name: &str) -> Result<Server> {
    let mut child = Command::new(PROBE)
        .args(["serve", "--listen", "127.0.0.1:0", "--name", name])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(BOUND, lines.next_line())
        .await?
        .map_err(|e| format!("reading serve's first line: {e}"))?
        .ok_or("serve printed nothing")?;
    let v: Value = serde_json::from_str(&first)?;
    let addr = v["listening"].as_str().ok_or("no `listening`")?.to_owned();
    assert_eq!(v["name"], name);
    Ok(Server {
        _child: child,
        addr,
    })
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(program: &str, args: &[&str]) -> Result<Out> {
    let out = tokio::time::timeout(
        BOUND,
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    Ok(Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a command that must succeed; its stdout.
async fn ok(program: &str, args: &[&str]) -> Result<String> {
    let out = run(program, args).await?;
    assert!(
        out.ok,
        "{program} {args:?} failed:\n{}\n{}",
        out.stderr, out.stdout
    );
    Ok(out.stdout)
}

/// Every stdout line as JSON.
fn lines(text: &str) -> Result<Vec<Value>> {
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?)
}

/// JSON documents one after another (curl printing several bodies).
fn documents(text: &str) -> Result<Vec<Value>> {
    Ok(serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<std::result::Result<_, _>>()?)
}

#[tokio::test]
async fn http1_reply_names_the_server_and_carries_every_header_unchanged() -> Result<()> {
    let s = serve("alpha").await?;
    let url = format!("http://{}/some/path?q=1", s.addr);
    let out = ok(
        PROBE,
        &[
            "http",
            "--url",
            &url,
            "-H",
            "Host: web.dev.svc",
            "-H",
            "X-Forwarded-For: 10.1.2.3",
            "-H",
            "version: v-alice",
        ],
    )
    .await?;
    let l = lines(&out)?;
    assert_eq!(l.len(), 1, "{out}");
    let body = &l[0]["body"];
    assert_eq!(l[0]["name"], "alpha");
    assert_eq!(l[0]["version"], "HTTP/1.1");
    assert_eq!(body["version"], "HTTP/1.1");
    assert_eq!(body["path"], "/some/path");
    assert_eq!(body["query"], "q=1");
    assert_eq!(body["authority"], "web.dev.svc");
    assert_eq!(body["headers"]["host"], "web.dev.svc");
    assert_eq!(body["headers"]["x-forwarded-for"], "10.1.2.3");
    assert_eq!(body["headers"]["version"], "v-alice");
    Ok(())
}

#[tokio::test]
async fn alternating_header_requests_share_one_kept_alive_connection() -> Result<()> {
    let s = serve("alpha").await?;
    let url = format!("http://{}/", s.addr);
    for extra in [&[][..], &["--h2c-prior-knowledge"][..]] {
        let mut args = vec![
            "http",
            "--url",
            &url,
            "--requests",
            "6",
            "--alternate-header",
            "version: a,,b",
        ];
        args.extend_from_slice(extra);
        let out = ok(PROBE, &args).await?;
        let l = lines(&out)?;
        assert_eq!(l.len(), 6, "{out}");
        let sent: Vec<Value> = l.iter().map(|v| v["sent"].clone()).collect();
        let want = ["a", "", "b", "a", "", "b"].map(|v| {
            if v.is_empty() {
                Value::Null
            } else {
                Value::from(v)
            }
        });
        assert_eq!(sent, want, "{out}");
        for v in &l {
            assert_eq!(v["name"], "alpha");
            // The server saw the header exactly when it was sent.
            assert_eq!(v["body"]["headers"]["version"], v["sent"], "{v}");
            // One connection: the same client address every time.
            assert_eq!(v["body"]["peer"], l[0]["body"]["peer"], "{out}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn curl_http1_keeps_the_connection_alive() -> Result<()> {
    let s = serve("alpha").await?;
    let a = format!("http://{}/a", s.addr);
    let b = format!("http://{}/b", s.addr);
    let out = ok("curl", &["-sS", "--fail", &a, &b]).await?;
    let d = documents(&out)?;
    assert_eq!(d.len(), 2, "{out}");
    assert_eq!(d[0]["version"], "HTTP/1.1");
    assert_eq!(d[0]["name"], "alpha");
    assert_eq!(d[1]["path"], "/b");
    assert_eq!(
        d[0]["peer"], d[1]["peer"],
        "curl reused its connection: {out}"
    );
    Ok(())
}

#[tokio::test]
async fn h2c_prior_knowledge_from_curl_and_kt_probe() -> Result<()> {
    let s = serve("beta").await?;
    let url = format!("http://{}/h2", s.addr);
    let out = ok(
        "curl",
        &[
            "-sS",
            "--fail",
            "--http2-prior-knowledge",
            "-H",
            "x-dev: bob",
            &url,
        ],
    )
    .await?;
    let d = documents(&out)?;
    assert_eq!(d[0]["version"], "HTTP/2", "{out}");
    assert_eq!(d[0]["name"], "beta");
    assert_eq!(d[0]["headers"][":authority"], s.addr.as_str());
    assert_eq!(d[0]["headers"]["x-dev"], "bob");

    let out = ok(PROBE, &["http", "--url", &url, "--h2c-prior-knowledge"]).await?;
    let l = lines(&out)?;
    assert_eq!(l[0]["version"], "HTTP/2", "{out}");
    assert_eq!(l[0]["body"]["version"], "HTTP/2", "{out}");
    assert_eq!(l[0]["name"], "beta");
    Ok(())
}

#[tokio::test]
async fn curl_http2_upgrade_switches_the_connection_to_http2() -> Result<()> {
    let s = serve("alpha").await?;
    let a = format!("http://{}/up?x=1", s.addr);
    let b = format!("http://{}/next", s.addr);
    let out = ok(
        "curl",
        &[
            "-sS",
            "--fail",
            "--http2",
            "-H",
            "x-dev: carol",
            "-w",
            "\n%{http_version}\n",
            &a,
            &b,
        ],
    )
    .await?;
    // Two bodies, each followed by curl's HTTP version line.
    let d = documents(&out.replace("\n2\n", "\n"))?;
    assert_eq!(out.matches("\n2\n").count(), 2, "both over HTTP/2: {out}");
    assert_eq!(d.len(), 2, "{out}");
    // The upgrade request itself, answered as stream 1: path, query and headers intact,
    // Host as :authority, the upgrade headers gone.
    assert_eq!(d[0]["version"], "HTTP/2", "{out}");
    assert_eq!(d[0]["path"], "/up");
    assert_eq!(d[0]["query"], "x=1");
    assert_eq!(d[0]["headers"]["x-dev"], "carol");
    assert_eq!(d[0]["headers"][":authority"], s.addr.as_str());
    assert!(d[0]["headers"].get("upgrade").is_none(), "{out}");
    // The next request on the same connection.
    assert_eq!(d[1]["version"], "HTTP/2");
    assert_eq!(d[1]["path"], "/next");
    assert_eq!(d[0]["peer"], d[1]["peer"], "one connection: {out}");
    Ok(())
}

#[tokio::test]
async fn http2_upgrade_with_a_body_is_answered_in_http1() -> Result<()> {
    let s = serve("alpha").await?;
    let url = format!("http://{}/post", s.addr);
    let out = ok(
        "curl",
        &[
            "-sS",
            "--fail",
            "--http2",
            "--data",
            "abc",
            "-w",
            "\n%{http_version}\n",
            &url,
        ],
    )
    .await?;
    let (body, version) = out.trim_end().rsplit_once('\n').ok_or("no version line")?;
    let d = documents(body)?;
    assert_eq!(version, "1.1", "{out}");
    assert_eq!(d[0]["body_bytes"], 3);
    Ok(())
}

#[tokio::test]
async fn echo_returns_large_bodies_intact_over_http1_and_h2c() -> Result<()> {
    let s = serve("alpha").await?;
    let dir = std::env::temp_dir().join(format!("kt-probe-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("in");
    let output = dir.join("out");
    // 24 MiB of a non-repeating pattern.
    let mut data = Vec::with_capacity(24 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < 24 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&input, &data)?;
    let url = format!("http://{}/echo", s.addr);
    let data_arg = format!("@{}", input.display());
    let out_arg = output.display().to_string();
    for mode in ["--http1.1", "--http2-prior-knowledge"] {
        let _ = std::fs::remove_file(&output);
        ok(
            "curl",
            &[
                "-sS",
                "--fail",
                mode,
                "--data-binary",
                &data_arg,
                "-o",
                &out_arg,
                &url,
            ],
        )
        .await?;
        let back = std::fs::read(&output)?;
        assert_eq!(back.len(), data.len(), "{mode}");
        assert!(back == data, "{mode}: the echoed body differs");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn echo_streams_the_body_back_before_the_request_ends() -> Result<()> {
    let s = serve("alpha").await?;
    let mut tcp = tokio::net::TcpStream::connect(&s.addr).await?;
    tcp.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nfirst-bit\r\n",
    )
    .await?;
    // The request is not finished; the first chunk must come back anyway.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(BOUND, async {
        while !got.windows(9).any(|w| w == b"first-bit") {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await??;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    tcp.write_all(b"0\r\n\r\n").await?;
    Ok(())
}

#[tokio::test]
async fn trailers_name_the_server_over_h2c_and_http1() -> Result<()> {
    let s = serve("gamma").await?;
    let url = format!("http://{}/trailers", s.addr);
    let out = ok(PROBE, &["http", "--url", &url, "--h2c-prior-knowledge"]).await?;
    let l = lines(&out)?;
    assert_eq!(l[0]["trailers"]["x-probe-name"], "gamma", "{out}");
    let out = ok(PROBE, &["http", "--url", &url, "-H", "te: trailers"]).await?;
    let l = lines(&out)?;
    assert_eq!(l[0]["trailers"]["x-probe-name"], "gamma", "{out}");
    // curl shows HTTP/1.1 trailers in the raw chunked body.
    let out = ok(
        "curl",
        &["-sS", "--fail", "--raw", "-H", "te: trailers", &url],
    )
    .await?;
    assert!(out.contains("x-probe-name: gamma"), "{out}");
    Ok(())
}

#[tokio::test]
async fn websocket_echoes_prefixed_with_the_name() -> Result<()> {
    let s = serve("delta").await?;
    let url = format!("ws://{}/ws", s.addr);
    let out = ok(
        PROBE,
        &[
            "ws",
            "--url",
            &url,
            "-H",
            "version: v1",
            "--message",
            "hello there",
        ],
    )
    .await?;
    let l = lines(&out)?;
    assert_eq!(l[0]["reply"], "delta:hello there", "{out}");
    assert_eq!(l[0]["name"], "delta");
    Ok(())
}

#[tokio::test]
async fn grpc_unary_sees_the_metadata_and_streaming_counts() -> Result<()> {
    let s = serve("eps").await?;
    let out = ok(
        PROBE,
        &[
            "grpc",
            "--addr",
            &s.addr,
            "-H",
            "version: v-bob",
            "unary",
            "hi",
        ],
    )
    .await?;
    let l = lines(&out)?;
    assert_eq!(l[0]["name"], "eps", "{out}");
    assert_eq!(l[0]["text"], "hi");
    assert_eq!(l[0]["headers"]["version"], "v-bob");
    assert_eq!(l[0]["headers"]["content-type"], "application/grpc");
    assert_eq!(l[0]["headers"][":authority"], s.addr.as_str());
    assert!(
        l[0]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{out}"
    );

    let out = ok(PROBE, &["grpc", "--addr", &s.addr, "stream", "5"]).await?;
    let l = lines(&out)?;
    assert_eq!(l.len(), 5, "{out}");
    for (i, v) in l.iter().enumerate() {
        assert_eq!(v["name"], "eps");
        assert_eq!(v["i"], i);
    }

    // A status from the server is an error with its message.
    let out = run(PROBE, &["grpc", "--addr", &s.addr, "stream", "4000000000"]).await?;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("ask for fewer replies"),
        "{}",
        out.stderr
    );
    Ok(())
}

#[tokio::test]
async fn unknown_grpc_method_is_unimplemented() -> Result<()> {
    let s = serve("eps").await?;
    let url = format!("http://{}/probe.Probe/Nope", s.addr);
    let out = ok(
        "curl",
        &[
            "-sS",
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "-H",
            "content-type: application/grpc",
            "-D",
            "-",
            &url,
        ],
    )
    .await?;
    assert!(out.contains("grpc-status: 12"), "{out}");
    Ok(())
}

#[tokio::test]
async fn load_reports_percentiles_and_who_answered() -> Result<()> {
    let s = serve("zeta").await?;
    let url = format!("http://{}/", s.addr);
    for grpc in [false, true] {
        let mut args = vec!["load", "--url", &url, "--requests", "200", "--warmup", "5"];
        if grpc {
            args.push("--grpc");
        }
        let out = ok(PROBE, &args).await?;
        let l = lines(&out)?;
        assert_eq!(l.len(), 1, "{out}");
        let v = &l[0];
        assert_eq!(v["requests"], 200);
        assert_eq!(v["names"]["zeta"], 200, "{out}");
        assert_eq!(v["peers"]["127.0.0.1"], 200, "{out}");
        let p50 = v["p50_us"].as_u64().ok_or("p50")?;
        let p99 = v["p99_us"].as_u64().ok_or("p99")?;
        assert!(p50 > 0 && p50 <= p99, "{out}");
        assert!(v["rps"].as_f64().is_some_and(|r| r > 0.0), "{out}");
    }
    Ok(())
}

#[tokio::test]
async fn client_errors_exit_non_zero_with_a_clear_message() -> Result<()> {
    // A port nothing listens on: bind one, note it, close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    let out = run(PROBE, &["http", "--url", &url]).await?;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("cannot connect to 127.0.0.1"),
        "{}",
        out.stderr
    );

    let out = run(PROBE, &["http", "--url", "https://example.invalid/"]).await?;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("only http:// is supported"),
        "{}",
        out.stderr
    );

    let out = run(PROBE, &["http", "--url", &url, "-H", "no-colon"]).await?;
    assert!(!out.ok);
    assert!(out.stderr.contains("'name: value'"), "{}", out.stderr);

    // A non-2xx reply is an error too, after its line is printed: an upgrade to
    // WebSocket without a key is refused with 400.
    let s = serve("eta").await?;
    let ws_url = format!("http://{}/ws", s.addr);
    let out = run(
        PROBE,
        &[
            "http",
            "--url",
            &ws_url,
            "-H",
            "connection: upgrade",
            "-H",
            "upgrade: websocket",
        ],
    )
    .await?;
    assert!(!out.ok);
    assert!(out.stderr.contains("status 400"), "{}", out.stderr);
    assert_eq!(lines(&out.stdout)?[0]["status"], 400, "{}", out.stdout);

    let out = run(PROBE, &["serve", "--listen", &s.addr, "--name", "x"]).await?;
    assert!(!out.ok);
    assert!(out.stderr.contains("cannot listen on"), "{}", out.stderr);
    Ok(())
}

#[tokio::test]
async fn post_bytes_streams_a_checked_body_through_echo_on_one_connection() -> Result<()> {
    let s = serve("theta").await?;
    let url = format!("http://{}/echo", s.addr);
    for extra in [&[][..], &["--h2c-prior-knowledge"][..]] {
        let mut args = vec![
            "http",
            "--url",
            &url,
            "--post-bytes",
            "8388608",
            "--requests",
            "2",
        ];
        args.extend_from_slice(extra);
        let out = ok(PROBE, &args).await?;
        let l = lines(&out)?;
        assert_eq!(l.len(), 2, "{out}");
        for v in &l {
            assert_eq!(v["name"], "theta", "{out}");
            assert_eq!(v["echoed_bytes"], 8_388_608, "{out}");
        }
    }
    // Anything but the same bytes back is an error: `/` answers JSON instead.
    let other = format!("http://{}/", s.addr);
    let out = run(PROBE, &["http", "--url", &other, "--post-bytes", "1000"]).await?;
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("differs at byte 0"), "{}", out.stderr);
    Ok(())
}
