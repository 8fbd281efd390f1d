//! Cluster benchmark behind `bench/cluster.sh`: several instances of the
//! server on one PostgreSQL database, long polls spread round-robin over
//! them, each change sent to a random one. It measures how soon a change
//! wakes the polls on the instance that made it and on the others, how many
//! changes per second the instances take together, and whether every poller
//! ends with its order's final version (lost updates).
//!
//! `cluster run` drives one phase against instances the script has started
//! (the script also runs the chaos loop that terminates the instances'
//! `LISTEN` connections, in the phase that has one):
//!
//! 1. **Ready.** Every instance answers `/api/v1/health` with 200, and
//!    `/api/v1/ready` with 200; 404 there means the build has no such
//!    endpoint yet and counts as ready.
//! 2. **Generations.** Statuses only move forward (confirmed → preparing →
//!    ready → picked_up → delivered; setting the current status again
//!    changes nothing and wakes nobody), so an order takes four changes. To
//!    last `--duration`, a phase goes through generations of `--orders` new
//!    orders until that has passed (at least one):
//!    - *create* (not timed): `POST /api/v1/orders`, round-robin over the
//!      instances; every order starts at version 1;
//!    - *park* (not timed): poller `p` follows order `p / --per-order` on
//!      instance `p mod instances`, so an order's polls are spread over all
//!      of them. A poller lives across generations, on one keep-alive
//!      connection: it parks with the last version it saw
//!      (`…/track?version=N&timeout=…`), parks again at once after every
//!      answer, and once it has seen its order `delivered` it moves to the
//!      same slot's order of the next generation, like a phone following one
//!      order after another. The run waits until the instances together
//!      report every poller parked;
//!    - *four steps* (timed): every order to `preparing`, then every one to
//!      `ready`, `picked_up`, `delivered`, with `--publishers` changes in
//!      flight, each `PUT …/status` to an instance picked at random (seeded
//!      by `--seed`; `--write-to` sends them all to one). Before each step
//!      the run waits again until every poller is parked, so each change
//!      finds its polls parked. A change that fails is counted and its
//!      order's later steps are skipped.
//!
//!    A poller that never sees its order's final version stays on it and
//!    takes no part in later generations: after a loss, fewer polls wait.
//! 3. **Grace.** The pollers get up to `--grace` seconds to reach their
//!    orders' final versions (a missed notification may be caught up by a
//!    periodic sweep).
//! 4. **Check.** Every instance is asked `GET /api/v1/orders/{id}` for every
//!    order of the last generation; an order's final version is the highest
//!    of those and of the `PUT` answers. A poller that has not seen its
//!    order's final version is a **lost update**.
//!
//! A poll answered with version `v` was woken by the `PUT` whose answer
//! carried `ETag: "v"`. Its wake latency is measured from that `PUT`'s answer
//! (the first byte of its 2xx, when the change was committed and
//! acknowledged) to the first byte of the poll's answer, and also from the
//! moment the `PUT` was sent. Measured from the 2xx it can be negative on the
//! writing instance: that instance wakes its own polls before it answers the
//! `PUT`. Wakes are split by whether the poll was on the instance the `PUT`
//! went to.
//!
//! The tool runs on one thread, like `loadgen`, so that it takes at most one
//! core; the answers that arrive together are read one after the other, which
//! puts the resolution of these times at about a tenth of a millisecond. `cluster table` prints the phases side by side (medians over
//! rounds; failure counts as the worst round), checks the targets,
//! and fails if any run lost an update.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout_at;

mod common;

use common::figures::{format_value, median, percentile, run_and_report, Figures};
use common::http::{self, connect, read_response, stats, stats_value, wait_status, Conn, Response};
use common::Result;

/// The statuses every order is walked through, in order, from `confirmed`.
const STEPS: [&str; 4] = http::STATUS_STEPS;
/// Statuses after which a poll answers at once and never parks again.
const FINAL_STATUSES: [&str; 3] = ["delivered", "cancelled", "expired"];
/// The target: cross-instance wake p99 at most this, without chaos.
const CROSS_P99_TARGET_MS: f64 = 15.0;

