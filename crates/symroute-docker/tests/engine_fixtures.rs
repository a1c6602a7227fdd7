//! Pure tests on Engine API answers recorded from real engines (tests/fixtures/):
//! Docker Engine 28.5.2 (API 1.51), Podman 4.3.1 (compat API 1.41, netavark 1.4) and
//! Podman 5.8.6 (compat API 1.44, netavark 1.17), each with a container `web` on a
//! macvlan network (192.0.2.0/24, gateway 192.0.2.1) and a bridge network (203.0.113.0/24,
//! gateway 203.0.113.1). Recorded by the lab of /var/tmp/symroute-lab (NOTES.md there);
//! the bodies are the engines' own, unedited. Each `*-state.txt` is `ip addr` (and routes,
//! rules) inside the container at the time of the inspect next to it.
//!
//! The facts checked: gateways matched to interfaces by MAC whatever the ethN order,
//! Docker 28's `GwPriority` (also in its API 1.41 answer), Podman 4.3's
//! network-name `NetworkID`, and the shape of each engine's events.

use std::net::IpAddr;

use bollard::models::{ContainerInspectResponse, EventMessage, Network, SystemVersion};
use symroute_core::model::{IfAddr, Link, Snapshot};
use symroute_docker::model::{
    Attachment, ContainerInfo, Decision, NetworkMode, decide, plan_request,
};
use symroute_docker::{Event, EventKind, event_from};

const LAN_GATEWAY: &str = "192.0.2.1";
const APP_GATEWAY: &str = "203.0.113.1";

fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {full}: {e}"))
}

fn inspect(path: &str) -> ContainerInfo {
    let raw: ContainerInspectResponse = serde_json::from_str(&fixture(path))
        .unwrap_or_else(|e| panic!("{path} is not a ContainerInspectResponse: {e}"));
    ContainerInfo::from_inspect(&raw).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn version(path: &str) -> SystemVersion {
    serde_json::from_str(&fixture(path))
        .unwrap_or_else(|e| panic!("{path} is not a SystemVersion: {e}"))
}

fn network(path: &str) -> Network {
    serde_json::from_str(&fixture(path)).unwrap_or_else(|e| panic!("{path} is not a Network: {e}"))
}

/// Every line of a streamed `/events` capture, as bollard parses it.
fn events(path: &str) -> Vec<EventMessage> {
    fixture(path)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {e}: {l}")))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The links of the `### ip addr` section of a recorded state file (iproute2's text).
fn links(path: &str) -> Vec<Link> {
    let text = fixture(path);
    let mut out: Vec<Link> = Vec::new();
    let mut in_addr = false;
    for line in text.lines() {
        if line.starts_with("###") {
            in_addr = line.starts_with("### ip addr");
            continue;
        }
        if !in_addr {
            continue;
        }
        let t = line.trim_start();
        if !line.starts_with(' ') {
            // "7: eth1@if2: <BROADCAST,...,UP,LOWER_UP> mtu ..."
            let mut parts = line.splitn(3, ": ");
            let index = parts.next().and_then(|i| i.parse().ok());
            let name = parts.next().map(|n| n.split('@').next().unwrap_or(n));
            if let (Some(index), Some(name)) = (index, name) {
                out.push(Link {
                    index,
                    name: name.to_string(),
                    mac: None,
                    up: line.contains(",UP"),
                    loopback: name == "lo",
                    addrs: Vec::new(),
                });
            }
        } else if let Some(link) = out.last_mut() {
            let words: Vec<&str> = t.split_whitespace().collect();
            match words.as_slice() {
                ["link/ether", mac, ..] => link.mac = Some(mac.to_string()),
                ["inet" | "inet6", net, rest @ ..] => link.addrs.push(IfAddr {
                    net: net.parse().unwrap_or_else(|e| panic!("{path}: {net}: {e}")),
                    global: rest.windows(2).any(|w| w == ["scope", "global"]),
                    tentative: rest.contains(&"tentative"),
                    dad_failed: rest.contains(&"dadfailed"),
                }),
                _ => {}
            }
        }
    }
    assert!(
        out.len() >= 3,
        "{path}: expected lo and two interfaces: {out:?}"
    );
    out
}

fn snapshot(path: &str) -> Snapshot {
    Snapshot {
        links: links(path),
        rules: Vec::new(),
        routes: Vec::new(),
    }
}

/// The gateways of a container's plan request, as "ifname=gateway", sorted, and
/// the warnings (none expected).
fn gateways(c: &ContainerInfo, state: &str) -> Vec<String> {
    let (req, warnings) = plan_request(c, &snapshot(state));
    assert!(warnings.is_empty(), "{}: {warnings:?}", c.name);
    let mut g: Vec<String> = req
        .gateways
        .iter()
        .map(|h| format!("{}={}", h.ifname, h.gateway))
        .collect();
    g.sort();
    g
}

fn attachment<'a>(c: &'a ContainerInfo, network: &str) -> &'a Attachment {
    c.attachments
        .iter()
        .find(|a| a.network == network)
        .unwrap_or_else(|| {
            panic!(
                "{} has no attachment {network}: {:?}",
                c.name, c.attachments
            )
        })
}

