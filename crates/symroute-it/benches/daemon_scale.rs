//! The daemon at scale, for docs/benchmarks.md (root: `cargo bench -p
//! symroute-it --bench daemon_scale`; `-- --count N`, default 1000).
//!
//! N real lab namespaces, each with eth0..eth2 (veth peers in one hub
//! namespace, addresses 10.k.x.y/16, main's default via eth0), and a fake
//! Docker Engine API ([`fake_engine`]) over a unix socket in a scratch
//! folder that lists N running containers, one per namespace, on three
//! networks. The release `symroute daemon --docker-host unix://…` runs in a
//! lab namespace of its own (its metrics listener there), started with the
//! soft RLIMIT_NOFILE systemd gives a service (1024), and:
//!
//! - converge: from spawning the daemon to the last namespace holding its
//!   three rules: by default when the daemon's
//!   `symroute_reconciles_total{outcome="changed"}` reaches N (a reconcile
//!   is counted once the kernel acknowledged its changes; scraped every
//!   5 ms, and only once the fake engine has answered every inspect, so that
//!   scrapes do not take the daemon's time while it works); with `--kernel-watch`, seen by the kernel's rule
//!   notifications in every namespace (a socket per namespace, subscribed
//!   before the daemon starts, RTM_NEWRULE tagged 115 counted), which makes
//!   every notification of the machine cost twice as much (the kernel walks
//!   all subscribed sockets); then every namespace is checked with rule and
//!   route dumps;
//! - a full resync (the periodic one, `--resync-interval`, `--interval S`, default 20 s):
//!   its duration from the daemon's `symroute_resync_duration_seconds`, and
//!   what the engine was asked meanwhile; two of them;
//! - between the two, `--idle` seconds (default 10) with no event and no
//!   resync: the growth of the daemon's utime+stime (/proc/PID/stat);
//! - VmRSS, VmHWM, open descriptors and its RLIMIT_NOFILE with all N managed.
//!
//! Options: `--count N`, `--interval S` (the daemon's resync interval),
//! `--idle S`, `--kernel-watch`, `--soft-nofile N` (the soft RLIMIT_NOFILE
//! the daemon starts with, default 1024); `SYMROUTE_BIN=PATH` runs another
//! build (one from before `symroute_resyncs_total` is followed through the
//! fake engine's requests instead).
//!
//! Figures are printed, not asserted. Every namespace is anonymous and gone
//! when the benchmark ends; the daemon is stopped by its pid.

use symroute_it::common;
#[path = "daemon_scale/fake_engine.rs"]
mod fake_engine;
#[path = "daemon_scale/rule_watch.rs"]
mod rule_watch;

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::docker::api;
use fake_engine::{Container, FakeEngine, NETWORKS};
use ipnet::IpNet;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::rule::{RuleAttribute, RuleMessage};
use netlink_sys::Socket;
use rule_watch::{subscribe, watch_rules};
use symroute_testkit::lab::{MAIN_TABLE, Ns};

/// symroute's protocol tag.
pub const TAG: u8 = 115;
/// systemd's default soft RLIMIT_NOFILE for services.
const SYSTEMD_SOFT_NOFILE: u64 = 1024;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} {v}: not a number"))
        })
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on our own process.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
        }
    }
}

/// Namespace `i`: eth0..eth2, veth peers `s{i}x{k}` in `hub`, addresses
/// 10.k.x.y/16, main's default via 10.0.0.1.
fn three_homed(i: usize, hub: &Ns) -> (Ns, Container) {
    let ns = common::ok(Ns::new(format!("scale{i}")));
    let mut macs: [String; NETWORKS] = Default::default();
    for (k, mac) in macs.iter_mut().enumerate() {
        let dev = format!("eth{k}");
        let peer = format!("s{i}x{k}");
        common::ok(ns.veth(&dev, hub, &peer));
        common::ok(hub.link_up(&peer));
        let addr = IpNet::new(fake_engine::address(i, k).into(), 16).expect("prefix");
        common::ok(ns.add_addr(&dev, addr));
        common::ok(ns.link_up(&dev));
        let m = common::ok(ns.link_mac(&dev));
        *mac = m
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
    }
    common::ok(ns.add_route(
        common::net("0.0.0.0/0"),
        Some(fake_engine::gateway(0).into()),
        Some("eth0"),
        MAIN_TABLE,
    ));
    let c = Container {
        index: i,
        sandbox_key: ns.path().display().to_string(),
        macs,
    };
    (ns, c)
}

