//! Status codes, error messages copied into the caller's buffer, the panic boundary,
//! and the checks every entry point makes on its arguments.

use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

/// What a kt function reports. Every function returns one; on anything but
/// `KT_STATUS_OK` the `err` buffer (if given) holds a message saying what failed and
/// what to do. The numbers are stable: new codes are only ever added.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kt_status {
    /// Success. The `err` buffer holds an empty string.
    Ok = 0,
    /// An argument has a value kt does not accept (a bad CIDR, port, enum value,
    /// forward target, ...).
    InvalidArgument = 1,
    /// A pointer argument that must not be NULL is NULL.
    NullPointer = 2,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = 3,
    /// A handle argument is not a live handle of the expected type: freed already,
    /// never made by kt, or a handle of another type.
    InvalidHandle = 4,
    /// The session is closed (`kt_session_close`), its event stream has ended, or a
    /// UDP flow (`kt_udp_channel`) has ended.
    Closed = 5,
    /// Something did not happen in time: no event within the timeout of
    /// `kt_session_next_event`, or the shadow pod did not become ready.
    Timeout = 6,
    /// VPN mode needs a capability (CAP_NET_ADMIN) this process does not have.
    NeedsCapability = 7,
    /// Kubernetes RBAC refused a call kt needs.
    Forbidden = 8,
    /// A namespace, Service, pod or DNS name does not exist; or a value the session
    /// does not have (e.g. VPN details in proxy mode).
    NotFound = 9,
    /// The kubeconfig cannot be found, read or used.
    Config = 10,
    /// The Kubernetes API server does not answer.
    Unreachable = 11,
    /// Another Kubernetes API call failed.
    Api = 12,
    /// The shadow pod cannot start or failed.
    Shadow = 13,
    /// The tunnel to the shadow pod (port-forward, SSH) failed or is down.
    Tunnel = 14,
    /// A DNS lookup in the cluster failed for another reason than the name missing.
    Dns = 15,
    /// The session cannot do this (e.g. UDP with the OpenSSH shadow).
    Unsupported = 16,
    /// A local operating-system call failed (binding a local port, ...).
    Io = 17,
    /// VPN mode: the tun device, its routes or the system DNS could not be set up.
    System = 18,
    /// Closing could not remove every object the session created (the message names
    /// them and the command that removes them).
    Cleanup = 19,
    /// A blocking kt function was called from one of kt's own runtime threads.
    WrongThread = 20,
    /// kt panicked; the call was abandoned. A bug: please report the message.
    Panic = 21,
    /// Any other failure inside kt.
    Internal = 22,
    /// The shadow could not connect to a host and port in the cluster (refused,
    /// unreachable, no answer), e.g. a UDP flow the pod's network refuses (earlier
    /// libkt builds reported this as `KT_STATUS_TUNNEL`).
    Connect = 23,
    /// Someone else holds what a swap or expose would change: another live kt session
    /// swapped the target (the message names it and since when), or a Service of the
    /// name to expose exists already.
    Conflict = 24,
}

