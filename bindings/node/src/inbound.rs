//! Inbound traffic: `session.swap(target, options)`, `session.expose(name, options)`
//! and `session.mesh(target, options)` (each a handle with its own events and
//! `close()`), and the module functions `clean(options)` and `recover(target,
//! options)`.
//!
//! The options objects are checked by hand, as `Session.connect`'s are, so that every
//! mistake is a `KT_INVALID_ARGUMENT` rejection naming the option; ports, modes and
//! Service types and mesh rules are parsed by kt-core's parsers (`PortMap::parse_list`,
//! `SwapMode::from_str`, `ServiceType::from_str`, `MeshRule::from_str`), as in every
//! other front end.

use std::sync::Arc;

use kt_core::{
    Events, ExposeOptions, MeshOptions, MeshRule, PortMap, ServiceType, SwapMode, SwapOptions,
};
use napi::bindgen_prelude::{Function, JsObjectValue, Object, PromiseRaw, Unknown};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{Env, JsValue, ValueType};
use napi_derive::napi;

use crate::error::{KtError, promise, rejected};
use crate::events::{Event, EventStream, event};
use crate::options::{self, millis, non_empty, type_name};

// These structs declare the TypeScript types of the options (index.d.ts); the
// functions below read the JavaScript objects by hand, so `on_event`'s Rust type is a
// placeholder.
/// Options of `session.swap(target, options)`; `expose` is required.
#[napi(object, js_name = "SwapOptions")]
#[derive(Debug, Default)]
pub struct SwapOptionsShape {
    /// `local[:remote]` pairs: `'8080:80'`, `'8080:80,9090'` or `['8080:80', '9090:grpc']`.
    /// `remote` (default: the local port's number) is a Service port, a container port
    /// or a port name of the target.
    #[napi(ts_type = "string | string[]")]
    pub expose: String,
    /// `'selector'` (default: the Services that select the workload select the swap
    /// shadow instead; the workload keeps running) or `'scale'` (the shadow carries
    /// the workload's pod labels and the workload is scaled to 0; a workload under a
    /// HorizontalPodAutoscaler is refused).
    #[napi(ts_type = "'selector' | 'scale'")]
    pub mode: Option<String>,
    /// Refuse (`KT_CONNECT`) when nothing listens on a local port (default true;
    /// false to start the local process afterwards).
    pub check_local: Option<bool>,
    /// After how long without a heartbeat the swap shadow puts the cluster back by
    /// itself, if this process died (default 30000, at least 3000).
    pub restore_ttl_ms: Option<f64>,
    /// Called with every event of the swap as it happens; it must not throw.
    #[napi(ts_type = "(event: Event) => void")]
    pub on_event: Option<String>,
}

/// Options of `session.expose(name, options)`; `expose` is required.
#[napi(object, js_name = "ExposeOptions")]
#[derive(Debug, Default)]
pub struct ExposeOptionsShape {
    /// `local[:remote]` pairs as for `swap` (`remote` is the Service port; default the
    /// local port's number).
    #[napi(ts_type = "string | string[]")]
    pub expose: String,
    /// The Service's type (default `'ClusterIP'`; any case).
    #[napi(ts_type = "'ClusterIP' | 'NodePort' | 'LoadBalancer'")]
    pub service_type: Option<String>,
    /// Refuse (`KT_CONNECT`) when nothing listens on a local port (default true).
    pub check_local: Option<bool>,
    /// Called with every event of the expose as it happens; it must not throw.
    #[napi(ts_type = "(event: Event) => void")]
    pub on_event: Option<String>,
}

/// Options of `session.mesh(target, options)`; `expose` is required.
#[napi(object, js_name = "MeshOptions")]
#[derive(Debug, Default)]
pub struct MeshOptionsShape {
    /// `local[:remote]` pairs as for `swap` (`remote`: a Service port, a container port
    /// or a port name of the Service's pods).
    #[napi(ts_type = "string | string[]")]
    pub expose: String,
    /// Which requests come here: `'version=alice'` (`'version:alice'` too),
    /// `'x-dev~^a.*'` (a header matching a regex), `'/api'` (a path prefix), joined by
    /// `&&` (all) or `||` (any). Default: kt-connect's mark, a header `version` with a
    /// random value (`mesh.header` says what to send).
    pub rule: Option<String>,
    /// Refuse (`KT_CONNECT`) when nothing listens on a local port (default true).
    pub check_local: Option<bool>,
    /// After how long without a heartbeat this developer's rule is removed by itself
    /// (the last one's also puts the Service back), if this process died (default
    /// 30000, at least 3000).
    pub restore_ttl_ms: Option<f64>,
    /// Called with every event of the mesh as it happens; it must not throw.
    #[napi(ts_type = "(event: Event) => void")]
    pub on_event: Option<String>,
}

