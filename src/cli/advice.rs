//! What the user should do about an error: the binary's advice, kept out
//! of the library's messages.
//!
//! The library's errors say what failed and why in its own terms; this
//! module maps each typed error (wherever it sits in the `source` chain,
//! looking through the library's wrapper errors) to one line of advice in
//! the command line's terms: a flag, its `PIRATEBAY_*` variable, a command
//! to run. [`line`] is what the binary prints: the chain, then the advice.

use std::error::Error;
use std::io::ErrorKind;

use piratebay_sync::{
    etcd, DiscoveryError, FetchError, HolderFailure, HolderFaultKind, HoldersError, IndexError,
    NotFound, ParseDigestError, PeerError, ServerError,
};

/// `err: cause: cause; advice` on one line (no advice when none applies).
pub fn line(e: &(dyn Error + 'static)) -> String {
    let chain = super::error_chain(e);
    match advice(e) {
        Some(a) => format!("{chain}; {a}"),
        None => chain,
    }
}

/// The advice for the first error of the chain that has one.
pub fn advice(e: &(dyn Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(a) = one(err) {
            return Some(a);
        }
        cur = err.source();
    }
    None
}

/// The advice for `e` itself, if it is one of the library's error types.
fn one(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(e) = e.downcast_ref::<etcd::Error>() {
        return etcd(e);
    }
    if let Some(e) = e.downcast_ref::<DiscoveryError>() {
        return discovery(e);
    }
    if let Some(e) = e.downcast_ref::<IndexError>() {
        return index(e);
    }
    if let Some(e) = e.downcast_ref::<ServerError>() {
        return server(e);
    }
    if let Some(e) = e.downcast_ref::<PeerError>() {
        return peer(e);
    }
    if let Some(e) = e.downcast_ref::<FetchError>() {
        return fetch(e);
    }
    if let Some(e) = e.downcast_ref::<HoldersError>() {
        return advice(e.source.as_ref());
    }
    if let Some(e) = e.downcast_ref::<NotFound>() {
        return Some(match e {
            NotFound::NoReachablePeerHolds { .. } => {
                "check that those peers are up and reachable from here, then try again".into()
            }
            _ => "check the SHA1 with `piratebay-sync files`".into(),
        });
    }
    if e.downcast_ref::<ParseDigestError>().is_some() {
        return Some("copy the SHA1 from `piratebay-sync files`".into());
    }
    None
}

fn etcd(e: &etcd::Error) -> Option<String> {
    use etcd::Error as E;
    Some(match e {
        E::Unreachable { .. } => "start etcd (`make run` starts a local etcd, or \
             `docker compose up -d etcd`) or point --etcd / PIRATEBAY_ETCD at your cluster"
            .into(),
        E::Tls { .. } => "if etcd uses its own CA, pass its certificate with --etcd-ca FILE \
             (PIRATEBAY_ETCD_CA)"
            .into(),
        E::Auth { .. } => "check --etcd-user / --etcd-password \
             (PIRATEBAY_ETCD_USER / PIRATEBAY_ETCD_PASSWORD)"
            .into(),
        E::Status { .. } => "check that --etcd (PIRATEBAY_ETCD) points at etcd's client URL, \
             such as http://127.0.0.1:2379"
            .into(),
        E::NoEndpoint | E::BadEndpoint(_) => {
            "give --etcd (PIRATEBAY_ETCD) as URLs such as http://127.0.0.1:2379".into()
        }
        E::ReadCa { .. } | E::BadCa { .. } => {
            "pass a PEM file of CA certificates with --etcd-ca (PIRATEBAY_ETCD_CA)".into()
        }
        _ => return None,
    })
}

fn discovery(e: &DiscoveryError) -> Option<String> {
    match e {
        DiscoveryError::Etcd(e) => etcd(e),
        DiscoveryError::ReadPeerId { .. } | DiscoveryError::WritePeerId { .. } => {
            Some("pass a writable --state-dir (PIRATEBAY_STATE_DIR)".into())
        }
        DiscoveryError::Ttl(_) => Some("use --ttl 2 or more (PIRATEBAY_TTL)".into()),
        _ => None,
    }
}

fn index(e: &IndexError) -> Option<String> {
    Some(match e {
        IndexError::OpenDataset { path, source } => match source.kind() {
            ErrorKind::NotFound => format!(
                "create it (mkdir -p {}) or pass --dataset (PIRATEBAY_DATASET)",
                path.display()
            ),
            ErrorKind::PermissionDenied => "give this user access to it and its parent \
                 directories, or pass another --dataset (PIRATEBAY_DATASET)"
                .into(),
            _ => "pass a readable directory with --dataset (PIRATEBAY_DATASET)".into(),
        },
        IndexError::ListDataset { source, .. } if source.kind() == ErrorKind::PermissionDenied => {
            "give this user read access to it, or pass another --dataset (PIRATEBAY_DATASET)".into()
        }
        IndexError::ListDataset { .. } => {
            "pass a readable directory with --dataset (PIRATEBAY_DATASET)".into()
        }
        IndexError::NotADirectory { .. } => {
            "pass a directory with --dataset (PIRATEBAY_DATASET)".into()
        }
        _ => return None,
    })
}

fn server(e: &ServerError) -> Option<String> {
    match e {
        ServerError::Bind { source, .. } => Some(match source.kind() {
            ErrorKind::AddrInUse => {
                "another process uses the port: stop it or pass another --listen (PIRATEBAY_LISTEN)"
                    .into()
            }
            ErrorKind::AddrNotAvailable => {
                "pass an address of this host with --listen (PIRATEBAY_LISTEN)".into()
            }
            ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: pass --listen (PIRATEBAY_LISTEN) with a higher port"
                    .into()
            }
            _ => "pass another address with --listen (PIRATEBAY_LISTEN)".into(),
        }),
        ServerError::SpawnThread { .. } => {
            Some("lower the worker count with --workers (PIRATEBAY_WORKERS)".into())
        }
        _ => None,
    }
}

