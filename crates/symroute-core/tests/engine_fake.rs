//! The engine (apply, status, clean, rollback) against [`FakeKernel`]:
//! hand-written scenarios first, then property tests on random namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use proptest::prelude::*;
use proptest::test_runner::Config;
use symroute_core::diff::{Op, diff};
use symroute_core::engine::{self, ApplyOptions, EngineError, execute_all};
use symroute_core::kernel::Kernel;
use symroute_core::model::{
    Family, IfAddr, Link, NextHop, RT_TABLE_MAIN, Route, RouteType, Rule, Scope, Snapshot,
};
use symroute_core::ownership::{Space, classify};
use symroute_core::plan::{GatewayHint, Plan, PlanError, PlanRequest, Selection, plan};
use symroute_core::settings::Settings;
use symroute_testkit::fake::FakeKernel;
use symroute_testkit::snap::{BOOT, TAG, conn, dflt, eth, global, hints, ip, lo, net, rule};

// ---------------------------------------------------------------- helpers

fn opts(request: PlanRequest) -> ApplyOptions {
    ApplyOptions {
        settings: Settings::default(),
        request,
        dry_run: false,
        dad_wait: Duration::ZERO,
        interrupt: None,
    }
}

fn with_settings(request: PlanRequest, settings: Settings) -> ApplyOptions {
    ApplyOptions {
        settings,
        ..opts(request)
    }
}

fn sorted<T: Ord + Clone>(v: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = v.into_iter().collect();
    v.sort();
    v
}

/// symroute's rules (as the ownership classification says), sorted.
fn tagged_rules(s: &Snapshot, settings: &Settings) -> Vec<Rule> {
    sorted(classify(s, &Space::of(settings)).rules)
}

fn tagged_routes(s: &Snapshot, settings: &Settings) -> Vec<Route> {
    sorted(classify(s, &Space::of(settings)).routes)
}

/// Every rule that is not symroute's (foreign or a finding), in the
/// kernel's list order.
fn foreign_rules(s: &Snapshot, settings: &Settings) -> Vec<Rule> {
    let own = classify(s, &Space::of(settings));
    s.rules
        .iter()
        .filter(|r| !own.rules.contains(r))
        .cloned()
        .collect()
}

fn foreign_routes(s: &Snapshot, settings: &Settings) -> Vec<Route> {
    let own = classify(s, &Space::of(settings));
    sorted(s.routes.iter().filter(|r| !own.routes.contains(r)).cloned())
}

/// The whole state, with rule and route order ignored (rollback re-adds a
/// deleted rule after the others of its priority).
fn canonical(s: &Snapshot) -> (Vec<Link>, Vec<Rule>, Vec<Route>) {
    (
        s.links.clone(),
        sorted(s.rules.iter().cloned()),
        sorted(s.routes.iter().cloned()),
    )
}

/// The seed: eth0 172.18.0.2/16 with the namespace's default route, eth1
/// 172.19.0.2/16.
fn seed() -> FakeKernel {
    let mut k = FakeKernel::with_links(vec![
        lo(),
        eth(2, "eth0", &["172.18.0.2/16"]),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ]);
    k.state.routes.push(Route {
        table: RT_TABLE_MAIN,
        protocol: BOOT,
        ..dflt(RT_TABLE_MAIN, "172.18.0.1", 2)
    });
    k
}

/// Every rule and route that is not symroute's (default settings) is in
/// `after` as it was in `before`.
fn assert_foreign_untouched(before: &Snapshot, after: &Snapshot) {
    let settings = Settings::default();
    assert_eq!(
        foreign_rules(after, &settings),
        foreign_rules(before, &settings),
        "foreign rules"
    );
    assert_eq!(
        foreign_routes(after, &settings),
        foreign_routes(before, &settings),
        "foreign routes"
    );
}

fn apply_ok(k: &mut FakeKernel, o: &ApplyOptions) -> engine::ApplyReport {
    engine::apply(k, o).unwrap_or_else(|e| panic!("apply failed: {e}"))
}

/// The tagged state equals the plan and status agrees.
fn assert_converged(k: &mut FakeKernel, o: &ApplyOptions, p: &Plan) {
    let tag = &o.settings;
    assert_eq!(tagged_rules(&k.state, tag), p.rules, "rules read back");
    assert_eq!(tagged_routes(&k.state, tag), p.routes, "routes read back");
    let st = engine::status(k, &o.settings, &o.request).unwrap();
    assert!(st.in_sync, "missing {:?}, extra {:?}", st.missing, st.extra);
    assert_eq!(st.plan.rules, p.rules);
    assert_eq!(st.plan.routes, p.routes);
}

// -------------------------------------------------------------- scenarios

#[test]
fn apply_on_a_fresh_two_homed_namespace() {
    let mut k = seed();
    let before = k.state.clone();
    let o = opts(hints(&[("eth1", "172.19.0.1")]));
    let rep = apply_ok(&mut k, &o);
    assert_eq!(
        rep.plan.rules,
        vec![rule("172.18.0.2", 10000), rule("172.19.0.2", 10001)]
    );
    assert_eq!(
        rep.plan.routes,
        sorted([
            conn(10000, "172.18.0.0/16", 2, "172.18.0.2"),
            dflt(10000, "172.18.0.1", 2),
            conn(10001, "172.19.0.0/16", 3, "172.19.0.2"),
            dflt(10001, "172.19.0.1", 3),
        ])
    );
    assert_eq!(rep.ops.len(), 6);
    // Routes before rules: a rule never points at an empty table.
    assert!(rep.ops[..4].iter().all(|o| matches!(o, Op::AddRoute(_))));
    assert!(rep.ops[4..].iter().all(|o| matches!(o, Op::AddRule(_))));
    assert_eq!(k.log, rep.ops);
    assert_foreign_untouched(&before, &k.state);
    assert_converged(&mut k, &o, &rep.plan);
    // The kernel's rule list: ours between local and main.
    let prios: Vec<u32> = k
        .state
        .rules
        .iter()
        .filter(|r| r.family == Family::V4)
        .map(|r| r.priority)
        .collect();
    assert_eq!(prios, [0, 3000, 3000, 32766, 32767]);
}

#[test]
fn second_apply_changes_nothing() {
    let mut k = seed();
    let o = opts(hints(&[("eth1", "172.19.0.1")]));
    apply_ok(&mut k, &o);
    let calls = k.calls();
    let state = k.state.clone();
    let rep = apply_ok(&mut k, &o);
    assert!(rep.ops.is_empty(), "{:?}", rep.ops);
    assert_eq!(k.calls(), calls);
    assert_eq!(k.state, state);
}

#[test]
fn dry_run_plans_without_touching_the_kernel() {
    let mut k = seed();
    let before = k.state.clone();
    let o = ApplyOptions {
        dry_run: true,
        ..opts(PlanRequest::default())
    };
    let rep = apply_ok(&mut k, &o);
    assert!(rep.dry_run);
    assert_eq!(rep.ops.len(), 5);
    assert_eq!(k.calls(), 0);
    assert_eq!(k.state, before);
}

