//! Conditional requests: `If-None-Match` (answer `304`) and `If-Range`
//! (send the range only if the representation is still the one asked for).
//!
//! Entity tags are compared as RFC 9110 section 8.8.3.2 says: weak
//! comparison for `If-None-Match`, strong for `If-Range`. `If-Range` with a
//! date never matches: the server sends no `Last-Modified`.

/// Whether the `If-None-Match` field values match `etag` (a quoted entity
/// tag such as `"12"`), so the answer is `304 Not Modified`.
pub fn none_match<'a>(values: impl IntoIterator<Item = &'a [u8]>, etag: &str) -> bool {
    let want = opaque(etag.as_bytes());
    values.into_iter().any(|value| {
        value.split(|&b| b == b',').any(|tag| {
            let tag = tag.trim_ascii();
            tag == b"*" || opaque(tag).is_some_and(|t| Some(t) == want)
        })
    })
}

/// Whether an `If-Range` value lets the `Range` apply to a representation
/// tagged `etag`: only a strong tag equal to it does.
pub fn if_range_matches(value: &[u8], etag: &str) -> bool {
    let value = value.trim_ascii();
    !value.starts_with(b"W/") && is_quoted(value) && value == etag.as_bytes()
}

/// The opaque part of an entity tag, weak prefix dropped; `None` if it is
/// not an entity tag.
fn opaque(tag: &[u8]) -> Option<&[u8]> {
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    is_quoted(tag).then(|| &tag[1..tag.len() - 1])
}

fn is_quoted(tag: &[u8]) -> bool {
    tag.len() >= 2 && tag[0] == b'"' && tag[tag.len() - 1] == b'"' && {
        let inner = &tag[1..tag.len() - 1];
        !inner.contains(&b'"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_none_match(values: &[&str], etag: &str, expected: bool) {
        let got = none_match(values.iter().map(|v| v.as_bytes()), etag);
        assert_eq!(got, expected, "If-None-Match {values:?} against {etag}");
    }

    #[test]
    fn if_none_match() {
        check_none_match(&["\"7\""], "\"7\"", true);
        check_none_match(&["W/\"7\""], "\"7\"", true);
        check_none_match(&["*"], "\"7\"", true);
        check_none_match(&["\"1\", \"7\""], "\"7\"", true);
        check_none_match(&["\"1\"", "\"7\""], "\"7\"", true);
        check_none_match(&["\"1\""], "\"7\"", false);
        check_none_match(&["7"], "\"7\"", false);
        check_none_match(&["\"7"], "\"7\"", false);
        check_none_match(&["\"\"7\"\""], "\"7\"", false);
        check_none_match(&[""], "\"7\"", false);
        check_none_match(&[], "\"7\"", false);
        check_none_match(&["\"70\""], "\"7\"", false);
    }

    fn check_if_range(value: &str, etag: &str, expected: bool) {
        assert_eq!(
            if_range_matches(value.as_bytes(), etag),
            expected,
            "If-Range {value:?} against {etag}"
        );
    }

    #[test]
    fn if_range() {
        check_if_range("\"abc\"", "\"abc\"", true);
        check_if_range(" \"abc\" ", "\"abc\"", true);
        check_if_range("W/\"abc\"", "\"abc\"", false);
        check_if_range("\"abd\"", "\"abc\"", false);
        check_if_range("Sun, 06 Nov 1994 08:49:37 GMT", "\"abc\"", false);
        check_if_range("", "\"abc\"", false);
    }
}
