//! Restore records: for every system DNS change, a small JSON file written (fsynced,
//! atomically renamed into place) *before* the change, naming what to undo, so that
//! [`crate::recover`] can undo it after a crash, `kill -9` or power loss.
//!
//! # Identity: which file a record is about
//!
//! A path does not name the same file everywhere: `ip netns exec X` bind-mounts
//! `/etc/netns/X/resolv.conf` over `/etc/resolv.conf` in a fresh mount namespace, so a
//! process in namespace `X` and one in the root namespace both write "/etc/resolv.conf"
//! and change different files, while their records share one record directory. A
//! record therefore carries an [`Identity`] and is only acted on where that identity
//! matches what the path names now ([`Identity::matches_here`]):
//!
//! - when the record knows the changed file's device and inode (a file edited in place,
//!   or the file kt created in place of a symlink or of nothing, recorded right after
//!   creating it), the path must name that very file now. This alone decides: the same
//!   inode is the same file whatever the namespaces, and it still matches after a
//!   reboot or in the next `ip netns exec X` (which gets a *new* mount namespace).
//! - otherwise (a crash between writing the record and creating the file) the parent
//!   directory's device and inode, the network namespace and the mount namespace must
//!   all be the ones of the process that wrote the record.
//!
//! Records that do not match are left alone (logged at debug level) for a process that
//! sees the same file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// A device and inode number.
pub(crate) type DevIno = (u64, u64);

/// What a record's path named when the record was written; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The changed file (symlinks followed, so a bind-mounted file is itself).
    pub(crate) file: Option<DevIno>,
    /// The directory holding the path.
    pub(crate) parent: Option<DevIno>,
    /// The network namespace (`/proc/self/ns/net`).
    pub(crate) net_ns: Option<DevIno>,
    /// The mount namespace (`/proc/self/ns/mnt`).
    pub(crate) mnt_ns: Option<DevIno>,
}

impl Identity {
    /// What `path` names here and now (`file` is `None` when it does not exist).
    pub(crate) fn of(path: &Path) -> Identity {
        Identity {
            file: dev_ino(path),
            parent: dev_ino(parent_of(path)),
            net_ns: dev_ino(Path::new("/proc/self/ns/net")),
            mnt_ns: dev_ino(Path::new("/proc/self/ns/mnt")),
        }
    }

    /// Whether a record with this identity is about the file that `path` names in this
    /// process (see the module docs).
    pub(crate) fn matches_here(&self, path: &Path) -> bool {
        let now = Identity::of(path);
        match self.file {
            Some(file) => now.file == Some(file),
            None => {
                self.parent.is_some()
                    && self.parent == now.parent
                    && self.net_ns == now.net_ns
                    && self.mnt_ns == now.mnt_ns
            }
        }
    }

    /// Whether the network namespace is the one of this process.
    pub(crate) fn same_net_ns(&self) -> bool {
        self.net_ns == dev_ino(Path::new("/proc/self/ns/net"))
    }

    pub(crate) fn to_json(&self) -> Value {
        let pair = |p: Option<DevIno>| p.map_or(Value::Null, |(d, i)| json!([d, i]));
        json!({
            "file": pair(self.file),
            "parent": pair(self.parent),
            "net_ns": pair(self.net_ns),
            "mnt_ns": pair(self.mnt_ns),
        })
    }

    /// `None` for a record without an identity (those are never acted on).
    pub(crate) fn from_json(value: &Value) -> Option<Identity> {
        let object = value.as_object()?;
        let pair = |key: &str| {
            let a = object.get(key)?.as_array()?;
            Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?))
        };
        Some(Identity {
            file: pair("file"),
            parent: pair("parent"),
            net_ns: pair("net_ns"),
            mnt_ns: pair("mnt_ns"),
        })
    }
}

/// The device and inode of what `path` names (symlinks followed).
pub(crate) fn dev_ino(path: &Path) -> Option<DevIno> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The fields every record has: `kind`, `pid`, `time`.
pub(crate) fn header(kind: &str) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("kind".into(), kind.into());
    map.insert("pid".into(), std::process::id().into());
    map.insert(
        "time".into(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .into(),
    );
    map
}

