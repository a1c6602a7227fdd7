//! symroute as a chained CNI meta plugin (spec 0.3.0 to 1.1.0): ADD, DEL,
//! CHECK, VERSION, GC and STATUS for one interface of a container, after the
//! plugin that created it (bridge, macvlan, ipvlan, host-device, ...).
//!
//! The `symroute` binary is the plugin: when the environment has
//! `CNI_COMMAND`, `main` hands over to [`main_from_process`] before parsing
//! any command line. Installed (or copied) as `/opt/cni/bin/symroute`, a
//! runtime runs it as plugin type `symroute`.
//!
//! ADD plans the interface with [`Selection::Only`]: its own table from the
//! band with its connected routes, its default route via the gateway of
//! prevResult (or the configuration's `gateways`) and prevResult's other
//! routes through it, plus one `from ADDR` rule per address; or, with sbr's
//! `table`, the rules only. Nothing in the main table moves. The engine
//! applies the difference and rolls back on failure, so a repeated ADD
//! changes nothing and a failed one leaves nothing.
//!
//! [`run`] is the whole plugin with its environment, input and outputs
//! passed in, so tests can drive it in-process.

pub mod error;
pub mod state;
pub mod teardown;
pub mod types;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::json;

use symroute_core::diff::Op;
use symroute_core::engine::{self, ApplyOptions, EngineError};
use symroute_core::kernel::{Kernel, is_already};
use symroute_core::model::{Family, Link, Snapshot};
use symroute_core::plan::{GatewayHint, OnlyInterface, PlanRequest, RouteHint, Selection};
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::netns::{Netns, NetnsError};

pub use error::{CniError, code};
use state::AttachmentState;
use teardown::Scope;
use types::{NetConf, Options, PrevResult, SUPPORTED_VERSIONS, version_tuple};

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

    fn name(self) -> &'static str {
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
        let _ = writeln!(std::io::stdout(), "{}", err.to_json(types::LATEST_VERSION));
        let _ = writeln!(stderr, "symroute-cni: {err}");
        return 1;
    }
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        let err = CniError::with_details(code::IO, "read standard input", e.to_string());
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "{}", err.to_json(types::LATEST_VERSION));
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

/// The plugin: answer one request. Results and errors go to `stdout` as
/// the spec's JSON; logs to `stderr` or the configuration's `logFile`.
/// Returns the exit status (0, or 1 with an error object printed).
pub fn run(env: &Env, input: &[u8], stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    let mut log = Log::new(stderr, env);
    let version = types::request_version(input);
    let result = dispatch(env, input, stdout, &mut log);
    match result {
        Ok(()) => 0,
        Err(e) => {
            log.line(&format!("error {}: {e}", e.code));
            let _ = writeln!(stdout, "{}", e.to_json(&version));
            1
        }
    }
}

fn dispatch(
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
        Command::Add => add(&req, stdout, log),
        Command::Del => del(&req, log),
        Command::Check => check(&req, log),
        Command::Gc => gc(&req, log),
        Command::Status => status(&req, log),
        Command::Version => unreachable!("answered above"),
    }
}

fn version(input: &[u8], stdout: &mut dyn Write) -> Result<(), CniError> {
    let asked = serde_json::from_slice::<serde_json::Value>(input)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| types::LATEST_VERSION.to_string());
    let answer = json!({
        "cniVersion": asked,
        "supportedVersions": SUPPORTED_VERSIONS,
    });
    writeln!(stdout, "{answer}")
        .map_err(|e| CniError::with_details(code::IO, "write standard output", e.to_string()))
}

struct Request<'a> {
    env: &'a Env,
    conf: &'a NetConf,
    opts: &'a Options,
    prev: Option<&'a PrevResult>,
}

