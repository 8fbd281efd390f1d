//! Write benchmark behind `bench/writes.sh`: status changes per second and
//! `PUT` latency with many concurrent writers against one freshly started
//! server, so the stores (`memory:`, SQLite, PostgreSQL) can be compared on
//! the same build, with and without long polls parked on the orders being
//! changed.
//!
//! `writebench run` drives one server through four phases:
//!
//! 1. **Setup** (not timed). Each of `--writers` keep-alive connections
//!    creates its `--orders-per-writer` orders (`POST /api/v1/orders`).
//!    Writer `w` owns orders `w`, `w + writers`, `w + 2·writers`, …
//! 2. **Park** (not timed; only with `--polls`). That many long polls, spread
//!    evenly over the orders (poll `j` on order `j·orders/polls`, at most one
//!    per order, so every writer's orders carry their share), each
//!    `GET …/track?version=1&timeout=120` on its own connection; the phase
//!    ends when the server reports them all parked.
//! 3. **Write** (timed). The writers start together. Each walks its orders
//!    step by step: every one of them to `preparing`, then every one to
//!    `ready`, `picked_up`, `delivered`, one `PUT …/status` at a time on its
//!    connection: four changes per order, each a real change (a change
//!    counts only if it is answered 200 with the next version as `ETag`).
//!    Each poller follows its order like a phone would: when answered it
//!    polls again at once, on the same connection, with the version it got,
//!    until the order is delivered. A writer goes through its other orders
//!    between two changes of one order, so the poll is parked again by then:
//!    every change of a polled order wakes a parked poll.
//! 4. **Check** (not timed). Every poller got to `delivered`; the server's
//!    own counters say how many parked polls a change woke; the store says
//!    every order is delivered.
//!
//! Over the write phase it also reads the CPU time of the server, of the
//! database's processes (`postgres`; zero for the other stores), of itself,
//! and of the whole machine, so a reader can tell what the rate was bound
//! by. The tool runs on one thread, like `loadgen`, so it takes at most one
//! core. `writebench table` prints the medians of several rounds for the
//! three stores side by side with the ratios to `memory:`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout_at;

mod common;

use common::figures::{format_value, median, percentile, ratio, run_and_report, Figures};
use common::http::{
    self, connect, read_response, stats, stats_data, stats_value, wait_count, wait_ready, Conn,
    Response,
};
use common::proc::{command_cpu_seconds, cpu_seconds, machine_cpu, MachineCpu};
use common::Result;

/// The statuses every order is walked through, in order, from `confirmed`.
const STEPS: [&str; 4] = http::STATUS_STEPS;
/// An order's version once delivered: created at 1, one more per step.
const FINAL_VERSION: u64 = 1 + STEPS.len() as u64;
/// The target of the issue: SQLite at least this fraction of `memory:`'s
/// changes per second.
const SQLITE_TARGET: f64 = 0.8;

