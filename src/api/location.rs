//! Live driver location: drivers `PUT` fixes, customers long-poll them.

use axum::extract::State;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, Result};
use super::extract::{whole_param, AppJson, AppQuery, OrderPath};
use super::AppState;
use crate::domain::location::BadFix;
use crate::domain::{Fix, Location, OrderId, Seq, Timestamp};
use crate::location::LocationError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tracking/delivery/{order_id}/location", put(report))
        .route(
            "/tracking/orders/{order_id}/live-location",
            get(live_location),
        )
}

/// A driver's position report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "latitude": 40.7128, "longitude": -74.006, "accuracy": 8.5,
    "timestamp": "2025-01-12T20:41:07Z"
}))]
pub struct LocationReport {
    /// Degrees north, -90 to 90.
    pub latitude: f64,
    /// Degrees east, -180 to 180.
    pub longitude: f64,
    /// Radius of the fix's confidence circle in metres, 0 or more.
    #[serde(default)]
    pub accuracy: Option<f64>,
    /// When the device took the fix, RFC 3339. Default: when the server
    /// receives it. At most 2 minutes ahead of the server's clock.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub timestamp: Option<String>,
}

/// A driver's latest fix, as the wire shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "latitude": 40.7128, "longitude": -74.006, "accuracy": 8.5,
    "timestamp": "2025-01-12T20:41:07.000000Z", "seq": 12
}))]
pub struct LocationData {
    pub latitude: f64,
    pub longitude: f64,
    /// Metres; `null` when the device did not say.
    pub accuracy: Option<f64>,
    /// When the device took the fix.
    pub timestamp: Timestamp,
    /// The fix's number in the order's sequence, from 1: pass it as
    /// `after` to wait for the next one.
    pub seq: u64,
}

impl From<Location> for LocationData {
    fn from(Location { fix, seq }: Location) -> LocationData {
        LocationData {
            latitude: fix.latitude,
            longitude: fix.longitude,
            accuracy: fix.accuracy,
            timestamp: fix.at,
            seq: seq.0,
        }
    }
}

/// The answer to a position report.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "success": true, "applied": true,
    "data": {"latitude": 40.7128, "longitude": -74.006, "accuracy": 8.5,
             "timestamp": "2025-01-12T20:41:07.000000Z", "seq": 12}
}))]
pub struct ReportResponse {
    /// Always `true`.
    pub success: bool,
    /// `false` when the fix was not newer than the one held, and was
    /// ignored (a late retry, or fixes sent out of order).
    pub applied: bool,
    /// The order's latest fix after this report.
    pub data: LocationData,
}

/// A live-location poll's answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "success": true, "has_update": true,
    "data": {"latitude": 40.7128, "longitude": -74.006, "accuracy": 8.5,
             "timestamp": "2025-01-12T20:41:07.000000Z", "seq": 12},
    "seq": 12, "timeout": 30
}))]
pub struct LiveLocationResponse {
    /// Always `true`.
    pub success: bool,
    /// `true` when `data` is a fix other than the one `after` names;
    /// `false` when the wait ended (timeout, shutdown, a final order) with
    /// nothing new.
    pub has_update: bool,
    /// The latest fix; `null` while the order has none.
    pub data: Option<LocationData>,
    /// The latest fix's `seq`, `0` while there is none: the next `after`.
    pub seq: u64,
    /// The wait that was applied, in seconds, after clamping.
    pub timeout: u64,
}

/// Query parameters of the live-location poll. Unknown ones are ignored.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveLocationParams {
    /// `seq` from the last answer. Any other fix is returned at once;
    /// without it, the latest fix is returned at once if there is one.
    #[param(value_type = Option<u64>, example = 12)]
    pub after: Option<String>,
    /// Seconds to wait for a new fix: default 30, `0` answers at once,
    /// values above the maximum (120 unless configured) are clamped.
    #[param(value_type = Option<u64>, example = 30)]
    pub timeout: Option<String>,
}

