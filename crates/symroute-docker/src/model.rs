//! What symroute needs to know about a Docker container, converted from the
//! Engine API's inspect answer, and the pure decisions made from it: whether
//! to manage it, and the gateways of its interfaces (matched by MAC address,
//! never by ethN order).

use std::collections::BTreeMap;
use std::net::IpAddr;

use bollard::models::{ContainerInspectResponse, EndpointSettings};
use ipnet::IpNet;
use serde::Serialize;

use symroute_core::model::Snapshot;
use symroute_core::plan::{GatewayHint, PlanRequest, Selection};

/// Label that opts a container out (`false`) or in (`true`, with --require-label).
pub const ENABLE_LABEL: &str = "symroute.enable";

/// One network a container is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub network: String,
    pub network_id: String,
    /// "02:42:ac:12:00:02", lower case.
    pub mac: Option<String>,
    pub ipv4: Option<IpNet>,
    pub gateway4: Option<IpAddr>,
    pub ipv6: Option<IpNet>,
    pub gateway6: Option<IpAddr>,
    /// Docker 28+ `gw-priority` (API 1.48); 0 when absent.
    pub gw_priority: i64,
}

/// `HostConfig.NetworkMode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// bridge, a user network, default.
    Own(String),
    Host,
    None,
    /// Shares the namespace of another container.
    Container(String),
}

impl NetworkMode {
    pub fn parse(s: &str) -> NetworkMode {
        match s {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => match other.strip_prefix("container:") {
                Some(id) => NetworkMode::Container(id.to_string()),
                None => NetworkMode::Own(other.to_string()),
            },
        }
    }
}

/// A published port: `host_ip:host_port -> container_port/proto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedPort {
    pub container_port: String,
    pub host_ip: String,
    pub host_port: String,
}

/// A container as symroute sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    /// Without the leading slash.
    pub name: String,
    pub running: bool,
    /// The container's init process, when running.
    pub pid: Option<u32>,
    pub sandbox_key: Option<String>,
    pub mode: NetworkMode,
    pub labels: BTreeMap<String, String>,
    pub attachments: Vec<Attachment>,
    pub ports: Vec<PublishedPort>,
}

