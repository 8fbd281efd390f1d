//! Work that must run once across instances (simulations, order-request
//! processing streams) is owned through a lease in the store: the owner's
//! instance id and an expiry, renewed by the owner's heartbeat
//! ([`OrderService::renew_leases`]). Another instance takes a run over only
//! once its lease has expired, and records that in the order's history.
//!
//! A store that no other process shares (SQLite, memory) has one owner:
//! every lease it holds is a previous life of this process, taken back at
//! once on start.

use std::time::Duration;

use super::{OrderService, Result};
use crate::domain::OrderId;
use crate::store::{BackgroundRun, RunClaim};

/// Default lease on a background run: how long a dead owner's work waits
/// before another instance takes it over.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// Whether a run may start here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStart {
    /// This instance owns it now. `taken_from` names the instance whose
    /// expired lease it took over, if another's.
    Owned { taken_from: Option<String> },
    /// Another instance runs it.
    HeldBy(String),
}

impl OrderService {
    /// A run of `kind` on `id` with `params`, started now by this instance,
    /// with one lease.
    pub fn new_run(&self, kind: &str, id: &OrderId, params: serde_json::Value) -> BackgroundRun {
        let now = self.now();
        BackgroundRun {
            kind: kind.to_owned(),
            order_id: id.clone(),
            params,
            started_at: now,
            owner: self.instance_id().to_owned(),
            lease_until: now.plus(self.lease_ttl()),
        }
    }

    /// Records `run` as this instance's, unless another instance's lease on
    /// it is still live.
    pub async fn claim_run(&self, run: &BackgroundRun) -> Result<RunStart> {
        let claim = self
            .inner
            .store
            .claim_run(run, self.expired_before())
            .await?;
        Ok(match claim {
            RunClaim::Held(holder) => RunStart::HeldBy(holder.owner),
            RunClaim::Claimed { previous } => RunStart::Owned {
                taken_from: previous
                    .map(|previous| previous.owner)
                    .filter(|owner| self.inner.feed.shared() && owner != self.instance_id()),
            },
        })
    }

    /// Whether this instance may take `run` (as stored) now: its own, or
    /// its owner's lease has expired.
    pub fn may_take(&self, run: &BackgroundRun) -> bool {
        !run.held_against(self.instance_id(), self.expired_before())
    }

    /// Forgets this instance's run of `kind` on `id`, once it has ended.
    pub async fn end_run(&self, kind: &str, id: &OrderId) -> Result<()> {
        Ok(self
            .inner
            .store
            .end_run(kind, id, self.instance_id())
            .await?)
    }

    /// Asks whichever instance runs `kind` on `id` to stop it: forgets the
    /// run, and its owner stops it at its next heartbeat. Returns whether
    /// it was recorded.
    pub async fn cancel_run(&self, kind: &str, id: &OrderId) -> Result<bool> {
        Ok(self.inner.store.cancel_run(kind, id).await?)
    }

    /// The runs of `kind` some instance holds a live lease on now.
    pub async fn live_runs(&self, kind: &str) -> Result<Vec<BackgroundRun>> {
        let now = self.now();
        let mut runs = self.runs(kind).await?;
        runs.retain(|run| run.lease_until >= now);
        Ok(runs)
    }

    /// The runs of `kind` recorded as running, whoever owns them.
    pub async fn runs(&self, kind: &str) -> Result<Vec<BackgroundRun>> {
        Ok(self.inner.store.runs(kind).await?)
    }

    /// The heartbeat: extends every lease this instance holds by one lease
    /// from now; returns the runs (kind, order) it still holds.
    pub async fn renew_leases(&self) -> Result<Vec<(String, OrderId)>> {
        let until = self.now().plus(self.lease_ttl());
        Ok(self
            .inner
            .store
            .renew_runs(self.instance_id(), until)
            .await?)
    }

