//! The OpenAPI 3.1 document, served at `/openapi.json` with Swagger UI at
//! `/apidocs/`, and committed as `openapi/openapi.json`.

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::{
    fulfillment, location, orders, processor, requests, simulate, system, track, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order-tracker",
        description = "Follow a food or grocery order from confirmed to delivered in near real time, \
without draining the phone's battery.\n\n\
**Long polling.** `GET /api/v1/orders/{id}/track` parks until the order changes or the timeout \
passes, then answers with the order and a `next_poll_interval` hint that depends on the status. \
Restaurants and drivers `PUT` status changes, which wake every parked poll of that order at once.\n\n\
**Order requests.** `POST /api/v1/orders/initiate` hands a customer's request to the processor, which \
seeks a seller (simulated sellers) over an in-process stream. The request is a customer order at once: \
`requested` while sellers are sought (30-second poll interval), then `confirmed` with the accepted seller \
as restaurant, or `expired`. Requestor and processor records (requests, notes, sellers, proposals) are stored and survive a restart; a processing stream that was running resumes with a new seller-search round, which the order's history shows.\n\n\
**Errors** always have the shape `{\"success\": false, \"error\": \"<code>\", \"message\": \"<sentence>\"}`.",
        license(name = "MIT"),
    ),
    paths(
        orders::create_order,
        orders::get_order,
        orders::update_status,
        orders::history,
        track::track_order,
        location::report,
        location::live_location,
        simulate::start_simulation,
        simulate::cancel_simulation,
        requests::initiate,
        requests::follow_up,
        requests::tracking_status,
        requests::tracking_details,
        requests::stop,
        processor::processor_status,
        processor::processor_details,
        system::stats,
        system::health,
        system::ready,
        fulfillment::init,
        fulfillment::document_handler,
        fulfillment::set_status,
        fulfillment::history,
        fulfillment::approve_substitution,
        fulfillment::reject_substitution,
        fulfillment::report_issue,
        fulfillment::resolve_issue,
        fulfillment::acknowledge,
        fulfillment::start_picking,
        fulfillment::substitution,
        fulfillment::ready,
        fulfillment::reject,
        fulfillment::store_orders,
        fulfillment::assign,
        fulfillment::pickup,
        fulfillment::delivered,
        webhooks::uber,
        webhooks::doordash,
    ),
    components(schemas(crate::domain::Order, crate::domain::OrderStatus, super::error::ErrorBody)),
    tags(
        (name = "tracking", description = "Customer long polling"),
        (name = "live location", description = "Drivers report their position while delivering; customers long-poll it on a channel of its own, apart from status changes"),
        (name = "orders", description = "Creating orders and changing their status (restaurants, drivers)"),
        (name = "simulation", description = "Driving orders along the standard timeline, for demos and tests"),
        (name = "order requests", description = "The requestor: initiating order requests, follow-ups, stopping processing, tracking diagnostics"),
        (name = "processor", description = "The processor's diagnostics: sellers, proposals and notes per order request"),
        (name = "system", description = "Health and live figures"),
        (name = "fulfillment", description = "Seed 003's order tracking document, status, history, substitutions answers and issues"),
        (name = "store", description = "Store operations: acknowledge, pick, propose substitutions, ready, reject"),
        (name = "webhooks", description = "Delivery partners' events: Uber (signed) and DoorDash (Authorization)"),
        (name = "delivery", description = "Delivery operations: assign a driver, pick up, deliver"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON with a trailing newline, as committed.
pub fn openapi_json() -> String {
    // Invariant: the document is built from static data and always serializes.
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    json.push('\n');
    json
}

/// `/openapi.json` and Swagger UI at `/apidocs/`.
pub fn router() -> Router {
    SwaggerUi::new("/apidocs")
        .url("/openapi.json", ApiDoc::openapi())
        .into()
}
