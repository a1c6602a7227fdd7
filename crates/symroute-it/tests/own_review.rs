//! Regression tests for the adversarial review of main: the writers' lock
//! cannot be held from inside a container, names and aliases that are not
//! UTF-8 do not stop symroute, signals never leave partial state and stop
//! the waits, the ownership rules hold for every selector and route kind
//! symroute never writes, dry-run lines paste as they are.
//!
//! Every namespace here is an anonymous lab namespace; the host's is only
//! read.

use symroute_it::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bounded::*;
use common::*;
use symroute_testkit::lab::{MAIN_TABLE, Ns};

/// A namespace with two veths a0 and a1 (peers in a second namespace), each
/// up with an address, a default route through a0.
fn two_lab(name: &str) -> (Ns, Ns) {
    require_root();
    let ctr = ok(Ns::new(name));
    let peer = ok(Ns::new(format!("{name}-peer")));
    for (i, addr) in ["198.51.100.2/24", "203.0.113.2/24"].iter().enumerate() {
        let n = format!("a{i}");
        ok(ctr.veth(&n, &peer, &format!("p{i}")));
        ok(ctr.link_up(&n));
        ok(peer.link_up(&format!("p{i}")));
        ok(ctr.add_addr(&n, net(addr)));
    }
    ok(ctr.add_route(
        net("0.0.0.0/0"),
        Some(ip("198.51.100.1")),
        Some("a0"),
        MAIN_TABLE,
    ));
    (ctr, peer)
}

/// Bind the abstract unix socket `name` in the calling thread's namespace.
fn bind_abstract(name: &str) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    std::os::unix::net::UnixListener::bind_addr(&addr)
}

// ---- F1: the lock cannot be held from inside the namespace ----

#[test]
fn a_process_inside_the_namespace_cannot_hold_the_writers_lock() {
    let (ctr, _peer) = two_lab("lock-inside");
    let cfg = empty_config();
    let path = path_of(&ctr);
    // An unprivileged process inside the namespace flocks its namespace file
    // (the same nsfs inode the writers open) and holds it.
    let mut holder = ctr
        .command("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args([
            "flock",
            "/proc/self/ns/net",
            "sh",
            "-c",
            "echo held; exec sleep 30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn flock holder");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("holder stdout"))
        .read_line(&mut line)
        .expect("read holder");
    assert_eq!(line.trim(), "held", "the holder did not take the flock");
    // And something inside the namespace binds the lock's abstract name.
    let name = symroute_linux::lock::lock_name(ctr.netns().id().expect("ns id"));
    let squatter = ok(ctr.run(|| bind_abstract(&name))).expect("bind inside the namespace");

    let apply = [
        "--config",
        &cfg,
        "apply",
        "--netns",
        &path,
        "--lock-timeout",
        "2s",
    ];
    let out = symroute_bounded(&apply);
    out.expect(0);
    let (rules, routes) = owned(&ctr);
    assert_eq!(
        (rules.len(), routes.len() >= 2),
        (2, true),
        "{}",
        out.stdout
    );
    symroute_bounded(&["--config", &cfg, "clean", "--netns", &path]).expect(0);
    assert_eq!(owned(&ctr), (vec![], vec![]));

    // Host-side writers still exclude each other: with the lock held here,
    // a second writer waits and gives up.
    let held = symroute_linux::lock::lock(ctr.netns(), Duration::from_secs(1)).expect("lock");
    let busy = symroute_bounded(&[
        "--config",
        &cfg,
        "apply",
        "--netns",
        &path,
        "--lock-timeout",
        "300ms",
    ]);
    busy.expect(2);
    assert!(
        busy.stderr
            .contains("the namespace's lock is held by another writer"),
        "{}",
        busy.stderr
    );
    assert_eq!(owned(&ctr), (vec![], vec![]));
    drop(held);
    drop(squatter);
    let _ = holder.kill();
    let _ = holder.wait();
}

// ---- F2: names, aliases and altnames that are not UTF-8 ----

