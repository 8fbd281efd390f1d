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
//! is sent, when the requestor drops the stream, or on shutdown; a record
//! still `processing` then is marked abandoned.
//!
//! The records are durable (`records`): every change is stored
//! before it is shown or sent on the stream, so what the diagnostics show,
//! and what the requestor is told, survives a restart or `kill -9`. A record
//! left `processing` by a process that died is marked abandoned at the next
//! start ([`Processor::load`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::ToSchema;

use super::model::{MessageContent, NotificationType};
use super::records::RecordBook;
use super::sellers::{self, Step};
use super::transport::{FollowUp, ProcessingEvent, ProcessorError, StreamRequest};
use crate::domain::{OrderId, Timestamp};
use crate::orders::{OrderService, ServiceError};

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

/// The store's name for the processor's records.
const SIDE: &str = "processor";

/// Cheap handle to the processor; clones share one state.
#[derive(Clone)]
pub struct Processor {
    /// The state every clone shares.
    inner: Arc<Inner>,
}

struct Inner {
    /// `processor_order_req_id_list`: every request received, by id, stored
    /// on every change.
    records: RecordBook<ProcessorOrderReqObj>,
    /// Which round owns each record, so a finished round never writes over
    /// its successor's record. Changed only under the record's write lock.
    rounds: DashMap<OrderId, u64>,
    /// Numbers rounds.
    next_serial: AtomicU64,
    /// Streams opened since start, for diagnostics.
    streams_opened: AtomicU64,
    /// Every round's task, so shutdown waits for them.
    tracker: TaskTracker,
    /// Cancelled on shutdown: rounds stop.
    shutdown: CancellationToken,
    /// Where the records are stored, and the time.
    service: OrderService,
}

impl Processor {
    /// The processor with every record it stored before. A record still
    /// `processing` belongs to a round that died with the last process
    /// (shutdown, crash): it is marked abandoned, since no round runs for it
    /// now. The requestor resumes those requests with a new round.
    pub async fn load(
        service: OrderService,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Processor, ServiceError> {
        let records: RecordBook<ProcessorOrderReqObj> =
            RecordBook::load(SIDE, service.clone()).await?;
        // Rounds another instance runs now are its own, not leftovers.
        let elsewhere: Vec<OrderId> = if service.shares_store() {
            service
                .live_runs(super::requestor::STREAM_RUN)
                .await?
                .into_iter()
                .filter(|run| run.owner != service.instance_id())
                .map(|run| run.order_id)
                .collect()
        } else {
            Vec::new()
        };
        for (id, mut record) in records.list() {
            if record.state == RoundState::Processing && !elsewhere.contains(&id) {
                record.state = RoundState::Abandoned;
                records.write(&id).await.put(record).await?;
                tracing::info!(order_req_id = %id, "processing round of the previous run marked abandoned");
            }
        }
        Ok(Processor {
            inner: Arc::new(Inner {
                records,
                rounds: DashMap::new(),
                next_serial: AtomicU64::new(0),
                streams_opened: AtomicU64::new(0),
                tracker,
                shutdown,
                service,
            }),
        })
    }

    /// Starts a round for `request` and returns the receiving end of its
    /// events, once the round's record is stored. A new round replaces the
    /// request's record but keeps every note: those the requestor sent
    /// along, and any the old record got that they lack (a follow-up that
    /// raced the new round).
    pub async fn process(
        &self,
        request: StreamRequest,
    ) -> Result<mpsc::Receiver<Result<ProcessingEvent, ProcessorError>>, ProcessorError> {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let serial = self.inner.next_serial.fetch_add(1, Ordering::Relaxed);
        let now = self.inner.service.now();
        let expiry = now.plus(
            chrono::TimeDelta::from_std(request.speed.scale(sellers::EXPIRY_AFTER))
                .unwrap_or(chrono::TimeDelta::MAX),
        );
        let id = request.order_req_id.clone();
        let mut record = ProcessorOrderReqObj {
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
        // Under the record's write lock, so no follow-up lands on the old
        // record between reading its notes and replacing it.
        let writer = self.inner.records.write(&id).await;
        for old in writer
            .current()
            .map(|old| old.notes_dict_arr)
            .unwrap_or_default()
        {
            if !record
                .notes_dict_arr
                .iter()
                .any(|n| n.follow_up_id == old.follow_up_id)
            {
                record.notes_dict_arr.push(old);
            }
        }
        writer.put(record).await.map_err(storage)?;
        self.inner.rounds.insert(id.clone(), serial);
        drop(writer);
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
            let mut guard = RoundGuard {
                inner: &inner,
                id: &request.order_req_id,
                serial,
                finished: false,
            };
            let last = guard.run(&request, tx).await;
            guard.finish(last).await;
        });
        Ok(rx)
    }

