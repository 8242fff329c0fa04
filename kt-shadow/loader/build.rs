//! Builds the loader program (`program/`, its own workspace: it needs `panic = "abort"`,
//! which the workspace's profiles must not impose on kt-shadow) and hands its path to
//! the crate as `KT_LOADER_BINARY`, for `kt_loader::BINARY` and the tests.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The loader runs in the shadow pod: x86_64 Linux, whatever machine builds kt.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Set for the program's build, which must not build the program again.
const NESTED: &str = "KT_LOADER_PROGRAM_BUILD";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rerun-if-changed=Cargo.toml");
    println!("cargo::rerun-if-changed=program/Cargo.toml");
    println!("cargo::rerun-if-changed=program/Cargo.lock");
    println!("cargo::rerun-if-changed=program/build.rs");
    println!("cargo::rerun-if-changed=program/src");
    // The lints and package fields this crate inherits.
    println!("cargo::rerun-if-changed=../../Cargo.toml");
    if env::var_os("CARGO_FEATURE_EMBED").is_none() {
        // The program's own build of this crate.
        return;
    }
    assert!(
        env::var_os(NESTED).is_none(),
        "kt-loader: the loader program's build asked for the program again (feature \
         `embed`); it must depend on kt-loader without default features"
    );

    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let manifest = dir.join("program").join("Cargo.toml");
    let target_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("program");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut build = Command::new(&cargo);
    build
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(dir.join("program"));
    // The outer build's settings are for the outer build: what cargo tells this script
    // (CARGO_FEATURE_EMBED among them, which would make the program's own build of this
    // crate build the program again), clippy's driver, RUSTFLAGS (kt-shadow's static
    // build), profile overrides. The program has its own. Kept: where cargo's home is,
    // its jobserver (the outer build's job limit), and how it reaches registries.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_MAKEFLAGS")
            || ["CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRY", "CARGO_TERM_"]
                .iter()
                .any(|p| key.starts_with(p));
        let outer = key.starts_with("CARGO_")
            || matches!(
                key,
                "RUSTFLAGS" | "RUSTDOCFLAGS" | "RUSTC_WORKSPACE_WRAPPER" | "CLIPPY_ARGS"
            );
        if outer && !keep {
            build.env_remove(key);
        }
    }
    build.env(NESTED, "1");
    // Cargo reads this script's stdout for instructions: the nested build's goes to stderr.
    let status = build
        .stdout(std::io::stderr())
        .status()
        .unwrap_or_else(|e| {
            panic!("kt-loader: cannot run {cargo:?} to build the loader program: {e}")
        });
    if !status.success() {
        panic!(
            "kt-loader: building the loader program failed ({status}): see cargo's output \
             above. It needs the {TARGET} target and a C linker (cc); if \
             program/Cargo.lock is out of date, run `cargo update --manifest-path \
             {}`",
            manifest.display()
        );
    }
    let binary = target_dir.join(TARGET).join("release").join("kt-loader");
    assert!(
        binary.is_file(),
        "kt-loader: the loader program's build left no {}",
        binary.display()
    );
    println!("cargo::rustc-env=KT_LOADER_BINARY={}", binary.display());
}
