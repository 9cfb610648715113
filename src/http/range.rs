//! The `Range` request header (RFC 9110 section 14) against a file size.
//!
//! Behaviour, chosen where the RFC leaves a choice:
//!
//! - one range, `bytes=a-b`, `bytes=a-` or `bytes=-n`: a `206` of that
//!   range, with `last-pos` clipped to the end of the file (so an absurdly
//!   large `b`, even one that overflows `u64`, means "to the end");
//! - a range that starts at or past the end, or a suffix `-0`, or any suffix
//!   of an empty file: `416` with `Content-Range: bytes */size`;
//! - several ranges (`bytes=0-1,5-6`): ignored, the whole file is sent with
//!   `200`, which RFC 9110 section 14.2 allows ("a server MAY ignore the
//!   Range header field") and which avoids `multipart/byteranges`;
//! - anything syntactically invalid (another unit, `b < a`, a sign, no
//!   digits, junk): ignored, `200` with the whole file, as section 14.2 says.
//!
//! The unit is matched case-insensitively; spaces around the range are
//! tolerated.

/// An inclusive byte range inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// The `Content-Range` value of a `206`.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, size)
    }
}

/// What to send for a request, given its `Range` header and the file size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSelection {
    /// The whole file, `200`.
    Full,
    /// One range, `206`.
    Partial(ByteRange),
    /// `416`; see [`unsatisfiable_content_range`].
    Unsatisfiable,
}

/// The `Content-Range` value of a `416`.
pub fn unsatisfiable_content_range(size: u64) -> String {
    format!("bytes */{size}")
}

/// One syntactically valid range-spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `a-b`, `a <= b`; values saturate at `u64::MAX`.
    FromTo(u64, u64),
    /// `a-`.
    From(u64),
    /// `-n`.
    Suffix(u64),
}

/// Decides what to send for the `Range` header `value` (`None`: no header)
/// and a file of `size` bytes.
pub fn select(value: Option<&[u8]>, size: u64) -> RangeSelection {
    let Some(spec) = value.and_then(parse) else {
        return RangeSelection::Full;
    };
    let last = match size.checked_sub(1) {
        Some(last) => last,
        None => return RangeSelection::Unsatisfiable,
    };
    let range = match spec {
        Spec::FromTo(start, end) => ByteRange {
            start,
            end: end.min(last),
        },
        Spec::From(start) => ByteRange { start, end: last },
        Spec::Suffix(0) => return RangeSelection::Unsatisfiable,
        Spec::Suffix(n) => ByteRange {
            start: size - n.min(size),
            end: last,
        },
    };
    if range.start > last {
        return RangeSelection::Unsatisfiable;
    }
    RangeSelection::Partial(range)
}

/// A single range-spec, or `None` for a header to ignore (invalid syntax,
/// another unit, several ranges).
fn parse(value: &[u8]) -> Option<Spec> {
    let value = value.trim_ascii();
    let (unit, set) = value.split_at(value.iter().position(|&b| b == b'=')?);
    if !unit.trim_ascii().eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let set = &set[1..];
    if set.contains(&b',') {
        return None;
    }
    let spec = set.trim_ascii();
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    match (first.is_empty(), last.is_empty()) {
        (true, true) => None,
        (true, false) => Some(Spec::Suffix(number(last)?)),
        (false, true) => Some(Spec::From(number(first)?)),
        (false, false) => {
            let (a, b) = (number(first)?, number(last)?);
            if digits_less(last, first) {
                return None;
            }
            Some(Spec::FromTo(a, b))
        }
    }
}

/// A non-empty run of ASCII digits as a number, saturating at `u64::MAX`.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Whether the decimal `a` is less than the decimal `b`, exactly, at any length.
fn digits_less(a: &[u8], b: &[u8]) -> bool {
    let strip = |s: &[u8]| -> usize { s.iter().take_while(|&&d| d == b'0').count() };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    (a.len(), a) < (b.len(), b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, size: u64, expected: RangeSelection) {
        assert_eq!(
            select(Some(header.as_bytes()), size),
            expected,
            "Range: {header:?} on {size} bytes"
        );
    }

    fn part(start: u64, end: u64) -> RangeSelection {
        RangeSelection::Partial(ByteRange { start, end })
    }

    use RangeSelection::{Full, Unsatisfiable};

    #[test]
    fn single_ranges() {
        check("bytes=0-0", 1000, part(0, 0));
        check("bytes=0-99", 1000, part(0, 99));
        check("bytes=100-199", 1000, part(100, 199));
        check("bytes=999-999", 1000, part(999, 999));
        check("bytes=500-", 1000, part(500, 999));
        check("bytes=0-", 1000, part(0, 999));
        check("bytes=-1", 1000, part(999, 999));
        check("bytes=-100", 1000, part(900, 999));
        check("bytes=-1000", 1000, part(0, 999));
        check("BYTES=1-2", 1000, part(1, 2));
        check(" bytes = 1-2 ", 1000, part(1, 2));
        check("bytes=007-008", 1000, part(7, 8));
    }

    #[test]
    fn past_the_end_is_clipped_or_unsatisfiable() {
        check("bytes=900-5000", 1000, part(900, 999));
        check("bytes=0-99999999999999999999999", 1000, part(0, 999));
        check("bytes=-99999999999999999999999", 1000, part(0, 999));
        check("bytes=-5000", 1000, part(0, 999));
        check("bytes=1000-", 1000, Unsatisfiable);
        check("bytes=1000-1000", 1000, Unsatisfiable);
        check("bytes=5000-6000", 1000, Unsatisfiable);
        check("bytes=99999999999999999999999-", 1000, Unsatisfiable);
        check(
            "bytes=99999999999999999999998-99999999999999999999999",
            1000,
            Unsatisfiable,
        );
        check("bytes=-0", 1000, Unsatisfiable);
    }

    #[test]
    fn empty_files_satisfy_no_range() {
        check("bytes=0-", 0, Unsatisfiable);
        check("bytes=0-0", 0, Unsatisfiable);
        check("bytes=-1", 0, Unsatisfiable);
        check("bytes=1-0", 0, Full);
    }

    #[test]
    fn invalid_syntax_is_ignored() {
        for header in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=99999999999999999999999-99999999999999999999998",
            "bytes=-5-10",
            "bytes=--5",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=1 - 2",
            "bytes=0x10-0x20",
            "bytes=1-2;",
            "items=0-1",
            "=0-1",
            "bytes=１-２",
        ] {
            check(header, 1000, Full);
        }
        assert_eq!(select(Some(b"bytes=\xff-\xfe"), 1000), Full);
        assert_eq!(select(None, 1000), Full);
    }

    #[test]
    fn several_ranges_get_the_whole_file() {
        check("bytes=0-1,5-6", 1000, Full);
        check("bytes=0-1, 5-6", 1000, Full);
        check("bytes=5000-6000,7000-8000", 1000, Full);
        check("bytes=0-1,", 1000, Full);
    }

    #[test]
    fn content_range_values() {
        let r = ByteRange {
            start: 100,
            end: 199,
        };
        assert_eq!(r.len(), 100);
        assert_eq!(r.content_range(1000), "bytes 100-199/1000");
        assert_eq!(unsatisfiable_content_range(1000), "bytes */1000");
    }
}
