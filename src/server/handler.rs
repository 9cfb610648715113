//! What to answer: a parsed request in, a [`Response`] out (a head and a
//! body to send). Asks the [`FileSource`] and nothing else; the connection
//! module does the socket I/O.
//!
//! Catalog responses in flight share one serialized body per index
//! generation ([`CatalogCache`]): connections sending it, however slowly,
//! hold the same bytes, so slow catalog readers do not multiply the peer's
//! memory. A client that sends `Accept-Encoding: gzip` gets the gzip body,
//! compressed once per generation and kept (about a quarter of the JSON),
//! with `Content-Encoding: gzip`; both answers say `Vary: Accept-Encoding`
//! and each carries its own `ETag` (the generation, with `-gzip` for the
//! gzip body: [`catalog_etag`]), and `If-None-Match` is answered `304` for
//! either.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use serde::Serialize;

use super::slots::{SlotGuard, Turned};
use super::{FileSource, Page};
use crate::digest::Sha1Digest;
use crate::http::conditional::{if_range_matches, none_match};
use crate::http::content_type;
use crate::http::encoding::accepts_gzip;
use crate::http::range::{self, unsatisfiable_content_range, RangeSelection};
use crate::http::response::content_disposition;
use crate::http::route::{self, Route, ALLOW};
use crate::http::{Method, RequestHead, ResponseHead, Status};
use crate::protocol::{
    Bitfield, DOWNLOAD_ID_HEADER, FRESH_HEADER, HAVE_HEADER, INDEXING_HEADER, MAX_HAVE_WAIT,
    MAX_HEADER_PIECES, PIECES_HEADER, SLOTS_HEADER, SLOTS_NEXT_HEADER,
};

const CONTENT_TYPE_JSON: &str = "application/json";
const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
const CONTENT_TYPE_BYTES: &str = "application/octet-stream";
/// File bytes are named by their SHA1: they never change.
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The catalog changes with the index generation: revalidate (`ETag`).
const CACHE_REVALIDATE: &str = "no-cache";
/// Health, status, metrics, bitmaps: a snapshot of now.
const CACHE_NEVER: &str = "no-store";

/// The body of a response.
#[derive(Debug)]
pub(crate) enum Body {
    /// No body (304).
    Empty,
    /// A small body built in memory (JSON, error reasons).
    Bytes(Vec<u8>),
    /// A body shared between responses (the catalog).
    Shared(Arc<Vec<u8>>),
    /// `len` bytes of `file` from `start`, sent zero-copy.
    File {
        /// The open file (shared: read at an offset).
        file: Arc<File>,
        /// Its SHA1 and name (for the status page's uploads).
        sha1: Sha1Digest,
        /// Its name here.
        name: String,
        /// First byte.
        start: u64,
        /// Bytes to send.
        len: u64,
        /// The upload slot a piece answer holds (`None`: not a piece).
        slot: Option<SlotGuard>,
    },
}

/// A response: its head (without `Connection`/`Date`, which the connection
/// adds) and its body.
#[derive(Debug)]
pub(crate) struct Response {
    pub head: ResponseHead,
    pub body: Body,
}

impl Response {
    /// A `4xx`/`5xx` with a one-line plain-text reason.
    pub(crate) fn error(status: Status, reason: &str) -> Self {
        let mut line: String = reason.chars().filter(|c| !c.is_control()).collect();
        line.push('\n');
        Self::bytes(
            ResponseHead::new(status).header("Content-Type", CONTENT_TYPE_TEXT),
            line.into_bytes(),
        )
    }

    fn bytes(head: ResponseHead, body: Vec<u8>) -> Self {
        Self {
            head: head.header("Content-Length", body.len().to_string()),
            body: Body::Bytes(body),
        }
    }

    fn json(value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::bytes(
                ResponseHead::new(Status::OK).header("Content-Type", CONTENT_TYPE_JSON),
                body,
            ),
            Err(e) => {
                log::error!("bug: cannot encode a json body: {e}");
                Self::error(Status::INTERNAL_SERVER_ERROR, "cannot encode the answer")
            }
        }
    }

    /// Marks the answer as never to be stored by a cache.
    fn no_store(mut self) -> Self {
        self.head = self.head.header("Cache-Control", CACHE_NEVER);
        self
    }

    fn not_modified(etag: String) -> Self {
        Self {
            head: ResponseHead::new(Status::NOT_MODIFIED).header("ETag", etag),
            body: Body::Empty,
        }
    }
}

