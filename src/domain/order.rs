//! The order itself, the identifiers and amounts it is made of, and the one
//! function that computes an order's next state from a change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::fulfillment::{
    Fulfill, Fulfillment, NewFulfillment, Substitution, SubstitutionStatus, MAX_ISSUES,
    MAX_SUBSTITUTIONS,
};
use super::lifecycle::{self, Actor, LifecycleError, Step, TrackingStatus};
use super::status::{list, OrderStatus};
use super::time::Timestamp;
use super::workflow;
use super::StoreId;

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
/// Order ids that cannot be used because they are fixed path segments beside
/// `{id}` under `/api/v1/orders/` (`/initiate`, `/followup`, `/tracking/…`,
/// `/system/stats`): the router sends those paths to their own endpoints, so
/// an order with such an id could never be read, tracked or changed.
pub const RESERVED_ORDER_IDS: [&str; 4] = ["initiate", "followup", "tracking", "system"];

/// What an order id looks like, as an ECMA-262 regular expression for the
/// OpenAPI document: letters, digits, `_ - .`, at least one of them not a
/// dot. With a length of 1 to [`MAX_ID_LEN`] (the schema's `maxLength`) and
/// none of [`RESERVED_ORDER_IDS`], that is exactly what [`OrderId`] accepts;
/// a unit test checks the two agree. No look-ahead, so validators built on
/// RE2-like engines can use it too.
pub const ORDER_ID_PATTERN: &str = "^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$";

/// Reads an identifier: 1 to [`MAX_ID_LEN`] characters of `A-Z a-z 0-9 _ - .`,
/// so ids are safe in URLs, logs and keys without escaping.
pub(crate) fn parse_id(kind: &str, s: &str) -> Result<String, String> {
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

/// An order's id, as it appears in URLs (`/api/v1/orders/{id}`): an
/// identifier (see `parse_id`) with at least one character other than `.`,
/// and not one of [`RESERVED_ORDER_IDS`].
///
/// `.` and `..` are URL path segments meaning "this" and "the parent":
/// clients resolve them before sending (`/api/v1/orders/../track` goes out as
/// `/api/v1/track`), so such an order could never be read, tracked or
/// changed. Ids of dots alone (`...`) are refused with them: the rule "at
/// least one letter, digit, `_` or `-`" is simpler to state and to check
/// than "not `.` or `..`", and no real id is all dots.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
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
        let id = parse_id("order id", s).map_err(BadId)?;
        if id.bytes().all(|b| b == b'.') {
            return Err(BadId(format!(
                "order id must contain a character other than '.': '.' and '..' are URL path segments (this and the parent), got '{s}'"
            )));
        }
        if RESERVED_ORDER_IDS.contains(&s) {
            return Err(BadId(format!(
                "order id '{s}' is reserved (it is a path of the API); reserved ids are: {}",
                RESERVED_ORDER_IDS.join(", ")
            )));
        }
        Ok(OrderId(id))
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

impl utoipa::PartialSchema for OrderId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_ID_LEN))
            .pattern(Some(ORDER_ID_PATTERN))
            .description(Some(format!(
                "An order's id, as it appears in URLs (`/api/v1/orders/{{id}}`): 1 to \
                 {MAX_ID_LEN} letters, digits, `_`, `-` and `.`, not only dots (`.` and `..` \
                 are URL path segments), and none of the reserved path segments {}.",
                RESERVED_ORDER_IDS.map(|id| format!("`{id}`")).join(", ")
            )))
            .examples(["101"])
            .into()
    }
}

impl utoipa::ToSchema for OrderId {}

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

/// How the search for a seller is going, for an order that began as an order
/// request. The customer sees it in the order, and every change to it is a
/// new version, so parked polls wake on seller-search progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"attempt": 1, "sellers_contacted": 3, "proposals_received": 2}))]
pub struct SellerSearch {
    /// Processing rounds started: 1 at the first initiate, one more for each
    /// initiate after an earlier round's stream ended without an outcome.
    pub attempt: u32,
    /// Sellers the current round asked for a proposal.
    pub sellers_contacted: u32,
    /// Proposals the current round received.
    pub proposals_received: u32,
}

