//! Events: the immutable record of every accepted change to an order.
//!
//! An order's snapshot is what the events add up to; the events are the
//! truth and the audit trail (`GET /api/v1/orders/{id}/history`). Each change
//! that the service commits is exactly one event, at the order's new version,
//! so versions and events correspond one to one and have no gaps.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::fulfillment::Fulfill;
use super::lifecycle::TrackingStatus;
use super::order::{Order, OrderChange, OrderId, Version};
use super::status::OrderStatus;
use super::time::Timestamp;

/// Longest `updated_by`, in characters.
pub const MAX_UPDATED_BY_LEN: usize = 128;
/// Longest `notes`, in characters.
pub const MAX_NOTES_LEN: usize = 2_000;
/// Largest `metadata` object, in bytes of compact JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// What kind of change an event records.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ToSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum EventKind {
    /// The order was created (version 1).
    Created,
    /// A restaurant, driver, the simulator or a customer moved the status.
    StatusChanged,
    /// The order-request processor reported seller-search progress.
    SearchProgress,
    /// A new seller-search round started for an order request.
    SearchRestarted,
    /// A seller's proposal was accepted: the order is confirmed.
    ProposalAccepted,
    /// No seller proposed in time: the order request expired.
    Expired,
    /// The store's feed delivered the order to its store.
    StoreNotified,
    StoreAcknowledged,
    /// The store refused the order; it waits for reassignment.
    StoreRejected,
    PickingStarted,
    SubstitutionProposed,
    SubstitutionApproved,
    SubstitutionRejected,
    MarkedReady,
    /// A driver was assigned (or dispatched early, or replaced).
    DriverAssigned,
    PickedUp,
    Delivered,
    IssueReported,
    IssueResolved,
    /// A delivery partner's event, applied.
    PartnerEvent,
    /// A delivery partner's event the order is past (it arrived late or
    /// out of order): recorded, and the state did not regress.
    PartnerEventIgnored,
}

impl EventKind {
    /// The kind of event `change` produces.
    pub fn of(change: &OrderChange) -> EventKind {
        match change {
            OrderChange::SetStatus(_) => EventKind::StatusChanged,
            OrderChange::SearchProgress { .. } => EventKind::SearchProgress,
            OrderChange::RestartSearch => EventKind::SearchRestarted,
            OrderChange::AcceptProposal { .. } => EventKind::ProposalAccepted,
            OrderChange::Expire => EventKind::Expired,
            OrderChange::Fulfill { command, .. } => match command {
                Fulfill::MoveTo(_) => EventKind::StatusChanged,
                Fulfill::NotifyStore => EventKind::StoreNotified,
                Fulfill::Acknowledge { .. } => EventKind::StoreAcknowledged,
                Fulfill::StartPicking => EventKind::PickingStarted,
                Fulfill::RejectByStore => EventKind::StoreRejected,
                Fulfill::ProposeSubstitution(_) => EventKind::SubstitutionProposed,
                Fulfill::DecideSubstitution { approve: true, .. } => {
                    EventKind::SubstitutionApproved
                }
                Fulfill::DecideSubstitution { approve: false, .. } => {
                    EventKind::SubstitutionRejected
                }
                Fulfill::MarkReady => EventKind::MarkedReady,
                Fulfill::AssignDriver(_) => EventKind::DriverAssigned,
                Fulfill::PickUp => EventKind::PickedUp,
                Fulfill::Deliver => EventKind::Delivered,
                Fulfill::ReportIssue(_) => EventKind::IssueReported,
                Fulfill::ResolveIssue { .. } => EventKind::IssueResolved,
                Fulfill::Partner(_) => EventKind::PartnerEvent,
            },
        }
    }

