//! Where orders are kept: each order's current snapshot and its append-only
//! events, plus the idempotency keys of requests with the answers they got.
//!
//! Only the order service's writer commits (one write path); readers may
//! query (an order, its history, counts). Three implementations keep one
//! contract, checked by one test suite (`store::contract`, run by `cargo test`):
//!
//! - [`SqliteStore`], the embedded default: one file, WAL, `synchronous=FULL`.
//! - [`PostgresStore`], for production and several instances.
//! - [`MemoryStore`], for tests and benchmarks; it keeps nothing.
//!
//! Beside orders it keeps what background work must find again after a
//! restart: [`BackgroundRun`]s (simulations and order-request processing
//! streams that were running) and [`RequestRecord`]s (the order-request
//! requestor's and processor's own records). Those are written by the
//! background workers through the service, never by HTTP handlers.
//!
//! A [`Commit`] is one accepted change: the order's new snapshot, its event
//! and optionally the idempotency record of the request. Requests whose
//! effect is not one order change keep their whole answer as an
//! idempotency record ([`StoredAnswer::Response`]), stored with an
//! order-request record or on its own. [`OrderStore::commit`]
//! writes a whole batch of them in one transaction (group commit), checking
//! each order's expected version in the same statement that replaces it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{
    Event, Location, Order, OrderId, OrderSnapshot, OrderStatus, Seq, StoreId, Timestamp, Version,
};

#[cfg(test)]
mod contract;
#[cfg(test)]
mod final_statuses {
    #[test]
    fn the_sql_list_of_final_statuses_is_the_domains() {
        let names: Vec<String> = crate::domain::OrderStatus::ALL
            .into_iter()
            .filter(|status| status.is_terminal())
            .map(|status| format!("'{status}'"))
            .collect();
        assert_eq!(super::FINAL_STATUSES_SQL, names.join(", "));
    }
}
#[cfg(test)]
pub(crate) mod faulty;
mod memory;
mod postgres;
mod sqlite;

pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The database URL used when none is given: a SQLite file in the working
/// directory, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:order-tracker.db";
/// How many connections a store's pool opens at most.
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (connection lost, disk full, ...); the message is
    /// for logs, not clients.
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// A stored row could not be read back into our types.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open the database: {0}")]
    Open(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> StoreError {
        StoreError::Backend(err.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> StoreError {
        StoreError::Open(format!("migrations failed: {err}"))
    }
}

/// The stored answer to a request that carried an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// What the key is unique within: the method and path (and, once callers
    /// authenticate, the caller).
    pub scope: String,
    /// The client's key.
    pub key: String,
    /// Digest of the request (method, path, query, body), to tell a retry
    /// from a different request reusing the key.
    pub fingerprint: String,
    /// What the first answer was, to replay it.
    pub answer: StoredAnswer,
    pub created_at: Timestamp,
}

/// The first answer to a keyed request, kept for its replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredAnswer {
    /// An order change, stored in the same transaction as the change (a
    /// [`Commit`]): the order it produced, as that answer carried it. The
    /// order endpoints render their answer (and its `ETag`) from it.
    Order {
        order_id: OrderId,
        version: Version,
        /// The order's JSON.
        json: String,
    },
    /// A whole answer, for endpoints whose effect is not one order change
    /// (simulations, order requests): its status code and body, byte for
    /// byte. The store does not read either.
    Response { status: u16, body: Vec<u8> },
}

/// A [`StoredAnswer`] as the columns of `idempotency_keys`: `order_id`,
/// `version`, `response` (an order change) or `status`, `body` (a whole
/// answer); the others are `NULL`.
struct AnswerColumns<'a> {
    order_id: Option<&'a str>,
    version: Option<i64>,
    response: Option<&'a str>,
    status: Option<i32>,
    body: Option<&'a [u8]>,
}

