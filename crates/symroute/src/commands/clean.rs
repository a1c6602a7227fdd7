//! `symroute clean`: remove what symroute owns in a namespace.
//!
//! A signal during the clean does not stop it: the deletes are idempotent
//! and a clean stopped halfway would leave rules pointing at emptied tables,
//! so it finishes and then exits 2 saying so. A signal while waiting for the
//! namespace's lock gives up at once (nothing changed).

use anyhow::{Context, Result};

use super::{EXIT_OK, open_target, out, print_json, settings};
use crate::cli::{CleanArgs, SettingsArgs};
use crate::request::resolve;
use crate::signals;
use symroute_core::engine;
use symroute_core::report;
use symroute_linux::lock::{self, LockError};

pub fn run(global: &SettingsArgs, a: CleanArgs) -> Result<u8> {
    let settings = settings(global)?;
    let t = resolve(&a.target, &a.docker)?.target;
    let interrupt = signals::install()?;
    let mut opened = open_target(&t, true, a.allow_host_netns)?;
    let flag = interrupt.flag();
    let _lock = match lock::lock_interruptible(&opened.netns, a.lock_timeout, Some(&flag)) {
        Ok(l) => l,
        Err(LockError::Interrupted { .. }) => anyhow::bail!(
            "{}: interrupted by {} while waiting for the namespace's lock: nothing changed",
            t.path().display(),
            interrupt.signal_name().unwrap_or("a signal")
        ),
        Err(e) => return Err(e.into()),
    };
    let result = engine::clean(&mut opened.kernel, &settings);
    let signal = interrupt.restore_defaults();
    if let Some(sig) = signal {
        return match result {
            Ok(rep) => anyhow::bail!(
                "{}: interrupted by {sig}: finishing the clean before exiting: removed {} object(s)",
                t.path().display(),
                rep.removed.len()
            ),
            Err(e) => Err(anyhow::Error::from(e).context(format!(
                "clean {} (interrupted by {sig}: finished the clean before exiting)",
                t.path().display()
            ))),
        };
    }
    let rep = result.with_context(|| format!("clean {}", t.path().display()))?;
    if a.json {
        print_json(&rep)?;
    } else {
        out(&report::clean_text(&rep, &t.path().display().to_string()))?;
    }
    Ok(EXIT_OK)
}
