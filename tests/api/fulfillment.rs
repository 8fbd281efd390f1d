//! Seed 003's fulfillment lifecycle over HTTP: the whole flow with a parked
//! customer poll, the reject branches, and bad input.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, TestApp, PROMPTLY};

/// `POST /tracking/orders/{id}/init` for store-1.
async fn init(app: &TestApp, id: &str) -> Value {
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
    body
}

/// `POST path body`, expecting 200; the document.
async fn ok(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, answer) = app.post_json(path, &body).await;
    assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    answer["data"].clone()
}

async fn put_fine(app: &TestApp, id: &str, status: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .put(app.url(&format!("/tracking/orders/{id}/status")))
        .json(&json!({ "status": status, "updated_by": "driver-app" }))
        .send()
        .await
        .unwrap();
    crate::helpers::json_of(response).await
}

#[tokio::test]
async fn one_order_walks_the_whole_seed_003_flow_and_wakes_its_poller_at_every_step() {
    let app = spawn_app().await;
    let created = init(&app, "g-1").await;
    assert_eq!(created["data"]["current_status"], json!("submitted"));
    assert_eq!(created["data"]["status"], json!("confirmed"));
    assert_eq!(created["data"]["store_id"], json!("store-1"));
    assert_eq!(created["data"]["delivery_provider"], json!("internal"));

    let driver =
        json!({"driver_id": "drv-1", "name": "Sam", "phone": "+1-555-0100", "vehicle_type": "car"});
    let steps: Vec<(&str, &str, Value, &str)> = vec![
        (
            "GET",
            "/tracking/store/store-1/orders",
            Value::Null,
            "store_notified",
        ),
        (
            "POST",
            "/tracking/store/store-1/acknowledge",
            json!({"order_id": "g-1", "estimated_ready_time": "2030-01-01T10:00:00Z"}),
            "store_acknowledged",
        ),
        (
            "POST",
            "/tracking/store/store-1/start-picking",
            json!({"order_id": "g-1"}),
            "picking_in_progress",
        ),
        (
            "POST",
            "/tracking/store/store-1/substitution",
            json!({"order_id": "g-1", "original_item_id": "milk-1l", "substitute_item_id": "milk-2l", "reason": "Out of stock", "price_difference": 0.8}),
            "substitutions_needed",
        ),
        (
            "POST",
            "/tracking/orders/g-1/substitutions/sub-1/approve",
            Value::Null,
            "substitutions_approved",
        ),
        (
            "POST",
            "/tracking/store/store-1/ready",
            json!({"order_id": "g-1"}),
            "ready_for_pickup",
        ),
        (
            "POST",
            "/tracking/delivery/g-1/assign",
            json!({"driver": driver, "delivery_tracking_id": "trk-1", "delivery_tracking_url": "https://t.example/trk-1"}),
            "driver_assigned",
        ),
        (
            "POST",
            "/tracking/delivery/g-1/pickup",
            Value::Null,
            "driver_pickup_complete",
        ),
        (
            "PUT",
            "/tracking/orders/g-1/status",
            json!({"status": "in_transit"}),
            "in_transit",
        ),
        (
            "POST",
            "/tracking/delivery/g-1/delivered",
            Value::Null,
            "delivered",
        ),
    ];
    let mut version = 1;
    for (method, path, body, fine) in steps {
        let poll = app.spawn_track("g-1", &format!("?version={version}&timeout=60"));
        app.wait_parked(1).await;
        if path.ends_with("/delivered") {
            // On the way: the driver's fixes wake the live-location poll,
            // every one, and never the customer's status poll.
            drive(&app, "g-1").await;
            assert!(!poll.is_finished(), "no fix woke the status poll");
            assert_eq!(app.version("g-1").await, version, "fixes are not versions");
        }
        let mut request = match method {
            "PUT" => app.client.put(app.url(path)),
            "GET" => app.client.get(app.url(path)),
            _ => app.client.post(app.url(path)),
        };
        if !body.is_null() {
            request = request.json(&body);
        }
        let (status, answer) = crate::helpers::json_of(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        if method == "GET" {
            // The store's feed delivered it: the store is notified.
            assert_eq!(
                answer["orders"][0]["tracking_status"],
                json!(fine),
                "{answer}"
            );
        } else {
            assert_eq!(answer["data"]["current_status"], json!(fine), "{path}");
        }
        let (status, woken, _) = tokio::time::timeout(PROMPTLY, poll)
            .await
            .expect("the customer's poll wakes")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        version += 1;
        assert_eq!(woken["data"]["version"], json!(version), "{path}");
        assert_eq!(woken["data"]["tracking_status"], json!(fine), "{path}");
    }

    let (status, document) = app.get_json("/tracking/orders/g-1").await;
    assert_eq!(status, StatusCode::OK);
    let doc = &document["data"];
    assert_eq!(doc["status"], json!("delivered"));
    assert_eq!(
        doc["driver_location"]["seq"],
        json!(3),
        "the last fix: {doc}"
    );
    assert_eq!(doc["driver_location"]["latitude"], json!(40.72));
    for field in [
        "store_acknowledgment_time",
        "estimated_ready_time",
        "picking_start_time",
        "picking_complete_time",
        "delivery_pickup_time",
        "actual_delivery_time",
        "delivery_tracking_id",
        "delivery_tracking_url",
        "driver_details",
        "created_at",
        "updated_at",
    ] {
        assert!(!doc[field].is_null(), "{field}: {doc}");
    }
    assert_eq!(doc["substitutions"][0]["status"], json!("approved"));
    assert!(!doc["substitutions"][0]["customer_responded_at"].is_null());
    // The history lists every step, each attributed.
    let history = doc["status_history"].as_array().unwrap();
    let statuses: Vec<&str> = history
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "submitted",
            "store_notified",
            "store_acknowledged",
            "picking_in_progress",
            "substitutions_needed",
            "substitutions_approved",
            "ready_for_pickup",
            "driver_assigned",
            "driver_pickup_complete",
            "in_transit",
            "delivered"
        ]
    );
    let by: Vec<&str> = history[1..]
        .iter()
        .map(|e| e["updated_by"].as_str().unwrap_or("MISSING"))
        .collect();
    assert_eq!(
        by,
        [
            "store-feed",
            "store:store-1",
            "store:store-1",
            "store:store-1",
            "customer",
            "store:store-1",
            "dispatch",
            "driver:drv-1",
            "operator",
            "driver:drv-1"
        ]
    );
    // The seed 004 history says the same.
    let (_, page) = app.get_json("/api/v1/orders/g-1/history").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 11);
    assert_eq!(page["data"][1]["kind"], json!("store_notified"));
    assert_eq!(page["data"][4]["kind"], json!("substitution_proposed"));
    assert_eq!(
        page["data"][4]["tracking_status"],
        json!("substitutions_needed")
    );
}