impl StoredAnswer {
    fn columns(&self) -> AnswerColumns<'_> {
        match self {
            StoredAnswer::Order {
                order_id,
                version,
                json,
            } => AnswerColumns {
                order_id: Some(order_id.as_str()),
                version: Some(version_to_db(*version)),
                response: Some(json),
                status: None,
                body: None,
            },
            StoredAnswer::Response { status, body } => AnswerColumns {
                order_id: None,
                version: None,
                response: None,
                status: Some(i32::from(*status)),
                body: Some(body),
            },
        }
    }

    /// Reads the columns [`StoredAnswer::columns`] wrote.
    fn from_columns(
        order_id: Option<String>,
        version: Option<i64>,
        response: Option<String>,
        status: Option<i32>,
        body: Option<Vec<u8>>,
    ) -> Result<StoredAnswer, StoreError> {
        match (order_id, version, response, status, body) {
            (Some(order_id), Some(version), Some(json), None, None) => Ok(StoredAnswer::Order {
                order_id: parse_stored("order id", &order_id)?,
                version: version_from_db(version)?,
                json,
            }),
            (None, None, None, Some(status), Some(body)) => Ok(StoredAnswer::Response {
                status: u16::try_from(status)
                    .map_err(|_| StoreError::Corrupt(format!("answer status {status}")))?,
                body,
            }),
            _ => Err(StoreError::Corrupt(
                "an idempotency record holds neither an order nor a response".into(),
            )),
        }
    }
}

/// One accepted change, to commit atomically.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The order after the change, with its JSON already rendered (stored as
    /// the snapshot row).
    pub snapshot: Arc<OrderSnapshot>,
    /// The version the stored order must still be at; `None` creates it.
    pub expected: Option<Version>,
    /// The event recording the change.
    pub event: Event,
    /// The request's idempotency record, stored with the change.
    pub idempotency: Option<IdempotencyRecord>,
}

/// Scopes of delivery partners' webhook events, whose ids are kept for
/// [`WEBHOOK_EVENT_TTL_DAYS`]: partners retry for longer than a day.
pub const WEBHOOK_SCOPE_PREFIX: &str = "webhook ";
/// Days a partner's event id is remembered.
pub const WEBHOOK_EVENT_TTL_DAYS: i64 = 7;

/// How long a key of `scope` is remembered: 24 h (the IETF draft and
/// Stripe), a week for partners' webhook events.
pub fn idempotency_ttl(scope: &str) -> chrono::TimeDelta {
    if scope.starts_with(WEBHOOK_SCOPE_PREFIX) {
        chrono::TimeDelta::days(WEBHOOK_EVENT_TTL_DAYS)
    } else {
        chrono::TimeDelta::hours(24)
    }
}

/// Keys of `scope` stored before this, seen at `now`, have expired.
pub fn idempotency_cutoff(now: Timestamp, scope: &str) -> Timestamp {
    now.plus(-idempotency_ttl(scope))
}

/// The SQL condition "this `idempotency_keys` row has expired" for the
/// stores' purges, given the two cutoffs as parameters `short` (24 h) and
/// `long` (webhook events).
fn expired_sql(short: &str, long: &str) -> String {
    format!(
        "created_at < CASE WHEN scope LIKE '{WEBHOOK_SCOPE_PREFIX}%' THEN {long} ELSE {short} END"
    )
}

impl IdempotencyRecord {
    /// A record of the same key stored before this instant has expired, and
    /// this one may replace it.
    pub fn expires_before(&self) -> Timestamp {
        idempotency_cutoff(self.created_at, &self.scope)
    }
}

impl Commit {
    pub fn order(&self) -> &Order {
        self.snapshot.order()
    }
}

/// Background work that was running, kept so a restart (or another
/// instance) can resume it, with the lease of the instance running it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackgroundRun {
    /// What runs: `simulation` or `request_stream`.
    pub kind: String,
    pub order_id: OrderId,
    /// The run's settings.
    pub params: serde_json::Value,
    pub started_at: Timestamp,
    /// The instance running it.
    pub owner: String,
    /// Until when `owner` holds it; renewed by `owner`'s heartbeat. Once
    /// past, another instance may take the run over.
    pub lease_until: Timestamp,
}

impl BackgroundRun {
    /// Whether this stored run keeps `claimant` from taking it: another
    /// owner holds it at or after `expired_before`.
    pub fn held_against(&self, claimant: &str, expired_before: Timestamp) -> bool {
        self.owner != claimant && self.lease_until >= expired_before
    }
}

