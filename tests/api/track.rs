//! `GET /api/v1/orders/{id}/track`: answering at once, parking, waking,
//! timing out, cursors and final orders.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, PROMPTLY};

#[tokio::test]
async fn without_a_cursor_it_answers_at_once_with_the_order() {
    let app = spawn_app().await;
    let started = Instant::now();
    let response = app.get("/api/v1/orders/101/track").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["has_update"], json!(true));
    assert_eq!(body["next_poll_interval"], json!(120));
    assert_eq!(body["battery_tip"], json!("Next poll in 120 seconds"));
    assert_eq!(body["timeout"], json!(30));
    let order = &body["data"];
    for field in [
        "id",
        "customer_id",
        "status",
        "created_at",
        "updated_at",
        "estimated_delivery",
        "delivery_address",
        "items",
        "total_amount",
        "restaurant_name",
        "version",
    ] {
        assert!(!order[field].is_null(), "order has {field}: {order}");
    }
    assert_eq!(order["id"], json!("101"));
    assert_eq!(order["status"], json!("confirmed"));
}

#[tokio::test]
async fn a_parked_poll_wakes_when_the_status_changes() {
    let app = spawn_app().await;
    let poll = app.spawn_track("101", "?version=1&timeout=60");
    app.wait_parked(1).await;
    let (status, _) = app.put_status("101", "preparing").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, took) = tokio::time::timeout(PROMPTLY, poll)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_update"], json!(true));
    assert_eq!(body["data"]["status"], json!("preparing"));
    assert_eq!(body["data"]["version"], json!(2));
    assert_eq!(body["next_poll_interval"], json!(60));
    assert!(
        took < Duration::from_secs(60),
        "woken by the change, not the timeout"
    );
}

#[tokio::test]
async fn every_parked_poller_of_the_order_wakes_and_others_stay() {
    let app = spawn_app().await;
    let pollers: Vec<_> = (0..5)
        .map(|_| app.spawn_track("101", "?version=1&timeout=60"))
        .collect();
    let other = app.spawn_track("102", "?version=1&timeout=60");
    app.wait_parked(6).await;
    app.put_status("101", "preparing").await;
    for poller in pollers {
        let (_, body, _) = tokio::time::timeout(PROMPTLY, poller)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(body["data"]["status"], json!("preparing"));
    }
    app.wait_parked(1).await;
    assert!(
        !other.is_finished(),
        "a change to 101 does not wake pollers of 102"
    );
    other.abort();
}

#[tokio::test]
async fn the_seed_terminal_experiment_parks_without_a_cursor_when_timeout_is_given() {
    let app = spawn_app().await;
    // Terminal 1: curl "…/api/v1/orders/101/track?timeout=30"
    let poll = app.spawn_track("101", "?timeout=30");
    app.wait_parked(1).await;
    // Terminal 2: the PUT answers it.
    app.put_status("101", "preparing").await;
    let (_, body, took) = tokio::time::timeout(PROMPTLY, poll)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(body["has_update"], json!(true));
    assert_eq!(body["data"]["status"], json!("preparing"));
    assert!(took < Duration::from_secs(30));
}

#[tokio::test]
async fn a_quiet_order_times_out_with_its_current_state() {
    let app = spawn_app().await;
    let started = Instant::now();
    let (status, body) = app.track("101", "?version=1&timeout=1").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_update"], json!(false));
    assert_eq!(body["data"]["status"], json!("confirmed"));
    assert_eq!(body["timeout"], json!(1));
    assert!(took >= Duration::from_millis(900), "it parked: {took:?}");
    assert!(took < PROMPTLY, "it timed out: {took:?}");
    assert_eq!(
        app.stats().await["long_polls"]["polls"]["timeouts"],
        json!(1)
    );
}

#[tokio::test]
async fn timeout_zero_answers_at_once_and_large_timeouts_are_clamped_and_reported() {
    let app = spawn_app().await;
    let started = Instant::now();
    let (_, body) = app.track("101", "?version=1&timeout=0").await;
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(body["has_update"], json!(false));
    assert_eq!(body["timeout"], json!(0));
    // A stale cursor answers at once, so the clamp can be read without waiting.
    let (_, body) = app.track("101", "?version=99&timeout=100000").await;
    assert_eq!(body["timeout"], json!(120));
    assert_eq!(body["has_update"], json!(true));
}

