//! Functions outside a session: `recoverSystemDns()`, and the lists the parity test
//! compares with what this binding exposes.

use std::collections::HashMap;

use napi::Env;
use napi::bindgen_prelude::PromiseRaw;
use napi_derive::napi;

use crate::error::{KtError, promise};

/// Undoes the system DNS changes (resolv.conf, hosts file, `/etc/resolver` files) a
/// VPN session left behind when its process died without closing (a crash,
/// `kill -9`), as recorded under `$KT_STATE_DIR/restore` (default
/// `/var/lib/kt/restore`). Changes of running processes are left alone. Resolves to
/// one line per change undone (an empty array when there was nothing to do); needs
/// the rights to write those files (root). A VPN session does this itself when it
/// starts.
#[napi(catch_unwind, ts_return_type = "Promise<string[]>")]
pub fn recover_system_dns(env: &Env) -> napi::Result<PromiseRaw<'_, Vec<String>>> {
    promise(
        env,
        async {
            tokio::task::spawn_blocking(|| {
                kt_core::recover_system_dns(&kt_core::SystemPaths::system())
            })
            .await
            .map_err(|e| KtError::internal(format!("recoverSystemDns did not finish: {e}")))?
            .map_err(KtError::from)
        },
        |lines| lines,
    )
}

/// For the tests: kt-core's lists of every setting, session operation and function
/// (`connectOptions`, `vpnOptions`, `sessionOperations`, `functions`, `swapOptions`,
/// `exposeOptions`, `swapOperations`, `exposeOperations`, by kt-core name), which this
/// binding must all expose (`test/parity.test.mjs`).
#[doc(hidden)]
#[napi(catch_unwind, js_name = "__surface")]
pub fn surface() -> HashMap<&'static str, Vec<&'static str>> {
    use kt_core::surface as s;
    HashMap::from([
        ("connectOptions", s::CONNECT_OPTIONS.to_vec()),
        ("vpnOptions", s::VPN_OPTIONS.to_vec()),
        ("sessionOperations", s::SESSION_OPERATIONS.to_vec()),
        ("functions", s::FUNCTIONS.to_vec()),
        ("swapOptions", s::SWAP_OPTIONS.to_vec()),
        ("exposeOptions", s::EXPOSE_OPTIONS.to_vec()),
        ("swapOperations", s::SWAP_OPERATIONS.to_vec()),
        ("exposeOperations", s::EXPOSE_OPERATIONS.to_vec()),
        ("meshOptions", s::MESH_OPTIONS.to_vec()),
        ("meshOperations", s::MESH_OPERATIONS.to_vec()),
    ])
}
