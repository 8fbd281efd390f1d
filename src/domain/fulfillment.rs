//! What seed 003 tracks about fulfilling an order beyond its status: the
//! store, the delivery partner and driver, the times of each stage,
//! substitutions and issues; and the commands of the store, the driver, the
//! partner and the customer that change them.
//!
//! [`Order::apply`](super::Order::apply) decides a [`Fulfill`] command with
//! the lifecycle table ([`super::lifecycle`]) and [`Fulfillment::record`]
//! writes what it carries. Pure: no I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::lifecycle::TrackingStatus;
use super::order::{parse_id, BadId};
use super::time::Timestamp;

/// Longest free text of a substitution or an issue (reasons,
/// descriptions, resolutions), in characters.
pub const MAX_FULFILLMENT_TEXT: usize = 2_000;
/// Longest URL (tracking URLs, photos), in characters.
pub const MAX_URL_LEN: usize = 2_048;
/// Most substitutions one order may collect.
pub const MAX_SUBSTITUTIONS: usize = 100;
/// Most issues one order may collect.
pub const MAX_ISSUES: usize = 100;
/// Largest price difference of a substitution, either way.
pub const MAX_PRICE_DIFFERENCE: f64 = 100_000.0;

/// The store that fulfils an order: an identifier like an order id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "store-17")]
pub struct StoreId(String);

impl StoreId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StoreId {
    type Error = BadId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        parse_id("store_id", &s).map(StoreId).map_err(BadId)
    }
}

impl std::str::FromStr for StoreId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreId::try_from(s.to_owned())
    }
}

impl From<StoreId> for String {
    fn from(id: StoreId) -> String {
        id.0
    }
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who delivers the order (seed 003's `DeliveryProvider`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DeliveryProvider {
    Uber,
    Doordash,
    /// The store's own drivers.
    Internal,
}

/// The driver who delivers the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "driver_id": "drv-7", "name": "Sam Rivera", "phone": "+1-555-0100",
    "vehicle_type": "car", "vehicle_number": "7ABC123"
}))]
pub struct DriverDetails {
    pub driver_id: String,
    pub name: String,
    pub phone: String,
    /// `car`, `bike`, `scooter`, `walking`, ...
    pub vehicle_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vehicle_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_url: Option<String>,
}

/// A price change in cents, either way, written as a decimal (`-0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PriceDifference(i64);

impl PriceDifference {
    /// Reads a finite amount of at most [`MAX_PRICE_DIFFERENCE`] either way
    /// with at most two decimals.
    pub fn from_decimal(amount: f64) -> Result<PriceDifference, String> {
        if !amount.is_finite() || amount.abs() > MAX_PRICE_DIFFERENCE {
            return Err(format!(
                "price_difference must be a number between -{MAX_PRICE_DIFFERENCE} and {MAX_PRICE_DIFFERENCE}, got {amount}"
            ));
        }
        let cents = amount * 100.0;
        if (cents - cents.round()).abs() > 1e-6 {
            return Err(format!(
                "price_difference must have at most two decimals, got {amount}"
            ));
        }
        // Bounded by MAX_PRICE_DIFFERENCE * 100, so the cast is exact.
        Ok(PriceDifference(cents.round() as i64))
    }

    pub fn cents(self) -> i64 {
        self.0
    }
}

impl Serialize for PriceDifference {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0 as f64 / 100.0)
    }
}

impl<'de> Deserialize<'de> for PriceDifference {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PriceDifference::from_decimal(f64::deserialize(deserializer)?)
            .map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for PriceDifference {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some(
                "What the substitute costs more (positive) or less (negative), with at most two decimals.",
            ))
            .examples([serde_json::json!(-0.5)])
            .into()
    }
}

impl utoipa::ToSchema for PriceDifference {}

/// Where a substitution stands (seed 003's `SubstitutionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SubstitutionStatus {
    Pending,
    Approved,
    Rejected,
}

