//! System DNS for VPN mode: one entry point that installs what a [`DnsMode`] means on
//! this machine ([`install`]), a guard that restores it, and [`recover`] for what a
//! crashed process left behind.
//!
//! | mode | what changes | undone by |
//! |---|---|---|
//! | [`DnsMode::ResolvConf`] | resolv.conf: the local server first, the search list prepended | restore record |
//! | [`DnsMode::Resolved`] | systemd-resolved settings of the tun link | `resolvectl revert`; gone with the link |
//! | [`DnsMode::ResolverDir`] | `/etc/resolver/<cluster domain>` and `/etc/resolver/svc` (macOS) | restore record |
//! | [`DnsMode::Hosts`] | a marked block in the hosts file | restore record |
//! | [`DnsMode::Off`] | nothing | — |
//!
//! Restore records live in [`SystemPaths::record_dir`], on disk, so that they outlive a
//! crash and a reboot (the files they undo are on disk too).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::hosts::{self, HostsGuard};
use super::record;
use super::resolved::{self, Resolvectl, ResolvedGuard};
use super::resolver_dir::{self, ResolverDirGuard};
use super::system::{self, ResolvConf, ResolvConfGuard};
use crate::error::{Error, Result};
use crate::options::DnsMode;

/// Environment variable naming kt's state directory; restore records go to its
/// `restore/` subdirectory (created with mode 0700).
///
/// Recovery runs as root and applies what it finds there, so that directory must be
/// owned by the effective user and writable by it alone, and every directory on the
/// way to it owned by that user or root and not writable by group or others (sticky
/// ones such as `/tmp` excepted). A directory that fails this is refused: [`recover`]
/// and installing system DNS fail with [`Error::SystemDns`] naming the directory and
/// the fix (`chmod`, `chown`, or another `KT_STATE_DIR`); nothing is read from or
/// written to it.
pub const STATE_DIR_ENV: &str = "KT_STATE_DIR";

/// The files and programs system DNS changes, and where its restore records go.
/// [`SystemPaths::system`] gives the real ones; tests point them into a temporary
/// directory with [`SystemPaths::under`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SystemPaths {
    /// The resolver configuration (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// The hosts file (`/etc/hosts`).
    pub hosts: PathBuf,
    /// macOS per-domain resolver files (`/etc/resolver`).
    pub resolver_dir: PathBuf,
    /// Restore records: `$KT_STATE_DIR/restore`, else `/var/lib/kt/restore`
    /// (`/var/db/kt/restore` on macOS). It must survive a reboot as the files it
    /// restores do, so not `/run` or `/tmp`, and be trusted as [`STATE_DIR_ENV`] says.
    /// Recovery applies a record only to the path of this `SystemPaths` that its kind
    /// changes (`resolv_conf`, `hosts`, files directly in `resolver_dir`).
    pub record_dir: PathBuf,
    /// The `resolvectl` program: a bare name is looked for in the system directories
    /// (`/usr/bin`, `/bin`, `/usr/sbin`, `/sbin`), never on `PATH`; a path is used as given.
    pub resolvectl: PathBuf,
}

impl Default for SystemPaths {
    fn default() -> Self {
        SystemPaths::system()
    }
}

impl SystemPaths {
    /// The machine's files, and the record directory from `KT_STATE_DIR`.
    pub fn system() -> SystemPaths {
        let record_dir = match std::env::var_os(STATE_DIR_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("restore"),
            _ if cfg!(target_os = "macos") => PathBuf::from("/var/db/kt/restore"),
            _ => PathBuf::from("/var/lib/kt/restore"),
        };
        SystemPaths {
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            hosts: PathBuf::from("/etc/hosts"),
            resolver_dir: PathBuf::from("/etc/resolver"),
            record_dir,
            resolvectl: PathBuf::from("resolvectl"),
        }
    }

