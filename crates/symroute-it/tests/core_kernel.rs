//! symroute against the real kernel through the library: foreign rules and
//! routes (wg-quick, Tailscale, objects inside symroute's own band) survive
//! apply and clean untouched; a failure in the middle of an apply, provoked in
//! the real kernel, is rolled back completely; and what apply leaves in the
//! kernel reads back as exactly the plan. Needs root; everything happens in
//! anonymous namespaces the tests create.

use symroute_it::common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use symroute_core::diff::Op;
use symroute_core::engine::{self, ApplyOptions, EngineError};
use symroute_core::kernel::{Kernel, KernelError, RouteAnswer, RouteQuery};
use symroute_core::model::{Family, Route, RouteType, Scope, Snapshot};
use symroute_core::ownership::{Finding, Space};
use symroute_core::plan::{GatewayHint, PlanRequest};
use symroute_core::settings::Settings;
use symroute_linux::kernel::NetlinkKernel;
use symroute_testkit::fake::FakeKernel;
use symroute_testkit::lab::seed::{BANNER, CTR_FRONT_ADDR, SERVICE_PORT};
use symroute_testkit::lab::{Ns, SeedLab, SeedOptions};

fn seed(ipv6: bool) -> SeedLab {
    require_root();
    ok(SeedLab::build(SeedOptions { dnat: false, ipv6 }))
}

fn front() -> SocketAddr {
    (CTR_FRONT_ADDR, SERVICE_PORT).into()
}

/// Run `ip ARGS` inside `ns`.
fn ip_cmd(ns: &Ns, args: &str) {
    ok(ns.run_cmd("ip", args.split_whitespace()));
}

fn gateway(text: &str) -> GatewayHint {
    text.parse()
        .unwrap_or_else(|e| panic!("gateway {text}: {e}"))
}

fn options(gateways: &[&str]) -> ApplyOptions {
    ApplyOptions {
        settings: Settings::default(),
        request: PlanRequest {
            gateways: gateways.iter().map(|g| gateway(g)).collect(),
            ..PlanRequest::default()
        },
        ..ApplyOptions::default()
    }
}

/// Install `setup` (lines of `ip` arguments) in ctr, then apply and clean
/// with the real binary: every non-symroute object is the same before apply,
/// after apply and after clean, and the client gets through after apply.
/// Returns the apply report.
fn foreign_state_survives(lab: &SeedLab, setup: &[&str], what: &str) -> serde_json::Value {
    let bare = dump(&lab.ctr);
    for line in setup {
        ip_cmd(&lab.ctr, line);
    }
    let ctr = path_of(&lab.ctr);
    let before = dump_foreign(&lab.ctr);
    // The foreign objects are really there.
    let count = |kind: &str| setup.iter().filter(|l| l.contains(kind)).count();
    assert_eq!(
        (before.rules.len(), before.routes.len()),
        (
            bare.rules.len() + count("rule add"),
            bare.routes.len() + count("route add")
        ),
        "{what}: setup not in place: {before:#?}"
    );
    assert_blocked(&lab.client, front(), &format!("{what}, before apply"));

    let rep = apply_json(&ctr, &["eth1=172.18.0.1"]);
    assert!(len_of(&rep, "ops") > 0, "{rep}");
    assert_same_dump(&before, &dump_foreign(&lab.ctr), &format!("{what}: apply"));
    assert_connects(
        &lab.client,
        front(),
        BANNER,
        &format!("{what}, after apply"),
    );

    let out = symroute(["clean", "--netns", &ctr]);
    out.expect(0);
    assert_same_dump(&before, &dump_foreign(&lab.ctr), &format!("{what}: clean"));
    assert_same_dump(
        &before,
        &dump(&lab.ctr),
        &format!("{what}: clean (all objects)"),
    );
    assert_blocked(&lab.client, front(), &format!("{what}, after clean"));
    rep
}

