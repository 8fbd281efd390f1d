//! The in-memory store: the default until a durable one lands. Everything is
//! lost on restart.

use std::collections::BTreeMap;

use async_trait::async_trait;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{OrderStore, StoreError};
use crate::domain::{Order, OrderId, OrderStatus, Version};

/// Orders in a concurrent map; each operation holds one shard lock briefly and
/// never across an await.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Every order by id, at its latest version.
    orders: DashMap<OrderId, Order>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

#[async_trait]
impl OrderStore for MemoryStore {
    async fn insert(&self, order: &Order) -> Result<(), StoreError> {
        match self.orders.entry(order.id.clone()) {
            Entry::Occupied(_) => Err(StoreError::AlreadyExists(order.id.clone())),
            Entry::Vacant(slot) => {
                slot.insert(order.clone());
                Ok(())
            }
        }
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        Ok(self.orders.get(id).map(|order| order.clone()))
    }

    async fn update(&self, order: &Order, expected: Version) -> Result<(), StoreError> {
        let mut stored = self
            .orders
            .get_mut(&order.id)
            .ok_or_else(|| StoreError::NotFound(order.id.clone()))?;
        if stored.version != expected {
            return Err(StoreError::VersionConflict {
                id: order.id.clone(),
                expected,
                actual: stored.version,
            });
        }
        *stored = order.clone();
        Ok(())
    }

    async fn all(&self) -> Result<Vec<Order>, StoreError> {
        Ok(self
            .orders
            .iter()
            .map(|entry| entry.value().clone())
            .collect())
    }

    async fn count_by_status(&self) -> Result<BTreeMap<OrderStatus, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        for entry in self.orders.iter() {
            *counts.entry(entry.status).or_insert(0) += 1;
        }
        Ok(counts)
    }
}
