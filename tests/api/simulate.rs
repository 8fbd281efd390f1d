//! `POST/DELETE /api/v1/orders/{id}/simulate-workflow`: the fine walk, as
//! history and long polls show it, the simulated driver's fixes on the
//! live-location channel, and the run's life (one per order, cancel,
//! resume).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, json_of, new_order, spawn_app, spawn_app_at, sqlite_url, TestApp, PROMPTLY,
};

async fn simulate(app: &TestApp, id: &str, query: &str) -> (StatusCode, Value) {
    app.post(&format!("/api/v1/orders/{id}/simulate-workflow{query}"))
        .await
}

async fn cancel(app: &TestApp, id: &str) -> (StatusCode, Value) {
    let url = app.url(&format!("/api/v1/orders/{id}/simulate-workflow"));
    json_of(app.client.delete(url).send().await.unwrap()).await
}

/// Seed 003's happy path after `submitted`, as the simulator walks it.
const FINE_WALK: [&str; 8] = [
    "store_notified",
    "store_acknowledged",
    "picking_in_progress",
    "ready_for_pickup",
    "driver_assigned",
    "driver_pickup_complete",
    "in_transit",
    "delivered",
];

/// The fastest speed the server takes (`MAX_SPEED`): the 33-minute
/// timeline in about 20 ms.
const FASTEST: &str = "?speed=100000";

