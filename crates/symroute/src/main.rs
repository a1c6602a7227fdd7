//! The `symroute` command: a thin edge over the library.

mod cli;
mod commands {
    pub mod install_cni;
}
mod demo;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, DockerArgs, LogFormat, SettingsArgs, Shell, TargetArgs};
use symroute_core::engine::{self, ApplyOptions};
use symroute_core::kernel::Kernel;
use symroute_core::plan::{GatewayHint, PlanRequest, Selection};
use symroute_core::settings::{ConfigFile, Settings};
use symroute_core::{diagnose, report};
use symroute_docker::daemon::{self, DaemonOptions};
use symroute_docker::model::NetworkMode;
use symroute_docker::{self as dock, DockerClient};
use symroute_linux::target::{self, Opened, Target};

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

/// A single-thread runtime for the Docker API calls of one command.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A resolved target: the namespace, and for a container what Docker says.
struct Resolved {
    target: Target,
    container: Option<dock::ContainerInfo>,
}

fn resolve(t: &TargetArgs, docker: &DockerArgs) -> Result<Resolved> {
    if let Some(p) = &t.netns {
        return Ok(Resolved {
            target: Target::Netns(p.clone()),
            container: None,
        });
    }
    if let Some(pid) = t.pid {
        return Ok(Resolved {
            target: Target::Pid(pid),
            container: None,
        });
    }
    let Some(name) = &t.container else {
        anyhow::bail!("no target: give --netns, --pid or --container");
    };
    let rt = runtime()?;
    let info = rt.block_on(async {
        let client = DockerClient::connect(docker.docker_host.as_deref()).await?;
        let mut info = client.inspect(name).await?;
        // container:<owner> shares the owner's namespace: work on the owner.
        if let NetworkMode::Container(owner) = &info.mode {
            info = client.inspect(owner).await?;
        }
        Ok::<_, dock::DockerError>(info)
    })?;
    match info.mode {
        NetworkMode::Host => anyhow::bail!(
            "container {}: network mode host: it uses the host's own namespace, which symroute never changes",
            info.label()
        ),
        NetworkMode::None => anyhow::bail!("container {}: network mode none", info.label()),
        _ => {}
    }
    let Some(pid) = info.pid.filter(|_| info.running) else {
        anyhow::bail!("container {} is not running", info.label());
    };
    Ok(Resolved {
        target: Target::Pid(pid),
        container: Some(info),
    })
}

/// Gateways for the plan: Docker's (by MAC) for a container, then the
/// command line's, which win for the same interface and family.
fn merge_gateways(
    resolved: &Resolved,
    opened: &mut Opened,
    given: Vec<GatewayHint>,
) -> Result<Vec<GatewayHint>> {
    let Some(info) = &resolved.container else {
        return Ok(given);
    };
    let snap = opened.kernel.snapshot()?;
    let (req, warnings) = dock::plan_request(info, &snap);
    for w in warnings {
        eprintln!("symroute: warning: {w}");
    }
    let mut out: Vec<GatewayHint> = req
        .gateways
        .into_iter()
        .filter(|d| {
            !given
                .iter()
                .any(|g| g.ifname == d.ifname && g.gateway.is_ipv4() == d.gateway.is_ipv4())
        })
        .collect();
    out.extend(given);
    Ok(out)
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
            docker,
        } => {
            let settings = settings(&cli.settings)?;
            if !(0.0..=600.0).contains(&dad_wait) {
                anyhow::bail!("--dad-wait {dad_wait}: expected 0 to 600 seconds");
            }
            let resolved = resolve(&t, &docker)?;
            let t = resolved.target.clone();
            let mut opened = target::open(&t, !dry_run, allow_host_netns)?;
            let gateways = merge_gateways(&resolved, &mut opened, gateways)?;
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
            docker,
        } => {
            let settings = settings(&cli.settings)?;
            let resolved = resolve(&t, &docker)?;
            let t = resolved.target.clone();
            let mut opened = target::open(&t, false, true)?;
            let gateways = merge_gateways(&resolved, &mut opened, gateways)?;
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
            docker,
        } => {
            let settings = settings(&cli.settings)?;
            let t = resolve(&t, &docker)?.target;
            let mut opened = target::open(&t, true, allow_host_netns)?;
            let rep = engine::clean(&mut opened.kernel, &settings)
                .with_context(|| format!("clean {}", t.path().display()))?;
            print!(
                "{}",
                report::clean_text(&rep, &t.path().display().to_string())
            );
            Ok(EXIT_OK)
        }
        Command::Diagnose {
            target: dt,
            json,
            docker_args,
        } => {
            let single = dt.single().filter(|t| t.container.is_none());
            let Some(t) = single else {
                return diagnose_docker(dt.container.as_deref(), &docker_args, json);
            };
            let t = resolve(&t, &docker_args)?.target;
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
        Command::Daemon {
            docker,
            resync_interval,
            require_label,
            metrics_listen,
            log_format,
            clean_on_exit,
        } => {
            let settings = settings(&cli.settings)?;
            init_logging(log_format);
            let opts = DaemonOptions {
                docker_host: docker.docker_host,
                resync_interval,
                require_label,
                metrics_listen,
                clean_on_exit,
                settings,
            };
            let rt = runtime()?;
            rt.block_on(async {
                let shutdown = async {
                    let term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
                    match term {
                        Ok(mut term) => {
                            tokio::select! {
                                _ = term.recv() => {}
                                _ = tokio::signal::ctrl_c() => {}
                            }
                        }
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                };
                daemon::run(opts, shutdown).await
            })?;
            Ok(EXIT_OK)
        }
        Command::Demo => {
            crate::demo::run(&mut std::io::stdout())?;
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
        Command::InstallCni(args) => crate::commands::install_cni::run(&args),
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            Ok(EXIT_OK)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYMROUTE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// `diagnose --docker` (every running container) or `--container NAME`.
fn diagnose_docker(name: Option<&str>, docker: &DockerArgs, json: bool) -> Result<u8> {
    let rt = runtime()?;
    let results = rt.block_on(async {
        let client = DockerClient::connect(docker.docker_host.as_deref()).await?;
        let ids = match name {
            Some(n) => vec![n.to_string()],
            None => client.running().await?,
        };
        let mut out = Vec::new();
        for id in ids {
            match dock::diagnose::diagnose_container(&client, &id).await {
                Ok(d) => out.push(d),
                // Gone between list and inspect: not an error of --docker.
                Err(dock::DockerError::NoSuchContainer(_)) if name.is_none() => {}
                Err(e) => return Err(e),
            }
        }
        Ok::<_, dock::DockerError>(out)
    })?;
    if json {
        print_json(&results)?;
    } else if results.is_empty() {
        println!("no running containers");
    } else {
        let texts: Vec<String> = results.iter().map(dock::diagnose::text).collect();
        print!("{}", texts.join("\n"));
    }
    Ok(if results.iter().all(|d| d.symmetric) {
        EXIT_OK
    } else {
        EXIT_FINDING
    })
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
