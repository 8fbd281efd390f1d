//! The requestor's input and its strict parsing (seed 002: "requestor knows
//! all order details upfront (strict validation)"), and the message types
//! both sides share.
//!
//! Inputs refuse unknown fields and missing ones, and every problem found is
//! reported at once. After parsing, an [`Initiate`] or a [`FollowUpDraft`]
//! holds only acceptable values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{NewItemInput, NewOrder, OrderId, ValidationError};

/// Longest session id, the same bound as other ids.
pub const MAX_SESSION_LEN: usize = 64;
/// Most sellers one follow-up may address.
pub const MAX_AUDIENCE: usize = 50;
/// Longest follow-up message, in characters.
pub const MAX_MESSAGE_LEN: usize = 2_000;
/// Most URLs one follow-up may carry.
pub const MAX_URLS: usize = 10;
/// Longest URL.
pub const MAX_URL_LEN: usize = 2_048;

/// How the customer asked to be told about the request (seed: `"email"`).
/// Carried to the processor and shown in its diagnostics; this server sends
/// no notifications itself, customers follow the order through `/track`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationType {
    Email,
    Sms,
    Push,
}

impl NotificationType {
    const ALL: [NotificationType; 3] = [
        NotificationType::Email,
        NotificationType::Sms,
        NotificationType::Push,
    ];

    fn as_str(self) -> &'static str {
        match self {
            NotificationType::Email => "email",
            NotificationType::Sms => "sms",
            NotificationType::Push => "push",
        }
    }
}

impl fmt::Display for NotificationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of follow-up message this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    /// Words in `message`; `urls` optional.
    Text,
    /// Media at `urls` (at least one); `message` is an optional caption.
    Image,
    Audio,
    Video,
    Document,
}

impl MessageType {
    const ALL: [MessageType; 5] = [
        MessageType::Text,
        MessageType::Image,
        MessageType::Audio,
        MessageType::Video,
        MessageType::Document,
    ];

    fn as_str(self) -> &'static str {
        match self {
            MessageType::Text => "text",
            MessageType::Image => "image",
            MessageType::Audio => "audio",
            MessageType::Video => "video",
            MessageType::Document => "document",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads one of `all` by its wire name, or says which names are valid.
fn one_of<T: Copy + fmt::Display>(field: &str, given: &str, all: &[T]) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|value| value.to_string() == given)
        .ok_or_else(|| {
            let names: Vec<String> = all.iter().map(ToString::to_string).collect();
            format!("{field} must be one of {}, got '{given}'", names.join(", "))
        })
}

impl FromStr for NotificationType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        one_of("notification_type", s, &NotificationType::ALL)
    }
}

impl FromStr for MessageType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        one_of("message.message_type", s, &MessageType::ALL)
    }
}

/// The content of a follow-up, as both sides keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageContent {
    /// Links to media; at least one unless the message is `text`.
    pub urls: Vec<String>,
    /// What kind of message it is; decides whether words or links are needed.
    pub message_type: MessageType,
    /// The words; required for `text`.
    pub message: String,
}

/// `POST /api/v1/orders/initiate`. The first three fields are seed 001's
/// body; the others are optional details of the customer order the request
/// becomes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "order_req_id": "TEST001",
    "session_id": "sess_test_001",
    "notification_type": "email"
}))]
pub struct InitiateInput {
    /// The request's id, which is also the customer order's id: 1 to 64
    /// letters, digits, `_ - .`, not only dots.
    #[schema(value_type = OrderId, example = "TEST001")]
    pub order_req_id: String,
    /// The customer session that makes the request: 1 to 64 letters, digits,
    /// `_ - .`.
    #[schema(example = "sess_test_001")]
    pub session_id: String,
    /// `email`, `sms` or `push`.
    #[schema(example = "email")]
    pub notification_type: String,
    /// The customer order's `customer_id`. Default: the `session_id`, since
    /// the session is all the requestor knows of the customer.
    pub customer_id: Option<String>,
    /// The customer order's delivery address. Default: empty (not given).
    pub delivery_address: Option<String>,
    /// The customer order's items, as in `POST /api/v1/orders`. Default: none
    /// (total 0).
    pub items: Option<Vec<NewItemInput>>,
}

/// A checked initiate request.
#[derive(Debug, Clone)]
pub struct Initiate {
    /// The request, and its customer order's, id.
    pub order_req_id: OrderId,
    /// The session that asked.
    pub session: String,
    /// Passed on to the processor.
    pub notification_type: NotificationType,
    /// The customer order to create if the request is new.
    pub order: NewOrder,
}

