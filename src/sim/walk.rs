//! The fine walk of a simulation: its plan, and for each step the commands
//! that take it, as the one who takes that step over HTTP would send them
//! (the store's tablet, the customer, dispatch, the driver).
//!
//! Orders created through seed 003 (`POST /tracking/orders/{id}/init`) have
//! a store: its steps are the store's, scoped to it. Seed 004 orders
//! (`POST /api/v1/orders`) have none: an operator takes those steps, with no
//! store scope. `store_notified` is normally the store feed's doing; the
//! simulator takes it when nobody did by the time it is due.
//!
//! Pure: no I/O.

use serde::Serialize;
use utoipa::ToSchema;

use super::trip::{self, Trip};
use crate::domain::fulfillment::{Assignment, DriverDetails, NewSubstitution, PriceDifference};
use crate::domain::lifecycle::{self, Step};
use crate::domain::workflow::{self, FineStage};
use crate::domain::{
    Actor, Fulfill, Order, OrderChange, OrderId, OrderStatus, TimeScale, Timestamp, TrackingStatus,
};

/// One planned step of a simulation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlannedStep {
    /// The seed 004 status the order will be in after the step (the
    /// projection of `tracking_status`; several steps may keep it).
    pub status: OrderStatus,
    /// Seed 003's fine status the step moves the order to.
    pub tracking_status: TrackingStatus,
    /// Seconds after the start, at the requested speed.
    pub after_seconds: f64,
    /// When the step is due (wall clock).
    pub at: Timestamp,
}

/// What a started simulation will do.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plan {
    pub order_id: OrderId,
    /// How many times faster than real time the timeline runs.
    pub speed: f64,
    /// The status the order was in when the simulation started.
    pub from_status: OrderStatus,
    /// The fine status the order was in when the simulation started.
    pub from_tracking_status: TrackingStatus,
    /// Whether the walk proposes a substitution and approves it as the
    /// customer (`?substitutions=true`, or the order already waits on one).
    pub substitutions: bool,
    pub started_at: Timestamp,
    pub steps: Vec<PlannedStep>,
    /// The driver the simulator assigns; absent when the walk starts past
    /// the assignment.
    pub driver: Option<DriverDetails>,
    /// The driver's fixes while `in_transit`, sent to the live-location
    /// channel (`GET /tracking/orders/{order_id}/live-location`).
    pub trip: Trip,
}

/// The fine status that follows stage `index` of `stages`.
pub(super) fn following(stages: &[FineStage], index: usize) -> TrackingStatus {
    stages
        .get(index + 1)
        .map_or(TrackingStatus::Delivered, |stage| stage.status)
}

/// The trip a walk at `speed` makes for `order_id`.
pub(super) fn trip_at(order_id: &OrderId, speed: TimeScale) -> Trip {
    let in_transit = workflow::FINE_TIMELINE
        .iter()
        .find(|stage| stage.status == TrackingStatus::InTransit)
        .map_or(trip::FIX_EVERY, |stage| stage.lasts);
    trip::trip(
        order_id,
        speed.scale(in_transit),
        speed.scale(trip::FIX_EVERY),
    )
}

/// The plan for driving `order_id` from the fine status `from` at `speed`,
/// starting at `started_at`.
pub fn plan(
    order_id: OrderId,
    from: TrackingStatus,
    substitutions: bool,
    speed: TimeScale,
    started_at: Timestamp,
) -> Plan {
    let stages = workflow::fine_stages_from(from, substitutions);
    let mut elapsed = std::time::Duration::ZERO;
    let steps = stages
        .iter()
        .enumerate()
        .map(|(index, stage)| {
            elapsed += speed.scale(stage.lasts);
            let next = following(stages, index);
            PlannedStep {
                status: next.coarse(),
                tracking_status: next,
                after_seconds: elapsed.as_secs_f64(),
                at: started_at
                    .plus(chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)),
            }
        })
        .collect();
    let assigns = stages
        .iter()
        .any(|stage| stage.status == TrackingStatus::ReadyForPickup);
    Plan {
        trip: trip_at(&order_id, speed),
        driver: assigns.then(|| trip::driver(&order_id)),
        order_id,
        speed: speed.speed(),
        from_status: from.coarse(),
        from_tracking_status: from,
        substitutions: stages
            .iter()
            .any(|stage| stage.status == TrackingStatus::SubstitutionsNeeded),
        started_at,
        steps,
    }
}

