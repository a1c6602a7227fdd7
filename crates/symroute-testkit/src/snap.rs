//! Hand-built snapshots for the pure suites (planner, engine on the fake,
//! ownership, CNI on the fake): addresses, links, and symroute's rules and
//! routes as the default settings make them (protocol 115, priority 3000),
//! written from literals. Test support only: every parse panics, naming the
//! literal.

use std::net::IpAddr;

use ipnet::IpNet;
use symroute_core::model::{Family, IfAddr, Link, Route, RouteType, Rule, Scope, Snapshot};
use symroute_core::plan::{GatewayHint, PlanRequest, Selection};

/// The host writer's default protocol tag.
pub const TAG: u8 = 115;
/// The default rule priority.
pub const PRIO: u32 = 3000;
/// `proto boot`: what `ip route add` and Docker's default routes carry.
pub const BOOT: u8 = 3;
/// `proto ra`: IPv6 default routes learnt from router advertisements.
pub const RA: u8 = 9;

/// A prefix literal ("172.18.0.2/16").
pub fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("bad prefix {s}: {e}"))
}

/// An address literal.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

/// A global address, settled.
pub fn global(s: &str) -> IfAddr {
    IfAddr {
        net: net(s),
        global: true,
        tentative: false,
        dad_failed: false,
    }
}

/// A link-local (not global) address.
pub fn link_local(s: &str) -> IfAddr {
    IfAddr {
        global: false,
        ..global(s)
    }
}

/// A global address still in duplicate address detection.
pub fn tentative(s: &str) -> IfAddr {
    IfAddr {
        tentative: true,
        ..global(s)
    }
}

/// A global address whose duplicate address detection failed.
pub fn dad_failed(s: &str) -> IfAddr {
    IfAddr {
        tentative: true,
        dad_failed: true,
        ..global(s)
    }
}

/// An up, non-loopback link with global addresses written "addr/len".
pub fn eth(index: u32, name: &str, addrs: &[&str]) -> Link {
    eth_with(index, name, addrs.iter().map(|a| global(a)).collect())
}

/// An up, non-loopback link with `addrs`, MAC 02:42:ac:00:00:<index>.
pub fn eth_with(index: u32, name: &str, addrs: Vec<IfAddr>) -> Link {
    Link {
        index,
        name: name.to_string(),
        mac: Some(format!("02:42:ac:00:00:{index:02x}")),
        up: true,
        loopback: false,
        addrs,
    }
}

/// An up, non-loopback link with global addresses and no MAC.
pub fn eth_no_mac(index: u32, name: &str, addrs: &[&str]) -> Link {
    Link {
        mac: None,
        ..eth(index, name, addrs)
    }
}

/// `l`, down.
pub fn down(mut l: Link) -> Link {
    l.up = false;
    l
}

/// The loopback (index 1) with its host-scoped (not global) addresses.
pub fn lo() -> Link {
    Link {
        index: 1,
        name: "lo".to_string(),
        mac: None,
        up: true,
        loopback: true,
        addrs: vec![link_local("127.0.0.1/8"), link_local("::1/128")],
    }
}

/// A snapshot of `links` alone: no rules, no routes.
pub fn snap(links: Vec<Link>) -> Snapshot {
    Snapshot {
        links,
        rules: Vec::new(),
        routes: Vec::new(),
    }
}

/// ADDR/32 or ADDR/128.
pub fn host(a: &str) -> IpNet {
    let a = ip(a);
    IpNet::new(a, Family::of(&a).host_prefix()).expect("a host prefix is valid")
}

/// `from ADDR/32|/128 lookup TABLE priority 3000 protocol 115`.
pub fn rule(a: &str, table: u32) -> Rule {
    rule_of(a, table, TAG)
}

/// `from ADDR/32|/128 lookup TABLE priority 3000 protocol PROTOCOL`.
pub fn rule_of(a: &str, table: u32, protocol: u8) -> Rule {
    Rule {
        family: Family::of(&ip(a)),
        priority: PRIO,
        src: Some(host(a)),
        table,
        protocol,
        other_selectors: false,
    }
}

/// An IPv4 rule of anyone (symroute or another writer): `from SRC` (or
/// none) lookup `table` at `priority`, tagged `protocol`.
pub fn rule_at(src: Option<&str>, table: u32, priority: u32, protocol: u8) -> Rule {
    Rule {
        family: Family::V4,
        priority,
        src: src.map(net),
        table,
        protocol,
        other_selectors: false,
    }
}

/// The metric the kernel gives a route of `f` added without one.
pub fn metric(f: Family) -> u32 {
    match f {
        Family::V4 => 0,
        Family::V6 => 1024,
    }
}

/// The connected route symroute puts in an interface's table.
pub fn conn(table: u32, dst: &str, oif: u32, src: &str) -> Route {
    conn_of(table, dst, oif, src, TAG)
}

/// A connected route in `table` carrying `protocol` (IPv4: `src`, scope
/// link; IPv6: no src, scope universe).
pub fn conn_of(table: u32, dst: &str, oif: u32, src: &str, protocol: u8) -> Route {
    let dst = net(dst);
    let family = Family::of(&dst.addr());
    Route {
        table,
        dst,
        gateway: None,
        oif,
        prefsrc: (family == Family::V4).then(|| ip(src)),
        scope: match family {
            Family::V4 => Scope::Link,
            Family::V6 => Scope::Universe,
        },
        kind: RouteType::UNICAST,
        metric: metric(family),
        onlink: false,
        protocol,
        multipath: Vec::new(),
    }
}

/// The default route symroute puts in an interface's table.
pub fn dflt(table: u32, gw: &str, oif: u32) -> Route {
    dflt_of(table, gw, oif, TAG)
}

/// A default route via `gw` in `table` carrying `protocol`.
pub fn dflt_of(table: u32, gw: &str, oif: u32, protocol: u8) -> Route {
    let gw = ip(gw);
    let family = Family::of(&gw);
    Route {
        table,
        dst: match family {
            Family::V4 => net("0.0.0.0/0"),
            Family::V6 => net("::/0"),
        },
        gateway: Some(gw),
        oif,
        prefsrc: None,
        scope: Scope::Universe,
        kind: RouteType::UNICAST,
        metric: metric(family),
        onlink: false,
        protocol,
        multipath: Vec::new(),
    }
}

/// A gateway hint: `ifname=gateway`, as `--gateway` gives it.
pub fn gw_hint(ifname: &str, gateway: &str) -> GatewayHint {
    GatewayHint {
        ifname: ifname.to_string(),
        gateway: ip(gateway),
    }
}

/// A request for the multi-homed interfaces with gateway hints `h`.
pub fn hints(h: &[(&str, &str)]) -> PlanRequest {
    PlanRequest {
        gateways: h.iter().map(|(i, g)| gw_hint(i, g)).collect(),
        selection: Selection::MultiHomed,
        routes: Vec::new(),
    }
}
