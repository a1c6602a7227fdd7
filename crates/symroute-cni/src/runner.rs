//! The edge between a process and the plugin: the `CNI_*` environment,
//! standard input, panics, and the answer on standard output (a result, or
//! the spec's error object with exit status 1). The only place that reads
//! the process's environment and standard streams; everything below works
//! on what it is handed, so tests drive it in-process.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde_json::json;

use crate::commands;
use crate::error::{CniError, code};
use crate::log::Log;
use crate::ns::{LinuxNamespaces, Namespaces};
use crate::request::Request;
use crate::types::{self, LATEST_VERSION, SUPPORTED_VERSIONS, version_tuple};

/// The environment a runtime gives the plugin (`CNI_*` variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process's own environment (non-UTF-8 values are made lossy).
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
        }
    }

    pub fn new<I, K, V>(vars: I) -> Env
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }
}

/// The CNI operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// Run the plugin as this process: environment, standard input and outputs
/// of the process. Returns the exit status.
pub fn main_from_process() -> u8 {
    let env = Env::from_process();
    let mut input = Vec::with_capacity(16 * 1024);
    let mut stderr = std::io::stderr();
    if env.get("CNI_COMMAND").is_none_or(str::is_empty) {
        // Run by hand: say what this is instead of waiting for input.
        let err = CniError::with_details(
            code::BAD_ENV,
            "CNI_COMMAND is not set",
            "this is a CNI plugin: container runtimes run it with CNI_COMMAND and the network configuration on standard input (see docs/cni.md)",
        );
        let _ = writeln!(std::io::stdout(), "{}", err.to_json(LATEST_VERSION));
        let _ = writeln!(stderr, "symroute-cni: {err}");
        return 1;
    }
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        let err = CniError::with_details(code::IO, "read standard input", e.to_string());
        let _ = writeln!(std::io::stdout(), "{}", err.to_json(LATEST_VERSION));
        let _ = writeln!(stderr, "symroute-cni: {err}");
        return 1;
    }
    let version = types::request_version(&input);
    let outcome = std::panic::catch_unwind(|| {
        let mut stdout = std::io::stdout().lock();
        let rc = run(&env, &input, &mut stdout, &mut std::io::stderr());
        let _ = stdout.flush();
        rc
    });
    outcome.unwrap_or_else(|_| {
        // A bug: still answer as the spec wants (the panic message is on
        // standard error already).
        let err = CniError::new(code::KERNEL, "internal error (symroute panicked)");
        let _ = writeln!(std::io::stdout(), "{}", err.to_json(&version));
        1
    })
}

/// The plugin on this machine's namespaces: answer one request. Results
/// and errors go to `stdout` as the spec's JSON; logs to `stderr` or the
/// configuration's `logFile`. Returns the exit status (0, or 1 with an
/// error object printed).
pub fn run(env: &Env, input: &[u8], stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    run_with(&LinuxNamespaces, env, input, stdout, stderr)
}

/// [`run`] on the namespaces `nss` gives (a fake one in tests).
pub fn run_with<N: Namespaces>(
    nss: &N,
    env: &Env,
    input: &[u8],
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> u8 {
    let mut log = Log::new(stderr, env.get("CNI_CONTAINERID").unwrap_or(""));
    let version = types::request_version(input);
    match dispatch(nss, env, input, stdout, &mut log) {
        Ok(()) => 0,
        Err(e) => {
            log.line(&format!("error {}: {e}", e.code));
            let _ = writeln!(stdout, "{}", e.to_json(&version));
            1
        }
    }
}

fn dispatch<N: Namespaces>(
    nss: &N,
    env: &Env,
    input: &[u8],
    stdout: &mut dyn Write,
    log: &mut Log<'_>,
) -> Result<(), CniError> {
    let command = match env.get("CNI_COMMAND") {
        None | Some("") => {
            return Err(CniError::new(code::BAD_ENV, "CNI_COMMAND is not set"));
        }
        Some(c) => Command::parse(c).ok_or_else(|| {
            CniError::with_details(
                code::BAD_ENV,
                format!("CNI_COMMAND={c}: unknown command"),
                "expected ADD, DEL, CHECK, VERSION, GC or STATUS",
            )
        })?,
    };
    log.command = command.name();
    if command == Command::Version {
        return version(input, stdout);
    }
    let conf = types::decode_config(input)?;
    if let Some(path) = &conf.log_file {
        log.log_to_file(path);
    }
    let need = match command {
        Command::Check => Some((0, 4, 0)),
        Command::Gc | Command::Status => Some((1, 1, 0)),
        _ => None,
    };
    if let Some(need) = need
        && version_tuple(&conf.cni_version).is_some_and(|v| v < need)
    {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{} needs cniVersion {}.{}.{} or later; the configuration says {}",
                command.name(),
                need.0,
                need.1,
                need.2,
                conf.cni_version
            ),
        ));
    }
    let opts = conf.options()?;
    let prev = conf.prev()?;
    let req = Request {
        env,
        conf: &conf,
        opts: &opts,
        prev: prev.as_ref(),
    };
    match command {
        Command::Add => {
            let result = commands::add(nss, &req, log)?;
            print_result(stdout, result)
        }
        Command::Del => commands::del(nss, &req, log),
        Command::Check => commands::check(nss, &req, log),
        Command::Gc => commands::gc(nss, &req, log),
        Command::Status => commands::status(nss, &req),
        Command::Version => unreachable!("answered above"),
    }
}

fn version(input: &[u8], stdout: &mut dyn Write) -> Result<(), CniError> {
    let asked = serde_json::from_slice::<serde_json::Value>(input)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| LATEST_VERSION.to_string());
    let answer = json!({
        "cniVersion": asked,
        "supportedVersions": SUPPORTED_VERSIONS,
    });
    writeln!(stdout, "{answer}")
        .map_err(|e| CniError::with_details(code::IO, "write standard output", e.to_string()))
}

fn print_result(stdout: &mut dyn Write, value: &serde_json::Value) -> Result<(), CniError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CniError::with_details(code::IO, "encode prevResult", e.to_string()))?;
    writeln!(stdout, "{text}")
        .map_err(|e| CniError::with_details(code::IO, "write standard output", e.to_string()))
}
