//! DoorDash Drive's webhook events (`event_name`, flat fields).

use serde::Deserialize;

use super::{
    checked_driver, driver_id, time, update, LatLng, OrderRef, PartnerEvent, WebhookError,
};
use crate::domain::fulfillment::{DriverDetails, Partner};
use crate::domain::TrackingStatus;

/// A DoorDash event (unknown fields are ignored).
#[derive(Debug, Deserialize)]
struct Event {
    event_name: String,
    created_at: Option<String>,
    external_delivery_id: String,
    dasher_id: Option<serde_json::Value>,
    dasher_name: Option<String>,
    dasher_phone_number: Option<String>,
    dasher_vehicle_make: Option<String>,
    dasher_location: Option<LatLng>,
    tracking_url: Option<String>,
    dropoff_time_estimated: Option<String>,
    cancellation_reason: Option<String>,
}

/// The fine status a DoorDash event reports; `None` for events the
/// history keeps without a move.
fn target(event_name: &str) -> Option<TrackingStatus> {
    match event_name {
        "DASHER_CONFIRMED" => Some(TrackingStatus::DriverAssigned),
        "DASHER_PICKED_UP" => Some(TrackingStatus::DriverPickupComplete),
        "DASHER_CONFIRMED_DROPOFF_ARRIVAL" => Some(TrackingStatus::InTransit),
        "DASHER_DROPPED_OFF" => Some(TrackingStatus::Delivered),
        "DELIVERY_CANCELLED" | "DELIVERY_RETURNED" => Some(TrackingStatus::Failed),
        // DASHER_CONFIRMED_PICKUP_ARRIVAL, DELIVERY_RETURN_INITIALIZED,
        // DASHER_CONFIRMED_RETURN_ARRIVAL and whatever DoorDash adds.
        _ => None,
    }
}

/// Reads a verified DoorDash webhook body. DoorDash sends no event id: the
/// event is `external_delivery_id`, `event_name` and `created_at`.
pub fn parse(body: &[u8]) -> Result<PartnerEvent, WebhookError> {
    let event: Event = serde_json::from_slice(body)
        .map_err(|err| WebhookError::Malformed(format!("not a DoorDash webhook event: {err}")))?;
    let created_at = event
        .created_at
        .filter(|at| !at.trim().is_empty())
        .ok_or_else(|| WebhookError::Malformed("the event has no created_at".into()))?;
    let event_id = format!(
        "{}|{}|{created_at}",
        event.external_delivery_id, event.event_name
    );
    let mut order = Vec::new();
    if let Ok(ours) = event.external_delivery_id.parse() {
        order.push(OrderRef::Ours(ours));
    }
    order.push(OrderRef::Delivery(event.external_delivery_id.clone()));
    let mut update = update(
        Partner::Doordash,
        &event.event_name,
        target(&event.event_name),
    );
    update.driver = event
        .dasher_name
        .map(|name| {
            let id = event
                .dasher_id
                .map(|id| id.to_string().trim_matches('"').to_owned())
                .unwrap_or_else(|| event.external_delivery_id.clone());
            checked_driver(DriverDetails {
                driver_id: driver_id(Partner::Doordash, &id),
                name,
                phone: event
                    .dasher_phone_number
                    .unwrap_or_else(|| "unknown".into()),
                vehicle_type: event
                    .dasher_vehicle_make
                    .unwrap_or_else(|| "unknown".into()),
                vehicle_number: None,
                photo_url: None,
            })
        })
        .transpose()?;
    update.estimated_delivery_time = time(
        "dropoff_time_estimated",
        event.dropoff_time_estimated.as_deref(),
    )?;
    update.delivery_tracking_url = event.tracking_url;
    Ok(PartnerEvent {
        partner: Partner::Doordash,
        event_id,
        order,
        update: Some(update),
        location: event.dasher_location,
        notes: event.cancellation_reason,
    })
}
