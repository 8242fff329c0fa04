//! Arbitrary bytes as channel data: the one-shot decoder and the reassembling reader
//! must agree, never panic, and re-encoding what they return must give back the
//! bytes they consumed.
#![no_main]

use kt_proto::{DatagramCodec, DatagramReader, Decoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First two bytes choose the codec's limit (invalid limits must be refused),
    // the third how the input is chunked for the reader.
    let [a, b, chunk, input @ ..] = data else {
        return;
    };
    let limit = usize::from(u16::from_be_bytes([*a, *b]));
    let codec = match DatagramCodec::with_max_len(limit) {
        Ok(codec) => codec,
        Err(_) => {
            assert_eq!(limit, 0);
            DatagramCodec::new()
        }
    };

    // One-shot decoding of every frame in `input`.
    let mut expected = Vec::new();
    let mut rest = input;
    let mut failed = false;
    loop {
        match codec.decode(rest) {
            Ok(Decoded::Datagram { payload, consumed }) => {
                assert!(payload.len() <= codec.max_len());
                assert_eq!(consumed, payload.len() + 2);
                let mut again = Vec::new();
                codec.encode(payload, &mut again).expect("a decoded datagram re-encodes");
                assert_eq!(&again[..], &rest[..consumed]);
                expected.push(payload.to_vec());
                rest = &rest[consumed..];
            }
            Ok(Decoded::NeedMore { additional }) => {
                assert!(additional >= 1);
                assert!(rest.len() + additional <= 2 + codec.max_len());
                break;
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }

    // The reader, fed in chunks, yields the same datagrams and the same failure.
    let step = usize::from(*chunk).max(1);
    let mut reader = DatagramReader::new(codec);
    let mut got = Vec::new();
    let mut reader_failed = false;
    'feed: for piece in input.chunks(step) {
        reader.push(piece);
        loop {
            match reader.next_datagram() {
                Ok(Some(d)) => got.push(d.to_vec()),
                Ok(None) => break,
                Err(_) => {
                    reader_failed = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(got, expected);
    assert_eq!(reader_failed, failed);
    if !failed {
        assert_eq!(reader.buffered(), rest.len());
    }
});
