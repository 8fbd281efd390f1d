//! Delivery partners' webhooks over HTTP: signed Uber events and DoorDash
//! events through a whole delivery, duplicates, events out of order, and
//! requests that must change nothing.

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{assert_error, json_of, spawn_app_with, TestApp};

const UBER_SECRET: &str = "uber-test-signing-key";
const DOORDASH_AUTH: &str = "Bearer doordash-test-token";

async fn partner_app() -> TestApp {
    spawn_app_with(|config| {
        config.uber_webhook_secret = Some(UBER_SECRET.into());
        config.doordash_webhook_auth = Some(DOORDASH_AUTH.into());
    })
    .await
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(UBER_SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Posts `event` to Uber's webhook, signed with `signature` (or correctly).
async fn uber(app: &TestApp, event: &Value, signature: Option<&str>) -> (StatusCode, Value) {
    let body = serde_json::to_vec(event).unwrap();
    let signature = signature.map_or_else(|| sign(&body), str::to_owned);
    let response = app
        .client
        .post(app.url("/tracking/webhooks/uber"))
        .header("X-Uber-Signature", signature)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    json_of(response).await
}

async fn doordash(app: &TestApp, event: &Value, auth: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url("/tracking/webhooks/doordash"))
        .header("Authorization", auth)
        .json(event)
        .send()
        .await
        .unwrap();
    json_of(response).await
}

/// An order of store s-1 made ready for pickup.
async fn ready_order(app: &TestApp, id: &str, provider: &str) {
    let (status, body) = app
        .post_json(
            &format!("/tracking/orders/{id}/init"),
            &json!({"store_id": "s-1", "customer_id": "c", "delivery_provider": provider}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for step in ["acknowledge", "start-picking", "ready"] {
        let (status, body) = app
            .post_json(
                &format!("/tracking/store/s-1/{step}"),
                &json!({"order_id": id}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{step}: {body}");
    }
}

async fn fine_status(app: &TestApp, id: &str) -> Value {
    app.order(id).await["tracking_status"].clone()
}

fn uber_status(id: &str, status: &str, order: Option<&str>) -> Value {
    let mut data = json!({
        "courier": {"name": "Sam Rivera", "phone_number": "+15550100", "vehicle_type": "car",
                    "vehicle_make": "Toyota", "location": {"lat": 40.71, "lng": -74.0}},
        "dropoff_eta": "2030-01-01T12:00:00Z",
        "tracking_url": "https://track.example/del-9"
    });
    if let Some(order) = order {
        data["external_id"] = json!(order);
    }
    json!({"id": id, "kind": "event.delivery_status", "status": status, "delivery_id": "del-9", "data": data})
}

#[tokio::test]
async fn signed_uber_events_drive_a_delivery_exactly_once_and_never_backwards() {
    let app = partner_app().await;
    ready_order(&app, "u-1", "uber").await;

    let (status, answer) = uber(&app, &uber_status("evt-1", "pickup", Some("u-1")), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["applied"], json!(true));
    assert_eq!(fine_status(&app, "u-1").await, json!("driver_assigned"));
    let (_, doc) = app.get_json("/tracking/orders/u-1").await;
    let doc = &doc["data"];
    assert_eq!(doc["driver_details"]["name"], json!("Sam Rivera"));
    assert_eq!(doc["driver_details"]["vehicle_type"], json!("car (Toyota)"));
    assert_eq!(doc["delivery_tracking_id"], json!("del-9"));
    assert_eq!(
        doc["delivery_tracking_url"],
        json!("https://track.example/del-9")
    );
    assert_eq!(
        doc["estimated_delivery_time"],
        json!("2030-01-01T12:00:00.000000Z")
    );
    // The courier's position went to the live-location channel.
    let (_, live) = app
        .get_json("/tracking/orders/u-1/live-location?timeout=0")
        .await;
    assert_eq!(live["data"]["latitude"], json!(40.71), "{live}");

    // The same event again: 200, nothing changes.
    let version = app.version("u-1").await;
    let (status, again) = uber(&app, &uber_status("evt-1", "pickup", Some("u-1")), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["duplicate"], json!(true), "{again}");
    assert_eq!(app.version("u-1").await, version);

    // Found by Uber's delivery id alone from now on.
    let (status, _) = uber(&app, &uber_status("evt-2", "pickup_complete", None), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fine_status(&app, "u-1").await,
        json!("driver_pickup_complete")
    );
    // Courier updates move the driver, not the order.
    let version = app.version("u-1").await;
    let update = json!({"id": "evt-3", "kind": "event.courier_update", "delivery_id": "del-9",
        "data": {"courier": {"name": "Sam Rivera", "location": {"lat": 40.72, "lng": -74.01}}}});
    let (status, _) = uber(&app, &update, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.version("u-1").await,
        version,
        "a position is no version"
    );
    let (_, live) = app
        .get_json("/tracking/orders/u-1/live-location?timeout=0")
        .await;
    assert_eq!(live["data"]["latitude"], json!(40.72));

    let (status, _) = uber(&app, &uber_status("evt-4", "dropoff", Some("u-1")), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fine_status(&app, "u-1").await, json!("in_transit"));
    // A late "pickup" (a retry delivered out of order): recorded, ignored.
    let (status, late) = uber(&app, &uber_status("evt-0", "pickup", Some("u-1")), None).await;
    assert_eq!(status, StatusCode::OK, "{late}");
    assert_eq!(
        fine_status(&app, "u-1").await,
        json!("in_transit"),
        "no regression"
    );
    let (_, history) = app.history("u-1", "?limit=500").await;
    let last = history["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], json!("partner_event_ignored"), "{last}");
    assert_eq!(last["updated_by"], json!("uber"));
    assert_eq!(last["metadata"]["event_id"], json!("evt-0"));

    let (status, _) = uber(&app, &uber_status("evt-5", "delivered", Some("u-1")), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.order("u-1").await["status"], json!("delivered"));
    let stats = app.stats().await;
    assert_eq!(stats["webhooks"]["duplicates"], json!(1));
}

#[tokio::test]
async fn an_uber_event_without_a_good_signature_changes_nothing() {
    let app = partner_app().await;
    ready_order(&app, "u-2", "uber").await;
    let event = uber_status("evt-1", "pickup", Some("u-2"));
    let forged = sign(b"another body");
    for signature in [forged.as_str(), "", "not hex"] {
        let (status, body) = uber(&app, &event, Some(signature)).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_signature");
    }
    // No header at all.
    let response = app
        .client
        .post(app.url("/tracking/webhooks/uber"))
        .json(&event)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_signature");
    assert_eq!(fine_status(&app, "u-2").await, json!("ready_for_pickup"));
    assert_eq!(app.stats().await["webhooks"]["unauthenticated"], json!(4));
    // Signed but not JSON: 400, after the signature was checked.
    let garbage = b"{not json".to_vec();
    let response = app
        .client
        .post(app.url("/tracking/webhooks/uber"))
        .header("X-Uber-Signature", sign(&garbage))
        .body(garbage)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_event");
    // Signed, for an order we do not have.
    let (status, body) = uber(
        &app,
        &json!({"id": "evt-x", "kind": "event.delivery_status",
        "status": "pickup", "delivery_id": "del-unknown", "data": {"external_id": "nope"}}),
        None,
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
}

#[tokio::test]
async fn doordash_events_find_their_order_and_are_applied_once() {
    let app = partner_app().await;
    let (status, _) = app
        .post_json(
            "/tracking/orders/d-1/init",
            &json!({"store_id": "s-1", "customer_id": "c", "delivery_provider": "doordash"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let event = |name: &str, at: &str| {
        json!({"event_name": name, "created_at": at, "external_delivery_id": "d-1",
               "dasher_id": 77, "dasher_name": "Ana", "dasher_phone_number": "+15550101",
               "dasher_vehicle_make": "Honda", "dasher_location": {"lat": 40.7, "lng": -74.0},
               "tracking_url": "https://doordash.example/d-1"})
    };
    // A dasher confirmed before the store is ready: recorded.
    let (status, body) = doordash(
        &app,
        &event("DASHER_CONFIRMED", "2025-01-12T20:40:00Z"),
        DOORDASH_AUTH,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fine_status(&app, "d-1").await, json!("submitted"));
    for step in ["acknowledge", "start-picking", "ready"] {
        app.post_json(
            &format!("/tracking/store/s-1/{step}"),
            &json!({"order_id": "d-1"}),
        )
        .await;
    }
    assert_eq!(fine_status(&app, "d-1").await, json!("driver_assigned"));
    let picked = event("DASHER_PICKED_UP", "2025-01-12T20:50:00Z");
    let (status, _) = doordash(&app, &picked, DOORDASH_AUTH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fine_status(&app, "d-1").await,
        json!("driver_pickup_complete")
    );
    // DoorDash retries: the same delivery, event and time is one event.
    let version = app.version("d-1").await;
    let (status, again) = doordash(&app, &picked, DOORDASH_AUTH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["duplicate"], json!(true));
    assert_eq!(app.version("d-1").await, version);
    // Wrong credentials: 401, nothing changes.
    let (status, body) = doordash(
        &app,
        &event("DASHER_DROPPED_OFF", "2025-01-12T21:00:00Z"),
        "Bearer guess",
    )
    .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_signature");
    assert_eq!(app.version("d-1").await, version);
    let (status, _) = doordash(
        &app,
        &event("DASHER_DROPPED_OFF", "2025-01-12T21:00:00Z"),
        DOORDASH_AUTH,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.order("d-1").await["status"], json!("delivered"));
    let (_, doc) = app.get_json("/tracking/orders/d-1").await;
    assert_eq!(
        doc["data"]["driver_details"]["driver_id"],
        json!("doordash-77")
    );
    assert_eq!(
        doc["data"]["status_history"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["updated_by"],
        json!("doordash")
    );
}

#[tokio::test]
async fn a_webhook_without_credentials_configured_is_unavailable() {
    let app = crate::helpers::spawn_app().await;
    let (status, body) = uber(&app, &uber_status("evt-1", "pickup", Some("101")), None).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "webhook_not_configured",
    );
    let (status, body) = doordash(&app, &json!({}), DOORDASH_AUTH).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "webhook_not_configured",
    );
}
