//! Reconcile, status and clean: read, plan, diff, carry out, and roll back on
//! failure. Works through the [`Kernel`] seam, so it is the same code against
//! a real namespace and against a fake.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::diff::{Op, diff};
use crate::kernel::{Kernel, KernelError, is_already};
use crate::model::{Route, Rule, Snapshot};
use crate::plan::{Plan, PlanError, PlanRequest, Selection, plan};
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
    /// The interrupt flag was set during the run; what it had done was
    /// undone.
    #[error("interrupted: rolled back {} change(s){}", .rolled_back.len(), interrupt_note(.rollback_errors))]
    Interrupted {
        /// Operations that had succeeded and were undone.
        rolled_back: Vec<Op>,
        /// Undo steps that failed in turn.
        rollback_errors: Vec<KernelError>,
    },
    /// Some removals failed; the rest were carried out.
    #[error("clean: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Clean(Vec<KernelError>),
}

fn rollback_note(errs: &[KernelError]) -> String {
    if errs.is_empty() {
        " (everything this run had changed was rolled back)".to_string()
    } else {
        format!(
            " (rollback incomplete: {})",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

fn interrupt_note(errs: &[KernelError]) -> String {
    if errs.is_empty() {
        String::new()
    } else {
        format!(
            "; rollback incomplete: {}",
            errs.iter()
                .map(|e| e.to_string())
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
    /// Checked between operations: once set, the run undoes what it did and
    /// returns [`EngineError::Interrupted`] (a signal handler sets it).
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
    #[serde(skip)]
    pub snapshot: Snapshot,
}

fn tagged(snap: &Snapshot, settings: &Settings) -> (Vec<Rule>, Vec<Route>) {
    (
        snap.tagged_rules(settings.protocol).cloned().collect(),
        snap.tagged_routes(settings.protocol).cloned().collect(),
    )
}

/// The tagged objects a plan is responsible for: all of them, or, for a
/// single-interface plan, those in its tables, through its link, or from its
/// addresses.
fn in_scope(
    plan: &Plan,
    request: &PlanRequest,
    rules: Vec<Rule>,
    routes: Vec<Route>,
) -> (Vec<Rule>, Vec<Route>) {
    if !matches!(request.selection, Selection::Only(_)) {
        return (rules, routes);
    }
    let tables: Vec<u32> = plan.interfaces.iter().map(|i| i.table).collect();
    let links: Vec<u32> = plan.interfaces.iter().map(|i| i.index).collect();
    let addrs: Vec<IpAddr> = plan
        .interfaces
        .iter()
        .flat_map(|i| i.addrs.iter().map(|a| a.addr()))
        .collect();
    (
        rules
            .into_iter()
            .filter(|r| {
                tables.contains(&r.table) || r.src.is_some_and(|s| addrs.contains(&s.addr()))
            })
            .collect(),
        routes
            .into_iter()
            .filter(|r| tables.contains(&r.table) || links.contains(&r.oif))
            .collect(),
    )
}

/// Read the namespace, waiting up to `wait` while an IPv6 global address is
/// still tentative (DAD): routes from such an address fail.
pub fn settled_snapshot<K: Kernel>(k: &mut K, wait: Duration) -> Result<Snapshot, KernelError> {
    let deadline = Instant::now() + wait;
    loop {
        let snap = k.snapshot()?;
        let tentative = snap
            .links
            .iter()
            .filter(|l| !l.loopback)
            .flat_map(|l| l.global_addrs())
            .any(|a| a.tentative);
        if !tentative || Instant::now() >= deadline {
            return Ok(snap);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Carry out `ops` in order; on the first failure undo what was done, in
/// reverse, and report both.
pub fn execute_all<K: Kernel>(k: &mut K, ops: &[Op]) -> Result<(), EngineError> {
    execute_interruptible(k, ops, None)
}

/// Undo `done`, last first: what was undone and the undo steps that failed.
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

/// [`execute_all`], also stopping (and undoing) as soon as `interrupt` is
/// set, checked before each operation.
pub fn execute_interruptible<K: Kernel>(
    k: &mut K,
    ops: &[Op],
    interrupt: Option<&AtomicBool>,
) -> Result<(), EngineError> {
    let mut done: Vec<&Op> = Vec::new();
    for op in ops {
        if interrupt.is_some_and(|f| f.load(Ordering::SeqCst)) {
            let (rolled_back, rollback_errors) = roll_back(k, &done);
            return Err(EngineError::Interrupted {
                rolled_back,
                rollback_errors,
            });
        }
        match k.execute(op) {
            Ok(()) => done.push(op),
            // Already there / already gone: someone (a concurrent run) got
            // there first; nothing of ours to undo.
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
    let snap = settled_snapshot(
        k,
        if opts.dry_run {
            Duration::ZERO
        } else {
            opts.dad_wait
        },
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
    let plan = plan(&snap, &opts.settings, &opts.request)?;
    let (rules, routes) = tagged(&snap, &opts.settings);
    let (rules, routes) = in_scope(&plan, &opts.request, rules, routes);
    let ops = diff(&plan.rules, &plan.routes, &rules, &routes);
    if !opts.dry_run {
        execute_interruptible(k, &ops, opts.interrupt.as_deref())?;
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
        snapshot: snap,
    })
}

/// Whether the kernel matches the plan.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub plan: Plan,
    /// Objects the plan wants and the kernel lacks.
    pub missing: Vec<Op>,
    /// Tagged objects the plan does not want.
    pub extra: Vec<Op>,
    /// Every object symroute owns in the namespace now.
    pub owned_rules: Vec<Rule>,
    pub owned_routes: Vec<Route>,
    pub in_sync: bool,
    #[serde(skip)]
    pub snapshot: Snapshot,
}

pub fn status<K: Kernel>(
    k: &mut K,
    settings: &Settings,
    request: &PlanRequest,
) -> Result<StatusReport, EngineError> {
    let snap = k.snapshot()?;
    let plan = plan(&snap, settings, request)?;
    let (rules, routes) = tagged(&snap, settings);
    let (rules, routes) = in_scope(&plan, request, rules, routes);
    let ops = diff(&plan.rules, &plan.routes, &rules, &routes);
    let (missing, extra): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|o| o.is_add());
    Ok(StatusReport {
        in_sync: missing.is_empty() && extra.is_empty(),
        plan,
        missing,
        extra,
        owned_rules: rules,
        owned_routes: routes,
        snapshot: snap,
    })
}

/// What clean removed.
#[derive(Debug, Clone, Serialize)]
pub struct CleanReport {
    pub removed: Vec<Op>,
    #[serde(skip)]
    pub snapshot: Snapshot,
}

/// Remove every rule and route carrying symroute's tag, nothing else. Keeps
/// going past a failure so one bad object does not strand the rest.
pub fn clean<K: Kernel>(k: &mut K, settings: &Settings) -> Result<CleanReport, EngineError> {
    let snap = k.snapshot()?;
    let (rules, routes) = tagged(&snap, settings);
    let ops: Vec<Op> = rules
        .into_iter()
        .map(Op::DelRule)
        .chain(routes.into_iter().map(Op::DelRoute))
        .collect();
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
            snapshot: snap,
        })
    } else {
        Err(EngineError::Clean(errors))
    }
}