#[test]
fn status_reports_missing_and_extra_objects() {
    let mut k = seed();
    k.state.rules.insert(1, rule("10.99.0.1", 10007));
    let o = opts(PlanRequest::default());
    let st = engine::status(&mut k, &o.settings, &o.request).unwrap();
    assert!(!st.in_sync);
    assert_eq!(st.missing.len(), 5);
    assert!(st.missing.iter().all(Op::is_add));
    assert_eq!(st.extra, vec![Op::DelRule(rule("10.99.0.1", 10007))]);
    assert_eq!(st.owned_rules, vec![rule("10.99.0.1", 10007)]);
    assert!(st.owned_routes.is_empty());
    // The leftover's table is avoided.
    assert_eq!(st.plan.interfaces[0].table, 10000);
    let rep = apply_ok(&mut k, &o);
    assert_converged(&mut k, &o, &rep.plan);
}

#[test]
fn plan_error_changes_nothing() {
    let mut k = seed();
    let before = k.state.clone();
    let e = engine::apply(&mut k, &opts(hints(&[("eth7", "172.19.0.1")]))).unwrap_err();
    assert!(
        matches!(e, EngineError::Plan(PlanError::UnknownInterface { .. })),
        "{e}"
    );
    assert_eq!(k.calls(), 0);
    assert_eq!(k.state, before);
}

#[test]
fn a_namespace_that_became_single_homed_loses_its_objects() {
    let mut k = seed();
    let o = opts(PlanRequest::default());
    apply_ok(&mut k, &o);
    k.remove_link(3);
    let rep = apply_ok(&mut k, &o);
    assert!(rep.plan.unmanaged_reason.is_some());
    assert!(tagged_rules(&k.state, &Settings::default()).is_empty());
    assert!(tagged_routes(&k.state, &Settings::default()).is_empty());
    assert_converged(&mut k, &o, &rep.plan);
}

#[test]
fn link_down_keeps_rules_and_up_brings_routes_back() {
    let mut k = seed();
    let o = opts(hints(&[("eth1", "172.19.0.1")]));
    let first = apply_ok(&mut k, &o);
    // The kernel deletes every route of the link; our rules stay.
    k.set_link_up(3, false);
    assert!(k.state.routes.iter().all(|r| r.oif != 3));
    let st = engine::status(&mut k, &o.settings, &o.request).unwrap();
    assert!(st.in_sync, "a down link wants no routes: {:?}", st.missing);
    let rep = apply_ok(&mut k, &o);
    assert!(rep.ops.is_empty());
    k.set_link_up(3, true);
    let st = engine::status(&mut k, &o.settings, &o.request).unwrap();
    assert_eq!(st.missing.len(), 2, "{:?}", st.missing);
    let rep = apply_ok(&mut k, &o);
    assert_eq!(rep.plan, first.plan);
    assert_converged(&mut k, &o, &rep.plan);
}

#[test]
fn renumbered_interface_keeps_its_table_and_moves_its_objects() {
    let mut k = seed();
    let o = opts(hints(&[("eth1", "172.19.0.1")]));
    apply_ok(&mut k, &o);
    // The kernel flushes the IPv4 routes of a link losing its last address,
    // so add the new address first.
    k.add_addr(3, global("10.5.0.2/24"));
    k.remove_addr(3, net("172.19.0.2/16"));
    let o = opts(hints(&[("eth1", "10.5.0.1")]));
    let rep = apply_ok(&mut k, &o);
    let eth1 = rep
        .plan
        .interfaces
        .iter()
        .find(|i| i.name == "eth1")
        .unwrap();
    assert_eq!(eth1.table, 10001);
    assert!(rep.ops.contains(&Op::DelRule(rule("172.19.0.2", 10001))));
    assert_converged(&mut k, &o, &rep.plan);
}

#[test]
fn interfaces_keep_their_tables_when_ifindex_order_changes() {
    let mut k = seed();
    let o = opts(PlanRequest::default());
    apply_ok(&mut k, &o);
    // eth0 is recreated with a higher ifindex than eth1 (a reconnect).
    k.remove_link(2);
    let mut again = eth(9, "eth0", &[]);
    again.addrs.clear();
    k.state.links.push(again);
    k.add_addr(9, global("172.18.0.2/16"));
    let rep = apply_ok(&mut k, &o);
    let tables: BTreeMap<&str, u32> = rep
        .plan
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.table))
        .collect();
    assert_eq!(tables, BTreeMap::from([("eth0", 10000), ("eth1", 10001)]));
    assert_converged(&mut k, &o, &rep.plan);
}

#[test]
fn a_stale_default_holding_the_key_is_replaced() {
    let mut k = seed();
    apply_ok(&mut k, &opts(hints(&[("eth1", "172.19.0.1")])));
    let o = opts(hints(&[("eth1", "172.19.0.254")]));
    let rep = apply_ok(&mut k, &o);
    assert_eq!(
        rep.ops,
        vec![
            Op::DelRoute(dflt(10001, "172.19.0.1", 3)),
            Op::AddRoute(dflt(10001, "172.19.0.254", 3)),
        ]
    );
    assert_converged(&mut k, &o, &rep.plan);
}

#[test]
fn identical_address_sets_without_routes_settle_by_the_second_apply() {
    // Two down links with the same single address: their rules differ only
    // in the table, so the state cannot tell which table was whose. A
    // leftover gave eth0 10001 and eth1 a fresh 10000; the next plan sees
    // {10000, 10001} for both and hands them out in ifindex order: one swap,
    // then stable. (A known limit of telling tables apart by rules alone.)
    let mut e0 = eth(2, "eth0", &["10.1.0.5/24"]);
    let mut e1 = eth(3, "eth1", &["10.1.0.5/24"]);
    e0.up = false;
    e1.up = false;
    let mut k = FakeKernel::with_links(vec![lo(), e0, e1]);
    k.execute(&Op::AddRule(rule("10.1.0.5", 10001))).unwrap();
    let o = opts(PlanRequest::default());
    let first = apply_ok(&mut k, &o);
    let tables = |p: &Plan| -> Vec<u32> { p.interfaces.iter().map(|i| i.table).collect() };
    assert_eq!(tables(&first.plan), [10001, 10000]);
    let second = apply_ok(&mut k, &o);
    assert_eq!(tables(&second.plan), [10000, 10001]);
    // Same rules either way: the swap changes nothing in the kernel.
    assert!(second.ops.is_empty(), "{:?}", second.ops);
    let third = apply_ok(&mut k, &o);
    assert_eq!(third.plan, second.plan);
    assert_converged(&mut k, &o, &third.plan);
}

#[test]
fn gateway_routes_work_when_main_lost_the_connected_route() {
    // The CNI sbr plugin moves a link's routes out of main: the gateway of
    // eth1 is then only reachable through the connected route symroute puts
    // in eth1's own table, which must be there first.
    let mut k = seed();
    k.state
        .routes
        .retain(|r| !(r.table == RT_TABLE_MAIN && r.oif == 3));
    let o = opts(hints(&[("eth1", "172.19.0.1")]));
    let rep = apply_ok(&mut k, &o);
    assert_converged(&mut k, &o, &rep.plan);
}

