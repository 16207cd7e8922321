//! Deterministic DICOM UIDs for simulated objects, derived from the run's seed.

use crate::rng::{derive_seed, SplitMix64};

/// A deterministic UID under the `2.25` root (ITU-T X.667 UUID-derived UIDs: a 128-bit
/// decimal number, at most 44 characters, leaving room for `.N` suffixes).
pub fn uid_from_seed(seed: u64, label: &str, index: u64) -> String {
    let mut r = SplitMix64::new(derive_seed(seed, label, index));
    let v = (u128::from(r.next_u64()) << 64) | u128::from(r.next_u64());
    // A zero first component would be an invalid leading zero only for the value 0 itself.
    format!("2.25.{}", v.max(1))
}
