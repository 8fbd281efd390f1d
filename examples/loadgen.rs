//! Load generator behind `bench/run.sh`: the same long-polling workload against
//! this server and against Nchan, over raw HTTP/1.1 on loopback.
//!
//! `loadgen run` drives one freshly started server through five phases:
//!
//! 1. **Setup.** Creates `--orders` orders (ours: `POST /api/v1/orders`;
//!    Nchan: one message per channel, `POST /pub/{ch}`) and keeps each one's
//!    cursor (ours: the `ETag` version; Nchan: the message id).
//! 2. **Park.** Opens `--orders × --per-order` connections at once, each a long
//!    poll holding the cursor, and waits until the server itself reports them
//!    all parked (ours: `/system/stats`; Nchan: `nchan_stub_status`). The
//!    server's resident memory before and after, over the number of polls, is
//!    its memory per parked poll.
//! 3. **Wake.** `--publishers` keep-alive connections publish one change per
//!    order (ours: `PUT …/status`; Nchan: the next message). Each poller's wake
//!    latency is the time from the moment its order's change was sent to the
//!    first byte of its response.
//! 4. **Storm.** Every woken poller closes its connection and reconnects at
//!    once with its new cursor; the figure is the time until the server reports
//!    them all parked again.
//! 5. **Cost.** The server's CPU time (user and system, all its processes)
//!    for each phase and since it started, from `/proc`.
//!
//! The tool runs on one thread so that it takes at most one of the machine's
//! cores and treats both servers the same. `loadgen table` prints the medians
//! of several rounds of results for both servers side by side, with the ratio
//! ours/Nchan.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

mod common;

use common::figures::{format_value, median, percentile, ratio, run_and_report, Figures};
use common::http::{self, connect, read_response, wait_count, wait_ready, Conn, Response};
use common::proc::{cpu_seconds, memory};
use common::{Error, Result};