#[test]
fn failure_at_every_step_rolls_everything_back() {
    // Leftovers of an earlier run: a stale default holding a wanted key, a
    // rule and a route of a table no longer wanted.
    let make = || {
        let mut k = seed();
        k.state.rules.insert(1, rule("172.19.0.2", 10001));
        k.state.rules.insert(1, rule("172.19.0.9", 10004));
        k.state
            .routes
            .push(conn(10001, "172.19.0.0/16", 3, "172.19.0.2"));
        k.state.routes.push(dflt(10001, "172.19.0.254", 3));
        k.state
            .routes
            .push(conn(10004, "172.19.0.0/16", 3, "172.19.0.2"));
        k
    };
    let o = opts(hints(&[("eth1", "172.19.0.1")]));
    let ops = engine::apply(&mut make(), &o).unwrap().ops;
    assert!(ops.len() >= 6, "{ops:?}");
    assert!(matches!(ops[0], Op::DelRoute(_)));
    for k_fail in 0..ops.len() {
        let mut k = make();
        k.fail_at = Some(k_fail);
        let before = k.state.clone();
        let e = engine::apply(&mut k, &o).unwrap_err();
        let EngineError::Apply {
            failed,
            rolled_back,
            rollback_errors,
        } = &e
        else {
            panic!("step {k_fail}: {e}");
        };
        assert_eq!(failed.what, ops[k_fail].to_string());
        assert_eq!(failed.errno(), Some(libc::EPERM));
        let mut undone: Vec<Op> = ops[..k_fail].to_vec();
        undone.reverse();
        assert_eq!(rolled_back, &undone);
        assert!(rollback_errors.is_empty());
        assert!(e.to_string().contains("rolled back"), "{e}");
        assert_eq!(canonical(&k.state), canonical(&before), "step {k_fail}");
        assert_eq!(
            foreign_rules(&k.state, &Settings::default()),
            foreign_rules(&before, &Settings::default())
        );
        // The failing op, then one inverse per op done.
        assert_eq!(k.calls(), 2 * k_fail + 1);
    }
}

#[test]
fn rollback_restores_gateway_routes_after_their_connected_routes() {
    // Main lost eth1's routes (sbr moved them): eth1's gateway is reachable
    // only through the connected route in symroute's table. The namespace
    // is now single-homed, so every leftover goes; a failure on the last
    // deletion must put everything back, which the kernel allows only
    // connected route first.
    let make = || {
        let mut k = FakeKernel::with_links(vec![lo(), eth(3, "eth1", &["172.19.0.2/16"])]);
        k.state.routes.retain(|r| r.oif != 3);
        for op in [
            Op::AddRoute(conn(10004, "172.19.0.0/16", 3, "172.19.0.2")),
            Op::AddRoute(dflt(10004, "172.19.0.1", 3)),
            Op::AddRoute(conn(10005, "172.19.0.0/16", 3, "172.19.0.2")),
            Op::AddRule(rule("172.19.0.2", 10004)),
        ] {
            k.execute(&op).unwrap();
        }
        k.log.clear();
        k
    };
    let o = opts(PlanRequest::default());
    let ops = engine::apply(&mut make(), &o).unwrap().ops;
    assert_eq!(ops.len(), 4);
    for at in 0..ops.len() {
        let mut k = make();
        let before = k.state.clone();
        k.fail_at = Some(at);
        let e = engine::apply(&mut k, &o).unwrap_err();
        let EngineError::Apply {
            rollback_errors, ..
        } = &e
        else {
            panic!("{e}")
        };
        assert!(rollback_errors.is_empty(), "step {at}: {e}");
        assert_eq!(canonical(&k.state), canonical(&before));
    }
}

#[test]
fn a_failing_undo_is_reported() {
    let mut k = seed();
    k.fail_at = Some(2);
    k.fail_count = 2;
    let e = engine::apply(&mut k, &opts(PlanRequest::default())).unwrap_err();
    let EngineError::Apply {
        rolled_back,
        rollback_errors,
        ..
    } = &e
    else {
        panic!("{e}");
    };
    assert_eq!(rollback_errors.len(), 1);
    assert_eq!(rolled_back.len(), 1);
    assert!(e.to_string().contains("rollback incomplete"), "{e}");
}

#[test]
fn already_there_and_already_gone_are_not_failures() {
    let mut k = seed();
    k.state.rules.insert(1, rule("172.18.0.2", 10000));
    let ops = vec![
        Op::AddRule(rule("172.18.0.2", 10000)),
        Op::DelRule(rule("172.18.0.3", 10000)),
        Op::DelRoute(conn(10000, "172.18.0.0/16", 2, "172.18.0.2")),
        Op::AddRule(rule("172.19.0.2", 10001)),
    ];
    execute_all(&mut k, &ops).unwrap();
    assert_eq!(k.calls(), 4);
    assert_eq!(
        tagged_rules(&k.state, &Settings::default()),
        vec![rule("172.18.0.2", 10000), rule("172.19.0.2", 10001)]
    );
    // What was already there is not undone on a later failure.
    let mut k = seed();
    k.state.rules.insert(1, rule("172.18.0.2", 10000));
    k.fail_at = Some(2);
    let e = execute_all(
        &mut k,
        &[
            Op::AddRule(rule("172.18.0.2", 10000)),
            Op::AddRule(rule("172.19.0.2", 10001)),
            Op::AddRule(rule("172.20.0.2", 10002)),
        ],
    )
    .unwrap_err();
    let EngineError::Apply { rolled_back, .. } = e else {
        panic!("{e}")
    };
    assert_eq!(rolled_back, vec![Op::AddRule(rule("172.19.0.2", 10001))]);
    assert_eq!(
        tagged_rules(&k.state, &Settings::default()),
        vec![rule("172.18.0.2", 10000)]
    );
}

#[test]
fn clean_removes_only_tagged_objects() {
    let mut k = seed();
    // Someone else's rule and route in the band, and a rule of ours from an
    // earlier run outside the band.
    k.state.rules.insert(
        1,
        Rule {
            protocol: BOOT,
            ..rule("172.18.0.2", 10000)
        },
    );
    k.state.routes.push(Route {
        protocol: BOOT,
        ..conn(10000, "192.0.2.0/24", 2, "172.18.0.2")
    });
    k.state.rules.insert(1, rule("172.18.0.2", 200));
    let o = opts(hints(&[("eth1", "172.19.0.1")]));
    let rep = apply_ok(&mut k, &o);
    assert_eq!(rep.plan.interfaces[0].table, 10001);
    let before = k.state.clone();
    let owned = tagged_rules(&before, &Settings::default()).len()
        + tagged_routes(&before, &Settings::default()).len();
    let cleaned = engine::clean(&mut k, &o.settings).unwrap();
    assert_eq!(cleaned.removed.len(), owned);
    assert!(tagged_rules(&k.state, &Settings::default()).is_empty());
    assert!(tagged_routes(&k.state, &Settings::default()).is_empty());
    assert_foreign_untouched(&before, &k.state);
    assert!(
        engine::clean(&mut k, &o.settings)
            .unwrap()
            .removed
            .is_empty()
    );
}

#[test]
fn clean_in_removes_only_the_selection_and_never_widens_the_space() {
    let mut k = seed();
    let o = opts(PlanRequest::default());
    apply_ok(&mut k, &o);
    let space = Space::of(&o.settings);
    let ours = tagged_rules(&k.state, &o.settings);
    assert!(ours.len() >= 2, "the seed gives two interfaces");
    // A foreign object (main's default route) and an add smuggled into the
    // selection are dropped; of ours, only the one rule selected goes.
    let foreign: Vec<Op> = k.state.main_defaults().cloned().map(Op::DelRoute).collect();
    assert!(!foreign.is_empty());
    let picked = ours[1].clone();
    let snap = k.snapshot().unwrap();
    let rep = engine::clean_in(&mut k, snap, &space, |own, _| {
        assert!(own.rules.contains(&picked));
        let mut sel = foreign.clone();
        sel.push(Op::AddRule(picked.clone()));
        sel.push(Op::DelRule(picked.clone()));
        sel
    })
    .unwrap();
    assert_eq!(rep.removed, vec![Op::DelRule(picked.clone())]);
    let left = tagged_rules(&k.state, &o.settings);
    assert_eq!(left.len(), ours.len() - 1);
    assert!(!left.contains(&picked));
    assert_eq!(k.state.main_defaults().count(), foreign.len());
}

