//! Orders: create, read, and change status (restaurants and drivers).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::body::{not_modified, order_response, OrderResponse};
use super::error::{ApiError, ErrorBody, Result};
use super::extract::{AppQuery, IfNoneMatch, OrderPath, WriteRequest, IDEMPOTENT_REPLAYED};
use super::AppState;
use crate::domain::{
    Attribution, Event, EventKind, NewOrder, NewOrderInput, OrderChange, OrderId, OrderStatus,
    Timestamp, TrackingStatus, ValidationError, Version,
};
use crate::orders::{Applied, Command, Target, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orders", post(create_order))
        .route("/api/v1/orders/{id}", get(get_order))
        .route("/api/v1/orders/{id}/status", put(update_status))
        .route("/api/v1/orders/{id}/history", get(history))
}

/// The answer to a change: the order, marked when it replays an earlier
/// request's answer.
fn applied_response(status: StatusCode, applied: &Applied) -> Response {
    let mut response = order_response(status, &applied.snapshot);
    if applied.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// Create an order.
///
/// The order starts `confirmed` at version 1. The total is computed from the
/// items. Every problem with the body is reported at once.
///
/// With an `Idempotency-Key`, a retry of the same request within 24 hours
/// replays the first answer (with `Idempotent-Replayed: true`) instead of
/// failing with 409; the same key with a different body is 422.
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, description = "A unique key per logical request (a UUID): a retry with the same key and body within 24 hours replays the first answer instead of repeating the change", example = "5d1f4c1e-8a0b-4d7a-9c2e-3f6b7a8c9d01")),
    request_body = NewOrderInput,
    responses(
        (status = 201, description = "Created (or, for a repeated `Idempotency-Key`, the first answer replayed). `Location` points at the order.", body = OrderResponse,
            headers(("Location" = String, description = "URL of the new order"), ("ETag" = String, description = "The order's version, quoted"),
                ("Idempotent-Replayed" = String, description = "`true` when this answer replays an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "Malformed JSON, or invalid fields (`validation_failed` lists them all).", body = ErrorBody,
            example = json!({"success": false, "error": "validation_failed", "message": "invalid order: customer_id must be 1 to 64 characters, got 0; items[0].quantity must be between 1 and 999, got 0"})),
        (status = 409, description = "An order with this id exists, or a request with the same `Idempotency-Key` is still in progress.", body = ErrorBody,
            example = json!({"success": false, "error": "order_exists", "message": "order 101 already exists"})),
        (status = 415, description = "The body was not sent as JSON.", body = ErrorBody,
            example = json!({"success": false, "error": "unsupported_media_type", "message": "send the body as JSON with the header Content-Type: application/json"})),
        (status = 422, description = "The `Idempotency-Key` was already used for a different request.", body = ErrorBody,
            example = json!({"success": false, "error": "idempotency_key_reused", "message": "Idempotency-Key 'a1b2' was already used for a different request to this endpoint; use a new key for a new request"})),
    )
)]
pub async fn create_order(
    State(state): State<AppState>,
    request: WriteRequest<NewOrderInput>,
) -> Result<Response> {
    let draft = NewOrder::parse(request.body).map_err(crate::orders::ServiceError::from)?;
    let applied = state
        .service
        .execute(Command {
            target: Target::Create(draft),
            attribution: Attribution::default(),
            if_match: None,
            idempotency: request.idempotency,
        })
        .await?;
    let mut response = applied_response(StatusCode::CREATED, &applied);
    let location = format!("/api/v1/orders/{}", applied.snapshot.order().id);
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
        ("id" = OrderId, Path, description = "Order id", example = "101"),
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
#[schema(example = json!({"status": "preparing", "updated_by": "kitchen-tablet-3", "notes": "Started on the pizzas", "metadata": {"station": "oven-2"}}))]
pub struct StatusUpdate {
    /// One of `confirmed`, `preparing`, `ready`, `picked_up`, `delivered`,
    /// `cancelled`. (`requested` and `expired` exist but only the
    /// order-request processor sets them.)
    pub status: String,
    /// Who made the change: at most 128 characters. Recorded in the history.
    #[schema(max_length = 128)]
    pub updated_by: Option<String>,
    /// Why: at most 2,000 characters. Recorded in the history.
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
    /// Anything else to keep with the change: a JSON object of at most 16 KB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// Change an order's status.
///
/// Wakes every parked `/track` poll of the order at once. Statuses only move
/// forward (`confirmed → preparing → ready → picked_up → delivered`);
/// `cancelled` is allowed from any status that is not final. Setting the
/// current status again is an idempotent no-op: the version stays and nobody
/// is woken.
///
/// `updated_by`, `notes` and `metadata` are optional and recorded in the
/// order's history. With `If-Match: "N"` the change applies only if the order
/// is still at version N (else 412, nothing changed). With an
/// `Idempotency-Key`, a retry within 24 hours replays the first answer.
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
    params(("id" = OrderId, Path, description = "Order id", example = "101"),
        ("Idempotency-Key" = Option<String>, Header, description = "A unique key per logical request (a UUID): a retry with the same key and body within 24 hours replays the first answer instead of repeating the change", example = "5d1f4c1e-8a0b-4d7a-9c2e-3f6b7a8c9d01"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the order is still at this version: its `ETag`, quoted", example = "\"2\"")),
    request_body = StatusUpdate,
    responses(
        (status = 200, description = "Committed and published (or already in that status; or, for a repeated `Idempotency-Key`, the first answer replayed).", body = OrderResponse,
            headers(("ETag" = String, description = "The order's version, quoted"),
                ("Idempotent-Replayed" = String, description = "`true` when this answer replays an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "Malformed JSON, a missing `status`, an unknown status, `updated_by`/`notes`/`metadata` too long, or a malformed `If-Match` or `Idempotency-Key`.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_status", "message": "unknown status 'shipped'; valid statuses are: requested, confirmed, preparing, ready, picked_up, delivered, cancelled, expired"})),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = json!({"success": false, "error": "order_not_found", "message": "order 999 not found"})),
        (status = 409, description = "The transition is not allowed from the current status, or only the order-request processor may make it (then the message says so, e.g. `order is requested: only the order-request processor moves it to confirmed, when it accepts a seller's proposal; allowed next statuses: cancelled`).", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_transition", "message": "order cannot go from confirmed to delivered; allowed next statuses: preparing, cancelled"})),
        (status = 412, description = "`If-Match` named a version the order is no longer at; nothing changed. `current_version` is the order's version now.", body = ErrorBody,
            example = json!({"success": false, "error": "version_mismatch", "message": "order 101 is at version 3, not 2 (If-Match); read it again and retry", "current_version": 3})),
        (status = 415, description = "The body was not sent as JSON.", body = ErrorBody,
            example = json!({"success": false, "error": "unsupported_media_type", "message": "send the body as JSON with the header Content-Type: application/json"})),
        (status = 422, description = "The `Idempotency-Key` was already used for a different request.", body = ErrorBody,
            example = json!({"success": false, "error": "idempotency_key_reused", "message": "Idempotency-Key 'a1b2' was already used for a different request to this endpoint; use a new key for a new request"})),
    )
)]
pub async fn update_status(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    request: WriteRequest<StatusUpdate>,
) -> Result<Response> {
    let StatusUpdate {
        status,
        updated_by,
        notes,
        metadata,
    } = request.body;
    let status: OrderStatus = status.parse().map_err(ApiError::InvalidStatus)?;
    let attribution = Attribution::parse(updated_by, notes, metadata)
        .map_err(|err| crate::orders::ServiceError::Invalid(ValidationError::from(err)))?;
    let applied = state
        .service
        .execute(Command {
            target: Target::Change {
                id,
                change: OrderChange::SetStatus(status),
            },
            attribution,
            if_match: request.if_match,
            idempotency: request.idempotency,
        })
        .await?;
    Ok(applied_response(StatusCode::OK, &applied))
}

/// Query parameters of `/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Return events after this version (default 0: from the start). Pass
    /// the previous page's `next_after_version`.
    #[param(example = 0, minimum = 0)]
    pub after_version: Option<u64>,
    /// Events per page, 1 to 500 (default 100).
    #[param(example = 100, minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// One event of an order's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// The order's version after this change.
    #[schema(value_type = u64, example = 2)]
    pub version: Version,
    /// The order's status after this change.
    pub status: OrderStatus,
    /// Seed 003's fine status after this change; absent while an order
    /// request sought a seller, and for changes made before fine statuses
    /// were recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_status: Option<TrackingStatus>,
    /// When the change was committed: the order's `updated_at` at this version.
    pub timestamp: Timestamp,
    /// Who made the change, if they said.
    pub updated_by: Option<String>,
    /// Why, if they said.
    pub notes: Option<String>,
    /// What else they recorded.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// What kind of change this was.
    pub kind: EventKind,
}

impl From<Event> for HistoryEntry {
    fn from(event: Event) -> HistoryEntry {
        HistoryEntry {
            version: event.version,
            status: event.status,
            tracking_status: event.tracking_status,
            timestamp: event.at,
            updated_by: event.attribution.updated_by,
            notes: event.attribution.notes,
            metadata: event.attribution.metadata,
            kind: event.kind,
        }
    }
}

/// A page of an order's history.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = super::examples::history_response)]
pub struct HistoryResponse {
    /// Always `true`.
    pub success: bool,
    /// Events, oldest first.
    pub data: Vec<HistoryEntry>,
    /// Pass as `after_version` to read the next page; `null` on the last page.
    #[schema(value_type = Option<u64>)]
    pub next_after_version: Option<Version>,
}

/// Read an order's history.
///
/// Every accepted change is one immutable event, at the version it produced:
/// creation (version 1), status changes, and the order-request processor's
/// progress. Oldest first, paged by `after_version`.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}/history",
    tag = "orders",
    params(("id" = OrderId, Path, description = "Order id", example = "101"), HistoryParams),
    responses(
        (status = 200, description = "A page of events.", body = HistoryResponse),
        (status = 400, description = "A parameter could not be read or is out of range.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_parameter", "message": "limit must be between 1 and 500, got 0"})),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = json!({"success": false, "error": "order_not_found", "message": "order 999 not found"})),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    AppQuery(params): AppQuery<HistoryParams>,
) -> Result<axum::Json<HistoryResponse>> {
    let limit = match params.limit {
        None => DEFAULT_HISTORY_PAGE,
        Some(limit @ 1..) if limit <= MAX_HISTORY_PAGE as u64 => limit as usize,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "limit must be between 1 and {MAX_HISTORY_PAGE}, got {other}"
            )))
        }
    };
    let after = Version(params.after_version.unwrap_or(0));
    let page = state.service.history(&id, after, limit).await?;
    Ok(axum::Json(HistoryResponse {
        success: true,
        data: page.events.into_iter().map(HistoryEntry::from).collect(),
        next_after_version: page.next_after_version,
    }))
}