/// The keys of `swap`'s options, for the message about an unknown one.
const SWAP_KEYS: &[&str] = &["expose", "mode", "checkLocal", "restoreTtlMs", "onEvent"];
/// The keys of `expose`'s options, for the message about an unknown one.
const EXPOSE_KEYS: &[&str] = &["expose", "serviceType", "checkLocal", "onEvent"];
/// The keys of `mesh`'s options, for the message about an unknown one.
const MESH_KEYS: &[&str] = &["expose", "rule", "checkLocal", "restoreTtlMs", "onEvent"];

fn is(value: &Unknown<'_>, ty: ValueType) -> bool {
    value.get_type().ok() == Some(ty)
}

fn napi_failed(path: &str, e: &napi::Error) -> KtError {
    KtError::invalid(format!("cannot read {path}: {}", e.reason))
}

/// The options object (required: it carries `expose`).
fn object<'env>(value: Option<Unknown<'env>>, what: &str) -> Result<Object<'env>, KtError> {
    let Some(value) = value.filter(|v| !is(v, ValueType::Undefined) && !is(v, ValueType::Null))
    else {
        return Err(KtError::invalid(format!(
            "{what} needs options with `expose`, like {{ expose: ['8080:80'] }}"
        )));
    };
    if !is(&value, ValueType::Object) || value.is_array().unwrap_or(true) {
        return Err(KtError::invalid(format!(
            "options must be an object like {{ expose: ['8080:80'] }}, got {}",
            type_name(&value)
        )));
    }
    value
        .coerce_to_object()
        .map_err(|e| napi_failed("options", &e))
}

fn entries<'env>(obj: &Object<'env>) -> Result<Vec<(String, Unknown<'env>)>, KtError> {
    let keys = Object::keys(obj).map_err(|e| napi_failed("options", &e))?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let value: Unknown<'env> = obj
            .get_named_property(&key)
            .map_err(|e| napi_failed(&format!("options.{key}"), &e))?;
        if !is(&value, ValueType::Undefined) {
            out.push((key, value));
        }
    }
    Ok(out)
}

fn boolean(value: Unknown<'_>, path: &str) -> Result<bool, KtError> {
    if !is(&value, ValueType::Boolean) {
        return Err(KtError::invalid(format!(
            "{path} must be a boolean, got {}",
            type_name(&value)
        )));
    }
    value.coerce_to_bool().map_err(|e| napi_failed(path, &e))
}

/// `expose`: a string (`'8080:80,9090'`) or an array of them.
fn ports(value: Unknown<'_>, path: &str) -> Result<Vec<PortMap>, KtError> {
    let texts = if is(&value, ValueType::String) {
        vec![options::string(value, path)?]
    } else if value.is_array().unwrap_or(false) {
        let arr = value
            .coerce_to_object()
            .map_err(|e| napi_failed(path, &e))?;
        let len = arr.get_array_length().map_err(|e| napi_failed(path, &e))?;
        let mut texts = Vec::new();
        for i in 0..len {
            let item: Unknown<'_> = arr
                .get_element(i)
                .map_err(|e| napi_failed(&format!("{path}[{i}]"), &e))?;
            texts.push(options::string(item, &format!("{path}[{i}]"))?);
        }
        texts
    } else {
        return Err(KtError::invalid(format!(
            "{path} must be a string like '8080:80,9090' or an array of them, got {}",
            type_name(&value)
        )));
    };
    PortMap::parse_list(texts.iter().map(String::as_str)).map_err(|e| KtError::from(e).at(path))
}

/// A string parsed by kt-core's parser for it.
fn parsed<T: std::str::FromStr<Err = kt_core::Error>>(
    value: Unknown<'_>,
    path: &str,
) -> Result<T, KtError> {
    options::string(value, path)?
        .parse::<T>()
        .map_err(|e| KtError::from(e).at(path))
}