    /// Adds a follow-up to the processor's copy of its request, stored
    /// before this returns. A note with an id the record already has
    /// replaces it (a retry whose first answer was lost).
    pub async fn add_note(&self, follow_up: FollowUp) -> Result<(), ProcessorError> {
        let id = follow_up.order_req_id.clone();
        let writer = self.inner.records.write(&id).await;
        let mut record = writer
            .current()
            .ok_or_else(|| ProcessorError::UnknownRequest(id.clone()))?;
        let follow_up_id = follow_up.follow_up_id.clone();
        let added = note(follow_up);
        match record
            .notes_dict_arr
            .iter_mut()
            .find(|n| n.follow_up_id == follow_up_id)
        {
            Some(same) => *same = added,
            None => record.notes_dict_arr.push(added),
        }
        writer.put(record).await.map_err(storage)?;
        drop(writer);
        tracing::info!(order_req_id = %id, %follow_up_id, "processor added follow-up note");
        Ok(())
    }

    /// The processor's record of a request, as stored now.
    pub async fn record(
        &self,
        id: &OrderId,
    ) -> Result<Option<ProcessorOrderReqObj>, ProcessorError> {
        self.inner.records.fresh(id).await.map_err(storage)
    }

    /// Counts and ids, for diagnostics (every instance's, with a shared
    /// store; `streams_opened` counts this instance's since its start).
    pub async fn status(&self) -> Result<ProcessorStatus, ProcessorError> {
        let records = self.inner.records.fresh_list().await.map_err(storage)?;
        let processing = records
            .iter()
            .filter(|(_, record)| record.state == RoundState::Processing)
            .count();
        Ok(ProcessorStatus {
            total_orders: records.len(),
            processing_streams: processing,
            streams_opened: self.inner.streams_opened.load(Ordering::Relaxed),
            tracked_order_ids: records.into_iter().map(|(id, _)| id).collect(),
        })
    }
}

/// A store failure as the processor reports it.
fn storage(err: ServiceError) -> ProcessorError {
    ProcessorError::Storage(err.to_string())
}

fn note(follow_up: FollowUp) -> ProcessorNotesDictObj {
    ProcessorNotesDictObj {
        follow_up_id: follow_up.follow_up_id,
        audience: Some(follow_up.audience),
        content: Some(follow_up.content),
        added_time: Some(follow_up.added_time),
    }
}

/// One round's hold on its record. [`RoundGuard::finish`] marks a record
/// still `processing` abandoned (or failed) and stores that; if the task dies
/// before (a panic), the drop marks it in memory, and the next start puts the
/// stored record right.
struct RoundGuard<'a> {
    /// The processor's state.
    inner: &'a Inner,
    /// The request of this round.
    id: &'a OrderId,
    /// Which round this is; a newer round's record is left alone.
    serial: u64,
    /// Whether `finish` ran.
    finished: bool,
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        if self.finished || !self.owns() {
            return;
        }
        self.inner.records.patch_in_memory(self.id, |record| {
            if record.state == RoundState::Processing {
                record.state = RoundState::Abandoned;
            }
        });
        tracing::warn!(order_req_id = %self.id, "processing round died; marked abandoned in memory only");
    }
}

