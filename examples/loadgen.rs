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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

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
        Command::Run(args) => {
            // One thread: the tool must stay light and leave the other core to
            // the server.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let figures = runtime.block_on(run(&args))?;
            let text = figures.render();
            print!("{text}");
            if let Some(out) = &args.out {
                std::fs::write(out, text)?;
            }
            Ok(())
        }
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

/// The order every bench order starts as, about 500 bytes of JSON like the
/// sample orders, so both servers carry payloads of the same size.
fn new_order_body(id: &str) -> String {
    format!(
        concat!(
            r#"{{"id":"{id}","customer_id":"c{id}","restaurant_name":"Luigi's Pizzeria","#,
            r#""delivery_address":"12 Harbour Street, Springfield","items":["#,
            r#"{{"name":"Margherita Pizza","quantity":2,"unit_price":12.5}},"#,
            r#"{{"name":"Tiramisu","quantity":1,"unit_price":6.0}},"#,
            r#"{{"name":"Sparkling Water","quantity":2,"unit_price":2.5}}]}}"#
        ),
        id = id
    )
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

fn post(path: &str, host: SocketAddr, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Target {
    /// The request that creates order `i`.
    fn create(self, host: SocketAddr, i: usize) -> Vec<u8> {
        let id = order_id(i);
        match self {
            Target::Ours => post("/api/v1/orders", host, &new_order_body(&id)),
            Target::Nchan => post(
                &format!("/pub/{id}"),
                host,
                &nchan_message(&id, "confirmed", 1),
            ),
        }
    }

    /// The cursor a create answer gives.
    fn created_cursor(self, response: &Response) -> Result<Cursor> {
        match self {
            Target::Ours => version_of(response),
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
            Target::Ours => {
                let body = r#"{"status":"preparing"}"#;
                format!(
                    "PUT /api/v1/orders/{id}/status HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            }
            Target::Nchan => post(
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
            Cursor::Version(version) => format!(
                "GET /api/v1/orders/{id}/track?version={version}&timeout={timeout} HTTP/1.1\r\nHost: {host}\r\n\r\n"
            ),
            Cursor::MessageId {
                last_modified,
                etag,
            } => format!(
                "GET /sub/{id} HTTP/1.1\r\nHost: {host}\r\nIf-Modified-Since: {last_modified}\r\nIf-None-Match: {etag}\r\n\r\n"
            ),
        }
        .into_bytes()
    }

    /// The cursor a woken poll's answer gives.
    fn woken_cursor(self, response: &Response) -> Result<Cursor> {
        match self {
            Target::Ours => version_of(response),
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
            Target::Ours => "/api/v1/orders/system/stats",
            Target::Nchan => "/nchan_stub_status",
        };
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
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
}

/// `ETag: "N"` as a version cursor.
fn version_of(response: &Response) -> Result<Cursor> {
    let tag = response.header("etag").ok_or("no ETag")?;
    Ok(Cursor::Version(tag.trim_matches('"').parse()?))
}

// ---------------------------------------------------------------------------
// Just enough HTTP/1.1.

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// When the first byte of the answer arrived.
    first_byte: Instant,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Reads one `Content-Length` response. `buf` keeps bytes across calls on a
/// keep-alive connection.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Response> {
    let mut first_byte = None;
    let head_end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end;
        }
        let before = buf.len();
        buf.reserve(4096);
        let n = stream.read_buf(buf).await?;
        if n == 0 {
            return Err("connection closed before an answer".into());
        }
        if before == 0 {
            first_byte.get_or_insert_with(Instant::now);
        }
    };
    let first_byte = first_byte.unwrap_or_else(Instant::now);
    let head = std::str::from_utf8(&buf[..head_end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty answer")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .ok_or("no status code")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse())
        .transpose()?
        .ok_or("no Content-Length")?;
    let total = head_end + 4 + length;
    while buf.len() < total {
        buf.reserve(total - buf.len());
        if stream.read_buf(buf).await? == 0 {
            return Err("connection closed mid-answer".into());
        }
    }
    let body = buf[head_end + 4..total].to_vec();
    buf.drain(..total);
    Ok(Response {
        status,
        headers,
        body,
        first_byte,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Source addresses the pollers spread over: 127.0.0.2 to 127.0.0.65.
const SOURCE_ADDRESSES: usize = 64;

/// Connects a poller. On loopback the pollers spread over
/// [`SOURCE_ADDRESSES`] source addresses: one address has only about 28,000
/// ephemeral ports, and a storm that needs 10,000 new ones while 10,000 are
/// open and 10,000 more sit in TIME_WAIT makes the kernel search the port
/// range on every `connect`; that search, not the server, then sets the pace.
async fn connect(addr: SocketAddr, spread: usize) -> Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(v4) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            if v4.ip().is_loopback() {
                let last = 2 + (spread % SOURCE_ADDRESSES) as u8;
                socket.bind(SocketAddr::from(([127, 0, 0, last], 0)))?;
            }
            socket
        }
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A keep-alive connection for requests in sequence.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    async fn send(&mut self, request: &[u8]) -> Result<Response> {
        self.stream.write_all(request).await?;
        read_response(&mut self.stream, &mut self.buf).await
    }
}

// ---------------------------------------------------------------------------
// The server's own figures, from /proc.

/// `pid` and every process whose parent it is (nginx's workers).
fn family(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // The command name may hold spaces; fields after ") " are fixed.
            let parent = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok());
            if parent == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// A `kB` field of a `/proc` file, summed over the family.
fn kib_field(pids: &[u32], file: &str, field: &str) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))?;
        let line = text
            .lines()
            .find(|line| line.starts_with(field))
            .ok_or_else(|| format!("no {field} in /proc/{pid}/{file}"))?;
        total += line
            .split_whitespace()
            .nth(1)
            .ok_or("malformed line")?
            .parse::<u64>()?;
    }
    Ok(total)
}

/// Resident memory, in bytes: RSS as `/proc/PID/status` reports it, and PSS,
/// which splits pages shared between processes (nginx's master and workers)
/// fairly instead of counting them once per process.
#[derive(Clone, Copy)]
struct Memory {
    rss: u64,
    pss: u64,
}

fn memory(pid: u32) -> Result<Memory> {
    let pids = family(pid);
    Ok(Memory {
        rss: kib_field(&pids, "status", "VmRSS:")? * 1024,
        pss: kib_field(&pids, "smaps_rollup", "Pss:")? * 1024,
    })
}

/// CPU seconds of the family since each process started: (user, system).
fn cpu_seconds(pid: u32) -> Result<(f64, f64)> {
    // Clock ticks per second; 100 on Linux for every architecture we run on.
    const TICKS: f64 = 100.0;
    let (mut user, mut system) = (0u64, 0u64);
    for pid in family(pid) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let rest = stat.rsplit_once(") ").ok_or("malformed stat")?.1;
        let fields: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after ") ".
        user += fields[11].parse::<u64>()?;
        system += fields[12].parse::<u64>()?;
    }
    Ok((user as f64 / TICKS, system as f64 / TICKS))
}

// ---------------------------------------------------------------------------
// The run.

/// Everything a run measured, by key. Kept as text so `table` can read it back.
struct Figures(BTreeMap<String, f64>);

impl Figures {
    fn render(&self) -> String {
        let mut text = String::new();
        for (key, value) in &self.0 {
            let _ = writeln!(text, "{key} {value}");
        }
        text
    }

    fn load(path: &Path) -> Result<Figures> {
        let text = std::fs::read_to_string(path)?;
        let mut map = BTreeMap::new();
        for line in text.lines() {
            if let Some((key, value)) = line.split_once(' ') {
                map.insert(key.to_owned(), value.trim().parse()?);
            }
        }
        Ok(Figures(map))
    }

    fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(f64::NAN)
    }
}

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