impl Request<'_> {
    fn network(&self) -> &str {
        self.conf.name.as_deref().unwrap_or("")
    }

    /// CNI_CONTAINERID, checked as the spec defines it.
    fn container_id(&self) -> Result<&str, CniError> {
        match self.env.get("CNI_CONTAINERID") {
            None | Some("") => Err(CniError::new(code::BAD_ENV, "CNI_CONTAINERID is not set")),
            Some(id) if types::valid_name(id) => Ok(id),
            Some(id) => Err(CniError::new(
                code::BAD_ENV,
                format!(
                    "CNI_CONTAINERID={id:?}: expected letters, digits, '_', '.' and '-', starting with a letter or digit"
                ),
            )),
        }
    }

    /// CNI_IFNAME, checked as the kernel and the spec accept it.
    fn ifname(&self) -> Result<&str, CniError> {
        match self.env.get("CNI_IFNAME") {
            None | Some("") => Err(CniError::new(code::BAD_ENV, "CNI_IFNAME is not set")),
            Some(n) if valid_ifname(n) => Ok(n),
            Some(n) => Err(CniError::new(
                code::BAD_ENV,
                format!(
                    "CNI_IFNAME={n:?}: not an interface name (1-15 bytes, not . or .., no '/', ':' or white space)"
                ),
            )),
        }
    }

    /// CNI_NETNS: an absolute path, or None when empty (DEL allows that).
    fn netns(&self, required: bool) -> Result<Option<&Path>, CniError> {
        match self.env.get("CNI_NETNS") {
            None | Some("") if required => {
                Err(CniError::new(code::BAD_ENV, "CNI_NETNS is not set"))
            }
            None | Some("") => Ok(None),
            Some(p) if p.starts_with('/') => Ok(Some(Path::new(p))),
            Some(p) => Err(CniError::new(
                code::BAD_ENV,
                format!("CNI_NETNS={p:?}: expected an absolute path"),
            )),
        }
    }

    /// CNI_ARGS must be `KEY=VALUE` pairs separated by ';' (symroute uses
    /// none of them).
    fn check_args(&self) -> Result<(), CniError> {
        let Some(args) = self.env.get("CNI_ARGS") else {
            return Ok(());
        };
        for pair in args.split(';').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                _ => {
                    return Err(CniError::new(
                        code::BAD_ENV,
                        format!("CNI_ARGS={args:?}: {pair:?} is not KEY=VALUE"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn state_path(&self, cid: &str, ifname: &str) -> PathBuf {
        state::state_path(&self.opts.data_dir, self.network(), cid, ifname)
    }
}

/// An interface name the kernel accepts (dev_valid_name).
pub fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != "."
        && n != ".."
        && !n
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

/// Open CNI_NETNS for ADD and CHECK: it must be a network namespace, and not
/// the host's. Never creates anything at that path.
fn open_netns(path: &Path) -> Result<Netns, CniError> {
    let ns = Netns::open(path).map_err(|e| {
        CniError::with_details(
            code::BAD_ENV,
            format!("CNI_NETNS={}: cannot use it", path.display()),
            e.to_string(),
        )
    })?;
    refuse_host(&ns)?;
    Ok(ns)
}

fn refuse_host(ns: &Netns) -> Result<(), CniError> {
    let id = ns
        .id()
        .map_err(|e| CniError::with_details(code::BAD_ENV, "CNI_NETNS", e.to_string()))?;
    if host_id().is_some_and(|h| h == id) {
        return Err(CniError::new(
            code::BAD_ENV,
            format!(
                "CNI_NETNS={} is the host's own network namespace: symroute does not change the host's routing",
                ns.path().display()
            ),
        ));
    }
    Ok(())
}

/// (device, inode) of the host's network namespace, as
/// [`Netns::is_host`] defines it: PID 1's, or, where that cannot be read,
/// the one this thread runs in (a plugin runs in the host's). One `stat`
/// of a path and one `fstat`, read once per process.
fn host_id() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    static HOST: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| {
        let id = |m: std::fs::Metadata| (m.dev(), m.ino());
        std::fs::metadata("/proc/1/ns/net")
            .map(id)
            .or_else(|_| std::fs::metadata("/proc/thread-self/ns/net").map(id))
            .ok()
    })
}

/// A netlink socket in `ns`, opened by this thread: it enters the
/// namespace for the `socket()` call only and comes straight back (a
/// socket stays bound to the namespace it was made in). The plugin is a
/// short single-threaded process; entering from this thread spares it a
/// thread and its memory, which a runtime pays on every ADD and DEL.
fn kernel_of(ns: &Netns) -> Result<NetlinkKernel, CniError> {
    Ok(NetlinkKernel::new(socket_in(ns)?))
}

fn socket_in(ns: &Netns) -> Result<symroute_linux::netlink::NlSocket, CniError> {
    ns.socket_on_this_thread().map_err(|e| {
        CniError::with_details(
            code::KERNEL,
            "netlink socket in the namespace",
            e.to_string(),
        )
    })
}

/// Only the rules and routes of the namespace (what DEL needs when ADD's
/// record names the table and addresses): two dumps instead of four.
fn rules_and_routes(k: &mut NetlinkKernel) -> Result<Snapshot, CniError> {
    k.rules_and_routes()
        .map_err(|e| CniError::with_details(code::KERNEL, e.what.clone(), e.source.to_string()))
}

fn snapshot_of(k: &mut NetlinkKernel) -> Result<Snapshot, CniError> {
    k.snapshot().map_err(|e| {
        CniError::with_details(code::KERNEL, "read the namespace's state", e.to_string())
    })
}

/// The plan request for one attachment, and notes for the log.
#[derive(Debug, Clone, Default)]
pub struct Built {
    pub request: PlanRequest,
    pub notes: Vec<String>,
}

fn on_link(link: &Link, gw: &IpAddr) -> bool {
    let family = Family::of(gw);
    if link.addrs.iter().any(|a| a.addr() == *gw) {
        return false;
    }
    matches!(gw, IpAddr::V6(v6) if v6.is_unicast_link_local())
        || link
            .global_addrs()
            .filter(|a| a.family() == family && a.net.prefix_len() < family.host_prefix())
            .any(|a| a.net.trunc().contains(gw))
}

/// Build the plan request for interface `link` (CNI_IFNAME) from the
/// configuration and prevResult:
/// - gateways, per family: the configuration's `gateways` first, then the
///   gateway of the interface's IPs in prevResult, then a default route of
///   prevResult; a prevResult gateway that is not on the link is left out
///   (the main table's default route on the link is the planner's next
///   choice);
/// - routes: prevResult's other routes whose gateway (their own, else the
///   family's) is on the link, or that have no gateway at all, and that no
///   `table` of their own places elsewhere;
/// - sbr's `table`: that table, rules only.
///
/// A configured gateway that does not fit the link is an error (code 7).
pub fn build_request(
    opts: &Options,
    prev: Option<&PrevResult>,
    ifname: &str,
    netns: Option<&str>,
    link: &Link,
) -> Result<Built, CniError> {
    let mut built = Built::default();
    let has_family = |f: Family| link.global_addrs().any(|a| a.family() == f);
    let mut gateways: BTreeMap<Family, IpAddr> = BTreeMap::new();
    for (family, gw) in &opts.gateways {
        if !has_family(*family) {
            built.notes.push(format!(
                "gateways: {gw} ignored: {ifname} has no global {family} address"
            ));
            continue;
        }
        if !on_link(link, gw) {
            let prefixes: Vec<String> = link
                .global_addrs()
                .filter(|a| a.family() == *family)
                .map(|a| a.net.trunc().to_string())
                .collect();
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "gateways: {gw} is not on {ifname} (its {family} prefixes: {}; its own addresses cannot be gateways)",
                    prefixes.join(", ")
                ),
            ));
        }
        gateways.insert(*family, *gw);
    }
    let mut offer = |built: &mut Built, gw: IpAddr, from: &str| {
        let family = Family::of(&gw);
        if gateways.contains_key(&family) || !has_family(family) {
            return;
        }
        if on_link(link, &gw) {
            gateways.insert(family, gw);
        } else {
            built.notes.push(format!(
                "{from}: gateway {gw} is not on {ifname}'s prefixes: not used"
            ));
        }
    };
    if let Some(prev) = prev {
        for ip in prev.ips_for(ifname, netns) {
            if let Some(gw) = ip.gateway {
                offer(&mut built, gw, &format!("prevResult IP {}", ip.address));
            }
        }
        for r in prev.routes.iter().filter(|r| r.dst.prefix_len() == 0) {
            if let (Some(gw), None) = (r.gw, r.table) {
                offer(&mut built, gw, &format!("prevResult route {}", r.dst));
            }
        }
        for r in prev.routes.iter().filter(|r| r.dst.prefix_len() != 0) {
            let family = Family::of(&r.dst.addr());
            if r.table.is_some() || !has_family(family) {
                continue;
            }
            let gw = r.gw.or_else(|| gateways.get(&family).copied());
            if let Some(g) = gw
                && !on_link(link, &g)
            {
                continue; // a route through another interface
            }
            built.request.routes.push(RouteHint {
                ifname: ifname.to_string(),
                dst: r.dst.trunc(),
                gateway: gw,
            });
        }
    }
    built.request.gateways = gateways
        .values()
        .map(|gw| GatewayHint {
            ifname: ifname.to_string(),
            gateway: *gw,
        })
        .collect();
    built.request.selection = Selection::Only(OnlyInterface {
        ifname: ifname.to_string(),
        table: opts.table,
        rules_only: opts.table.is_some(),
    });
    Ok(built)
}

