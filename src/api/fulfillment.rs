//! Seed 003's fulfillment API under `/tracking/`: the order document, the
//! store's and the driver's operations, the customer's answers to
//! substitutions, and issues.
//!
//! Every write is one [`OrderChange::Fulfill`] through the service's one
//! write path, so it is a new version, an event in the history, and a wake
//! of every `/api/v1/orders/{id}/track` poll. Without authentication (see
//! the security issue) the actor is the one the endpoint speaks for: store
//! endpoints act as the store, delivery endpoints as the driver, the
//! substitution answers as the customer, the rest as an operator.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::body;
use super::error::{ApiError, ErrorBody, Result};
use super::extract::{
    whole_param, AppQuery, IfNoneMatch, OptionalBody, OrderPath, WriteRequest, IDEMPOTENT_REPLAYED,
};
use super::location::LocationData;
use super::orders::{HistoryParams, HistoryResponse};
use super::AppState;
use crate::domain::fulfillment::{
    Assignment, DriverDetails, InitInput, Issue, NewIssue, NewSubstitution, Severity, Substitution,
};
use crate::domain::{
    Actor, Attribution, DeliveryProvider, Event, EventKind, Fulfill, Order, OrderChange, OrderId,
    OrderItem, OrderSnapshot, OrderStatus, StoreId, Timestamp, TrackingStatus, ValidationError,
    Version,
};
use crate::orders::{Applied, Command, ServiceError, Target, MAX_HISTORY_PAGE};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tracking/orders/{order_id}/init", post(init))
        .route("/tracking/orders/{order_id}", get(document_handler))
        .route("/tracking/orders/{order_id}/status", put(set_status))
        .route("/tracking/orders/{order_id}/history", get(history))
        .route(
            "/tracking/orders/{order_id}/substitutions/{substitution_id}/approve",
            post(approve_substitution),
        )
        .route(
            "/tracking/orders/{order_id}/substitutions/{substitution_id}/reject",
            post(reject_substitution),
        )
        .route("/tracking/orders/{order_id}/issues", post(report_issue))
        .route(
            "/tracking/orders/{order_id}/issues/{issue_id}/resolve",
            post(resolve_issue),
        )
        .route("/tracking/store/{store_id}/acknowledge", post(acknowledge))
        .route(
            "/tracking/store/{store_id}/start-picking",
            post(start_picking),
        )
        .route(
            "/tracking/store/{store_id}/substitution",
            post(substitution),
        )
        .route("/tracking/store/{store_id}/ready", post(ready))
        .route("/tracking/store/{store_id}/reject", post(reject))
        .route("/tracking/store/{store_id}/orders", get(store_orders))
        .route("/tracking/delivery/{order_id}/assign", post(assign))
        .route("/tracking/delivery/{order_id}/pickup", post(pickup))
        .route("/tracking/delivery/{order_id}/delivered", post(delivered))
}

/// One entry of an order's `status_history` (seed 003's
/// `OrderStatusUpdate`, with the event's version and kind).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderStatusUpdate)]
pub struct StatusUpdate {
    /// The fine status after this change (for changes recorded before fine
    /// statuses existed, the canonical one of the coarse status); `null`
    /// while an order request sought a seller.
    pub status: Option<TrackingStatus>,
    pub timestamp: Timestamp,
    pub updated_by: Option<String>,
    pub notes: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    #[schema(value_type = u64, example = 4)]
    pub version: Version,
    pub kind: EventKind,
}

impl From<Event> for StatusUpdate {
    fn from(event: Event) -> StatusUpdate {
        StatusUpdate {
            status: event
                .tracking_status
                .or_else(|| TrackingStatus::canonical(event.status)),
            timestamp: event.at,
            updated_by: event.attribution.updated_by,
            notes: event.attribution.notes,
            metadata: event.attribution.metadata,
            version: event.version,
            kind: event.kind,
        }
    }
}

