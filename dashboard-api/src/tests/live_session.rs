//! The live session: a snapshot then filtered deltas, bad messages answered with
//! errors, a client that falls behind gets a fresh snapshot.

use super::*;

#[tokio::test]
async fn subscribe_gives_snapshot_then_filtered_deltas() {
    let hub = LiveHub::new(64);
    hub.apply(&[reading("a", T0, 1.0), reading("b", T0, 2.0)]);
    let (tx, mut rx) = session(hub.clone());
    tx.send(Ok(r#"{"type":"subscribe","devices":["a"]}"#.into())).await.unwrap();
    let snap = next_json(&mut rx).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["values"].as_array().unwrap().len(), 1);
    assert_eq!(snap["values"][0]["value"], 1.0);
    hub.apply(&[reading("b", T0 + 1, 20.0), reading("a", T0 + 1, 10.0)]);
    let delta = next_json(&mut rx).await;
    assert_eq!(delta["type"], "delta");
    assert_eq!(delta["values"].as_array().unwrap().len(), 1);
    assert_eq!(delta["values"][0]["device"], "a");
    assert_eq!(delta["values"][0]["value"], 10.0);

    tx.send(Ok(r#"{"type":"unsubscribe"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "unsubscribed");
    hub.apply(&[reading("a", T0 + 2, 11.0)]);
    tx.send(Ok(r#"{"type":"ping"}"#.into())).await.unwrap();
    // The pong comes next: nothing for "a" was sent after unsubscribe.
    assert_eq!(next_json(&mut rx).await["type"], "pong");
}

#[tokio::test]
async fn bad_messages_get_errors_and_the_session_goes_on() {
    let hub = LiveHub::new(64);
    let (tx, mut rx) = session(hub);
    for (msg, code) in [
        ("not json", "bad_message"),
        (r#"{"type":"dance"}"#, "bad_message"),
        (r#"{"type":"subscribe","devices":["NO"]}"#, "bad_subscription"),
        (r#"{"type":"subscribe","metrics":["warp"]}"#, "bad_subscription"),
        ("\u{0}binary", "bad_message"),
    ] {
        tx.send(Ok(msg.into())).await.unwrap();
        let f = next_json(&mut rx).await;
        assert_eq!(f["type"], "error", "{msg}");
        assert_eq!(f["code"], code, "{msg}");
    }
    tx.send(Ok(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "pong");
}

#[tokio::test]
async fn a_client_that_falls_behind_gets_a_fresh_snapshot() {
    let hub = LiveHub::new(16);
    let (tx, mut rx) = session(hub.clone());
    tx.send(Ok(r#"{"type":"subscribe","segments":[]}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "snapshot");
    // On this single-threaded runtime the session cannot run during this synchronous burst,
    // so its 16-event queue overflows before it reads; values, conflated, never do.
    for i in 0..200 {
        hub.publish_segments(vec![segment_state(
            "s1",
            T0 + i * 60_000,
            20.0,
            stream::LevelOfService::C,
        )]);
        hub.apply(&[reading("a", T0 + i, i as f64)]);
    }
    let f = next_json(&mut rx).await;
    assert_eq!(
        (f["type"].as_str(), f["reason"].as_str()),
        (Some("snapshot"), Some("resync")),
        "{f}"
    );
    assert_eq!(f["segments"][0]["start"], T0 + 199 * 60_000);
    assert_eq!(f["values"][0]["value"], 199.0);
}
