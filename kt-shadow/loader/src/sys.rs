//! The eight Linux system calls the loader makes, on x86_64, and the process's start-up
//! stack: the crate's only `unsafe` code.
//!
//! Every call goes through [`syscall`], one `syscall` instruction; the wrappers below
//! are safe because each passes only pointers it borrows for the call (a `&CStr` is
//! NUL-terminated, a slice is valid for its length) or the NULL-terminated arrays the
//! kernel put on the stack ([`Argv`], [`Envp`]).

use core::arch::asm;
use core::ffi::{CStr, c_char};

use crate::args::Args;

const SYS_READ: usize = 0;
const SYS_WRITE: usize = 1;
const SYS_CLOSE: usize = 3;
const SYS_EXECVE: usize = 59;
const SYS_FCHMOD: usize = 91;
const SYS_EXIT_GROUP: usize = 231;
const SYS_OPENAT: usize = 257;
const SYS_UNLINKAT: usize = 263;

/// `openat`'s "relative to the working directory".
const AT_FDCWD: isize = -100;

/// Open for reading.
pub(crate) const O_RDONLY: usize = 0;
/// Open for writing.
pub(crate) const O_WRONLY: usize = 0o1;
/// Create the file.
pub(crate) const O_CREAT: usize = 0o100;
/// With `O_CREAT`: fail if it exists.
pub(crate) const O_EXCL: usize = 0o200;
/// Close on `execve`.
pub(crate) const O_CLOEXEC: usize = 0o2_000_000;

/// `EINTR`: retried.
const EINTR: i32 = 4;
/// `ENOENT`.
pub(crate) const ENOENT: i32 = 2;

/// The standard error stream.
pub(crate) const STDERR: i32 = 2;

/// An error number (`errno`) from the kernel.
pub(crate) type Errno = i32;

/// Makes system call `number` with up to four arguments.
///
/// # Safety
///
/// The arguments must be what the system call expects; every pointer among them must
/// be valid for what the kernel does with it (read a NUL-terminated string, read or
/// write a buffer of the given length).
unsafe fn syscall(number: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 Linux system call ABI: number in rax, arguments in rdi, rsi,
    // rdx, r10; the kernel returns in rax and clobbers rcx and r11 only; it uses no user
    // stack. What the call reads or writes is the caller's contract (above).
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number as isize => ret,
            in("rdi") a1,
            in("rsi") a2,
            in("rdx") a3,
            in("r10") a4,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A system call's return value: a negative one in `-4095..0` is `-errno`.
fn result(ret: isize) -> Result<usize, Errno> {
    if (-4095..0).contains(&ret) {
        Err(-ret as Errno)
    } else {
        Ok(ret as usize)
    }
}

/// An open file descriptor, closed when dropped (errors ignored: see [`Fd::close`]).
#[derive(Debug)]
pub(crate) struct Fd(i32);

impl Fd {
    /// Opens `path` (relative to the working directory) with `flags`, creating it with
    /// `mode` if `flags` has `O_CREAT`.
    pub(crate) fn open(path: &CStr, flags: usize, mode: usize) -> Result<Fd, Errno> {
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let ret = unsafe {
            syscall(
                SYS_OPENAT,
                AT_FDCWD as usize,
                path.as_ptr() as usize,
                flags,
                mode,
            )
        };
        result(ret).map(|fd| Fd(fd as i32))
    }

    /// Reads into `buf`; `Ok(0)` at the end of the file.
    pub(crate) fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes during the call.
            let ret = unsafe {
                syscall(
                    SYS_READ,
                    self.0 as usize,
                    buf.as_mut_ptr() as usize,
                    buf.len(),
                    0,
                )
            };
            match result(ret) {
                Err(EINTR) => continue,
                other => return other,
            }
        }
    }

    /// Writes all of `bytes`.
    pub(crate) fn write_all(&self, mut bytes: &[u8]) -> Result<(), Errno> {
        write_all(self.0, &mut bytes)
    }

    /// Sets the file's mode (not subject to the umask, unlike `open`'s).
    pub(crate) fn chmod(&self, mode: usize) -> Result<(), Errno> {
        // SAFETY: no memory is passed.
        result(unsafe { syscall(SYS_FCHMOD, self.0 as usize, mode, 0, 0) }).map(drop)
    }

    /// Closes the descriptor and reports the error a write-back may have deferred.
    pub(crate) fn close(self) -> Result<(), Errno> {
        let fd = self.0;
        core::mem::forget(self);
        // SAFETY: no memory is passed; `fd` is ours and closed once (forgotten above).
        result(unsafe { syscall(SYS_CLOSE, fd as usize, 0, 0, 0) }).map(drop)
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: no memory is passed; `self.0` is ours and dropped once.
        unsafe { syscall(SYS_CLOSE, self.0 as usize, 0, 0, 0) };
    }
}

