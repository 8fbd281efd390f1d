//! The workflow simulator: drives an order along the seed's timeline through
//! the order service, exactly as a restaurant and a driver would, so parked
//! polls wake on every step.
//!
//! At most one simulation runs per order. Runs are tracked tasks that stop
//! when cancelled, when the order leaves the timeline (cancelled or finished
//! by someone else), or on shutdown.
//!
//! A running simulation is recorded in the store until it ends, so a server
//! that stops (shutdown, crash, `kill -9`) resumes it when it starts again
//! ([`Simulator::resume`]): from the order's status then, at the same speed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::ToSchema;

use crate::domain::workflow::{self, Stage};
use crate::domain::{
    Attribution, ChangeError, OrderChange, OrderId, OrderStatus, TimeScale, Timestamp,
};
use crate::orders::{OrderService, RunStart, ServiceError};

/// The store's name for a simulation run.
const RUN_KIND: &str = "simulation";

/// `updated_by` of the changes a simulation makes.
pub const SIMULATOR: &str = "simulator";

/// Why a simulation could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("a workflow simulation is already running for order {0}")]
    AlreadyRunning(OrderId),
    #[error("no workflow simulation is running for order {0}")]
    NotRunning(OrderId),
    #[error("order {id} is {status}, which is final; there is nothing to simulate")]
    Finished { id: OrderId, status: OrderStatus },
    /// The timeline starts at `confirmed`; a requested order gets there only
    /// when the order-request processor accepts a seller's proposal.
    #[error("order {0} is requested: no seller has accepted it yet, so its workflow cannot start; simulate it once it is confirmed")]
    AwaitingSeller(OrderId),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// One planned step of a simulation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlannedStep {
    /// The status the order will move to.
    pub status: OrderStatus,
    /// Seconds after the start, at the requested speed.
    pub after_seconds: f64,
    /// When the step is due (wall clock).
    pub at: Timestamp,
}

/// What a started simulation will do.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plan {
    pub order_id: OrderId,
    /// How many times faster than real time the timeline runs.
    pub speed: f64,
    /// The status the order was in when the simulation started.
    pub from_status: OrderStatus,
    pub started_at: Timestamp,
    pub steps: Vec<PlannedStep>,
}

/// Cheap handle to the simulator; clones share one state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    /// The write path every step goes through.
    service: OrderService,
    /// Running simulations by order, for the one-per-order rule and cancel.
    running: DashMap<OrderId, Run>,
    /// Tells runs apart, so a finished run never removes its successor.
    next_run: AtomicU64,
    /// Every run's task, so shutdown can wait for them.
    tracker: TaskTracker,
    /// Parent of every run's token; cancelled on shutdown.
    shutdown: CancellationToken,
}

struct Run {
    /// Which run this is.
    serial: u64,
    /// Its lease is recorded: from now on, the heartbeat checks it is
    /// still this instance's.
    leased: bool,
    /// Cancels this run only.
    cancel: CancellationToken,
}