/// `onEvent`: a weak threadsafe function (it must not keep Node running).
fn callback(
    obj: &Object<'_>,
    key: &str,
    value: &Unknown<'_>,
) -> Result<impl Fn(&kt_core::Event) + Send + Sync + 'static, KtError> {
    let path = format!("options.{key}");
    if !is(value, ValueType::Function) {
        return Err(KtError::invalid(format!(
            "{path} must be a function, got {}",
            type_name(value)
        )));
    }
    let callback: Function<'_, Event, ()> = obj
        .get_named_property(key)
        .map_err(|e| napi_failed(&path, &e))?;
    let tsfn = callback
        .build_threadsafe_function()
        .weak::<true>()
        .callee_handled::<false>()
        .build()
        .map_err(|e| napi_failed(&path, &e))?;
    Ok(move |e: &kt_core::Event| {
        tsfn.call(event(e), ThreadsafeFunctionCallMode::NonBlocking);
    })
}

fn unknown_key(key: &str, known: &[&str]) -> KtError {
    KtError::invalid(format!(
        "unknown option `{key}`; known options: {}",
        known.join(", ")
    ))
}

fn missing_expose(what: &str) -> KtError {
    KtError::invalid(format!(
        "options.expose is required: the local ports to {what}, like {{ expose: ['8080:80'] }}"
    ))
}

/// `swap`'s options.
fn swap_options(value: Option<Unknown<'_>>) -> Result<(Vec<PortMap>, SwapOptions), KtError> {
    let obj = object(value, "swap")?;
    let mut opts = SwapOptions::new();
    let mut ports_given = None;
    for (key, value) in entries(&obj)? {
        let path = format!("options.{key}");
        match key.as_str() {
            "expose" => ports_given = Some(ports(value, &path)?),
            "mode" => opts = opts.mode(parsed::<SwapMode>(value, &path)?),
            "checkLocal" => opts = opts.check_local(boolean(value, &path)?),
            "restoreTtlMs" => opts = opts.restore_ttl(millis(value, &path)?),
            "onEvent" => opts = opts.on_event(callback(&obj, &key, &value)?),
            _ => return Err(unknown_key(&key, SWAP_KEYS)),
        }
    }
    let ports = ports_given.ok_or_else(|| missing_expose("take the traffic"))?;
    Ok((ports, opts))
}

/// `expose`'s options.
fn expose_options(value: Option<Unknown<'_>>) -> Result<(Vec<PortMap>, ExposeOptions), KtError> {
    let obj = object(value, "expose")?;
    let mut opts = ExposeOptions::new();
    let mut ports_given = None;
    for (key, value) in entries(&obj)? {
        let path = format!("options.{key}");
        match key.as_str() {
            "expose" => ports_given = Some(ports(value, &path)?),
            "serviceType" => opts = opts.service_type(parsed::<ServiceType>(value, &path)?),
            "checkLocal" => opts = opts.check_local(boolean(value, &path)?),
            "onEvent" => opts = opts.on_event(callback(&obj, &key, &value)?),
            _ => return Err(unknown_key(&key, EXPOSE_KEYS)),
        }
    }
    let ports = ports_given.ok_or_else(|| missing_expose("publish"))?;
    Ok((ports, opts))
}

/// `mesh`'s options.
fn mesh_options(
    value: Option<Unknown<'_>>,
) -> Result<(Vec<PortMap>, Option<MeshRule>, MeshOptions), KtError> {
    let obj = object(value, "mesh")?;
    let mut opts = MeshOptions::new();
    let mut ports_given = None;
    let mut rule = None;
    for (key, value) in entries(&obj)? {
        let path = format!("options.{key}");
        match key.as_str() {
            "expose" => ports_given = Some(ports(value, &path)?),
            "rule" => rule = Some(parsed::<MeshRule>(value, &path)?),
            "checkLocal" => opts = opts.check_local(boolean(value, &path)?),
            "restoreTtlMs" => opts = opts.restore_ttl(millis(value, &path)?),
            "onEvent" => opts = opts.on_event(callback(&obj, &key, &value)?),
            _ => return Err(unknown_key(&key, MESH_KEYS)),
        }
    }
    let ports = ports_given.ok_or_else(|| missing_expose("send the matching requests to"))?;
    Ok((ports, rule, opts))
}

