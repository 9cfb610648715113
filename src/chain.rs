//! SHA-1 chaining values: a file's pieces verified one at a time, in any
//! order, with one SHA-1 pass over each byte.
//!
//! SHA-1 runs its compression function over 64-byte blocks, carrying a
//! 160-bit state from one block to the next; the file's SHA1 is that state
//! after the last block of the padded message. With pieces a multiple of
//! 64 bytes, the state at the end of piece `i` (its *chaining value*
//! `c_(i+1)`, with `c_0` SHA-1's initial value) is all a verifier needs:
//! piece `i` is checked by compressing it from `c_i` and comparing with
//! `c_(i+1)`, and the last piece by finishing from `c_(n-1)` with the
//! padding of the whole file's length and comparing with the file's SHA1
//! itself. A piece list carries `c_1 .. c_(n-1)`, 20 bytes each.
//!
//! Pure: no I/O. The compression function is the `sha1` crate's
//! (`sha1::compress`, SHA-NI where the CPU has it).

use std::fmt;

use sha1::digest::block_buffer::{BlockBuffer, Eager};
use sha1::digest::consts::U64;

use crate::digest::Sha1Digest;

/// SHA-1's block size: every piece boundary is a multiple of it.
pub const BLOCK: u64 = 64;

/// SHA-1's initial state, `c_0`.
const IV: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

/// The SHA-1 state at a piece boundary (160 bits), stored as SHA-1 prints
/// a digest: its five words big-endian. Printed and parsed as 40 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainValue(pub [u8; 20]);

impl ChainValue {
    /// `c_0`: SHA-1's initial value, where every file's chain starts.
    pub const INITIAL: ChainValue = ChainValue::from_state(&IV);

    const fn from_state(state: &[u32; 5]) -> Self {
        let mut out = [0u8; 20];
        let mut i = 0;
        while i < 5 {
            let b = state[i].to_be_bytes();
            out[4 * i] = b[0];
            out[4 * i + 1] = b[1];
            out[4 * i + 2] = b[2];
            out[4 * i + 3] = b[3];
            i += 1;
        }
        ChainValue(out)
    }

    fn state(&self) -> [u32; 5] {
        let mut s = [0u32; 5];
        for (w, c) in s.iter_mut().zip(self.0.chunks_exact(4)) {
            *w = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        s
    }
}

impl fmt::Display for ChainValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for ChainValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainValue({self})")
    }
}

/// Runs the compression function over `data`, a whole number of blocks
/// (anything past the last whole block is ignored; callers pass multiples
/// of [`BLOCK`]).
fn compress(state: &mut [u32; 5], data: &[u8]) {
    let whole = data.len() - data.len() % BLOCK as usize;
    // An empty eager buffer hands every whole block of its input to the
    // closure in one slice, without copying: the safe way to view bytes
    // as the `sha1` crate's block type.
    let mut buffer = BlockBuffer::<U64, Eager>::default();
    buffer.digest_blocks(&data[..whole], |blocks| sha1::compress(state, blocks));
}

/// Finishes SHA-1 from `state`, which has consumed `before` bytes (a
/// multiple of [`BLOCK`]), over `tail`: the digest of the whole message.
fn finish(mut state: [u32; 5], before: u64, tail: &[u8]) -> Sha1Digest {
    let whole = tail.len() - tail.len() % BLOCK as usize;
    compress(&mut state, &tail[..whole]);
    let rest = &tail[whole..];
    let bits = before.wrapping_add(tail.len() as u64).wrapping_mul(8);
    let mut last = [0u8; 128];
    last[..rest.len()].copy_from_slice(rest);
    last[rest.len()] = 0x80;
    let len = if rest.len() < 56 { 64 } else { 128 };
    last[len - 8..len].copy_from_slice(&bits.to_be_bytes());
    compress(&mut state, &last[..len]);
    Sha1Digest(ChainValue::from_state(&state).0)
}

/// True if piece bytes `data`, compressed from `from`, end at `to`. A
/// piece that is not a whole number of blocks never verifies.
pub fn verify_piece(from: &ChainValue, data: &[u8], to: &ChainValue) -> bool {
    if data.len() as u64 % BLOCK != 0 {
        return false;
    }
    let mut state = from.state();
    compress(&mut state, data);
    ChainValue::from_state(&state) == *to
}

