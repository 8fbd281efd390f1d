//! Idempotency keys: telling a retry from a new request, and replaying the
//! first answer.
//!
//! Two kinds of endpoint take them. An order change (create, status)
//! carries its key in its [`super::Command`]: the writer stores the key in
//! the same transaction as the change ([`StoredAnswer::Order`]), and
//! [`OrderService::execute`] replays it. Every other state-changing endpoint
//! (simulations, order requests) claims its key with
//! [`OrderService::claim_key`], runs, and keeps its whole answer, status
//! code and body ([`StoredAnswer::Response`]), through the [`KeyClaim`]:
//! in the same write as its effect where that is one write (a follow-up
//! note, [`KeyClaim::record`]), else just after the effect
//! ([`KeyClaim::finish`]).
//!
//! Either way: a stored answer to the same request is replayed, one to a
//! different request is [`ServiceError::KeyReused`], a request with the key
//! still running in this process is [`ServiceError::KeyInFlight`], and only
//! successes are stored (a failure changed nothing, so its retry runs
//! afresh). Keys are kept 24 hours.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{InFlight, OrderService, Result, ServiceError};
use crate::store::{IdempotencyRecord, StoredAnswer};

/// A request's `Idempotency-Key`, with what it is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The method and path (and later the caller): keys are unique within it.
    pub scope: String,
    /// The client's key.
    pub key: String,
    /// Digest of the request, to tell a retry from a different request.
    pub fingerprint: String,
}

impl IdempotencyKey {
    /// A key for a request to `method path` whose body is `body` (already
    /// parsed, so formatting differences do not count as a different body).
    pub fn new(method: &str, path: &str, key: String, body: &serde_json::Value) -> IdempotencyKey {
        IdempotencyKey::with_query(method, path, Vec::new(), key, body)
    }

    /// [`IdempotencyKey::new`] for a request whose query string matters too
    /// (`?speed=60`): another query is another request. The pairs are
    /// sorted, so their order does not count. Without a query the
    /// fingerprint is [`IdempotencyKey::new`]'s, so keys stored before
    /// queries counted still match.
    pub fn with_query(
        method: &str,
        path: &str,
        mut query: Vec<(String, String)>,
        key: String,
        body: &serde_json::Value,
    ) -> IdempotencyKey {
        let scope = format!("{method} {path}");
        let mut digest = Sha256::new();
        digest.update(scope.as_bytes());
        digest.update([0]);
        digest.update(body.to_string().as_bytes());
        if !query.is_empty() {
            query.sort();
            digest.update([0]);
            digest.update(
                serde_json::Value::from(query_json(query))
                    .to_string()
                    .as_bytes(),
            );
        }
        let fingerprint = digest
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        IdempotencyKey {
            scope,
            key,
            fingerprint,
        }
    }
}

/// Query pairs as a JSON array of `[name, value]` pairs, an unambiguous
/// encoding of names and values that may hold any character.
fn query_json(query: Vec<(String, String)>) -> Vec<serde_json::Value> {
    query
        .into_iter()
        .map(|(name, value)| serde_json::json!([name, value]))
        .collect()
}

/// A whole answer, kept for replays: its status code and its body (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What a request finds when it claims its key.
pub enum Keyed {
    /// The key is new (or expired): run the request and keep its answer
    /// through the claim.
    Fresh(KeyClaim),
    /// The same request was answered before: replay this.
    Replay(Answer),
}

/// A key claimed by the request that runs now. While any clone of it lives,
/// another request with the key is [`ServiceError::KeyInFlight`] here.
#[derive(Clone)]
pub struct KeyClaim {
    /// Where the answer is stored, and the clock that stamps it.
    service: OrderService,
    /// The key claimed.
    key: IdempotencyKey,
    /// Holds the key in flight; released when the last clone drops.
    _in_flight: Arc<InFlight>,
}

impl KeyClaim {
    /// The key claimed.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// The record that keeps `answer` for this key, for a write that stores
    /// it together with the request's effect (one transaction).
    pub fn record(&self, answer: Answer) -> IdempotencyRecord {
        IdempotencyRecord {
            scope: self.key.scope.clone(),
            key: self.key.key.clone(),
            fingerprint: self.key.fingerprint.clone(),
            answer: StoredAnswer::Response {
                status: answer.status,
                body: answer.body,
            },
            created_at: self.service.inner.clock.now(),
        }
    }