fn engine_error(e: EngineError) -> CniError {
    match e {
        EngineError::Plan(p) => CniError::with_details(
            code::PLAN,
            "cannot plan the interface's routing",
            p.to_string(),
        ),
        other => CniError::with_details(
            code::KERNEL,
            "changing the namespace's rules and routes failed",
            other.to_string(),
        ),
    }
}

fn add(req: &Request<'_>, stdout: &mut dyn Write, log: &mut Log<'_>) -> Result<(), CniError> {
    let cid = req.container_id()?;
    let ifname = req.ifname()?;
    let netns = req.netns(true)?.expect("required");
    req.check_args()?;
    log.attachment = format!("{cid}/{ifname}");
    let Some(prev_value) = req.conf.prev_result.as_ref() else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "prevResult is missing: symroute is a chained plugin; list it after the plugin that creates the interface",
        ));
    };
    let ns = open_netns(netns)?;
    let ns_id = ns
        .id()
        .map_err(|e| CniError::with_details(code::BAD_ENV, "CNI_NETNS", e.to_string()))?;
    let _lock = state::lock(&ns, req.opts.lock_timeout)?;
    let mut k = kernel_of(&ns)?;
    let snap = symroute_core::engine::settled_snapshot(&mut k, req.opts.dad_wait).map_err(|e| {
        CniError::with_details(code::KERNEL, "read the namespace's state", e.to_string())
    })?;
    let link = snap.link_by_name(ifname).ok_or_else(|| {
        CniError::new(
            code::PLAN,
            format!(
                "no interface {ifname} in namespace {}: the previous plugin did not create it",
                netns.display()
            ),
        )
    })?;
    let built = build_request(req.opts, req.prev, ifname, netns.to_str(), link)?;
    for n in &built.notes {
        log.line(n);
    }
    let path = req.state_path(cid, ifname);
    if link.global_addrs().next().is_none() {
        log.line(&format!(
            "{ifname} has no global address: nothing to route, nothing changed"
        ));
        print_result(stdout, prev_value)?;
        return Ok(());
    }
    let opts = ApplyOptions {
        settings: req.opts.settings,
        request: built.request,
        dry_run: false,
        dad_wait: req.opts.dad_wait,
        interrupt: None,
    };
    let report = engine::apply_to(&mut k, snap, &opts).map_err(engine_error)?;
    let Some(iface) = report.plan.interfaces.first() else {
        return Err(CniError::new(
            code::PLAN,
            format!("the plan for {ifname} is empty"),
        ));
    };
    let state = AttachmentState {
        network: req.network().to_string(),
        container_id: cid.to_string(),
        ifname: ifname.to_string(),
        netns: netns.to_path_buf(),
        netns_id: ns_id,
        table: iface.table,
        rules_only: req.opts.table.is_some(),
        addrs: iface.addrs.iter().map(|a| a.addr()).collect(),
        protocol: req.opts.settings.protocol.get(),
        priority: req.opts.settings.priority,
    };
    if let Err(e) = state::save(&path, &state) {
        // Undo this run's changes: a failed ADD leaves nothing behind.
        let undo: Vec<Op> = report.ops.iter().rev().map(Op::inverse).collect();
        if let Err(u) = engine::execute_all(&mut k, &undo) {
            log.line(&format!("undo after the state file failed: {u}"));
        }
        return Err(e);
    }
    log.line(&format!(
        "table {}, {} change(s){}",
        iface.table,
        report.ops.len(),
        report
            .ops
            .iter()
            .map(|o| format!("; {}", op_text(o, &report.snapshot)))
            .collect::<String>()
    ));
    for n in &iface.notes {
        log.line(n);
    }
    print_result(stdout, prev_value)
}

