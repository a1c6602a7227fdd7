//! The CNI commands without root: ADD, DEL, CHECK and GC driven through
//! `symroute_cni::run_with` against the core's fake kernel
//! (`symroute_testkit::fake::FakeKernel`), reached through a fake of the
//! plugin's namespace access (`symroute_cni::ns`). Everything the real
//! plugin does between its standard input and the kernel runs here: the
//! checks, the plan request, the engine, the state files and the log.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};
use symroute_cni::error::CniError;
use symroute_cni::ns::{Namespace, Namespaces, OpenError};
use symroute_cni::{Env, run_with};
use symroute_core::diff::Op;
use symroute_core::kernel::{Kernel, KernelError, RouteAnswer, RouteQuery};
use symroute_core::model::{Route, RouteType, Rule, Scope, Snapshot};
use symroute_testkit::fake::FakeKernel;
use symroute_testkit::snap::{eth_no_mac, net};

/// One fake namespace's kernel, shared by every handle a command opens.
#[derive(Clone)]
struct Shared(Rc<RefCell<FakeKernel>>);

impl Kernel for Shared {
    fn snapshot(&mut self) -> Result<Snapshot, KernelError> {
        self.0.borrow_mut().snapshot()
    }
    fn execute(&mut self, op: &Op) -> Result<(), KernelError> {
        self.0.borrow_mut().execute(op)
    }
    fn route_get(&mut self, q: &RouteQuery) -> Result<RouteAnswer, KernelError> {
        self.0.borrow_mut().route_get(q)
    }
}

struct FakeNs {
    path: PathBuf,
    id: (u64, u64),
    host: bool,
    kernel: Shared,
}

impl Namespace for FakeNs {
    type Kernel = Shared;
    type Lock<'a> = ();

    fn path(&self) -> &Path {
        &self.path
    }
    fn id(&self) -> (u64, u64) {
        self.id
    }
    fn refuse_host(&self) -> Result<(), CniError> {
        if self.host {
            Err(symroute_cni::ns::host_error(&self.path))
        } else {
            Ok(())
        }
    }
    fn lock(&self, _timeout: Duration) -> Result<(), CniError> {
        Ok(())
    }
    fn kernel(&self) -> Result<Shared, CniError> {
        Ok(self.kernel.clone())
    }
}

/// Namespaces by path; a path not in the map is gone.
#[derive(Default)]
struct FakeNamespaces {
    by_path: RefCell<BTreeMap<PathBuf, (u64, bool, Shared)>>,
}

impl Namespaces for FakeNamespaces {
    type Ns = FakeNs;
    fn open(&self, path: &Path) -> Result<FakeNs, OpenError> {
        let map = self.by_path.borrow();
        let (ino, host, kernel) = map
            .get(path)
            .ok_or_else(|| OpenError::Vanished(format!("{}: gone", path.display())))?;
        Ok(FakeNs {
            path: path.to_path_buf(),
            id: (4, *ino),
            host: *host,
            kernel: kernel.clone(),
        })
    }
}

const POD: &str = "/run/netns/pod";

/// A pod with eth0 (198.51.100.2/24, main's default route via .1), net1
/// (203.0.113.50/24) and net2 (192.0.2.50/24), and a state folder.
struct Lab {
    nss: FakeNamespaces,
    kernel: Rc<RefCell<FakeKernel>>,
    data: tempdir::Dir,
}

