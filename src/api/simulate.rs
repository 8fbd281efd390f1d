//! The workflow simulator, for demos and tests.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, Result};
use super::extract::{AppQuery, Idempotency, OrderPath};
use super::idempotent;
use super::AppState;
use crate::domain::{OrderId, TimeScale};
use crate::sim::Plan;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/orders/{id}/simulate-workflow",
        post(start_simulation).delete(cancel_simulation),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SimulateParams {
    /// How many times faster than real time to run, from 0.01 (55 hours) to
    /// 100000 (about 20 ms). Default 1 (the real 33-minute timeline).
    #[param(value_type = Option<f64>, example = 60, minimum = 0.01, maximum = 100000.0)]
    pub speed: Option<String>,
    /// `true`: while picking, the store proposes one substitution and the
    /// customer approves it (`substitutions_needed`, then
    /// `substitutions_approved`), within the same 15 minutes of
    /// preparation. Default `false`.
    #[param(value_type = Option<bool>, example = true)]
    pub substitutions: Option<String>,
}

/// A started simulation.
#[derive(Serialize, ToSchema)]
#[schema(example = super::examples::simulation_started)]
pub struct SimulationStarted {
    /// Always `true`.
    pub success: bool,
    pub message: &'static str,
    pub data: Plan,
}

/// A cancelled simulation.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"success": true, "message": "Workflow simulation cancelled", "order_id": "101"}))]
pub struct SimulationCancelled {
    /// Always `true`.
    pub success: bool,
    pub message: &'static str,
    pub order_id: OrderId,
}

/// Simulate the fulfillment workflow.
///
/// Drives the order from its current fine status along seed 003's
/// lifecycle, keeping the seed's coarse timeline: submitted (1 min) →
/// store_notified (2) → store_acknowledged (2) → picking_in_progress (13)
/// → ready_for_pickup (2) → driver_assigned (3) → driver_pickup_complete
/// (1) → in_transit (9) → delivered; so confirmed lasts 3 minutes,
/// preparing 15, ready 5 and picked_up 10. With `substitutions=true`,
/// picking (6) is followed by substitutions_needed (4) and
/// substitutions_approved (3). Each step is the command the store, the
/// customer, dispatch or the driver would send (`updated_by: simulator`),
/// so parked polls wake. A simulated driver is assigned, and while
/// `in_transit` reports a fix every 15 s (scaled) along a 1.2 km straight
/// route to the live-location channel, the last at the drop-off; fixes
/// change no version. `speed=N` runs it all N times faster. One simulation
/// per order at a time; steps someone else already took are skipped.
///
/// With an `Idempotency-Key`, a retry within 24 hours replays the first
/// answer (`Idempotent-Replayed: true`) instead of a 409; the same key with
/// another query is 422.
#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/simulate-workflow",
    tag = "simulation",
    params(("id" = OrderId, Path, description = "Order id", example = "101"), SimulateParams,
        ("Idempotency-Key" = Option<String>, Header, description = "A unique key per logical request (a UUID): a retry with the same key and request within 24 hours replays the first successful answer instead of repeating it", example = "5d1f4c1e-8a0b-4d7a-9c2e-3f6b7a8c9d01")),
    responses(
        (status = 202, description = "Started; the body is the timeline it will follow (or, for a repeated `Idempotency-Key`, the first answer replayed).", body = SimulationStarted,
            headers(("Idempotent-Replayed" = String, description = "`true` when this answer replays an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "`speed` is not a number from 0.01 to 100000, `substitutions` is not `true` or `false`, an unknown parameter was sent, or the `Idempotency-Key` is malformed. Nothing is started.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_parameter", "message": "speed must be a number from 0.01 to 100000 (times real time), got '1e-300'"})),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = json!({"success": false, "error": "order_not_found", "message": "order 999 not found"})),
        (status = 409, description = "A simulation is already running for this order, the order is final, or it is still `requested` (`order_not_confirmed`: its timeline starts when a seller's proposal is accepted); or a request with the same `Idempotency-Key` is still in progress (`idempotency_key_in_flight`).", body = ErrorBody,
            example = json!({"success": false, "error": "simulation_running", "message": "a workflow simulation is already running for order 101"})),
        (status = 422, description = "The `Idempotency-Key` was already used for a different request (another body or query) to this endpoint.", body = ErrorBody,
            example = json!({"success": false, "error": "idempotency_key_reused", "message": "Idempotency-Key 'a1b2' was already used for a different request to this endpoint; use a new key for a new request"})),
    )
)]
pub async fn start_simulation(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    AppQuery(params): AppQuery<SimulateParams>,
    Idempotency(key): Idempotency,
) -> Result<Response> {
    let speed = match params.speed.as_deref() {
        None => TimeScale::REAL_TIME,
        Some(text) => TimeScale::parse(text)?,
    };
    let substitutions = match params.substitutions.as_deref().map(str::trim) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "substitutions must be true or false, got '{other}'"
            )))
        }
    };
    let simulator = state.simulator.clone();
    idempotent::once(&state.service, key, |_| async move {
        let plan = simulator.start(&id, speed, substitutions).await?;
        let body = SimulationStarted {
            success: true,
            message: "Workflow simulation started",
            data: plan,
        };
        Ok((StatusCode::ACCEPTED, Json(body)).into_response())
    })
    .await
}

/// Cancel a running simulation. The order stays in its current status.
///
/// With an `Idempotency-Key`, a retry within 24 hours replays the first
/// answer (`Idempotent-Replayed: true`) instead of a 404.
#[utoipa::path(
    delete,
    path = "/api/v1/orders/{id}/simulate-workflow",
    tag = "simulation",
    params(("id" = OrderId, Path, description = "Order id", example = "101"),
        ("Idempotency-Key" = Option<String>, Header, description = "A unique key per logical request (a UUID): a retry with the same key and request within 24 hours replays the first successful answer instead of repeating it", example = "5d1f4c1e-8a0b-4d7a-9c2e-3f6b7a8c9d01")),
    responses(
        (status = 200, description = "Cancelled (or, for a repeated `Idempotency-Key`, the first answer replayed).", body = SimulationCancelled,
            headers(("Idempotent-Replayed" = String, description = "`true` when this answer replays an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "The id is not a valid order id, or the `Idempotency-Key` is malformed.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_parameter", "message": "Idempotency-Key must be 1 to 255 visible ASCII characters, such as a UUID"})),
        (status = 404, description = "No simulation is running for this order.", body = ErrorBody,
            example = json!({"success": false, "error": "simulation_not_running", "message": "no workflow simulation is running for order 101"})),
        (status = 409, description = "A request with the same `Idempotency-Key` is still in progress.", body = ErrorBody,
            example = json!({"success": false, "error": "idempotency_key_in_flight", "message": "a request with Idempotency-Key 'a1b2' is still in progress; retry once it has finished"})),
        (status = 422, description = "The `Idempotency-Key` was already used for a different request (another body or query) to this endpoint.", body = ErrorBody,
            example = json!({"success": false, "error": "idempotency_key_reused", "message": "Idempotency-Key 'a1b2' was already used for a different request to this endpoint; use a new key for a new request"})),
    )
)]
pub async fn cancel_simulation(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    Idempotency(key): Idempotency,
) -> Result<Response> {
    let simulator = state.simulator.clone();
    idempotent::once(&state.service, key, |_| async move {
        simulator.cancel(&id).await?;
        Ok(Json(SimulationCancelled {
            success: true,
            message: "Workflow simulation cancelled",
            order_id: id,
        })
        .into_response())
    })
    .await
}
