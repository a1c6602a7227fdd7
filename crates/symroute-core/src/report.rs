//! Human-readable output: aligned tables and one-line verdicts. Every text
//! leaves through [`render::escape_lines`] (names come from the namespace's
//! owner), and the namespace path given by the caller through
//! [`render::escape`].

use std::fmt::Write;

use crate::diagnose::{Diagnosis, Verdict};
use crate::diff::Op;
use crate::engine::{ApplyReport, CleanReport, StatusReport};
use crate::model::Snapshot;
use crate::plan::{GatewaySource, InterfacePlan, Plan};
use crate::render;

/// Lay out rows as columns separated by two spaces (each cell escaped).
pub fn table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| render::escape(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn source_word(s: GatewaySource) -> &'static str {
    match s {
        GatewaySource::Given => "given",
        GatewaySource::MainTable => "from main",
        GatewaySource::Kept => "kept",
    }
}

fn gateways(i: &InterfacePlan) -> String {
    let mut parts: Vec<String> = i
        .gateways
        .iter()
        .map(|g| format!("{} ({})", g.gateway, source_word(g.source)))
        .collect();
    for f in &i.no_gateway {
        parts.push(format!("none for {f}"));
    }
    parts.join(", ")
}

/// The interfaces of a plan as a table.
pub fn plan_table(plan: &Plan) -> String {
    let mut rows = vec![vec![
        "INTERFACE".to_string(),
        "TABLE".into(),
        "ADDRESSES".into(),
        "GATEWAYS".into(),
    ]];
    for i in &plan.interfaces {
        rows.push(vec![
            if i.up {
                i.name.clone()
            } else {
                format!("{} (down)", i.name)
            },
            i.table.to_string(),
            i.addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            gateways(i),
        ]);
    }
    table(&rows)
}

fn notes(plan: &Plan) -> String {
    let mut out = String::new();
    for i in &plan.interfaces {
        for n in &i.notes {
            let _ = writeln!(out, "note: {n}");
        }
    }
    out
}

/// One operation, with interface names from `snap`: `+ rule from ...`.
pub fn op_text(op: &Op, snap: &Snapshot) -> String {
    render::escape(&op_line(op, snap)).into_owned()
}

fn op_line(op: &Op, snap: &Snapshot) -> String {
    match op {
        Op::AddRoute(r) => format!("+ route {}", render::route_args(r, Some(snap))),
        Op::DelRoute(r) => format!("- route {}", render::route_args(r, Some(snap))),
        Op::AddRule(r) => format!("+ rule  {}", render::rule_args(r)),
        Op::DelRule(r) => format!("- rule  {}", render::rule_args(r)),
    }
}

pub fn apply_text(rep: &ApplyReport, netns: &str) -> String {
    let netns = &render::escape(netns);
    let mut out = String::new();
    if let Some(reason) = &rep.plan.unmanaged_reason {
        let _ = writeln!(out, "{netns}: not managed: {reason}");
    } else {
        out.push_str(&plan_table(&rep.plan));
        out.push_str(&notes(&rep.plan));
    }
    if rep.dry_run {
        if rep.ops.is_empty() {
            out.push_str("plan: nothing to change\n");
        } else {
            let _ = writeln!(out, "plan: {} change(s):", rep.ops.len());
            for op in &rep.ops {
                let _ = writeln!(
                    out,
                    "{}",
                    render::ip_command(op, netns, Some(&rep.snapshot))
                );
            }
        }
    } else if rep.ops.is_empty() {
        out.push_str("in sync: nothing to change\n");
    } else {
        let _ = writeln!(out, "applied {} change(s):", rep.ops.len());
        for op in &rep.ops {
            let _ = writeln!(out, "  {}", op_line(op, &rep.snapshot));
        }
    }
    for t in &rep.tentative {
        let _ = writeln!(
            out,
            "warning: {t} is still tentative (duplicate address detection): its rule is in place, but the address cannot be used yet"
        );
    }
    render::escape_lines(&out).into_owned()
}

