//! The order service: the one write path, and the front door for readers.
//!
//! Every change, whoever asks for it (HTTP, the simulator, the order-request
//! requestor relaying its processor's progress), is a [`Command`] executed
//! by [`OrderService::execute`]. The command goes to the process's one
//! `writer` task, which decides it with the domain rules, commits the new
//! snapshot and its event (and the request's idempotency record) in one
//! transaction, publishes the committed snapshot to the hub, and replies. A
//! change the caller sees succeed is therefore durable and visible to every
//! later read and every parked poll.
//!
//! The service also owns the request-level rules around a change:
//! idempotency keys (replay, reuse with another body, in flight) and
//! `If-Match` (checked by the writer against the committed version).

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::WatchStream;

use crate::domain::poll::BadTimeout;
use crate::domain::{
    Attribution, ChangeError, Cursor, Event, NewOrder, Order, OrderChange, OrderId, OrderSnapshot,
    OrderStatus, PollPolicy, PollTimeout, ValidationError, Version,
};
use crate::store::{IdempotencyRecord, OrderStore, RequestRecord, StoreError, StoredAnswer};
use crate::tracking::{Hub, PollError, PollOutcome};

mod clock;
mod feed;
mod keys;
mod leases;
mod samples;
mod stores;
mod writer;

pub use clock::Clock;
pub use feed::{FeedStats, DEFAULT_SWEEP_INTERVAL};
pub use keys::{Answer, IdempotencyKey, KeyClaim, Keyed};
pub use leases::{RunStart, DEFAULT_LEASE_TTL};
pub use stores::{StoreFeed, DEFAULT_FEED_PAGE, FEED_ACTOR, MAX_FEED_PAGE};
pub use writer::MAX_BATCH;

use writer::{Job, Reply, Writer};

/// Longest history page.
pub const MAX_HISTORY_PAGE: usize = 500;
/// History page when the client gives no `limit`.
pub const DEFAULT_HISTORY_PAGE: usize = 100;

/// What can go wrong when reading or changing orders.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("order {0} not found")]
    NotFound(OrderId),
    #[error("order {0} already exists")]
    AlreadyExists(OrderId),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Poll(PollError),
    /// Other writers kept changing the order; the caller may retry.
    #[error("order {0} is changing too quickly; try again")]
    Contended(OrderId),
    /// `If-Match` named a version the order is no longer at.
    #[error(
        "order {id} is at version {current}, not {expected} (If-Match); read it again and retry"
    )]
    PreconditionFailed {
        id: OrderId,
        expected: Version,
        current: Version,
    },
    /// An idempotency key reused for a different request.
    #[error("Idempotency-Key '{0}' was already used for a different request to this endpoint; use a new key for a new request")]
    KeyReused(String),
    /// A request with the same idempotency key is still being processed.
    #[error(
        "a request with Idempotency-Key '{0}' is still in progress; retry once it has finished"
    )]
    KeyInFlight(String),
    #[error("storage failed")]
    Store(#[from] StoreError),
    /// The writer found the idempotency key stored meanwhile (internal: the
    /// service turns it into a replay).
    #[error("idempotency key stored concurrently")]
    KeyTaken,
    /// The writer task is gone (the server is stopping).
    #[error("the server is shutting down")]
    Stopping,
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// What a command does.
#[derive(Debug, Clone)]
pub enum Target {
    /// Create an order at version 1.
    Create(NewOrder),
    /// Change an existing order.
    Change { id: OrderId, change: OrderChange },
}

/// One change someone asks for, with who asks and on what conditions.
#[derive(Debug, Clone)]
pub struct Command {
    pub target: Target,
    /// Who and why, recorded in the event.
    pub attribution: Attribution,
    /// `If-Match`: apply only if the order is still at this version.
    pub if_match: Option<Version>,
    /// `Idempotency-Key`: apply at most once; replay the first answer.
    pub idempotency: Option<IdempotencyKey>,
}

impl Command {
    /// A plain change with no conditions.
    pub fn change(id: OrderId, change: OrderChange, attribution: Attribution) -> Command {
        Command {
            target: Target::Change { id, change },
            attribution,
            if_match: None,
            idempotency: None,
        }
    }

    /// A plain create with no conditions.
    pub fn create(draft: NewOrder, attribution: Attribution) -> Command {
        Command {
            target: Target::Create(draft),
            attribution,
            if_match: None,
            idempotency: None,
        }
    }
}

/// The result of [`OrderService::execute`].
#[derive(Debug, Clone)]
pub struct Applied {
    /// The order after the change (or as it was, for a no-op; or as the first
    /// answer had it, for a replay).
    pub snapshot: Arc<OrderSnapshot>,
    /// False for an idempotent no-op or a replay: nothing stored, nobody woken.
    pub changed: bool,
    /// The answer is a replay of an earlier request with the same
    /// idempotency key.
    pub replayed: bool,
}

/// A page of an order's history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub events: Vec<Event>,
    /// Pass as `after_version` for the next page; `None` on the last page.
    pub next_after_version: Option<Version>,
}

