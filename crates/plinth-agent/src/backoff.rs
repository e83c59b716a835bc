//! Capped exponential backoff with jitter, and the small non-cryptographic random source
//! behind it (also used for the `sim` runtime's timing jitter).
//!
//! Owns retry pacing only: callers decide what is worth retrying. Every retry loop in the
//! agent waits on a [`Backoff`], so no failure can turn into a hot loop.

use std::time::Duration;

/// SplitMix64: a tiny, fast, seedable generator for jitter. Not for secrets.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator seeded from `seed` (the same seed gives the same sequence).
    pub fn seeded(seed: u64) -> Jitter {
        Jitter(seed)
    }

    /// A generator seeded from the clock and `salt` (e.g. the host index).
    pub fn from_clock(salt: u64) -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Jitter(nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `d` scaled by a uniform factor in `[1 - spread, 1 + spread)`.
    pub fn spread(&mut self, d: Duration, spread: f64) -> Duration {
        let factor = 1.0 - spread + 2.0 * spread * self.unit();
        d.mul_f64(factor.max(0.0))
    }
}

/// Capped exponential backoff: `base · 2^attempt`, at most `cap`, each wait drawn from
/// the upper half of that ("equal jitter") so that many hosts do not retry in step.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    jitter: Jitter,
}

impl Backoff {
    /// A backoff from `base` up to `cap`.
    pub fn new(base: Duration, cap: Duration, jitter: Jitter) -> Backoff {
        Backoff { base, cap: cap.max(base), attempt: 0, jitter }
    }

    /// The agent's default for server calls: 0.5 s doubling up to 30 s.
    pub fn for_server(salt: u64) -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30), Jitter::from_clock(salt))
    }

    /// How long to wait before the next attempt; each call counts one failure.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let ceiling = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        ceiling / 2 + (ceiling / 2).mul_f64(self.jitter.unit())
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.attempt
    }

    /// Call after a success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), Jitter::seeded(7));
        let waits: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        for (i, w) in waits.iter().enumerate() {
            let ceiling = Duration::from_millis(100 * (1 << i.min(16))).min(Duration::from_secs(2));
            assert!(*w >= ceiling / 2 && *w <= ceiling, "attempt {i}: {w:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
        }
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(2)));
        assert_eq!(b.failures(), 10);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), Jitter::seeded(1));
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }

    #[test]
    fn jitter_spread_stays_in_range() {
        let mut j = Jitter::seeded(42);
        for _ in 0..1000 {
            let d = j.spread(Duration::from_millis(300), 0.2);
            assert!(d >= Duration::from_millis(240) && d < Duration::from_millis(360), "{d:?}");
        }
    }
}
