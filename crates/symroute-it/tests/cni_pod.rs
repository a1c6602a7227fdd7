//! symroute as a CNI plugin in a pod-like namespace, with real plugins and
//! real TCP: eth0 from Debian's bridge plugin (default route), net1 from
//! macvlan + host-local, then symroute chained after macvlan. A client on
//! another subnet reaches net1's address only after symroute's ADD; CHECK,
//! a repeated ADD, DEL (which restores the namespace exactly), a failed ADD
//! (rolled back), parallel ADDs in one namespace, GC, STATUS and VERSION.

use symroute_it::cni_harness;
use symroute_it::common;

use std::net::IpAddr;
use std::path::Path;

use cni_harness::{Att, Chain, Meta, PluginRun, PodLab, ip, ok, symroute_conf};
use common::{Dump, assert_same_dump, dump};

/// The CNI plugin's own tag (the host writer's is 115).
const CNI_TAG: u8 = 116; // symroute_core::model::Protocol::CNI

/// The plugin's objects in `ns`, sorted.
fn owned(ns: &symroute_testkit::lab::Ns) -> (Vec<Rule>, Vec<symroute_core::model::Route>) {
    common::owned_with(ns, CNI_TAG)
}

/// Every rule and route of `ns` not tagged with the plugin's protocol.
fn dump_foreign(ns: &symroute_testkit::lab::Ns) -> Dump {
    common::dump_filtered(ns, |p| p != CNI_TAG)
}
use serde_json::{Value, json};
use symroute_core::diff::Op;
use symroute_core::kernel::Kernel;
use symroute_core::model::{Family, Rule};
use symroute_linux::kernel::NetlinkKernel;

const POD_ADDR: &str = "203.0.113.50";

fn expect_ok(run: &PluginRun) {
    assert_eq!(run.code, 0, "{}", run.describe());
}