impl Simulator {
    pub fn new(
        service: OrderService,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Simulator {
        Simulator {
            inner: Arc::new(Inner {
                service,
                running: DashMap::new(),
                next_run: AtomicU64::new(0),
                tracker,
                shutdown,
            }),
        }
    }

    /// Simulations running now.
    pub fn running(&self) -> usize {
        self.inner.running.len()
    }

    /// Starts driving `id` from its current status to `delivered`.
    pub async fn start(&self, id: &OrderId, speed: TimeScale) -> Result<Plan, SimError> {
        let snapshot = self.inner.service.get(id).await?;
        let from = snapshot.order().status;
        let stages = workflow::stages_from(from);
        if stages.is_empty() {
            return Err(if from.is_terminal() {
                SimError::Finished {
                    id: id.clone(),
                    status: from,
                }
            } else {
                SimError::AwaitingSeller(id.clone())
            });
        }
        // Everything that can fail comes before the claim, so a refused or
        // failed start leaves no run behind.
        let started_at = self.inner.service.now();
        let plan = plan(id.clone(), from, speed, started_at);
        let (claim, cancel) = self.claim(id)?;
        let run =
            self.inner
                .service
                .new_run(RUN_KIND, id, serde_json::json!({ "speed": speed.speed() }));
        let first = match self.inner.service.claim_run(&run).await? {
            // Another instance runs it: refused as that instance would.
            RunStart::HeldBy(owner) => {
                tracing::info!(order_id = %id, %owner, "workflow simulation already running on another instance");
                return Err(SimError::AlreadyRunning(id.clone()));
            }
            RunStart::Owned { taken_from: None } => Attribution::by(SIMULATOR),
            RunStart::Owned {
                taken_from: Some(owner),
            } => {
                tracing::warn!(order_id = %id, previous_owner = %owner, "workflow simulation taken over after its owner's lease expired");
                taken_over(&owner)
            }
        };
        if let Some(mut run) = self.inner.running.get_mut(id) {
            if run.serial == claim.serial {
                run.leased = true;
            }
        }
        tracing::info!(order_id = %id, speed = speed.speed(), from = %from, "workflow simulation started");
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        self.inner.tracker.spawn(async move {
            // Held for the run's whole life; its drop frees the slot.
            let _claim = claim;
            drive(&inner.service, &id, stages, speed, &cancel, first).await;
            // A run stopped by shutdown stays recorded, to be resumed.
            if !inner.shutdown.is_cancelled() {
                if let Err(err) = inner.service.end_run(RUN_KIND, &id).await {
                    tracing::warn!(order_id = %id, error = %err, "cannot record that a simulation ended");
                }
            }
        });
        Ok(plan)
    }

    /// Starts every recorded simulation this instance may take: at start,
    /// those that were running when it last stopped; with other instances,
    /// also those whose owner's lease expired (called by the heartbeat).
    /// Each goes on from its order's current status at its recorded speed;
    /// a run whose order is gone or finished is forgotten. Returns how many
    /// started.
    pub async fn resume(&self) -> Result<usize, SimError> {
        let mut resumed = 0;
        for run in self.inner.service.runs(RUN_KIND).await? {
            let id = &run.order_id;
            if self.inner.running.contains_key(id) || !self.inner.service.may_take(&run) {
                continue;
            }
            let speed = run
                .params
                .get("speed")
                .and_then(serde_json::Value::as_f64)
                .and_then(|speed| TimeScale::parse(&speed.to_string()).ok());
            let started = match speed {
                Some(speed) => self.start(id, speed).await,
                None => Err(SimError::NotRunning(id.clone())),
            };
            match started {
                Ok(plan) => {
                    resumed += 1;
                    tracing::info!(order_id = %id, from = %plan.from_status, previous_owner = %run.owner, "workflow simulation resumed");
                }
                // Claimed by another instance meanwhile.
                Err(SimError::AlreadyRunning(_)) => {}
                Err(SimError::Service(ServiceError::Store(err))) => {
                    return Err(SimError::Service(ServiceError::Store(err)))
                }
                Err(why) => {
                    tracing::info!(order_id = %id, reason = %why, "workflow simulation not resumed");
                    // Only this instance's record can be ended: take it first.
                    let mine = self.inner.service.new_run(RUN_KIND, id, run.params.clone());
                    if let RunStart::Owned { .. } = self.inner.service.claim_run(&mine).await? {
                        self.inner.service.end_run(RUN_KIND, id).await?;
                    }
                }
            }
        }
        Ok(resumed)
    }

    /// The atomic check-and-set of the one-run-per-order rule: a guard on the
    /// order's slot and the run's cancel token, or `AlreadyRunning`. The slot
    /// is freed when the guard drops, wherever that happens: at the end of the
    /// run, or on any early return or panic before the run is spawned.
    fn claim(&self, id: &OrderId) -> Result<(RunClaim, CancellationToken), SimError> {
        let serial = self.inner.next_run.fetch_add(1, Ordering::Relaxed);
        let cancel = self.inner.shutdown.child_token();
        match self.inner.running.entry(id.clone()) {
            Entry::Occupied(_) => Err(SimError::AlreadyRunning(id.clone())),
            Entry::Vacant(slot) => {
                slot.insert(Run {
                    serial,
                    leased: false,
                    cancel: cancel.clone(),
                });
                let claim = RunClaim {
                    inner: Arc::clone(&self.inner),
                    id: id.clone(),
                    serial,
                };
                Ok((claim, cancel))
            }
        }
    }

    /// Stops the simulation of `id`; the order stays where it is. One
    /// running on another instance is stopped by that instance within a
    /// heartbeat (a third of the lease).
    pub async fn cancel(&self, id: &OrderId) -> Result<(), SimError> {
        if let Some((_, run)) = self.inner.running.remove(id) {
            run.cancel.cancel();
            tracing::info!(order_id = %id, "workflow simulation cancelled");
            return Ok(());
        }
        if self.inner.service.cancel_run(RUN_KIND, id).await? {
            tracing::info!(order_id = %id, "workflow simulation of another instance cancelled");
            return Ok(());
        }
        Err(SimError::NotRunning(id.clone()))
    }

    /// Stops the runs here that this instance no longer holds (see
    /// [`OrderService::lost_runs`]); `held` is what the heartbeat renewed.
    /// Returns how many.
    pub async fn stop_lost(&self, held: &[(String, OrderId)]) -> Result<usize, SimError> {
        let leased = self
            .inner
            .running
            .iter()
            .filter(|run| run.leased)
            .map(|run| run.key().clone())
            .collect();
        let lost = self.inner.service.lost_runs(RUN_KIND, leased, held).await?;
        for id in &lost {
            if let Some((_, run)) = self.inner.running.remove(id) {
                run.cancel.cancel();
                tracing::warn!(order_id = %id, "workflow simulation stopped here: cancelled on another instance, or taken over after this instance's lease lapsed");
            }
        }
        Ok(lost.len())
    }
}

/// An order's slot in the running set, from the claim until the run ends.
/// Dropping it removes the run (only if still its own: a cancelled run must
/// not remove its successor), however it ends.
struct RunClaim {
    /// The simulator's state.
    inner: Arc<Inner>,
    /// The order simulated.
    id: OrderId,
    /// Which run holds the slot.
    serial: u64,
}

impl Drop for RunClaim {
    fn drop(&mut self) {
        self.inner
            .running
            .remove_if(&self.id, |_, run| run.serial == self.serial);
    }
}

/// Who made the first step of a simulation taken over from `owner`, and why.
fn taken_over(owner: &str) -> Attribution {
    Attribution {
        updated_by: Some(SIMULATOR.to_owned()),
        notes: Some(format!(
            "simulation taken over from instance {owner} after its lease expired"
        )),
        metadata: Some(serde_json::Map::from_iter([
            (
                "reason".to_owned(),
                serde_json::Value::from("lease_expired"),
            ),
            ("previous_owner".to_owned(), serde_json::Value::from(owner)),
        ])),
    }
}

/// The status that follows `stage` on the timeline.
fn following(stages: &[Stage], index: usize) -> OrderStatus {
    stages
        .get(index + 1)
        .map_or(workflow::FINAL, |stage| stage.status)
}

/// The plan for driving `order_id` from `from` at `speed`, starting at `started_at`.
pub fn plan(order_id: OrderId, from: OrderStatus, speed: TimeScale, started_at: Timestamp) -> Plan {
    let stages = workflow::stages_from(from);
    let mut elapsed = std::time::Duration::ZERO;
    let steps = stages
        .iter()
        .enumerate()
        .map(|(index, stage)| {
            elapsed += speed.scale(stage.lasts);
            PlannedStep {
                status: following(stages, index),
                after_seconds: elapsed.as_secs_f64(),
                at: started_at
                    .plus(chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)),
            }
        })
        .collect();
    Plan {
        order_id,
        speed: speed.speed(),
        from_status: from,
        started_at,
        steps,
    }
}

