//! `Idempotency-Key` on the endpoints whose effect is not one order change
//! (simulations, order requests): the first successful answer is kept,
//! status code and body, and replayed to every retry with the same key and
//! request for 24 hours (`Idempotent-Replayed: true`).
//!
//! The rules (in flight, reuse, expiry) are the service's
//! ([`crate::orders::OrderService::claim_key`]); this module only turns a
//! response into the answer to keep and a kept answer back into a
//! response. The order endpoints replay through
//! [`crate::orders::OrderService::execute`] instead, whose key is stored in
//! the order change's own transaction.

use std::future::Future;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::{ApiError, Result};
use super::extract::IDEMPOTENT_REPLAYED;
use crate::orders::{Answer, IdempotencyKey, KeyClaim, Keyed, OrderService};

/// Marks a response whose answer the effect already stored with its key,
/// in the same write as the effect itself ([`KeyClaim::record`]).
#[derive(Debug, Clone, Copy)]
pub struct AnswerKept;

/// Runs `effect` at most once per `key`.
///
/// Without a key it just runs. With one: a kept answer to the same request
/// is replayed; otherwise `effect` runs, given the claim, and a `2xx`
/// answer is kept once it has succeeded (unless the effect kept it itself,
/// marking the response [`AnswerKept`]). Failures are not kept: they
/// changed nothing, so their retry runs afresh.
///
/// A keyed effect runs in a task of its own, with the claim: a client that
/// hangs up cannot stop the effect half-way nor its answer from being
/// kept, and a retry meanwhile gets 409. What is not atomic: when the
/// answer is kept after the effect, a crash between the two leaves the key
/// unknown, and a retry runs the effect again.
pub async fn once<F, Fut>(
    service: &OrderService,
    key: Option<IdempotencyKey>,
    effect: F,
) -> Result<Response>
where
    F: FnOnce(Option<KeyClaim>) -> Fut,
    Fut: Future<Output = Result<Response>> + Send + 'static,
{
    let Some(key) = key else {
        return effect(None).await;
    };
    let claim = match service.claim_key(key).await? {
        Keyed::Replay(answer) => return Ok(replayed(answer)),
        Keyed::Fresh(claim) => claim,
    };
    let running = effect(Some(claim.clone()));
    let task = async move {
        let response = running.await?;
        if !response.status().is_success() || response.extensions().get::<AnswerKept>().is_some() {
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        // Our own answers, already whole in memory.
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "cannot read an answer to keep");
                ApiError::Panicked
            })?;
        let answer = Answer {
            status: parts.status.as_u16(),
            body: bytes.to_vec(),
        };
        match claim.finish(answer).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                scope = %claim.key().scope,
                "idempotency key was stored meanwhile by another request; its answer is the one replayed"
            ),
            // The effect took place, so its answer is still the truth; only
            // a retry of it would run it again.
            Err(err) => tracing::error!(
                error = %err,
                scope = %claim.key().scope,
                "cannot keep the answer of an idempotent request"
            ),
        }
        Ok(Response::from_parts(parts, Body::from(bytes)))
    };
    tokio::spawn(task.instrument(tracing::Span::current()))
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "an idempotent request's task failed");
            ApiError::Panicked
        })?
}

/// A JSON response with `status` and the body `bytes`, as [`once`] keeps it.
pub fn json_answer(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A kept answer, replayed.
fn replayed(answer: Answer) -> Response {
    let Ok(status) = StatusCode::from_u16(answer.status) else {
        tracing::error!(status = answer.status, "a kept answer has no valid status");
        return ApiError::Panicked.into_response();
    };
    let mut response = json_answer(status, answer.body);
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}
