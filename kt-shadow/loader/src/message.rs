//! What the loader says when it stops: one line on stderr, which Kubernetes keeps as the
//! container's termination message (the pod runs with `FallbackToLogsOnError`).
//!
//! Written into a fixed buffer (no allocator, no `core::fmt`: both would cost bytes).

use crate::hex::{self, Digest};

/// How the loader stopped before it could run the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure<'a> {
    /// The command line does not follow the contract; says what is missing.
    Usage(&'static str),
    /// The whole binary's hash (second argument) is not 64 lower-case hex digits.
    WholeHash(&'a [u8]),
    /// A part's file name is not `kt-part-` and 64 lower-case hex digits.
    PartName(&'a [u8]),
    /// A system call failed on `path`.
    Io {
        /// What the loader was doing, e.g. "open part".
        doing: &'static str,
        /// The file.
        path: &'a [u8],
        /// The error number the kernel returned.
        errno: i32,
    },
    /// The verified binary could not be executed.
    Exec {
        /// The binary.
        path: &'a [u8],
        /// The error number `execve` returned.
        errno: i32,
    },
}

/// Why the loader refused to run the binary: something does not match its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal<'a> {
    /// A part's bytes do not match the hash in its file name (its ConfigMap's name).
    Part {
        /// The part's path.
        path: &'a [u8],
        /// The hash its name says.
        expected: Digest,
        /// The hash of its bytes.
        actual: Digest,
    },
    /// Every part matches its name, but together they are not the binary the pod spec
    /// names.
    Whole {
        /// The hash the pod spec gives.
        expected: Digest,
        /// The hash of the joined parts.
        actual: Digest,
        /// How many parts were joined.
        parts: usize,
    },
}

/// The command line the loader expects.
pub(crate) const USAGE: &str =
    "usage: kt-loader <out> <sha256 of the whole> <part>... -- <argv0> [<arg>...]";

/// The start of every line the loader writes.
pub(crate) const PREFIX: &str = "kt-loader: ";

/// The start of the line of a [`Refusal`] (`kt_proto::agent::LOADER_REFUSED`).
pub(crate) const REFUSED: &str = "kt-loader: refused:";

impl Failure<'_> {
    /// Writes the one-line message.
    pub(crate) fn write(&self, line: &mut Line) {
        line.push_str(PREFIX);
        match *self {
            Failure::Usage(what) => {
                line.push_str(what);
                line.push_str("; ");
                line.push_str(USAGE);
            }
            Failure::WholeHash(text) => {
                line.push_str("the hash of the whole binary `");
                line.push_bytes(text);
                line.push_str("` is not 64 lower-case hex digits (a SHA-256); ");
                line.push_str(USAGE);
            }
            Failure::PartName(path) => {
                line.push_str("part `");
                line.push_bytes(path);
                line.push_str(
                    "`: its file name must be kt-part- and the SHA-256 of its bytes in 64 \
                     lower-case hex digits (the name of the ConfigMap kt uploaded it in)",
                );
            }
            Failure::Io { doing, path, errno } => {
                line.push_str("cannot ");
                line.push_str(doing);
                line.push_str(" `");
                line.push_bytes(path);
                line.push_str("`: ");
                line.push_errno(errno);
            }
            Failure::Exec { path, errno } => {
                line.push_str("cannot execute `");
                line.push_bytes(path);
                line.push_str("` (its parts and hash were verified): ");
                line.push_errno(errno);
            }
        }
    }
}

impl Refusal<'_> {
    /// Writes the one-line message, starting with [`REFUSED`].
    pub(crate) fn write(&self, line: &mut Line) {
        line.push_str(REFUSED);
        match *self {
            Refusal::Part {
                path,
                expected,
                actual,
            } => {
                line.push_str(" part ");
                line.push_bytes(file_name(path));
                line.push_str(" (");
                line.push_bytes(path);
                line.push_str(") expected sha256 ");
                line.push_digest(&expected);
                line.push_str(", actual sha256 ");
                line.push_digest(&actual);
                line.push_str(
                    ": the ConfigMap was changed after kt uploaded it; delete it (ktctl \
                     clean) so that kt uploads it again; nothing was run",
                );
            }
            Refusal::Whole {
                expected,
                actual,
                parts,
            } => {
                line.push_str(" the ");
                line.push_decimal(parts as u64);
                line.push_str(" parts match their ConfigMaps' names but join to sha256 ");
                line.push_digest(&actual);
                line.push_str(", the pod spec expects sha256 ");
                line.push_digest(&expected);
                line.push_str(
                    ": the pod's command names parts of another binary (was the pod \
                     changed after kt made it?); delete the pod (ktctl clean) so that kt \
                     makes it again; nothing was run",
                );
            }
        }
    }
}

