//! The unit the notification path carries: one version of one order, with its
//! JSON rendered once.

use serde_json::value::RawValue;

use super::order::{Order, Version};

/// An immutable version of an order, shared (`Arc`) by every reader.
///
/// The JSON is rendered when the version is made, so waking a thousand
/// pollers copies bytes a thousand times instead of serializing a thousand
/// times.
#[derive(Debug)]
pub struct OrderSnapshot {
    /// The order as of this version.
    order: Order,
    /// `order` rendered as JSON, embedded verbatim into responses.
    json: Box<RawValue>,
}

impl OrderSnapshot {
    pub fn new(order: Order) -> OrderSnapshot {
        // Invariant: `Order` is plain data with string keys and finite numbers,
        // which serde_json always serializes.
        let json =
            serde_json::value::to_raw_value(&order).expect("an order always serializes to JSON");
        OrderSnapshot { order, json }
    }

    pub fn order(&self) -> &Order {
        &self.order
    }

    pub fn version(&self) -> Version {
        self.order.version
    }

    /// The order's JSON, ready to embed in a response body.
    pub fn json(&self) -> &RawValue {
        &self.json
    }
}
