//! Proof of the Docker harness (`tests/support/common/docker.rs`): a real dockerd
//! starts inside a lab namespace and leaves nothing behind, on a clean stop,
//! after a crash and on a panic; containers serve TCP; and the two failing
//! topologies of lab recipe C fail for real before `symroute apply` and work
//! after it.
//!
//! Needs root and Debian's docker.io and busybox-static (scripts/test
//! installs them); every test fails loudly, never skips, without them. The
//! tests share dockerd's cost through `DOCKER_SLOT`: one lab at a time.

use symroute_it::common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{PoisonError, mpsc};
use std::time::{Duration, Instant};

use common::docker::macvlan::{self, MacvlanLab};
use common::docker::routed::{self, RoutedLab};
use common::docker::{
    DEFAULT_BANNER, DOCKER_SLOT, DockerLab, ProcInfo, SERVICE_PORT, cgroup_exists, mounts_under,
    processes_referencing, reap_lab_folder, service, set_rp_filter,
};
use common::{assert_blocked, assert_connects, require_root, symroute};

/// (device, inode) of a namespace file.
fn ns_id(path: impl AsRef<Path>) -> (u64, u64) {
    let path = path.as_ref();
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.dev(), m.ino())
}

fn lab_ns_id(lab: &DockerLab) -> (u64, u64) {
    lab.ns()
        .netns()
        .id()
        .unwrap_or_else(|e| panic!("id of the docker host namespace: {e}"))
}

/// What the test process's own network namespace (the host's) looks like,
/// read without changing anything: links, IPv4 routes, firewall rules
/// (counters left out), a few sysctls Docker would set.
#[derive(Debug, PartialEq, Eq)]
struct HostNet {
    links: BTreeSet<String>,
    routes: String,
    iptables: String,
    sysctls: Vec<(String, String)>,
}

fn host_net() -> HostNet {
    let links = std::fs::read_dir("/sys/class/net")
        .expect("list /sys/class/net")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let routes = std::fs::read_to_string("/proc/net/route").expect("read /proc/net/route");
    let mut iptables = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let out = Command::new(tool)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {tool} (install iptables): {e}"));
        assert!(out.status.success(), "{tool} failed: {out:?}");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with('#') {
                continue;
            }
            // ":FORWARD ACCEPT [12:345]": the counters move on their own.
            let line = match line.find(" [") {
                Some(at) if line.starts_with(':') => &line[..at],
                _ => line,
            };
            iptables.push_str(line);
            iptables.push('\n');
        }
    }
    let sysctls = [
        "net/ipv4/ip_forward",
        "net/ipv4/conf/all/rp_filter",
        "net/ipv4/conf/all/forwarding",
        "net/bridge/bridge-nf-call-iptables",
        "net/ipv6/conf/all/forwarding",
    ]
    .iter()
    .map(|k| {
        let v = std::fs::read_to_string(Path::new("/proc/sys").join(k))
            .unwrap_or_else(|e| format!("unreadable: {e}"));
        (k.to_string(), v.trim().to_string())
    })
    .collect();
    HostNet {
        links,
        routes,
        iptables,
        sysctls,
    }
}

