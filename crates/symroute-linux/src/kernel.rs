//! The kernel adapter: reads a namespace into a [`Snapshot`], carries out
//! [`Op`]s and asks the kernel's route lookup, all over rtnetlink.
//!
//! [`Kernel`] (in `symroute-core`) is the narrow seam the engine talks
//! through; [`NetlinkKernel`] is the real one, bound to one namespace.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage},
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
    rule::{RuleAction, RuleAttribute, RuleMessage},
};

use crate::netlink::{NetlinkError, NlSocket};
use symroute_core::diff::Op;
use symroute_core::kernel::{Cause, Kernel, KernelError, RouteAnswer, RouteQuery};
use symroute_core::model::{
    Family, IfAddr, Link, NextHop, RT_TABLE_LOCAL, Route, Rule, Scope, Snapshot, format_mac,
};

/// The real kernel, through a netlink socket bound to one namespace.
pub struct NetlinkKernel {
    sock: NlSocket,
}

impl NetlinkKernel {
    pub fn new(sock: NlSocket) -> Self {
        NetlinkKernel { sock }
    }
}

fn family_of(af: AddressFamily) -> Option<Family> {
    match af {
        AddressFamily::Inet => Some(Family::V4),
        AddressFamily::Inet6 => Some(Family::V6),
        _ => None,
    }
}

fn af(f: Family) -> AddressFamily {
    match f {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn to_route_addr(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn proto_u8(p: RouteProtocol) -> u8 {
    u8::from(p)
}

pub(crate) fn parse_link(m: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut mac = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name.clone_from(n),
            LinkAttribute::Address(bytes) if bytes.len() == 6 => mac = Some(format_mac(bytes)),
            _ => {}
        }
    }
    Link {
        index: m.header.index,
        name,
        mac,
        up: m.header.flags.contains(LinkFlags::Up),
        loopback: m.header.flags.contains(LinkFlags::Loopback),
        addrs: Vec::new(),
    }
}

/// (ifindex, address) from an address message.
pub(crate) fn parse_addr(m: &AddressMessage) -> Option<(u32, IfAddr)> {
    family_of(m.header.family)?;
    let mut address = None;
    let mut local = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(m.header.flags.bits()));
    for a in &m.attributes {
        match a {
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    // For IPv4, IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
    // peer on point-to-point links); IPv6 sends IFA_ADDRESS only.
    let ip = local.or(address)?;
    let net = IpNet::new(ip, m.header.prefix_len).ok()?;
    Some((
        m.header.index,
        IfAddr {
            net,
            global: m.header.scope == AddressScope::Universe,
            tentative: flags.contains(AddressFlags::Tentative),
            dad_failed: flags.contains(AddressFlags::Dadfailed),
        },
    ))
}

pub(crate) fn parse_rule(m: &RuleMessage) -> Option<Rule> {
    let family = family_of(m.header.family)?;
    let mut rule = Rule {
        family,
        priority: 0,
        src: None,
        table: u32::from(m.header.table),
        protocol: 0,
        other_selectors: m.header.dst_len != 0
            || m.header.tos != 0
            || !matches!(m.header.action, RuleAction::ToTable)
            || !m.header.flags.is_empty(),
    };
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::Source(ip) => {
                rule.src = IpNet::new(*ip, m.header.src_len).ok();
            }
            RuleAttribute::Table(t) => rule.table = *t,
            RuleAttribute::Protocol(p) => rule.protocol = proto_u8(*p),
            // Every dumped rule carries SuppressPrefixLen(u32::MAX), meaning unset.
            RuleAttribute::SuppressPrefixLen(v) if *v == u32::MAX => {}
            RuleAttribute::SuppressIfGroup(v) if *v == u32::MAX => {}
            _ => rule.other_selectors = true,
        }
    }
    Some(rule)
}

pub(crate) fn parse_route(m: &RouteMessage) -> Option<Route> {
    let family = family_of(m.header.address_family)?;
    let mut dst = family.unspecified();
    let mut route = Route {
        table: u32::from(m.header.table),
        dst: IpNet::new(dst, m.header.destination_prefix_length).ok()?,
        gateway: None,
        oif: 0,
        prefsrc: None,
        scope: match m.header.scope {
            RouteScope::Universe => Scope::Universe,
            RouteScope::Link => Scope::Link,
            _ => Scope::Other,
        },
        kind: symroute_core::model::RouteType(u8::from(m.header.kind)),
        metric: 0,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        protocol: proto_u8(m.header.protocol),
        multipath: Vec::new(),
    };
    let mut nh_object = false;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(ip) = route_addr(d) {
                    dst = ip;
                }
            }
            RouteAttribute::Gateway(g) => route.gateway = route_addr(g),
            RouteAttribute::Oif(i) => route.oif = *i,
            RouteAttribute::PrefSource(s) => route.prefsrc = route_addr(s),
            RouteAttribute::Priority(p) => route.metric = *p,
            RouteAttribute::Table(t) => route.table = *t,
            // A route through a nexthop object (`nhid N`): its next hop is
            // not the route's own, and a delete or add without RTA_NH_ID is
            // not exact. Kept as a route with a next-hop list, which the
            // ownership classification never owns (a finding).
            RouteAttribute::NhId(_) => nh_object = true,
            RouteAttribute::MultiPath(hops) => {
                for h in hops {
                    let gateway = h.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => route_addr(g),
                        _ => None,
                    });
                    route.multipath.push(NextHop {
                        oif: h.interface_index,
                        gateway,
                    });
                }
            }
            _ => {}
        }
    }
    route.dst = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
    if nh_object && route.multipath.is_empty() {
        route.multipath.push(NextHop {
            oif: route.oif,
            gateway: route.gateway,
        });
    }
    Some(route)
}

