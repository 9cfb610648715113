//! A cursor over little-endian binary bytes (the index cache and the
//! catalog cache): every read fails cleanly (`None`) past the end, so a
//! truncated or corrupt file is refused, never a panic.

use crate::digest::Sha1Digest;

/// Reads from the front of `buf`, which shrinks as it goes.
pub(crate) struct Reader<'a> {
    /// What is left to read.
    pub buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// Bytes prefixed by their `u32` length.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }

    /// A UTF-8 string prefixed by its `u32` length.
    pub fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    /// A raw 20-byte SHA1.
    pub fn sha1(&mut self) -> Option<Sha1Digest> {
        Some(Sha1Digest(self.take(20)?.try_into().ok()?))
    }

    /// A `u32` count of items of at least `min` bytes each, if that many
    /// fit in what is left.
    pub fn count(&mut self, min: usize) -> Option<usize> {
        let n = usize::try_from(self.u32()?).ok()?;
        (n.checked_mul(min)? <= self.buf.len()).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_cleanly_at_the_end() {
        let mut r = Reader {
            buf: &[3, 0, 0, 0, b'a', b'b', b'c', 9],
        };
        assert_eq!(r.string().as_deref(), Some("abc"));
        assert_eq!(r.u32(), None);
        assert_eq!(r.take(1), Some(&[9u8][..]));
        assert_eq!(r.take(1), None);
        let mut r = Reader {
            buf: &[200, 0, 0, 0, 1],
        };
        assert_eq!(r.count(1), None, "200 items cannot fit in 1 byte");
    }
}