/// gzip level of the catalog: 6 (zlib's default) compresses a 100,000-file
/// catalog (10.6 MB of JSON, mostly hex SHA1s) to under 4 MB; it runs once
/// per generation, so a higher ratio is worth more than the speed of level 1.
const GZIP_LEVEL: u32 = 6;

/// The serialized catalog of the latest generation: plain while some
/// response still sends it, gzip for as long as the generation lasts.
///
/// It holds the plain body weakly: responses in flight share one copy (so
/// slow readers of the catalog cost its size once, not once each), and the
/// body is freed, and built again from the source on the next request,
/// once none sends it (serializing is cheap next to its size). The gzip
/// body is held strongly: it is a quarter of the size and compressing is
/// the expensive part, so it is built once per generation.
#[derive(Default)]
pub(crate) struct CatalogCache {
    current: Mutex<Option<(u64, Weak<Vec<u8>>)>>,
    gzip: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    /// Held while a new body is built, so concurrent requests for a new
    /// generation build it once (CPU work only, no I/O under it).
    building: Mutex<()>,
    /// Piece-list bodies in flight, by file, held weakly: the answers
    /// sending one list share one copy (a 100 GiB file's list is MBs).
    pieces: Mutex<HashMap<Sha1Digest, Weak<Vec<u8>>>>,
}

impl CatalogCache {
    /// `body`, the piece list of `sha1` just serialized, or the same bytes
    /// another answer is still sending (then `body` is dropped at once).
    /// Bodies no answer holds any more are forgotten here.
    fn shared_pieces(&self, sha1: Sha1Digest, body: Vec<u8>) -> Arc<Vec<u8>> {
        let mut map = self.pieces.lock();
        if let Some(live) = map.get(&sha1).and_then(Weak::upgrade) {
            if *live == body {
                return live;
            }
        }
        map.retain(|_, w| w.strong_count() > 0);
        let body = Arc::new(body);
        map.insert(sha1, Arc::downgrade(&body));
        body
    }

    /// The plain body of `generation`, if some response still holds it.
    fn shared_plain(&self, generation: u64) -> Option<(u64, Arc<Vec<u8>>)> {
        self.current
            .lock()
            .as_ref()
            .filter(|(g, _)| *g == generation)
            .and_then(|(g, body)| Some((*g, body.upgrade()?)))
    }

    /// The gzip body of `generation`, if built.
    fn shared_gzip(&self, generation: u64) -> Option<(u64, Arc<Vec<u8>>)> {
        self.gzip
            .lock()
            .as_ref()
            .filter(|(g, _)| *g == generation)
            .map(|(g, body)| (*g, body.clone()))
    }

    /// The catalog body at the source's current generation, and that
    /// generation.
    fn body(&self, source: &dyn FileSource) -> Result<(u64, Arc<Vec<u8>>), serde_json::Error> {
        if let Some(hit) = self.shared_plain(source.generation()) {
            return Ok(hit);
        }
        let _building = self.building.lock();
        if let Some(hit) = self.shared_plain(source.generation()) {
            return Ok(hit);
        }
        let (generation, body) = source.file_list_json()?;
        // An `Arc<Vec>`, not an `Arc<[u8]>`: the `Weak` kept here must not
        // keep 10 MB alive once no response holds the body.
        let body = Arc::new(body);
        *self.current.lock() = Some((generation, Arc::downgrade(&body)));
        Ok((generation, body))
    }

