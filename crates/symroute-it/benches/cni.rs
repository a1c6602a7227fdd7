//! CNI plugin benchmark for docs/benchmarks.md (run as root:
//! `cargo bench --bench cni`).
//!
//! Whole-process ADD+DEL latency and peak RSS of the release
//! `symroute-cni` binary (the plugin as docs/cni.md installs it) against
//! Debian's `sbr` (/usr/lib/cni/sbr), on the same prepared pod namespace,
//! alternated in one run (each goes first in turn), with the `symroute`
//! command acting as the plugin (CNI_COMMAND set) measured alongside. Both get the
//! same 1.0.0 configuration and prevResult for `net1` and run as a runtime
//! runs them: a fresh process per command, started from a thread that
//! entered a "host" namespace (never the machine's own), with the
//! configuration on standard input; symroute's state goes to a folder on
//! /run (tmpfs), as with its default /run/symroute/cni.
//!
//! Between runs the namespace is put back exactly as it was (net1's address
//! removed and re-added, which restores the main-table route sbr moves away
//! and flushes what either left in its table), outside the timing, and
//! checked against the starting snapshot.
//!
//! Figures are printed, not asserted. Everything lives in anonymous
//! namespaces and a folder under /run removed at the end.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::{Value, json};
use symroute_core::kernel::Kernel;
use symroute_core::model::Snapshot;
use symroute_linux::kernel::NetlinkKernel;
use symroute_testkit::lab::{MAIN_TABLE, Ns};

const SBR: &str = "/usr/lib/cni/sbr";

fn net(s: &str) -> IpNet {
    s.parse().expect("benchmark prefix literal")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("benchmark address literal")
}

/// Run one plugin command; (wall time, CPU time (user + system), peak RSS
/// in KiB).
fn run_plugin(cmd: &mut Command, stdin: &[u8]) -> (Duration, Duration, i64) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn plugin");
    {
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin).expect("write stdin");
    }
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(r, pid, "wait4");
    let st = std::process::ExitStatus::from_raw(status);
    assert!(st.success(), "{cmd:?} failed: {st}");
    std::mem::forget(child);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        elapsed,
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss,
    )
}