impl SellerSearch {
    const FIRST: SellerSearch = SellerSearch {
        attempt: 1,
        sellers_contacted: 0,
        proposals_received: 0,
    };
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
    /// the standard timeline; the delivery time once delivered; absent while
    /// a seller is still sought (`requested`) and once cancelled or expired.
    pub estimated_delivery: Option<Timestamp>,
    /// Where to deliver. Empty when an order request did not give one.
    pub delivery_address: String,
    /// What was ordered. Empty when an order request did not list items.
    pub items: Vec<OrderItem>,
    /// Sum of `quantity × unit_price` over the items.
    pub total_amount: Money,
    /// Who prepares the order. Empty while an order request is `requested`;
    /// the seller whose proposal was accepted once it is `confirmed`.
    pub restaurant_name: String,
    /// Grows by one on every change; usable as `?version=` and as the `ETag`.
    pub version: Version,
    /// Present only for orders that began as an order request: how the
    /// search for a seller went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_search: Option<SellerSearch>,
    /// Seed 003's fine status, of which `status` is the projection. Absent
    /// while an order request is `requested` and once it `expired` (those
    /// come before and instead of fulfillment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_status: Option<TrackingStatus>,
    /// Seed 003's fulfillment record (store, driver, stage times,
    /// substitutions, issues), once the order has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfillment: Option<Box<Fulfillment>>,
}

/// A change someone asks to make to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderChange {
    /// Move the order to another status (restaurant, driver or simulator).
    /// Never sets `requested` or `expired`, and never confirms a requested
    /// order: those are the processor's changes below. The fine status moves
    /// along the lifecycle table to the target's canonical fine status.
    SetStatus(OrderStatus),
    /// A command of seed 003's fulfillment lifecycle, by `actor`. With
    /// `at_store`, the order must belong to that store (else it is not
    /// found, so stores cannot probe each other's orders).
    Fulfill {
        command: Fulfill,
        actor: Actor,
        at_store: Option<StoreId>,
    },
    /// The order-request processor's progress in the current round: absolute
    /// counts, so a repeated report changes nothing.
    SearchProgress {
        sellers_contacted: u32,
        proposals_received: u32,
    },
    /// A new processing round starts for a requested order whose previous
    /// round ended without an outcome (stopped, failed).
    RestartSearch,
    /// A seller's proposal was accepted: the order is confirmed and that
    /// seller prepares it.
    AcceptProposal { seller: String },
    /// No seller proposed before the request's expiry.
    Expire,
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
    /// A status change asked for a move only the order-request processor
    /// makes.
    #[error("{}; allowed next statuses: {}", processor_only(*from, *to), list(allowed))]
    ProcessorOnly {
        from: OrderStatus,
        to: OrderStatus,
        allowed: &'static [OrderStatus],
    },
    /// A seller-search change for an order that is no longer (or never was)
    /// looking for a seller.
    #[error("order is {status}, not requested; seller-search changes apply only while a seller is being sought")]
    NotRequested { status: OrderStatus },
    /// A fulfillment step the lifecycle table does not allow now, or not
    /// to this actor.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// An explicit move to a fine status no single step reaches.
    #[error(
        "order cannot go from {from} to {to}; allowed next statuses: {}",
        fine_list(allowed)
    )]
    IllegalMove {
        from: TrackingStatus,
        to: TrackingStatus,
        allowed: Vec<TrackingStatus>,
    },
    /// An explicit move that needs what only its own endpoint carries.
    #[error("{to} is reached through {endpoint}, not by setting the status")]
    NeedsEndpoint {
        to: TrackingStatus,
        endpoint: &'static str,
    },
    /// A seed 004 move that passes a step the customer must answer first.
    #[error(
        "order is {from}: the customer must answer the pending substitutions before it can be {to}"
    )]
    AwaitingCustomer {
        from: TrackingStatus,
        to: OrderStatus,
    },
    /// A seed 004 move the lifecycle table has no way to make from the
    /// order's fine status.
    #[error("order is {from}: the lifecycle has no way from there to {to}")]
    NoPath {
        from: TrackingStatus,
        to: OrderStatus,
    },
    /// A fulfillment command for an order request still seeking a seller.
    #[error("order is {status}: fulfillment starts once a seller's proposal is accepted")]
    NotFulfilling { status: OrderStatus },
    /// The order does not belong to the store that asked (answered as not
    /// found).
    #[error("order not found at this store")]
    NotAtStore,
    #[error("substitution {0} not found")]
    UnknownSubstitution(String),
    #[error("substitution {id} was already {status}")]
    AlreadyDecided {
        id: String,
        status: SubstitutionStatus,
    },
    #[error("issue {0} not found")]
    UnknownIssue(String),
    #[error("issue {0} was already resolved")]
    AlreadyResolved(String),
    /// The order holds as many substitutions or issues as it may.
    #[error("order already has {max} {what}, the most it may hold")]
    TooMany { what: &'static str, max: usize },
}

