//! Parking slots: a parked poll holds one for as long as it waits.
//!
//! The slot is released in `Drop`, so a poll whose client disconnects (hyper
//! drops the handler future) gives its place back at once.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::stats::{Counters, Ending};
use super::{Limits, PollError};

/// One parked poll's place under the per-order and global caps.
pub(super) struct ParkSlot<'a> {
    /// Polls parked in total, shared by every kind of poll: the global cap
    /// guards the process's sockets, whatever they wait for.
    global: &'a AtomicUsize,
    /// Polls parked on this poll's topic (one order's status, or its live
    /// location), for the per-order cap.
    topic: &'a AtomicUsize,
    /// Where this kind of poll counts how its polls ended.
    counters: &'a Counters,
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
        limits: Limits,
        global: &'a AtomicUsize,
        topic: &'a AtomicUsize,
        counters: &'a Counters,
    ) -> Result<ParkSlot<'a>, PollError> {
        if !take(topic, limits.per_order) {
            counters.record(Ending::RejectedPerOrder, false);
            return Err(PollError::PerOrderCap {
                limit: limits.per_order,
            });
        }
        if !take(global, limits.global) {
            topic.fetch_sub(1, Ordering::AcqRel);
            counters.record(Ending::RejectedGlobal, false);
            return Err(PollError::GlobalCap {
                limit: limits.global,
            });
        }
        Ok(ParkSlot {
            global,
            topic,
            counters,
            finished: false,
        })
    }

    /// Records how the poll ended and releases the slot.
    pub(super) fn finish(mut self, ending: Ending, has_update: bool) {
        self.finished = true;
        self.counters.record(ending, has_update);
    }
}

impl Drop for ParkSlot<'_> {
    fn drop(&mut self) {
        self.topic.fetch_sub(1, Ordering::AcqRel);
        self.global.fetch_sub(1, Ordering::AcqRel);
        if !self.finished {
            self.counters.record(Ending::Disconnected, false);
        }
    }
}