/// The changes that take `order` from `from` to `to`, the next fine status
/// on the walk, in the order to send them. `ready_at` is when the walk
/// expects the order to be ready, which the store gives as it
/// acknowledges. Empty when there is nothing to do (no substitution is
/// pending to approve).
pub(super) fn changes(
    order: &Order,
    from: TrackingStatus,
    to: TrackingStatus,
    ready_at: Option<Timestamp>,
) -> Vec<OrderChange> {
    let Some(step) = lifecycle::step_to(from, to) else {
        return Vec::new();
    };
    // The store's steps: by the store on its own orders, else by an operator.
    let (store, at_store) = match order.store_id() {
        Some(store) => (Actor::Store, Some(store.clone())),
        None => (Actor::Operator, None),
    };
    let change = |command, actor, at_store| OrderChange::Fulfill {
        command,
        actor,
        at_store,
    };
    match step {
        Step::NotifyStore => vec![change(Fulfill::NotifyStore, Actor::Operator, None)],
        Step::Acknowledge => vec![change(
            Fulfill::Acknowledge {
                estimated_ready_time: ready_at,
            },
            store,
            at_store,
        )],
        Step::StartPicking => vec![change(Fulfill::StartPicking, store, at_store)],
        Step::ProposeSubstitution => {
            let original = order
                .items
                .first()
                .map_or_else(|| "item-1".to_owned(), |item| item.name.clone());
            vec![change(
                Fulfill::ProposeSubstitution(NewSubstitution {
                    original_item_id: original,
                    substitute_item_id: "sim-substitute-1".to_owned(),
                    reason: "out of stock (simulated)".to_owned(),
                    price_difference: PriceDifference::default(),
                }),
                store,
                at_store,
            )]
        }
        // The customer approves every pending substitution; the last answer
        // moves the order on.
        Step::ApproveSubstitutions => order
            .fulfillment
            .iter()
            .flat_map(|fulfillment| fulfillment.pending())
            .map(|sub| {
                change(
                    Fulfill::DecideSubstitution {
                        id: sub.id.clone(),
                        approve: true,
                    },
                    Actor::Customer,
                    None,
                )
            })
            .collect(),
        Step::MarkReady => vec![change(Fulfill::MarkReady, store, at_store)],
        // As dispatch assigns (`POST /tracking/delivery/{id}/assign`). No
        // delivery estimate: it would freeze the one the timeline gives.
        Step::AssignDriver => vec![change(
            Fulfill::AssignDriver(Box::new(Assignment {
                driver: trip::driver(&order.id),
                delivery_tracking_id: None,
                delivery_tracking_url: None,
                estimated_delivery_time: None,
            })),
            Actor::Operator,
            None,
        )],
        Step::PickUp => vec![change(Fulfill::PickUp, Actor::Driver, None)],
        // As `PUT /tracking/orders/{id}/status` does.
        Step::StartTransit => vec![change(
            Fulfill::MoveTo(TrackingStatus::InTransit),
            Actor::Operator,
            None,
        )],
        Step::Deliver => vec![change(Fulfill::Deliver, Actor::Driver, None)],
        // Not on the walk.
        Step::RejectByStore
        | Step::RejectSubstitutions
        | Step::DispatchEarly
        | Step::NoDriverAvailable
        | Step::Cancel
        | Step::Fail => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::fulfillment::{DeliveryProvider, InitInput};
    use crate::domain::{NewOrder, NewOrderInput, StoreId};

    fn now() -> Timestamp {
        "2025-01-12T20:30:00Z".parse().unwrap()
    }

    /// An order created through seed 004's API: no store.
    fn seed_004_order() -> Order {
        let input: NewOrderInput = serde_json::from_value(serde_json::json!({
            "id": "2001", "customer_id": "42", "restaurant_name": "Luigi's",
            "delivery_address": "12 Harbour Street",
            "items": [{"name": "Margherita Pizza", "quantity": 1, "unit_price": 12.5}]
        }))
        .unwrap();
        let draft: NewOrder = NewOrder::parse(input).unwrap();
        Order::create("2001".parse().unwrap(), draft, now())
    }

    /// An order created through seed 003's init: store `store-17`.
    fn seed_003_order() -> Order {
        let input = InitInput {
            store_id: "store-17".into(),
            customer_id: "42".into(),
            delivery_provider: DeliveryProvider::Internal,
            delivery_address: Some("12 Harbour Street".into()),
            items: Vec::new(),
            estimated_delivery_time: None,
            metadata: None,
        };
        let id: OrderId = "g-1001".parse().unwrap();
        Order::create(id.clone(), input.parse(id).unwrap(), now())
    }

    /// Walks `order` from where it is to the end with the commands the
    /// simulator sends, as the service would apply them; returns the fine
    /// status after each change and the order at the end.
    fn walk(mut order: Order, substitutions: bool) -> (Vec<TrackingStatus>, Order) {
        let from = order.tracking_status().unwrap();
        let stages = workflow::fine_stages_from(from, substitutions);
        let mut seen = Vec::new();
        for (index, stage) in stages.iter().enumerate() {
            let to = following(stages, index);
            let changes = changes(&order, stage.status, to, Some(now()));
            assert!(!changes.is_empty(), "{} → {to}", stage.status);
            for change in changes {
                let next = order
                    .apply(&change, now())
                    .unwrap_or_else(|err| panic!("{} → {to}: {err}", stage.status))
                    .expect("every step changes the order");
                // The delivery estimate moves with the coarse status only,
                // as it did when the simulator set coarse statuses.
                if next.status == order.status {
                    assert_eq!(next.estimated_delivery, order.estimated_delivery, "{to}");
                }
                order = next;
                seen.push(order.tracking_status().unwrap());
            }
        }
        (seen, order)
    }

    #[test]
    fn both_kinds_of_order_walk_every_fine_status_in_order() {
        use TrackingStatus::*;
        let plain = [
            StoreNotified,
            StoreAcknowledged,
            PickingInProgress,
            ReadyForPickup,
            DriverAssigned,
            DriverPickupComplete,
            InTransit,
            Delivered,
        ];
        let substituted = [
            StoreNotified,
            StoreAcknowledged,
            PickingInProgress,
            SubstitutionsNeeded,
            SubstitutionsApproved,
            ReadyForPickup,
            DriverAssigned,
            DriverPickupComplete,
            InTransit,
            Delivered,
        ];
        for order in [seed_004_order(), seed_003_order()] {
            let (seen, done) = walk(order.clone(), false);
            assert_eq!(seen, plain, "{}", order.id);
            let fulfillment = done.fulfillment.as_deref().unwrap();
            assert_eq!(fulfillment.driver_details, Some(trip::driver(&order.id)));
            assert_eq!(fulfillment.estimated_ready_time, Some(now()));
            assert_eq!(done.status, OrderStatus::Delivered);

            let (seen, done) = walk(order.clone(), true);
            assert_eq!(seen, substituted, "{}", order.id);
            let subs = &done.fulfillment.as_deref().unwrap().substitutions;
            assert_eq!(subs.len(), 1);
            assert_eq!(
                subs[0].status,
                crate::domain::fulfillment::SubstitutionStatus::Approved
            );
        }
    }

    #[test]
    fn store_steps_are_the_stores_on_its_orders_and_an_operators_otherwise() {
        use TrackingStatus::*;
        let scope =
            |order: &Order| match &changes(order, StoreAcknowledged, PickingInProgress, None)[..] {
                [OrderChange::Fulfill {
                    actor, at_store, ..
                }] => (*actor, at_store.clone()),
                other => panic!("{other:?}"),
            };
        assert_eq!(scope(&seed_004_order()), (Actor::Operator, None));
        let store: StoreId = "store-17".parse().unwrap();
        assert_eq!(scope(&seed_003_order()), (Actor::Store, Some(store)));
        // Notifying the store is the feed's step: an operator's, unscoped.
        assert!(matches!(
            &changes(&seed_003_order(), Submitted, StoreNotified, None)[..],
            [OrderChange::Fulfill {
                command: Fulfill::NotifyStore,
                actor: Actor::Operator,
                at_store: None
            }]
        ));
    }

    #[test]
    fn the_plan_keeps_the_coarse_timeline() {
        let speed = TimeScale::parse("60").unwrap();
        let plan = plan(
            "101".parse().unwrap(),
            TrackingStatus::Submitted,
            false,
            speed,
            now(),
        );
        let coarse: Vec<(OrderStatus, f64)> = plan
            .steps
            .iter()
            .filter(|step| step.status != OrderStatus::Confirmed)
            .fold(Vec::new(), |mut changes, step| {
                if changes.last().is_none_or(|(last, _)| *last != step.status) {
                    changes.push((step.status, step.after_seconds));
                }
                changes
            });
        // 3, 18, 23 and 33 minutes at 60 times: the seed's timeline.
        assert_eq!(
            coarse,
            [
                (OrderStatus::Preparing, 3.0),
                (OrderStatus::Ready, 18.0),
                (OrderStatus::PickedUp, 23.0),
                (OrderStatus::Delivered, 33.0),
            ]
        );
        assert_eq!(plan.steps.len(), 8);
        assert!(plan.driver.is_some());
        assert_eq!(plan.trip.fixes, 37);
        assert!((plan.trip.every_seconds - 0.25).abs() < 1e-9);
        // Past the assignment, the simulator assigns nobody.
        let late = super::plan(
            "101".parse().unwrap(),
            TrackingStatus::DriverAssigned,
            false,
            speed,
            now(),
        );
        assert_eq!(late.driver, None);
        assert_eq!(late.steps.len(), 3);
    }
}
