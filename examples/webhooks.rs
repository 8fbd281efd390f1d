//! Webhook benchmark behind `bench/webhooks.sh` (issue 11): signed Uber
//! events accepted end to end (signature check, deduplication, apply through
//! the write path, the customer's poll woken), per second.
//!
//! 1. **Setup** (not timed): `--orders` orders made ready for pickup
//!    (`init`, `acknowledge`, `start-picking`, `ready`), and one status poll
//!    parked per order (`/track?version=V`), each on its own connection. A
//!    status poller parks again at once with the version it got.
//! 2. **Events** (timed): `--connections` keep-alive connections share the
//!    orders; for each order one connection sends Uber's four delivery
//!    events in order (`pickup`, `pickup_complete`, `dropoff`, `delivered`),
//!    each signed with HMAC-SHA256 of its body, then the first event again
//!    (a partner's retry), which must come back `"duplicate": true`.
//! 3. **Grace**: every status poller must have seen its order's final
//!    version (four changes: the retry changes nothing).
//!
//! Figures: events accepted per second (first deliveries and retries),
//! request latency, wakes delivered against expected, duplicates. It fails
//! (exits non-zero) on any refused event, a retry not seen as a duplicate,
//! or a lost wake.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use common::figures::{percentile, run_and_report, Figures};
use common::http::{post, Conn};
use common::Result;

/// What one connection sent: request latencies (ms) and retries answered
/// as duplicates.
type Sent = (Vec<f64>, usize);

const STATUSES: [&str; 4] = ["pickup", "pickup_complete", "dropoff", "delivered"];

struct Args {
    addr: SocketAddr,
    orders: usize,
    connections: usize,
    secret: String,
    out: Option<std::path::PathBuf>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        addr: "127.0.0.1:15201".parse()?,
        orders: 500,
        connections: 8,
        secret: "bench-secret".into(),
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => args.addr = value.parse()?,
            "--orders" => args.orders = value.parse()?,
            "--connections" => args.connections = value.parse()?,
            "--secret" => args.secret = value,
            "--out" => args.out = Some(value.into()),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = args()?;
    let out = args.out.clone();
    run_and_report(out.as_deref(), run(args))
}

