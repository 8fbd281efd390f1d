//! Live driver location: the second channel of an order, apart from its
//! status.
//!
//! A driver reports fixes ([`LocationService::report`]) while an order has
//! a driver and is not final. A fix is not an order change: it bumps no
//! version, records no event and wakes no `/track` poll. It goes to its own
//! hub ([`LocationHub`]: per order, a `watch` of the latest fix and a
//! sequence number from 1), which wakes the live-location polls
//! ([`LocationService::poll`]).
//!
//! Beside the hub:
//! - `persist`: the latest fix of each order is saved at most once per
//!   order per interval, the last one always, and everything pending on
//!   shutdown; after a restart the saved fix is served and its sequence
//!   continues.
//! - Across instances on one PostgreSQL database each accepted fix is
//!   announced with `pg_notify` (outside any transaction, nothing written),
//!   and the order feed's listener hands other instances' fixes to
//!   [`LocationHub::merge`]. SQLite and memory stores have one instance,
//!   and announce nothing.
//!
//! This module decides nothing about orders: whether an order takes a fix
//! is the domain's rule ([`accepts_location`]), read from the order
//! service. It never writes an order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::location::{accepts_location, BadFix, NotLocatable};
use crate::domain::{Fix, Location, OrderId, PollTimeout, Seq};
use crate::orders::{OrderService, ServiceError};
use crate::store::{OrderStore, StoreError};
use crate::tracking::PollError;

mod hub;
mod persist;

pub use hub::{LocationHub, LocationOutcome, LocationStats};
pub use persist::DEFAULT_WRITE_INTERVAL;

use persist::Persister;

/// Most accepted fixes announced to other instances in one statement.
const MAX_ANNOUNCE_BATCH: usize = 256;

