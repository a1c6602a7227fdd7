//! Reconcile, status and clean: read, plan, diff, carry out, and roll back on
//! failure. Works through the [`Kernel`] seam, so it is the same code against
//! a real namespace and against a fake.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::diff::{Op, diff};
use crate::kernel::{Kernel, KernelError, errno, is_already};
use crate::model::{Route, Rule, Snapshot};
use crate::ownership::{Finding, Ownership, Space, classify, shadowing};
use crate::plan::{Plan, PlanError, PlanRequest, Selection, plan_with, space};
use crate::render;
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A change failed; what this run had done was undone.
    #[error("{failed}{}", rollback_note(.rollback_errors))]
    Apply {
        failed: KernelError,
        /// Operations that had succeeded and were undone.
        rolled_back: Vec<Op>,
        /// Undo steps that failed in turn.
        rollback_errors: Vec<KernelError>,
    },
    /// An add met an object with the same identity that is not the wanted
    /// one (someone else's, made after the snapshot): the add failed and
    /// what this run had done was undone.
    #[error("{op}: the kernel already holds {found}, which is not symroute's{}", rollback_note(.rollback_errors))]
    Conflict {
        op: Box<Op>,
        /// The object found, iproute2-style ("nothing" when it was gone
        /// by the time it was read again).
        found: String,
        rolled_back: Vec<Op>,
        rollback_errors: Vec<KernelError>,
    },
    /// The interrupt flag was set: the run stopped before its next change
    /// and undid what it had done.
    #[error("interrupted{}", rollback_note(.rollback_errors))]
    Interrupted {
        rolled_back: Vec<Op>,
        rollback_errors: Vec<KernelError>,
    },
    /// A single-interface request names a table that holds another
    /// attachment's routes (through another link).
    #[error(
        "{ifname}: table {table} holds the routes of another attachment ({other}); choose another table"
    )]
    TableInUse {
        ifname: String,
        table: u32,
        /// The other attachment's interface.
        other: String,
        route: Box<Route>,
    },
    /// Some removals failed; the rest were carried out.
    #[error(
        "clean: {} removed, {} not: {}",
        .removed.len(),
        .errors.len(),
        .errors.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Clean {
        /// The removals that were carried out.
        removed: Vec<Op>,
        errors: Vec<KernelError>,
    },
}

fn rollback_note(errs: &[KernelError]) -> String {
    if errs.is_empty() {
        " (everything this run had changed was rolled back)".to_string()
    } else {
        format!(
            " (rollback incomplete: {})",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// How to run an apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub settings: Settings,
    pub request: PlanRequest,
    /// Plan only.
    pub dry_run: bool,
    /// How long to wait for tentative (DAD) IPv6 addresses of managed links.
    pub dad_wait: Duration,
    /// Checked before every change: once set, the run undoes what it did and
    /// returns [`EngineError::Interrupted`] (set it from a signal handler).
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            settings: Settings::default(),
            request: PlanRequest::default(),
            dry_run: false,
            dad_wait: Duration::from_secs(3),
            interrupt: None,
        }
    }
}

/// What an apply found and did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub plan: Plan,
    /// The changes: carried out, or only planned with dry_run.
    pub ops: Vec<Op>,
    pub dry_run: bool,
    /// IPv6 addresses still tentative after the wait.
    pub tentative: Vec<IpAddr>,
    /// What symroute left alone and why (unrepresentable tagged objects,
    /// deletes that could not be exact).
    pub findings: Vec<Finding>,
    #[serde(skip)]
    pub snapshot: Snapshot,
}

/// Which of a plan's interface objects a single-interface plan may touch:
/// rules from its addresses; routes through its link or in its own
/// band-allocated table. Every object for a plan of the whole namespace.
struct Scope {
    only: Option<OnlyScope>,
}

struct OnlyScope {
    addrs: Vec<IpAddr>,
    link: Option<u32>,
    /// Its table, when the band gave it (not named by the caller).
    band_table: Option<u32>,
}

