//! Topologies beyond the seed, driven through the real binary: three
//! interfaces behind a strict router, two addresses on one interface, and an
//! interface without a known gateway. Needs root; everything happens in
//! anonymous namespaces the tests create.

use symroute_it::common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use common::*;
use symroute_testkit::lab::seed::{BANNER, CTR_BACK_ADDR, CTR_FRONT_ADDR, SERVICE_PORT};
use symroute_testkit::lab::{MAIN_TABLE, Ns, SeedLab, SeedOptions, TcpServer};

const THREE_BANNER: &str = "hello from three";

/// ```text
/// client                 router (strict rp_filter, forwarding)        ctr
/// c0 192.0.2.10/24 ──── r0 192.0.2.1/24
///                        ra 172.20.0.1/24 ──────────────────── eth0 172.20.0.2/24 (default via 172.20.0.1)
///                        rb 172.21.0.1/24 ──────────────────── eth1 172.21.0.2/24
///                        rc 172.22.0.1/24 ──────────────────── eth2 172.22.0.2/24
/// ```
struct Three {
    _server: TcpServer,
    client: Ns,
    _router: Ns,
    ctr: Ns,
}

fn build_three() -> Three {
    require_root();
    let client = ok(Ns::new("client"));
    let router = ok(Ns::new("router"));
    let ctr = ok(Ns::new("ctr"));
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ] {
        ok(router.sysctl(key, "1"));
        ok(client.sysctl(key, "0"));
        ok(ctr.sysctl(key, "0"));
    }
    ok(router.sysctl("net.ipv4.ip_forward", "1"));
    ok(client.veth("c0", &router, "r0"));
    ok(ctr.veth("eth0", &router, "ra"));
    ok(ctr.veth("eth1", &router, "rb"));
    ok(ctr.veth("eth2", &router, "rc"));
    for link in ["r0", "ra", "rb", "rc"] {
        ok(router.sysctl(&format!("net.ipv4.conf.{link}.rp_filter"), "1"));
        ok(router.link_up(link));
    }
    ok(client.link_up("c0"));
    for link in ["eth0", "eth1", "eth2"] {
        ok(ctr.link_up(link));
    }
    ok(client.add_addr("c0", net("192.0.2.10/24")));
    ok(router.add_addr("r0", net("192.0.2.1/24")));
    for (i, (r, c)) in [("ra", "eth0"), ("rb", "eth1"), ("rc", "eth2")]
        .into_iter()
        .enumerate()
    {
        ok(router.add_addr(r, net(&format!("172.2{i}.0.1/24"))));
        ok(ctr.add_addr(c, net(&format!("172.2{i}.0.2/24"))));
    }
    ok(client.add_route(
        net("0.0.0.0/0"),
        Some(ip("192.0.2.1")),
        Some("c0"),
        MAIN_TABLE,
    ));
    ok(ctr.add_route(
        net("0.0.0.0/0"),
        Some(ip("172.20.0.1")),
        Some("eth0"),
        MAIN_TABLE,
    ));
    let server = ok(ctr.tcp_server(sock("0.0.0.0:80"), THREE_BANNER));
    Three {
        _server: server,
        client,
        _router: router,
        ctr,
    }
}

#[test]
fn three_interfaces_behind_strict_router_each_reachable_after_apply() {
    let t = build_three();
    let ctr = path_of(&t.ctr);
    let eth0 = sock("172.20.0.2:80");
    let eth1 = sock("172.21.0.2:80");
    let eth2 = sock("172.22.0.2:80");

    assert_connects(
        &t.client,
        eth0,
        THREE_BANNER,
        "eth0 (default route) before apply",
    );
    assert_blocked(&t.client, eth1, "eth1 before apply");
    assert_blocked(&t.client, eth2, "eth2 before apply");

    let rep = apply_json(&ctr, &["eth1=172.21.0.1", "eth2=172.22.0.1"]);
    let tables: BTreeSet<u32> = ["eth0", "eth1", "eth2"]
        .iter()
        .map(|n| plan_table(&rep["plan"], n))
        .collect();
    assert_eq!(tables.len(), 3, "one table per interface: {rep}");

    let (rules, routes) = owned(&t.ctr);
    assert_eq!(rules.len(), 3, "one rule per address: {rules:#?}");
    for (name, addr) in [
        ("eth0", "172.20.0.2"),
        ("eth1", "172.21.0.2"),
        ("eth2", "172.22.0.2"),
    ] {
        let table = plan_table(&rep["plan"], name);
        let index = ok(t.ctr.link_index(name));
        assert!(
            rules
                .iter()
                .any(|r| r.table == table && r.src == Some(net(&format!("{addr}/32")))),
            "no rule from {addr} lookup {table}: {rules:#?}"
        );
        let in_table: Vec<_> = routes.iter().filter(|r| r.table == table).collect();
        assert_eq!(
            in_table.len(),
            2,
            "{name}: default + connected: {in_table:#?}"
        );
        assert!(in_table.iter().all(|r| r.oif == index), "{in_table:#?}");
        assert!(in_table.iter().any(|r| r.is_default()), "{in_table:#?}");
    }

    assert_connects(&t.client, eth0, THREE_BANNER, "eth0 after apply");
    assert_connects(&t.client, eth1, THREE_BANNER, "eth1 after apply");
    assert_connects(&t.client, eth2, THREE_BANNER, "eth2 after apply");
}