mod tempdir {
    /// A scratch folder removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "symroute-cni-fake-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("scratch folder");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let mut k = FakeKernel::with_links(vec![
            eth_no_mac(1, "lo", &[]),
            eth_no_mac(2, "eth0", &["198.51.100.2/24"]),
            eth_no_mac(3, "net1", &["203.0.113.50/24"]),
            eth_no_mac(4, "net2", &["192.0.2.50/24"]),
        ]);
        k.state.links[0].loopback = true;
        k.state.routes.push(Route {
            table: 254,
            dst: net("0.0.0.0/0"),
            gateway: Some("198.51.100.1".parse().expect("gw")),
            oif: 2,
            prefsrc: None,
            scope: Scope::Universe,
            kind: RouteType::UNICAST,
            metric: 0,
            onlink: false,
            protocol: 3,
            multipath: Vec::new(),
        });
        let kernel = Rc::new(RefCell::new(k));
        let nss = FakeNamespaces::default();
        nss.by_path
            .borrow_mut()
            .insert(PathBuf::from(POD), (77, false, Shared(kernel.clone())));
        nss.by_path.borrow_mut().insert(
            PathBuf::from("/proc/1/ns/net"),
            (
                1,
                true,
                Shared(Rc::new(RefCell::new(FakeKernel::with_links(vec![])))),
            ),
        );
        Lab {
            nss,
            kernel,
            data: tempdir::Dir::new(tag),
        }
    }

    fn state(&self) -> Snapshot {
        self.kernel.borrow().state.clone()
    }

    fn calls(&self) -> usize {
        self.kernel.borrow().calls()
    }

    /// The configuration for `ifname`, its prevResult naming the
    /// interface's address and gateway `.1`.
    fn conf(&self, ifname: &str, extra: Value) -> Value {
        let (addr, gw) = match ifname {
            "net1" => ("203.0.113.50/24", "203.0.113.1"),
            _ => ("192.0.2.50/24", "192.0.2.1"),
        };
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": "lan",
            "type": "symroute",
            "dataDir": self.data.0,
            "dadWait": 0,
            "prevResult": {
                "cniVersion": "1.1.0",
                "interfaces": [{"name": ifname, "sandbox": POD}],
                "ips": [{"address": addr, "gateway": gw, "interface": 0}],
            },
        });
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        c
    }

    fn run(&self, command: &str, cid: &str, ifname: &str, netns: &str, conf: &Value) -> Answer {
        let env = Env::new([
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", cid),
            ("CNI_IFNAME", ifname),
            ("CNI_NETNS", netns),
            ("CNI_PATH", "/opt/cni/bin"),
        ]);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let rc = run_with(
            &self.nss,
            &env,
            conf.to_string().as_bytes(),
            &mut out,
            &mut err,
        );
        Answer {
            rc,
            out: String::from_utf8_lossy(&out).into_owned(),
            log: String::from_utf8_lossy(&err).into_owned(),
        }
    }

    fn pod(&self, command: &str, ifname: &str, extra: Value) -> Answer {
        self.run(command, "pod1", ifname, POD, &self.conf(ifname, extra))
    }

    fn state_file(&self, ifname: &str) -> PathBuf {
        self.data.0.join("lan").join(format!("pod1:{ifname}.json"))
    }
}

#[derive(Debug)]
struct Answer {
    rc: u8,
    out: String,
    log: String,
}

impl Answer {
    fn ok(&self) -> &Self {
        assert_eq!(self.rc, 0, "{self:#?}");
        self
    }
    fn code(&self) -> u64 {
        assert_eq!(self.rc, 1, "{self:#?}");
        let v: Value = serde_json::from_str(self.out.trim()).expect("an error object");
        v["code"].as_u64().expect("a code")
    }
    fn msg(&self) -> String {
        let v: Value = serde_json::from_str(self.out.trim()).expect("an error object");
        format!("{} {}", v["msg"], v["details"])
    }
}

fn tagged_rules(s: &Snapshot, protocol: u8) -> Vec<Rule> {
    s.rules
        .iter()
        .filter(|r| r.protocol == protocol)
        .cloned()
        .collect()
}

fn tagged_routes(s: &Snapshot, protocol: u8) -> Vec<Route> {
    s.routes
        .iter()
        .filter(|r| r.protocol == protocol)
        .cloned()
        .collect()
}

