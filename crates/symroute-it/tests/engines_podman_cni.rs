//! Podman 4.3 (the host's, Debian 12) with its CNI backend: libcni runs Debian's real
//! plugins (/usr/lib/cni) and the freshly built `symroute-cni`, installed as `symroute` in
//! the lab's plugin folder, on `podman run`, `stop`, `start`, `network disconnect`,
//! `network connect`, `network reload` and `rm`. The
//! engine runs in a lab namespace of its own (tests/support/common/engines.rs, `Podman43Cni`: the
//! lab's containers.conf sets `network_backend = "cni"`, `cni_plugin_dirs` and
//! `network_config_dir`), with lab recipe C: a LAN router (strict rp_filter) with a remote
//! client (198.51.100.10) behind it, a macvlan network `lan` on the LAN (parent brlan) and a
//! bridge network `app_default`, written here as conflists.
//!
//! The macvlan network's IPAM has no routes, so the bridge network gives the container its
//! only default route: remote's connection to the container's LAN address is answered
//! through the bridge and dropped. With `{"type": "symroute"}` chained after macvlan the
//! reply leaves by the LAN and remote connects. `podman rm` runs DEL through libcni, which
//! must delete exactly symroute's rules and routes and its state; Podman 4.3 never runs CNI
//! CHECK (containers/common's libnetwork calls only AddNetworkList and DelNetworkList), and
//! `podman network reload` is a DEL then an ADD of every network, tested too.
//!
//! The plugin keeps its default `dataDir`, /run/symroute/cni, which is on the lab's own
//! /run (a tmpfs in the lab's mount namespace): the test reads it through the holder's root.

use symroute_it::common;
use symroute_it::common::engines;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

use common::{assert_blocked, assert_connects};
use engines::{APP, APP_GATEWAY, Engine, LAN, REMOTE, ROUTER_LAN, RecipeC, route_get, service};
use ipnet::IpNet;
use serde_json::{Value, json};
use symroute_core::kernel::Kernel;
use symroute_core::model::{Route, Rule, Snapshot};
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::netns::Netns;

/// The plugin's own protocol tag (the host writer's is 115).
const CNI_TAG: u8 = 116;
/// The plugin's default rule priority.
const PRIORITY: u32 = 3000;
/// The plugin's default state folder, inside the lab's mount namespace.
const DATA_DIR: &str = "/run/symroute/cni";

/// A container on both networks, `lan` without symroute.
const PLAIN_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 40);
const WEB_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 41);
const WEB2_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 42);

fn plugin_log(c: &RecipeC) -> PathBuf {
    c.lab.dir().join("symroute-cni.log")
}

/// The chained entry: the documented `{"type": "symroute"}`, its log in the lab's folder.
fn symroute_entry(c: &RecipeC) -> Value {
    json!({ "type": "symroute", "logFile": plugin_log(c) })
}

/// The macvlan network on the LAN (parent brlan), no default route of its own.
fn lan_conflist(c: &RecipeC, chained: bool) -> Value {
    let mut plugins = vec![json!({
        "type": "macvlan",
        "master": "brlan",
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": "192.0.2.0/24", "gateway": ROUTER_LAN.to_string() }]]
        }
    })];
    if chained {
        plugins.push(symroute_entry(c));
    }
    json!({ "cniVersion": "1.0.0", "name": LAN, "plugins": plugins })
}

/// The bridge network, the container's default route, symroute chained.
fn app_conflist(c: &RecipeC) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": APP,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni-podman1",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": "203.0.113.0/24", "gateway": APP_GATEWAY.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            symroute_entry(c)
        ]
    })
}