fn write_all(fd: i32, bytes: &mut &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of `bytes.len()` bytes during the call.
        let ret = unsafe {
            syscall(
                SYS_WRITE,
                fd as usize,
                bytes.as_ptr() as usize,
                bytes.len(),
                0,
            )
        };
        match result(ret) {
            Ok(0) => return Err(5), // EIO: a write that makes no progress
            Ok(written) => *bytes = &bytes[written..],
            Err(EINTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// Writes `bytes` to stderr, ignoring errors (there is nowhere else to report them).
pub(crate) fn write_stderr(bytes: &[u8]) {
    let mut bytes = bytes;
    let _ = write_all(STDERR, &mut bytes);
}

/// Removes `path` (a file, not a directory).
pub(crate) fn unlink(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let ret = unsafe {
        syscall(
            SYS_UNLINKAT,
            AT_FDCWD as usize,
            path.as_ptr() as usize,
            0,
            0,
        )
    };
    result(ret).map(drop)
}

/// Ends the process (every thread) with `code`.
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: no memory is passed, and exit_group does not return.
    unsafe {
        asm!(
            "syscall",
            in("rax") SYS_EXIT_GROUP,
            in("rdi") code as isize,
            options(noreturn, nostack),
        );
    }
}

/// The process's arguments, as the kernel laid them out on the initial stack: `count`
/// pointers to NUL-terminated strings, then a NULL pointer.
pub(crate) struct Argv {
    ptrs: &'static [*const c_char],
}

/// The process's environment, as the kernel laid it out: pointers to NUL-terminated
/// strings ending with a NULL pointer.
pub(crate) struct Envp(*const *const c_char);

impl Args for Argv {
    fn count(&self) -> usize {
        self.ptrs.len()
    }

    fn arg(&self, index: usize) -> &CStr {
        // SAFETY: `Argv` is made only by `from_stack`: each pointer is a NUL-terminated
        // string the kernel copied onto the stack, alive and unchanged for the whole
        // process (nothing writes to it).
        unsafe { CStr::from_ptr(self.ptrs[index]) }
    }
}

/// Reads `argc`, `argv` and `envp` from the stack pointer the process started with.
///
/// # Safety
///
/// `stack` must be the value `rsp` had at the process's entry point (`_start`), before
/// anything was pushed: the System V x86_64 ABI's initial process stack.
pub(crate) unsafe fn from_stack(stack: *const usize) -> (Argv, Envp) {
    // SAFETY: the initial process stack holds argc, then argc pointers to the
    // argument strings and a NULL, then the environment's pointers and a NULL (System V
    // ABI, AMD64 supplement, "Initial Stack and Register State"). All of it stays
    // untouched for the life of the process.
    unsafe {
        let argc = *stack;
        let argv = stack.add(1).cast::<*const c_char>();
        let envp = argv.add(argc + 1);
        (
            Argv {
                ptrs: core::slice::from_raw_parts(argv, argc),
            },
            Envp(envp),
        )
    }
}

/// Replaces the process with `path`, its arguments those of `argv` from `first` on (to
/// its end), its environment `envp`. Returns only on failure.
pub(crate) fn execve(path: &CStr, argv: &Argv, first: usize, envp: &Envp) -> Errno {
    let args = &argv.ptrs[first..];
    // SAFETY: `path` is NUL-terminated; `args` points into the kernel's argv array,
    // which continues past the slice's end with its NULL terminator, so it is a
    // NULL-terminated array of strings, as is `envp` (see `from_stack`).
    let ret = unsafe {
        syscall(
            SYS_EXECVE,
            path.as_ptr() as usize,
            args.as_ptr() as usize,
            envp.0 as usize,
            0,
        )
    };
    match result(ret) {
        Err(errno) => errno,
        Ok(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    /// The wrappers against the real kernel, in a test's own directory.
    #[test]
    fn files_are_created_written_read_and_removed() {
        let dir = std::env::temp_dir().join(format!("kt-loader-sys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = CString::new(dir.join("f").as_os_str().as_bytes()).expect("path");

        let fd = Fd::open(&path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600).expect("create");
        fd.write_all(b"hello loader").expect("write");
        fd.chmod(0o500).expect("chmod");
        fd.close().expect("close");
        assert_eq!(
            Fd::open(&path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600).map(drop),
            Err(17),
            "O_EXCL refuses an existing file (EEXIST)"
        );

        let fd = Fd::open(&path, O_RDONLY | O_CLOEXEC, 0).expect("open");
        let mut buf = [0; 5];
        assert_eq!(fd.read(&mut buf), Ok(5));
        assert_eq!(&buf, b"hello");
        let mut rest = [0; 64];
        assert_eq!(fd.read(&mut rest), Ok(7));
        assert_eq!(fd.read(&mut rest), Ok(0), "end of file");
        drop(fd);

        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("f"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o500);

        unlink(&path).expect("unlink");
        assert_eq!(unlink(&path), Err(ENOENT));
        assert_eq!(Fd::open(&path, O_RDONLY, 0).map(drop), Err(ENOENT));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
