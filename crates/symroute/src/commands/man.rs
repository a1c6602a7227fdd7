//! `symroute man DIR`: the man pages, generated from the CLI's definition.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::EXIT_OK;
use crate::cli::Cli;

pub fn run(dir: &Path) -> Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    Ok(EXIT_OK)
}