#[test]
fn add_uses_its_own_tag_and_a_repeated_add_changes_nothing() {
    let lab = Lab::new("repeat");
    let before = lab.state();
    lab.pod("ADD", "net1", json!({})).ok();
    let after = lab.state();
    assert_ne!(before, after);
    let rules = tagged_rules(&after, 116);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].src, Some(net("203.0.113.50/32")));
    assert!(
        tagged_rules(&after, 115).is_empty(),
        "the host writer's tag is not used"
    );
    assert!(
        tagged_routes(&after, 116)
            .iter()
            .any(|r| r.is_default() && r.table == rules[0].table),
        "{after:#?}"
    );
    let calls = lab.calls();
    let again = lab.pod("ADD", "net1", json!({}));
    again.ok();
    assert_eq!(lab.state(), after, "a repeated ADD changed the namespace");
    assert_eq!(lab.calls(), calls, "a repeated ADD sent changes");
    assert!(again.log.contains("0 change(s)"), "{}", again.log);
    lab.pod("CHECK", "net1", json!({})).ok();
}

#[test]
fn del_removes_everything_and_succeeds_on_a_vanished_namespace() {
    let lab = Lab::new("del");
    let before = lab.state();
    lab.pod("ADD", "net1", json!({})).ok();
    assert!(lab.state_file("net1").is_file());
    let del = lab.pod("DEL", "net1", json!({}));
    del.ok();
    assert_eq!(lab.state(), before, "DEL left something");
    assert!(!lab.state_file("net1").exists());
    // Log lines name the interface, not its index.
    assert!(del.log.contains("dev net1"), "{}", del.log);
    assert!(!del.log.contains("dev if"), "{}", del.log);

    lab.pod("ADD", "net1", json!({})).ok();
    lab.nss.by_path.borrow_mut().remove(Path::new(POD));
    let gone = lab.pod("DEL", "net1", json!({}));
    gone.ok();
    assert!(gone.log.contains("namespace gone"), "{}", gone.log);
    assert!(!lab.state_file("net1").exists(), "the record stayed");
    // A DEL repeated after that is fine too.
    lab.pod("DEL", "net1", json!({})).ok();
}

#[test]
fn failed_add_rolls_back_and_records_nothing() {
    let lab = Lab::new("rollback");
    let before = lab.state();
    // The third change fails: the first two are undone.
    lab.kernel.borrow_mut().fail_at = Some(2);
    let add = lab.pod("ADD", "net1", json!({}));
    assert_eq!(add.code(), 100, "{add:#?}");
    assert!(add.msg().contains("rolled back"), "{}", add.msg());
    assert_eq!(lab.state(), before, "a failed ADD left something");
    assert!(!lab.state_file("net1").exists());
}

#[test]
fn check_detects_a_missing_rule() {
    let lab = Lab::new("check");
    lab.pod("ADD", "net1", json!({})).ok();
    lab.pod("CHECK", "net1", json!({})).ok();
    lab.kernel
        .borrow_mut()
        .state
        .rules
        .retain(|r| r.protocol != 116);
    let check = lab.pod("CHECK", "net1", json!({}));
    assert_eq!(check.code(), 102, "{check:#?}");
    assert!(
        check.msg().contains("missing rule from 203.0.113.50/32"),
        "{}",
        check.msg()
    );
    // ADD repairs it.
    lab.pod("ADD", "net1", json!({})).ok();
    lab.pod("CHECK", "net1", json!({})).ok();
}

#[test]
fn two_attachments_in_one_namespace_never_touch_each_other() {
    let lab = Lab::new("two");
    lab.pod("ADD", "net1", json!({})).ok();
    let one = lab.state();
    let net1_rules = tagged_rules(&one, 116);
    let net1_routes = tagged_routes(&one, 116);
    lab.pod("ADD", "net2", json!({})).ok();
    let both = lab.state();
    for r in &net1_rules {
        assert!(both.rules.contains(r), "ADD net2 removed {r:?}");
    }
    for r in &net1_routes {
        assert!(both.routes.contains(r), "ADD net2 removed {r:?}");
    }
    lab.pod("CHECK", "net1", json!({})).ok();
    lab.pod("CHECK", "net2", json!({})).ok();
    lab.pod("DEL", "net2", json!({})).ok();
    assert_eq!(lab.state(), one, "DEL net2 touched net1's objects");
    lab.pod("CHECK", "net1", json!({})).ok();
}

