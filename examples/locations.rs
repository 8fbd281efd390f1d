//! Live-location benchmark behind `bench/locations.sh` (issue 10): drivers
//! each send a fix every second to their order, every order has live-location
//! pollers parked on it and status pollers parked beside them. It measures
//! the fixes per second the server absorbs, how soon each fix reaches the
//! order's live-location polls, that no fix wakes a status poll, and how many
//! rows the fixes cost the database (the write throttle).
//!
//! `locations run` drives one run against a server the script has started:
//!
//! 1. **Ready.** `/api/v1/ready` answers 200. With `--database-url` (the
//!    server's own store, a fresh one per run), the tool adds a counter to
//!    it: a table of one row and triggers on `driver_locations` that add one
//!    per row inserted or updated, in the writing transaction. An upsert
//!    that changes nothing (a fix no newer than the row) counts nothing.
//!    Nothing else writes that table, so the counter is the rows the fixes
//!    cost.
//! 2. **Setup** (not timed): `--drivers` orders
//!    (`POST /tracking/orders/{id}/init`), each with a driver
//!    (`POST /tracking/delivery/{id}/assign`, whose `ETag` is the order's
//!    version); one keep-alive connection per driver.
//! 3. **Park.** Per order, `--pollers` live-location polls
//!    (`…/live-location?after=SEQ&timeout=…`) and `--status-pollers` status
//!    polls (`/api/v1/orders/{id}/track?version=V&timeout=…`), each on its
//!    own keep-alive connection, until the server reports them all parked.
//!    A live-location poller parks again at once after every answer with the
//!    `seq` it last saw; a status poller with the version it holds.
//! 4. **Fixes** (timed, `--duration` seconds): driver `d` sends
//!    `PUT /tracking/delivery/{id}/location` with the device's time at
//!    `--rate` per second, its first `d / drivers` of a period after the
//!    start so that the fixes are spread evenly. A driver waits for the
//!    answer before its next fix; a tick that comes while a fix is still in
//!    flight is skipped and counted, so a slow server (or tool) shows as a
//!    rate below the target, never as a queue.
//! 5. **Grace.** Up to `--grace` seconds for every live-location poller to
//!    reach its order's last `seq`.
//! 6. **Trailing writes.** With a counter, the tool waits until the write
//!    interval (`--write-interval`, the server's `--location-write-interval`)
//!    has passed since the last fix, so that the throttle has written every
//!    order's last fix, and reads the counter again. The status polls stay
//!    parked until here.
//!
//! What is counted:
//! - **Wakes.** A live-location answer with `has_update` and a `seq` past the
//!   poller's is a wake of the fix with that `seq` (the driver's `PUT` answer
//!   says which `seq` each fix got). If it is more than one past, the fixes
//!   in between were **skipped**: the channel keeps only the latest fix, so a
//!   poller that was between two polls when two fixes came sees only the
//!   second; allowed by design, and counted. A poller that has not reached
//!   its order's last `seq` after the grace **lost** the fixes it lacks.
//!   Every applied fix is expected once per poller:
//!   delivered + skipped + lost = applied fixes × pollers.
//! - **Wake latency**, from the moment the fix's `PUT` was written to the
//!   socket to the first byte of the poll's answer, and also from the first
//!   byte of the `PUT`'s answer (negative when the server wakes the polls
//!   before it answers the driver, which it does: the answer is written
//!   after the hub is updated).
//! - **Status wakes**: status answers with `has_update: true`. A fix changes
//!   no order, so there must be none; the server's own figures
//!   (`long_polls.polls.woken_by_change`, `status_updates_published`) are
//!   read before and after as a cross-check.
//! - **CPU**: the server's (`--pid`), the tool's own and the whole
//!   machine's, over the fix phase, in cores.
//!
//! The tool runs on one thread, like `loadgen` and `cluster`, so that it
//! takes at most one core; the answers that arrive together are read one
//! after the other, which puts the resolution of these times at about a
//! tenth of a millisecond. `locations table LABEL=FILE…` prints runs side by
//! side and fails if any run woke a status poll or lost a fix.
//! `locations run` fails on the same conditions, after writing its figures.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod common;

use common::figures::{format_value, percentile, run_and_report, Figures};
use common::http::{
    self, connect, read_response, stats, stats_data, stats_value, wait_count, wait_ready, Conn,
};
use common::proc::{cpu_seconds, machine_cpu};
use common::Result;

/// How long one request may take before the tool calls it failed.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// Status answers with `has_update` described on stderr, at most.
const STATUS_WAKES_SHOWN: usize = 5;