fn rule_message(r: &Rule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = af(r.family);
    m.header.action = RuleAction::ToTable;
    m.header.table = if r.table < 256 { r.table as u8 } else { 252 };
    if let Some(src) = r.src {
        m.header.src_len = src.prefix_len();
        m.attributes.push(RuleAttribute::Source(src.addr()));
    }
    m.attributes.push(RuleAttribute::Priority(r.priority));
    m.attributes.push(RuleAttribute::Table(r.table));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(r.protocol)));
    m
}

fn route_message(r: &Route) -> RouteMessage {
    let family = r.family();
    let mut m = RouteMessage::default();
    m.header.address_family = af(family);
    m.header.destination_prefix_length = r.dst.prefix_len();
    m.header.table = if r.table < 256 { r.table as u8 } else { 252 };
    m.header.protocol = RouteProtocol::from(r.protocol);
    m.header.scope = match r.scope {
        Scope::Link => RouteScope::Link,
        _ => RouteScope::Universe,
    };
    m.header.kind = RouteType::Unicast;
    if r.onlink {
        m.header.flags |= RouteFlags::Onlink;
    }
    if r.dst.prefix_len() != 0 {
        m.attributes
            .push(RouteAttribute::Destination(to_route_addr(r.dst.addr())));
    }
    if let Some(gw) = r.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(to_route_addr(gw)));
    }
    if r.oif != 0 {
        m.attributes.push(RouteAttribute::Oif(r.oif));
    }
    if let Some(src) = r.prefsrc {
        m.attributes
            .push(RouteAttribute::PrefSource(to_route_addr(src)));
    }
    m.attributes.push(RouteAttribute::Priority(r.metric));
    m.attributes.push(RouteAttribute::Table(r.table));
    m
}

impl NetlinkKernel {
    fn dump_err(what: &str, source: NetlinkError) -> KernelError {
        KernelError {
            what: format!("dump {what}"),
            source: cause(source),
        }
    }
}

/// How many times [`Kernel::snapshot`] reads links and addresses again when
/// they disagree.
const SNAPSHOT_TRIES: usize = 3;

impl NetlinkKernel {
    /// Links with their addresses into `snap`; returns the index of a link
    /// an address names that the link dump did not list (0: none).
    fn dump_links_addrs(&mut self, snap: &mut Snapshot) -> Result<u32, KernelError> {
        // Without an extension mask the kernel sizes a link dump's buffer
        // for small messages and ends the dump early, silently, at a link
        // whose message does not fit (one with hundreds of altnames); with
        // one it sends every link. Statistics are not needed.
        let mut get = LinkMessage::default();
        get.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        for m in self
            .sock
            .dump(RouteNetlinkMessage::GetLink(get))
            .map_err(|e| Self::dump_err("links", e))?
        {
            if let RouteNetlinkMessage::NewLink(l) = m {
                snap.links.push(parse_link(&l));
            }
        }
        let mut missing = 0;
        for m in self
            .sock
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .map_err(|e| Self::dump_err("addresses", e))?
        {
            if let RouteNetlinkMessage::NewAddress(a) = m
                && let Some((index, addr)) = parse_addr(&a)
            {
                match snap.links.iter_mut().find(|l| l.index == index) {
                    Some(link) => link.addrs.push(addr),
                    None => missing = index,
                }
            }
        }
        Ok(missing)
    }

    /// Only the rules and routes of the namespace, no links or addresses:
    /// two dumps instead of four, for callers that know the rest already.
    pub fn rules_and_routes(&mut self) -> Result<Snapshot, KernelError> {
        let mut snap = Snapshot::default();
        self.dump_rules_routes(&mut snap)?;
        Ok(snap)
    }

