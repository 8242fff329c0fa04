//! The `Session` class: `Session.connect(options)` and what a session offers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::{Env, ValueType};
use napi_derive::napi;

use crate::error::{KtError, promise, rejected};
use crate::events::EventStream;
use crate::inbound::{self, Expose, Mesh, Swap};
use crate::options::{self, non_empty, port};
use crate::udp::UdpChannel;

/// A local address on 127.0.0.1 that a forward listens on.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct LocalAddress {
    /// Always `127.0.0.1`.
    pub host: String,
    /// The local port.
    pub port: u32,
    /// `host:port`, for clients that take one string.
    pub address: String,
}

impl From<SocketAddr> for LocalAddress {
    fn from(addr: SocketAddr) -> LocalAddress {
        LocalAddress {
            host: addr.ip().to_string(),
            port: u32::from(addr.port()),
            address: addr.to_string(),
        }
    }
}

/// VPN mode's device, routes and DNS (`session.vpn`).
#[napi(object)]
#[derive(Debug, Clone)]
pub struct VpnInfo {
    /// The tun device's name.
    pub device: String,
    /// The ranges routed into the cluster (CIDRs).
    pub routes: Vec<String>,
    /// The local DNS server (`ip:port`), if one runs.
    pub dns_addr: Option<String>,
    /// What was changed for system DNS, in words.
    pub dns_detail: String,
}

/// An open connection into a cluster: a shadow pod, the SSH tunnel to it through the
/// API server, and local proxies and forwards over it. Open one with
/// `Session.connect`; close it with `close()` (or `await using`).
#[napi]
pub struct Session {
    /// `None` only while being dropped.
    inner: Option<Arc<kt_core::Session>>,
    /// The runtime the session's tasks run on (napi-rs's), for `Drop`.
    runtime: tokio::runtime::Handle,
}

impl Session {
    fn core(&self) -> Result<&Arc<kt_core::Session>, KtError> {
        self.inner.as_ref().ok_or_else(KtError::closed)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A session collected without close(): kt-core starts removing its objects on a
        // task, which needs the runtime to be current when the last reference goes. (Not
        // napi's `within_runtime_if_available`: it panics once the runtime is shut down,
        // as it is when Node exits; a plain handle only declines to run the task then.)
        if let Some(inner) = self.inner.take() {
            let _guard = self.runtime.enter();
            drop(inner);
        }
    }
}

fn arg<'a>(value: Option<Unknown<'a>>) -> Option<Unknown<'a>> {
    value.filter(|v| !matches!(v.get_type(), Ok(ValueType::Undefined)))
}

fn required<'a>(value: Option<Unknown<'a>>, name: &str) -> Result<Unknown<'a>, KtError> {
    arg(value).ok_or_else(|| KtError::invalid(format!("{name} is required")))
}

