//! ADD, DEL, CHECK, GC and STATUS: what each does with one attachment,
//! generic over the namespace access ([`Namespaces`]) and so over the
//! core's [`Kernel`]. Every change goes through the core engine:
//! [`engine::apply_to`] with [`Selection::Only`](symroute_core::plan::Selection)
//! for ADD (diff, execute, roll back on failure), [`engine::status`] for
//! CHECK; DEL and GC [`engine::clean_in`] with what [`crate::teardown`] selects
//! from the attachment's record.
//!
//! Every command holds the namespace's lock (the one every symroute writer
//! takes) from its snapshot to its last change.

use std::collections::BTreeSet;

use serde_json::Value;
use symroute_core::diff::Op;
use symroute_core::engine::{self, ApplyOptions, EngineError};
use symroute_core::kernel::Kernel;
use symroute_core::model::{Link, Protocol, Snapshot};
use symroute_core::render;
use symroute_core::report;

use crate::error::{CniError, code};
use crate::log::Log;
use crate::ns::{Namespace, Namespaces, OpenError};
use crate::request::{Request, build_request};
use crate::state::{self, AttachmentState};
use crate::teardown::Scope;

/// The core engine's error as a CNI error: a plan that cannot be made is
/// code 101, the rest (the kernel refused; all was rolled back) code 100.
fn engine_error(e: EngineError) -> CniError {
    match e {
        EngineError::Plan(p) => CniError::with_details(
            code::PLAN,
            "cannot plan the interface's routing",
            hint(&p.to_string()),
        ),
        // The configuration's `table` holds another attachment's routes.
        e @ EngineError::TableInUse { .. } => CniError::with_details(
            code::INVALID_CONFIG,
            e.to_string(),
            "name a table of your own with the \"table\" key, or leave it out to get one from the band",
        ),
        other => CniError::with_details(
            code::KERNEL,
            "changing the namespace's rules and routes failed",
            other.to_string(),
        ),
    }
}

/// A planner message in the CNI's words: gateways are given with the
/// configuration's `gateways` key (never the command line's `--gateway`).
fn hint(text: &str) -> String {
    let text = text.replace("--gateway ", "gateway ");
    if text.contains("gateway") {
        format!(
            "{text} (give the gateway with the configuration's \"gateways\" key, or let the previous plugin's result name one)"
        )
    } else {
        text
    }
}

fn kernel_error(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::with_details(code::KERNEL, what, e.to_string())
}

/// Open CNI_NETNS for ADD and CHECK: it must be a network namespace, and
/// not the host's. Never creates anything at that path.
fn open_target<N: Namespaces>(nss: &N, path: &std::path::Path) -> Result<N::Ns, CniError> {
    let ns = nss.open(path).map_err(|e| {
        CniError::with_details(
            code::BAD_ENV,
            format!("CNI_NETNS={}: cannot use it", path.display()),
            e.to_string(),
        )
    })?;
    ns.refuse_host()?;
    Ok(ns)
}

/// The attachments recorded in namespace `ns_id` other than (`cid`,
/// `ifname`) of `network`, from every network's state folder.
fn others_in(
    req: &Request<'_>,
    ns_id: (u64, u64),
    cid: &str,
    ifname: &str,
    log: &mut Log<'_>,
) -> Result<Vec<AttachmentState>, CniError> {
    let mut out = Vec::new();
    for (path, st) in state::list_all(&req.opts.data_dir)? {
        match st {
            Ok(s) if s.netns_id == ns_id => {
                if !(s.network == req.network() && s.container_id == cid && s.ifname == ifname) {
                    out.push(s);
                }
            }
            Ok(_) => {}
            Err(e) => log.line(&format!("{}: {e}: not considered", path.display())),
        }
    }
    Ok(out)
}

