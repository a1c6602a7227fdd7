//! `symroute daemon` against a real dockerd (Debian's 20.10, API 1.41) in a
//! lab namespace (tests/support/common/docker.rs): the daemon runs inside the docker
//! host's namespace, next to dockerd, exactly as it would on a real host, and
//! every behaviour of issue 3 is checked on real containers: the failing
//! topologies fixed with no manual step, network connect/disconnect,
//! restarts, host and container:X modes, resync, dockerd restarts, churn,
//! bad input, shutdown, labels, and `diagnose --docker`.
//!
//! Nothing is timed here: convergence is polled with a generous bound
//! ([`CONVERGE`]); the latency is measured by `cargo bench --bench docker`.
//!
//! Needs root and Debian's docker.io and busybox-static (scripts/test
//! installs them); the tests share dockerd's cost through `DOCKER_SLOT`.

use symroute_it::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::docker::macvlan::{self, MacvlanLab};
use common::docker::routed::{self, RoutedLab};
use common::docker::{DockerLab, api, log_tail};
use common::{BIN, TAG, assert_blocked, assert_connects, assert_same_dump, dump, require_root};
use ipnet::IpNet;
use serde_json::{Value, json};
use symroute_core::kernel::Kernel;
use symroute_core::model::{Route, Rule};
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::netns::Netns;
use symroute_testkit::lab::Ns;

/// Upper bound for anything the daemon must do on its own (it normally takes
/// milliseconds; the bound only keeps a broken daemon from hanging a test).
const CONVERGE: Duration = Duration::from_secs(10);
/// How long the daemon may take to exit after SIGTERM.
const DAEMON_STOP: Duration = Duration::from_secs(10);
/// Polling interval of the waits.
const POLL: Duration = Duration::from_millis(50);

static NEXT_DAEMON: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------
// The daemon under test
// ---------------------------------------------------------------------------

/// A `symroute daemon` process started by the test inside a lab namespace,
/// with its JSON log (stderr) in a file. Stopped by its pid (SIGTERM, then
/// SIGKILL after [`DAEMON_STOP`]) when dropped, on every path.
struct Daemon {
    child: Child,
    pid: u32,
    log: PathBuf,
    metrics: SocketAddr,
    /// The namespace it runs in (the metrics endpoint is there).
    netns: Netns,
    exit: Option<ExitStatus>,
}

/// An empty config file in `dir` (a /etc/symroute/config.toml on the machine
/// must not change what the tests see).
fn empty_config(dir: &Path) -> PathBuf {
    let path = dir.join("symroute-empty.toml");
    fs::write(&path, "").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

impl Daemon {
    /// Start the daemon next to the lab's dockerd.
    fn start(lab: &DockerLab, extra: &[&str]) -> Daemon {
        Daemon::start_in(lab.ns(), &lab.docker_host(), lab.dir(), extra)
    }

    /// Start the daemon in `ns`, talking to `docker_host`, its log and config
    /// in `dir`.
    fn start_in(ns: &Ns, docker_host: &str, dir: &Path, extra: &[&str]) -> Daemon {
        let n = NEXT_DAEMON.fetch_add(1, Ordering::Relaxed);
        let log = dir.join(format!("symroute-daemon-{n}.log"));
        let config = empty_config(dir);
        // A port free in that namespace (a fresh one: all are).
        let port = ns
            .run(|| TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
            .unwrap_or_else(|e| panic!("lab: {e}"))
            .unwrap_or_else(|e| panic!("find a free port in ns {}: {e}", ns.name()))
            .port();
        let metrics = SocketAddr::from(([127, 0, 0, 1], port));
        let file =
            fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let mut cmd = ns.command(&*BIN);
        cmd.arg("--config")
            .arg(&config)
            .args([
                "daemon",
                "--docker-host",
                docker_host,
                "--log-format",
                "json",
            ])
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .args(extra)
            // The decisions too (skips, sharing), without the crates' debug.
            .env("SYMROUTE_LOG", "info,symroute=debug")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        // Killed with the test: SIGTERM, and it shuts down as under systemd.
        common::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {} daemon in ns {}: {e}", *BIN, ns.name()));
        let netns = Netns::open(ns.path()).unwrap_or_else(|e| panic!("reopen ns: {e}"));
        let mut d = Daemon {
            pid: child.id(),
            child,
            log,
            metrics,
            netns,
            exit: None,
        };
        // Serving metrics means it parsed its arguments and runs its loop.
        d.wait("the metrics endpoint answers", || d.metrics_text().is_ok());
        d.assert_running();
        d
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exit = Some(status);
            panic!(
                "symroute daemon (pid {}) exited ({status}); its log:\n{}",
                self.pid,
                log_tail(&self.log, 40)
            );
        }
    }

    /// Wait up to [`CONVERGE`] for `done`, panicking with `what` (and, from
    /// Drop, the daemon's log).
    fn wait(&self, what: &str, done: impl FnMut() -> bool) -> Duration {
        wait_for(CONVERGE, what, done)
    }

    /// `GET /metrics` from inside the daemon's namespace.
    fn metrics_text(&self) -> Result<String, String> {
        api::scrape(&self.netns, self.metrics)
    }

    /// One sample's value, e.g. `symroute_errors_total` or
    /// `symroute_reconciles_total{outcome="error"}`.
    fn metric(&self, name: &str) -> f64 {
        let text = self
            .metrics_text()
            .unwrap_or_else(|e| panic!("metrics of the daemon: {e}"));
        api::sample(&text, name).unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
    }

    fn wait_metric(&self, name: &str, value: f64) {
        self.wait(&format!("metric {name} == {value}"), || {
            self.metrics_text()
                .ok()
                .and_then(|t| api::sample(&t, name))
                .is_some_and(|v| v == value)
        });
    }

    fn wait_connected(&self) {
        self.wait_metric("symroute_docker_connected", 1.0);
    }

    /// Every line of its log, parsed (a line that is not JSON is kept as
    /// `{"raw": line}`, which no assertion expects).
    fn log_lines(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| json!({ "raw": l })))
            .collect()
    }

    /// Log lines whose message is `message`.
    fn logged(&self, message: &str) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|l| msg(l) == message)
            .collect()
    }

    /// Log lines with `message` about container `name`.
    fn logged_for(&self, message: &str, name: &str) -> Vec<Value> {
        self.logged(message)
            .into_iter()
            .filter(|l| l["container"] == name)
            .collect()
    }

    fn wait_logged_for(&self, message: &str, name: &str) -> Value {
        self.wait(&format!("log line {message:?} for {name}"), || {
            !self.logged_for(message, name).is_empty()
        });
        self.logged_for(message, name).remove(0)
    }

    /// Panic on any WARN or ERROR line whose message is not in `expected`,
    /// and on lines that are not JSON.
    fn assert_no_problems(&self, expected: &[&str]) {
        let bad: Vec<String> = self
            .log_lines()
            .into_iter()
            .filter(|l| {
                l.get("raw").is_some()
                    || (matches!(l["level"].as_str(), Some("WARN" | "ERROR"))
                        && !expected.contains(&msg(l)))
            })
            .map(|l| l.to_string())
            .collect();
        assert!(
            bad.is_empty(),
            "unexpected warnings/errors in the daemon's log {}:\n{}",
            self.log.display(),
            bad.join("\n")
        );
    }

    /// SIGTERM, wait (SIGKILL after [`DAEMON_STOP`]): its exit status.
    fn stop(&mut self) -> ExitStatus {
        if let Some(s) = self.exit {
            return s;
        }
        // Not reaped yet, so the pid is still our child's.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).expect("pid fits"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + DAEMON_STOP;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                _ => {
                    eprintln!(
                        "symroute daemon (pid {}) ignored SIGTERM for {DAEMON_STOP:?}: killed",
                        self.pid
                    );
                    let _ = self.child.kill();
                    break self.child.wait().expect("reap the daemon");
                }
            }
        };
        self.exit = Some(status);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "symroute daemon (pid {}): end of its log {}:\n{}",
                self.pid,
                self.log.display(),
                log_tail(&self.log, 40)
            );
        }
        self.stop();
    }
}