/// A `(local, remote)` port pair of a swap, an expose or a mesh.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct PortPair {
    /// The port on 127.0.0.1 that answers.
    pub local: u32,
    /// The port in the cluster whose connections arrive there.
    pub remote: u32,
}

fn port_pairs(pairs: Vec<(u16, u16)>) -> Vec<PortPair> {
    pairs
        .into_iter()
        .map(|(local, remote)| PortPair {
            local: u32::from(local),
            remote: u32::from(remote),
        })
        .collect()
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What a JavaScript handle holds of a swap, an expose or a mesh.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// `swap`, `expose`, `mesh`: for messages.
    const WHAT: &'static str;
    fn events(&self) -> Events;
    fn close(&self) -> impl Future<Output = kt_core::Result<()>> + Send;
}

/// Implements `Inbound` for kt-core's `$kind` by its own methods of the same names.
macro_rules! inbound {
    ($kind:ident, $what:literal) => {
        impl Inbound for kt_core::$kind {
            const WHAT: &'static str = $what;
            fn events(&self) -> Events {
                kt_core::$kind::events(self)
            }
            fn close(&self) -> impl Future<Output = kt_core::Result<()>> + Send {
                kt_core::$kind::close(self)
            }
        }
    };
}

inbound!(Swap, "swap");
inbound!(Expose, "expose");
inbound!(Mesh, "mesh");

/// A swap, an expose or a mesh as a JavaScript handle holds it: the getters read it,
/// `events()` and `close()` are the same for each.
pub(crate) struct Held<T: Inbound> {
    /// `None` only while being dropped.
    inner: Option<Arc<T>>,
    /// The runtime its tasks run on (napi-rs's), for `Drop`.
    runtime: tokio::runtime::Handle,
}

impl<T: Inbound> Held<T> {
    fn core(&self) -> Result<&Arc<T>, KtError> {
        self.inner.as_ref().ok_or_else(KtError::closed)
    }

    /// `f` of the handle (the default once dropped).
    fn read<R: Default>(&self, f: impl FnOnce(&T) -> R) -> R {
        self.core().map(|h| f(h)).unwrap_or_default()
    }

    fn events(&self, env: &Env) -> napi::Result<EventStream> {
        match self.core() {
            Ok(h) => Ok(EventStream::new(h.events())),
            Err(e) => Err(e.into_js(env)),
        }
    }

    fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let handle = match self.core() {
            Ok(h) => Arc::clone(h),
            Err(e) => return rejected(env, e),
        };
        promise(
            env,
            async move { handle.close().await.map_err(KtError::from) },
            |()| (),
        )
    }
}

impl<T: Inbound> Drop for Held<T> {
    fn drop(&mut self) {
        // kt-core's Drop closes it on a task, which needs the runtime to be current (see
        // Session's Drop).
        if let Some(inner) = self.inner.take() {
            let _guard = self.runtime.enter();
            drop(inner);
        }
    }
}

/// The promise of a swap, an expose or a mesh: rejected with the error of a bad
/// argument, else `start` runs on a task of its own, so that the work is not dropped
/// halfway; `wrap` makes the JavaScript handle.
fn start<'env, T: Inbound, H: napi::bindgen_prelude::ToNapiValue + Send + 'static>(
    env: &'env Env,
    start: Result<impl Future<Output = kt_core::Result<T>> + Send + 'static, KtError>,
    wrap: impl FnOnce(Held<T>) -> H + 'static,
) -> napi::Result<PromiseRaw<'env, H>> {
    let start = match start {
        Ok(start) => start,
        Err(e) => return rejected(env, e),
    };
    promise(
        env,
        async move {
            let made = tokio::spawn(start)
                .await
                .map_err(|e| KtError::internal(format!("the {} task failed: {e}", T::WHAT)))?
                .map_err(KtError::from)?;
            Ok(Held {
                inner: Some(Arc::new(made)),
                runtime: tokio::runtime::Handle::current(),
            })
        },
        wrap,
    )
}

/// A workload's traffic going to a process on this machine (`session.swap`). Close it
/// with `close()` (or `await using`): the cluster is put back exactly (a value
/// someone else changed meanwhile is left alone and reported as a `RestoreConflict`
/// event), the original pods serve again, then the swap shadow is removed. A swap
/// collected without `close()` is closed in the background; if the process dies, the
/// swap shadow restores the cluster by itself after `restoreTtlMs`.
#[napi]
pub struct Swap {
    held: Held<kt_core::Swap>,
}

