//! Embeds the shipped agent (a static kt-shadow and its loader) when the build names it.
//!
//! `KT_AGENT_EMBED=<dir>` at build time, where `<dir>` holds `kt-shadow` and `kt-loader`
//! (`kt-shadow/build-static` makes both): kt-core then carries them, and the imageless
//! shadow needs nothing at run time. Without it, kt-core finds them at run time
//! (`ConnectOptions::agent_dir`, `KT_AGENT_DIR`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const FILES: [&str; 2] = ["kt-shadow", "kt-loader"];

fn main() {
    println!("cargo:rerun-if-env-changed=KT_AGENT_EMBED");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let code = match env::var_os("KT_AGENT_EMBED").filter(|v| !v.is_empty()) {
        None => "pub(crate) const SHADOW: Option<&[u8]> = None;\n\
                 pub(crate) const LOADER: Option<&[u8]> = None;\n\
                 pub(crate) const FROM: &str = \"\";\n"
            .to_owned(),
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let mut code = String::new();
            for (file, constant) in FILES.iter().zip(["SHADOW", "LOADER"]) {
                let path = dir.join(file);
                println!("cargo:rerun-if-changed={}", path.display());
                let copy = out.join(file);
                if let Err(e) = fs::copy(&path, &copy) {
                    panic!(
                        "KT_AGENT_EMBED={}: cannot read {}: {e} (build the agent with \
                         kt-shadow/build-static, or unset KT_AGENT_EMBED)",
                        dir.display(),
                        path.display()
                    );
                }
                code.push_str(&format!(
                    "pub(crate) const {constant}: Option<&[u8]> = Some(include_bytes!({:?}));\n",
                    display(&copy)
                ));
            }
            code.push_str(&format!(
                "pub(crate) const FROM: &str = {:?};\n",
                display(&dir)
            ));
            code
        }
    };
    fs::write(out.join("agent.rs"), code).expect("writing OUT_DIR/agent.rs");
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