/// `a, b, c` for fine statuses.
fn fine_list(statuses: &[TrackingStatus]) -> String {
    if statuses.is_empty() {
        return "none (the order is final)".to_owned();
    }
    let names: Vec<&str> = statuses.iter().map(|s| s.into()).collect();
    names.join(", ")
}

/// Why a status change cannot make a processor's move, for people.
fn processor_only(from: OrderStatus, to: OrderStatus) -> String {
    match to {
        OrderStatus::Requested => {
            "requested is set only when an order request is initiated, never by a status change"
                .to_owned()
        }
        OrderStatus::Expired => "expired is set only by the order-request processor, when no seller proposed in time".to_owned(),
        _ => format!(
            "order is {from}: only the order-request processor moves it to {to}, when it accepts a seller's proposal"
        ),
    }
}

impl Order {
    /// Creates a new order at version 1.
    pub fn create(id: OrderId, draft: NewOrder, now: Timestamp) -> Order {
        let mut order = Order {
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
            // Only order requests start at `requested`, and only they search.
            seller_search: (draft.status == OrderStatus::Requested).then_some(SellerSearch::FIRST),
            tracking_status: TrackingStatus::canonical(draft.status),
            fulfillment: None,
        };
        if let Some(new) = draft.fulfillment {
            let mut fulfillment = Fulfillment {
                store_id: Some(new.store_id),
                delivery_provider: Some(new.delivery_provider),
                metadata: new.metadata,
                ..Fulfillment::default()
            };
            if let Some(eta) = new.estimated_delivery_time {
                order.estimated_delivery = Some(eta);
                fulfillment.eta_given = true;
            }
            order.fulfillment = Some(Box::new(fulfillment));
        }
        order
    }

    /// Seed 003's fine status: the one recorded, or for orders stored before
    /// fine statuses existed, the canonical one of their status. `None`
    /// while `requested` and once `expired`.
    pub fn tracking_status(&self) -> Option<TrackingStatus> {
        match self.tracking_status {
            // The fine status projects onto the coarse one; a snapshot where
            // it does not (edited by hand) is read by its coarse status.
            Some(fine) if fine.coarse() == self.status => Some(fine),
            _ => TrackingStatus::canonical(self.status),
        }
    }

    /// The delivery partner's id for the order's delivery, if it has one.
    pub fn delivery_id(&self) -> Option<&str> {
        self.fulfillment.as_ref()?.delivery_tracking_id.as_deref()
    }

    /// The store the order belongs to, if it has one.
    pub fn store_id(&self) -> Option<&StoreId> {
        self.fulfillment.as_ref()?.store_id.as_ref()
    }

    /// The order after `change`, or `None` when the change would leave it as it
    /// is (setting the current status again is an idempotent no-op that must
    /// not bump the version or wake anyone).
    pub fn apply(
        &self,
        change: &OrderChange,
        now: Timestamp,
    ) -> Result<Option<Order>, ChangeError> {
        let from = self.status;
        match change {
            &OrderChange::SetStatus(to)
                if to.is_processor_only() || from.processor_next().contains(&to) =>
            {
                Err(ChangeError::ProcessorOnly {
                    from,
                    to,
                    allowed: from.allowed_next(),
                })
            }
            &OrderChange::SetStatus(to) if to == from => Ok(None),
            &OrderChange::SetStatus(to) if !from.can_become(to) => {
                Err(ChangeError::IllegalTransition {
                    from,
                    to,
                    allowed: from.allowed_next(),
                })
            }
            &OrderChange::SetStatus(to) => self.set_status(to, now).map(Some),
            OrderChange::Fulfill {
                command,
                actor,
                at_store,
            } => {
                if at_store.is_some() && self.store_id() != at_store.as_ref() {
                    return Err(ChangeError::NotAtStore);
                }
                self.fulfill(command, *actor, now)
            }
            _ if from != OrderStatus::Requested => Err(ChangeError::NotRequested { status: from }),
            &OrderChange::SearchProgress {
                sellers_contacted,
                proposals_received,
            } => {
                let current = self.seller_search.unwrap_or(SellerSearch::FIRST);
                let search = SellerSearch {
                    sellers_contacted,
                    proposals_received,
                    ..current
                };
                if self.seller_search == Some(search) {
                    return Ok(None);
                }
                Ok(Some(Order {
                    seller_search: Some(search),
                    ..self.moved_to(from, now)
                }))
            }
            OrderChange::RestartSearch => {
                let attempt = self.seller_search.map_or(0, |s| s.attempt) + 1;
                Ok(Some(Order {
                    seller_search: Some(SellerSearch {
                        attempt,
                        ..SellerSearch::FIRST
                    }),
                    ..self.moved_to(from, now)
                }))
            }
            OrderChange::AcceptProposal { seller } => Ok(Some(Order {
                restaurant_name: seller.clone(),
                ..self.moved_to(OrderStatus::Confirmed, now)
            })),
            OrderChange::Expire => Ok(Some(self.moved_to(OrderStatus::Expired, now))),
        }
    }

