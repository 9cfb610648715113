//! A test certificate authority made with openssl: a CA, a server
//! certificate for 127.0.0.1 signed by it, and an unrelated CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

/// Certificates in a temp dir that lives as long as any clone.
#[derive(Clone)]
pub struct TestCerts {
    _dir: Arc<TempDir>,
    /// The CA that signed the server certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate for IP 127.0.0.1 (PEM).
    pub server_cert: PathBuf,
    /// Its private key (PEM).
    pub server_key: PathBuf,
    /// A CA that signed nothing here: trusting it must not be enough.
    pub other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (scripts/deps.sh test installs it): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCerts {
    /// Generates a fresh CA and server certificate (EC P-256, valid 2 days).
    pub fn generate() -> TestCerts {
        let dir = tempfile::Builder::new()
            .prefix("pbs-tls-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (key, cert, cn) in [
            ("ca.key", "ca.pem", "pbs test ca"),
            ("other.key", "other.pem", "pbs other ca"),
        ] {
            let subj = format!("/CN={cn}");
            let mut a = vec!["req", "-x509"];
            a.extend(ec);
            a.extend(["-keyout", key, "-out", cert, "-days", "2", "-subj", &subj]);
            openssl(d, &a);
        }
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(d, &a);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        TestCerts {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            other_ca: d.join("other.pem"),
            _dir: Arc::new(dir),
        }
    }

    /// `GET <endpoint>/health` trusting the test CA.
    pub fn is_healthy(&self, endpoint: &str) -> bool {
        let Ok(pem) = std::fs::read(&self.ca) else {
            return false;
        };
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            )
            .build()
            .into();
        agent
            .get(format!("{endpoint}/health"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|t| t.contains("true"))
    }
}
