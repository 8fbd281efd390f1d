//! Measures what idle orders cost a running server, before and after the hub
//! evicts them (`bench/idle_memory.sh` runs it).
//!
//! Creates `--orders` orders over HTTP with `--concurrency` connections,
//! reads the server's resident memory (`/proc/PID/status`), waits until
//! `/system/stats` reports the cache emptied by eviction (the server must run
//! with a short `--idle-eviction`), waits `--settle` seconds for the
//! allocator to give freed pages back, and reads it again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Resident memory of a server holding idle orders, before and after eviction")]
struct Args {
    /// The server, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:15201")]
    addr: String,
    /// The server's process id, to read its memory.
    #[arg(long)]
    pid: u32,
    /// Orders to create.
    #[arg(long, default_value_t = 200_000)]
    orders: usize,
    /// Connections creating them at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to wait for the cache to empty.
    #[arg(long, default_value_t = 300)]
    evict_limit: u64,
    /// Seconds to wait after eviction before the second reading.
    #[arg(long, default_value_t = 15)]
    settle: u64,
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server runs");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS is reported")
        * 1024
}

async fn cached(client: &reqwest::Client, base: &str) -> u64 {
    let stats: Value = client
        .get(format!("{base}/api/v1/orders/system/stats"))
        .send()
        .await
        .expect("stats answer")
        .json()
        .await
        .expect("stats are JSON");
    stats["data"]["long_polls"]["orders_cached"]
        .as_u64()
        .expect("orders_cached is reported")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let base = format!("http://{}", args.addr);
    let client = reqwest::Client::new();
    let start_rss = rss(args.pid);

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let client = client.clone();
            let url = format!("{base}/api/v1/orders");
            let next = Arc::clone(&next);
            let total = args.orders;
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return;
                    }
                    let body = json!({
                        "id": format!("idle-{n}"),
                        "customer_id": format!("c{}", n % 1000),
                        "restaurant_name": "Luigi's Pizzeria",
                        "delivery_address": "12 Harbour Street, Springfield",
                        "items": [{"name": "Margherita Pizza", "quantity": 2, "unit_price": 12.5}]
                    });
                    let response = client.post(&url).json(&body).send().await.expect("sent");
                    assert_eq!(response.status(), 201, "order {n} created");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker finished");
    }
    let created_in = started.elapsed();
    let held = cached(&client, &base).await;
    let full_rss = rss(args.pid);

    let deadline = Instant::now() + Duration::from_secs(args.evict_limit);
    while cached(&client, &base).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the cache empties within the limit"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let evicted_rss = rss(args.pid);

    println!(
        "created {} orders in {:.1} s ({:.0}/s)",
        args.orders,
        created_in.as_secs_f64(),
        args.orders as f64 / created_in.as_secs_f64()
    );
    println!("rss at start:                 {:8.1} MiB", mib(start_rss));
    println!(
        "rss with {held} orders cached: {:8.1} MiB ({:.0} B per order over the start)",
        mib(full_rss),
        full_rss.saturating_sub(start_rss) as f64 / args.orders as f64
    );
    println!(
        "rss after eviction (0 cached): {:8.1} MiB ({:.0} B per order over the start)",
        mib(evicted_rss),
        evicted_rss.saturating_sub(start_rss) as f64 / args.orders as f64
    );
}
