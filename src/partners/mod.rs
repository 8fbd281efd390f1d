//! Delivery partners' webhooks: verifying who sent them, and reading what
//! they say into one [`PartnerEvent`] each.
//!
//! - Uber signs the raw body: `X-Uber-Signature` (or the older
//!   `X-Postmates-Signature`) is the lowercase hex HMAC-SHA256 of it with
//!   the webhook's signing key.
//! - DoorDash Drive sends an `Authorization` header the partner configured
//!   (Basic or Bearer): it must equal the configured value.
//!
//! Both comparisons run in constant time, and nothing is parsed before the
//! sender is verified. Applying an event is the order service's business:
//! one command through the one write path, deduplicated by the event's id
//! as an idempotency key ([`crate::store::WEBHOOK_SCOPE_PREFIX`]).

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::fulfillment::{driver, DriverDetails, Partner, PartnerUpdate};
use crate::domain::{OrderId, Timestamp, TrackingStatus, ValidationError};

mod doordash;
mod uber;

pub use doordash::parse as parse_doordash;
pub use uber::parse as parse_uber;

/// The partners' credentials, as configured; `None`: that webhook is off.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Uber's webhook signing key.
    pub uber_secret: Option<String>,
    /// The whole `Authorization` header DoorDash was configured to send.
    pub doordash_auth: Option<String>,
}

/// The webhooks' credentials and what they have seen, for stats.
#[derive(Debug, Default)]
pub struct Webhooks {
    pub credentials: Credentials,
    /// Events applied (or recorded as ignored).
    pub accepted: std::sync::atomic::AtomicU64,
    /// Events seen before (answered 200, nothing changed).
    pub duplicates: std::sync::atomic::AtomicU64,
    /// Requests refused for a missing or wrong signature.
    pub unauthenticated: std::sync::atomic::AtomicU64,
}

impl Webhooks {
    pub fn new(credentials: Credentials) -> Webhooks {
        Webhooks {
            credentials,
            ..Webhooks::default()
        }
    }

    /// The counters, for `/system/stats`.
    pub fn stats(&self) -> WebhookStats {
        use std::sync::atomic::Ordering::Relaxed;
        WebhookStats {
            uber_configured: self.credentials.uber_secret.is_some(),
            doordash_configured: self.credentials.doordash_auth.is_some(),
            accepted: self.accepted.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            unauthenticated: self.unauthenticated.load(Relaxed),
        }
    }
}

/// What the partners' webhooks have seen since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookStats {
    pub uber_configured: bool,
    pub doordash_configured: bool,
    pub accepted: u64,
    pub duplicates: u64,
    /// Refused for a missing or wrong signature or `Authorization`.
    pub unauthenticated: u64,
}

/// Why a webhook was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the {0} webhook is not configured on this server")]
    NotConfigured(Partner),
    #[error("the {partner} webhook's {what} is missing or wrong")]
    Unauthenticated {
        partner: Partner,
        what: &'static str,
    },
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// Checks Uber's signature of `body`: `signature` is the header's value.
pub fn verify_uber(
    credentials: &Credentials,
    signature: Option<&[u8]>,
    body: &[u8],
) -> Result<(), WebhookError> {
    let secret = credentials
        .uber_secret
        .as_deref()
        .ok_or(WebhookError::NotConfigured(Partner::Uber))?;
    let refused = WebhookError::Unauthenticated {
        partner: Partner::Uber,
        what: "X-Uber-Signature",
    };
    let signature = signature
        .and_then(|hex_text| hex::decode(hex_text.trim_ascii()).ok())
        .ok_or_else(|| refused.clone())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| WebhookError::NotConfigured(Partner::Uber))?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature).map_err(|_| refused)
}

/// Checks DoorDash's `Authorization` header against the configured value.
pub fn verify_doordash(
    credentials: &Credentials,
    authorization: Option<&[u8]>,
) -> Result<(), WebhookError> {
    let expected = credentials
        .doordash_auth
        .as_deref()
        .ok_or(WebhookError::NotConfigured(Partner::Doordash))?;
    let given = authorization.unwrap_or_default();
    if bool::from(given.ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(WebhookError::Unauthenticated {
            partner: Partner::Doordash,
            what: "Authorization header",
        })
    }
}

/// How a partner names the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRef {
    /// Our order id (Uber's `external_id`, DoorDash's
    /// `external_delivery_id`).
    Ours(OrderId),
    /// The partner's delivery id, which the order keeps as its
    /// `delivery_tracking_id`.
    Delivery(String),
}

/// One partner event, read.
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerEvent {
    pub partner: Partner,
    /// Unique per event: the deduplication key.
    pub event_id: String,
    /// The order, as the partner names it (ours first, when it says both).
    pub order: Vec<OrderRef>,
    /// What it changes on the order; `None` for location-only events.
    pub update: Option<PartnerUpdate>,
    /// The courier's position, for the live-location channel.
    pub location: Option<LatLng>,
    /// Why, when the partner says (a cancellation reason).
    pub notes: Option<String>,
}

/// A position as partners send it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct LatLng {
    pub lat: f64,
    pub lng: f64,
}

/// A partner's ETA or event time: RFC 3339.
fn time(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, WebhookError> {
    value
        .map(|text| {
            text.parse::<Timestamp>().map_err(|_| {
                WebhookError::Malformed(format!("{field} is not an RFC 3339 time: '{text}'"))
            })
        })
        .transpose()
}

/// The driver a partner describes, checked as an assignment's driver is.
fn checked_driver(input: DriverDetails) -> Result<DriverDetails, WebhookError> {
    let mut problems = Vec::new();
    let driver = driver(input, &mut problems);
    Ok(ValidationError::unless(problems, driver)?)
}

/// A driver id from a partner's words: only the characters ids allow.
fn driver_id(partner: Partner, raw: &str) -> String {
    let clean: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-.".contains(*c))
        .take(48)
        .collect();
    format!("{partner}-{clean}")
}

/// An update with nothing but `target`, for `partner`'s `event`.
fn update(partner: Partner, event: &str, target: Option<TrackingStatus>) -> PartnerUpdate {
    PartnerUpdate {
        partner,
        event: event.to_owned(),
        target,
        driver: None,
        estimated_delivery_time: None,
        delivery_tracking_id: None,
        delivery_tracking_url: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials {
            uber_secret: Some("whsec_test".into()),
            doordash_auth: Some("Bearer dd-token".into()),
        }
    }

    #[test]
    fn uber_signatures_are_checked_over_the_raw_body() {
        let body = br#"{"kind":"event.delivery_status"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            verify_uber(&credentials(), Some(good.as_bytes()), body),
            Ok(())
        );
        let tampered = br#"{"kind":"event.delivery_status" }"#;
        assert!(verify_uber(&credentials(), Some(good.as_bytes()), tampered).is_err());
        assert!(verify_uber(&credentials(), None, body).is_err());
        assert!(verify_uber(&credentials(), Some(b"zz"), body).is_err());
        assert_eq!(
            verify_uber(&Credentials::default(), Some(good.as_bytes()), body),
            Err(WebhookError::NotConfigured(Partner::Uber))
        );
    }

    #[test]
    fn doordash_authorization_must_match_exactly() {
        assert_eq!(
            verify_doordash(&credentials(), Some(b"Bearer dd-token")),
            Ok(())
        );
        for wrong in [
            &b"Bearer dd-toke"[..],
            b"Bearer dd-token ",
            b"bearer dd-token",
            b"",
        ] {
            assert!(verify_doordash(&credentials(), Some(wrong)).is_err());
        }
        assert!(verify_doordash(&credentials(), None).is_err());
    }
}
