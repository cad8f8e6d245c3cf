//! Retry delays: exponential backoff with full jitter (the delay before retry `n` is drawn
//! uniformly from `[0, min(cap, base × 2^n)]`), so receivers coming back from an outage
//! are not hit by every dispatcher at the same instant.

use std::time::Duration;

/// The retry policy of webhook deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
    /// Attempts in all (the first included) before a delivery is dead.
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(1), cap: Duration::from_secs(600), max_attempts: 12 }
    }
}

impl Backoff {
    /// The ceiling of the delay after `failed` failed attempts (1 for the first failure).
    pub fn ceiling(&self, failed: u32) -> Duration {
        let exp = failed.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << exp).min(self.cap)
    }

    /// The delay after `failed` failed attempts, `unit` in `[0, 1]` drawn at random; `None`
    /// when no attempt is left.
    pub fn delay(&self, failed: u32, unit: f64) -> Option<Duration> {
        if failed >= self.max_attempts {
            return None;
        }
        Some(self.ceiling(failed).mul_f64(unit.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_attempts: 10,
        };
        let c: Vec<u64> = (1..=8).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(c, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.delay(3, 0.5), Some(Duration::from_secs(2)));
        assert_eq!(b.delay(10, 0.5), None, "the tenth failure of ten attempts is final");
        assert_eq!(b.delay(9, 1.0), Some(Duration::from_secs(60)));
    }

    proptest! {
        #[test]
        fn delays_stay_within_zero_and_the_ceiling(failed in 1u32..100, unit in 0.0f64..=1.0, base_ms in 1u64..10_000, cap_s in 1u64..10_000) {
            let b = Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_secs(cap_s), max_attempts: 50 };
            match b.delay(failed, unit) {
                Some(d) => {
                    prop_assert!(failed < 50);
                    prop_assert!(d <= b.ceiling(failed));
                    prop_assert!(b.ceiling(failed) <= b.cap.max(b.base));
                }
                None => prop_assert!(failed >= 50),
            }
            prop_assert!(b.ceiling(failed) <= b.ceiling(failed + 1));
        }
    }
}
