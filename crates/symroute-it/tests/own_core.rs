//! Ownership in a real namespace (issue 7, cases 1, 2, 3 and 10): symroute
//! changes only what is its own, whatever else carries its tag, whatever
//! protocol number it is given, and whoever races it for a route's key.
//!
//! Every test builds its own anonymous namespaces (a "ctr" with eth0 and
//! eth1, veth'd to a "peer"); nothing touches the host's namespace.

use symroute_it::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use symroute_core::diff::Op;
use symroute_core::engine::{self, ApplyOptions, EngineError};
use symroute_core::kernel::{Kernel, KernelError, RouteAnswer, RouteQuery};
use symroute_core::model::Snapshot;
use symroute_core::ownership::Finding;
use symroute_core::plan::{GatewayHint, PlanRequest};
use symroute_core::settings::Settings;
use symroute_linux::kernel::NetlinkKernel;
use symroute_testkit::lab::{MAIN_TABLE, Ns};

/// ctr: eth0 172.18.0.2/24 (+ 2001:db8:18::2/64) with main's default route
/// via 172.18.0.1, eth1 172.19.0.2/24; both veth'd to peer, which holds the
/// gateways' addresses.
struct Lab {
    ctr: Ns,
    _peer: Ns,
}

fn lab() -> Lab {
    require_root();
    let ctr = ok(Ns::new("ctr"));
    let peer = ok(Ns::new("peer"));
    for (i, (mine, theirs)) in [
        ("172.18.0.2/24", "172.18.0.1/24"),
        ("172.19.0.2/24", "172.19.0.1/24"),
    ]
    .iter()
    .enumerate()
    {
        let (eth, p) = (format!("eth{i}"), format!("p{i}"));
        ok(ctr.veth(&eth, &peer, &p));
        ok(ctr.add_addr(&eth, net(mine)));
        ok(peer.add_addr(&p, net(theirs)));
        ok(ctr.link_up(&eth));
        ok(peer.link_up(&p));
    }
    ok(ctr.add_addr("eth0", net("2001:db8:18::2/64")));
    ok(ctr.add_route(
        net("0.0.0.0/0"),
        Some(ip("172.18.0.1")),
        Some("eth0"),
        MAIN_TABLE,
    ));
    ok(ctr.wait_no_tentative(Duration::from_secs(10)));
    Lab { ctr, _peer: peer }
}

fn ip_cmd(ns: &Ns, args: &[&str]) {
    ok(ns.run_cmd("ip", args));
}

fn apply_args(ctr: &str) -> Vec<String> {
    ["apply", "--netns", ctr, "--gateway", "eth1=172.19.0.1"]
        .iter()
        .map(std::string::ToString::to_string)
        .collect()
}

/// Only the lines of a dump that match `pred`.
fn lines(d: &Dump, pred: impl Fn(&str) -> bool) -> Dump {
    Dump {
        rules: d.rules.iter().filter(|s| pred(s)).cloned().collect(),
        routes: d.routes.iter().filter(|s| pred(s)).cloned().collect(),
    }
}