/// The interface whose MAC is `mac` in a state file.
fn ifname_of(state: &str, mac: &str) -> String {
    links(state)
        .into_iter()
        .find(|l| l.mac.as_deref() == Some(mac))
        .map_or_else(
            || panic!("{state}: no interface with MAC {mac}"),
            |l| l.name,
        )
}

fn parsed(path: &str) -> Vec<(EventMessage, Option<Event>)> {
    events(path)
        .into_iter()
        .map(|m| {
            let e = event_from(&m);
            (m, e)
        })
        .collect()
}

fn of_kind(all: &[(EventMessage, Option<Event>)], kind: EventKind) -> Vec<Event> {
    all.iter()
        .filter_map(|(_, e)| e.clone())
        .filter(|e| e.kind == kind)
        .collect()
}

fn raw_of(all: &[(EventMessage, Option<Event>)], typ: &str, action: &str) -> Vec<EventMessage> {
    all.iter()
        .map(|(m, _)| m.clone())
        .filter(|m| {
            m.typ.map(|t| t.to_string()).as_deref() == Some(typ)
                && m.action.as_deref() == Some(action)
        })
        .collect()
}

fn actor_id(m: &EventMessage) -> String {
    m.actor
        .as_ref()
        .and_then(|a| a.id.clone())
        .unwrap_or_default()
}

fn attr(m: &EventMessage, key: &str) -> Option<String> {
    m.actor.as_ref()?.attributes.as_ref()?.get(key).cloned()
}

// ---------------------------------------------------------------------------
// Docker Engine 28.5.2
// ---------------------------------------------------------------------------

#[test]
fn docker28_version_names_the_engine_and_api_1_51() {
    let v = version("docker-28/version.json");
    assert_eq!(v.api_version.as_deref(), Some("1.51"));
    assert_eq!(v.version.as_deref(), Some("28.5.2+dfsg4"));
    let first = v
        .components
        .as_ref()
        .and_then(|c| c.first())
        .map(|c| c.name.clone());
    assert_eq!(first.as_deref(), Some("Engine"), "not Podman: {v:?}");
}