/// symroute's rules and routes in a namespace (dumps).
fn tagged(ns: &Ns) -> (usize, usize) {
    ns.with_netlink(|nl| {
        let rules = nl
            .dump(RouteNetlinkMessage::GetRule(RuleMessage::default()))
            .expect("dump rules");
        let routes = nl
            .dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))
            .expect("dump routes");
        let r = rules
            .iter()
            .filter(|m| matches!(m, RouteNetlinkMessage::NewRule(r) if r.attributes.iter().any(|a|
                matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == TAG))))
            .count();
        let t = routes
            .iter()
            .filter(
                |m| matches!(m, RouteNetlinkMessage::NewRoute(r) if u8::from(r.header.protocol) == TAG),
            )
            .count();
        (r, t)
    })
}

/// The scratch folder (socket, config, daemon log), removed on every path.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The daemon, stopped by its pid (SIGTERM, then SIGKILL) when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling our own unreaped child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("the daemon ignored SIGTERM: killed");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "daemon log {}:\n{}",
                self.log.display(),
                common::docker::log_tail(&self.log, 30)
            );
        }
        self.stop();
    }
}

fn start_daemon(
    bin: &Path,
    host: &Ns,
    dir: &Path,
    docker_host: &str,
    interval: u64,
    soft_nofile: u64,
) -> (Daemon, SocketAddr) {
    let config = dir.join("symroute-empty.toml");
    fs::write(&config, "").expect("empty config");
    let port = host
        .run(|| TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
        .expect("enter the daemon's namespace")
        .expect("a free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = dir.join("daemon.log");
    let mut cmd = host.command(bin);
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
        .arg(addr.to_string())
        .arg("--resync-interval")
        .arg(format!("{interval}s"))
        .env_remove("DOCKER_HOST")
        .env_remove("SYMROUTE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("daemon log"));
    common::die_with_parent(&mut cmd);
    // SAFETY: runs in the forked child before exec; getrlimit and setrlimit
    // are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // Start it as systemd starts a service: soft limit 1024.
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 {
                lim.rlim_cur = soft_nofile.min(lim.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start symroute daemon");
    (Daemon { child, log }, addr)
}

fn metric(host: &Ns, addr: SocketAddr, name: &str) -> Option<f64> {
    api::scrape(host.netns(), addr)
        .ok()
        .and_then(|t| api::sample(&t, name))
}

/// Wait up to `timeout` for `f` to give Some, trying every `step`.
fn wait_every<T>(
    step: Duration,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(step);
    }
}

fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_every(Duration::from_millis(20), timeout, what, f)
}

/// Wait until the fake engine has answered `n` inspects (read in this
/// process: the daemon is not disturbed by scrapes while it works).
fn wait_inspects(engine: &FakeEngine, n: u64, timeout: Duration, what: &str) {
    wait_every(Duration::from_millis(2), timeout, what, || {
        (engine.stats.inspects.load(Ordering::SeqCst) >= n).then_some(())
    });
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn proc_line(pid: u32, file: &str, key: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len()..].trim_start_matches(':').trim().to_string())
        .unwrap_or_default()
}

fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

struct Resync {
    took: f64,
    inspects: u64,
    lists: u64,
    engine_span: f64,
    /// The daemon's utime+stime over the resync (it is idle before), ticks.
    cpu: u64,
}

/// Wait for the next completed resync after `count` (the daemon's
/// `symroute_resyncs_total`), and what it cost.
/// Which figures the daemon has: a build before `symroute_resyncs_total`
/// is followed through what the fake engine was asked (a resync is then
/// over when every container was inspected; its duration is the engine's
/// span, list to last inspect).
#[derive(Clone, Copy)]
struct Follow {
    by_metrics: bool,
    containers: u64,
}

fn next_resync(
    host: &Ns,
    addr: SocketAddr,
    engine: &FakeEngine,
    count: f64,
    timeout: Duration,
    follow: Follow,
    pid: u32,
) -> (f64, Resync) {
    let cpu0 = cpu_ticks(pid);
    let sum0 = metric(host, addr, "symroute_resync_duration_seconds_sum").unwrap_or(0.0);
    let s = &engine.stats;
    let (i0, l0) = (
        s.inspects.load(Ordering::SeqCst),
        s.lists.load(Ordering::SeqCst),
    );
    let n = if follow.by_metrics {
        // Every container inspected, then (a few applies later) its end.
        wait_inspects(engine, i0 + follow.containers, timeout, "the next resync");
        wait_every(
            Duration::from_millis(5),
            timeout,
            "the resync's end",
            || metric(host, addr, "symroute_resyncs_total").filter(|n| *n > count),
        )
    } else {
        wait_for(timeout, "the next resync", || {
            (s.lists.load(Ordering::SeqCst) > l0
                && s.inspects.load(Ordering::SeqCst) >= i0 + follow.containers)
                .then_some(count + 1.0)
        })
    };
    let sum1 = metric(host, addr, "symroute_resync_duration_seconds_sum").unwrap_or(0.0);
    let span = match (
        *s.last_list.lock().expect("stats"),
        *s.last_inspect.lock().expect("stats"),
    ) {
        (Some(l), Some(i)) if i > l => (i - l).as_secs_f64(),
        _ => 0.0,
    };
    (
        n,
        Resync {
            took: if follow.by_metrics {
                (sum1 - sum0) / (n - count)
            } else {
                span
            },
            inspects: s.inspects.load(Ordering::SeqCst) - i0,
            lists: s.lists.load(Ordering::SeqCst) - l0,
            engine_span: span,
            cpu: cpu_ticks(pid) - cpu0,
        },
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark creates network namespaces: run it as root"
    );
    raise_fd_limit();
    let count = arg("--count", 1000) as usize;
    let interval = arg("--interval", 20);
    let idle = arg("--idle", 10);
    let kernel_watch = std::env::args().any(|a| a == "--kernel-watch");
    let soft_nofile = arg("--soft-nofile", SYSTEMD_SOFT_NOFILE);
    let bin = std::env::var_os("SYMROUTE_BIN").map_or_else(
        || symroute_testkit::workspace_bin("symroute"),
        PathBuf::from,
    );
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "daemon at scale: {count} namespaces x 3 interfaces, {} ({version}), resync every {interval} s, load {}",
        bin.display(),
        load()
    );

    let t = Instant::now();
    let hub = common::ok(Ns::new("scale-hub"));
    let host = common::ok(Ns::new("scale-daemon"));
    let (nss, containers): (Vec<Ns>, Vec<Container>) =
        (0..count).map(|i| three_homed(i, &hub)).unzip();
    // With --kernel-watch, a socket per namespace subscribed to its rule
    // notifications. Off by default: the kernel walks every subscribed
    // netlink socket of the machine for each notification, so the
    // benchmark's own thousand sockets would double that cost for the daemon.
    let socks: Vec<Socket> = if kernel_watch {
        nss.iter().map(subscribe).collect()
    } else {
        Vec::new()
    };
    println!(
        "  lab: {count} namespaces in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let dir = Scratch(common::scratch_dir("daemon-scale"));
    let engine = FakeEngine::start(&dir.0, &containers);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = kernel_watch.then(|| watch_rules(socks, NETWORKS as i64, stop.clone()));

    let load_start = load();
    let spawned = Instant::now();
    let (mut daemon, addr) = start_daemon(
        &bin,
        &host,
        &dir.0,
        &engine.docker_host(),
        interval,
        soft_nofile,
    );
    let pid = daemon.pid();

    // Converge: every namespace's three rules, from the kernel's
    // notifications (--kernel-watch), else from the daemon's count of
    // changed reconciles (scraped every 10 ms); checked by dumps below.
    let conv_timeout = Duration::from_secs(60 + count as u64 / 10);
    let (last, overflows, how) = if let Some(watcher) = watcher {
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(conv_timeout);
                stop.store(true, Ordering::Relaxed);
            })
        };
        let (done, overflows) = watcher.join().expect("rule watcher");
        drop(stopper);
        let missing = done.iter().filter(|d| d.is_none()).count();
        assert_eq!(
            missing, 0,
            "{missing} of {count} namespaces never got their 3 rules within {conv_timeout:?}"
        );
        let last = done.iter().flatten().max().copied().expect("some");
        (last, overflows, "rule notifications")
    } else {
        let deadline = Instant::now() + conv_timeout;
        let changed = "symroute_reconciles_total{outcome=\"changed\"}";
        wait_inspects(
            &engine,
            count as u64,
            conv_timeout,
            "every container inspected",
        );
        loop {
            let now = Instant::now();
            if metric(&host, addr, changed).is_some_and(|n| n >= count as f64) {
                break (
                    now,
                    0,
                    "the daemon's changed reconciles (scraped every 5 ms once the engine answered every inspect)",
                );
            }
            assert!(now < deadline, "not converged within {conv_timeout:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let first_list = *engine.stats.last_list.lock().expect("stats");
    let converge = (last - spawned).as_secs_f64();
    let converge_cpu = cpu_ticks(pid);
    let from_list = first_list.map_or(0.0, |l| (last - l).as_secs_f64());
    // The daemon's metrics agree, and every namespace has its objects.
    let follow = Follow {
        by_metrics: metric(&host, addr, "symroute_resyncs_total").is_some(),
        containers: count as u64,
    };
    if !follow.by_metrics {
        println!(
            "  (no symroute_resyncs_total: a daemon from before it; resyncs followed through the engine's requests)"
        );
    }
    let resyncs = wait_for(Duration::from_secs(30), "the first resync's end", || {
        if follow.by_metrics {
            metric(&host, addr, "symroute_resyncs_total").filter(|n| *n >= 1.0)
        } else {
            (engine.stats.inspects.load(Ordering::SeqCst) >= count as u64).then_some(1.0)
        }
    });
    let changed = metric(
        &host,
        addr,
        "symroute_reconciles_total{outcome=\"changed\"}",
    )
    .unwrap_or(-1.0);
    let managed = metric(&host, addr, "symroute_containers_managed").unwrap_or(-1.0);
    let counts: Vec<(usize, usize)> = nss.iter().map(tagged).collect();
    let bad = counts.iter().filter(|(r, _)| *r != NETWORKS).count();
    let (rmin, rmax) = (
        counts.iter().map(|c| c.1).min().unwrap_or(0),
        counts.iter().map(|c| c.1).max().unwrap_or(0),
    );
    println!(
        "  converge: all {count} in {:.0} ms from spawning the daemon ({:.0} ms from its first list; {:.0} us/ns); managed {managed}, changed reconciles {changed}; dumps: {bad} namespaces without exactly 3 rules, {rmin}-{rmax} routes each; seen by {how}, {overflows} notification overflows; daemon CPU {converge_cpu} ticks since its start",
        converge * 1e3,
        from_list * 1e3,
        from_list * 1e6 / count as f64,
    );
    assert_eq!(bad, 0, "namespaces without their rules");

    // Resync 1, then idle, then resync 2.
    let timeout = Duration::from_secs(interval + 60);
    let (mut resyncs, r1) = next_resync(&host, addr, &engine, resyncs, timeout, follow, pid);
    // The idle window must end before the next resync is due (about one
    // interval after the last one asked for its list).
    for _ in 0..3 {
        let due = engine
            .stats
            .last_list
            .lock()
            .expect("stats")
            .map(|l| l + Duration::from_secs(interval));
        if due.is_some_and(|d| d > Instant::now() + Duration::from_millis(idle * 1000 + 500)) {
            break;
        }
        eprintln!("  (the next resync is due within the idle window: waiting for it first)");
        resyncs = next_resync(&host, addr, &engine, resyncs, timeout, follow, pid).0;
    }
    let (t0, q0) = (cpu_ticks(pid), engine.stats.requests());
    std::thread::sleep(Duration::from_secs(idle));
    let (t1, q1) = (cpu_ticks(pid), engine.stats.requests());
    let in_window = if follow.by_metrics {
        metric(&host, addr, "symroute_resyncs_total").unwrap_or(-1.0) - resyncs
    } else {
        -1.0
    };
    let (_, r2) = next_resync(&host, addr, &engine, resyncs, timeout, follow, pid);
    for (n, r) in [(1, &r1), (2, &r2)] {
        println!(
            "  resync {n}: {:.0} ms ({:.0} us/container; engine asked {} list + {} inspects over {:.0} ms); daemon CPU {} ticks",
            r.took * 1e3,
            r.took * 1e6 / count as f64,
            r.lists,
            r.inspects,
            r.engine_span * 1e3,
            r.cpu
        );
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    println!(
        "  idle {idle} s: utime+stime grew by {} ticks ({hz} Hz); {} engine requests and {in_window} resyncs in the window",
        t1 - t0,
        q1 - q0
    );
    let rss = proc_line(pid, "status", "VmRSS");
    let hwm = proc_line(pid, "status", "VmHWM");
    let threads = proc_line(pid, "status", "Threads");
    let limit: Vec<String> = proc_line(pid, "limits", "Max open files")
        .split_whitespace()
        .map(String::from)
        .collect();
    let limit = format!(
        "soft {}, hard {}",
        limit.first().map_or("?", String::as_str),
        limit.get(1).map_or("?", String::as_str)
    );
    println!(
        "  memory: VmRSS {rss}, VmHWM {hwm}; {} open fds (RLIMIT_NOFILE {limit}, started with soft {soft_nofile}); {threads} threads",
        fds(pid)
    );
    let errors = metric(&host, addr, "symroute_errors_total").unwrap_or(-1.0);
    let unknown = engine.stats.unknown.lock().expect("stats").clone();
    println!("  daemon errors_total {errors}; requests the fake engine did not know: {unknown:?}");
    println!(
        "  load average (1 min): {load_start} at the daemon's start, {} at the end",
        load()
    );
    daemon.stop();
    drop(engine);
    drop(nss);
}
