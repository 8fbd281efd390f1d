//! The requestor: accepts customer order requests and follow-ups, tracks
//! them (seed 000's `order_req_id_list` of [`OrderReqObj`]), runs one
//! processing stream per request and relays the stream's progress to the
//! customer order through the order service, the one write path.
//!
//! Duplicate streams are prevented by an atomic check-and-set on the map of
//! active streams (`DashMap::entry`): of any number of simultaneous initiates
//! of one id, exactly one finds the slot vacant and starts a stream. The slot
//! is held by a `StreamSlot` guard owned by the task that consumes the
//! stream, and freed when that guard drops, however the stream ends:
//! outcome, processor error, `/stop`, the order being cancelled, shutdown,
//! even a panic.
//!
//! The tracked requests and their notes are durable
//! (`records`): each change is stored before it is answered. A
//! running stream is recorded in the store as a background run until it
//! ends; shutdown, a crash or `kill -9` leave the record, and the next start
//! resumes the stream ([`Requestor::resume`]) with a new seller-search round
//! on the still-`requested` order, at the stream's recorded speed and
//! scenario. Resuming is what the customer expects and costs one order
//! change: the processor's simulated round cannot be continued mid-way
//! (its timers died with the process), so a new round starts, and the
//! order's history shows it (`search_restarted`, with the reason in
//! `notes`). A request whose order was settled meanwhile is not resumed.
//! The active-stream map itself stays in memory: only a stream that really
//! runs in this process is active.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::ToSchema;

use super::model::{FollowUpDraft, Initiate, MessageContent, MessageType, NotificationType};
use super::records::RecordBook;
use super::sellers::Scenario;
use super::transport::{
    EventStream, FollowUp, ProcessingEvent, ProcessorError, ProcessorLink, StreamRequest,
};
use crate::domain::{
    Attribution, ChangeError, OrderChange, OrderId, OrderSnapshot, OrderStatus, TimeScale,
    Timestamp, ValidationError,
};
use crate::orders::{Answer, KeyClaim, OrderService, RunStart, ServiceError};
use crate::store::BackgroundRun;

/// `updated_by` of the changes the order-request processor's progress makes.
pub const REQUESTOR: &str = "order-request processor";
/// Longest `/stop` waits for the stream to finish before answering.
pub const STOP_WAIT: Duration = Duration::from_secs(5);
/// A stream's options as its recorded run's parameters.
fn stream_params(options: ProcessingOptions) -> Result<serde_json::Value, RequestError> {
    serde_json::to_value(options).map_err(|err| {
        RequestError::Service(ServiceError::Store(crate::store::StoreError::Corrupt(
            format!("stream options: {err}"),
        )))
    })
}

/// `notes` of the history entry of a stream resumed after a restart.
pub const RESUMED_NOTE: &str =
    "processing resumed after a server restart: a new seller-search round started";

/// The store's name for the requestor's records.
const SIDE: &str = "requestor";
/// The store's name for a running processing stream (a background run).
pub(crate) const STREAM_RUN: &str = "request_stream";

/// What can go wrong with an order request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The input broke the requestor's strict rules; every problem listed.
    #[error("invalid {what}: {}", problems.join("; "))]
    Invalid {
        what: &'static str,
        problems: Vec<String>,
    },
    #[error("order request {0} is not tracked; initiate it first")]
    NotFound(OrderId),
    #[error("order request {0} has no active processing stream")]
    NotActive(OrderId),
    /// The customer order has left `requested`, so there is nothing left to
    /// process.
    #[error("order {id} is {status}, so its request is settled; only a requested order can be processed again")]
    Settled { id: OrderId, status: OrderStatus },
    #[error("the processor did not take the follow-up: {0}")]
    Processor(#[from] ProcessorError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl RequestError {
    /// `err` as the problems of an invalid `what` (`initiate`, `follow-up`).
    pub fn invalid(what: &'static str, err: ValidationError) -> RequestError {
        RequestError::Invalid {
            what,
            problems: err.problems,
        }
    }
}

/// A follow-up's idempotency key, and its answer once its note exists:
/// stored in the same write as the note ([`Requestor::follow_up`]).
pub struct FollowUpKey {
    /// The key, claimed by the request.
    pub claim: KeyClaim,
    /// The answer the request gives for the note.
    pub answer: Box<dyn FnOnce(&NotesDictObj) -> Answer + Send>,
}

/// How one initiate went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiated {
    /// A processing stream started.
    Started,
    /// A stream was already active for the id; none started.
    AlreadyProcessing,
}

/// How the simulated sellers of one request behave; stored with a running
/// stream, so a resumed stream behaves alike.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcessingOptions {
    /// Time scale; the server's `--processing-speed` when absent.
    #[serde(with = "optional_speed")]
    pub speed: Option<TimeScale>,
    /// What the sellers do.
    pub scenario: Scenario,
}