/// The result of [`OrderService::track`].
#[derive(Debug, Clone)]
pub struct Tracked {
    pub outcome: PollOutcome,
    /// Seconds the client should wait before polling again; 0 means stop.
    pub next_poll_interval: u64,
    /// The wait that was granted, after clamping.
    pub timeout: PollTimeout,
}

/// Long-poll timeout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutSettings {
    /// Seconds to wait when the client gives no `timeout`.
    pub default_secs: u64,
    /// Longest wait granted; larger requests are clamped.
    pub max_secs: u64,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            default_secs: crate::domain::poll::DEFAULT_POLL_TIMEOUT_SECS,
            max_secs: crate::domain::poll::MAX_POLL_TIMEOUT_SECS,
        }
    }
}

/// This process among the instances that share a store.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its name: in logs, stats and health, and the owner of its leases.
    pub id: String,
    /// How long its leases on background runs last without renewal.
    pub lease_ttl: std::time::Duration,
}

impl Instance {
    /// An instance called `id`, with the default lease.
    pub fn named(id: &str) -> Instance {
        Instance {
            id: id.to_owned(),
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }
}

/// Cheap handle to the service; clones share one state.
#[derive(Clone)]
pub struct OrderService {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where orders are kept. Only the writer commits; the service reads.
    store: Arc<dyn OrderStore>,
    /// Where committed versions are published (by the writer) and polls wait.
    hub: Hub,
    /// The writer task's queue: the one way to change an order.
    writer: mpsc::Sender<Job>,
    /// Status → next poll interval.
    policy: PollPolicy,
    /// How long polls may wait.
    timeouts: TimeoutSettings,
    /// Source of `created_at`/`updated_at`.
    clock: Clock,
    /// Idempotency keys of requests being processed now, so a concurrent
    /// retry is told to wait (409) instead of racing the first.
    in_flight: DashMap<(String, String), ()>,
    /// This process among the instances sharing the store.
    instance: Instance,
    /// Following other instances' changes.
    feed: feed::FeedState,
}

impl OrderService {
    /// Builds the service and starts its writer task, which runs until the
    /// last clone of the service is dropped.
    pub fn new(
        store: Arc<dyn OrderStore>,
        hub: Hub,
        policy: PollPolicy,
        timeouts: TimeoutSettings,
        clock: Clock,
        instance: Instance,
    ) -> OrderService {
        let (writer, queue) = mpsc::channel(writer::QUEUE_DEPTH);
        tokio::spawn(
            Writer {
                store: Arc::clone(&store),
                hub: hub.clone(),
                clock,
            }
            .run(queue),
        );
        OrderService {
            inner: Arc::new(Inner {
                store,
                hub,
                writer,
                policy,
                timeouts,
                clock,
                in_flight: DashMap::new(),
                instance,
                feed: feed::FeedState::default(),
            }),
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn policy(&self) -> &PollPolicy {
        &self.inner.policy
    }

    pub fn timeouts(&self) -> TimeoutSettings {
        self.inner.timeouts
    }

    /// `memory`, `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<()> {
        Ok(self.inner.store.ping().await?)
    }

    /// This process's name among the instances sharing the store: in logs,
    /// stats, health, and as the owner of leases.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance.id
    }

    /// Whether this instance can serve the truth: the store answers (within
    /// `within`) and, with a shared store, other instances' changes reach it.
    /// `Err` says what is wrong.
    pub async fn ready(&self, within: std::time::Duration) -> std::result::Result<(), String> {
        match tokio::time::timeout(within, self.inner.store.ping()).await {
            Err(_) => return Err(format!("the store did not answer within {within:?}")),
            Ok(Err(err)) => return Err(format!("the store cannot be reached: {err}")),
            Ok(Ok(())) => {}
        }
        if !self.inner.feed.ready() {
            return Err("the change listener is reconnecting to the store".into());
        }
        Ok(())
    }

