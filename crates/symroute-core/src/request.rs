//! The one request builder: what every source (command line, Docker, CNI)
//! needs to turn its facts into a [`PlanRequest`]'s gateways, with one
//! on-link rule and one gateway precedence.
//!
//! - On link: a gateway is usable on a link when it lies inside the prefix of
//!   one of the link's global addresses (a host address, /32 or /128, has no
//!   prefix and covers nothing), or is IPv6 link-local (fe80::/10, on-link on
//!   every interface); never one of the link's own addresses.
//! - Precedence, per interface and family: a gateway the caller names
//!   ([`GatewaySource::Given`]), then the namespace's own default route in
//!   main on that link ([`GatewaySource::MainTable`]), then the default route
//!   symroute put in the link's table earlier ([`GatewaySource::Kept`]). The
//!   planner applies the last two; sources combine the gateways they know with
//!   [`merge_given`] and [`offer`].

use std::net::IpAddr;

use crate::model::{Family, Link, is_link_local_v6};
use crate::plan::{GatewayHint, GatewaySource};

/// Whether `gw` is a neighbour on `link` (see the module's rule).
pub fn on_link(link: &Link, gw: &IpAddr) -> bool {
    let family = Family::of(gw);
    if link.addrs.iter().any(|a| a.addr() == *gw) {
        return false;
    }
    (family == Family::V6 && is_link_local_v6(gw))
        || link
            .global_addrs()
            .filter(|a| a.family() == family && a.net.prefix_len() < family.host_prefix())
            .any(|a| a.net.trunc().contains(gw))
}

/// Gateways of two sources combined: every gateway of `given`, plus those of
/// `lower` for an (interface, family) `given` does not name. E.g. the
/// command line's `--gateway` over what Docker reports.
pub fn merge_given(given: Vec<GatewayHint>, lower: Vec<GatewayHint>) -> Vec<GatewayHint> {
    let mut out: Vec<GatewayHint> = lower
        .into_iter()
        .filter(|l| {
            !given
                .iter()
                .any(|g| g.ifname == l.ifname && Family::of(&g.gateway) == Family::of(&l.gateway))
        })
        .collect();
    out.extend(given);
    out
}

/// Offer `gw` (from `from`, e.g. "prevResult IP 10.0.0.2/24" or "network
/// frontend") for `link`: taken when the family has no gateway yet in
/// `chosen` and it is on link; a gateway that is not on link is left out with
/// a note saying why. A family the link has no global address of is skipped.
pub fn offer(
    link: &Link,
    chosen: &mut Vec<GatewayHint>,
    notes: &mut Vec<String>,
    gw: IpAddr,
    from: &str,
) {
    let family = Family::of(&gw);
    if chosen
        .iter()
        .any(|c| c.ifname == link.name && Family::of(&c.gateway) == family)
        || !link.global_addrs().any(|a| a.family() == family)
    {
        return;
    }
    if on_link(link, &gw) {
        chosen.push(GatewayHint {
            ifname: link.name.clone(),
            gateway: gw,
        });
    } else {
        notes.push(format!(
            "{from}: gateway {gw} is not on {}'s prefixes: not used",
            link.name
        ));
    }
}

/// The planner's choice for one (interface, family), by precedence: given,
/// then main's default route, then the kept one; each with its `onlink` flag.
pub fn choose(
    given: Option<IpAddr>,
    main: Option<(IpAddr, bool)>,
    kept: Option<(IpAddr, bool)>,
) -> Option<(IpAddr, GatewaySource, bool)> {
    given
        .map(|g| (g, GatewaySource::Given, false))
        .or(main.map(|(g, o)| (g, GatewaySource::MainTable, o)))
        .or(kept.map(|(g, o)| (g, GatewaySource::Kept, o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IfAddr;

    fn link(addrs: &[&str]) -> Link {
        Link {
            index: 2,
            name: "eth1".into(),
            mac: None,
            up: true,
            loopback: false,
            addrs: addrs
                .iter()
                .map(|a| IfAddr {
                    net: a.parse().unwrap(),
                    global: true,
                    tentative: false,
                    dad_failed: false,
                })
                .collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hint(ifname: &str, g: &str) -> GatewayHint {
        GatewayHint {
            ifname: ifname.into(),
            gateway: ip(g),
        }
    }

    #[test]
    fn the_on_link_rule() {
        let l = link(&["172.19.0.2/16", "198.51.100.7/32", "2001:db8::2/64"]);
        assert!(on_link(&l, &ip("172.19.255.1")));
        assert!(on_link(&l, &ip("2001:db8::1")));
        assert!(
            on_link(&l, &ip("fe80::1")),
            "IPv6 link-local is on every link"
        );
        assert!(
            !on_link(&l, &ip("172.19.0.2")),
            "its own address is no gateway"
        );
        assert!(!on_link(&l, &ip("172.20.0.1")));
        assert!(!on_link(&l, &ip("198.51.100.8")), "a /32 covers nothing");
        assert!(!on_link(&l, &ip("198.51.100.7")));
        assert!(!on_link(&l, &ip("2001:db9::1")));
    }

    #[test]
    fn given_gateways_win_per_interface_and_family() {
        let merged = merge_given(
            vec![hint("eth1", "172.19.0.254")],
            vec![
                hint("eth1", "172.19.0.1"),
                hint("eth1", "2001:db8::1"),
                hint("eth2", "172.20.0.1"),
            ],
        );
        let mut got: Vec<String> = merged
            .iter()
            .map(|h| format!("{}={}", h.ifname, h.gateway))
            .collect();
        got.sort();
        assert_eq!(
            got,
            ["eth1=172.19.0.254", "eth1=2001:db8::1", "eth2=172.20.0.1"]
        );
    }

    #[test]
    fn offers_take_the_first_on_link_gateway_per_family() {
        let l = link(&["172.19.0.2/16"]);
        let (mut chosen, mut notes) = (Vec::new(), Vec::new());
        offer(&l, &mut chosen, &mut notes, ip("10.0.0.1"), "prevResult IP");
        offer(
            &l,
            &mut chosen,
            &mut notes,
            ip("172.19.0.1"),
            "prevResult IP",
        );
        offer(
            &l,
            &mut chosen,
            &mut notes,
            ip("172.19.0.9"),
            "prevResult route",
        );
        offer(
            &l,
            &mut chosen,
            &mut notes,
            ip("2001:db8::1"),
            "no IPv6 here",
        );
        assert_eq!(chosen, vec![hint("eth1", "172.19.0.1")]);
        assert_eq!(
            notes,
            ["prevResult IP: gateway 10.0.0.1 is not on eth1's prefixes: not used"]
        );
    }

    #[test]
    fn precedence_given_main_kept() {
        let (g, m, k) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        assert_eq!(
            choose(Some(g), Some((m, true)), Some((k, false))),
            Some((g, GatewaySource::Given, false))
        );
        assert_eq!(
            choose(None, Some((m, true)), Some((k, false))),
            Some((m, GatewaySource::MainTable, true))
        );
        assert_eq!(
            choose(None, None, Some((k, true))),
            Some((k, GatewaySource::Kept, true))
        );
        assert_eq!(choose(None, None, None), None);
    }
}
