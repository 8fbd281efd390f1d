//! Orders: create, read, and change status (restaurants and drivers).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::Deserialize;
use utoipa::ToSchema;

use super::body::{not_modified, order_response, OrderResponse};
use super::error::{ApiError, ErrorBody, Result};
use super::extract::{AppJson, IfNoneMatch, OrderPath};
use super::AppState;
use crate::domain::{NewOrder, NewOrderInput, OrderChange, OrderStatus};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orders", post(create_order))
        .route("/api/v1/orders/{id}", get(get_order))
        .route("/api/v1/orders/{id}/status", put(update_status))
}

/// Create an order.
///
/// The order starts `confirmed` at version 1. The total is computed from the
/// items. Every problem with the body is reported at once.
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    tag = "orders",
    request_body = NewOrderInput,
    responses(
        (status = 201, description = "Created. `Location` points at the order.", body = OrderResponse,
            headers(("Location" = String, description = "URL of the new order"), ("ETag" = String, description = "The order's version, quoted"))),
        (status = 400, description = "Malformed JSON, or invalid fields (`validation_failed` lists them all).", body = ErrorBody,
            example = json!({"success": false, "error": "validation_failed", "message": "invalid order: customer_id must be 1 to 64 characters, got 0; items[0].quantity must be between 1 and 999, got 0"})),
        (status = 409, description = "An order with this id exists.", body = ErrorBody,
            example = json!({"success": false, "error": "order_exists", "message": "order 101 already exists"})),
        (status = 415, description = "The body was not sent as JSON.", body = ErrorBody,
            example = json!({"success": false, "error": "unsupported_media_type", "message": "send the body as JSON with the header Content-Type: application/json"})),
    )
)]
pub async fn create_order(
    State(state): State<AppState>,
    AppJson(input): AppJson<NewOrderInput>,
) -> Result<Response> {
    let draft = NewOrder::parse(input).map_err(crate::orders::ServiceError::from)?;
    let snapshot = state.service.create(draft).await?;
    let mut response = order_response(StatusCode::CREATED, &snapshot);
    let location = format!("/api/v1/orders/{}", snapshot.order().id);
    if let Ok(value) = header::HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Read an order.
///
/// Sends the version as `ETag`; with a matching `If-None-Match` the answer is
/// `304 Not Modified` and no body. This never waits: use `/track` to wait for a change.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    params(
        ("id" = String, Path, description = "Order id", example = "101"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier response", example = "\"3\""),
    ),
    responses(
        (status = 200, description = "The order.", body = OrderResponse, headers(("ETag" = String, description = "The order's version, quoted"))),
        (status = 304, description = "The order is still at the version in `If-None-Match`."),
        (status = 400, description = "The id is not a valid order id.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_order_id", "message": "order id may only contain letters, digits, '_', '-' and '.', found ' '"})),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = json!({"success": false, "error": "order_not_found", "message": "order 999 not found"})),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    IfNoneMatch(known): IfNoneMatch,
) -> Result<Response> {
    let snapshot = state.service.get(&id).await?;
    if known.is_some_and(|versions| versions.contains(&snapshot.version())) {
        return Ok(not_modified(&snapshot));
    }
    Ok(order_response(StatusCode::OK, &snapshot))
}

/// A status change from a restaurant or driver.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "preparing"}))]
pub struct StatusUpdate {
    /// One of `confirmed`, `preparing`, `ready`, `picked_up`, `delivered`,
    /// `cancelled`. (`requested` and `expired` exist but only the
    /// order-request processor sets them.)
    pub status: String,
}

/// Change an order's status.
///
/// Wakes every parked `/track` poll of the order at once. Statuses only move
/// forward (`confirmed → preparing → ready → picked_up → delivered`);
/// `cancelled` is allowed from any status that is not final. Setting the
/// current status again is an idempotent no-op: the version stays and nobody
/// is woken.
///
/// Orders that began as order requests start `requested`. Only the
/// order-request processor moves them on: to `confirmed` when it accepts a
/// seller's proposal (the seller becomes `restaurant_name`), or to `expired`.
/// So `{"status": "confirmed"}` on a `requested` order is 409, as is any
/// status change to `requested` or `expired`; `cancelled` is allowed (it also
/// ends the request's processing stream). Once confirmed, the order follows
/// the normal lifecycle above.
#[utoipa::path(
    put,
    path = "/api/v1/orders/{id}/status",
    tag = "orders",
    params(("id" = String, Path, description = "Order id", example = "101")),
    request_body = StatusUpdate,
    responses(
        (status = 200, description = "Stored and published (or already in that status).", body = OrderResponse,
            headers(("ETag" = String, description = "The order's version, quoted"))),
        (status = 400, description = "Malformed JSON, a missing `status`, or an unknown status.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_status", "message": "unknown status 'shipped'; valid statuses are: requested, confirmed, preparing, ready, picked_up, delivered, cancelled, expired"})),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = json!({"success": false, "error": "order_not_found", "message": "order 999 not found"})),
        (status = 409, description = "The transition is not allowed from the current status, or only the order-request processor may make it (then the message says so, e.g. `order is requested: only the order-request processor moves it to confirmed, when it accepts a seller's proposal; allowed next statuses: cancelled`).", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_transition", "message": "order cannot go from confirmed to delivered; allowed next statuses: preparing, cancelled"})),
        (status = 415, description = "The body was not sent as JSON.", body = ErrorBody,
            example = json!({"success": false, "error": "unsupported_media_type", "message": "send the body as JSON with the header Content-Type: application/json"})),
    )
)]
pub async fn update_status(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    AppJson(update): AppJson<StatusUpdate>,
) -> Result<Response> {
    let status: OrderStatus = update.status.parse().map_err(ApiError::InvalidStatus)?;
    let applied = state
        .service
        .apply(&id, OrderChange::SetStatus(status))
        .await?;
    Ok(order_response(StatusCode::OK, &applied.snapshot).into_response())
}
