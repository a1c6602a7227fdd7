//! The symroute image, built by `scripts/build-image` in a lab dockerd
//! (Debian's 20.10, in its own namespace: tests/common/docker.rs) and run
//! with the documented `docker run` line: a macvlan + bridge container that a
//! remote client could not reach becomes reachable, a container started
//! afterwards too, and the daemon's own container (host network) is left
//! alone. Also: the image's labels, size, entry point, `--version`, and
//! `install-cni` from the image into a host directory.
//!
//! Needs root, Debian's docker.io and busybox-static, and the static
//! binaries (`scripts/build-image --binaries-only`; scripts/test builds them
//! before the tests). Inside the lab, `--network host` is the lab's docker
//! host namespace and `--pid host` the machine's PID namespace.

mod common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::macvlan::{self, MacvlanLab};
use common::docker::{DOCKER, DockerLab, service};
use common::{assert_blocked, assert_connects, owned, require_root};
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
    let out = Command::new(repo_root().join("scripts/build-image"))
        .arg("--no-build")
        .env("CONTAINER_ENGINE", DOCKER)
        .env("DOCKER_HOST", lab.docker_host())
        .env("DOCKER_CONFIG", lab.dir().join("cli"))
        .env("IMAGE", IMAGE)
        .env("TMPDIR", lab.dir())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/build-image");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/build-image --no-build failed ({}); if the static binaries are missing, run \
         scripts/build-image --binaries-only first:\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("scripts/build-image printed nothing on stdout: {stderr}"))
        .trim()
        .to_string()
}

/// The documented run line, with the lab's socket.
fn run_daemon_container(lab: &DockerLab, image: &str) -> String {
    let volume = format!("{}:/var/run/docker.sock", lab.socket_path().display());
    lab.run_detached(
        "symroute",
        &[
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
            "-v",
            &volume,
            image,
        ],
    )
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
    let img = &inspect[0];
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
