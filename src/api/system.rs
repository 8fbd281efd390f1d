//! Health and live system figures.

use std::collections::BTreeMap;

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, Result};
use super::AppState;
use crate::domain::{OrderStatus, Timestamp, TrackingStatus};
use crate::location::LocationStats;
use crate::orders::FeedStats;
use crate::requests::requestor::RequestStats;
use crate::tracking::HubStats;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/ready", get(ready))
        .route("/api/v1/orders/system/stats", get(stats))
}

/// How long readiness waits for the store to answer.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "healthy", "instance_id": "web-1-3f9c2a1b"}))]
pub struct Health {
    pub status: &'static str,
    /// This instance's name among those sharing the database.
    pub instance_id: String,
}

/// Liveness check: the process serves HTTP. It does not ask the database
/// (see `/api/v1/ready`).
#[utoipa::path(get, path = "/api/v1/health", tag = "system", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "healthy",
        instance_id: state.service.instance_id().to_owned(),
    })
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ready", "instance_id": "web-1-3f9c2a1b", "backend": "postgres"}))]
pub struct Readiness {
    /// Always `ready` (not ready is a 503 error).
    pub status: &'static str,
    pub instance_id: String,
    /// `memory`, `sqlite` or `postgres`.
    pub backend: &'static str,
}

/// Readiness, for load balancers: 200 when the store answers and (with
/// PostgreSQL) the change listener is connected, so that what this instance
/// serves is the truth; 503 `not_ready`, saying why, otherwise and while
/// shutting down. Parked polls stay parked while not ready; they are never
/// told something false.
#[utoipa::path(get, path = "/api/v1/ready", tag = "system", responses(
    (status = 200, body = Readiness),
    (status = 503, description = "Not ready: the store cannot be reached, the change listener is reconnecting, or the server is stopping.", body = ErrorBody,
        example = json!({"success": false, "error": "not_ready", "message": "instance web-1-3f9c2a1b is not ready: the change listener is reconnecting to the store"})),
))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Readiness>> {
    let service = &state.service;
    let verdict = if service.hub().stopping() {
        Err("the server is shutting down".to_owned())
    } else {
        service.ready(READY_PING_TIMEOUT).await
    };
    verdict.map_err(|reason| {
        ApiError::NotReady(format!(
            "instance {} is not ready: {reason}",
            service.instance_id()
        ))
    })?;
    Ok(Json(Readiness {
        status: "ready",
        instance_id: service.instance_id().to_owned(),
        backend: service.backend(),
    }))
}

/// Live figures of the server.
#[derive(Serialize, ToSchema)]
pub struct SystemStats {
    /// This instance's name among those sharing the database. Every figure
    /// below but the order counts is this instance's own.
    pub instance_id: String,
    /// Following other instances' changes (PostgreSQL only).
    pub change_feed: FeedStats,
    /// When the server started.
    pub started_at: Timestamp,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Parked polls now, the caps, and what happened to the polls served.
    pub long_polls: HubStats,
    /// Live driver locations: orders held and how their polls ended.
    pub live_locations: LocationStats,
    /// Delivery partners' webhooks: configured, accepted, duplicates,
    /// refused for bad credentials.
    pub webhooks: crate::partners::WebhookStats,
    /// Orders known, in total.
    pub orders_total: u64,
    /// Orders in each status (every status listed, zeros included).
    pub orders_by_status: BTreeMap<OrderStatus, u64>,
    /// The `next_poll_interval` for each coarse status, in seconds: what
    /// order requests (`requested`) get, and the base of the fine ones.
    pub next_poll_intervals: BTreeMap<OrderStatus, u64>,
    /// The `next_poll_interval` sent for each fine (seed 003) status, in
    /// seconds: what every order past `requested` gets.
    pub next_poll_intervals_by_tracking_status: BTreeMap<TrackingStatus, u64>,
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
            instance_id: state.service.instance_id().to_owned(),
            change_feed: state.service.feed_stats(),
            started_at: state.started_at,
            uptime_seconds: state.started.elapsed().as_secs(),
            long_polls: state.service.hub().stats(state.stats_top_orders),
            live_locations: state.locations.hub().stats(),
            webhooks: state.webhooks.stats(),
            orders_total: orders_by_status.values().sum(),
            orders_by_status,
            next_poll_intervals: state.service.policy().intervals().clone(),
            next_poll_intervals_by_tracking_status: state.service.policy().fine_intervals().clone(),
            simulations_running: state.simulator.running(),
            order_requests: state.requestor.stats(),
        },
    }))
}
