//! The ownership classification, rule by rule, and the property that matters:
//! on random namespaces full of foreign objects and of tagged objects outside
//! symroute's space or unrepresentable inside it, no operation of apply or
//! clean touches anything but symroute's own objects.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use symroute_core::diff::Op;
use symroute_core::engine::{self, ApplyOptions};
use symroute_core::kernel::Kernel;
use symroute_core::model::{
    Link, NextHop, Protocol, RT_TABLE_MAIN, Route, RouteType, Rule, Scope, Snapshot,
};
use symroute_core::ownership::{
    Class, Finding, RouteProblem, RuleProblem, Space, classify, route_class, rule_class, shadowing,
};
use symroute_core::plan::{GatewayHint, PlanRequest, Selection};
use symroute_core::settings::Settings;
use symroute_testkit::fake::FakeKernel;
use symroute_testkit::snap::{TAG, eth_no_mac, ip, net, rule_at};

fn space() -> Space {
    Space::of(&Settings::default())
}

fn route(table: u32, dst: &str, protocol: u8) -> Route {
    Route {
        table,
        dst: net(dst),
        gateway: None,
        oif: 2,
        prefsrc: None,
        scope: Scope::Link,
        kind: RouteType::UNICAST,
        metric: 0,
        onlink: false,
        protocol,
        multipath: Vec::new(),
    }
}

// ------------------------------------------------------------ rules

#[test]
fn a_plain_tagged_from_rule_at_our_priority_into_the_band_is_ours() {
    let r = rule_at(Some("10.0.0.2/32"), 10000, 3000, TAG);
    assert_eq!(rule_class(&space(), &r), (Class::Ours, None));
    // A prefix source is still `from PREFIX`.
    let r = rule_at(Some("10.0.0.0/24"), 10999, 3000, TAG);
    assert_eq!(rule_class(&space(), &r).0, Class::Ours);
}

#[test]
fn rules_without_the_tag_at_another_priority_or_outside_the_band_are_foreign() {
    let s = space();
    for r in [
        rule_at(Some("10.0.0.2/32"), 10000, 3000, 3), // another protocol
        rule_at(Some("10.0.0.2/32"), 10000, 3000, 116), // the CNI writer's
        rule_at(Some("10.0.0.2/32"), 10000, 2999, TAG), // another priority
        rule_at(Some("10.0.0.2/32"), 254, 3000, TAG), // lookup main
        rule_at(Some("10.0.0.2/32"), 253, 3000, TAG), // lookup default
        rule_at(Some("10.0.0.2/32"), 255, 3000, TAG), // lookup local
        rule_at(Some("10.0.0.2/32"), 77, 3000, TAG),  // outside the band
        rule_at(Some("10.0.0.2/32"), 11000, 3000, TAG), // just past the band
    ] {
        assert_eq!(rule_class(&s, &r), (Class::Foreign, None), "{r:?}");
    }
}

#[test]
fn unrepresentable_tagged_rules_at_our_priority_are_findings() {
    let s = space();
    let iif = Rule {
        other_selectors: true,
        ..rule_at(None, 10000, 3000, TAG)
    };
    assert_eq!(
        rule_class(&s, &iif),
        (Class::Finding, Some(RuleProblem::OtherSelectors))
    );
    // A blackhole (non-lookup) rule reads as table 0 with other selectors.
    let blackhole = Rule {
        other_selectors: true,
        ..rule_at(Some("10.0.0.2/32"), 0, 3000, TAG)
    };
    assert_eq!(rule_class(&s, &blackhole).0, Class::Finding);
    let from_all = rule_at(None, 10000, 3000, TAG);
    assert_eq!(
        rule_class(&s, &from_all),
        (Class::Finding, Some(RuleProblem::FromAll))
    );
    // The same at another priority is foreign, not a finding.
    let elsewhere = Rule {
        priority: 100,
        ..iif
    };
    assert_eq!(rule_class(&s, &elsewhere).0, Class::Foreign);
}

// ------------------------------------------------------------ routes

