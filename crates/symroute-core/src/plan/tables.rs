//! Table assignment: an interface keeps the table its objects already use;
//! a new one gets the lowest band table nobody uses.

use std::collections::{BTreeMap, BTreeSet};

use super::PlanError;
use crate::model::{Family, Link};
use crate::ownership::Ownership;
use crate::settings::Settings;

/// Tables for the managed links: kept from tagged state where possible
/// (an interface keeps its table across runs), else the lowest free one.
pub(crate) fn assign_tables(
    own: &Ownership,
    settings: &Settings,
    links: &[&Link],
) -> Result<BTreeMap<u32, u32>, PlanError> {
    // Tables that anyone else uses, anywhere (foreign objects and findings).
    let mut taken: BTreeSet<u32> = own.others_tables.clone();
    // Tables our own objects point at, whichever link they were for.
    let ours: BTreeSet<u32> = own
        .rules
        .iter()
        .map(|r| r.table)
        .chain(own.routes.iter().map(|r| r.table))
        .filter(|t| settings.in_band(*t))
        .collect();

    let mut out: BTreeMap<u32, u32> = BTreeMap::new();
    let mut used: BTreeSet<u32> = BTreeSet::new();
    // Pass 1: a table our routes through this link, or our rules from its
    // addresses, already use. Routes name the link, rules only an address,
    // which can sit on two links: every link's routes count first.
    for by_rules in [false, true] {
        for link in links {
            if out.contains_key(&link.index) {
                continue;
            }
            let by_route = own
                .routes
                .iter()
                .filter(|r| !by_rules && r.oif == link.index && settings.in_band(r.table))
                .map(|r| r.table);
            let by_rule = own
                .rules
                .iter()
                .filter(|r| {
                    by_rules
                        && settings.in_band(r.table)
                        && r.src.is_some_and(|s| {
                            s.prefix_len() == Family::of(&s.addr()).host_prefix()
                                && link.global_addrs().any(|a| a.addr() == s.addr())
                        })
                })
                .map(|r| r.table);
            let mut candidates: Vec<u32> = by_route.chain(by_rule).collect();
            candidates.sort_unstable();
            if by_rules {
                // First a table whose rules all come from this link's
                // addresses, then the one most of its addresses point at.
                let all_mine = |t: u32| {
                    own.rules.iter().filter(|r| r.table == t).all(|r| {
                        r.src
                            .is_some_and(|s| link.global_addrs().any(|a| a.addr() == s.addr()))
                    })
                };
                let votes = |t: u32| candidates.iter().filter(|c| **c == t).count();
                let mut ranked = candidates.clone();
                ranked.sort_by_key(|t| (!all_mine(*t), std::cmp::Reverse(votes(*t)), *t));
                candidates = ranked;
            }
            if let Some(t) = candidates.into_iter().find(|t| !used.contains(t)) {
                used.insert(t);
                out.insert(link.index, t);
            }
        }
    }
    taken.extend(ours);
    taken.extend(used.iter().copied());
    // Pass 2: the lowest table nobody uses.
    for link in links {
        if out.contains_key(&link.index) {
            continue;
        }
        let t = (settings.table_min..=settings.table_max)
            .find(|t| !taken.contains(t))
            .ok_or_else(|| PlanError::TablesExhausted {
                ifname: link.name.clone(),
                min: settings.table_min,
                max: settings.table_max,
            })?;
        taken.insert(t);
        out.insert(link.index, t);
    }
    Ok(out)
}
