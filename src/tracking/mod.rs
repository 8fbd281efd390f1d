//! The hub: the one notification path.
//!
//! Each order has one `tokio::sync::watch` channel holding its latest
//! [`OrderSnapshot`]. The write path publishes a new snapshot; every parked
//! long poll of that order wakes at once. The hub also owns the long-poll wait
//! itself, the per-order and global caps on parked polls (RAII slots), and the
//! live counters behind `/system/stats`.
//!
//! The hub is a bounded cache: it holds the orders someone is watching or
//! that changed recently. [`Hub::evict_idle`] drops the others; the service
//! reloads an evicted order from the store on its next read.
//!
//! The hub never touches storage, so a parked poll never awaits anything but
//! its channel, its timer and the shutdown signal. A cursor ahead of the
//! cached state is handed back to the service ([`PollError::CursorAhead`]),
//! which asks the store.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::{poll, Cursor, OrderId, OrderSnapshot, Standing, Version};

mod slot;
mod stats;
mod stores;

use slot::ParkSlot;
pub(crate) use stats::Counters;
use stats::Ending;
pub use stats::{HubStats, OrderPollers, PollCounts};
pub use stores::StoreWait;

/// Default cap on polls parked on one order at once.
pub const DEFAULT_MAX_POLLERS_PER_ORDER: usize = 10;
/// Default cap on polls parked across all orders. It stays below this
/// machine class's 20,000 open files per process, so the cap answers 503
/// before `accept` starts failing.
pub const DEFAULT_MAX_PARKED_POLLS: usize = 16_384;
/// Default time an order stays cached with nobody watching and no change.
pub const DEFAULT_IDLE_EVICTION: Duration = Duration::from_secs(600);

/// How many parked polls the hub admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Parked polls per order; the next one is rejected with 429.
    pub per_order: usize,
    /// Parked polls in total; the next one is rejected with 503.
    pub global: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_order: DEFAULT_MAX_POLLERS_PER_ORDER,
            global: DEFAULT_MAX_PARKED_POLLS,
        }
    }
}

/// Cheap handle to the hub; clones share one state.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    /// One channel per cached order. An entry is removed only while it has
    /// no receivers, under the map's shard lock, and receivers subscribe
    /// under the same lock, so no poll can wait on a removed channel.
    channels: DashMap<OrderId, Arc<Channel>>,
    /// Origin of the channels' `touched` times.
    epoch: Instant,
    /// Caps on parked polls.
    limits: Limits,
    /// Polls parked right now, across all orders.
    parked: AtomicUsize,
    /// Counts parked polls, to seed each one's timeout jitter.
    parks: AtomicU64,
    /// What happened to the polls served so far.
    counters: Counters,
    /// Cancelled on shutdown: every parked poll answers at once.
    shutdown: CancellationToken,
    /// The bells store feeds wait on.
    bells: stores::Bells,
}

/// The notification channel of one order.
struct Channel {
    /// Latest snapshot; its receivers are the parked polls.
    tx: watch::Sender<Arc<OrderSnapshot>>,
    /// Polls parked on this order right now, for the per-order cap.
    parked: AtomicUsize,
    /// When the order last changed or was loaded, in milliseconds since the
    /// hub's epoch: idle orders are evicted.
    touched: AtomicU64,
}

/// How a long poll ended.
#[derive(Debug, Clone)]
pub struct PollOutcome {
    /// The order as the client should now see it.
    pub snapshot: Arc<OrderSnapshot>,
    /// Whether `snapshot` is a state the client's cursor did not have.
    pub has_update: bool,
}

/// A poll parked under the hub's caps ([`Hub::park`]), until answered.
pub(crate) struct Parked<'a> {
    /// Its place under the caps, given back when this is dropped.
    slot: ParkSlot<'a>,
    /// What ended the wait.
    ending: Ending,
}

impl Parked<'_> {
    /// Counts how the poll ended, with whether its answer is a state the
    /// client lacked, and gives its place back.
    pub(crate) fn finish(self, has_update: bool) {
        self.slot.finish(self.ending, has_update);
    }
}

/// Why a long poll was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// No channel for this id; the caller may load the order and retry.
    #[error("order is not known to the hub")]
    UnknownOrder,
    /// The cursor names a newer state than the hub holds; the caller checks
    /// the store, then polls again with `ahead_resolved`.
    #[error("the cursor is ahead of the cached order")]
    CursorAhead,
    #[error("this order already has {limit} parked polls, the most allowed")]
    PerOrderCap { limit: usize },
    #[error("the server already holds {limit} parked polls, the most allowed")]
    GlobalCap { limit: usize },
}

