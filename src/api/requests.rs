//! The requestor's endpoints (seeds 000 and 001): initiate, follow up, stop,
//! and the tracking diagnostics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, Result};
use super::extract::{AppQuery, Idempotency, KeyedJson, OrderPath};
use super::idempotent::{self, AnswerKept};
use super::AppState;
use crate::domain::{OrderId, TimeScale};
use crate::orders::Answer;
use crate::requests::model::{FollowUpInput, InitiateInput};
use crate::requests::requestor::{NotesDictObj, TrackingDetails, TrackingStatus};
use crate::requests::{FollowUpKey, Initiated, ProcessingOptions, RequestError};

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
///
/// With an `Idempotency-Key`, a retry within 24 hours replays the first
/// answer (`Idempotent-Replayed: true`); the same key with another body or
/// query is 422.
#[utoipa::path(
    post,
    path = "/api/v1/orders/initiate",
    tag = "order requests",
    params(InitiateParams, ("Idempotency-Key" = Option<String>, Header, description = "A unique key per logical request (a UUID): a retry with the same key and request within 24 hours replays the first successful answer instead of repeating it", example = "5d1f4c1e-8a0b-4d7a-9c2e-3f6b7a8c9d01")),
    request_body = InitiateInput,
    responses(
        (status = 200, description = "Started, or already being processed (see `message`); or, for a repeated `Idempotency-Key`, the first answer replayed.", body = InitiateResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this answer replays an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "Malformed JSON, a missing or unknown field, or invalid values (`validation_failed` lists them all); or a bad `speed` (not from 0.01 to 100000), `scenario` or `Idempotency-Key` (`invalid_parameter`). Nothing is created or tracked.", body = ErrorBody,
            example = json!({"success": false, "error": "validation_failed", "message": "invalid initiate request: session_id must be 1 to 64 characters, got 0; notification_type must be one of email, sms, push, got 'fax'"})),
        (status = 409, description = "The id belongs to an order that is no longer `requested`; or a request with the same `Idempotency-Key` is still in progress (`idempotency_key_in_flight`).", body = ErrorBody,
            example = json!({"success": false, "error": "request_settled", "message": "order TEST001 is confirmed, so its request is settled; only a requested order can be processed again"})),
        (status = 415, description = "The body was not sent as JSON.", body = ErrorBody,
            example = json!({"success": false, "error": "unsupported_media_type", "message": "send the body as JSON with the header Content-Type: application/json"})),
        (status = 422, description = "The `Idempotency-Key` was already used for a different request (another body or query) to this endpoint.", body = ErrorBody,
            example = json!({"success": false, "error": "idempotency_key_reused", "message": "Idempotency-Key 'a1b2' was already used for a different request to this endpoint; use a new key for a new request"})),
    )
)]
pub async fn initiate(
    State(state): State<AppState>,
    AppQuery(params): AppQuery<InitiateParams>,
    request: KeyedJson<InitiateInput>,
) -> Result<Response> {
    let options = options(params)?;
    let input = request
        .body
        .parse()
        .map_err(|err| RequestError::invalid("initiate request", err))?;
    let requestor = state.requestor.clone();
    idempotent::once(&state.service, request.idempotency, |_| async move {
        let order_req_id = input.order_req_id.clone();
        let session_id = input.session.clone();
        let message = match requestor.initiate(input, options).await? {
            Initiated::Started => "Order initiated successfully",
            Initiated::AlreadyProcessing => "Order already being processed",
        };
        Ok(Json(InitiateResponse {
            success: true,
            message,
            order_req_id,
            session_id,
        })
        .into_response())
    })
    .await
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
#[schema(example = json!({"success": true, "message": "Follow-up processed successfully", "order_req_id": "TEST001", "follow_up_id": "FU001"}))]
pub struct FollowUpResponse {
    /// Always `true`.
    pub success: bool,
    /// `Follow-up processed successfully`.
    pub message: &'static str,
    /// The request the follow-up was added to.
    pub order_req_id: OrderId,
    /// The id the follow-up got (`FU001`, `FU002`, … per request), as
    /// the tracking endpoints list it. Not in seed 001's answer: it tells a
    /// client which note its request made, also when the answer is replayed.
    pub follow_up_id: String,
}

/// Add a follow-up to an order request.
///
/// Gives the follow-up a `follow_up_id` (`FU001`, `FU002`, … per request),
/// delivers it to the processor's copy of the request, then adds it to the
/// request's notes. Both `GET /api/v1/orders/tracking/{order_req_id}` and
/// `GET /api/v1/processor/tracking/{order_req_id}` show it. `text` messages
/// need words; `image`, `audio`, `video` and `document` need at least one URL.
///
/// With an `Idempotency-Key`, the answer is stored in the same write as the
/// note, and a retry within 24 hours replays it (same `follow_up_id`,
/// `Idempotent-Replayed: true`) without adding a second note; the same key
/// with another body is 422.
#[utoipa::path(
    post,
    path = "/api/v1/orders/followup",
    tag = "order requests",
    params(("Idempotency-Key" = Option<String>, Header, description = "A unique key per logical request (a UUID): a retry with the same key and request within 24 hours replays the first successful answer instead of repeating it", example = "5d1f4c1e-8a0b-4d7a-9c2e-3f6b7a8c9d01")),
    request_body = FollowUpInput,
    responses(
        (status = 200, description = "Added on both sides (or, for a repeated `Idempotency-Key`, the first answer replayed: no second note).", body = FollowUpResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this answer replays an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "Malformed JSON, a missing or unknown field, an empty audience, an unknown `message_type`, other invalid values, or a malformed `Idempotency-Key`.", body = ErrorBody,
            example = json!({"success": false, "error": "validation_failed", "message": "invalid follow-up: audience must name 1 to 50 sellers, got 0"})),
        (status = 404, description = "No such order request is tracked.", body = ErrorBody,
            example = json!({"success": false, "error": "request_not_found", "message": "order request NOPE is not tracked; initiate it first"})),
        (status = 409, description = "A request with the same `Idempotency-Key` is still in progress.", body = ErrorBody,
            example = json!({"success": false, "error": "idempotency_key_in_flight", "message": "a request with Idempotency-Key 'a1b2' is still in progress; retry once it has finished"})),
        (status = 415, description = "The body was not sent as JSON.", body = ErrorBody,
            example = json!({"success": false, "error": "unsupported_media_type", "message": "send the body as JSON with the header Content-Type: application/json"})),
        (status = 422, description = "The `Idempotency-Key` was already used for a different request (another body or query) to this endpoint.", body = ErrorBody,
            example = json!({"success": false, "error": "idempotency_key_reused", "message": "Idempotency-Key 'a1b2' was already used for a different request to this endpoint; use a new key for a new request"})),
        (status = 502, description = "The processor refused the follow-up; nothing was added. The message is generic; the cause is logged.", body = ErrorBody,
            example = json!({"success": false, "error": "processor_error", "message": "the server hit an unexpected problem; it has been logged"})),
    )
)]
pub async fn follow_up(
    State(state): State<AppState>,
    request: KeyedJson<FollowUpInput>,
) -> Result<Response> {
    let draft = request
        .body
        .parse()
        .map_err(|err| RequestError::invalid("follow-up", err))?;
    let requestor = state.requestor.clone();
    idempotent::once(&state.service, request.idempotency, |claim| async move {
        let order_req_id = draft.order_req_id.clone();
        let keyed = claim.is_some();
        // The answer is kept in the same write as the note.
        let key = claim.map(|claim| {
            let order_req_id = order_req_id.clone();
            FollowUpKey {
                claim,
                answer: Box::new(move |note: &NotesDictObj| Answer {
                    status: StatusCode::OK.as_u16(),
                    body: follow_up_answer(order_req_id, note),
                }),
            }
        });
        let note = requestor.follow_up(draft, key).await?;
        let mut response =
            idempotent::json_answer(StatusCode::OK, follow_up_answer(order_req_id, &note));
        if keyed {
            response.extensions_mut().insert(AnswerKept);
        }
        Ok(response)
    })
    .await
}

