//! The status page, `/v1/status`, `/metrics` and the caching headers, on
//! real `serve` processes: the page is loaded by headless Chromium while a
//! download runs into the peer's dataset, `/metrics` is checked by
//! `promtool`. Both tools come from Debian (`scripts/deps.sh test`); where
//! one is missing the test fails with one line saying how to get it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use piratebay_sync::Sha1Digest;
use serde_json::Value;

use crate::fetch_support::*;
use crate::support::devtools::{Browser, HEADLESS};
use crate::support::*;

/// A file name that is markup, to prove names are shown as text.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
/// The piece size of every file of up to 16 MiB: tests size files in it.
const PIECE: u64 = piratebay_sync::protocol::BASE_BLOCK;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = ureq::get(url).config().http_status_as_error(false).build();
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

/// A real etcd and one `serve` peer with `data` as `name` in its dataset;
/// the sha1 of `data` and the peer's base URL.
fn peer_with_file(name: &str, data: &[u8]) -> (EtcdServer, ServePeer, Sha1Digest, String) {
    let etcd = EtcdServer::new();
    let peer = Serve::new(&etcd.endpoint()).start();
    std::fs::write(peer.dataset.join(name), data).unwrap();
    let base = format!("http://{}", peer.bound_addr());
    (etcd, peer, Sha1Digest::of(data), base)
}

fn status_json(base: &str) -> Value {
    let r = get(&format!("{base}/v1/status"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("/v1/status is JSON")
}

/// The path of a tool from Debian's packages, or a failure saying how to
/// install it (never a silent pass).
fn tool(name: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} not found: install Debian's {package} package (scripts/deps.sh test does, as root)"
    );
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_get(ep: &str, sha: &Sha1Digest, out: &Path, state: &Path, rate: &str) -> KillOnDrop {
    command()
        .args(["get", &sha.to_hex(), "-o"])
        .arg(out)
        .args(["--max-rate", rate, "--etcd", ep, "--state-dir"])
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .expect("get starts")
}

/// Runs headless Chromium on `url` with `extra` arguments; its stdout.
fn chromium(url: &str, extra: &[&str]) -> String {
    let bin = tool("chromium", "chromium");
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(HEADLESS)
        .arg("--hide-scrollbars")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(90));
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        last_lines(&stderr_text(&out), 20)
    );
    stdout_text(&out)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The value of the sample `name` (with its labels) in a metrics body.
fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// `(value, max)` of every `<progress>` in a DOM dump.
fn progress_values(dom: &str) -> Vec<(u64, u64)> {
    dom.split("<progress")
        .skip(1)
        .filter_map(|p| {
            let attr = |name: &str| -> Option<u64> {
                let at = p.find(&format!("{name}=\""))? + name.len() + 2;
                p[at..].split('"').next()?.parse().ok()
            };
            Some((attr("value")?, attr("max")?))
        })
        .collect()
}