impl kt_status {
    /// The C name of the status, e.g. `KT_STATUS_OK`.
    pub(crate) fn name(self) -> &'static CStr {
        match self {
            kt_status::Ok => c"KT_STATUS_OK",
            kt_status::InvalidArgument => c"KT_STATUS_INVALID_ARGUMENT",
            kt_status::NullPointer => c"KT_STATUS_NULL_POINTER",
            kt_status::InvalidUtf8 => c"KT_STATUS_INVALID_UTF8",
            kt_status::InvalidHandle => c"KT_STATUS_INVALID_HANDLE",
            kt_status::Closed => c"KT_STATUS_CLOSED",
            kt_status::Timeout => c"KT_STATUS_TIMEOUT",
            kt_status::NeedsCapability => c"KT_STATUS_NEEDS_CAPABILITY",
            kt_status::Forbidden => c"KT_STATUS_FORBIDDEN",
            kt_status::NotFound => c"KT_STATUS_NOT_FOUND",
            kt_status::Config => c"KT_STATUS_CONFIG",
            kt_status::Unreachable => c"KT_STATUS_UNREACHABLE",
            kt_status::Api => c"KT_STATUS_API",
            kt_status::Shadow => c"KT_STATUS_SHADOW",
            kt_status::Tunnel => c"KT_STATUS_TUNNEL",
            kt_status::Dns => c"KT_STATUS_DNS",
            kt_status::Unsupported => c"KT_STATUS_UNSUPPORTED",
            kt_status::Io => c"KT_STATUS_IO",
            kt_status::System => c"KT_STATUS_SYSTEM",
            kt_status::Cleanup => c"KT_STATUS_CLEANUP",
            kt_status::WrongThread => c"KT_STATUS_WRONG_THREAD",
            kt_status::Panic => c"KT_STATUS_PANIC",
            kt_status::Internal => c"KT_STATUS_INTERNAL",
            kt_status::Connect => c"KT_STATUS_CONNECT",
            kt_status::Conflict => c"KT_STATUS_CONFLICT",
        }
    }

    /// Every status, in numeric order.
    pub(crate) const ALL: [kt_status; 25] = [
        kt_status::Ok,
        kt_status::InvalidArgument,
        kt_status::NullPointer,
        kt_status::InvalidUtf8,
        kt_status::InvalidHandle,
        kt_status::Closed,
        kt_status::Timeout,
        kt_status::NeedsCapability,
        kt_status::Forbidden,
        kt_status::NotFound,
        kt_status::Config,
        kt_status::Unreachable,
        kt_status::Api,
        kt_status::Shadow,
        kt_status::Tunnel,
        kt_status::Dns,
        kt_status::Unsupported,
        kt_status::Io,
        kt_status::System,
        kt_status::Cleanup,
        kt_status::WrongThread,
        kt_status::Panic,
        kt_status::Internal,
        kt_status::Connect,
        kt_status::Conflict,
    ];

    /// The status of a kt-core error kind: the one whose number is `kind.code()`
    /// (kt-core keeps its codes equal to these numbers). `None` for a code this
    /// version of libkt does not declare, and for the C ABI's own statuses (OK,
    /// NULL pointer, invalid UTF-8, invalid handle, wrong thread, panic), which no
    /// kind may take; the kind test proves neither happens for any kind.
    pub(crate) fn of_kind(kind: kt_core::ErrorKind) -> Option<kt_status> {
        let status = usize::try_from(kind.code())
            .ok()
            .and_then(|i| kt_status::ALL.get(i))
            .copied()?;
        (!Self::ABI_ONLY.contains(&status)).then_some(status)
    }

    /// The statuses of the C ABI itself, never the kind of a kt-core error.
    const ABI_ONLY: [kt_status; 6] = [
        kt_status::Ok,
        kt_status::NullPointer,
        kt_status::InvalidUtf8,
        kt_status::InvalidHandle,
        kt_status::WrongThread,
        kt_status::Panic,
    ];
}

/// A failed call: its status and the message for the caller's buffer.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: kt_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: kt_status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(kt_status::InvalidArgument, message)
    }

    pub(crate) fn null(what: &str) -> Failure {
        Failure::new(
            kt_status::NullPointer,
            format!("`{what}` is NULL; pass a valid pointer"),
        )
    }
}

impl From<kt_core::Error> for Failure {
    /// The status is the error's kind's code (`kt_status::of_kind`); a kind this
    /// libkt does not know (a newer kt-core) would be `KT_STATUS_INTERNAL`, which the
    /// kind test rules out for every kind there is.
    fn from(e: kt_core::Error) -> Failure {
        let status = kt_status::of_kind(e.kind()).unwrap_or(kt_status::Internal);
        Failure::new(status, chain(&e))
    }
}

/// The error's message followed by each source's message that it does not already
/// contain (kt-core's messages often quote their source).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// Runs one entry point's body behind the panic boundary and reports its outcome: the
/// status, and the message copied into `err` (an empty string on success).
pub(crate) fn guard(
    err: *mut c_char,
    err_len: usize,
    body: impl FnOnce() -> Result<(), Failure>,
) -> kt_status {
    let outcome = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Err(Failure::new(
                kt_status::Panic,
                format!("kt panicked ({what}); the call was abandoned; please report this bug"),
            ))
        }
    };
    let (status, message) = match outcome {
        Ok(()) => (kt_status::Ok, String::new()),
        Err(f) => (f.status, f.message),
    };
    // Writing the message must not unwind either.
    let _ = catch_unwind(|| write_message(err, err_len, &message));
    status
}

/// Copies `message` into `buf` (`len` bytes), cut at a UTF-8 character boundary if it
/// does not fit, always NUL-terminated. Nothing happens when `buf` is NULL or `len` 0.
fn write_message(buf: *mut c_char, len: usize, message: &str) {
    if buf.is_null() || len == 0 {
        return;
    }
    let mut n = message.len().min(len - 1);
    while !message.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: the caller promises `buf` points to `len` writable bytes (the documented
    // contract of every `err, err_len` pair); `n < len`, so the copy and the NUL fit.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr().cast::<c_char>(), buf, n);
        *buf.add(n) = 0;
    }
}

