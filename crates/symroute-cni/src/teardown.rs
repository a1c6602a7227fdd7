//! What DEL and GC remove for one attachment: only objects inside its
//! space. Pure.
//!
//! - rules: tagged with the attachment's recorded protocol, at its
//!   recorded priority, `from ADDR/32|/128` of one of its addresses and
//!   nothing else, looking up a table of its space;
//! - routes (unless it only added rules, sbr's `table`: that table's routes
//!   belong to whoever filled it): tagged, in its table or a band table its
//!   rules point at.
//!
//! Its space is the band of the settings plus the table it recorded; the
//! kernel's own tables (0, 253 default, 254 main, 255 local) never are, so
//! a pod's main-table route is never deleted, whatever its tag. Routes are
//! chosen by table, never by output interface alone (another writer's
//! route through the same link, in main or in its own table, stays).

use std::collections::BTreeSet;
use std::net::IpAddr;

use symroute_core::diff::Op;
use symroute_core::model::{Family, Snapshot};
use symroute_core::settings::{DEFAULT_PRIORITY, Settings};

use crate::state::AttachmentState;

/// The attachment whose objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub ifname: String,
    /// Its link's index, when recorded (for the log's `dev` names).
    pub link: Option<u32>,
    /// Addresses its rules may come from (recorded by ADD, from prevResult);
    /// the link's current global addresses are added when it still exists.
    pub addrs: Vec<IpAddr>,
    /// The table ADD used, when known.
    pub table: Option<u32>,
    /// Whether symroute may have made routes (false with sbr's `table`).
    pub routes: bool,
    /// The tag ADD wrote (recorded; the configuration's without a record).
    pub protocol: u8,
    /// The rule priority ADD used.
    pub priority: u32,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            ifname: String::new(),
            link: None,
            addrs: Vec::new(),
            table: None,
            routes: true,
            protocol: crate::types::DEFAULT_PROTOCOL,
            priority: DEFAULT_PRIORITY,
        }
    }
}

impl Scope {
    /// The scope ADD recorded.
    pub fn of(s: &AttachmentState) -> Scope {
        Scope {
            ifname: s.ifname.clone(),
            link: s.link,
            addrs: s.addrs.clone(),
            table: Some(s.table),
            routes: !s.rules_only,
            protocol: s.protocol,
            priority: s.priority,
        }
    }
}

/// The kernel's own tables: unspec, default, main, local.
fn reserved(table: u32) -> bool {
    matches!(table, 0 | 253..=255)
}

/// The operations that remove the attachment's objects, rules first.
pub fn teardown(snap: &Snapshot, settings: &Settings, scope: &Scope) -> Vec<Op> {
    let in_space =
        |t: u32| !reserved(t) && (settings.in_band(t) || scope.table.is_some_and(|s| s == t));
    let mut addrs: BTreeSet<IpAddr> = scope.addrs.iter().copied().collect();
    if let Some(l) = snap.link_by_name(&scope.ifname) {
        addrs.extend(l.global_addrs().map(|a| a.addr()));
    }
    let rules: Vec<_> = snap
        .tagged_rules(scope.protocol)
        .filter(|r| {
            !r.other_selectors
                && r.priority == scope.priority
                && in_space(r.table)
                && r.src.is_some_and(|s| {
                    s.prefix_len() == Family::of(&s.addr()).host_prefix()
                        && addrs.contains(&s.addr())
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
            .filter(|t| in_space(*t))
            .collect();
        let mut routes: Vec<_> = snap
            .tagged_routes(scope.protocol)
            .filter(|r| tables.contains(&r.table))
            .cloned()
            .collect();
        // Gateway routes before the connected routes they rely on.
        routes.sort_by_key(|r| r.gateway.is_none());
        ops.extend(routes.into_iter().map(Op::DelRoute));
    }
    ops
}
