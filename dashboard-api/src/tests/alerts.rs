//! Alerts over REST: listed, filtered and paged; shelved, acknowledged and cleared in
//! the store, the hub and the engine; unknown ids and bad bodies refused.

use super::*;

#[tokio::test]
async fn alerts_are_listed_filtered_and_paged() {
    let s = state().await;
    let a = raise(&s, "viale-strozzi", T0).await;
    let b = raise(&s, "lungarno-acciaiuoli", T0 + 1_000).await;
    let (st, body) = get(&s, "/api/v1/alerts?state=open").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let ids: Vec<i64> =
        body["alerts"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![b, a], "newest first");
    assert_eq!(body["alerts"][0]["subject"]["segment"], "lungarno-acciaiuoli");
    assert_eq!(body["alerts"][0]["severity"], "critical");
    assert_eq!(body["alerts"][0]["state"], "raised");
    let (_, page) = get(&s, "/api/v1/alerts?limit=1").await;
    assert_eq!(page["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], b);
    let (_, page2) = get(&s, &format!("/api/v1/alerts?limit=1&before={b}")).await;
    assert_eq!(page2["alerts"][0]["id"], a);
    let (_, seg) =
        get(&s, "/api/v1/alerts?segment=viale-strozzi&severity=critical,warning&rule=congestion")
            .await;
    assert_eq!(seg["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(seg["alerts"][0]["id"], a);
    let (_, none) = get(&s, "/api/v1/alerts?state=cleared").await;
    assert!(none["alerts"].as_array().unwrap().is_empty());
    for (uri, param) in [
        ("/api/v1/alerts?state=asleep", "state"),
        ("/api/v1/alerts?severity=loud", "severity"),
        ("/api/v1/alerts?before=x", "before"),
        ("/api/v1/alerts?limit=0", "limit"),
        ("/api/v1/alerts?colour=red", "colour"),
    ] {
        let (st, body) = get(&s, uri).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["error"]["param"], param, "{uri}: {body}");
    }
}

#[tokio::test]
async fn shelving_is_checked_stored_audited_pushed_and_mirrored() {
    let (s, mut commands) = state_with_engine().await;
    let id = raise(&s, "viale-strozzi", T0).await;
    let shelve = format!("/api/v1/alerts/{id}/shelve");
    let now = EventTime::now().millis();
    let long = "x".repeat(501);
    for (body, field) in [
        (r#"{"reason":" ","for":"1h"}"#.to_owned(), "reason"),
        (format!(r#"{{"reason":"{long}","for":"1h"}}"#), "reason"),
        (r#"{"reason":"works"}"#.to_owned(), "for"),
        (format!(r#"{{"reason":"works","for":"1h","until":{}}}"#, now + 60_000), "for"),
        (r#"{"reason":"works","for":"9h"}"#.to_owned(), "for"),
        (r#"{"reason":"works","for":"soon"}"#.to_owned(), "for"),
        (format!(r#"{{"reason":"works","until":{}}}"#, now - 1), "until"),
        (format!(r#"{{"reason":"works","until":{}}}"#, now + 9 * 3_600_000), "until"),
    ] {
        let (st, answer) = send_as(&s, ADA, "POST", &shelve, &body).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{body}: {answer}");
    }
    let (st, _) = send_as(&s, ADA, "POST", &shelve, r#"{"for":"1h"}"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "reason is required");
    let (st, _) = send_as(&s, PLANNER, "POST", &shelve, r#"{"reason":"x","for":"1h"}"#).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "operators only");
    assert!(commands.try_recv().is_err(), "nothing refused reaches the engine");

    let (st, body) =
        send_as(&s, ADA, "POST", &shelve, r#"{"reason":"road works","for":"2h"}"#).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["alert"]["state"], "raised");
    assert_eq!(body["alert"]["shelved"]["by"], "ada");
    assert_eq!(body["alert"]["shelved"]["reason"], "road works");
    let until = body["alert"]["shelved"]["until"].as_i64().unwrap();
    assert_eq!(until - body["alert"]["shelved"]["at"].as_i64().unwrap(), 7_200_000);
    assert!(s.hub.open_alerts()[0].shelved.is_some(), "pushed live");
    let Some(StreamCommand::Operator {
        action: OperatorAction::Shelve { reason, until: u },
        by,
        ..
    }) = commands.try_recv().ok()
    else {
        panic!("no command")
    };
    assert_eq!((reason.as_str(), u.millis(), by.as_str()), ("road works", until, "ada"));
    let (_, listed) = get(&s, "/api/v1/alerts?state=shelved").await;
    assert_eq!(listed["alerts"][0]["id"], id);
    let (_, listed) = get(&s, "/api/v1/alerts?state=raised,suppressed").await;
    assert_eq!(listed["alerts"].as_array().unwrap().len(), 0);

    let unshelve = format!("/api/v1/alerts/{id}/unshelve");
    let (st, body) = send_as(&s, BOB, "POST", &unshelve, r#"{"note":"done"}"#).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["alert"]["shelved"].is_null());
    let (st, _) = send_as(&s, BOB, "POST", &unshelve, "").await;
    assert_eq!(st, StatusCode::CONFLICT, "not shelved");
    let audit = s.store.audit_log(None, 10).await.unwrap();
    let actions: Vec<(&str, &str, &str)> = audit
        .iter()
        .rev()
        .filter(|a| a.action.contains("shelve"))
        .map(|a| (a.actor.as_str(), a.action.as_str(), a.target.as_str()))
        .collect();
    let target = format!("alert/{id}");
    assert_eq!(
        actions,
        [("ada", "alert.shelve", target.as_str()), ("bob", "alert.unshelve", target.as_str())]
    );
    let events = s.store.alert_events(id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| (e.action, e.by.as_deref())).collect::<Vec<_>>(),
        [
            (None, None),
            (Some(store::AlertMove::Shelve), Some("ada")),
            (Some(store::AlertMove::Unshelve), Some("bob"))
        ]
    );

    let (st, _) = send_as(&s, ADA, "POST", &format!("/api/v1/alerts/{id}/clear"), "").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = send_as(&s, ADA, "POST", &shelve, r#"{"reason":"late","for":"1h"}"#).await;
    assert_eq!(st, StatusCode::CONFLICT, "a cleared alert");
    let (st, _) =
        send_as(&s, ADA, "POST", "/api/v1/alerts/999/shelve", r#"{"reason":"x","for":"1h"}"#).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, body) = get(&s, "/api/v1/alerts?state=nope").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("returned"), "{body}");
}

#[tokio::test]
async fn acknowledge_and_clear_update_the_store_the_hub_and_the_engine() {
    let (s, mut commands) = state_with_engine().await;
    let id = raise(&s, "viale-strozzi", T0).await;
    let (st, body) = send_as(
        &s,
        ADA,
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        r#"{"note":"crew on the way"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["alert"]["state"], "acknowledged");
    assert_eq!(body["alert"]["acknowledged"]["by"], "ada");
    assert_eq!(s.hub.open_alerts()[0].state, stream::AlertState::Acknowledged, "pushed live");
    let Some(StreamCommand::Operator {
        action: OperatorAction::Acknowledge, key, by, note, ..
    }) = commands.try_recv().ok()
    else {
        panic!("no command")
    };
    assert_eq!(
        (key.rule.as_str(), key.subject.to_string(), by.as_str(), note.as_deref()),
        ("congestion", "segment viale-strozzi".to_owned(), "ada", Some("crew on the way"))
    );

    let (st, body) = send_as(&s, BOB, "POST", &format!("/api/v1/alerts/{id}/ack"), "").await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(commands.try_recv().is_err(), "a refused move is not mirrored");

    let (st, body) = send_as(
        &s,
        ADA,
        "POST",
        &format!("/api/v1/alerts/{id}/clear"),
        r#"{"note":"cleared on site"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["alert"]["cleared"]["by"], "ada");
    assert!(matches!(
        commands.try_recv(),
        Ok(StreamCommand::Operator { action: OperatorAction::Clear, .. })
    ));
    assert!(s.hub.open_alerts().is_empty());
    assert_eq!(
        send_as(&s, ADA, "POST", &format!("/api/v1/alerts/{id}/clear"), "{}").await.0,
        StatusCode::CONFLICT
    );

    let (st, detail) = get(&s, &format!("/api/v1/alerts/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    let events: Vec<(Value, Value, Value)> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["to"].clone(), e["by"].clone(), e["note"].clone()))
        .collect();
    assert_eq!(
        events,
        vec![
            (Value::from("raised"), Value::Null, Value::Null),
            (Value::from("acknowledged"), Value::from("ada"), Value::from("crew on the way")),
            (Value::from("cleared"), Value::from("ada"), Value::from("cleared on site")),
        ]
    );
}

#[tokio::test]
async fn operator_moves_refuse_unknown_ids_and_bad_bodies() {
    let s = state().await;
    let id = raise(&s, "viale-strozzi", T0).await;
    let (st, body) = send(&s, "POST", "/api/v1/alerts/999/ack", "{}").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(get(&s, "/api/v1/alerts/999").await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&s, "POST", "/api/v1/alerts/999/clear", "{}").await.0, StatusCode::NOT_FOUND);
    for (body, field) in [
        (r#"{"by":"ada"}"#, "by"),
        ("not json", "body"),
        ("[1]", "body"),
        (r#"{"colour":"red"}"#, "colour"),
        (r#"{"note":5}"#, "note"),
    ] {
        let (st, resp) = send(&s, "POST", &format!("/api/v1/alerts/{id}/ack"), body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp["error"]["param"], field, "{body}: {resp}");
    }
    assert_eq!(send(&s, "POST", "/api/v1/alerts/abc/ack", "{}").await.1["error"]["param"], "id");
    assert_eq!(
        get(&s, &format!("/api/v1/alerts/{id}")).await.1["alert"]["state"],
        "raised",
        "nothing moved"
    );
}
