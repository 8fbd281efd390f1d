//! Examples for the OpenAPI document, built with the real types and
//! serializers, so the documented bodies are exactly what the server sends.

use serde_json::{json, Value};

use super::system::{StatsResponse, SystemStats};
use super::track::TrackResponse;
use crate::domain::poll::battery_tip;
use crate::domain::{
    NewOrder, NewOrderInput, Order, OrderChange, OrderSnapshot, OrderStatus, PollPolicy, TimeScale,
    Timestamp, TrackingStatus,
};
use crate::location::LocationStats;
use crate::orders::FeedStats;
use crate::requests::requestor::{RequestStats, StreamEndings};
use crate::tracking::{HubStats, OrderPollers, PollCounts};

/// A fixed instant, so the document is the same on every build.
fn at(text: &str) -> Timestamp {
    // Invariant: only called with the literals below.
    text.parse().expect("example timestamps are valid")
}

/// Order 101, three minutes after it was confirmed: now being prepared.
pub fn order() -> Order {
    let input: NewOrderInput = serde_json::from_value(json!({
        "id": "101",
        "customer_id": "1",
        "restaurant_name": "Luigi's Pizzeria",
        "delivery_address": "12 Harbour Street, Springfield",
        "items": [
            {"name": "Margherita Pizza", "quantity": 2, "unit_price": 12.5},
            {"name": "Tiramisu", "quantity": 1, "unit_price": 6.0}
        ]
    }))
    .expect("the example input has the input's shape");
    let draft = NewOrder::parse(input).expect("the example input is valid");
    let confirmed = Order::create(
        "101".parse().expect("valid id"),
        draft,
        at("2025-01-12T20:30:00Z"),
    );
    confirmed
        .apply(
            &OrderChange::SetStatus(OrderStatus::Preparing),
            at("2025-01-12T20:33:00Z"),
        )
        .expect("confirmed → preparing is legal")
        .expect("and changes the order")
}

/// The first page of order 101's history: created, then being prepared.
pub fn history_response() -> Value {
    use super::orders::HistoryResponse;
    use crate::domain::{Attribution, Event, EventKind};
    let order = order();
    let mut metadata = serde_json::Map::new();
    metadata.insert("station".into(), json!("oven-2"));
    let created = Event {
        version: crate::domain::Version::FIRST,
        at: order.created_at,
        kind: EventKind::Created,
        status: OrderStatus::Confirmed,
        ..Event::for_order(&order, EventKind::Created, Attribution::default(), None)
    };
    let preparing = Event::for_order(
        &order,
        EventKind::StatusChanged,
        Attribution {
            updated_by: Some("kitchen-tablet-3".into()),
            notes: Some("Started on the pizzas".into()),
            metadata: Some(metadata),
        },
        None,
    );
    // Invariant: plain data always serializes.
    serde_json::to_value(HistoryResponse {
        success: true,
        data: vec![created.into(), preparing.into()],
        next_after_version: None,
    })
    .expect("the example serializes")
}

/// `{"success": true, "data": <order>}`.
pub fn order_response() -> Value {
    json!({"success": true, "data": order()})
}

/// A `/track` answer woken by the change to `preparing`.
pub fn track_response() -> Value {
    let snapshot = OrderSnapshot::new(order());
    let interval = PollPolicy::default().next_poll_interval(snapshot.order().status);
    let body = TrackResponse {
        success: true,
        data: snapshot.json(),
        has_update: true,
        next_poll_interval: interval,
        battery_tip: battery_tip(interval),
        timeout: 30,
    };
    serde_json::to_value(body).expect("a track response serializes")
}

/// `simulate-workflow?speed=60` on a confirmed order.
pub fn simulation_started() -> Value {
    let plan = crate::sim::plan(
        "101".parse().expect("valid id"),
        TrackingStatus::Submitted,
        false,
        TimeScale::parse("60").expect("valid speed"),
        at("2025-01-12T20:30:00Z"),
    );
    json!({"success": true, "message": "Workflow simulation started", "data": plan})
}

/// Stats of a server holding a few parked polls.
pub fn stats_response() -> Value {
    let policy = PollPolicy::default();
    let body = StatsResponse {
        success: true,
        data: SystemStats {
            instance_id: "web-1-3f9c2a1b".into(),
            change_feed: FeedStats {
                shared_store: true,
                listening: true,
                hints_received: 1_840,
                versions_published: 37,
                reconnects: 0,
                sweeps: 720,
            },
            started_at: at("2025-01-12T20:00:00Z"),
            uptime_seconds: 3600,
            long_polls: HubStats {
                parked_now: 3,
                busiest_orders: vec![
                    OrderPollers {
                        order_id: "101".parse().expect("valid id"),
                        parked: 2,
                    },
                    OrderPollers {
                        order_id: "102".parse().expect("valid id"),
                        parked: 1,
                    },
                ],
                max_pollers_per_order: 10,
                max_parked_polls: 16_384,
                polls: PollCounts {
                    served: 1_250,
                    updates: 410,
                    woken_by_change: 120,
                    timeouts: 820,
                    unchanged_immediate: 12,
                    released_by_shutdown: 0,
                    rejections: 8,
                    rejected_per_order_cap: 8,
                    rejected_global_cap: 0,
                    disconnected: 31,
                },
                status_updates_published: 95,
                orders_cached: 3,
            },
            live_locations: LocationStats {
                orders_cached: 1,
                polls: PollCounts {
                    served: 300,
                    updates: 280,
                    woken_by_change: 270,
                    timeouts: 15,
                    unchanged_immediate: 2,
                    released_by_shutdown: 0,
                    rejections: 0,
                    rejected_per_order_cap: 0,
                    rejected_global_cap: 0,
                    disconnected: 3,
                },
            },
            webhooks: crate::partners::WebhookStats {
                uber_configured: true,
                doordash_configured: false,
                accepted: 42,
                duplicates: 3,
                unauthenticated: 1,
            },
            orders_total: 3,
            orders_by_status: OrderStatus::ALL
                .into_iter()
                .map(|s| {
                    (
                        s,
                        u64::from(matches!(
                            s,
                            OrderStatus::Confirmed | OrderStatus::Preparing | OrderStatus::Ready
                        )),
                    )
                })
                .collect(),
            next_poll_intervals: policy.intervals().clone(),
            next_poll_intervals_by_tracking_status: policy.fine_intervals().clone(),
            simulations_running: 1,
            order_requests: RequestStats {
                tracked: 2,
                active_streams: 1,
                streams_started: 2,
                duplicates_prevented: 1,
                stream_endings: StreamEndings {
                    accepted: 1,
                    ..StreamEndings::default()
                },
            },
        },
    };
    serde_json::to_value(body).expect("stats serialize")
}

