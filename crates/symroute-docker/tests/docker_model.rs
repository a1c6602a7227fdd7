//! Pure tests of what symroute makes of Docker's inspect answers and events:
//! conversion, the daemon's policy, gateways matched by MAC, event parsing.

use bollard::models::{ContainerInspectResponse, EventMessage};
use symroute_core::model::{IfAddr, Link, Snapshot};
use symroute_docker::host::{self, EngineHost};
use symroute_docker::model::{ContainerInfo, Decision, NetworkMode, decide, plan_request};
use symroute_docker::{EventKind, event_from};

/// An inspect answer as dockerd 20.10 sends it (trimmed), for a container on
/// two bridge networks with a published port.
const INSPECT: &str = r#"{
  "Id": "e7d6d993cc2cb4b2ad1b4b1d0e0a7b1c9f8a8f4e1bb4e2d4b0a3c2f1e0d9c8b7",
  "Name": "/web",
  "State": {"Status": "running", "Running": true, "Pid": 27168},
  "HostConfig": {"NetworkMode": "front-tier"},
  "Config": {"Labels": {"app": "web"}},
  "NetworkSettings": {
    "SandboxKey": "/var/run/docker/netns/5754e2c07dbd",
    "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5000"}]},
    "Networks": {
      "front-tier": {"NetworkID": "d738", "EndpointID": "ec85", "Gateway": "172.18.0.1",
        "IPAddress": "172.18.0.2", "IPPrefixLen": 16, "IPv6Gateway": "",
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": "02:42:AC:12:00:02"},
      "back-tier": {"NetworkID": "f419", "EndpointID": "5e1e", "Gateway": "172.19.0.1",
        "IPAddress": "172.19.0.2", "IPPrefixLen": 16, "IPv6Gateway": "2001:db8:19::1",
        "GlobalIPv6Address": "2001:db8:19::2", "GlobalIPv6PrefixLen": 64,
        "MacAddress": "02:42:ac:13:00:02", "GwPriority": 5}
    }
  }
}"#;

fn info() -> ContainerInfo {
    let raw: ContainerInspectResponse = serde_json::from_str(INSPECT).expect("fixture parses");
    ContainerInfo::from_inspect(&raw).expect("fixture converts")
}

fn link(index: u32, name: &str, mac: &str, addrs: &[&str]) -> Link {
    Link {
        index,
        name: name.into(),
        mac: Some(mac.into()),
        up: true,
        loopback: false,
        addrs: addrs
            .iter()
            .map(|a| IfAddr {
                net: a.parse().expect("address literal"),
                global: true,
                tentative: false,
                dad_failed: false,
            })
            .collect(),
    }
}