    /// Stores `answer` once the request's effect has succeeded. Returns
    /// false if the key was stored meanwhile (by another instance): the
    /// answer stored first is the one replayed.
    pub async fn finish(&self, answer: Answer) -> Result<bool> {
        Ok(self
            .service
            .inner
            .store
            .save_idempotency(&self.record(answer))
            .await?)
    }
}

impl OrderService {
    /// Claims `key` for a request whose effect is not one order change:
    /// [`Keyed::Replay`] with the stored answer to the same request,
    /// [`Keyed::Fresh`] for a new key; [`ServiceError::KeyReused`] if the key
    /// answered a different request, [`ServiceError::KeyInFlight`] if a
    /// request with it is still running here.
    pub async fn claim_key(&self, key: IdempotencyKey) -> Result<Keyed> {
        let in_flight = self.claim(&key)?;
        match self.stored(&key).await? {
            None => Ok(Keyed::Fresh(KeyClaim {
                service: self.clone(),
                key,
                _in_flight: Arc::new(in_flight),
            })),
            Some(StoredAnswer::Response { status, body }) => {
                Ok(Keyed::Replay(Answer { status, body }))
            }
            // Scopes are per route, and each route stores one kind.
            Some(StoredAnswer::Order { .. }) => {
                Err(ServiceError::Store(crate::store::StoreError::Corrupt(
                    format!("the answer stored for '{}' is an order change", key.scope),
                )))
            }
        }
    }

    /// The answer stored for `key` within its scope's time to live (24
    /// hours; a week for partners' events), if any;
    /// [`ServiceError::KeyReused`] if it answered a different request.
    pub(super) async fn stored(&self, key: &IdempotencyKey) -> Result<Option<StoredAnswer>> {
        let since = crate::store::idempotency_cutoff(self.inner.clock.now(), &key.scope);
        let Some(record) = self
            .inner
            .store
            .idempotency(&key.scope, &key.key, since)
            .await?
        else {
            return Ok(None);
        };
        if record.fingerprint != key.fingerprint {
            return Err(ServiceError::KeyReused(key.key.clone()));
        }
        Ok(Some(record.answer))
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::domain::PollPolicy;
    use crate::orders::{Clock, TimeoutSettings};
    use crate::store::MemoryStore;
    use crate::tracking::{Hub, Limits};

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn key(query: &[(&str, &str)], body: serde_json::Value) -> IdempotencyKey {
        IdempotencyKey::with_query("POST", "/p", pairs(query), "k".into(), &body)
    }

    #[test]
    fn the_query_counts_but_not_its_order() {
        let body = serde_json::json!({"a": 1});
        let plain = IdempotencyKey::new("POST", "/p", "k".into(), &body);
        assert_eq!(key(&[], body.clone()), plain, "no query: as before");
        let both = key(&[("speed", "60"), ("scenario", "expire")], body.clone());
        assert_eq!(
            both,
            key(&[("scenario", "expire"), ("speed", "60")], body.clone())
        );
        assert_ne!(both.fingerprint, plain.fingerprint);
        assert_ne!(
            both.fingerprint,
            key(&[("speed", "61"), ("scenario", "expire")], body).fingerprint
        );
        assert_ne!(
            key(&[("a", "b=c")], serde_json::Value::Null).fingerprint,
            key(&[("a=b", "c")], serde_json::Value::Null).fingerprint,
            "names and values do not run into each other"
        );
    }

    #[tokio::test]
    async fn a_claimed_key_is_in_flight_then_replayed_or_refused() {
        let service = OrderService::new(
            Arc::new(MemoryStore::new()),
            Hub::new(Limits::default(), CancellationToken::new()),
            PollPolicy::default(),
            TimeoutSettings::default(),
            Clock::System,
            crate::orders::Instance::named("test"),
        );
        let first = key(&[("speed", "60")], serde_json::Value::Null);
        let Keyed::Fresh(claim) = service.claim_key(first.clone()).await.unwrap() else {
            panic!("a new key is fresh");
        };
        assert!(matches!(
            service.claim_key(first.clone()).await,
            Err(ServiceError::KeyInFlight(_))
        ));
        let answer = Answer {
            status: 202,
            body: b"{\"success\":true}".to_vec(),
        };
        assert!(claim.finish(answer.clone()).await.unwrap());
        drop(claim);
        match service.claim_key(first).await.unwrap() {
            Keyed::Replay(replayed) => assert_eq!(replayed, answer),
            Keyed::Fresh(_) => panic!("a stored key replays"),
        }
        let other = key(&[("speed", "1")], serde_json::Value::Null);
        assert!(matches!(
            service.claim_key(other).await,
            Err(ServiceError::KeyReused(_))
        ));
    }
}
