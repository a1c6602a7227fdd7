//! Equal-metric default routes in a namespace's main table, and what they
//! mean for replies. Pure.
//!
//! Podman's netavark gives every network with a gateway a default route of
//! metric 100, so a container on two such networks has two equal defaults.
//! The kernel keeps both; for a lookup that lands on them it takes the first
//! whose gateway has no neighbour entry known to be dead
//! (`fib_select_default`'s check), so the way out changes with ARP state: an
//! address reached on one network replies through it until the container
//! talks through the other one's gateway, and through the other afterwards.
//! `ip route get` (and a diagnosis) sees only the choice of the moment.

use std::net::IpAddr;

use serde::Serialize;

use crate::diagnose::Diagnosis;
use crate::model::{Family, RT_TABLE_MAIN, Snapshot};

/// Two or more default routes of one family sharing the lowest metric in main.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EqualDefaults {
    pub family: Family,
    pub metric: u32,
    /// (interface, gateway) of each, in the kernel's order.
    pub via: Vec<(String, Option<IpAddr>)>,
}

impl EqualDefaults {
    /// The interfaces, "eth0, eth1".
    pub fn interfaces(&self) -> String {
        self.via
            .iter()
            .map(|(i, _)| i.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What they mean, in words.
    pub fn text(&self) -> String {
        sentence(self.family, self.via.len(), self.metric, &self.interfaces())
    }
}

/// The one wording of `count` default routes of `family` tied at `metric`
/// in main (via `interfaces`, "eth0, eth1"): used by every diagnosis.
pub fn sentence(family: Family, count: usize, metric: u32, interfaces: &str) -> String {
    format!(
        "{family}: main has {count} default routes of equal metric {metric} (via {interfaces}): the kernel uses the first whose gateway's neighbour (ARP) entry is not known to be dead, so which one a reply takes depends on ARP state and changes with it"
    )
}

/// The equal-metric default groups of `snap`'s main table (at most one per
/// family: the lowest metric, when two or more routes share it).
pub fn equal_defaults(snap: &Snapshot) -> Vec<EqualDefaults> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        let defaults: Vec<_> = snap
            .main_defaults()
            .filter(|r| r.family() == family && r.multipath.is_empty())
            .collect();
        let Some(min) = defaults.iter().map(|r| r.metric).min() else {
            continue;
        };
        let best: Vec<_> = defaults.iter().filter(|r| r.metric == min).collect();
        if best.len() < 2 {
            continue;
        }
        out.push(EqualDefaults {
            family,
            metric: min,
            via: best
                .iter()
                .map(|r| {
                    let name = snap
                        .link(r.oif)
                        .map_or_else(|| format!("if{}", r.oif), |l| l.name.clone());
                    (name, r.gateway)
                })
                .collect(),
        });
    }
    out
}

/// The addresses of `d` whose reply path depends on ARP state: the lookup
/// went to main and landed on an equal-metric group that holds both the
/// address's own interface and the one the reply takes now (an interface
/// outside the group replies through another one whatever ARP says).
pub fn arp_dependent(d: &Diagnosis, groups: &[EqualDefaults]) -> Vec<IpAddr> {
    d.addresses
        .iter()
        .filter(|a| a.table == Some(RT_TABLE_MAIN))
        .filter(|a| {
            groups.iter().any(|g| {
                g.family == Family::of(&a.address)
                    && g.via.iter().any(|(i, _)| *i == a.interface)
                    && a.reply_interface
                        .as_ref()
                        .is_some_and(|r| g.via.iter().any(|(i, _)| i == r))
            })
        })
        .map(|a| a.address)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{AddressReport, Verdict};
    use crate::model::{IfAddr, Link, Route, Scope};

    fn link(index: u32, name: &str, addr: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mac: None,
            up: true,
            loopback: false,
            addrs: vec![IfAddr {
                net: addr.parse().expect("prefix"),
                global: true,
                tentative: false,
                dad_failed: false,
            }],
        }
    }

    fn default_via(oif: u32, gw: &str, metric: u32) -> Route {
        Route {
            dst: "0.0.0.0/0".parse().expect("prefix"),
            gateway: Some(gw.parse().expect("ip")),
            oif,
            metric,
            table: RT_TABLE_MAIN,
            prefsrc: None,
            scope: Scope::Universe,
            kind: crate::model::RouteType::UNICAST,
            onlink: false,
            protocol: 4,
            multipath: Vec::new(),
        }
    }

    /// Podman's two networks (netavark: metric 100 each).
    fn podman(metric_lan: u32) -> Snapshot {
        Snapshot {
            links: vec![
                link(2, "eth0", "203.0.113.2/24"),
                link(3, "eth1", "192.0.2.40/24"),
            ],
            rules: Vec::new(),
            routes: vec![
                default_via(2, "203.0.113.1", 100),
                default_via(3, "192.0.2.1", metric_lan),
            ],
        }
    }

    fn report(interface: &str, address: &str, reply: &str, table: u32) -> AddressReport {
        AddressReport {
            interface: interface.into(),
            address: address.parse().expect("ip"),
            probe: "198.51.100.113".parse().expect("ip"),
            reply_interface: Some(reply.into()),
            reply_gateway: None,
            table: Some(table),
            rule: None,
            strict_rpf_passes: interface == reply,
            verdict: if interface == reply {
                Verdict::Symmetric
            } else {
                Verdict::Asymmetric
            },
            error: None,
        }
    }

    fn diagnosis(addresses: Vec<AddressReport>) -> Diagnosis {
        Diagnosis {
            addresses,
            default_routes: Vec::new(),
            default_route_reason: String::new(),
            interfaces_without_gateway: Vec::new(),
            symmetric: false,
            fix: None,
        }
    }

    #[test]
    fn netavark_equal_defaults_are_found_and_explained() {
        let g = equal_defaults(&podman(100));
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].metric, 100);
        assert_eq!(g[0].interfaces(), "eth0, eth1");
        let t = g[0].text();
        assert!(
            t.contains("equal metric 100") && t.contains("depends on ARP state"),
            "{t}"
        );
        // A lower metric decides: nothing equal.
        assert!(equal_defaults(&podman(50)).is_empty());
        assert!(equal_defaults(&podman(200)).is_empty());
    }

    #[test]
    fn only_replies_landing_on_the_group_depend_on_arp() {
        let g = equal_defaults(&podman(100));
        let d = diagnosis(vec![
            // Both in the group, whatever the kernel picks now.
            report("eth0", "203.0.113.2", "eth0", RT_TABLE_MAIN),
            report("eth1", "192.0.2.40", "eth0", RT_TABLE_MAIN),
            // symroute's own table decided: certain.
            report("eth1", "192.0.2.41", "eth1", 10001),
        ]);
        let dep = arp_dependent(&d, &g);
        assert_eq!(
            dep,
            vec![
                "203.0.113.2".parse::<IpAddr>().expect("ip"),
                "192.0.2.40".parse().expect("ip")
            ]
        );
        assert!(arp_dependent(&d, &[]).is_empty());
    }
}
