//! Alert rules, their evaluators, the alert lifecycle and storm protection: everything
//! between a reading (or a segment state, a device status, a clock tick) and an alert row
//! with its history. Pure and synchronous: time is always passed in, nothing here reads a
//! clock or does I/O, so the service drives it and persists what it returns.
//!
//! - [`rule`]: rule definitions as they appear in the config file and the admin API
//!   (serde, `deny_unknown_fields`), validated into a [`RuleSet`] with every error reported
//!   with its key path; the shipped air-quality defaults.
//! - [`condition`]: one state machine per rule kind and subject, turning samples into
//!   raise/clear edges of a condition.
//! - [`lifecycle`]: the alert itself, moved by the contract's one transition table
//!   (raised, acknowledged, returned, cleared; shelving and suppression as overlays), and
//!   the [`AlertTransition`] record every change produces.
//! - [`health`]: the detector-health evaluators (stuck, zero counts when busy, missing
//!   data, implausible combinations) and the flag intervals they record.
//! - [`storm`]: the per-rule token bucket.
//! - [`subjects`]: the segments and devices a rules document names, checked against the
//!   registry.
//! - [`sources`]: where each rule in force comes from (config file, admin API, shipped
//!   defaults), which wins, and taking in an edited `[alerts]` section.
//! - [`engine`]: [`AlertEngine`], the one entry point the service calls; owns the invariant
//!   *at most one open alert per (rule, subject)* and the storm protection.
//!
//! Time: duration logic (`for`, flatline, rate of change, running means, LOS) runs on each
//! subject's own event time; offline detection and storm protection run on the processing
//! clock `now` the caller passes (arrival time), so a device's skewed clock can neither make
//! it look silent nor flood the rate limit.

pub mod condition;
pub mod engine;
pub mod health;
pub mod lifecycle;
pub mod rule;
pub mod schema;
pub mod sources;
pub mod storm;
pub mod subjects;

use std::fmt;

pub use telemetry::alert::{Severity, Subject};

pub use condition::Step;
pub use engine::{
    AlertCounters, AlertEngine, AlertEngineState, AlertOutput, BookRecord, DeviceProfile,
    DeviceStatus, EngineCheckpoint, EngineHead, SegmentRecord, StatePart,
};
pub use health::FlagEdge;
pub use lifecycle::{
    Acknowledgement, Alert, AlertId, AlertKind, AlertMove, AlertState, AlertTransition,
    LifecycleError, MessageCode, Params, Shelf, Suppressed, SuppressionReason, TransitionError,
};
pub use rule::{
    AirQualityLimit, AlertRulesConfig, Rule, RuleDefinition, RuleError, RuleErrors, RuleKind,
    RuleScope, RuleSet, SegmentFigure, StormSettings, ThresholdOn, AIR_QUALITY_LIMITS,
};
pub use sources::{
    file_replaces_all, merge_file_change, FileMerge, ReplacedRule, RuleInForce, RuleOrigin,
};
pub use subjects::{KnownSubjects, UnknownSubjects};

/// A rule's identifier: `[a-z0-9][a-z0-9._-]{0,63}`, unique within a rule set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct RuleId(String);

/// A rule id that is not `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule id {0:?} must match [a-z0-9][a-z0-9._-]{{0,63}}")]
pub struct BadRuleId(pub String);

impl RuleId {
    pub fn parse(s: &str) -> Result<Self, BadRuleId> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if first_ok && rest_ok && s.len() <= 64 {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadRuleId(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RuleId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The identity of a condition: at most one open alert exists per key.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct AlertKey {
    pub rule: RuleId,
    pub subject: Subject,
}

impl AlertKey {
    /// The key of a stored alert (`None` for a rule id the engine cannot hold).
    pub fn of_record(r: &telemetry::alert::AlertRecord) -> Option<Self> {
        Some(Self { rule: RuleId::parse(&r.rule).ok()?, subject: r.subject.clone() })
    }
}

impl fmt::Display for AlertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.rule, self.subject)
    }
}

#[cfg(test)]
mod tests;
