//! The workflow simulator: drives an order along seed 003's fine lifecycle
//! through the order service, sending the commands the store, the
//! customer, dispatch and the driver would send over HTTP ([`walk`]), so
//! parked polls wake on every step. The walk keeps seed 004's coarse
//! timeline (and so the delivery estimate): see
//! [`workflow::FINE_TIMELINE`]. While the order is `in_transit` a simulated
//! driver reports fixes along a straight route ([`trip`]) to the
//! live-location channel, which bumps no version.
//!
//! At most one simulation runs per order. Runs are tracked tasks that stop
//! when cancelled, when the order leaves the timeline (cancelled or finished
//! by someone else), or on shutdown.
//!
//! A running simulation is recorded in the store until it ends, so a server
//! that stops (shutdown, crash, `kill -9`) resumes it when it starts again
//! ([`Simulator::resume`]): from the order's fine status then, at the same
//! speed, with the same choice of substitution.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::workflow::{self, FineStage};
use crate::domain::{Attribution, Fix, OrderId, OrderStatus, TimeScale, Timestamp, TrackingStatus};
use crate::location::{LocationError, LocationService};
use crate::orders::{Command, OrderService, RunStart, ServiceError};

pub mod trip;
pub mod walk;

pub use walk::{plan, Plan, PlannedStep};

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

