//! The planner and the diff, scenario by scenario, on hand-built snapshots.

use symroute_core::diff::{Op, diff};
use symroute_core::model::{
    Family, NextHop, RT_TABLE_MAIN, Route, RouteType, Rule, Scope, Snapshot,
};
use symroute_core::plan::{
    GatewayChoice, GatewayHint, GatewaySource, Plan, PlanError, PlanRequest, Selection, plan,
};
use symroute_core::settings::Settings;
use symroute_testkit::snap::{
    BOOT, RA, TAG, conn, dad_failed, dflt, down, eth, eth_with, global, hints, host, ip,
    link_local, lo, net, rule, rule_at, snap, tentative,
};

// ---------------------------------------------------------------- helpers

fn settings() -> Settings {
    Settings::default()
}

fn no_hints() -> PlanRequest {
    PlanRequest::default()
}

fn all_interfaces() -> PlanRequest {
    PlanRequest {
        selection: Selection::All,
        ..PlanRequest::default()
    }
}

fn plan_ok(s: &Snapshot, req: &PlanRequest) -> Plan {
    plan(s, &settings(), req).unwrap_or_else(|e| panic!("plan failed: {e}"))
}

fn plan_err(s: &Snapshot, req: &PlanRequest) -> PlanError {
    match plan(s, &settings(), req) {
        Ok(p) => panic!("plan should fail, got {p:#?}"),
        Err(e) => e,
    }
}

/// A default route of main, as Docker or DHCP leaves it.
fn main_default(gw: &str, oif: u32, metric: u32) -> Route {
    Route {
        table: RT_TABLE_MAIN,
        protocol: if Family::of(&ip(gw)) == Family::V6 {
            RA
        } else {
            BOOT
        },
        metric,
        ..dflt(RT_TABLE_MAIN, gw, oif)
    }
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn iface<'a>(p: &'a Plan, name: &str) -> &'a symroute_core::plan::InterfacePlan {
    p.interfaces
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the plan: {p:#?}"))
}

fn table_of(p: &Plan, name: &str) -> u32 {
    iface(p, name).table
}

fn gateway_of(p: &Plan, name: &str, family: Family) -> Option<GatewayChoice> {
    iface(p, name)
        .gateways
        .iter()
        .find(|g| g.family == family)
        .cloned()
}

fn defaults_in(p: &Plan, table: u32) -> Vec<&Route> {
    p.routes
        .iter()
        .filter(|r| r.table == table && r.is_default())
        .collect()
}

/// Two interfaces of the seed: eth0 172.18.0.2/16, eth1 172.19.0.2/16.
fn two_homed() -> Snapshot {
    snap(vec![
        lo(),
        eth(2, "eth0", &["172.18.0.2/16"]),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ])
}

// ---------------------------------------------------- which interfaces

#[test]
fn single_interface_is_unmanaged_with_a_reason() {
    let s = snap(vec![lo(), eth(2, "eth0", &["172.18.0.2/16"])]);
    let p = plan_ok(&s, &no_hints());
    assert!(p.interfaces.is_empty());
    assert!(p.rules.is_empty());
    assert!(p.routes.is_empty());
    let reason = p.unmanaged_reason.expect("a reason");
    assert!(
        reason.starts_with("1 interface with a global address"),
        "{reason}"
    );
}

#[test]
fn no_interface_is_unmanaged_with_a_reason() {
    let p = plan_ok(&snap(vec![lo()]), &no_hints());
    assert!(p.interfaces.is_empty() && p.rules.is_empty() && p.routes.is_empty());
    let reason = p.unmanaged_reason.expect("a reason");
    assert!(
        reason.starts_with("0 interfaces with a global address"),
        "{reason}"
    );
}

#[test]
fn selection_all_manages_a_single_interface() {
    let s = snap(vec![lo(), eth(2, "eth0", &["172.18.0.2/16"])]);
    let p = plan_ok(&s, &all_interfaces());
    assert_eq!(p.unmanaged_reason, None);
    assert_eq!(p.interfaces.len(), 1);
    assert_eq!(p.rules, vec![rule("172.18.0.2", 10000)]);
    assert_eq!(
        p.routes,
        vec![conn(10000, "172.18.0.0/16", 2, "172.18.0.2")]
    );
}

#[test]
fn selection_all_with_no_interface_plans_nothing() {
    let p = plan_ok(&snap(vec![lo()]), &all_interfaces());
    assert!(p.interfaces.is_empty() && p.rules.is_empty() && p.routes.is_empty());
}

#[test]
fn loopback_is_never_managed_even_with_a_global_address() {
    let mut l = lo();
    l.addrs.push(global("10.255.0.1/32"));
    let s = snap(vec![l, eth(2, "eth0", &["172.18.0.2/16"])]);
    let p = plan_ok(&s, &no_hints());
    assert!(p.interfaces.is_empty(), "{p:#?}");
    assert!(p.unmanaged_reason.is_some());
    let p = plan_ok(&s, &all_interfaces());
    assert_eq!(p.interfaces.len(), 1);
    assert!(p.rules.iter().all(|r| r.src != Some(host("10.255.0.1"))));
}

#[test]
fn interfaces_with_only_link_local_addresses_are_not_counted() {
    let s = snap(vec![
        lo(),
        eth(2, "eth0", &["172.18.0.2/16"]),
        eth_with(3, "eth1", vec![link_local("fe80::1:2/64")]),
        eth_with(4, "eth2", vec![link_local("169.254.3.3/16")]),
    ]);
    let p = plan_ok(&s, &no_hints());
    assert!(p.interfaces.is_empty());
    assert!(p.unmanaged_reason.unwrap().starts_with("1 interface"));
}

#[test]
fn an_interface_whose_only_global_address_failed_dad_is_not_counted() {
    let s = snap(vec![
        lo(),
        eth(2, "eth0", &["172.18.0.2/16"]),
        eth_with(3, "eth1", vec![dad_failed("2001:db8:1::2/64")]),
    ]);
    let p = plan_ok(&s, &no_hints());
    assert!(p.interfaces.is_empty());
    assert!(p.unmanaged_reason.is_some());
}

