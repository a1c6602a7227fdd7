//! Rules, routes and operations written the way iproute2 spells them, so a
//! plan reads as the commands an operator would type.

use crate::diff::Op;
use crate::model::{Family, Route, Rule, Scope, Snapshot};

/// `from 172.18.0.2/32 lookup 10001 priority 3000 protocol 115`
pub fn rule_args(r: &Rule) -> String {
    let from = r
        .src
        .map(|s| s.to_string())
        .unwrap_or_else(|| "all".to_string());
    let mut s = format!("from {from} lookup {} priority {}", r.table, r.priority);
    if r.protocol != 0 {
        s.push_str(&format!(" protocol {}", r.protocol));
    }
    s
}

/// A table number as iproute2 names it.
pub fn table_name(t: u32) -> String {
    match t {
        253 => "default".into(),
        254 => "main".into(),
        255 => "local".into(),
        n => n.to_string(),
    }
}

/// A protocol number as iproute2 names the common ones.
pub fn proto_name(p: u8) -> String {
    match p {
        1 => "redirect".into(),
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        9 => "ra".into(),
        16 => "dhcp".into(),
        n => n.to_string(),
    }
}

/// A rule as `ip rule show` prints it: `3000: from 172.18.0.2 lookup 10001 proto 115`.
pub fn rule_show(r: &Rule) -> String {
    let from = match r.src {
        Some(s) if s.prefix_len() == r.family.host_prefix() => s.addr().to_string(),
        Some(s) => s.to_string(),
        None => "all".to_string(),
    };
    let mut s = format!("{}: from {from} lookup {}", r.priority, table_name(r.table));
    if r.other_selectors {
        s.push_str(" (+ other selectors)");
    }
    if r.protocol > 2 {
        s.push_str(&format!(" proto {}", proto_name(r.protocol)));
    }
    s
}

/// A route as `ip route show` prints it (main's table and kernel's proto left out).
pub fn route_show(r: &Route, names: Option<&Snapshot>) -> String {
    let mut s = route_args(r, names);
    for (from, to) in [
        (" table 254".to_string(), String::new()),
        (
            format!(" table {}", r.table),
            format!(" table {}", table_name(r.table)),
        ),
        (
            format!(" proto {}", r.protocol),
            format!(" proto {}", proto_name(r.protocol)),
        ),
    ] {
        if let Some(pos) = s.find(&from) {
            s.replace_range(pos..pos + from.len(), &to);
        }
    }
    s
}

fn dev_name(oif: u32, names: Option<&Snapshot>) -> String {
    names
        .and_then(|s| s.link(oif))
        .map(|l| l.name.clone())
        .unwrap_or_else(|| format!("if{oif}"))
}

/// `172.18.0.0/16 dev eth1 scope link src 172.18.0.2 table 10001 proto 115`
pub fn route_args(r: &Route, names: Option<&Snapshot>) -> String {
    let mut s = if r.is_default() {
        "default".to_string()
    } else {
        r.dst.to_string()
    };
    if !r.kind.is_unicast() {
        s = format!("(non-unicast) {s}");
    }
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if r.oif != 0 {
        s.push_str(&format!(" dev {}", dev_name(r.oif, names)));
    }
    for nh in &r.multipath {
        s.push_str(" nexthop");
        if let Some(gw) = nh.gateway {
            s.push_str(&format!(" via {gw}"));
        }
        s.push_str(&format!(" dev {}", dev_name(nh.oif, names)));
    }
    if r.scope == Scope::Link && r.family() == Family::V4 {
        s.push_str(" scope link");
    }
    if let Some(src) = r.prefsrc {
        s.push_str(&format!(" src {src}"));
    }
    if r.onlink {
        s.push_str(" onlink");
    }
    s.push_str(&format!(" table {}", r.table));
    if r.protocol != 0 {
        s.push_str(&format!(" proto {}", r.protocol));
    }
    if r.metric != 0 {
        s.push_str(&format!(" metric {}", r.metric));
    }
    s
}

/// The iproute2 command equivalent to an operation, run in `netns_path`.
pub fn ip_command(op: &Op, netns_path: &str, names: Option<&Snapshot>) -> String {
    let prefix = format!("nsenter --net={netns_path} ip");
    match op {
        Op::AddRule(r) => format!("{prefix} {} rule add {}", r.family.ip_flag(), rule_args(r)),
        Op::DelRule(r) => format!("{prefix} {} rule del {}", r.family.ip_flag(), rule_args(r)),
        Op::AddRoute(r) => format!(
            "{prefix} {} route add {}",
            r.family().ip_flag(),
            route_args(r, names)
        ),
        Op::DelRoute(r) => format!(
            "{prefix} {} route del {}",
            r.family().ip_flag(),
            route_args(r, names)
        ),
    }
}
