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
