//! Ownership and safety of the CNI plugin against real namespaces and the
//! real bridge, macvlan, static and host-local plugins (issue 7's CNI
//! cases): the host namespace refused even from inside another namespace,
//! a FIFO as CNI_NETNS failing fast, configuration refusals that change
//! nothing, an ADD that names another attachment's table, a tagged
//! main-table route that survives ADD and DEL, log lines naming
//! interfaces, the CLI (`symroute apply --netns`) leaving every CNI
//! attachment as CHECK expects, and the CLI and the plugin writing one
//! namespace at the same time. Run as root.

use symroute_it::cni_harness;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cni_harness::{Att, PluginRun, PodLab, Runtime, ip, net, ok};
use serde_json::{Value, json};
use symroute_core::kernel::Kernel;
use symroute_core::model::{Route, Rule, Snapshot};
use symroute_linux::kernel::NetlinkKernel;
use symroute_testkit::lab::{MAIN_TABLE, Ns};

/// The plugin's own tag; the host writer's (CLI, daemon) is 115.
const CNI_TAG: u8 = 116; // symroute_core::model::Protocol::CNI
const HOST_TAG: u8 = 115;

fn expect_ok(run: &PluginRun) {
    assert_eq!(run.code, 0, "{}", run.describe());
}

fn snapshot(ns: &Ns) -> Snapshot {
    let sock = ns
        .netns()
        .socket()
        .expect("netlink socket in the lab namespace");
    NetlinkKernel::new(sock).snapshot().expect("snapshot")
}

/// The machine's own namespace (this test process's), read only.
fn own_snapshot() -> Snapshot {
    let sock = symroute_linux::netlink::NlSocket::new().expect("netlink socket");
    NetlinkKernel::new(sock).snapshot().expect("snapshot")
}

fn rules_and_routes(s: &Snapshot) -> (Vec<Rule>, Vec<Route>) {
    let mut rules = s.rules.clone();
    let mut routes = s.routes.clone();
    rules.sort();
    routes.sort();
    (rules, routes)
}

fn tagged(ns: &Ns, tag: u8) -> (Vec<Rule>, Vec<Route>) {
    let s = snapshot(ns);
    (
        s.rules
            .iter()
            .filter(|r| r.protocol == tag)
            .cloned()
            .collect(),
        s.routes
            .iter()
            .filter(|r| r.protocol == tag)
            .cloned()
            .collect(),
    )
}

