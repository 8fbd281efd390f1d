//! Seed 003's fulfillment lifecycle as one table: (current fine status,
//! step) → next status, with the actors who may take each step.
//!
//! The fine status ([`TrackingStatus`]) is the truth; seed 004's
//! customer-facing [`OrderStatus`] is its projection ([`TrackingStatus::coarse`]).
//! The seed's diagram is the source of [`RULES`]: a store's rejection sends
//! the order back for reassignment (to `submitted`); rejected substitutions
//! send it back to picking; "no drivers" keeps it ready and retries.
//!
//! Pure: no I/O, no HTTP. What a step needs beyond the status (which
//! substitutions are pending, whether a driver was recorded early) is the
//! order's business; this table only says which moves exist and who may
//! make them.
//!

use serde::{Deserialize, Serialize};

use super::OrderStatus;

/// Where an order is in its fulfillment (seed 003's `OrderTrackingStatus`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
#[schema(as = OrderTrackingStatus)]
pub enum TrackingStatus {
    Submitted,
    /// The store's feed delivered the order to the store.
    StoreNotified,
    StoreAcknowledged,
    PickingInProgress,
    /// A picker proposed a substitution; the customer has not decided all.
    SubstitutionsNeeded,
    /// The customer decided every substitution and approved at least one.
    SubstitutionsApproved,
    ReadyForPickup,
    DriverAssigned,
    DriverPickupComplete,
    InTransit,
    Delivered,
    Cancelled,
    /// Delivery failed for good (a partner cancelled or returned it).
    Failed,
}

impl TrackingStatus {
    /// Nothing follows a terminal status.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TrackingStatus::Delivered | TrackingStatus::Cancelled | TrackingStatus::Failed
        )
    }

    /// Seed 004's customer-facing status for this one.
    pub const fn coarse(self) -> OrderStatus {
        use TrackingStatus::*;
        match self {
            Submitted | StoreNotified => OrderStatus::Confirmed,
            StoreAcknowledged | PickingInProgress | SubstitutionsNeeded | SubstitutionsApproved => {
                OrderStatus::Preparing
            }
            ReadyForPickup | DriverAssigned => OrderStatus::Ready,
            DriverPickupComplete | InTransit => OrderStatus::PickedUp,
            Delivered => OrderStatus::Delivered,
            Cancelled => OrderStatus::Cancelled,
            Failed => OrderStatus::Failed,
        }
    }

    /// The fine status a seed 004 status change to `coarse` lands on: the
    /// first fine status of that coarse one. `None` for the statuses only
    /// order requests have (`requested`, `expired`).
    pub const fn canonical(coarse: OrderStatus) -> Option<TrackingStatus> {
        use TrackingStatus::*;
        Some(match coarse {
            OrderStatus::Confirmed => Submitted,
            OrderStatus::Preparing => PickingInProgress,
            OrderStatus::Ready => ReadyForPickup,
            OrderStatus::PickedUp => DriverPickupComplete,
            OrderStatus::Delivered => Delivered,
            OrderStatus::Cancelled => Cancelled,
            OrderStatus::Failed => Failed,
            OrderStatus::Requested | OrderStatus::Expired => return None,
        })
    }
}

/// Who asks for a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum Actor {
    /// The customer who placed the order.
    Customer,
    /// The store the order belongs to (its tablet).
    Store,
    /// The driver assigned to the order.
    Driver,
    /// A delivery partner, through its verified webhook.
    Partner,
    /// An operator, or the service itself (the simulator, the store feed).
    Operator,
}

/// One step of the lifecycle, as someone asks for it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum Step {
    /// The store's feed delivered the order.
    NotifyStore,
    Acknowledge,
    /// The store refuses the order: it goes back for reassignment.
    RejectByStore,
    StartPicking,
    /// A picker proposes a substitution (another may follow).
    ProposeSubstitution,
    /// The customer decided the last pending substitution and approved at
    /// least one.
    ApproveSubstitutions,
    /// The customer decided the last pending substitution and rejected them
    /// all: back to picking.
    RejectSubstitutions,
    MarkReady,
    /// A driver is assigned to a ready order (or replaces the one assigned).
    AssignDriver,
    /// A partner dispatched a driver before the order is ready: the driver
    /// is recorded and the order moves to `driver_assigned` once the store
    /// marks it ready (history only until then).
    DispatchEarly,
    /// No driver could be found: the order stays ready and assignment is
    /// retried (a history entry, no status change).
    NoDriverAvailable,
    PickUp,
    StartTransit,
    Deliver,
    Cancel,
    Fail,
}

