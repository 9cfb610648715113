//! Integration tests of the peer server: a real `Server` on 127.0.0.1:0
//! over real files in a temp dir, spoken to over real sockets (raw
//! `TcpStream` writes, ureq, curl, aria2c).

mod fairness;
mod have_wait;
mod hostile;
mod interop;
mod overload;
mod support;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use piratebay_sync::protocol::{FileList, Health, PieceList};
use piratebay_sync::{Server, ServerConfig, Sha1Digest};

use support::*;

const MISSING: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn health_answers_json() {
    let fx = Fixture::start(test_config("th-health"));
    let answer = get(fx.addr(), "/v1/health");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let health: Health = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(health.status, "ok");
    assert_eq!(health.id.as_deref(), Some("test-peer"));
    assert!(answer.header("date").is_some_and(|d| d.ends_with(" GMT")));
}

#[test]
fn a_source_without_status_has_no_page_but_still_metrics() {
    let fx = Fixture::start(test_config("th-nostatus"));
    for path in ["/", "/v1/status"] {
        let answer = get(fx.addr(), path);
        assert_eq!(answer.status, 404, "{path}");
        assert!(
            answer.text().contains("no status"),
            "{path}: {}",
            answer.text()
        );
    }
    let metrics = get(fx.addr(), "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("cache-control"), Some("no-store"));
    let text = metrics.text();
    assert!(
        text.contains("# TYPE pbs_served_bytes_total counter"),
        "{text}"
    );
    assert!(
        !text.contains("pbs_index_files"),
        "no peer, no index: {text}"
    );
}

#[test]
fn file_list_has_generation_etag_and_304() {
    let fx = Fixture::start(test_config("th-list"));
    let (sha1, _) = fx.add_file("a.bin", b"hello");
    let answer = get(fx.addr(), "/v1/files");
    assert_eq!(answer.status, 200);
    let list: FileList = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(list.files.len(), 1);
    assert_eq!(list.files[0].sha1, sha1);
    assert_eq!(list.files[0].size, 5);
    assert_eq!(list.files[0].name, "a.bin");
    let etag = format!("\"{}\"", list.generation);
    assert_eq!(answer.header("etag"), Some(etag.as_str()));

    let cached = request(
        fx.addr(),
        "GET",
        "/v1/files",
        &[&format!("If-None-Match: {etag}")],
    );
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), Some(etag.as_str()));

    let star = request(fx.addr(), "GET", "/v1/files", &["If-None-Match: *"]);
    assert_eq!(star.status, 304);

    fx.add_file("b.bin", b"world");
    let stale = request(
        fx.addr(),
        "GET",
        "/v1/files",
        &[&format!("If-None-Match: {etag}")],
    );
    assert_eq!(stale.status, 200, "a new generation must not be 304");
    let list: FileList = serde_json::from_slice(&stale.body).unwrap();
    assert_eq!(list.files.len(), 2);
}