#[derive(Parser)]
#[command(about = "Live-location benchmark: driver fixes, location wakes, status polls left alone")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive one run against a running server; write its figures.
    Run(RunArgs),
    /// Print runs side by side (`LABEL=FILE`, one per column); fail if any
    /// woke a status poll or lost a fix.
    Table {
        #[arg(required = true, num_args = 1..)]
        runs: Vec<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where the server listens.
    #[arg(long)]
    addr: SocketAddr,
    /// The server's process id, for its CPU time.
    #[arg(long)]
    pid: Option<u32>,
    /// The server's store (`sqlite:PATH` or `postgres://…`), fresh for this
    /// run: the tool adds a counter of `driver_locations` rows written.
    /// Without it no database figure is measured.
    #[arg(long)]
    database_url: Option<String>,
    /// Drivers, one order each.
    #[arg(long, default_value_t = 1000)]
    drivers: usize,
    /// Live-location polls parked on each order.
    #[arg(long, default_value_t = 5)]
    pollers: usize,
    /// Status polls parked on each order.
    #[arg(long, default_value_t = 1)]
    status_pollers: usize,
    /// Fixes per second each driver sends.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Seconds of fixes.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds the live-location pollers get after the last fix to reach
    /// their orders' last `seq`.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// `timeout` of the live-location polls, in seconds.
    #[arg(long, default_value_t = 120)]
    poll_timeout: u64,
    /// `timeout` of the status polls, in seconds: longer than the run (the
    /// script raises the server's `--max-poll-timeout` to match), so that
    /// any answer is a wake or a failure, not a timeout.
    #[arg(long, default_value_t = 3600)]
    status_timeout: u64,
    /// The server's `--location-write-interval`, in seconds: how long after
    /// the last fix its last write is due.
    #[arg(long, default_value_t = 5.0)]
    write_interval: f64,
    /// Connections creating the orders.
    #[arg(long, default_value_t = 32)]
    setup_connections: usize,
    /// Longest wait for each step (readiness, setup, parking).
    #[arg(long, default_value_t = 60)]
    phase_limit: u64,
    /// Write the figures here, one `key value` per line.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            let mut failures = Vec::new();
            run_and_report(args.out.as_deref(), async {
                let figures = run(&args).await?;
                failures = failed(&figures);
                Ok(figures)
            })?;
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("; ").into())
            }
        }
        Command::Table { runs } => {
            let mut columns = Vec::with_capacity(runs.len());
            for run in &runs {
                let (label, path) = run
                    .split_once('=')
                    .ok_or_else(|| format!("expected LABEL=FILE, got '{run}'"))?;
                columns.push((label.to_owned(), Figures::load(path.as_ref())?));
            }
            print!("{}", table(&columns));
            verdict(&columns)
        }
    }
}

// ---------------------------------------------------------------------------
// Small pieces.

/// Driver `d`'s order.
fn order_id(d: usize) -> String {
    format!("loc-{d}")
}

/// Nanoseconds since `base`, to keep instants small and comparable.
fn nanos_since(base: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(base).as_nanos() as u64
}

/// Milliseconds between two [`nanos_since`] readings, negative if `to` came
/// first.
fn ms_between(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1e6
}

/// Sorts `values` and puts their p50, p99 and max under `prefix`.
fn put_latencies(figures: &mut Figures, prefix: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    figures.put(&format!("{prefix}_p50_ms"), percentile(&values, 50.0));
    figures.put(&format!("{prefix}_p99_ms"), percentile(&values, 99.0));
    figures.put(
        &format!("{prefix}_max_ms"),
        values.last().copied().unwrap_or(f64::NAN),
    );
}

/// A driver's fix, taken now, a little further along its route.
fn fix_body(driver: usize, n: u64) -> String {
    let latitude = 40.0 + (driver % 1000) as f64 * 1e-3 + n as f64 * 1e-5;
    let longitude = -74.0 + (driver / 1000) as f64 * 1e-3 + n as f64 * 1e-5;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!(
        r#"{{"latitude":{latitude:.6},"longitude":{longitude:.6},"accuracy":8.5,"timestamp":"{at}"}}"#
    )
}

/// The parts of a `PUT …/location` answer the tool reads.
#[derive(Deserialize)]
struct ReportAnswer {
    applied: bool,
    data: ReportData,
}

#[derive(Deserialize)]
struct ReportData {
    seq: u64,
}

/// The parts of a live-location answer the tool reads.
#[derive(Deserialize)]
struct LiveAnswer {
    has_update: bool,
    seq: u64,
}

/// The parts of a `/track` answer the tool reads.
#[derive(Deserialize)]
struct TrackAnswer {
    has_update: bool,
    data: TrackData,
}

#[derive(Deserialize)]
struct TrackData {
    status: String,
}

// ---------------------------------------------------------------------------
// The database's count of location rows written.

/// A counter of `driver_locations` rows written, kept by triggers in the
/// server's own database.
enum WriteCounter {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Adds the counter to a SQLite store. An upsert that turns into an update
/// fires only the `UPDATE` trigger, and one whose `WHERE` rejects the row
/// fires neither.
const SQLITE_COUNTER: &str = "
    CREATE TABLE bench_location_writes (n INTEGER NOT NULL);
    INSERT INTO bench_location_writes VALUES (0);
    CREATE TRIGGER bench_location_inserted AFTER INSERT ON driver_locations
        BEGIN UPDATE bench_location_writes SET n = n + 1; END;
    CREATE TRIGGER bench_location_updated AFTER UPDATE ON driver_locations
        BEGIN UPDATE bench_location_writes SET n = n + 1; END;
";

/// The same for PostgreSQL, where the server's figure can also be checked
/// against `pg_stat_user_tables` once it has stopped (the script does).
const POSTGRES_COUNTER: &str = "
    CREATE TABLE bench_location_writes (n BIGINT NOT NULL);
    INSERT INTO bench_location_writes VALUES (0);
    CREATE FUNCTION bench_count_location_write() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN UPDATE bench_location_writes SET n = n + 1; RETURN NULL; END $$;
    CREATE TRIGGER bench_location_written AFTER INSERT OR UPDATE ON driver_locations
        FOR EACH ROW EXECUTE FUNCTION bench_count_location_write();
";

const READ_COUNTER: &str = "SELECT n FROM bench_location_writes";

impl WriteCounter {
    /// Adds the counter to the store at `url`, which the server has
    /// migrated (it answered `/ready`).
    async fn install(url: &str) -> Result<WriteCounter> {
        if url.starts_with("sqlite:") {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.create_if_missing(false))
                .await?;
            sqlx::raw_sql(SQLITE_COUNTER).execute(&pool).await?;
            Ok(WriteCounter::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await?;
            sqlx::raw_sql(POSTGRES_COUNTER).execute(&pool).await?;
            Ok(WriteCounter::Postgres(pool))
        } else {
            Err(format!("--database-url: cannot count writes in '{url}'").into())
        }
    }

