//! Where orders are kept. The service is the only caller; nothing else may
//! touch a store, so every change goes through the one write path.
//!
//! Stores do optimistic locking: [`OrderStore::update`] only succeeds when the
//! stored version is the one the caller read. That keeps concurrent writers
//! (two PUTs, a PUT and the simulator, later several instances) from
//! overwriting each other without a lock held across awaits.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::domain::{Order, OrderId, OrderStatus, Version};

mod memory;

pub use memory::MemoryStore;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("order {0} already exists")]
    AlreadyExists(OrderId),
    #[error("order {0} does not exist")]
    NotFound(OrderId),
    /// Someone else changed the order since the caller read it.
    #[error("order {id} is at version {actual}, not {expected}")]
    VersionConflict {
        id: OrderId,
        expected: Version,
        actual: Version,
    },
    /// The storage backend failed; the message is for logs, not clients.
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// Durable (or not) home of every order.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Stores a new order; fails with `AlreadyExists` if its id is taken.
    async fn insert(&self, order: &Order) -> Result<(), StoreError>;

    /// The stored order, if any.
    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// Replaces the order if the stored one is still at `expected`.
    async fn update(&self, order: &Order, expected: Version) -> Result<(), StoreError>;

    /// Every stored order, to warm the notification hub at start.
    async fn all(&self) -> Result<Vec<Order>, StoreError>;

    /// How many orders are in each status.
    async fn count_by_status(&self) -> Result<BTreeMap<OrderStatus, u64>, StoreError>;
}