#[test]
fn wg_quick_like_rules_and_table_survive_apply_and_clean() {
    let lab = seed(false);
    // wg-quick's full-tunnel setup, with eth0 standing in for wg0.
    foreign_state_survives(
        &lab,
        &[
            "route add default via 172.19.0.1 dev eth0 table 51820",
            "-4 rule add not fwmark 0xca6c lookup 51820 priority 32765",
            "-4 rule add lookup main suppress_prefixlength 0 priority 32764",
            "-6 rule add not fwmark 0xca6c lookup 51820 priority 32765",
            "-6 rule add lookup main suppress_prefixlength 0 priority 32764",
        ],
        "wg-quick",
    );
}

#[test]
fn tailscale_like_rules_and_table_52_survive_apply_and_clean() {
    let lab = seed(false);
    // Tailscale's rules and table 52, with eth0 standing in for tailscale0.
    foreign_state_survives(
        &lab,
        &[
            "-4 rule add fwmark 0x80000/0xff0000 lookup main priority 5210",
            "-4 rule add fwmark 0x80000/0xff0000 lookup default priority 5230",
            "-4 rule add fwmark 0x80000/0xff0000 unreachable priority 5250",
            "-4 rule add lookup 52 priority 5270",
            "route add 100.64.0.0/10 dev eth0 table 52",
            "route add 100.100.100.100/32 dev eth0 table 52",
            "route add throw 127.0.0.0/8 table 52",
        ],
        "tailscale",
    );
}

#[test]
fn foreign_objects_inside_the_band_are_left_alone_and_their_tables_skipped() {
    let lab = seed(false);
    let rep = foreign_state_survives(
        &lab,
        &[
            "route add 203.0.113.0/24 via 172.18.0.1 dev eth1 table 10000 proto static",
            // From an address on no interface: one from eth1's own address
            // would make eth1 "managed by another writer" (skipped).
            "rule add from 172.18.0.99 lookup 10000 priority 3000 proto static",
            // A rule alone marks a table as taken, too.
            "rule add fwmark 0x1 lookup 10001 priority 2000",
        ],
        "objects in symroute's band",
    );
    let t0 = plan_table(&rep["plan"], "eth0");
    let t1 = plan_table(&rep["plan"], "eth1");
    for t in [t0, t1] {
        assert!(
            (10002..=10999).contains(&t),
            "symroute took table {t}, used by someone else or outside the band: {rep}"
        );
    }
    assert_ne!(t0, t1);
    let (rules, routes) = plan_objects(&rep["plan"]);
    assert!(rules.iter().all(|r| r.protocol == TAG), "{rules:#?}");
    assert!(routes.iter().all(|r| r.protocol == TAG), "{routes:#?}");
}

/// The real kernel, sabotaged just before operation number `at`: `sabotage`
/// changes the namespace through the lab so that the kernel itself refuses
/// the next operation.
struct Sabotaged<'a> {
    inner: NetlinkKernel,
    at: usize,
    seen: usize,
    sabotage: Box<dyn FnMut() + 'a>,
    executed: Vec<Op>,
}

impl Kernel for Sabotaged<'_> {
    fn snapshot(&mut self) -> Result<Snapshot, KernelError> {
        self.inner.snapshot()
    }

    fn execute(&mut self, op: &Op) -> Result<(), KernelError> {
        if self.seen == self.at {
            (self.sabotage)();
        }
        self.seen += 1;
        self.executed.push(op.clone());
        self.inner.execute(op)
    }

    fn route_get(&mut self, q: &RouteQuery) -> Result<RouteAnswer, KernelError> {
        self.inner.route_get(q)
    }
}