#[test]
fn clean_in_sends_rules_before_routes_and_gateway_routes_first() {
    let mut k = seed();
    let o = opts(PlanRequest::default());
    apply_ok(&mut k, &o);
    let snap = k.snapshot().unwrap();
    // The selection in the worst order: routes (connected first), then rules.
    let rep = engine::clean_in(&mut k, snap, &Space::of(&o.settings), |own, _| {
        let mut routes = own.routes.clone();
        routes.sort_by_key(|r| r.gateway.is_some());
        routes
            .into_iter()
            .map(Op::DelRoute)
            .chain(own.rules.iter().cloned().map(Op::DelRule))
            .collect()
    })
    .unwrap();
    let rank = |op: &Op| match op {
        Op::DelRule(_) => 0,
        Op::DelRoute(r) if r.gateway.is_some() => 1,
        _ => 2,
    };
    let ranks: Vec<u8> = rep.removed.iter().map(rank).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    assert!(ranks.contains(&1) && ranks.contains(&2), "{ranks:?}");
    assert!(tagged_rules(&k.state, &o.settings).is_empty());
    assert!(tagged_routes(&k.state, &o.settings).is_empty());
}

#[test]
fn clean_keeps_going_past_a_failure() {
    let mut k = seed();
    let o = opts(PlanRequest::default());
    apply_ok(&mut k, &o);
    let before = tagged_rules(&k.state, &Settings::default()).len()
        + tagged_routes(&k.state, &Settings::default()).len();
    k.fail_at = Some(k.calls());
    let e = engine::clean(&mut k, &o.settings).unwrap_err();
    let EngineError::Clean { removed, errors } = &e else {
        panic!("{e}")
    };
    assert_eq!(errors.len(), 1);
    // Everything but the failed one was removed, and the error says so.
    assert_eq!(removed.len(), before - 1);
    assert_eq!(errors[0].errno(), Some(libc::EPERM));
    assert_eq!(
        tagged_rules(&k.state, &Settings::default()).len()
            + tagged_routes(&k.state, &Settings::default()).len(),
        1
    );
    assert_eq!(engine::clean(&mut k, &o.settings).unwrap().removed.len(), 1);
}

#[test]
fn apply_waits_for_duplicate_address_detection() {
    let links = || {
        let mut e1 = eth(3, "eth1", &[]);
        e1.addrs.push(IfAddr {
            tentative: true,
            ..global("2001:db8:2::2/64")
        });
        vec![lo(), eth(2, "eth0", &["172.18.0.2/16"]), e1]
    };
    let mut k = FakeKernel::with_links(links());
    k.dad_settles_after = Some(2);
    let o = ApplyOptions {
        dad_wait: Duration::from_secs(5),
        ..opts(PlanRequest::default())
    };
    let rep = apply_ok(&mut k, &o);
    assert!(rep.tentative.is_empty());
    assert_eq!(k.snapshots, 3);
    // Without a wait, the plan says which addresses are still tentative.
    let mut k = FakeKernel::with_links(links());
    let rep = apply_ok(&mut k, &opts(PlanRequest::default()));
    assert_eq!(rep.tentative, vec![ip("2001:db8:2::2")]);
    assert_eq!(k.snapshots, 1);
}

#[test]
fn diagnosis_is_not_emulated() {
    let mut k = seed();
    let e = k
        .route_get(&symroute_core::kernel::RouteQuery {
            dst: ip("192.0.2.1"),
            src: None,
            iif: None,
        })
        .unwrap_err();
    assert!(e.to_string().contains("unsupported in fake"), "{e}");
}

// ------------------------------------------------------ random namespaces

const V4_NETS: [(&str, u8); 5] = [
    ("10.1.0.0", 24),
    ("10.1.0.0", 16),
    ("172.18.0.0", 16),
    ("192.168.7.0", 24),
    ("203.0.113.0", 32),
];
const V6_NETS: [(&str, u8); 4] = [
    ("2001:db8:1::", 64),
    ("2001:db8:2::", 64),
    ("fd00:7::", 64),
    ("2001:db8:9::", 128),
];
/// Host numbers of addresses; gateways use others (1, 7, 8).
const HOSTS: std::ops::RangeInclusive<u8> = 2..=6;
const GW_HOSTS: [u8; 3] = [1, 7, 8];
const BAND_TABLES: [u32; 6] = [10000, 10001, 10002, 10003, 10005, 200];

fn plus(base: IpAddr, n: u8) -> IpAddr {
    match base {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) + u32::from(n)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) + u128::from(n)).into()),
    }
}

fn pool_net(v6: bool, prefix: usize, n: u8) -> IpNet {
    let (base, len) = if v6 {
        V6_NETS[prefix % V6_NETS.len()]
    } else {
        V4_NETS[prefix % V4_NETS.len()]
    };
    IpNet::new(plus(ip(base), n), len).unwrap()
}

fn fam(v6: bool) -> Family {
    if v6 { Family::V6 } else { Family::V4 }
}

#[derive(Debug, Clone)]
struct AddrSpec {
    v6: bool,
    prefix: usize,
    host: u8,
    /// 0-3 settled, 4 tentative, 5 DAD failed (IPv6 only).
    state: u8,
}

#[derive(Debug, Clone)]
struct LinkSpec {
    up: bool,
    addrs: Vec<AddrSpec>,
    link_local: bool,
    /// Main lost this link's routes (the CNI sbr plugin moves them away).
    strip_main: bool,
}

/// A gateway on one of a link's prefixes, or fe80::1.
#[derive(Debug, Clone)]
struct GwSpec {
    link: usize,
    v6: bool,
    pick: usize,
    gw_host: usize,
    link_local: bool,
}

#[derive(Debug, Clone)]
struct MainDefaultSpec {
    gw: GwSpec,
    metric: usize,
    protocol: usize,
    multipath_with: Option<GwSpec>,
}

#[derive(Debug, Clone)]
struct ForeignRuleSpec {
    v6: bool,
    priority: usize,
    src: Option<(usize, u8, bool)>,
    table: usize,
    protocol: usize,
    other_selectors: bool,
}

#[derive(Debug, Clone)]
struct ForeignRouteSpec {
    v6: bool,
    table: usize,
    dst: usize,
    via: Option<usize>,
    metric: usize,
    protocol: usize,
}

#[derive(Debug, Clone)]
struct TaggedRuleSpec {
    v6: bool,
    prefix: usize,
    host: u8,
    table: usize,
    priority: usize,
}

#[derive(Debug, Clone)]
struct TaggedRouteSpec {
    gw: GwSpec,
    default: bool,
    table: usize,
}

