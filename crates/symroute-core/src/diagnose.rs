//! Diagnosis: for every global address, ask the kernel which way a reply to
//! an off-link client would leave, which rule and table decided, and whether
//! a strict reverse-path filter would accept that path. No packet is sent.

use std::net::IpAddr;

use serde::Serialize;

use crate::kernel::{Kernel, KernelError, RouteQuery};
use crate::model::{Family, Snapshot};
use crate::render;

/// Off-link probes from the documentation ranges, tried in order; the first
/// not inside a prefix of the namespace is used.
const PROBES_V4: [&str; 3] = ["203.0.113.113", "198.51.100.113", "192.0.2.113"];
const PROBES_V6: [&str; 3] = ["2001:db8:ffff::113", "2001:db8:fffe::113", "2001:db8::113"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The reply leaves through the interface the request came in on.
    Symmetric,
    /// The reply leaves through another interface.
    Asymmetric,
    /// The kernel has no route for the reply at all.
    NoRoute,
}

/// The reply path of one address.
#[derive(Debug, Clone, Serialize)]
pub struct AddressReport {
    pub interface: String,
    pub address: IpAddr,
    /// The off-link client the lookup asked about.
    pub probe: IpAddr,
    /// Interface the reply would leave through.
    pub reply_interface: Option<String>,
    pub reply_gateway: Option<IpAddr>,
    /// Table whose route matched.
    pub table: Option<u32>,
    /// The rule that sent the lookup to that table, iproute2-style.
    pub rule: Option<String>,
    /// Would a strict reverse-path filter accept a request from the probe
    /// arriving on `interface`? (Strict rp_filter requires the route back to
    /// the source to leave through the arrival interface.)
    pub strict_rpf_passes: bool,
    pub verdict: Verdict,
    /// The kernel's reason when the lookup failed.
    pub error: Option<String>,
}

/// A default route of the main table and why it wins or not.
#[derive(Debug, Clone, Serialize)]
pub struct DefaultRoute {
    pub route: String,
    pub interface: String,
    pub family: Family,
    pub metric: u32,
    /// Whether it is the one the kernel uses for its family (lowest metric).
    pub selected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub addresses: Vec<AddressReport>,
    pub default_routes: Vec<DefaultRoute>,
    /// Why the default route is where it is.
    pub default_route_reason: String,
    /// Interfaces with global addresses but no default route of their own.
    pub interfaces_without_gateway: Vec<String>,
    pub symmetric: bool,
    /// A command that fixes the asymmetry, when there is one.
    pub fix: Option<String>,
}

fn pick_probe(snap: &Snapshot, family: Family) -> IpAddr {
    let list: &[&str] = match family {
        Family::V4 => &PROBES_V4,
        Family::V6 => &PROBES_V6,
    };
    let inside = |ip: &IpAddr| {
        snap.links
            .iter()
            .flat_map(|l| l.addrs.iter())
            .any(|a| a.net.trunc().contains(ip))
    };
    let parsed: Vec<IpAddr> = list.iter().filter_map(|s| s.parse().ok()).collect();
    parsed
        .iter()
        .copied()
        .find(|p| !inside(p))
        .or_else(|| parsed.first().copied())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 113)))
}

/// Why a reply lookup failed, in words: the kernel answers a lookup that
/// lands on a `blackhole` route with EINVAL, `unreachable` with EHOSTUNREACH,
/// `prohibit` with EACCES, and no route at all with ENETUNREACH.
fn no_route_reason(snap: &Snapshot, family: Family, e: &KernelError) -> String {
    use crate::kernel::errno;
    let has_special = snap.routes.iter().any(|r| {
        !r.kind.is_unicast() && r.family() == family && r.table != crate::model::RT_TABLE_LOCAL
    });
    match e.errno() {
        Some(errno::ENETUNREACH) => "no route".to_string(),
        Some(errno::EINVAL) if has_special => "blackhole route: replies are dropped".to_string(),
        Some(EHOSTUNREACH) if has_special => "unreachable route: replies are refused".to_string(),
        Some(EACCES) if has_special => "prohibit route: replies are refused".to_string(),
        _ => e.source.to_string(),
    }
}

const EHOSTUNREACH: i32 = 113;
const EACCES: i32 = 13;

/// The first rule (by priority) that a lookup from `src` would follow into
/// `table`.
fn deciding_rule(snap: &Snapshot, src: IpAddr, table: u32) -> Option<String> {
    let family = Family::of(&src);
    let mut rules: Vec<_> = snap
        .rules
        .iter()
        .filter(|r| r.family == family && r.table == table && !r.other_selectors)
        .filter(|r| r.src.is_none_or(|s| s.contains(&src)))
        .collect();
    rules.sort_by_key(|r| r.priority);
    rules.first().map(|r| render::rule_show(r))
}

