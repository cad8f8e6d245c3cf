//! Alerts and their events on PostgreSQL (see [`crate::alert`] for the invariants). A raise
//! is `INSERT … ON CONFLICT … DO NOTHING` against the partial unique index of open alerts;
//! a move locks its alert's row (`FOR UPDATE`) and changes it only from the state it read.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use telemetry::EventTime;
use time::OffsetDateTime;

use super::{et, ts, PgStore};
use crate::alert::AlertColumns;
use crate::{
    AlertChange, AlertEventRecord, AlertFilter, AlertRecord, AlertSubject, NewAlert, RaiseOutcome,
    StoreError,
};

const ALERT_COLUMNS: &str =
    "id, rule, subject_kind, subject, kind, severity, state, message, value, since, raised_at, \
     acknowledged_at, acknowledged_by, ack_note, cleared_at, cleared_by, clear_note, members, \
     active, returned_at, shelved_by, shelved_reason, shelved_at, shelved_until, \
     suppressed_reason, suppressed_by_alert, code, params";

fn alert_record(row: &PgRow) -> Result<AlertRecord, StoreError> {
    let at = |name: &str| -> Result<Option<EventTime>, StoreError> {
        Ok(row.try_get::<Option<OffsetDateTime>, _>(name)?.map(et))
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
        since: et(row.try_get("since")?),
        raised_at: et(row.try_get("raised_at")?),
        acknowledged_at: at("acknowledged_at")?,
        acknowledged_by: row.try_get("acknowledged_by")?,
        ack_note: row.try_get("ack_note")?,
        cleared_at: at("cleared_at")?,
        cleared_by: row.try_get("cleared_by")?,
        clear_note: row.try_get("clear_note")?,
        members: i64::from(row.try_get::<i32, _>("members")?),
        active: row.try_get("active")?,
        returned_at: at("returned_at")?,
        shelved_by: row.try_get("shelved_by")?,
        shelved_reason: row.try_get("shelved_reason")?,
        shelved_at: at("shelved_at")?,
        shelved_until: at("shelved_until")?,
        suppressed_reason: row.try_get("suppressed_reason")?,
        suppressed_by_alert: row.try_get("suppressed_by_alert")?,
        code: row.try_get("code")?,
        params: row.try_get("params")?,
    }
    .into_record()
}

