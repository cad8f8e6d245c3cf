//! What operators do to open alerts, as the engine mirrors it from the store:
//! acknowledge, clear, shelve and unshelve; and shelves expiring on the clock.

use telemetry::EventTime;

use super::super::lifecycle::{
    Acknowledgement, Alert, AlertId, AlertKind, AlertMove, AlertState, AlertTransition,
    LifecycleError, Shelf,
};
use super::super::Subject;
use super::{AlertEngine, AlertOutput};

impl AlertEngine {
    /// An operator acknowledges an open alert: raised → acknowledged, returned → cleared.
    pub fn acknowledge(
        &mut self,
        id: AlertId,
        by: &str,
        note: Option<String>,
        now: EventTime,
    ) -> Result<AlertOutput, LifecycleError> {
        if by.trim().is_empty() {
            return Err(LifecycleError::NoOperator);
        }
        let now = self.advance(now);
        let Some(alert) = self.book.open.get_mut(&id) else {
            return Err(self.book.not_open(id));
        };
        let from = alert.state;
        let to = from.acknowledge().map_err(|source| LifecycleError::Refused { id, source })?;
        alert.acknowledged =
            Some(Acknowledgement { by: by.to_owned(), note: note.clone(), at: now });
        self.book.dirty = true;
        if to == AlertState::Cleared {
            return self.close_by_operator(id, by, note, AlertMove::Acknowledge, now);
        }
        alert.state = to;
        let transition = AlertTransition {
            alert: id,
            key: alert.key.clone(),
            from: Some(from),
            to,
            action: Some(AlertMove::Acknowledge),
            by: Some(by.to_owned()),
            note,
            at: now,
        };
        Ok(AlertOutput::Transition { alert: alert.clone(), transition })
    }

    /// An operator clears an open alert. If its condition still holds it does not raise
    /// again until the condition has ended and occurs anew.
    pub fn clear(
        &mut self,
        id: AlertId,
        by: &str,
        note: Option<String>,
        now: EventTime,
    ) -> Result<AlertOutput, LifecycleError> {
        if by.trim().is_empty() {
            return Err(LifecycleError::NoOperator);
        }
        let now = self.advance(now);
        let Some(alert) = self.book.open.get(&id) else {
            return Err(self.book.not_open(id));
        };
        alert.state.clear().map_err(|source| LifecycleError::Refused { id, source })?;
        self.close_by_operator(id, by, note, AlertMove::Clear, now)
    }

    fn close_by_operator(
        &mut self,
        id: AlertId,
        by: &str,
        note: Option<String>,
        mv: AlertMove,
        now: EventTime,
    ) -> Result<AlertOutput, LifecycleError> {
        let Some(alert) = self.book.open.get(&id) else {
            return Err(self.book.not_open(id));
        };
        let key = alert.key.clone();
        match (&key.subject, alert.kind) {
            (Subject::Segment(seg), AlertKind::SegmentGroup) => {
                if let Some(g) = self.book.groups.get_mut(&(key.rule.clone(), seg.clone())) {
                    if g.alert == Some(id) {
                        g.alert = None;
                        g.members.clear();
                    }
                }
            }
            (_, AlertKind::RateLimitOverflow)
                if self.book.overflow.get(&key.rule).is_some_and(|(o, _)| *o == id) =>
            {
                self.book.overflow.remove(&key.rule);
            }
            _ => {}
        }
        let mut out = Vec::with_capacity(1);
        self.book.close(id, Some(by.to_owned()), note, mv, now, &mut out);
        out.pop().ok_or(LifecycleError::Unknown(id))
    }

    /// An operator shelved an open alert (mirrored from the store): it stays as it is,
    /// signals nothing until `shelf.until`, when [`tick`](Self::tick) takes it off.
    pub fn shelve(&mut self, id: AlertId, shelf: Shelf) -> Result<AlertOutput, LifecycleError> {
        self.overlay(id, AlertMove::Shelve, Some(shelf.by.clone()), None, shelf.at, |a| {
            a.shelved = Some(shelf)
        })
    }

    /// An operator took an alert off its shelf (mirrored from the store).
    pub fn unshelve(
        &mut self,
        id: AlertId,
        by: &str,
        now: EventTime,
    ) -> Result<AlertOutput, LifecycleError> {
        self.overlay(id, AlertMove::Unshelve, Some(by.to_owned()), None, now, |a| a.shelved = None)
    }

    fn overlay(
        &mut self,
        id: AlertId,
        mv: AlertMove,
        by: Option<String>,
        note: Option<String>,
        now: EventTime,
        change: impl FnOnce(&mut Alert),
    ) -> Result<AlertOutput, LifecycleError> {
        let Some(alert) = self.book.open.get_mut(&id) else {
            return Err(self.book.not_open(id));
        };
        let to = alert.state.apply(mv).map_err(|source| LifecycleError::Refused { id, source })?;
        change(alert);
        self.book.dirty = true;
        let transition = AlertTransition {
            alert: id,
            key: alert.key.clone(),
            from: Some(to),
            to,
            action: Some(mv),
            by,
            note,
            at: now,
        };
        Ok(AlertOutput::Transition { alert: alert.clone(), transition })
    }

    /// Take the shelves that expired at `now` off their alerts.
    pub(super) fn expire_shelves(&mut self, now: EventTime, out: &mut Vec<AlertOutput>) {
        let expired: Vec<AlertId> = self
            .book
            .open
            .values()
            .filter(|a| a.shelved.as_ref().is_some_and(|s| s.until <= now))
            .map(|a| a.id)
            .collect();
        for id in expired {
            let note = Some("shelf expired".to_owned());
            if let Ok(o) =
                self.overlay(id, AlertMove::Unshelve, None, note, now, |a| a.shelved = None)
            {
                out.push(o);
            }
        }
    }
}
