//! The files of a download in progress, read and written from their
//! documented format (README, ARCHITECTURE "The download" and "The swarm"),
//! as a peer in another process reads them: `<output>.part` holds the
//! data, `<output>.part.chain` the piece list it is verified against (the
//! JSON of `GET /v1/files/<sha1>/pieces`), and `<output>.part.state` is
//! JSON with `sha1`, `size`, `piece_size`, `form` (`"sha1-chain"`),
//! `chain_id` (the SHA1 of the chaining values, 20 bytes each,
//! concatenated) and `verified` (hex of a bitset, bit `i` of byte `i / 8`,
//! least significant bit first).

use std::path::{Path, PathBuf};

use piratebay_sync::protocol::PieceList;
use piratebay_sync::Sha1Digest;
use serde_json::{json, Value};

/// `<output>.part`: the data being downloaded.
pub fn part_path(output: &Path) -> PathBuf {
    with_suffix(output, ".part")
}

/// `<output>.part.state`: the verified pieces of the `.part`.
pub fn state_path(output: &Path) -> PathBuf {
    with_suffix(output, ".part.state")
}

/// `<output>.part.chain`: the piece list the `.part` is verified against.
pub fn chain_path(output: &Path) -> PathBuf {
    with_suffix(output, ".part.chain")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Pieces that `<output>.part.state` records verified for `sha1`; 0 when
/// the state is missing, unreadable, torn or for another file.
pub fn verified_in_state(output: &Path, sha1: &Sha1Digest) -> usize {
    let Ok(bytes) = std::fs::read(state_path(output)) else {
        return 0;
    };
    let Ok(state) = serde_json::from_slice::<Value>(&bytes) else {
        return 0;
    };
    if state["sha1"].as_str() != Some(sha1.to_hex().as_str()) {
        return 0;
    }
    let size = state["size"].as_u64().unwrap_or(0);
    let piece_size = state["piece_size"].as_u64().unwrap_or(0).max(1);
    let pieces = size.div_ceil(piece_size) as usize;
    let hex = state["verified"].as_str().unwrap_or("");
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .unwrap_or(0)
        })
        .collect();
    (0..pieces)
        .filter(|i| bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .count()
}

/// Writes `<output>.part.chain` and `<output>.part.state` for `list`,
/// claiming the pieces flagged in `done` verified (the claim is what a
/// resume must not trust blindly).
pub fn write_state(output: &Path, list: &PieceList, done: &[bool]) {
    let mut bits = vec![0u8; done.len().div_ceil(8)];
    for (i, _) in done.iter().enumerate().filter(|(_, d)| **d) {
        bits[i / 8] |= 1 << (i % 8);
    }
    let chain: Vec<u8> = list.chain.iter().flat_map(|v| v.0).collect();
    std::fs::write(chain_path(output), serde_json::to_vec(list).unwrap())
        .expect("write the .part.chain");
    let state = json!({
        "sha1": list.sha1,
        "size": list.size,
        "piece_size": list.piece_size,
        "form": "sha1-chain",
        "chain_id": Sha1Digest::of(&chain),
        "verified": bits.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    });
    std::fs::write(state_path(output), state.to_string()).expect("write the .part.state");
}

/// Writes a `.part.state` of the previous version (one SHA1 per piece of
/// `piece_size`, no chain), claiming the pieces flagged in `done`.
pub fn write_old_state(output: &Path, data: &[u8], piece_size: u64, done: &[bool]) {
    let mut bits = vec![0u8; done.len().div_ceil(8)];
    for (i, _) in done.iter().enumerate().filter(|(_, d)| **d) {
        bits[i / 8] |= 1 << (i % 8);
    }
    let pieces: Vec<Sha1Digest> = data
        .chunks(piece_size as usize)
        .map(Sha1Digest::of)
        .collect();
    let state = json!({
        "sha1": Sha1Digest::of(data),
        "size": data.len(),
        "piece_size": piece_size,
        "pieces": pieces,
        "verified": bits.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    });
    std::fs::write(state_path(output), state.to_string()).expect("write the .part.state");
}