#[test]
fn inspect_converts_every_field_symroute_uses() {
    let c = info();
    assert_eq!(c.name, "web");
    assert!(c.running);
    assert_eq!(c.pid, Some(27168));
    assert_eq!(c.netns_path().as_deref(), Some("/proc/27168/ns/net"));
    assert_eq!(c.mode, NetworkMode::Own("front-tier".into()));
    assert_eq!(c.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(c.attachments.len(), 2);
    // Sorted by network name; MACs lower-cased.
    let back = &c.attachments[0];
    assert_eq!(back.network, "back-tier");
    assert_eq!(back.mac.as_deref(), Some("02:42:ac:13:00:02"));
    assert_eq!(
        back.ipv4.map(|n| n.to_string()).as_deref(),
        Some("172.19.0.2/16")
    );
    assert_eq!(
        back.gateway6.map(|g| g.to_string()).as_deref(),
        Some("2001:db8:19::1")
    );
    assert_eq!(
        back.ipv6.map(|n| n.to_string()).as_deref(),
        Some("2001:db8:19::2/64")
    );
    assert_eq!(back.gw_priority, 5);
    let front = &c.attachments[1];
    assert_eq!(front.mac.as_deref(), Some("02:42:ac:12:00:02"));
    assert_eq!(front.ipv6, None, "empty IPv6 fields are absent, not errors");
    assert_eq!(front.gateway6, None);
    assert_eq!(c.ports.len(), 1);
    assert_eq!(c.ports[0].host_port, "5000");
}

#[test]
fn malformed_addresses_are_errors_naming_the_container() {
    let bad = INSPECT.replace("\"172.18.0.2\"", "\"172.18.0.999\"");
    let raw: ContainerInspectResponse = serde_json::from_str(&bad).expect("still JSON");
    let e = ContainerInfo::from_inspect(&raw).expect_err("bad address");
    assert!(e.to_string().contains("e7d6d993cc2c"), "{e}");
    assert!(e.to_string().contains("172.18.0.999"), "{e}");
    let bad = INSPECT.replace("\"IPPrefixLen\": 16", "\"IPPrefixLen\": 99");
    let raw: ContainerInspectResponse = serde_json::from_str(&bad).expect("still JSON");
    assert!(ContainerInfo::from_inspect(&raw).is_err());
    let raw: ContainerInspectResponse = serde_json::from_str("{}").expect("empty object");
    assert!(ContainerInfo::from_inspect(&raw).is_err(), "no Id");
}

#[test]
fn network_modes() {
    assert_eq!(NetworkMode::parse("host"), NetworkMode::Host);
    assert_eq!(NetworkMode::parse("none"), NetworkMode::None);
    assert_eq!(
        NetworkMode::parse("container:abc"),
        NetworkMode::Container("abc".into())
    );
    assert_eq!(
        NetworkMode::parse("bridge"),
        NetworkMode::Own("bridge".into())
    );
}

#[test]
fn policy_host_none_container_labels_and_state() {
    let base = info();
    assert_eq!(decide(&base, false), Decision::Manage);
    let mut c = base.clone();
    c.mode = NetworkMode::Host;
    assert!(matches!(decide(&c, false), Decision::Skip(r) if r.contains("host")));
    c.mode = NetworkMode::None;
    assert!(matches!(decide(&c, false), Decision::Skip(_)));
    c.mode = NetworkMode::Container("owner".into());
    assert!(matches!(decide(&c, false), Decision::Skip(r) if r.contains("owner")));
    let mut c = base.clone();
    c.running = false;
    assert!(matches!(decide(&c, false), Decision::Skip(r) if r.contains("not running")));
    let mut c = base.clone();
    c.labels.insert("symroute.enable".into(), "false".into());
    assert!(matches!(decide(&c, false), Decision::Skip(r) if r.contains("symroute.enable=false")));
    // --require-label: only an explicit true is managed.
    assert!(matches!(decide(&base, true), Decision::Skip(_)));
    let mut c = base;
    c.labels.insert("symroute.enable".into(), "true".into());
    assert_eq!(decide(&c, true), Decision::Manage);
}

#[test]
fn gateways_follow_the_mac_not_the_interface_order() {
    let c = info();
    // eth0 carries back-tier's MAC here: ethN order says nothing.
    let snap = Snapshot {
        links: vec![
            link(
                5,
                "eth0",
                "02:42:ac:13:00:02",
                &["172.19.0.2/16", "2001:db8:19::2/64"],
            ),
            link(7, "eth1", "02:42:ac:12:00:02", &["172.18.0.2/16"]),
        ],
        ..Snapshot::default()
    };
    let (req, warnings) = plan_request(&c, &snap);
    assert!(warnings.is_empty(), "{warnings:?}");
    let got: Vec<(String, String)> = req
        .gateways
        .iter()
        .map(|g| (g.ifname.clone(), g.gateway.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("eth0".to_string(), "172.19.0.1".to_string()),
            ("eth0".to_string(), "2001:db8:19::1".to_string()),
            ("eth1".to_string(), "172.18.0.1".to_string()),
        ]
    );
}

#[test]
fn an_attachment_without_its_interface_or_reachable_gateway_is_a_warning() {
    let c = info();
    let snap = Snapshot {
        links: vec![link(5, "eth0", "02:42:ac:13:00:02", &["10.9.0.2/24"])],
        ..Snapshot::default()
    };
    let (req, warnings) = plan_request(&c, &snap);
    assert!(req.gateways.is_empty(), "{:?}", req.gateways);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("02:42:ac:12:00:02")));
    assert!(warnings.iter().any(|w| w.contains("172.19.0.1")));
}

fn event(json: &str) -> EventMessage {
    serde_json::from_str(json).expect("event fixture")
}

#[test]
fn events_symroute_acts_on() {
    let e = event(
        r#"{"Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"web"}},"time":1700000000,"timeNano":1700000000123456789}"#,
    );
    let e = event_from(&e).expect("start is acted on");
    assert_eq!(e.kind, EventKind::Start);
    assert_eq!(e.container, "abc");
    assert_eq!(e.time_nano, 1_700_000_000_123_456_789);
    let c = event(
        r#"{"Type":"network","Action":"connect","Actor":{"ID":"net1","Attributes":{"container":"abc","name":"front","type":"bridge"}},"time":1}"#,
    );
    let c = event_from(&c).expect("connect is acted on");
    assert_eq!(c.kind, EventKind::Connect);
    assert_eq!(c.container, "abc");
    assert_eq!(c.network.as_deref(), Some("net1"));
    assert_eq!(
        c.time_nano, 1_000_000_000,
        "time in seconds when timeNano is absent"
    );
    for ignored in [
        r#"{"Type":"container","Action":"create","Actor":{"ID":"abc"}}"#,
        r#"{"Type":"image","Action":"pull","Actor":{"ID":"bb"}}"#,
        r#"{"Type":"network","Action":"connect","Actor":{"ID":"net1"}}"#,
    ] {
        assert_eq!(event_from(&event(ignored)), None, "{ignored}");
    }
}

#[test]
fn docker_host_forms() {
    let host = |h: &str| host::resolve(Some(h)).map(|r| r.0);
    assert_eq!(
        host("unix:///run/d.sock").unwrap(),
        EngineHost::Unix("/run/d.sock".into())
    );
    assert_eq!(
        host("/run/d.sock").unwrap(),
        EngineHost::Unix("/run/d.sock".into())
    );
    let e = host("ssh://me@engine").expect_err("ssh is refused");
    assert!(e.to_string().contains("ssh:// is not supported"), "{e}");
}