impl RunClaim {
    /// `Held` if `previous`, the run stored now, keeps `run`'s owner from
    /// claiming it (see [`BackgroundRun::held_against`]).
    fn held(
        previous: Option<&BackgroundRun>,
        run: &BackgroundRun,
        expired_before: Timestamp,
    ) -> Option<RunClaim> {
        previous
            .filter(|stored| stored.held_against(&run.owner, expired_before))
            .map(|stored| RunClaim::Held(stored.clone()))
    }
}

/// What [`OrderStore::claim_run`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RunClaim {
    /// The run is recorded as the claimant's; `previous` is the record it
    /// replaced (another owner's expired lease, or the claimant's own).
    Claimed { previous: Option<BackgroundRun> },
    /// Another owner holds it; nothing was written.
    Held(BackgroundRun),
}

/// One side's record of one order request (the requestor's or the
/// processor's), kept as JSON: its shape belongs to `requests/`, not here.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub order_req_id: OrderId,
    /// The record as its side serialized it.
    pub record: serde_json::Value,
}

/// What became of one [`Commit`] of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// The order is not at the expected version (or does not exist): another
    /// writer got in between. Nothing of this commit was written.
    Conflict,
    /// A create for an id that is taken. Nothing was written.
    Exists,
    /// The idempotency key is already stored (another instance, or a race):
    /// nothing was written; the caller replays the stored answer.
    KeyTaken,
}

