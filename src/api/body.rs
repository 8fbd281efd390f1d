//! Success bodies shared by several endpoints.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::extract::etag;
use crate::domain::{Order, OrderSnapshot};

/// `{"success": true, "data": <order>}`.
#[derive(Serialize, ToSchema)]
#[schema(example = super::examples::order_response)]
pub struct OrderResponse<'a> {
    /// Always `true`.
    pub success: bool,
    /// The order, as of the version in the `ETag` header.
    #[schema(value_type = Order)]
    pub data: &'a RawValue,
}

/// Answers with an order and its `ETag`.
pub fn order_response(status: StatusCode, snapshot: &OrderSnapshot) -> Response {
    let body = OrderResponse {
        success: true,
        data: snapshot.json(),
    };
    (
        status,
        [(header::ETAG, etag(snapshot.version()))],
        Json(body),
    )
        .into_response()
}

/// `304 Not Modified` for a client that already has `snapshot`.
pub fn not_modified(snapshot: &OrderSnapshot) -> Response {
    (
        StatusCode::NOT_MODIFIED,
        [(header::ETAG, etag(snapshot.version()))],
    )
        .into_response()
}
