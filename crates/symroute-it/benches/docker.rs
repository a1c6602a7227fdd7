//! Container engine benchmark of `symroute daemon` for docs/benchmarks.md (run as root:
//! `cargo bench -p symroute-it --bench docker -- --engine docker20|docker28|podman43|podman58`;
//! several minutes).
//!
//! On a real engine in a lab namespace (Debian's dockerd 20.10 as the Docker suites run
//! it, or Docker 28 / Podman 4.3 / Podman 5.8 as tests/support/common/engines.rs runs
//! them; [`lab`]), for every container started, from the engine's `start` event to
//! symroute's two rules being in the container's namespace:
//!
//! - the `start` event's timestamp (`timeNano`) is read by this program from the Engine
//!   API's `/events` stream ([`events`]);
//! - the moment the rules are in the kernel is seen from inside the container's namespace
//!   ([`watch`]): inotify on the engine's netns folder, then the kernel's rule
//!   notifications in each new namespace. Both are CLOCK_REALTIME.
//!
//! Each container is created on one network, connected to a second one while created
//! (both exist when it starts), then started; one at a time. Phases, on one engine:
//!
//! 1. "no resync": `symroute daemon` (protocol 115) with `--resync-interval 1h` (its one
//!    resync at connect happens before the first start), `--starts` starts; then its RSS
//!    with every container managed and its CPU time over 10 s idle.
//! 2. "resync running": those containers stay; a new daemon with a very short
//!    `--resync-interval` (`--resync-interval`, default 10ms: the next resync begins at
//!    most that long after the previous one ended, and one of 200 containers takes far
//!    longer, so one runs nearly all the time), `--resync-starts` starts. Which starts
//!    overlapped a running resync is read from the daemon's log (each resync's start and
//!    end) and printed.
//! 3. "baseline": the usual workaround, benches/docker/baseline-events-nsenter.sh (a shell
//!    loop over `docker events` running nsenter + ip per container; protocol 116; the
//!    docker CLI pointed at the engine's socket, Podman's too), after the daemon's
//!    containers are removed, `--baseline-starts` starts.
//!
//! Figures are printed, not asserted.

use symroute_it::common;
use symroute_it::common::engines;

#[path = "docker/events.rs"]
mod events;
#[path = "docker/lab.rs"]
mod lab;
#[path = "docker/procs.rs"]
mod procs;
#[path = "docker/watch.rs"]
mod watch;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use symroute_linux::netns::Netns;

use common::docker::api;
use events::StartEvents;
use lab::{BenchLab, Which};
use procs::{ResyncSpan, cpu_ticks, load, metrics, status_field, wait_metric};
use watch::RuleWatcher;

/// symroute's protocol tag, and the baseline's.
const SYMROUTE_TAG: u8 = 115;
const BASELINE_TAG: u8 = 116;
const NET_A: &str = "bench-a";
const NET_B: &str = "bench-b";

fn realtime_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

// ---------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Run {
    /// Event-to-rules latencies, ns.
    latencies: Vec<i64>,
    /// The start events' timestamps (CLOCK_REALTIME, ns), in the same order.
    events_at: Vec<i64>,
    /// Measurements where the rules were complete at the watcher's first look.
    first_look: usize,
    /// Every container started, the warm-up first.
    ids: Vec<String>,
    /// The measured ones (same order as `latencies`).
    measured: Vec<String>,
    /// When this program itself read each one's start event (its own subscription).
    read_at: Vec<i64>,
}

impl Run {
    /// Whether start `i` (event to rules) overlapped one of `spans`.
    fn overlapped(&self, i: usize, spans: &[ResyncSpan]) -> bool {
        let (from, to) = (self.events_at[i], self.events_at[i] + self.latencies[i]);
        spans.iter().any(|s| s.start_ns <= to && s.end_ns >= from)
    }
}

