//! The change feed across instances sharing one store (PostgreSQL).
//!
//! Within a process the writer publishes each committed snapshot to the hub.
//! Other instances learn of it from the store's notifications
//! ([`ChangeListener`]): each is a hint `(order, version)`, acted on only
//! for orders this instance holds in its hub (polls parked or a snapshot
//! cached), by reading the committed state from the store and publishing
//! it. Hints are never the truth: a listening connection that breaks loses
//! whatever was sent meanwhile. So after every reconnect, once `LISTEN` is
//! in place again, the feed compares every cached order with the store in
//! one query and publishes whatever moved; and a slow safety sweep does the
//! same all the time, which bounds the staleness a lost hint can cause.
//!
//! The same listener receives the driver locations other instances accept
//! and hands them to whoever registered for them
//! ([`OrderService::on_remote_locations`]: the live-location channel). A
//! location lost with a connection is not caught up: the next fix, seconds
//! later, supersedes it anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::OrderService;
use crate::domain::{OrderId, OrderSnapshot, Version};
use crate::store::{ChangeListener, Hint, LocationNotice, StoreError};

/// Takes the driver locations other instances announce.
type LocationSink = Box<dyn Fn(Vec<LocationNotice>) + Send + Sync>;

/// Default time between safety sweeps.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Wait before the second try to reopen a lost listening connection (the
/// first is at once); it doubles on every failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the feed has done, for readiness and stats.
#[derive(Default)]
pub(super) struct FeedState {
    /// Where other instances' driver locations go, once registered.
    locations: OnceLock<LocationSink>,
    /// A feed runs: the store is shared with other instances.
    running: AtomicBool,
    /// The listening connection is up (and the catch-up after it was tried).
    listening: AtomicBool,
    hints: AtomicU64,
    published: AtomicU64,
    reconnects: AtomicU64,
    sweeps: AtomicU64,
}

/// The feed's figures, as `/system/stats` shows them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedStats {
    /// Whether this instance shares its store with others and follows their
    /// changes (PostgreSQL); `false` for SQLite and memory.
    pub shared_store: bool,
    /// Whether the listening connection is up now.
    pub listening: bool,
    /// Change notifications received.
    pub hints_received: u64,
    /// Newer order versions read from the store and published here, from
    /// notifications, catch-ups and sweeps.
    pub versions_published: u64,
    /// Times the listening connection was reopened after being lost.
    pub reconnects: u64,
    /// Safety sweeps run.
    pub sweeps: u64,
}

impl FeedState {
    pub(super) fn stats(&self) -> FeedStats {
        FeedStats {
            shared_store: self.running.load(Ordering::Relaxed),
            listening: self.listening.load(Ordering::Relaxed),
            hints_received: self.hints.load(Ordering::Relaxed),
            versions_published: self.published.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            sweeps: self.sweeps.load(Ordering::Relaxed),
        }
    }

