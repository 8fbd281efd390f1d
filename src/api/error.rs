//! The one error type of the HTTP layer and the JSON every error is sent as:
//! `{"success": false, "error": "<code>", "message": "<sentence>"}`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::lifecycle::LifecycleError;
use crate::domain::location::NotLocatable;
use crate::domain::status::UnknownStatus;
use crate::domain::workflow::BadSpeed;
use crate::domain::ChangeError;
use crate::location::LocationError;
use crate::orders::ServiceError;
use crate::partners::WebhookError;
use crate::requests::transport::ProcessorError;
use crate::requests::RequestError;
use crate::sim::SimError;
use crate::store::StoreError;
use crate::tracking::PollError;

/// Everything an endpoint can answer instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("{0}")]
    MalformedJson(String),
    /// The body is JSON, but not the shape this endpoint takes.
    #[error("{0}")]
    InvalidBody(String),
    #[error("send the body as JSON with the header Content-Type: application/json")]
    UnsupportedMediaType,
    /// A query or path parameter we cannot read.
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidOrderId(String),
    #[error(transparent)]
    InvalidStatus(#[from] UnknownStatus),
    /// A cap turned a poll away; `retry_after` seconds go in `Retry-After`.
    #[error("{error}; retry after {retry_after} seconds")]
    Busy { error: PollError, retry_after: u64 },
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Location(#[from] LocationError),
    /// A partner's webhook turned away (credentials, configuration, body).
    #[error(transparent)]
    Webhook(WebhookError),
    /// A partner named an order we do not have.
    #[error("order {0} not found")]
    NoSuchOrder(String),
    #[error(transparent)]
    Simulation(#[from] SimError),
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The processor's diagnostics have no such request.
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    #[error("no endpoint {method} {path}; the API is described at /apidocs/")]
    NoRoute { method: String, path: String },
    #[error("{method} is not allowed on {path}; the API is described at /apidocs/")]
    MethodNotAllowed { method: String, path: String },
    #[error("the server hit an unexpected problem")]
    Panicked,
    /// Readiness failed: why, for the operator (no client data in it).
    #[error("{0}")]
    NotReady(String),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "success": false,
    "error": "invalid_transition",
    "message": "order cannot go from delivered to preparing; allowed next statuses: none (the order is final)"
}))]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// A stable machine-readable code, such as `order_not_found`.
    pub error: &'static str,
    /// A sentence saying what was wrong, for people.
    pub message: String,
    /// With `version_mismatch` (412) only: the order's version now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub current_version: Option<u64>,
}