/// Checks `value` as an id-like field: 1 to 64 of `A-Z a-z 0-9 _ - .`.
fn id_like(field: &str, value: &str, problems: &mut Vec<String>) {
    if value.is_empty() || value.len() > MAX_SESSION_LEN {
        problems.push(format!(
            "{field} must be 1 to {MAX_SESSION_LEN} characters, got {}",
            value.len()
        ));
    } else if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
    {
        problems.push(format!(
            "{field} may only contain letters, digits, '_', '-' and '.', found {bad:?}"
        ));
    }
}

impl InitiateInput {
    pub fn parse(self) -> Result<Initiate, ValidationError> {
        let mut problems = Vec::new();
        let order_req_id = self
            .order_req_id
            .parse::<OrderId>()
            .map_err(|err| problems.push(format!("order_req_id: {}", err.0)))
            .ok();
        let before = problems.len();
        id_like("session_id", &self.session_id, &mut problems);
        let session_ok = problems.len() == before;
        let notification_type = self
            .notification_type
            .parse::<NotificationType>()
            .map_err(|why| problems.push(why))
            .ok();
        // A bad session is reported once, not again as the default customer id.
        let customer_id = match self.customer_id {
            Some(given) => Some(given),
            None => session_ok.then(|| self.session_id.clone()),
        };
        let order = order_req_id
            .clone()
            .zip(customer_id)
            .map(|(id, customer_id)| {
                NewOrder::parse_request(
                    id,
                    customer_id,
                    self.delivery_address,
                    self.items.unwrap_or_default(),
                )
            });
        match (order_req_id, notification_type, order) {
            (Some(order_req_id), Some(notification_type), Some(Ok(order)))
                if problems.is_empty() =>
            {
                Ok(Initiate {
                    order_req_id,
                    session: self.session_id,
                    notification_type,
                    order,
                })
            }
            (_, _, order) => {
                if let Some(Err(invalid)) = order {
                    problems.extend(invalid.problems);
                }
                Err(ValidationError { problems })
            }
        }
    }
}

/// The `message` of a follow-up, as sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    /// Links to media (http or https); may be empty for `text`.
    pub urls: Vec<String>,
    /// `text`, `image`, `audio`, `video` or `document`.
    #[schema(example = "text")]
    pub message_type: String,
    /// The words; required for `text`, at most 2000 characters.
    #[schema(example = "Please expedite this order")]
    pub message: String,
}

/// `POST /api/v1/orders/followup`, seed 001's body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "order_req_id": "TEST001",
    "audience": ["seller1", "seller2"],
    "message": {"urls": [], "message_type": "text", "message": "Please expedite this order"}
}))]
pub struct FollowUpInput {
    /// The request the follow-up belongs to.
    #[schema(value_type = OrderId, example = "TEST001")]
    pub order_req_id: String,
    /// The sellers it is addressed to: 1 to 50 seller ids.
    #[schema(example = json!(["seller1", "seller2"]))]
    pub audience: Vec<String>,
    /// What the follow-up says.
    pub message: MessageInput,
}

/// A checked follow-up, before the requestor gives it an id.
#[derive(Debug, Clone)]
pub struct FollowUpDraft {
    /// The request it belongs to.
    pub order_req_id: OrderId,
    /// Who it addresses; never empty.
    pub audience: Vec<String>,
    /// What it says.
    pub content: MessageContent,
}

