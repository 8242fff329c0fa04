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
//!
//! # Trust: recovery runs as root
//!
//! Recovery writes what a record says, so a record must come from this user, and only
//! name a file kt changes:
//!
//! - the record directory ([`trusted_dir`]) must be owned by the effective user and
//!   writable by it alone, and every directory on the way to it (symlinks resolved
//!   one by one) owned by that user or root and not writable by group or others
//!   (sticky ones such as `/tmp` excepted: there others cannot rename or remove what
//!   is not theirs). Otherwise listing and writing records fail with an error saying
//!   what to fix. kt creates missing directories with mode 0700.
//! - a record is opened with `O_NOFOLLOW` (a symlink is refused by the kernel) and
//!   checked on the open descriptor (a regular file of this user that no group or
//!   other user can write), then read from that descriptor: there is no window
//!   between the check and the read.
//! - each kind of record names one file or directory of the
//!   [`SystemPaths`](super::install::SystemPaths) in use; a record naming anything else
//!   is left alone with a warning ([`names_allowed`]).

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

/// A fresh record path in `dir` for a record of `prefix`. `dir` is created (mode 0700)
/// if needed, and must pass [`trusted_dir`]; the path returned is in the directory that
/// `dir` resolves to.
///
/// # Errors
///
/// [`io::ErrorKind::PermissionDenied`] naming the directory that others could write
/// (see [`trusted_dir`]); I/O errors creating it.
pub(crate) fn new_record_path(dir: &Path, prefix: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match trusted_dir(dir)? {
        Some(resolved) => resolved,
        None => {
            create_private_dir(dir)?;
            trusted_dir(dir)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} vanished right after being created", dir.display()),
                )
            })?
        }
    };
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
        // Readable and writable by this user only, whatever the umask (see `read_record`).
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

/// Creates `dir` and any missing parent with mode 0700 (readable and writable by this
/// user only, whatever the umask).
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The effective user id: the owner that record files and their directory must have.
#[cfg(unix)]
fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// How many symlinks [`trusted_dir`] follows (the kernel's own limit).
#[cfg(unix)]
const MAX_SYMLINKS: usize = 40;

/// The record directory `dir` resolved (made absolute, every symlink followed), after
/// checking every directory on the way: the last one must be owned by the effective
/// user and not writable by its group or others; the ones above it owned by that user
/// or root and not writable by group or others unless sticky (as `/tmp`). A symlink on
/// the way is followed only from a directory that passed, so no one else can change
/// where it leads. `Ok(None)` when `dir` does not exist (what exists on the way passed).
///
/// # Errors
///
/// [`io::ErrorKind::PermissionDenied`] naming the first directory that fails and saying
/// what to do; I/O errors reading the directories.
#[cfg(unix)]
pub(crate) fn trusted_dir(dir: &Path) -> io::Result<Option<PathBuf>> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    let euid = euid();
    let absolute = if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir()?.join(dir)
    };
    let mut todo: VecDeque<OsString> = absolute
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut here = PathBuf::from("/");
    check_dir(&here, &std::fs::symlink_metadata(&here)?, euid, false)?;
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == "/" {
            here = PathBuf::from("/");
            continue;
        }
        if part == "." {
            continue;
        }
        if part == ".." {
            here.pop();
            continue;
        }
        let next = here.join(&part);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: too many levels of symbolic links", dir.display()),
                ));
            }
            let target = std::fs::read_link(&next)?;
            for c in target.components().rev() {
                todo.push_front(c.as_os_str().to_owned());
            }
            continue;
        }
        if !todo.is_empty() {
            // The record directory itself gets the stricter check below.
            check_dir(&next, &meta, euid, false)?;
        }
        here = next;
    }
    check_dir(&here, &std::fs::symlink_metadata(&here)?, euid, true)?;
    Ok(Some(here))
}