/// Apply in a seed with foreign state, with the real kernel made to refuse
/// the operation `target` picks; check the rollback.
fn rollback_case(
    target: impl Fn(&Op) -> bool,
    sabotage: impl Fn(&SeedLab),
    repair: impl Fn(&SeedLab),
    expect_in_error: &[&str],
) {
    let lab = seed(false);
    for line in [
        "route add default via 172.19.0.1 dev eth0 table 51820",
        "-4 rule add not fwmark 0xca6c lookup 51820 priority 32765",
        // Through eth0: the sabotage of eth1 must not take foreign state
        // with it, so that the final comparison is about symroute alone.
        "route add 203.0.113.0/24 via 172.19.0.1 dev eth0 table 10000 proto static",
        // Not from eth1's own address (that would make eth1 "managed by
        // another writer").
        "rule add from 172.18.0.99 lookup 10000 priority 3000 proto static",
    ] {
        ip_cmd(&lab.ctr, line);
    }
    let before = dump(&lab.ctr);
    let opts = options(&["eth1=172.18.0.1"]);

    // Where to strike: the plan's operations, as a dry run sees them.
    let dry = engine::apply(
        &mut kernel(&lab.ctr),
        &ApplyOptions {
            dry_run: true,
            ..opts.clone()
        },
    )
    .unwrap_or_else(|e| panic!("dry run: {e}"));
    let at = dry
        .ops
        .iter()
        .position(&target)
        .unwrap_or_else(|| panic!("no such operation in the plan: {:#?}", dry.ops));
    assert!(
        at > 0,
        "the failing operation must not be the first: {:#?}",
        dry.ops
    );
    assert_same_dump(&before, &dump(&lab.ctr), "dry run");

    let mut k = Sabotaged {
        inner: kernel(&lab.ctr),
        at,
        seen: 0,
        sabotage: Box::new(|| sabotage(&lab)),
        executed: Vec::new(),
    };
    let err = engine::apply(&mut k, &opts).expect_err("apply must fail");
    assert_eq!(k.executed[at], dry.ops[at], "struck another operation");
    let text = err.to_string();
    match err {
        EngineError::Apply {
            failed,
            rolled_back,
            rollback_errors,
        } => {
            for needle in expect_in_error {
                assert!(
                    failed.what.contains(needle),
                    "the error must name the object ({needle}): {failed}"
                );
            }
            assert!(
                failed.errno().is_some(),
                "the kernel itself must have refused: {failed:?}"
            );
            assert!(rollback_errors.is_empty(), "{rollback_errors:#?}");
            assert_eq!(
                rolled_back,
                dry.ops[..at].iter().rev().cloned().collect::<Vec<_>>(),
                "every operation done before the failure is undone, newest first"
            );
            assert!(text.contains("rolled back"), "{text}");
        }
        other => panic!("expected EngineError::Apply, got {other:?}"),
    }
    let (rules, routes) = owned(&lab.ctr);
    assert!(
        rules.is_empty() && routes.is_empty(),
        "symroute objects left after rollback: {rules:#?} {routes:#?}"
    );

    // Put back what the sabotage took: then nothing at all has changed.
    repair(&lab);
    assert_same_dump(&before, &dump(&lab.ctr), "rollback");
}

