//! Lowercase hex, the crate's one encoder and decoder: SHA1 digests, peer
//! and download ids, the resume state's bitmap.

/// The digits, by value.
const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as hex into `out`, two digits a byte (`out` holds
/// `2 * bytes.len()` or more; the rest is left alone).
pub(crate) fn encode_to(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

/// `bytes` as hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = vec![0u8; 2 * bytes.len()];
    encode_to(bytes, &mut out);
    out.into_iter().map(char::from).collect()
}

/// The value of one hex digit (either case).
pub(crate) fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte written as the hex digits `pair` (one or two of them).
pub(crate) fn byte(pair: &[u8]) -> Option<u8> {
    if pair.is_empty() || pair.len() > 2 {
        return None;
    }
    pair.iter()
        .try_fold(0u8, |acc, c| Some((acc << 4) | digit(*c)?))
}

/// The bytes written as `hex` (an even number of digits, either case).
pub(crate) fn decode(hex: &str) -> Option<Vec<u8>> {
    let digits = hex.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits.chunks_exact(2).map(byte).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_lowercase_and_decodes_either_case() {
        assert_eq!(encode(&[0x00, 0x9f, 0xa0, 0xff]), "009fa0ff");
        assert_eq!(encode(&[]), "");
        assert_eq!(byte(b"9f"), Some(0x9f));
        assert_eq!(byte(b"A0"), Some(0xa0));
        assert_eq!(byte(b"f"), Some(0x0f));
        assert_eq!(byte(b"g0"), None);
        assert_eq!(byte(b""), None);
        assert_eq!(byte(b"123"), None);
        let mut out = [b'.'; 5];
        encode_to(&[0xab, 0xcd], &mut out);
        assert_eq!(&out, b"abcd.");
        assert_eq!(decode("009fA0"), Some(vec![0x00, 0x9f, 0xa0]));
        assert_eq!(decode("009"), None);
        assert_eq!(decode("0g"), None);
    }
}