/// Why a processing stream ended, for logs and stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnding {
    /// A seller's proposal was accepted; the order is confirmed.
    Accepted,
    /// No seller proposed in time; the order expired.
    Expired,
    /// The processor failed, or ended the stream without an outcome.
    ProcessorError,
    /// `/stop` asked.
    Stopped,
    /// The server is shutting down.
    Shutdown,
    /// Someone else settled the order (cancelled it).
    OrderClosed,
    /// Our own side failed: a write to the order failed, or the task died.
    InternalError,
}

impl StreamEnding {
    fn as_str(self) -> &'static str {
        match self {
            StreamEnding::Accepted => "accepted",
            StreamEnding::Expired => "expired",
            StreamEnding::ProcessorError => "processor_error",
            StreamEnding::Stopped => "stopped",
            StreamEnding::Shutdown => "shutdown",
            StreamEnding::OrderClosed => "order_closed",
            StreamEnding::InternalError => "internal_error",
        }
    }
}

/// A follow-up note as the requestor keeps it (seed 000's `NotesDictObj`):
/// every field required.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotesDictObj {
    /// Given by the requestor, `FU001`, `FU002`, … per request.
    pub follow_up_id: String,
    /// The sellers addressed; never empty.
    pub audience: Vec<String>,
    /// What it says.
    pub content: MessageContent,
    /// When it was accepted.
    pub added_time: Timestamp,
}

impl NotesDictObj {
    /// The note as it crosses the link to the processor.
    fn to_follow_up(&self, order_req_id: &OrderId) -> FollowUp {
        FollowUp {
            order_req_id: order_req_id.clone(),
            follow_up_id: self.follow_up_id.clone(),
            audience: self.audience.clone(),
            content: self.content.clone(),
            added_time: self.added_time,
        }
    }
}

/// The requestor's record of one request (seed 000's `OrderReqObj`), stored
/// as JSON on every change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderReqObj {
    /// The request, also the customer order's id.
    pub order_req_id: OrderId,
    /// The session of the latest initiate.
    pub session: String,
    /// As given by the latest initiate; passed to the processor.
    pub notification_type: NotificationType,
    /// Follow-ups, in the order they were accepted.
    pub notes_dict_arr: Vec<NotesDictObj>,
    /// Follow-up ids handed out so far, for the next id.
    follow_ups_issued: u32,
}

/// `GET /api/v1/orders/tracking/status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"total_orders": 1, "active_streams": 1, "tracked_order_ids": ["TEST001"]}))]
pub struct TrackingStatus {
    /// Requests tracked.
    pub total_orders: usize,
    /// Processing streams active now.
    pub active_streams: usize,
    /// Every tracked request, first tracked first.
    pub tracked_order_ids: Vec<OrderId>,
}

/// One note in [`TrackingDetails`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NoteSummary {
    /// The note's id, the same in the processor's record.
    #[schema(example = "FU001")]
    pub follow_up_id: String,
    /// The sellers it addresses.
    #[schema(example = json!(["seller1", "seller2"]))]
    pub audience: Vec<String>,
    /// What kind of message it is (the content itself is in the
    /// processor's record).
    pub message_type: MessageType,
    /// When the requestor accepted it.
    pub added_time: Timestamp,
}

/// `GET /api/v1/orders/tracking/{order_req_id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "order_req_id": "TEST001",
    "session": "sess_test_001",
    "notes_count": 1,
    "is_stream_active": true,
    "notes": [{"follow_up_id": "FU001", "audience": ["seller1", "seller2"], "message_type": "text",
        "added_time": "2025-01-12T20:31:00.000000Z"}]
}))]
pub struct TrackingDetails {
    /// The request, also the customer order's id.
    pub order_req_id: OrderId,
    /// The session of the latest initiate.
    #[schema(example = "sess_test_001")]
    pub session: String,
    /// How many follow-ups the request has.
    pub notes_count: usize,
    /// Whether a processing stream runs for it now.
    pub is_stream_active: bool,
    /// Its follow-ups, oldest first.
    pub notes: Vec<NoteSummary>,
}

/// How processing streams ended since start, by reason.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct StreamEndings {
    /// A proposal was accepted; the order is confirmed.
    pub accepted: u64,
    /// No proposal in time; the order expired.
    pub expired: u64,
    /// The processor failed or ended the stream without an outcome.
    pub processor_error: u64,
    /// Stopped through `/stop`.
    pub stopped: u64,
    /// Ended by server shutdown.
    pub shutdown: u64,
    /// The order was settled elsewhere (cancelled).
    pub order_closed: u64,
    /// A write to the order failed or the stream's task died.
    pub internal_error: u64,
}