struct Plugin {
    name: &'static str,
    bin: PathBuf,
    conf: Vec<u8>,
    add: Vec<Duration>,
    del: Vec<Duration>,
    total: Vec<Duration>,
    cpu: Vec<Duration>,
    rss: i64,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn snapshot(ns: &Ns) -> Snapshot {
    let mut s = NetlinkKernel::new(ns.netns().socket().expect("socket"))
        .snapshot()
        .expect("snapshot");
    s.links.sort_by_key(|l| l.index);
    s.rules.sort();
    s.routes.sort();
    s
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark creates network namespaces: run it as root"
    );
    assert!(
        Path::new(SBR).is_file(),
        "{SBR} is missing: apt-get install containernetworking-plugins"
    );
    // SYMROUTE_CNI_BIN measures another build of the plugin (e.g. the
    // static one of docs/cni.md) in place of this build's symroute-cni.
    let symroute_cni = std::env::var_os("SYMROUTE_CNI_BIN").map_or_else(
        || symroute_testkit::workspace_bin("symroute-cni"),
        PathBuf::from,
    );
    let symroute_main = symroute_testkit::workspace_bin("symroute");
    // The state folder on tmpfs, like the plugin's default /run/symroute/cni.
    let scratch = PathBuf::from(format!("/run/symroute-cni-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch folder");
    // Removed at the end, also when a run fails.
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Remove(scratch.clone());

    let host = Ns::new("bench-host").expect("host");
    let pod = Ns::new("bench-pod").expect("pod");
    // IPv4 only: IPv6 link-local addresses (and their DAD) would make the
    // starting state a moving target, and sbr moves their routes too.
    for ns in [&host, &pod] {
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            ns.sysctl(key, "1").expect("sysctl");
        }
    }
    for (dev, peer, addr) in [
        ("eth0", "veth0", "198.51.100.2/24"),
        ("net1", "veth1", "203.0.113.50/24"),
    ] {
        pod.veth(dev, &host, peer).expect("veth");
        host.link_up(peer).expect("up");
        pod.add_addr(dev, net(addr)).expect("address");
        pod.link_up(dev).expect("up");
    }
    pod.add_route(
        net("0.0.0.0/0"),
        Some(ip("198.51.100.1")),
        Some("eth0"),
        MAIN_TABLE,
    )
    .expect("default route");
    let netns = pod.path().display().to_string();
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": netns}],
        "ips": [{"address": "203.0.113.50/24", "gateway": "203.0.113.1", "interface": 0}],
        "routes": []});
    let conf = |kind: &str| -> Vec<u8> {
        let mut c: Value = json!({"cniVersion": "1.0.0", "name": "bench", "type": kind,
            "prevResult": prev});
        if kind == "symroute" {
            c["dataDir"] = json!(scratch.join("state"));
        }
        c.to_string().into_bytes()
    };
    let plugin = |name: &'static str, bin: PathBuf, kind: &str| Plugin {
        name,
        bin,
        conf: conf(kind),
        add: Vec::new(),
        del: Vec::new(),
        total: Vec::new(),
        cpu: Vec::new(),
        rss: 0,
    };
    let mut plugins = [
        plugin("symroute-cni", symroute_cni, "symroute"),
        plugin("sbr (Debian 1.1.1)", PathBuf::from(SBR), "sbr"),
        plugin("symroute (main binary)", symroute_main, "symroute"),
    ];
    let baseline = snapshot(&pod);
    // This thread now lives in the host namespace, so the plugins it starts
    // do too, started the way runtimes start plugins (vfork-style spawn,
    // no hook between fork and exec that would copy this process first).
    nix::sched::setns(host.netns().fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("enter the host namespace");
    let command = |p: &Plugin, verb: &str| {
        let mut c = Command::new(&p.bin);
        c.env_clear()
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", "bench")
            .env("CNI_NETNS", &netns)
            .env("CNI_IFNAME", "net1")
            .env("CNI_PATH", "/usr/lib/cni");
        c
    };
    let reset = || {
        pod.del_addr("net1", net("203.0.113.50/24"))
            .expect("del address");
        pod.add_addr("net1", net("203.0.113.50/24"))
            .expect("add address");
        assert_eq!(snapshot(&pod), baseline, "the namespace did not come back");
    };
    // Warm the page cache for both binaries.
    for p in &plugins {
        run_plugin(&mut command(p, "ADD"), &p.conf);
        run_plugin(&mut command(p, "DEL"), &p.conf);
        reset();
    }
    let rounds = 200;
    for round in 0..rounds {
        // Each plugin goes first, second and third in turn.
        for k in 0..plugins.len() {
            let i = (round + k) % plugins.len();
            let p = &mut plugins[i];
            let (a, ca, ra) = run_plugin(&mut command(p, "ADD"), &p.conf);
            let (d, cd, rd) = run_plugin(&mut command(p, "DEL"), &p.conf);
            p.add.push(a);
            p.del.push(d);
            p.total.push(a + d);
            p.cpu.push(ca + cd);
            p.rss = p.rss.max(ra).max(rd);
            reset();
        }
    }
    println!(
        "CNI ADD+DEL, whole process, {rounds} alternated rounds on the same namespace (net1, 1 address, gateway):"
    );
    println!(
        "| plugin | ADD+DEL median | ADD+DEL p90 | ADD median | DEL median | ADD+DEL CPU median | peak RSS |\n|---|---|---|---|---|---|---|"
    );
    for p in &mut plugins {
        for v in [&mut p.add, &mut p.del, &mut p.total, &mut p.cpu] {
            v.sort();
        }
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} MiB |",
            p.name,
            pct(&p.total, 0.5),
            pct(&p.total, 0.9),
            pct(&p.add, 0.5),
            pct(&p.del, 0.5),
            pct(&p.cpu, 0.5),
            p.rss as f64 / 1024.0
        );
    }
    for p in [&plugins[0], &plugins[2]] {
        println!(
            "{} / sbr: median ADD+DEL ratio {:.2} (CPU time {:.2}); peak RSS {:.1} MiB vs {:.1} MiB",
            p.name,
            pct(&p.total, 0.5) / pct(&plugins[1].total, 0.5),
            pct(&p.cpu, 0.5) / pct(&plugins[1].cpu, 0.5),
            p.rss as f64 / 1024.0,
            plugins[1].rss as f64 / 1024.0
        );
    }
}