/// Alerts: see [`crate::alert`] for the invariants.
impl PgStore {
    pub async fn raise_alert(&self, a: &NewAlert) -> Result<RaiseOutcome, StoreError> {
        let insert = format!(
            "INSERT INTO alerts (rule, subject_kind, subject, kind, severity, state, message, value, since, raised_at, members, code, params, suppressed_reason, suppressed_by_alert)
             VALUES ($1, $2, $3, $4, $5, 'raised', $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (rule, subject_kind, subject) WHERE state <> 'cleared' DO NOTHING
             RETURNING {ALERT_COLUMNS}"
        );
        loop {
            let mut tx = self.pool.begin().await?;
            // A concurrent raise of the same key makes this wait for that transaction, then
            // insert nothing once it committed.
            let row = sqlx::query(&insert)
                .bind(&a.rule)
                .bind(a.subject.kind().as_str())
                .bind(a.subject.id())
                .bind(a.kind.as_str())
                .bind(a.severity.as_str())
                .bind(&a.message)
                .bind(a.value)
                .bind(ts(a.since))
                .bind(ts(a.raised_at))
                .bind(i32::try_from(a.members).unwrap_or(i32::MAX))
                .bind(a.code.as_str())
                .bind(serde_json::Value::Object(a.params.clone()))
                .bind(a.suppressed.as_ref().map(|s| s.reason.as_str()))
                .bind(a.suppressed.as_ref().and_then(|s| s.by_alert))
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = row {
                let record = alert_record(&row)?;
                sqlx::query("INSERT INTO alert_events (alert_id, from_state, to_state, by, note, at) VALUES ($1, NULL, 'raised', NULL, $2, $3)")
                    .bind(record.id)
                    .bind(a.suppressed.as_ref().and_then(crate::Suppression::raise_note))
                    .bind(ts(a.raised_at))
                    .execute(&mut *tx)
                    .await?;
                if crate::alert::signals(&record, None) {
                    super::outbox::append(
                        &mut tx,
                        &crate::alert::outbox_event(&record, a.raised_at),
                    )
                    .await?;
                }
                tx.commit().await?;
                return Ok(RaiseOutcome::Raised(Box::new(record)));
            }
            // Read committed: this statement sees the alert the insert conflicted with,
            // unless it was cleared in between, and then the raise is tried again.
            let open = open_alert_id(&mut tx, &a.rule, &a.subject).await?;
            tx.rollback().await?;
            if let Some(id) = open {
                return Ok(RaiseOutcome::AlreadyOpen(id));
            }
        }
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
        let mut tx = self.pool.begin().await?;
        // The row lock orders this move after any concurrent one on the same alert.
        let row: Option<(String, Option<OffsetDateTime>)> =
            sqlx::query_as("SELECT state, shelved_until FROM alerts WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let (state, shelf) = row.ok_or(StoreError::AlertNotFound(id))?;
        let from = crate::alert::parse_state(state)?;
        let to = crate::alert::check_change(id, from, shelf.is_some(), change)?;
        let set = change
            .set_clause(to)
            .replace("{at}", "$2")
            .replace("{by}", "$3::text")
            .replace("{note}", "$4")
            .replace("{reason}", "$7")
            .replace("{until}", "$8")
            .replace("{by_alert}", "$9")
            .replace("{false}", "false")
            .replace("{true}", "true");
        let row = sqlx::query(&format!("UPDATE alerts SET state = $5, {set} WHERE id = $1 AND state = $6 RETURNING {ALERT_COLUMNS}"))
            .bind(id)
            .bind(ts(at))
            .bind(by)
            .bind(note)
            .bind(to.as_str())
            .bind(from.as_str())
            .bind(change.reason())
            .bind(change.until().map(ts))
            .bind(change.by_alert())
            .fetch_one(&mut *tx)
            .await?;
        let record = alert_record(&row)?;
        sqlx::query("INSERT INTO alert_events (alert_id, from_state, to_state, action, by, note, at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(id)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(change.mv().as_str())
            .bind(by)
            .bind(note)
            .bind(ts(at))
            .execute(&mut *tx)
            .await?;
        if crate::alert::signals(&record, Some(change.mv())) {
            super::outbox::append(&mut tx, &crate::alert::outbox_event(&record, at)).await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    pub async fn expired_shelves(&self, now: EventTime) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM alerts WHERE shelved_until <= $1 AND state <> 'cleared' ORDER BY id LIMIT 1000")
            .bind(ts(now))
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
        let done = sqlx::query("UPDATE alerts SET members = $2 WHERE id = $1")
            .bind(id)
            .bind(i32::try_from(members).unwrap_or(i32::MAX))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AlertNotFound(id));
        }
        Ok(())
    }

    pub async fn alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        let mut q =
            QueryBuilder::<Postgres>::new(format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE true"));
        if !f.states.is_empty() {
            q.push(" AND state = ANY(")
                .push_bind(f.states.iter().map(|s| s.as_str()).collect::<Vec<_>>())
                .push(")");
        }
        if !f.severities.is_empty() {
            q.push(" AND severity = ANY(")
                .push_bind(f.severities.iter().map(|s| s.as_str()).collect::<Vec<_>>())
                .push(")");
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
            q.push(" AND raised_at >= ").push_bind(ts(from));
        }
        if let Some(to) = f.raised_to {
            q.push(" AND raised_at < ").push_bind(ts(to));
        }
        match f.shelved {
            Some(true) => q.push(" AND shelved_until IS NOT NULL"),
            Some(false) => q.push(" AND shelved_until IS NULL"),
            None => &mut q,
        };
        match f.suppressed {
            Some(true) => q.push(" AND suppressed_reason IS NOT NULL"),
            Some(false) => q.push(" AND suppressed_reason IS NULL"),
            None => &mut q,
        };
        if let Some(cursor) = f.before_id {
            q.push(" AND (raised_at, id) < (SELECT raised_at, id FROM alerts WHERE id = ")
                .push_bind(cursor)
                .push(")");
        }
        q.push(" ORDER BY raised_at DESC, id DESC LIMIT ")
            .push_bind(i64::try_from(f.limit).unwrap_or(i64::MAX));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(alert_record).collect()
    }

    pub async fn alert(&self, id: i64) -> Result<Option<AlertRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(alert_record).transpose()
    }

    pub async fn alert_events(&self, id: i64) -> Result<Vec<AlertEventRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, alert_id, from_state, to_state, action, by, note, at FROM alert_events WHERE alert_id = $1 ORDER BY id")
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
                    at: et(row.try_get("at")?),
                })
            })
            .collect()
    }
}

async fn open_alert_id(
    conn: &mut sqlx::PgConnection,
    rule: &str,
    subject: &AlertSubject,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM alerts WHERE rule = $1 AND subject_kind = $2 AND subject = $3 AND state <> 'cleared'")
        .bind(rule)
        .bind(subject.kind().as_str())
        .bind(subject.id())
        .fetch_optional(&mut *conn)
        .await?)
}