#[test]
fn rules_only_attachments_may_share_a_table() {
    let lab = Lab::new("shared");
    lab.pod("ADD", "net1", json!({"table": 5001})).ok();
    lab.pod("ADD", "net2", json!({"table": 5001})).ok();
    let rules = tagged_rules(&lab.state(), 116);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules.iter().all(|r| r.table == 5001));
    lab.pod("CHECK", "net1", json!({"table": 5001})).ok();
    lab.pod("DEL", "net2", json!({"table": 5001})).ok();
    lab.pod("CHECK", "net1", json!({"table": 5001})).ok();
    assert_eq!(tagged_rules(&lab.state(), 116).len(), 1);
}

#[test]
fn add_naming_another_attachments_table_is_refused_and_changes_nothing() {
    let lab = Lab::new("steal");
    lab.pod("ADD", "net1", json!({})).ok();
    let table = tagged_rules(&lab.state(), 116)[0].table;
    let before = lab.state();
    let calls = lab.calls();
    let add = lab.pod("ADD", "net2", json!({"table": table}));
    assert_eq!(add.code(), 7, "{add:#?}");
    assert!(
        add.msg().contains(&format!("table {table}")) && add.msg().contains("pod1/net1"),
        "{}",
        add.msg()
    );
    assert_eq!(lab.state(), before);
    assert_eq!(lab.calls(), calls, "a refused ADD sent changes");
    assert!(!lab.state_file("net2").exists());
    lab.pod("CHECK", "net1", json!({})).ok();
}

#[test]
fn gc_removes_only_attachments_not_listed() {
    let lab = Lab::new("gc");
    lab.pod("ADD", "net1", json!({})).ok();
    let one = lab.state();
    lab.pod("ADD", "net2", json!({})).ok();
    let gc = lab.conf(
        "net1",
        json!({"cni.dev/valid-attachments": [{"containerID": "pod1", "ifname": "net1"}]}),
    );
    lab.run("GC", "", "", "", &gc).ok();
    assert_eq!(lab.state(), one, "GC must remove net2's objects only");
    assert!(lab.state_file("net1").is_file());
    assert!(!lab.state_file("net2").exists());
}

/// Issue 7 case 1: a tagged route in the pod's main table (even with the
/// plugin's own tag, through the attachment's link) is not the
/// attachment's: ADD and DEL leave it.
#[test]
fn a_tagged_main_table_route_is_never_deleted() {
    let lab = Lab::new("main");
    let main_route = Route {
        table: 254,
        dst: net("100.64.0.0/10"),
        gateway: Some("203.0.113.1".parse().expect("gw")),
        oif: 3,
        prefsrc: None,
        scope: Scope::Universe,
        kind: RouteType::UNICAST,
        metric: 0,
        onlink: false,
        protocol: 116,
        multipath: Vec::new(),
    };
    lab.kernel
        .borrow_mut()
        .state
        .routes
        .push(main_route.clone());
    lab.pod("ADD", "net1", json!({})).ok();
    assert!(lab.state().routes.contains(&main_route), "ADD deleted it");
    lab.pod("DEL", "net1", json!({})).ok();
    assert!(lab.state().routes.contains(&main_route), "DEL deleted it");
}