#[napi]
impl Swap {
    /// The swap's id (the `kt.dev/session` label of its objects).
    #[napi(catch_unwind, getter)]
    pub fn id(&self) -> String {
        self.held.read(|s| s.id().to_owned())
    }

    /// The target as resolved (`deploy/web`, `sts/db`, `svc/web`).
    #[napi(catch_unwind, getter)]
    pub fn target(&self) -> String {
        self.held.read(|s| s.target().to_owned())
    }

    /// `'selector'` or `'scale'`.
    #[napi(catch_unwind, getter, ts_return_type = "'selector' | 'scale'")]
    pub fn mode(&self) -> String {
        self.held.read(|s| s.mode().as_str().to_owned())
    }

    /// The swap shadow pod's name.
    #[napi(catch_unwind, getter)]
    pub fn pod_name(&self) -> String {
        self.held.read(|s| s.pod_name().to_owned())
    }

    /// The Services that select the target (in selector mode, those switched to the
    /// swap shadow).
    #[napi(catch_unwind, getter)]
    pub fn services(&self) -> Vec<String> {
        self.held.read(|s| s.services().to_vec())
    }

    /// `{ local, remote }` for every port: connections to `remote` in the cluster
    /// arrive at `127.0.0.1:local`.
    #[napi(catch_unwind, getter)]
    pub fn ports(&self) -> Vec<PortPair> {
        self.held.read(|s| port_pairs(s.ports()))
    }

    /// How many connections arrived from the cluster so far (each is also an
    /// `Inbound` event naming who connected).
    #[napi(catch_unwind, getter)]
    pub fn connections(&self) -> i64 {
        self.held.read(|s| count(s.connections()))
    }

    /// Every event of the swap so far, then new ones, ending after `Closed`.
    #[napi(catch_unwind)]
    pub fn events(&self, env: &Env) -> napi::Result<EventStream> {
        self.held.events(env)
    }

    /// Puts the cluster back, waits until the original pods serve again, then removes
    /// the swap shadow. Calling it again does nothing.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.held.close(env)
    }
}

/// Local ports published as a new Service (`session.expose`). `close()` (or
/// `await using`) removes the Service and its shadow.
#[napi]
pub struct Expose {
    held: Held<kt_core::Expose>,
}

#[napi]
impl Expose {
    /// The expose's id (the `kt.dev/session` label of its objects).
    #[napi(catch_unwind, getter)]
    pub fn id(&self) -> String {
        self.held.read(|s| s.id().to_owned())
    }

    /// The Service's name.
    #[napi(catch_unwind, getter)]
    pub fn service(&self) -> String {
        self.held.read(|s| s.service().to_owned())
    }

    /// The expose shadow pod's name.
    #[napi(catch_unwind, getter)]
    pub fn pod_name(&self) -> String {
        self.held.read(|s| s.pod_name().to_owned())
    }

    /// `{ local, remote }` for every port: connections to the Service's `remote` port
    /// arrive at `127.0.0.1:local`.
    #[napi(catch_unwind, getter)]
    pub fn ports(&self) -> Vec<PortPair> {
        self.held.read(|s| port_pairs(s.ports()))
    }

    /// How many connections arrived from the cluster so far.
    #[napi(catch_unwind, getter)]
    pub fn connections(&self) -> i64 {
        self.held.read(|s| count(s.connections()))
    }

    /// Every event of the expose so far, then new ones, ending after `Closed`.
    #[napi(catch_unwind)]
    pub fn events(&self, env: &Env) -> napi::Result<EventStream> {
        self.held.events(env)
    }

    /// Removes the Service and the expose shadow. Calling it again does nothing.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.held.close(env)
    }
}

/// A developer's place in a meshed Service (`session.mesh`): the Service's requests
/// that match `rule` (send `header`) arrive at local ports here; every other request
/// keeps reaching its pods. `close()` (or `await using`) removes this developer's
/// rule and shadow; the last developer's close also puts the Service back exactly and
/// removes the router. A mesh collected without `close()` is closed in the background;
/// if the process dies, its rule goes after `restoreTtlMs`.
#[napi]
pub struct Mesh {
    held: Held<kt_core::Mesh>,
}

