//! The client's side of the wire: the `GET` request a client writes, and
//! the response head it reads back (status, `Content-Length`,
//! `Content-Range`, `Connection`, `Content-Encoding`, `X-Download-Id`) with
//! how its body is framed. Bytes in, head out; the sockets, timeouts and
//! body reads are [`crate::client`]'s.
//!
//! Only what peers speak is accepted: `Content-Length` bodies (a body
//! without one runs to the end of the connection); `Transfer-Encoding` is
//! refused; `Content-Encoding` may be gzip (the catalog asks for it).

/// Largest response head accepted.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Most header fields accepted in a response.
const MAX_RESPONSE_HEADERS: usize = 48;
/// Longest `X-Download-Id` value kept.
const MAX_DOWNLOAD_ID: usize = 64;
/// Longest `X-Have` / `X-Fresh` value kept (hex of
/// [`crate::protocol::MAX_HEADER_PIECES`] bits).
const MAX_BITMAP_HEX: usize = crate::protocol::MAX_HEADER_PIECES.div_ceil(8) * 2;

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// `Content-Length`, if given.
    pub content_length: Option<u64>,
    /// `Content-Range: bytes a-b/size` as `(a, b, size)`, if given and valid.
    pub content_range: Option<(u64, u64, u64)>,
    /// The server closes the connection after this response.
    pub close: bool,
    /// `X-Download-Id`, if given (short and plain, else ignored).
    pub download_id: Option<String>,
    /// `Content-Encoding: gzip`: the body is gzip-compressed.
    pub gzip: bool,
    /// `X-Have`: the pieces a partial holder holds, as sent (hex, at most
    /// `MAX_BITMAP_HEX` digits, else ignored).
    pub have: Option<String>,
    /// `X-Fresh`: the pieces a seed offers, as sent (same bound).
    pub fresh: Option<String>,
    /// `Content-Disposition`, raw (at most 1 KiB, else ignored).
    pub disposition: Option<String>,
    /// `ETag`, raw (at most 128 bytes, else ignored).
    pub etag: Option<String>,
    /// `X-Indexing`: the peer's index is still being built (the files
    /// indexed so far); a `404` then means "not yet", not "never".
    pub indexing: Option<u64>,
    /// `X-Slots` on a `503`: every upload slot of the holder is taken;
    /// they rotate after this long (ask another holder meanwhile).
    pub slots_full: Option<std::time::Duration>,
    /// `X-Slots-Next: 1` beside it: this client gets a slot at that
    /// rotation (wait for it there).
    pub slots_next: bool,
}

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// After exactly this many bytes (`Content-Length`).
    Length(u64),
    /// When the server closes the connection (no `Content-Length`).
    UntilClose,
}

impl Head {
    /// How the body that follows this head ends.
    pub fn framing(&self) -> Framing {
        match self.content_length {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    }
}

/// What is wrong with a response head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// Not HTTP/1.x.
    #[error("{0}")]
    Malformed(httparse::Error),
    /// No status code.
    #[error("no status code")]
    NoStatus,
    /// A header value is not UTF-8.
    #[error("header {0} is not text")]
    NotText(String),
    /// `Content-Length` is not a number.
    #[error("bad content-length {0:?}")]
    ContentLength(String),
    /// Two `Content-Length` headers disagree.
    #[error("conflicting content-length headers")]
    ConflictingLength,
    /// `Transfer-Encoding` (peers never send it).
    #[error("transfer-encoding {0:?} is not supported")]
    TransferEncoding(String),
    /// A `Content-Encoding` other than gzip or identity.
    #[error("content-encoding {0:?} is not supported")]
    ContentEncoding(String),
    /// The head is longer than [`MAX_RESPONSE_HEAD`].
    #[error("head over {MAX_RESPONSE_HEAD} bytes")]
    TooLarge,
    /// The connection closed in the middle of the head.
    #[error("connection closed inside the head")]
    Truncated,
}

/// The request line and headers of `GET path` to `host`, with `Range:
/// bytes=a-b` if `range` is given and `Accept-Encoding: gzip` if `gzip`.
pub fn get_request(host: &str, path: &str, range: Option<(u64, u64)>, gzip: bool) -> String {
    request("GET", host, path, range, gzip)
}

/// The request line and headers of `HEAD path` to `host`.
pub fn head_request(host: &str, path: &str) -> String {
    request("HEAD", host, path, None, false)
}

fn request(method: &str, host: &str, path: &str, range: Option<(u64, u64)>, gzip: bool) -> String {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: piratebay-sync/{}\r\n",
        crate::version::VERSION
    );
    if let Some((a, b)) = range {
        req.push_str(&format!("Range: bytes={a}-{b}\r\n"));
    }
    if gzip {
        req.push_str("Accept-Encoding: gzip\r\n");
    }
    req.push_str("\r\n");
    req
}

