//! Podman 4.3 (the host's, netavark 1.4) and Podman 5.8 (the Debian sid root's, netavark
//! 1.17) in lab namespaces (tests/support/common/engines.rs), each serving the Engine-compatible
//! API (`podman system service --time 0 unix://…`), with lab recipe C: a container on a
//! macvlan LAN network and a bridge network. `symroute daemon` and `diagnose --container`
//! run inside the engine's namespace against that socket.
//!
//! netavark gives both networks an equal-metric default (metric 100); the kernel picks
//! the one whose gateway has a live neighbour entry. Each test first makes the container
//! send through its bridge (a TCP connect to the bridge gateway's port 9), so the bridge's
//! default is the one in use and the LAN address is deterministically unreachable from
//! remote before the daemon.
//!
//! The tests of one binary run one at a time (ENGINE_SLOT); Podman 4.3's host-wide
//! writes (/run/containers, /var/lib/containers) stay in the lab's own mount namespace.

use symroute_it::common;
use symroute_it::common::engines;

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;

use common::{assert_blocked, assert_connects};
use engines::{
    APP, APP_GATEWAY, Daemon, Engine, LAN, REMOTE, RecipeC, route_get, service, symroute_in,
    wait_rules,
};

const WEB_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 40);
const WEB2_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 41);

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

/// Build recipe C on `engine` and run web on both networks, its bridge default in use:
/// remote cannot reach its LAN address.
fn web_unreachable(engine: Engine) -> RecipeC {
    let t0 = std::time::Instant::now();
    let mut c = RecipeC::build(engine);
    eprintln!(
        "{}: lab built (engine {:?}) in {:?}",
        engine.name(),
        c.lab.start_time,
        t0.elapsed()
    );
    c.run_both("web", WEB_LAN, "hello from web", &[]);
    let ns = c.lab.netns_path("web");
    let routes = engines::ip_show(&ns, "route");
    eprintln!("{}: web's routes:\n{routes}", engine.name());
    let first = routes
        .lines()
        .find(|l| l.starts_with("default "))
        .unwrap_or_default();
    let path = route_get(&ns, REMOTE, WEB_LAN);
    eprintln!(
        "{}: first default {first:?}; web's reply path with no neighbour entries: {path}",
        engine.name()
    );
    assert_connects(
        &c.router,
        service(WEB_LAN),
        "hello from web",
        "router, on-link",
    );
    engines::prefer_bridge_default(&ns);
    let path = route_get(&ns, REMOTE, WEB_LAN);
    assert!(
        path.contains(&format!("via {APP_GATEWAY}")),
        "{}: {path}\nneighbours:\n{}\nroutes:\n{}",
        engine.name(),
        engines::ip_show(&ns, "neigh"),
        engines::ip_show(&ns, "route")
    );
    assert_blocked(&c.remote, service(WEB_LAN), "remote before the daemon");
    c
}

fn converges_and_later_start(engine: Engine) {
    let mut c = web_unreachable(engine);
    let diag = diagnose(&c, "web");
    eprintln!(
        "{} diagnose before ({}):\n{}{}",
        engine.name(),
        diag.code,
        diag.stdout,
        diag.stderr
    );
    let web_app = app_ip(&c, "web");
    let d = Daemon::start(&c.lab, &[]);
    wait_rules(&c.lab, "web", &[WEB_LAN, web_app]);
    assert_connects(
        &c.remote,
        service(WEB_LAN),
        "hello from web",
        "remote after the daemon",
    );
    let diag_after = diagnose(&c, "web");
    eprintln!(
        "{} diagnose after ({}):\n{}{}",
        engine.name(),
        diag_after.code,
        diag_after.stdout,
        diag_after.stderr
    );

    c.run_both("web2", WEB2_LAN, "hello from web2", &[]);
    let web2_app = app_ip(&c, "web2");
    wait_rules(&c.lab, "web2", &[WEB2_LAN, web2_app]);
    engines::prefer_bridge_default(&c.lab.netns_path("web2"));
    assert_connects(
        &c.remote,
        service(WEB2_LAN),
        "hello from web2",
        "web2 started later",
    );
    let problems = d.problems();
    assert!(
        problems.is_empty(),
        "daemon warnings/errors:\n{}",
        problems.join("\n")
    );
    diag.expect(1);
    diag_after.expect(0);
}