/// ADD: plan and apply the interface's routing; record it. Returns the
/// result to print (prevResult, unchanged).
pub fn add<'r, N: Namespaces>(
    nss: &N,
    req: &Request<'r>,
    log: &mut Log<'_>,
) -> Result<&'r Value, CniError> {
    let cid = req.container_id()?;
    let ifname = req.ifname()?;
    let netns = req.required_netns()?;
    req.check_args()?;
    log.attachment = format!("{cid}/{ifname}");
    let Some(prev_value) = req.conf.prev_result.as_ref() else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "prevResult is missing: symroute is a chained plugin; list it after the plugin that creates the interface",
        ));
    };
    let ns = open_target(nss, netns)?;
    let ns_id = ns.id();
    let _lock = ns.lock(req.opts.lock_timeout)?;
    if let Some(table) = req.opts.table
        && let Some(other) = others_in(req, ns_id, cid, ifname, log)?
            .into_iter()
            .find(|o| o.table == table && !o.rules_only)
    {
        return Err(CniError::with_details(
            code::INVALID_CONFIG,
            format!(
                "table {table} belongs to attachment {}/{} (network {:?}) in this namespace: symroute never changes another attachment's table",
                other.container_id, other.ifname, other.network
            ),
            "name a table of your own with the \"table\" key, or leave it out to get one from the band",
        ));
    }
    let mut k = ns.kernel()?;
    let snap = engine::settled_snapshot(&mut k, req.opts.dad_wait)
        .map_err(|e| kernel_error("read the namespace's state", e))?;
    let link = snap.link_by_name(ifname).ok_or_else(|| {
        CniError::new(
            code::PLAN,
            format!(
                "no interface {ifname} in namespace {}: the previous plugin did not create it",
                netns.display()
            ),
        )
    })?;
    let link_index = link.index;
    let built = build_request(req.opts, req.prev, ifname, netns.to_str(), link)?;
    for n in &built.notes {
        log.line(n);
    }
    if link.global_addrs().next().is_none() {
        log.line(&format!(
            "{ifname} has no global address: nothing to route, nothing changed"
        ));
        return Ok(prev_value);
    }
    let opts = ApplyOptions {
        settings: req.opts.settings,
        request: built.request,
        dry_run: false,
        dad_wait: req.opts.dad_wait,
        interrupt: None,
    };
    let report = engine::apply_to(&mut k, snap, &opts).map_err(engine_error)?;
    if let Some(skipped) = report.plan.skipped.iter().find(|s| s.name == ifname) {
        // Another writer (the host writer, another plugin configuration)
        // already routes this interface's replies: leave it to that one.
        log.line(&format!("{skipped}; nothing changed, nothing recorded"));
        return Ok(prev_value);
    }
    let Some(iface) = report.plan.interfaces.first() else {
        return Err(CniError::new(
            code::PLAN,
            format!("the plan for {ifname} is empty"),
        ));
    };
    let record = AttachmentState {
        network: req.network().to_string(),
        container_id: cid.to_string(),
        ifname: ifname.to_string(),
        link: Some(link_index),
        netns: netns.to_path_buf(),
        netns_id: ns_id,
        table: iface.table,
        rules_only: req.opts.table.is_some(),
        addrs: iface.addrs.iter().map(ipnet::IpNet::addr).collect(),
        protocol: req.opts.settings.protocol.get(),
        priority: req.opts.settings.priority,
    };
    if let Err(e) = state::save(&req.state_path(cid, ifname), &record) {
        // Undo this run's changes: a failed ADD leaves nothing behind.
        let undo: Vec<Op> = report.ops.iter().rev().map(Op::inverse).collect();
        if let Err(u) = engine::execute_all(&mut k, &undo) {
            log.line(&format!("undo after the state file failed: {u}"));
        }
        return Err(e);
    }
    log.line(&format!(
        "table {}, {} change(s){}",
        iface.table,
        report.ops.len(),
        report
            .ops
            .iter()
            .map(|o| format!("; {}", report::op_text(o, &report.snapshot)))
            .collect::<String>()
    ));
    for n in &iface.notes {
        log.line(n);
    }
    Ok(prev_value)
}

/// The snapshot's links, plus the recorded link when a rules-and-routes
/// dump has none: log lines name `dev net1`, never `dev if5`.
fn with_names(mut snap: Snapshot, scope: &Scope) -> Snapshot {
    if let Some(index) = scope.link
        && snap.link(index).is_none()
    {
        snap.links.push(Link {
            index,
            name: scope.ifname.clone(),
            mac: None,
            up: true,
            loopback: false,
            addrs: Vec::new(),
        });
    }
    snap
}

