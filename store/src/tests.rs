use crate::{contract, Store, StoreOptions};

async fn memory_store() -> Store {
    let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

#[tokio::test]
async fn sqlite_meets_the_store_contract() {
    let store = memory_store().await;
    contract::run_all(&store).await;
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let store = memory_store().await;
    store.migrate().await.expect("second migrate");
}

#[tokio::test]
async fn unsupported_urls_are_named() {
    let err = Store::connect("mysql://x", &StoreOptions::default()).await.unwrap_err();
    assert_eq!(err.to_string(), "database URL \"mysql://x\" is neither postgres:// nor sqlite:");
}

/// The writer hands tickets back in the order their items arrived, each batch's after its
/// commit, and flushes what it holds when its input closes.
#[tokio::test]
async fn writer_returns_tickets_in_order_after_commit() {
    use std::sync::Arc;

    use telemetry::{DeviceId, EventTime, MetricId, Reading};
    use tokio::sync::mpsc;

    use crate::{run_writer, HistoryQuery, Step, WriteItem, WriterConfig, WriterMetrics};

    let store = memory_store().await;
    let (tx, rx) = mpsc::channel(64);
    let (committed_tx, mut committed) = mpsc::channel(64);
    let config = WriterConfig { max_batch_readings: 3, ..WriterConfig::default() };
    let metrics = Arc::new(WriterMetrics::default());
    let writer = tokio::spawn(run_writer(store.clone(), config, rx, committed_tx, metrics.clone()));
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

    use crate::{run_writer, WriteItem, WriterConfig, WriterMetrics};

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
