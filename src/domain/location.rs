//! A driver's position while delivering an order: one GPS fix, and the rule
//! for which orders may report one.
//!
//! Locations are not order changes. They carry no version, record no event
//! and wake no status poller; the latest fix of each order is all that is
//! kept (see `location/`). Pure: no I/O.

use serde::{Deserialize, Serialize};

use super::order::Order;
use super::status::OrderStatus;
use super::time::Timestamp;

/// How far ahead of the server's clock a fix's timestamp may be. Phones'
/// clocks drift by seconds, not minutes; a fix further ahead would hide
/// every true fix after it, since older fixes are ignored.
pub const MAX_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

/// One position report, validated: coordinates in range, accuracy not
/// negative, time not in the future.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// Degrees north, -90 to 90.
    pub latitude: f64,
    /// Degrees east, -180 to 180.
    pub longitude: f64,
    /// Radius of the 68% confidence circle, in metres, when the device says.
    pub accuracy: Option<f64>,
    /// When the device took the fix.
    pub at: Timestamp,
}

/// Counts the fixes accepted for one order, from 1: the cursor of the
/// live-location long poll (`?after=`). It continues across restarts from
/// the persisted fix.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

/// The latest fix of an order and its place in the order's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub fix: Fix,
    pub seq: Seq,
}

/// Why a fix is refused: every problem found, for one 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid location: {}", problems.join("; "))]
pub struct BadFix {
    pub problems: Vec<String>,
}

impl Fix {
    /// Checks a fix as a device reported it, at `now` on the server's clock.
    /// JSON cannot carry NaN or infinities, but the checks do not rely on it.
    pub fn parse(
        latitude: f64,
        longitude: f64,
        accuracy: Option<f64>,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<Fix, BadFix> {
        let mut problems = Vec::new();
        if !(latitude.is_finite() && (-90.0..=90.0).contains(&latitude)) {
            problems.push(format!(
                "latitude must be a number from -90 to 90, got {latitude}"
            ));
        }
        if !(longitude.is_finite() && (-180.0..=180.0).contains(&longitude)) {
            problems.push(format!(
                "longitude must be a number from -180 to 180, got {longitude}"
            ));
        }
        if let Some(accuracy) = accuracy {
            if !(accuracy.is_finite() && accuracy >= 0.0) {
                problems.push(format!(
                    "accuracy must be a number of metres, 0 or more, got {accuracy}"
                ));
            }
        }
        let latest = now.plus(MAX_CLOCK_SKEW);
        if at > latest {
            problems.push(format!(
                "timestamp {at} is more than {} minutes ahead of the server's clock ({now})",
                MAX_CLOCK_SKEW.num_minutes()
            ));
        }
        if problems.is_empty() {
            Ok(Fix {
                latitude,
                longitude,
                accuracy,
                at,
            })
        } else {
            Err(BadFix { problems })
        }
    }
}

/// Why an order takes no location now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLocatable {
    #[error("order {0} has no driver assigned; a driver's location is accepted only once one is")]
    NoDriver(super::order::OrderId),
    #[error("order {id} is {status}, which is final; it takes no more driver locations")]
    Final {
        id: super::order::OrderId,
        status: OrderStatus,
    },
}

/// Whether `order` takes a driver's location now: a driver is assigned and
/// the order is not final.
pub fn accepts_location(order: &Order) -> Result<(), NotLocatable> {
    if order.status.is_terminal() {
        return Err(NotLocatable::Final {
            id: order.id.clone(),
            status: order.status,
        });
    }
    let driver = order
        .fulfillment
        .as_ref()
        .is_some_and(|f| f.driver_details.is_some());
    if !driver {
        return Err(NotLocatable::NoDriver(order.id.clone()));
    }
    Ok(())
}

impl Location {
    /// Whether `self`, the fix held, makes `fix` stale: a fix not newer than
    /// the one held is ignored, so a late retry cannot move the driver back.
    pub fn supersedes(&self, fix: &Fix) -> bool {
        fix.at <= self.fix.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn coordinates_accuracy_and_time_are_checked_together() {
        let now = t("2025-01-12T20:30:00Z");
        let fix = Fix::parse(45.5, -73.6, Some(5.0), now, now).unwrap();
        assert_eq!(fix.latitude, 45.5);
        for (lat, lon) in [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)] {
            assert!(Fix::parse(lat, lon, None, now, now).is_ok());
        }
        let bad =
            Fix::parse(90.5, f64::NAN, Some(-1.0), t("2025-01-12T20:33:00Z"), now).unwrap_err();
        assert_eq!(bad.problems.len(), 4, "{bad}");
        assert!(Fix::parse(0.0, 180.01, None, now, now).is_err());
        assert!(Fix::parse(f64::INFINITY, 0.0, None, now, now).is_err());
        assert!(Fix::parse(0.0, 0.0, Some(f64::INFINITY), now, now).is_err());
        // A little ahead is a phone's clock; far behind is a late report.
        assert!(Fix::parse(0.0, 0.0, None, t("2025-01-12T20:31:59Z"), now).is_ok());
        assert!(Fix::parse(0.0, 0.0, None, t("2020-01-01T00:00:00Z"), now).is_ok());
    }

    #[test]
    fn only_a_newer_fix_replaces_the_one_held() {
        let now = t("2025-01-12T20:30:00Z");
        let held = Location {
            fix: Fix::parse(1.0, 1.0, None, now, now).unwrap(),
            seq: Seq(3),
        };
        let same_time = Fix::parse(2.0, 2.0, None, now, now).unwrap();
        let later = Fix::parse(2.0, 2.0, None, t("2025-01-12T20:30:00.000001Z"), now).unwrap();
        assert!(held.supersedes(&same_time));
        assert!(!held.supersedes(&later));
        assert_eq!(held.seq.next(), Seq(4));
    }
}
