//! Deterministic draws: the VTAB-1k 800/200 sample from a training pool and the per-class 80/20
//! hold-out for folders without a test split. Owns only index arithmetic; it must not touch files.
//!
//! Both use SplitMix64 (Steele, Lea and Flood 2014), defined here so a draw never changes with a
//! crate version, and a partial forward Fisher-Yates shuffle: for `i` in `0..k`, swap position
//! `i` with `i + below(n - i)`, where `below(m)` rejects outputs under `2^64 mod m` and returns
//! the output mod `m` (unbiased). The first `k` positions are the draw, in draw order.
use super::Split;

/// How many examples VTAB-1k trains on (train800 + val200).
pub(crate) const VTAB_TOTAL: usize = 1000;

/// SplitMix64: one 64-bit state word, advanced by the golden-ratio increment.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..m` (m > 0), by rejection of the biased low outputs.
    pub(crate) fn below(&mut self, m: u64) -> u64 {
        debug_assert!(m > 0);
        let m = m.max(1);
        let threshold = m.wrapping_neg() % m;
        loop {
            let x = self.next_u64();
            if x >= threshold {
                return x % m;
            }
        }
    }
}

/// The first `k` positions of a forward Fisher-Yates shuffle of `0..n` seeded with `seed`.
pub(crate) fn partial_shuffle(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let k = k.min(n);
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed);
    for i in 0..k {
        let j = i + rng.below((n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

/// How many examples the draw takes from a pool of `pool_len`: min(1000, pool_len).
pub(crate) fn draw_size(pool_len: usize) -> usize {
    pool_len.min(VTAB_TOTAL)
}

/// Indices into a training pool of `pool_len` examples for a non-test split.
///
/// The draw is `k = min(1000, pool_len)` positions of `partial_shuffle(pool_len, k, sample_seed)`;
/// val200 is its last `k / 5`, train800 the rest before them, train800val200 all `k` (train800
/// then val200). With a pool of 1000 or more that is exactly 800 / 200 / 1000; a smaller pool is
/// used whole, split 80/20 (val rounded down). `Split::Test` gives no indices (test lists come
/// from the official test split, never from the pool).
pub(crate) fn pool_indices(pool_len: usize, split: Split, sample_seed: u64) -> Vec<usize> {
    let k = draw_size(pool_len);
    let draw = partial_shuffle(pool_len, k, sample_seed);
    let n_train = k - k / 5;
    match split {
        Split::Train800 => draw[..n_train].to_vec(),
        Split::Val200 => draw[n_train..].to_vec(),
        Split::Train800val200 => draw,
        Split::Test => Vec::new(),
    }
}

/// Seed of a class's hold-out draw: the first 8 bytes (little-endian) of
/// `blake3("vtab-orch holdout v1:" + class name)`, so it depends on nothing but the name.
fn holdout_seed(class_name: &str) -> u64 {
    let hash = blake3::hash(format!("vtab-orch holdout v1:{class_name}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The share of each class folder held out as the test split, in percent.
pub(crate) const HOLDOUT_PERCENT: u32 = 20;

/// Which of a class's `n` files (sorted by path) are held out as test: `n / 5` of them
/// ([`HOLDOUT_PERCENT`], rounded down), the first positions of
/// `partial_shuffle(n, n / 5, holdout_seed(class_name))`. Returns a mask, `true` = test.
/// Independent of `sample_seed`, so every seed is scored on the same test set.
pub(crate) fn holdout_mask(class_name: &str, n: usize) -> Vec<bool> {
    let mut mask = vec![false; n];
    let held = n * HOLDOUT_PERCENT as usize / 100;
    for i in partial_shuffle(n, held, holdout_seed(class_name)) {
        mask[i] = true;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn splitmix64_matches_reference_values() {
        // Reference outputs of SplitMix64 seeded with 0 (as in the paper's C code).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn pool_of_1000_or_more_gives_800_200_disjoint() {
        let train = pool_indices(5000, Split::Train800, 7);
        let val = pool_indices(5000, Split::Val200, 7);
        let both = pool_indices(5000, Split::Train800val200, 7);
        assert_eq!((train.len(), val.len(), both.len()), (800, 200, 1000));
        assert_eq!([train.clone(), val.clone()].concat(), both);
        let set: HashSet<_> = both.iter().collect();
        assert_eq!(set.len(), 1000);
        assert!(both.iter().all(|&i| i < 5000));
        assert!(pool_indices(5000, Split::Test, 7).is_empty());
    }

    #[test]
    fn small_pool_is_used_whole_80_20() {
        let train = pool_indices(24, Split::Train800, 1);
        let val = pool_indices(24, Split::Val200, 1);
        assert_eq!((train.len(), val.len()), (20, 4));
        let mut all = [train, val].concat();
        all.sort_unstable();
        assert_eq!(all, (0..24).collect::<Vec<_>>());
    }

    #[test]
    fn draw_is_deterministic_and_seed_dependent() {
        assert_eq!(
            pool_indices(3000, Split::Train800val200, 42),
            pool_indices(3000, Split::Train800val200, 42)
        );
        assert_ne!(
            pool_indices(3000, Split::Train800val200, 42),
            pool_indices(3000, Split::Train800val200, 43)
        );
    }

    #[test]
    fn holdout_takes_a_fifth_per_class_by_name() {
        let mask = holdout_mask("AnnualCrop", 3000);
        assert_eq!(mask.iter().filter(|&&t| t).count(), 600);
        assert_eq!(mask, holdout_mask("AnnualCrop", 3000));
        assert_ne!(mask, holdout_mask("Forest", 3000));
        assert_eq!(holdout_mask("x", 4), vec![false; 4]);
    }
}
