//! The live-location hub: per order, a `tokio::sync::watch` channel holding
//! only the latest driver fix and its sequence number.
//!
//! It is the order hub's sibling, not part of it: a fix bumps no version and
//! wakes no status poller. Its long polls park through the order hub
//! ([`Hub::park`]), so they share its global cap, its shutdown signal and
//! its timeout jitter, and each order's live-location polls have their own
//! per-order cap. Like the order hub it is a bounded cache ([`LocationHub::evict_idle`])
//! and never touches storage: the service loads an order's saved fix
//! before its first use here.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::domain::{Fix, Location, OrderId, Seq};
use crate::tracking::{Counters, Hub, PollCounts, PollError};

/// Cheap handle to the live-location hub; clones share one state.
#[derive(Clone)]
pub struct LocationHub {
    shared: Arc<Shared>,
}

struct Shared {
    /// One channel per cached order. As in the order hub, an entry is
    /// removed only while it has no receivers, under the map's shard lock,
    /// and receivers subscribe under the same lock.
    channels: DashMap<OrderId, Arc<Channel>>,
    /// The order hub, whose caps, shutdown signal and jitter polls here share.
    hub: Hub,
    /// How live-location polls ended.
    counters: Counters,
    /// Origin of the channels' `touched` times.
    epoch: Instant,
}

/// The live location of one order.
pub(super) struct Channel {
    /// The latest fix, `None` until the first; its receivers are the parked
    /// polls.
    tx: watch::Sender<Option<Location>>,
    /// Polls parked on this order's location now, for the per-order cap.
    parked: AtomicUsize,
    /// When a fix last arrived or the order was loaded, in milliseconds
    /// since the hub's epoch: idle orders are evicted.
    touched: AtomicU64,
    /// The highest seq known to be saved (here, or by the instance that
    /// accepted it). A channel holding a newer fix is never evicted, so the
    /// sequence cannot restart below a fix still waiting to be written.
    saved: AtomicU64,
}

/// The live-location figures `/system/stats` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LocationStats {
    /// Orders whose latest fix is held in memory now: watched, recently
    /// reported, or not yet saved.
    pub orders_cached: usize,
    /// What happened to the live-location polls served since start (their
    /// parked ones count in `long_polls.parked_now`).
    pub polls: PollCounts,
}

/// How a live-location poll ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocationOutcome {
    /// The latest fix, if the order has one.
    pub location: Option<Location>,
    /// Whether `location` is a state the client's cursor did not name.
    pub has_update: bool,
}

impl LocationHub {
    pub fn new(hub: Hub) -> LocationHub {
        LocationHub {
            shared: Arc::new(Shared {
                channels: DashMap::new(),
                hub,
                counters: Counters::default(),
                epoch: Instant::now(),
            }),
        }
    }

    /// The order's channel, if cached.
    pub(super) fn channel(&self, id: &OrderId) -> Option<Arc<Channel>> {
        let channel = Arc::clone(&*self.shared.channels.get(id)?);
        channel.touch(self.shared.millis());
        Some(channel)
    }

    /// Caches the order with `saved`, its fix as read from the store, and
    /// returns its channel; if another task cached it meanwhile, that
    /// channel, which is at least as new.
    pub(super) fn load(&self, id: &OrderId, saved: Option<Location>) -> Arc<Channel> {
        let now = self.shared.millis();
        let channel = Arc::clone(
            &self
                .shared
                .channels
                .entry(id.clone())
                .or_insert_with(|| Arc::new(Channel::new(saved, now))),
        );
        channel.touch(now);
        channel
    }

    /// Takes `fix` as the order's latest unless the fix held is as new or
    /// newer; returns whether it was taken and the latest location after.
    /// A taken fix gets the next seq and wakes the order's parked polls.
    pub(super) fn offer(&self, channel: &Channel, fix: Fix) -> (bool, Location) {
        channel.touch(self.shared.millis());
        let mut outcome = None;
        channel.tx.send_if_modified(|current| match current {
            Some(held) if held.supersedes(&fix) => {
                outcome = Some((false, *held));
                false
            }
            _ => {
                let seq = current.map_or(Seq(1), |held| held.seq.next());
                let location = Location { fix, seq };
                *current = Some(location);
                outcome = Some((true, location));
                true
            }
        });
        // Invariant: the closure above runs exactly once and sets it.
        outcome.expect("send_if_modified runs its closure")
    }