/// Case 1: objects tagged 115 outside symroute's space (a route in main, a
/// route in table 77, a `lookup main` rule) are not symroute's: apply and
/// clean leave them byte-identical.
#[test]
fn tagged_objects_outside_the_space_survive_apply_and_clean() {
    let lab = lab();
    let ctr = path_of(&lab.ctr);
    ip_cmd(
        &lab.ctr,
        &[
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "172.18.0.1",
            "proto",
            "115",
        ],
    );
    ip_cmd(
        &lab.ctr,
        &[
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            "172.19.0.1",
            "table",
            "77",
            "proto",
            "115",
        ],
    );
    ip_cmd(
        &lab.ctr,
        &[
            "rule",
            "add",
            "from",
            "172.19.0.2",
            "lookup",
            "main",
            "priority",
            "3000",
            "protocol",
            "115",
        ],
    );
    ip_cmd(
        &lab.ctr,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:77::/64",
            "dev",
            "eth0",
            "table",
            "77",
            "proto",
            "115",
        ],
    );
    let before = dump(&lab.ctr);
    let tagged_before = lines(&before, |s| {
        s.contains("Protocol(Other(115))") || s.contains("protocol: Other(115)")
    });
    assert_eq!(
        tagged_before.rules.len() + tagged_before.routes.len(),
        4,
        "the set-up made four tagged objects: {tagged_before:#?}"
    );
    let is_outside = |s: &str| {
        s.contains("198.51.100.0")
            || s.contains("192.0.2.0")
            || s.contains("2001:db8:77::")
            || (s.contains("Table(254)") && s.contains("Other(115)"))
    };
    let outside = lines(&before, is_outside);

    symroute(apply_args(&ctr)).expect(0);
    assert_same_dump(&outside, &lines(&dump(&lab.ctr), is_outside), "after apply");
    // symroute's own objects are there, and a second apply does nothing.
    let again = symroute([apply_args(&ctr), vec!["--json".into()]].concat());
    again.expect(0);
    assert_eq!(len_of(&again.json(), "ops"), 0, "{}", again.stdout);
    symroute(["clean", "--netns", &ctr]).expect(0);
    assert_same_dump(&outside, &lines(&dump(&lab.ctr), is_outside), "after clean");
    // Everything but symroute's objects is as before the apply.
    assert_same_dump(&before, &dump(&lab.ctr), "apply + clean");
}