/// One row of [`RULES`].
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub step: Step,
    /// The statuses the step may be taken from.
    pub from: &'static [TrackingStatus],
    /// Where it leads; `None`: the status stays (the step is history only).
    pub to: Option<TrackingStatus>,
    /// Who may take it.
    pub actors: &'static [Actor],
}

use Actor::{Customer, Driver, Operator, Partner, Store};
use TrackingStatus::*;

/// Every status an order can still leave.
const LIVE: &[TrackingStatus] = &[
    Submitted,
    StoreNotified,
    StoreAcknowledged,
    PickingInProgress,
    SubstitutionsNeeded,
    SubstitutionsApproved,
    ReadyForPickup,
    DriverAssigned,
    DriverPickupComplete,
    InTransit,
];

/// The lifecycle. One step has one row.
pub const RULES: &[Rule] = &[
    Rule {
        step: Step::NotifyStore,
        from: &[Submitted],
        to: Some(StoreNotified),
        actors: &[Operator],
    },
    Rule {
        // A store may acknowledge an order it learnt of another way.
        step: Step::Acknowledge,
        from: &[Submitted, StoreNotified],
        to: Some(StoreAcknowledged),
        actors: &[Store, Operator],
    },
    Rule {
        step: Step::RejectByStore,
        from: &[Submitted, StoreNotified, StoreAcknowledged],
        to: Some(Submitted),
        actors: &[Store, Operator],
    },
    Rule {
        step: Step::StartPicking,
        from: &[StoreAcknowledged],
        to: Some(PickingInProgress),
        actors: &[Store, Operator],
    },
    Rule {
        step: Step::ProposeSubstitution,
        from: &[
            PickingInProgress,
            SubstitutionsNeeded,
            SubstitutionsApproved,
        ],
        to: Some(SubstitutionsNeeded),
        actors: &[Store, Operator],
    },
    Rule {
        step: Step::ApproveSubstitutions,
        from: &[SubstitutionsNeeded],
        to: Some(SubstitutionsApproved),
        actors: &[Customer, Operator],
    },
    Rule {
        step: Step::RejectSubstitutions,
        from: &[SubstitutionsNeeded],
        to: Some(PickingInProgress),
        actors: &[Customer, Operator],
    },
    Rule {
        step: Step::MarkReady,
        from: &[PickingInProgress, SubstitutionsApproved],
        to: Some(ReadyForPickup),
        actors: &[Store, Operator],
    },
    Rule {
        step: Step::AssignDriver,
        from: &[ReadyForPickup, DriverAssigned],
        to: Some(DriverAssigned),
        actors: &[Partner, Operator],
    },
    Rule {
        step: Step::DispatchEarly,
        from: &[
            Submitted,
            StoreNotified,
            StoreAcknowledged,
            PickingInProgress,
            SubstitutionsNeeded,
            SubstitutionsApproved,
        ],
        to: None,
        actors: &[Partner, Operator],
    },
    Rule {
        step: Step::NoDriverAvailable,
        from: &[ReadyForPickup],
        to: None,
        actors: &[Partner, Operator],
    },
    Rule {
        step: Step::PickUp,
        from: &[DriverAssigned],
        to: Some(DriverPickupComplete),
        actors: &[Driver, Partner, Operator],
    },
    Rule {
        step: Step::StartTransit,
        from: &[DriverPickupComplete],
        to: Some(InTransit),
        actors: &[Driver, Partner, Operator],
    },
    Rule {
        // A partner may report the drop-off without the trip.
        step: Step::Deliver,
        from: &[DriverPickupComplete, InTransit],
        to: Some(Delivered),
        actors: &[Driver, Partner, Operator],
    },
    Rule {
        // Who may cancel when (a customer only before the store
        // acknowledged) is the authorisation table's rule, not this one's.
        step: Step::Cancel,
        from: LIVE,
        to: Some(Cancelled),
        actors: &[Customer, Store, Operator],
    },
    Rule {
        step: Step::Fail,
        from: LIVE,
        to: Some(Failed),
        actors: &[Partner, Operator],
    },
];

/// Why a step cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error(
        "cannot {step} an order that is {from}; allowed now: {}",
        steps(allowed)
    )]
    NotNow {
        from: TrackingStatus,
        step: Step,
        /// The steps that may be taken from `from`.
        allowed: Vec<Step>,
    },
    #[error("a {actor} may not {step} an order")]
    NotYours { actor: Actor, step: Step },
}