fn msg(line: &Value) -> &str {
    line["message"]
        .as_str()
        .or_else(|| line["fields"]["message"].as_str())
        .unwrap_or("")
}

/// Wait up to `bound` for `done` (polled every [`POLL`]); how long it took.
/// Panics naming `what` after `bound`.
fn wait_for(bound: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "timed out after {bound:?} waiting for: {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Poll `get` until `done` holds for its value or `bound` passes: the last
/// value either way.
fn wait_for_value<T>(bound: Duration, mut get: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let start = Instant::now();
    loop {
        let v = get();
        if done(&v) || start.elapsed() >= bound {
            return v;
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// Containers' namespaces and Docker
// ---------------------------------------------------------------------------

/// symroute's objects (protocol 115) in a namespace file, sorted.
fn try_tagged(path: &Path) -> Result<(Vec<Rule>, Vec<Route>), String> {
    let netns = Netns::open(path).map_err(|e| e.to_string())?;
    let sock = netns.socket().map_err(|e| e.to_string())?;
    let snap = NetlinkKernel::new(sock)
        .snapshot()
        .map_err(|e| e.to_string())?;
    let mut rules: Vec<Rule> = snap
        .rules
        .iter()
        .filter(|r| r.protocol == TAG)
        .cloned()
        .collect();
    let mut routes: Vec<Route> = snap
        .routes
        .iter()
        .filter(|r| r.protocol == TAG)
        .cloned()
        .collect();
    rules.sort();
    routes.sort();
    Ok((rules, routes))
}

fn tagged(path: &Path) -> (Vec<Rule>, Vec<Route>) {
    try_tagged(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `/proc/<pid>/ns/net` of a running container.
fn netns_of(lab: &DockerLab, id: &str) -> PathBuf {
    lab.container_netns_path(id)
}

/// The `from` addresses of rules.
fn sources(rules: &[Rule]) -> BTreeSet<IpNet> {
    rules.iter().filter_map(|r| r.src).collect()
}

fn host(ip: IpAddr) -> IpNet {
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("host prefix")
}

/// `symroute status --container NAME` (gateways from Docker): its exit code
/// and output.
fn status(lab: &DockerLab, name: &str) -> common::Out {
    common::symroute([
        "status",
        "--container",
        name,
        "--docker-host",
        &lab.docker_host(),
    ])
}

/// Wait until `symroute status --container NAME` says in sync (exit 0).
fn wait_converged(lab: &DockerLab, name: &str) -> Duration {
    let start = Instant::now();
    loop {
        let out = status(lab, name);
        if out.code == 0 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < CONVERGE,
            "container {name} not converged after {CONVERGE:?}; last status exited {}:\n{}{}",
            out.code,
            out.stdout,
            out.stderr
        );
        std::thread::sleep(POLL);
    }
}

/// The rules in container `id`'s namespace are exactly one per address
/// Docker gave it on `networks`, with no duplicate.
fn assert_rules_for(lab: &DockerLab, id: &str, networks: &[&str]) -> (Vec<Rule>, Vec<Route>) {
    let (rules, routes) = tagged(&netns_of(lab, id));
    let want: BTreeSet<IpNet> = networks
        .iter()
        .map(|n| host(lab.container_ip(id, n)))
        .collect();
    assert_eq!(
        rules.len(),
        want.len(),
        "container {id}: expected one rule per network {networks:?}, got {rules:#?}"
    );
    assert_eq!(sources(&rules), want, "container {id}: rules {rules:#?}");
    (rules, routes)
}

/// Create a user bridge network.
fn network(lab: &DockerLab, name: &str, subnet: &str, gateway: &str) {
    lab.docker_ok([
        "network",
        "create",
        "--subnet",
        subnet,
        "--gateway",
        gateway,
        name,
    ]);
}

/// The two bridge networks most tests attach containers to: n1
/// 172.20.0.0/16 and n2 172.21.0.0/16.
fn two_networks(lab: &DockerLab) {
    network(lab, "n1", "172.20.0.0/16", "172.20.0.1");
    network(lab, "n2", "172.21.0.0/16", "172.21.0.1");
}

/// `docker run -d` of the test image's server (it exits at once on SIGTERM,
/// so stops and dockerd's shutdown do not wait) on `first`, then `docker
/// network connect` to each of `more`; its id.
fn run_multi(lab: &DockerLab, name: &str, opts: &[&str], first: &str, more: &[&str]) -> String {
    let mut args = vec!["--network", first];
    args.extend_from_slice(opts);
    args.push(lab.image());
    let id = lab.run_detached(name, &args);
    for n in more {
        lab.docker_ok(["network", "connect", n, &id]);
    }
    id
}

/// The container's state from `docker inspect`.
fn state(lab: &DockerLab, id: &str) -> Value {
    lab.inspect(id)["State"].clone()
}

// ---------------------------------------------------------------------------
// Process accounting
// ---------------------------------------------------------------------------

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("list /proc/{pid}/fd: {e}"))
        .count()
}

/// (dev, ino) of a namespace file.
fn ns_id(path: impl AsRef<Path>) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The network namespaces `pid` holds a socket in (each socket's namespace,
/// read with pidfd_getfd + SIOCGSKNS), with how many sockets in each. A
/// namespace kept alive only by a socket is invisible to /proc/*/ns/net: this
/// is where a leak by the daemon would show.
fn socket_namespaces(pid: u32) -> BTreeMap<(u64, u64), usize> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open({pid}): {}",
        io::Error::last_os_error()
    );
    // SAFETY: the kernel just gave us this descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let is_socket =
            fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: duplicates the target's descriptor into ours.
        let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if dup < 0 {
            continue; // closed meanwhile
        }
        // SAFETY: a new descriptor of ours.
        let dup = unsafe { OwnedFd::from_raw_fd(dup as i32) };
        // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor.
        let nsfd = unsafe { libc::ioctl(dup.as_raw_fd(), SIOCGSKNS as _) };
        assert!(
            nsfd >= 0,
            "SIOCGSKNS on fd {fd} of {pid}: {}",
            io::Error::last_os_error()
        );
        // SAFETY: a new descriptor of ours.
        let nsfd = unsafe { OwnedFd::from_raw_fd(nsfd) };
        let id = ns_id(format!("/proc/self/fd/{}", nsfd.as_raw_fd())).expect("stat netns fd");
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

/// Distinct network namespaces of all processes (/proc/*/ns/net).
fn process_namespaces() -> BTreeSet<(u64, u64)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| ns_id(e.path().join("ns/net")))
        .collect()
}

/// Live namespaces in dockerd's exec-root netns folder: one bind mount per
/// sandbox (`default`, the docker host's own namespace, left out). libnetwork
/// unmounts a sandbox's namespace when it is destroyed and deletes the empty
/// file later (a 60 s garbage collection): only mounted ones count.
fn docker_netns(lab: &DockerLab) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(lab.dir().join("exec/netns"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name() != "default" && Netns::open(e.path()).is_ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// The failing topologies, fixed by the running daemon
// ---------------------------------------------------------------------------

#[test]
fn macvlan_web_started_under_the_daemon_answers_remote_clients() {
    require_root();
    let lab = MacvlanLab::build();
    let docker = &lab.docker;

    // No daemon: the remote client's replies go astray.
    let first = lab.run_web();
    assert_blocked(&lab.remote, lab.target(), "remote, no daemon");
    docker.rm_f(&first).expect("docker rm -f web");

    let d = Daemon::start(docker, &[]);
    d.wait_connected();
    let id = lab.run_web();
    let took = wait_converged(docker, macvlan::WEB);
    eprintln!("web converged {took:?} after `docker network connect` returned (polled)");
    assert_connects(
        &lab.remote,
        lab.target(),
        macvlan::BANNER,
        "remote, daemon running",
    );
    assert_connects(
        &lab.router,
        lab.target(),
        macvlan::BANNER,
        "router, daemon running",
    );
    let (_, routes) = assert_rules_for(docker, &id, &[macvlan::LAN_NETWORK, macvlan::APP_NETWORK]);
    let lan = docker.container_iface(&id, macvlan::LAN_NETWORK);
    assert!(
        routes
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(IpAddr::V4(macvlan::ROUTER_LAN))),
        "no default route via the macvlan's gateway ({lan}) in symroute's tables: {routes:#?}"
    );
    // One structured line per change; the daemon may act on the kernel's
    // link notification (the new interface) before Docker's connect event,
    // then on the event with both networks.
    d.wait_logged_for("converged", macvlan::WEB);
    d.wait("a line for web with both networks", || {
        d.log_lines().iter().any(|l| {
            l["container"] == macvlan::WEB
                && matches!(msg(l), "converged" | "in sync")
                && l["networks"] == "app_default,lan"
        })
    });
    assert_eq!(d.metric("symroute_containers_managed"), 1.0);
    assert_eq!(d.metric("symroute_errors_total"), 0.0);
    assert!(d.metric("symroute_event_to_converged_seconds_count") >= 1.0);
    d.assert_no_problems(&[]);
}

#[test]
fn routed_web_started_under_the_daemon_answers_remote_clients() {
    require_root();
    let lab = RoutedLab::build();
    let docker = &lab.docker;

    let first = lab.run_web();
    assert_blocked(&lab.remote, lab.front_target(), "front-tier, no daemon");
    docker.rm_f(&first).expect("docker rm -f web");

    let d = Daemon::start(docker, &[]);
    d.wait_connected();
    let id = lab.run_web();
    wait_converged(docker, routed::WEB);
    assert_connects(
        &lab.remote,
        lab.front_target(),
        routed::BANNER,
        "front-tier, daemon running",
    );
    assert_connects(
        &lab.remote,
        lab.back_target(),
        routed::BANNER,
        "back-tier, daemon running",
    );
    assert_rules_for(docker, &id, &[routed::BACK_NETWORK, routed::FRONT_NETWORK]);
    assert_eq!(d.metric("symroute_errors_total"), 0.0);
    d.assert_no_problems(&[]);
}

#[test]
fn daemon_started_after_the_containers_fixes_them_by_resync() {
    require_root();
    let lab = RoutedLab::build();
    let docker = &lab.docker;
    let web = lab.run_web();
    let more: Vec<String> = ["api", "worker"]
        .iter()
        .map(|n| {
            run_multi(
                docker,
                n,
                &[],
                routed::BACK_NETWORK,
                &[routed::FRONT_NETWORK],
            )
        })
        .collect();
    assert_blocked(
        &lab.remote,
        lab.front_target(),
        "front-tier, before the daemon",
    );
    for name in [routed::WEB, "api", "worker"] {
        assert_eq!(
            status(docker, name).code,
            1,
            "{name} is out of sync before the daemon"
        );
    }

    let d = Daemon::start(docker, &[]);
    for name in [routed::WEB, "api", "worker"] {
        wait_converged(docker, name);
    }
    assert_connects(
        &lab.remote,
        lab.front_target(),
        routed::BANNER,
        "front-tier, after resync",
    );
    for id in std::iter::once(&web).chain(&more) {
        assert_rules_for(docker, id, &[routed::BACK_NETWORK, routed::FRONT_NETWORK]);
    }
    assert_eq!(d.metric("symroute_containers_managed"), 3.0);
    assert_eq!(d.metric("symroute_errors_total"), 0.0);
    d.assert_no_problems(&[]);
}

#[test]
fn a_rule_or_route_deleted_by_hand_in_a_managed_container_comes_back() {
    require_root();
    let lab = RoutedLab::build();
    let docker = &lab.docker;
    // No periodic resync within the test: only the namespace's rule and
    // route notifications can bring them back.
    let d = Daemon::start(docker, &["--resync-interval", "1h"]);
    d.wait_connected();
    let id = lab.run_web();
    wait_converged(docker, routed::WEB);
    let path = netns_of(docker, &id);
    let want = tagged(&path);
    let (rules, routes) = want.clone();
    assert_eq!(rules.len(), 2, "a rule per network: {rules:#?}");
    let changed = d.metric("symroute_reconciles_total{outcome=\"changed\"}");
    let by_hand = |op: symroute_core::diff::Op| {
        let netns = Netns::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut k = NetlinkKernel::new(netns.socket().unwrap_or_else(|e| panic!("{e}")));
        k.execute(&op)
            .unwrap_or_else(|e| panic!("delete by hand {op:?}: {e}"));
    };
    // `ip rule del` of symroute's rule for the front-tier address.
    let front = host(IpAddr::V4(routed::WEB_FRONT));
    let rule = rules
        .iter()
        .find(|r| r.src == Some(front))
        .unwrap_or_else(|| panic!("no rule from {front}: {rules:#?}"))
        .clone();
    // (Not read back: the daemon may have put it back already.)
    by_hand(symroute_core::diff::Op::DelRule(rule));
    let took = wait_for(CONVERGE, "the deleted rule back", || {
        try_tagged(&path).is_ok_and(|t| t == want)
    });
    eprintln!("rule restored {took:?} after its deletion (polled every {POLL:?})");
    // `ip route del` of a default route in one of symroute's tables.
    let route = routes
        .iter()
        .find(|r| r.dst.prefix_len() == 0)
        .unwrap_or_else(|| panic!("no default route in symroute's tables: {routes:#?}"))
        .clone();
    by_hand(symroute_core::diff::Op::DelRoute(route));
    let took = wait_for(CONVERGE, "the deleted route back", || {
        try_tagged(&path).is_ok_and(|t| t == want)
    });
    eprintln!("route restored {took:?} after its deletion (polled every {POLL:?})");
    assert!(
        d.metric("symroute_reconciles_total{outcome=\"changed\"}") >= changed + 2.0,
        "two repairs: the deletions happened and were undone"
    );
    assert_eq!(d.metric("symroute_errors_total"), 0.0);
    d.assert_no_problems(&[]);
}

// ---------------------------------------------------------------------------
// Lifecycle events
// ---------------------------------------------------------------------------

#[test]
fn rules_follow_network_connect_and_disconnect() {
    require_root();
    let lab = DockerLab::start();
    two_networks(&lab);
    network(&lab, "n3", "172.22.0.0/16", "172.22.0.1");
    let d = Daemon::start(&lab, &[]);
    d.wait_connected();
    let id = run_multi(&lab, "multi", &[], "n1", &["n2"]);
    wait_converged(&lab, "multi");
    assert_rules_for(&lab, &id, &["n1", "n2"]);
    let path = netns_of(&lab, &id);

    // Connect while running: a rule from the new address, its table with a
    // default route via n3's gateway and n3's connected prefix.
    lab.docker_ok(["network", "connect", "n3", &id]);
    let addr3 = host(lab.container_ip(&id, "n3"));
    d.wait("a rule from the n3 address", || {
        sources(&tagged(&path).0).contains(&addr3)
    });
    wait_converged(&lab, "multi");
    let (rules, routes) = assert_rules_for(&lab, &id, &["n1", "n2", "n3"]);
    let table = rules
        .iter()
        .find(|r| r.src == Some(addr3))
        .map(|r| r.table)
        .expect("rule from n3");
    let in_table: Vec<&Route> = routes.iter().filter(|r| r.table == table).collect();
    let gw3 = IpAddr::V4("172.22.0.1".parse().expect("literal"));
    let net3: IpNet = "172.22.0.0/16".parse().expect("literal");
    assert!(
        in_table
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(gw3)),
        "table {table}: no default via {gw3}: {in_table:#?}"
    );
    assert!(
        in_table.iter().any(|r| r.dst == net3),
        "table {table}: no route to {net3}: {in_table:#?}"
    );

    // Disconnect: nothing tagged refers to n3's address, gateway, prefix or table.
    lab.docker_ok(["network", "disconnect", "n3", &id]);
    d.wait("nothing of n3 left", || {
        let (rules, routes) = tagged(&path);
        !rules
            .iter()
            .any(|r| r.src == Some(addr3) || r.table == table)
            && !routes.iter().any(|r| {
                r.table == table
                    || r.gateway == Some(gw3)
                    || r.dst == net3
                    || r.prefsrc == Some(addr3.addr())
            })
    });
    wait_converged(&lab, "multi");
    assert_rules_for(&lab, &id, &["n1", "n2"]);

    // What the kernel drops with no Docker event: a link set down and up
    // loses its routes (symroute's table included); the daemon's link watch
    // puts them back.
    let iface = lab.container_iface(&id, "n2");
    let before = tagged(&path);
    for updown in ["down", "up"] {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["ip", "link", "set", "dev", &iface, updown])
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter");
        assert!(
            out.status.success(),
            "ip link set {iface} {updown}: {out:?}"
        );
    }
    let took = d.wait("the link's routes repaired", || tagged(&path) == before);
    eprintln!("routes of {iface} repaired within {took:?} of `ip link set up` (polled)");
    wait_converged(&lab, "multi");
    assert_eq!(d.metric("symroute_errors_total"), 0.0);
    d.assert_no_problems(&[]);
}

