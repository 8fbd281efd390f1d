//! Extractors whose rejections are our own [`ApiError`], so malformed input
//! gets our JSON error body rather than axum's plain text.

use axum::extract::{FromRequest, FromRequestParts, Path};
use axum::http::header::IF_NONE_MATCH;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::domain::{OrderId, Version};

/// `axum::Json` with our rejection.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

/// `axum::extract::Query` with our rejection.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

/// The `{id}` path segment, parsed into an [`OrderId`].
pub struct OrderPath(pub OrderId);

impl<S: Send + Sync> FromRequestParts<S> for OrderPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await?;
        id.parse()
            .map(OrderPath)
            .map_err(|err: crate::domain::BadId| ApiError::InvalidOrderId(err.0))
    }
}

/// The versions named by `If-None-Match` (`"3"`, `W/"3"`, or a list of them).
/// Tags that are not versions, and `*`, are ignored; `None` when none remain.
pub struct IfNoneMatch(pub Option<Vec<Version>>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let versions: Vec<Version> = parts
            .headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|tag| {
                let tag = tag.trim();
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                tag.trim_matches('"').parse().ok()
            })
            .collect();
        Ok(IfNoneMatch((!versions.is_empty()).then_some(versions)))
    }
}

/// The `ETag` of an order version: the version number, quoted.
pub fn etag(version: Version) -> axum::http::HeaderValue {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(version.0).as_bytes();
    let mut text = [b'"'; 22];
    text[1..=digits.len()].copy_from_slice(digits);
    // Invariant: quotes around decimal digits are always a valid header value.
    axum::http::HeaderValue::from_bytes(&text[..digits.len() + 2])
        .expect("a quoted number is a valid header")
}