#[test]
fn docker28_inspect_gives_gw_priority_and_both_gateways() {
    let web = inspect("docker-28/container-web.json");
    assert_eq!(web.name, "web");
    assert!(web.running && web.pid.is_some());
    assert_eq!(web.mode, NetworkMode::Own("app_default".into()));
    let lan = attachment(&web, "lan");
    assert_eq!(lan.gw_priority, 10, "--network name=lan,gw-priority=10");
    assert_eq!(lan.gateway4, Some(ip(LAN_GATEWAY)));
    assert_eq!(
        lan.ipv4.map(|n| n.to_string()).as_deref(),
        Some("192.0.2.50/24")
    );
    assert_eq!(lan.mac.as_deref(), Some("46:b0:f8:14:b0:36"));
    let app = attachment(&web, "app_default");
    assert_eq!(app.gw_priority, 0);
    assert_eq!(app.gateway4, Some(ip(APP_GATEWAY)));
    // Docker gives the network's 64-hex id.
    assert_eq!(
        lan.network_id,
        network("docker-28/network-lan.json").id.unwrap_or_default()
    );
    assert_eq!(
        app.network_id,
        network("docker-28/network-app_default.json")
            .id
            .unwrap_or_default()
    );
    assert_eq!(
        gateways(&web, "docker-28/container-web-state.txt"),
        ["eth0=203.0.113.1", "eth1=192.0.2.1"]
    );
}

#[test]
fn docker28_api_1_41_answer_still_carries_gw_priority() {
    // Asked through /v1.41/ (what bollard pins when negotiation is off), dockerd 28.5
    // still sends GwPriority (and Aliases, which the 1.51 answer nulls): a client at
    // 1.41 sees the priority too.
    let web = inspect("docker-28/v1.41-container-web.json");
    assert_eq!(attachment(&web, "lan").gw_priority, 10);
    assert_eq!(attachment(&web, "app_default").gw_priority, 0);
    assert_eq!(attachment(&web, "lan").gateway4, Some(ip(LAN_GATEWAY)));
}

#[test]
fn docker28_gateways_follow_the_mac_not_the_interface_order() {
    // web2 was started on lan and connected to app_default afterwards: eth0 = lan,
    // eth1 = app_default, the reverse of web.
    let web2 = inspect("docker-28/container-web2.json");
    let state = "docker-28/container-web2-state.txt";
    let lan_mac = attachment(&web2, "lan").mac.clone().expect("lan MAC");
    assert_eq!(ifname_of(state, &lan_mac), "eth0");
    assert_eq!(
        gateways(&web2, state),
        ["eth0=192.0.2.1", "eth1=203.0.113.1"]
    );
    assert_eq!(attachment(&web2, "lan").gw_priority, 0);
}

#[test]
fn docker28_networks_inspect() {
    let lan = network("docker-28/network-lan.json");
    assert_eq!(lan.name.as_deref(), Some("lan"));
    assert_eq!(lan.driver.as_deref(), Some("macvlan"));
    let opts = lan.options.clone().unwrap_or_default();
    assert_eq!(opts.get("parent").map(String::as_str), Some("brlan"));
    let cfg = lan.ipam.and_then(|i| i.config).unwrap_or_default();
    assert_eq!(cfg[0].gateway.as_deref(), Some(LAN_GATEWAY));
    let app = network("docker-28/network-app_default.json");
    assert_eq!(app.driver.as_deref(), Some("bridge"));
}

#[test]
fn docker28_events_network_actor_is_the_network_and_container_an_attribute() {
    let all = parsed("docker-28/events.json");
    let web = inspect("docker-28/container-web.json");
    let lan_id = attachment(&web, "lan").network_id.clone();
    let connects = raw_of(&all, "network", "connect");
    assert!(!connects.is_empty());
    for m in &connects {
        let e = event_from(m).unwrap_or_else(|| panic!("connect not understood: {m:?}"));
        assert_eq!(e.kind, EventKind::Connect);
        assert_eq!(Some(e.container.clone()), attr(m, "container"));
        assert_eq!(
            e.network.as_deref(),
            Some(actor_id(m).as_str()),
            "network id = Actor.ID"
        );
    }
    assert!(
        of_kind(&all, EventKind::Connect)
            .iter()
            .any(|e| e.container == web.id && e.network.as_deref() == Some(lan_id.as_str())),
        "web's connect to lan"
    );
    assert_eq!(
        of_kind(&all, EventKind::Disconnect).len(),
        raw_of(&all, "network", "disconnect").len()
    );
    // web, web2 and web2's restart.
    assert_eq!(of_kind(&all, EventKind::Start).len(), 3);
    assert_eq!(of_kind(&all, EventKind::Die).len(), 3);
    assert_eq!(of_kind(&all, EventKind::Destroy).len(), 2);
    assert!(
        of_kind(&all, EventKind::Start)
            .iter()
            .any(|e| e.container == web.id),
        "web's start"
    );
}