    /// Rows written so far.
    async fn read(&self) -> Result<u64> {
        let n: i64 = match self {
            WriteCounter::Sqlite(pool) => sqlx::query_scalar(READ_COUNTER).fetch_one(pool).await?,
            WriteCounter::Postgres(pool) => {
                sqlx::query_scalar(READ_COUNTER).fetch_one(pool).await?
            }
        };
        Ok(u64::try_from(n)?)
    }
}

// ---------------------------------------------------------------------------
// The pollers.

/// Shared by the run and its pollers.
struct Shared {
    addr: SocketAddr,
    /// Live-location polls per order: poller `p` follows order `p / pollers`.
    pollers: usize,
    /// Status polls per order: status poller `s` follows order
    /// `s / status_pollers`.
    status_pollers: usize,
    poll_timeout: u64,
    status_timeout: u64,
    /// The instant every recorded time counts from.
    base: Instant,
    /// Hang up: the run is over.
    stop: CancellationToken,
    /// Each live-location poller's last `seq`, for the grace period.
    progress: Vec<AtomicU64>,
    /// Polls that failed: connect errors, closed connections, non-200
    /// answers, bodies that do not parse.
    poll_errors: AtomicUsize,
    /// Status answers with `has_update: true`. Must stay 0.
    status_wakes: AtomicUsize,
    /// Status answers without a change: their timeout passed.
    status_timeouts: AtomicUsize,
}

impl Shared {
    /// Counts a failed poll and waits a moment, or less if the run ends.
    async fn failed_poll(&self) {
        self.poll_errors.fetch_add(1, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_millis(200), self.stop.cancelled()).await;
    }

    /// The poller's connection, opened if it has none. `None` if it could
    /// not be (counted).
    async fn conn<'a>(
        &self,
        conn: &'a mut Option<(TcpStream, Vec<u8>)>,
        spread: usize,
    ) -> Option<&'a mut (TcpStream, Vec<u8>)> {
        if conn.is_none() {
            match connect(self.addr, spread).await {
                Ok(stream) => *conn = Some((stream, Vec::new())),
                Err(_) => {
                    self.failed_poll().await;
                    return None;
                }
            }
        }
        conn.as_mut()
    }
}

/// What one live-location poller saw.
#[derive(Default)]
struct PollerReport {
    order: usize,
    /// `(seq, first byte of the answer in ns since base)` of each wake.
    wakes: Vec<(u64, u64)>,
    /// Fixes it never saw because a newer one was the first it saw.
    skipped: u64,
    /// Answers with nothing new: the poll's timeout passed.
    timeouts: usize,
    /// Answers with an update older than the poller's `seq` (must be 0).
    backwards: usize,
    /// The last `seq` it saw.
    last: u64,
}

/// Live-location poller `p`, on one keep-alive connection, until the stop.
async fn location_poller(shared: Arc<Shared>, p: usize) -> PollerReport {
    let order = p / shared.pollers;
    let id = order_id(order);
    let mut report = PollerReport {
        order,
        ..PollerReport::default()
    };
    let mut conn = None;
    let mut last = 0;
    while !shared.stop.is_cancelled() {
        let Some((stream, buf)) = shared.conn(&mut conn, p).await else {
            continue;
        };
        let path = format!(
            "/tracking/orders/{id}/live-location?after={last}&timeout={}",
            shared.poll_timeout
        );
        if stream
            .write_all(&http::get(&path, shared.addr))
            .await
            .is_err()
        {
            conn = None;
            shared.failed_poll().await;
            continue;
        }
        let answer = tokio::select! {
            answer = read_response(stream, buf) => answer,
            () = shared.stop.cancelled() => break,
        };
        let answer = match answer {
            Ok(answer) if answer.status == 200 => answer,
            Ok(_) => {
                shared.failed_poll().await;
                continue;
            }
            Err(_) => {
                conn = None;
                shared.failed_poll().await;
                continue;
            }
        };
        let Ok(live) = serde_json::from_slice::<LiveAnswer>(&answer.body) else {
            shared.failed_poll().await;
            continue;
        };
        if !live.has_update {
            report.timeouts += 1;
        } else if live.seq > last {
            report.skipped += live.seq - last - 1;
            report
                .wakes
                .push((live.seq, nanos_since(shared.base, answer.first_byte)));
            last = live.seq;
            shared.progress[p].store(last, Ordering::Relaxed);
        } else {
            // Parking again with `after=last` would answer at once forever.
            report.backwards += 1;
            last = live.seq;
        }
    }
    report.last = last;
    report
}