/// `a, b, c`, or what an empty list means.
fn steps(steps: &[Step]) -> String {
    if steps.is_empty() {
        return "nothing (the order is final)".to_owned();
    }
    let names: Vec<&str> = steps.iter().map(|step| step.into()).collect();
    names.join(", ")
}

/// The row of `step` (every step has exactly one).
pub fn rule(step: Step) -> &'static Rule {
    // Invariant: every step has a row; a test checks it.
    RULES
        .iter()
        .find(|rule| rule.step == step)
        .expect("every step has a rule")
}

/// The steps that may be taken from `status`, in table order.
pub fn allowed(status: TrackingStatus) -> Vec<Step> {
    RULES
        .iter()
        .filter(|rule| rule.from.contains(&status))
        .map(|rule| rule.step)
        .collect()
}

/// The status `step` taken by `actor` leads to from `current` (the same
/// status for a history-only step), or why it cannot be taken.
pub fn decide(
    current: TrackingStatus,
    step: Step,
    actor: Actor,
) -> Result<TrackingStatus, LifecycleError> {
    let rule = rule(step);
    if !rule.actors.contains(&actor) {
        return Err(LifecycleError::NotYours { actor, step });
    }
    if !rule.from.contains(&current) {
        return Err(LifecycleError::NotNow {
            from: current,
            step,
            allowed: allowed(current),
        });
    }
    Ok(rule.to.unwrap_or(current))
}

/// The step that moves an order from `current` straight to `target`, for
/// an explicit status change (`PUT /tracking/orders/{id}/status`); `None`
/// if no single step does.
pub fn step_to(current: TrackingStatus, target: TrackingStatus) -> Option<Step> {
    RULES
        .iter()
        .find(|rule| rule.from.contains(&current) && rule.to == Some(target))
        .map(|rule| rule.step)
}

impl Step {
    /// Whether a seed 004 status change (`PUT /api/v1/orders/{id}/status`)
    /// may take this step on the way to its target. Steps that need what a
    /// bare status does not carry (a substitution, the customer's answer)
    /// or that go backwards are never implied.
    pub const fn may_be_implied(self) -> bool {
        matches!(
            self,
            Step::NotifyStore
                | Step::Acknowledge
                | Step::StartPicking
                | Step::MarkReady
                | Step::AssignDriver
                | Step::PickUp
                | Step::StartTransit
                | Step::Deliver
                | Step::Cancel
        )
    }
}

/// The fine statuses a seed 004 status change to `target` passes through
/// from `current`, ending at `target`'s canonical fine status: the shortest
/// path of [implied](Step::may_be_implied) steps an operator may take that
/// stays within `current`'s coarse status and `target`. `None` when there is
/// none (the coarse move is illegal, or something the customer must answer
/// is pending).
///
/// This is how seed 004's coarse moves map onto the one table: `confirmed →
/// preparing` from `submitted` passes `store_acknowledged` and lands on
/// `picking_in_progress`.
pub fn coarse_path(current: TrackingStatus, target: OrderStatus) -> Option<Vec<TrackingStatus>> {
    let goal = TrackingStatus::canonical(target)?;
    let within =
        |status: TrackingStatus| status.coarse() == current.coarse() || status.coarse() == target;
    path(current, goal, |rule, to| {
        rule.step.may_be_implied() && rule.actors.contains(&Operator) && within(to)
    })
}

/// The fine statuses a delivery partner's report of `target` moves the
/// order through from `current`: the shortest path of steps a partner may
/// take (assignment, pickup, transit, delivery, failure). `None` when there
/// is none: the report is stale (the order is past it) or out of turn.
pub fn partner_path(
    current: TrackingStatus,
    target: TrackingStatus,
) -> Option<Vec<TrackingStatus>> {
    path(current, target, |rule, to| {
        rule.actors.contains(&Partner) && (to != Failed || target == Failed)
    })
}

/// The shortest path from `current` to `goal` (excluded, included) over the
/// rules `usable` allows for the status they lead to; breadth-first over
/// at most thirteen statuses.
fn path(
    current: TrackingStatus,
    goal: TrackingStatus,
    usable: impl Fn(&Rule, TrackingStatus) -> bool,
) -> Option<Vec<TrackingStatus>> {
    let mut came_from: Vec<(TrackingStatus, TrackingStatus)> = Vec::new();
    let mut frontier = vec![current];
    let mut seen = vec![current];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for &from in &frontier {
            for rule in RULES {
                let Some(to) = rule.to else { continue };
                if !rule.from.contains(&from) || seen.contains(&to) || !usable(rule, to) {
                    continue;
                }
                seen.push(to);
                came_from.push((to, from));
                if to == goal {
                    let mut path = vec![to];
                    let mut at = from;
                    while at != current {
                        path.push(at);
                        at = came_from
                            .iter()
                            .find(|(status, _)| *status == at)
                            .map(|(_, before)| *before)?;
                    }
                    path.reverse();
                    return Some(path);
                }
                next.push(to);
            }
        }
        frontier = next;
    }
    None
}

