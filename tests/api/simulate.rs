//! `POST/DELETE /api/v1/orders/{id}/simulate-workflow`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_of, spawn_app, TestApp, PROMPTLY};

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