/// Durable (or not) home of every order.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Commits `batch` in one transaction. Each commit succeeds or fails on
    /// its own (the outcome at the same index); a failed commit leaves
    /// nothing behind, and every later commit of the same order in the batch
    /// fails with [`CommitOutcome::Conflict`], since it was computed from
    /// state that was never stored. `Err` means the whole batch failed and
    /// nothing was written.
    async fn commit(&self, batch: &[Commit]) -> Result<Vec<CommitOutcome>, StoreError>;

    /// The stored order, if any.
    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// Whether the order exists (without reading it).
    async fn exists(&self, id: &OrderId) -> Result<bool, StoreError> {
        Ok(self.get(id).await?.is_some())
    }

    /// The order's events after version `after`, oldest first, at most
    /// `limit` of them.
    async fn history(
        &self,
        id: &OrderId,
        after: Version,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// How many orders are in each status.
    async fn count_by_status(&self) -> Result<BTreeMap<OrderStatus, u64>, StoreError>;

    /// The record of `key` in `scope`, if it was stored at or after `since`.
    async fn idempotency(
        &self,
        scope: &str,
        key: &str,
        since: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Stores `record` (an answer given after its effect, outside a
    /// [`Commit`]), unless a record of the same key that has not expired is
    /// stored; returns whether it was stored. An expired one is replaced.
    async fn save_idempotency(&self, record: &IdempotencyRecord) -> Result<bool, StoreError>;

    /// Deletes the idempotency records that have expired at `now` (each by
    /// its scope's [`idempotency_ttl`]); returns how many.
    async fn purge_idempotency(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// Records `run` as running, owned by `run.owner` until
    /// `run.lease_until`, unless another owner holds a lease on the same kind
    /// and order that ends at or after `expired_before`: then nothing is
    /// written and the holder's record is returned. Atomic: of two
    /// instances claiming at once, one gets it.
    async fn claim_run(
        &self,
        run: &BackgroundRun,
        expired_before: Timestamp,
    ) -> Result<RunClaim, StoreError>;

    /// Extends every lease `owner` holds to `until`; returns the runs
    /// (kind, order) it still holds.
    async fn renew_runs(
        &self,
        owner: &str,
        until: Timestamp,
    ) -> Result<Vec<(String, OrderId)>, StoreError>;

    /// Forgets the run of `kind` on `order_id` once it has ended, if `owner`
    /// still holds it (a run taken over is the new owner's to end).
    async fn end_run(&self, kind: &str, order_id: &OrderId, owner: &str) -> Result<(), StoreError>;

    /// Forgets the run of `kind` on `order_id`, whoever owns it: a request
    /// to stop it. Its owner's next heartbeat no longer finds it and stops
    /// it. Returns whether it was recorded.
    async fn cancel_run(&self, kind: &str, order_id: &OrderId) -> Result<bool, StoreError>;

    /// The runs of `kind` recorded as running, by order id.
    async fn runs(&self, kind: &str) -> Result<Vec<BackgroundRun>, StoreError>;

    /// Saves `side`'s record of the order request `order_req_id` (`side`:
    /// the requestor's or the processor's), replacing the one saved before.
    /// A request keeps the listing place of its first save.
    ///
    /// With `idempotency`, the record of the request that made the change
    /// is stored in the same transaction, as by
    /// [`OrderStore::save_idempotency`]: if its key is taken, nothing is
    /// written and the answer is `false`.
    async fn save_request_record(
        &self,
        side: &str,
        order_req_id: &OrderId,
        record: &serde_json::Value,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<bool, StoreError>;

    /// Every record of `side`, first saved first.
    async fn request_records(&self, side: &str) -> Result<Vec<RequestRecord>, StoreError>;

    /// `side`'s record of one order request, if any.
    async fn request_record(
        &self,
        side: &str,
        order_req_id: &OrderId,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .request_records(side)
            .await?
            .into_iter()
            .find(|stored| &stored.order_req_id == order_req_id)
            .map(|stored| stored.record))
    }

    /// Of the orders in `known`, each with the version the caller holds,
    /// those stored at a newer version, as stored. What the change feed
    /// asks after a lost connection and on its safety sweep: one query
    /// where the backend allows.
    async fn newer(&self, known: &[(OrderId, Version)]) -> Result<Vec<Order>, StoreError> {
        let mut newer = Vec::new();
        for (id, version) in known {
            if let Some(order) = self.get(id).await? {
                if order.version > *version {
                    newer.push(order);
                }
            }
        }
        Ok(newer)
    }

    /// Starts listening for changes committed by other processes sharing
    /// this store, and for the driver locations they accept: `None` for a
    /// store one process owns (memory, SQLite). Each call opens a new
    /// listener; the caller drops the old one.
    async fn listen(&self) -> Result<Option<Box<dyn ChangeListener>>, StoreError> {
        Ok(None)
    }

    /// The store's order feed: the orders of `store` whose latest change
    /// is numbered after `after`, in change order, at most `limit`; with
    /// `after` absent, the store's live (not final) orders instead. Also
    /// the store's latest change number.
    async fn store_feed(
        &self,
        store: &StoreId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<StoreFeedPage, StoreError>;
    /// Saves each order's latest driver location, in one transaction. A
    /// location whose fix is not newer than the stored one's is skipped, so
    /// a late or repeated write (another instance's, a retry) never moves a
    /// driver back. The order must exist.
    async fn save_locations(&self, locations: &[(OrderId, Location)]) -> Result<(), StoreError>;

    /// The order's latest saved driver location, if any.
    async fn location(&self, id: &OrderId) -> Result<Option<Location>, StoreError>;

    /// Tells the other processes sharing this store of locations accepted
    /// here, as [`LocationNotice`]s, at once and outside any transaction:
    /// nothing is written. Nothing to do for a store one process owns.
    async fn announce_locations(
        &self,
        _locations: &[(OrderId, Location)],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// The order whose delivery partner's id (`delivery_tracking_id`) is
    /// `delivery_id`, if any (the latest changed, should two share it).
    async fn order_by_delivery_id(&self, delivery_id: &str) -> Result<Option<OrderId>, StoreError>;

    /// Checks that the backend answers, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `memory`, `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
}

/// A page of a store's order feed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreFeedPage {
    /// Each order with the number of its latest change, in change order.
    pub orders: Vec<(u64, Order)>,
    /// The store's latest change number (0 before its first).
    pub head: u64,
}

/// How many commits of `batch` each store gets a change number for, in
/// store order: the SQL stores take the stores' counters in this order, so
/// two batches never wait for each other's counters crosswise.
fn store_counts(batch: &[Commit]) -> BTreeMap<&StoreId, u64> {
    let mut counts = BTreeMap::new();
    for commit in batch {
        if let Some(store) = commit.order().store_id() {
            *counts.entry(store).or_insert(0) += 1;
        }
    }
    counts
}

/// Hands out the change numbers reserved for a batch: the store's last
/// number after the reservation and how many were reserved.
#[derive(Debug, Default)]
struct StoreSeqs<'a> {
    next: BTreeMap<&'a StoreId, u64>,
}

impl<'a> StoreSeqs<'a> {
    /// Records that `store` reserved `count` numbers ending at `last`.
    fn reserved(&mut self, store: &'a StoreId, last: u64, count: u64) {
        self.next.insert(store, last + 1 - count);
    }

    /// The number of `commit`'s change, if its order has a store.
    fn take(&mut self, commit: &Commit) -> Option<u64> {
        let next = self.next.get_mut(commit.order().store_id()?)?;
        let seq = *next;
        *next += 1;
        Some(seq)
    }
}

/// A change another process committed, as it announced it: a hint to read
/// the order again, never the truth (the table is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub order_id: OrderId,
    pub version: Version,
    /// The order's store, whose feed the change also wakes.
    pub store_id: Option<StoreId>,
}

impl Hint {
    /// The hint of a committed order.
    pub fn of(order: &Order) -> Hint {
        Hint {
            order_id: order.id.clone(),
            version: order.version,
            store_id: order.store_id().cloned(),
        }
    }

    /// The hint as a notification payload: `VERSION ORDER_ID [STORE_ID]`,
    /// well within PostgreSQL's 8,000 bytes (ids are at most 64
    /// characters, without spaces).
    pub fn payload(&self) -> String {
        match &self.store_id {
            None => format!("{} {}", self.version.0, self.order_id),
            Some(store) => format!("{} {} {store}", self.version.0, self.order_id),
        }
    }

    /// Reads a payload [`Hint::payload`] wrote; `None` for anything else.
    pub fn parse(payload: &str) -> Option<Hint> {
        let mut words = payload.split(' ');
        let version = Version(words.next()?.parse().ok()?);
        let order_id = words.next()?.parse().ok()?;
        let store_id = words.next().map(str::parse).transpose().ok()?;
        if words.next().is_some() {
            return None;
        }
        Some(Hint {
            order_id,
            version,
            store_id,
        })
    }
}

/// A driver location another process accepted, as it announced it. Unlike
/// a [`Hint`] it carries the whole location (a hundred-odd bytes), since
/// locations are written to the table only every few seconds: a reader
/// could not find it there yet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocationNotice {
    pub order_id: OrderId,
    pub location: Location,
}

impl LocationNotice {
    /// The notice as a notification payload: compact JSON, well within
    /// PostgreSQL's 8,000 bytes (ids are at most 64 characters).
    pub fn payload(&self) -> String {
        // Invariant: plain data with string keys and finite numbers.
        serde_json::to_string(self).expect("a location notice serializes")
    }

    /// Reads a payload [`LocationNotice::payload`] wrote; `None` for
    /// anything else.
    pub fn parse(payload: &str) -> Option<LocationNotice> {
        serde_json::from_str(payload).ok()
    }
}

/// What other processes announced, as a listener received it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notices {
    /// Order changes they committed.
    pub hints: Vec<Hint>,
    /// Driver locations they accepted.
    pub locations: Vec<LocationNotice>,
}

