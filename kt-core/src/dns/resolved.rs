//! systemd-resolved per-link DNS ([`DnsMode::Resolved`](crate::DnsMode::Resolved)):
//! the local DNS server becomes the DNS server of the tun link only, with the cluster
//! domain as a routing domain, so resolved sends cluster names there and everything
//! else where it did before. Three `resolvectl` calls (see `resolvectl(1)`):
//!
//! ```text
//! resolvectl dns <link> <ip>[:<port>]
//! resolvectl domain <link> ~<cluster domain> ~svc <search domains...>
//! resolvectl default-route <link> false
//! ```
//!
//! `~cluster.local` and `~svc` are routing-only domains (names ending in them go to the
//! link's server); the search domains (`dev.svc.cluster.local ...`) are search *and*
//! routing domains, so `web` resolves as `web.dev.svc.cluster.local`. resolved applies
//! search domains to single-label names only: `web.dev` works for programs that use
//! glibc's DNS stub (resolved lists the search domains in its stub resolv.conf) but not
//! for those that ask resolved directly (nss-resolve, `resolvectl query`).
//!
//! Restoring is `resolvectl revert <link>`. No restore record is written: resolved
//! forgets a link's settings when the link disappears, and the tun device disappears
//! when the process that holds it exits, crash included. Restore before closing the tun
//! device; once the link is gone a failing revert is not an error.
//!
//! **For the caller**: resolved may refuse or ignore a 127.x server on a non-loopback
//! link; give the local DNS server the tun device's own address (listen there) in this
//! mode. A port other than 53 is written as `ip:port` (`[ip]:port` for IPv6), which
//! only newer systemd versions accept.
//!
//! `resolvectl` runs as root, so it is taken from `/usr/bin`, `/bin`, `/usr/sbin` or
//! `/sbin` (the first that has it; [`SYSTEM_DIRS`]), never looked up on the caller's
//! `PATH`, and runs with a `PATH` of those directories; when none has it the error
//! says so. A path given explicitly (tests' fake) is used as it is.
//!
//! The arguments are tested as pure functions and the runner against a fake
//! `resolvectl` that logs its arguments; a real systemd-resolved (the distribution's,
//! run in the lab's laptop namespace by `testbed/laptop-resolved`) is exercised end to
//! end by one VPN test of ktctl: cluster names resolve through it, over the local DNS
//! server on the tun address.

use std::io::{self, Read as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The address of resolved's stub listener.
const STUB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 53));

/// How long one `resolvectl` call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether programs reading `resolv_conf` ask resolved's stub: it names
/// `nameserver 127.0.0.53`. Reading the content (through a symlink) rather than
/// looking at where a symlink points keeps this right in two cases where the symlink
/// says `/run/systemd/resolve/` but programs do not go through resolved's routing: the
/// non-stub `/run/systemd/resolve/resolv.conf` (upstream servers listed directly) and
/// `ip netns exec`, which bind-mounts the namespace's own file over the symlink target.
pub(crate) fn stub_in_use(resolv_conf: &Path) -> bool {
    std::fs::read_to_string(resolv_conf).is_ok_and(|text| {
        text.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some("nameserver")
                && words.next().and_then(|w| w.parse::<IpAddr>().ok()) == Some(STUB)
        })
    })
}

/// Whether systemd-resolved is in charge here: the stub is in use and `resolvectl`
/// runs (`resolvectl status` succeeds, so resolved answers on the bus).
pub(crate) fn detect(resolv_conf: &Path, resolvectl: &Resolvectl) -> bool {
    stub_in_use(resolv_conf) && resolvectl.run(&["status".to_owned()]).is_ok()
}

