//! Engine-aware diagnosis: a container's networks, why its default route is
//! where it is (Docker: libnetwork's order; Podman: netavark's default route
//! per network, equal metrics leaving the choice to ARP state), where its
//! published ports lead, the reply path of each address (the core
//! diagnosis, with replies that land on equal-metric defaults marked as
//! depending on ARP state), and the host's reverse-path filter on the
//! interfaces those networks cross (Podman: the interfaces netavark names).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::client::{DockerError, NetworkInfo};
use crate::engine_api::{EngineApi, EngineVersion};
use crate::explain::{DefaultChoice, Explanation, explain, host_interface};
use crate::model::{ContainerInfo, NetworkMode};
use symroute_core::diagnose::{Diagnosis, diagnose};
use symroute_core::equal_defaults::{EqualDefaults, arp_dependent, equal_defaults};
use symroute_core::kernel::Kernel;
use symroute_core::model::{Family, Snapshot};
use symroute_core::report;
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::netns::Netns;

#[derive(Debug, Clone, Serialize)]
pub struct NetworkRow {
    pub network: String,
    pub driver: String,
    pub internal: bool,
    /// The interface inside the container (matched by MAC).
    pub interface: Option<String>,
    pub ipv4: Option<IpNet>,
    pub gateway4: Option<IpAddr>,
    pub ipv6: Option<IpNet>,
    pub gateway6: Option<IpAddr>,
    pub gw_priority: i64,
    /// The host interface the network's traffic crosses (bridge or parent).
    pub host_interface: Option<String>,
    /// Effective IPv4 rp_filter there: max(all, interface); 1 is strict.
    pub host_rp_filter: Option<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortRow {
    pub container_port: String,
    pub host: String,
    /// The address the published port is forwarded to (Docker 1.11+ programs
    /// the NAT on the endpoint holding the default route).
    pub reaches: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerDiagnosis {
    pub id: String,
    pub name: String,
    /// The engine that answered (`/version`), when it said.
    pub engine: Option<EngineVersion>,
    pub networks: Vec<NetworkRow>,
    pub default_route: Explanation,
    pub ports: Vec<PortRow>,
    /// The core diagnosis of the container's namespace.
    pub replies: Option<Diagnosis>,
    /// Why there is no reply diagnosis (host network, not running, ...).
    pub note: Option<String>,
    /// Main's equal-metric default routes (Podman/netavark gives every
    /// network with a gateway one).
    pub equal_defaults: Vec<EqualDefaults>,
    /// Addresses whose reply path depends on ARP state (it lands on equal
    /// defaults): what the kernel does now is no promise.
    pub arp_dependent: Vec<IpAddr>,
    pub symmetric: bool,
}

/// Effective IPv4 rp_filter of a host interface, read in symroute's own
/// namespace (the host's).
fn rp_filter(dev: &str) -> Option<u8> {
    let read = |d: &str| -> Option<u8> {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{d}/rp_filter"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let own = read(dev)?;
    Some(own.max(read("all").unwrap_or(0)))
}

/// Diagnose one container.
pub async fn diagnose_container(
    client: &impl EngineApi,
    name_or_id: &str,
) -> Result<ContainerDiagnosis, DockerError> {
    let info = client.inspect(name_or_id).await?;
    let engine = client.version().await.ok();
    let podman = engine.as_ref().is_some_and(EngineVersion::is_podman);
    let mut nets: BTreeMap<String, NetworkInfo> = BTreeMap::new();
    for a in &info.attachments {
        let key = if a.network_id.is_empty() {
            a.network.clone()
        } else {
            a.network_id.clone()
        };
        // Podman 4.3 gives the network's name as its NetworkID; whichever it
        // is, the name is tried when the id is not known.
        let mut found = None;
        for k in [&key, &a.network] {
            match client.network(k).await {
                Ok(n) => {
                    found = Some(n);
                    break;
                }
                Err(DockerError::NoSuchNetwork(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if let (Some(n), Some(engine)) = (found.as_mut(), engine.as_ref().filter(|_| podman)) {
            // Best effort: without it the host side is shown as unknown.
            n.engine_interface = client
                .podman_interface(&n.name, engine)
                .await
                .ok()
                .flatten();
        }
        if let Some(n) = found {
            nets.insert(key, n);
        }
    }
    Ok(diagnose_with(&info, &nets, engine.as_ref(), |path| {
        let netns = Netns::open(path).map_err(|e| e.to_string())?;
        let sock = netns.socket().map_err(|e| e.to_string())?;
        Ok(NetlinkKernel::new(sock))
    }))
}

/// Podman/netavark: every network with a gateway has its own default route
/// in main; say what the container's main table really holds.
fn explain_podman(
    info: &ContainerInfo,
    snap: Option<&Snapshot>,
    links: &BTreeMap<String, String>,
    groups: &[EqualDefaults],
) -> Explanation {
    let network_of = |ifname: &str| {
        info.attachments
            .iter()
            .find(|a| {
                a.mac
                    .as_ref()
                    .and_then(|m| links.get(m))
                    .map(String::as_str)
                    == Some(ifname)
            })
            .map_or_else(|| ifname.to_string(), |a| a.network.clone())
    };
    let mut choices = Vec::new();
    for family in [Family::V4, Family::V6] {
        let with_gw: Vec<&str> = info
            .attachments
            .iter()
            .filter(|a| match family {
                Family::V4 => a.gateway4.is_some(),
                Family::V6 => a.gateway6.is_some(),
            })
            .map(|a| a.network.as_str())
            .collect();
        if with_gw.is_empty() {
            continue;
        }
        let choice = if let Some(g) = groups.iter().find(|g| g.family == family) {
            let names: Vec<String> = g.via.iter().map(|(i, _)| network_of(i)).collect();
            DefaultChoice {
                family,
                network: names.join(", "),
                reason: format!(
                    "netavark gives every network with a gateway its own default route, all of equal metric {} here: the kernel uses the first whose gateway's neighbour (ARP) entry is not known to be dead, so the way out depends on ARP state",
                    g.metric
                ),
            }
        } else if let Some(r) = snap.and_then(|s| {
            s.main_defaults()
                .filter(|r| r.family() == family)
                .min_by_key(|r| r.metric)
                .map(|r| (s.link(r.oif).map(|l| l.name.clone()), r.metric))
        }) {
            let ifname = r.0.unwrap_or_default();
            DefaultChoice {
                family,
                network: network_of(&ifname),
                reason: if with_gw.len() > 1 {
                    format!(
                        "its default route has the lowest metric ({}) in main (netavark gives each network with a gateway one, metric 100 unless the network's `metric` option says otherwise)",
                        r.1
                    )
                } else {
                    format!("it is the only network with an {family} gateway")
                },
            }
        } else {
            DefaultChoice {
                family,
                network: with_gw.join(", "),
                reason: "netavark gives every network with a gateway its own default route (metric 100 unless set): equal metrics leave the choice to ARP state".to_string(),
            }
        };
        choices.push(choice);
    }
    Explanation {
        order: info.attachments.iter().map(|a| a.network.clone()).collect(),
        choices,
    }
}

/// Core's default-route sentence with every family that has equal-metric
/// defaults told as it is.
fn truthful_reason(core: &str, groups: &[EqualDefaults]) -> String {
    if groups.is_empty() {
        return core.to_string();
    }
    core.split("; ")
        .map(|part| {
            groups
                .iter()
                .find(|g| part.starts_with(&format!("{}:", g.family)))
                .map_or_else(|| part.to_string(), EqualDefaults::text)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The diagnosis from what the engine said (`engine`: which one, when
/// known), opening the namespace with `open`.
pub fn diagnose_with<K: Kernel>(
    info: &ContainerInfo,
    nets: &BTreeMap<String, NetworkInfo>,
    engine: Option<&EngineVersion>,
    open: impl FnOnce(&str) -> Result<K, String>,
) -> ContainerDiagnosis {
    let podman = engine.is_some_and(EngineVersion::is_podman);
    let mut note = None;
    let mut replies = None;
    let mut snapshot = None;
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    match (&info.mode, info.netns_path()) {
        (NetworkMode::Host, _) => {
            note = Some("network mode host: the host's own namespace, never touched".into());
        }
        (NetworkMode::None, _) => note = Some("network mode none".into()),
        (_, None) => note = Some("not running".into()),
        (mode, Some(path)) => {
            if let NetworkMode::Container(owner) = mode {
                note = Some(format!("shares the namespace of container {owner}"));
            }
            match open(&path) {
                Ok(mut k) => {
                    if let Ok(snap) = k.snapshot() {
                        for l in &snap.links {
                            if let Some(m) = &l.mac {
                                links.insert(m.clone(), l.name.clone());
                            }
                        }
                        snapshot = Some(snap);
                    }
                    let fix = format!("symroute apply --container {}", info.label());
                    match diagnose(&mut k, &fix) {
                        Ok(mut d) => {
                            // The engine knows the gateways: the fix needs no hints.
                            d.fix = d.fix.map(|_| fix.clone());
                            replies = Some(d);
                        }
                        Err(e) => note = Some(format!("reply paths: {e}")),
                    }
                }
                Err(e) => note = Some(format!("namespace {path}: {e}")),
            }
        }
    }
    let groups = snapshot.as_ref().map(equal_defaults).unwrap_or_default();
    let mut arp = Vec::new();
    if let Some(d) = replies.as_mut() {
        arp = arp_dependent(d, &groups);
        d.default_route_reason = truthful_reason(&d.default_route_reason, &groups);
        if !arp.is_empty() {
            d.fix = Some(format!("symroute apply --container {}", info.label()));
        }
    }
    let explanation = if podman {
        explain_podman(info, snapshot.as_ref(), &links, &groups)
    } else {
        explain(&info.attachments, nets)
    };
    let networks = info
        .attachments
        .iter()
        .map(|a| {
            let n = nets.get(&a.network_id).or_else(|| nets.get(&a.network));
            let host_if = n.and_then(|n| host_interface(n, podman));
            NetworkRow {
                network: a.network.clone(),
                driver: n.map(|n| n.driver.clone()).unwrap_or_default(),
                internal: n.is_some_and(|n| n.internal),
                interface: a.mac.as_ref().and_then(|m| links.get(m).cloned()),
                ipv4: a.ipv4,
                gateway4: a.gateway4,
                ipv6: a.ipv6,
                gateway6: a.gateway6,
                gw_priority: a.gw_priority,
                host_rp_filter: host_if.as_deref().and_then(rp_filter),
                host_interface: host_if,
            }
        })
        .collect::<Vec<_>>();
    let gw_net = explanation
        .choices
        .iter()
        .find(|c| c.family == Family::V4)
        .map(|c| c.network.clone());
    let reach_addr = gw_net.as_ref().and_then(|g| {
        info.attachments
            .iter()
            .find(|a| &a.network == g)
            .and_then(|a| a.ipv4.map(|n| (n.addr(), g.clone())))
    });
    let ports = info
        .ports
        .iter()
        .map(|p| {
            let port = p.container_port.split('/').next().unwrap_or("");
            PortRow {
                container_port: p.container_port.clone(),
                host: format!(
                    "{}:{}",
                    if p.host_ip.is_empty() {
                        "0.0.0.0"
                    } else {
                        &p.host_ip
                    },
                    p.host_port
                ),
                reaches: reach_addr
                    .as_ref()
                    .map(|(a, g)| format!("{a}:{port} on {g}")),
            }
        })
        .collect();
    let symmetric = replies.as_ref().is_none_or(|d| d.symmetric) && arp.is_empty();
    ContainerDiagnosis {
        id: info.id.clone(),
        name: info.label(),
        engine: engine.cloned(),
        networks,
        default_route: explanation,
        ports,
        replies,
        note,
        equal_defaults: groups,
        arp_dependent: arp,
        symmetric,
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

/// Human text for one container.
pub fn text(d: &ContainerDiagnosis) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "container {} ({})",
        d.name,
        d.id.chars().take(12).collect::<String>()
    );
    if let Some(e) = &d.engine {
        let _ = writeln!(
            out,
            "  engine: {} {} (API {})",
            e.name, e.version, e.api_version
        );
    }
    let mut rows = vec![vec![
        "NETWORK".to_string(),
        "DRIVER".into(),
        "INTERFACE".into(),
        "ADDRESS".into(),
        "GATEWAY".into(),
        "HOST SIDE".into(),
        "HOST RP_FILTER".into(),
    ]];
    for n in &d.networks {
        let addr = [n.ipv4.map(|a| a.to_string()), n.ipv6.map(|a| a.to_string())]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let gw = [
            n.gateway4.map(|a| a.to_string()),
            n.gateway6.map(|a| a.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        rows.push(vec![
            format!(
                "{}{}",
                n.network,
                if n.internal { " (internal)" } else { "" }
            ),
            n.driver.clone(),
            opt(&n.interface),
            if addr.is_empty() { "-".into() } else { addr },
            if gw.is_empty() { "-".into() } else { gw },
            opt(&n.host_interface),
            match n.host_rp_filter {
                Some(1) => "1 (strict)".into(),
                Some(2) => "2 (loose)".into(),
                Some(v) => v.to_string(),
                None => "-".into(),
            },
        ]);
    }
    for line in report::table(&rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
    for c in &d.default_route.choices {
        let _ = writeln!(
            out,
            "  default route ({}): {}, because {}",
            c.family, c.network, c.reason
        );
    }
    if d.default_route.choices.is_empty() {
        let _ = writeln!(out, "  default route: no network has a gateway");
    }
    for p in &d.ports {
        let _ = writeln!(
            out,
            "  published: {} -> {}{}",
            p.host,
            p.container_port,
            p.reaches
                .as_ref()
                .map(|r| format!(" (forwarded to {r})"))
                .unwrap_or_default()
        );
    }
    if let Some(n) = &d.note {
        let _ = writeln!(out, "  note: {n}");
    }
    if let Some(r) = &d.replies {
        for line in replies_text(d, r).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// Core's reply table and verdict, with the addresses that land on
/// equal-metric defaults marked as depending on ARP state (what the kernel
/// picks right now is no promise either way).
fn replies_text(d: &ContainerDiagnosis, r: &Diagnosis) -> String {
    let core = report::diagnose_text(r);
    if d.arp_dependent.is_empty() {
        return core;
    }
    let mut out = String::new();
    let mut fix_done = false;
    for line in core.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let dependent = words
            .get(1)
            .and_then(|w| w.parse::<IpAddr>().ok())
            .is_some_and(|a| d.arp_dependent.contains(&a));
        if dependent {
            let last = words.last().copied().unwrap_or("");
            let cut = line.len() - last.len();
            let _ = writeln!(out, "{}depends on ARP state (now {last})", &line[..cut]);
        } else if line.starts_with("verdict:") {
            let total = r.addresses.len();
            let n = d.arp_dependent.len();
            let certain = r
                .addresses
                .iter()
                .filter(|a| {
                    !d.arp_dependent.contains(&a.address)
                        && a.verdict != symroute_core::diagnose::Verdict::Symmetric
                })
                .count();
            let mut parts = vec![format!(
                "{n} of {total} address(es) reply through whichever equal-metric default the kernel prefers by ARP state: symmetric only while it happens to be their own interface's, a failure that comes and goes"
            )];
            if certain > 0 {
                parts.push(format!(
                    "{certain} of {total} reply through another interface (or have no way) whatever ARP says"
                ));
            }
            let _ = writeln!(out, "verdict: DEPENDS ON ARP STATE: {}", parts.join("; "));
            let _ = writeln!(out, "fix: symroute apply --container {}", d.name);
            fix_done = true;
        } else if line.starts_with("fix:") && fix_done {
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}
