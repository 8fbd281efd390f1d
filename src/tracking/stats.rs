//! Live counters of the long-poll path, and the figures `/system/stats` shows.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::OrderId;

/// How one poll ended, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// Answered without parking.
    Immediate,
    /// Parked, then woken by a change.
    Woken,
    /// Parked until its timeout passed.
    TimedOut,
    /// Parked, then released by shutdown.
    Shutdown,
    /// Refused: the order's cap was full (429).
    RejectedPerOrder,
    /// Refused: the global cap was full (503).
    RejectedGlobal,
    /// The client went away while parked; nothing was sent.
    Disconnected,
}

/// Monotonic counters, bumped with relaxed atomics on the poll path. One
/// set per kind of poll: `/track`'s in the hub, live location's beside it.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    served: AtomicU64,
    updates: AtomicU64,
    woken: AtomicU64,
    timeouts: AtomicU64,
    immediate_unchanged: AtomicU64,
    shutdown: AtomicU64,
    rejected_per_order: AtomicU64,
    rejected_global: AtomicU64,
    disconnected: AtomicU64,
    /// Snapshots published to existing orders (each one a wake-up).
    pub(super) published: AtomicU64,
}

impl Counters {
    pub(super) fn record(&self, ending: Ending, has_update: bool) {
        let bump = |counter: &AtomicU64| {
            counter.fetch_add(1, Ordering::Relaxed);
        };
        if ending != Ending::Disconnected {
            bump(&self.served);
        }
        if has_update {
            bump(&self.updates);
        }
        match ending {
            Ending::Woken => bump(&self.woken),
            Ending::Immediate if !has_update => bump(&self.immediate_unchanged),
            Ending::TimedOut if !has_update => bump(&self.timeouts),
            Ending::Shutdown if !has_update => bump(&self.shutdown),
            Ending::RejectedPerOrder => bump(&self.rejected_per_order),
            Ending::RejectedGlobal => bump(&self.rejected_global),
            Ending::Disconnected => bump(&self.disconnected),
            Ending::Immediate | Ending::TimedOut | Ending::Shutdown => {}
        }
    }

    /// A poll answered without parking.
    pub(crate) fn immediate(&self, has_update: bool) {
        self.record(Ending::Immediate, has_update);
    }

    pub(crate) fn snapshot(&self) -> PollCounts {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rejected_per_order_cap = get(&self.rejected_per_order);
        let rejected_global_cap = get(&self.rejected_global);
        PollCounts {
            served: get(&self.served),
            updates: get(&self.updates),
            woken_by_change: get(&self.woken),
            timeouts: get(&self.timeouts),
            unchanged_immediate: get(&self.immediate_unchanged),
            released_by_shutdown: get(&self.shutdown),
            rejections: rejected_per_order_cap + rejected_global_cap,
            rejected_per_order_cap,
            rejected_global_cap,
            disconnected: get(&self.disconnected),
        }
    }
}

/// What happened to the long polls served since start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PollCounts {
    /// Track requests answered, rejections included.
    pub served: u64,
    /// Answered with `has_update: true`, at once or after parking.
    pub updates: u64,
    /// Of `updates`, those that parked and were woken by a change.
    pub woken_by_change: u64,
    /// Parked until the timeout passed with no change.
    pub timeouts: u64,
    /// Answered at once with no change (`timeout=0`, or a final order).
    pub unchanged_immediate: u64,
    /// Parked and answered early because the server was shutting down.
    pub released_by_shutdown: u64,
    /// Refused by a cap (429 or 503).
    pub rejections: u64,
    /// Refused because the order had the most parked polls allowed (429).
    pub rejected_per_order_cap: u64,
    /// Refused because the server had the most parked polls allowed (503).
    pub rejected_global_cap: u64,
    /// Clients that disconnected while parked; their slots came back at once.
    pub disconnected: u64,
}

/// Parked polls on one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderPollers {
    pub order_id: OrderId,
    pub parked: usize,
}

/// The hub's live figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HubStats {
    /// Polls parked right now, of both kinds: status (`/track`) and live
    /// location. The global cap counts them together.
    pub parked_now: usize,
    /// Orders with the most parked polls, busiest first.
    pub busiest_orders: Vec<OrderPollers>,
    /// Cap on parked polls per order (429 beyond it).
    pub max_pollers_per_order: usize,
    /// Cap on parked polls in total (503 beyond it).
    pub max_parked_polls: usize,
    pub polls: PollCounts,
    /// New order versions published since start, each waking that order's polls.
    pub status_updates_published: u64,
    /// Orders held in memory now: those watched or changed recently. Idle
    /// ones are evicted and read from the store when next needed.
    pub orders_cached: usize,
}