/// Asks the server how many polls are parked until it says `n`, or the limit
/// passes. Returns when it did, or `None`.
async fn wait_parked(
    target: Target,
    addr: SocketAddr,
    n: usize,
    limit: Duration,
) -> Result<Option<Instant>> {
    let deadline = Instant::now() + limit;
    let mut conn = Conn::open(addr).await?;
    let request = target.parked_request(addr);
    loop {
        let response = conn.send(&request).await?;
        let parked = target.parked_count(&response)?;
        if parked >= n {
            return Ok(Some(Instant::now()));
        }
        if Instant::now() >= deadline {
            eprintln!("  only {parked} of {n} parked after {limit:?}");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the server answers at all.
async fn wait_ready(target: Target, addr: SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut conn) = Conn::open(addr).await {
            if let Ok(response) = conn.send(&target.parked_request(addr)).await {
                if response.status == 200 {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("{addr} did not answer within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run(args: &RunArgs) -> Result<Figures> {
    let target = args.target;
    let addr = args.addr;
    let limit = Duration::from_secs(args.phase_limit);
    let polls = args.orders * args.per_order;
    let mut figures = BTreeMap::new();
    let mut put = |key: &str, value: f64| {
        figures.insert(key.to_owned(), value);
    };
    put("orders", args.orders as f64);
    put("parked_polls", polls as f64);
    put("publishers", args.publishers as f64);

    wait_ready(target, addr, limit).await?;

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
    let parked_at = wait_parked(target, addr, polls, limit).await?;
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
    let storm_parked = wait_parked(target, addr, woken, limit).await?;
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
    Ok(Figures(figures))
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

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "-".to_owned()
    } else if (value - value.round()).abs() < 1e-6 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a == 0.0 && b == 0.0 {
        "-".to_owned()
    } else if b == 0.0 || a.is_nan() || b.is_nan() {
        "n/a".to_owned()
    } else {
        format!("{:.2}", a / b)
    }
}

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
