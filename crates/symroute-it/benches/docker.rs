//! Docker daemon benchmark for docs/benchmarks.md (run as root:
//! `cargo bench --bench docker`; several minutes).
//!
//! On a real dockerd (Debian's 20.10, in a lab namespace of the test harness,
//! tests/support/common/docker.rs), for every container started, from the engine's
//! `start` event to symroute's rules being in the container's namespace:
//!
//! - the `start` event's timestamp (`timeNano`) is read by this program from
//!   `docker events --format '{{json .}}'`;
//! - the moment the rules are in the kernel is seen from inside the
//!   container's namespace: a thread here watches dockerd's exec-root
//!   `netns` folder (inotify), opens each new sandbox as soon as it is
//!   mounted (long before the container's process starts), subscribes to the
//!   kernel's rule notifications there (RTNLGRP_IPV4_RULE) and dumps the
//!   rules at each one; the time is taken when the notification that
//!   completes the set (one rule per network) is read. Both are
//!   CLOCK_REALTIME.
//!
//! Each container is created on one network, connected to a second one
//! while created (both exist when it starts), then started; one at a time.
//! Phase 1: `symroute daemon` (protocol 115) running next to dockerd, then its
//! RSS with every container managed and its CPU time over 10 s idle. Phase 2:
//! the usual workaround, benches/docker/baseline-events-nsenter.sh (a shell
//! loop over `docker events` running nsenter + ip per container; protocol
//! 116), on the same dockerd after phase 1's containers are removed.
//!
//! Options: `--starts N` (symroute, default 200), `--baseline-starts N`
//! (default 100). Figures are printed, not asserted.

use symroute_it::common;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::docker::{DOCKER, DockerLab, api, log_tail};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::rule::{RuleAttribute, RuleMessage};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use serde_json::Value;
use symroute_linux::netns::Netns;

/// symroute's protocol tag, and the baseline's.
const SYMROUTE_TAG: u8 = 115;
const BASELINE_TAG: u8 = 116;
/// linux/rtnetlink.h
const RTNLGRP_IPV4_RULE: u32 = 8;
const NET_A: &str = "bench-a";
const NET_B: &str = "bench-b";
/// Give up on one container after this long.
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(20);
const BASELINE_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/docker/baseline-events-nsenter.sh"
);

fn realtime_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

// ---------------------------------------------------------------------------
// Engine API (HTTP/1.0 over the unix socket)
// ---------------------------------------------------------------------------

/// Create a sleeping container on NET_A, connected to NET_B: its id.
fn create_two(socket: &Path, image: &str, name: &str) -> String {
    api::create_two(socket, image, name, NET_A, NET_B)
}

// ---------------------------------------------------------------------------
// Start events, read by this program
// ---------------------------------------------------------------------------

/// `docker events` (Debian's CLI) of container starts: id -> timeNano.
struct StartEvents {
    child: Child,
    seen: Arc<(Mutex<HashMap<String, i64>>, Condvar)>,
}

impl StartEvents {
    fn start(lab: &DockerLab) -> StartEvents {
        let mut child = Command::new(DOCKER)
            .args([
                "events",
                "--format",
                "{{json .}}",
                "--filter",
                "type=container",
                "--filter",
                "event=start",
            ])
            .env("DOCKER_HOST", lab.docker_host())
            .env("DOCKER_CONFIG", lab.dir().join("cli"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker events");
        let out = child.stdout.take().expect("stdout");
        let seen: Arc<(Mutex<HashMap<String, i64>>, Condvar)> = Arc::default();
        let shared = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let (Some(id), Some(t)) = (v["id"].as_str(), v["timeNano"].as_i64()) else {
                    continue;
                };
                let (map, cv) = &*shared;
                map.lock().expect("events map").insert(id.to_string(), t);
                cv.notify_all();
            }
        });
        StartEvents { child, seen }
    }

    fn wait(&self, id: &str, timeout: Duration) -> Option<i64> {
        let (map, cv) = &*self.seen;
        let deadline = Instant::now() + timeout;
        let mut m = map.lock().expect("events map");
        loop {
            if let Some(t) = m.get(id) {
                return Some(*t);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            m = cv.wait_timeout(m, left).expect("events map").0;
        }
    }
}

