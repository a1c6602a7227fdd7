//! Today's engines for tests: Docker Engine 28 (dockerd from the Debian sid root that
//! `scripts/lab-sid-root` provides), Podman 4.3 (the host's, Debian 12) and Podman 5.8 (the
//! sid root's), each started inside a lab network namespace of its own ([`EngineLab`]), and
//! lab recipe C built on them ([`RecipeC`]): a LAN router, a remote client behind it, a
//! macvlan network on the LAN and a bridge network, a container on both.
//!
//! Part of the suites' shared library (`symroute_it::common::engines`); it borrows small
//! public pieces from its sibling `docker` module.
//!
//! Isolation, and what an [`EngineLab`] guarantees:
//!
//! - The engine runs in a network namespace the lab created (its bridges, veths, sysctls and
//!   iptables rules live there) AND in a private mount namespace of its own, held by a
//!   `sleep` process (the "holder", `unshare --mount --propagation private`). Every mount
//!   the lab or the engine makes (the sid root's overlay, its proc/sys/dev/run, dockerd's
//!   netns bind mounts, overlay2 layers, Podman's /run/netns files) is made in there: the
//!   host's mount table never changes, and the mounts disappear with the namespace, on every
//!   path, even SIGKILL of the test (the holder has PR_SET_PDEATHSIG). The teardown also
//!   checks that `/proc/self/mounts` has nothing under the lab's folder.
//! - The sid root is never written: it is the lower layer of an overlay whose upper layer is
//!   in the lab's folder, so labs can share it and run side by side.
//! - Podman 4.3 writes netavark's IPAM db to /run/containers/networks and a blob cache to
//!   /var/lib/containers whatever `--root` says (its CNI backend: libcni's cache and
//!   host-local's leases in /var/lib/cni, network namespaces in /run/netns, symroute's
//!   state in /run/symroute/cni): in the lab's mount namespace /run is a tmpfs and /var/lib
//!   an overlay whose upper layer is in the lab's folder, so the host's /run and /var/lib
//!   are never written and two 4.3 labs do not share an IPAM db.
//! - Everything else lives in one folder, `/tmp/symroute-engine-<pid>-<n>` (under /tmp:
//!   the sid root sees /tmp at the same path, so sockets, data and exec roots have one name
//!   inside and out): data/exec/run roots, the API socket, logs, the image.
//!   Containers' cgroups go under `/<folder name>` (`--cgroup-parent`).
//! - Teardown ([`EngineLab::stop`] or Drop, on every path including a panic): remove every
//!   container through the engine, SIGTERM the engine's process (the child we spawned;
//!   SIGKILL after [`STOP_TIMEOUT`]), SIGKILL whatever is left that is ours (processes in the
//!   lab's mount namespace, processes in the lab's cgroups: signalled through pidfds after
//!   re-checking), SIGKILL the holder, remove the cgroups, then the folder.
//!
//! Serialized: one [`EngineLab`] at a time per test binary ([`ENGINE_SLOT`]).

#![allow(dead_code, reason = "each suite uses a different subset")]

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use symroute_core::kernel::Kernel;
use symroute_core::model::{Route, Rule};
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::netns::Netns;
use symroute_testkit::lab::{MAIN_TABLE, Ns};

use crate::common::docker::{Pidfd, log_tail, mounts_under, run_bounded};
use crate::common::{BIN, TAG, ip, net, ok};

/// Where a docker CLI new enough for Docker 28 (`--network name=x,gw-priority=N`) is
/// looked for: this machine kind's own client (28.2, not from a package), then
/// /usr/bin/docker (Docker CE's `docker-ce-cli`, or Debian's `docker.io`, 20.10 on
/// Debian 12: too old).
const DOCKER_CLIS: [&str; 2] = ["/usr/local/bin/docker", "/usr/bin/docker"];

/// The first docker CLI of [`DOCKER_CLIS`] whose client is 28 or newer; the
/// Docker 28 suites cannot run without one, and say so.
pub fn docker_cli() -> &'static str {
    static CLI: std::sync::OnceLock<Result<&'static str, String>> = std::sync::OnceLock::new();
    let found = CLI.get_or_init(|| {
        let mut seen = Vec::new();
        for cli in DOCKER_CLIS {
            let Ok(out) = Command::new(cli)
                .args(["version", "--format", "{{.Client.Version}}"])
                .env("DOCKER_HOST", "unix:///nonexistent")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
            else {
                continue;
            };
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let major = version
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok());
            if major.is_some_and(|m| m >= 28) {
                return Ok(cli);
            }
            seen.push(format!("{cli} ({version})"));
        }
        Err(format!(
            "the Docker 28 suites need a docker CLI 28 or newer in {DOCKER_CLIS:?}; found {seen:?}"
        ))
    });
    match found {
        Ok(cli) => cli,
        Err(e) => panic!("{e}"),
    }
}
/// The host's Podman 4.3.
pub const HOST_PODMAN: &str = "/usr/bin/podman";
pub const BUSYBOX: &str = "/bin/busybox";
/// The test image (as the docker CLI names it; Podman adds `localhost/`).
pub const IMAGE: &str = "symroute-test/bb:latest";
pub const SERVICE_PORT: u16 = 80;
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for anything the daemon must do on its own.
pub const CONVERGE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

const IMAGE_CMD: &str =
    r#"CMD ["/bin/sh","-c","trap \"exit 0\" TERM INT; nc -ll -p 80 -e /bin/banner & wait"]"#;
const BANNER_SCRIPT: &str = "#!/bin/sh\necho \"${BANNER:-hello from bb}\"\n";
const APPLETS: &[&str] = &[
    "sh", "ash", "nc", "ip", "ping", "wget", "sleep", "cat", "echo", "ls", "ps", "kill", "env",
    "true", "false", "grep", "sed", "sysctl",
];
const DIR_PREFIX: &str = "symroute-engine-";
const DOCKER_ENV_VARS: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_API_VERSION",
    "DOCKER_CONFIG",
    "CONTAINER_HOST",
    "CONTAINERS_CONF",
];

