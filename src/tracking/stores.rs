//! Store bells: what a store's order feed waits on.
//!
//! A restaurant tablet long-polls its store's feed
//! (`GET /tracking/store/{store_id}/orders`). The feed reads the store's
//! changes from the database; the bell only says "something of this store
//! changed, read again". Publishing a snapshot of a store's order rings its
//! store's bell, so the feed rides the one notification path: the writer's
//! publishes, and the change feed's for other instances' changes.
//!
//! Bells exist only while a feed waits on them. A waiting feed holds one
//! unit of the hub's global cap on parked polls, and at most the per-order
//! cap of feeds may wait on one store.

use std::sync::atomic::Ordering;

use dashmap::DashMap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::slot::take;
use super::stats::Ending;
use super::{Hub, PollError};
use crate::domain::StoreId;

/// One bell per store that a feed waits on; the value only counts rings.
pub(super) type Bells = DashMap<StoreId, watch::Sender<u64>>;

/// A feed waiting on its store's bell; holds its parking place until
/// dropped.
pub struct StoreWait {
    hub: Hub,
    store: StoreId,
    rx: Option<watch::Receiver<u64>>,
}

impl Hub {
    /// Starts listening to `store`'s bell (before the caller reads the
    /// store's changes, so a change in between still rings), taking a
    /// parking place.
    pub fn store_wait(&self, store: &StoreId) -> Result<StoreWait, PollError> {
        let shared = &self.shared;
        if !take(&shared.parked, shared.limits.global) {
            shared.counters.record(Ending::RejectedGlobal, false);
            return Err(PollError::GlobalCap {
                limit: shared.limits.global,
            });
        }
        let bell = shared
            .bells
            .entry(store.clone())
            .or_insert_with(|| watch::channel(0).0);
        if bell.receiver_count() >= shared.limits.per_order {
            drop(bell);
            shared.parked.fetch_sub(1, Ordering::AcqRel);
            shared.counters.record(Ending::RejectedPerOrder, false);
            return Err(PollError::PerOrderCap {
                limit: shared.limits.per_order,
            });
        }
        let rx = bell.subscribe();
        drop(bell);
        Ok(StoreWait {
            hub: self.clone(),
            store: store.clone(),
            rx: Some(rx),
        })
    }

    /// Rings `store`'s bell, if a feed waits on it.
    pub fn ring(&self, store: &StoreId) {
        if let Some(bell) = self.shared.bells.get(store) {
            bell.send_modify(|rings| *rings = rings.wrapping_add(1));
        }
    }

    /// Rings every store's bell: after the change feed caught up with the
    /// table, whatever it may have missed is read again.
    pub fn ring_all_stores(&self) {
        for bell in self.shared.bells.iter() {
            bell.send_modify(|rings| *rings = rings.wrapping_add(1));
        }
    }
}

impl StoreWait {
    /// Waits for the bell until `deadline`; `false` when the deadline
    /// passed or the server is stopping.
    pub async fn rung(&mut self, deadline: Instant) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            return false;
        };
        tokio::select! {
            changed = rx.changed() => changed.is_ok(),
            () = tokio::time::sleep_until(deadline) => false,
            () = self.hub.shared.shutdown.cancelled() => false,
        }
    }
}

impl Drop for StoreWait {
    fn drop(&mut self) {
        drop(self.rx.take());
        let shared = &self.hub.shared;
        shared.parked.fetch_sub(1, Ordering::AcqRel);
        // The last waiter takes the bell with it.
        shared
            .bells
            .remove_if(&self.store, |_, bell| bell.receiver_count() == 0);
    }
}
