//! `diagnose --container` on Podman, pure: the recorded Podman 5.8 inspect and
//! network answers (tests/fixtures/podman-5.8), the container's main table as netavark
//! wrote it (two `default ... metric 100`), and a kernel whose current choice among equal
//! defaults is scripted (the real one follows ARP state).

use std::collections::BTreeMap;
use std::net::IpAddr;

use bollard::models::{ContainerInspectResponse, Network};
use symroute_core::diff::Op;
use symroute_core::kernel::{Kernel, KernelError, RouteAnswer, RouteQuery};
use symroute_core::model::{Link, RT_TABLE_MAIN, Route, RouteType, Scope, Snapshot};
use symroute_docker::diagnose::{diagnose_with, text};
use symroute_docker::model::ContainerInfo;
use symroute_docker::{EngineVersion, NetworkInfo};
use symroute_testkit::fake::FakeKernel;

fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {full}: {e}"))
}

fn web() -> ContainerInfo {
    let raw: ContainerInspectResponse =
        serde_json::from_str(&fixture("podman-5.8/container-web.json")).expect("inspect");
    ContainerInfo::from_inspect(&raw).expect("container")
}

/// The compat network answer, plus the interface libpod names (recorded in
/// /var/tmp/symroute-lab/fixtures/podman-5.8/libpod-network-*.json).
fn network(name: &str, libpod_interface: &str) -> NetworkInfo {
    let n: Network =
        serde_json::from_str(&fixture(&format!("podman-5.8/network-{name}.json"))).expect("net");
    NetworkInfo {
        id: n.id.unwrap_or_default(),
        name: n.name.unwrap_or_default(),
        driver: n.driver.unwrap_or_default(),
        internal: false,
        enable_ipv6: false,
        subnets: Vec::new(),
        options: n.options.unwrap_or_default().into_iter().collect(),
        engine_interface: Some(libpod_interface.into()),
    }
}

fn podman() -> EngineVersion {
    EngineVersion {
        name: "Podman Engine".into(),
        version: "5.8.6".into(),
        api_version: "1.44".into(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// A kernel over the fake whose lookups land on main's default via
/// `prefers` (the gateway ARP happens to favour now).
struct ArpKernel {
    fake: FakeKernel,
    prefers: IpAddr,
}

impl Kernel for ArpKernel {
    fn snapshot(&mut self) -> Result<Snapshot, KernelError> {
        self.fake.snapshot()
    }
    fn execute(&mut self, op: &Op) -> Result<(), KernelError> {
        self.fake.execute(op)
    }
    fn route_get(&mut self, _q: &RouteQuery) -> Result<RouteAnswer, KernelError> {
        let r = self
            .fake
            .state
            .routes
            .iter()
            .find(|r| r.is_default() && r.gateway == Some(self.prefers))
            .expect("a default via the preferred gateway");
        Ok(RouteAnswer {
            oif: r.oif,
            gateway: r.gateway,
            prefsrc: None,
            table: RT_TABLE_MAIN,
            kind: RouteType::UNICAST,
        })
    }
}

/// The container's namespace as netavark leaves it: its two interfaces (MACs
/// from the inspect), each with netavark's `default ... proto static metric 100`.
fn namespace(c: &ContainerInfo, prefers: &str) -> ArpKernel {
    let mut links = Vec::new();
    let mut defaults = Vec::new();
    for (i, a) in c.attachments.iter().enumerate() {
        let index = u32::try_from(i).expect("index") + 2;
        let net = a.ipv4.expect("an IPv4 address");
        links.push(Link {
            index,
            name: format!("eth{i}"),
            mac: a.mac.clone(),
            up: true,
            loopback: false,
            addrs: vec![symroute_core::model::IfAddr {
                net,
                global: true,
                tentative: false,
                dad_failed: false,
            }],
        });
        defaults.push(Route {
            table: RT_TABLE_MAIN,
            dst: "0.0.0.0/0".parse().expect("prefix"),
            gateway: a.gateway4,
            oif: index,
            prefsrc: None,
            scope: Scope::Universe,
            kind: RouteType::UNICAST,
            metric: 100,
            onlink: false,
            protocol: 4,
            multipath: Vec::new(),
        });
    }
    let mut fake = FakeKernel::with_links(links);
    fake.state.routes.extend(defaults);
    ArpKernel {
        fake,
        prefers: ip(prefers),
    }
}

fn diagnosed(prefers: &str) -> (symroute_docker::diagnose::ContainerDiagnosis, String) {
    let c = web();
    let mut nets = BTreeMap::new();
    for (name, ifname) in [("apps", "podman1"), ("zlan", "brlan")] {
        let n = network(name, ifname);
        nets.insert(n.id.clone(), n);
    }
    let engine = podman();
    let d = diagnose_with(&c, &nets, Some(&engine), |_| Ok(namespace(&c, prefers)));
    let t = text(&d);
    (d, t)
}

#[test]
fn podman_host_sides_are_netavarks_never_br_id() {
    let (d, t) = diagnosed("203.0.113.1");
    let side = |n: &str| {
        d.networks
            .iter()
            .find(|r| r.network == n)
            .and_then(|r| r.host_interface.clone())
    };
    assert_eq!(side("apps").as_deref(), Some("podman1"), "{t}");
    assert_eq!(side("zlan").as_deref(), Some("brlan"), "{t}");
    assert!(!t.contains("br-"), "{t}");
    assert!(t.contains("engine: Podman Engine 5.8.6 (API 1.44)"), "{t}");
}

#[test]
fn podman_default_route_is_told_as_equal_metric_defaults_chosen_by_arp() {
    let (d, t) = diagnosed("203.0.113.1");
    assert!(!t.contains("sort alphabetically"), "{t}");
    assert!(!t.contains("the lowest metric wins"), "{t}");
    assert_eq!(d.equal_defaults.len(), 1, "{t}");
    assert_eq!(d.equal_defaults[0].metric, 100);
    let line = t
        .lines()
        .find(|l| l.trim_start().starts_with("default route (IPv4):"))
        .unwrap_or_else(|| panic!("no default route line:\n{t}"));
    assert!(
        line.contains("apps") && line.contains("zlan") && line.contains("equal metric 100"),
        "{line}"
    );
    assert!(line.contains("ARP"), "{line}");
}

#[test]
fn replies_landing_on_equal_defaults_depend_on_arp_state_whichever_the_kernel_prefers_now() {
    for prefers in ["203.0.113.1", "192.0.2.1"] {
        let (d, t) = diagnosed(prefers);
        assert_eq!(
            d.arp_dependent,
            vec![ip("203.0.113.2"), ip("192.0.2.40")],
            "both addresses, with the kernel preferring {prefers}:\n{t}"
        );
        assert!(!d.symmetric, "no false certainty either way:\n{t}");
        for addr in ["203.0.113.2", "192.0.2.40"] {
            let row = t
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(addr))
                .unwrap_or_else(|| panic!("no row for {addr}:\n{t}"));
            assert!(row.contains("depends on ARP state (now "), "{row}");
        }
        assert!(t.contains("verdict: DEPENDS ON ARP STATE"), "{t}");
        assert!(t.contains("fix: symroute apply --container web"), "{t}");
        assert!(!t.contains("verdict: symmetric"), "{t}");
    }
}