// ------------------------------------------------------- basic shapes

#[test]
fn two_interfaces_get_tables_from_10000_in_ifindex_order() {
    // Listed out of order: the planner goes by ifindex.
    let s = snap(vec![
        eth(7, "eth1", &["172.19.0.2/16"]),
        lo(),
        eth(4, "eth0", &["172.18.0.2/16"]),
    ]);
    let p = plan_ok(&s, &no_hints());
    assert_eq!(p.unmanaged_reason, None);
    let names: Vec<&str> = p.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["eth0", "eth1"]);
    assert_eq!(table_of(&p, "eth0"), 10000);
    assert_eq!(table_of(&p, "eth1"), 10001);
    assert_eq!(
        p.rules,
        sorted(&[rule("172.18.0.2", 10000), rule("172.19.0.2", 10001)])
    );
    assert_eq!(
        p.routes,
        sorted(&[
            conn(10000, "172.18.0.0/16", 4, "172.18.0.2"),
            conn(10001, "172.19.0.0/16", 7, "172.19.0.2"),
        ])
    );
    for i in &p.interfaces {
        assert!(i.gateways.is_empty());
        assert_eq!(i.no_gateway, vec![Family::V4]);
        assert!(
            i.notes.iter().any(|n| n.contains("no IPv4 gateway known")),
            "{:?}",
            i.notes
        );
    }
    let e0 = iface(&p, "eth0");
    assert_eq!(e0.index, 4);
    assert_eq!(e0.mac.as_deref(), Some("02:42:ac:00:00:04"));
    assert!(e0.up);
    assert_eq!(e0.addrs, vec![net("172.18.0.2/16")]);
}

#[test]
fn three_interfaces_with_gateways_from_main() {
    let mut s = snap(vec![
        lo(),
        eth(9, "eth2", &["10.3.0.5/24"]),
        eth(3, "eth0", &["172.18.0.2/16"]),
        eth(5, "eth1", &["172.19.0.2/16"]),
    ]);
    s.routes.push(main_default("172.18.0.1", 3, 0));
    s.routes.push(main_default("172.19.0.1", 5, 100));
    s.routes.push(main_default("10.3.0.1", 9, 200));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth0"), 10000);
    assert_eq!(table_of(&p, "eth1"), 10001);
    assert_eq!(table_of(&p, "eth2"), 10002);
    assert_eq!(
        p.rules,
        sorted(&[
            rule("172.18.0.2", 10000),
            rule("172.19.0.2", 10001),
            rule("10.3.0.5", 10002),
        ])
    );
    assert_eq!(
        p.routes,
        sorted(&[
            conn(10000, "172.18.0.0/16", 3, "172.18.0.2"),
            dflt(10000, "172.18.0.1", 3),
            conn(10001, "172.19.0.0/16", 5, "172.19.0.2"),
            dflt(10001, "172.19.0.1", 5),
            conn(10002, "10.3.0.0/24", 9, "10.3.0.5"),
            dflt(10002, "10.3.0.1", 9),
        ])
    );
    for i in &p.interfaces {
        assert_eq!(i.gateways.len(), 1);
        assert_eq!(i.gateways[0].source, GatewaySource::MainTable);
        assert!(!i.gateways[0].onlink);
        assert!(i.no_gateway.is_empty());
        assert!(i.notes.is_empty(), "{:?}", i.notes);
    }
}

#[test]
fn rules_are_host_prefixes_at_priority_3000_with_protocol_115() {
    let s = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16", "2001:db8:1::2/64"]),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ]);
    let p = plan_ok(&s, &no_hints());
    assert_eq!(p.rules.len(), 3);
    for r in &p.rules {
        let src = r.src.expect("a from selector");
        assert_eq!(src.prefix_len(), r.family.host_prefix());
        assert_eq!(r.family, Family::of(&src.addr()));
        assert_eq!(r.priority, 3000);
        assert_eq!(r.protocol, 115);
        assert!(!r.other_selectors);
    }
    assert!(p.rules.contains(&rule("2001:db8:1::2", 10000)));
}

#[test]
fn ipv4_connected_route_has_src_and_scope_link() {
    let p = plan_ok(&two_homed(), &no_hints());
    let r = p
        .routes
        .iter()
        .find(|r| r.dst == net("172.19.0.0/16"))
        .unwrap();
    assert_eq!(r.table, 10001);
    assert_eq!(r.oif, 3);
    assert_eq!(r.gateway, None);
    assert_eq!(r.prefsrc, Some(ip("172.19.0.2")));
    assert_eq!(r.scope, Scope::Link);
    assert_eq!(r.kind, RouteType::UNICAST);
    assert_eq!(r.metric, 0);
    assert_eq!(r.protocol, TAG);
    assert!(!r.onlink && r.multipath.is_empty());
}

#[test]
fn default_route_via_the_gateway_when_known() {
    let mut s = two_homed();
    s.routes.push(main_default("172.18.0.1", 2, 0));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(defaults_in(&p, 10000), vec![&dflt(10000, "172.18.0.1", 2)]);
    assert!(defaults_in(&p, 10001).is_empty());
    assert_eq!(iface(&p, "eth1").no_gateway, vec![Family::V4]);
    assert!(iface(&p, "eth0").no_gateway.is_empty());
}

#[test]
fn two_addresses_in_one_prefix_give_one_connected_route_and_two_rules() {
    let s = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16", "172.18.0.9/16"]),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ]);
    let p = plan_ok(&s, &no_hints());
    let t = table_of(&p, "eth0");
    let rules: Vec<&Rule> = p.rules.iter().filter(|r| r.table == t).collect();
    assert_eq!(rules, vec![&rule("172.18.0.2", t), &rule("172.18.0.9", t)]);
    let routes: Vec<&Route> = p.routes.iter().filter(|r| r.table == t).collect();
    // The first address of the prefix is the source, as main's route has it.
    assert_eq!(routes, vec![&conn(t, "172.18.0.0/16", 2, "172.18.0.2")]);
}

