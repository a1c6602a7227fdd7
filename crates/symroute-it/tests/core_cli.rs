//! The `symroute` binary's edges: bad targets and bad gateways give exit 2
//! with a clear message and change nothing; the host's namespace is refused
//! before anything happens; `--dry-run` prints the `ip` commands and changes
//! nothing; config files; man pages, completions and help.
//!
//! Tests that run the binary against a namespace need root and build their
//! own anonymous namespaces. The host's namespace is only ever read, and the
//! refusal test is arranged so that even a missing refusal could not change
//! it (see there).

use symroute_it::common;

use std::os::unix::fs::MetadataExt;

use common::*;
use symroute_core::kernel::Kernel;
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::netlink::NlSocket;
use symroute_linux::netns::{Netns, NetnsError};
use symroute_linux::target::{self, Target};
use symroute_testkit::lab::{SeedLab, SeedOptions};

fn seed(ipv6: bool) -> SeedLab {
    require_root();
    ok(SeedLab::build(SeedOptions { dnat: false, ipv6 }))
}

#[test]
fn bad_targets_exit_2_with_a_clear_message() {
    require_root();
    assert!(
        std::fs::metadata("/etc/hostname").is_ok_and(|m| m.is_file()),
        "this test needs /etc/hostname as an ordinary file"
    );
    let cases = [
        (
            "/nonexistent/symroute-test/netns",
            "network namespace /nonexistent/symroute-test/netns: No such file or directory",
        ),
        ("/etc/hostname", "/etc/hostname is not a network namespace"),
        (
            "/proc/self/ns/uts",
            "/proc/self/ns/uts is not a network namespace",
        ),
    ];
    for (path, expect) in cases {
        for cmd in [
            vec!["apply", "--netns", path],
            vec!["apply", "--netns", path, "--dry-run"],
            vec!["apply", "--netns", path, "--json"],
            vec!["status", "--netns", path],
            vec!["clean", "--netns", path],
            vec!["diagnose", "--netns", path],
        ] {
            let out = symroute(&cmd);
            out.expect(2);
            if cmd.contains(&"--json") {
                // Errors under --json are JSON on stdout (issue 7, case 11).
                let v = out.json();
                assert_eq!(v["code"], 2, "{cmd:?}: {v}");
                assert!(
                    v["error"].as_str().is_some_and(|e| e.contains(expect)),
                    "{cmd:?}: {v}"
                );
                assert!(out.stderr.is_empty(), "{cmd:?}: {}", out.stderr);
                continue;
            }
            assert!(
                out.stderr.starts_with("symroute: ") && out.stderr.contains(expect),
                "{cmd:?}: {}",
                out.stderr
            );
            assert!(out.stdout.is_empty(), "{cmd:?}: {}", out.stdout);
        }
    }
    // A process that does not exist.
    let out = symroute(["status", "--pid", "4294967295"]);
    out.expect(2);
    assert!(
        out.stderr.contains("/proc/4294967295/ns/net"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_gateways_exit_2_with_a_clear_message_and_change_nothing() {
    let lab = seed(false);
    let ctr = path_of(&lab.ctr);
    let before = dump(&lab.ctr);
    let cases = [
        (
            "eth9=172.18.0.1",
            "no interface eth9 in this namespace (--gateway eth9=172.18.0.1)",
        ),
        ("eth1=2001:db8:18::1", "eth1 has no global IPv6 address"),
        (
            "eth1=10.9.9.9",
            "10.9.9.9 is outside eth1's prefixes (172.18.0.0/16)",
        ),
        ("eth1=172.18.0.2", "172.18.0.2 is eth1's own address"),
    ];
    for (gw, expect) in cases {
        for cmd in [
            vec!["apply", "--netns", &ctr, "--gateway", gw],
            vec!["apply", "--netns", &ctr, "--gateway", gw, "--json"],
            vec!["apply", "--netns", &ctr, "--gateway", gw, "--dry-run"],
            vec!["status", "--netns", &ctr, "--gateway", gw],
        ] {
            let out = symroute(&cmd);
            out.expect(2);
            if cmd.contains(&"--json") {
                // Errors under --json are JSON on stdout.
                let v = out.json();
                assert!(
                    v["error"].as_str().is_some_and(|e| e.contains(expect)),
                    "{cmd:?}: {v}"
                );
            } else {
                assert!(out.stderr.contains(expect), "{cmd:?}: {}", out.stderr);
                assert!(out.stdout.is_empty(), "{cmd:?}: {}", out.stdout);
            }
            assert_same_dump(&before, &dump(&lab.ctr), &format!("{cmd:?}"));
        }
    }
    // Malformed: rejected by the command line parser, also exit 2.
    for (gw, expect) in [
        ("eth1", "expected IFNAME=ADDRESS"),
        ("eth1=gateway", "is not an IP address"),
        ("=172.18.0.1", "empty interface name"),
    ] {
        let out = symroute(["apply", "--netns", &ctr, "--gateway", gw]);
        out.expect(2);
        assert!(out.stderr.contains(expect), "{gw}: {}", out.stderr);
    }
    // Two IPv4 gateways for one interface.
    let out = symroute([
        "apply",
        "--netns",
        &ctr,
        "--gateway",
        "eth1=172.18.0.1",
        "--gateway",
        "eth1=172.18.0.254",
    ]);
    out.expect(2);
    assert!(
        out.stderr.contains("two IPv4 gateways given"),
        "{}",
        out.stderr
    );
    assert_same_dump(&before, &dump(&lab.ctr), "bad gateways");
    assert_eq!(owned(&lab.ctr), (vec![], vec![]));
}

fn ns_id(path: &str) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {path}: {e}"));
    (m.dev(), m.ino())
}

/// Our own namespace's objects carrying protocol `tag`, read without
/// changing anything.
fn own_objects_with(tag: u8) -> (usize, usize) {
    let sock = NlSocket::new().unwrap_or_else(|e| panic!("netlink socket: {e}"));
    let snap = NetlinkKernel::new(sock)
        .snapshot()
        .unwrap_or_else(|e| panic!("read our own rules and routes: {e}"));
    (
        snap.rules.iter().filter(|r| r.protocol == tag).count(),
        snap.routes.iter().filter(|r| r.protocol == tag).count(),
    )
}

/// The binary must refuse to change the host's namespace, named by `--pid 1`
/// or by our own `/proc/PID/ns/net` (the tests run in the host's namespace).
///
/// Safety: a refusal that is missing must not turn into a change of the host.
/// Every run therefore also carries (1) a protocol tag that no object of the
/// namespace carries (checked first), so a `clean` that got past the refusal
/// would find nothing to remove, and (2) for `apply`, a gateway hint naming
/// an interface that cannot exist (longer than IFNAMSIZ), so an apply that
/// got past the refusal would stop at planning, before its first change. Dry
/// runs are not tried against the host at all.
///
/// Where PID 1's namespace cannot be read (some sandboxes hide it, even from
/// root), symroute takes its own namespace as the host's; `--pid 1` then
/// fails to open, which is exit 2 as well.
#[test]
fn host_namespace_is_refused_with_exit_2_before_anything_changes() {
    require_root();
    let own = format!("/proc/{}/ns/net", std::process::id());
    let pid1_readable = std::fs::metadata("/proc/1/ns/net").is_ok();
    if pid1_readable {
        assert_eq!(
            ns_id(&own),
            ns_id("/proc/1/ns/net"),
            "precondition: the tests must run in the host's network namespace (that of PID 1)"
        );
    }
    let ours = Netns::open(&own).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ours.is_host().unwrap_or_else(|e| panic!("{e}")),
        "precondition: symroute must see the tests' namespace as the host's"
    );

    // The library refuses without opening anything but the namespace file.
    for t in [Target::Pid(1), Target::Netns(own.clone().into())] {
        match target::open(&t, true, false) {
            Err(NetnsError::HostNamespace { path, .. }) => assert_eq!(path, t.path()),
            Err(NetnsError::Open { path, source }) if !pid1_readable && t == Target::Pid(1) => {
                assert_eq!(path, t.path());
                assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
            }
            Err(e) => panic!("{t:?}: expected a host namespace refusal, got {e}"),
            Ok(_) => panic!("{t:?}: opened the host's namespace for change"),
        }
    }

    let tag = (200..=250u8)
        .find(|&p| own_objects_with(p) == (0, 0))
        .expect("a protocol number 200-250 that the host's rules and routes do not use");
    let tag_text = tag.to_string();
    let default_tag_before = own_objects_with(TAG);
    let impossible = "no-such-interface-anywhere=192.0.2.1";

    for (target, refused) in [
        (vec!["--pid", "1"], pid1_readable),
        (vec!["--netns", own.as_str()], true),
    ] {
        let mut apply = vec![
            "--protocol",
            &tag_text,
            "--table-band",
            "60000-60009",
            "apply",
        ];
        apply.extend(&target);
        apply.extend(["--gateway", impossible]);
        let mut clean = vec!["--protocol", &tag_text, "clean"];
        clean.extend(&target);
        for cmd in [apply, clean] {
            let out = symroute(&cmd);
            out.expect(2);
            if refused {
                assert!(
                    out.stderr.contains("is the host's own network namespace")
                        && out.stderr.contains("refusing to change the host's routing")
                        && out.stderr.contains("--allow-host-netns"),
                    "{cmd:?}: {}",
                    out.stderr
                );
            } else {
                assert!(
                    out.stderr
                        .contains("network namespace /proc/1/ns/net: Permission denied"),
                    "{cmd:?}: {}",
                    out.stderr
                );
            }
            assert!(out.stdout.is_empty(), "{cmd:?}: {}", out.stdout);
        }
    }
    assert_eq!(own_objects_with(tag), (0, 0), "the host changed");
    assert_eq!(
        own_objects_with(TAG),
        default_tag_before,
        "the host changed"
    );
}

#[test]
fn dry_run_prints_ip_rule_add_commands_changes_nothing_and_the_commands_give_the_plan() {
    let lab = seed(true);
    let ctr = path_of(&lab.ctr);
    let gws = ["--gateway", "eth1=172.18.0.1", "--gateway", "eth1=fe80::1"];
    let before = dump(&lab.ctr);

    let mut args = vec!["apply", "--netns", ctr.as_str(), "--dry-run"];
    args.extend(gws);
    let out = symroute(&args);
    out.expect(0);
    assert_same_dump(&before, &dump(&lab.ctr), "dry run");
    assert!(out.stdout.contains("plan: 12 change(s):"), "{}", out.stdout);
    let prefix = format!("nsenter --net={ctr} ip ");
    let commands: Vec<&str> = out
        .stdout
        .lines()
        // Each line: `test "$(stat -Lc %i PATH)" = INODE && nsenter ...`.
        .filter_map(|l| l.split_once(" && ").map(|(_, c)| c))
        .filter(|c| c.starts_with("nsenter "))
        .collect();
    assert_eq!(commands.len(), 12, "{}", out.stdout);
    assert!(
        commands.iter().all(|c| c.starts_with(&prefix)),
        "{}",
        out.stdout
    );
    let rules: Vec<&&str> = commands
        .iter()
        .filter(|c| c.contains(" rule add "))
        .collect();
    assert_eq!(rules.len(), 4, "{}", out.stdout);
    for (flag, from) in [
        ("-4", "172.18.0.2/32"),
        ("-4", "172.19.0.4/32"),
        ("-6", "2001:db8:18::2/128"),
        ("-6", "2001:db8:19::4/128"),
    ] {
        let want = format!("{prefix}{flag} rule add from {from} lookup ");
        assert!(
            rules
                .iter()
                .any(|c| c.starts_with(&want) && c.ends_with(" priority 3000 protocol 115")),
            "no `{want}... priority 3000 protocol 115`:\n{}",
            out.stdout
        );
    }
    assert!(
        commands
            .iter()
            .any(|c| c.contains(" -6 route add default via fe80::1 dev eth1 table ")),
        "{}",
        out.stdout
    );

    // JSON dry run: the same operations, still nothing changed.
    let mut args = vec!["apply", "--netns", ctr.as_str(), "--dry-run", "--json"];
    args.extend(gws);
    let out = symroute(&args);
    out.expect(0);
    let rep = out.json();
    assert_eq!(rep["dry_run"], true);
    assert_eq!(len_of(&rep, "ops"), 12, "{rep}");
    assert_same_dump(&before, &dump(&lab.ctr), "JSON dry run");

    // The printed commands are the plan: run them (inside the lab namespace,
    // never through the printed nsenter) and symroute finds nothing to do.
    for c in &commands {
        let ip_args = c.strip_prefix(&prefix).expect("checked above");
        ok(lab.ctr.run_cmd("ip", ip_args.split_whitespace()));
    }
    let mut args = vec!["status", "--netns", ctr.as_str()];
    args.extend(gws);
    symroute(&args).expect(0);
    let mut args = vec!["apply", "--netns", ctr.as_str(), "--dry-run"];
    args.extend(gws);
    let out = symroute(&args);
    out.expect(0);
    assert!(
        out.stdout.contains("plan: nothing to change"),
        "{}",
        out.stdout
    );
}

#[test]
fn config_file_sets_table_band_and_priority() {
    let lab = seed(false);
    let ctr = path_of(&lab.ctr);
    let dir = scratch_dir("config-ok");
    let config = dir.join("symroute.toml");
    std::fs::write(&config, "table_band = \"20000-20009\"\npriority = 1234\n")
        .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
    let config = config.display().to_string();

    let out = symroute_raw([
        "--config",
        &config,
        "apply",
        "--netns",
        &ctr,
        "--gateway",
        "eth1=172.18.0.1",
        "--json",
    ]);
    out.expect(0);
    let rep = out.json();
    assert_eq!(plan_table(&rep["plan"], "eth0"), 20000, "{rep}");
    assert_eq!(plan_table(&rep["plan"], "eth1"), 20001, "{rep}");
    let (rules, routes) = owned(&lab.ctr);
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert!(rules.iter().all(|r| r.priority == 1234), "{rules:#?}");
    let tables: std::collections::BTreeSet<u32> = rules
        .iter()
        .map(|r| r.table)
        .chain(routes.iter().map(|r| r.table))
        .collect();
    assert_eq!(tables, [20000, 20001].into(), "{rules:#?} {routes:#?}");

    // The same config sees it in sync; the defaults do not.
    symroute_raw([
        "--config",
        &config,
        "status",
        "--netns",
        &ctr,
        "--gateway",
        "eth1=172.18.0.1",
    ])
    .expect(0);
    symroute(["status", "--netns", &ctr, "--gateway", "eth1=172.18.0.1"]).expect(1);
    // A command-line flag overrides the file.
    let out = symroute_raw([
        "--config",
        &config,
        "--priority",
        "1235",
        "apply",
        "--netns",
        &ctr,
        "--gateway",
        "eth1=172.18.0.1",
        "--dry-run",
        "--json",
    ]);
    out.expect(0);
    let rep = out.json();
    assert!(
        rep["plan"]["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .all(|r| r["priority"] == 1235),
        "{rep}"
    );
    symroute_raw(["--config", &config, "clean", "--netns", &ctr]).expect(0);
    assert_eq!(owned(&lab.ctr), (vec![], vec![]));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_config_file_exits_2_naming_the_file() {
    let lab = seed(false);
    let ctr = path_of(&lab.ctr);
    let before = dump(&lab.ctr);
    let dir = scratch_dir("config-bad");
    let cases = [
        ("unknown-key.toml", "tables = 3\n", "unknown field"),
        ("not-toml.toml", "table_band = 20000-\n", ""),
        (
            "bad-band.toml",
            "table_band = \"20000\"\n",
            "expected START-END",
        ),
        (
            "reserved.toml",
            "table_band = \"250-260\"\n",
            "reserved table",
        ),
        ("priority.toml", "priority = 0\n", "rule priority 0"),
        ("protocol.toml", "protocol = 2\n", "protocol 2"),
    ];
    for (name, text, expect) in cases {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        let file = file.display().to_string();
        for cmd in ["apply", "status", "clean"] {
            let out = symroute_raw(["--config", &file, cmd, "--netns", &ctr]);
            out.expect(2);
            assert!(
                out.stderr.contains(&file) && out.stderr.contains(expect),
                "{name} ({cmd}): {}",
                out.stderr
            );
        }
    }
    let missing = dir.join("missing.toml").display().to_string();
    let out = symroute_raw(["--config", &missing, "apply", "--netns", &ctr]);
    out.expect(2);
    assert!(
        out.stderr
            .contains(&format!("config file {missing}: No such file or directory")),
        "{}",
        out.stderr
    );
    assert_same_dump(&before, &dump(&lab.ctr), "bad config files");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn man_writes_symroute_1_and_a_page_per_command() {
    let dir = scratch_dir("man");
    let out_dir = dir.join("man1");
    let out = symroute_raw(["man", &out_dir.display().to_string()]);
    out.expect(0);
    for page in [
        "symroute.1",
        "symroute-apply.1",
        "symroute-status.1",
        "symroute-clean.1",
        "symroute-diagnose.1",
        "symroute-demo.1",
        "symroute-completions.1",
        "symroute-man.1",
    ] {
        let path = out_dir.join(page);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("man page {}: {e}", path.display()));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let apply = std::fs::read_to_string(out_dir.join("symroute-apply.1")).expect("read");
    assert!(apply.contains("gateway"), "{apply}");
    let main = std::fs::read_to_string(out_dir.join("symroute.1")).expect("read");
    assert!(main.contains("diagnose"), "{main}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn completions_bash_prints_a_script_mentioning_diagnose() {
    let out = symroute_raw(["completions", "bash"]);
    out.expect(0);
    assert!(out.stdout.contains("diagnose"), "{}", out.stdout);
    assert!(out.stdout.contains("complete "), "{}", out.stdout);
    assert!(out.stdout.contains("--gateway"), "{}", out.stdout);
}

#[test]
fn help_of_every_command_contains_an_example() {
    let mut cmds: Vec<Vec<&str>> = vec![vec!["--help"]];
    for c in [
        "apply",
        "status",
        "clean",
        "diagnose",
        "demo",
        "completions",
        "man",
    ] {
        cmds.push(vec![c, "--help"]);
    }
    for cmd in cmds {
        let out = symroute_raw(&cmd);
        out.expect(0);
        assert!(out.stdout.contains("Example"), "{cmd:?}: {}", out.stdout);
    }
}