#[test]
fn tagged_unicast_routes_in_band_tables_are_ours_elsewhere_foreign() {
    let s = space();
    assert_eq!(
        route_class(&s, &route(10000, "10.0.0.0/24", TAG)).0,
        Class::Ours
    );
    let universe = Route {
        scope: Scope::Universe,
        gateway: Some(ip("10.0.0.1")),
        ..route(10000, "0.0.0.0/0", TAG)
    };
    assert_eq!(route_class(&s, &universe).0, Class::Ours);
    for r in [
        route(RT_TABLE_MAIN, "10.0.0.0/24", TAG),
        route(253, "10.0.0.0/24", TAG),
        route(77, "10.0.0.0/24", TAG),
        route(0, "10.0.0.0/24", TAG),
        route(10000, "10.0.0.0/24", 3),
        route(10000, "10.0.0.0/24", 116),
    ] {
        assert_eq!(route_class(&s, &r), (Class::Foreign, None), "{r:?}");
    }
}

#[test]
fn unrepresentable_tagged_routes_in_band_tables_are_findings() {
    let s = space();
    for (kind, r) in [
        (RouteType::BLACKHOLE, route(10000, "198.51.100.0/24", TAG)),
        (RouteType::UNREACHABLE, route(10001, "198.51.100.0/24", TAG)),
        (RouteType::LOCAL, route(10002, "198.51.100.7/32", TAG)),
        (RouteType::PROHIBIT, route(10003, "198.51.100.0/24", TAG)),
    ] {
        let r = Route { kind, ..r };
        assert_eq!(
            route_class(&s, &r),
            (Class::Finding, Some(RouteProblem::NotUnicast)),
            "{kind}"
        );
    }
    let multipath = Route {
        oif: 0,
        multipath: vec![
            NextHop {
                oif: 2,
                gateway: Some(ip("10.0.0.1")),
            },
            NextHop {
                oif: 3,
                gateway: Some(ip("10.1.0.1")),
            },
        ],
        ..route(10000, "0.0.0.0/0", TAG)
    };
    assert_eq!(
        route_class(&s, &multipath),
        (Class::Finding, Some(RouteProblem::Multipath))
    );
    let host_scope = Route {
        scope: Scope::Other,
        ..route(10000, "10.0.0.9/32", TAG)
    };
    assert_eq!(
        route_class(&s, &host_scope),
        (Class::Finding, Some(RouteProblem::Scope))
    );
}

// ------------------------------------------------------------ spaces

#[test]
fn a_named_table_joins_one_space_reserved_ones_never() {
    let s = space().with_table(100).unwrap();
    assert!(s.has_table(100) && s.has_table(10000) && !s.has_table(101));
    assert_eq!(
        route_class(&s, &route(100, "10.0.0.0/24", TAG)).0,
        Class::Ours
    );
    for t in [0, 252, 253, 254, 255] {
        let e = space().with_table(t).unwrap_err();
        assert_eq!(e.table, t);
        assert!(e.to_string().contains("no writer may use it"), "{e}");
    }
    // A band can never make a reserved table ours either.
    let wide = Space {
        table_min: 1,
        table_max: 20000,
        ..space()
    };
    assert!(!wide.has_table(254) && !wide.has_table(0) && wide.has_table(251));
}

#[test]
fn protocols_of_others_are_refused_with_their_owner() {
    for (n, owner) in [
        (0, "unspec"),
        (2, "kernel"),
        (4, "static"),
        (9, "`ra` (router advertisements)"),
        (12, "bird"),
        (16, "dhcp"),
        (18, "keepalived"),
        (42, "babel"),
        (99, "openr"),
        (186, "bgp"),
        (188, "ospf"),
        (190, "FRR"),
        (192, "eigrp"),
    ] {
        let e = Protocol::new(n).unwrap_err();
        assert!(e.to_string().contains(owner), "{n}: {e}");
        assert!(
            e.to_string().starts_with(&format!("protocol {n} is ")),
            "{e}"
        );
    }
    for n in [5, 6, 7, 19, 80, 100, 115, 116, 185, 193, 254] {
        assert_eq!(Protocol::new(n).unwrap().get(), n);
    }
    assert_eq!(Protocol::HOST.get(), 115);
    assert_eq!(Protocol::CNI.get(), 116);
    // Serde refuses them too (config files, state files).
    assert!(serde_json::from_str::<Protocol>("9").is_err());
    assert_eq!(
        serde_json::from_str::<Protocol>("115").unwrap(),
        Protocol::HOST
    );
}