    /// A seed 004 status change the coarse rules allow: the fine status
    /// walks the lifecycle table to `to`'s canonical fine status, stamping
    /// each stage it passes.
    fn set_status(&self, to: OrderStatus, now: Timestamp) -> Result<Order, ChangeError> {
        let path = match self.tracking_status() {
            // Only cancelling leaves `requested` this way.
            None => TrackingStatus::canonical(to).into_iter().collect(),
            Some(current) => lifecycle::coarse_path(current, to).ok_or(
                if current == TrackingStatus::SubstitutionsNeeded {
                    ChangeError::AwaitingCustomer { from: current, to }
                } else {
                    ChangeError::NoPath { from: current, to }
                },
            )?,
        };
        let mut next = self.moved_to(to, now);
        for &status in &path {
            next.enter(status, next.updated_at);
        }
        Ok(next)
    }

    /// Records that the order entered the fine `status` at `at`.
    fn enter(&mut self, status: TrackingStatus, at: Timestamp) {
        self.tracking_status = Some(status);
        if let Some(fulfillment) = &mut self.fulfillment {
            fulfillment.entered(status, at);
        }
    }

    /// The fulfillment record, created empty on first use.
    fn fulfillment_mut(&mut self) -> &mut Fulfillment {
        self.fulfillment.get_or_insert_with(Box::default)
    }

    /// Decides a fulfillment command with the lifecycle table and records
    /// what it carries.
    fn fulfill(
        &self,
        command: &Fulfill,
        actor: Actor,
        now: Timestamp,
    ) -> Result<Option<Order>, ChangeError> {
        let Some(current) = self.tracking_status() else {
            return Err(ChangeError::NotFulfilling {
                status: self.status,
            });
        };
        let decide = |step| lifecycle::decide(current, step, actor);
        let target = match command {
            Fulfill::MoveTo(to) if *to == current => return Ok(None),
            Fulfill::MoveTo(to) => {
                let step =
                    lifecycle::step_to(current, *to).ok_or_else(|| ChangeError::IllegalMove {
                        from: current,
                        to: *to,
                        allowed: lifecycle::next_statuses(current),
                    })?;
                if let Some(endpoint) = own_endpoint(step) {
                    return Err(ChangeError::NeedsEndpoint { to: *to, endpoint });
                }
                decide(step)?
            }
            Fulfill::NotifyStore => decide(Step::NotifyStore)?,
            Fulfill::Acknowledge { .. } => decide(Step::Acknowledge)?,
            Fulfill::StartPicking => decide(Step::StartPicking)?,
            Fulfill::RejectByStore => decide(Step::RejectByStore)?,
            Fulfill::ProposeSubstitution(_) => {
                let held = self
                    .fulfillment
                    .as_ref()
                    .map_or(0, |f| f.substitutions.len());
                if held >= MAX_SUBSTITUTIONS {
                    return Err(ChangeError::TooMany {
                        what: "substitutions",
                        max: MAX_SUBSTITUTIONS,
                    });
                }
                decide(Step::ProposeSubstitution)?
            }
            Fulfill::DecideSubstitution { id, approve } => {
                let sub = self.substitution(id)?;
                if sub.status != SubstitutionStatus::Pending {
                    return Err(ChangeError::AlreadyDecided {
                        id: id.clone(),
                        status: sub.status,
                    });
                }
                let round = sub.round;
                let fulfillment = self.fulfillment.as_deref().unwrap_or_else(|| {
                    unreachable!("a substitution lives in a fulfillment record")
                });
                let others_pending = fulfillment.pending().any(|other| other.id != *id);
                let any_approved = *approve
                    || fulfillment
                        .substitutions
                        .iter()
                        .any(|s| s.round == round && s.status == SubstitutionStatus::Approved);
                let step = if any_approved {
                    Step::ApproveSubstitutions
                } else {
                    Step::RejectSubstitutions
                };
                let next = decide(step)?;
                // Not the last answer of the round: the order waits on.
                if others_pending {
                    current
                } else {
                    next
                }
            }
            Fulfill::MarkReady => {
                let ready = decide(Step::MarkReady)?;
                // A driver dispatched early is assigned now.
                let dispatched = self
                    .fulfillment
                    .as_ref()
                    .is_some_and(|f| f.driver_details.is_some());
                if dispatched {
                    TrackingStatus::DriverAssigned
                } else {
                    ready
                }
            }
            Fulfill::AssignDriver(_) => {
                if current.coarse() == OrderStatus::Ready || current.is_terminal() {
                    decide(Step::AssignDriver)?
                } else {
                    decide(Step::DispatchEarly)?
                }
            }
            Fulfill::PickUp => decide(Step::PickUp)?,
            Fulfill::Deliver => decide(Step::Deliver)?,
            Fulfill::ReportIssue(_) => {
                let held = self.fulfillment.as_ref().map_or(0, |f| f.issues.len());
                if held >= MAX_ISSUES {
                    return Err(ChangeError::TooMany {
                        what: "issues",
                        max: MAX_ISSUES,
                    });
                }
                current
            }
            Fulfill::Partner(update) => {
                // The path is made of the steps partners may take. A stale
                // or out-of-turn report moves nothing; it is still recorded
                // (the history marks it ignored).
                let path = update.path(current);
                let target = path.last().copied().unwrap_or(current);
                let mut next = self.moved_to(target.coarse(), now);
                let at = next.updated_at;
                for &status in &path {
                    next.enter(status, at);
                }
                next.record(command, current, at);
                return Ok(Some(next));
            }
            Fulfill::ResolveIssue { id, .. } => {
                let issue = self
                    .fulfillment
                    .as_ref()
                    .and_then(|f| f.issues.iter().find(|issue| issue.id == *id))
                    .ok_or_else(|| ChangeError::UnknownIssue(id.clone()))?;
                if issue.resolved_at.is_some() {
                    return Err(ChangeError::AlreadyResolved(id.clone()));
                }
                current
            }
        };
        let mut next = self.moved_to(target.coarse(), now);
        let at = next.updated_at;
        if target != current {
            next.enter(target, at);
        }
        next.record(command, current, at);
        Ok(Some(next))
    }