impl FollowUpInput {
    pub fn parse(self) -> Result<FollowUpDraft, ValidationError> {
        let mut problems = Vec::new();
        let order_req_id = self
            .order_req_id
            .parse::<OrderId>()
            .map_err(|err| problems.push(format!("order_req_id: {}", err.0)))
            .ok();
        if self.audience.is_empty() || self.audience.len() > MAX_AUDIENCE {
            problems.push(format!(
                "audience must name 1 to {MAX_AUDIENCE} sellers, got {}",
                self.audience.len()
            ));
        }
        for (n, seller) in self.audience.iter().enumerate() {
            id_like(&format!("audience[{n}]"), seller, &mut problems);
        }
        let message_type = self
            .message
            .message_type
            .parse::<MessageType>()
            .map_err(|why| problems.push(why))
            .ok();
        let words = self.message.message.trim();
        if words.chars().count() > MAX_MESSAGE_LEN {
            problems.push(format!(
                "message.message must be at most {MAX_MESSAGE_LEN} characters"
            ));
        }
        if self.message.urls.len() > MAX_URLS {
            problems.push(format!(
                "message.urls may hold at most {MAX_URLS} links, got {}",
                self.message.urls.len()
            ));
        }
        for (n, url) in self.message.urls.iter().enumerate() {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok || url.len() > MAX_URL_LEN || url.contains(char::is_whitespace) {
                problems.push(format!(
                    "message.urls[{n}] must be an http or https URL of at most {MAX_URL_LEN} characters"
                ));
            }
        }
        match message_type {
            Some(MessageType::Text) if words.is_empty() => {
                problems.push("message.message must not be empty for a text message".to_owned())
            }
            Some(kind) if kind != MessageType::Text && self.message.urls.is_empty() => problems
                .push(format!(
                    "message.urls must hold at least one link for a {kind} message"
                )),
            _ => {}
        }
        match (order_req_id, message_type) {
            (Some(order_req_id), Some(message_type)) if problems.is_empty() => Ok(FollowUpDraft {
                order_req_id,
                audience: self.audience,
                content: MessageContent {
                    urls: self.message.urls,
                    message_type,
                    message: words.to_owned(),
                },
            }),
            _ => Err(ValidationError { problems }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn initiate(body: serde_json::Value) -> Result<Initiate, String> {
        let input: InitiateInput = serde_json::from_value(body).map_err(|e| e.to_string())?;
        input.parse().map_err(|e| e.to_string())
    }

    fn follow_up(body: serde_json::Value) -> Result<FollowUpDraft, String> {
        let input: FollowUpInput = serde_json::from_value(body).map_err(|e| e.to_string())?;
        input.parse().map_err(|e| e.to_string())
    }

    #[test]
    fn the_seed_initiate_body_parses_with_documented_defaults() {
        let parsed = initiate(json!({
            "order_req_id": "TEST001",
            "session_id": "sess_test_001",
            "notification_type": "email"
        }))
        .unwrap();
        assert_eq!(parsed.order_req_id.as_str(), "TEST001");
        assert_eq!(parsed.notification_type, NotificationType::Email);
        assert_eq!(String::from(parsed.order.customer_id), "sess_test_001");
        assert!(parsed.order.items.is_empty());
        assert_eq!(parsed.order.delivery_address, "");
    }

    #[test]
    fn initiate_is_strict_and_reports_every_problem() {
        let err = initiate(json!({
            "order_req_id": "bad id",
            "session_id": "",
            "notification_type": "fax"
        }))
        .unwrap_err();
        for part in [
            "order_req_id",
            "session_id",
            "notification_type must be one of email, sms, push, got 'fax'",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
        let unknown = initiate(json!({
            "order_req_id": "A", "session_id": "s", "notification_type": "email", "priority": 1
        }))
        .unwrap_err();
        assert!(unknown.contains("unknown field `priority`"), "{unknown}");
        let missing =
            initiate(json!({"order_req_id": "A", "notification_type": "email"})).unwrap_err();
        assert!(missing.contains("missing field `session_id`"), "{missing}");
    }

    #[test]
    fn the_seed_follow_up_parses_and_bad_ones_are_refused() {
        let seed = json!({
            "order_req_id": "TEST001",
            "audience": ["seller1", "seller2"],
            "message": {"urls": [], "message_type": "text", "message": "Please expedite this order"}
        });
        let parsed = follow_up(seed.clone()).unwrap();
        assert_eq!(parsed.audience, ["seller1", "seller2"]);
        assert_eq!(parsed.content.message_type, MessageType::Text);

        let mut empty_audience = seed.clone();
        empty_audience["audience"] = json!([]);
        assert!(follow_up(empty_audience)
            .unwrap_err()
            .contains("audience must name 1 to 50 sellers, got 0"));
        let mut bad_type = seed.clone();
        bad_type["message"]["message_type"] = json!("telegram");
        assert!(follow_up(bad_type)
            .unwrap_err()
            .contains("message_type must be one of"));
        let mut blank = seed.clone();
        blank["message"]["message"] = json!("  ");
        assert!(follow_up(blank).unwrap_err().contains("must not be empty"));
        let mut image = seed.clone();
        image["message"]["message_type"] = json!("image");
        assert!(follow_up(image.clone())
            .unwrap_err()
            .contains("at least one link"));
        image["message"]["urls"] = json!(["https://example.com/a.png"]);
        assert!(follow_up(image).is_ok());
        let mut ftp = seed;
        ftp["message"]["urls"] = json!(["ftp://example.com/a"]);
        assert!(follow_up(ftp).unwrap_err().contains("http or https"));
    }
}
