//! The engine's saved state at start: where it is kept, loading it (parts or an earlier
//! version's whole document), and bringing the restored alerts in line with the store.

use std::collections::HashMap;

use store::{AlertRecord, Store, StoreError};
use stream::{
    AlertEngineState, AlertKey, BookRecord, EngineHead, OperatorAction, StatePart, StreamCore,
};
use telemetry::EventTime;

/// Where the engine's state is saved: one key per ingest client, so replicas do not
/// overwrite each other's timers.
pub fn state_key(client_id: &str) -> String {
    format!("alert_engine/{client_id}")
}

/// The engine state saved under `key`: assembled from its parts, else the whole document
/// an earlier version saved; `None` when nothing is saved.
pub async fn load_engine_state(
    store: &Store,
    key: &str,
) -> Result<Option<AlertEngineState>, StoreError> {
    let (mut head, mut book, mut parts) = (None, None::<BookRecord>, Vec::new());
    store
        .load_state_parts(key, |name, value| {
            let corrupt = |e: serde_json::Error| StoreError::Corrupt {
                what: "alert engine state part",
                value: format!("{name}: {e}"),
            };
            match name.as_str() {
                "head" => head = Some(serde_json::from_str::<EngineHead>(&value).map_err(corrupt)?),
                "book" => book = Some(serde_json::from_str(&value).map_err(corrupt)?),
                _ => parts.push(serde_json::from_str::<StatePart>(&value).map_err(corrupt)?),
            }
            Ok(())
        })
        .await?;
    if let Some(head) = head {
        return Ok(Some(AlertEngineState::assemble(head, book, parts)));
    }
    let Some(doc) = store.load_stream_state(key).await? else { return Ok(None) };
    serde_json::from_value(doc)
        .map(Some)
        .map_err(|e| StoreError::Corrupt { what: "alert engine state", value: e.to_string() })
}

/// Bring the alerts a restored engine holds open in line with the store, which operators
/// may have moved after the engine's last checkpoint (a crash loses at most one checkpoint
/// interval): an alert acknowledged in the store is acknowledged in the engine, one no
/// longer open in the store is cleared in the engine (as an operator's clear: its
/// condition must end and occur again to raise anew). Nothing is stored here; the store
/// already holds these moves. Returns how many engine alerts moved.
pub fn reconcile(core: &mut StreamCore, store_open: &[AlertRecord], now: EventTime) -> usize {
    let by_key: HashMap<AlertKey, &AlertRecord> =
        store_open.iter().filter_map(|r| AlertKey::of_record(r).map(|k| (k, r))).collect();
    let moves: Vec<(OperatorAction, AlertKey, String, Option<String>, EventTime)> = core
        .open_alerts()
        .filter_map(|a| match by_key.get(&a.key) {
            None => Some((
                OperatorAction::Clear,
                a.key.clone(),
                "sccr".to_owned(),
                Some("no longer open in the store at restart".to_owned()),
                now,
            )),
            Some(r) => match (&r.acknowledged, a.state) {
                (Some(ack), stream::AlertState::Raised) => Some((
                    OperatorAction::Acknowledge,
                    a.key.clone(),
                    ack.by.clone(),
                    ack.note.clone(),
                    ack.at,
                )),
                _ => None,
            },
        })
        .collect();
    // Shelves set or taken off in the store meanwhile.
    let shelves: Vec<(OperatorAction, AlertKey, String, Option<String>, EventTime)> = core
        .open_alerts()
        .filter_map(|a| {
            let r = by_key.get(&a.key)?;
            match (&r.shelved, &a.shelved) {
                (Some(s), held) if held.as_ref() != Some(s) => Some((
                    OperatorAction::Shelve { reason: s.reason.clone(), until: s.until },
                    a.key.clone(),
                    s.by.clone(),
                    None,
                    s.at,
                )),
                (None, Some(_)) => {
                    Some((OperatorAction::Unshelve, a.key.clone(), "sccr".to_owned(), None, now))
                }
                _ => None,
            }
        })
        .collect();
    let moves: Vec<_> = moves.into_iter().chain(shelves).collect();
    let mut moved = 0;
    for (action, key, by, note, at) in moves {
        if matches!(core.operator(action, &key, &by, note, at), Ok(true)) {
            moved += 1;
        }
    }
    if moved > 0 {
        tracing::info!(moved, "restored alerts brought in line with the store");
    }
    moved
}
