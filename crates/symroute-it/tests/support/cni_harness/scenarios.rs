//! The side-by-side scenarios: each builds its own pod lab, attaches eth0
//! with the bridge plugin and net1 with macvlan (or static IPAM), chains the
//! meta plugin under test (symroute or Debian's sbr) and checks what a user
//! would: real TCP from a client on another subnet, the namespace's rules and
//! routes, exit codes. `Ok` means the plugin behaved right.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use symroute_core::kernel::Kernel;
use symroute_core::model::{Route, Rule, Snapshot};
use symroute_linux::kernel::NetlinkKernel;

use super::{Att, LAN_GW, Meta, PORT, PluginRun, PodLab, plugin_conf};
use crate::common::{Dump, dump};

pub type Check = Result<(), String>;

/// One row of the comparison.
pub struct Scenario {
    pub id: &'static str,
    /// What is checked, as the table says it.
    pub title: &'static str,
    /// Covered by sbr's own tests (else: a known sbr failure).
    pub sbr_feature: bool,
    pub run: fn(Meta) -> Check,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        id: "v031",
        title: "0.3.1 configuration (bridge eth0, macvlan + host-local net1): a client on another subnet reaches net1",
        sbr_feature: true,
        run: |m| reply_after_add(m, "0.3.1"),
    },
    Scenario {
        id: "v040",
        title: "0.4.0 configuration: same",
        sbr_feature: true,
        run: |m| reply_after_add(m, "0.4.0"),
    },
    Scenario {
        id: "v100",
        title: "1.0.0 configuration: same",
        sbr_feature: true,
        run: |m| reply_after_add(m, "1.0.0"),
    },
    Scenario {
        id: "default-kept",
        title: "an existing default route (eth0's, in main) stays; net1's replies leave by net1",
        sbr_feature: true,
        run: existing_default_route,
    },
    Scenario {
        id: "several-ips",
        title: "several IPs on net1 (static IPAM): each reachable",
        sbr_feature: true,
        run: several_ips,
    },
    Scenario {
        id: "table",
        title: "`table` option: rules point at the given table, filled by someone else",
        sbr_feature: true,
        run: table_option,
    },
    Scenario {
        id: "static-v4",
        title: "static IPv4 IPAM with a gateway",
        sbr_feature: true,
        run: static_ipv4,
    },
    Scenario {
        id: "ipv6",
        title: "IPv6 gateway (static IPAM): reachable over IPv6",
        sbr_feature: true,
        run: ipv6_gateway,
    },
    Scenario {
        id: "dual",
        title: "dual-stack gateways (host-local v4 + v6): reachable over both",
        sbr_feature: true,
        run: dual_stack,
    },
    Scenario {
        id: "two-gateways",
        title: "`gateways` with two IPv4 gateways is rejected (code 7), nothing changed",
        sbr_feature: true,
        run: two_gateways_rejected,
    },
    Scenario {
        id: "second-add",
        title: "a second ADD succeeds and leaks nothing",
        sbr_feature: false,
        run: second_add,
    },
    Scenario {
        id: "del-vanished",
        title: "DEL on a vanished namespace path succeeds and creates no file there",
        sbr_feature: false,
        run: del_vanished,
    },
    Scenario {
        id: "del-empty-netns",
        title: "DEL with an empty CNI_NETNS succeeds",
        sbr_feature: false,
        run: del_empty_netns,
    },
    Scenario {
        id: "fe80",
        title: "IPv6 `default via fe80::1` in main: kept, and replies from net1 use it",
        sbr_feature: false,
        run: fe80_default,
    },
    Scenario {
        id: "local-traffic",
        title: "locally started traffic to net1's subnet still works after ADD",
        sbr_feature: false,
        run: local_traffic,
    },
    Scenario {
        id: "no-ipam-gateway",
        title: "IPAM without a gateway plus a configured one (`gateways`): reachable",
        sbr_feature: false,
        run: no_ipam_gateway,
    },
    Scenario {
        id: "del-restores",
        title: "ADD then DEL leaves the namespace's rules and routes exactly as before",
        sbr_feature: false,
        run: |m| del_restores(m, true),
    },
    Scenario {
        id: "del-no-prev",
        title: "DEL without prevResult cleans up as well",
        sbr_feature: false,
        run: |m| del_restores(m, false),
    },
    Scenario {
        id: "check",
        title: "CHECK fails, naming it, when a rule is missing",
        sbr_feature: false,
        run: check_detects,
    },
    Scenario {
        id: "codes",
        title: "ADD without prevResult fails with the spec's code 7",
        sbr_feature: false,
        run: error_code,
    },
];

const POD_ADDR: &str = "203.0.113.50";
const POD_ADDR6: &str = "2001:db8:113::50";