/// Seed 003's `OrderTracking`, plus the order's `version` and seed 004's
/// coarse `status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackingDocument {
    pub order_id: OrderId,
    pub store_id: Option<StoreId>,
    #[schema(value_type = String)]
    pub customer_id: crate::domain::CustomerId,
    pub delivery_provider: Option<DeliveryProvider>,
    /// Seed 003's fine status; `null` while an order request seeks a seller.
    pub current_status: Option<TrackingStatus>,
    /// Seed 004's customer-facing status, derived from `current_status`.
    pub status: OrderStatus,
    /// Grows by one on every change; also the `ETag`.
    #[schema(value_type = u64, example = 7)]
    pub version: Version,
    /// Every change, oldest first (at most the last 500).
    pub status_history: Vec<StatusUpdate>,
    pub store_acknowledgment_time: Option<Timestamp>,
    pub estimated_ready_time: Option<Timestamp>,
    pub picking_start_time: Option<Timestamp>,
    pub picking_complete_time: Option<Timestamp>,
    pub delivery_pickup_time: Option<Timestamp>,
    pub estimated_delivery_time: Option<Timestamp>,
    pub actual_delivery_time: Option<Timestamp>,
    pub delivery_tracking_id: Option<String>,
    pub delivery_tracking_url: Option<String>,
    /// The driver's latest position, from the live-location channel
    /// (`GET /tracking/orders/{order_id}/live-location` follows it; fixes
    /// do not change the order's version).
    pub driver_location: Option<LocationData>,
    pub driver_details: Option<DriverDetails>,
    pub substitutions: Vec<Substitution>,
    pub issues: Vec<Issue>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub delivery_address: String,
    pub items: Vec<OrderItem>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `{"success": true, "data": <document>}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = super::examples::tracking_document)]
pub struct TrackingResponse {
    /// Always `true`.
    pub success: bool,
    pub data: TrackingDocument,
}

/// Renders an order's document, with its history up to the order's version.
async fn render(state: &AppState, snapshot: &OrderSnapshot) -> Result<TrackingDocument> {
    let order = snapshot.order();
    let version = order.version;
    // The latest page of history, oldest first.
    let after = Version(version.0.saturating_sub(MAX_HISTORY_PAGE as u64));
    let page = state
        .service
        .history(&order.id, after, MAX_HISTORY_PAGE)
        .await?;
    let status_history = page
        .events
        .into_iter()
        // A replayed answer shows the history as it was then.
        .filter(|event| event.version <= version)
        .map(StatusUpdate::from)
        .collect();
    let driver_location = state
        .locations
        .latest(&order.id)
        .await
        .map_err(ApiError::from)?
        .map(LocationData::from);
    Ok(to_document(order, status_history, driver_location))
}

/// The document of `order`.
pub(super) fn to_document(
    order: &Order,
    status_history: Vec<StatusUpdate>,
    driver_location: Option<LocationData>,
) -> TrackingDocument {
    let f = order.fulfillment.as_deref().cloned().unwrap_or_default();
    TrackingDocument {
        order_id: order.id.clone(),
        store_id: f.store_id,
        customer_id: order.customer_id.clone(),
        delivery_provider: f.delivery_provider,
        current_status: order.tracking_status(),
        status: order.status,
        version: order.version,
        status_history,
        store_acknowledgment_time: f.store_acknowledgment_time,
        estimated_ready_time: f.estimated_ready_time,
        picking_start_time: f.picking_start_time,
        picking_complete_time: f.picking_complete_time,
        delivery_pickup_time: f.delivery_pickup_time,
        estimated_delivery_time: order.estimated_delivery,
        actual_delivery_time: f.actual_delivery_time,
        delivery_tracking_id: f.delivery_tracking_id,
        delivery_tracking_url: f.delivery_tracking_url,
        driver_location,
        driver_details: f.driver_details,
        substitutions: f.substitutions,
        issues: f.issues,
        metadata: f.metadata,
        delivery_address: order.delivery_address.clone(),
        items: order.items.clone(),
        created_at: order.created_at,
        updated_at: order.updated_at,
    }
}

/// Answers with the document of `snapshot` and its `ETag`.
async fn respond(
    state: &AppState,
    status: StatusCode,
    snapshot: &OrderSnapshot,
) -> Result<Response> {
    let data = render(state, snapshot).await?;
    Ok(body::json(
        status,
        snapshot,
        &TrackingResponse {
            success: true,
            data,
        },
    ))
}

/// Answers a change with the document, marked when it is a replay.
async fn respond_applied(
    state: &AppState,
    status: StatusCode,
    applied: &Applied,
) -> Result<Response> {
    let mut response = respond(state, status, &applied.snapshot).await?;
    if applied.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Who and why: the body's fields, or the actor when `updated_by` is absent.
fn attribution(
    updated_by: Option<String>,
    notes: Option<String>,
    metadata: Option<Map<String, Value>>,
    actor: impl FnOnce() -> String,
) -> Result<Attribution> {
    let mut attribution = Attribution::parse(updated_by, notes, metadata)
        .map_err(|err| ServiceError::Invalid(ValidationError::from(err)))?;
    attribution.updated_by.get_or_insert_with(actor);
    Ok(attribution)
}

/// Runs one fulfillment command on `id` and answers with the document.
async fn run(
    state: &AppState,
    id: OrderId,
    command: Fulfill,
    actor: Actor,
    at_store: Option<StoreId>,
    attribution: Attribution,
    request: (Option<Version>, Option<crate::orders::IdempotencyKey>),
) -> Result<Response> {
    let applied = state
        .service
        .execute(Command {
            target: Target::Change {
                id,
                change: OrderChange::Fulfill {
                    command,
                    actor,
                    at_store,
                },
            },
            attribution,
            if_match: request.0,
            idempotency: request.1,
        })
        .await?;
    respond_applied(state, StatusCode::OK, &applied).await
}

fn invalid(err: ValidationError) -> ApiError {
    ApiError::Service(ServiceError::Invalid(err))
}

/// The `{store_id}` path segment.
fn store_path(store_id: String) -> Result<StoreId> {
    store_id
        .parse()
        .map_err(|err: crate::domain::BadId| ApiError::InvalidParameter(err.0))
}

/// The `order_id` of a store operation's body.
fn body_order(order_id: String) -> Result<OrderId> {
    order_id
        .parse()
        .map_err(|err: crate::domain::BadId| ApiError::InvalidOrderId(err.0))
}

/// Start tracking an order (seed 003).
///
/// Creates the order at version 1 in `submitted` (seed 004 status
/// `confirmed`) for `store_id`. The store learns of it through its feed.
/// An existing id is 409, unless this is a retry with the same
/// `Idempotency-Key` (then the first answer is replayed).
#[utoipa::path(
    post,
    path = "/tracking/orders/{order_id}/init",
    tag = "fulfillment",
    params(("order_id" = OrderId, Path, description = "The new order's id", example = "g-1001"),
        ("Idempotency-Key" = Option<String>, Header, description = "A unique key per logical request: a retry within 24 hours replays the first answer", example = "5d1f4c1e-8a0b-4d7a-9c2e-3f6b7a8c9d01")),
    request_body = InitInput,
    responses(
        (status = 201, description = "Created.", body = TrackingResponse, headers(("ETag" = String, description = "The order's version, quoted"))),
        (status = 400, description = "Malformed JSON or invalid fields (all listed).", body = ErrorBody,
            example = json!({"success": false, "error": "validation_failed", "message": "invalid order: store_id must be 1 to 64 characters, got 0"})),
        (status = 409, description = "The order exists.", body = ErrorBody,
            example = json!({"success": false, "error": "order_exists", "message": "order g-1001 already exists"})),
    )
)]
pub async fn init(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    request: WriteRequest<InitInput>,
) -> Result<Response> {
    let draft = request.body.parse(id).map_err(invalid)?;
    let applied = state
        .service
        .execute(Command {
            target: Target::Create(draft),
            attribution: Attribution::default(),
            if_match: None,
            idempotency: request.idempotency,
        })
        .await?;
    respond_applied(&state, StatusCode::CREATED, &applied).await
}

/// Read an order's tracking document.
///
/// Every field of seed 003's `OrderTracking`, with `version` (also the
/// `ETag`; `If-None-Match` answers 304) and the coarse `status`.
#[utoipa::path(
    get,
    path = "/tracking/orders/{order_id}",
    tag = "fulfillment",
    params(("order_id" = OrderId, Path, description = "Order id", example = "g-1001"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` from an earlier response", example = "\"3\"")),
    responses(
        (status = 200, description = "The document.", body = TrackingResponse, headers(("ETag" = String, description = "The order's version, quoted"))),
        (status = 304, description = "The order is still at the version in `If-None-Match`."),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = json!({"success": false, "error": "order_not_found", "message": "order g-9 not found"})),
    )
)]
pub async fn document_handler(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    IfNoneMatch(known): IfNoneMatch,
) -> Result<Response> {
    let snapshot = state.service.get(&id).await?;
    if known.is_some_and(|versions| versions.contains(&snapshot.version())) {
        return Ok(body::not_modified(&snapshot));
    }
    respond(&state, StatusCode::OK, &snapshot).await
}

