//! SHA-256 digests as 64 lower-case hex digits, the spelling of the pod spec's hash and
//! of a part's ConfigMap name.

/// A SHA-256 digest.
pub(crate) type Digest = [u8; 32];

/// The number of hex digits of a [`Digest`].
pub(crate) const DIGEST_HEX_LEN: usize = 64;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Reads exactly 64 lower-case hex digits; anything else (upper case too: ConfigMap
/// names are lower case, and kt writes the pod spec's hash the same way) is `None`.
pub(crate) fn decode(text: &[u8]) -> Option<Digest> {
    if text.len() != DIGEST_HEX_LEN {
        return None;
    }
    let mut digest = [0; 32];
    for (byte, pair) in digest.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(digest)
}

/// `digest` as 64 lower-case hex digits.
pub(crate) fn encode(digest: &Digest) -> [u8; DIGEST_HEX_LEN] {
    let mut text = [0; DIGEST_HEX_LEN];
    for (pair, byte) in text.chunks_exact_mut(2).zip(digest) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    text
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &[u8; 64] = b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn decode_and_encode_round_trip() {
        let digest = decode(ABC).expect("valid hex");
        assert_eq!(digest[0], 0xba);
        assert_eq!(digest[31], 0xad);
        assert_eq!(&encode(&digest), ABC);
    }

    #[test]
    fn decode_refuses_anything_but_64_lower_case_hex_digits() {
        assert_eq!(decode(&ABC[..63]), None, "too short");
        let mut long = [b'0'; 65];
        long[..64].copy_from_slice(ABC);
        assert_eq!(decode(&long), None, "too long");
        let upper = ABC.to_ascii_uppercase();
        assert_eq!(decode(&upper), None, "upper case");
        let mut bad = *ABC;
        bad[10] = b'g';
        assert_eq!(decode(&bad), None, "not a hex digit");
        assert_eq!(decode(b""), None, "empty");
    }
}