#[test]
fn page_in_headless_chromium_shows_peers_files_a_running_download_and_names_as_text() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let seed_data = dir.path().join("seed");
    std::fs::create_dir_all(&seed_data).unwrap();
    let size = 40 * PIECE + 777;
    let sha = random_file(&seed_data.join(HOSTILE), size, 11);
    std::fs::write(seed_data.join("notes.txt"), b"status page test\n").unwrap();
    let seed = Serve::new(&ep).dataset(&seed_data).start();
    let host = Serve::new(&ep).start();
    let (seed_id, host_id) = (seed.id(), host.id());
    // A record someone else wrote: markup for a host name and an address
    // (a valid record: plain id, printable address with a port), no peer behind it.
    let hostile_record = serde_json::json!({
        "id": "hostile-peer", "addr": "<i>addr</i>:1", "addrs": ["<i>addr</i>:1"],
        "name": "<b>bold</b>", "version": "<script>alert(2)</script>",
        "started_at": 0, "index_gen": 1,
    });
    etcd.put("/piratebay/peers/hostile-peer", &hostile_record.to_string());
    let base = format!("http://{}", host.bound_addr());
    wait_until(Duration::from_secs(20), "three peers registered", || {
        status_json(&base)["peers"].as_array().map_or(0, Vec::len) == 3
    });
    wait_until(Duration::from_secs(20), "the seed lists its files", || {
        stdout_text(&cli(&["files", "--json", "--etcd", &ep])).contains(&sha.to_hex())
    });
    // Paced to last about a minute (killed once seen), so it is still running while the browser looks.
    let out = host.dataset.join(HOSTILE);
    let mut getter = spawn_get(
        &ep,
        &sha,
        &out,
        &dir.path().join("get-state"),
        &(size / 60).to_string(),
    );
    let status = try_wait_for(Duration::from_secs(30), || {
        let s = status_json(&base);
        let d = s["downloads"].as_array()?.first()?.clone();
        let held = d["pieces_held"].as_u64()?;
        let names: Vec<&str> = s["files"]["list"]
            .as_array()?
            .iter()
            .filter_map(|f| f["name"].as_str())
            .collect();
        let answering = s["peers"]
            .as_array()?
            .iter()
            .filter(|p| p["answers"] == true)
            .count();
        let silent = s["peers"]
            .as_array()?
            .iter()
            .filter(|p| p["answers"] == false)
            .count();
        (held > 0
            && names.contains(&HOSTILE)
            && names.contains(&"notes.txt")
            && answering == 2
            && silent == 1)
            .then_some(s)
    });
    let Some(status) = status else {
        let _ = getter.0.kill();
        let mut stderr = String::new();
        if let Some(mut e) = getter.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        panic!(
            "the page never showed the download and the files: {}\nget: {}",
            status_json(&base),
            stderr
        );
    };
    assert_eq!(status["downloads"][0]["name"], HOSTILE);
    assert_eq!(status["downloads"][0]["pieces_total"], 41);
    assert!(
        status["downloads"][0]["peers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|id| id == seed_id.as_str())),
        "the download's peers in use: {}",
        status["downloads"][0]
    );
    assert_eq!(status["peer"]["id"], host_id.as_str());
    assert_eq!(status["registration"]["registered"], true);
    // The seed sees the same transfer as an upload (to the get's address).
    let seed_base = format!("http://{}", seed.bound_addr());
    let upload = wait_for(Duration::from_secs(10), "the seed's upload", || {
        let s = status_json(&seed_base);
        s["uploads"]
            .as_array()?
            .iter()
            .find(|u| u["name"] == HOSTILE)
            .cloned()
    });
    assert_eq!(upload["sha1"], sha.to_hex().as_str(), "{upload}");
    assert!(upload["bytes"].as_u64().unwrap() >= PIECE, "{upload}");
    let client: std::net::IpAddr = upload["client"].as_str().unwrap().parse().unwrap();
    assert!(client.is_loopback(), "{upload}");

    let dom = chromium(&format!("{base}/"), &["--dump-dom"]);
    assert!(
        dom.contains("<title>piratebay-sync"),
        "{}",
        last_lines(&dom, 40)
    );
    // The peers, both answering.
    assert!(
        dom.contains(&seed_id) && dom.contains(&host_id),
        "peers missing: {dom}"
    );
    assert!(dom.contains("3 registered, 2 answering"), "{dom}");
    // A file of the network and its holder count.
    assert!(dom.contains("notes.txt"), "{dom}");
    // The transfer, with a progress value part way.
    let progress = progress_values(&dom);
    assert!(
        progress.iter().any(|&(v, m)| m == 41 && v > 0 && v < m),
        "no running download in {progress:?}: {dom}"
    );
    // The hostile name is text: escaped in the serialized DOM, no element made of it.
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
    assert!(!dom.contains("<img"), "a name became markup: {dom}");
    // So are a registered record's host name, address and version.
    for text in [
        "&lt;b&gt;bold&lt;/b&gt;",
        "&lt;i&gt;addr&lt;/i&gt;:1",
        "&lt;script&gt;alert(2)",
    ] {
        assert!(dom.contains(text), "{text} not shown as text: {dom}");
    }
    assert!(
        !dom.contains("<b>") && !dom.contains("<i>"),
        "a record became markup: {dom}"
    );
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "only the page's own script: {dom}"
    );

    let render = |dom: &str| -> u64 {
        dom.split("data-render=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no render number: {dom}"))
    };
    // A page is rendered at most once a second and shared: wait until the
    // peer has rendered it anew, so the load below must get a newer one.
    wait_until(
        Duration::from_secs(10),
        "a newer render of the page",
        || render(&get(&format!("{base}/"), &[]).text()) > render(&dom),
    );
    // The script runs: `?q=` fills the search, which hides the rows that do
    // not match, and still does after the page refreshed itself (2 s of
    // virtual time).
    let filtered = chromium(
        &format!("{base}/?q=notes"),
        &["--virtual-time-budget=5000", "--dump-dom"],
    );
    let rows = |dom: &str, hidden: bool| -> Vec<String> {
        let files = dom.split("id=\"files\"").nth(1).unwrap_or_default();
        files
            .split("<tr")
            .skip(2)
            .filter(|r| r.starts_with(" hidden") == hidden)
            .map(|r| r.chars().take(400).collect())
            .collect()
    };
    let (shown, hidden) = (rows(&filtered, false), rows(&filtered, true));
    assert!(
        shown.len() == 1 && shown[0].contains("notes.txt") && hidden.len() == 1,
        "search did not filter: shown {shown:?}, hidden {hidden:?}"
    );
    assert!(
        filtered.contains("id=\"stale\" hidden"),
        "the refresh failed: {filtered}"
    );
    // Loaded anew, and refreshed by its script.
    assert!(
        render(&filtered) > render(&dom),
        "the page was not rendered again ({} after {})",
        render(&filtered),
        render(&dom)
    );
    assert!(
        filtered.contains("data-refreshes=\"2\"") || filtered.contains("data-refreshes=\"3\""),
        "the page did not refresh itself: {filtered}"
    );

    // A picture for a person to look at.
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    chromium(
        &format!("{base}/"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1100",
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );

    // The same transfer in both peers' metrics.
    let host_metrics = get(&format!("{base}/metrics"), &[]).text();
    assert!(
        metric(&host_metrics, "pbs_pieces_verified_total") >= 1.0,
        "{host_metrics}"
    );
    assert!(
        metric(&host_metrics, "pbs_received_bytes_total") >= PIECE as f64,
        "{host_metrics}"
    );
    assert_eq!(
        metric(&host_metrics, "pbs_downloads_active"),
        1.0,
        "{host_metrics}"
    );
    assert_eq!(metric(&host_metrics, "pbs_peers"), 3.0, "{host_metrics}");
    assert_eq!(
        metric(&host_metrics, "pbs_peers_answering"),
        2.0,
        "{host_metrics}"
    );
    let seed_metrics = get(&format!("{seed_base}/metrics"), &[]).text();
    assert!(
        metric(&seed_metrics, "pbs_served_bytes_total") >= PIECE as f64,
        "{seed_metrics}"
    );
    drop(getter);
}

