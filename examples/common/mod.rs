//! What the benchmark tools share: just enough HTTP/1.1 over raw tokio
//! sockets ([`http`]), the server's CPU and memory from `/proc` ([`proc`]),
//! and result files with medians and percentiles ([`figures`]).
//!
//! `examples/loadgen.rs` (long polls against ours and Nchan),
//! `examples/writebench.rs` (status changes against each store) and
//! `examples/cluster.rs` (wakes across instances on one PostgreSQL) and
//! `examples/locations.rs` (live driver locations under load) include
//! it with `mod common;`. It is not an example itself: Cargo builds only
//! `examples/*.rs` and `examples/*/main.rs`.

// Each tool uses part of this module; what one leaves unused, another uses.
#![allow(dead_code)]

pub mod figures;
pub mod http;
pub mod proc;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;