/// `POST /tracking/orders/{id}/init` for store-1 (seed 003: a store, a
/// fulfillment record).
async fn init(app: &TestApp, id: &str) {
    let (status, body) = app
        .post_json(
            &format!("/tracking/orders/{id}/init"),
            &json!({
                "store_id": "store-1",
                "customer_id": "c-9",
                "delivery_provider": "internal",
                "delivery_address": "1 Main St",
                "items": [{"name": "Milk", "quantity": 1, "unit_price": 1.5}]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Waits (briefly) until order `id` is delivered.
async fn wait_delivered(app: &TestApp, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let order = app.order(id).await;
        if order["status"] == json!("delivered") {
            return order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the simulation delivers {id}: {order}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fine statuses of the order's changes after its creation, each
/// asserted to be the simulator's.
async fn simulated_walk(app: &TestApp, id: &str) -> Vec<String> {
    let (status, history) = app.history(id, "").await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let events = history["data"].as_array().unwrap();
    events[1..]
        .iter()
        .map(|event| {
            assert_eq!(event["updated_by"], json!("simulator"), "{event}");
            event["tracking_status"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_fast_workflow_is_observed_step_by_step_through_long_polls() {
    let app = spawn_app().await;
    // 33 minutes at 600x: 3.3 s, with at least 0.1 s between steps.
    let (status, started) = simulate(&app, "101", "?speed=600").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let steps = started["data"]["steps"].as_array().unwrap();
    let fine: Vec<&str> = steps
        .iter()
        .map(|s| s["tracking_status"].as_str().unwrap())
        .collect();
    assert_eq!(fine, FINE_WALK);
    // The coarse timeline is the seed's: preparing at 3 min, ready at 18,
    // picked_up at 23, delivered at 33.
    let coarse: Vec<(&str, f64)> = steps
        .iter()
        .map(|s| {
            (
                s["status"].as_str().unwrap(),
                s["after_seconds"].as_f64().unwrap(),
            )
        })
        .collect();
    for (status, after) in [
        ("preparing", 0.3),
        ("ready", 1.8),
        ("picked_up", 2.3),
        ("delivered", 3.3),
    ] {
        let first = coarse.iter().find(|(s, _)| *s == status).unwrap();
        assert!((first.1 - after).abs() < 1e-9, "{status}: {first:?}");
    }

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
    // Several fine steps share a coarse status; each coarse one is seen.
    seen.dedup();
    seen.retain(|status| status != "confirmed");
    assert_eq!(seen, ["preparing", "ready", "picked_up", "delivered"]);
    assert_eq!(version, 9, "one version per fine step, none per fix");
    assert_eq!(simulated_walk(&app, "101").await, FINE_WALK);
}

#[tokio::test]
async fn a_seed_003_order_walks_every_fine_status_while_its_driver_moves() {
    let app = spawn_app().await;
    init(&app, "g-1").await;
    // Parked before the driver exists: woken by the first fix.
    let client = app.client.clone();
    let url = app.url("/tracking/orders/g-1/live-location?timeout=30");
    let parked = tokio::spawn(async move { json_of(client.get(url).send().await.unwrap()).await });

    let (status, started) = simulate(&app, "g-1", FASTEST).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let plan = &started["data"];
    assert_eq!(plan["from_tracking_status"], json!("submitted"));
    assert_eq!(plan["substitutions"], json!(false));
    let driver_id = plan["driver"]["driver_id"].as_str().unwrap().to_owned();
    assert!(driver_id.starts_with("sim-driver-"), "{plan}");
    let fixes = plan["trip"]["fixes"].as_u64().unwrap();
    assert_eq!(fixes, 37);

    let (status, woken) = tokio::time::timeout(PROMPTLY, parked)
        .await
        .expect("the live-location poll is answered")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{woken}");
    assert_eq!(woken["has_update"], json!(true), "{woken}");
    assert!(woken["seq"].as_u64().unwrap() >= 1, "{woken}");

    let order = wait_delivered(&app, "g-1").await;
    assert_eq!(simulated_walk(&app, "g-1").await, FINE_WALK);
    // 37 fixes, and the version counts the eight steps only.
    assert_eq!(order["version"], json!(9), "{order}");
    let (_, tracking) = app.get_json("/tracking/orders/g-1").await;
    let document = &tracking["data"];
    assert_eq!(document["driver_details"]["driver_id"], json!(driver_id));
    assert!(
        document["store_acknowledgment_time"].is_string(),
        "{document}"
    );
    assert!(document["actual_delivery_time"].is_string(), "{document}");

    // The last fix is the drop-off, sent before the delivery.
    let (status, last) = app
        .get_json("/tracking/orders/g-1/live-location?timeout=0")
        .await;
    assert_eq!(status, StatusCode::OK, "{last}");
    assert_eq!(last["seq"], json!(fixes), "{last}");
    assert_eq!(last["data"]["latitude"], plan["trip"]["to"]["latitude"]);
    assert_eq!(last["data"]["longitude"], plan["trip"]["to"]["longitude"]);
}

#[tokio::test]
async fn fixes_reach_a_live_location_poll_and_change_no_version() {
    let app = spawn_app().await;
    init(&app, "g-2").await;
    // At 600x the trip lasts 0.9 s, a fix every 25 ms: long enough to
    // follow fix by fix.
    let (status, started) = simulate(&app, "g-2", "?speed=600").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let fixes = started["data"]["trip"]["fixes"].as_u64().unwrap();
    let mut seqs = Vec::new();
    let mut versions = Vec::new();
    let mut after = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seqs.last() != Some(&fixes) {
        assert!(tokio::time::Instant::now() < deadline, "{seqs:?}");
        let (status, body) = app
            .get_json(&format!(
                "/tracking/orders/g-2/live-location?timeout=30{after}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["has_update"], json!(true), "{body}");
        let seq = body["seq"].as_u64().unwrap();
        seqs.push(seq);
        versions.push(app.version("g-2").await);
        after = format!("&after={seq}");
    }
    assert_eq!(seqs.last(), Some(&37), "{seqs:?}");
    assert!(seqs.len() > 1, "woken fix after fix: {seqs:?}");
    // In transit the whole trip: fixes wake no step.
    assert!(
        versions.iter().all(|&v| v == 8 || v == 9),
        "versions seen while fixes came: {versions:?}"
    );
    let order = wait_delivered(&app, "g-2").await;
    assert_eq!(order["version"], json!(9));
}

#[tokio::test]
async fn with_substitutions_the_store_proposes_one_and_the_customer_approves_it() {
    let app = spawn_app().await;
    init(&app, "g-3").await;
    let (status, started) = simulate(&app, "g-3", "?speed=100000&substitutions=true").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["data"]["substitutions"], json!(true));
    wait_delivered(&app, "g-3").await;
    let mut expected = FINE_WALK.to_vec();
    expected.splice(3..3, ["substitutions_needed", "substitutions_approved"]);
    assert_eq!(simulated_walk(&app, "g-3").await, expected);
    let (_, tracking) = app.get_json("/tracking/orders/g-3").await;
    let subs = tracking["data"]["substitutions"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{tracking}");
    assert_eq!(subs[0]["status"], json!("approved"));
    assert_eq!(subs[0]["original_item_id"], json!("Milk"));

    let (status, body) = simulate(&app, "101", "?substitutions=maybe").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
}

#[tokio::test]
async fn a_seed_004_order_still_ends_delivered() {
    let app = spawn_app().await;
    let (status, body) = app.create_order(&new_order("2001")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, started) = simulate(&app, "2001", FASTEST).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let order = wait_delivered(&app, "2001").await;
    // No store: the store's steps were an operator's, unscoped.
    assert_eq!(simulated_walk(&app, "2001").await, FINE_WALK);
    assert_eq!(order["version"], json!(9));
    let (_, body) = app.track("2001", "").await;
    assert_eq!(body["next_poll_interval"], json!(0));
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
    assert_eq!(
        started["data"]["from_tracking_status"],
        json!("ready_for_pickup")
    );
    assert_eq!(started["data"]["steps"].as_array().unwrap().len(), 4);
    // Before the simulator's first step (2 minutes at 1000x: 120 ms).
    let (status, body) = app.put_status("103", "picked_up").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_delivered(&app, "103").await;
    // Assigning and picking up were taken by hand; the simulator went on
    // from there.
    let (_, history) = app.history("103", "").await;
    let steps: Vec<(&str, &str)> = history["data"].as_array().unwrap()[1..]
        .iter()
        .map(|event| {
            (
                event["tracking_status"].as_str().unwrap(),
                event["updated_by"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("driver_pickup_complete", "-"),
            ("in_transit", "simulator"),
            ("delivered", "simulator"),
        ]
    );
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
    let after = steps[7]["after_seconds"].as_f64().unwrap();
    assert!((after - 198_000.0).abs() < 0.001, "{after}");
    let begun =
        chrono::DateTime::parse_from_rfc3339(started["data"]["started_at"].as_str().unwrap())
            .unwrap();
    let last = chrono::DateTime::parse_from_rfc3339(steps[7]["at"].as_str().unwrap()).unwrap();
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
    // 102 is picking: with a substitution, its next step (proposing it) is
    // 6 minutes away at real time.
    let (status, _) = simulate(&app, "102", "?speed=240&substitutions=true").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = simulate(&app, "103", "?speed=600").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(cancel(&app, "103").await.0, StatusCode::OK);
    app.begin_shutdown();
    app.stopped().await.unwrap();

    let app = spawn_app_at(&url, |_| {}).await;
    assert_eq!(app.stats().await["simulations_running"], json!(1));
    // 6 minutes at 240 times is 1.5 s: the resumed run moves 102 on from
    // its fine status, still with the substitution it was started with.
    let (status, body) = app.track("102", "?version=1&timeout=30").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"]["tracking_status"],
        json!("substitutions_needed"),
        "{body}"
    );
    let (_, history) = app.history("102", "").await;
    assert_eq!(history["data"][1]["updated_by"], json!("simulator"));
    // The cancelled one stayed cancelled.
    assert_eq!(app.order("103").await["version"], json!(1));
}