#[test]
fn metrics_pass_promtool_and_count_what_the_peer_did() {
    init_test_log();
    let promtool = tool("promtool", "prometheus");
    let data = b"some bytes to serve\n".repeat(100);
    let (_etcd, _peer, sha, base) = peer_with_file("a.txt", &data);
    wait_until(
        Duration::from_secs(20),
        "file indexed and peer registered",
        || {
            let s = status_json(&base);
            s["index"]["files"] == 1 && s["registration"]["registered"] == true
        },
    );
    assert_eq!(get(&format!("{base}/v1/files/{sha}"), &[]).body, data);
    assert_eq!(get(&format!("{base}/nope"), &[]).status, 404);

    let metrics = get(&format!("{base}/metrics"), &[]);
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain; version=0.0.4"));
    let body = metrics.text();
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let value = |name: &str| metric(&body, name);
    assert!(value("pbs_served_bytes_total") >= data.len() as f64);
    assert!(value("pbs_http_requests_total{route=\"file\",code=\"200\"}") >= 1.0);
    assert!(value("pbs_http_requests_total{route=\"other\",code=\"404\"}") >= 1.0);
    assert_eq!(value("pbs_index_files"), 1.0);
    assert_eq!(value("pbs_index_bytes"), data.len() as f64);
    assert_eq!(value("pbs_registered"), 1.0);
    assert_eq!(value("pbs_peers"), 1.0);
    assert!(value("pbs_etcd_request_duration_seconds_count") >= 2.0);
    assert!(
        value("pbs_http_connections_open") >= 1.0,
        "this scrape's own connection"
    );
}

