//! `symroute daemon`: watch Docker and keep every multi-homed container
//! symmetric, until SIGTERM or SIGINT.

use anyhow::Result;

use super::{EXIT_OK, runtime, settings};
use crate::cli::{DaemonArgs, LogFormat, SettingsArgs};
use symroute_docker::daemon::{self, DaemonOptions};

pub fn run(global: &SettingsArgs, a: DaemonArgs) -> Result<u8> {
    let settings = settings(global)?;
    init_logging(a.log_format);
    let opts = DaemonOptions {
        docker_host: a.docker.docker_host,
        resync_interval: a.resync_interval,
        require_label: a.require_label,
        metrics_listen: a.metrics_listen,
        clean_on_exit: a.clean_on_exit,
        settings,
    };
    let rt = runtime()?;
    rt.block_on(async {
        let shutdown = async {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
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