fn state_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(nets) = std::fs::read_dir(dir) {
        for n in nets.flatten() {
            if let Ok(files) = std::fs::read_dir(n.path()) {
                for f in files.flatten() {
                    out.push(format!(
                        "{}/{}",
                        n.file_name().to_string_lossy(),
                        f.file_name().to_string_lossy()
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn client_reaches_net1_only_after_add_and_del_restores_the_namespace() {
    let lab = PodLab::new("pod");
    lab.attach_eth0("1.0.0", false);
    let Chain {
        list,
        att,
        prev,
        conf,
    } = lab.net1_chain(json!({}));

    lab.blocked(POD_ADDR)
        .unwrap_or_else(|e| panic!("before symroute's ADD: {e}"));
    let before = dump(&lab.pod);
    let foreign_before = dump_foreign(&lab.pod);

    let add = lab.rt.call("symroute", "ADD", &att, &conf);
    expect_ok(&add);
    assert_eq!(add.json(), prev, "ADD must print prevResult unchanged");
    assert!(add.stdout.ends_with('\n') && add.stdout.lines().count() == 1);

    lab.reaches(POD_ADDR)
        .unwrap_or_else(|e| panic!("after symroute's ADD: {e}"));

    // Nothing of anyone else's moved: main and every foreign object intact.
    assert_same_dump(&foreign_before, &dump_foreign(&lab.pod), "symroute ADD");
    let (rules, routes) = owned(&lab.pod);
    let pod_addr: IpAddr = ip(POD_ADDR);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].src.map(|s| s.addr()), Some(pod_addr));
    assert_eq!((rules[0].priority, rules[0].table), (3000, 10000));
    let net1 = ok(lab.pod.link_index("net1"));
    assert!(
        routes.iter().all(|r| r.table == 10000 && r.oif == net1),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.is_default() && r.gateway == Some(ip("203.0.113.1"))),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.dst.to_string() == "203.0.113.0/24" && r.gateway.is_none()),
        "{routes:?}"
    );
    assert_eq!(
        state_files(&lab.rt.data_dir()),
        vec!["lan/pod1:net1.json".to_string()]
    );

    // CHECK is quiet when all is there.
    let check = lab.rt.call("symroute", "CHECK", &att, &conf);
    expect_ok(&check);
    assert!(check.stdout.is_empty(), "{}", check.describe());

    // DEL (in reverse chain order: symroute first) restores the namespace.
    let del = lab.rt.call("symroute", "DEL", &att, &conf);
    expect_ok(&del);
    assert!(del.stdout.is_empty(), "{}", del.describe());
    assert_same_dump(&before, &dump(&lab.pod), "after symroute's DEL");
    assert!(state_files(&lab.rt.data_dir()).is_empty());
    lab.blocked(POD_ADDR)
        .unwrap_or_else(|e| panic!("after symroute's DEL: {e}"));

    // Repeated DEL, and the whole chain's DEL, succeed.
    expect_ok(&lab.rt.call("symroute", "DEL", &att, &conf));
    for run in lab.rt.del_list(&list, &att, Some(&prev)) {
        expect_ok(&run);
    }
}

#[test]
fn repeated_add_changes_nothing_and_a_failed_add_rolls_back() {
    let lab = PodLab::new("repeat");
    lab.attach_eth0("1.0.0", false);
    let Chain { att, conf, .. } = lab.net1_chain(json!({}));
    let before = dump(&lab.pod);

    expect_ok(&lab.rt.call("symroute", "ADD", &att, &conf));
    let once = dump(&lab.pod);
    for _ in 0..3 {
        expect_ok(&lab.rt.call("symroute", "ADD", &att, &conf));
        assert_same_dump(&once, &dump(&lab.pod), "repeated ADD");
    }
    expect_ok(&lab.rt.call("symroute", "DEL", &att, &conf));
    assert_same_dump(&before, &dump(&lab.pod), "DEL after repeated ADDs");

    // The state file cannot be written (its folder is under a regular
    // file): the ADD fails after changing the kernel, and undoes it.
    let blocker = lab.rt.scratch.path().join("not-a-folder");
    std::fs::write(&blocker, "").expect("write blocker file");
    let mut bad = conf.clone();
    bad["dataDir"] = json!(blocker.join("state"));
    let run = lab.rt.call("symroute", "ADD", &att, &bad);
    assert_eq!(run.code, 1, "{}", run.describe());
    assert_eq!(run.error_code(), Some(5), "{}", run.describe());
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("state"),
        "{}",
        run.describe()
    );
    assert_same_dump(&before, &dump(&lab.pod), "failed ADD");
    lab.blocked(POD_ADDR)
        .unwrap_or_else(|e| panic!("after the failed ADD: {e}"));
}

#[test]
fn check_names_what_is_missing_and_extra() {
    let lab = PodLab::new("check");
    lab.attach_eth0("1.0.0", false);
    let Chain { att, conf, .. } = lab.net1_chain(json!({}));
    expect_ok(&lab.rt.call("symroute", "ADD", &att, &conf));

    // Remove symroute's default route in table 10000.
    ok(lab.pod.del_route(
        cni_harness::net("0.0.0.0/0"),
        Some(ip("203.0.113.1")),
        Some("net1"),
        10000,
    ));
    let run = lab.rt.call("symroute", "CHECK", &att, &conf);
    assert_eq!(run.code, 1, "{}", run.describe());
    let err = run.json();
    assert_eq!(err["code"], 102, "{err}");
    assert_eq!(err["cniVersion"], "1.0.0", "{err}");
    let msg = err["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("missing route default via 203.0.113.1") && msg.contains("table 10000"),
        "{msg}"
    );
    // ADD repairs it; CHECK passes again.
    expect_ok(&lab.rt.call("symroute", "ADD", &att, &conf));
    expect_ok(&lab.rt.call("symroute", "CHECK", &att, &conf));

    // A stray rule of symroute's from net1's address is named too.
    let stray = Rule {
        family: Family::V4,
        priority: 3000,
        src: Some(cni_harness::net("203.0.113.50/32")),
        table: 10099,
        protocol: CNI_TAG,
        other_selectors: false,
    };
    let mut k = NetlinkKernel::new(lab.pod.netns().socket().expect("socket"));
    k.execute(&Op::AddRule(stray.clone()))
        .expect("add stray rule");
    let run = lab.rt.call("symroute", "CHECK", &att, &conf);
    assert_eq!(run.error_code(), Some(102), "{}", run.describe());
    let msg = run.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("unexpected rule from 203.0.113.50/32 lookup 10099"),
        "{msg}"
    );
    expect_ok(&lab.rt.call("symroute", "ADD", &att, &conf));
    expect_ok(&lab.rt.call("symroute", "CHECK", &att, &conf));

    // CHECK needs 0.4.0 or later.
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.3.1");
    old["prevResult"]["cniVersion"] = json!("0.3.1");
    let run = lab.rt.call("symroute", "CHECK", &att, &old);
    assert_eq!(run.error_code(), Some(1), "{}", run.describe());
    expect_ok(&lab.rt.call("symroute", "DEL", &att, &conf));
}