/// A pod with eth0 attached and net1's list ready.
struct Setup {
    lab: PodLab,
    list: Value,
    att: Att,
}

fn setup(name: &str, version: &str, eth0_v6: bool, ipam: Value, meta: Meta, extra: Value) -> Setup {
    let lab = PodLab::new(name);
    lab.attach_eth0(version, eth0_v6);
    let ipam = if ipam.is_null() {
        lab.lan_host_local(false)
    } else {
        ipam
    };
    let list = lab.net1_list(version, ipam, Some((meta, extra)));
    let att = lab.att("net1");
    Setup { lab, list, att }
}

impl Setup {
    fn meta(&self) -> &str {
        self.list["plugins"][1]["type"].as_str().expect("meta type")
    }

    /// ADD the main plugin (macvlan): its result. A failure is the lab's.
    fn main_add(&self) -> Value {
        let conf = plugin_conf(&self.list, &self.list["plugins"][0], None);
        let run = self.lab.rt.call("macvlan", "ADD", &self.att, &conf);
        assert_eq!(run.code, 0, "macvlan ADD failed: {}", run.describe());
        run.json()
    }

    /// The meta plugin's `command` with `prev` as prevResult.
    fn meta_call(&self, command: &str, prev: Option<&Value>) -> PluginRun {
        self.meta_call_at(command, prev, &self.att)
    }

    fn meta_call_at(&self, command: &str, prev: Option<&Value>, att: &Att) -> PluginRun {
        let conf = plugin_conf(&self.list, &self.list["plugins"][1], prev);
        self.lab.rt.call(self.meta(), command, att, &conf)
    }

    fn meta_add(&self, prev: &Value) -> Check {
        let run = self.meta_call("ADD", Some(prev));
        if run.code != 0 {
            return Err(format!("ADD failed: {}", short(&run)));
        }
        Ok(())
    }
}

/// A plugin run in one line for the table.
pub fn short(run: &PluginRun) -> String {
    let msg = serde_json::from_str::<Value>(&run.stdout).ok().map_or_else(
        || run.stdout.trim().to_string(),
        |v| {
            format!(
                "code {}: {}",
                v["code"],
                v["msg"].as_str().unwrap_or_default()
            )
        },
    );
    format!("exit {}, {msg}", run.code).replace('|', "/")
}

fn snapshot(lab: &PodLab) -> Snapshot {
    let sock = lab.pod.netns().socket().expect("netlink socket in pod");
    NetlinkKernel::new(sock)
        .snapshot()
        .expect("snapshot of pod")
}

fn rules_from(snap: &Snapshot, addr: &str) -> Vec<Rule> {
    let a: std::net::IpAddr = addr.parse().expect("address");
    snap.rules
        .iter()
        .filter(|r| r.src.is_some_and(|s| s.addr() == a))
        .cloned()
        .collect()
}

fn main_default(snap: &Snapshot, v6: bool) -> Vec<Route> {
    snap.routes
        .iter()
        .filter(|r| r.table == 254 && r.is_default() && r.dst.addr().is_ipv6() == v6)
        .cloned()
        .collect()
}

fn same(before: &Dump, after: &Dump, what: &str) -> Check {
    if before == after {
        return Ok(());
    }
    let gone = before
        .routes
        .iter()
        .chain(&before.rules)
        .filter(|x| !after.routes.contains(x) && !after.rules.contains(x))
        .count();
    let new = after
        .routes
        .iter()
        .chain(&after.rules)
        .filter(|x| !before.routes.contains(x) && !before.rules.contains(x))
        .count();
    Err(format!("{what}: {gone} rule(s)/route(s) gone, {new} new"))
}

fn reply_after_add(meta: Meta, version: &str) -> Check {
    let s = setup(
        &format!("v{}", version.replace('.', "")),
        version,
        false,
        Value::Null,
        meta,
        json!({}),
    );
    let prev = s.main_add();
    s.lab
        .blocked(POD_ADDR)
        .unwrap_or_else(|e| panic!("lab precondition: before ADD {e}"));
    s.meta_add(&prev)?;
    s.lab.reaches(POD_ADDR)
}

fn existing_default_route(meta: Meta) -> Check {
    let s = setup("dflt", "1.0.0", false, Value::Null, meta, json!({}));
    let prev = s.main_add();
    let before = main_default(&snapshot(&s.lab), false);
    assert_eq!(
        before.len(),
        1,
        "lab precondition: one default route in main"
    );
    s.meta_add(&prev)?;
    let after = main_default(&snapshot(&s.lab), false);
    if after != before {
        return Err(format!(
            "main's default route changed: {before:?} -> {after:?}"
        ));
    }
    s.lab.reaches(POD_ADDR)
}

