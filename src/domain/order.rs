//! The order itself, the identifiers and amounts it is made of, and the one
//! function that computes an order's next state from a change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::status::{list, OrderStatus};
use super::time::Timestamp;
use super::workflow;

/// Longest id we accept, for order and customer ids alike.
pub const MAX_ID_LEN: usize = 64;
/// Longest free-text field (names, addresses) we accept, in characters.
pub const MAX_TEXT_LEN: usize = 500;
/// Most line items one order may carry.
pub const MAX_ITEMS: usize = 100;
/// Largest quantity of one line item.
pub const MAX_QUANTITY: i64 = 999;
/// Largest unit price, in the order's currency.
pub const MAX_UNIT_PRICE: f64 = 100_000.0;

/// Reads an identifier: 1 to [`MAX_ID_LEN`] characters of `A-Z a-z 0-9 _ - .`,
/// so ids are safe in URLs, logs and keys without escaping.
fn parse_id(kind: &str, s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(format!(
            "{kind} must be 1 to {MAX_ID_LEN} characters, got {}",
            s.len()
        ));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
    {
        return Err(format!(
            "{kind} may only contain letters, digits, '_', '-' and '.', found {bad:?}"
        ));
    }
    Ok(s.to_owned())
}

/// An order's id, as it appears in URLs (`/api/v1/orders/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "101")]
pub struct OrderId(String);

/// A path or body value that is not a usable order id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadId(pub String);

impl OrderId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for OrderId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_id("order id", s).map(OrderId).map_err(BadId)
    }
}

impl TryFrom<String> for OrderId {
    type Error = BadId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<OrderId> for String {
    fn from(id: OrderId) -> String {
        id.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The customer an order belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "1")]
pub struct CustomerId(String);

impl TryFrom<String> for CustomerId {
    type Error = BadId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        parse_id("customer_id", &s).map(CustomerId).map_err(BadId)
    }
}

impl From<CustomerId> for String {
    fn from(id: CustomerId) -> String {
        id.0
    }
}

/// How many changes an order has seen. It starts at 1 and grows by exactly one
/// per accepted change, so it doubles as a poll cursor and an `ETag`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[schema(value_type = u64, example = 3)]
pub struct Version(pub u64);

impl Version {
    pub const FIRST: Version = Version(1);

    pub fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A `version` value that is not a whole number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{given}' is not a version; versions are whole numbers such as 3")]
pub struct BadVersion {
    pub given: String,
}

impl FromStr for Version {
    type Err = BadVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(Version).map_err(|_| BadVersion {
            given: s.to_owned(),
        })
    }
}

/// An amount of money in cents, written to JSON as a decimal number (`12.99`).
/// Cents keep sums exact; the decimal form is what clients expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(u64);

impl Money {
    /// Reads a non-negative decimal amount with at most two decimals.
    pub fn from_decimal(amount: f64) -> Result<Money, String> {
        if !amount.is_finite() || amount < 0.0 {
            return Err(format!("must be a non-negative amount, got {amount}"));
        }
        if amount > MAX_UNIT_PRICE {
            return Err(format!("must be at most {MAX_UNIT_PRICE}, got {amount}"));
        }
        let cents = amount * 100.0;
        if (cents - cents.round()).abs() > 1e-6 {
            return Err(format!("must have at most two decimals, got {amount}"));
        }
        // Bounded above by MAX_UNIT_PRICE * 100, so the cast is exact.
        Ok(Money(cents.round() as u64))
    }

    pub const fn from_cents(cents: u64) -> Money {
        Money(cents)
    }

    pub fn cents(self) -> u64 {
        self.0
    }

    fn times(self, quantity: u32) -> Money {
        Money(self.0 * u64::from(quantity))
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        Money(iter.map(|m| m.0).sum())
    }
}

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Exact below 2^53 cents; orders are bounded far below that.
        serializer.serialize_f64(self.0 as f64 / 100.0)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let amount = f64::deserialize(deserializer)?;
        // Totals are sums of bounded prices, so they may exceed one price's cap.
        if amount.is_finite() && amount >= 0.0 {
            Ok(Money((amount * 100.0).round() as u64))
        } else {
            Err(serde::de::Error::custom(
                "amount must be a non-negative number",
            ))
        }
    }
}

impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some("An amount with at most two decimals."))
            .examples([serde_json::json!(12.99)])
            .into()
    }
}

impl utoipa::ToSchema for Money {}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderItem {
    /// What was ordered.
    #[schema(example = "Margherita Pizza")]
    pub name: String,
    /// How many of it.
    #[schema(example = 2, minimum = 1, maximum = 999)]
    pub quantity: u32,
    /// Price of one.
    pub unit_price: Money,
}

