//! Periodic background work that stops on shutdown.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// A tick every `period`, the first one a period from now, until shutdown.
/// A late tick delays the next rather than bunching them up.
pub(crate) struct Ticks {
    interval: Interval,
    shutdown: CancellationToken,
}

impl Ticks {
    pub(crate) fn new(period: Duration, shutdown: CancellationToken) -> Ticks {
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticks { interval, shutdown }
    }

    /// Waits for the next tick; `false` once the server is shutting down.
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            _ = self.interval.tick() => true,
        }
    }
}