/// Parses a response head from the start of `buf`: `None` if incomplete,
/// else the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ReplyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ReplyError::Malformed(e)),
    };
    let status = resp.code.ok_or(ReplyError::NoStatus)?;
    let mut head = Head {
        status,
        content_length: None,
        content_range: None,
        download_id: None,
        gzip: false,
        have: None,
        fresh: None,
        disposition: None,
        etag: None,
        indexing: None,
        slots_full: None,
        slots_next: false,
        close: resp.version == Some(0),
    };
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| ReplyError::NotText(h.name.to_string()))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let len: u64 = value
                .parse()
                .map_err(|_| ReplyError::ContentLength(value.to_string()))?;
            if head.content_length.is_some_and(|l| l != len) {
                return Err(ReplyError::ConflictingLength);
            }
            head.content_length = Some(len);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ReplyError::TransferEncoding(value.to_string()));
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                head.close = true;
            }
        } else if h.name.eq_ignore_ascii_case("etag") {
            head.etag = Some(value.to_string()).filter(|v| v.len() <= 128);
        } else if h.name.eq_ignore_ascii_case("content-disposition") {
            head.disposition = Some(value.to_string()).filter(|v| v.len() <= 1024);
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            head.gzip = match value.to_ascii_lowercase().as_str() {
                "gzip" | "x-gzip" => true,
                "" | "identity" => false,
                other => return Err(ReplyError::ContentEncoding(other.to_string())),
            };
        } else if h.name.eq_ignore_ascii_case("content-range") {
            head.content_range = parse_content_range(value);
        } else if h
            .name
            .eq_ignore_ascii_case(crate::protocol::DOWNLOAD_ID_HEADER)
        {
            head.download_id = Some(value.to_string()).filter(|v| {
                v.len() <= MAX_DOWNLOAD_ID && v.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        } else if h.name.eq_ignore_ascii_case(crate::protocol::HAVE_HEADER) {
            head.have = Some(value.to_string()).filter(|v| v.len() <= MAX_BITMAP_HEX);
        } else if h.name.eq_ignore_ascii_case(crate::protocol::SLOTS_HEADER) {
            head.slots_full = value
                .parse::<u64>()
                .ok()
                .map(|ms| std::time::Duration::from_millis(ms.min(60_000)));
        } else if h
            .name
            .eq_ignore_ascii_case(crate::protocol::SLOTS_NEXT_HEADER)
        {
            head.slots_next = value == "1";
        } else if h
            .name
            .eq_ignore_ascii_case(crate::protocol::INDEXING_HEADER)
        {
            head.indexing = value.parse().ok();
        } else if h.name.eq_ignore_ascii_case(crate::protocol::FRESH_HEADER) {
            head.fresh = Some(value.to_string()).filter(|v| v.len() <= MAX_BITMAP_HEX);
        }
    }
    Ok(Some((head, used)))
}

/// `bytes a-b/size` -> `(a, b, size)`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        size.trim().parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_range_head() {
        let raw = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 0-9/100\r\n\r\nbody";
        let (head, used) = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 206);
        assert_eq!(head.content_length, Some(10));
        assert_eq!(head.framing(), Framing::Length(10));
        assert_eq!(head.content_range, Some((0, 9, 100)));
        assert!(!head.close);
        assert_eq!(&raw[used..], b"body");
    }

    #[test]
    fn partial_head_is_none_and_garbage_is_refused() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
            .unwrap()
            .is_none());
        assert!(matches!(
            parse_head(b"\x00\x01garbage\r\n\r\n"),
            Err(ReplyError::Malformed(_))
        ));
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ReplyError::TransferEncoding("chunked".into()))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(ReplyError::ConflictingLength)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(ReplyError::ContentLength("-1".into()))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n"),
            Err(ReplyError::ContentEncoding("br".into()))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nX: \xff\r\n\r\n"),
            Err(ReplyError::NotText("X".into()))
        );
    }

    #[test]
    fn connection_close_and_http10_are_not_reused() {
        let (h, _) = parse_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close);
        assert_eq!(h.framing(), Framing::UntilClose);
        let (h, _) = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(h.close);
    }

    #[test]
    fn gzip_and_the_download_id_are_read_and_a_fancy_id_ignored() {
        let (h, _) =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Encoding: GZIP\r\nX-Download-Id: ab12\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(h.gzip);
        assert_eq!(h.download_id.as_deref(), Some("ab12"));
        let (h, _) = parse_head(b"HTTP/1.1 200 OK\r\nX-Download-Id: a/b\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.download_id, None);
    }

    #[test]
    fn piece_bitmaps_are_kept_as_sent_up_to_their_bound() {
        let (h, _) =
            parse_head(b"HTTP/1.1 206 Partial Content\r\nX-Have: 0f01\r\nX-Fresh: 10\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            (h.have.as_deref(), h.fresh.as_deref()),
            (Some("0f01"), Some("10"))
        );
        let long = format!(
            "HTTP/1.1 206 Partial Content\r\nX-Have: {}\r\n\r\n",
            "0".repeat(MAX_BITMAP_HEX + 2)
        );
        let (h, _) = parse_head(long.as_bytes()).unwrap().unwrap();
        assert_eq!(h.have, None);
    }

    #[test]
    fn content_range_needs_bytes_and_three_numbers() {
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 9, 10)));
        assert_eq!(parse_content_range("bytes 5-9/*"), None);
        assert_eq!(parse_content_range("items 5-9/10"), None);
        assert_eq!(parse_content_range("bytes 5/10"), None);
    }

    #[test]
    fn a_get_request_carries_range_and_gzip_only_when_asked() {
        let r = get_request("h:1", "/v1/files", None, false);
        assert!(
            r.starts_with("GET /v1/files HTTP/1.1\r\nHost: h:1\r\n"),
            "{r}"
        );
        assert!(r.ends_with("\r\n\r\n") && !r.contains("Range") && !r.contains("gzip"));
        let r = get_request("h:1", "/x", Some((0, 9)), true);
        assert!(r.contains("\r\nRange: bytes=0-9\r\n"), "{r}");
        assert!(r.contains("\r\nAccept-Encoding: gzip\r\n"), "{r}");
    }
}
