//! The CNI plugin's pure parts, without root: decoding every spec version's
//! configuration and prevResult, unknown keys kept, which IPs belong to
//! CNI_IFNAME, how gateways and routes become a plan request, what DEL
//! removes, and every seed of the fuzz corpus.

use std::net::IpAddr;
use std::path::Path;

use serde_json::{Value, json};
use symroute_cni::teardown::{Scope, teardown};
use symroute_cni::types::{self, NetConf, PrevResult};
use symroute_cni::{Env, build_request, run};
use symroute_core::diff::Op;
use symroute_core::model::{Family, Protocol, Route, RouteType, Rule, Scope as RScope, Snapshot};
use symroute_core::plan::{Selection, plan};
use symroute_core::settings::Settings;
use symroute_testkit::snap::{eth_no_mac, ip, net};

#[test]
fn unknown_keys_survive_a_round_trip_everywhere() {
    let input = json!({
        "cniVersion": "1.1.0",
        "name": "lan",
        "type": "symroute",
        "table": 5001,
        "gateways": ["203.0.113.1", "2001:db8:113::1"],
        "x-top": {"a": [1, 2.5, "three", null, true]},
        "runtimeConfig": {"portMappings": [{"hostPort": 80}], "x-rt": 1},
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "net1", "x-att": 2}],
        "prevResult": {"cniVersion": "1.1.0", "x-prev": {"deep": true},
            "interfaces": [{"name": "net1", "sandbox": "/run/netns/p", "x-if": 3}],
            "ips": [{"address": "203.0.113.50/24", "interface": 0, "x-ip": 4}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "203.0.113.1", "mtu": 1400, "x-route": 5}],
            "dns": {"nameservers": ["192.0.2.53"]}}
    });
    let bytes = input.to_string();
    let d = types::decode(bytes.as_bytes()).expect("decodes");
    assert_eq!(serde_json::to_value(&d.conf).expect("encodes"), input);
    let prev = d.prev.expect("prevResult");
    assert_eq!(
        serde_json::to_value(&prev).expect("encodes"),
        input["prevResult"],
        "the typed view keeps every key"
    );
    assert_eq!(d.conf.extra["x-top"], input["x-top"]);
    assert_eq!(
        d.conf.runtime_config.expect("runtimeConfig").extra["x-rt"],
        json!(1)
    );
    assert_eq!(d.options.table, Some(5001));
    assert_eq!(d.options.gateways.len(), 2);
}

#[test]
fn prev_results_of_every_version() {
    // 0.3.1 from the bridge plugin: host-side interfaces without sandbox,
    // IPs with "version" and an interface index.
    let v031 = json!({"cniVersion": "0.3.1",
        "interfaces": [{"name": "cni0", "mac": "aa:aa:aa:aa:aa:01"},
                       {"name": "veth1", "mac": "aa:aa:aa:aa:aa:02"},
                       {"name": "eth0", "mac": "aa:aa:aa:aa:aa:03", "sandbox": "/proc/9/ns/net"}],
        "ips": [{"version": "4", "address": "198.51.100.2/24", "gateway": "198.51.100.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "198.51.100.1"}], "dns": {}});
    let p = PrevResult::from_value(&v031, "0.3.1").expect("0.3.1");
    assert_eq!(p.ips_for("eth0", Some("/proc/9/ns/net")).len(), 1);
    assert_eq!(
        p.ips_for("eth0", Some("/proc/10/ns/net")).len(),
        0,
        "another sandbox"
    );
    assert_eq!(p.ips_for("net1", None).len(), 0);
    // A host-side interface with the same name is not the container's.
    let host_named = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "net1"}],
        "ips": [{"address": "203.0.113.50/24", "interface": 0}]});
    let p = PrevResult::from_value(&host_named, "1.0.0").expect("1.0.0");
    assert!(p.ips_for("net1", Some("/x")).is_empty());
    // No interface index: the IP belongs to CNI_IFNAME (sbr's rule).
    let no_index = json!({"ips": [{"address": "203.0.113.50/24"}]});
    let p = PrevResult::from_value(&no_index, "1.0.0").expect("1.0.0");
    assert_eq!(p.ips_for("anything", Some("/x")).len(), 1);
    // 0.4.0 needs the version field; 1.0.0 does not.
    assert_eq!(
        PrevResult::from_value(&no_index, "0.4.0").unwrap_err().code,
        7
    );
    // A 0.4.0 result with version fields decodes in a 1.1.0 config too.
    let mut with_version = v031.clone();
    with_version["cniVersion"] = json!("0.4.0");
    assert!(PrevResult::from_value(&with_version, "1.1.0").is_ok());
}