/// Cheap handle to the simulator; clones share one state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    /// The write path every step goes through.
    service: OrderService,
    /// The live-location channel the simulated driver's fixes go to.
    locations: LocationService,
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
        locations: LocationService,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Simulator {
        Simulator {
            inner: Arc::new(Inner {
                service,
                locations,
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

    /// Starts driving `id` from its current fine status to `delivered`,
    /// with one substitution proposed and approved on the way if
    /// `substitutions`.
    pub async fn start(
        &self,
        id: &OrderId,
        speed: TimeScale,
        substitutions: bool,
    ) -> Result<Plan, SimError> {
        let snapshot = self.inner.service.get(id).await?;
        let order = snapshot.order();
        let (from, stages) = match order.tracking_status() {
            _ if order.status.is_terminal() => {
                return Err(SimError::Finished {
                    id: id.clone(),
                    status: order.status,
                })
            }
            None => return Err(SimError::AwaitingSeller(id.clone())),
            Some(from) => (from, workflow::fine_stages_from(from, substitutions)),
        };
        // Everything that can fail comes before the claim, so a refused or
        // failed start leaves no run behind.
        let started_at = self.inner.service.now();
        let plan = plan(id.clone(), from, substitutions, speed, started_at);
        let (claim, cancel) = self.claim(id)?;
        let run = self.inner.service.new_run(
            RUN_KIND,
            id,
            serde_json::json!({ "speed": speed.speed(), "substitutions": plan.substitutions }),
        );
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
        tracing::info!(order_id = %id, speed = speed.speed(), from = %from, substitutions = plan.substitutions, "workflow simulation started");
        let inner = Arc::clone(&self.inner);
        let id = id.clone();
        let driven = plan.clone();
        self.inner.tracker.spawn(async move {
            // Held for the run's whole life; its drop frees the slot.
            let _claim = claim;
            let drive = Drive {
                service: &inner.service,
                locations: &inner.locations,
                id: &id,
                stages,
                plan: &driven,
                speed,
                cancel: &cancel,
            };
            drive.run(first).await;
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
    /// Each goes on from its order's current fine status at its recorded
    /// speed, with its recorded choice of substitution;
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
            // Runs recorded before substitutions existed had none.
            let substitutions = run
                .params
                .get("substitutions")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            let started = match speed {
                Some(speed) => self.start(id, speed, substitutions).await,
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

/// One run's walk: what it drives, and how fast.
struct Drive<'a> {
    /// The write path.
    service: &'a OrderService,
    /// Where the driver's fixes go.
    locations: &'a LocationService,
    /// The order driven.
    id: &'a OrderId,
    /// The fine stages ahead, from the one the order was in at the start.
    stages: &'static [FineStage],
    /// The plan announced, for the times the store gives.
    plan: &'a Plan,
    /// How fast.
    speed: TimeScale,
    /// Stops this run.
    cancel: &'a CancellationToken,
}

/// Whether a stage's wait ended with time to act, or the run must stop.
enum Waited {
    Due,
    Cancelled,
}

impl Drive<'_> {
    /// Waits out each stage, then moves the order on by the commands of the
    /// step ([`walk::changes`]), each its own change through the one write
    /// path. A step is taken only if the order is where the walk expects
    /// it: one someone else already took is skipped, and one the order
    /// went back from (a store's rejection, a rejected substitution) is
    /// not retaken; the simulator never answers for someone else. The run
    /// stops when the order is final.
    async fn run(&self, first: Attribution) {
        let mut attribution = Some(first);
        let ready_at = self
            .plan
            .steps
            .iter()
            .find(|step| step.tracking_status == TrackingStatus::ReadyForPickup)
            .map(|step| step.at);
        let mut due = tokio::time::Instant::now();
        for (index, stage) in self.stages.iter().enumerate() {
            // Deadlines from the start, so steps do not drift by the time each
            // write takes.
            let began = due;
            due += self.speed.scale(stage.lasts);
            let waited = if stage.status == TrackingStatus::InTransit {
                self.travel(began, due).await
            } else {
                self.wait_until(due).await
            };
            if let Waited::Cancelled = waited {
                return;
            }
            let next = walk::following(self.stages, index);
            let snapshot = match self.service.get(self.id).await {
                Ok(snapshot) => snapshot,
                Err(err) => {
                    tracing::warn!(order_id = %self.id, error = %err, "simulation cannot read the order; simulation stops");
                    return;
                }
            };
            let order = snapshot.order();
            let Some(at) = order.tracking_status().filter(|at| !at.is_terminal()) else {
                tracing::info!(order_id = %self.id, status = %order.status, "order became final elsewhere; simulation stops");
                return;
            };
            if at != stage.status {
                tracing::info!(order_id = %self.id, at = %at, expected = %stage.status, skipped = %next, "simulation skipped a step: the order is elsewhere");
                continue;
            }
            for change in walk::changes(order, stage.status, next, ready_at) {
                let attribution = attribution
                    .take()
                    .unwrap_or_else(|| Attribution::by(SIMULATOR));
                match self
                    .service
                    .execute(Command::change(self.id.clone(), change, attribution))
                    .await
                {
                    Ok(_) => {}
                    // Someone else moved the order meanwhile: the next
                    // stage's read sees where it is.
                    Err(ServiceError::Change(err)) => {
                        tracing::info!(order_id = %self.id, skipped = %next, reason = %err, "simulation skipped a step taken elsewhere");
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(order_id = %self.id, error = %err, "simulation step failed; simulation stops");
                        return;
                    }
                }
            }
        }
        tracing::info!(order_id = %self.id, "workflow simulation finished");
    }

    /// Sleeps until `due`, unless cancelled first.
    async fn wait_until(&self, due: tokio::time::Instant) -> Waited {
        tokio::select! {
            () = self.cancel.cancelled() => Waited::Cancelled,
            () = tokio::time::sleep_until(due) => Waited::Due,
        }
    }

    /// The `in_transit` stage, from `began` to `due`: the driver reports
    /// each of the trip's fixes on time, the last one (the drop-off) at
    /// `due`, just before the delivery. Fixes go to the live-location
    /// channel, never through the order's write path. Fixes stop early
    /// when the order takes none (it has no driver, or became final).
    async fn travel(&self, began: tokio::time::Instant, due: tokio::time::Instant) -> Waited {
        let trip = &self.plan.trip;
        let every = due.saturating_duration_since(began) / trip.fixes.saturating_sub(1).max(1);
        let mut last: Option<Timestamp> = None;
        for k in 0..trip.fixes {
            let at = if k + 1 == trip.fixes {
                due
            } else {
                began + every * k
            };
            if let Waited::Cancelled = self.wait_until(at).await {
                return Waited::Cancelled;
            }
            let now = self.service.now();
            // Strictly newer than the last one, or the channel ignores it.
            let taken = last.map_or(now, |last| last.advance_to(now));
            last = Some(taken);
            let point = trip.point(k);
            let fix = Fix {
                latitude: point.latitude,
                longitude: point.longitude,
                accuracy: Some(trip::FIX_ACCURACY),
                at: taken,
            };
            match self.locations.report(self.id, fix).await {
                Ok(_) => {}
                Err(LocationError::NotLocatable(why)) => {
                    tracing::info!(order_id = %self.id, reason = %why, "simulated driver stops reporting");
                    return self.wait_until(due).await;
                }
                Err(err) => {
                    tracing::warn!(order_id = %self.id, error = %err, "simulated driver's fix not taken");
                }
            }
        }
        Waited::Due
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use super::*;

    use crate::store::MemoryStore;

    fn simulator() -> Simulator {
        let shutdown = CancellationToken::new();
        let store: Arc<dyn crate::store::OrderStore> = Arc::new(MemoryStore::new());
        let service = OrderService::for_tests(Arc::clone(&store), &shutdown);
        let tracker = TaskTracker::new();
        let locations = LocationService::start(
            service.clone(),
            store,
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(600),
            &tracker,
            shutdown.clone(),
        );
        Simulator::new(service, locations, tracker, shutdown)
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
