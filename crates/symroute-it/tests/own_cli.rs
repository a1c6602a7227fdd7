//! The CLI's promises from the ownership issue (7) that live at its edge:
//! printed output is safe (dry-run commands shell-quoted, names escaped),
//! the host namespace is refused even when PID 1's cannot be read, inputs are
//! bounded (FIFOs, /dev/zero, big files), writers take the namespace lock,
//! SIGINT/SIGTERM roll an apply back, `CNI_COMMAND` only acts without a
//! subcommand, `--json` errors are JSON, diagnose says what it sees.
//!
//! Every namespace here is an anonymous lab namespace; the host's namespace
//! is only read (rule and route dumps compared before and after).

use symroute_it::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bounded::*;
use common::*;
use symroute_testkit::lab::{MAIN_TABLE, Ns};

fn assert_no_control_bytes(text: &str, what: &str) {
    assert!(
        !text
            .bytes()
            .any(|b| b == 0x1b || (b < 0x20 && b != b'\n') || b == 0x7f),
        "{what}: raw control byte in output:\n{}",
        text.escape_debug()
    );
}

const HOSTILE_A: &str = "x$(id>PW)";
const HOSTILE_B: &str = "y;id";
const HOSTILE_ESC: &str = "\u{1b}[31mred";

/// A namespace whose two interfaces have hostile names, each with an address
/// and a gateway on its subnet (peers in a second namespace).
fn hostile_lab() -> (Ns, Ns) {
    require_root();
    let ctr = ok(Ns::new("hostile"));
    let peer = ok(Ns::new("hostile-peer"));
    for (i, name) in [HOSTILE_A, HOSTILE_ESC].iter().enumerate() {
        ok(ctr.veth(name, &peer, &format!("p{i}")));
        ok(ctr.link_up(name));
        ok(peer.link_up(&format!("p{i}")));
    }
    ok(ctr.add_addr(HOSTILE_A, net("198.51.100.2/24")));
    ok(ctr.add_addr(HOSTILE_ESC, net("203.0.113.2/24")));
    ok(ctr.add_route(
        net("0.0.0.0/0"),
        Some(ip("198.51.100.1")),
        Some(HOSTILE_A),
        MAIN_TABLE,
    ));
    (ctr, peer)
}

