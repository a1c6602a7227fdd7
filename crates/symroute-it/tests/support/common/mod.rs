//! Helpers shared by the `core_*` integration tests: the real binary, raw
//! netlink dumps of a lab namespace, symroute's own objects read back through
//! the library's kernel adapter, and TCP probes with clear failures.
//!
//! Every namespace these helpers touch is one a test created (anonymous, gone
//! when its `Ns` drops). Nothing here changes the host's namespace.

#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use ipnet::IpNet;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::rule::{RuleAttribute, RuleMessage};
use serde_json::Value;
use symroute_core::kernel::Kernel;
use symroute_core::model::{Route, Rule, Snapshot};
use symroute_linux::kernel::NetlinkKernel;
use symroute_testkit::lab::{LabError, Ns};

pub mod bounded;
pub mod docker;
pub mod engines;

/// The binary under test.
pub static BIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    symroute_testkit::workspace_bin("symroute")
        .display()
        .to_string()
});
/// symroute's default protocol tag.
pub const TAG: u8 = 115;
/// How long a probe that must fail is given.
pub const FAIL_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long each attempt of a probe that must succeed is given.
pub const OK_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of a probe that must succeed (a link that just came up may need a
/// moment for neighbour resolution).
pub const OK_ATTEMPTS: usize = 3;

pub fn require_root() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "this test must run as root (it creates network namespaces, veths and bridges and \
         runs symroute against them); effective uid is {uid}. Run: sudo -E cargo test --test 'core_*'"
    );
}

pub fn ok<T>(result: Result<T, LabError>) -> T {
    result.unwrap_or_else(|e| panic!("lab: {e}"))
}

pub fn net(text: &str) -> IpNet {
    text.parse()
        .unwrap_or_else(|e| panic!("bad prefix {text}: {e}"))
}

pub fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("bad address {text}: {e}"))
}

pub fn sock(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("bad socket address {text}: {e}"))
}

/// A folder of our own under cargo's scratch space for integration tests.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = target_tmpdir().join(format!("symroute-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// An empty config file: passed to every run of the binary (except config
/// tests), so a /etc/symroute/config.toml on the machine cannot change what
/// the tests see.
fn empty_config() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    // One shared, always-empty file: every test process writes the same
    // (empty) content, so nothing accumulates between runs.
    PATH.get_or_init(|| {
        let path = target_tmpdir().join("symroute-empty-config.toml");
        std::fs::write(&path, "").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    })
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Out {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Panic with the whole run unless it exited with `code`.
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            code,
            "symroute {} exited {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Standard output parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "symroute {}: stdout is not JSON ({e}):\n{}",
                self.args.join(" "),
                self.stdout
            )
        })
    }
}

fn run(args: Vec<String>) -> Out {
    let output = Command::new(&*BIN)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", *BIN));
    Out {
        args,
        // Killed by a signal counts as a failure of its own.
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn strings<I, S>(args: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// Run the binary with an empty config file and `args`.
pub fn symroute<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all = vec!["--config".to_string(), empty_config().display().to_string()];
    all.extend(strings(args));
    run(all)
}

/// Run the binary with exactly `args`.
pub fn symroute_raw<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(strings(args))
}

/// `ns.path()` as a string, for command lines.
pub fn path_of(ns: &Ns) -> String {
    ns.path().display().to_string()
}

/// The library's kernel adapter bound to `ns`.
pub fn kernel(ns: &Ns) -> NetlinkKernel {
    let sock = ns
        .netns()
        .socket()
        .unwrap_or_else(|e| panic!("netlink socket in {}: {e}", ns.name()));
    NetlinkKernel::new(sock)
}

pub fn snapshot(ns: &Ns) -> Snapshot {
    kernel(ns)
        .snapshot()
        .unwrap_or_else(|e| panic!("snapshot of {}: {e}", ns.name()))
}

/// The rules and routes carrying `tag`, read back from the kernel, sorted.
pub fn owned_with(ns: &Ns, tag: u8) -> (Vec<Rule>, Vec<Route>) {
    let snap = snapshot(ns);
    let mut rules: Vec<Rule> = snap
        .rules
        .iter()
        .filter(|r| r.protocol == tag)
        .cloned()
        .collect();
    let mut routes: Vec<Route> = snap
        .routes
        .iter()
        .filter(|r| r.protocol == tag)
        .cloned()
        .collect();
    rules.sort();
    routes.sort();
    (rules, routes)
}

/// symroute's objects (protocol 115) in `ns`, sorted.
pub fn owned(ns: &Ns) -> (Vec<Rule>, Vec<Route>) {
    owned_with(ns, TAG)
}

/// Every rule and route of a namespace (all tables, `local` included), as
/// the kernel reports them, one string per object, sorted. Route cache
/// information (use counters, expiry) is left out: it changes on its own.
/// Taken once no address is tentative any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub rules: Vec<String>,
    pub routes: Vec<String>,
}