    /// The substitution `id`, or why there is none.
    fn substitution(&self, id: &str) -> Result<&Substitution, ChangeError> {
        self.fulfillment
            .as_ref()
            .and_then(|f| f.substitutions.iter().find(|sub| sub.id == id))
            .ok_or_else(|| ChangeError::UnknownSubstitution(id.to_owned()))
    }

    /// Writes what an accepted command carries into the next version.
    /// `before` is the fine status the command found.
    fn record(&mut self, command: &Fulfill, before: TrackingStatus, at: Timestamp) {
        match command {
            Fulfill::MoveTo(_)
            | Fulfill::NotifyStore
            | Fulfill::StartPicking
            | Fulfill::MarkReady
            | Fulfill::PickUp
            | Fulfill::Deliver => {}
            Fulfill::Acknowledge {
                estimated_ready_time,
            } => {
                if let Some(ready) = estimated_ready_time {
                    self.fulfillment_mut().estimated_ready_time = Some(*ready);
                }
            }
            Fulfill::RejectByStore => {
                // The next store (or the same, once it reconsiders) starts over.
                let fulfillment = self.fulfillment_mut();
                fulfillment.store_acknowledgment_time = None;
                fulfillment.estimated_ready_time = None;
                fulfillment.picking_start_time = None;
            }
            Fulfill::ProposeSubstitution(new) => {
                let fulfillment = self.fulfillment_mut();
                let round = fulfillment.round_for_proposal(before);
                let id = format!("sub-{}", fulfillment.substitutions.len() + 1);
                fulfillment.substitutions.push(Substitution {
                    id,
                    original_item_id: new.original_item_id.clone(),
                    substitute_item_id: new.substitute_item_id.clone(),
                    reason: new.reason.clone(),
                    status: SubstitutionStatus::Pending,
                    price_difference: new.price_difference,
                    customer_notified_at: at,
                    customer_responded_at: None,
                    round,
                });
            }
            Fulfill::DecideSubstitution { id, approve } => {
                let fulfillment = self.fulfillment_mut();
                if let Some(sub) = fulfillment.substitutions.iter_mut().find(|s| s.id == *id) {
                    sub.status = if *approve {
                        SubstitutionStatus::Approved
                    } else {
                        SubstitutionStatus::Rejected
                    };
                    sub.customer_responded_at = Some(at);
                }
            }
            Fulfill::AssignDriver(assignment) => {
                let fulfillment = self.fulfillment_mut();
                fulfillment.driver_details = Some(assignment.driver.clone());
                if let Some(id) = &assignment.delivery_tracking_id {
                    fulfillment.delivery_tracking_id = Some(id.clone());
                }
                if let Some(url) = &assignment.delivery_tracking_url {
                    fulfillment.delivery_tracking_url = Some(url.clone());
                }
                if let Some(eta) = assignment.estimated_delivery_time {
                    fulfillment.eta_given = true;
                    self.estimated_delivery = Some(eta);
                }
            }
            Fulfill::ReportIssue(new) => {
                let fulfillment = self.fulfillment_mut();
                let id = format!("issue-{}", fulfillment.issues.len() + 1);
                fulfillment.issues.push(super::fulfillment::Issue {
                    id,
                    issue_type: new.issue_type.clone(),
                    description: new.description.clone(),
                    severity: new.severity,
                    created_at: at,
                    resolved_at: None,
                    resolution: None,
                });
            }
            Fulfill::Partner(update) => {
                let fulfillment = self.fulfillment_mut();
                if let Some(driver) = &update.driver {
                    fulfillment.driver_details = Some(driver.clone());
                }
                if let Some(id) = &update.delivery_tracking_id {
                    fulfillment.delivery_tracking_id = Some(id.clone());
                }
                if let Some(url) = &update.delivery_tracking_url {
                    fulfillment.delivery_tracking_url = Some(url.clone());
                }
                if let Some(eta) = update.estimated_delivery_time {
                    if !self.status.is_terminal() {
                        self.fulfillment_mut().eta_given = true;
                        self.estimated_delivery = Some(eta);
                    }
                }
            }
            Fulfill::ResolveIssue { id, resolution } => {
                let fulfillment = self.fulfillment_mut();
                if let Some(issue) = fulfillment.issues.iter_mut().find(|i| i.id == *id) {
                    issue.resolved_at = Some(at);
                    issue.resolution = Some(resolution.clone());
                }
            }
        }
    }