/// A picker's proposal to replace an item, and the customer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Substitution {
    /// `sub-1`, `sub-2`, ... in the order proposed.
    #[schema(example = "sub-1")]
    pub id: String,
    pub original_item_id: String,
    pub substitute_item_id: String,
    pub reason: String,
    pub status: SubstitutionStatus,
    pub price_difference: PriceDifference,
    /// When the customer was told (when it was proposed).
    pub customer_notified_at: Timestamp,
    pub customer_responded_at: Option<Timestamp>,
    /// Which stay in `substitutions_needed` proposed it: the customer's
    /// answers to one round decide where the order goes next.
    pub round: u32,
}

/// How bad an issue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// A problem someone reported with the order (seed 003's `OrderIssue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Issue {
    /// `issue-1`, `issue-2`, ... in the order reported.
    #[schema(example = "issue-1")]
    pub id: String,
    #[schema(example = "item_damaged")]
    pub issue_type: String,
    pub description: String,
    pub severity: Severity,
    pub created_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub resolution: Option<String>,
}

/// Seed 003's fulfillment record of an order, beside its status. Orders
/// created through seed 004's API start without one; the first fulfillment
/// command gives them one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct Fulfillment {
    /// The store that fulfils the order; absent for seed 004 orders, which
    /// name a restaurant instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<StoreId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_provider: Option<DeliveryProvider>,
    pub store_acknowledgment_time: Option<Timestamp>,
    /// When the store expects the order to be ready, as it acknowledged.
    pub estimated_ready_time: Option<Timestamp>,
    pub picking_start_time: Option<Timestamp>,
    pub picking_complete_time: Option<Timestamp>,
    pub delivery_pickup_time: Option<Timestamp>,
    pub actual_delivery_time: Option<Timestamp>,
    pub delivery_tracking_id: Option<String>,
    pub delivery_tracking_url: Option<String>,
    pub driver_details: Option<DriverDetails>,
    pub substitutions: Vec<Substitution>,
    pub issues: Vec<Issue>,
    /// What the creator attached, as given.
    pub metadata: Map<String, Value>,
    /// A store, partner or dispatcher gave the delivery estimate: status
    /// changes keep it instead of re-estimating from the standard timeline.
    #[serde(default)]
    pub eta_given: bool,
}

impl Fulfillment {
    /// Stamps the time a stage starts when the order enters `status`.
    pub fn entered(&mut self, status: TrackingStatus, now: Timestamp) {
        use TrackingStatus::*;
        let stamp = match status {
            StoreAcknowledged => &mut self.store_acknowledgment_time,
            PickingInProgress => &mut self.picking_start_time,
            ReadyForPickup => &mut self.picking_complete_time,
            DriverPickupComplete => &mut self.delivery_pickup_time,
            Delivered => &mut self.actual_delivery_time,
            _ => return,
        };
        // The first time counts: going back to picking after rejected
        // substitutions does not restart it.
        stamp.get_or_insert(now);
    }

    /// The pending substitutions.
    pub fn pending(&self) -> impl Iterator<Item = &Substitution> {
        self.substitutions
            .iter()
            .filter(|sub| sub.status == SubstitutionStatus::Pending)
    }

    /// The round a substitution proposed now belongs to: the current one
    /// while the order waits for the customer's answers, else a new one.
    pub fn round_for_proposal(&self, status: TrackingStatus) -> u32 {
        let last = self.substitutions.last().map_or(0, |sub| sub.round);
        if status == TrackingStatus::SubstitutionsNeeded {
            last.max(1)
        } else {
            last + 1
        }
    }
}

/// A substitution as a picker proposes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubstitution {
    pub original_item_id: String,
    pub substitute_item_id: String,
    pub reason: String,
    pub price_difference: PriceDifference,
}

/// An issue as someone reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIssue {
    pub issue_type: String,
    pub description: String,
    pub severity: Severity,
}

/// A driver assignment, as the dispatcher or partner sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub driver: DriverDetails,
    pub delivery_tracking_id: Option<String>,
    pub delivery_tracking_url: Option<String>,
    pub estimated_delivery_time: Option<Timestamp>,
}

/// A delivery partner whose webhooks we take.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Partner {
    Uber,
    Doordash,
}