/// Status poller `s`, parked with its order's `version`, until the stop.
async fn status_poller(shared: Arc<Shared>, s: usize, mut version: u64) {
    let order = s / shared.status_pollers;
    let id = order_id(order);
    let mut conn = None;
    while !shared.stop.is_cancelled() {
        // Spread over other source addresses than the location pollers'.
        let Some((stream, buf)) = shared.conn(&mut conn, s + 7).await else {
            continue;
        };
        let request = http::track(shared.addr, &id, version, shared.status_timeout);
        if stream.write_all(&request).await.is_err() {
            conn = None;
            shared.failed_poll().await;
            continue;
        }
        let answer = tokio::select! {
            answer = read_response(stream, buf) => answer,
            () = shared.stop.cancelled() => break,
        };
        let (answer, track) = match answer.map(|answer| {
            let track = serde_json::from_slice::<TrackAnswer>(&answer.body);
            (answer, track)
        }) {
            Ok((answer, Ok(track))) if answer.status == 200 => (answer, track),
            Ok(_) => {
                shared.failed_poll().await;
                continue;
            }
            Err(_) => {
                conn = None;
                shared.failed_poll().await;
                continue;
            }
        };
        if !track.has_update {
            shared.status_timeouts.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let seen = answer.etag_version().unwrap_or(version);
        if shared.status_wakes.fetch_add(1, Ordering::Relaxed) < STATUS_WAKES_SHOWN {
            eprintln!(
                "  STATUS WAKE: order {id} answered version {seen} ({}) to a poll at version {version}",
                track.data.status
            );
        }
        version = seen.max(version);
    }
}

// ---------------------------------------------------------------------------
// The drivers.

/// One fix the server took.
struct FixRecord {
    seq: u64,
    /// When its `PUT` was written and when the answer's first byte came,
    /// in ns since base.
    sent: u64,
    answered: u64,
}

/// What one driver did.
#[derive(Default)]
struct DriverReport {
    order: usize,
    /// Fixes the server took (`applied: true`), in order.
    fixes: Vec<FixRecord>,
    /// Fixes sent.
    sent: usize,
    /// Answered `applied: false` (must be 0: every fix is newer).
    not_applied: usize,
    /// Connect errors, hang-ups, non-200 answers, answers past
    /// [`REQUEST_LIMIT`].
    failures: usize,
    /// Ticks that came while the last fix was still in flight.
    skipped_ticks: usize,
    /// How late each fix was sent after its tick, in ms.
    late_ms: Vec<f64>,
    /// Each fix's `PUT` time, written to first byte, in ms.
    put_ms: Vec<f64>,
    /// First byte of the last answer, ns since base.
    last_answer: u64,
}

/// Driver `d`: a fix at each tick from `first` on, every `period`, until
/// `end`, on `conn` (reopened if it breaks).
async fn driver(
    addr: SocketAddr,
    base: Instant,
    d: usize,
    mut conn: Option<(TcpStream, Vec<u8>)>,
    first: Instant,
    period: Duration,
    end: Instant,
) -> DriverReport {
    let id = order_id(d);
    let path = format!("/tracking/delivery/{id}/location");
    let mut report = DriverReport {
        order: d,
        ..DriverReport::default()
    };
    // Tick `k` is due at `first + k * period`; the last is before `end`.
    let period_secs = period.as_secs_f64();
    let ticks = (end.saturating_duration_since(first).as_secs_f64() / period_secs).ceil() as u64;
    let mut k = 0;
    while k < ticks {
        let due = first + period.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        report.late_ms.push(due.elapsed().as_secs_f64() * 1e3);
        report.sent += 1;
        'fix: {
            if conn.is_none() {
                match connect(addr, d + 13).await {
                    Ok(stream) => conn = Some((stream, Vec::new())),
                    Err(_) => {
                        report.failures += 1;
                        break 'fix;
                    }
                }
            }
            let Some((stream, buf)) = &mut conn else {
                break 'fix;
            };
            let request = http::put(&path, addr, &fix_body(d, report.sent as u64));
            let sent = Instant::now();
            let answer = tokio::time::timeout(REQUEST_LIMIT, async {
                stream.write_all(&request).await?;
                read_response(stream, buf).await
            })
            .await;
            let answer = match answer {
                Ok(Ok(answer)) if answer.status == 200 => answer,
                Ok(Ok(answer)) => {
                    report.failures += 1;
                    eprintln!(
                        "  PUT {path}: HTTP {}: {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    );
                    break 'fix;
                }
                Ok(Err(_)) | Err(_) => {
                    report.failures += 1;
                    conn = None;
                    break 'fix;
                }
            };
            report.put_ms.push(ms_between(
                nanos_since(base, sent),
                nanos_since(base, answer.first_byte),
            ));
            report.last_answer = nanos_since(base, answer.first_byte);
            match serde_json::from_slice::<ReportAnswer>(&answer.body) {
                Ok(taken) if taken.applied => report.fixes.push(FixRecord {
                    seq: taken.data.seq,
                    sent: nanos_since(base, sent),
                    answered: nanos_since(base, answer.first_byte),
                }),
                Ok(_) => report.not_applied += 1,
                Err(_) => report.failures += 1,
            }
        }
        // The next tick not yet passed: those that came while this fix was
        // in flight are skipped.
        let next = ((first.elapsed().as_secs_f64() / period_secs).ceil() as u64).max(k + 1);
        report.skipped_ticks += (next.min(ticks) - k - 1) as usize;
        k = next;
    }
    report
}

// ---------------------------------------------------------------------------
// Setup.

/// Creates every order with its driver, `connections` at a time; returns
/// each order's version after the assignment.
async fn create_orders(addr: SocketAddr, drivers: usize, connections: usize) -> Result<Vec<u64>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..connections.clamp(1, drivers) {
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut versions = Vec::new();
            loop {
                let d = next.fetch_add(1, Ordering::Relaxed);
                if d >= drivers {
                    return Ok::<_, common::Error>(versions);
                }
                let id = order_id(d);
                let init = conn
                    .send(&http::post(
                        &format!("/tracking/orders/{id}/init"),
                        addr,
                        &format!(
                            r#"{{"store_id":"store-{}","customer_id":"c-{d}","delivery_provider":"internal"}}"#,
                            d % 50
                        ),
                    ))
                    .await?;
                if init.status != 201 {
                    return Err(format!(
                        "init {id}: HTTP {}: {}",
                        init.status,
                        String::from_utf8_lossy(&init.body)
                    )
                    .into());
                }
                let assign = conn
                    .send(&http::post(
                        &format!("/tracking/delivery/{id}/assign"),
                        addr,
                        &format!(
                            r#"{{"driver":{{"driver_id":"drv-{d}","name":"Driver {d}","phone":"+1-555-{:04}","vehicle_type":"scooter"}}}}"#,
                            d % 10_000
                        ),
                    ))
                    .await?;
                if assign.status != 200 {
                    return Err(format!(
                        "assign {id}: HTTP {}: {}",
                        assign.status,
                        String::from_utf8_lossy(&assign.body)
                    )
                    .into());
                }
                versions.push((d, assign.etag_version()?));
            }
        });
    }
    let mut versions = vec![0; drivers];
    while let Some(done) = workers.join_next().await {
        for (d, version) in done?? {
            versions[d] = version;
        }
    }
    Ok(versions)
}