    /// The same layout under `root` (`root/etc/resolv.conf`, ...,
    /// `root/var/lib/kt/restore`), e.g. a temporary directory or a chroot.
    pub fn under(root: &Path) -> SystemPaths {
        SystemPaths {
            resolv_conf: root.join("etc/resolv.conf"),
            hosts: root.join("etc/hosts"),
            resolver_dir: root.join("etc/resolver"),
            record_dir: root.join("var/lib/kt/restore"),
            resolvectl: PathBuf::from("resolvectl"),
        }
    }
}

/// What to install; built by the session from its options, the tun device and the
/// local DNS server.
#[derive(Debug, Clone)]
pub(crate) struct SystemDnsPlan {
    /// The mode, already resolved from [`DnsMode::Auto`] ([`resolve_auto`]).
    pub(crate) mode: DnsMode,
    /// The local DNS server. For [`DnsMode::ResolvConf`] it must listen on port 53
    /// (resolv.conf cannot name a port). For [`DnsMode::Resolved`] use the tun device's
    /// own address: resolved may not accept a 127.x server on a non-loopback link.
    pub(crate) listen: SocketAddr,
    /// The search list of a pod in the session's namespace.
    pub(crate) search: Vec<String>,
    /// `cluster.local` unless the cluster says otherwise.
    pub(crate) cluster_domain: String,
    /// The tun device (name, index): needed by [`DnsMode::Resolved`].
    pub(crate) link: Option<(String, u32)>,
    /// Hosts lines for [`DnsMode::Hosts`] (see `hosts::hosts_entries`).
    pub(crate) hosts: Vec<(IpAddr, Vec<String>)>,
    /// The session id (in markers and records).
    pub(crate) session: String,
    /// Where things are.
    pub(crate) paths: SystemPaths,
}

/// The mode [`DnsMode::Auto`] stands for here: [`DnsMode::ResolverDir`] on macOS;
/// on Linux [`DnsMode::Resolved`] when resolv.conf points at systemd-resolved's stub
/// and `resolvectl` works, else [`DnsMode::ResolvConf`]; [`DnsMode::Off`] elsewhere.
/// Other modes are returned as they are.
pub(crate) fn resolve_auto(mode: &DnsMode, paths: &SystemPaths) -> DnsMode {
    match mode {
        DnsMode::Auto if cfg!(target_os = "macos") => DnsMode::ResolverDir,
        DnsMode::Auto if cfg!(target_os = "linux") => {
            if resolved::detect(&paths.resolv_conf, &Resolvectl::new(&paths.resolvectl)) {
                DnsMode::Resolved
            } else {
                DnsMode::ResolvConf
            }
        }
        DnsMode::Auto => DnsMode::Off,
        other => other.clone(),
    }
}

/// Installed system DNS; [`SystemDnsGuard::restore`] or drop puts everything back
/// (dropping drops the part's own guard, which restores and logs a failure; after a
/// failed [`SystemDnsGuard::restore`] that is one more attempt).
#[derive(Debug)]
pub(crate) struct SystemDnsGuard {
    mode: DnsMode,
    part: Option<Part>,
}

#[derive(Debug)]
enum Part {
    ResolvConf(ResolvConfGuard),
    Resolved(ResolvedGuard),
    ResolverDir(ResolverDirGuard),
    Hosts(HostsGuard),
}

fn system_dns_error(action: &str, path: &Path, source: std::io::Error) -> Error {
    Error::SystemDns {
        action: action.to_owned(),
        path: path.to_owned(),
        source,
    }
}