    /// What the cross-instance change feed has done.
    pub fn feed_stats(&self) -> FeedStats {
        self.inner.feed.stats()
    }

    /// Creates the seed's sample orders 101, 102 and 103, skipping any that
    /// already exist.
    pub async fn seed_samples(&self) -> Result<()> {
        for draft in samples::orders() {
            if let Some(id) = &draft.id {
                if self.inner.store.exists(id).await? {
                    continue;
                }
            }
            match self.create(draft).await {
                Ok(_) | Err(ServiceError::AlreadyExists(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Stores a new order at version 1 and makes it trackable.
    pub async fn create(&self, draft: NewOrder) -> Result<Arc<OrderSnapshot>> {
        Ok(self
            .execute(Command::create(draft, Attribution::default()))
            .await?
            .snapshot)
    }

    /// Changes an order on behalf of an in-process caller (the simulator,
    /// the requestor), with no conditions.
    pub async fn apply(
        &self,
        id: &OrderId,
        change: OrderChange,
        attribution: Attribution,
    ) -> Result<Applied> {
        self.execute(Command::change(id.clone(), change, attribution))
            .await
    }

    /// The one write path: hands `command` to the writer and waits for the
    /// committed (and published) result.
    ///
    /// With an idempotency key, a stored answer to the same request is
    /// replayed, a stored answer to a different request is
    /// [`ServiceError::KeyReused`], and a request still in progress here is
    /// [`ServiceError::KeyInFlight`]. Only successful changes are stored:
    /// a request that failed changed nothing, so its retry is tried afresh.
    #[tracing::instrument(skip_all, fields(order_id))]
    pub async fn execute(&self, command: Command) -> Result<Applied> {
        if let Target::Change { id, .. } = &command.target {
            tracing::Span::current().record("order_id", tracing::field::display(id));
        }
        let Some(key) = command.idempotency.clone() else {
            return self.send(command).await;
        };
        let _claim = self.claim(&key)?;
        if let Some(replay) = self.replay(&key).await? {
            return Ok(replay);
        }
        match self.send(command).await {
            Err(ServiceError::KeyTaken) => self
                .replay(&key)
                .await?
                // Stored by another instance, then expired at once: not
                // expected with a 24 h window; report it as a conflict.
                .ok_or_else(|| ServiceError::KeyInFlight(key.key.clone())),
            other => other,
        }
    }

    /// Sends `command` to the writer and awaits its answer.
    async fn send(&self, command: Command) -> Result<Applied> {
        let (job, reply) = Job::new(command);
        self.inner
            .writer
            .send(job)
            .await
            .map_err(|_| ServiceError::Stopping)?;
        match reply.await.map_err(|_| ServiceError::Stopping)?? {
            Reply::Done(applied) => Ok(applied),
            Reply::KeyTaken => Err(ServiceError::KeyTaken),
        }
    }

    /// Marks `key` as in progress here until the guard drops.
    fn claim(&self, key: &IdempotencyKey) -> Result<InFlight> {
        use dashmap::mapref::entry::Entry;
        let slot = (key.scope.clone(), key.key.clone());
        match self.inner.in_flight.entry(slot.clone()) {
            Entry::Occupied(_) => Err(ServiceError::KeyInFlight(key.key.clone())),
            Entry::Vacant(entry) => {
                entry.insert(());
                Ok(InFlight {
                    service: self.clone(),
                    slot,
                })
            }
        }
    }

    /// The stored answer for `key`, if any: replayed when the request is
    /// the same, refused when it is not.
    async fn replay(&self, key: &IdempotencyKey) -> Result<Option<Applied>> {
        let Some(record) = self.stored(key).await? else {
            return Ok(None);
        };
        let StoredAnswer::Order { json, .. } = record else {
            return Err(ServiceError::Store(StoreError::Corrupt(format!(
                "the answer stored for '{}' is not an order",
                key.scope
            ))));
        };
        let order: Order = serde_json::from_str(&json).map_err(|err| {
            ServiceError::Store(StoreError::Corrupt(format!("stored answer: {err}")))
        })?;
        Ok(Some(Applied {
            snapshot: Arc::new(OrderSnapshot::new(order)),
            changed: false,
            replayed: true,
        }))
    }

    /// The order's latest version. With a store shared by several
    /// instances it is read from the store, since the hub may not have
    /// heard of another instance's change yet: a client that just changed
    /// the order there must not read an older version here.
    pub async fn get(&self, id: &OrderId) -> Result<Arc<OrderSnapshot>> {
        if !self.inner.feed.shared() {
            if let Some(snapshot) = self.inner.hub.latest(id) {
                return Ok(snapshot);
            }
        }
        self.load(id).await
    }

    /// The order as this instance holds it (kept current by the change
    /// feed when the store is shared), else read from the store: for
    /// checks that tolerate the feed's few milliseconds of delay, on paths
    /// too hot to read the table every time (a driver's fixes).
    pub async fn peek(&self, id: &OrderId) -> Result<Arc<OrderSnapshot>> {
        match self.inner.hub.latest(id) {
            Some(snapshot) => Ok(snapshot),
            None => self.load(id).await,
        }
    }

    /// Reads the order from the store into the hub; returns the hub's latest.
    async fn load(&self, id: &OrderId) -> Result<Arc<OrderSnapshot>> {
        load_into_hub(self.inner.store.as_ref(), &self.inner.hub, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.clone()))
    }

    /// A page of the order's events after version `after`, oldest first.
    pub async fn history(&self, id: &OrderId, after: Version, limit: usize) -> Result<HistoryPage> {
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        // One more than asked tells whether another page follows.
        let mut events = self.inner.store.history(id, after, limit + 1).await?;
        if events.is_empty() && !self.inner.store.exists(id).await? {
            return Err(ServiceError::NotFound(id.clone()));
        }
        let more = events.len() > limit;
        events.truncate(limit);
        let next_after_version = more.then(|| events.last().map(|e| e.version)).flatten();
        Ok(HistoryPage {
            events,
            next_after_version,
        })
    }

    /// The order's current version, then every newer one as it is published.
    /// For in-process readers that must react to changes made by others (the
    /// requestor stops seeking a seller once an order is cancelled). Versions
    /// published in quick succession may be seen only as the latest. The
    /// subscription keeps the order in the hub's cache.
    pub async fn changes(&self, id: &OrderId) -> Result<WatchStream<Arc<OrderSnapshot>>> {
        if let Some(rx) = self.inner.hub.subscribe(id) {
            return Ok(WatchStream::new(rx));
        }
        self.load(id).await?;
        self.inner
            .hub
            .subscribe(id)
            .map(WatchStream::new)
            .ok_or_else(|| ServiceError::NotFound(id.clone()))
    }

    /// The service's current time.
    pub fn now(&self) -> crate::domain::Timestamp {
        self.inner.clock.now()
    }

    /// Reads `?timeout=` with this server's default and maximum.
    pub fn poll_timeout(&self, given: Option<&str>) -> Result<PollTimeout, BadTimeout> {
        let TimeoutSettings {
            default_secs,
            max_secs,
        } = self.inner.timeouts;
        PollTimeout::parse(given, default_secs, max_secs)
    }

    /// Serves one long poll: at once if the client is behind, else parked
    /// until the order changes, the timeout passes or the server shuts down.
    ///
    /// An order the hub does not hold is loaded from the store first. A
    /// cursor ahead of the hub's copy is checked against the store: if the
    /// store has moved on, the hub catches up and the poll goes on from
    /// there (parking if the store is exactly at the cursor); if the store
    /// is behind the cursor too (a restore from backup, a client's clock),
    /// the stored state is answered at once.
    pub async fn track(
        &self,
        id: &OrderId,
        cursor: Option<Cursor>,
        timeout: PollTimeout,
    ) -> Result<Tracked> {
        let hub = &self.inner.hub;
        let poll = |resolved| hub.long_poll(id, cursor.clone(), timeout.duration(), resolved);
        let outcome = match poll(false).await {
            Err(PollError::UnknownOrder) => {
                self.load(id).await?;
                match poll(false).await {
                    // Just read from the store: what it has is all there is.
                    Err(PollError::CursorAhead) => poll(true).await,
                    other => other,
                }
            }
            Err(PollError::CursorAhead) => {
                self.load(id).await?;
                poll(true).await
            }
            other => other,
        }
        .map_err(|err| match err {
            PollError::UnknownOrder => ServiceError::NotFound(id.clone()),
            other => ServiceError::Poll(other),
        })?;
        let next_poll_interval = self.inner.policy.interval_for(outcome.snapshot.order());
        Ok(Tracked {
            outcome,
            next_poll_interval,
            timeout,
        })
    }

    /// The order whose delivery partner's id is `delivery_id`, if any.
    pub async fn order_by_delivery_id(&self, delivery_id: &str) -> Result<Option<OrderId>> {
        Ok(self.inner.store.order_by_delivery_id(delivery_id).await?)
    }

    /// How many orders are in each status.
    pub async fn count_by_status(&self) -> Result<BTreeMap<OrderStatus, u64>> {
        Ok(self.inner.store.count_by_status().await?)
    }

    /// Saves one side's record of an order request (the requestor's or the
    /// processor's), replacing the one saved before; with `idempotency`, in
    /// one write with the record of the request that made the change.
    /// [`ServiceError::KeyInFlight`] if that key was stored meanwhile (by
    /// another instance): then nothing was written.
    pub async fn save_request_record(
        &self,
        side: &str,
        order_req_id: &OrderId,
        record: &serde_json::Value,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<()> {
        let saved = self
            .inner
            .store
            .save_request_record(side, order_req_id, record, idempotency)
            .await?;
        match idempotency {
            Some(key) if !saved => Err(ServiceError::KeyInFlight(key.key.clone())),
            _ => Ok(()),
        }
    }

    /// `side`'s record of one order request, if any.
    pub async fn request_record(
        &self,
        side: &str,
        order_req_id: &OrderId,
    ) -> Result<Option<serde_json::Value>> {
        Ok(self.inner.store.request_record(side, order_req_id).await?)
    }

    /// Whether other instances share this store (PostgreSQL): then what
    /// this instance holds in memory may be behind it.
    pub fn shares_store(&self) -> bool {
        self.inner.feed.shared()
    }

    /// Every record of `side`, first saved first.
    pub async fn request_records(&self, side: &str) -> Result<Vec<RequestRecord>> {
        Ok(self.inner.store.request_records(side).await?)
    }

    /// Forgets idempotency keys older than their 24 hours; returns how many.
    pub async fn purge_idempotency_keys(&self) -> Result<u64> {
        Ok(self
            .inner
            .store
            .purge_idempotency(self.inner.clock.now())
            .await?)
    }
}

#[cfg(test)]
impl OrderService {
    /// A service on `store` with the default settings and the tokio clock,
    /// whose hub stops with `shutdown`: for unit tests.
    pub(crate) fn for_tests(
        store: Arc<dyn OrderStore>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> OrderService {
        OrderService::instance_for_tests(store, shutdown, "test")
    }

    /// [`OrderService::for_tests`] as instance `id`: several of them on one
    /// store stand for several instances on one database.
    pub(crate) fn instance_for_tests(
        store: Arc<dyn OrderStore>,
        shutdown: &tokio_util::sync::CancellationToken,
        id: &str,
    ) -> OrderService {
        OrderService::new(
            store,
            Hub::new(crate::tracking::Limits::default(), shutdown.clone()),
            PollPolicy::default(),
            TimeoutSettings::default(),
            Clock::tokio(),
            Instance::named(id),
        )
    }
}

/// Reads `id` from the store and publishes it to the hub, which keeps the
/// newer of what it has and this; returns the hub's latest (or what was read,
/// if the hub dropped the order meanwhile: it is still true). `None` if the
/// store has no such order.
pub(crate) async fn load_into_hub(
    store: &dyn OrderStore,
    hub: &Hub,
    id: &OrderId,
) -> Result<Option<Arc<OrderSnapshot>>, StoreError> {
    let Some(order) = store.get(id).await? else {
        return Ok(None);
    };
    let loaded = Arc::new(OrderSnapshot::new(order));
    hub.publish(Arc::clone(&loaded));
    Ok(Some(hub.latest(id).unwrap_or(loaded)))
}

/// An idempotency key in progress; released on drop, even when the caller
/// hangs up.
struct InFlight {
    service: OrderService,
    slot: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.service.inner.in_flight.remove(&self.slot);
    }
}

/// A fresh random order id, for clients that do not bring their own.
pub(crate) fn new_order_id() -> OrderId {
    let id = format!("ord_{}", uuid::Uuid::new_v4().simple());
    // Invariant: "ord_" plus 32 hex digits is 36 valid id characters.
    id.parse().expect("generated ids are valid")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::orders::feed::tests::{draft, two_instances};
    use crate::store::faulty::FaultyStore;
    use crate::store::MemoryStore;

    fn service(store: Arc<dyn OrderStore>) -> OrderService {
        OrderService::for_tests(store, &CancellationToken::new())
    }

    #[tokio::test]
    async fn a_change_refused_on_a_stale_copy_is_judged_again_on_the_store() {
        let (a, b) = two_instances();
        let id: OrderId = "o1".parse().unwrap();
        a.create(draft("o1")).await.unwrap();
        assert_eq!(b.get(&id).await.unwrap().version(), Version(1));
        let set = |status| OrderChange::SetStatus(status);
        a.apply(&id, set(OrderStatus::Preparing), Attribution::default())
            .await
            .unwrap();
        // B's copy says confirmed, where ready is illegal; the store says
        // preparing, where it is not.
        assert_eq!(
            b.hub().latest(&id).unwrap().order().status,
            OrderStatus::Confirmed
        );
        let applied = b
            .apply(&id, set(OrderStatus::Ready), Attribution::default())
            .await
            .unwrap();
        assert!(applied.changed);
        assert_eq!(applied.snapshot.version(), Version(3));
        // A move that is illegal on the store too is still refused.
        assert!(matches!(
            b.apply(&id, set(OrderStatus::Confirmed), Attribution::default())
                .await,
            Err(ServiceError::Change(_))
        ));
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_mid_commit_still_wakes_the_pollers() {
        let store = Arc::new(FaultyStore::default());
        let service = service(Arc::clone(&store) as Arc<dyn OrderStore>);
        let id: OrderId = "o1".parse().unwrap();
        service.create(draft("o1")).await.unwrap();
        let mut watcher = service.hub().subscribe(&id).unwrap();
        watcher.borrow_and_update();

        store.hold.store(true, Ordering::SeqCst);
        let caller = {
            let service = service.clone();
            let id = id.clone();
            tokio::spawn(async move {
                service
                    .apply(
                        &id,
                        OrderChange::SetStatus(OrderStatus::Preparing),
                        Attribution::by("t"),
                    )
                    .await
            })
        };
        store.reached.notified().await;
        // The client hangs up while its change is being committed.
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        store.release.notify_one();

        tokio::time::timeout(Duration::from_secs(5), watcher.changed())
            .await
            .expect("the poller wakes")
            .unwrap();
        assert_eq!(watcher.borrow().version(), Version(2));
        assert_eq!(
            store.inner.get(&id).await.unwrap().unwrap().version,
            Version(2)
        );
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_still_reaches_the_pollers() {
        let store = Arc::new(FaultyStore::default());
        let service = service(Arc::clone(&store) as Arc<dyn OrderStore>);
        let id: OrderId = "o1".parse().unwrap();
        service.create(draft("o1")).await.unwrap();
        let mut watcher = service.hub().subscribe(&id).unwrap();
        watcher.borrow_and_update();
        store.lose_ack.store(true, Ordering::SeqCst);
        let result = service
            .apply(
                &id,
                OrderChange::SetStatus(OrderStatus::Preparing),
                Attribution::default(),
            )
            .await;
        assert!(
            matches!(result, Err(ServiceError::Store(_))),
            "the caller is told it failed"
        );
        // It did commit, so the pollers must hear of it.
        tokio::time::timeout(Duration::from_secs(5), watcher.changed())
            .await
            .expect("the poller wakes")
            .unwrap();
        assert_eq!(watcher.borrow().version(), Version(2));
    }

    #[tokio::test]
    async fn a_key_still_in_flight_is_refused_then_replayed() {
        let store = Arc::new(FaultyStore::default());
        let service = service(Arc::clone(&store) as Arc<dyn OrderStore>);
        let id: OrderId = "o1".parse().unwrap();
        service.create(draft("o1")).await.unwrap();
        let body = serde_json::json!({"status": "preparing"});
        let command = Command {
            idempotency: Some(IdempotencyKey::new("PUT", "/p", "k".into(), &body)),
            ..Command::change(
                id,
                OrderChange::SetStatus(OrderStatus::Preparing),
                Attribution::default(),
            )
        };
        store.hold.store(true, Ordering::SeqCst);
        let first = {
            let service = service.clone();
            let command = command.clone();
            tokio::spawn(async move { service.execute(command).await })
        };
        store.reached.notified().await;
        assert!(matches!(
            service.execute(command.clone()).await,
            Err(ServiceError::KeyInFlight(_))
        ));
        store.hold.store(false, Ordering::SeqCst);
        store.release.notify_one();
        assert!(first.await.unwrap().unwrap().changed);
        assert!(service.execute(command).await.unwrap().replayed);
    }

    #[tokio::test]
    async fn concurrent_changes_are_batched_and_gap_free() {
        let store = Arc::new(FaultyStore::default());
        let service = service(Arc::clone(&store) as Arc<dyn OrderStore>);
        for n in 0..20 {
            service.create(draft(&format!("o{n}"))).await.unwrap();
        }
        // Hold the first commit so the rest queue up behind it.
        store.hold.store(true, Ordering::SeqCst);
        let mut calls = Vec::new();
        for n in 0..20 {
            for status in [
                OrderStatus::Preparing,
                OrderStatus::Ready,
                OrderStatus::PickedUp,
            ] {
                let service = service.clone();
                let id: OrderId = format!("o{n}").parse().unwrap();
                calls.push(tokio::spawn(async move {
                    // Retry until the earlier status lands: callers race.
                    loop {
                        match service
                            .apply(&id, OrderChange::SetStatus(status), Attribution::default())
                            .await
                        {
                            Ok(applied) => return applied,
                            Err(ServiceError::Change(_)) => tokio::task::yield_now().await,
                            Err(other) => panic!("{other}"),
                        }
                    }
                }));
            }
        }
        store.reached.notified().await;
        store.hold.store(false, Ordering::SeqCst);
        store.release.notify_one();
        for call in calls {
            assert!(call.await.unwrap().changed);
        }
        for n in 0..20 {
            let id: OrderId = format!("o{n}").parse().unwrap();
            let events = store.inner.history(&id, Version(0), 100).await.unwrap();
            let versions: Vec<u64> = events.iter().map(|e| e.version.0).collect();
            assert_eq!(versions, [1, 2, 3, 4], "order o{n}");
            assert_eq!(service.get(&id).await.unwrap().version(), Version(4));
        }
    }

    #[tokio::test]
    async fn if_match_and_idempotency_keys_are_enforced_by_the_service() {
        let service = service(Arc::new(MemoryStore::new()));
        let id: OrderId = "o1".parse().unwrap();
        service.create(draft("o1")).await.unwrap();
        let body = serde_json::json!({"status": "preparing"});
        let key = IdempotencyKey::new("PUT", "/api/v1/orders/o1/status", "k".into(), &body);
        let command = Command {
            if_match: Some(Version(1)),
            idempotency: Some(key.clone()),
            ..Command::change(
                id.clone(),
                OrderChange::SetStatus(OrderStatus::Preparing),
                Attribution::default(),
            )
        };
        let first = service.execute(command.clone()).await.unwrap();
        assert!(first.changed && !first.replayed);
        // The retry replays even though If-Match no longer holds.
        let again = service.execute(command.clone()).await.unwrap();
        assert!(again.replayed && !again.changed);
        assert_eq!(again.snapshot.version(), Version(2));
        // Without the key, the stale If-Match fails.
        let stale = Command {
            idempotency: None,
            ..command
        };
        assert!(matches!(
            service.execute(stale).await,
            Err(ServiceError::PreconditionFailed {
                current: Version(2),
                ..
            })
        ));
        // A different body under the same key is refused.
        let other = IdempotencyKey::new(
            "PUT",
            "/api/v1/orders/o1/status",
            "k".into(),
            &serde_json::json!({"status": "ready"}),
        );
        let reuse = Command {
            idempotency: Some(other),
            ..Command::change(
                id,
                OrderChange::SetStatus(OrderStatus::Ready),
                Attribution::default(),
            )
        };
        assert!(matches!(
            service.execute(reuse).await,
            Err(ServiceError::KeyReused(_))
        ));
    }
}