#[test]
fn two_addresses_on_one_interface_one_connected_route_two_rules_both_reachable() {
    require_root();
    let lab = ok(SeedLab::build(SeedOptions {
        dnat: false,
        ipv6: false,
    }));
    ok(lab.ctr.add_addr("eth1", net("172.18.0.3/16")));
    let ctr = path_of(&lab.ctr);
    let first = SocketAddr::from((CTR_FRONT_ADDR, SERVICE_PORT));
    let second = sock("172.18.0.3:80");

    assert_blocked(&lab.client, first, "172.18.0.2 before apply");
    assert_blocked(&lab.client, second, "172.18.0.3 before apply");

    let rep = apply_json(&ctr, &["eth1=172.18.0.1"]);
    let table = plan_table(&rep["plan"], "eth1");
    let eth1 = ok(lab.ctr.link_index("eth1"));

    let (rules, routes) = owned(&lab.ctr);
    let eth1_rules: BTreeSet<IpAddr> = rules
        .iter()
        .filter(|r| r.table == table)
        .filter_map(|r| r.src.map(|s| s.addr()))
        .collect();
    assert_eq!(
        eth1_rules,
        BTreeSet::from([ip("172.18.0.2"), ip("172.18.0.3")]),
        "two rules into eth1's table {table}: {rules:#?}"
    );
    assert!(
        rules
            .iter()
            .filter(|r| r.table == table)
            .all(|r| r.src.is_some_and(|s| s.prefix_len() == 32)),
        "{rules:#?}"
    );
    let connected: Vec<_> = routes
        .iter()
        .filter(|r| r.table == table && !r.is_default())
        .collect();
    assert_eq!(connected.len(), 1, "one connected route: {connected:#?}");
    assert_eq!(connected[0].dst, net("172.18.0.0/16"));
    assert_eq!(connected[0].oif, eth1);
    assert_eq!(
        routes
            .iter()
            .filter(|r| r.table == table && r.is_default())
            .count(),
        1,
        "{routes:#?}"
    );

    assert_connects(&lab.client, first, BANNER, "172.18.0.2 after apply");
    assert_connects(&lab.client, second, BANNER, "172.18.0.3 after apply");
}

#[test]
fn interface_without_known_gateway_gets_connected_routes_only_and_says_so() {
    require_root();
    let lab = ok(SeedLab::build(SeedOptions {
        dnat: false,
        ipv6: false,
    }));
    let ctr = path_of(&lab.ctr);
    let eth1 = ok(lab.ctr.link_index("eth1"));

    // No --gateway: eth1 has no default route in main, so no gateway is known.
    let out = symroute(["apply", "--netns", &ctr, "--json"]);
    out.expect(0);
    let rep = out.json();
    let e1 = plan_iface(&rep["plan"], "eth1");
    assert_eq!(e1["no_gateway"], serde_json::json!(["ipv4"]), "{e1}");
    assert_eq!(e1["gateways"], serde_json::json!([]), "{e1}");
    let e0 = plan_iface(&rep["plan"], "eth0");
    assert_eq!(e0["no_gateway"], serde_json::json!([]), "{e0}");
    assert_eq!(e0["gateways"][0]["gateway"], "172.19.0.1", "{e0}");
    assert_eq!(e0["gateways"][0]["source"], "main-table", "{e0}");

    let table = plan_table(&rep["plan"], "eth1");
    let (rules, routes) = owned(&lab.ctr);
    let in_table: Vec<_> = routes.iter().filter(|r| r.table == table).collect();
    assert_eq!(in_table.len(), 1, "connected route only: {in_table:#?}");
    assert_eq!(in_table[0].dst, net("172.18.0.0/16"));
    assert_eq!(in_table[0].gateway, None);
    assert_eq!(in_table[0].oif, eth1);
    assert!(
        rules
            .iter()
            .any(|r| r.table == table && r.src == Some(net("172.18.0.2/32"))),
        "{rules:#?}"
    );

    // status: in sync, and says why eth1's table is incomplete.
    let out = symroute(["status", "--netns", &ctr]);
    out.expect(0);
    assert!(
        out.stdout.contains("note: no IPv4 gateway known for eth1"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("none for IPv4"), "{}", out.stdout);
    let out = symroute(["status", "--netns", &ctr, "--json"]);
    out.expect(0);
    let st = out.json();
    assert_eq!(st["in_sync"], true, "{st}");
    assert_eq!(
        plan_iface(&st["plan"], "eth1")["no_gateway"],
        serde_json::json!(["ipv4"]),
        "{st}"
    );

    // diagnose: replies to other subnets still follow main, and it says why.
    let out = symroute(["diagnose", "--netns", &ctr]);
    out.expect(1);
    assert!(
        out.stdout
            .contains("note: eth1 has global addresses but no default route of its own"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("--gateway eth1=GATEWAY"),
        "{}",
        out.stdout
    );
    let out = symroute(["diagnose", "--netns", &ctr, "--json"]);
    out.expect(1);
    let d = out.json();
    assert_eq!(
        d["interfaces_without_gateway"],
        serde_json::json!(["eth1"]),
        "{d}"
    );
    assert_eq!(d["symmetric"], false, "{d}");

    // Which is what the kernel does: the client is still cut off, while the
    // back tier answers.
    assert_blocked(
        &lab.client,
        SocketAddr::from((CTR_FRONT_ADDR, SERVICE_PORT)),
        "eth1 without a gateway",
    );
    assert_connects(
        &lab.client,
        SocketAddr::from((CTR_BACK_ADDR, SERVICE_PORT)),
        BANNER,
        "eth0",
    );
}
