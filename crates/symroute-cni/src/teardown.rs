//! What DEL and GC remove: symroute's tagged rules from the attachment's
//! addresses and, unless it only added rules, its tagged routes in that
//! interface's table or through its link. Pure.

use std::collections::BTreeSet;
use std::net::IpAddr;

use symroute_core::diff::Op;
use symroute_core::model::{Family, Snapshot};
use symroute_core::ownership::{Space, classify};
use symroute_core::settings::Settings;

/// The attachment whose objects go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub ifname: String,
    /// Addresses its rules may come from (recorded by ADD, from prevResult);
    /// the link's current global addresses are added when it still exists.
    pub addrs: Vec<IpAddr>,
    /// The table ADD used, when known.
    pub table: Option<u32>,
    /// Whether symroute may have made routes (false with sbr's `table`:
    /// the table's routes belong to whoever filled it).
    pub routes: bool,
}

/// The operations that remove the attachment's objects, rules first.
pub fn teardown(snap: &Snapshot, settings: &Settings, scope: &Scope) -> Vec<Op> {
    // The attachment's own table joins the space (sbr's `table`); a
    // reserved one never does.
    let space = scope
        .table
        .and_then(|t| Space::of(settings).with_table(t).ok())
        .unwrap_or_else(|| Space::of(settings));
    let own = classify(snap, &space);
    let link = snap.link_by_name(&scope.ifname);
    let mut addrs: BTreeSet<IpAddr> = scope.addrs.iter().copied().collect();
    if let Some(l) = link {
        addrs.extend(l.global_addrs().map(|a| a.addr()));
    }
    let rules: Vec<_> = own
        .rules
        .iter()
        .filter(|r| {
            r.src.is_some_and(|s| {
                s.prefix_len() == Family::of(&s.addr()).host_prefix() && addrs.contains(&s.addr())
            })
        })
        .cloned()
        .collect();
    let mut ops: Vec<Op> = rules.iter().cloned().map(Op::DelRule).collect();
    if scope.routes {
        let tables: BTreeSet<u32> = scope
            .table
            .into_iter()
            .chain(rules.iter().map(|r| r.table))
            .collect();
        let mut routes: Vec<_> = own
            .routes
            .iter()
            .filter(|r| tables.contains(&r.table) || link.is_some_and(|l| r.oif == l.index))
            .cloned()
            .collect();
        // Gateway routes before the connected routes they rely on.
        routes.sort_by_key(|r| r.gateway.is_none());
        ops.extend(routes.into_iter().map(Op::DelRoute));
    }
    // A delete that could also match an unrepresentable tagged rule is not sent.
    own.exact_deletes(ops).0
}
