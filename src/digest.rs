//! The SHA1 digest that names files and pieces.
//!
//! A file is reached only by the SHA1 of its content, so this type is the
//! root of trust of the whole system: it parses only 40 hex digits and prints
//! 40 lowercase hex digits, in JSON too.

use std::fmt;
use std::str::FromStr;

use sha1::{Digest, Sha1};

/// A SHA1 digest (20 bytes), printed and parsed as 40 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha1Digest(pub [u8; 20]);

/// Why a string is not a SHA1 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha1 {input:?}: expected 40 hex digits")]
pub struct ParseDigestError {
    /// The offending input, cut to 64 characters.
    pub input: String,
}

impl Sha1Digest {
    /// The SHA1 of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut h = Sha1::new();
        h.update(data);
        Self::from_hasher(h)
    }

    /// Finishes a running `sha1::Sha1` hasher.
    pub(crate) fn from_hasher(h: Sha1) -> Self {
        Sha1Digest(h.finalize().into())
    }

    /// The digest as 40 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// [`to_hex`](Self::to_hex) as ASCII bytes, without allocating.
    pub fn hex_bytes(&self) -> [u8; 40] {
        let mut buf = [0u8; 40];
        crate::hex::encode_to(&self.0, &mut buf);
        buf
    }
}

impl fmt::Display for Sha1Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One write of 40 bytes: twenty `{:02x}` cost more than the rest of
        // printing an index line.
        f.pad(std::str::from_utf8(&self.hex_bytes()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Sha1Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha1Digest({self})")
    }
}

impl FromStr for Sha1Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDigestError {
            input: s.chars().take(64).collect(),
        };
        let bytes = s.as_bytes();
        if bytes.len() != 40 {
            return Err(err());
        }
        let mut out = [0u8; 20];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = crate::hex::byte(pair).ok_or_else(err)?;
        }
        Ok(Sha1Digest(out))
    }
}

impl serde::Serialize for Sha1Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha1Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_matches_sha1sum() {
        assert_eq!(
            Sha1Digest::of(b"").to_hex(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }

    #[test]
    fn parse_round_trips_and_lowercases() {
        let d: Sha1Digest = "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709".parse().unwrap();
        assert_eq!(d, Sha1Digest::of(b""));
        assert_eq!(d.to_string(), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[test]
    fn parse_rejects_wrong_length_and_non_hex() {
        assert!("abc".parse::<Sha1Digest>().is_err());
        assert!("zz39a3ee5e6b4b0d3255bfef95601890afd80709"
            .parse::<Sha1Digest>()
            .is_err());
        assert!("da39a3ee5e6b4b0d3255bfef95601890afd807090"
            .parse::<Sha1Digest>()
            .is_err());
        assert!("é39a3ee5e6b4b0d3255bfef95601890afd8070"
            .parse::<Sha1Digest>()
            .is_err());
    }

    #[test]
    fn serde_uses_hex_strings() {
        let d = Sha1Digest::of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        let back: Sha1Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
    }
}