#[test]
fn restart_and_a_kill_under_a_restart_policy_are_made_symmetric_again() {
    require_root();
    let lab = MacvlanLab::build();
    let docker = &lab.docker;
    let d = Daemon::start(docker, &[]);
    d.wait_connected();
    // run_web, with a restart policy.
    let ip = macvlan::WEB_LAN.to_string();
    let id = docker.run_server(
        macvlan::WEB,
        Some(macvlan::BANNER),
        &[
            "--restart",
            "always",
            "--network",
            macvlan::LAN_NETWORK,
            "--ip",
            &ip,
        ],
    );
    docker.docker_ok([
        "network",
        "connect",
        "--ip",
        &macvlan::WEB_APP.to_string(),
        macvlan::APP_NETWORK,
        &id,
    ]);
    wait_converged(docker, macvlan::WEB);
    assert_connects(
        &lab.remote,
        lab.target(),
        macvlan::BANNER,
        "remote, first start",
    );
    let networks = [macvlan::LAN_NETWORK, macvlan::APP_NETWORK];
    // web in its new namespace: converged, rules for both networks, and
    // reached by the remote client.
    let converged_and_reachable = |what: &str| {
        wait_converged(docker, macvlan::WEB);
        assert_rules_for(docker, &id, &networks);
        docker.wait_listening(&id, common::docker::SERVICE_PORT);
        assert_connects(&lab.remote, lab.target(), macvlan::BANNER, what);
    };

    // docker restart: die, then start in a new namespace.
    let old_pid = docker.inspect_pid(&id);
    docker.docker_ok(["restart", "-t", "1", &id]);
    let new_pid = docker.inspect_pid(&id);
    assert_ne!(old_pid, new_pid, "docker restart gave the same process");
    converged_and_reachable("remote, after docker restart");

    // The container's init killed from the host: the restart policy brings
    // it back (die, then start), in another new namespace.
    let victim = docker.inspect_pid(&id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(victim).expect("pid fits")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the container's init");
    wait_for(
        Duration::from_secs(30),
        "web restarted by its policy",
        || {
            let s = state(docker, &id);
            s["Running"] == true
                && s["Pid"]
                    .as_u64()
                    .is_some_and(|p| p != u64::from(victim) && p > 0)
        },
    );
    assert!(docker.inspect(&id)["RestartCount"].as_u64() >= Some(1));
    converged_and_reachable("remote, after the kill");
    assert!(
        d.logged_for("released", macvlan::WEB).len() >= 2,
        "each death releases the old namespace"
    );
    assert_eq!(d.metric("symroute_containers_managed"), 1.0);
    assert_eq!(d.metric("symroute_errors_total"), 0.0);
    d.assert_no_problems(&[]);
}

#[test]
fn host_mode_is_never_touched_and_a_shared_namespace_is_managed_once() {
    require_root();
    let lab = RoutedLab::build();
    let docker = &lab.docker;
    let mut d = Daemon::start(docker, &[]);
    d.wait_connected();
    let web = lab.run_web();
    wait_converged(docker, routed::WEB);
    let web_ns = netns_of(docker, &web);
    let owned = assert_rules_for(docker, &web, &[routed::BACK_NETWORK, routed::FRONT_NETWORK]);

    // The docker host's namespace (multi-homed: uplink and two bridges)
    // before and after a host-mode and a container:web container start.
    let before = dump(docker.ns());
    docker.run_detached(
        "hosty",
        &["--network", "host", docker.image(), "/bin/sleep", "3600"],
    );
    let skipped = d.wait_logged_for("not managed", "hosty");
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap_or("")
            .contains("network mode host"),
        "{skipped}"
    );
    docker.run_detached(
        "sidecar",
        &[
            "--network",
            "container:web",
            docker.image(),
            "/bin/sleep",
            "3600",
        ],
    );
    let shared = d.wait_logged_for("not managed", "sidecar");
    assert!(
        shared["reason"]
            .as_str()
            .unwrap_or("")
            .contains("shares the namespace"),
        "the daemon should log sidecar as sharing web's namespace: {shared}"
    );
    assert_same_dump(
        &before,
        &dump(docker.ns()),
        "docker host after host-mode and container: starts",
    );
    assert_eq!(
        ns_id(format!("/proc/{}/ns/net", docker.inspect_pid("sidecar"))),
        ns_id(&web_ns),
        "sidecar shares web's namespace"
    );
    assert_eq!(
        tagged(&web_ns),
        owned,
        "web's objects changed when sidecar started"
    );
    assert_eq!(d.metric("symroute_containers_managed"), 1.0);
    // status through the sharing container works on the owner.
    status(docker, "sidecar").expect(0);

    // A new daemon resyncs all three: still one namespace managed, once.
    d.stop();
    let d2 = Daemon::start(docker, &[]);
    d2.wait_logged_for("not managed", "sidecar");
    d2.wait_logged_for("not managed", "hosty");
    d2.wait_metric("symroute_containers_managed", 1.0);
    assert_eq!(tagged(&web_ns), owned, "a resync duplicated web's objects");
    assert_same_dump(&before, &dump(docker.ns()), "docker host after a resync");
    assert_connects(
        &lab.remote,
        lab.front_target(),
        routed::BANNER,
        "front-tier",
    );
    for daemon in [&d, &d2] {
        daemon.assert_no_problems(&[]);
    }
}