/// What the Engine API sent could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {id}: {message}")]
pub struct InspectError {
    pub id: String,
    pub message: String,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn parse_net(
    id: &str,
    addr: Option<&str>,
    len: Option<i64>,
) -> Result<Option<IpNet>, InspectError> {
    let Some(addr) = addr else { return Ok(None) };
    let ip: IpAddr = addr.parse().map_err(|_| InspectError {
        id: id.to_string(),
        message: format!("address {addr:?} is not an IP address"),
    })?;
    let len = len.unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
    let len = u8::try_from(len)
        .ok()
        .filter(|l| *l <= if ip.is_ipv4() { 32 } else { 128 });
    let len = len.ok_or_else(|| InspectError {
        id: id.to_string(),
        message: format!("address {addr}: bad prefix length"),
    })?;
    Ok(IpNet::new(ip, len).ok())
}

fn parse_ip(id: &str, s: Option<&str>) -> Result<Option<IpAddr>, InspectError> {
    s.map(|g| {
        g.parse().map_err(|_| InspectError {
            id: id.to_string(),
            message: format!("gateway {g:?} is not an IP address"),
        })
    })
    .transpose()
}

fn attachment(id: &str, network: &str, e: &EndpointSettings) -> Result<Attachment, InspectError> {
    Ok(Attachment {
        network: network.to_string(),
        network_id: e.network_id.clone().unwrap_or_default(),
        mac: nonempty(&e.mac_address).map(str::to_ascii_lowercase),
        ipv4: parse_net(id, nonempty(&e.ip_address), e.ip_prefix_len)?,
        gateway4: parse_ip(id, nonempty(&e.gateway))?,
        ipv6: parse_net(
            id,
            nonempty(&e.global_ipv6_address),
            e.global_ipv6_prefix_len,
        )?,
        gateway6: parse_ip(id, nonempty(&e.ipv6_gateway))?,
        gw_priority: e.gw_priority.unwrap_or(0),
    })
}

impl ContainerInfo {
    /// Convert an inspect answer. Odd data (a malformed address) is an
    /// error naming the container, not a panic.
    pub fn from_inspect(c: &ContainerInspectResponse) -> Result<ContainerInfo, InspectError> {
        let id = c.id.clone().unwrap_or_default();
        if id.is_empty() {
            return Err(InspectError {
                id: "(no id)".into(),
                message: "inspect answer has no Id".into(),
            });
        }
        let state = c.state.as_ref();
        let running = state.and_then(|s| s.running).unwrap_or(false);
        let pid = state
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        let mode = c
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone())
            .map_or(NetworkMode::Own("default".into()), |m| {
                NetworkMode::parse(&m)
            });
        let labels = c
            .config
            .as_ref()
            .and_then(|cfg| cfg.labels.clone())
            .map(|l| l.into_iter().collect())
            .unwrap_or_default();
        let settings = c.network_settings.as_ref();
        let mut attachments = Vec::new();
        if let Some(nets) = settings.and_then(|s| s.networks.as_ref()) {
            let mut names: Vec<&String> = nets.keys().collect();
            names.sort();
            for name in names {
                attachments.push(attachment(&id, name, &nets[name])?);
            }
        }
        let mut ports = Vec::new();
        if let Some(map) = settings.and_then(|s| s.ports.as_ref()) {
            for (cport, bindings) in map {
                for b in bindings.iter().flatten() {
                    ports.push(PublishedPort {
                        container_port: cport.clone(),
                        host_ip: b.host_ip.clone().unwrap_or_default(),
                        host_port: b.host_port.clone().unwrap_or_default(),
                    });
                }
            }
            ports.sort_by(|a, b| {
                (&a.container_port, &a.host_ip, &a.host_port).cmp(&(
                    &b.container_port,
                    &b.host_ip,
                    &b.host_port,
                ))
            });
        }
        Ok(ContainerInfo {
            name: c
                .name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            id,
            running,
            pid,
            sandbox_key: nonempty(&settings.and_then(|s| s.sandbox_key.clone()))
                .map(str::to_string),
            mode,
            labels,
            attachments,
            ports,
        })
    }

    /// Convert libpod's inspect answer (`GET /v{version}/libpod/containers/{id}/json`:
    /// Podman's own, which it answers in half the time of the Engine-compatible one).
    /// The parts symroute reads have the Engine API's shape there (`Id`, `Name`,
    /// `State.Running`, `State.Pid`, `HostConfig.NetworkMode`, `Config.Labels`,
    /// `NetworkSettings`'s `SandboxKey`, `Networks` and `Ports`), so only those
    /// are taken and converted as [`ContainerInfo::from_inspect`] does; the rest
    /// (whose types differ from Docker's) is never parsed.
    pub fn from_libpod_inspect(v: &serde_json::Value) -> Result<ContainerInfo, InspectError> {
        let id = v
            .get("Id")
            .and_then(|i| i.as_str())
            .unwrap_or("(no id)")
            .to_string();
        let pick = |path: &[&str]| -> serde_json::Value {
            path.iter()
                .try_fold(v, |at, k| at.get(k))
                .cloned()
                .unwrap_or(serde_json::Value::Null)
        };
        let net = pick(&["NetworkSettings"]);
        let shaped = serde_json::json!({
            "Id": pick(&["Id"]),
            "Name": pick(&["Name"]),
            "State": {"Running": pick(&["State", "Running"]), "Pid": pick(&["State", "Pid"])},
            "HostConfig": {"NetworkMode": pick(&["HostConfig", "NetworkMode"])},
            "Config": {"Labels": pick(&["Config", "Labels"])},
            "NetworkSettings": {
                "SandboxKey": net.get("SandboxKey").cloned().unwrap_or_default(),
                "Networks": net.get("Networks").cloned().unwrap_or_default(),
                "Ports": net.get("Ports").cloned().unwrap_or_default(),
            },
        });
        let raw: ContainerInspectResponse =
            serde_json::from_value(shaped).map_err(|e| InspectError {
                id: id.clone(),
                message: format!("libpod's inspect answer: {e}"),
            })?;
        ContainerInfo::from_inspect(&raw)
    }

