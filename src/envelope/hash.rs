//! lanebus key hash v1: a small, fast, *frozen* 64-bit hash of byte keys.
//!
//! The bus maps an aggregate ID to a keyed lane with
//! `lane = key_hash(id) % lanes`. Every process that consumes a stream must
//! agree on that mapping, across restarts, platforms and crate versions, so
//! this function's output is part of the wire contract: it never depends on
//! a random seed, the platform's endianness or word size, and it must never
//! change. A different algorithm would be a new function ("v2").
//!
//! Algorithm (all arithmetic wrapping on `u64`):
//!
//! 1. `h = SEED ^ (len * P0)` where `len` is the key length in bytes.
//! 2. For each full 8-byte block `w` (read little-endian):
//!    `h = fold(w ^ P1, h ^ P2)`, where `fold(a, b)` is the 128-bit product
//!    `a * b` with its high and low halves xor-ed together (the folded
//!    multiply of the wyhash family).
//! 3. The 0–7 remaining bytes, zero-padded into a little-endian word `t`:
//!    `h = fold(t ^ P3, h ^ len ^ P1)`. Zero padding is unambiguous because
//!    the length was mixed in at step 1 and again here.
//! 4. Finalise with the MurmurHash3 `fmix64` avalanche, so the low bits used
//!    by `% lanes` depend on every input bit.
//!
//! The constants are fixed odd 64-bit values with balanced bits. The hash is
//! not cryptographic and not meant to resist chosen keys; it only has to
//! spread ordinary IDs evenly and stay the same forever.

const SEED: u64 = 0x243f_6a88_85a3_08d3;
const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
const P3: u64 = 0x5899_65cc_7537_4cc3;

/// The lanebus key hash v1 of `key`: a stable 64-bit hash whose output is
/// fixed forever, used to map aggregate IDs to keyed lanes
/// (`lane = key_hash(id) % lanes`).
///
/// # Examples
///
/// ```
/// use lanebus::key_hash;
///
/// let lanes = 16;
/// let lane = key_hash(b"order-42") % lanes;
/// assert!(lane < lanes);
/// // Same key, same lane: in every process, on every platform, forever.
/// assert_eq!(key_hash(b"order-42"), key_hash("order-42".as_bytes()));
/// ```
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    let len = key.len() as u64;
    let mut h = SEED ^ len.wrapping_mul(P0);
    let mut blocks = key.chunks_exact(8);
    for block in &mut blocks {
        let mut word = [0u8; 8];
        word.copy_from_slice(block);
        h = fold(u64::from_le_bytes(word) ^ P1, h ^ P2);
    }
    h = fold(tail_word(blocks.remainder()) ^ P3, h ^ len ^ P1);
    fmix64(h)
}

/// The 0–7 bytes of `tail` as a zero-padded little-endian word, read with
/// at most two overlapping loads (the same bytes land on the same bits, so
/// or-ing them is exact). A copy into a zeroed buffer was a `memcpy` call
/// per key: short aggregate IDs are all tail.
#[inline(always)]
fn tail_word(tail: &[u8]) -> u64 {
    let n = tail.len();
    if n >= 4 {
        let lo = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let hi = u32::from_le_bytes([tail[n - 4], tail[n - 3], tail[n - 2], tail[n - 1]]);
        u64::from(lo) | u64::from(hi) << ((n - 4) * 8)
    } else if n > 0 {
        u64::from(tail[0])
            | u64::from(tail[n / 2]) << (n / 2 * 8)
            | u64::from(tail[n - 1]) << ((n - 1) * 8)
    } else {
        0
    }
}

/// 64×64→128-bit multiply, high and low halves xor-ed.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// MurmurHash3's 64-bit finaliser: a bijection with full avalanche.
#[inline(always)]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These values are the contract. If this test fails, the hash changed
    /// and every deployed consumer would route keys to different lanes.
    #[test]
    fn outputs_are_pinned_forever() {
        let pinned: [(&[u8], u64); 8] = [
            (b"", 0xc996_ed51_648e_1bf6),
            (b"a", 0xcb25_908e_1067_7394),
            (b"order-1", 0xbd59_8556_1d3b_af5b),
            (b"order-42", 0x7b64_af41_a860_ab15),
            (b"tenant:acme/order-123456", 0x2062_b8d9_26c6_b103),
            (b"0123456789abcdef", 0x733b_2c81_e33d_f7a3),
            (b"0123456789abcdefX", 0x3656_06a2_2b09_582b),
            (&[0xff; 33], 0xf869_07fc_a95c_8a84),
        ];
        for (key, expected) in pinned {
            assert_eq!(
                key_hash(key),
                expected,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    fn lane_counts(lanes: u64, keys: u32) -> Vec<u32> {
        let mut counts = vec![0u32; lanes as usize];
        for i in 0..keys {
            let id = format!("order-{i}");
            counts[(key_hash(id.as_bytes()) % lanes) as usize] += 1;
        }
        counts
    }

    #[test]
    fn lanes_are_evenly_loaded() {
        for lanes in [8u64, 16] {
            let counts = lane_counts(lanes, 10_000);
            let mean = 10_000.0 / lanes as f64;
            for (lane, &count) in counts.iter().enumerate() {
                let off = (f64::from(count) - mean).abs() / mean;
                assert!(
                    off <= 0.20,
                    "{lanes} lanes: lane {lane} has {count}, mean {mean}"
                );
            }
        }
    }

    #[test]
    fn every_length_and_byte_matters() {
        // Keys that differ only in length (zero padding) or in one byte of
        // the tail or of a full block must hash differently.
        let zeros = [0u8; 24];
        let mut seen = std::collections::HashSet::new();
        for len in 0..=zeros.len() {
            assert!(seen.insert(key_hash(&zeros[..len])), "length {len}");
        }
        let base = *b"aggregate-0123456789";
        for i in 0..base.len() {
            let mut key = base;
            key[i] ^= 1;
            assert_ne!(key_hash(&key), key_hash(&base), "byte {i}");
        }
    }

    #[test]
    fn single_bit_flips_avalanche() {
        // Flipping one input bit should flip about half of the output bits.
        let key = *b"order-000123:v1";
        let base = key_hash(&key);
        let mut total = 0u32;
        let mut flips = 0u32;
        for byte in 0..key.len() {
            for bit in 0..8 {
                let mut k = key;
                k[byte] ^= 1 << bit;
                let changed = (key_hash(&k) ^ base).count_ones();
                assert!((12..=52).contains(&changed), "byte {byte} bit {bit}");
                total += changed;
                flips += 1;
            }
        }
        let average = f64::from(total) / f64::from(flips);
        assert!((28.0..=36.0).contains(&average), "average {average}");
    }

    /// The tail's two-load read is the zero-padded copy the algorithm
    /// defines, for every length and every byte value.
    #[test]
    fn the_tail_word_is_the_zero_padded_tail() {
        let bytes: Vec<u8> = (0..=255u8).rev().collect();
        for start in 0..bytes.len() - 8 {
            for n in 0..8 {
                let tail = &bytes[start..start + n];
                let mut padded = [0u8; 8];
                padded[..n].copy_from_slice(tail);
                assert_eq!(tail_word(tail), u64::from_le_bytes(padded), "{tail:?}");
            }
        }
    }

    #[test]
    fn block_boundaries_are_consistent() {
        // Appending a byte always changes the hash, across the 8-byte edges.
        let key: Vec<u8> = (0u8..40).collect();
        for len in 0..key.len() {
            assert_ne!(key_hash(&key[..len]), key_hash(&key[..len + 1]), "{len}");
        }
    }
}
