//! The processor's own diagnostics: what it holds for each order request.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::error::{ErrorBody, Result};
use super::extract::OrderPath;
use super::AppState;
use crate::domain::OrderId;
use crate::requests::processor::{ProcessorOrderReqObj, ProcessorStatus};
use crate::requests::transport::ProcessorError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/processor/tracking/status", get(processor_status))
        .route(
            "/api/v1/processor/tracking/{order_req_id}",
            get(processor_details),
        )
}

/// Tracking status of the processor.
///
/// How many order requests the processor holds a record of, how many rounds
/// are processing now, how many processing streams were opened since start
/// (one per started initiate, since this start), and the ids. The records
/// survive a restart.
#[utoipa::path(
    get,
    path = "/api/v1/processor/tracking/status",
    tag = "processor",
    responses((status = 200, description = "Counts and ids.", body = ProcessorStatus))
)]
pub async fn processor_status(State(state): State<AppState>) -> Result<Json<ProcessorStatus>> {
    Ok(Json(state.processor.status().await?))
}

/// The processor's record of one order request.
///
/// Its `ProcessorOrderReqObj`: the current round's state, the sellers asked
/// (`seller_dict_arr`), the proposals received and which was accepted
/// (`proposal_dict_arr`), the follow-up notes delivered to it
/// (`notes_dict_arr`), `queue_name` and `expiry`. Sellers and proposals are
/// simulated.
#[utoipa::path(
    get,
    path = "/api/v1/processor/tracking/{order_req_id}",
    tag = "processor",
    params(("order_req_id" = OrderId, Path, description = "Order request id", example = "TEST001")),
    responses(
        (status = 200, description = "The processor's record.", body = ProcessorOrderReqObj),
        (status = 400, description = "The id is not a valid order request id.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_order_id", "message": "order id may only contain letters, digits, '_', '-' and '.', found ' '"})),
        (status = 404, description = "The processor has no such order request.", body = ErrorBody,
            example = json!({"success": false, "error": "request_not_found", "message": "the processor has no order request NOPE"})),
    )
)]
pub async fn processor_details(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
) -> Result<Json<ProcessorOrderReqObj>> {
    state
        .processor
        .record(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ProcessorError::UnknownRequest(id).into())
}
