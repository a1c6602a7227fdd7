//! The command line's definition. It lives in the library so the man page
//! and shell completions are generated from exactly these definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use symroute_core::plan::GatewayHint;

const EXAMPLES_APPLY: &str = "Examples:
  symroute apply --netns /run/netns/web
  symroute apply --pid 4242 --gateway eth1=172.18.0.1
  symroute apply --netns /run/netns/web --dry-run";

const EXAMPLES_STATUS: &str = "Examples:
  symroute status --netns /run/netns/web
  symroute status --pid 4242 --json";

const EXAMPLES_CLEAN: &str = "Example:
  symroute clean --netns /run/netns/web";

const EXAMPLES_DIAGNOSE: &str = "Exit status: 0 all replies symmetric, 1 some asymmetric, 2 error.

Examples:
  symroute diagnose --netns /run/netns/web
  symroute diagnose --container web
  symroute diagnose --docker
  symroute diagnose --pid 4242 --json";

const EXAMPLES_DAEMON: &str =
    "Containers labelled symroute.enable=false are left alone. Rules stay in place
when the daemon stops (they remain correct); --clean-on-exit removes them.

Examples:
  symroute daemon
  symroute daemon --metrics-listen 127.0.0.1:9742 --log-format json
  symroute daemon --require-label --resync-interval 5m";

const EXAMPLES_DEMO: &str = "Example:
  sudo symroute demo";

/// Make replies in multi-homed network namespaces leave through the
/// interface their request came in on.
#[derive(Debug, Parser)]
#[command(
    name = "symroute",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SYMROUTE_GIT_COMMIT"), ")"),
    about,
    long_about = "symroute gives every interface of a multi-homed network namespace its own \
routing table and a `from <address>` rule, so a reply leaves through the interface its \
request arrived on. It works from the host (no privileged container), owns only the rules \
and routes it tags, and never changes the main table.",
    after_help = "Examples:
  symroute diagnose --netns /run/netns/web
  symroute apply --netns /run/netns/web --gateway eth1=172.18.0.1
  symroute status --netns /run/netns/web
  symroute clean --netns /run/netns/web
  sudo symroute demo"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings shared by every command; each overrides the config file.
#[derive(Debug, Args, Clone, Default)]
pub struct SettingsArgs {
    /// Config file (TOML: table_band, priority, protocol) [default: /etc/symroute/config.toml when present]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Routing tables symroute may use, START-END [default: 10000-10999]
    #[arg(long, global = true, value_name = "START-END")]
    pub table_band: Option<String>,
    /// Priority of symroute's `from <address>` rules [default: 3000]
    #[arg(long, global = true, value_name = "N")]
    pub priority: Option<u32>,
    /// Protocol number tagging symroute's rules and routes [default: 115]
    #[arg(long, global = true, value_name = "N")]
    pub protocol: Option<u8>,
}

/// Which network namespace to work on.
#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// A network namespace file, e.g. /run/netns/web
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// The network namespace of a process (/proc/PID/ns/net)
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// A Docker container (name or id); its gateways come from Docker
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,
}

/// Where the Docker Engine API is.
#[derive(Debug, Args, Clone, Default)]
pub struct DockerArgs {
    /// Engine API (unix:///path, or tcp://host:port without TLS) [default: $DOCKER_HOST, else unix:///var/run/docker.sock, else Podman's unix:///run/podman/podman.sock]
    #[arg(long, value_name = "URL")]
    pub docker_host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// diagnose's target: a namespace, or every running Docker container.
#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub struct DiagnoseTarget {
    /// A network namespace file, e.g. /run/netns/web
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// The network namespace of a process (/proc/PID/ns/net)
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// A Docker container (name or id)
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,
    /// Every running Docker container
    #[arg(long)]
    pub docker: bool,
}

impl DiagnoseTarget {
    /// The single-namespace target, unless --docker.
    pub fn single(&self) -> Option<TargetArgs> {
        (!self.docker).then(|| TargetArgs {
            netns: self.netns.clone(),
            pid: self.pid,
            container: self.container.clone(),
        })
    }
}

/// `IFNAME=ADDRESS`, with no `/`, `:` or whitespace in the name (the kernel
/// refuses them in interface names): such a name could only match one
/// symroute made up for display (an interface whose name is not UTF-8, shown
/// as `b\xff (not UTF-8)`), never a real interface.
pub fn parse_gateway(s: &str) -> Result<GatewayHint, String> {
    let g: GatewayHint = s.parse()?;
    let n = &g.ifname;
    if n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!(
            "gateway {s:?}: {n:?} cannot be an interface name (no '/', ':' or whitespace)"
        ));
    }
    Ok(g)
}