/// Each representation of the catalog has its own `ETag` (REDbot's
/// VARY_ETAG_DOESNT_CHANGE), and `If-None-Match` gives `304` for each,
/// compared with the tag of the encoding that would be sent.
#[test]
fn file_list_in_gzip_when_asked_with_its_own_etag_and_304_for_each_encoding() {
    let fx = Fixture::start(test_config("th-gzip"));
    for i in 0..200 {
        fx.add_file(&format!("f{i:03}.bin"), format!("content {i}").as_bytes());
    }
    let plain = get(fx.addr(), "/v1/files");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    let zipped = request(
        fx.addr(),
        "GET",
        "/v1/files",
        &["Accept-Encoding: br, gzip;q=0.8"],
    );
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("vary"), Some("Accept-Encoding"));
    assert_eq!(
        zipped.header("content-length"),
        Some(zipped.body.len().to_string().as_str())
    );
    assert!(
        zipped.body.len() * 2 < plain.body.len(),
        "gzip {} bytes, plain {}",
        zipped.body.len(),
        plain.body.len()
    );
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&zipped.body[..])
        .read_to_end(&mut inflated)
        .unwrap();
    assert!(inflated == plain.body, "gzip inflates to the plain catalog");

    // Two bodies, two tags, both naming the generation the body carries.
    let list: FileList = serde_json::from_slice(&plain.body).unwrap();
    let plain_tag = plain.header("etag").unwrap().to_string();
    let gzip_tag = zipped.header("etag").unwrap().to_string();
    assert_eq!(plain_tag, format!("\"{}\"", list.generation));
    assert_eq!(gzip_tag, format!("\"{}-gzip\"", list.generation));

    let refused = request(
        fx.addr(),
        "GET",
        "/v1/files",
        &["Accept-Encoding: gzip;q=0"],
    );
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.header("etag"), Some(plain_tag.as_str()));
    assert!(refused.body == plain.body);

    // Each encoding revalidates with its own tag (weak or strong, or in a
    // list); the other encoding's tag gets that encoding's full body.
    let ask = |gzip: bool, tag: &str| {
        let inm = format!("If-None-Match: {tag}");
        let headers: Vec<&str> = if gzip {
            vec!["Accept-Encoding: gzip", &inm]
        } else {
            vec![&inm]
        };
        request(fx.addr(), "GET", "/v1/files", &headers)
    };
    for (gzip, mine, other) in [
        (false, &plain_tag, &gzip_tag),
        (true, &gzip_tag, &plain_tag),
    ] {
        for tag in [mine.clone(), format!("W/{mine}"), format!("\"1\", {mine}")] {
            let cached = ask(gzip, &tag);
            assert_eq!(cached.status, 304, "gzip {gzip}, If-None-Match {tag}");
            assert!(cached.body.is_empty());
            assert_eq!(cached.header("etag"), Some(mine.as_str()));
            assert_eq!(cached.header("vary"), Some("Accept-Encoding"));
            assert_eq!(cached.header("cache-control"), Some("no-cache"));
        }
        let full = ask(gzip, other);
        assert_eq!(full.status, 200, "gzip {gzip}, If-None-Match {other}");
        assert_eq!(full.header("etag"), Some(mine.as_str()));
        assert_eq!(full.header("content-encoding").is_some(), gzip);
        assert!(!full.body.is_empty());
    }

    // A new generation: neither old tag matches.
    fx.add_file("new.bin", b"new");
    for (gzip, tag) in [(false, &plain_tag), (true, &gzip_tag)] {
        let stale = ask(gzip, tag);
        assert_eq!(stale.status, 200, "gzip {gzip}: a new generation");
        assert_ne!(stale.header("etag"), Some(tag.as_str()));
    }
}

#[test]
fn file_get_and_head_send_bytes_and_headers() {
    let fx = Fixture::start(test_config("th-file"));
    let content = data(300_000, 1);
    let (sha1, _) = fx.add_file("data.bin", &content);
    let path = format!("/v1/files/{sha1}");

    let answer = get(fx.addr(), &path);
    assert_eq!(answer.status, 200);
    assert!(answer.body == content, "body differs from the file");
    assert_eq!(answer.header("content-length"), Some("300000"));
    assert_eq!(answer.header("accept-ranges"), Some("bytes"));
    assert_eq!(answer.header("etag"), Some(format!("\"{sha1}\"").as_str()));
    assert_eq!(
        answer.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        answer.header("content-disposition"),
        Some("attachment; filename=\"data.bin\"")
    );

    let head = request(fx.addr(), "HEAD", &path, &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("300000"));
    // HEAD ignores Range (RFC 9110 section 14.2).
    let head_range = request(fx.addr(), "HEAD", &path, &["Range: bytes=0-9"]);
    assert_eq!(head_range.status, 200);

    let cached = request(
        fx.addr(),
        "GET",
        &path,
        &[&format!("If-None-Match: \"{sha1}\"")],
    );
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
}

