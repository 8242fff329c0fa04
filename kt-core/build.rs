//! Embeds the shipped agent (a static kt-shadow) when the build names it.
//!
//! `KT_AGENT_EMBED=<dir>` at build time, where `<dir>` holds `kt-shadow`
//! (`kt-shadow/build-static` makes it): kt-core then carries it, and the imageless
//! shadow needs nothing at run time. Without it, kt-core finds it at run time
//! (`ConnectOptions::agent_dir`, `KT_AGENT_DIR`). The loader needs no such step: it is
//! the kt-loader crate's `BINARY`, built with kt-core.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=KT_AGENT_EMBED");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let code = match env::var_os("KT_AGENT_EMBED").filter(|v| !v.is_empty()) {
        None => "pub(crate) const SHADOW: Option<&[u8]> = None;\n\
                 pub(crate) const FROM: &str = \"\";\n"
            .to_owned(),
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let path = dir.join("kt-shadow");
            println!("cargo:rerun-if-changed={}", path.display());
            let copy = out.join("kt-shadow");
            if let Err(e) = fs::copy(&path, &copy) {
                panic!(
                    "KT_AGENT_EMBED={}: cannot read {}: {e} (build the agent with \
                     kt-shadow/build-static, or unset KT_AGENT_EMBED)",
                    dir.display(),
                    path.display()
                );
            }
            format!(
                "pub(crate) const SHADOW: Option<&[u8]> = Some(include_bytes!({:?}));\n\
                 pub(crate) const FROM: &str = {:?};\n",
                display(&copy),
                display(&dir)
            )
        }
    };
    fs::write(out.join("agent.rs"), code).expect("writing OUT_DIR/agent.rs");
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
