//! Mergeable partial aggregates (count, sum, min, max, last-by-time). Merging is
//! associative and commutative, so partials computed per batch, per window, per replica or
//! per late reading combine into the exact aggregate of all their readings.

use crate::time::EventTime;

/// count, sum, min, max and the last value by event time.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Partial {
    pub count: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last_value: f64,
    pub last_time: EventTime,
}

impl Partial {
    pub fn of(time: EventTime, value: f64) -> Self {
        Self { count: 1, sum: value, min: value, max: value, last_value: value, last_time: time }
    }

    pub fn merge(&mut self, other: &Partial) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        // Ties on time keep the larger value so the result does not depend on merge order.
        if other.last_time > self.last_time
            || (other.last_time == self.last_time && other.last_value > self.last_value)
        {
            self.last_time = other.last_time;
            self.last_value = other.last_value;
        }
    }
}