/// Wait until `link` has its IPv6 link-local address back, past duplicate
/// address detection (the kernel re-creates it some time after a link comes
/// back up; its routes come with it).
fn wait_link_local(ns: &Ns, link: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snap = snapshot(ns);
        let back = snap.link_by_name(link).is_some_and(|l| {
            l.addrs.iter().any(|a| {
                matches!(a.addr(), IpAddr::V6(v6) if v6.is_unicast_link_local()) && !a.tentative
            })
        });
        if back {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{link} in {} got no usable link-local address back",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn apply_failure_midway_address_removed_rolls_back_everything() {
    rollback_case(
        // The connected route of eth1's table, whose source is eth1's address.
        |op| matches!(op, Op::AddRoute(r) if r.prefsrc == Some(CTR_FRONT_ADDR.into())),
        |lab| ok(lab.ctr.del_addr("eth1", net("172.18.0.2/16"))),
        |lab| ok(lab.ctr.add_addr("eth1", net("172.18.0.2/16"))),
        &["add route 172.18.0.0/16", "src 172.18.0.2"],
    );
}

#[test]
fn apply_failure_midway_link_down_rolls_back_everything() {
    rollback_case(
        // The first route through eth1.
        |op| matches!(op, Op::AddRoute(r) if r.is_default() && r.gateway == Some(ip("172.18.0.1"))),
        |lab| ok(lab.ctr.link_down("eth1")),
        |lab| {
            ok(lab.ctr.link_up("eth1"));
            wait_link_local(&lab.ctr, "eth1");
        },
        &["add route default via 172.18.0.1"],
    );
}

#[test]
fn apply_reads_back_exactly_the_plan() {
    let lab = seed(true);
    // eth1's IPv4 gateway comes from a main-table default route marked
    // onlink; its IPv6 gateway is link-local and given.
    ip_cmd(
        &lab.ctr,
        "route add default via 172.31.255.1 dev eth1 onlink metric 100",
    );
    let opts = options(&["eth1=fe80::1"]);
    let rep = engine::apply(&mut kernel(&lab.ctr), &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(!rep.ops.is_empty());
    assert!(rep.plan.routes.iter().any(|r| r.onlink), "{:#?}", rep.plan);
    assert!(
        rep.plan
            .routes
            .iter()
            .any(|r| r.family() == Family::V6 && r.gateway == Some(ip("fe80::1"))),
        "{:#?}",
        rep.plan
    );

    let (rules, routes) = owned(&lab.ctr);
    let mut want_rules = rep.plan.rules.clone();
    let mut want_routes = rep.plan.routes.clone();
    want_rules.sort();
    want_routes.sort();
    assert_eq!(rules, want_rules, "rules read back");
    assert_eq!(routes, want_routes, "routes read back");
    assert_eq!(
        rules.len(),
        4,
        "two addresses per interface, two interfaces"
    );
    assert_eq!(
        routes.len(),
        8,
        "per interface and family: default + connected"
    );

    // And so a second apply through the library has nothing to do.
    let again = engine::apply(&mut kernel(&lab.ctr), &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.ops, Vec::<Op>::new());
}

/// The fake kernel's route delete (symroute-testkit's `FakeKernel`, used by
/// every pure engine suite) against the kernel's: a delete whose metric is
/// 0 (sent, and read by the kernel as unset) takes the lowest-metric route that matches, whatever order
/// the routes were added in; sent again, it takes the next one.
#[test]
fn route_delete_without_a_metric_takes_the_lowest_metric_match_in_kernel_and_fake() {
    require_root();
    for order in [[7u32, 0], [0, 7]] {
        let ns = ok(Ns::new("srt-delmetric"));
        ip_cmd(&ns, "link add d0 type veth peer name d1");
        ip_cmd(&ns, "link set d1 up");
        ip_cmd(&ns, "link set d0 up");
        let mut k = NetlinkKernel::new(ns.netns().socket().expect("socket"));
        let snap = k.snapshot().expect("snapshot");
        let oif = snap.link_by_name("d0").expect("d0").index;
        let route = |metric| Route {
            table: 10001,
            dst: "0.0.0.0/0".parse().expect("net"),
            gateway: None,
            oif,
            prefsrc: None,
            scope: Scope::Link,
            kind: RouteType::UNICAST,
            metric,
            onlink: false,
            protocol: 115,
            multipath: Vec::new(),
        };
        let mut fake = FakeKernel::with_links(snap.links.clone());
        for m in order {
            k.execute(&Op::AddRoute(route(m)))
                .expect("add to the kernel");
            fake.execute(&Op::AddRoute(route(m)))
                .expect("add to the fake");
        }
        let metrics = |s: &Snapshot| -> Vec<u32> {
            s.routes
                .iter()
                .filter(|r| r.table == 10001)
                .map(|r| r.metric)
                .collect()
        };
        for want in [vec![7], vec![]] {
            k.execute(&Op::DelRoute(route(0)))
                .expect("delete in the kernel");
            fake.execute(&Op::DelRoute(route(0)))
                .expect("delete in the fake");
            assert_eq!(
                metrics(&k.snapshot().expect("snapshot")),
                want,
                "kernel, added {order:?}"
            );
            assert_eq!(metrics(&fake.state), want, "fake, added {order:?}");
        }
    }
}

/// A container gives its loopback hundreds of 127-byte altnames: its link
/// message outgrows what the kernel puts in a default link dump, which
/// then ended there silently (NLMSG_DONE, no error) and every interface
/// after it looked gone, so apply "cleaned up" all of symroute's objects
/// and exited 0. The snapshot must list every interface, and a second
/// apply change nothing.
#[test]
fn a_link_with_hundreds_of_altnames_hides_no_interface() {
    let lab = seed(false);
    let opts = options(&[]);
    let first = engine::apply(&mut kernel(&lab.ctr), &opts).unwrap_or_else(|e| panic!("{e}"));
    let (rules, routes) = owned(&lab.ctr);
    assert_eq!(rules.len(), 2, "{:#?}", first.plan);

    let batch = common::scratch_dir("altnames").join("batch");
    let lines: String = (0..600)
        .map(|i| {
            format!(
                "link property add dev lo altname {i:04}{}\n",
                "a".repeat(123)
            )
        })
        .collect();
    std::fs::write(&batch, lines).expect("write the batch");
    // -force: go on past the kernel's refusal once the list is full.
    let _ = lab
        .ctr
        .command("ip")
        .args(["-force", "-batch"])
        .arg(&batch)
        .output()
        .expect("run ip -batch");
    let shown = ok(lab.ctr.run_cmd("ip", ["-o", "link", "show", "dev", "lo"]));
    assert!(
        shown.matches("altname").count() >= 400,
        "lo has {} altnames",
        shown.matches("altname").count()
    );

    let snap = kernel(&lab.ctr)
        .snapshot()
        .unwrap_or_else(|e| panic!("{e}"));
    for name in ["lo", "eth0", "eth1"] {
        assert!(
            snap.link_by_name(name).is_some(),
            "{name} missing from the snapshot"
        );
    }
    let again = engine::apply(&mut kernel(&lab.ctr), &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.ops, Vec::<Op>::new());
    assert_eq!(owned(&lab.ctr), (rules, routes));
}

/// A route delete names a metric of 0, which the kernel reads as "any", and
/// compares a multipath route by its first hop: when symroute's default
/// route is gone by the time its delete is sent (the container removed it
/// after symroute read the namespace), the delete would take a tagged
/// multipath route that symroute reports as "left alone". The engine does
/// not send such a delete; it reports it.
#[test]
fn a_route_delete_that_could_take_a_left_alone_multipath_route_is_not_sent() {
    let lab = seed(false);
    engine::apply(&mut kernel(&lab.ctr), &options(&[])).unwrap_or_else(|e| panic!("{e}"));
    let (_, routes) = owned(&lab.ctr);
    let ours = routes
        .iter()
        .find(|r| r.gateway.is_some())
        .unwrap_or_else(|| panic!("a default route of ours: {routes:#?}"));
    let other_oif = routes
        .iter()
        .map(|r| r.oif)
        .find(|&o| o != ours.oif)
        .expect("a second interface");
    let name = |i: u32| {
        kernel(&lab.ctr)
            .snapshot()
            .expect("snapshot")
            .link(i)
            .expect("link")
            .name
            .clone()
    };
    let (dev, dev2) = (name(ours.oif), name(other_oif));
    let gw = ours.gateway.expect("gw");
    // Tagged, in our table, first hop the same as our route's: a finding.
    ip_cmd(
        &lab.ctr,
        &format!(
            "route add default table {} proto 115 metric 10 nexthop via {gw} dev {dev} nexthop dev {dev2}",
            ours.table
        ),
    );
    let multipath = |ns: &Ns| {
        kernel(ns)
            .snapshot()
            .expect("snapshot")
            .routes
            .into_iter()
            .filter(|r| r.table == ours.table && !r.multipath.is_empty())
            .count()
    };
    assert_eq!(multipath(&lab.ctr), 1);

    let mut k = kernel(&lab.ctr);
    let before = k.snapshot().expect("snapshot");
    // The container removes symroute's default after that read.
    ip_cmd(
        &lab.ctr,
        &format!(
            "route del default via {gw} dev {dev} table {} proto 115 metric 0",
            ours.table
        ),
    );
    assert_eq!(
        multipath(&lab.ctr),
        1,
        "ip's own delete took our route, not the multipath one"
    );
    let rep = engine::clean_in(
        &mut k,
        before,
        &Space::of(&Settings::default()),
        engine::every_object,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        multipath(&lab.ctr),
        1,
        "the left-alone multipath route was deleted"
    );
    assert!(
        rep.findings
            .iter()
            .any(|f| matches!(f, Finding::AmbiguousRouteDelete { ours: o, .. } if o == ours)),
        "{:#?}",
        rep.findings
    );
}