/// An explicit move to a fine status.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "in_transit", "updated_by": "driver-app", "notes": "Left the store"}))]
pub struct TrackingStatusUpdate {
    /// A seed 003 status the lifecycle allows from the current one.
    pub status: String,
    #[schema(max_length = 128)]
    pub updated_by: Option<String>,
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// Move an order to a fine status.
///
/// Any status the lifecycle table allows as the next one (setting the
/// current one again is a no-op). Statuses that need more than a status
/// (`substitutions_needed`, `substitutions_approved`) have their own
/// endpoints. Illegal moves are 409 with the allowed statuses listed.
#[utoipa::path(
    put,
    path = "/tracking/orders/{order_id}/status",
    tag = "fulfillment",
    params(("order_id" = OrderId, Path, description = "Order id", example = "g-1001"),
        ("If-Match" = Option<String>, Header, description = "Apply only at this version (an `ETag`)", example = "\"2\""),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry within 24 hours replays the first answer", example = "5d1f4c1e-8a0b-4d7a-9c2e-3f6b7a8c9d01")),
    request_body = TrackingStatusUpdate,
    responses(
        (status = 200, description = "Committed (or already in that status).", body = TrackingResponse),
        (status = 400, description = "Malformed body or unknown status.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_status", "message": "unknown status 'shipped'"})),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = super::examples::order_not_found),
        (status = 409, description = "Not allowed now.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_transition", "message": "order cannot go from submitted to in_transit; allowed next statuses: store_notified, store_acknowledged, cancelled, failed"})),
        (status = 412, description = "`If-Match` named another version.", body = ErrorBody,
            example = json!({"success": false, "error": "version_mismatch", "message": "order g-1001 is at version 3, not 2 (If-Match); read it again and retry", "current_version": 3})),
    )
)]
pub async fn set_status(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    request: WriteRequest<TrackingStatusUpdate>,
) -> Result<Response> {
    let TrackingStatusUpdate {
        status,
        updated_by,
        notes,
        metadata,
    } = request.body;
    let status: TrackingStatus = status.parse().map_err(|_| {
        let names: Vec<&str> = <TrackingStatus as strum::VariantArray>::VARIANTS
            .iter()
            .map(|s| s.into())
            .collect();
        ApiError::InvalidParameter(format!(
            "unknown status '{status}'; valid statuses are: {}",
            names.join(", ")
        ))
    })?;
    let attribution = attribution(updated_by, notes, metadata, || "operator".into())?;
    run(
        &state,
        id,
        Fulfill::MoveTo(status),
        Actor::Operator,
        None,
        attribution,
        (request.if_match, request.idempotency),
    )
    .await
}