#[napi]
impl Mesh {
    /// The mesh's id (the `kt.dev/session` label of this developer's shadow).
    #[napi(catch_unwind, getter)]
    pub fn id(&self) -> String {
        self.held.read(|m| m.id().to_owned())
    }

    /// The meshed Service's name.
    #[napi(catch_unwind, getter)]
    pub fn service(&self) -> String {
        self.held.read(|m| m.service().to_owned())
    }

    /// Which requests come here, in canonical text (`version=alice`).
    #[napi(catch_unwind, getter)]
    pub fn rule(&self) -> String {
        self.held.read(|m| m.rule().to_string())
    }

    /// The header to send for a request to come here, as `{ [name]: value }` (pass it
    /// as a client's headers: `fetch(url, { headers: mesh.header })`); with the
    /// default rule, `{ version: <random> }`. `null` for a rule of only regexes and
    /// path prefixes.
    #[napi(catch_unwind, getter, ts_return_type = "Record<string, string> | null")]
    pub fn header(&self) -> Option<std::collections::HashMap<String, String>> {
        self.held.read(|m| {
            m.header()
                .map(|(n, v)| std::collections::HashMap::from([(n.to_owned(), v.to_owned())]))
        })
    }

    /// The router pod's name (shared by every developer of the Service).
    #[napi(catch_unwind, getter)]
    pub fn router(&self) -> String {
        self.held.read(|m| m.router().to_owned())
    }

    /// This developer's mesh shadow pod's name.
    #[napi(catch_unwind, getter)]
    pub fn pod_name(&self) -> String {
        self.held.read(|m| m.pod_name().to_owned())
    }

    /// `{ local, remote }` for every port: matching requests to the pods' `remote`
    /// port arrive at `127.0.0.1:local`.
    #[napi(catch_unwind, getter)]
    pub fn ports(&self) -> Vec<PortPair> {
        self.held.read(|m| port_pairs(m.ports()))
    }

    /// How many connections arrived from the router so far.
    #[napi(catch_unwind, getter)]
    pub fn connections(&self) -> i64 {
        self.held.read(|m| count(m.connections()))
    }

    /// Every event of the mesh so far, then new ones, ending after `Closed`.
    #[napi(catch_unwind)]
    pub fn events(&self, env: &Env) -> napi::Result<EventStream> {
        self.held.events(env)
    }

    /// Removes this developer's rule and shadow; the last one's also puts the Service
    /// back, waits until its pods serve it and removes the router. Calling it again
    /// does nothing.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.held.close(env)
    }
}

/// `target` of `swap`/`mesh`: required, a non-empty string.
fn target_arg(target: Option<Unknown<'_>>) -> Result<String, KtError> {
    let target = target
        .filter(|v| !is(v, ValueType::Undefined))
        .ok_or_else(|| {
            KtError::invalid("target is required (deploy/NAME, sts/NAME, svc/NAME or a name)")
        })?;
    non_empty(target, "target")
}

/// The promise of `session.swap(target, options)`.
pub(crate) fn swap<'env>(
    env: &'env Env,
    session: Result<Arc<kt_core::Session>, KtError>,
    target: Option<Unknown<'_>>,
    options: Option<Unknown<'_>>,
) -> napi::Result<PromiseRaw<'env, Swap>> {
    let work = session.and_then(|session| {
        let target = target_arg(target)?;
        let (ports, opts) = swap_options(options)?;
        Ok(async move { session.swap_with(&target, &ports, opts).await })
    });
    start(env, work, |held| Swap { held })
}

/// The promise of `session.expose(name, options)`.
pub(crate) fn expose<'env>(
    env: &'env Env,
    session: Result<Arc<kt_core::Session>, KtError>,
    name: Option<Unknown<'_>>,
    options: Option<Unknown<'_>>,
) -> napi::Result<PromiseRaw<'env, Expose>> {
    let work = session.and_then(|session| {
        let name = name
            .filter(|v| !is(v, ValueType::Undefined))
            .ok_or_else(|| KtError::invalid("name is required (the new Service's name)"))?;
        let name = non_empty(name, "name")?;
        let (ports, opts) = expose_options(options)?;
        Ok(async move { session.expose_with(&name, &ports, opts).await })
    });
    start(env, work, |held| Expose { held })
}