/// Installs `plan` (after [`recover`]ing what crashed processes left, so a leftover is
/// never taken for the original). Blocking file I/O and, for
/// [`DnsMode::Resolved`], `resolvectl` calls: call it from a blocking context.
///
/// # Errors
///
/// [`Error::SystemDns`] naming the file (or `resolvectl`) and what failed: permissions,
/// a resolver file that is not kt's, a port other than 53 for resolv.conf, no link for
/// resolved, [`DnsMode::Auto`] not resolved first.
pub(crate) fn install(plan: &SystemDnsPlan) -> Result<SystemDnsGuard> {
    let paths = &plan.paths;
    if plan.mode != DnsMode::Off {
        for done in recover(paths)? {
            tracing::info!(%done, "restored before installing system DNS");
        }
    }
    let domain = plan.cluster_domain.trim_end_matches('.');
    let part = match &plan.mode {
        DnsMode::Off => None,
        DnsMode::Auto => {
            return Err(system_dns_error(
                "choose a DNS mode (resolve DnsMode::Auto first) for",
                &paths.resolv_conf,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "unresolved DnsMode::Auto"),
            ));
        }
        DnsMode::ResolvConf => {
            if plan.listen.port() != 53 {
                return Err(system_dns_error(
                    &format!("name the DNS server {} in", plan.listen),
                    &paths.resolv_conf,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "resolv.conf has no port setting; the local DNS server must listen on port 53",
                    ),
                ));
            }
            let guard = ResolvConf::install(
                &paths.resolv_conf,
                plan.listen.ip(),
                &plan.search,
                &paths.record_dir,
            )
            .map_err(|e| system_dns_error("install", &paths.resolv_conf, e))?;
            Some(Part::ResolvConf(guard))
        }
        DnsMode::Resolved => {
            let Some((link, _index)) = &plan.link else {
                return Err(system_dns_error(
                    "set per-link DNS without a tun device with",
                    &paths.resolvectl,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "per-link DNS needs the tun device",
                    ),
                ));
            };
            let guard = resolved::install(
                link,
                plan.listen,
                domain,
                &plan.search,
                Resolvectl::new(&paths.resolvectl),
            )
            .map_err(|e| {
                system_dns_error(&format!("configure link {link} with"), &paths.resolvectl, e)
            })?;
            Some(Part::Resolved(guard))
        }
        DnsMode::ResolverDir => {
            let domains = [domain.to_owned(), "svc".to_owned()];
            let guard = resolver_dir::install(
                &paths.resolver_dir,
                &domains,
                plan.listen,
                &plan.session,
                &paths.record_dir,
            )
            .map_err(|e| system_dns_error("write resolver files in", &paths.resolver_dir, e))?;
            Some(Part::ResolverDir(guard))
        }
        DnsMode::Hosts(_) => {
            let guard = hosts::install(&paths.hosts, &plan.session, &plan.hosts, &paths.record_dir)
                .map_err(|e| system_dns_error("add entries to", &paths.hosts, e))?;
            Some(Part::Hosts(guard))
        }
    };
    Ok(SystemDnsGuard {
        mode: plan.mode.clone(),
        part,
    })
}

impl SystemDnsGuard {
    /// The mode installed.
    pub(crate) fn mode(&self) -> &DnsMode {
        &self.mode
    }

    /// Puts everything back and removes the restore record. Calling it again (or
    /// dropping the guard) does nothing more.
    ///
    /// # Errors
    ///
    /// [`Error::SystemDns`]; the restore record is then kept for [`recover`].
    pub(crate) fn restore(mut self) -> Result<()> {
        self.restore_inner()
    }

    fn restore_inner(&mut self) -> Result<()> {
        let result = match &mut self.part {
            None => Ok(()),
            Some(Part::ResolvConf(g)) => {
                let path = g.path().to_owned();
                g.restore_inner()
                    .map_err(|e| system_dns_error("restore", &path, e))
            }
            Some(Part::Resolved(g)) => {
                let link = g.link().to_owned();
                g.restore_inner().map_err(|e| {
                    system_dns_error(
                        &format!("revert link {link} with"),
                        Path::new("resolvectl"),
                        e,
                    )
                })
            }
            Some(Part::ResolverDir(g)) => {
                let dir = g.files().next().map(record::parent_of).map(Path::to_owned);
                g.restore_inner().map_err(|e| {
                    system_dns_error(
                        "remove resolver files in",
                        dir.as_deref().unwrap_or(Path::new("/etc/resolver")),
                        e,
                    )
                })
            }
            Some(Part::Hosts(g)) => {
                let path = g.path().to_owned();
                g.restore_inner()
                    .map_err(|e| system_dns_error("remove kt's entries from", &path, e))
            }
        };
        if result.is_ok() {
            self.part = None;
        }
        result
    }
}

