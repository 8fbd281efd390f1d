//! Success bodies shared by several endpoints.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::etag;
use crate::domain::{Order, OrderSnapshot};

/// Bytes of an order response around the order's own JSON, rounded up:
/// `{"success":true,"data":` and `}` here, the longest `/track` fields there.
pub const ENVELOPE_BYTES: usize = 160;

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
    json(status, snapshot, &body)
}

/// A JSON answer about `snapshot` with its `ETag`, serialized into one buffer
/// sized for the order up front. `axum::Json` starts at 128 bytes and grows,
/// copying a woken poll's 600-byte answer three times; this is on the path of
/// every wake.
pub fn json(status: StatusCode, snapshot: &OrderSnapshot, body: &impl Serialize) -> Response {
    let mut bytes = Vec::with_capacity(snapshot.json().get().len() + ENVELOPE_BYTES);
    if let Err(err) = serde_json::to_writer(&mut bytes, body) {
        // Not expected: our bodies are plain data with string keys.
        tracing::error!(error = %err, "cannot serialize a response body");
        return ApiError::Panicked.into_response();
    }
    json_bytes(status, snapshot, bytes)
}

/// A JSON answer about `snapshot` whose body is already written.
pub fn json_bytes(status: StatusCode, snapshot: &OrderSnapshot, bytes: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    // As `axum::Json` sends it.
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ETAG, etag(snapshot.version()));
    response
}

/// `304 Not Modified` for a client that already has `snapshot`.
pub fn not_modified(snapshot: &OrderSnapshot) -> Response {
    (
        StatusCode::NOT_MODIFIED,
        [(header::ETAG, etag(snapshot.version()))],
    )
        .into_response()
}