/// An order's history (the same as `/api/v1/orders/{id}/history`).
#[utoipa::path(
    get,
    path = "/tracking/orders/{order_id}/history",
    tag = "fulfillment",
    params(("order_id" = OrderId, Path, description = "Order id", example = "g-1001"), HistoryParams),
    responses(
        (status = 200, description = "A page of events, oldest first.", body = HistoryResponse),
        (status = 400, description = "A parameter is out of range.", body = ErrorBody,
            example = super::examples::invalid_fields),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = super::examples::order_not_found),
    )
)]
pub async fn history(
    state: State<AppState>,
    id: OrderPath,
    params: AppQuery<HistoryParams>,
) -> Result<axum::Json<HistoryResponse>> {
    super::orders::history(state, id, params).await
}

/// Who and why, for endpoints whose body carries nothing else.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"updated_by": "customer-app", "notes": "Fine by me"}))]
pub struct Note {
    #[schema(max_length = 128)]
    pub updated_by: Option<String>,
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// The customer's answer to one substitution: path and optional note.
async fn answer(
    state: AppState,
    (order_id, substitution_id): (String, String),
    request: OptionalBody<Note>,
    approve: bool,
) -> Result<Response> {
    let id = body_order(order_id)?;
    let Note {
        updated_by,
        notes,
        metadata,
    } = request.body;
    let attribution = attribution(updated_by, notes, metadata, || "customer".into())?;
    let command = Fulfill::DecideSubstitution {
        id: substitution_id,
        approve,
    };
    run(
        &state,
        id,
        command,
        Actor::Customer,
        None,
        attribution,
        (None, request.idempotency),
    )
    .await
}

/// Approve a substitution (the customer).
///
/// When the last pending substitution of the round is answered, the order
/// moves on: to `substitutions_approved` if any was approved, else back to
/// `picking_in_progress`. Answering twice is 409. The body is optional.
#[utoipa::path(
    post,
    path = "/tracking/orders/{order_id}/substitutions/{substitution_id}/approve",
    tag = "fulfillment",
    params(("order_id" = OrderId, Path, description = "Order id", example = "g-1001"),
        ("substitution_id" = String, Path, description = "The substitution's id", example = "sub-1")),
    request_body(content = Note, description = "Optional: send no body at all, or `null`, or this"),
    responses(
        (status = 200, description = "Recorded.", body = TrackingResponse),
        (status = 404, description = "No such order or substitution.", body = ErrorBody,
            example = json!({"success": false, "error": "substitution_not_found", "message": "substitution sub-9 not found"})),
        (status = 409, description = "Already answered, or the order is not waiting for answers.", body = ErrorBody,
            example = json!({"success": false, "error": "substitution_decided", "message": "substitution sub-1 was already approved"})),
    )
)]
pub async fn approve_substitution(
    State(state): State<AppState>,
    Path(path): Path<(String, String)>,
    request: OptionalBody<Note>,
) -> Result<Response> {
    answer(state, path, request, true).await
}

/// Reject a substitution (the customer).
///
/// Like approving; when every substitution of the round is rejected the
/// order goes back to `picking_in_progress`.
#[utoipa::path(
    post,
    path = "/tracking/orders/{order_id}/substitutions/{substitution_id}/reject",
    tag = "fulfillment",
    params(("order_id" = OrderId, Path, description = "Order id", example = "g-1001"),
        ("substitution_id" = String, Path, description = "The substitution's id", example = "sub-1")),
    request_body(content = Note, description = "Optional: send no body at all, or `null`, or this"),
    responses(
        (status = 200, description = "Recorded.", body = TrackingResponse),
        (status = 404, description = "No such order or substitution.", body = ErrorBody,
            example = super::examples::order_not_found),
        (status = 409, description = "Already answered, or the order is not waiting for answers.", body = ErrorBody,
            example = super::examples::step_out_of_turn),
    )
)]
pub async fn reject_substitution(
    State(state): State<AppState>,
    Path(path): Path<(String, String)>,
    request: OptionalBody<Note>,
) -> Result<Response> {
    answer(state, path, request, false).await
}

/// A reported issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"issue_type": "item_damaged", "description": "Two eggs cracked", "severity": "medium"}))]
pub struct IssueInput {
    /// A short code: `item_damaged`, `late`, `wrong_item`, ...
    #[schema(max_length = 64)]
    pub issue_type: String,
    #[schema(max_length = 2000)]
    pub description: String,
    pub severity: Severity,
    #[schema(max_length = 128)]
    pub updated_by: Option<String>,
}

/// `{"success": true, "issue_id": ..., "data": <document>}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = super::examples::issue_response)]
pub struct IssueResponse {
    pub success: bool,
    /// The new issue's id, for `/resolve`.
    #[schema(example = "issue-1")]
    pub issue_id: String,
    pub data: TrackingDocument,
}

