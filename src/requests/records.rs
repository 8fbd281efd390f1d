//! A write-through book of one side's order-request records (the requestor's
//! or the processor's): reads come from memory, every change is stored
//! before memory shows it.
//!
//! Each record is one JSON row in the store, rewritten whole on each change
//! (they are small: a session, a few notes, three sellers). Changes to one
//! request are serialized by that request's write lock, held across the
//! store write, so two changes never overwrite each other in the store.
//! Memory changes only after the store took the change: a failed write
//! leaves both as they were and the caller answers with an error, so a
//! success means stored.
//!
//! The whole book is loaded at start ([`RecordBook::load`]): the records are
//! diagnostics lists that the API shows in full anyway, one row per request
//! ever made, read with one query.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::domain::OrderId;
use crate::orders::{OrderService, ServiceError};
use crate::store::{IdempotencyRecord, StoreError};

/// One side's records, by request.
pub(crate) struct RecordBook<T> {
    /// The store's name for this side: `requestor` or `processor`.
    side: &'static str,
    /// Where records are stored (through the service, like every worker).
    service: OrderService,
    /// What reads see: each record with its listing place.
    entries: DashMap<OrderId, (u64, T)>,
    /// One write lock per request. Never removed: records are never
    /// removed either, so this grows with them.
    locks: DashMap<OrderId, Arc<Mutex<()>>>,
    /// The listing place of the next new record.
    next_seq: AtomicU64,
}

impl<T: Clone + Serialize + DeserializeOwned> RecordBook<T> {
    /// Reads every stored record of `side`, in listing order.
    pub(crate) async fn load(
        side: &'static str,
        service: OrderService,
    ) -> Result<RecordBook<T>, ServiceError> {
        let entries = DashMap::new();
        let stored = service.request_records(side).await?;
        let count = stored.len() as u64;
        for (seq, stored) in (0..).zip(stored) {
            let record = serde_json::from_value(stored.record).map_err(|err| {
                StoreError::Corrupt(format!("{side} record of {}: {err}", stored.order_req_id))
            })?;
            entries.insert(stored.order_req_id, (seq, record));
        }
        Ok(RecordBook {
            side,
            service,
            entries,
            locks: DashMap::new(),
            next_seq: AtomicU64::new(count),
        })
    }

    /// Reads `id`'s record from the store into this book, if it has one:
    /// for a request another instance started or changed.
    pub(crate) async fn refresh(&self, id: &OrderId) -> Result<Option<T>, ServiceError> {
        let _lock = self.lock(id).await;
        self.reload(id).await
    }

    /// [`RecordBook::refresh`] under `id`'s write lock, held by the caller.
    async fn reload(&self, id: &OrderId) -> Result<Option<T>, ServiceError> {
        let Some(stored) = self.service.request_record(self.side, id).await? else {
            return Ok(None);
        };
        let record: T = serde_json::from_value(stored)
            .map_err(|err| StoreError::Corrupt(format!("{} record of {id}: {err}", self.side)))?;
        let seq = match self.entries.get(id) {
            Some(entry) => entry.0,
            None => self.next_seq.fetch_add(1, Ordering::Relaxed),
        };
        self.entries.insert(id.clone(), (seq, record.clone()));
        Ok(Some(record))
    }

    /// The record of `id` as stored now: read from the store when other
    /// instances share it (they may have changed it), else from memory.
    pub(crate) async fn fresh(&self, id: &OrderId) -> Result<Option<T>, ServiceError> {
        if self.service.shares_store() {
            self.refresh(id).await
        } else {
            Ok(self.get(id))
        }
    }

    /// Every record as stored now, first saved first: read again from the
    /// store when other instances share it, else from memory.
    pub(crate) async fn fresh_list(&self) -> Result<Vec<(OrderId, T)>, ServiceError> {
        if self.service.shares_store() {
            for stored in self.service.request_records(self.side).await? {
                let record: T = serde_json::from_value(stored.record).map_err(|err| {
                    StoreError::Corrupt(format!(
                        "{} record of {}: {err}",
                        self.side, stored.order_req_id
                    ))
                })?;
                let seq = match self.entries.get(&stored.order_req_id) {
                    Some(entry) => entry.0,
                    None => self.next_seq.fetch_add(1, Ordering::Relaxed),
                };
                self.entries.insert(stored.order_req_id, (seq, record));
            }
        }
        Ok(self.list())
    }

    /// The record of `id`, if any.
    pub(crate) fn get(&self, id: &OrderId) -> Option<T> {
        self.entries.get(id).map(|entry| entry.1.clone())
    }