/// The body of a follow-up's answer.
fn follow_up_answer(order_req_id: OrderId, note: &NotesDictObj) -> Vec<u8> {
    let body = FollowUpResponse {
        success: true,
        message: "Follow-up processed successfully",
        order_req_id,
        follow_up_id: note.follow_up_id.clone(),
    };
    // Invariant: a struct of strings always serializes.
    serde_json::to_vec(&body).expect("a follow-up answer serializes")
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
pub async fn tracking_status(State(state): State<AppState>) -> Result<Json<TrackingStatus>> {
    Ok(Json(state.requestor.status().await?))
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
        .await?
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
///
/// With an `Idempotency-Key`, a retry within 24 hours replays the first
/// answer (`Idempotent-Replayed: true`) instead of a 409.
#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/stop",
    tag = "order requests",
    params(("id" = OrderId, Path, description = "Order request id", example = "TEST001"),
        ("Idempotency-Key" = Option<String>, Header, description = "A unique key per logical request (a UUID): a retry with the same key and request within 24 hours replays the first successful answer instead of repeating it", example = "5d1f4c1e-8a0b-4d7a-9c2e-3f6b7a8c9d01")),
    responses(
        (status = 200, description = "Stopped (or, for a repeated `Idempotency-Key`, the first answer replayed).", body = StopResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this answer replays an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "The id is not a valid order request id, or the `Idempotency-Key` is malformed.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_order_id", "message": "order id may only contain letters, digits, '_', '-' and '.', found ' '"})),
        (status = 404, description = "No such order request is tracked.", body = ErrorBody,
            example = json!({"success": false, "error": "request_not_found", "message": "order request NOPE is not tracked; initiate it first"})),
        (status = 409, description = "The request has no active processing stream; or a request with the same `Idempotency-Key` is still in progress (`idempotency_key_in_flight`).", body = ErrorBody,
            example = json!({"success": false, "error": "stream_not_active", "message": "order request TEST001 has no active processing stream"})),
        (status = 422, description = "The `Idempotency-Key` was already used for a different request (another body or query) to this endpoint.", body = ErrorBody,
            example = json!({"success": false, "error": "idempotency_key_reused", "message": "Idempotency-Key 'a1b2' was already used for a different request to this endpoint; use a new key for a new request"})),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    Idempotency(key): Idempotency,
) -> Result<Response> {
    let requestor = state.requestor.clone();
    idempotent::once(&state.service, key, |_| async move {
        let ended = requestor.stop(&id).await?;
        Ok(Json(StopResponse {
            success: true,
            message: if ended {
                "Processing stopped"
            } else {
                "Stop requested; the stream is still ending"
            },
            is_stream_active: requestor.is_stream_active(&id),
            order_req_id: id,
        })
        .into_response())
    })
    .await
}
