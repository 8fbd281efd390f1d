//! The standard restaurant timeline from the seed, used to estimate delivery
//! and to drive the simulator:
//! confirmed (3 min) → preparing (15 min) → ready (5 min) → picked_up (10 min) → delivered.
//!
//! The simulator walks seed 003's fine statuses ([`FINE_TIMELINE`]): each
//! coarse stage's minutes are split across the fine statuses projecting
//! onto it, so the coarse status (and with it the delivery estimate)
//! changes exactly when [`TIMELINE`] says.

use std::time::Duration;

use super::lifecycle::TrackingStatus;
use super::status::OrderStatus;

/// One stage of the timeline: an order stays in `status` for `lasts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub status: OrderStatus,
    pub lasts: Duration,
}

const fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// The stages before delivery, in order. `delivered` follows the last one.
pub const TIMELINE: [Stage; 4] = [
    Stage {
        status: OrderStatus::Confirmed,
        lasts: minutes(3),
    },
    Stage {
        status: OrderStatus::Preparing,
        lasts: minutes(15),
    },
    Stage {
        status: OrderStatus::Ready,
        lasts: minutes(5),
    },
    Stage {
        status: OrderStatus::PickedUp,
        lasts: minutes(10),
    },
];

/// The status that ends the timeline.
pub const FINAL: OrderStatus = OrderStatus::Delivered;

/// One stage of the fine walk: an order stays in the fine `status` for
/// `lasts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FineStage {
    pub status: TrackingStatus,
    pub lasts: Duration,
}

const fn fine(status: TrackingStatus, n: u64) -> FineStage {
    FineStage {
        status,
        lasts: minutes(n),
    }
}

/// Seed 003's happy path, before delivery, with [`TIMELINE`]'s minutes
/// split across it: confirmed's 3 as submitted 1 + store_notified 2;
/// preparing's 15 as store_acknowledged 2 + picking_in_progress 13; ready's
/// 5 as ready_for_pickup 2 + driver_assigned 3; picked_up's 10 as
/// driver_pickup_complete 1 + in_transit 9 (the trip). `delivered` follows
/// the last one.
pub const FINE_TIMELINE: [FineStage; 8] = {
    use TrackingStatus::*;
    [
        fine(Submitted, 1),
        fine(StoreNotified, 2),
        fine(StoreAcknowledged, 2),
        fine(PickingInProgress, 13),
        fine(ReadyForPickup, 2),
        fine(DriverAssigned, 3),
        fine(DriverPickupComplete, 1),
        fine(InTransit, 9),
    ]
};

/// [`FINE_TIMELINE`] with one substitution proposed and approved: picking's
/// 13 minutes become picking 6, waiting for the customer 4 and approved 3.
pub const FINE_TIMELINE_WITH_SUBSTITUTION: [FineStage; 10] = {
    use TrackingStatus::*;
    [
        fine(Submitted, 1),
        fine(StoreNotified, 2),
        fine(StoreAcknowledged, 2),
        fine(PickingInProgress, 6),
        fine(SubstitutionsNeeded, 4),
        fine(SubstitutionsApproved, 3),
        fine(ReadyForPickup, 2),
        fine(DriverAssigned, 3),
        fine(DriverPickupComplete, 1),
        fine(InTransit, 9),
    ]
};

/// The fine stages still ahead of an order in `status`, starting with the
/// one it is in: on the walk with a substitution when `substitution` is
/// asked for or the order is already waiting on (or past) one. Empty for
/// terminal statuses.
pub fn fine_stages_from(status: TrackingStatus, substitution: bool) -> &'static [FineStage] {
    let substituting = substitution
        || matches!(
            status,
            TrackingStatus::SubstitutionsNeeded | TrackingStatus::SubstitutionsApproved
        );
    let walk: &'static [FineStage] = if substituting {
        &FINE_TIMELINE_WITH_SUBSTITUTION
    } else {
        &FINE_TIMELINE
    };
    match walk.iter().position(|stage| stage.status == status) {
        Some(at) => &walk[at..],
        None => &[],
    }
}

/// Where `status` comes on the happy path (with a substitution), for
/// telling whether an order is ahead of a step; `None` for `cancelled` and
/// `failed`, which are off it.
pub fn walk_position(status: TrackingStatus) -> Option<usize> {
    if status == TrackingStatus::Delivered {
        return Some(FINE_TIMELINE_WITH_SUBSTITUTION.len());
    }
    FINE_TIMELINE_WITH_SUBSTITUTION
        .iter()
        .position(|stage| stage.status == status)
}