#[derive(Debug, Clone)]
struct Scenario {
    links: Vec<LinkSpec>,
    order: Vec<u32>,
    defaults: Vec<MainDefaultSpec>,
    foreign_rules: Vec<ForeignRuleSpec>,
    foreign_routes: Vec<ForeignRouteSpec>,
    tagged_rules: Vec<TaggedRuleSpec>,
    tagged_routes: Vec<TaggedRouteSpec>,
    hints: Vec<GwSpec>,
    all: bool,
    small_band: bool,
}

fn addr_spec() -> impl Strategy<Value = AddrSpec> {
    (any::<bool>(), 0usize..5, HOSTS, 0u8..6).prop_map(|(v6, prefix, host, state)| AddrSpec {
        v6,
        prefix,
        host,
        state,
    })
}

fn link_spec() -> impl Strategy<Value = LinkSpec> {
    (
        prop::bool::weighted(0.8),
        prop::collection::vec(addr_spec(), 0..=3),
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(up, addrs, link_local, strip_main)| LinkSpec {
            up,
            addrs,
            link_local,
            strip_main,
        })
}

fn gw_spec() -> impl Strategy<Value = GwSpec> {
    (
        0usize..4,
        any::<bool>(),
        0usize..3,
        0usize..3,
        any::<bool>(),
    )
        .prop_map(|(link, v6, pick, gw_host, link_local)| GwSpec {
            link,
            v6,
            pick,
            gw_host,
            link_local,
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let defaults = prop::collection::vec(
        (
            gw_spec(),
            0usize..3,
            0usize..3,
            prop::option::weighted(0.2, gw_spec()),
        )
            .prop_map(|(gw, metric, protocol, multipath_with)| MainDefaultSpec {
                gw,
                metric,
                protocol,
                multipath_with,
            }),
        0..=3,
    );
    let foreign_rules = prop::collection::vec(
        (
            any::<bool>(),
            0usize..6,
            prop::option::of((0usize..5, HOSTS, any::<bool>())),
            0usize..8,
            0usize..4,
            prop::bool::weighted(0.2),
        )
            .prop_map(|(v6, priority, src, table, protocol, other_selectors)| {
                ForeignRuleSpec {
                    v6,
                    priority,
                    src,
                    table,
                    protocol,
                    other_selectors,
                }
            }),
        0..=4,
    );
    let foreign_routes = prop::collection::vec(
        (
            any::<bool>(),
            0usize..6,
            0usize..4,
            prop::option::of(0usize..4),
            0usize..2,
            0usize..4,
        )
            .prop_map(|(v6, table, dst, via, metric, protocol)| ForeignRouteSpec {
                v6,
                table,
                dst,
                via,
                metric,
                protocol,
            }),
        0..=4,
    );
    let tagged_rules = prop::collection::vec(
        (any::<bool>(), 0usize..5, HOSTS, 0usize..6, 0usize..3).prop_map(
            |(v6, prefix, host, table, priority)| TaggedRuleSpec {
                v6,
                prefix,
                host,
                table,
                priority,
            },
        ),
        0..=4,
    );
    let tagged_routes =
        prop::collection::vec(
            (gw_spec(), any::<bool>(), 0usize..6)
                .prop_map(|(gw, default, table)| TaggedRouteSpec { gw, default, table }),
            0..=4,
        );
    (
        prop::collection::vec(link_spec(), 1..=4),
        Just(vec![0u32, 1, 2, 3]).prop_shuffle(),
        defaults,
        foreign_rules,
        foreign_routes,
        tagged_rules,
        tagged_routes,
        prop::collection::vec(gw_spec(), 0..=3),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(
                links,
                order,
                defaults,
                foreign_rules,
                foreign_routes,
                tagged_rules,
                tagged_routes,
                hints,
                all,
                small_band,
            )| Scenario {
                links,
                order,
                defaults,
                foreign_rules,
                foreign_routes,
                tagged_rules,
                tagged_routes,
                hints,
                all,
                small_band,
            },
        )
}

/// Links other than loopback, in creation order.
fn eths(s: &Snapshot) -> Vec<&Link> {
    s.links.iter().filter(|l| !l.loopback).collect()
}

fn make_addr(a: &AddrSpec) -> IfAddr {
    let v6 = a.v6;
    IfAddr {
        net: pool_net(v6, a.prefix, a.host),
        global: true,
        tentative: v6 && a.state >= 4,
        dad_failed: v6 && a.state == 5,
    }
}

/// Whether the kernel would take this address on this link.
fn addr_fits(l: &Link, a: &IfAddr) -> bool {
    match a.family() {
        Family::V4 => !l.addrs.iter().any(|x| x.net == a.net),
        Family::V6 => !l.addrs.iter().any(|x| x.addr() == a.addr()),
    }
}

fn make_link(index: u32, name: String, spec: &LinkSpec) -> Link {
    let mut l = Link {
        index,
        name,
        mac: Some(format!("02:42:ac:11:00:{index:02x}")),
        up: spec.up,
        loopback: false,
        addrs: Vec::new(),
    };
    for a in spec.addrs.iter().map(make_addr) {
        if addr_fits(&l, &a) {
            l.addrs.push(a);
        }
    }
    if spec.link_local {
        l.addrs.push(IfAddr {
            net: IpNet::new(plus(ip("fe80::42:0"), index as u8), 64).unwrap(),
            global: false,
            tentative: false,
            dad_failed: false,
        });
    }
    l
}

/// A gateway for `g` on the current links: (link index, gateway, onlink).
fn resolve_gw(s: &Snapshot, g: &GwSpec) -> Option<(u32, IpAddr, bool)> {
    let links = eths(s);
    if links.is_empty() {
        return None;
    }
    let l = links[g.link % links.len()];
    let family = fam(g.v6);
    let addrs: Vec<&IfAddr> = l.global_addrs().filter(|a| a.family() == family).collect();
    if addrs.is_empty() {
        return None;
    }
    if g.v6 && g.link_local {
        return Some((l.index, ip("fe80::1"), false));
    }
    let a = addrs[g.pick % addrs.len()];
    let gw = plus(a.net.trunc().addr(), GW_HOSTS[g.gw_host % GW_HOSTS.len()]);
    let onlink = a.net.prefix_len() == family.host_prefix();
    Some((l.index, gw, onlink))
}

/// Valid gateway hints for the current links: each names a link with a
/// global address of the family, on one of its prefixes (or fe80::1), at
/// most one per link and family.
fn make_hints(s: &Snapshot, specs: &[GwSpec]) -> Vec<GatewayHint> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for g in specs {
        let Some((index, gw, onlink)) = resolve_gw(s, g) else {
            continue;
        };
        if onlink || !seen.insert((index, Family::of(&gw))) {
            continue;
        }
        out.push(GatewayHint {
            ifname: s.link(index).unwrap().name.clone(),
            gateway: gw,
        });
    }
    out
}

fn insert_rule(s: &mut Snapshot, r: Rule) {
    let at = s
        .rules
        .iter()
        .position(|x| x.family == r.family && x.priority > r.priority)
        .unwrap_or(s.rules.len());
    s.rules.insert(at, r);
}

fn has_key(s: &Snapshot, r: &Route) -> bool {
    s.routes.iter().any(|x| x.key() == r.key())
}

fn default_dst(family: Family) -> IpNet {
    match family {
        Family::V4 => net("0.0.0.0/0"),
        Family::V6 => net("::/0"),
    }
}

fn build(sc: &Scenario) -> (FakeKernel, ApplyOptions) {
    let mut links = vec![lo()];
    for (i, spec) in sc.links.iter().enumerate() {
        links.push(make_link(2 + sc.order[i], format!("eth{i}"), spec));
    }
    let mut k = FakeKernel::with_links(links);
    let stripped: Vec<u32> = sc
        .links
        .iter()
        .enumerate()
        .filter(|(_, l)| l.strip_main)
        .map(|(i, _)| 2 + sc.order[i])
        .collect();
    k.state
        .routes
        .retain(|r| !(r.table == RT_TABLE_MAIN && stripped.contains(&r.oif)));
    let usable = |s: &Snapshot, index: u32| {
        s.link(index).is_some_and(|l| l.up) && !stripped.contains(&index)
    };

    // Main's default routes, as Docker, DHCP or router advertisements leave them.
    for d in &sc.defaults {
        let Some((oif, gw, onlink)) = resolve_gw(&k.state, &d.gw) else {
            continue;
        };
        if !usable(&k.state, oif) {
            continue;
        }
        let family = Family::of(&gw);
        let metric = match family {
            Family::V4 => [0, 100, 600][d.metric],
            Family::V6 => [1024, 100, 1024][d.metric],
        };
        let protocol = match family {
            Family::V4 => [BOOT, 4, 16][d.protocol],
            Family::V6 => [9, BOOT, 9][d.protocol],
        };
        let mut r = Route {
            table: RT_TABLE_MAIN,
            dst: default_dst(family),
            gateway: Some(gw),
            oif,
            prefsrc: None,
            scope: Scope::Universe,
            kind: RouteType::UNICAST,
            metric,
            onlink,
            protocol,
            multipath: Vec::new(),
        };
        if let Some(other) = &d.multipath_with
            && let Some((oif2, gw2, onlink2)) = resolve_gw(&k.state, other)
            && family == Family::V4
            && Family::of(&gw2) == family
            && oif2 != oif
            && usable(&k.state, oif2)
            && !onlink
            && !onlink2
        {
            r.gateway = None;
            r.oif = 0;
            r.multipath = vec![
                NextHop {
                    oif,
                    gateway: Some(gw),
                },
                NextHop {
                    oif: oif2,
                    gateway: Some(gw2),
                },
            ];
        }
        if !has_key(&k.state, &r) {
            k.state.routes.push(r);
        }
    }

    // Someone else's rules, some pointing into the band.
    for f in &sc.foreign_rules {
        let family = fam(f.v6);
        let src = f.src.map(|(prefix, host, as_host)| {
            let n = pool_net(f.v6, prefix, host);
            if as_host {
                IpNet::new(n.addr(), family.host_prefix()).unwrap()
            } else {
                n.trunc()
            }
        });
        insert_rule(
            &mut k.state,
            Rule {
                family,
                priority: [50, 100, 2999, 3000, 5210, 32000][f.priority],
                src,
                table: [52, 100, 200, 10000, 10001, 10002, 10005, 51820][f.table],
                protocol: [0, BOOT, 4, 80][f.protocol],
                other_selectors: f.other_selectors,
            },
        );
    }

    // Someone else's routes, some in band tables.
    for f in &sc.foreign_routes {
        let family = fam(f.v6);
        let dst = match family {
            Family::V4 => ["0.0.0.0/0", "192.0.2.0/24", "10.1.0.0/24", "172.18.0.0/16"][f.dst],
            Family::V6 => ["::/0", "2001:db8:77::/64", "2001:db8:1::/64", "::/0"][f.dst],
        };
        let oif = f.via.and_then(|v| {
            let ls = eths(&k.state);
            let l = ls[v % ls.len()];
            l.up.then_some(l.index)
        });
        let r = Route {
            table: [100, RT_TABLE_MAIN, 10000, 10001, 10002, 10005][f.table],
            dst: net(dst),
            gateway: None,
            oif: oif.unwrap_or(0),
            prefsrc: None,
            scope: if oif.is_some() && family == Family::V4 {
                Scope::Link
            } else {
                Scope::Universe
            },
            kind: if oif.is_some() {
                RouteType::UNICAST
            } else {
                RouteType::BLACKHOLE
            },
            metric: match family {
                Family::V4 => [0, 7][f.metric],
                Family::V6 => [1024, 7][f.metric],
            },
            onlink: false,
            protocol: [BOOT, 4, 16, 80][f.protocol],
            multipath: Vec::new(),
        };
        if !has_key(&k.state, &r) {
            k.state.routes.push(r);
        }
    }

    // Leftovers of earlier runs, added the way the kernel would take them.
    for t in &sc.tagged_rules {
        let family = fam(t.v6);
        let a = pool_net(t.v6, t.prefix, t.host).addr();
        let _ = k.execute(&Op::AddRule(Rule {
            family,
            priority: [3000, 3000, 2999][t.priority],
            src: Some(IpNet::new(a, family.host_prefix()).unwrap()),
            table: BAND_TABLES[t.table],
            protocol: TAG,
            other_selectors: false,
        }));
    }
    for t in &sc.tagged_routes {
        let Some((oif, gw, onlink)) = resolve_gw(&k.state, &t.gw) else {
            continue;
        };
        let family = Family::of(&gw);
        let table = BAND_TABLES[t.table];
        let metric = match family {
            Family::V4 => 0,
            Family::V6 => 1024,
        };
        let r = if t.default {
            Route {
                table,
                dst: default_dst(family),
                gateway: Some(gw),
                oif,
                prefsrc: None,
                scope: Scope::Universe,
                kind: RouteType::UNICAST,
                metric,
                onlink,
                protocol: TAG,
                multipath: Vec::new(),
            }
        } else {
            let l = k.state.link(oif).unwrap();
            let nets: Vec<&IfAddr> = l
                .global_addrs()
                .filter(|a| a.family() == family && a.net.prefix_len() < family.host_prefix())
                .collect();
            if nets.is_empty() {
                continue;
            }
            let a = nets[t.gw.pick % nets.len()];
            Route {
                table,
                dst: a.net.trunc(),
                gateway: None,
                oif,
                prefsrc: (family == Family::V4).then(|| a.addr()),
                scope: match family {
                    Family::V4 => Scope::Link,
                    Family::V6 => Scope::Universe,
                },
                kind: RouteType::UNICAST,
                metric,
                onlink: false,
                protocol: TAG,
                multipath: Vec::new(),
            }
        };
        let _ = k.execute(&Op::AddRoute(r));
    }
    k.log.clear();

    let settings = if sc.small_band {
        Settings {
            table_max: 10004,
            ..Settings::default()
        }
    } else {
        Settings::default()
    };
    let request = PlanRequest {
        gateways: make_hints(&k.state, &sc.hints),
        selection: if sc.all {
            Selection::All
        } else {
            Selection::MultiHomed
        },
        routes: Vec::new(),
    };
    (k, with_settings(request, settings))
}

/// Tables anyone but symroute uses.
fn foreign_tables(s: &Snapshot, tag: &Settings) -> BTreeSet<u32> {
    classify(s, &Space::of(tag)).others_tables
}

/// Whether `table` came to `link` from its own tagged objects in `s`.
fn inherited(s: &Snapshot, tag: &Settings, link: &Link, table: u32) -> bool {
    tagged_routes(s, tag)
        .iter()
        .any(|r| r.table == table && r.oif == link.index)
        || tagged_rules(s, tag).iter().any(|r| {
            r.table == table
                && link
                    .global_addrs()
                    .any(|a| r.src == IpNet::new(a.addr(), a.family().host_prefix()).ok())
        })
}

/// Property (f): one table per interface, inside the band; a table not
/// inherited from the interface's own tagged objects is used by nobody else.
fn check_tables(s: &Snapshot, settings: &Settings, p: &Plan) -> Result<(), TestCaseError> {
    let tag = settings;
    let foreign = foreign_tables(s, tag);
    let ours: BTreeSet<u32> = tagged_rules(s, tag)
        .iter()
        .map(|r| r.table)
        .chain(tagged_routes(s, tag).iter().map(|r| r.table))
        .collect();
    let mut seen = BTreeSet::new();
    for i in &p.interfaces {
        prop_assert!(
            settings.in_band(i.table),
            "table {} outside the band",
            i.table
        );
        prop_assert!(seen.insert(i.table), "table {} given twice", i.table);
        let link = s.link(i.index).unwrap();
        if !inherited(s, tag, link, i.table) {
            prop_assert!(
                !foreign.contains(&i.table),
                "{} got table {} that someone else uses",
                i.name,
                i.table
            );
            prop_assert!(
                !ours.contains(&i.table),
                "{} got table {} of another interface's leftovers",
                i.name,
                i.table
            );
        }
    }
    let tables: BTreeSet<u32> = seen;
    for r in &p.rules {
        prop_assert!(tables.contains(&r.table));
    }
    for r in &p.routes {
        prop_assert!(tables.contains(&r.table));
    }
    Ok(())
}

/// A plan error must be justified (the engine then changes nothing).
fn check_plan_error(
    e: &PlanError,
    before: &Snapshot,
    settings: &Settings,
) -> Result<(), TestCaseError> {
    let tag = settings;
    match e {
        PlanError::ForeignConflict { table, .. } => {
            prop_assert!(
                tagged_rules(before, tag).iter().any(|r| r.table == *table)
                    || tagged_routes(before, tag).iter().any(|r| r.table == *table),
                "conflict in table {} that is not a kept one",
                table
            );
        }
        PlanError::TablesExhausted { .. } => {
            let used: BTreeSet<u32> = before
                .rules
                .iter()
                .map(|r| r.table)
                .chain(before.routes.iter().map(|r| r.table))
                .collect();
            let free = (settings.table_min..=settings.table_max)
                .filter(|t| !used.contains(t))
                .count();
            let candidates = before
                .links
                .iter()
                .filter(|l| !l.loopback && l.global_addrs().next().is_some())
                .count();
            prop_assert!(
                free < candidates,
                "{} free tables for {} interfaces",
                free,
                candidates
            );
        }
        other => prop_assert!(false, "hints are valid, yet {}", other),
    }
    Ok(())
}

/// Properties (a), (b), (f): apply converges, leaves foreign objects alone,
/// and picks sound tables. Returns the plan when apply succeeded.
fn apply_and_check(k: &mut FakeKernel, o: &ApplyOptions) -> Result<Option<Plan>, TestCaseError> {
    let tag = &o.settings;
    let before = k.state.clone();
    let calls = k.calls();
    let expected = plan(&before, &o.settings, &o.request);
    let rep = match engine::apply(k, o) {
        Ok(rep) => rep,
        Err(EngineError::Plan(e)) => {
            prop_assert_eq!(expected.as_ref().err(), Some(&e));
            prop_assert_eq!(k.calls(), calls);
            prop_assert_eq!(&k.state, &before);
            check_plan_error(&e, &before, &o.settings)?;
            return Ok(None);
        }
        Err(e) => return Err(TestCaseError::fail(format!("apply failed: {e}"))),
    };
    prop_assert_eq!(expected.as_ref().ok(), Some(&rep.plan));
    check_tables(&before, &o.settings, &rep.plan)?;
    prop_assert_eq!(&k.log[calls..], &rep.ops[..]);
    // (a) the tagged state is the plan, status agrees, a second apply is a no-op.
    prop_assert_eq!(tagged_rules(&k.state, tag), rep.plan.rules.clone());
    prop_assert_eq!(tagged_routes(&k.state, tag), rep.plan.routes.clone());
    let st = engine::status(k, &o.settings, &o.request).unwrap();
    prop_assert!(
        st.missing.is_empty() && st.extra.is_empty(),
        "missing {:?} extra {:?}",
        st.missing,
        st.extra
    );
    // Only a shadowing rule of someone else's keeps it out of sync.
    prop_assert_eq!(
        st.in_sync,
        st.shadowed().next().is_none(),
        "{:?}",
        st.findings
    );
    prop_assert_eq!(&st.plan.rules, &rep.plan.rules);
    prop_assert_eq!(&st.plan.routes, &rep.plan.routes);
    let again = engine::apply(k, o).unwrap();
    prop_assert!(again.ops.is_empty(), "second apply: {:?}", again.ops);
    // (b) nobody else's objects were touched.
    prop_assert_eq!(foreign_rules(&k.state, tag), foreign_rules(&before, tag));
    prop_assert_eq!(foreign_routes(&k.state, tag), foreign_routes(&before, tag));
    prop_assert_eq!(&k.state.links, &before.links);
    Ok(Some(rep.plan))
}

#[derive(Debug, Clone)]
enum Event {
    Down(usize),
    Up(usize),
    AddAddr(usize, AddrSpec),
    DelAddr(usize, usize),
    RemoveLink(usize),
    AddLink(LinkSpec),
    /// Nothing happens; apply again with other hints.
    Rehint(Vec<GwSpec>),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0usize..4).prop_map(Event::Down),
        (0usize..4).prop_map(Event::Up),
        (0usize..4, addr_spec()).prop_map(|(l, a)| Event::AddAddr(l, a)),
        (0usize..4, 0usize..4).prop_map(|(l, a)| Event::DelAddr(l, a)),
        (0usize..4).prop_map(Event::RemoveLink),
        link_spec().prop_map(Event::AddLink),
        prop::collection::vec(gw_spec(), 0..=3).prop_map(Event::Rehint),
    ]
}

