//! Installing the local DNS server as the system resolver through a resolv.conf file,
//! with a restore record on disk so that a crashed process is cleaned up at the next
//! start ([`ResolvConf::recover`]).
//!
//! The file is a parameter: `/etc/resolv.conf`, `/etc/netns/<ns>/resolv.conf` (what
//! `ip netns exec` bind-mounts) or a temporary file in tests. Regular files are
//! rewritten in place (same inode, so bind mounts keep seeing it); a symlink (e.g.
//! systemd-resolved's stub) is replaced by a regular file and put back as a symlink.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// What `kind` a restore record of this module has.
const KIND: &str = "resolv.conf";

/// resolv.conf installer; see [`ResolvConf::install`] and [`ResolvConf::recover`].
#[derive(Debug)]
pub struct ResolvConf;

/// The original state of a resolv.conf file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Original {
    /// A regular file with these bytes.
    File(String),
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
    /// original content, this process's pid and the time) is written to `record_dir`
    /// before the file is changed.
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
            Original::File(text) => text.clone(),
            Original::Symlink(_) => std::fs::read_to_string(path).unwrap_or_default(),
            Original::Missing => String::new(),
        };
        std::fs::create_dir_all(record_dir)?;
        let record = record_dir.join(record_name());
        let value = json!({
            "kind": KIND,
            "path": path.to_string_lossy(),
            "original": match &original { Original::File(t) => Value::from(t.as_str()), _ => Value::Null },
            "symlink": match &original { Original::Symlink(t) => Value::from(t.to_string_lossy()), _ => Value::Null },
            "pid": std::process::id(),
            "time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        });
        write_durable(&record, value.to_string().as_bytes())?;
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
        write_durable(path, new.as_bytes())?;
        Ok(guard)
    }

    /// Restores every file recorded in `record_dir` by a process that is no longer
    /// running (a crash or `kill -9`), and removes those records. Returns the restored
    /// paths. Call it at start, before [`ResolvConf::install`].
    ///
    /// # Errors
    ///
    /// I/O errors listing `record_dir` or restoring a file (a missing directory is
    /// not an error). Unreadable records are skipped.
    pub fn recover(record_dir: &Path) -> io::Result<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(record_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut restored = Vec::new();
        for entry in entries.flatten() {
            let record = entry.path();
            if record.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&record) else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if value["kind"] != KIND {
                continue;
            }
            let Some(pid) = value["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) else {
                continue;
            };
            if pid_alive(pid) {
                continue;
            }
            let Some(path) = value["path"].as_str().map(PathBuf::from) else {
                continue;
            };
            let original = match (value["original"].as_str(), value["symlink"].as_str()) {
                (Some(text), _) => Original::File(text.to_owned()),
                (None, Some(target)) => Original::Symlink(PathBuf::from(target)),
                (None, None) => Original::Missing,
            };
            put_back(&path, &original)?;
            std::fs::remove_file(&record)?;
            tracing::info!(path = %path.display(), pid, "restored resolv.conf left by a crashed kt");
            restored.push(path);
        }
        Ok(restored)
    }
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
    ///
    /// # Errors
    ///
    /// I/O errors; the record is then kept so that [`ResolvConf::recover`] can retry.
    pub fn restore(mut self) -> io::Result<()> {
        self.restore_inner()
    }

    fn restore_inner(&mut self) -> io::Result<()> {
        if self.restored {
            return Ok(());
        }
        put_back(&self.path, &self.original)?;
        self.restored = true;
        match std::fs::remove_file(&self.record) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
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
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Original::Missing),
        Err(e) => Err(e),
        Ok(meta) if meta.file_type().is_symlink() => {
            Ok(Original::Symlink(std::fs::read_link(path)?))
        }
        Ok(_) => {
            let bytes = std::fs::read(path)?;
            String::from_utf8(bytes)
                .map(Original::File)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "resolv.conf is not UTF-8"))
        }
    }
}

fn put_back(path: &Path, original: &Original) -> io::Result<()> {
    match original {
        Original::File(text) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                std::fs::remove_file(path)?;
            }
            write_durable(path, text.as_bytes())
        }
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

/// Truncates and writes `path` in place, then syncs it.
fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn record_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "resolv-conf-{}-{}.json",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether process `pid` exists (this process counts as alive).
fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        Path::new(&format!("/proc/{pid}")).exists()
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
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