pub static ENGINE_SLOT: Mutex<()> = Mutex::new(());
static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// Which engine a lab runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// dockerd 28.5 from the sid root.
    Docker28,
    /// The host's podman 4.3 (netavark 1.4), `podman system service`.
    Podman43,
    /// The host's podman 4.3 with its CNI backend (libcni, Debian's plugins in /usr/lib/cni
    /// and the freshly built `symroute-cni` installed as `symroute` in the lab's `cni-bin`),
    /// configured by the lab's `containers.conf` ([`EngineLab::containers_conf`]); its
    /// networks are the conflists the test writes in [`EngineLab::network_config_dir`].
    Podman43Cni,
    /// podman 5.8 (netavark 1.17) from the sid root, `podman system service`.
    Podman58,
}

impl Engine {
    pub fn is_podman(self) -> bool {
        self != Engine::Docker28
    }
    fn uses_sid_root(self) -> bool {
        matches!(self, Engine::Docker28 | Engine::Podman58)
    }
    /// The host's podman 4.3 (either network backend).
    fn is_host_podman(self) -> bool {
        matches!(self, Engine::Podman43 | Engine::Podman43Cni)
    }
    pub fn name(self) -> &'static str {
        match self {
            Engine::Docker28 => "docker-28",
            Engine::Podman43 => "podman-4.3",
            Engine::Podman43Cni => "podman-4.3-cni",
            Engine::Podman58 => "podman-5.8",
        }
    }
    /// The image name the engine's inspect shows.
    pub fn image(self) -> String {
        if self.is_podman() {
            format!("localhost/{IMAGE}")
        } else {
            IMAGE.to_string()
        }
    }
}

/// The sid root (`scripts/lab-sid-root`, run once per test process): its path.
pub fn sid_root() -> PathBuf {
    static ROOT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut root = ROOT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(r) = root.as_ref() {
        return r.clone();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lab-sid-root");
    let start = Instant::now();
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}{}",
        script.display(),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        path.join("usr/sbin/dockerd").exists(),
        "{}: no dockerd",
        path.display()
    );
    eprintln!("sid root {} ready in {:?}", path.display(), start.elapsed());
    *root = Some(path.clone());
    path
}

/// What a teardown did.
#[derive(Debug, Default)]
pub struct StopReport {
    /// Leftover processes the teardown had to kill: `"<pid> <command line>"`.
    pub killed: Vec<String>,
    /// What could not be cleaned; empty when everything went as planned.
    pub problems: Vec<String>,
}

/// One engine running in a lab namespace. See the module documentation.
pub struct EngineLab {
    pub engine: Engine,
    ns: Ns,
    dir: PathBuf,
    tag: String,
    /// The sid root's overlay, as the engine's `/` (Docker 28, Podman 5.8).
    rootfs: Option<PathBuf>,
    holder: Option<Child>,
    holder_pid: u32,
    holder_mnt: String,
    service: Option<Child>,
    service_pid: u32,
    image_ready: bool,
    stopped: bool,
    /// How long the start took (mount namespace, root, engine answering).
    pub start_time: Duration,
    _slot: MutexGuard<'static, ()>,
}

impl std::fmt::Debug for EngineLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineLab")
            .field("engine", &self.engine)
            .field("dir", &self.dir)
            .field("service_pid", &self.service_pid)
            .finish_non_exhaustive()
    }
}

fn clean_env(cmd: &mut Command) {
    for var in DOCKER_ENV_VARS {
        cmd.env_remove(var);
    }
}

fn mnt_ns_of(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.display().to_string())
}

impl EngineLab {
    /// Start `engine` in `ns` (prepared by the caller) and wait until its API answers.
    pub fn start(engine: Engine, ns: Ns) -> EngineLab {
        crate::common::require_root();
        let slot = ENGINE_SLOT.lock().unwrap_or_else(PoisonError::into_inner);
        let t0 = Instant::now();
        sweep_stale_labs();
        let sid = engine.uses_sid_root().then(sid_root);
        let (dir, tag) = new_lab_dir();
        let mut lab = EngineLab {
            engine,
            ns,
            dir,
            tag,
            rootfs: None,
            holder: None,
            holder_pid: 0,
            holder_mnt: String::new(),
            service: None,
            service_pid: 0,
            image_ready: false,
            stopped: false,
            start_time: Duration::ZERO,
            _slot: slot,
        };
        // From here on a panic drops `lab`, which tears down what exists.
        lab.spawn_holder();
        lab.prepare_mounts(sid.as_deref());
        if engine == Engine::Podman43Cni {
            lab.prepare_cni();
        }
        lab.spawn_service();
        lab.wait_ready();
        lab.start_time = t0.elapsed();
        eprintln!("{}: engine up in {:?}", engine.name(), lab.start_time);
        lab
    }

