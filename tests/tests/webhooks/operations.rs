//! Road operations reach the orchestration layer from the outbox: through the real
//! `sccr serve`, every change made over the API (created, updated, status_changed,
//! note_added) arrives at a webhook subscribed to `it.firenze.sccr.operation.*` as a
//! signed CloudEvent, in order, subject `operation/<id>`, its `data` the operation at
//! that version; a subscription in the `ngsi-ld` format gets each as a FIWARE `Alert`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn road_operations_reach_webhooks_as_cloudevents_and_ngsi_alerts_in_order() {
    let dir = TempDir::new("operation-hooks").unwrap();
    let broker = Broker::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let sccr = Sccr::serve(
        broker.port,
        &db.url,
        &dir.path,
        &[
            ("SCCR_WEBHOOKS__POLL_INTERVAL", "50ms"),
            ("SCCR_WEBHOOKS__BACKOFF_BASE", "50ms"),
            ("SCCR_WEBHOOKS__BACKOFF_CAP", "500ms"),
        ],
    )
    .unwrap();
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    let api = sccr.api_port;

    let port = free_port();
    let receiver = Receiver::default();
    let (stop, server) = start_receiver(port, receiver.clone()).await;
    for (name, format) in [("cases", "cloudevents"), ("fiware", "ngsi-ld")] {
        let body = format!(
            r#"{{"url":"http://127.0.0.1:{port}/hook/{name}","types":["it.firenze.sccr.operation.*"],"secret":"{SECRET}","format":"{format}"}}"#
        );
        let (status, text) = http_send(api, "POST", "/api/v1/webhooks", &body).await.unwrap();
        assert_eq!(status, 201, "{text}");
    }

    // A permit system plans works (with its key), an operator edits, starts and annotates.
    let body = r#"{"kind":"roadworks","title":"Gas main, Lungarno Torrigiani","severity":"moderate","agency":"utilities","segments":["lungarno-torrigiani"],"external_ref":"PERM-2026-0412","planned":{"from":"2026-11-02T07:00:00Z","to":"2026-11-06T18:00:00Z"}}"#;
    let (status, text) = http_send(api, "POST", "/api/v1/operations", body).await.unwrap();
    assert_eq!(status, 201, "{text}");
    let op: Value = serde_json::from_str(&text).unwrap();
    let id = op["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/operations/{id}");
    let (status, text) = sccr_tests::http_request_with(
        api,
        "PATCH",
        &path,
        Some(TEST_ADMIN_TOKEN),
        &[("If-Match", "\"1\"")],
        r#"{"severity":"major"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let (status, text) =
        http_send(api, "POST", &format!("{path}/status"), r#"{"status":"active"}"#).await.unwrap();
    assert_eq!(status, 200, "{text}");
    let (status, text) =
        http_send(api, "POST", &format!("{path}/notes"), r#"{"text":"Barriers in place"}"#)
            .await
            .unwrap();
    assert_eq!(status, 200, "{text}");

    let subject = format!("operation/{id}");
    wait_for("four events at each hook", Duration::from_secs(30), || async {
        (receiver.distinct("cases").len() >= 4 && receiver.distinct("fiware").len() >= 4)
            .then_some(())
    })
    .await;
    let _ = stop.send(());
    let _ = server.await;

    // CloudEvents: signed, in order, one per change, data the operation at each version.
    let mut seen = BTreeSet::new();
    let cases: Vec<Arrival> =
        receiver.arrivals("cases").into_iter().filter(|a| seen.insert(a.id)).collect();
    assert!(cases.iter().all(|a| a.signed && a.subject == subject), "{cases:?}");
    let got: Vec<(String, i64)> = cases
        .iter()
        .map(|a| {
            (
                a.event["type"].as_str().unwrap_or("").to_owned(),
                a.event["data"]["version"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = ["created", "updated", "status_changed", "note_added"]
        .iter()
        .zip(1..)
        .map(|(t, v)| (format!("it.firenze.sccr.operation.{t}"), v))
        .collect();
    assert_eq!(got, want);
    let last = &cases[3].event;
    assert_eq!(last["specversion"], "1.0");
    assert_eq!(last["data"]["status"], "active");
    assert_eq!(last["data"]["notes"][0]["text"], "Barriers in place");
    assert_eq!(last["data"]["external_ref"], "PERM-2026-0412");

    // NGSI-LD: each change as the FIWARE Alert of the operation.
    let mut seen = BTreeSet::new();
    let fiware: Vec<Arrival> =
        receiver.arrivals("fiware").into_iter().filter(|a| seen.insert(a.id)).collect();
    assert_eq!(fiware.len(), 4, "{fiware:?}");
    for a in &fiware {
        assert_eq!(a.event["datacontenttype"], "application/ld+json", "{}", a.event);
        let e = &a.event["data"];
        assert_eq!(e["type"], "Alert", "{e}");
        assert_eq!(e["category"]["value"], "traffic", "{e}");
        assert_eq!(e["subCategory"]["value"], "roadWorks", "{e}");
    }
    assert_eq!(fiware[0].event["data"]["severity"]["value"], "medium");
    assert_eq!(fiware[1].event["data"]["severity"]["value"], "high");
}