/// `symroute ARGS` as a plain command (no CNI_COMMAND), in `cmd`'s
/// namespace: exit code, stdout then stderr.
fn run_cli(mut cmd: Command, args: &[&str]) -> (i32, String) {
    let out = cmd
        .args(args)
        .env_remove("CNI_COMMAND")
        .output()
        .expect("run symroute");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn symroute_cli(args: &[&str]) -> (i32, String) {
    run_cli(
        Command::new(symroute_testkit::workspace_bin("symroute")),
        args,
    )
}

/// An ADD of `conf` with `key` set to `value` is refused with code 7;
/// returns the run.
fn refused_add(lab: &PodLab, att: &Att, conf: &Value, key: &str, value: &Value) -> PluginRun {
    let mut c = conf.clone();
    c[key] = value.clone();
    let run = lab.rt.call("symroute", "ADD", att, &c);
    assert_eq!(
        run.error_code(),
        Some(7),
        "{key}={value}: {}",
        run.describe()
    );
    run
}

/// Issue 7 case 7: run from inside a lab namespace (as a runtime on a node
/// would run it from its own), the plugin still refuses the machine's own
/// namespace for ADD, CHECK and DEL, and changes nothing in it.
#[test]
fn the_host_namespace_is_refused_from_inside_another_namespace() {
    let lab = PodLab::new("own-host");
    let pods = lab.static_chains(&[("net1", json!({}))]);
    let (att, conf) = &pods[0];
    // This test process runs in the machine's own namespace.
    let host_ns = format!("/proc/{}/ns/net", std::process::id());
    let host = Att {
        netns: host_ns.clone(),
        ..att.clone()
    };
    let before = rules_and_routes(&own_snapshot());
    for command in ["ADD", "CHECK", "DEL"] {
        let run = lab.rt.call("symroute", command, &host, conf);
        assert_eq!(run.error_code(), Some(4), "{command}: {}", run.describe());
        assert!(
            run.stdout.contains("host's own network namespace") && run.stdout.contains(&host_ns),
            "{command}: {}",
            run.describe()
        );
    }
    assert_eq!(
        rules_and_routes(&own_snapshot()),
        before,
        "the machine's namespace changed"
    );
}

/// Issue 7 case 9: a FIFO as CNI_NETNS is refused at once (code 4, DEL
/// too: the path exists and is no namespace), never waited on: nothing
/// ever opens the FIFO's other end.
#[test]
fn a_fifo_as_cni_netns_fails_fast() {
    let rt = Runtime::new("own-fifo");
    cni_harness::require_root();
    let fifo = rt.scratch.path().join("netns-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let conf = json!({"cniVersion": "1.0.0", "name": "lan", "type": "symroute",
        "dataDir": rt.data_dir(), "prevResult": {"cniVersion": "1.0.0", "ips": []}});
    for command in ["ADD", "CHECK", "DEL"] {
        let mut child = rt
            .host
            .command(Runtime::binary("symroute"))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "pod1")
            .env("CNI_IFNAME", "net1")
            .env("CNI_NETNS", &fifo)
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("write stdin");
        // Bounded wait: a hang fails the test instead of stalling it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{command} with a FIFO as CNI_NETNS did not return");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().expect("output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(status.code(), Some(1), "{command}: {stdout}");
        let v: Value = serde_json::from_str(stdout.trim()).expect("an error object");
        assert!(matches!(v["code"].as_u64(), Some(4 | 5)), "{command}: {v}");
        assert!(
            v["details"]
                .as_str()
                .unwrap_or("")
                .contains("not a network namespace"),
            "{command}: {v}"
        );
    }
}

/// Issue 7 cases 2 and 11: configuration errors are code 7 and leave the
/// pod exactly as it was.
#[test]
fn configuration_refusals_change_nothing() {
    let lab = PodLab::new("own-conf");
    lab.attach_eth0("1.0.0", false);
    let pods = lab.static_chains(&[("net1", json!({}))]);
    let (att, conf) = &pods[0];
    let before = rules_and_routes(&snapshot(&lab.pod));
    for (key, value, want) in [
        (
            "dataDir",
            json!("relative/state"),
            "expected an absolute path",
        ),
        ("protocol", json!(2), "protocol"),
        ("table", json!(254), "reserved"),
    ] {
        let run = refused_add(&lab, att, conf, key, &value);
        assert!(
            run.stdout.contains(want),
            "{key}={value}: {}",
            run.describe()
        );
    }
    assert_eq!(rules_and_routes(&snapshot(&lab.pod)), before);
}

/// Issue 7 case 2: protocol numbers of others are refused with code 7.
#[test]
fn reserved_protocols_are_refused() {
    let lab = PodLab::new("own-proto");
    let pods = lab.static_chains(&[("net1", json!({}))]);
    let (att, conf) = &pods[0];
    let before = rules_and_routes(&snapshot(&lab.pod));
    for p in [9, 12, 16, 42, 99, 186] {
        refused_add(&lab, att, conf, "protocol", &json!(p));
    }
    assert_eq!(rules_and_routes(&snapshot(&lab.pod)), before);
}

/// Issue 7 case 5: an ADD whose `table` is another attachment's table is
/// refused naming it, and nothing changes; the other attachment still
/// passes CHECK.
#[test]
fn an_add_naming_another_attachments_table_is_refused() {
    let lab = PodLab::new("own-steal");
    lab.attach_eth0("1.0.0", false);
    let pods = lab.static_chains(&[("net1", json!({})), ("net2", json!({"table": 10000}))]);
    expect_ok(&lab.rt.call("symroute", "ADD", &pods[0].0, &pods[0].1));
    let before = rules_and_routes(&snapshot(&lab.pod));
    let run = lab.rt.call("symroute", "ADD", &pods[1].0, &pods[1].1);
    assert_eq!(run.error_code(), Some(7), "{}", run.describe());
    assert!(
        run.stdout.contains("table 10000") && run.stdout.contains("pod1/net1"),
        "{}",
        run.describe()
    );
    assert_eq!(
        rules_and_routes(&snapshot(&lab.pod)),
        before,
        "nothing changes"
    );
    expect_ok(&lab.rt.call("symroute", "CHECK", &pods[0].0, &pods[0].1));
}

