//! The request loop: one POST to the first endpoint that answers.
//!
//! Every request goes through [`Client::call`]: it tries the endpoint that
//! answered last, then the others in order. A connection error, a timeout,
//! or an etcd "unavailable" answer (no leader, lost quorum) moves on to the
//! next endpoint; any other etcd answer is final. With auth configured, a
//! token is obtained on first use and again when etcd calls it invalid.
//!
//! Watch streams (`watch.rs`) use the same endpoint order
//! ([`Client::endpoint_order`]) and record the endpoint that answered, so
//! a dead first endpoint costs one connect timeout once, not on every
//! reconnect. This module knows nothing of watches.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::codec::{AuthResponse, ErrorBody};
use super::{Config, EndpointError, Error, Refusal, Result};

/// Largest gateway answer read (the 3.4 gateway refuses replies over
/// 4 MiB; 3.5 sends anything). A larger one is [`Error::TooLarge`], never
/// a truncated body: prefix listings then page smaller (`kv.rs`).
pub const MAX_ANSWER: u64 = 8 * 1024 * 1024;

/// A synchronous etcd v3 client. Cheap to clone; clones share endpoints,
/// connection pool and token.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) cfg: Config,
    agent: ureq::Agent,
    /// Trust for `https://` endpoints, for the agents of watch streams.
    tls: ureq::tls::TlsConfig,
    /// Index of the endpoint that answered last.
    preferred: AtomicUsize,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.cfg.endpoints)
            .finish()
    }
}

