//! Plain types and rules of the order domain. No I/O, no axum, no tokio:
//! everything here is a value or a pure function, tested on its own.
//!
//! - [`status`]: seed 004's customer-facing statuses and their moves.
//! - [`lifecycle`]: seed 003's fine statuses and the one table of steps.
//! - [`fulfillment`]: the store, driver, substitutions and issues of an
//!   order, and the commands that change them.
//! - [`order`]: the order, its ids and money, and [`Order::apply`], the one
//!   function that computes an order's next state.
//! - [`location`]: a driver's GPS fix and which orders take one.
//! - [`event`]: the immutable record of each accepted change.
//! - [`snapshot`]: a version of an order as the notification path carries it.
//! - [`poll`]: cursors, the timeout rule and the status → interval policy.
//! - [`workflow`]: the seed's timeline, for estimates and the simulator.
//! - [`time`]: timestamps that survive an unencoded query string.

pub mod event;
pub mod fulfillment;
pub mod lifecycle;
pub mod location;
pub mod order;
pub mod poll;
pub mod sla;
pub mod snapshot;
pub mod status;
pub mod time;
pub mod workflow;

pub use event::{Attribution, BadAttribution, Event, EventKind};
pub use fulfillment::{DeliveryProvider, Fulfill, Fulfillment, StoreId};
pub use lifecycle::{Actor, TrackingStatus};
pub use location::{Fix, Location, Seq};
pub use order::{
    BadId, ChangeError, CustomerId, Money, NewItemInput, NewOrder, NewOrderInput, Order,
    OrderChange, OrderId, OrderItem, SellerSearch, ValidationError, Version,
};
pub use poll::{Cursor, PollPolicy, PollTimeout, Standing};
pub use snapshot::OrderSnapshot;
pub use status::OrderStatus;
pub use time::Timestamp;
pub use workflow::TimeScale;