// ------------------------------------------------------------ ambiguity, shadows

#[test]
fn a_delete_that_could_match_a_finding_is_not_sent() {
    let ours = rule_at(Some("10.0.0.2/32"), 10000, 3000, TAG);
    let iif = Rule {
        other_selectors: true,
        ..ours.clone()
    };
    let unrelated = Rule {
        other_selectors: true,
        ..rule_at(Some("10.0.0.3/32"), 10000, 3000, TAG)
    };
    let snap = Snapshot {
        rules: vec![iif.clone(), ours.clone(), unrelated],
        ..Snapshot::default()
    };
    let own = classify(&snap, &space());
    assert_eq!(own.rules, vec![ours.clone()]);
    assert_eq!(own.findings.len(), 2);
    assert_eq!(own.ambiguous_delete(&ours), Some(&iif));
    let (ops, findings) = own.exact_deletes(vec![Op::DelRule(ours.clone())]);
    assert!(ops.is_empty());
    assert_eq!(
        findings,
        vec![Finding::AmbiguousDelete {
            ours: ours.clone(),
            other: iif
        }]
    );
    assert!(findings[0].to_string().contains("was not deleted"));
}

#[test]
fn shadowing_rules_are_found_by_priority_and_list_order() {
    let ours = rule_at(Some("10.0.0.2/32"), 10000, 3000, TAG);
    let covering = rule_at(Some("10.0.0.0/24"), 100, 2000, 3);
    let same_prio = rule_at(Some("10.0.0.2/32"), 200, 3000, 3);
    let with_iif = Rule {
        other_selectors: true,
        ..rule_at(Some("10.0.0.2/32"), 200, 1000, 3)
    };
    let after = rule_at(Some("10.0.0.2/32"), 200, 4000, 3);
    let other_addr = rule_at(Some("10.0.0.3/32"), 200, 1000, 3);
    let local = rule_at(None, 255, 0, 2);
    let check = |rules: Vec<Rule>| {
        let snap = Snapshot {
            rules,
            ..Snapshot::default()
        };
        let own = classify(&snap, &space());
        shadowing(&snap, &own, &ours).cloned()
    };
    // Nothing but local, later, narrower-selector and other-address rules.
    assert_eq!(
        check(vec![
            local.clone(),
            with_iif.clone(),
            other_addr.clone(),
            ours.clone(),
            after.clone()
        ]),
        None
    );
    assert_eq!(
        check(vec![local.clone(), covering.clone(), ours.clone()]),
        Some(covering)
    );
    // Equal priority: the earlier in the list wins.
    assert_eq!(
        check(vec![same_prio.clone(), ours.clone()]),
        Some(same_prio.clone())
    );
    assert_eq!(check(vec![ours.clone(), same_prio.clone()]), None);
    // Ours missing: it would be added after the one already there.
    assert_eq!(check(vec![same_prio.clone()]), Some(same_prio));
}

// ------------------------------------------------------------ the property

/// eth<index - 2>, no MAC.
fn eth(index: u32, addrs: &[&str]) -> Link {
    eth_no_mac(index, &format!("eth{}", index - 2), addrs)
}

/// What an arbitrary object of someone else's looks like.
#[derive(Debug, Clone)]
struct Other {
    rule: bool,
    /// 0 main, 1 table 77, 2 band table, 3 default, 4 other band table
    table: usize,
    /// 0 our tag, 1 boot, 2 static, 3 CNI's
    protocol: usize,
    /// 0 plain, 1 iif-style selectors, 2 from all, 3 blackhole-ish type
    shape: usize,
    /// 0 our priority, 1 another
    priority: usize,
    addr: usize,
}

fn other() -> impl Strategy<Value = Other> {
    (
        any::<bool>(),
        0usize..5,
        0usize..4,
        0usize..4,
        0usize..2,
        0usize..3,
    )
        .prop_map(|(rule, table, protocol, shape, priority, addr)| Other {
            rule,
            table,
            protocol,
            shape,
            priority,
            addr,
        })
}

const ADDRS: [&str; 3] = ["172.18.0.2", "172.19.0.2", "172.18.0.9"];

