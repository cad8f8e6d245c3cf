//! Alerts and their events on SQLite (see [`crate::alert`] for the invariants). Times are
//! `_ms` columns.

use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use telemetry::EventTime;

use super::SqliteStore;
use crate::alert::AlertColumns;
use crate::{
    AlertChange, AlertEventRecord, AlertFilter, AlertRecord, AlertSubject, NewAlert, RaiseOutcome,
    StoreError,
};

const ALERT_COLUMNS: &str = "id, rule, subject_kind, subject, kind, severity, state, message, value, since_ms, raised_at_ms, \
     acknowledged_at_ms, acknowledged_by, ack_note, cleared_at_ms, cleared_by, clear_note, members, \
     active, returned_at_ms, shelved_by, shelved_reason, shelved_at_ms, shelved_until_ms, \
     suppressed_reason, suppressed_by_alert, code, params";

fn alert_record(row: &SqliteRow) -> Result<AlertRecord, StoreError> {
    let at = |name: &str| -> Result<Option<EventTime>, StoreError> {
        Ok(row.try_get::<Option<i64>, _>(name)?.map(EventTime))
    };
    AlertColumns {
        id: row.try_get("id")?,
        rule: row.try_get("rule")?,
        subject_kind: row.try_get("subject_kind")?,
        subject: row.try_get("subject")?,
        kind: row.try_get("kind")?,
        severity: row.try_get("severity")?,
        state: row.try_get("state")?,
        message: row.try_get("message")?,
        value: row.try_get("value")?,
        since: EventTime(row.try_get("since_ms")?),
        raised_at: EventTime(row.try_get("raised_at_ms")?),
        acknowledged_at: at("acknowledged_at_ms")?,
        acknowledged_by: row.try_get("acknowledged_by")?,
        ack_note: row.try_get("ack_note")?,
        cleared_at: at("cleared_at_ms")?,
        cleared_by: row.try_get("cleared_by")?,
        clear_note: row.try_get("clear_note")?,
        members: row.try_get("members")?,
        active: row.try_get::<i64, _>("active")? != 0,
        returned_at: at("returned_at_ms")?,
        shelved_by: row.try_get("shelved_by")?,
        shelved_reason: row.try_get("shelved_reason")?,
        shelved_at: at("shelved_at_ms")?,
        shelved_until: at("shelved_until_ms")?,
        suppressed_reason: row.try_get("suppressed_reason")?,
        suppressed_by_alert: row.try_get("suppressed_by_alert")?,
        code: row.try_get("code")?,
        params: {
            let text: String = row.try_get("params")?;
            serde_json::from_str(&text)
                .map_err(|_| StoreError::Corrupt { what: "alert params", value: text })?
        },
    }
    .into_record()
}