    /// Takes a location another instance accepted (and saves), if it is
    /// newer than the one held; the order is cached if it was not, so the
    /// next fix accepted here continues its sequence. Two instances that
    /// accept fixes of one order at the same moment may number them alike;
    /// the newer fix then takes the next seq here, so polls still wake.
    pub fn merge(&self, id: &OrderId, remote: Location) {
        let channel = self.load(id, None);
        let taken = channel.tx.send_if_modified(|current| match current {
            Some(held) if held.supersedes(&remote.fix) => false,
            _ => {
                let next = current.map_or(Seq(1), |held| held.seq.next());
                *current = Some(Location {
                    fix: remote.fix,
                    seq: remote.seq.max(next),
                });
                true
            }
        });
        if taken {
            // The accepting instance writes it.
            let seq = channel.tx.borrow().map_or(0, |held| held.seq.0);
            channel.saved.fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// Records that the order's fix `seq` (or a newer one) is saved.
    pub(super) fn mark_saved(&self, id: &OrderId, seq: Seq) {
        if let Some(channel) = self.shared.channels.get(id) {
            channel.saved.fetch_max(seq.0, Ordering::AcqRel);
        }
    }

    /// The order's latest location, if cached.
    pub fn latest(&self, id: &OrderId) -> Option<Location> {
        *self.shared.channels.get(id)?.tx.borrow()
    }

    /// Answers a live-location poll of a cached order
    /// ([`PollError::UnknownOrder`] otherwise).
    ///
    /// `after` is the seq the client holds (0 for none). Answers at once
    /// when the latest seq differs from it: newer is an update, and older
    /// (a cursor from before a crash, or from another instance) is answered
    /// too, as a state the client lacks, so it can start over from it. Also
    /// at once when `may_park` is false (a final order), `timeout` is zero,
    /// or the server is stopping. Otherwise it parks under the caps until a
    /// newer fix, the timeout or shutdown.
    pub async fn long_poll(
        &self,
        id: &OrderId,
        after: Seq,
        timeout: Duration,
        may_park: bool,
    ) -> Result<LocationOutcome, PollError> {
        // Subscribed under the map's shard lock: eviction cannot remove the
        // channel between the lookup and the subscription.
        let (channel, mut rx) = {
            let entry = self
                .shared
                .channels
                .get(id)
                .ok_or(PollError::UnknownOrder)?;
            (Arc::clone(&entry), entry.tx.subscribe())
        };
        let current = *rx.borrow_and_update();
        let lacks = |location: &Option<Location>| location.map_or(Seq(0), |l| l.seq) != after;
        let has_update = lacks(&current);
        if has_update || !may_park || timeout.is_zero() || self.shared.hub.stopping() {
            self.shared.counters.immediate(has_update);
            return Ok(LocationOutcome {
                location: current,
                has_update,
            });
        }
        let parked = self
            .shared
            .hub
            .park(&channel.parked, &self.shared.counters, &mut rx, timeout)
            .await?;
        let location = *rx.borrow_and_update();
        let has_update = lacks(&location);
        parked.finish(has_update);
        Ok(LocationOutcome {
            location,
            has_update,
        })
    }

    /// Drops every order that nobody watches, whose fix is saved, and that
    /// has had no fix or load for `idle`. Returns how many were dropped.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let cutoff = self
            .shared
            .millis()
            .saturating_sub(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX));
        let before = self.shared.channels.len();
        self.shared.channels.retain(|_, channel| {
            let unsaved = channel
                .tx
                .borrow()
                .is_some_and(|held| held.seq.0 > channel.saved.load(Ordering::Acquire));
            unsaved
                || channel.tx.receiver_count() > 0
                || channel.touched.load(Ordering::Relaxed) > cutoff
        });
        let evicted = before.saturating_sub(self.shared.channels.len());
        if evicted > 0 && self.shared.channels.len() < self.shared.channels.capacity() / 4 {
            self.shared.channels.shrink_to_fit();
        }
        evicted
    }

