//! Links the loader as a static program with no C library and no C start-up files: its
//! own `_start` (src/main.rs) is the entry point. Not position-independent: a static PIE
//! must relocate itself at start-up, which is libc's job, and there is no libc. gcc
//! already gives `-static` precedence over the `-pie` rustc passes; `-no-pie` says it
//! outright (kt-loader's tests check the result is `ET_EXEC`).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo::rustc-link-arg-bins={arg}");
    }
}