/// What can go wrong with a driver's location.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// Reading the order failed, or it does not exist.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The order takes no location now.
    #[error(transparent)]
    NotLocatable(#[from] NotLocatable),
    #[error(transparent)]
    Invalid(#[from] BadFix),
    /// A cap turned the poll away.
    #[error(transparent)]
    Poll(PollError),
    #[error("storage failed")]
    Store(#[from] StoreError),
}

pub type Result<T, E = LocationError> = std::result::Result<T, E>;

/// What [`LocationService::report`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reported {
    /// Whether the fix became the latest (false: the one held is as new).
    pub applied: bool,
    /// The latest location after the report.
    pub location: Location,
}

/// Cheap handle to the live-location service; clones share one state.
#[derive(Clone)]
pub struct LocationService {
    inner: Arc<Inner>,
}

struct Inner {
    /// Whether an order exists and takes a fix.
    orders: OrderService,
    /// Where saved fixes are read.
    store: Arc<dyn OrderStore>,
    /// The latest fix of each watched order, and the parked polls.
    hub: LocationHub,
    /// Saves accepted fixes, throttled.
    persister: Persister,
    /// Accepted fixes to announce to other instances.
    announce: mpsc::UnboundedSender<(OrderId, Location)>,
}

impl LocationService {
    /// Builds the service, registers it for other instances' fixes with
    /// `orders`' feed (so call it before `start_feed`), and starts its
    /// tasks on `tracker` until `shutdown`: the throttled writer (which
    /// writes what is pending before it ends), the announcer and the
    /// eviction of orders idle for `idle`.
    pub fn start(
        orders: OrderService,
        store: Arc<dyn OrderStore>,
        write_interval: Duration,
        idle: Duration,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> LocationService {
        let hub = LocationHub::new(orders.hub().clone());
        let persister = Persister::new(Arc::clone(&store), hub.clone(), write_interval);
        tracker.spawn(persister.clone().run(shutdown.clone()));
        let (announce, queue) = mpsc::unbounded_channel();
        tracker.spawn(announce_all(Arc::clone(&store), queue, shutdown.clone()));
        tracker.spawn(evict_every(hub.clone(), idle, shutdown));
        let remote = hub.clone();
        orders.on_remote_locations(move |notices| {
            for notice in notices {
                remote.merge(&notice.order_id, notice.location);
            }
        });
        LocationService {
            inner: Arc::new(Inner {
                orders,
                store,
                hub,
                persister,
                announce,
            }),
        }
    }

    pub fn hub(&self) -> &LocationHub {
        &self.inner.hub
    }

    /// The order's latest fix, for its tracking document: the one held
    /// here, else the one saved.
    pub async fn latest(&self, id: &OrderId) -> Result<Option<Location>> {
        if let Some(location) = self.inner.hub.latest(id) {
            return Ok(Some(location));
        }
        Ok(self.inner.store.location(id).await?)
    }

    /// Takes a driver's fix for order `id`: the order must exist
    /// ([`ServiceError::NotFound`]), have a driver and not be final
    /// ([`LocationError::NotLocatable`]). A fix not newer than the one held
    /// is ignored (`applied: false`). A taken fix wakes the order's
    /// live-location polls here and on other instances, and is saved
    /// within the write interval.
    #[tracing::instrument(skip_all, fields(order_id = %id))]
    pub async fn report(&self, id: &OrderId, fix: Fix) -> Result<Reported> {
        // The cached copy: the change feed keeps it within milliseconds of
        // the table, and a fix a moment after the order became final is
        // harmless; reading the table on every fix is not (it was the
        // limit at 4,000 fixes/s on PostgreSQL, BENCHMARKS.md).
        let order = self.inner.orders.peek(id).await?;
        accepts_location(order.order())?;
        let channel = match self.inner.hub.channel(id) {
            Some(channel) => channel,
            None => {
                let saved = self.inner.store.location(id).await?;
                self.inner.hub.load(id, saved)
            }
        };
        // From here on nothing awaits: a client hanging up cannot leave a
        // taken fix unsaved or unannounced.
        let (applied, location) = self.inner.hub.offer(&channel, fix);
        if applied {
            self.inner.persister.push(id, location);
            if self.inner.orders.shares_store() {
                // Fails only once the announcer stopped (shutdown).
                let _ = self.inner.announce.send((id.clone(), location));
            }
        }
        Ok(Reported { applied, location })
    }

    /// Serves one live-location poll of order `id`: at once if its latest
    /// seq differs from `after` (or `after` is absent and it has a fix),
    /// otherwise parked until a newer fix, the timeout or shutdown. A final
    /// order is answered at once: no fix will come.
    pub async fn poll(
        &self,
        id: &OrderId,
        after: Option<Seq>,
        timeout: PollTimeout,
    ) -> Result<LocationOutcome> {
        // Existence and finality are all a poll needs, and both hold once true.
        let order = self.inner.orders.peek(id).await?;
        let may_park = !order.order().status.is_terminal();
        let after = after.unwrap_or_default();
        let poll = || {
            self.inner
                .hub
                .long_poll(id, after, timeout.duration(), may_park)
        };
        let outcome = match poll().await {
            Err(PollError::UnknownOrder) => {
                let saved = self.inner.store.location(id).await?;
                self.inner.hub.load(id, saved);
                poll().await
            }
            other => other,
        };
        outcome.map_err(|err| match err {
            // Evicted again between the load and the poll: not expected
            // with eviction after minutes of idleness.
            PollError::UnknownOrder => ServiceError::NotFound(id.clone()).into(),
            other => LocationError::Poll(other),
        })
    }
}

/// Announces accepted fixes to other instances until `shutdown`, as many
/// per statement as are waiting.
async fn announce_all(
    store: Arc<dyn OrderStore>,
    mut queue: mpsc::UnboundedReceiver<(OrderId, Location)>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_ANNOUNCE_BATCH);
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            received = queue.recv_many(&mut batch, MAX_ANNOUNCE_BATCH) => received,
        };
        if received == 0 {
            return;
        }
        if let Err(err) = store.announce_locations(&batch).await {
            // Other instances' pollers learn of the driver's next fix.
            tracing::warn!(error = %err, fixes = batch.len(), "cannot announce driver locations");
        }
        batch.clear();
    }
}