/// The counts the run compares before and after, from `/system/stats`.
struct ServerCounts {
    status_woken: f64,
    status_updates: f64,
    status_published: f64,
    location_updates: f64,
    location_woken: f64,
}

impl ServerCounts {
    async fn read(conn: &mut Conn, addr: SocketAddr) -> Result<ServerCounts> {
        let stats = stats(conn, addr).await?;
        Ok(ServerCounts {
            status_woken: stats_value(&stats, "/long_polls/polls/woken_by_change")?,
            status_updates: stats_value(&stats, "/long_polls/polls/updates")?,
            status_published: stats_value(&stats, "/long_polls/status_updates_published")?,
            location_updates: stats_value(&stats, "/live_locations/polls/updates")?,
            location_woken: stats_value(&stats, "/live_locations/polls/woken_by_change")?,
        })
    }
}

/// CPU seconds so far: the server's (if known), the tool's, the machine's.
struct Cpu {
    server: f64,
    tool: f64,
    machine_busy: f64,
    machine_total: f64,
}

impl Cpu {
    fn read(pid: Option<u32>) -> Result<Cpu> {
        let server = match pid {
            Some(pid) => {
                let (user, system) = cpu_seconds(pid)?;
                user + system
            }
            None => f64::NAN,
        };
        let (user, system) = cpu_seconds(std::process::id())?;
        let machine = machine_cpu()?;
        Ok(Cpu {
            server,
            tool: user + system,
            machine_busy: machine.busy,
            machine_total: machine.total,
        })
    }
}

// ---------------------------------------------------------------------------
// The run.