/// Start `n` containers one at a time (plus one warm-up, not counted) and measure each
/// from its start event to `tag`'s two rules in its namespace.
fn measure(
    lab: &BenchLab,
    events: &StartEvents,
    watcher: &RuleWatcher,
    prefix: &str,
    tag: u8,
    n: usize,
) -> Run {
    let socket = lab.socket();
    watcher.expect(tag, 2);
    let mut run = Run::default();
    for i in 0..=n {
        let name = format!("{prefix}{i}");
        let id = lab.create_two(&name, NET_A, NET_B);
        api::start(&socket, &id);
        run.ids.push(id.clone());
        let seen = watcher.next().unwrap_or_else(|e| panic!("{name}: {e}"));
        let key = api::sandbox_key(&socket, &id);
        assert!(
            key.ends_with(&format!("/{}", seen.sandbox)),
            "{name}: the watcher followed namespace {} but the container's is {key}",
            seen.sandbox
        );
        let t0 = events
            .wait(&id, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{name}: no start event"));
        if i == 0 {
            continue; // warm-up
        }
        run.latencies.push(seen.at_ns - t0);
        run.read_at.push(events.read_at(&id).unwrap_or(t0));
        run.measured.push(id);
        run.events_at.push(t0);
        run.first_look += usize::from(seen.at_first_look);
        if i % 50 == 0 {
            eprintln!("  {prefix}: {i}/{n} (load average {})", load());
        }
    }
    run
}

fn pct(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
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
        "{name:<16} n={:<4} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  (min {:.2} ms; complete at first look: {})",
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

/// How the latency of `run` splits at the moment each start event reached the daemon
/// (`received`, from its log): the engine's delivery, then the daemon's own part. A
/// negative own part: a resync converged the container before its event arrived.
fn split(name: &str, run: &Run, received: &HashMap<String, i64>) {
    let mut delivery = Vec::new();
    let mut own = Vec::new();
    let mut early = 0;
    for (i, id) in run.measured.iter().enumerate() {
        let Some(r) = received.get(id) else { continue };
        let t0 = run.events_at[i];
        delivery.push(r - t0);
        let o = t0 + run.latencies[i] - r;
        if o < 0 {
            early += 1;
        } else {
            own.push(o);
        }
    }
    delivery.sort_unstable();
    own.sort_unstable();
    let mut here: Vec<i64> = (0..run.read_at.len())
        .map(|i| run.read_at[i] - run.events_at[i])
        .collect();
    here.sort_unstable();
    println!(
        "  {name}: event -> the benchmark's own /events subscription has it: p50 {:.2} / p99 {:.2} / max {:.2} ms",
        pct(&here, 50.0),
        pct(&here, 99.0),
        pct(&here, 100.0),
    );
    println!(
        "  {name}: event -> the daemon has it: p50 {:.2} / p99 {:.2} / max {:.2} ms; then -> both rules: p50 {:.2} / p99 {:.2} / max {:.2} ms (n={}; {early} converged before their event arrived: by a hint or a resync)",
        pct(&delivery, 50.0),
        pct(&delivery, 99.0),
        pct(&delivery, 100.0),
        pct(&own, 50.0),
        pct(&own, 99.0),
        pct(&own, 100.0),
        own.len(),
    );
}

/// The three slowest starts of `run`, when each came and whether a resync ran meanwhile
/// (`about`: what the daemon logged about the slowest).
fn slowest(
    run: &Run,
    spans: &[ResyncSpan],
    since_ns: i64,
    received: &HashMap<String, i64>,
    about: &[String],
) {
    let mut order: Vec<usize> = (0..run.latencies.len()).collect();
    order.sort_unstable_by_key(|i| std::cmp::Reverse(run.latencies[*i]));
    for i in order.into_iter().take(3) {
        let t0 = run.events_at[i];
        let daemon = received
            .get(&run.measured[i])
            .map_or(f64::NAN, |r| (r - t0) as f64 / 1e6);
        println!(
            "  slow: {:.2} ms, event {:.2} s after the daemon started; read {:.2} ms after its timestamp by the daemon, {:.2} ms by the benchmark{}",
            run.latencies[i] as f64 / 1e6,
            (t0 - since_ns) as f64 / 1e9,
            daemon,
            (run.read_at[i] - t0) as f64 / 1e6,
            if run.overlapped(i, spans) {
                ", during a resync"
            } else {
                ""
            }
        );
    }
    for l in about {
        println!("    {l}");
    }
}

/// The id of `run`'s slowest start.
fn slowest_id(run: &Run) -> &str {
    (0..run.latencies.len())
        .max_by_key(|i| run.latencies[*i])
        .map_or("", |i| run.measured[i].as_str())
}

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: usize) -> usize {
    arg_str(name).map_or(default, |v| {
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
        "the Docker benchmark needs root (it runs the engine in a lab namespace)"
    );
    let engine = arg_str("--engine").unwrap_or_else(|| "docker20".into());
    let which = Which::parse(&engine).unwrap_or_else(|| {
        panic!("--engine {engine}: expected docker20, docker28, podman43 or podman58")
    });
    let starts = arg("--starts", 200);
    let resync_starts = arg("--resync-starts", 100);
    let baseline_starts = arg("--baseline-starts", 100);
    let interval = arg_str("--resync-interval").unwrap_or_else(|| "10ms".into());
    let t_all = Instant::now();
    let load_start = load();
    let lab = BenchLab::start(which);
    let socket = lab.socket();
    lab.network_create(NET_A, "172.26.0.0/16", "172.26.0.1");
    lab.network_create(NET_B, "172.27.0.0/16", "172.27.0.1");
    // One container so the engine creates its netns folder, then watch it.
    let probe = lab.create_two("probe", NET_A, NET_B);
    api::start(&socket, &probe);
    api::remove_all(&socket, &[probe]);
    let events = StartEvents::start(&socket);
    let (watch_dir, open_dir) = lab.netns_dirs();
    let watcher = RuleWatcher::start(watch_dir, open_dir, SYMROUTE_TAG);
    println!(
        "engine {engine}: {}; lab ready in {:.1} s; {starts} + {resync_starts} + {baseline_starts} starts; load average {load_start} at the start",
        lab.version(),
        t_all.elapsed().as_secs_f64(),
    );
    let netns = Netns::open(lab.ns().path()).expect("lab ns");

    // Phase 1: no resync.
    let (mut daemon, addr) = procs::start_daemon(&lab, "symroute-daemon-quiet", "1h");
    let quiet_started_ns = realtime_ns();
    wait_metric(&netns, addr, "symroute_docker_connected", 1.0);
    let t = Instant::now();
    let quiet = measure(&lab, &events, &watcher, "sym", SYMROUTE_TAG, starts);
    println!(
        "phase no resync: {starts} starts in {:.1} s (load average now {})",
        t.elapsed().as_secs_f64(),
        load()
    );
    wait_metric(
        &netns,
        addr,
        "symroute_containers_managed",
        quiet.ids.len() as f64,
    );
    let pid = daemon.pid();
    let rss = status_field(pid, "VmRSS");
    let hwm = status_field(pid, "VmHWM");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    // On Podman the last start's events reach the daemon up to 250 ms after its
    // rules are in (a hint converged it): let them arrive before the idle window.
    std::thread::sleep(Duration::from_secs(1));
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let c1 = cpu_ticks(pid);
    let text = metrics(&netns, addr).unwrap_or_default();
    let own = api::sample(&text, "symroute_event_to_converged_seconds_sum").unwrap_or(0.0)
        / api::sample(&text, "symroute_event_to_converged_seconds_count").unwrap_or(1.0);
    let errors_quiet = api::sample(&text, "symroute_errors_total").unwrap_or(-1.0);
    daemon.stop();
    let quiet_spans = procs::resyncs(&daemon);
    let quiet_received = procs::received(&daemon);
    let quiet_log = procs::keep_log(&daemon, &engine);
    let quiet_about = procs::lines_about(&daemon, slowest_id(&quiet));

    // Phase 2: the same containers managed by a daemon that resyncs all the time.
    let (mut daemon, addr) = procs::start_daemon(&lab, "symroute-daemon-resync", &interval);
    let busy_started_ns = realtime_ns();
    wait_metric(
        &netns,
        addr,
        "symroute_containers_managed",
        quiet.ids.len() as f64,
    );
    let t = Instant::now();
    let busy = measure(&lab, &events, &watcher, "busy", SYMROUTE_TAG, resync_starts);
    println!(
        "phase resync running: {resync_starts} starts in {:.1} s (load average now {})",
        t.elapsed().as_secs_f64(),
        load()
    );
    let text = metrics(&netns, addr).unwrap_or_default();
    let errors_busy = api::sample(&text, "symroute_errors_total").unwrap_or(-1.0);
    daemon.stop();
    let busy_spans = procs::resyncs(&daemon);
    let busy_received = procs::received(&daemon);
    let busy_log = procs::keep_log(&daemon, &engine);
    let busy_about = procs::lines_about(&daemon, slowest_id(&busy));
    let t = Instant::now();
    let mut all = quiet.ids.clone();
    all.extend(busy.ids.iter().cloned());
    api::remove_all(&socket, &all);
    println!(
        "removed {} containers in {:.1} s",
        all.len(),
        t.elapsed().as_secs_f64()
    );

    // Phase 3: the baseline script.
    let mut baseline = procs::start_baseline(&lab);
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
        "baseline phase: {baseline_starts} starts in {:.1} s (load average now {})",
        t.elapsed().as_secs_f64(),
        load()
    );
    baseline.stop();
    api::remove_all(&socket, &base.ids);

    println!();
    println!(
        "event-to-rules latency on {engine} (start event's timeNano -> both rules in the container's namespace):"
    );
    let q = summary("no resync", &quiet);
    let b = summary("resync running", &busy);
    let base_s = summary("baseline", &base);
    println!(
        "p50 ratio baseline/symroute: {:.0}x no resync, {:.0}x resync running",
        base_s[0] / q[0],
        base_s[0] / b[0]
    );
    split("no resync", &quiet, &quiet_received);
    split("resync running", &busy, &busy_received);
    let overlapped = (0..busy.latencies.len())
        .filter(|i| busy.overlapped(*i, &busy_spans))
        .count();
    let mut took: Vec<i64> = busy_spans
        .iter()
        .filter(|s| s.running >= quiet.ids.len() as u64)
        .map(|s| s.end_ns - s.start_ns)
        .collect();
    took.sort_unstable();
    println!(
        "resync running phase: --resync-interval {interval}, {} resyncs of {}-{} containers, each {:.0} ms p50 ({:.0}-{:.0} ms); {overlapped} of {} starts overlapped one",
        busy_spans.len(),
        busy_spans.iter().map(|s| s.running).min().unwrap_or(0),
        busy_spans.iter().map(|s| s.running).max().unwrap_or(0),
        pct(&took, 50.0),
        pct(&took, 0.0),
        pct(&took, 100.0),
        busy.latencies.len()
    );
    let quiet_overlap = (0..quiet.latencies.len())
        .filter(|i| quiet.overlapped(*i, &quiet_spans))
        .count();
    println!(
        "no resync phase: {} resyncs (at connect), {quiet_overlap} starts overlapped one",
        quiet_spans.len()
    );
    println!("slowest, no resync:");
    slowest(
        &quiet,
        &quiet_spans,
        quiet_started_ns,
        &quiet_received,
        &quiet_about,
    );
    println!("slowest, resync running:");
    slowest(
        &busy,
        &busy_spans,
        busy_started_ns,
        &busy_received,
        &busy_about,
    );
    println!(
        "symroute's own histogram (no resync): mean {:.2} ms",
        own * 1e3
    );
    println!(
        "daemon with {} managed containers: VmRSS {rss}, VmHWM {hwm}, {fds} fds",
        quiet.ids.len()
    );
    println!(
        "daemon idle 10 s with {} managed: utime+stime grew by {} ticks ({} Hz)",
        quiet.ids.len(),
        c1 - c0,
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
    );
    println!("daemon errors_total: {errors_quiet} (no resync), {errors_busy} (resync running)");
    for (log, problems) in [&quiet_log, &busy_log] {
        println!(
            "daemon log kept: {} ({} WARN/ERROR lines)",
            log.display(),
            problems.len()
        );
        for p in problems.iter().take(5) {
            println!("    {p}");
        }
    }
    println!(
        "total {:.1} s; load average {load_start} at the start, {} at the end",
        t_all.elapsed().as_secs_f64(),
        load()
    );
}
