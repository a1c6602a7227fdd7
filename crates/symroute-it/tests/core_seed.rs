//! The seed scenario end to end with the real binary: a real TCP connection
//! from the client fails before `symroute apply`, works after it, fails again
//! after `symroute clean` (DNAT, routed and IPv6 variants), and `symroute
//! diagnose` tells the two states apart. Needs root; everything happens in
//! anonymous namespaces the tests create.

use symroute_it::common;

use std::net::SocketAddr;

use common::*;
use symroute_core::model::{Family, RouteType};
use symroute_testkit::lab::seed::{
    BANNER, CTR_BACK_ADDR, CTR_BACK_ADDR6, CTR_FRONT_ADDR, CTR_FRONT_ADDR6, SERVICE_PORT,
};
use symroute_testkit::lab::{self, SeedLab, SeedOptions};

fn build(dnat: bool, ipv6: bool) -> SeedLab {
    require_root();
    if dnat {
        assert!(
            lab::iptables_available(),
            "iptables is not usable (`iptables -V` failed): install it (apt-get install -y iptables)"
        );
    }
    if ipv6 {
        assert!(
            lab::ip6tables_available(),
            "ip6tables is not usable (`ip6tables -V` failed): install it (apt-get install -y iptables)"
        );
    }
    ok(SeedLab::build(SeedOptions { dnat, ipv6 }))
}

/// Fails before apply, works after, fails after clean; clean leaves the
/// namespace exactly as before apply.
fn apply_fixes_and_clean_undoes(lab: &SeedLab, variant: &str) {
    let ctr = path_of(&lab.ctr);
    let target = lab.client_target();
    let back: SocketAddr = (CTR_BACK_ADDR, SERVICE_PORT).into();

    assert_blocked(&lab.client, target, &format!("{variant}, before apply"));
    // The default-route tier answers all along: the failure is the reply path.
    assert_connects(&lab.client, back, BANNER, &format!("{variant}, back tier"));
    let before = dump(&lab.ctr);

    let out = symroute(["apply", "--netns", &ctr, "--gateway", "eth1=172.18.0.1"]);
    out.expect(0);
    assert!(
        out.stdout.contains("applied 6 change(s)"),
        "apply output: {}",
        out.stdout
    );
    assert_connects(
        &lab.client,
        target,
        BANNER,
        &format!("{variant}, after apply"),
    );
    assert_connects(
        &lab.client,
        back,
        BANNER,
        &format!("{variant}, back tier after apply"),
    );

    let out = symroute(["clean", "--netns", &ctr]);
    out.expect(0);
    assert!(
        out.stdout.contains("removed 6 object(s)"),
        "clean output: {}",
        out.stdout
    );
    assert_blocked(&lab.client, target, &format!("{variant}, after clean"));
    assert_same_dump(
        &before,
        &dump(&lab.ctr),
        &format!("{variant}: clean after apply"),
    );
}

#[test]
fn seed_dnat_strict_rpf_tcp_fails_before_apply_works_after_fails_after_clean() {
    let lab = build(true, false);
    assert_eq!(lab.client_target().port(), 5000, "DNAT variant expected");
    apply_fixes_and_clean_undoes(&lab, "seed with DNAT");
}

#[test]
fn seed_routed_tcp_fails_before_apply_works_after_fails_after_clean() {
    let lab = build(false, false);
    assert_eq!(
        lab.client_target(),
        SocketAddr::from((CTR_FRONT_ADDR, SERVICE_PORT))
    );
    apply_fixes_and_clean_undoes(&lab, "routed seed");
}

#[test]
fn seed_ipv6_fe80_gateway_tcp_fails_before_apply_works_after_fails_after_clean() {
    let lab = build(false, true);
    assert!(
        lab.ipv6_rpfilter,
        "dhost must drop asymmetric IPv6 replies (ip6tables rpfilter rule missing)"
    );
    let ctr = path_of(&lab.ctr);
    let target6 = lab.client_target6().expect("built with IPv6");
    assert_eq!(target6, SocketAddr::from((CTR_FRONT_ADDR6, SERVICE_PORT)));
    let back6: SocketAddr = (CTR_BACK_ADDR6, SERVICE_PORT).into();

    assert_blocked(&lab.client, target6, "IPv6 before apply");
    assert_connects(&lab.client, back6, BANNER, "IPv6 back tier");
    let before = dump(&lab.ctr);

    // The IPv6 gateway of eth1 is link-local: the route needs `dev eth1`.
    let rep = apply_json(&ctr, &["eth1=172.18.0.1", "eth1=fe80::1"]);
    let eth1_table = plan_table(&rep["plan"], "eth1");
    let eth1_index = ok(lab.ctr.link_index("eth1"));
    let (rules, routes) = owned(&lab.ctr);
    assert!(
        routes.iter().any(|r| r.table == eth1_table
            && r.family() == Family::V6
            && r.is_default()
            && r.gateway == Some(ip("fe80::1"))
            && r.oif == eth1_index
            && r.kind == RouteType::UNICAST),
        "no `default via fe80::1 dev eth1 table {eth1_table}` read back: {routes:#?}"
    );
    assert!(
        rules.iter().any(|r| r.table == eth1_table
            && r.src == Some(net("2001:db8:18::2/128"))
            && r.priority == 3000),
        "no `from 2001:db8:18::2 lookup {eth1_table}` rule: {rules:#?}"
    );

    assert_connects(&lab.client, target6, BANNER, "IPv6 after apply");
    assert_connects(&lab.client, back6, BANNER, "IPv6 back tier after apply");
    assert_connects(&lab.client, lab.client_target(), BANNER, "IPv4 after apply");

    symroute(["clean", "--netns", &ctr]).expect(0);
    assert_blocked(&lab.client, target6, "IPv6 after clean");
    assert_same_dump(&before, &dump(&lab.ctr), "IPv6 seed: clean after apply");
}

