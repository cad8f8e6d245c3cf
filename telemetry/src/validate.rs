//! Validation of decoded messages (docs/mqtt-contract.md): payload size, range and integrality per
//! metric, timestamp skew. The validator is pure: the caller passes the time of receipt.

use std::time::Duration;

use crate::codec::{decode, DecodeError, Decoded, ReadingError, RejectedReading};
use crate::ids::DeviceId;
use crate::metric::MetricKind;
use crate::time::EventTime;
use crate::Reading;

/// Limits applied to every telemetry message.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationConfig {
    pub max_payload_bytes: usize,
    /// How far ahead of the receiver's clock a reading may be.
    pub max_future_skew: Duration,
    /// How old a reading may be.
    pub max_past_age: Duration,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_future_skew: Duration::from_secs(10 * 60),
            max_past_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Why a whole message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("payload is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl ValidationError {
    pub fn code(&self) -> &'static str {
        match self {
            ValidationError::TooLarge { .. } => "too_large",
            ValidationError::Decode(e) => e.code(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Validator {
    config: ValidationConfig,
}

impl Validator {
    pub fn new(config: ValidationConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &ValidationConfig {
        &self.config
    }

    /// Decode and validate one telemetry payload of `device` received at `now`.
    pub fn check(
        &self,
        payload: &[u8],
        device: &DeviceId,
        now: EventTime,
    ) -> Result<Decoded, ValidationError> {
        if payload.len() > self.config.max_payload_bytes {
            return Err(ValidationError::TooLarge {
                size: payload.len(),
                limit: self.config.max_payload_bytes,
            });
        }
        let mut decoded = decode(payload, device, now)?;
        let readings = std::mem::take(&mut decoded.readings);
        let positions = std::mem::take(&mut decoded.positions);
        for (reading, index) in readings.into_iter().zip(positions) {
            match self.check_reading(&reading, now) {
                Ok(()) => {
                    decoded.readings.push(reading);
                    decoded.positions.push(index);
                }
                Err(error) => decoded.rejected.push(RejectedReading { index, error }),
            }
        }
        decoded.rejected.sort_by_key(|r| r.index);
        Ok(decoded)
    }

    /// Range, integrality and skew of one reading.
    pub fn check_reading(&self, r: &Reading, now: EventTime) -> Result<(), ReadingError> {
        let spec = r.metric.spec();
        if !r.value.is_finite() {
            return Err(ReadingError::NotFinite { metric: r.metric });
        }
        if r.value < spec.min || r.value > spec.max {
            return Err(ReadingError::OutOfRange {
                metric: r.metric,
                value: r.value,
                min: spec.min,
                max: spec.max,
            });
        }
        if matches!(spec.kind, MetricKind::Count | MetricKind::Bool | MetricKind::Code)
            && r.value.fract() != 0.0
        {
            return Err(ReadingError::NotWhole { metric: r.metric, value: r.value });
        }
        let ahead = r.time.millis() - now.millis();
        let limit = self.config.max_future_skew.as_millis() as i64;
        if ahead > limit {
            return Err(ReadingError::InFuture {
                time: r.time,
                ahead_s: ahead / 1000,
                limit_s: limit / 1000,
            });
        }
        let age = now.millis() - r.time.millis();
        let limit = self.config.max_past_age.as_millis() as i64;
        if age > limit {
            return Err(ReadingError::TooOld {
                time: r.time,
                age_s: age / 1000,
                limit_s: limit / 1000,
            });
        }
        Ok(())
    }
}
