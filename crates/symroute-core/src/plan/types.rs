//! What a caller asks the planner for and what it gets: the request
//! (gateways, selection, extra routes), the plan, and why a plan fails.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::model::{Family, ReservedTable, Route, RouteType, Rule};

/// A gateway the caller names for an interface (`eth1=172.18.0.1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayHint {
    pub ifname: String,
    pub gateway: IpAddr,
}

impl std::str::FromStr for GatewayHint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ifname, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("gateway {s:?}: expected IFNAME=ADDRESS"))?;
        if ifname.is_empty() {
            return Err(format!("gateway {s:?}: empty interface name"));
        }
        let gateway = addr
            .parse()
            .map_err(|_| format!("gateway {s:?}: {addr:?} is not an IP address"))?;
        Ok(GatewayHint {
            ifname: ifname.to_string(),
            gateway,
        })
    }
}

/// Which interfaces to manage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Selection {
    /// Every interface with a global address, when there are two or more.
    #[default]
    MultiHomed,
    /// Every interface with a global address, even a single one.
    All,
    /// One interface only, whatever the others have (a CNI attachment). The
    /// plan and the diff then cover only what belongs to that interface.
    Only(OnlyInterface),
}

/// The interface of [`Selection::Only`] and how to treat it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnlyInterface {
    pub ifname: String,
    /// A table the caller fixes (CNI sbr's `table`); None picks one from the band.
    pub table: Option<u32>,
    /// Add the rules only, no routes: the caller fills the table (sbr's `table`
    /// semantics).
    pub rules_only: bool,
}

/// A route the caller wants in an interface's table besides the connected
/// and default ones (CNI prevResult routes through that interface).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteHint {
    pub ifname: String,
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
}

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    pub gateways: Vec<GatewayHint>,
    pub selection: Selection,
    pub routes: Vec<RouteHint>,
}

/// Where a gateway came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewaySource {
    /// Named by the caller (`--gateway`, Docker, CNI).
    Given,
    /// The namespace's own default route in main on that interface.
    MainTable,
    /// A default route symroute put in the interface's table earlier.
    Kept,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayChoice {
    pub family: Family,
    pub gateway: IpAddr,
    pub source: GatewaySource,
    pub onlink: bool,
}

/// The plan for one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfacePlan {
    pub index: u32,
    pub name: String,
    pub mac: Option<String>,
    pub up: bool,
    pub table: u32,
    pub addrs: Vec<IpNet>,
    pub gateways: Vec<GatewayChoice>,
    /// Families with addresses but no known gateway.
    pub no_gateway: Vec<Family>,
    pub tentative: Vec<IpAddr>,
    pub notes: Vec<String>,
}

/// An interface the plan leaves alone because another writer manages its
/// addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub name: String,
    pub index: u32,
    /// The other writer's rule from one of its addresses.
    pub rule: Rule,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is managed by another writer (rule {}): left alone",
            self.name,
            crate::render::rule_show(&self.rule)
        )
    }
}

/// Desired state of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Interfaces symroute manages; empty when the namespace is not managed.
    pub interfaces: Vec<InterfacePlan>,
    /// Interfaces whose addresses another writer already routes (a `from
    /// ADDR` rule of another protocol looking up a table other than main,
    /// local or default): not planned, nothing of them touched.
    pub skipped: Vec<Skipped>,
    /// Why nothing is managed, when nothing is.
    pub unmanaged_reason: Option<String>,
    pub rules: Vec<Rule>,
    pub routes: Vec<Route>,
}

/// Why a plan cannot be made. The texts name the interface, gateway and
/// table, never a command-line flag or configuration key: each edge (CLI,
/// CNI, Docker) adds its own hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("gateway {gateway} for {ifname}: no interface {ifname} in this namespace")]
    UnknownInterface { ifname: String, gateway: IpAddr },
    #[error("gateway {gateway} for {ifname}: {ifname} has no global {family} address")]
    WrongFamily {
        ifname: String,
        gateway: IpAddr,
        family: Family,
    },
    #[error(
        "gateway {gateway} for {ifname}: {gateway} is outside {ifname}'s prefixes ({prefixes})"
    )]
    OffLink {
        ifname: String,
        gateway: IpAddr,
        prefixes: String,
    },
    #[error("gateway {gateway} for {ifname}: {gateway} is {ifname}'s own address")]
    OwnAddress { ifname: String, gateway: IpAddr },
    /// An IPv4 gateway that is the network or broadcast address of the
    /// link's prefix (prefixes shorter than /31 only: /31 and /32 have
    /// neither).
    #[error(
        "gateway {gateway} for {ifname}: {gateway} is the {which} address of {prefix}, not a host on it"
    )]
    NetworkOrBroadcast {
        ifname: String,
        gateway: IpAddr,
        prefix: IpNet,
        /// "network" or "broadcast".
        which: &'static str,
    },
    #[error("{ifname}: two {family} gateways given ({first} and {second})")]
    Duplicate {
        ifname: String,
        family: Family,
        first: IpAddr,
        second: IpAddr,
    },
    #[error("no interface {ifname} in this namespace")]
    NoSuchInterface { ifname: String },
    #[error("{ifname} has no global address to route from")]
    NoAddress { ifname: String },
    #[error("route {dst} via {gateway} on {ifname}: the gateway is not on {ifname}'s prefixes")]
    RouteOffLink {
        ifname: String,
        dst: IpNet,
        gateway: IpAddr,
    },
    #[error("route {dst} via {gateway} on {ifname}: {gateway} is the {which} address of {prefix}")]
    RouteNetworkOrBroadcast {
        ifname: String,
        dst: IpNet,
        gateway: IpAddr,
        prefix: IpNet,
        which: &'static str,
    },
    #[error("no free routing table left in the band {min}-{max} for {ifname}")]
    TablesExhausted { ifname: String, min: u32, max: u32 },
    /// The caller named a table that belongs to the kernel.
    #[error("{ifname}: {source}")]
    ReservedTable {
        ifname: String,
        #[source]
        source: ReservedTable,
    },
    #[error(
        "route {dst} metric {metric} in table {table} already exists with protocol {protocol}: it is not symroute's, so symroute will not replace it"
    )]
    ForeignConflict {
        table: u32,
        dst: IpNet,
        metric: u32,
        protocol: u8,
    },
    /// A route with symroute's tag that symroute cannot manage (e.g. a
    /// blackhole) holds the key a wanted route needs.
    #[error(
        "route {dst} metric {metric} in table {table} already exists as a {kind} route with symroute's tag, which symroute never writes: it is left alone, so symroute will not add its own"
    )]
    FindingConflict {
        table: u32,
        dst: IpNet,
        metric: u32,
        kind: RouteType,
    },
}