fn disconnect_and_connect(engine: Engine) {
    let c = web_unreachable(engine);
    let web_app = app_ip(&c, "web");
    let d = Daemon::start(&c.lab, &[]);
    wait_rules(&c.lab, "web", &[WEB_LAN, web_app]);
    c.lab.cli_ok(["network", "disconnect", LAN, "web"]);
    // single-homed: symroute keeps nothing of its own there
    wait_rules(&c.lab, "web", &[]);
    c.lab.cli_ok([
        "network",
        "connect",
        "--ip",
        &WEB_LAN.to_string(),
        LAN,
        "web",
    ]);
    wait_rules(&c.lab, "web", &[WEB_LAN, web_app]);
    c.flush_router_neigh(WEB_LAN);
    engines::prefer_bridge_default(&c.lab.netns_path("web"));
    assert_connects(
        &c.remote,
        service(WEB_LAN),
        "hello from web",
        "web reconnected",
    );
    eprintln!("{}: the daemon's log:\n{}", engine.name(), d.log_tail(30));
}

fn restart(engine: Engine) {
    let c = web_unreachable(engine);
    let _d = Daemon::start(&c.lab, &[]);
    wait_rules(&c.lab, "web", &[WEB_LAN, app_ip(&c, "web")]);
    let mac = c.lab.mac("web", LAN);
    c.lab.cli_ok(["restart", "-t", "1", "web"]);
    c.lab.wait_listening("web");
    assert_ne!(
        mac,
        c.lab.mac("web", LAN),
        "Podman gives a new MAC on restart"
    );
    wait_rules(&c.lab, "web", &[WEB_LAN, app_ip(&c, "web")]);
    c.flush_router_neigh(WEB_LAN);
    engines::prefer_bridge_default(&c.lab.netns_path("web"));
    assert_connects(
        &c.remote,
        service(WEB_LAN),
        "hello from web",
        "web restarted",
    );
}

fn service_restart(engine: Engine) {
    let mut c = web_unreachable(engine);
    let d = Daemon::start(&c.lab, &[]);
    wait_rules(&c.lab, "web", &[WEB_LAN, app_ip(&c, "web")]);
    let connected = d.logged("connected to Docker").len();
    c.lab.restart_service();
    engines::wait_for(
        engines::CONVERGE,
        "the daemon reconnects to the new service",
        || d.logged("connected to Docker").len() > connected,
    );
    // the container kept running through it, and a new one is followed
    assert_connects(
        &c.remote,
        service(WEB_LAN),
        "hello from web",
        "web after the service restart",
    );
    c.run_both("web2", WEB2_LAN, "hello from web2", &[]);
    wait_rules(&c.lab, "web2", &[WEB2_LAN, app_ip(&c, "web2")]);
    engines::prefer_bridge_default(&c.lab.netns_path("web2"));
    assert_connects(
        &c.remote,
        service(WEB2_LAN),
        "hello from web2",
        "web2 after the service restart",
    );
}

/// Start h0 and wait for the daemon to watch the engine's namespace folder (Podman 5.8
/// makes its /run/netns with its first container: the daemon watches it from that
/// container's start event on); the log line that says so.
fn watching_after_h0(c: &mut RecipeC, d: &Daemon) -> serde_json::Value {
    let h0 = Ipv4Addr::new(192, 0, 2, 59);
    c.run_both("h0", h0, "hello from h0", &[]);
    wait_rules(&c.lab, "h0", &[h0, app_ip(c, "h0")]);
    d.wait_logged("watching the engine's namespace folder for starts")
}

