//! `symroute daemon`: watch Docker and keep every multi-homed container
//! symmetric, until SIGTERM or SIGINT.
//!
//! At start the soft limit on open files is raised to the hard one: each
//! managed container holds [`FDS_PER_CONTAINER`] descriptors for as long as
//! it runs, and the soft limit a service usually starts with (1024, systemd's
//! default, kept that low for programs that use `select(2)`, which nothing
//! here does: tokio uses epoll) would stop the daemon at about 340
//! containers. systemd's default hard limit (524288) is far above what any
//! host runs; `LimitNOFILE=` in the unit changes both.

use anyhow::Result;
use tracing::{info, warn};

use super::{EXIT_OK, runtime, settings};
use crate::cli::{DaemonArgs, LogFormat, SettingsArgs};
use symroute_docker::daemon::{self, DaemonOptions};

pub fn run(global: &SettingsArgs, a: DaemonArgs) -> Result<u8> {
    let settings = settings(global)?;
    init_logging(a.log_format);
    match raise_nofile_limit() {
        Ok((soft, hard)) => info!(
            soft,
            hard,
            containers = soft / FDS_PER_CONTAINER,
            "open file limit (about {FDS_PER_CONTAINER} per managed container)"
        ),
        Err(e) => warn!(error = %e, "cannot read or raise the open file limit"),
    }
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

/// Descriptors one managed container holds: its namespace file, a netlink
/// socket for changes and one for notifications.
pub const FDS_PER_CONTAINER: u64 = 3;

/// Raise the soft RLIMIT_NOFILE to the hard limit; the limits after.
fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok((lim.rlim_cur, lim.rlim_max))
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