/// How long an order that just entered `status` should take to arrive:
/// zero once delivered; `None` once cancelled or expired, and while
/// `requested`, because until a seller accepts nobody can say when the
/// timeline starts.
pub fn remaining(status: OrderStatus) -> Option<chrono::TimeDelta> {
    let stages = stages_from(status);
    if stages.is_empty() && status != FINAL {
        return None;
    }
    let left: Duration = stages.iter().map(|stage| stage.lasts).sum();
    // At most 33 minutes, far inside TimeDelta's range.
    chrono::TimeDelta::from_std(left).ok()
}

/// The stages still ahead of an order in `status`, starting with the one it is
/// in. Empty for terminal statuses, and for `requested`: the timeline starts
/// at `confirmed`, which only the order-request processor can reach.
pub fn stages_from(status: OrderStatus) -> &'static [Stage] {
    match TIMELINE.iter().position(|stage| stage.status == status) {
        Some(at) => &TIMELINE[at..],
        None => &[],
    }
}

/// How much faster than real time a timeline runs (`?speed=N`): always
/// within [`MIN_SPEED`]..=[`MAX_SPEED`], so scaling a timeline by it cannot
/// overflow and every instant planned with it is a few days away at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeScale(f64);

/// Slowest allowed time scale: a hundred times slower than real time. The
/// 33-minute timeline then takes 55 hours and the request expiry (15
/// minutes) 25; slower is no demo anyone waits for. The floor is what keeps
/// scaled times sane: below it `1e-9` planned steps 60,000 years ahead,
/// written `+59066-…`, which is not RFC 3339, and `1e-300` overflowed
/// `Duration` (a panic). At this floor the longest scaled span is days,
/// far inside RFC 3339's years 0000-9999, chrono's range and `Duration`.
pub const MIN_SPEED: f64 = 0.01;

/// Fastest allowed time scale: the 33-minute timeline in about 20 ms, each
/// step still its own write in timeline order (deadlines count from the
/// start, so steps shorter than the timer's millisecond may share a tick but
/// never swap). Faster only shortens spans, so it is bounded for sense, not
/// safety; clients and tests already rely on it.
pub const MAX_SPEED: f64 = 100_000.0;

/// A `speed` value we cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("speed must be a number from {MIN_SPEED} to {MAX_SPEED} (times real time), got '{given}'")]
pub struct BadSpeed {
    pub given: String,
}

impl TimeScale {
    pub const REAL_TIME: TimeScale = TimeScale(1.0);

    pub fn parse(s: &str) -> Result<TimeScale, BadSpeed> {
        // NaN fails the range test, as do the infinities.
        match s.trim().parse::<f64>() {
            Ok(speed) if (MIN_SPEED..=MAX_SPEED).contains(&speed) => Ok(TimeScale(speed)),
            _ => Err(BadSpeed {
                given: s.to_owned(),
            }),
        }
    }

    pub fn speed(self) -> f64 {
        self.0
    }

