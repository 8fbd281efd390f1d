//! Starting a server per test and talking to it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use order_tracker::orders::OrderService;
use order_tracker::requests::Requestor;
use order_tracker::{Application, Config};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything that should happen "at once"; the machine is
/// shared and noisy, so this proves waking, not speed.
pub const PROMPTLY: Duration = Duration::from_secs(5);

/// A running server and a client for it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The server's requestor, for what HTTP cannot show: its state after
    /// shutdown.
    pub requestor: Requestor,
    /// The server's order service, to set up states no endpoint reaches
    /// yet (a driver assigned).
    pub service: OrderService,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    /// The SQLite file's directory, removed when the test ends.
    data_dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database, dropped when the test ends.
    _pg: Option<PgDatabase>,
}

/// A server with the default configuration (sample orders 101–103 seeded).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server with `tweak` applied to the default configuration, on the
/// default store (SQLite) in a file of its own; or, with
/// `TEST_API_STORE=postgres`, on a fresh PostgreSQL database (`.ci/run` runs
/// the suite both ways).
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    if std::env::var("TEST_API_STORE").as_deref() == Ok("postgres") {
        let pg = PgDatabase::create("TEST_API_STORE=postgres")
            .await
            .expect("TEST_API_STORE=postgres needs TEST_DATABASE_URL");
        let mut app = spawn_app_at(&pg.url, tweak).await;
        app._pg = Some(pg);
        return app;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut app = spawn_app_at(&sqlite_url(&dir), tweak).await;
    app.data_dir = Some(dir);
    app
}

/// The URL of a SQLite file in `dir`.
pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite:{}", dir.path().join("orders.db").display())
}

/// A server on the store `database_url`, so a test can stop it and start
/// another on the same data.
pub async fn spawn_app_at(database_url: &str, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.database_url = database_url.to_owned();
    config.shutdown_grace = 3;
    tweak(&mut config);
    let app = Application::build(config)
        .await
        .expect("the application builds");
    let addr = app.local_addr();
    let shutdown = app.shutdown_token();
    let requestor = app.requestor().clone();
    let service = app.service().clone();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        client: reqwest::Client::new(),
        requestor,
        service,
        shutdown,
        server,
        data_dir: None,
        _pg: None,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        json_of(self.get(path).await).await
    }

    /// `GET /api/v1/orders/{id}/track{query}`.
    pub async fn track(&self, id: &str, query: &str) -> (StatusCode, Value) {
        self.get_json(&format!("/api/v1/orders/{id}/track{query}"))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent");
        json_of(response).await
    }

    /// `POST path` without a body.
    pub async fn post(&self, path: &str) -> (StatusCode, Value) {
        json_of(
            self.client
                .post(self.url(path))
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }

    pub async fn put_status(&self, id: &str, status: &str) -> (StatusCode, Value) {
        self.put_status_with(id, &json!({ "status": status }), &[])
            .await
    }

    /// `PUT /api/v1/orders/{id}/status` with `body` and extra `headers`;
    /// returns the response itself, for its headers.
    pub async fn put_status_raw(
        &self,
        id: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .put(self.url(&format!("/api/v1/orders/{id}/status")))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request sent")
    }

    /// `PUT /api/v1/orders/{id}/status` with `body` and extra `headers`.
    pub async fn put_status_with(
        &self,
        id: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        json_of(self.put_status_raw(id, body, headers).await).await
    }

    /// `GET /api/v1/orders/{id}/history{query}`.
    pub async fn history(&self, id: &str, query: &str) -> (StatusCode, Value) {
        self.get_json(&format!("/api/v1/orders/{id}/history{query}"))
            .await
    }

    /// The order as `GET /api/v1/orders/{id}` returns it.
    pub async fn order(&self, id: &str) -> Value {
        let (status, body) = self.get_json(&format!("/api/v1/orders/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    pub async fn version(&self, id: &str) -> u64 {
        self.order(id).await["version"]
            .as_u64()
            .expect("version is a number")
    }

    pub async fn create_order(&self, body: &Value) -> (StatusCode, Value) {
        self.post_json("/api/v1/orders", body).await
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = self.get_json("/api/v1/orders/system/stats").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    /// Waits until exactly `n` polls are parked, as stats report it.
    pub async fn wait_parked(&self, n: u64) {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let parked = self.stats().await["long_polls"]["parked_now"].as_u64();
            if parked == Some(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} parked polls, stats say {parked:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a long poll in the background.
    pub fn spawn_track(&self, id: &str, query: &str) -> JoinHandle<(StatusCode, Value, Duration)> {
        let client = self.client.clone();
        let url = self.url(&format!("/api/v1/orders/{id}/track{query}"));
        tokio::spawn(async move {
            let started = Instant::now();
            let response = client.get(url).send().await.expect("request sent");
            let (status, body) = json_of(response).await;
            (status, body, started.elapsed())
        })
    }

    /// Asks the server to stop, as SIGTERM would.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for the server to finish after [`TestApp::begin_shutdown`].
    pub async fn stopped(self) -> std::io::Result<()> {
        self.server.await.expect("server task does not panic")
    }
}

/// An order body that passes validation.
pub fn new_order(id: &str) -> Value {
    json!({
        "id": id,
        "customer_id": "42",
        "restaurant_name": "Luigi's Pizzeria",
        "delivery_address": "12 Harbour Street, Springfield",
        "items": [{"name": "Margherita Pizza", "quantity": 2, "unit_price": 12.5}]
    })
}

/// Status and JSON body; the body must be JSON whatever the status.
pub async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body read");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: body is not JSON: {text}"))
    };
    (status, body)
}

/// Asserts an error response has our shape and code.
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(body["error"], json!(code), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error has a message: {body}"
    );
}