impl Scope {
    fn of(plan: &Plan, request: &PlanRequest) -> Scope {
        let Selection::Only(only) = &request.selection else {
            return Scope { only: None };
        };
        let iface = plan.interfaces.first();
        Scope {
            only: Some(OnlyScope {
                addrs: iface
                    .map(|i| i.addrs.iter().map(ipnet::IpNet::addr).collect())
                    .unwrap_or_default(),
                link: iface.map(|i| i.index),
                band_table: iface.filter(|_| only.table.is_none()).map(|i| i.table),
            }),
        }
    }

    fn rule(&self, r: &Rule) -> bool {
        self.only.as_ref().is_none_or(|o| {
            r.src.is_some_and(|s| {
                s.prefix_len() == r.family.host_prefix() && o.addrs.contains(&s.addr())
            })
        })
    }

    fn route(&self, r: &Route) -> bool {
        self.only.as_ref().is_none_or(|o| {
            o.link.is_some_and(|l| r.oif == l) || o.band_table.is_some_and(|t| r.table == t)
        })
    }

    fn finding(&self, f: &Finding) -> bool {
        match f {
            Finding::Rule { rule, .. } => {
                self.only.is_none() || rule.src.is_some_and(|_| self.rule(rule))
            }
            Finding::Route { route, .. } | Finding::AmbiguousRouteDelete { ours: route, .. } => {
                self.route(route)
            }
            Finding::AmbiguousDelete { ours, .. } | Finding::Shadowed { ours, .. } => {
                self.rule(ours)
            }
        }
    }
}

/// The classification and plan of one snapshot, and the objects of ours the
/// plan is responsible for.
struct Planned {
    plan: Plan,
    own: Ownership,
    rules: Vec<Rule>,
    routes: Vec<Route>,
    findings: Vec<Finding>,
}

fn plan_snapshot(
    snap: &Snapshot,
    settings: &Settings,
    request: &PlanRequest,
) -> Result<Planned, EngineError> {
    let space: Space = space(settings, request)?;
    let own = classify(snap, &space);
    let plan = plan_with(snap, &own, &space, settings, request)?;
    let scope = Scope::of(&plan, request);
    if let (Selection::Only(only), Some(iface)) = (&request.selection, plan.interfaces.first())
        && let Some(t) = only.table
        && let Some(r) = own
            .routes
            .iter()
            .find(|r| r.table == t && r.oif != 0 && r.oif != iface.index)
    {
        return Err(EngineError::TableInUse {
            ifname: iface.name.clone(),
            table: t,
            other: snap
                .link(r.oif)
                .map_or_else(|| format!("if{}", r.oif), |l| l.name.clone()),
            route: Box::new(r.clone()),
        });
    }
    let rules = own
        .rules
        .iter()
        .filter(|r| scope.rule(r))
        .cloned()
        .collect();
    let routes = own
        .routes
        .iter()
        .filter(|r| scope.route(r))
        .cloned()
        .collect();
    let findings = own
        .findings
        .iter()
        .filter(|f| scope.finding(f))
        .cloned()
        .collect();
    Ok(Planned {
        plan,
        own,
        rules,
        routes,
        findings,
    })
}

/// Read the namespace, waiting up to `wait` while an IPv6 global address is
/// still tentative (DAD): routes from such an address fail.
pub fn settled_snapshot<K: Kernel>(k: &mut K, wait: Duration) -> Result<Snapshot, KernelError> {
    settled_snapshot_until(k, wait, None)
}

