//! The status page: one self-contained HTML document rendered from a
//! [`StatusReport`], with its style, an inline SVG of the rates and a small
//! script; nothing is fetched from anywhere else, so it works on a LAN
//! without internet.
//!
//! Every string that comes from the network or the file system (peer ids,
//! host names, addresses, versions, file names, the dataset path, errors)
//! goes through [`escape`]: a file named `<img src=x onerror=alert(1)>`
//! shows as that text. The page reads fine without script (a `noscript`
//! meta refresh reloads it); with script it fetches itself again every two
//! seconds and swaps in the new `#live` and `#files` parts, keeping the
//! search box and its filter. `/?q=words` opens it with the search filled in.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::{DownloadRow, FileRow, History, PeerRow, StatusReport, HISTORY_LEN};
use crate::digest::Sha1Digest;
use crate::protocol::FILES_PATH;
use crate::text::human_size;

/// Pages rendered by this process.
static RENDERS: AtomicU64 = AtomicU64::new(0);

/// Longest host name shown for a file's holder (the peers table shows
/// it up to the report's 100 characters).
const HOLDER_NAME_CHARS: usize = 24;

/// Seconds between two refreshes of the page.
pub const REFRESH_SECS: u64 = 2;

/// `Content-Security-Policy` of the page: nothing from elsewhere, no
/// plugins, no framing; only its own inline style and script and requests
/// to its own origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

const STYLE: &str = r#"
:root{--fg:#1d2330;--mute:#5f6b7a;--line:#dde2e8;--bg:#f6f7f9;--card:#fff;--up:#2a9d6f;--down:#3a6ea5;--bad:#c0392b}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#23303f;color:#fff;padding:10px 20px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}
header .sub{color:#c9d3de}
.wrap{max-width:1180px;margin:0 auto;padding:12px 20px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:14px}
section{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 14px;margin-bottom:14px}
h2{font-size:15px;margin:2px 0 8px}
h3{font-size:13px;margin:10px 0 4px;color:var(--mute)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 8px 3px 0;border-bottom:1px solid var(--line);vertical-align:baseline}
th{font-weight:600;color:var(--mute);font-size:12px}
td.num,th.num{text-align:right;white-space:nowrap}
table.kv th{width:9.5em}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.name{overflow-wrap:anywhere}
.from{color:var(--mute);font-size:12px}
table.downloads progress{min-width:90px}
.ok{color:var(--up);font-weight:600}.bad{color:var(--bad);font-weight:600}.mute{color:var(--mute)}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;color:#fff}
.badge.ok{background:var(--up)}.badge.bad{background:var(--bad)}
progress{width:100%;height:14px}
.legend span{margin-right:14px}.up{color:var(--up)}.down{color:var(--down)}
svg{width:100%;height:auto;display:block}
input[type=search]{width:100%;padding:6px 8px;margin:0 0 8px;border:1px solid var(--line);border-radius:4px;font:inherit}
#stale{color:var(--bad)}
"#;

const SCRIPT: &str = r#"
(function(){
var q=document.getElementById('q');
function filter(){var t=q.value.toLowerCase();
document.querySelectorAll('#files tbody tr').forEach(function(r){r.hidden=!!t&&r.textContent.toLowerCase().indexOf(t)<0;});}
q.addEventListener('input',filter);
var m=/[?&]q=([^&]*)/.exec(location.search);
if(m){try{q.value=decodeURIComponent(m[1].replace(/\+/g,' '));}catch(e){}filter();}
function swap(d,id){var n=d.getElementById(id),o=document.getElementById(id);if(n&&o){o.replaceWith(n);}}
function tick(){
fetch(location.href,{cache:'no-store'}).then(function(r){if(!r.ok){throw r.status;}return r.text();}).then(function(t){
var d=new DOMParser().parseFromString(t,'text/html');swap(d,'live');swap(d,'files');filter();
document.body.dataset.refreshes=(+document.body.dataset.refreshes||0)+1;
document.getElementById('stale').hidden=true;
}).catch(function(){document.getElementById('stale').hidden=false;}).then(function(){setTimeout(tick,REFRESH);});}
setTimeout(tick,REFRESH);
})();
"#;

/// HTML-escapes `s` for text and attribute values; control, bidi and
/// zero-width characters are shown as `\u{...}`, as the terminal output
/// shows them ([`crate::text`]): `gnp\u{202e}exe` cannot pass for `exe.png`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if crate::text::is_unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn rate(r: f64) -> String {
    format!("{}/s", human_size(r.max(0.0) as u64))
}

fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// The whole page.
pub fn render(r: &StatusReport) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let title = format!("piratebay-sync · {}", r.peer.name);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{}</title><noscript><meta http-equiv=\"refresh\" content=\"{}\"></noscript>\
<style>{STYLE}</style></head><body>\
<header><h1>piratebay-sync</h1><span class=\"sub\">peer <code>{}</code> on {}</span>\
<span class=\"sub\">v{}</span><span id=\"stale\" hidden>not answering: showing the last state</span></header>\
<div class=\"wrap\">",
        escape(&title),
        REFRESH_SECS * 5,
        escape(&r.peer.id),
        escape(&r.peer.name),
        escape(&r.peer.version),
    );
    // Numbered, so a test (or a person) can see the page refresh itself.
    let n = RENDERS.fetch_add(1, Ordering::Relaxed) + 1;
    let _ = write!(
        o,
        "<main id=\"live\" data-render=\"{n}\"><div class=\"grid\">"
    );
    this_peer(&mut o, r);
    transfers(&mut o, r);
    o.push_str("</div>");
    peers(&mut o, r);
    o.push_str("</main>");
    files(&mut o, r);
    let _ = writeln!(
        o,
        "</div><script>var REFRESH={};{SCRIPT}</script></body></html>",
        REFRESH_SECS * 1000
    );
    o
}

