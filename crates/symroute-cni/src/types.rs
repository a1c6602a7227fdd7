//! The CNI wire format: the network configuration a runtime writes on the
//! plugin's standard input (with its `prevResult`, `runtimeConfig` and GC's
//! `cni.dev/valid-attachments`), and a typed view of `prevResult`.
//!
//! Every object keeps the keys symroute does not know in a flattened `extra`
//! map, so a configuration decodes and encodes back with nothing lost. The
//! `prevResult` is kept as the original JSON value too: ADD prints it back
//! exactly as received, and [`PrevResult`] is only a view of it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{CniError, code};
use symroute_core::model::{Family, Protocol};
use symroute_core::settings::{ConfigFile, Settings};

/// Spec versions symroute speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest spec version, used when a request does not say.
pub const LATEST_VERSION: &str = "1.1.0";

/// `(major, minor, patch)` of a spec version string, when it is one.
pub fn version_tuple(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

/// A plugin's network configuration, as the runtime sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub plugin_type: Option<String>,

    /// sbr's `table`: the one table every rule of the interface points at;
    /// symroute then adds the rules only (the IPAM or the main plugin fills
    /// the table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// sbr's `gateways`: default gateways, at most one per address family;
    /// they win over the IPAM's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Vec<IpAddr>>,

    /// symroute's table band, "START-END" (default 10000-10999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_band: Option<String>,
    /// Priority of symroute's rules (default 3000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Protocol tag of symroute's rules and routes (default 115).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    /// Where symroute records what it did per attachment (for DEL without
    /// prevResult, and GC). Default /run/symroute/cni.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Append logs here instead of standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// Seconds to wait for tentative (DAD) IPv6 addresses (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dad_wait: Option<f64>,
    /// Seconds to wait for the namespace's lock before answering "try again"
    /// (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_timeout: Option<f64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<RuntimeConfig>,
    /// The previous plugin's result, untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    /// GC (1.1.0): the attachments the runtime still has on this network.
    #[serde(
        rename = "cni.dev/valid-attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Vec<Attachment>>,

    /// Every other key, kept as it came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `runtimeConfig`: symroute uses none of its keys, and keeps them all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The namespace path for interfaces inside the container; empty or
    /// absent for host-side interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An IP configuration of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6": present in 0.3.x and 0.4.0 results only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with its prefix length (host bits kept: 10.1.2.3/24).
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into the result's `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// 1.1.0: the table the main plugin put the route in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The typed view of a `prevResult` (0.3.x, 0.4.0, 1.0.0 and 1.1.0 forms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrevResult {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cni_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteEntry>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn serde_error(what: &str, e: &serde_json::Error) -> CniError {
    use serde_json::error::Category;
    let c = match e.classify() {
        Category::Syntax | Category::Eof => code::DECODE,
        Category::Io => code::IO,
        Category::Data => code::INVALID_CONFIG,
    };
    let msg = if c == code::DECODE {
        format!("{what}: not valid JSON")
    } else {
        format!("{what}: invalid")
    };
    CniError::with_details(c, msg, e.to_string())
}

/// Decode the standard input of ADD, DEL, CHECK, GC and STATUS.
/// Not JSON: code 6; JSON of the wrong shape: code 7; a `cniVersion`
/// symroute does not speak: code 1.
pub fn decode_config(bytes: &[u8]) -> Result<NetConf, CniError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| serde_error("network configuration", &e))?;
    if !value.is_object() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "network configuration: expected a JSON object",
        ));
    }
    let conf: NetConf =
        serde_json::from_value(value).map_err(|e| serde_error("network configuration", &e))?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::with_details(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {:?} is not supported",
                conf.cni_version.as_str()
            ),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    Ok(conf)
}

/// The `cniVersion` of a standard input that may not decode, for the error
/// answer: the request's version when it has one, else the latest.
pub fn request_version(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST_VERSION.to_string())
}

impl PrevResult {
    /// Decode and check a `prevResult` sent with a configuration of
    /// `cni_version`. Errors are code 7, naming the field.
    pub fn from_value(value: &Value, cni_version: &str) -> Result<PrevResult, CniError> {
        if !value.is_object() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "prevResult: expected a JSON object",
            ));
        }
        let prev: PrevResult =
            serde_json::from_value(value.clone()).map_err(|e| serde_error("prevResult", &e))?;
        let old = version_tuple(cni_version).is_some_and(|v| v < (1, 0, 0));
        for (i, ip) in prev.ips.iter().enumerate() {
            let family = Family::of(&ip.address.addr());
            match (&ip.version, old) {
                (Some(v), _) => {
                    let want = if family == Family::V4 { "4" } else { "6" };
                    if v != want {
                        return Err(CniError::new(
                            code::INVALID_CONFIG,
                            format!(
                                "prevResult.ips[{i}]: version {v:?} does not match address {}",
                                ip.address
                            ),
                        ));
                    }
                }
                (None, true) => {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        format!(
                            "prevResult.ips[{i}]: a cniVersion {cni_version} result needs \"version\" (\"4\" or \"6\")"
                        ),
                    ));
                }
                (None, false) => {}
            }
            if let Some(gw) = ip.gateway
                && Family::of(&gw) != family
            {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "prevResult.ips[{i}]: gateway {gw} is not of the same family as {}",
                        ip.address
                    ),
                ));
            }
            if let Some(idx) = ip.interface
                && (idx < 0 || idx as u64 >= prev.interfaces.len() as u64)
            {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "prevResult.ips[{i}]: interface {idx} is not an index of prevResult.interfaces ({} entries)",
                        prev.interfaces.len()
                    ),
                ));
            }
        }
        for (i, r) in prev.routes.iter().enumerate() {
            if let Some(gw) = r.gw
                && Family::of(&gw) != Family::of(&r.dst.addr())
            {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "prevResult.routes[{i}]: gateway {gw} is not of the same family as {}",
                        r.dst
                    ),
                ));
            }
        }
        Ok(prev)
    }

    /// The IPs of interface `ifname` in namespace `netns`: those whose
    /// `interface` index names it (a container-side interface: sandbox set,
    /// and equal to `netns` when both are known), and those with no index
    /// (sbr's rule: an IP without an interface belongs to CNI_IFNAME).
    pub fn ips_for(&self, ifname: &str, netns: Option<&str>) -> Vec<&IpConfig> {
        self.ips
            .iter()
            .filter(|ip| match ip.interface {
                None => true,
                Some(idx) => usize::try_from(idx)
                    .ok()
                    .and_then(|i| self.interfaces.get(i))
                    .is_some_and(|iface| {
                        iface.name == ifname
                            && match (iface.sandbox.as_deref(), netns) {
                                (None | Some(""), _) => false,
                                (Some(s), Some(n)) => s == n,
                                (Some(_), None) => true,
                            }
                    }),
            })
            .collect()
    }
}