#[test]
fn a_download_into_the_dataset_counts_its_pieces_bytes_and_completion() {
    init_test_log();
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let seed_data = dir.path().join("seed");
    std::fs::create_dir_all(&seed_data).unwrap();
    let piece = 64 * 1024;
    let size = 6 * piece + 100;
    let sha = random_file(&seed_data.join("d.bin"), size, 5);
    let _seed = Serve::new(&ep).dataset(&seed_data).start();
    let peer = Serve::new(&ep).start();
    let base = format!("http://{}", peer.bound_addr());
    wait_until(Duration::from_secs(20), "the seed lists its file", || {
        stdout_text(&cli(&["files", "--json", "--etcd", &ep])).contains(&sha.to_hex())
    });
    // About two seconds, so the peer sees the state file a few times.
    let mut getter = spawn_get(
        &ep,
        &sha,
        &peer.dataset.join("d.bin"),
        &dir.path().join("get-state"),
        &(size / 2).to_string(),
    );
    let status = wait_timeout(&mut getter.0, Duration::from_secs(60)).expect("get ends");
    assert!(status.success(), "get failed: {status}");
    let body = wait_for(Duration::from_secs(10), "the completion counted", || {
        let body = get(&format!("{base}/metrics"), &[]).text();
        (metric(&body, "pbs_downloads_completed_total") == 1.0).then_some(body)
    });
    assert_eq!(metric(&body, "pbs_downloads_failed_total"), 0.0, "{body}");
    assert_eq!(metric(&body, "pbs_pieces_verified_total"), 7.0, "{body}");
    assert_eq!(
        metric(&body, "pbs_received_bytes_total"),
        size as f64,
        "{body}"
    );
}

#[test]
fn caching_headers_fit_each_resource() {
    init_test_log();
    let data = b"cache me\n".repeat(10);
    let (_etcd, _peer, sha, base) = peer_with_file("c.txt", &data);
    wait_until(Duration::from_secs(20), "file indexed", || {
        get(&format!("{base}/v1/files/{sha}"), &[]).status == 200
    });

    let immutable = "public, max-age=31536000, immutable";
    let file = get(&format!("{base}/v1/files/{sha}"), &[]);
    assert_eq!(file.header("cache-control"), Some(immutable));
    let range = get(&format!("{base}/v1/files/{sha}"), &[("Range", "bytes=0-3")]);
    assert_eq!(
        (range.status, range.header("cache-control")),
        (206, Some(immutable))
    );
    let etag = format!("\"{sha}\"");
    let again = get(
        &format!("{base}/v1/files/{sha}"),
        &[("If-None-Match", &etag)],
    );
    assert_eq!(
        (again.status, again.header("cache-control")),
        (304, Some(immutable))
    );

    let list = get(&format!("{base}/v1/files"), &[]);
    assert_eq!(list.header("cache-control"), Some("no-cache"));
    let list_etag = list
        .header("etag")
        .expect("catalog has an ETag")
        .to_string();
    let revalidated = get(
        &format!("{base}/v1/files"),
        &[("If-None-Match", &list_etag)],
    );
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("cache-control"), Some("no-cache"));

    for path in [
        "/v1/health",
        "/v1/status",
        "/metrics",
        "/",
        &format!("/v1/files/{sha}/have"),
    ] {
        let r = get(&format!("{base}{path}"), &[]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    }
    let page = get(&format!("{base}/"), &[]);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page
        .header("content-security-policy")
        .unwrap_or("")
        .contains("default-src 'none'"));
    let html = page.text();
    assert!(
        html.contains("c.txt") || html.contains("no files yet"),
        "{html}"
    );
    assert!(
        !html.contains("src=\"http"),
        "the page fetches nothing from elsewhere"
    );
}