impl Drop for StartEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Rules seen in the kernel, from inside each new sandbox
// ---------------------------------------------------------------------------

/// What the watcher saw for one new sandbox.
#[derive(Debug)]
struct Seen {
    /// The file's name in the netns folder.
    sandbox: String,
    /// CLOCK_REALTIME when the last expected rule was seen.
    at_ns: i64,
    /// The rules were already complete at the first look (so `at_ns` is late
    /// by up to the time it took to open the namespace).
    at_first_look: bool,
}

/// Watches dockerd's exec-root netns folder; for each new sandbox, waits for
/// `want` rules of protocol `tag` (set per measurement).
struct RuleWatcher {
    stop: Arc<AtomicBool>,
    config: Arc<Mutex<(u8, usize)>>,
    rx: mpsc::Receiver<Result<Seen, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn rule_count(dump: &[RouteNetlinkMessage], tag: u8) -> usize {
    dump.iter()
        .filter(|m| {
            matches!(m, RouteNetlinkMessage::NewRule(r) if r.attributes.iter().any(|a|
                matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == tag)))
        })
        .count()
}

fn wait_readable(fd: i32, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) > 0 }
}

/// Follow one sandbox until `want` rules tagged `tag` are there.
fn follow(path: &Path, tag: u8, want: usize, stop: &AtomicBool) -> Result<Seen, String> {
    let sandbox = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The file exists before dockerd bind-mounts the namespace on it.
    let deadline = Instant::now() + CONTAINER_TIMEOUT;
    let netns = loop {
        match Netns::open(path) {
            Ok(n) => break n,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(50)),
            Err(e) => return Err(format!("sandbox {sandbox}: {e}")),
        }
    };
    let notify = netns
        .run(|| -> io::Result<Socket> {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind_auto()?;
            s.add_membership(RTNLGRP_IPV4_RULE)?;
            s.set_non_blocking(true)?;
            Ok(s)
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("subscribe in {sandbox}: {e}"))?;
    let mut nl = netns.socket().map_err(|e| e.to_string())?;
    let mut dump = || {
        nl.dump(RouteNetlinkMessage::GetRule(RuleMessage::default()))
            .map(|d| rule_count(&d, tag))
            .map_err(|e| format!("dump rules of {sandbox}: {e}"))
    };
    let first = realtime_ns();
    if dump()? >= want {
        return Ok(Seen {
            sandbox,
            at_ns: first,
            at_first_look: true,
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if !wait_readable(notify.as_raw_fd(), 5) {
            continue;
        }
        let at_ns = realtime_ns();
        while notify.recv(&mut &mut buf[..], 0).is_ok() {}
        if dump()? >= want {
            return Ok(Seen {
                sandbox,
                at_ns,
                at_first_look: false,
            });
        }
    }
    Err(format!(
        "sandbox {sandbox}: {want} rules of protocol {tag} never appeared"
    ))
}

impl RuleWatcher {
    fn start(dir: PathBuf) -> RuleWatcher {
        // SAFETY: plain system calls on a path we own.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        assert!(fd >= 0, "inotify_init1: {}", io::Error::last_os_error());
        // SAFETY: the kernel just gave us this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cpath = CString::new(dir.as_os_str().as_bytes()).expect("path");
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd =
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), cpath.as_ptr(), libc::IN_CREATE) };
        assert!(
            wd >= 0,
            "inotify on {}: {}",
            dir.display(),
            io::Error::last_os_error()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(Mutex::new((SYMROUTE_TAG, 2)));
        let (tx, rx) = mpsc::channel();
        let (stop2, config2) = (stop.clone(), config.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stop2.load(Ordering::Relaxed) {
                if !wait_readable(fd.as_raw_fd(), 50) {
                    continue;
                }
                // SAFETY: reading into our buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    continue;
                }
                let mut names = Vec::new();
                let mut off = 0usize;
                let n = n as usize;
                while off + 16 <= n {
                    let len =
                        u32::from_ne_bytes(buf[off + 12..off + 16].try_into().expect("4")) as usize;
                    let raw = &buf[off + 16..off + 16 + len];
                    let name = raw.split(|b| *b == 0).next().unwrap_or_default();
                    names.push(String::from_utf8_lossy(name).into_owned());
                    off += 16 + len;
                }
                for name in names {
                    if name == "default" || name.is_empty() {
                        continue;
                    }
                    let (tag, want) = *config2.lock().expect("config");
                    let _ = tx.send(follow(&dir.join(&name), tag, want, &stop2));
                }
            }
        });
        RuleWatcher {
            stop,
            config,
            rx,
            thread: Some(thread),
        }
    }

    fn expect(&self, tag: u8, want: usize) {
        *self.config.lock().expect("config") = (tag, want);
    }

    fn next(&self) -> Result<Seen, String> {
        self.rx
            .recv_timeout(CONTAINER_TIMEOUT + Duration::from_secs(5))
            .map_err(|e| format!("rule watcher: {e}"))?
    }
}