    /// The short name used in logs: name, else the id's first 12 characters.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            self.id.chars().take(12).collect()
        } else {
            self.name.clone()
        }
    }

    /// The network namespace file of the running container.
    pub fn netns_path(&self) -> Option<String> {
        self.pid.map(|p| format!("/proc/{p}/ns/net"))
    }

    /// Where the container's network namespace can be opened, best first:
    /// its init process's `/proc/PID/ns/net` (always right for a running
    /// container), then the engine's `SandboxKey` (Docker's
    /// `/var/run/docker/netns/…`, Podman's `/run/netns/netns-…`), which
    /// outlives a process that is being replaced.
    pub fn netns_paths(&self) -> Vec<String> {
        self.netns_path()
            .into_iter()
            .chain(self.sandbox_key.clone())
            .collect()
    }
}

/// Whether the daemon manages a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "reason", rename_all = "kebab-case")]
pub enum Decision {
    Manage,
    Skip(String),
}

/// The daemon's policy: running, its own namespace, not opted out.
pub fn decide(c: &ContainerInfo, require_label: bool) -> Decision {
    let label = c.labels.get(ENABLE_LABEL).map(|v| v.to_ascii_lowercase());
    if !c.running || c.pid.is_none() {
        return Decision::Skip("not running".into());
    }
    match &c.mode {
        NetworkMode::Host => {
            return Decision::Skip(
                "network mode host: the host's namespace is never touched".into(),
            );
        }
        NetworkMode::None => return Decision::Skip("network mode none".into()),
        NetworkMode::Container(owner) => {
            return Decision::Skip(format!(
                "shares the namespace of container {owner}, which is handled once, as that container"
            ));
        }
        NetworkMode::Own(_) => {}
    }
    match label.as_deref() {
        Some("false" | "0" | "no") => Decision::Skip(format!("label {ENABLE_LABEL}=false")),
        Some("true" | "1" | "yes") => Decision::Manage,
        _ if require_label => {
            Decision::Skip(format!("--require-label and no label {ENABLE_LABEL}=true"))
        }
        _ => Decision::Manage,
    }
}

/// The plan request for a container: every attachment's gateways, named by
/// the interface whose MAC address matches. Attachments whose interface is
/// not found are returned as warnings.
pub fn plan_request(c: &ContainerInfo, snap: &Snapshot) -> (PlanRequest, Vec<String>) {
    let mut gateways = Vec::new();
    let mut warnings = Vec::new();
    for a in &c.attachments {
        let link = a.mac.as_ref().and_then(|m| {
            snap.links
                .iter()
                .find(|l| l.mac.as_deref() == Some(m.as_str()))
        });
        let Some(link) = link else {
            if a.ipv4.is_some() || a.ipv6.is_some() {
                warnings.push(format!(
                    "network {}: no interface with MAC {} in the container",
                    a.network,
                    a.mac.as_deref().unwrap_or("(none)")
                ));
            }
            continue;
        };
        for gw in [a.gateway4, a.gateway6].into_iter().flatten() {
            // Only a gateway the interface can reach (the core's one on-link
            // rule); Docker reports the network's gateway even for an
            // address it did not assign.
            if symroute_core::request::on_link(link, &gw) {
                gateways.push(GatewayHint {
                    ifname: link.name.clone(),
                    gateway: gw,
                });
            } else {
                warnings.push(format!(
                    "network {}: gateway {gw} is not on {}'s prefixes; not used",
                    a.network, link.name
                ));
            }
        }
    }
    (
        PlanRequest {
            gateways,
            selection: Selection::MultiHomed,
            routes: Vec::new(),
        },
        warnings,
    )
}