    /// Ends this instance's leases now, leaving its runs recorded: on
    /// shutdown, so that another instance takes them over at its next
    /// heartbeat instead of after the lease.
    pub async fn release_leases(&self) -> Result<()> {
        let now = self.now().plus(chrono::TimeDelta::microseconds(-1));
        self.inner.store.renew_runs(self.instance_id(), now).await?;
        Ok(())
    }

    /// Of `running` (the runs of `kind` running here, each recorded with
    /// its lease already), those this instance no longer holds: cancelled
    /// by a request on another instance, or taken over after this instance
    /// failed to renew in time. `held` is what the last heartbeat renewed;
    /// a run missing from it is checked against the store, since it may have
    /// been claimed after the heartbeat.
    pub async fn lost_runs(
        &self,
        kind: &str,
        running: Vec<OrderId>,
        held: &[(String, OrderId)],
    ) -> Result<Vec<OrderId>> {
        let missing: Vec<OrderId> = running
            .into_iter()
            .filter(|id| !held.iter().any(|(k, h)| k == kind && h == id))
            .collect();
        if missing.is_empty() {
            return Ok(missing);
        }
        let recorded = self.runs(kind).await?;
        Ok(missing
            .into_iter()
            .filter(|id| {
                !recorded
                    .iter()
                    .any(|run| &run.order_id == id && run.owner == self.instance_id())
            })
            .collect())
    }

    /// How long a lease lasts.
    pub fn lease_ttl_duration(&self) -> Duration {
        self.inner.instance.lease_ttl
    }

    fn lease_ttl(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.inner.instance.lease_ttl).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// Leases that end before this have expired. Without other instances,
    /// every lease in the store is this process's, from a life before.
    fn expired_before(&self) -> crate::domain::Timestamp {
        let now = self.now();
        if self.inner.feed.shared() {
            now
        } else {
            now.plus(self.lease_ttl())
                .plus(chrono::TimeDelta::seconds(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::feed::tests::two_instances;

    #[tokio::test]
    async fn a_run_is_one_instances_until_its_lease_ends() {
        let (a, b) = two_instances();
        let id: OrderId = "o1".parse().unwrap();
        let params = serde_json::json!({ "speed": 60.0 });
        let run_a = a.new_run("simulation", &id, params.clone());
        let run_b = b.new_run("simulation", &id, params);
        assert_eq!(
            a.claim_run(&run_a).await.unwrap(),
            RunStart::Owned { taken_from: None }
        );
        assert!(!b.may_take(&b.runs("simulation").await.unwrap()[0]));
        assert_eq!(
            b.claim_run(&run_b).await.unwrap(),
            RunStart::HeldBy("node-a".into())
        );
        // A's heartbeat keeps it; A's shutdown hands it back.
        let held = a.renew_leases().await.unwrap();
        assert_eq!(held, [("simulation".to_owned(), id.clone())]);
        assert!(a
            .lost_runs("simulation", vec![id.clone()], &held)
            .await
            .unwrap()
            .is_empty());
        a.release_leases().await.unwrap();
        assert!(b.may_take(&b.runs("simulation").await.unwrap()[0]));
        assert_eq!(
            b.claim_run(&run_b).await.unwrap(),
            RunStart::Owned {
                taken_from: Some("node-a".into())
            }
        );
        // A finds at its next heartbeat that the run is no longer its own,
        // and its late end leaves B's record alone.
        let held = a.renew_leases().await.unwrap();
        assert!(held.is_empty());
        let lost = a
            .lost_runs("simulation", vec![id.clone()], &held)
            .await
            .unwrap();
        assert_eq!(lost, std::slice::from_ref(&id));
        a.end_run("simulation", &id).await.unwrap();
        assert_eq!(b.live_runs("simulation").await.unwrap().len(), 1);
        // Anyone may cancel it; then B no longer holds it either.
        assert!(a.cancel_run("simulation", &id).await.unwrap());
        let held = b.renew_leases().await.unwrap();
        assert_eq!(
            b.lost_runs("simulation", vec![id.clone()], &held)
                .await
                .unwrap(),
            [id]
        );
    }
}
