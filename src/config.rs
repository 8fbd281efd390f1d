//! Configuration: command-line flags, each with an environment variable as an
//! alternative. `order-tracker --help` lists them all.

use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Parser, ValueEnum};

use crate::domain::poll::{
    BadPolicy, PollStatus, DEFAULT_POLL_TIMEOUT_SECS, MAX_POLL_TIMEOUT_SECS,
};
use crate::domain::{PollPolicy, TimeScale};
use crate::orders::TimeoutSettings;
use crate::store::{DEFAULT_DATABASE_URL, DEFAULT_POOL_SIZE};
use crate::tracking::{
    Limits, DEFAULT_IDLE_EVICTION, DEFAULT_MAX_PARKED_POLLS, DEFAULT_MAX_POLLERS_PER_ORDER,
};

/// Address served when none is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:5001";
/// Pending-connection queue of the listening socket. The kernel default
/// (often 128) makes a burst of thousands of reconnecting phones wait on SYN
/// retries; the kernel still caps it at `net.core.somaxconn`.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
/// `Retry-After` sent with 429 and 503, in seconds.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 5;
/// Longest wait for connections to drain on shutdown, in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 5;
/// Busiest orders listed by `/system/stats`.
pub const DEFAULT_STATS_TOP_ORDERS: usize = 10;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// order-tracker: long-polling order tracking that spares phone batteries.
///
/// Log verbosity follows RUST_LOG (default: info).
#[derive(Debug, Clone, Parser)]
#[command(name = "order-tracker", version, about, long_about = None)]
pub struct Config {
    /// Address to serve on, HOST:PORT. Port 0 picks a free port.
    #[arg(long, env = "ORDER_TRACKER_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,

    /// Where orders are kept: `sqlite:PATH` (created if missing; the
    /// default is a file in the working directory), `postgres://USER@HOST/DB`,
    /// or `memory:` (keeps nothing; for tests and benchmarks).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Most connections the store's pool opens.
    #[arg(long, env = "ORDER_TRACKER_DB_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,

    /// Seconds an order stays cached in memory with nobody watching it and no
    /// change; then it is dropped and read from the store when next needed.
    #[arg(long, env = "ORDER_TRACKER_IDLE_EVICTION", default_value_t = DEFAULT_IDLE_EVICTION.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_eviction: u64,

    /// Most polls parked on one order at once; the next gets 429.
    #[arg(long, env = "ORDER_TRACKER_MAX_POLLERS_PER_ORDER", default_value_t = DEFAULT_MAX_POLLERS_PER_ORDER,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_pollers_per_order: usize,

    /// Most polls parked in total; the next gets 503.
    #[arg(long, env = "ORDER_TRACKER_MAX_PARKED_POLLS", default_value_t = DEFAULT_MAX_PARKED_POLLS,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_parked_polls: usize,

    /// Seconds a long poll waits when the client gives no `timeout`.
    #[arg(long, env = "ORDER_TRACKER_DEFAULT_POLL_TIMEOUT", default_value_t = DEFAULT_POLL_TIMEOUT_SECS)]
    pub default_poll_timeout: u64,

    /// Longest long-poll wait in seconds; larger `timeout` values are clamped.
    #[arg(long, env = "ORDER_TRACKER_MAX_POLL_TIMEOUT", default_value_t = MAX_POLL_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub max_poll_timeout: u64,