#[test]
fn two_prefixes_on_one_interface_give_two_connected_routes() {
    let s = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16", "10.8.0.4/24"]),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ]);
    let p = plan_ok(&s, &no_hints());
    let routes: Vec<Route> = p
        .routes
        .iter()
        .filter(|r| r.table == 10000)
        .cloned()
        .collect();
    assert_eq!(
        routes,
        sorted(&[
            conn(10000, "10.8.0.0/24", 2, "10.8.0.4"),
            conn(10000, "172.18.0.0/16", 2, "172.18.0.2"),
        ])
    );
    assert_eq!(p.rules.iter().filter(|r| r.table == 10000).count(), 2);
}

#[test]
fn the_same_address_with_two_prefix_lengths_gives_one_rule() {
    // The kernel accepts 10.8.0.4/24 and 10.8.0.4/16 on one link.
    let s = snap(vec![
        eth(2, "eth0", &["10.8.0.4/24", "10.8.0.4/16"]),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ]);
    let p = plan_ok(&s, &no_hints());
    assert_eq!(
        p.rules,
        sorted(&[rule("10.8.0.4", 10000), rule("172.19.0.2", 10001)])
    );
    let routes: Vec<Route> = p
        .routes
        .iter()
        .filter(|r| r.table == 10000)
        .cloned()
        .collect();
    assert_eq!(
        routes,
        sorted(&[
            conn(10000, "10.8.0.0/24", 2, "10.8.0.4"),
            conn(10000, "10.8.0.0/16", 2, "10.8.0.4"),
        ])
    );
}

#[test]
fn host_address_gets_a_rule_but_no_connected_route() {
    let s = snap(vec![
        eth(2, "eth0", &["203.0.113.7/32"]),
        eth(3, "eth1", &["172.19.0.2/16", "2001:db8:9::9/128"]),
    ]);
    let p = plan_ok(&s, &no_hints());
    assert!(p.rules.contains(&rule("203.0.113.7", 10000)));
    assert!(p.rules.contains(&rule("2001:db8:9::9", 10001)));
    assert!(p.routes.iter().all(|r| r.table != 10000), "{:#?}", p.routes);
    assert!(p.routes.iter().all(|r| r.family() == Family::V4));
}

#[test]
fn ipv6_default_via_link_local_gateway_in_main() {
    let mut s = snap(vec![
        lo(),
        eth_with(
            2,
            "eth0",
            vec![
                global("2001:db8:1::2/64"),
                link_local("fe80::42:acff:fe12:2/64"),
            ],
        ),
        eth(3, "eth1", &["2001:db8:2::2/64"]),
    ]);
    s.routes.push(main_default("fe80::1", 2, 1024));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(
        p.rules,
        sorted(&[rule("2001:db8:1::2", 10000), rule("2001:db8:2::2", 10001)])
    );
    let want_default = Route {
        table: 10000,
        dst: net("::/0"),
        gateway: Some(ip("fe80::1")),
        oif: 2,
        prefsrc: None,
        scope: Scope::Universe,
        kind: RouteType::UNICAST,
        metric: 1024,
        onlink: false,
        protocol: TAG,
        multipath: Vec::new(),
    };
    let want_conn = Route {
        table: 10000,
        dst: net("2001:db8:1::/64"),
        gateway: None,
        oif: 2,
        prefsrc: None,
        scope: Scope::Universe,
        kind: RouteType::UNICAST,
        metric: 1024,
        onlink: false,
        protocol: TAG,
        multipath: Vec::new(),
    };
    let t0: Vec<Route> = p
        .routes
        .iter()
        .filter(|r| r.table == 10000)
        .cloned()
        .collect();
    assert_eq!(t0, sorted(&[want_default, want_conn]));
    assert_eq!(
        gateway_of(&p, "eth0", Family::V6),
        Some(GatewayChoice {
            family: Family::V6,
            gateway: ip("fe80::1"),
            source: GatewaySource::MainTable,
            onlink: false,
        })
    );
    // The link-local address gets no rule.
    assert!(
        p.rules
            .iter()
            .all(|r| !r.src.unwrap().to_string().starts_with("fe80"))
    );
}

#[test]
fn dual_stack_interfaces_get_both_families_in_one_table() {
    let mut s = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16", "2001:db8:1::2/64"]),
        eth(3, "eth1", &["172.19.0.2/16", "2001:db8:2::2/64"]),
    ]);
    s.routes.push(main_default("172.18.0.1", 2, 0));
    s.routes.push(main_default("fe80::1", 2, 1024));
    let p = plan_ok(&s, &hints(&[("eth1", "2001:db8:2::1")]));
    assert_eq!(
        p.routes,
        sorted(&[
            conn(10000, "172.18.0.0/16", 2, "172.18.0.2"),
            dflt(10000, "172.18.0.1", 2),
            conn(10000, "2001:db8:1::/64", 2, ""),
            dflt(10000, "fe80::1", 2),
            conn(10001, "172.19.0.0/16", 3, "172.19.0.2"),
            conn(10001, "2001:db8:2::/64", 3, ""),
            dflt(10001, "2001:db8:2::1", 3),
        ])
    );
    assert_eq!(iface(&p, "eth1").no_gateway, vec![Family::V4]);
    assert_eq!(p.rules.len(), 4);
}

// ------------------------------------------------------- gateway hints

#[test]
fn hint_for_an_unknown_interface_is_refused() {
    let e = plan_err(&two_homed(), &hints(&[("eth9", "172.19.0.1")]));
    assert_eq!(
        e,
        PlanError::UnknownInterface {
            ifname: "eth9".into(),
            gateway: ip("172.19.0.1"),
        }
    );
}

