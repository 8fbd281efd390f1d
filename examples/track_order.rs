//! The seed's mobile client loop, in Rust.
//!
//! ```sh
//! cargo run --example track_order -- 101
//! cargo run --example track_order -- 102 --speed 60   # with simulate-workflow?speed=60
//! ```
//!
//! It long polls `/track`, prints the order whenever `has_update` is true,
//! remembers `data.updated_at` as its cursor (pasted into the URL as is, like
//! the seed's JavaScript), sleeps `next_poll_interval` seconds between polls
//! (battery conservation), stops when the interval is 0, and backs off
//! exponentially on errors, honouring `Retry-After`.

use std::time::Duration;

use clap::Parser;
use serde_json::Value;

/// Long-poll timeout sent with every poll after the first, as in the seed.
const POLL_TIMEOUT_SECS: u64 = 30;
/// First wait after an error (the seed waits 10 seconds).
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait after repeated errors.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Parser)]
#[command(about = "Track an order the way the seed's mobile app does")]
struct Args {
    /// The order to track.
    order_id: String,
    /// Where the server is.
    #[arg(long, default_value = "http://127.0.0.1:5001")]
    base: String,
    /// Divide every wait by this, to follow a simulation run with ?speed=N.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
}

/// Why one poll did not produce an answer.
enum PollError {
    /// The server asked us to come back later (429/503).
    RetryAfter(Duration, String),
    /// The request itself is wrong (unknown order, bad id): retrying won't help.
    Fatal(String),
    /// Network trouble or a server error: back off and retry.
    Other(String),
}

async fn poll(client: &reqwest::Client, url: &str) -> Result<Value, PollError> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|err| PollError::Other(err.to_string()))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .map(Duration::from_secs);
    let body: Value = response
        .json()
        .await
        .map_err(|err| PollError::Other(err.to_string()))?;
    if status.is_success() && body["success"] == Value::Bool(true) {
        return Ok(body);
    }
    let message = format!(
        "{status}: {}",
        body["message"].as_str().unwrap_or("no message")
    );
    Err(match retry_after {
        Some(wait) => PollError::RetryAfter(wait, message),
        None if status.is_client_error() => PollError::Fatal(message),
        None => PollError::Other(message),
    })
}

fn scaled(wait: Duration, speed: f64) -> Duration {
    wait.div_f64(speed.max(f64::MIN_POSITIVE))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        // Longer than any long poll, so a parked request is never cut short.
        .timeout(Duration::from_secs(POLL_TIMEOUT_SECS + 30))
        .build()
        .expect("an HTTP client with default TLS-free settings builds");
    let track = format!(
        "{}/api/v1/orders/{}/track",
        args.base.trim_end_matches('/'),
        args.order_id
    );
    let mut last_update: Option<String> = None;
    let mut backoff = FIRST_BACKOFF;
    println!("Tracking order {} at {}", args.order_id, args.base);

    loop {
        let url = match &last_update {
            Some(at) => format!("{track}?last_update={at}&timeout={POLL_TIMEOUT_SECS}"),
            None => track.clone(),
        };
        let body = match poll(&client, &url).await {
            Ok(body) => body,
            Err(error) => {
                let (wait, message) = match error {
                    PollError::RetryAfter(wait, message) => (wait, message),
                    PollError::Other(message) => (backoff, message),
                    PollError::Fatal(message) => {
                        println!("Cannot track: {message}");
                        std::process::exit(1);
                    }
                };
                println!("Tracking error: {message}; retrying in {}s", wait.as_secs());
                tokio::time::sleep(scaled(wait, args.speed)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        let order = &body["data"];
        if body["has_update"] == Value::Bool(true) {
            println!(
                "Order {}: {} (version {}, estimated delivery {})",
                order["id"].as_str().unwrap_or("?"),
                order["status"].as_str().unwrap_or("?"),
                order["version"],
                order["estimated_delivery"].as_str().unwrap_or("none"),
            );
            last_update = order["updated_at"].as_str().map(str::to_owned);
        }
        let interval = body["next_poll_interval"].as_u64().unwrap_or(0);
        if interval == 0 {
            println!("Order complete: stopped tracking to save battery.");
            return;
        }
        println!("  {}", body["battery_tip"].as_str().unwrap_or(""));
        tokio::time::sleep(scaled(Duration::from_secs(interval), args.speed)).await;
    }
}