    pub fn ns(&self) -> &Ns {
        &self.ns
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.tag)
    }
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(if self.engine.is_podman() {
            "podman.sock"
        } else {
            "docker.sock"
        })
    }
    /// `unix://<socket>`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }
    /// The engine's process (dockerd, or `podman system service`).
    pub fn service_pid(&self) -> u32 {
        self.service_pid
    }
    /// The `sleep` holding the lab's mount namespace.
    pub fn holder_pid(&self) -> u32 {
        self.holder_pid
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("engine.log")
    }
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }

    fn path(&self, sub: &str) -> String {
        self.dir.join(sub).display().to_string()
    }

    /// `nsenter` into the lab's mount and network namespaces (and `chroot` into the sid
    /// root's overlay): the prefix of every engine process.
    fn enter(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.holder_pid.to_string())
            // -r -w: the holder's root and folder (a test run inside a chroot
            // would otherwise land in the real root: setns on a mount namespace
            // resets both).
            .args(["-m", "-n", "-r", "-w", "--"]);
        if let Some(root) = &self.rootfs {
            cmd.arg("chroot").arg(root);
        }
        cmd.arg(program);
        clean_env(&mut cmd);
        cmd.env("PODMAN_IGNORE_CGROUPSV1_WARNING", "1")
            .env("TMPDIR", self.path("tmp"));
        if self.engine == Engine::Podman43Cni {
            cmd.env("CONTAINERS_CONF", self.containers_conf());
        }
        cmd
    }

    /// The lab's containers.conf (Podman 4.3 CNI backend only).
    pub fn containers_conf(&self) -> PathBuf {
        self.dir.join("containers.conf")
    }
    /// Where the engine reads its networks: `--network-config-dir`, or containers.conf's
    /// `network_config_dir` (CNI backend: the conflists).
    pub fn network_config_dir(&self) -> PathBuf {
        self.dir.join("net")
    }
    /// The lab's CNI plugin folder, first in `cni_plugin_dirs` (Podman 4.3 CNI backend):
    /// holds `symroute` (the built `symroute-cni`).
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.join("cni-bin")
    }
    /// A path inside the lab's mount namespace (e.g. `/run/symroute/cni`, on the lab's own
    /// /run), as the host reaches it: through the holder's root.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root/{}",
            self.holder_pid,
            path.trim_start_matches('/')
        ))
    }

    /// Podman 4.3 CNI backend: install the plugin and write containers.conf.
    fn prepare_cni(&self) {
        let bin = self.cni_bin_dir();
        fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("mkdir {}: {e}", bin.display()));
        let built = symroute_testkit::workspace_bin("symroute-cni");
        let plugin = bin.join("symroute");
        fs::copy(&built, &plugin)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), plugin.display()));
        fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).expect("chmod plugin");
        let conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\
             network_config_dir = \"{}\"\n",
            bin.display(),
            self.network_config_dir().display()
        );
        fs::write(self.containers_conf(), conf).expect("write containers.conf");
    }

    fn spawn_holder(&mut self) {
        let mut cmd = self.ns.command("unshare");
        cmd.args(["--mount", "--propagation", "private", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::common::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start the mount-namespace holder: {e}"));
        self.holder_pid = child.id();
        self.holder = Some(child);
        let host_mnt = mnt_ns_of(std::process::id()).unwrap_or_default();
        // unshare(2) happens before the exec of sleep: wait for the new namespace.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = mnt_ns_of(self.holder_pid).unwrap_or_default();
            let exe = fs::read_link(format!("/proc/{}/exe", self.holder_pid)).unwrap_or_default();
            if !m.is_empty() && m != host_mnt && exe.ends_with("sleep") {
                self.holder_mnt = m;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the holder never got its mount namespace"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A shell script inside the lab's mount namespace (not chrooted).
    fn in_mount_ns(&self, script: &str) {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.holder_pid.to_string())
            .args(["-m", "-r", "-w", "--", "sh", "-euc", script])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter: {e}"));
        assert!(
            out.status.success(),
            "in the lab's mount namespace: {script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn prepare_mounts(&mut self, sid: Option<&Path>) {
        for sub in [
            "tmp", "cli", "net", "root", "run", "vol", "ov/up", "ov/work", "rootfs",
        ] {
            fs::create_dir_all(self.dir.join(sub)).unwrap_or_else(|e| panic!("mkdir {sub}: {e}"));
        }
        let t = self.dir.display().to_string();
        if let Some(sid) = sid {
            let r = format!("{t}/rootfs");
            self.in_mount_ns(&format!(
                "mount -t overlay overlay -o lowerdir={sid},upperdir={t}/ov/up,workdir={t}/ov/work {r}
                 mount --bind /tmp {r}/tmp
                 mount -t proc proc {r}/proc
                 mount --rbind /sys {r}/sys
                 mount --rbind /dev {r}/dev
                 mount -t tmpfs tmpfs {r}/run
                 cp /etc/resolv.conf {r}/etc/resolv.conf",
                sid = sid.display()
            ));
            self.rootfs = Some(PathBuf::from(r));
        } else {
            // Podman 4.3 on the host: its /run and /var/lib writes stay in the lab.
            fs::create_dir_all(self.dir.join("varlib/up")).expect("mkdir varlib");
            fs::create_dir_all(self.dir.join("varlib/work")).expect("mkdir varlib");
            self.in_mount_ns(&format!(
                "mount -t tmpfs tmpfs /run
                 mkdir -p /run/netns /run/lock
                 mount -t overlay overlay -o lowerdir=/var/lib,upperdir={t}/varlib/up,workdir={t}/varlib/work /var/lib"
            ));
        }
    }

    fn podman_globals(&self) -> Vec<String> {
        let mut g = vec![
            format!("--root={}", self.path("root")),
            format!("--runroot={}", self.path("run")),
            format!("--tmpdir={}", self.path("tmp")),
            format!("--volumepath={}", self.path("vol")),
            format!("--network-config-dir={}", self.path("net")),
            "--cgroup-manager=cgroupfs".into(),
            "--events-backend=file".into(),
            "--runtime=runc".into(),
        ];
        match self.engine {
            Engine::Podman43 => g.push("--network-backend=netavark".into()),
            // the backend, the plugin folders and the network folder: containers.conf
            Engine::Podman43Cni => g.retain(|a| !a.starts_with("--network-config-dir=")),
            _ => {}
        }
        g
    }

    fn spawn_service(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("open the engine log: {e}"));
        let log2 = log.try_clone().expect("dup log");
        let mut cmd = match self.engine {
            Engine::Docker28 => {
                let config = self.dir.join("daemon.json");
                fs::write(&config, "{}\n").expect("write daemon.json");
                let mut c = self.enter("dockerd");
                c.arg(format!("--config-file={}", config.display()))
                    .arg(format!("--data-root={}", self.path("data")))
                    .arg(format!("--exec-root={}", self.path("exec")))
                    .arg(format!("--pidfile={}", self.path("dockerd.pid")))
                    .arg(format!("--host={}", self.host()))
                    .arg(format!("--cgroup-parent={}", self.cgroup_parent()))
                    // Docker's default bridge off the test ranges' way.
                    .args(["--bip=198.51.100.129/25", "--userland-proxy=false"])
                    .args(["--shutdown-timeout=3", "--log-level=warn"]);
                c
            }
            Engine::Podman43 | Engine::Podman43Cni | Engine::Podman58 => {
                let mut c = self.enter("podman");
                c.args(self.podman_globals())
                    .args(["system", "service", "--time", "0"])
                    .arg(self.host());
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        crate::common::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", self.engine));
        self.service_pid = child.id();
        self.service = Some(child);
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .service
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} (pid {}) exited ({status}) before answering; its log:\n{}",
                    self.engine.name(),
                    self.service_pid,
                    self.log_tail(40)
                );
            }
            match api_get(&self.socket_path(), "/_ping") {
                Ok(body) if body.trim() == "OK" => return,
                other => assert!(
                    Instant::now() < deadline,
                    "{} did not answer /_ping within {READY_TIMEOUT:?} ({other:?}):\n{}",
                    self.engine.name(),
                    self.log_tail(40)
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn service_running(&mut self) -> bool {
        self.service
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stop the engine's process (SIGTERM, SIGKILL after [`STOP_TIMEOUT`]) and start a new
    /// one on the same folder and socket; wait until it answers. For Podman this is a
    /// `podman system service` restart: the containers keep running (conmon holds them).
    pub fn restart_service(&mut self) {
        let mut report = StopReport::default();
        self.stop_service(&mut report);
        assert!(report.problems.is_empty(), "restart: {:?}", report.problems);
        self.spawn_service();
        self.wait_ready();
    }

    fn stop_service(&mut self, report: &mut StopReport) {
        if !self.service_running() {
            return;
        }
        let Some(child) = self.service.as_mut() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                _ => break,
            }
        }
        report.problems.push(format!(
            "{} (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:?}: killed",
            self.engine.name()
        ));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The engine's CLI ([`docker_cli`] on the socket, or podman inside the lab), at most
    /// [`CLI_TIMEOUT`]. Ok: stdout without its trailing newline; Err: what failed.
    pub fn cli<I, S>(&self, args: I) -> Result<String, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let mut cmd = if self.engine.is_podman() {
            let prog = if self.engine.is_host_podman() {
                HOST_PODMAN
            } else {
                "podman"
            };
            let mut c = self.enter(prog);
            c.args(self.podman_globals());
            c
        } else {
            let mut c = Command::new(docker_cli());
            clean_env(&mut c);
            c.env("DOCKER_HOST", self.host())
                .env("DOCKER_CONFIG", self.path("cli"));
            c
        };
        cmd.args(&args).stdin(Stdio::null());
        let line = format!("{} {}", self.engine.name(), args.join(" "));
        let out = run_bounded(cmd, CLI_TIMEOUT).map_err(|e| format!("{line}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{line}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    pub fn cli_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cli(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A `podman` executable for scripts (`CONTAINER_ENGINE=<it>`): `<lab>/bin/podman`, a
    /// shell script that runs the lab's podman (in the lab's mount and network namespaces,
    /// chrooted for 5.8, with the lab's root, runroot and network config) with its
    /// arguments, exactly as [`EngineLab::cli`] does. Podman labs only.
    pub fn podman_wrapper(&self) -> PathBuf {
        assert!(self.engine.is_podman(), "podman_wrapper: {:?}", self.engine);
        let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let mut words = vec![
            "exec".to_string(),
            "env".into(),
            "-i".into(),
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "PODMAN_IGNORE_CGROUPSV1_WARNING=1".into(),
            q(&format!("TMPDIR={}", self.path("tmp"))),
            "nsenter".into(),
            "-t".into(),
            self.holder_pid.to_string(),
            "-m".into(),
            "-n".into(),
            "-r".into(),
            "-w".into(),
            "--".into(),
        ];
        if let Some(root) = &self.rootfs {
            words.extend(["chroot".into(), q(&root.display().to_string())]);
        }
        words.push(
            if self.engine == Engine::Podman43 {
                HOST_PODMAN
            } else {
                "podman"
            }
            .into(),
        );
        words.extend(self.podman_globals().iter().map(|g| q(g)));
        words.push(r#""$@""#.into());
        let bin = self.dir.join("bin");
        fs::create_dir_all(&bin).expect("mkdir bin");
        let path = bin.join("podman");
        fs::write(&path, format!("#!/bin/sh\n{}\n", words.join(" "))).expect("write podman");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod podman");
        path
    }

    /// Import the test image once: busybox-static, `/bin/banner`, and a command that
    /// answers every TCP connection on port 80 with `$BANNER` (default "hello from bb").
    pub fn image(&mut self) -> String {
        if !self.image_ready {
            let root = self.dir.join("image/rootfs");
            for sub in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
                fs::create_dir_all(root.join(sub)).expect("mkdir image");
            }
            fs::copy(BUSYBOX, root.join("bin/busybox"))
                .unwrap_or_else(|e| panic!("copy {BUSYBOX} (apt-get install busybox-static): {e}"));
            for a in APPLETS {
                symlink("busybox", root.join("bin").join(a)).expect("link applet");
            }
            let banner = root.join("bin/banner");
            fs::write(&banner, BANNER_SCRIPT).expect("write banner");
            fs::set_permissions(&banner, fs::Permissions::from_mode(0o755)).expect("chmod");
            let tar = self.dir.join("image/rootfs.tar");
            let st = Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .status()
                .expect("run tar");
            assert!(st.success(), "tar of the image");
            self.cli_ok([
                "import".as_ref(),
                "-c".as_ref(),
                OsStr::new(IMAGE_CMD),
                tar.as_os_str(),
                OsStr::new(IMAGE),
            ]);
            self.image_ready = true;
        }
        self.engine.image()
    }

    /// `run -d --name NAME -e BANNER=... OPTIONS IMAGE`, waiting until it listens on
    /// port 80: its full id.
    pub fn run_server(&mut self, name: &str, banner: &str, options: &[&str]) -> String {
        let image = self.image();
        let env = format!("BANNER={banner}");
        let cgroup = self.cgroup_parent();
        let mut args: Vec<&str> = vec!["run", "-d", "--name", name, "-e", &env];
        if self.engine.is_podman() {
            // Podman's default ulimits cannot be raised here (lab recipe F); its cgroups
            // under the lab's parent (dockerd has --cgroup-parent).
            args.extend([
                "--cgroup-parent",
                &cgroup,
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ]);
        }
        args.extend_from_slice(options);
        args.push(&image);
        let id = self.cli_ok(&args);
        let id = id.lines().last().unwrap_or_default().trim().to_string();
        self.wait_listening(name);
        id
    }

    /// `inspect NAME` (the engine's CLI).
    pub fn inspect(&self, name: &str) -> Value {
        let text = self.cli_ok(["inspect", name]);
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("inspect {name}: {e}"));
        v.get(0).cloned().unwrap_or(v)
    }

    /// The container's init process in the host's pid namespace.
    pub fn pid(&self, name: &str) -> u32 {
        let v = self.inspect(name);
        v["State"]["Pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("{name} is not running: {}", v["State"]))
    }

    /// `/proc/<pid>/ns/net` of a running container.
    pub fn netns_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid(name)))
    }

    /// The MAC address of `name`'s endpoint on `network`.
    pub fn mac(&self, name: &str, network: &str) -> String {
        self.inspect(name)["NetworkSettings"]["Networks"][network]["MacAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn wait_listening(&self, name: &str) {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if let Ok(v) = self.cli(["inspect", name])
                && let Some(pid) = serde_json::from_str::<Value>(&v)
                    .ok()
                    .and_then(|v| v[0]["State"]["Pid"].as_u64())
                && pid > 0
                && listens(u32::try_from(pid).unwrap_or(0), SERVICE_PORT)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} does not listen on port {SERVICE_PORT} after {LISTEN_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Tear down now; what it took.
    pub fn stop(mut self) -> StopReport {
        let r = self.teardown();
        self.stopped = true;
        r
    }

    fn teardown(&mut self) -> StopReport {
        let mut report = StopReport::default();
        if self.service_running() {
            let rm = if self.engine.is_podman() {
                self.cli(["rm", "-f", "-a", "-t", "0"]).map(|_| ())
            } else {
                self.cli(["ps", "-aq", "--no-trunc"]).and_then(|ids| {
                    let ids: Vec<&str> = ids.split_whitespace().collect();
                    if ids.is_empty() {
                        return Ok(());
                    }
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids);
                    self.cli(&args).map(|_| ())
                })
            };
            if let Err(e) = rm {
                report.problems.push(e);
            }
        }
        self.stop_service(&mut report);
        if let Some(c) = self.service.as_mut() {
            let _ = c.try_wait();
        }
        self.kill_leftovers(&mut report);
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
        // The mount namespace is gone with its last process: nothing of it in ours.
        let left = mounts_under(&self.dir);
        if !left.is_empty() {
            report
                .problems
                .push(format!("mounts under the lab folder in the host: {left:?}"));
        }
        remove_cgroups(&self.tag, &mut report);
        let mut removed = false;
        for _ in 0..20 {
            match fs::remove_dir_all(&self.dir) {
                Ok(()) => {
                    removed = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    removed = true;
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        if !removed {
            report
                .problems
                .push(format!("could not remove {}", self.dir.display()));
        }
        report
    }

    /// SIGKILL (through pidfds, after re-checking) every process in the lab's mount
    /// namespace but the holder, and every process in the lab's cgroups.
    fn kill_leftovers(&self, report: &mut StopReport) {
        if self.holder_pid == 0 {
            return;
        }
        kill_matching(report, |pid| {
            pid != self.holder_pid
                && (mnt_ns_of(pid).is_some_and(|m| m == self.holder_mnt)
                    || in_cgroup(pid, &self.tag))
        });
    }
}

impl Drop for EngineLab {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "EngineLab {} ({}): the test failed; end of the engine's log:\n{}",
                self.dir.display(),
                self.engine.name(),
                self.log_tail(30)
            );
        }
        let report = self.teardown();
        if !report.problems.is_empty() || !report.killed.is_empty() {
            eprintln!(
                "EngineLab {}: teardown killed {:?}; problems: {:?}",
                self.dir.display(),
                report.killed,
                report.problems
            );
        }
    }
}

/// Labs whose test process died without unwinding (SIGKILL): PR_SET_PDEATHSIG stopped
/// the engine and the holder, but Podman's conmon and the containers outlive them (and
/// keep the lab's mount namespace alive). Kill what still names the folder or sits in its
/// cgroups, remove the cgroups and the folder. Only folders of dead test processes.
fn sweep_stale_labs() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let dir = e.path();
        let mut report = StopReport::default();
        kill_matching(&mut report, |pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let needle = dir.as_os_str().as_encoded_bytes();
            cmdline.windows(needle.len()).any(|w| w == needle) || in_cgroup(pid, &name)
        });
        remove_cgroups(&name, &mut report);
        let _ = fs::remove_dir_all(&dir);
        eprintln!(
            "EngineLab: swept the stale {} (killed {:?}; problems {:?})",
            dir.display(),
            report.killed,
            report.problems
        );
    }
}

fn in_cgroup(pid: u32, tag: &str) -> bool {
    let needle = format!("/{tag}");
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(&format!("{needle}/")) || l.ends_with(&needle))
}

