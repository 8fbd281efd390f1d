//! `POST /api/v1/orders` and `GET /api/v1/orders/{id}`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, json_of, new_order, raw_request, spawn_app, spawn_app_with};

#[tokio::test]
async fn sample_orders_are_seeded_as_the_seed_lists_them() {
    let app = spawn_app().await;
    for (id, customer, status) in [
        ("101", "1", "confirmed"),
        ("102", "2", "preparing"),
        ("103", "1", "ready"),
    ] {
        let order = app.order(id).await;
        assert_eq!(order["customer_id"], json!(customer));
        assert_eq!(order["status"], json!(status));
        assert_eq!(order["version"], json!(1));
    }
}

#[tokio::test]
async fn seeding_can_be_turned_off() {
    let app = spawn_app_with(|config| config.no_sample_orders = true).await;
    let (status, body) = app.get_json("/api/v1/orders/101").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
}

#[tokio::test]
async fn created_orders_start_confirmed_and_are_trackable() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/orders"))
        .json(&new_order("2001"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/api/v1/orders/2001");
    let (_, body) = json_of(response).await;
    let order = &body["data"];
    assert_eq!(order["status"], json!("confirmed"));
    assert_eq!(order["version"], json!(1));
    assert_eq!(order["total_amount"], json!(25.0));
    assert_eq!(app.order("2001").await, *order);
    let (_, tracked) = app.track("2001", "").await;
    assert_eq!(tracked["data"], *order);
}

#[tokio::test]
async fn an_id_is_generated_when_none_is_given() {
    let app = spawn_app().await;
    let mut body = new_order("x");
    body.as_object_mut().unwrap().remove("id");
    let (status, created) = app.create_order(&body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().unwrap();
    assert!(id.starts_with("ord_"), "{id}");
    assert_eq!(app.order(id).await["id"], json!(id));
}

#[tokio::test]
async fn duplicate_ids_are_409() {
    let app = spawn_app().await;
    let (status, body) = app.create_order(&new_order("101")).await;
    assert_error(status, &body, StatusCode::CONFLICT, "order_exists");
    assert_eq!(
        app.order("101").await["restaurant_name"],
        json!("Luigi's Pizzeria")
    );
}

#[tokio::test]
async fn invalid_orders_are_400_naming_every_problem_and_create_nothing() {
    let app = spawn_app().await;
    let body = json!({
        "id": "3001",
        "customer_id": "",
        "restaurant_name": " ",
        "delivery_address": "somewhere",
        "items": [{"name": "Pizza", "quantity": 0, "unit_price": -1}]
    });
    let (status, error) = app.create_order(&body).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "validation_failed");
    let message = error["message"].as_str().unwrap();
    for field in [
        "customer_id",
        "restaurant_name",
        "items[0].quantity",
        "items[0].unit_price",
    ] {
        assert!(message.contains(field), "{message}");
    }
    let (status, _) = app.get_json("/api/v1/orders/3001").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, error) = app.create_order(&json!({"customer_id": "1"})).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_body");
    let mut extra = new_order("3002");
    extra["surprise"] = json!(true);
    let (status, error) = app.create_order(&extra).await;
    assert_error(status, &error, StatusCode::BAD_REQUEST, "invalid_body");
    assert!(
        error["message"].as_str().unwrap().contains("surprise"),
        "{error}"
    );
}

/// `.` and `..` are path segments meaning "this" and "the parent": an order
/// with such an id could not be addressed, since clients rewrite
/// `/api/v1/orders/../track` to `/api/v1/track` before sending it.
#[tokio::test]
async fn ids_made_only_of_dots_are_400_and_create_nothing() {
    let app = spawn_app().await;
    for id in [".", "..", "..."] {
        let (status, body) = app.create_order(&new_order(id)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "validation_failed");
        assert!(
            body["message"].as_str().unwrap().contains("order id"),
            "{body}"
        );
    }
    assert_eq!(
        app.stats().await["orders_total"],
        json!(3),
        "only the samples"
    );
    // Dots beside other characters are fine.
    for id in ["v1.2", ".x", "x.."] {
        let (status, body) = app.create_order(&new_order(id)).await;
        assert_eq!(status, StatusCode::CREATED, "{id}: {body}");
        assert_eq!(app.order(id).await["id"], json!(id));
    }
}

/// Clients resolve dot segments before sending, but a raw request (or a
/// proxy that keeps them) can still deliver one: it is a bad id, never an
/// order lookup.
#[tokio::test]
async fn dot_segments_in_id_paths_are_400() {
    let app = spawn_app().await;
    for (method, path) in [
        ("GET", "/api/v1/orders/."),
        ("GET", "/api/v1/orders/.."),
        ("GET", "/api/v1/orders/%2E%2E"),
        ("GET", "/api/v1/orders/../track"),
        ("GET", "/api/v1/orders/../history"),
        ("PUT", "/api/v1/orders/./status"),
        ("POST", "/api/v1/orders/../simulate-workflow"),
        ("DELETE", "/api/v1/orders/./simulate-workflow"),
        ("POST", "/api/v1/orders/../stop"),
        ("GET", "/api/v1/orders/tracking/.."),
        ("GET", "/api/v1/processor/tracking/."),
    ] {
        let (status, body) = raw_request(&app, method, path).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_order_id");
        assert!(
            body["message"].as_str().unwrap().contains("'.'"),
            "{method} {path}: {body}"
        );
    }
}

#[tokio::test]
async fn get_sends_an_etag_and_honours_if_none_match() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/orders/102").await;
    assert_eq!(response.headers()["etag"], "\"1\"");
    let response = app
        .client
        .get(app.url("/api/v1/orders/102"))
        .header("If-None-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    app.put_status("102", "ready").await;
    let response = app
        .client
        .get(app.url("/api/v1/orders/102"))
        .header("If-None-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = app.get_json("/api/v1/orders/nope").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
}