pub fn status_text(rep: &StatusReport, netns: &str) -> String {
    let netns = &render::escape(netns);
    let mut out = String::new();
    if let Some(reason) = &rep.plan.unmanaged_reason {
        let _ = writeln!(out, "{netns}: not managed: {reason}");
    } else {
        out.push_str(&plan_table(&rep.plan));
        for i in &rep.plan.interfaces {
            for r in rep.plan.rules.iter().filter(|r| r.table == i.table) {
                let _ = writeln!(out, "  {}: rule {}", i.name, render::rule_args(r));
            }
        }
        out.push_str(&notes(&rep.plan));
    }
    let _ = writeln!(
        out,
        "owned: {} rule(s), {} route(s) with protocol tag",
        rep.owned_rules.len(),
        rep.owned_routes.len()
    );
    for op in &rep.missing {
        let _ = writeln!(out, "missing: {}", op_line(op, &rep.snapshot));
    }
    for op in &rep.extra {
        let _ = writeln!(out, "extra:   {}", op_line(op, &rep.snapshot));
    }
    if rep.in_sync {
        out.push_str("status: in sync\n");
    } else {
        let _ = writeln!(
            out,
            "status: out of sync ({} missing, {} extra): run symroute apply",
            rep.missing.len(),
            rep.extra.len()
        );
    }
    render::escape_lines(&out).into_owned()
}

pub fn clean_text(rep: &CleanReport, netns: &str) -> String {
    let netns = &render::escape(netns);
    let mut out = String::new();
    if rep.removed.is_empty() {
        let _ = writeln!(out, "{netns}: nothing of symroute's to remove");
    } else {
        let _ = writeln!(
            out,
            "{netns}: removed {} object(s) of symroute's:",
            rep.removed.len()
        );
        for op in &rep.removed {
            let _ = writeln!(out, "  {}", op_line(op, &rep.snapshot));
        }
    }
    render::escape_lines(&out).into_owned()
}

pub fn diagnose_text(d: &Diagnosis) -> String {
    let mut out = String::new();
    let mut rows = vec![vec![
        "INTERFACE".to_string(),
        "ADDRESS".into(),
        "REPLY TO".into(),
        "LEAVES VIA".into(),
        "TABLE".into(),
        "DECIDED BY".into(),
        "STRICT RPF".into(),
        "VERDICT".into(),
    ]];
    for a in &d.addresses {
        let via = match (&a.reply_interface, a.reply_gateway) {
            (Some(i), Some(g)) => format!("{i} via {g}"),
            (Some(i), None) => i.clone(),
            _ => a.error.clone().unwrap_or_else(|| "-".into()),
        };
        rows.push(vec![
            a.interface.clone(),
            a.address.to_string(),
            a.probe.to_string(),
            via,
            a.table
                .map(render::table_name)
                .unwrap_or_else(|| "-".into()),
            a.rule.clone().unwrap_or_else(|| "-".into()),
            if a.strict_rpf_passes { "pass" } else { "DROP" }.into(),
            match a.verdict {
                Verdict::Symmetric => "symmetric",
                Verdict::Asymmetric => "ASYMMETRIC",
                Verdict::NoRoute => "NO ROUTE",
            }
            .into(),
        ]);
    }
    out.push_str(&table(&rows));
    let _ = writeln!(out, "default route: {}", d.default_route_reason);
    for name in &d.interfaces_without_gateway {
        let _ = writeln!(
            out,
            "note: {name} has global addresses but no default route of its own"
        );
    }
    let count = |v: Verdict| d.addresses.iter().filter(|a| a.verdict == v).count();
    let (asym, none) = (count(Verdict::Asymmetric), count(Verdict::NoRoute));
    let total = d.addresses.len();
    if d.symmetric {
        let _ = writeln!(
            out,
            "verdict: symmetric: all {total} address(es) reply through the interface they are reached on",
        );
    } else {
        let mut parts = Vec::new();
        if asym > 0 {
            parts.push(format!(
                "{asym} of {total} address(es) reply through another interface (a strict rp_filter, NAT or firewall on the way drops those replies)"
            ));
        }
        if none > 0 {
            parts.push(format!(
                "{none} of {total} address(es) have no way for replies to other subnets (see LEAVES VIA)"
            ));
        }
        let word = if asym > 0 { "ASYMMETRIC" } else { "NO ROUTE" };
        let _ = writeln!(out, "verdict: {word}: {}", parts.join("; "));
        if let Some(fix) = &d.fix {
            let _ = writeln!(out, "fix: {fix}");
        }
    }
    render::escape_lines(&out).into_owned()
}
