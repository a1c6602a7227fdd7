//! Idempotence and reconciliation against the real kernel: a second apply
//! changes nothing (byte for byte), and apply repairs what the kernel or an
//! operator did afterwards (address removed, interface deleted, link bounced,
//! IPv6 address still in duplicate address detection). Needs root; everything
//! happens in anonymous namespaces the tests create.

use symroute_it::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::*;
use serde_json::Value;
use symroute_core::model::Family;
use symroute_testkit::lab::seed::{BANNER, CTR_FRONT_ADDR, SERVICE_PORT};
use symroute_testkit::lab::{SeedLab, SeedOptions};

fn seed(ipv6: bool) -> SeedLab {
    require_root();
    if ipv6 {
        assert!(
            symroute_testkit::lab::ip6tables_available(),
            "ip6tables is not usable: install it (apt-get install -y iptables)"
        );
    }
    ok(SeedLab::build(SeedOptions { dnat: false, ipv6 }))
}

fn front() -> SocketAddr {
    (CTR_FRONT_ADDR, SERVICE_PORT).into()
}

fn tables(plan: &Value) -> BTreeMap<String, u32> {
    plan["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().expect("name").to_string(),
                u32::try_from(i["table"].as_u64().expect("table")).expect("u32"),
            )
        })
        .collect()
}

/// `status --json` with `--gateway GATEWAY`, which must exit 1 (out of sync).
fn status_json_out_of_sync(ctr: &str, gateway: &str) -> Value {
    let out = symroute(["status", "--netns", ctr, "--gateway", gateway, "--json"]);
    out.expect(1);
    out.json()
}

#[test]
fn second_apply_reports_zero_changes_and_leaves_dumps_identical_tables_stable() {
    let lab = seed(true);
    let ctr = path_of(&lab.ctr);
    let gws = ["eth1=172.18.0.1", "eth1=fe80::1"];

    let first = apply_json(&ctr, &gws);
    assert!(
        len_of(&first, "ops") > 0,
        "first apply changed nothing: {first}"
    );
    let first_tables = tables(&first["plan"]);
    let after_first = dump(&lab.ctr);

    let second = apply_json(&ctr, &gws);
    assert_eq!(len_of(&second, "ops"), 0, "second apply: {second}");
    assert_eq!(tables(&second["plan"]), first_tables);
    assert_same_dump(&after_first, &dump(&lab.ctr), "second apply");

    // The human output says so too, and the dumps are still the same.
    let out = symroute([
        "apply",
        "--netns",
        &ctr,
        "--gateway",
        gws[0],
        "--gateway",
        gws[1],
    ]);
    out.expect(0);
    assert!(
        out.stdout.contains("in sync: nothing to change"),
        "{}",
        out.stdout
    );
    assert_same_dump(&after_first, &dump(&lab.ctr), "third apply");
    symroute([
        "status",
        "--netns",
        &ctr,
        "--gateway",
        gws[0],
        "--gateway",
        gws[1],
    ])
    .expect(0);

    // Without the hints the gateways are kept from symroute's own routes:
    // still nothing to change.
    let kept = apply_json(&ctr, &[]);
    assert_eq!(len_of(&kept, "ops"), 0, "apply without hints: {kept}");
    assert_same_dump(&after_first, &dump(&lab.ctr), "apply without hints");

    // Clean and apply again: the same tables, the same objects.
    symroute(["clean", "--netns", &ctr]).expect(0);
    let again = apply_json(&ctr, &gws);
    assert_eq!(tables(&again["plan"]), first_tables, "tables moved");
    assert_same_dump(&after_first, &dump(&lab.ctr), "apply after clean");
}