// ---------------------------------------------------------------------------
// dockerd restarts
// ---------------------------------------------------------------------------

#[test]
fn daemon_reconnects_after_a_dockerd_restart_and_keeps_working() {
    require_root();
    let mut lab = DockerLab::start();
    two_networks(&lab);
    let d = Daemon::start(&lab, &[]);
    d.wait_connected();
    let a = run_multi(&lab, "first", &["--restart", "always"], "n1", &["n2"]);
    wait_converged(&lab, "first");
    let a_pid = lab.inspect_pid(&a);

    // A clean restart of dockerd on the same socket (its containers stop;
    // "first" comes back by its policy, in a new namespace).
    lab.restart_dockerd();
    d.wait("two \"connected to Docker\" lines", || {
        d.logged("connected to Docker").len() >= 2
    });
    d.wait_connected();
    let connected = d.logged("connected to Docker");
    assert_eq!(connected.len(), 2, "{connected:#?}");
    assert_eq!(connected[1]["api"], "1.41", "{}", connected[1]);
    wait_for(
        Duration::from_secs(30),
        "first restarted by its policy",
        || {
            let s = state(&lab, &a);
            s["Running"] == true
                && s["Pid"]
                    .as_u64()
                    .is_some_and(|p| p > 0 && p != u64::from(a_pid))
        },
    );
    wait_converged(&lab, "first");
    assert_rules_for(&lab, &a, &["n1", "n2"]);

    // Events are followed again: a container started now is converged.
    let b = run_multi(&lab, "second", &[], "n1", &["n2"]);
    wait_converged(&lab, "second");
    assert_rules_for(&lab, &b, &["n1", "n2"]);
    d.wait_metric("symroute_containers_managed", 2.0);
    // Expected while dockerd was away: the stream ending, failed connects.
    d.assert_no_problems(&[
        "Docker event stream ended (dockerd restarting?); reconnecting",
        "Docker event stream failed; reconnecting",
        "cannot reach Docker",
        "resync: cannot list containers",
    ]);
}