fn several_ips(meta: Meta) -> Check {
    let ipam = json!({"type": "static", "addresses": [
        {"address": "203.0.113.50/24", "gateway": LAN_GW},
        {"address": "203.0.113.51/24", "gateway": LAN_GW},
    ]});
    let s = setup("ips", "1.0.0", false, ipam, meta, json!({}));
    let prev = s.main_add();
    s.meta_add(&prev)?;
    s.lab.reaches("203.0.113.50")?;
    s.lab.reaches("203.0.113.51")
}

fn table_option(meta: Meta) -> Check {
    let s = setup(
        "table",
        "1.0.0",
        false,
        Value::Null,
        meta,
        json!({"table": 5001}),
    );
    let prev = s.main_add();
    // What a 1.1.0 IPAM with route tables would do: fill table 5001.
    crate::cni_harness::ok(s.lab.pod.add_route(
        crate::cni_harness::net("0.0.0.0/0"),
        Some(crate::cni_harness::ip(LAN_GW)),
        Some("net1"),
        5001,
    ));
    crate::cni_harness::ok(s.lab.pod.add_route(
        crate::cni_harness::net("203.0.113.0/24"),
        None,
        Some("net1"),
        5001,
    ));
    s.meta_add(&prev)?;
    let rules = rules_from(&snapshot(&s.lab), POD_ADDR);
    if rules.len() != 1 || rules[0].table != 5001 {
        return Err(format!(
            "rules from {POD_ADDR} point at table(s) {:?}, not 5001",
            rules.iter().map(|r| r.table).collect::<Vec<_>>()
        ));
    }
    s.lab.reaches(POD_ADDR)
}

fn static_ipv4(meta: Meta) -> Check {
    let ipam =
        json!({"type": "static", "addresses": [{"address": "203.0.113.50/24", "gateway": LAN_GW}]});
    let s = setup("static", "1.0.0", false, ipam, meta, json!({}));
    let prev = s.main_add();
    s.meta_add(&prev)?;
    s.lab.reaches(POD_ADDR)
}

fn ipv6_gateway(meta: Meta) -> Check {
    let ipam = json!({"type": "static", "addresses": [{"address": "2001:db8:113::50/64", "gateway": "2001:db8:113::1"}]});
    let s = setup("ipv6", "1.0.0", true, ipam, meta, json!({}));
    let prev = s.main_add();
    s.lab
        .blocked(POD_ADDR6)
        .unwrap_or_else(|e| panic!("lab precondition: before ADD {e}"));
    s.meta_add(&prev)?;
    s.lab.reaches(POD_ADDR6)
}

fn dual_stack(meta: Meta) -> Check {
    let s = PodLab::new("dual");
    s.attach_eth0("1.0.0", true);
    let list = s.net1_list("1.0.0", s.lan_host_local(true), Some((meta, json!({}))));
    let s = Setup {
        att: s.att("net1"),
        lab: s,
        list,
    };
    let prev = s.main_add();
    s.meta_add(&prev)?;
    s.lab.reaches(POD_ADDR)?;
    s.lab.reaches(POD_ADDR6)
}

fn two_gateways_rejected(meta: Meta) -> Check {
    let s = setup(
        "twogw",
        "1.0.0",
        false,
        Value::Null,
        meta,
        json!({"gateways": ["203.0.113.1", "203.0.113.2"]}),
    );
    let prev = s.main_add();
    let before = dump(&s.lab.pod);
    let run = s.meta_call("ADD", Some(&prev));
    if run.code == 0 {
        return Err("accepted two IPv4 gateways".into());
    }
    if run.error_code() != Some(7) {
        return Err(format!("rejected, but not with code 7: {}", short(&run)));
    }
    same(&before, &dump(&s.lab.pod), "after the rejected ADD")
}

fn second_add(meta: Meta) -> Check {
    let s = setup("again", "1.0.0", false, Value::Null, meta, json!({}));
    let prev = s.main_add();
    s.meta_add(&prev)?;
    let first = dump(&s.lab.pod);
    let run = s.meta_call("ADD", Some(&prev));
    if run.code != 0 {
        return Err(format!("second ADD: {}", short(&run)));
    }
    same(&first, &dump(&s.lab.pod), "second ADD")?;
    s.lab.reaches(POD_ADDR)
}

fn del_vanished(meta: Meta) -> Check {
    let s = setup("vanish", "1.0.0", false, Value::Null, meta, json!({}));
    let prev = s.main_add();
    s.meta_add(&prev)?;
    let gone = s.lab.rt.scratch.path().join("netns-gone");
    let mut att = s.att.clone();
    att.netns = gone.display().to_string();
    let run = s.meta_call_at("DEL", Some(&prev), &att);
    let created = gone.exists();
    match (run.code, created) {
        (0, false) => Ok(()),
        (0, true) => Err("DEL succeeded but created a file at the namespace path".into()),
        (_, true) => Err(format!(
            "DEL failed ({}) and created a file at the namespace path",
            short(&run)
        )),
        (_, false) => Err(format!("DEL failed: {}", short(&run))),
    }
}

