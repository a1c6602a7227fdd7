//! One module per subcommand, each a `run(args) -> Result<u8>`; what they
//! share (settings, output, exit codes) lives here.

pub mod apply;
pub mod clean;
pub mod completions;
pub mod daemon;
pub mod diagnose;
pub mod install_cni;
pub mod man;
pub mod status;

use anyhow::Result;

use crate::cli::SettingsArgs;
use std::path::Path;
use symroute_core::plan::Selection;

use symroute_core::settings::{ConfigFile, DEFAULT_CONFIG, Settings};
use symroute_linux::config::read_config;
use symroute_linux::netns::NetnsError;
use symroute_linux::target::{self, Opened, Target};

/// Exit codes scripts rely on.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FINDING: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// The settings: defaults, the config file, then the command line.
pub fn settings(args: &SettingsArgs) -> Result<Settings> {
    let mut s = if let Some(path) = &args.config {
        Settings::from_config_text(&read_config(path)?, path)?
    } else {
        let path = Path::new(DEFAULT_CONFIG);
        match read_config(path) {
            Ok(text) => Settings::from_config_text(&text, path)?,
            Err(e) if e.is_not_found() => Settings::default(),
            Err(e) => return Err(e.into()),
        }
    };
    s.overlay(&ConfigFile {
        table_band: args.table_band.clone(),
        priority: args.priority,
        protocol: args.protocol,
    })?;
    s.validate()?;
    Ok(s)
}

pub fn selection(all: bool) -> Selection {
    if all {
        Selection::All
    } else {
        Selection::MultiHomed
    }
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    out(&text)
}

/// Write `text` to standard output. A reader that went away (EPIPE, e.g.
/// `| head`) is not an error: the command's work is done and its exit code
/// stays what it was; the rest of the output is dropped quietly. (Rust's
/// runtime ignores SIGPIPE, so the write returns EPIPE instead of killing.)
pub fn out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::Error::from(e).context("writing to standard output")),
    }
}

/// Write one line to standard error, ignoring failures (a closed terminal
/// after SIGHUP must not turn a message into a panic).
pub fn err_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Open `t`; for a change, refuse the host's namespace (or one that cannot be
/// told from it) unless `allow_host`, with the flag that overrides it.
pub fn open_target(t: &Target, for_change: bool, allow_host: bool) -> Result<Opened> {
    target::open(t, for_change, allow_host).map_err(|e| match e {
        NetnsError::HostNamespace { .. } => {
            anyhow::anyhow!("{e} (pass --allow-host-netns to override)")
        }
        NetnsError::HostUndecidable { .. } => {
            anyhow::anyhow!("{e}; pass --allow-host-netns to proceed")
        }
        e => e.into(),
    })
}

/// A single-thread runtime for the Docker API calls of one command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