/// A fresh record path in `dir` (created if needed) for a record of `prefix`.
pub(crate) fn new_record_path(dir: &Path, prefix: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    Ok(dir.join(format!(
        "{prefix}-{}-{}.json",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Writes `value` to `record` atomically: a temporary file, fsynced, renamed over the
/// record, then the directory fsynced. A crash leaves the old record or the new one,
/// never half of one.
pub(crate) fn write_record(record: &Path, value: &Value) -> io::Result<()> {
    let dir = parent_of(record);
    let name = record
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record path"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        // Readable and writable by this user only, whatever the umask (see `trusted`).
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    {
        use std::io::Write as _;
        file.write_all(value.to_string().as_bytes())?;
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, record)?;
    sync_dir(dir);
    Ok(())
}

/// Removes a record (a missing one is fine).
pub(crate) fn remove_record(record: &Path) -> io::Result<()> {
    match std::fs::remove_file(record) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => {
            sync_dir(parent_of(record));
            Ok(())
        }
    }
}

/// Makes a rename or removal in `dir` durable (best effort: not every platform can
/// open a directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Truncates and writes `path` in place (same inode, so bind mounts and hard links keep
/// seeing it; a symlink is followed), then syncs it.
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A record left by a process that is no longer running.
#[derive(Debug)]
pub(crate) struct Stale {
    /// The record file.
    pub(crate) record: PathBuf,
    /// Its content.
    pub(crate) value: Value,
    /// The process that wrote it.
    pub(crate) pid: u32,
}

/// Whether a record file may be trusted: recovery runs as root and writes whatever a
/// record says wherever it says, so on Unix a record must be a regular file (not a
/// symlink) that no group or other user can write, and on Linux owned by this
/// process's user. The default record directory is writable by root only; a
/// `KT_STATE_DIR` elsewhere must be too.
fn trusted(record: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(meta) = std::fs::symlink_metadata(record) else {
            return false;
        };
        let owner_ok = if cfg!(target_os = "linux") {
            std::fs::metadata("/proc/self").is_ok_and(|me| me.uid() == meta.uid())
        } else {
            true
        };
        meta.file_type().is_file() && meta.mode() & 0o022 == 0 && owner_ok
    }
    #[cfg(not(unix))]
    {
        std::fs::symlink_metadata(record).is_ok_and(|m| m.file_type().is_file())
    }
}

/// The readable records in `dir` whose process is gone (a missing directory has none).
/// Unreadable records are skipped with a debug log line: a half-written one cannot
/// exist (see [`write_record`]), so they are not ours; so are records that could have
/// been written by another user (see [`trusted`]), with a warning.
pub(crate) fn stale_records(dir: &Path) -> io::Result<Vec<Stale>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for record in paths {
        if record.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        if !trusted(&record) {
            tracing::warn!(
                record = %record.display(),
                "ignoring a restore record that another user could have written"
            );
            continue;
        }
        let parsed = std::fs::read_to_string(&record)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok());
        let Some(value) = parsed else {
            tracing::debug!(record = %record.display(), "skipping an unreadable restore record");
            continue;
        };
        let Some(pid) = value["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        out.push(Stale { record, value, pid });
    }
    Ok(out)
}

/// Whether process `pid` exists (this process counts as alive).
pub(crate) fn pid_alive(pid: u32) -> bool {
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

/// Whether `path` (symlinks followed) is a mount point of this mount namespace, such
/// as the file `ip netns exec` bind-mounts over `/etc/resolv.conf`. Always false where
/// `/proc/self/mountinfo` does not exist.
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mount_points(&info).contains(&real)
}

/// The mount points listed in a `/proc/self/mountinfo` text (field 5, with the
/// kernel's octal escapes for space, tab, newline and backslash undone).
pub(crate) fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(unescape_octal(escaped)))
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for tests on temporary files.

    use std::path::{Path, PathBuf};

    /// A fresh directory under the system's temporary directory.
    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "kt-dns-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// The pid of a process that has exited.
    pub(crate) fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        pid
    }

    /// Rewrites `record` as if process `pid` had written it.
    pub(crate) fn set_pid(record: &Path, pid: u32) {
        edit(record, |v| v["pid"] = pid.into());
    }

    /// Changes a record in place.
    pub(crate) fn edit(record: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let mut value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(record).expect("read record"))
                .expect("parse record");
        f(&mut value);
        std::fs::write(record, value.to_string()).expect("write record");
    }

    /// The records in `dir`.
    pub(crate) fn records(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|e| e.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    610 600 0:5 /etc/netns/lab/resolv.conf /etc/resolv.conf rw - ext4 /dev/sda1 rw\n\
                    611 600 0:5 / /mnt/with\\040space rw - ext4 /dev/sda1 rw\n";
        assert_eq!(
            mount_points(info),
            [
                PathBuf::from("/proc"),
                PathBuf::from("/etc/resolv.conf"),
                PathBuf::from("/mnt/with space"),
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn records_others_could_have_written_are_ignored() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = testing::temp_dir("trust");
        let record = new_record_path(&dir, "x").unwrap();
        let mut value = Value::Object(header("test"));
        value["pid"] = testing::dead_pid().into();
        write_record(&record, &value).unwrap();
        assert_eq!(stale_records(&dir).unwrap().len(), 1);
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            stale_records(&dir).unwrap().is_empty(),
            "world-writable record used"
        );
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&record, &link).unwrap();
        let found = stale_records(&dir).unwrap();
        assert_eq!(found.len(), 1, "a symlinked record was used: {found:?}");
        assert_eq!(found[0].record, record);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn identity_follows_the_file_not_the_path() {
        let dir = testing::temp_dir("identity");
        let path = dir.join("f");
        std::fs::write(&path, "a").unwrap();
        let id = Identity::of(&path);
        assert!(id.file.is_some() && id.parent.is_some());
        assert!(id.matches_here(&path));
        assert_eq!(Identity::from_json(&id.to_json()), Some(id.clone()));
        // In-place rewrite: same file.
        write_durable(&path, b"b").unwrap();
        assert!(id.matches_here(&path));
        // Replaced by another file at the same path: not the same file any more.
        let other = dir.join("g");
        std::fs::write(&other, "c").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(!id.matches_here(&path));
        // Without a file identity, the parent and the namespaces decide.
        let parent_only = Identity { file: None, ..id };
        assert!(parent_only.matches_here(&path));
        let elsewhere = Identity {
            net_ns: Some((1, 1)),
            ..parent_only.clone()
        };
        assert!(!elsewhere.matches_here(&path));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
