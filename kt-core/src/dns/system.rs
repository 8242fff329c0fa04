//! Installing the local DNS server as the system resolver through a resolv.conf file,
//! with a restore record on disk so that a crashed process is cleaned up at the next
//! start ([`ResolvConf::recover`]).
//!
//! The file is a parameter: `/etc/resolv.conf`, `/etc/netns/<ns>/resolv.conf` (what
//! `ip netns exec` bind-mounts) or a temporary file in tests. Regular files are
//! rewritten in place (same inode, so bind mounts keep seeing it); a symlink (e.g.
//! systemd-resolved's stub) is replaced by a regular file and put back as a symlink,
//! unless a namespace's own file is bind-mounted over its target (then the file is
//! written through the symlink). Records carry the identity of the changed file, so
//! recovery never restores a file another namespace changed (see `dns::record`).

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::record::{self, Identity, Stale};

/// What `kind` a restore record of this module has.
pub(crate) const KIND: &str = "resolv.conf";

/// resolv.conf installer; see [`ResolvConf::install`] and [`ResolvConf::recover`].
#[derive(Debug)]
pub struct ResolvConf;

/// The original state of a resolv.conf file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Original {
    /// A regular file with these bytes.
    File(String),
    /// A symlink whose target is a mount point (what `ip netns exec` makes of a
    /// symlinked `/etc/resolv.conf`: the namespace's own file is bind-mounted over the
    /// target), with this content. It is written and restored *through* the symlink: the
    /// symlink itself is shared with every other namespace and stays untouched.
    Mounted(String),
    /// A symlink to this target.
    Symlink(PathBuf),
    /// No file.
    Missing,
}

/// An installed resolv.conf; [`ResolvConfGuard::restore`] or drop puts the original
/// back and removes the restore record.
#[derive(Debug)]
pub struct ResolvConfGuard {
    path: PathBuf,
    original: Original,
    record: PathBuf,
    restored: bool,
}

