//! The processor: takes an order request over a processing stream, asks
//! sellers for proposals, reports progress on the stream and ends it with the
//! outcome (a proposal accepted, or expiry with none).
//!
//! It keeps its own record of every request it was given,
//! [`ProcessorOrderReqObj`] (seed 002's `processor_order_req_id_list`), with
//! flexible fields that fill in as processing goes on, and shows them in its
//! diagnostics. It never touches the requestor or the customer order: it only
//! answers the stream and the follow-up call of [`super::transport`].
//!
//! Each round is a task on the app's `TaskTracker`. It stops when its outcome
//! is sent, when the requestor drops the stream, or on shutdown; a drop guard
//! marks the record abandoned if it stops before an outcome.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::ToSchema;

use super::model::{MessageContent, NotificationType};
use super::sellers::{self, Step};
use super::transport::{FollowUp, ProcessingEvent, ProcessorError, StreamRequest};
use crate::domain::{OrderId, Timestamp};
use crate::orders::Clock;

/// Events buffered between the processor and the requestor. A round sends at
/// most six, so sending never waits on a slow reader.
const EVENT_BUFFER: usize = 16;

/// Where a request's current round stands, as the processor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoundState {
    /// Sellers are being sought and proposals collected.
    Processing,
    /// A proposal was accepted.
    Accepted,
    /// No seller proposed before the expiry.
    Expired,
    /// The round failed; the stream ended with an error.
    Failed,
    /// The requestor closed the stream (stopped) or the server shut down
    /// before an outcome.
    Abandoned,
}

/// A seller asked for a proposal (seed 002's `seller_dict_arr`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SellerDictObj {
    /// As follow-up audiences name sellers.
    pub seller_id: String,
    /// Becomes the order's restaurant if accepted.
    pub name: String,
    /// When the processor asked it.
    pub contacted_at: Timestamp,
}

/// A proposal received (seed 002's `proposal_dict_arr`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProposalDictObj {
    /// Unique within the round.
    pub proposal_id: String,
    /// Who proposed.
    pub seller_id: String,
    /// The proposer's name.
    pub seller_name: String,
    /// Minutes it says it needs; the quickest is accepted.
    pub prep_minutes: u32,
    /// When it arrived.
    pub received_at: Timestamp,
    /// Whether this is the proposal that was accepted.
    pub accepted: bool,
}

/// A follow-up as the processor keeps it. Every field but the id is optional
/// (seed 002's `ProcessorNotesDictObj`): the processor takes what it is given.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessorNotesDictObj {
    /// The requestor's id for the note, the same on both sides.
    pub follow_up_id: String,
    /// The sellers it addresses.
    #[serde(default)]
    pub audience: Option<Vec<String>>,
    /// What it says.
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// When the requestor accepted it.
    #[serde(default)]
    pub added_time: Option<Timestamp>,
}

/// The processor's record of one request (seed 002's `ProcessorOrderReqObj`).
/// Flexible: it starts with the id and session only, and the rest fills in
/// as the round goes on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "order_req_id": "TEST001",
    "session": "sess_test_001",
    "notification_type": "email",
    "state": "processing",
    "notes_dict_arr": [{"follow_up_id": "FU001", "audience": ["seller1", "seller2"],
        "content": {"urls": [], "message_type": "text", "message": "Please expedite this order"},
        "added_time": "2025-01-12T20:31:00.000000Z"}],
    "seller_dict_arr": [{"seller_id": "seller2", "name": "Burger Barn", "contacted_at": "2025-01-12T20:32:00.000000Z"}],
    "proposal_dict_arr": [{"proposal_id": "P-seller2", "seller_id": "seller2", "seller_name": "Burger Barn",
        "prep_minutes": 15, "received_at": "2025-01-12T20:33:00.000000Z", "accepted": false}],
    "queue_name": "order_req.TEST001",
    "expiry": "2025-01-12T20:45:00.000000Z"
}))]
pub struct ProcessorOrderReqObj {
    /// The request.
    pub order_req_id: OrderId,
    /// The session that initiated it.
    pub session: String,
    /// How the customer asked to be notified, as passed on.
    #[serde(default)]
    pub notification_type: Option<NotificationType>,
    /// The current round's state.
    pub state: RoundState,
    /// Follow-up notes, carried over from earlier rounds and added since.
    #[serde(default)]
    pub notes_dict_arr: Vec<ProcessorNotesDictObj>,
    /// Sellers asked in this round.
    #[serde(default)]
    pub seller_dict_arr: Vec<SellerDictObj>,
    /// Proposals received in this round.
    #[serde(default)]
    pub proposal_dict_arr: Vec<ProposalDictObj>,
    /// Where this round's proposals are collected (the in-process stream).
    #[serde(default)]
    pub queue_name: Option<String>,
    /// When this round gives up waiting for proposals.
    #[serde(default)]
    pub expiry: Option<Timestamp>,
}

