//! Docker-aware diagnosis: a container's networks, why its default route is
//! where it is, where its published ports lead, the reply path of each
//! address (the core diagnosis), and the host's reverse-path filter on the
//! interfaces those networks cross.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::client::{DockerError, NetworkInfo};
use crate::engine_api::EngineApi;
use crate::explain::{Explanation, explain, host_interface};
use crate::model::{ContainerInfo, NetworkMode};
use symroute_core::diagnose::{Diagnosis, diagnose};
use symroute_core::kernel::Kernel;
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
    pub networks: Vec<NetworkRow>,
    pub default_route: Explanation,
    pub ports: Vec<PortRow>,
    /// The core diagnosis of the container's namespace.
    pub replies: Option<Diagnosis>,
    /// Why there is no reply diagnosis (host network, not running, ...).
    pub note: Option<String>,
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
    let mut nets: BTreeMap<String, NetworkInfo> = BTreeMap::new();
    for a in &info.attachments {
        let key = if a.network_id.is_empty() {
            a.network.clone()
        } else {
            a.network_id.clone()
        };
        match client.network(&key).await {
            Ok(n) => {
                nets.insert(key, n);
            }
            Err(DockerError::NoSuchNetwork(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(diagnose_with(&info, &nets, |path| {
        let netns = Netns::open(path).map_err(|e| e.to_string())?;
        let sock = netns.socket().map_err(|e| e.to_string())?;
        Ok(NetlinkKernel::new(sock))
    }))
}

/// The diagnosis from what Docker said, opening the namespace with `open`.
pub fn diagnose_with<K: Kernel>(
    info: &ContainerInfo,
    nets: &BTreeMap<String, NetworkInfo>,
    open: impl FnOnce(&str) -> Result<K, String>,
) -> ContainerDiagnosis {
    let explanation = explain(&info.attachments, nets);
    let mut note = None;
    let mut replies = None;
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    match (&info.mode, info.netns_path()) {
        (NetworkMode::Host, _) => {
            note = Some("network mode host: the host's own namespace, never touched".into())
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
                    }
                    let fix = format!("symroute apply --container {}", info.label());
                    match diagnose(&mut k, &fix) {
                        Ok(mut d) => {
                            // Docker knows the gateways: the fix needs no hints.
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
    let networks = info
        .attachments
        .iter()
        .map(|a| {
            let n = nets.get(&a.network_id).or_else(|| nets.get(&a.network));
            let host_if = n.and_then(host_interface);
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
        .find(|c| c.family == symroute_core::model::Family::V4)
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
    let symmetric = replies.as_ref().is_none_or(|d| d.symmetric);
    ContainerDiagnosis {
        id: info.id.clone(),
        name: info.label(),
        networks,
        default_route: explanation,
        ports,
        replies,
        note,
        symmetric,
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
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
        for line in report::diagnose_text(r).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