/// What one partner event reports about an order: where the delivery is
/// (if it says), and the driver, estimate and tracking link it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerUpdate {
    pub partner: Partner,
    /// The partner's own name for the event (`pickup_complete`,
    /// `DASHER_PICKED_UP`), for the history.
    pub event: String,
    /// The fine status the event reports; `None` for events that only add
    /// information (a delivery created, a dasher arriving at the store).
    pub target: Option<TrackingStatus>,
    pub driver: Option<DriverDetails>,
    pub estimated_delivery_time: Option<Timestamp>,
    pub delivery_tracking_id: Option<String>,
    pub delivery_tracking_url: Option<String>,
}

impl PartnerUpdate {
    /// Where the order goes from `current` on this report, with the
    /// statuses it passes: forward by the partner's steps, or nowhere when
    /// the report is stale (the order is past it), out of turn, or only
    /// adds information. A driver reported before the order is ready is
    /// recorded and takes it when the store marks it ready.
    pub fn path(&self, current: TrackingStatus) -> Vec<TrackingStatus> {
        match self.target {
            Some(target) if target != current => {
                super::lifecycle::partner_path(current, target).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Whether the report is ignored at `current`: it names a status the
    /// order cannot reach from there (it is past it), so the state does not
    /// regress. An early driver assignment is not ignored: it is recorded.
    pub fn ignored_at(&self, current: TrackingStatus) -> bool {
        let early_dispatch = self.target == Some(TrackingStatus::DriverAssigned)
            && matches!(
                current.coarse(),
                super::OrderStatus::Confirmed | super::OrderStatus::Preparing
            );
        self.target.is_some_and(|target| target != current)
            && self.path(current).is_empty()
            && !early_dispatch
    }
}

/// What a new order of seed 003 carries beyond seed 004's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFulfillment {
    pub store_id: StoreId,
    pub delivery_provider: DeliveryProvider,
    pub estimated_delivery_time: Option<Timestamp>,
    pub metadata: Map<String, Value>,
}

/// A fulfillment command: one endpoint of seed 003 (or a partner's event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfill {
    /// An explicit move to a fine status (`PUT /tracking/orders/{id}/status`).
    MoveTo(TrackingStatus),
    /// The store's feed delivered the order to its store.
    NotifyStore,
    Acknowledge {
        estimated_ready_time: Option<Timestamp>,
    },
    StartPicking,
    /// The store refuses the order; the reason goes in the event's notes.
    RejectByStore,
    ProposeSubstitution(NewSubstitution),
    /// The customer answers one substitution.
    DecideSubstitution {
        id: String,
        approve: bool,
    },
    MarkReady,
    AssignDriver(Box<Assignment>),
    PickUp,
    Deliver,
    ReportIssue(NewIssue),
    ResolveIssue {
        id: String,
        resolution: String,
    },
    /// A delivery partner's event (a verified webhook).
    Partner(Box<PartnerUpdate>),
}

/// What `POST /tracking/orders/{order_id}/init` carries (seed 003).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "store_id": "store-17",
    "customer_id": "42",
    "delivery_provider": "internal",
    "delivery_address": "12 Harbour Street, Springfield",
    "items": [{"name": "Whole milk 1l", "quantity": 2, "unit_price": 1.25}],
    "estimated_delivery_time": "2025-01-12T21:05:00Z",
    "metadata": {"channel": "app"}
}))]
pub struct InitInput {
    #[schema(value_type = String, example = "store-17")]
    pub store_id: String,
    pub customer_id: String,
    pub delivery_provider: DeliveryProvider,
    /// Where to deliver; may be given later by other systems.
    pub delivery_address: Option<String>,
    /// What was ordered: 0 to 100 lines, as in `POST /api/v1/orders`.
    #[serde(default)]
    pub items: Vec<super::order::NewItemInput>,
    /// When the order should arrive, if the caller knows better than the
    /// standard timeline; kept until a partner or dispatcher gives another.
    pub estimated_delivery_time: Option<Timestamp>,
    /// Anything else to keep with the order: a JSON object of at most 16 KB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

impl InitInput {
    /// The order to create as `id`, or every problem with the input.
    pub fn parse(self, id: super::OrderId) -> Result<super::NewOrder, super::ValidationError> {
        let mut problems = Vec::new();
        let store_id = StoreId::try_from(self.store_id)
            .map_err(|BadId(why)| problems.push(why))
            .ok();
        let customer_id = super::CustomerId::try_from(self.customer_id)
            .map_err(|BadId(why)| problems.push(why))
            .ok();
        let delivery_address = match self.delivery_address {
            Some(address) => super::order::text("delivery_address", &address, &mut problems),
            None => String::new(),
        };
        let items = super::order::items(self.items, &mut problems);
        let metadata = self.metadata.unwrap_or_default();
        if let Err(super::BadAttribution(why)) =
            super::Attribution::parse(None, None, Some(metadata.clone()))
        {
            problems.push(why);
        }
        match (store_id, customer_id) {
            (Some(store_id), Some(customer_id)) if problems.is_empty() => Ok(super::NewOrder {
                id: Some(id),
                customer_id,
                restaurant_name: store_id.as_str().to_owned(),
                delivery_address,
                items,
                status: super::OrderStatus::Confirmed,
                fulfillment: Some(NewFulfillment {
                    store_id,
                    delivery_provider: self.delivery_provider,
                    estimated_delivery_time: self.estimated_delivery_time,
                    metadata,
                }),
            }),
            _ => Err(super::ValidationError { problems }),
        }
    }
}

impl NewSubstitution {
    /// Checks a proposal, reporting every problem.
    pub fn parse(
        original_item_id: &str,
        substitute_item_id: &str,
        reason: &str,
        price_difference: f64,
    ) -> Result<NewSubstitution, super::ValidationError> {
        let mut problems = Vec::new();
        let short = super::order::MAX_TEXT_LEN;
        let new = NewSubstitution {
            original_item_id: bounded_text(
                "original_item_id",
                original_item_id,
                short,
                &mut problems,
            ),
            substitute_item_id: bounded_text(
                "substitute_item_id",
                substitute_item_id,
                short,
                &mut problems,
            ),
            reason: required_text("reason", reason, &mut problems),
            price_difference: PriceDifference::from_decimal(price_difference)
                .map_err(|why| problems.push(why))
                .unwrap_or_default(),
        };
        super::ValidationError::unless(problems, new)
    }
}

impl NewIssue {
    /// Checks a report, reporting every problem.
    pub fn parse(
        issue_type: &str,
        description: &str,
        severity: Severity,
    ) -> Result<NewIssue, super::ValidationError> {
        let mut problems = Vec::new();
        let new = NewIssue {
            issue_type: bounded_text("issue_type", issue_type, 64, &mut problems),
            description: required_text("description", description, &mut problems),
            severity,
        };
        super::ValidationError::unless(problems, new)
    }
}

impl Assignment {
    /// Checks an assignment, reporting every problem.
    pub fn parse(
        input: DriverDetails,
        delivery_tracking_id: Option<String>,
        delivery_tracking_url: Option<String>,
        estimated_delivery_time: Option<Timestamp>,
    ) -> Result<Assignment, super::ValidationError> {
        let mut problems = Vec::new();
        let assignment = Assignment {
            driver: driver(input, &mut problems),
            delivery_tracking_id: optional_text(
                "delivery_tracking_id",
                delivery_tracking_id,
                &mut problems,
            ),
            delivery_tracking_url: optional_url(
                "delivery_tracking_url",
                delivery_tracking_url,
                &mut problems,
            ),
            estimated_delivery_time,
        };
        super::ValidationError::unless(problems, assignment)
    }
}

/// Checks a required free-text field: trimmed, not empty, at most
/// [`MAX_FULFILLMENT_TEXT`] characters.
pub fn required_text(field: &str, value: &str, problems: &mut Vec<String>) -> String {
    bounded_text(field, value, MAX_FULFILLMENT_TEXT, problems)
}

/// Like [`required_text`] with another bound.
pub fn bounded_text(field: &str, value: &str, max: usize, problems: &mut Vec<String>) -> String {
    let value = value.trim();
    if value.is_empty() {
        problems.push(format!("{field} must not be empty"));
    } else if value.chars().count() > max {
        problems.push(format!("{field} must be at most {max} characters"));
    }
    value.to_owned()
}

/// Checks an optional URL: absolute `http(s)`, at most [`MAX_URL_LEN`].
pub fn optional_url(
    field: &str,
    value: Option<String>,
    problems: &mut Vec<String>,
) -> Option<String> {
    let value = value
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())?;
    if value.chars().count() > MAX_URL_LEN {
        problems.push(format!("{field} must be at most {MAX_URL_LEN} characters"));
    } else if !(value.starts_with("https://") || value.starts_with("http://")) {
        problems.push(format!(
            "{field} must be an absolute http(s) URL, got '{}'",
            value.chars().take(80).collect::<String>()
        ));
    }
    Some(value)
}

