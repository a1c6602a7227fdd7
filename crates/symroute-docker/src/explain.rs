//! Why Docker put a container's default route where it is: libnetwork's
//! endpoint order (`Endpoint.Less`), then the first endpoint with a gateway
//! wins, per address family. Pure.
//!
//! The order: higher `gw-priority` first (Docker 28+); `docker_gwbridge`
//! last; internal networks last; dual-stack before single-stack before no
//! gateway; then network name, alphabetically.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::client::NetworkInfo;
use crate::model::Attachment;
use symroute_core::model::Family;

/// What decided the default route of one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultChoice {
    pub family: Family,
    /// The network holding the default route.
    pub network: String,
    /// The rule of libnetwork's order that decided, in words.
    pub reason: String,
}

/// The default-route decision for a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Networks in libnetwork's order.
    pub order: Vec<String>,
    pub choices: Vec<DefaultChoice>,
}

struct Key<'a> {
    a: &'a Attachment,
    internal: bool,
    gwbridge: bool,
    /// 0 dual-stack, 1 single-stack, 2 no gateway.
    stack: u8,
}

fn key<'a>(a: &'a Attachment, nets: &BTreeMap<String, NetworkInfo>) -> Key<'a> {
    let info = nets.get(&a.network_id).or_else(|| nets.get(&a.network));
    let gws = u8::from(a.gateway4.is_some()) + u8::from(a.gateway6.is_some());
    Key {
        a,
        internal: info.is_some_and(|n| n.internal),
        gwbridge: a.network == "docker_gwbridge",
        stack: 2 - gws,
    }
}

fn cmp(x: &Key, y: &Key) -> std::cmp::Ordering {
    y.a.gw_priority
        .cmp(&x.a.gw_priority)
        .then(x.gwbridge.cmp(&y.gwbridge))
        .then(x.internal.cmp(&y.internal))
        .then(x.stack.cmp(&y.stack))
        .then(x.a.network.cmp(&y.a.network))
}

/// Why `w` sorts before `l`, in words.
fn why(w: &Key, l: &Key) -> String {
    let (wn, ln) = (&w.a.network, &l.a.network);
    if w.a.gw_priority != l.a.gw_priority {
        format!(
            "gw-priority: {wn} has {} > {ln}'s {}",
            w.a.gw_priority, l.a.gw_priority
        )
    } else if w.gwbridge != l.gwbridge {
        format!("{ln} is docker_gwbridge, which always comes last")
    } else if w.internal != l.internal {
        format!("{ln} is internal, and internal networks come last")
    } else if w.stack != l.stack {
        let words = ["dual-stack", "single-stack", "without gateway"];
        format!(
            "{wn} is {} and {ln} is {}: dual-stack comes before single-stack",
            words[w.stack as usize], words[l.stack as usize]
        )
    } else {
        format!(
            "network names sort alphabetically: \"{wn}\" < \"{ln}\" (nothing else tells them apart)"
        )
    }
}

/// Explain the default route of a container's attachments.
pub fn explain(attachments: &[Attachment], nets: &BTreeMap<String, NetworkInfo>) -> Explanation {
    let mut keys: Vec<Key> = attachments.iter().map(|a| key(a, nets)).collect();
    keys.sort_by(cmp);
    let mut choices = Vec::new();
    for family in [Family::V4, Family::V6] {
        let has = |k: &&Key| match family {
            Family::V4 => k.a.gateway4.is_some(),
            Family::V6 => k.a.gateway6.is_some(),
        };
        let mut with_gw = keys.iter().filter(has);
        let Some(winner) = with_gw.next() else {
            continue;
        };
        let reason = match with_gw.next() {
            Some(runner_up) => why(winner, runner_up),
            None if keys.len() > 1 => format!(
                "{} is the only network with an {family} gateway",
                winner.a.network
            ),
            None => format!("{} is the only network", winner.a.network),
        };
        choices.push(DefaultChoice {
            family,
            network: winner.a.network.clone(),
            reason,
        });
    }
    Explanation {
        order: keys.iter().map(|k| k.a.network.clone()).collect(),
        choices,
    }
}

