//! The `symroute` command: a thin edge over the library. Each subcommand is
//! one module of `commands`; `request` turns a target into a namespace and
//! gateways.

mod cli;
mod commands;
mod demo;
mod request;
mod signals;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::commands::{EXIT_ERROR, EXIT_OK};

fn run(cli: Cli) -> Result<u8> {
    let global = &cli.settings;
    match cli.command {
        Command::Apply(a) => commands::apply::run(global, a),
        Command::Status(a) => commands::status::run(global, a),
        Command::Clean(a) => commands::clean::run(global, a),
        Command::Diagnose(a) => commands::diagnose::run(a),
        Command::Daemon(a) => commands::daemon::run(global, a),
        Command::Demo => {
            demo::run(&mut std::io::stdout())?;
            Ok(EXIT_OK)
        }
        Command::Completions { shell } => commands::completions::run(shell),
        Command::Man { dir } => commands::man::run(&dir),
    }
}

/// The error and its causes on one line. Library errors already end with
/// their cause's text, so a cause already said is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if msg.contains(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    symroute_core::render::escape(&msg).into_owned()
}

fn main() -> ExitCode {
    // The same binary is the CNI plugin: a runtime runs /opt/cni/bin/symroute
    // (this binary, installed or copied there) with CNI_COMMAND set and the
    // network configuration on standard input. See docs/cni.md.
    if std::env::var_os("CNI_COMMAND").is_some() {
        return ExitCode::from(symroute_cni::main_from_process());
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("symroute: {}", error_text(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
