//! Where the service reads the time.

use chrono::{DateTime, Utc};

use crate::domain::Timestamp;

/// The service's source of "now" for `created_at` and `updated_at`.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's wall clock.
    System,
    /// Wall time at `base` plus tokio time elapsed since `origin`. Under
    /// `tokio::time::pause()` this is virtual time, so simulations that run
    /// hours in milliseconds still stamp orders consistently.
    Tokio {
        base: DateTime<Utc>,
        origin: tokio::time::Instant,
    },
}

impl Clock {
    /// A tokio-driven clock starting at the current wall time.
    pub fn tokio() -> Clock {
        Clock::Tokio {
            base: Utc::now(),
            origin: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        match *self {
            Clock::System => Timestamp::new(Utc::now()),
            Clock::Tokio { base, origin } => {
                let elapsed =
                    chrono::TimeDelta::from_std(origin.elapsed()).unwrap_or(chrono::TimeDelta::MAX);
                Timestamp::new(base).plus(elapsed)
            }
        }
    }
}