    /// The gzip catalog body at the source's current generation, and that
    /// generation: compressed from the plain body if one is in flight, else
    /// from one written for it (and dropped once compressed).
    fn gzip_body(&self, source: &dyn FileSource) -> Result<(u64, Arc<Vec<u8>>), serde_json::Error> {
        if let Some(hit) = self.shared_gzip(source.generation()) {
            return Ok(hit);
        }
        let _building = self.building.lock();
        let generation = source.generation();
        if let Some(hit) = self.shared_gzip(generation) {
            return Ok(hit);
        }
        let level = flate2::Compression::new(GZIP_LEVEL);
        let (generation, compressed) = match self.shared_plain(generation) {
            Some((g, plain)) => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::with_capacity(plain.len() / 3), level);
                std::io::Write::write_all(&mut enc, &plain).map_err(serde_json::Error::io)?;
                (g, enc.finish().map_err(serde_json::Error::io)?)
            }
            None => {
                let (generation, plain) = source.file_list_json()?;
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::with_capacity(plain.len() / 3), level);
                std::io::Write::write_all(&mut enc, &plain).map_err(serde_json::Error::io)?;
                (generation, enc.finish().map_err(serde_json::Error::io)?)
            }
        };
        let mut compressed = compressed;
        compressed.shrink_to_fit();
        let body = Arc::new(compressed);
        *self.gzip.lock() = Some((generation, body.clone()));
        Ok((generation, body))
    }
}

/// What a `have` request that may wait waits for: a piece of `want` held
/// by the partial file `sha1`, until `until`.
#[derive(Debug, Clone)]
pub(crate) struct HaveWait {
    pub sha1: Sha1Digest,
    pub want: Bitfield,
    pub until: std::time::Instant,
}

impl HaveWait {
    /// True once the wait is over: the file holds a wanted piece, is no
    /// longer partial, or is not served.
    pub fn satisfied(&self, source: &dyn FileSource) -> bool {
        match source.have(&self.sha1) {
            Some(have) => {
                have.len() != self.want.len() || have.is_full() || have.intersects(&self.want)
            }
            None => true,
        }
    }
}

/// A request for a partial file's bitmap (`/have`, with a wait or not):
/// the download asking has nothing to ask of this holder now, so the
/// upload slot it holds here with no answer in progress is given to
/// another at once ([`super::slots::Slots::idle`]), and it may wait
/// ([`PartialHave::wait`]).
pub(crate) struct PartialHave {
    sha1: Sha1Digest,
    have: Bitfield,
}

impl PartialHave {
    /// `Some` if `request` asks the bitmap of a file this peer holds
    /// only in part.
    pub(crate) fn of(request: &RequestHead, source: &dyn FileSource) -> Option<PartialHave> {
        if request.method != Method::Get {
            return None;
        }
        let Ok(Route::Have(sha1)) = route::route(&request.method, &request.target) else {
            return None;
        };
        let have = source.have(&sha1).filter(|have| !have.is_full())?;
        Some(PartialHave { sha1, have })
    }

    /// `have?wait=<ms>&want=<hex bitmap>` that holds none of the wanted
    /// pieces now: what to wait for (at most [`MAX_HAVE_WAIT`]). `None`:
    /// answer at once (no or a malformed query, a wanted piece held).
    pub(crate) fn wait(self, request: &RequestHead) -> Option<HaveWait> {
        let PartialHave { sha1, have } = self;
        let query = request.target.split_once('?')?.1;
        let (mut wait, mut want) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("wait", ms)) => wait = ms.parse::<u64>().ok(),
                Some(("want", hex)) => want = Some(hex),
                _ => {}
            }
        }
        let wait = std::time::Duration::from_millis(wait?).min(MAX_HAVE_WAIT);
        let want = Bitfield::from_hex(want?, have.len())?;
        (!wait.is_zero() && !have.intersects(&want)).then(|| HaveWait {
            sha1,
            want,
            until: std::time::Instant::now() + wait,
        })
    }
}

/// `plain` in gzip at the fastest level.
fn gzip_fast(plain: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(plain.len() / 2 + 64),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut enc, plain)?;
    enc.finish()
}

/// The answer to `request` (`slot` asks for an upload slot for the
/// client, piece requests only, or says how long until the slots rotate). Every answer says `X-Content-Type-Options:
/// nosniff`: its `Content-Type` is the only one a browser may use.
pub(crate) fn handle(
    request: &RequestHead,
    source: &dyn FileSource,
    catalog: &CatalogCache,
    slot: &dyn Fn() -> Result<SlotGuard, Turned>,
) -> Response {
    let mut response = answer(request, source, catalog, slot);
    response.head = response.head.header("X-Content-Type-Options", "nosniff");
    response
}

