//! Serving: the accept loop and one HTTP/1.1 connection per client, with
//! graceful shutdown.
//!
//! This replaces `axum::serve` for what a long-polling server spends per idle
//! client (BENCHMARKS.md). For every new connection, `axum::serve` asks the
//! router for a fresh service, and a `Router` answers that by rebuilding its
//! route table (`with_state`: a new hash map and every route re-boxed). The
//! copy lives as long as the connection and the rebuild costs CPU on every
//! reconnect. Here every connection shares the one router by reference count
//! (cloning [`App`] clones an `Arc`).
//! Measured with 10,000 parked polls: 32.2 KB → 13.4 KB of resident memory per
//! parked poll, and 3.3 s → 0.4 s to accept and park all of them.
//!
//! The connections speak HTTP/1.1 only, which is what phones long-polling over
//! plain HTTP use; this also skips the HTTP/2 preface sniffing of hyper-util's
//! `auto` builder.
//!
//! Shutdown: when the token is cancelled the listener closes, every connection
//! is asked to finish its current request and close (parked polls answer at
//! once, because the hub watches the same token), and [`serve`] returns when
//! all connections are gone. The caller bounds that wait.

use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::App;

/// Longest time a client may take to send a request head, and longest a
/// keep-alive connection may sit idle between requests. hyper's default; it
/// keeps half-open and slow-loris connections from holding memory forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after an `accept` error that is about this process (out of file
/// descriptors, out of memory) rather than about one client, so the loop does
/// not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` and serves `app` on each until
/// `shutdown` is cancelled; then stops accepting, lets every connection finish
/// its current request, and returns once they are all closed.
pub async fn serve(listener: TcpListener, app: App, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // Copy the (small) body behind the head and send one buffer, rather
        // than queueing it for a vectored write: saves a queue allocation
        // and its bookkeeping per answer (callgrind: -3% instructions over a
        // whole loadgen run).
        .writev(false);
    loop {
        let stream = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "cannot accept connections; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(
            stream,
            http.clone(),
            app.clone(),
            shutdown.clone(),
        ));
    }
    // New clients are refused from here on; the open connections drain.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one client until it hangs up, or until shutdown lets its current
/// request finish.
async fn connection(
    stream: TcpStream,
    http: http1::Builder,
    app: App,
    shutdown: CancellationToken,
) {
    // Answers are written whole; Nagle's algorithm would only delay the next
    // answer on a keep-alive connection behind a delayed ACK.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = served {
        // Clients hanging up mid-request are routine for long polls.
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Errors that concern one client only; the next `accept` is unaffected.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