impl Client {
    /// Builds a client. Nothing is sent until the first request.
    pub fn new(cfg: Config) -> Result<Client> {
        if cfg.endpoints.is_empty() {
            return Err(Error::NoEndpoint);
        }
        for ep in &cfg.endpoints {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(Error::BadEndpoint(ep.clone()));
            }
        }
        let tls = tls_config(&cfg)?;
        let base = || {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .user_agent(format!("piratebay-sync/{}", crate::version::VERSION))
                .timeout_connect(Some(cfg.connect_timeout))
                .tls_config(tls.clone())
                .max_idle_connections_per_host(4)
        };
        let agent = base()
            .timeout_global(Some(cfg.request_timeout))
            .build()
            .new_agent();
        Ok(Client {
            inner: Arc::new(Inner {
                cfg,
                agent,
                tls,
                preferred: AtomicUsize::new(0),
                token: Mutex::new(None),
            }),
        })
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.cfg.endpoints
    }

    /// A new agent for one long-lived stream: no overall timeout, reads
    /// that may block for `idle` at most. Its own pool, so shutting it down
    /// ([`ureq::Agent::shutdown`]) interrupts that stream and nothing else.
    pub(crate) fn stream_agent(&self, idle: std::time::Duration) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("piratebay-sync/{}", crate::version::VERSION))
            .timeout_connect(Some(self.inner.cfg.connect_timeout))
            .timeout_per_read(Some(idle))
            .tls_config(self.inner.tls.clone())
            .max_idle_connections_per_host(1)
            .build()
            .new_agent()
    }

    /// The endpoints in the order to try them, with their index: the one
    /// that answered last first, then the others in order.
    pub(crate) fn endpoint_order(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        let eps = &self.inner.cfg.endpoints;
        let start = self.inner.preferred.load(Ordering::Relaxed);
        (0..eps.len()).map(move |k| {
            let i = (start + k) % eps.len();
            (i, eps[i].as_str())
        })
    }

    /// Records that endpoint `i` answered: it is tried first next time.
    pub(crate) fn set_preferred(&self, i: usize) {
        self.inner.preferred.store(i, Ordering::Relaxed);
    }

    /// POSTs `body` to `path` (e.g. `/v3/kv/range`) and decodes the answer.
    pub(crate) fn call<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        let bytes = self.call_raw(path, body)?;
        let endpoint = self.preferred_endpoint();
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            endpoint,
            path: path.to_string(),
            source: e,
        })
    }

    fn call_raw(&self, path: &str, body: &Value) -> Result<Vec<u8>> {
        let started = std::time::Instant::now();
        let result = self.call_raw_untimed(path, body);
        crate::metrics::ETCD_LATENCY.observe(started.elapsed());
        if result.is_err() {
            crate::metrics::ETCD_ERRORS.inc();
        }
        result
    }

    fn call_raw_untimed(&self, path: &str, body: &Value) -> Result<Vec<u8>> {
        let mut reauthenticated = false;
        loop {
            let token = self.token_for(path)?;
            match self.post_any(&self.inner.agent, path, body, token.as_deref()) {
                Err(e)
                    if !reauthenticated
                        && self.inner.cfg.user.is_some()
                        && e.refusal() == Some(Refusal::InvalidToken) =>
                {
                    log::info!("etcd auth token expired; authenticating again");
                    self.invalidate_token();
                    reauthenticated = true;
                }
                Ok((_, resp)) => return Ok(resp),
                Err(e) => return Err(e),
            }
        }
    }

    /// The auth token to send, authenticating first if needed.
    pub(crate) fn token_for(&self, path: &str) -> Result<Option<String>> {
        let (Some(user), Some(password)) = (&self.inner.cfg.user, &self.inner.cfg.password) else {
            return Ok(None);
        };
        if path == "/v3/auth/authenticate" {
            return Ok(None);
        }
        if let Some(t) = self.inner.token.lock().clone() {
            return Ok(Some(t));
        }
        let body = json!({ "name": user, "password": password });
        let bytes = match self.post_any(&self.inner.agent, "/v3/auth/authenticate", &body, None) {
            Ok((_, b)) => b,
            Err(Error::Etcd { message, .. }) => {
                return Err(Error::Auth {
                    user: user.clone(),
                    message,
                })
            }
            Err(e) => return Err(e),
        };
        let auth: AuthResponse = serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            endpoint: self.preferred_endpoint(),
            path: "/v3/auth/authenticate".into(),
            source: e,
        })?;
        if auth.token.is_empty() {
            return Err(Error::Auth {
                user: user.clone(),
                message: "etcd returned no token (is auth enabled?)".into(),
            });
        }
        *self.inner.token.lock() = Some(auth.token.clone());
        Ok(Some(auth.token))
    }

    /// Forgets the auth token, so the next request authenticates again.
    pub(crate) fn invalidate_token(&self) {
        *self.inner.token.lock() = None;
    }

    pub(crate) fn preferred_endpoint(&self) -> String {
        let eps = &self.inner.cfg.endpoints;
        eps[self.inner.preferred.load(Ordering::Relaxed) % eps.len()].clone()
    }

    /// Tries every endpoint, starting with the preferred one. Returns the
    /// endpoint index that answered and the body (for a 200), or the first
    /// final error.
    pub(crate) fn post_any(
        &self,
        agent: &ureq::Agent,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<(usize, Vec<u8>)> {
        let eps = &self.inner.cfg.endpoints;
        let mut last = None;
        let mut tls_failure = None;
        for (i, ep) in self.endpoint_order() {
            let mut answer = post_one(agent, ep, path, body, token);
            if matches!(answer, Err(ureq::Error::Timeout(ureq::Timeout::Connect))) {
                // A lost SYN is sent again by TCP only after 1 s, past the
                // connect timeout: one more try sends a fresh one (1 %
                // packet loss otherwise fails a request now and then).
                log::debug!("etcd {ep}{path}: connect timed out; trying it once more");
                answer = post_one(agent, ep, path, body, token);
            }
            match answer {
                Ok(Answer::Ok(bytes)) => {
                    self.set_preferred(i);
                    return Ok((i, bytes));
                }
                Ok(Answer::Refused { code, message })
                    if Refusal::of(code, &message) == Refusal::Unavailable =>
                {
                    log::debug!("etcd {ep}{path}: {message}; trying the next endpoint");
                    last = Some(EndpointError::Unavailable {
                        endpoint: ep.to_string(),
                        message,
                    });
                }
                Ok(Answer::Refused { code, message }) => {
                    self.set_preferred(i);
                    return Err(Error::Etcd {
                        endpoint: ep.to_string(),
                        path: path.to_string(),
                        code,
                        message,
                    });
                }
                Ok(Answer::TooLarge) => {
                    return Err(Error::TooLarge {
                        endpoint: ep.to_string(),
                        path: path.to_string(),
                        limit: MAX_ANSWER,
                    })
                }
                Ok(Answer::Status(status)) => {
                    return Err(Error::Status {
                        endpoint: ep.to_string(),
                        path: path.to_string(),
                        status,
                    })
                }
                Err(e) => {
                    log::debug!("etcd {ep}{path}: {e}; trying the next endpoint");
                    if is_tls_failure(&e) {
                        tls_failure = Some(Error::Tls {
                            endpoint: ep.to_string(),
                            source: Box::new(e),
                        });
                    } else {
                        last = Some(EndpointError::Transport {
                            endpoint: ep.to_string(),
                            source: Box::new(e),
                        });
                    }
                }
            }
        }
        if let Some(tls) = tls_failure {
            return Err(tls);
        }
        match last {
            Some(last) => Err(Error::Unreachable {
                endpoints: eps.join(","),
                last,
            }),
            None => Err(Error::NoEndpoint),
        }
    }
}