    fn dump_rules_routes(&mut self, snap: &mut Snapshot) -> Result<(), KernelError> {
        for m in self
            .sock
            .dump(RouteNetlinkMessage::GetRule(RuleMessage::default()))
            .map_err(|e| Self::dump_err("rules", e))?
        {
            if let RouteNetlinkMessage::NewRule(r) = m
                && let Some(rule) = parse_rule(&r)
            {
                snap.rules.push(rule);
            }
        }
        for m in self
            .sock
            .dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))
            .map_err(|e| Self::dump_err("routes", e))?
        {
            if let RouteNetlinkMessage::NewRoute(r) = m
                && let Some(route) = parse_route(&r)
                && route.table != RT_TABLE_LOCAL
                && !r.header.flags.contains(RouteFlags::Cloned)
            {
                snap.routes.push(route);
            }
        }
        Ok(())
    }
}

impl Kernel for NetlinkKernel {
    fn snapshot(&mut self) -> Result<Snapshot, KernelError> {
        // Links and addresses come from two dumps: an address of a link the
        // first did not list is a link made in between (asked again) or a
        // link dump that ended early (never planned on: an interface
        // missing from the snapshot would look gone, and its objects stale).
        let mut missing = 0;
        for _ in 0..SNAPSHOT_TRIES {
            let mut snap = Snapshot::default();
            missing = self.dump_links_addrs(&mut snap)?;
            if missing == 0 {
                self.dump_rules_routes(&mut snap)?;
                return Ok(snap);
            }
        }
        Err(KernelError {
            what: "dump links".into(),
            source: Cause::Transport(format!(
                "addresses name interface {missing}, which the link dump did not list \
                 ({SNAPSHOT_TRIES} tries)"
            )),
        })
    }

    fn execute(&mut self, op: &Op) -> Result<(), KernelError> {
        let result = match op {
            Op::AddRule(r) => self.sock.request(
                RouteNetlinkMessage::NewRule(rule_message(r)),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
            Op::DelRule(r) => self
                .sock
                .request(RouteNetlinkMessage::DelRule(rule_message(r)), 0),
            Op::AddRoute(r) => self.sock.request(
                RouteNetlinkMessage::NewRoute(route_message(r)),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
            Op::DelRoute(r) => self
                .sock
                .request(RouteNetlinkMessage::DelRoute(route_message(r)), 0),
        };
        result.map_err(|source| KernelError {
            what: op.to_string(),
            source: cause(source),
        })
    }

    fn route_get(&mut self, q: &RouteQuery) -> Result<RouteAnswer, KernelError> {
        let family = Family::of(&q.dst);
        let mut m = RouteMessage::default();
        m.header.address_family = af(family);
        m.header.destination_prefix_length = family.host_prefix();
        // Without LOOKUP_TABLE, IPv4 answers report table main whatever matched.
        m.header.flags = RouteFlags::LookupTable;
        m.attributes
            .push(RouteAttribute::Destination(to_route_addr(q.dst)));
        if let Some(src) = q.src {
            m.header.source_prefix_length = family.host_prefix();
            m.attributes
                .push(RouteAttribute::Source(to_route_addr(src)));
        }
        if let Some(iif) = q.iif {
            m.attributes.push(RouteAttribute::Iif(iif));
        }
        let what = || {
            let mut s = format!("route get {}", q.dst);
            if let Some(src) = q.src {
                s.push_str(&format!(" from {src}"));
            }
            if let Some(iif) = q.iif {
                s.push_str(&format!(" iif if{iif}"));
            }
            s
        };
        let answer = self
            .sock
            .get(RouteNetlinkMessage::GetRoute(m))
            .map_err(|source| KernelError {
                what: what(),
                source: cause(source),
            })?;
        match answer {
            RouteNetlinkMessage::NewRoute(r) => {
                let mut out = RouteAnswer {
                    oif: 0,
                    gateway: None,
                    prefsrc: None,
                    table: u32::from(r.header.table),
                    kind: symroute_core::model::RouteType(u8::from(r.header.kind)),
                };
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Oif(i) => out.oif = *i,
                        RouteAttribute::Gateway(g) => out.gateway = route_addr(g),
                        RouteAttribute::PrefSource(s) => out.prefsrc = route_addr(s),
                        RouteAttribute::Table(t) => out.table = *t,
                        _ => {}
                    }
                }
                Ok(out)
            }
            _ => Err(KernelError {
                what: what(),
                source: Cause::Transport("netlink decode: unexpected answer to route get".into()),
            }),
        }
    }
}

/// The core's view of a netlink failure.
pub fn cause(e: NetlinkError) -> Cause {
    match e {
        NetlinkError::Kernel(io) => match io.raw_os_error() {
            Some(errno) => Cause::Refused {
                errno,
                message: None,
            },
            None => Cause::Transport(io.to_string()),
        },
        other => Cause::Transport(other.to_string()),
    }
}