#[derive(Parser)]
#[command(about = "Write benchmark: status changes per second against each store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive one server through setup, park, write, check; write its figures.
    Run(RunArgs),
    /// Print the stores' result files side by side with the ratios to memory.
    Table {
        /// Results on `memory:`, one file per round.
        #[arg(long, num_args = 1..)]
        memory: Vec<PathBuf>,
        /// Results on SQLite, one file per round, in the same order.
        #[arg(long, num_args = 1..)]
        sqlite: Vec<PathBuf>,
        /// Results on PostgreSQL, one file per round, in the same order.
        #[arg(long, num_args = 1..)]
        postgres: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where the server listens.
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// The server's process id, for its CPU time.
    #[arg(long)]
    pid: u32,
    /// Concurrent writers, each on its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Orders each writer creates and walks to delivered (four changes each).
    #[arg(long, default_value_t = 128)]
    orders_per_writer: usize,
    /// Long polls parked on the orders before the writers start (at most one
    /// per order); 0 for none.
    #[arg(long, default_value_t = 0)]
    polls: usize,
    /// Long-poll wait requested, in seconds; it must outlast the whole run.
    #[arg(long, default_value_t = 120)]
    poll_timeout: u64,
    /// Longest wait for each phase, in seconds.
    #[arg(long, default_value_t = 60)]
    phase_limit: u64,
    /// Write the figures here, one `key value` per line.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run_and_report(args.out.as_deref(), run(&args)),
        Command::Table {
            memory,
            sqlite,
            postgres,
        } => {
            let load = |paths: &[PathBuf]| -> Result<Vec<Figures>> {
                paths.iter().map(|path| Figures::load(path)).collect()
            };
            print!(
                "{}",
                table(&load(&memory)?, &load(&sqlite)?, &load(&postgres)?)
            );
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// The run.

/// Order `i`'s id.
fn order_id(i: usize) -> String {
    format!("w{i}")
}

/// The orders writer `w` owns.
fn owned(w: usize, writers: usize, orders: usize) -> impl Iterator<Item = usize> {
    (w..orders).step_by(writers)
}

/// What one writer did in the write phase.
#[derive(Default)]
struct WriterReport {
    /// Milliseconds from sending each change to its whole answer.
    latencies_ms: Vec<f64>,
    /// Changes not made: a non-2xx answer, a version other than the next,
    /// a broken connection, or the phase limit passing first.
    failures: usize,
    done_at: Option<Instant>,
}

/// One writer: change each owned order to `STEPS[0]`, then each to
/// `STEPS[1]`, and so on, one request at a time.
async fn writer(
    mut conn: Conn,
    addr: std::net::SocketAddr,
    ids: Vec<String>,
    mut start: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
) -> WriterReport {
    let mut report = WriterReport {
        latencies_ms: Vec::with_capacity(ids.len() * STEPS.len()),
        ..WriterReport::default()
    };
    let planned = ids.len() * STEPS.len();
    if start.wait_for(|go| *go).await.is_err() {
        report.failures = planned;
        return report;
    }
    'steps: for (step, status) in STEPS.iter().enumerate() {
        let expected = step as u64 + 2;
        for id in &ids {
            let request = http::put_status(addr, id, status);
            let sent = Instant::now();
            let answer = match timeout_at(deadline, conn.send(&request)).await {
                Ok(Ok(answer)) => answer,
                // A broken connection or the limit: the rest is not done.
                Ok(Err(_)) | Err(_) => break 'steps,
            };
            let at = Instant::now();
            let changed =
                (200..300).contains(&answer.status) && answer.etag_version().ok() == Some(expected);
            if changed {
                report.latencies_ms.push((at - sent).as_secs_f64() * 1000.0);
            }
        }
    }
    report.failures = planned - report.latencies_ms.len();
    report.done_at = Some(Instant::now());
    report
}

/// What one poller saw.
#[derive(Default)]
struct PollerReport {
    /// Answers with a newer version than the poll held.
    updates: usize,
    /// It followed its order to the final version.
    finished: bool,
    /// A non-200 answer, a broken connection, or the limit passing.
    failed: bool,
}

/// One phone following order `i` from version 1 to delivered over one
/// keep-alive connection.
async fn poller(
    addr: std::net::SocketAddr,
    i: usize,
    poll_timeout: u64,
    deadline: tokio::time::Instant,
) -> PollerReport {
    let mut report = PollerReport::default();
    let id = order_id(i);
    let follow = async {
        let mut stream = connect(addr, i).await?;
        let mut buf = Vec::new();
        let mut version = 1;
        while version < FINAL_VERSION {
            stream
                .write_all(&http::track(addr, &id, version, poll_timeout))
                .await?;
            let answer: Response = read_response(&mut stream, &mut buf).await?;
            if answer.status != 200 {
                return Err(format!("order {id}: HTTP {}", answer.status).into());
            }
            let next = answer.etag_version()?;
            if next > version {
                report.updates += 1;
                version = next;
            }
        }
        Ok::<_, common::Error>(())
    };
    match timeout_at(deadline, follow).await {
        Ok(Ok(())) => report.finished = true,
        Ok(Err(_)) | Err(_) => report.failed = true,
    }
    report
}

async fn run(args: &RunArgs) -> Result<Figures> {
    let addr = args.addr;
    let limit = Duration::from_secs(args.phase_limit);
    let orders = args.writers * args.orders_per_writer;
    let polls = args.polls.min(orders);
    let planned = orders * STEPS.len();
    let mut figures = Figures::default();
    figures.put("writers", args.writers as f64);
    figures.put("orders", orders as f64);
    figures.put("polls", polls as f64);
    figures.put("changes_planned", planned as f64);

    let stats_request = http::get(http::STATS_PATH, addr);
    wait_ready(addr, &stats_request, limit).await?;
    // Whoever answers must be the server we were told of, or we would write
    // to someone else's.
    if cpu_seconds(args.pid).is_err() {
        return Err(format!("no process {} (did the server start?)", args.pid).into());
    }

    // 1. Setup: each writer creates its orders on its own connection.
    eprintln!("setup: {orders} orders over {} writers", args.writers);
    let mut setup = JoinSet::new();
    for w in 0..args.writers {
        let ids: Vec<String> = owned(w, args.writers, orders).map(order_id).collect();
        setup.spawn(async move {
            let mut conn = Conn::open(addr).await?;
            for id in &ids {
                let answer = conn.send(&http::create_order(addr, id)).await?;
                if answer.status != 201 {
                    return Err(format!("creating order {id}: HTTP {}", answer.status).into());
                }
            }
            Ok::<_, common::Error>((w, conn, ids))
        });
    }
    let mut writers: Vec<Option<(Conn, Vec<String>)>> = (0..args.writers).map(|_| None).collect();
    while let Some(done) = setup.join_next().await {
        let (w, conn, ids) = done??;
        writers[w] = Some((conn, ids));
    }

    // 2. Park one poll on each of `polls` orders spread over all of them.
    let mut control = Conn::open(addr).await?;
    let deadline = tokio::time::Instant::now() + 3 * limit;
    let mut pollers = JoinSet::new();
    if polls > 0 {
        eprintln!("park: {polls} long polls");
        for j in 0..polls {
            let i = j * orders / polls;
            pollers.spawn(poller(addr, i, args.poll_timeout, deadline));
        }
        let count = |response: &Response| -> Result<usize> {
            Ok(stats_value(&stats_data(response)?, "/long_polls/parked_now")? as usize)
        };
        if wait_count(addr, &stats_request, count, polls, limit)
            .await?
            .is_none()
        {
            return Err("not every poll parked; see above".into());
        }
    }
    let before = stats(&mut control, addr).await?;
    figures.put(
        "polls_parked",
        stats_value(&before, "/long_polls/parked_now")?,
    );

    // 3. Write: every writer at once.
    eprintln!("write: {planned} changes over {} writers", args.writers);
    let (start_tx, start_rx) = watch::channel(false);
    let mut running = JoinSet::new();
    for slot in writers {
        let (conn, ids) = slot.ok_or("a writer's setup is missing")?;
        running.spawn(writer(
            conn,
            addr,
            ids,
            start_rx.clone(),
            tokio::time::Instant::now() + limit,
        ));
    }
    let me = std::process::id();
    let cpu_server = cpu_seconds(args.pid)?;
    let cpu_db = command_cpu_seconds("postgres");
    let cpu_me = cpu_seconds(me)?;
    let cpu_machine = machine_cpu()?;
    let started = Instant::now();
    start_tx.send(true)?;
    let mut latencies = Vec::with_capacity(planned);
    let mut failures = 0;
    let mut ended = started;
    while let Some(report) = running.join_next().await {
        let report = report?;
        latencies.extend(report.latencies_ms);
        failures += report.failures;
        ended = ended.max(report.done_at.unwrap_or_else(Instant::now));
    }
    let cpu_server_after = cpu_seconds(args.pid)?;
    let cpu_db_after = command_cpu_seconds("postgres");
    let cpu_me_after = cpu_seconds(me)?;
    let cpu_machine_after = machine_cpu()?;
    let secs = (ended - started).as_secs_f64();
    let changes = latencies.len();
    latencies.sort_by(f64::total_cmp);
    figures.put("write_secs", secs);
    figures.put("changes", changes as f64);
    figures.put("put_failures", failures as f64);
    figures.put("changes_per_sec", changes as f64 / secs);
    figures.put("put_p50_ms", percentile(&latencies, 50.0));
    figures.put("put_p99_ms", percentile(&latencies, 99.0));
    figures.put("put_max_ms", percentile(&latencies, 100.0));
    let per_change_us = |cpu: f64| cpu * 1e6 / changes.max(1) as f64;
    let server = (cpu_server_after.0 + cpu_server_after.1) - (cpu_server.0 + cpu_server.1);
    figures.put("server_cpu_us_per_change", per_change_us(server));
    figures.put("db_cpu_us_per_change", per_change_us(cpu_db_after - cpu_db));
    let me_cpu = (cpu_me_after.0 + cpu_me_after.1) - (cpu_me.0 + cpu_me.1);
    figures.put("loadgen_cpu_pct", me_cpu / secs * 100.0);
    let MachineCpu {
        busy,
        iowait,
        total,
    } = machine_cpu_delta(cpu_machine, cpu_machine_after);
    figures.put("machine_busy_pct", busy / total * 100.0);
    figures.put("machine_iowait_pct", iowait / total * 100.0);

    // 4. Check: the polls followed their orders, the store has every change.
    let mut poll_updates = 0;
    let mut finished = 0;
    let mut poll_failures = 0;
    while let Some(report) = pollers.join_next().await {
        let report = report?;
        poll_updates += report.updates;
        finished += usize::from(report.finished);
        poll_failures += usize::from(report.failed);
    }
    let after = stats(&mut control, addr).await?;
    let woken = stats_value(&after, "/long_polls/polls/woken_by_change")?
        - stats_value(&before, "/long_polls/polls/woken_by_change")?;
    figures.put("poll_updates", poll_updates as f64);
    figures.put("polls_woken", woken);
    figures.put("polls_followed_to_delivered", finished as f64);
    figures.put("poll_failures", poll_failures as f64);
    figures.put(
        "orders_delivered",
        stats_value(&after, "/orders_by_status/delivered")?,
    );
    Ok(figures)
}

fn machine_cpu_delta(before: MachineCpu, after: MachineCpu) -> MachineCpu {
    MachineCpu {
        busy: after.busy - before.busy,
        iowait: after.iowait - before.iowait,
        total: (after.total - before.total).max(f64::MIN_POSITIVE),
    }
}

// ---------------------------------------------------------------------------
// The side-by-side table.

/// One row: label and the key in the result files.
struct Row(&'static str, &'static str);

#[rustfmt::skip]
const ROWS: &[Row] = &[
    Row("status changes per second", "changes_per_sec"),
    Row("PUT latency p50 (ms)", "put_p50_ms"),
    Row("PUT latency p99 (ms)", "put_p99_ms"),
    Row("PUT latency max (ms)", "put_max_ms"),
    Row("changes made", "changes"),
    Row("failures (must be 0)", "put_failures"),
    Row("polls parked at the start", "polls_parked"),
    Row("parked polls woken by a change", "polls_woken"),
    Row("poll answers with a new version", "poll_updates"),
    Row("polls that followed to delivered", "polls_followed_to_delivered"),
    Row("poll failures", "poll_failures"),
    Row("orders delivered in the store", "orders_delivered"),
    Row("server CPU per change (us)", "server_cpu_us_per_change"),
    Row("PostgreSQL CPU per change (us)", "db_cpu_us_per_change"),
    Row("load generator CPU (% of a core)", "loadgen_cpu_pct"),
    Row("machine busy (% of all cores)", "machine_busy_pct"),
    Row("machine iowait (% of all cores)", "machine_iowait_pct"),
    Row("write phase (s)", "write_secs"),
];

/// Medians over the rounds for each store, the ratios to memory, and each
/// round's SQLite/memory ratio so the spread shows; then the target.
fn table(memory: &[Figures], sqlite: &[Figures], postgres: &[Figures]) -> String {
    use std::fmt::Write as _;
    let med = |runs: &[Figures], key: &str| median(runs.iter().map(|f| f.get(key)).collect());
    let per_round = |runs: &[Figures], key: &str| -> String {
        runs.iter()
            .zip(memory)
            .map(|(a, b)| ratio(a.get(key), b.get(key)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let w = ROWS
        .iter()
        .flat_map(|Row(_, key)| [per_round(sqlite, key), per_round(postgres, key)])
        .map(|text| text.len())
        .max()
        .unwrap_or(0)
        .max("sqlite/mem per round".len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {:<34} | {:>8} | {:>8} | {:>8} | {:>10} | {:>10} | {:<w$} | {:<w$} |",
        "figure (median of rounds)",
        "memory",
        "sqlite",
        "postgres",
        "sqlite/mem",
        "pg/mem",
        "sqlite/mem per round",
        "pg/mem per round",
    );
    let _ = writeln!(
        out,
        "|{}|{}|{}|{}|{}|{}|{}|{}|",
        "-".repeat(36),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(w + 2),
        "-".repeat(w + 2),
    );
    for Row(label, key) in ROWS {
        let (m, s, p) = (med(memory, key), med(sqlite, key), med(postgres, key));
        let _ = writeln!(
            out,
            "| {:<34} | {:>8} | {:>8} | {:>8} | {:>10} | {:>10} | {:<w$} | {:<w$} |",
            label,
            format_value(m),
            format_value(s),
            format_value(p),
            ratio(s, m),
            ratio(p, m),
            per_round(sqlite, key),
            per_round(postgres, key),
        );
    }
    let key = "changes_per_sec";
    let (m, s) = (med(memory, key), med(sqlite, key));
    let verdict = if m.is_nan() || s.is_nan() {
        "not measured"
    } else if s >= SQLITE_TARGET * m {
        "met"
    } else {
        "MISSED"
    };
    let _ = writeln!(
        out,
        "\nTarget: SQLite >= {SQLITE_TARGET}x memory's changes per second: {verdict} ({} on the medians; per round {}).",
        ratio(s, m),
        per_round(sqlite, key)
    );
    out
}