fn write_conflist(c: &RecipeC, list: &Value) {
    let name = list["name"].as_str().expect("a conflist has a name");
    let path = c.lab.network_config_dir().join(format!("{name}.conflist"));
    let text = serde_json::to_string_pretty(list).expect("conflist to JSON");
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn app_ip(c: &RecipeC, name: &str) -> Ipv4Addr {
    c.lab.inspect(name)["NetworkSettings"]["Networks"][APP]["IPAddress"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{name} has no address on {APP}"))
}

fn snapshot_of(ns: &Netns) -> Snapshot {
    let sock = ns
        .socket()
        .unwrap_or_else(|e| panic!("netlink socket in {}: {e}", ns.path().display()));
    NetlinkKernel::new(sock)
        .snapshot()
        .unwrap_or_else(|e| panic!("snapshot of {}: {e}", ns.path().display()))
}

/// The plugin's rules and routes in a snapshot, sorted.
fn tagged(snap: &Snapshot) -> (Vec<Rule>, Vec<Route>) {
    let mut rules: Vec<Rule> = snap
        .rules
        .iter()
        .filter(|r| r.protocol == CNI_TAG)
        .cloned()
        .collect();
    let mut routes: Vec<Route> = snap
        .routes
        .iter()
        .filter(|r| r.protocol == CNI_TAG)
        .cloned()
        .collect();
    rules.sort();
    routes.sort();
    (rules, routes)
}

/// Every rule of a snapshot that is not the plugin's, sorted.
fn other_rules(snap: &Snapshot) -> Vec<Rule> {
    let mut rules: Vec<Rule> = snap
        .rules
        .iter()
        .filter(|r| r.protocol != CNI_TAG)
        .cloned()
        .collect();
    rules.sort();
    rules
}

fn host(addr: Ipv4Addr) -> IpNet {
    IpNet::from(IpAddr::V4(addr))
}

/// The container's main-table defaults: exactly one, via the bridge.
fn assert_only_bridge_default(snap: &Snapshot, name: &str) {
    let defaults: Vec<&Route> = snap.main_defaults().collect();
    assert!(
        defaults.len() == 1 && defaults[0].gateway == Some(IpAddr::V4(APP_GATEWAY)),
        "{name}: the main table should hold one default route, via the bridge's \
         {APP_GATEWAY}: {defaults:?}"
    );
}

/// The plugin made `addr`'s attachment: a `from addr` rule at its priority, its table
/// holding a default via `gateway` and the connected prefix, through the interface
/// holding `addr`.
fn assert_attachment(snap: &Snapshot, name: &str, addr: Ipv4Addr, gateway: Ipv4Addr) {
    let (rules, routes) = tagged(snap);
    let rule = rules
        .iter()
        .find(|r| r.src == Some(host(addr)))
        .unwrap_or_else(|| panic!("{name}: no proto {CNI_TAG} rule from {addr}: {rules:?}"));
    assert_eq!(rule.priority, PRIORITY, "{name}: {rule:?}");
    let link = snap
        .links
        .iter()
        .find(|l| l.addrs.iter().any(|a| a.addr() == IpAddr::V4(addr)))
        .unwrap_or_else(|| panic!("{name}: no interface holds {addr}"));
    let in_table: Vec<&Route> = routes.iter().filter(|r| r.table == rule.table).collect();
    assert!(
        in_table.iter().any(|r| r.is_default()
            && r.gateway == Some(IpAddr::V4(gateway))
            && r.oif == link.index),
        "{name}: table {} has no default via {gateway} dev {}: {in_table:?}",
        rule.table,
        link.name
    );
    assert!(
        in_table
            .iter()
            .any(|r| !r.is_default() && r.dst.contains(&IpAddr::V4(addr)) && r.oif == link.index),
        "{name}: table {} has no connected route for {addr} dev {}: {in_table:?}",
        rule.table,
        link.name
    );
}

/// The `from` addresses of the plugin's rules, sorted, as text.
fn tagged_sources(snap: &Snapshot) -> Vec<String> {
    let mut s: Vec<String> = tagged(snap)
        .0
        .iter()
        .filter_map(|r| r.src.map(|n| n.addr().to_string()))
        .collect();
    s.sort();
    s
}

fn sorted(addrs: &[Ipv4Addr]) -> Vec<String> {
    let mut s: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    s.sort();
    s
}

/// The plugin's state files (`<network>/<containerID>:<ifname>.json`) of container `id`.
fn state_files(c: &RecipeC, id: &str) -> Vec<String> {
    let dir = c.lab.inside(DATA_DIR);
    let mut out = Vec::new();
    for net in fs::read_dir(&dir).into_iter().flatten().flatten() {
        for f in fs::read_dir(net.path()).into_iter().flatten().flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            if file.starts_with(&format!("{id}:")) {
                out.push(format!("{}/{file}", net.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

fn log_text(c: &RecipeC) -> String {
    fs::read_to_string(plugin_log(c)).unwrap_or_default()
}

/// Lines of the plugin's log about container `id` for `command` (`ADD`, `DEL`).
fn log_lines(c: &RecipeC, command: &str, id: &str) -> Vec<String> {
    let needle = format!(" {command} {id}/");
    log_text(c)
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Remote cannot reach `lan_ip` while `name` answers through its bridge default.
fn assert_unreachable_from_remote(c: &RecipeC, name: &str, lan_ip: Ipv4Addr) {
    let ns = c.lab.netns_path(name);
    let path = route_get(&ns, REMOTE, lan_ip);
    assert!(
        path.contains(&format!("via {APP_GATEWAY}")),
        "{name}: the reply to remote should leave through the bridge: {path}"
    );
    assert_blocked(&c.remote, service(lan_ip), &format!("remote to {name}"));
}

/// `podman rm -f NAME` (DEL through libcni) with the namespace held open: afterwards no
/// rule or route of the plugin is left in it, every other rule is as before, its state
/// files are gone, and its log shows DEL for the container, without errors.
fn rm_deletes_exactly_the_plugins_objects(c: &RecipeC, name: &str, attachments: usize) {
    let id = c.lab.inspect(name)["Id"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no Id"))
        .to_string();
    // Held open: the namespace outlives the container, so the test can look inside it
    // after podman has removed it.
    let ns = Netns::open(c.lab.netns_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let before = snapshot_of(&ns);
    let (rules, _) = tagged(&before);
    assert_eq!(
        rules.len(),
        attachments,
        "{name}: one rule per chained attachment before rm: {rules:?}"
    );
    assert_eq!(
        state_files(c, &id).len(),
        attachments,
        "{name}: one state file per chained attachment before rm"
    );
    let t0 = Instant::now();
    c.lab.cli_ok(["rm", "-f", "-t", "0", name]);
    eprintln!("{name}: podman rm took {:?}", t0.elapsed());
    let after = snapshot_of(&ns);
    let (rules_left, routes_left) = tagged(&after);
    assert!(
        rules_left.is_empty() && routes_left.is_empty(),
        "{name}: after podman rm, proto {CNI_TAG} objects are left in its namespace \
         (rules survive their interface: DEL did not remove them):\n{rules_left:?}\n\
         {routes_left:?}\nplugin log:\n{}",
        log_text(c)
    );
    assert_eq!(
        other_rules(&before),
        other_rules(&after),
        "{name}: podman rm changed rules that are not the plugin's"
    );
    let left = state_files(c, &id);
    assert!(left.is_empty(), "{name}: state left after DEL: {left:?}");
    let dels = log_lines(c, "DEL", &id);
    assert!(
        !dels.is_empty(),
        "{name}: the plugin logged no DEL for {id}:\n{}",
        log_text(c)
    );
    let errors: Vec<&String> = dels.iter().filter(|l| l.contains("error")).collect();
    assert!(errors.is_empty(), "{name}: DEL errors: {errors:?}");
}

/// `podman stop` (DEL of both networks: no state left) and `start` (ADD: reachable again);
/// `network disconnect` of the LAN (DEL of that attachment only, seen in the running
/// namespace) and `network connect` back (ADD: reachable again).
fn stop_start_disconnect_connect(c: &RecipeC, name: &str, lan_ip: Ipv4Addr, banner: &str) {
    let id = c.lab.inspect(name)["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    c.lab.cli_ok(["stop", "-t", "0", name]);
    let left = state_files(c, &id);
    assert!(left.is_empty(), "{name}: state left after stop: {left:?}");
    c.lab.cli_ok(["start", name]);
    c.lab.wait_listening(name);
    let snap = snapshot_of(&Netns::open(c.lab.netns_path(name)).expect("netns"));
    assert_eq!(
        tagged_sources(&snap),
        sorted(&[lan_ip, app_ip(c, name)]),
        "{name} after stop and start"
    );
    assert_attachment(&snap, name, lan_ip, ROUTER_LAN);
    c.flush_router_neigh(lan_ip);
    assert_connects(
        &c.remote,
        service(lan_ip),
        banner,
        &format!("remote to {name} after stop and start"),
    );

    c.lab.cli_ok(["network", "disconnect", LAN, name]);
    let snap = snapshot_of(&Netns::open(c.lab.netns_path(name)).expect("netns"));
    assert_eq!(
        tagged_sources(&snap),
        sorted(&[app_ip(c, name)]),
        "{name} after network disconnect {LAN}: only the bridge attachment's rule is left"
    );
    let states = state_files(c, &id);
    assert!(
        states.len() == 1 && states[0].starts_with(&format!("{APP}/")),
        "{name} after network disconnect {LAN}: state files {states:?}"
    );
    c.lab
        .cli_ok(["network", "connect", "--ip", &lan_ip.to_string(), LAN, name]);
    let snap = snapshot_of(&Netns::open(c.lab.netns_path(name)).expect("netns"));
    assert_eq!(
        tagged_sources(&snap),
        sorted(&[lan_ip, app_ip(c, name)]),
        "{name} after network connect {LAN}"
    );
    assert_attachment(&snap, name, lan_ip, ROUTER_LAN);
    c.flush_router_neigh(lan_ip);
    assert_connects(
        &c.remote,
        service(lan_ip),
        banner,
        &format!("remote to {name} after network connect"),
    );
}

#[test]
fn podman43_cni_macvlan_reachable_only_with_symroute_chained_and_rm_deletes_its_objects() {
    let t0 = Instant::now();
    let mut c = RecipeC::build_without_networks(Engine::Podman43Cni, false);
    ok_sysctl(&c);
    write_conflist(&c, &app_conflist(&c));
    write_conflist(&c, &lan_conflist(&c, false));
    let networks = c
        .lab
        .cli_ok(["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    eprintln!("networks:\n{networks}");
    let info = c
        .lab
        .cli_ok(["info", "--format", "{{.Host.NetworkBackend}}"]);
    assert_eq!(info.trim(), "cni", "podman's network backend");

    // (a) symroute chained after bridge only: the LAN address is unreachable from remote.
    c.run_both("plain", PLAIN_LAN, "hello from plain", &[]);
    let plain_app = app_ip(&c, "plain");
    let snap = snapshot_of(&Netns::open(c.lab.netns_path("plain")).expect("plain's netns"));
    eprintln!(
        "plain's routes:\n{}",
        engines::ip_show(&c.lab.netns_path("plain"), "route")
    );
    assert_only_bridge_default(&snap, "plain");
    assert_eq!(
        tagged_sources(&snap),
        sorted(&[plain_app]),
        "plain: symroute runs for the bridge attachment only"
    );
    assert_attachment(&snap, "plain", plain_app, APP_GATEWAY);
    assert_connects(
        &c.router,
        service(PLAIN_LAN),
        "hello from plain",
        "router to plain, on-link",
    );
    assert_unreachable_from_remote(&c, "plain", PLAIN_LAN);
    rm_deletes_exactly_the_plugins_objects(&c, "plain", 1);

    // (b) symroute chained after macvlan too: remote connects.
    write_conflist(&c, &lan_conflist(&c, true));
    c.run_both("web", WEB_LAN, "hello from web", &[]);
    assert_connects(
        &c.remote,
        service(WEB_LAN),
        "hello from web",
        "remote to web, symroute chained after macvlan",
    );
    let web_app = app_ip(&c, "web");
    let snap = snapshot_of(&Netns::open(c.lab.netns_path("web")).expect("web's netns"));
    eprintln!(
        "web's rules:\n{}\nweb's routes:\n{}",
        engines::ip_show(&c.lab.netns_path("web"), "rule"),
        engines::ip_show_family(&c.lab.netns_path("web"), "-4", "route")
    );
    assert_only_bridge_default(&snap, "web");
    assert_eq!(tagged_sources(&snap), sorted(&[WEB_LAN, web_app]), "web");
    assert_attachment(&snap, "web", WEB_LAN, ROUTER_LAN);
    assert_attachment(&snap, "web", web_app, APP_GATEWAY);
    let web_id = c.lab.inspect("web")["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(state_files(&c, &web_id).len(), 2, "web: state files");

    // (d) a second container on the same networks.
    c.run_both("web2", WEB2_LAN, "hello from web2", &[]);
    assert_connects(
        &c.remote,
        service(WEB2_LAN),
        "hello from web2",
        "remote to web2",
    );
    let web2_app = app_ip(&c, "web2");
    let snap2 = snapshot_of(&Netns::open(c.lab.netns_path("web2")).expect("web2's netns"));
    assert_eq!(
        tagged_sources(&snap2),
        sorted(&[WEB2_LAN, web2_app]),
        "web2"
    );
    assert_attachment(&snap2, "web2", WEB2_LAN, ROUTER_LAN);
    stop_start_disconnect_connect(&c, "web2", WEB2_LAN, "hello from web2");

    // `podman network reload`: DEL then ADD of each network through libcni.
    let t1 = Instant::now();
    c.lab.cli_ok(["network", "reload", "web"]);
    eprintln!("podman network reload took {:?}", t1.elapsed());
    let web_app = app_ip(&c, "web");
    let snap = snapshot_of(&Netns::open(c.lab.netns_path("web")).expect("web's netns"));
    assert_eq!(
        tagged_sources(&snap),
        sorted(&[WEB_LAN, web_app]),
        "web after network reload: one rule per address, nothing left of before"
    );
    assert_eq!(tagged(&snap).0.len(), 2, "web after network reload");
    assert_attachment(&snap, "web", WEB_LAN, ROUTER_LAN);
    assert_eq!(
        state_files(&c, &web_id).len(),
        2,
        "web: state files after reload"
    );
    c.flush_router_neigh(WEB_LAN);
    assert_connects(
        &c.remote,
        service(WEB_LAN),
        "hello from web",
        "remote to web after network reload",
    );

    // (c) podman rm: DEL deletes exactly the plugin's objects; web2 is untouched.
    rm_deletes_exactly_the_plugins_objects(&c, "web", 2);
    assert_connects(
        &c.remote,
        service(WEB2_LAN),
        "hello from web2",
        "remote to web2 after web's rm",
    );
    rm_deletes_exactly_the_plugins_objects(&c, "web2", 2);
    let errors: Vec<String> = log_text(&c)
        .lines()
        .filter(|l| l.contains(" error "))
        .map(str::to_string)
        .collect();
    assert!(errors.is_empty(), "plugin errors: {errors:?}");
    eprintln!("plugin log:\n{}", log_text(&c));
    let report = c.lab.stop();
    assert!(
        report.problems.is_empty(),
        "teardown problems: {:?}",
        report.problems
    );
    eprintln!("test took {:?}", t0.elapsed());
}

/// The router drops what arrives on a leg its reverse route does not leave by.
fn ok_sysctl(c: &RecipeC) {
    common::ok(c.router.sysctl("net.ipv4.conf.all.rp_filter", "1"));
}

#[test]
fn podman43_cni_lab_cleans_up_after_a_panic() {
    engines::assert_panic_cleans_up(Engine::Podman43Cni);
}