/// The requestor's figures in `/api/v1/orders/system/stats`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestStats {
    /// Requests tracked.
    pub tracked: usize,
    /// Processing streams active now.
    pub active_streams: usize,
    /// Processing streams started since start; with simultaneous initiates
    /// of one id this grows by exactly one.
    pub streams_started: u64,
    /// Initiates answered "Order already being processed".
    pub duplicates_prevented: u64,
    /// How the streams that ended, ended.
    pub stream_endings: StreamEndings,
}

/// Cheap handle to the requestor; clones share one state.
#[derive(Clone)]
pub struct Requestor {
    /// The state every clone shares.
    inner: Arc<Inner>,
}

struct Inner {
    /// The one write path, for the customer orders behind requests.
    service: OrderService,
    /// The way to the processor.
    link: Arc<dyn ProcessorLink>,
    /// `order_req_id_list`: every request tracked, by id, stored on every
    /// change.
    requests: RecordBook<OrderReqObj>,
    /// `active_grpc_streams`: the streams running now. An entry exists from
    /// the atomic claim in `initiate` until the stream's guard drops.
    active: DashMap<OrderId, ActiveStream>,
    /// Numbers streams, so a finished stream's guard never frees its
    /// successor's slot.
    next_seq: AtomicU64,
    /// Streams started since start.
    streams_started: AtomicU64,
    /// Initiates turned away as duplicates.
    duplicates_prevented: AtomicU64,
    /// Streams ended since start, by reason.
    endings: Endings,
    /// Every stream's task, so shutdown waits for them.
    tracker: TaskTracker,
    /// Parent of every stream's stop token; cancelled on shutdown.
    shutdown: CancellationToken,
    /// Time scale when an initiate gives none (`--processing-speed`).
    default_speed: TimeScale,
}

/// An active stream's entry in `active`.
struct ActiveStream {
    /// Which stream holds the slot.
    serial: u64,
    /// Its lease is recorded: from now on, the heartbeat checks it is still
    /// this instance's.
    leased: bool,
    /// Cancelled by `/stop` (and, as a child of shutdown, by shutdown).
    stop: CancellationToken,
    /// Cancelled by the guard once the slot is free, so `/stop` can wait.
    ended: CancellationToken,
}

/// Counters behind [`StreamEndings`].
#[derive(Default)]
struct Endings {
    /// One counter per [`StreamEnding`], in declaration order.
    counts: [AtomicU64; 7],
}

impl Endings {
    fn bump(&self, ending: StreamEnding) {
        self.counts[ending as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StreamEndings {
        let get = |ending: StreamEnding| self.counts[ending as usize].load(Ordering::Relaxed);
        StreamEndings {
            accepted: get(StreamEnding::Accepted),
            expired: get(StreamEnding::Expired),
            processor_error: get(StreamEnding::ProcessorError),
            stopped: get(StreamEnding::Stopped),
            shutdown: get(StreamEnding::Shutdown),
            order_closed: get(StreamEnding::OrderClosed),
            internal_error: get(StreamEnding::InternalError),
        }
    }
}

/// Holds a request's active-stream slot. Dropping it frees the slot (only if
/// still its own), counts and logs how the stream ended, and wakes `/stop`.
struct StreamSlot {
    /// The requestor's state.
    inner: Arc<Inner>,
    /// The request.
    id: OrderId,
    /// Which stream this is.
    serial: u64,
    /// Cancelled on drop.
    ended: CancellationToken,
    /// Whether a stream was actually opened; a claim given up before that
    /// (the order could not be prepared) is freed without an ending.
    started: bool,
    /// How it ended; stays `InternalError` if the task dies before saying.
    ending: StreamEnding,
    /// Why, when an error ended it.
    detail: Option<String>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.inner
            .active
            .remove_if(&self.id, |_, stream| stream.serial == self.serial);
        if self.started {
            self.inner.endings.bump(self.ending);
            tracing::info!(
                order_req_id = %self.id,
                ending = self.ending.as_str(),
                detail = self.detail.as_deref(),
                "processing stream marked inactive"
            );
        }
        self.ended.cancel();
    }
}

impl Requestor {
    /// The requestor with every request it tracked before (loaded whole: a
    /// diagnostics list the API shows in full anyway). No stream runs yet;
    /// [`Requestor::resume`] restarts those that were running.
    pub async fn load(
        service: OrderService,
        link: Arc<dyn ProcessorLink>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        default_speed: TimeScale,
    ) -> Result<Requestor, ServiceError> {
        Ok(Requestor {
            inner: Arc::new(Inner {
                requests: RecordBook::load(SIDE, service.clone()).await?,
                service,
                link,
                active: DashMap::new(),
                next_seq: AtomicU64::new(0),
                streams_started: AtomicU64::new(0),
                duplicates_prevented: AtomicU64::new(0),
                endings: Endings::default(),
                tracker,
                shutdown,
                default_speed,
            }),
        })
    }

