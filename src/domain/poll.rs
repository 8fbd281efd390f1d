//! Long-poll rules that do not depend on how waiting is done: what a client's
//! cursor means, how long it may wait, and how soon it should come back.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use strum::VariantArray;

use super::lifecycle::TrackingStatus;
use super::order::{Order, Version};
use super::status::OrderStatus;
use super::time::Timestamp;

/// Default long-poll wait when the client gives no `timeout`, in seconds.
pub const DEFAULT_POLL_TIMEOUT_SECS: u64 = 30;
/// Longest wait we grant; larger requests are clamped to it, in seconds.
pub const MAX_POLL_TIMEOUT_SECS: u64 = 120;

/// A parked poll may answer up to this fraction of its timeout early ...
pub const TIMEOUT_JITTER_FRACTION: f64 = 0.1;
/// ... and never more than this much early.
pub const MAX_TIMEOUT_JITTER: Duration = Duration::from_secs(3);

/// How long a parked poll actually waits: `timeout` shortened by a jitter of
/// less than [`TIMEOUT_JITTER_FRACTION`] of it, capped at
/// [`MAX_TIMEOUT_JITTER`], chosen by `seed`.
///
/// Phones that parked together (after a restart, a shared change, a
/// reconnect storm) would otherwise all time out in the same instant and all
/// come back in the same instant, every time. Spreading the expiries spreads
/// the reconnects. Waiting less, never more, keeps the promise of `timeout`
/// as the longest wait; the answer still reports the timeout granted. The
/// same seed always gives the same wait.
pub fn jittered(timeout: Duration, seed: u64) -> Duration {
    let spread = timeout
        .mul_f64(TIMEOUT_JITTER_FRACTION)
        .min(MAX_TIMEOUT_JITTER);
    // splitmix64: consecutive seeds land far apart.
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    // The top 53 bits as a fraction in [0, 1).
    let fraction = (x >> 11) as f64 / (1u64 << 53) as f64;
    timeout.saturating_sub(spread.mul_f64(fraction))
}

/// What the client says it already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// `?version=N` from an earlier response.
    Version(Version),
    /// The entity tags of `If-None-Match`.
    ETags(Vec<Version>),
    /// `?last_update=<updated_at>` from an earlier response.
    UpdatedAt(Timestamp),
    /// No cursor, but an explicit `timeout`: the client wants to wait for the
    /// next change from whatever the state is now (the seed's
    /// "Terminal 1" experiment, `curl …/track?timeout=30`).
    NextChange,
}

/// Where a client's cursor stands against an order's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The order has moved on since the cursor: answer at once.
    Behind,
    /// The client has this state: wait for the next one.
    Current,
    /// The cursor names a state newer than this one: this copy of the order
    /// may be stale (check the store), or the store lost what the client saw
    /// (a restore from backup), or the client's clock runs ahead.
    Ahead,
}

impl Cursor {
    /// Where the cursor stands against `order`. Versions and times compare
    /// with `<`/`>`, never `!=`: a cursor ahead of what we hold is neither
    /// trusted (parked on) nor dismissed (answered as if behind) until the
    /// store has been asked. [`Cursor::NextChange`] has seen nothing yet, so
    /// it is behind; resolve it with [`Cursor::pin`] before waiting.
    pub fn standing(&self, order: &Order) -> Standing {
        let compare = |ord: std::cmp::Ordering| match ord {
            std::cmp::Ordering::Less => Standing::Behind,
            std::cmp::Ordering::Equal => Standing::Current,
            std::cmp::Ordering::Greater => Standing::Ahead,
        };
        match self {
            Cursor::Version(version) => compare(version.cmp(&order.version)),
            Cursor::ETags(versions) if versions.contains(&order.version) => Standing::Current,
            Cursor::ETags(versions) => match versions.iter().max() {
                Some(newest) => compare(newest.cmp(&order.version)),
                None => Standing::Behind,
            },
            Cursor::UpdatedAt(at) => compare(at.cmp(&order.updated_at)),
            Cursor::NextChange => Standing::Behind,
        }
    }