// ---------------------------------------------------------------------------
// Churn
// ---------------------------------------------------------------------------

/// Containers started (and all removed) by the churn test.
const CHURN: usize = 200;
/// Started per batch; half of the previous batch is removed meanwhile.
const CHURN_BATCH: usize = 20;
/// Concurrent Engine API clients.
const CHURN_CLIENTS: usize = 4;

/// Run `f` on each item, `CHURN_CLIENTS` at a time.
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let chunk = items.len().div_ceil(CHURN_CLIENTS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("churn worker panicked"))
            .collect()
    })
}

#[test]
fn churn_of_many_containers_leaks_nothing_and_converges_the_survivors() {
    require_root();
    let t0 = Instant::now();
    let lab = DockerLab::start();
    let image = lab.image();
    network(&lab, "churn-a", "172.24.0.0/16", "172.24.0.1");
    network(&lab, "churn-b", "172.25.0.0/16", "172.25.0.1");
    let socket = lab.socket_path();
    let d = Daemon::start(&lab, &[]);
    d.wait_connected();
    // Settled: the resync's API connection is pooled or closed by now.
    std::thread::sleep(Duration::from_millis(500));
    let fds_start = fd_count(d.pid);
    let own_ns = ns_id(format!("/proc/{}/ns/net", d.pid)).expect("daemon's netns");
    let held_start = socket_namespaces(d.pid);
    assert_eq!(
        held_start.keys().collect::<Vec<_>>(),
        vec![&own_ns],
        "at start the daemon's sockets are all in its own namespace"
    );
    let docker_ns_start = docker_netns(&lab).len();
    let procs_ns_start = process_namespaces().len();
    eprintln!(
        "churn: lab ready in {:?}; daemon fds {fds_start}, docker sandboxes {docker_ns_start}, \
         process namespaces machine-wide {procs_ns_start}",
        t0.elapsed()
    );

    let converged = |id: &String| -> bool {
        let pid = api::pid(&socket, id);
        try_tagged(Path::new(&format!("/proc/{pid}/ns/net"))).is_ok_and(|(r, _)| r.len() == 2)
    };
    let mut survivors: Vec<String> = Vec::new();
    let mut previous: Vec<String> = Vec::new();
    let mut started = 0;
    let mut removed = 0;
    let t_start = Instant::now();
    while started < CHURN {
        let names: Vec<String> = (started..(started + CHURN_BATCH).min(CHURN))
            .map(|i| format!("churn{i}"))
            .collect();
        started += names.len();
        let ids = parallel(&names, |name| {
            api::start_two(&socket, image, name, "churn-a", "churn-b")
        });
        // Meanwhile the previous batch loses half its containers.
        let (gone, keep) = previous.split_at(previous.len() / 2);
        parallel(gone, |id| api::rm(&socket, id));
        removed += gone.len();
        survivors.extend_from_slice(keep);
        wait_for(CONVERGE, "a churn batch converged", || {
            ids.iter().all(converged)
        });
        previous = ids;
    }
    survivors.extend(previous);
    let churn_time = t_start.elapsed();
    d.wait_metric("symroute_containers_managed", survivors.len() as f64);
    let rss = fs::read_to_string(format!("/proc/{}/status", d.pid))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "churn: {started} started, {removed} removed in {churn_time:?}; {} survivors managed; \
         daemon {rss}, {} fds",
        survivors.len(),
        fd_count(d.pid)
    );

    // Every survivor is converged, as `status --container` (Docker's
    // gateways) sees it, and the daemon's sockets are exactly in the
    // survivors' namespaces and its own.
    let t_status = Instant::now();
    let statuses = parallel(&survivors, |id| (id.clone(), status(&lab, id)));
    for (id, out) in &statuses {
        assert_eq!(
            out.code, 0,
            "survivor {id} out of sync:\n{}{}",
            out.stdout, out.stderr
        );
    }
    let mut expect_ns: BTreeSet<(u64, u64)> = survivors
        .iter()
        .map(|id| ns_id(format!("/proc/{}/ns/net", api::pid(&socket, id))).expect("survivor ns"))
        .collect();
    expect_ns.insert(own_ns);
    let held: BTreeSet<(u64, u64)> = socket_namespaces(d.pid).into_keys().collect();
    assert_eq!(
        held, expect_ns,
        "the daemon holds sockets in namespaces other than the survivors' and its own"
    );
    eprintln!(
        "churn: {} statuses in {:?}",
        statuses.len(),
        t_status.elapsed()
    );

    // Remove every survivor: back to the start.
    let t_rm = Instant::now();
    parallel(&survivors, |id| api::rm(&socket, id));
    removed += survivors.len();
    assert_eq!(removed, started);
    d.wait_metric("symroute_containers_managed", 0.0);
    d.wait("the daemon's descriptors back to their start", || {
        fd_count(d.pid) <= fds_start
    });
    let held_end = socket_namespaces(d.pid);
    assert_eq!(
        held_end.keys().collect::<Vec<_>>(),
        vec![&own_ns],
        "after removing every container the daemon still holds sockets in other namespaces"
    );
    let left = wait_for_value(
        CONVERGE,
        || docker_netns(&lab),
        |n| n.len() == docker_ns_start,
    );
    assert_eq!(
        left.len(),
        docker_ns_start,
        "Docker's sandboxes did not go back to their start: {left:?}"
    );
    let fds_end = fd_count(d.pid);
    eprintln!(
        "churn: all removed in {:?}; daemon fds {fds_start} -> {fds_end}, docker sandboxes \
         {docker_ns_start} -> {}, process namespaces machine-wide {procs_ns_start} -> {} \
         (other users of the machine count there too); total {:?}",
        t_rm.elapsed(),
        docker_netns(&lab).len(),
        process_namespaces().len(),
        t0.elapsed()
    );
    assert_eq!(d.metric("symroute_errors_total"), 0.0);
    assert_eq!(
        d.metric("symroute_reconciles_total{outcome=\"error\"}"),
        0.0
    );
    d.assert_no_problems(&[]);
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

