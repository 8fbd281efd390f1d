//! The store's order feed: a restaurant or store tablet long-polls for its
//! orders that changed, instead of polling each one.
//!
//! The store numbers the changes to each store's orders in commit order
//! ([`OrderStore::store_feed`](crate::store::OrderStore::store_feed)); a
//! tablet's cursor is the last number it saw. The feed waits on the
//! store's bell in the hub ([`crate::tracking::StoreWait`]), which every
//! publish of the store's orders rings, here or (through the change feed)
//! on another instance.
//!
//! Delivering a `submitted` order to its store's feed is seed 003's "Store
//! Notification": the feed moves it to `store_notified` through the one
//! write path before answering, so the tablet sees it notified and the
//! customer sees that the store has it.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Command, OrderService, Result, ServiceError};
use crate::domain::{
    Actor, Attribution, Fulfill, OrderChange, OrderSnapshot, PollTimeout, StoreId, TrackingStatus,
};

/// Longest page of a store feed.
pub const MAX_FEED_PAGE: usize = 500;
/// A store feed's page when the tablet gives no `limit`.
pub const DEFAULT_FEED_PAGE: usize = 100;
/// Who the feed's notifications are attributed to in the history.
pub const FEED_ACTOR: &str = "store-feed";

/// What a store feed answers.
#[derive(Debug, Clone)]
pub struct StoreFeed {
    /// The store's orders that changed after the cursor (or, without one,
    /// its live orders), each at its latest version, in change order.
    pub orders: Vec<Arc<OrderSnapshot>>,
    /// Pass as `after` next time.
    pub cursor: u64,
    /// Whether `orders` is not empty.
    pub has_update: bool,
    /// More changes follow at once (the page was full).
    pub more: bool,
}

impl OrderService {
    /// Serves one poll of `store`'s feed: at once if orders changed after
    /// `after` (or, without `after`, with the store's live orders),
    /// otherwise parked until one changes, the timeout passes or the server
    /// stops.
    pub async fn store_feed(
        &self,
        store: &StoreId,
        after: Option<u64>,
        timeout: PollTimeout,
        limit: usize,
    ) -> Result<StoreFeed> {
        let limit = limit.clamp(1, MAX_FEED_PAGE);
        let deadline = Instant::now() + timeout.duration();
        let can_park = after.is_some() && !timeout.duration().is_zero() && !self.hub().stopping();
        // Listen before reading, so a change in between still rings.
        let mut wait = if can_park {
            Some(self.hub().store_wait(store).map_err(ServiceError::Poll)?)
        } else {
            None
        };
        loop {
            let feed = self.read_feed(store, after, limit).await?;
            if feed.has_update || after.is_none() {
                return Ok(feed);
            }
            let rung = match wait.as_mut() {
                Some(wait) => wait.rung(deadline).await,
                None => false,
            };
            if !rung {
                return Ok(feed);
            }
        }
    }

    /// One page of the feed, with its `submitted` orders notified.
    async fn read_feed(
        &self,
        store: &StoreId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<StoreFeed> {
        let mut page = self.inner.store.store_feed(store, after, limit).await?;
        let submitted: Vec<_> = page
            .orders
            .iter()
            .filter(|(_, order)| order.tracking_status() == Some(TrackingStatus::Submitted))
            .map(|(_, order)| order.id.clone())
            .collect();
        if !submitted.is_empty() {
            for id in submitted {
                let command = Command::change(
                    id.clone(),
                    OrderChange::Fulfill {
                        command: Fulfill::NotifyStore,
                        actor: Actor::Operator,
                        at_store: Some(store.clone()),
                    },
                    Attribution::by(FEED_ACTOR),
                );
                // Another tablet of the store may have been first: the
                // order is notified either way.
                if let Err(err) = self.execute(command).await {
                    match err {
                        ServiceError::Change(_) | ServiceError::NotFound(_) => {}
                        other => return Err(other),
                    }
                }
            }
            // The notified orders moved on in the feed: read it again.
            page = self.inner.store.store_feed(store, after, limit).await?;
        }
        let more = page.orders.len() >= limit;
        let last = page.orders.last().map_or(0, |(seq, _)| *seq);
        // A full page ends at its last change; otherwise everything up to
        // the head (read before the rows) was seen.
        let cursor = if more {
            last
        } else {
            last.max(page.head).max(after.unwrap_or(0))
        };
        let orders: Vec<_> = page
            .orders
            .into_iter()
            .map(|(_, order)| Arc::new(OrderSnapshot::new(order)))
            .collect();
        Ok(StoreFeed {
            has_update: !orders.is_empty(),
            orders,
            cursor,
            more,
        })
    }
}