#[test]
fn hint_of_a_family_the_interface_lacks_is_refused() {
    let e = plan_err(&two_homed(), &hints(&[("eth1", "2001:db8:2::1")]));
    assert_eq!(
        e,
        PlanError::WrongFamily {
            ifname: "eth1".into(),
            gateway: ip("2001:db8:2::1"),
            family: Family::V6,
        }
    );
    // A link-local gateway needs a global address of its family too.
    let e = plan_err(&two_homed(), &hints(&[("eth1", "fe80::1")]));
    assert!(
        matches!(
            e,
            PlanError::WrongFamily {
                family: Family::V6,
                ..
            }
        ),
        "{e:?}"
    );
    // Loopback has no global address at all.
    let e = plan_err(&two_homed(), &hints(&[("lo", "127.0.0.2")]));
    assert!(matches!(e, PlanError::WrongFamily { .. }), "{e:?}");
}

#[test]
fn hint_outside_the_interface_prefixes_is_refused() {
    let e = plan_err(&two_homed(), &hints(&[("eth1", "172.18.0.1")]));
    assert_eq!(
        e,
        PlanError::OffLink {
            ifname: "eth1".into(),
            gateway: ip("172.18.0.1"),
            prefixes: "172.19.0.0/16".into(),
        }
    );
    // A host address has no prefix: any gateway is off-link.
    let s = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16"]),
        eth(3, "eth1", &["203.0.113.7/32"]),
    ]);
    let e = plan_err(&s, &hints(&[("eth1", "203.0.113.1")]));
    assert!(
        matches!(e, PlanError::OffLink { ref prefixes, .. } if prefixes.is_empty()),
        "{e:?}"
    );
}

#[test]
fn hint_naming_the_interface_own_address_is_refused() {
    let e = plan_err(&two_homed(), &hints(&[("eth1", "172.19.0.2")]));
    assert_eq!(
        e,
        PlanError::OwnAddress {
            ifname: "eth1".into(),
            gateway: ip("172.19.0.2"),
        }
    );
}

#[test]
fn two_different_hints_for_one_interface_and_family_are_refused() {
    let e = plan_err(
        &two_homed(),
        &hints(&[("eth1", "172.19.0.1"), ("eth1", "172.19.0.254")]),
    );
    assert_eq!(
        e,
        PlanError::Duplicate {
            ifname: "eth1".into(),
            family: Family::V4,
            first: ip("172.19.0.1"),
            second: ip("172.19.0.254"),
        }
    );
}

#[test]
fn the_same_hint_twice_is_accepted() {
    let p = plan_ok(
        &two_homed(),
        &hints(&[("eth1", "172.19.0.1"), ("eth1", "172.19.0.1")]),
    );
    assert_eq!(defaults_in(&p, 10001), vec![&dflt(10001, "172.19.0.1", 3)]);
}

#[test]
fn link_local_ipv6_hint_is_accepted_and_not_onlink() {
    let s = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16"]),
        eth(3, "eth1", &["2001:db8:2::2/64"]),
    ]);
    let p = plan_ok(&s, &hints(&[("eth1", "fe80::1")]));
    assert_eq!(
        gateway_of(&p, "eth1", Family::V6),
        Some(GatewayChoice {
            family: Family::V6,
            gateway: ip("fe80::1"),
            source: GatewaySource::Given,
            onlink: false,
        })
    );
    assert_eq!(defaults_in(&p, 10001), vec![&dflt(10001, "fe80::1", 3)]);
}

#[test]
fn hint_overrides_the_main_table() {
    let mut s = two_homed();
    s.routes.push(main_default("172.19.0.1", 3, 0));
    let p = plan_ok(&s, &hints(&[("eth1", "172.19.0.254")]));
    let g = gateway_of(&p, "eth1", Family::V4).unwrap();
    assert_eq!(
        (g.gateway, g.source),
        (ip("172.19.0.254"), GatewaySource::Given)
    );
    assert_eq!(
        defaults_in(&p, 10001),
        vec![&dflt(10001, "172.19.0.254", 3)]
    );
}

/// eth0 and eth1 of an earlier run: tables 10000 and 10001, eth1's default
/// via `kept_gw`.
fn two_homed_with_kept_default(kept_gw: &str) -> Snapshot {
    let mut s = two_homed();
    s.rules.push(rule("172.18.0.2", 10000));
    s.rules.push(rule("172.19.0.2", 10001));
    s.routes.push(conn(10000, "172.18.0.0/16", 2, "172.18.0.2"));
    s.routes.push(conn(10001, "172.19.0.0/16", 3, "172.19.0.2"));
    s.routes.push(dflt(10001, kept_gw, 3));
    s
}

#[test]
fn main_table_overrides_a_kept_gateway() {
    let mut s = two_homed_with_kept_default("172.19.0.254");
    s.routes.push(main_default("172.19.0.1", 3, 0));
    let p = plan_ok(&s, &no_hints());
    let g = gateway_of(&p, "eth1", Family::V4).unwrap();
    assert_eq!(
        (g.gateway, g.source),
        (ip("172.19.0.1"), GatewaySource::MainTable)
    );
    assert_eq!(defaults_in(&p, 10001), vec![&dflt(10001, "172.19.0.1", 3)]);
}

#[test]
fn kept_gateway_is_reused_without_hint_or_main() {
    let s = two_homed_with_kept_default("172.19.0.254");
    let p = plan_ok(&s, &no_hints());
    let g = gateway_of(&p, "eth1", Family::V4).unwrap();
    assert_eq!(
        (g.gateway, g.source),
        (ip("172.19.0.254"), GatewaySource::Kept)
    );
    assert_eq!(
        defaults_in(&p, 10001),
        vec![&dflt(10001, "172.19.0.254", 3)]
    );
    // Nothing changes: the plan is what is there.
    assert_eq!(p.rules, sorted(&s.rules));
    assert_eq!(p.routes, sorted(&s.routes));
}

#[test]
fn kept_gateway_is_dropped_when_no_longer_on_link() {
    let mut s = two_homed_with_kept_default("172.19.0.254");
    // eth1 was renumbered into another prefix.
    s.links[2].addrs = vec![global("10.7.0.2/24")];
    let p = plan_ok(&s, &no_hints());
    assert_eq!(gateway_of(&p, "eth1", Family::V4), None);
    assert_eq!(iface(&p, "eth1").no_gateway, vec![Family::V4]);
    assert!(defaults_in(&p, table_of(&p, "eth1")).is_empty());
}

