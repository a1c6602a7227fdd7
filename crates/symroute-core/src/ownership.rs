//! Ownership: which rules and routes of a namespace are symroute's. One
//! classification per snapshot ([`classify`]), used by apply, status, clean,
//! the CNI plugin and the daemon alike; nothing else compares protocol
//! numbers.
//!
//! A writer's [`Space`] is its protocol tag, its table band and its rule
//! priority (plus, for one CNI attachment, the table its configuration names).
//! An object is **ours** only when it carries the tag and lies inside the
//! space in a form symroute writes itself:
//! - a route in a table of the space, type unicast, one next hop, scope
//!   universe or link;
//! - a rule at the space's priority, action `lookup` to a table of the space,
//!   with `from PREFIX` as its only selector.
//!
//! Tagged objects inside the space that symroute cannot represent exactly (a
//! tagged `iif` rule or `from all` rule at its priority, a tagged blackhole,
//! unreachable or multipath route in a band table) are **findings**: reported
//! and never deleted, because a delete cannot be exact (`RTM_DELRULE` matches
//! only the attributes sent, see `rule_find()` in net/core/fib_rules.c: a
//! delete without `iif` removes the first rule with the other attributes,
//! with or without an `iif`). For the same reason a delete of one of our rules
//! is **ambiguous** when a finding has the same family, priority, table,
//! protocol and source: it is not sent, and reported.
//!
//! Everything else, tagged or not, is **foreign**: never touched. Tables 0
//! and 252-255 are never in any space ([`Table::reserved`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::model::{Protocol, ReservedTable, Route, Rule, Scope, Snapshot, Table};
use crate::render;
use crate::settings::Settings;

/// The objects one writer may own: tag, table band, rule priority, and the
/// tables one CNI attachment names explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Space {
    pub protocol: Protocol,
    pub table_min: u32,
    pub table_max: u32,
    pub priority: u32,
    /// Tables outside the band that belong to this space (sbr's `table` of
    /// one CNI attachment, as recorded in its state). Never a reserved one.
    pub extra_tables: Vec<Table>,
}

impl Space {
    /// The space of a writer with these settings (no extra table).
    pub fn of(settings: &Settings) -> Space {
        Space {
            protocol: settings.protocol,
            table_min: settings.table_min,
            table_max: settings.table_max,
            priority: settings.priority,
            extra_tables: Vec::new(),
        }
    }

    /// This space plus one explicitly named table (refused when reserved).
    pub fn with_table(mut self, table: u32) -> Result<Space, ReservedTable> {
        let t = Table::new(table)?;
        if !self.extra_tables.contains(&t) {
            self.extra_tables.push(t);
        }
        Ok(self)
    }

    pub fn in_band(&self, table: u32) -> bool {
        (self.table_min..=self.table_max).contains(&table)
    }

    /// Whether `table` is one of this space's tables (never a reserved one).
    pub fn has_table(&self, table: u32) -> bool {
        Table::reserved(table).is_none()
            && (self.in_band(table) || self.extra_tables.iter().any(|t| t.get() == table))
    }

    fn tagged(&self, protocol: u8) -> bool {
        self.protocol.tags(protocol)
    }
}

/// Why a tagged rule at symroute's priority is not one symroute can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleProblem {
    /// Selectors or an action symroute never writes (iif, oif, fwmark, dst,
    /// tos, goto, suppress, l3mdev, uid, ports, blackhole, ...).
    OtherSelectors,
    /// `from all`: symroute only writes `from PREFIX`; a delete without a
    /// source would match any rule at that priority and table.
    FromAll,
}

/// Why a tagged route in one of symroute's tables is not one it can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteProblem {
    /// Blackhole, unreachable, local, ...: symroute only writes unicast.
    NotUnicast,
    Multipath,
    /// Scope host or nowhere.
    Scope,
}