    /// Override a status's next_poll_interval, STATUS=SECONDS (repeatable, or
    /// comma-separated). STATUS is a coarse status (setting all its fine
    /// statuses too) or one of seed 003's fine statuses, which wins over its
    /// coarse one. Defaults: requested=30, confirmed=120, preparing=60,
    /// ready=30, picked_up=30, delivered=0, cancelled=0, expired=0, failed=0,
    /// and each fine status as its coarse one (README lists them).
    #[arg(long = "poll-interval", env = "ORDER_TRACKER_POLL_INTERVALS", value_delimiter = ',',
          value_name = "STATUS=SECONDS", value_parser = parse_interval)]
    pub poll_intervals: Vec<(PollStatus, u64)>,

    /// Seconds sent in `Retry-After` when a cap rejects a poll.
    #[arg(long, env = "ORDER_TRACKER_RETRY_AFTER", default_value_t = DEFAULT_RETRY_AFTER_SECS)]
    pub retry_after: u64,

    /// Log format.
    #[arg(long, env = "ORDER_TRACKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Do not create the sample orders 101, 102 and 103 at start.
    #[arg(long, env = "ORDER_TRACKER_NO_SAMPLE_ORDERS")]
    pub no_sample_orders: bool,

    /// Busiest orders listed in /system/stats.
    #[arg(long, env = "ORDER_TRACKER_STATS_TOP_ORDERS", default_value_t = DEFAULT_STATS_TOP_ORDERS)]
    pub stats_top_orders: usize,

    /// Seconds to wait for connections to drain on shutdown before exiting anyway.
    #[arg(long, env = "ORDER_TRACKER_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace: u64,

    /// How many times faster than real time the simulated sellers of order
    /// requests answer, when an initiate gives no `?speed=`. At 1 a request
    /// is decided 6 minutes after it is initiated (expiry at 15).
    #[arg(long, env = "ORDER_TRACKER_PROCESSING_SPEED", default_value = "1", value_parser = parse_speed)]
    pub processing_speed: TimeScale,

    /// This instance's name among those sharing one database (in logs,
    /// stats, health, and as the owner of background work). Default:
    /// the host name and a random suffix, new at every start.
    #[arg(long, env = "ORDER_TRACKER_INSTANCE_ID", value_parser = parse_instance_id)]
    pub instance_id: Option<String>,

    /// Seconds between safety sweeps with a shared (PostgreSQL) store: each
    /// compares every order cached here with the database, so a lost change
    /// notification costs at most this long in staleness.
    #[arg(long, env = "ORDER_TRACKER_SWEEP_INTERVAL", default_value = "5", value_parser = parse_seconds)]
    pub sweep_interval: Duration,

    /// Seconds a lease on background work (a simulation, an order-request
    /// processing stream) lasts without its owner's heartbeat (every third
    /// of it); then another instance takes the work over.
    #[arg(long, env = "ORDER_TRACKER_LEASE_TTL", default_value = "15", value_parser = parse_seconds)]
    pub lease_ttl: Duration,

    /// Least seconds between two writes of one order's driver location
    /// (fractions allowed). Fixes in between only update memory; the latest
    /// is written when the interval ends, and everything pending on
    /// shutdown.
    #[arg(long, env = "ORDER_TRACKER_LOCATION_WRITE_INTERVAL", default_value = "5", value_parser = parse_seconds)]
    pub location_write_interval: Duration,

    /// Uber's webhook signing key: `POST /tracking/webhooks/uber` checks
    /// `X-Uber-Signature` with it. Without it that webhook answers 503.
    #[arg(
        long,
        env = "ORDER_TRACKER_UBER_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub uber_webhook_secret: Option<String>,

    /// The whole `Authorization` header DoorDash is configured to send
    /// (`Bearer …` or `Basic …`). Without it that webhook answers 503.
    #[arg(
        long,
        env = "ORDER_TRACKER_DOORDASH_WEBHOOK_AUTH",
        hide_env_values = true
    )]
    pub doordash_webhook_auth: Option<String>,

    /// Pending-connection queue length of the listening socket.
    #[arg(long, env = "ORDER_TRACKER_LISTEN_BACKLOG", default_value_t = DEFAULT_LISTEN_BACKLOG)]
    pub listen_backlog: u32,
}

/// Settings that parse but do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--default-poll-timeout ({default}) must not exceed --max-poll-timeout ({max})")]
    DefaultAboveMax { default: u64, max: u64 },
    #[error(transparent)]
    Policy(#[from] BadPolicy),
}

fn parse_speed(text: &str) -> Result<TimeScale, String> {
    TimeScale::parse(text).map_err(|err| err.to_string())
}

/// A positive number of seconds, fractions allowed (`0.5`), at most a day.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(0.01..=86_400.0).contains(&secs) {
        return Err(format!("{secs} s is out of range: use 0.01 to 86400"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// 1 to 64 characters of letters, digits, `.`, `_`, `-` and `:`.
fn parse_instance_id(text: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err("use 1 to 64 letters, digits, '.', '_', '-' or ':'".into())
    }
}

fn parse_interval(text: &str) -> Result<(PollStatus, u64), String> {
    let (status, secs) = text
        .split_once('=')
        .ok_or_else(|| format!("expected STATUS=SECONDS, got '{text}'"))?;
    let status = status.trim().parse::<PollStatus>()?;
    let secs = secs
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("'{secs}' is not a whole number of seconds"))?;
    Ok((status, secs))
}

