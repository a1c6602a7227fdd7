//! Docker Engine 28.5 (dockerd from the Debian sid root, `scripts/lab-sid-root`) in a lab
//! namespace (tests/support/common/engines.rs), with lab recipe C: `symroute daemon` and
//! `symroute diagnose --container` run inside the engine's namespace against its socket,
//! exactly as on a real host. The docker CLI is the 28.2 client (gw-priority).
//!
//! Needs root, the sid root (built or restored on first use), busybox-static and
//! /usr/local/bin/docker.

use symroute_it::common;
use symroute_it::common::engines;

use std::net::Ipv4Addr;

use common::{assert_blocked, assert_connects};
use engines::{
    APP, APP_GATEWAY, Daemon, Engine, LAN, REMOTE, ROUTER_LAN, RecipeC, route_get, service,
    symroute_in, wait_rules,
};

const WEB_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const WEB2_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 51);
const WEB3_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 52);

fn app_ip(c: &RecipeC, name: &str) -> Ipv4Addr {
    c.lab.inspect(name)["NetworkSettings"]["Networks"][APP]["IPAddress"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{name} has no address on {APP}"))
}

fn diagnose(c: &RecipeC, name: &str) -> common::Out {
    symroute_in(
        &c.lab,
        &[
            "diagnose",
            "--container",
            name,
            "--docker-host",
            &c.lab.host(),
        ],
    )
}

#[test]
fn docker28_daemon_makes_recipe_c_reachable_and_follows_start_connect_disconnect() {
    let t0 = std::time::Instant::now();
    let mut c = RecipeC::build(Engine::Docker28);
    eprintln!(
        "docker-28: lab built (engine {:?}) in {:?}",
        c.lab.start_time,
        t0.elapsed()
    );
    c.run_both("web", WEB_LAN, "hello from web", &[]);
    let web_app = app_ip(&c, "web");
    let web_ns = c.lab.netns_path("web");
    // app_default < lan: the default goes to the bridge; the LAN address answers remote
    // through it, and the reply is lost.
    let before = route_get(&web_ns, REMOTE, WEB_LAN);
    assert!(before.contains(&format!("via {APP_GATEWAY}")), "{before}");
    assert_connects(
        &c.router,
        service(WEB_LAN),
        "hello from web",
        "router, on-link",
    );
    assert_blocked(&c.remote, service(WEB_LAN), "remote before the daemon");
    let diag = diagnose(&c, "web");
    eprintln!("diagnose before:\n{}{}", diag.stdout, diag.stderr);
    diag.expect(1);

    let d = Daemon::start(&c.lab, &[]);
    wait_rules(&c.lab, "web", &[WEB_LAN, web_app]);
    assert_connects(
        &c.remote,
        service(WEB_LAN),
        "hello from web",
        "remote after the daemon",
    );
    let after = route_get(&web_ns, REMOTE, WEB_LAN);
    assert!(after.contains(&format!("via {ROUTER_LAN}")), "{after}");
    let diag = diagnose(&c, "web");
    eprintln!("diagnose after:\n{}{}", diag.stdout, diag.stderr);
    diag.expect(0);

    // Started after the daemon.
    c.run_both("web2", WEB2_LAN, "hello from web2", &[]);
    let web2_app = app_ip(&c, "web2");
    wait_rules(&c.lab, "web2", &[WEB2_LAN, web2_app]);
    assert_connects(
        &c.remote,
        service(WEB2_LAN),
        "hello from web2",
        "web2 started later",
    );

    // disconnect / connect re-plan.
    c.lab.cli_ok(["network", "disconnect", LAN, "web2"]);
    // single-homed now: symroute keeps nothing of its own there
    wait_rules(&c.lab, "web2", &[]);
    c.lab.cli_ok([
        "network",
        "connect",
        "--ip",
        &WEB2_LAN.to_string(),
        LAN,
        "web2",
    ]);
    wait_rules(&c.lab, "web2", &[WEB2_LAN, web2_app]);
    c.flush_router_neigh(WEB2_LAN);
    assert_connects(
        &c.remote,
        service(WEB2_LAN),
        "hello from web2",
        "web2 reconnected",
    );

    // restart: new MACs, new namespace; converged again.
    c.lab.cli_ok(["restart", "-t", "1", "web2"]);
    c.lab.wait_listening("web2");
    wait_rules(&c.lab, "web2", &[WEB2_LAN, app_ip(&c, "web2")]);
    c.flush_router_neigh(WEB2_LAN);
    assert_connects(
        &c.remote,
        service(WEB2_LAN),
        "hello from web2",
        "web2 restarted",
    );
    let problems = d.problems();
    assert!(
        problems.is_empty(),
        "daemon warnings/errors:\n{}",
        problems.join("\n")
    );
    eprintln!("docker-28 suite step total {:?}", t0.elapsed());
}

#[test]
fn docker28_gw_priority_moves_the_default_and_symroute_keeps_both_addresses_symmetric() {
    let mut c = RecipeC::build(Engine::Docker28);
    // gw-priority=10 on lan (the 28.2 client's syntax).
    let lan_opt = format!("name={LAN},ip={WEB3_LAN},gw-priority=10");
    let app_opt = format!("name={APP}");
    c.lab.run_server(
        "web3",
        "hello from web3",
        &["--network", &app_opt, "--network", &lan_opt],
    );
    let v = c.lab.inspect("web3");
    assert_eq!(
        v["NetworkSettings"]["Networks"][LAN]["GwPriority"], 10,
        "{}",
        v["NetworkSettings"]
    );
    let app = app_ip(&c, "web3");
    let ns = c.lab.netns_path("web3");
    // The default is now the LAN's: the LAN address is symmetric, the bridge one is not.
    let lan_path = route_get(&ns, REMOTE, WEB3_LAN);
    assert!(
        lan_path.contains(&format!("via {ROUTER_LAN}")),
        "{lan_path}"
    );
    let app_path = route_get(&ns, REMOTE, app);
    assert!(
        app_path.contains(&format!("via {ROUTER_LAN}")),
        "bridge address leaves by the LAN before: {app_path}"
    );
    assert_connects(
        &c.remote,
        service(WEB3_LAN),
        "hello from web3",
        "gw-priority, before",
    );
    let diag = diagnose(&c, "web3");
    eprintln!(
        "diagnose (gw-priority) before:\n{}{}",
        diag.stdout, diag.stderr
    );
    diag.expect(1);
    let before_text = diag.stdout.clone();

    let _d = Daemon::start(&c.lab, &[]);
    wait_rules(&c.lab, "web3", &[WEB3_LAN, app]);
    let lan_path = route_get(&ns, REMOTE, WEB3_LAN);
    assert!(
        lan_path.contains(&format!("via {ROUTER_LAN}")),
        "{lan_path}"
    );
    let app_path = route_get(&ns, REMOTE, app);
    assert!(
        app_path.contains(&format!("via {APP_GATEWAY}")),
        "bridge address after: {app_path}"
    );
    assert_connects(
        &c.remote,
        service(WEB3_LAN),
        "hello from web3",
        "gw-priority, after",
    );
    let diag = diagnose(&c, "web3");
    eprintln!(
        "diagnose (gw-priority) after:\n{}{}",
        diag.stdout, diag.stderr
    );
    diag.expect(0);
    assert!(
        before_text.contains(
            "default route (IPv4): lan, because gw-priority: lan has 10 > app_default's 0"
        ),
        "diagnose does not explain the default route by gw-priority:\n{before_text}"
    );
}

#[test]
fn docker28_lab_cleans_up_after_a_panic() {
    engines::assert_panic_cleans_up(Engine::Docker28);
}

/// Both networks dual-stack: Docker 28 puts both families' defaults on app_default (name
/// order), so remote reaches neither LAN address; the daemon fixes both families.
#[test]
fn docker28_ipv6_default_and_both_families_fixed_by_the_daemon() {
    use std::net::{IpAddr, SocketAddr};
    let mut c = RecipeC::build_with(Engine::Docker28, true, true);
    let lan6 = "2001:db8:2::54";
    let lan_opt = format!("name={LAN},ip=192.0.2.54,ip6={lan6}");
    let app_opt = format!("name={APP}");
    c.lab.run_server(
        "web6",
        "hello from web6",
        &["--network", &app_opt, "--network", &lan_opt],
    );
    let v = c.lab.inspect("web6");
    let app6 = v["NetworkSettings"]["Networks"][APP]["GlobalIPv6Address"]
        .as_str()
        .unwrap_or_else(|| panic!("no IPv6 on {APP}: {}", v["NetworkSettings"]))
        .to_string();
    let ns = c.lab.netns_path("web6");
    let routes6 = engines::ip_show_family(&ns, "-6", "route");
    assert!(
        routes6.contains(&format!("default via {} dev", engines::APP6_GATEWAY)),
        "IPv6 default goes to {APP} too:\n{routes6}"
    );
    let target6 = SocketAddr::new(lan6.parse::<IpAddr>().expect("v6"), 80);
    assert_blocked(
        &c.remote,
        service(Ipv4Addr::new(192, 0, 2, 54)),
        "v4 before",
    );
    assert_blocked(&c.remote, target6, "v6 before");
    let diag = diagnose(&c, "web6");
    eprintln!("diagnose (IPv6) before:\n{}{}", diag.stdout, diag.stderr);
    diag.expect(1);

    let _d = Daemon::start(&c.lab, &[]);
    engines::wait_rules_from(
        &c.lab,
        "web6",
        vec![
            "192.0.2.54".into(),
            app_ip(&c, "web6").to_string(),
            lan6.into(),
            app6.clone(),
        ],
    );
    assert_connects(
        &c.remote,
        service(Ipv4Addr::new(192, 0, 2, 54)),
        "hello from web6",
        "v4 after",
    );
    assert_connects(&c.remote, target6, "hello from web6", "v6 after");
    let diag = diagnose(&c, "web6");
    eprintln!("diagnose (IPv6) after:\n{}{}", diag.stdout, diag.stderr);
    diag.expect(0);
    assert!(
        diag.stdout
            .contains("default route (IPv6): app_default, because network names sort"),
        "{}",
        diag.stdout
    );
}

/// Only lan is dual-stack: Docker 28 prefers a dual-stack network for the default over one
/// that sorts first by name, so both defaults go to lan and the LAN address answers remote
/// without symroute; the bridge address is the asymmetric one, which the daemon fixes.
#[test]
fn docker28_dual_stack_network_wins_the_default_over_name_order() {
    let mut c = RecipeC::build_with(Engine::Docker28, true, false);
    let lan_opt = format!("name={LAN},ip=192.0.2.55,ip6=2001:db8:2::55");
    let app_opt = format!("name={APP}");
    c.lab.run_server(
        "web7",
        "hello from web7",
        &["--network", &app_opt, "--network", &lan_opt],
    );
    let ns = c.lab.netns_path("web7");
    let app = app_ip(&c, "web7");
    let v4 = route_get(&ns, REMOTE, Ipv4Addr::new(192, 0, 2, 55));
    assert!(
        v4.contains(&format!("via {ROUTER_LAN}")),
        "IPv4 default on the dual-stack lan: {v4}"
    );
    assert_connects(
        &c.remote,
        service(Ipv4Addr::new(192, 0, 2, 55)),
        "hello from web7",
        "before",
    );
    let diag = diagnose(&c, "web7");
    eprintln!(
        "diagnose (dual-stack) before:\n{}{}",
        diag.stdout, diag.stderr
    );
    let _d = Daemon::start(&c.lab, &[]);
    engines::wait_rules_from(
        &c.lab,
        "web7",
        vec![
            "192.0.2.55".into(),
            app.to_string(),
            "2001:db8:2::55".into(),
        ],
    );
    let from_app = route_get(&ns, REMOTE, app);
    assert!(
        from_app.contains(&format!("via {APP_GATEWAY}")),
        "bridge address after: {from_app}"
    );
    diag.expect(1);
    assert!(
        diag.stdout.contains(
            "default route (IPv4): lan, because lan is dual-stack and app_default is single-stack"
        ),
        "diagnose should name the dual-stack rule for the default:\n{}",
        diag.stdout
    );
}
