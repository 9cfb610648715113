//! Response heads: the status line and header fields, written into a byte
//! buffer the caller sends in one write. Also the two header values that need
//! care: `Content-Disposition` (a file name from disk, quoted and encoded)
//! and `Date` (IMF-fixdate, computed here to avoid a date crate).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// An HTTP status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Status(pub u16);

impl Status {
    /// 200.
    pub const OK: Status = Status(200);
    /// 206.
    pub const PARTIAL_CONTENT: Status = Status(206);
    /// 304.
    pub const NOT_MODIFIED: Status = Status(304);
    /// 400.
    pub const BAD_REQUEST: Status = Status(400);
    /// 404.
    pub const NOT_FOUND: Status = Status(404);
    /// 405.
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    /// 408.
    pub const REQUEST_TIMEOUT: Status = Status(408);
    /// 413.
    pub const CONTENT_TOO_LARGE: Status = Status(413);
    /// 414.
    pub const URI_TOO_LONG: Status = Status(414);
    /// 416.
    pub const RANGE_NOT_SATISFIABLE: Status = Status(416);
    /// 431.
    pub const HEADER_FIELDS_TOO_LARGE: Status = Status(431);
    /// 500.
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    /// 505.
    pub const HTTP_VERSION_NOT_SUPPORTED: Status = Status(505);
    /// 503: busy (every upload slot taken); come back after `Retry-After`.
    pub const SERVICE_UNAVAILABLE: Status = Status(503);

    /// The reason phrase of the status line.
    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            206 => "Partial Content",
            304 => "Not Modified",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            413 => "Content Too Large",
            414 => "URI Too Long",
            416 => "Range Not Satisfiable",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        }
    }
}

/// A response head under construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status.
    pub status: Status,
    /// Header fields in the order they are written.
    pub headers: Vec<(&'static str, String)>,
}

impl ResponseHead {
    /// A head with no header fields yet.
    pub fn new(status: Status) -> Self {
        Self {
            status,
            headers: Vec::new(),
        }
    }

    /// Adds a header field. Control characters in `value` (CR and LF
    /// included) become spaces, so a value can never split the head.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let mut value: String = value.into();
        if value.chars().any(|c| c.is_control()) {
            value = value
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
        }
        self.headers.push((name, value));
        self
    }

    /// The value of the first header named `name` (case-insensitive).
    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Appends the status line, the fields and the blank line to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut text = String::with_capacity(256);
        // Writing into a String cannot fail.
        let _ = write!(
            text,
            "HTTP/1.1 {} {}\r\n",
            self.status.0,
            self.status.reason()
        );
        for (name, value) in &self.headers {
            let _ = write!(text, "{name}: {value}\r\n");
        }
        text.push_str("\r\n");
        out.extend_from_slice(text.as_bytes());
    }
}

/// The file name of a `Content-Disposition` value (what
/// [`content_disposition`] writes, or any RFC 6266 value): the RFC 8187
/// `filename*=UTF-8''...` form if present and valid, else the quoted or
/// plain `filename=`. Untrusted: sanitize before use.
pub fn disposition_filename(value: &str) -> Option<String> {
    let mut plain = None;
    let mut rest = value;
    while let Some((_, after)) = rest.split_once(';') {
        rest = after;
        let param = after.trim_start();
        let Some((name, v)) = param.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("filename*") {
            let v = v.split(';').next().unwrap_or("").trim();
            if let Some(encoded) = v
                .get(..7)
                .filter(|p| p.eq_ignore_ascii_case("UTF-8''"))
                .map(|_| &v[7..])
            {
                if let Some(decoded) = percent_decode(encoded) {
                    return Some(decoded);
                }
            }
        } else if name.eq_ignore_ascii_case("filename") && plain.is_none() {
            plain = Some(if let Some(quoted) = v.trim_start().strip_prefix('"') {
                let mut out = String::new();
                let mut chars = quoted.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        c => out.push(c),
                    }
                }
                out
            } else {
                v.split(';').next().unwrap_or("").trim().to_string()
            });
        }
    }
    plain
}

/// `%XX` decoding into UTF-8; `None` if malformed.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `attachment; filename="..."` for a file name from disk: quotes and
/// backslashes are escaped, control characters and non-ASCII become `_` in
/// the quoted form, and a non-ASCII name also gets the RFC 8187
/// `filename*=UTF-8''...` form. An empty name falls back to `fallback`.
pub fn content_disposition(name: &str, fallback: &str) -> String {
    let name = if name.is_empty() { fallback } else { name };
    let mut out = String::from("attachment; filename=\"");
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
    if !name.is_ascii() || name.chars().any(|c| c.is_control()) {
        out.push_str("; filename*=UTF-8''");
        for b in name.bytes() {
            let attr_char = b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b);
            if attr_char {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// `time` as an HTTP date (IMF-fixdate), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
/// Times before 1970 print as the epoch.
pub fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), after Howard
/// Hinnant's `civil_from_days`, for non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn disposition_filenames_round_trip() {
        for name in [
            "a.bin",
            "with \"quotes\" and \\",
            "été 日本.txt",
            "tab\there",
        ] {
            let value = content_disposition(name, "x");
            assert_eq!(
                disposition_filename(&value).as_deref(),
                Some(name),
                "{value}"
            );
        }
        assert_eq!(
            disposition_filename("attachment; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(disposition_filename("attachment"), None);
        assert_eq!(
            disposition_filename("attachment; filename*=UTF-8''%ZZ; filename=\"b\"").as_deref(),
            Some("b"),
            "a bad extended form falls back to the plain one"
        );
    }

    fn check_date(secs: u64, expected: &str) {
        assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(secs)), expected);
    }

    #[test]
    fn dates() {
        check_date(0, "Thu, 01 Jan 1970 00:00:00 GMT");
        check_date(784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT");
        check_date(951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT");
        check_date(1_709_251_199, "Thu, 29 Feb 2024 23:59:59 GMT");
        check_date(4_102_444_800, "Fri, 01 Jan 2100 00:00:00 GMT");
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    fn check_disposition(name: &str, expected: &str) {
        assert_eq!(content_disposition(name, "fallback"), expected);
    }

    #[test]
    fn dispositions() {
        check_disposition("a.bin", r#"attachment; filename="a.bin""#);
        check_disposition("", r#"attachment; filename="fallback""#);
        check_disposition(
            r#"say "hi".txt"#,
            r#"attachment; filename="say \"hi\".txt""#,
        );
        check_disposition(r"back\slash", r#"attachment; filename="back\\slash""#);
        check_disposition(
            "évian.txt",
            r#"attachment; filename="_vian.txt"; filename*=UTF-8''%C3%A9vian.txt"#,
        );
        check_disposition(
            "a\r\nSet-Cookie: x",
            r#"attachment; filename="a__Set-Cookie: x"; filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x"#,
        );
    }

    #[test]
    fn heads_are_written_in_order_and_cannot_be_split() {
        let head = ResponseHead::new(Status::NOT_FOUND)
            .header("Content-Length", "3")
            .header("X-Evil", "a\r\nInjected: yes");
        let mut out = Vec::new();
        head.write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-Evil: a  Injected: yes\r\n\r\n"
        );
        assert_eq!(head.get("content-length"), Some("3"));
        assert_eq!(head.get("missing"), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(
            Status::RANGE_NOT_SATISFIABLE.reason(),
            "Range Not Satisfiable"
        );
        assert_eq!(Status(299).reason(), "Unknown");
    }
}
