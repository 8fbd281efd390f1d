//! The writer: one task per process that owns every change.
//!
//! Callers send it a [`Job`] and await the reply. It takes every job waiting
//! in its queue as one batch, decides each with the domain rules, commits the
//! whole batch in one transaction (group commit: one `fsync` for many
//! changes), publishes each committed snapshot to the hub, and only then
//! replies. Because the task owns the commit and the publish, a caller that
//! hangs up mid-request cannot leave a committed change unpublished.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Applied, Command, Target};
use crate::domain::{
    ChangeError, Event, EventKind, Order, OrderChange, OrderId, OrderSnapshot, Timestamp, Version,
};
use crate::orders::{load_into_hub, new_order_id, Clock, ServiceError};
use crate::store::{
    Commit, CommitOutcome, IdempotencyRecord, OrderStore, StoreError, StoredAnswer,
};
use crate::tracking::Hub;

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Jobs that may wait for the writer before callers wait to enqueue.
pub const QUEUE_DEPTH: usize = 4096;
/// How often a change is retried when another writer (another instance)
/// got in between.
const MAX_WRITE_ATTEMPTS: u32 = 16;

/// What the writer tells a caller.
pub(super) enum Reply {
    Done(Applied),
    /// The request's idempotency key was stored by someone else meanwhile;
    /// the caller replays that answer.
    KeyTaken,
}

/// One command and where its answer goes.
pub(super) struct Job {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Reply, ServiceError>>,
    /// Commits tried so far that another writer beat.
    attempts: u32,
}

impl Job {
    pub fn new(command: Command) -> (Job, oneshot::Receiver<Result<Reply, ServiceError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Job {
                command,
                reply,
                attempts: 0,
            },
            rx,
        )
    }

    fn answer(self, result: Result<Reply, ServiceError>) {
        // The caller may have hung up; the change stands either way.
        let _ = self.reply.send(result);
    }
}

/// What the writer needs, moved into its task.
pub(super) struct Writer {
    pub store: Arc<dyn OrderStore>,
    pub hub: Hub,
    pub clock: Clock,
}

/// A job decided into a commit, waiting for the batch's outcome.
struct Pending {
    job: Job,
    commit: Commit,
}

