//! The loader program (kt-shadow/loader/program, its own workspace) is built from the
//! same crate versions as the workspace: what was reviewed, and nothing for its build
//! to download that the workspace's build did not.

use std::collections::BTreeMap;

/// `name -> versions` of a Cargo.lock's packages.
fn packages(lock: &str) -> BTreeMap<String, Vec<String>> {
    let mut packages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let Some(v) = line.strip_prefix("version = ")
            && let Some(n) = name.take()
        {
            let v = v.trim_matches('"').to_owned();
            packages.entry(n).or_default().push(v);
        }
    }
    packages
}

#[test]
fn the_program_uses_the_workspaces_crate_versions() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let workspace = packages(&read(&format!("{dir}/../../Cargo.lock")));
    let program = packages(&read(&format!("{dir}/program/Cargo.lock")));
    assert!(program.contains_key("sha2"), "{program:?}");
    for (name, versions) in &program {
        if name.starts_with("kt-loader") {
            continue;
        }
        for version in versions {
            let ours = workspace.get(name).cloned().unwrap_or_default();
            assert!(
                ours.contains(version),
                "kt-shadow/loader/program/Cargo.lock has {name} {version}, the workspace's \
                 Cargo.lock {ours:?}: run `cargo update --manifest-path \
                 kt-shadow/loader/program/Cargo.toml -p {name} --precise <version>`"
            );
        }
    }
}