/// The statuses an explicit status change may move `current` to, in table
/// order.
pub fn next_statuses(current: TrackingStatus) -> Vec<TrackingStatus> {
    let mut next = Vec::new();
    for rule in RULES {
        if let Some(to) = rule.to {
            if rule.from.contains(&current) && to != current && !next.contains(&to) {
                next.push(to);
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    use super::*;

    #[test]
    fn every_step_has_exactly_one_rule_and_every_rule_an_actor() {
        for step in Step::VARIANTS {
            let rows = RULES.iter().filter(|rule| rule.step == *step).count();
            assert_eq!(rows, 1, "{step}");
        }
        for rule in RULES {
            assert!(
                !rule.actors.is_empty() && !rule.from.is_empty(),
                "{}",
                rule.step
            );
            for from in rule.from {
                assert!(!from.is_terminal(), "{} leaves terminal {from}", rule.step);
            }
        }
    }

    #[test]
    fn the_seed_diagrams_happy_path_is_one_step_at_a_time() {
        let path = [
            (Step::NotifyStore, Operator, StoreNotified),
            (Step::Acknowledge, Store, StoreAcknowledged),
            (Step::StartPicking, Store, PickingInProgress),
            (Step::ProposeSubstitution, Store, SubstitutionsNeeded),
            (Step::ApproveSubstitutions, Customer, SubstitutionsApproved),
            (Step::MarkReady, Store, ReadyForPickup),
            (Step::AssignDriver, Partner, DriverAssigned),
            (Step::PickUp, Driver, DriverPickupComplete),
            (Step::StartTransit, Driver, InTransit),
            (Step::Deliver, Driver, Delivered),
        ];
        let mut status = Submitted;
        for (step, actor, next) in path {
            status = decide(status, step, actor).unwrap();
            assert_eq!(status, next, "{step}");
        }
        assert!(allowed(status).is_empty());
    }

    #[test]
    fn the_seed_diagrams_branches() {
        // Store rejection: back for reassignment.
        assert_eq!(
            decide(StoreNotified, Step::RejectByStore, Store),
            Ok(Submitted)
        );
        // Every substitution rejected: back to picking.
        assert_eq!(
            decide(SubstitutionsNeeded, Step::RejectSubstitutions, Customer),
            Ok(PickingInProgress)
        );
        // No drivers: still ready, assignment retried.
        assert_eq!(
            decide(ReadyForPickup, Step::NoDriverAvailable, Partner),
            Ok(ReadyForPickup)
        );
        // All items available: ready straight from picking.
        assert_eq!(
            decide(PickingInProgress, Step::MarkReady, Store),
            Ok(ReadyForPickup)
        );
    }

    #[test]
    fn a_step_out_of_turn_lists_what_is_allowed_and_a_wrong_actor_is_refused() {
        let err = decide(StoreNotified, Step::PickUp, Driver).unwrap_err();
        assert_eq!(
            err,
            LifecycleError::NotNow {
                from: StoreNotified,
                step: Step::PickUp,
                allowed: vec![
                    Step::Acknowledge,
                    Step::RejectByStore,
                    Step::DispatchEarly,
                    Step::Cancel,
                    Step::Fail
                ],
            }
        );
        assert_eq!(
            err.to_string(),
            "cannot pick_up an order that is store_notified; allowed now: acknowledge, reject_by_store, dispatch_early, cancel, fail"
        );
        assert_eq!(
            decide(PickingInProgress, Step::ApproveSubstitutions, Store),
            Err(LifecycleError::NotYours {
                actor: Store,
                step: Step::ApproveSubstitutions
            })
        );
        assert!(decide(Delivered, Step::Cancel, Operator)
            .unwrap_err()
            .to_string()
            .ends_with("allowed now: nothing (the order is final)"));
    }

    #[test]
    fn cancel_and_fail_leave_every_live_status_and_nothing_leaves_a_final_one() {
        for status in TrackingStatus::VARIANTS {
            let live = !status.is_terminal();
            assert_eq!(
                decide(*status, Step::Cancel, Operator).is_ok(),
                live,
                "{status}"
            );
            assert_eq!(
                decide(*status, Step::Fail, Partner).is_ok(),
                live,
                "{status}"
            );
            assert_eq!(allowed(*status).is_empty(), !live, "{status}");
        }
    }

    #[test]
    fn the_coarse_status_is_the_seed_004_projection() {
        let expected = [
            (Submitted, "confirmed"),
            (StoreNotified, "confirmed"),
            (StoreAcknowledged, "preparing"),
            (PickingInProgress, "preparing"),
            (SubstitutionsNeeded, "preparing"),
            (SubstitutionsApproved, "preparing"),
            (ReadyForPickup, "ready"),
            (DriverAssigned, "ready"),
            (DriverPickupComplete, "picked_up"),
            (InTransit, "picked_up"),
            (Delivered, "delivered"),
            (Cancelled, "cancelled"),
            (Failed, "failed"),
        ];
        assert_eq!(expected.len(), TrackingStatus::VARIANTS.len());
        for (fine, coarse) in expected {
            assert_eq!(fine.coarse().as_str(), coarse, "{fine}");
            assert_eq!(fine.is_terminal(), fine.coarse().is_terminal(), "{fine}");
        }
        // The canonical fine status of each coarse one projects back to it.
        for coarse in OrderStatus::ALL {
            match TrackingStatus::canonical(coarse) {
                Some(fine) => assert_eq!(fine.coarse(), coarse),
                None => assert!(matches!(
                    coarse,
                    OrderStatus::Requested | OrderStatus::Expired
                )),
            }
        }
    }

    #[test]
    fn wire_names_are_the_seeds() {
        for status in TrackingStatus::VARIANTS {
            let json = serde_json::to_string(status).unwrap();
            let name: &str = status.into();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(name.parse::<TrackingStatus>(), Ok(*status));
        }
        assert_eq!(DriverPickupComplete.to_string(), "driver_pickup_complete");
    }

    #[test]
    fn seed_004_moves_map_onto_the_table() {
        use OrderStatus as C;
        assert_eq!(
            coarse_path(Submitted, C::Preparing),
            Some(vec![StoreAcknowledged, PickingInProgress])
        );
        assert_eq!(
            coarse_path(ReadyForPickup, C::PickedUp),
            Some(vec![DriverAssigned, DriverPickupComplete])
        );
        assert_eq!(
            coarse_path(DriverPickupComplete, C::Delivered),
            Some(vec![Delivered])
        );
        assert_eq!(coarse_path(InTransit, C::Cancelled), Some(vec![Cancelled]));
        assert_eq!(coarse_path(Submitted, C::Ready), None, "no skipping");
        assert_eq!(
            coarse_path(SubstitutionsNeeded, C::Ready),
            None,
            "the customer must answer first"
        );
        // Every legal coarse move from the canonical fine status has a path,
        // and every illegal one has none.
        for from in OrderStatus::ALL {
            let Some(fine) = TrackingStatus::canonical(from) else {
                continue;
            };
            for to in OrderStatus::ALL {
                if to == from || to.is_processor_only() {
                    continue;
                }
                assert_eq!(
                    coarse_path(fine, to).is_some(),
                    from.can_become(to),
                    "{from} → {to}"
                );
            }
        }
    }

    #[test]
    fn a_partner_moves_forward_only_by_its_own_steps() {
        assert_eq!(
            partner_path(ReadyForPickup, InTransit),
            Some(vec![DriverAssigned, DriverPickupComplete, InTransit])
        );
        assert_eq!(partner_path(InTransit, DriverAssigned), None, "stale");
        assert_eq!(partner_path(PickingInProgress, DriverPickupComplete), None);
        assert_eq!(partner_path(DriverAssigned, Failed), Some(vec![Failed]));
        assert_eq!(partner_path(Delivered, Failed), None, "final");
    }

    #[test]
    fn explicit_moves_list_the_statuses_they_may_reach() {
        assert_eq!(
            next_statuses(StoreNotified),
            vec![StoreAcknowledged, Submitted, Cancelled, Failed]
        );
        assert_eq!(
            next_statuses(DriverAssigned),
            vec![DriverPickupComplete, Cancelled, Failed]
        );
        assert!(next_statuses(Delivered).is_empty());
    }

    #[test]
    fn an_explicit_target_is_reached_by_its_single_step() {
        assert_eq!(
            step_to(StoreAcknowledged, PickingInProgress),
            Some(Step::StartPicking)
        );
        assert_eq!(step_to(InTransit, Delivered), Some(Step::Deliver));
        assert_eq!(step_to(Submitted, InTransit), None, "no skipping");
        assert_eq!(step_to(Delivered, Cancelled), None, "final");
    }
}
