//! Request heads: `httparse` over a byte buffer, plus the limits and framing
//! rules of this server.
//!
//! [`parse_head`] is called on everything received so far; it answers
//! [`ParsedHead::Partial`] until the blank line arrives, and refuses as soon
//! as the buffer is garbage or over a limit, so a reader never buffers more
//! than [`MAX_HEAD_BYTES`](super::MAX_HEAD_BYTES).
//!
//! The API takes no request bodies: a request that announces one
//! (`Transfer-Encoding`, or a non-zero `Content-Length`) is refused, so the
//! connection never has to skip a body it does not understand.

use super::response::Status;
use super::{MAX_HEADERS, MAX_HEADERS_BYTES, MAX_REQUEST_LINE};

/// How many bytes of a refused request are quoted in the error.
const SNIPPET_LEN: usize = 40;

/// The request method. Only `GET` and `HEAD` are served; the rest are kept
/// for the `405` answer and the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: like `GET`, head only.
    Head,
    /// Any other token.
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other(s) => s,
        }
    }
}

/// The HTTP version of a request (`httparse` accepts only 1.0 and 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: the connection closes after the answer unless asked otherwise.
    Http10,
    /// HTTP/1.1: keep-alive unless `Connection: close`.
    Http11,
}

/// A parsed request head, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The raw request target, not percent-decoded.
    pub target: String,
    /// The version.
    pub version: Version,
    /// Header fields in order, names lowercased, values as received.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// Every value of the header `name` (lowercase), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of a header that must appear at most once; `None` if it is
    /// absent or repeated (a repeated singleton field is unusable).
    pub fn single_header(&self, name: &str) -> Option<&[u8]> {
        let mut found = None;
        for (n, v) in &self.headers {
            if n == name {
                if found.is_some() {
                    return None;
                }
                found = Some(v.as_slice());
            }
        }
        found
    }

    /// Whether the client lets the connection stay open after the answer.
    pub fn keep_alive(&self) -> bool {
        let mut close = false;
        let mut keep = false;
        for value in self.header_values("connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        match self.version {
            Version::Http11 => !close,
            Version::Http10 => keep && !close,
        }
    }
}

/// What [`parse_head`] found in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedHead {
    /// The head is not complete yet (and within limits): read more.
    Partial,
    /// A complete head, and how many bytes of the buffer it used; the rest
    /// belongs to the next (pipelined) request.
    Complete(RequestHead, usize),
}

/// Why a request head is refused. Each maps to a status ([`HeadError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x syntax.
    #[error("malformed request head ({reason}): expected `METHOD /target HTTP/1.1`, received {received}")]
    Malformed {
        /// What `httparse` objected to.
        reason: httparse::Error,
        /// The start of the request, escaped.
        received: String,
    },
    /// A version other than HTTP/1.0 or HTTP/1.1 (HTTP/0.9 lines, HTTP/2 preface).
    #[error("unsupported http version: expected HTTP/1.0 or HTTP/1.1, received {received}")]
    Version {
        /// The start of the request, escaped.
        received: String,
    },
    /// The request line is over [`MAX_REQUEST_LINE`].
    #[error("request line too long: expected at most {limit} bytes, received {received} so far")]
    RequestLineTooLong {
        /// The limit.
        limit: usize,
        /// Bytes of the line received.
        received: usize,
    },
    /// The header lines are over [`MAX_HEADERS_BYTES`].
    #[error(
        "request headers too large: expected at most {limit} bytes, received {received} so far"
    )]
    HeadersTooLarge {
        /// The limit.
        limit: usize,
        /// Bytes of headers received.
        received: usize,
    },
    /// More than [`MAX_HEADERS`] header fields.
    #[error("too many request headers: expected at most {limit}")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// HTTP/1.1 without exactly one `Host` header.
    #[error(
        "bad host header: expected exactly one Host header with HTTP/1.1, received {received}"
    )]
    Host {
        /// How many `Host` headers arrived.
        received: usize,
    },
    /// A `Content-Length` that is not one decimal number.
    #[error("bad content-length: expected one decimal number, received {received}")]
    ContentLength {
        /// The values, escaped.
        received: String,
    },
    /// The request announces a body; this API takes none.
    #[error("request bodies are not accepted: send GET or HEAD without a body")]
    Body,
}

impl HeadError {
    /// The status to answer with.
    pub fn status(&self) -> Status {
        match self {
            HeadError::Malformed { .. }
            | HeadError::Host { .. }
            | HeadError::ContentLength { .. } => Status::BAD_REQUEST,
            HeadError::Version { .. } => Status::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::RequestLineTooLong { .. } => Status::URI_TOO_LONG,
            HeadError::HeadersTooLarge { .. } | HeadError::TooManyHeaders { .. } => {
                Status::HEADER_FIELDS_TOO_LARGE
            }
            HeadError::Body => Status::CONTENT_TOO_LARGE,
        }
    }
}