    /// Whether `order` is a state the client does not have: anything but
    /// [`Standing::Current`].
    pub fn lacks(&self, order: &Order) -> bool {
        self.standing(order) != Standing::Current
    }

    /// The cursor to wait with, given the state at the start of the wait:
    /// [`Cursor::NextChange`] becomes that state's version.
    pub fn pin(self, current: &Order) -> Cursor {
        match self {
            Cursor::NextChange => Cursor::Version(current.version),
            other => other,
        }
    }
}

/// The wait a client asked for and the wait it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollTimeout {
    /// Seconds actually granted, after clamping. Reported back to the client.
    pub applied_secs: u64,
}

/// A `timeout` value that is not a whole, non-negative number of seconds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timeout must be a whole number of seconds from 0 to {max} (larger values are clamped), got '{given}'")]
pub struct BadTimeout {
    pub given: String,
    pub max: u64,
}

impl PollTimeout {
    /// Reads `?timeout=`: absent means `default`, above `max` is clamped,
    /// `0` means answer at once.
    pub fn parse(given: Option<&str>, default: u64, max: u64) -> Result<PollTimeout, BadTimeout> {
        let secs = match given.map(str::trim) {
            None | Some("") => default,
            Some(text) => match text.parse::<u64>() {
                Ok(secs) => secs,
                // All digits but too large for u64: still a valid request, clamp it.
                Err(_) if text.bytes().all(|b| b.is_ascii_digit()) => u64::MAX,
                Err(_) => {
                    return Err(BadTimeout {
                        given: text.to_owned(),
                        max,
                    })
                }
            },
        };
        Ok(PollTimeout {
            applied_secs: secs.min(max),
        })
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(self.applied_secs)
    }
}

/// How long a client should wait before its next poll, by status.
///
/// The seed's battery table: 2 minutes while merely confirmed, 1 minute while
/// cooking, 30 seconds once ready or on the way, and 0 ("stop polling") once
/// the order is final.
///
/// An order request (`requested`) also gets 30 seconds: its answer (a seller
/// accepts, or the request expires) comes within minutes and the customer is
/// typically watching for it, like an order that is ready or on its way.
/// `expired` is final, so 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollPolicy {
    /// By coarse status: what `requested` and `expired` use, and where the
    /// fine statuses start from.
    intervals: BTreeMap<OrderStatus, u64>,
    /// By seed 003's fine status: what every order past `requested` uses.
    /// By default each fine status has its coarse status's interval.
    fine: BTreeMap<TrackingStatus, u64>,
}

impl Default for PollPolicy {
    fn default() -> Self {
        let intervals = BTreeMap::from([
            (OrderStatus::Requested, 30),
            (OrderStatus::Confirmed, 120),
            (OrderStatus::Preparing, 60),
            (OrderStatus::Ready, 30),
            (OrderStatus::PickedUp, 30),
            (OrderStatus::Delivered, 0),
            (OrderStatus::Cancelled, 0),
            (OrderStatus::Expired, 0),
            (OrderStatus::Failed, 0),
        ]);
        let fine = TrackingStatus::VARIANTS
            .iter()
            .map(|&status| {
                (
                    status,
                    intervals.get(&status.coarse()).copied().unwrap_or(0),
                )
            })
            .collect();
        PollPolicy { intervals, fine }
    }
}

/// A status an interval is set for: a coarse one (and with it every fine
/// status it projects) or one fine status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    Coarse(OrderStatus),
    Fine(TrackingStatus),
}

impl PollStatus {
    fn is_terminal(self) -> bool {
        match self {
            PollStatus::Coarse(status) => status.is_terminal(),
            PollStatus::Fine(status) => status.is_terminal(),
        }
    }
}

impl fmt::Display for PollStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollStatus::Coarse(status) => status.fmt(f),
            PollStatus::Fine(status) => status.fmt(f),
        }
    }
}

impl std::str::FromStr for PollStatus {
    type Err = String;