/// Report an issue with an order.
///
/// Any time, even once delivered (a damaged item is found at the door).
/// The status does not change; the order gets a new version.
#[utoipa::path(
    post,
    path = "/tracking/orders/{order_id}/issues",
    tag = "fulfillment",
    params(("order_id" = OrderId, Path, description = "Order id", example = "g-1001")),
    request_body = IssueInput,
    responses(
        (status = 201, description = "Recorded.", body = IssueResponse),
        (status = 400, description = "Invalid fields.", body = ErrorBody,
            example = super::examples::invalid_fields),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = super::examples::order_not_found),
    )
)]
pub async fn report_issue(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    request: WriteRequest<IssueInput>,
) -> Result<Response> {
    let IssueInput {
        issue_type,
        description,
        severity,
        updated_by,
    } = request.body;
    let issue = NewIssue::parse(&issue_type, &description, severity).map_err(invalid)?;
    let attribution = attribution(updated_by, None, None, || "operator".into())?;
    let applied = state
        .service
        .execute(Command {
            target: Target::Change {
                id,
                change: OrderChange::Fulfill {
                    command: Fulfill::ReportIssue(issue),
                    actor: Actor::Operator,
                    at_store: None,
                },
            },
            attribution,
            if_match: request.if_match,
            idempotency: request.idempotency,
        })
        .await?;
    let data = render(&state, &applied.snapshot).await?;
    let issue_id = data.issues.last().map(|i| i.id.clone()).unwrap_or_default();
    let mut response = body::json(
        StatusCode::CREATED,
        &applied.snapshot,
        &IssueResponse {
            success: true,
            issue_id,
            data,
        },
    );
    if applied.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// How an issue was resolved.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"resolution": "Refunded the eggs"}))]
pub struct Resolution {
    #[schema(max_length = 2000)]
    pub resolution: String,
    #[schema(max_length = 128)]
    pub updated_by: Option<String>,
}

/// Resolve an issue.
#[utoipa::path(
    post,
    path = "/tracking/orders/{order_id}/issues/{issue_id}/resolve",
    tag = "fulfillment",
    params(("order_id" = OrderId, Path, description = "Order id", example = "g-1001"),
        ("issue_id" = String, Path, description = "The issue's id", example = "issue-1")),
    request_body = Resolution,
    responses(
        (status = 200, description = "Resolved.", body = TrackingResponse),
        (status = 404, description = "No such order or issue.", body = ErrorBody,
            example = json!({"success": false, "error": "issue_not_found", "message": "issue issue-9 not found"})),
        (status = 409, description = "Already resolved.", body = ErrorBody,
            example = json!({"success": false, "error": "issue_resolved", "message": "issue issue-1 was already resolved"})),
    )
)]
pub async fn resolve_issue(
    State(state): State<AppState>,
    Path((order_id, issue_id)): Path<(String, String)>,
    request: WriteRequest<Resolution>,
) -> Result<Response> {
    let id = body_order(order_id)?;
    let Resolution {
        resolution,
        updated_by,
    } = request.body;
    let mut problems = Vec::new();
    let resolution =
        crate::domain::fulfillment::required_text("resolution", &resolution, &mut problems);
    let resolution = ValidationError::unless(problems, resolution).map_err(invalid)?;
    let attribution = attribution(updated_by, None, None, || "operator".into())?;
    run(
        &state,
        id,
        Fulfill::ResolveIssue {
            id: issue_id,
            resolution,
        },
        Actor::Operator,
        None,
        attribution,
        (request.if_match, request.idempotency),
    )
    .await
}

/// A store operation on one of its orders.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"order_id": "g-1001", "updated_by": "tablet-2", "notes": "On it"}))]
pub struct StoreOperation {
    /// One of this store's orders; another store's order is 404.
    pub order_id: String,
    #[schema(max_length = 128)]
    pub updated_by: Option<String>,
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Acknowledge only: when the store expects the order to be ready.
    pub estimated_ready_time: Option<Timestamp>,
}

/// One store operation, as its body gives it.
struct StoreCall {
    order_id: String,
    command: Fulfill,
    updated_by: Option<String>,
    notes: Option<String>,
    metadata: Option<Map<String, Value>>,
}

/// Runs `call` for `store_id`'s order, attributed to the store unless the
/// body names someone.
async fn store_call<T>(
    state: AppState,
    store_id: String,
    request: WriteRequest<T>,
    call: impl FnOnce(T) -> Result<StoreCall>,
) -> Result<Response> {
    let store = store_path(store_id)?;
    let StoreCall {
        order_id,
        command,
        updated_by,
        notes,
        metadata,
    } = call(request.body)?;
    let id = body_order(order_id)?;
    let label = format!("store:{store}");
    let attribution = attribution(updated_by, notes, metadata, || label)?;
    run(
        &state,
        id,
        command,
        Actor::Store,
        Some(store),
        attribution,
        (request.if_match, request.idempotency),
    )
    .await
}

/// Runs a store operation with a plain body for `store_id`.
async fn store_op(
    state: AppState,
    store_id: String,
    request: WriteRequest<StoreOperation>,
    command: impl FnOnce(Option<Timestamp>) -> Result<Fulfill>,
) -> Result<Response> {
    store_call(state, store_id, request, |body| {
        Ok(StoreCall {
            command: command(body.estimated_ready_time)?,
            order_id: body.order_id,
            updated_by: body.updated_by,
            notes: body.notes,
            metadata: body.metadata,
        })
    })
    .await
}