#[test]
fn kept_onlink_gateway_stays_although_off_link() {
    let mut s = two_homed();
    s.rules.push(rule("172.19.0.2", 10001));
    s.routes.push(Route {
        onlink: true,
        ..dflt(10001, "100.64.0.1", 3)
    });
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth1"), 10001);
    let g = gateway_of(&p, "eth1", Family::V4).unwrap();
    assert_eq!((g.source, g.onlink), (GatewaySource::Kept, true));
    assert_eq!(
        defaults_in(&p, 10001),
        vec![&Route {
            onlink: true,
            ..dflt(10001, "100.64.0.1", 3)
        }]
    );
}

#[test]
fn kept_gateway_of_another_table_or_interface_is_not_used() {
    let mut s = two_homed();
    s.routes.push(conn(10001, "172.19.0.0/16", 3, "172.19.0.2"));
    // A tagged default through eth1, but in a table that is not eth1's.
    s.routes.push(dflt(10005, "172.19.0.254", 3));
    // A tagged default in eth1's table, but through eth0 (whose own table
    // is 10000).
    s.routes.push(conn(10000, "172.18.0.0/16", 2, "172.18.0.2"));
    s.routes.push(dflt(10001, "172.18.0.254", 2));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth0"), 10000);
    // Both of eth1's routes claim a table: the lower wins.
    assert_eq!(table_of(&p, "eth1"), 10001);
    assert_eq!(gateway_of(&p, "eth1", Family::V4), None);
    assert!(defaults_in(&p, 10001).is_empty());
}

#[test]
fn routes_through_an_interface_outrank_rules_from_its_addresses() {
    // eth0 (the lower ifindex) shares an address with eth1; the rule from it
    // points at eth1's table, which eth1's own routes name.
    let mut s = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16", "10.1.0.5/24"]),
        eth(3, "eth1", &["10.1.0.5/24"]),
    ]);
    s.rules.push(rule("10.1.0.5", 10000));
    s.rules.push(rule("10.1.0.5", 10001));
    s.rules.push(rule("172.18.0.2", 10001));
    s.routes.push(conn(10000, "10.1.0.0/24", 3, "10.1.0.5"));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth1"), 10000);
    assert_eq!(table_of(&p, "eth0"), 10001);
}

#[test]
fn a_shared_address_does_not_pull_an_interface_into_another_table() {
    // Both down (no routes); 10.1.0.5 is on both, 10.1.0.6 only on eth1.
    // eth0 comes first, but 10000 holds rules of an address eth0 lacks.
    let mut s = snap(vec![
        down(eth(2, "eth0", &["10.1.0.5/24"])),
        down(eth(3, "eth1", &["10.1.0.5/24", "10.1.0.6/24"])),
    ]);
    s.rules.push(rule("10.1.0.5", 10000));
    s.rules.push(rule("10.1.0.6", 10000));
    s.rules.push(rule("10.1.0.5", 10001));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth1"), 10000);
    assert_eq!(table_of(&p, "eth0"), 10001);
}

#[test]
fn multipath_default_in_main_gives_per_interface_gateways() {
    let mut s = two_homed();
    s.routes.push(Route {
        gateway: None,
        oif: 0,
        multipath: vec![
            NextHop {
                oif: 2,
                gateway: Some(ip("172.18.0.1")),
            },
            NextHop {
                oif: 3,
                gateway: Some(ip("172.19.0.1")),
            },
        ],
        ..main_default("172.18.0.1", 2, 0)
    });
    let p = plan_ok(&s, &no_hints());
    assert_eq!(defaults_in(&p, 10000), vec![&dflt(10000, "172.18.0.1", 2)]);
    assert_eq!(defaults_in(&p, 10001), vec![&dflt(10001, "172.19.0.1", 3)]);
    for name in ["eth0", "eth1"] {
        assert_eq!(
            gateway_of(&p, name, Family::V4).unwrap().source,
            GatewaySource::MainTable
        );
    }
}

#[test]
fn lowest_metric_default_in_main_wins_per_interface() {
    let mut s = two_homed();
    s.routes.push(main_default("172.18.0.9", 2, 600));
    s.routes.push(main_default("172.18.0.1", 2, 100));
    s.routes.push(main_default("172.18.0.5", 2, 300));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(defaults_in(&p, 10000), vec![&dflt(10000, "172.18.0.1", 2)]);
}

#[test]
fn non_unicast_and_non_main_defaults_are_not_gateways() {
    let mut s = two_homed();
    s.routes.push(Route {
        kind: RouteType::BLACKHOLE,
        ..main_default("172.18.0.1", 2, 0)
    });
    s.routes.push(Route {
        table: 100,
        ..main_default("172.19.0.1", 3, 0)
    });
    let p = plan_ok(&s, &no_hints());
    assert!(p.routes.iter().all(|r| !r.is_default()), "{:#?}", p.routes);
}

#[test]
fn onlink_gateway_from_main_stays_onlink() {
    // A cloud-style /32 address with an on-link gateway.
    let mut s = snap(vec![
        eth(2, "eth0", &["10.128.0.5/32"]),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ]);
    s.routes.push(Route {
        onlink: true,
        ..main_default("10.128.0.1", 2, 0)
    });
    let p = plan_ok(&s, &no_hints());
    assert_eq!(
        defaults_in(&p, 10000),
        vec![&Route {
            onlink: true,
            ..dflt(10000, "10.128.0.1", 2)
        }]
    );
    assert!(gateway_of(&p, "eth0", Family::V4).unwrap().onlink);
}

#[test]
fn off_link_gateway_from_main_without_the_flag_is_made_onlink() {
    let mut s = two_homed();
    s.routes.push(main_default("100.64.0.1", 2, 0));
    let p = plan_ok(&s, &no_hints());
    assert!(defaults_in(&p, 10000)[0].onlink);
}

// ------------------------------------------------------- table choice