/// The last component of `path`: a part's ConfigMap name.
pub(crate) fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => &path[slash + 1..],
        None => path,
    }
}

/// Room for a message: paths are short in the pod (`/kt/agent/kt-part-<64 hex>`), and
/// a longer one is cut, not wrapped.
const LINE_CAPACITY: usize = 2048;

/// One line of text in a fixed buffer; control characters become `?` so that it stays
/// one line, and text past the capacity is cut (marked with `...`).
pub(crate) struct Line {
    buf: [u8; LINE_CAPACITY],
    len: usize,
    cut: bool,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; LINE_CAPACITY],
            len: 0,
            cut: false,
        }
    }
}

impl Line {
    /// Appends text.
    pub(crate) fn push_str(&mut self, text: &str) {
        self.push_bytes(text.as_bytes());
    }

    /// Appends bytes (a path: not necessarily UTF-8), control characters as `?`.
    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) {
        // Keep room for "...\n".
        let room = LINE_CAPACITY - 4;
        for &b in bytes {
            if self.len == room {
                self.cut = true;
                return;
            }
            self.buf[self.len] = if b.is_ascii_control() { b'?' } else { b };
            self.len += 1;
        }
    }

    /// Appends `digest` in hex.
    pub(crate) fn push_digest(&mut self, digest: &Digest) {
        self.push_bytes(&hex::encode(digest));
    }

    /// Appends `n` in decimal.
    pub(crate) fn push_decimal(&mut self, mut n: u64) {
        let mut digits = [0; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push_bytes(&digits[start..]);
    }

    /// Appends an error number: its name, number and meaning, e.g.
    /// `ENOENT (errno 2: no such file or directory)`.
    pub(crate) fn push_errno(&mut self, errno: i32) {
        let known = errno_name(errno);
        if let Some((name, _)) = known {
            self.push_str(name);
            self.push_str(" (");
        }
        self.push_str("errno ");
        if errno < 0 {
            self.push_str("-");
        }
        self.push_decimal(u64::from(errno.unsigned_abs()));
        if let Some((_, meaning)) = known {
            self.push_str(": ");
            self.push_str(meaning);
            self.push_str(")");
        }
    }

    /// The line, with its newline.
    pub(crate) fn finish(&mut self) -> &[u8] {
        if self.cut {
            self.buf[self.len..self.len + 3].copy_from_slice(b"...");
            self.len += 3;
            self.cut = false;
        }
        self.buf[self.len] = b'\n';
        &self.buf[..=self.len]
    }
}

