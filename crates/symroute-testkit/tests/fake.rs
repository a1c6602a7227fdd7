//! The fake kernel against what the kernel does with the same messages.

use symroute_core::diff::Op;
use symroute_core::kernel::{Kernel, KernelError};
use symroute_core::model::{Family, IfAddr, Link, RT_TABLE_MAIN, Route, RouteType, Rule, Scope};
use symroute_testkit::fake::{FakeKernel, builtin_rules};

fn v4(s: &str) -> IfAddr {
    IfAddr {
        net: s.parse().unwrap(),
        global: true,
        tentative: false,
        dad_failed: false,
    }
}

fn link(index: u32, up: bool, addrs: Vec<IfAddr>) -> Link {
    Link {
        index,
        name: format!("eth{}", index - 2),
        mac: None,
        up,
        loopback: false,
        addrs,
    }
}

fn rule(src: &str, table: u32, protocol: u8) -> Rule {
    Rule {
        family: Family::V4,
        priority: 3000,
        src: Some(src.parse().unwrap()),
        table,
        protocol,
        other_selectors: false,
    }
}

fn route(dst: &str, gw: Option<&str>, table: u32, oif: u32) -> Route {
    Route {
        table,
        dst: dst.parse().unwrap(),
        gateway: gw.map(|g| g.parse().unwrap()),
        oif,
        prefsrc: None,
        scope: if gw.is_some() {
            Scope::Universe
        } else {
            Scope::Link
        },
        kind: RouteType::UNICAST,
        metric: 0,
        onlink: false,
        protocol: 115,
        multipath: Vec::new(),
    }
}

fn errno(r: Result<(), KernelError>) -> Option<i32> {
    r.err().and_then(|e| e.errno())
}

#[test]
fn rules_exclusive_add_and_delete_by_given_attributes() {
    let mut k = FakeKernel::with_links(vec![]);
    let r = rule("10.0.0.2/32", 10000, 115);
    k.execute(&Op::AddRule(r.clone())).unwrap();
    assert_eq!(
        errno(k.execute(&Op::AddRule(r.clone()))),
        Some(libc::EEXIST)
    );
    // Another protocol is another rule.
    k.execute(&Op::AddRule(rule("10.0.0.2/32", 10000, 3)))
        .unwrap();
    // Inserted by priority: between local (0) and main (32766).
    let prios: Vec<u32> = k
        .state
        .rules
        .iter()
        .filter(|x| x.family == Family::V4)
        .map(|x| x.priority)
        .collect();
    assert_eq!(prios, vec![0, 3000, 3000, 32766, 32767]);
    k.execute(&Op::DelRule(r.clone())).unwrap();
    assert_eq!(errno(k.execute(&Op::DelRule(r))), Some(libc::ENOENT));
    assert!(k.state.rules.iter().any(|x| x.protocol == 3));
    assert_eq!(k.calls(), 5);
}

#[test]
fn rule_messages_without_a_source_match_any_source() {
    let mut k = FakeKernel::with_links(vec![]);
    k.execute(&Op::AddRule(rule("10.0.0.2/32", 10000, 115)))
        .unwrap();
    let from_all = Rule {
        src: None,
        ..rule("10.0.0.2/32", 10000, 115)
    };
    // rule_exists() skips the source when the new rule has none...
    assert_eq!(
        errno(k.execute(&Op::AddRule(from_all.clone()))),
        Some(libc::EEXIST)
    );
    // ...and so does rule_find() on delete.
    k.execute(&Op::DelRule(from_all)).unwrap();
    assert!(k.state.rules.iter().all(|r| r.protocol != 115));
}