/// A folder under cargo's scratch space, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn missing_or_refusing_docker_socket_is_reported_and_retried() {
    require_root();
    let scratch = Scratch(common::scratch_dir("daemon-nosocket"));
    let socket = scratch.0.join("docker.sock");
    let ns = common::ok(Ns::new("daemonhost"));
    let d = Daemon::start_in(
        &ns,
        &format!("unix://{}", socket.display()),
        &scratch.0,
        &[],
    );

    // Missing: a clear error naming the path, retried with backoff.
    d.wait("three failed attempts", || {
        d.logged("cannot reach Docker").len() >= 3
    });
    let line = d.logged("cannot reach Docker").remove(0);
    assert_eq!(line["level"], "ERROR", "{line}");
    let error = line["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&socket.display().to_string()) && error.contains("no such socket"),
        "the error should name the missing socket: {line}"
    );
    assert!(line["retry_in_ms"].as_u64().is_some(), "{line}");
    assert_eq!(d.metric("symroute_docker_connected"), 0.0);
    assert!(d.metric("symroute_errors_total") >= 3.0);

    // Refusing: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind a unix socket"));
    let before = d.logged("cannot reach Docker").len();
    d.wait("a failed attempt on the refusing socket", || {
        d.logged("cannot reach Docker")[before..].iter().any(|l| {
            l["error"]
                .as_str()
                .unwrap_or("")
                .contains(&socket.display().to_string())
                && !l["error"].as_str().unwrap_or("").contains("no such socket")
        })
    });

    // Still running, still retrying; a dockerd appearing there is picked up.
    let lab = DockerLab::start();
    fs::remove_file(&socket).expect("remove the dead socket");
    std::os::unix::fs::symlink(lab.socket_path(), &socket).expect("link to the lab's socket");
    wait_for(
        Duration::from_secs(20),
        "connected once dockerd is there",
        || {
            d.metrics_text()
                .ok()
                .and_then(|t| api::sample(&t, "symroute_docker_connected"))
                == Some(1.0)
        },
    );
    assert_eq!(d.logged("connected to Docker").len(), 1);
    d.assert_no_problems(&["cannot reach Docker"]);

    // Unknown container names in the CLI: exit 2, "no such container".
    for command in ["status", "apply", "clean", "diagnose"] {
        let out = common::symroute([
            command,
            "--container",
            "nosuch",
            "--docker-host",
            &lab.docker_host(),
        ]);
        out.expect(2);
        assert!(
            out.stderr.contains("no such container"),
            "symroute {command} --container nosuch: {}",
            out.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

#[test]
fn sigterm_leaves_the_rules_and_clean_on_exit_removes_them() {
    require_root();
    let lab = DockerLab::start();
    two_networks(&lab);
    let mut d = Daemon::start(&lab, &[]);
    d.wait_connected();
    let ids: Vec<String> = ["c1", "c2"]
        .iter()
        .map(|n| run_multi(&lab, n, &[], "n1", &["n2"]))
        .collect();
    for n in ["c1", "c2"] {
        wait_converged(&lab, n);
    }
    let owned: Vec<_> = ids.iter().map(|id| tagged(&netns_of(&lab, id))).collect();

    let status_code = d.stop();
    assert!(
        status_code.success(),
        "daemon exit after SIGTERM: {status_code}"
    );
    assert_eq!(d.logged("shutting down").len(), 1);
    for (id, before) in ids.iter().zip(&owned) {
        assert_eq!(
            &tagged(&netns_of(&lab, id)),
            before,
            "{id}: rules must stay after SIGTERM"
        );
    }
    d.assert_no_problems(&[]);

    let mut d = Daemon::start(&lab, &["--clean-on-exit"]);
    d.wait_metric("symroute_containers_managed", 2.0);
    let status_code = d.stop();
    assert!(
        status_code.success(),
        "daemon exit after SIGTERM: {status_code}"
    );
    assert_eq!(d.logged("cleaned on exit").len(), 2);
    for id in &ids {
        let (rules, routes) = tagged(&netns_of(&lab, id));
        assert!(
            rules.is_empty() && routes.is_empty(),
            "{id}: protocol-115 objects left after --clean-on-exit: {rules:#?} {routes:#?}"
        );
    }
    d.assert_no_problems(&[]);
}

// ---------------------------------------------------------------------------
// Labels
// ---------------------------------------------------------------------------

#[test]
fn opt_out_label_and_require_label() {
    require_root();
    let lab = DockerLab::start();
    two_networks(&lab);
    let mut d = Daemon::start(&lab, &[]);
    d.wait_connected();
    let plain = run_multi(&lab, "plain", &[], "n1", &["n2"]);
    let optin = run_multi(
        &lab,
        "optin",
        &["--label", "symroute.enable=true"],
        "n1",
        &["n2"],
    );
    let optout = run_multi(
        &lab,
        "optout",
        &["--label", "symroute.enable=false"],
        "n1",
        &["n2"],
    );
    wait_converged(&lab, "plain");
    wait_converged(&lab, "optin");
    let skipped = d.wait_logged_for("not managed", "optout");
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap_or("")
            .contains("symroute.enable=false"),
        "{skipped}"
    );
    let empty = (Vec::new(), Vec::new());
    assert_eq!(
        tagged(&netns_of(&lab, &optout)),
        empty,
        "optout was touched"
    );
    assert_eq!(
        status(&lab, "optout").code,
        1,
        "optout stays as Docker made it"
    );
    assert_eq!(d.metric("symroute_containers_managed"), 2.0);
    d.stop();
    d.assert_no_problems(&[]);

    // --require-label: only optin.
    for name in ["plain", "optin"] {
        common::symroute([
            "clean",
            "--container",
            name,
            "--docker-host",
            &lab.docker_host(),
        ])
        .expect(0);
    }
    let d = Daemon::start(&lab, &["--require-label"]);
    wait_converged(&lab, "optin");
    for name in ["plain", "optout"] {
        let line = d.wait_logged_for("not managed", name);
        let reason = line["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("require-label") || reason.contains("symroute.enable=false"),
            "{line}"
        );
    }
    assert_eq!(
        tagged(&netns_of(&lab, &plain)),
        empty,
        "plain was touched under --require-label"
    );
    assert_eq!(
        tagged(&netns_of(&lab, &optout)),
        empty,
        "optout was touched"
    );
    assert_eq!(d.metric("symroute_containers_managed"), 1.0);
    assert_rules_for(&lab, &optin, &["n1", "n2"]);
    d.assert_no_problems(&[]);
}

// ---------------------------------------------------------------------------
// diagnose --docker
// ---------------------------------------------------------------------------

/// Run the binary inside the docker host's namespace (diagnosis reads the
/// host side's rp_filter there).
fn symroute_in(lab: &DockerLab, args: &[&str]) -> common::Out {
    let config = empty_config(lab.dir());
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args.iter().map(std::string::ToString::to_string));
    let out = lab
        .ns()
        .command(&*BIN)
        .args(&all)
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", *BIN));
    common::Out {
        args: all,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn diagnose_docker_explains_the_routed_web_and_passes_after_apply() {
    require_root();
    let lab = RoutedLab::build();
    let docker = &lab.docker;
    lab.run_web();
    let host = docker.docker_host();
    let before = symroute_in(docker, &["diagnose", "--docker", "--docker-host", &host]);
    before.expect(1);
    let text = &before.stdout;
    assert!(text.contains("container web ("), "{text}");
    assert!(
        text.contains(
            "default route (IPv4): back-tier, because network names sort alphabetically: \
             \"back-tier\" < \"front-tier\""
        ),
        "{text}"
    );
    for network in [routed::BACK_NETWORK, routed::FRONT_NETWORK] {
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{network} ")))
            .unwrap_or_else(|| panic!("no row for {network}:\n{text}"));
        assert!(row.contains("bridge"), "{row}");
        assert!(
            row.contains("1 (strict)"),
            "HOST RP_FILTER of {network}: {row}"
        );
    }
    assert!(text.contains("ASYMMETRIC"), "{text}");
    assert!(
        text.contains("fix: symroute apply --container web"),
        "{text}"
    );

    let json = symroute_in(
        docker,
        &["diagnose", "--docker", "--docker-host", &host, "--json"],
    );
    json.expect(1);
    let v = json.json();
    let all = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    assert_eq!(all.len(), 1, "{v}");
    let web = &all[0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["symmetric"], false);
    assert_eq!(
        web["default_route"]["choices"][0]["network"],
        routed::BACK_NETWORK,
        "{web}"
    );
    for n in web["networks"].as_array().expect("networks") {
        assert_eq!(n["host_rp_filter"], 1, "{n}");
    }

    symroute_in(
        docker,
        &["apply", "--container", "web", "--docker-host", &host],
    )
    .expect(0);
    let after = symroute_in(docker, &["diagnose", "--docker", "--docker-host", &host]);
    after.expect(0);
    assert!(!after.stdout.contains("ASYMMETRIC"), "{}", after.stdout);
    assert_connects(
        &lab.remote,
        lab.front_target(),
        routed::BANNER,
        "front-tier after apply",
    );
}