impl Hub {
    pub fn new(limits: Limits, shutdown: CancellationToken) -> Hub {
        Hub {
            shared: Arc::new(Shared {
                channels: DashMap::new(),
                epoch: Instant::now(),
                limits,
                parked: AtomicUsize::new(0),
                parks: AtomicU64::new(0),
                counters: Counters::default(),
                shutdown,
                bells: stores::Bells::default(),
            }),
        }
    }

    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Makes `snapshot` the order's latest state and wakes its parked polls.
    ///
    /// Versions only move forward: a snapshot older than the one held is
    /// ignored, so two writers finishing out of order cannot roll readers
    /// back. Returns whether the snapshot was taken.
    pub fn publish(&self, snapshot: Arc<OrderSnapshot>) -> bool {
        let id = &snapshot.order().id;
        let now = self.shared.millis();
        // A store order's change (or its first load) is news to its
        // store's feed; the snapshot is kept for that only for store orders.
        let store_order = snapshot
            .order()
            .store_id()
            .is_some()
            .then(|| Arc::clone(&snapshot));
        let mut created = false;
        let channel = match self.shared.channels.get(id) {
            Some(channel) => Arc::clone(&channel),
            None => {
                let entry = self.shared.channels.entry(id.clone());
                let channel = entry.or_insert_with(|| {
                    created = true;
                    Arc::new(Channel::new(Arc::clone(&snapshot), now))
                });
                Arc::clone(&channel)
            }
        };
        channel.touched.fetch_max(now, Ordering::Relaxed);
        let taken = channel.tx.send_if_modified(|current| {
            if snapshot.version() > current.version() {
                *current = snapshot;
                true
            } else {
                false
            }
        });
        if taken {
            self.shared
                .counters
                .published
                .fetch_add(1, Ordering::Relaxed);
        }
        if taken || created {
            if let Some(store) = store_order.as_ref().and_then(|s| s.order().store_id()) {
                self.ring(store);
            }
        }
        taken
    }

    /// The order's latest snapshot, if the hub knows the order.
    pub fn latest(&self, id: &OrderId) -> Option<Arc<OrderSnapshot>> {
        self.shared
            .channels
            .get(id)
            .map(|channel| Arc::clone(&channel.tx.borrow()))
    }

    /// A receiver of the order's snapshots, if the hub knows the order. For
    /// the service's in-process readers; HTTP polls use [`Hub::long_poll`],
    /// which counts and caps them.
    pub fn subscribe(&self, id: &OrderId) -> Option<watch::Receiver<Arc<OrderSnapshot>>> {
        self.shared
            .channels
            .get(id)
            .map(|channel| channel.tx.subscribe())
    }

    /// Answers a long poll.
    ///
    /// A cursor ahead of the cached state fails with
    /// [`PollError::CursorAhead`] unless `ahead_resolved` says the store was
    /// asked since; then it is answered at once with the state held.
    ///
    /// Answers at once when the client has no cursor or is behind, when the
    /// order is final, when `timeout` is zero (then `has_update` says whether
    /// the cursor was behind), or during shutdown. Otherwise it
    /// takes a parking slot and waits for a change, the timeout (shortened by
    /// a small jitter, [`poll::jittered`], so polls parked together do not
    /// all expire together) or shutdown, whichever comes first. It subscribes
    /// before reading the current state,
    /// so a change that lands in between still wakes it.
    pub async fn long_poll(
        &self,
        id: &OrderId,
        cursor: Option<Cursor>,
        timeout: Duration,
        ahead_resolved: bool,
    ) -> Result<PollOutcome, PollError> {
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
        let current = Arc::clone(&rx.borrow_and_update());
        let order = current.order();
        let can_park = !(order.status.is_terminal()
            || timeout.is_zero()
            || self.shared.shutdown.is_cancelled());
        let cursor = match cursor {
            // "The next change" needs a wait to mean anything; without one the
            // client simply gets the state it lacks.
            Some(Cursor::NextChange) if !can_park => None,
            Some(cursor) => Some(cursor.pin(order)),
            None => None,
        };
        let standing = cursor
            .as_ref()
            .map_or(Standing::Behind, |cursor| cursor.standing(order));
        if standing == Standing::Ahead && !ahead_resolved {
            return Err(PollError::CursorAhead);
        }
        let behind = standing != Standing::Current;
        if behind || !can_park {
            self.shared.counters.record(Ending::Immediate, behind);
            return Ok(PollOutcome {
                snapshot: current,
                has_update: behind,
            });
        }
        drop(current);

        let parked = self
            .park(&channel.parked, &self.shared.counters, &mut rx, timeout)
            .await?;
        // Whatever woke us, answer with the newest state: a change that raced
        // the timer is still an update.
        let snapshot = Arc::clone(&rx.borrow_and_update());
        let has_update = cursor
            .as_ref()
            .is_none_or(|cursor| cursor.lacks(snapshot.order()));
        parked.finish(has_update);
        Ok(PollOutcome {
            snapshot,
            has_update,
        })
    }