/// The promise of `session.mesh(target, options)`.
pub(crate) fn mesh<'env>(
    env: &'env Env,
    session: Result<Arc<kt_core::Session>, KtError>,
    target: Option<Unknown<'_>>,
    options: Option<Unknown<'_>>,
) -> napi::Result<PromiseRaw<'env, Mesh>> {
    let work = session.and_then(|session| {
        let target = target_arg(target)?;
        let (ports, rule, opts) = mesh_options(options)?;
        Ok(async move { session.mesh_with(&target, rule, &ports, opts).await })
    });
    start(env, work, |held| Mesh { held })
}

/// What `clean` or `recover` did, or in a dry run would do.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct CleanReport {
    /// Whether nothing was changed (a dry run).
    pub dry_run: bool,
    /// One line per action, in words (`restored Service dev/web: /spec/selector`).
    pub actions: Vec<String>,
    /// What was found but left alone, and why (a live session holds it; someone
    /// changed a value kt had written).
    pub left: Vec<String>,
    /// The report as kt prints it (`would do: ...`, `left: ...`, or `nothing to clean`).
    pub text: String,
}

impl From<kt_core::CleanReport> for CleanReport {
    fn from(r: kt_core::CleanReport) -> CleanReport {
        CleanReport {
            text: r.to_string(),
            dry_run: r.dry_run,
            actions: r.actions,
            left: r.left,
        }
    }
}

/// Options of `clean` and `recover`: `Session.connect`'s connection options and
/// `dryRun`.
fn clean_options(options: Option<Unknown<'_>>) -> Result<(kt_core::ConnectOptions, bool), KtError> {
    let (opts, extra) = options::parse_with(options, &["dryRun"])?;
    let mut dry_run = false;
    for (key, value) in extra {
        if key == "dryRun" {
            dry_run = boolean(value, "options.dryRun")?;
        }
    }
    Ok((opts, dry_run))
}

/// Finds what kt sessions that died left in the namespace, puts it back and removes
/// it: objects whose hold expired are restored (a value someone changed meanwhile is
/// left and listed in `left`), kt pods whose lease expired are deleted, identities and
/// exposed Services whose shadow is gone are removed. Live sessions are left alone.
/// Takes `Session.connect`'s connection options (`kubeconfig`, `context`,
/// `namespace`, ...) and `dryRun: true` to only list what it would do; opens no
/// session.
#[napi(
    catch_unwind,
    ts_args_type = "options?: ConnectOptions & { dryRun?: boolean } | null",
    ts_return_type = "Promise<CleanReport>"
)]
pub fn clean<'env>(
    env: &'env Env,
    options: Option<Unknown<'_>>,
) -> napi::Result<PromiseRaw<'env, CleanReport>> {
    let (opts, dry_run) = match clean_options(options) {
        Ok(v) => v,
        Err(e) => return rejected(env, e),
    };
    promise(
        env,
        async move { kt_core::clean(&opts, dry_run).await.map_err(KtError::from) },
        CleanReport::from,
    )
}

/// Puts back one target (`deploy/web`, `sts/db`, `svc/web` or a bare name) that a kt
/// session which died left changed: its recorded selector or replica count is
/// restored. Rejects with `KT_CONFLICT` while a live session holds it,
/// `KT_NOT_FOUND` for a missing target. Options as for `clean`.
#[napi(
    catch_unwind,
    ts_args_type = "target: string, options?: ConnectOptions & { dryRun?: boolean } | null",
    ts_return_type = "Promise<CleanReport>"
)]
pub fn recover<'env>(
    env: &'env Env,
    target: Option<Unknown<'_>>,
    options: Option<Unknown<'_>>,
) -> napi::Result<PromiseRaw<'env, CleanReport>> {
    let checked = (|| {
        let target = target
            .filter(|v| !is(v, ValueType::Undefined))
            .ok_or_else(|| {
                KtError::invalid("target is required (deploy/NAME, sts/NAME, svc/NAME or a name)")
            })?;
        let target = non_empty(target, "target")?;
        let (opts, dry_run) = clean_options(options)?;
        Ok::<_, KtError>((target, opts, dry_run))
    })();
    let (target, opts, dry_run) = match checked {
        Ok(v) => v,
        Err(e) => return rejected(env, e),
    };
    promise(
        env,
        async move {
            kt_core::recover(&opts, &target, dry_run)
                .await
                .map_err(KtError::from)
        },
        CleanReport::from,
    )
}