async fn run(args: &RunArgs) -> Result<Figures> {
    if args.drivers == 0 || args.pollers == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        return Err("--drivers, --pollers and --rate must be above 0".into());
    }
    let addr = args.addr;
    let limit = Duration::from_secs(args.phase_limit);
    let mut figures = Figures::default();
    figures.put("drivers", args.drivers as f64);
    figures.put("pollers", args.pollers as f64);
    figures.put("status_pollers", args.status_pollers as f64);
    figures.put("target_fixes_per_sec", args.drivers as f64 * args.rate);
    figures.put("duration_secs", args.duration as f64);
    figures.put("write_interval_secs", args.write_interval);

    // 1. Ready, and the write counter.
    wait_ready(addr, &http::get("/api/v1/ready", addr), limit).await?;
    let counter = match &args.database_url {
        Some(url) => Some(WriteCounter::install(url).await?),
        None => None,
    };
    let mut control = Conn::open(addr).await?;

    // 2. Setup.
    eprintln!("setup: {} orders with a driver", args.drivers);
    let setup = Instant::now();
    let versions = create_orders(addr, args.drivers, args.setup_connections).await?;
    figures.put("setup_secs", setup.elapsed().as_secs_f64());
    let mut driver_conns = Vec::with_capacity(args.drivers);
    for d in 0..args.drivers {
        driver_conns.push(Some((connect(addr, d + 13).await?, Vec::new())));
    }

    // 3. Park.
    let location_polls = args.drivers * args.pollers;
    let status_polls = args.drivers * args.status_pollers;
    let shared = Arc::new(Shared {
        addr,
        pollers: args.pollers,
        status_pollers: args.status_pollers.max(1),
        poll_timeout: args.poll_timeout,
        status_timeout: args.status_timeout,
        base: Instant::now(),
        stop: CancellationToken::new(),
        progress: (0..location_polls).map(|_| AtomicU64::new(0)).collect(),
        poll_errors: AtomicUsize::new(0),
        status_wakes: AtomicUsize::new(0),
        status_timeouts: AtomicUsize::new(0),
    });
    eprintln!("park: {location_polls} live-location and {status_polls} status polls");
    let mut polling = JoinSet::new();
    for p in 0..location_polls {
        polling.spawn(location_poller(Arc::clone(&shared), p));
    }
    let mut status_polling = JoinSet::new();
    for s in 0..status_polls {
        let version = versions[s / args.status_pollers];
        status_polling.spawn(status_poller(Arc::clone(&shared), s, version));
    }
    let parked_count = |response: &http::Response| -> Result<usize> {
        Ok(stats_value(&stats_data(response)?, "/long_polls/parked_now")? as usize)
    };
    let all = location_polls + status_polls;
    if wait_count(
        addr,
        &http::get(http::STATS_PATH, addr),
        parked_count,
        all,
        limit,
    )
    .await?
    .is_none()
    {
        return Err(format!("not all {all} polls parked within {limit:?}").into());
    }
    figures.put("parked", all as f64);

    // 4. Fixes.
    let before = ServerCounts::read(&mut control, addr).await?;
    let rows_before = match &counter {
        Some(counter) => counter.read().await?,
        None => 0,
    };
    let cpu_before = Cpu::read(args.pid)?;
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs(args.duration);
    eprintln!(
        "fixes: {} drivers x {} per second for {} s",
        args.drivers, args.rate, args.duration
    );
    let mut driving = JoinSet::new();
    for (d, conn) in driver_conns.into_iter().enumerate() {
        let first = start + period.mul_f64(d as f64 / args.drivers as f64);
        driving.spawn(driver(addr, shared.base, d, conn, first, period, end));
    }
    let mut drivers = Vec::with_capacity(args.drivers);
    while let Some(report) = driving.join_next().await {
        drivers.push(report?);
    }
    let cpu_after = Cpu::read(args.pid)?;
    // From the first tick to the last answer: a driver also waits out its
    // last period before it knows it is done.
    let last_answer = drivers.iter().map(|r| r.last_answer).max().unwrap_or(0);
    let window = ms_between(nanos_since(shared.base, start), last_answer) / 1e3;
    let rows_in_window = match &counter {
        Some(counter) => Some(counter.read().await? - rows_before),
        None => None,
    };

    // 5. Grace: every poller to its order's last seq.
    let last_seq: Vec<u64> = {
        let mut last = vec![0; args.drivers];
        for report in &drivers {
            last[report.order] = report.fixes.iter().map(|f| f.seq).max().unwrap_or(0);
        }
        last
    };
    let behind = || {
        (0..location_polls)
            .filter(|&p| shared.progress[p].load(Ordering::Relaxed) < last_seq[p / args.pollers])
            .count()
    };
    let grace = Instant::now();
    while behind() > 0 && grace.elapsed() < Duration::from_secs(args.grace) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    figures.put("grace_secs", grace.elapsed().as_secs_f64());
    figures.put("pollers_behind", behind() as f64);

    // 6. The throttle's last writes, then hang up.
    let last_fix = shared.base + Duration::from_nanos(last_answer);
    let rows_total = match &counter {
        Some(counter) => {
            let due = last_fix + Duration::from_secs_f64(args.write_interval + 1.0);
            tokio::time::sleep_until(due.into()).await;
            Some(counter.read().await? - rows_before)
        }
        None => None,
    };
    let after = ServerCounts::read(&mut control, addr).await?;
    shared.stop.cancel();
    let mut pollers = Vec::with_capacity(location_polls);
    while let Some(report) = polling.join_next().await {
        pollers.push(report?);
    }
    while let Some(done) = status_polling.join_next().await {
        done?;
    }

    // The fixes.
    let sent: usize = drivers.iter().map(|r| r.sent).sum();
    let applied: usize = drivers.iter().map(|r| r.fixes.len()).sum();
    figures.put("fix_window_secs", window);
    figures.put("fixes_sent", sent as f64);
    figures.put("fixes_applied", applied as f64);
    figures.put("fixes_per_sec", applied as f64 / window);
    figures.put(
        "fixes_not_applied",
        drivers.iter().map(|r| r.not_applied).sum::<usize>() as f64,
    );
    figures.put(
        "fix_failures",
        drivers.iter().map(|r| r.failures).sum::<usize>() as f64,
    );
    figures.put(
        "ticks_skipped",
        drivers.iter().map(|r| r.skipped_ticks).sum::<usize>() as f64,
    );
    put_latencies(
        &mut figures,
        "fix",
        drivers
            .iter()
            .flat_map(|r| r.put_ms.iter().copied())
            .collect(),
    );
    put_latencies(
        &mut figures,
        "send_late",
        drivers
            .iter()
            .flat_map(|r| r.late_ms.iter().copied())
            .collect(),
    );

    // The wakes, each matched with the fix that made its seq.
    let fixes: HashMap<(usize, u64), &FixRecord> = drivers
        .iter()
        .flat_map(|r| r.fixes.iter().map(move |f| ((r.order, f.seq), f)))
        .collect();
    let (mut from_sent, mut from_answer) = (Vec::new(), Vec::new());
    let (mut unmatched, mut skipped, mut timeouts, mut backwards, mut lost) = (0, 0, 0, 0, 0);
    for report in &pollers {
        skipped += report.skipped;
        timeouts += report.timeouts;
        backwards += report.backwards;
        lost += last_seq[report.order].saturating_sub(report.last);
        for &(seq, at) in &report.wakes {
            match fixes.get(&(report.order, seq)) {
                Some(fix) => {
                    from_sent.push(ms_between(fix.sent, at));
                    from_answer.push(ms_between(fix.answered, at));
                }
                None => unmatched += 1,
            }
        }
    }
    let delivered = from_sent.len() + unmatched;
    figures.put("wakes_expected", (applied * args.pollers) as f64);
    figures.put("wakes_delivered", delivered as f64);
    figures.put("wakes_skipped", skipped as f64);
    figures.put("wakes_lost", lost as f64);
    figures.put("wakes_unmatched", unmatched as f64);
    figures.put("polls_backwards", backwards as f64);
    figures.put("location_poll_timeouts", timeouts as f64);
    put_latencies(&mut figures, "wake", from_sent);
    put_latencies(&mut figures, "wake_ack", from_answer);
    figures.put(
        "poll_errors",
        shared.poll_errors.load(Ordering::Relaxed) as f64,
    );

    // Status polls, and the server's own counts.
    figures.put(
        "status_wakes",
        shared.status_wakes.load(Ordering::Relaxed) as f64,
    );
    figures.put(
        "status_timeouts",
        shared.status_timeouts.load(Ordering::Relaxed) as f64,
    );
    figures.put(
        "server_status_woken",
        after.status_woken - before.status_woken,
    );
    figures.put(
        "server_status_updates",
        after.status_updates - before.status_updates,
    );
    figures.put(
        "server_status_published",
        after.status_published - before.status_published,
    );
    figures.put(
        "server_location_updates",
        after.location_updates - before.location_updates,
    );
    figures.put(
        "server_location_woken",
        after.location_woken - before.location_woken,
    );

    // The database.
    if let (Some(in_window), Some(total)) = (rows_in_window, rows_total) {
        figures.put("db_rows_in_window", in_window as f64);
        figures.put("db_rows_per_sec", in_window as f64 / window);
        figures.put("db_rows_total", total as f64);
        figures.put("db_rows_per_fix", total as f64 / applied.max(1) as f64);
        figures.put(
            "db_rows_steady_bound_per_sec",
            args.drivers as f64 / args.write_interval,
        );
        // Each order's first fix is written at once, then at most one
        // write per interval.
        figures.put(
            "db_rows_bound_per_sec",
            args.drivers as f64 * (1.0 + (window / args.write_interval).floor()) / window,
        );
    }

    // CPU over the fix phase, in cores.
    figures.put(
        "server_cores",
        (cpu_after.server - cpu_before.server) / window,
    );
    figures.put("tool_cores", (cpu_after.tool - cpu_before.tool) / window);
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    figures.put(
        "machine_busy_cores",
        (cpu_after.machine_busy - cpu_before.machine_busy)
            / (cpu_after.machine_total - cpu_before.machine_total)
            * cores,
    );
    Ok(figures)
}

