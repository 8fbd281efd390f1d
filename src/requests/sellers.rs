//! The simulated sellers: the only simulated part of order-request
//! processing. There are no real sellers to ask, so this module says which
//! sellers a request goes to, when each one answers and what it proposes.
//! Everything around it (the processor's records, the stream, the requestor's
//! tracking, the customer order) is real.
//!
//! The timeline is in real minutes, scaled like the workflow simulator's
//! (`TimeScale`), so tests and demos run it fast:
//!
//! | after  | accept (default)   | expire          | fail                   |
//! |--------|--------------------|-----------------|------------------------|
//! | 2 min  | 3 sellers selected | 3 selected      | 3 selected             |
//! | 3 min  | 1st proposal       |                 | seller directory fails |
//! | 4 min  | 2nd proposal       |                 |                        |
//! | 5 min  | 3rd proposal       |                 |                        |
//! | 6 min  | quickest accepted  |                 |                        |
//! | 15 min |                    | request expires |                        |

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::transport::{Proposal, SellerRef};
use crate::domain::OrderId;

/// The seller catalogue: id, name and minutes each needs to prepare an order.
const CATALOGUE: [(&str, &str, u32); 6] = [
    ("seller1", "Luigi's Pizzeria", 25),
    ("seller2", "Burger Barn", 15),
    ("seller3", "Sakura Sushi", 20),
    ("seller4", "Taco Fiesta", 18),
    ("seller5", "Green Bowl", 12),
    ("seller6", "Curry House", 30),
];

/// Sellers asked per round.
pub const SELLERS_PER_ROUND: usize = 3;
/// How long selecting sellers takes.
pub const SELECTION_TAKES: Duration = minutes(2);
/// When the first seller proposes.
pub const FIRST_PROPOSAL_AFTER: Duration = minutes(3);
/// Time between two sellers' proposals.
pub const PROPOSAL_SPACING: Duration = minutes(1);
/// When the processor decides, once every seller has had its say. A minute
/// after the last proposal, so each step of the search is its own moment a
/// customer sees.
pub const DECISION_AFTER: Duration = minutes(6);
/// When a request nobody proposed for expires.
pub const EXPIRY_AFTER: Duration = minutes(15);

const fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// How the simulated sellers behave for one request (`?scenario=` on
/// initiate). A knob for demos and tests, since the sellers are simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Every seller proposes; the quickest is accepted.
    #[default]
    Accept,
    /// No seller proposes; the request expires.
    Expire,
    /// The seller directory fails after selection: the processor's stream
    /// ends with an error.
    Fail,
}

impl Scenario {
    const ALL: [Scenario; 3] = [Scenario::Accept, Scenario::Expire, Scenario::Fail];

    fn as_str(self) -> &'static str {
        match self {
            Scenario::Accept => "accept",
            Scenario::Expire => "expire",
            Scenario::Fail => "fail",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `scenario` value that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scenario must be one of accept, expire, fail, got '{0}'")]
pub struct BadScenario(pub String);

impl FromStr for Scenario {
    type Err = BadScenario;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.as_str() == s.trim())
            .ok_or_else(|| BadScenario(s.to_owned()))
    }
}

/// One thing the sellers do, at its time on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// These sellers are asked for a proposal.
    Select(Vec<SellerRef>),
    /// A seller proposes.
    Propose(Proposal),
    /// The round is decided: this proposal is the quickest.
    Accept(Proposal),
    /// The seller directory fails; the message says so.
    Fail(String),
    /// Nobody proposed in time.
    Expire,
}