fn happen(k: &mut FakeKernel, e: &Event, hints: &mut Vec<GwSpec>, next_index: &mut u32) {
    let links: Vec<Link> = eths(&k.state).into_iter().cloned().collect();
    let pick = |i: &usize| (!links.is_empty()).then(|| &links[i % links.len()]);
    match e {
        Event::Down(i) => {
            if let Some(l) = pick(i) {
                k.set_link_up(l.index, false);
            }
        }
        Event::Up(i) => {
            if let Some(l) = pick(i) {
                k.set_link_up(l.index, true);
            }
        }
        Event::AddAddr(i, a) => {
            if let Some(l) = pick(i) {
                let a = make_addr(a);
                if addr_fits(l, &a) {
                    k.add_addr(l.index, a);
                }
            }
        }
        Event::DelAddr(i, j) => {
            if let Some(l) = pick(i)
                && !l.addrs.is_empty()
            {
                k.remove_addr(l.index, l.addrs[j % l.addrs.len()].net);
            }
        }
        Event::RemoveLink(i) => {
            if let Some(l) = pick(i) {
                k.remove_link(l.index);
            }
        }
        Event::AddLink(spec) => {
            // Interface indexes are never reused.
            let index = *next_index;
            *next_index += 1;
            let mut l = make_link(index, format!("net{index}"), spec);
            let addrs = std::mem::take(&mut l.addrs);
            let up = l.up;
            l.up = false;
            k.state.links.push(l);
            for a in addrs {
                k.add_addr(index, a);
            }
            k.set_link_up(index, up);
        }
        Event::Rehint(h) => hints.clone_from(h),
    }
}

