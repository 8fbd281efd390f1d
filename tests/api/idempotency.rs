//! Idempotency keys and `If-Match`: retries do not repeat changes, and stale
//! writers do not overwrite newer ones.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, json_of, new_order, spawn_app, spawn_app_at, sqlite_url};

#[tokio::test]
async fn a_retried_status_change_replays_the_first_answer() {
    let app = spawn_app().await;
    app.create_order(&new_order("k1")).await;
    let body = json!({"status": "preparing", "updated_by": "tablet"});
    let key = [("Idempotency-Key", "7f6c2a9e-key-1")];

    let first = app.put_status_raw("k1", &body, &key).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, first) = json_of(first).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["data"]["version"], json!(2));

    // Meanwhile the order moves on; the retry still gets the first answer.
    assert_eq!(app.put_status("k1", "ready").await.0, StatusCode::OK);
    let again = app.put_status_raw("k1", &body, &key).await;
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.headers().get("etag").unwrap(), "\"2\"");
    let (status, again) = json_of(again).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first, "the replay is the first answer");
    assert_eq!(app.version("k1").await, 3, "the retry changed nothing");

    // Same body with whitespace and key order changed: still the same request.
    let reordered = app
        .client
        .put(app.url("/api/v1/orders/k1/status"))
        .header("Idempotency-Key", "7f6c2a9e-key-1")
        .header("Content-Type", "application/json")
        .body(r#"{ "updated_by": "tablet",   "status": "preparing" }"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reordered.status(), StatusCode::OK);
    assert_eq!(
        reordered.headers().get("idempotent-replayed").unwrap(),
        "true"
    );

    // The same key for a different request is refused.
    let (status, reply) = app
        .put_status_with("k1", &json!({"status": "cancelled"}), &key)
        .await;
    assert_error(
        status,
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(app.version("k1").await, 3);

    // Keys are scoped to the route: the same key on another order is new.
    app.create_order(&new_order("k2")).await;
    let (status, reply) = app.put_status_with("k2", &body, &key).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["data"]["version"], json!(2));

    let (_, history) = app.history("k1", "").await;
    let events = history["data"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{history}");
}

#[tokio::test]
async fn a_retried_create_replays_instead_of_conflicting() {
    let app = spawn_app().await;
    let mut body = new_order("unused");
    body.as_object_mut().unwrap().remove("id");
    let post = || {
        app.client
            .post(app.url("/api/v1/orders"))
            .header("Idempotency-Key", "create-once")
            .json(&body)
            .send()
    };
    let (status, first) = json_of(post().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let replay = post().await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers().get("idempotent-replayed").unwrap(), "true");
    let (_, again) = json_of(replay).await;
    assert_eq!(
        again["data"]["id"], first["data"]["id"],
        "one order, not two"
    );
    let stats = app.stats().await;
    assert_eq!(
        stats["orders_total"],
        json!(4),
        "101-103 and one more: {stats}"
    );
}

#[tokio::test]
async fn keys_are_remembered_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let body = json!({"status": "preparing"});
    let key = [("Idempotency-Key", "survives")];
    let app = spawn_app_at(&url, |_| {}).await;
    let (status, first) = app.put_status_with("101", &body, &key).await;
    assert_eq!(status, StatusCode::OK);
    app.begin_shutdown();
    app.stopped().await.unwrap();

    let app = spawn_app_at(&url, |_| {}).await;
    let again = app.put_status_raw("101", &body, &key).await;
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(json_of(again).await.1, first);
    assert_eq!(app.version("101").await, 2);
}

#[tokio::test]
async fn malformed_keys_are_refused() {
    let app = spawn_app().await;
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str()] {
        let (status, body) = app
            .put_status_with(
                "101",
                &json!({"status": "preparing"}),
                &[("Idempotency-Key", key)],
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"));
    }
    assert_eq!(app.version("101").await, 1);
}

