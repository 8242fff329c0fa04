//! `kt_list`: an owned, immutable list of strings (or of key/value pairs), the result
//! of `kt_session_resolve`, `kt_session_env`, `kt_session_vpn_routes` and
//! `kt_recover_system_dns`.

use std::ffi::{CString, c_char};

use crate::handle::Table;
use crate::status::{Failure, Out, cstring, guard, kt_status, str_arg};

/// A list of strings that kt made for the caller: IP addresses, routes, or
/// environment variables (each item then also has a key).
///
/// Owned by the caller: free it with `kt_list_free`. The strings it hands out
/// (`kt_list_get`, `kt_list_key`) belong to the list and stay valid until then.
///
/// Thread-safety: immutable; any function may be called on it from any thread at
/// the same time, except that `kt_list_free` must come after every other use.
pub struct kt_list {
    _private: [u8; 0],
}

/// One list's items: a value, and for key/value lists a key.
pub(crate) struct List {
    items: Vec<(Option<CString>, CString)>,
}

static LISTS: Table<List> = Table::new(
    5,
    "kt_session_resolve (or another kt function returning a kt_list)",
);

impl List {
    /// A list of plain values.
    pub(crate) fn values<'a>(values: impl IntoIterator<Item = &'a str>) -> List {
        List {
            items: values.into_iter().map(|v| (None, cstring(v))).collect(),
        }
    }

    /// A list of key/value pairs.
    pub(crate) fn pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> List {
        List {
            items: pairs
                .into_iter()
                .map(|(k, v)| (Some(cstring(k)), cstring(v)))
                .collect(),
        }
    }

    /// Stores the list and returns its handle.
    pub(crate) fn into_handle(self) -> *mut kt_list {
        LISTS.insert(self)
    }
}

fn item(list: &List, index: usize) -> Result<&(Option<CString>, CString), Failure> {
    list.items.get(index).ok_or_else(|| {
        Failure::invalid(format!(
            "index {index} is out of range: the list has {} items",
            list.items.len()
        ))
    })
}

/// Stores the number of items of `list` in `*len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_list_len(
    list: *const kt_list,
    len: *mut usize,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(len, "len")?;
        out.write(LISTS.get(list, "list")?.items.len());
        Ok(())
    })
}

/// Stores in `*value` item `index` of `list` (from 0): an IP address, a route, or an
/// environment variable's value. The string belongs to the list (valid until
/// `kt_list_free`). `KT_STATUS_INVALID_ARGUMENT` when `index` is out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_list_get(
    list: *const kt_list,
    index: usize,
    value: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(value, "value")?;
        let list = LISTS.get(list, "list")?;
        out.write(item(&list, index)?.1.as_ptr());
        Ok(())
    })
}

/// Stores in `*key` the key of item `index` of a key/value `list` (the variable's
/// name, for `kt_session_env`). The string belongs to the list (valid until
/// `kt_list_free`). `KT_STATUS_NOT_FOUND` for a list of plain values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_list_key(
    list: *const kt_list,
    index: usize,
    key: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(key, "key")?;
        let list = LISTS.get(list, "list")?;
        match &item(&list, index)?.0 {
            Some(k) => {
                out.write(k.as_ptr());
                Ok(())
            }
            None => Err(Failure::new(
                kt_status::NotFound,
                "this list has plain values, no keys; read it with kt_list_get",
            )),
        }
    })
}

/// Stores in `*value` the value for `key` in a key/value `list` (e.g. `"HTTP_PROXY"`
/// in the list of `kt_session_env`). The string belongs to the list.
/// `KT_STATUS_NOT_FOUND` when no item has that key.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_list_find(
    list: *const kt_list,
    key: *const c_char,
    value: *mut *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        let out = Out::new(value, "value")?;
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let key = unsafe { str_arg(key, "key") }?;
        let list = LISTS.get(list, "list")?;
        let found = list
            .items
            .iter()
            .find(|(k, _)| k.as_ref().is_some_and(|k| k.to_bytes() == key.as_bytes()));
        match found {
            Some((_, v)) => {
                out.write(v.as_ptr());
                Ok(())
            }
            None => Err(Failure::new(
                kt_status::NotFound,
                format!("the list has no item with key `{key}`"),
            )),
        }
    })
}

/// Frees `list` and the strings it handed out. Freeing it twice gives
/// `KT_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kt_list_free(
    list: *mut kt_list,
    err: *mut c_char,
    err_len: usize,
) -> kt_status {
    guard(err, err_len, || {
        LISTS.remove(list, "list")?;
        Ok(())
    })
}