/// True if `data`, the last piece of a file of `size` bytes, finishes from
/// `from` to the file's SHA1 `sha1`. Its first byte must be at a multiple
/// of [`BLOCK`].
pub fn verify_last(from: &ChainValue, data: &[u8], size: u64, sha1: &Sha1Digest) -> bool {
    let Some(before) = size.checked_sub(data.len() as u64) else {
        return false;
    };
    before % BLOCK == 0 && finish(from.state(), before, data) == *sha1
}

/// The chain of a content read in order: feed it with [`update`](Self::update)
/// (reads of any length), then [`finish`](Self::finish) gives the whole
/// SHA1 and the chaining values at every piece boundary inside the content.
/// One compression per block: the pieces cost nothing beyond the file's SHA1.
pub struct Chainer {
    state: [u32; 5],
    buffer: BlockBuffer<U64, Eager>,
    /// Bytes fed so far.
    fed: u64,
    piece_size: u64,
    /// Bytes left before the next piece boundary.
    to_boundary: u64,
    chain: Vec<ChainValue>,
}

impl Chainer {
    /// A chain cut every `piece_size` bytes (a positive multiple of
    /// [`BLOCK`]; anything else is rounded up to one).
    pub fn new(piece_size: u64) -> Self {
        let piece_size = piece_size.max(1).div_ceil(BLOCK) * BLOCK;
        Chainer {
            state: IV,
            buffer: BlockBuffer::default(),
            fed: 0,
            piece_size,
            to_boundary: piece_size,
            chain: Vec::new(),
        }
    }

    /// Feeds the next bytes of the content.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = usize::try_from(self.to_boundary)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let (now, rest) = data.split_at(take);
            let state = &mut self.state;
            self.buffer
                .digest_blocks(now, |blocks| sha1::compress(state, blocks));
            self.fed += take as u64;
            self.to_boundary -= take as u64;
            if self.to_boundary == 0 {
                // A boundary is a multiple of the block: the buffer is empty.
                self.chain.push(ChainValue::from_state(&self.state));
                self.to_boundary = self.piece_size;
            }
            data = rest;
        }
    }

    /// The content's SHA1 and its chaining values `c_1 .. c_(n-1)` for its
    /// `n` pieces (none for a file of one piece or empty).
    pub fn finish(mut self) -> (Sha1Digest, Vec<ChainValue>) {
        let tail = self.buffer.get_data().to_vec();
        let before = self.fed - tail.len() as u64;
        let sha1 = finish(self.state, before, &tail);
        // A value at the very end is `c_n`, which the SHA1 stands for.
        if self.fed > 0 && self.fed % self.piece_size == 0 {
            self.chain.pop();
        }
        (sha1, self.chain)
    }
}

/// One piece verified as its bytes arrive, in reads of any length: SHA-1
/// resumed from the chaining value where the piece starts.
pub struct PieceCheck {
    state: [u32; 5],
    buffer: BlockBuffer<U64, Eager>,
    /// Where the piece starts in the file (a multiple of [`BLOCK`]).
    start: u64,
    /// Bytes fed so far.
    fed: u64,
}

impl PieceCheck {
    /// A check of the piece at byte `start` of the file, starting from `from`.
    pub fn new(from: &ChainValue, start: u64) -> Self {
        PieceCheck {
            state: from.state(),
            buffer: BlockBuffer::default(),
            start,
            fed: 0,
        }
    }

    /// Feeds the next bytes of the piece.
    pub fn update(&mut self, data: &[u8]) {
        let state = &mut self.state;
        self.buffer
            .digest_blocks(data, |blocks| sha1::compress(state, blocks));
        self.fed += data.len() as u64;
    }

    /// True if the piece fed ends at `to` (and is whole blocks starting on
    /// a block boundary).
    pub fn ends_at(&self, to: &ChainValue) -> bool {
        self.start % BLOCK == 0
            && self.buffer.get_pos() == 0
            && ChainValue::from_state(&self.state) == *to
    }