/// Report a driver's location.
///
/// Accepted while the order has a driver assigned and is not final (409
/// otherwise). A fix no newer than the one held is ignored (`applied:
/// false`), so retries and out-of-order sends never move the driver back.
/// Fixes do not change the order: its version stays, and status polls
/// (`/track`) are not woken; live-location polls are. The latest fix is
/// saved at most once every few seconds per order
/// (`--location-write-interval`) and survives a restart.
#[utoipa::path(
    put,
    path = "/tracking/delivery/{order_id}/location",
    tag = "live location",
    params(("order_id" = OrderId, Path, description = "Order id", example = "101")),
    request_body = LocationReport,
    responses(
        (status = 200, description = "The fix was taken (`applied: true`) or was not newer than the one held (`applied: false`); `data` is the latest fix.", body = ReportResponse),
        (status = 400, description = "The body is not a valid position report.", body = ErrorBody,
            example = json!({"success": false, "error": "validation_failed", "message": "invalid location: latitude must be a number from -90 to 90, got 91"})),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = json!({"success": false, "error": "order_not_found", "message": "order 999 not found"})),
        (status = 409, description = "The order has no driver assigned, or is final.", body = ErrorBody,
            example = json!({"success": false, "error": "no_driver_assigned", "message": "order 101 has no driver assigned; a driver's location is accepted only once one is"})),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    AppJson(body): AppJson<LocationReport>,
) -> Result<Json<ReportResponse>> {
    let now = state.service.now();
    let at = match body.timestamp.as_deref() {
        None => now,
        Some(text) => chrono::DateTime::parse_from_rfc3339(text.trim())
            .map(|at| Timestamp::new(at.to_utc()))
            .map_err(|_| {
                LocationError::Invalid(BadFix {
                    problems: vec![format!(
                        "timestamp must be RFC 3339, such as 2025-01-12T20:41:07Z, got '{text}'"
                    )],
                })
            })?,
    };
    let fix = Fix::parse(body.latitude, body.longitude, body.accuracy, at, now)
        .map_err(LocationError::from)?;
    let reported = state.locations.report(&id, fix).await?;
    Ok(Json(ReportResponse {
        success: true,
        applied: reported.applied,
        data: reported.location.into(),
    }))
}

/// Follow the driver's location by long polling.
///
/// Answers at once when the order's latest fix is not the one `after`
/// names (or, without `after`, when there is a fix); otherwise parks until
/// the next fix arrives (`has_update: true`) or `timeout` passes
/// (`has_update: false`, current state), and answers at once when the
/// server shuts down. With no fix yet, `data` is `null` and the poll waits
/// for the first. A final order answers at once. This is a channel of its
/// own: status changes do not wake it, and fixes do not wake `/track`.
///
/// The same caps as `/track` apply: at most 10 polls may park on one
/// order's location (429 beyond) and a global cap shared with `/track`
/// (503 beyond); both send `Retry-After`.
#[utoipa::path(
    get,
    path = "/tracking/orders/{order_id}/live-location",
    tag = "live location",
    params(
        ("order_id" = OrderId, Path, description = "Order id", example = "101"),
        LiveLocationParams,
    ),
    responses(
        (status = 200, description = "The latest fix, with whether it is new to the client.", body = LiveLocationResponse),
        (status = 400, description = "A parameter could not be read.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_parameter", "message": "after must be a whole non-negative number, got 'x'"})),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = json!({"success": false, "error": "order_not_found", "message": "order 999 not found"})),
        (status = 429, description = "This order's location already has the most parked polls allowed.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            example = json!({"success": false, "error": "too_many_pollers", "message": "this order already has 10 parked polls, the most allowed; retry after 5 seconds"})),
        (status = 503, description = "The server holds the most parked polls allowed.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            example = json!({"success": false, "error": "server_busy", "message": "the server already holds 16384 parked polls, the most allowed; retry after 5 seconds"})),
    )
)]
pub async fn live_location(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    AppQuery(params): AppQuery<LiveLocationParams>,
) -> Result<Json<LiveLocationResponse>> {
    let timeout = state
        .service
        .poll_timeout(params.timeout.as_deref())
        .map_err(|err| ApiError::InvalidParameter(err.to_string()))?;
    let after = whole_param("after", params.after.as_deref())?.map(Seq);
    let outcome = state
        .locations
        .poll(&id, after, timeout)
        .await
        .map_err(|err| match err {
            LocationError::Poll(error) => ApiError::Busy {
                error,
                retry_after: state.retry_after,
            },
            other => ApiError::Location(other),
        })?;
    Ok(Json(LiveLocationResponse {
        success: true,
        has_update: outcome.has_update,
        seq: outcome.location.map_or(0, |location| location.seq.0),
        data: outcome.location.map(LocationData::from),
        timeout: timeout.applied_secs,
    }))
}