/// Diagnose the namespace behind `k`. `fix_command` is the apply command for
/// this target, without gateway hints and already shell-quoted (e.g.
/// "symroute apply --netns /run/netns/web"); hints added here are quoted.
pub fn diagnose<K: Kernel>(k: &mut K, fix_command: &str) -> Result<Diagnosis, KernelError> {
    let snap = k.snapshot()?;
    let name = |idx: u32| snap.link(idx).map(|l| l.name.clone());

    // The main table's default routes.
    let mut defaults: Vec<DefaultRoute> = snap
        .main_defaults()
        .map(|r| DefaultRoute {
            route: render::route_show(r, Some(&snap)),
            interface: name(r.oif).unwrap_or_else(|| "(multipath)".into()),
            family: r.family(),
            metric: r.metric,
            selected: false,
        })
        .collect();
    for family in [Family::V4, Family::V6] {
        if let Some(best) = defaults
            .iter_mut()
            .filter(|d| d.family == family)
            .min_by_key(|d| d.metric)
        {
            best.selected = true;
        }
    }
    let default_route_reason = {
        let mut parts = Vec::new();
        for family in [Family::V4, Family::V6] {
            let of: Vec<&DefaultRoute> = defaults.iter().filter(|d| d.family == family).collect();
            match of.as_slice() {
                [] => {}
                [one] => parts.push(format!(
                    "{family}: main has one default route, via {} — every reply whose source has no rule of its own leaves there",
                    one.interface
                )),
                many => {
                    let low = many.iter().map(|d| d.metric).min().unwrap_or(0);
                    let tied: Vec<&str> = many
                        .iter()
                        .filter(|d| d.metric == low)
                        .map(|d| d.interface.as_str())
                        .collect();
                    if tied.len() > 1 {
                        // fib_select_default: the first whose gateway's
                        // neighbour entry is not known dead (field-facts 6).
                        parts.push(crate::equal_defaults::sentence(
                            family,
                            tied.len(),
                            low,
                            &tied.join(", "),
                        ));
                        continue;
                    }
                    let sel = many.iter().find(|d| d.selected).map(|d| d.interface.clone());
                    parts.push(format!(
                        "{family}: main has {} default routes; the lowest metric wins ({})",
                        many.len(),
                        sel.unwrap_or_default()
                    ));
                }
            }
        }
        if parts.is_empty() {
            "main has no default route: replies to other subnets have no way out".to_string()
        } else {
            parts.join("; ")
        }
    };

    let mut addresses = Vec::new();
    let mut without_gw = Vec::new();
    for link in snap.links.iter().filter(|l| !l.loopback) {
        let has_default = snap.routes.iter().any(|r| {
            r.is_default()
                && r.kind.is_unicast()
                && (r.oif == link.index || r.multipath.iter().any(|n| n.oif == link.index))
        });
        if link.global_addrs().next().is_some() && !has_default {
            without_gw.push(link.name.clone());
        }
        for a in link.global_addrs() {
            let addr = a.addr();
            let probe = pick_probe(&snap, a.family());
            let q = RouteQuery {
                dst: probe,
                src: Some(addr),
                iif: None,
            };
            let rep = match k.route_get(&q) {
                Ok(ans) if ans.kind.is_unicast() || ans.oif != 0 => {
                    let symmetric = ans.oif == link.index;
                    AddressReport {
                        interface: link.name.clone(),
                        address: addr,
                        probe,
                        reply_interface: name(ans.oif),
                        reply_gateway: ans.gateway,
                        table: Some(ans.table),
                        rule: deciding_rule(&snap, addr, ans.table),
                        strict_rpf_passes: symmetric,
                        verdict: if symmetric {
                            Verdict::Symmetric
                        } else {
                            Verdict::Asymmetric
                        },
                        error: None,
                    }
                }
                Ok(ans) => AddressReport {
                    interface: link.name.clone(),
                    address: addr,
                    probe,
                    reply_interface: None,
                    reply_gateway: None,
                    table: Some(ans.table),
                    rule: deciding_rule(&snap, addr, ans.table),
                    strict_rpf_passes: false,
                    verdict: Verdict::NoRoute,
                    error: Some(format!("route type {}", ans.kind)),
                },
                Err(e) => AddressReport {
                    interface: link.name.clone(),
                    address: addr,
                    probe,
                    reply_interface: None,
                    reply_gateway: None,
                    table: None,
                    rule: None,
                    strict_rpf_passes: false,
                    verdict: Verdict::NoRoute,
                    error: Some(no_route_reason(&snap, a.family(), &e)),
                },
            };
            addresses.push(rep);
        }
    }
    let symmetric = addresses.iter().all(|a| a.verdict == Verdict::Symmetric);
    let fix = (!symmetric).then(|| {
        let mut cmd = fix_command.to_string();
        let broken: std::collections::BTreeSet<&str> = addresses
            .iter()
            .filter(|a| a.verdict != Verdict::Symmetric)
            .map(|a| a.interface.as_str())
            .collect();
        for ifname in broken {
            if without_gw.iter().any(|n| n == ifname) {
                cmd.push(' ');
                cmd.push_str("--gateway ");
                cmd.push_str(&render::shell_quote(&format!("{ifname}=GATEWAY")));
            }
        }
        cmd
    });
    Ok(Diagnosis {
        addresses,
        default_routes: defaults,
        default_route_reason,
        interfaces_without_gateway: without_gw,
        symmetric,
        fix,
    })
}
