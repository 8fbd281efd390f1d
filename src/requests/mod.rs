//! Order requests: the requestor and the processor of seeds 000–002, as two
//! modules of this server joined by an in-process stream.
//!
//! ```text
//! POST /orders/initiate ─► Requestor ──open_stream──► Processor (simulated sellers)
//! POST /orders/followup ─►  │  ◄── SellersSelected, ProposalReceived, ProposalAccepted | Expired | error
//!                           │  ──send_follow_up──►
//!                           ▼
//!                 OrderService::apply (the one write path) ─► hub ─► GET /orders/{id}/track
//! ```
//!
//! - [`requestor`]: tracks requests and their follow-up notes, prevents
//!   duplicate processing streams with an atomic check-and-set, consumes each
//!   stream and relays its progress to the customer order. A drop guard marks
//!   the stream inactive however it ends.
//! - [`processor`]: keeps its own flexible record of each request, runs the
//!   seller search and streams its progress. Diagnostics show its records.
//! - [`transport`]: the [`ProcessorLink`] trait between the two and its
//!   in-process implementation. Neither side knows the other's internals; a
//!   network transport could replace the in-process one.
//! - [`sellers`]: the simulated sellers, the only simulated part.
//! - [`model`]: the requestor's strictly parsed input and the message types
//!   both sides share.
//!
//! - `records`: the write-through book both sides keep their records in:
//!   read from memory, every change stored first.
//!
//! Unlike the seeds' in-memory tracking, both sides' records are durable and
//! a running stream resumes after a restart (see [`requestor`]). This module
//! never touches the store or the hub directly: it changes orders, and
//! stores its records and running streams, only through
//! [`crate::orders::OrderService`].

pub mod model;
pub mod processor;
mod records;
pub mod requestor;
pub mod sellers;
pub mod transport;

pub use processor::Processor;
pub use requestor::{FollowUpKey, Initiated, ProcessingOptions, RequestError, Requestor};
pub use transport::{InProcessLink, ProcessorLink};