    /// Starts processing a request, unless a stream for it is already active.
    ///
    /// A new id gets a customer order in `requested`. An id whose earlier
    /// stream ended starts a new round on the same order if it is still
    /// `requested`, and is refused once the order is settled.
    #[tracing::instrument(skip_all, fields(order_req_id = %request.order_req_id))]
    pub async fn initiate(
        &self,
        request: Initiate,
        options: ProcessingOptions,
    ) -> Result<Initiated, RequestError> {
        let id = request.order_req_id.clone();
        let Some((slot, stop)) = self.claim(&id) else {
            self.inner
                .duplicates_prevented
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(order_req_id = %id, "order request already has an active processing stream; duplicate prevented");
            return Ok(Initiated::AlreadyProcessing);
        };
        // From here every early return drops `slot`, which frees the claim.
        let options = ProcessingOptions {
            speed: Some(options.speed.unwrap_or(self.inner.default_speed)),
            ..options
        };
        // The stream is recorded as running (so a restart or another
        // instance resumes it) under this instance's lease, before anything
        // else: another instance running it answers like a local duplicate.
        let run = self
            .inner
            .service
            .new_run(STREAM_RUN, &id, stream_params(options)?);
        if let RunStart::HeldBy(owner) = self.inner.service.claim_run(&run).await? {
            self.inner
                .duplicates_prevented
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(order_req_id = %id, %owner, "order request already has an active processing stream on another instance; duplicate prevented");
            return Ok(Initiated::AlreadyProcessing);
        }
        let started = async {
            self.prepare_order(&request).await?;
            let events = self
                .open(
                    &id,
                    request.session.clone(),
                    request.notification_type,
                    options,
                )
                .await?;
            // Tracked only once the processor has the request, so a follow-up
            // accepted for it always finds the processor's copy.
            self.track(&request).await?;
            self.run(slot, stop, events, options).await
        }
        .await;
        if let Err(err) = started {
            // Nothing runs: nothing may stay recorded as running.
            if let Err(end) = self.inner.service.end_run(STREAM_RUN, &id).await {
                tracing::warn!(order_req_id = %id, error = %end, "cannot forget a stream that failed to start; it will be resumed and settle then");
            }
            return Err(err);
        }
        Ok(Initiated::Started)
    }

    /// Opens the processing stream of `id`: the processor stores its record
    /// and starts a round.
    async fn open(
        &self,
        id: &OrderId,
        session: String,
        notification_type: NotificationType,
        options: ProcessingOptions,
    ) -> Result<EventStream, RequestError> {
        Ok(self
            .inner
            .link
            .open_stream(StreamRequest {
                order_req_id: id.clone(),
                session,
                notification_type,
                notes: self.notes_of(id),
                scenario: options.scenario,
                speed: options.speed.unwrap_or(self.inner.default_speed),
            })
            .await?)
    }

    /// Hands the stream, recorded as running by the caller, to its task.
    async fn run(
        &self,
        mut slot: StreamSlot,
        stop: CancellationToken,
        events: EventStream,
        options: ProcessingOptions,
    ) -> Result<(), RequestError> {
        let id = slot.id.clone();
        let changes = self.inner.service.changes(&id).await?;
        slot.started = true;
        if let Some(mut active) = self.inner.active.get_mut(&id) {
            if active.serial == slot.serial {
                active.leased = true;
            }
        }
        self.inner.streams_started.fetch_add(1, Ordering::Relaxed);
        tracing::info!(order_req_id = %id, scenario = %options.scenario, "processing stream marked active");
        let inner = Arc::clone(&self.inner);
        self.inner
            .tracker
            .spawn(consume(inner, slot, events, stop, changes));
        Ok(())
    }

    /// Resumes every processing stream that was running when the server
    /// last stopped (shutdown, crash, `kill -9`): a new seller-search round
    /// on the order, still `requested`, with the stream's recorded speed and
    /// scenario; the order's history says why (`search_restarted`,
    /// [`RESUMED_NOTE`]). A stream whose order was settled meanwhile, or
    /// whose request is unknown, is forgotten. Returns how many resumed.
    pub async fn resume(&self) -> Result<usize, RequestError> {
        let mut resumed = 0;
        for run in self.inner.service.runs(STREAM_RUN).await? {
            let id = run.order_id.clone();
            if self.inner.active.contains_key(&id) || !self.inner.service.may_take(&run) {
                continue;
            }
            match self.resume_one(&run).await {
                Ok(true) => {
                    resumed += 1;
                    tracing::info!(order_req_id = %id, previous_owner = %run.owner, "processing stream resumed");
                }
                Ok(false) => {}
                Err(RequestError::Settled { status, .. }) => {
                    tracing::info!(order_req_id = %id, %status, "processing stream not resumed: the order is settled");
                    self.inner.service.end_run(STREAM_RUN, &id).await?;
                }
                // Left recorded: the next start (or heartbeat) tries again.
                Err(err) => {
                    tracing::error!(order_req_id = %id, error = %err, "cannot resume a processing stream")
                }
            }
        }
        Ok(resumed)
    }