/// Why a run failed: a status poll woke, or a fix was lost or unknown.
fn failed(figures: &Figures) -> Vec<String> {
    let mut failures = Vec::new();
    for (key, what) in [
        ("status_wakes", "status polls woken"),
        ("server_status_woken", "status polls woken (server's count)"),
        ("wakes_lost", "location wakes lost"),
        ("wakes_unmatched", "location wakes matching no fix"),
        ("polls_backwards", "location answers going backwards"),
    ] {
        let value = figures.get(key);
        if value != 0.0 {
            failures.push(format!("{what}: {}", format_value(value)));
        }
    }
    failures
}

// ---------------------------------------------------------------------------
// The table.

/// One row: label and key in the result files.
struct Row(&'static str, &'static str);

#[rustfmt::skip]
const ROWS: &[Row] = &[
    Row("drivers (one order each)", "drivers"),
    Row("live-location polls parked per order", "pollers"),
    Row("status polls parked per order", "status_pollers"),
    Row("polls parked in all", "parked"),
    Row("fix phase (s)", "fix_window_secs"),
    Row("fixes per second, target", "target_fixes_per_sec"),
    Row("FIXES PER SECOND ABSORBED (200, applied)", "fixes_per_sec"),
    Row("fixes sent", "fixes_sent"),
    Row("fixes applied", "fixes_applied"),
    Row("fix failures (errors, non-200)", "fix_failures"),
    Row("fixes not applied (must be 0)", "fixes_not_applied"),
    Row("ticks skipped (last fix still in flight)", "ticks_skipped"),
    Row("fix sent late after its tick p99 (ms)", "send_late_p99_ms"),
    Row("fix PUT latency p50 (ms)", "fix_p50_ms"),
    Row("fix PUT latency p99 (ms)", "fix_p99_ms"),
    Row("fix PUT latency max (ms)", "fix_max_ms"),
    Row("location wakes expected (fixes x polls)", "wakes_expected"),
    Row("location wakes delivered", "wakes_delivered"),
    Row("  skipped (a newer fix came first; by design)", "wakes_skipped"),
    Row("  LOST (poller short of the last fix)", "wakes_lost"),
    Row("  matching no fix (must be 0)", "wakes_unmatched"),
    Row("  server's count of location updates", "server_location_updates"),
    Row("  of which woke a parked poll", "server_location_woken"),
    Row("LOCATION WAKE p50 (ms after the PUT was sent)", "wake_p50_ms"),
    Row("LOCATION WAKE p99 (ms after the PUT was sent)", "wake_p99_ms"),
    Row("location wake max (ms after the PUT was sent)", "wake_max_ms"),
    Row("location wake p50 (ms after the PUT's answer)", "wake_ack_p50_ms"),
    Row("location wake p99 (ms after the PUT's answer)", "wake_ack_p99_ms"),
    Row("location poll timeouts", "location_poll_timeouts"),
    Row("poll errors", "poll_errors"),
    Row("STATUS POLLS WOKEN (must be 0)", "status_wakes"),
    Row("  server: status polls woken by a change", "server_status_woken"),
    Row("  server: status versions published", "server_status_published"),
    Row("  status poll timeouts", "status_timeouts"),
    Row("location write interval (s)", "write_interval_secs"),
    Row("DB ROWS WRITTEN PER SECOND (fix phase)", "db_rows_per_sec"),
    Row("  throttle's bound for this phase", "db_rows_bound_per_sec"),
    Row("  throttle's steady bound: orders / interval", "db_rows_steady_bound_per_sec"),
    Row("  rows written in the fix phase", "db_rows_in_window"),
    Row("  rows written, with the throttle's last", "db_rows_total"),
    Row("  rows per applied fix", "db_rows_per_fix"),
    Row("  rows per pg_stat_user_tables (check)", "pg_stat_rows"),
    Row("orders read by index, whole run (pg_stat)", "pg_orders_idx_scans"),
    Row("server CPU (cores, fix phase)", "server_cores"),
    Row("tool CPU (cores, fix phase)", "tool_cores"),
    Row("machine busy (cores, fix phase)", "machine_busy_cores"),
    Row("setup (s)", "setup_secs"),
];

