//! The loader itself: assemble, verify, execute.

use core::ffi::CStr;

use sha2::{Digest as _, Sha256};

use crate::args::{self, Args, OUT, Plan};
use crate::hex::Digest;
use crate::message::{Failure, Line, Refusal};
use crate::sys::{self, Argv, ENOENT, Envp, Fd, O_CLOEXEC, O_CREAT, O_EXCL, O_RDONLY, O_WRONLY};
use crate::{BUFFER_SIZE, FAILED_EXIT, OUT_MODE, REFUSED_EXIT};

/// Why the loader stopped.
#[derive(Debug)]
enum Stop<'a> {
    Failed(Failure<'a>),
    Refused(Refusal<'a>),
}

impl<'a> From<Failure<'a>> for Stop<'a> {
    fn from(failure: Failure<'a>) -> Self {
        Stop::Failed(failure)
    }
}

/// The program's entry: called by `_start` (kt-shadow/loader/program) with the stack
/// pointer the process started with. Never returns: it executes the verified binary or
/// exits with [`REFUSED_EXIT`] or [`FAILED_EXIT`].
///
/// # Safety
///
/// `stack` must be `rsp` as the kernel set it at the process's entry point: pointing at
/// `argc`, then the arguments' and the environment's NULL-terminated pointer arrays
/// (System V x86_64 ABI, initial process stack).
pub unsafe extern "C" fn start(stack: *const usize) -> ! {
    // SAFETY: the caller's contract.
    let (argv, envp) = unsafe { sys::from_stack(stack) };
    sys::exit(main(&argv, &envp))
}

/// The panic handler's work (a bug: no input should panic): say so and exit with
/// [`FAILED_EXIT`].
pub fn panicked() -> ! {
    sys::write_stderr(b"kt-loader: internal error (a panic); nothing was run\n");
    sys::exit(FAILED_EXIT)
}

fn main(argv: &Argv, envp: &Envp) -> i32 {
    let mut line = Line::default();
    let code = match load(argv) {
        Ok(plan) => {
            let out = argv.arg(OUT);
            let errno = sys::execve(out, argv, plan.command, envp);
            let _ = sys::unlink(out);
            Failure::Exec {
                path: out.to_bytes(),
                errno,
            }
            .write(&mut line);
            FAILED_EXIT
        }
        Err(Stop::Failed(failure)) => {
            failure.write(&mut line);
            FAILED_EXIT
        }
        Err(Stop::Refused(refusal)) => {
            refusal.write(&mut line);
            REFUSED_EXIT
        }
    };
    sys::write_stderr(line.finish());
    code
}

/// Parses the command line and assembles the binary at `<out>`; `Ok` only if every part
/// and the whole match their hashes. On any error `<out>` does not exist afterwards.
fn load<A: Args + ?Sized>(args: &A) -> Result<Plan, Stop<'_>> {
    let plan = args::parse(args)?;
    let out = args.arg(OUT);
    // A container restarted in the same pod finds the last binary in the emptyDir:
    // never reuse it, and never write through it (it is read-only anyway).
    match sys::unlink(out) {
        Ok(()) | Err(ENOENT) => {}
        Err(errno) => return Err(io("remove the previous", out, errno)),
    }
    let fd = Fd::open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, OUT_MODE)
        .map_err(|errno| io("create", out, errno))?;
    if let Err(stop) = write_out(args, &plan, fd) {
        let _ = sys::unlink(out);
        return Err(stop);
    }
    Ok(plan)
}

/// Fills `fd` (the new `<out>`) from the parts, sets its mode and closes it.
fn write_out<'a, A: Args + ?Sized>(args: &'a A, plan: &Plan, fd: Fd) -> Result<(), Stop<'a>> {
    let out = args.arg(OUT);
    assemble(args, plan, &fd)?;
    // The umask may have taken bits from the mode `open` asked for.
    fd.chmod(OUT_MODE)
        .map_err(|errno| io("set the mode of", out, errno))?;
    fd.close().map_err(|errno| io("write", out, errno))
}

/// Streams the parts into `out`, checking each against its name and all of them
/// against the plan's whole hash.
fn assemble<'a, A: Args + ?Sized>(args: &'a A, plan: &Plan, out: &Fd) -> Result<(), Stop<'a>> {
    let out_path = args.arg(OUT);
    let mut buf = [0u8; BUFFER_SIZE];
    let mut whole = Sha256::new();
    for index in plan.parts.clone() {
        let path = args.arg(index);
        let expected = args::part_digest(path.to_bytes())?;
        let part = Fd::open(path, O_RDONLY | O_CLOEXEC, 0)
            .map_err(|errno| io("open part", path, errno))?;
        let mut hash = Sha256::new();
        loop {
            let n = part
                .read(&mut buf)
                .map_err(|errno| io("read part", path, errno))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            whole.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|errno| io("write", out_path, errno))?;
        }
        let actual = digest(hash);
        if actual != expected {
            return Err(Stop::Refused(Refusal::Part {
                path: path.to_bytes(),
                expected,
                actual,
            }));
        }
    }
    let actual = digest(whole);
    if actual != plan.whole {
        return Err(Stop::Refused(Refusal::Whole {
            expected: plan.whole,
            actual,
            parts: plan.parts.len(),
        }));
    }
    Ok(())
}

fn digest(hash: Sha256) -> Digest {
    hash.finalize().into()
}

fn io<'a>(doing: &'static str, path: &'a CStr, errno: sys::Errno) -> Stop<'a> {
    Stop::Failed(Failure::Io {
        doing,
        path: path.to_bytes(),
        errno,
    })
}