    /// How many orders' locations are cached now.
    pub fn cached(&self) -> usize {
        self.shared.channels.len()
    }

    /// What happened to the live-location polls served so far.
    pub fn poll_counts(&self) -> PollCounts {
        self.shared.counters.snapshot()
    }

    /// The figures `/system/stats` shows.
    pub fn stats(&self) -> LocationStats {
        LocationStats {
            orders_cached: self.cached(),
            polls: self.poll_counts(),
        }
    }

    /// Polls parked on the order's location now.
    pub fn parked(&self, id: &OrderId) -> usize {
        self.shared
            .channels
            .get(id)
            .map_or(0, |channel| channel.parked.load(Ordering::Relaxed))
    }
}

impl Shared {
    /// Milliseconds since the hub's epoch.
    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Channel {
    fn new(saved: Option<Location>, now: u64) -> Channel {
        Channel {
            saved: AtomicU64::new(saved.map_or(0, |l| l.seq.0)),
            tx: watch::Sender::new(saved),
            parked: AtomicUsize::new(0),
            touched: AtomicU64::new(now),
        }
    }

    fn touch(&self, now: u64) {
        self.touched.fetch_max(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::domain::Timestamp;
    use crate::tracking::Limits;

    fn at(secs: i64) -> Timestamp {
        Timestamp::new(chrono::DateTime::from_timestamp(1_736_713_800 + secs, 0).unwrap())
    }

    fn fix(secs: i64) -> Fix {
        Fix {
            latitude: 45.0,
            longitude: -73.0,
            accuracy: None,
            at: at(secs),
        }
    }

    fn hub(limits: Limits) -> (LocationHub, CancellationToken) {
        let shutdown = CancellationToken::new();
        (
            LocationHub::new(Hub::new(limits, shutdown.clone())),
            shutdown,
        )
    }

    #[tokio::test]
    async fn newer_fixes_take_the_next_seq_and_older_ones_are_ignored() {
        let (hub, _) = hub(Limits::default());
        let id: OrderId = "o".parse().unwrap();
        let channel = hub.load(&id, None);
        assert_eq!(
            hub.offer(&channel, fix(10)),
            (
                true,
                Location {
                    fix: fix(10),
                    seq: Seq(1)
                }
            )
        );
        assert_eq!(hub.offer(&channel, fix(20)).1.seq, Seq(2));
        let (applied, latest) = hub.offer(&channel, fix(20));
        assert!(!applied, "a fix as old as the one held is ignored");
        assert_eq!(latest.fix, fix(20));
        assert!(!hub.offer(&channel, fix(15)).0);
        assert_eq!(hub.latest(&id).unwrap().seq, Seq(2));
        // A saved fix continues its sequence.
        let other: OrderId = "p".parse().unwrap();
        let saved = Location {
            fix: fix(5),
            seq: Seq(41),
        };
        let channel = hub.load(&other, Some(saved));
        assert_eq!(hub.offer(&channel, fix(6)).1.seq, Seq(42));
    }

    #[tokio::test]
    async fn another_instances_fix_is_merged_by_time_and_keeps_seq_growing() {
        let (hub, _) = hub(Limits::default());
        let id: OrderId = "o".parse().unwrap();
        hub.merge(
            &id,
            Location {
                fix: fix(10),
                seq: Seq(7),
            },
        );
        assert_eq!(hub.latest(&id).unwrap().seq, Seq(7));
        let channel = hub.channel(&id).unwrap();
        assert_eq!(hub.offer(&channel, fix(11)).1.seq, Seq(8));
        // Numbered 8 there too, but newer: it takes 9 here.
        hub.merge(
            &id,
            Location {
                fix: fix(12),
                seq: Seq(8),
            },
        );
        assert_eq!(
            hub.latest(&id).unwrap(),
            Location {
                fix: fix(12),
                seq: Seq(9)
            }
        );
        // Older than what is held: ignored.
        hub.merge(
            &id,
            Location {
                fix: fix(1),
                seq: Seq(50),
            },
        );
        assert_eq!(hub.latest(&id).unwrap().seq, Seq(9));
    }

    #[tokio::test]
    async fn a_parked_poll_wakes_on_a_newer_fix_and_answers_at_once_when_behind() {
        let (hub, _) = hub(Limits::default());
        let id: OrderId = "o".parse().unwrap();
        let channel = hub.load(&id, None);
        let wait = Duration::from_secs(30);
        // No fix yet and no cursor: it parks.
        let poll = {
            let hub = hub.clone();
            let id = id.clone();
            tokio::spawn(async move { hub.long_poll(&id, Seq(0), wait, true).await })
        };
        while hub.parked(&id) == 0 {
            tokio::task::yield_now().await;
        }
        hub.offer(&channel, fix(1));
        let outcome = poll.await.unwrap().unwrap();
        assert!(outcome.has_update);
        assert_eq!(outcome.location.unwrap().seq, Seq(1));
        assert_eq!(hub.parked(&id), 0);
        // Behind, or ahead of what is held: at once.
        let outcome = hub.long_poll(&id, Seq(0), wait, true).await.unwrap();
        assert!(outcome.has_update);
        let outcome = hub.long_poll(&id, Seq(9), wait, true).await.unwrap();
        assert!(outcome.has_update);
        // Current, but may not park (a final order): at once, no update.
        let outcome = hub.long_poll(&id, Seq(1), wait, false).await.unwrap();
        assert!(!outcome.has_update);
        assert_eq!(
            hub.long_poll(&"x".parse().unwrap(), Seq(0), wait, true)
                .await
                .unwrap_err(),
            PollError::UnknownOrder
        );
    }

    #[tokio::test(start_paused = true)]
    async fn polls_time_out_release_on_shutdown_and_respect_the_caps() {
        let (hub, shutdown) = hub(Limits {
            per_order: 1,
            global: 2,
        });
        let id: OrderId = "o".parse().unwrap();
        hub.load(&id, None);
        let outcome = hub
            .long_poll(&id, Seq(0), Duration::from_secs(10), true)
            .await
            .unwrap();
        assert!(!outcome.has_update && outcome.location.is_none());

        let park = |id: &str| {
            let hub = hub.clone();
            let id: OrderId = id.parse().unwrap();
            hub.load(&id, None);
            tokio::spawn(async move {
                hub.long_poll(&id, Seq(0), Duration::from_secs(60), true)
                    .await
            })
        };
        let first = park("o");
        let second = park("p");
        while hub.parked(&id) == 0 || hub.parked(&"p".parse().unwrap()) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            hub.long_poll(&id, Seq(0), Duration::from_secs(60), true)
                .await
                .unwrap_err(),
            PollError::PerOrderCap { limit: 1 }
        );
        hub.load(&"q".parse().unwrap(), None);
        assert_eq!(
            hub.long_poll(&"q".parse().unwrap(), Seq(0), Duration::from_secs(60), true)
                .await
                .unwrap_err(),
            PollError::GlobalCap { limit: 2 }
        );
        shutdown.cancel();
        for poll in [first, second] {
            assert!(!poll.await.unwrap().unwrap().has_update);
        }
        let counts = hub.poll_counts();
        assert_eq!(counts.timeouts, 1);
        assert_eq!(counts.released_by_shutdown, 2);
        assert_eq!(counts.rejections, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_orders_are_evicted_unless_watched_or_unsaved() {
        let (hub, _) = hub(Limits::default());
        let saved: OrderId = "saved".parse().unwrap();
        let unsaved: OrderId = "unsaved".parse().unwrap();
        let channel = hub.load(&saved, None);
        let (_, location) = hub.offer(&channel, fix(1));
        hub.mark_saved(&saved, location.seq);
        let channel = hub.load(&unsaved, None);
        hub.offer(&channel, fix(1));
        tokio::time::sleep(Duration::from_secs(601)).await;
        assert_eq!(hub.evict_idle(Duration::from_secs(600)), 1);
        assert!(hub.latest(&saved).is_none());
        assert!(hub.latest(&unsaved).is_some(), "its fix is not written yet");
        hub.mark_saved(&unsaved, Seq(1));
        assert_eq!(hub.evict_idle(Duration::from_secs(600)), 1);
        assert_eq!(hub.cached(), 0);
    }
}