/// Something the classification (or status) found that symroute leaves
/// alone and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "kebab-case")]
pub enum Finding {
    /// A rule with symroute's tag at its priority that symroute cannot
    /// represent exactly.
    Rule { rule: Rule, problem: RuleProblem },
    /// A route with symroute's tag in one of its tables that symroute cannot
    /// represent exactly.
    Route { route: Route, problem: RouteProblem },
    /// symroute would delete `ours`, but the delete message would match
    /// `other` as well: not sent.
    AmbiguousDelete { ours: Rule, other: Rule },
    /// symroute would delete route `ours`, but the delete message could
    /// match route `other` (a finding) instead: not sent.
    AmbiguousRouteDelete { ours: Route, other: Route },
    /// Another rule is consulted before `ours` for traffic from its source
    /// (a lower priority number, or the same priority earlier in the list),
    /// so `ours` decides nothing.
    Shadowed { ours: Rule, by: Rule },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Rule { rule, problem } => {
                let why = match problem {
                    RuleProblem::OtherSelectors => {
                        "has selectors or an action symroute never writes (iif, oif, fwmark, blackhole, ...)"
                    }
                    RuleProblem::FromAll => "matches from all, which symroute never writes",
                };
                write!(
                    f,
                    "rule {} carries symroute's tag but {why}: left alone (a delete of it could remove another rule)",
                    render::rule_show(rule)
                )
            }
            Finding::Route { route, problem } => {
                let why = match problem {
                    RouteProblem::NotUnicast => format!("is a {} route", route.kind),
                    RouteProblem::Multipath => "has several next hops".to_string(),
                    RouteProblem::Scope => "has a host or nowhere scope".to_string(),
                };
                write!(
                    f,
                    "route {}{} carries symroute's tag but {why}, which symroute never writes: left alone",
                    if route.kind.is_unicast() {
                        String::new()
                    } else {
                        format!("{} ", route.kind)
                    },
                    render::route_args(route, None)
                )
            }
            Finding::AmbiguousDelete { ours, other } => write!(
                f,
                "rule {} was not deleted: the delete would also match rule {} (the kernel matches only the attributes sent)",
                render::rule_show(ours),
                render::rule_show(other)
            ),
            Finding::AmbiguousRouteDelete { ours, other } => write!(
                f,
                "route {} was not deleted: the delete could match route {} instead (the kernel matches only the attributes sent, a metric of 0 any metric, and a multipath route by its first hop)",
                render::route_args(ours, None),
                render::route_args(other, None)
            ),
            Finding::Shadowed { ours, by } => write!(
                f,
                "rule {} is shadowed by rule {}, which the kernel consults first: replies from {} do not use symroute's table",
                render::rule_show(ours),
                render::rule_show(by),
                ours.src
                    .map_or_else(|| "all".to_string(), |s| s.addr().to_string())
            ),
        }
    }
}

/// The classification of one snapshot for one space.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ownership {
    /// Rules symroute owns, in the kernel's list order.
    pub rules: Vec<Rule>,
    /// Routes symroute owns.
    pub routes: Vec<Route>,
    /// Tagged objects in the space symroute cannot represent
    /// ([`Finding::Rule`] and [`Finding::Route`] only).
    pub findings: Vec<Finding>,
    /// Tables any object that is not ours uses (foreign or finding): a
    /// planner never gives them to a new interface.
    pub others_tables: BTreeSet<u32>,
}

/// How one object classifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Ours,
    /// In the space, tagged, not representable.
    Finding,
    Foreign,
}

/// Classify one rule.
pub fn rule_class(space: &Space, r: &Rule) -> (Class, Option<RuleProblem>) {
    if !space.tagged(r.protocol) || r.priority != space.priority {
        return (Class::Foreign, None);
    }
    // A non-lookup action reads as table 0 (and other selectors).
    if r.table != 0 && !space.has_table(r.table) {
        return (Class::Foreign, None);
    }
    if r.other_selectors || r.table == 0 {
        return (Class::Finding, Some(RuleProblem::OtherSelectors));
    }
    if r.src.is_none() {
        return (Class::Finding, Some(RuleProblem::FromAll));
    }
    (Class::Ours, None)
}

/// Classify one route.
pub fn route_class(space: &Space, r: &Route) -> (Class, Option<RouteProblem>) {
    if !space.tagged(r.protocol) || !space.has_table(r.table) {
        return (Class::Foreign, None);
    }
    let problem = if !r.kind.is_unicast() {
        Some(RouteProblem::NotUnicast)
    } else if !r.multipath.is_empty() {
        Some(RouteProblem::Multipath)
    } else if r.scope == Scope::Other {
        Some(RouteProblem::Scope)
    } else {
        None
    };
    match problem {
        Some(p) => (Class::Finding, Some(p)),
        None => (Class::Ours, None),
    }
}

/// The one classification of a snapshot.
pub fn classify(snap: &Snapshot, space: &Space) -> Ownership {
    let mut own = Ownership::default();
    for r in &snap.rules {
        match rule_class(space, r) {
            (Class::Ours, _) => own.rules.push(r.clone()),
            (class, problem) => {
                own.others_tables.insert(r.table);
                if let (Class::Finding, Some(problem)) = (class, problem) {
                    own.findings.push(Finding::Rule {
                        rule: r.clone(),
                        problem,
                    });
                }
            }
        }
    }
    for r in &snap.routes {
        match route_class(space, r) {
            (Class::Ours, _) => own.routes.push(r.clone()),
            (class, problem) => {
                own.others_tables.insert(r.table);
                if let (Class::Finding, Some(problem)) = (class, problem) {
                    own.findings.push(Finding::Route {
                        route: r.clone(),
                        problem,
                    });
                }
            }
        }
    }
    own
}

