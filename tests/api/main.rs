//! Integration tests: each test starts the real server on 127.0.0.1:0 and
//! talks to it over real HTTP.

mod caps;
mod cluster;
mod crash;
mod docs;
mod durability;
mod fulfillment;
mod helpers;
mod history;
mod idempotency;
mod location;
mod orders;
mod request_restart;
mod request_streams;
mod requests;
mod shutdown;
mod simulate;
mod stats;
mod status;
mod track;
mod webhooks;