/// The runs side by side, one column each.
fn table(columns: &[(String, Figures)]) -> String {
    let w = ROWS
        .iter()
        .map(|Row(label, _)| label.len())
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = columns
        .iter()
        .map(|(label, _)| label.len().max(9))
        .collect();
    let mut out = String::new();
    let _ = write!(out, "| {:<w$} |", "figure");
    for ((label, _), cw) in columns.iter().zip(&widths) {
        let _ = write!(out, " {label:>cw$} |");
    }
    let _ = write!(out, "\n|{}|", "-".repeat(w + 2));
    for cw in &widths {
        let _ = write!(out, "{}|", "-".repeat(cw + 2));
    }
    out.push('\n');
    for Row(label, key) in ROWS {
        let _ = write!(out, "| {label:<w$} |");
        for ((_, figures), cw) in columns.iter().zip(&widths) {
            let _ = write!(out, " {:>cw$} |", format_value(figures.get(key)));
        }
        out.push('\n');
    }
    out
}

/// The issue's must-be-zero figures per run, warnings, and an error if any
/// run failed.
fn verdict(columns: &[(String, Figures)]) -> Result<()> {
    let mut failed_runs = Vec::new();
    println!();
    for (label, figures) in columns {
        let failures = failed(figures);
        let target = figures.get("target_fixes_per_sec");
        let absorbed = figures.get("fixes_per_sec");
        println!(
            "{label}: {} fixes/s of {} targeted ({:.0}%); status polls woken {}; location wakes lost {}: {}",
            format_value(absorbed),
            format_value(target),
            absorbed / target * 100.0,
            format_value(figures.get("status_wakes")),
            format_value(figures.get("wakes_lost")),
            if failures.is_empty() { "ok" } else { "FAILED" },
        );
        if absorbed < 0.95 * target {
            println!(
                "  WARNING: below 95% of the target: see ticks skipped, fix failures, and the CPU rows"
            );
        }
        if figures.get("tool_cores") > 0.9 {
            println!("  NOTE: the tool used most of a core: it may have set the pace");
        }
        for failure in &failures {
            println!("  FAILED: {failure}");
        }
        if !failures.is_empty() {
            failed_runs.push(label.clone());
        }
    }
    if failed_runs.is_empty() {
        Ok(())
    } else {
        Err(format!("failed runs: {}", failed_runs.join(", ")).into())
    }
}
