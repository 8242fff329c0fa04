//! macOS per-domain resolvers ([`DnsMode::ResolverDir`](crate::DnsMode::ResolverDir)):
//! one file per domain in `/etc/resolver/` (see macOS `resolver(5)`), e.g.
//! `/etc/resolver/cluster.local`:
//!
//! ```text
//! # kt session 3f9a: cluster names through kt; removed when kt exits
//! nameserver 127.0.0.1
//! port 5353
//! ```
//!
//! Queries for names in that domain go to the local DNS server; everything else keeps
//! the system's resolvers. kt writes files for the cluster domain and for `svc` (so
//! `web.dev.svc` works too); short names (`web`) are not covered by this mode.
//!
//! A file that already exists is never overwritten: installing fails with a clear
//! error instead. The restore record (see `dns::record`) lists the files; restoring
//! removes each one that is still the file kt created (same device and inode), and the
//! directory when kt created it and it is empty again.
//!
//! This is plain file logic: it builds and is tested on Linux with a temporary
//! directory standing for `/etc/resolver`; that macOS reads the files is not tested here.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::record::{self, DevIno, Identity, Stale};

/// What `kind` a restore record of this module has.
pub(crate) const KIND: &str = "resolver-dir";

/// The content of a resolver file sending queries to `server`.
pub(crate) fn render(session: &str, server: SocketAddr) -> String {
    let mut out = format!(
        "# kt session {session}: cluster names through kt; removed when kt exits\n\
         nameserver {}\n",
        server.ip()
    );
    if server.port() != 53 {
        out.push_str(&format!("port {}\n", server.port()));
    }
    out
}

/// A domain must be a plain file name in the resolver directory.
fn check_domain(domain: &str) -> io::Result<()> {
    let ok = !domain.is_empty()
        && domain != "."
        && domain != ".."
        && !domain.starts_with('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{domain}` is not a domain name usable as a resolver file name"),
        ))
    }
}

/// Installed resolver files; [`ResolverDirGuard::restore`] or drop removes them.
#[derive(Debug)]
pub(crate) struct ResolverDirGuard {
    dir: PathBuf,
    created_dir: bool,
    /// The files created so far, with their identity.
    files: Vec<(PathBuf, Option<DevIno>)>,
    record: PathBuf,
    restored: bool,
}

/// Writes one resolver file per domain in `dir` (created if missing) pointing at
/// `server`, after a restore record in `record_dir`.
///
/// # Errors
///
/// [`io::ErrorKind::AlreadyExists`] when a file for one of the domains exists (nothing
/// is written then); [`io::ErrorKind::InvalidInput`] for a domain that is not a plain
/// name; other I/O errors (what was written is removed again).
pub(crate) fn install(
    dir: &Path,
    domains: &[String],
    server: SocketAddr,
    session: &str,
    record_dir: &Path,
) -> io::Result<ResolverDirGuard> {
    let mut domains: Vec<&str> = domains.iter().map(|d| d.trim_end_matches('.')).collect();
    domains.dedup();
    for d in &domains {
        check_domain(d)?;
    }
    let paths: Vec<PathBuf> = domains.iter().map(|d| dir.join(d)).collect();
    if let Some(taken) = paths.iter().find(|p| std::fs::symlink_metadata(p).is_ok()) {
        return Err(taken_error(taken));
    }
    let created_dir = !dir.exists();
    std::fs::create_dir_all(dir)?;
    let record = record::new_record_path(record_dir, "resolver-dir")?;
    // The identity of a file to be created in `dir`: no file yet, `dir` as the parent.
    let identity = Identity {
        file: None,
        parent: record::dev_ino(dir),
        ..Identity::of(dir)
    };
    let mut value = Value::Object(record::header(KIND));
    value["dir"] = dir.to_string_lossy().into();
    value["created_dir"] = created_dir.into();
    value["session"] = session.into();
    // Every file that may be created, with no file identity until it exists.
    value["files"] = files_json(paths.iter().map(|p| (p.as_path(), None)), &identity);
    record::write_record(&record, &value)?;
    let mut guard = ResolverDirGuard {
        dir: dir.to_owned(),
        created_dir,
        files: Vec::new(),
        record,
        restored: false,
    };
    let content = render(session, server);
    for path in &paths {
        // `create_new`: never overwrite a file that appeared since the check.
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(taken_error(path)),
            Err(e) => return Err(e),
        };
        guard.files.push((path.clone(), record::dev_ino(path)));
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
    }
    value["files"] = files_json(
        guard.files.iter().map(|(p, id)| (p.as_path(), *id)),
        &identity,
    );
    record::write_record(&guard.record, &value)?;
    Ok(guard)
}

