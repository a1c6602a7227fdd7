//! The binary run with a hard time bound, for the `own_*` suites whose runs
//! could hang (FIFOs, locks, signals): spawn it, wait at most a bound and
//! kill it by pid past it, send it signals once its handlers are in; and the
//! wide namespace the signal sweeps interrupt.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use symroute_testkit::lab::Ns;

use super::{BIN, Out, net, ok, require_root};

/// A hard bound for one run of the binary in tests that could hang.
pub const RUN_BOUND: Duration = Duration::from_secs(20);

/// Read a child's pipe to the end on a thread of its own (a full pipe must
/// not stall the child while we wait for it).
pub fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Wait for `child` up to `bound`; past it, kill it by pid and fail.
pub fn wait_bounded(mut child: Child, what: &str, bound: Duration) -> Out {
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < bound => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what}: still running after {bound:?}: killed (pid {})",
                    child.id()
                );
            }
            Err(e) => panic!("{what}: wait: {e}"),
        }
    };
    Out {
        args: vec![what.to_string()],
        code: status.code().unwrap_or(-(status.signal().unwrap_or(0))),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The binary with `args` and `env` added, stdin empty, both outputs piped.
pub fn spawn_symroute_env(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(&*BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", *BIN))
}

/// The binary with `args` (no config file added), stdin empty, both
/// outputs piped.
pub fn spawn_symroute(args: &[&str]) -> Child {
    spawn_symroute_env(args, &[])
}

/// Run the binary with `args` (no config file added) and `env`, bounded.
pub fn symroute_bounded_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let child = spawn_symroute_env(args, env);
    wait_bounded(child, &format!("symroute {}", args.join(" ")), RUN_BOUND)
}

/// Run the binary with `args` (no config file added), bounded.
pub fn symroute_bounded(args: &[&str]) -> Out {
    symroute_bounded_env(args, &[])
}

/// The path of the empty config file every run of the binary is given
/// (`common::symroute` adds it itself; these runs name it).
pub fn empty_config() -> String {
    super::empty_config().display().to_string()
}

/// Send `sig` to `child` by pid; the child may have exited already, which
/// is not an error here.
pub fn send(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    let _ = nix::sys::signal::kill(pid, sig);
}

/// Wait (bounded) until process `child` catches `sig` (its handler is
/// installed, per /proc/PID/status SigCgt); fails if it never does.
pub fn wait_catches(child: &Child, sig: i32) {
    let path = format!("/proc/{}/status", child.id());
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let caught = text
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (sig - 1)) != 0);
        if caught {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pid {} never installed a handler for signal {sig}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A namespace with `n` veths (peers in a second namespace), each up with an
/// address of its own /24 in 198.18.0.0/15: a plan of 2·n changes.
pub fn wide_lab(n: usize) -> (Ns, Ns) {
    require_root();
    let ctr = ok(Ns::new("wide"));
    let peers = ok(Ns::new("wide-peers"));
    for i in 0..n {
        let name = format!("v{i}");
        ok(ctr.veth(&name, &peers, &format!("p{i}")));
        ok(ctr.link_up(&name));
        ok(peers.link_up(&format!("p{i}")));
        let (b, c) = (18 + i / 256, i % 256);
        ok(ctr.add_addr(&name, net(&format!("198.{b}.{c}.2/24"))));
    }
    (ctr, peers)
}
