//! Client configuration, built once and cheap to clone.

use std::path::PathBuf;
use std::time::Duration;

/// How to reach etcd. Build it once; clone it freely. Its `Debug` output
/// never shows the password.
#[derive(Clone)]
pub struct Config {
    /// Endpoints such as `http://127.0.0.1:2379`, tried in order.
    pub endpoints: Vec<String>,
    /// User name for etcd authentication, if enabled.
    pub user: Option<String>,
    /// Password for etcd authentication.
    pub password: Option<String>,
    /// A PEM file of CA certificates to trust for `https://` endpoints.
    pub ca_file: Option<PathBuf>,
    /// Time allowed to connect to one endpoint.
    pub connect_timeout: Duration,
    /// Time allowed for one whole request (not used for watch streams).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The endpoint used when none is configured.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoints: vec![DEFAULT_ENDPOINT.to_string()],
            user: None,
            password: None,
            ca_file: None,
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(3),
        }
    }
}

impl Config {
    /// A config for the given endpoints with default timeouts.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Config {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password() {
        let c = Config {
            user: Some("pb".into()),
            password: Some("hunter2-secret".into()),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("pb"),
            "{shown}"
        );
    }
}