/// An order as every reader sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    pub created_at: Timestamp,
    /// When the order last changed. Strictly increasing per order, so it can be
    /// sent back verbatim as `last_update`.
    pub updated_at: Timestamp,
    /// When the order should arrive, re-estimated on every status change from
    /// the standard timeline; the delivery time once delivered; absent once
    /// cancelled.
    pub estimated_delivery: Option<Timestamp>,
    pub delivery_address: String,
    pub items: Vec<OrderItem>,
    /// Sum of `quantity × unit_price` over the items.
    pub total_amount: Money,
    pub restaurant_name: String,
    /// Grows by one on every change; usable as `?version=` and as the `ETag`.
    pub version: Version,
}

/// A change someone asks to make to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderChange {
    /// Move the order to another status (restaurant, driver or simulator).
    SetStatus(OrderStatus),
}

/// A change that the order's rules do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error(
        "order cannot go from {from} to {to}; allowed next statuses: {}",
        list(allowed)
    )]
    IllegalTransition {
        from: OrderStatus,
        to: OrderStatus,
        allowed: &'static [OrderStatus],
    },
}

impl Order {
    /// Creates a new order at version 1.
    pub fn create(id: OrderId, draft: NewOrder, now: Timestamp) -> Order {
        Order {
            id,
            customer_id: draft.customer_id,
            status: draft.status,
            created_at: now,
            updated_at: now,
            estimated_delivery: estimate(draft.status, now),
            delivery_address: draft.delivery_address,
            total_amount: draft
                .items
                .iter()
                .map(|i| i.unit_price.times(i.quantity))
                .sum(),
            items: draft.items,
            restaurant_name: draft.restaurant_name,
            version: Version::FIRST,
        }
    }

    /// The order after `change`, or `None` when the change would leave it as it
    /// is (setting the current status again is an idempotent no-op that must
    /// not bump the version or wake anyone).
    pub fn apply(&self, change: OrderChange, now: Timestamp) -> Result<Option<Order>, ChangeError> {
        match change {
            OrderChange::SetStatus(to) if to == self.status => Ok(None),
            OrderChange::SetStatus(to) if !self.status.can_become(to) => {
                Err(ChangeError::IllegalTransition {
                    from: self.status,
                    to,
                    allowed: self.status.allowed_next(),
                })
            }
            OrderChange::SetStatus(to) => {
                let updated_at = self.updated_at.advance_to(now);
                Ok(Some(Order {
                    status: to,
                    updated_at,
                    estimated_delivery: estimate(to, updated_at),
                    version: self.version.next(),
                    ..self.clone()
                }))
            }
        }
    }
}

/// The delivery estimate for an order that entered `status` at `at`.
fn estimate(status: OrderStatus, at: Timestamp) -> Option<Timestamp> {
    workflow::remaining(status).map(|left| at.plus(left))
}

/// What a client sends to create an order (`POST /api/v1/orders`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "id": "2001",
    "customer_id": "42",
    "restaurant_name": "Luigi's Pizzeria",
    "delivery_address": "12 Harbour Street, Springfield",
    "items": [
        {"name": "Margherita Pizza", "quantity": 2, "unit_price": 12.5},
        {"name": "Tiramisu", "quantity": 1, "unit_price": 6.0}
    ]
}))]
pub struct NewOrderInput {
    /// Optional id; one is generated when absent. Letters, digits, `_ - .`.
    pub id: Option<String>,
    pub customer_id: String,
    pub restaurant_name: String,
    pub delivery_address: String,
    /// 1 to 100 items. The total is computed from them.
    pub items: Vec<NewItemInput>,
}

/// One line item of [`NewOrderInput`].
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItemInput {
    pub name: String,
    /// 1 to 999.
    pub quantity: i64,
    /// Non-negative, at most two decimals.
    pub unit_price: f64,
}

/// A validated request to create an order. Only [`NewOrder::parse`] and the
/// sample seeding build one, so holding one means every field is acceptable.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: Option<OrderId>,
    pub customer_id: CustomerId,
    pub restaurant_name: String,
    pub delivery_address: String,
    pub items: Vec<OrderItem>,
    /// Where the order starts. Clients always start at `confirmed`; the sample
    /// orders start further along.
    pub status: OrderStatus,
}

/// Every problem found in a [`NewOrderInput`], so a client fixes all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid order: {}", .problems.join("; "))]
pub struct ValidationError {
    pub problems: Vec<String>,
}

fn text(field: &str, value: &str, problems: &mut Vec<String>) -> String {
    let value = value.trim();
    if value.is_empty() {
        problems.push(format!("{field} must not be empty"));
    } else if value.chars().count() > MAX_TEXT_LEN {
        problems.push(format!("{field} must be at most {MAX_TEXT_LEN} characters"));
    }
    value.to_owned()
}