/// Parses the request head at the start of `buf`.
///
/// Limits are checked before and after `httparse`, on the raw bytes, so a
/// client that drips an endless line is refused once it passes the limit.
pub fn parse_head(buf: &[u8]) -> Result<ParsedHead, HeadError> {
    // RFC 9112 section 2.2: ignore empty lines before the request line.
    let line_start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[line_start..];
    let line_end = rest.iter().position(|&b| b == b'\n');
    let line_len = line_end.unwrap_or(rest.len());
    if line_len > MAX_REQUEST_LINE + 1 {
        return Err(HeadError::RequestLineTooLong {
            limit: MAX_REQUEST_LINE,
            received: line_len,
        });
    }
    let headers_start = line_start + line_end.map_or(rest.len(), |e| e + 1);

    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let status = req.parse(buf).map_err(|reason| match reason {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders { limit: MAX_HEADERS },
        httparse::Error::Version => HeadError::Version {
            received: snippet(rest),
        },
        reason => HeadError::Malformed {
            reason,
            received: snippet(rest),
        },
    })?;
    let used = match status {
        httparse::Status::Partial => buf.len(),
        httparse::Status::Complete(n) => n,
    };
    // The blank line that ends the head is not counted against the limit.
    let headers_len = used.saturating_sub(headers_start);
    if headers_len > MAX_HEADERS_BYTES + 2 {
        return Err(HeadError::HeadersTooLarge {
            limit: MAX_HEADERS_BYTES,
            received: headers_len,
        });
    }
    let httparse::Status::Complete(used) = status else {
        return Ok(ParsedHead::Partial);
    };

    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        // httparse fills all three on a complete parse; refuse rather than panic.
        return Err(HeadError::Malformed {
            reason: httparse::Error::Token,
            received: snippet(rest),
        });
    };
    let head = RequestHead {
        method: Method::from_token(method),
        target: target.to_owned(),
        version: if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        },
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect(),
    };
    check_framing(&head)?;
    Ok(ParsedHead::Complete(head, used))
}

/// `Host` (RFC 9112 section 3.2) and the absence of a body.
fn check_framing(head: &RequestHead) -> Result<(), HeadError> {
    let hosts = head.header_values("host").count();
    if head.version == Version::Http11 && hosts != 1 || hosts > 1 {
        return Err(HeadError::Host { received: hosts });
    }
    if head.header_values("transfer-encoding").next().is_some() {
        return Err(HeadError::Body);
    }
    let mut length = None;
    for value in head.header_values("content-length") {
        let bad = || HeadError::ContentLength {
            received: head
                .header_values("content-length")
                .map(snippet)
                .collect::<Vec<_>>()
                .join(", "),
        };
        let text = std::str::from_utf8(value).map_err(|_| bad())?.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = text.parse().unwrap_or(u64::MAX);
        if length.is_some_and(|l| l != n) {
            return Err(bad());
        }
        length = Some(n);
    }
    if length.is_some_and(|n| n > 0) {
        return Err(HeadError::Body);
    }
    Ok(())
}

