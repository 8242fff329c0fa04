//! Every error the binding raises, mapped in one place.
//!
//! Python sees one base class, `ktconnect.KtError`, and a subclass per kt-core
//! [`ErrorKind`](kt_core::ErrorKind), chosen by the kind's name through [`KINDS`] (no
//! match on kt-core's error variants). Two finer classes, `NameNotFound` (a `NotFound`)
//! and `TunnelDown` (a `TunnelError`), are picked for the variants they name; every other
//! error gets its kind's class. Where a builtin exception means the same thing, the
//! class derives from it too (`InvalidArgument` is a `ValueError`, `Timeout` a
//! `TimeoutError`, `Forbidden` a `PermissionError`, ...), so `except ValueError:` works as
//! a Python user expects. The classes are made at import time with
//! `type(name, bases, namespace)`, because a class with two bases cannot be declared
//! with `create_exception!`.
//!
//! Each raised exception carries:
//! - its message: kt-core's, which says what failed and what to do;
//! - `kind`: the kt-core kind name (`"not_found"`), the same in every kt front end;
//! - `variant`: the finer kt-core error in snake case (`"namespace_not_found"`);
//! - `transient`: whether a retry may succeed;
//! - `__cause__`: the Rust `source()` chain below the message, one exception per link
//!   (`OSError` with its errno for an OS error, `RuntimeError` otherwise).

use std::error::Error as StdError;

use kt_core::ErrorKind;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

/// A failure inside the binding, before it becomes a Python exception (which needs the
/// interpreter): futures on the runtime return this.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An error from kt-core.
    Kt(kt_core::Error),
    /// An error from kt-core about the option or argument named first (its message is
    /// prefixed with that name).
    KtIn(&'static str, Box<kt_core::Error>),
    /// A bad argument found by the binding itself.
    Invalid(String),
    /// A wait ran out (events, a datagram).
    Timeout(String),
    /// A bug: a task panicked.
    Internal(String),
}