/// Podman's events come 0-250 ms late (its file backend is polled): the daemon watches the
/// service's namespace folder and converges a start when it ends. After a first container
/// (Podman 5.8 makes the folder with it), of five starts at least
/// one is converged before its `start` event reaches the daemon (without the watch: none
/// ever is; with it, an event wins the race only when Podman's poll falls in the few ms
/// between the start's end and the list's answer).
fn starts_are_seen_from_the_namespace_folder(engine: Engine) {
    let mut c = RecipeC::build(engine);
    let d = Daemon::start(&c.lab, &[]);
    let watching = watching_after_h0(&mut c, &d);
    let folder = watching["folder"]
        .as_str()
        .or_else(|| watching["fields"]["folder"].as_str())
        .unwrap_or_default()
        .to_string();
    // /proc/self/fd/N/root/run/netns, N an open /proc/<service pid>.
    let fd = folder
        .strip_prefix("/proc/self/fd/")
        .and_then(|r| r.strip_suffix("/root/run/netns"))
        .unwrap_or_else(|| panic!("the service's /run/netns through its root: {watching}"));
    let held = std::fs::read_link(format!("/proc/{}/fd/{fd}", d.pid))
        .unwrap_or_else(|e| panic!("the daemon's fd {fd}: {e}"));
    assert_eq!(
        held,
        std::path::PathBuf::from(format!("/proc/{}", c.lab.service_pid())),
        "the daemon holds the service's /proc folder"
    );
    let mut ids = Vec::new();
    for (i, name) in ["h1", "h2", "h3", "h4", "h5"].into_iter().enumerate() {
        let lan = Ipv4Addr::new(192, 0, 2, 60 + u8::try_from(i).unwrap_or(0));
        let id = c.run_both(name, lan, &format!("hello from {name}"), &[]);
        let id = id.trim().to_string();
        wait_rules(&c.lab, name, &[lan, app_ip(&c, name)]);
        ids.push((name, id));
    }
    let field = |l: &serde_json::Value, k: &str| -> String {
        l[k].as_str()
            .or_else(|| l["fields"][k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    // The rules can be in before the engine delivers the start event: wait for the events.
    engines::wait_for(
        engines::CONVERGE,
        "every start event reached the daemon",
        || {
            let lines = d.lines();
            ids.iter().all(|(_, id)| {
                lines.iter().any(|l| {
                    field(l, "message") == "event received"
                        && field(l, "kind") == "Start"
                        && field(l, "container") == *id
                })
            })
        },
    );
    let lines = d.lines();
    let mut early = Vec::new();
    for (name, id) in &ids {
        let converged = lines
            .iter()
            .position(|l| field(l, "message") == "converged" && field(l, "container") == *name);
        let event = lines.iter().position(|l| {
            field(l, "message") == "event received"
                && field(l, "kind") == "Start"
                && field(l, "container") == *id
        });
        eprintln!(
            "{}: {name} converged at log line {converged:?}, its start event at {event:?}",
            engine.name()
        );
        let converged = converged.unwrap_or_else(|| panic!("{name} was never converged"));
        let event = event.unwrap_or_else(|| panic!("{name}'s start event ({id}) never came"));
        if converged < event {
            early.push(*name);
        }
    }
    assert!(
        !early.is_empty(),
        "{}: no start converged before its event; the log:\n{}",
        engine.name(),
        d.lines()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Their namespaces were opened while Podman was still starting them (the file's
    // appearance), and claimed by their converge.
    let claimed: Vec<&str> = ids
        .iter()
        .filter(|(_, id)| {
            lines.iter().any(|l| {
                field(l, "message") == "namespace opened ahead of time; claimed"
                    && field(l, "container") == *id
            })
        })
        .map(|(name, _)| *name)
        .collect();
    eprintln!(
        "{}: namespaces opened ahead of time: {claimed:?}",
        engine.name()
    );
    assert_eq!(
        claimed.len(),
        ids.len(),
        "{}: every start's namespace opened ahead of time and claimed, not only {claimed:?}",
        engine.name()
    );
    // Each inspected with libpod's own inspect (the compatible one is asked only when
    // that fails, and says so).
    for l in lines
        .iter()
        .filter(|l| field(l, "message").starts_with("hint"))
    {
        eprintln!("  {l}");
    }
    let connected = d.wait_logged("connected to Docker");
    assert_eq!(
        connected["engine"]
            .as_str()
            .or_else(|| connected["fields"]["engine"].as_str()),
        Some("Podman Engine"),
        "libpod's inspect is used on Podman only"
    );
    let fell_back: Vec<String> = lines
        .iter()
        .filter(|l| field(l, "message") == "libpod's inspect failed; asking the compatible one")
        .map(ToString::to_string)
        .collect();
    assert!(
        fell_back.is_empty(),
        "{}: libpod's inspect failed:\n{}",
        engine.name(),
        fell_back.join("\n")
    );
    // Once they are gone, the daemon holds none of their namespaces (nor one it opened
    // ahead of time for them).
    let spaces: Vec<(u64, u64)> = ids
        .iter()
        .map(|(name, _)| {
            let m = std::fs::metadata(c.lab.netns_path(name))
                .unwrap_or_else(|e| panic!("{name}'s namespace: {e}"));
            (m.dev(), m.ino())
        })
        .collect();
    for (name, _) in &ids {
        c.lab.cli_ok(["rm", "-f", name]);
    }
    let holds = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/fd", d.pid))
            .map(|fds| {
                fds.filter_map(Result::ok)
                    .filter(|e| {
                        std::fs::metadata(e.path())
                            .is_ok_and(|m| spaces.contains(&(m.dev(), m.ino())))
                    })
                    .map(|e| e.path().display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    engines::wait_for(
        engines::CONVERGE,
        "the daemon holds no namespace of the removed containers",
        || holds().is_empty(),
    );
    let problems = d.problems();
    assert!(
        problems.is_empty(),
        "daemon warnings/errors:\n{}",
        problems.join("\n")
    );
}

/// A container that shares an opted-out container's namespace (`--network container:web`)
/// and opts in itself is the newest one when another start's namespace file appears: the
/// hint inspects it (libpod's inspect: network mode container:web) and nothing is written
/// in web's namespace, by the hint or after.
fn a_sharer_of_an_opted_out_namespace_is_left_alone_by_a_hint(engine: Engine) {
    let mut c = RecipeC::build(engine);
    let d = Daemon::start(&c.lab, &[]);
    watching_after_h0(&mut c, &d);
    c.run_both(
        "web",
        WEB_LAN,
        "hello from web",
        &["--label", "symroute.enable=false"],
    );
    let image = c.lab.image();
    let cgroup = c.lab.cgroup_parent();
    let limits = [
        "--cgroup-parent",
        cgroup.as_str(),
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    let field = |l: &serde_json::Value, k: &str| -> String {
        l[k].as_str()
            .or_else(|| l["fields"][k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    // Podman's events come 0-250 ms late, yet a sharer's own start event may reach the daemon
    // before the next hint (then its event is what finds it left alone). Up to five tries
    // for a hint to see one.
    let mut seen = None;
    for i in 1..=5u8 {
        let (other, side) = (format!("other{i}"), format!("side{i}"));
        let other_lan = Ipv4Addr::new(192, 0, 2, 41 + i);
        let lan_opt = format!("{LAN}:ip={other_lan}");
        let banner = format!("BANNER=hello from {other}");
        // other is created first, side after it: side is the newest container when
        // other's start makes its namespace file.
        let mut create_other = vec!["create", "--name", &other, "-e", &banner];
        create_other.extend(limits);
        create_other.extend(["--network", APP, "--network", &lan_opt, &image]);
        c.lab.cli_ok(&create_other);
        let mut create_side = vec!["create", "--name", &side, "--label", "symroute.enable=true"];
        create_side.extend(limits);
        create_side.extend(["--network", "container:web", &image, "/bin/sleep", "1000"]);
        let side_id = c.lab.cli_ok(&create_side);
        let side_id = side_id
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        // Both at once: other's namespace file appears early in its start, before
        // side's start event can have come.
        let lab = &c.lab;
        std::thread::scope(|sc| {
            let started = sc.spawn(|| lab.cli_ok(["start", other.as_str()]));
            lab.cli_ok(["start", side.as_str()]);
            started.join().expect("start other");
        });
        c.lab.wait_listening(&other);
        wait_rules(&c.lab, &other, &[other_lan, app_ip(&c, &other)]);
        engines::wait_for(
            engines::CONVERGE,
            "the sharer's start event reached the daemon",
            || {
                d.lines().iter().any(|l| {
                    field(l, "message") == "event received"
                        && field(l, "kind") == "Start"
                        && field(l, "container") == side_id
                })
            },
        );
        let short: String = side_id.chars().take(12).collect();
        let lines = d.lines();
        let at = lines.iter().position(|l| {
            field(l, "message") == "hint: a start before its event"
                && field(l, "container") == short
        });
        // ... and inspected then: left alone for sharing web's namespace.
        let hinted = at.is_some_and(|at| {
            lines[at..].iter().any(|l| {
                field(l, "message") == "not managed"
                    && field(l, "container") == side
                    && field(l, "reason").starts_with("shares the namespace of container")
            })
        });
        eprintln!(
            "{}: try {i}: a hint inspected {side}: {hinted}",
            engine.name()
        );
        if hinted {
            seen = Some(side);
            break;
        }
    }
    assert!(
        seen.is_some(),
        "{}: in five tries no hint saw a sharer before its event",
        engine.name()
    );
    let (rules, routes) = engines::try_tagged(&c.lab.netns_path("web"))
        .unwrap_or_else(|e| panic!("web's namespace: {e}"));
    assert!(
        rules.is_empty() && routes.is_empty(),
        "{}: web opted out, yet symroute wrote in its namespace: {rules:?} {routes:?}",
        engine.name()
    );
    let problems = d.problems();
    assert!(
        problems.is_empty(),
        "daemon warnings/errors:\n{}",
        problems.join("\n")
    );
}

#[test]
fn podman43_a_sharer_of_an_opted_out_namespace_is_left_alone_by_a_hint() {
    a_sharer_of_an_opted_out_namespace_is_left_alone_by_a_hint(Engine::Podman43);
}

#[test]
fn podman58_a_sharer_of_an_opted_out_namespace_is_left_alone_by_a_hint() {
    a_sharer_of_an_opted_out_namespace_is_left_alone_by_a_hint(Engine::Podman58);
}

#[test]
fn podman43_starts_are_seen_from_the_namespace_folder_before_their_events() {
    starts_are_seen_from_the_namespace_folder(Engine::Podman43);
}

#[test]
fn podman58_starts_are_seen_from_the_namespace_folder_before_their_events() {
    starts_are_seen_from_the_namespace_folder(Engine::Podman58);
}

#[test]
fn podman43_daemon_makes_recipe_c_reachable_and_follows_a_later_start() {
    converges_and_later_start(Engine::Podman43);
}
#[test]
fn podman43_disconnect_and_connect_replan() {
    disconnect_and_connect(Engine::Podman43);
}
#[test]
fn podman43_restart_reconverges_with_new_macs() {
    restart(Engine::Podman43);
}
#[test]
fn podman43_service_restart_the_daemon_reconnects() {
    service_restart(Engine::Podman43);
}
#[test]
fn podman58_daemon_makes_recipe_c_reachable_and_follows_a_later_start() {
    converges_and_later_start(Engine::Podman58);
}
#[test]
fn podman58_disconnect_and_connect_replan() {
    disconnect_and_connect(Engine::Podman58);
}
#[test]
fn podman58_restart_reconverges_with_new_macs() {
    restart(Engine::Podman58);
}
#[test]
fn podman58_service_restart_the_daemon_reconnects() {
    service_restart(Engine::Podman58);
}

// ---------------------------------------------------------------------------
// diagnose --container on Podman: what it should say (issue 9), not what it says today
// ---------------------------------------------------------------------------

/// The engine namespace's interface holding `addr`, and its effective IPv4 rp_filter
/// (the maximum of `all` and the interface's own).
fn host_side(c: &RecipeC, addr: Ipv4Addr) -> (String, u32) {
    let ns = c.lab.ns();
    let text = ns
        .run_cmd("ip", ["-o", "-4", "addr", "show"])
        .unwrap_or_else(|e| panic!("{e}"));
    let name = text
        .lines()
        .find(|l| l.contains(&format!(" {addr}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no interface with {addr} in the engine namespace:\n{text}"))
        .to_string();
    let get = |k: &str| -> u32 {
        ns.sysctl_get(&format!("net/ipv4/conf/{k}/rp_filter"))
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let rpf = get("all").max(get(&name));
    (name, rpf)
}

fn diagnose_tells_the_podman_story(engine: Engine) {
    let c = web_unreachable(engine);
    let (bridge, rpf) = host_side(&c, APP_GATEWAY);
    eprintln!(
        "{}: the bridge network's host side is {bridge}, rp_filter {rpf}",
        engine.name()
    );
    let out = diagnose(&c, "web");
    let text = &out.stdout;
    eprintln!("{text}");
    out.expect(1);
    let row = |network: &str| -> String {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{network} ")))
            .unwrap_or_else(|| panic!("no row for {network}:\n{text}"))
            .to_string()
    };
    let app = row(APP);
    assert!(
        app.split_whitespace().any(|w| w == bridge),
        "the bridge network's host side is {bridge}, not Docker's br-<id>: {app}"
    );
    // The last column: the number, with its meaning ("2 (loose)").
    assert!(
        app.trim_end().ends_with(&format!(" {rpf}")) || app.contains(&format!(" {rpf} (")),
        "host rp_filter of {bridge} is {rpf}: {app}"
    );
    assert!(
        row(LAN).split_whitespace().any(|w| w == "brlan"),
        "the macvlan's host side is its parent brlan: {}",
        row(LAN)
    );
    assert!(
        !text.contains("sort alphabetically") && !text.contains("the lowest metric wins"),
        "Podman/netavark gives both networks an equal-metric default; no name order, no \
         lowest metric:\n{text}"
    );
    assert!(
        text.contains("equal") && text.contains("ARP"),
        "the default route should be explained as two equal-metric defaults chosen by the \
         kernel by neighbour (ARP) state, with a verdict that depends on it:\n{text}"
    );
}

#[test]
fn podman43_diagnose_names_podman_host_side_and_equal_metric_defaults() {
    diagnose_tells_the_podman_story(Engine::Podman43);
}

#[test]
fn podman58_diagnose_names_podman_host_side_and_equal_metric_defaults() {
    diagnose_tells_the_podman_story(Engine::Podman58);
}

#[test]
fn podman43_lab_cleans_up_after_a_panic() {
    engines::assert_panic_cleans_up(Engine::Podman43);
}

#[test]
fn podman58_lab_cleans_up_after_a_panic() {
    engines::assert_panic_cleans_up(Engine::Podman58);
}