#[test]
fn error_codes_of_decoding() {
    let code = |s: &str| types::decode(s.as_bytes()).map_or_else(|e| e.code, |_| 0);
    assert_eq!(code(""), 6);
    assert_eq!(code("{"), 6);
    assert_eq!(code("nope"), 6);
    assert_eq!(code("[1]"), 7);
    assert_eq!(code("{}"), 7);
    assert_eq!(code(r#"{"cniVersion":"0.2.0"}"#), 1);
    assert_eq!(code(r#"{"cniVersion":"1.0.0"}"#), 0);
    assert_eq!(
        code(r#"{"cniVersion":"1.0.0","gateways":["2001:db8::1","2001:db8::2"]}"#),
        7
    );
    assert_eq!(code(r#"{"cniVersion":"1.0.0","gateways":["0.0.0.0"]}"#), 7);
    assert_eq!(code(r#"{"cniVersion":"1.0.0","table":0}"#), 7);
    assert_eq!(code(r#"{"cniVersion":"1.0.0","lockTimeout":1e9}"#), 7);
    let e = types::decode(br#"{"cniVersion":"1.0.0","prevResult":{"ips":[{"address":"x"}]}}"#)
        .unwrap_err();
    assert_eq!(e.code, 7);
    let j = e.to_json("1.0.0");
    assert_eq!(j["cniVersion"], "1.0.0");
    assert_eq!(j["code"], 7);
    assert!(j["details"].as_str().is_some_and(|d| !d.is_empty()), "{j}");
}

fn options(extra: Value) -> types::Options {
    let mut c = json!({"cniVersion": "1.0.0", "name": "n"});
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    let conf: NetConf = serde_json::from_value(c).expect("conf");
    conf.options().expect("options")
}

#[test]
fn gateways_come_from_config_then_ips_then_default_routes() {
    let l = eth_no_mac(3, "net1", &["203.0.113.50/24", "2001:db8:113::50/64"]);
    let prev = PrevResult::from_value(
        &json!({"interfaces": [{"name": "net1", "sandbox": "/ns"}],
            "ips": [{"address": "203.0.113.50/24", "gateway": "203.0.113.1", "interface": 0},
                    {"address": "2001:db8:113::50/64", "interface": 0}],
            "routes": [{"dst": "::/0", "gw": "fe80::1"},
                       {"dst": "192.0.2.0/24"},
                       {"dst": "198.18.0.0/15", "gw": "203.0.113.9"},
                       {"dst": "198.51.100.0/24", "gw": "10.0.0.1"},
                       {"dst": "10.9.0.0/16", "gw": "203.0.113.9", "table": 7000}]}),
        "1.0.0",
    )
    .expect("prev");
    let b =
        build_request(&options(json!({})), Some(&prev), "net1", Some("/ns"), &l).expect("built");
    let gws: Vec<IpAddr> = b.request.gateways.iter().map(|g| g.gateway).collect();
    assert_eq!(gws, vec![ip("203.0.113.1"), ip("fe80::1")]);
    let routes: Vec<(String, Option<IpAddr>)> = b
        .request
        .routes
        .iter()
        .map(|r| (r.dst.to_string(), r.gateway))
        .collect();
    assert_eq!(
        routes,
        vec![
            ("192.0.2.0/24".to_string(), Some(ip("203.0.113.1"))),
            ("198.18.0.0/15".to_string(), Some(ip("203.0.113.9"))),
        ],
        "routes through other gateways or placed in a table of their own are left out"
    );
    assert!(
        matches!(&b.request.selection, Selection::Only(o) if o.ifname == "net1" && o.table.is_none() && !o.rules_only)
    );

    // The configuration's gateway wins; sbr's table means rules only.
    let b = build_request(
        &options(json!({"gateways": ["203.0.113.254"], "table": 5001})),
        Some(&prev),
        "net1",
        Some("/ns"),
        &l,
    )
    .expect("built");
    assert_eq!(b.request.gateways[0].gateway, ip("203.0.113.254"));
    assert!(
        matches!(&b.request.selection, Selection::Only(o) if o.table == Some(5001) && o.rules_only)
    );

    // A configured gateway off the link is an error; one of a family the
    // link lacks is ignored with a note.
    let v4only = eth_no_mac(3, "net1", &["203.0.113.50/24"]);
    let e = build_request(
        &options(json!({"gateways": ["198.51.100.1"]})),
        None,
        "net1",
        None,
        &v4only,
    )
    .unwrap_err();
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("198.51.100.1 is not on net1"), "{e}");
    let b = build_request(
        &options(json!({"gateways": ["2001:db8::1"]})),
        None,
        "net1",
        None,
        &v4only,
    )
    .expect("built");
    assert!(b.request.gateways.is_empty());
    assert!(
        b.notes[0].contains("no global IPv6 address"),
        "{:?}",
        b.notes
    );

    // An IPAM gateway off the link is left out with a note.
    let off = PrevResult::from_value(
        &json!({"ips": [{"address": "203.0.113.50/32", "gateway": "169.254.1.1"}]}),
        "1.0.0",
    )
    .expect("prev");
    let host32 = eth_no_mac(3, "net1", &["203.0.113.50/32"]);
    let b = build_request(&options(json!({})), Some(&off), "net1", None, &host32).expect("built");
    assert!(b.request.gateways.is_empty());
    assert!(
        b.notes[0].contains("169.254.1.1 is not on net1"),
        "{:?}",
        b.notes
    );
}

fn snapshot_with_two_attachments() -> (Snapshot, Settings) {
    let settings = Settings::default();
    let mut snap = Snapshot {
        links: vec![
            eth_no_mac(2, "eth0", &["198.51.100.2/24"]),
            eth_no_mac(3, "net1", &["203.0.113.50/24"]),
            eth_no_mac(4, "net2", &["203.0.113.51/24"]),
        ],
        rules: Vec::new(),
        routes: Vec::new(),
    };
    for ifname in ["net1", "net2"] {
        let prev = PrevResult::from_value(&json!({"ips": []}), "1.0.0").expect("prev");
        let l = snap.link_by_name(ifname).expect("link").clone();
        let b = build_request(
            &options(json!({"gateways": ["203.0.113.1"]})),
            Some(&prev),
            ifname,
            None,
            &l,
        )
        .expect("built");
        let p = plan(&snap, &settings, &b.request).expect("plan");
        snap.rules.extend(p.rules);
        snap.routes.extend(p.routes);
    }
    // Someone else's rule from net1's address, and a main route.
    snap.rules.push(Rule {
        family: Family::V4,
        priority: 100,
        src: Some(net("203.0.113.50/32")),
        table: 100,
        protocol: 0,
        other_selectors: false,
    });
    snap.routes.push(Route {
        table: 254,
        dst: net("203.0.113.0/24"),
        gateway: None,
        oif: 3,
        prefsrc: Some(ip("203.0.113.50")),
        scope: RScope::Link,
        kind: RouteType::UNICAST,
        metric: 0,
        onlink: false,
        protocol: 2,
        multipath: Vec::new(),
    });
    (snap, settings)
}

/// The host writer's DEL scope of net1: its routes, no recorded addresses
/// or table.
fn net1_scope() -> Scope {
    Scope {
        ifname: "net1".into(),
        addrs: vec![],
        table: None,
        routes: true,
        protocol: Protocol::HOST,
        ..Scope::default()
    }
}

#[test]
fn teardown_removes_one_attachment_only() {
    let (snap, settings) = snapshot_with_two_attachments();
    let ops = teardown(&snap, &settings, &net1_scope());
    assert!(ops.iter().all(|o| !o.is_add()));
    let (rules, routes): (Vec<&Op>, Vec<&Op>) =
        ops.iter().partition(|o| matches!(o, Op::DelRule(_)));
    assert_eq!(rules.len(), 1, "{ops:?}");
    assert_eq!(routes.len(), 2, "{ops:?}");
    for o in &ops {
        match o {
            Op::DelRule(r) => {
                assert_eq!(r.protocol, 115);
                assert_eq!(r.src, Some(net("203.0.113.50/32")));
            }
            Op::DelRoute(r) => {
                assert_eq!((r.protocol, r.oif), (115, 3));
            }
            _ => unreachable!(),
        }
    }
    // Gateway routes go before the connected route they rely on.
    assert!(matches!(&ops[1], Op::DelRoute(r) if r.gateway.is_some()));

    // The link is gone (the kernel took its routes): recorded addresses and
    // table still find the rule, and nothing of net2's.
    let mut gone = snap.clone();
    gone.links.retain(|l| l.name != "net1");
    gone.routes.retain(|r| r.oif != 3);
    let table = snap
        .rules
        .iter()
        .find(|r| r.protocol == 115 && r.src == Some(net("203.0.113.50/32")))
        .expect("rule")
        .table;
    let ops = teardown(
        &gone,
        &settings,
        &Scope {
            addrs: vec![ip("203.0.113.50")],
            table: Some(table),
            ..net1_scope()
        },
    );
    assert_eq!(ops.len(), 1, "{ops:?}");
    // Rules only (sbr's table): no routes are removed.
    let ops = teardown(
        &snap,
        &settings,
        &Scope {
            table: Some(5001),
            routes: false,
            ..net1_scope()
        },
    );
    assert!(ops.iter().all(|o| matches!(o, Op::DelRule(_))), "{ops:?}");
}

/// Issue 7 case 1: a tagged route in main through the attachment's link,
/// and a tagged rule from its address that looks up main, are not its: DEL
/// leaves both, whatever their tag. Another priority's rule neither.
#[test]
fn teardown_never_touches_main_or_another_priority() {
    let (mut snap, settings) = snapshot_with_two_attachments();
    let main_route = Route {
        table: 254,
        dst: net("198.51.100.0/24"),
        gateway: Some(ip("203.0.113.1")),
        oif: 3,
        prefsrc: None,
        scope: RScope::Universe,
        kind: RouteType::UNICAST,
        metric: 0,
        onlink: false,
        protocol: 115,
        multipath: Vec::new(),
    };
    snap.routes.push(main_route.clone());
    let rule = |priority, table| Rule {
        family: Family::V4,
        priority,
        src: Some(net("203.0.113.50/32")),
        table,
        protocol: 115,
        other_selectors: false,
    };
    snap.rules.push(rule(3000, 254));
    snap.rules.push(rule(2999, 10000));
    let ops = teardown(&snap, &settings, &net1_scope());
    assert!(!ops.contains(&Op::DelRoute(main_route)), "{ops:?}");
    assert!(!ops.contains(&Op::DelRule(rule(3000, 254))), "{ops:?}");
    assert!(!ops.contains(&Op::DelRule(rule(2999, 10000))), "{ops:?}");
    assert_eq!(ops.len(), 3, "one rule and two band routes: {ops:?}");
}

#[test]
fn version_answers_in_process() {
    let env = Env::new([("CNI_COMMAND", "VERSION")]);
    let mut out = Vec::new();
    let mut err = Vec::new();
    assert_eq!(
        run(&env, br#"{"cniVersion":"0.4.0"}"#, &mut out, &mut err),
        0
    );
    let v: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["supportedVersions"].as_array().map(Vec::len), Some(5));
    assert!(err.is_empty());
}

/// Every seed of the fuzz corpus gives a request or a spec error code, and
/// decoded requests survive a round trip: the fuzz target's property, on
/// stable Rust.
#[test]
fn fuzz_corpus_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join("fuzz/corpus/decode");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("seed");
        seen += 1;
        match types::decode(&bytes) {
            Ok(d) => {
                let again = serde_json::to_vec(&d.conf).expect("encode");
                assert_eq!(
                    types::decode(&again).expect("decode again"),
                    d,
                    "{}",
                    path.display()
                );
            }
            Err(e) => assert!(
                matches!(e.code, 1 | 4 | 5 | 6 | 7),
                "{}: {e}",
                path.display()
            ),
        }
    }
    assert!(seen >= 10, "corpus has {seen} seeds");
}

/// A container renames its links (net1 <-> net2) or moves net2's address
/// onto net1 before the runtime deletes net1: net1's DEL, scoped by its
/// record (link index 3, its address, its table), still removes net1's
/// objects only, never net2's rule or table.
#[test]
fn a_renamed_link_or_a_moved_address_never_pulls_in_another_attachment() {
    let (snap, settings) = snapshot_with_two_attachments();
    let table_of = |a: &str| {
        snap.rules
            .iter()
            .find(|r| r.src == Some(net(a)))
            .expect("rule")
            .table
    };
    let (t1, t2) = (table_of("203.0.113.50/32"), table_of("203.0.113.51/32"));
    assert_ne!(t1, t2);
    let recorded = Scope {
        link: Some(3),
        addrs: vec![ip("203.0.113.50")],
        table: Some(t1),
        ..net1_scope()
    };
    let only_net1 = |ops: &[Op]| {
        assert!(!ops.is_empty());
        for o in ops {
            match o {
                Op::DelRule(r) => assert_eq!((r.src, r.table), (Some(net("203.0.113.50/32")), t1)),
                Op::DelRoute(r) => assert_eq!(r.table, t1, "{o:?}"),
                _ => unreachable!(),
            }
        }
    };
    // Renamed: the link now called net1 is net2's (index 4).
    let mut renamed = snap.clone();
    for l in &mut renamed.links {
        l.name = match l.name.as_str() {
            "net1" => "net2".into(),
            "net2" => "net1".into(),
            other => other.into(),
        };
    }
    only_net1(&teardown(&renamed, &settings, &recorded));
    // Moved: net2's address put on net1 as well.
    let mut moved = snap.clone();
    let extra = moved.link_by_name("net2").expect("net2").addrs[0].clone();
    moved
        .links
        .iter_mut()
        .find(|l| l.name == "net1")
        .expect("net1")
        .addrs
        .push(extra);
    only_net1(&teardown(&moved, &settings, &recorded));
}