    /// Parks a poll until `rx` sees a change, `timeout` passes (shortened by
    /// a small jitter, [`poll::jittered`], so polls parked together do not
    /// all expire together) or the server shuts down, whichever comes first.
    ///
    /// The wait takes a slot under the caps: `topic` counts the polls parked
    /// on the same topic against the per-order cap, and every kind of poll
    /// shares the global cap. `counters` is where this kind of poll is
    /// counted. The caller subscribed `rx` and compared its cursor before,
    /// so no change can fall between; it answers with
    /// [`Parked::finish`], and a caller dropped meanwhile (the client went
    /// away) gives the slot back at once.
    pub(crate) async fn park<'a, T>(
        &'a self,
        topic: &'a AtomicUsize,
        counters: &'a Counters,
        rx: &mut watch::Receiver<T>,
        timeout: Duration,
    ) -> Result<Parked<'a>, PollError> {
        let slot = ParkSlot::acquire(self.shared.limits, &self.shared.parked, topic, counters)?;
        let seed = self.shared.parks.fetch_add(1, Ordering::Relaxed);
        let wait = poll::jittered(timeout, seed);
        let ending = tokio::select! {
            changed = rx.changed() => match changed {
                Ok(()) => Ending::Woken,
                // Senders live as long as their hub; losing one means it is
                // going away, which is a shutdown for this poll.
                Err(_) => Ending::Shutdown,
            },
            () = tokio::time::sleep(wait) => Ending::TimedOut,
            () = self.shared.shutdown.cancelled() => Ending::Shutdown,
        };
        Ok(Parked { slot, ending })
    }

    /// Drops every order that nobody watches (no parked poll, no in-process
    /// subscriber) and that has not changed or been loaded for `idle`.
    /// Returns how many were dropped.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let cutoff = self
            .shared
            .millis()
            .saturating_sub(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX));
        let before = self.shared.channels.len();
        self.shared.channels.retain(|_, channel| {
            channel.tx.receiver_count() > 0 || channel.touched.load(Ordering::Relaxed) > cutoff
        });
        let evicted = before.saturating_sub(self.shared.channels.len());
        if evicted > 0 && self.shared.channels.len() < self.shared.channels.capacity() / 4 {
            // Give back the table's memory after a large eviction.
            self.shared.channels.shrink_to_fit();
        }
        evicted
    }

    /// Every order the hub holds, with the version it holds: what the
    /// change feed compares with the store to catch up.
    pub fn versions(&self) -> Vec<(OrderId, Version)> {
        self.shared
            .channels
            .iter()
            .map(|entry| (entry.key().clone(), entry.tx.borrow().version()))
            .collect()
    }

    /// Whether the server is shutting down.
    pub fn stopping(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// How many orders the hub holds now.
    pub fn cached(&self) -> usize {
        self.shared.channels.len()
    }

    /// Live figures: parked polls (total and the busiest `top` orders), caps
    /// and what happened to the polls served so far.
    pub fn stats(&self, top: usize) -> HubStats {
        let mut busiest: Vec<OrderPollers> = self
            .shared
            .channels
            .iter()
            .filter_map(|entry| {
                let parked = entry.parked.load(Ordering::Relaxed);
                (parked > 0).then(|| OrderPollers {
                    order_id: entry.key().clone(),
                    parked,
                })
            })
            .collect();
        busiest.sort_by(|a, b| {
            b.parked
                .cmp(&a.parked)
                .then_with(|| a.order_id.cmp(&b.order_id))
        });
        busiest.truncate(top);
        HubStats {
            parked_now: self.shared.parked.load(Ordering::Relaxed),
            busiest_orders: busiest,
            max_pollers_per_order: self.shared.limits.per_order,
            max_parked_polls: self.shared.limits.global,
            polls: self.shared.counters.snapshot(),
            status_updates_published: self.shared.counters.published.load(Ordering::Relaxed),
            orders_cached: self.shared.channels.len(),
        }
    }
}

