//! The in-memory store, for tests and benchmarks (`--database-url memory:`).
//! Same contract as the durable stores; everything is lost on exit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    BackgroundRun, Commit, CommitOutcome, IdempotencyRecord, OrderStore, Poisoned, RequestRecord,
    RunClaim, StoreError, StoreFeedPage,
};
use crate::domain::{Event, Location, Order, OrderId, OrderStatus, StoreId, Timestamp, Version};

/// Everything behind one lock, so a batch commits atomically. The lock is a
/// `std` mutex: it is never held across an `.await`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every order at its latest version.
    orders: HashMap<OrderId, Order>,
    /// Every order's events, in version order.
    events: HashMap<OrderId, Vec<Event>>,
    /// Idempotency records by (scope, key).
    keys: HashMap<(String, String), IdempotencyRecord>,
    /// Background runs by (kind, order).
    runs: HashMap<(String, OrderId), BackgroundRun>,
    /// Order-request records by (side, request): the listing place of the
    /// first save, and the record.
    request_records: HashMap<(String, OrderId), (u64, serde_json::Value)>,
    /// The listing place the next new request record gets.
    next_record_seq: u64,
    /// Each store's feed: its latest change number, and its orders by the
    /// number of their latest change.
    stores: HashMap<StoreId, (u64, BTreeMap<u64, OrderId>)>,
    /// Each store order's latest change number.
    store_seqs: HashMap<OrderId, u64>,
    /// Orders by their delivery partner's id (the last to take it).
    delivery_ids: HashMap<String, OrderId>,
    /// The latest saved driver location of each order.
    locations: HashMap<OrderId, Location>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied commit
        // (each commit is checked before anything is written), so the data
        // behind a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// Stores `record` unless a live record of its key is stored; expired
    /// records may be replaced, as the SQL stores do.
    fn save_key(&mut self, record: &IdempotencyRecord) -> bool {
        let slot = (record.scope.clone(), record.key.clone());
        if let Some(existing) = self.keys.get(&slot) {
            if existing.created_at >= record.expires_before() {
                return false;
            }
        }
        self.keys.insert(slot, record.clone());
        true
    }

    fn commit_one(&mut self, commit: &Commit) -> CommitOutcome {
        let order = commit.order();
        let stored = self.orders.get(&order.id).map(|o| o.version);
        match (commit.expected, stored) {
            (None, Some(_)) => return CommitOutcome::Exists,
            (Some(expected), Some(actual)) if expected == actual => {}
            (Some(_), _) => return CommitOutcome::Conflict,
            (None, None) => {}
        }
        if let Some(record) = &commit.idempotency {
            if !self.save_key(record) {
                return CommitOutcome::KeyTaken;
            }
        }
        if let Some(store) = order.store_id() {
            let (head, feed) = self.stores.entry(store.clone()).or_default();
            *head += 1;
            if let Some(old) = self.store_seqs.insert(order.id.clone(), *head) {
                feed.remove(&old);
            }
            feed.insert(*head, order.id.clone());
        }
        let before = self.orders.get(&order.id).and_then(Order::delivery_id);
        if before != order.delivery_id() {
            if let Some(old) = before.map(str::to_owned) {
                if self.delivery_ids.get(&old) == Some(&order.id) {
                    self.delivery_ids.remove(&old);
                }
            }
            if let Some(delivery) = order.delivery_id() {
                self.delivery_ids
                    .insert(delivery.to_owned(), order.id.clone());
            }
        }
        self.orders.insert(order.id.clone(), order.clone());
        self.events
            .entry(order.id.clone())
            .or_default()
            .push(commit.event.clone());
        CommitOutcome::Committed
    }
}

#[async_trait]
impl OrderStore for MemoryStore {
    async fn commit(&self, batch: &[Commit]) -> Result<Vec<CommitOutcome>, StoreError> {
        let mut state = self.state();
        let mut poisoned = Poisoned::default();
        Ok(batch
            .iter()
            .map(|commit| poisoned.outcome(commit, || state.commit_one(commit)))
            .collect())
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        Ok(self.state().orders.get(id).cloned())
    }

    async fn store_feed(
        &self,
        store: &StoreId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<StoreFeedPage, StoreError> {
        let state = self.state();
        let Some((head, feed)) = state.stores.get(store) else {
            return Ok(StoreFeedPage::default());
        };
        let orders = feed
            .range(after.map_or(0, |after| after + 1)..)
            .filter_map(|(seq, id)| Some((*seq, state.orders.get(id)?.clone())))
            .filter(|(_, order)| after.is_some() || !order.status.is_terminal())
            .take(limit)
            .collect();
        Ok(StoreFeedPage {
            orders,
            head: *head,
        })
    }

    async fn history(
        &self,
        id: &OrderId,
        after: Version,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .state()
            .events
            .get(id)
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e.version > after)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn order_by_delivery_id(&self, delivery_id: &str) -> Result<Option<OrderId>, StoreError> {
        Ok(self.state().delivery_ids.get(delivery_id).cloned())
    }

    async fn count_by_status(&self) -> Result<BTreeMap<OrderStatus, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        for order in self.state().orders.values() {
            *counts.entry(order.status).or_insert(0) += 1;
        }
        Ok(counts)
    }