fn del_empty_netns(meta: Meta) -> Check {
    let s = setup("emptyns", "1.0.0", false, Value::Null, meta, json!({}));
    let prev = s.main_add();
    s.meta_add(&prev)?;
    let mut att = s.att.clone();
    att.netns = String::new();
    let run = s.meta_call_at("DEL", Some(&prev), &att);
    if run.code != 0 {
        return Err(format!("DEL failed: {}", short(&run)));
    }
    Ok(())
}

fn fe80_default(meta: Meta) -> Check {
    let ipam = json!({"type": "static",
        "addresses": [{"address": "2001:db8:113::50/64"}],
        "routes": [{"dst": "::/0", "gw": "fe80::1"}]});
    let s = setup("fe80", "1.0.0", false, ipam, meta, json!({}));
    let prev = s.main_add();
    let before = main_default(&snapshot(&s.lab), true);
    assert_eq!(
        before.len(),
        1,
        "lab precondition: main has default via fe80::1"
    );
    s.lab
        .reaches(POD_ADDR6)
        .unwrap_or_else(|e| panic!("lab precondition: before ADD {e}"));
    s.meta_add(&prev)?;
    let after = main_default(&snapshot(&s.lab), true);
    if after != before {
        return Err(format!(
            "main's IPv6 default route changed: {} before, {} after",
            before.len(),
            after.len()
        ));
    }
    s.lab.reaches(POD_ADDR6)
}

fn local_traffic(meta: Meta) -> Check {
    let s = setup("local", "1.0.0", false, Value::Null, meta, json!({}));
    let _router_server = crate::cni_harness::ok(
        s.lab
            .router
            .tcp_server(SocketAddr::from(([0, 0, 0, 0], PORT)), "router"),
    );
    let prev = s.main_add();
    let target: SocketAddr = format!("{LAN_GW}:{PORT}").parse().expect("address");
    let probe = || s.lab.pod.tcp_probe(target, Duration::from_millis(1500));
    probe()
        .unwrap_or_else(|e| panic!("lab precondition: before ADD the pod reaches the router: {e}"));
    s.meta_add(&prev)?;
    probe().map(|_| ()).map_err(|e| {
        format!("after ADD, an unbound connection from the pod to {target} fails: {e}")
    })
}

fn no_ipam_gateway(meta: Meta) -> Check {
    let ipam = json!({"type": "static", "addresses": [{"address": "203.0.113.50/24"}]});
    let s = setup(
        "nogw",
        "1.0.0",
        false,
        ipam,
        meta,
        json!({"gateways": [LAN_GW]}),
    );
    let prev = s.main_add();
    s.meta_add(&prev)?;
    s.lab.reaches(POD_ADDR)
}

fn del_restores(meta: Meta, with_prev: bool) -> Check {
    let s = setup("restore", "1.0.0", false, Value::Null, meta, json!({}));
    let prev = s.main_add();
    let before = dump(&s.lab.pod);
    s.meta_add(&prev)?;
    let run = s.meta_call("DEL", with_prev.then_some(&prev));
    if run.code != 0 {
        return Err(format!("DEL failed: {}", short(&run)));
    }
    same(&before, &dump(&s.lab.pod), "after ADD and DEL")
}

fn check_detects(meta: Meta) -> Check {
    let s = setup("check", "1.0.0", false, Value::Null, meta, json!({}));
    let prev = s.main_add();
    s.meta_add(&prev)?;
    let run = s.meta_call("CHECK", Some(&prev));
    if run.code != 0 {
        return Err(format!("CHECK right after ADD failed: {}", short(&run)));
    }
    let rules = rules_from(&snapshot(&s.lab), POD_ADDR);
    let sock = s.lab.pod.netns().socket().expect("netlink socket");
    let mut k = NetlinkKernel::new(sock);
    for r in rules {
        k.execute(&symroute_core::diff::Op::DelRule(r))
            .map_err(|e| format!("lab: delete rule: {e}"))?;
    }
    let run = s.meta_call("CHECK", Some(&prev));
    if run.code == 0 {
        return Err("CHECK passed although the rule is gone".into());
    }
    if !run.stdout.contains(POD_ADDR) {
        return Err(format!(
            "CHECK failed without naming the rule: {}",
            short(&run)
        ));
    }
    Ok(())
}

fn error_code(meta: Meta) -> Check {
    let s = setup("codes", "1.0.0", false, Value::Null, meta, json!({}));
    s.main_add();
    let run = s.meta_call("ADD", None);
    match run.error_code() {
        Some(7) if run.code != 0 => Ok(()),
        _ => Err(format!("ADD without prevResult: {}", short(&run))),
    }
}