/// Case 2: protocol numbers that belong to others are refused with exit 2
/// and change nothing, in the RA default-route case too (`--protocol 9`
/// used to delete main's IPv6 default route).
#[test]
fn protocols_of_others_are_refused_and_nothing_changes() {
    let lab = lab();
    let ctr = path_of(&lab.ctr);
    // What router advertisements install: `default via fe80::1 proto ra`.
    ip_cmd(
        &lab.ctr,
        &[
            "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0", "proto", "ra",
        ],
    );
    ip_cmd(
        &lab.ctr,
        &[
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "172.18.0.1",
            "proto",
            "dhcp",
        ],
    );
    ip_cmd(
        &lab.ctr,
        &[
            "route",
            "add",
            "203.0.113.128/25",
            "via",
            "172.18.0.1",
            "proto",
            "bird",
        ],
    );
    ip_cmd(
        &lab.ctr,
        &[
            "route",
            "add",
            "203.0.113.64/26",
            "via",
            "172.18.0.1",
            "proto",
            "186",
        ],
    );
    let before = dump(&lab.ctr);
    for (p, owner) in [
        ("9", "`ra`"),
        ("16", "dhcp"),
        ("12", "bird"),
        ("186", "bgp"),
    ] {
        for cmd in [
            [apply_args(&ctr), vec!["--protocol".into(), p.into()]].concat(),
            vec![
                "clean".into(),
                "--netns".into(),
                ctr.clone(),
                "--protocol".into(),
                p.into(),
            ],
            vec![
                "status".into(),
                "--netns".into(),
                ctr.clone(),
                "--protocol".into(),
                p.into(),
            ],
        ] {
            let out = symroute(&cmd);
            out.expect(2);
            assert!(
                out.stderr.contains(&format!("protocol {p} is")) && out.stderr.contains(owner),
                "{cmd:?}: {}",
                out.stderr
            );
            assert_same_dump(&before, &dump(&lab.ctr), &format!("{cmd:?}"));
        }
    }
    // The config file's key is refused the same way.
    let dir = scratch_dir("own-core-config");
    let config = dir.join("config.toml");
    std::fs::write(&config, "protocol = 9\n").unwrap();
    let out = symroute_raw([
        "--config",
        config.to_str().unwrap(),
        "clean",
        "--netns",
        &ctr,
    ]);
    out.expect(2);
    assert!(
        out.stderr.contains("router advertisements"),
        "{}",
        out.stderr
    );
    assert_same_dump(&before, &dump(&lab.ctr), "config protocol 9");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A kernel that lets another writer act right before the `at`-th change:
/// a deterministic stand-in for the race of case 3.
struct Raced<F: FnMut()> {
    inner: NetlinkKernel,
    at: usize,
    calls: usize,
    writer: F,
}

impl<F: FnMut()> Kernel for Raced<F> {
    fn snapshot(&mut self) -> Result<Snapshot, KernelError> {
        self.inner.snapshot()
    }
    fn execute(&mut self, op: &Op) -> Result<(), KernelError> {
        if self.calls == self.at {
            (self.writer)();
        }
        self.calls += 1;
        self.inner.execute(op)
    }
    fn route_get(&mut self, q: &RouteQuery) -> Result<RouteAnswer, KernelError> {
        self.inner.route_get(q)
    }
}

fn options() -> ApplyOptions {
    ApplyOptions {
        request: PlanRequest {
            gateways: vec![GatewayHint {
                ifname: "eth1".into(),
                gateway: ip("172.19.0.1"),
            }],
            ..PlanRequest::default()
        },
        dad_wait: Duration::ZERO,
        ..ApplyOptions::default()
    }
}

/// Case 3, deterministic: another writer adds `default via 172.19.0.254
/// table T proto static` after symroute's snapshot, right before symroute's
/// own add of that key. The add meets EEXIST, a fresh read shows a route that
/// is not the wanted one: apply fails naming it and leaves nothing of its own.
#[test]
fn a_foreign_route_appearing_after_the_snapshot_fails_the_apply_and_rolls_back() {
    let lab = lab();
    let o = options();
    let dry = engine::apply(
        &mut kernel(&lab.ctr),
        &ApplyOptions {
            dry_run: true,
            ..o.clone()
        },
    )
    .unwrap();
    let (at, table) = dry
        .ops
        .iter()
        .enumerate()
        .find_map(|(i, op)| match op {
            Op::AddRoute(r) if r.is_default() && r.oif == ok(lab.ctr.link_index("eth1")) => {
                Some((i, r.table))
            }
            _ => None,
        })
        .expect("a default route for eth1 in the plan");
    assert!(
        at > 0,
        "some changes come before it (so there is something to roll back)"
    );
    let before = dump(&lab.ctr);
    let t = table.to_string();
    let mut k = Raced {
        inner: kernel(&lab.ctr),
        at,
        calls: 0,
        writer: || {
            ip_cmd(
                &lab.ctr,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "172.19.0.254",
                    "dev",
                    "eth1",
                    "table",
                    &t,
                    "proto",
                    "static",
                ],
            );
        },
    };
    let e = engine::apply(&mut k, &o).unwrap_err();
    let text = e.to_string();
    match &e {
        EngineError::Conflict {
            found,
            rolled_back,
            rollback_errors,
            ..
        } => {
            assert!(
                found.contains("via 172.19.0.254") && found.contains("proto 4"),
                "{found}"
            );
            assert_eq!(rolled_back.len(), at);
            assert!(rollback_errors.is_empty(), "{rollback_errors:?}");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(text.contains("rolled back"), "{text}");
    assert_eq!(
        owned(&lab.ctr),
        (vec![], vec![]),
        "nothing of symroute's is left"
    );
    // Only the foreign route is new.
    let after = dump(&lab.ctr);
    let new: Vec<&String> = after
        .routes
        .iter()
        .filter(|r| !before.routes.contains(r))
        .collect();
    assert_eq!(new.len(), 1, "{new:#?}");
    assert!(new[0].contains("Static"), "{}", new[0]);
    assert_same_dump(
        &before,
        &Dump {
            rules: after.rules.clone(),
            routes: before.routes.clone(),
        },
        "rules",
    );
}

/// Case 3, raced honestly: the real binary against a thread that adds the
/// foreign route as soon as it can, started at varying moments. Whoever
/// wins, the foreign route is never taken for symroute's: apply exits 0 with
/// eth1's rule pointing at a table holding symroute's own default route
/// (another table when the racer came first), or exits 2 naming the foreign
/// route and leaves nothing of its own.
#[test]
fn a_racing_foreign_writer_never_gets_its_route_taken_for_symroutes() {
    let lab = lab();
    let ctr = path_of(&lab.ctr);
    // The table apply gives eth1 on this namespace.
    let dry = symroute([apply_args(&ctr), vec!["--dry-run".into(), "--json".into()]].concat());
    dry.expect(0);
    let table = plan_table(&dry.json()["plan"], "eth1");
    let (mut won, mut moved, mut lost) = (0, 0, 0);
    for i in 0..200u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let racer = std::thread::scope(|s| {
            let flag = stop.clone();
            let ns = &lab.ctr;
            let handle = s.spawn(move || {
                // Start at a different moment each run: the binary's
                // snapshot, plan and adds take a few milliseconds.
                std::thread::sleep(Duration::from_micros((i % 40) * 250));
                while !flag.load(Ordering::SeqCst) {
                    if ns
                        .add_route(
                            net("0.0.0.0/0"),
                            Some(ip("172.19.0.254")),
                            Some("eth1"),
                            table,
                        )
                        .is_ok()
                    {
                        return true;
                    }
                }
                false
            });
            let out = symroute(apply_args(&ctr));
            stop.store(true, Ordering::SeqCst);
            let added = handle.join().expect("racer thread");
            (out, added)
        });
        let (out, added) = racer;
        let (rules, routes) = owned(&lab.ctr);
        let snap = snapshot(&lab.ctr);
        let foreign_there = snap.routes.iter().any(|r| {
            r.table == table
                && r.is_default()
                && r.gateway == Some(ip("172.19.0.254"))
                && r.protocol != TAG
        });
        assert_eq!(
            foreign_there, added,
            "run {i}: the foreign route, once added, stays as it is"
        );
        match out.code {
            0 => {
                // symroute's rule for eth1 points at a table holding its own
                // default route, never at the one holding the foreign route
                // (a racer that won before the snapshot makes the planner
                // pick another table).
                let rule = rules
                    .iter()
                    .find(|r| r.src == Some(net("172.19.0.2/32")))
                    .unwrap_or_else(|| panic!("run {i}: exit 0 without eth1's rule: {rules:#?}"));
                assert!(
                    routes.iter().any(|r| r.table == rule.table
                        && r.is_default()
                        && r.gateway == Some(ip("172.19.0.1"))),
                    "run {i}: eth1's table {} lacks symroute's default route: {routes:#?}",
                    rule.table
                );
                if added {
                    assert_ne!(
                        rule.table, table,
                        "run {i}: eth1's rule points at the foreign route"
                    );
                    moved += 1;
                } else {
                    won += 1;
                }
            }
            2 => {
                lost += 1;
                assert!(
                    added,
                    "run {i}: exit 2 without a foreign route: {}",
                    out.stderr
                );
                assert!(
                    out.stderr.contains("via 172.19.0.254")
                        && out.stderr.contains("not symroute's"),
                    "run {i}: the error must name the foreign route: {}",
                    out.stderr
                );
                assert!(
                    rules.is_empty() && routes.is_empty(),
                    "run {i}: left {rules:#?} {routes:#?}"
                );
            }
            _ => panic!("run {i}: unexpected exit {}: {}", out.code, out.stderr),
        }
        // Reset for the next run.
        symroute(["clean", "--netns", &ctr]).expect(0);
        let _ = lab.ctr.del_route(
            net("0.0.0.0/0"),
            Some(ip("172.19.0.254")),
            Some("eth1"),
            table,
        );
        assert_eq!(owned(&lab.ctr), (vec![], vec![]));
    }
    eprintln!(
        "race: symroute first {won} times, the foreign writer before the snapshot {moved} times, \
         between the snapshot and the add {lost} times"
    );
}

/// Case 10: a tagged `iif eth1 lookup T` rule at symroute's priority and
/// tagged blackhole / unreachable routes in a band table are findings:
/// apply converges in one run, status settles, clean removes symroute's own
/// `from` rules and keeps exactly those (and reports them).
#[test]
fn unrepresentable_tagged_objects_are_left_alone_and_reported() {
    let lab = lab();
    let ctr = path_of(&lab.ctr);
    let dry = symroute([apply_args(&ctr), vec!["--dry-run".into(), "--json".into()]].concat());
    dry.expect(0);
    let t = plan_table(&dry.json()["plan"], "eth1").to_string();
    ip_cmd(
        &lab.ctr,
        &[
            "rule", "add", "iif", "eth1", "lookup", &t, "priority", "3000", "protocol", "115",
        ],
    );
    ip_cmd(
        &lab.ctr,
        &[
            "route",
            "add",
            "blackhole",
            "198.51.100.0/24",
            "table",
            &t,
            "proto",
            "115",
        ],
    );
    ip_cmd(
        &lab.ctr,
        &[
            "route",
            "add",
            "unreachable",
            "192.0.2.0/24",
            "table",
            &t,
            "proto",
            "115",
        ],
    );
    ip_cmd(
        &lab.ctr,
        &[
            "-6",
            "route",
            "add",
            "blackhole",
            "2001:db8:99::/64",
            "table",
            &t,
            "proto",
            "115",
        ],
    );
    let findings_of = |d: &Dump| {
        lines(d, |s| {
            s.contains("Iifname")
                || s.contains("198.51.100.0")
                || s.contains("192.0.2.0")
                || s.contains("2001:db8:99::")
        })
    };
    let before = findings_of(&dump(&lab.ctr));
    assert_eq!(
        (before.rules.len(), before.routes.len()),
        (1, 3),
        "{before:#?}"
    );

    let first = symroute([apply_args(&ctr), vec!["--json".into()]].concat());
    first.expect(0);
    assert!(len_of(&first.json(), "ops") > 0);
    assert_eq!(
        first.json()["findings"].as_array().map(Vec::len),
        Some(4),
        "{}",
        first.stdout
    );
    let second = symroute([apply_args(&ctr), vec!["--json".into()]].concat());
    second.expect(0);
    assert_eq!(
        len_of(&second.json(), "ops"),
        0,
        "converged in one run: {}",
        second.stdout
    );
    let st = symroute([
        "status",
        "--netns",
        &ctr,
        "--gateway",
        "eth1=172.19.0.1",
        "--json",
    ]);
    st.expect(0);
    assert_eq!(st.json()["in_sync"], true, "{}", st.stdout);
    assert_same_dump(&before, &findings_of(&dump(&lab.ctr)), "after apply");

    // clean, through the engine to read its report, then the binary after a
    // fresh apply: both leave exactly the findings.
    let ours_from = |ns: &Ns| {
        snapshot(ns)
            .rules
            .into_iter()
            .filter(|r| r.protocol == TAG && !r.other_selectors)
            .count()
    };
    assert_eq!(
        ours_from(&lab.ctr),
        3,
        "from rules of eth0 (v4, v6) and eth1"
    );
    let rep = engine::clean(&mut kernel(&lab.ctr), &Settings::default()).unwrap();
    assert_eq!(rep.findings.len(), 4, "{:#?}", rep.findings);
    assert!(
        rep.findings
            .iter()
            .all(|f| matches!(f, Finding::Rule { .. } | Finding::Route { .. }))
    );
    assert_eq!(ours_from(&lab.ctr), 0, "symroute's own from rules are gone");
    assert_same_dump(&before, &findings_of(&dump(&lab.ctr)), "after engine clean");
    symroute(apply_args(&ctr)).expect(0);
    symroute(["clean", "--netns", &ctr]).expect(0);
    assert_eq!(ours_from(&lab.ctr), 0);
    assert_same_dump(&before, &findings_of(&dump(&lab.ctr)), "after clean");
    let (rules, routes) = owned(&lab.ctr);
    assert_eq!(
        rules.len(),
        1,
        "only the iif rule keeps the tag: {rules:#?}"
    );
    assert!(rules[0].other_selectors);
    assert_eq!(routes.len(), 3, "{routes:#?}");
}
