//! Shared by the C tests: finds the libkt this `cargo test` built (and checks it is
//! newer than every source file), writes a kt.pc for it with `kt-ffi/install
//! --pc-only`, compiles C programs with `cc $(pkg-config --cflags --libs kt)`, runs
//! them (also under valgrind), and makes lab namespaces with `testbed/test-namespace`.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// The kt-ffi crate directory.
pub(crate) fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of the libkt.so that this test run uses: the directory of the test
/// executable, `target/<profile>/deps`, where `cargo test` builds the package's
/// cdylib. (`target/<profile>/libkt.so` is only refreshed by `cargo build`, so it may
/// be stale here.) Checked to be newer than every source file.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .expect("the test executable lives in target/<profile>/deps");
    let lib = dir.join("libkt.so");
    let built = modified(&lib).unwrap_or_else(|| {
        panic!(
            "{} is missing: cargo did not build the cdylib",
            lib.display()
        )
    });
    let newest_source = newest(&crate_dir().join("src"));
    assert!(
        built >= newest_source,
        "{} is older than kt-ffi/src: the library was not rebuilt",
        lib.display()
    );
    dir.to_owned()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut latest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).expect("kt-ffi/src").flatten() {
        let t = if entry.path().is_dir() {
            newest(&entry.path())
        } else {
            modified(&entry.path()).unwrap_or(SystemTime::UNIX_EPOCH)
        };
        latest = latest.max(t);
    }
    latest
}

/// A scratch directory of this test binary.
pub(crate) fn scratch() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let name = exe
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kt-ffi")
        .join(name);
    std::fs::create_dir_all(&dir).expect("making the scratch directory");
    dir
}

/// The directory holding the kt.pc written for this run's libkt.
pub(crate) fn pkg_config_path() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("pkgconfig");
        let out = run_checked(
            Command::new(crate_dir().join("install"))
                .arg("--pc-only")
                .arg("--libdir")
                .arg(lib_dir())
                .arg("--out")
                .arg(dir.join("kt.pc")),
        );
        assert!(out.status.success(), "kt-ffi/install --pc-only failed");
        dir
    })
}

/// `pkg-config <args> kt` with PKG_CONFIG_PATH at this run's kt.pc.
pub(crate) fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = run_checked(
        Command::new("pkg-config")
            .args(args)
            .arg("kt")
            .env("PKG_CONFIG_PATH", pkg_config_path()),
    );
    assert!(out.status.success(), "pkg-config {args:?} kt failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Compiles `source` (strict warnings) into an executable named `name` with the flags
/// pkg-config gives for kt, plus `-I<dir of check.h>`.
pub(crate) fn compile(source: &Path, name: &str) -> PathBuf {
    let exe = scratch().join(name);
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()));
    cc.args([
        "-std=gnu11",
        "-g",
        "-O1",
        "-pthread",
        "-D_GNU_SOURCE",
        "-Wall",
        "-Wextra",
        "-Werror",
    ])
    .arg("-I")
    .arg(crate_dir().join("tests/c"))
    .arg(source)
    .arg("-o")
    .arg(&exe)
    .args(pkg_config(&["--cflags", "--libs"]));
    let out = run_checked(&mut cc);
    assert!(
        out.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `cmd` (bounded at 10 minutes against a hang), echoing its output so that a
/// failing test shows it.
pub(crate) fn run_checked(cmd: &mut Command) -> Output {
    let started = Instant::now();
    // cargo runs tests with LD_LIBRARY_PATH naming target/<profile>, whose libkt.so
    // `cargo test` does not refresh; it would win over the programs' run path (set by
    // kt.pc to the libkt.so this run built). Without it, that one is loaded.
    let mut child = cmd
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Drain the pipes on threads so a chatty child cannot block.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut v).ok();
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut v).ok();
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(600) {
            child.kill().ok();
            panic!("{cmd:?} still ran after 10 minutes: killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    };
    eprintln!(
        "$ {cmd:?}\n{}{}-> {status}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `cmd` prefixed with valgrind: any memory error or definitely/indirectly lost block
/// makes it exit with 99.
pub(crate) fn valgrind(program: &Path) -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite,indirect",
        "--show-leak-kinds=definite,indirect",
        "--num-callers=50",
    ])
    .arg(format!(
        "--suppressions={}",
        crate_dir().join("tests/valgrind.supp").display()
    ))
    .arg(program);
    cmd
}

/// A namespace of the lab for one test (`testbed/test-namespace create PREFIX
/// --restricted`): the echo app, kt's Role bound to a ServiceAccount, and a
/// kubeconfig scoped to it. Deleted on drop. Panics (the test fails) when the lab is
/// down.
pub(crate) struct LabNamespace {
    pub(crate) name: String,
    pub(crate) kubeconfig: String,
}

fn test_namespace_script() -> PathBuf {
    crate_dir().join("../testbed/test-namespace")
}

impl LabNamespace {
    pub(crate) fn create(prefix: &str) -> LabNamespace {
        Self::create_with_role(prefix, "vpn")
    }

    /// As [`LabNamespace::create`] with the shipped Role `role` (`--role`: connect,
    /// vpn, or inbound for swap and expose).
    pub(crate) fn create_with_role(prefix: &str, role: &str) -> LabNamespace {
        let out = run_checked(Command::new(test_namespace_script()).args([
            "create",
            prefix,
            "--restricted",
            "--role",
            role,
        ]));
        assert!(
            out.status.success(),
            "testbed/test-namespace create failed (is the lab up? `sudo testbed/up`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("test-namespace printed no {key}: {text}"))
                .trim()
                .to_owned()
        };
        LabNamespace {
            name: value("KT_TEST_NAMESPACE="),
            kubeconfig: value("KT_TEST_KUBECONFIG="),
        }
    }

    /// `kubectl <args>` in this namespace, as the lab's admin.
    pub(crate) fn kubectl(&self, args: &str) -> String {
        let out = run_checked(Command::new("bash").arg("-c").arg(format!(
            "source /run/ktlab/env && kubectl -n {} {args}",
            self.name
        )));
        assert!(out.status.success(), "kubectl {args} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What kt left in the namespace with `selector`: every kind a session creates.
    /// [`SESSION_OBJECTS`] selects what a closed session must not leave.
    pub(crate) fn objects(&self, selector: &str) -> String {
        self.kubectl(&format!(
            "get pods,secrets,services,configmaps -l {selector} -o name"
        ))
        .trim()
        .to_owned()
    }
}

impl Drop for LabNamespace {
    fn drop(&mut self) {
        let _ = Command::new(test_namespace_script())
            .args(["delete", &self.name])
            .status();
    }
}

/// Checks that a C program (built with check.h) loaded this run's libkt.so, not
/// another copy.
pub(crate) fn assert_fresh_libkt(out: &Output) {
    let loaded = PathBuf::from(printed(out, "LIBKT"));
    let built = lib_dir().join("libkt.so");
    assert_eq!(
        loaded.canonicalize().ok(),
        built.canonicalize().ok(),
        "the C program loaded {} instead of {}",
        loaded.display(),
        built.display()
    );
}

/// The value of the line `KEY=value` that a C program printed.
pub(crate) fn printed(out: &Output, key: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the program printed no {key}=: {text}"))
        .trim()
        .to_owned()
}

/// The objects of kt's that a closed session must not leave: everything labelled as
/// kt's but the parts of its shipped agent, which stay for the next session (uploaded
/// once per namespace; `clean` removes unused ones).
pub(crate) const SESSION_OBJECTS: &str = "app.kubernetes.io/managed-by=kt,kt.dev/role!=agent-part";