/// No owners or modes to check: `dir` as it is, if it exists.
#[cfg(not(unix))]
pub(crate) fn trusted_dir(dir: &Path) -> io::Result<Option<PathBuf>> {
    Ok(dir.is_dir().then(|| dir.to_owned()))
}

/// One directory of [`trusted_dir`]'s walk; `last` for the record directory itself.
#[cfg(unix)]
fn check_dir(path: &Path, meta: &std::fs::Metadata, euid: u32, last: bool) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let owner_ok = meta.uid() == euid || (!last && meta.uid() == 0);
    let others_write = meta.mode() & 0o022 != 0;
    let sticky = meta.mode() & 0o1000 != 0;
    let shown = path.display();
    let (problem, fix) = if !meta.is_dir() {
        ("is not a directory".to_owned(), format!("remove {shown}"))
    } else if !owner_ok {
        (
            format!("is owned by uid {}", meta.uid()),
            format!("`chown {euid} {shown}`"),
        )
    } else if others_write && last {
        (
            "is writable by its group or others".to_owned(),
            format!("`chmod 700 {shown}`"),
        )
    } else if others_write && !sticky {
        (
            "is writable by its group or others".to_owned(),
            format!("`chmod go-w {shown}`"),
        )
    } else {
        return Ok(());
    };
    let above = if euid == 0 {
        "root".to_owned()
    } else {
        format!("uid {euid} or root")
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{shown} {problem}. kt (uid {euid}) applies the restore records it finds in its \
             restore directory, so that directory must be owned by uid {euid} and writable \
             by it alone, and every directory above it owned by {above} and not writable by \
             group or others (sticky ones such as /tmp excepted): {fix}, or set {} to such \
             a directory",
            super::install::STATE_DIR_ENV,
        ),
    ))
}

/// A record file as read by [`read_record`].
enum ReadRecord {
    Value(Value),
    /// Not to be trusted, and why.
    Untrusted(String),
    Unreadable,
}