/// A NUL-terminated UTF-8 string argument named `what`.
///
/// # Safety
///
/// `ptr` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    std::str::from_utf8(bytes).map_err(|e| {
        Failure::new(
            kt_status::InvalidUtf8,
            format!(
                "`{what}` is not valid UTF-8 (invalid byte 0x{:02x} at offset {}); kt takes \
                 UTF-8 strings only",
                bytes[e.valid_up_to()],
                e.valid_up_to()
            ),
        )
    })
}

/// An output pointer named `what`, checked for NULL before any work is done.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// Checks `ptr`.
    pub(crate) fn new(ptr: *mut T, what: &str) -> Result<Out<T>, Failure> {
        NonNull::new(ptr)
            .map(Out)
            .ok_or_else(|| Failure::null(what))
    }

    /// Stores `value`.
    pub(crate) fn write(self, value: T) {
        // SAFETY: non-NULL, and the caller promises it points to a writable `T`.
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// An output pointer for a handle: checked, and set to NULL at once so that a failed
/// call leaves NULL behind.
pub(crate) fn handle_out<H>(ptr: *mut *mut H, what: &str) -> Result<Out<*mut H>, Failure> {
    let out = Out::new(ptr, what)?;
    // SAFETY: as in `Out::write`.
    unsafe { out.0.as_ptr().write(std::ptr::null_mut()) };
    Ok(out)
}

/// A C string for `s`, with any NUL byte replaced (none are expected).
pub(crate) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{fffd}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(buf: &[c_char]) -> String {
        // SAFETY: `guard` always NUL-terminates within the buffer.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_kt_status_panic_with_its_message() {
        let mut buf = [0 as c_char; 256];
        let status = guard(buf.as_mut_ptr(), buf.len(), || panic!("boom in kt"));
        assert_eq!(status, kt_status::Panic);
        let text = message(&buf);
        assert!(text.contains("kt panicked (boom in kt)"), "{text}");
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary_and_nul_terminated() {
        let mut buf = [b'X' as c_char; 8];
        let status = guard(buf.as_mut_ptr(), 5, || {
            Err(Failure::invalid("ab\u{e9}\u{e9}"))
        });
        assert_eq!(status, kt_status::InvalidArgument);
        // 4 bytes fit: "ab" + é (2 bytes); the second é does not.
        assert_eq!(message(&buf), "ab\u{e9}");
        assert_eq!(buf[5], b'X' as c_char, "nothing written past the length");
    }

    #[test]
    fn success_leaves_an_empty_message() {
        let mut buf = [b'X' as c_char; 4];
        assert_eq!(guard(buf.as_mut_ptr(), buf.len(), || Ok(())), kt_status::Ok);
        assert_eq!(message(&buf), "");
    }

    #[test]
    fn every_status_name_matches_its_number() {
        for (i, s) in kt_status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert!(s.name().to_str().is_ok_and(|n| n.starts_with("KT_STATUS_")));
        }
    }

    #[test]
    fn every_error_kind_gets_the_status_numbered_by_its_code() {
        use kt_core::{Error, ErrorKind};
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            let failure = Failure::from(Error::example(*kind));
            let status = failure.status;
            assert_eq!(status as u32, kind.code(), "kind {kind}: status {status:?}");
            assert!(
                kt_status::ALL.contains(&status),
                "kind {kind}: {status:?} is not a declared kt_status"
            );
            assert!(
                !kt_status::ABI_ONLY.contains(&status),
                "kind {kind} took the C ABI's own status {status:?}"
            );
            if *kind != ErrorKind::Internal {
                assert_ne!(status, kt_status::Internal, "kind {kind} fell to INTERNAL");
            }
            assert!(seen.insert(status as u32), "two kinds share {status:?}");
            assert!(!failure.message.is_empty(), "kind {kind}: no message");
        }
        assert_eq!(
            kt_status::of_kind(ErrorKind::Connect),
            Some(kt_status::Connect)
        );
        assert_eq!(kt_status::Connect as u32, 23, "KT_STATUS_CONNECT is 23");
        assert_eq!(
            kt_status::of_kind(ErrorKind::Conflict),
            Some(kt_status::Conflict)
        );
        assert_eq!(kt_status::Conflict as u32, 24, "KT_STATUS_CONFLICT is 24");
    }

    #[test]
    fn blocking_on_a_runtime_thread_is_refused() {
        let rt = crate::runtime().expect("the runtime");
        let inner = rt.block_on(async { crate::block_on(async {}).map_err(|f| f.status) });
        assert_eq!(inner, Err(kt_status::WrongThread));
    }
}
