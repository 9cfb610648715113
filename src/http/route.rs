//! Routes of the peer API, matched on the raw request path.
//!
//! The path is never percent-decoded and never touches the file system:
//! a file is named only by the 40 hex digits of its SHA1, so `%2e%2e%2f`
//! or `../` cannot name anything. A query string is ignored; an
//! absolute-form target (`http://host/v1/files`) is reduced to its path as
//! RFC 9112 section 3.2.2 asks. Every route answers `GET` and `HEAD`.

use super::request::Method;
use super::response::Status;
use crate::digest::ParseDigestError;
use crate::digest::Sha1Digest;
use crate::protocol::{
    FILES_PATH, HAVE_SEGMENT, HEALTH_PATH, METRICS_PATH, PAGE_PATH, STATUS_PATH,
};

/// The `Allow` value of a `405`.
pub const ALLOW: &str = "GET, HEAD";

/// Last segment of the piece-list route.
const PIECES_SEGMENT: &str = "pieces";

/// An endpoint of the peer API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/`: the status page.
    Page,
    /// `/v1/status`: the status as JSON.
    Status,
    /// `/metrics`: Prometheus metrics.
    Metrics,
    /// `/v1/health`.
    Health,
    /// `/v1/files`.
    FileList,
    /// `/v1/files/<sha1>`.
    File(Sha1Digest),
    /// `/v1/files/<sha1>/pieces`.
    Pieces(Sha1Digest),
    /// `/v1/files/<sha1>/have`.
    Have(Sha1Digest),
}

/// Why a request matches no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No such path.
    #[error(
        "no such path: expected /, /v1/status, /metrics, /v1/health, /v1/files, /v1/files/<sha1>, /v1/files/<sha1>/pieces or /v1/files/<sha1>/have"
    )]
    NotFound,
    /// A file route with something other than 40 hex digits.
    #[error("bad file id: {0}")]
    BadSha1(#[from] ParseDigestError),
    /// A known path with a method other than GET or HEAD.
    #[error("method {method} not allowed: expected GET or HEAD")]
    MethodNotAllowed {
        /// The method received.
        method: String,
    },
}

impl RouteError {
    /// The status to answer with.
    pub fn status(&self) -> Status {
        match self {
            RouteError::NotFound => Status::NOT_FOUND,
            RouteError::BadSha1(_) => Status::BAD_REQUEST,
            RouteError::MethodNotAllowed { .. } => Status::METHOD_NOT_ALLOWED,
        }
    }
}

/// The route named by `method` and the raw request `target`.
pub fn route(method: &Method, target: &str) -> Result<Route, RouteError> {
    let route = match_path(path_of(target))?;
    match method {
        Method::Get | Method::Head => Ok(route),
        Method::Other(m) => Err(RouteError::MethodNotAllowed {
            method: m.chars().take(32).collect(),
        }),
    }
}

/// The label of `target`'s route in metrics (a fixed set, whatever the
/// client sent).
pub fn label(target: &str) -> &'static str {
    match match_path(path_of(target)) {
        Ok(Route::Page) => "page",
        Ok(Route::Status) => "status",
        Ok(Route::Metrics) => "metrics",
        Ok(Route::Health) => "health",
        Ok(Route::FileList) => "files",
        Ok(Route::File(_)) => "file",
        Ok(Route::Pieces(_)) => "pieces",
        Ok(Route::Have(_)) => "have",
        Err(_) => "other",
    }
}

/// The path of an origin-form or absolute-form target, query dropped.
fn path_of(target: &str) -> &str {
    let mut path = target;
    for scheme in ["http://", "https://"] {
        let has_scheme = path
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme));
        if has_scheme {
            let rest = &path[scheme.len()..];
            path = rest.find('/').map_or("/", |i| &rest[i..]);
            break;
        }
    }
    path.split('?').next().unwrap_or(path)
}