/// Undoes every system DNS change recorded in `paths.record_dir` by a kt process that
/// is no longer running (a crash, `kill -9`, a power cut): resolv.conf put back byte for
/// byte, kt's hosts block removed (the user's later edits kept), kt's `/etc/resolver`
/// files removed. Returns one line per change undone, for a log line or an event.
///
/// Only the files of `paths` are ever changed: a record naming another file (say
/// `/etc/shadow`) is left alone with a warning. Records are read only from a trusted
/// directory (see [`STATE_DIR_ENV`]), only when they are regular files (not symlinks)
/// of the effective user that no one else can write, checked on the open descriptor
/// they are read from; others are skipped with a warning.
///
/// Records of a live process are left alone, and so are records about a file that this
/// process does not see at the recorded path (one written in another network or mount
/// namespace, e.g. under `ip netns exec`, or a file replaced since): a process that sees
/// that file recovers it. systemd-resolved settings need no recovery: they vanish with
/// the tun link. Call it at start, or from a `ktctl recover`-style command; a session
/// calls it before installing system DNS.
///
/// # Errors
///
/// [`Error::SystemDns`] when the record directory cannot be listed, or others could
/// write it or a directory above it (the message says what to fix), or a change cannot
/// be undone (its record is kept to retry; the other records are still processed).
pub fn recover(paths: &SystemPaths) -> Result<Vec<String>> {
    let stale = record::stale_records(&paths.record_dir)
        .map_err(|e| system_dns_error("list restore records in", &paths.record_dir, e))?;
    let mut done = Vec::new();
    let mut first_error = None;
    for stale in stale {
        let result = match stale.value["kind"].as_str() {
            Some(system::KIND) => {
                system::recover_record(&stale, &paths.resolv_conf).map(|restored| {
                    restored.map(|path| format!("{} restored (pid {})", path.display(), stale.pid))
                })
            }
            Some(hosts::KIND) => hosts::recover_record(&stale, &paths.hosts),
            Some(resolver_dir::KIND) => resolver_dir::recover_record(&stale, &paths.resolver_dir),
            other => {
                tracing::debug!(record = %stale.record.display(), kind = ?other, "unknown restore record kind: left alone");
                Ok(None)
            }
        };
        match result {
            Ok(Some(line)) => done.push(line),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(record = %stale.record.display(), error = %e, "cannot undo a recorded system DNS change");
                first_error.get_or_insert(system_dns_error(
                    "recover the change recorded in",
                    &stale.record,
                    e,
                ));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::record::testing::{dead_pid, records, set_pid, temp_dir};

    const RESOLV: &str = "nameserver 192.0.2.53\nsearch corp.example\n";
    const HOSTS: &str = "127.0.0.1\tlocalhost\n";

    fn plan(root: &Path, mode: DnsMode) -> SystemDnsPlan {
        let paths = SystemPaths::under(root);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(&paths.resolv_conf, RESOLV).unwrap();
        std::fs::write(&paths.hosts, HOSTS).unwrap();
        SystemDnsPlan {
            mode,
            listen: "127.0.0.1:53".parse().unwrap(),
            search: vec![
                "dev.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            cluster_domain: "cluster.local".into(),
            link: None,
            hosts: hosts::hosts_entries(
                &[("web".into(), "dev".into(), "10.96.0.10".parse().unwrap())],
                "dev",
                "cluster.local",
            ),
            session: "s1".into(),
            paths,
        }
    }

    fn untouched(root: &Path) -> bool {
        let paths = SystemPaths::under(root);
        std::fs::read_to_string(&paths.resolv_conf).unwrap() == RESOLV
            && std::fs::read_to_string(&paths.hosts).unwrap() == HOSTS
            && !paths.resolver_dir.exists()
            && records(&paths.record_dir).is_empty()
    }

    #[test]
    fn each_file_mode_installs_and_restores() {
        let root = temp_dir("install-modes");
        for mode in [
            DnsMode::ResolvConf,
            DnsMode::Hosts(vec![]),
            DnsMode::ResolverDir,
        ] {
            let plan = plan(&root, mode.clone());
            let guard = install(&plan).unwrap();
            assert_eq!(guard.mode(), &mode);
            let resolv = std::fs::read_to_string(&plan.paths.resolv_conf).unwrap();
            let hosts = std::fs::read_to_string(&plan.paths.hosts).unwrap();
            match mode {
                DnsMode::ResolvConf => {
                    assert!(resolv.contains("nameserver 127.0.0.1\n"), "{resolv}")
                }
                DnsMode::Hosts(_) => {
                    assert!(hosts.contains("web.dev.svc.cluster.local"), "{hosts}")
                }
                _ => assert!(plan.paths.resolver_dir.join("cluster.local").exists()),
            }
            guard.restore().unwrap();
            assert!(untouched(&root), "{mode:?} left something");
        }
        std::fs::remove_dir_all(&root).unwrap();
        // Off changes nothing (not even a record directory), and restoring it is a no-op.
        let root = temp_dir("install-off");
        let plan = plan(&root, DnsMode::Off);
        let guard = install(&plan).unwrap();
        assert!(untouched(&root));
        assert!(!plan.paths.record_dir.exists(), "Off wrote a record");
        guard.restore().unwrap();
        assert!(untouched(&root));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn refusals_are_system_dns_errors_naming_the_file() {
        let root = temp_dir("install-refuse");
        let mut p = plan(&root, DnsMode::ResolvConf);
        p.listen = "127.0.0.1:5353".parse().unwrap();
        let err = install(&p).unwrap_err();
        assert!(matches!(err, Error::SystemDns { .. }), "{err}");
        assert!(err.to_string().contains("port 53"), "{err}");
        let p = plan(&root, DnsMode::Resolved);
        let err = install(&p).unwrap_err();
        assert!(err.to_string().contains("without a tun device"), "{err}");
        let p = plan(&root, DnsMode::Auto);
        assert!(install(&p).is_err());
        std::fs::create_dir_all(&p.paths.resolver_dir).unwrap();
        std::fs::write(p.paths.resolver_dir.join("svc"), "nameserver 192.0.2.1\n").unwrap();
        let p = plan(&root, DnsMode::ResolverDir);
        let err = install(&p).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("resolver") && shown.contains("not written by this kt session"),
            "{shown}"
        );
        assert_eq!(
            std::fs::read_to_string(p.paths.resolver_dir.join("svc")).unwrap(),
            "nameserver 192.0.2.1\n"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn recover_undoes_every_kind_left_by_a_dead_process_and_install_recovers_first() {
        let root = temp_dir("install-recover");
        let base = plan(&root, DnsMode::Off);
        let mut guards = Vec::new();
        for mode in [
            DnsMode::ResolvConf,
            DnsMode::Hosts(vec![]),
            DnsMode::ResolverDir,
        ] {
            let p = SystemDnsPlan {
                mode,
                ..base.clone()
            };
            guards.push(install(&p).unwrap());
        }
        let paths = SystemPaths::under(&root);
        // The process "crashes": nothing is restored.
        for g in guards {
            std::mem::forget(g);
        }
        assert_eq!(records(&paths.record_dir).len(), 3);
        assert!(recover(&paths).unwrap().is_empty(), "this process is alive");
        let dead = dead_pid();
        for r in records(&paths.record_dir) {
            set_pid(&r, dead);
        }
        let done = recover(&paths).unwrap();
        assert_eq!(done.len(), 3, "{done:?}");
        assert!(untouched(&root), "{done:?}");
        // Twice: nothing left to do.
        assert!(recover(&paths).unwrap().is_empty());

        // install() recovers first: a leftover is never taken for the original.
        let p = plan(&root, DnsMode::ResolvConf);
        let g = install(&p).unwrap();
        let r = records(&paths.record_dir);
        std::mem::forget(g);
        set_pid(&r[0], dead);
        let g = install(&p).unwrap();
        g.restore().unwrap();
        assert!(untouched(&root));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn records_naming_files_outside_the_system_paths_are_never_applied() {
        use serde_json::{Value, json};
        let root = temp_dir("install-allow");
        let paths = plan(&root, DnsMode::Off).paths;
        // Stands for /etc/shadow: a file kt never changes, with a kt-looking block in it.
        let shadow = root.join("etc/shadow");
        const SHADOW: &str = "root:$6$x:19000:0:99999:7:::\n# kt session s1 begin\n10.0.0.1\tx\n# kt session s1 end\n";
        std::fs::write(&shadow, SHADOW).unwrap();
        let identity = record::Identity::of(&shadow).to_json();
        let dead = dead_pid();
        let forge = |kind: &str, fields: Value| {
            let path = record::new_record_path(&paths.record_dir, "forged").unwrap();
            let mut value = Value::Object(record::header(kind));
            for (k, v) in fields.as_object().unwrap() {
                value[k] = v.clone();
            }
            value["pid"] = dead.into();
            record::write_record(&path, &value).unwrap();
        };
        forge(
            system::KIND,
            json!({"path": shadow, "original": "root::0:0:::\n", "symlink": null,
                   "through_symlink": false, "identity": identity}),
        );
        forge(
            hosts::KIND,
            json!({"path": shadow, "session": "s1", "newline_added": false,
                   "created": false, "identity": identity}),
        );
        // A resolver-dir record about another directory, and one about the resolver
        // directory that lists a file outside it.
        for dir in [root.join("etc"), paths.resolver_dir.clone()] {
            forge(
                resolver_dir::KIND,
                json!({"dir": dir, "created_dir": false, "session": "s1",
                       "files": [{"path": shadow, "identity": identity}]}),
            );
        }
        let done = recover(&paths).unwrap();
        assert!(done.is_empty(), "{done:?}");
        assert_eq!(std::fs::read_to_string(&shadow).unwrap(), SHADOW);
        assert_eq!(
            records(&paths.record_dir).len(),
            4,
            "left alone for whoever uses those paths"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_state_dir_others_can_write_is_refused_with_a_clear_error() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = temp_dir("install-state");
        // What `KT_STATE_DIR=<root>/state` gives, on a directory everyone can write.
        let state = root.join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut p = plan(&root, DnsMode::ResolvConf);
        p.paths.record_dir = state.join("restore");
        for err in [recover(&p.paths).unwrap_err(), install(&p).unwrap_err()] {
            assert!(matches!(err, Error::SystemDns { .. }), "{err}");
            let shown = err.to_string();
            assert!(
                shown.contains(&state.display().to_string())
                    && shown.contains("writable by its group or others")
                    && shown.contains(STATE_DIR_ENV),
                "{shown}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(&p.paths.resolv_conf).unwrap(),
            RESOLV,
            "installed without a trusted restore record"
        );
        assert!(!state.join("restore").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn auto_is_resolv_conf_without_systemd_resolved() {
        let root = temp_dir("install-auto");
        let mut paths = SystemPaths::under(&root);
        paths.resolvectl = root.join("no-such-resolvectl");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(&paths.resolv_conf, "nameserver 127.0.0.53\n").unwrap();
        let auto = resolve_auto(&DnsMode::Auto, &paths);
        if cfg!(target_os = "linux") {
            assert_eq!(auto, DnsMode::ResolvConf);
        }
        assert_eq!(resolve_auto(&DnsMode::Off, &paths), DnsMode::Off);
        assert_eq!(
            resolve_auto(&DnsMode::Hosts(vec!["a".into()]), &paths),
            DnsMode::Hosts(vec!["a".into()])
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn system_paths_default_to_the_machines_files() {
        let p = SystemPaths::system();
        assert_eq!(p.resolv_conf, Path::new("/etc/resolv.conf"));
        assert_eq!(p.hosts, Path::new("/etc/hosts"));
        assert!(p.record_dir.ends_with("restore"));
    }
}