/// Refuses `estimated_ready_time` on operations other than acknowledge.
fn no_ready_time(command: Fulfill) -> impl FnOnce(Option<Timestamp>) -> Result<Fulfill> {
    move |ready| match ready {
        Some(_) => Err(ApiError::InvalidBody(
            "estimated_ready_time is only accepted by /acknowledge".into(),
        )),
        None => Ok(command),
    }
}

/// The store acknowledges an order.
///
/// From `submitted` or `store_notified` to `store_acknowledged`; records
/// `store_acknowledgment_time` and the optional `estimated_ready_time`.
#[utoipa::path(
    post,
    path = "/tracking/store/{store_id}/acknowledge",
    tag = "store",
    params(("store_id" = String, Path, description = "The store", example = "store-17")),
    request_body = StoreOperation,
    responses(
        (status = 200, description = "Acknowledged.", body = TrackingResponse),
        (status = 400, description = "Invalid body.", body = ErrorBody,
            example = super::examples::invalid_fields),
        (status = 404, description = "No such order at this store.", body = ErrorBody,
            example = super::examples::order_not_found),
        (status = 409, description = "Not allowed now.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_transition", "message": "cannot acknowledge an order that is picking_in_progress; allowed now: propose_substitution, mark_ready, dispatch_early, cancel, fail"})),
    )
)]
pub async fn acknowledge(
    State(state): State<AppState>,
    Path(store_id): Path<String>,
    request: WriteRequest<StoreOperation>,
) -> Result<Response> {
    store_op(state, store_id, request, |estimated_ready_time| {
        Ok(Fulfill::Acknowledge {
            estimated_ready_time,
        })
    })
    .await
}

/// The store starts picking an order.
#[utoipa::path(
    post,
    path = "/tracking/store/{store_id}/start-picking",
    tag = "store",
    params(("store_id" = String, Path, description = "The store", example = "store-17")),
    request_body = StoreOperation,
    responses(
        (status = 200, description = "Picking.", body = TrackingResponse),
        (status = 404, description = "No such order at this store.", body = ErrorBody,
            example = super::examples::order_not_found),
        (status = 409, description = "Not allowed now.", body = ErrorBody,
            example = super::examples::step_out_of_turn),
    )
)]
pub async fn start_picking(
    State(state): State<AppState>,
    Path(store_id): Path<String>,
    request: WriteRequest<StoreOperation>,
) -> Result<Response> {
    store_op(
        state,
        store_id,
        request,
        no_ready_time(Fulfill::StartPicking),
    )
    .await
}

/// The store's order is ready for pickup.
///
/// A driver assigned early (partners dispatch before the order is ready)
/// takes it at once: the order moves to `driver_assigned`.
#[utoipa::path(
    post,
    path = "/tracking/store/{store_id}/ready",
    tag = "store",
    params(("store_id" = String, Path, description = "The store", example = "store-17")),
    request_body = StoreOperation,
    responses(
        (status = 200, description = "Ready.", body = TrackingResponse),
        (status = 404, description = "No such order at this store.", body = ErrorBody,
            example = super::examples::order_not_found),
        (status = 409, description = "Not allowed now (e.g. substitutions await the customer).", body = ErrorBody,
            example = super::examples::step_out_of_turn),
    )
)]
pub async fn ready(
    State(state): State<AppState>,
    Path(store_id): Path<String>,
    request: WriteRequest<StoreOperation>,
) -> Result<Response> {
    store_op(state, store_id, request, no_ready_time(Fulfill::MarkReady)).await
}

/// A store's refusal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"order_id": "g-1001", "reason": "Closing early: freezer failure"}))]
pub struct Rejection {
    pub order_id: String,
    /// Why; recorded as the event's notes.
    #[schema(max_length = 2000)]
    pub reason: String,
    #[schema(max_length = 128)]
    pub updated_by: Option<String>,
}

/// The store rejects an order: it goes back to `submitted` for reassignment.
#[utoipa::path(
    post,
    path = "/tracking/store/{store_id}/reject",
    tag = "store",
    params(("store_id" = String, Path, description = "The store", example = "store-17")),
    request_body = Rejection,
    responses(
        (status = 200, description = "Back to submitted.", body = TrackingResponse),
        (status = 400, description = "Missing reason.", body = ErrorBody,
            example = super::examples::invalid_fields),
        (status = 404, description = "No such order at this store.", body = ErrorBody,
            example = super::examples::order_not_found),
        (status = 409, description = "Too late to reject (picking started).", body = ErrorBody,
            example = super::examples::step_out_of_turn),
    )
)]
pub async fn reject(
    State(state): State<AppState>,
    Path(store_id): Path<String>,
    request: WriteRequest<Rejection>,
) -> Result<Response> {
    store_call(state, store_id, request, |body| {
        let mut problems = Vec::new();
        let reason =
            crate::domain::fulfillment::required_text("reason", &body.reason, &mut problems);
        let reason = ValidationError::unless(problems, reason).map_err(invalid)?;
        Ok(StoreCall {
            order_id: body.order_id,
            command: Fulfill::RejectByStore,
            updated_by: body.updated_by,
            notes: Some(reason),
            metadata: None,
        })
    })
    .await
}

