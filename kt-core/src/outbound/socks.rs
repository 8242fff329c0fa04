//! A SOCKS5 server (RFC 1928): `CONNECT` only, names resolved in the cluster
//! (`socks5h://` semantics: the client sends the name, kt resolves it with the
//! namespace search list). No authentication, or, with per-session credentials,
//! username/password only (RFC 1929): a client that does not offer that method gets
//! "no acceptable methods", one with other credentials a failure status, and both are
//! disconnected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::outbound::auth::ProxyCredentials;
use crate::outbound::{Upstream, splice};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASSWORD: u8 = 2;
/// The version byte of the username/password sub-negotiation (RFC 1929).
const AUTH_VERSION: u8 = 1;
const AUTH_OK: u8 = 0;
const AUTH_FAILED: u8 = 1;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const ATYP_V4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_V6: u8 = 4;

/// Reply codes.
const REP_OK: u8 = 0;
const REP_FAILURE: u8 = 1;
const REP_NETWORK_UNREACHABLE: u8 = 3;
const REP_HOST_UNREACHABLE: u8 = 4;
const REP_REFUSED: u8 = 5;
const REP_TTL_EXPIRED: u8 = 6;
const REP_COMMAND_NOT_SUPPORTED: u8 = 7;
const REP_ADDRESS_NOT_SUPPORTED: u8 = 8;

/// Where a client wants to go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    Ip(IpAddr),
    Name(String),
}

/// Serves one SOCKS5 client connection; with `credentials`, only a client that
/// authenticates with them.
pub(crate) async fn handle<U: Upstream>(
    mut client: TcpStream,
    upstream: U,
    credentials: Option<Arc<ProxyCredentials>>,
) {
    match negotiate(&mut client, credentials.as_deref()).await {
        Ok(Some((dest, port))) => {
            let dialed = match &dest {
                Dest::Ip(ip) => upstream.connect_ip(*ip, port).await,
                Dest::Name(name) => upstream.connect(name, port).await,
            };
            match dialed {
                Ok(remote) => {
                    if reply(&mut client, REP_OK).await.is_ok() {
                        splice(client, remote).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(target: "kt", "SOCKS5 CONNECT {dest:?}:{port}: {e}");
                    let _ = reply(&mut client, reply_code(&e)).await;
                }
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(target: "kt", "SOCKS5 handshake: {e}"),
    }
}

/// The SOCKS reply code for a failed connect.
fn reply_code(e: &Error) -> u8 {
    match e {
        Error::NameNotFound { .. } => REP_HOST_UNREACHABLE,
        Error::Connect { reason, .. } if reason.starts_with("no answer") => REP_TTL_EXPIRED,
        Error::Connect { .. } => REP_REFUSED,
        Error::TunnelDown { .. } | Error::Closed => REP_NETWORK_UNREACHABLE,
        _ => REP_FAILURE,
    }
}

/// Reads the greeting, the credentials when `credentials` are required, and the
/// request. `Ok(None)` when the client was refused (and the refusal already sent).
async fn negotiate(
    client: &mut TcpStream,
    credentials: Option<&ProxyCredentials>,
) -> std::io::Result<Option<(Dest, u16)>> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not SOCKS5 (version byte {})", head[0]),
        ));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    let method = if credentials.is_some() {
        USER_PASSWORD
    } else {
        NO_AUTH
    };
    if !methods.contains(&method) {
        if credentials.is_some() {
            tracing::debug!(
                target: "kt",
                "SOCKS5: refused a client that offers no username/password authentication"
            );
        }
        client.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await?;
        return Ok(None);
    }
    client.write_all(&[VERSION, method]).await?;
    if let Some(credentials) = credentials
        && !authenticate(client, credentials).await?
    {
        return Ok(None);
    }
    let mut req = [0u8; 4];
    client.read_exact(&mut req).await?;
    let dest = match req[3] {
        ATYP_V4 => {
            let mut a = [0u8; 4];
            client.read_exact(&mut a).await?;
            Dest::Ip(IpAddr::V4(Ipv4Addr::from(a)))
        }
        ATYP_V6 => {
            let mut a = [0u8; 16];
            client.read_exact(&mut a).await?;
            Dest::Ip(IpAddr::V6(Ipv6Addr::from(a)))
        }
        ATYP_NAME => {
            let len = client.read_u8().await?;
            let mut name = vec![0u8; usize::from(len)];
            client.read_exact(&mut name).await?;
            let name = String::from_utf8_lossy(&name).into_owned();
            // Clients may send an IP literal as a name.
            match name.parse::<IpAddr>() {
                Ok(ip) => Dest::Ip(ip),
                Err(_) => Dest::Name(name),
            }
        }
        _ => {
            reply(client, REP_ADDRESS_NOT_SUPPORTED).await?;
            return Ok(None);
        }
    };
    let port = client.read_u16().await?;
    if req[1] != CMD_CONNECT {
        reply(client, REP_COMMAND_NOT_SUPPORTED).await?;
        return Ok(None);
    }
    Ok(Some((dest, port)))
}

/// The username/password sub-negotiation (RFC 1929): whether the client sent
/// `credentials` (it is told either way). The values sent are never logged.
async fn authenticate(
    client: &mut TcpStream,
    credentials: &ProxyCredentials,
) -> std::io::Result<bool> {
    let version = client.read_u8().await?;
    if version != AUTH_VERSION {
        client.write_all(&[AUTH_VERSION, AUTH_FAILED]).await?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a username/password sub-negotiation (version byte {version})"),
        ));
    }
    let user_len = client.read_u8().await?;
    let mut user = vec![0u8; usize::from(user_len)];
    client.read_exact(&mut user).await?;
    let password_len = client.read_u8().await?;
    let mut password = vec![0u8; usize::from(password_len)];
    client.read_exact(&mut password).await?;
    let ok = credentials.matches(&user, &password);
    let status = if ok { AUTH_OK } else { AUTH_FAILED };
    client.write_all(&[AUTH_VERSION, status]).await?;
    if !ok {
        tracing::debug!(target: "kt", "SOCKS5: refused a client with other proxy credentials");
    }
    Ok(ok)
}

/// Sends a reply with an unspecified bound address.
async fn reply(client: &mut TcpStream, code: u8) -> std::io::Result<()> {
    client
        .write_all(&[VERSION, code, 0, ATYP_V4, 0, 0, 0, 0, 0, 0])
        .await
}
