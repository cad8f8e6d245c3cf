//! The per-rule rate limit of storm protection: a token bucket on the processing clock.
//!
//! Invariant: over any interval of length `T` on the bucket's clock, at most
//! `per_minute + per_minute × T / 1 min` tokens are taken (a full bucket plus the refill).
//! The clock is the caller's `now`, made monotone here (an earlier `now` refills nothing),
//! not event time: the bucket protects the operators' screens, which live in arrival time,
//! and a device with a skewed clock must not be able to refill it.

use serde::{Deserialize, Serialize};
use telemetry::EventTime;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenBucket {
    tokens: f64,
    clock: EventTime,
}

impl TokenBucket {
    /// A full bucket of `per_minute` tokens at `now`.
    pub fn full(per_minute: u32, now: EventTime) -> Self {
        Self { tokens: f64::from(per_minute), clock: now }
    }

    /// Take one token at `now` if there is one.
    pub fn take(&mut self, per_minute: u32, now: EventTime) -> bool {
        let capacity = f64::from(per_minute);
        if now > self.clock {
            let refill = (now.millis() - self.clock.millis()) as f64 * capacity / 60_000.0;
            self.tokens = (self.tokens + refill).min(capacity);
            self.clock = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_refills_over_a_minute() {
        let mut b = TokenBucket::full(3, EventTime(0));
        assert!((0..3).all(|_| b.take(3, EventTime(0))));
        assert!(!b.take(3, EventTime(19_999)));
        assert!(b.take(3, EventTime(20_000)));
        assert!(!b.take(3, EventTime(20_000)));
        // An earlier clock refills nothing.
        assert!(!b.take(3, EventTime(0)));
    }

    proptest! {
        /// Over any interval of length T, at most capacity + rate × T tokens are taken.
        #[test]
        fn never_more_than_the_burst_plus_the_refill(
            per_minute in 1u32..20,
            steps in prop::collection::vec(0i64..10_000, 1..400),
        ) {
            let mut b = TokenBucket::full(per_minute, EventTime(0));
            let mut now = 0;
            let mut taken = Vec::new();
            for step in steps {
                now += step;
                if b.take(per_minute, EventTime(now)) {
                    taken.push(now);
                }
            }
            for (i, &from) in taken.iter().enumerate() {
                for (j, &to) in taken.iter().enumerate().skip(i) {
                    let allowed = f64::from(per_minute) * (1.0 + (to - from) as f64 / 60_000.0);
                    prop_assert!((j - i + 1) as f64 <= allowed + 1e-9, "{} tokens in [{from}, {to}]", j - i + 1);
                }
            }
        }
    }
}