/// Remove one attachment's objects from an opened namespace, going on past
/// failures so one does not strand the rest.
fn clean_attachment<S: Namespace>(
    ns: &S,
    req: &Request<'_>,
    scope: &Scope,
    log: &mut Log<'_>,
) -> Result<(), CniError> {
    let _lock = ns.lock(req.opts.lock_timeout)?;
    let mut k = ns.kernel()?;
    let snap = if scope.table.is_some() && !scope.addrs.is_empty() {
        // ADD's record is enough: the link and its addresses are not needed.
        S::rules_and_routes(&mut k).map_err(|e| kernel_error("read the namespace's state", e))?
    } else {
        k.snapshot()
            .map_err(|e| kernel_error("read the namespace's state", e))?
    };
    let names = with_names(snap.clone(), scope);
    let space = scope.space(&req.opts.settings);
    let (removed, errors) =
        match engine::clean_in(&mut k, snap, &space, |own, snap| scope.select(own, snap)) {
            Ok(rep) => (rep.removed, Vec::new()),
            Err(EngineError::Clean { removed, errors }) => (removed, errors),
            Err(e) => return Err(engine_error(e)),
        };
    for op in &removed {
        log.line(&report::op_text(op, &names));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::with_details(
            code::CLEANUP,
            format!(
                "could not remove all of symroute's objects for {}",
                scope.ifname
            ),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }
}

/// DEL: remove the attachment's objects and its record. Succeeds when the
/// namespace is gone (its rules and routes went with it).
pub fn del<N: Namespaces>(nss: &N, req: &Request<'_>, log: &mut Log<'_>) -> Result<(), CniError> {
    let cid = req.container_id()?;
    let ifname = req.ifname()?;
    let netns = req.netns()?;
    req.check_args()?;
    log.attachment = format!("{cid}/{ifname}");
    let path = req.state_path(cid, ifname);
    let recorded = match state::load(&path) {
        Ok(s) => s,
        Err(e) => {
            log.line(&format!("{e}: going on without it"));
            None
        }
    };
    let Some(netns) = netns else {
        log.line("no CNI_NETNS: nothing to remove in a namespace");
        return state::remove(&path);
    };
    let ns = match nss.open(netns) {
        Ok(ns) => ns,
        Err(OpenError::Vanished(e)) => {
            log.line(&format!(
                "namespace gone ({e}): its rules and routes went with it"
            ));
            return state::remove(&path);
        }
        Err(OpenError::Unusable(e)) => {
            return Err(CniError::with_details(
                code::BAD_ENV,
                format!("CNI_NETNS={}", netns.display()),
                e,
            ));
        }
    };
    ns.refuse_host()?;
    let recorded = recorded.filter(|s| s.netns_id == ns.id());
    let mut scope = match &recorded {
        Some(s) => Scope::of(s)?,
        None => Scope {
            ifname: ifname.to_string(),
            table: req.opts.table,
            routes: req.opts.table.is_none(),
            protocol: req.opts.settings.protocol,
            priority: req.opts.settings.priority,
            ..Scope::default()
        },
    };
    if let Some(prev) = req.prev {
        scope.addrs.extend(
            prev.ips_for(ifname, netns.to_str())
                .into_iter()
                .map(|ip| ip.address.addr()),
        );
    }
    clean_attachment(&ns, req, &scope, log)?;
    state::remove(&path)
}

/// CHECK: the interface's rules and routes are what ADD makes (with the
/// protocol and priority ADD recorded); code 102 naming the differences.
pub fn check<N: Namespaces>(nss: &N, req: &Request<'_>, log: &mut Log<'_>) -> Result<(), CniError> {
    let cid = req.container_id()?;
    let ifname = req.ifname()?;
    let netns = req.required_netns()?;
    req.check_args()?;
    log.attachment = format!("{cid}/{ifname}");
    if req.conf.prev_result.is_none() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult (the attachment's cached result)",
        ));
    }
    let ns = open_target(nss, netns)?;
    let mut settings = req.opts.settings;
    if let Ok(Some(s)) = state::load(&req.state_path(cid, ifname))
        && s.netns_id == ns.id()
        && let Ok(protocol) = Protocol::new(s.protocol)
    {
        settings.protocol = protocol;
        settings.priority = s.priority;
    }
    let _lock = ns.lock(req.opts.lock_timeout)?;
    let mut k = ns.kernel()?;
    let snap = k
        .snapshot()
        .map_err(|e| kernel_error("read the namespace's state", e))?;
    let link = snap.link_by_name(ifname).ok_or_else(|| {
        CniError::new(
            code::CHECK_MISMATCH,
            format!(
                "CHECK: no interface {ifname} in namespace {}",
                netns.display()
            ),
        )
    })?;
    if link.global_addrs().next().is_none() {
        return Ok(());
    }
    let built = build_request(req.opts, req.prev, ifname, netns.to_str(), link)?;
    for n in &built.notes {
        log.line(n);
    }
    let st = engine::status(&mut k, &settings, &built.request).map_err(engine_error)?;
    if st.in_sync {
        return Ok(());
    }
    let object = |op: &Op| match op {
        Op::AddRule(r) | Op::DelRule(r) => format!("rule {}", render::rule_args(r)),
        Op::AddRoute(r) | Op::DelRoute(r) => {
            format!("route {}", render::route_args(r, Some(&st.snapshot)))
        }
    };
    let what: Vec<String> = st
        .missing
        .iter()
        .map(|o| format!("missing {}", object(o)))
        .chain(st.extra.iter().map(|o| format!("unexpected {}", object(o))))
        .collect();
    Err(CniError::with_details(
        code::CHECK_MISMATCH,
        format!(
            "CHECK {ifname}: {} missing, {} unexpected: {}",
            st.missing.len(),
            st.extra.len(),
            what.join("; ")
        ),
        format!(
            "table {}; run ADD again to repair",
            st.plan.interfaces.first().map_or(0, |i| i.table)
        ),
    ))
}