fn rule_protocol(m: &RuleMessage) -> u8 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Protocol(p) => Some(u8::from(*p)),
            _ => None,
        })
        .unwrap_or(0)
}

pub fn dump_filtered(ns: &Ns, keep_tag: impl Fn(u8) -> bool) -> Dump {
    // IPv6 link-local addresses finish duplicate address detection on their
    // own schedule and only then get their `local` route: let that settle so
    // a dump compares what the test did, not the kernel's clock.
    ok(ns.wait_no_tentative(Duration::from_secs(10)));
    let (rules, routes) = ns.with_netlink(|nl| {
        let rules = nl
            .dump(RouteNetlinkMessage::GetRule(RuleMessage::default()))
            .unwrap_or_else(|e| panic!("dump rules of {}: {e}", ns.name()));
        let routes = nl
            .dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))
            .unwrap_or_else(|e| panic!("dump routes of {}: {e}", ns.name()));
        (rules, routes)
    });
    let mut out = Dump {
        rules: Vec::new(),
        routes: Vec::new(),
    };
    for m in rules {
        if let RouteNetlinkMessage::NewRule(r) = m
            && keep_tag(rule_protocol(&r))
        {
            out.rules.push(format!("{:?} {:?}", r.header, r.attributes));
        }
    }
    for m in routes {
        if let RouteNetlinkMessage::NewRoute(mut r) = m
            && keep_tag(u8::from(r.header.protocol))
        {
            r.attributes.retain(|a| {
                !matches!(a, RouteAttribute::CacheInfo(_) | RouteAttribute::Expires(_))
            });
            out.routes
                .push(format!("{:?} {:?}", r.header, r.attributes));
        }
    }
    out.rules.sort();
    out.routes.sort();
    out
}

/// Every rule and route of `ns`.
pub fn dump(ns: &Ns) -> Dump {
    dump_filtered(ns, |_| true)
}

/// Every rule and route of `ns` not tagged with symroute's protocol.
pub fn dump_foreign(ns: &Ns) -> Dump {
    dump_filtered(ns, |p| p != TAG)
}

/// Panic listing exactly what differs between two dumps.
pub fn assert_same_dump(before: &Dump, after: &Dump, context: &str) {
    if before == after {
        return;
    }
    let mut text = String::new();
    for (kind, b, a) in [
        ("rule", &before.rules, &after.rules),
        ("route", &before.routes, &after.routes),
    ] {
        let mut count: BTreeMap<&String, i32> = BTreeMap::new();
        for s in b {
            *count.entry(s).or_default() -= 1;
        }
        for s in a {
            *count.entry(s).or_default() += 1;
        }
        for (s, n) in count {
            if n < 0 {
                text.push_str(&format!("  gone {kind}: {s}\n"));
            } else if n > 0 {
                text.push_str(&format!("  new  {kind}: {s}\n"));
            }
        }
    }
    panic!("{context}: the namespace's rules/routes changed:\n{text}");
}

