//! Order requests, requestor side (seeds 000 and 001): seed 001's
//! post-deployment tests 2 to 8, duplicate prevention (also under
//! concurrency), follow-ups reaching both sides, bad input and routing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app, TestApp, PROMPTLY};

/// Seed 001's initiate body for `id`.
pub fn initiate_body(id: &str) -> Value {
    json!({
        "order_req_id": id,
        "session_id": format!("sess_{id}"),
        "notification_type": "email"
    })
}

/// `POST /api/v1/orders/initiate{query}` with seed 001's body for `id`.
pub async fn initiate(app: &TestApp, id: &str, query: &str) -> (StatusCode, Value) {
    app.post_json(
        &format!("/api/v1/orders/initiate{query}"),
        &initiate_body(id),
    )
    .await
}

/// Initiates `id` and asserts a stream started.
pub async fn start(app: &TestApp, id: &str, query: &str) {
    let (status, body) = initiate(app, id, query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["message"],
        json!("Order initiated successfully"),
        "{body}"
    );
}

/// Seed 001's follow-up body, to `audience`.
pub fn follow_up_body(id: &str, audience: &[&str], text: &str) -> Value {
    json!({
        "order_req_id": id,
        "audience": audience,
        "message": {"urls": [], "message_type": "text", "message": text}
    })
}

/// The requestor's tracking details of `id`.
pub async fn details(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get_json(&format!("/api/v1/orders/tracking/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The processor's record of `id`.
pub async fn processor_record(app: &TestApp, id: &str) -> Value {
    let (status, body) = app
        .get_json(&format!("/api/v1/processor/tracking/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The requestor's figures from `/system/stats`.
pub async fn request_stats(app: &TestApp) -> Value {
    app.stats().await["order_requests"].clone()
}

/// Waits until the requestor reports `id`'s stream inactive. The guard runs
/// right after the stream's last write, so this is a short wait.
pub async fn wait_inactive(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let body = details(app, id).await;
        if body["is_stream_active"] == json!(false) {
            return body;
        }
        assert!(Instant::now() < deadline, "stream of {id} still active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Follows the customer order `id` with long polls, as a phone would, until
/// `done` holds for it; returns that state.
pub async fn watch_until(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, mut body) = app.track(id, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    loop {
        let order = body["data"].clone();
        if done(&order) {
            return order;
        }
        assert!(Instant::now() < deadline, "gave up; last state {order}");
        let version = order["version"].as_u64().expect("version");
        body = app
            .track(id, &format!("?version={version}&timeout=10"))
            .await
            .1;
    }
}

#[tokio::test]
async fn seed_001_post_deployment_tests_2_to_8() {
    let app = spawn_app().await;

    // Test 1: health.
    let (_, health) = app.get_json("/api/v1/health").await;
    assert_eq!(health["status"], "healthy");

    // Test 2: tracking status, initially empty.
    let (status, body) = app.get_json("/api/v1/orders/tracking/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"total_orders": 0, "active_streams": 0, "tracked_order_ids": []})
    );

    // Test 3: initiate, with the seed's exact body.
    let seed_body = json!({
        "order_req_id": "TEST001",
        "session_id": "sess_test_001",
        "notification_type": "email"
    });
    let (status, body) = app.post_json("/api/v1/orders/initiate", &seed_body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "success": true,
            "message": "Order initiated successfully",
            "order_req_id": "TEST001",
            "session_id": "sess_test_001"
        })
    );

    // Test 4: tracking updated.
    let (_, body) = app.get_json("/api/v1/orders/tracking/status").await;
    assert_eq!(
        body,
        json!({"total_orders": 1, "active_streams": 1, "tracked_order_ids": ["TEST001"]})
    );

    // Test 5: order details.
    assert_eq!(
        details(&app, "TEST001").await,
        json!({
            "order_req_id": "TEST001",
            "session": "sess_test_001",
            "notes_count": 0,
            "is_stream_active": true,
            "notes": []
        })
    );

    // Test 6: duplicate prevention.
    let (status, body) = app.post_json("/api/v1/orders/initiate", &seed_body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "success": true,
            "message": "Order already being processed",
            "order_req_id": "TEST001",
            "session_id": "sess_test_001"
        })
    );

    // Test 7: follow-up, with the seed's exact body.
    let (status, body) = app
        .post_json(
            "/api/v1/orders/followup",
            &json!({
                "order_req_id": "TEST001",
                "audience": ["seller1", "seller2"],
                "message": {
                    "urls": [],
                    "message_type": "text",
                    "message": "Please expedite this order"
                }
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "success": true,
            "message": "Follow-up processed successfully",
            "order_req_id": "TEST001",
            "follow_up_id": "FU001"
        })
    );

    // Test 8: the note is there.
    let body = details(&app, "TEST001").await;
    assert_eq!(body["notes_count"], json!(1));
    assert_eq!(body["is_stream_active"], json!(true));
    let note = body["notes"][0].as_object().expect("one note");
    let mut keys: Vec<&str> = note.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["added_time", "audience", "follow_up_id", "message_type"]
    );
    assert_eq!(note["follow_up_id"], json!("FU001"));
    assert_eq!(note["audience"], json!(["seller1", "seller2"]));
    assert_eq!(note["message_type"], json!("text"));
    assert!(note["added_time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    // One stream, one duplicate turned away.
    let stats = request_stats(&app).await;
    assert_eq!(stats["streams_started"], json!(1));
    assert_eq!(stats["duplicates_prevented"], json!(1));
}

/// Sends 50 initiates of `id` at once; returns how many started a stream and
/// how many were told it was already being processed.
async fn burst_of_fifty(app: &TestApp, id: &str) -> (usize, usize) {
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let request = app
                .client
                .post(app.url("/api/v1/orders/initiate"))
                .json(&initiate_body(id));
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                json_of(request.send().await.expect("sent")).await
            })
        })
        .collect();
    let mut messages = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        messages.push(body["message"].as_str().unwrap().to_owned());
    }
    let count = |text: &str| messages.iter().filter(|m| *m == text).count();
    (
        count("Order initiated successfully"),
        count("Order already being processed"),
    )
}

