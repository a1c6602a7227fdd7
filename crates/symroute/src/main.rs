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
use clap::Parser as _;

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
        Command::InstallCni(a) => commands::install_cni::run(&a),
        Command::Man { dir } => commands::man::run(&dir),
    }
}

/// The error and its causes on one line, escaped (names in it come from the
/// namespace). Library errors already end with their cause's text, so a
/// cause already said is not repeated.
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
    if let Some(hint) = hint(e).filter(|h| !msg.contains(h.as_str())) {
        msg.push_str(&format!(" ({hint})"));
    }
    symroute_core::render::escape(&msg).into_owned()
}

/// The command-line flag behind a plan error: the core names the interface
/// and gateway, the CLI says where they came from.
fn hint(e: &anyhow::Error) -> Option<String> {
    use symroute_core::engine::EngineError;
    use symroute_core::plan::PlanError as P;
    let plan = e
        .chain()
        .find_map(|c| match c.downcast_ref::<EngineError>() {
            Some(EngineError::Plan(p)) => Some(p),
            _ => c.downcast_ref::<P>(),
        })?;
    Some(match plan {
        P::UnknownInterface { ifname, gateway }
        | P::WrongFamily {
            ifname, gateway, ..
        }
        | P::OffLink {
            ifname, gateway, ..
        }
        | P::OwnAddress { ifname, gateway } => {
            format!("--gateway {ifname}={gateway}")
        }
        P::Duplicate { ifname, .. } => format!("--gateway {ifname}=..., given twice"),
        P::TablesExhausted { .. } => "widen it with --table-band START-END".to_string(),
        _ => return None,
    })
}

/// A runtime runs a CNI plugin with no arguments at all; only then does
/// `CNI_COMMAND` make this binary the plugin. With arguments it is ignored,
/// with a warning (a stray variable must not turn `symroute clean` into a
/// CNI reply that cleans nothing).
fn cni_mode() -> bool {
    let Some(cmd) = std::env::var_os("CNI_COMMAND") else {
        return false;
    };
    if std::env::args_os().len() <= 1 {
        return true;
    }
    commands::err_line(&format!(
        "symroute: warning: ignoring CNI_COMMAND={} in the environment: symroute acts as a CNI plugin only when run without arguments",
        symroute_core::render::escape(&cmd.to_string_lossy())
    ));
    false
}

fn main() -> ExitCode {
    // The same binary is the CNI plugin: a runtime runs /opt/cni/bin/symroute
    // (this binary, installed or copied there) with CNI_COMMAND set and the
    // network configuration on standard input. See docs/cni.md.
    if cni_mode() {
        return ExitCode::from(symroute_cni::main_from_process());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    let json = cli.command.json();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if json => json_error(&error_text(&e)),
        Err(e) => {
            commands::err_line(&format!("symroute: {}", error_text(&e)));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `{"error": ..., "code": 2}` on standard output (serde_json escapes
/// control characters itself), exit 2.
fn json_error(text: &str) -> ExitCode {
    let v = serde_json::json!({ "error": text, "code": EXIT_ERROR });
    let _ = commands::out(&format!("{v}\n"));
    ExitCode::from(EXIT_ERROR)
}

/// A command line clap refused: with `--json` among the arguments, the
/// error is JSON like every other error of a `--json` run; `--help` and
/// `--version` print as usual.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    if json && !informational {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or("invalid arguments");
        let first = first.strip_prefix("error: ").unwrap_or(first);
        return json_error(&symroute_core::render::escape(first));
    }
    e.exit()
}