fn describe(procs: &[ProcInfo]) -> String {
    procs
        .iter()
        .map(|p| format!("{} {}", p.pid, p.cmdline))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// Everything a stopped lab must have left: no process naming its folder,
/// dockerd gone, no mount under the folder, no folder, no cgroup.
fn assert_gone(dir: &Path, dockerd: u32, cgroup: &str, context: &str) {
    let left = processes_referencing(dir);
    assert!(
        left.is_empty(),
        "{context}: processes still name {}:\n  {}",
        dir.display(),
        describe(&left)
    );
    // Our own child, reaped by the teardown: its pid is free (a recycled pid
    // would belong to some process not naming the folder).
    let cmdline = std::fs::read(format!("/proc/{dockerd}/cmdline")).unwrap_or_default();
    assert!(
        !cmdline
            .windows(dir.as_os_str().len())
            .any(|w| w == dir.as_os_str().as_encoded_bytes()),
        "{context}: dockerd (pid {dockerd}) still runs"
    );
    let mounts = mounts_under(dir);
    assert!(mounts.is_empty(), "{context}: still mounted: {mounts:?}");
    assert!(!dir.exists(), "{context}: {} still exists", dir.display());
    assert!(
        !cgroup_exists(cgroup),
        "{context}: cgroup {cgroup} still exists"
    );
}

#[test]
fn dockerd_runs_in_its_own_namespace_and_stops_without_leftovers() {
    require_root();
    let host_before = host_net();
    let lab = DockerLab::start();
    let dir = lab.dir().to_path_buf();
    let pid = lab.pid();
    let cgroup = lab.cgroup_parent();

    assert_eq!(
        ns_id(format!("/proc/{pid}/ns/net")),
        lab_ns_id(&lab),
        "dockerd must run in the docker host namespace"
    );
    assert_ne!(
        ns_id("/proc/self/ns/net"),
        lab_ns_id(&lab),
        "the docker host namespace must not be the test's own"
    );
    assert_eq!(
        lab.docker_ok(["version", "--format", "{{.Server.APIVersion}}"]),
        "1.41",
        "Debian's dockerd 20.10 speaks API 1.41"
    );
    assert_eq!(
        PathBuf::from(lab.docker_ok(["info", "--format", "{{.DockerRootDir}}"])),
        dir.join("data")
    );
    // The managed containerd: in the same namespace, state and root in the
    // lab's folder.
    let procs = processes_referencing(&dir);
    let containerd = procs
        .iter()
        .find(|p| p.cmdline.starts_with("containerd "))
        .unwrap_or_else(|| panic!("no managed containerd among:\n  {}", describe(&procs)));
    assert_eq!(
        ns_id(format!("/proc/{}/ns/net", containerd.pid)),
        lab_ns_id(&lab)
    );
    let toml = std::fs::read_to_string(dir.join("exec/containerd/containerd.toml"))
        .expect("managed containerd's config");
    for key in ["root", "state"] {
        let line = toml
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("containerd.toml has no {key}:\n{toml}"));
        assert!(
            line.contains(&dir.display().to_string()),
            "containerd's {key} is outside the lab: {line}"
        );
    }
    // Docker's bridge and firewall live in the docker host namespace.
    lab.ns()
        .link_index("docker0")
        .unwrap_or_else(|e| panic!("docker0 in the docker host: {e}"));
    let rules = common::ok(lab.ns().run_cmd("iptables", ["-w", "-S", "FORWARD"]));
    assert!(
        rules.contains("-j DOCKER-USER"),
        "Docker's FORWARD rules are not in the docker host namespace:\n{rules}"
    );
    // A container, so the stop has mounts, a shim and a netns to clean.
    let id = lab.run_server("web", None, &[]);
    assert!(
        !mounts_under(&dir).is_empty(),
        "a running container has mounts under the lab"
    );
    assert!(
        std::fs::read_to_string(format!("/proc/{}/cgroup", lab.inspect_pid(&id)))
            .expect("container's cgroups")
            .contains(&format!("{cgroup}/{id}")),
        "the container's cgroups are under the lab's parent {cgroup}"
    );

    let report = lab.stop();
    assert!(
        report.problems.is_empty(),
        "teardown problems: {:?}",
        report.problems
    );
    assert!(
        report.killed.is_empty(),
        "a clean stop must leave no process to kill, but killed: {:?}",
        report.killed
    );
    assert_gone(&dir, pid, &cgroup, "after a clean stop");
    assert_eq!(
        host_net(),
        host_before,
        "the host's own namespace changed while dockerd ran"
    );
}

#[test]
fn containers_serve_tcp_in_the_docker_host_namespace() {
    require_root();
    let lab = DockerLab::start();
    let web = lab.run_server("web", Some("hello from web"), &[]);
    let plain = lab.run_server("plain", None, &[]);
    let web_ip = lab.container_ip(&web, "bridge");
    let plain_ip = lab.container_ip(&plain, "bridge");
    assert_ne!(web_ip, plain_ip);

    // Many sequential connections: the server keeps answering.
    for round in 0..20 {
        assert_connects(
            lab.ns(),
            service(web_ip),
            "hello from web",
            &format!("docker host -> web, connection {round}"),
        );
    }
    assert_connects(
        lab.ns(),
        service(plain_ip),
        DEFAULT_BANNER,
        "docker host -> plain",
    );

    // The container's namespace, found through its pid.
    let path = lab.container_netns_path(&web);
    assert_eq!(
        path,
        PathBuf::from(format!("/proc/{}/ns/net", lab.inspect_pid(&web)))
    );
    let ctr = ns_id(&path);
    assert_ne!(ctr, lab_ns_id(&lab));
    assert_ne!(ctr, ns_id("/proc/self/ns/net"));
    assert_eq!(lab.container_iface(&web, "bridge"), "eth0");
    let addrs = lab
        .exec(&web, &["ip", "addr"])
        .expect("docker exec ip addr");
    assert!(
        addrs.contains(&format!("inet {web_ip}/")),
        "web's own view lacks {web_ip}:\n{addrs}"
    );

    // rm -f: gone from Docker, and its address no longer answers.
    lab.rm_f(&web).expect("docker rm -f web");
    assert!(lab.docker(["inspect", &web]).is_err(), "web still exists");
    assert!(
        lab.ns()
            .tcp_probe(service(web_ip), common::FAIL_TIMEOUT)
            .is_err(),
        "{web_ip}:{SERVICE_PORT} still answers after docker rm -f"
    );
    assert_connects(
        lab.ns(),
        service(plain_ip),
        DEFAULT_BANNER,
        "plain after rm of web",
    );
}