enum Answer {
    Ok(Vec<u8>),
    Refused { code: i64, message: String },
    Status(u16),
    TooLarge,
}

/// One POST to one endpoint. `Err` is a transport failure (try the next one).
fn post_one(
    agent: &ureq::Agent,
    endpoint: &str,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> std::result::Result<Answer, ureq::Error> {
    let url = format!("{endpoint}{path}");
    let mut req = agent.post(&url).header("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    let resp = req.send(body.to_string().as_bytes())?;
    let status = resp.status().as_u16();
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_ANSWER + 1)
        .read_to_end(&mut bytes)
        .map_err(ureq::Error::Io)?;
    if bytes.len() as u64 > MAX_ANSWER {
        return Ok(Answer::TooLarge);
    }
    if status == 200 {
        return Ok(Answer::Ok(bytes));
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(e) if !e.message.is_empty() || !e.error.is_empty() => Ok(Answer::Refused {
            code: e.code,
            message: if e.message.is_empty() {
                e.error
            } else {
                e.message
            },
        }),
        _ => Ok(Answer::Status(status)),
    }
}

/// Whether a transport error is a failed TLS handshake: ureq's own TLS
/// errors, or a rustls error that ureq passes on inside an io error.
fn is_tls_failure(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => true,
        ureq::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    }
}

/// Whether etcd's message (a watch error, an error body) says the auth
/// token is invalid.
pub(crate) fn is_token_error(message: &str) -> bool {
    Refusal::of(0, message) == Refusal::InvalidToken
}

fn tls_config(cfg: &Config) -> Result<ureq::tls::TlsConfig> {
    let Some(path) = &cfg.ca_file else {
        return Ok(ureq::tls::TlsConfig::default());
    };
    let pem = std::fs::read(path).map_err(|source| Error::ReadCa {
        path: path.clone(),
        source,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::BadCa {
                    path: path.clone(),
                    problem: format!("is not valid PEM: {e}"),
                })
            }
        }
    }
    if certs.is_empty() {
        return Err(Error::BadCa {
            path: path.clone(),
            problem: "holds no certificate".into(),
        });
    }
    Ok(ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password_or_token() {
        let client = Client::new(Config {
            user: Some("pb-user".into()),
            password: Some("hunter2-secret".into()),
            ..Config::default()
        })
        .expect("a valid config");
        *client.inner.token.lock() = Some("token-secret".into());
        let shown = format!("{client:?} {client:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("token-secret"), "{shown}");
        assert!(shown.contains("127.0.0.1:2379"), "{shown}");
    }
}