impl ResolvConf {
    /// The first `nameserver` of a resolv.conf text: the upstream to forward to.
    pub fn upstream(content: &str) -> Option<IpAddr> {
        content.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next()?.split('%').next()?.parse().ok())
                .flatten()
        })
    }

    /// The resolv.conf text that puts `nameserver` first and `search` before the
    /// original search domains, keeping the original options, comments and other lines.
    /// The original nameservers follow ours (at most three in all, the resolver limit).
    pub fn render(original: &str, nameserver: IpAddr, search: &[String]) -> String {
        let mut servers = vec![nameserver];
        let mut domains: Vec<String> = search.to_vec();
        let mut rest = Vec::new();
        for line in original.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words
                        .next()
                        .and_then(|w| w.split('%').next())
                        .and_then(|w| w.parse::<IpAddr>().ok())
                        && !servers.contains(&ip)
                    {
                        servers.push(ip);
                    }
                }
                Some("search" | "domain") => {
                    for d in words {
                        if !domains.iter().any(|x| x == d) {
                            domains.push(d.to_owned());
                        }
                    }
                }
                _ => rest.push(line),
            }
        }
        servers.truncate(3);
        let mut out = String::from("# written by kt (system DNS); restored when kt exits\n");
        for s in servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !domains.is_empty() {
            out.push_str(&format!("search {}\n", domains.join(" ")));
        }
        for line in rest {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Installs a resolv.conf at `path` with `nameserver` first and `search` prepended
    /// (see [`ResolvConf::render`]). The restore record (JSON with the path, the
    /// original content, the identity of the file — device and inode, network and mount
    /// namespace —, this process's pid and the time) is written to `record_dir` before
    /// the file is changed.
    ///
    /// A regular file is rewritten in place; a symlink is replaced by a regular file
    /// (and put back on restore), except a symlink whose target is a mount point (a
    /// namespace's own file bind-mounted by `ip netns exec`): that file is written
    /// through the symlink, which other namespaces share.
    ///
    /// # Errors
    ///
    /// I/O errors reading or writing the file or the record; a file that is not UTF-8.
    pub fn install(
        path: &Path,
        nameserver: IpAddr,
        search: &[String],
        record_dir: &Path,
    ) -> io::Result<ResolvConfGuard> {
        let original = read_original(path)?;
        let content = match &original {
            Original::File(text) | Original::Mounted(text) => text.clone(),
            Original::Symlink(_) => std::fs::read_to_string(path).unwrap_or_default(),
            Original::Missing => String::new(),
        };
        let mut identity = Identity::of(path);
        let replaced = matches!(original, Original::Symlink(_) | Original::Missing);
        if replaced {
            // The file the record is about does not exist yet.
            identity.file = None;
        }
        let record = record::new_record_path(record_dir, "resolv-conf")?;
        let mut value = record_value(path, &original, &identity);
        record::write_record(&record, &value)?;
        let new = ResolvConf::render(&content, nameserver, search);
        let guard = ResolvConfGuard {
            path: path.to_owned(),
            original,
            record,
            restored: false,
        };
        if matches!(guard.original, Original::Symlink(_)) {
            std::fs::remove_file(path)?;
        }
        // In place: keeps the inode (bind mounts) and the mode.
        record::write_durable(path, new.as_bytes())?;
        if replaced {
            identity.file = record::dev_ino(path);
            value["identity"] = identity.to_json();
            record::write_record(&guard.record, &value)?;
        }
        Ok(guard)
    }

    /// Restores the resolv.conf at `path` from the records in `record_dir` left by a
    /// process that is no longer running (a crash or `kill -9`), and removes those
    /// records. Returns the restored paths. Call it at start, before
    /// [`ResolvConf::install`]. A record about a file that this process does not see at
    /// the recorded path (another network or mount namespace, or a file replaced since)
    /// is left for a process that does; so is a record naming another path than `path`
    /// (with a warning): recovery only ever writes `path`.
    ///
    /// [`crate::recover_system_dns`] does this for every kind of system DNS change.
    ///
    /// # Errors
    ///
    /// I/O errors listing `record_dir` or restoring a file (a missing directory is
    /// not an error); [`io::ErrorKind::PermissionDenied`] when `record_dir`, or a
    /// directory above it, is not owned by this user or root or is writable by others
    /// (the message says what to fix). Unreadable records, and records another user
    /// could have written, are skipped.
    pub fn recover(path: &Path, record_dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut restored = Vec::new();
        for stale in record::stale_records(record_dir)? {
            if stale.value["kind"] == KIND
                && let Some(path) = recover_record(&stale, path)?
            {
                restored.push(path);
            }
        }
        Ok(restored)
    }
}

fn record_value(path: &Path, original: &Original, identity: &Identity) -> Value {
    let mut map = record::header(KIND);
    map.insert("path".into(), path.to_string_lossy().into());
    let (text, symlink, through) = match original {
        Original::File(t) => (Value::from(t.as_str()), Value::Null, false),
        Original::Mounted(t) => (Value::from(t.as_str()), Value::Null, true),
        Original::Symlink(t) => (Value::Null, Value::from(t.to_string_lossy()), false),
        Original::Missing => (Value::Null, Value::Null, false),
    };
    map.insert("original".into(), text);
    map.insert("symlink".into(), symlink);
    map.insert("through_symlink".into(), through.into());
    map.insert("identity".into(), identity.to_json());
    Value::Object(map)
}

