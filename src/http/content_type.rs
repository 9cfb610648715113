//! The `Content-Type` of a shared file, from its name's extension.
//!
//! A small allow-list of passive types (images, audio, video, PDF, plain
//! text, archives): anything else, and above all anything a browser could
//! run as active content of the peer's origin (HTML, SVG, XML, XSLT,
//! JavaScript, CSS), is `application/octet-stream`. The file answers also
//! say `Content-Disposition: attachment` and `X-Content-Type-Options:
//! nosniff`, so a browser saves every file and never guesses a type from
//! its bytes; the type tells the browser, a media player or `curl` what
//! the file is.
//!
//! A hand table rather than a crate such as `mime_guess`: a full
//! extension database answers `text/html` and `image/svg+xml` too, so it
//! would still need this deny-list, while an allow-list is safe by default
//! for every extension nobody thought of.

/// The type of anything not in the table.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Lowercase extension -> type. Only types a browser shows without
/// running anything from the file.
const TYPES: &[(&str, &str)] = &[
    // Images (SVG is a document that runs scripts: not here).
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("bmp", "image/bmp"),
    ("ico", "image/vnd.microsoft.icon"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    // Video.
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("webm", "video/webm"),
    ("mkv", "video/x-matroska"),
    ("mov", "video/quicktime"),
    ("avi", "video/x-msvideo"),
    ("mpg", "video/mpeg"),
    ("mpeg", "video/mpeg"),
    ("ogv", "video/ogg"),
    // Audio.
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("flac", "audio/flac"),
    ("wav", "audio/wav"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("opus", "audio/ogg"),
    // Documents and text.
    ("pdf", "application/pdf"),
    ("txt", "text/plain; charset=utf-8"),
    ("text", "text/plain; charset=utf-8"),
    ("log", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("json", "application/json"),
    // Archives and packages.
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tgz", "application/gzip"),
    ("bz2", "application/x-bzip2"),
    ("xz", "application/x-xz"),
    ("zst", "application/zstd"),
    ("tar", "application/x-tar"),
    ("7z", "application/x-7z-compressed"),
    ("iso", "application/x-iso9660-image"),
    ("deb", "application/vnd.debian.binary-package"),
    ("epub", "application/epub+zip"),
];

/// The `Content-Type` for a file named `name`: the type its extension
/// (case-insensitive, after the last dot) names in the table, else
/// [`OCTET_STREAM`]. A name without an extension (`README`, `.bashrc`)
/// is [`OCTET_STREAM`].
pub fn for_name(name: &str) -> &'static str {
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return OCTET_STREAM;
    };
    if stem.is_empty() || stem.ends_with('/') {
        return OCTET_STREAM;
    }
    TYPES
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map_or(OCTET_STREAM, |(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_to_content_types() {
        let table = [
            ("holiday.jpg", "image/jpeg"),
            ("HOLIDAY.JPEG", "image/jpeg"),
            ("a.png", "image/png"),
            ("film.mp4", "video/mp4"),
            ("film.MKV", "video/x-matroska"),
            ("song.mp3", "audio/mpeg"),
            ("paper.pdf", "application/pdf"),
            ("notes.txt", "text/plain; charset=utf-8"),
            ("data.csv", "text/csv; charset=utf-8"),
            ("backup.tar.gz", "application/gzip"),
            ("a.zip", "application/zip"),
            // No extension, a dot file, a trailing dot, an unknown one.
            ("README", OCTET_STREAM),
            (".bashrc", OCTET_STREAM),
            ("name.", OCTET_STREAM),
            ("big.bin", OCTET_STREAM),
            ("", OCTET_STREAM),
            // Active content: never a type a browser renders or runs.
            ("index.html", OCTET_STREAM),
            ("index.HTM", OCTET_STREAM),
            ("page.xhtml", OCTET_STREAM),
            ("page.shtml", OCTET_STREAM),
            ("logo.svg", OCTET_STREAM),
            ("logo.svgz", OCTET_STREAM),
            ("feed.xml", OCTET_STREAM),
            ("style.xsl", OCTET_STREAM),
            ("app.js", OCTET_STREAM),
            ("app.mjs", OCTET_STREAM),
            ("site.css", OCTET_STREAM),
            ("old.swf", OCTET_STREAM),
            ("mod.wasm", OCTET_STREAM),
            ("x.jpg.html", OCTET_STREAM),
        ];
        for (name, want) in table {
            assert_eq!(for_name(name), want, "{name:?}");
        }
    }

    #[test]
    fn the_table_holds_no_active_type() {
        for (ext, t) in TYPES {
            assert_eq!(*ext, ext.to_ascii_lowercase(), "{ext}");
            for active in ["html", "svg", "xml", "javascript", "css", "xsl"] {
                assert!(!t.contains(active), "{ext} -> {t}");
            }
        }
    }
}