/// Waits out each stage, then moves the order on.
async fn drive(
    service: &OrderService,
    id: &OrderId,
    stages: &[Stage],
    speed: TimeScale,
    cancel: &CancellationToken,
    first: Attribution,
) {
    let mut attribution = Some(first);
    let start = tokio::time::Instant::now();
    let mut due = start;
    for (index, stage) in stages.iter().enumerate() {
        // Deadlines from the start, so steps do not drift by the time each
        // write takes.
        due += speed.scale(stage.lasts);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(due) => {}
        }
        let next = following(stages, index);
        match service
            .apply(
                id,
                OrderChange::SetStatus(next),
                attribution
                    .take()
                    .unwrap_or_else(|| Attribution::by(SIMULATOR)),
            )
            .await
        {
            Ok(_) => {}
            // Someone else moved the order past this step: skip it, unless the
            // order is already final.
            Err(ServiceError::Change(ChangeError::IllegalTransition { from, .. }))
                if !from.is_terminal() =>
            {
                tracing::info!(order_id = %id, at = %from, skipped = %next, "simulation skipped a step taken elsewhere");
            }
            Err(ServiceError::Change(ChangeError::IllegalTransition { from, .. })) => {
                tracing::info!(order_id = %id, status = %from, "order became final elsewhere; simulation stops");
                return;
            }
            Err(err) => {
                tracing::warn!(order_id = %id, error = %err, "simulation step failed; simulation stops");
                return;
            }
        }
    }
    tracing::info!(order_id = %id, "workflow simulation finished");
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use super::*;

    use crate::store::MemoryStore;

    fn simulator() -> Simulator {
        let shutdown = CancellationToken::new();
        let service = OrderService::for_tests(Arc::new(MemoryStore::new()), &shutdown);
        Simulator::new(service, TaskTracker::new(), shutdown)
    }

    #[tokio::test]
    async fn a_claim_frees_its_slot_however_it_is_given_up() {
        let simulator = simulator();
        let id: OrderId = "101".parse().unwrap();
        let (claim, _cancel) = simulator.claim(&id).unwrap();
        assert!(matches!(
            simulator.claim(&id),
            Err(SimError::AlreadyRunning(_))
        ));
        drop(claim);
        assert_eq!(simulator.running(), 0);

        // A panic between the claim and the spawn, as planning with an
        // unusable speed once did, unwinds through the guard.
        let unwound = catch_unwind(AssertUnwindSafe(|| {
            let _claim = simulator.claim(&id);
            panic!("planning failed");
        }));
        assert!(unwound.is_err());
        assert_eq!(simulator.running(), 0);

        // A cancelled run's late guard leaves its successor alone.
        let (old, _cancel) = simulator.claim(&id).unwrap();
        simulator.cancel(&id).await.unwrap();
        let (new, _cancel) = simulator.claim(&id).unwrap();
        drop(old);
        assert_eq!(simulator.running(), 1);
        drop(new);
        assert_eq!(simulator.running(), 0);
    }
}