/// "60s", "5m", "1h", "250ms" or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 60s, 5m, 250ms"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?}: must be positive"));
    }
    let d = std::time::Duration::try_from_secs_f64(v * mult)
        .map_err(|_| format!("{s:?}: at most 1 day"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?}: at most 1 day"));
    }
    Ok(d)
}

/// The longest duration any flag takes (lock wait, resync interval).
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `symroute apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Gateway of an interface, IFNAME=ADDRESS (repeatable; IPv6 fe80:: gateways allowed)
    #[arg(long = "gateway", value_name = "IFNAME=ADDR", value_parser = parse_gateway)]
    pub gateways: Vec<GatewayHint>,
    /// Manage the namespace even when it has a single interface with global addresses
    #[arg(long)]
    pub all_interfaces: bool,
    /// Print the plan as `ip` commands (shell-quoted, ready to paste); change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan and the result as JSON
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for tentative (DAD) IPv6 addresses
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    pub dad_wait: f64,
    /// Allow changing the host's own network namespace (the initial one)
    #[arg(long)]
    pub allow_host_netns: bool,
    /// How long to wait for another symroute writer of the same namespace
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub lock_timeout: std::time::Duration,
    #[command(flatten)]
    pub docker: DockerArgs,
}

/// `symroute status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Gateways as given to apply (IFNAME=ADDR), to compare against the same plan
    #[arg(long = "gateway", value_name = "IFNAME=ADDR", value_parser = parse_gateway)]
    pub gateways: Vec<GatewayHint>,
    /// As for apply
    #[arg(long)]
    pub all_interfaces: bool,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub docker: DockerArgs,
}

/// `symroute clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Allow changing the host's own network namespace (the initial one)
    #[arg(long)]
    pub allow_host_netns: bool,
    /// How long to wait for another symroute writer of the same namespace
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// Print what was removed as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub docker: DockerArgs,
}

/// `symroute diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub target: DiagnoseTarget,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub docker_args: DockerArgs,
}

/// `symroute daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub docker: DockerArgs,
    /// How often to re-read every container, e.g. 60s, 5m
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub resync_interval: std::time::Duration,
    /// Manage only containers labelled symroute.enable=true
    #[arg(long)]
    pub require_label: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default)
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Log format
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT, remove symroute's rules and routes from every managed container
    #[arg(long)]
    pub clean_on_exit: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add per-interface tables and source rules so every reply leaves where its request came in
    #[command(after_help = EXAMPLES_APPLY)]
    Apply(ApplyArgs),
    /// Show interfaces, tables, rules and whether the kernel matches the plan (exit 1 when not)
    #[command(after_help = EXAMPLES_STATUS)]
    Status(StatusArgs),
    /// Remove every rule and route symroute owns, nothing else
    #[command(after_help = EXAMPLES_CLEAN)]
    Clean(CleanArgs),
    /// Show which way each reply would leave, and why the default route is where it is
    #[command(after_help = EXAMPLES_DIAGNOSE)]
    Diagnose(DiagnoseArgs),
    /// Watch Docker and keep every multi-homed container symmetric
    #[command(after_help = EXAMPLES_DAEMON)]
    Daemon(DaemonArgs),
    /// Rebuild the seed's broken setup in throwaway namespaces, fix it, and show each step
    #[command(after_help = EXAMPLES_DEMO)]
    Demo,
    /// Print shell completions
    #[command(
        after_help = "Example:\n  symroute completions bash > /etc/bash_completion.d/symroute"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Copy the CNI plugin into a node's CNI binary directory, atomically, and check it answers
    InstallCni(crate::commands::install_cni::InstallCniArgs),
    /// Write the man pages (symroute.1 and one per command) into a folder
    #[command(after_help = "Example:\n  symroute man /usr/local/share/man/man1")]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

impl Command {
    /// Whether the command was asked for JSON output (errors then are JSON too).
    pub fn json(&self) -> bool {
        match self {
            Command::Apply(a) => a.json,
            Command::Status(a) => a.json,
            Command::Clean(a) => a.json,
            Command::Diagnose(a) => a.json,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn out_of_range_durations_are_refused_not_panics() {
        for bad in [
            "1e20", "1.5e19", "1e30", "25h", "86401", "inf", "nan", "0", "-1", "x",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        let e = Cli::try_parse_from([
            "symroute",
            "apply",
            "--netns",
            "/x",
            "--lock-timeout",
            "1e20",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--lock-timeout") && e.contains("at most 1 day"),
            "{e}"
        );
        let e = Cli::try_parse_from(["symroute", "daemon", "--resync-interval", "1e30"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--resync-interval") && e.contains("at most 1 day"),
            "{e}"
        );
    }
}
