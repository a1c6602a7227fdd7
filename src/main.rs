//! The `symroute` command: a thin edge over the library.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};

use symroute::cli::{Cli, Command, SettingsArgs, Shell, TargetArgs};
use symroute::engine::{self, ApplyOptions};
use symroute::plan::{PlanRequest, Selection};
use symroute::settings::{ConfigFile, Settings};
use symroute::target::{self, Target};
use symroute::{diagnose, report};

/// Exit codes scripts rely on.
const EXIT_OK: u8 = 0;
const EXIT_FINDING: u8 = 1;
const EXIT_ERROR: u8 = 2;

fn settings(args: &SettingsArgs) -> Result<Settings> {
    let mut s = Settings::load(args.config.as_deref())?;
    s.overlay(&ConfigFile {
        table_band: args.table_band.clone(),
        priority: args.priority,
        protocol: args.protocol,
    })?;
    s.validate()?;
    Ok(s)
}

fn target(t: &TargetArgs) -> Target {
    match (&t.netns, t.pid) {
        (Some(p), _) => Target::Netns(p.clone()),
        (None, Some(pid)) => Target::Pid(pid),
        // clap's group makes one of them required.
        (None, None) => Target::Pid(0),
    }
}

fn selection(all: bool) -> Selection {
    if all {
        Selection::All
    } else {
        Selection::MultiHomed
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Apply {
            target: t,
            gateways,
            all_interfaces,
            dry_run,
            json,
            dad_wait,
            allow_host_netns,
        } => {
            let settings = settings(&cli.settings)?;
            let t = target(&t);
            if !(0.0..=600.0).contains(&dad_wait) {
                anyhow::bail!("--dad-wait {dad_wait}: expected 0 to 600 seconds");
            }
            let mut opened = target::open(&t, !dry_run, allow_host_netns)?;
            let opts = ApplyOptions {
                settings,
                request: PlanRequest {
                    gateways,
                    selection: selection(all_interfaces),
                    routes: Vec::new(),
                },
                dry_run,
                dad_wait: Duration::from_secs_f64(dad_wait),
            };
            let rep = engine::apply(&mut opened.kernel, &opts)
                .with_context(|| format!("apply in {}", t.path().display()))?;
            if json {
                print_json(&rep)?;
            } else {
                print!(
                    "{}",
                    report::apply_text(&rep, &t.path().display().to_string())
                );
            }
            Ok(EXIT_OK)
        }
        Command::Status {
            target: t,
            gateways,
            all_interfaces,
            json,
        } => {
            let settings = settings(&cli.settings)?;
            let t = target(&t);
            let mut opened = target::open(&t, false, true)?;
            let req = PlanRequest {
                gateways,
                selection: selection(all_interfaces),
                routes: Vec::new(),
            };
            let rep = engine::status(&mut opened.kernel, &settings, &req)
                .with_context(|| format!("status of {}", t.path().display()))?;
            if json {
                print_json(&rep)?;
            } else {
                print!(
                    "{}",
                    report::status_text(&rep, &t.path().display().to_string())
                );
            }
            Ok(if rep.in_sync { EXIT_OK } else { EXIT_FINDING })
        }
        Command::Clean {
            target: t,
            allow_host_netns,
        } => {
            let settings = settings(&cli.settings)?;
            let t = target(&t);
            let mut opened = target::open(&t, true, allow_host_netns)?;
            let rep = engine::clean(&mut opened.kernel, &settings)
                .with_context(|| format!("clean {}", t.path().display()))?;
            print!(
                "{}",
                report::clean_text(&rep, &t.path().display().to_string())
            );
            Ok(EXIT_OK)
        }
        Command::Diagnose { target: t, json } => {
            let t = target(&t);
            let mut opened = target::open(&t, false, true)?;
            let fix = format!("symroute apply {}", t.as_args());
            let d = diagnose::diagnose(&mut opened.kernel, &fix)
                .with_context(|| format!("diagnose {}", t.path().display()))?;
            if json {
                print_json(&d)?;
            } else {
                print!("{}", report::diagnose_text(&d));
            }
            Ok(if d.symmetric { EXIT_OK } else { EXIT_FINDING })
        }
        Command::Demo => {
            symroute::demo::run(&mut std::io::stdout())?;
            Ok(EXIT_OK)
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut out = std::io::stdout();
            match shell {
                Shell::Bash => clap_complete::generate(
                    clap_complete::Shell::Bash,
                    &mut cmd,
                    "symroute",
                    &mut out,
                ),
                Shell::Zsh => clap_complete::generate(
                    clap_complete::Shell::Zsh,
                    &mut cmd,
                    "symroute",
                    &mut out,
                ),
                Shell::Fish => clap_complete::generate(
                    clap_complete::Shell::Fish,
                    &mut cmd,
                    "symroute",
                    &mut out,
                ),
                Shell::Elvish => clap_complete::generate(
                    clap_complete::Shell::Elvish,
                    &mut cmd,
                    "symroute",
                    &mut out,
                ),
                Shell::Powershell => clap_complete::generate(
                    clap_complete::Shell::PowerShell,
                    &mut cmd,
                    "symroute",
                    &mut out,
                ),
            }
            Ok(EXIT_OK)
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            Ok(EXIT_OK)
        }
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
    msg
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("symroute: {}", error_text(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