fn add_tagged_main_route(pod: &Ns) {
    let tag = CNI_TAG.to_string();
    ok(pod.run_cmd(
        "ip",
        [
            "route",
            "add",
            "100.64.0.0/10",
            "via",
            "203.0.113.1",
            "dev",
            "net1",
            "proto",
            tag.as_str(),
        ],
    ));
}

/// Issue 7 case 1: a route in the pod's main table through net1, carrying
/// the plugin's own tag, is not the attachment's: DEL leaves it.
#[test]
fn a_tagged_main_table_route_survives_del() {
    let lab = PodLab::new("own-main");
    lab.attach_eth0("1.0.0", false);
    let pods = lab.static_chains(&[("net1", json!({}))]);
    let (att, conf) = &pods[0];
    expect_ok(&lab.rt.call("symroute", "ADD", att, conf));
    add_tagged_main_route(&lab.pod);
    let main_route = |ns: &Ns| {
        snapshot(ns)
            .routes
            .into_iter()
            .find(|r| r.table == MAIN_TABLE && r.dst == net("100.64.0.0/10"))
    };
    assert!(main_route(&lab.pod).is_some());
    let del = lab.rt.call("symroute", "DEL", att, conf);
    expect_ok(&del);
    assert!(
        main_route(&lab.pod).is_some(),
        "DEL deleted a main-table route"
    );
    assert!(tagged(&lab.pod, CNI_TAG).0.is_empty(), "the rule went");
    // The log names the interface, not its index.
    assert!(del.stderr.contains("dev net1"), "{}", del.describe());
    assert!(!del.stderr.contains("dev if"), "{}", del.describe());
}

/// The same for ADD (the core engine's single-interface scope).
#[test]
fn a_tagged_main_table_route_survives_add() {
    let lab = PodLab::new("own-main-add");
    let pods = lab.static_chains(&[("net1", json!({}))]);
    let (att, conf) = &pods[0];
    add_tagged_main_route(&lab.pod);
    expect_ok(&lab.rt.call("symroute", "ADD", att, conf));
    assert!(
        snapshot(&lab.pod)
            .routes
            .iter()
            .any(|r| r.table == MAIN_TABLE && r.dst == net("100.64.0.0/10")),
        "ADD deleted a main-table route"
    );
}

/// Issue 7 case 11: a prevResult IP that is not on the interface is
/// skipped with a log line naming it; the rest is routed.
#[test]
fn a_prev_result_ip_not_on_the_interface_is_logged_and_skipped() {
    let lab = PodLab::new("own-stray");
    let pods = lab.static_chains(&[("net1", json!({}))]);
    let (att, conf) = &pods[0];
    let mut c = conf.clone();
    c["prevResult"]["ips"]
        .as_array_mut()
        .expect("ips")
        .push(json!({"address": "203.0.113.99/24", "interface": 0}));
    let add = lab.rt.call("symroute", "ADD", att, &c);
    expect_ok(&add);
    assert!(
        add.stderr
            .contains("prevResult IP 203.0.113.99/24 is not on net1: skipped"),
        "{}",
        add.describe()
    );
    let (rules, _) = tagged(&lab.pod, CNI_TAG);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].src, Some(net("203.0.113.50/32")));
}

fn check_all(lab: &PodLab, pods: &[(Att, Value)], context: &str) {
    for (att, conf) in pods {
        let run = lab.rt.call("symroute", "CHECK", att, conf);
        assert_eq!(
            run.code,
            0,
            "{context}: CHECK {}: {}",
            att.ifname,
            run.describe()
        );
    }
}

