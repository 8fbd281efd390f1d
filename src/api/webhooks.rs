//! Delivery partners' webhooks: `POST /tracking/webhooks/uber` and
//! `POST /tracking/webhooks/doordash`.
//!
//! Verify first (nothing is parsed before), then read the event, find its
//! order, and apply it as one command through the one write path with the
//! event's id as its idempotency key, kept a week: a retried event changes
//! nothing and is answered 200. A report the order is past is recorded as
//! ignored and answered 200, so the partner stops retrying. The courier's
//! position goes to the live-location channel.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, Result};
use super::AppState;
use crate::domain::fulfillment::Partner;
use crate::domain::location::Fix;
use crate::domain::{Actor, Attribution, Fulfill, OrderChange, OrderId};
use crate::orders::{Command, IdempotencyKey, ServiceError, Target};
use crate::partners::{self, OrderRef, PartnerEvent, WebhookError};
use crate::store::WEBHOOK_SCOPE_PREFIX;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tracking/webhooks/uber", post(uber))
        .route("/tracking/webhooks/doordash", post(doordash))
}

/// What a partner is told.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"success": true, "order_id": "g-1001", "version": 9, "applied": true, "duplicate": false}))]
pub struct WebhookAnswer {
    pub success: bool,
    #[schema(value_type = String)]
    pub order_id: OrderId,
    /// The order's version after the event (absent for position-only events).
    pub version: Option<u64>,
    /// The event changed the order (false for a duplicate or a
    /// position-only event).
    pub applied: bool,
    /// The event was seen before: nothing changed.
    pub duplicate: bool,
}

/// A refused webhook, counted and logged.
fn refused(state: &AppState, err: WebhookError) -> ApiError {
    if let WebhookError::Unauthenticated { partner, what } = &err {
        state
            .webhooks
            .unauthenticated
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%partner, what, "webhook refused: bad or missing credentials");
    }
    ApiError::Webhook(err)
}

/// Take an Uber Direct event.
///
/// `X-Uber-Signature` (or `X-Postmates-Signature`) must be the lowercase
/// hex HMAC-SHA256 of the raw body with `--uber-webhook-secret`.
/// `event.delivery_status` moves the order (pickup → driver_assigned,
/// pickup_complete → driver_pickup_complete, dropoff → in_transit,
/// delivered, canceled/returned → failed; pending records the delivery)
/// and records the courier, ETA and tracking URL; `event.courier_update`
/// feeds the live-location channel. The order is found by
/// `data.external_id` (our id) or `delivery_id`.
#[utoipa::path(
    post,
    path = "/tracking/webhooks/uber",
    tag = "webhooks",
    params(("X-Uber-Signature" = String, Header, description = "Hex HMAC-SHA256 of the raw body", example = "5f2b…")),
    request_body(content = Object, description = "Uber's event, as Uber sends it",
        example = json!({"id": "evt_1", "kind": "event.delivery_status", "status": "pickup", "delivery_id": "del_9",
            "data": {"external_id": "g-1001", "courier": {"name": "Sam", "phone_number": "+15550100", "vehicle_type": "car", "location": {"lat": 40.71, "lng": -74.0}},
                     "dropoff_eta": "2025-01-12T21:05:00Z", "tracking_url": "https://track.example/del_9"}})),
    responses(
        (status = 200, description = "Applied, recorded as ignored, or a duplicate.", body = WebhookAnswer),
        (status = 400, description = "Verified, but not an event we can read.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_event", "message": "not an Uber webhook event: expected value at line 1 column 1"})),
        (status = 401, description = "Missing or wrong signature; nothing recorded.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_signature", "message": "the uber webhook's X-Uber-Signature is missing or wrong"})),
        (status = 404, description = "No such order.", body = ErrorBody, example = super::examples::order_not_found),
        (status = 503, description = "No signing key configured.", body = ErrorBody,
            example = json!({"success": false, "error": "webhook_not_configured", "message": "the uber webhook is not configured on this server"})),
    )
)]
pub async fn uber(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let signature = headers
        .get("x-uber-signature")
        .or_else(|| headers.get("x-postmates-signature"))
        .map(|value| value.as_bytes());
    partners::verify_uber(&state.webhooks.credentials, signature, &body)
        .map_err(|err| refused(&state, err))?;
    let event = partners::parse_uber(&body).map_err(ApiError::Webhook)?;
    apply(&state, event).await
}