#[test]
fn dry_run_commands_of_hostile_names_run_as_the_plan_and_nothing_else_and_text_is_escaped() {
    let (ctr, _peer) = hostile_lab();
    // What the kernel accepts: the hostile names above were accepted; a
    // name with whitespace (newline, tab) or '/' is refused.
    let probe = ok(Ns::new("names"));
    for bad in ["nl\nx", "tab\tx", "a/b", "c:d"] {
        assert!(
            probe.veth(bad, &probe, "q0").is_err(),
            "the kernel accepted interface name {bad:?}"
        );
    }
    // A third hostile name, in the peer-less way: shell separators.
    ok(ctr.veth(HOSTILE_B, &probe, "q1"));
    ok(ctr.link_up(HOSTILE_B));
    ok(probe.link_up("q1"));
    ok(ctr.add_addr(HOSTILE_B, net("192.0.2.2/24")));

    let path = path_of(&ctr);
    let gw_a = format!("{HOSTILE_A}=198.51.100.1");
    let gw_esc = format!("{HOSTILE_ESC}=203.0.113.1");
    let gw_b = format!("{HOSTILE_B}=192.0.2.1");
    let gws = ["--gateway", &gw_a, "--gateway", &gw_esc, "--gateway", &gw_b];
    let mut args = vec!["apply", "--netns", &path, "--dry-run"];
    args.extend(gws);
    let out = symroute(&args);
    out.expect(0);
    assert_no_control_bytes(&out.stdout, "apply --dry-run");
    let commands: Vec<&str> = out
        .stdout
        .lines()
        // Each line: `test "$(stat -Lc %i PATH)" = INODE && nsenter ...`.
        .filter(|l| l.starts_with("test \"$(stat -Lc %i ") && l.contains(" && nsenter "))
        .collect();
    assert!(commands.len() >= 9, "{}", out.stdout);

    // Paste each line into a shell, in a fresh folder: the hidden commands
    // would leave a file PW there.
    let dir = scratch_dir("hostile-dry-run");
    for c in &commands {
        let st = Command::new("sh")
            .arg("-c")
            .arg(c)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("sh -c {c}: {e}"));
        assert!(
            st.status.success(),
            "sh -c {c}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let left: Vec<_> = std::fs::read_dir(&dir).expect("read scratch").collect();
    assert!(
        left.is_empty(),
        "the pasted commands created files: {left:?}"
    );

    // The pasted lines built exactly the plan.
    let mut status = vec!["status", "--netns", &path];
    status.extend(gws);
    let st = symroute(&status);
    st.expect(0);
    assert_no_control_bytes(&st.stdout, "status");
    assert!(st.stdout.contains("\\x1b[31mred"), "{}", st.stdout);
    let mut apply = vec!["apply", "--netns", &path];
    apply.extend(gws);
    let ap = symroute(&apply);
    ap.expect(0);
    assert!(
        ap.stdout.contains("in sync: nothing to change"),
        "{}",
        ap.stdout
    );
    assert_no_control_bytes(&ap.stdout, "apply");
    let d = symroute(["diagnose", "--netns", &path]);
    assert_no_control_bytes(&d.stdout, "diagnose");
    assert_no_control_bytes(&d.stderr, "diagnose");
    // An error naming the interface.
    let bad = format!("{HOSTILE_ESC}=10.99.99.99");
    let e = symroute(["apply", "--netns", &path, "--gateway", &bad]);
    e.expect(2);
    assert_no_control_bytes(&e.stderr, "error");
    assert!(e.stderr.contains("\\x1b[31mred"), "{}", e.stderr);
    let cl = symroute(["clean", "--netns", &path]);
    cl.expect(0);
    assert_no_control_bytes(&cl.stdout, "clean");
    assert!(cl.stdout.contains("removed"), "{}", cl.stdout);
    assert_eq!(owned(&ctr), (vec![], vec![]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The host's rules and routes, read with `ip` (read-only), expiry timers
/// left out (they count down on their own).
fn host_dump() -> String {
    let mut out = String::new();
    for args in [
        &["-4", "rule", "show"][..],
        &["-6", "rule", "show"],
        &["-4", "route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
    ] {
        let o = Command::new("ip")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let line = line.split(" expires ").next().unwrap_or(line);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Run the binary inside `ns` (it enters the namespace before exec), bounded.
fn symroute_in(ns: &Ns, args: &[&str]) -> Out {
    let child = ns
        .command(&*BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {} in {}: {e}", *BIN, ns.name()));
    wait_bounded(
        child,
        &format!("(in {}) symroute {}", ns.name(), args.join(" ")),
        RUN_BOUND,
    )
}

#[test]
fn host_namespace_is_refused_when_symroute_runs_in_another_namespace() {
    require_root();
    use std::os::unix::fs::MetadataExt;
    let own = format!("/proc/{}/ns/net", std::process::id());
    let ino = std::fs::metadata(&own).expect("stat own netns").ino();
    assert_eq!(
        ino,
        symroute_linux::netns::PROC_NET_INIT_INO,
        "precondition: the tests run in the initial network namespace (inode 0xEFFFFFF9)"
    );
    let runner = ok(Ns::new("runner"));
    let cfg = empty_config();
    let pid = std::process::id().to_string();
    let before = host_dump();
    // The gateway names no interface anywhere and the tag is one the host
    // does not use: even a missing refusal could not change the host.
    let impossible = "no-such-interface-anywhere=192.0.2.1";
    let common = [
        "--config",
        cfg.as_str(),
        "--protocol",
        "233",
        "--table-band",
        "60000-60009",
    ];
    for target in [vec!["--pid", pid.as_str()], vec!["--netns", own.as_str()]] {
        let mut apply: Vec<&str> = common.to_vec();
        apply.push("apply");
        apply.extend(&target);
        apply.extend(["--gateway", impossible]);
        let mut clean: Vec<&str> = common.to_vec();
        clean.push("clean");
        clean.extend(&target);
        for cmd in [apply, clean] {
            let out = symroute_in(&runner, &cmd);
            out.expect(2);
            let path = if target[0] == "--pid" {
                format!("/proc/{pid}/ns/net")
            } else {
                own.clone()
            };
            assert!(
                out.stderr.contains(&format!(
                    "{path} is the host's own network namespace (the initial network namespace, inode 4026531833)"
                )) && out.stderr.contains("--allow-host-netns"),
                "{cmd:?}: {}",
                out.stderr
            );
            assert!(out.stdout.is_empty(), "{cmd:?}: {}", out.stdout);
        }
    }
    // The runner's own namespace is not the host's: it is changed normally
    // (a one-interface namespace: not managed, nothing to do).
    let rp = path_of(&runner);
    symroute_in(&runner, &["--config", &cfg, "apply", "--netns", &rp]).expect(0);
    assert_eq!(before, host_dump(), "the host's rules or routes changed");
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

#[test]
fn fifos_devices_and_big_files_as_inputs_fail_at_once_with_exit_2() {
    require_root();
    let dir = scratch_dir("bounded-inputs");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'#'; 1024 * 1024]).expect("write big config");
    let fifo_s = fifo.display().to_string();
    let big_s = big.display().to_string();
    let cfg = empty_config();
    let ns = ok(Ns::new("bounded"));
    let nsp = path_of(&ns);
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--config", &cfg, "status", "--netns", &fifo_s],
            format!("{fifo_s} is not a network namespace"),
        ),
        (
            vec!["--config", &cfg, "apply", "--netns", &fifo_s],
            format!("{fifo_s} is not a network namespace"),
        ),
        (
            vec!["--config", &cfg, "diagnose", "--netns", &fifo_s],
            format!("{fifo_s} is not a network namespace"),
        ),
        (
            vec!["--config", &fifo_s, "status", "--netns", &nsp],
            format!("config file {fifo_s} is not a regular file (a FIFO)"),
        ),
        (
            vec!["--config", "/dev/zero", "apply", "--netns", &nsp],
            "config file /dev/zero is not a regular file (a character device)".to_string(),
        ),
        (
            vec!["--config", &big_s, "apply", "--netns", &nsp],
            format!("config file {big_s} is larger than 256 KiB"),
        ),
    ];
    for (args, want) in cases {
        let out = symroute_bounded(&args);
        out.expect(2);
        assert!(
            out.stderr.contains(&want),
            "{args:?}: want {want:?}: {}",
            out.stderr
        );
    }
    assert_eq!(owned(&ns), (vec![], vec![]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether every owned rule looks up a table that holds owned routes.
fn no_rule_points_at_an_empty_table(ns: &Ns) -> bool {
    let (rules, routes) = owned(ns);
    rules
        .iter()
        .all(|r| routes.iter().any(|rt| rt.table == r.table))
}

#[test]
fn apply_racing_clean_leaves_the_namespace_fully_applied_or_fully_clean() {
    use symroute_testkit::lab::{SeedLab, SeedOptions};
    require_root();
    let lab = ok(SeedLab::build(SeedOptions {
        dnat: false,
        ipv6: true,
    }));
    let cfg = empty_config();
    let path = path_of(&lab.ctr);
    let gws = ["--gateway", "eth1=172.18.0.1", "--gateway", "eth1=fe80::1"];
    let mut apply = vec!["--config", cfg.as_str(), "apply", "--netns", &path];
    apply.extend(gws);
    let clean = ["--config", cfg.as_str(), "clean", "--netns", &path];
    let mut status = vec!["--config", cfg.as_str(), "status", "--netns", &path];
    status.extend(gws);
    let (mut applied, mut cleaned) = (0, 0);
    for round in 0..50 {
        // Alternate who starts first.
        let (a, c) = if round % 2 == 0 {
            let a = spawn_symroute(&apply);
            (a, spawn_symroute(&clean))
        } else {
            let c = spawn_symroute(&clean);
            (spawn_symroute(&apply), c)
        };
        wait_bounded(a, "apply", RUN_BOUND).expect(0);
        wait_bounded(c, "clean", RUN_BOUND).expect(0);
        assert!(
            no_rule_points_at_an_empty_table(&lab.ctr),
            "round {round}: a rule points at an empty table: {:?}",
            owned(&lab.ctr)
        );
        let st = symroute_bounded(&status);
        if owned(&lab.ctr) == (vec![], vec![]) {
            cleaned += 1;
        } else {
            st.expect(0);
            applied += 1;
        }
    }
    eprintln!("apply/clean race: {applied} round(s) ended applied, {cleaned} clean");
}

#[test]
fn sigterm_during_a_300_interface_apply_rolls_back_or_finishes_and_kill_9_is_recovered() {
    use nix::sys::signal::Signal;
    let (ctr, _peers) = wide_lab(300);
    let cfg = empty_config();
    let path = path_of(&ctr);
    let apply = ["--config", cfg.as_str(), "apply", "--netns", &path];
    let clean = ["--config", cfg.as_str(), "clean", "--netns", &path];
    let status = ["--config", cfg.as_str(), "status", "--netns", &path];
    let nothing = (vec![], vec![]);

    // Full runs to know the plan and roughly how long one takes (the
    // quickest of three: the first pays for cold caches).
    let mut full = Duration::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        symroute_bounded(&apply).expect(0);
        full = full.min(t0.elapsed());
        symroute_bounded(&status).expect(0);
        let (rules, routes) = owned(&ctr);
        assert_eq!((rules.len(), routes.len()), (300, 300));
        symroute_bounded(&clean).expect(0);
    }

    let mut points: Vec<Duration> = [0, 5, 20, 50]
        .iter()
        .map(|&ms| Duration::from_millis(ms))
        .collect();
    // Then a sweep across the whole run (process start, reading 300 links
    // and planning take most of it; the 600 changes come last).
    points.extend((3..=26).map(|k| full * k / 20));
    let mut outcomes = Vec::new();
    let mut mid_run_rollbacks = 0;
    for at in &points {
        assert_eq!(owned(&ctr), nothing, "not clean before the run");
        let child = spawn_symroute(&apply);
        std::thread::sleep(*at);
        send(&child, Signal::SIGTERM);
        let out = wait_bounded(child, "apply (SIGTERM)", RUN_BOUND);
        let now = owned(&ctr);
        let outcome = if now == nothing {
            "nothing"
        } else {
            symroute_bounded(&status).expect(0);
            "all"
        };
        match out.code {
            // Done before the signal came.
            0 => assert_eq!(outcome, "all", "{out:?}"),
            2 => {
                assert!(
                    out.stderr.contains("interrupted by SIGTERM"),
                    "{}",
                    out.stderr
                );
                if out.stderr.contains("rolled back") {
                    assert_eq!(outcome, "nothing", "{}", out.stderr);
                    if !out.stderr.contains("rolled back 0 change(s)") {
                        mid_run_rollbacks += 1;
                    }
                } else {
                    assert!(out.stderr.contains("are in place"), "{}", out.stderr);
                    assert_eq!(outcome, "all", "{}", out.stderr);
                }
            }
            // Killed by SIGTERM before its handlers were installed (nothing),
            // or while printing after the last change, once the default
            // actions are back (all, checked by status above).
            c if c == -libc::SIGTERM => {}
            c => panic!("apply exited {c} after SIGTERM at {at:?}: {}", out.stderr),
        }
        let said = out
            .stderr
            .split("interrupted by ")
            .nth(1)
            .unwrap_or("")
            .trim();
        outcomes.push(format!("{at:?}: exit {} -> {outcome} {said}", out.code));
        symroute_bounded(&clean).expect(0);
    }
    eprintln!("full apply {full:?}; SIGTERM outcomes: {outcomes:#?}");
    assert!(
        mid_run_rollbacks > 0,
        "no SIGTERM landed in the middle of a run (full run {full:?}): {outcomes:#?}"
    );

    // kill -9 in the middle: the next apply converges.
    let child = spawn_symroute(&apply);
    std::thread::sleep(full / 2);
    send(&child, Signal::SIGKILL);
    let _ = wait_bounded(child, "apply (SIGKILL)", RUN_BOUND);
    symroute_bounded(&apply).expect(0);
    symroute_bounded(&status).expect(0);
}

#[test]
fn cni_command_acts_only_without_arguments_and_json_errors_are_json() {
    use symroute_testkit::lab::{SeedLab, SeedOptions};
    require_root();
    let lab = ok(SeedLab::build(SeedOptions {
        dnat: false,
        ipv6: false,
    }));
    let cfg = empty_config();
    let path = path_of(&lab.ctr);
    let gw = ["--gateway", "eth1=172.18.0.1"];
    let mut apply = vec!["--config", cfg.as_str(), "apply", "--netns", &path];
    apply.extend(gw);
    symroute_bounded(&apply).expect(0);
    assert_ne!(owned(&lab.ctr), (vec![], vec![]));

    // A stray CNI_COMMAND with a subcommand: ignored, with a warning; the
    // clean really cleans.
    let clean = ["--config", cfg.as_str(), "clean", "--netns", &path];
    let out = symroute_bounded_env(&clean, &[("CNI_COMMAND", "VERSION")]);
    out.expect(0);
    assert!(
        out.stderr.contains("ignoring CNI_COMMAND=VERSION"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("removed"), "{}", out.stdout);
    assert_eq!(owned(&lab.ctr), (vec![], vec![]));

    // Without arguments, as a runtime runs a plugin: the CNI reply.
    let out = symroute_bounded_env(&[], &[("CNI_COMMAND", "VERSION")]);
    out.expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("CNI VERSION reply is not JSON ({e}): {}", out.stdout));
    assert!(v["supportedVersions"].is_array(), "{v}");

    // --json errors: JSON on stdout, exit code unchanged.
    for cmd in ["apply", "status", "clean", "diagnose"] {
        let args = [
            "--config",
            cfg.as_str(),
            cmd,
            "--netns",
            "/nonexistent/ns",
            "--json",
        ];
        let out = symroute_bounded(&args);
        out.expect(2);
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{cmd} --json error is not JSON ({e}): {}", out.stdout));
        assert_eq!(v["code"], 2, "{v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("network namespace /nonexistent/ns: No such file or directory"),
            "{v}"
        );
        assert!(out.stderr.is_empty(), "{cmd}: {}", out.stderr);
    }
    // A plan error under --json, with the CLI's hint.
    let args = [
        "--config",
        cfg.as_str(),
        "apply",
        "--netns",
        &path,
        "--json",
        "--gateway",
        "eth1=10.99.0.1",
    ];
    let out = symroute_bounded(&args);
    out.expect(2);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON error");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--gateway eth1=10.99.0.1"),
        "{v}"
    );
}

#[test]
fn diagnose_says_no_route_and_blackhole_as_they_are() {
    require_root();
    let ns = ok(Ns::new("noroute"));
    let peer = ok(Ns::new("noroute-peer"));
    for (i, addr) in ["198.51.100.2/24", "203.0.113.2/24"].iter().enumerate() {
        let name = format!("eth{i}");
        ok(ns.veth(&name, &peer, &format!("p{i}")));
        ok(ns.link_up(&name));
        ok(peer.link_up(&format!("p{i}")));
        ok(ns.add_addr(&name, net(addr)));
    }
    let cfg = empty_config();
    let path = path_of(&ns);
    let diag = ["--config", cfg.as_str(), "diagnose", "--netns", &path];
    let out = symroute_bounded(&diag);
    out.expect(1);
    assert!(
        out.stdout
            .contains("verdict: NO ROUTE: 2 of 2 address(es) have no way"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("reply through another interface"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("no route"), "{}", out.stdout);

    ok(ns.run_cmd("ip", ["route", "add", "blackhole", "default"]));
    let out = symroute_bounded(&diag);
    out.expect(1);
    assert!(out.stdout.contains("blackhole route"), "{}", out.stdout);
    assert!(!out.stdout.contains("Invalid argument"), "{}", out.stdout);
    let j = [
        "--config",
        cfg.as_str(),
        "diagnose",
        "--netns",
        &path,
        "--json",
    ];
    let v: serde_json::Value =
        serde_json::from_str(&symroute_bounded(&j).stdout).expect("diagnose JSON");
    assert_eq!(v["addresses"][0]["verdict"], "no-route", "{v}");
}