/// The page lists the peer's own files from its index (one holder: itself)
/// without the peer asking itself for its catalog over HTTP.
#[test]
fn own_files_are_listed_without_fetching_the_own_catalog() {
    init_test_log();
    let data = b"only here\n".repeat(50);
    let (_etcd, _peer, sha, base) = peer_with_file("mine.txt", &data);
    let sha = sha.to_hex();
    let listed = try_wait_for(Duration::from_secs(30), || {
        let s = status_json(&base);
        let row = s["files"]["list"]
            .as_array()?
            .iter()
            .find(|f| f["sha1"] == sha.as_str())?
            .clone();
        (s["registration"]["registered"] == true).then_some(row)
    })
    .expect("the page lists the peer's own file");
    assert_eq!(listed["name"], "mine.txt");
    assert_eq!(listed["holders"], 1);
    let metrics = get(&format!("{base}/metrics"), &[]).text();
    assert!(
        !metrics.contains("route=\"files\""),
        "the peer asked itself for its catalog:\n{metrics}"
    );
}

/// The `href` of the download link (`<a class="dl" ...>`) whose text is
/// `name` in a serialized DOM.
fn download_href(dom: &str, name: &str) -> Option<String> {
    dom.split("<a class=\"dl\" href=\"")
        .skip(1)
        .find_map(|rest| {
            let (href, after) = rest.split_once('"')?;
            let text = after.split_once('>')?.1.split_once("</a>")?.0;
            (text == name).then(|| href.replace("&amp;", "&"))
        })
}

/// The row of the files table that shows `name`, as serialized.
fn file_row<'a>(dom: &'a str, name: &str) -> &'a str {
    let files = dom.split("id=\"files\"").nth(1).unwrap_or_default();
    files
        .split("<tr")
        .find(|r| r.contains(&format!(">{name}</a>")))
        .unwrap_or_else(|| panic!("no row for {name}: {files}"))
}