/// `server` as `resolvectl dns` takes it: `ip` for port 53, else `ip:port` or
/// `[ip]:port`.
pub(crate) fn server_arg(server: SocketAddr) -> String {
    match (server.port(), server.ip()) {
        (53, ip) => ip.to_string(),
        (port, IpAddr::V4(ip)) => format!("{ip}:{port}"),
        (port, IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
    }
}

/// The `resolvectl` calls that install `server` on `link` (see the module docs).
pub(crate) fn install_commands(
    link: &str,
    server: SocketAddr,
    cluster_domain: &str,
    search: &[String],
) -> Vec<Vec<String>> {
    let cluster_domain = cluster_domain.trim_end_matches('.');
    let mut domains = vec![format!("~{cluster_domain}"), "~svc".to_owned()];
    for d in search {
        let d = d.trim_end_matches('.');
        if !d.is_empty() && !domains.iter().any(|x| x == d) {
            domains.push(d.to_owned());
        }
    }
    let mut domain = vec!["domain".to_owned(), link.to_owned()];
    domain.extend(domains);
    vec![
        vec!["dns".to_owned(), link.to_owned(), server_arg(server)],
        domain,
        vec![
            "default-route".to_owned(),
            link.to_owned(),
            "false".to_owned(),
        ],
    ]
}

/// The `resolvectl` call that undoes [`install_commands`].
pub(crate) fn revert_command(link: &str) -> Vec<String> {
    vec!["revert".to_owned(), link.to_owned()]
}

/// The only directories a helper named without a path is taken from. kt runs
/// `resolvectl` as root: `PATH` is the caller's and may start with a directory the
/// user can write, so it is never searched.
pub(crate) const SYSTEM_DIRS: [&str; 4] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

/// The `PATH` a helper runs with.
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The program `name` means: `name` itself when it is a path (it has a `/`), else the
/// first executable `dirs/name`.
///
/// # Errors
///
/// `NotFound`, naming the directories searched, when no directory has it.
pub(crate) fn system_program(name: &Path, dirs: &[&str]) -> io::Result<PathBuf> {
    if name.to_string_lossy().contains('/') {
        return Ok(name.to_owned());
    }
    for dir in dirs {
        let candidate = Path::new(dir).join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "`{}` is not in {} (kt runs it as root, so only from these directories, never \
             from PATH): install it there, or choose another DNS mode",
            name.display(),
            dirs.join(", ")
        ),
    ))
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Runs `resolvectl`.
#[derive(Debug, Clone)]
pub(crate) struct Resolvectl {
    program: PathBuf,
}

impl Resolvectl {
    /// `program`: a path, or a bare name taken from [`SYSTEM_DIRS`] only (never from
    /// `PATH`).
    pub(crate) fn new(program: impl Into<PathBuf>) -> Resolvectl {
        Resolvectl {
            program: program.into(),
        }
    }