    /// Resumes one recorded stream; `false` if there was nothing to resume
    /// (or another instance took it first).
    async fn resume_one(&self, run: &BackgroundRun) -> Result<bool, RequestError> {
        let id = &run.order_id;
        let options: ProcessingOptions =
            serde_json::from_value(run.params.clone()).unwrap_or_default();
        let Some((slot, stop)) = self.claim(id) else {
            return Ok(false);
        };
        let mine = self
            .inner
            .service
            .new_run(STREAM_RUN, id, run.params.clone());
        let taken_from = match self.inner.service.claim_run(&mine).await? {
            RunStart::HeldBy(_) => return Ok(false),
            RunStart::Owned { taken_from } => taken_from,
        };
        // A request another instance started is not in this one's book yet.
        let tracked = match self.inner.requests.get(id) {
            Some(tracked) => Some(tracked),
            None => self.inner.requests.refresh(id).await?,
        };
        let Some(tracked) = tracked else {
            tracing::warn!(order_req_id = %id, "a running stream of an untracked request; forgotten");
            self.inner.service.end_run(STREAM_RUN, id).await?;
            return Ok(false);
        };
        let reason = match &taken_from {
            None => Attribution {
                updated_by: Some(REQUESTOR.to_owned()),
                notes: Some(RESUMED_NOTE.to_owned()),
                metadata: Some(serde_json::Map::from_iter([(
                    "reason".to_owned(),
                    serde_json::Value::from("server_restart"),
                )])),
            },
            Some(owner) => Attribution {
                updated_by: Some(REQUESTOR.to_owned()),
                notes: Some(format!("processing taken over from instance {owner} after its lease expired: a new seller-search round started")),
                metadata: Some(serde_json::Map::from_iter([
                    ("reason".to_owned(), serde_json::Value::from("lease_expired")),
                    ("previous_owner".to_owned(), serde_json::Value::from(owner.as_str())),
                ])),
            },
        };
        match self
            .inner
            .service
            .apply(id, OrderChange::RestartSearch, reason)
            .await
        {
            Ok(_) => {}
            Err(ServiceError::Change(ChangeError::NotRequested { status })) => {
                return Err(RequestError::Settled {
                    id: id.clone(),
                    status,
                })
            }
            Err(err) => return Err(err.into()),
        }
        let events = self
            .open(id, tracked.session, tracked.notification_type, options)
            .await?;
        self.run(slot, stop, events, options).await?;
        Ok(true)
    }

    /// The atomic check-and-set: a guard on the request's active slot and
    /// the stream's stop token, or `None` if another stream holds the slot.
    fn claim(&self, id: &OrderId) -> Option<(StreamSlot, CancellationToken)> {
        let serial = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let stop = self.inner.shutdown.child_token();
        let ended = CancellationToken::new();
        match self.inner.active.entry(id.clone()) {
            Entry::Occupied(_) => None,
            Entry::Vacant(slot) => {
                slot.insert(ActiveStream {
                    serial,
                    leased: false,
                    stop: stop.clone(),
                    ended: ended.clone(),
                });
                let slot = StreamSlot {
                    inner: Arc::clone(&self.inner),
                    id: id.clone(),
                    serial,
                    ended,
                    started: false,
                    ending: StreamEnding::InternalError,
                    detail: None,
                };
                Some((slot, stop))
            }
        }
    }