// Multi-threaded, so the server's handlers really run in parallel: on the
// default single-threaded test runtime they would take turns and a
// check-then-act race could never show. Four bursts, because against the
// in-memory store such a race has a narrow window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_simultaneous_initiates_start_exactly_one_stream() {
    let app = spawn_app().await;
    let ids = ["RACE1", "RACE2", "RACE3", "RACE4"];
    for id in ids {
        assert_eq!(burst_of_fifty(&app, id).await, (1, 49), "{id}");
    }

    // Not just the answers: the requestor started one stream per id, the
    // processor opened one, and each order saw one creation and no restart.
    let stats = request_stats(&app).await;
    assert_eq!(stats["streams_started"], json!(4));
    assert_eq!(stats["duplicates_prevented"], json!(4 * 49));
    assert_eq!(stats["active_streams"], json!(4));
    let (_, processor) = app.get_json("/api/v1/processor/tracking/status").await;
    assert_eq!(processor["streams_opened"], json!(4));
    assert_eq!(processor["processing_streams"], json!(4));
    for id in ids {
        let order = app.order(id).await;
        assert_eq!(order["version"], json!(1), "{order}");
        assert_eq!(order["seller_search"]["attempt"], json!(1));
    }
}

#[tokio::test]
async fn an_ended_stream_may_be_initiated_again_on_the_same_order() {
    let app = spawn_app().await;
    start(&app, "AGAIN1", "").await;
    let (status, body) = app.post("/api/v1/orders/AGAIN1/stop").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": "Processing stopped", "order_req_id": "AGAIN1", "is_stream_active": false})
    );

    start(&app, "AGAIN1", "").await;
    assert_eq!(
        details(&app, "AGAIN1").await["is_stream_active"],
        json!(true)
    );
    let order = app.order("AGAIN1").await;
    assert_eq!(order["status"], json!("requested"));
    assert_eq!(order["seller_search"]["attempt"], json!(2));
    assert_eq!(order["version"], json!(2), "the restart is one change");
    let stats = request_stats(&app).await;
    assert_eq!(stats["streams_started"], json!(2));
    assert_eq!(stats["stream_endings"]["stopped"], json!(1));
    let (_, processor) = app.get_json("/api/v1/processor/tracking/status").await;
    assert_eq!(processor["streams_opened"], json!(2));
    assert_eq!(processor["total_orders"], json!(1));
    // And the duplicate rule holds for the new round.
    let (_, body) = initiate(&app, "AGAIN1", "").await;
    assert_eq!(body["message"], json!("Order already being processed"));
}

#[tokio::test]
async fn a_settled_request_cannot_be_initiated_again() {
    let app = spawn_app().await;
    start(&app, "DONE1", "?speed=100000").await;
    watch_until(&app, "DONE1", |o| o["status"] == json!("confirmed")).await;
    wait_inactive(&app, "DONE1").await;

    let (status, body) = initiate(&app, "DONE1", "").await;
    assert_error(status, &body, StatusCode::CONFLICT, "request_settled");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("order DONE1 is confirmed"),
        "{body}"
    );
    // An order that never was a request (sample 101) is settled too, and the
    // refusal tracks nothing.
    let (status, body) = initiate(&app, "101", "").await;
    assert_error(status, &body, StatusCode::CONFLICT, "request_settled");
    let (_, tracking) = app.get_json("/api/v1/orders/tracking/status").await;
    assert_eq!(
        tracking,
        json!({"total_orders": 1, "active_streams": 0, "tracked_order_ids": ["DONE1"]})
    );
    assert_eq!(request_stats(&app).await["streams_started"], json!(1));
}

