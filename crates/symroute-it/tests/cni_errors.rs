//! Bad input, table-driven: every malformed environment variable,
//! configuration and prevResult gives the spec's error code and a message
//! naming the problem, as one JSON object on stdout with a non-zero exit,
//! and changes nothing in the namespace or the state folder.

use symroute_it::cni_harness;
use symroute_it::common;

use cni_harness::{Runtime, net, ok};
use common::{assert_same_dump, dump};
use serde_json::{Value, json};
use symroute_testkit::lab::Ns;

struct Case {
    what: &'static str,
    command: &'static str,
    /// Environment changes: (name, Some(value)) sets, (name, None) removes.
    env: Vec<(&'static str, Option<String>)>,
    stdin: String,
    code: u64,
    msg: &'static str,
}

fn conf(extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "lan", "type": "symroute"});
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

#[test]
fn bad_environment_config_and_prev_result() {
    cni_harness::require_root();
    let rt = Runtime::new("errors");
    let pod = ok(Ns::new("errors-pod"));
    ok(pod.veth("net1", &rt.host, "peer1"));
    ok(pod.link_up("net1"));
    ok(rt.host.link_up("peer1"));
    ok(pod.add_addr("net1", net("203.0.113.50/24")));
    let netns = pod.path().display().to_string();
    let data = rt.data_dir();
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": netns}],
        "ips": [{"address": "203.0.113.50/24", "gateway": "203.0.113.1", "interface": 0}]});
    let good = |extra: Value| -> String {
        let mut c = conf(json!({"dataDir": data, "prevResult": prev}));
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c.to_string()
    };
    let with_prev =
        |p: Value| -> String { conf(json!({"dataDir": data, "prevResult": p})).to_string() };
    let regular_file = rt.scratch.path().join("plain-file");
    std::fs::write(&regular_file, "").expect("write");

    let env = |k: &'static str, v: &str| vec![(k, Some(v.to_string()))];
    let unset = |k: &'static str| vec![(k, None)];
    let cases = vec![
        // Environment: code 4.
        Case {
            what: "unknown command",
            command: "FROB",
            env: vec![],
            stdin: good(json!({})),
            code: 4,
            msg: "CNI_COMMAND=FROB: unknown command",
        },
        Case {
            what: "no container id",
            command: "ADD",
            env: unset("CNI_CONTAINERID"),
            stdin: good(json!({})),
            code: 4,
            msg: "CNI_CONTAINERID is not set",
        },
        Case {
            what: "bad container id",
            command: "ADD",
            env: env("CNI_CONTAINERID", "../etc"),
            stdin: good(json!({})),
            code: 4,
            msg: "CNI_CONTAINERID=\"../etc\"",
        },
        Case {
            what: "no ifname",
            command: "ADD",
            env: unset("CNI_IFNAME"),
            stdin: good(json!({})),
            code: 4,
            msg: "CNI_IFNAME is not set",
        },
        Case {
            what: "ifname with a slash",
            command: "ADD",
            env: env("CNI_IFNAME", "net1/x"),
            stdin: good(json!({})),
            code: 4,
            msg: "not an interface name",
        },
        Case {
            what: "ifname too long",
            command: "DEL",
            env: env("CNI_IFNAME", "a-very-long-ifname"),
            stdin: good(json!({})),
            code: 4,
            msg: "not an interface name",
        },
        Case {
            what: "no netns on ADD",
            command: "ADD",
            env: unset("CNI_NETNS"),
            stdin: good(json!({})),
            code: 4,
            msg: "CNI_NETNS is not set",
        },
        Case {
            what: "relative netns",
            command: "ADD",
            env: env("CNI_NETNS", "netns/pod"),
            stdin: good(json!({})),
            code: 4,
            msg: "expected an absolute path",
        },
        Case {
            what: "missing netns on ADD",
            command: "ADD",
            env: env("CNI_NETNS", "/nonexistent/netns"),
            stdin: good(json!({})),
            code: 4,
            msg: "CNI_NETNS=/nonexistent/netns: cannot use it",
        },
        Case {
            what: "netns not a namespace",
            command: "CHECK",
            env: env("CNI_NETNS", regular_file.to_str().expect("utf-8")),
            stdin: good(json!({})),
            code: 4,
            msg: "cannot use it",
        },
        Case {
            // The test process runs in the host's namespace; the plugin
            // runs in the lab's, so its own /proc/self/ns/net is not the
            // host's (the check never falls back to the caller's namespace).
            what: "the host's namespace",
            command: "ADD",
            env: vec![(
                "CNI_NETNS",
                Some(format!("/proc/{}/ns/net", std::process::id())),
            )],
            stdin: good(json!({})),
            code: 4,
            msg: "host's own network namespace",
        },
        Case {
            what: "bad CNI_ARGS",
            command: "ADD",
            env: env("CNI_ARGS", "IgnoreUnknown=1;garbage"),
            stdin: good(json!({})),
            code: 4,
            msg: "\"garbage\" is not KEY=VALUE",
        },
        // Decoding: code 6.
        Case {
            what: "empty input",
            command: "ADD",
            env: vec![],
            stdin: String::new(),
            code: 6,
            msg: "not valid JSON",
        },
        Case {
            what: "not JSON",
            command: "ADD",
            env: vec![],
            stdin: "cniVersion: 1.0.0".into(),
            code: 6,
            msg: "not valid JSON",
        },
        Case {
            what: "truncated JSON",
            command: "DEL",
            env: vec![],
            stdin: "{\"cniVersion\": \"1.0.0\", ".into(),
            code: 6,
            msg: "not valid JSON",
        },
        // Configuration: codes 1 and 7.
        Case {
            what: "an array",
            command: "ADD",
            env: vec![],
            stdin: "[]".into(),
            code: 7,
            msg: "expected a JSON object",
        },
        Case {
            what: "no cniVersion",
            command: "ADD",
            env: vec![],
            stdin: "{\"name\":\"lan\"}".into(),
            code: 7,
            msg: "missing field `cniVersion`",
        },
        Case {
            what: "unknown cniVersion",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"cniVersion": "2.0.0"})),
            code: 1,
            msg: "cniVersion \"2.0.0\" is not supported",
        },
        Case {
            what: "CHECK in 0.3.1",
            command: "CHECK",
            env: vec![],
            stdin: good(json!({"cniVersion": "0.3.1"})),
            code: 1,
            msg: "CHECK needs cniVersion 0.4.0",
        },
        Case {
            what: "GC in 1.0.0",
            command: "GC",
            env: vec![],
            stdin: good(json!({})),
            code: 1,
            msg: "GC needs cniVersion 1.1.0",
        },
        Case {
            what: "GC without the list",
            command: "GC",
            env: vec![],
            stdin: good(json!({"cniVersion": "1.1.0"})),
            code: 7,
            msg: "cni.dev/valid-attachments",
        },
        Case {
            what: "bad name",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"name": "my net"})),
            code: 7,
            msg: "name \"my net\"",
        },
        Case {
            what: "table main",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"table": 254})),
            code: 7,
            msg: "table 254: reserved",
        },
        Case {
            what: "negative table",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"table": -1})),
            code: 7,
            msg: "network configuration: invalid",
        },
        Case {
            what: "table as a string",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"table": "5001"})),
            code: 7,
            msg: "network configuration: invalid",
        },
        Case {
            what: "two IPv4 gateways",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"gateways": ["203.0.113.1", "203.0.113.2"]})),
            code: 7,
            msg: "two IPv4 gateways",
        },
        Case {
            what: "a gateway that is no address",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"gateways": ["router"]})),
            code: 7,
            msg: "network configuration: invalid",
        },
        Case {
            what: "an off-link gateway",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"gateways": ["198.51.100.1"]})),
            code: 7,
            msg: "gateways: 198.51.100.1 is not on net1",
        },
        Case {
            what: "the interface's own address as gateway",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"gateways": ["203.0.113.50"]})),
            code: 7,
            msg: "is not on net1",
        },
        Case {
            what: "empty table band",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"tableBand": "20000-10000"})),
            code: 7,
            msg: "is empty",
        },
        Case {
            what: "priority 0",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"priority": 0})),
            code: 7,
            msg: "rule priority 0",
        },
        Case {
            what: "a kernel protocol",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"protocol": 2})),
            code: 7,
            msg: "protocol 2",
        },
        Case {
            what: "protocol out of range",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"protocol": 300})),
            code: 7,
            msg: "network configuration: invalid",
        },
        Case {
            what: "negative dadWait",
            command: "ADD",
            env: vec![],
            stdin: good(json!({"dadWait": -1})),
            code: 7,
            msg: "dadWait -1",
        },
        // prevResult: code 7.
        Case {
            what: "no prevResult",
            command: "ADD",
            env: vec![],
            stdin: conf(json!({"dataDir": data})).to_string(),
            code: 7,
            msg: "prevResult is missing",
        },
        Case {
            what: "CHECK without prevResult",
            command: "CHECK",
            env: vec![],
            stdin: conf(json!({"dataDir": data})).to_string(),
            code: 7,
            msg: "CHECK needs prevResult",
        },
        Case {
            what: "prevResult a string",
            command: "ADD",
            env: vec![],
            stdin: with_prev(json!("x")),
            code: 7,
            msg: "prevResult: expected a JSON object",
        },
        Case {
            what: "a bad address",
            command: "ADD",
            env: vec![],
            stdin: with_prev(json!({"ips": [{"address": "203.0.113.50"}]})),
            code: 7,
            msg: "prevResult: invalid",
        },
        Case {
            what: "0.3.1 IP without version",
            command: "ADD",
            env: vec![],
            stdin: {
                let mut c: Value = serde_json::from_str(&with_prev(
                    json!({"ips": [{"address": "203.0.113.50/24"}]}),
                ))
                .expect("json");
                c["cniVersion"] = json!("0.3.1");
                c.to_string()
            },
            code: 7,
            msg: "needs \"version\"",
        },
        Case {
            what: "version 6 on an IPv4 address",
            command: "ADD",
            env: vec![],
            stdin: with_prev(json!({"ips": [{"version": "6", "address": "203.0.113.50/24"}]})),
            code: 7,
            msg: "version \"6\" does not match",
        },
        Case {
            what: "interface index out of range",
            command: "ADD",
            env: vec![],
            stdin: with_prev(
                json!({"interfaces": [], "ips": [{"address": "203.0.113.50/24", "interface": 3}]}),
            ),
            code: 7,
            msg: "interface 3 is not an index",
        },
        Case {
            what: "gateway of another family",
            command: "ADD",
            env: vec![],
            stdin: with_prev(
                json!({"ips": [{"address": "203.0.113.50/24", "gateway": "2001:db8::1"}]}),
            ),
            code: 7,
            msg: "not of the same family",
        },
        Case {
            what: "route gateway of another family",
            command: "ADD",
            env: vec![],
            stdin: with_prev(json!({"routes": [{"dst": "0.0.0.0/0", "gw": "fe80::1"}]})),
            code: 7,
            msg: "not of the same family",
        },
        Case {
            what: "route without dst",
            command: "ADD",
            env: vec![],
            stdin: with_prev(json!({"routes": [{"gw": "203.0.113.1"}]})),
            code: 7,
            msg: "missing field `dst`",
        },
        // Planning: symroute's own codes.
        Case {
            what: "no such interface",
            command: "ADD",
            env: env("CNI_IFNAME", "net9"),
            stdin: good(json!({})),
            code: 101,
            msg: "no interface net9 in namespace",
        },
        Case {
            what: "CHECK of a missing interface",
            command: "CHECK",
            env: env("CNI_IFNAME", "net9"),
            stdin: good(json!({})),
            code: 102,
            msg: "no interface net9",
        },
    ];

    let before = dump(&pod);
    let mut failures = Vec::new();
    for c in &cases {
        let mut vars: Vec<(&str, String)> = vec![
            ("CNI_CONTAINERID", "pod1".to_string()),
            ("CNI_NETNS", netns.clone()),
            ("CNI_IFNAME", "net1".to_string()),
        ];
        for (k, v) in &c.env {
            vars.retain(|(name, _)| name != k);
            if let Some(v) = v {
                vars.push((k, v.clone()));
            }
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = rt.exec("symroute", c.command, &vars, c.stdin.as_bytes());
        let mut problems = Vec::new();
        if run.code != 1 {
            problems.push(format!("exit {}", run.code));
        }
        match serde_json::from_str::<Value>(&run.stdout) {
            Ok(v) => {
                if v["code"].as_u64() != Some(c.code) {
                    problems.push(format!("code {} (want {})", v["code"], c.code));
                }
                let msg = format!(
                    "{} {}",
                    v["msg"].as_str().unwrap_or_default(),
                    v["details"].as_str().unwrap_or_default()
                );
                if !msg.contains(c.msg) {
                    problems.push(format!("message {msg:?} lacks {:?}", c.msg));
                }
                if !v["cniVersion"].is_string() {
                    problems.push("no cniVersion".into());
                }
            }
            Err(e) => problems.push(format!(
                "stdout is not one JSON object ({e}): {:?}",
                run.stdout
            )),
        }
        if run.stdout.lines().count() != 1 {
            problems.push("stdout is not exactly one line".into());
        }
        if !run.stderr.contains(&format!("error {}", c.code)) {
            problems.push(format!("stderr lacks the log line: {:?}", run.stderr));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({}): {}",
                c.what,
                c.command,
                problems.join("; ")
            ));
        }
        assert_same_dump(&before, &dump(&pod), c.what);
        assert!(
            std::fs::read_dir(&data).map_or(true, |mut d| d.next().is_none())
                || walk_is_empty(&data),
            "{}: a state file was written",
            c.what
        );
    }
    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn walk_is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |entries| {
        entries
            .flatten()
            .all(|e| e.file_type().is_ok_and(|t| t.is_dir()) && walk_is_empty(&e.path()))
    })
}

/// Without CNI_COMMAND the binary is the command line; the library entry
/// still answers with code 4.
#[test]
fn missing_cni_command_in_process() {
    let env = symroute_cni::Env::new([("CNI_IFNAME", "net1")]);
    let mut out = Vec::new();
    let mut err = Vec::new();
    let rc = symroute_cni::run(&env, b"{\"cniVersion\":\"1.0.0\"}", &mut out, &mut err);
    assert_eq!(rc, 1);
    let v: Value = serde_json::from_slice(&out).expect("JSON error");
    assert_eq!(v["code"], 4);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["msg"], "CNI_COMMAND is not set");
}