fn match_path(path: &str) -> Result<Route, RouteError> {
    match path {
        HEALTH_PATH => return Ok(Route::Health),
        PAGE_PATH => return Ok(Route::Page),
        STATUS_PATH => return Ok(Route::Status),
        METRICS_PATH => return Ok(Route::Metrics),
        _ => {}
    }
    if path == FILES_PATH {
        return Ok(Route::FileList);
    }
    let rest = path
        .strip_prefix(FILES_PATH)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|r| !r.is_empty())
        .ok_or(RouteError::NotFound)?;
    match rest.split_once('/') {
        None => Ok(Route::File(rest.parse()?)),
        Some((id, PIECES_SEGMENT)) => Ok(Route::Pieces(id.parse()?)),
        Some((id, HAVE_SEGMENT)) => Ok(Route::Have(id.parse()?)),
        Some(_) => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";

    fn sha() -> Sha1Digest {
        SHA.parse().unwrap()
    }

    /// Expected outcome: a route, or the status of the refusal.
    fn check(method: &str, target: &str, expected: Result<Route, u16>) {
        let method = match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_owned()),
        };
        let got = route(&method, target).map_err(|e| e.status().0);
        assert_eq!(got, expected, "{} {target}", method.as_str());
    }

    #[test]
    fn known_routes() {
        check("GET", "/v1/health", Ok(Route::Health));
        check("HEAD", "/v1/health", Ok(Route::Health));
        check("GET", "/", Ok(Route::Page));
        check("GET", "/?q=x", Ok(Route::Page));
        check("GET", "http://peer", Ok(Route::Page));
        check("GET", "http://peer/", Ok(Route::Page));
        check("GET", "/v1/status", Ok(Route::Status));
        check("HEAD", "/metrics", Ok(Route::Metrics));
        check("GET", "/v1/files", Ok(Route::FileList));
        check("GET", "/v1/files?x=1", Ok(Route::FileList));
        check("GET", &format!("/v1/files/{SHA}"), Ok(Route::File(sha())));
        check("HEAD", &format!("/v1/files/{SHA}"), Ok(Route::File(sha())));
        check(
            "GET",
            &format!("/v1/files/{}", SHA.to_uppercase()),
            Ok(Route::File(sha())),
        );
        check(
            "GET",
            &format!("/v1/files/{SHA}/pieces"),
            Ok(Route::Pieces(sha())),
        );
        check(
            "GET",
            &format!("/v1/files/{SHA}/have"),
            Ok(Route::Have(sha())),
        );
        check(
            "GET",
            &format!("http://peer:7070/v1/files/{SHA}"),
            Ok(Route::File(sha())),
        );
        check("GET", "HTTP://peer/v1/health", Ok(Route::Health));
    }

    #[test]
    fn unknown_paths_are_404() {
        for target in [
            "*",
            "",
            "/v1",
            "/v1/",
            "/v1/files/",
            "/v1/health/",
            "/v1/healthz",
            "/v2/files",
            "/V1/FILES",
            "/v1/filesx",
            "//v1/files",
            "/v1/files/../files",
            "/v1/files/../../etc/passwd/pieces",
            "/v1/./files",
            "/v1/status/",
            "/metrics/x",
            "//",
        ] {
            check("GET", target, Err(404));
        }
        check("GET", &format!("/v1/files/{SHA}/other"), Err(404));
        check("GET", &format!("/v1/files/{SHA}/pieces/x"), Err(404));
        check("GET", &format!("/v1/files/{SHA}/"), Err(404));
    }

    #[test]
    fn labels_are_a_fixed_set() {
        assert_eq!(label("/"), "page");
        assert_eq!(label("/metrics"), "metrics");
        assert_eq!(label(&format!("/v1/files/{SHA}")), "file");
        assert_eq!(label("/v1/files/%3Cscript%3E"), "other");
        assert_eq!(label("/anything/else"), "other");
    }

    #[test]
    fn bad_file_ids_are_400() {
        for target in [
            "/v1/files/abc",
            "/v1/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "/v1/files/..",
            "/v1/files/zz39a3ee5e6b4b0d3255bfef95601890afd80709",
            "/v1/files/da39a3ee5e6b4b0d3255bfef95601890afd807090",
            "/v1/files/%64a39a3ee5e6b4b0d3255bfef95601890afd80709",
        ] {
            check("GET", target, Err(400));
        }
        check("GET", "/v1/files/abc/pieces", Err(400));
    }

    #[test]
    fn other_methods_are_405_on_known_paths() {
        check("POST", "/v1/files", Err(405));
        check("DELETE", &format!("/v1/files/{SHA}"), Err(405));
        check("get", "/v1/health", Err(405));
        check("OPTIONS", "/v1/health", Err(405));
        check("POST", "/nope", Err(404));
    }
}