#[tokio::test]
async fn follow_ups_reach_the_requestor_and_the_processor() {
    let app = spawn_app().await;
    start(&app, "NOTES1", "").await;
    let (status, _) = app
        .post_json(
            "/api/v1/orders/followup",
            &follow_up_body("NOTES1", &["seller1", "seller2"], "Please expedite"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .post_json(
            "/api/v1/orders/followup",
            &json!({
                "order_req_id": "NOTES1",
                "audience": ["seller3"],
                "message": {"urls": ["https://example.com/door.jpg"], "message_type": "image", "message": ""}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let requestor = details(&app, "NOTES1").await;
    assert_eq!(requestor["notes_count"], json!(2));
    let summary: Vec<(Value, Value)> = requestor["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["follow_up_id"].clone(), n["message_type"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!("FU001"), json!("text")),
            (json!("FU002"), json!("image"))
        ]
    );

    let processor = processor_record(&app, "NOTES1").await;
    let notes = processor["notes_dict_arr"].as_array().unwrap();
    assert_eq!(notes.len(), 2, "{processor}");
    assert_eq!(notes[0]["follow_up_id"], json!("FU001"));
    assert_eq!(notes[0]["audience"], json!(["seller1", "seller2"]));
    assert_eq!(notes[0]["content"]["message"], json!("Please expedite"));
    assert_eq!(
        notes[1]["content"]["urls"],
        json!(["https://example.com/door.jpg"])
    );
    assert_eq!(notes[0]["added_time"], requestor["notes"][0]["added_time"]);

    // Notes outlive the stream: after a stop, a follow-up still reaches both
    // sides, and a new round's processor record carries every note.
    app.post("/api/v1/orders/NOTES1/stop").await;
    let (status, _) = app
        .post_json(
            "/api/v1/orders/followup",
            &follow_up_body("NOTES1", &["seller1"], "Still there?"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    start(&app, "NOTES1", "").await;
    assert_eq!(details(&app, "NOTES1").await["notes_count"], json!(3));
    let processor = processor_record(&app, "NOTES1").await;
    let ids: Vec<&str> = processor["notes_dict_arr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["follow_up_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["FU001", "FU002", "FU003"]);
    assert_eq!(processor["state"], json!("processing"));
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let app = spawn_app().await;
    let initiate_with = |body: Value| {
        let app = &app;
        async move { app.post_json("/api/v1/orders/initiate", &body).await }
    };
    let (status, body) =
        initiate_with(json!({"order_req_id": "X1", "notification_type": "email"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    assert!(body["message"].as_str().unwrap().contains("session_id"));
    let mut extra = initiate_body("X1");
    extra["priority"] = json!("high");
    let (status, body) = initiate_with(extra).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    let (status, body) = initiate_with(json!({
        "order_req_id": "has space", "session_id": "sess 1", "notification_type": "fax"
    }))
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    let message = body["message"].as_str().unwrap();
    for part in [
        "order_req_id",
        "session_id",
        "notification_type must be one of email, sms, push",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    let (status, body) = initiate(&app, "tracking", "").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    assert!(body["message"].as_str().unwrap().contains("reserved"));
    for query in [
        "?speed=0",
        "?speed=fast",
        "?scenario=explode",
        "?priority=1",
    ] {
        let (status, body) = initiate(&app, "X1", query).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
    }
    let response = app
        .client
        .post(app.url("/api/v1/orders/initiate"))
        .body(initiate_body("X1").to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let response = app
        .client
        .post(app.url("/api/v1/orders/initiate"))
        .header("content-type", "application/json")
        .body("{\"order_req_id\": ")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "malformed_json");

    // None of that tracked anything or started a stream.
    let (_, tracking) = app.get_json("/api/v1/orders/tracking/status").await;
    assert_eq!(tracking["total_orders"], json!(0));
    assert_eq!(request_stats(&app).await["streams_started"], json!(0));
    let (status, body) = app.get_json("/api/v1/orders/X1").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");

    // Follow-ups.
    let (status, body) = app
        .post_json(
            "/api/v1/orders/followup",
            &follow_up_body("NOPE", &["seller1"], "hello"),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "request_not_found");
    start(&app, "BAD1", "").await;
    let (status, body) = app
        .post_json(
            "/api/v1/orders/followup",
            &follow_up_body("BAD1", &[], "hello"),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("audience must name 1 to 50 sellers"));
    let mut bad_type = follow_up_body("BAD1", &["seller1"], "hello");
    bad_type["message"]["message_type"] = json!("telegram");
    let mut blank = follow_up_body("BAD1", &["seller1"], "  ");
    blank["message"]["urls"] = json!([]);
    let mut nested_extra = follow_up_body("BAD1", &["seller1"], "hello");
    nested_extra["message"]["priority"] = json!(1);
    let no_message = json!({"order_req_id": "BAD1", "audience": ["seller1"]});
    for (body, code) in [
        (bad_type, "validation_failed"),
        (blank, "validation_failed"),
        (nested_extra, "invalid_body"),
        (no_message, "invalid_body"),
    ] {
        let (status, answer) = app.post_json("/api/v1/orders/followup", &body).await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, code);
    }
    assert_eq!(details(&app, "BAD1").await["notes_count"], json!(0));
    assert_eq!(
        processor_record(&app, "BAD1").await["notes_dict_arr"],
        json!([])
    );

    // Diagnostics and stop.
    for path in [
        "/api/v1/orders/tracking/NOPE",
        "/api/v1/processor/tracking/NOPE",
    ] {
        let (status, body) = app.get_json(path).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "request_not_found");
    }
    let (status, body) = app.get_json("/api/v1/orders/tracking/bad%20id").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_order_id");
    let (status, body) = app.post("/api/v1/orders/NOPE/stop").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "request_not_found");
    app.post("/api/v1/orders/BAD1/stop").await;
    let (status, body) = app.post("/api/v1/orders/BAD1/stop").await;
    assert_error(status, &body, StatusCode::CONFLICT, "stream_not_active");
}

/// A speed the server cannot use is refused before anything happens: no
/// order, no tracked request, no processor record, no stream. The tiny one
/// used to panic after the order was created, leaving it behind untracked.
#[tokio::test]
async fn an_initiate_with_a_speed_out_of_range_creates_nothing() {
    let app = spawn_app().await;
    for (n, speed) in [
        "1e-300", "0", "1e300", "NaN", "-1", "1e-9", "0.0099", "100000.5",
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("SPEED{n}");
        let (status, body) = initiate(&app, &id, &format!("?speed={speed}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("from 0.01 to 100000"),
            "{speed}: {message}"
        );
        let (status, body) = app.get_json(&format!("/api/v1/orders/{id}")).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
        for path in [
            format!("/api/v1/orders/tracking/{id}"),
            format!("/api/v1/processor/tracking/{id}"),
        ] {
            let (status, body) = app.get_json(&path).await;
            assert_error(status, &body, StatusCode::NOT_FOUND, "request_not_found");
        }
    }
    let stats = request_stats(&app).await;
    assert_eq!(stats["tracked"], json!(0), "{stats}");
    assert_eq!(stats["streams_started"], json!(0), "{stats}");
    // The same id is still free for a good request.
    start(&app, "SPEED0", "?speed=0.01").await;
    assert_eq!(app.order("SPEED0").await["status"], json!("requested"));
}

/// `.` and `..` are not ids: in a URL they mean "this" and "the parent".
#[tokio::test]
async fn dot_ids_are_refused_in_request_bodies() {
    let app = spawn_app().await;
    for id in [".", "..", "..."] {
        let (status, body) = initiate(&app, id, "").await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
        assert!(
            body["message"].as_str().unwrap().contains("order_req_id"),
            "{body}"
        );
        let (status, body) = app
            .post_json(
                "/api/v1/orders/followup",
                &follow_up_body(id, &["seller1"], "hello"),
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    }
    assert_eq!(request_stats(&app).await["tracked"], json!(0));
}

#[tokio::test]
async fn tracking_routes_sit_beside_order_routes() {
    let app = spawn_app().await;
    // `tracking/status` is the requestor's status, not order "tracking".
    let (status, body) = app.get_json("/api/v1/orders/tracking/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total_orders"], json!(0), "{body}");
    // `tracking/101` asks for request 101, which is an order but not a request.
    let (status, body) = app.get_json("/api/v1/orders/tracking/101").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "request_not_found");
    assert_eq!(app.order("101").await["id"], json!("101"));
    let (status, _) = app.track("101", "").await;
    assert_eq!(status, StatusCode::OK);
    // `/stop` is only for requests.
    let (status, body) = app.post("/api/v1/orders/101/stop").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "request_not_found");
    // Fixed segments cannot be order ids, so no order can hide behind them.
    for reserved in ["tracking", "initiate", "followup", "system"] {
        let (status, body) = app.create_order(&crate::helpers::new_order(reserved)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    }
    let (status, body) = app.get_json("/api/v1/orders/initiate").await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, body) = app.get_json("/api/v1/orders/tracking").await;
    assert!(status.is_client_error(), "{status}: {body}");
    assert_eq!(body["success"], json!(false));
}
