//! Just enough HTTP/1.1 for the benchmark tools: requests written as bytes,
//! `Content-Length` answers read off raw tokio sockets, keep-alive
//! connections, and the requests our server's benchmarks send.
//!
//! A hand-written client keeps the tools' own cost per request small and
//! visible (they share the machine with the server), and lets them time the
//! first byte of an answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Result;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the first byte of the answer arrived.
    pub first_byte: Instant,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Our `ETag: "N"`: the order's version.
    pub fn etag_version(&self) -> Result<u64> {
        let tag = self.header("etag").ok_or("no ETag")?;
        Ok(tag.trim_matches('"').parse()?)
    }
}

/// Reads one `Content-Length` response. `buf` keeps bytes across calls on a
/// keep-alive connection.
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Response> {
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
pub const SOURCE_ADDRESSES: usize = 64;

/// Connects a poller. On loopback the pollers spread over
/// [`SOURCE_ADDRESSES`] source addresses: one address has only about 28,000
/// ephemeral ports, and a storm that needs 10,000 new ones while 10,000 are
/// open and 10,000 more sit in TIME_WAIT makes the kernel search the port
/// range on every `connect`; that search, not the server, then sets the pace.
pub async fn connect(addr: SocketAddr, spread: usize) -> Result<TcpStream> {
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
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, request: &[u8]) -> Result<Response> {
        self.stream.write_all(request).await?;
        read_response(&mut self.stream, &mut self.buf).await
    }
}

// ---------------------------------------------------------------------------
// Requests.

pub fn get(path: &str, host: SocketAddr) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

pub fn post(path: &str, host: SocketAddr, body: &str) -> Vec<u8> {
    with_json_body("POST", path, host, body)
}

pub fn put(path: &str, host: SocketAddr, body: &str) -> Vec<u8> {
    with_json_body("PUT", path, host, body)
}

fn with_json_body(method: &str, path: &str, host: SocketAddr, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Our server's figures, `parked_now` among them.
pub const STATS_PATH: &str = "/api/v1/orders/system/stats";

/// The order every bench order starts as, about 500 bytes of JSON like the
/// sample orders, so both servers carry payloads of the same size.
pub fn new_order_body(id: &str) -> String {
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

/// Ours: create order `id` (201, `ETag: "1"`).
pub fn create_order(host: SocketAddr, id: &str) -> Vec<u8> {
    post("/api/v1/orders", host, &new_order_body(id))
}

/// The statuses a new order (`confirmed`) goes through, each the only
/// forward move from the one before. Setting the current status again
/// changes nothing, so an order takes exactly these four changes.
pub const STATUS_STEPS: [&str; 4] = ["preparing", "ready", "picked_up", "delivered"];

/// Ours: move order `id` to `status`, as a restaurant or driver does.
pub fn put_status(host: SocketAddr, id: &str, status: &str) -> Vec<u8> {
    with_json_body(
        "PUT",
        &format!("/api/v1/orders/{id}/status"),
        host,
        &format!(r#"{{"status":"{status}"}}"#),
    )
}

/// Ours: a long poll on order `id` that parks until it passes `version`.
pub fn track(host: SocketAddr, id: &str, version: u64, timeout: u64) -> Vec<u8> {
    get(
        &format!("/api/v1/orders/{id}/track?version={version}&timeout={timeout}"),
        host,
    )
}

// ---------------------------------------------------------------------------
// Our server's figures.

/// The `data` object of a `/system/stats` answer.
pub fn stats_data(response: &Response) -> Result<serde_json::Value> {
    if response.status != 200 {
        return Err(format!("stats: HTTP {}", response.status).into());
    }
    let mut value: serde_json::Value = serde_json::from_slice(&response.body)?;
    Ok(value["data"].take())
}

/// Our server's figures, asked on `conn`.
pub async fn stats(conn: &mut Conn, addr: SocketAddr) -> Result<serde_json::Value> {
    stats_data(&conn.send(&get(STATS_PATH, addr)).await?)
}

/// A count in the stats, by JSON pointer (`/long_polls/parked_now`).
pub fn stats_value(stats: &serde_json::Value, pointer: &str) -> Result<f64> {
    stats
        .pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| format!("no {pointer} in the server's stats").into())
}

// ---------------------------------------------------------------------------
// Waiting for the server.

/// Waits until the server answers `request` with 200.
pub async fn wait_ready(addr: SocketAddr, request: &[u8], limit: Duration) -> Result<()> {
    wait_status(addr, request, |status| status == 200, limit)
        .await
        .map(drop)
}

/// Waits until the server answers `request` with a status `done` accepts,
/// and returns that answer.
pub async fn wait_status(
    addr: SocketAddr,
    request: &[u8],
    done: impl Fn(u16) -> bool,
    limit: Duration,
) -> Result<Response> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match Conn::open(addr).await {
            Ok(mut conn) => match conn.send(request).await {
                Ok(response) if done(response.status) => return Ok(response),
                Ok(response) => format!(
                    "HTTP {}: {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                ),
                Err(err) => err.to_string(),
            },
            Err(err) => err.to_string(),
        };
        if Instant::now() >= deadline {
            let asked = String::from_utf8_lossy(request);
            let asked = asked.lines().next().unwrap_or_default();
            return Err(format!(
                "{addr} did not answer `{asked}` as awaited within {limit:?}; last: {last}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks `request` of the server until `count` reads at least `n` from its
/// answer (parked polls, say), or the limit passes. Returns when it did, or
/// `None`.
pub async fn wait_count(
    addr: SocketAddr,
    request: &[u8],
    count: impl Fn(&Response) -> Result<usize>,
    n: usize,
    limit: Duration,
) -> Result<Option<Instant>> {
    let deadline = Instant::now() + limit;
    let mut conn = Conn::open(addr).await?;
    loop {
        let response = conn.send(request).await?;
        let counted = count(&response)?;
        if counted >= n {
            return Ok(Some(Instant::now()));
        }
        if Instant::now() >= deadline {
            eprintln!("  only {counted} of {n} after {limit:?}");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