fn build(others: &[Other], leftovers: bool) -> FakeKernel {
    let mut k =
        FakeKernel::with_links(vec![eth(2, &["172.18.0.2/16"]), eth(3, &["172.19.0.2/16"])]);
    if leftovers {
        // A run of ours from before, in the kernel the way it adds them.
        for (a, t) in [("172.18.0.2/32", 10000), ("172.19.0.2/32", 10001)] {
            k.execute(&Op::AddRule(rule_at(Some(a), t, 3000, TAG)))
                .unwrap();
        }
        k.state.routes.push(Route {
            oif: 2,
            prefsrc: Some(ip("172.18.0.2")),
            ..route(10000, "172.18.0.0/16", TAG)
        });
    }
    for (i, o) in others.iter().enumerate() {
        let table = [RT_TABLE_MAIN, 77, 10000, 253, 10001][o.table];
        let protocol = [TAG, 3, 4, 116][o.protocol];
        if o.rule {
            let src = (o.shape != 2).then(|| format!("{}/32", ADDRS[o.addr]));
            let r = Rule {
                priority: [3000, 2500][o.priority],
                other_selectors: o.shape == 1 || o.shape == 3,
                table: if o.shape == 3 { 0 } else { table },
                ..rule_at(src.as_deref(), table, 3000, protocol)
            };
            // Keep list order realistic: before or after ours, by index.
            if i % 2 == 0 {
                k.state.rules.insert(1, r);
            } else {
                k.state.rules.push(r);
            }
        } else {
            let dst = ["198.51.100.0/24", "0.0.0.0/0", "172.18.0.0/16"][o.addr];
            let r = Route {
                kind: if o.shape == 3 {
                    RouteType::BLACKHOLE
                } else {
                    RouteType::UNICAST
                },
                oif: if o.shape == 3 { 0 } else { 2 },
                scope: if o.shape == 3 {
                    Scope::Universe
                } else {
                    Scope::Link
                },
                metric: [0, 5, 7][i % 3],
                ..route(table, dst, protocol)
            };
            if !k.state.routes.iter().any(|x| x.key() == r.key()) {
                k.state.routes.push(r);
            }
        }
    }
    k.log.clear();
    k
}

// The oracle, written out here independently of the classification under
// test: symroute's objects under the default settings.
fn oracle_rule(r: &Rule) -> bool {
    r.protocol == TAG
        && r.priority == 3000
        && (10000..=10999).contains(&r.table)
        && !r.other_selectors
        && r.src.is_some()
}

fn oracle_route(r: &Route) -> bool {
    r.protocol == TAG
        && (10000..=10999).contains(&r.table)
        && r.kind == RouteType::UNICAST
        && r.multipath.is_empty()
        && r.scope != Scope::Other
}

/// Every object of `before` that is not symroute's is still in `after`, as
/// many times as before.
fn untouched(before: &Snapshot, after: &Snapshot) -> Result<(), TestCaseError> {
    for r in before.rules.iter().filter(|r| !oracle_rule(r)) {
        let n = |s: &Snapshot| s.rules.iter().filter(|x| *x == r).count();
        prop_assert_eq!(n(after), n(before), "rule {:?} was touched", r);
    }
    for r in before.routes.iter().filter(|r| !oracle_route(r)) {
        prop_assert!(after.routes.contains(r), "route {:?} was touched", r);
    }
    Ok(())
}

/// Every operation is on an object of symroute's space: deletes only of
/// objects that are symroute's, adds only tagged, at our priority, in band.
fn ops_in_space(before: &Snapshot, ops: &[Op]) -> Result<(), TestCaseError> {
    for op in ops {
        match op {
            Op::DelRule(r) => {
                prop_assert!(
                    oracle_rule(r) && before.rules.contains(r),
                    "deletes {:?}",
                    r
                );
                // And the delete matches no object that is not ours (the
                // kernel matches only the attributes sent).
                for x in before.rules.iter().filter(|x| !oracle_rule(x)) {
                    let hits = x.family == r.family
                        && x.priority == r.priority
                        && x.table == r.table
                        && x.protocol == r.protocol
                        && x.src == r.src;
                    prop_assert!(!hits, "delete of {:?} could remove {:?}", r, x);
                }
            }
            Op::DelRoute(r) => {
                prop_assert!(
                    oracle_route(r) && before.routes.contains(r),
                    "deletes {:?}",
                    r
                );
            }
            Op::AddRule(r) => prop_assert!(oracle_rule(r), "adds {:?}", r),
            Op::AddRoute(r) => prop_assert!(oracle_route(r), "adds {:?}", r),
        }
    }
    Ok(())
}

