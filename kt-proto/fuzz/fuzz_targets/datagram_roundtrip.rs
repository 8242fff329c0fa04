//! Datagrams cut from arbitrary bytes, encoded, then read back through the reader in
//! arbitrary chunks: boundaries and contents must survive exactly.
#![no_main]

use kt_proto::{DatagramCodec, DatagramReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [chunk, input @ ..] = data else {
        return;
    };
    // Datagrams are the pieces of `input` between 0xFF bytes (so empty ones occur).
    let datagrams: Vec<&[u8]> = input.split(|b| *b == 0xFF).collect();
    let codec = DatagramCodec::new();
    let mut wire = Vec::new();
    for d in &datagrams {
        codec.encode(d, &mut wire).expect("fuzz inputs are under the limit");
    }
    assert_eq!(
        wire.len(),
        datagrams.iter().map(|d| d.len() + 2).sum::<usize>()
    );
    let mut reader = DatagramReader::new(codec);
    let mut got: Vec<Vec<u8>> = Vec::new();
    for piece in wire.chunks(usize::from(*chunk).max(1)) {
        reader.push(piece);
        while let Some(d) = reader.next_datagram().expect("well-formed frames") {
            got.push(d.to_vec());
        }
    }
    assert_eq!(got.len(), datagrams.len());
    for (g, d) in got.iter().zip(&datagrams) {
        assert_eq!(&g[..], *d);
    }
    assert_eq!(reader.buffered(), 0);
});