impl NewOrder {
    pub fn parse(input: NewOrderInput) -> Result<NewOrder, ValidationError> {
        let mut problems = Vec::new();
        let id = match input.id.map(|id| id.parse::<OrderId>()) {
            Some(Err(BadId(why))) => {
                problems.push(why);
                None
            }
            other => other.and_then(Result::ok),
        };
        let customer_id = CustomerId::try_from(input.customer_id)
            .map_err(|BadId(why)| problems.push(why))
            .ok();
        let restaurant_name = text("restaurant_name", &input.restaurant_name, &mut problems);
        let delivery_address = text("delivery_address", &input.delivery_address, &mut problems);
        if input.items.is_empty() || input.items.len() > MAX_ITEMS {
            problems.push(format!(
                "items must hold 1 to {MAX_ITEMS} entries, got {}",
                input.items.len()
            ));
        }
        let mut items = Vec::with_capacity(input.items.len());
        for (n, item) in input.items.into_iter().enumerate() {
            let name = text(&format!("items[{n}].name"), &item.name, &mut problems);
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                problems.push(format!(
                    "items[{n}].quantity must be between 1 and {MAX_QUANTITY}, got {}",
                    item.quantity
                ));
            }
            let unit_price = Money::from_decimal(item.unit_price)
                .map_err(|why| problems.push(format!("items[{n}].unit_price {why}")))
                .unwrap_or_default();
            // In range after the check above; a failed check is reported, not stored.
            let quantity = u32::try_from(item.quantity).unwrap_or(0);
            items.push(OrderItem {
                name,
                quantity,
                unit_price,
            });
        }
        match customer_id {
            Some(customer_id) if problems.is_empty() => Ok(NewOrder {
                id,
                customer_id,
                restaurant_name,
                delivery_address,
                items,
                status: OrderStatus::Confirmed,
            }),
            _ => Err(ValidationError { problems }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> NewOrderInput {
        serde_json::from_value(serde_json::json!({
            "customer_id": "42",
            "restaurant_name": "Luigi's",
            "delivery_address": "12 Harbour Street",
            "items": [
                {"name": "Pizza", "quantity": 2, "unit_price": 12.99},
                {"name": "Cola", "quantity": 1, "unit_price": 0.1}
            ]
        }))
        .unwrap()
    }

    fn order() -> Order {
        let now = "2025-01-12T20:30:00Z".parse().unwrap();
        Order::create(
            "101".parse().unwrap(),
            NewOrder::parse(input()).unwrap(),
            now,
        )
    }

    #[test]
    fn totals_are_exact_and_serialize_as_decimals() {
        let order = order();
        assert_eq!(order.total_amount.cents(), 2 * 1299 + 10);
        let json = serde_json::to_value(&order).unwrap();
        assert_eq!(json["total_amount"], serde_json::json!(26.08));
        assert_eq!(json["items"][0]["unit_price"], serde_json::json!(12.99));
        assert_eq!(json["version"], serde_json::json!(1));
        assert_eq!(json["updated_at"], "2025-01-12T20:30:00.000000Z");
        let back: Order = serde_json::from_value(json).unwrap();
        assert_eq!(back, order);
    }

    #[test]
    fn every_problem_is_reported() {
        let mut bad = input();
        bad.id = Some("no spaces".into());
        bad.customer_id = String::new();
        bad.restaurant_name = "  ".into();
        bad.items[0].quantity = 0;
        bad.items[1].unit_price = 1.234;
        let err = NewOrder::parse(bad).unwrap_err();
        assert_eq!(err.problems.len(), 5, "{err}");
        let mut empty = input();
        empty.items.clear();
        assert!(NewOrder::parse(empty)
            .unwrap_err()
            .to_string()
            .contains("items must hold"));
    }

    #[test]
    fn status_change_bumps_version_and_time_and_eta() {
        let order = order();
        let later = "2025-01-12T20:33:00Z".parse().unwrap();
        let next = order
            .apply(OrderChange::SetStatus(OrderStatus::Preparing), later)
            .unwrap()
            .unwrap();
        assert_eq!(next.version, Version(2));
        assert_eq!(next.updated_at, later);
        assert!(
            next.estimated_delivery
                < order
                    .estimated_delivery
                    .map(|t| t.plus(chrono::TimeDelta::minutes(3)))
        );
        assert_eq!(next.created_at, order.created_at);
    }

    #[test]
    fn same_status_is_a_no_op_and_illegal_moves_list_allowed_ones() {
        let order = order();
        let now = Timestamp::new(chrono::Utc::now());
        assert_eq!(
            order.apply(OrderChange::SetStatus(OrderStatus::Confirmed), now),
            Ok(None)
        );
        let err = order
            .apply(OrderChange::SetStatus(OrderStatus::Delivered), now)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("allowed next statuses: preparing, cancelled"),
            "{err}"
        );
    }

    #[test]
    fn cancelled_orders_have_no_eta_and_delivered_ones_arrive_now() {
        let order = order();
        let now = order.updated_at;
        let cancelled = order
            .apply(OrderChange::SetStatus(OrderStatus::Cancelled), now)
            .unwrap()
            .unwrap();
        assert_eq!(cancelled.estimated_delivery, None);
        assert!(
            cancelled.updated_at > order.updated_at,
            "same-instant change still advances"
        );
    }
}