/// Sends `method path` exactly as written and reads the whole answer.
/// HTTP clients, reqwest included, resolve `.` and `..` segments (also
/// `%2E%2E`) before sending, so only a raw request shows what the server
/// does when one arrives anyway.
pub async fn raw_request(app: &TestApp, method: &str, path: &str) -> (StatusCode, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connects");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        app.addr
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request written");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("answer read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "a JSON body of known length: {head}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let body =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{status}: body is not JSON: {body}"));
    (status, body)
}

/// Sends a track request on a raw connection and leaves it parked; dropping
/// the stream is a client that walks away mid-poll.
pub async fn park_raw(app: &TestApp, id: &str, query: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connects");
    let request = format!(
        "GET /api/v1/orders/{id}/track{query} HTTP/1.1\r\nHost: {}\r\n\r\n",
        app.addr
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request written");
    stream
}

/// A fresh PostgreSQL database for one test, dropped when this is dropped
/// (even when the test panics). `None`, with a loud note, when
/// `TEST_DATABASE_URL` names no server.
pub struct PgDatabase {
    /// The server, as `TEST_DATABASE_URL` names it.
    server: String,
    pub name: String,
    /// The new database's URL.
    pub url: String,
}

impl PgDatabase {
    pub async fn create(test: &str) -> Option<PgDatabase> {
        use sqlx::{Connection, Executor};
        let Ok(server) = std::env::var("TEST_DATABASE_URL") else {
            // Straight to stderr, past the test harness's output capture, so the
            // skip is seen even when the test passes.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED: {test} needs PostgreSQL; set TEST_DATABASE_URL to run it\n")
                    .as_bytes(),
            );
            return None;
        };
        let name = format!("ot_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .expect("TEST_DATABASE_URL connects");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("a test database can be created");
        let base = server.split('?').next().unwrap_or(&server);
        let authority = base.find("://").map_or(0, |i| i + 3);
        let base = match base[authority..].find('/') {
            Some(slash) => &base[..authority + slash],
            None => base,
        };
        let url = format!("{base}/{name}");
        Some(PgDatabase { server, name, url })
    }

    /// Runs `sql` on the server's own database (not the test's).
    pub async fn admin(&self, sql: &str) {
        use sqlx::{Connection, Executor};
        let mut admin = sqlx::PgConnection::connect(&self.server).await.unwrap();
        admin.execute(sql).await.unwrap();
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await; a thread with its own runtime can.
        let _ = std::thread::spawn(move || {
            use sqlx::{Connection, Executor};
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
                    let _ = admin.execute(sql.as_str()).await;
                }
            });
        })
        .join();
    }
}