    /// Creates the customer order, or starts a new seller-search round on an
    /// existing one that is still `requested`.
    async fn prepare_order(&self, request: &Initiate) -> Result<(), RequestError> {
        let id = &request.order_req_id;
        match self.inner.service.create(request.order.clone()).await {
            Ok(_) => return Ok(()),
            Err(ServiceError::AlreadyExists(_)) => {}
            Err(err) => return Err(err.into()),
        }
        match self
            .inner
            .service
            .apply(id, OrderChange::RestartSearch, Attribution::by(REQUESTOR))
            .await
        {
            Ok(_) => Ok(()),
            Err(ServiceError::Change(ChangeError::NotRequested { status })) => {
                Err(RequestError::Settled {
                    id: id.clone(),
                    status,
                })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The request's notes as they cross to the processor; none for a new
    /// request.
    fn notes_of(&self, id: &OrderId) -> Vec<FollowUp> {
        self.inner
            .requests
            .get(id)
            .map(|tracked| {
                tracked
                    .notes_dict_arr
                    .iter()
                    .map(|note| note.to_follow_up(id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds the request to tracking, or updates it for a new round; stored
    /// before it returns.
    async fn track(&self, request: &Initiate) -> Result<(), RequestError> {
        let id = &request.order_req_id;
        let writer = self.inner.requests.write(id).await;
        let existing = writer.current();
        let new = existing.is_none();
        let tracked = match existing {
            Some(tracked) => OrderReqObj {
                session: request.session.clone(),
                notification_type: request.notification_type,
                ..tracked
            },
            None => OrderReqObj {
                order_req_id: id.clone(),
                session: request.session.clone(),
                notification_type: request.notification_type,
                notes_dict_arr: Vec::new(),
                follow_ups_issued: 0,
            },
        };
        writer.put(tracked).await?;
        if new {
            tracing::info!(order_req_id = %id, session = %request.session, "order request added to tracking");
        }
        Ok(())
    }

    /// Gives a follow-up its id, delivers it to the processor, then adds it
    /// to the request's notes and stores them, all under the request's write
    /// lock (so ids are handed out in order). Nothing is added if the
    /// processor refuses it. If the processor took it but the requestor's
    /// own write fails, the answer is an error and the processor keeps a
    /// note the requestor lacks; the retry gets the same id, which replaces
    /// that note in the processor's record.
    ///
    /// With `key` (the request's `Idempotency-Key`), the answer is stored
    /// in the same write as the notes, so a note is never stored without
    /// the answer that replays it, nor the answer without the note.
    #[tracing::instrument(skip_all, fields(order_req_id = %draft.order_req_id))]
    pub async fn follow_up(
        &self,
        draft: FollowUpDraft,
        key: Option<FollowUpKey>,
    ) -> Result<NotesDictObj, RequestError> {
        let id = draft.order_req_id.clone();
        let writer = self.inner.requests.write(&id).await;
        let mut tracked = writer
            .current()
            .ok_or_else(|| RequestError::NotFound(id.clone()))?;
        tracked.follow_ups_issued += 1;
        let note = NotesDictObj {
            follow_up_id: format!("FU{:03}", tracked.follow_ups_issued),
            audience: draft.audience,
            content: draft.content,
            added_time: self.inner.service.now(),
        };
        self.inner
            .link
            .send_follow_up(note.to_follow_up(&id))
            .await?;
        tracked.notes_dict_arr.push(note.clone());
        let answer = key.map(|key| key.claim.record((key.answer)(&note)));
        writer.put_answered(tracked, answer.as_ref()).await?;
        drop(writer);
        tracing::info!(
            order_req_id = %id,
            follow_up_id = %note.follow_up_id,
            audience = note.audience.len(),
            "follow-up note added to order tracking"
        );
        Ok(note)
    }

    /// Stops a request's processing stream and waits (at most [`STOP_WAIT`])
    /// for it to end. Returns whether it has ended. The order stays as it is;
    /// a later initiate starts a new round.
    pub async fn stop(&self, id: &OrderId) -> Result<bool, RequestError> {
        let tokens = self
            .inner
            .active
            .get(id)
            .map(|stream| (stream.stop.clone(), stream.ended.clone()));
        let Some((stop, ended)) = tokens else {
            // Running on another instance: it stops at its next heartbeat.
            if self.inner.service.cancel_run(STREAM_RUN, id).await? {
                tracing::info!(order_req_id = %id, "processing stream of another instance stop requested");
                return Ok(false);
            }
            return Err(if self.inner.requests.contains(id) {
                RequestError::NotActive(id.clone())
            } else {
                RequestError::NotFound(id.clone())
            });
        };
        stop.cancel();
        tracing::info!(order_req_id = %id, "processing stream stop requested");
        Ok(tokio::time::timeout(STOP_WAIT, ended.cancelled())
            .await
            .is_ok())
    }

    /// Stops the streams here that this instance no longer holds (see
    /// [`OrderService::lost_runs`]), as `/stop` would; `held` is what the
    /// heartbeat renewed. Returns how many.
    pub async fn stop_lost(&self, held: &[(String, OrderId)]) -> Result<usize, RequestError> {
        let leased = self
            .inner
            .active
            .iter()
            .filter(|stream| stream.leased)
            .map(|stream| stream.key().clone())
            .collect();
        let lost = self
            .inner
            .service
            .lost_runs(STREAM_RUN, leased, held)
            .await?;
        for id in &lost {
            if let Some(stream) = self.inner.active.get(id) {
                stream.stop.cancel();
                tracing::warn!(order_req_id = %id, "processing stream stopped here: stopped on another instance, or taken over after this instance's lease lapsed");
            }
        }
        Ok(lost.len())
    }

    /// Whether a processing stream runs for `id` now.
    pub fn is_stream_active(&self, id: &OrderId) -> bool {
        self.inner.active.contains_key(id)
    }

    /// Seed 000's tracking status. With a store shared by several
    /// instances, as the store has it: every instance's requests and the
    /// streams any of them runs.
    pub async fn status(&self) -> Result<TrackingStatus, RequestError> {
        let ids: Vec<OrderId> = self
            .inner
            .requests
            .fresh_list()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let active_streams = if self.inner.service.shares_store() {
            self.inner.service.live_runs(STREAM_RUN).await?.len()
        } else {
            self.inner.active.len()
        };
        Ok(TrackingStatus {
            total_orders: ids.len(),
            active_streams,
            tracked_order_ids: ids,
        })
    }

    /// Whether a processing stream runs for `id` here or, with a shared
    /// store, on any instance.
    async fn stream_runs_anywhere(&self, id: &OrderId) -> Result<bool, RequestError> {
        if self.is_stream_active(id) || !self.inner.service.shares_store() {
            return Ok(self.is_stream_active(id));
        }
        Ok(self
            .inner
            .service
            .live_runs(STREAM_RUN)
            .await?
            .iter()
            .any(|run| &run.order_id == id))
    }

    /// Seed 000's tracking details of one request, as stored now.
    pub async fn details(&self, id: &OrderId) -> Result<Option<TrackingDetails>, RequestError> {
        let Some(tracked) = self.inner.requests.fresh(id).await? else {
            return Ok(None);
        };
        Ok(Some(TrackingDetails {
            order_req_id: tracked.order_req_id,
            session: tracked.session,
            notes_count: tracked.notes_dict_arr.len(),
            is_stream_active: self.stream_runs_anywhere(id).await?,
            notes: tracked
                .notes_dict_arr
                .into_iter()
                .map(|note| NoteSummary {
                    follow_up_id: note.follow_up_id,
                    audience: note.audience,
                    message_type: note.content.message_type,
                    added_time: note.added_time,
                })
                .collect(),
        }))
    }

    /// Figures for `/system/stats`.
    pub fn stats(&self) -> RequestStats {
        RequestStats {
            tracked: self.inner.requests.len(),
            active_streams: self.inner.active.len(),
            streams_started: self.inner.streams_started.load(Ordering::Relaxed),
            duplicates_prevented: self.inner.duplicates_prevented.load(Ordering::Relaxed),
            stream_endings: self.inner.endings.snapshot(),
        }
    }
}

/// Resolves with the order's status once it is no longer `requested`.
async fn settled(mut changes: WatchStream<Arc<OrderSnapshot>>) -> OrderStatus {
    while let Some(snapshot) = changes.next().await {
        let status = snapshot.order().status;
        if status != OrderStatus::Requested {
            return status;
        }
    }
    // The hub keeps every order's sender while the process runs, so the
    // stream does not end; if it ever did, there is nothing left to watch.
    std::future::pending().await
}

/// Consumes one processing stream: relays each event to the customer order
/// through the one write path, until the outcome, an error, `/stop`,
/// shutdown, or the order being settled elsewhere. `slot` is dropped on the
/// way out, however the task ends, which marks the stream inactive.
async fn consume(
    inner: Arc<Inner>,
    mut slot: StreamSlot,
    mut events: EventStream,
    stop: CancellationToken,
    changes: WatchStream<Arc<OrderSnapshot>>,
) {
    let id = slot.id.clone();
    let settled = settled(changes);
    tokio::pin!(settled);
    let mut sellers_contacted = 0;
    let mut proposals_received = 0;
    let (ending, detail) = loop {
        let item = tokio::select! {
            () = stop.cancelled() => break if inner.shutdown.is_cancelled() {
                (StreamEnding::Shutdown, None)
            } else {
                (StreamEnding::Stopped, None)
            },
            status = &mut settled => {
                break (StreamEnding::OrderClosed, Some(format!("the order became {status}")));
            }
            item = events.next() => item,
        };
        let event = match item {
            Some(Ok(event)) => event,
            Some(Err(err)) => break (StreamEnding::ProcessorError, Some(err.to_string())),
            None if inner.shutdown.is_cancelled() => break (StreamEnding::Shutdown, None),
            None => {
                break (
                    StreamEnding::ProcessorError,
                    Some("the processor ended the stream without an outcome".to_owned()),
                )
            }
        };
        tracing::debug!(order_req_id = %id, ?event, "processing event");
        let (change, outcome) = match event {
            ProcessingEvent::SellersSelected { sellers } => {
                sellers_contacted = u32::try_from(sellers.len()).unwrap_or(u32::MAX);
                (None, None)
            }
            ProcessingEvent::ProposalReceived { .. } => {
                proposals_received += 1;
                (None, None)
            }
            ProcessingEvent::ProposalAccepted { proposal } => (
                Some(OrderChange::AcceptProposal {
                    seller: proposal.seller.name,
                }),
                Some(StreamEnding::Accepted),
            ),
            ProcessingEvent::Expired { .. } => {
                (Some(OrderChange::Expire), Some(StreamEnding::Expired))
            }
        };
        let change = change.unwrap_or(OrderChange::SearchProgress {
            sellers_contacted,
            proposals_received,
        });
        match inner
            .service
            .apply(&id, change, Attribution::by(REQUESTOR))
            .await
        {
            Ok(_) => {}
            Err(ServiceError::Change(ChangeError::NotRequested { status })) => {
                break (
                    StreamEnding::OrderClosed,
                    Some(format!("the order became {status}")),
                )
            }
            Err(err) => break (StreamEnding::InternalError, Some(err.to_string())),
        }
        if let Some(outcome) = outcome {
            break (outcome, None);
        }
    };
    // A stream stopped by shutdown stays recorded as running, to be resumed
    // at the next start; any other ending is final. Forgotten while the slot
    // is still held, so a new initiate's record cannot be the one removed.
    if ending != StreamEnding::Shutdown {
        if let Err(err) = inner.service.end_run(STREAM_RUN, &id).await {
            tracing::warn!(order_req_id = %id, error = %err, "cannot record that a processing stream ended; the next start may resume it");
        }
    }
    slot.ending = ending;
    slot.detail = detail;
    // Dropping the stream tells the processor we are done; dropping the slot
    // marks the stream inactive.
    drop(events);
    drop(slot);
}

/// An optional `TimeScale` as its speed, a plain number (or null).
mod optional_speed {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::TimeScale;

    pub fn serialize<S: Serializer>(
        scale: &Option<TimeScale>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match scale {
            Some(scale) => serializer.serialize_some(&scale.speed()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<TimeScale>, D::Error> {
        Option::<f64>::deserialize(deserializer)?
            .map(|speed| TimeScale::parse(&speed.to_string()).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;

    use crate::requests::model::InitiateInput;
    use crate::store::MemoryStore;

    /// A link whose streams misbehave in ways the real processor cannot be
    /// made to: the requestor must still free the slot.
    struct BrokenLink {
        /// Panic while the stream is read, instead of ending it quietly.
        panic: bool,
    }

    #[async_trait]
    impl ProcessorLink for BrokenLink {
        async fn open_stream(
            &self,
            _request: StreamRequest,
        ) -> Result<EventStream, ProcessorError> {
            Ok(if self.panic {
                Box::pin(tokio_stream::once(()).map(
                    |()| -> Result<ProcessingEvent, ProcessorError> { panic!("the stream broke") },
                ))
            } else {
                Box::pin(tokio_stream::empty())
            })
        }

        async fn send_follow_up(&self, _follow_up: FollowUp) -> Result<(), ProcessorError> {
            Ok(())
        }
    }

    async fn requestor(link: BrokenLink) -> (Requestor, TaskTracker) {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let service = OrderService::for_tests(Arc::new(MemoryStore::new()), &shutdown);
        let requestor = Requestor::load(
            service,
            Arc::new(link),
            tracker.clone(),
            shutdown,
            TimeScale::REAL_TIME,
        )
        .await
        .unwrap();
        (requestor, tracker)
    }

    fn request(id: &str) -> Initiate {
        let input: InitiateInput = serde_json::from_value(serde_json::json!({
            "order_req_id": id, "session_id": "sess_1", "notification_type": "email"
        }))
        .unwrap();
        input.parse().unwrap()
    }

    async fn settle(tracker: &TaskTracker) {
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("the stream's task ends");
    }

    #[tokio::test]
    async fn a_stream_whose_task_panics_still_frees_its_slot() {
        let (requestor, tracker) = requestor(BrokenLink { panic: true }).await;
        let id: OrderId = "PANIC1".parse().unwrap();
        let started = requestor
            .initiate(request("PANIC1"), ProcessingOptions::default())
            .await
            .unwrap();
        assert_eq!(started, Initiated::Started);
        settle(&tracker).await;
        assert!(!requestor.is_stream_active(&id));
        let stats = requestor.stats();
        assert_eq!(stats.stream_endings.internal_error, 1);
        assert_eq!(stats.active_streams, 0);
    }

    #[tokio::test]
    async fn a_stream_that_ends_without_an_outcome_is_a_processor_error() {
        let (requestor, tracker) = requestor(BrokenLink { panic: false }).await;
        let id: OrderId = "QUIET1".parse().unwrap();
        requestor
            .initiate(request("QUIET1"), ProcessingOptions::default())
            .await
            .unwrap();
        settle(&tracker).await;
        assert!(!requestor.is_stream_active(&id));
        assert_eq!(requestor.stats().stream_endings.processor_error, 1);
        // The order stays requested, so the request may be initiated again.
        let again = requestor
            .initiate(request("QUIET1"), ProcessingOptions::default())
            .await
            .unwrap();
        assert_eq!(again, Initiated::Started);
        assert_eq!(requestor.stats().streams_started, 2);
    }
}
