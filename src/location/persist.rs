//! Saving driver locations, throttled: at most one write per order per
//! interval.
//!
//! Drivers report every second or so; only the latest fix of an order is
//! worth keeping, and only so that a restart can serve it again. So an
//! accepted fix is only marked pending here (in memory, without waiting),
//! and one task writes: an order not written within the last interval is
//! written at once; otherwise its latest pending fix is written when the
//! interval since its last write ends. The last fix of a trip is thus never
//! lost to the throttle, only delayed by it. The writes due together go in
//! one transaction. On shutdown the task writes every pending fix before it
//! ends; a fix accepted after that (a request finishing during the grace
//! period) is written at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use super::hub::LocationHub;
use crate::domain::{Location, OrderId};
use crate::store::OrderStore;

/// Default least time between two writes of one order's location.
pub const DEFAULT_WRITE_INTERVAL: Duration = Duration::from_secs(5);

/// Cheap handle to the pending fixes; clones share one state.
#[derive(Clone)]
pub(super) struct Persister {
    shared: Arc<Shared>,
}

struct Shared {
    /// Fixes accepted and not yet handed to the store, and the orders that
    /// just became pending. A `std` mutex: never held across an `.await`.
    pending: Mutex<Pending>,
    /// Wakes the writer when an order becomes pending.
    wake: Notify,
    /// Set once the writer has stopped (shutdown): fixes accepted after it
    /// are written at once by a task of their own.
    closed: AtomicBool,
    store: Arc<dyn OrderStore>,
    /// Marked saved there once written, so the hub may evict them.
    hub: LocationHub,
    /// Least time between two writes of one order.
    interval: Duration,
}

#[derive(Default)]
struct Pending {
    /// The latest unwritten fix of each order.
    fixes: HashMap<OrderId, Location>,
    /// Orders that became pending since the writer last looked: it has not
    /// scheduled them yet.
    fresh: Vec<OrderId>,
}

impl Persister {
    pub(super) fn new(
        store: Arc<dyn OrderStore>,
        hub: LocationHub,
        interval: Duration,
    ) -> Persister {
        Persister {
            shared: Arc::new(Shared {
                pending: Mutex::new(Pending::default()),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
                store,
                hub,
                interval,
            }),
        }
    }

    /// Marks `location` as the order's fix to save. Does not wait, so a
    /// client hanging up cannot lose it.
    pub(super) fn push(&self, id: &OrderId, location: Location) {
        let fresh = {
            let mut pending = self.shared.lock();
            let fresh = pending.fixes.insert(id.clone(), location).is_none();
            if fresh {
                pending.fresh.push(id.clone());
            }
            fresh
        };
        if fresh {
            self.shared.wake.notify_one();
        }
        // Checked after the insert: a writer that closed before it did not
        // see the fix, so it is written here; one that closed after did.
        if self.shared.closed.load(Ordering::SeqCst) {
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move { shared.flush().await });
        }
    }

    /// Runs the writer until `shutdown`, then writes every pending fix.
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let shared = &self.shared;
        // Orders with a write scheduled, and when each order was last
        // written (kept for an interval: what throttles the next write).
        let mut due: DelayQueue<OrderId> = DelayQueue::new();
        let mut scheduled: HashSet<OrderId> = HashSet::new();
        let mut written: HashMap<OrderId, Instant> = HashMap::new();
        let mut next_prune = Instant::now() + shared.interval;
        loop {
            let ready = tokio::select! {
                () = shutdown.cancelled() => break,
                () = shared.wake.notified() => {
                    let now = Instant::now();
                    let fresh = std::mem::take(&mut shared.lock().fresh);
                    let mut ready = Vec::new();
                    for id in fresh {
                        match written.get(&id) {
                            _ if scheduled.contains(&id) => {}
                            Some(last) if now < *last + shared.interval => {
                                due.insert_at(id.clone(), *last + shared.interval);
                                scheduled.insert(id);
                            }
                            _ => ready.push(id),
                        }
                    }
                    ready
                }
                ready = expired(&mut due) => {
                    for id in &ready {
                        scheduled.remove(id);
                    }
                    ready
                }
            };
            if ready.is_empty() {
                continue;
            }
            let now = Instant::now();
            let failed = shared.write(&ready).await;
            for id in ready {
                written.insert(id, now);
            }
            // A failed write is retried after an interval, not at once: the
            // database is likely away, and hammering it helps nobody.
            for id in failed {
                if scheduled.insert(id.clone()) {
                    due.insert_at(id, now + shared.interval);
                }
            }
            if now >= next_prune {
                written.retain(|_, last| now < *last + shared.interval);
                next_prune = now + shared.interval;
            }
        }
        shared.closed.store(true, Ordering::SeqCst);
        shared.flush().await;
    }
}