#[derive(Parser)]
#[command(about = "Cluster benchmark: wakes across instances on one PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive one phase against running instances; write its figures.
    Run(RunArgs),
    /// Print the phases' result files side by side and check the targets.
    Table {
        /// Results without chaos, one file per round.
        #[arg(long, num_args = 1..)]
        quiet: Vec<PathBuf>,
        /// Results with the chaos loop, one file per round.
        #[arg(long, num_args = 1..)]
        chaos: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where the instances listen, one flag each.
    #[arg(long = "addr", required = true, num_args = 1..)]
    addrs: Vec<SocketAddr>,
    /// Orders in each generation.
    #[arg(long, default_value_t = 1000)]
    orders: usize,
    /// Long polls parked on each order, round-robin over the instances.
    #[arg(long, default_value_t = 10)]
    per_order: usize,
    /// Changes in flight, each on its own keep-alive connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Start new generations of orders until this many seconds have passed.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds the pollers get after the last change to see their orders'
    /// final versions before a missing one counts as lost.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// Long-poll wait requested, in seconds.
    #[arg(long, default_value_t = 120)]
    poll_timeout: u64,
    /// Longest wait for each step (readiness, creating, parking, publishing).
    #[arg(long, default_value_t = 60)]
    phase_limit: u64,
    /// Seeds the choice of instance for each change.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Send every change to this instance (0-based) instead of a random
    /// one: wakes on the others then depend on cross-instance
    /// notifications alone.
    #[arg(long)]
    write_to: Option<usize>,
    /// Write the figures here, one `key value` per line.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run_and_report(args.out.as_deref(), run(&args)),
        Command::Table { quiet, chaos } => {
            let load = |paths: &[PathBuf]| -> Result<Vec<Figures>> {
                paths.iter().map(|path| Figures::load(path)).collect()
            };
            let (quiet, chaos) = (load(&quiet)?, load(&chaos)?);
            print!("{}", table(&quiet, &chaos));
            verdict(&quiet, &chaos)
        }
    }
}

// ---------------------------------------------------------------------------
// Small pieces.

/// Order `order` of generation `generation`.
fn order_id(generation: usize, order: usize) -> String {
    format!("g{generation}-o{order}")
}

/// Nanoseconds since `base`, to keep instants small and comparable.
fn nanos_since(base: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(base).as_nanos() as u64
}

/// Where a poller is, as one ordered number: its generation, then the
/// version it last saw. Pollers only move forward, so "behind" is `<`.
fn progress(generation: usize, version: u64) -> u64 {
    ((generation as u64) << 32) | version
}

/// SplitMix64: which instance each change goes to, reproducible by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// The order's status in a `/track` answer.
fn tracked_status(response: &Response) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Tracked,
    }
    #[derive(serde::Deserialize)]
    struct Tracked {
        status: String,
    }
    Ok(serde_json::from_slice::<Answer>(&response.body)?
        .data
        .status)
}

// ---------------------------------------------------------------------------
// The pollers.

/// What the run tells its pollers.
#[derive(Clone, Copy, Default)]
struct Control {
    /// Generations whose orders exist.
    generations: usize,
    /// Generations whose changes are all made (their final versions are in
    /// `Shared::finals`).
    settled: usize,
    /// Hang up: the phase is over.
    stop: bool,
}

/// Shared by the run and its pollers.
struct Shared {
    /// The instances; poller `p` polls `addrs[p mod len]`.
    addrs: Vec<SocketAddr>,
    /// Pollers per order: poller `p` follows order `p / per_order`.
    per_order: usize,
    /// The `timeout` each poll asks for.
    poll_timeout: u64,
    /// The instance every change goes to, if not a random one.
    write_to: Option<usize>,
    /// The instant every recorded time counts from.
    base: Instant,
    /// Generations created and settled, and the end of the phase.
    control: watch::Receiver<Control>,
    /// Each settled generation's final version of each order, from the `PUT`
    /// answers: a poller holding it may move on even if the order is not
    /// `delivered` (a change that failed leaves it short).
    finals: Mutex<Vec<Arc<Vec<u64>>>>,
    /// Each poller's [`progress`], for the grace period and the check.
    progress: Vec<AtomicU64>,
    /// Polls that failed: connect errors, closed connections, non-200
    /// answers, a version older than the cursor.
    poll_errors: AtomicUsize,
    /// `PUT` refusals printed so far: the first few say why, the rest are
    /// only counted.
    put_failures_shown: AtomicUsize,
}

/// `PUT` refusals printed in a phase, at most.
const PUT_FAILURES_SHOWN: usize = 5;

impl Shared {
    fn show_put_failure(&self, message: String) {
        match self.put_failures_shown.fetch_add(1, Ordering::Relaxed) {
            n if n < PUT_FAILURES_SHOWN => eprintln!("  {message}"),
            PUT_FAILURES_SHOWN => eprintln!("  (further PUT failures are counted, not shown)"),
            _ => {}
        }
    }

    /// Whether `version` is the final one of a settled generation's order.
    fn settled_at(&self, generation: usize, order: usize, version: u64) -> bool {
        // Never held across an await.
        let finals = self.finals.lock().unwrap_or_else(|err| err.into_inner());
        finals
            .get(generation)
            .is_some_and(|finals| version >= finals[order])
    }
}

