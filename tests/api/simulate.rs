//! `POST/DELETE /api/v1/orders/{id}/simulate-workflow`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, json_of, spawn_app, spawn_app_at, sqlite_url, TestApp, PROMPTLY,
};

async fn simulate(app: &TestApp, id: &str, query: &str) -> (StatusCode, Value) {
    app.post(&format!("/api/v1/orders/{id}/simulate-workflow{query}"))
        .await
}

async fn cancel(app: &TestApp, id: &str) -> (StatusCode, Value) {
    let url = app.url(&format!("/api/v1/orders/{id}/simulate-workflow"));
    json_of(app.client.delete(url).send().await.unwrap()).await
}

#[tokio::test]
async fn a_fast_workflow_is_observed_step_by_step_through_long_polls() {
    let app = spawn_app().await;
    // 33 minutes at 600x: 3.3 s, with at least 0.3 s between steps.
    let (status, started) = simulate(&app, "101", "?speed=600").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let steps: Vec<&str> = started["data"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["preparing", "ready", "picked_up", "delivered"]);
    assert_eq!(started["data"]["steps"][3]["after_seconds"], json!(3.3));

    let mut seen = Vec::new();
    let mut version = 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the simulation finishes; saw {seen:?}"
        );
        let (_, body) = app
            .track("101", &format!("?version={version}&timeout=30"))
            .await;
        if body["has_update"] == json!(true) {
            version = body["data"]["version"].as_u64().unwrap();
            seen.push(body["data"]["status"].as_str().unwrap().to_owned());
        }
        if body["next_poll_interval"] == json!(0) {
            break;
        }
    }
    assert_eq!(seen, ["preparing", "ready", "picked_up", "delivered"]);
    assert_eq!(version, 5);
}

#[tokio::test]
async fn one_simulation_per_order_and_it_can_be_cancelled() {
    let app = spawn_app().await;
    let (status, _) = simulate(&app, "101", "").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = simulate(&app, "101", "?speed=10").await;
    assert_error(status, &body, StatusCode::CONFLICT, "simulation_running");
    assert_eq!(app.stats().await["simulations_running"], json!(1));

    let (status, body) = cancel(&app, "101").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["order_id"], json!("101"));
    assert_eq!(app.stats().await["simulations_running"], json!(0));
    // A cancelled simulation no longer moves the order, and a new one may start.
    let (status, _) = simulate(&app, "101", "?speed=100000").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, body) = app.track("101", "?version=1&timeout=5").await;
    assert_eq!(
        body["has_update"],
        json!(true),
        "the new simulation moved the order"
    );
}

#[tokio::test]
async fn cancelled_simulations_leave_the_order_alone() {
    let app = spawn_app().await;
    simulate(&app, "102", "?speed=1000").await;
    cancel(&app, "102").await;
    let (_, body) = app.track("102", "?version=1&timeout=2").await;
    assert_eq!(body["has_update"], json!(false), "{body}");
    assert_eq!(body["data"]["status"], json!("preparing"));
}

#[tokio::test]
async fn it_starts_from_the_current_status_and_skips_steps_taken_by_hand() {
    let app = spawn_app().await;
    let (_, started) = simulate(&app, "103", "?speed=1000").await;
    assert_eq!(started["data"]["from_status"], json!("ready"));
    assert_eq!(started["data"]["steps"].as_array().unwrap().len(), 2);
    app.put_status("103", "picked_up").await;
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while app.order("103").await["status"] != json!("delivered") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the simulation delivers the order"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Speeds the server cannot use, including the tiny one that used to panic
/// after the simulation slot was taken and leave the order "already running"
/// for good.
const SPEEDS_OUT_OF_RANGE: [&str; 9] = [
    "1e-300", "0", "1e300", "NaN", "-1", "inf", "1e-9", "0.0099", "100000.5",
];

#[tokio::test]
async fn speeds_out_of_range_are_400_naming_the_range_and_leave_no_simulation() {
    let app = spawn_app().await;
    for speed in SPEEDS_OUT_OF_RANGE {
        let (status, body) = simulate(&app, "101", &format!("?speed={speed}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("from 0.01 to 100000"),
            "{speed}: {message}"
        );
        assert_eq!(
            app.stats().await["simulations_running"],
            json!(0),
            "{speed}"
        );
        // Nothing is left claimed: a good request starts at once.
        let (status, body) = simulate(&app, "101", "?speed=1").await;
        assert_eq!(status, StatusCode::ACCEPTED, "after {speed}: {body}");
        let (status, body) = cancel(&app, "101").await;
        assert_eq!(status, StatusCode::OK, "after {speed}: {body}");
    }
    assert_eq!(app.version("101").await, 1, "no step was taken");
}

#[tokio::test]
async fn the_slowest_speed_plans_rfc_3339_timestamps() {
    let app = spawn_app().await;
    let (status, started) = simulate(&app, "101", "?speed=0.01").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let steps = started["data"]["steps"].as_array().unwrap();
    // 33 minutes a hundred times slower: 55 hours.
    let after = steps[3]["after_seconds"].as_f64().unwrap();
    assert!((after - 198_000.0).abs() < 0.001, "{after}");
    let begun =
        chrono::DateTime::parse_from_rfc3339(started["data"]["started_at"].as_str().unwrap())
            .unwrap();
    let last = chrono::DateTime::parse_from_rfc3339(steps[3]["at"].as_str().unwrap()).unwrap();
    let off = (last - begun - chrono::TimeDelta::hours(55)).abs();
    assert!(off < chrono::TimeDelta::milliseconds(1), "{off}");
    cancel(&app, "101").await;
    let (status, body) = simulate(&app, "101", "?speed=100000").await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the fastest is allowed: {body}"
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let app = spawn_app().await;
    for speed in ["?speed=0", "?speed=-2", "?speed=fast", "?speed=1e9"] {
        let (status, body) = simulate(&app, "101", speed).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
    }
    let (status, body) = simulate(&app, "101", "?sped=10").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
    let (status, body) = simulate(&app, "999", "").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
    let (status, body) = cancel(&app, "101").await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "simulation_not_running",
    );
    app.put_status("101", "cancelled").await;
    let (status, body) = simulate(&app, "101", "").await;
    assert_error(status, &body, StatusCode::CONFLICT, "order_final");
}

#[tokio::test]
async fn a_simulation_running_at_shutdown_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let app = spawn_app_at(&url, |_| {}).await;
    // 102 is preparing: its next step is 15 minutes away at real time.
    let (status, _) = simulate(&app, "102", "?speed=600").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = simulate(&app, "103", "?speed=600").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(cancel(&app, "103").await.0, StatusCode::OK);
    app.begin_shutdown();
    app.stopped().await.unwrap();

    let app = spawn_app_at(&url, |_| {}).await;
    assert_eq!(app.stats().await["simulations_running"], json!(1));
    // 15 minutes at 600 times is 1.5 s: the resumed run moves 102 on.
    let (status, body) = app.track("102", "?version=1&timeout=30").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["status"], json!("ready"), "{body}");
    let (_, history) = app.history("102", "").await;
    assert_eq!(history["data"][1]["updated_by"], json!("simulator"));
    // The cancelled one stayed cancelled.
    assert_eq!(app.order("103").await["version"], json!(1));
}