#[test]
fn removed_address_loses_its_rule_and_stale_route_on_next_apply() {
    let lab = seed(false);
    let ctr = path_of(&lab.ctr);
    // A second address in another prefix: its own rule and connected route.
    ok(lab.ctr.add_addr("eth1", net("10.18.0.2/24")));
    let rep = apply_json(&ctr, &["eth1=172.18.0.1"]);
    let table = plan_table(&rep["plan"], "eth1");
    let (rules, routes) = owned(&lab.ctr);
    assert!(
        rules.iter().any(|r| r.src == Some(net("10.18.0.2/32"))),
        "{rules:#?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.table == table && r.dst == net("10.18.0.0/24")),
        "{routes:#?}"
    );

    ok(lab.ctr.del_addr("eth1", net("10.18.0.2/24")));
    // With another address left on the link, the kernel keeps routes whose
    // source was the removed address, and every rule: both are stale now.
    let (rules, routes) = owned(&lab.ctr);
    assert!(
        rules.iter().any(|r| r.src == Some(net("10.18.0.2/32"))),
        "precondition: the kernel keeps rules of a removed address: {rules:#?}"
    );
    assert!(
        routes.iter().any(|r| r.dst == net("10.18.0.0/24")),
        "precondition: the kernel keeps the route with the removed source: {routes:#?}"
    );
    // status sees the extras.
    let st = status_json_out_of_sync(&ctr, "eth1=172.18.0.1");
    assert_eq!(st["in_sync"], false, "{st}");
    assert_eq!(len_of(&st, "extra"), 2, "{st}");
    assert_eq!(len_of(&st, "missing"), 0, "{st}");

    let rep = apply_json(&ctr, &["eth1=172.18.0.1"]);
    let ops = rep["ops"].as_array().expect("ops");
    assert!(
        ops.iter()
            .all(|o| o["op"] == "del-rule" || o["op"] == "del-route"),
        "only removals expected: {rep}"
    );
    assert!(
        ops.iter()
            .any(|o| o["op"] == "del-rule" && o["object"]["src"] == "10.18.0.2/32"),
        "the rule from 10.18.0.2 must go: {rep}"
    );
    assert!(
        ops.iter()
            .any(|o| o["op"] == "del-route" && o["object"]["dst"] == "10.18.0.0/24"),
        "the stale route 10.18.0.0/24 src 10.18.0.2 must go: {rep}"
    );
    assert_eq!(
        plan_table(&rep["plan"], "eth1"),
        table,
        "eth1 kept its table"
    );

    let (rules, routes) = owned(&lab.ctr);
    let (want_rules, want_routes) = plan_objects(&rep["plan"]);
    assert_eq!(rules, want_rules, "rules after reconcile");
    assert_eq!(routes, want_routes, "routes after reconcile");
    let gone = ip("10.18.0.2");
    assert!(
        !rules
            .iter()
            .any(|r| r.src.is_some_and(|s| s.contains(&gone))),
        "{rules:#?}"
    );
    assert!(
        !routes
            .iter()
            .any(|r| r.dst == net("10.18.0.0/24") || r.prefsrc == Some(gone)),
        "{routes:#?}"
    );
    symroute(["status", "--netns", &ctr, "--gateway", "eth1=172.18.0.1"]).expect(0);
    assert_connects(&lab.client, front(), BANNER, "after reconcile");
}

#[test]
fn deleted_interface_loses_its_rules_on_next_apply() {
    let lab = seed(false);
    let ctr = path_of(&lab.ctr);
    // A third interface, so the namespace stays multi-homed once it is gone.
    ok(lab.ctr.veth("eth2", &lab.dhost, "ctr-extra"));
    ok(lab.dhost.link_up("ctr-extra"));
    ok(lab.ctr.link_up("eth2"));
    ok(lab.dhost.add_addr("ctr-extra", net("172.30.0.1/24")));
    ok(lab.ctr.add_addr("eth2", net("172.30.0.2/24")));

    let gws = ["eth1=172.18.0.1", "eth2=172.30.0.1"];
    let rep = apply_json(&ctr, &gws);
    let before_tables = tables(&rep["plan"]);
    assert_eq!(before_tables.len(), 3, "{rep}");
    let (rules, _) = owned(&lab.ctr);
    assert!(
        rules.iter().any(|r| r.src == Some(net("172.30.0.2/32"))),
        "{rules:#?}"
    );

    ok(lab.ctr.del_link("eth2"));
    // The kernel dropped eth2's routes but kept the rule: status sees it.
    let out = symroute(["status", "--netns", &ctr, "--gateway", "eth1=172.18.0.1"]);
    out.expect(1);
    assert!(out.stdout.contains("extra:"), "{}", out.stdout);
    assert!(out.stdout.contains("172.30.0.2/32"), "{}", out.stdout);

    let rep = apply_json(&ctr, &["eth1=172.18.0.1"]);
    assert!(
        rep["ops"]
            .as_array()
            .expect("ops")
            .iter()
            .any(|o| o["op"] == "del-rule" && o["object"]["src"] == "172.30.0.2/32"),
        "{rep}"
    );
    let after_tables = tables(&rep["plan"]);
    assert_eq!(after_tables.get("eth0"), before_tables.get("eth0"));
    assert_eq!(after_tables.get("eth1"), before_tables.get("eth1"));
    assert!(!after_tables.contains_key("eth2"), "{rep}");

    let (rules, routes) = owned(&lab.ctr);
    let (want_rules, want_routes) = plan_objects(&rep["plan"]);
    assert_eq!(rules, want_rules);
    assert_eq!(routes, want_routes);
    let eth2_table = before_tables["eth2"];
    assert!(
        !rules.iter().any(|r| r.table == eth2_table),
        "a rule still points at eth2's table {eth2_table}: {rules:#?}"
    );
    symroute(["status", "--netns", &ctr, "--gateway", "eth1=172.18.0.1"]).expect(0);
    assert_connects(&lab.client, front(), BANNER, "after eth2 was deleted");
}

