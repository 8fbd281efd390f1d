//! The history endpoint, and the who/why that status changes carry into it.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, new_order, spawn_app};

#[tokio::test]
async fn every_change_is_an_event_with_who_and_why() {
    let app = spawn_app().await;
    let (status, _) = app.create_order(&new_order("h1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app
        .put_status_with(
            "h1",
            &json!({
                "status": "preparing",
                "updated_by": "kitchen-tablet-3",
                "notes": "Started on the pizzas",
                "metadata": {"station": "oven-2", "cooks": 2}
            }),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["version"], json!(2));
    // Seed 004's bare body still works, and records no who or why.
    let (status, _) = app.put_status("h1", "ready").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = app.history("h1", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["next_after_version"], json!(null));
    let events = body["data"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{body}");
    assert_eq!(events[0]["version"], json!(1));
    assert_eq!(events[0]["kind"], json!("created"));
    assert_eq!(events[0]["status"], json!("confirmed"));
    assert_eq!(events[1]["kind"], json!("status_changed"));
    assert_eq!(events[1]["status"], json!("preparing"));
    assert_eq!(events[1]["updated_by"], json!("kitchen-tablet-3"));
    assert_eq!(events[1]["notes"], json!("Started on the pizzas"));
    assert_eq!(
        events[1]["metadata"],
        json!({"station": "oven-2", "cooks": 2})
    );
    assert_eq!(events[2]["updated_by"], json!(null));
    assert_eq!(events[2]["metadata"], json!(null));
    // Each event's time is the order's updated_at at that version.
    assert_eq!(events[2]["timestamp"], app.order("h1").await["updated_at"]);
}

#[tokio::test]
async fn history_pages_by_after_version() {
    let app = spawn_app().await;
    app.create_order(&new_order("h2")).await;
    for status in ["preparing", "ready", "picked_up", "delivered"] {
        assert_eq!(app.put_status("h2", status).await.0, StatusCode::OK);
    }
    let (_, page) = app.history("h2", "?limit=2").await;
    let versions = |page: &serde_json::Value| {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(&page), [1, 2]);
    assert_eq!(page["next_after_version"], json!(2));
    let (_, page) = app.history("h2", "?limit=2&after_version=2").await;
    assert_eq!(versions(&page), [3, 4]);
    assert_eq!(page["next_after_version"], json!(4));
    let (_, page) = app.history("h2", "?limit=2&after_version=4").await;
    assert_eq!(versions(&page), [5]);
    assert_eq!(page["next_after_version"], json!(null));
    let (_, page) = app.history("h2", "?after_version=5").await;
    assert_eq!(versions(&page), Vec::<u64>::new());
}

#[tokio::test]
async fn bad_history_requests_get_clear_errors() {
    let app = spawn_app().await;
    let (status, body) = app.history("nope", "").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
    for query in ["?limit=0", "?limit=501", "?after_version=-1", "?limit=ten"] {
        let (status, body) = app.history("101", query).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
    }
    let (_, body) = app.history("101", "?limit=501").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("between 1 and 500"),
        "{body}"
    );
    let (status, body) = app.history("101", "?limit=500").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn out_of_bounds_who_and_why_change_nothing() {
    let app = spawn_app().await;
    app.create_order(&new_order("h3")).await;
    let too_long = "x".repeat(129);
    let big = "b".repeat(16 * 1024);
    for (body, says) in [
        (
            json!({"status": "preparing", "updated_by": too_long}),
            "updated_by must be at most 128 characters",
        ),
        (
            json!({"status": "preparing", "notes": "n".repeat(2001)}),
            "notes must be at most 2000 characters",
        ),
        (
            json!({"status": "preparing", "metadata": {"blob": big}}),
            "metadata must be at most 16384 bytes",
        ),
    ] {
        let (status, reply) = app.put_status_with("h3", &body, &[]).await;
        assert_error(status, &reply, StatusCode::BAD_REQUEST, "validation_failed");
        assert!(reply["message"].as_str().unwrap().contains(says), "{reply}");
    }
    let (status, reply) = app
        .put_status_with(
            "h3",
            &json!({"status": "preparing", "metadata": [1, 2]}),
            &[],
        )
        .await;
    assert_error(status, &reply, StatusCode::BAD_REQUEST, "invalid_body");
    let (status, reply) = app
        .put_status_with("h3", &json!({"status": "preparing", "by": "x"}), &[])
        .await;
    assert_error(status, &reply, StatusCode::BAD_REQUEST, "invalid_body");
    assert_eq!(app.version("h3").await, 1);
    let (_, history) = app.history("h3", "").await;
    assert_eq!(history["data"].as_array().unwrap().len(), 1);
}