// ---------------------------------------------------------------------------
// Podman 4.3.1 and 5.8.6 (compat API)
// ---------------------------------------------------------------------------

#[test]
fn podman_version_names_podman_engine() {
    for (dir, api, ver) in [
        ("podman-4.3", "1.41", "4.3.1"),
        ("podman-5.8", "1.44", "5.8.6"),
    ] {
        let v = version(&format!("{dir}/version.json"));
        assert_eq!(v.api_version.as_deref(), Some(api), "{dir}");
        assert_eq!(v.version.as_deref(), Some(ver), "{dir}");
        let first = v
            .components
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.name.clone());
        assert_eq!(first.as_deref(), Some("Podman Engine"), "{dir}");
    }
}

#[test]
fn podman_inspect_gateways_by_mac_and_network_mode_bridge() {
    for dir in ["podman-4.3", "podman-5.8"] {
        let web = inspect(&format!("{dir}/container-web.json"));
        assert_eq!(web.name, "web", "{dir}");
        assert!(web.running && web.pid.is_some(), "{dir}");
        // Podman says "bridge" for a container on two user networks.
        assert_eq!(web.mode, NetworkMode::Own("bridge".into()), "{dir}");
        let zlan = attachment(&web, "zlan");
        let apps = attachment(&web, "apps");
        assert_eq!(zlan.gateway4, Some(ip(LAN_GATEWAY)), "{dir}");
        assert_eq!(apps.gateway4, Some(ip(APP_GATEWAY)), "{dir}");
        assert_eq!(
            zlan.ipv4.map(|n| n.to_string()).as_deref(),
            Some("192.0.2.40/24")
        );
        assert_eq!(zlan.gw_priority, 0, "{dir}: no gw-priority on Podman");
        let state = format!("{dir}/container-state.txt");
        let zlan_if = ifname_of(&state, zlan.mac.as_deref().expect("zlan MAC"));
        let apps_if = ifname_of(&state, apps.mac.as_deref().expect("apps MAC"));
        assert_ne!(zlan_if, apps_if);
        let mut want = vec![
            format!("{zlan_if}={LAN_GATEWAY}"),
            format!("{apps_if}={APP_GATEWAY}"),
        ];
        want.sort();
        assert_eq!(gateways(&web, &state), want, "{dir}");
    }
}

#[test]
fn podman_restart_changes_both_macs_and_matching_follows_them() {
    for dir in ["podman-4.3", "podman-5.8"] {
        let before = inspect(&format!("{dir}/container-web.json"));
        let after = inspect(&format!("{dir}/container-web-after-restart.json"));
        assert_eq!(before.id, after.id);
        for n in ["zlan", "apps"] {
            assert_ne!(
                attachment(&before, n).mac,
                attachment(&after, n).mac,
                "{dir}: Podman's MACs are random per start"
            );
        }
        let state = format!("{dir}/container-state-after-restart.txt");
        let g = gateways(&after, &state);
        assert_eq!(g.len(), 2, "{dir}: {g:?}");
        assert!(
            g.iter().any(|x| x.ends_with(LAN_GATEWAY))
                && g.iter().any(|x| x.ends_with(APP_GATEWAY))
        );
    }
}

#[test]
fn podman43_network_id_is_the_network_name() {
    let web = inspect("podman-4.3/container-web.json");
    assert_eq!(attachment(&web, "zlan").network_id, "zlan");
    assert_eq!(attachment(&web, "apps").network_id, "apps");
    // while /networks/{id} names the real id
    let zlan = network("podman-4.3/network-zlan.json");
    assert_eq!(zlan.name.as_deref(), Some("zlan"));
    assert_eq!(zlan.id.as_deref().map(str::len), Some(64));
}

