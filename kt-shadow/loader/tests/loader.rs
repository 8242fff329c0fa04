//! The real loader program (the bytes kt ships, `kt_loader::BINARY`) on real files: it
//! runs a binary assembled from parts only when every part and the whole match their
//! hashes, and otherwise says why and runs nothing.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kt_proto::agent;

/// The program built by kt-loader's build script: the file `kt_loader::BINARY` holds.
const LOADER: &str = env!("KT_LOADER_BINARY");

/// A script that proves it ran (the marker file) and prints its arguments, padded
/// past the loader's 64 KiB buffer so that a part takes several reads.
fn script() -> Vec<u8> {
    let mut text =
        b"#!/bin/sh\nprintf 'ran\\n' > \"$KT_MARKER\"\nprintf '<%s>' \"$@\"\nexit 0\n".to_vec();
    for i in 0..4000 {
        writeln!(
            text,
            "# padding line {i:05} so that the script is larger than one buffer"
        )
        .expect("vec");
    }
    assert!(text.len() > 3 * kt_loader::BUFFER_SIZE);
    text
}

/// SHA-256 in hex, by coreutils' `sha256sum` (not the loader's implementation).
fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8")[..64].to_owned()
}

/// A test's own directory: `agent/` for the parts, `run/` for the binary.
struct Pod {
    dir: PathBuf,
}

impl Pod {
    fn new(name: &str) -> Pod {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("kt-loader")
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("agent")).expect("agent dir");
        fs::create_dir_all(dir.join("run")).expect("run dir");
        Pod { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.join("run").join("kt-shadow")
    }

    fn marker(&self) -> PathBuf {
        self.dir.join("ran")
    }

    /// Cuts `binary` at `cuts` into parts named as kt names their ConfigMaps and returns
    /// their paths and the whole's hash.
    fn ship(&self, binary: &[u8], cuts: &[usize]) -> (Vec<PathBuf>, String) {
        let mut parts = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([&binary.len()]) {
            let bytes = &binary[start..end];
            let path = self
                .dir
                .join("agent")
                .join(agent::part_name(&sha256_hex(bytes)));
            fs::write(&path, bytes).expect("part");
            parts.push(path);
            start = end;
        }
        (parts, sha256_hex(binary))
    }

    /// The loader's command line, as `kt_proto::agent::loader_args` lays it out.
    fn args(&self, whole: &str, parts: &[PathBuf], command: &[&str]) -> Vec<String> {
        let parts: Vec<String> = parts.iter().map(|p| p.display().to_string()).collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let command: Vec<String> = command.iter().map(|&c| c.to_owned()).collect();
        let mut args = agent::loader_args(whole, &parts, &command);
        args[0] = self.out().display().to_string();
        args
    }

    /// Runs the loader with `args` and only the marker's path in its environment.
    fn load(&self, args: &[String]) -> Output {
        Command::new(LOADER)
            .args(args)
            .env_clear()
            .env("KT_MARKER", self.marker())
            .output()
            .expect("run the loader")
    }

    fn ran(&self) -> bool {
        self.marker().exists()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8")
}

/// Exit code, stdout empty, exactly one line on stderr (returned).
fn stopped(out: &Output, code: i32) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(out.stdout.is_empty(), "the binary printed {:?}", out.stdout);
    assert!(
        err.ends_with('\n') && err.matches('\n').count() == 1,
        "one line: {err:?}"
    );
    err
}

fn refused(pod: &Pod, out: &Output) -> String {
    let err = stopped(out, agent::LOADER_REFUSED_EXIT);
    assert!(err.starts_with(agent::LOADER_REFUSED), "{err}");
    assert!(!pod.ran(), "a binary that did not verify ran");
    assert!(!pod.out().exists(), "the unverified binary was left behind");
    err
}

fn failed(pod: &Pod, out: &Output) -> String {
    let err = stopped(out, agent::LOADER_FAILED_EXIT);
    assert!(err.starts_with("kt-loader: "), "{err}");
    assert!(!err.starts_with(agent::LOADER_REFUSED), "{err}");
    assert!(!pod.ran(), "the binary ran");
    assert!(!pod.out().exists(), "<out> was left behind");
    err
}

#[test]
fn the_exit_codes_are_the_contracts() {
    assert_eq!(kt_loader::REFUSED_EXIT, agent::LOADER_REFUSED_EXIT);
    assert_eq!(kt_loader::FAILED_EXIT, agent::LOADER_FAILED_EXIT);
}

#[test]
fn a_script_cut_in_three_is_assembled_verified_and_run_with_its_arguments() {
    let pod = Pod::new("script");
    let script = script();
    let (parts, whole) = pod.ship(&script, &[1000, 150_000]);
    let out = pod.load(&pod.args(&whole, &parts, &["kt-shadow", "serve", "--", "a b", ""]));
    assert_eq!(stderr(&out), "");
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "<serve><--><a b><>");
    assert!(pod.ran());
    assert_eq!(fs::read(pod.out()).expect("assembled"), script);
}