/// Every order whose scheduled write is due, once at least one is; pending
/// forever while none is scheduled (the caller's loop schedules more).
async fn expired(due: &mut DelayQueue<OrderId>) -> Vec<OrderId> {
    std::future::poll_fn(|cx| {
        let mut ready = Vec::new();
        while let Poll::Ready(Some(expired)) = due.poll_expired(cx) {
            ready.push(expired.into_inner());
        }
        if ready.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(ready)
        }
    })
    .await
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Each critical section is a map insert or take: a panic in one
        // cannot leave the maps half-changed.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the pending fixes of `ids` in one transaction; returns the
    /// orders whose fix could not be written and is pending again.
    async fn write(&self, ids: &[OrderId]) -> Vec<OrderId> {
        let batch: Vec<(OrderId, Location)> = {
            let mut pending = self.lock();
            ids.iter()
                .filter_map(|id| Some((id.clone(), pending.fixes.remove(id)?)))
                .collect()
        };
        if batch.is_empty() {
            return Vec::new();
        }
        match self.store.save_locations(&batch).await {
            Ok(()) => {
                for (id, location) in &batch {
                    self.hub.mark_saved(id, location.seq);
                }
                Vec::new()
            }
            Err(err) => {
                tracing::warn!(error = %err, orders = batch.len(), "cannot save driver locations; retrying");
                let mut pending = self.lock();
                batch
                    .into_iter()
                    .filter_map(|(id, location)| {
                        // A newer fix arrived meanwhile: it is pending and
                        // scheduled already.
                        if pending.fixes.contains_key(&id) {
                            return None;
                        }
                        pending.fixes.insert(id.clone(), location);
                        Some(id)
                    })
                    .collect()
            }
        }
    }

    /// Writes every pending fix now.
    async fn flush(&self) {
        let ids: Vec<OrderId> = {
            let mut pending = self.lock();
            pending.fresh.clear();
            pending.fixes.keys().cloned().collect()
        };
        if !ids.is_empty() && !self.write(&ids).await.is_empty() {
            tracing::error!(
                orders = ids.len(),
                "driver locations left unsaved at shutdown"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::domain::{Fix, Seq, Timestamp};
    use crate::store::faulty::FaultyStore;
    use crate::tracking::{Hub, Limits};

    fn location(secs: i64, seq: u64) -> Location {
        Location {
            fix: Fix {
                latitude: 1.0,
                longitude: 2.0,
                accuracy: Some(3.0),
                at: Timestamp::new(
                    chrono::DateTime::from_timestamp(1_736_713_800 + secs, 0).unwrap(),
                ),
            },
            seq: Seq(seq),
        }
    }

    fn start(
        store: &Arc<FaultyStore>,
    ) -> (Persister, CancellationToken, tokio::task::JoinHandle<()>) {
        let shutdown = CancellationToken::new();
        let hub = LocationHub::new(Hub::new(Limits::default(), shutdown.clone()));
        let persister = Persister::new(
            Arc::clone(store) as Arc<dyn OrderStore>,
            hub,
            Duration::from_secs(5),
        );
        let task = tokio::spawn(persister.clone().run(shutdown.clone()));
        (persister, shutdown, task)
    }

    async fn stored(store: &FaultyStore, id: &OrderId) -> Option<u64> {
        store.location(id).await.unwrap().map(|l| l.seq.0)
    }

    /// Lets the writer task run what is ready, in paused time.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fixes_within_the_interval_cost_one_write_and_the_last_is_written_after_it() {
        let store = Arc::new(FaultyStore::default());
        let (persister, _shutdown, _task) = start(&store);
        let id: OrderId = "o".parse().unwrap();
        persister.push(&id, location(0, 1));
        settle().await;
        assert_eq!(store.location_writes.load(Ordering::SeqCst), 1);
        assert_eq!(stored(&store, &id).await, Some(1), "the first fix at once");
        for seq in 2..=6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            persister.push(&id, location(seq as i64, seq));
        }
        settle().await;
        assert_eq!(store.location_writes.load(Ordering::SeqCst), 1);
        // The window ends 5 s after the first write.
        tokio::time::sleep(Duration::from_millis(2_600)).await;
        settle().await;
        assert_eq!(store.location_writes.load(Ordering::SeqCst), 2);
        assert_eq!(stored(&store, &id).await, Some(6), "the driver's last fix");
        // Quiet since: nothing more is written.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(store.location_writes.load(Ordering::SeqCst), 2);
        // Long after, a new fix is written at once again.
        persister.push(&id, location(100, 7));
        settle().await;
        assert_eq!(stored(&store, &id).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn orders_due_together_share_a_write_and_a_failed_one_is_retried() {
        let store = Arc::new(FaultyStore::default());
        let (persister, _shutdown, _task) = start(&store);
        let ids: Vec<OrderId> = ["a", "b", "c"].map(|id| id.parse().unwrap()).into();
        store.refuse_locations.store(true, Ordering::SeqCst);
        for id in &ids {
            persister.push(id, location(0, 1));
        }
        settle().await;
        assert_eq!(stored(&store, &ids[0]).await, None);
        store.refuse_locations.store(false, Ordering::SeqCst);
        for id in &ids {
            persister.push(id, location(1, 2));
        }
        tokio::time::sleep(Duration::from_millis(5_100)).await;
        settle().await;
        assert_eq!(
            store.location_writes.load(Ordering::SeqCst),
            1,
            "one transaction"
        );
        for id in &ids {
            assert_eq!(stored(&store, id).await, Some(2));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_writes_what_is_pending_and_later_fixes_at_once() {
        let store = Arc::new(FaultyStore::default());
        let (persister, shutdown, task) = start(&store);
        let id: OrderId = "o".parse().unwrap();
        persister.push(&id, location(0, 1));
        settle().await;
        persister.push(&id, location(1, 2));
        settle().await;
        assert_eq!(stored(&store, &id).await, Some(1));
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(stored(&store, &id).await, Some(2), "flushed on shutdown");
        persister.push(&id, location(2, 3));
        settle().await;
        assert_eq!(
            stored(&store, &id).await,
            Some(3),
            "written at once once closed"
        );
    }
}
