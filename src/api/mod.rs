//! HTTP only: routes, extraction, and mapping results to responses. Business
//! rules live in the service and the domain; handlers parse input, call the
//! service and render what it returns.

use std::time::Instant;

use axum::http::{header, HeaderValue, Method, Uri};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::domain::Timestamp;
use crate::orders::OrderService;
use crate::requests::{Processor, Requestor};
use crate::sim::Simulator;

mod body;
pub mod docs;
pub mod error;
mod examples;
mod extract;
mod orders;
mod processor;
mod requests;
mod simulate;
mod system;
mod track;

use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The one write path and the reads.
    pub service: OrderService,
    /// Workflow simulations.
    pub simulator: Simulator,
    /// Order requests: initiate, follow up, stop, tracking.
    pub requestor: Requestor,
    /// The processor, for its diagnostics only; requests reach it through
    /// the requestor.
    pub processor: Processor,
    /// For uptime.
    pub started: Instant,
    /// For stats.
    pub started_at: Timestamp,
    /// `Retry-After` seconds sent with 429 and 503.
    pub retry_after: u64,
    /// Busiest orders listed in stats.
    pub stats_top_orders: usize,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(orders::router())
        .merge(track::router())
        .merge(simulate::router())
        .merge(requests::router())
        .merge(processor::router())
        .merge(system::router())
        .with_state(state)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Order state changes under the client's feet; no cache may keep it.
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    api.merge(docs::router())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Panicked)
        }))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
