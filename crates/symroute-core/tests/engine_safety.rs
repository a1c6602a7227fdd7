//! The engine's safety rules against the fake kernel: an add that meets an
//! object it did not expect, an interrupt at any step, a single-interface
//! (CNI) plan next to other attachments, unrepresentable tagged objects,
//! shadowing rules, and the planner's refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use symroute_core::diff::Op;
use symroute_core::engine::{self, ApplyOptions, EngineError};
use symroute_core::kernel::{Kernel, KernelError, RouteAnswer, RouteQuery};
use symroute_core::model::{
    NextHop, Protocol, RT_TABLE_MAIN, Route, RouteType, Rule, Scope, Snapshot,
};
use symroute_core::ownership::Finding;
use symroute_core::plan::{
    GatewayHint, OnlyInterface, PlanError, PlanRequest, RouteHint, Selection, plan,
};
use symroute_core::settings::{ConfigFile, Settings, SettingsError};
use symroute_testkit::fake::FakeKernel;
use symroute_testkit::snap::{
    BOOT, TAG, conn_of, dflt_of, eth_no_mac, gw_hint, host, ip, net, rule_of,
};

// ---------------------------------------------------------------- helpers

fn seed() -> FakeKernel {
    let mut k = FakeKernel::with_links(vec![
        eth_no_mac(2, "eth0", &["172.18.0.2/16"]),
        eth_no_mac(3, "eth1", &["172.19.0.2/16"]),
    ]);
    k.state
        .routes
        .push(dflt_of(RT_TABLE_MAIN, "172.18.0.1", 2, BOOT));
    k
}