fn print_result(stdout: &mut dyn Write, value: &serde_json::Value) -> Result<(), CniError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CniError::with_details(code::IO, "encode prevResult", e.to_string()))?;
    writeln!(stdout, "{text}")
        .map_err(|e| CniError::with_details(code::IO, "write standard output", e.to_string()))
}

/// Carry out removals, keeping on past failures; returns the failures.
fn remove_all(
    k: &mut NetlinkKernel,
    ops: &[Op],
    names: &Snapshot,
    log: &mut Log<'_>,
) -> Vec<String> {
    let mut errors = Vec::new();
    for op in ops {
        match k.execute(op) {
            Ok(()) => log.line(&op_text(op, names)),
            Err(e) if is_already(&e, op) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}

/// Remove one attachment's objects from an opened namespace.
fn clean_attachment(
    ns: &Netns,
    req: &Request<'_>,
    scope: &Scope,
    log: &mut Log<'_>,
) -> Result<(), CniError> {
    let _lock = state::lock(ns, req.opts.lock_timeout)?;
    let (mut k, snap) = if scope.table.is_some() && !scope.addrs.is_empty() {
        // ADD's record is enough: the link and its addresses are not needed.
        let mut k = kernel_of(ns)?;
        let snap = rules_and_routes(&mut k)?;
        (k, snap)
    } else {
        let mut k = kernel_of(ns)?;
        let snap = snapshot_of(&mut k)?;
        (k, snap)
    };
    let ops = teardown::teardown(&snap, &req.opts.settings, scope);
    let errors = remove_all(&mut k, &ops, &snap, log);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::with_details(
            code::CLEANUP,
            format!(
                "could not remove all of symroute's objects for {}",
                scope.ifname
            ),
            errors.join("; "),
        ))
    }
}