impl RoundGuard<'_> {
    /// Whether this round still owns the record.
    fn owns(&self) -> bool {
        self.inner.rounds.get(self.id).map(|owner| *owner) == Some(self.serial)
    }

    /// Changes the record and stores it, if this round still owns it.
    async fn update<T>(
        &self,
        change: impl FnOnce(&mut ProcessorOrderReqObj) -> T,
    ) -> Result<Option<T>, ServiceError> {
        let writer = self.inner.records.write(self.id).await;
        let Some(mut record) = writer.current().filter(|_| self.owns()) else {
            return Ok(None);
        };
        let out = change(&mut record);
        writer.put(record).await?;
        Ok(Some(out))
    }

    /// Once the round has stopped: a record still `processing` becomes
    /// `state` (abandoned, or failed when the store failed mid-round). If the
    /// store refuses that too, memory shows it anyway (no round runs) and the
    /// disagreement is logged; the next start marks the stored record.
    async fn finish(&mut self, state: RoundState) {
        self.finished = true;
        let writer = self.inner.records.write(self.id).await;
        let Some(mut record) = writer
            .current()
            .filter(|record| self.owns() && record.state == RoundState::Processing)
        else {
            return;
        };
        record.state = state;
        tracing::info!(order_req_id = %self.id, ?state, "processing round stopped before an outcome");
        if let Err(err) = writer.put(record.clone()).await {
            tracing::error!(order_req_id = %self.id, error = %err, "cannot store that a processing round stopped; memory and store disagree until the next start");
            writer.put_in_memory(record);
        }
    }

    /// Walks the sellers' timeline, recording each step and sending it on,
    /// until the outcome is sent, the requestor drops the stream or the
    /// server shuts down. Returns what a record still `processing` becomes.
    async fn run(
        &self,
        request: &StreamRequest,
        tx: mpsc::Sender<Result<ProcessingEvent, ProcessorError>>,
    ) -> RoundState {
        let start = tokio::time::Instant::now();
        for (after, step) in sellers::timeline(self.id, request.scenario) {
            // Deadlines from the start, so steps do not drift.
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return RoundState::Abandoned,
                () = tx.closed() => return RoundState::Abandoned,
                () = tokio::time::sleep_until(start + request.speed.scale(after)) => {}
            }
            let (event, last) = match self.record_step(step).await {
                Ok(stepped) => stepped,
                Err(err) => {
                    tracing::error!(order_req_id = %self.id, error = %err, "cannot store a processing step; the round fails");
                    let _ = tx.send(Err(storage(err))).await;
                    return RoundState::Failed;
                }
            };
            if tx.send(event).await.is_err() || last {
                return RoundState::Abandoned;
            }
        }
        RoundState::Abandoned
    }

    /// Writes `step` into the record (one store write, before anything is
    /// sent) and says what to send, and whether the round ends with it.
    async fn record_step(
        &self,
        step: Step,
    ) -> Result<(Result<ProcessingEvent, ProcessorError>, bool), ServiceError> {
        let now = self.inner.service.now();
        Ok(match step {
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
                })
                .await?;
                tracing::info!(order_req_id = %self.id, sellers = sellers.len(), "processor selected sellers");
                (Ok(ProcessingEvent::SellersSelected { sellers }), false)
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
                })
                .await?;
                tracing::info!(order_req_id = %self.id, proposal_id = %proposal.proposal_id, "processor received a proposal");
                (Ok(ProcessingEvent::ProposalReceived { proposal }), false)
            }
            Step::Accept(proposal) => {
                self.update(|record| {
                    for received in &mut record.proposal_dict_arr {
                        received.accepted = received.proposal_id == proposal.proposal_id;
                    }
                    record.state = RoundState::Accepted;
                })
                .await?;
                tracing::info!(order_req_id = %self.id, proposal_id = %proposal.proposal_id, seller = %proposal.seller.name, "processor accepted a proposal");
                (Ok(ProcessingEvent::ProposalAccepted { proposal }), true)
            }
            Step::Expire => {
                let expiry = self
                    .update(|record| {
                        record.state = RoundState::Expired;
                        record.expiry
                    })
                    .await?
                    .flatten()
                    .unwrap_or(now);
                tracing::info!(order_req_id = %self.id, "processor round expired with no proposal");
                (Ok(ProcessingEvent::Expired { expiry }), true)
            }
            Step::Fail(why) => {
                self.update(|record| record.state = RoundState::Failed)
                    .await?;
                tracing::warn!(order_req_id = %self.id, error = %why, "processor round failed");
                (Err(ProcessorError::SellerDirectory(why)), true)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;
    use crate::domain::TimeScale;

    /// The state of `id`'s round in the processor's record.
    async fn state(processor: &Processor, id: &str) -> RoundState {
        processor
            .record(&id.parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state
    }

    use crate::requests::sellers::Scenario;
    use crate::store::MemoryStore;

    async fn processor() -> (Processor, CancellationToken, TaskTracker) {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let service = OrderService::for_tests(Arc::new(MemoryStore::new()), &shutdown);
        let processor = Processor::load(service, tracker.clone(), shutdown.clone())
            .await
            .unwrap();
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
        let (processor, _, _) = processor().await;
        let start = tokio::time::Instant::now();
        let mut rx = tokio_stream::wrappers::ReceiverStream::new(
            processor
                .process(request("TEST001", Scenario::Accept))
                .await
                .unwrap(),
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

        let record = processor
            .record(&"TEST001".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
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
        assert_eq!(processor.status().await.unwrap().processing_streams, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_and_failure_end_the_stream() {
        let (processor, _, _) = processor().await;
        let start = tokio::time::Instant::now();
        let mut rx = tokio_stream::wrappers::ReceiverStream::new(
            processor
                .process(request("EXP", Scenario::Expire))
                .await
                .unwrap(),
        );
        next(&mut rx, start).await;
        let (at, event) = next(&mut rx, start).await;
        assert_eq!(at, sellers::EXPIRY_AFTER);
        assert!(matches!(event, Some(Ok(ProcessingEvent::Expired { .. }))));

        let mut rx = tokio_stream::wrappers::ReceiverStream::new(
            processor
                .process(request("FAIL", Scenario::Fail))
                .await
                .unwrap(),
        );
        let start = tokio::time::Instant::now();
        next(&mut rx, start).await;
        let (_, event) = next(&mut rx, start).await;
        assert!(matches!(
            event,
            Some(Err(ProcessorError::SellerDirectory(_)))
        ));
        assert_eq!(next(&mut rx, start).await.1, None);
        assert_eq!(state(&processor, "EXP").await, RoundState::Expired);
        assert_eq!(state(&processor, "FAIL").await, RoundState::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_stream_or_shutdown_abandons_the_round_and_ends_its_task() {
        let (processor, shutdown, tracker) = processor().await;
        let rx = processor
            .process(request("GONE", Scenario::Accept))
            .await
            .unwrap();
        let mut kept = processor
            .process(request("KEPT", Scenario::Accept))
            .await
            .unwrap();
        drop(rx);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(state(&processor, "GONE").await, RoundState::Abandoned);
        assert_eq!(state(&processor, "KEPT").await, RoundState::Processing);

        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(1), tracker.wait())
            .await
            .expect("rounds stop on shutdown");
        assert_eq!(state(&processor, "KEPT").await, RoundState::Abandoned);
        assert!(kept.recv().await.is_none(), "the stream ends");
    }

    #[tokio::test(start_paused = true)]
    async fn notes_are_kept_flexibly_and_survive_a_new_round() {
        let (processor, _, _) = processor().await;
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
        let unknown = processor.add_note(follow_up(1)).await;
        assert_eq!(unknown, Err(ProcessorError::UnknownRequest(id.clone())));

        let _first = processor
            .process(request("NOTE", Scenario::Accept))
            .await
            .unwrap();
        processor.add_note(follow_up(1)).await.unwrap();
        // A second round carries the notes the requestor sends along.
        let mut second = request("NOTE", Scenario::Accept);
        second.notes = vec![follow_up(1)];
        let _second = processor.process(second).await.unwrap();
        processor.add_note(follow_up(2)).await.unwrap();
        // A third round whose request lacks FU002 (it raced the round) keeps it.
        let mut third = request("NOTE", Scenario::Accept);
        third.notes = vec![follow_up(1)];
        let _third = processor.process(third).await.unwrap();
        let notes: Vec<String> = processor
            .record(&id)
            .await
            .unwrap()
            .unwrap()
            .notes_dict_arr
            .into_iter()
            .map(|n| n.follow_up_id)
            .collect();
        assert_eq!(notes, ["FU001", "FU002"]);
        assert_eq!(processor.status().await.unwrap().streams_opened, 3);
        assert_eq!(processor.status().await.unwrap().total_orders, 1);

        // A minimal record, as seed 002's processor first creates it, reads fine.
        let minimal: ProcessorOrderReqObj = serde_json::from_value(serde_json::json!({
            "order_req_id": "NOTE", "session": "s", "state": "processing"
        }))
        .unwrap();
        assert!(minimal.seller_dict_arr.is_empty() && minimal.expiry.is_none());
    }
}