impl Writer {
    /// Runs until every sender is gone: takes what is queued, commits it as
    /// one batch, publishes, replies.
    pub async fn run(self, mut queue: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        let mut retries = Vec::new();
        loop {
            if retries.is_empty() {
                if queue.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                    return;
                }
            } else {
                jobs.append(&mut retries);
                while jobs.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
            }
            retries = self.batch(std::mem::take(&mut jobs)).await;
            // Let the polls this batch woke answer before the next batch:
            // waking phones is what the service is for, and it paces writers
            // by the fan-out they cause (BENCHMARKS.md).
            tokio::task::yield_now().await;
        }
    }

    /// Decides, commits and answers one batch; returns the jobs that lost a
    /// race with another writer, to try again.
    async fn batch(&self, jobs: Vec<Job>) -> Vec<Job> {
        // Each order's state as of the commits decided so far in this batch.
        let mut latest: HashMap<OrderId, Arc<OrderSnapshot>> = HashMap::new();
        let mut pending = Vec::with_capacity(jobs.len());
        for job in jobs {
            match self.decide(&job, &mut latest).await {
                Ok(Decision::Commit(commit)) => pending.push(Pending {
                    job,
                    commit: *commit,
                }),
                Ok(Decision::Unchanged(snapshot)) => job.answer(Ok(Reply::Done(Applied {
                    snapshot,
                    changed: false,
                    replayed: false,
                }))),
                Err(err) => job.answer(Err(err)),
            }
        }
        if pending.is_empty() {
            return Vec::new();
        }
        let commits: Vec<Commit> = pending.iter().map(|p| p.commit.clone()).collect();
        let outcomes = match self.store.commit(&commits).await {
            Ok(outcomes) => outcomes,
            Err(err) => {
                tracing::error!(error = %err, changes = commits.len(), "cannot commit changes");
                // Off the writer's path: with the database away, each read
                // may wait for the pool's timeout.
                tokio::spawn(catch_up(Arc::clone(&self.store), self.hub.clone(), commits));
                let message = err.to_string();
                for Pending { job, .. } in pending {
                    job.answer(Err(ServiceError::Store(StoreError::Backend(
                        message.clone(),
                    ))));
                }
                return Vec::new();
            }
        };
        let mut retries = Vec::new();
        for (Pending { mut job, commit }, outcome) in pending.into_iter().zip(outcomes) {
            match outcome {
                CommitOutcome::Committed => {
                    self.hub.publish(Arc::clone(&commit.snapshot));
                    log_change(&commit);
                    job.answer(Ok(Reply::Done(Applied {
                        snapshot: commit.snapshot,
                        changed: true,
                        replayed: false,
                    })));
                }
                CommitOutcome::Exists => {
                    job.answer(Err(ServiceError::AlreadyExists(commit.order().id.clone())))
                }
                CommitOutcome::KeyTaken => job.answer(Ok(Reply::KeyTaken)),
                CommitOutcome::Conflict if job.attempts + 1 >= MAX_WRITE_ATTEMPTS => {
                    job.answer(Err(ServiceError::Contended(commit.order().id.clone())))
                }
                CommitOutcome::Conflict => {
                    job.attempts += 1;
                    retries.push(job);
                }
            }
        }
        retries
    }

    /// Turns a job into a commit against the order's latest state, or
    /// answers it without one.
    async fn decide(
        &self,
        job: &Job,
        latest: &mut HashMap<OrderId, Arc<OrderSnapshot>>,
    ) -> Result<Decision, ServiceError> {
        let command = &job.command;
        let now = self.clock.now();
        let (next, expected, kind) = match &command.target {
            Target::Create(draft) => {
                let id = draft.id.clone().unwrap_or_else(new_order_id);
                let order = Order::create(id, draft.clone(), now);
                (order, None, EventKind::Created)
            }
            Target::Change { id, change } => {
                // The hub's copy, unless this batch changed the order already
                // or a lost race says the copy is stale.
                let cached = !latest.contains_key(id) && job.attempts == 0;
                let current = match latest.get(id) {
                    Some(snapshot) => Arc::clone(snapshot),
                    None => self.current(id, !cached).await?,
                };
                let verdict = judge(&current, command.if_match, change, now);
                // Another instance may have moved the order since the hub
                // heard of it: only the store may refuse a change or call it
                // a no-op. (One read, and only when the answer is not a commit.)
                let (current, verdict) = match verdict {
                    Ok(Some(_)) => (current, verdict),
                    _ if !cached => (current, verdict),
                    _ => {
                        let stored = self.current(id, true).await?;
                        let verdict = judge(&stored, command.if_match, change, now);
                        (stored, verdict)
                    }
                };
                match verdict? {
                    Some(next) => {
                        let kind = EventKind::of_change(change, current.order());
                        (next, Some(current.version()), kind)
                    }
                    None => return Ok(Decision::Unchanged(current)),
                }
            }
        };
        let snapshot = Arc::new(OrderSnapshot::new(next));
        latest.insert(snapshot.order().id.clone(), Arc::clone(&snapshot));
        let order = snapshot.order();
        let key = command.idempotency.as_ref();
        let event = Event::for_order(
            order,
            kind,
            command.attribution.clone(),
            key.map(|k| k.key.clone()),
        );
        let idempotency = key.map(|key| IdempotencyRecord {
            scope: key.scope.clone(),
            key: key.key.clone(),
            fingerprint: key.fingerprint.clone(),
            answer: StoredAnswer::Order {
                order_id: order.id.clone(),
                version: order.version,
                json: snapshot.json().get().to_owned(),
            },
            created_at: now,
        });
        Ok(Decision::Commit(Box::new(Commit {
            snapshot,
            expected,
            event,
            idempotency,
        })))
    }

    /// The order as last committed: the hub's copy unless `reload`, else the
    /// store's (which also refreshes the hub).
    async fn current(
        &self,
        id: &OrderId,
        reload: bool,
    ) -> Result<Arc<OrderSnapshot>, ServiceError> {
        if !reload {
            if let Some(snapshot) = self.hub.latest(id) {
                return Ok(snapshot);
            }
        }
        load_into_hub(self.store.as_ref(), &self.hub, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.clone()))
    }
}

/// After a failed commit, publishes whatever the store holds for the batch's
/// orders: a connection lost during `COMMIT` may have committed after all,
/// and pollers must not sleep through it.
async fn catch_up(store: Arc<dyn OrderStore>, hub: Hub, commits: Vec<Commit>) {
    let mut seen = std::collections::HashSet::new();
    for commit in &commits {
        let id = &commit.order().id;
        if !seen.insert(id) {
            continue;
        }
        // Best effort: the safety net for a failure already reported.
        let _ = load_into_hub(store.as_ref(), &hub, id).await;
    }
}

/// What the rules say of `change` (with `if_match`) to `current`, without
/// I/O: the next state, `None` for a no-op, or why it is refused.
fn judge(
    current: &OrderSnapshot,
    if_match: Option<Version>,
    change: &OrderChange,
    now: Timestamp,
) -> Result<Option<Order>, ServiceError> {
    if let Some(expected) = if_match {
        if current.version() != expected {
            return Err(ServiceError::PreconditionFailed {
                id: current.order().id.clone(),
                expected,
                current: current.version(),
            });
        }
    }
    match current.order().apply(change, now) {
        // A store asking about another store's order learns nothing more
        // than about an order that does not exist.
        Err(ChangeError::NotAtStore) => Err(ServiceError::NotFound(current.order().id.clone())),
        other => Ok(other?),
    }
}

enum Decision {
    Commit(Box<Commit>),
    Unchanged(Arc<OrderSnapshot>),
}

fn log_change(commit: &Commit) {
    let order = commit.order();
    tracing::info!(
        order_id = %order.id,
        kind = commit.event.kind.as_str(),
        status = %order.status,
        version = %order.version,
        updated_by = commit.event.attribution.updated_by.as_deref(),
        "order changed"
    );
}
