//! order-tracker: customers follow a food or grocery order from "confirmed" to
//! "delivered" in near real time, by long polling, without draining their
//! phone's battery.
//!
//! One write path, one notification path:
//!
//! ```text
//! PUT /status ──┐
//! simulator ────┼─► OrderService::apply ─► domain rules ─► store ─► hub.publish(snapshot)
//! requestor ────┘                                                     │ (per-order watch channel)
//! (processor's progress)                                              ▼
//!                               GET /track (parked long polls), GET /orders/{id}, stats
//! ```
//!
//! - [`domain`]: plain types and rules: statuses and transitions, orders,
//!   snapshots, cursors, the poll-interval policy, the seed's timeline.
//! - [`tracking`]: the hub: per-order `watch` channels, the long-poll wait,
//!   connection caps as RAII slots, live counters.
//! - [`orders`]: the service, the one write path.
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
pub mod orders;
pub mod requests;
pub mod serve;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod tracking;

pub use app::Application;
pub use config::Config;
