//! `symroute apply`: plan, then make the namespace's owned state equal it.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{EXIT_OK, open_target, print_json, selection, settings};
use crate::cli::{ApplyArgs, SettingsArgs};
use crate::request::{merge_gateways, resolve};
use crate::signals::{self, Interrupt};
use symroute_core::engine::{self, ApplyOptions, EngineError};
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
    // Handlers first: a signal from here on rolls the run back.
    let interrupt = if a.dry_run {
        None
    } else {
        Some(signals::install()?)
    };
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
        interrupt: interrupt.as_ref().map(Interrupt::flag),
    };
    let result = engine::apply(&mut opened.kernel, &opts);
    if let Some(sig) = interrupt.as_ref().and_then(Interrupt::signal_name) {
        // A signal came: the run either stopped and rolled back, or had
        // already made its last change; either way say so and exit 2.
        match result {
            Err(EngineError::Interrupted {
                rolled_back,
                rollback_errors,
            }) => {
                let mut msg = format!(
                    "{}: interrupted by {sig}: rolled back {} change(s)",
                    t.path().display(),
                    rolled_back.len()
                );
                for e in rollback_errors {
                    msg.push_str(&format!("; rollback incomplete: {e}"));
                }
                anyhow::bail!(msg);
            }
            Ok(rep) => anyhow::bail!(
                "{}: interrupted by {sig} after the last change: all {} change(s) are in place",
                t.path().display(),
                rep.ops.len()
            ),
            Err(e) => {
                return Err(anyhow::Error::from(e).context(format!(
                    "apply in {} (interrupted by {sig})",
                    t.path().display()
                )));
            }
        }
    }
    let rep = result.with_context(|| format!("apply in {}", t.path().display()))?;
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