impl From<kt_core::Error> for Failure {
    fn from(e: kt_core::Error) -> Self {
        Failure::Kt(e)
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> Self {
        Python::attach(|py| f.into_pyerr(py))
    }
}

/// The result of work done on the runtime.
pub(crate) type Outcome<T> = Result<T, Failure>;

/// The exception class of each kt-core error kind, by [`ErrorKind::name`]. A kind
/// missing here would raise bare `KtError`; `tests/test_kinds.py` walks
/// [`ErrorKind::ALL`] and fails if any does. Keep `python/ktconnect/_native.pyi` and
/// the README in step.
const KINDS: &[(&str, &str)] = &[
    ("invalid_argument", "InvalidArgument"),
    ("closed", "Closed"),
    ("timeout", "Timeout"),
    ("needs_capability", "NeedsCapability"),
    ("forbidden", "Forbidden"),
    ("not_found", "NotFound"),
    ("kubeconfig", "ConfigError"),
    ("api_unreachable", "Unreachable"),
    ("api", "ApiError"),
    ("shadow", "ShadowError"),
    ("tunnel", "TunnelError"),
    ("connect", "ConnectError"),
    ("dns", "DnsError"),
    ("unsupported", "Unsupported"),
    ("io", "LocalError"),
    ("vpn", "VpnError"),
    ("cleanup", "CleanupError"),
    ("internal", "InternalError"),
    ("conflict", "Conflict"),
];

/// One exception class: its name, what it means, and the builtin it also derives from.
struct Class {
    name: &'static str,
    doc: &'static str,
    /// `None`: only the kt base (or, for `KtError`, `Exception`).
    builtin: Option<&'static str>,
    /// The kt class it derives from (`KtError` for most).
    parent: &'static str,
}

/// Every class, parents before children. Keep `python/ktconnect/_native.pyi` in step.
const CLASSES: &[Class] = &[
    Class {
        name: "KtError",
        doc: "Base class of every error ktconnect raises. `kind` names the failure \
              (snake case), `transient` says whether retrying may help, and `__cause__` \
              holds the underlying cause.",
        builtin: Some("Exception"),
        parent: "",
    },
    Class {
        name: "InvalidArgument",
        doc: "An argument is malformed: an unknown flavour or DNS mode, a bad CIDR, port \
              or IP address, an unparsable forward target, an oversized datagram.",
        builtin: Some("ValueError"),
        parent: "KtError",
    },
    Class {
        name: "ConfigError",
        doc: "The kubeconfig cannot be read or used (missing file, unknown context, no \
              configuration at all, bad TLS settings).",
        builtin: None,
        parent: "KtError",
    },
    Class {
        name: "Unreachable",
        doc: "The Kubernetes API server does not answer.",
        builtin: Some("ConnectionError"),
        parent: "KtError",
    },
    Class {
        name: "NotFound",
        doc: "A namespace, Service or pod does not exist.",
        builtin: Some("LookupError"),
        parent: "KtError",
    },
    Class {
        name: "NameNotFound",
        doc: "A name does not resolve in the cluster's DNS (`name` and `tried` say what \
              was asked).",
        builtin: None,
        parent: "NotFound",
    },
    Class {
        name: "Forbidden",
        doc: "RBAC refused a call kt needs; the message names the Role to apply.",
        builtin: Some("PermissionError"),
        parent: "KtError",
    },
    Class {
        name: "NeedsCapability",
        doc: "VPN mode needs CAP_NET_ADMIN (root); nothing was created in the cluster.",
        builtin: Some("PermissionError"),
        parent: "KtError",
    },
    Class {
        name: "Timeout",
        doc: "Something did not happen in time (the shadow pod becoming ready, an event).",
        builtin: Some("TimeoutError"),
        parent: "KtError",
    },
    Class {
        name: "ApiError",
        doc: "Another Kubernetes API call failed.",
        builtin: None,
        parent: "KtError",
    },
    Class {
        name: "ShadowError",
        doc: "The shadow pod cannot start its image, or failed after starting.",
        builtin: None,
        parent: "KtError",
    },
    Class {
        name: "TunnelError",
        doc: "The port-forward or the SSH session to the shadow failed, or the tunnel is \
              down.",
        builtin: Some("ConnectionError"),
        parent: "KtError",
    },
    Class {
        name: "TunnelDown",
        doc: "The tunnel is down for good: close the session and connect again.",
        builtin: None,
        parent: "TunnelError",
    },
    Class {
        name: "ConnectError",
        doc: "The shadow could not connect to a host and port in the cluster (refused, \
              unreachable, no answer). A `TunnelError` (so a `ConnectionError`) too.",
        builtin: None,
        parent: "TunnelError",
    },
    Class {
        name: "DnsError",
        doc: "A DNS lookup failed for another reason than the name not existing.",
        builtin: None,
        parent: "KtError",
    },
    Class {
        name: "Unsupported",
        doc: "The session cannot do this (UDP with the OpenSSH shadow).",
        builtin: None,
        parent: "KtError",
    },
    Class {
        name: "Closed",
        doc: "The session, or a UDP flow (`DatagramChannel`), is closed.",
        builtin: None,
        parent: "KtError",
    },
    Class {
        name: "LocalError",
        doc: "A local operating-system call failed: a listener could not be bound.",
        builtin: Some("OSError"),
        parent: "KtError",
    },
    Class {
        name: "VpnError",
        doc: "VPN mode could not set up the tun device, its routes, or system DNS.",
        builtin: Some("OSError"),
        parent: "KtError",
    },
    Class {
        name: "CleanupError",
        doc: "Closing could not remove everything the session created; the message has \
              the kubectl command that does.",
        builtin: None,
        parent: "KtError",
    },
    Class {
        name: "Conflict",
        doc: "Someone else holds what this would change: a live kt session swapped the \
              target (the message names it and since when), or a Service of the name to \
              expose exists. Wait for it to end, or `recover` a target whose holder died.",
        builtin: None,
        parent: "KtError",
    },
    Class {
        name: "InternalError",
        doc: "A failure inside kt that the caller cannot fix (making SSH keys, a task \
              that panicked); please report it.",
        builtin: None,
        parent: "KtError",
    },
];

/// The classes once made, in the order of [`CLASSES`].
static TYPES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

fn make_types(py: Python<'_>) -> PyResult<Vec<Py<PyType>>> {
    let builtins = py.import("builtins")?;
    let type_ = builtins.getattr("type")?;
    let mut made: Vec<Py<PyType>> = Vec::with_capacity(CLASSES.len());
    for class in CLASSES {
        let mut bases = Vec::new();
        if let Some(i) = CLASSES.iter().position(|c| c.name == class.parent) {
            bases.push(made[i].bind(py).clone().into_any());
        }
        if let Some(builtin) = class.builtin {
            bases.push(builtins.getattr(builtin)?);
        }
        let namespace = PyDict::new(py);
        namespace.set_item("__module__", "ktconnect")?;
        namespace.set_item("__doc__", class.doc)?;
        // Defaults for exceptions raised by Python code (`raise ktconnect.Closed()`):
        // the class's kind, inherited by the finer classes.
        if let Some((kind, _)) = KINDS.iter().find(|(_, c)| *c == class.name) {
            namespace.set_item("kind", *kind)?;
        } else if class.parent.is_empty() {
            namespace.set_item("kind", "")?;
        }
        namespace.set_item("variant", "")?;
        namespace.set_item("transient", false)?;
        let made_type = type_.call1((class.name, PyTuple::new(py, bases)?, namespace))?;
        made.push(made_type.cast_into::<PyType>()?.unbind());
    }
    Ok(made)
}

/// The exception class called `name`.
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    let types = TYPES.get_or_try_init(py, || make_types(py))?;
    let i = CLASSES
        .iter()
        .position(|c| c.name == name)
        .ok_or_else(|| PyRuntimeError::new_err(format!("no exception class {name}")))?;
    Ok(types[i].bind(py).clone())
}