/// A poll answered with a newer version than it held.
struct Wake {
    /// With `order` and `version`: which change woke it.
    generation: u32,
    order: u32,
    version: u64,
    /// Versions between the cursor and this one the poll never saw (two
    /// changes before it parked again, or a missed notification caught up).
    skipped: u64,
    /// First byte of the answer, ns since `Shared::base`.
    at: u64,
}

/// What one poller saw.
#[derive(Default)]
struct PollerReport {
    /// The instance its polls went to.
    instance: usize,
    wakes: Vec<Wake>,
    /// Answers with the version the poll already had: its timeout passed.
    timeouts: usize,
}

/// Why a poller stopped waiting for an answer.
enum Outcome {
    Answer(Result<Response>),
    /// Its generation settled and it has the final version: move on.
    Settled,
    Stop,
}

/// Waits a moment after a failure, or less if the phase ends.
async fn pause(control: &mut watch::Receiver<Control>) {
    let _ = tokio::time::timeout(Duration::from_millis(200), control.wait_for(|c| c.stop)).await;
}

/// Poller `p`: follows its slot's order in each generation, on one
/// keep-alive connection to its instance, until the phase ends.
async fn poller(shared: Arc<Shared>, p: usize) -> PollerReport {
    let instance = p % shared.addrs.len();
    let addr = shared.addrs[instance];
    let order = p / shared.per_order;
    let mut report = PollerReport {
        instance,
        ..PollerReport::default()
    };
    let mut control = shared.control.clone();
    let mut conn: Option<(TcpStream, Vec<u8>)> = None;
    let fail = |conn: &mut Option<(TcpStream, Vec<u8>)>| {
        shared.poll_errors.fetch_add(1, Ordering::Relaxed);
        *conn = None;
    };
    for generation in 0.. {
        match control
            .wait_for(|c| c.stop || c.generations > generation)
            .await
        {
            Ok(c) if !c.stop => {}
            _ => return report,
        }
        let id = order_id(generation, order);
        let request_for = |version| http::track(addr, &id, version, shared.poll_timeout);
        let mut version = 1;
        shared.progress[p].store(progress(generation, version), Ordering::Relaxed);
        let mut final_status = false;
        while !final_status && !shared.settled_at(generation, order, version) {
            if control.borrow().stop {
                return report;
            }
            if conn.is_none() {
                match connect(addr, p).await {
                    Ok(stream) => conn = Some((stream, Vec::new())),
                    Err(_) => {
                        fail(&mut conn);
                        pause(&mut control).await;
                        continue;
                    }
                }
            }
            let Some((stream, buf)) = &mut conn else {
                continue;
            };
            if stream.write_all(&request_for(version)).await.is_err() {
                fail(&mut conn);
                pause(&mut control).await;
                continue;
            }
            let outcome = {
                // Pinned outside the loop: a control message must not drop
                // half an answer.
                let read = read_response(stream, buf);
                tokio::pin!(read);
                loop {
                    tokio::select! {
                        answer = &mut read => break Outcome::Answer(answer),
                        changed = control.changed() => {
                            if changed.is_err() || control.borrow_and_update().stop {
                                break Outcome::Stop;
                            }
                            if shared.settled_at(generation, order, version) {
                                break Outcome::Settled;
                            }
                        }
                    }
                }
            };
            let answer = match outcome {
                Outcome::Stop => return report,
                Outcome::Settled => {
                    // The parked request is abandoned with its connection.
                    conn = None;
                    break;
                }
                Outcome::Answer(Err(_)) => {
                    fail(&mut conn);
                    pause(&mut control).await;
                    continue;
                }
                Outcome::Answer(Ok(answer)) => answer,
            };
            let seen = match (answer.status, answer.etag_version()) {
                (200, Ok(seen)) => seen,
                _ => {
                    // Refused (429, 503) or broken: try again shortly.
                    fail(&mut conn);
                    pause(&mut control).await;
                    continue;
                }
            };
            if seen > version {
                report.wakes.push(Wake {
                    generation: generation as u32,
                    order: order as u32,
                    version: seen,
                    skipped: seen - version - 1,
                    at: nanos_since(shared.base, answer.first_byte),
                });
                version = seen;
                shared.progress[p].store(progress(generation, version), Ordering::Relaxed);
                final_status = tracked_status(&answer)
                    .is_ok_and(|status| FINAL_STATUSES.contains(&status.as_str()));
            } else if seen == version {
                report.timeouts += 1;
            } else {
                // Older than what the poll held: a stale instance.
                fail(&mut conn);
            }
        }
    }
    report
}

// ---------------------------------------------------------------------------
// The publishers.

/// A change made: which version of which order, where, and when.
struct Change {
    /// The instance the `PUT` went to.
    instance: usize,
    /// The `PUT` was sent, ns since `Shared::base`.
    sent: u64,
    /// The first byte of its 2xx answer, ns since `Shared::base`.
    answered: u64,
}

