//! Nothing acknowledged is lost: concurrent writers against the real binary,
//! killed with SIGKILL mid-load (SQLite and PostgreSQL), and PostgreSQL
//! connections killed mid-load. Every change answered 2xx must be there
//! afterwards, at the version it was answered with, and no order's history
//! may have a gap.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::helpers::{new_order, PgDatabase};

/// Concurrent writers, each walking its own orders through the lifecycle.
const WRITERS: usize = 16;
/// Acknowledged changes to wait for before pulling the plug.
const ACKS_BEFORE_KILL: usize = 300;
const LIFECYCLE: [&str; 4] = ["preparing", "ready", "picked_up", "delivered"];

/// The server binary, started as a user would.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub async fn start(database_url: &str) -> Server {
        Server::start_with(database_url, &[]).await
    }

    /// [`Server::start`] with more flags.
    pub async fn start_with(database_url: &str, flags: &[&str]) -> Server {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_order-tracker"))
            .args(["--addr", &addr.to_string(), "--database-url", database_url])
            .arg("--no-sample-orders")
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the server starts");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = client
                .get(format!("http://{addr}/api/v1/health"))
                .send()
                .await;
            if health.is_ok_and(|r| r.status() == StatusCode::OK) {
                return Server { child, addr };
            }
            assert!(Instant::now() < deadline, "the server answers within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("the server can be killed");
    }
}

/// (order, version, status) of every change answered 2xx.
type Acked = Arc<Mutex<Vec<(String, u64, String)>>>;

/// One writer: creates orders and walks each through the lifecycle until
/// `stop`, or until the server is gone. A failed change abandons its order
/// (its state is unknown) and moves on to a new one.
async fn writer(addr: SocketAddr, n: usize, acked: Acked, stop: CancellationToken) {
    let client = reqwest::Client::new();
    let base = format!("http://{addr}/api/v1/orders");
    for serial in 0.. {
        let id = format!("w{n}-{serial}");
        let Some(response) = send(client.post(&base).json(&new_order(&id)), &stop).await else {
            return;
        };
        if response.status() != StatusCode::CREATED {
            continue;
        }
        acked
            .lock()
            .unwrap()
            .push((id.clone(), 1, "confirmed".into()));
        for status in LIFECYCLE {
            let request = client
                .put(format!("{base}/{id}/status"))
                .json(&json!({ "status": status }));
            let Some(response) = send(request, &stop).await else {
                return;
            };
            if response.status() != StatusCode::OK {
                break;
            }
            let body: Value = response.json().await.unwrap_or_default();
            let version = body["data"]["version"].as_u64().expect("a version");
            acked
                .lock()
                .unwrap()
                .push((id.clone(), version, status.into()));
        }
    }
}

/// The response, or `None` once stopped or when the server is gone.
async fn send(
    request: reqwest::RequestBuilder,
    stop: &CancellationToken,
) -> Option<reqwest::Response> {
    tokio::select! {
        response = request.send() => response.ok(),
        () = stop.cancelled() => None,
    }
}

async fn wait_for_acks(acked: &Acked, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "{n} changes acknowledged within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every acknowledged change is in the history at its version, and every
/// order's versions run 1, 2, 3… with no gap up to its current version.
async fn verify(addr: SocketAddr, acked: &[(String, u64, String)]) {
    let client = reqwest::Client::new();
    let mut expected: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
    for (id, version, status) in acked {
        expected.entry(id).or_default().push((*version, status));
    }
    for (id, changes) in expected {
        let history: Value = client
            .get(format!(
                "http://{addr}/api/v1/orders/{id}/history?limit=500"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = history["data"]
            .as_array()
            .unwrap_or_else(|| panic!("order {id} is missing: {history}"));
        let versions: Vec<u64> = events
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect();
        let gap_free: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, gap_free, "order {id} has gap-free versions");
        for (version, status) in changes {
            let event = &events[version as usize - 1];
            assert_eq!(event["status"], json!(status), "order {id} v{version}");
        }
        let order: Value = client
            .get(format!("http://{addr}/api/v1/orders/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            order["data"]["version"].as_u64(),
            versions.last().copied(),
            "order {id}: the snapshot matches its last event"
        );
    }
}

/// Loads the server at `url`, kills it with SIGKILL mid-load, restarts it
/// on the same data and checks every acknowledged change.
async fn survives_kill_9(url: &str) {
    let server = Server::start(url).await;
    let addr = server.addr;
    let acked: Acked = Arc::default();
    let stop = CancellationToken::new();
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| tokio::spawn(writer(addr, n, Arc::clone(&acked), stop.clone())))
        .collect();
    wait_for_acks(&acked, ACKS_BEFORE_KILL).await;
    server.kill().await;
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= ACKS_BEFORE_KILL);

    let server = Server::start(url).await;
    verify(server.addr, &acked).await;
    server.kill().await;
}

#[tokio::test]
async fn sqlite_loses_no_acknowledged_change_to_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("orders.db").display());
    survives_kill_9(&url).await;
}

#[tokio::test]
async fn postgres_loses_no_acknowledged_change_to_kill_9() {
    let Some(db) = PgDatabase::create("postgres_loses_no_acknowledged_change_to_kill_9").await
    else {
        return;
    };
    survives_kill_9(&db.url).await;
}

#[tokio::test]
async fn postgres_connections_killed_mid_load_lose_no_acknowledged_change() {
    let Some(db) =
        PgDatabase::create("postgres_connections_killed_mid_load_lose_no_acknowledged_change")
            .await
    else {
        return;
    };
    let server = Server::start(&db.url).await;
    let addr = server.addr;
    let acked: Acked = Arc::default();
    let stop = CancellationToken::new();
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| tokio::spawn(writer(addr, n, Arc::clone(&acked), stop.clone())))
        .collect();
    for round in 1..=3 {
        wait_for_acks(&acked, round * ACKS_BEFORE_KILL / 2).await;
        db.admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ))
        .await;
    }
    // The server recovers: writers keep getting changes through.
    wait_for_acks(&acked, 2 * ACKS_BEFORE_KILL).await;
    stop.cancel();
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    verify(addr, &acked).await;
    server.kill().await;
}