/// Connect from `client` to `target`: must get `banner` back (a few
/// attempts, each with a short timeout).
pub fn assert_connects(client: &Ns, target: SocketAddr, banner: &str, context: &str) {
    let mut errors = Vec::new();
    for _ in 0..OK_ATTEMPTS {
        match client.tcp_probe(target, OK_TIMEOUT) {
            Ok(text) => {
                assert_eq!(
                    text.trim(),
                    banner,
                    "{context}: unexpected answer from {target}"
                );
                return;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    panic!(
        "{context}: TCP connection from {} to {target} failed {OK_ATTEMPTS} times: {}",
        client.name(),
        errors.join(" | ")
    );
}

/// Connect from `client` to `target`: must time out (the reply is dropped on
/// the way back). A refusal or an unreachable error is not the failure under
/// test and fails the test.
pub fn assert_blocked(client: &Ns, target: SocketAddr, context: &str) {
    match client.tcp_probe(target, FAIL_TIMEOUT) {
        Ok(text) => panic!(
            "{context}: TCP connection from {} to {target} succeeded ({text:?}); \
             the reply should have been dropped on its asymmetric way back",
            client.name()
        ),
        Err(LabError::Io { source, .. }) if source.kind() == ErrorKind::TimedOut => {}
        Err(e) => panic!(
            "{context}: TCP connection from {} to {target} failed, but not by timing out \
             (a dropped reply times out): {e}",
            client.name()
        ),
    }
}

/// The interface called `name` in a plan's JSON.
pub fn plan_iface<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("plan has no interfaces array: {plan}"))
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("plan has no interface {name}: {plan}"))
}

/// `symroute apply --netns CTR --json` with `--gateway G` for each of
/// `gateways`: must exit 0; its JSON report.
pub fn apply_json(ctr: &str, gateways: &[&str]) -> Value {
    let mut args = vec!["apply", "--netns", ctr, "--json"];
    for g in gateways {
        args.extend(["--gateway", g]);
    }
    let out = symroute(&args);
    out.expect(0);
    out.json()
}

/// The table number a plan's JSON gives interface `name`.
pub fn plan_table(plan: &Value, name: &str) -> u32 {
    let t = plan_iface(plan, name)["table"]
        .as_u64()
        .unwrap_or_else(|| panic!("no table for {name}: {plan}"));
    u32::try_from(t).expect("table fits u32")
}

/// A plan's rules and routes from JSON, sorted, as the library's types.
pub fn plan_objects(plan: &Value) -> (Vec<Rule>, Vec<Route>) {
    let mut rules: Vec<Rule> = serde_json::from_value(plan["rules"].clone())
        .unwrap_or_else(|e| panic!("plan rules: {e}: {plan}"));
    let mut routes: Vec<Route> = serde_json::from_value(plan["routes"].clone())
        .unwrap_or_else(|e| panic!("plan routes: {e}: {plan}"));
    rules.sort();
    routes.sort();
    (rules, routes)
}

/// Number of operations in an apply/status JSON array.
pub fn len_of(v: &Value, key: &str) -> usize {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array: {v}"))
        .len()
}

/// `<target>/tmp`, the folder cargo names CARGO_TARGET_TMPDIR for tests
/// and benchmarks (this library is built without it): found from the
/// running binary, `<target>/<profile>/deps/<name>`.
pub fn target_tmpdir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test binary");
    let target = exe
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .expect("the test binary sits under cargo's target folder");
    let tmp = target.join("tmp");
    std::fs::create_dir_all(&tmp).expect("create <target>/tmp");
    tmp
}

/// Make `cmd`'s process get SIGTERM when the thread that spawns it ends (the
/// test process killed without unwinding), and not start at all if that
/// already happened: an engine, a daemon or a helper never outlives its test.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = libc::pid_t::try_from(std::process::id()).expect("pid fits pid_t");
    // SAFETY: runs in the forked child before exec; prctl and getppid are
    // async-signal-safe and the error path allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: do not outlive it.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
