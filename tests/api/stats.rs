//! `GET /api/v1/orders/system/stats` and `/api/v1/health`.

use serde_json::json;

use crate::helpers::{park_raw, spawn_app};

#[tokio::test]
async fn health_is_healthy() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/v1/health").await;
    assert!(status.is_success());
    assert_eq!(body["status"], "healthy");
    assert!(
        body["instance_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    // Not ready until the store answers; the default store does.
    let (status, body) = app.get_json("/api/v1/ready").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn stats_report_live_figures() {
    let app = spawn_app().await;
    let stats = app.stats().await;
    assert_eq!(stats["orders_total"], json!(3));
    assert_eq!(
        stats["orders_by_status"],
        json!({"requested": 0, "confirmed": 1, "preparing": 1, "ready": 1, "picked_up": 0, "delivered": 0, "cancelled": 0, "expired": 0, "failed": 0})
    );
    assert_eq!(stats["long_polls"]["max_pollers_per_order"], json!(10));
    assert_eq!(stats["next_poll_intervals"]["confirmed"], json!(120));
    assert_eq!(stats["next_poll_intervals"]["requested"], json!(30));
    assert_eq!(stats["next_poll_intervals"]["expired"], json!(0));
    assert_eq!(stats["next_poll_intervals"]["failed"], json!(0));
    assert_eq!(stats["order_requests"]["streams_started"], json!(0));
    assert!(stats["uptime_seconds"].is_u64());

    let _a = park_raw(&app, "101", "?version=1&timeout=60").await;
    let _b = park_raw(&app, "101", "?version=1&timeout=60").await;
    let _c = park_raw(&app, "102", "?version=1&timeout=60").await;
    app.wait_parked(3).await;
    let stats = app.stats().await;
    assert_eq!(
        stats["long_polls"]["busiest_orders"],
        json!([{"order_id": "101", "parked": 2}, {"order_id": "102", "parked": 1}])
    );

    app.put_status("101", "preparing").await;
    app.wait_parked(1).await;
    let stats = app.stats().await;
    assert_eq!(stats["long_polls"]["status_updates_published"], json!(1));
    assert_eq!(stats["long_polls"]["polls"]["woken_by_change"], json!(2));
    assert_eq!(stats["orders_by_status"]["preparing"], json!(2));
}