#[test]
fn two_labs_run_side_by_side_and_stop_independently() {
    require_root();
    let first = DockerLab::start();
    let second = DockerLab::builder().unserialized().start();
    assert_ne!(first.dir(), second.dir());
    assert_ne!(first.socket_path(), second.socket_path());
    assert_ne!(lab_ns_id(&first), lab_ns_id(&second));

    // The same container name in each daemon, each on its own docker0.
    let a = first.run_server("web", Some("first"), &[]);
    let b = second.run_server("web", Some("second"), &[]);
    let a_ip = first.container_ip(&a, "bridge");
    let a_pid = first.inspect_pid(&a);
    let b_ip = second.container_ip(&b, "bridge");
    assert_connects(first.ns(), service(a_ip), "first", "first lab");
    assert_connects(second.ns(), service(b_ip), "second", "second lab");

    let (dir, pid, cgroup) = (
        second.dir().to_path_buf(),
        second.pid(),
        second.cgroup_parent(),
    );
    let report = second.stop();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.killed.is_empty(), "{:?}", report.killed);
    assert_gone(&dir, pid, &cgroup, "the second lab");

    // The first lab did not notice.
    first.ping().expect("first dockerd still answers");
    assert_eq!(
        first.inspect_pid(&a),
        a_pid,
        "the first lab's container was restarted"
    );
    assert_connects(
        first.ns(),
        service(a_ip),
        "first",
        "first lab after the second stopped",
    );
}

#[test]
fn teardown_after_a_dockerd_crash_kills_only_the_lab() {
    require_root();
    let mut lab = DockerLab::start();
    let id = lab.run_server("web", None, &[]);
    let ctr_pid = lab.inspect_pid(&id);
    let (dir, pid, cgroup) = (lab.dir().to_path_buf(), lab.pid(), lab.cgroup_parent());
    // A process in the docker host namespace that is not dockerd's: it must
    // survive the teardown.
    let mut bystander = Bystander(
        lab.ns()
            .command("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sleep in the docker host"),
    );

    lab.kill_dockerd();
    let orphans = processes_referencing(&dir);
    assert!(
        orphans
            .iter()
            .any(|p| p.cmdline.contains("containerd-shim")),
        "the crash should leave the shim running (nothing left to clean otherwise):\n  {}",
        describe(&orphans)
    );
    assert!(Path::new(&format!("/proc/{ctr_pid}")).exists());

    let report = lab.stop();
    eprintln!("teardown after the crash: {report:#?}");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(
        report.killed.iter().any(|k| k.contains("containerd-shim")),
        "the shim was not killed: {:?}",
        report.killed
    );
    assert!(
        report
            .killed
            .iter()
            .any(|k| k.starts_with(&format!("{ctr_pid} "))),
        "the container's process was not killed: {:?}",
        report.killed
    );
    for socket in &report.removed_sockets {
        assert!(!socket.exists(), "{} still exists", socket.display());
    }
    assert_gone(&dir, pid, &cgroup, "after a crash");

    assert!(
        bystander
            .0
            .try_wait()
            .expect("poll the bystander")
            .is_none(),
        "the teardown killed a process that was not the lab's"
    );
}

/// A child process of the test, killed and reaped when dropped (also when
/// the test fails).
struct Bystander(std::process::Child);

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn teardown_runs_when_a_test_panics() {
    require_root();
    let mut seen: Option<(PathBuf, u32, String)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = DockerLab::start();
        lab.run_server("web", None, &[]);
        seen = Some((lab.dir().to_path_buf(), lab.pid(), lab.cgroup_parent()));
        panic!("deliberate failure with a running container");
    }));
    assert!(result.is_err(), "the closure must have panicked");
    let (dir, pid, cgroup) = seen.expect("the lab started");
    assert_gone(&dir, pid, &cgroup, "after a panic");
    // The slot is usable again (poisoned, not held).
    let again = DockerLab::start();
    again.ping().expect("a lab after a panicked one");
}