fn request(all: bool) -> ApplyOptions {
    ApplyOptions {
        request: PlanRequest {
            gateways: vec![GatewayHint {
                ifname: "eth1".into(),
                gateway: ip("172.19.0.1"),
            }],
            selection: if all {
                Selection::All
            } else {
                Selection::MultiHomed
            },
            routes: Vec::new(),
        },
        dad_wait: Duration::ZERO,
        ..ApplyOptions::default()
    }
}

proptest! {
    #![proptest_config(Config { cases: 300, ..Config::default() })]

    #[test]
    fn apply_and_clean_touch_nothing_outside_the_space(
        others in prop::collection::vec(other(), 0..8),
        leftovers in any::<bool>(),
        all in any::<bool>(),
    ) {
        let mut k = build(&others, leftovers);
        let before = k.state.clone();
        let o = request(all);
        match engine::apply(&mut k, &o) {
            Ok(rep) => {
                ops_in_space(&before, &rep.ops)?;
                prop_assert_eq!(&k.log, &rep.ops);
                untouched(&before, &k.state)?;
                // Findings are reported, one per unrepresentable object.
                let own = classify(&before, &space());
                for f in &own.findings {
                    prop_assert!(rep.findings.contains(f), "{} not reported", f);
                }
                // A second run changes nothing (findings are never "removed").
                let again = engine::apply(&mut k, &o).unwrap();
                prop_assert!(again.ops.is_empty(), "{:?}", again.ops);
            }
            // A plan refusal changes nothing.
            Err(engine::EngineError::Plan(_)) => prop_assert_eq!(&k.state, &before),
            Err(e) => return Err(TestCaseError::fail(format!("apply: {e}"))),
        }
        let mid = k.state.clone();
        let calls = k.calls();
        let c = engine::clean(&mut k, &Settings::default()).unwrap();
        ops_in_space(&mid, &c.removed)?;
        prop_assert_eq!(&k.log[calls..], &c.removed[..]);
        untouched(&mid, &k.state)?;
        untouched(&before, &k.state)?;
        // Nothing of ours is left but the deletes that could not be exact.
        for r in k.state.rules.iter().filter(|r| oracle_rule(r)) {
            prop_assert!(
                c.findings.iter().any(|f| matches!(f, Finding::AmbiguousDelete { ours, .. } if ours == r)),
                "rule {:?} left without a finding", r
            );
        }
        let left: Vec<&Route> = k.state.routes.iter().filter(|r| oracle_route(r)).collect();
        prop_assert!(left.is_empty(), "{:?}", left);
    }
}

/// The input on which the property above once failed (found in a fresh
/// root by proptest): two stale default routes of ours in the interface's
/// table, metrics 7 and 0; the metric-0 one holds the wanted key. Apply
/// deletes that one first (a delete without a metric takes the lowest-metric
/// match, in the kernel as in the fake), adds the wanted route, and removes
/// the other stale one.
#[test]
fn a_stale_route_holding_the_wanted_key_goes_first_beside_a_higher_metric_twin() {
    let other = |table, addr| Other {
        rule: false,
        table,
        protocol: 0,
        shape: 0,
        priority: 0,
        addr,
    };
    let mut k = build(&[other(0, 0), other(0, 0), other(4, 1), other(4, 1)], true);
    let rep = engine::apply(&mut k, &request(false)).expect("apply");
    let defaults: Vec<(u32, Option<std::net::IpAddr>)> = k
        .state
        .routes
        .iter()
        .filter(|r| r.table == 10001 && r.is_default())
        .map(|r| (r.metric, r.gateway))
        .collect();
    // Both stale ones were ours (tagged, in the band) and are gone.
    assert_eq!(defaults, vec![(0, Some(ip("172.19.0.1")))]);
    assert!(
        engine::apply(&mut k, &request(false))
            .expect("again")
            .ops
            .is_empty()
    );
    assert!(!rep.ops.is_empty());
}