/// The last row of a table that shows only the first rows: how many more.
fn more(o: &mut String, hidden: usize, what: &str) {
    if hidden > 0 {
        let _ = write!(
            o,
            "<tr class=\"more\"><td colspan=\"7\" class=\"mute\">and {hidden} more {what}</td></tr>"
        );
    }
}

fn row(o: &mut String, key: &str, value_html: &str) {
    let _ = write!(o, "<tr><th>{key}</th><td>{value_html}</td></tr>");
}

fn this_peer(o: &mut String, r: &StatusReport) {
    o.push_str("<section id=\"this\"><h2>This peer</h2><table class=\"kv\">");
    row(o, "id", &format!("<code>{}</code>", escape(&r.peer.id)));
    let addrs: Vec<String> = r
        .peer
        .addrs
        .iter()
        .map(|a| format!("<code>{}</code>", escape(a)))
        .collect();
    row(o, "addresses", &addrs.join(" "));
    row(
        o,
        "dataset",
        &format!("<span class=\"name\">{}</span>", escape(&r.peer.dataset)),
    );
    row(o, "uptime", &duration(r.peer.uptime_secs));
    let i = &r.index;
    row(
        o,
        "index",
        &format!(
            "{} files, {} · generation <code>{}</code>",
            i.files,
            human_size(i.bytes),
            i.generation
        ),
    );
    let hashing = if !i.ready {
        format!(
            "first scan: {} files ({}) to hash, {} done",
            i.queued_files,
            human_size(i.queued_bytes),
            i.hashed_files
        )
    } else if i.queued_files > 0 {
        format!(
            "{} files ({}) to hash",
            i.queued_files,
            human_size(i.queued_bytes)
        )
    } else {
        "idle".into()
    };
    row(o, "hashing", &hashing);
    let g = &r.registration;
    let state = if g.registered {
        "<span class=\"badge ok\">registered</span>".to_owned()
    } else {
        "<span class=\"badge bad\">not registered</span>".to_owned()
    };
    let lease = match &g.lease {
        Some(l) => format!(" lease <code>{}</code>, ttl {}s", escape(l), g.ttl_secs),
        None => String::new(),
    };
    row(o, "registration", &format!("{state}{lease}"));
    let renewed = g
        .last_renewal_secs_ago
        .map_or("never".into(), |s| format!("{s:.1}s ago"));
    row(o, "last renewal", &renewed);
    row(o, "etcd", &format!("<code>{}</code>", escape(&g.endpoint)));
    if let Some(e) = &g.error {
        row(
            o,
            "etcd error",
            &format!("<span class=\"bad\">{}</span>", escape(e)),
        );
    }
    o.push_str("</table></section>");
}