#[test]
fn routes_need_an_up_device_and_a_reachable_gateway() {
    let mut k = FakeKernel::with_links(vec![
        link(2, true, vec![v4("10.0.0.2/24")]),
        link(3, false, vec![v4("10.1.0.2/24")]),
    ]);
    let down = route("10.1.0.0/24", None, 10001, 3);
    assert_eq!(errno(k.execute(&Op::AddRoute(down))), Some(libc::ENETDOWN));
    let off = route("0.0.0.0/0", Some("10.9.0.1"), 10000, 2);
    assert_eq!(
        errno(k.execute(&Op::AddRoute(off.clone()))),
        Some(libc::ENETUNREACH)
    );
    let onlink = Route {
        onlink: true,
        ..off
    };
    k.execute(&Op::AddRoute(onlink.clone())).unwrap();
    assert_eq!(
        errno(k.execute(&Op::AddRoute(onlink.clone()))),
        Some(libc::EEXIST)
    );
    // Reachable through main's connected route.
    let via = route("10.5.0.0/16", Some("10.0.0.1"), 10000, 2);
    k.execute(&Op::AddRoute(via.clone())).unwrap();
    k.execute(&Op::DelRoute(via.clone())).unwrap();
    assert_eq!(errno(k.execute(&Op::DelRoute(via))), Some(libc::ESRCH));
    // IPv4 delete matches the scope.
    let wrong_scope = Route {
        scope: Scope::Link,
        ..onlink.clone()
    };
    assert_eq!(
        errno(k.execute(&Op::DelRoute(wrong_scope))),
        Some(libc::ESRCH)
    );
    k.execute(&Op::DelRoute(onlink)).unwrap();
}

#[test]
fn ipv6_metric_zero_reads_back_as_1024() {
    let a = IfAddr {
        net: "2001:db8::2/64".parse().unwrap(),
        global: true,
        tentative: false,
        dad_failed: false,
    };
    let mut k = FakeKernel::with_links(vec![link(2, true, vec![a])]);
    let mut r = route("2001:db8::/64", None, 10000, 2);
    r.scope = Scope::Universe;
    k.execute(&Op::AddRoute(r.clone())).unwrap();
    let stored = k.state.routes.iter().find(|x| x.table == 10000).unwrap();
    assert_eq!(stored.metric, 1024);
    r.metric = 1024;
    assert_eq!(errno(k.execute(&Op::AddRoute(r))), Some(libc::EEXIST));
}

#[test]
fn injected_failures_change_nothing() {
    let mut k = FakeKernel::with_links(vec![]);
    k.fail_at = Some(1);
    k.fail_count = 2;
    let r = rule("10.0.0.2/32", 10000, 115);
    k.execute(&Op::AddRule(r.clone())).unwrap();
    let before = k.state.clone();
    assert_eq!(errno(k.execute(&Op::DelRule(r.clone()))), Some(libc::EPERM));
    assert_eq!(errno(k.execute(&Op::DelRule(r.clone()))), Some(libc::EPERM));
    assert_eq!(k.state, before);
    k.execute(&Op::DelRule(r)).unwrap();
    assert_eq!(k.calls(), 4);
}

#[test]
fn link_events_follow_the_kernel() {
    let mut k = FakeKernel::with_links(vec![link(2, true, vec![v4("10.0.0.2/24")])]);
    k.execute(&Op::AddRoute(route(
        "0.0.0.0/0",
        Some("10.0.0.1"),
        10000,
        2,
    )))
    .unwrap();
    k.execute(&Op::AddRule(rule("10.0.0.2/32", 10000, 115)))
        .unwrap();
    k.set_link_up(2, false);
    assert!(k.state.routes.is_empty());
    assert_eq!(k.state.rules.len(), builtin_rules().len() + 1);
    k.set_link_up(2, true);
    assert_eq!(k.state.routes.len(), 1);
    assert_eq!(k.state.routes[0].table, RT_TABLE_MAIN);
    k.add_addr(2, v4("10.0.0.3/24"));
    assert_eq!(k.state.routes.len(), 1);
    k.remove_addr(2, "10.0.0.2/24".parse().unwrap());
    assert_eq!(k.state.routes.len(), 1);
    k.remove_addr(2, "10.0.0.3/24".parse().unwrap());
    assert!(k.state.routes.is_empty());
    k.remove_link(2);
    assert!(k.state.links.is_empty());
}