#[test]
fn an_elf_binary_runs_with_the_given_argv0_and_arguments() {
    let pod = Pod::new("elf");
    let cat = fs::read("/bin/cat").expect("/bin/cat");
    let (parts, whole) = pod.ship(&cat, &[cat.len() / 3, 2 * cat.len() / 3]);
    // cat prints its own command line: argv0 is the one after `--`.
    let out = pod.load(&pod.args(&whole, &parts, &["kt-shadow", "/proc/self/cmdline"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"kt-shadow\0/proc/self/cmdline\0");
}

#[test]
fn it_needs_nothing_from_the_environment_and_passes_it_on_unchanged() {
    let pod = Pod::new("env");
    let env = fs::read("/usr/bin/env").expect("/usr/bin/env");
    let (parts, whole) = pod.ship(&env, &[env.len() / 2]);
    // `env -i`: the loader starts with an empty environment but for one variable; the
    // assembled `env` prints exactly what it got.
    let out = Command::new("env")
        .arg("-i")
        .arg("KT_ONLY=this")
        .arg(LOADER)
        .args(pod.args(&whole, &parts, &["env"]))
        .output()
        .expect("env -i");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "KT_ONLY=this\n");

    let out = Command::new("env")
        .arg("-i")
        .arg(LOADER)
        .args(pod.args(&whole, &parts, &["env"]))
        .output()
        .expect("env -i");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
}

#[test]
fn a_changed_part_is_refused_naming_its_configmap_and_nothing_runs() {
    let script = script();
    type Change = fn(&mut Vec<u8>);
    let changes: [(&str, Change); 3] = [
        ("appended", |b| b.push(b'\n')),
        ("emptied", Vec::clear),
        ("edited", |b| b[10] ^= 1),
    ];
    for (name, change) in changes {
        let pod = Pod::new(&format!("changed-{name}"));
        let (parts, whole) = pod.ship(&script, &[1000, 150_000]);
        let original = fs::read(&parts[1]).expect("part");
        let mut bytes = original.clone();
        change(&mut bytes);
        fs::write(&parts[1], &bytes).expect("change the part");

        let err = refused(&pod, &pod.load(&pod.args(&whole, &parts, &["kt-shadow"])));
        let configmap = parts[1].file_name().expect("name").to_str().expect("utf-8");
        assert!(
            err.starts_with(&format!("{} part {configmap} (", agent::LOADER_REFUSED)),
            "{name}: {err}"
        );
        assert!(
            err.contains(&sha256_hex(&original)),
            "{name}: expected hash: {err}"
        );
        assert!(
            err.contains(&sha256_hex(&bytes)),
            "{name}: actual hash: {err}"
        );
        assert!(
            err.contains(
                "the ConfigMap was changed after kt uploaded it; delete it (ktctl clean) so \
                 that kt uploads it again"
            ),
            "{name}: {err}"
        );
    }
}

#[test]
fn parts_that_do_not_make_the_expected_whole_are_refused() {
    let pod = Pod::new("whole");
    let script = script();
    let (parts, whole) = pod.ship(&script, &[1000, 150_000]);

    // Every part is sound, but the pod spec names another binary.
    let other = sha256_hex(b"another binary");
    let err = refused(&pod, &pod.load(&pod.args(&other, &parts, &["kt-shadow"])));
    assert!(err.contains("the 3 parts"), "{err}");
    assert!(err.contains(&other) && err.contains(&whole), "{err}");

    // Or the parts in another order, or one left out.
    let swapped = [parts[1].clone(), parts[0].clone(), parts[2].clone()];
    refused(&pod, &pod.load(&pod.args(&whole, &swapped, &["kt-shadow"])));
    refused(
        &pod,
        &pod.load(&pod.args(&whole, &parts[..2], &["kt-shadow"])),
    );
}

#[test]
fn bad_command_lines_fail_and_say_what_is_wrong() {
    let pod = Pod::new("usage");
    let (parts, whole) = pod.ship(&script(), &[1000]);
    let part = parts[0].display().to_string();
    let out = pod.out().display().to_string();
    let misnamed = pod.dir.join("agent").join("kt-shadow.part1");
    fs::copy(&parts[0], &misnamed).expect("copy");
    let misnamed = misnamed.display().to_string();
    let cases: [(&[&str], &str); 6] = [
        (&[], "no `--` between"),
        (&[&out, &whole, &part, "kt-shadow"], "no `--` between"),
        (&[&out, &whole, "--", "kt-shadow"], "no part;"),
        (&[&out, &whole, &part, "--"], "no command after `--`"),
        (
            &[&out, "not-a-hash", &part, "--", "kt-shadow"],
            "`not-a-hash` is not 64 lower-case hex digits",
        ),
        (
            &[&out, &whole, &misnamed, "--", "kt-shadow"],
            "its file name must be kt-part-",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        let err = failed(&pod, &pod.load(&args));
        assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
    }
    let err = failed(&pod, &pod.load(&[]));
    assert!(
        err.contains("usage: kt-loader <out> <sha256 of the whole> <part>... --"),
        "{err}"
    );
}

#[test]
fn a_missing_part_fails_naming_it_and_the_errno() {
    let pod = Pod::new("missing");
    let (mut parts, whole) = pod.ship(&script(), &[1000]);
    fs::remove_file(&parts[1]).expect("remove");
    let err = failed(&pod, &pod.load(&pod.args(&whole, &parts, &["kt-shadow"])));
    let path = parts.remove(1).display().to_string();
    assert_eq!(
        err,
        format!(
            "kt-loader: cannot open part `{path}`: ENOENT (errno 2: no such file or directory)\n"
        )
    );
}

#[test]
fn an_output_it_cannot_create_fails_with_the_errno() {
    let pod = Pod::new("no-run-dir");
    let (parts, whole) = pod.ship(&script(), &[1000]);
    fs::remove_dir(pod.dir.join("run")).expect("remove run/");
    let err = failed(&pod, &pod.load(&pod.args(&whole, &parts, &["kt-shadow"])));
    assert!(err.starts_with("kt-loader: cannot "), "{err}");
    assert!(err.contains("ENOENT (errno 2"), "{err}");
}

#[test]
fn a_verified_file_that_cannot_be_executed_fails_with_the_errno() {
    let pod = Pod::new("noexec");
    let (parts, whole) = pod.ship(b"no shebang, no ELF header: not a program\n", &[10]);
    let err = failed(&pod, &pod.load(&pod.args(&whole, &parts, &["kt-shadow"])));
    assert!(err.contains("cannot execute `"), "{err}");
    assert!(err.contains("ENOEXEC (errno 8"), "{err}");
}

#[test]
fn the_binary_is_mode_0500_whatever_the_umask() {
    let pod = Pod::new("umask");
    let (parts, whole) = pod.ship(&script(), &[1000]);
    // A umask that takes every bit: without the loader's chmod the binary would be mode
    // 0 and could not be executed.
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 777; exec \"$0\" \"$@\"")
        .arg(LOADER)
        .args(pod.args(&whole, &parts, &["kt-shadow", "x"]))
        .env_clear()
        .env("KT_MARKER", pod.marker())
        .output()
        .expect("sh");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(pod.ran());
    let mode = fs::metadata(pod.out()).expect("stat").permissions().mode();
    assert_eq!(mode & 0o7777, 0o500, "mode {mode:o}");
}

#[test]
fn a_binary_left_by_a_previous_container_is_replaced() {
    let pod = Pod::new("restart");
    let script = script();
    let (parts, whole) = pod.ship(&script, &[1000]);
    fs::write(pod.out(), b"#!/bin/sh\necho stale\n").expect("stale binary");
    fs::set_permissions(pod.out(), fs::Permissions::from_mode(0o500)).expect("chmod");
    let out = pod.load(&pod.args(&whole, &parts, &["kt-shadow", "fresh"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "<fresh>");
    assert_eq!(fs::read(pod.out()).expect("assembled"), script);
}

#[test]
fn a_stale_binary_is_removed_even_when_the_new_one_is_refused() {
    let pod = Pod::new("restart-refused");
    let (parts, _) = pod.ship(&script(), &[1000]);
    fs::write(pod.out(), b"#!/bin/sh\necho stale\n").expect("stale binary");
    refused(
        &pod,
        &pod.load(&pod.args(&sha256_hex(b"x"), &parts, &["kt-shadow"])),
    );
}

/// The ELF header's type and program headers: a static program has no interpreter
/// (`PT_INTERP`) and no dynamic section (`PT_DYNAMIC`).
#[test]
fn the_loader_is_a_small_static_x86_64_executable() {
    let elf = kt_loader::BINARY;
    assert_eq!(fs::read(LOADER).expect("loader"), elf);
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("4"));
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().expect("8"));
    assert_eq!(
        u16_at(16),
        2,
        "ET_EXEC: not a PIE, which would need relocating"
    );
    assert_eq!(u16_at(18), 62, "EM_X86_64");
    let (phoff, phentsize, phnum) = (
        u64_at(32) as usize,
        usize::from(u16_at(54)),
        usize::from(u16_at(56)),
    );
    let types: Vec<u32> = (0..phnum).map(|i| u32_at(phoff + i * phentsize)).collect();
    assert!(types.contains(&1), "a PT_LOAD segment: {types:?}");
    assert!(
        !types.contains(&3),
        "PT_INTERP: needs a dynamic loader: {types:?}"
    );
    assert!(
        !types.contains(&2),
        "PT_DYNAMIC: dynamically linked: {types:?}"
    );
    // Tens of KB: a regression (say, core::fmt or a dependency's default features)
    // shows here first.
    assert!(elf.len() < 64 * 1024, "{} bytes", elf.len());
}