/// A signed Uber delivery-status event for `order`.
fn event(secret: &str, host: SocketAddr, order: &str, n: usize, status: &str) -> Vec<u8> {
    let body = format!(
        r#"{{"id":"evt-{order}-{n}","kind":"event.delivery_status","status":"{status}","delivery_id":"del-{order}","data":{{"external_id":"{order}","courier":{{"name":"Bench Courier","phone_number":"+15550100","vehicle_type":"car","location":{{"lat":40.71,"lng":-74.0}}}}}}}}"#
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!(
        "POST /tracking/webhooks/uber HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nX-Uber-Signature: {signature}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn run(args: Args) -> Result<Figures> {
    let host = args.addr;
    // Setup: orders ready for pickup.
    let mut conn = Conn::open(host).await?;
    let ids: Vec<String> = (0..args.orders).map(|n| format!("wh-{n}")).collect();
    let mut versions = Vec::with_capacity(ids.len());
    for id in &ids {
        let init = r#"{"store_id":"s-1","customer_id":"c","delivery_provider":"uber"}"#;
        let answer = conn
            .send(&post(&format!("/tracking/orders/{id}/init"), host, init))
            .await?;
        if answer.status != 201 {
            return Err(format!("init {id}: {}", answer.status).into());
        }
        let mut version = 1;
        for step in ["acknowledge", "start-picking", "ready"] {
            let body = format!(r#"{{"order_id":"{id}"}}"#);
            let answer = conn
                .send(&post(&format!("/tracking/store/s-1/{step}"), host, &body))
                .await?;
            if answer.status != 200 {
                return Err(format!("{step} {id}: {}", answer.status).into());
            }
            version = answer.etag_version()?;
        }
        versions.push(version);
    }
    // One status poller per order, parking again after each answer.
    let woken = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut pollers: Vec<tokio::task::JoinHandle<Result<()>>> = Vec::new();
    for (id, version) in ids.iter().cloned().zip(versions.iter().copied()) {
        let woken = Arc::clone(&woken);
        let finished = Arc::clone(&finished);
        pollers.push(tokio::spawn(async move {
            let mut conn = Conn::open(host).await?;
            let mut held = version;
            let last = version + STATUSES.len() as u64;
            while held < last {
                let path = format!("/api/v1/orders/{id}/track?version={held}&timeout=120");
                let answer = conn.send(&common::http::get(&path, host)).await?;
                let now = answer.etag_version()?;
                if now > held {
                    woken.fetch_add(1, Ordering::Relaxed);
                    held = now;
                }
            }
            finished.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }));
    }
    let parked = common::http::wait_count(
        host,
        &common::http::get(common::http::STATS_PATH, host),
        |response| {
            let stats = common::http::stats_data(response)?;
            Ok(common::http::stats_value(&stats, "/long_polls/parked_now")? as usize)
        },
        args.orders,
        Duration::from_secs(30),
    )
    .await?;
    if parked.is_none() {
        return Err("the status polls did not all park".into());
    }

    // Events: connections share the orders.
    let next = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(ids);
    let started = Instant::now();
    let mut senders: Vec<tokio::task::JoinHandle<Result<Sent>>> = Vec::new();
    for _ in 0..args.connections {
        let next = Arc::clone(&next);
        let ids = Arc::clone(&ids);
        let secret = args.secret.clone();
        senders.push(tokio::spawn(async move {
            let mut conn = Conn::open(host).await?;
            let mut latencies = Vec::new();
            let mut duplicates = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(n) else { break };
                for (k, status) in STATUSES.iter().enumerate() {
                    let sent = Instant::now();
                    let answer = conn.send(&event(&secret, host, id, k, status)).await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if answer.status != 200 {
                        return Err(format!("{id} {status}: {}", answer.status).into());
                    }
                }
                // The partner's retry of the first event.
                let sent = Instant::now();
                let answer = conn.send(&event(&secret, host, id, 0, "pickup")).await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                let body: serde_json::Value = serde_json::from_slice(&answer.body)?;
                if answer.status != 200 || body["duplicate"] != serde_json::json!(true) {
                    return Err(format!("{id} retry: {} {body}", answer.status).into());
                }
                duplicates += 1;
            }
            Ok((latencies, duplicates))
        }));
    }
    let mut latencies = Vec::new();
    let mut duplicates = 0;
    for sender in senders {
        let (mut more, dups) = sender.await??;
        latencies.append(&mut more);
        duplicates += dups;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Grace: every poller sees its order's last version.
    let deadline = Instant::now() + Duration::from_secs(30);
    while finished.load(Ordering::Relaxed) < args.orders && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expected_wakes = args.orders * STATUSES.len();
    let wakes = woken.load(Ordering::Relaxed);
    for poller in pollers {
        poller.abort();
    }
    latencies.sort_by(f64::total_cmp);
    let events = latencies.len();
    let mut figures = Figures::default();
    figures.put("orders", args.orders as f64);
    figures.put("connections", args.connections as f64);
    figures.put("events", events as f64);
    figures.put("events_per_second", events as f64 / elapsed);
    figures.put(
        "first_deliveries_per_second",
        (events - duplicates) as f64 / elapsed,
    );
    figures.put("duplicates_recognised", duplicates as f64);
    figures.put("latency_p50_ms", percentile(&latencies, 50.0));
    figures.put("latency_p99_ms", percentile(&latencies, 99.0));
    figures.put("latency_max_ms", latencies.last().copied().unwrap_or(0.0));
    figures.put("wakes_expected", expected_wakes as f64);
    figures.put("wakes_seen", wakes as f64);
    if duplicates != args.orders {
        return Err(format!("{duplicates} of {} retries seen as duplicates", args.orders).into());
    }
    // A poller may see two changes in one answer (the channel holds the
    // latest): what must hold is that every poller reached the last version.
    if finished.load(Ordering::Relaxed) != args.orders {
        return Err(format!(
            "{} of {} status pollers saw their order delivered",
            finished.load(Ordering::Relaxed),
            args.orders
        )
        .into());
    }
    Ok(figures)
}
