//! The link between the requestor and the processor: what crosses it and the
//! [`ProcessorLink`] trait both sides are written against.
//!
//! The seeds join the two with gRPC: one server-streaming call per request
//! (`OrderStreamRequest` in, progress out) and a plain call for follow-ups.
//! Here the two are modules of one server joined by an in-process stream,
//! [`InProcessLink`]. Every type that crosses the link is plain serializable
//! data, so a network transport can implement [`ProcessorLink`] later without
//! either side changing.

use std::pin::Pin;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use utoipa::ToSchema;

use super::model::{MessageContent, NotificationType};
use super::processor::Processor;
use super::sellers::Scenario;
use crate::domain::{OrderId, TimeScale, Timestamp};

/// One processing stream, as the requestor consumes it: progress events, then
/// the end of the stream. An `Err` item is the processor failing; nothing
/// follows it.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ProcessingEvent, ProcessorError>> + Send>>;

/// What the requestor sends to open a processing stream (the seeds'
/// `OrderStreamRequest`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamRequest {
    /// The request to process; also the customer order's id.
    pub order_req_id: OrderId,
    /// The customer session that initiated it.
    pub session: String,
    /// How the customer asked to be notified, passed on as the seeds do.
    pub notification_type: NotificationType,
    /// The follow-ups the requestor already holds, so a processor that starts
    /// a new round for the request still shows every note.
    pub notes: Vec<FollowUp>,
    /// How the simulated sellers behave.
    pub scenario: Scenario,
    /// How much faster than real time the simulated sellers answer.
    #[serde(with = "speed")]
    pub speed: TimeScale,
}

/// A follow-up note as it crosses the link (the seeds' non-streaming call).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FollowUp {
    /// The request it belongs to.
    pub order_req_id: OrderId,
    /// Given by the requestor; the same on both sides.
    pub follow_up_id: String,
    /// The sellers it is addressed to.
    pub audience: Vec<String>,
    /// What it says.
    pub content: MessageContent,
    /// When the requestor accepted it.
    pub added_time: Timestamp,
}

/// A seller the processor asked for a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SellerRef {
    /// Stable id, as follow-up audiences name sellers (`seller1`).
    #[schema(example = "seller2")]
    pub seller_id: String,
    /// The seller's name; the customer order's restaurant if it is accepted.
    #[schema(example = "Burger Barn")]
    pub name: String,
}

/// A seller's offer to fulfil a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Proposal {
    /// Unique within the request's round.
    #[schema(example = "P-seller2")]
    pub proposal_id: String,
    /// Who offers.
    pub seller: SellerRef,
    /// Minutes the seller says it needs to prepare the order; the processor
    /// accepts the quickest.
    #[schema(example = 15)]
    pub prep_minutes: u32,
}

/// Progress of one processing stream, in the order the processor sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProcessingEvent {
    /// The sellers asked for a proposal.
    SellersSelected { sellers: Vec<SellerRef> },
    /// One seller proposed.
    ProposalReceived { proposal: Proposal },
    /// The outcome: this proposal was accepted. The stream ends.
    ProposalAccepted { proposal: Proposal },
    /// The outcome: the request expired with no proposal. The stream ends.
    Expired { expiry: Timestamp },
}

impl ProcessingEvent {
    /// Whether this event is an outcome, after which the stream ends.
    pub fn is_outcome(&self) -> bool {
        matches!(
            self,
            ProcessingEvent::ProposalAccepted { .. } | ProcessingEvent::Expired { .. }
        )
    }
}

/// The processor failed, or refused a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProcessorError {
    /// The (simulated) seller directory failed mid-round.
    #[error("the seller directory failed: {0}")]
    SellerDirectory(String),
    /// A follow-up for a request the processor never received.
    #[error("the processor has no order request {0}")]
    UnknownRequest(OrderId),
    /// The processor could not store its record; nothing of the call was
    /// kept.
    #[error("the processor cannot store its record: {0}")]
    Storage(String),
}

/// The requestor's view of the processor: everything it may ask of it.
#[async_trait]
pub trait ProcessorLink: Send + Sync + 'static {
    /// Opens the processing stream of one request, once the processor has
    /// stored it. Dropping the stream tells the processor to stop.
    async fn open_stream(&self, request: StreamRequest) -> Result<EventStream, ProcessorError>;

    /// Delivers a follow-up note to the processor's copy of its request.
    async fn send_follow_up(&self, follow_up: FollowUp) -> Result<(), ProcessorError>;
}

/// The processor in this process, reached through a channel whose receiving
/// end is the stream (`tokio-stream`'s `ReceiverStream`).
pub struct InProcessLink {
    /// The processor module.
    processor: Processor,
}

impl InProcessLink {
    pub fn new(processor: Processor) -> InProcessLink {
        InProcessLink { processor }
    }
}

#[async_trait]
impl ProcessorLink for InProcessLink {
    async fn open_stream(&self, request: StreamRequest) -> Result<EventStream, ProcessorError> {
        let events = self.processor.process(request).await?;
        Ok(Box::pin(ReceiverStream::new(events)))
    }

    async fn send_follow_up(&self, follow_up: FollowUp) -> Result<(), ProcessorError> {
        self.processor.add_note(follow_up).await
    }
}

/// `TimeScale` crosses the link as its speed, a plain number.
mod speed {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::TimeScale;

    pub fn serialize<S: Serializer>(scale: &TimeScale, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(scale.speed())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TimeScale, D::Error> {
        let speed = f64::deserialize(deserializer)?;
        TimeScale::parse(&speed.to_string()).map_err(serde::de::Error::custom)
    }
}