/// GC: remove every recorded attachment of this network that the runtime
/// does not list in `cni.dev/valid-attachments`.
pub fn gc<N: Namespaces>(nss: &N, req: &Request<'_>, log: &mut Log<'_>) -> Result<(), CniError> {
    let Some(valid) = req.conf.valid_attachments.as_ref() else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "GC needs cni.dev/valid-attachments (the attachments to keep)",
        ));
    };
    let keep: BTreeSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let mut errors = Vec::new();
    for (path, st) in state::list(&req.opts.data_dir, req.network())? {
        let st = match st {
            Ok(s) => s,
            Err(e) => {
                log.line(&format!("GC: {e}: skipped"));
                continue;
            }
        };
        if keep.contains(&(st.container_id.as_str(), st.ifname.as_str())) {
            continue;
        }
        log.attachment = format!("{}/{}", st.container_id, st.ifname);
        match nss.open(&st.netns) {
            Ok(ns) if ns.id() == st.netns_id && ns.refuse_host().is_ok() => {
                if let Err(e) =
                    Scope::of(&st).and_then(|scope| clean_attachment(&ns, req, &scope, log))
                {
                    errors.push(e.to_string());
                    continue;
                }
            }
            _ => log.line("namespace gone: forgetting the attachment"),
        }
        if let Err(e) = state::remove(&path) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::with_details(
            code::CLEANUP,
            "GC could not remove everything",
            errors.join("; "),
        ))
    }
}

/// STATUS: rtnetlink usable and the state folder writable (code 50 when not).
pub fn status<N: Namespaces>(nss: &N, req: &Request<'_>) -> Result<(), CniError> {
    nss.netlink_usable()
        .map_err(|e| CniError::with_details(code::NOT_AVAILABLE, "rtnetlink is not usable", e))?;
    let dir = &req.opts.data_dir;
    std::fs::create_dir_all(dir)
        .and_then(|()| {
            nix::unistd::access(dir.as_path(), nix::unistd::AccessFlags::W_OK).map_err(Into::into)
        })
        .map_err(|e: std::io::Error| {
            CniError::with_details(
                code::NOT_AVAILABLE,
                format!("state folder {} is not writable", dir.display()),
                e.to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::hint;

    #[test]
    fn hints_name_the_gateways_key_never_the_cli_flag() {
        let h = hint("--gateway net1=192.0.2.1: 192.0.2.1 is outside net1's prefixes");
        assert!(!h.contains("--gateway"), "{h}");
        assert!(h.contains("\"gateways\" key"), "{h}");
        assert_eq!(
            hint("no free routing table left"),
            "no free routing table left"
        );
    }
}
