//! Proxy mode end to end with `--proxy-auth`: `ktctl connect` runs on this machine
//! (proxy mode needs no privileges and no network namespace) with the lab's admin
//! kubeconfig in a fresh namespace with the echo app; the `export` line it prints
//! carries the credentials, and curl given those variables reaches echo through each
//! proxy, while the same proxies without the credentials refuse. Ctrl-C ends ktctl
//! with status 0 and nothing of the session left.
//!
//! Needs the lab (`testbed/up`); fails when it is down.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kt_lab_tests::{EchoReply, Lab};
use tokio::process::Command;

mod common;
use common::Ktctl;

/// The `KEY=value` pairs of the `export` line ktctl printed.
fn exported(summary: &str) -> Result<BTreeMap<String, String>> {
    let line = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("for a shell: export "))
        .with_context(|| format!("no export line in:\n{summary}"))?;
    line.split_whitespace()
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("`{pair}` in `{line}`"))?;
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// curl `args` with only `env` (and `PATH`); (success, stdout, stderr).
async fn curl(args: &[&str], env: &BTreeMap<String, String>) -> Result<(bool, String, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("curl did not end")?
        .context("running curl")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn proxy_auth_prints_urls_with_credentials_that_the_proxies_require() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("ktctl-pauth").await?;
    let echo = ns.deploy_echo(1).await?;
    let kubeconfig = lab.kubeconfig().to_string_lossy().into_owned();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ktctl"));
    cmd.args(["connect", "--proxy-auth", "--kubeconfig", &kubeconfig])
        .args(["-n", ns.name()])
        .stdin(Stdio::null());
    let kt = Ktctl::spawn(cmd).await?;
    let summary = kt.summary.clone();

    let checks = async {
        let vars = exported(&summary)?;
        let http = vars.get("HTTP_PROXY").context("HTTP_PROXY")?;
        let socks = vars.get("ALL_PROXY").context("ALL_PROXY")?;
        ensure!(vars.get("HTTPS_PROXY") == Some(http), "{vars:?}");
        let (userinfo, http_addr) = http
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once('@'))
            .with_context(|| format!("no credentials in HTTP_PROXY={http}"))?;
        let (_, socks_addr) = socks
            .strip_prefix(&format!("socks5h://{userinfo}@"))
            .map(|addr| ((), addr))
            .with_context(|| format!("ALL_PROXY={socks} lacks HTTP_PROXY's credentials"))?;
        ensure!(
            summary.contains(&format!("http proxy  {http_addr} (credentials required")),
            "{summary}"
        );
        // What the shell gets: ALL_PROXY alone (curl's SOCKS5), and the HTTP proxy both
        // in plain form and with CONNECT.
        let cases: [(&str, &str, &[&str]); 3] = [
            ("all_proxy", socks, &[]),
            ("http_proxy", http, &[]),
            ("http_proxy", http, &["--proxytunnel"]),
        ];
        for (var, value, extra) in cases {
            let env = BTreeMap::from([(var.to_owned(), value.to_owned())]);
            let mut args = extra.to_vec();
            args.extend(["--fail-with-body", "http://echo/from-ktctl"]);
            let (ok, out, err) = curl(&args, &env).await?;
            ensure!(ok, "{var} {extra:?}: {out}\n{err}");
            let replies = EchoReply::parse_all(&out)?;
            ensure!(
                replies.len() == 1
                    && replies[0].path == "/from-ktctl"
                    && echo.pods.contains(&replies[0].pod),
                "{var} {extra:?}: {out}"
            );
        }
        // The proxies without the credentials refuse.
        let none = BTreeMap::new();
        let bare = format!("http://{http_addr}");
        let (_, code, err) = curl(
            &[
                "--proxy",
                &bare,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://echo/",
            ],
            &none,
        )
        .await?;
        ensure!(
            code == "407",
            "HTTP proxy without credentials: {code}\n{err}"
        );
        let bare = format!("socks5h://{socks_addr}");
        let (ok, out, err) = curl(&["--proxy", &bare, "http://echo/"], &none).await?;
        ensure!(!ok, "SOCKS5 without credentials served: {out}\n{err}");
        anyhow::Ok(())
    }
    .await;

    let (code, err) = kt.signal("INT").await?;
    if let Err(e) = checks {
        bail!("{e:#}\nktctl stdout:\n{summary}\nktctl stderr:\n{err}");
    }
    ensure!(code == Some(0), "ktctl exit {code:?}:\n{err}");
    common::no_kt_pods_left(&ns).await
}
