//! The requestor's endpoints (seeds 000 and 001): initiate, follow up, stop,
//! and the tracking diagnostics.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, Result};
use super::extract::{AppJson, AppQuery, OrderPath};
use super::AppState;
use crate::domain::{OrderId, TimeScale};
use crate::requests::model::{FollowUpInput, InitiateInput};
use crate::requests::requestor::{TrackingDetails, TrackingStatus};
use crate::requests::{Initiated, ProcessingOptions, RequestError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orders/initiate", post(initiate))
        .route("/api/v1/orders/followup", post(follow_up))
        .route("/api/v1/orders/tracking/status", get(tracking_status))
        .route(
            "/api/v1/orders/tracking/{order_req_id}",
            get(tracking_details),
        )
        // `{id}`, not `{order_req_id}`: routes beside it under
        // `/api/v1/orders/` must name the segment alike.
        .route("/api/v1/orders/{id}/stop", post(stop))
}

/// Knobs for the simulated sellers; the request body stays seed 001's.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InitiateParams {
    /// How many times faster than real time the simulated sellers answer,
    /// from 0.01 to 100000. Default: the server's `--processing-speed` (1
    /// unless set), where a request is decided 6 minutes after it is
    /// initiated.
    #[param(value_type = Option<f64>, example = 60, minimum = 0.01, maximum = 100000.0)]
    pub speed: Option<String>,
    /// How the simulated sellers behave: `accept` (default: three sellers
    /// propose, the quickest is accepted and the order is confirmed),
    /// `expire` (nobody proposes; the order expires after 15 minutes, scaled)
    /// or `fail` (the processor fails after selecting sellers; the stream
    /// ends with an error and the order stays requested).
    #[param(value_type = Option<String>, example = "accept")]
    pub scenario: Option<String>,
}

/// The answer to an initiate, new or duplicate.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "success": true,
    "message": "Order initiated successfully",
    "order_req_id": "TEST001",
    "session_id": "sess_test_001"
}))]
pub struct InitiateResponse {
    /// Always `true`, also for a duplicate.
    pub success: bool,
    /// `Order initiated successfully`, or `Order already being processed`
    /// when a stream for the id is already active (none is started).
    pub message: &'static str,
    /// The request the answer is about.
    pub order_req_id: OrderId,
    /// The `session_id` sent.
    pub session_id: String,
}

/// Initiate an order request.
///
/// Starts one processing stream for the request: the processor selects
/// sellers, collects their proposals and accepts the quickest (or the request
/// expires). The request becomes a customer order at once, trackable at
/// `GET /api/v1/orders/{order_req_id}/track`: `requested` while sellers are
/// sought (its `seller_search` counts sellers contacted and proposals
/// received, and each change wakes parked polls), then `confirmed` with the
/// accepted seller as `restaurant_name`, or `expired`.
///
/// If a stream for the id is already active the answer is
/// `Order already being processed` and no second stream starts, however many
/// initiates arrive at once. An id whose stream has ended may be initiated
/// again: a still-`requested` order starts a new round (`seller_search.attempt`
/// grows); a settled one (confirmed and beyond, cancelled, expired) is 409.
///
/// `customer_id` defaults to `session_id`; `delivery_address` and `items` are
/// optional (empty when absent). Sellers are simulated: `speed` and
/// `scenario` steer them.
#[utoipa::path(
    post,
    path = "/api/v1/orders/initiate",
    tag = "order requests",
    params(InitiateParams),
    request_body = InitiateInput,
    responses(
        (status = 200, description = "Started, or already being processed (see `message`).", body = InitiateResponse),
        (status = 400, description = "Malformed JSON, a missing or unknown field, or invalid values (`validation_failed` lists them all); or a bad `speed` (not from 0.01 to 100000) or `scenario` (`invalid_parameter`). Nothing is created or tracked.", body = ErrorBody,
            example = json!({"success": false, "error": "validation_failed", "message": "invalid initiate request: session_id must be 1 to 64 characters, got 0; notification_type must be one of email, sms, push, got 'fax'"})),
        (status = 409, description = "The id belongs to an order that is no longer `requested`.", body = ErrorBody,
            example = json!({"success": false, "error": "request_settled", "message": "order TEST001 is confirmed, so its request is settled; only a requested order can be processed again"})),
        (status = 415, description = "The body was not sent as JSON.", body = ErrorBody,
            example = json!({"success": false, "error": "unsupported_media_type", "message": "send the body as JSON with the header Content-Type: application/json"})),
    )
)]
pub async fn initiate(
    State(state): State<AppState>,
    AppQuery(params): AppQuery<InitiateParams>,
    AppJson(input): AppJson<InitiateInput>,
) -> Result<Json<InitiateResponse>> {
    let options = options(params)?;
    let request = input
        .parse()
        .map_err(|err| RequestError::invalid("initiate request", err))?;
    let order_req_id = request.order_req_id.clone();
    let session_id = request.session.clone();
    let message = match state.requestor.initiate(request, options).await? {
        Initiated::Started => "Order initiated successfully",
        Initiated::AlreadyProcessing => "Order already being processed",
    };
    Ok(Json(InitiateResponse {
        success: true,
        message,
        order_req_id,
        session_id,
    }))
}

fn options(params: InitiateParams) -> Result<ProcessingOptions> {
    let speed = params.speed.as_deref().map(TimeScale::parse).transpose()?;
    let scenario = params
        .scenario
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|err: crate::requests::sellers::BadScenario| {
            ApiError::InvalidParameter(err.to_string())
        })?
        .unwrap_or_default();
    Ok(ProcessingOptions { speed, scenario })
}

