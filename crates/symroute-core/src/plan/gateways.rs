//! Gateways: the link's connected prefixes, the on-link test, the caller's
//! gateways checked against the link, and main's default routes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{GatewayHint, PlanError};
use crate::model::{Family, Link, Snapshot};

/// The connected prefixes of a link's global addresses of one family:
/// (network, first address in it).
pub(crate) fn connected(link: &Link, family: Family) -> Vec<(IpNet, IpAddr)> {
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

pub(crate) use crate::request::on_link;

/// An IPv4 address that is the network or broadcast address of one of the
/// link's prefixes shorter than /31 (a /31 has neither, RFC 3021): the
/// prefix and which one it is.
pub(crate) fn network_or_broadcast(link: &Link, gw: &IpAddr) -> Option<(IpNet, &'static str)> {
    let IpAddr::V4(v4) = gw else {
        return None;
    };
    link.global_addrs()
        .filter_map(|a| match a.net {
            IpNet::V4(n) if n.prefix_len() < 31 => Some(n),
            _ => None,
        })
        .find_map(|n| {
            if n.network() == *v4 {
                Some((IpNet::V4(n.trunc()), "network"))
            } else if n.broadcast() == *v4 {
                Some((IpNet::V4(n.trunc()), "broadcast"))
            } else {
                None
            }
        })
}

/// Validate the caller's gateways: (ifindex, family) -> gateway.
pub(crate) fn given_gateways(
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
        if let Some((prefix, which)) = network_or_broadcast(link, &h.gateway) {
            return Err(PlanError::NetworkOrBroadcast {
                ifname: h.ifname.clone(),
                gateway: h.gateway,
                prefix,
                which,
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
pub(crate) fn main_defaults(snap: &Snapshot) -> BTreeMap<(u32, Family), (IpAddr, bool)> {
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
    for r in snap.main_defaults() {
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
