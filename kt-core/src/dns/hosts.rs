//! Hosts mode ([`DnsMode::Hosts`](crate::DnsMode::Hosts)): Service names written into a
//! hosts file, as kt-connect's `hosts` mode and kubefwd do, for machines where no DNS
//! server can be installed.
//!
//! The entries live in one marked block appended to the file:
//!
//! ```text
//! # kt session 3f9a begin
//! 10.96.0.10 web.dev.svc.cluster.local web.dev.svc web.dev web
//! # kt session 3f9a end
//! ```
//!
//! (a tab after the address in the file).
//!
//! Restoring removes exactly that block from the file *as it is then*: lines the user
//! (or another program, or another kt session with its own block) added or changed
//! meanwhile stay. If the original file did not end with a newline, the one kt added
//! before its block is removed too, so an untouched file comes back byte for byte. The
//! block is appended (never a rewrite of the user's bytes), so a crash while writing it
//! leaves the original followed by part of the block; recovery removes from the begin
//! marker to the end marker, or to the end of the file when the end marker never made
//! it to disk.
//!
//! A restore record is written first (see `dns::record`); recovery acts when the path
//! still names the recorded file, or when the file there holds this session's block
//! and the network namespace is the recorded one (an editor that saves by renaming
//! gives the file a new inode, but the block with its unique session id is still ours).

use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::record::{self, Identity, Stale};

/// What `kind` a restore record of this module has.
pub(crate) const KIND: &str = "hosts";

/// The hosts lines for Services, one per `(name, namespace, ClusterIP)`:
/// `name.ns.svc.<domain>`, `name.ns.svc`, `name.ns`, and the bare `name` only for
/// Services in `session_ns` (short names resolve in the session's namespace, as in a
/// pod there). The fully qualified name comes first, so it is the canonical name.
pub(crate) fn hosts_entries(
    services: &[(String, String, IpAddr)],
    session_ns: &str,
    domain: &str,
) -> Vec<(IpAddr, Vec<String>)> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    services
        .iter()
        .map(|(name, ns, ip)| {
            let name = name.to_ascii_lowercase();
            let ns = ns.to_ascii_lowercase();
            let mut names = vec![
                format!("{name}.{ns}.svc.{domain}"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}"),
            ];
            if ns.eq_ignore_ascii_case(session_ns) {
                names.push(name);
            }
            (*ip, names)
        })
        .collect()
}

fn begin_marker(session: &str) -> String {
    format!("# kt session {session} begin")
}

fn end_marker(session: &str) -> String {
    format!("# kt session {session} end")
}

/// The block for `entries`, markers included, ending with a newline.
pub(crate) fn render_block(session: &str, entries: &[(IpAddr, Vec<String>)]) -> String {
    let mut out = begin_marker(session);
    out.push('\n');
    for (ip, names) in entries {
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    out.push_str(&end_marker(session));
    out.push('\n');
    out
}

/// A session id is part of the markers: letters, digits, `-`, `_`, `.` only.
pub(crate) fn check_session(session: &str) -> io::Result<()> {
    let ok = !session.is_empty()
        && session.len() <= 64
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("session id `{session}` is not usable in a marker (letters, digits, `-_.`)"),
        ))
    }
}

/// The start of a line of `content` that is exactly `line` (ended by a newline or the
/// end of the content), searching from `from`; with the end of that line (past its
/// newline).
fn find_line(content: &[u8], line: &str, from: usize) -> Option<(usize, usize)> {
    let needle = line.as_bytes();
    let mut start = from;
    while start + needle.len() <= content.len() {
        let at_line_start = start == 0 || content[start - 1] == b'\n';
        if at_line_start && content[start..].starts_with(needle) {
            let end = start + needle.len();
            if end == content.len() {
                return Some((start, end));
            }
            if content[end] == b'\n' {
                return Some((start, end + 1));
            }
        }
        match content[start..].iter().position(|&b| b == b'\n') {
            Some(nl) => start += nl + 1,
            None => break,
        }
    }
    None
}

