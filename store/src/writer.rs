//! The batch writer: collects write items from a bounded queue into batches, flushing on
//! size (in readings) or age, whichever comes first; writes each batch in one transaction;
//! retries transient failures with backoff; and only then hands the items' tickets (for
//! ingest, the MQTT acks) to the `committed` channel. A ticket is never released for a
//! batch that did not commit.
//!
//! Up to `max_in_flight` batches are written at once, each on its own connection, while
//! the next one is being collected: one batch's round trips and commit no longer leave the
//! database idle. Tickets still leave in batch order (the order their messages arrived,
//! which is the order MQTT wants acks in): a batch that commits before an earlier one
//! waits for it.
//!
//! Health: [`WriterMetrics::oldest_pending_age`] is the age of the oldest batch taken from
//! the queue and not yet committed (being collected, written or retried). It grows while
//! the database refuses or blocks writes (a table lock, an outage), so readiness and
//! `/metrics` can tell a stalled write path from an idle one.
//!
//! Shutdown: when the input channel closes, the writer flushes what it holds and returns.
//! If the database stays down past `shutdown_grace`, the unflushed tickets are dropped
//! without being committed, so the broker redelivers their messages to the next process.
//!
//! One batch is written by [`Store::write_batch`] in one transaction on either backend
//! (`pg/writer.rs`, `sqlite/writer.rs`): new devices, the readings not stored yet (the
//! dedupe key is (device, metric, time)) and the dead letters. A reading older than the raw
//! retention horizon is refused first, as an `older_than_retention` dead letter
//! (`refuse_too_old`): retention may have dropped the raw row that would dedupe it while
//! its rollups remain.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use telemetry::metrics::{self, Collector, CountsBy, Encoder, Histogram, Unit};
use telemetry::{DeviceId, EventTime, Reading};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{Batch, BatchOutcome, DeadLetter, Store, StoreError, OLDER_THAN_RETENTION};

/// The write of one batch: see the crate doc for its invariants (dedupe, one transaction
/// per batch). The SQL is each backend's (`pg/writer.rs`, `sqlite/writer.rs`).
impl Store {
    /// Write one batch in one transaction.
    pub async fn write_batch(&self, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        dispatch!(self, s => s.write_batch(batch).await)
    }

    /// Whether batches may be written on several connections at once.
    pub(crate) fn parallel_writes(&self) -> bool {
        dispatch!(self, s => s.parallel_writes())
    }
}

/// The batch without its readings older than the raw retention `horizon`, which become
/// dead letters (`older_than_retention`); `None` when there are none. Retention may have
/// dropped such a reading's raw row, the record that dedupes it, while its hourly and
/// daily rollups remain: storing it again would count it twice.
pub(crate) fn refuse_too_old(batch: &Batch, horizon: Option<EventTime>) -> Option<Batch> {
    let horizon = horizon?;
    if batch.readings.iter().all(|r| r.time >= horizon) {
        return None;
    }
    let mut out = Batch {
        readings: Vec::with_capacity(batch.readings.len()),
        dead_letters: batch.dead_letters.clone(),
        new_devices: batch.new_devices.clone(),
    };
    for r in &batch.readings {
        if r.time >= horizon {
            out.readings.push(r.clone());
            continue;
        }
        let payload =
            serde_json::json!({"m": r.metric.as_str(), "v": r.value, "t": r.time.millis()});
        let mut letter = DeadLetter::new(
            &telemetry::Topic::telemetry(&r.device),
            Some(r.device.clone()),
            OLDER_THAN_RETENTION,
            format!(
                "reading of {} at {} is older than the raw retention horizon {}: retention has \
                 dropped that time's raw readings, so storing it again could count it twice",
                r.metric.as_str(),
                r.time,
                horizon
            ),
            payload.to_string().as_bytes(),
        );
        letter.received_at = EventTime::now();
        out.dead_letters.push(letter);
    }
    Some(out)
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Flush when a batch holds this many readings.
    pub max_batch_readings: usize,
    /// Flush when the oldest item of a batch is this old.
    pub max_batch_age: Duration,
    /// Longest pause between retries of a failing batch.
    pub max_retry_backoff: Duration,
    /// How long a final flush keeps retrying at shutdown.
    pub shutdown_grace: Duration,
    /// Batches being written at once on PostgreSQL (each holds a connection while it
    /// is); SQLite writes one at a time.
    pub max_in_flight: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch_readings: 5_000,
            max_batch_age: Duration::from_millis(50),
            max_retry_backoff: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            max_in_flight: 2,
        }
    }
}

