//! Parking slots: a parked poll holds one for as long as it waits.
//!
//! The slot is released in `Drop`, so a poll whose client disconnects (hyper
//! drops the handler future) gives its place back at once.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::stats::Ending;
use super::{Channel, PollError, Shared};

/// One parked poll's place under the per-order and global caps.
pub(super) struct ParkSlot<'a> {
    /// The hub, for the global count and the counters.
    shared: &'a Shared,
    /// The order's channel, for its own count.
    channel: &'a Channel,
    /// Set when the poll was answered; a slot dropped unfinished means the
    /// client went away.
    finished: bool,
}

/// Takes one unit of `counter` if it is below `limit`.
pub(super) fn take(counter: &AtomicUsize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

impl<'a> ParkSlot<'a> {
    pub(super) fn acquire(
        shared: &'a Shared,
        channel: &'a Channel,
    ) -> Result<ParkSlot<'a>, PollError> {
        if !take(&channel.parked, shared.limits.per_order) {
            shared.counters.record(Ending::RejectedPerOrder, false);
            return Err(PollError::PerOrderCap {
                limit: shared.limits.per_order,
            });
        }
        if !take(&shared.parked, shared.limits.global) {
            channel.parked.fetch_sub(1, Ordering::AcqRel);
            shared.counters.record(Ending::RejectedGlobal, false);
            return Err(PollError::GlobalCap {
                limit: shared.limits.global,
            });
        }
        Ok(ParkSlot {
            shared,
            channel,
            finished: false,
        })
    }

    /// Records how the poll ended and releases the slot.
    pub(super) fn finish(mut self, ending: Ending, has_update: bool) {
        self.finished = true;
        self.shared.counters.record(ending, has_update);
    }
}

impl Drop for ParkSlot<'_> {
    fn drop(&mut self) {
        self.channel.parked.fetch_sub(1, Ordering::AcqRel);
        self.shared.parked.fetch_sub(1, Ordering::AcqRel);
        if !self.finished {
            self.shared.counters.record(Ending::Disconnected, false);
        }
    }
}
