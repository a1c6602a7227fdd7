//! The symroute image, built by `scripts/build-image` in a lab dockerd
//! (Debian's 20.10, in its own namespace: tests/support/common/docker.rs) and run
//! with the documented `docker run` line: a macvlan + bridge container that a
//! remote client could not reach becomes reachable, a container started
//! afterwards too, and the daemon's own container (host network) is left
//! alone. Also: the image's labels, size, entry point, `--version`, and
//! `install-cni` from the image into a host directory.
//!
//! The same image under Podman 4.3 (the host's, in a lab of
//! tests/support/common/engines.rs): built by `CONTAINER_ENGINE=podman
//! scripts/build-image`, run with the documented line and Podman's socket as
//! `/var/run/docker.sock`, the same three checks (recipe C on netavark).
//!
//! Needs root, Debian's docker.io, podman and busybox-static, and the static
//! binaries (`scripts/build-image --binaries-only`; scripts/test builds them
//! before the tests). Inside the lab, `--network host` is the lab's docker
//! host namespace and `--pid host` the machine's PID namespace.

use symroute_it::common;
use symroute_it::common::engines;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::macvlan::{self, MacvlanLab};
use common::docker::{DOCKER, DockerLab, service};
use common::{assert_blocked, assert_connects, owned, require_root};
use engines::{Engine, EngineLab, RecipeC};
use serde_json::Value;

/// What the image is tagged in the lab.
const IMAGE: &str = "symroute-test/symroute:ship";
/// Upper bound for the daemon in the container to fix a container.
const CONVERGE: Duration = Duration::from_secs(20);
/// The limit of issue 10.
const MAX_IMAGE_BYTES: u64 = 25 * 1024 * 1024;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `scripts/build-image --no-build` against the lab's dockerd; the image
/// reference it printed on its last line.
fn build_image(lab: &DockerLab) -> String {
    build_image_with(
        Path::new(DOCKER),
        lab.dir(),
        &[
            ("DOCKER_HOST", lab.docker_host()),
            ("DOCKER_CONFIG", lab.dir().join("cli").display().to_string()),
        ],
    )
}

/// `CONTAINER_ENGINE=<engine> IMAGE=<IMAGE> scripts/build-image --no-build`
/// (its temporary build context under `tmp`): the image reference it printed
/// on its last line.
fn build_image_with(engine: &Path, tmp: &Path, env: &[(&str, String)]) -> String {
    let started = Instant::now();
    let out = Command::new(repo_root().join("scripts/build-image"))
        .arg("--no-build")
        .env("CONTAINER_ENGINE", engine)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("IMAGE", IMAGE)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/build-image");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "CONTAINER_ENGINE={} scripts/build-image --no-build failed ({}); if the static \
         binaries are missing, run scripts/build-image --binaries-only first:\n{stderr}",
        engine.display(),
        out.status
    );
    eprintln!("{stderr}");
    eprintln!(
        "CONTAINER_ENGINE={} scripts/build-image --no-build took {:?}",
        engine.display(),
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("scripts/build-image printed nothing on stdout: {stderr}"))
        .trim()
        .to_string()
}

/// The documented run line's options (docs/install.md), without the socket
/// and the image.
const DOCUMENTED: &[&str] = &[
    "--restart",
    "unless-stopped",
    "--network",
    "host",
    "--pid",
    "host",
    "--cap-drop",
    "ALL",
    "--cap-add",
    "NET_ADMIN",
    "--cap-add",
    "SYS_ADMIN",
    "--cap-add",
    "SYS_PTRACE",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "seccomp=unconfined",
];

/// The documented run line, with the lab's socket.
fn run_daemon_container(lab: &DockerLab, image: &str) -> String {
    let volume = format!("{}:/var/run/docker.sock", lab.socket_path().display());
    let mut args = DOCUMENTED.to_vec();
    args.extend(["-v", &volume, image]);
    lab.run_detached("symroute", &args)
}