/// A grocery order whose picker proposed a substitution the customer has
/// not answered yet.
pub fn tracking_document() -> Value {
    use super::fulfillment::{to_document, StatusUpdate, TrackingResponse};
    use crate::domain::fulfillment::{InitInput, NewSubstitution};
    use crate::domain::{Actor, Attribution, Event, EventKind, Fulfill, OrderChange};
    let input: InitInput = serde_json::from_value(json!({
        "store_id": "store-17",
        "customer_id": "42",
        "delivery_provider": "internal",
        "delivery_address": "12 Harbour Street, Springfield",
        "items": [{"name": "Whole milk 1l", "quantity": 2, "unit_price": 1.25}]
    }))
    .expect("the example input is valid");
    let at: Timestamp = "2025-01-12T20:30:00Z".parse().expect("a valid time");
    let id: crate::domain::OrderId = "g-1001".parse().expect("a valid id");
    let mut order = Order::create(
        id.clone(),
        input.parse(id).expect("the example is valid"),
        at,
    );
    let mut history = vec![Event::for_order(
        &order,
        EventKind::Created,
        Attribution::default(),
        None,
    )];
    let steps = [
        (Fulfill::NotifyStore, Actor::Operator, "store-feed"),
        (
            Fulfill::Acknowledge {
                estimated_ready_time: None,
            },
            Actor::Store,
            "store:store-17",
        ),
        (Fulfill::StartPicking, Actor::Store, "store:store-17"),
        (
            Fulfill::ProposeSubstitution(
                NewSubstitution::parse("sku-milk-1l", "sku-milk-2l", "Out of stock", 0.8)
                    .expect("a valid proposal"),
            ),
            Actor::Store,
            "store:store-17",
        ),
    ];
    for (n, (command, actor, by)) in steps.into_iter().enumerate() {
        let change = OrderChange::Fulfill {
            command,
            actor,
            at_store: None,
        };
        let kind = EventKind::of(&change);
        let now = at.plus(chrono::TimeDelta::minutes(n as i64 + 1));
        order = order
            .apply(&change, now)
            .expect("the example steps are legal")
            .expect("each step changes the order");
        history.push(Event::for_order(&order, kind, Attribution::by(by), None));
    }
    let status_history = history.into_iter().map(StatusUpdate::from).collect();
    let body = TrackingResponse {
        success: true,
        data: to_document(&order, status_history, None),
    };
    serde_json::to_value(body).expect("a document serializes")
}

/// A damaged item reported on the order of [`tracking_document`].
pub fn issue_response() -> Value {
    let mut body = tracking_document();
    body["issue_id"] = json!("issue-1");
    body["data"]["issues"] = json!([{
        "id": "issue-1",
        "issue_type": "item_damaged",
        "description": "Two eggs cracked",
        "severity": "medium",
        "created_at": "2025-01-12T20:36:00.000000Z",
        "resolved_at": null,
        "resolution": null
    }]);
    body
}

/// 404 for an order that does not exist, or not at the asking store.
pub fn order_not_found() -> Value {
    json!({"success": false, "error": "order_not_found", "message": "order g-1001 not found"})
}

/// 409 for a fulfillment step the lifecycle does not allow now.
pub fn step_out_of_turn() -> Value {
    json!({"success": false, "error": "invalid_transition", "message": "cannot pick_up an order that is store_notified; allowed now: acknowledge, reject_by_store, dispatch_early, cancel, fail"})
}

/// 400 for a body whose fields are out of bounds.
pub fn invalid_fields() -> Value {
    json!({"success": false, "error": "validation_failed", "message": "invalid order: reason must not be empty"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_read_back_as_the_real_types() {
        let order: Order = serde_json::from_value(order_response()["data"].clone()).unwrap();
        assert_eq!(order.status, OrderStatus::Preparing);
        assert_eq!(track_response()["next_poll_interval"], json!(60));
        let steps = simulation_started()["data"]["steps"].clone();
        assert_eq!(steps[7]["status"], json!("delivered"));
        assert_eq!(steps[7]["tracking_status"], json!("delivered"));
        assert_eq!(steps[7]["after_seconds"], json!(33.0));
        assert_eq!(stats_response()["data"]["orders_total"], json!(3));
    }
}