    /// A coarse status name, else a fine one (the names they share mean
    /// the same thing).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(coarse) = s.parse::<OrderStatus>() {
            return Ok(PollStatus::Coarse(coarse));
        }
        s.parse::<TrackingStatus>()
            .map(PollStatus::Fine)
            .map_err(|_| {
                let fine: Vec<&str> = TrackingStatus::VARIANTS.iter().map(|s| s.into()).collect();
                format!(
                    "unknown status '{s}'; use one of {} or a fine status: {}",
                    super::status::list(&OrderStatus::ALL),
                    fine.join(", ")
                )
            })
    }
}

/// An interval override that would break the policy's promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPolicy {
    #[error("{0} is final, so its poll interval must stay 0 (stop polling)")]
    TerminalMustStop(PollStatus),
    #[error(
        "{0} is not final, so its poll interval must be at least 1 second (0 means stop polling)"
    )]
    LiveMustPoll(PollStatus),
}

impl PollPolicy {
    /// The default policy with some intervals replaced: coarse ones first
    /// (each also sets its fine statuses), then fine ones.
    pub fn with_overrides(
        overrides: impl IntoIterator<Item = (PollStatus, u64)>,
    ) -> Result<Self, BadPolicy> {
        let mut policy = PollPolicy::default();
        let mut fine = Vec::new();
        for (status, secs) in overrides {
            match (status.is_terminal(), secs) {
                (true, 0) | (false, 1..) => {}
                (true, _) => return Err(BadPolicy::TerminalMustStop(status)),
                (false, 0) => return Err(BadPolicy::LiveMustPoll(status)),
            }
            match status {
                PollStatus::Coarse(coarse) => {
                    policy.intervals.insert(coarse, secs);
                    for (status, interval) in policy.fine.iter_mut() {
                        if status.coarse() == coarse {
                            *interval = secs;
                        }
                    }
                }
                PollStatus::Fine(status) => fine.push((status, secs)),
            }
        }
        policy.fine.extend(fine);
        Ok(policy)
    }

    /// Seconds until the next poll for an order in coarse `status`; 0 means
    /// stop.
    pub fn next_poll_interval(&self, status: OrderStatus) -> u64 {
        // Every status has an entry: the default fills them all and overrides
        // only replace.
        self.intervals.get(&status).copied().unwrap_or(0)
    }

    /// Seconds until the next poll for `order`, by its fine status when it
    /// has one; 0 means stop.
    pub fn interval_for(&self, order: &Order) -> u64 {
        match order.tracking_status() {
            Some(fine) => self.fine.get(&fine).copied().unwrap_or(0),
            None => self.next_poll_interval(order.status),
        }
    }

    /// Every coarse status with its interval, for stats and docs.
    pub fn intervals(&self) -> &BTreeMap<OrderStatus, u64> {
        &self.intervals
    }

    /// Every fine status with its interval, for stats and docs.
    pub fn fine_intervals(&self) -> &BTreeMap<TrackingStatus, u64> {
        &self.fine
    }
}

/// The human hint that accompanies `next_poll_interval`, as text.
pub fn battery_tip(next_poll_interval: u64) -> String {
    BatteryTip(next_poll_interval).to_string()
}

/// The human hint that accompanies a `next_poll_interval`; `Display` writes
/// it without allocating, for answers rendered on every wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatteryTip(pub u64);