/// A picker's substitution proposal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"order_id": "g-1001", "original_item_id": "sku-milk-1l", "substitute_item_id": "sku-milk-2l", "reason": "Out of stock", "price_difference": 0.8}))]
pub struct SubstitutionInput {
    pub order_id: String,
    pub original_item_id: String,
    pub substitute_item_id: String,
    #[schema(max_length = 2000)]
    pub reason: String,
    /// What the substitute costs more (or, negative, less).
    pub price_difference: f64,
    #[schema(max_length = 128)]
    pub updated_by: Option<String>,
}

/// The store proposes a substitution.
///
/// Appends a pending substitution (`customer_notified_at` set) and moves
/// the order to `substitutions_needed`, which wakes the customer's poll.
#[utoipa::path(
    post,
    path = "/tracking/store/{store_id}/substitution",
    tag = "store",
    params(("store_id" = String, Path, description = "The store", example = "store-17")),
    request_body = SubstitutionInput,
    responses(
        (status = 200, description = "Proposed.", body = TrackingResponse),
        (status = 400, description = "Invalid fields.", body = ErrorBody,
            example = super::examples::invalid_fields),
        (status = 404, description = "No such order at this store.", body = ErrorBody,
            example = super::examples::order_not_found),
        (status = 409, description = "Not picking now.", body = ErrorBody,
            example = super::examples::step_out_of_turn),
    )
)]
pub async fn substitution(
    State(state): State<AppState>,
    Path(store_id): Path<String>,
    request: WriteRequest<SubstitutionInput>,
) -> Result<Response> {
    store_call(state, store_id, request, |body| {
        let new = NewSubstitution::parse(
            &body.original_item_id,
            &body.substitute_item_id,
            &body.reason,
            body.price_difference,
        )
        .map_err(invalid)?;
        Ok(StoreCall {
            order_id: body.order_id,
            command: Fulfill::ProposeSubstitution(new),
            updated_by: body.updated_by,
            notes: None,
            metadata: None,
        })
    })
    .await
}

/// A driver assignment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "driver": {"driver_id": "drv-7", "name": "Sam Rivera", "phone": "+1-555-0100", "vehicle_type": "car"},
    "delivery_tracking_id": "trk-99",
    "delivery_tracking_url": "https://track.example.com/trk-99",
    "estimated_delivery_time": "2025-01-12T21:05:00Z"
}))]
pub struct AssignInput {
    pub driver: DriverDetails,
    pub delivery_tracking_id: Option<String>,
    pub delivery_tracking_url: Option<String>,
    pub estimated_delivery_time: Option<Timestamp>,
    #[schema(max_length = 128)]
    pub updated_by: Option<String>,
}

/// Assign a driver.
///
/// A ready order moves to `driver_assigned`. Before it is ready (partners
/// dispatch early) the driver is recorded and the order moves to
/// `driver_assigned` when the store marks it ready. Assigning again
/// replaces the driver.
#[utoipa::path(
    post,
    path = "/tracking/delivery/{order_id}/assign",
    tag = "delivery",
    params(("order_id" = OrderId, Path, description = "Order id", example = "g-1001")),
    request_body = AssignInput,
    responses(
        (status = 200, description = "Assigned.", body = TrackingResponse),
        (status = 400, description = "Invalid driver details.", body = ErrorBody,
            example = super::examples::invalid_fields),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = super::examples::order_not_found),
        (status = 409, description = "The order is picked up or final.", body = ErrorBody,
            example = super::examples::step_out_of_turn),
    )
)]
pub async fn assign(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    request: WriteRequest<AssignInput>,
) -> Result<Response> {
    let AssignInput {
        driver,
        delivery_tracking_id,
        delivery_tracking_url,
        estimated_delivery_time,
        updated_by,
    } = request.body;
    let assignment = Assignment::parse(
        driver,
        delivery_tracking_id,
        delivery_tracking_url,
        estimated_delivery_time,
    )
    .map_err(invalid)?;
    let attribution = attribution(updated_by, None, None, || "dispatch".into())?;
    run(
        &state,
        id,
        Fulfill::AssignDriver(Box::new(assignment)),
        Actor::Operator,
        None,
        attribution,
        (request.if_match, request.idempotency),
    )
    .await
}

/// A driver's step on `id`, attributed to the assigned driver.
async fn driver_step(
    state: AppState,
    id: OrderId,
    request: OptionalBody<Note>,
    command: Fulfill,
) -> Result<Response> {
    let driver = state
        .service
        .get(&id)
        .await?
        .order()
        .fulfillment
        .as_ref()
        .and_then(|f| f.driver_details.as_ref())
        .map(|d| format!("driver:{}", d.driver_id));
    let Note {
        updated_by,
        notes,
        metadata,
    } = request.body;
    let attribution = attribution(updated_by, notes, metadata, || {
        driver.unwrap_or_else(|| "driver".into())
    })?;
    run(
        &state,
        id,
        command,
        Actor::Driver,
        None,
        attribution,
        (None, request.idempotency),
    )
    .await
}