/// One unit of work: the readings and dead letters of one MQTT message, and its ticket.
#[derive(Debug)]
pub struct WriteItem<T> {
    pub readings: Vec<Reading>,
    pub dead_letters: Vec<DeadLetter>,
    pub new_devices: Vec<DeviceId>,
    pub ticket: T,
}

/// Counters of the writer, read by `/metrics` and benchmarks.
#[derive(Debug)]
pub struct WriterMetrics {
    pub batches: AtomicU64,
    pub readings_inserted: AtomicU64,
    pub readings_duplicate: AtomicU64,
    /// The process's one dead-letter counter, by reason (shared with ingest, see
    /// `ingest::IngestMetrics::dead_letters`): the writer adds the readings it refuses as
    /// older than the raw retention horizon (`older_than_retention`).
    pub dead_letters: Arc<CountsBy>,
    pub write_errors: AtomicU64,
    pub last_batch_readings: AtomicU64,
    pub last_flush_micros: AtomicU64,
    /// Batch commit durations.
    pub commit: Histogram,
    /// When the oldest uncommitted batch began (its first item was taken), if any.
    oldest_pending: Mutex<Option<Instant>>,
    /// How late live readings reach the store; the rollup merger seals that far behind.
    pub arrival_lag: Arc<ArrivalLag>,
}

/// How late live readings reach the store: a decaying maximum, over committed batches, of
/// commit time minus event time. Readings older than `cap` are left out (a device's
/// back-fill after an outage takes the late path whatever the seal waits). The rollup
/// merger seals minutes this far behind now, so that a broker backlog or a slow writer
/// does not turn live readings into late ones (exact either way; the late path is dearer).
#[derive(Debug)]
pub struct ArrivalLag {
    cap: Duration,
    /// The lag in milliseconds and when it was last raised.
    state: Mutex<(f64, Instant)>,
}

impl ArrivalLag {
    /// The estimate halves every this long without a larger lag.
    pub const HALF_LIFE: Duration = Duration::from_secs(60);

    pub fn new(cap: Duration) -> Self {
        Self { cap, state: Mutex::new((0.0, Instant::now())) }
    }

    /// Take the readings of a batch committed at `now`.
    pub fn observe(&self, now: EventTime, readings: &[Reading]) {
        let cap = self.cap.as_millis() as i64;
        let lag = readings
            .iter()
            .map(|r| now.millis() - r.time.millis())
            .filter(|lag| (0..=cap).contains(lag))
            .max();
        if let Some(lag) = lag {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let current = Self::decayed(*state);
            if lag as f64 >= current {
                *state = (lag as f64, Instant::now());
            }
        }
    }

    /// The current estimate.
    pub fn current(&self) -> Duration {
        let state = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        Duration::from_millis(Self::decayed(state) as u64)
    }

    fn decayed((lag, since): (f64, Instant)) -> f64 {
        lag * 0.5f64.powf(since.elapsed().as_secs_f64() / Self::HALF_LIFE.as_secs_f64())
    }
}

impl Default for ArrivalLag {
    /// Lags past the seal's longest wait change nothing, so they are not measured.
    fn default() -> Self {
        Self::new(crate::maintenance::MAX_SEAL_GRACE)
    }
}