/// What the configuration asks of symroute, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub settings: Settings,
    /// sbr's `table`.
    pub table: Option<u32>,
    /// sbr's `gateways`, at most one per family.
    pub gateways: BTreeMap<Family, IpAddr>,
    pub data_dir: PathBuf,
    pub dad_wait: std::time::Duration,
    pub lock_timeout: std::time::Duration,
}

/// Where state goes when the configuration does not say: a tmpfs, since
/// what it describes (network namespaces) is gone after a reboot too.
pub const DEFAULT_DATA_DIR: &str = "/run/symroute/cni";

/// The CNI plugin's own tag, apart from the host writer's (the CLI and the
/// daemon, 115): the two writer classes never delete each other's objects
/// (docs/cni.md, "Two tags"). A configuration's `protocol` key overrides it.
pub const DEFAULT_PROTOCOL: Protocol = Protocol::CNI;

fn seconds(key: &str, v: Option<f64>, default: f64) -> Result<std::time::Duration, CniError> {
    let s = v.unwrap_or(default);
    if !(0.0..=600.0).contains(&s) {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("{key} {s}: expected 0 to 600 seconds"),
        ));
    }
    Ok(std::time::Duration::from_secs_f64(s))
}

/// A network name as the spec allows it: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl NetConf {
    /// Check symroute's and sbr's keys. Errors are code 7.
    pub fn options(&self) -> Result<Options, CniError> {
        let invalid = |m: String| CniError::new(code::INVALID_CONFIG, m);
        if let Some(name) = &self.name
            && !valid_name(name)
        {
            return Err(invalid(format!(
                "name {name:?}: expected letters, digits, '_', '.' and '-', starting with a letter or digit"
            )));
        }
        let mut settings = Settings {
            protocol: DEFAULT_PROTOCOL,
            ..Settings::default()
        };
        settings
            .overlay(&ConfigFile {
                table_band: self.table_band.clone(),
                priority: self.priority,
                protocol: self.protocol,
            })
            .and_then(|()| settings.validate())
            .map_err(|e| invalid(format!("tableBand/priority/protocol: {e}")))?;
        if let Some(t) = self.table
            && (t == 0 || (252..=255).contains(&t))
        {
            return Err(invalid(format!(
                "table {t}: reserved (0, 252 compat, 253 default, 254 main, 255 local)"
            )));
        }
        let mut gateways = BTreeMap::new();
        for gw in self.gateways.iter().flatten() {
            let family = Family::of(gw);
            if gw.is_unspecified() || gw.is_multicast() || gw.is_loopback() {
                return Err(invalid(format!("gateways: {gw} cannot be a gateway")));
            }
            if let Some(first) = gateways.insert(family, *gw) {
                return Err(invalid(format!(
                    "gateways: two {family} gateways ({first} and {gw}): give at most one per address family"
                )));
            }
        }
        if let Some(dir) = &self.data_dir
            && !dir.is_absolute()
        {
            return Err(invalid(format!(
                "dataDir {}: expected an absolute path (a relative one would depend on the runtime's working folder)",
                dir.display()
            )));
        }
        Ok(Options {
            settings,
            table: self.table,
            gateways,
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            dad_wait: seconds("dadWait", self.dad_wait, 3.0)?,
            lock_timeout: seconds("lockTimeout", self.lock_timeout, 10.0)?,
        })
    }

    /// The typed `prevResult`, when there is one.
    pub fn prev(&self) -> Result<Option<PrevResult>, CniError> {
        self.prev_result
            .as_ref()
            .map(|v| PrevResult::from_value(v, &self.cni_version))
            .transpose()
    }
}

/// Everything a request's standard input decodes to: the configuration,
/// its checked options and the typed prevResult. The fuzz target's entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub conf: NetConf,
    pub options: Options,
    pub prev: Option<PrevResult>,
}

/// Decode and check a standard input completely.
pub fn decode(bytes: &[u8]) -> Result<Decoded, CniError> {
    let conf = decode_config(bytes)?;
    let options = conf.options()?;
    let prev = conf.prev()?;
    Ok(Decoded {
        conf,
        options,
        prev,
    })
}