/// The driver picked the order up.
#[utoipa::path(
    post,
    path = "/tracking/delivery/{order_id}/pickup",
    tag = "delivery",
    params(("order_id" = OrderId, Path, description = "Order id", example = "g-1001")),
    request_body(content = Note, description = "Optional: send no body at all, or `null`, or this"),
    responses(
        (status = 200, description = "Picked up.", body = TrackingResponse),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = super::examples::order_not_found),
        (status = 409, description = "No driver assigned, or not ready.", body = ErrorBody,
            example = super::examples::step_out_of_turn),
    )
)]
pub async fn pickup(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    request: OptionalBody<Note>,
) -> Result<Response> {
    driver_step(state, id, request, Fulfill::PickUp).await
}

/// The driver delivered the order (sets `actual_delivery_time`).
#[utoipa::path(
    post,
    path = "/tracking/delivery/{order_id}/delivered",
    tag = "delivery",
    params(("order_id" = OrderId, Path, description = "Order id", example = "g-1001")),
    request_body(content = Note, description = "Optional: send no body at all, or `null`, or this"),
    responses(
        (status = 200, description = "Delivered.", body = TrackingResponse),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = super::examples::order_not_found),
        (status = 409, description = "Not picked up yet, or final.", body = ErrorBody,
            example = super::examples::step_out_of_turn),
    )
)]
pub async fn delivered(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    request: OptionalBody<Note>,
) -> Result<Response> {
    driver_step(state, id, request, Fulfill::Deliver).await
}

/// Query parameters of a store's feed.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedParams {
    /// `cursor` from the last answer. Without it, the answer lists the
    /// store's live orders at once, with the cursor to follow from.
    #[param(value_type = Option<u64>, example = 17)]
    pub after: Option<String>,
    /// Seconds to wait for a change: as `/track`'s `timeout` (default 30,
    /// `0` answers at once, larger values are clamped).
    #[param(value_type = Option<u64>, example = 30)]
    pub timeout: Option<String>,
    /// Orders per answer, 1 to 500 (default 100).
    #[param(value_type = Option<u64>, example = 100)]
    pub limit: Option<String>,
}

/// A store feed's answer.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "success": true,
    "has_update": true,
    "cursor": 18,
    "more": false,
    "timeout": 30,
    "orders": [super::examples::order()]
}))]
pub struct FeedResponse {
    pub success: bool,
    /// Whether `orders` holds anything.
    pub has_update: bool,
    /// Send back as `after`.
    pub cursor: u64,
    /// The page was full: ask again at once for the rest.
    pub more: bool,
    /// The wait that was granted, in seconds.
    pub timeout: u64,
    /// The store's orders that changed, each at its latest version (as
    /// `GET /api/v1/orders/{id}` shows it), in change order.
    #[schema(value_type = Vec<crate::domain::Order>)]
    pub orders: Vec<Box<serde_json::value::RawValue>>,
}

/// Follow a store's orders (for the store's tablet).
///
/// Long-polls for the store's orders that changed after `after`: new
/// orders first of all. Answers at once when there are some, else waits
/// up to `timeout` for one. Without `after`, answers at once with the
/// store's live orders. A `submitted` order delivered here becomes
/// `store_notified` (seed 003's store notification), so the customer sees
/// that the store has it.
#[utoipa::path(
    get,
    path = "/tracking/store/{store_id}/orders",
    tag = "store",
    params(("store_id" = String, Path, description = "The store", example = "store-17"), FeedParams),
    responses(
        (status = 200, description = "Changed orders, or none when the wait ended quietly.", body = FeedResponse),
        (status = 400, description = "A parameter could not be read.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_parameter", "message": "after must be a whole non-negative number, got 'x'"})),
        (status = 429, description = "Too many feeds wait on this store.", body = ErrorBody,
            example = json!({"success": false, "error": "too_many_pollers", "message": "this order already has 10 parked polls, the most allowed"})),
        (status = 503, description = "The server holds as many parked polls as it may.", body = ErrorBody,
            example = json!({"success": false, "error": "server_busy", "message": "the server already holds 16384 parked polls, the most allowed"})),
    )
)]
pub async fn store_orders(
    State(state): State<AppState>,
    Path(store_id): Path<String>,
    AppQuery(params): AppQuery<FeedParams>,
) -> Result<Response> {
    let store = store_path(store_id)?;
    let after = whole_param("after", params.after.as_deref())?;
    let limit = match whole_param("limit", params.limit.as_deref())? {
        None => crate::orders::DEFAULT_FEED_PAGE,
        Some(limit @ 1..) if limit <= crate::orders::MAX_FEED_PAGE as u64 => limit as usize,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "limit must be between 1 and {}, got {other}",
                crate::orders::MAX_FEED_PAGE
            )))
        }
    };
    let timeout = state
        .service
        .poll_timeout(params.timeout.as_deref())
        .map_err(|err| ApiError::InvalidParameter(err.to_string()))?;
    let feed = state
        .service
        .store_feed(&store, after, timeout, limit)
        .await
        .map_err(|err| match err {
            ServiceError::Poll(error) => ApiError::Busy {
                error,
                retry_after: state.retry_after,
            },
            other => ApiError::Service(other),
        })?;
    let body = FeedResponse {
        success: true,
        has_update: feed.has_update,
        cursor: feed.cursor,
        more: feed.more,
        timeout: timeout.applied_secs,
        orders: feed
            .orders
            .iter()
            .map(|snapshot| snapshot.json().to_owned())
            .collect(),
    };
    Ok(axum::Json(body).into_response())
}
