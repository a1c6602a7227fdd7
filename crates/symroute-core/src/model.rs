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

/// A route's type (`rtm_type`), kept as the kernel's number so no type is
/// lost: unicast is what symroute creates; blackhole, unreachable, local,
/// ... are told apart by number (`RTN_*` in `include/uapi/linux/rtnetlink.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RouteType(pub u8);

impl RouteType {
    pub const UNSPEC: RouteType = RouteType(0);
    pub const UNICAST: RouteType = RouteType(1);
    pub const LOCAL: RouteType = RouteType(2);
    pub const BROADCAST: RouteType = RouteType(3);
    pub const ANYCAST: RouteType = RouteType(4);
    pub const MULTICAST: RouteType = RouteType(5);
    pub const BLACKHOLE: RouteType = RouteType(6);
    pub const UNREACHABLE: RouteType = RouteType(7);
    pub const PROHIBIT: RouteType = RouteType(8);
    pub const THROW: RouteType = RouteType(9);
    pub const NAT: RouteType = RouteType(10);

    pub fn is_unicast(self) -> bool {
        self == RouteType::UNICAST
    }

    /// The name iproute2 prints (`blackhole`, `unreachable`, ...), or the number.
    pub fn name(self) -> String {
        const NAMES: [&str; 11] = [
            "unspec",
            "unicast",
            "local",
            "broadcast",
            "anycast",
            "multicast",
            "blackhole",
            "unreachable",
            "prohibit",
            "throw",
            "nat",
        ];
        NAMES
            .get(usize::from(self.0))
            .map_or_else(|| format!("type {}", self.0), |n| (*n).to_string())
    }
}

impl fmt::Display for RouteType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
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
    pub kind: RouteType,
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
    /// The main table's unicast default routes, in the kernel's order.
    pub fn main_defaults(&self) -> impl Iterator<Item = &Route> {
        self.routes
            .iter()
            .filter(|r| r.table == RT_TABLE_MAIN && r.is_default() && r.kind.is_unicast())
    }
    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// An IPv6 link-local address (fe80::/10): on-link on any interface.
pub fn is_link_local_v6(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

pub const RT_TABLE_UNSPEC: u32 = 0;
pub const RT_TABLE_COMPAT: u32 = 252;
pub const RT_TABLE_DEFAULT: u32 = 253;
pub const RT_TABLE_MAIN: u32 = 254;
pub const RT_TABLE_LOCAL: u32 = 255;

/// A routing table number a writer may name (CNI sbr's `table`) or hold in
/// its band: any number but the reserved ones of [`Table::reserved`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Table(u32);

/// A table number that belongs to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("table {table} is the kernel's {reason}: no writer may use it")]
pub struct ReservedTable {
    pub table: u32,
    pub reason: &'static str,
}

impl Table {
    /// The one rule for reserved tables: 0 (unspec: "no table"), 252
    /// (compat: what a message header carries for every table above 255),
    /// 253 (default), 254 (main), 255 (local). None of them is ever in a
    /// writer's space, whatever its tag.
    pub fn reserved(table: u32) -> Option<&'static str> {
        match table {
            RT_TABLE_UNSPEC => Some("unspec (0, no table)"),
            RT_TABLE_COMPAT => Some("compat (252, the header value of tables above 255)"),
            RT_TABLE_DEFAULT => Some("`default` (253)"),
            RT_TABLE_MAIN => Some("`main` (254)"),
            RT_TABLE_LOCAL => Some("`local` (255)"),
            _ => None,
        }
    }

    pub fn new(table: u32) -> Result<Table, ReservedTable> {
        match Table::reserved(table) {
            Some(reason) => Err(ReservedTable { table, reason }),
            None => Ok(Table(table)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The protocol number a writer tags its rules and routes with
/// (`FRA_PROTOCOL`, `rtm_protocol`). Only numbers nobody else uses are
/// accepted: [`Protocol::reserved_by`] names the owner of the others.
/// (Rules and routes in a [`Snapshot`] keep the kernel's raw `u8`: they can
/// carry anyone's number.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Protocol(u8);

/// A protocol number that belongs to someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "protocol {number} is {owner}: symroute would treat their rules and routes as its own; pick an unused number (symroute's default is 115)"
)]
pub struct ReservedProtocol {
    pub number: u8,
    pub owner: &'static str,
}

impl Protocol {
    /// The host writer's tag (CLI apply/clean, the Docker daemon): in none
    /// of the lists of [`Protocol::reserved_by`].
    pub const HOST: Protocol = Protocol(115);
    /// The CNI plugin's own tag, so attachments and host writers never take
    /// each other's objects for their own.
    pub const CNI: Protocol = Protocol(116);

    /// Who uses `n`: the kernel's and iproute2's `rt_protos` numbers and the
    /// routing daemons' (0-4, 8-18, 42, 99, 186-192).
    pub fn reserved_by(n: u8) -> Option<&'static str> {
        Some(match n {
            0 => "the kernel's `unspec` (no protocol)",
            1 => "the kernel's `redirect` (ICMP redirects)",
            2 => "the kernel's `kernel` (routes the kernel makes for addresses)",
            3 => "the kernel's `boot` (routes added without a protocol, e.g. by `ip route add`)",
            4 => "the kernel's `static` (administrators' static routes)",
            5..=7 => return None,
            8 => "`gated` (GateD)",
            9 => "the kernel's `ra` (router advertisements)",
            10 => "`mrt` (the Merit MRT daemon)",
            11 => "`zebra` (Zebra/Quagga)",
            12 => "`bird` (BIRD)",
            13 => "`dnrouted` (DECnet routing)",
            14 => "`xorp` (XORP)",
            15 => "`ntk` (Netsukuku)",
            16 => "`dhcp` (DHCP clients)",
            17 => "`mrouted` (multicast routing)",
            18 => "`keepalived` (Keepalived)",
            42 => "`babel` (the Babel daemon)",
            99 => "`openr` (Open/R)",
            186 => "`bgp` (FRR's BGP daemon)",
            187 => "`isis` (FRR's IS-IS daemon)",
            188 => "`ospf` (FRR's OSPF daemon)",
            189 => "`rip` (FRR's RIP daemon)",
            190 | 191 => "FRR's (its daemons use 186-192)",
            192 => "`eigrp` (FRR's EIGRP daemon)",
            _ => return None,
        })
    }

    pub fn new(n: u8) -> Result<Protocol, ReservedProtocol> {
        match Protocol::reserved_by(n) {
            Some(owner) => Err(ReservedProtocol { number: n, owner }),
            None => Ok(Protocol(n)),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// Whether an object carrying the kernel's protocol number `n` has this tag.
    pub fn tags(self, n: u8) -> bool {
        self.0 == n
    }
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol::HOST
    }
}

impl TryFrom<u8> for Protocol {
    type Error = ReservedProtocol;
    fn try_from(n: u8) -> Result<Self, Self::Error> {
        Protocol::new(n)
    }
}

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> u8 {
        p.0
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Reformat a MAC for display.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
