//! order-tracker: customers follow a food or grocery order from "confirmed" to
//! "delivered" in near real time, by long polling, without draining their
//! phone's battery.
//!
//! One write path, one notification path:
//!
//! ```text
//! PUT /status ──┐            ┌ writer task (one per process) ───────────────────────┐
//! POST /orders ─┤  Command   │ domain rules ─► store: snapshot + event (+ key),      │
//! simulator ────┼──────────► │ many commands per transaction (group commit) ─►       │
//! requestor ────┘  (who, If- │ hub.publish(committed snapshot) ─► reply              │
//!                  Match, key)└──────────────────────────────────┬────────────────────┘
//!                                                                ▼ per-order watch channel
//!              GET /track (parked long polls), GET /orders/{id}, history, stats
//! ```
//!
//! Several instances may share one PostgreSQL database: each commit sends a
//! `NOTIFY` hint in its transaction, and each instance's change feed
//! (`orders::feed`) reads what moved among the orders it holds, catching up
//! after a lost connection and on a slow sweep. Work that must run once
//! (simulations, processing streams) is leased (`orders::leases`).
//!
//! - [`domain`]: plain types and rules: statuses and transitions, orders,
//!   snapshots, cursors, the poll-interval policy, the seed's timeline.
//! - [`tracking`]: the hub, a bounded cache of watched orders: per-order
//!   `watch` channels, the long-poll wait, connection caps as RAII slots,
//!   idle eviction, live counters.
//! - [`orders`]: the service and its writer task, the one write path;
//!   idempotency keys and `If-Match`; the change feed from other instances
//!   and the leases on background work.
//! - [`location`]: live driver location, an order's second channel: fixes
//!   wake their own long polls (never `/track`'s), are saved throttled,
//!   and reach other instances by `NOTIFY`.
//! - [`store`]: the `OrderStore` trait and its SQLite, PostgreSQL and
//!   in-memory implementations: orders and their events, idempotency keys,
//!   running background work, the order-request records.
//! - [`sim`]: the workflow simulator.
//! - [`requests`]: order requests: the requestor (tracking, follow-ups,
//!   duplicate-free processing streams, resumed after a restart) and the
//!   processor (simulated sellers), joined by an in-process stream behind a
//!   trait; both sides' records are durable.
//! - [`api`]: axum routes, errors and the OpenAPI document.
//! - [`app`], [`config`], [`telemetry`]: building, configuring, shutting
//!   down, logging.
//! - [`serve`]: the accept loop and the HTTP/1.1 connections.

pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod location;
pub mod orders;
pub mod partners;
pub mod requests;
pub mod serve;
pub mod sim;
pub mod store;
pub mod telemetry;
mod ticks;
pub mod tracking;

pub use app::Application;
pub use config::Config;