#[test]
fn empty_file_is_served() {
    let fx = Fixture::start(test_config("th-empty"));
    let (sha1, _) = fx.add_file("empty", b"");
    let answer = get(fx.addr(), &format!("/v1/files/{sha1}"));
    assert_eq!(answer.status, 200);
    assert!(answer.body.is_empty());
    let range = request(
        fx.addr(),
        "GET",
        &format!("/v1/files/{sha1}"),
        &["Range: bytes=0-"],
    );
    assert_eq!(range.status, 416);
    assert_eq!(range.header("content-range"), Some("bytes */0"));
}

/// Expected answer to a range request: status and the inclusive byte span.
type RangeExpect = (u16, Option<(usize, usize)>);

/// A range request and what must come back: status, the byte span of the
/// file expected in the body, and the `Content-Range`.
fn check_range(
    fx: &Fixture,
    sha1: &Sha1Digest,
    content: &[u8],
    range: &str,
    expected: RangeExpect,
) {
    let answer = request(
        fx.addr(),
        "GET",
        &format!("/v1/files/{sha1}"),
        &[&format!("Range: {range}")],
    );
    let (status, span) = expected;
    assert_eq!(answer.status, status, "Range: {range}: {}", answer.text());
    let size = content.len();
    match (status, span) {
        (206, Some((a, b))) => {
            assert!(answer.body == content[a..=b], "Range: {range}: wrong bytes");
            assert_eq!(
                answer.header("content-range"),
                Some(format!("bytes {a}-{b}/{size}").as_str())
            );
            assert_eq!(
                answer.header("content-length"),
                Some((b - a + 1).to_string().as_str())
            );
        }
        (200, _) => assert!(
            answer.body == content,
            "Range: {range}: expected the whole file"
        ),
        (416, _) => {
            assert_eq!(
                answer.header("content-range"),
                Some(format!("bytes */{size}").as_str())
            );
            assert!(answer.text().contains("not satisfiable"));
        }
        _ => unreachable!("bad test case"),
    }
}

#[test]
fn ranges() {
    let fx = Fixture::start(test_config("th-range"));
    let content = data(1000, 2);
    let (sha1, _) = fx.add_file("r.bin", &content);
    let cases: &[(&str, RangeExpect)] = &[
        ("bytes=0-0", (206, Some((0, 0)))),
        ("bytes=100-199", (206, Some((100, 199)))),
        ("bytes=500-", (206, Some((500, 999)))),
        ("bytes=-100", (206, Some((900, 999)))),
        ("bytes=-5000", (206, Some((0, 999)))),
        ("bytes=900-5000", (206, Some((900, 999)))),
        ("bytes=0-99999999999999999999999", (206, Some((0, 999)))),
        ("bytes=1000-", (416, None)),
        ("bytes=5000-6000", (416, None)),
        ("bytes=99999999999999999999999-", (416, None)),
        ("bytes=-0", (416, None)),
        ("bytes=200-100", (200, None)),
        ("bytes=-5-10", (200, None)),
        ("bytes=a-b", (200, None)),
        ("items=0-10", (200, None)),
        ("bytes=0-1,5-6", (200, None)),
    ];
    for (range, expected) in cases {
        check_range(&fx, &sha1, &content, range, *expected);
    }
    // If-Range: the range applies only while the ETag matches.
    let path = format!("/v1/files/{sha1}");
    let matching = request(
        fx.addr(),
        "GET",
        &path,
        &["Range: bytes=0-9", &format!("If-Range: \"{sha1}\"")],
    );
    assert_eq!(matching.status, 206);
    let stale = request(
        fx.addr(),
        "GET",
        &path,
        &["Range: bytes=0-9", "If-Range: \"other\""],
    );
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body.len(), 1000);
}

