//! Extractors whose rejections are our own [`ApiError`], so malformed input
//! gets our JSON error body rather than axum's plain text.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{IF_MATCH, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};

use super::error::ApiError;
use crate::domain::{OrderId, Version};
use crate::orders::IdempotencyKey;

/// The IETF draft's request header (draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on an answer replayed for a repeated `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

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

/// Longest `Idempotency-Key` we accept (Stripe's limit).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A state-changing request: its JSON body, its `Idempotency-Key` (scoped to
/// the method and path, with a digest of the body) and its `If-Match`.
pub struct WriteRequest<T> {
    pub body: T,
    pub idempotency: Option<IdempotencyKey>,
    pub if_match: Option<Version>,
}

impl<S, T> FromRequest<S> for WriteRequest<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let if_match = if_match(request.headers())?;
        let KeyedJson { body, idempotency } = KeyedJson::from_request(request, state).await?;
        Ok(WriteRequest {
            body,
            idempotency,
            if_match,
        })
    }
}

/// A JSON body with its `Idempotency-Key`, for a state-changing endpoint
/// whose effect is not one order change: the key is scoped to the method
/// and path, and its fingerprint covers the query string and the body.
pub struct KeyedJson<T> {
    pub body: T,
    pub idempotency: Option<IdempotencyKey>,
}

impl<S, T> FromRequest<S> for KeyedJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let query = query_pairs(request.uri().query());
        let key = idempotency_key(request.headers())?;
        let AppJson(value) = AppJson::<serde_json::Value>::from_request(request, state).await?;
        let body = T::deserialize(&value).map_err(|err| {
            ApiError::InvalidBody(format!(
                "Failed to deserialize the JSON body into the target type: {err}"
            ))
        })?;
        Ok(KeyedJson {
            body,
            idempotency: key
                .map(|key| IdempotencyKey::with_query(&method, &path, query, key, &value)),
        })
    }
}

/// An optional JSON body with its `Idempotency-Key`: a request with no
/// body (no `Content-Type` and no length), or with the body `null`, gets
/// `T::default()`; another body is read as [`KeyedJson`] reads it.
pub struct OptionalBody<T> {
    pub body: T,
    pub idempotency: Option<IdempotencyKey>,
}

impl<S, T> FromRequest<S> for OptionalBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        let empty = !headers.contains_key(axum::http::header::CONTENT_TYPE)
            && headers
                .get(axum::http::header::CONTENT_LENGTH)
                .is_none_or(|length| length.as_bytes() == b"0");
        if empty {
            let Idempotency(idempotency) = {
                let (mut parts, _) = request.into_parts();
                Idempotency::from_request_parts(&mut parts, state).await?
            };
            return Ok(OptionalBody {
                body: T::default(),
                idempotency,
            });
        }
        let KeyedJson { body, idempotency } =
            KeyedJson::<Option<T>>::from_request(request, state).await?;
        Ok(OptionalBody {
            body: body.unwrap_or_default(),
            idempotency,
        })
    }
}

/// The `Idempotency-Key` of a state-changing request without a body: scoped
/// to the method and path, its fingerprint covers the query string.
pub struct Idempotency(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Idempotency(idempotency_key(&parts.headers)?.map(|key| {
            IdempotencyKey::with_query(
                parts.method.as_str(),
                parts.uri.path(),
                query_pairs(parts.uri.query()),
                key,
                &serde_json::Value::Null,
            )
        })))
    }
}

/// The query string's decoded name/value pairs.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Reads `Idempotency-Key`: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII
/// characters (a UUID is typical).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::InvalidParameter(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters, such as a UUID"
        ))
    };
    let key = value.to_str().map_err(|_| bad())?.trim();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}

/// Reads `If-Match`: one strong entity tag, `"N"` (an order's `ETag`). `*`
/// (any version) is the same as no condition.
fn if_match(headers: &HeaderMap) -> Result<Option<Version>, ApiError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|digits| digits.parse::<Version>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "If-Match must be one ETag of this order, such as \"3\" (with the quotes), or *; got '{text}'"
            ))
        })
}

/// A whole, non-negative number in query parameter `name`; absent or empty
/// is `None`.
pub fn whole_param(name: &str, given: Option<&str>) -> Result<Option<u64>, ApiError> {
    given
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(|text| {
            text.parse::<u64>().map_err(|_| {
                ApiError::InvalidParameter(format!(
                    "{name} must be a whole non-negative number, got '{text}'"
                ))
            })
        })
        .transpose()
}