/// Upper bounds (seconds) of the commit latency buckets.
pub const COMMIT_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl Default for WriterMetrics {
    fn default() -> Self {
        Self::with_dead_letters(Arc::default())
    }
}

impl WriterMetrics {
    /// Counters adding refused readings to `dead_letters`.
    pub fn with_dead_letters(dead_letters: Arc<CountsBy>) -> Self {
        Self {
            batches: AtomicU64::new(0),
            readings_inserted: AtomicU64::new(0),
            readings_duplicate: AtomicU64::new(0),
            dead_letters,
            write_errors: AtomicU64::new(0),
            last_batch_readings: AtomicU64::new(0),
            last_flush_micros: AtomicU64::new(0),
            commit: Histogram::new(&COMMIT_BUCKETS),
            oldest_pending: Mutex::new(None),
            arrival_lag: Arc::default(),
        }
    }

    /// How long the oldest batch not yet committed has been pending; zero when none is.
    pub fn oldest_pending_age(&self) -> Duration {
        let since = *self.oldest_pending.lock().unwrap_or_else(|e| e.into_inner());
        since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn set_oldest_pending(&self, since: Option<Instant>) {
        *self.oldest_pending.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }
}

impl Collector for WriterMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let e = &mut e;
        metrics::counter(e, "writer_batches", "Committed batches.", get(&self.batches))?;
        metrics::counter(
            e,
            "writer_readings_inserted",
            "Readings inserted.",
            get(&self.readings_inserted),
        )?;
        metrics::counter(
            e,
            "writer_readings_duplicate",
            "Readings already stored (replays).",
            get(&self.readings_duplicate),
        )?;
        metrics::counter(
            e,
            "writer_errors",
            "Failed batch writes (retried).",
            get(&self.write_errors),
        )?;
        metrics::gauge_f64(
            e,
            "writer_oldest_pending",
            "Age of the oldest batch not yet committed (0 when none is pending).",
            Some(&Unit::Seconds),
            self.oldest_pending_age().as_secs_f64(),
        )?;
        metrics::gauge_f64(
            e,
            "writer_arrival_lag",
            "How late live readings reach the store (decaying maximum of commit minus event time).",
            Some(&Unit::Seconds),
            self.arrival_lag.current().as_secs_f64(),
        )?;
        metrics::gauge_f64(
            e,
            "writer_last_batch_readings",
            "Readings in the last committed batch.",
            None,
            get(&self.last_batch_readings) as f64,
        )?;
        metrics::gauge_f64(
            e,
            "writer_last_flush",
            "Duration of the last batch write.",
            Some(&Unit::Seconds),
            get(&self.last_flush_micros) as f64 / 1e6,
        )?;
        metrics::histogram(
            e,
            "writer_commit",
            "Batch commit durations.",
            Some(&Unit::Seconds),
            &self.commit.snapshot(),
        )
    }
}