/// Three fixes for `id`, each waking a live-location poll parked for it
/// (beside the status poll the caller parked: two parked in all).
async fn drive(app: &TestApp, id: &str) {
    for (n, latitude) in [40.70, 40.71, 40.72].into_iter().enumerate() {
        let client = app.client.clone();
        let url = app.url(&format!(
            "/tracking/orders/{id}/live-location?after={n}&timeout=60"
        ));
        let parked = tokio::spawn(async move {
            crate::helpers::json_of(client.get(url).send().await.unwrap()).await
        });
        app.wait_parked(2).await;
        let response = app
            .client
            .put(app.url(&format!("/tracking/delivery/{id}/location")))
            .json(&json!({"latitude": latitude, "longitude": -74.0, "accuracy": 5.0}))
            .send()
            .await
            .unwrap();
        let (status, body) = crate::helpers::json_of(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["applied"], json!(true));
        let (status, woken) = tokio::time::timeout(PROMPTLY, parked)
            .await
            .expect("the live-location poll wakes")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(woken["has_update"], json!(true));
        assert_eq!(woken["data"]["seq"], json!(n + 1));
        assert_eq!(woken["data"]["latitude"], json!(latitude));
    }
}

#[tokio::test]
async fn rejected_substitutions_return_to_picking_and_store_rejection_to_submitted() {
    let app = spawn_app().await;
    init(&app, "g-2").await;
    for step in ["acknowledge", "start-picking"] {
        ok(
            &app,
            &format!("/tracking/store/store-1/{step}"),
            json!({"order_id": "g-2"}),
        )
        .await;
    }
    for item in ["a", "b"] {
        ok(
            &app,
            "/tracking/store/store-1/substitution",
            json!({"order_id": "g-2", "original_item_id": item, "substitute_item_id": "z", "reason": "gone", "price_difference": -1}),
        )
        .await;
    }
    let doc = ok(
        &app,
        "/tracking/orders/g-2/substitutions/sub-1/reject",
        json!({"notes": "no thanks"}),
    )
    .await;
    assert_eq!(
        doc["current_status"],
        json!("substitutions_needed"),
        "one still pending"
    );
    let (status, body) = app
        .post("/tracking/orders/g-2/substitutions/sub-1/approve")
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "substitution_decided");
    let (status, body) = app
        .post("/tracking/orders/g-2/substitutions/sub-7/approve")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "substitution_not_found",
    );
    let doc = ok(
        &app,
        "/tracking/orders/g-2/substitutions/sub-2/reject",
        Value::Null,
    )
    .await;
    assert_eq!(doc["current_status"], json!("picking_in_progress"));
    // Ready while nothing is pending.
    let doc = ok(
        &app,
        "/tracking/store/store-1/ready",
        json!({"order_id": "g-2"}),
    )
    .await;
    assert_eq!(doc["current_status"], json!("ready_for_pickup"));

    init(&app, "g-3").await;
    ok(
        &app,
        "/tracking/store/store-1/acknowledge",
        json!({"order_id": "g-3"}),
    )
    .await;
    let doc = ok(
        &app,
        "/tracking/store/store-1/reject",
        json!({"order_id": "g-3", "reason": "Freezer failure"}),
    )
    .await;
    assert_eq!(doc["current_status"], json!("submitted"));
    assert_eq!(doc["store_acknowledgment_time"], Value::Null);
    let last = doc["status_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["kind"], json!("store_rejected"));
    assert_eq!(last["notes"], json!("Freezer failure"));
    // Picking started: too late to reject.
    ok(
        &app,
        "/tracking/store/store-1/acknowledge",
        json!({"order_id": "g-3"}),
    )
    .await;
    ok(
        &app,
        "/tracking/store/store-1/start-picking",
        json!({"order_id": "g-3"}),
    )
    .await;
    let (status, body) = app
        .post_json(
            "/tracking/store/store-1/reject",
            &json!({"order_id": "g-3", "reason": "x"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "invalid_transition");
    assert!(
        body["message"].as_str().unwrap().contains("allowed now:"),
        "{body}"
    );
}

#[tokio::test]
async fn stores_cannot_see_each_others_orders_and_illegal_steps_list_the_allowed_ones() {
    let app = spawn_app().await;
    init(&app, "g-4").await;
    let (status, body) = app
        .post_json(
            "/tracking/store/store-2/acknowledge",
            &json!({"order_id": "g-4"}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
    assert_eq!(
        body["message"],
        json!("order g-4 not found"),
        "as if it did not exist"
    );
    let (status, body) = app
        .post_json(
            "/tracking/store/store-1/acknowledge",
            &json!({"order_id": "nope"}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
    // Out of turn.
    let (status, body) = app.post("/tracking/delivery/g-4/pickup").await;
    assert_error(status, &body, StatusCode::CONFLICT, "invalid_transition");
    let (status, body) = put_fine(&app, "g-4", "in_transit").await;
    assert_error(status, &body, StatusCode::CONFLICT, "invalid_transition");
    assert_eq!(
        body["message"],
        json!("order cannot go from submitted to in_transit; allowed next statuses: store_notified, store_acknowledged, cancelled, failed")
    );
    let (status, body) = put_fine(&app, "g-4", "shipped").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
    // Nothing changed.
    assert_eq!(app.version("g-4").await, 1);
}

#[tokio::test]
async fn bad_input_is_refused_with_every_problem_and_changes_nothing() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/tracking/orders/g-5/init",
            &json!({"store_id": "bad store", "customer_id": "", "delivery_provider": "internal"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("store_id") && message.contains("customer_id"),
        "{message}"
    );
    let (status, body) = app
        .post_json(
            "/tracking/orders/g-5/init",
            &json!({"store_id": "s", "customer_id": "c", "delivery_provider": "fedex"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    let (status, _) = app.get_json("/tracking/orders/g-5").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    init(&app, "g-5").await;
    let (status, body) = app
        .post_json(
            "/tracking/orders/g-5/init",
            &json!({"store_id": "store-1", "customer_id": "c-9", "delivery_provider": "internal"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "order_exists");
    for step in ["acknowledge", "start-picking"] {
        ok(
            &app,
            &format!("/tracking/store/store-1/{step}"),
            json!({"order_id": "g-5"}),
        )
        .await;
    }
    for (bad, what) in [
        (
            json!({"order_id": "g-5", "original_item_id": "a", "substitute_item_id": "b", "reason": "", "price_difference": 1}),
            "reason",
        ),
        (
            json!({"order_id": "g-5", "original_item_id": "a", "substitute_item_id": "b", "reason": "r", "price_difference": 1e9}),
            "price_difference",
        ),
        (
            json!({"order_id": "g-5", "original_item_id": "a", "substitute_item_id": "b", "reason": "r", "price_difference": 0.001}),
            "price_difference",
        ),
    ] {
        let (status, body) = app
            .post_json("/tracking/store/store-1/substitution", &bad)
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
        assert!(body["message"].as_str().unwrap().contains(what), "{body}");
    }
    let (status, body) = app
        .post_json(
            "/tracking/store/store-1/ready",
            &json!({"order_id": "g-5", "surprise": 1}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    let (status, body) = app
        .post_json(
            "/tracking/delivery/g-5/assign",
            &json!({"driver": {"driver_id": "d 1", "name": "", "phone": "1", "vehicle_type": "car", "photo_url": "ftp://x"}}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("driver.driver_id")
            && message.contains("driver.name")
            && message.contains("driver.photo_url"),
        "{message}"
    );
    let (status, body) = app
        .post_json(
            "/tracking/orders/g-5/issues",
            &json!({"issue_type": "late", "description": "x", "severity": "apocalyptic"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    assert_eq!(
        app.version("g-5").await,
        3,
        "only the two good steps changed it"
    );
}

#[tokio::test]
async fn issues_are_reported_and_resolved_and_seed_004_orders_have_a_document() {
    let app = spawn_app().await;
    init(&app, "g-6").await;
    let (status, body) = app
        .post_json(
            "/tracking/orders/g-6/issues",
            &json!({"issue_type": "item_damaged", "description": "Eggs cracked", "severity": "high"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["issue_id"], json!("issue-1"));
    assert_eq!(body["data"]["current_status"], json!("submitted"));
    let doc = ok(
        &app,
        "/tracking/orders/g-6/issues/issue-1/resolve",
        json!({"resolution": "Refunded"}),
    )
    .await;
    assert_eq!(doc["issues"][0]["resolution"], json!("Refunded"));
    let (status, body) = app
        .post_json(
            "/tracking/orders/g-6/issues/issue-1/resolve",
            &json!({"resolution": "again"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "issue_resolved");
    let (status, body) = app
        .post_json(
            "/tracking/orders/g-6/issues/issue-2/resolve",
            &json!({"resolution": "x"}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "issue_not_found");

    // A seed 004 order: its document has no store, and seed 004 moves show
    // as fine statuses.
    let (status, _) = app.put_status("101", "preparing").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get_json("/tracking/orders/101").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["store_id"], Value::Null);
    assert_eq!(body["data"]["current_status"], json!("picking_in_progress"));
    assert_eq!(body["data"]["status"], json!("preparing"));
    // And the seed 004 order JSON carries the fine status too.
    assert_eq!(
        app.order("101").await["tracking_status"],
        json!("picking_in_progress")
    );
}

#[tokio::test]
async fn a_driver_dispatched_early_is_assigned_when_the_store_is_ready() {
    let app = spawn_app().await;
    init(&app, "g-7").await;
    let driver = json!({"driver": {"driver_id": "drv-2", "name": "Ana", "phone": "1", "vehicle_type": "bike"}});
    let doc = ok(&app, "/tracking/delivery/g-7/assign", driver).await;
    assert_eq!(doc["current_status"], json!("submitted"));
    assert_eq!(doc["driver_details"]["driver_id"], json!("drv-2"));
    for step in ["acknowledge", "start-picking", "ready"] {
        ok(
            &app,
            &format!("/tracking/store/store-1/{step}"),
            json!({"order_id": "g-7"}),
        )
        .await;
    }
    let (_, body) = app.get_json("/tracking/orders/g-7").await;
    assert_eq!(body["data"]["current_status"], json!("driver_assigned"));
    assert_eq!(body["data"]["status"], json!("ready"));
}

#[tokio::test]
async fn an_init_retried_with_its_idempotency_key_replays_the_first_answer() {
    let app = spawn_app().await;
    let body = json!({"store_id": "store-1", "customer_id": "c", "delivery_provider": "uber"});
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/tracking/orders/g-8/init"))
            .header("Idempotency-Key", "init-g-8")
            .json(&body)
            .send()
            .await
            .unwrap();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        let (status, answer) = crate::helpers::json_of(response).await;
        answers.push((status, replayed, answer));
    }
    assert_eq!(answers[0].0, StatusCode::CREATED);
    assert!(!answers[0].1);
    assert_eq!(answers[1].0, StatusCode::CREATED);
    assert!(answers[1].1, "the retry is marked as a replay");
    assert_eq!(answers[0].2, answers[1].2);
}

#[tokio::test]
async fn a_store_tablet_waits_for_its_new_orders_and_they_become_notified() {
    let app = spawn_app().await;
    // A fresh tablet: no live orders yet, and a cursor to follow from.
    let (status, first) = app.get_json("/tracking/store/store-1/orders").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["orders"], json!([]));
    let cursor = first["cursor"].as_u64().unwrap();
    let client = app.client.clone();
    let url = app.url(&format!(
        "/tracking/store/store-1/orders?after={cursor}&timeout=60"
    ));
    let parked = tokio::spawn(async move {
        crate::helpers::json_of(client.get(url).send().await.unwrap()).await
    });
    app.wait_parked(1).await;
    // Another store's order does not wake it; its own does.
    let (status, _) = app
        .post_json(
            "/tracking/orders/other-1/init",
            &json!({"store_id": "store-2", "customer_id": "c", "delivery_provider": "internal"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    init(&app, "g-10").await;
    let (status, woken) = tokio::time::timeout(PROMPTLY, parked)
        .await
        .expect("the tablet wakes")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(woken["has_update"], json!(true));
    let orders = woken["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{woken}");
    assert_eq!(orders[0]["id"], json!("g-10"));
    assert_eq!(orders[0]["tracking_status"], json!("store_notified"));
    assert_eq!(orders[0]["version"], json!(2));
    // Following from the new cursor: nothing new, a quiet answer.
    let next = woken["cursor"].as_u64().unwrap();
    assert!(next > cursor);
    let (_, quiet) = app
        .get_json(&format!(
            "/tracking/store/store-1/orders?after={next}&timeout=0"
        ))
        .await;
    assert_eq!(quiet["has_update"], json!(false));
    assert_eq!(quiet["cursor"], json!(next));
    // A change to the order comes through the feed again.
    ok(
        &app,
        "/tracking/store/store-1/acknowledge",
        json!({"order_id": "g-10"}),
    )
    .await;
    let (_, changed) = app
        .get_json(&format!(
            "/tracking/store/store-1/orders?after={next}&timeout=0"
        ))
        .await;
    assert_eq!(
        changed["orders"][0]["tracking_status"],
        json!("store_acknowledged")
    );
    // The customer saw the notification as a version of its own.
    let (_, history) = app.get_json("/api/v1/orders/g-10/history").await;
    assert_eq!(history["data"][1]["kind"], json!("store_notified"));
    assert_eq!(history["data"][1]["updated_by"], json!("store-feed"));
    // The other store's tablet lists only its order.
    let (_, other) = app.get_json("/tracking/store/store-2/orders").await;
    let ids: Vec<&str> = other["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["other-1"]);
    // Bad parameters.
    for query in ["?after=x", "?limit=0", "?limit=501", "?timeout=soon"] {
        let (status, body) = app
            .get_json(&format!("/tracking/store/store-1/orders{query}"))
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
    }
}

#[tokio::test]
async fn next_poll_interval_follows_the_fine_status() {
    use order_tracker::domain::poll::PollStatus;
    use order_tracker::domain::TrackingStatus;
    let app = crate::helpers::spawn_app_with(|config| {
        config.poll_intervals = vec![(PollStatus::Fine(TrackingStatus::InTransit), 15)];
    })
    .await;
    init(&app, "g-11").await;
    let interval = |body: &Value| body["next_poll_interval"].clone();
    let (_, body) = app.track("g-11", "").await;
    assert_eq!(interval(&body), json!(120), "submitted: as confirmed");
    for status in [
        "store_acknowledged",
        "picking_in_progress",
        "ready_for_pickup",
        "driver_assigned",
        "driver_pickup_complete",
    ] {
        let (code, answer) = put_fine(&app, "g-11", status).await;
        assert_eq!(code, StatusCode::OK, "{answer}");
    }
    let (_, body) = app.track("g-11", "").await;
    assert_eq!(
        interval(&body),
        json!(30),
        "driver_pickup_complete: as picked_up"
    );
    put_fine(&app, "g-11", "in_transit").await;
    let (_, body) = app.track("g-11", "").await;
    assert_eq!(body["data"]["status"], json!("picked_up"));
    assert_eq!(interval(&body), json!(15), "in_transit: its own");
    let stats = app.stats().await;
    assert_eq!(
        stats["next_poll_intervals_by_tracking_status"]["in_transit"],
        json!(15)
    );
}