impl ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::InvalidBody(_)
            | ApiError::InvalidParameter(_)
            | ApiError::InvalidOrderId(_)
            | ApiError::InvalidStatus(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Busy {
                error: PollError::GlobalCap { .. },
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoRoute { .. } | ApiError::NoSuchOrder(_) => StatusCode::NOT_FOUND,
            ApiError::Webhook(WebhookError::NotConfigured(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Webhook(WebhookError::Unauthenticated { .. }) => StatusCode::UNAUTHORIZED,
            ApiError::Webhook(WebhookError::Malformed(_) | WebhookError::Invalid(_)) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Service(err) | ApiError::Simulation(SimError::Service(err)) => {
                service_status(err)
            }
            ApiError::Simulation(SimError::NotRunning(_)) => StatusCode::NOT_FOUND,
            ApiError::Location(err) => location_status(err),
            ApiError::Request(err) => request_status(err),
            ApiError::Processor(ProcessorError::UnknownRequest(_)) => StatusCode::NOT_FOUND,
            ApiError::Processor(ProcessorError::SellerDirectory(_)) => StatusCode::BAD_GATEWAY,
            ApiError::Processor(ProcessorError::Storage(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Simulation(
                SimError::AlreadyRunning(_)
                | SimError::Finished { .. }
                | SimError::AwaitingSeller(_),
            ) => StatusCode::CONFLICT,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::InvalidParameter(_) => "invalid_parameter",
            ApiError::InvalidOrderId(_) => "invalid_order_id",
            ApiError::InvalidStatus(_) => "invalid_status",
            ApiError::Busy {
                error: PollError::GlobalCap { .. },
                ..
            } => "server_busy",
            ApiError::Busy { .. } => "too_many_pollers",
            ApiError::NoRoute { .. } => "not_found",
            ApiError::NoSuchOrder(_) => "order_not_found",
            ApiError::Webhook(WebhookError::NotConfigured(_)) => "webhook_not_configured",
            ApiError::Webhook(WebhookError::Unauthenticated { .. }) => "invalid_signature",
            ApiError::Webhook(WebhookError::Malformed(_)) => "invalid_event",
            ApiError::Webhook(WebhookError::Invalid(_)) => "validation_failed",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Panicked => "internal_error",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Service(err) | ApiError::Simulation(SimError::Service(err)) => {
                service_code(err)
            }
            ApiError::Simulation(SimError::NotRunning(_)) => "simulation_not_running",
            ApiError::Location(err) => location_code(err),
            ApiError::Request(err) => request_code(err),
            ApiError::Processor(ProcessorError::UnknownRequest(_)) => "request_not_found",
            ApiError::Processor(ProcessorError::SellerDirectory(_)) => "processor_error",
            ApiError::Processor(ProcessorError::Storage(_)) => "internal_error",
            ApiError::Simulation(SimError::AlreadyRunning(_)) => "simulation_running",
            ApiError::Simulation(SimError::Finished { .. }) => "order_final",
            ApiError::Simulation(SimError::AwaitingSeller(_)) => "order_not_confirmed",
        }
    }
}

fn service_status(err: &ServiceError) -> StatusCode {
    match err {
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Change(
            ChangeError::UnknownSubstitution(_)
            | ChangeError::UnknownIssue(_)
            | ChangeError::NotAtStore,
        ) => StatusCode::NOT_FOUND,
        ServiceError::Change(ChangeError::Lifecycle(LifecycleError::NotYours { .. })) => {
            StatusCode::FORBIDDEN
        }
        ServiceError::AlreadyExists(_) | ServiceError::Change(_) | ServiceError::Contended(_) => {
            StatusCode::CONFLICT
        }
        ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
        ServiceError::Poll(PollError::GlobalCap { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Poll(PollError::PerOrderCap { .. }) => StatusCode::TOO_MANY_REQUESTS,
        ServiceError::Poll(PollError::UnknownOrder) => StatusCode::NOT_FOUND,
        ServiceError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
        ServiceError::KeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ServiceError::KeyInFlight(_) => StatusCode::CONFLICT,
        // The database is away: nothing was acknowledged; retry later.
        ServiceError::Store(StoreError::Backend(_)) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Poll(PollError::CursorAhead)
        | ServiceError::Store(_)
        | ServiceError::KeyTaken => StatusCode::INTERNAL_SERVER_ERROR,
        ServiceError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn service_code(err: &ServiceError) -> &'static str {
    match err {
        ServiceError::NotFound(_) | ServiceError::Poll(PollError::UnknownOrder) => {
            "order_not_found"
        }
        ServiceError::AlreadyExists(_) => "order_exists",
        ServiceError::Change(ChangeError::NotAtStore) => "order_not_found",
        ServiceError::Change(ChangeError::UnknownSubstitution(_)) => "substitution_not_found",
        ServiceError::Change(ChangeError::UnknownIssue(_)) => "issue_not_found",
        ServiceError::Change(ChangeError::AlreadyDecided { .. }) => "substitution_decided",
        ServiceError::Change(ChangeError::AlreadyResolved(_)) => "issue_resolved",
        ServiceError::Change(ChangeError::TooMany { .. }) => "limit_reached",
        ServiceError::Change(ChangeError::Lifecycle(LifecycleError::NotYours { .. })) => {
            "not_permitted"
        }
        ServiceError::Change(_) => "invalid_transition",
        ServiceError::Contended(_) => "write_conflict",
        ServiceError::Invalid(_) => "validation_failed",
        ServiceError::Poll(PollError::GlobalCap { .. }) => "server_busy",
        ServiceError::Poll(PollError::PerOrderCap { .. }) => "too_many_pollers",
        ServiceError::PreconditionFailed { .. } => "version_mismatch",
        ServiceError::KeyReused(_) => "idempotency_key_reused",
        ServiceError::KeyInFlight(_) => "idempotency_key_in_flight",
        ServiceError::Store(StoreError::Backend(_)) => "storage_unavailable",
        ServiceError::Poll(PollError::CursorAhead)
        | ServiceError::Store(_)
        | ServiceError::KeyTaken => "internal_error",
        ServiceError::Stopping => "shutting_down",
    }
}

fn location_status(err: &LocationError) -> StatusCode {
    match err {
        LocationError::Service(err) => service_status(err),
        LocationError::NotLocatable(_) => StatusCode::CONFLICT,
        LocationError::Invalid(_) => StatusCode::BAD_REQUEST,
        LocationError::Poll(err) => service_status(&ServiceError::Poll(err.clone())),
        LocationError::Store(StoreError::Backend(_)) => StatusCode::SERVICE_UNAVAILABLE,
        LocationError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn location_code(err: &LocationError) -> &'static str {
    match err {
        LocationError::Service(err) => service_code(err),
        LocationError::NotLocatable(NotLocatable::NoDriver(_)) => "no_driver_assigned",
        LocationError::NotLocatable(NotLocatable::Final { .. }) => "order_final",
        LocationError::Invalid(_) => "validation_failed",
        LocationError::Poll(err) => service_code(&ServiceError::Poll(err.clone())),
        LocationError::Store(StoreError::Backend(_)) => "storage_unavailable",
        LocationError::Store(_) => "internal_error",
    }
}

fn request_status(err: &RequestError) -> StatusCode {
    match err {
        RequestError::Invalid { .. } => StatusCode::BAD_REQUEST,
        RequestError::NotFound(_) => StatusCode::NOT_FOUND,
        RequestError::NotActive(_) | RequestError::Settled { .. } => StatusCode::CONFLICT,
        RequestError::Processor(_) => StatusCode::BAD_GATEWAY,
        RequestError::Service(err) => service_status(err),
    }
}

fn request_code(err: &RequestError) -> &'static str {
    match err {
        RequestError::Invalid { .. } => "validation_failed",
        RequestError::NotFound(_) => "request_not_found",
        RequestError::NotActive(_) => "stream_not_active",
        RequestError::Settled { .. } => "request_settled",
        RequestError::Processor(_) => "processor_error",
        RequestError::Service(err) => service_code(err),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let message = if status.is_server_error()
            && !matches!(self, ApiError::Busy { .. } | ApiError::NotReady(_))
        {
            // Log the cause for operators; tell the client nothing internal.
            tracing::error!(error = ?self, "request failed");
            if self.code() == "storage_unavailable" {
                "the order database cannot be reached; nothing was changed; retry shortly"
                    .to_owned()
            } else {
                "the server hit an unexpected problem; it has been logged".to_owned()
            }
        } else {
            self.to_string()
        };
        let current_version = match &self {
            ApiError::Service(ServiceError::PreconditionFailed { current, .. }) => Some(current.0),
            _ => None,
        };
        let body = ErrorBody {
            success: false,
            error: self.code(),
            message,
            current_version,
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::Busy { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::JsonSyntaxError(err) => ApiError::MalformedJson(err.body_text()),
            JsonRejection::JsonDataError(err) => ApiError::InvalidBody(err.body_text()),
            other => ApiError::InvalidBody(other.body_text()),
        }
    }
}

impl From<BadSpeed> for ApiError {
    fn from(err: BadSpeed) -> ApiError {
        ApiError::InvalidParameter(err.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::InvalidParameter(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::InvalidParameter(rejection.body_text())
    }
}