/// Whether a DEL/GC target namespace is gone: its path is missing, or it is
/// no network namespace any more (an unmounted bind-mount point).
fn vanished(e: &NetnsError) -> bool {
    match e {
        NetnsError::Open { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        NetnsError::NotNetns { .. } => true,
        _ => false,
    }
}

fn del(req: &Request<'_>, log: &mut Log<'_>) -> Result<(), CniError> {
    let cid = req.container_id()?;
    let ifname = req.ifname()?;
    let netns = req.netns(false)?;
    req.check_args()?;
    log.attachment = format!("{cid}/{ifname}");
    let path = req.state_path(cid, ifname);
    let recorded = match state::load(&path) {
        Ok(s) => s,
        Err(e) => {
            log.line(&format!("{e}: going on without it"));
            None
        }
    };
    let Some(netns) = netns else {
        log.line("no CNI_NETNS: nothing to remove in a namespace");
        return state::remove(&path);
    };
    let ns = match Netns::open(netns) {
        Ok(ns) => ns,
        Err(e) if vanished(&e) => {
            log.line(&format!(
                "namespace gone ({e}): its rules and routes went with it"
            ));
            return state::remove(&path);
        }
        Err(e) => {
            return Err(CniError::with_details(
                code::BAD_ENV,
                format!("CNI_NETNS={}", netns.display()),
                e.to_string(),
            ));
        }
    };
    refuse_host(&ns)?;
    let same_ns = ns.id().ok();
    let recorded = recorded.filter(|s| Some(s.netns_id) == same_ns);
    let mut addrs: Vec<IpAddr> = recorded
        .as_ref()
        .map(|s| s.addrs.clone())
        .unwrap_or_default();
    if let Some(prev) = req.prev {
        addrs.extend(
            prev.ips_for(ifname, netns.to_str())
                .into_iter()
                .map(|ip| ip.address.addr()),
        );
    }
    let scope = Scope {
        ifname: ifname.to_string(),
        addrs,
        table: recorded.as_ref().map(|s| s.table).or(req.opts.table),
        routes: recorded
            .as_ref()
            .map(|s| !s.rules_only)
            .unwrap_or(req.opts.table.is_none()),
    };
    clean_attachment(&ns, req, &scope, log)?;
    state::remove(&path)
}

fn check(req: &Request<'_>, log: &mut Log<'_>) -> Result<(), CniError> {
    let cid = req.container_id()?;
    let ifname = req.ifname()?;
    let netns = req.netns(true)?.expect("required");
    req.check_args()?;
    log.attachment = format!("{cid}/{ifname}");
    if req.conf.prev_result.is_none() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult (the attachment's cached result)",
        ));
    }
    let ns = open_netns(netns)?;
    let _lock = state::lock(&ns, req.opts.lock_timeout)?;
    let mut k = kernel_of(&ns)?;
    let snap = snapshot_of(&mut k)?;
    let link = snap.link_by_name(ifname).ok_or_else(|| {
        CniError::new(
            code::CHECK_MISMATCH,
            format!(
                "CHECK: no interface {ifname} in namespace {}",
                netns.display()
            ),
        )
    })?;
    if link.global_addrs().next().is_none() {
        return Ok(());
    }
    let built = build_request(req.opts, req.prev, ifname, netns.to_str(), link)?;
    let st = engine::status(&mut k, &req.opts.settings, &built.request).map_err(engine_error)?;
    if st.in_sync {
        return Ok(());
    }
    let mut what: Vec<String> = st
        .missing
        .iter()
        .map(|o| format!("missing {}", describe(o, &st.snapshot)))
        .collect();
    what.extend(
        st.extra
            .iter()
            .map(|o| format!("unexpected {}", describe(o, &st.snapshot))),
    );
    Err(CniError::with_details(
        code::CHECK_MISMATCH,
        format!(
            "CHECK {ifname}: {} missing, {} unexpected: {}",
            st.missing.len(),
            st.extra.len(),
            what.join("; ")
        ),
        format!(
            "table {}; run ADD again to repair",
            st.plan.interfaces.first().map(|i| i.table).unwrap_or(0)
        ),
    ))
}