/// A record written before the `protocol` field means 115: DEL removes
/// that attachment's 115-tagged objects, with a configuration that says
/// nothing of the protocol.
#[test]
fn a_record_without_protocol_is_cleaned_with_115() {
    let lab = Lab::new("legacy");
    lab.pod("ADD", "net1", json!({"protocol": 115})).ok();
    assert_eq!(tagged_rules(&lab.state(), 115).len(), 1);
    let path = lab.state_file("net1");
    let mut rec: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("record")).expect("JSON");
    assert_eq!(rec["protocol"], 115);
    rec.as_object_mut().expect("object").remove("protocol");
    rec.as_object_mut().expect("object").remove("link");
    std::fs::write(&path, rec.to_string()).expect("rewrite record");
    lab.pod("DEL", "net1", json!({})).ok();
    assert!(
        tagged_rules(&lab.state(), 115).is_empty(),
        "{:#?}",
        lab.state()
    );
    assert!(tagged_routes(&lab.state(), 115).is_empty());
}

#[test]
fn the_host_namespace_is_refused() {
    let lab = Lab::new("host");
    let before = lab.state();
    for command in ["ADD", "CHECK", "DEL"] {
        let a = lab.run(
            command,
            "pod1",
            "net1",
            "/proc/1/ns/net",
            &lab.conf("net1", json!({})),
        );
        assert_eq!(a.code(), 4, "{command}: {a:#?}");
        assert!(
            a.msg().contains("host's own network namespace"),
            "{}",
            a.msg()
        );
    }
    assert_eq!(lab.state(), before);
}

#[test]
fn configuration_errors_are_code_7_and_change_nothing() {
    let lab = Lab::new("conf");
    let before = lab.state();
    for (extra, want) in [
        (
            json!({"dataDir": "relative/state"}),
            "dataDir relative/state",
        ),
        (json!({"protocol": 2}), "protocol"),
        (json!({"table": 254}), "table 254"),
    ] {
        let a = lab.pod("ADD", "net1", extra.clone());
        assert_eq!(a.code(), 7, "{extra}: {a:#?}");
        assert!(a.msg().contains(want), "{extra}: {}", a.msg());
    }
    assert_eq!(lab.state(), before);
    assert_eq!(lab.calls(), 0);
}

/// Issue 7 case 2: protocol numbers of others (kernel, iproute2's
/// rt_protos, routing daemons) are refused with code 7.
#[test]
fn reserved_protocols_are_refused() {
    let lab = Lab::new("proto");
    for p in [9, 11, 12, 16, 42, 99, 186, 192] {
        let a = lab.pod("ADD", "net1", json!({"protocol": p}));
        assert_eq!(a.code(), 7, "protocol {p}: {a:#?}");
    }
    assert_eq!(lab.calls(), 0);
}

#[test]
fn a_prev_result_ip_not_on_the_interface_is_skipped_with_a_log_line() {
    let lab = Lab::new("stray");
    let mut conf = lab.conf("net1", json!({}));
    conf["prevResult"]["ips"]
        .as_array_mut()
        .expect("ips")
        .push(json!({"address": "203.0.113.99/24", "interface": 0}));
    let add = lab.run("ADD", "pod1", "net1", POD, &conf);
    add.ok();
    assert!(
        add.log
            .contains("prevResult IP 203.0.113.99/24 is not on net1: skipped"),
        "{}",
        add.log
    );
    let rules = tagged_rules(&lab.state(), 116);
    assert_eq!(rules.len(), 1, "{rules:?}");
}

/// An interface another writer already manages (a `from ADDR` rule of
/// another tag, here the host writer's 115, to a table of its own) is left
/// alone: ADD succeeds, logs it, records and changes nothing.
#[test]
fn an_interface_managed_by_another_writer_is_left_alone() {
    let lab = Lab::new("other");
    lab.kernel.borrow_mut().state.rules.push(Rule {
        family: symroute_core::model::Family::V4,
        priority: 3000,
        src: Some(net("203.0.113.50/32")),
        table: 10500,
        protocol: 115,
        other_selectors: false,
    });
    let before = lab.state();
    let add = lab.pod("ADD", "net1", json!({}));
    add.ok();
    assert!(
        add.log.contains("net1 is managed by another writer"),
        "{}",
        add.log
    );
    assert_eq!(lab.state(), before);
    assert_eq!(lab.calls(), 0);
    assert!(!lab.state_file("net1").exists());
}