/// The answer to a follow-up.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"success": true, "message": "Follow-up processed successfully", "order_req_id": "TEST001"}))]
pub struct FollowUpResponse {
    /// Always `true`.
    pub success: bool,
    /// `Follow-up processed successfully`.
    pub message: &'static str,
    /// The request the follow-up was added to.
    pub order_req_id: OrderId,
}

/// Add a follow-up to an order request.
///
/// Gives the follow-up a `follow_up_id` (`FU001`, `FU002`, … per request),
/// delivers it to the processor's copy of the request, then adds it to the
/// request's notes. Both `GET /api/v1/orders/tracking/{order_req_id}` and
/// `GET /api/v1/processor/tracking/{order_req_id}` show it. `text` messages
/// need words; `image`, `audio`, `video` and `document` need at least one URL.
#[utoipa::path(
    post,
    path = "/api/v1/orders/followup",
    tag = "order requests",
    request_body = FollowUpInput,
    responses(
        (status = 200, description = "Added on both sides.", body = FollowUpResponse),
        (status = 400, description = "Malformed JSON, a missing or unknown field, an empty audience, an unknown `message_type`, or other invalid values.", body = ErrorBody,
            example = json!({"success": false, "error": "validation_failed", "message": "invalid follow-up: audience must name 1 to 50 sellers, got 0"})),
        (status = 404, description = "No such order request is tracked.", body = ErrorBody,
            example = json!({"success": false, "error": "request_not_found", "message": "order request NOPE is not tracked; initiate it first"})),
        (status = 415, description = "The body was not sent as JSON.", body = ErrorBody,
            example = json!({"success": false, "error": "unsupported_media_type", "message": "send the body as JSON with the header Content-Type: application/json"})),
        (status = 502, description = "The processor refused the follow-up; nothing was added. The message is generic; the cause is logged.", body = ErrorBody,
            example = json!({"success": false, "error": "processor_error", "message": "the server hit an unexpected problem; it has been logged"})),
    )
)]
pub async fn follow_up(
    State(state): State<AppState>,
    AppJson(input): AppJson<FollowUpInput>,
) -> Result<Json<FollowUpResponse>> {
    let draft = input
        .parse()
        .map_err(|err| RequestError::invalid("follow-up", err))?;
    let order_req_id = draft.order_req_id.clone();
    state.requestor.follow_up(draft).await?;
    Ok(Json(FollowUpResponse {
        success: true,
        message: "Follow-up processed successfully",
        order_req_id,
    }))
}

/// Tracking status of the requestor.
///
/// How many requests are tracked, how many processing streams are active
/// now, and the tracked ids. Requests survive a restart; a stream that was
/// running then is resumed.
#[utoipa::path(
    get,
    path = "/api/v1/orders/tracking/status",
    tag = "order requests",
    responses((status = 200, description = "Counts and ids.", body = TrackingStatus))
)]
pub async fn tracking_status(State(state): State<AppState>) -> Json<TrackingStatus> {
    Json(state.requestor.status())
}

/// Tracking details of one order request.
///
/// Its session, whether its processing stream is active, and its follow-up
/// notes. The customer order itself is at `GET /api/v1/orders/{order_req_id}`.
#[utoipa::path(
    get,
    path = "/api/v1/orders/tracking/{order_req_id}",
    tag = "order requests",
    params(("order_req_id" = OrderId, Path, description = "Order request id", example = "TEST001")),
    responses(
        (status = 200, description = "The request as the requestor tracks it.", body = TrackingDetails),
        (status = 400, description = "The id is not a valid order request id.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_order_id", "message": "order id may only contain letters, digits, '_', '-' and '.', found ' '"})),
        (status = 404, description = "No such order request is tracked.", body = ErrorBody,
            example = json!({"success": false, "error": "request_not_found", "message": "order request NOPE is not tracked; initiate it first"})),
    )
)]
pub async fn tracking_details(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
) -> Result<Json<TrackingDetails>> {
    state
        .requestor
        .details(&id)
        .map(Json)
        .ok_or_else(|| RequestError::NotFound(id).into())
}

/// The answer to a stop.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"success": true, "message": "Processing stopped", "order_req_id": "TEST001", "is_stream_active": false}))]
pub struct StopResponse {
    /// Always `true`.
    pub success: bool,
    /// `Processing stopped`, or `Stop requested; the stream is still ending`
    /// if it had not ended within 5 seconds.
    pub message: &'static str,
    /// The request whose stream was stopped.
    pub order_req_id: OrderId,
    /// Whether the stream is still active.
    pub is_stream_active: bool,
}

/// Stop an order request's processing stream.
///
/// Cancels the stream and answers once it has ended (at most 5 seconds).
/// The customer order stays as it is (`requested`): initiate the request
/// again to start a new round, or cancel the order with a status change.
#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/stop",
    tag = "order requests",
    params(("id" = OrderId, Path, description = "Order request id", example = "TEST001")),
    responses(
        (status = 200, description = "Stopped.", body = StopResponse),
        (status = 400, description = "The id is not a valid order request id.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_order_id", "message": "order id may only contain letters, digits, '_', '-' and '.', found ' '"})),
        (status = 404, description = "No such order request is tracked.", body = ErrorBody,
            example = json!({"success": false, "error": "request_not_found", "message": "order request NOPE is not tracked; initiate it first"})),
        (status = 409, description = "The request has no active processing stream.", body = ErrorBody,
            example = json!({"success": false, "error": "stream_not_active", "message": "order request TEST001 has no active processing stream"})),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
) -> Result<Json<StopResponse>> {
    let ended = state.requestor.stop(&id).await?;
    Ok(Json(StopResponse {
        success: true,
        message: if ended {
            "Processing stopped"
        } else {
            "Stop requested; the stream is still ending"
        },
        is_stream_active: state.requestor.is_stream_active(&id),
        order_req_id: id,
    }))
}
