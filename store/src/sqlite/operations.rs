//! Road operations on SQLite (writes in `BEGIN IMMEDIATE` transactions on the writer) (see [`crate::operations`]).

use sqlx::{Connection, Row};

use super::SqliteStore;
use crate::operations::{ChangeWrite, Operation, OperationChange, OperationFilter, OperationRow};
use crate::StoreError;

/// The list columns, the segments, the trail entry and the event of a write.
async fn write_side_tables(
    tx: &mut sqlx::SqliteConnection,
    row: &OperationRow<'_>,
    write: &ChangeWrite,
) -> Result<(), StoreError> {
    let op = row.op;
    sqlx::query("DELETE FROM operation_segments WHERE operation_id = ?1")
        .bind(&op.id)
        .execute(&mut *tx)
        .await?;
    for segment in op.affected_segments() {
        sqlx::query("INSERT INTO operation_segments (operation_id, segment) VALUES (?1, ?2)")
            .bind(&op.id)
            .bind(segment)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO operation_changes (operation_id, version, at_ms, by_name, action, changes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(&op.id)
    .bind(op.version)
    .bind(op.updated_at.millis())
    .bind(&op.updated_by)
    .bind(write.action)
    .bind(&write.changes)
    .execute(&mut *tx)
    .await?;
    super::outbox::append(tx, &write.event).await?;
    Ok(())
}

impl SqliteStore {
    /// Insert a new operation; false (nothing written) when its creator's key is taken.
    pub(crate) async fn insert_operation(
        &self,
        row: &OperationRow<'_>,
        key: Option<&str>,
        digest: &str,
        write: &ChangeWrite,
    ) -> Result<bool, StoreError> {
        let op = row.op;
        let b = row.bbox;
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = sqlx::query(
            "INSERT INTO operations (id, version, kind, status, agency, closes_road, from_ms, to_ms,
                min_lon, min_lat, max_lon, max_lat, created_by, idempotency_key, request_digest, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(&op.id)
        .bind(op.version)
        .bind(op.kind.as_str())
        .bind(op.status.as_str())
        .bind(&op.agency)
        .bind(op.closes_road)
        .bind(row.from_ms)
        .bind(row.to_ms)
        .bind(b.map(|b| b[0]))
        .bind(b.map(|b| b[1]))
        .bind(b.map(|b| b[2]))
        .bind(b.map(|b| b[3]))
        .bind(&op.created_by)
        .bind(key)
        .bind(key.map(|_| digest))
        .bind(&row.body)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !inserted {
            return Ok(false);
        }
        write_side_tables(&mut tx, row, write).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Write the next version over `version`; false (nothing written) when it is stale.
    pub(crate) async fn update_operation(
        &self,
        row: &OperationRow<'_>,
        version: i64,
        write: &ChangeWrite,
    ) -> Result<bool, StoreError> {
        let op = row.op;
        let b = row.bbox;
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let updated = sqlx::query(
            "UPDATE operations SET version = ?2, kind = ?3, status = ?4, agency = ?5, closes_road = ?6,
                from_ms = ?7, to_ms = ?8, min_lon = ?9, min_lat = ?10, max_lon = ?11, max_lat = ?12,
                body = ?13
             WHERE id = ?1 AND version = ?14",
        )
        .bind(&op.id)
        .bind(op.version)
        .bind(op.kind.as_str())
        .bind(op.status.as_str())
        .bind(&op.agency)
        .bind(op.closes_road)
        .bind(row.from_ms)
        .bind(row.to_ms)
        .bind(b.map(|b| b[0]))
        .bind(b.map(|b| b[1]))
        .bind(b.map(|b| b[2]))
        .bind(b.map(|b| b[3]))
        .bind(&row.body)
        .bind(version)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !updated {
            return Ok(false);
        }
        write_side_tables(&mut tx, row, write).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(crate) async fn operation_by_key(
        &self,
        created_by: &str,
        key: &str,
    ) -> Result<Option<(Operation, Option<String>)>, StoreError> {
        let row = sqlx::query(
            "SELECT body, request_digest FROM operations WHERE created_by = ?1 AND idempotency_key = ?2",
        )
        .bind(created_by)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| -> Result<_, StoreError> {
            Ok((Operation::from_body(r.try_get("body")?)?, r.try_get("request_digest")?))
        })
        .transpose()
    }

    pub(crate) async fn operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM operations WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        body.map(Operation::from_body).transpose()
    }

    pub(crate) async fn operations(
        &self,
        f: &OperationFilter,
        statuses: &str,
        limit: i64,
    ) -> Result<Vec<Operation>, StoreError> {
        let b = f.bbox;
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM operations
             WHERE instr(?1, ',' || status || ',') > 0
               AND (?2 IS NULL OR kind = ?2)
               AND (?3 IS NULL OR agency = ?3)
               AND (?4 IS NULL OR to_ms > ?4)
               AND (?5 IS NULL OR from_ms < ?5)
               AND (?6 IS NULL OR (max_lon >= ?6 AND max_lat >= ?7 AND min_lon <= ?8 AND min_lat <= ?9))
               AND (?10 IS NULL OR id > ?10)
             ORDER BY id LIMIT ?11",
        )
        .bind(statuses)
        .bind(f.kind.map(|k| k.as_str()))
        .bind(&f.agency)
        .bind(f.from.map(|t| t.millis()))
        .bind(f.to.map(|t| t.millis()))
        .bind(b.map(|b| b[0]))
        .bind(b.map(|b| b[1]))
        .bind(b.map(|b| b[2]))
        .bind(b.map(|b| b[3]))
        .bind(&f.after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        bodies.into_iter().map(Operation::from_body).collect()
    }

    pub(crate) async fn operation_changes(
        &self,
        id: &str,
    ) -> Result<Vec<OperationChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, at_ms, by_name, action, changes FROM operation_changes
             WHERE operation_id = ?1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(crate::operations::change_from_row).collect()
    }

    pub(crate) async fn operations_on_segment(
        &self,
        segment: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT o.id FROM operation_segments s JOIN operations o ON o.id = s.operation_id
             WHERE s.segment = ?1 AND o.status IN ('planned', 'active') ORDER BY o.id",
        )
        .bind(segment)
        .fetch_all(&self.pool)
        .await?)
    }
}