impl fmt::Display for BatteryTip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("Order complete - stop polling"),
            1 => f.write_str("Next poll in 1 second"),
            secs => write!(f, "Next poll in {secs} seconds"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_defaults_clamps_and_rejects() {
        let parse = |s| PollTimeout::parse(s, 30, 120);
        assert_eq!(parse(None).unwrap().applied_secs, 30);
        assert_eq!(parse(Some("")).unwrap().applied_secs, 30);
        assert_eq!(parse(Some("0")).unwrap().applied_secs, 0);
        assert_eq!(parse(Some("45")).unwrap().applied_secs, 45);
        assert_eq!(parse(Some("999")).unwrap().applied_secs, 120);
        assert_eq!(
            parse(Some("99999999999999999999999")).unwrap().applied_secs,
            120
        );
        for bad in ["-1", "abc", "1.5", "30s"] {
            assert!(parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_matches_the_seed_table_and_guards_overrides() {
        let policy = PollPolicy::default();
        let expected = [
            (OrderStatus::Requested, 30),
            (OrderStatus::Confirmed, 120),
            (OrderStatus::Preparing, 60),
            (OrderStatus::Ready, 30),
            (OrderStatus::PickedUp, 30),
            (OrderStatus::Delivered, 0),
            (OrderStatus::Cancelled, 0),
            (OrderStatus::Expired, 0),
        ];
        for (status, secs) in expected {
            assert_eq!(policy.next_poll_interval(status), secs, "{status}");
        }
        let coarse = |status| PollStatus::Coarse(status);
        let tuned = PollPolicy::with_overrides([(coarse(OrderStatus::Confirmed), 90)]).unwrap();
        assert_eq!(tuned.next_poll_interval(OrderStatus::Confirmed), 90);
        assert_eq!(tuned.fine_intervals()[&TrackingStatus::StoreNotified], 90);
        assert!(PollPolicy::with_overrides([(coarse(OrderStatus::Delivered), 5)]).is_err());
        assert!(PollPolicy::with_overrides([(coarse(OrderStatus::Expired), 5)]).is_err());
        assert!(PollPolicy::with_overrides([(coarse(OrderStatus::Requested), 0)]).is_err());
        assert!(PollPolicy::with_overrides([(coarse(OrderStatus::Ready), 0)]).is_err());
        assert!(
            PollPolicy::with_overrides([(PollStatus::Fine(TrackingStatus::InTransit), 0)]).is_err()
        );
    }

    #[test]
    fn fine_statuses_follow_their_coarse_one_unless_set_themselves() {
        let policy = PollPolicy::default();
        for status in TrackingStatus::VARIANTS {
            assert_eq!(
                policy.fine_intervals()[status],
                policy.next_poll_interval(status.coarse()),
                "{status}"
            );
        }
        // A fine override wins over its coarse one, whatever the order given.
        let tuned = PollPolicy::with_overrides([
            (PollStatus::Fine(TrackingStatus::InTransit), 10),
            (PollStatus::Coarse(OrderStatus::PickedUp), 20),
        ])
        .unwrap();
        assert_eq!(tuned.fine_intervals()[&TrackingStatus::InTransit], 10);
        assert_eq!(
            tuned.fine_intervals()[&TrackingStatus::DriverPickupComplete],
            20
        );
        assert_eq!(
            "in_transit".parse(),
            Ok(PollStatus::Fine(TrackingStatus::InTransit))
        );
        assert_eq!("ready".parse(), Ok(PollStatus::Coarse(OrderStatus::Ready)));
        assert!("soon"
            .parse::<PollStatus>()
            .unwrap_err()
            .contains("in_transit"));
    }

    #[test]
    fn jitter_shortens_by_less_than_a_tenth_capped_and_spreads() {
        let thirty = Duration::from_secs(30);
        let waits: Vec<Duration> = (0..1000).map(|seed| jittered(thirty, seed)).collect();
        assert!(waits
            .iter()
            .all(|w| *w <= thirty && *w > thirty - Duration::from_secs(3)));
        // Spread over the whole window, not bunched: every tenth of it is used.
        let mut buckets = [0; 10];
        for w in &waits {
            let early = (thirty - *w).as_secs_f64() / 3.0;
            buckets[((early * 10.0) as usize).min(9)] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 50), "{buckets:?}");
        // The cap: a two-minute poll answers at most 3 s early.
        let two_minutes = Duration::from_secs(120);
        assert!(
            (0..1000).all(|seed| jittered(two_minutes, seed) > two_minutes - MAX_TIMEOUT_JITTER)
        );
        // Short waits stay above 90%; zero stays zero; seeds are repeatable.
        assert!((0..1000)
            .all(|seed| jittered(Duration::from_secs(1), seed) > Duration::from_millis(900)));
        assert_eq!(jittered(Duration::ZERO, 7), Duration::ZERO);
        assert_eq!(jittered(thirty, 42), jittered(thirty, 42));
    }

    #[test]
    fn tips_read_well() {
        assert_eq!(battery_tip(60), "Next poll in 60 seconds");
        assert_eq!(battery_tip(0), "Order complete - stop polling");
    }
}
