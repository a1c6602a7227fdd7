//! The diff: from the objects symroute owns now to the ones it wants, as an
//! ordered list of operations. Pure.
//!
//! Order matters for a clean switch-over: a stale route whose kernel key
//! (table, prefix, metric) a wanted route needs is deleted first; then new
//! routes are added, then new rules (so a rule never points at an empty table
//! that is about to be filled), then stale rules go, then stale routes.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::model::{Route, Rule};

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", content = "object", rename_all = "kebab-case")]
pub enum Op {
    AddRoute(Route),
    DelRoute(Route),
    AddRule(Rule),
    DelRule(Rule),
}

impl Op {
    /// The operation that undoes this one.
    pub fn inverse(&self) -> Op {
        match self {
            Op::AddRoute(r) => Op::DelRoute(r.clone()),
            Op::DelRoute(r) => Op::AddRoute(r.clone()),
            Op::AddRule(r) => Op::DelRule(r.clone()),
            Op::DelRule(r) => Op::AddRule(r.clone()),
        }
    }

    pub fn is_add(&self) -> bool {
        matches!(self, Op::AddRoute(_) | Op::AddRule(_))
    }
}

/// Compare ignoring what the kernel adds on its own (nothing, today, beyond
/// what [`Route`] leaves out): owned routes are identical when every field
/// symroute sets matches.
fn same_route(a: &Route, b: &Route) -> bool {
    a == b
}

/// Operations that turn `actual` (symroute's tagged objects) into `desired`.
pub fn diff(
    desired_rules: &[Rule],
    desired_routes: &[Route],
    actual_rules: &[Rule],
    actual_routes: &[Route],
) -> Vec<Op> {
    let want_rules: BTreeSet<&Rule> = desired_rules.iter().collect();
    let have_rules: BTreeSet<&Rule> = actual_rules.iter().collect();

    let mut add_routes: Vec<&Route> = desired_routes
        .iter()
        .filter(|w| !actual_routes.iter().any(|h| same_route(w, h)))
        .collect();
    // The kernel checks a gateway against the routes there when its route is
    // added: a table's connected routes go in before its gateway routes.
    add_routes.sort_by_key(|r| r.gateway.is_some());
    let stale_routes: Vec<&Route> = actual_routes
        .iter()
        .filter(|h| !desired_routes.iter().any(|w| same_route(w, h)))
        .collect();
    let (mut blocking, mut other_stale): (Vec<&Route>, Vec<&Route>) = stale_routes
        .into_iter()
        .partition(|h| add_routes.iter().any(|w| w.key() == h.key()));
    // A rollback re-adds deleted routes in reverse: delete gateway routes
    // before connected ones so they come back after them.
    blocking.sort_by_key(|r| r.gateway.is_none());
    other_stale.sort_by_key(|r| r.gateway.is_none());

    let mut ops = Vec::new();
    ops.extend(blocking.into_iter().map(|r| Op::DelRoute(r.clone())));
    ops.extend(add_routes.into_iter().map(|r| Op::AddRoute(r.clone())));
    ops.extend(
        desired_rules
            .iter()
            .filter(|r| !have_rules.contains(r))
            .map(|r| Op::AddRule(r.clone())),
    );
    // A duplicate of a wanted rule (same identity twice) is stale too.
    let mut seen: BTreeSet<&Rule> = BTreeSet::new();
    for r in actual_rules {
        if !want_rules.contains(r) || !seen.insert(r) {
            ops.push(Op::DelRule(r.clone()));
        }
    }
    ops.extend(other_stale.into_iter().map(|r| Op::DelRoute(r.clone())));
    ops
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddRoute(r) => write!(f, "add route {}", crate::render::route_args(r, None)),
            Op::DelRoute(r) => write!(f, "delete route {}", crate::render::route_args(r, None)),
            Op::AddRule(r) => write!(f, "add rule {}", crate::render::rule_args(r)),
            Op::DelRule(r) => write!(f, "delete rule {}", crate::render::rule_args(r)),
        }
    }
}