impl Config {
    /// The defaults as if no flag were given (`ORDER_TRACKER_*` variables
    /// still apply), but on `addr`. Handy for tests and examples.
    pub fn with_addr(addr: &str) -> Config {
        // Invariant: the defaults above always parse.
        let mut config = Config::try_parse_from(["order-tracker"]).expect("defaults parse");
        config.addr = addr.to_owned();
        config
    }

    pub fn limits(&self) -> Limits {
        Limits {
            per_order: self.max_pollers_per_order,
            global: self.max_parked_polls,
        }
    }

    pub fn timeouts(&self) -> Result<TimeoutSettings, ConfigError> {
        if self.default_poll_timeout > self.max_poll_timeout {
            return Err(ConfigError::DefaultAboveMax {
                default: self.default_poll_timeout,
                max: self.max_poll_timeout,
            });
        }
        Ok(TimeoutSettings {
            default_secs: self.default_poll_timeout,
            max_secs: self.max_poll_timeout,
        })
    }

    pub fn policy(&self) -> Result<PollPolicy, ConfigError> {
        Ok(PollPolicy::with_overrides(
            self.poll_intervals.iter().copied(),
        )?)
    }

    pub fn idle_eviction(&self) -> Duration {
        Duration::from_secs(self.idle_eviction)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace)
    }

    /// `--instance-id`, or the host name with a random suffix.
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| parse_instance_id(h).is_ok() && h.len() <= 55)
                .unwrap_or_else(|| "order-tracker".into());
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}", &suffix[..8])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrderStatus, TrackingStatus};

    #[test]
    fn defaults_match_the_issue() {
        let config = Config::with_addr(DEFAULT_ADDR);
        assert_eq!(config.addr, "127.0.0.1:5001");
        assert_eq!(config.database_url, "sqlite:order-tracker.db");
        assert_eq!(config.idle_eviction(), Duration::from_secs(600));
        assert_eq!(config.max_pollers_per_order, 10);
        assert_eq!(
            config.timeouts().unwrap(),
            TimeoutSettings {
                default_secs: 30,
                max_secs: 120
            }
        );
        assert_eq!(config.policy().unwrap(), PollPolicy::default());
        assert!(!config.no_sample_orders);
        assert_eq!(config.processing_speed, TimeScale::REAL_TIME);
        assert_eq!(config.location_write_interval, Duration::from_secs(5));
        assert_eq!(
            config
                .policy()
                .unwrap()
                .next_poll_interval(OrderStatus::Requested),
            30
        );
    }

    #[test]
    fn flags_parse_and_conflicts_are_caught() {
        let config = Config::try_parse_from([
            "order-tracker",
            "--poll-interval",
            "confirmed=90,ready=10,in_transit=15",
            "--max-poll-timeout",
            "60",
            "--no-sample-orders",
        ])
        .unwrap();
        assert_eq!(
            config
                .policy()
                .unwrap()
                .next_poll_interval(OrderStatus::Ready),
            10
        );
        let policy = config.policy().unwrap();
        assert_eq!(policy.fine_intervals()[&TrackingStatus::InTransit], 15);
        assert_eq!(policy.fine_intervals()[&TrackingStatus::DriverAssigned], 10);
        assert!(config.no_sample_orders);
        let bad = Config::try_parse_from([
            "order-tracker",
            "--default-poll-timeout",
            "90",
            "--max-poll-timeout",
            "60",
        ])
        .unwrap();
        assert!(bad.timeouts().is_err());
        assert!(Config::try_parse_from(["order-tracker", "--poll-interval", "shipped=5"]).is_err());
        assert!(Config::try_parse_from(["order-tracker", "--max-pollers-per-order", "0"]).is_err());
        assert!(Config::try_parse_from(["order-tracker", "--processing-speed", "0"]).is_err());
        let fast = Config::try_parse_from([
            "order-tracker",
            "--processing-speed",
            "600",
            "--poll-interval",
            "requested=5",
        ])
        .unwrap();
        assert_eq!(fast.processing_speed.speed(), 600.0);
        assert_eq!(
            fast.policy()
                .unwrap()
                .next_poll_interval(OrderStatus::Requested),
            5
        );
    }
}