    /// The next version of this order, in `status` as of `now`.
    fn moved_to(&self, status: OrderStatus, now: Timestamp) -> Order {
        let updated_at = self.updated_at.advance_to(now);
        let eta_given = self.fulfillment.as_ref().is_some_and(|f| f.eta_given);
        Order {
            status,
            updated_at,
            estimated_delivery: if status == self.status {
                self.estimated_delivery
            } else if status == OrderStatus::Delivered || !eta_given {
                estimate(status, updated_at)
            } else if status.is_terminal() {
                None
            } else {
                self.estimated_delivery
            },
            tracking_status: if status == OrderStatus::Expired {
                None
            } else {
                self.tracking_status
            },
            version: self.version.next(),
            ..self.clone()
        }
    }
}

/// The endpoint that carries what a step needs, for steps an explicit
/// status change cannot take.
fn own_endpoint(step: Step) -> Option<&'static str> {
    match step {
        Step::ProposeSubstitution => Some("POST /tracking/store/{store_id}/substitution"),
        Step::ApproveSubstitutions | Step::RejectSubstitutions => Some(
            "POST /tracking/orders/{order_id}/substitutions/{substitution_id}/approve or /reject",
        ),
        _ => None,
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
    /// Optional id; one is generated when absent. 1 to 64 letters, digits,
    /// `_ - .`, not only dots.
    #[schema(value_type = Option<OrderId>)]
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
    /// Where the order starts. Clients always start at `confirmed`, order
    /// requests at `requested`; the sample orders start further along.
    pub status: OrderStatus,
    /// Seed 003's store and delivery partner, for orders created through
    /// `POST /tracking/orders/{order_id}/init`.
    pub fulfillment: Option<NewFulfillment>,
}

/// Every problem found in a [`NewOrderInput`], so a client fixes all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid order: {}", .problems.join("; "))]
pub struct ValidationError {
    pub problems: Vec<String>,
}

impl ValidationError {
    /// `value` if nothing was wrong with the input it came from, else every
    /// problem found.
    pub fn unless<T>(problems: Vec<String>, value: T) -> Result<T, ValidationError> {
        if problems.is_empty() {
            Ok(value)
        } else {
            Err(ValidationError { problems })
        }
    }
}

