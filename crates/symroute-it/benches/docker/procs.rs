//! The processes the benchmark starts (`symroute daemon` and the baseline script, in the
//! engine's network namespace; ended by their pid, or the script's own process group),
//! the daemon's metrics and log, and /proc figures.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use symroute_linux::netns::Netns;

use crate::common::docker::{api, log_tail};
use crate::lab::BenchLab;

const BASELINE_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/docker/baseline-events-nsenter.sh"
);

fn set_pdeathsig(cmd: &mut Command, group: bool) {
    if group {
        // SAFETY: runs in the forked child before exec; setpgid is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    crate::common::die_with_parent(cmd);
}

/// A process we started, ended by its pid (or its own process group) on
/// drop: SIGTERM, then SIGKILL after 10 s.
pub struct Proc {
    child: Child,
    group: bool,
    what: &'static str,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
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

pub fn metrics(netns: &Netns, addr: SocketAddr) -> Option<String> {
    api::scrape(netns, addr).ok()
}

pub fn wait_metric(netns: &Netns, addr: SocketAddr, name: &str, value: f64) {
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

/// `symroute daemon` on the lab's engine, in the engine's namespace, with metrics on a
/// free port of its loopback and a JSON log in the lab's folder (`name`.log). `resync`:
/// its `--resync-interval`. The resync and event-loop modules log at debug level (one
/// line per resync, with when it started and ended, read by [`resyncs`]; one per engine
/// event, with when it arrived, read by [`received`]); the rest at info.
pub fn start_daemon(lab: &BenchLab, name: &str, resync: &str) -> (Proc, SocketAddr) {
    let config = lab.dir().join("symroute-empty.toml");
    fs::write(&config, "").expect("empty config");
    let port = lab
        .ns()
        .run(|| TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
        .expect("enter ns")
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = lab.dir().join(format!("{name}.log"));
    let mut cmd = lab.ns().command(&*crate::common::BIN);
    cmd.arg("--config")
        .arg(&config)
        .args([
            "daemon",
            "--docker-host",
            &lab.host(),
            "--log-format",
            "json",
            "--resync-interval",
            resync,
        ])
        .arg("--metrics-listen")
        .arg(addr.to_string())
        .env_remove("DOCKER_HOST")
        .env(
            "SYMROUTE_LOG",
            "info,symroute_docker::daemon::resync=debug,symroute_docker::daemon::event_loop=debug,symroute_docker::daemon::namespaces=debug",
        )
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

/// One resync as the daemon logged it: CLOCK_REALTIME ns from its start (the engine's
/// list asked for) to its end (the last container applied), and how many containers.
#[derive(Debug, Clone, Copy)]
pub struct ResyncSpan {
    pub start_ns: i64,
    pub end_ns: i64,
    pub running: u64,
}

/// The resyncs in a daemon's log (its `resynced` lines).
pub fn resyncs(proc: &Proc) -> Vec<ResyncSpan> {
    fs::read_to_string(&proc.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "resynced")
        .filter_map(|v| {
            Some(ResyncSpan {
                start_ns: v["start_unix_ns"].as_i64()?,
                end_ns: v["end_unix_ns"].as_i64()?,
                running: v["running"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// When each container's `start` event reached the daemon (CLOCK_REALTIME ns), from
/// its `event received` lines.
pub fn received(proc: &Proc) -> HashMap<String, i64> {
    fs::read_to_string(&proc.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "event received" && v["kind"] == "Start")
        .filter_map(|v| {
            Some((
                v["container"].as_str()?.to_string(),
                v["received_unix_ns"].as_i64()?,
            ))
        })
        .collect()
}

/// Keep a copy of the daemon's log (the lab's folder goes with the lab), in
/// `$TMPDIR/symroute-bench-docker/<engine>-<name>.log`; its path, and its WARN and
/// ERROR lines.
pub fn keep_log(proc: &Proc, engine: &str) -> (PathBuf, Vec<String>) {
    let dir = std::env::temp_dir().join("symroute-bench-docker");
    let _ = fs::create_dir_all(&dir);
    let name = proc
        .log
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let to = dir.join(format!("{engine}-{name}.log"));
    let text = fs::read_to_string(&proc.log).unwrap_or_default();
    let _ = fs::write(&to, &text);
    let problems = text
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
        .map(str::to_string)
        .collect();
    (to, problems)
}

/// The daemon's log lines that name container `id` (by its first 12 characters).
pub fn lines_about(proc: &Proc, id: &str) -> Vec<String> {
    let short: String = id.chars().take(12).collect();
    fs::read_to_string(&proc.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&short))
        .map(str::to_string)
        .collect()
}

/// The baseline script in the engine's namespace, the docker CLI pointed at its socket.
pub fn start_baseline(lab: &BenchLab) -> Proc {
    let log = lab.dir().join("baseline.log");
    let mut cmd = lab.ns().command("sh");
    cmd.arg(BASELINE_SCRIPT)
        .env("DOCKER_HOST", lab.host())
        .env("DOCKER_CONFIG", lab.dir().join("cli"))
        .env("DOCKER", lab.docker_cli())
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

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

pub fn status_field(pid: u32, key: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len() + 1..].trim().to_string())
        .unwrap_or_default()
}

/// The machine's 1-minute load average (the machine may be shared).
pub fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}
