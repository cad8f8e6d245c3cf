//! The store contract suite against a real PostgreSQL (the SQLite run is in `store`).

use sccr_tests::TestDb;
use store::{Store, StoreOptions};

#[tokio::test]
async fn postgres_meets_the_store_contract() {
    let db = TestDb::create().await.expect("test database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrations are idempotent");
    store::contract::run_all(&store).await;
}

#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let db = TestDb::create().await.expect("test database");
    let a = Store::connect(&db.url, &StoreOptions::default()).await.expect("connect");
    let b = Store::connect(&db.url, &StoreOptions::default()).await.expect("connect");
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("first migrator");
    rb.expect("second migrator");
}