/// Checks an optional identifier-like value (tracking ids): at most
/// [`super::order::MAX_TEXT_LEN`] characters, not blank.
pub fn optional_text(
    field: &str,
    value: Option<String>,
    problems: &mut Vec<String>,
) -> Option<String> {
    let value = value
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())?;
    if value.chars().count() > super::order::MAX_TEXT_LEN {
        problems.push(format!(
            "{field} must be at most {} characters",
            super::order::MAX_TEXT_LEN
        ));
    }
    Some(value)
}

/// Checks a driver's details, reporting every problem.
pub fn driver(input: DriverDetails, problems: &mut Vec<String>) -> DriverDetails {
    let short = super::order::MAX_TEXT_LEN;
    DriverDetails {
        driver_id: parse_id("driver.driver_id", &input.driver_id)
            .map_err(|why| problems.push(why))
            .unwrap_or_default(),
        name: bounded_text("driver.name", &input.name, short, problems),
        phone: bounded_text("driver.phone", &input.phone, 64, problems),
        vehicle_type: bounded_text("driver.vehicle_type", &input.vehicle_type, 64, problems),
        vehicle_number: optional_text("driver.vehicle_number", input.vehicle_number, problems),
        photo_url: optional_url("driver.photo_url", input.photo_url, problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::{Actor, LifecycleError};
    use crate::domain::order::{ChangeError, NewOrder, NewOrderInput, Order, OrderChange};
    use crate::domain::OrderStatus;
    use TrackingStatus::*;

    fn now() -> Timestamp {
        "2025-01-12T20:30:00Z".parse().unwrap()
    }

    fn order() -> Order {
        let input: NewOrderInput = serde_json::from_value(serde_json::json!({
            "customer_id": "c1",
            "restaurant_name": "store-1",
            "delivery_address": "1 Main St",
            "items": [{"name": "Milk", "quantity": 1, "unit_price": 1.5}]
        }))
        .unwrap();
        let mut draft = NewOrder::parse(input).unwrap();
        draft.fulfillment = Some(NewFulfillment {
            store_id: "store-1".parse().unwrap(),
            delivery_provider: DeliveryProvider::Internal,
            estimated_delivery_time: None,
            metadata: Map::new(),
        });
        Order::create("o1".parse().unwrap(), draft, now())
    }

    fn run(order: &Order, command: Fulfill, actor: Actor) -> Result<Order, ChangeError> {
        order
            .apply(
                &OrderChange::Fulfill {
                    command,
                    actor,
                    at_store: None,
                },
                now(),
            )
            .map(|next| next.expect("a change"))
    }

    fn substitution(item: &str) -> Fulfill {
        Fulfill::ProposeSubstitution(NewSubstitution {
            original_item_id: item.into(),
            substitute_item_id: format!("{item}-alt"),
            reason: "out of stock".into(),
            price_difference: PriceDifference::from_decimal(-0.25).unwrap(),
        })
    }

    fn decide(id: &str, approve: bool) -> Fulfill {
        Fulfill::DecideSubstitution {
            id: id.into(),
            approve,
        }
    }

    fn driver() -> Fulfill {
        Fulfill::AssignDriver(Box::new(Assignment {
            driver: DriverDetails {
                driver_id: "drv-1".into(),
                name: "Sam".into(),
                phone: "+1-555-0100".into(),
                vehicle_type: "car".into(),
                vehicle_number: None,
                photo_url: None,
            },
            delivery_tracking_id: Some("trk-1".into()),
            delivery_tracking_url: None,
            estimated_delivery_time: None,
        }))
    }

    #[test]
    fn the_whole_flow_stamps_each_stage_and_projects_the_coarse_status() {
        use Actor::*;
        let steps = [
            (Fulfill::NotifyStore, Operator, StoreNotified),
            (
                Fulfill::Acknowledge {
                    estimated_ready_time: None,
                },
                Store,
                StoreAcknowledged,
            ),
            (Fulfill::StartPicking, Store, PickingInProgress),
            (substitution("milk"), Store, SubstitutionsNeeded),
            (decide("sub-1", true), Customer, SubstitutionsApproved),
            (Fulfill::MarkReady, Store, ReadyForPickup),
            (driver(), Operator, DriverAssigned),
            (Fulfill::PickUp, Driver, DriverPickupComplete),
            (Fulfill::MoveTo(InTransit), Driver, InTransit),
            (Fulfill::Deliver, Driver, Delivered),
        ];
        let mut order = order();
        assert_eq!(order.tracking_status(), Some(Submitted));
        for (n, (command, actor, status)) in steps.into_iter().enumerate() {
            order = run(&order, command, actor).unwrap();
            assert_eq!(order.tracking_status(), Some(status));
            assert_eq!(order.status, status.coarse());
            assert_eq!(order.version.0, n as u64 + 2);
        }
        let f = order.fulfillment.as_deref().unwrap();
        for stamp in [
            f.store_acknowledgment_time,
            f.picking_start_time,
            f.picking_complete_time,
            f.delivery_pickup_time,
            f.actual_delivery_time,
        ] {
            assert!(stamp.is_some());
        }
        assert_eq!(f.substitutions[0].status, SubstitutionStatus::Approved);
        assert_eq!(f.delivery_tracking_id.as_deref(), Some("trk-1"));
        assert_eq!(order.estimated_delivery, Some(order.updated_at));
    }

    #[test]
    fn substitutions_are_decided_per_round() {
        use Actor::*;
        let mut order = order();
        for command in [
            Fulfill::Acknowledge {
                estimated_ready_time: None,
            },
            Fulfill::StartPicking,
            substitution("a"),
            substitution("b"),
        ] {
            order = run(&order, command, Store).unwrap();
        }
        // One answer of two: still waiting.
        order = run(&order, decide("sub-1", false), Customer).unwrap();
        assert_eq!(order.tracking_status(), Some(SubstitutionsNeeded));
        // Deciding twice is refused; an unknown one is not found.
        assert!(matches!(
            run(&order, decide("sub-1", true), Customer),
            Err(ChangeError::AlreadyDecided { .. })
        ));
        assert!(matches!(
            run(&order, decide("sub-9", true), Customer),
            Err(ChangeError::UnknownSubstitution(_))
        ));
        // All rejected: back to picking.
        order = run(&order, decide("sub-2", false), Customer).unwrap();
        assert_eq!(order.tracking_status(), Some(PickingInProgress));
        // A new round; its approval is its own.
        order = run(&order, substitution("c"), Store).unwrap();
        let sub = order
            .fulfillment
            .as_ref()
            .unwrap()
            .substitutions
            .last()
            .cloned();
        assert_eq!(sub.map(|s| (s.id, s.round)), Some(("sub-3".into(), 2)));
        assert!(matches!(
            run(&order, decide("sub-3", true), Store),
            Err(ChangeError::Lifecycle(LifecycleError::NotYours { .. }))
        ));
        order = run(&order, decide("sub-3", true), Customer).unwrap();
        assert_eq!(order.tracking_status(), Some(SubstitutionsApproved));
    }

    #[test]
    fn a_driver_dispatched_early_is_assigned_when_the_order_is_ready() {
        use Actor::*;
        let mut order = order();
        order = run(&order, driver(), Partner).unwrap();
        assert_eq!(order.tracking_status(), Some(Submitted), "history only");
        for command in [
            Fulfill::Acknowledge {
                estimated_ready_time: None,
            },
            Fulfill::StartPicking,
            Fulfill::MarkReady,
        ] {
            order = run(&order, command, Store).unwrap();
        }
        assert_eq!(order.tracking_status(), Some(DriverAssigned));
        assert_eq!(order.status, OrderStatus::Ready);
    }

    #[test]
    fn store_rejection_returns_the_order_for_reassignment() {
        let mut order = order();
        order = run(
            &order,
            Fulfill::Acknowledge {
                estimated_ready_time: Some(now()),
            },
            Actor::Store,
        )
        .unwrap();
        order = run(&order, Fulfill::RejectByStore, Actor::Store).unwrap();
        assert_eq!(order.tracking_status(), Some(Submitted));
        let f = order.fulfillment.as_deref().unwrap();
        assert_eq!(f.store_acknowledgment_time, None);
        assert_eq!(f.estimated_ready_time, None);
    }

    #[test]
    fn explicit_moves_take_one_step_and_say_what_is_allowed() {
        let order = order();
        let err = run(&order, Fulfill::MoveTo(InTransit), Actor::Operator).unwrap_err();
        assert_eq!(
            err.to_string(),
            "order cannot go from submitted to in_transit; allowed next statuses: store_notified, store_acknowledged, cancelled, failed"
        );
        let same = order
            .apply(
                &OrderChange::Fulfill {
                    command: Fulfill::MoveTo(Submitted),
                    actor: Actor::Operator,
                    at_store: None,
                },
                now(),
            )
            .unwrap();
        assert_eq!(same, None, "the same status is a no-op");
        let mut picking = order.clone();
        for status in [StoreAcknowledged, PickingInProgress] {
            picking = run(&picking, Fulfill::MoveTo(status), Actor::Operator).unwrap();
        }
        assert!(matches!(
            run(
                &picking,
                Fulfill::MoveTo(SubstitutionsNeeded),
                Actor::Operator
            ),
            Err(ChangeError::NeedsEndpoint { .. })
        ));
    }

    #[test]
    fn a_store_cannot_touch_another_stores_order() {
        let order = order();
        let err = order
            .apply(
                &OrderChange::Fulfill {
                    command: Fulfill::StartPicking,
                    actor: Actor::Store,
                    at_store: Some("store-2".parse().unwrap()),
                },
                now(),
            )
            .unwrap_err();
        assert_eq!(err, ChangeError::NotAtStore);
    }

    #[test]
    fn seed_004_moves_walk_the_fine_lifecycle() {
        let mut order = order();
        let coarse = [
            (OrderStatus::Preparing, PickingInProgress),
            (OrderStatus::Ready, ReadyForPickup),
            (OrderStatus::PickedUp, DriverPickupComplete),
            (OrderStatus::Delivered, Delivered),
        ];
        for (to, fine) in coarse {
            order = order
                .apply(&OrderChange::SetStatus(to), now())
                .unwrap()
                .unwrap();
            assert_eq!(order.tracking_status(), Some(fine));
        }
        let f = order.fulfillment.as_deref().unwrap();
        assert!(f.store_acknowledgment_time.is_some(), "passed on the way");
        assert!(f.delivery_pickup_time.is_some());
    }

    #[test]
    fn issues_are_reported_and_resolved_once() {
        let mut order = order();
        let issue = NewIssue {
            issue_type: "item_damaged".into(),
            description: "Eggs cracked".into(),
            severity: Severity::High,
        };
        order = run(&order, Fulfill::ReportIssue(issue), Actor::Customer).unwrap();
        assert_eq!(order.tracking_status(), Some(Submitted));
        let resolve = Fulfill::ResolveIssue {
            id: "issue-1".into(),
            resolution: "Refunded".into(),
        };
        order = run(&order, resolve.clone(), Actor::Operator).unwrap();
        let issue = &order.fulfillment.as_ref().unwrap().issues[0];
        assert_eq!(issue.resolution.as_deref(), Some("Refunded"));
        assert_eq!(
            run(&order, resolve, Actor::Operator),
            Err(ChangeError::AlreadyResolved("issue-1".into()))
        );
    }

    #[test]
    fn price_differences_are_exact_cents_either_way() {
        let diff = PriceDifference::from_decimal(-1.25).unwrap();
        assert_eq!(diff.cents(), -125);
        assert_eq!(
            serde_json::to_value(diff).unwrap(),
            serde_json::json!(-1.25)
        );
        assert!(PriceDifference::from_decimal(f64::NAN).is_err());
        assert!(PriceDifference::from_decimal(0.001).is_err());
        assert!(PriceDifference::from_decimal(1e9).is_err());
    }
}