/// The byte range of `session`'s block: from its begin line through its end line, or
/// to the end of the content when the end line is missing (a write cut short).
fn find_block(content: &[u8], session: &str) -> Option<(usize, usize)> {
    let (start, after_begin) = find_line(content, &begin_marker(session), 0)?;
    let end =
        find_line(content, &end_marker(session), after_begin).map_or(content.len(), |(_, end)| end);
    Some((start, end))
}

/// `content` without `session`'s block (and without the newline kt added before it
/// when nothing follows the block); `None` when the block is not there.
pub(crate) fn without_block(content: &[u8], session: &str, newline_added: bool) -> Option<Vec<u8>> {
    let (start, end) = find_block(content, session)?;
    let start = if newline_added && end == content.len() && start > 0 && content[start - 1] == b'\n'
    {
        start - 1
    } else {
        start
    };
    let mut out = content[..start].to_vec();
    out.extend_from_slice(&content[end..]);
    Some(out)
}

/// Hosts entries installed in a file; [`HostsGuard::restore`] or drop removes the
/// block and the restore record.
#[derive(Debug)]
pub(crate) struct HostsGuard {
    path: PathBuf,
    session: String,
    newline_added: bool,
    created: bool,
    record: PathBuf,
    restored: bool,
}

/// Appends `session`'s block with `entries` to the hosts file at `path` (created if
/// missing), after writing a restore record to `record_dir`.
///
/// # Errors
///
/// I/O errors; [`io::ErrorKind::AlreadyExists`] when the file already holds a block of
/// this session; [`io::ErrorKind::InvalidInput`] for a session id unfit for a marker.
pub(crate) fn install(
    path: &Path,
    session: &str,
    entries: &[(IpAddr, Vec<String>)],
    record_dir: &Path,
) -> io::Result<HostsGuard> {
    check_session(session)?;
    let current = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if current
        .as_deref()
        .is_some_and(|c| find_block(c, session).is_some())
    {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already holds the entries of kt session {session}",
                path.display()
            ),
        ));
    }
    let created = current.is_none();
    let newline_added = current
        .as_deref()
        .is_some_and(|c| c.last().is_some_and(|&b| b != b'\n'));
    let mut identity = Identity::of(path);
    if created {
        identity.file = None;
    }
    let record = record::new_record_path(record_dir, "hosts")?;
    let mut value = Value::Object(record::header(KIND));
    value["path"] = path.to_string_lossy().into();
    value["session"] = session.into();
    value["newline_added"] = newline_added.into();
    value["created"] = created.into();
    value["identity"] = identity.to_json();
    record::write_record(&record, &value)?;
    let guard = HostsGuard {
        path: path.to_owned(),
        session: session.to_owned(),
        newline_added,
        created,
        record,
        restored: false,
    };
    let mut text = String::new();
    if newline_added {
        text.push('\n');
    }
    text.push_str(&render_block(session, entries));
    // Appended: the user's bytes are never rewritten.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    if created {
        identity.file = record::dev_ino(path);
        value["identity"] = identity.to_json();
        record::write_record(&guard.record, &value)?;
    }
    Ok(guard)
}

impl HostsGuard {
    /// The hosts file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The restore record.
    #[cfg(test)]
    pub(crate) fn record(&self) -> &Path {
        &self.record
    }

    /// Removes the block (leaving every other byte of the file as it is now) and the
    /// restore record. Calling it again does nothing.
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
        remove_block(&self.path, &self.session, self.newline_added, self.created)?;
        self.restored = true;
        record::remove_record(&self.record)
    }
}

impl Drop for HostsGuard {
    fn drop(&mut self) {
        if let Err(e) = self.restore_inner() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove kt's hosts entries");
        }
    }
}

/// Removes `session`'s block from the file at `path`; false when it was not there.
fn remove_block(
    path: &Path,
    session: &str,
    newline_added: bool,
    created: bool,
) -> io::Result<bool> {
    let content = match std::fs::read(path) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let Some(new) = without_block(&content, session, newline_added) else {
        return Ok(false);
    };
    if created && new.is_empty() {
        std::fs::remove_file(path)?;
    } else if content.starts_with(&new) {
        // The block was the tail: cut it off without rewriting anything else.
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(new.len() as u64)?;
        file.sync_all()?;
    } else {
        record::write_durable(path, &new)?;
    }
    Ok(true)
}