/// The first bytes of `bytes`, escaped for an error message or a log line.
fn snippet(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(SNIPPET_LEN)];
    let mut out = format!("\"{}\"", cut.escape_ascii());
    if bytes.len() > SNIPPET_LEN {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a test expects from [`parse_head`]: a short, comparable summary.
    #[derive(Debug, PartialEq, Eq)]
    enum Expect {
        Partial,
        /// method, target, keep-alive, bytes used.
        Complete(&'static str, &'static str, bool, usize),
        Refused(u16),
    }

    fn check(input: &[u8], expected: Expect) {
        let got = match parse_head(input) {
            Ok(ParsedHead::Partial) => Expect::Partial,
            Ok(ParsedHead::Complete(head, used)) => {
                let method: &'static str = head.method.as_str().to_owned().leak();
                let target: &'static str = head.target.clone().leak();
                Expect::Complete(method, target, head.keep_alive(), used)
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                Expect::Refused(e.status().0)
            }
        };
        assert_eq!(
            got,
            expected,
            "input {:?}",
            input.escape_ascii().to_string()
        );
    }

    #[test]
    fn well_formed_heads() {
        let get = b"GET /v1/files HTTP/1.1\r\nHost: x\r\n\r\n";
        check(get, Expect::Complete("GET", "/v1/files", true, get.len()));
        let head = b"HEAD /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        check(
            head,
            Expect::Complete("HEAD", "/v1/health", false, head.len()),
        );
        let old = b"GET / HTTP/1.0\r\n\r\n";
        check(old, Expect::Complete("GET", "/", false, old.len()));
        let old_keep = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        check(old_keep, Expect::Complete("GET", "/", true, old_keep.len()));
        let bare_lf = b"GET /a HTTP/1.1\nHost: x\n\n";
        check(bare_lf, Expect::Complete("GET", "/a", true, bare_lf.len()));
        let leading_crlf = b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        check(
            leading_crlf,
            Expect::Complete("GET", "/a", true, leading_crlf.len()),
        );
        let zero_body = b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        check(
            zero_body,
            Expect::Complete("GET", "/a", true, zero_body.len()),
        );
        let other = b"DELETE /a HTTP/1.1\r\nHost: x\r\n\r\n";
        check(other, Expect::Complete("DELETE", "/a", true, other.len()));
        let encoded = b"GET /v1/files/%2e%2e%2f HTTP/1.1\r\nHost: x\r\n\r\n";
        check(
            encoded,
            Expect::Complete("GET", "/v1/files/%2e%2e%2f", true, encoded.len()),
        );
    }

    #[test]
    fn pipelined_requests_leave_the_rest_in_the_buffer() {
        let one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut two = one.to_vec();
        two.extend_from_slice(b"GET /b HTTP/1.1\r\n");
        check(&two, Expect::Complete("GET", "/a", true, one.len()));
    }

    #[test]
    fn partial_heads_ask_for_more() {
        check(b"", Expect::Partial);
        check(b"\r\n", Expect::Partial);
        check(b"GE", Expect::Partial);
        check(b"GET /v1/files HTTP/1.1\r\n", Expect::Partial);
        check(b"GET /v1/files HTTP/1.1\r\nHost: x\r\n", Expect::Partial);
        check(b"GET /v1/files HTTP/1.1\r\nHost: x\r\n\r", Expect::Partial);
    }

    #[test]
    fn garbage_is_refused_early() {
        check(b"\x00\x01\x02", Expect::Refused(400));
        check(b"G\xffT / HTTP/1.1\r\n", Expect::Refused(400));
        check(b"GET /\xff\xfe HTTP/1.1\r\n\r\n", Expect::Refused(400));
        check(
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            Expect::Refused(400),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            Expect::Refused(400),
        );
        check(b"GET  / HTTP/1.1\r\n\r\n", Expect::Refused(400));
    }

    #[test]
    fn other_versions_are_refused() {
        // An HTTP/0.9 line has no version at all: httparse calls it malformed.
        check(b"GET /\r\n", Expect::Refused(400));
        check(b"GET / HTTP/2.0\r\n\r\n", Expect::Refused(505));
        check(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Expect::Refused(505));
        check(b"GET / HTTP/1.2\r\n\r\n", Expect::Refused(505));
    }

    #[test]
    fn limits_are_enforced_on_partial_and_complete_heads() {
        let long_target = "a".repeat(MAX_REQUEST_LINE + 10);
        check(
            format!("GET /{long_target}").as_bytes(),
            Expect::Refused(414),
        );
        check(
            format!("GET /{long_target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            Expect::Refused(414),
        );
        let at_limit = "a".repeat(MAX_REQUEST_LINE - "GET / HTTP/1.1".len());
        let ok = format!("GET /{at_limit} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(
            parse_head(ok.as_bytes()),
            Ok(ParsedHead::Complete(..))
        ));

        let big_value = "v".repeat(MAX_HEADERS_BYTES);
        check(
            format!("GET / HTTP/1.1\r\nHost: x\r\nX: {big_value}").as_bytes(),
            Expect::Refused(431),
        );
        check(
            format!("GET / HTTP/1.1\r\nHost: x\r\nX: {big_value}\r\n\r\n").as_bytes(),
            Expect::Refused(431),
        );
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X{i}: y\r\n"))
            .collect();
        check(
            format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
            Expect::Refused(431),
        );
        let just_enough: String = (0..MAX_HEADERS - 1)
            .map(|i| format!("X{i}: y\r\n"))
            .collect();
        let ok = format!("GET / HTTP/1.1\r\nHost: x\r\n{just_enough}\r\n");
        check(ok.as_bytes(), Expect::Complete("GET", "/", true, ok.len()));
    }

    #[test]
    fn framing_rules() {
        check(b"GET / HTTP/1.1\r\n\r\n", Expect::Refused(400));
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            Expect::Refused(400),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            Expect::Refused(413),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            Expect::Refused(413),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            Expect::Refused(400),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n",
            Expect::Refused(400),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            Expect::Refused(413),
        );
    }

    #[test]
    fn header_lookup() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nIf-None-Match: \"a\"\r\nif-none-match: \"b\"\r\n\r\n";
        let Ok(ParsedHead::Complete(head, _)) = parse_head(input) else {
            panic!("expected a complete head");
        };
        assert_eq!(head.single_header("range"), Some(&b"bytes=0-1"[..]));
        assert_eq!(head.single_header("if-none-match"), None);
        assert_eq!(head.header_values("if-none-match").count(), 2);
        assert_eq!(head.version, Version::Http11);
    }
}
