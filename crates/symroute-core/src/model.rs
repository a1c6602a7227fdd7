//! The vocabulary shared by the planner, the kernel adapter and the reports:
//! what a namespace has (a [`Snapshot`]) and the rules and routes symroute
//! wants in it. Plain data, no I/O.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `-4` / `-6` as iproute2 spells it.
    pub fn ip_flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }

    /// 0.0.0.0 or ::.
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        }
    }

    pub fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An address assigned to an interface, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IfAddr {
    /// The address with its prefix length (e.g. 172.18.0.2/16).
    pub net: IpNet,
    /// Scope universe (global); link and host scoped addresses are not.
    pub global: bool,
    /// IPv6 duplicate address detection still running.
    pub tentative: bool,
    /// IPv6 duplicate address detection failed: the address is unusable.
    pub dad_failed: bool,
}

impl IfAddr {
    pub fn addr(&self) -> IpAddr {
        self.net.addr()
    }
    pub fn family(&self) -> Family {
        Family::of(&self.net.addr())
    }
}

/// A network interface and its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Hardware address, "aa:bb:cc:dd:ee:ff", when the link has one.
    pub mac: Option<String>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub loopback: bool,
    pub addrs: Vec<IfAddr>,
}

impl Link {
    /// Global addresses usable as reply sources (not DAD-failed).
    pub fn global_addrs(&self) -> impl Iterator<Item = &IfAddr> {
        self.addrs.iter().filter(|a| a.global && !a.dad_failed)
    }
}

/// A policy rule, reduced to what symroute looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    pub family: Family,
    pub priority: u32,
    /// `from` selector; None is `from all`.
    pub src: Option<IpNet>,
    /// The lookup table; 0 when the rule has another action.
    pub table: u32,
    /// FRA_PROTOCOL: who made it.
    pub protocol: u8,
    /// The rule has selectors or an action symroute never creates
    /// (iif, oif, fwmark, dst, goto, suppress, ...). Such rules are never ours.
    pub other_selectors: bool,
}

/// Route scope, reduced to the two symroute creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Universe,
    Link,
    /// Host or other scopes: never created by symroute.
    Other,
}

/// Route type, reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    Unicast,
    /// local, broadcast, unreachable, blackhole, ...: never created by symroute.
    Other,
}

/// One next hop of a multipath route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NextHop {
    pub oif: u32,
    pub gateway: Option<IpAddr>,
}

/// A route, reduced to what symroute looks at and creates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Route {
    pub table: u32,
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    /// Output interface index (0 when none, e.g. multipath).
    pub oif: u32,
    pub prefsrc: Option<IpAddr>,
    pub scope: Scope,
    pub kind: RouteKind,
    /// RTA_PRIORITY. IPv6 routes added with 0 read back as 1024, so symroute
    /// always sets it explicitly: 0 for IPv4, 1024 for IPv6.
    pub metric: u32,
    /// RTNH_F_ONLINK: the gateway is reachable on the link without a prefix route.
    pub onlink: bool,
    pub protocol: u8,
    /// Next hops of a multipath route (empty otherwise).
    pub multipath: Vec<NextHop>,
}

impl Route {
    pub fn family(&self) -> Family {
        Family::of(&self.dst.addr())
    }

    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }

    /// The kernel's identity of a route within its table (table, prefix,
    /// tos, metric): two routes with the same key cannot coexist.
    pub fn key(&self) -> (u32, IpNet, u32) {
        (self.table, self.dst, self.metric)
    }
}

/// What symroute reads from a namespace before planning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub links: Vec<Link>,
    /// Every rule, of every protocol.
    pub rules: Vec<Rule>,
    /// Every route of every table except `local` (255).
    pub routes: Vec<Route>,
}

impl Snapshot {
    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }
    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
    pub fn tagged_rules(&self, protocol: u8) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.protocol == protocol)
    }
    pub fn tagged_routes(&self, protocol: u8) -> impl Iterator<Item = &Route> {
        self.routes.iter().filter(move |r| r.protocol == protocol)
    }
}

/// An IPv6 link-local address (fe80::/10): on-link on any interface.
pub fn is_link_local_v6(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

pub const RT_TABLE_MAIN: u32 = 254;
pub const RT_TABLE_LOCAL: u32 = 255;

/// Reformat a MAC for display.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