/// `GET /api/v1/processor/tracking/status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"total_orders": 1, "processing_streams": 1, "streams_opened": 1, "tracked_order_ids": ["TEST001"]}))]
pub struct ProcessorStatus {
    /// Requests the processor has a record of.
    pub total_orders: usize,
    /// Rounds running now.
    pub processing_streams: usize,
    /// Processing streams opened since start.
    pub streams_opened: u64,
    /// Every request it has a record of, first received first.
    pub tracked_order_ids: Vec<OrderId>,
}

/// Cheap handle to the processor; clones share one state.
#[derive(Clone)]
pub struct Processor {
    /// The state every clone shares.
    inner: Arc<Inner>,
}

struct Inner {
    /// `processor_order_req_id_list`: every request received, by id.
    records: DashMap<OrderId, Entry>,
    /// Numbers rounds (and first receipts), so a finished round never writes
    /// over its successor's record and ids list in arrival order.
    next_serial: AtomicU64,
    /// Streams opened since start, for diagnostics.
    streams_opened: AtomicU64,
    /// Every round's task, so shutdown waits for them.
    tracker: TaskTracker,
    /// Cancelled on shutdown: rounds stop.
    shutdown: CancellationToken,
    /// Source of the record's timestamps.
    clock: Clock,
}

/// A record and the round that owns it.
struct Entry {
    /// The round currently writing this record.
    serial: u64,
    /// When the request was first received, for listing order.
    first_serial: u64,
    /// The record itself.
    record: ProcessorOrderReqObj,
}

impl Processor {
    pub fn new(tracker: TaskTracker, shutdown: CancellationToken, clock: Clock) -> Processor {
        Processor {
            inner: Arc::new(Inner {
                records: DashMap::new(),
                next_serial: AtomicU64::new(0),
                streams_opened: AtomicU64::new(0),
                tracker,
                shutdown,
                clock,
            }),
        }
    }

    /// Starts a round for `request` and returns the receiving end of its
    /// events. A new round replaces the request's record but keeps every
    /// note: those the requestor sent along, and any the old record got that
    /// they lack (a follow-up that raced the new round).
    pub fn process(
        &self,
        request: StreamRequest,
    ) -> mpsc::Receiver<Result<ProcessingEvent, ProcessorError>> {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let serial = self.inner.next_serial.fetch_add(1, Ordering::Relaxed);
        let now = self.inner.clock.now();
        let expiry = now.plus(
            chrono::TimeDelta::from_std(request.speed.scale(sellers::EXPIRY_AFTER))
                .unwrap_or(chrono::TimeDelta::MAX),
        );
        let id = request.order_req_id.clone();
        let record = ProcessorOrderReqObj {
            order_req_id: id.clone(),
            session: request.session.clone(),
            notification_type: Some(request.notification_type),
            state: RoundState::Processing,
            notes_dict_arr: request.notes.iter().cloned().map(note).collect(),
            seller_dict_arr: Vec::new(),
            proposal_dict_arr: Vec::new(),
            queue_name: Some(format!("order_req.{id}")),
            expiry: Some(expiry),
        };
        // Under the entry's lock, so no follow-up lands on the old record
        // between reading its notes and replacing it.
        match self.inner.records.entry(id.clone()) {
            MapEntry::Occupied(mut slot) => {
                let entry = slot.get_mut();
                let mut record = record;
                for old in std::mem::take(&mut entry.record.notes_dict_arr) {
                    if !record
                        .notes_dict_arr
                        .iter()
                        .any(|n| n.follow_up_id == old.follow_up_id)
                    {
                        record.notes_dict_arr.push(old);
                    }
                }
                entry.serial = serial;
                entry.record = record;
            }
            MapEntry::Vacant(slot) => {
                slot.insert(Entry {
                    serial,
                    first_serial: serial,
                    record,
                });
            }
        }
        self.inner.streams_opened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            order_req_id = %id,
            session = %request.session,
            notification_type = %request.notification_type,
            scenario = %request.scenario,
            speed = request.speed.speed(),
            request_type = "StreamRequest",
            "processor received a processing stream request"
        );
        let inner = Arc::clone(&self.inner);
        self.inner.tracker.spawn(async move {
            let guard = RoundGuard {
                inner: &inner,
                id: &request.order_req_id,
                serial,
            };
            guard.run(&request, tx).await;
        });
        rx
    }

    /// Adds a follow-up to the processor's copy of its request.
    pub fn add_note(&self, follow_up: FollowUp) -> Result<(), ProcessorError> {
        let id = follow_up.order_req_id.clone();
        let mut entry = self
            .inner
            .records
            .get_mut(&id)
            .ok_or_else(|| ProcessorError::UnknownRequest(id.clone()))?;
        let follow_up_id = follow_up.follow_up_id.clone();
        entry.record.notes_dict_arr.push(note(follow_up));
        drop(entry);
        tracing::info!(order_req_id = %id, %follow_up_id, "processor added follow-up note");
        Ok(())
    }

    /// The processor's record of a request.
    pub fn record(&self, id: &OrderId) -> Option<ProcessorOrderReqObj> {
        self.inner.records.get(id).map(|entry| entry.record.clone())
    }

    /// Counts and ids, for diagnostics.
    pub fn status(&self) -> ProcessorStatus {
        let mut ids: Vec<(u64, OrderId)> = Vec::new();
        let mut processing = 0;
        for entry in self.inner.records.iter() {
            ids.push((entry.first_serial, entry.key().clone()));
            if entry.record.state == RoundState::Processing {
                processing += 1;
            }
        }
        ids.sort();
        ProcessorStatus {
            total_orders: ids.len(),
            processing_streams: processing,
            streams_opened: self.inner.streams_opened.load(Ordering::Relaxed),
            tracked_order_ids: ids.into_iter().map(|(_, id)| id).collect(),
        }
    }
}

