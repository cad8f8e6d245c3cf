//! The stream's exported state: whole documents and checkpoints in parts.

use super::T0;
use crate::Store;

pub async fn stream_state_round_trips_and_is_overwritten(store: &Store) {
    let key = "contract.alert_engine";
    assert_eq!(store.load_stream_state(key).await.expect("load"), None);
    let first = serde_json::json!({
        "next_alert_id": 42,
        "clock": T0,
        "open_alerts": [{ "id": 7, "key": { "rule": "no2-high", "subject": { "device": "aq-3" } }, "value": 231.25, "note": null }],
        "counters": { "raised": 18_446_744_073_709_551_615u64, "ratio": 0.1 },
        "name": "città \"centro\"",
    });
    store.save_stream_state(key, &first).await.expect("save");
    assert_eq!(store.load_stream_state(key).await.expect("load"), Some(first));
    let second = serde_json::json!({ "next_alert_id": 43, "open_alerts": [] });
    store.save_stream_state(key, &second).await.expect("overwrite");
    assert_eq!(store.load_stream_state(key).await.expect("load"), Some(second));
    assert_eq!(store.load_stream_state("contract.other").await.expect("load"), None);
}

pub async fn stream_state_parts_commit_together_and_replace_on_request(store: &Store) {
    let key = "contract.parts";
    let load = || async {
        let mut parts = std::collections::BTreeMap::new();
        store
            .load_state_parts(key, |p, v| {
                parts.insert(p, serde_json::from_str::<serde_json::Value>(&v).expect("json"));
                Ok(())
            })
            .await
            .expect("load");
        parts
    };
    let part = |name: &str, json: &str| (name.to_owned(), json.to_owned());
    store.save_stream_state(key, &serde_json::json!({"legacy": true})).await.expect("legacy");
    let mut save = store.begin_state_save(key, true).await.expect("begin");
    save.put(key, &[part("head", r#"{"n":1}"#), part("device/a", r#"{"v":"città"}"#)])
        .await
        .expect("put");
    save.put(key, &[part("device/b", r#"{"v":2}"#)]).await.expect("put");
    drop(save);
    assert!(load().await.is_empty(), "nothing of an uncommitted checkpoint is visible");
    let mut save = store.begin_state_save(key, true).await.expect("begin");
    save.put(key, &[part("head", r#"{"n":1}"#), part("device/a", r#"{"v":"città"}"#)])
        .await
        .expect("put");
    save.put(key, &[part("device/b", r#"{"v":2}"#)]).await.expect("put");
    save.commit().await.expect("commit");
    assert_eq!(store.load_stream_state(key).await.expect("load"), None, "replaced the document");
    let mut save = store.begin_state_save(key, false).await.expect("begin");
    save.put(key, &[part("head", r#"{"n":2}"#), part("device/b", r#"{"v":3}"#)])
        .await
        .expect("put");
    save.commit().await.expect("commit");
    let parts = load().await;
    assert_eq!(
        parts,
        [
            ("device/a".to_owned(), serde_json::json!({"v": "città"})),
            ("device/b".to_owned(), serde_json::json!({"v": 3})),
            ("head".to_owned(), serde_json::json!({"n": 2})),
        ]
        .into_iter()
        .collect()
    );
    let save = store.begin_state_save(key, true).await.expect("begin");
    save.commit().await.expect("commit");
    assert!(load().await.is_empty(), "a replacing checkpoint drops every earlier part");
}