    /// True if the piece fed is the last of a file of `size` bytes and
    /// finishes to its SHA1 `sha1`.
    pub fn finishes_to(&self, size: u64, sha1: &Sha1Digest) -> bool {
        let tail = self.buffer.get_data();
        let before = self.start + self.fed - tail.len() as u64;
        self.start % BLOCK == 0
            && self.start.checked_add(self.fed) == Some(size)
            && finish(self.state, before, tail) == *sha1
    }
}

/// The SHA1 and chain of `data` cut every `piece_size` bytes, in one pass.
pub fn chain_of(data: &[u8], piece_size: u64) -> (Sha1Digest, Vec<ChainValue>) {
    let mut c = Chainer::new(piece_size);
    c.update(data);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so failures repeat.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// Every piece of `data` against `chain`: which verify.
    fn check_all(data: &[u8], piece: u64, sha1: &Sha1Digest, chain: &[ChainValue]) -> Vec<bool> {
        let n = data.len().div_ceil(piece as usize);
        (0..n)
            .map(|i| {
                let start = i * piece as usize;
                let end = (start + piece as usize).min(data.len());
                let from = if i == 0 {
                    ChainValue::INITIAL
                } else {
                    chain[i - 1]
                };
                if i + 1 == n {
                    verify_last(&from, &data[start..end], data.len() as u64, sha1)
                } else {
                    verify_piece(&from, &data[start..end], &chain[i])
                }
            })
            .collect()
    }

    fn sizes(piece: u64, rng: &mut Rng) -> Vec<usize> {
        let p = piece as usize;
        let mut v = vec![0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129];
        v.extend([p - 1, p, p + 1, 2 * p - 64, 2 * p, 2 * p + 63, 3 * p + 56]);
        v.extend((0..4).map(|_| rng.below(5 * piece) as usize));
        v
    }

    #[test]
    fn the_chain_ends_at_the_sha1_and_verifies_every_piece() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for piece in [64u64, 128, 4096, 65536] {
            for len in sizes(piece, &mut rng) {
                let data = rng.bytes(len);
                let (sha1, chain) = chain_of(&data, piece);
                assert_eq!(sha1, Sha1Digest::of(&data), "piece {piece} len {len}");
                let n = data.len().div_ceil(piece as usize);
                assert_eq!(chain.len(), n.saturating_sub(1), "piece {piece} len {len}");
                assert!(check_all(&data, piece, &sha1, &chain).iter().all(|ok| *ok));
                // Fed in odd reads, the chain is the same.
                let mut c = Chainer::new(piece);
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let k = (rng.below(200) as usize + 1).min(rest.len());
                    c.update(&rest[..k]);
                    rest = &rest[k..];
                }
                assert_eq!(
                    c.finish(),
                    (sha1, chain),
                    "odd reads, piece {piece} len {len}"
                );
            }
        }
        // An empty file: no pieces, the empty SHA1.
        assert_eq!(chain_of(b"", 64), (Sha1Digest::of(b""), vec![]));
    }

    #[test]
    fn several_mib_match_the_sha1_crate() {
        let mut rng = Rng(7);
        let data = rng.bytes(5 * 1024 * 1024 + 333);
        let (sha1, chain) = chain_of(&data, 256 * 1024);
        assert_eq!(sha1, Sha1Digest::of(&data));
        assert_eq!(chain.len(), 20);
        assert!(check_all(&data, 256 * 1024, &sha1, &chain)
            .iter()
            .all(|ok| *ok));
        // The chain one holder computed (its index reads the file in its
        // own chunks) verifies every piece of another holder's copy: the
        // chaining values depend on the content only.
        let copy = data.clone();
        let mut theirs = Chainer::new(256 * 1024);
        for chunk in copy.chunks(1 << 20) {
            theirs.update(chunk);
        }
        let (their_sha1, their_chain) = theirs.finish();
        assert_eq!((their_sha1, &their_chain), (sha1, &chain));
        assert!(check_all(&data, 256 * 1024, &sha1, &their_chain)
            .iter()
            .all(|ok| *ok));
        // `sha1sum` agrees on a known vector too.
        assert_eq!(
            chain_of(b"abc", 64).0.to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn one_flipped_bit_fails_that_piece_only() {
        let mut rng = Rng(42);
        let piece = 1024u64;
        for len in [1usize, 64, 1024, 1025, 5000, 8192] {
            let data = rng.bytes(len);
            let (sha1, chain) = chain_of(&data, piece);
            for _ in 0..20 {
                let bit = rng.below(len as u64 * 8) as usize;
                let mut bad = data.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let ok = check_all(&bad, piece, &sha1, &chain);
                let hit = bit / 8 / piece as usize;
                for (i, ok) in ok.iter().enumerate() {
                    assert_eq!(*ok, i != hit, "len {len} bit {bit} piece {i}");
                }
            }
        }
    }

    #[test]
    fn a_forged_chain_with_the_real_bytes_fails_at_the_first_wrong_boundary() {
        let mut rng = Rng(3);
        let piece = 256u64;
        let data = rng.bytes(10 * piece as usize + 17);
        let (sha1, chain) = chain_of(&data, piece);
        for wrong in 0..chain.len() {
            let mut forged = chain.clone();
            forged[wrong].0[rng.below(20) as usize] ^= 1 + rng.below(255) as u8;
            let ok = check_all(&data, piece, &sha1, &forged);
            // Piece `wrong` ends at the forged value and piece `wrong + 1`
            // starts from it: both fail, every other piece passes.
            for (i, ok) in ok.iter().enumerate() {
                assert_eq!(
                    *ok,
                    i != wrong && i != wrong + 1,
                    "forged {wrong}, piece {i}"
                );
            }
            assert!(!ok[wrong], "the first wrong boundary is caught");
        }
        // Chaining values of another content with these bytes: the first
        // piece fails (its end differs), whatever else happens.
        let other = rng.bytes(data.len());
        let (_, theirs) = chain_of(&other, piece);
        assert!(!check_all(&data, piece, &sha1, &theirs)[0]);
        // A chain whose last value does not finish to the SHA1: only the
        // last piece fails.
        let mut last_wrong = chain.clone();
        let k = last_wrong.len() - 1;
        last_wrong[k].0[0] ^= 1;
        let ok = check_all(&data, piece, &sha1, &last_wrong);
        assert_eq!(ok.iter().filter(|ok| !**ok).count(), 2);
        assert!(!ok[ok.len() - 1]);
    }

    #[test]
    fn a_piece_checked_as_it_arrives_agrees_with_the_whole_check() {
        let mut rng = Rng(11);
        let piece = 4096u64;
        for len in [1usize, 4096, 4097, 3 * 4096 + 100, 4 * 4096] {
            let data = rng.bytes(len);
            let (sha1, chain) = chain_of(&data, piece);
            let n = len.div_ceil(piece as usize);
            for i in 0..n {
                let start = i * piece as usize;
                let end = (start + piece as usize).min(len);
                let from = if i == 0 {
                    ChainValue::INITIAL
                } else {
                    chain[i - 1]
                };
                for flip in [false, true] {
                    let mut bytes = data[start..end].to_vec();
                    if flip {
                        let k = rng.below(bytes.len() as u64) as usize;
                        bytes[k] ^= 0x40;
                    }
                    let mut c = PieceCheck::new(&from, start as u64);
                    for part in bytes.chunks(1 + rng.below(300) as usize) {
                        c.update(part);
                    }
                    let ok = if i + 1 == n {
                        c.finishes_to(len as u64, &sha1)
                    } else {
                        c.ends_at(&chain[i])
                    };
                    assert_eq!(ok, !flip, "len {len} piece {i} flip {flip}");
                }
            }
        }
    }

    #[test]
    fn pieces_off_the_block_grid_never_verify() {
        let data = [7u8; 100];
        let (sha1, _) = chain_of(&data, 64);
        assert!(!verify_piece(
            &ChainValue::INITIAL,
            &data[..63],
            &ChainValue::INITIAL
        ));
        // The last piece must start on a block boundary.
        assert!(!verify_last(&ChainValue::INITIAL, &data[1..], 100, &sha1));
        assert!(!verify_last(&ChainValue::INITIAL, &data, 99, &sha1));
        assert!(verify_last(&ChainValue::INITIAL, &data, 100, &sha1));
    }
}