#[test]
fn podman58_network_id_is_the_64_hex_id() {
    let web = inspect("podman-5.8/container-web.json");
    for n in ["zlan", "apps"] {
        let id = network(&format!("podman-5.8/network-{n}.json"))
            .id
            .unwrap_or_default();
        assert_eq!(id.len(), 64);
        assert_eq!(attachment(&web, n).network_id, id, "{n}");
    }
    assert_eq!(
        network("podman-5.8/network-zlan.json").driver.as_deref(),
        Some("macvlan")
    );
}

#[test]
fn podman_container_events_start_and_die_are_understood() {
    for dir in ["podman-4.3", "podman-5.8"] {
        let all = parsed(&format!("{dir}/events.json"));
        let web = inspect(&format!("{dir}/container-web.json"));
        let starts = of_kind(&all, EventKind::Start);
        assert_eq!(starts.len(), 2, "{dir}: run and restart");
        assert!(starts.iter().all(|e| e.container == web.id), "{dir}");
        assert_eq!(of_kind(&all, EventKind::Die).len(), 2, "{dir}");
        assert!(
            all.iter()
                .all(|(_, e)| e.as_ref().is_none_or(|e| e.time_nano > 0))
        );
    }
}

#[test]
fn podman_network_events_actor_is_the_container() {
    // The raw shape, which the fix must read: Actor.ID = the container (not the network),
    // Attributes.name = the container's name, no "container" attribute; 5.8 names the
    // network in Attributes.network, 4.3 does not name it at all.
    for (dir, network_attr) in [("podman-4.3", None), ("podman-5.8", Some("zlan"))] {
        let all = parsed(&format!("{dir}/events.json"));
        let web = inspect(&format!("{dir}/container-web.json"));
        for action in ["connect", "disconnect"] {
            let raw = raw_of(&all, "network", action);
            assert_eq!(raw.len(), 1, "{dir} {action}");
            let m = &raw[0];
            assert_eq!(actor_id(m), web.id, "{dir}");
            assert_eq!(attr(m, "name").as_deref(), Some("web"), "{dir}");
            assert_eq!(attr(m, "container"), None, "{dir}");
            assert_eq!(attr(m, "network").as_deref(), network_attr, "{dir}");
        }
    }
}

#[test]
fn podman_network_events_become_connect_and_disconnect_of_the_container() {
    for (dir, network) in [("podman-4.3", None), ("podman-5.8", Some("zlan"))] {
        let all = parsed(&format!("{dir}/events.json"));
        let web = inspect(&format!("{dir}/container-web.json"));
        for (action, kind) in [
            ("connect", EventKind::Connect),
            ("disconnect", EventKind::Disconnect),
        ] {
            let m = &raw_of(&all, "network", action)[0];
            let e = event_from(m).unwrap_or_else(|| panic!("{dir}: {action} dropped: {m:?}"));
            assert_eq!(e.kind, kind, "{dir}");
            assert_eq!(e.container, web.id, "{dir}: the container is Actor.ID");
            assert_eq!(
                e.network.as_deref(),
                network,
                "{dir}: Podman names the network, by name"
            );
        }
    }
}

#[test]
fn podman_remove_event_is_a_destroy() {
    for dir in ["podman-4.3", "podman-5.8"] {
        let all = parsed(&format!("{dir}/events.json"));
        let web = inspect(&format!("{dir}/container-web.json"));
        let raw = raw_of(&all, "container", "remove");
        assert_eq!(raw.len(), 1, "{dir}");
        let e = event_from(&raw[0]).unwrap_or_else(|| panic!("{dir}: remove dropped"));
        assert_eq!(e.kind, EventKind::Destroy, "{dir}");
        assert_eq!(e.container, web.id, "{dir}");
    }
}