/// Set for the helper process of
/// `dockerd_stops_when_the_test_process_is_killed`.
const ORPHAN_HELPER_ENV: &str = "SYMROUTE_DOCKER_ORPHAN_HELPER";
/// Precedes the helper's report: `<lab folder> <dockerd pid> <container pid>`.
const ORPHAN_MARK: &str = "orphan-lab: ";

/// Not a test: the process that `dockerd_stops_when_the_test_process_is_killed`
/// starts and kills. Does nothing without its environment variable.
#[test]
#[ignore = "helper process of dockerd_stops_when_the_test_process_is_killed"]
fn orphan_helper() {
    if std::env::var_os(ORPHAN_HELPER_ENV).is_none() {
        return;
    }
    let lab = DockerLab::builder().unserialized().start();
    let id = lab.run_server("web", None, &[]);
    println!(
        "{ORPHAN_MARK}{} {} {}",
        lab.dir().display(),
        lab.pid(),
        lab.inspect_pid(&id)
    );
    // Killed long before this ends.
    std::thread::sleep(Duration::from_secs(300));
}

/// Leftovers of a lab whose test process died: reaped when dropped, so a
/// failing test leaks nothing either.
struct Orphaned(PathBuf);

impl Drop for Orphaned {
    fn drop(&mut self) {
        let report = reap_lab_folder(&self.0);
        if !report.killed.is_empty() || !report.problems.is_empty() {
            eprintln!("reaped orphaned lab {}: {report:#?}", self.0.display());
        }
    }
}

/// Wait up to `bound` for `done`.
fn wait_for(bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dockerd_stops_when_the_test_process_is_killed() {
    require_root();
    // The helper's dockerd counts as this binary's lab.
    let _slot = DOCKER_SLOT.lock().unwrap_or_else(PoisonError::into_inner);
    let mut helper = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "orphan_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_HELPER_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the helper test process");
    let stdout = helper.stdout.take().expect("helper stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test orphan_helper ... " first, on the same line.
            if let Some((_, rest)) = line.split_once(ORPHAN_MARK) {
                let _ = tx.send(rest.to_string());
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(120));
    // SIGKILL: no unwinding, no Drop; only the kernel's parent-death signal.
    helper.kill().expect("kill the helper");
    helper.wait().expect("reap the helper");
    let line = line.expect("the helper never reported its lab");
    let mut fields = line.split(' ');
    let dir = PathBuf::from(fields.next().expect("lab folder"));
    let guard = Orphaned(dir.clone());
    let dockerd: u32 = fields
        .next()
        .and_then(|p| p.parse().ok())
        .expect("dockerd pid");
    let container: u32 = fields
        .next()
        .and_then(|p| p.parse().ok())
        .expect("container pid");

    let gone = wait_for(Duration::from_secs(60), || {
        processes_referencing(&dir).is_empty()
    });
    assert!(
        gone,
        "dockerd (pid {dockerd}), its containerd or shims still run a minute after the test \
         process was killed:\n  {}",
        describe(&processes_referencing(&dir))
    );
    assert!(
        wait_for(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{container}"
        ))
        .exists()),
        "the container's process {container} survived"
    );
    // The guard reaps again when dropped: a no-op by then.
    let report = reap_lab_folder(&guard.0);
    assert!(
        report.killed.is_empty() && report.problems.is_empty(),
        "dockerd's own shutdown should have left only files: {report:#?}"
    );
    assert!(!dir.exists());
}

#[test]
fn folders_of_dead_test_processes_are_swept() {
    require_root();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // A pid that just ended: ours, reaped.
    let mut child = Command::new("true").spawn().expect("run true");
    let dead = child.id();
    child.wait().expect("reap true");
    let stale = base.join(format!("symroute-docker-{dead}-0"));
    std::fs::create_dir_all(stale.join("data/sub")).expect("create a stale folder");
    // PID 1 is alive: its folder is not stale.
    let alive = base.join("symroute-docker-1-999");
    std::fs::create_dir_all(&alive).expect("create a live folder");

    let lab = DockerLab::start();
    let stale_left = stale.exists();
    let alive_left = alive.exists();
    let _ = std::fs::remove_dir_all(&alive);
    let _ = std::fs::remove_dir_all(&stale);
    assert!(!stale_left, "{} was not swept", stale.display());
    assert!(alive_left, "{} belongs to a live process", alive.display());
    lab.ping().expect("the lab runs");
}

/// `symroute diagnose` of a container: its exit code.
fn diagnose(netns: &Path) -> i32 {
    symroute(["diagnose".as_ref(), "--netns".as_ref(), netns.as_os_str()]).code
}