/// Restores the file of one stale record if it names `allowed` (the resolv.conf kt
/// changes) and this process sees that file; returns its path when it did.
pub(crate) fn recover_record(stale: &Stale, allowed: &Path) -> io::Result<Option<PathBuf>> {
    let value = &stale.value;
    let Some(path) = value["path"].as_str().map(PathBuf::from) else {
        return Ok(None);
    };
    if !record::names_allowed(stale, &path, allowed) {
        return Ok(None);
    }
    let Some(identity) = Identity::from_json(&value["identity"]) else {
        tracing::debug!(record = %stale.record.display(), "restore record without a file identity: left alone");
        return Ok(None);
    };
    if !identity.matches_here(&path) {
        tracing::debug!(
            record = %stale.record.display(),
            path = %path.display(),
            "restore record is about another file than this process sees there \
             (another namespace, or replaced since): left alone"
        );
        return Ok(None);
    }
    let original = match (value["original"].as_str(), value["symlink"].as_str()) {
        (Some(text), _) if value["through_symlink"] == true => Original::Mounted(text.to_owned()),
        (Some(text), _) => Original::File(text.to_owned()),
        (None, Some(target)) => Original::Symlink(PathBuf::from(target)),
        (None, None) => Original::Missing,
    };
    put_back(&path, &original)?;
    record::remove_record(&stale.record)?;
    tracing::info!(path = %path.display(), pid = stale.pid, "restored resolv.conf left by a crashed kt");
    Ok(Some(path))
}

impl ResolvConfGuard {
    /// The installed file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The restore record.
    pub fn record(&self) -> &Path {
        &self.record
    }

    /// Puts the original file back byte for byte and removes the restore record.
    /// Calling it again (or dropping the guard afterwards) does nothing.
    ///
    /// # Errors
    ///
    /// I/O errors; the record is then kept so that [`ResolvConf::recover`] can retry.
    pub fn restore(mut self) -> io::Result<()> {
        self.restore_inner()
    }

    pub(crate) fn restore_inner(&mut self) -> io::Result<()> {
        if self.restored {
            return Ok(());
        }
        put_back(&self.path, &self.original)?;
        self.restored = true;
        record::remove_record(&self.record)
    }
}

impl Drop for ResolvConfGuard {
    fn drop(&mut self) {
        if let Err(e) = self.restore_inner() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot restore resolv.conf");
        }
    }
}

fn read_original(path: &Path) -> io::Result<Original> {
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "resolv.conf is not UTF-8"))
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Original::Missing),
        Err(e) => Err(e),
        Ok(meta) if meta.file_type().is_symlink() => {
            if record::is_mount_point(path) {
                Ok(Original::Mounted(text(std::fs::read(path)?)?))
            } else {
                Ok(Original::Symlink(std::fs::read_link(path)?))
            }
        }
        Ok(_) => Ok(Original::File(text(std::fs::read(path)?)?)),
    }
}

fn put_back(path: &Path, original: &Original) -> io::Result<()> {
    match original {
        Original::File(text) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                std::fs::remove_file(path)?;
            }
            record::write_durable(path, text.as_bytes())
        }
        Original::Mounted(text) => record::write_durable(path, text.as_bytes()),
        Original::Symlink(target) => {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            symlink(target, path)
        }
        Original::Missing => match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

#[cfg(unix)]
fn symlink(target: &Path, path: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, path)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _path: &Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "symlinks"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_puts_ours_first_and_keeps_options() {
        let original =
            "# generated\nnameserver 10.0.0.2\nsearch corp.example\noptions edns0 timeout:2\n";
        let out = ResolvConf::render(
            original,
            "127.0.0.53".parse().unwrap(),
            &[
                "dev.svc.cluster.local".to_owned(),
                "svc.cluster.local".to_owned(),
            ],
        );
        assert!(out.contains("nameserver 127.0.0.53\nnameserver 10.0.0.2\n"));
        assert!(out.contains("search dev.svc.cluster.local svc.cluster.local corp.example\n"));
        assert!(out.contains("options edns0 timeout:2\n"));
        assert!(out.contains("# generated\n"));
        assert_eq!(
            ResolvConf::upstream(original),
            Some("10.0.0.2".parse().unwrap())
        );
    }
}
