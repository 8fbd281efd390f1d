//! A test store: the in-memory store with faults that tests switch on, to
//! stop a writer mid-commit, lose a commit's answer, or refuse writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    BackgroundRun, Commit, CommitOutcome, IdempotencyRecord, MemoryStore, OrderStore,
    RequestRecord, RunClaim, StoreError,
};
use crate::domain::{Event, Location, Order, OrderId, OrderStatus, Timestamp, Version};

#[derive(Default)]
pub(crate) struct FaultyStore {
    /// Where the data really goes.
    pub inner: MemoryStore,
    /// Commits wait at the door: `reached` is notified, then they wait for
    /// `release`.
    pub hold: AtomicBool,
    pub reached: Notify,
    pub release: Notify,
    /// Commit, then report a failure: a connection lost during COMMIT.
    pub lose_ack: AtomicBool,
    /// Order-request record writes fail, as on a full disk.
    pub refuse_records: AtomicBool,
    /// Driver location writes so far (calls, each one transaction).
    pub location_writes: AtomicUsize,
    /// Driver location writes fail, as with the database away.
    pub refuse_locations: AtomicBool,
}

#[async_trait]
impl OrderStore for FaultyStore {
    async fn commit(&self, batch: &[Commit]) -> Result<Vec<CommitOutcome>, StoreError> {
        if self.hold.load(Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
        let outcomes = self.inner.commit(batch).await?;
        if self.lose_ack.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("connection lost during COMMIT".into()));
        }
        Ok(outcomes)
    }
    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        self.inner.get(id).await
    }
    async fn history(
        &self,
        id: &OrderId,
        after: Version,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.history(id, after, limit).await
    }
    async fn count_by_status(&self) -> Result<BTreeMap<OrderStatus, u64>, StoreError> {
        self.inner.count_by_status().await
    }
    async fn order_by_delivery_id(&self, delivery_id: &str) -> Result<Option<OrderId>, StoreError> {
        self.inner.order_by_delivery_id(delivery_id).await
    }
    async fn store_feed(
        &self,
        store: &crate::domain::StoreId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<super::StoreFeedPage, StoreError> {
        self.inner.store_feed(store, after, limit).await
    }
    async fn idempotency(
        &self,
        scope: &str,
        key: &str,
        since: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency(scope, key, since).await
    }
    async fn save_idempotency(&self, record: &IdempotencyRecord) -> Result<bool, StoreError> {
        self.inner.save_idempotency(record).await
    }
    async fn purge_idempotency(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.inner.purge_idempotency(now).await
    }
    async fn claim_run(
        &self,
        run: &BackgroundRun,
        expired_before: Timestamp,
    ) -> Result<RunClaim, StoreError> {
        self.inner.claim_run(run, expired_before).await
    }
    async fn renew_runs(
        &self,
        owner: &str,
        until: Timestamp,
    ) -> Result<Vec<(String, OrderId)>, StoreError> {
        self.inner.renew_runs(owner, until).await
    }
    async fn end_run(&self, kind: &str, id: &OrderId, owner: &str) -> Result<(), StoreError> {
        self.inner.end_run(kind, id, owner).await
    }
    async fn cancel_run(&self, kind: &str, id: &OrderId) -> Result<bool, StoreError> {
        self.inner.cancel_run(kind, id).await
    }
    async fn runs(&self, kind: &str) -> Result<Vec<BackgroundRun>, StoreError> {
        self.inner.runs(kind).await
    }
    async fn save_request_record(
        &self,
        side: &str,
        id: &OrderId,
        record: &serde_json::Value,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<bool, StoreError> {
        if self.refuse_records.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("disk full".into()));
        }
        self.inner
            .save_request_record(side, id, record, idempotency)
            .await
    }
    async fn request_records(&self, side: &str) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.request_records(side).await
    }
    async fn save_locations(&self, locations: &[(OrderId, Location)]) -> Result<(), StoreError> {
        if self.refuse_locations.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("the database is away".into()));
        }
        self.location_writes.fetch_add(1, Ordering::SeqCst);
        self.inner.save_locations(locations).await
    }
    async fn location(&self, id: &OrderId) -> Result<Option<Location>, StoreError> {
        self.inner.location(id).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "faulty"
    }
}