fn opts(gateways: Vec<GatewayHint>) -> ApplyOptions {
    ApplyOptions {
        request: PlanRequest {
            gateways,
            ..PlanRequest::default()
        },
        dad_wait: Duration::ZERO,
        ..ApplyOptions::default()
    }
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// The state with list order ignored (a rollback re-adds a rule after the
/// others of its priority).
fn canonical(s: &Snapshot) -> (Vec<Rule>, Vec<Route>) {
    (sorted(&s.rules), sorted(&s.routes))
}

/// The fake kernel with a hook run just before the `at`-th call to
/// `execute` (0-based): what another writer, or a signal, does between the
/// snapshot and that change.
struct Hooked<F: FnMut(&mut FakeKernel)> {
    k: FakeKernel,
    at: usize,
    calls: usize,
    hook: F,
}

impl<F: FnMut(&mut FakeKernel)> Kernel for Hooked<F> {
    fn snapshot(&mut self) -> Result<Snapshot, KernelError> {
        self.k.snapshot()
    }
    fn execute(&mut self, op: &Op) -> Result<(), KernelError> {
        if self.calls == self.at {
            (self.hook)(&mut self.k);
        }
        self.calls += 1;
        self.k.execute(op)
    }
    fn route_get(&mut self, q: &RouteQuery) -> Result<RouteAnswer, KernelError> {
        self.k.route_get(q)
    }
}

/// The seed, in which `route` appears (another writer adds it) just
/// before the `at`-th change.
fn seed_with_route_at(at: usize, route: Route) -> Hooked<impl FnMut(&mut FakeKernel)> {
    Hooked {
        k: seed(),
        at,
        calls: 0,
        hook: move |k: &mut FakeKernel| k.state.routes.push(route.clone()),
    }
}

/// The position of the first add of a default route into `table` in a dry run.
fn position_of_default(o: &ApplyOptions, table: u32) -> (usize, Route) {
    let dry = engine::apply(
        &mut seed(),
        &ApplyOptions {
            dry_run: true,
            ..o.clone()
        },
    )
    .unwrap();
    dry.ops
        .iter()
        .enumerate()
        .find_map(|(i, op)| match op {
            Op::AddRoute(r) if r.table == table && r.is_default() => Some((i, r.clone())),
            _ => None,
        })
        .expect("a default route in the plan")
}

// ------------------------------------------------------- EEXIST (issue 7 case 3)

#[test]
fn eexist_from_a_foreign_route_fails_names_it_and_rolls_back() {
    let o = opts(vec![gw_hint("eth1", "172.19.0.1")]);
    let (at, wanted) = position_of_default(&o, 10001);
    let foreign = Route {
        gateway: Some(ip("172.19.0.254")),
        protocol: 4, // `proto static`, as `ip route add ... proto static`
        ..wanted.clone()
    };
    let before = seed().state;
    let mut k = seed_with_route_at(at, foreign.clone());
    let e = engine::apply(&mut k, &o).unwrap_err();
    let text = e.to_string();
    let EngineError::Conflict {
        op,
        found,
        rolled_back,
        rollback_errors,
    } = e
    else {
        panic!("expected a conflict, got {text}");
    };
    assert_eq!(*op, Op::AddRoute(wanted));
    assert!(
        found.contains("via 172.19.0.254") && found.contains("proto 4"),
        "{found}"
    );
    assert!(
        text.contains("not symroute's") && text.contains("rolled back"),
        "{text}"
    );
    assert!(rollback_errors.is_empty());
    assert_eq!(rolled_back.len(), at, "every earlier change undone");
    // Nothing of this run is left; the foreign route is still there.
    let mut expect = before.clone();
    expect.routes.push(foreign);
    assert_eq!(canonical(&k.k.state), canonical(&expect));
}

#[test]
fn eexist_from_the_exact_wanted_route_is_success() {
    let o = opts(vec![gw_hint("eth1", "172.19.0.1")]);
    let (at, wanted) = position_of_default(&o, 10001);
    let mut k = seed_with_route_at(at, wanted.clone());
    let rep = engine::apply(&mut k, &o).unwrap();
    assert!(k.k.state.routes.contains(&wanted));
    // Converged: a second run has nothing to do.
    let again = engine::apply(&mut k.k, &o).unwrap();
    assert!(again.ops.is_empty(), "{:?}", again.ops);
    assert_eq!(rep.plan.routes.len(), 4);
}

#[test]
fn eexist_from_a_same_key_route_of_another_shape_fails_too() {
    // Same key, tagged like ours, but a blackhole: not the wanted object.
    let o = opts(vec![gw_hint("eth1", "172.19.0.1")]);
    let (at, wanted) = position_of_default(&o, 10001);
    let other = Route {
        kind: RouteType::BLACKHOLE,
        gateway: None,
        oif: 0,
        ..wanted.clone()
    };
    let mut k = seed_with_route_at(at, other.clone());
    let e = engine::apply(&mut k, &o).unwrap_err();
    assert!(
        matches!(&e, EngineError::Conflict { found, .. } if found.contains("blackhole")),
        "{e}"
    );
    assert!(
        k.k.state
            .routes
            .iter()
            .all(|r| r.protocol != TAG || *r == other)
    );
}

// ------------------------------------------------------- interrupts (case 8)

fn wide_namespace() -> FakeKernel {
    let mut links = Vec::new();
    for i in 0..6u32 {
        links.push(eth_no_mac(
            2 + i,
            &format!("eth{i}"),
            &[&format!("10.{i}.0.2/24"), &format!("2001:db8:{i}::2/64")],
        ));
    }
    FakeKernel::with_links(links)
}

fn wide_options() -> ApplyOptions {
    opts(
        (0..6)
            .map(|i| gw_hint(&format!("eth{i}"), &format!("10.{i}.0.1")))
            .collect(),
    )
}

proptest! {
    #![proptest_config(Config { cases: 64, ..Config::default() })]

    /// An interrupt before any change rolls the namespace back to where it
    /// started, whatever was done already (and whatever was there before:
    /// a half-applied earlier run).
    #[test]
    fn an_interrupt_at_any_step_rolls_back_to_the_start(step in 0usize..40, earlier in any::<bool>()) {
        let mut start = wide_namespace();
        if earlier {
            // An earlier run of a smaller plan left its objects behind.
            let mut o = wide_options();
            o.request.gateways.truncate(2);
            engine::apply(&mut start, &o).unwrap();
        }
        let before = start.state.clone();
        let o = wide_options();
        let total = engine::apply(&mut start.clone(), &o).unwrap().ops.len();
        prop_assert!(total > 0);
        let step = step % total;
        let flag = Arc::new(AtomicBool::new(false));
        let set = flag.clone();
        let mut k = Hooked {
            k: start,
            at: step,
            calls: 0,
            hook: move |_: &mut FakeKernel| set.store(true, Ordering::SeqCst),
        };
        let o = ApplyOptions { interrupt: Some(flag.clone()), ..o };
        // The hook sets the flag as change `step` is made: the engine sees
        // it before the next change, with `step + 1` changes done.
        let result = engine::apply(&mut k, &o);
        if step + 1 == total {
            // No change follows the last one: the run completes.
            prop_assert!(result.is_ok(), "{:?}", result.err());
            return Ok(());
        }
        match result {
            Err(EngineError::Interrupted { rolled_back, rollback_errors }) => {
                prop_assert!(rollback_errors.is_empty());
                prop_assert_eq!(rolled_back.len(), step + 1);
            }
            other => return Err(TestCaseError::fail(format!("expected an interrupt, got {other:?}"))),
        }
        prop_assert_eq!(canonical(&k.k.state), canonical(&before));
    }
}

#[test]
fn an_interrupt_set_before_the_run_changes_nothing() {
    let mut k = wide_namespace();
    let before = k.state.clone();
    let o = ApplyOptions {
        interrupt: Some(Arc::new(AtomicBool::new(true))),
        ..wide_options()
    };
    let e = engine::apply(&mut k, &o).unwrap_err();
    assert!(
        matches!(&e, EngineError::Interrupted { rolled_back, .. } if rolled_back.is_empty()),
        "{e}"
    );
    assert_eq!(k.calls(), 0);
    assert_eq!(k.state, before);
    assert!(e.to_string().starts_with("interrupted"));
}

// ------------------------------------------------------- Only scope (cases 5)

fn cni() -> Settings {
    Settings {
        protocol: Protocol::CNI,
        ..Settings::default()
    }
}

fn only(ifname: &str, table: Option<u32>) -> ApplyOptions {
    ApplyOptions {
        settings: cni(),
        request: PlanRequest {
            gateways: Vec::new(),
            selection: Selection::Only(OnlyInterface {
                ifname: ifname.into(),
                table,
                rules_only: table.is_some(),
            }),
            routes: Vec::new(),
        },
        dad_wait: Duration::ZERO,
        ..ApplyOptions::default()
    }
}

/// A pod with three attachments made by the CNI writer: net0 (band table
/// 10000), net1 (band table 10001) and net2 (sbr `table` 100, rules only).
fn pod() -> FakeKernel {
    let mut k = FakeKernel::with_links(vec![
        eth_no_mac(2, "net0", &["10.0.0.2/24"]),
        eth_no_mac(3, "net1", &["10.1.0.2/24"]),
        eth_no_mac(4, "net2", &["10.2.0.2/24"]),
    ]);
    for (name, gw, table) in [("net0", "10.0.0.1", None), ("net1", "10.1.0.1", None)] {
        let mut o = only(name, table);
        o.request.gateways = vec![self::gw_hint(name, gw)];
        engine::apply(&mut k, &o).unwrap();
    }
    // Someone else (the main plugin) fills table 100 for net2.
    k.state
        .routes
        .push(conn_of(100, "10.2.0.0/24", 4, "10.2.0.2", BOOT));
    engine::apply(&mut k, &only("net2", Some(100))).unwrap();
    k.log.clear();
    k
}

fn of_link(s: &Snapshot, index: u32, addr: &str) -> (Vec<Rule>, Vec<Route>) {
    (
        sorted(
            &s.rules
                .iter()
                .filter(|r| r.src.is_some_and(|x| x.addr() == ip(addr)))
                .cloned()
                .collect::<Vec<_>>(),
        ),
        sorted(
            &s.routes
                .iter()
                .filter(|r| r.oif == index)
                .cloned()
                .collect::<Vec<_>>(),
        ),
    )
}

#[test]
fn only_plans_touch_their_own_attachment_and_nothing_else() {
    let mut k = pod();
    let before = k.state.clone();
    assert_eq!(before.rules.iter().filter(|r| r.protocol == 116).count(), 3);
    // net0 again, with another gateway: only net0's objects change.
    let mut o = only("net0", None);
    o.request.gateways = vec![gw_hint("net0", "10.0.0.254")];
    let rep = engine::apply(&mut k, &o).unwrap();
    assert!(!rep.ops.is_empty());
    for op in &rep.ops {
        match op {
            Op::AddRoute(r) | Op::DelRoute(r) => assert_eq!(r.oif, 2, "{op}"),
            Op::AddRule(r) | Op::DelRule(r) => assert_eq!(r.src, Some(host("10.0.0.2")), "{op}"),
        }
    }
    assert_eq!(
        of_link(&k.state, 3, "10.1.0.2"),
        of_link(&before, 3, "10.1.0.2")
    );
    assert_eq!(
        of_link(&k.state, 4, "10.2.0.2"),
        of_link(&before, 4, "10.2.0.2")
    );
    // A rules-only attachment re-ADDed changes nothing, not even table 100.
    let rep = engine::apply(&mut k, &only("net2", Some(100))).unwrap();
    assert!(rep.ops.is_empty(), "{:?}", rep.ops);
    // Two rules-only attachments may share a table.
    k.state
        .routes
        .push(conn_of(100, "10.0.0.0/24", 2, "10.0.0.2", BOOT));
    let st = engine::status(&mut k, &cni(), &only("net2", Some(100)).request).unwrap();
    assert!(st.in_sync, "{:?} {:?}", st.missing, st.extra);
}

#[test]
fn a_named_table_holding_another_attachments_routes_is_refused() {
    let mut k = pod();
    let before = k.state.clone();
    // net2 names net1's band table.
    let e = engine::apply(&mut k, &only("net2", Some(10001))).unwrap_err();
    match &e {
        EngineError::TableInUse {
            ifname,
            table,
            other,
            ..
        } => {
            assert_eq!(
                (ifname.as_str(), *table, other.as_str()),
                ("net2", 10001, "net1")
            );
        }
        other => panic!("expected TableInUse, got {other}"),
    }
    assert!(e.to_string().contains("another attachment (net1)"), "{e}");
    assert_eq!(k.calls(), 0);
    assert_eq!(k.state, before);
    // Reserved tables can never be named.
    for t in [0, 253, 254, 255] {
        let e = engine::apply(&mut k, &only("net2", Some(t))).unwrap_err();
        assert!(
            matches!(e, EngineError::Plan(PlanError::ReservedTable { .. })),
            "{t}: {e}"
        );
    }
    assert_eq!(k.state, before);
}

#[test]
fn a_host_apply_in_a_cni_pod_leaves_every_attachment_alone() {
    let mut k = pod();
    let before = k.state.clone();
    let o = ApplyOptions {
        request: PlanRequest {
            selection: Selection::All,
            ..PlanRequest::default()
        },
        dad_wait: Duration::ZERO,
        ..ApplyOptions::default()
    };
    let rep = engine::apply(&mut k, &o).unwrap();
    assert!(rep.plan.interfaces.is_empty(), "{:#?}", rep.plan.interfaces);
    assert_eq!(rep.plan.skipped.len(), 3);
    assert!(rep.ops.is_empty());
    assert_eq!(k.state, before);
    let text = rep.plan.skipped[0].to_string();
    assert!(text.contains("managed by another writer"), "{text}");
    // And clean of the host writer finds nothing of its own.
    let c = engine::clean(&mut k, &Settings::default()).unwrap();
    assert!(c.removed.is_empty());
    assert_eq!(k.state, before);
}

// --------------------------------------- unrepresentable tagged objects (case 10)

#[test]
fn tagged_iif_rules_and_blackholes_are_findings_apply_converges_clean_keeps_them() {
    let mut k = seed();
    let iif = Rule {
        src: None,
        other_selectors: true,
        ..rule_of("172.19.0.2", 10001, TAG)
    };
    let blackhole = Route {
        kind: RouteType::BLACKHOLE,
        oif: 0,
        gateway: None,
        prefsrc: None,
        scope: Scope::Universe,
        ..conn_of(10001, "198.51.100.0/24", 0, "172.19.0.2", TAG)
    };
    let unreachable = Route {
        kind: RouteType::UNREACHABLE,
        dst: net("192.0.2.0/24"),
        ..blackhole.clone()
    };
    // The iif rule comes first in the list: a delete without iif would
    // take it or ours, whichever comes first.
    k.state.rules.insert(1, iif.clone());
    k.state.routes.push(blackhole.clone());
    k.state.routes.push(unreachable.clone());
    let o = opts(vec![gw_hint("eth1", "172.19.0.1")]);
    let rep = engine::apply(&mut k, &o).unwrap();
    assert_eq!(rep.findings.len(), 3, "{:#?}", rep.findings);
    assert!(
        !rep.ops
            .iter()
            .any(|op| matches!(op, Op::DelRule(_) | Op::DelRoute(_)))
    );
    let again = engine::apply(&mut k, &o).unwrap();
    assert!(again.ops.is_empty(), "second run: {:?}", again.ops);
    let st = engine::status(&mut k, &o.settings, &o.request).unwrap();
    assert!(
        st.in_sync,
        "{:?} {:?} {:?}",
        st.missing, st.extra, st.findings
    );
    assert_eq!(st.findings.len(), 3);
    for f in &st.findings {
        assert!(f.to_string().contains("left alone"), "{f}");
    }
    // clean removes ours, keeps and reports the findings.
    let c = engine::clean(&mut k, &Settings::default()).unwrap();
    assert_eq!(c.findings.len(), 3);
    assert!(k.state.rules.contains(&iif));
    assert!(k.state.routes.contains(&blackhole) && k.state.routes.contains(&unreachable));
    assert!(
        !k.state
            .rules
            .iter()
            .any(|r| r.protocol == TAG && !r.other_selectors),
        "symroute's from rules are gone"
    );
}

#[test]
fn an_iif_rule_with_our_rules_identity_blocks_its_delete() {
    // Same family, priority, table, protocol and source as ours, plus iif:
    // our delete could remove either; it is not sent and reported.
    let mut k = seed();
    let o = opts(vec![gw_hint("eth1", "172.19.0.1")]);
    engine::apply(&mut k, &o).unwrap();
    let ours = rule_of("172.19.0.2", 10001, TAG);
    let twin = Rule {
        other_selectors: true,
        ..ours.clone()
    };
    let at = k.state.rules.iter().position(|r| *r == ours).unwrap();
    k.state.rules.insert(at, twin.clone());
    let c = engine::clean(&mut k, &Settings::default()).unwrap();
    assert!(k.state.rules.contains(&twin) && k.state.rules.contains(&ours));
    assert!(c.findings.contains(&Finding::AmbiguousDelete {
        ours: ours.clone(),
        other: twin.clone()
    }));
    assert!(!c.removed.contains(&Op::DelRule(ours)));
}

#[test]
fn a_tagged_multipath_route_sharing_our_first_hop_blocks_our_route_delete() {
    // Our default in 10001 (metric 0) and a tagged multipath default there
    // whose first hop is ours: a delete of ours sent after ours vanished
    // would take the multipath one (metric 0 is "any"); it is not sent.
    let mut k = seed();
    let o = opts(vec![gw_hint("eth1", "172.19.0.1")]);
    engine::apply(&mut k, &o).unwrap();
    let ours = k
        .state
        .routes
        .iter()
        .find(|r| r.protocol == TAG && r.gateway.is_some())
        .cloned()
        .expect("our default route");
    let multipath = Route {
        oif: 0,
        gateway: None,
        metric: 10,
        multipath: vec![
            NextHop {
                oif: ours.oif,
                gateway: ours.gateway,
            },
            NextHop {
                oif: 2,
                gateway: None,
            },
        ],
        ..ours.clone()
    };
    k.state.routes.push(multipath.clone());
    // The fake, like the kernel, lets a delete of ours take the multipath
    // route once ours is gone.
    let mut gone = k.clone();
    gone.state.routes.retain(|r| *r != ours);
    gone.execute(&Op::DelRoute(ours.clone()))
        .expect("the kernel would take it");
    assert!(!gone.state.routes.contains(&multipath));
    // The engine does not send it.
    let c = engine::clean(&mut k, &Settings::default()).unwrap();
    assert!(k.state.routes.contains(&multipath) && k.state.routes.contains(&ours));
    assert!(c.findings.contains(&Finding::AmbiguousRouteDelete {
        ours: ours.clone(),
        other: multipath
    }));
    assert!(!c.removed.contains(&Op::DelRoute(ours)));
}

// ------------------------------------------------------- shadowing (case 11)

#[test]
fn a_foreign_rule_consulted_first_makes_status_out_of_sync() {
    let mut k = seed();
    let o = opts(vec![gw_hint("eth1", "172.19.0.1")]);
    engine::apply(&mut k, &o).unwrap();
    let st = engine::status(&mut k, &o.settings, &o.request).unwrap();
    assert!(st.in_sync);
    // Same priority, same selector, earlier in the list: someone's rule
    // sending the address to main. (One to a table of its own would make
    // eth1 "managed by another writer" instead.)
    let shadow = rule_of("172.19.0.2", RT_TABLE_MAIN, BOOT);
    k.state.rules.insert(1, shadow.clone());
    let st = engine::status(&mut k, &o.settings, &o.request).unwrap();
    assert!(st.missing.is_empty() && st.extra.is_empty());
    assert!(!st.in_sync, "a shadowed rule is not in sync");
    let shadowed: Vec<&Finding> = st.shadowed().collect();
    assert_eq!(
        shadowed,
        vec![&Finding::Shadowed {
            ours: rule_of("172.19.0.2", 10001, TAG),
            by: shadow.clone()
        }]
    );
    assert!(shadowed[0].to_string().contains("shadowed"));
    // After ours in the list: ours decides.
    k.state.rules.retain(|r| *r != shadow);
    k.state.rules.insert(4, shadow.clone());
    let st = engine::status(&mut k, &o.settings, &o.request).unwrap();
    assert!(st.in_sync, "{:?}", st.findings);
    // A lower priority number with a covering prefix shadows too.
    k.state.rules.insert(
        1,
        Rule {
            priority: 100,
            src: Some(net("172.19.0.0/16")),
            ..shadow
        },
    );
    let st = engine::status(&mut k, &o.settings, &o.request).unwrap();
    assert!(!st.in_sync);
}

// ------------------------------------------------------- planner refusals

#[test]
fn gateways_that_are_network_or_broadcast_addresses_are_refused() {
    let s = Snapshot {
        links: vec![
            eth_no_mac(2, "eth0", &["172.18.0.2/24"]),
            eth_no_mac(3, "eth1", &["192.0.2.0/31", "2001:db8::2/64"]),
            eth_no_mac(4, "eth2", &["198.51.100.9/32"]),
        ],
        ..Snapshot::default()
    };
    let req = |g: &str, ifname: &str| PlanRequest {
        gateways: vec![gw_hint(ifname, g)],
        selection: Selection::All,
        routes: Vec::new(),
    };
    let settings = Settings::default();
    for (g, which) in [("172.18.0.0", "network"), ("172.18.0.255", "broadcast")] {
        let e = plan(&s, &settings, &req(g, "eth0")).unwrap_err();
        assert_eq!(
            e,
            PlanError::NetworkOrBroadcast {
                ifname: "eth0".into(),
                gateway: ip(g),
                prefix: net("172.18.0.0/24"),
                which,
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("eth0") && text.contains(g) && text.contains("172.18.0.0/24"),
            "{text}"
        );
        assert!(!text.contains("--"), "no CLI flag in core errors: {text}");
    }
    // /31 has neither (RFC 3021); IPv6 has no broadcast; .1 is a host.
    plan(&s, &settings, &req("192.0.2.1", "eth1")).unwrap();
    plan(&s, &settings, &req("2001:db8::", "eth1")).unwrap();
    plan(&s, &settings, &req("172.18.0.1", "eth0")).unwrap();
    // Route hints too.
    let e = plan(
        &s,
        &settings,
        &PlanRequest {
            routes: vec![RouteHint {
                ifname: "eth0".into(),
                dst: net("10.9.0.0/16"),
                gateway: Some(ip("172.18.0.255")),
            }],
            ..req("172.18.0.1", "eth0")
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, PlanError::RouteNetworkOrBroadcast { .. }),
        "{e}"
    );
}

#[test]
fn core_plan_errors_speak_no_cli() {
    let s = seed().state;
    let settings = Settings::default();
    for g in [
        gw_hint("eth9", "172.18.0.1"),
        gw_hint("eth1", "2001:db8::1"),
        gw_hint("eth1", "10.9.9.9"),
        gw_hint("eth1", "172.19.0.2"),
    ] {
        let e = plan(
            &s,
            &settings,
            &PlanRequest {
                gateways: vec![g],
                ..PlanRequest::default()
            },
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("--"), "{text}");
        assert!(text.starts_with("gateway "), "{text}");
    }
    let p = plan(&s, &settings, &PlanRequest::default()).unwrap();
    for note in p.interfaces.iter().flat_map(|i| &i.notes) {
        assert!(!note.contains("--"), "{note}");
    }
}

#[test]
fn interfaces_managed_by_another_writer_are_skipped_and_noted() {
    let mut k = FakeKernel::with_links(vec![
        eth_no_mac(2, "eth0", &["172.18.0.2/16"]),
        eth_no_mac(3, "eth1", &["172.19.0.2/16"]),
        eth_no_mac(4, "eth2", &["172.20.0.2/16"]),
    ]);
    // AWS-VPC-CNI style: `from ADDR lookup 2` of protocol boot.
    let other = Rule {
        priority: 1536,
        ..rule_of("172.20.0.2", 2, BOOT)
    };
    // Not "another writer": lookup main, and a prefix rather than a host.
    let main = Rule {
        priority: 1000,
        ..rule_of("172.19.0.2", RT_TABLE_MAIN, BOOT)
    };
    let prefix = Rule {
        src: Some(net("172.18.0.0/16")),
        priority: 1000,
        ..rule_of("172.18.0.2", 5, BOOT)
    };
    k.state.rules.insert(1, other.clone());
    k.state.rules.insert(1, main);
    k.state.rules.insert(1, prefix);
    let before = k.state.clone();
    let o = opts(Vec::new());
    let rep = engine::apply(&mut k, &o).unwrap();
    let names: Vec<&str> = rep
        .plan
        .interfaces
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["eth0", "eth1"]);
    assert_eq!(rep.plan.skipped.len(), 1);
    assert_eq!(rep.plan.skipped[0].name, "eth2");
    assert_eq!(rep.plan.skipped[0].rule, other);
    // Nothing of eth2's (rules from its address, routes through it) touched.
    for op in &rep.ops {
        match op {
            Op::AddRoute(r) | Op::DelRoute(r) => assert_ne!(r.oif, 4),
            Op::AddRule(r) | Op::DelRule(r) => assert_ne!(r.src, Some(host("172.20.0.2"))),
        }
    }
    assert!(k.state.rules.contains(&other));
    assert_eq!(
        of_link(&k.state, 4, "172.20.0.2").1,
        of_link(&before, 4, "172.20.0.2").1
    );
    // The two other rules decide before ours for eth0's and eth1's
    // addresses: status says so.
    let st = engine::status(&mut k, &o.settings, &o.request).unwrap();
    assert!(st.missing.is_empty() && st.extra.is_empty());
    assert!(!st.in_sync);
    let by: Vec<u32> = st
        .shadowed()
        .map(|f| match f {
            Finding::Shadowed { by, .. } => by.table,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(by, [5, RT_TABLE_MAIN]);
}

#[test]
fn reserved_protocols_and_tables_are_refused_by_settings() {
    let over = |cfg: ConfigFile| Settings::default().overlay(&cfg);
    for p in [9, 16, 12, 186] {
        let e = over(ConfigFile {
            protocol: Some(p),
            ..ConfigFile::default()
        })
        .unwrap_err();
        assert!(
            matches!(e, SettingsError::Protocol(ref r) if r.number == p),
            "{e}"
        );
    }
    let e = over(ConfigFile {
        protocol: Some(9),
        ..ConfigFile::default()
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "protocol 9 is the kernel's `ra` (router advertisements): symroute would treat their rules and routes as its own; pick an unused number (symroute's default is 115)"
    );
    // A band over a reserved table.
    let mut s = Settings::default();
    s.overlay(&ConfigFile {
        table_band: Some("250-260".into()),
        ..ConfigFile::default()
    })
    .unwrap();
    assert!(matches!(
        s.validate(),
        Err(SettingsError::ReservedTableInBand { table: 252, .. })
    ));
    // The config file's protocol key is checked when loaded.
    let dir = std::env::temp_dir().join(format!("symroute-core-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, "protocol = 16\n").unwrap();
    let e = Settings::load(Some(&path)).unwrap_err();
    assert!(e.to_string().contains("dhcp"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