#[test]
fn link_down_up_flushes_routes_status_exits_1_and_apply_restores_traffic() {
    let lab = seed(false);
    let ctr = path_of(&lab.ctr);
    let rep = apply_json(&ctr, &["eth1=172.18.0.1"]);
    let table = plan_table(&rep["plan"], "eth1");
    let (_, routes_before) = owned(&lab.ctr);
    let eth1_routes: Vec<_> = routes_before
        .iter()
        .filter(|r| r.table == table)
        .cloned()
        .collect();
    assert_eq!(eth1_routes.len(), 2, "{routes_before:#?}");
    assert_connects(&lab.client, front(), BANNER, "after first apply");

    ok(lab.ctr.link_down("eth1"));
    ok(lab.ctr.link_up("eth1"));
    // The kernel deleted the link's routes from our table, kept the rules.
    let (rules, routes) = owned(&lab.ctr);
    assert!(
        !routes.iter().any(|r| r.table == table),
        "routes of eth1's table survived a down/up: {routes:#?}"
    );
    assert!(
        rules.iter().any(|r| r.table == table),
        "the rule went with the link: {rules:#?}"
    );
    assert_blocked(&lab.client, front(), "after down/up, before apply");

    let out = symroute(["status", "--netns", &ctr, "--gateway", "eth1=172.18.0.1"]);
    out.expect(1);
    assert!(out.stdout.contains("missing:"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("table {table}")),
        "{}",
        out.stdout
    );
    let st = status_json_out_of_sync(&ctr, "eth1=172.18.0.1");
    assert_eq!(st["in_sync"], false);
    assert_eq!(len_of(&st, "missing"), 2, "{st}");
    assert_eq!(len_of(&st, "extra"), 0, "{st}");
    for m in st["missing"].as_array().expect("missing") {
        assert_eq!(m["op"], "add-route", "{st}");
        assert_eq!(m["object"]["table"], table, "{st}");
    }

    let rep = apply_json(&ctr, &["eth1=172.18.0.1"]);
    assert_eq!(len_of(&rep, "ops"), 2, "{rep}");
    assert_eq!(plan_table(&rep["plan"], "eth1"), table);
    let (_, routes) = owned(&lab.ctr);
    assert_eq!(routes, routes_before, "routes restored as they were");
    symroute(["status", "--netns", &ctr, "--gateway", "eth1=172.18.0.1"]).expect(0);
    assert_connects(&lab.client, front(), BANNER, "after reconcile");
}

#[test]
fn tentative_ipv6_address_is_waited_for_and_gets_its_rule() {
    let lab = seed(false);
    let ctr = path_of(&lab.ctr);
    // One DAD probe keeps detection short (about a second).
    ok(lab.ctr.sysctl("net.ipv6.conf.eth1.accept_dad", "1"));
    ok(lab.ctr.sysctl("net.ipv6.conf.eth1.dad_transmits", "1"));
    let addr = net("2001:db8:18::2/64");
    ok(lab.ctr.add_addr_dad("eth1", addr));
    let tentative = ok(lab.ctr.tentative_addresses());
    assert!(
        tentative.contains(&addr.addr()),
        "the address should start tentative: {tentative:?}"
    );

    let out = symroute([
        "apply",
        "--netns",
        &ctr,
        "--gateway",
        "eth1=172.18.0.1",
        "--dad-wait",
        "10",
        "--json",
    ]);
    out.expect(0);
    let rep = out.json();
    // apply waited: DAD was over when it read the namespace.
    assert_eq!(rep["tentative"], serde_json::json!([]), "{rep}");
    assert_eq!(
        plan_iface(&rep["plan"], "eth1")["tentative"],
        serde_json::json!([]),
        "{rep}"
    );
    assert!(
        !ok(lab.ctr.tentative_addresses()).contains(&addr.addr()),
        "still tentative after apply returned"
    );
    let table = plan_table(&rep["plan"], "eth1");
    let (rules, routes) = owned(&lab.ctr);
    assert!(
        rules.iter().any(|r| r.family == Family::V6
            && r.table == table
            && r.src == Some(net("2001:db8:18::2/128"))),
        "no rule from 2001:db8:18::2: {rules:#?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.table == table && r.dst == net("2001:db8:18::/64")),
        "no IPv6 connected route in eth1's table: {routes:#?}"
    );
    let (want_rules, want_routes) = plan_objects(&rep["plan"]);
    assert_eq!(rules, want_rules);
    assert_eq!(routes, want_routes);
    // Nothing was left for a second run.
    let again = apply_json(&ctr, &["eth1=172.18.0.1"]);
    assert_eq!(len_of(&again, "ops"), 0, "{again}");
}