fn transfers(o: &mut String, r: &StatusReport) {
    o.push_str("<section id=\"transfers\"><h2>Transfers</h2>");
    chart(o, &r.history);
    o.push_str("<h3>Downloads into the dataset</h3>");
    if r.downloads.is_empty() {
        o.push_str("<p class=\"mute\">none</p>");
    } else {
        o.push_str(
            "<table class=\"downloads\"><thead><tr><th>file</th><th>progress</th>\
<th class=\"num\">pieces</th><th class=\"num\">rate</th></tr></thead><tbody>",
        );
        for d in &r.downloads {
            download(o, d);
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("<h3>Uploads</h3>");
    if r.uploads.is_empty() {
        o.push_str("<p class=\"mute\">none</p>");
    } else {
        o.push_str(
            "<table class=\"uploads\"><thead><tr><th>client</th><th>file</th>\
<th class=\"num\">sent</th><th class=\"num\">rate</th></tr></thead><tbody>",
        );
        for u in &r.uploads {
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td class=\"name\" title=\"{}\">{}</td>\
<td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&u.client),
                u.sha1,
                escape(&u.name),
                human_size(u.bytes),
                if u.active {
                    rate(u.rate)
                } else {
                    "done".into()
                },
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");
}

fn download(o: &mut String, d: &DownloadRow) {
    let state = if d.finished {
        "finished".to_owned()
    } else {
        rate(d.rate)
    };
    // Ids shortened to 8 characters (the peers table has them whole).
    let peers = if d.finished || d.peers.is_empty() {
        String::new()
    } else {
        let ids: Vec<String> = d
            .peers
            .iter()
            .map(|p| {
                format!(
                    "<code>{}</code>",
                    escape(&p.chars().take(8).collect::<String>())
                )
            })
            .collect();
        format!("<div class=\"from\">from {}</div>", ids.join(" "))
    };
    // Whether the swarm was used at all: bytes from seeds, from peers.
    let sources = if d.from_seeds + d.from_partials > 0 {
        format!(
            "<div class=\"from\">{} from seeds, {} from peers downloading it</div>",
            human_size(d.from_seeds),
            human_size(d.from_partials)
        )
    } else {
        String::new()
    };
    let _ = write!(
        o,
        "<tr><td class=\"name\" title=\"{}\">{} <span class=\"mute\">{}</span>{}{}</td>\
<td><progress value=\"{}\" max=\"{}\">{:.0}%</progress></td>\
<td class=\"num\">{}/{}</td><td class=\"num\">{}</td></tr>",
        d.sha1,
        escape(&d.name),
        human_size(d.size),
        peers,
        sources,
        d.pieces_held,
        d.pieces_total.max(1),
        d.progress * 100.0,
        d.pieces_held,
        d.pieces_total,
        state,
    );
}

/// The rates as two polylines, newest on the right.
fn chart(o: &mut String, h: &History) {
    const W: f64 = 600.0;
    const H: f64 = 110.0;
    let top = h
        .upload
        .iter()
        .chain(&h.download)
        .fold(1024.0f64, |m, v| m.max(*v));
    let step = W / (HISTORY_LEN.max(2) - 1) as f64;
    let line = |values: &[f64]| -> String {
        let offset = HISTORY_LEN.saturating_sub(values.len()) as f64;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    (offset + i as f64) * step,
                    H - 2.0 - v / top * (H - 14.0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let now_up = h.upload.last().copied().unwrap_or(0.0);
    let now_down = h.download.last().copied().unwrap_or(0.0);
    let _ = write!(
        o,
        "<div class=\"legend\"><span class=\"up\">▲ upload {}</span>\
<span class=\"down\">▼ download {}</span><span class=\"mute\">last {} min</span></div>\
<svg id=\"rates\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"upload and download rate\">\
<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fafbfc\" stroke=\"#dde2e8\"/>\
<text x=\"4\" y=\"11\" font-size=\"10\" fill=\"#5f6b7a\">{}</text>\
<polyline fill=\"none\" stroke=\"#3a6ea5\" stroke-width=\"1.5\" points=\"{}\"/>\
<polyline fill=\"none\" stroke=\"#2a9d6f\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        rate(now_up),
        rate(now_down),
        HISTORY_LEN as u64 * h.interval_secs.max(1) / 60,
        rate(top),
        line(&h.download),
        line(&h.upload),
    );
}

fn peers(o: &mut String, r: &StatusReport) {
    let answering = r.peers.iter().filter(|p| p.answers == Some(true)).count();
    let _ = write!(
        o,
        "<section id=\"peers\"><h2>Peers <span class=\"mute\">{} registered, {answering} answering</span></h2>",
        r.peers_total
    );
    if r.peers.is_empty() {
        o.push_str("<p class=\"mute\">no peer registered (is etcd reachable?)</p></section>");
        return;
    }
    o.push_str(
        "<table class=\"peers\"><thead><tr><th>id</th><th>host</th><th>addresses</th>\
<th>version</th><th class=\"num\">up</th><th class=\"num\">generation</th><th>answers</th>\
</tr></thead><tbody>",
    );
    for p in &r.peers {
        let answers = match (p.answers, p.latency_ms) {
            (Some(true), Some(ms)) => format!("<span class=\"ok\">yes</span> {ms} ms"),
            (Some(true), None) => "<span class=\"ok\">yes</span>".into(),
            (Some(false), _) => "<span class=\"bad\">no</span>".into(),
            (None, _) => "<span class=\"mute\">not asked yet</span>".into(),
        };
        let addrs: Vec<String> = p
            .addrs
            .iter()
            .map(|a| format!("<code>{}</code>", escape(a)))
            .collect();
        let _ = write!(
            o,
            "<tr><td><code>{}</code>{}</td><td class=\"name\">{}</td><td>{}</td>\
<td class=\"name\">{}</td><td class=\"num\">{}</td><td class=\"num mono\">{}</td>\
<td>{answers}</td></tr>",
            escape(&p.id),
            if p.this {
                " <span class=\"mute\">(this peer)</span>"
            } else {
                ""
            },
            escape(&p.name),
            addrs.join(" "),
            escape(&p.version),
            duration(p.age_secs),
            p.index_gen,
        );
    }
    more(o, r.peers_total.saturating_sub(r.peers.len()), "peers");
    o.push_str("</tbody></table></section>");
}

fn files(o: &mut String, r: &StatusReport) {
    let f = &r.files;
    let when = f
        .refreshed_secs_ago
        .map_or("not listed yet".into(), |s| format!("listed {s:.0}s ago"));
    let shown = if f.list.len() < f.total {
        format!(", first {} by name", f.list.len())
    } else {
        String::new()
    };
    let _ = write!(
        o,
        "<section><h2>Files in the network <span class=\"mute\">{} files{shown}, {when}</span></h2>\
<input id=\"q\" type=\"search\" placeholder=\"search by name or sha1\" aria-label=\"search files\">\
<div id=\"files\">",
        f.total
    );
    if f.list.is_empty() {
        o.push_str("<p class=\"mute\">no files yet</p>");
    } else {
        o.push_str(
            "<table class=\"files\"><thead><tr><th>name</th><th class=\"num\">size</th>\
<th class=\"num\">holders</th><th>held by</th><th>sha1</th></tr></thead><tbody>",
        );
        let peers: HashMap<&str, &PeerRow> = r.peers.iter().map(|p| (p.id.as_str(), p)).collect();
        for e in &f.list {
            file_row(o, e, &peers);
        }
        more(o, f.total.saturating_sub(f.list.len()), "files");
        o.push_str("</tbody></table>");
    }
    o.push_str("</div></section>");
}

/// One file: its name links the file where a browser can get it
/// ([`file_href`]), and the peers holding it are named.
fn file_row(o: &mut String, e: &FileRow, peers: &HashMap<&str, &PeerRow>) {
    let name = match file_href(e, peers) {
        Some(href) => format!(
            "<a class=\"dl\" href=\"{}\" rel=\"noreferrer\">{}</a>",
            escape(&href),
            escape(&e.name)
        ),
        None => escape(&e.name),
    };
    // Named, not linked (the name's link picks the copy): a row stays
    // small in a page of 1,000 rows fetched again every two seconds.
    let mut held_by: Vec<String> = Vec::new();
    if e.here {
        held_by.push("this peer".into());
    }
    for id in &e.holder_ids {
        let short = escape(&id.chars().take(8).collect::<String>());
        held_by.push(match peers.get(id.as_str()) {
            Some(p) => {
                // The host name cut short: up to 4 per row, 1,000 rows.
                let host = match p.name.char_indices().nth(HOLDER_NAME_CHARS) {
                    Some((end, _)) => format!("{}…", &p.name[..end]),
                    None => p.name.clone(),
                };
                format!("{} <code>{short}</code>", escape(&host))
            }
            None => format!("<code>{short}</code>"),
        });
    }
    let named = usize::from(e.here) + e.holder_ids.len();
    if e.holders > named {
        held_by.push(format!(
            "<span class=\"mute\">+{} more</span>",
            e.holders - named
        ));
    }
    let _ = write!(
        o,
        "<tr><td class=\"name\">{name}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
<td class=\"from\">{}</td><td><code>{}</code></td></tr>",
        human_size(e.size),
        e.holders,
        held_by.join(", "),
        e.sha1,
    );
}

/// This peer's copy of a file: a path on the page's own origin, which the
/// browser showing the page can reach whatever address it used.
fn own_href(sha1: &Sha1Digest) -> String {
    format!("{FILES_PATH}/{sha1}")
}

/// Where a browser gets the file: this peer's own copy when it holds it,
/// else the copy of a holder that answered its last health probe (else of
/// any holder with an address a browser can use).
fn file_href(e: &FileRow, peers: &HashMap<&str, &PeerRow>) -> Option<String> {
    if e.here {
        return Some(own_href(&e.sha1));
    }
    let holders: Vec<&PeerRow> = e
        .holder_ids
        .iter()
        .filter_map(|id| peers.get(id.as_str()).copied())
        .collect();
    let answering = holders.iter().filter(|p| p.answers == Some(true));
    answering
        .chain(&holders)
        .find_map(|p| holder_href(&e.sha1, p))
}

/// The file's URL on another peer, at the address of it a browser on
/// another host of the LAN can reach ([`browser_addr`]).
fn holder_href(sha1: &Sha1Digest, peer: &PeerRow) -> Option<String> {
    browser_addr(&peer.addrs).map(|a| format!("http://{a}{}", own_href(sha1)))
}

/// Of a peer's advertised addresses (best first, untrusted), the one a
/// browser on another host of the LAN can dial: the first that is not
/// loopback or link-local (the advertised order puts the address of the
/// route to etcd first: the LAN address other peers dial too). Only when
/// there is none, the first loopback or link-local one (every peer on one
/// machine). Only an `ip:port` that parses is used, printed from the
/// parsed value, so a record cannot put anything else into a link; an
/// IPv6 address with a zone (`%eth0`) has no URL form and is skipped.
fn browser_addr(addrs: &[String]) -> Option<SocketAddr> {
    let mut usable = addrs
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .filter(|a| {
            a.port() != 0
                && !a.ip().is_unspecified()
                && !a.ip().is_multicast()
                && !matches!(a, SocketAddr::V6(v) if v.scope_id() != 0)
        })
        .peekable();
    let first = usable.peek().copied();
    let local_only = |ip: IpAddr| match ip {
        IpAddr::V4(v) => v.is_loopback() || v.is_link_local(),
        IpAddr::V6(v) => v.is_loopback() || v.segments()[0] & 0xffc0 == 0xfe80,
    };
    usable.find(|a| !local_only(a.ip())).or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape("<img src=x onerror=alert(1)>"),
            "&lt;img src=x onerror=alert(1)&gt;"
        );
        assert_eq!(escape("a&b\"c'd"), "a&amp;b&quot;c&#39;d");
        // Controls, bidi and zero-width characters as the terminal shows them.
        assert_eq!(escape("x\u{1b}[31m\n"), "x\\u{1b}[31m\\u{a}");
        assert_eq!(escape("gnp\u{202e}.exe"), "gnp\\u{202e}.exe");
        assert_eq!(escape("a\u{200b}b\u{2066}"), "a\\u{200b}b\\u{2066}");
    }

    /// The largest page the caps allow: every list at its cap, every name
    /// at 100 characters of the costliest escape (`\u{202e}`, 8 bytes),
    /// ids at 64 characters, 8 addresses per peer.
    #[test]
    fn the_largest_page_the_caps_allow_stays_under_3_mib() {
        use super::super::{clip, FileRow, PeerRow, UploadRow, MAX_FILES, MAX_PEERS};
        let mut r = hostile_report();
        let name = || clip("\u{202e}".repeat(1000));
        let id = |i: usize| format!("{i:064}");
        let addr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".to_string();
        r.files.list = (0..MAX_FILES)
            .map(|_| FileRow {
                sha1: r.files.list[0].sha1,
                name: name(),
                size: u64::MAX,
                holders: usize::MAX,
                here: false,
                holder_ids: (0..super::super::MAX_HOLDER_IDS).map(id).collect(),
            })
            .collect();
        r.files.total = usize::MAX;
        r.peers = (0..MAX_PEERS)
            .map(|i| PeerRow {
                id: id(i),
                name: name(),
                version: name(),
                addrs: vec![addr.clone(); 8],
                ..r.peers[0].clone()
            })
            .collect();
        r.uploads = (0..256)
            .map(|_| UploadRow {
                client: addr.clone(),
                name: name(),
                ..r.uploads[0].clone()
            })
            .collect();
        let html = render(&r);
        eprintln!("largest page: {} bytes", html.len());
        assert!(html.len() < 3 << 20, "{} bytes", html.len());
    }

    #[test]
    fn rows_past_the_caps_are_counted_not_shown() {
        let mut r = hostile_report();
        r.peers_total = 300;
        r.files.total = 1234;
        let html = render(&r);
        assert!(html.contains("and 299 more peers"), "{html}");
        assert!(html.contains("and 1233 more files"));
        assert!(html.contains("300 registered"));
        let long = super::super::clip("x".repeat(200_000));
        assert_eq!(long.chars().count(), super::super::NAME_CHARS + 1);
        assert!(long.ends_with('…'));
        assert_eq!(super::super::clip("short".into()), "short");
    }

    /// A report whose every untrusted string is markup.
    fn hostile_report() -> StatusReport {
        use super::super::*;
        let evil = "<x onmouseover=alert(1)>\"'&";
        let sha1: crate::digest::Sha1Digest =
            "da39a3ee5e6b4b0d3255bfef95601890afd80709".parse().unwrap();
        StatusReport {
            peer: PeerStatus {
                id: evil.into(),
                name: evil.into(),
                version: evil.into(),
                addrs: vec![evil.into()],
                dataset: evil.into(),
                uptime_secs: 5,
            },
            index: IndexStatus {
                ready: false,
                files: 1,
                bytes: 2,
                generation: 3,
                hashed_files: 0,
                queued_files: 4,
                queued_bytes: 5,
            },
            registration: RegistrationStatus {
                registered: false,
                lease: Some(evil.into()),
                ttl_secs: 10,
                last_renewal_secs_ago: None,
                endpoint: evil.into(),
                error: Some(evil.into()),
            },
            peers: vec![PeerRow {
                id: evil.into(),
                name: evil.into(),
                version: evil.into(),
                addrs: vec![evil.into()],
                age_secs: 1,
                index_gen: 2,
                answers: Some(false),
                latency_ms: None,
                this: false,
            }],
            peers_total: 1,
            files: FilesStatus {
                total: 1,
                refreshed_secs_ago: Some(1.0),
                list: vec![FileRow {
                    sha1,
                    name: evil.into(),
                    size: 1,
                    holders: 1,
                    here: false,
                    holder_ids: vec![evil.into()],
                }],
            },
            uploads: vec![UploadRow {
                client: evil.into(),
                sha1,
                name: evil.into(),
                bytes: 1,
                rate: 1.0,
                active: true,
            }],
            downloads: vec![DownloadRow {
                sha1,
                name: evil.into(),
                size: 10,
                pieces_held: 1,
                pieces_total: 2,
                progress: 0.5,
                rate: 1.0,
                finished: false,
                peers: vec![evil.into()],
                from_seeds: 3 << 20,
                from_partials: 5 << 20,
            }],
            history: History {
                interval_secs: 1,
                upload: vec![0.0, 1.0],
                download: vec![2.0, 3.0],
            },
        }
    }

    #[test]
    fn every_untrusted_string_is_escaped() {
        let html = render(&hostile_report());
        assert!(!html.contains("<x"), "markup got through");
        assert!(
            !html.contains("onmouseover=alert(1)>\""),
            "attribute got through"
        );
        // Each of the 17 untrusted strings shows (escaped) where it belongs;
        // the download's peer is cut to 8 characters.
        assert!(
            html.matches("&lt;x onmouseover=alert(1)&gt;&quot;&#39;&amp;")
                .count()
                >= 15
        );
        assert!(html.contains("<code>&lt;x onmou</code>"));
        assert!(
            html.contains("3.0 MiB from seeds, 5.0 MiB from peers downloading it"),
            "where a download's bytes came from is shown"
        );
    }

    #[test]
    fn an_empty_report_renders_placeholders() {
        let mut r = hostile_report();
        r.peers.clear();
        r.files.list.clear();
        r.uploads.clear();
        r.downloads.clear();
        r.history.upload.clear();
        r.history.download.clear();
        let html = render(&r);
        assert!(html.contains("no peer registered"));
        assert!(html.contains("no files yet"));
        assert_eq!(html.matches("<p class=\"mute\">none</p>").count(), 2);
        assert!(html.ends_with("</html>\n"));
    }

    fn check_browser_addr(addrs: &[&str], want: Option<&str>) {
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            browser_addr(&addrs).map(|a| a.to_string()).as_deref(),
            want,
            "{addrs:?}"
        );
    }

    #[test]
    fn a_browser_gets_the_first_lan_address_else_a_local_one() {
        // The advertised order: route to etcd, other interfaces, bridges,
        // link-local, loopback.
        check_browser_addr(
            &[
                "10.0.0.5:7070",
                "172.17.0.1:7070",
                "169.254.1.2:7070",
                "127.0.0.1:7070",
            ],
            Some("10.0.0.5:7070"),
        );
        check_browser_addr(
            &[
                "169.254.1.2:7070",
                "[fe80::1%2]:7070",
                "[fe80::1]:7070",
                "[fd00::5]:7070",
            ],
            Some("[fd00::5]:7070"),
        );
        check_browser_addr(&["127.0.0.1:7070", "[::1]:7070"], Some("127.0.0.1:7070"));
        check_browser_addr(&["[::1]:7070"], Some("[::1]:7070"));
        // Nothing a URL can hold, or nothing to dial.
        check_browser_addr(
            &[
                "evil.example/x?:80",
                "a@10.0.0.9:80",
                "0.0.0.0:7070",
                "10.0.0.9:0",
                "[fe80::1%2]:7070",
                "224.0.0.1:7070",
            ],
            None,
        );
        check_browser_addr(&[], None);
    }

    #[test]
    fn a_file_links_this_peers_copy_else_an_answering_holders() {
        let mut r = hostile_report();
        let peer = |id: &str, addr: &str, answers| PeerRow {
            id: id.into(),
            name: format!("host-{id}"),
            version: "v".into(),
            addrs: vec![addr.into(), "127.0.0.1:7070".into()],
            age_secs: 1,
            index_gen: 2,
            answers,
            latency_ms: None,
            this: false,
        };
        r.peers = vec![
            peer("silent", "10.0.0.1:7070", Some(false)),
            peer("answers", "10.0.0.2:7070", Some(true)),
        ];
        let row = &mut r.files.list[0];
        let sha1 = row.sha1;
        row.name = "film.mp4".into();
        row.holders = 5;
        row.holder_ids = vec!["silent".into(), "answers".into(), "gone".into()];
        let html = render(&r);
        let link = format!(
            "<a class=\"dl\" href=\"http://10.0.0.2:7070/v1/files/{sha1}\" rel=\"noreferrer\">film.mp4</a>"
        );
        assert!(html.contains(&link), "{html}");
        assert!(
            !html.contains("10.0.0.1:7070/v1/files"),
            "one link per row: {html}"
        );
        assert!(html.contains("host-silent <code>silent</code>"), "{html}");
        assert!(html.contains("host-answers <code>answers</code>"), "{html}");
        assert!(
            html.contains("<code>gone</code>, <span class=\"mute\">+2 more</span>"),
            "{html}"
        );

        r.files.list[0].here = true;
        let html = render(&r);
        let own = format!("<a class=\"dl\" href=\"/v1/files/{sha1}\" rel=\"noreferrer\">");
        assert!(html.contains(&own), "{html}");
        assert!(
            html.contains("<td class=\"from\">this peer, host-silent"),
            "{html}"
        );
        assert!(html.contains("+1 more"), "{html}");

        // No holder with a usable address: the name alone.
        r.files.list[0].here = false;
        r.files.list[0].holder_ids = vec!["gone".into()];
        let html = render(&r);
        assert!(!html.contains("class=\"dl\""), "{html}");
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3661), "1h 1m");
        assert_eq!(duration(90000), "1d 1h");
    }
}