#[napi]
impl Session {
    /// Opens a session: creates the shadow pod (and, for the OpenSSH flavour, its
    /// Secret), waits until it is Ready, tunnels SSH to it through the API server and
    /// starts the local proxies. Rejects with a `KtError` (see `code`); whatever was created is removed first.
    #[napi(
        catch_unwind,
        ts_args_type = "options?: ConnectOptions | null",
        ts_return_type = "Promise<Session>"
    )]
    pub fn connect<'env>(
        env: &'env Env,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Session>> {
        let opts = match options::parse(options) {
            Ok(o) => o,
            Err(e) => return rejected(env, e),
        };
        promise(
            env,
            async move {
                let session = kt_core::Session::connect(opts)
                    .await
                    .map_err(KtError::from)?;
                Ok((session, tokio::runtime::Handle::current()))
            },
            |(s, runtime)| Session {
                inner: Some(Arc::new(s)),
                runtime,
            },
        )
    }

    /// The session id (the `kt.dev/session` label on its objects).
    #[napi(catch_unwind, getter)]
    pub fn id(&self) -> String {
        self.core().map(|s| s.id().to_owned()).unwrap_or_default()
    }

    /// The namespace the session works in.
    #[napi(catch_unwind, getter)]
    pub fn namespace(&self) -> String {
        self.core()
            .map(|s| s.namespace().to_owned())
            .unwrap_or_default()
    }

    /// The shadow pod's name.
    #[napi(catch_unwind, getter)]
    pub fn pod_name(&self) -> String {
        self.core()
            .map(|s| s.pod_name().to_owned())
            .unwrap_or_default()
    }

    /// The local SOCKS5 proxy, `127.0.0.1:port` (names resolve in the cluster: use it
    /// as `socks5h://`).
    #[napi(catch_unwind, getter)]
    pub fn socks5_addr(&self) -> String {
        self.core()
            .map(|s| s.socks5_addr().to_string())
            .unwrap_or_default()
    }

    /// The local HTTP proxy, `127.0.0.1:port` (`CONNECT` and absolute-URL requests).
    #[napi(catch_unwind, getter)]
    pub fn http_proxy_addr(&self) -> String {
        self.core()
            .map(|s| s.http_proxy_addr().to_string())
            .unwrap_or_default()
    }

    /// The SOCKS5 proxy as a URL: `socks5h://127.0.0.1:port`, or
    /// `socks5h://user:password@127.0.0.1:port` when the session was opened with
    /// `proxyAuth: true` (then keep it secret).
    #[napi(catch_unwind, getter)]
    pub fn socks5_url(&self) -> String {
        self.core().map(|s| s.socks5_url()).unwrap_or_default()
    }

    /// The HTTP proxy as a URL: `http://127.0.0.1:port`, or
    /// `http://user:password@127.0.0.1:port` when the session was opened with
    /// `proxyAuth: true` (then keep it secret).
    #[napi(catch_unwind, getter)]
    pub fn http_proxy_url(&self) -> String {
        self.core().map(|s| s.http_proxy_url()).unwrap_or_default()
    }

    /// The cluster DNS server the session queries (as the shadow pod reaches it).
    #[napi(catch_unwind, getter)]
    pub fn dns_server(&self) -> String {
        self.core()
            .map(|s| s.dns_server().to_owned())
            .unwrap_or_default()
    }

    /// VPN mode's local DNS server, `ip:port`; `null` in proxy mode or without one.
    #[napi(catch_unwind, getter)]
    pub fn dns_addr(&self) -> Option<String> {
        self.core().ok()?.dns_addr().map(|a| a.to_string())
    }

    /// VPN mode's device, routes and DNS; `null` in proxy mode.
    #[napi(catch_unwind, getter)]
    pub fn vpn(&self) -> Option<VpnInfo> {
        let info = self.core().ok()?.vpn()?;
        Some(VpnInfo {
            device: info.device.clone(),
            routes: info.routes.iter().map(ToString::to_string).collect(),
            dns_addr: info.dns_addr.map(|a| a.to_string()),
            dns_detail: info.dns_detail.clone(),
        })
    }

    /// Environment variables that send a child process's traffic through the session
    /// (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY` in both cases, and
    /// `NODE_USE_ENV_PROXY=1`). Pass them to `child_process.spawn(..., { env })`.
    #[napi(catch_unwind)]
    pub fn env(&self) -> HashMap<String, String> {
        self.core()
            .map(|s| s.env().into_iter().collect())
            .unwrap_or_default()
    }

    /// The IP addresses of `name` in the cluster, with the search list of a pod in the
    /// session's namespace (`echo`, `echo.other-ns`, `echo.ns.svc.cluster.local`).
    /// Rejects with `KT_NOT_FOUND` when the name does not exist.
    #[napi(
        catch_unwind,
        ts_args_type = "name: string",
        ts_return_type = "Promise<string[]>"
    )]
    pub fn resolve<'env>(
        &self,
        env: &'env Env,
        name: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Vec<String>>> {
        let checked = self.core().cloned().and_then(|s| {
            let name = non_empty(required(name, "name")?, "name")?;
            Ok((s, name))
        });
        let (session, name) = match checked {
            Ok(v) => v,
            Err(e) => return rejected(env, e),
        };
        promise(
            env,
            async move { session.resolve(&name).await.map_err(KtError::from) },
            |ips| ips.into_iter().map(|ip| ip.to_string()).collect(),
        )
    }

    /// Listens on 127.0.0.1 (a free port) and tunnels every connection to `target`'s
    /// `port` in the cluster. `target`: a Service (`echo`, `echo.other-ns`,
    /// `svc/echo`), `pod/name`, or an IP address; for a Service, `port` is the Service
    /// port. Resolves to the local address; the forward lives until the session closes.
    #[napi(
        catch_unwind,
        ts_args_type = "target: string, port: number",
        ts_return_type = "Promise<LocalAddress>"
    )]
    pub fn forward<'env>(
        &self,
        env: &'env Env,
        target: Option<Unknown<'_>>,
        port: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, LocalAddress>> {
        let (session, target, port) = match self.forward_args(target, port) {
            Ok(v) => v,
            Err(e) => return rejected(env, e),
        };
        promise(
            env,
            async move { session.forward(&target, port).await.map_err(KtError::from) },
            LocalAddress::from,
        )
    }

    /// Like `forward` for UDP (kt-shadow only): a UDP socket on 127.0.0.1 whose
    /// datagrams go to `target`'s UDP `port`, replies back to their sender.
    #[napi(
        catch_unwind,
        ts_args_type = "target: string, port: number",
        ts_return_type = "Promise<LocalAddress>"
    )]
    pub fn forward_udp<'env>(
        &self,
        env: &'env Env,
        target: Option<Unknown<'_>>,
        port: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, LocalAddress>> {
        let (session, target, port) = match self.forward_args(target, port) {
            Ok(v) => v,
            Err(e) => return rejected(env, e),
        };
        promise(
            env,
            async move {
                session
                    .forward_udp(&target, port)
                    .await
                    .map_err(KtError::from)
            },
            LocalAddress::from,
        )
    }

    /// Opens a UDP flow to `target`'s UDP `port` (kt-shadow only), to send and receive
    /// datagrams from this process: `target` as for `forward`. Rejects with
    /// `KT_CONNECT` when the shadow cannot open it, `KT_UNSUPPORTED` with the OpenSSH
    /// shadow.
    #[napi(
        catch_unwind,
        ts_args_type = "target: string, port: number",
        ts_return_type = "Promise<UdpChannel>"
    )]
    pub fn udp_channel<'env>(
        &self,
        env: &'env Env,
        target: Option<Unknown<'_>>,
        port: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, UdpChannel>> {
        let (session, target, port) = match self.forward_args(target, port) {
            Ok(v) => v,
            Err(e) => return rejected(env, e),
        };
        promise(
            env,
            async move {
                let channel = session
                    .udp_channel(&target, port)
                    .await
                    .map_err(KtError::from)?;
                Ok((channel, target))
            },
            move |(channel, target)| UdpChannel::new(channel, target, port),
        )
    }

    /// Takes over `target`'s traffic (`deploy/NAME`, `sts/NAME`, `svc/NAME`, or a bare
    /// name: a Service, else a Deployment, else a StatefulSet): connections that pods
    /// make to it arrive at local ports here until the `Swap` is closed (`await using
    /// swap = await session.swap(...)`). Nothing changes before the swap shadow is
    /// ready and listening. Rejects with `KT_CONFLICT` while another live session
    /// holds the target (the message names it and since when), `KT_NOT_FOUND` for a
    /// missing target, `KT_INVALID_ARGUMENT` for a port the target does not have,
    /// `KT_CONNECT` when nothing listens on a local port, `KT_FORBIDDEN` without the
    /// Role `kt-inbound`.
    #[napi(
        catch_unwind,
        ts_args_type = "target: string, options: SwapOptions",
        ts_return_type = "Promise<Swap>"
    )]
    pub fn swap<'env>(
        &self,
        env: &'env Env,
        target: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Swap>> {
        inbound::swap(env, self.core().cloned(), target, options)
    }

    /// Publishes local ports as a new Service `name` in the session's namespace: pods
    /// connecting to `name:remote` reach `127.0.0.1:local` here until the `Expose` is
    /// closed. Rejects with `KT_CONFLICT` when a Service `name` exists already
    /// (nothing is created then).
    #[napi(
        catch_unwind,
        ts_args_type = "name: string, options: ExposeOptions",
        ts_return_type = "Promise<Expose>"
    )]
    pub fn expose<'env>(
        &self,
        env: &'env Env,
        name: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Expose>> {
        inbound::expose(env, self.core().cloned(), name, options)
    }

    /// Meshes `target`'s Service (`svc/NAME`, or a workload one Service selects): only
    /// its requests that match `options.rule` (default: a header `version` with a
    /// random value; `mesh.header` says what to send) arrive at local ports here, every
    /// other request keeps reaching its pods, until the `Mesh` is closed (`await using
    /// mesh = await session.mesh(...)`). Several developers mesh one Service at once,
    /// each with their own rule. Rejects with `KT_CONFLICT` when another developer
    /// already routes the same header value (the message names them),
    /// `KT_INVALID_ARGUMENT` for a bad rule or a target no single Service selects.
    #[napi(
        catch_unwind,
        ts_args_type = "target: string, options: MeshOptions",
        ts_return_type = "Promise<Mesh>"
    )]
    pub fn mesh<'env>(
        &self,
        env: &'env Env,
        target: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> napi::Result<PromiseRaw<'env, Mesh>> {
        inbound::mesh(env, self.core().cloned(), target, options)
    }

    /// Every event since the session started, then new ones, ending after `Closed`.
    #[napi(catch_unwind)]
    pub fn events(&self, env: &Env) -> napi::Result<EventStream> {
        match self.core() {
            Ok(s) => Ok(EventStream::new(s.events())),
            Err(e) => Err(e.into_js(env)),
        }
    }

    /// Removes the shadow pod and its Secret if any (waiting until they are gone),
    /// ends the tunnel, the proxies and the forwards. Calling it again does nothing. After it,
    /// methods reject with `KT_CLOSED`.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let session = match self.core() {
            Ok(s) => Arc::clone(s),
            Err(e) => return rejected(env, e),
        };
        promise(
            env,
            async move { session.close().await.map_err(KtError::from) },
            |()| (),
        )
    }

    fn forward_args(
        &self,
        target: Option<Unknown<'_>>,
        port_arg: Option<Unknown<'_>>,
    ) -> Result<(Arc<kt_core::Session>, String, u16), KtError> {
        let session = Arc::clone(self.core()?);
        let target = non_empty(required(target, "target")?, "target")?;
        let port = port(required(port_arg, "port")?, "port", false)?;
        Ok((session, target, port))
    }
}