impl Drop for RuleWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The two contenders
// ---------------------------------------------------------------------------

fn set_pdeathsig(cmd: &mut Command, group: bool) {
    // SAFETY: runs in the forked child before exec; prctl and setpgid are
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if group && libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A process we started, ended by its pid (or its own process group) on
/// drop: SIGTERM, then SIGKILL after 10 s.
struct Proc {
    child: Child,
    group: bool,
    what: &'static str,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own unreaped child (or its own group).
        unsafe {
            if self.group {
                libc::kill(-pid, libc::SIGTERM);
            } else {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            eprintln!("{} ignored SIGTERM: killed", self.what);
            // SAFETY: as above.
            unsafe {
                if self.group {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.group {
            // The rest of the group (the pipeline's docker events).
            // SAFETY: as above; ESRCH when it is already empty.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{}: end of {}:\n{}",
                self.what,
                self.log.display(),
                log_tail(&self.log, 30)
            );
        }
        self.stop();
    }
}

fn metrics(netns: &Netns, addr: SocketAddr) -> Option<String> {
    api::scrape(netns, addr).ok()
}

fn wait_metric(netns: &Netns, addr: SocketAddr, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if metrics(netns, addr).and_then(|t| api::sample(&t, name)) == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metric {name} never reached {value}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_daemon(lab: &DockerLab) -> (Proc, SocketAddr) {
    let config = lab.dir().join("symroute-empty.toml");
    fs::write(&config, "").expect("empty config");
    let port = lab
        .ns()
        .run(|| TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
        .expect("enter ns")
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = lab.dir().join("symroute-daemon.log");
    let mut cmd = lab.ns().command(&*common::BIN);
    cmd.arg("--config")
        .arg(&config)
        .args([
            "daemon",
            "--docker-host",
            &lab.docker_host(),
            "--log-format",
            "json",
        ])
        .arg("--metrics-listen")
        .arg(addr.to_string())
        .env_remove("DOCKER_HOST")
        .env_remove("SYMROUTE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("daemon log"));
    set_pdeathsig(&mut cmd, false);
    let child = cmd.spawn().expect("start symroute daemon");
    (
        Proc {
            child,
            group: false,
            what: "symroute daemon",
            log,
        },
        addr,
    )
}

fn start_baseline(lab: &DockerLab) -> Proc {
    let log = lab.dir().join("baseline.log");
    let mut cmd = lab.ns().command("sh");
    cmd.arg(BASELINE_SCRIPT)
        .env("DOCKER_HOST", lab.docker_host())
        .env("DOCKER_CONFIG", lab.dir().join("cli"))
        .env("DOCKER", DOCKER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("baseline log"));
    set_pdeathsig(&mut cmd, true);
    let child = cmd.spawn().expect("start the baseline script");
    Proc {
        child,
        group: true,
        what: "baseline script",
        log,
    }
}

// ---------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------

struct Run {
    /// Event-to-rules latencies, ns.
    latencies: Vec<i64>,
    /// The start events' timestamps (CLOCK_REALTIME, ns), in the same order.
    events_at: Vec<i64>,
    /// Measurements where the rules were complete at the watcher's first look.
    first_look: usize,
    ids: Vec<String>,
}

/// Start `n` containers one at a time (plus one warm-up, not counted) and
/// measure each from its start event to `tag`'s two rules in its namespace.
fn measure(
    lab: &DockerLab,
    events: &StartEvents,
    watcher: &RuleWatcher,
    prefix: &str,
    tag: u8,
    n: usize,
) -> Run {
    let socket = lab.socket_path();
    let image = lab.image();
    watcher.expect(tag, 2);
    let mut run = Run {
        latencies: Vec::new(),
        events_at: Vec::new(),
        first_look: 0,
        ids: Vec::new(),
    };
    for i in 0..=n {
        let name = format!("{prefix}{i}");
        let id = create_two(&socket, image, &name);
        api::start(&socket, &id);
        run.ids.push(id.clone());
        let seen = watcher.next().unwrap_or_else(|e| panic!("{name}: {e}"));
        let key = api::sandbox_key(&socket, &id);
        assert!(
            key.ends_with(&format!("/{}", seen.sandbox)),
            "{name}: the watcher followed sandbox {} but the container's is {key}",
            seen.sandbox
        );
        let t0 = events
            .wait(&id, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{name}: no start event"));
        if i == 0 {
            continue; // warm-up
        }
        run.latencies.push(seen.at_ns - t0);
        run.events_at.push(t0);
        run.first_look += usize::from(seen.at_first_look);
        if i % 50 == 0 {
            eprintln!("  {prefix}: {i}/{n}");
        }
    }
    run
}

fn pct(sorted: &[i64], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e6
}

fn summary(name: &str, run: &Run) -> [f64; 5] {
    let mut v = run.latencies.clone();
    v.sort_unstable();
    let s = [
        pct(&v, 50.0),
        pct(&v, 90.0),
        pct(&v, 99.0),
        pct(&v, 100.0),
        pct(&v, 0.0),
    ];
    println!(
        "{name:<10} n={:<4} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  (min {:.2} ms; complete at first look: {})",
        v.len(),
        s[0],
        s[1],
        s[2],
        s[3],
        s[4],
        run.first_look
    );
    s
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn status_field(pid: u32, key: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len() + 1..].trim().to_string())
        .unwrap_or_default()
}

/// The machine's 1-minute load average (the machine may be shared).
fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} {v}: not a number"))
        })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the Docker benchmark needs root (it runs dockerd in a lab namespace)"
    );
    let starts = arg("--starts", 200);
    let baseline_starts = arg("--baseline-starts", 100);
    let t_all = Instant::now();
    let lab = DockerLab::start();
    let image = lab.image();
    let socket = lab.socket_path();
    for (net, subnet, gw) in [
        (NET_A, "172.26.0.0/16", "172.26.0.1"),
        (NET_B, "172.27.0.0/16", "172.27.0.1"),
    ] {
        lab.docker_ok([
            "network",
            "create",
            "--subnet",
            subnet,
            "--gateway",
            gw,
            net,
        ]);
    }
    // One sandbox so dockerd creates its netns folder, then watch it.
    let probe = create_two(&socket, image, "probe");
    api::start(&socket, &probe);
    api::remove_all(&socket, &[probe]);
    let events = StartEvents::start(&lab);
    let watcher = RuleWatcher::start(lab.dir().join("exec/netns"));
    println!(
        "lab ready in {:.1} s; dockerd {}; {} + {} starts; load average {}",
        t_all.elapsed().as_secs_f64(),
        lab.docker_ok([
            "version",
            "--format",
            "{{.Server.Version}} (API {{.Server.APIVersion}})"
        ]),
        starts,
        baseline_starts,
        load()
    );

    // Phase 1: symroute daemon.
    let (mut daemon, addr) = start_daemon(&lab);
    let daemon_started = Instant::now();
    let daemon_started_ns = realtime_ns();
    let netns = Netns::open(lab.ns().path()).expect("lab ns");
    wait_metric(&netns, addr, "symroute_docker_connected", 1.0);
    let t = Instant::now();
    let sym = measure(&lab, &events, &watcher, "sym", SYMROUTE_TAG, starts);
    println!(
        "symroute phase: {} starts in {:.1} s (load average now {})",
        starts,
        t.elapsed().as_secs_f64(),
        load()
    );
    wait_metric(
        &netns,
        addr,
        "symroute_containers_managed",
        sym.ids.len() as f64,
    );
    let pid = daemon.pid();
    let rss = status_field(pid, "VmRSS");
    let hwm = status_field(pid, "VmHWM");
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, std::iter::Iterator::count);
    // Idle: a 10 s window clear of the daemon's 60 s resync.
    let since = daemon_started.elapsed().as_secs_f64();
    let next_tick = 60.0 * ((since / 60.0).floor() + 1.0);
    if next_tick - since < 12.0 {
        std::thread::sleep(Duration::from_secs_f64(next_tick - since + 2.0));
    }
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let c1 = cpu_ticks(pid);
    let text = metrics(&netns, addr).unwrap_or_default();
    let own = api::sample(&text, "symroute_event_to_converged_seconds_sum").unwrap_or(0.0)
        / api::sample(&text, "symroute_event_to_converged_seconds_count").unwrap_or(1.0);
    let errors = api::sample(&text, "symroute_errors_total").unwrap_or(-1.0);
    daemon.stop();
    let t = Instant::now();
    api::remove_all(&socket, &sym.ids);
    println!(
        "removed {} containers in {:.1} s",
        sym.ids.len(),
        t.elapsed().as_secs_f64()
    );

    // Phase 2: the baseline script.
    let mut baseline = start_baseline(&lab);
    // Its `docker events` subscribes a moment after it starts.
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    let base = measure(
        &lab,
        &events,
        &watcher,
        "base",
        BASELINE_TAG,
        baseline_starts,
    );
    println!(
        "baseline phase: {} starts in {:.1} s (load average now {})",
        baseline_starts,
        t.elapsed().as_secs_f64(),
        load()
    );
    baseline.stop();
    api::remove_all(&socket, &base.ids);

    println!();
    println!(
        "event-to-rules latency (start event's timeNano -> both rules in the container's namespace):"
    );
    let s = summary("symroute", &sym);
    let b = summary("baseline", &base);
    println!(
        "p50 ratio baseline/symroute: {:.0}x   (p99: {:.0}x)",
        b[0] / s[0],
        b[2] / s[2]
    );
    println!("symroute's own histogram: mean {:.2} ms", own * 1e3);
    // Where the slowest starts fell: the daemon resyncs every 60 s from its
    // start, and an event arriving meanwhile waits for that resync.
    let mut worst: Vec<(i64, i64)> = sym
        .latencies
        .iter()
        .copied()
        .zip(sym.events_at.iter().copied())
        .collect();
    worst.sort_unstable_by_key(|w| std::cmp::Reverse(w.0));
    for (lat, at) in worst.iter().take(3) {
        println!(
            "  slow: {:.2} ms, event {:.2} s after the daemon started",
            *lat as f64 / 1e6,
            (*at - daemon_started_ns) as f64 / 1e9
        );
    }
    println!(
        "daemon with {} managed containers: VmRSS {rss}, VmHWM {hwm}, {fds} fds",
        sym.ids.len()
    );
    println!(
        "daemon idle 10 s with {} managed: utime+stime grew by {} ticks ({} Hz)",
        sym.ids.len(),
        c1 - c0,
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
    );
    println!("daemon errors_total: {errors}");
    println!("total {:.1} s", t_all.elapsed().as_secs_f64());
}