pub(crate) fn text(field: &str, value: &str, problems: &mut Vec<String>) -> String {
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
        if input.items.is_empty() {
            problems.push(format!("items must hold 1 to {MAX_ITEMS} entries, got 0"));
        }
        let items = items(input.items, &mut problems);
        match customer_id {
            Some(customer_id) if problems.is_empty() => Ok(NewOrder {
                id,
                customer_id,
                restaurant_name,
                delivery_address,
                items,
                status: OrderStatus::Confirmed,
                fulfillment: None,
            }),
            _ => Err(ValidationError { problems }),
        }
    }

    /// The order behind an order request: it starts `requested`, with no
    /// restaurant until a seller's proposal is accepted. The request may
    /// leave out the address and the items (seed requests carry neither);
    /// what it does give is checked as strictly as in [`NewOrder::parse`].
    pub fn parse_request(
        id: OrderId,
        customer_id: String,
        delivery_address: Option<String>,
        input_items: Vec<NewItemInput>,
    ) -> Result<NewOrder, ValidationError> {
        let mut problems = Vec::new();
        let customer_id = CustomerId::try_from(customer_id)
            .map_err(|BadId(why)| problems.push(why))
            .ok();
        let delivery_address = match delivery_address {
            Some(address) => text("delivery_address", &address, &mut problems),
            None => String::new(),
        };
        let items = items(input_items, &mut problems);
        match customer_id {
            Some(customer_id) if problems.is_empty() => Ok(NewOrder {
                id: Some(id),
                customer_id,
                restaurant_name: String::new(),
                delivery_address,
                items,
                status: OrderStatus::Requested,
                fulfillment: None,
            }),
            _ => Err(ValidationError { problems }),
        }
    }
}