#[test]
fn a_rule_delete_matches_only_the_attributes_it_carries() {
    // The kernel's rule_find(): a delete message carries no iif, so a
    // "delete of the tagged iif rule" removes the first rule with the
    // family, priority, table and protocol sent: here symroute's own
    // `from` rule, listed first. This is the bug the ownership
    // classification prevents (issue 7 case 10).
    let mut k = FakeKernel::with_links(vec![]);
    let ours = rule("10.0.0.2/32", 10000, 115);
    let iif = Rule {
        src: None,
        other_selectors: true,
        ..ours.clone()
    };
    k.execute(&Op::AddRule(ours.clone())).unwrap();
    k.state.rules.insert(2, iif.clone());
    k.execute(&Op::DelRule(iif.clone())).unwrap();
    assert!(k.state.rules.contains(&iif), "the iif rule is still there");
    assert!(!k.state.rules.contains(&ours), "ours went instead");
    // An add with the same identity as a rule with extra selectors is no
    // duplicate (rule_exists() compares the selectors).
    k.execute(&Op::AddRule(ours.clone())).unwrap();
    // A blackhole rule (no table) never matches a delete that names one.
    let blackhole = Rule {
        table: 0,
        other_selectors: true,
        ..rule("10.0.0.3/32", 0, 115)
    };
    k.state.rules.insert(1, blackhole.clone());
    assert_eq!(
        errno(k.execute(&Op::DelRule(rule("10.0.0.3/32", 10000, 115)))),
        Some(libc::ENOENT)
    );
    assert!(k.state.rules.contains(&blackhole));
}

#[test]
fn route_deletes_follow_the_route_type_rules_of_each_family() {
    let a6 = IfAddr {
        net: "2001:db8::2/64".parse().unwrap(),
        global: true,
        tentative: false,
        dad_failed: false,
    };
    let mut k = FakeKernel::with_links(vec![link(2, true, vec![v4("10.0.0.2/24"), a6])]);
    // IPv4: fib_table_delete() matches the type: a unicast delete of a
    // blackhole finds nothing (ESRCH), so the blackhole stays forever.
    let blackhole = Route {
        kind: RouteType::BLACKHOLE,
        oif: 0,
        scope: Scope::Universe,
        ..route("198.51.100.0/24", None, 10000, 0)
    };
    k.state.routes.push(blackhole.clone());
    let del = Route {
        kind: RouteType::UNICAST,
        ..blackhole.clone()
    };
    assert_eq!(errno(k.execute(&Op::DelRoute(del))), Some(libc::ESRCH));
    assert!(k.state.routes.contains(&blackhole));
    // It still holds its key: an add of a unicast route there is EEXIST.
    let mut same_key = route("198.51.100.0/24", Some("10.0.0.1"), 10000, 2);
    same_key.scope = Scope::Universe;
    assert_eq!(
        errno(k.execute(&Op::AddRoute(same_key))),
        Some(libc::EEXIST)
    );
    // IPv6: ip6_route_del() ignores the type but matches the device a
    // message names (a blackhole sits on lo).
    let bh6 = Route {
        kind: RouteType::BLACKHOLE,
        oif: 1,
        scope: Scope::Universe,
        metric: 1024,
        ..route("2001:db8:99::/64", None, 10000, 1)
    };
    k.state.routes.push(bh6.clone());
    let del6 = Route {
        kind: RouteType::UNICAST,
        oif: 2,
        ..bh6.clone()
    };
    assert_eq!(errno(k.execute(&Op::DelRoute(del6))), Some(libc::ESRCH));
    let del6_any = Route {
        kind: RouteType::UNICAST,
        oif: 0,
        ..bh6.clone()
    };
    k.execute(&Op::DelRoute(del6_any)).unwrap();
    assert!(!k.state.routes.contains(&bh6));
}