/// Run `ip ARGS` (raw bytes allowed) inside `ns`; panics on failure.
fn ip_raw(ns: &Ns, args: &[&[u8]]) {
    use std::os::unix::ffi::OsStrExt;
    let out = ns
        .command("ip")
        .args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {:?}: {}",
        args.iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// apply, status and clean all succeed in `ctr`, and apply manages
/// `managed` interfaces (one rule each).
fn apply_status_clean_work(ctr: &Ns, managed: usize, context: &str) -> Out {
    let cfg = empty_config();
    let path = path_of(ctr);
    let ap = symroute_bounded(&["--config", &cfg, "apply", "--netns", &path]);
    ap.expect(0);
    let (rules, _) = owned(ctr);
    assert_eq!(rules.len(), managed, "{context}: {}", ap.stdout);
    let st = symroute_bounded(&["--config", &cfg, "status", "--netns", &path]);
    st.expect(0);
    let d = symroute_bounded(&["diagnose", "--netns", &path]);
    assert!(d.code == 0 || d.code == 1, "{context}: diagnose {d:?}");
    symroute_bounded(&["--config", &cfg, "clean", "--netns", &path]).expect(0);
    assert_eq!(
        owned(ctr),
        (vec![], vec![]),
        "{context}: clean left objects"
    );
    st
}

#[test]
fn an_alias_that_is_not_utf8_does_not_stop_symroute() {
    let (ctr, _peer) = two_lab("alias");
    ip_raw(&ctr, &[b"link", b"set", b"a0", b"alias", b"\xff\xfe"]);
    apply_status_clean_work(&ctr, 2, "bad alias");
}

#[test]
fn an_altname_that_is_not_utf8_does_not_stop_symroute() {
    let (ctr, _peer) = two_lab("altname");
    ip_raw(
        &ctr,
        &[
            b"link",
            b"property",
            b"add",
            b"dev",
            b"a1",
            b"altname",
            b"al\xff",
        ],
    );
    apply_status_clean_work(&ctr, 2, "bad altname");
}

#[test]
fn an_interface_name_that_is_not_utf8_is_managed_by_index_and_printed_escaped() {
    let (ctr, peer) = two_lab("badname");
    ok(ctr.veth("a2", &peer, "p2"));
    ok(peer.link_up("p2"));
    ip_raw(&ctr, &[b"link", b"set", b"a2", b"name", b"b\xff"]);
    ip_raw(&ctr, &[b"link", b"set", b"b\xff", b"up"]);
    ip_raw(&ctr, &[b"addr", b"add", b"192.0.2.2/24", b"dev", b"b\xff"]);
    let st = apply_status_clean_work(&ctr, 3, "bad name");
    assert!(
        st.stdout.contains("b\\xff (not UTF-8)"),
        "status does not show the name escaped:\n{}",
        st.stdout
    );
    // It can never be matched by name: the lossy form is refused as a
    // --gateway name, and the raw bytes cannot even be given.
    let cfg = empty_config();
    let path = path_of(&ctr);
    let e = symroute_bounded(&[
        "--config",
        &cfg,
        "apply",
        "--netns",
        &path,
        "--gateway",
        "b\\xff (not UTF-8)=192.0.2.1",
    ]);
    e.expect(2);
    assert_eq!(owned(&ctr), (vec![], vec![]));
}

// ---- F3: SIGHUP and SIGQUIT during apply, any signal during clean ----

/// How long a full apply of `ctr` takes (the quickest of two), leaving it clean.
fn full_apply_time(apply: &[&str], clean: &[&str]) -> Duration {
    let mut full = Duration::MAX;
    for _ in 0..2 {
        let t0 = Instant::now();
        symroute_bounded(apply).expect(0);
        full = full.min(t0.elapsed());
        symroute_bounded(clean).expect(0);
    }
    full
}

#[test]
fn sighup_and_sigquit_during_a_300_interface_apply_roll_back_or_finish() {
    use nix::sys::signal::Signal;
    let (ctr, _peers) = wide_lab(300);
    let cfg = empty_config();
    let path = path_of(&ctr);
    let apply = ["--config", cfg.as_str(), "apply", "--netns", &path];
    let clean = ["--config", cfg.as_str(), "clean", "--netns", &path];
    let status = ["--config", cfg.as_str(), "status", "--netns", &path];
    let nothing = (vec![], vec![]);
    let full = full_apply_time(&apply, &clean);
    let mut outcomes = Vec::new();
    for (sig, name) in [(Signal::SIGHUP, "SIGHUP"), (Signal::SIGQUIT, "SIGQUIT")] {
        for k in [0u32, 1, 2, 4, 6, 8] {
            assert_eq!(owned(&ctr), nothing, "not clean before the run");
            let child = spawn_symroute(&apply);
            // Only once the handlers are in (before that the default action
            // ends the process before it has changed anything).
            wait_catches(&child, sig as i32);
            std::thread::sleep(full * k / 10);
            send(&child, sig);
            let out = wait_bounded(child, name, RUN_BOUND);
            let outcome = if owned(&ctr) == nothing {
                "nothing"
            } else {
                symroute_bounded(&status).expect(0);
                "all"
            };
            match out.code {
                0 => assert_eq!(outcome, "all", "{out:?}"),
                2 => {
                    assert!(
                        out.stderr.contains(&format!("interrupted by {name}")),
                        "{}",
                        out.stderr
                    );
                    if out.stderr.contains("rolled back") {
                        assert_eq!(outcome, "nothing", "{}", out.stderr);
                    } else {
                        assert!(out.stderr.contains("are in place"), "{}", out.stderr);
                        assert_eq!(outcome, "all", "{}", out.stderr);
                    }
                }
                // Killed while printing, after every change was made (the
                // default actions are back once nothing is left to undo).
                c if c == -(sig as i32) => assert_eq!(outcome, "all", "{out:?}"),
                c => panic!(
                    "apply exited {c} after {name} at {k}/10 (full {full:?}): {}",
                    out.stderr
                ),
            }
            outcomes.push(format!("{name} at {k}/10: exit {} -> {outcome}", out.code));
            symroute_bounded(&clean).expect(0);
        }
    }
    eprintln!("full apply {full:?}: {outcomes:#?}");
}

#[test]
fn sigterm_during_a_300_interface_clean_finishes_the_clean() {
    use nix::sys::signal::Signal;
    let (ctr, _peers) = wide_lab(300);
    let cfg = empty_config();
    let path = path_of(&ctr);
    let apply = ["--config", cfg.as_str(), "apply", "--netns", &path];
    let clean = ["--config", cfg.as_str(), "clean", "--netns", &path];
    let full = full_apply_time(&apply, &clean);
    let mut outcomes = Vec::new();
    for (sig, name) in [
        (Signal::SIGTERM, "SIGTERM"),
        (Signal::SIGHUP, "SIGHUP"),
        (Signal::SIGINT, "SIGINT"),
    ] {
        for k in [0u32, 2, 4, 6] {
            symroute_bounded(&apply).expect(0);
            let child = spawn_symroute(&clean);
            wait_catches(&child, sig as i32);
            std::thread::sleep(full * k / 10);
            send(&child, sig);
            let out = wait_bounded(child, name, RUN_BOUND);
            match out.code {
                0 => {}
                2 => assert!(
                    out.stderr.contains(&format!(
                        "interrupted by {name}: finishing the clean before exiting"
                    )),
                    "{}",
                    out.stderr
                ),
                // Killed while printing, after the clean (checked below).
                c if c == -(sig as i32) => {}
                c => panic!(
                    "clean exited {c} after {name} at {k}/10 (full {full:?}): {}",
                    out.stderr
                ),
            }
            assert_eq!(
                owned(&ctr),
                (vec![], vec![]),
                "{name} at {k}/10 left objects: {}",
                out.stderr
            );
            outcomes.push(format!("{name} at {k}/10: exit {}", out.code));
        }
    }
    eprintln!("full apply {full:?}: {outcomes:#?}");
}

// ---- F4: signals stop the lock wait and the DAD wait ----

#[test]
fn a_signal_while_waiting_for_the_lock_exits_2_and_changes_nothing() {
    use nix::sys::signal::Signal;
    let (ctr, _peer) = two_lab("lock-wait");
    let cfg = empty_config();
    let path = path_of(&ctr);
    let held = symroute_linux::lock::lock(ctr.netns(), Duration::from_secs(1)).expect("lock");
    for cmd in ["apply", "clean"] {
        let child = spawn_symroute(&[
            "--config",
            &cfg,
            cmd,
            "--netns",
            &path,
            "--lock-timeout",
            "1h",
        ]);
        wait_catches(&child, libc::SIGTERM);
        send(&child, Signal::SIGTERM);
        let out = wait_bounded(child, cmd, RUN_BOUND);
        out.expect(2);
        assert!(
            out.stderr.contains(
                "interrupted by SIGTERM while waiting for the namespace's lock: nothing changed"
            ),
            "{cmd}: {}",
            out.stderr
        );
        assert_eq!(owned(&ctr), (vec![], vec![]), "{cmd}");
    }
    drop(held);
}

#[test]
fn a_signal_during_the_dad_wait_exits_2_and_changes_nothing() {
    use nix::sys::signal::Signal;
    let (ctr, _peer) = two_lab("dad-wait");
    // DAD that lasts far longer than the test: 100 probes 10 s apart.
    ok(ctr.sysctl("net.ipv6.conf.a0.accept_dad", "1"));
    ok(ctr.sysctl("net.ipv6.conf.a0.dad_transmits", "100"));
    ok(ctr.sysctl("net.ipv6.neigh.a0.retrans_time_ms", "10000"));
    ok(ctr.add_addr_dad("a0", net("2001:db8:5::2/64")));
    assert!(
        !ok(ctr.tentative_addresses()).is_empty(),
        "no tentative address"
    );
    let cfg = empty_config();
    let path = path_of(&ctr);
    let child = spawn_symroute(&[
        "--config",
        &cfg,
        "apply",
        "--netns",
        &path,
        "--dad-wait",
        "600",
    ]);
    wait_catches(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    send(&child, Signal::SIGTERM);
    let out = wait_bounded(child, "apply --dad-wait 600", RUN_BOUND);
    out.expect(2);
    assert!(
        out.stderr
            .contains("interrupted by SIGTERM: rolled back 0 change(s)"),
        "{}",
        out.stderr
    );
    assert_eq!(owned(&ctr), (vec![], vec![]));
}

// ---- ownership on merged main: selectors and route kinds symroute never writes ----

/// `ip ARGS` inside `ns` (text arguments); panics on failure.
fn ip_in(ns: &Ns, args: &str) {
    let words: Vec<&[u8]> = args.split(' ').map(str::as_bytes).collect();
    ip_raw(ns, &words);
}

fn ip_show(ns: &Ns, args: &str) -> String {
    ok(ns.run_cmd("ip", args.split(' ')))
}

#[test]
fn clean_and_apply_leave_tagged_rules_with_selectors_symroute_never_writes() {
    let (ctr, _peer) = two_lab("selectors");
    let from = "from 198.51.100.2 lookup 10000 pref 3000 proto 115";
    let rules = [
        format!("{from} uidrange 100-200"),
        format!("{from} ipproto tcp dport 80"),
        format!("{from} ipproto udp sport 1000-2000"),
        format!("{from} suppress_prefixlength 0"),
        format!("{from} suppress_ifgroup 1"),
        format!("{from} fwmark 0x1/0xff"),
        format!("{from} iif lo"),
        format!("{from} oif lo"),
        format!("{from} tos 0x10"),
        "not from 198.51.100.3 lookup 10000 pref 3000 proto 115".to_string(),
        format!("{from} tun_id 5"),
        "from 198.51.100.2 l3mdev pref 3000 proto 115".to_string(),
        "from 198.51.100.2 goto 3001 pref 3000 proto 115".to_string(),
    ];
    ip_in(&ctr, "rule add from 198.51.100.9 lookup 10000 pref 3001");
    for r in &rules {
        ip_in(&ctr, &format!("-4 rule add {r}"));
    }
    let before = ip_show(&ctr, "-4 rule show pref 3000");
    assert_eq!(before.lines().count(), rules.len(), "{before}");
    let cfg = empty_config();
    let path = path_of(&ctr);
    let cl = symroute_bounded(&["--config", &cfg, "clean", "--netns", &path]);
    cl.expect(0);
    assert_eq!(
        ip_show(&ctr, "-4 rule show pref 3000"),
        before,
        "clean deleted some: {}",
        cl.stdout
    );
    let st = symroute_bounded(&["--config", &cfg, "status", "--netns", &path]);
    assert_eq!(st.code, 1, "{st:?}");
    // apply: the rule of a0 is ambiguous with these; whatever it does, it
    // must not delete any of them.
    let _ = symroute_bounded(&["--config", &cfg, "apply", "--netns", &path]);
    let _ = symroute_bounded(&["--config", &cfg, "clean", "--netns", &path]);
    let after = ip_show(&ctr, "-4 rule show pref 3000");
    for line in before.lines() {
        assert!(after.contains(line), "lost {line:?}:\n{after}");
    }
}

#[test]
fn tagged_throw_anycast_and_nexthop_object_routes_in_the_band_are_findings_never_deleted() {
    let (ctr, _peer) = two_lab("kinds");
    ip_in(&ctr, "-4 route add throw 10.1.0.0/16 table 10000 proto 115");
    ip_in(&ctr, "-6 addr add 2001:db8:7::2/64 dev a1 nodad");
    ip_in(
        &ctr,
        "-6 route add anycast 2001:db8:8::/64 dev a1 table 10000 proto 115",
    );
    ip_in(&ctr, "nexthop add id 5 via 198.51.100.1 dev a0");
    ip_in(
        &ctr,
        "-4 route add 10.2.0.0/16 nhid 5 proto 115 table 10000",
    );
    let show = "route show table 10000";
    let before4 = ip_show(&ctr, &format!("-4 {show}"));
    let before6 = ip_show(&ctr, &format!("-6 {show}"));
    assert!(
        before4.contains("nhid 5") && before6.contains("anycast"),
        "{before4}{before6}"
    );
    let cfg = empty_config();
    let path = path_of(&ctr);
    let st = symroute_bounded(&["--config", &cfg, "status", "--netns", &path]);
    assert_eq!(st.code, 1, "{st:?}");
    for what in ["10.1.0.0/16", "2001:db8:8::/64", "10.2.0.0/16"] {
        assert!(
            st.stdout.contains(what),
            "status does not report {what}:\n{}",
            st.stdout
        );
    }
    symroute_bounded(&["--config", &cfg, "clean", "--netns", &path]).expect(0);
    assert_eq!(ip_show(&ctr, &format!("-4 {show}")), before4);
    assert_eq!(ip_show(&ctr, &format!("-6 {show}")), before6);
    // apply leaves them too (whatever table it picks).
    symroute_bounded(&["--config", &cfg, "apply", "--netns", &path]).expect(0);
    symroute_bounded(&["--config", &cfg, "clean", "--netns", &path]).expect(0);
    assert_eq!(ip_show(&ctr, &format!("-4 {show}")), before4);
    assert_eq!(ip_show(&ctr, &format!("-6 {show}")), before6);
}

// ---- F5, F11: dry-run lines paste as they are, guarded by the inode ----

#[test]
fn dry_run_lines_for_paths_with_control_bytes_and_non_utf8_paste_into_sh() {
    use std::os::unix::ffi::OsStrExt;
    let (ctr, _peer) = two_lab("paste");
    let cfg = empty_config();
    let dir = scratch_dir("own-review-paste");
    for (i, name) in [&b"ns\x1b[31mred"[..], &b"ns\xff\xfe"[..]]
        .iter()
        .enumerate()
    {
        let link = dir.join(std::ffi::OsStr::from_bytes(name));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(ctr.path(), &link).expect("symlink");
        let out = Command::new(&*BIN)
            .arg("--config")
            .arg(&cfg)
            .args(["apply", "--dry-run", "--netns"])
            .arg(&link)
            .stdin(Stdio::null())
            .output()
            .expect("run dry run");
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).expect("dry run output is UTF-8");
        assert!(
            !stdout.contains('\u{1b}') && !stdout.contains('\u{fffd}'),
            "{stdout}"
        );
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains(" && nsenter "))
            .collect();
        assert_eq!(lines.len(), 5, "case {i}:\n{stdout}");
        assert!(!stdout.contains("# cannot print"), "{stdout}");
        for l in &lines {
            let st = Command::new("sh")
                .arg("-c")
                .arg(l)
                .stdin(Stdio::null())
                .output()
                .expect("sh");
            assert!(
                st.status.success(),
                "case {i}: sh -c {l}: {}",
                String::from_utf8_lossy(&st.stderr)
            );
        }
        let st = Command::new(&*BIN)
            .arg("--config")
            .arg(&cfg)
            .args(["status", "--netns"])
            .arg(&link)
            .output()
            .expect("status");
        assert!(
            st.status.success(),
            "case {i}: status after the pasted lines: {st:?}"
        );
        // The guard: the same lines against another namespace at the path do
        // nothing.
        symroute_bounded(&["--config", &cfg, "clean", "--netns", &path_of(&ctr)]).expect(0);
        let other = ok(Ns::new("paste-other"));
        std::fs::remove_file(&link).expect("rm symlink");
        std::os::unix::fs::symlink(other.path(), &link).expect("symlink");
        for l in &lines {
            let st = Command::new("sh").arg("-c").arg(l).output().expect("sh");
            assert!(!st.status.success(), "case {i}: guarded line ran: {l}");
        }
        assert_eq!(owned(&other), (vec![], vec![]));
        assert_eq!(owned(&ctr), (vec![], vec![]));
        std::fs::remove_file(&link).expect("rm symlink");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- F8: a closed stdout, clap errors with --json ----

#[test]
fn a_reader_that_went_away_is_a_quiet_exit_with_the_unchanged_code() {
    let (ctr, _peer) = two_lab("epipe");
    let cfg = empty_config();
    let path = path_of(&ctr);
    for args in [
        vec!["--config", &cfg, "apply", "--netns", &path, "--json"],
        vec!["--config", &cfg, "status", "--netns", &path],
        vec!["--config", &cfg, "clean", "--netns", &path, "--json"],
    ] {
        let mut child = spawn_symroute(&args);
        // The read end closed before anything is written: every write fails
        // with EPIPE.
        drop(child.stdout.take());
        let out = wait_bounded(child, &args.join(" "), RUN_BOUND);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        if args[2] == "apply" {
            assert_eq!(owned(&ctr).0.len(), 2, "apply's changes are in place");
        }
    }
    assert_eq!(owned(&ctr), (vec![], vec![]));
}

#[test]
fn argument_errors_with_json_are_json() {
    let out = symroute_raw(["apply", "--json", "--netns", "/x", "--bogus"]);
    out.expect(2);
    let v = out.json();
    assert_eq!(v["code"], 2, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("--bogus")),
        "{v}"
    );
    let out = symroute_raw([
        "status",
        "--json",
        "--netns",
        "/x",
        "--lock-timeout",
        "1e20",
    ]);
    out.expect(2);
    assert_eq!(out.json()["code"], 2);
    // Without --json, clap's own text on stderr; --help is still help.
    let out = symroute_raw(["apply", "--netns", "/x", "--bogus"]);
    out.expect(2);
    assert!(
        out.stdout.is_empty() && out.stderr.contains("--bogus"),
        "{out:?}"
    );
    symroute_raw(["apply", "--json", "--help"]).expect(0);
}