    /// Runs `resolvectl args...` (with a `PATH` of the system directories); an error
    /// carries its stderr.
    pub(crate) fn run(&self, args: &[String]) -> io::Result<()> {
        let program = system_program(&self.program, &SYSTEM_DIRS)?;
        let mut command = Command::new(&program);
        command
            .args(args)
            .env("PATH", SYSTEM_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let shown = format!("{} {}", program.display(), args.join(" "));
        let mut child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run `{shown}`: {e}")))?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > CALL_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("`{shown}` did not finish within {CALL_TIMEOUT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if status.success() {
            return Ok(());
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        Err(io::Error::other(format!(
            "`{shown}` failed ({status}): {}",
            stderr.trim()
        )))
    }
}

/// Per-link settings installed in resolved; [`ResolvedGuard::restore`] or drop reverts
/// them.
#[derive(Debug)]
pub(crate) struct ResolvedGuard {
    link: String,
    resolvectl: Resolvectl,
    restored: bool,
}

/// Installs `server` for `link` (see the module docs); on failure, what was set is
/// reverted.
///
/// # Errors
///
/// The first failing `resolvectl` call, with its stderr.
pub(crate) fn install(
    link: &str,
    server: SocketAddr,
    cluster_domain: &str,
    search: &[String],
    resolvectl: Resolvectl,
) -> io::Result<ResolvedGuard> {
    if server.ip().is_loopback() {
        tracing::warn!(
            %server,
            link,
            "systemd-resolved may ignore a loopback DNS server on a non-loopback link; \
             listen on the tun device's address instead"
        );
    }
    let guard = ResolvedGuard {
        link: link.to_owned(),
        resolvectl,
        restored: false,
    };
    for args in install_commands(link, server, cluster_domain, search) {
        guard.resolvectl.run(&args)?;
    }
    Ok(guard)
}

impl ResolvedGuard {
    /// The link.
    pub(crate) fn link(&self) -> &str {
        &self.link
    }

    /// `resolvectl revert <link>`. Calling it again does nothing.
    ///
    /// # Errors
    ///
    /// A failing revert while the link still exists.
    #[cfg(test)]
    pub(crate) fn restore(mut self) -> io::Result<()> {
        self.restore_inner()
    }

    pub(crate) fn restore_inner(&mut self) -> io::Result<()> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        match self.resolvectl.run(&revert_command(&self.link)) {
            Ok(()) => Ok(()),
            Err(e) if !link_exists(&self.link) => {
                tracing::debug!(link = %self.link, error = %e, "link gone: its resolved settings went with it");
                Ok(())
            }
            Err(e) => {
                self.restored = false;
                Err(e)
            }
        }
    }
}

impl Drop for ResolvedGuard {
    fn drop(&mut self) {
        if let Err(e) = self.restore_inner() {
            tracing::warn!(link = %self.link, error = %e, "cannot revert systemd-resolved settings");
        }
    }
}

/// Whether network interface `name` exists in this network namespace (Linux; elsewhere
/// assumed to exist).
fn link_exists(name: &str) -> bool {
    if cfg!(target_os = "linux") {
        !name.contains('/') && Path::new("/sys/class/net").join(name).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::record::testing::temp_dir;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_follow_resolvectl_syntax() {
        assert_eq!(server_arg("198.18.0.1:53".parse().unwrap()), "198.18.0.1");
        assert_eq!(
            server_arg("198.18.0.1:5353".parse().unwrap()),
            "198.18.0.1:5353"
        );
        assert_eq!(server_arg("[fd00::1]:53".parse().unwrap()), "fd00::1");
        assert_eq!(
            server_arg("[fd00::1]:5353".parse().unwrap()),
            "[fd00::1]:5353"
        );
        let search = strings(&[
            "dev.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ]);
        assert_eq!(
            install_commands(
                "kt0",
                "198.18.0.1:53".parse().unwrap(),
                "cluster.local.",
                &search
            ),
            [
                strings(&["dns", "kt0", "198.18.0.1"]),
                strings(&[
                    "domain",
                    "kt0",
                    "~cluster.local",
                    "~svc",
                    "dev.svc.cluster.local",
                    "svc.cluster.local",
                    "cluster.local",
                ]),
                strings(&["default-route", "kt0", "false"]),
            ]
        );
        assert_eq!(revert_command("kt0"), strings(&["revert", "kt0"]));
    }

    #[test]
    fn the_stub_is_recognised_by_its_address() {
        let dir = temp_dir("resolved-detect");
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
        )
        .unwrap();
        assert!(stub_in_use(&path));
        std::fs::write(&path, "nameserver 10.0.0.2\n# nameserver 127.0.0.53\n").unwrap();
        assert!(!stub_in_use(&path));
        assert!(!stub_in_use(&dir.join("missing")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fake `resolvectl` in `bin/` (its path) that appends its arguments to `log`
    /// and fails for the subcommands named in `fail`.
    #[cfg(unix)]
    fn fake_resolvectl(dir: &Path, fail: &[&str]) -> (PathBuf, PathBuf) {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = dir.join("log");
        let mut script = format!(
            "#!/bin/sh\n[ \"$1\" = {SETTLE_ARG} ] && exit 0\necho \"$*\" >> '{}'\n",
            log.display()
        );
        for f in fail {
            script.push_str(&format!(
                "[ \"$1\" = {f} ] && {{ echo \"Failed to {f}: no such link\" >&2; exit 1; }}\n"
            ));
        }
        script.push_str("exit 0\n");
        let path = bin.join("resolvectl");
        write_script(&path, &script);
        (path, log)
    }

    /// The argument with which the test scripts exit at once (see [`write_script`]).
    const SETTLE_ARG: &str = "kt-test-settle";

    /// Writes an executable script that exits at once when its first argument is
    /// [`SETTLE_ARG`], and returns once it can be run. A process another test thread
    /// forks while the script is open for writing holds that descriptor until it
    /// execs, and running the script meanwhile fails with "Text file busy".
    #[cfg(unix)]
    fn write_script(path: &Path, script: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(path, script).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        loop {
            match Command::new(path).arg(SETTLE_ARG).status() {
                Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy => std::thread::yield_now(),
                result => {
                    assert!(result.unwrap().success(), "{}", path.display());
                    return;
                }
            }
        }
    }

    fn logged(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[cfg(unix)]
    #[test]
    fn install_and_revert_run_resolvectl_with_these_arguments() {
        let dir = temp_dir("resolved-run");
        let (fake, log) = fake_resolvectl(&dir, &[]);
        let resolvectl = Resolvectl::new(fake);
        let guard = install(
            "kt0",
            "198.18.0.1:53".parse().unwrap(),
            "cluster.local",
            &strings(&["dev.svc.cluster.local"]),
            resolvectl.clone(),
        )
        .unwrap();
        assert_eq!(guard.link(), "kt0");
        assert_eq!(
            logged(&log),
            [
                "dns kt0 198.18.0.1",
                "domain kt0 ~cluster.local ~svc dev.svc.cluster.local",
                "default-route kt0 false",
            ]
        );
        guard.restore().unwrap();
        assert_eq!(logged(&log).last().map(String::as_str), Some("revert kt0"));
        assert_eq!(logged(&log).len(), 4, "restore runs once");
        // Detection: the stub address and a working resolvectl.
        let conf = dir.join("resolv.conf");
        std::fs::write(&conf, "nameserver 127.0.0.53\n").unwrap();
        assert!(detect(&conf, &resolvectl));
        let absent = Resolvectl::new(dir.join("nothing-here/resolvectl"));
        assert!(!detect(&conf, &absent));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_failing_call_is_an_error_with_its_stderr_and_what_was_set_is_reverted() {
        let dir = temp_dir("resolved-fail");
        let (fake, log) = fake_resolvectl(&dir, &["domain"]);
        let err = install(
            "kt0",
            "198.18.0.1:5353".parse().unwrap(),
            "cluster.local",
            &[],
            Resolvectl::new(fake),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("Failed to domain: no such link"),
            "{err}"
        );
        assert_eq!(
            logged(&log),
            [
                "dns kt0 198.18.0.1:5353",
                "domain kt0 ~cluster.local ~svc",
                "revert kt0",
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_bare_name_is_taken_from_the_system_directories_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir("resolved-lookup");
        let (first, second) = (dir.join("first"), dir.join("second"));
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        // Not executable in `first`: skipped.
        std::fs::write(first.join("helper"), "").unwrap();
        std::fs::write(second.join("helper"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            second.join("helper"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let dirs = [first.to_str().unwrap(), second.to_str().unwrap()];
        assert_eq!(
            system_program(Path::new("helper"), &dirs).unwrap(),
            second.join("helper")
        );
        let explicit = dir.join("elsewhere/helper");
        assert_eq!(system_program(&explicit, &dirs).unwrap(), explicit);
        let err = system_program(Path::new("missing"), &dirs).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!(
                "`missing` is not in {}, {} (kt runs it as root, so only from these \
                 directories, never from PATH): install it there, or choose another DNS mode",
                dirs[0], dirs[1]
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Set in the child process [`a_resolvectl_on_path_is_never_run`] starts.
    const EVIL_PATH_CHILD: &str = "KT_TEST_EVIL_PATH_CHILD";

    /// kt runs `resolvectl` as root: a `resolvectl` early on the caller's `PATH` (a
    /// user-writable directory) must not be what runs. The lookup reads this process's
    /// `PATH`, so the test runs itself again in a child whose `PATH` is a directory
    /// holding a `resolvectl` that leaves a mark.
    #[cfg(unix)]
    #[test]
    fn a_resolvectl_on_path_is_never_run() {
        if std::env::var_os(EVIL_PATH_CHILD).is_some() {
            let result = Resolvectl::new("resolvectl").run(&["status".to_owned()]);
            println!("resolvectl status: {result:?}");
            return;
        }
        let dir = temp_dir("resolved-evil-path");
        let mark = dir.join("ran");
        let evil = dir.join("bin/resolvectl");
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = {SETTLE_ARG} ] && exit 0\necho ran > '{}'\n",
            mark.display()
        );
        write_script(&evil, &script);
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "dns::resolved::tests::a_resolvectl_on_path_is_never_run",
                "--nocapture",
            ])
            .env(EVIL_PATH_CHILD, "1")
            .env("PATH", dir.join("bin"))
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shown}");
        assert!(
            shown.contains("resolvectl status"),
            "the child ran: {shown}"
        );
        assert!(!mark.exists(), "the resolvectl on PATH ran: {shown}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failing_revert_is_an_error_only_while_the_link_exists() {
        let dir = temp_dir("resolved-revert");
        let (fake, _log) = fake_resolvectl(&dir, &["revert"]);
        let resolvectl = Resolvectl::new(fake);
        // `lo` exists in every network namespace (the fake resolvectl touches nothing).
        let guard = install(
            "lo",
            "198.18.0.1:53".parse().unwrap(),
            "cluster.local",
            &[],
            resolvectl.clone(),
        )
        .unwrap();
        assert!(guard.restore().is_err());
        let gone = install(
            "kt-gone-link0",
            "198.18.0.1:53".parse().unwrap(),
            "cluster.local",
            &[],
            resolvectl,
        )
        .unwrap();
        gone.restore().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
