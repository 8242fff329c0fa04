//! Errors as JavaScript sees them: an `Error` whose message is the whole Rust
//! `source()` chain, with a stable `code` to branch on (`KT_NOT_FOUND`, ...), the
//! kt-core variant name as `kind`, and `transient` (a reconnect may help).
//!
//! Every promise the addon returns rejects with such an error, including for bad
//! arguments: the addon never throws synchronously from an async method.

use std::error::Error as StdError;
use std::future::Future;

use napi::bindgen_prelude::{JsObjectValue, PromiseRaw, ToNapiValue};
use napi::{Env, JsValue, Status};

/// An error on its way to JavaScript.
#[derive(Debug, Clone)]
pub(crate) struct KtError {
    /// The stable code (`KT_...`).
    pub(crate) code: &'static str,
    /// The kt-core variant (`NamespaceNotFound`, ...), or `InvalidArgument`.
    pub(crate) kind: &'static str,
    /// The message with its causes.
    pub(crate) message: String,
    /// Whether retrying may help.
    pub(crate) transient: bool,
}

impl KtError {
    /// A bad argument from JavaScript (wrong type, unknown option, bad value).
    pub(crate) fn invalid(message: impl Into<String>) -> KtError {
        KtError {
            code: "KT_INVALID_ARGUMENT",
            kind: "InvalidArgument",
            message: message.into(),
            transient: false,
        }
    }

    /// A use of a session that has been closed.
    pub(crate) fn closed() -> KtError {
        KtError::from(kt_core::Error::Closed)
    }

    /// The JavaScript error: `Error` with `code`, `kind` and `transient`. If the
    /// object cannot be built (the environment is going away), a plain napi error with
    /// the same message.
    pub(crate) fn into_js(self, env: &Env) -> napi::Error {
        let build = || -> napi::Result<napi::Error> {
            let mut obj = env.create_error(napi::Error::new(
                Status::GenericFailure,
                self.message.clone(),
            ))?;
            obj.set_named_property("code", self.code)?;
            obj.set_named_property("kind", self.kind)?;
            obj.set_named_property("transient", self.transient)?;
            Ok(napi::Error::from(obj.to_unknown()))
        };
        build().unwrap_or_else(|_| {
            napi::Error::new(
                Status::GenericFailure,
                format!("{}: {}", self.code, self.message),
            )
        })
    }
}

impl From<kt_core::Error> for KtError {
    fn from(e: kt_core::Error) -> KtError {
        use kt_core::Error as E;
        let (code, kind) = match &e {
            E::Kubeconfig { .. } => ("KT_KUBECONFIG", "Kubeconfig"),
            E::ReadKubeconfig { .. } => ("KT_KUBECONFIG", "ReadKubeconfig"),
            E::NoConfig { .. } => ("KT_KUBECONFIG", "NoConfig"),
            E::Client { .. } => ("KT_KUBECONFIG", "Client"),
            E::ApiUnreachable { .. } => ("KT_API_UNREACHABLE", "ApiUnreachable"),
            E::NamespaceNotFound { .. } => ("KT_NOT_FOUND", "NamespaceNotFound"),
            E::TargetNotFound { .. } => ("KT_NOT_FOUND", "TargetNotFound"),
            E::NameNotFound { .. } => ("KT_NOT_FOUND", "NameNotFound"),
            E::Forbidden { .. } => ("KT_FORBIDDEN", "Forbidden"),
            E::Api { .. } => ("KT_API", "Api"),
            E::ShadowImage { .. } => ("KT_SHADOW", "ShadowImage"),
            E::ShadowFailed { .. } => ("KT_SHADOW", "ShadowFailed"),
            E::PodReadyTimeout { .. } => ("KT_TIMEOUT", "PodReadyTimeout"),
            E::PortForward { .. } => ("KT_TUNNEL", "PortForward"),
            E::Ssh { .. } => ("KT_TUNNEL", "Ssh"),
            E::TunnelDown { .. } => ("KT_TUNNEL", "TunnelDown"),
            E::Dns { .. } => ("KT_DNS", "Dns"),
            E::Connect { .. } => ("KT_CONNECT", "Connect"),
            E::InvalidTarget { .. } => ("KT_INVALID_ARGUMENT", "InvalidTarget"),
            E::DatagramTooLarge { .. } => ("KT_INVALID_ARGUMENT", "DatagramTooLarge"),
            E::Unsupported { .. } => ("KT_UNSUPPORTED", "Unsupported"),
            E::FlowClosed { .. } => ("KT_CLOSED", "FlowClosed"),
            E::Closed => ("KT_CLOSED", "Closed"),
            E::Bind { .. } => ("KT_IO", "Bind"),
            E::Keys { .. } => ("KT_INTERNAL", "Keys"),
            E::NeedsCapability { .. } => ("KT_NEEDS_CAPABILITY", "NeedsCapability"),
            E::Vpn { .. } => ("KT_VPN", "Vpn"),
            E::SystemDns { .. } => ("KT_VPN", "SystemDns"),
            E::Cleanup { .. } => ("KT_CLEANUP", "Cleanup"),
            _ => ("KT_ERROR", "Other"),
        };
        KtError {
            code,
            kind,
            message: flatten(&e),
            transient: e.is_transient(),
        }
    }
}

/// The error's message followed by each cause in its `source()` chain that the
/// message does not already quote (kt-core's messages often embed their source).
pub(crate) fn flatten(e: &dyn StdError) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// A promise settled by `fut`: resolved with `to_js` of its value, or rejected with
/// its [`KtError`].
pub(crate) fn promise<'env, T, V, F, C>(
    env: &'env Env,
    fut: F,
    to_js: C,
) -> napi::Result<PromiseRaw<'env, V>>
where
    T: Send + 'static,
    V: ToNapiValue,
    F: Future<Output = Result<T, KtError>> + Send + 'static,
    C: FnOnce(T) -> V + 'static,
{
    env.spawn_future_with_callback(
        async move { Ok(fut.await) },
        move |env, result| match result {
            Ok(value) => Ok(to_js(value)),
            Err(e) => Err(e.into_js(env)),
        },
    )
}

/// A promise that rejects with `e` (bad arguments, a closed session).
pub(crate) fn rejected<'env, V: ToNapiValue + Send + 'static>(
    env: &'env Env,
    e: KtError,
) -> napi::Result<PromiseRaw<'env, V>> {
    promise(env, async move { Err::<V, _>(e) }, |v| v)
}
