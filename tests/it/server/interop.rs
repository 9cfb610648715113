//! Ordinary HTTP clients against the server: ureq, curl and aria2c.

use std::path::Path;
use std::process::Command;

use super::support::*;

const CURL: &str = "/usr/bin/curl";
const ARIA2C: &str = "/usr/bin/aria2c";

fn require(tool: &str) {
    assert!(
        Path::new(tool).exists(),
        "{tool} is missing: install it (apt-get install -y curl aria2) to run the interoperability tests"
    );
}

#[test]
fn ureq_downloads_a_file() {
    let fx = Fixture::start(test_config("ti-ureq"));
    let content = data(500_000, 10);
    let (sha1, _) = fx.add_file("u.bin", &content);
    let agent = ureq::Agent::new_with_defaults();
    for _ in 0..2 {
        // Twice: the second request reuses the pooled keep-alive connection.
        let mut response = agent
            .get(&fx.url(&format!("/v1/files/{sha1}")))
            .call()
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response
            .body_mut()
            .with_config()
            .limit(10_000_000)
            .read_to_vec()
            .unwrap();
        assert!(body == content);
    }
    let mut ranged = agent
        .get(&fx.url(&format!("/v1/files/{sha1}")))
        .header("Range", "bytes=10-19")
        .call()
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.body_mut().read_to_vec().unwrap(), &content[10..20]);
}

#[test]
fn curl_downloads_whole_files_and_ranges() {
    require(CURL);
    let fx = Fixture::start(test_config("ti-curl"));
    let content = data(1_000_000, 11);
    let (sha1, _) = fx.add_file("c.bin", &content);
    let out = fx.dir.path().join("curl-out");
    let url = fx.url(&format!("/v1/files/{sha1}"));

    let status = Command::new(CURL)
        .args(["-sS", "--fail", "-o"])
        .arg(&out)
        .arg(&url)
        .status()
        .unwrap();
    assert!(status.success(), "curl failed: {status}");
    assert!(
        std::fs::read(&out).unwrap() == content,
        "curl's whole download differs"
    );

    let ranged = Command::new(CURL)
        .args(["-sS", "--fail", "-r", "100-199"])
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        ranged.status.success(),
        "curl -r failed: {}",
        String::from_utf8_lossy(&ranged.stderr)
    );
    assert_eq!(ranged.stdout, &content[100..200]);

    // `-J -O` takes the name from Content-Disposition.
    let jdir = fx.dir.path().join("j");
    std::fs::create_dir(&jdir).unwrap();
    let named = Command::new(CURL)
        .current_dir(&jdir)
        .args(["-sS", "--fail", "-J", "-O"])
        .arg(&url)
        .status()
        .unwrap();
    assert!(named.success());
    assert!(std::fs::read(jdir.join("c.bin")).unwrap() == content);
}

#[test]
fn aria2c_downloads_with_several_connections() {
    require(ARIA2C);
    let fx = Fixture::start(test_config("ti-aria"));
    let content = data(8 * 1024 * 1024 + 12_345, 12);
    let (sha1, _) = fx.add_file("a.bin", &content);
    let out_dir = fx.dir.path().join("aria");
    std::fs::create_dir(&out_dir).unwrap();
    let output = Command::new(ARIA2C)
        .args([
            "-x4",
            "-s4",
            "-k1M",
            "--min-split-size=1M",
            "--no-conf",
            "--allow-overwrite=true",
        ])
        .args([
            "--console-log-level=warn",
            "--summary-interval=0",
            "--file-allocation=none",
        ])
        .arg("-d")
        .arg(&out_dir)
        .args(["-o", "out.bin"])
        .arg(fx.url(&format!("/v1/files/{sha1}")))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "aria2c failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        std::fs::read(out_dir.join("out.bin")).unwrap() == content,
        "aria2c's download differs"
    );
    let opens = fx.source.opens.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        opens >= 2,
        "aria2c should have asked for several ranges, asked {opens} times"
    );
}
