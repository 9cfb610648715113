//! Who this peer is: its stable id and host name.

use std::io::{Read, Write};
use std::path::Path;

use super::DiscoveryError;

/// File in the state directory holding the peer id.
const PEER_ID_FILE: &str = "peer-id";

/// The peer id kept in `state_dir`, created on first use: 16 hex digits,
/// random, stable across restarts of the same peer.
pub fn load_or_create_peer_id(state_dir: &Path) -> Result<String, DiscoveryError> {
    let path = state_dir.join(PEER_ID_FILE);
    let err = |source: std::io::Error| DiscoveryError::WritePeerId {
        dir: state_dir.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim();
            if is_valid_id(id) {
                return Ok(id.to_string());
            }
            log::warn!(
                "{} holds no valid peer id; making a new one",
                path.display()
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(DiscoveryError::ReadPeerId { path, source }),
    }
    std::fs::create_dir_all(state_dir).map_err(err)?;
    let id = random_id();
    let tmp = state_dir.join(format!("{PEER_ID_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(format!("{id}\n").as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(id)
}

pub(crate) fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 16 random hex digits (see [`random_u64`]).
pub(crate) fn random_id() -> String {
    crate::hex::encode(&random_u64().to_be_bytes())
}

/// `base` drawn from half to one and a half of it: the backoffs of peers
/// that failed at the same moment (47 hosts losing one seed whose full
/// link drops handshakes) spread out instead of coming back in step.
pub(crate) fn jittered(base: std::time::Duration) -> std::time::Duration {
    let jitter = (random_u64() % 1000) as u32;
    base / 2 + base * jitter / 1000
}

/// A random number (`/dev/urandom`, else hashed time and pid).
pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    let from_urandom = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !from_urandom {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        buf = h.finish().to_be_bytes();
    }
    u64::from_be_bytes(buf)
}

/// The machine's host name (`/proc/sys/kernel/hostname`, `$HOSTNAME`, else "unknown").
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_waits_spread_between_half_and_one_and_a_half() {
        let base = std::time::Duration::from_millis(1000);
        let waits: Vec<_> = (0..64).map(|_| jittered(base)).collect();
        assert!(waits.iter().all(|w| *w >= base / 2 && *w < base * 3 / 2));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 32, "not spread: {waits:?}");
    }

    #[test]
    fn peer_id_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_peer_id(dir.path()).unwrap();
        let b = load_or_create_peer_id(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(a, load_or_create_peer_id(other.path()).unwrap());
    }

    #[test]
    fn garbage_peer_id_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PEER_ID_FILE), "../../etc passwd\n").unwrap();
        let id = load_or_create_peer_id(dir.path()).unwrap();
        assert!(is_valid_id(&id));
    }
}