/// Poll until `client` gets the banner from `target`, or panic with the
/// daemon container's log.
fn wait_reachable(lab: &MacvlanLab, target: SocketAddr, banner: &str, context: &str) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match lab.remote.tcp_probe(target, Duration::from_secs(1)) {
            Ok(text) if text.trim() == banner => return,
            Ok(text) => panic!("{context}: {target} answered {text:?}, expected {banner:?}"),
            Err(e) if Instant::now() >= deadline => {
                let logs = lab
                    .docker
                    .docker(["logs", "--tail", "30", "symroute"])
                    .unwrap_or_else(|e| e);
                panic!(
                    "{context}: remote still cannot reach {target} after {CONVERGE:?} ({e}); \
                     the daemon container's log:\n{logs}"
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The daemon container's log, one JSON object per line.
fn daemon_log(lab: &DockerLab) -> Vec<Value> {
    let out = Command::new(DOCKER)
        .args(["logs", "symroute"])
        .env("DOCKER_HOST", lab.docker_host())
        .env("DOCKER_CONFIG", lab.dir().join("cli"))
        .stdin(Stdio::null())
        .output()
        .expect("docker logs symroute");
    // The daemon logs to stderr; docker logs gives it back on stderr.
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("daemon log line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// What the image is (an engine's `image inspect` object: Docker's and
/// Podman's have these fields alike): FROM scratch (one layer), at most
/// 25 MiB, the entry point and command, the labels. Its revision label.
fn check_image(img: &Value) -> String {
    let size = img["Size"].as_u64().expect("Size");
    eprintln!("image {IMAGE}: {size} bytes");
    assert!(
        size <= MAX_IMAGE_BYTES,
        "image is {size} bytes, over 25 MiB"
    );
    let config = &img["Config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/symroute"])
    );
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["daemon", "--log-format", "json"])
    );
    let labels = &config["Labels"];
    assert_eq!(labels["symroute.enable"], "false");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/symroute/symroute"
    );
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!revision.is_empty() && revision != "unknown", "{labels}");
    assert_eq!(img["RootFS"]["Layers"].as_array().map(Vec::len), Some(1));
    revision
}

#[test]
fn image_runs_as_the_documented_daemon_and_fixes_macvlan_containers() {
    require_root();
    let lab = MacvlanLab::build();
    let docker = &lab.docker;

    let image = build_image(docker);
    assert_eq!(image, IMAGE);

    // What the image is: FROM scratch, small, labelled, with the entry point.
    let inspect: Value = serde_json::from_str(&docker.docker_ok(["image", "inspect", IMAGE]))
        .expect("image inspect is JSON");
    let revision = check_image(&inspect[0]);
    let version = docker.docker_ok([
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "none",
        IMAGE,
        "--version",
    ]);
    assert_eq!(
        version,
        format!("symroute {} (commit {revision})", env!("CARGO_PKG_VERSION"))
    );

    // The DaemonSet's command, from the image, into a host directory.
    let cni_dir = docker.dir().join("host-cni-bin");
    fs::create_dir_all(&cni_dir).expect("mkdir host-cni-bin");
    let mount = format!("{}:/host/opt/cni/bin", cni_dir.display());
    let install = || {
        docker.docker_ok([
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--read-only",
            "-v",
            &mount,
            IMAGE,
            "install-cni",
        ])
    };
    let said = install();
    eprintln!("install-cni from the image: {said}");
    assert!(
        said.contains("installed /host/opt/cni/bin/symroute"),
        "{said}"
    );
    let again = install();
    eprintln!("install-cni from the image, again: {again}");
    assert!(again.contains("already installed, unchanged"), "{again}");
    let answer = Command::new("sh")
        .arg("-c")
        .arg(r#"echo '{"cniVersion":"1.1.0"}' | CNI_COMMAND=VERSION "$0""#)
        .arg(cni_dir.join("symroute"))
        .env_clear()
        .output()
        .expect("run the installed plugin");
    let answer: Value = serde_json::from_slice(&answer.stdout).expect("VERSION answer is JSON");
    assert!(answer["supportedVersions"].as_array().is_some(), "{answer}");

    // Before: web on lan + app_default, unreachable from the remote client.
    lab.run_web();
    assert_blocked(
        &lab.remote,
        lab.target(),
        "remote, before the daemon container",
    );

    // The documented run line: web becomes reachable with no other step.
    run_daemon_container(docker, IMAGE);
    wait_reachable(
        &lab,
        lab.target(),
        macvlan::BANNER,
        "web, after the daemon container started",
    );
    assert_connects(
        &lab.remote,
        lab.target(),
        macvlan::BANNER,
        "web, daemon container running",
    );

    // A container started afterwards is fixed too.
    let second_lan = Ipv4Addr::new(192, 0, 2, 51);
    let second = docker.run_server(
        "web2",
        Some("hello from web2"),
        &[
            "--network",
            macvlan::LAN_NETWORK,
            "--ip",
            &second_lan.to_string(),
        ],
    );
    docker.docker_ok([
        "network",
        "connect",
        "--ip",
        "172.18.0.3",
        macvlan::APP_NETWORK,
        &second,
    ]);
    wait_reachable(
        &lab,
        service(second_lan),
        "hello from web2",
        "web2, started after the daemon",
    );

    // The daemon's own container (host network: the lab's docker host
    // namespace) is left alone: nothing of symroute's there.
    let (rules, routes) = owned(docker.ns());
    assert!(
        rules.is_empty() && routes.is_empty(),
        "symroute changed the docker host's namespace: {rules:?} {routes:?}"
    );
    let state = docker.inspect("symroute");
    assert_eq!(state["State"]["Running"], true, "{}", state["State"]);
    assert_eq!(state["RestartCount"], 0);
    let log = daemon_log(docker);
    for l in &log {
        eprintln!("docker logs symroute: {l}");
    }
    assert!(
        log.iter().any(|l| l["container"] == macvlan::WEB),
        "no log line about web: {log:#?}"
    );
    assert!(
        log.iter().any(|l| l["container"] == "web2"),
        "no log line about web2: {log:#?}"
    );
    assert!(
        log.iter().any(|l| l["message"] == "connected to Docker"),
        "the daemon never said it connected: {log:#?}"
    );
    assert!(
        !log.iter()
            .any(|l| l["container"] == "symroute" && l["message"] == "converged"),
        "the daemon changed its own container: {log:#?}"
    );
    assert!(
        !log.iter()
            .any(|l| l["level"] == "ERROR" || l["level"] == "WARN"),
        "the daemon container logged warnings or errors: {log:#?}"
    );
}

// ---------------------------------------------------------------------------
// The same image under Podman 4.3 with its socket
// ---------------------------------------------------------------------------

const PODMAN_WEB_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 40);
const PODMAN_WEB2_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 41);

