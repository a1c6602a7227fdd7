//! The planner: a pure function from what a namespace has (a [`Snapshot`]),
//! the settings and the caller's gateway hints to the rules and routes
//! symroute wants there. No I/O.
//!
//! For every managed interface: one table from the band with the interface's
//! connected prefixes and, per family with a known gateway, a default route;
//! for every global address a `from ADDR/32|/128 lookup TABLE` rule.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::model::{
    Family, Link, RT_TABLE_MAIN, Route, RouteKind, Rule, Scope, Snapshot, is_link_local_v6,
};
use crate::settings::Settings;

/// A gateway the caller names for an interface (`--gateway eth1=172.18.0.1`).
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

/// Desired state of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Interfaces symroute manages; empty when the namespace is not managed.
    pub interfaces: Vec<InterfacePlan>,
    /// Why nothing is managed, when nothing is.
    pub unmanaged_reason: Option<String>,
    pub rules: Vec<Rule>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("--gateway {ifname}={gateway}: no interface {ifname} in this namespace")]
    UnknownInterface { ifname: String, gateway: IpAddr },
    #[error("--gateway {ifname}={gateway}: {ifname} has no global {family} address")]
    WrongFamily {
        ifname: String,
        gateway: IpAddr,
        family: Family,
    },
    #[error("--gateway {ifname}={gateway}: {gateway} is outside {ifname}'s prefixes ({prefixes})")]
    OffLink {
        ifname: String,
        gateway: IpAddr,
        prefixes: String,
    },
    #[error("--gateway {ifname}={gateway}: {gateway} is {ifname}'s own address")]
    OwnAddress { ifname: String, gateway: IpAddr },
    #[error("--gateway {ifname}: two {family} gateways given ({first} and {second})")]
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
    #[error("no free routing table left in the band {min}-{max} for {ifname}")]
    TablesExhausted { ifname: String, min: u32, max: u32 },
    #[error(
        "route {dst} metric {metric} in table {table} already exists with protocol {protocol}: it is not symroute's, so symroute will not replace it"
    )]
    ForeignConflict {
        table: u32,
        dst: IpNet,
        metric: u32,
        protocol: u8,
    },
}

/// Metric symroute gives its routes (see [`Route::metric`]).
pub fn route_metric(family: Family) -> u32 {
    match family {
        Family::V4 => 0,
        Family::V6 => 1024,
    }
}

/// The connected prefixes of a link's global addresses of one family:
/// (network, first address in it).
fn connected(link: &Link, family: Family) -> Vec<(IpNet, IpAddr)> {
    let mut out: Vec<(IpNet, IpAddr)> = Vec::new();
    for a in link.global_addrs().filter(|a| a.family() == family) {
        if a.net.prefix_len() == family.host_prefix() {
            continue; // a host address has no prefix route
        }
        let net = a.net.trunc();
        if !out.iter().any(|(n, _)| *n == net) {
            out.push((net, a.addr()));
        }
    }
    out
}

fn on_link(link: &Link, gw: &IpAddr) -> bool {
    let family = Family::of(gw);
    (family == Family::V6 && is_link_local_v6(gw))
        || connected(link, family).iter().any(|(n, _)| n.contains(gw))
}

