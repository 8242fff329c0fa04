//! Connects to a cluster, fetches `http://echo.<namespace>` through the session's
//! HTTP proxy and prints the answer.
//!
//! Against the lab (`testbed/up`, then deploy the echo app):
//!
//! ```sh
//! kubectl create namespace demo
//! kubectl apply -n demo -f testbed/examples/echo.yaml
//! KUBECONFIG=/run/ktlab/admin.kubeconfig cargo run -p kt-core --example connect -- demo
//! ```
//!
//! Arguments: `[namespace] [kt-shadow|openssh]` (defaults: the context's namespace,
//! kt-shadow; `KT_SHADOW_IMAGE` overrides the image).

use std::io::Write as _;

use kt_core::{ConnectOptions, Session, ShadowFlavour};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let namespace = args.next();
    let flavour = match args.next().as_deref() {
        Some("openssh") => ShadowFlavour::OpenSsh,
        None | Some("kt-shadow") => ShadowFlavour::KtShadow,
        Some(other) => {
            return Err(format!("unknown flavour `{other}`: kt-shadow or openssh").into());
        }
    };
    let mut opts = ConnectOptions::new()
        .flavour(flavour)
        .on_event(|e| eprintln!("kt: {e}"));
    if let Some(ns) = &namespace {
        opts = opts.namespace(ns);
    }
    let started = std::time::Instant::now();
    let session = Session::connect(opts).await?;
    eprintln!(
        "kt: connected in {:?}; cluster DNS {}",
        started.elapsed(),
        session.dns_server()
    );

    let host = format!("echo.{}", session.namespace());
    let result = fetch(session.http_proxy_addr(), &host).await;
    session.close().await?;
    let body = result?;
    std::io::stdout().write_all(body.as_bytes())?;
    Ok(())
}

/// `GET http://<host>/` through an HTTP proxy; returns the response body.
async fn fetch(
    proxy: std::net::SocketAddr,
    host: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut conn = tokio::net::TcpStream::connect(proxy).await?;
    let request =
        format!("GET http://{host}/hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    conn.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("{host}: {status}\n{body}").into());
    }
    Ok(body.to_owned())
}
