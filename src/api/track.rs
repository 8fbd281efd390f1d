//! The customer long-polling endpoint.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::body::{json_bytes, not_modified, ENVELOPE_BYTES};
use super::error::{ApiError, ErrorBody, Result};
use super::extract::{IfNoneMatch, OrderPath};
use super::AppState;
use crate::domain::poll::BatteryTip;
use crate::domain::{Cursor, Order, OrderId, OrderSnapshot, PollTimeout, Timestamp, Version};
use crate::orders::{ServiceError, Tracked};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/orders/{id}/track", get(track_order))
}

/// Query parameters of `/track`. Unknown parameters (cache busters such as
/// `_=123`) are ignored.
#[derive(Debug, Default, IntoParams)]
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
    /// is reported as `timeout`. A quiet poll may answer up to 10% of it (at
    /// most 3 s) early, so polls parked together do not all expire together.
    /// Given without a cursor, the request waits for the next change from now.
    #[param(value_type = Option<u64>, example = 30)]
    pub timeout: Option<String>,
}

impl TrackParams {
    /// Reads the query string as `Query<TrackParams>` would (form decoding,
    /// unknown keys ignored, a repeated key refused), without serde's generic
    /// path, and decoding only the pairs that need it. This runs on every poll
    /// and every reconnect; callgrind put `Query` at about 3,000 instructions a
    /// request for three optional strings.
    fn parse(query: &str) -> Result<TrackParams> {
        let mut params = TrackParams::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let decoded;
            let (key, value) = if pair.contains(['%', '+']) {
                // Invariant: a non-empty pair always yields one pair.
                decoded = form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .expect("a non-empty pair parses");
                (decoded.0.as_ref(), decoded.1.as_ref())
            } else {
                pair.split_once('=').unwrap_or((pair, ""))
            };
            let slot = match key {
                "last_update" => &mut params.last_update,
                "version" => &mut params.version,
                "timeout" => &mut params.timeout,
                _ => continue,
            };
            if slot.is_some() {
                return Err(ApiError::InvalidParameter(format!(
                    "Failed to deserialize query string: duplicate field `{key}`"
                )));
            }
            *slot = Some(value.to_owned());
        }
        Ok(params)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TrackParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        TrackParams::parse(parts.uri.query().unwrap_or_default())
    }
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
/// confirmation wake parked polls like any status change. With
/// `If-None-Match` and no change, the answer is `304 Not Modified`.
///
/// At most 10 polls may park on one order (429 beyond) and a global cap
/// applies (503 beyond); both send `Retry-After`.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}/track",
    tag = "tracking",
    params(
        ("id" = OrderId, Path, description = "Order id", example = "101"),
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
    params: TrackParams,
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
    let body = track_body(
        snapshot,
        tracked.outcome.has_update,
        tracked.next_poll_interval,
        tracked.timeout.applied_secs,
    );
    json_bytes(StatusCode::OK, snapshot, body)
}

/// The bytes serde_json writes for a [`TrackResponse`], written directly:
/// every parked poll of an order renders this when the order changes, and
/// going through serde (escaping each key, a `String` for the tip) was about
/// 3,000 instructions of a wake, more than the rest of our handler. The order
/// itself is copied from the JSON its snapshot rendered once per version. A
/// test holds this equal to serde's output.
fn track_body(
    snapshot: &OrderSnapshot,
    has_update: bool,
    next_poll_interval: u64,
    timeout: u64,
) -> Vec<u8> {
    use std::io::Write as _;
    let order = snapshot.json().get();
    let mut body = Vec::with_capacity(order.len() + ENVELOPE_BYTES);
    body.extend_from_slice(b"{\"success\":true,\"data\":");
    body.extend_from_slice(order.as_bytes());
    body.extend_from_slice(if has_update {
        b",\"has_update\":true,\"next_poll_interval\":"
    } else {
        b",\"has_update\":false,\"next_poll_interval\":"
    });
    body.extend_from_slice(itoa::Buffer::new().format(next_poll_interval).as_bytes());
    body.extend_from_slice(b",\"battery_tip\":\"");
    // The tip is letters, digits, spaces and a hyphen: nothing JSON escapes.
    // Writing into a Vec cannot fail.
    let _ = write!(body, "{}", BatteryTip(next_poll_interval));
    body.extend_from_slice(b"\",\"timeout\":");
    body.extend_from_slice(itoa::Buffer::new().format(timeout).as_bytes());
    body.push(b'}');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::poll::battery_tip;
    use crate::domain::NewOrder;

    #[test]
    fn query_reads_like_serde_urlencoded() {
        let params = TrackParams::parse("").unwrap();
        assert!(params.version.is_none() && params.timeout.is_none());

        let params =
            TrackParams::parse("last_update=2025-01-12T22:30:00+02:00&_=123&timeout=%33%30")
                .unwrap();
        // `+` is a space in a query string; the timestamp parser repairs it.
        assert_eq!(
            params.last_update.as_deref(),
            Some("2025-01-12T22:30:00 02:00")
        );
        assert_eq!(params.timeout.as_deref(), Some("30"));
        assert!(params.version.is_none());

        let params = TrackParams::parse("&version=7&&timeout&x=%zz").unwrap();
        assert_eq!(params.version.as_deref(), Some("7"));
        assert_eq!(params.timeout.as_deref(), Some(""));

        let err = TrackParams::parse("version=1&version=2").unwrap_err();
        assert!(
            err.to_string().contains("duplicate field `version`"),
            "{err}"
        );
    }

    #[test]
    fn the_track_body_is_what_serde_writes_for_a_track_response() {
        let input = serde_json::json!({
            "customer_id": "c7",
            "restaurant_name": "Luigi's \\ Pizzeria",
            "delivery_address": "12 Harbour Street\nSpringfield",
            "items": [{"name": "Margherita Pizza", "quantity": 2, "unit_price": 12.5}]
        });
        let draft = NewOrder::parse(serde_json::from_value(input).unwrap()).unwrap();
        let order = Order::create(
            "o-1".parse().unwrap(),
            draft,
            Timestamp::new(chrono::Utc::now()),
        );
        let snapshot = OrderSnapshot::new(order);
        for has_update in [true, false] {
            for interval in [0, 1, 30, 60, 120, 86_400] {
                for timeout in [0, 1, 30, 120, u64::MAX] {
                    let expected = serde_json::to_vec(&TrackResponse {
                        success: true,
                        data: snapshot.json(),
                        has_update,
                        next_poll_interval: interval,
                        battery_tip: battery_tip(interval),
                        timeout,
                    })
                    .unwrap();
                    let written = track_body(&snapshot, has_update, interval, timeout);
                    assert_eq!(
                        String::from_utf8(written).unwrap(),
                        String::from_utf8(expected).unwrap()
                    );
                }
            }
        }
    }
}
