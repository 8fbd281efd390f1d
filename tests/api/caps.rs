//! Connection caps: per order (429) and global (503), and slots coming back
//! when clients leave.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, park_raw, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_eleventh_parked_poll_of_an_order_gets_429_with_retry_after() {
    let app = spawn_app().await;
    let mut parked = Vec::new();
    for _ in 0..10 {
        parked.push(park_raw(&app, "101", "?version=1&timeout=60").await);
    }
    app.wait_parked(10).await;

    let response = app
        .get("/api/v1/orders/101/track?version=1&timeout=60")
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_pollers",
    );

    // Other orders are unaffected, and polls that need not park are still served.
    let (status, _) = app.track("102", "?version=1&timeout=0").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.track("101", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let stats = app.stats().await;
    assert_eq!(
        stats["long_polls"]["busiest_orders"][0],
        json!({"order_id": "101", "parked": 10})
    );
    assert_eq!(
        stats["long_polls"]["polls"]["rejected_per_order_cap"],
        json!(1)
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_park_gives_its_slot_back_at_once() {
    let app = spawn_app_with(|config| config.max_pollers_per_order = 1).await;
    let first = park_raw(&app, "101", "?version=1&timeout=60").await;
    app.wait_parked(1).await;
    let (status, _) = app.track("101", "?version=1&timeout=60").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    drop(first);
    app.wait_parked(0).await;
    assert_eq!(
        app.stats().await["long_polls"]["polls"]["disconnected"],
        json!(1)
    );

    let _second = park_raw(&app, "101", "?version=1&timeout=60").await;
    app.wait_parked(1).await;
}

#[tokio::test]
async fn the_global_cap_answers_503_with_retry_after() {
    let app = spawn_app_with(|config| {
        config.max_parked_polls = 2;
        config.retry_after = 7;
    })
    .await;
    let _a = park_raw(&app, "101", "?version=1&timeout=60").await;
    let _b = park_raw(&app, "102", "?version=1&timeout=60").await;
    app.wait_parked(2).await;
    let response = app
        .get("/api/v1/orders/103/track?version=1&timeout=60")
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "server_busy",
    );
    assert_eq!(
        app.stats().await["long_polls"]["polls"]["rejected_global_cap"],
        json!(1)
    );
}