/// The sellers a request goes to: [`SELLERS_PER_ROUND`] neighbours in the
/// catalogue, starting at a place fixed by the request id, so one request
/// always meets the same sellers and different requests meet different ones.
pub fn select(order_req_id: &OrderId) -> Vec<(SellerRef, u32)> {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let hash = order_req_id
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    // The catalogue's length fits in u64 and the remainder in usize.
    let start = (hash % CATALOGUE.len() as u64) as usize;
    (0..SELLERS_PER_ROUND)
        .map(|n| {
            let (seller_id, name, prep_minutes) = CATALOGUE[(start + n) % CATALOGUE.len()];
            (
                SellerRef {
                    seller_id: seller_id.to_owned(),
                    name: name.to_owned(),
                },
                prep_minutes,
            )
        })
        .collect()
}

/// Everything the sellers will do for a request, with the real time after
/// the start at which each step happens. Ends with the outcome.
pub fn timeline(order_req_id: &OrderId, scenario: Scenario) -> Vec<(Duration, Step)> {
    let chosen = select(order_req_id);
    let mut steps = vec![(
        SELECTION_TAKES,
        Step::Select(chosen.iter().map(|(seller, _)| seller.clone()).collect()),
    )];
    match scenario {
        Scenario::Accept => {
            let mut at = FIRST_PROPOSAL_AFTER;
            let mut best: Option<Proposal> = None;
            for (n, (seller, prep_minutes)) in chosen.into_iter().enumerate() {
                if n > 0 {
                    at += PROPOSAL_SPACING;
                }
                let proposal = Proposal {
                    proposal_id: format!("P-{}", seller.seller_id),
                    seller,
                    prep_minutes,
                };
                // The quickest wins; on a tie the earlier proposal stays.
                if best
                    .as_ref()
                    .is_none_or(|b| proposal.prep_minutes < b.prep_minutes)
                {
                    best = Some(proposal.clone());
                }
                steps.push((at, Step::Propose(proposal)));
            }
            if let Some(best) = best {
                steps.push((DECISION_AFTER.max(at), Step::Accept(best)));
            }
        }
        Scenario::Expire => steps.push((EXPIRY_AFTER, Step::Expire)),
        Scenario::Fail => steps.push((
            FIRST_PROPOSAL_AFTER,
            Step::Fail(
                "the directory stopped answering (simulated failure, scenario=fail)".to_owned(),
            ),
        )),
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> OrderId {
        s.parse().unwrap()
    }

    #[test]
    fn selection_is_stable_and_varies_by_request() {
        assert_eq!(select(&id("TEST001")), select(&id("TEST001")));
        assert_eq!(select(&id("TEST001")).len(), SELLERS_PER_ROUND);
        let firsts: std::collections::BTreeSet<String> = (0..20)
            .map(|n| select(&id(&format!("REQ{n}")))[0].0.seller_id.clone())
            .collect();
        assert!(firsts.len() > 1, "requests meet different sellers");
    }

    #[test]
    fn accept_ends_with_the_quickest_proposal_after_every_seller_answered() {
        let steps = timeline(&id("TEST001"), Scenario::Accept);
        let proposals: Vec<&Proposal> = steps
            .iter()
            .filter_map(|(_, step)| match step {
                Step::Propose(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(proposals.len(), SELLERS_PER_ROUND);
        let (at, Step::Accept(accepted)) = steps.last().unwrap() else {
            panic!("ends with an acceptance: {steps:?}");
        };
        assert_eq!(*at, DECISION_AFTER);
        let quickest = proposals.iter().map(|p| p.prep_minutes).min().unwrap();
        assert_eq!(accepted.prep_minutes, quickest);
        assert!(steps.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
    }

    #[test]
    fn expire_and_fail_end_without_proposals() {
        let expire = timeline(&id("A"), Scenario::Expire);
        assert_eq!(expire.last(), Some(&(EXPIRY_AFTER, Step::Expire)));
        let fail = timeline(&id("A"), Scenario::Fail);
        assert!(matches!(fail.last(), Some((_, Step::Fail(_)))));
        assert!(!fail.iter().any(|(_, s)| matches!(s, Step::Propose(_))));
        assert_eq!("expire".parse::<Scenario>(), Ok(Scenario::Expire));
        assert!("explode".parse::<Scenario>().is_err());
    }
}