fn taken_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} exists and was not written by this kt session; kt does not overwrite \
             another program's resolver (remove the file if it is a leftover)",
            path.display()
        ),
    )
}

fn files_json<'a>(
    files: impl Iterator<Item = (&'a Path, Option<DevIno>)>,
    dir_identity: &Identity,
) -> Value {
    files
        .map(|(path, file)| {
            serde_json::json!({
                "path": path.to_string_lossy(),
                "identity": Identity { file, ..dir_identity.clone() }.to_json(),
            })
        })
        .collect::<Vec<_>>()
        .into()
}

/// Removes `path` if it is still the file that was created, or when it is unknown
/// whether it was created, if it exists and carries `session`'s marker. Returns
/// whether it removed it.
fn remove_if_ours(path: &Path, identity: &Identity, session: &str) -> io::Result<bool> {
    let ours = match identity.file {
        Some(_) => identity.matches_here(path),
        None => {
            identity.matches_here(path)
                && std::fs::read_to_string(path)
                    .is_ok_and(|t| t.starts_with(&format!("# kt session {session}:")))
        }
    };
    if !ours {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl ResolverDirGuard {
    /// The files written.
    pub(crate) fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// The restore record.
    #[cfg(test)]
    pub(crate) fn record(&self) -> &Path {
        &self.record
    }

    /// Removes the files and the record. Calling it again does nothing.
    ///
    /// # Errors
    ///
    /// I/O errors; the record is then kept for recovery.
    #[cfg(test)]
    pub(crate) fn restore(mut self) -> io::Result<()> {
        self.restore_inner()
    }

    pub(crate) fn restore_inner(&mut self) -> io::Result<()> {
        if self.restored {
            return Ok(());
        }
        for (path, id) in &self.files {
            let still_ours = id.is_some() && record::dev_ino(path) == *id;
            if still_ours {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        if self.created_dir {
            // Fails (and is left) when something else is in it now.
            let _ = std::fs::remove_dir(&self.dir);
        }
        self.restored = true;
        record::remove_record(&self.record)
    }
}

impl Drop for ResolverDirGuard {
    fn drop(&mut self) {
        if let Err(e) = self.restore_inner() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove kt's resolver files");
        }
    }
}

/// Removes the files of one stale record that this process sees as the ones created,
/// if the record is about `allowed` (the resolver directory kt changes) and every file
/// it lists is a resolver file directly in it; returns what it did.
pub(crate) fn recover_record(stale: &Stale, allowed: &Path) -> io::Result<Option<String>> {
    let value = &stale.value;
    let (Some(dir), Some(session), Some(files)) = (
        value["dir"].as_str().map(PathBuf::from),
        value["session"].as_str(),
        value["files"].as_array(),
    ) else {
        return Ok(None);
    };
    let files: Vec<(PathBuf, Identity)> = files
        .iter()
        .filter_map(|f| {
            Some((
                PathBuf::from(f["path"].as_str()?),
                Identity::from_json(&f["identity"])?,
            ))
        })
        .collect();
    if !record::names_allowed(stale, &dir, allowed) {
        return Ok(None);
    }
    // Each file must be `<dir>/<domain>`: the record must not remove anything else.
    if let Some((outside, _)) = files.iter().find(|(path, _)| {
        path.parent() != Some(dir.as_path())
            || path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| check_domain(n).is_err())
    }) {
        record::names_allowed(stale, outside, &dir.join("<domain>"));
        return Ok(None);
    }
    // The record is about this view of the directory if the directory is the recorded
    // one in the recorded network namespace (macOS: no namespaces, the directory decides).
    let dir_here = files.first().is_some_and(|(_, id)| {
        id.parent.is_some() && id.parent == record::dev_ino(&dir) && id.same_net_ns()
    }) || files
        .iter()
        .any(|(p, id)| id.file.is_some() && id.matches_here(p));
    if !dir_here {
        tracing::debug!(
            record = %stale.record.display(),
            dir = %dir.display(),
            "resolver-dir restore record is about another directory than this process sees: left alone"
        );
        return Ok(None);
    }
    let mut removed = Vec::new();
    for (path, identity) in &files {
        if remove_if_ours(path, identity, session)? {
            removed.push(path.display().to_string());
        }
    }
    if value["created_dir"] == true {
        let _ = std::fs::remove_dir(&dir);
    }
    record::remove_record(&stale.record)?;
    tracing::info!(dir = %dir.display(), pid = stale.pid, ?removed, "removed resolver files left by a crashed kt");
    Ok(Some(format!(
        "resolver files of kt session {session} in {} ({}) (pid {})",
        dir.display(),
        if removed.is_empty() {
            "none left".to_owned()
        } else {
            removed.join(", ")
        },
        stale.pid
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::record::testing::{dead_pid, edit, records, set_pid, temp_dir};

    fn domains() -> Vec<String> {
        vec!["cluster.local".to_owned(), "svc".to_owned()]
    }

    fn server() -> SocketAddr {
        "127.0.0.1:5353".parse().unwrap()
    }

    /// Recovers the records in `records` about the resolver directory `dir`.
    fn recover_all(records: &Path, dir: &Path) -> Vec<String> {
        record::stale_records(records)
            .unwrap()
            .iter()
            .filter_map(|s| recover_record(s, dir).unwrap())
            .collect()
    }

    #[test]
    fn file_content_names_the_server_and_a_port_other_than_53() {
        assert_eq!(
            render("s1", server()),
            "# kt session s1: cluster names through kt; removed when kt exits\n\
             nameserver 127.0.0.1\nport 5353\n"
        );
        assert!(!render("s1", "198.18.0.1:53".parse().unwrap()).contains("port"));
        assert!(render("s1", "[fd00::1]:53".parse().unwrap()).contains("nameserver fd00::1\n"));
    }

    #[test]
    fn install_writes_one_file_per_domain_and_restore_removes_them_and_the_dir() {
        let root = temp_dir("resolver");
        let dir = root.join("etc/resolver");
        let records_dir = root.join("records");
        let guard = install(&dir, &domains(), server(), "s1", &records_dir).unwrap();
        assert_eq!(guard.files().count(), 2);
        for d in ["cluster.local", "svc"] {
            assert_eq!(
                std::fs::read_to_string(dir.join(d)).unwrap(),
                render("s1", server())
            );
        }
        guard.restore().unwrap();
        assert!(!dir.exists(), "the directory kt created is removed");
        assert!(records(&records_dir).is_empty());
        // An existing directory stays, and so do other files in it.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("corp.example"), "nameserver 192.0.2.1\n").unwrap();
        let mut guard = install(&dir, &domains(), server(), "s1", &records_dir).unwrap();
        guard.restore_inner().unwrap();
        guard.restore_inner().unwrap(); // twice: nothing more happens
        drop(guard);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["corp.example"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_existing_file_is_refused_and_left_as_it_was() {
        let root = temp_dir("resolver-refuse");
        let dir = root.join("resolver");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("svc"), "nameserver 192.0.2.1\n").unwrap();
        let err = install(&dir, &domains(), server(), "s1", &root.join("records")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("svc"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("svc")).unwrap(),
            "nameserver 192.0.2.1\n"
        );
        assert!(!dir.join("cluster.local").exists());
        assert!(records(&root.join("records")).is_empty());
        for bad in ["../etc", "", "a/b"] {
            let err = install(
                &dir,
                &[bad.to_owned()],
                server(),
                "s1",
                &root.join("records"),
            )
            .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn recovery_removes_a_crashed_sessions_files_but_not_a_file_replaced_since() {
        let root = temp_dir("resolver-crash");
        let dir = root.join("resolver");
        let records_dir = root.join("records");
        let guard = install(&dir, &domains(), server(), "s1", &records_dir).unwrap();
        let record = guard.record().to_owned();
        std::mem::forget(guard);
        assert!(
            recover_all(&records_dir, &dir).is_empty(),
            "the owner is alive"
        );
        set_pid(&record, dead_pid());
        // Someone replaced one of the files with their own.
        let theirs = root.join("theirs");
        std::fs::write(&theirs, "nameserver 192.0.2.1\n").unwrap();
        std::fs::rename(&theirs, dir.join("svc")).unwrap();
        let done = recover_all(&records_dir, &dir);
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(!dir.join("cluster.local").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("svc")).unwrap(),
            "nameserver 192.0.2.1\n"
        );
        assert!(!record.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn recovery_leaves_a_record_about_another_directory_alone() {
        let root = temp_dir("resolver-other");
        let dir = root.join("resolver");
        let records_dir = root.join("records");
        let guard = install(&dir, &domains(), server(), "s1", &records_dir).unwrap();
        let record = guard.record().to_owned();
        std::mem::forget(guard);
        set_pid(&record, dead_pid());
        // As seen from another namespace: other inodes, another network namespace.
        edit(&record, |v| {
            for f in v["files"].as_array_mut().unwrap() {
                f["identity"]["file"] = serde_json::json!([1, 1]);
                f["identity"]["parent"] = serde_json::json!([1, 2]);
                f["identity"]["net_ns"] = serde_json::json!([1, 3]);
            }
        });
        assert!(recover_all(&records_dir, &dir).is_empty());
        assert!(dir.join("cluster.local").exists() && dir.join("svc").exists());
        assert!(record.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