#[test]
fn interface_keeps_its_table_from_tagged_routes_when_ifindex_order_changes() {
    // An earlier run gave eth1 10000 and eth0 10001; the ifindex order now
    // says otherwise.
    let mut s = two_homed();
    s.routes.push(conn(10000, "172.19.0.0/16", 3, "172.19.0.2"));
    s.routes.push(conn(10001, "172.18.0.0/16", 2, "172.18.0.2"));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth1"), 10000);
    assert_eq!(table_of(&p, "eth0"), 10001);
    assert_eq!(p.routes, sorted(&s.routes));
}

#[test]
fn interface_keeps_its_table_from_tagged_rules() {
    // eth0 is down (its routes are gone) but its rule says 10001.
    let mut s = snap(vec![
        down(eth(2, "eth0", &["172.18.0.2/16"])),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ]);
    s.rules.push(rule("172.18.0.2", 10001));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth0"), 10001);
    assert_eq!(table_of(&p, "eth1"), 10000);
}

#[test]
fn interface_keeps_its_table_when_another_interface_disappears() {
    let mut s = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16"]),
        eth(4, "eth2", &["10.3.0.5/24"]),
        eth(5, "eth3", &["10.4.0.5/24"]),
    ]);
    // eth1 (ifindex 3, table 10001) is gone; its rule is left.
    s.rules.push(rule("172.18.0.2", 10000));
    s.rules.push(rule("172.19.0.2", 10001));
    s.rules.push(rule("10.3.0.5", 10002));
    s.routes.push(conn(10000, "172.18.0.0/16", 2, "172.18.0.2"));
    s.routes.push(conn(10002, "10.3.0.0/24", 4, "10.3.0.5"));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth0"), 10000);
    assert_eq!(table_of(&p, "eth2"), 10002);
    // The new interface takes neither a kept table nor the one still in use
    // by the leftover rule.
    assert_eq!(table_of(&p, "eth3"), 10003);
    assert!(!p.rules.contains(&rule("172.19.0.2", 10001)));
}

#[test]
fn two_interfaces_claiming_one_table_get_different_tables() {
    // The address moved from eth0 to eth1: both point at 10000.
    let mut s = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16"]),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ]);
    s.routes.push(conn(10000, "172.18.0.0/16", 2, "172.18.0.2"));
    s.rules.push(rule("172.19.0.2", 10000));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth0"), 10000);
    assert_eq!(table_of(&p, "eth1"), 10001);
}

#[test]
fn among_shared_addresses_a_table_holding_only_the_interface_rules_wins() {
    // All down, every address on two links; the state an apply left:
    // eth_a {10.1.0.6, 2001:db8:9::3} in 10001, eth_b {2001:db8:9::3} in
    // 10000, eth_c {10.1.0.6} in 10002. The plan must be the same again.
    let mut s = snap(vec![
        down(eth(2, "eth_a", &["10.1.0.6/24", "2001:db8:9::3/128"])),
        down(eth(3, "eth_b", &["2001:db8:9::3/128"])),
        down(eth(4, "eth_c", &["10.1.0.6/24"])),
    ]);
    s.rules.push(rule("10.1.0.6", 10001));
    s.rules.push(rule("2001:db8:9::3", 10001));
    s.rules.push(rule("2001:db8:9::3", 10000));
    s.rules.push(rule("10.1.0.6", 10002));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth_a"), 10001);
    assert_eq!(table_of(&p, "eth_b"), 10000);
    assert_eq!(table_of(&p, "eth_c"), 10002);
    assert_eq!(p.rules, sorted(&s.rules));
}

#[test]
fn tagged_objects_outside_the_band_do_not_keep_a_table() {
    let mut s = two_homed();
    s.rules.push(rule("172.18.0.2", 200));
    s.routes.push(conn(200, "172.18.0.0/16", 2, "172.18.0.2"));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth0"), 10000);
    assert_eq!(table_of(&p, "eth1"), 10001);
}

#[test]
fn foreign_rule_using_10000_makes_the_planner_start_at_10001() {
    let mut s = two_homed();
    s.rules.push(rule_at(Some("10.0.0.0/8"), 10000, 100, 0));
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth0"), 10001);
    assert_eq!(table_of(&p, "eth1"), 10002);
}

#[test]
fn foreign_route_using_10000_makes_the_planner_start_at_10001() {
    let mut s = two_homed();
    s.routes.push(Route {
        protocol: BOOT,
        ..conn(10000, "192.168.50.0/24", 2, "172.18.0.2")
    });
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth0"), 10001);
    assert_eq!(table_of(&p, "eth1"), 10002);
}

#[test]
fn foreign_route_with_a_wanted_key_in_a_kept_table_is_a_conflict() {
    let mut s = two_homed_with_kept_default("172.19.0.254");
    // Someone replaced our default in 10001 with their own.
    s.routes.retain(|r| !(r.table == 10001 && r.is_default()));
    s.routes.push(Route {
        protocol: BOOT,
        ..dflt(10001, "172.19.0.7", 3)
    });
    let e = plan_err(&s, &hints(&[("eth1", "172.19.0.1")]));
    assert_eq!(
        e,
        PlanError::ForeignConflict {
            table: 10001,
            dst: net("0.0.0.0/0"),
            metric: 0,
            protocol: BOOT,
        }
    );
}

#[test]
fn foreign_route_with_another_key_in_a_kept_table_is_left_alongside() {
    // An operator added a route of their own to eth1's table: eth1 keeps
    // the table, the route stays theirs.
    let mut s = two_homed_with_kept_default("172.19.0.254");
    s.routes.push(Route {
        protocol: BOOT,
        ..dflt(10001, "172.19.0.7", 3)
    });
    s.routes.last_mut().unwrap().dst = net("192.168.0.0/16");
    let p = plan_ok(&s, &no_hints());
    assert_eq!(table_of(&p, "eth1"), 10001);
    assert!(p.routes.iter().all(|r| r.protocol == TAG));
}