/// The addresses each interface had in a plan.
fn planned_addrs(p: &Plan) -> BTreeMap<IpAddr, u32> {
    p.interfaces
        .iter()
        .flat_map(|i| i.addrs.iter().map(move |a| (a.addr(), i.index)))
        .collect()
}

/// Interfaces keep their tables across changes, as long as no address moved
/// between interfaces or sits on two at once.
fn check_stability(prev: &Plan, next: &Plan, s: &Snapshot) -> Result<(), TestCaseError> {
    let before = planned_addrs(prev);
    let planned: usize = prev.interfaces.iter().map(|i| i.addrs.len()).sum();
    if before.len() < planned {
        return Ok(()); // an address planned on two interfaces (or twice)
    }
    let mut owner: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for l in eths(s) {
        for a in l.global_addrs() {
            if owner
                .insert(a.addr(), l.index)
                .is_some_and(|o| o != l.index)
            {
                return Ok(()); // shared address
            }
            if before.get(&a.addr()).is_some_and(|o| *o != l.index) {
                return Ok(()); // moved address
            }
        }
    }
    for i in &next.interfaces {
        let Some(old) = prev.interfaces.iter().find(|p| p.index == i.index) else {
            continue;
        };
        let link = s.link(i.index).unwrap();
        let kept_addr = link
            .global_addrs()
            .any(|a| old.addrs.iter().any(|o| o.addr() == a.addr()));
        if kept_addr {
            prop_assert_eq!(i.table, old.table, "{} changed table", &i.name);
        }
    }
    Ok(())
}