/// Drops idle orders' locations from the hub until `shutdown`, as the app
/// does for the order hub.
async fn evict_every(hub: LocationHub, idle: Duration, shutdown: CancellationToken) {
    let mut ticks = crate::ticks::Ticks::new((idle / 4).min(Duration::from_secs(60)), shutdown);
    while ticks.next().await {
        let evicted = hub.evict_idle(idle);
        if evicted > 0 {
            tracing::debug!(
                evicted,
                cached = hub.cached(),
                "idle driver locations evicted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fulfillment::{Assignment, DriverDetails};
    use crate::domain::{
        Actor, Attribution, Cursor, Fulfill, NewOrder, OrderChange, OrderStatus, Timestamp, Version,
    };
    use crate::store::faulty::FaultyStore;

    /// Polls parked here answer at once; these bound how long a test waits.
    const PROMPTLY: Duration = Duration::from_secs(5);

    struct Fixture {
        orders: OrderService,
        locations: LocationService,
        store: Arc<FaultyStore>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    }

    fn fixture() -> Fixture {
        let store = Arc::new(FaultyStore::default());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let orders = OrderService::for_tests(Arc::clone(&store) as Arc<dyn OrderStore>, &shutdown);
        let locations = LocationService::start(
            orders.clone(),
            Arc::clone(&store) as Arc<dyn OrderStore>,
            Duration::from_secs(5),
            Duration::from_secs(600),
            &tracker,
            shutdown.clone(),
        );
        Fixture {
            orders,
            locations,
            store,
            shutdown,
            tracker,
        }
    }

    async fn create(orders: &OrderService, id: &str) -> OrderId {
        let input = serde_json::json!({
            "id": id,
            "customer_id": "c1",
            "restaurant_name": "Luigi's",
            "delivery_address": "1 Main St",
            "items": [{"name": "Pizza", "quantity": 1, "unit_price": 9.5}]
        });
        let draft = NewOrder::parse(serde_json::from_value(input).unwrap()).unwrap();
        orders.create(draft).await.unwrap().order().id.clone()
    }

    async fn assign_driver(orders: &OrderService, id: &OrderId) -> Version {
        let change = OrderChange::Fulfill {
            command: Fulfill::AssignDriver(Box::new(Assignment {
                driver: DriverDetails {
                    driver_id: "drv-1".into(),
                    name: "Sam".into(),
                    phone: "+1-555-0100".into(),
                    vehicle_type: "car".into(),
                    vehicle_number: None,
                    photo_url: None,
                },
                delivery_tracking_id: None,
                delivery_tracking_url: None,
                estimated_delivery_time: None,
            })),
            actor: Actor::Operator,
            at_store: None,
        };
        let applied = orders
            .apply(id, change, Attribution::default())
            .await
            .unwrap();
        applied.snapshot.version()
    }

    fn fix(orders: &OrderService, ago_secs: i64) -> Fix {
        let now = orders.now();
        let at = now.plus(chrono::TimeDelta::seconds(-ago_secs));
        Fix::parse(40.7, -74.0, Some(5.0), at, now).unwrap()
    }

    fn timeout(secs: u64) -> PollTimeout {
        PollTimeout { applied_secs: secs }
    }

    #[tokio::test]
    async fn a_fix_wakes_live_location_polls_but_not_track_and_keeps_the_version() {
        let f = fixture();
        let id = create(&f.orders, "o1").await;
        let version = assign_driver(&f.orders, &id).await;

        let track = {
            let orders = f.orders.clone();
            let id = id.clone();
            tokio::spawn(async move {
                orders
                    .track(&id, Some(Cursor::Version(version)), timeout(2))
                    .await
            })
        };
        let live = {
            let locations = f.locations.clone();
            let id = id.clone();
            tokio::spawn(async move { locations.poll(&id, None, timeout(60)).await })
        };
        // Both parked (the global count covers both kinds).
        tokio::time::timeout(PROMPTLY, async {
            while f.orders.hub().stats(0).parked_now < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both polls park");

        let reported = f.locations.report(&id, fix(&f.orders, 1)).await.unwrap();
        assert!(reported.applied);
        assert_eq!(reported.location.seq, Seq(1));

        let outcome = tokio::time::timeout(PROMPTLY, live)
            .await
            .expect("the live-location poll wakes")
            .unwrap()
            .unwrap();
        assert!(outcome.has_update);
        assert_eq!(outcome.location, Some(reported.location));

        // The status poll sleeps on to its timeout, with nothing new.
        let tracked = track.await.unwrap().unwrap();
        assert!(!tracked.outcome.has_update, "a fix does not wake /track");
        assert_eq!(tracked.outcome.snapshot.version(), version);
        assert_eq!(f.orders.get(&id).await.unwrap().version(), version);
        assert_eq!(
            f.store.history(&id, Version(0), 10).await.unwrap().len() as u64,
            version.0,
            "no event recorded"
        );
    }

    #[tokio::test]
    async fn only_orders_with_a_driver_that_are_not_final_take_a_fix() {
        let f = fixture();
        let missing: OrderId = "nope".parse().unwrap();
        assert!(matches!(
            f.locations.report(&missing, fix(&f.orders, 0)).await,
            Err(LocationError::Service(ServiceError::NotFound(_)))
        ));
        assert!(matches!(
            f.locations.poll(&missing, None, timeout(0)).await,
            Err(LocationError::Service(ServiceError::NotFound(_)))
        ));
        let id = create(&f.orders, "o1").await;
        assert!(matches!(
            f.locations.report(&id, fix(&f.orders, 0)).await,
            Err(LocationError::NotLocatable(NotLocatable::NoDriver(_)))
        ));
        assign_driver(&f.orders, &id).await;
        f.locations.report(&id, fix(&f.orders, 0)).await.unwrap();
        f.orders
            .apply(
                &id,
                OrderChange::SetStatus(OrderStatus::Cancelled),
                Attribution::default(),
            )
            .await
            .unwrap();
        assert!(matches!(
            f.locations.report(&id, fix(&f.orders, 0)).await,
            Err(LocationError::NotLocatable(NotLocatable::Final { .. }))
        ));
        // A final order's poll answers at once with the last fix.
        let outcome =
            tokio::time::timeout(PROMPTLY, f.locations.poll(&id, Some(Seq(1)), timeout(60)))
                .await
                .expect("answered at once")
                .unwrap();
        assert!(!outcome.has_update);
        assert_eq!(outcome.location.unwrap().seq, Seq(1));
    }

    #[tokio::test]
    async fn the_saved_fix_is_served_after_a_restart_and_its_seq_continues() {
        let f = fixture();
        let id = create(&f.orders, "o1").await;
        assign_driver(&f.orders, &id).await;
        for ago in [30, 20, 10] {
            assert!(
                f.locations
                    .report(&id, fix(&f.orders, ago))
                    .await
                    .unwrap()
                    .applied
            );
        }
        let older = f.locations.report(&id, fix(&f.orders, 25)).await.unwrap();
        assert!(!older.applied);
        assert_eq!(older.location.seq, Seq(3), "the latest is answered");
        // Stop: the pending fix is written.
        f.shutdown.cancel();
        f.tracker.close();
        f.tracker.wait().await;
        assert_eq!(f.store.location(&id).await.unwrap().unwrap().seq, Seq(3));

        // A new process on the same store.
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let store = Arc::clone(&f.store) as Arc<dyn OrderStore>;
        let orders = OrderService::for_tests(Arc::clone(&store), &shutdown);
        let locations = LocationService::start(
            orders.clone(),
            store,
            Duration::from_secs(5),
            Duration::from_secs(600),
            &tracker,
            shutdown,
        );
        let outcome = locations.poll(&id, None, timeout(0)).await.unwrap();
        assert!(outcome.has_update);
        assert_eq!(outcome.location.unwrap().seq, Seq(3));
        let next = locations.report(&id, fix(&orders, 0)).await.unwrap();
        assert_eq!(next.location.seq, Seq(4));
    }

    #[tokio::test]
    async fn other_instances_fixes_wake_polls_here() {
        let f = fixture();
        let id = create(&f.orders, "o1").await;
        let poll = {
            let locations = f.locations.clone();
            let id = id.clone();
            tokio::spawn(async move { locations.poll(&id, None, timeout(60)).await })
        };
        tokio::time::timeout(PROMPTLY, async {
            while f.locations.hub().parked(&id) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let at: Timestamp = "2025-01-12T20:41:07Z".parse().unwrap();
        let remote = Location {
            fix: Fix::parse(1.0, 2.0, None, at, at).unwrap(),
            seq: Seq(5),
        };
        f.locations.hub().merge(&id, remote);
        let outcome = tokio::time::timeout(PROMPTLY, poll)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(outcome.location, Some(remote));
    }
}