    /// Makes the service behave as on a shared store without a listener.
    #[cfg(test)]
    pub(super) fn mark_shared(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    /// Whether other instances share the store.
    pub(super) fn shared(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Ready as far as the feed goes: no feed, or its connection is up.
    pub(super) fn ready(&self) -> bool {
        !self.running.load(Ordering::Relaxed) || self.listening.load(Ordering::Relaxed)
    }
}

impl OrderService {
    /// Hands the driver locations other instances announce to `sink`, from
    /// the feed's listener (so register before [`OrderService::start_feed`]).
    /// One sink per service: a second registration is ignored and returns
    /// `false`. `sink` runs on the listener's task and must not block.
    pub fn on_remote_locations(
        &self,
        sink: impl Fn(Vec<LocationNotice>) + Send + Sync + 'static,
    ) -> bool {
        self.inner.feed.locations.set(Box::new(sink)).is_ok()
    }

    /// Starts following other instances' changes, if the store is shared:
    /// a listener task and a sweep every `sweep`, both until `shutdown`.
    /// Fails if the store cannot be listened to now.
    pub async fn start_feed(
        &self,
        sweep: Duration,
        shutdown: CancellationToken,
    ) -> Result<(), StoreError> {
        let Some(listener) = self.inner.store.listen().await? else {
            return Ok(());
        };
        let feed = &self.inner.feed;
        feed.running.store(true, Ordering::Relaxed);
        feed.listening.store(true, Ordering::Relaxed);
        tracing::info!(instance_id = %self.instance_id(), sweep_secs = sweep.as_secs_f64(), "following changes of other instances");
        tokio::spawn(listen(self.clone(), listener, shutdown.clone()));
        tokio::spawn(sweep_every(self.clone(), sweep, shutdown));
        Ok(())
    }

    /// Compares every order the hub holds with the store and publishes
    /// those that moved; returns how many did.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let published = self.refresh(self.inner.hub.versions()).await;
        // Store feeds read their changes from the table themselves: a ring
        // makes them read again whatever this instance may have missed.
        self.inner.hub.ring_all_stores();
        published
    }

    /// Reads the orders of `known` that the store holds at a newer version
    /// and publishes them; returns how many there were.
    async fn refresh(&self, known: Vec<(OrderId, Version)>) -> Result<usize, StoreError> {
        if known.is_empty() {
            return Ok(0);
        }
        let newer = self.inner.store.newer(&known).await?;
        let published = newer
            .into_iter()
            .map(|order| Arc::new(OrderSnapshot::new(order)))
            .filter(|snapshot| self.inner.hub.publish(Arc::clone(snapshot)))
            .count();
        self.inner
            .feed
            .published
            .fetch_add(published as u64, Ordering::Relaxed);
        Ok(published)
    }

    /// Acts on hints: reads and publishes the orders the hub holds at an
    /// older version than announced. Others cost one map lookup.
    async fn wake(&self, hints: Vec<Hint>) {
        self.inner
            .feed
            .hints
            .fetch_add(hints.len() as u64, Ordering::Relaxed);
        let mut behind: HashMap<OrderId, Version> = HashMap::new();
        for hint in hints {
            // A store feed reads the table itself: the ring is all it needs.
            if let Some(store) = &hint.store_id {
                self.inner.hub.ring(store);
            }
            let Some(held) = self.inner.hub.latest(&hint.order_id) else {
                continue;
            };
            if hint.version > held.version() {
                behind.insert(hint.order_id, held.version());
            }
        }
        if let Err(err) = self.refresh(behind.into_iter().collect()).await {
            // The sweep reads them again.
            tracing::warn!(error = %err, "cannot read orders other instances changed");
        }
    }
}

/// Receives hints until `shutdown`; reopens a lost connection with backoff,
/// then catches up on what it may have missed.
async fn listen(
    service: OrderService,
    mut listener: Box<dyn ChangeListener>,
    shutdown: CancellationToken,
) {
    let feed = &service.inner.feed;
    loop {
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = listener.next() => next,
            };
            match next {
                Ok(notices) => {
                    if !notices.locations.is_empty() {
                        if let Some(sink) = feed.locations.get() {
                            sink(notices.locations);
                        }
                    }
                    if !notices.hints.is_empty() {
                        service.wake(notices.hints).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(instance_id = %service.instance_id(), error = %err, "change listener lost its connection; reopening it");
                    break;
                }
            }
        }
        feed.listening.store(false, Ordering::Relaxed);
        drop(listener);
        // At once the first time: a terminated connection is usually back
        // in a few milliseconds, and every one of them is delay for wakes.
        let mut backoff = Duration::ZERO;
        listener = loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            match service.inner.store.listen().await {
                Ok(Some(listener)) => break listener,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "cannot reopen the change listener");
                    backoff = (backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                }
            }
        };
        feed.reconnects.fetch_add(1, Ordering::Relaxed);
        // LISTEN is in place again, so whatever commits from now on is
        // announced; what committed while it was down is read now.
        match service.catch_up().await {
            Ok(published) => {
                tracing::info!(instance_id = %service.instance_id(), published, "change listener reopened; caught up")
            }
            Err(err) => {
                tracing::warn!(error = %err, "change listener reopened, but catching up failed; the sweep will")
            }
        }
        feed.listening.store(true, Ordering::Relaxed);
    }
}