#[tokio::test]
async fn an_older_version_cursor_answers_at_once() {
    let app = spawn_app().await;
    app.put_status("101", "preparing").await;
    let started = Instant::now();
    let (_, body) = app.track("101", "?version=1&timeout=60").await;
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(body["has_update"], json!(true));
    assert_eq!(body["data"]["version"], json!(2));
}

#[tokio::test]
async fn updated_at_pasted_unencoded_round_trips_as_last_update() {
    let app = spawn_app().await;
    let (_, first) = app.track("101", "").await;
    let updated_at = first["data"]["updated_at"].as_str().unwrap().to_owned();
    assert!(updated_at.ends_with('Z'), "{updated_at}");
    // As the seed's client does: `?last_update=${updated_at}&timeout=30`, no encoding.
    let query = format!("?last_update={updated_at}&timeout=1");
    let (_, body) = app.track("101", &query).await;
    assert_eq!(
        body["has_update"],
        json!(false),
        "the client is current, so it parked and timed out"
    );

    let poll = app.spawn_track("101", &format!("?last_update={updated_at}&timeout=60"));
    app.wait_parked(1).await;
    app.put_status("101", "preparing").await;
    let (_, woken, _) = tokio::time::timeout(PROMPTLY, poll)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(woken["has_update"], json!(true));
    assert_eq!(woken["data"]["status"], json!("preparing"));
    let newer = woken["data"]["updated_at"].as_str().unwrap();
    assert!(newer > updated_at.as_str());
}

#[tokio::test]
async fn the_seed_last_update_without_offset_is_utc_and_older_so_it_answers_at_once() {
    let app = spawn_app().await;
    let (status, body) = app
        .track("101", "?last_update=2025-01-12T20:30:00&timeout=30")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_update"], json!(true));
    // An offset whose `+` arrived as a space (unencoded) still reads.
    let (status, _) = app
        .track("101", "?last_update=2025-01-12T22:30:00+02:00&timeout=0")
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn if_none_match_parks_and_answers_304_when_nothing_changed() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/orders/101/track?timeout=1");
    let response = app
        .client
        .get(&url)
        .header("If-None-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()["etag"], "\"1\"");

    let client = app.client.clone();
    let url = app.url("/api/v1/orders/101/track?timeout=60");
    let poll = tokio::spawn(async move {
        client
            .get(url)
            .header("If-None-Match", "W/\"1\"")
            .send()
            .await
            .unwrap()
    });
    app.wait_parked(1).await;
    app.put_status("101", "preparing").await;
    let response = tokio::time::timeout(PROMPTLY, poll)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["has_update"], json!(true));
}

#[tokio::test]
async fn final_orders_answer_at_once_and_tell_the_client_to_stop() {
    let app = spawn_app().await;
    app.put_status("101", "cancelled").await;
    let version = app.version("101").await;
    let started = Instant::now();
    let (_, body) = app
        .track("101", &format!("?version={version}&timeout=60"))
        .await;
    assert!(started.elapsed() < PROMPTLY, "never parks");
    assert_eq!(body["has_update"], json!(false));
    assert_eq!(body["next_poll_interval"], json!(0));
    assert_eq!(body["battery_tip"], json!("Order complete - stop polling"));
    let (_, body) = app.track("101", "?timeout=60").await;
    assert_eq!(body["data"]["status"], json!("cancelled"));
    assert_eq!(app.stats().await["long_polls"]["parked_now"], json!(0));
}

#[tokio::test]
async fn intervals_follow_the_status() {
    let app = spawn_app().await;
    let expected = [
        ("preparing", 60),
        ("ready", 30),
        ("picked_up", 30),
        ("delivered", 0),
    ];
    for (status, interval) in expected {
        app.put_status("101", status).await;
        let (_, body) = app.track("101", "").await;
        assert_eq!(body["next_poll_interval"], json!(interval), "{status}");
    }
}

#[tokio::test]
async fn bad_parameters_and_unknown_orders_get_json_errors() {
    let app = spawn_app().await;
    for query in [
        "?timeout=abc",
        "?timeout=-5",
        "?timeout=1.5",
        "?version=abc",
        "?last_update=yesterday",
    ] {
        let (status, body) = app.track("101", query).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
    }
    let (status, body) = app.track("999", "").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
    let (status, body) = app.track("bad%20id", "").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_order_id");
}