/// An operation as a log line, with interface names.
fn op_text(op: &Op, names: &Snapshot) -> String {
    match op {
        Op::AddRule(_) | Op::DelRule(_) => op.to_string(),
        Op::AddRoute(r) => format!(
            "add route {}",
            symroute_core::render::route_args(r, Some(names))
        ),
        Op::DelRoute(r) => format!(
            "delete route {}",
            symroute_core::render::route_args(r, Some(names))
        ),
    }
}

/// An operation's object, without the verb.
fn describe(op: &Op, names: &Snapshot) -> String {
    match op {
        Op::AddRule(r) | Op::DelRule(r) => format!("rule {}", symroute_core::render::rule_args(r)),
        Op::AddRoute(r) | Op::DelRoute(r) => {
            format!(
                "route {}",
                symroute_core::render::route_args(r, Some(names))
            )
        }
    }
}

fn gc(req: &Request<'_>, log: &mut Log<'_>) -> Result<(), CniError> {
    let Some(valid) = req.conf.valid_attachments.as_ref() else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "GC needs cni.dev/valid-attachments (the attachments to keep)",
        ));
    };
    let keep: std::collections::BTreeSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let mut errors = Vec::new();
    for (path, st) in state::list(&req.opts.data_dir, req.network())? {
        let st = match st {
            Ok(s) => s,
            Err(e) => {
                log.line(&format!("GC: {e}: skipped"));
                continue;
            }
        };
        if keep.contains(&(st.container_id.as_str(), st.ifname.as_str())) {
            continue;
        }
        log.attachment = format!("{}/{}", st.container_id, st.ifname);
        match Netns::open(&st.netns) {
            Ok(ns) if ns.id().ok() == Some(st.netns_id) && refuse_host(&ns).is_ok() => {
                let scope = Scope {
                    ifname: st.ifname.clone(),
                    addrs: st.addrs.clone(),
                    table: Some(st.table),
                    routes: !st.rules_only,
                };
                if let Err(e) = clean_attachment(&ns, req, &scope, log) {
                    errors.push(e.to_string());
                    continue;
                }
            }
            _ => log.line("namespace gone: forgetting the attachment"),
        }
        if let Err(e) = state::remove(&path) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::with_details(
            code::CLEANUP,
            "GC could not remove everything",
            errors.join("; "),
        ))
    }
}