/// Issue 7 case 5: `symroute apply --netns` on a CNI pod with one
/// interface, and on one with several (a rules-only attachment among
/// them), leaves every attachment exactly as CHECK expects and adds
/// nothing of its own for their addresses.
#[test]
fn cli_apply_leaves_every_cni_attachment_as_check_expects() {
    for (name, eth0, ifaces) in [
        ("own-cli1", false, vec![("net1", json!({}))]),
        (
            "own-clin",
            true,
            vec![
                ("net1", json!({})),
                ("net2", json!({})),
                ("net3", json!({"table": 5003})),
            ],
        ),
    ] {
        let lab = PodLab::new(name);
        if eth0 {
            lab.attach_eth0("1.0.0", false);
        }
        let pods = lab.static_chains(&ifaces);
        for (att, conf) in &pods {
            expect_ok(&lab.rt.call("symroute", "ADD", att, conf));
        }
        let cni_before = tagged(&lab.pod, CNI_TAG);
        let netns = lab.pod.path().display().to_string();
        let (code, text) = symroute_cli(&["apply", "--netns", &netns]);
        assert_eq!(code, 0, "{name}: {text}");
        assert_eq!(tagged(&lab.pod, CNI_TAG), cni_before, "{name}: {text}");
        let (host_rules, _) = tagged(&lab.pod, HOST_TAG);
        for r in &host_rules {
            let src = r.src.map(|s| s.addr());
            assert!(
                !(50..50 + ifaces.len()).any(|i| src == Some(ip(&format!("203.0.113.{i}")))),
                "{name}: the CLI added {r:?} for a CNI attachment's address: {text}"
            );
        }
        check_all(&lab, &pods, name);
        // A second apply is a no-op, and CHECK still passes.
        let (code, text) = symroute_cli(&["apply", "--netns", &netns]);
        assert_eq!(code, 0, "{name}: {text}");
        check_all(&lab, &pods, name);
    }
}

/// Issue 7 case 4: the CLI applying the namespace while the plugin ADDs net1
/// in it, 30 rounds: both succeed, diagnose finds both addresses symmetric,
/// CHECK passes. Each round starts from nothing (DEL, clean). The two are
/// serialized by the namespace lock; whichever takes it first manages net1
/// and the other leaves net1 alone (managed by another writer), so the CLI
/// is given net1's gateway as an operator would.
#[test]
fn concurrent_cli_apply_and_cni_add_on_another_interface() {
    let lab = PodLab::new("own-race");
    lab.attach_eth0("1.0.0", false);
    let pods = lab.static_chains(&[("net1", json!({}))]);
    let (att, conf) = &pods[0];
    let netns = lab.pod.path().display().to_string();
    for round in 0..30 {
        let (cli, add) = std::thread::scope(|s| {
            // The CLI runs in the namespace the runtime runs the plugin in,
            // as on a real node: writers exclude each other through a lock
            // bound in their own network namespace.
            let cli = s.spawn(|| {
                run_cli(
                    lab.rt
                        .host
                        .command(symroute_testkit::workspace_bin("symroute")),
                    &["apply", "--netns", &netns, "--gateway", "net1=203.0.113.1"],
                )
            });
            let add = s.spawn(|| lab.rt.call("symroute", "ADD", att, conf));
            (
                cli.join().expect("cli thread"),
                add.join().expect("add thread"),
            )
        });
        assert_eq!(cli.0, 0, "round {round}: apply: {}", cli.1);
        assert_eq!(add.code, 0, "round {round}: ADD: {}", add.describe());
        let (code, text) = symroute_cli(&["diagnose", "--netns", &netns]);
        assert_eq!(code, 0, "round {round}: diagnose: {text}");
        assert!(
            text.contains("203.0.113.50") && text.contains("198.51.100."),
            "round {round}: diagnose names both addresses: {text}"
        );
        assert!(text.contains("verdict: symmetric"), "round {round}: {text}");
        let check = lab.rt.call("symroute", "CHECK", att, conf);
        assert_eq!(check.code, 0, "round {round}: CHECK: {}", check.describe());
        expect_ok(&lab.rt.call("symroute", "DEL", att, conf));
        let (code, text) = symroute_cli(&["clean", "--netns", &netns]);
        assert_eq!(code, 0, "round {round}: clean: {text}");
        assert!(tagged(&lab.pod, CNI_TAG).0.is_empty(), "round {round}");
        assert!(tagged(&lab.pod, HOST_TAG).0.is_empty(), "round {round}");
    }
}