    /// The kind of event `change` produces on `before`: as [`EventKind::of`],
    /// except that a partner's event the order is past is marked ignored.
    pub fn of_change(change: &OrderChange, before: &Order) -> EventKind {
        match change {
            OrderChange::Fulfill {
                command: Fulfill::Partner(update),
                ..
            } if before
                .tracking_status()
                .is_some_and(|current| update.ignored_at(current)) =>
            {
                EventKind::PartnerEventIgnored
            }
            _ => EventKind::of(change),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Who made a change and why: optional, free-form, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Who made the change (a staff member, a driver, `simulator`).
    pub updated_by: Option<String>,
    /// Why, in words.
    pub notes: Option<String>,
    /// Anything else the caller wants on record, as a JSON object.
    pub metadata: Option<Map<String, Value>>,
}

/// An [`Attribution`] field out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadAttribution(pub String);

impl From<BadAttribution> for super::order::ValidationError {
    fn from(err: BadAttribution) -> Self {
        super::order::ValidationError {
            problems: vec![err.0],
        }
    }
}

impl Attribution {
    /// Checks the bounds: `updated_by` at most [`MAX_UPDATED_BY_LEN`]
    /// characters, `notes` at most [`MAX_NOTES_LEN`], `metadata` at most
    /// [`MAX_METADATA_BYTES`] of JSON. Empty strings count as absent.
    pub fn parse(
        updated_by: Option<String>,
        notes: Option<String>,
        metadata: Option<Map<String, Value>>,
    ) -> Result<Attribution, BadAttribution> {
        let updated_by = updated_by.filter(|s| !s.trim().is_empty());
        let notes = notes.filter(|s| !s.trim().is_empty());
        if let Some(by) = &updated_by {
            let len = by.chars().count();
            if len > MAX_UPDATED_BY_LEN {
                return Err(BadAttribution(format!(
                    "updated_by must be at most {MAX_UPDATED_BY_LEN} characters, got {len}"
                )));
            }
        }
        if let Some(notes) = &notes {
            let len = notes.chars().count();
            if len > MAX_NOTES_LEN {
                return Err(BadAttribution(format!(
                    "notes must be at most {MAX_NOTES_LEN} characters, got {len}"
                )));
            }
        }
        if let Some(metadata) = &metadata {
            // Invariant: a map of JSON values always serializes.
            let bytes = serde_json::to_vec(metadata).map_or(usize::MAX, |v| v.len());
            if bytes > MAX_METADATA_BYTES {
                return Err(BadAttribution(format!(
                    "metadata must be at most {MAX_METADATA_BYTES} bytes of JSON, got {bytes}"
                )));
            }
        }
        Ok(Attribution {
            updated_by,
            notes,
            metadata,
        })
    }

    /// Attributed to `who`, with no notes or metadata.
    pub fn by(who: &str) -> Attribution {
        Attribution {
            updated_by: Some(who.to_owned()),
            ..Attribution::default()
        }
    }
}

/// One accepted change, as stored and as `/history` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub order_id: OrderId,
    /// The order's version after this change.
    pub version: Version,
    /// When the change was committed (the order's new `updated_at`).
    pub at: Timestamp,
    pub kind: EventKind,
    /// The order's status after this change.
    pub status: OrderStatus,
    /// Seed 003's fine status after this change (`None` while requested or
    /// once expired, and for events stored before fine statuses existed).
    pub tracking_status: Option<TrackingStatus>,
    pub attribution: Attribution,
    /// The `Idempotency-Key` of the request that made the change, if any.
    pub idempotency_key: Option<String>,
}

impl Event {
    /// The event that turns the order's previous version into `order`.
    pub fn for_order(
        order: &Order,
        kind: EventKind,
        attribution: Attribution,
        idempotency_key: Option<String>,
    ) -> Event {
        Event {
            order_id: order.id.clone(),
            version: order.version,
            at: order.updated_at,
            kind,
            status: order.status,
            tracking_status: order.tracking_status(),
            attribution,
            idempotency_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    use super::*;

    #[test]
    fn kinds_have_snake_case_names_that_parse_back() {
        for kind in EventKind::VARIANTS {
            let kind = *kind;
            let name = kind.as_str();
            assert_eq!(name.parse::<EventKind>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
        assert_eq!(EventKind::StatusChanged.as_str(), "status_changed");
    }

    #[test]
    fn attribution_bounds_are_enforced_and_blank_means_absent() {
        let ok = Attribution::parse(Some("x".repeat(128)), Some("n".repeat(2000)), None).unwrap();
        assert_eq!(ok.updated_by.unwrap().len(), 128);
        let err = Attribution::parse(Some("é".repeat(129)), None, None).unwrap_err();
        assert!(err.0.contains("at most 128 characters, got 129"), "{err}");
        let err = Attribution::parse(None, Some("n".repeat(2001)), None).unwrap_err();
        assert!(err.0.contains("notes must be at most 2000"), "{err}");
        let mut big = Map::new();
        big.insert("blob".into(), Value::String("b".repeat(MAX_METADATA_BYTES)));
        let err = Attribution::parse(None, None, Some(big)).unwrap_err();
        assert!(
            err.0.contains("metadata must be at most 16384 bytes"),
            "{err}"
        );
        let blank = Attribution::parse(Some("  ".into()), Some(String::new()), None).unwrap();
        assert_eq!(blank, Attribution::default());
    }
}