/// Removes the block of one stale record if it names `allowed` (the hosts file kt
/// changes) and this process sees that file; returns what it did.
pub(crate) fn recover_record(stale: &Stale, allowed: &Path) -> io::Result<Option<String>> {
    let value = &stale.value;
    let (Some(path), Some(session)) = (
        value["path"].as_str().map(PathBuf::from),
        value["session"].as_str(),
    ) else {
        return Ok(None);
    };
    if !record::names_allowed(stale, &path, allowed) {
        return Ok(None);
    }
    let Some(identity) = Identity::from_json(&value["identity"]) else {
        return Ok(None);
    };
    let holds_block = || {
        std::fs::read(&path)
            .is_ok_and(|c| check_session(session).is_ok() && find_block(&c, session).is_some())
    };
    if !(identity.matches_here(&path) || (identity.same_net_ns() && holds_block())) {
        tracing::debug!(
            record = %stale.record.display(),
            path = %path.display(),
            "hosts restore record is about another file than this process sees there: left alone"
        );
        return Ok(None);
    }
    let removed = remove_block(
        &path,
        session,
        value["newline_added"] == true,
        value["created"] == true,
    )?;
    record::remove_record(&stale.record)?;
    tracing::info!(path = %path.display(), pid = stale.pid, session, removed, "removed hosts entries left by a crashed kt");
    Ok(Some(format!(
        "hosts entries of kt session {session} in {} (pid {})",
        path.display(),
        stale.pid
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::record::testing::{dead_pid, records, set_pid, temp_dir};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn entries() -> Vec<(IpAddr, Vec<String>)> {
        hosts_entries(
            &[
                ("web".into(), "dev".into(), ip("10.96.0.10")),
                ("db".into(), "other".into(), ip("10.96.0.20")),
            ],
            "dev",
            "cluster.local.",
        )
    }

    const ORIGINAL: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n\n# comment\n";

    /// Recovers the records in `records` about the hosts file `path`.
    fn recover_all(records: &Path, path: &Path) -> Vec<String> {
        record::stale_records(records)
            .unwrap()
            .iter()
            .filter_map(|s| recover_record(s, path).unwrap())
            .collect()
    }

    #[test]
    fn entries_have_three_qualified_names_and_the_short_one_only_in_the_session_namespace() {
        assert_eq!(
            entries(),
            [
                (
                    ip("10.96.0.10"),
                    vec![
                        "web.dev.svc.cluster.local".to_owned(),
                        "web.dev.svc".to_owned(),
                        "web.dev".to_owned(),
                        "web".to_owned(),
                    ]
                ),
                (
                    ip("10.96.0.20"),
                    vec![
                        "db.other.svc.cluster.local".to_owned(),
                        "db.other.svc".to_owned(),
                        "db.other".to_owned(),
                    ]
                ),
            ]
        );
        assert_eq!(
            render_block("s1", &entries()),
            "# kt session s1 begin\n\
             10.96.0.10\tweb.dev.svc.cluster.local web.dev.svc web.dev web\n\
             10.96.0.20\tdb.other.svc.cluster.local db.other.svc db.other\n\
             # kt session s1 end\n"
        );
    }

    #[test]
    fn install_appends_the_block_and_restore_gives_the_file_back_byte_for_byte() {
        let dir = temp_dir("hosts-restore");
        let path = dir.join("hosts");
        let records_dir = dir.join("records");
        for original in [ORIGINAL, "127.0.0.1 localhost", ""] {
            std::fs::write(&path, original).unwrap();
            let guard = install(&path, "s1", &entries(), &records_dir).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with(original), "{text}");
            assert!(
                text.contains("\n10.96.0.10\tweb.dev.svc.cluster.local web.dev.svc web.dev web\n"),
                "{text}"
            );
            guard.restore().unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
            assert!(records(&records_dir).is_empty());
        }
        // Drop restores too; a missing file is created and removed again.
        std::fs::remove_file(&path).unwrap();
        drop(install(&path, "s1", &entries(), &records_dir).unwrap());
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn restore_keeps_the_users_edits_made_meanwhile() {
        let dir = temp_dir("hosts-edits");
        let path = dir.join("hosts");
        std::fs::write(&path, ORIGINAL).unwrap();
        let guard = install(&path, "s1", &entries(), &dir.join("records")).unwrap();
        // The user changes a line before the block and adds one after it.
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replace("# comment", "# edited comment") + "192.0.2.1\tmine\n";
        std::fs::write(&path, &edited).unwrap();
        guard.restore().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            ORIGINAL.replace("# comment", "# edited comment") + "192.0.2.1\tmine\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_sessions_remove_only_their_own_block_and_double_restore_is_harmless() {
        let dir = temp_dir("hosts-two");
        let path = dir.join("hosts");
        let records_dir = dir.join("records");
        std::fs::write(&path, ORIGINAL).unwrap();
        let mut first = install(&path, "s1", &entries(), &records_dir).unwrap();
        let second = install(&path, "s2", &entries()[1..], &records_dir).unwrap();
        let both = std::fs::read_to_string(&path).unwrap();
        // The same session twice is refused.
        let again = install(&path, "s1", &entries(), &records_dir).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), both);
        first.restore_inner().unwrap();
        let after_first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after_first,
            format!("{ORIGINAL}{}", render_block("s2", &entries()[1..]))
        );
        first.restore_inner().unwrap();
        drop(first);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), after_first);
        second.restore().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ORIGINAL);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_crashed_sessions_block_is_removed_by_recovery_with_later_edits_kept() {
        let dir = temp_dir("hosts-crash");
        let path = dir.join("hosts");
        let records_dir = dir.join("records");
        std::fs::write(&path, ORIGINAL).unwrap();
        let guard = install(&path, "s1", &entries(), &records_dir).unwrap();
        let record = guard.record().to_owned();
        std::mem::forget(guard);
        // Still alive: nothing recovered.
        assert!(recover_all(&records_dir, &path).is_empty());
        set_pid(&record, dead_pid());
        std::fs::write(
            &path,
            std::fs::read_to_string(&path).unwrap() + "192.0.2.1\tmine\n",
        )
        .unwrap();
        let done = recover_all(&records_dir, &path);
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{ORIGINAL}192.0.2.1\tmine\n")
        );
        assert!(!record.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_block_cut_short_by_a_crash_is_removed_to_the_end_of_the_file() {
        let content = format!("{ORIGINAL}# kt session s1 begin\n10.96.0.10\tweb.d");
        assert_eq!(
            without_block(content.as_bytes(), "s1", false).unwrap(),
            ORIGINAL.as_bytes()
        );
        // A marker of another session, or inside a line, is not ours.
        assert!(without_block(b"x # kt session s1 begin\n", "s1", false).is_none());
        assert!(without_block(b"# kt session s10 begin\n", "s1", false).is_none());
    }

    #[test]
    fn recovery_leaves_a_record_about_another_file_alone() {
        let dir = temp_dir("hosts-other");
        let path = dir.join("hosts");
        let records_dir = dir.join("records");
        std::fs::write(&path, ORIGINAL).unwrap();
        let guard = install(&path, "s1", &entries(), &records_dir).unwrap();
        let record = guard.record().to_owned();
        std::mem::forget(guard);
        set_pid(&record, dead_pid());
        // The path now names another file (as /etc/hosts does in another namespace),
        // which does not hold the block.
        let other = dir.join("other");
        std::fs::write(&other, "127.0.0.1 other\n").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(recover_all(&records_dir, &path).is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "127.0.0.1 other\n");
        assert!(
            record.exists(),
            "the record must stay for its own namespace"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unusable_session_ids_are_refused() {
        let dir = temp_dir("hosts-id");
        let path = dir.join("hosts");
        for bad in ["", "a b", "a\nb", "x/y"] {
            let err = install(&path, bad, &entries(), &dir.join("records")).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