/// Run until `input` closes. Committed tickets go to `committed` in batch order, each
/// batch's after its own commit.
pub async fn run_writer<T: Send + 'static>(
    store: Store,
    config: WriterConfig,
    mut input: mpsc::Receiver<WriteItem<T>>,
    committed: mpsc::Sender<Vec<T>>,
    metrics: Arc<WriterMetrics>,
) {
    // SQLite takes one writing transaction at a time: a second would only wait or retry.
    let max_in_flight = if store.parallel_writes() { config.max_in_flight.max(1) } else { 1 };
    let mut in_flight = FuturesOrdered::new();
    // When each batch in flight began, oldest first (the order `in_flight` completes in).
    let mut started: VecDeque<Instant> = VecDeque::new();
    let mut batch = Batch::default();
    let mut tickets: Vec<T> = Vec::new();
    loop {
        // Wait for the first item of the next batch, handing back committed tickets meanwhile.
        let first = loop {
            tokio::select! {
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    started.pop_front();
                    metrics.set_oldest_pending(started.front().copied());
                    if !hand_back(done, &committed).await {
                        return;
                    }
                }
                item = input.recv() => break item,
            }
        };
        let Some(first) = first else { break };
        let began = Instant::now();
        if started.is_empty() {
            metrics.set_oldest_pending(Some(began));
        }
        let deadline = began + config.max_batch_age;
        add(&mut batch, &mut tickets, first);
        let mut closed = false;
        while batch.readings.len() < config.max_batch_readings {
            tokio::select! {
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    started.pop_front();
                    metrics.set_oldest_pending(Some(started.front().copied().unwrap_or(began)));
                    if !hand_back(done, &committed).await {
                        return;
                    }
                }
                item = input.recv() => match item {
                    Some(item) => add(&mut batch, &mut tickets, item),
                    None => { closed = true; break; }
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Room for this batch: the oldest in flight commits first.
        while in_flight.len() >= max_in_flight {
            let Some(done) = in_flight.next().await else { break };
            started.pop_front();
            metrics.set_oldest_pending(Some(started.front().copied().unwrap_or(began)));
            if !hand_back(done, &committed).await {
                return;
            }
        }
        let give_up = if closed { Some(Instant::now() + config.shutdown_grace) } else { None };
        let (ready, ready_tickets) = (std::mem::take(&mut batch), std::mem::take(&mut tickets));
        started.push_back(began);
        in_flight.push_back(flush(
            store.clone(),
            config.clone(),
            ready,
            ready_tickets,
            metrics.clone(),
            give_up,
        ));
        if closed {
            break;
        }
    }
    // The input closed: let what is in flight commit, in order.
    while let Some(done) = in_flight.next().await {
        started.pop_front();
        metrics.set_oldest_pending(started.front().copied());
        if !hand_back(done, &committed).await {
            return;
        }
    }
}

/// Hand a batch's tickets to `committed`. False when the writer should stop: the batch was
/// abandoned (its messages and those of later batches stay unacknowledged, and the broker
/// redelivers them) or nobody listens for committed tickets.
async fn hand_back<T>(done: Option<Vec<T>>, committed: &mpsc::Sender<Vec<T>>) -> bool {
    match done {
        Some(tickets) => committed.send(tickets).await.is_ok(),
        None => false,
    }
}

fn add<T>(batch: &mut Batch, tickets: &mut Vec<T>, item: WriteItem<T>) {
    batch.readings.extend(item.readings);
    batch.dead_letters.extend(item.dead_letters);
    batch.new_devices.extend(item.new_devices);
    tickets.push(item.ticket);
}

/// Write the batch, retrying until it commits (or `give_up` passes). Returns its tickets
/// once it committed, `None` if it was abandoned.
async fn flush<T>(
    store: Store,
    config: WriterConfig,
    batch: Batch,
    tickets: Vec<T>,
    metrics: Arc<WriterMetrics>,
    give_up: Option<Instant>,
) -> Option<Vec<T>> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let started = Instant::now();
        match store.write_batch(&batch).await {
            Ok(outcome) => {
                metrics.batches.fetch_add(1, Ordering::Relaxed);
                metrics.readings_inserted.fetch_add(outcome.inserted, Ordering::Relaxed);
                metrics.readings_duplicate.fetch_add(outcome.duplicates, Ordering::Relaxed);
                if outcome.older_than_retention > 0 {
                    metrics.dead_letters.add(OLDER_THAN_RETENTION, outcome.older_than_retention);
                }
                metrics.last_batch_readings.store(batch.readings.len() as u64, Ordering::Relaxed);
                metrics.arrival_lag.observe(EventTime::now(), &batch.readings);
                metrics
                    .last_flush_micros
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                metrics.commit.observe(started.elapsed());
                return Some(tickets);
            }
            Err(e) => {
                metrics.write_errors.fetch_add(1, Ordering::Relaxed);
                if give_up.is_some_and(|g| Instant::now() + backoff > g) {
                    tracing::error!(error = %e, readings = batch.readings.len(), "abandoning batch at shutdown; its messages stay unacknowledged");
                    return None;
                }
                if e.is_transient() {
                    tracing::warn!(error = %e, retry_in = ?backoff, "batch write failed; retrying");
                } else {
                    // Not expected to heal by itself, but dropping the batch would lose
                    // acknowledged-to-be data: keep retrying, loudly, and let operators act.
                    tracing::error!(error = %e, retry_in = ?backoff, "batch write failed with a non-transient error; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.max_retry_backoff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    async fn memory_store() -> Store {
        let store =
            Store::connect("sqlite::memory:", &StoreOptions::default()).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }

    /// The writer hands tickets back in the order their items arrived, each batch's after its
    /// commit, and flushes what it holds when its input closes.
    #[tokio::test]
    async fn writer_returns_tickets_in_order_after_commit() {
        use std::sync::Arc;

        use telemetry::{DeviceId, EventTime, MetricId, Reading};
        use tokio::sync::mpsc;

        use crate::{HistoryQuery, Step};

        let store = memory_store().await;
        let (tx, rx) = mpsc::channel(64);
        let (committed_tx, mut committed) = mpsc::channel(64);
        let config = WriterConfig { max_batch_readings: 3, ..WriterConfig::default() };
        let metrics = Arc::new(WriterMetrics::default());
        let writer =
            tokio::spawn(run_writer(store.clone(), config, rx, committed_tx, metrics.clone()));
        let device = DeviceId::parse("wt1").expect("id");
        for i in 0..10u32 {
            let time = EventTime(1_763_892_000_000 + i64::from(i) * 1_000);
            let reading = Reading {
                device: device.clone(),
                metric: MetricId::SpeedKmh,
                time,
                value: f64::from(i),
                seq: None,
            };
            tx.send(WriteItem {
                readings: vec![reading],
                dead_letters: Vec::new(),
                new_devices: Vec::new(),
                ticket: i,
            })
            .await
            .expect("send");
        }
        drop(tx);
        let mut tickets = Vec::new();
        while let Some(batch) = committed.recv().await {
            tickets.extend(batch);
        }
        writer.await.expect("writer");
        assert_eq!(tickets, (0..10).collect::<Vec<_>>());
        let q = HistoryQuery::device(
            device,
            MetricId::SpeedKmh,
            EventTime(1_763_892_000_000),
            EventTime(1_763_892_100_000),
            Step::Raw,
        );
        assert_eq!(
            store.history(&q).await.expect("history").points.len(),
            10,
            "every ticket's reading is stored"
        );
        assert_eq!(metrics.readings_inserted.load(std::sync::atomic::Ordering::Relaxed), 10);
    }

    /// While another session holds the database's write lock, the age of the writer's oldest
    /// uncommitted batch grows; once the lock is released the batch commits and the age is
    /// zero again.
    #[tokio::test]
    async fn writer_reports_the_age_of_a_batch_blocked_by_a_lock() {
        use std::sync::Arc;
        use std::time::Duration;

        use sqlx::{Connection, Executor};
        use telemetry::{DeviceId, EventTime, MetricId, Reading};
        use tokio::sync::mpsc;

        let path = std::env::temp_dir().join(format!("sccr-writer-age-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let url = format!("sqlite:{}", path.display());
        let options =
            StoreOptions { acquire_timeout: Duration::from_secs(30), ..StoreOptions::default() };
        let store = Store::connect(&url, &options).await.expect("connect");
        store.migrate().await.expect("migrate");
        let (tx, rx) = mpsc::channel(8);
        let (committed_tx, mut committed) = mpsc::channel(8);
        let metrics = Arc::new(WriterMetrics::default());
        let writer = tokio::spawn(run_writer(
            store.clone(),
            WriterConfig::default(),
            rx,
            committed_tx,
            metrics.clone(),
        ));
        let item = |i: u32| WriteItem {
            readings: vec![Reading {
                device: DeviceId::parse("age1").expect("id"),
                metric: MetricId::SpeedKmh,
                time: EventTime(1_763_892_000_000 + i64::from(i) * 1_000),
                value: f64::from(i),
                seq: None,
            }],
            dead_letters: Vec::new(),
            new_devices: Vec::new(),
            ticket: i,
        };
        async fn recv(c: &mut mpsc::Receiver<Vec<u32>>) -> Option<Vec<u32>> {
            tokio::time::timeout(Duration::from_secs(30), c.recv()).await.expect("a commit in time")
        }
        tx.send(item(0)).await.expect("send");
        assert_eq!(recv(&mut committed).await, Some(vec![0]));
        assert_eq!(metrics.oldest_pending_age(), Duration::ZERO, "nothing pending after a commit");

        let mut lock = sqlx::SqliteConnection::connect(&url).await.expect("second session");
        lock.execute("BEGIN EXCLUSIVE").await.expect("take the write lock");
        tx.send(item(1)).await.expect("send");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metrics.oldest_pending_age() < Duration::from_millis(500) {
            assert!(tokio::time::Instant::now() < deadline, "the pending age never grew");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(committed.try_recv().is_err(), "nothing commits under the lock");
        lock.execute("COMMIT").await.expect("release the lock");
        assert_eq!(recv(&mut committed).await, Some(vec![1]));
        assert_eq!(metrics.oldest_pending_age(), Duration::ZERO);
        drop(tx);
        writer.await.expect("writer");
        store.close().await;
        let _ = std::fs::remove_file(&path);
    }

    fn reading_at(ms: i64) -> Reading {
        Reading {
            device: DeviceId::parse("lag1").expect("id"),
            metric: telemetry::MetricId::SpeedKmh,
            time: EventTime(ms),
            value: 1.0,
            seq: None,
        }
    }

    /// The lag follows the latest live readings of a batch, ignores back-fill past the cap
    /// and clock-skewed future readings, and halves every half-life once it stops.
    #[tokio::test(start_paused = true)]
    async fn arrival_lag_tracks_live_readings_and_decays() {
        let lag = ArrivalLag::new(Duration::from_secs(60));
        assert_eq!(lag.current(), Duration::ZERO);
        let now = EventTime(10_000_000);
        let batch =
            [now.millis() - 2_000, now.millis() - 8_000, now.millis() - 3_600_000].map(reading_at);
        lag.observe(now, &batch);
        assert_eq!(lag.current(), Duration::from_secs(8), "back-fill past the cap is left out");
        lag.observe(now, &[reading_at(now.millis() + 5_000), reading_at(now.millis() - 1_000)]);
        assert_eq!(lag.current(), Duration::from_secs(8), "a smaller lag keeps the maximum");
        tokio::time::advance(ArrivalLag::HALF_LIFE).await;
        let halved = lag.current().as_millis();
        assert!((3_990..=4_000).contains(&halved), "halved after a half-life: {halved} ms");

        let config = crate::MergerConfig { arrival_lag: Some(Arc::new(lag)), ..Default::default() };
        assert_eq!(config.seal_grace_now(), Duration::from_secs(10), "the floor holds");
    }

    #[tokio::test(start_paused = true)]
    async fn the_seal_waits_for_the_arrival_lag_up_to_its_cap() {
        let lag = Arc::new(ArrivalLag::new(Duration::from_secs(600)));
        let config = crate::MergerConfig {
            arrival_lag: Some(lag.clone()),
            ..crate::MergerConfig::default()
        };
        let now = EventTime(50_000_000);
        lag.observe(now, &[reading_at(now.millis() - 20_000)]);
        assert_eq!(config.seal_grace_now(), Duration::from_secs(26), "20 s + a quarter + 1 s");
        lag.observe(now, &[reading_at(now.millis() - 300_000)]);
        assert_eq!(config.seal_grace_now(), config.max_seal_grace, "capped");
    }
}