/// Changes other processes commit to a shared store, and driver locations
/// they accept, as they announce them.
#[async_trait]
pub trait ChangeListener: Send {
    /// Waits for the next notices (at least one; all that are already
    /// buffered). `Err` once the connection is lost: hints sent since may
    /// never arrive, so the caller drops this listener, opens a new one and
    /// catches up from the table.
    async fn next(&mut self) -> Result<Notices, StoreError>;
}

/// Opens the store a database URL names, running migrations:
/// `memory:`, `sqlite:PATH` (created if missing) or `postgres://…`.
pub async fn open(url: &str, pool_size: u32) -> Result<Arc<dyn OrderStore>, StoreError> {
    if url == "memory:" || url == "memory" {
        Ok(Arc::new(MemoryStore::new()))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, pool_size).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url, pool_size).await?))
    } else {
        Err(StoreError::Open(format!(
            "unsupported database URL '{url}': use memory:, sqlite:PATH or postgres://…"
        )))
    }
}

/// Orders whose commit failed earlier in a batch: every later commit of
/// theirs must fail too (it was computed from state that was never stored).
#[derive(Debug, Default)]
struct Poisoned(HashSet<OrderId>);

impl Poisoned {
    /// The outcome of `commit` in a batch: a conflict if an earlier commit
    /// of its order failed, else what `write` (not started otherwise) says;
    /// a failure poisons the order for the rest of the batch.
    fn outcome(&mut self, commit: &Commit, write: impl FnOnce() -> CommitOutcome) -> CommitOutcome {
        if self.0.contains(&commit.order().id) {
            return CommitOutcome::Conflict;
        }
        let outcome = write();
        if outcome != CommitOutcome::Committed {
            self.0.insert(commit.order().id.clone());
        }
        outcome
    }

