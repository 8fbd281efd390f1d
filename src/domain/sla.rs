//! Seed 003's SLAs, per stage of the fulfillment lifecycle: which deadline
//! an order is held to now, and when it falls.
//!
//! Pure: the deadline is a function of the order and of when it entered
//! its current fine status. Issue 11 schedules these deadlines as the
//! writer commits each change (one row per order, replaced when the stage
//! changes) and raises an alert once when one passes; that wiring is not
//! built yet, so nothing calls this module but its tests.

use std::time::Duration;

use super::lifecycle::TrackingStatus;
use super::order::Order;
use super::time::Timestamp;

/// A stage with a deadline.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumString, strum::IntoStaticStr, strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum SlaStage {
    /// A `submitted` order reaches its store's feed.
    StoreNotification,
    /// The store acknowledges a notified order.
    StoreAcknowledgment,
    /// An acknowledged order is ready for pickup.
    Picking,
    /// A ready order gets its driver.
    DriverAssignment,
    /// The order is delivered by its estimate plus a grace.
    Delivery,
}

/// The SLA of each stage (the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaPolicy {
    pub store_notification: Duration,
    pub store_acknowledgment: Duration,
    pub picking: Duration,
    pub driver_assignment: Duration,
    /// After `estimated_delivery_time`.
    pub delivery_grace: Duration,
}

impl Default for SlaPolicy {
    fn default() -> Self {
        SlaPolicy {
            store_notification: Duration::from_secs(120),
            store_acknowledgment: Duration::from_secs(300),
            picking: Duration::from_secs(1800),
            driver_assignment: Duration::from_secs(600),
            delivery_grace: Duration::from_secs(600),
        }
    }
}

/// A deadline an order is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub stage: SlaStage,
    pub at: Timestamp,
}

impl SlaPolicy {
    /// The deadline `order` is held to now, given when it entered its
    /// current fine status (`entered`): the stage's start plus its SLA.
    /// The picking SLA runs from the store's acknowledgment (through any
    /// substitutions), the driver-assignment SLA from the moment the order
    /// became ready, the delivery deadline from the order's estimate. `None`
    /// for final orders, order requests, and orders without an estimate
    /// once picked up.
    pub fn deadline(&self, order: &Order, entered: Timestamp) -> Option<Deadline> {
        use TrackingStatus::*;
        let fulfillment = order.fulfillment.as_deref();
        let (stage, start, sla) = match order.tracking_status()? {
            Submitted => (
                SlaStage::StoreNotification,
                entered,
                self.store_notification,
            ),
            StoreNotified => (
                SlaStage::StoreAcknowledgment,
                entered,
                self.store_acknowledgment,
            ),
            StoreAcknowledged | PickingInProgress | SubstitutionsNeeded | SubstitutionsApproved => {
                let acknowledged = fulfillment
                    .and_then(|f| f.store_acknowledgment_time)
                    .unwrap_or(entered);
                (SlaStage::Picking, acknowledged, self.picking)
            }
            ReadyForPickup => {
                let ready = fulfillment
                    .and_then(|f| f.picking_complete_time)
                    .unwrap_or(entered);
                (SlaStage::DriverAssignment, ready, self.driver_assignment)
            }
            DriverAssigned | DriverPickupComplete | InTransit => (
                SlaStage::Delivery,
                order.estimated_delivery?,
                self.delivery_grace,
            ),
            Delivered | Cancelled | Failed => return None,
        };
        // SLAs are configured in seconds; a span beyond chrono's range is
        // no deadline anyone meets, so it saturates.
        let sla = chrono::TimeDelta::from_std(sla).unwrap_or(chrono::TimeDelta::MAX);
        Some(Deadline {
            stage,
            at: start.plus(sla),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fulfillment::InitInput;
    use crate::domain::{Actor, Fulfill, OrderChange};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn order() -> Order {
        let input: InitInput = serde_json::from_value(serde_json::json!({
            "store_id": "s-1", "customer_id": "c", "delivery_provider": "internal"
        }))
        .unwrap();
        let id = "o-1".parse().unwrap();
        Order::create(
            "o-1".parse().unwrap(),
            input.parse(id).unwrap(),
            t("2025-01-12T20:00:00Z"),
        )
    }

    fn step(order: &Order, command: Fulfill, at: &str) -> Order {
        let change = OrderChange::Fulfill {
            command,
            actor: Actor::Operator,
            at_store: None,
        };
        order.apply(&change, t(at)).unwrap().unwrap()
    }

    #[test]
    fn each_stage_has_its_deadline_from_its_start() {
        let policy = SlaPolicy::default();
        let submitted = order();
        let deadline = |order: &Order, entered: &str| policy.deadline(order, t(entered)).unwrap();
        assert_eq!(
            deadline(&submitted, "2025-01-12T20:00:00Z"),
            Deadline {
                stage: SlaStage::StoreNotification,
                at: t("2025-01-12T20:02:00Z")
            }
        );
        let notified = step(&submitted, Fulfill::NotifyStore, "2025-01-12T20:01:00Z");
        assert_eq!(
            deadline(&notified, "2025-01-12T20:01:00Z").at,
            t("2025-01-12T20:06:00Z")
        );
        let acknowledged = step(
            &notified,
            Fulfill::Acknowledge {
                estimated_ready_time: None,
            },
            "2025-01-12T20:03:00Z",
        );
        let picking = step(&acknowledged, Fulfill::StartPicking, "2025-01-12T20:10:00Z");
        // Picking runs from the acknowledgment, whenever picking started.
        assert_eq!(
            deadline(&picking, "2025-01-12T20:10:00Z"),
            Deadline {
                stage: SlaStage::Picking,
                at: t("2025-01-12T20:33:00Z")
            }
        );
        let ready = step(&picking, Fulfill::MarkReady, "2025-01-12T20:20:00Z");
        assert_eq!(
            deadline(&ready, "2025-01-12T20:20:00Z"),
            Deadline {
                stage: SlaStage::DriverAssignment,
                at: t("2025-01-12T20:30:00Z")
            }
        );
        let assigned = step(
            &ready,
            Fulfill::MoveTo(TrackingStatus::DriverAssigned),
            "2025-01-12T20:25:00Z",
        );
        let held = deadline(&assigned, "2025-01-12T20:25:00Z");
        assert_eq!(held.stage, SlaStage::Delivery);
        assert_eq!(
            Some(held.at),
            assigned
                .estimated_delivery
                .map(|eta| eta.plus(chrono::TimeDelta::minutes(10)))
        );
        let delivered = step(
            &step(&assigned, Fulfill::PickUp, "2025-01-12T20:30:00Z"),
            Fulfill::Deliver,
            "2025-01-12T20:40:00Z",
        );
        assert_eq!(policy.deadline(&delivered, t("2025-01-12T20:40:00Z")), None);
    }

    #[test]
    fn stage_names_are_snake_case() {
        assert_eq!(
            SlaStage::StoreAcknowledgment.to_string(),
            "store_acknowledgment"
        );
        assert_eq!(
            "driver_assignment".parse::<SlaStage>(),
            Ok(SlaStage::DriverAssignment)
        );
    }
}