#[test]
fn macvlan_reply_fails_from_another_subnet_until_symroute_apply() {
    require_root();
    let lab = MacvlanLab::build();
    let id = lab.run_web();
    let docker = &lab.docker;
    let netns = docker.container_netns_path(&id);
    let routes = docker.exec(&id, &["ip", "route"]).expect("ip route in web");
    assert!(
        routes.contains(&format!("default via {}", macvlan::APP_GATEWAY)),
        "the default route should be app_default's (it sorts before lan):\n{routes}"
    );
    let lan = docker.container_iface(&id, macvlan::LAN_NETWORK);
    assert_eq!(
        docker.container_ip(&id, macvlan::LAN_NETWORK),
        IpAddr::V4(macvlan::WEB_LAN)
    );

    // The service works on-link; from another subnet the reply goes astray.
    assert_connects(
        &lab.router,
        lab.target(),
        macvlan::BANNER,
        "router (on-link)",
    );
    assert_blocked(&lab.remote, lab.target(), "remote, before the fix");
    assert_eq!(diagnose(&netns), 1, "diagnose should find web asymmetric");

    // Why: the docker host's strict reverse-path filter drops the reply that
    // arrives on app_default's bridge. Without it the asymmetric reply passes.
    set_rp_filter(docker.ns(), "0");
    assert_connects(
        &lab.remote,
        lab.target(),
        macvlan::BANNER,
        "remote, rp_filter off",
    );
    set_rp_filter(docker.ns(), "1");
    assert_blocked(&lab.remote, lab.target(), "remote, rp_filter strict again");

    let gateway = format!("{lan}={}", macvlan::ROUTER_LAN);
    symroute([
        "apply".as_ref(),
        "--netns".as_ref(),
        netns.as_os_str(),
        "--gateway".as_ref(),
        gateway.as_ref(),
    ])
    .expect(0);
    assert_connects(
        &lab.remote,
        lab.target(),
        macvlan::BANNER,
        "remote, after apply",
    );
    assert_connects(
        &lab.router,
        lab.target(),
        macvlan::BANNER,
        "router, after apply",
    );
    assert_eq!(diagnose(&netns), 0, "diagnose after apply");

    symroute(["clean".as_ref(), "--netns".as_ref(), netns.as_os_str()]).expect(0);
    assert_blocked(&lab.remote, lab.target(), "remote, after clean");
}

#[test]
fn routed_bridge_reply_fails_until_symroute_apply() {
    require_root();
    let lab = RoutedLab::build();
    let id = lab.run_web();
    let docker = &lab.docker;
    let netns = docker.container_netns_path(&id);
    let routes = docker.exec(&id, &["ip", "route"]).expect("ip route in web");
    assert!(
        routes.contains(&format!("default via {}", routed::BACK_GATEWAY)),
        "the default route should be back-tier's (it sorts first):\n{routes}"
    );
    let front = docker.container_iface(&id, routed::FRONT_NETWORK);
    assert_eq!(
        docker.container_ip(&id, routed::FRONT_NETWORK),
        IpAddr::V4(routed::WEB_FRONT)
    );

    // Routed access works to the gateway network, not to the other one.
    assert_connects(
        &lab.remote,
        lab.back_target(),
        routed::BANNER,
        "remote -> back-tier",
    );
    assert_blocked(
        &lab.remote,
        lab.front_target(),
        "remote -> front-tier, before the fix",
    );
    assert_eq!(diagnose(&netns), 1, "diagnose should find web asymmetric");

    // Why: strict rp_filter in the docker host (Docker's NAT leaves the
    // reply alone).
    set_rp_filter(docker.ns(), "0");
    assert_connects(
        &lab.remote,
        lab.front_target(),
        routed::BANNER,
        "front-tier, rp_filter off",
    );
    set_rp_filter(docker.ns(), "1");
    assert_blocked(
        &lab.remote,
        lab.front_target(),
        "front-tier, rp_filter strict again",
    );

    let gateway = format!("{front}={}", routed::FRONT_GATEWAY);
    symroute([
        "apply".as_ref(),
        "--netns".as_ref(),
        netns.as_os_str(),
        "--gateway".as_ref(),
        gateway.as_ref(),
    ])
    .expect(0);
    assert_connects(
        &lab.remote,
        lab.front_target(),
        routed::BANNER,
        "front-tier, after apply",
    );
    assert_connects(
        &lab.remote,
        lab.back_target(),
        routed::BANNER,
        "back-tier, after apply",
    );
    assert_eq!(diagnose(&netns), 0, "diagnose after apply");
}