#[tokio::test]
async fn if_match_applies_only_to_the_named_version() {
    let app = spawn_app().await;
    let preparing = json!({"status": "preparing"});
    let (status, body) = app
        .put_status_with("101", &preparing, &[("If-Match", "\"1\"")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["version"], json!(2));

    // A second writer that read version 1 loses, and changes nothing.
    let (status, body) = app
        .put_status_with(
            "101",
            &json!({"status": "cancelled"}),
            &[("If-Match", "\"1\"")],
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    );
    assert_eq!(body["current_version"], json!(2));
    assert_eq!(app.order("101").await["status"], json!("preparing"));

    // `*` is no condition; a malformed tag is a 400.
    let (status, _) = app
        .put_status_with("101", &json!({"status": "ready"}), &[("If-Match", "*")])
        .await;
    assert_eq!(status, StatusCode::OK);
    for bad in ["3", "W/\"3\"", "\"x\""] {
        let (status, body) = app
            .put_status_with("101", &json!({"status": "picked_up"}), &[("If-Match", bad)])
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
    }
    assert_eq!(app.version("101").await, 3);
    // A precondition on an unknown order is still a 404.
    let (status, body) = app
        .put_status_with("nope", &preparing, &[("If-Match", "\"1\"")])
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
}

/// `POST path` with `body` (none if `Null`) and `Idempotency-Key: key`.
async fn post_keyed(
    app: &crate::helpers::TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("Idempotency-Key", key);
    if !body.is_null() {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

/// Sends the same keyed request twice: the first answer is fresh, the
/// second replays it. Returns the answer.
async fn answered_then_replayed(
    app: &crate::helpers::TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: &serde_json::Value,
    expected: StatusCode,
) -> serde_json::Value {
    let first = post_keyed(app, method.clone(), path, key, body).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, first) = json_of(first).await;
    assert_eq!(status, expected, "{method} {path}: {first}");
    let again = post_keyed(app, method.clone(), path, key, body).await;
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true"),
        "{method} {path}"
    );
    let (status, again) = json_of(again).await;
    assert_eq!(status, expected, "{method} {path}: {again}");
    assert_eq!(
        again, first,
        "{method} {path}: the replay is the first answer"
    );
    first
}

fn note(id: &str, text: &str) -> serde_json::Value {
    crate::requests::follow_up_body(id, &["seller1", "seller2"], text)
}

async fn notes(app: &crate::helpers::TestApp, id: &str) -> (usize, usize) {
    let requestor = crate::requests::details(app, id).await;
    let processor = crate::requests::processor_record(app, id).await;
    (
        requestor["notes"].as_array().unwrap().len(),
        processor["notes_dict_arr"].as_array().unwrap().len(),
    )
}

#[tokio::test]
async fn a_retried_follow_up_adds_one_note_and_replays_its_id() {
    let app = spawn_app().await;
    crate::requests::start(&app, "FUK1", "").await;
    let body = note("FUK1", "Please expedite this order");
    let first = answered_then_replayed(
        &app,
        reqwest::Method::POST,
        "/api/v1/orders/followup",
        "fu-key-1",
        &body,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first["follow_up_id"], json!("FU001"), "{first}");
    assert_eq!(notes(&app, "FUK1").await, (1, 1), "one note, not two");

    // The same key with another body is refused and adds nothing.
    let (status, reply) = json_of(
        post_keyed(
            &app,
            reqwest::Method::POST,
            "/api/v1/orders/followup",
            "fu-key-1",
            &note("FUK1", "No onions"),
        )
        .await,
    )
    .await;
    assert_error(
        status,
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    // A malformed key is a 400 and adds nothing.
    let (status, reply) = json_of(
        post_keyed(
            &app,
            reqwest::Method::POST,
            "/api/v1/orders/followup",
            "has space",
            &body,
        )
        .await,
    )
    .await;
    assert_error(status, &reply, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert_eq!(notes(&app, "FUK1").await, (1, 1));

    // A new key is a new follow-up; so is one without a key.
    let (status, second) = json_of(
        post_keyed(
            &app,
            reqwest::Method::POST,
            "/api/v1/orders/followup",
            "fu-key-2",
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["follow_up_id"], json!("FU002"));
    let (status, third) = app.post_json("/api/v1/orders/followup", &body).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_eq!(third["follow_up_id"], json!("FU003"));
    assert_eq!(notes(&app, "FUK1").await, (3, 3));

    // A failed follow-up is not kept: its retry runs afresh.
    let unknown = note("NOPE", "Hello");
    for _ in 0..2 {
        let (status, reply) = json_of(
            post_keyed(
                &app,
                reqwest::Method::POST,
                "/api/v1/orders/followup",
                "fu-key-3",
                &unknown,
            )
            .await,
        )
        .await;
        assert_error(status, &reply, StatusCode::NOT_FOUND, "request_not_found");
    }
}

#[tokio::test]
async fn keyed_order_request_answers_are_replayed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let app = spawn_app_at(&url, |_| {}).await;
    let initiate = crate::requests::initiate_body("FUK2");
    let initiated = answered_then_replayed(
        &app,
        reqwest::Method::POST,
        "/api/v1/orders/initiate?scenario=expire",
        "init-key",
        &initiate,
        StatusCode::OK,
    )
    .await;
    assert_eq!(initiated["message"], json!("Order initiated successfully"));
    let body = note("FUK2", "Ring twice");
    let first = answered_then_replayed(
        &app,
        reqwest::Method::POST,
        "/api/v1/orders/followup",
        "fu-restart",
        &body,
        StatusCode::OK,
    )
    .await;
    app.begin_shutdown();
    app.stopped().await.unwrap();

    let app = spawn_app_at(&url, |_| {}).await;
    for (path, key, body, answer) in [
        ("/api/v1/orders/followup", "fu-restart", &body, &first),
        (
            "/api/v1/orders/initiate?scenario=expire",
            "init-key",
            &initiate,
            &initiated,
        ),
    ] {
        let again = post_keyed(&app, reqwest::Method::POST, path, key, body).await;
        assert_eq!(
            again.headers().get("idempotent-replayed").unwrap(),
            "true",
            "{path}"
        );
        let (status, again) = json_of(again).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&again, answer, "{path}: the first answer, after a restart");
    }
    assert_eq!(notes(&app, "FUK2").await.0, 1, "still one note");
    // The same key with another query is another request.
    let (status, reply) = json_of(
        post_keyed(
            &app,
            reqwest::Method::POST,
            "/api/v1/orders/initiate?scenario=accept",
            "init-key",
            &initiate,
        )
        .await,
    )
    .await;
    assert_error(
        status,
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
}

#[tokio::test]
async fn retried_simulations_and_stops_replay_instead_of_conflicting() {
    let app = spawn_app().await;
    let path = "/api/v1/orders/101/simulate-workflow?speed=0.01";
    let started = answered_then_replayed(
        &app,
        reqwest::Method::POST,
        path,
        "sim-key",
        &serde_json::Value::Null,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(started["message"], json!("Workflow simulation started"));
    // Without the key, a second start is the usual 409.
    let (status, _) = app.post(path).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The same key with another query is another request.
    let (status, reply) = json_of(
        post_keyed(
            &app,
            reqwest::Method::POST,
            "/api/v1/orders/101/simulate-workflow?speed=1",
            "sim-key",
            &serde_json::Value::Null,
        )
        .await,
    )
    .await;
    assert_error(
        status,
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    let cancelled = answered_then_replayed(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/orders/101/simulate-workflow",
        "sim-key",
        &serde_json::Value::Null,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cancelled["message"], json!("Workflow simulation cancelled"));

    crate::requests::start(&app, "FUK3", "").await;
    let stopped = answered_then_replayed(
        &app,
        reqwest::Method::POST,
        "/api/v1/orders/FUK3/stop",
        "stop-key",
        &serde_json::Value::Null,
        StatusCode::OK,
    )
    .await;
    assert_eq!(stopped["is_stream_active"], json!(false), "{stopped}");
}
