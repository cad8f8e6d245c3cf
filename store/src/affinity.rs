//! Device affinity's use of the store (docs/scale-out.md#device-affinity): ownership of
//! partitions through PostgreSQL session-level advisory locks, and the readings a
//! replica taking over a partition rebuilds its open windows from.
//!
//! A replica owns partition `p` while its [`PartitionLocks`] connection holds the advisory
//! lock `(group key, p)`. The lock belongs to the connection's session: when the process
//! dies its connection closes and PostgreSQL frees the lock at once, with no lease to time
//! out. Every replica also holds the shared lock `(group key, MEMBERS)` while it runs, so
//! `pg_locks` tells how many replicas are alive and which partitions are taken. SQLite has
//! no other process to share with: it has no partition locks (`ingest.partitions` must be
//! 1 there).

use std::collections::BTreeSet;

use sqlx::{Connection, Row};
use telemetry::{DeviceId, EventTime, Reading, Seq};

use crate::{Store, StoreError};

/// The second key of the replicas' shared membership lock (partitions are below it).
const MEMBERS: i64 = 65_535;

/// The first key of a group's advisory locks: FNV-1a of `sccr-affinity/<group>`, 31 bits.
fn group_key(group: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("sccr-affinity/{group}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash & 0x7fff_ffff) as i64
}

/// The advisory locks of one replica, on a connection of their own.
pub struct PartitionLocks {
    conn: sqlx::PgConnection,
    key: i64,
    held: BTreeSet<u16>,
}

impl std::fmt::Debug for PartitionLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLocks").field("key", &self.key).field("held", &self.held).finish()
    }
}

const LOCKS: &str = "SELECT objid::int8 AS p, mode FROM pg_locks \
     WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
       AND classid = $1::int8::oid";

impl PartitionLocks {
    /// The partitions this connection holds.
    pub fn held(&self) -> &BTreeSet<u16> {
        &self.held
    }

    /// Replicas alive (holding the membership lock), this one included, and the
    /// partitions held by any replica.
    pub async fn survey(&mut self) -> Result<(u32, BTreeSet<u16>), StoreError> {
        let rows = sqlx::query(LOCKS).bind(self.key).fetch_all(&mut self.conn).await?;
        let mut replicas = 0;
        let mut taken = BTreeSet::new();
        for row in rows {
            let p: i64 = row.try_get("p")?;
            let mode: String = row.try_get("mode")?;
            if p == MEMBERS && mode == "ShareLock" {
                replicas += 1;
            } else if let Ok(p) = u16::try_from(p) {
                taken.insert(p);
            }
        }
        Ok((replicas.max(1), taken))
    }

    /// Take partition `p` if no replica holds it.
    pub async fn try_take(&mut self, p: u16) -> Result<bool, StoreError> {
        if self.held.contains(&p) {
            return Ok(true);
        }
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1::int4, $2::int4)")
            .bind(self.key as i32)
            .bind(i32::from(p))
            .fetch_one(&mut self.conn)
            .await?;
        if got {
            self.held.insert(p);
        }
        Ok(got)
    }

    /// Give partition `p` up (its pipeline has stopped and committed what it acknowledged).
    pub async fn release(&mut self, p: u16) -> Result<(), StoreError> {
        if self.held.remove(&p) {
            sqlx::query("SELECT pg_advisory_unlock($1::int4, $2::int4)")
                .bind(self.key as i32)
                .bind(i32::from(p))
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// Close the connection: every lock it holds is freed.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}

impl Store {
    /// A replica's partition locks for `group`, on a new connection that joins the group's
    /// membership. PostgreSQL only.
    pub async fn partition_locks(&self, group: &str) -> Result<PartitionLocks, StoreError> {
        let Store::Postgres(pg) = self else {
            return Err(StoreError::InvalidQuery {
                param: "ingest.partitions",
                message: "partition ownership needs PostgreSQL".into(),
            });
        };
        let mut conn = sqlx::PgConnection::connect_with(&pg.pool.connect_options()).await?;
        sqlx::query("SELECT set_config('application_name', 'sccr-partition-locks', false)")
            .execute(&mut conn)
            .await?;
        let key = group_key(group);
        sqlx::query("SELECT pg_advisory_lock_shared($1::int4, $2::int4)")
            .bind(key as i32)
            .bind(MEMBERS as i32)
            .execute(&mut conn)
            .await?;
        Ok(PartitionLocks { conn, key, held: BTreeSet::new() })
    }

    /// The stored readings of `devices` with `from <= time`, in time order: what a replica
    /// taking a partition over rebuilds the open windows from. PostgreSQL only.
    pub async fn readings_since(
        &self,
        devices: &[DeviceId],
        from: EventTime,
    ) -> Result<Vec<Reading>, StoreError> {
        let Store::Postgres(pg) = self else {
            return Ok(Vec::new());
        };
        let ids: Vec<&str> = devices.iter().map(DeviceId::as_str).collect();
        let rows = sqlx::query(
            "SELECT time, device, metric, value, seq FROM readings \
             WHERE time >= $1 AND device = ANY($2::text[]) ORDER BY time, device, metric",
        )
        .bind(from.to_offset_date_time())
        .bind(&ids)
        .fetch_all(&pg.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let device: String = row.try_get("device")?;
            let metric: String = row.try_get("metric")?;
            let seq: Option<i64> = row.try_get("seq")?;
            out.push(Reading {
                device: DeviceId::parse(&device)
                    .map_err(|_| StoreError::Corrupt { what: "device id", value: device })?,
                metric: metric
                    .parse()
                    .map_err(|_| StoreError::Corrupt { what: "metric", value: metric.clone() })?,
                time: EventTime::from_offset_date_time(row.try_get("time")?),
                value: row.try_get("value")?,
                seq: seq.and_then(|s| u64::try_from(s).ok()).map(Seq),
            });
        }
        Ok(out)
    }
}