/// Adds every exception class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    for c in CLASSES {
        m.add(c.name, class(m.py(), c.name)?)?;
    }
    let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.name()).collect();
    m.add("ERROR_KINDS", PyTuple::new(m.py(), kinds)?)?;
    m.add_function(wrap_pyfunction!(_raise_error_example, m)?)?;
    Ok(())
}

/// Raises kt-core's example error of the kind named `kind` through the real mapping
/// (for the test that walks every kind; not API).
#[pyfunction]
#[pyo3(name = "_raise_error_example")]
fn _raise_error_example(kind: &str) -> PyResult<()> {
    let kind: ErrorKind = kind.parse().map_err(Failure::Kt)?;
    Err(Failure::Kt(kt_core::Error::example(kind)).into())
}

/// The class of an error of `kind`: its entry in [`KINDS`], or, for a kind this
/// binding does not know yet (never for the kinds of [`ErrorKind::ALL`], which
/// `tests/test_kinds.py` walks), the base class.
fn kind_class(kind: ErrorKind) -> &'static str {
    KINDS
        .iter()
        .find(|(name, _)| *name == kind.name())
        .map_or("KtError", |(_, class)| class)
}

/// The finer class for the variants that have one (a subclass of the kind's class).
fn finer_class(e: &kt_core::Error) -> Option<&'static str> {
    match e {
        kt_core::Error::NameNotFound { .. } => Some("NameNotFound"),
        kt_core::Error::TunnelDown { .. } => Some("TunnelDown"),
        _ => None,
    }
}