/// The most a record may hold (they are a few hundred bytes; resolv.conf is small).
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// Reads a record file. On Unix it is opened with `O_NOFOLLOW` (a symlink is refused)
/// and `O_NONBLOCK` (a FIFO cannot hang recovery), and checked on the open descriptor:
/// a regular file owned by the effective user that no group or other user can write.
/// The bytes come from that same descriptor, so the file checked is the file read.
fn read_record(record: &Path) -> ReadRecord {
    use std::io::Read as _;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK);
    }
    let file = match options.open(record) {
        Ok(file) => file,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return ReadRecord::Untrusted("a symlink".to_owned());
        }
        Err(_) => return ReadRecord::Unreadable,
    };
    let Ok(meta) = file.metadata() else {
        return ReadRecord::Unreadable;
    };
    if !meta.is_file() {
        return ReadRecord::Untrusted("not a regular file".to_owned());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if meta.uid() != euid() {
            return ReadRecord::Untrusted(format!("owned by uid {}", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return ReadRecord::Untrusted("writable by its group or others".to_owned());
        }
    }
    let mut text = String::new();
    match file.take(MAX_RECORD_BYTES).read_to_string(&mut text) {
        Ok(_) => serde_json::from_str(&text).map_or(ReadRecord::Unreadable, ReadRecord::Value),
        Err(_) => ReadRecord::Unreadable,
    }
}

/// The readable records in `dir` whose process is gone (a missing directory has none).
/// Unreadable records are skipped with a debug log line: a half-written one cannot
/// exist (see [`write_record`]), so they are not ours; so are records that could have
/// been written by another user (see [`read_record`]), with a warning.
///
/// # Errors
///
/// A directory others could write ([`trusted_dir`]); I/O errors listing it.
pub(crate) fn stale_records(dir: &Path) -> io::Result<Vec<Stale>> {
    let Some(dir) = trusted_dir(dir)? else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(&dir) {
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
        let value = match read_record(&record) {
            ReadRecord::Value(value) => value,
            ReadRecord::Untrusted(why) => {
                tracing::warn!(
                    record = %record.display(),
                    why,
                    "ignoring a restore record that another user could have written"
                );
                continue;
            }
            ReadRecord::Unreadable => {
                tracing::debug!(record = %record.display(), "skipping an unreadable restore record");
                continue;
            }
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

/// Whether the path a record names (`named`) is `allowed`, the file or directory that
/// kt changes with this kind of record in the [`SystemPaths`](super::install::SystemPaths)
/// in use. A record naming anything else (say `/etc/shadow`) is never applied: it is
/// left alone with a warning.
pub(crate) fn names_allowed(stale: &Stale, named: &Path, allowed: &Path) -> bool {
    if named == allowed {
        return true;
    }
    tracing::warn!(
        record = %stale.record.display(),
        named = %named.display(),
        allowed = %allowed.display(),
        "restore record names a file kt does not change here: left alone"
    );
    false
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
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// A record in `dir` left by a process that has exited.
    fn stale_record_in(dir: &Path) -> PathBuf {
        let record = new_record_path(dir, "x").unwrap();
        let mut value = Value::Object(header("test"));
        value["pid"] = testing::dead_pid().into();
        write_record(&record, &value).unwrap();
        record
    }

    #[cfg(unix)]
    #[test]
    fn the_record_directory_is_created_private() {
        let root = testing::temp_dir("private");
        let dir = root.join("a/b/restore");
        new_record_path(&dir, "x").unwrap();
        for d in [root.join("a"), root.join("a/b"), dir] {
            assert_eq!(mode_of(&d), 0o700, "{} mode", d.display());
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn records_in_a_directory_others_can_write_are_refused() {
        use std::os::unix::fs::MetadataExt as _;
        let root = testing::temp_dir("trust-dir");
        let state = root.join("state");
        let dir = state.join("restore");
        stale_record_in(&dir);
        assert_eq!(stale_records(&dir).unwrap().len(), 1);
        // The directory is writable by its group: someone else could have put a record
        // there (or swap one for a symlink).
        set_mode(&dir, 0o770);
        let err = stale_records(&dir).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("writable by its group or others") && shown.contains("chmod 700"),
            "{shown}"
        );
        assert!(
            new_record_path(&dir, "y").is_err(),
            "a record written there"
        );
        set_mode(&dir, 0o700);
        assert_eq!(stale_records(&dir).unwrap().len(), 1);
        // A directory above it that others can write (not sticky): they could replace
        // `restore` by a directory of their own.
        set_mode(&state, 0o777);
        assert!(stale_records(&dir).is_err(), "a parent others can write");
        // Sticky and world-writable, as /tmp: others cannot rename or remove what is ours.
        set_mode(&state, 0o1777);
        assert_eq!(stale_records(&dir).unwrap().len(), 1);
        set_mode(&state, 0o755);
        // Owned by another user (only root can give a directory away).
        if std::fs::metadata(&root).unwrap().uid() == 0 {
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            let err = stale_records(&dir).unwrap_err();
            assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_record_directory_reached_through_a_directory_others_can_write_is_refused() {
        let root = testing::temp_dir("trust-link");
        // The record directory is a symlink (in a directory of ours) to a directory in
        // a directory others can write.
        let theirs = root.join("theirs");
        stale_record_in(&theirs.join("restore"));
        let state = root.join("state");
        std::fs::create_dir(&state).unwrap();
        let dir = state.join("restore");
        std::os::unix::fs::symlink(theirs.join("restore"), &dir).unwrap();
        assert_eq!(stale_records(&dir).unwrap().len(), 1, "all ours: fine");
        set_mode(&theirs, 0o777);
        assert!(
            stale_records(&dir).is_err(),
            "records read from a directory others can replace"
        );
        std::fs::remove_dir_all(&root).unwrap();
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