fn answer(
    request: &RequestHead,
    source: &dyn FileSource,
    catalog: &CatalogCache,
    slot: &dyn Fn() -> Result<SlotGuard, Turned>,
) -> Response {
    let route = match route::route(&request.method, &request.target) {
        Ok(route) => route,
        Err(e) => {
            let mut response = Response::error(e.status(), &e.to_string());
            if e.status() == Status::METHOD_NOT_ALLOWED {
                response.head = response.head.header("Allow", ALLOW);
            }
            return response;
        }
    };
    match route {
        Route::Page => page(Page::Status, source),
        Route::Status => page(Page::StatusJson, source),
        Route::Metrics => page(Page::Metrics, source),
        Route::Health => Response::json(&source.health()).no_store(),
        Route::FileList => file_list(request, source, catalog),
        Route::Pieces(sha1) => match source.pieces(&sha1) {
            Some(pieces) => match serde_json::to_vec(&pieces) {
                Ok(body) => {
                    // In gzip when asked (a download does): the chaining
                    // values' hex halves, and 47 downloads of a flash crowd
                    // fetch the seed's list over its uplink beside its
                    // first pieces. Compressed per answer, at the fastest
                    // level (about 50 us for 10 KiB).
                    let gzipped = accepts_gzip(request.header_values("accept-encoding"))
                        .then(|| gzip_fast(&body))
                        .and_then(Result::ok);
                    let mut head = ResponseHead::new(Status::OK)
                        .header("Content-Type", CONTENT_TYPE_JSON)
                        .header("Vary", "Accept-Encoding");
                    let (body, len) = match gzipped {
                        Some(z) => {
                            head = head.header("Content-Encoding", "gzip");
                            let len = z.len();
                            (Body::Bytes(z), len)
                        }
                        None => {
                            let shared = catalog.shared_pieces(sha1, body);
                            let len = shared.len();
                            (Body::Shared(shared), len)
                        }
                    };
                    head = head.header("Content-Length", len.to_string());
                    // A partial file's bitmap rides along (as on its
                    // pieces): a download that takes this holder starts
                    // from it instead of asking `/have` first.
                    if let Some(have) = source
                        .have(&sha1)
                        .filter(|h| !h.is_full() && h.len() <= MAX_HEADER_PIECES)
                    {
                        head = head
                            .header("Cache-Control", CACHE_NEVER)
                            .header(HAVE_HEADER, have.to_hex());
                    }
                    Response { head, body }
                }
                Err(e) => {
                    log::error!("bug: cannot encode a piece list: {e}");
                    Response::error(Status::INTERNAL_SERVER_ERROR, "cannot encode the answer")
                }
            },
            None => not_served(&sha1, source),
        },
        Route::Have(sha1) => match source.have(&sha1) {
            Some(have) => {
                let mut body = have.as_bytes().to_vec();
                if let Some(fresh) = source
                    .fresh(&sha1, have.len())
                    .filter(|f| f.len() == have.len())
                {
                    body.extend_from_slice(fresh.as_bytes());
                }
                let mut head = ResponseHead::new(Status::OK)
                    .header("Content-Type", CONTENT_TYPE_BYTES)
                    .header("Cache-Control", CACHE_NEVER)
                    .header(PIECES_HEADER, have.len().to_string());
                if let Some(id) = source.download_id(&sha1) {
                    head = head.header(DOWNLOAD_ID_HEADER, id);
                }
                Response::bytes(head, body)
            }
            None => not_served(&sha1, source),
        },
        Route::File(sha1) => file(request, source, &sha1, slot),
    }
}

