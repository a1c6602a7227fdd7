//! One CNI request, checked: the `CNI_*` variables as the spec defines them
//! and the configuration's options, and the one translation of a request
//! into the core's [`PlanRequest`] for a single interface.
//!
//! The request asks for [`Selection::Only`] the interface CNI_IFNAME: its
//! own table from the band (or, with sbr's `table`, that table and rules
//! only), its gateways and prevResult's routes through it. Which gateway
//! wins, per family: the configuration's `gateways`, then prevResult's IP
//! gateways, then a prevResult default route; one that is not on the link
//! is left out with a log line.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use symroute_core::model::{Family, Link};
use symroute_core::plan::{GatewayHint, OnlyInterface, PlanRequest, RouteHint, Selection};

use crate::error::{CniError, code};
use crate::runner::Env;
use crate::state;
use crate::types::{self, NetConf, Options, PrevResult};

/// A request: its environment, configuration, checked options and typed
/// prevResult.
pub struct Request<'a> {
    pub env: &'a Env,
    pub conf: &'a NetConf,
    pub opts: &'a Options,
    pub prev: Option<&'a PrevResult>,
}

impl Request<'_> {
    /// The network's name ("" when the configuration has none).
    pub fn network(&self) -> &str {
        self.conf.name.as_deref().unwrap_or("")
    }

    /// CNI_CONTAINERID, checked as the spec defines it.
    pub fn container_id(&self) -> Result<&str, CniError> {
        match self.env.get("CNI_CONTAINERID") {
            None | Some("") => Err(CniError::new(code::BAD_ENV, "CNI_CONTAINERID is not set")),
            Some(id) if types::valid_name(id) => Ok(id),
            Some(id) => Err(CniError::new(
                code::BAD_ENV,
                format!(
                    "CNI_CONTAINERID={id:?}: expected letters, digits, '_', '.' and '-', starting with a letter or digit"
                ),
            )),
        }
    }

    /// CNI_IFNAME, checked as the kernel and the spec accept it.
    pub fn ifname(&self) -> Result<&str, CniError> {
        match self.env.get("CNI_IFNAME") {
            None | Some("") => Err(CniError::new(code::BAD_ENV, "CNI_IFNAME is not set")),
            Some(n) if valid_ifname(n) => Ok(n),
            Some(n) => Err(CniError::new(
                code::BAD_ENV,
                format!(
                    "CNI_IFNAME={n:?}: not an interface name (1-15 bytes, not . or .., no '/', ':' or white space)"
                ),
            )),
        }
    }

    /// CNI_NETNS: an absolute path, or None when empty (DEL allows that).
    pub fn netns(&self) -> Result<Option<&Path>, CniError> {
        match self.env.get("CNI_NETNS") {
            None | Some("") => Ok(None),
            Some(p) if p.starts_with('/') => Ok(Some(Path::new(p))),
            Some(p) => Err(CniError::new(
                code::BAD_ENV,
                format!("CNI_NETNS={p:?}: expected an absolute path"),
            )),
        }
    }

    /// CNI_NETNS, which ADD and CHECK need.
    pub fn required_netns(&self) -> Result<&Path, CniError> {
        self.netns()?
            .ok_or_else(|| CniError::new(code::BAD_ENV, "CNI_NETNS is not set"))
    }

    /// CNI_ARGS must be `KEY=VALUE` pairs separated by ';' (symroute uses
    /// none of them).
    pub fn check_args(&self) -> Result<(), CniError> {
        let Some(args) = self.env.get("CNI_ARGS") else {
            return Ok(());
        };
        for pair in args.split(';').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                _ => {
                    return Err(CniError::new(
                        code::BAD_ENV,
                        format!("CNI_ARGS={args:?}: {pair:?} is not KEY=VALUE"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The state file of attachment (`cid`, `ifname`).
    pub fn state_path(&self, cid: &str, ifname: &str) -> PathBuf {
        state::state_path(&self.opts.data_dir, self.network(), cid, ifname)
    }
}

/// An interface name the kernel accepts (dev_valid_name).
pub fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != "."
        && n != ".."
        && !n
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

/// The plan request for one attachment, and notes for the log.
#[derive(Debug, Clone, Default)]
pub struct Built {
    pub request: PlanRequest,
    pub notes: Vec<String>,
}

use symroute_core::request::on_link;

/// Build the plan request for interface `link` (CNI_IFNAME) from the
/// configuration and prevResult:
/// - gateways, per family: the configuration's `gateways` first, then the
///   gateway of the interface's IPs in prevResult, then a default route of
///   prevResult; a prevResult gateway that is not on the link is left out
///   (the main table's default route on the link is the planner's next
///   choice);
/// - a prevResult IP that is not on the interface is skipped, with a note
///   naming it (sbr does the same: it routes what the interface has);
/// - routes: prevResult's other routes whose gateway (their own, else the
///   family's) is on the link, or that have no gateway at all, and that no
///   `table` of their own places elsewhere;
/// - sbr's `table`: that table, rules only.
///
/// A configured gateway that does not fit the link is an error (code 7).
pub fn build_request(
    opts: &Options,
    prev: Option<&PrevResult>,
    ifname: &str,
    netns: Option<&str>,
    link: &Link,
) -> Result<Built, CniError> {
    let mut built = Built::default();
    let has_family = |f: Family| link.global_addrs().any(|a| a.family() == f);
    let mut gateways: BTreeMap<Family, IpAddr> = BTreeMap::new();
    for (family, gw) in &opts.gateways {
        if !has_family(*family) {
            built.notes.push(format!(
                "gateways: {gw} ignored: {ifname} has no global {family} address"
            ));
            continue;
        }
        if !on_link(link, gw) {
            let prefixes: Vec<String> = link
                .global_addrs()
                .filter(|a| a.family() == *family)
                .map(|a| a.net.trunc().to_string())
                .collect();
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "gateways: {gw} is not on {ifname} (its {family} prefixes: {}; its own addresses cannot be gateways)",
                    prefixes.join(", ")
                ),
            ));
        }
        gateways.insert(*family, *gw);
    }
    let mut offer = |built: &mut Built, gw: IpAddr, from: &str| {
        let family = Family::of(&gw);
        if gateways.contains_key(&family) || !has_family(family) {
            return;
        }
        if on_link(link, &gw) {
            gateways.insert(family, gw);
        } else {
            built.notes.push(format!(
                "{from}: gateway {gw} is not on {ifname}'s prefixes: not used"
            ));
        }
    };
    if let Some(prev) = prev {
        for ip in prev.ips_for(ifname, netns) {
            if !link.addrs.iter().any(|a| a.addr() == ip.address.addr()) {
                built.notes.push(format!(
                    "prevResult IP {} is not on {ifname}: skipped (no rule for it)",
                    ip.address
                ));
                continue;
            }
            if let Some(gw) = ip.gateway {
                offer(&mut built, gw, &format!("prevResult IP {}", ip.address));
            }
        }
        for r in prev.routes.iter().filter(|r| r.dst.prefix_len() == 0) {
            if let (Some(gw), None) = (r.gw, r.table) {
                offer(&mut built, gw, &format!("prevResult route {}", r.dst));
            }
        }
        for r in prev.routes.iter().filter(|r| r.dst.prefix_len() != 0) {
            let family = Family::of(&r.dst.addr());
            if r.table.is_some() || !has_family(family) {
                continue;
            }
            let gw = r.gw.or_else(|| gateways.get(&family).copied());
            if let Some(g) = gw
                && !on_link(link, &g)
            {
                continue; // a route through another interface
            }
            built.request.routes.push(RouteHint {
                ifname: ifname.to_string(),
                dst: r.dst.trunc(),
                gateway: gw,
            });
        }
    }
    built.request.gateways = gateways
        .values()
        .map(|gw| GatewayHint {
            ifname: ifname.to_string(),
            gateway: *gw,
        })
        .collect();
    built.request.selection = Selection::Only(OnlyInterface {
        ifname: ifname.to_string(),
        table: opts.table,
        rules_only: opts.table.is_some(),
    });
    Ok(built)
}