/// Alerts: see [`crate::alert`] for the invariants. Every write runs in a `BEGIN
/// IMMEDIATE` transaction, which holds the database's write lock from its start, so the
/// state a move checks is the state it changes.
impl SqliteStore {
    pub async fn raise_alert(&self, a: &NewAlert) -> Result<RaiseOutcome, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(&format!(
            "INSERT INTO alerts (rule, subject_kind, subject, kind, severity, state, message, value, since_ms, raised_at_ms, members, code, params, suppressed_reason, suppressed_by_alert)
             VALUES (?, ?, ?, ?, ?, 'raised', ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (rule, subject_kind, subject) WHERE state <> 'cleared' DO NOTHING
             RETURNING {ALERT_COLUMNS}"
        ))
        .bind(&a.rule)
        .bind(a.subject.kind().as_str())
        .bind(a.subject.id())
        .bind(a.kind.as_str())
        .bind(a.severity.as_str())
        .bind(&a.message)
        .bind(a.value)
        .bind(a.since.millis())
        .bind(a.raised_at.millis())
        .bind(i64::from(a.members))
        .bind(a.code.as_str())
        .bind(serde_json::Value::Object(a.params.clone()).to_string())
        .bind(a.suppressed.as_ref().map(|s| s.reason.as_str()))
        .bind(a.suppressed.as_ref().and_then(|s| s.by_alert))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let open = open_alert_id(&mut tx, &a.rule, &a.subject).await?;
            tx.rollback().await?;
            // The write lock was held since the insert: the conflicting alert is still open.
            return open.map(RaiseOutcome::AlreadyOpen).ok_or_else(|| StoreError::Corrupt {
                what: "open alert",
                value: format!("{} on {}", a.rule, a.subject),
            });
        };
        let record = alert_record(&row)?;
        sqlx::query("INSERT INTO alert_events (alert_id, from_state, to_state, by, note, at_ms) VALUES (?, NULL, 'raised', NULL, ?, ?)")
            .bind(record.id)
            .bind(a.suppressed.as_ref().and_then(crate::Suppression::raise_note))
            .bind(a.raised_at.millis())
            .execute(&mut *tx)
            .await?;
        if crate::alert::signals(&record, None) {
            super::outbox::append(&mut tx, &crate::alert::outbox_event(&record, a.raised_at))
                .await?;
        }
        tx.commit().await?;
        Ok(RaiseOutcome::Raised(Box::new(record)))
    }

    /// Apply `change` with its event, if the lifecycle's table allows it from the state
    /// the alert is in.
    pub async fn move_alert(
        &self,
        id: i64,
        change: &AlertChange,
        by: Option<&str>,
        note: Option<&str>,
        at: EventTime,
    ) -> Result<AlertRecord, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT state, shelved_until_ms FROM alerts WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let (state, shelf) = row.ok_or(StoreError::AlertNotFound(id))?;
        let from = crate::alert::parse_state(state)?;
        let to = crate::alert::check_change(id, from, shelf.is_some(), change)?;
        let set = change
            .set_clause(to)
            .replace("{at}", "?2")
            .replace("{by}", "?3")
            .replace("{note}", "?4")
            .replace("{reason}", "?7")
            .replace("{until}", "?8")
            .replace("{by_alert}", "?9")
            .replace("{false}", "0")
            .replace("{true}", "1");
        // Times are `_ms` columns here.
        let set = ["acknowledged_at", "cleared_at", "returned_at", "shelved_at", "shelved_until"]
            .iter()
            .fold(set, |set, col| set.replace(&format!("{col} ="), &format!("{col}_ms =")));
        let row = sqlx::query(&format!("UPDATE alerts SET state = ?5, {set} WHERE id = ?1 AND state = ?6 RETURNING {ALERT_COLUMNS}"))
            .bind(id)
            .bind(at.millis())
            .bind(by)
            .bind(note)
            .bind(to.as_str())
            .bind(from.as_str())
            .bind(change.reason())
            .bind(change.until().map(|t| t.millis()))
            .bind(change.by_alert())
            .fetch_one(&mut *tx)
            .await?;
        let record = alert_record(&row)?;
        sqlx::query("INSERT INTO alert_events (alert_id, from_state, to_state, action, by, note, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(id)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(change.mv().as_str())
            .bind(by)
            .bind(note)
            .bind(at.millis())
            .execute(&mut *tx)
            .await?;
        if crate::alert::signals(&record, Some(change.mv())) {
            super::outbox::append(&mut tx, &crate::alert::outbox_event(&record, at)).await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    pub async fn expired_shelves(&self, now: EventTime) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM alerts WHERE shelved_until_ms <= ? AND state <> 'cleared' ORDER BY id LIMIT 1000")
            .bind(now.millis())
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn open_alert_id(
        &self,
        rule: &str,
        subject: &AlertSubject,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        open_alert_id(&mut conn, rule, subject).await
    }

    pub async fn update_alert_members(&self, id: i64, members: u32) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE alerts SET members = ? WHERE id = ?")
            .bind(i64::from(members))
            .bind(id)
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AlertNotFound(id));
        }
        Ok(())
    }

    pub async fn alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1"));
        if !f.states.is_empty() {
            q.push(" AND state IN (");
            let mut list = q.separated(", ");
            for s in &f.states {
                list.push_bind(s.as_str());
            }
            q.push(")");
        }
        if !f.severities.is_empty() {
            q.push(" AND severity IN (");
            let mut list = q.separated(", ");
            for s in &f.severities {
                list.push_bind(s.as_str());
            }
            q.push(")");
        }
        if let Some(kind) = f.subject_kind {
            q.push(" AND subject_kind = ").push_bind(kind.as_str());
        }
        if let Some(subject) = &f.subject {
            q.push(" AND subject_kind = ").push_bind(subject.kind().as_str());
            q.push(" AND subject = ").push_bind(subject.id().to_owned());
        }
        if let Some(rule) = &f.rule {
            q.push(" AND rule = ").push_bind(rule.clone());
        }
        if let Some(from) = f.raised_from {
            q.push(" AND raised_at_ms >= ").push_bind(from.millis());
        }
        if let Some(to) = f.raised_to {
            q.push(" AND raised_at_ms < ").push_bind(to.millis());
        }
        match f.shelved {
            Some(true) => q.push(" AND shelved_until_ms IS NOT NULL"),
            Some(false) => q.push(" AND shelved_until_ms IS NULL"),
            None => &mut q,
        };
        match f.suppressed {
            Some(true) => q.push(" AND suppressed_reason IS NOT NULL"),
            Some(false) => q.push(" AND suppressed_reason IS NULL"),
            None => &mut q,
        };
        if let Some(cursor) = f.before_id {
            q.push(" AND (raised_at_ms, id) < (SELECT raised_at_ms, id FROM alerts WHERE id = ")
                .push_bind(cursor)
                .push(")");
        }
        q.push(" ORDER BY raised_at_ms DESC, id DESC LIMIT ")
            .push_bind(i64::try_from(f.limit).unwrap_or(i64::MAX));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(alert_record).collect()
    }

    pub async fn alert(&self, id: i64) -> Result<Option<AlertRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(alert_record).transpose()
    }

    pub async fn alert_events(&self, id: i64) -> Result<Vec<AlertEventRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, alert_id, from_state, to_state, action, by, note, at_ms FROM alert_events WHERE alert_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(AlertEventRecord {
                    id: row.try_get("id")?,
                    alert: row.try_get("alert_id")?,
                    from: row
                        .try_get::<Option<String>, _>("from_state")?
                        .map(crate::alert::parse_state)
                        .transpose()?,
                    to: crate::alert::parse_state(row.try_get("to_state")?)?,
                    action: crate::alert::parse_action(row.try_get("action")?)?,
                    by: row.try_get("by")?,
                    note: row.try_get("note")?,
                    at: EventTime(row.try_get("at_ms")?),
                })
            })
            .collect()
    }
}

async fn open_alert_id(
    conn: &mut sqlx::SqliteConnection,
    rule: &str,
    subject: &AlertSubject,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM alerts WHERE rule = ? AND subject_kind = ? AND subject = ? AND state <> 'cleared'")
        .bind(rule)
        .bind(subject.kind().as_str())
        .bind(subject.id())
        .fetch_optional(&mut *conn)
        .await?)
}