fn peer(e: &PeerError) -> Option<String> {
    match e {
        PeerError::Index(e) => index(e),
        PeerError::Server(e) => server(e),
        PeerError::Discovery(e) => discovery(e),
        PeerError::Etcd(e) => etcd(e),
        _ => None,
    }
}

fn fetch(e: &FetchError) -> Option<String> {
    use FetchError as F;
    const RESUME: &str = "rerun the same command to resume";
    Some(match e {
        F::Holders(h) => return advice(h.source.as_ref()),
        F::NoHolders { .. } => "check the SHA1 with `piratebay-sync files`".into(),
        F::NoPieceList { failures, .. } => match holders(failures) {
            Some(a) => format!("{a}, then try again"),
            None => "try again later".into(),
        },
        F::NoCorrectCopy { .. } => "try again when other peers hold the file".into(),
        F::HoldersFailed { failures, .. } => match holders(failures) {
            Some(a) => format!("{a}, then {RESUME}"),
            None => RESUME.into(),
        },
        F::Interrupted { .. } => RESUME.into(),
        F::Exists { .. } => "use --force to overwrite it, or -o / --dir to save elsewhere".into(),
        F::NotAFile { .. } => "use -o to pick a file path".into(),
        F::Symlink { .. } => "remove the link".into(),
        F::Changed { .. } => "rerun the same command to fetch it again".into(),
        F::NoSpace { .. } => format!("free some space, then {RESUME}"),
        F::Open { source, .. }
        | F::Read { source, .. }
        | F::Write { source, .. }
        | F::Sync { source, .. }
        | F::Rename { source, .. }
            if source.kind() == ErrorKind::PermissionDenied =>
        {
            "check the permissions of the output directory, or save elsewhere with -o / --dir"
                .into()
        }
        _ => return None,
    })
}

/// What the holders' failures have in common, when they all failed the
/// same way and the user can do something about it.
fn holders(failures: &[HolderFailure]) -> Option<&'static str> {
    let first = failures.first()?.reason.kind();
    if failures.iter().any(|f| f.reason.kind() != first) {
        return None;
    }
    match first {
        HolderFaultKind::Unreachable => Some(
            "no holder accepted a connection: check that this host can reach the \
             address and port they advertise (a firewall, their --advertise)",
        ),
        HolderFaultKind::Stalled => Some("every holder stalled: check the network to them"),
        HolderFaultKind::Busy => Some("every holder is busy serving others: wait a while"),
        HolderFaultKind::OtherVersion => Some(
            "every holder runs an older piratebay-sync (piece SHA1s, not chaining values): \
             upgrade them",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn advice_is_found_through_the_library_wrappers() {
        let missing = IndexError::OpenDataset {
            path: PathBuf::from("/nope"),
            source: std::io::Error::from(ErrorKind::NotFound),
        };
        let wrapped = PeerError::Index(missing);
        let text = line(&wrapped);
        assert!(
            text.starts_with("cannot open dataset directory /nope"),
            "{text}"
        );
        assert!(
            text.ends_with("; create it (mkdir -p /nope) or pass --dataset (PIRATEBAY_DATASET)"),
            "{text}"
        );

        let denied = IndexError::OpenDataset {
            path: PathBuf::from("/root/x"),
            source: std::io::Error::from(ErrorKind::PermissionDenied),
        };
        let text = line(&denied);
        assert!(text.contains("permission denied"), "{text}");
        assert!(text.contains("give this user access"), "{text}");

        let etcd_down = etcd::Error::Unreachable {
            endpoints: "http://127.0.0.1:1".into(),
            last: etcd::EndpointError::Unavailable {
                endpoint: "http://127.0.0.1:1".into(),
                message: "etcdserver: no leader".into(),
            },
        };
        let holders = FetchError::Holders(HoldersError::new(DiscoveryError::Etcd(etcd_down)));
        let text = line(&holders);
        assert!(text.contains("--etcd / PIRATEBAY_ETCD"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn errors_without_advice_print_their_chain_only() {
        let e = std::io::Error::other("boom");
        assert_eq!(line(&e), "boom");
    }

    #[test]
    fn a_holder_failures_typed_cause_reaches_the_advice() {
        use piratebay_sync::{Downloader, Holder, Sha1Digest};
        // A port nobody listens on: the holder refuses the connection.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let dir = tempfile::tempdir().expect("a temp dir");
        let holders = vec![Holder::new("gone", closed.to_string())];
        let err = Downloader::new(piratebay_sync::DownloadOptions {
            patience: std::time::Duration::ZERO,
            ..Default::default()
        })
        .download(
            Sha1Digest::of(b"some file"),
            dir.path().join("out"),
            &holders,
            None,
        )
        .expect_err("nobody serves it");
        let FetchError::NoPieceList { failures, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(failures[0].reason.kind(), HolderFaultKind::Unreachable);
        let text = line(&err);
        assert!(
            text.ends_with("; no holder accepted a connection: check that this host can reach the address and port they advertise (a firewall, their --advertise), then try again"),
            "{text}"
        );
    }
}
