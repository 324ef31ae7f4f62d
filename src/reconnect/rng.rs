//! The jitter's random numbers: splitmix64 over a seed that differs between
//! helpers, processes and runs.

/// splitmix64: enough to spread waits, no dependency.
#[derive(Debug)]
pub(super) struct Rng(pub(super) u64);

impl Rng {
    /// A random number in `[0, 1)`.
    pub(super) fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed that differs between helpers, processes and runs (the standard
/// library's randomly keyed hasher, over the id and the time).
pub(super) fn seed(id: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(id);
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_random_units_are_spread() {
        let mut rng = Rng(seed(1));
        let units: Vec<f64> = (0..1000).map(|_| rng.unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        // Ten bins, each well filled.
        let mut bins = [0; 10];
        for u in &units {
            bins[(u * 10.0) as usize] += 1;
        }
        assert!(bins.iter().all(|&b| b > 50), "{bins:?}");
        assert_ne!(seed(1), seed(1), "a new seed every time");
    }
}