/// A page the source renders (the status page, its JSON, the metrics);
/// without one, `/metrics` has the process counters and the others `404`.
fn page(page: Page, source: &dyn FileSource) -> Response {
    let response = match source.page(page) {
        Ok(Some(p)) => {
            let mut head = ResponseHead::new(Status::OK).header("Content-Type", p.content_type);
            for (name, value) in p.headers {
                head = head.header(name, value);
            }
            Response {
                head: head.header("Content-Length", p.body.len().to_string()),
                body: Body::Shared(p.body),
            }
        }
        Ok(None) if page == Page::Metrics => Response::bytes(
            ResponseHead::new(Status::OK).header("Content-Type", crate::metrics::CONTENT_TYPE),
            crate::metrics::render(&[]).into_bytes(),
        ),
        Ok(None) => Response::error(
            Status::NOT_FOUND,
            "this server has no status: it serves files only",
        ),
        Err(e) => {
            log::error!("bug: cannot encode a json body: {e}");
            Response::error(Status::INTERNAL_SERVER_ERROR, "cannot encode the answer")
        }
    };
    response.no_store()
}

/// `404` for a file this peer does not serve; while its index is still
/// being built, with [`INDEXING_HEADER`] (the file may yet appear: ask
/// again).
fn not_served(sha1: &Sha1Digest, source: &dyn FileSource) -> Response {
    match source.indexing() {
        Some(files) => {
            let mut response = Response::error(
                Status::NOT_FOUND,
                &format!("file {sha1} is not indexed here yet: this peer is still indexing"),
            );
            response.head = response
                .head
                .header(INDEXING_HEADER, files.to_string())
                .header("Cache-Control", CACHE_NEVER);
            response
        }
        None => Response::error(
            Status::NOT_FOUND,
            &format!("file {sha1} is not served here: ask another peer"),
        ),
    }
}

/// The `ETag` of the catalog at `generation` in one encoding: `"<gen>"`
/// for the JSON, `"<gen>-gzip"` for its gzip body. The two bodies differ,
/// so they may not share a strong tag (RFC 9110 section 8.8.3): a cache
/// holding both tells them apart, and `If-None-Match` is compared with the
/// tag of the representation that would be sent.
pub(crate) fn catalog_etag(generation: u64, gzip: bool) -> String {
    if gzip {
        format!("\"{generation}-gzip\"")
    } else {
        format!("\"{generation}\"")
    }
}

fn file_list(request: &RequestHead, source: &dyn FileSource, catalog: &CatalogCache) -> Response {
    let gzip = accepts_gzip(request.header_values("accept-encoding"));
    let current = catalog_etag(source.generation(), gzip);
    if none_match(request.header_values("if-none-match"), &current) {
        let mut response = Response::not_modified(current);
        response.head = response
            .head
            .header("Cache-Control", CACHE_REVALIDATE)
            .header("Vary", "Accept-Encoding");
        return response;
    }
    let built = if gzip {
        catalog.gzip_body(source)
    } else {
        catalog.body(source)
    };
    match built {
        Ok((generation, body)) => {
            let mut head = ResponseHead::new(Status::OK)
                .header("Content-Type", CONTENT_TYPE_JSON)
                .header("ETag", catalog_etag(generation, gzip))
                .header("Cache-Control", CACHE_REVALIDATE)
                .header("Vary", "Accept-Encoding");
            if gzip {
                head = head.header("Content-Encoding", "gzip");
            }
            Response {
                head: head.header("Content-Length", body.len().to_string()),
                body: Body::Shared(body),
            }
        }
        Err(e) => {
            log::error!("bug: cannot encode the catalog: {e}");
            Response::error(Status::INTERNAL_SERVER_ERROR, "cannot encode the answer")
        }
    }
}

/// `503` at once, without a body, for a piece request while every upload
/// slot is taken: `Retry-After` in whole seconds, `X-Slots` the time to
/// the next rotation in milliseconds, `X-Slots-Next: 1` if this client
/// gets a slot then.
fn slots_full(turned: Turned) -> Response {
    let Turned { retry_after, next } = turned;
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut head = ResponseHead::new(Status::SERVICE_UNAVAILABLE)
        .header("Retry-After", secs.max(1).to_string())
        .header(SLOTS_HEADER, retry_after.as_millis().to_string())
        .header("Cache-Control", CACHE_NEVER);
    if next {
        head = head.header(SLOTS_NEXT_HEADER, "1");
    }
    Response::bytes(head, Vec::new())
}

