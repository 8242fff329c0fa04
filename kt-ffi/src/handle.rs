//! Handles: a C pointer of an opaque type is a token, never an address. Each token is
//! looked up in the table of its type, so a freed, foreign or mistyped handle is
//! reported as `KT_STATUS_INVALID_HANDLE` instead of being dereferenced, and a double
//! free is detected. Tokens are never reused within a process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::status::{Failure, kt_status};

/// Bits of a token that name its type.
const TAG_BITS: usize = 4;
const TAG_MASK: usize = (1 << TAG_BITS) - 1;

/// The C type names, by tag (0 is never used, so no token is 0 = NULL).
const KINDS: [&str; 16] = [
    "",
    "kt_options",
    "kt_vpn_options",
    "kt_session",
    "kt_event",
    "kt_list",
    "kt_udp_channel",
    "kt_swap_options",
    "kt_expose_options",
    "kt_swap",
    "kt_expose",
    "kt_mesh_options",
    "kt_mesh",
    "",
    "",
    "",
];

static NEXT: AtomicUsize = AtomicUsize::new(1);

/// The live handles of one type.
pub(crate) struct Table<T> {
    tag: usize,
    /// The function that makes handles of this type, for messages.
    made_by: &'static str,
    live: Mutex<BTreeMap<usize, Arc<T>>>,
}

impl<T> Table<T> {
    pub(crate) const fn new(tag: usize, made_by: &'static str) -> Table<T> {
        Table {
            tag,
            made_by,
            live: Mutex::new(BTreeMap::new()),
        }
    }

    fn kind(&self) -> &'static str {
        KINDS[self.tag]
    }

    /// Stores `value` and returns its new handle.
    pub(crate) fn insert<H>(&self, value: T) -> *mut H {
        let token = (NEXT.fetch_add(1, Ordering::Relaxed) << TAG_BITS) | self.tag;
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, Arc::new(value));
        std::ptr::without_provenance_mut(token)
    }

    /// The value behind `handle` (an argument named `what`).
    pub(crate) fn get<H>(&self, handle: *const H, what: &str) -> Result<Arc<T>, Failure> {
        let token = self.token(handle, what)?;
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&token)
            .cloned()
            .ok_or_else(|| self.not_live(token, what))
    }

    /// Takes `handle` out of the table; the value is dropped when the last call using
    /// it returns.
    pub(crate) fn remove<H>(&self, handle: *const H, what: &str) -> Result<Arc<T>, Failure> {
        let token = self.token(handle, what)?;
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&token)
            .ok_or_else(|| self.not_live(token, what))
    }

    /// Every live value.
    pub(crate) fn values(&self) -> Vec<Arc<T>> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn token<H>(&self, handle: *const H, what: &str) -> Result<usize, Failure> {
        if handle.is_null() {
            return Err(Failure::null(what));
        }
        Ok(handle.addr())
    }

    fn not_live(&self, token: usize, what: &str) -> Failure {
        let tag = token & TAG_MASK;
        let message = if tag != self.tag && !KINDS[tag].is_empty() {
            format!(
                "`{what}` is not a {} handle (it looks like a {} handle); pass the handle {} gave",
                self.kind(),
                KINDS[tag],
                self.made_by
            )
        } else if tag == self.tag && token >> TAG_BITS < NEXT.load(Ordering::Relaxed) {
            format!(
                "`{what}` is a {} handle that was freed already; a handle is used up by its \
                 _free function",
                self.kind()
            )
        } else {
            format!(
                "`{what}` is not a {} handle kt made; pass the handle {} gave",
                self.kind(),
                self.made_by
            )
        };
        Failure::new(kt_status::InvalidHandle, message)
    }
}