/// Catches up every `every` until `shutdown`: the safety net for hints that
/// were lost without the connection being seen to break.
async fn sweep_every(service: OrderService, every: Duration, shutdown: CancellationToken) {
    let mut ticks = crate::ticks::Ticks::new(every, shutdown);
    while ticks.next().await {
        service.inner.feed.sweeps.fetch_add(1, Ordering::Relaxed);
        match service.catch_up().await {
            Ok(0) => {}
            Ok(published) => {
                tracing::info!(
                    published,
                    "safety sweep found changes the notifications missed"
                )
            }
            Err(err) => tracing::warn!(error = %err, "safety sweep cannot read the store"),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::domain::{Attribution, NewOrder, NewOrderInput, OrderChange, OrderStatus};
    use crate::store::{MemoryStore, OrderStore};

    pub(in crate::orders) fn draft(id: &str) -> NewOrder {
        let input: NewOrderInput = serde_json::from_value(serde_json::json!({
            "id": id,
            "customer_id": "c1",
            "restaurant_name": "Luigi's",
            "delivery_address": "1 Main St",
            "items": [{"name": "Pizza", "quantity": 1, "unit_price": 9.5}]
        }))
        .unwrap();
        NewOrder::parse(input).unwrap()
    }

    /// Two services on one store, each with its own hub: two instances.
    pub(in crate::orders) fn two_instances() -> (OrderService, OrderService) {
        let store: Arc<dyn OrderStore> = Arc::new(MemoryStore::new());
        let shutdown = CancellationToken::new();
        let a = OrderService::instance_for_tests(Arc::clone(&store), &shutdown, "node-a");
        let b = OrderService::instance_for_tests(store, &shutdown, "node-b");
        a.inner.feed.mark_shared();
        b.inner.feed.mark_shared();
        (a, b)
    }

    async fn set(service: &OrderService, id: &OrderId, status: OrderStatus) {
        service
            .apply(id, OrderChange::SetStatus(status), Attribution::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_hint_refreshes_an_order_held_here_and_nothing_else() {
        let (a, b) = two_instances();
        let held: OrderId = "held".parse().unwrap();
        let other: OrderId = "other".parse().unwrap();
        a.create(draft("held")).await.unwrap();
        a.create(draft("other")).await.unwrap();
        b.get(&held).await.unwrap();
        assert!(b.hub().latest(&other).is_none());
        set(&a, &held, OrderStatus::Preparing).await;
        set(&a, &other, OrderStatus::Preparing).await;
        assert_eq!(b.hub().latest(&held).unwrap().version(), Version(1));

        b.wake(vec![
            Hint {
                order_id: held.clone(),
                version: Version(2),
                store_id: None,
            },
            Hint {
                order_id: other.clone(),
                version: Version(2),
                store_id: None,
            },
        ])
        .await;
        assert_eq!(b.hub().latest(&held).unwrap().version(), Version(2));
        // Nobody watches it here: the hint costs a lookup, and caches nothing.
        assert!(b.hub().latest(&other).is_none());
        assert_eq!(b.feed_stats().hints_received, 2);
        assert_eq!(b.feed_stats().versions_published, 1);
    }

    #[tokio::test]
    async fn catching_up_publishes_every_held_order_that_moved() {
        let (a, b) = two_instances();
        let ids: Vec<OrderId> = ["o1", "o2", "o3"].map(|id| id.parse().unwrap()).into();
        for id in &ids {
            a.create(draft(id.as_str())).await.unwrap();
            b.get(id).await.unwrap();
        }
        set(&a, &ids[0], OrderStatus::Preparing).await;
        set(&a, &ids[0], OrderStatus::Ready).await;
        set(&a, &ids[2], OrderStatus::Preparing).await;
        assert_eq!(b.catch_up().await.unwrap(), 2);
        let versions: Vec<u64> = ids
            .iter()
            .map(|id| b.hub().latest(id).unwrap().version().0)
            .collect();
        assert_eq!(versions, [3, 1, 2]);
        // Nothing moved since: nothing to publish.
        assert_eq!(b.catch_up().await.unwrap(), 0);
    }
}