/// The kt-core variant in snake case (`NamespaceNotFound` -> `namespace_not_found`),
/// read from its `Debug` name, so no variant is listed here.
fn variant(e: &kt_core::Error) -> String {
    let debug = format!("{e:?}");
    let name = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Attributes that let a handler act without parsing the message.
fn attributes<'py>(py: Python<'py>, e: &kt_core::Error) -> PyResult<Bound<'py, PyDict>> {
    use kt_core::Error as E;
    let d = PyDict::new(py);
    match e {
        E::NamespaceNotFound { namespace } => d.set_item("namespace", namespace)?,
        E::NameNotFound { name, tried } => {
            d.set_item("name", name)?;
            d.set_item("tried", tried)?;
        }
        E::TargetNotFound {
            name, namespace, ..
        } => {
            d.set_item("name", name)?;
            d.set_item("namespace", namespace)?;
        }
        E::Forbidden {
            verb,
            resource,
            namespace,
            ..
        } => {
            d.set_item("verb", verb)?;
            d.set_item("resource", resource)?;
            d.set_item("namespace", namespace)?;
        }
        E::NeedsCapability { capability, .. } => d.set_item("capability", capability)?,
        E::Cleanup {
            session,
            namespace,
            remaining,
        } => {
            d.set_item("session", session)?;
            d.set_item("namespace", namespace)?;
            d.set_item("remaining", remaining)?;
        }
        _ => {}
    }
    Ok(d)
}

/// kt-core's message with its Rust names of settings in Python spelling:
/// `ConnectOptions::namespace` becomes `Session.connect(namespace=...)`,
/// `Session::env` becomes `Session.env()`, `DnsMode::Off` becomes `dns="off"`,
/// `ShadowFlavour::KtShadow` becomes `flavour="kt-shadow"`. kt-core's messages should
/// name no Rust API; this keeps any that still do readable.
pub(crate) fn pythonic(message: &str) -> String {
    /// Whole Rust names and their Python spelling.
    const WHOLE: &[(&str, &str)] = &[
        ("DnsMode::Off", "dns=\"off\""),
        ("DnsMode::Auto", "dns=\"auto\""),
        ("ShadowFlavour::KtShadow", "flavour=\"kt-shadow\""),
        ("ShadowFlavour::OpenSsh", "flavour=\"openssh\""),
    ];
    let mut out = String::with_capacity(message.len() + 32);
    let mut rest = message;
    loop {
        let next = ["ConnectOptions::", "Session::"]
            .iter()
            .chain(WHOLE.iter().map(|(rust, _)| rust))
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min_by_key(|(i, _)| *i);
        let Some((i, prefix)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i]);
        rest = &rest[i + prefix.len()..];
        if let Some((_, python)) = WHOLE.iter().find(|(rust, _)| *rust == prefix) {
            out.push_str(python);
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        rest = &rest[end..];
        match (prefix, name) {
            ("ConnectOptions::", "image_pull_secret") => {
                out.push_str("Session.connect(image_pull_secrets=...)");
            }
            ("ConnectOptions::", name) => {
                out.push_str(&format!("Session.connect({name}=...)"));
            }
            (_, name) => out.push_str(&format!("Session.{name}()")),
        }
    }
}

/// An exception of `kind` (of the finer class `finer` if given) with `message` and
/// `attrs`.
fn raise(
    py: Python<'_>,
    kind: ErrorKind,
    finer: Option<&str>,
    message: &str,
    transient: bool,
    attrs: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyErr> {
    let name = finer.unwrap_or_else(|| kind_class(kind));
    let value = class(py, name)?.call1((message,))?;
    value.setattr("kind", kind.name())?;
    value.setattr("transient", transient)?;
    if let Some(attrs) = attrs {
        for (k, v) in attrs.iter() {
            value.setattr(k.cast_into::<pyo3::types::PyString>()?, v)?;
        }
    }
    Ok(PyErr::from_value(value))
}

/// The `source()` chain of `e` as linked Python exceptions (outermost first), skipping
/// links whose text the message above already shows in full.
fn cause_chain(py: Python<'_>, e: &kt_core::Error) -> Option<PyErr> {
    let mut links: Vec<PyErr> = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        let err = match s.downcast_ref::<std::io::Error>() {
            Some(io) => match io.raw_os_error() {
                Some(errno) => PyOSError::new_err((errno, text)),
                None => PyOSError::new_err(text),
            },
            None => PyRuntimeError::new_err(text),
        };
        links.push(err);
        source = s.source();
    }
    // Link from the innermost outwards.
    let mut below: Option<PyErr> = None;
    while let Some(link) = links.pop() {
        link.set_cause(py, below.take());
        below = Some(link);
    }
    below
}

