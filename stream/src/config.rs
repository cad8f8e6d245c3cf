//! Stream settings.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// Width of the tumbling windows.
    pub window: Duration,
    /// Bounded out-of-orderness: a device's watermark trails its newest event time by this.
    pub watermark_delay: Duration,
    /// How long after its watermark passes a closed window still accepts late readings
    /// (each one re-emits the corrected window).
    pub allowed_lateness: Duration,
    /// Events kept for slow live subscribers before they are told to resynchronise.
    pub live_buffer: usize,
    /// Short-term forecasts of the segments' speed ([`crate::forecast`]).
    pub forecast: crate::forecast::ForecastSettings,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            watermark_delay: Duration::from_secs(5),
            allowed_lateness: Duration::from_secs(60),
            live_buffer: 16_384,
            forecast: crate::forecast::ForecastSettings::default(),
        }
    }
}