/// What symroute's delete message for `ours` carries matches `other` too:
/// family, priority, table, protocol and source (`rule_find()` ignores the
/// selectors the message leaves out).
fn delete_also_matches(ours: &Rule, other: &Rule) -> bool {
    other != ours
        && other.family == ours.family
        && other.priority == ours.priority
        && other.table == ours.table
        && other.protocol == ours.protocol
        && other.src == ours.src
}

/// Could the kernel take `other` for a delete of route `ours`? The delete
/// names table, prefix, protocol, device, gateway and metric; the kernel
/// reads a metric of 0 as any (IPv4's `fib_table_delete`, IPv6's
/// `ip6_route_del`), and compares a multipath route's first hop (IPv4) or
/// each of its sibling hops (IPv6). IPv4 also matches type and scope, which
/// this leaves out, so it errs on the side of not sending.
fn route_delete_could_match(ours: &Route, other: &Route) -> bool {
    let hop_matches = |oif: u32, gateway: Option<IpAddr>| {
        (ours.oif == 0 || oif == ours.oif) && (ours.gateway.is_none() || gateway == ours.gateway)
    };
    let hops = std::iter::once((other.oif, other.gateway))
        .chain(other.multipath.iter().map(|h| (h.oif, h.gateway)));
    other != ours
        && other.table == ours.table
        && other.dst == ours.dst
        && other.protocol == ours.protocol
        && (ours.metric == 0 || other.metric == ours.metric)
        && hops.into_iter().any(|(oif, gw)| hop_matches(oif, gw))
}

impl Ownership {
    /// The finding route a delete of `ours` could match instead, if any.
    pub fn ambiguous_route_delete(&self, ours: &Route) -> Option<&Route> {
        self.findings.iter().find_map(|f| match f {
            Finding::Route { route, .. } if route_delete_could_match(ours, route) => Some(route),
            _ => None,
        })
    }

    /// The finding rule a delete of `ours` would also match, if any.
    pub fn ambiguous_delete(&self, ours: &Rule) -> Option<&Rule> {
        self.findings.iter().find_map(|f| match f {
            Finding::Rule { rule, .. } if delete_also_matches(ours, rule) => Some(rule),
            _ => None,
        })
    }

    /// Split deletions into the ones that can be sent and the ambiguous ones
    /// (as findings).
    pub fn exact_deletes(&self, ops: Vec<crate::diff::Op>) -> (Vec<crate::diff::Op>, Vec<Finding>) {
        let mut kept = Vec::with_capacity(ops.len());
        let mut findings = Vec::new();
        for op in ops {
            match &op {
                crate::diff::Op::DelRule(r) => {
                    if let Some(other) = self.ambiguous_delete(r) {
                        findings.push(Finding::AmbiguousDelete {
                            ours: r.clone(),
                            other: other.clone(),
                        });
                        continue;
                    }
                }
                crate::diff::Op::DelRoute(r) => {
                    if let Some(other) = self.ambiguous_route_delete(r) {
                        findings.push(Finding::AmbiguousRouteDelete {
                            ours: r.clone(),
                            other: other.clone(),
                        });
                        continue;
                    }
                }
                _ => {}
            }
            kept.push(op);
        }
        (kept, findings)
    }
}

/// Rules that the kernel consults before `ours` for traffic from its source
/// and that decide it: not ours, same family, `from` a prefix covering our
/// source, no other selectors, a lookup of a table other than `local`, and a
/// lower priority number, or the same priority earlier in the list (the
/// kernel keeps rules of equal priority in insertion order). When `ours` is
/// not in the list, a rule of equal priority counts: ours would be added after it.
pub fn shadowing<'a>(snap: &'a Snapshot, own: &Ownership, ours: &Rule) -> Option<&'a Rule> {
    let src = ours.src?;
    let position = snap.rules.iter().position(|r| r == ours);
    snap.rules.iter().enumerate().find_map(|(i, r)| {
        let before = r.priority < ours.priority
            || (r.priority == ours.priority && position.is_none_or(|p| i < p));
        let decides = !r.other_selectors
            && r.table != 0
            && r.table != crate::model::RT_TABLE_LOCAL
            && r.table != ours.table
            && r.src
                .is_some_and(|s| s.contains(&src.addr()) && s.prefix_len() <= src.prefix_len());
        (r.family == ours.family && before && decides && !own.rules.contains(r)).then_some(r)
    })
}