/// Four macvlan interfaces in one pod, ADDed (then DELed) at the same time:
/// the per-namespace lock gives each its own table.
#[test]
fn parallel_adds_for_different_interfaces_of_one_namespace() {
    let lab = PodLab::new("parallel");
    lab.attach_eth0("1.0.0", false);
    let names = ["net1", "net2", "net3", "net4"];
    let ifaces: Vec<(&str, Value)> = names.iter().map(|n| (*n, json!({}))).collect();
    let confs = lab.static_chains(&ifaces);
    let before = dump(&lab.pod);
    for command in ["ADD", "DEL"] {
        let runs: Vec<PluginRun> = std::thread::scope(|s| {
            let handles: Vec<_> = confs
                .iter()
                .map(|(att, conf)| s.spawn(|| lab.rt.call("symroute", command, att, conf)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        for run in &runs {
            expect_ok(run);
        }
        if command == "ADD" {
            let (rules, routes) = owned(&lab.pod);
            assert_eq!(rules.len(), 4, "{rules:?}");
            let mut tables: Vec<u32> = rules.iter().map(|r| r.table).collect();
            tables.sort_unstable();
            tables.dedup();
            assert_eq!(
                tables.len(),
                4,
                "each interface gets its own table: {rules:?}"
            );
            for t in &tables {
                let in_t: Vec<_> = routes.iter().filter(|r| r.table == *t).collect();
                assert_eq!(in_t.len(), 2, "table {t}: connected + default: {in_t:?}");
                let oifs: Vec<u32> = in_t.iter().map(|r| r.oif).collect();
                assert!(
                    oifs.windows(2).all(|w| w[0] == w[1]),
                    "one link per table: {in_t:?}"
                );
            }
            for (att, _) in &confs {
                let addr = 50 + names.iter().position(|n| *n == att.ifname).expect("name");
                lab.reaches(&format!("203.0.113.{addr}"))
                    .unwrap_or_else(|e| panic!("{}: {e}", att.ifname));
            }
        }
    }
    assert_same_dump(&before, &dump(&lab.pod), "parallel ADDs then DELs");
}

#[test]
fn gc_removes_what_is_not_listed_and_keeps_the_rest() {
    let lab = PodLab::new("gc");
    lab.attach_eth0("1.0.0", false);
    for (att, conf) in lab.static_chains(&[("net1", json!({})), ("net2", json!({}))]) {
        expect_ok(&lab.rt.call("symroute", "ADD", &att, &conf));
    }
    // A third attachment whose namespace is gone.
    let gone_ns = symroute_testkit::lab::Ns::new("gc-gone").expect("namespace");
    ok(gone_ns.veth("net1", &lab.rt.host, "gone-peer"));
    ok(gone_ns.link_up("net1"));
    ok(gone_ns.add_addr("net1", cni_harness::net("203.0.113.70/24")));
    let gone_att = Att::new("pod2", &gone_ns, "net1");
    let gone_prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": gone_att.netns}],
        "ips": [{"address": "203.0.113.70/24", "gateway": "203.0.113.1", "interface": 0}]});
    let gone_conf = json!({"cniVersion": "1.0.0", "name": "lan", "type": "symroute",
        "dataDir": lab.rt.data_dir(), "prevResult": gone_prev});
    expect_ok(&lab.rt.call("symroute", "ADD", &gone_att, &gone_conf));
    drop(gone_ns);
    assert_eq!(
        state_files(&lab.rt.data_dir()),
        vec![
            "lan/pod1:net1.json",
            "lan/pod1:net2.json",
            "lan/pod2:net1.json"
        ]
    );

    let keep_only_net1 = json!({"cniVersion": "1.1.0", "name": "lan", "type": "symroute",
        "dataDir": lab.rt.data_dir(),
        "cni.dev/valid-attachments": [{"containerID": "pod1", "ifname": "net1"}]});
    let run = lab
        .rt
        .exec("symroute", "GC", &[], keep_only_net1.to_string().as_bytes());
    expect_ok(&run);
    assert!(run.stdout.is_empty(), "{}", run.describe());
    assert_eq!(state_files(&lab.rt.data_dir()), vec!["lan/pod1:net1.json"]);
    let (rules, _) = owned(&lab.pod);
    let srcs: Vec<IpAddr> = rules
        .iter()
        .filter_map(|r| r.src.map(|s| s.addr()))
        .collect();
    assert_eq!(
        srcs,
        vec![ip("203.0.113.50")],
        "net2's rule must be gone: {rules:?}"
    );
    lab.reaches("203.0.113.50")
        .unwrap_or_else(|e| panic!("kept attachment: {e}"));

    // GC of another network touches nothing of this one; GC needs 1.1.0.
    let mut other = keep_only_net1.clone();
    other["name"] = json!("other");
    other["cni.dev/valid-attachments"] = json!([]);
    expect_ok(
        &lab.rt
            .exec("symroute", "GC", &[], other.to_string().as_bytes()),
    );
    assert_eq!(state_files(&lab.rt.data_dir()), vec!["lan/pod1:net1.json"]);
    let mut old = keep_only_net1.clone();
    old["cniVersion"] = json!("1.0.0");
    let run = lab
        .rt
        .exec("symroute", "GC", &[], old.to_string().as_bytes());
    assert_eq!(run.error_code(), Some(1), "{}", run.describe());
}

#[test]
fn a_1_1_0_prev_result_with_route_tables() {
    let lab = PodLab::new("v110");
    lab.attach_eth0("1.0.0", false);
    let Chain {
        list,
        att,
        mut prev,
        ..
    } = lab.net1_chain(json!({}));
    // As a 1.1.0 main plugin would report it: a route placed in table 7000
    // by the IPAM (symroute leaves it alone) and unknown keys everywhere.
    prev["cniVersion"] = json!("1.1.0");
    prev["routes"] = json!([
        {"dst": "198.18.0.0/15", "gw": "203.0.113.9", "table": 7000, "mtu": 1400},
        {"dst": "192.0.2.128/25", "gw": "203.0.113.9"}
    ]);
    prev["x-vendor"] = json!({"kept": [1, 2, 3]});
    let mut conf = symroute_conf(&list, Some(&prev));
    conf["cniVersion"] = json!("1.1.0");
    conf["runtimeConfig"] = json!({"x-runtime": true});
    conf["x-plugin"] = json!("kept");
    let add = lab.rt.call("symroute", "ADD", &att, &conf);
    expect_ok(&add);
    assert_eq!(add.json(), prev);
    let (_, routes) = owned(&lab.pod);
    assert!(
        routes.iter().any(|r| r.dst.to_string() == "192.0.2.128/25"
            && r.gateway == Some(ip("203.0.113.9"))
            && r.table == 10000),
        "{routes:?}"
    );
    assert!(routes.iter().all(|r| r.table == 10000), "{routes:?}");
    expect_ok(&lab.rt.call("symroute", "CHECK", &att, &conf));
    expect_ok(&lab.rt.call("symroute", "DEL", &att, &conf));
    assert!(owned(&lab.pod).0.is_empty());
}

#[test]
fn status_version_and_log_file() {
    let lab = PodLab::new("status");
    let ok_conf = json!({"cniVersion": "1.1.0", "name": "lan", "type": "symroute",
        "dataDir": lab.rt.data_dir()});
    let run = lab
        .rt
        .exec("symroute", "STATUS", &[], ok_conf.to_string().as_bytes());
    expect_ok(&run);
    assert!(run.stdout.is_empty());

    let blocker = lab.rt.scratch.path().join("file");
    std::fs::write(&blocker, "").expect("write");
    let mut bad = ok_conf.clone();
    bad["dataDir"] = json!(blocker.join("x"));
    let run = lab
        .rt
        .exec("symroute", "STATUS", &[], bad.to_string().as_bytes());
    assert_eq!(run.error_code(), Some(50), "{}", run.describe());

    let run = lab
        .rt
        .exec("symroute", "VERSION", &[], br#"{"cniVersion":"1.0.0"}"#);
    expect_ok(&run);
    assert_eq!(
        run.json(),
        json!({"cniVersion": "1.0.0",
               "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );

    // logFile: log lines go there, not to stderr; stdout stays the result.
    lab.attach_eth0("1.0.0", false);
    let log = lab.rt.scratch.path().join("symroute.log");
    let Chain { att, conf, .. } = lab.net1_chain(json!({"logFile": log}));
    let add = lab.rt.call("symroute", "ADD", &att, &conf);
    expect_ok(&add);
    assert!(add.stderr.is_empty(), "{}", add.describe());
    let text = std::fs::read_to_string(&log).expect("log file");
    assert!(
        text.contains("ADD pod1/net1: table 10000")
            && text.contains("+ rule  from 203.0.113.50/32"),
        "{text}"
    );
}

/// The `symroute` command is the same plugin when CNI_COMMAND is set: a
/// whole ADD, CHECK, DEL through it.
#[test]
fn the_symroute_command_is_the_plugin_too() {
    let lab = PodLab::new("mainbin");
    lab.attach_eth0("1.0.0", false);
    let Chain {
        att, prev, conf, ..
    } = lab.net1_chain(json!({}));
    let before = dump(&lab.pod);
    let add = lab.rt.call("symroute-main", "ADD", &att, &conf);
    expect_ok(&add);
    assert_eq!(add.json(), prev);
    lab.reaches(POD_ADDR)
        .unwrap_or_else(|e| panic!("after ADD: {e}"));
    expect_ok(&lab.rt.call("symroute-main", "CHECK", &att, &conf));
    // The dedicated binary sees the same state and removes it.
    expect_ok(&lab.rt.call("symroute", "DEL", &att, &conf));
    assert_same_dump(
        &before,
        &dump(&lab.pod),
        "ADD by symroute, DEL by symroute-cni",
    );
    let v = lab.rt.exec("symroute-main", "VERSION", &[], b"{}");
    expect_ok(&v);
    assert_eq!(v.json()["supportedVersions"][4], "1.1.0");
}

/// DEL after the interface is gone (the main plugin's DEL ran first, or the
/// link was deleted): the kernel took the routes with the link; symroute's
/// rules go too, from the addresses ADD recorded (no prevResult given).
#[test]
fn del_after_the_interface_is_gone() {
    let lab = PodLab::new("linkgone");
    lab.attach_eth0("1.0.0", false);
    let list = lab.net1_list(
        "1.0.0",
        lab.lan_host_local(false),
        Some((Meta::Symroute, json!({}))),
    );
    let att = lab.att("net1");
    let before_net1 = dump(&lab.pod);
    let prev = lab.macvlan_add(&list, &att);
    let conf = symroute_conf(&list, Some(&prev));
    expect_ok(&lab.rt.call("symroute", "ADD", &att, &conf));
    assert_eq!(owned(&lab.pod).0.len(), 1);
    ok(lab.pod.del_link("net1"));
    let no_prev = symroute_conf(&list, None);
    let del = lab.rt.call("symroute", "DEL", &att, &no_prev);
    expect_ok(&del);
    let (rules, routes) = owned(&lab.pod);
    assert!(
        rules.is_empty() && routes.is_empty(),
        "{rules:?} {routes:?}"
    );
    assert!(state_files(&lab.rt.data_dir()).is_empty());
    assert_same_dump(&before_net1, &dump(&lab.pod), "ADD, link deleted, DEL");
}
