//! Health and live system figures.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ErrorBody, Result};
use super::AppState;
use crate::domain::{OrderStatus, Timestamp};
use crate::requests::requestor::RequestStats;
use crate::tracking::HubStats;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/orders/system/stats", get(stats))
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "healthy"}))]
pub struct Health {
    pub status: &'static str,
}

/// Liveness check.
#[utoipa::path(get, path = "/api/v1/health", tag = "system", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "healthy" })
}

/// Live figures of the server.
#[derive(Serialize, ToSchema)]
pub struct SystemStats {
    /// When the server started.
    pub started_at: Timestamp,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Parked polls now, the caps, and what happened to the polls served.
    pub long_polls: HubStats,
    /// Orders known, in total.
    pub orders_total: u64,
    /// Orders in each status (every status listed, zeros included).
    pub orders_by_status: BTreeMap<OrderStatus, u64>,
    /// The `next_poll_interval` sent for each status, in seconds.
    pub next_poll_intervals: BTreeMap<OrderStatus, u64>,
    /// Workflow simulations running now.
    pub simulations_running: usize,
    /// Order requests: tracked, streams active, started, duplicates
    /// prevented, and how streams ended.
    pub order_requests: RequestStats,
}

#[derive(Serialize, ToSchema)]
#[schema(example = super::examples::stats_response)]
pub struct StatsResponse {
    /// Always `true`.
    pub success: bool,
    pub data: SystemStats,
}

/// System statistics: parked polls (total and busiest orders), caps, poll
/// outcomes, status updates published, orders by status, uptime, and order
/// requests (streams started, duplicates prevented, how streams ended).
#[utoipa::path(
    get,
    path = "/api/v1/orders/system/stats",
    tag = "system",
    responses(
        (status = 200, body = StatsResponse),
        (status = 500, description = "The store could not be read.", body = ErrorBody,
            example = json!({"success": false, "error": "internal_error", "message": "the server hit an unexpected problem; it has been logged"})),
    )
)]
pub async fn stats(State(state): State<AppState>) -> Result<Json<StatsResponse>> {
    let mut orders_by_status: BTreeMap<OrderStatus, u64> =
        OrderStatus::ALL.into_iter().map(|s| (s, 0)).collect();
    orders_by_status.extend(state.service.count_by_status().await?);
    Ok(Json(StatsResponse {
        success: true,
        data: SystemStats {
            started_at: state.started_at,
            uptime_seconds: state.started.elapsed().as_secs(),
            long_polls: state.service.hub().stats(state.stats_top_orders),
            orders_total: orders_by_status.values().sum(),
            orders_by_status,
            next_poll_intervals: state.service.policy().intervals().clone(),
            simulations_running: state.simulator.running(),
            order_requests: state.requestor.stats(),
        },
    }))
}