/// Checks line items (at most [`MAX_ITEMS`]), reporting every problem.
pub(crate) fn items(input: Vec<NewItemInput>, problems: &mut Vec<String>) -> Vec<OrderItem> {
    if input.len() > MAX_ITEMS {
        problems.push(format!(
            "items must hold at most {MAX_ITEMS} entries, got {}",
            input.len()
        ));
    }
    let mut items = Vec::with_capacity(input.len());
    for (n, item) in input.into_iter().enumerate() {
        let name = text(&format!("items[{n}].name"), &item.name, problems);
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
    items
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
            .apply(&OrderChange::SetStatus(OrderStatus::Preparing), later)
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
            order.apply(&OrderChange::SetStatus(OrderStatus::Confirmed), now),
            Ok(None)
        );
        let err = order
            .apply(&OrderChange::SetStatus(OrderStatus::Delivered), now)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("allowed next statuses: preparing, cancelled"),
            "{err}"
        );
    }

    fn requested() -> Order {
        let draft = NewOrder::parse_request(
            "SB1029436".parse().unwrap(),
            "sess_123".into(),
            None,
            Vec::new(),
        )
        .unwrap();
        Order::create(
            "SB1029436".parse().unwrap(),
            draft,
            "2025-01-12T20:30:00Z".parse().unwrap(),
        )
    }

    #[test]
    fn order_requests_start_requested_without_eta_or_restaurant() {
        let request = requested();
        assert_eq!(request.status, OrderStatus::Requested);
        assert_eq!(request.estimated_delivery, None);
        assert_eq!(request.restaurant_name, "");
        assert_eq!(request.total_amount, Money::from_cents(0));
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json["seller_search"],
            serde_json::json!({"attempt": 1, "sellers_contacted": 0, "proposals_received": 0})
        );
        // Orders created directly carry no seller search at all.
        assert!(serde_json::to_value(order())
            .unwrap()
            .get("seller_search")
            .is_none());
        let bad = NewOrder::parse_request(
            "x".parse().unwrap(),
            "no spaces".into(),
            Some(" ".into()),
            vec![NewItemInput {
                name: "Pizza".into(),
                quantity: 0,
                unit_price: 1.0,
            }],
        )
        .unwrap_err();
        assert_eq!(bad.problems.len(), 3, "{bad}");
    }

    #[test]
    fn the_processor_moves_a_request_and_status_changes_cannot() {
        let order = requested();
        let now = order.updated_at;
        let progress = OrderChange::SearchProgress {
            sellers_contacted: 3,
            proposals_received: 0,
        };
        let searching = order.apply(&progress, now).unwrap().unwrap();
        assert_eq!(searching.version, Version(2));
        assert_eq!(searching.status, OrderStatus::Requested);
        assert_eq!(searching.apply(&progress, now), Ok(None), "same counts");

        for to in [
            OrderStatus::Confirmed,
            OrderStatus::Expired,
            OrderStatus::Requested,
        ] {
            let err = searching
                .apply(&OrderChange::SetStatus(to), now)
                .unwrap_err();
            assert!(
                matches!(err, ChangeError::ProcessorOnly { .. }),
                "{to}: {err}"
            );
            assert!(
                err.to_string()
                    .ends_with("allowed next statuses: cancelled"),
                "{err}"
            );
        }
        let confirmed = searching
            .apply(
                &OrderChange::AcceptProposal {
                    seller: "Burger Barn".into(),
                },
                now,
            )
            .unwrap()
            .unwrap();
        assert_eq!(confirmed.status, OrderStatus::Confirmed);
        assert_eq!(confirmed.restaurant_name, "Burger Barn");
        assert!(confirmed.estimated_delivery.is_some());
        assert_eq!(confirmed.seller_search, searching.seller_search);
        assert_eq!(
            confirmed.apply(&OrderChange::RestartSearch, now),
            Err(ChangeError::NotRequested {
                status: OrderStatus::Confirmed
            })
        );
        // From here it follows the normal lifecycle.
        assert!(confirmed
            .apply(&OrderChange::SetStatus(OrderStatus::Preparing), now)
            .unwrap()
            .is_some());
        // Status changes cannot put a confirmed order back either.
        assert!(matches!(
            confirmed.apply(&OrderChange::SetStatus(OrderStatus::Requested), now),
            Err(ChangeError::ProcessorOnly { .. })
        ));

        let expired = searching.apply(&OrderChange::Expire, now).unwrap().unwrap();
        assert_eq!(expired.status, OrderStatus::Expired);
        assert_eq!(expired.estimated_delivery, None);
        assert!(expired.apply(&OrderChange::Expire, now).is_err());

        let restarted = searching
            .apply(&OrderChange::RestartSearch, now)
            .unwrap()
            .unwrap();
        assert_eq!(
            restarted.seller_search,
            Some(SellerSearch {
                attempt: 2,
                sellers_contacted: 0,
                proposals_received: 0
            })
        );
    }

    #[test]
    fn reserved_path_segments_are_not_order_ids() {
        for reserved in RESERVED_ORDER_IDS {
            let err = reserved.parse::<OrderId>().unwrap_err();
            assert!(err.0.contains("reserved"), "{err}");
        }
        assert!("tracking-1".parse::<OrderId>().is_ok());
    }

    #[test]
    fn ids_of_dots_alone_are_not_order_ids() {
        for dots in [".", "..", "...", &".".repeat(MAX_ID_LEN)] {
            let err = dots.parse::<OrderId>().unwrap_err();
            assert!(
                err.0
                    .starts_with("order id must contain a character other than '.'"),
                "{dots}: {err}"
            );
        }
        for dotted in [".x", "x.", "..x..", "v1.2", "_", "-"] {
            assert_eq!(dotted.parse::<OrderId>().unwrap().as_str(), dotted);
        }
        // Too long is reported as too long, not as dots.
        let long = ".".repeat(MAX_ID_LEN + 1);
        assert!(long.parse::<OrderId>().unwrap_err().0.contains("1 to 64"));
        // Customer ids never stand in a path; the rule is the order id's.
        assert!(CustomerId::try_from("..".to_owned()).is_ok());
    }

    #[test]
    fn the_documented_pattern_accepts_exactly_the_order_ids() {
        let pattern = regex::Regex::new(ORDER_ID_PATTERN).unwrap();
        // Every string of up to three characters from an alphabet with one
        // member of each class the rule tells apart, and a few long ones.
        let alphabet = ['a', 'Z', '7', '_', '-', '.', ' ', '/', '%', 'é', '\n'];
        let mut cases = vec![String::new()];
        let mut of_length = vec![String::new()];
        for _ in 0..3 {
            of_length = of_length
                .iter()
                .flat_map(|head| alphabet.iter().map(move |c| format!("{head}{c}")))
                .collect();
            cases.extend(of_length.iter().cloned());
        }
        cases.extend(["a".repeat(MAX_ID_LEN), "a".repeat(MAX_ID_LEN + 1)]);
        cases.extend([
            ".".repeat(MAX_ID_LEN),
            format!("{}a", ".".repeat(MAX_ID_LEN - 1)),
        ]);
        cases.extend(RESERVED_ORDER_IDS.map(String::from));
        for case in cases {
            // JSON Schema counts characters for `maxLength`.
            let documented = pattern.is_match(&case)
                && (1..=MAX_ID_LEN).contains(&case.chars().count())
                && !RESERVED_ORDER_IDS.contains(&case.as_str());
            assert_eq!(case.parse::<OrderId>().is_ok(), documented, "{case:?}");
        }
    }

    #[test]
    fn cancelled_orders_have_no_eta_and_delivered_ones_arrive_now() {
        let order = order();
        let now = order.updated_at;
        let cancelled = order
            .apply(&OrderChange::SetStatus(OrderStatus::Cancelled), now)
            .unwrap()
            .unwrap();
        assert_eq!(cancelled.estimated_delivery, None);
        assert!(
            cancelled.updated_at > order.updated_at,
            "same-instant change still advances"
        );
    }
}
