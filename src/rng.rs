//! The crate's one seeded random stream, SplitMix64 (Steele, Lea and Flood, 2014): the
//! randomized SVD's start, the example model's initial weights, its synthetic corpus and
//! batch positions, and the tests' inputs all draw from it, so a seed fixes each of them on
//! every machine, thread count and backend.

/// SplitMix64: 64 random bits per call from a 64-bit counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), a multiple of 2⁻⁵³.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in (0, 1): [`next_f64`](Self::next_f64) shifted by half a step, so that its
    /// logarithm is finite.
    pub fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize % n.max(1)
    }
}

/// `n` standard normal values from [`SplitMix`] seeded with `seed`, by the Box–Muller
/// transform (one value per pair of uniforms).
pub fn gaussian(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix::new(seed);
    (0..n)
        .map(|_| {
            let (u, v) = (rng.open01(), rng.open01());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_stream() {
        // The first outputs for seed 1234567 of the reference C implementation
        // (https://prng.di.unimi.it/splitmix64.c).
        let mut rng = SplitMix::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn uniforms_stay_in_their_intervals() {
        let mut rng = SplitMix::new(7);
        for _ in 0..10_000 {
            let (x, y, k) = (rng.next_f64(), rng.open01(), rng.below(10));
            assert!((0.0..1.0).contains(&x) && y > 0.0 && y < 1.0 && k < 10);
        }
        assert_eq!(rng.below(0), 0);
    }
}
