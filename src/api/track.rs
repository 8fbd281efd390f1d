//! The customer long-polling endpoint.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::body::not_modified;
use super::error::{ApiError, ErrorBody, Result};
use super::extract::{etag, AppQuery, IfNoneMatch, OrderPath};
use super::AppState;
use crate::domain::poll::battery_tip;
use crate::domain::{Cursor, Order, PollTimeout, Timestamp, Version};
use crate::orders::{ServiceError, Tracked};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/orders/{id}/track", get(track_order))
}

/// Query parameters of `/track`. Unknown parameters (cache busters such as
/// `_=123`) are ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrackParams {
    /// `updated_at` from the last response, pasted as is (URL-encoding is not
    /// needed). Without an offset it is read as UTC. Any state other than this
    /// one is returned at once.
    #[param(value_type = Option<String>, example = "2025-01-12T20:30:00.000000Z")]
    pub last_update: Option<String>,
    /// `version` from the last response; an alternative to `last_update`.
    /// Takes precedence over it when both are given.
    #[param(value_type = Option<u64>, example = 3)]
    pub version: Option<String>,
    /// Seconds to wait for a change: default 30, `0` answers at once, values
    /// above the maximum (120 unless configured) are clamped. The applied value
    /// is reported as `timeout`. Given without a cursor, the request waits for
    /// the next change from now.
    #[param(value_type = Option<u64>, example = 30)]
    pub timeout: Option<String>,
}

/// A `/track` answer.
#[derive(Serialize, ToSchema)]
#[schema(example = super::examples::track_response)]
pub struct TrackResponse<'a> {
    /// Always `true`.
    pub success: bool,
    /// The order's current state.
    #[schema(value_type = Order)]
    pub data: &'a RawValue,
    /// `true` when `data` is a state the client's cursor did not have; `false`
    /// when the wait timed out (or the server is shutting down) with no change.
    pub has_update: bool,
    /// Seconds to wait before the next poll, by status: requested 30 (an
    /// order request whose seller is being sought; the answer comes within
    /// minutes), confirmed 120, preparing 60, ready 30, picked_up 30; `0` once
    /// delivered, cancelled or expired, meaning stop polling.
    pub next_poll_interval: u64,
    /// `next_poll_interval` in words.
    pub battery_tip: String,
    /// The wait that was applied, in seconds, after clamping.
    pub timeout: u64,
}

/// What the client already has, and whether it said so with `If-None-Match`.
struct Request {
    cursor: Option<Cursor>,
    /// The cursor came from `If-None-Match`, so "no change" is a 304.
    conditional: bool,
    timeout: PollTimeout,
}

/// Reads the parameters into domain values. Kept out of the handler so the
/// raw strings are dropped before the poll parks.
fn read(
    state: &AppState,
    params: TrackParams,
    if_none_match: Option<Vec<Version>>,
) -> Result<Request> {
    let timeout = state
        .service
        .poll_timeout(params.timeout.as_deref())
        .map_err(|err| ApiError::InvalidParameter(err.to_string()))?;
    let present = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
    let explicit_timeout = present(params.timeout).is_some();
    let cursor = match (present(params.version), present(params.last_update)) {
        (Some(version), _) => Some(Cursor::Version(version.parse().map_err(
            |err: crate::domain::order::BadVersion| ApiError::InvalidParameter(err.to_string()),
        )?)),
        (None, Some(at)) => Some(Cursor::UpdatedAt(
            at.parse::<Timestamp>()
                .map_err(|err| ApiError::InvalidParameter(format!("last_update: {err}")))?,
        )),
        (None, None) => None,
    };
    Ok(match (cursor, if_none_match) {
        (Some(cursor), _) => Request {
            cursor: Some(cursor),
            conditional: false,
            timeout,
        },
        (None, Some(tags)) => Request {
            cursor: Some(Cursor::ETags(tags)),
            conditional: true,
            timeout,
        },
        (None, None) => Request {
            cursor: explicit_timeout.then_some(Cursor::NextChange),
            conditional: false,
            timeout,
        },
    })
}

/// Track an order by long polling.
///
/// Without a cursor the order is returned at once (`has_update: true`). With
/// a cursor (`last_update`, `version` or `If-None-Match`) the request answers
/// at once if the order has changed since, and otherwise parks until it
/// changes (`has_update: true`) or `timeout` passes (`has_update: false`,
/// current state). An explicit `timeout` without a cursor waits for the next
/// change from now, as in `curl …/track?timeout=30`. Final orders
/// (delivered, cancelled, expired) always answer at once with
/// `next_poll_interval: 0`. Order requests are trackable from the moment
/// they are initiated: seller-search progress (`seller_search`) and the
/// confirmation wake parked polls like any status change. With `If-None-Match` and no change, the answer is
/// `304 Not Modified`.
///
/// At most 10 polls may park on one order (429 beyond) and a global cap
/// applies (503 beyond); both send `Retry-After`.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}/track",
    tag = "tracking",
    params(
        ("id" = String, Path, description = "Order id", example = "101"),
        TrackParams,
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of the version the client has; used when no query cursor is given", example = "\"3\""),
    ),
    responses(
        (status = 200, description = "The order, with whether it changed and when to poll next.", body = TrackResponse,
            headers(("ETag" = String, description = "The order's version, quoted"), ("Cache-Control" = String, description = "`no-store`"))),
        (status = 304, description = "`If-None-Match` was given and the order did not change within the timeout."),
        (status = 400, description = "A parameter could not be read.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_parameter", "message": "timeout must be a whole number of seconds from 0 to 120 (larger values are clamped), got '-5'"})),
        (status = 404, description = "No such order.", body = ErrorBody,
            example = json!({"success": false, "error": "order_not_found", "message": "order 999 not found"})),
        (status = 429, description = "This order already has the most parked polls allowed.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            example = json!({"success": false, "error": "too_many_pollers", "message": "this order already has 10 parked polls, the most allowed; retry after 5 seconds"})),
        (status = 503, description = "The server holds the most parked polls allowed.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            example = json!({"success": false, "error": "server_busy", "message": "the server already holds 16384 parked polls, the most allowed; retry after 5 seconds"})),
    )
)]
pub async fn track_order(
    State(state): State<AppState>,
    OrderPath(id): OrderPath,
    AppQuery(params): AppQuery<TrackParams>,
    IfNoneMatch(if_none_match): IfNoneMatch,
) -> Result<Response> {
    let Request {
        cursor,
        conditional,
        timeout,
    } = read(&state, params, if_none_match)?;
    let tracked = state
        .service
        .track(&id, cursor, timeout)
        .await
        .map_err(|err| match err {
            ServiceError::Poll(error) => ApiError::Busy {
                error,
                retry_after: state.retry_after,
            },
            other => ApiError::Service(other),
        })?;
    if conditional && !tracked.outcome.has_update {
        return Ok(not_modified(&tracked.outcome.snapshot));
    }
    Ok(render(&tracked))
}

fn render(tracked: &Tracked) -> Response {
    let snapshot = &tracked.outcome.snapshot;
    let body = TrackResponse {
        success: true,
        data: snapshot.json(),
        has_update: tracked.outcome.has_update,
        next_poll_interval: tracked.next_poll_interval,
        battery_tip: battery_tip(tracked.next_poll_interval),
        timeout: tracked.timeout.applied_secs,
    };
    (
        StatusCode::OK,
        [(header::ETAG, etag(snapshot.version()))],
        Json(body),
    )
        .into_response()
}
