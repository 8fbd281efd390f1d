//! Uber Direct's webhook events: `event.delivery_status` and
//! `event.courier_update`.

use serde::Deserialize;

use super::{
    checked_driver, driver_id, time, update, LatLng, OrderRef, PartnerEvent, WebhookError,
};
use crate::domain::fulfillment::{DriverDetails, Partner};
use crate::domain::TrackingStatus;

#[derive(Debug, Deserialize)]
struct Event {
    id: Option<String>,
    event_id: Option<String>,
    kind: String,
    status: Option<String>,
    delivery_id: Option<String>,
    #[serde(default)]
    data: Data,
}

/// The delivery, as Uber describes it (unknown fields are ignored: Uber
/// adds fields without notice).
#[derive(Debug, Default, Deserialize)]
struct Data {
    id: Option<String>,
    status: Option<String>,
    external_id: Option<String>,
    courier: Option<Courier>,
    dropoff_eta: Option<String>,
    tracking_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Courier {
    name: Option<String>,
    phone_number: Option<String>,
    vehicle_type: Option<String>,
    vehicle_make: Option<String>,
    img_href: Option<String>,
    location: Option<LatLng>,
}

/// The fine status an Uber delivery status reports; `Ok(None)` for
/// `pending` (the delivery exists, nothing moved).
fn target(status: &str) -> Result<Option<TrackingStatus>, WebhookError> {
    Ok(Some(match status {
        "pending" => return Ok(None),
        "pickup" => TrackingStatus::DriverAssigned,
        "pickup_complete" => TrackingStatus::DriverPickupComplete,
        "dropoff" => TrackingStatus::InTransit,
        "delivered" => TrackingStatus::Delivered,
        "canceled" | "returned" => TrackingStatus::Failed,
        other => {
            return Err(WebhookError::Malformed(format!(
                "unknown Uber delivery status '{other}'; expected pending, pickup, pickup_complete, dropoff, delivered, canceled or returned"
            )))
        }
    }))
}

/// Reads a verified Uber webhook body.
pub fn parse(body: &[u8]) -> Result<PartnerEvent, WebhookError> {
    let event: Event = serde_json::from_slice(body)
        .map_err(|err| WebhookError::Malformed(format!("not an Uber webhook event: {err}")))?;
    let event_id = event
        .id
        .or(event.event_id)
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| WebhookError::Malformed("the event has no id".into()))?;
    let data = event.data;
    let delivery_id = event.delivery_id.or(data.id);
    let mut order = Vec::new();
    if let Some(ours) = data.external_id.as_deref().and_then(|id| id.parse().ok()) {
        order.push(OrderRef::Ours(ours));
    }
    if let Some(delivery) = &delivery_id {
        order.push(OrderRef::Delivery(delivery.clone()));
    }
    if order.is_empty() {
        return Err(WebhookError::Malformed(
            "the event names no order: give data.external_id or delivery_id".into(),
        ));
    }
    let location = data.courier.as_ref().and_then(|courier| courier.location);
    let update = match event.kind.as_str() {
        "event.delivery_status" => {
            let status = event
                .status
                .or(data.status)
                .ok_or_else(|| WebhookError::Malformed("the event has no status".into()))?;
            let mut update = update(Partner::Uber, &status, target(&status)?);
            update.driver = data
                .courier
                .filter(|courier| courier.name.is_some())
                .map(|courier| courier_details(courier, delivery_id.as_deref()))
                .transpose()?;
            update.estimated_delivery_time = time("data.dropoff_eta", data.dropoff_eta.as_deref())?;
            update.delivery_tracking_url = data.tracking_url;
            update.delivery_tracking_id = delivery_id;
            Some(update)
        }
        // Positions only: the live-location channel takes them.
        "event.courier_update" => None,
        // Kinds this service does not act on are acknowledged and dropped,
        // so Uber does not retry them.
        _ => None,
    };
    Ok(PartnerEvent {
        partner: Partner::Uber,
        event_id,
        order,
        update,
        location,
        notes: None,
    })
}

/// Uber's courier as our driver.
fn courier_details(
    courier: Courier,
    delivery_id: Option<&str>,
) -> Result<DriverDetails, WebhookError> {
    let name = courier.name.unwrap_or_default();
    let vehicle_type = match (courier.vehicle_type, courier.vehicle_make) {
        (Some(kind), Some(make)) => format!("{kind} ({make})"),
        (Some(kind), None) => kind,
        (None, Some(make)) => make,
        (None, None) => "unknown".into(),
    };
    checked_driver(DriverDetails {
        driver_id: driver_id(Partner::Uber, delivery_id.unwrap_or(&name)),
        name,
        phone: courier.phone_number.unwrap_or_else(|| "unknown".into()),
        vehicle_type,
        vehicle_number: None,
        photo_url: courier.img_href,
    })
}