/// The "Files in the network" rows link each file where a browser gets
/// it: the page's own peer's copy on its own origin, else another peer's
/// at the address it advertises, and name the peers holding it. The link
/// targets are read from the DOM headless Chromium built (script run) and
/// fetched: each answers the file's bytes (SHA1 checked) as an attachment
/// named like the row; and a click on each row in Chromium (driven over
/// the DevTools protocol) saves the file under its name, SHA1 checked.
#[test]
fn file_rows_link_a_copy_whose_sha1_matches_and_name_their_holders() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let page = Serve::new(&ep).start();
    let other = Serve::new(&ep).start();
    let files: [(&ServePeer, &str, &[u8]); 3] = [
        (&page, "mine.txt", b"held by the page's peer\n"),
        (&other, "theirs.mp4", b"held by the other peer only"),
        (&other, "both.pdf", b"%PDF held by both"),
    ];
    for (peer, name, data) in files {
        std::fs::write(peer.dataset.join(name), data).unwrap();
    }
    std::fs::write(page.dataset.join("both.pdf"), b"%PDF held by both").unwrap();
    let other_id = other.id();
    let other_addr = other.bound_addr();
    let base = format!("http://{}", page.bound_addr());
    wait_until(Duration::from_secs(30), "all three files listed", || {
        let s = status_json(&base);
        let list = s["files"]["list"].as_array().cloned().unwrap_or_default();
        let holders = |name: &str| {
            list.iter()
                .find(|f| f["name"] == name)
                .and_then(|f| f["holders"].as_u64())
        };
        holders("mine.txt") == Some(1)
            && holders("theirs.mp4") == Some(1)
            && holders("both.pdf") == Some(2)
    });
    let status = status_json(&base);
    let row_json = |name: &str| -> Value {
        status["files"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(row_json("theirs.mp4")["here"], false);
    assert_eq!(row_json("theirs.mp4")["holder_ids"][0], other_id.as_str());
    assert_eq!(row_json("both.pdf")["here"], true);

    let dom = chromium(
        &format!("{base}/"),
        &["--virtual-time-budget=3000", "--dump-dom"],
    );
    let own_path = |data: &[u8]| format!("/v1/files/{}", Sha1Digest::of(data));
    // Where each link must lead: the own copy on the page's origin, the
    // other peer's at its advertised address.
    let expected = [
        ("mine.txt", own_path(files[0].2)),
        (
            "theirs.mp4",
            format!("http://{other_addr}{}", own_path(files[1].2)),
        ),
        ("both.pdf", own_path(files[2].2)),
    ];
    for ((_, name, data), (_, want)) in files.iter().zip(&expected) {
        let href = download_href(&dom, name).unwrap_or_else(|| panic!("no link for {name}: {dom}"));
        assert_eq!(&href, want, "{name}");
        let url = if href.starts_with('/') {
            format!("{base}{href}")
        } else {
            href
        };
        let r = get(&url, &[]);
        assert_eq!(r.status, 200, "{url}");
        assert_eq!(Sha1Digest::of(&r.body), Sha1Digest::of(data), "{url}");
        assert_eq!(
            r.header("content-disposition"),
            Some(format!("attachment; filename=\"{name}\"").as_str()),
            "{url}"
        );
    }
    // A click on each row's name downloads the file under its name.
    let mut browser = Browser::open(&tool("chromium", "chromium"), &format!("{base}/"));
    browser.wait_true(
        "document.querySelectorAll('#files a.dl').length === 3",
        Duration::from_secs(20),
    );
    for (_, name, data) in files {
        let clicked = browser.eval(&format!(
            "(function(){{var a=Array.from(document.querySelectorAll('#files a.dl'))\
             .find(function(x){{return x.textContent==={name:?};}});\
             if(!a){{return false;}}a.click();return true;}})()"
        ));
        assert_eq!(clicked, Value::Bool(true), "no link to click for {name}");
        let saved = browser.downloaded(name, Duration::from_secs(30));
        let got = std::fs::read(&saved).unwrap();
        assert_eq!(Sha1Digest::of(&got), Sha1Digest::of(data), "{name}");
    }
    drop(browser);

    // Which peers hold it: this peer, the other by host name and short id.
    let short = |id: &str| format!("<code>{}</code>", &id[..8]);
    let theirs = file_row(&dom, "theirs.mp4");
    assert!(theirs.contains(&short(&other_id)), "{theirs}");
    assert!(!theirs.contains("this peer"), "{theirs}");
    let both = file_row(&dom, "both.pdf");
    assert!(both.contains(">this peer, "), "{both}");
    assert!(both.contains(&short(&other_id)), "{both}");
    let mine = file_row(&dom, "mine.txt");
    assert!(
        mine.contains(">this peer<") && !mine.contains(&short(&other_id)),
        "{mine}"
    );
}

/// Nobody looking, a peer asks no other peer anything: with every peer
/// probing every other one, a room of N peers made N x N health requests
/// every 5 s (and N x N catalog fetches whenever an index changed). The
/// first look at its status starts the probes again.
#[test]
fn an_unwatched_peer_asks_no_other_peer_until_its_status_is_asked() {
    use std::io::{ErrorKind, Read};
    use std::net::TcpListener;
    use std::time::Instant;
    init_test_log();
    let etcd = EtcdServer::new();
    // Another registered peer: a listener here that counts who calls.
    let other = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    other.set_nonblocking(true).unwrap();
    let addr = other.local_addr().unwrap().to_string();
    let record = serde_json::json!({
        "id": "other", "addr": addr, "addrs": [addr],
        "name": "other", "version": "0", "started_at": 0, "index_gen": 1,
    });
    etcd.put("/piratebay/peers/other", &record.to_string());
    let peer = Serve::new(&etcd.endpoint()).start();
    let base = format!("http://{}", peer.bound_addr());
    // Longer than a health round (5 s) and a catalog round (3 s) after
    // the monitor's first tick, which probed at once before.
    let quiet = Instant::now() + Duration::from_secs(7);
    while Instant::now() < quiet {
        match other.accept() {
            Ok((mut s, _)) => {
                let mut head = [0u8; 64];
                let n = s.read(&mut head).unwrap_or(0);
                panic!(
                    "asked while nobody looked: {:?}",
                    String::from_utf8_lossy(&head[..n])
                );
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    let s = status_json(&base);
    assert_eq!(s["peers"].as_array().map_or(0, Vec::len), 2, "{s}");
    let (mut conn, _) = wait_for(
        Duration::from_secs(10),
        "a health probe once looked at",
        || other.accept().ok(),
    );
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 64];
    let n = conn.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("GET /v1/health "), "{head}");
}