fn status(req: &Request<'_>, _log: &mut Log<'_>) -> Result<(), CniError> {
    symroute_linux::netlink::NlSocket::new().map_err(|e| {
        CniError::with_details(
            code::NOT_AVAILABLE,
            "rtnetlink is not usable",
            e.to_string(),
        )
    })?;
    let dir = &req.opts.data_dir;
    std::fs::create_dir_all(dir)
        .and_then(|()| {
            nix::unistd::access(dir.as_path(), nix::unistd::AccessFlags::W_OK).map_err(Into::into)
        })
        .map_err(|e: std::io::Error| {
            CniError::with_details(
                code::NOT_AVAILABLE,
                format!("state folder {} is not writable", dir.display()),
                e.to_string(),
            )
        })
}

/// Log lines: to the configuration's `logFile` when it can be opened,
/// else to standard error; never to standard output.
struct Log<'a> {
    stderr: &'a mut dyn Write,
    file: Option<std::fs::File>,
    command: &'static str,
    container: String,
    attachment: String,
}

impl<'a> Log<'a> {
    fn new(stderr: &'a mut dyn Write, env: &Env) -> Self {
        Log {
            stderr,
            file: None,
            command: "",
            container: env.get("CNI_CONTAINERID").unwrap_or("").to_string(),
            attachment: String::new(),
        }
    }

    fn log_to_file(&mut self, path: &Path) {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => self.file = Some(f),
            Err(e) => {
                let _ = writeln!(
                    self.stderr,
                    "symroute-cni: logFile {}: {e}; logging to standard error",
                    path.display()
                );
            }
        }
    }

    fn line(&mut self, msg: &str) {
        let who = if self.attachment.is_empty() {
            self.container.clone()
        } else {
            self.attachment.clone()
        };
        let text = format!(
            "{} symroute-cni[{}] {} {}: {msg}\n",
            timestamp(),
            std::process::id(),
            self.command,
            who
        );
        let written = match &mut self.file {
            Some(f) => f.write_all(text.as_bytes()).is_ok(),
            None => false,
        };
        if !written {
            let _ = self.stderr.write_all(text.as_bytes());
        }
    }
}

/// UTC time as RFC 3339 with milliseconds.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}
