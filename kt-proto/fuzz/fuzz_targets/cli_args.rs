//! Arbitrary `kt-shadow` command lines (arguments separated by NUL): parsing never
//! panics, and whatever parses survives `to_args` and a second parse unchanged.
#![no_main]

use kt_proto::cli::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args: Vec<&str> = text.split('\0').collect();
    if let Ok(command) = Command::parse(args) {
        let again = Command::parse(command.to_args()).expect("to_args output parses");
        assert_eq!(again, command);
    }
});