    pub(crate) fn contains(&self, id: &OrderId) -> bool {
        self.entries.contains_key(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every record, first saved first.
    pub(crate) fn list(&self) -> Vec<(OrderId, T)> {
        let mut all: Vec<(u64, OrderId, T)> = self
            .entries
            .iter()
            .map(|entry| (entry.0, entry.key().clone(), entry.1.clone()))
            .collect();
        all.sort_by_key(|(seq, _, _)| *seq);
        all.into_iter()
            .map(|(_, id, record)| (id, record))
            .collect()
    }

    /// Takes `id`'s write lock: until the writer drops, no other change to
    /// the record can start.
    ///
    /// When other instances share the store, the record is read from it
    /// first, so a change builds on what another instance wrote. (Two
    /// instances changing one request at the same instant can still race:
    /// the lock is per process.)
    pub(crate) async fn write(&self, id: &OrderId) -> Writer<'_, T> {
        let lock = self.lock(id).await;
        if self.service.shares_store() {
            if let Err(err) = self.reload(id).await {
                // The write that follows fails the same way and says so.
                tracing::warn!(side = self.side, order_req_id = %id, error = %err, "cannot read a request record before changing it");
            }
        }
        Writer {
            book: self,
            id: id.clone(),
            _lock: lock,
        }
    }

    async fn lock(&self, id: &OrderId) -> OwnedMutexGuard<()> {
        let lock = Arc::clone(self.locks.entry(id.clone()).or_default().value());
        lock.lock_owned().await
    }

    /// Changes the record in memory only, without its lock: for a drop guard
    /// that cannot wait (a task that panicked). The store keeps the previous
    /// version until the next change, or until the next start puts it right.
    pub(crate) fn patch_in_memory(&self, id: &OrderId, change: impl FnOnce(&mut T)) {
        if let Some(mut entry) = self.entries.get_mut(id) {
            change(&mut entry.1);
        }
    }
}

/// Holds one request's write lock.
pub(crate) struct Writer<'a, T> {
    /// The book written to.
    book: &'a RecordBook<T>,
    /// The request.
    id: OrderId,
    /// Released on drop.
    _lock: OwnedMutexGuard<()>,
}

impl<T: Clone + Serialize + DeserializeOwned> Writer<'_, T> {
    /// The record as it stands, if any.
    pub(crate) fn current(&self) -> Option<T> {
        self.book.get(&self.id)
    }

    /// Stores `record` as the request's record, then shows it in memory.
    /// On an error nothing changed.
    pub(crate) async fn put(&self, record: T) -> Result<(), ServiceError> {
        self.put_answered(record, None).await
    }

    /// [`Writer::put`], storing in the same write the idempotency record
    /// of the request that made the change, if any. If its key was stored
    /// meanwhile, nothing changed ([`ServiceError::KeyInFlight`]).
    pub(crate) async fn put_answered(
        &self,
        record: T,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<(), ServiceError> {
        let json = serde_json::to_value(&record).map_err(|err| {
            StoreError::Corrupt(format!("{} record of {}: {err}", self.book.side, self.id))
        })?;
        self.book
            .service
            .save_request_record(self.book.side, &self.id, &json, idempotency)
            .await?;
        let book = self.book;
        book.entries
            .entry(self.id.clone())
            .and_modify(|entry| entry.1 = record.clone())
            .or_insert_with(|| (book.next_seq.fetch_add(1, Ordering::Relaxed), record));
        Ok(())
    }

    /// Shows `record` in memory even though the store refused it, so memory
    /// says what is true now (a round that no longer runs is not shown as
    /// running); the caller logs the disagreement.
    pub(crate) fn put_in_memory(&self, record: T) {
        self.book
            .patch_in_memory(&self.id, |stored| *stored = record);
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    use crate::store::faulty::FaultyStore;

    fn service(store: Arc<FaultyStore>) -> OrderService {
        OrderService::for_tests(store, &CancellationToken::new())
    }

    #[tokio::test]
    async fn a_refused_write_changes_nothing_and_a_reload_sees_what_was_stored() {
        let store = Arc::new(FaultyStore::default());
        let book: RecordBook<Vec<String>> = RecordBook::load("test", service(Arc::clone(&store)))
            .await
            .unwrap();
        let (a, b): (OrderId, OrderId) = ("A".parse().unwrap(), "B".parse().unwrap());
        book.write(&b).await.put(vec!["b1".into()]).await.unwrap();
        book.write(&a).await.put(vec!["a1".into()]).await.unwrap();

        store.refuse_records.store(true, Ordering::SeqCst);
        let refused = book
            .write(&a)
            .await
            .put(vec!["a1".into(), "a2".into()])
            .await;
        assert!(refused.is_err());
        assert!(book
            .write(&"C".parse().unwrap())
            .await
            .put(vec![])
            .await
            .is_err());
        // Memory still says what the store holds.
        assert_eq!(book.get(&a), Some(vec!["a1".to_owned()]));
        assert_eq!(book.len(), 2);

        store.refuse_records.store(false, Ordering::SeqCst);
        book.write(&a)
            .await
            .put(vec!["a1".into(), "a3".into()])
            .await
            .unwrap();
        let reloaded: RecordBook<Vec<String>> =
            RecordBook::load("test", service(store)).await.unwrap();
        assert_eq!(reloaded.list(), book.list());
        assert_eq!(
            reloaded.list(),
            [
                (b.clone(), vec!["b1".to_owned()]),
                (a.clone(), vec!["a1".to_owned(), "a3".to_owned()])
            ],
            "first saved first"
        );
    }
}