impl Shared {
    /// Milliseconds since the hub's epoch.
    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Channel {
    fn new(snapshot: Arc<OrderSnapshot>, now: u64) -> Channel {
        Channel {
            tx: watch::Sender::new(snapshot),
            parked: AtomicUsize::new(0),
            touched: AtomicU64::new(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewOrder, Order, OrderChange, OrderStatus, Version};

    fn order(id: &str) -> Order {
        let input = serde_json::json!({
            "customer_id": "c1",
            "restaurant_name": "Luigi's",
            "delivery_address": "1 Main St",
            "items": [{"name": "Pizza", "quantity": 1, "unit_price": 9.5}]
        });
        let draft = NewOrder::parse(serde_json::from_value(input).unwrap()).unwrap();
        Order::create(
            id.parse().unwrap(),
            draft,
            "2025-01-12T20:30:00Z".parse().unwrap(),
        )
    }

    fn next(order: &Order) -> Order {
        order
            .apply(
                &OrderChange::SetStatus(OrderStatus::Preparing),
                order.updated_at,
            )
            .unwrap()
            .unwrap()
    }

    fn hub() -> Hub {
        Hub::new(Limits::default(), CancellationToken::new())
    }

    #[tokio::test(start_paused = true)]
    async fn idle_orders_are_evicted_and_watched_or_recent_ones_kept() {
        let hub = hub();
        for id in ["idle", "watched", "recent"] {
            hub.publish(Arc::new(OrderSnapshot::new(order(id))));
        }
        let watched: OrderId = "watched".parse().unwrap();
        let poll = {
            let hub = hub.clone();
            let id = watched.clone();
            tokio::spawn(async move {
                hub.long_poll(
                    &id,
                    Some(Cursor::Version(Version(1))),
                    Duration::from_secs(3600),
                    false,
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_secs(9 * 60)).await;
        hub.publish(Arc::new(OrderSnapshot::new(next(&order("recent")))));
        tokio::time::sleep(Duration::from_secs(2 * 60)).await;

        assert_eq!(hub.evict_idle(Duration::from_secs(600)), 1);
        assert!(hub.latest(&"idle".parse().unwrap()).is_none());
        assert!(
            hub.latest(&watched).is_some(),
            "a parked poll keeps its order"
        );
        assert!(hub.latest(&"recent".parse().unwrap()).is_some());
        assert_eq!(hub.cached(), 2);

        // The parked poll still wakes on its order's next change.
        hub.publish(Arc::new(OrderSnapshot::new(next(&order("watched")))));
        let outcome = poll.await.unwrap().unwrap();
        assert!(outcome.has_update);
        assert_eq!(outcome.snapshot.version(), Version(2));
        // Once nobody watches and time passes, it goes too.
        tokio::time::sleep(Duration::from_secs(601)).await;
        assert_eq!(hub.evict_idle(Duration::from_secs(600)), 2);
        assert_eq!(hub.cached(), 0);
    }

    #[tokio::test]
    async fn a_cursor_ahead_is_handed_back_unless_resolved() {
        let hub = hub();
        let id: OrderId = "o".parse().unwrap();
        hub.publish(Arc::new(OrderSnapshot::new(order("o"))));
        let ahead = Some(Cursor::Version(Version(5)));
        let wait = Duration::from_secs(30);
        assert_eq!(
            hub.long_poll(&id, ahead.clone(), wait, false)
                .await
                .unwrap_err(),
            PollError::CursorAhead
        );
        // Resolved (the store was asked and has nothing newer): answered at
        // once with what is held, as a state the client does not have.
        let outcome = hub.long_poll(&id, ahead, wait, true).await.unwrap();
        assert!(outcome.has_update);
        assert_eq!(outcome.snapshot.version(), Version(1));
        // Behind: at once, whatever the flag.
        let outcome = hub
            .long_poll(&id, Some(Cursor::Version(Version(0))), wait, false)
            .await
            .unwrap();
        assert!(outcome.has_update);
    }

    #[tokio::test]
    async fn versions_only_move_forward() {
        let hub = hub();
        let v1 = Arc::new(OrderSnapshot::new(order("o")));
        let v2 = Arc::new(OrderSnapshot::new(next(v1.order())));
        hub.publish(Arc::clone(&v1));
        assert!(hub.publish(Arc::clone(&v2)));
        assert!(!hub.publish(v1), "an older version is ignored");
        assert_eq!(
            hub.latest(&"o".parse().unwrap()).unwrap().version(),
            Version(2)
        );
    }
}
