//! HTTP only: routes, extraction, and mapping results to responses. Business
//! rules live in the service and the domain; handlers parse input, call the
//! service and render what it returns.

use std::any::Any;
use std::time::Instant;

use axum::http::{header, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::{CatchPanic, CatchPanicLayer, ResponseForPanic};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, Trace, TraceLayer};
use tracing::Level;

use crate::domain::Timestamp;
use crate::location::LocationService;
use crate::orders::OrderService;
use crate::requests::{Processor, Requestor};
use crate::sim::Simulator;

mod body;
pub mod docs;
pub mod error;
mod examples;
mod extract;
mod fulfillment;
mod idempotent;
mod location;
mod orders;
mod processor;
mod requests;
mod simulate;
mod system;
mod track;
mod webhooks;

use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The one write path and the reads.
    pub service: OrderService,
    /// Live driver locations: reports and their long polls.
    pub locations: LocationService,
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
    /// Delivery partners' webhooks: credentials and counters.
    pub webhooks: std::sync::Arc<crate::partners::Webhooks>,
}

/// The whole HTTP surface: the routes inside the layers every request passes
/// through (panics become 500s, requests get a tracing span).
pub type App = CatchPanic<Trace<Router, SharedClassifier<ServerErrorsAsFailures>>, PanicResponse>;

/// Builds [`App`].
///
/// The outer layers wrap the router once, as a service, rather than through
/// `Router::layer`, which wraps every route separately and so boxes one more
/// future per layer on every request, for as long as the request lives: a
/// parked poll kept two such boxes (~400 bytes) only to pass through these
/// layers.
pub fn app(state: AppState) -> App {
    ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(PanicResponse))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .service(router(state))
}

/// Every route. `Cache-Control` is set here, per route, because the docs
/// routes must stay cacheable.
fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(orders::router())
        .merge(track::router())
        .merge(fulfillment::router())
        .merge(webhooks::router())
        .merge(location::router())
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
}

/// Answers a request whose handler panicked with our 500 body.
#[derive(Debug, Clone, Copy)]
pub struct PanicResponse;

impl ResponseForPanic for PanicResponse {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(&mut self, _panic: Box<dyn Any + Send + 'static>) -> Response {
        ApiError::Panicked.into_response()
    }
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
