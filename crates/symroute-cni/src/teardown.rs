//! What DEL and GC remove for one attachment: only objects inside its
//! space, as the core's one ownership classification
//! ([`symroute_core::ownership::classify`]) decides. Pure: the removal
//! itself is the core engine's one clean path
//! ([`symroute_core::engine::clean_in`]).
//!
//! The attachment's space: its recorded protocol and rule priority, the
//! band of the settings, plus the table it named with sbr's `table` (as
//! recorded). The kernel's own tables (0, 253 default, 254 main, 255
//! local) never are, so a pod's main-table route is never deleted,
//! whatever its tag. Of the objects that are ours in that space, the
//! attachment's are
//! - rules `from ADDR/32|/128` of one of its addresses;
//! - routes (unless it only added rules, sbr's `table`: that table's routes
//!   belong to whoever filled it) in its table or a table its rules point
//!   at; never chosen by output interface alone (another writer's route
//!   through the same link stays).
//!
//! A delete that could also match a tagged rule symroute cannot describe
//! exactly is not sent (the engine applies [`Ownership::exact_deletes`]).

use std::collections::BTreeSet;
use std::net::IpAddr;

use symroute_core::diff::Op;
use symroute_core::engine::removal_plan;
use symroute_core::model::{Family, Protocol, Snapshot};
use symroute_core::ownership::{Ownership, Space};
use symroute_core::settings::{DEFAULT_PRIORITY, Settings};

use crate::error::{CniError, code};
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
    pub protocol: Protocol,
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
    /// The scope ADD recorded. A record whose protocol is someone else's
    /// (hand-edited, or from a version that accepted it) removes nothing.
    pub fn of(s: &AttachmentState) -> Result<Scope, CniError> {
        let protocol = Protocol::new(s.protocol).map_err(|e| {
            CniError::with_details(
                code::CLEANUP,
                format!(
                    "the record of {}/{} names protocol {}: not removing anything",
                    s.container_id, s.ifname, s.protocol
                ),
                e.to_string(),
            )
        })?;
        Ok(Scope {
            ifname: s.ifname.clone(),
            link: s.link,
            addrs: s.addrs.clone(),
            table: Some(s.table),
            routes: !s.rules_only,
            protocol,
            priority: s.priority,
        })
    }

    /// The attachment's space under `settings`.
    pub fn space(&self, settings: &Settings) -> Space {
        let base = Space {
            protocol: self.protocol,
            priority: self.priority,
            ..Space::of(settings)
        };
        // A reserved table never joins (the record cannot name one).
        match self.table {
            Some(t) => base.clone().with_table(t).unwrap_or(base),
            None => base,
        }
    }

    /// Of the objects that are ours in [`Scope::space`], the attachment's:
    /// the selection DEL and GC hand to [`symroute_core::engine::clean_in`]
    /// (which orders the deletions and drops any that could not be exact).
    pub fn select(&self, own: &Ownership, snap: &Snapshot) -> Vec<Op> {
        // The container controls its namespace: it can rename links and move
        // addresses between them. So the link's current addresses count only
        // when it is still the link ADD recorded (same index), and a rule
        // counts only when it looks up the table ADD recorded: another
        // attachment's rules and table are never selected, whatever was
        // renamed or moved.
        let mut addrs: BTreeSet<IpAddr> = self.addrs.iter().copied().collect();
        if let Some(l) = snap.link_by_name(&self.ifname)
            && self.link.is_none_or(|i| i == l.index)
        {
            addrs.extend(l.global_addrs().map(symroute_core::model::IfAddr::addr));
        }
        let rules: Vec<_> = own
            .rules
            .iter()
            .filter(|r| {
                self.table.is_none_or(|t| r.table == t)
                    && r.src.is_some_and(|s| {
                        s.prefix_len() == Family::of(&s.addr()).host_prefix()
                            && addrs.contains(&s.addr())
                    })
            })
            .cloned()
            .collect();
        let tables: BTreeSet<u32> = self
            .table
            .into_iter()
            .chain(rules.iter().map(|r| r.table))
            .collect();
        let routes = own
            .routes
            .iter()
            .filter(|r| self.routes && tables.contains(&r.table))
            .cloned()
            .map(Op::DelRoute);
        rules.into_iter().map(Op::DelRule).chain(routes).collect()
    }
}

/// The operations DEL and GC send for the attachment (what
/// [`symroute_core::engine::clean_in`] removes with [`Scope::select`]),
/// rules first. Pure.
pub fn teardown(snap: &Snapshot, settings: &Settings, scope: &Scope) -> Vec<Op> {
    removal_plan(snap, &scope.space(settings), |own, snap| {
        scope.select(own, snap)
    })
    .0
}
