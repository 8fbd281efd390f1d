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
