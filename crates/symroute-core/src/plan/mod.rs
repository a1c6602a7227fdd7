//! The planner: a pure function from what a namespace has (a [`Snapshot`]),
//! the settings and the caller's gateway hints to the rules and routes
//! symroute wants there. No I/O.
//!
//! For every managed interface: one table from the band with the interface's
//! connected prefixes and, per family with a known gateway, a default route;
//! for every global address a `from ADDR/32|/128 lookup TABLE` rule.
//!
//! What is already symroute's comes from the one ownership classification
//! ([`crate::ownership`]); an interface whose addresses another writer
//! routes (a `from ADDR` rule of another protocol to a table other than
//! main, local or default) is left alone and listed in [`Plan::skipped`].

mod gateways;
mod tables;
mod types;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{
    Family, Link, RT_TABLE_DEFAULT, RT_TABLE_LOCAL, RT_TABLE_MAIN, Route, RouteType, Rule, Scope,
    Snapshot,
};
use crate::ownership::{Class, Ownership, Space, classify, route_class};
use crate::settings::Settings;
use gateways::{connected, given_gateways, main_defaults, network_or_broadcast, on_link};
use tables::assign_tables;
pub use types::*;

/// Metric symroute gives its routes (see [`Route::metric`]).
pub fn route_metric(family: Family) -> u32 {
    match family {
        Family::V4 => 0,
        Family::V6 => 1024,
    }
}

/// The space a request plans in: the settings' space, plus the table a
/// single-interface request names (refused when reserved).
pub fn space(settings: &Settings, req: &PlanRequest) -> Result<Space, PlanError> {
    let space = Space::of(settings);
    match &req.selection {
        Selection::Only(OnlyInterface {
            ifname,
            table: Some(t),
            ..
        }) => space
            .with_table(*t)
            .map_err(|source| PlanError::ReservedTable {
                ifname: ifname.clone(),
                source,
            }),
        _ => Ok(space),
    }
}

/// Compute the desired rules and routes for a namespace (classifying the
/// snapshot first; the engine, which has classified it already, calls
/// [`plan_with`]).
pub fn plan(snap: &Snapshot, settings: &Settings, req: &PlanRequest) -> Result<Plan, PlanError> {
    let space = space(settings, req)?;
    plan_with(snap, &classify(snap, &space), &space, settings, req)
}

/// A rule of another writer routing `link`'s addresses: `from ADDR/32|/128`,
/// another protocol, a lookup of a table other than main, local or default.
fn other_writer<'a>(snap: &'a Snapshot, space: &Space, link: &Link) -> Option<&'a Rule> {
    snap.rules.iter().find(|r| {
        !space.protocol.tags(r.protocol)
            && !matches!(
                r.table,
                0 | RT_TABLE_MAIN | RT_TABLE_LOCAL | RT_TABLE_DEFAULT
            )
            && r.src.is_some_and(|s| {
                s.prefix_len() == r.family.host_prefix()
                    && link.global_addrs().any(|a| a.addr() == s.addr())
            })
    })
}

/// [`plan`] on a snapshot already classified for `space`.
pub fn plan_with(
    snap: &Snapshot,
    own: &Ownership,
    space: &Space,
    settings: &Settings,
    req: &PlanRequest,
) -> Result<Plan, PlanError> {
    let tag = space.protocol.get();
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
                "{} interface{} with a global address: replies are already symmetric (symroute can manage it anyway when asked for all interfaces)",
                candidates.len(),
                if candidates.len() == 1 { "" } else { "s" }
            )),
            ..Plan::default()
        });
    }
    // Interfaces another writer routes are left alone (after the
    // multi-homed count: the namespace is multi-homed all the same).
    let mut plan = Plan::default();
    let candidates: Vec<&Link> = candidates
        .into_iter()
        .filter(|l| match other_writer(snap, space, l) {
            Some(rule) => {
                plan.skipped.push(Skipped {
                    name: l.name.clone(),
                    index: l.index,
                    rule: rule.clone(),
                });
                false
            }
            None => true,
        })
        .collect();
    let mut tables = match fixed_table {
        Some(t) => candidates.iter().map(|l| (l.index, t)).collect(),
        None => assign_tables(own, settings, &candidates)?,
    };
    let mains = main_defaults(snap);

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
                        kind: RouteType::UNICAST,
                        metric,
                        onlink: false,
                        protocol: tag,
                        multipath: Vec::new(),
                    });
                }
            }
            let kept = own.routes.iter().find(|r| {
                r.table == table
                    && r.is_default()
                    && r.oif == link.index
                    && r.family() == family
                    && r.gateway.is_some_and(|g| r.onlink || on_link(link, &g))
            });
            let choice = crate::request::choose(
                given.get(&(link.index, family)).copied(),
                mains.get(&(link.index, family)).copied(),
                kept.and_then(|r| r.gateway.map(|g| (g, r.onlink))),
            );
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
                            kind: RouteType::UNICAST,
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
                        "no {family} gateway known for {}: its table holds connected routes only, so replies to other subnets still follow main (name a gateway for {} to route them)",
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
            if let Some(gw) = hint.gateway {
                if let Some((prefix, which)) = network_or_broadcast(link, &gw) {
                    return Err(PlanError::RouteNetworkOrBroadcast {
                        ifname: link.name.clone(),
                        dst: hint.dst,
                        gateway: gw,
                        prefix,
                        which,
                    });
                }
                if !on_link(link, &gw) {
                    return Err(PlanError::RouteOffLink {
                        ifname: link.name.clone(),
                        dst: hint.dst,
                        gateway: gw,
                    });
                }
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
                kind: RouteType::UNICAST,
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
    // Never collide with a route that is not ours in a table we use.
    for want in &plan.routes {
        if let Some(other) = snap
            .routes
            .iter()
            .find(|r| r.key() == want.key() && route_class(space, r).0 != Class::Ours)
        {
            return Err(if space.protocol.tags(other.protocol) {
                PlanError::FindingConflict {
                    table: want.table,
                    dst: want.dst,
                    metric: want.metric,
                    kind: other.kind,
                }
            } else {
                PlanError::ForeignConflict {
                    table: want.table,
                    dst: want.dst,
                    metric: want.metric,
                    protocol: other.protocol,
                }
            });
        }
    }
    plan.rules.sort();
    // One address with two prefix lengths (IPv4 allows it) wants one rule.
    plan.rules.dedup();
    plan.routes.sort();
    Ok(plan)
}