    async fn idempotency(
        &self,
        scope: &str,
        key: &str,
        since: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(self
            .state()
            .keys
            .get(&(scope.to_owned(), key.to_owned()))
            .filter(|record| record.created_at >= since)
            .cloned())
    }

    async fn save_idempotency(&self, record: &IdempotencyRecord) -> Result<bool, StoreError> {
        Ok(self.state().save_key(record))
    }

    async fn purge_idempotency(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut state = self.state();
        let len = state.keys.len();
        state
            .keys
            .retain(|_, record| record.created_at >= super::idempotency_cutoff(now, &record.scope));
        Ok((len - state.keys.len()) as u64)
    }

    async fn claim_run(
        &self,
        run: &BackgroundRun,
        expired_before: Timestamp,
    ) -> Result<RunClaim, StoreError> {
        let mut state = self.state();
        let key = (run.kind.clone(), run.order_id.clone());
        let previous = state.runs.get(&key).cloned();
        if let Some(held) = RunClaim::held(previous.as_ref(), run, expired_before) {
            return Ok(held);
        }
        state.runs.insert(key, run.clone());
        Ok(RunClaim::Claimed { previous })
    }

    async fn renew_runs(
        &self,
        owner: &str,
        until: Timestamp,
    ) -> Result<Vec<(String, OrderId)>, StoreError> {
        let mut state = self.state();
        Ok(state
            .runs
            .values_mut()
            .filter(|run| run.owner == owner)
            .map(|run| {
                run.lease_until = until;
                (run.kind.clone(), run.order_id.clone())
            })
            .collect())
    }

    async fn end_run(&self, kind: &str, order_id: &OrderId, owner: &str) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = (kind.to_owned(), order_id.clone());
        if state.runs.get(&key).is_some_and(|run| run.owner == owner) {
            state.runs.remove(&key);
        }
        Ok(())
    }

    async fn cancel_run(&self, kind: &str, order_id: &OrderId) -> Result<bool, StoreError> {
        Ok(self
            .state()
            .runs
            .remove(&(kind.to_owned(), order_id.clone()))
            .is_some())
    }

    async fn runs(&self, kind: &str) -> Result<Vec<BackgroundRun>, StoreError> {
        let mut runs: Vec<BackgroundRun> = self
            .state()
            .runs
            .values()
            .filter(|run| run.kind == kind)
            .cloned()
            .collect();
        runs.sort_by(|a, b| a.order_id.cmp(&b.order_id));
        Ok(runs)
    }

    async fn save_request_record(
        &self,
        side: &str,
        order_req_id: &OrderId,
        record: &serde_json::Value,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let state = &mut *state;
        if let Some(key) = idempotency {
            if !state.save_key(key) {
                return Ok(false);
            }
        }
        let seq = &mut state.next_record_seq;
        state
            .request_records
            .entry((side.to_owned(), order_req_id.clone()))
            .and_modify(|(_, stored)| *stored = record.clone())
            .or_insert_with(|| {
                *seq += 1;
                (*seq, record.clone())
            });
        Ok(true)
    }

    async fn request_records(&self, side: &str) -> Result<Vec<RequestRecord>, StoreError> {
        let state = self.state();
        let mut records: Vec<(u64, RequestRecord)> = state
            .request_records
            .iter()
            .filter(|((stored_side, _), _)| stored_side == side)
            .map(|((_, id), (seq, record))| {
                (
                    *seq,
                    RequestRecord {
                        order_req_id: id.clone(),
                        record: record.clone(),
                    },
                )
            })
            .collect();
        records.sort_by_key(|(seq, _)| *seq);
        Ok(records.into_iter().map(|(_, record)| record).collect())
    }

    async fn save_locations(&self, locations: &[(OrderId, Location)]) -> Result<(), StoreError> {
        let mut state = self.state();
        for (id, location) in locations {
            state
                .locations
                .entry(id.clone())
                .and_modify(|stored| {
                    if !stored.supersedes(&location.fix) {
                        *stored = *location;
                    }
                })
                .or_insert(*location);
        }
        Ok(())
    }

    async fn location(&self, id: &OrderId) -> Result<Option<Location>, StoreError> {
        Ok(self.state().locations.get(id).copied())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
