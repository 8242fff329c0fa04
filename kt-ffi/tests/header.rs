//! The committed header `include/kt.h` is what cbindgen makes from the sources now.
//! `KT_FFI_BLESS=1 cargo test -p kt-ffi --test header` rewrites it after a change.

use std::path::Path;

#[test]
fn committed_header_matches_what_cbindgen_makes_from_the_sources() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("reading kt-ffi/cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen cannot parse kt-ffi/src: {e}"));
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("cbindgen writes UTF-8");
    let path = dir.join("include/kt.h");
    if std::env::var_os("KT_FFI_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
        panic!(
            "kt-ffi/include/kt.h is out of date with kt-ffi/src (first difference at line {}); \
             regenerate it with `KT_FFI_BLESS=1 cargo test -p kt-ffi --test header` and commit it",
            line + 1
        );
    }
}
