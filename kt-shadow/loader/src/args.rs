//! The loader's command line (`kt_proto::agent::loader_args`):
//!
//! ```text
//! kt-loader <out> <sha256 of the whole> <part>... -- <argv0> [<arg>...]
//! ```

use core::ffi::CStr;
use core::ops::Range;

use crate::hex::{self, Digest};
use crate::message::{Failure, file_name};

/// The start of a part's file name (its ConfigMap's name), before its SHA-256.
pub(crate) const PART_PREFIX: &[u8] = b"kt-part-";

/// The argument between the loader's own arguments and the command it runs.
pub(crate) const SEPARATOR: &[u8] = b"--";

/// The index of `<out>` in the command line.
pub(crate) const OUT: usize = 1;

/// The index of `<sha256 of the whole>` in the command line.
pub(crate) const WHOLE: usize = 2;

/// A command line, the program's own name (`argv[0]`) first.
pub(crate) trait Args {
    /// How many arguments there are, `argv[0]` included.
    fn count(&self) -> usize;

    /// Argument `index` (below [`Args::count`]).
    fn arg(&self, index: usize) -> &CStr;
}

impl Args for [&CStr] {
    fn count(&self) -> usize {
        self.len()
    }

    fn arg(&self, index: usize) -> &CStr {
        self[index]
    }
}

/// What a valid command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The SHA-256 the joined parts must have.
    pub(crate) whole: Digest,
    /// The indices of the parts, in order.
    pub(crate) parts: Range<usize>,
    /// The index of the command's `argv0`; the command runs to the end of the line.
    pub(crate) command: usize,
}

/// Checks the command line: `<out>`, a 64-hex-digit hash, at least one part whose file
/// name is `kt-part-<sha256>`, `--`, and a command. Nothing is opened.
pub(crate) fn parse<A: Args + ?Sized>(args: &A) -> Result<Plan, Failure<'_>> {
    let count = args.count();
    let separator = (1..count)
        .find(|&i| args.arg(i).to_bytes() == SEPARATOR)
        .ok_or(Failure::Usage(
            "no `--` between the loader's arguments and the command to run",
        ))?;
    match separator {
        OUT => {
            return Err(Failure::Usage(
                "no <out> (the file to assemble the binary in)",
            ));
        }
        WHOLE => return Err(Failure::Usage("no <sha256 of the whole> binary")),
        3 => return Err(Failure::Usage("no part")),
        _ => {}
    }
    if separator + 1 == count {
        return Err(Failure::Usage("no command after `--`"));
    }
    if args.arg(OUT).is_empty() {
        return Err(Failure::Usage("<out> is empty"));
    }
    let whole = args.arg(WHOLE).to_bytes();
    let whole = hex::decode(whole).ok_or(Failure::WholeHash(whole))?;
    let parts = WHOLE + 1..separator;
    for i in parts.clone() {
        part_digest(args.arg(i).to_bytes())?;
    }
    Ok(Plan {
        whole,
        parts,
        command: separator + 1,
    })
}

/// The SHA-256 a part's file name (`kt-part-<64 hex digits>`) says its bytes have.
pub(crate) fn part_digest(path: &[u8]) -> Result<Digest, Failure<'_>> {
    file_name(path)
        .strip_prefix(PART_PREFIX)
        .and_then(hex::decode)
        .ok_or(Failure::PartName(path))
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::string::String;
    use std::vec::Vec;

    use kt_proto::agent;

    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const WHOLE_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// `kt-loader` and `line`, as the kernel would pass them.
    fn with_args<R>(line: &[&str], check: impl FnOnce(&[&CStr]) -> R) -> R {
        let owned: Vec<CString> = core::iter::once("kt-loader")
            .chain(line.iter().copied())
            .map(|a| CString::new(a).expect("no NUL"))
            .collect();
        let args: Vec<&CStr> = owned.iter().map(CString::as_c_str).collect();
        check(&args)
    }

    fn usage(line: &[&str]) -> String {
        with_args(line, |args| match parse(args) {
            Err(Failure::Usage(what)) => what.into(),
            other => panic!("{line:?}: expected a usage error, got {other:?}"),
        })
    }

    #[test]
    fn the_contracts_command_line_parses() {
        let part_a = agent::part_name(A);
        let part_b = agent::part_name(B);
        let paths = [
            format!("{}/{part_a}", agent::AGENT_DIR),
            format!("{}/{part_b}", agent::AGENT_DIR),
        ];
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let line = agent::loader_args(
            WHOLE_HEX,
            &paths,
            &["kt-shadow".into(), "serve".into(), "--".into()],
        );
        let line: Vec<&str> = line.iter().map(String::as_str).collect();
        with_args(&line, |args| {
            let plan = parse(args).expect("valid");
            assert_eq!(args[OUT].to_bytes(), agent::ASSEMBLED_PATH.as_bytes());
            assert_eq!(plan.whole, hex::decode(WHOLE_HEX.as_bytes()).expect("hex"));
            assert_eq!(plan.parts, 3..5);
            assert_eq!(
                part_digest(args[3].to_bytes()),
                Ok(hex::decode(A.as_bytes()).expect("hex"))
            );
            // The command starts after the first `--`; a later `--` is the command's.
            assert_eq!(plan.command, 6);
            assert_eq!(args[plan.command].to_bytes(), b"kt-shadow");
            assert_eq!(args.len(), 9);
        });
    }

    #[test]
    fn a_part_may_be_a_relative_path_or_a_bare_name() {
        let bare = format!("kt-part-{A}");
        let relative = format!("agent/kt-part-{B}");
        with_args(&["out", WHOLE_HEX, &bare, &relative, "--", "x"], |args| {
            assert_eq!(parse(args).expect("valid").parts, 3..5);
        });
    }

    #[test]
    fn missing_pieces_are_named() {
        let part = format!("/kt/agent/kt-part-{A}");
        assert!(usage(&[]).starts_with("no `--`"));
        assert!(usage(&["out", WHOLE_HEX, &part, "x"]).starts_with("no `--`"));
        assert!(usage(&["--", "x"]).starts_with("no <out>"));
        assert!(usage(&["out", "--", "x"]).starts_with("no <sha256"));
        assert_eq!(usage(&["out", WHOLE_HEX, "--", "x"]), "no part");
        assert_eq!(
            usage(&["out", WHOLE_HEX, &part, "--"]),
            "no command after `--`"
        );
        assert_eq!(usage(&["", WHOLE_HEX, &part, "--", "x"]), "<out> is empty");
    }

    #[test]
    fn a_bad_whole_hash_is_named() {
        let part = format!("/kt/agent/kt-part-{A}");
        for bad in ["cafe", &WHOLE_HEX.to_uppercase(), &format!("{WHOLE_HEX}0")] {
            with_args(&["out", bad, &part, "--", "x"], |args| {
                assert_eq!(parse(args), Err(Failure::WholeHash(bad.as_bytes())));
            });
        }
    }

    #[test]
    fn a_part_not_named_by_its_hash_is_named() {
        let good = format!("/kt/agent/kt-part-{A}");
        for bad in [
            format!("/kt/agent/kt-part-{}", &A[1..]),
            format!("/kt/agent/kt-parts-{A}"),
            format!("/kt/agent/{A}"),
            format!("/kt/agent/kt-part-{A}/"),
            format!("/kt/agent/kt-part-{}", A.to_uppercase()),
        ] {
            with_args(&["out", WHOLE_HEX, &good, &bad, "--", "x"], |args| {
                assert_eq!(parse(args), Err(Failure::PartName(bad.as_bytes())));
            });
        }
    }
}