impl Failure {
    /// The Python exception for this failure.
    pub(crate) fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let made = match &self {
            Failure::Kt(e) => kt_error(py, None, e),
            Failure::KtIn(option, e) => kt_error(py, Some(option), e),
            Failure::Invalid(message) => {
                raise(py, ErrorKind::InvalidArgument, None, message, false, None)
            }
            Failure::Timeout(message) => raise(py, ErrorKind::Timeout, None, message, true, None),
            Failure::Internal(message) => raise(
                py,
                ErrorKind::Internal,
                None,
                &format!("internal error in ktconnect (please report it): {message}"),
                false,
                None,
            ),
        };
        // Making the exception itself failed (out of memory, ...): raise that instead.
        made.unwrap_or_else(|e| e)
    }
}

/// The exception for kt-core's `e`, its message prefixed with `option` if given.
fn kt_error(py: Python<'_>, option: Option<&str>, e: &kt_core::Error) -> PyResult<PyErr> {
    let attrs = attributes(py, e)?;
    attrs.set_item("variant", variant(e))?;
    let message = match option {
        Some(option) => format!("{option}: {}", pythonic(&e.to_string())),
        None => pythonic(&e.to_string()),
    };
    let err = raise(
        py,
        e.kind(),
        finer_class(e),
        &message,
        e.is_transient(),
        Some(&attrs),
    )?;
    err.set_cause(py, cause_chain(py, e));
    Ok(err)
}

/// kt-core's error `e` about the option (or argument) `option`, as a Python
/// exception whose message starts with the option's name.
pub(crate) fn option_error(option: &'static str, e: kt_core::Error) -> PyErr {
    Failure::KtIn(option, Box::new(e)).into()
}

/// An `InvalidArgument` with `message`, for argument checks in the binding.
pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    Failure::Invalid(message.into()).into()
}

#[cfg(test)]
mod tests {
    use kt_core::{Error, ErrorKind};

    use super::{KINDS, pythonic, variant};

    #[test]
    fn variants_read_as_snake_case() {
        assert_eq!(
            variant(&Error::example(ErrorKind::NotFound)),
            "namespace_not_found"
        );
        assert_eq!(variant(&Error::Closed), "closed");
        assert_eq!(variant(&Error::example(ErrorKind::Connect)), "connect");
    }

    #[test]
    fn every_kind_has_a_class() {
        for kind in ErrorKind::ALL {
            assert!(
                KINDS.iter().any(|(name, _)| *name == kind.name()),
                "no class for {kind}"
            );
        }
    }

    #[test]
    fn rust_setting_names_read_as_python_keywords() {
        assert_eq!(
            pythonic("or choose another with ConnectOptions::namespace"),
            "or choose another with Session.connect(namespace=...)"
        );
        assert_eq!(
            pythonic("(ConnectOptions::image_pull_secret), or ConnectOptions::shadow_image"),
            "(Session.connect(image_pull_secrets=...)), or Session.connect(shadow_image=...)"
        );
        assert_eq!(
            pythonic("Session::env and Session::forward need none; DnsMode::Off leaves it"),
            "Session.env() and Session.forward() need none; dns=\"off\" leaves it"
        );
        assert_eq!(
            pythonic("Connect with ShadowFlavour::KtShadow (the default)"),
            "Connect with flavour=\"kt-shadow\" (the default)"
        );
        assert_eq!(pythonic("nothing to change"), "nothing to change");
    }
}