fn libpod_inspect(path: &str) -> ContainerInfo {
    let v: serde_json::Value =
        serde_json::from_str(&fixture(path)).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    ContainerInfo::from_libpod_inspect(&v).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Recorded on Podman 4.3.1 and 5.8.6 (tests/fixtures/podman-*/shared/, both inspects of
/// each container a moment apart): `web` on two networks, `side` with `--network
/// container:web`, pod `p1`'s infra container (two networks) and `member`, `hostnet`
/// (`--network host`) and `nonet` (`--network none`). libpod's own inspect, which the
/// daemon's hint uses, tells symroute everything the compatible one does.
#[test]
fn podman_libpod_inspect_tells_what_the_compatible_one_does_for_every_network_mode() {
    for dir in ["podman-4.3", "podman-5.8"] {
        for name in ["web", "side", "infra", "member", "hostnet", "nonet"] {
            let compat = inspect(&format!("{dir}/shared/container-{name}.json"));
            let libpod = libpod_inspect(&format!("{dir}/shared/libpod-container-{name}.json"));
            assert_eq!(libpod, compat, "{dir}: {name}");
        }
        let side = libpod_inspect(&format!("{dir}/shared/libpod-container-side.json"));
        let web = libpod_inspect(&format!("{dir}/shared/libpod-container-web.json"));
        assert_eq!(
            side.mode,
            NetworkMode::Container(web.id.clone()),
            "{dir}: side shares web's namespace"
        );
        assert_eq!(
            decide(&side, false),
            Decision::Skip(format!(
                "shares the namespace of container {}, which is handled once, as that container",
                web.id
            )),
            "{dir}"
        );
        assert_eq!(decide(&web, false), Decision::Manage, "{dir}");
        let member = libpod_inspect(&format!("{dir}/shared/libpod-container-member.json"));
        assert!(
            matches!(member.mode, NetworkMode::Container(_)),
            "{dir}: a pod's member shares its infra's namespace"
        );
        for (name, mode) in [("hostnet", NetworkMode::Host), ("nonet", NetworkMode::None)] {
            let c = libpod_inspect(&format!("{dir}/shared/libpod-container-{name}.json"));
            assert_eq!(c.mode, mode, "{dir}: {name}");
            assert!(
                matches!(decide(&c, false), Decision::Skip(_)),
                "{dir}: {name}"
            );
        }
    }
}

#[test]
fn a_libpod_answer_that_is_not_what_podman_sends_is_an_error_naming_the_container() {
    let good: serde_json::Value =
        serde_json::from_str(&fixture("podman-5.8/shared/libpod-container-web.json"))
            .expect("JSON");
    assert!(ContainerInfo::from_libpod_inspect(&good).is_ok());
    let id = good["Id"].as_str().expect("id").to_string();
    type Spoil = fn(&mut serde_json::Value);
    let cases: [(&str, Spoil); 4] = [
        ("a pid that is text", |v| v["State"]["Pid"] = "1".into()),
        ("labels that are numbers", |v| {
            v["Config"]["Labels"] = serde_json::json!({"a": 1});
        }),
        ("an address that is not one", |v| {
            v["NetworkSettings"]["Networks"]["apps"]["IPAddress"] = "203.0.113.300".into();
        }),
        ("networks that are a list", |v| {
            v["NetworkSettings"]["Networks"] = serde_json::json!([1]);
        }),
    ];
    for (what, spoil) in cases {
        let mut v = good.clone();
        spoil(&mut v);
        let e = ContainerInfo::from_libpod_inspect(&v).expect_err(what);
        assert!(e.to_string().contains(&id), "{what}: {e}");
    }
    let e = ContainerInfo::from_libpod_inspect(&serde_json::json!({})).expect_err("no id");
    assert!(
        e.to_string().contains("no Id") || e.to_string().contains("(no id)"),
        "{e}"
    );
}
