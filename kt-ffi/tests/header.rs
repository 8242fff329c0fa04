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

/// Every `kt_*` function that libkt exports is declared in the header (cbindgen does
/// not see functions made by macros, so one could be exported but missing).
#[test]
fn header_declares_every_function_the_library_exports() {
    let exe = std::env::current_exe().expect("the test executable's path");
    let lib = exe.with_file_name("libkt.so");
    let out = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .unwrap_or_else(|e| panic!("running nm on {}: {e}", lib.display()));
    assert!(out.status.success(), "nm failed on {}", lib.display());
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/kt.h"))
            .expect("include/kt.h");
    let exported: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("kt_"))
        .map(str::to_owned)
        .collect();
    assert!(exported.len() > 50, "libkt exports only {exported:?}");
    let missing: Vec<&String> = exported
        .iter()
        .filter(|f| !header.contains(&format!(" {f}(")) && !header.contains(&format!("*{f}(")))
        .collect();
    assert!(missing.is_empty(), "exported but not in kt.h: {missing:?}");
}