    /// [`Poisoned::outcome`] for a write that awaits.
    async fn outcome_of(
        &mut self,
        commit: &Commit,
        write: impl std::future::Future<Output = Result<CommitOutcome, StoreError>>,
    ) -> Result<CommitOutcome, StoreError> {
        if self.0.contains(&commit.order().id) {
            return Ok(CommitOutcome::Conflict);
        }
        let outcome = write.await?;
        Ok(self.outcome(commit, || outcome))
    }
}

/// `SELECT status, COUNT(*) … GROUP BY status` rows as counts per status.
fn counts_by_status(rows: Vec<(String, i64)>) -> Result<BTreeMap<OrderStatus, u64>, StoreError> {
    rows.into_iter()
        .map(|(status, count)| {
            Ok((
                parse_stored("status", &status)?,
                u64::try_from(count).unwrap_or(0),
            ))
        })
        .collect()
}

/// Reads an order from its stored snapshot JSON.
fn order_from_json(json: &str) -> Result<Order, StoreError> {
    serde_json::from_str(json).map_err(|err| StoreError::Corrupt(format!("order snapshot: {err}")))
}

/// Reads a stored JSON object (event metadata).
fn metadata_from_json(
    json: Option<&str>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError> {
    json.map(serde_json::from_str)
        .transpose()
        .map_err(|err| StoreError::Corrupt(format!("event metadata: {err}")))
}

fn parse_stored<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|err| StoreError::Corrupt(format!("{what} '{text}': {err}")))
}

/// A stored version (a `BIGINT`).
fn version_from_db(version: i64) -> Result<Version, StoreError> {
    u64::try_from(version)
        .map(Version)
        .map_err(|_| StoreError::Corrupt(format!("negative version {version}")))
}

/// A version as a `BIGINT`. Versions grow by one per change, so they never
/// get near `i64::MAX`.
fn version_to_db(version: Version) -> i64 {
    i64::try_from(version.0).unwrap_or(i64::MAX)
}

/// A store's change number as a `BIGINT`.
fn seq_to_db(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A stored change number.
fn seq_from_db(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative change number {seq}")))
}

/// The final statuses, as a SQL list, for "live orders" queries.
const FINAL_STATUSES_SQL: &str = "'delivered', 'cancelled', 'expired', 'failed'";

/// The page of a store feed: `rows` read after `head`, each with its number.
fn feed_page(head: Option<i64>, rows: Vec<(i64, Order)>) -> Result<StoreFeedPage, StoreError> {
    let orders = rows
        .into_iter()
        .map(|(seq, order)| Ok((seq_from_db(seq)?, order)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(StoreFeedPage {
        orders,
        head: head.map(seq_from_db).transpose()?.unwrap_or(0),
    })
}

/// A stored location sequence number (a `BIGINT`).
fn location_seq_from_db(seq: i64) -> Result<Seq, StoreError> {
    u64::try_from(seq)
        .map(Seq)
        .map_err(|_| StoreError::Corrupt(format!("negative location seq {seq}")))
}

/// A location sequence number as a `BIGINT`; it grows by one per fix.
fn location_seq_to_db(seq: Seq) -> i64 {
    i64::try_from(seq.0).unwrap_or(i64::MAX)
}

/// A page size as a SQL `LIMIT`.
fn limit_to_db(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
