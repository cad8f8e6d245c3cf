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
