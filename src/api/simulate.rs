//! The workflow simulator, for demos and tests.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ErrorBody, Result};
use super::extract::{AppQuery, OrderPath};
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

/// Simulate the restaurant workflow.
///
/// Drives the order from its current status along the seed's timeline:
/// confirmed (3 min) → preparing (15 min) → ready (5 min) → picked_up
/// (10 min) → delivered. Each step goes through the same path as a status
/// PUT, so parked polls wake. `speed=N` runs it N times faster. One
/// simulation per order at a time; steps someone else already took are skipped.
#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/simulate-workflow",
    tag = "simulation",
    params(("id" = OrderId, Path, description = "Order id", example = "101"), SimulateParams),
    responses(
        (status = 202, description = "Started; the body is the timeline it will follow.", body = SimulationStarted),
        (status = 400, description = "`speed` is not a number from 0.01 to 100000, or an unknown parameter was sent. Nothing is started.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_parameter", "message": "speed must be a number from 0.01 to 100000 (times real time), got '1e-300'"})),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = json!({"success": false, "error": "order_not_found", "message": "order 999 not found"})),
        (status = 409, description = "A simulation is already running for this order, the order is final, or it is still `requested` (`order_not_confirmed`: its timeline starts when a seller's proposal is accepted).", body = ErrorBody,
            example = json!({"success": false, "error": "simulation_running", "message": "a workflow simulation is already running for order 101"})),
    )
)]
pub async fn start_simulation(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    AppQuery(params): AppQuery<SimulateParams>,
) -> Result<Response> {
    let speed = match params.speed.as_deref() {
        None => TimeScale::REAL_TIME,
        Some(text) => TimeScale::parse(text)?,
    };
    let plan = state.simulator.start(&id, speed).await?;
    let body = SimulationStarted {
        success: true,
        message: "Workflow simulation started",
        data: plan,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Cancel a running simulation. The order stays in its current status.
#[utoipa::path(
    delete,
    path = "/api/v1/orders/{id}/simulate-workflow",
    tag = "simulation",
    params(("id" = OrderId, Path, description = "Order id", example = "101")),
    responses(
        (status = 200, description = "Cancelled.", body = SimulationCancelled),
        (status = 404, description = "No simulation is running for this order.", body = ErrorBody,
            example = json!({"success": false, "error": "simulation_not_running", "message": "no workflow simulation is running for order 101"})),
    )
)]
pub async fn cancel_simulation(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
) -> Result<Json<SimulationCancelled>> {
    state.simulator.cancel(&id)?;
    Ok(Json(SimulationCancelled {
        success: true,
        message: "Workflow simulation cancelled",
        order_id: id,
    }))
}
