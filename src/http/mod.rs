//! The peer wire format: HTTP/1.1 request parsing (with `httparse`), `Range`
//! parsing and response heads. Bytes in, messages out; no sockets here.