#[test]
fn diagnose_exits_1_asymmetric_before_apply_0_after_with_json_verdicts() {
    let lab = build(false, false);
    let ctr = path_of(&lab.ctr);

    // Before: human output and exit 1.
    let out = symroute(["diagnose", "--netns", &ctr]);
    out.expect(1);
    assert!(out.stdout.contains("ASYMMETRIC"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "fix: symroute apply --netns {ctr} --gateway eth1=GATEWAY"
        )),
        "{}",
        out.stdout
    );

    // Before: JSON with one verdict per address.
    let out = symroute(["diagnose", "--netns", &ctr, "--json"]);
    out.expect(1);
    let d = out.json();
    assert_eq!(d["symmetric"], false, "{d}");
    let verdict = |d: &serde_json::Value, addr: &str| -> (String, String) {
        let a = d["addresses"]
            .as_array()
            .expect("addresses array")
            .iter()
            .find(|a| a["address"] == addr)
            .unwrap_or_else(|| panic!("no verdict for {addr}: {d}"));
        (
            a["verdict"].as_str().expect("verdict string").to_string(),
            a["reply_interface"].as_str().unwrap_or("-").to_string(),
        )
    };
    assert_eq!(len_of(&d, "addresses"), 2, "{d}");
    assert_eq!(
        verdict(&d, &CTR_FRONT_ADDR.to_string()),
        ("asymmetric".to_string(), "eth0".to_string())
    );
    assert_eq!(
        verdict(&d, &CTR_BACK_ADDR.to_string()),
        ("symmetric".to_string(), "eth0".to_string())
    );

    symroute(["apply", "--netns", &ctr, "--gateway", "eth1=172.18.0.1"]).expect(0);

    let out = symroute(["diagnose", "--netns", &ctr]);
    out.expect(0);
    assert!(!out.stdout.contains("ASYMMETRIC"), "{}", out.stdout);
    assert!(out.stdout.contains("verdict: symmetric"), "{}", out.stdout);
    let out = symroute(["diagnose", "--netns", &ctr, "--json"]);
    out.expect(0);
    let d = out.json();
    assert_eq!(d["symmetric"], true, "{d}");
    assert!(d["fix"].is_null(), "{d}");
    assert_eq!(
        verdict(&d, &CTR_FRONT_ADDR.to_string()),
        ("symmetric".to_string(), "eth1".to_string())
    );
    assert_eq!(
        verdict(&d, &CTR_BACK_ADDR.to_string()),
        ("symmetric".to_string(), "eth0".to_string())
    );
    // And the kernel agrees: the connection works.
    assert_connects(&lab.client, lab.client_target(), BANNER, "after apply");
}

#[test]
fn diagnose_exits_2_on_a_bad_target() {
    for (target, expect) in [
        (
            "/nonexistent/symroute-test/netns",
            "network namespace /nonexistent/symroute-test/netns",
        ),
        ("/etc/hostname", "/etc/hostname is not a network namespace"),
        (
            "/proc/self/ns/uts",
            "/proc/self/ns/uts is not a network namespace",
        ),
    ] {
        for json in [false, true] {
            let mut args = vec!["diagnose", "--netns", target];
            if json {
                args.push("--json");
            }
            let out = symroute(&args);
            out.expect(2);
            if json {
                // --json errors are JSON on stdout: {"error": ..., "code": 2}.
                let v: serde_json::Value = serde_json::from_str(&out.stdout)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout));
                assert_eq!(v["code"], 2, "{}", out.stdout);
                assert!(
                    v["error"].as_str().is_some_and(|e| e.contains(expect)),
                    "{}",
                    out.stdout
                );
            } else {
                assert!(out.stderr.contains(expect), "{}", out.stderr);
                assert!(out.stdout.is_empty(), "{}", out.stdout);
            }
        }
    }
}
