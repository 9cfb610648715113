//! The peer wire format: HTTP/1.1 request parsing (with `httparse`), routes,
//! `Range` and conditional headers, and response heads. Bytes in, messages
//! out; no sockets and no policy about connections here (that is
//! [`crate::server`]'s, and [`crate::client`]'s for the other side).
//!
//! - [`request`]: a request head from a byte buffer, with size limits.
//! - [`route`]: which endpoint a method and raw target name.
//! - [`range`]: the `Range` header against a file size.
//! - [`conditional`]: `If-None-Match` and `If-Range` against an `ETag`.
//! - [`encoding`]: `Accept-Encoding` (gzip for the catalog).
//! - [`content_type`]: a shared file's `Content-Type` from its name.
//! - [`response`]: status lines, response heads, `Content-Disposition`, `Date`.
//! - [`reply`]: the client's side: a `GET` request, a response head read
//!   back (status, lengths, ranges, encoding) and how its body is framed.
//!
//! Every limit is a named constant below.

pub mod conditional;
pub mod content_type;
pub mod encoding;
pub mod range;
pub mod reply;
pub mod request;
pub mod response;
pub mod route;

pub use request::{parse_head, HeadError, Method, ParsedHead, RequestHead};
pub use response::{ResponseHead, Status};

/// Longest request line accepted (method, target and version), in bytes.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Largest total size of the header lines of a request, in bytes.
pub const MAX_HEADERS_BYTES: usize = 16 * 1024;
/// Most header fields accepted in one request.
pub const MAX_HEADERS: usize = 64;
/// Largest request head (request line, headers and the blank line) a reader
/// ever needs to buffer before [`parse_head`] either succeeds or refuses.
pub const MAX_HEAD_BYTES: usize = MAX_REQUEST_LINE + MAX_HEADERS_BYTES + 4;