/// Take a DoorDash Drive event.
///
/// The `Authorization` header must equal `--doordash-webhook-auth`.
/// DASHER_CONFIRMED → driver_assigned, DASHER_PICKED_UP →
/// driver_pickup_complete, DASHER_CONFIRMED_DROPOFF_ARRIVAL → in_transit,
/// DASHER_DROPPED_OFF → delivered, DELIVERY_CANCELLED and DELIVERY_RETURNED
/// → failed; other events are recorded. The order is found by
/// `external_delivery_id`; an event is `external_delivery_id`,
/// `event_name` and `created_at`.
#[utoipa::path(
    post,
    path = "/tracking/webhooks/doordash",
    tag = "webhooks",
    params(("Authorization" = String, Header, description = "As configured with DoorDash", example = "Bearer dd-secret")),
    request_body(content = Object, description = "DoorDash's event, as DoorDash sends it",
        example = json!({"event_name": "DASHER_PICKED_UP", "created_at": "2025-01-12T20:50:00Z", "external_delivery_id": "g-1001",
            "dasher_name": "Ana", "dasher_phone_number": "+15550101", "dasher_vehicle_make": "Honda", "dasher_location": {"lat": 40.71, "lng": -74.0}})),
    responses(
        (status = 200, description = "Applied, recorded as ignored, or a duplicate.", body = WebhookAnswer),
        (status = 400, description = "Verified, but not an event we can read.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_event", "message": "the event has no created_at"})),
        (status = 401, description = "Missing or wrong `Authorization`; nothing recorded.", body = ErrorBody,
            example = json!({"success": false, "error": "invalid_signature", "message": "the doordash webhook's Authorization header is missing or wrong"})),
        (status = 404, description = "No such order.", body = ErrorBody, example = super::examples::order_not_found),
        (status = 503, description = "No credentials configured.", body = ErrorBody,
            example = json!({"success": false, "error": "webhook_not_configured", "message": "the doordash webhook is not configured on this server"})),
    )
)]
pub async fn doordash(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    partners::verify_doordash(&state.webhooks.credentials, authorization)
        .map_err(|err| refused(&state, err))?;
    let event = partners::parse_doordash(&body).map_err(ApiError::Webhook)?;
    apply(&state, event).await
}

/// The order a partner names: ours if it exists, else by its delivery id.
async fn find(state: &AppState, refs: &[OrderRef]) -> Result<OrderId> {
    for reference in refs {
        match reference {
            OrderRef::Ours(id) => match state.service.get(id).await {
                Ok(_) => return Ok(id.clone()),
                Err(ServiceError::NotFound(_)) => continue,
                Err(other) => return Err(other.into()),
            },
            OrderRef::Delivery(delivery) => {
                if let Some(id) = state.service.order_by_delivery_id(delivery).await? {
                    return Ok(id);
                }
            }
        }
    }
    let named = match refs.first() {
        Some(OrderRef::Ours(id)) => id.to_string(),
        Some(OrderRef::Delivery(delivery)) => format!("with delivery {delivery}"),
        None => String::new(),
    };
    Err(ApiError::NoSuchOrder(named))
}

/// Applies a verified event to its order.
async fn apply(state: &AppState, event: PartnerEvent) -> Result<Response> {
    let id = find(state, &event.order).await?;
    let partner = event.partner;
    let mut answer = WebhookAnswer {
        success: true,
        order_id: id.clone(),
        version: None,
        applied: false,
        duplicate: false,
    };
    if let Some(update) = event.update {
        let mut metadata = serde_json::Map::new();
        metadata.insert("event_id".into(), event.event_id.clone().into());
        metadata.insert("event".into(), update.event.clone().into());
        let attribution = Attribution {
            updated_by: Some(partner.to_string()),
            notes: event.notes,
            metadata: Some(metadata),
        };
        let applied = state
            .service
            .execute(Command {
                target: Target::Change {
                    id: id.clone(),
                    change: OrderChange::Fulfill {
                        command: Fulfill::Partner(Box::new(update)),
                        actor: Actor::Partner,
                        at_store: None,
                    },
                },
                attribution,
                if_match: None,
                idempotency: Some(event_key(partner, event.event_id)),
            })
            .await?;
        answer.version = Some(applied.snapshot.version().0);
        answer.applied = applied.changed;
        answer.duplicate = applied.replayed;
    }
    if answer.duplicate {
        state.webhooks.duplicates.fetch_add(1, Ordering::Relaxed);
    } else {
        state.webhooks.accepted.fetch_add(1, Ordering::Relaxed);
        if let Some(position) = event.location {
            report_position(state, &id, position).await;
        }
    }
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// An event's idempotency key: its id, within the partner's webhook scope.
/// Every delivery of one event is the same request, whatever its bytes.
fn event_key(partner: Partner, event_id: String) -> IdempotencyKey {
    IdempotencyKey {
        scope: format!("{WEBHOOK_SCOPE_PREFIX}{partner}"),
        key: event_id,
        fingerprint: "partner-event".into(),
    }
}

/// Sends a courier's position to the live-location channel, if the order
/// takes one now (a driver assigned, not final); a position it does not
/// take is dropped: the next one follows within seconds.
async fn report_position(state: &AppState, id: &OrderId, position: partners::LatLng) {
    let now = state.service.now();
    let Ok(fix) = Fix::parse(position.lat, position.lng, None, now, now) else {
        return;
    };
    if let Err(err) = state.locations.report(id, fix).await {
        tracing::debug!(order_id = %id, error = %err, "partner position not taken");
    }
}
