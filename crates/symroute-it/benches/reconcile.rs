//! Benchmarks for docs/benchmarks.md (run as root: `cargo bench --bench reconcile`).
//!
//! 1. Whole process: the release `symroute apply` binary on a namespace with
//!    three interfaces, cold (nothing of symroute's there: 9 changes) and
//!    no-op (already in sync), median and p90 wall time, peak RSS.
//! 2. Library: reconcile of N namespaces x 3 interfaces (N = 250, 500, 1000,
//!    2000; `--counts a,b,...` for others), cold and no-op (three passes:
//!    the median and the slowest), to show the total and that it grows linearly.
//!
//! Figures are printed, not asserted. Every namespace is anonymous and gone
//! when the benchmark exits.

use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use symroute_core::engine::{self, ApplyOptions};
use symroute_core::plan::{GatewayHint, PlanRequest};
use symroute_linux::target::{self, Target};
use symroute_testkit::lab::{MAIN_TABLE, Ns};

fn net(s: &str) -> IpNet {
    s.parse().expect("benchmark address literal")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("benchmark address literal")
}

/// A namespace with eth0..eth2 (veth peers in `hub`), addresses
/// 10.{i}.{k}.2/24 and a default route via eth0.
fn three_homed(i: usize, hub: &Ns) -> Ns {
    let ns = Ns::new(format!("bench{i}")).expect("create namespace");
    for k in 0..3 {
        let dev = format!("eth{k}");
        let peer = format!("p{i}x{k}");
        ns.veth(&dev, hub, &peer).expect("veth");
        hub.link_up(&peer).expect("peer up");
        ns.add_addr(&dev, net(&format!("10.{}.{}.2/24", i % 250, k)))
            .expect("address");
        ns.link_up(&dev).expect("link up");
    }
    ns.add_route(
        net("0.0.0.0/0"),
        Some(ip(&format!("10.{}.0.1", i % 250))),
        Some("eth0"),
        MAIN_TABLE,
    )
    .expect("default route");
    ns
}

fn hints(i: usize) -> Vec<GatewayHint> {
    (1..3)
        .map(|k| GatewayHint {
            ifname: format!("eth{k}"),
            gateway: ip(&format!("10.{}.{}.1", i % 250, k)),
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Run a command, returning (wall time, peak RSS in KiB).
fn run_measured(cmd: &mut Command) -> (Duration, i64) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn symroute");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(r, pid, "wait4");
    let st = std::process::ExitStatus::from_raw(status);
    assert!(st.success(), "symroute failed: {st}");
    std::mem::forget(child);
    (elapsed, usage.ru_maxrss)
}

fn whole_process(bin: &Path) {
    let hub = Ns::new("bench-hub").expect("hub");
    let ns = three_homed(1, &hub);
    let path = ns.path();
    let apply = || {
        let mut c = Command::new(bin);
        c.arg("apply").arg("--netns").arg(&path);
        for h in hints(1) {
            c.arg("--gateway")
                .arg(format!("{}={}", h.ifname, h.gateway));
        }
        c
    };
    let clean = || {
        let mut c = Command::new(bin);
        c.arg("clean").arg("--netns").arg(&path);
        c
    };
    // Warm the page cache for the binary.
    run_measured(&mut apply());
    let runs = 200;
    let (mut cold, mut noop) = (Vec::new(), Vec::new());
    let mut rss = 0;
    for _ in 0..runs {
        run_measured(&mut clean());
        let (t, r) = run_measured(&mut apply());
        cold.push(t);
        rss = rss.max(r);
    }
    for _ in 0..runs {
        let (t, r) = run_measured(&mut apply());
        noop.push(t);
        rss = rss.max(r);
    }
    cold.sort();
    noop.sort();
    println!("whole-process symroute apply, 3 interfaces, {runs} runs each:");
    println!(
        "  cold (9 changes):  median {:.2} ms  p90 {:.2} ms",
        ms(percentile(&cold, 0.5)),
        ms(percentile(&cold, 0.9))
    );
    println!(
        "  no-op (in sync):   median {:.2} ms  p90 {:.2} ms",
        ms(percentile(&noop, 0.5)),
        ms(percentile(&noop, 0.9))
    );
    println!("  peak RSS over all runs: {:.1} MiB", rss as f64 / 1024.0);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn library(count: usize) {
    let hub = Ns::new("bench-hub").expect("hub");
    let setup = Instant::now();
    let nss: Vec<Ns> = (0..count).map(|i| three_homed(i, &hub)).collect();
    let setup = setup.elapsed();
    let targets: Vec<Target> = nss.iter().map(|n| Target::Netns(n.path())).collect();
    let pass = || {
        let start = Instant::now();
        let mut changes = 0;
        for (i, t) in targets.iter().enumerate() {
            let mut opened = target::open(t, true, false).expect("open namespace");
            let opts = ApplyOptions {
                request: PlanRequest {
                    gateways: hints(i),
                    ..PlanRequest::default()
                },
                ..ApplyOptions::default()
            };
            changes += engine::apply(&mut opened.kernel, &opts)
                .expect("apply")
                .ops
                .len();
        }
        (start.elapsed(), changes)
    };
    let (cold, c1) = pass();
    let mut noops: Vec<(Duration, usize)> = (0..3).map(|_| pass()).collect();
    noops.sort();
    let (noop, c2) = noops[1];
    let worst = noops[2].0;
    println!(
        "library reconcile, {count} namespaces x 3 interfaces (setup {:.1} s): cold {:.0} ms ({c1} changes, {:.0} us/ns), no-op median {:.0} ms, slowest {:.0} ms ({c2} changes, {:.0} us/ns)",
        setup.as_secs_f64(),
        ms(cold),
        cold.as_secs_f64() * 1e6 / count as f64,
        ms(noop),
        ms(worst),
        noop.as_secs_f64() * 1e6 / count as f64,
    );
}

/// `--counts 250,500` or the default 250, 500, 1000, 2000.
fn library_counts() -> Vec<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--counts")
        .and_then(|i| args.get(i + 1))
        .map_or_else(
            || vec![250, 500, 1000, 2000],
            |v| {
                v.split(',')
                    .map(|n| {
                        n.trim()
                            .parse()
                            .expect("--counts: numbers separated by commas")
                    })
                    .collect()
            },
        )
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

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark creates network namespaces: run it as root"
    );
    raise_fd_limit();
    let bin = symroute_testkit::workspace_bin("symroute");
    if std::env::args().any(|a| a == "--whole-process")
        || !std::env::args().any(|a| a == "--library")
    {
        assert!(
            bin.exists(),
            "build the release binary first: cargo build --release"
        );
        whole_process(&bin);
    }
    if std::env::args().any(|a| a == "--library")
        || !std::env::args().any(|a| a == "--whole-process")
    {
        for n in library_counts() {
            library(n);
        }
    }
}