#[test]
fn band_of_one_table_for_two_interfaces_is_exhausted() {
    let settings = Settings {
        table_min: 10000,
        table_max: 10000,
        ..Settings::default()
    };
    let e = plan(&two_homed(), &settings, &no_hints()).unwrap_err();
    assert_eq!(
        e,
        PlanError::TablesExhausted {
            ifname: "eth1".into(),
            min: 10000,
            max: 10000,
        }
    );
    // One interface fits.
    let p = plan(
        &snap(vec![eth(2, "eth0", &["172.18.0.2/16"])]),
        &settings,
        &all_interfaces(),
    )
    .unwrap();
    assert_eq!(table_of(&p, "eth0"), 10000);
}

#[test]
fn band_exhausted_by_foreign_tables() {
    let settings = Settings {
        table_min: 10000,
        table_max: 10002,
        ..Settings::default()
    };
    let mut s = two_homed();
    s.rules.push(rule_at(None, 10000, 100, 0));
    s.rules.push(rule_at(None, 10002, 100, 0));
    let e = plan(&s, &settings, &no_hints()).unwrap_err();
    assert!(
        matches!(e, PlanError::TablesExhausted { ref ifname, .. } if ifname == "eth1"),
        "{e:?}"
    );
}

#[test]
fn settings_choose_band_priority_and_protocol() {
    let settings = Settings {
        table_min: 20000,
        table_max: 20009,
        priority: 1234,
        protocol: symroute_core::model::Protocol::new(77).unwrap(),
    };
    let mut s = two_homed();
    // Objects with 115 are someone else's under these settings (from an
    // address on no interface: one from eth0's address would make eth0
    // "managed by another writer").
    s.rules.push(rule("172.18.0.99", 20000));
    let p = plan(&s, &settings, &hints(&[("eth0", "172.18.0.1")])).unwrap();
    assert_eq!(table_of(&p, "eth0"), 20001);
    assert_eq!(table_of(&p, "eth1"), 20002);
    assert!(
        p.rules
            .iter()
            .all(|r| r.priority == 1234 && r.protocol == 77)
    );
    assert!(p.routes.iter().all(|r| r.protocol == 77));
}

// ------------------------------------------------------- link states

#[test]
fn admin_down_link_gets_rules_but_no_routes_and_a_note() {
    let s = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16"]),
        down(eth(3, "eth1", &["172.19.0.2/16"])),
    ]);
    let p = plan_ok(&s, &hints(&[("eth1", "172.19.0.1")]));
    let t = table_of(&p, "eth1");
    assert!(p.rules.contains(&rule("172.19.0.2", t)));
    assert!(p.routes.iter().all(|r| r.table != t), "{:#?}", p.routes);
    let i = iface(&p, "eth1");
    assert!(!i.up);
    assert!(
        i.notes.iter().any(|n| n.contains("eth1 is down")),
        "{:?}",
        i.notes
    );
    // The gateway is still known, for when it comes up.
    assert_eq!(i.gateways.len(), 1);
}

#[test]
fn dad_failed_address_is_excluded_with_a_note() {
    let s = snap(vec![
        eth_with(
            2,
            "eth0",
            vec![global("2001:db8:1::2/64"), dad_failed("2001:db8:1::3/64")],
        ),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ]);
    let p = plan_ok(&s, &no_hints());
    let i = iface(&p, "eth0");
    assert_eq!(i.addrs, vec![net("2001:db8:1::2/64")]);
    assert!(
        i.notes
            .iter()
            .any(|n| n.contains("2001:db8:1::3/64") && n.contains("duplicate address detection")),
        "{:?}",
        i.notes
    );
    assert!(!p.rules.iter().any(|r| r.src == Some(host("2001:db8:1::3"))));
    assert!(!i.tentative.contains(&ip("2001:db8:1::3")));
}

#[test]
fn tentative_addresses_are_listed_and_still_planned() {
    let s = snap(vec![
        eth_with(
            2,
            "eth0",
            vec![global("172.18.0.2/16"), tentative("2001:db8:1::2/64")],
        ),
        eth(3, "eth1", &["172.19.0.2/16"]),
    ]);
    let p = plan_ok(&s, &no_hints());
    assert_eq!(iface(&p, "eth0").tentative, vec![ip("2001:db8:1::2")]);
    assert!(iface(&p, "eth1").tentative.is_empty());
    assert!(p.rules.contains(&rule("2001:db8:1::2", 10000)));
    // Its connected route carries no source, so it can be added meanwhile.
    let r = p
        .routes
        .iter()
        .find(|r| r.dst == net("2001:db8:1::/64"))
        .unwrap();
    assert_eq!(r.prefsrc, None);
}

// ------------------------------------------------------- determinism

#[test]
fn plan_is_sorted_and_independent_of_listing_order() {
    let mut a = snap(vec![
        eth(2, "eth0", &["172.18.0.2/16", "2001:db8:1::2/64"]),
        eth(3, "eth1", &["172.19.0.2/16", "172.19.0.3/16"]),
        eth(4, "eth2", &["10.3.0.5/24"]),
    ]);
    a.routes.push(main_default("172.18.0.1", 2, 0));
    a.routes.push(main_default("fe80::1", 2, 1024));
    let mut b = a.clone();
    b.links.reverse();
    b.routes.reverse();
    let pa = plan_ok(&a, &no_hints());
    let pb = plan_ok(&b, &no_hints());
    assert_eq!(pa, pb);
    assert!(pa.rules.is_sorted());
    assert!(pa.routes.is_sorted());
}

#[test]
fn gateway_hint_parses_ifname_equals_address() {
    let h: GatewayHint = "eth1=172.19.0.1".parse().unwrap();
    assert_eq!((h.ifname.as_str(), h.gateway), ("eth1", ip("172.19.0.1")));
    let h: GatewayHint = "eth1=fe80::1".parse().unwrap();
    assert_eq!(h.gateway, ip("fe80::1"));
    assert!("eth1".parse::<GatewayHint>().is_err());
    assert!("=172.19.0.1".parse::<GatewayHint>().is_err());
    assert!("eth1=gateway".parse::<GatewayHint>().is_err());
}

// ---------------------------------------------------------------- diff