#[test]
fn pieces_and_errors() {
    let fx = Fixture::start(test_config("th-pieces"));
    let content = data(200_000, 3);
    let (sha1, path) = fx.add_file("p.bin", &content);

    let answer = get(fx.addr(), &format!("/v1/files/{sha1}/pieces"));
    assert_eq!(answer.status, 200);
    let pieces: PieceList = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(pieces.sha1, sha1);
    assert_eq!(pieces.size, 200_000);
    assert_eq!(pieces.form, "sha1-chain");
    assert_eq!(pieces.len(), 4);
    assert_eq!(pieces.chain.len(), 3);
    assert_eq!(pieces, PieceList::of_content(&content));
    assert!(pieces.verify(0, &content[..PIECE_SIZE as usize]));
    // Asked in gzip (as a download asks): the same list, smaller.
    let gz = request(
        fx.addr(),
        "GET",
        &format!("/v1/files/{sha1}/pieces"),
        &["Accept-Encoding: gzip"],
    );
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut inflated = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&gz.body[..]),
        &mut inflated,
    )
    .unwrap();
    assert_eq!(inflated, answer.body);
    assert_eq!(
        answer.header("content-encoding"),
        None,
        "plain when not asked"
    );

    let check_error = |method: &str, target: &str, status: u16| {
        let answer = request(fx.addr(), method, target, &[]);
        assert_eq!(answer.status, status, "{method} {target}");
        let text = answer.text();
        if method == "HEAD" {
            assert!(text.is_empty(), "HEAD has no body");
            return answer;
        }
        assert!(
            text.ends_with('\n') && text.trim_end().lines().count() == 1,
            "one-line reason, got {text:?}"
        );
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        answer
    };
    check_error("GET", &format!("/v1/files/{MISSING}"), 404);
    check_error("GET", &format!("/v1/files/{MISSING}/pieces"), 404);
    check_error("HEAD", &format!("/v1/files/{MISSING}"), 404);
    check_error("GET", "/v1/files/not-a-sha1", 400);
    check_error("GET", "/v1/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 400);
    check_error("GET", "/v1/files/../../etc/passwd", 404);
    check_error("GET", "/etc/passwd", 404);
    check_error("GET", "/", 404);
    let post = check_error("POST", "/v1/files", 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    check_error("DELETE", &format!("/v1/files/{sha1}"), 405);

    // open() failing with an I/O error is a 500.
    std::fs::remove_file(&path).unwrap();
    check_error("GET", &format!("/v1/files/{sha1}"), 500);
}

#[test]
fn content_disposition_escapes_names() {
    let fx = Fixture::start(test_config("th-name"));
    let (sha1, _) = fx.add_file("say \"hi\" é.txt", b"x");
    let answer = get(fx.addr(), &format!("/v1/files/{sha1}"));
    assert_eq!(
        answer.header("content-disposition"),
        Some("attachment; filename=\"say \\\"hi\\\" _.txt\"; filename*=UTF-8''say%20%22hi%22%20%C3%A9.txt")
    );
}

/// The type comes from the name (`http::content_type` has the full
/// table); active content gets none a browser would render, and every
/// file is an attachment that may not be sniffed.
#[test]
fn file_content_type_comes_from_the_name_and_active_content_is_never_inline() {
    let fx = Fixture::start(test_config("th-ctype"));
    for (name, want) in [
        ("photo.JPG", "image/jpeg"),
        ("clip.mp4", "video/mp4"),
        ("paper.pdf", "application/pdf"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("page.html", "application/octet-stream"),
        ("logo.svg", "application/octet-stream"),
        ("feed.xml", "application/octet-stream"),
        ("data.bin", "application/octet-stream"),
    ] {
        let (sha1, _) = fx.add_file(name, format!("<b>{name}</b>").as_bytes());
        let path = format!("/v1/files/{sha1}");
        for answer in [
            get(fx.addr(), &path),
            request(fx.addr(), "HEAD", &path, &[]),
            request(fx.addr(), "GET", &path, &["Range: bytes=0-1"]),
        ] {
            assert!(matches!(answer.status, 200 | 206), "{name}");
            assert_eq!(answer.header("content-type"), Some(want), "{name}");
            assert_eq!(
                answer.header("x-content-type-options"),
                Some("nosniff"),
                "{name}"
            );
            let disposition = answer.header("content-disposition").unwrap_or_default();
            assert!(
                disposition.starts_with("attachment;"),
                "{name}: {disposition}"
            );
        }
    }
    // The other answers may not be sniffed either.
    for path in ["/v1/health", "/v1/files", &format!("/v1/files/{MISSING}")] {
        let answer = get(fx.addr(), path);
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let fx = Fixture::start(test_config("th-keep"));
    let content = data(100_000, 4);
    let (sha1, _) = fx.add_file("k.bin", &content);
    let mut stream = connect(fx.addr());
    let mut received = Vec::new();
    let mut chunk = [0u8; 65536];
    for (i, path) in ["/v1/health".to_owned(), format!("/v1/files/{sha1}")]
        .iter()
        .enumerate()
    {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let answer = loop {
            if let Some((answer, rest)) = parse_answer(&received, false) {
                assert!(rest.is_empty());
                break answer;
            }
            let n = stream.read(&mut chunk).unwrap();
            assert!(
                n > 0,
                "server closed a keep-alive connection after {i} answers"
            );
            received.extend_from_slice(&chunk[..n]);
        };
        received.clear();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("connection"), Some("keep-alive"));
        if i == 1 {
            assert!(answer.body == content);
        }
    }
    // Pipelined: two requests in one write, two answers in order, then close.
    let pipelined = format!(
        "GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/files/{sha1}/pieces HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(pipelined.as_bytes()).unwrap();
    let bytes = read_to_close(&mut stream);
    let (first, rest) = parse_answer(&bytes, false).unwrap();
    let (second, rest) = parse_answer(rest, false).unwrap();
    assert!(rest.is_empty());
    assert_eq!(first.status, 200);
    assert!(serde_json::from_slice::<Health>(&first.body).is_ok());
    assert_eq!(second.status, 200);
    assert_eq!(second.header("connection"), Some("close"));
    assert!(serde_json::from_slice::<PieceList>(&second.body).is_ok());
}

#[test]
fn http10_closes_after_one_answer() {
    let fx = Fixture::start(test_config("th-http10"));
    let bytes = raw(fx.addr(), b"GET /v1/health HTTP/1.0\r\n\r\n");
    let (answer, rest) = parse_answer(&bytes, false).unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(rest.is_empty());
}

#[test]
fn a_file_that_grew_is_sent_only_to_its_indexed_size() {
    let fx = Fixture::start(test_config("th-grew"));
    let content = data(50_000, 5);
    let (sha1, path) = fx.add_file("g.bin", &content);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(&data(10_000, 6)).unwrap();
    let answer = get(fx.addr(), &format!("/v1/files/{sha1}"));
    assert_eq!(answer.status, 200);
    assert!(answer.body == content);
}

#[test]
fn a_truncated_file_gives_a_short_body_and_a_close() {
    let fx = Fixture::start(test_config("th-trunc"));
    let content = data(30_000, 7);
    let path = fx.dir.path().join("t.bin");
    std::fs::write(&path, &content).unwrap();
    let sha1 = Sha1Digest::of(b"claims to be longer");
    fx.source.add_unhashed(sha1, &path, 100_000);
    let bytes = raw(
        fx.addr(),
        format!("GET /v1/files/{sha1} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    assert!(
        parse_answer(&bytes, false).is_none(),
        "a short body must not look complete"
    );
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        bytes[head_end..] == content,
        "the body must be the file's bytes, never padding"
    );
}

#[test]
fn a_dripping_client_gets_408_at_the_header_deadline() {
    let config = ServerConfig {
        header_deadline: Duration::from_millis(700),
        ..test_config("th-drip")
    };
    let fx = Fixture::start(config);
    let mut stream = connect(fx.addr());
    let line = b"GET /v1/health HTTP/1.1\r\nX-Slow: ";
    stream.write_all(line).unwrap();
    // Keep dripping one byte at a time: each read succeeds, the head never ends.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut writer = stream.try_clone().unwrap();
    let dripper = std::thread::spawn(move || {
        while done_rx.recv_timeout(Duration::from_millis(50)).is_err() {
            if writer.write_all(b"a").is_err() {
                return;
            }
        }
    });
    let bytes = read_to_close(&mut stream);
    drop(done_tx);
    dripper.join().unwrap();
    let (answer, _) = parse_answer(&bytes, false).expect("a 408 answer");
    assert_eq!(answer.status, 408);
    assert_eq!(answer.header("connection"), Some("close"));
}

#[test]
fn idle_keep_alive_connection_is_closed_silently() {
    let config = ServerConfig {
        keepalive_idle: Duration::from_millis(300),
        ..test_config("th-idle")
    };
    let fx = Fixture::start(config);
    let mut stream = connect(fx.addr());
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let bytes = read_to_close(&mut stream);
    let (answer, rest) = parse_answer(&bytes, false).unwrap();
    assert_eq!(answer.status, 200);
    assert!(
        rest.is_empty(),
        "nothing after the answer, not even a 408: {:?}",
        rest.escape_ascii().to_string()
    );
}

#[test]
fn max_requests_per_connection_closes_the_connection() {
    let config = ServerConfig {
        max_requests_per_connection: 2,
        ..test_config("th-maxreq")
    };
    let fx = Fixture::start(config);
    let one = "GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n";
    let bytes = raw(fx.addr(), one.repeat(3).as_bytes());
    let (first, rest) = parse_answer(&bytes, false).unwrap();
    let (second, rest) = parse_answer(rest, false).unwrap();
    assert_eq!(first.header("connection"), Some("keep-alive"));
    assert_eq!(second.header("connection"), Some("close"));
    assert!(rest.is_empty(), "the third request must not be answered");
}

#[test]
fn workers_exit_on_drop_even_with_open_connections() {
    init_test_log();
    let config = ServerConfig {
        workers: 3,
        keepalive_idle: Duration::from_secs(600),
        header_deadline: Duration::from_secs(600),
        ..test_config("tdrop")
    };
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, DirSource::new()).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || threads_named("tdrop-") == 5),
        "3 workers, 1 poll thread and 1 accept thread"
    );
    assert_eq!(threads_named("tdrop-w"), 3);
    // One worker idles on a kept-alive connection, another waits for a head.
    let mut idle = connect(server.local_addr());
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut chunk = [0u8; 4096];
    assert!(idle.read(&mut chunk).unwrap() > 0);
    let mut partial = connect(server.local_addr());
    partial.write_all(b"GET /v1/he").unwrap();

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(server);
        let _ = tx.send(threads_named("tdrop-"));
    });
    let left = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("drop must not hang on open connections");
    assert_eq!(left, 0, "every server thread is joined by drop");
    assert_eq!(
        read_to_close(&mut partial),
        b"",
        "a cut-off partial request gets no answer"
    );
}

#[test]
fn shutdown_is_idempotent_and_frees_the_port() {
    let fx = Fixture::start(test_config("th-shut"));
    let addr = fx.addr();
    fx.server.shutdown();
    fx.server.shutdown();
    assert_eq!(threads_named("th-shut-"), 0);
    // Nothing accepts on the port any more.
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err());
}

#[test]
fn bind_reports_a_busy_port_and_bad_config() {
    let fx = Fixture::start(test_config("th-bind"));
    let err = Server::bind(fx.addr(), test_config("th-bind2"), DirSource::new()).unwrap_err();
    assert!(err.to_string().contains("cannot listen on"), "{err}");
    let bad = ServerConfig {
        workers: 0,
        ..test_config("th-bind3")
    };
    let err = Server::bind("127.0.0.1:0".parse().unwrap(), bad, DirSource::new()).unwrap_err();
    assert!(err.to_string().contains("workers"), "{err}");
}