/// SIGKILL (through pidfds, the test re-made after opening them) every process for which
/// `ours` holds, a few rounds, waiting for each to exit.
fn kill_matching(report: &mut StopReport, ours: impl Fn(u32) -> bool) {
    for _ in 0..3 {
        let pids: Vec<u32> = fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let mut victims = Vec::new();
        for pid in pids {
            if pid == std::process::id() {
                continue;
            }
            let Ok(fd) = Pidfd::open(pid) else { continue };
            if !ours(pid) {
                continue;
            }
            let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            if fd.signal(libc::SIGKILL).is_ok() {
                report.killed.push(format!("{pid} {}", cmdline.trim()));
                victims.push(fd);
            }
        }
        if victims.is_empty() {
            return;
        }
        for fd in victims {
            if !fd.exited_within(Duration::from_secs(10)) {
                report
                    .problems
                    .push("a process survived SIGKILL for 10 s".into());
            }
        }
    }
}

fn new_lab_dir() -> (PathBuf, String) {
    loop {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{DIR_PREFIX}{}-{n}", std::process::id());
        let dir = Path::new("/tmp").join(&tag);
        match fs::create_dir(&dir) {
            Ok(()) => return (dir, tag),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}

fn remove_cgroups(tag: &str, report: &mut StopReport) {
    fn post_order(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    post_order(&e.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let top = h.path().join(tag);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        post_order(&top, &mut dirs);
        for d in dirs {
            let mut ok = false;
            for _ in 0..20 {
                if fs::remove_dir(&d).is_ok() || !d.exists() {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !ok {
                report.problems.push(format!("rmdir {}", d.display()));
            }
        }
    }
}

fn listens(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["tcp", "tcp6"].iter().any(|file| {
        fs::read_to_string(format!("/proc/{pid}/net/{file}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
            })
    })
}

/// A lab that panics inside a thread (its Drop tears it down on the unwinding): after the
/// join, panic unless nothing of it is left: its folder, mounts under it, its cgroups, the
/// engine, the holder, the container's process, and (Podman 4.3) /run/containers,
/// /var/lib/containers or /var/lib/cni on the host.
pub fn assert_panic_cleans_up(engine: Engine) {
    let host_dirs = ["/run/containers", "/var/lib/containers", "/var/lib/cni"];
    let existed: Vec<bool> = host_dirs.iter().map(|d| Path::new(d).exists()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let joined = std::thread::spawn(move || {
        let mut c = RecipeC::build(engine);
        c.run_both("web", Ipv4Addr::new(192, 0, 2, 60), "doomed", &[]);
        let pids = [c.lab.service_pid(), c.lab.holder_pid(), c.lab.pid("web")];
        let _ = tx.send((c.lab.dir().to_path_buf(), c.lab.tag.clone(), pids));
        panic!("deliberate panic with a running {} lab", engine.name());
    })
    .join();
    assert!(joined.is_err(), "the thread should have panicked");
    let (dir, tag, pids) = rx.recv().expect("the lab was built");
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(
        mounts_under(&dir).is_empty(),
        "mounts under {}",
        dir.display()
    );
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} is alive"
        );
    }
    let cg: Vec<String> = fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|h| h.path().join(&tag))
                .filter(|p| p.exists())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(cg.is_empty(), "cgroups left: {cg:?}");
    for (d, before) in host_dirs.iter().zip(existed) {
        assert!(before || !Path::new(d).exists(), "{d} appeared on the host");
    }
}

/// `GET path` over a unix socket (HTTP/1.0): the body, or why not.
pub fn api_get(socket: &Path, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let t = Some(Duration::from_secs(5));
    s.set_read_timeout(t).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: d\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if head.lines().next().is_some_and(|l| l.contains(" 200 ")) {
        Ok(body.to_string())
    } else {
        Err(format!("GET {path}: {head}"))
    }
}

// ---------------------------------------------------------------------------
// Recipe C on an engine
// ---------------------------------------------------------------------------

/// The macvlan network (parent brlan).
pub const LAN: &str = "lan";
/// The bridge network ("app_default" < "lan": Docker's default route goes there).
pub const APP: &str = "app_default";
pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const APP_GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

/// Lab recipe C on a real engine:
///
/// ```text
/// remote 198.51.100.10/25 ── wan0 198.51.100.1  router  lan0 192.0.2.1/24 ──┐ veth rlan
/// engine namespace: bridge brlan (no address, no route to remote), the engine
///   network "lan": macvlan, parent brlan, 192.0.2.0/24, gateway 192.0.2.1
///   network "app_default": bridge, 203.0.113.0/24, gateway 203.0.113.1
/// ```
///
/// A container on both answers the router (on-link), but a connection from remote to
/// its LAN address is answered through the bridge when the container's default route
/// is the bridge's (Docker: name order; Podman: two equal-metric defaults and ARP), and
/// the engine namespace has no route back to remote: the reply is dropped and remote
/// times out, whatever rp_filter the engine sets.
#[derive(Debug)]
pub struct RecipeC {
    pub lab: EngineLab,
    pub router: Ns,
    pub remote: Ns,
}

/// The LAN's IPv6 prefix (macvlan `lan` when dual-stack), its gateway the router.
pub const LAN6_GATEWAY: &str = "2001:db8:2::1";
/// The bridge network's IPv6 gateway when dual-stack.
pub const APP6_GATEWAY: &str = "2001:db8:3::1";
/// remote's IPv6 address.
pub const REMOTE6: &str = "2001:db8:100::10";

impl RecipeC {
    pub fn build(engine: Engine) -> RecipeC {
        RecipeC::build_with(engine, false, false)
    }

    /// Recipe C with IPv6 on the LAN (`lan_v6`: the router gets 2001:db8:2::1/64 and the
    /// macvlan network 2001:db8:2::/64; remote 2001:db8:100::10/64 behind it) and/or on the
    /// bridge network (`app_v6`: 2001:db8:3::/64).
    pub fn build_with(engine: Engine, lan_v6: bool, app_v6: bool) -> RecipeC {
        let c = RecipeC::build_without_networks(engine, lan_v6);
        c.create_networks(lan_v6, app_v6);
        c
    }

    /// The namespaces, the engine and the image, but no engine network yet (the Podman 4.3
    /// CNI suite writes its own conflists).
    pub fn build_without_networks(engine: Engine, lan_v6: bool) -> RecipeC {
        let router = ok(Ns::new("router"));
        let remote = ok(Ns::new("remote"));
        ok(router.sysctl("net.ipv4.ip_forward", "1"));
        ok(router.veth("wan0", &remote, "eth0"));
        ok(router.link_up("wan0"));
        ok(remote.link_up("eth0"));
        ok(router.add_addr("wan0", net("198.51.100.1/25")));
        ok(remote.add_addr("eth0", net("198.51.100.10/25")));
        ok(remote.add_route(
            net("0.0.0.0/0"),
            Some(ip("198.51.100.1")),
            Some("eth0"),
            MAIN_TABLE,
        ));
        let host = ok(Ns::new(format!("{}-host", engine.name())));
        ok(router.veth("lan0", &host, "rlan"));
        ok(host.bridge("brlan"));
        ok(host.set_master("rlan", "brlan"));
        ok(host.link_up("rlan"));
        ok(host.link_up("brlan"));
        ok(router.link_up("lan0"));
        ok(router.add_addr("lan0", net("192.0.2.1/24")));
        if lan_v6 {
            ok(router.sysctl("net.ipv6.conf.all.forwarding", "1"));
            ok(router.add_addr("lan0", net("2001:db8:2::1/64")));
            ok(router.add_addr("wan0", net("2001:db8:100::1/64")));
            ok(remote.add_addr("eth0", net("2001:db8:100::10/64")));
            ok(remote.add_route(
                net("::/0"),
                Some(ip("2001:db8:100::1")),
                Some("eth0"),
                MAIN_TABLE,
            ));
        }
        let mut lab = EngineLab::start(engine, host);
        lab.image();
        RecipeC {
            lab,
            router,
            remote,
        }
    }

    fn create_networks(&self, lan_v6: bool, app_v6: bool) {
        let lab = &self.lab;
        let macvlan_driver = ["network", "create", "-d", "macvlan"];
        let mut args: Vec<&str> = macvlan_driver.to_vec();
        if lan_v6 {
            args.extend([
                "--ipv6",
                "--subnet",
                "2001:db8:2::/64",
                "--gateway",
                LAN6_GATEWAY,
            ]);
        }
        args.extend([
            "--subnet",
            "192.0.2.0/24",
            "--gateway",
            "192.0.2.1",
            "-o",
            "parent=brlan",
            LAN,
        ]);
        lab.cli_ok(&args);
        let mut args = vec![
            "network",
            "create",
            "--subnet",
            "203.0.113.0/24",
            "--gateway",
            "203.0.113.1",
        ];
        if app_v6 {
            args.extend([
                "--ipv6",
                "--subnet",
                "2001:db8:3::/64",
                "--gateway",
                APP6_GATEWAY,
            ]);
        }
        args.push(APP);
        lab.cli_ok(&args);
    }

    /// Run `name` on both networks (LAN address `lan_ip`), serving `banner`; its id.
    pub fn run_both(
        &mut self,
        name: &str,
        lan_ip: Ipv4Addr,
        banner: &str,
        extra: &[&str],
    ) -> String {
        let lan_ip = lan_ip.to_string();
        let lan_opt = if self.lab.engine.is_podman() {
            format!("{LAN}:ip={lan_ip}")
        } else {
            format!("name={LAN},ip={lan_ip}")
        };
        let app_opt = if self.lab.engine.is_podman() {
            APP.to_string()
        } else {
            format!("name={APP}")
        };
        let mut opts: Vec<&str> = vec!["--network", &app_opt, "--network", &lan_opt];
        opts.extend_from_slice(extra);
        self.lab.run_server(name, banner, &opts)
    }

    /// Forget the router's neighbour entry for `addr` (Podman's MACs change on restart).
    pub fn flush_router_neigh(&self, addr: Ipv4Addr) {
        let _ = self
            .router
            .run_cmd("ip", ["neigh", "flush", "to", &addr.to_string()]);
    }
}

/// remote's target on a container address.
pub fn service(addr: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(addr), SERVICE_PORT)
}

/// From inside the container's namespace, a TCP connect to `addr:9` (refused or not, it
/// resolves the gateway's neighbour entry: the kernel then prefers that default route).
pub fn touch_from_container(netns: &Path, addr: Ipv4Addr) {
    let ns = Netns::open(netns).unwrap_or_else(|e| panic!("open {}: {e}", netns.display()));
    let target = SocketAddr::new(IpAddr::V4(addr), 9);
    let _ = ns.run(move || TcpStream::connect_timeout(&target, Duration::from_secs(1)));
}

/// Make a Podman container's bridge default the one the kernel uses. With two equal-metric
/// defaults the kernel (fib_select_default) takes the first whose gateway is not known
/// dead: a gateway with NO neighbour entry counts as alive, only a FAILED (or INCOMPLETE)
/// entry makes it skip to the next default. So: resolve the bridge gateway, and mark the
/// LAN gateway's entry FAILED inside the container, as an unanswered ARP would (the next
/// packet sent to it resolves it again). Call it right after an on-link probe from the
/// router, so that the router does not ARP for the container (which would make the LAN
/// gateway's entry valid again) during the next probe.
pub fn prefer_bridge_default(netns: &Path) {
    touch_from_container(netns, APP_GATEWAY);
    let routes = ip_show(netns, "route");
    let lan_if = routes
        .lines()
        .find_map(|l| l.strip_prefix(&format!("default via {ROUTER_LAN} dev ")))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no default via {ROUTER_LAN} in the container:\n{routes}"))
        .to_string();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args([
            "ip",
            "neigh",
            "replace",
            &ROUTER_LAN.to_string(),
            "dev",
            &lan_if,
            "nud",
            "failed",
        ])
        .output()
        .expect("run ip neigh");
    assert!(
        out.status.success(),
        "ip neigh replace … nud failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip route get DST from SRC` inside a namespace file: the text.
pub fn route_get(netns: &Path, dst: Ipv4Addr, src: Ipv4Addr) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args([
            "ip",
            "route",
            "get",
            &dst.to_string(),
            "from",
            &src.to_string(),
        ])
        .output()
        .expect("run ip route get");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `ip OBJECT show` inside a namespace file (e.g. "neigh", "route"): the text.
pub fn ip_show(netns: &Path, object: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", object, "show"])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `ip FAMILY OBJECT show` inside a namespace file (e.g. "-6", "route").
pub fn ip_show_family(netns: &Path, family: &str, object: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", family, object, "show"])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// symroute's objects (protocol 115) in a namespace file, sorted.
pub fn try_tagged(path: &Path) -> Result<(Vec<Rule>, Vec<Route>), String> {
    let netns = Netns::open(path).map_err(|e| e.to_string())?;
    let sock = netns.socket().map_err(|e| e.to_string())?;
    let snap = NetlinkKernel::new(sock)
        .snapshot()
        .map_err(|e| e.to_string())?;
    let mut rules: Vec<Rule> = snap
        .rules
        .into_iter()
        .filter(|r| r.protocol == TAG)
        .collect();
    let mut routes: Vec<Route> = snap
        .routes
        .into_iter()
        .filter(|r| r.protocol == TAG)
        .collect();
    rules.sort();
    routes.sort();
    Ok((rules, routes))
}

/// The `from` addresses of symroute's rules in a container, sorted, as text.
pub fn rule_sources(path: &Path) -> Vec<String> {
    let (rules, _) = try_tagged(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut s: Vec<String> = rules
        .iter()
        .filter_map(|r| r.src.map(|n| n.addr().to_string()))
        .collect();
    s.sort();
    s
}

/// Poll `done` every 50 ms up to `bound`; panic naming `what`.
pub fn wait_for(bound: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "timed out after {bound:?} waiting for: {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Wait until the container's symroute rules come from exactly `addrs`.
pub fn wait_rules(lab: &EngineLab, name: &str, addrs: &[Ipv4Addr]) {
    wait_rules_from(lab, name, addrs.iter().map(ToString::to_string).collect());
}

/// Wait until the container's symroute rules come from exactly `want` (addresses as
/// text, any family).
pub fn wait_rules_from(lab: &EngineLab, name: &str, mut want: Vec<String>) {
    want.sort();
    let mut last = Vec::new();
    let start = Instant::now();
    loop {
        last = try_tagged(&lab.netns_path(name))
            .map(|(r, _)| {
                let mut s: Vec<String> = r
                    .iter()
                    .filter_map(|r| r.src.map(|n| n.addr().to_string()))
                    .collect();
                s.sort();
                s
            })
            .unwrap_or(last);
        if last == want {
            return;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "{name}: after {CONVERGE:?} symroute's rules are from {last:?}, expected from {want:?}"
        );
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// The binary under test
// ---------------------------------------------------------------------------

/// Run `symroute ARGS` inside the engine's namespace (an empty config file).
pub fn symroute_in(lab: &EngineLab, args: &[&str]) -> crate::common::Out {
    let config = lab.dir().join("symroute-empty.toml");
    fs::write(&config, "").expect("write config");
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args.iter().map(ToString::to_string));
    let mut cmd = lab.ns().command(&*BIN);
    clean_env(&mut cmd);
    let out = cmd
        .args(&all)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", *BIN));
    crate::common::Out {
        args: all,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `symroute daemon --docker-host <lab> --log-format json` inside the engine's namespace,
/// its log in the lab's folder; stopped by its pid (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(lab: &EngineLab, extra: &[&str]) -> Daemon {
        static N: AtomicUsize = AtomicUsize::new(0);
        let log = lab.dir().join(format!(
            "symroute-daemon-{}.log",
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let config = lab.dir().join("symroute-empty.toml");
        fs::write(&config, "").expect("write config");
        let file = fs::File::create(&log).expect("create daemon log");
        let mut cmd = lab.ns().command(&*BIN);
        clean_env(&mut cmd);
        cmd.arg("--config")
            .arg(&config)
            .args([
                "daemon",
                "--docker-host",
                &lab.host(),
                "--log-format",
                "json",
            ])
            .args(extra)
            .env("SYMROUTE_LOG", "info,symroute=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        crate::common::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start the daemon: {e}"));
        let d = Daemon {
            pid: child.id(),
            child,
            log,
        };
        d.wait_logged("connected to Docker");
        d
    }

    pub fn lines(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| serde_json::json!({ "raw": l })))
            .collect()
    }

    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .or_else(|| l["fields"]["message"].as_str())
                    == Some(message)
            })
            .collect()
    }

    pub fn wait_logged(&self, message: &str) -> Value {
        wait_for(CONVERGE, &format!("daemon log line {message:?}"), || {
            !self.logged(message).is_empty()
        });
        self.logged(message).remove(0)
    }

    /// WARN and ERROR lines, as text.
    pub fn problems(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| {
                l.get("raw").is_some() || matches!(l["level"].as_str(), Some("WARN" | "ERROR"))
            })
            .map(|l| l.to_string())
            .collect()
    }

    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).expect("pid fits"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "symroute daemon (pid {}): end of its log:\n{}",
                self.pid,
                self.log_tail(40)
            );
        }
        self.stop();
    }
}
