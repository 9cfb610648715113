//! `Accept-Encoding`: whether a client takes a gzip body (RFC 9110
//! section 12.5.3). Only `gzip` (and its alias `x-gzip`) is ever sent, and
//! only for the catalog.

/// Whether the `Accept-Encoding` field values accept `gzip`: a `gzip`,
/// `x-gzip` or `*` coding with a weight above zero (`gzip` named
/// explicitly wins over `*`).
pub fn accepts_gzip<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut named: Option<bool> = None;
    let mut star: Option<bool> = None;
    for value in values {
        for item in value.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let coding = parts.next().unwrap_or_default().trim_ascii();
            let accepted = parts.all(|p| !is_zero_weight(p.trim_ascii()));
            if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
                named = Some(named.unwrap_or(false) || accepted);
            } else if coding == b"*" {
                star = Some(star.unwrap_or(false) || accepted);
            }
        }
    }
    named.or(star).unwrap_or(false)
}

/// `q=0`, `q=0.`, `q=0.000`: the coding is refused.
fn is_zero_weight(param: &[u8]) -> bool {
    let Some(eq) = param.iter().position(|&b| b == b'=') else {
        return false;
    };
    let (name, value) = (param[..eq].trim_ascii(), param[eq + 1..].trim_ascii());
    name.eq_ignore_ascii_case(b"q")
        && value.first() == Some(&b'0')
        && value[1..].iter().all(|&b| b == b'.' || b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: &[&str], expected: bool) {
        let got = accepts_gzip(values.iter().map(|v| v.as_bytes()));
        assert_eq!(got, expected, "Accept-Encoding {values:?}");
    }

    #[test]
    fn accept_encoding() {
        check(&[], false);
        check(&["gzip"], true);
        check(&["deflate, gzip;q=1.0, *;q=0.5"], true);
        check(&["GZIP"], true);
        check(&["x-gzip"], true);
        check(&["br", "gzip"], true);
        check(&["identity"], false);
        check(&["gzip;q=0"], false);
        check(&["gzip; q=0.000"], false);
        check(&["gzip;q=0.001"], true);
        check(&["*"], true);
        check(&["*;q=0"], false);
        check(&["gzip;q=0, *"], false);
        check(&["br, deflate"], false);
    }
}