/// One publisher's connections (one per instance, opened when first used)
/// and its share of the random choices.
struct Publisher {
    /// Keep-alive connections by instance, reopened after a failure.
    conns: Vec<Option<Conn>>,
    /// Picks the instance of each change.
    rng: Rng,
}

/// What one publisher did in one step.
struct Published {
    /// Handed back for the next step.
    publisher: Publisher,
    /// (order, version made, the change).
    changes: Vec<(usize, u64, Change)>,
    /// Orders whose change failed: their later steps are skipped.
    failed: Vec<usize>,
    /// When its last answer came: the step ends with the last publisher's.
    done_at: Instant,
}

/// Moves the orders of `queue` (shared with the other publishers) to
/// `status`, each on a random instance, one request at a time.
async fn publish(
    shared: Arc<Shared>,
    mut publisher: Publisher,
    generation: usize,
    status: &'static str,
    queue: Arc<(Vec<usize>, AtomicUsize)>,
    deadline: tokio::time::Instant,
) -> Published {
    let mut changes = Vec::new();
    let mut failed = Vec::new();
    let (orders, next) = &*queue;
    while let Some(&order) = orders.get(next.fetch_add(1, Ordering::Relaxed)) {
        let instance = shared
            .write_to
            .unwrap_or_else(|| publisher.rng.below(shared.addrs.len()));
        let addr = shared.addrs[instance];
        let request = http::put_status(addr, &order_id(generation, order), status);
        let slot = &mut publisher.conns[instance];
        if slot.is_none() {
            match timeout_at(deadline, Conn::open(addr)).await {
                Ok(Ok(conn)) => *slot = Some(conn),
                Ok(Err(_)) | Err(_) => {
                    failed.push(order);
                    continue;
                }
            }
        }
        let Some(conn) = slot.as_mut() else {
            continue;
        };
        let attempt = async {
            let sent = Instant::now();
            let answer = conn.send(&request).await?;
            Ok::<_, common::Error>((sent, answer))
        };
        match timeout_at(deadline, attempt).await {
            Ok(Ok((sent, answer))) if (200..300).contains(&answer.status) => {
                match answer.etag_version() {
                    Ok(version) => changes.push((
                        order,
                        version,
                        Change {
                            instance,
                            sent: nanos_since(shared.base, sent),
                            answered: nanos_since(shared.base, answer.first_byte),
                        },
                    )),
                    Err(_) => failed.push(order),
                }
            }
            Ok(Ok((_, answer))) => {
                shared.show_put_failure(format!(
                    "PUT {} {status} on instance {instance}: HTTP {}: {}",
                    order_id(generation, order),
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ));
                failed.push(order);
            }
            Ok(Err(_)) | Err(_) => {
                // The connection is in an unknown state: open a new one.
                *slot = None;
                failed.push(order);
            }
        }
    }
    Published {
        publisher,
        changes,
        failed,
        done_at: Instant::now(),
    }
}

// ---------------------------------------------------------------------------
// The run.