#[test]
fn diff_of_equal_states_is_empty() {
    let rules = vec![rule("172.18.0.2", 10000), rule("172.19.0.2", 10001)];
    let routes = vec![
        conn(10000, "172.18.0.0/16", 2, "172.18.0.2"),
        dflt(10000, "172.18.0.1", 2),
    ];
    assert!(diff(&rules, &routes, &rules, &routes).is_empty());
    // Order does not matter.
    let mut r2 = rules.clone();
    r2.reverse();
    let mut o2 = routes.clone();
    o2.reverse();
    assert!(diff(&rules, &routes, &r2, &o2).is_empty());
    assert!(diff(&[], &[], &[], &[]).is_empty());
}

#[test]
fn diff_adds_routes_then_rules_then_deletes_rules_then_routes() {
    let keep_rule = rule("172.18.0.2", 10000);
    let new_rule = rule("172.19.0.2", 10001);
    let old_rule = rule("172.20.0.2", 10002);
    let keep_route = conn(10000, "172.18.0.0/16", 2, "172.18.0.2");
    let new_route = conn(10001, "172.19.0.0/16", 3, "172.19.0.2");
    let old_route = conn(10002, "172.20.0.0/16", 4, "172.20.0.2");
    let ops = diff(
        &[keep_rule.clone(), new_rule.clone()],
        &[keep_route.clone(), new_route.clone()],
        &[old_rule.clone(), keep_rule],
        &[old_route.clone(), keep_route],
    );
    assert_eq!(
        ops,
        vec![
            Op::AddRoute(new_route),
            Op::AddRule(new_rule),
            Op::DelRule(old_rule),
            Op::DelRoute(old_route),
        ]
    );
}

#[test]
fn diff_deletes_a_stale_route_holding_a_wanted_key_first() {
    let old = dflt(10000, "172.18.0.254", 2);
    let new = dflt(10000, "172.18.0.1", 2);
    let unrelated_old = conn(10003, "10.0.0.0/8", 2, "172.18.0.2");
    let r = rule("172.18.0.2", 10000);
    let ops = diff(
        std::slice::from_ref(&r),
        std::slice::from_ref(&new),
        &[],
        &[unrelated_old.clone(), old.clone()],
    );
    assert_eq!(
        ops,
        vec![
            Op::DelRoute(old),
            Op::AddRoute(new),
            Op::AddRule(r),
            Op::DelRoute(unrelated_old),
        ]
    );
}

#[test]
fn diff_adds_connected_routes_before_gateway_routes() {
    // The kernel checks a gateway against the routes present when its route
    // is added; sorted, a table's default would come first.
    let want = vec![
        dflt(10000, "172.18.0.1", 2),
        conn(10000, "172.18.0.0/16", 2, "172.18.0.2"),
        dflt(10001, "172.19.0.1", 3),
        conn(10001, "172.19.0.0/16", 3, "172.19.0.2"),
    ];
    let ops = diff(&[], &want, &[], &[]);
    assert_eq!(
        ops,
        vec![
            Op::AddRoute(want[1].clone()),
            Op::AddRoute(want[3].clone()),
            Op::AddRoute(want[0].clone()),
            Op::AddRoute(want[2].clone()),
        ]
    );
}

#[test]
fn diff_deletes_gateway_routes_before_connected_routes() {
    // So that a rollback, undoing in reverse, re-adds them after.
    let have = vec![
        conn(10004, "172.19.0.0/16", 3, "172.19.0.2"),
        dflt(10004, "172.19.0.1", 3),
        conn(10005, "172.19.0.0/16", 3, "172.19.0.2"),
    ];
    let ops = diff(&[], &[], &[], &have);
    assert_eq!(
        ops,
        vec![
            Op::DelRoute(have[1].clone()),
            Op::DelRoute(have[0].clone()),
            Op::DelRoute(have[2].clone()),
        ]
    );
    // Likewise for stale routes holding wanted keys.
    let want = vec![
        conn(10004, "172.19.0.0/16", 3, "172.19.0.3"),
        dflt(10004, "172.19.0.254", 3),
    ];
    let ops = diff(&[], &want, &[], &have[..2]);
    assert_eq!(
        ops,
        vec![
            Op::DelRoute(have[1].clone()),
            Op::DelRoute(have[0].clone()),
            Op::AddRoute(want[0].clone()),
            Op::AddRoute(want[1].clone()),
        ]
    );
}

#[test]
fn diff_treats_a_route_differing_in_any_field_as_another_route() {
    let want = conn(10000, "172.18.0.0/16", 2, "172.18.0.2");
    for have in [
        Route {
            prefsrc: Some(ip("172.18.0.3")),
            ..want.clone()
        },
        Route {
            scope: Scope::Universe,
            ..want.clone()
        },
        Route {
            onlink: true,
            ..want.clone()
        },
        Route {
            oif: 3,
            ..want.clone()
        },
    ] {
        let ops = diff(
            &[],
            std::slice::from_ref(&want),
            &[],
            std::slice::from_ref(&have),
        );
        assert_eq!(ops, vec![Op::DelRoute(have), Op::AddRoute(want.clone())]);
    }
}

#[test]
fn diff_deletes_a_duplicate_of_a_wanted_rule_once() {
    let r = rule("172.18.0.2", 10000);
    let ops = diff(std::slice::from_ref(&r), &[], &[r.clone(), r.clone()], &[]);
    assert_eq!(ops, vec![Op::DelRule(r.clone())]);
    // An unwanted rule present twice goes twice.
    let ops = diff(&[], &[], &[r.clone(), r.clone()], &[]);
    assert_eq!(ops, vec![Op::DelRule(r.clone()), Op::DelRule(r)]);
}

#[test]
fn op_inverse_and_direction() {
    let r = rule("172.18.0.2", 10000);
    let route = dflt(10000, "172.18.0.1", 2);
    for op in [
        Op::AddRule(r.clone()),
        Op::DelRule(r),
        Op::AddRoute(route.clone()),
        Op::DelRoute(route),
    ] {
        assert_eq!(op.inverse().inverse(), op);
        assert_ne!(op.inverse().is_add(), op.is_add());
    }
}