/// The interface a network's traffic crosses on the host: the one the
/// engine names ([`NetworkInfo::engine_interface`], Podman), else Docker's
/// bridge or macvlan/ipvlan parent. `podman`: never guess Docker's names
/// (`br-<id>`, `docker0`) for a Podman network.
pub fn host_interface(n: &NetworkInfo, podman: bool) -> Option<String> {
    if let Some(i) = &n.engine_interface {
        return Some(i.clone());
    }
    if podman {
        return n.options.get("parent").cloned();
    }
    match n.driver.as_str() {
        "bridge" => Some(
            n.options
                .get("com.docker.network.bridge.name")
                .cloned()
                .unwrap_or_else(|| {
                    if n.name == "bridge" {
                        "docker0".to_string()
                    } else {
                        format!("br-{}", n.id.chars().take(12).collect::<String>())
                    }
                }),
        ),
        "macvlan" | "ipvlan" => n.options.get("parent").cloned(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(name: &str, gw4: Option<&str>, gw6: Option<&str>, prio: i64) -> Attachment {
        Attachment {
            network: name.into(),
            network_id: format!("{name}-id"),
            mac: None,
            ipv4: None,
            gateway4: gw4.map(|g| g.parse().unwrap()),
            ipv6: None,
            gateway6: gw6.map(|g| g.parse().unwrap()),
            gw_priority: prio,
        }
    }

    fn net(name: &str, internal: bool) -> (String, NetworkInfo) {
        (
            format!("{name}-id"),
            NetworkInfo {
                id: format!("{name}-id"),
                name: name.into(),
                driver: "bridge".into(),
                internal,
                enable_ipv6: false,
                subnets: vec![],
                options: BTreeMap::default(),
                engine_interface: None,
            },
        )
    }

    #[test]
    fn the_seed_back_tier_wins_by_name() {
        let a = [
            att("front-tier", Some("172.18.0.1"), None, 0),
            att("back-tier", Some("172.19.0.1"), None, 0),
        ];
        let nets = [net("front-tier", false), net("back-tier", false)].into();
        let e = explain(&a, &nets);
        assert_eq!(e.order, ["back-tier", "front-tier"]);
        assert_eq!(e.choices.len(), 1);
        assert_eq!(e.choices[0].network, "back-tier");
        assert!(
            e.choices[0].reason.contains("alphabetically"),
            "{}",
            e.choices[0].reason
        );
    }

    #[test]
    fn gw_priority_beats_the_name() {
        let a = [
            att("aaa", Some("10.0.0.1"), None, 0),
            att("zzz", Some("10.1.0.1"), None, 10),
        ];
        let nets = [net("aaa", false), net("zzz", false)].into();
        let e = explain(&a, &nets);
        assert_eq!(e.choices[0].network, "zzz");
        assert!(e.choices[0].reason.starts_with("gw-priority"));
    }

    #[test]
    fn internal_and_gwbridge_come_last() {
        let a = [
            att("aaa", Some("10.0.0.1"), None, 0),
            att("docker_gwbridge", Some("10.2.0.1"), None, 0),
            att("bbb", Some("10.1.0.1"), None, 0),
        ];
        let nets = [
            net("aaa", true),
            net("bbb", false),
            net("docker_gwbridge", false),
        ]
        .into();
        let e = explain(&a, &nets);
        assert_eq!(e.order, ["bbb", "aaa", "docker_gwbridge"]);
        assert_eq!(e.choices[0].network, "bbb");
        assert!(e.choices[0].reason.contains("internal"));
    }

    #[test]
    fn dual_stack_first_and_families_can_differ() {
        let a = [
            att("aaa", Some("10.0.0.1"), None, 0),
            att("bbb", Some("10.1.0.1"), Some("2001:db8::1"), 0),
            att("ccc", None, None, 0),
        ];
        let nets = [net("aaa", false), net("bbb", false), net("ccc", false)].into();
        let e = explain(&a, &nets);
        assert_eq!(e.order, ["bbb", "aaa", "ccc"]);
        assert_eq!(e.choices[0].network, "bbb");
        assert!(e.choices[0].reason.contains("dual-stack"));
        assert_eq!(e.choices[1].family, Family::V6);
        assert!(
            e.choices[1]
                .reason
                .contains("only network with an IPv6 gateway")
        );
    }

    #[test]
    fn host_interfaces() {
        let (_, mut n) = net("front", false);
        n.id = "0123456789abcdef".into();
        assert_eq!(
            host_interface(&n, false).as_deref(),
            Some("br-0123456789ab")
        );
        assert_eq!(host_interface(&n, true), None, "no br-<id> on Podman");
        n.name = "bridge".into();
        assert_eq!(host_interface(&n, false).as_deref(), Some("docker0"));
        n.options
            .insert("com.docker.network.bridge.name".into(), "brx".into());
        assert_eq!(host_interface(&n, false).as_deref(), Some("brx"));
        n.driver = "macvlan".into();
        n.options.insert("parent".into(), "eth9".into());
        assert_eq!(host_interface(&n, false).as_deref(), Some("eth9"));
        n.engine_interface = Some("podman1".into());
        assert_eq!(host_interface(&n, true).as_deref(), Some("podman1"));
    }
}