/// Asks every instance how many polls it holds until together they hold
/// `n`, or the limit passes. Returns whether they did.
async fn wait_parked(
    shared: &Shared,
    conns: &mut [Conn],
    n: usize,
    limit: Duration,
) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let mut parked = 0.0;
        for (conn, addr) in conns.iter_mut().zip(&shared.addrs) {
            parked += stats_value(&stats(conn, *addr).await?, "/long_polls/parked_now")?;
        }
        if parked as usize >= n {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            eprintln!("  only {parked} of {n} polls parked after {limit:?}");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for every instance to be healthy and ready, and says which is which.
async fn wait_instances(addrs: &[SocketAddr], limit: Duration) -> Result<()> {
    let mut ids = Vec::new();
    for (i, &addr) in addrs.iter().enumerate() {
        let health = wait_status(
            addr,
            &http::get("/api/v1/health", addr),
            |s| s == 200,
            limit,
        )
        .await?;
        // Readiness, where the build has it (404 until then).
        let ready = wait_status(
            addr,
            &http::get("/api/v1/ready", addr),
            |s| s == 200 || s == 404,
            limit,
        )
        .await?;
        let id = serde_json::from_slice::<serde_json::Value>(&health.body)?
            .pointer("/instance_id")
            .map(|id| id.to_string());
        eprintln!(
            "instance {i}: {addr}, instance_id {}, /api/v1/ready {}",
            id.as_deref().unwrap_or("(none)"),
            if ready.status == 404 { "absent" } else { "200" }
        );
        if let Some(id) = id {
            if ids.contains(&id) {
                return Err(format!("two instances report instance_id {id}").into());
            }
            ids.push(id);
        }
    }
    Ok(())
}

/// Creates generation `generation`'s orders, round-robin over the instances.
async fn create(shared: &Shared, generation: usize, orders: usize) -> Result<()> {
    let n = shared.addrs.len();
    let mut creators = JoinSet::new();
    for (instance, &addr) in shared.addrs.iter().enumerate() {
        creators.spawn(async move {
            let mut conn = Conn::open(addr).await?;
            for order in (instance..orders).step_by(n) {
                let id = order_id(generation, order);
                let answer = conn.send(&http::create_order(addr, &id)).await?;
                if answer.status != 201 || answer.etag_version()? != 1 {
                    return Err(format!(
                        "creating order {id} on {addr}: HTTP {}: {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    )
                    .into());
                }
            }
            Ok::<_, common::Error>(())
        });
    }
    while let Some(done) = creators.join_next().await {
        done??;
    }
    Ok(())
}

/// Wake latencies, in ms, of one kind (same or other instance).
#[derive(Default)]
struct Latencies {
    /// From the first byte of the `PUT`'s 2xx to the first byte of the poll's answer.
    from_answer: Vec<f64>,
    /// From sending the `PUT` to the first byte of the poll's answer.
    from_sent: Vec<f64>,
}

impl Latencies {
    fn put(&mut self, figures: &mut Figures, kind: &str) {
        self.from_answer.sort_by(f64::total_cmp);
        self.from_sent.sort_by(f64::total_cmp);
        figures.put(&format!("wakes_{kind}"), self.from_answer.len() as f64);
        for (label, values) in [("", &self.from_answer), ("sent_", &self.from_sent)] {
            for (name, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
                figures.put(
                    &format!("wake_{kind}_{label}{name}_ms"),
                    percentile(values, p),
                );
            }
        }
    }
}

/// One step of a generation: its orders moved to `status` by all the
/// publishers at once.
struct Step {
    generation: usize,
    status: &'static str,
    /// The orders to change, and the index of the next one to take.
    queue: Arc<(Vec<usize>, AtomicUsize)>,
    deadline: tokio::time::Instant,
}

impl Step {
    /// Runs the step and tallies it; returns each order's new version, or
    /// `None` if its change failed.
    async fn run(
        self,
        shared: &Arc<Shared>,
        publishers: &mut Vec<Publisher>,
        tally: &mut Tally,
    ) -> Result<Vec<(usize, Option<u64>)>> {
        let start = Instant::now();
        let mut running = JoinSet::new();
        for publisher in publishers.drain(..) {
            running.spawn(publish(
                Arc::clone(shared),
                publisher,
                self.generation,
                self.status,
                Arc::clone(&self.queue),
                self.deadline,
            ));
        }
        let mut end = start;
        let mut outcomes = Vec::with_capacity(self.queue.0.len());
        while let Some(done) = running.join_next().await {
            let done = done?;
            publishers.push(done.publisher);
            end = end.max(done.done_at);
            tally.put_failures += done.failed.len();
            outcomes.extend(done.failed.into_iter().map(|order| (order, None)));
            for (order, version, change) in done.changes {
                tally
                    .put_latencies
                    .push((change.answered - change.sent) as f64 / 1e6);
                tally
                    .changes
                    .insert((self.generation as u32, order as u32, version), change);
                outcomes.push((order, Some(version)));
            }
        }
        tally.publish_time += end - start;
        Ok(outcomes)
    }
}

/// What the publishing steps of a phase add up to.
#[derive(Default)]
struct Tally {
    /// Every change made, by (generation, order, version made).
    changes: HashMap<(u32, u32, u64), Change>,
    /// Each change's `PUT`, from sending it to its answer's first byte, ms.
    put_latencies: Vec<f64>,
    /// Changes refused or not answered.
    put_failures: usize,
    /// The steps' time, from each one's start to its last answer: changes
    /// per second leave out creating orders and waiting for polls to park.
    publish_time: Duration,
    /// Waits for the polls to park again that ran out of time.
    barrier_timeouts: usize,
}

impl Tally {
    fn put(&mut self, figures: &mut Figures) {
        figures.put("changes", self.changes.len() as f64);
        figures.put("put_failures", self.put_failures as f64);
        figures.put(
            "changes_per_sec",
            self.changes.len() as f64 / self.publish_time.as_secs_f64(),
        );
        self.put_latencies.sort_by(f64::total_cmp);
        figures.put("put_p50_ms", percentile(&self.put_latencies, 50.0));
        figures.put("put_p99_ms", percentile(&self.put_latencies, 99.0));
        figures.put("barrier_timeouts", self.barrier_timeouts as f64);
    }
}

/// Asks every instance for every order of generation `last`; returns each
/// order's final version (the highest of theirs and of `from_puts`) and how
/// many answers were older than that (stale reads).
async fn read_finals(
    conns: &mut [Conn],
    addrs: &[SocketAddr],
    last: usize,
    from_puts: &[u64],
) -> Result<(Vec<u64>, usize)> {
    let mut finals = from_puts.to_vec();
    let mut stale_reads = 0;
    for (order, final_version) in finals.iter_mut().enumerate() {
        let mut read = Vec::with_capacity(addrs.len());
        for (conn, addr) in conns.iter_mut().zip(addrs) {
            let path = format!("/api/v1/orders/{}", order_id(last, order));
            let answer = conn.send(&http::get(&path, *addr)).await?;
            if answer.status != 200 {
                return Err(format!("GET {path} on {addr}: HTTP {}", answer.status).into());
            }
            read.push(answer.etag_version()?);
        }
        let highest = read.iter().copied().max().unwrap_or(0);
        if highest > *final_version {
            eprintln!(
                "  order {} is at version {highest}, past the last PUT answer ({final_version})",
                order_id(last, order),
            );
            *final_version = highest;
        }
        stale_reads += read.iter().filter(|&&v| v < *final_version).count();
    }
    Ok((finals, stale_reads))
}

async fn run(args: &RunArgs) -> Result<Figures> {
    let limit = Duration::from_secs(args.phase_limit);
    let instances = args.addrs.len();
    let pollers = args.orders * args.per_order;
    let mut figures = Figures::default();
    figures.put("instances", instances as f64);
    figures.put("orders", args.orders as f64);
    figures.put("per_order", args.per_order as f64);
    figures.put("publishers", args.publishers as f64);

    if args.orders == 0 || args.per_order == 0 || args.publishers == 0 {
        return Err("--orders, --per-order and --publishers must be at least 1".into());
    }
    if args.write_to.is_some_and(|i| i >= instances) {
        return Err(format!("--write-to must be below {instances}").into());
    }
    figures.put("write_to", args.write_to.map_or(f64::NAN, |i| i as f64));
    wait_instances(&args.addrs, limit).await?;
    let mut control_conns = Vec::with_capacity(instances);
    for &addr in &args.addrs {
        control_conns.push(Conn::open(addr).await?);
    }

    let (control_tx, control_rx) = watch::channel(Control::default());
    let shared = Arc::new(Shared {
        addrs: args.addrs.clone(),
        per_order: args.per_order,
        poll_timeout: args.poll_timeout,
        write_to: args.write_to,
        base: Instant::now(),
        control: control_rx,
        finals: Mutex::new(Vec::new()),
        progress: (0..pollers).map(|_| AtomicU64::new(0)).collect(),
        poll_errors: AtomicUsize::new(0),
        put_failures_shown: AtomicUsize::new(0),
    });
    let mut polling = JoinSet::new();
    for p in 0..pollers {
        polling.spawn(poller(Arc::clone(&shared), p));
    }
    let mut publishers: Vec<Publisher> = (0..args.publishers)
        .map(|i| Publisher {
            conns: (0..instances).map(|_| None).collect(),
            rng: Rng(args.seed.wrapping_mul(1_000_003).wrapping_add(i as u64)),
        })
        .collect();

    let mut tally = Tally::default();
    let started = Instant::now();
    let mut generation = 0;
    loop {
        eprintln!(
            "generation {generation}: {} orders, {pollers} pollers",
            args.orders
        );
        create(&shared, generation, args.orders).await?;
        control_tx.send_modify(|c| c.generations = generation + 1);
        // Each order's latest version, and whether a change of it failed.
        let mut latest = vec![1u64; args.orders];
        let mut failed = vec![false; args.orders];
        for status in STEPS {
            if !wait_parked(&shared, &mut control_conns, pollers, limit).await? {
                tally.barrier_timeouts += 1;
            }
            let queue: Vec<usize> = (0..args.orders).filter(|&o| !failed[o]).collect();
            let step = Step {
                generation,
                status,
                queue: Arc::new((queue, AtomicUsize::new(0))),
                deadline: tokio::time::Instant::now() + limit,
            };
            for (order, version) in step.run(&shared, &mut publishers, &mut tally).await? {
                match version {
                    Some(version) => latest[order] = latest[order].max(version),
                    None => failed[order] = true,
                }
            }
        }
        shared
            .finals
            .lock()
            .unwrap_or_else(|err| err.into_inner())
            .push(Arc::new(latest));
        control_tx.send_modify(|c| c.settled = generation + 1);
        generation += 1;
        if started.elapsed() >= Duration::from_secs(args.duration) {
            break;
        }
    }
    let generations = generation;
    let last = generations - 1;
    figures.put("generations", generations as f64);
    tally.put(&mut figures);
    let changes = tally.changes;

    // 3. Grace: until every poller has its last order's final version.
    let finals = Arc::clone(&shared.finals.lock().unwrap_or_else(|err| err.into_inner())[last]);
    let behind = |finals: &[u64]| -> Vec<usize> {
        (0..pollers)
            .filter(|&p| {
                shared.progress[p].load(Ordering::Relaxed)
                    < progress(last, finals[p / args.per_order])
            })
            .collect()
    };
    eprintln!("grace: up to {} s", args.grace);
    let grace_start = Instant::now();
    while !behind(&finals).is_empty() && grace_start.elapsed() < Duration::from_secs(args.grace) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    figures.put("grace_secs", grace_start.elapsed().as_secs_f64());

    // 4. Check: the final versions as every instance tells them.
    let (final_versions, stale_reads) =
        read_finals(&mut control_conns, &args.addrs, last, &finals).await?;
    figures.put("stale_reads", stale_reads as f64);
    let lost = behind(&final_versions);
    // Whether the first change each lost poller missed was made on its own
    // instance: a poller behind in generation `g` at version `v` missed
    // `v + 1`.
    let lost_same = lost
        .iter()
        .filter(|&&p| {
            let at = shared.progress[p].load(Ordering::Relaxed);
            let key = (
                (at >> 32) as u32,
                (p / args.per_order) as u32,
                (at & 0xffff_ffff) + 1,
            );
            changes
                .get(&key)
                .is_some_and(|change| change.instance == p % instances)
        })
        .count();
    figures.put("lost_updates", lost.len() as f64);
    figures.put("lost_same_instance", lost_same as f64);
    if !lost.is_empty() {
        eprintln!(
            "  LOST: {} of {pollers} pollers have not seen their order's final version \
             ({lost_same} of them missed a change made on their own instance)",
            lost.len()
        );
    }

    // Hang up, then attribute each wake to the change that made its version.
    control_tx.send_modify(|c| c.stop = true);
    let mut same = Latencies::default();
    let mut other = Latencies::default();
    let (mut skipped, mut timeouts, mut unmatched) = (0, 0, 0);
    while let Some(report) = polling.join_next().await {
        let report = report?;
        timeouts += report.timeouts;
        for wake in report.wakes {
            skipped += wake.skipped;
            let Some(change) = changes.get(&(wake.generation, wake.order, wake.version)) else {
                unmatched += 1;
                continue;
            };
            let kind = if change.instance == report.instance {
                &mut same
            } else {
                &mut other
            };
            kind.from_answer
                .push((wake.at as f64 - change.answered as f64) / 1e6);
            kind.from_sent
                .push((wake.at as f64 - change.sent as f64) / 1e6);
        }
    }
    same.put(&mut figures, "same");
    other.put(&mut figures, "other");
    figures.put("versions_skipped", skipped as f64);
    figures.put("wakes_unmatched", unmatched as f64);
    figures.put("poll_timeouts", timeouts as f64);
    figures.put(
        "poll_errors",
        shared.poll_errors.load(Ordering::Relaxed) as f64,
    );
    figures.put("phase_secs", started.elapsed().as_secs_f64());
    Ok(figures)
}

// ---------------------------------------------------------------------------
// The side-by-side table.

/// How a row combines several rounds.
#[derive(Clone, Copy)]
enum Combine {
    Median,
    /// Failure counts: the worst round.
    Max,
    /// Work done by the chaos loop: the round that did least.
    Min,
}

/// One row: label, key in the result files, and how rounds combine.
struct Row(&'static str, &'static str, Combine);

use Combine::{Max, Median, Min};

#[rustfmt::skip]
const ROWS: &[Row] = &[
    Row("instances", "instances", Median),
    Row("orders per generation", "orders", Median),
    Row("parked polls per order", "per_order", Median),
    Row("publishers (changes in flight)", "publishers", Median),
    Row("changes all sent to instance (- = random)", "write_to", Median),
    Row("generations (4 changes per order each)", "generations", Median),
    Row("changes made", "changes", Median),
    Row("changes per second", "changes_per_sec", Median),
    Row("PUT latency p50 (ms, sent to 2xx)", "put_p50_ms", Median),
    Row("PUT latency p99 (ms, sent to 2xx)", "put_p99_ms", Median),
    Row("wakes, poll on the writing instance", "wakes_same", Median),
    Row("  wake p50 (ms after the PUT's 2xx)", "wake_same_p50_ms", Median),
    Row("  wake p99 (ms after the PUT's 2xx)", "wake_same_p99_ms", Median),
    Row("  wake max (ms after the PUT's 2xx)", "wake_same_max_ms", Median),
    Row("  wake p50 (ms after the PUT was sent)", "wake_same_sent_p50_ms", Median),
    Row("  wake p99 (ms after the PUT was sent)", "wake_same_sent_p99_ms", Median),
    Row("  wake max (ms after the PUT was sent)", "wake_same_sent_max_ms", Median),
    Row("wakes, poll on another instance", "wakes_other", Median),
    Row("  wake p50 (ms after the PUT's 2xx)", "wake_other_p50_ms", Median),
    Row("  wake p99 (ms after the PUT's 2xx)", "wake_other_p99_ms", Median),
    Row("  wake max (ms after the PUT's 2xx)", "wake_other_max_ms", Median),
    Row("  wake p50 (ms after the PUT was sent)", "wake_other_sent_p50_ms", Median),
    Row("  wake p99 (ms after the PUT was sent)", "wake_other_sent_p99_ms", Median),
    Row("  wake max (ms after the PUT was sent)", "wake_other_sent_max_ms", Median),
    Row("versions a poll skipped", "versions_skipped", Max),
    Row("wakes matching no change (must be 0)", "wakes_unmatched", Max),
    Row("poll answers with no new version", "poll_timeouts", Max),
    Row("poll errors", "poll_errors", Max),
    Row("PUT failures", "put_failures", Max),
    Row("waits for polls to park that timed out", "barrier_timeouts", Max),
    Row("grace used (s)", "grace_secs", Max),
    Row("stale reads after grace (GET on any instance)", "stale_reads", Max),
    Row("LOST UPDATES (pollers short of the final version)", "lost_updates", Max),
    Row("  of which missed a change on their own instance", "lost_same_instance", Max),
    Row("chaos: rounds of terminations (every 2 s)", "chaos_ticks", Min),
    Row("chaos: backends terminated (LISTEN ones)", "chaos_terminated", Min),
    Row("chaos: psql failures", "chaos_failures", Max),
    Row("phase (s)", "phase_secs", Median),
];

fn combine(runs: &[Figures], key: &str, how: Combine) -> f64 {
    let values: Vec<f64> = runs
        .iter()
        .map(|f| f.get(key))
        .filter(|v| !v.is_nan())
        .collect();
    match how {
        Combine::Median => median(values),
        Combine::Max => values.into_iter().reduce(f64::max).unwrap_or(f64::NAN),
        Combine::Min => values.into_iter().reduce(f64::min).unwrap_or(f64::NAN),
    }
}

/// Both phases side by side: medians of rounds, failure counts from the
/// worst round.
fn table(quiet: &[Figures], chaos: &[Figures]) -> String {
    let w = ROWS
        .iter()
        .map(|Row(label, ..)| label.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {:<w$} | {:>9} | {:>9} |",
        format!("figure ({} round(s))", quiet.len().max(chaos.len())),
        "no chaos",
        "chaos"
    );
    let _ = writeln!(
        out,
        "|{}|{}|{}|",
        "-".repeat(w + 2),
        "-".repeat(11),
        "-".repeat(11)
    );
    for Row(label, key, how) in ROWS {
        let _ = writeln!(
            out,
            "| {:<w$} | {:>9} | {:>9} |",
            label,
            format_value(combine(quiet, key, *how)),
            format_value(combine(chaos, key, *how)),
        );
    }
    out
}

/// The targets, and an error if any run lost an update.
fn verdict(quiet: &[Figures], chaos: &[Figures]) -> Result<()> {
    let p99 = combine(quiet, "wake_other_p99_ms", Median);
    let p99_verdict = if p99.is_nan() {
        "not measured"
    } else if p99 <= CROSS_P99_TARGET_MS {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "\nTarget: cross-instance wake p99 <= {CROSS_P99_TARGET_MS} ms without chaos \
         (from the PUT's 2xx): {p99_verdict} ({} ms).",
        format_value(p99)
    );
    let lost: Vec<String> = quiet
        .iter()
        .chain(chaos)
        .map(|f| format_value(f.get("lost_updates")))
        .collect();
    let all_zero = quiet
        .iter()
        .chain(chaos)
        .all(|f| f.get("lost_updates") == 0.0);
    println!(
        "Target: lost updates 0 in every run: {} (per run: {}).",
        if all_zero { "met" } else { "MISSED" },
        lost.join(" ")
    );
    for (phase, runs) in [("no chaos", quiet), ("chaos", chaos)] {
        let refused = combine(runs, "put_failures", Max);
        if refused > 0.0 {
            println!(
                "WARNING: {} PUT(s) failed in a {phase} run (the first few are in the log above): \
                 an instance may have judged a change against a stale copy of the order.",
                format_value(refused)
            );
        }
    }
    for (round, f) in chaos.iter().enumerate() {
        if f.get("chaos_terminated") == 0.0 {
            println!(
                "WARNING: in chaos round {}, the chaos loop terminated no connection: \
                 that round tested nothing (no LISTEN connection matched CHAOS_WHERE).",
                round + 1
            );
        }
    }
    if all_zero {
        Ok(())
    } else {
        Err("updates were lost".into())
    }
}