    /// `real` shortened (or, below 1, lengthened) by the scale. Saturates at
    /// `Duration::MAX` rather than panicking as `Duration::div_f64` does on
    /// overflow; the timelines' minutes at a speed in range never get near it.
    pub fn scale(self, real: Duration) -> Duration {
        Duration::try_from_secs_f64(real.as_secs_f64() / self.0).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_follows_the_seed_timeline() {
        let mins = |s| remaining(s).map(|d| d.num_minutes());
        assert_eq!(mins(OrderStatus::Confirmed), Some(33));
        assert_eq!(mins(OrderStatus::Preparing), Some(30));
        assert_eq!(mins(OrderStatus::Ready), Some(15));
        assert_eq!(mins(OrderStatus::PickedUp), Some(10));
        assert_eq!(mins(OrderStatus::Delivered), Some(0));
        assert_eq!(mins(OrderStatus::Cancelled), None);
        assert_eq!(mins(OrderStatus::Requested), None);
        assert_eq!(mins(OrderStatus::Expired), None);
    }

    #[test]
    fn each_stage_leads_legally_to_the_next() {
        let mut statuses: Vec<_> = TIMELINE.iter().map(|s| s.status).collect();
        statuses.push(FINAL);
        assert!(statuses.windows(2).all(|w| w[0].can_become(w[1])));
        assert_eq!(stages_from(OrderStatus::Ready).len(), 2);
        assert!(stages_from(OrderStatus::Delivered).is_empty());
        assert!(stages_from(OrderStatus::Requested).is_empty());
    }

    /// When each status of a walk is entered, from the walk's start.
    fn entered(walk: &[FineStage]) -> Vec<(TrackingStatus, Duration)> {
        let mut at = Duration::ZERO;
        let mut entered = Vec::new();
        for stage in walk {
            entered.push((stage.status, at));
            at += stage.lasts;
        }
        entered.push((TrackingStatus::Delivered, at));
        entered
    }

    #[test]
    fn the_fine_walks_change_the_coarse_status_when_the_timeline_does() {
        let coarse = entered(
            &TIMELINE
                .iter()
                .map(|stage| FineStage {
                    status: TrackingStatus::canonical(stage.status).unwrap(),
                    lasts: stage.lasts,
                })
                .collect::<Vec<_>>(),
        );
        for walk in [&FINE_TIMELINE[..], &FINE_TIMELINE_WITH_SUBSTITUTION[..]] {
            // The first fine status of each coarse one is entered when the
            // coarse timeline enters it.
            let mut changes: Vec<(OrderStatus, Duration)> = Vec::new();
            for (status, at) in entered(walk) {
                if changes
                    .last()
                    .is_none_or(|(last, _)| *last != status.coarse())
                {
                    changes.push((status.coarse(), at));
                }
            }
            let expected: Vec<_> = coarse.iter().map(|(s, at)| (s.coarse(), *at)).collect();
            assert_eq!(changes, expected);
        }
    }

    #[test]
    fn each_fine_stage_leads_by_one_step_of_the_lifecycle_to_the_next() {
        use super::super::lifecycle::step_to;
        for walk in [&FINE_TIMELINE[..], &FINE_TIMELINE_WITH_SUBSTITUTION[..]] {
            let statuses: Vec<_> = entered(walk).into_iter().map(|(s, _)| s).collect();
            for pair in statuses.windows(2) {
                assert!(step_to(pair[0], pair[1]).is_some(), "{pair:?}");
            }
        }
    }

    #[test]
    fn the_walk_goes_on_from_wherever_the_order_is() {
        use TrackingStatus::*;
        assert_eq!(fine_stages_from(Submitted, false).len(), 8);
        assert_eq!(fine_stages_from(Submitted, true).len(), 10);
        assert_eq!(
            fine_stages_from(PickingInProgress, false)[0].lasts,
            minutes(13)
        );
        assert_eq!(
            fine_stages_from(PickingInProgress, true)[0].lasts,
            minutes(6)
        );
        // Waiting on a substitution someone else proposed: its branch.
        assert_eq!(fine_stages_from(SubstitutionsNeeded, false).len(), 6);
        assert_eq!(fine_stages_from(InTransit, false).len(), 1);
        for terminal in [Delivered, Cancelled, Failed] {
            assert!(fine_stages_from(terminal, true).is_empty());
        }
        // Every live status has a walk, and positions follow the walk.
        for status in <TrackingStatus as strum::VariantArray>::VARIANTS {
            assert_eq!(
                fine_stages_from(*status, false).is_empty(),
                status.is_terminal(),
                "{status}"
            );
        }
        assert!(walk_position(Submitted) < walk_position(StoreNotified));
        assert!(walk_position(InTransit) < walk_position(Delivered));
        assert_eq!(walk_position(Cancelled), None);
    }

    #[test]
    fn speed_bounds() {
        assert_eq!(
            TimeScale::parse("60")
                .unwrap()
                .scale(Duration::from_secs(180)),
            Duration::from_secs(3)
        );
        for good in ["0.01", "1", " 2.5 ", "1e5", "100000"] {
            assert!(TimeScale::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "0", "-0", "-1", "abc", "", "NaN", "inf", "-inf", "1e-300", "1e-9", "0.0099",
            "100000.5", "1e300", "1000000",
        ] {
            let err = TimeScale::parse(bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("speed must be a number from 0.01 to 100000 (times real time)"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn scaled_spans_stay_small_and_never_panic() {
        let slowest = TimeScale::parse(&MIN_SPEED.to_string()).unwrap();
        let whole: Duration = TIMELINE
            .iter()
            .map(|stage| slowest.scale(stage.lasts))
            .sum();
        let hours = whole.as_secs_f64() / 3600.0;
        assert!((hours - 55.0).abs() < 1e-6, "{hours}");
        // Durations no timeline has saturate instead of panicking.
        assert_eq!(slowest.scale(Duration::MAX), Duration::MAX);
    }
}