fn note(follow_up: FollowUp) -> ProcessorNotesDictObj {
    ProcessorNotesDictObj {
        follow_up_id: follow_up.follow_up_id,
        audience: Some(follow_up.audience),
        content: Some(follow_up.content),
        added_time: Some(follow_up.added_time),
    }
}

/// One round's hold on its record. Dropped however the round ends (outcome,
/// requestor gone, shutdown, panic); a record still `processing` then is
/// marked abandoned.
struct RoundGuard<'a> {
    /// The processor's state.
    inner: &'a Inner,
    /// The request of this round.
    id: &'a OrderId,
    /// Which round this is; a newer round's record is left alone.
    serial: u64,
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        let abandoned = self.update(|record| {
            let was_processing = record.state == RoundState::Processing;
            if was_processing {
                record.state = RoundState::Abandoned;
            }
            was_processing
        });
        if abandoned == Some(true) {
            tracing::info!(order_req_id = %self.id, "processing round abandoned before an outcome");
        }
    }
}

impl RoundGuard<'_> {
    /// Changes the record if this round still owns it.
    fn update<T>(&self, change: impl FnOnce(&mut ProcessorOrderReqObj) -> T) -> Option<T> {
        let mut entry = self.inner.records.get_mut(self.id)?;
        (entry.serial == self.serial).then(|| change(&mut entry.record))
    }

    /// Walks the sellers' timeline, recording each step and sending it on,
    /// until the outcome is sent, the requestor drops the stream or the
    /// server shuts down.
    async fn run(
        &self,
        request: &StreamRequest,
        tx: mpsc::Sender<Result<ProcessingEvent, ProcessorError>>,
    ) {
        let start = tokio::time::Instant::now();
        for (after, step) in sellers::timeline(self.id, request.scenario) {
            // Deadlines from the start, so steps do not drift.
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = tx.closed() => return,
                () = tokio::time::sleep_until(start + request.speed.scale(after)) => {}
            }
            let (event, state) = self.record_step(step);
            if let Some(state) = state {
                self.update(|record| record.state = state);
            }
            let outcome = state.is_some();
            if tx.send(event).await.is_err() || outcome {
                return;
            }
        }
    }

    /// Writes `step` into the record and says what to send, and the round's
    /// final state if the step ends it.
    fn record_step(
        &self,
        step: Step,
    ) -> (Result<ProcessingEvent, ProcessorError>, Option<RoundState>) {
        let now = self.inner.clock.now();
        match step {
            Step::Select(sellers) => {
                self.update(|record| {
                    record.seller_dict_arr = sellers
                        .iter()
                        .map(|seller| SellerDictObj {
                            seller_id: seller.seller_id.clone(),
                            name: seller.name.clone(),
                            contacted_at: now,
                        })
                        .collect();
                });
                tracing::info!(order_req_id = %self.id, sellers = sellers.len(), "processor selected sellers");
                (Ok(ProcessingEvent::SellersSelected { sellers }), None)
            }
            Step::Propose(proposal) => {
                self.update(|record| {
                    record.proposal_dict_arr.push(ProposalDictObj {
                        proposal_id: proposal.proposal_id.clone(),
                        seller_id: proposal.seller.seller_id.clone(),
                        seller_name: proposal.seller.name.clone(),
                        prep_minutes: proposal.prep_minutes,
                        received_at: now,
                        accepted: false,
                    });
                });
                tracing::info!(order_req_id = %self.id, proposal_id = %proposal.proposal_id, "processor received a proposal");
                (Ok(ProcessingEvent::ProposalReceived { proposal }), None)
            }
            Step::Accept(proposal) => {
                self.update(|record| {
                    for received in &mut record.proposal_dict_arr {
                        received.accepted = received.proposal_id == proposal.proposal_id;
                    }
                });
                tracing::info!(order_req_id = %self.id, proposal_id = %proposal.proposal_id, seller = %proposal.seller.name, "processor accepted a proposal");
                (
                    Ok(ProcessingEvent::ProposalAccepted { proposal }),
                    Some(RoundState::Accepted),
                )
            }
            Step::Expire => {
                let expiry = self.update(|record| record.expiry).flatten().unwrap_or(now);
                tracing::info!(order_req_id = %self.id, "processor round expired with no proposal");
                (
                    Ok(ProcessingEvent::Expired { expiry }),
                    Some(RoundState::Expired),
                )
            }
            Step::Fail(why) => {
                tracing::warn!(order_req_id = %self.id, error = %why, "processor round failed");
                (
                    Err(ProcessorError::SellerDirectory(why)),
                    Some(RoundState::Failed),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;
    use crate::domain::TimeScale;
    use crate::requests::sellers::Scenario;

    fn processor() -> (Processor, CancellationToken, TaskTracker) {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let processor = Processor::new(tracker.clone(), shutdown.clone(), Clock::tokio());
        (processor, shutdown, tracker)
    }

    fn request(id: &str, scenario: Scenario) -> StreamRequest {
        StreamRequest {
            order_req_id: id.parse().unwrap(),
            session: "sess_1".into(),
            notification_type: NotificationType::Email,
            notes: Vec::new(),
            scenario,
            speed: TimeScale::REAL_TIME,
        }
    }

    /// Receives the next event and how long after `start` it came.
    async fn next(
        rx: &mut tokio_stream::wrappers::ReceiverStream<Result<ProcessingEvent, ProcessorError>>,
        start: tokio::time::Instant,
    ) -> (Duration, Option<Result<ProcessingEvent, ProcessorError>>) {
        let item = rx.next().await;
        (start.elapsed(), item)
    }

    #[tokio::test(start_paused = true)]
    async fn an_accepting_round_follows_the_timeline_and_records_everything() {
        let (processor, _, _) = processor();
        let start = tokio::time::Instant::now();
        let mut rx = tokio_stream::wrappers::ReceiverStream::new(
            processor.process(request("TEST001", Scenario::Accept)),
        );
        let mins = |n: u64| Duration::from_secs(n * 60);

        let (at, event) = next(&mut rx, start).await;
        assert_eq!(at, mins(2));
        assert!(
            matches!(event, Some(Ok(ProcessingEvent::SellersSelected { ref sellers })) if sellers.len() == 3)
        );
        for minute in [3, 4, 5] {
            let (at, event) = next(&mut rx, start).await;
            assert_eq!(at, mins(minute));
            assert!(matches!(
                event,
                Some(Ok(ProcessingEvent::ProposalReceived { .. }))
            ));
        }
        let (at, event) = next(&mut rx, start).await;
        assert_eq!(at, mins(6));
        let Some(Ok(ProcessingEvent::ProposalAccepted { proposal })) = event else {
            panic!("an acceptance, got {event:?}");
        };
        assert_eq!(next(&mut rx, start).await.1, None, "the stream ends");

        let record = processor.record(&"TEST001".parse().unwrap()).unwrap();
        assert_eq!(record.state, RoundState::Accepted);
        assert_eq!(record.seller_dict_arr.len(), 3);
        assert_eq!(record.proposal_dict_arr.len(), 3);
        let accepted: Vec<_> = record
            .proposal_dict_arr
            .iter()
            .filter(|p| p.accepted)
            .collect();
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].proposal_id, proposal.proposal_id);
        assert_eq!(record.queue_name.as_deref(), Some("order_req.TEST001"));
        assert_eq!(processor.status().processing_streams, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_and_failure_end_the_stream() {
        let (processor, _, _) = processor();
        let start = tokio::time::Instant::now();
        let mut rx = tokio_stream::wrappers::ReceiverStream::new(
            processor.process(request("EXP", Scenario::Expire)),
        );
        next(&mut rx, start).await;
        let (at, event) = next(&mut rx, start).await;
        assert_eq!(at, sellers::EXPIRY_AFTER);
        assert!(matches!(event, Some(Ok(ProcessingEvent::Expired { .. }))));

        let mut rx = tokio_stream::wrappers::ReceiverStream::new(
            processor.process(request("FAIL", Scenario::Fail)),
        );
        let start = tokio::time::Instant::now();
        next(&mut rx, start).await;
        let (_, event) = next(&mut rx, start).await;
        assert!(matches!(
            event,
            Some(Err(ProcessorError::SellerDirectory(_)))
        ));
        assert_eq!(next(&mut rx, start).await.1, None);
        let state = |id: &str| processor.record(&id.parse().unwrap()).unwrap().state;
        assert_eq!(state("EXP"), RoundState::Expired);
        assert_eq!(state("FAIL"), RoundState::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_stream_or_shutdown_abandons_the_round_and_ends_its_task() {
        let (processor, shutdown, tracker) = processor();
        let rx = processor.process(request("GONE", Scenario::Accept));
        let mut kept = processor.process(request("KEPT", Scenario::Accept));
        drop(rx);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let state = |id: &str| processor.record(&id.parse().unwrap()).unwrap().state;
        assert_eq!(state("GONE"), RoundState::Abandoned);
        assert_eq!(state("KEPT"), RoundState::Processing);

        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(1), tracker.wait())
            .await
            .expect("rounds stop on shutdown");
        assert_eq!(state("KEPT"), RoundState::Abandoned);
        assert!(kept.recv().await.is_none(), "the stream ends");
    }

    #[tokio::test(start_paused = true)]
    async fn notes_are_kept_flexibly_and_survive_a_new_round() {
        let (processor, _, _) = processor();
        let id: OrderId = "NOTE".parse().unwrap();
        let follow_up = |n: u32| FollowUp {
            order_req_id: id.clone(),
            follow_up_id: format!("FU{n:03}"),
            audience: vec!["seller1".into()],
            content: MessageContent {
                urls: vec![],
                message_type: super::super::model::MessageType::Text,
                message: "hi".into(),
            },
            added_time: Timestamp::new(chrono::Utc::now()),
        };
        let unknown = processor.add_note(follow_up(1));
        assert_eq!(unknown, Err(ProcessorError::UnknownRequest(id.clone())));

        let _first = processor.process(request("NOTE", Scenario::Accept));
        processor.add_note(follow_up(1)).unwrap();
        // A second round carries the notes the requestor sends along.
        let mut second = request("NOTE", Scenario::Accept);
        second.notes = vec![follow_up(1)];
        let _second = processor.process(second);
        processor.add_note(follow_up(2)).unwrap();
        // A third round whose request lacks FU002 (it raced the round) keeps it.
        let mut third = request("NOTE", Scenario::Accept);
        third.notes = vec![follow_up(1)];
        let _third = processor.process(third);
        let notes: Vec<String> = processor
            .record(&id)
            .unwrap()
            .notes_dict_arr
            .into_iter()
            .map(|n| n.follow_up_id)
            .collect();
        assert_eq!(notes, ["FU001", "FU002"]);
        assert_eq!(processor.status().streams_opened, 3);
        assert_eq!(processor.status().total_orders, 1);

        // A minimal record, as seed 002's processor first creates it, reads fine.
        let minimal: ProcessorOrderReqObj = serde_json::from_value(serde_json::json!({
            "order_req_id": "NOTE", "session": "s", "state": "processing"
        }))
        .unwrap();
        assert!(minimal.seller_dict_arr.is_empty() && minimal.expiry.is_none());
    }
}