fn file(
    request: &RequestHead,
    source: &dyn FileSource,
    sha1: &Sha1Digest,
    gate: &dyn Fn() -> Result<SlotGuard, Turned>,
) -> Response {
    let opened = match source.open(sha1) {
        Ok(Some(opened)) => opened,
        Ok(None) => return not_served(sha1, source),
        Err(e) => {
            log::error!("cannot open file {sha1}: {e}");
            return Response::error(
                Status::INTERNAL_SERVER_ERROR,
                &format!("cannot open file {sha1} on this peer: ask another peer"),
            );
        }
    };
    let etag = format!("\"{sha1}\"");
    if none_match(request.header_values("if-none-match"), &etag) {
        let mut response = Response::not_modified(etag);
        response.head = response.head.header("Cache-Control", CACHE_IMMUTABLE);
        return response;
    }
    let size = opened.size;
    // RFC 9110 section 14.2: Range applies to GET only; If-Range guards it.
    let range_header = match request.method {
        Method::Get => request.single_header("range").filter(|_| {
            request
                .single_header("if-range")
                .is_none_or(|v| if_range_matches(v, &etag))
        }),
        _ => None,
    };
    let selection = range::select(range_header, size);
    let head = |status| {
        ResponseHead::new(status)
            .header("Accept-Ranges", "bytes")
            .header("ETag", etag.clone())
            .header("Cache-Control", CACHE_IMMUTABLE)
    };
    // A partial file: only ranges inside the pieces held.
    let wanted = match &selection {
        RangeSelection::Full => Some((0, size)),
        RangeSelection::Partial(r) => Some((r.start, r.start + r.len())),
        RangeSelection::Unsatisfiable => None,
    };
    if let (Some((start, end)), Some((have, piece_size))) = (wanted, &opened.held) {
        if !have.covers(*piece_size, start, end) {
            let mut response = Response::error(
                Status::RANGE_NOT_SATISFIABLE,
                "this peer holds only some pieces of this file: ask for a range inside them (see /have)",
            );
            response.head = response
                .head
                .header("Content-Range", unsatisfiable_content_range(size))
                .header("Accept-Ranges", "bytes");
            return response;
        }
    }
    let (head, start, len) = match selection {
        RangeSelection::Full => (head(Status::OK), 0, size),
        RangeSelection::Partial(r) => (
            head(Status::PARTIAL_CONTENT).header("Content-Range", r.content_range(size)),
            r.start,
            r.len(),
        ),
        RangeSelection::Unsatisfiable => {
            let mut response = Response::error(
                Status::RANGE_NOT_SATISFIABLE,
                &format!("range not satisfiable: the file has {size} bytes"),
            );
            response.head = response
                .head
                .header("Content-Range", unsatisfiable_content_range(size))
                .header("Accept-Ranges", "bytes");
            return response;
        }
    };
    // Only range requests count for super-seeding: a whole-file download
    // (curl) is not a swarm member that will pass pieces on.
    let mut head = head;
    let mut slot = None;
    if request.method == Method::Get && len < size {
        // A piece: served within the upload slots, else turned away now.
        match gate() {
            Ok(g) => slot = Some(g),
            Err(turned) => return slots_full(turned),
        }
        // The downloader's view of this peer rides on each piece: a partial
        // holder's pieces, a seed's least-uploaded ones (after counting
        // this one), so it need not ask `have` between pieces.
        match &opened.held {
            Some((have, _)) if have.len() <= MAX_HEADER_PIECES => {
                head = head.header(HAVE_HEADER, have.to_hex());
            }
            Some(_) => {}
            None => {
                source.note_upload(sha1, start, len);
                if let Some(fresh) = source.fresh(sha1, MAX_HEADER_PIECES) {
                    head = head.header(FRESH_HEADER, fresh.to_hex());
                }
            }
        }
    } else if request.method == Method::Head && opened.held.is_none() && len == size {
        // A lookup found this peer holding the whole file: it announces
        // itself in the tracker, so the next lookups find it there.
        source.note_asked(sha1);
    }
    let head = head
        .header("Content-Type", content_type::for_name(&opened.name))
        .header(
            "Content-Disposition",
            content_disposition(&opened.name, &sha1.to_hex()),
        )
        .header("Content-Length", len.to_string());
    Response {
        head,
        body: Body::File {
            file: opened.file,
            sha1: *sha1,
            name: opened.name,
            start,
            len,
            slot,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FileList, Health, PieceList};
    use crate::server::OpenedFile;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A source with an empty catalog that counts how often it is listed.
    #[derive(Default)]
    struct Counting {
        generation: AtomicU64,
        lists: AtomicU64,
    }

    impl FileSource for Counting {
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
        fn file_list(&self) -> FileList {
            self.lists.fetch_add(1, Ordering::SeqCst);
            FileList {
                generation: self.generation(),
                files: Vec::new(),
            }
        }
        fn pieces(&self, _: &Sha1Digest) -> Option<PieceList> {
            None
        }
        fn open(&self, _: &Sha1Digest) -> std::io::Result<Option<OpenedFile>> {
            Ok(None)
        }
        fn health(&self) -> Health {
            unreachable!("not asked here")
        }
    }

    #[test]
    fn catalog_bodies_in_flight_are_shared_per_generation() {
        let source = Counting::default();
        let cache = CatalogCache::default();
        let (g1, a) = cache.body(&source).unwrap();
        let (_, b) = cache.body(&source).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "two responses in flight share one body"
        );
        assert_eq!(source.lists.load(Ordering::SeqCst), 1);

        source.generation.store(7, Ordering::SeqCst);
        let (g2, c) = cache.body(&source).unwrap();
        assert_eq!((g1, g2), (0, 7));
        assert!(!Arc::ptr_eq(&a, &c), "a new generation gets a new body");
        assert_eq!(source.lists.load(Ordering::SeqCst), 2);

        drop((a, b, c));
        cache.body(&source).unwrap();
        assert_eq!(
            source.lists.load(Ordering::SeqCst),
            3,
            "once nothing sends it, the body is freed and built again"
        );
    }

    #[test]
    fn piece_list_bodies_in_flight_are_shared_and_then_forgotten() {
        let cache = CatalogCache::default();
        let (x, y) = (Sha1Digest::of(b"x"), Sha1Digest::of(b"y"));
        let a = cache.shared_pieces(x, b"list x".to_vec());
        let b = cache.shared_pieces(x, b"list x".to_vec());
        assert!(Arc::ptr_eq(&a, &b), "one copy while answers send it");
        let other = cache.shared_pieces(x, b"list x, v2".to_vec());
        assert!(!Arc::ptr_eq(&a, &other), "other bytes are never swapped in");
        drop((a, b, other));
        let c = cache.shared_pieces(y, b"list y".to_vec());
        assert_eq!(cache.pieces.lock().len(), 1, "dead bodies forgotten");
        assert_eq!(*c, b"list y".to_vec());
    }

    #[test]
    fn the_gzip_catalog_is_built_once_per_generation_and_inflates_to_the_plain_one() {
        use std::io::Read;
        let source = Counting::default();
        let cache = CatalogCache::default();
        let (g, z1) = cache.gzip_body(&source).unwrap();
        let (_, z2) = cache.gzip_body(&source).unwrap();
        assert!(Arc::ptr_eq(&z1, &z2), "one gzip body per generation");
        drop(z2);
        let (_, z3) = cache.gzip_body(&source).unwrap();
        assert!(
            Arc::ptr_eq(&z1, &z3),
            "kept while the generation lasts, even when nothing sends it"
        );
        assert_eq!(source.lists.load(Ordering::SeqCst), 1);
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&z1[..])
            .read_to_end(&mut inflated)
            .unwrap();
        let (g2, plain) = cache.body(&source).unwrap();
        assert_eq!((g, &inflated[..]), (g2, &plain[..]));

        source.generation.store(9, Ordering::SeqCst);
        let (g, z4) = cache.gzip_body(&source).unwrap();
        assert_eq!(g, 9);
        assert!(!Arc::ptr_eq(&z1, &z4), "a new generation gets a new body");
    }
}
