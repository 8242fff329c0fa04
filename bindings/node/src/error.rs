//! Errors as JavaScript sees them: an `Error` whose message is the whole Rust
//! `source()` chain, with a stable `code` to branch on, the kt-core variant name as
//! `kind`, and `transient` (a reconnect may help).
//!
//! The code is `KT_` and kt-core's [`ErrorKind`] name in upper case (`not_found` ->
//! `KT_NOT_FOUND`), taken from [`kt_core::Error::kind`]: no table here, so a kind
//! kt-core adds gets its code without a change to this file. `errorKinds()` lists the
//! kinds; the test `test/kinds.test.mjs` walks every one through this mapping.
//!
//! Every promise the addon returns rejects with such an error, including for bad
//! arguments: the addon never throws synchronously from an async method.

use std::error::Error as StdError;
use std::future::Future;

use kt_core::ErrorKind;
use napi::bindgen_prelude::{JsObjectValue, PromiseRaw, ToNapiValue};
use napi::{Env, JsValue, Status};
use napi_derive::napi;

/// An error on its way to JavaScript.
#[derive(Debug, Clone)]
pub(crate) struct KtError {
    /// The stable code (`KT_...`), from the kind.
    pub(crate) code: String,
    /// The kt-core variant (`NamespaceNotFound`, ...), or `InvalidArgument`.
    pub(crate) kind: String,
    /// The message with its causes.
    pub(crate) message: String,
    /// Whether retrying may help.
    pub(crate) transient: bool,
}

/// The JavaScript `code` of an error kind: `KT_` and its name in upper case.
pub(crate) fn code(kind: ErrorKind) -> String {
    format!("KT_{}", kind.name().to_ascii_uppercase())
}

/// The name of an error's variant (`NamespaceNotFound`), read from its `Debug` form
/// (`NamespaceNotFound { namespace: .. }`, `Closed`): every variant has one, without
/// a table of them here.
fn variant(e: &kt_core::Error) -> String {
    let debug = format!("{e:?}");
    let end = debug.find([' ', '{', '(']).unwrap_or(debug.len());
    debug[..end].to_owned()
}

impl KtError {
    /// A bad argument from JavaScript (wrong type, unknown option, bad value).
    pub(crate) fn invalid(message: impl Into<String>) -> KtError {
        KtError {
            code: code(ErrorKind::InvalidArgument),
            kind: "InvalidArgument".to_owned(),
            message: message.into(),
            transient: false,
        }
    }

    /// A failure of the binding itself (a task that panicked).
    pub(crate) fn internal(message: impl Into<String>) -> KtError {
        KtError {
            code: code(ErrorKind::Internal),
            kind: "Internal".to_owned(),
            message: message.into(),
            transient: false,
        }
    }

    /// A use of a session that has been closed.
    pub(crate) fn closed() -> KtError {
        KtError::from(kt_core::Error::Closed)
    }

    /// The same error, its message prefixed with where the bad value was
    /// (`options.vpn.dns: ...`).
    pub(crate) fn at(mut self, path: &str) -> KtError {
        self.message = format!("{path}: {}", self.message);
        self
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
            obj.set_named_property("code", self.code.as_str())?;
            obj.set_named_property("kind", self.kind.as_str())?;
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
        KtError {
            code: code(e.kind()),
            kind: variant(&e),
            message: flatten(&e),
            transient: e.is_transient(),
        }
    }
}

/// The kinds of error, by kt-core name (`invalid_argument`, `not_found`, ...): an
/// error's `code` is `'KT_' + name.toUpperCase()`. New kinds may be added; existing
/// names never change.
#[napi(catch_unwind)]
pub fn error_kinds() -> Vec<&'static str> {
    ErrorKind::ALL.iter().map(|k| k.name()).collect()
}

/// For the tests: a promise rejected with kt-core's example error of the kind named
/// `kind` (kt-core's name), converted the way every method converts its errors.
#[doc(hidden)]
#[napi(catch_unwind, js_name = "__errorExample")]
pub fn error_example<'env>(env: &'env Env, kind: String) -> napi::Result<PromiseRaw<'env, ()>> {
    let error = match kind.parse::<ErrorKind>() {
        Ok(kind) => KtError::from(kt_core::Error::example(kind)),
        Err(e) => KtError::from(e),
    };
    rejected(env, error)
}

/// For the tests: panics, as a bug in the addon would. Every entry point catches
/// panics, so JavaScript sees an exception and the process goes on.
#[doc(hidden)]
#[napi(catch_unwind, js_name = "__panicForTest")]
pub fn panic_for_test(message: String) {
    panic!("{message}");
}

/// For the tests: a promise whose work panics, as a bug in an asynchronous call would.
#[doc(hidden)]
#[napi(catch_unwind, js_name = "__panicForTestAsync")]
pub async fn panic_for_test_async(message: String) {
    tokio::task::yield_now().await;
    panic!("{message}");
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