/// 256 cases per property unless PROPTEST_CASES says otherwise.
fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// (a), (b), (f) on one random namespace.
    #[test]
    fn apply_converges_and_leaves_foreign_objects_alone(sc in scenario()) {
        let (mut k, o) = build(&sc);
        apply_and_check(&mut k, &o)?;
    }

    /// (b), (c): clean removes every tagged object and nothing else; twice
    /// is a no-op. Also straight on the random leftovers, without an apply.
    #[test]
    fn clean_removes_exactly_the_tagged_objects(sc in scenario(), apply_first in any::<bool>()) {
        let (mut k, o) = build(&sc);
        if apply_first {
            let _ = engine::apply(&mut k, &o);
        }
        let tag = &o.settings;
        let before = k.state.clone();
        let owned = tagged_rules(&before, tag).len() + tagged_routes(&before, tag).len();
        let rep = engine::clean(&mut k, &o.settings).unwrap();
        prop_assert_eq!(rep.removed.len(), owned);
        prop_assert!(tagged_rules(&k.state, tag).is_empty(), "{:?}", tagged_rules(&k.state, tag));
        prop_assert!(tagged_routes(&k.state, tag).is_empty(), "{:?}", tagged_routes(&k.state, tag));
        prop_assert_eq!(foreign_rules(&k.state, tag), foreign_rules(&before, tag));
        prop_assert_eq!(foreign_routes(&k.state, tag), foreign_routes(&before, tag));
        prop_assert_eq!(&k.state.links, &before.links);
        let calls = k.calls();
        prop_assert!(engine::clean(&mut k, &o.settings).unwrap().removed.is_empty());
        prop_assert_eq!(k.calls(), calls);
    }

    /// (d): no change between a state and itself.
    #[test]
    fn diff_of_a_state_with_itself_is_empty(sc in scenario()) {
        let (k, o) = build(&sc);
        let tag = &o.settings;
        let mut rules = tagged_rules(&k.state, tag);
        rules.dedup(); // duplicate actual rules are stale by design
        let routes = tagged_routes(&k.state, tag);
        prop_assert!(diff(&rules, &routes, &rules, &routes).is_empty());
        // Whatever the objects, and whatever their order.
        let mut all_rules = sorted(k.state.rules.iter().cloned());
        all_rules.dedup();
        let mut rev_rules = all_rules.clone();
        rev_rules.reverse();
        let mut rev_routes = k.state.routes.clone();
        rev_routes.reverse();
        prop_assert!(diff(&all_rules, &k.state.routes, &rev_rules, &rev_routes).is_empty());
        if let Ok(p) = plan(&k.state, &o.settings, &o.request) {
            prop_assert!(diff(&p.rules, &p.routes, &p.rules, &p.routes).is_empty());
        }
    }

    /// (e): a failure at any step leaves the namespace exactly as it was, and
    /// names the failing object.
    #[test]
    fn a_failed_apply_rolls_back_completely(sc in scenario()) {
        let (k0, o) = build(&sc);
        let Ok(p) = plan(&k0.state, &o.settings, &o.request) else {
            return Ok(());
        };
        let tag = &o.settings;
        // In the snapshot's order, as the engine reads them.
        let own = classify(&k0.state, &Space::of(tag));
        let (rules, routes) = (own.rules, own.routes);
        let ops = diff(&p.rules, &p.routes, &rules, &routes);
        // Which steps do something (an add of what is there already, or a
        // delete of what is gone, is skipped and has nothing to undo).
        let mut dry = k0.clone();
        let effective: Vec<bool> = ops.iter().map(|op| dry.execute(op).is_ok()).collect();
        for at in 0..ops.len() {
            let mut k = k0.clone();
            k.fail_at = Some(at);
            k.fail_errno = libc::EPERM;
            let e = engine::apply(&mut k, &o).unwrap_err();
            let EngineError::Apply { failed, rolled_back, rollback_errors } = &e else {
                return Err(TestCaseError::fail(format!("step {at}: {e}")));
            };
            prop_assert_eq!(&failed.what, &ops[at].to_string());
            prop_assert_eq!(failed.errno(), Some(libc::EPERM));
            prop_assert!(rollback_errors.is_empty(), "step {}: {:?}", at, rollback_errors);
            let undone: Vec<Op> = ops[..at]
                .iter()
                .zip(&effective)
                .filter(|(_, e)| **e)
                .map(|(op, _)| op.clone())
                .rev()
                .collect();
            prop_assert_eq!(rolled_back, &undone, "step {}", at);
            prop_assert_eq!(canonical(&k.state), canonical(&k0.state), "step {}", at);
            prop_assert_eq!(foreign_rules(&k.state, tag), foreign_rules(&k0.state, tag));
        }
    }

    /// (a), (b), (f) along a history: links go down and up, addresses come
    /// and go, links vanish and appear, hints change; apply after each event.
    #[test]
    fn apply_converges_along_a_history(
        sc in scenario(),
        events in prop::collection::vec(event(), 1..=6),
    ) {
        let (mut k, mut o) = build(&sc);
        let mut hint_specs = sc.hints.clone();
        let mut prev = apply_and_check(&mut k, &o)?;
        let mut next_index = 10;
        for e in &events {
            happen(&mut k, e, &mut hint_specs, &mut next_index);
            o.request.gateways = make_hints(&k.state, &hint_specs);
            let snap = k.state.clone();
            let next = apply_and_check(&mut k, &o)?;
            if let (Some(p), Some(n)) = (&prev, &next) {
                check_stability(p, n, &snap)?;
            }
            if next.is_some() {
                prev = next;
            }
        }
    }
}