/// `podman …` through the lab's wrapper (what `CONTAINER_ENGINE` names),
/// both streams: (success, stdout, stderr).
fn podman_out(podman: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(podman)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} {}: {e}", podman.display(), args.join(" ")));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lab's only additions to a `podman run` line: the lab's cgroup parent
/// and ulimits Podman 4.3 can set here (its defaults cannot be raised in
/// the lab, lab recipe F; `run_server` adds the same).
fn podman_lab_run_args(lab: &EngineLab) -> Vec<String> {
    [
        "--cgroup-parent",
        &lab.cgroup_parent(),
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--pull=never",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// The container's address on the bridge network.
fn app_ip(c: &RecipeC, name: &str) -> Ipv4Addr {
    c.lab.inspect(name)["NetworkSettings"]["Networks"][engines::APP]["IPAddress"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{name} has no address on {}", engines::APP))
}

/// Make `name`'s bridge default the one in use (netavark gives both networks
/// an equal-metric default; see tests/engines_podman.rs): main's route to
/// remote leaves through the bridge, so without a rule of symroute's a reply
/// from the LAN address would too.
fn bridge_default_in_use(c: &RecipeC, name: &str) {
    let ns = c.lab.netns_path(name);
    engines::prefer_bridge_default(&ns);
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["ip", "route", "get", &engines::REMOTE.to_string()])
        .output()
        .expect("run ip route get");
    let path = String::from_utf8_lossy(&out.stdout);
    assert!(
        path.contains(&format!("via {}", engines::APP_GATEWAY)),
        "{name}: main's route to remote: {path}\nroutes:\n{}",
        engines::ip_show(&ns, "route")
    );
}

/// Issue 10, "the same image under Podman 4 with its socket": in a Podman 4.3
/// lab (tests/support/common/engines.rs: its own root, runroot, network config, mount
/// and network namespaces), `CONTAINER_ENGINE=podman scripts/build-image`
/// builds the image (FROM scratch, nothing pulled), and the documented run
/// line with `-v <podman.sock>:/var/run/docker.sock` makes a macvlan + bridge
/// container reachable from remote, and one started afterwards; the daemon's
/// own container (host network: the lab's engine namespace) gets nothing.
///
/// Differences from the Docker line, all the lab's: `--cgroup-parent` and two
/// `--ulimit`s (see `podman_lab_run_args`), `--pull=never`, and
/// `-e SYMROUTE_LOG=info,symroute=debug` so that the log shows the daemon
/// deciding to leave its own container alone (a debug line).
#[test]
fn podman_4_builds_the_image_and_runs_it_as_the_documented_daemon() {
    require_root();
    let started = Instant::now();
    let mut c = RecipeC::build(Engine::Podman43);
    let built = started.elapsed();
    let podman = c.lab.podman_wrapper();

    // `CONTAINER_ENGINE=podman scripts/build-image`, as a user runs it: the
    // lab's podman is the `podman` first on PATH.
    let bin_dir = podman.parent().expect("the wrapper's folder");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let image = build_image_with(Path::new("podman"), c.lab.dir(), &[("PATH", path)]);
    assert_eq!(image, IMAGE);
    let inspect: Value = serde_json::from_str(&c.lab.cli_ok(["image", "inspect", IMAGE]))
        .expect("podman image inspect is JSON");
    let revision = check_image(&inspect[0]);
    let lab_args = podman_lab_run_args(&c.lab);
    let mut args: Vec<&str> = vec!["run", "--rm", "--network", "none"];
    args.extend(lab_args.iter().map(String::as_str));
    args.extend([IMAGE, "--version"]);
    assert_eq!(
        c.lab.cli_ok(&args),
        format!("symroute {} (commit {revision})", env!("CARGO_PKG_VERSION"))
    );
    let image_done = started.elapsed();

    // Before: web on lan + app_default, its bridge default in use,
    // unreachable from remote.
    c.run_both("web", PODMAN_WEB_LAN, "hello from web", &[]);
    assert_connects(
        &c.router,
        engines::service(PODMAN_WEB_LAN),
        "hello from web",
        "router, on-link",
    );
    bridge_default_in_use(&c, "web");
    let reply = engines::route_get(&c.lab.netns_path("web"), engines::REMOTE, PODMAN_WEB_LAN);
    assert!(
        reply.contains(&format!("via {}", engines::APP_GATEWAY)),
        "web's reply to remote from its LAN address: {reply}"
    );
    assert_blocked(
        &c.remote,
        engines::service(PODMAN_WEB_LAN),
        "remote, before the daemon container",
    );

    // The documented line, Podman's socket as /var/run/docker.sock.
    let volume = format!("{}:/var/run/docker.sock", c.lab.socket_path().display());
    let mut args: Vec<&str> = vec!["run", "-d", "--name", "symroute"];
    args.extend(lab_args.iter().map(String::as_str));
    args.extend(["-e", "SYMROUTE_LOG=info,symroute=debug"]);
    args.extend_from_slice(DOCUMENTED);
    args.extend(["-v", &volume, IMAGE]);
    c.lab.cli_ok(&args);
    let web_app = app_ip(&c, "web");
    engines::wait_rules(&c.lab, "web", &[PODMAN_WEB_LAN, web_app]);
    assert_connects(
        &c.remote,
        engines::service(PODMAN_WEB_LAN),
        "hello from web",
        "web, after the daemon container started",
    );

    // A container started afterwards is fixed too.
    c.run_both("web2", PODMAN_WEB2_LAN, "hello from web2", &[]);
    let web2_app = app_ip(&c, "web2");
    engines::wait_rules(&c.lab, "web2", &[PODMAN_WEB2_LAN, web2_app]);
    bridge_default_in_use(&c, "web2");
    assert_connects(
        &c.remote,
        engines::service(PODMAN_WEB2_LAN),
        "hello from web2",
        "web2, started after the daemon container",
    );

    // The daemon's own container is left alone: its namespace (host network:
    // the lab's engine namespace) has nothing of symroute's, and the daemon
    // said why it does not manage it.
    let (rules, routes) = owned(c.lab.ns());
    assert!(
        rules.is_empty() && routes.is_empty(),
        "symroute changed the engine's namespace: {rules:?} {routes:?}"
    );
    let state = c.lab.inspect("symroute");
    assert_eq!(state["State"]["Running"], true, "{}", state["State"]);
    assert_eq!(state["RestartCount"], 0);
    let (ok, stdout, stderr) = podman_out(&podman, &["logs", "symroute"]);
    assert!(ok, "podman logs symroute: {stderr}");
    let log: Vec<Value> = (stderr + &stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("daemon log line is not JSON ({e}): {l}"))
        })
        .collect();
    for l in log.iter().filter(|l| l["level"] != "DEBUG") {
        eprintln!("podman logs symroute: {l}");
    }
    let connected = log
        .iter()
        .find(|l| l["message"] == "connected to Docker")
        .unwrap_or_else(|| panic!("the daemon never said it connected: {log:#?}"));
    assert_eq!(connected["socket"], "/var/run/docker.sock", "{connected}");
    assert!(
        connected["engine"]
            .as_str()
            .is_some_and(|e| e.starts_with("Podman Engine")),
        "{connected}"
    );
    for name in [macvlan::WEB, "web2"] {
        assert!(
            log.iter()
                .any(|l| l["container"] == name && l["message"] == "converged"),
            "no converged line about {name}: {log:#?}"
        );
    }
    let own = log
        .iter()
        .find(|l| l["container"] == "symroute" && l["message"] == "not managed")
        .unwrap_or_else(|| panic!("no line about leaving the symroute container alone: {log:#?}"));
    eprintln!("podman logs symroute (debug): {own}");
    assert!(
        !log.iter()
            .any(|l| l["container"] == "symroute" && l["message"] == "converged"),
        "the daemon changed its own container: {log:#?}"
    );
    assert!(
        !log.iter()
            .any(|l| l["level"] == "ERROR" || l["level"] == "WARN"),
        "the daemon container logged warnings or errors: {log:#?}"
    );
    let report = c.lab.stop();
    assert!(
        report.problems.is_empty(),
        "teardown: {:?}",
        report.problems
    );
    eprintln!(
        "podman 4.3 ship test: lab {built:?}, image built and checked at {image_done:?}, \
         all done (teardown included) in {:?}",
        started.elapsed()
    );
}