/// Validate the caller's gateways: (ifindex, family) -> gateway.
fn given_gateways(
    snap: &Snapshot,
    hints: &[GatewayHint],
) -> Result<BTreeMap<(u32, Family), IpAddr>, PlanError> {
    let mut out: BTreeMap<(u32, Family), IpAddr> = BTreeMap::new();
    for h in hints {
        let family = Family::of(&h.gateway);
        let link = snap
            .link_by_name(&h.ifname)
            .ok_or_else(|| PlanError::UnknownInterface {
                ifname: h.ifname.clone(),
                gateway: h.gateway,
            })?;
        if !link.global_addrs().any(|a| a.family() == family) {
            return Err(PlanError::WrongFamily {
                ifname: h.ifname.clone(),
                gateway: h.gateway,
                family,
            });
        }
        if link.addrs.iter().any(|a| a.addr() == h.gateway) {
            return Err(PlanError::OwnAddress {
                ifname: h.ifname.clone(),
                gateway: h.gateway,
            });
        }
        if !on_link(link, &h.gateway) {
            let prefixes = connected(link, family)
                .iter()
                .map(|(n, _)| n.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(PlanError::OffLink {
                ifname: h.ifname.clone(),
                gateway: h.gateway,
                prefixes,
            });
        }
        if let Some(first) = out.insert((link.index, family), h.gateway)
            && first != h.gateway
        {
            return Err(PlanError::Duplicate {
                ifname: h.ifname.clone(),
                family,
                first,
                second: h.gateway,
            });
        }
    }
    Ok(out)
}

/// Default routes of the main table: (ifindex, family) -> (gateway, onlink),
/// the lowest metric winning.
fn main_defaults(snap: &Snapshot) -> BTreeMap<(u32, Family), (IpAddr, bool)> {
    let mut best: BTreeMap<(u32, Family), (u32, IpAddr, bool)> = BTreeMap::new();
    let mut offer = |oif: u32, gw: IpAddr, metric: u32, onlink: bool| {
        let key = (oif, Family::of(&gw));
        match best.get(&key) {
            Some((m, _, _)) if *m <= metric => {}
            _ => {
                best.insert(key, (metric, gw, onlink));
            }
        }
    };
    for r in &snap.routes {
        if r.table != RT_TABLE_MAIN || !r.is_default() || r.kind != RouteKind::Unicast {
            continue;
        }
        if let Some(gw) = r.gateway
            && r.oif != 0
        {
            offer(r.oif, gw, r.metric, r.onlink);
        }
        for nh in &r.multipath {
            if let Some(gw) = nh.gateway {
                offer(nh.oif, gw, r.metric, false);
            }
        }
    }
    best.into_iter()
        .map(|(k, (_, gw, onlink))| (k, (gw, onlink)))
        .collect()
}

/// Tables for the managed links: kept from tagged state where possible
/// (an interface keeps its table across runs), else the lowest free one.
fn assign_tables(
    snap: &Snapshot,
    settings: &Settings,
    links: &[&Link],
) -> Result<BTreeMap<u32, u32>, PlanError> {
    let tag = settings.protocol;
    // Tables that anyone else uses, anywhere.
    let mut taken: BTreeSet<u32> = snap
        .rules
        .iter()
        .filter(|r| r.protocol != tag)
        .map(|r| r.table)
        .chain(
            snap.routes
                .iter()
                .filter(|r| r.protocol != tag)
                .map(|r| r.table),
        )
        .collect();
    // Tables our own tagged objects point at, whichever link they were for.
    let ours: BTreeSet<u32> = snap
        .tagged_rules(tag)
        .map(|r| r.table)
        .chain(snap.tagged_routes(tag).map(|r| r.table))
        .filter(|t| settings.in_band(*t))
        .collect();

    let mut out: BTreeMap<u32, u32> = BTreeMap::new();
    let mut used: BTreeSet<u32> = BTreeSet::new();
    // Pass 1: a table our routes through this link, or our rules from its
    // addresses, already use. Routes name the link, rules only an address,
    // which can sit on two links: every link's routes count first.
    for by_rules in [false, true] {
        for link in links {
            if out.contains_key(&link.index) {
                continue;
            }
            let by_route = snap
                .tagged_routes(tag)
                .filter(|r| !by_rules && r.oif == link.index && settings.in_band(r.table))
                .map(|r| r.table);
            let by_rule = snap
                .tagged_rules(tag)
                .filter(|r| {
                    by_rules
                        && settings.in_band(r.table)
                        && r.src.is_some_and(|s| {
                            s.prefix_len() == Family::of(&s.addr()).host_prefix()
                                && link.global_addrs().any(|a| a.addr() == s.addr())
                        })
                })
                .map(|r| r.table);
            let mut candidates: Vec<u32> = by_route.chain(by_rule).collect();
            candidates.sort_unstable();
            if by_rules {
                // First a table whose rules all come from this link's
                // addresses, then the one most of its addresses point at.
                let all_mine = |t: u32| {
                    snap.tagged_rules(tag).filter(|r| r.table == t).all(|r| {
                        r.src
                            .is_some_and(|s| link.global_addrs().any(|a| a.addr() == s.addr()))
                    })
                };
                let votes = |t: u32| candidates.iter().filter(|c| **c == t).count();
                let mut ranked = candidates.clone();
                ranked.sort_by_key(|t| (!all_mine(*t), std::cmp::Reverse(votes(*t)), *t));
                candidates = ranked;
            }
            if let Some(t) = candidates.into_iter().find(|t| !used.contains(t)) {
                used.insert(t);
                out.insert(link.index, t);
            }
        }
    }
    taken.extend(ours);
    taken.extend(used.iter().copied());
    // Pass 2: the lowest table nobody uses.
    for link in links {
        if out.contains_key(&link.index) {
            continue;
        }
        let t = (settings.table_min..=settings.table_max)
            .find(|t| !taken.contains(t))
            .ok_or_else(|| PlanError::TablesExhausted {
                ifname: link.name.clone(),
                min: settings.table_min,
                max: settings.table_max,
            })?;
        taken.insert(t);
        out.insert(link.index, t);
    }
    Ok(out)
}

/// Compute the desired rules and routes for a namespace.
pub fn plan(snap: &Snapshot, settings: &Settings, req: &PlanRequest) -> Result<Plan, PlanError> {
    let tag = settings.protocol;
    let given = given_gateways(snap, &req.gateways)?;
    let candidates: Vec<&Link> = match &req.selection {
        Selection::Only(only) => {
            let link =
                snap.link_by_name(&only.ifname)
                    .ok_or_else(|| PlanError::NoSuchInterface {
                        ifname: only.ifname.clone(),
                    })?;
            if link.global_addrs().next().is_none() {
                return Err(PlanError::NoAddress {
                    ifname: only.ifname.clone(),
                });
            }
            vec![link]
        }
        _ => {
            let mut v: Vec<&Link> = snap
                .links
                .iter()
                .filter(|l| !l.loopback && l.global_addrs().next().is_some())
                .collect();
            v.sort_by_key(|l| l.index);
            v
        }
    };
    let (fixed_table, rules_only) = match &req.selection {
        Selection::Only(o) => (o.table, o.rules_only),
        _ => (None, false),
    };
    if req.selection == Selection::MultiHomed && candidates.len() < 2 {
        return Ok(Plan {
            unmanaged_reason: Some(format!(
                "{} interface{} with a global address: replies are already symmetric (--all-interfaces manages it anyway)",
                candidates.len(),
                if candidates.len() == 1 { "" } else { "s" }
            )),
            ..Plan::default()
        });
    }
    let mut tables = match fixed_table {
        Some(t) => candidates.iter().map(|l| (l.index, t)).collect(),
        None => assign_tables(snap, settings, &candidates)?,
    };
    let mains = main_defaults(snap);

    let mut plan = Plan::default();
    for link in &candidates {
        let table = tables.remove(&link.index).unwrap_or(settings.table_min);
        let routes_before = plan.routes.len();
        let mut ip = InterfacePlan {
            index: link.index,
            name: link.name.clone(),
            mac: link.mac.clone(),
            up: link.up,
            table,
            addrs: link.global_addrs().map(|a| a.net).collect(),
            gateways: Vec::new(),
            no_gateway: Vec::new(),
            tentative: link
                .global_addrs()
                .filter(|a| a.tentative)
                .map(|a| a.addr())
                .collect(),
            notes: Vec::new(),
        };
        for a in link.addrs.iter().filter(|a| a.global && a.dad_failed) {
            ip.notes.push(format!(
                "{} failed duplicate address detection: not managed",
                a.net
            ));
        }
        for family in [Family::V4, Family::V6] {
            let addrs: Vec<IpAddr> = link
                .global_addrs()
                .filter(|a| a.family() == family)
                .map(|a| a.addr())
                .collect();
            if addrs.is_empty() {
                continue;
            }
            for a in &addrs {
                plan.rules.push(Rule {
                    family,
                    priority: settings.priority,
                    src: Some(IpNet::new(*a, family.host_prefix()).expect("host prefix is valid")),
                    table,
                    protocol: tag,
                    other_selectors: false,
                });
            }
            let metric = route_metric(family);
            let conn = connected(link, family);
            if link.up {
                for (net, src) in &conn {
                    plan.routes.push(Route {
                        table,
                        dst: *net,
                        gateway: None,
                        oif: link.index,
                        // IPv6 connected routes carry no source, as in main:
                        // a `src` route fails while the address is tentative.
                        prefsrc: (family == Family::V4).then_some(*src),
                        scope: if family == Family::V4 {
                            Scope::Link
                        } else {
                            Scope::Universe
                        },
                        kind: RouteKind::Unicast,
                        metric,
                        onlink: false,
                        protocol: tag,
                        multipath: Vec::new(),
                    });
                }
            }
            let kept = snap.tagged_routes(tag).find(|r| {
                r.table == table
                    && r.is_default()
                    && r.oif == link.index
                    && r.family() == family
                    && r.gateway.is_some_and(|g| r.onlink || on_link(link, &g))
            });
            let choice = if let Some(gw) = given.get(&(link.index, family)) {
                Some((*gw, GatewaySource::Given, false))
            } else if let Some((gw, onlink)) = mains.get(&(link.index, family)) {
                Some((*gw, GatewaySource::MainTable, *onlink))
            } else {
                kept.and_then(|r| r.gateway.map(|g| (g, GatewaySource::Kept, r.onlink)))
            };
            match choice {
                Some((gw, source, onlink)) => {
                    let onlink = onlink || !on_link(link, &gw);
                    ip.gateways.push(GatewayChoice {
                        family,
                        gateway: gw,
                        source,
                        onlink,
                    });
                    if link.up {
                        plan.routes.push(Route {
                            table,
                            dst: IpNet::new(family.unspecified(), 0).expect("prefix 0 is valid"),
                            gateway: Some(gw),
                            oif: link.index,
                            prefsrc: None,
                            scope: Scope::Universe,
                            kind: RouteKind::Unicast,
                            metric,
                            onlink,
                            protocol: tag,
                            multipath: Vec::new(),
                        });
                    }
                }
                None => {
                    ip.no_gateway.push(family);
                    ip.notes.push(format!(
                        "no {family} gateway known for {}: its table holds connected routes only, so replies to other subnets still follow main (pass --gateway {}=ADDRESS)",
                        link.name, link.name
                    ));
                }
            }
        }
        for hint in req.routes.iter().filter(|h| h.ifname == link.name) {
            let family = Family::of(&hint.dst.addr());
            if !link.global_addrs().any(|a| a.family() == family) {
                continue;
            }
            if let Some(gw) = hint.gateway
                && !on_link(link, &gw)
            {
                return Err(PlanError::RouteOffLink {
                    ifname: link.name.clone(),
                    dst: hint.dst,
                    gateway: gw,
                });
            }
            let route = Route {
                table,
                dst: hint.dst.trunc(),
                gateway: hint.gateway,
                oif: link.index,
                prefsrc: None,
                scope: if hint.gateway.is_none() && family == Family::V4 {
                    Scope::Link
                } else {
                    Scope::Universe
                },
                kind: RouteKind::Unicast,
                metric: route_metric(family),
                onlink: false,
                protocol: tag,
                multipath: Vec::new(),
            };
            if link.up
                && !plan.routes[routes_before..]
                    .iter()
                    .any(|r| r.key() == route.key())
            {
                plan.routes.push(route);
            }
        }
        if rules_only {
            plan.routes.truncate(routes_before);
            ip.notes.push(format!(
                "table {table} is fixed by the caller: symroute adds the rules only"
            ));
        }
        if !link.up {
            ip.notes.push(format!(
                "{} is down: its routes are added when it comes up (rules are kept so its table number stays)",
                link.name
            ));
        }
        plan.interfaces.push(ip);
    }
    // Never collide with someone else's route in a table we use.
    for want in &plan.routes {
        if let Some(other) = snap
            .routes
            .iter()
            .find(|r| r.protocol != tag && r.key() == want.key())
        {
            return Err(PlanError::ForeignConflict {
                table: want.table,
                dst: want.dst,
                metric: want.metric,
                protocol: other.protocol,
            });
        }
    }
    plan.rules.sort();
    // One address with two prefix lengths (IPv4 allows it) wants one rule.
    plan.rules.dedup();
    plan.routes.sort();
    Ok(plan)
}
