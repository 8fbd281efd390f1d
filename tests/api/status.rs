//! `PUT /api/v1/orders/{id}/status`: transitions, idempotency and bad input.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, json_of, spawn_app, PROMPTLY};

#[tokio::test]
async fn the_forward_path_is_accepted_step_by_step() {
    let app = spawn_app().await;
    let mut version = app.version("101").await;
    for status in ["preparing", "ready", "picked_up", "delivered"] {
        let (code, body) = app.put_status("101", status).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["success"], json!(true));
        assert_eq!(body["data"]["status"], json!(status));
        version += 1;
        assert_eq!(body["data"]["version"], json!(version));
        // Stored: every later read sees it.
        assert_eq!(app.order("101").await["status"], json!(status));
    }
}

#[tokio::test]
async fn illegal_transitions_are_409_with_the_allowed_statuses_and_change_nothing() {
    let app = spawn_app().await;
    let cases = [
        ("101", "ready", "preparing, cancelled"),
        ("102", "confirmed", "ready, cancelled"),
        ("103", "delivered", "picked_up, cancelled"),
    ];
    for (id, to, allowed) in cases {
        let before = app.order(id).await;
        let (status, body) = app.put_status(id, to).await;
        assert_error(status, &body, StatusCode::CONFLICT, "invalid_transition");
        assert!(
            body["message"].as_str().unwrap().contains(allowed),
            "{body}"
        );
        assert_eq!(app.order(id).await, before);
    }
}

#[tokio::test]
async fn cancel_is_allowed_from_any_live_status_and_final_statuses_are_final() {
    let app = spawn_app().await;
    for id in ["101", "102", "103"] {
        let (status, body) = app.put_status(id, "cancelled").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for to in ["confirmed", "preparing", "delivered"] {
        let (status, body) = app.put_status("101", to).await;
        assert_error(status, &body, StatusCode::CONFLICT, "invalid_transition");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("none (the order is final)"),
            "{body}"
        );
    }
    app.put_status("102", "ready").await;
    let (status, _) = app.put_status("103", "picked_up").await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn repeating_the_current_status_is_a_no_op_that_wakes_nobody() {
    let app = spawn_app().await;
    let poll = app.spawn_track("101", "?version=1&timeout=2");
    app.wait_parked(1).await;
    let (status, body) = app.put_status("101", "confirmed").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["version"], json!(1), "no version bump");
    let (_, polled, _) = tokio::time::timeout(PROMPTLY, poll)
        .await
        .expect("timed out")
        .unwrap();
    assert_eq!(
        polled["has_update"],
        json!(false),
        "nobody was woken: {polled}"
    );
    assert_eq!(
        app.stats().await["long_polls"]["status_updates_published"],
        json!(0)
    );
}

#[tokio::test]
async fn unknown_statuses_are_400_listing_the_valid_ones() {
    let app = spawn_app().await;
    let (status, body) = app.put_status("101", "shipped").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_status");
    let message = body["message"].as_str().unwrap();
    for valid in [
        "confirmed",
        "preparing",
        "ready",
        "picked_up",
        "delivered",
        "cancelled",
    ] {
        assert!(message.contains(valid), "{message}");
    }
    assert_eq!(app.version("101").await, 1);
}

#[tokio::test]
async fn bodies_that_are_not_the_right_json_get_our_error() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/orders/101/status");
    let send = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = app.client.put(&url).body(body);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        async move { json_of(request.send().await.unwrap()).await }
    };
    let (status, body) = send("{\"status\": \"preparing\"", Some("application/json")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "malformed_json");
    let (status, body) = send("preparing", Some("application/json")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "malformed_json");
    let (status, body) = send("{\"status\": \"preparing\"}", None).await;
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let (status, body) = send("{\"status\": \"preparing\"}", Some("text/plain")).await;
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let (status, body) = send("{}", Some("application/json")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    let (status, body) = send("{\"status\": 3}", Some("application/json")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    assert_eq!(app.version("101").await, 1, "nothing changed");
}

#[tokio::test]
async fn unknown_orders_are_404() {
    let app = spawn_app().await;
    let (status, body) = app.put_status("999", "preparing").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
}

#[tokio::test]
async fn concurrent_updates_apply_exactly_once() {
    let app = spawn_app().await;
    let puts: Vec<_> = (0..20)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/api/v1/orders/101/status");
            tokio::spawn(async move {
                client
                    .put(url)
                    .json(&json!({"status": "preparing"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for put in puts {
        assert_eq!(put.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.version("101").await, 2, "one change, nineteen no-ops");
}