/// [`settled_snapshot`], returning the latest snapshot at once when
/// `interrupt` is set (the caller's next interrupt check then stops the run).
pub fn settled_snapshot_until<K: Kernel>(
    k: &mut K,
    wait: Duration,
    interrupt: Option<&AtomicBool>,
) -> Result<Snapshot, KernelError> {
    // A wait too long for the clock: no deadline.
    let deadline = Instant::now().checked_add(wait);
    loop {
        let snap = k.snapshot()?;
        let tentative = snap
            .links
            .iter()
            .filter(|l| !l.loopback)
            .flat_map(super::model::Link::global_addrs)
            .any(|a| a.tentative);
        if !tentative || deadline.is_some_and(|d| Instant::now() >= d) || interrupted(interrupt) {
            return Ok(snap);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interrupted(flag: Option<&AtomicBool>) -> bool {
    flag.is_some_and(|f| f.load(Ordering::SeqCst))
}

/// Undo `done`, newest first: (undone, undo errors).
fn roll_back<K: Kernel>(k: &mut K, done: &[&Op]) -> (Vec<Op>, Vec<KernelError>) {
    let mut rollback_errors = Vec::new();
    let mut rolled_back = Vec::new();
    for d in done.iter().rev() {
        let inv = d.inverse();
        match k.execute(&inv) {
            Ok(()) => rolled_back.push((*d).clone()),
            Err(e) if is_already(&e, &inv) => rolled_back.push((*d).clone()),
            Err(e) => rollback_errors.push(e),
        }
    }
    (rolled_back, rollback_errors)
}

/// After an EEXIST on an add: None when a fresh read shows exactly the
/// wanted object (a concurrent run of ours made it), else the object found.
fn verify_exists<K: Kernel>(k: &mut K, op: &Op) -> Result<Option<String>, KernelError> {
    let snap = k.snapshot()?;
    Ok(match op {
        Op::AddRule(w) => (!snap.rules.contains(w)).then(|| {
            snap.rules
                .iter()
                .find(|r| {
                    r.family == w.family
                        && r.priority == w.priority
                        && r.table == w.table
                        && r.src == w.src
                })
                .map_or_else(
                    || "nothing".to_string(),
                    |r| format!("rule {}", render::rule_show(r)),
                )
        }),
        Op::AddRoute(w) => (!snap.routes.contains(w)).then(|| {
            snap.routes.iter().find(|r| r.key() == w.key()).map_or_else(
                || "nothing".to_string(),
                |r| {
                    let kind = if r.kind.is_unicast() {
                        String::new()
                    } else {
                        format!("{} ", r.kind)
                    };
                    format!("route {kind}{}", render::route_args(r, Some(&snap)))
                },
            )
        }),
        Op::DelRule(_) | Op::DelRoute(_) => None,
    })
}

/// Carry out `ops` in order; on the first failure undo what was done, in
/// reverse, and report both.
pub fn execute_all<K: Kernel>(k: &mut K, ops: &[Op]) -> Result<(), EngineError> {
    execute_with(k, ops, None)
}

/// [`execute_all`], checking `interrupt` before every operation.
///
/// An add refused with EEXIST is success only when a fresh read shows the
/// exact wanted object; otherwise the run fails with
/// [`EngineError::Conflict`] naming what was found, and rolls back. A delete
/// that finds nothing (ENOENT, ESRCH) is success: the object is gone.
pub fn execute_with<K: Kernel>(
    k: &mut K,
    ops: &[Op],
    interrupt: Option<&AtomicBool>,
) -> Result<(), EngineError> {
    let mut done: Vec<&Op> = Vec::new();
    for op in ops {
        if interrupted(interrupt) {
            let (rolled_back, rollback_errors) = roll_back(k, &done);
            return Err(EngineError::Interrupted {
                rolled_back,
                rollback_errors,
            });
        }
        match k.execute(op) {
            Ok(()) => done.push(op),
            Err(e) if op.is_add() && e.errno() == Some(errno::EEXIST) => {
                let found = match verify_exists(k, op) {
                    Ok(None) => continue, // exactly ours: nothing to undo
                    Ok(Some(found)) => found,
                    Err(read) => format!("an object that could not be read ({read})"),
                };
                let (rolled_back, rollback_errors) = roll_back(k, &done);
                return Err(EngineError::Conflict {
                    op: Box::new(op.clone()),
                    found,
                    rolled_back,
                    rollback_errors,
                });
            }
            // Already gone: nothing of ours to undo.
            Err(e) if is_already(&e, op) => {}
            Err(failed) => {
                let (rolled_back, rollback_errors) = roll_back(k, &done);
                return Err(EngineError::Apply {
                    failed,
                    rolled_back,
                    rollback_errors,
                });
            }
        }
    }
    Ok(())
}

/// Make the namespace's tagged state equal the plan.
pub fn apply<K: Kernel>(k: &mut K, opts: &ApplyOptions) -> Result<ApplyReport, EngineError> {
    let snap = settled_snapshot_until(
        k,
        if opts.dry_run {
            Duration::ZERO
        } else {
            opts.dad_wait
        },
        opts.interrupt.as_deref(),
    )?;
    apply_to(k, snap, opts)
}

/// [`apply`] on a snapshot the caller just read (no DAD wait): for callers
/// that need the snapshot first, such as the Docker daemon matching
/// interfaces by MAC.
pub fn apply_to<K: Kernel>(
    k: &mut K,
    snap: Snapshot,
    opts: &ApplyOptions,
) -> Result<ApplyReport, EngineError> {
    let Planned {
        plan,
        own,
        rules,
        routes,
        mut findings,
    } = plan_snapshot(&snap, &opts.settings, &opts.request)?;
    let (ops, ambiguous) = own.exact_deletes(diff(&plan.rules, &plan.routes, &rules, &routes));
    findings.extend(ambiguous);
    if !opts.dry_run {
        execute_with(k, &ops, opts.interrupt.as_deref())?;
    }
    let tentative = plan
        .interfaces
        .iter()
        .flat_map(|i| i.tentative.iter().copied())
        .collect();
    Ok(ApplyReport {
        plan,
        ops,
        dry_run: opts.dry_run,
        tentative,
        findings,
        snapshot: snap,
    })
}

/// Whether the kernel matches the plan.
///
/// `in_sync` is true when the kernel holds exactly the planned objects of
/// symroute's **and** none of its rules is shadowed: a rule that is not
/// ours, `from` a prefix covering one of our sources, consulted before ours
/// (a lower priority number, or the same priority earlier in the list: the
/// kernel keeps equal priorities in insertion order) makes `in_sync` false
/// and appears as [`Finding::Shadowed`], since the address's replies do not
/// follow symroute's table. apply cannot remove such a rule (it is not
/// symroute's); the finding says which one it is. The other findings
/// (unrepresentable tagged objects, deletes that cannot be exact) do not make
/// `in_sync` false: symroute leaves them alone by design, so a repeated apply
/// would not change them and status would never settle.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub plan: Plan,
    /// Objects the plan wants and the kernel lacks.
    pub missing: Vec<Op>,
    /// Objects of symroute's the plan does not want.
    pub extra: Vec<Op>,
    /// Every object symroute owns in the namespace now (in the plan's scope).
    pub owned_rules: Vec<Rule>,
    pub owned_routes: Vec<Route>,
    /// What symroute leaves alone, and rules of its that are shadowed.
    pub findings: Vec<Finding>,
    pub in_sync: bool,
    #[serde(skip)]
    pub snapshot: Snapshot,
}

impl StatusReport {
    /// The findings that say one of symroute's rules is shadowed.
    pub fn shadowed(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| matches!(f, Finding::Shadowed { .. }))
    }
}

pub fn status<K: Kernel>(
    k: &mut K,
    settings: &Settings,
    request: &PlanRequest,
) -> Result<StatusReport, EngineError> {
    let snap = k.snapshot()?;
    let Planned {
        plan,
        own,
        rules,
        routes,
        mut findings,
    } = plan_snapshot(&snap, settings, request)?;
    let (ops, ambiguous) = own.exact_deletes(diff(&plan.rules, &plan.routes, &rules, &routes));
    findings.extend(ambiguous);
    for ours in &plan.rules {
        if let Some(by) = shadowing(&snap, &own, ours) {
            findings.push(Finding::Shadowed {
                ours: ours.clone(),
                by: by.clone(),
            });
        }
    }
    let (missing, extra): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(Op::is_add);
    Ok(StatusReport {
        in_sync: missing.is_empty()
            && extra.is_empty()
            && !findings
                .iter()
                .any(|f| matches!(f, Finding::Shadowed { .. })),
        plan,
        missing,
        extra,
        owned_rules: rules,
        owned_routes: routes,
        findings,
        snapshot: snap,
    })
}

/// What clean removed, and what it left alone.
#[derive(Debug, Clone, Serialize)]
pub struct CleanReport {
    pub removed: Vec<Op>,
    /// Tagged objects symroute cannot remove exactly, and deletes of its own
    /// rules that could have matched one of them: left in place.
    pub findings: Vec<Finding>,
    #[serde(skip)]
    pub snapshot: Snapshot,
}

/// Deletions in the order a clean sends them: rules first (traffic stops
/// using the tables before they empty), then routes, gateway routes before
/// the connected routes they rely on.
fn removal_order(ops: &mut [Op]) {
    ops.sort_by_key(|op| match op {
        Op::DelRule(_) | Op::AddRule(_) => 0,
        Op::DelRoute(r) | Op::AddRoute(r) => 1 + u8::from(r.gateway.is_none()),
    });
}

/// The deletions that remove every object of `own` (see [`removal_order`]),
/// minus the deletes that could not be exact (returned as findings).
pub fn clean_ops(own: &Ownership) -> (Vec<Op>, Vec<Finding>) {
    let mut ops = every_object(own, &Snapshot::default());
    removal_order(&mut ops);
    own.exact_deletes(ops)
}

/// The selection of [`clean`]: every object of the space.
pub fn every_object(own: &Ownership, _snap: &Snapshot) -> Vec<Op> {
    own.rules
        .iter()
        .cloned()
        .map(Op::DelRule)
        .chain(own.routes.iter().cloned().map(Op::DelRoute))
        .collect()
}

/// Remove every rule and route that is symroute's (see [`crate::ownership`]),
/// nothing else. Keeps going past a failure so one bad object does not
/// strand the rest.
pub fn clean<K: Kernel>(k: &mut K, settings: &Settings) -> Result<CleanReport, EngineError> {
    let snap = k.snapshot()?;
    clean_in(k, snap, &Space::of(settings), every_object)
}

/// What [`clean_in`] sends, and what it leaves alone (the space's findings,
/// plus the deletes that could not be exact). Pure.
pub fn removal_plan(
    snap: &Snapshot,
    space: &Space,
    select: impl FnOnce(&Ownership, &Snapshot) -> Vec<Op>,
) -> (Vec<Op>, Vec<Finding>) {
    let own = classify(snap, space);
    let mut ops: Vec<Op> = select(&own, snap)
        .into_iter()
        .filter(|op| match op {
            Op::DelRule(r) => own.rules.contains(r),
            Op::DelRoute(r) => own.routes.contains(r),
            Op::AddRule(_) | Op::AddRoute(_) => false,
        })
        .collect();
    removal_order(&mut ops);
    let (ops, ambiguous) = own.exact_deletes(ops);
    let mut findings = own.findings;
    findings.extend(ambiguous);
    (ops, findings)
}

/// The one removal path of every writer: of the objects that are ours in
/// `space` (the one classification, [`classify`]), remove those `select`
/// picks from them (every one for [`clean`]; one CNI attachment's for its
/// DEL and GC), in [`removal_order`], never a delete that could match an
/// object symroute cannot describe exactly ([`Ownership::exact_deletes`]:
/// reported as findings instead). `snap` is the namespace's state, read
/// under the writer's lock. Keeps going past a failure (an object already
/// gone counts as removed by someone else, not as a failure) so one bad
/// object does not strand the rest; [`EngineError::Clean`] lists what was
/// removed and what failed.
///
/// `select` may only return deletions of objects of the ownership it is
/// given; anything else is dropped (a selection cannot widen the space).
pub fn clean_in<K: Kernel>(
    k: &mut K,
    snap: Snapshot,
    space: &Space,
    select: impl FnOnce(&Ownership, &Snapshot) -> Vec<Op>,
) -> Result<CleanReport, EngineError> {
    let (ops, findings) = removal_plan(&snap, space, select);
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for op in ops {
        match k.execute(&op) {
            Ok(()) => removed.push(op),
            Err(e) if is_already(&e, &op) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(CleanReport {
            removed,
            findings,
            snapshot: snap,
        })
    } else {
        Err(EngineError::Clean { removed, errors })
    }
}
