//! Bad input from C, without the lab: `tests/c/bad_input.c` calls the C API with NULL
//! pointers, invalid UTF-8, out-of-range enum values, bad CIDRs, made-up, mistyped,
//! freed and double-freed handles, too-small error buffers, and connects with a
//! missing, broken and unreachable kubeconfig; each call must give its documented
//! status and message. Compiled against libkt through pkg-config.

mod common;

use common::{assert_fresh_libkt, compile, crate_dir, run_checked, valgrind};

#[test]
fn bad_input_gives_documented_statuses_and_messages_and_never_crashes() {
    let exe = compile(&crate_dir().join("tests/c/bad_input.c"), "bad_input");
    let out = run_checked(&mut std::process::Command::new(&exe));
    assert!(
        out.status.success(),
        "bad_input.c reported failures (see its output above)"
    );
    assert_fresh_libkt(&out);
}

#[test]
fn bad_input_under_valgrind_has_no_memory_errors_and_leaks_nothing() {
    let exe = compile(&crate_dir().join("tests/c/bad_input.c"), "bad_input_vg");
    let out = run_checked(&mut valgrind(&exe));
    assert!(
        out.status.success(),
        "bad_input.c under valgrind failed (exit 99: memory errors or leaks; see above)"
    );
    assert_fresh_libkt(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("ERROR SUMMARY: 0 errors"),
        "valgrind reported errors"
    );
}
