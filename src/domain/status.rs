//! The order lifecycle: which statuses exist and which moves between them are legal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an order is in its life.
///
/// Orders only move forward along
/// `confirmed → preparing → ready → picked_up → delivered`; `cancelled` is
/// reachable from every non-terminal status. An order that began as an order
/// request (`POST /api/v1/orders/initiate`) starts earlier, at `requested`,
/// while sellers are sought; the order-request processor moves it on to
/// `confirmed` (a seller's proposal was accepted) or `expired` (no proposal
/// in time). `delivered`, `cancelled` and `expired` are terminal: nothing
/// follows them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// An order request whose seller is still being sought.
    Requested,
    Confirmed,
    Preparing,
    Ready,
    PickedUp,
    Delivered,
    Cancelled,
    /// An order request for which no seller proposed before the expiry.
    Expired,
    /// Delivery failed for good (seed 003: a delivery partner cancelled or
    /// returned it). Set by the fulfillment lifecycle, never by a coarse
    /// status change.
    Failed,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 9] = [
        OrderStatus::Requested,
        OrderStatus::Confirmed,
        OrderStatus::Preparing,
        OrderStatus::Ready,
        OrderStatus::PickedUp,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
        OrderStatus::Failed,
    ];

    /// The wire name, as it appears in JSON and URLs.
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Requested => "requested",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Preparing => "preparing",
            OrderStatus::Ready => "ready",
            OrderStatus::PickedUp => "picked_up",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::Failed => "failed",
        }
    }

    /// Terminal statuses end the order's life: no transition leaves them and
    /// clients should stop polling.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered
                | OrderStatus::Cancelled
                | OrderStatus::Expired
                | OrderStatus::Failed
        )
    }

    /// The statuses a status change (`PUT /status`, the simulator) may move
    /// this one to, forward step first.
    pub const fn allowed_next(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            // Confirming and expiring a request are the processor's moves
            // (see `processor_next`); anyone may cancel it.
            Requested => &[Cancelled],
            Confirmed => &[Preparing, Cancelled],
            Preparing => &[Ready, Cancelled],
            Ready => &[PickedUp, Cancelled],
            PickedUp => &[Delivered, Cancelled],
            Delivered | Cancelled | Expired | Failed => &[],
        }
    }

    /// The moves only the order-request processor makes, each with its own
    /// change (accepting a proposal, expiring the request) rather than a bare
    /// status: confirming a requested order needs the seller who accepted,
    /// and expiring it needs the processor's word that no seller proposed.
    pub const fn processor_next(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            Requested => &[Confirmed, Expired],
            _ => &[],
        }
    }

    /// Statuses no status change may set, not even to the value the order
    /// already has: `requested` is where an order request starts and
    /// `expired` is the processor's verdict.
    pub const fn is_processor_only(self) -> bool {
        matches!(self, OrderStatus::Requested | OrderStatus::Expired)
    }

    /// Whether a status change may move `self → to`. Staying put is not a
    /// move; callers treat it as an idempotent no-op before asking.
    pub fn can_become(self, to: OrderStatus) -> bool {
        self.allowed_next().contains(&to)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status '{given}'; valid statuses are: {}", list(&OrderStatus::ALL))]
pub struct UnknownStatus {
    pub given: String,
}

impl FromStr for OrderStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus {
                given: s.to_owned(),
            })
    }
}

/// `a, b, c`: how status lists read in error messages.
pub fn list(statuses: &[OrderStatus]) -> String {
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    if names.is_empty() {
        "none (the order is final)".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    #[test]
    fn forward_path_is_legal_and_backwards_is_not() {
        let path = [Confirmed, Preparing, Ready, PickedUp, Delivered];
        for pair in path.windows(2) {
            assert!(pair[0].can_become(pair[1]), "{} → {}", pair[0], pair[1]);
            assert!(!pair[1].can_become(pair[0]), "{} → {}", pair[1], pair[0]);
        }
        assert!(!Confirmed.can_become(Ready), "skipping a step is illegal");
    }

    #[test]
    fn cancel_from_every_live_status_and_terminals_are_final() {
        for status in OrderStatus::ALL {
            assert_eq!(status.can_become(Cancelled), !status.is_terminal());
            if status.is_terminal() {
                assert!(status.allowed_next().is_empty());
            }
        }
    }

    #[test]
    fn parses_wire_names_and_lists_valid_ones_on_error() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        let err = "shipped".parse::<OrderStatus>().unwrap_err();
        let message = err.to_string();
        assert!(message.contains("'shipped'"));
        assert!(message.contains(
            "requested, confirmed, preparing, ready, picked_up, delivered, cancelled, expired, failed"
        ));
    }

    #[test]
    fn requests_are_confirmed_or_expired_by_the_processor_only() {
        assert_eq!(Requested.allowed_next(), &[Cancelled]);
        assert_eq!(Requested.processor_next(), &[Confirmed, Expired]);
        assert!(!Requested.can_become(Confirmed));
        assert!(Expired.is_terminal());
        for status in OrderStatus::ALL {
            assert!(
                !status.can_become(Requested) && !status.can_become(Expired),
                "no status change leads to {status}"
            );
            if status != Requested {
                assert!(status.processor_next().is_empty(), "{status}");
            }
        }
    }
}
