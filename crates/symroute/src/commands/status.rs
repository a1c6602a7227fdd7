//! `symroute status`: does the kernel match the plan? (exit 1 when not)

use anyhow::{Context, Result};

use super::{EXIT_FINDING, EXIT_OK, print_json, selection, settings};
use crate::cli::{SettingsArgs, StatusArgs};
use crate::request::{merge_gateways, resolve};
use symroute_core::engine;
use symroute_core::plan::PlanRequest;
use symroute_core::report;
use symroute_linux::target;

pub fn run(global: &SettingsArgs, a: StatusArgs) -> Result<u8> {
    let settings = settings(global)?;
    let resolved = resolve(&a.target, &a.docker)?;
    let t = resolved.target.clone();
    let mut opened = target::open(&t, false, true)?;
    let gateways = merge_gateways(&resolved, &mut opened.kernel, a.gateways)?;
    let req = PlanRequest {
        gateways,
        selection: selection(a.all_interfaces),
        routes: Vec::new(),
    };
    let rep = engine::status(&mut opened.kernel, &settings, &req)
        .with_context(|| format!("status of {}", t.path().display()))?;
    if a.json {
        print_json(&rep)?;
    } else {
        print!(
            "{}",
            report::status_text(&rep, &t.path().display().to_string())
        );
    }
    Ok(if rep.in_sync { EXIT_OK } else { EXIT_FINDING })
}