/// The name and meaning of the error numbers the loader's system calls can return.
pub(crate) fn errno_name(errno: i32) -> Option<(&'static str, &'static str)> {
    Some(match errno {
        1 => ("EPERM", "operation not permitted"),
        2 => ("ENOENT", "no such file or directory"),
        4 => ("EINTR", "interrupted system call"),
        5 => ("EIO", "input/output error"),
        7 => ("E2BIG", "argument list too long"),
        8 => ("ENOEXEC", "exec format error"),
        9 => ("EBADF", "bad file descriptor"),
        11 => ("EAGAIN", "resource temporarily unavailable"),
        12 => ("ENOMEM", "cannot allocate memory"),
        13 => ("EACCES", "permission denied"),
        14 => ("EFAULT", "bad address"),
        16 => ("EBUSY", "device or resource busy"),
        17 => ("EEXIST", "file exists"),
        18 => ("EXDEV", "invalid cross-device link"),
        20 => ("ENOTDIR", "not a directory"),
        21 => ("EISDIR", "is a directory"),
        22 => ("EINVAL", "invalid argument"),
        23 => ("ENFILE", "too many open files in system"),
        24 => ("EMFILE", "too many open files"),
        26 => ("ETXTBSY", "text file busy"),
        27 => ("EFBIG", "file too large"),
        28 => ("ENOSPC", "no space left on device"),
        30 => ("EROFS", "read-only file system"),
        36 => ("ENAMETOOLONG", "file name too long"),
        40 => ("ELOOP", "too many levels of symbolic links"),
        122 => ("EDQUOT", "disk quota exceeded"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::string::{String, ToString};

    use super::*;

    fn text(write: impl FnOnce(&mut Line)) -> String {
        let mut line = Line::default();
        write(&mut line);
        String::from_utf8(line.finish().to_vec()).expect("utf-8")
    }

    fn digest(byte: u8) -> Digest {
        [byte; 32]
    }

    #[test]
    fn a_changed_part_is_refused_naming_its_configmap_both_hashes_and_the_remedy() {
        let path =
            b"/kt/agent/kt-part-1111111111111111111111111111111111111111111111111111111111111111";
        let line = text(|l| {
            Refusal::Part {
                path,
                expected: digest(0x11),
                actual: digest(0x22),
            }
            .write(l)
        });
        assert!(
            line.starts_with("kt-loader: refused: part kt-part-1111"),
            "{line}"
        );
        assert!(line.contains(&"11".repeat(32)), "{line}");
        assert!(line.contains(&"22".repeat(32)), "{line}");
        assert!(
            line.contains(
                "the ConfigMap was changed after kt uploaded it; delete it (ktctl clean) so \
                 that kt uploads it again"
            ),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn a_whole_mismatch_is_refused_with_both_hashes() {
        let line = text(|l| {
            Refusal::Whole {
                expected: digest(0xab),
                actual: digest(0xcd),
                parts: 3,
            }
            .write(l)
        });
        assert!(
            line.starts_with("kt-loader: refused: the 3 parts"),
            "{line}"
        );
        assert!(line.contains(&"ab".repeat(32)), "{line}");
        assert!(line.contains(&"cd".repeat(32)), "{line}");
        assert!(line.contains("ktctl clean"), "{line}");
    }

    #[test]
    fn io_errors_name_the_errno_and_the_file() {
        let line = text(|l| {
            Failure::Io {
                doing: "open part",
                path: b"/kt/agent/kt-part-x",
                errno: 2,
            }
            .write(l)
        });
        assert_eq!(
            line,
            "kt-loader: cannot open part `/kt/agent/kt-part-x`: ENOENT (errno 2: no such \
             file or directory)\n"
        );
        let unknown = text(|l| l.push_errno(4000));
        assert_eq!(unknown, "errno 4000\n");
    }

    #[test]
    fn usage_errors_say_what_is_missing_and_show_the_usage() {
        let line = text(|l| Failure::Usage("no `--` before the command").write(l));
        assert!(line.starts_with("kt-loader: no `--` before the command; usage: kt-loader <out>"));
    }

    #[test]
    fn control_characters_cannot_break_the_line() {
        let line =
            text(|l| Failure::PartName(b"/kt/agent/evil\nkt-loader: refused: fake\r").write(l));
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.contains("evil?kt-loader: refused: fake?"), "{line}");
    }

    #[test]
    fn a_long_line_is_cut_and_marked() {
        let long = [b'a'; 3 * LINE_CAPACITY];
        let line = text(|l| Failure::PartName(&long).write(l));
        assert_eq!(line.len(), LINE_CAPACITY);
        assert!(line.ends_with("...\n"), "{line}");
    }

    #[test]
    fn decimals_are_written_in_full() {
        for n in [0, 7, 10, 86, 4096, u64::MAX] {
            assert_eq!(text(|l| l.push_decimal(n)), n.to_string() + "\n");
        }
    }

    #[test]
    fn file_name_is_the_last_component() {
        assert_eq!(file_name(b"/kt/agent/kt-part-ab"), b"kt-part-ab");
        assert_eq!(file_name(b"kt-part-ab"), b"kt-part-ab");
        assert_eq!(file_name(b"/kt/agent/"), b"");
    }
}
