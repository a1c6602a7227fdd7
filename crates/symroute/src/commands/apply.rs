//! `symroute apply`: plan, then make the namespace's owned state equal it.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{EXIT_OK, open_target, print_json, selection, settings};
use crate::cli::{ApplyArgs, SettingsArgs};
use crate::request::{merge_gateways, resolve};
use symroute_core::engine::{self, ApplyOptions};
use symroute_core::plan::PlanRequest;
use symroute_core::report;
use symroute_linux::lock;

pub fn run(global: &SettingsArgs, a: ApplyArgs) -> Result<u8> {
    let settings = settings(global)?;
    if !(0.0..=600.0).contains(&a.dad_wait) {
        anyhow::bail!("--dad-wait {}: expected 0 to 600 seconds", a.dad_wait);
    }
    let resolved = resolve(&a.target, &a.docker)?;
    let t = resolved.target.clone();
    let mut opened = open_target(&t, !a.dry_run, a.allow_host_netns)?;
    // One writer at a time per namespace, from the first read to the last
    // change (a dry run only reads).
    let _lock = if a.dry_run {
        None
    } else {
        Some(lock::lock(&opened.netns, a.lock_timeout)?)
    };
    let gateways = merge_gateways(&resolved, &mut opened.kernel, a.gateways)?;
    let opts = ApplyOptions {
        settings,
        request: PlanRequest {
            gateways,
            selection: selection(a.all_interfaces),
            routes: Vec::new(),
        },
        dry_run: a.dry_run,
        dad_wait: Duration::from_secs_f64(a.dad_wait),
    };
    let rep = engine::apply(&mut opened.kernel, &opts)
        .with_context(|| format!("apply in {}", t.path().display()))?;
    if a.json {
        print_json(&rep)?;
    } else {
        print!(
            "{}",
            report::apply_text(&rep, &t.path().display().to_string())
        );
    }
    Ok(EXIT_OK)
}