#[derive(Parser)]
#[command(about = "Long-poll load generator: ours against Nchan")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive one server through setup, park, wake, storm; write its figures.
    Run(RunArgs),
    /// Print two result files side by side with the ratio of the first to the second.
    Table {
        /// Results of our server, one file per round.
        #[arg(long, num_args = 1.., required = true)]
        ours: Vec<PathBuf>,
        /// Results of Nchan, one file per round, in the same order.
        #[arg(long, num_args = 1.., required = true)]
        nchan: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// This crate's server.
    Ours,
    /// nginx with the Nchan module, configured by bench/nginx.conf.
    Nchan,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Which protocol to speak.
    #[arg(long, value_enum)]
    target: Target,
    /// Where the server listens.
    #[arg(long)]
    addr: SocketAddr,
    /// The server's process id; its child processes (nginx workers) count too.
    #[arg(long)]
    pid: u32,
    /// Orders (channels).
    #[arg(long, env = "ORDERS", default_value_t = 1000)]
    orders: usize,
    /// Long polls parked on each order.
    #[arg(long, env = "PER_ORDER", default_value_t = 10)]
    per_order: usize,
    /// Keep-alive connections publishing changes concurrently.
    #[arg(long, env = "PUBLISHERS", default_value_t = 1)]
    publishers: usize,
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
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run_and_report(args.out.as_deref(), run(&args)),
        Command::Table { ours, nchan } => {
            let load = |paths: &[PathBuf]| -> Result<Vec<Figures>> {
                paths.iter().map(|path| Figures::load(path)).collect()
            };
            print!("{}", table(&load(&ours)?, &load(&nchan)?));
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// The two protocols.

/// What a client holds to say "I have this version, wake me on the next".
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cursor {
    /// Ours: the order's version (`ETag` / `?version=`).
    Version(u64),
    /// Nchan: the message id, as `Last-Modified` and `Etag`.
    MessageId { last_modified: String, etag: String },
}

/// Order `i`'s id / channel name.
fn order_id(i: usize) -> String {
    format!("b{i}")
}

/// The message Nchan carries for order `id` in `status`: the same document our
/// server answers a woken poll with (about 600 bytes), so that both send the
/// same bytes per wake.
fn nchan_message(id: &str, status: &str, version: u64) -> String {
    format!(
        concat!(
            r#"{{"success":true,"data":{{"id":"{id}","customer_id":"c{id}","status":"{status}","#,
            r#""created_at":"2026-01-12T20:30:00.000000Z","updated_at":"2026-01-12T20:33:00.000000Z","#,
            r#""estimated_delivery":"2026-01-12T21:03:00.000000Z","#,
            r#""delivery_address":"12 Harbour Street, Springfield","items":["#,
            r#"{{"name":"Margherita Pizza","quantity":2,"unit_price":12.5}},"#,
            r#"{{"name":"Tiramisu","quantity":1,"unit_price":6.0}},"#,
            r#"{{"name":"Sparkling Water","quantity":2,"unit_price":2.5}}],"#,
            r#""total_amount":36.0,"restaurant_name":"Luigi's Pizzeria","version":{version}}},"#,
            r#""has_update":true,"next_poll_interval":60,"battery_tip":"Next poll in 60 seconds","timeout":120}}"#
        ),
        id = id,
        status = status,
        version = version
    )
}

impl Target {
    /// The request that creates order `i`.
    fn create(self, host: SocketAddr, i: usize) -> Vec<u8> {
        let id = order_id(i);
        match self {
            Target::Ours => http::create_order(host, &id),
            Target::Nchan => http::post(
                &format!("/pub/{id}"),
                host,
                &nchan_message(&id, "confirmed", 1),
            ),
        }
    }

    /// The cursor a create answer gives.
    fn created_cursor(self, response: &Response) -> Result<Cursor> {
        match self {
            Target::Ours => Ok(Cursor::Version(response.etag_version()?)),
            Target::Nchan => {
                // "last message id: 1795461317:0" in the channel info body.
                let text = String::from_utf8_lossy(&response.body);
                let id = text
                    .lines()
                    .find_map(|line| line.strip_prefix("last message id: "))
                    .ok_or("no message id in the publisher's answer")?;
                let (time, tag) = id.trim().split_once(':').ok_or("malformed message id")?;
                let time: i64 = time.parse()?;
                let at = chrono::DateTime::from_timestamp(time, 0).ok_or("bad message time")?;
                Ok(Cursor::MessageId {
                    last_modified: at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
                    etag: tag.to_owned(),
                })
            }
        }
    }

    /// The change published to order `i` in the wake phase.
    fn publish(self, host: SocketAddr, i: usize) -> Vec<u8> {
        let id = order_id(i);
        match self {
            Target::Ours => http::put_status(host, &id, "preparing"),
            Target::Nchan => http::post(
                &format!("/pub/{id}"),
                host,
                &nchan_message(&id, "preparing", 2),
            ),
        }
    }

    /// A long poll on order `i` that parks until something newer than `cursor`.
    fn subscribe(self, host: SocketAddr, i: usize, cursor: &Cursor, timeout: u64) -> Vec<u8> {
        let id = order_id(i);
        match cursor {
            Cursor::Version(version) => http::track(host, &id, *version, timeout),
            Cursor::MessageId {
                last_modified,
                etag,
            } => format!(
                "GET /sub/{id} HTTP/1.1\r\nHost: {host}\r\nIf-Modified-Since: {last_modified}\r\nIf-None-Match: {etag}\r\n\r\n"
            )
            .into_bytes(),
        }
    }

    /// The cursor a woken poll's answer gives.
    fn woken_cursor(self, response: &Response) -> Result<Cursor> {
        match self {
            Target::Ours => Ok(Cursor::Version(response.etag_version()?)),
            Target::Nchan => Ok(Cursor::MessageId {
                last_modified: response
                    .header("last-modified")
                    .ok_or("no Last-Modified")?
                    .to_owned(),
                etag: response.header("etag").ok_or("no Etag")?.to_owned(),
            }),
        }
    }

    /// How many long polls the server says are parked.
    fn parked_request(self, host: SocketAddr) -> Vec<u8> {
        let path = match self {
            Target::Ours => http::STATS_PATH,
            Target::Nchan => "/nchan_stub_status",
        };
        http::get(path, host)
    }

    fn parked_count(self, response: &Response) -> Result<usize> {
        let text = String::from_utf8_lossy(&response.body);
        let after = match self {
            Target::Ours => text.split("\"parked_now\":").nth(1),
            Target::Nchan => text.split("subscribers: ").nth(1),
        }
        .ok_or("no parked count in the server's figures")?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        Ok(digits.parse()?)
    }

    /// Waits until the server reports `n` polls parked, or the limit passes.
    /// Returns when it did, or `None`.
    async fn wait_parked(
        self,
        addr: SocketAddr,
        n: usize,
        limit: Duration,
    ) -> Result<Option<Instant>> {
        let count = |response: &Response| self.parked_count(response);
        wait_count(addr, &self.parked_request(addr), count, n, limit).await
    }
}

// ---------------------------------------------------------------------------
// The run.

/// Records the server's user and system CPU milliseconds over a phase.
fn put_cpu(put: &mut impl FnMut(&str, f64), phase: &str, before: (f64, f64), after: (f64, f64)) {
    put(
        &format!("cpu_{phase}_user_ms"),
        (after.0 - before.0) * 1000.0,
    );
    put(
        &format!("cpu_{phase}_system_ms"),
        (after.1 - before.1) * 1000.0,
    );
}

/// Nanoseconds since `base`, to keep instants in atomics.
fn nanos_since(base: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(base).as_nanos() as u64
}

/// What a poller reports when its long poll is answered.
struct Woken {
    order: usize,
    /// First byte of the answer, ns since the run's base instant.
    at: u64,
    /// Body bytes of the answer.
    bytes: usize,
    /// The poll was answered with a new state and a cursor.
    ok: bool,
}

/// Shared by the run and its poller tasks.
struct Shared {
    target: Target,
    addr: SocketAddr,
    timeout: u64,
    /// Tells pollers to reconnect (1) and to hang up (2).
    phase: watch::Receiver<u8>,
    /// Polls that failed during the storm: connect errors, closed
    /// connections, or any answer before the run ends.
    storm_failures: AtomicUsize,
}

/// Connects and sends a long poll on `order` holding `cursor`.
async fn subscribe(shared: &Shared, order: usize, cursor: &Cursor) -> Result<TcpStream> {
    let mut stream = connect(shared.addr, order).await?;
    let request = shared
        .target
        .subscribe(shared.addr, order, cursor, shared.timeout);
    stream.write_all(&request).await?;
    Ok(stream)
}

/// One parked client: park, wait for the wake, reconnect on the storm, hang up
/// at the end.
async fn poller(
    shared: Arc<Shared>,
    order: usize,
    cursor: Cursor,
    woken: mpsc::UnboundedSender<Woken>,
    base: Instant,
) {
    let mut phase = shared.phase.clone();
    let park = async {
        let mut stream = subscribe(&shared, order, &cursor).await?;
        let mut buf = Vec::new();
        let response = read_response(&mut stream, &mut buf).await?;
        Ok::<_, Error>((stream, response))
    };
    let (stream, response) = match park.await {
        Ok(answered) => answered,
        Err(_) => {
            let _ = woken.send(Woken {
                order,
                at: nanos_since(base, Instant::now()),
                bytes: 0,
                ok: false,
            });
            return;
        }
    };
    let next = shared.target.woken_cursor(&response).ok();
    let ok = response.status == 200 && next.as_ref().is_some_and(|next| *next != cursor);
    let _ = woken.send(Woken {
        order,
        at: nanos_since(base, response.first_byte),
        bytes: response.body.len(),
        ok,
    });
    let Some(next) = next.filter(|_| ok) else {
        return;
    };
    if phase.wait_for(|phase| *phase >= 1).await.is_err() {
        return;
    }
    // The storm: hang up and come back at once with the new cursor.
    drop(stream);
    let mut stream = match subscribe(&shared, order, &next).await {
        Ok(stream) => stream,
        Err(_) => {
            shared.storm_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    // Parked again: any answer, or a hang-up, before the end is a failure.
    let mut buf = Vec::new();
    tokio::select! {
        _ = read_response(&mut stream, &mut buf) => {
            shared.storm_failures.fetch_add(1, Ordering::Relaxed);
        }
        _ = phase.wait_for(|phase| *phase >= 2) => {}
    }
}

async fn run(args: &RunArgs) -> Result<Figures> {
    let target = args.target;
    let addr = args.addr;
    let limit = Duration::from_secs(args.phase_limit);
    let polls = args.orders * args.per_order;
    let mut figures = Figures::default();
    let mut put = |key: &str, value: f64| figures.put(key, value);
    put("orders", args.orders as f64);
    put("parked_polls", polls as f64);
    put("publishers", args.publishers as f64);

    wait_ready(addr, &target.parked_request(addr), limit).await?;

    // 1. Setup: every order exists, with its first cursor.
    eprintln!("setup: {} orders", args.orders);
    let mut cursors = Vec::with_capacity(args.orders);
    let mut conn = Conn::open(addr).await?;
    for i in 0..args.orders {
        let response = conn.send(&target.create(addr, i)).await?;
        if !(200..300).contains(&response.status) {
            return Err(format!("creating order {i}: HTTP {}", response.status).into());
        }
        cursors.push(target.created_cursor(&response)?);
    }
    drop(conn);
    // Let the server settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = memory(args.pid)?;

    // 2. Park.
    eprintln!("park: {polls} long polls");
    let base = Instant::now();
    let (phase_tx, phase_rx) = watch::channel(0u8);
    let shared = Arc::new(Shared {
        target,
        addr,
        timeout: args.poll_timeout,
        phase: phase_rx,
        storm_failures: AtomicUsize::new(0),
    });
    let (woken_tx, mut woken_rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    let cpu_before_park = cpu_seconds(args.pid)?;
    let park_start = Instant::now();
    for (order, cursor) in cursors.iter().enumerate() {
        for _ in 0..args.per_order {
            tasks.spawn(poller(
                Arc::clone(&shared),
                order,
                cursor.clone(),
                woken_tx.clone(),
                base,
            ));
        }
    }
    drop(woken_tx);
    let parked_at = target.wait_parked(addr, polls, limit).await?;
    let Some(parked_at) = parked_at else {
        return Err("not every poll parked; see above".into());
    };
    put("park_secs", (parked_at - park_start).as_secs_f64());
    put_cpu(&mut put, "park", cpu_before_park, cpu_seconds(args.pid)?);
    // Let the server settle (allocator, lazily freed buffers) before reading.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let parked = memory(args.pid)?;
    put("rss_before_kib", (before.rss / 1024) as f64);
    put("rss_parked_kib", (parked.rss / 1024) as f64);
    put(
        "rss_per_poll_bytes",
        parked.rss.saturating_sub(before.rss) as f64 / polls as f64,
    );
    put(
        "pss_per_poll_bytes",
        parked.pss.saturating_sub(before.pss) as f64 / polls as f64,
    );
    if let Ok(early) = woken_rx.try_recv() {
        return Err(format!(
            "a poll of order {} was answered before any change",
            early.order
        )
        .into());
    }

    // 3. Wake: one change per order, from a few keep-alive publishers.
    eprintln!(
        "wake: {} changes over {} publishers",
        args.orders, args.publishers
    );
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..args.orders).map(|_| AtomicU64::new(0)).collect());
    let next_order = Arc::new(AtomicUsize::new(0));
    let cpu_before_wake = cpu_seconds(args.pid)?;
    let publish_start = Instant::now();
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..args.publishers {
        let sent = Arc::clone(&sent);
        let next_order = Arc::clone(&next_order);
        let orders = args.orders;
        publishers.spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut failures = 0usize;
            loop {
                let i = next_order.fetch_add(1, Ordering::Relaxed);
                if i >= orders {
                    break;
                }
                let request = target.publish(addr, i);
                sent[i].store(nanos_since(base, Instant::now()), Ordering::Relaxed);
                let response = conn.send(&request).await?;
                if !(200..300).contains(&response.status) {
                    failures += 1;
                }
            }
            Ok::<_, Error>((failures, Instant::now()))
        });
    }
    let mut publish_failures = 0;
    let mut publish_end = publish_start;
    while let Some(done) = publishers.join_next().await {
        let (failures, end) = done??;
        publish_failures += failures;
        publish_end = publish_end.max(end);
    }
    put(
        "publish_per_sec",
        args.orders as f64 / (publish_end - publish_start).as_secs_f64(),
    );
    put("publish_failures", publish_failures as f64);

    let mut latencies = Vec::with_capacity(polls);
    let mut wake_failures = 0;
    let mut bytes = 0usize;
    let deadline = tokio::time::Instant::now() + limit;
    while latencies.len() + wake_failures < polls {
        match tokio::time::timeout_at(deadline, woken_rx.recv()).await {
            Ok(Some(woken)) if woken.ok => {
                let sent_at = sent[woken.order].load(Ordering::Relaxed);
                latencies.push(woken.at.saturating_sub(sent_at) as f64 / 1e6);
                bytes += woken.bytes;
            }
            Ok(Some(_)) => wake_failures += 1,
            Ok(None) | Err(_) => break,
        }
    }
    put_cpu(&mut put, "wake", cpu_before_wake, cpu_seconds(args.pid)?);
    let missing = polls - latencies.len() - wake_failures;
    put("wake_failures", (wake_failures + missing) as f64);
    latencies.sort_by(f64::total_cmp);
    put("wake_p50_ms", percentile(&latencies, 50.0));
    put("wake_p90_ms", percentile(&latencies, 90.0));
    put("wake_p99_ms", percentile(&latencies, 99.0));
    put("wake_max_ms", percentile(&latencies, 100.0));
    put(
        "wake_body_bytes",
        bytes as f64 / latencies.len().max(1) as f64,
    );

    // 4. Storm: every woken poller reconnects at once.
    let woken = latencies.len();
    eprintln!("storm: {woken} reconnects");
    let cpu_before_storm = cpu_seconds(args.pid)?;
    let storm_start = Instant::now();
    phase_tx.send(1)?;
    let storm_parked = target.wait_parked(addr, woken, limit).await?;
    put_cpu(&mut put, "storm", cpu_before_storm, cpu_seconds(args.pid)?);
    put(
        "storm_secs",
        storm_parked.map_or(f64::NAN, |at| (at - storm_start).as_secs_f64()),
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = memory(args.pid)?;
    put(
        "rss_per_poll_after_storm_bytes",
        after.rss.saturating_sub(before.rss) as f64 / polls as f64,
    );
    let unparked = if storm_parked.is_some() { 0 } else { woken };
    put(
        "storm_failures",
        (shared.storm_failures.load(Ordering::Relaxed) + unparked) as f64,
    );

    // 5. Cost, then hang up.
    let (user, system) = cpu_seconds(args.pid)?;
    put("cpu_secs", user + system);
    phase_tx.send(2)?;
    while tasks.join_next().await.is_some() {}
    Ok(figures)
}

// ---------------------------------------------------------------------------
// The side-by-side table.

/// What a figure is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Context only.
    None,
    /// One of the issue's targets: ours at or below Nchan.
    AtMost,
    /// One of the issue's targets: ours at or above Nchan.
    AtLeast,
    /// One of the issue's targets: zero for ours.
    Zero,
}

/// One row: label, the key in the result files, and what it is for.
struct Row(&'static str, &'static str, Goal);

#[rustfmt::skip]
const ROWS: &[Row] = &[
    Row("parked polls", "parked_polls", Goal::None),
    Row("RSS per parked poll (bytes)", "rss_per_poll_bytes", Goal::AtMost),
    Row("PSS per parked poll (bytes)", "pss_per_poll_bytes", Goal::None),
    Row("RSS per poll after the storm (bytes)", "rss_per_poll_after_storm_bytes", Goal::None),
    Row("time to park all (s)", "park_secs", Goal::None),
    Row("wake latency p50 (ms)", "wake_p50_ms", Goal::None),
    Row("wake latency p90 (ms)", "wake_p90_ms", Goal::None),
    Row("wake latency p99 (ms)", "wake_p99_ms", Goal::AtMost),
    Row("wake latency max (ms)", "wake_max_ms", Goal::None),
    Row("changes published per second", "publish_per_sec", Goal::AtLeast),
    Row("publish failures", "publish_failures", Goal::None),
    Row("wake failures", "wake_failures", Goal::None),
    Row("response body bytes per wake", "wake_body_bytes", Goal::None),
    Row("reconnect storm: all parked again (s)", "storm_secs", Goal::AtMost),
    Row("reconnect storm failures", "storm_failures", Goal::Zero),
    Row("server CPU ms, park: user", "cpu_park_user_ms", Goal::None),
    Row("server CPU ms, park: system", "cpu_park_system_ms", Goal::None),
    Row("server CPU ms, wake: user", "cpu_wake_user_ms", Goal::None),
    Row("server CPU ms, wake: system", "cpu_wake_system_ms", Goal::None),
    Row("server CPU ms, storm: user", "cpu_storm_user_ms", Goal::None),
    Row("server CPU ms, storm: system", "cpu_storm_system_ms", Goal::None),
    Row("server CPU s, whole run", "cpu_secs", Goal::None),
];

/// Medians over the rounds for both servers, their ratio, whether each of the
/// issue's targets is met, and each round's ratio so the spread shows.
fn table(ours: &[Figures], nchan: &[Figures]) -> String {
    let rounds = ours.len().min(nchan.len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {:<38} | {:>9} | {:>9} | {:>10} | {:<6} | ours/nchan per round |",
        "figure (median of rounds)", "ours", "nchan", "ours/nchan", "target",
    );
    let _ = writeln!(
        out,
        "|{}|{}|{}|{}|{}|{}|",
        "-".repeat(40),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(12),
        "-".repeat(8),
        "-".repeat(22)
    );
    for Row(label, key, goal) in ROWS {
        let a = median(ours.iter().map(|f| f.get(key)).collect());
        let b = median(nchan.iter().map(|f| f.get(key)).collect());
        let verdict = match goal {
            Goal::None => "",
            Goal::AtMost if a <= b => "met",
            Goal::AtLeast if a >= b => "met",
            Goal::Zero if a == 0.0 => "met",
            _ => "MISSED",
        };
        let per_round: Vec<String> = (0..rounds)
            .map(|i| ratio(ours[i].get(key), nchan[i].get(key)))
            .collect();
        let _ = writeln!(
            out,
            "| {:<38} | {:>9} | {:>9} | {:>10} | {:<6} | {} |",
            label,
            format_value(a),
            format_value(b),
            ratio(a, b),
            verdict,
            per_round.join(" ")
        );
    }
    out
}
