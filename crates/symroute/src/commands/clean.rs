//! `symroute clean`: remove what symroute owns in a namespace.

use anyhow::{Context, Result};

use super::{EXIT_OK, open_target, print_json, settings};
use crate::cli::{CleanArgs, SettingsArgs};
use crate::request::resolve;
use symroute_core::engine;
use symroute_core::report;
use symroute_linux::lock;

pub fn run(global: &SettingsArgs, a: CleanArgs) -> Result<u8> {
    let settings = settings(global)?;
    let t = resolve(&a.target, &a.docker)?.target;
    let mut opened = open_target(&t, true, a.allow_host_netns)?;
    let _lock = lock::lock(&opened.netns, a.lock_timeout)?;
    let rep = engine::clean(&mut opened.kernel, &settings)
        .with_context(|| format!("clean {}", t.path().display()))?;
    if a.json {
        print_json(&rep)?;
    } else {
        print!(
            "{}",
            report::clean_text(&rep, &t.path().display().to_string())
        );
    }
    Ok(EXIT_OK)
}
