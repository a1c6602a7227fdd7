//! A real Docker engine for tests: Debian's `dockerd` 20.10 (API 1.41) started
//! inside an anonymous lab namespace ([`DockerLab`]), a busybox image built
//! from the host's `busybox-static` ([`DockerLab::image`]), and the
//! topologies of lab recipe C around it ([`macvlan::MacvlanLab`],
//! [`routed::RoutedLab`]).
//!
//! Isolation, and what a [`DockerLab`] guarantees:
//!
//! - dockerd runs in a network namespace the lab created (entered with
//!   `setns` only, like `nsenter --net`: never `ip netns exec`, whose /sys
//!   remount breaks dockerd). Its bridges, veths, sysctls and iptables rules
//!   live there; the root namespace's network is never touched.
//! - Everything it writes lives under one folder of its own,
//!   `$CARGO_TARGET_TMPDIR/symroute-docker-<pid>-<n>`: data-root (with its
//!   managed containerd's root), exec-root (containerd state and socket,
//!   the `netns` bind mounts), the API socket, the pid file, its log, its
//!   config file (an empty one: /etc/docker/daemon.json never applies) and the
//!   CLI's config. Containers' cgroups go under `/<the same name>` in every
//!   cgroup hierarchy (`--cgroup-parent`), not under Docker's `/docker`.
//!   The exceptions are the files containerd itself always puts elsewhere:
//!   shim sockets under `/run/containerd/s/` (removed by the shims on a
//!   clean exit, and by the teardown for any shim it had to kill).
//! - Dropping the lab, on every path including a panic, or calling
//!   [`DockerLab::stop`]: `docker rm -f` every container, SIGTERM dockerd (by
//!   the pid of the child we spawned; SIGKILL after [`STOP_TIMEOUT`]), then
//!   SIGKILL whatever is left that belongs to this lab: processes whose
//!   command line names the lab's folder (dockerd, its containerd, the
//!   containerd shims) and all their descendants (container processes),
//!   signalled through pidfds so a recycled pid is never hit. Then every
//!   mount under the folder is detached, the lab's cgroups are removed, then
//!   the folder. Nothing else is ever signalled: several labs (in this
//!   process or others) can run side by side.
//! - If the test process dies without unwinding (SIGKILL), dockerd gets
//!   SIGTERM from the kernel (`PR_SET_PDEATHSIG`: it follows the thread that
//!   started it, which is why a lab is not `Send`) and shuts down its
//!   containers and containerd; the next lab started anywhere removes the
//!   folders of dead test processes that nothing references any more.
//!
//! dockerd is heavy on a 2-core machine: [`DockerLab::start`] takes
//! [`DOCKER_SLOT`], so the labs of one test binary run one at a time (the
//! builder's `unserialized()` opts out, for a second lab alongside).

pub mod api;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use serde_json::Value;
use symroute_linux::netns::Netns;
use symroute_testkit::lab::Ns;

/// The dockerd the labs start: `$SYMROUTE_DOCKERD` (scripts/test sets it to
/// the one it found, e.g. Docker CE's /usr/bin/dockerd), else Debian's docker.io.
pub static DOCKERD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    std::env::var("SYMROUTE_DOCKERD").unwrap_or_else(|_| "/usr/sbin/dockerd".to_string())
});
/// Debian's docker.io CLI (20.10). Named by path: another `docker` (a newer
/// client under /usr/local/bin) may come first in PATH.
pub const DOCKER: &str = "/usr/bin/docker";
/// busybox-static's binary, copied into the test image.
pub const BUSYBOX: &str = "/bin/busybox";
/// The test image, imported into every lab by [`DockerLab::image`].
pub const IMAGE: &str = "symroute-test/bb:latest";
/// The TCP port the image's default command serves on.
pub const SERVICE_PORT: u16 = 80;
/// What the image's server answers (followed by a newline) unless the
/// container's environment sets [`BANNER_ENV`].
pub const DEFAULT_BANNER: &str = "hello from bb";
/// The environment variable that sets a container's banner
/// (`-e BANNER=...`).
pub const BANNER_ENV: &str = "BANNER";
/// How long dockerd may take to answer `GET /_ping` after its start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dockerd may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for one docker CLI command (the CLI is killed after it).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a container's server may take to listen after `docker run`.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);

/// The image's command: a busybox `nc` that serves the banner script to
/// every connection (`-ll`: keeps listening, one child per connection), under
/// a shell that exits on SIGTERM (a PID 1 without a handler ignores it, which
/// would make `docker stop` and dockerd's shutdown wait for their timeouts).
const IMAGE_CMD: &str =
    r#"CMD ["/bin/sh","-c","trap \"exit 0\" TERM INT; nc -ll -p 80 -e /bin/banner & wait"]"#;
/// `/bin/banner` in the image.
const BANNER_SCRIPT: &str = "#!/bin/sh\necho \"${BANNER:-hello from bb}\"\n";
/// busybox applets linked in the image's /bin.
const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "nc",
    "httpd",
    "ip",
    "ping",
    "wget",
    "sleep",
    "cat",
    "echo",
    "ls",
    "ps",
    "kill",
    "hostname",
    "ifconfig",
    "route",
    "netstat",
    "env",
    "true",
    "false",
    "grep",
    "sed",
    "mkdir",
    "rm",
    "mount",
    "sysctl",
    "nslookup",
    "traceroute",
];
/// Folder names of labs: `symroute-docker-<test pid>-<n>`; also their
/// cgroup parent's name.
const DIR_PREFIX: &str = "symroute-docker-";
/// Longest path below a lab's folder that must fit in a unix socket
/// address (108 bytes with the terminating NUL).
const LONGEST_SOCKET: &str = "exec/containerd/containerd-debug.sock";
/// Where containerd puts shim sockets whatever its configuration.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s/";

/// Serializes the [`DockerLab`]s of one test binary (dockerd is heavy).
pub static DOCKER_SLOT: Mutex<()> = Mutex::new(());
static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread holds [`DOCKER_SLOT`] (taking it twice would
    /// deadlock).
    static HOLDS_SLOT: Cell<bool> = const { Cell::new(false) };
}

/// [`DOCKER_SLOT`], held by a lab, with this thread's flag.
struct Slot {
    _guard: MutexGuard<'static, ()>,
}

impl Slot {
    fn take() -> Slot {
        assert!(
            !HOLDS_SLOT.get(),
            "this thread already runs a serialized DockerLab: a second DockerLab::start() would wait \
             for itself forever. Start the second one with DockerLab::builder().unserialized()"
        );
        // A test that panicked while holding the slot poisons it; its lab
        // was torn down on the way, so the slot is free to use.
        let guard = DOCKER_SLOT.lock().unwrap_or_else(PoisonError::into_inner);
        HOLDS_SLOT.set(true);
        Slot { _guard: guard }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        HOLDS_SLOT.set(false);
    }
}

/// What a teardown did.
#[derive(Debug, Default)]
pub struct StopReport {
    /// Processes of the lab still alive after dockerd exited (or was
    /// killed), which the teardown killed: `"<pid> <command line>"`. Empty
    /// after a clean stop: dockerd stops its containerd and the shims exit
    /// with their containers.
    pub killed: Vec<String>,
    /// Mount points under the lab's folder that the teardown detached.
    pub unmounted: Vec<PathBuf>,
    /// Shim sockets under /run/containerd/s/ of killed shims, removed.
    pub removed_sockets: Vec<PathBuf>,
    /// What could not be cleaned (or cleaned only by force); empty when
    /// everything went as planned.
    pub problems: Vec<String>,
}

/// Starts a [`DockerLab`] (see [`DockerLab::builder`]).
#[must_use]
pub struct DockerLabBuilder {
    ns: Option<Ns>,
    args: Vec<String>,
    serialized: bool,
}

impl DockerLabBuilder {
    /// Run dockerd in `ns` (prepared by the caller: links, addresses,
    /// routes, sysctls) instead of a new empty namespace "dockerhost".
    pub fn ns(mut self, ns: Ns) -> Self {
        self.ns = Some(ns);
        self
    }

    /// An extra dockerd argument (e.g. `--iptables=false`), after the
    /// harness's own.
    pub fn dockerd_arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Do not take [`DOCKER_SLOT`]: for a second lab next to one this thread
    /// already runs.
    pub fn unserialized(mut self) -> Self {
        self.serialized = false;
        self
    }

    /// Start dockerd and wait until it answers. Panics (after cleaning up)
    /// when it cannot be started or does not answer within
    /// [`READY_TIMEOUT`], with the end of its log.
    pub fn start(self) -> DockerLab {
        require_docker();
        let slot = self.serialized.then(Slot::take);
        sweep_stale_labs();
        let ns = self
            .ns
            .unwrap_or_else(|| Ns::new("dockerhost").unwrap_or_else(|e| panic!("lab: {e}")));
        let (dir, tag) = new_lab_dir();
        let mut lab = DockerLab {
            ns,
            dir,
            tag,
            dockerd: None,
            dockerd_args: self.args,
            pid: 0,
            image_ready: Mutex::new(false),
            stopped: false,
            _slot: slot,
            _not_send: PhantomData,
        };
        // From here on, a panic drops `lab`, which tears down what exists.
        lab.spawn_dockerd();
        lab.wait_ready();
        lab.check_pidfile();
        lab
    }
}

/// A dockerd running in its own lab namespace. See the module documentation
/// for what it isolates and how it is torn down.
///
/// Not `Send`: dockerd is tied to the thread that started it
/// (`PR_SET_PDEATHSIG`), so the lab must stay on that thread.
pub struct DockerLab {
    ns: Ns,
    dir: PathBuf,
    /// The folder's name, also the containers' cgroup parent.
    tag: String,
    dockerd: Option<Child>,
    /// The builder's extra dockerd arguments (reused by a restart).
    dockerd_args: Vec<String>,
    pid: u32,
    image_ready: Mutex<bool>,
    stopped: bool,
    _slot: Option<Slot>,
    _not_send: PhantomData<MutexGuard<'static, ()>>,
}

impl std::fmt::Debug for DockerLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerLab")
            .field("ns", &self.ns)
            .field("dir", &self.dir)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl DockerLab {
    /// Start dockerd in a new namespace "dockerhost" (serialized by
    /// [`DOCKER_SLOT`]).
    pub fn start() -> DockerLab {
        DockerLab::builder().start()
    }

    /// Start dockerd in `ns`, prepared by the caller.
    pub fn start_in(ns: Ns) -> DockerLab {
        DockerLab::builder().ns(ns).start()
    }

    /// Options: the namespace, extra dockerd arguments, serialization.
    pub fn builder() -> DockerLabBuilder {
        DockerLabBuilder {
            ns: None,
            args: Vec::new(),
            serialized: true,
        }
    }

    /// The Docker host's namespace: dockerd, its bridges, its iptables rules.
    pub fn ns(&self) -> &Ns {
        &self.ns
    }

    /// dockerd's pid (the child this lab spawned).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The lab's folder (removed by the teardown).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The containers' cgroup parent (`/<name>` in every hierarchy).
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.tag)
    }

    /// The API socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `unix://<socket>`, for DOCKER_HOST or an API client.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    /// dockerd's log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The last `lines` lines of dockerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }

    /// `GET /_ping` on the API socket: Ok when dockerd answers `OK`.
    pub fn ping(&self) -> Result<(), String> {
        ping(&self.socket_path())
    }

    fn spawn_dockerd(&mut self) {
        let config = self.dir.join("daemon.json");
        fs::write(&config, "{}\n").unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        // Appended to: a restarted dockerd keeps the first one's log.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log_path().display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup dockerd log: {e}"));
        let path = |p: &str| self.dir.join(p).display().to_string();
        let mut args = vec![
            format!("--config-file={}", config.display()),
            format!("--data-root={}", path("data")),
            format!("--exec-root={}", path("exec")),
            format!("--pidfile={}", path("dockerd.pid")),
            format!("--host={}", self.docker_host()),
            format!("--cgroup-parent={}", self.cgroup_parent()),
            // No docker-proxy processes: published ports are pure iptables.
            "--userland-proxy=false".to_string(),
            "--shutdown-timeout=3".to_string(),
            "--log-level=warn".to_string(),
        ];
        args.extend(self.dockerd_args.iter().cloned());
        let mut cmd = self.ns.command(DOCKERD.as_str());
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        for var in DOCKER_ENV_VARS {
            cmd.env_remove(var);
        }
        // Killed with the test: dockerd then stops its containers and containerd.
        super::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {} in ns {}: {e}", *DOCKERD, self.ns.name()));
        self.pid = child.id();
        self.dockerd = Some(child);
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = self
                .dockerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "dockerd (pid {}) exited ({status}) before answering on {}; end of {}:\n{}",
                    self.pid,
                    self.socket_path().display(),
                    self.log_path().display(),
                    self.log_tail(40)
                );
            }
            let answer = self.ping();
            match answer {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!(
                    "dockerd (pid {}) did not answer GET /_ping on {} within {READY_TIMEOUT:?} \
                     (last: {e}); end of {}:\n{}",
                    self.pid,
                    self.socket_path().display(),
                    self.log_path().display(),
                    self.log_tail(40)
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn check_pidfile(&self) {
        let file = self.dir.join("dockerd.pid");
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read dockerd's pid file {}: {e}", file.display()));
        assert_eq!(
            text.trim().parse::<u32>().ok(),
            Some(self.pid),
            "dockerd's pid file {} does not name the process we started",
            file.display()
        );
    }

    /// Run the docker CLI against this lab (DOCKER_HOST set, its own
    /// DOCKER_CONFIG, at most [`CLI_TIMEOUT`]). Ok: standard output without
    /// its trailing newline. Err: the command, its exit status and standard
    /// error.
    pub fn docker<I, S>(&self, args: I) -> Result<String, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let line = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(DOCKER);
        for var in DOCKER_ENV_VARS {
            cmd.env_remove(var);
        }
        cmd.args(&args)
            .env("DOCKER_HOST", self.docker_host())
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .stdin(Stdio::null());
        let output = run_bounded(cmd, CLI_TIMEOUT).map_err(|e| format!("docker {line}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "docker {line}: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string())
    }

    /// [`DockerLab::docker`], panicking on failure.
    pub fn docker_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.docker(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Import the test image (once per lab) and return its name
    /// ([`IMAGE`]). Its root is busybox-static with links for the usual
    /// applets (`sh nc ip httpd sleep cat ...`), `/bin/banner` and
    /// `/www/index.html`; its default command answers every TCP connection
    /// on port [`SERVICE_PORT`] with the banner ([`DEFAULT_BANNER`], or
    /// `$BANNER`) and a newline, then closes it.
    pub fn image(&self) -> &'static str {
        let mut ready = self
            .image_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !*ready {
            self.import_image();
            *ready = true;
        }
        IMAGE
    }

    fn import_image(&self) {
        let base = self.dir.join("image");
        let root = base.join("rootfs");
        for sub in ["bin", "www", "etc", "tmp"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        require_static(Path::new(BUSYBOX));
        let bin = root.join("bin");
        fs::copy(BUSYBOX, bin.join("busybox"))
            .unwrap_or_else(|e| panic!("copy {BUSYBOX} into the image: {e}"));
        for applet in APPLETS {
            symlink("busybox", bin.join(applet))
                .unwrap_or_else(|e| panic!("link {applet} in the image: {e}"));
        }
        let banner = bin.join("banner");
        fs::write(&banner, BANNER_SCRIPT)
            .and_then(|()| fs::set_permissions(&banner, fs::Permissions::from_mode(0o755)))
            .unwrap_or_else(|e| panic!("write {}: {e}", banner.display()));
        fs::write(root.join("www/index.html"), format!("{DEFAULT_BANNER}\n"))
            .unwrap_or_else(|e| panic!("write www/index.html: {e}"));
        let tar = base.join("rootfs.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run tar: {e}"));
        assert!(
            out.status.success(),
            "tar of the image root failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.docker_ok([
            OsStr::new("import"),
            OsStr::new("-c"),
            OsStr::new(IMAGE_CMD),
            tar.as_os_str(),
            OsStr::new(IMAGE),
        ]);
    }

    /// `docker run -d --pull never --name <name> <args...>` (`args`: options,
    /// then the image and an optional command); the full container id.
    pub fn run_detached(&self, name: &str, args: &[&str]) -> String {
        let mut all = vec!["run", "-d", "--pull", "never", "--name", name];
        all.extend_from_slice(args);
        let out = self.docker_ok(&all);
        out.lines()
            .last()
            .unwrap_or_else(|| panic!("docker {}: printed no container id", all.join(" ")))
            .trim()
            .to_string()
    }

    /// `docker exec <id> <args...>`: its standard output.
    pub fn exec(&self, id: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["exec", id];
        all.extend_from_slice(args);
        self.docker(&all)
    }

    /// `docker rm -f <id>`.
    pub fn rm_f(&self, id: &str) -> Result<(), String> {
        self.docker(["rm", "-f", id]).map(drop)
    }

    /// `docker inspect` of a container, as JSON (the object, not the array).
    pub fn inspect(&self, id: &str) -> Value {
        let text = self.docker_ok(["inspect", "--type", "container", id]);
        let mut v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("docker inspect {id}: not JSON ({e}): {text}"));
        v.get_mut(0)
            .map_or_else(|| panic!("docker inspect {id}: empty answer"), Value::take)
    }

    /// The pid of a running container's first process.
    pub fn inspect_pid(&self, id: &str) -> u32 {
        let v = self.inspect(id);
        let pid = v["State"]["Pid"].as_u64().unwrap_or(0);
        assert!(pid > 0, "container {id} is not running: {}", v["State"]);
        u32::try_from(pid).expect("pid fits u32")
    }

    /// `/proc/<pid>/ns/net` of a running container.
    pub fn container_netns_path(&self, id: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.inspect_pid(id)))
    }

    fn endpoint(&self, id: &str, network: &str) -> Value {
        let v = self.inspect(id);
        let ep = &v["NetworkSettings"]["Networks"][network];
        assert!(
            ep.is_object(),
            "container {id} is not on network {network}: {}",
            v["NetworkSettings"]["Networks"]
        );
        ep.clone()
    }

    /// The container's IPv4 address on `network`.
    pub fn container_ip(&self, id: &str, network: &str) -> IpAddr {
        let ep = self.endpoint(id, network);
        let text = ep["IPAddress"].as_str().unwrap_or_default();
        text.parse()
            .unwrap_or_else(|e| panic!("container {id} on {network}: IPAddress {text:?}: {e}"))
    }

    /// The container's MAC address on `network` (`02:42:...`).
    pub fn container_mac(&self, id: &str, network: &str) -> String {
        let ep = self.endpoint(id, network);
        ep["MacAddress"]
            .as_str()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| panic!("container {id} on {network}: no MacAddress: {ep}"))
            .to_string()
    }

    /// The name of the container's interface on `network`, found by MAC
    /// address in its namespace (the API never names it, and ethN order is
    /// not guaranteed).
    pub fn container_iface(&self, id: &str, network: &str) -> String {
        let mac = parse_mac(&self.container_mac(id, network));
        let path = self.container_netns_path(id);
        let netns = Netns::open(&path).unwrap_or_else(|e| panic!("container {id}: {e}"));
        let mut sock = netns
            .socket()
            .unwrap_or_else(|e| panic!("container {id}: {e}"));
        let links = sock
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .unwrap_or_else(|e| panic!("list links of container {id}: {e}"));
        let mut seen = Vec::new();
        for m in links {
            let RouteNetlinkMessage::NewLink(link) = m else {
                continue;
            };
            let mut name = None;
            let mut addr = None;
            for a in &link.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Address(b) => addr = Some(b.clone()),
                    _ => {}
                }
            }
            if let Some(name) = name {
                if addr.as_deref() == Some(&mac[..]) {
                    return name;
                }
                seen.push(name);
            }
        }
        panic!(
            "container {id}: no interface has the MAC address of network {network} \
             (interfaces: {})",
            seen.join(", ")
        );
    }

    /// Wait until the container listens on TCP `port` (IPv4 or IPv6
    /// wildcard or address), read from /proc/<pid>/net/tcp{,6}; panics after
    /// [`LISTEN_TIMEOUT`] with the container's logs.
    pub fn wait_listening(&self, id: &str, port: u16) {
        let pid = self.inspect_pid(id);
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if listens(pid, port) {
                return;
            }
            if Instant::now() >= deadline {
                let logs = self
                    .docker(["logs", "--tail", "20", id])
                    .unwrap_or_else(|e| e);
                panic!(
                    "container {id} (pid {pid}) does not listen on tcp port {port} after \
                     {LISTEN_TIMEOUT:?}; its logs:\n{logs}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run a container of the test image serving its banner, and wait until
    /// it listens: `docker run -d --name <name> [-e BANNER=<banner>]
    /// <options...> <image>`. The full container id.
    pub fn run_server(&self, name: &str, banner: Option<&str>, options: &[&str]) -> String {
        let env = banner.map(|b| format!("{BANNER_ENV}={b}"));
        let mut args: Vec<&str> = Vec::new();
        if let Some(env) = &env {
            args.extend(["-e", env.as_str()]);
        }
        args.extend_from_slice(options);
        args.push(self.image());
        let id = self.run_detached(name, &args);
        self.wait_listening(&id, SERVICE_PORT);
        id
    }

    /// Kill dockerd with SIGKILL and reap it, leaving its containerd, shims
    /// and containers behind (a crashed daemon), for teardown tests.
    pub fn kill_dockerd(&mut self) {
        if let Some(child) = self.dockerd.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop dockerd cleanly (SIGTERM, as on `systemctl restart docker`: it
    /// stops the containers and its containerd) and start a new one with the
    /// same folder, socket, arguments and namespace; wait until it answers.
    /// Containers with a restart policy come back, as after a host's restart.
    /// Panics (the lab is torn down by its Drop) when the old dockerd does
    /// not exit within [`STOP_TIMEOUT`] or the new one does not answer.
    pub fn restart_dockerd(&mut self) {
        if self.dockerd_running() {
            let mut report = StopReport::default();
            self.stop_dockerd(&mut report);
            assert!(
                report.problems.is_empty(),
                "restart: stopping dockerd: {:?}",
                report.problems
            );
        } else if let Some(child) = self.dockerd.as_mut() {
            let _ = child.try_wait();
        }
        self.spawn_dockerd();
        self.wait_ready();
        self.check_pidfile();
    }

    /// Tear the lab down now and report what it took.
    pub fn stop(mut self) -> StopReport {
        let report = self.teardown();
        self.stopped = true;
        report
    }

    fn dockerd_running(&mut self) -> bool {
        self.dockerd
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn teardown(&mut self) -> StopReport {
        let mut report = StopReport::default();
        if self.dockerd_running() {
            match self.docker(["ps", "-aq", "--no-trunc"]) {
                Ok(out) => {
                    let ids: Vec<&str> = out.split_whitespace().collect();
                    if !ids.is_empty() {
                        let mut args = vec!["rm", "-f"];
                        args.extend(ids);
                        if let Err(e) = self.docker(&args) {
                            report.problems.push(e);
                        }
                    }
                }
                Err(e) => report.problems.push(e),
            }
            self.stop_dockerd(&mut report);
        }
        if let Some(child) = self.dockerd.as_mut() {
            // Reap it if it died on its own (no zombie left).
            let _ = child.try_wait();
        }
        reap(&self.dir, &self.tag, &mut report);
        report
    }

    fn stop_dockerd(&mut self, report: &mut StopReport) {
        let Some(child) = self.dockerd.as_mut() else {
            return;
        };
        // Not reaped yet (try_wait said running), so the pid is still our
        // child's.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
            report
                .problems
                .push(format!("SIGTERM dockerd (pid {pid}): {e}"));
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => break,
            }
        }
        report.problems.push(format!(
            "dockerd (pid {pid}) did not exit within {STOP_TIMEOUT:?} of SIGTERM: killed"
        ));
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for DockerLab {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "DockerLab {}: the test failed; end of dockerd's log:\n{}",
                self.dir.display(),
                self.log_tail(30)
            );
        }
        let report = self.teardown();
        if !report.problems.is_empty() {
            eprintln!(
                "DockerLab {}: teardown problems:\n  {}",
                self.dir.display(),
                report.problems.join("\n  ")
            );
        }
    }
}

/// Environment variables of the docker CLI and daemon that must not leak in
/// from the test's environment.
const DOCKER_ENV_VARS: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_API_VERSION",
    "DOCKER_CONFIG",
];

/// Panic unless root and Debian's docker.io is installed.
fn require_docker() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "Docker tests must run as root (they start dockerd in network namespaces they create); \
         effective uid is {uid}. Run: sudo -E cargo test --test docker_harness"
    );
    for path in [DOCKERD.as_str(), DOCKER] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: install Debian's docker.io (scripts/test does: apt-get install docker.io)"
        );
    }
}

/// Panic unless `path` is a statically linked ELF (no PT_INTERP): the image
/// has no libraries.
fn require_static(path: &Path) {
    let bytes = fs::read(path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (install busybox-static: apt-get install busybox-static)",
            path.display()
        )
    });
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    assert!(
        bytes.len() > 64 && bytes.starts_with(b"\x7fELF") && bytes[4] == 2 && bytes[5] == 1,
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let phoff = usize::try_from(u64_at(0x20)).expect("offset fits usize");
    let phentsize = usize::from(u16_at(0x36));
    let phnum = usize::from(u16_at(0x38));
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        assert!(at + 4 <= bytes.len(), "{}: truncated ELF", path.display());
        assert!(
            u32_at(at) != PT_INTERP,
            "{} is dynamically linked; the test image needs a static busybox: \
             apt-get install busybox-static",
            path.display()
        );
    }
}

/// A new, empty folder for a lab, and its name.
fn new_lab_dir() -> (PathBuf, String) {
    let base = &crate::common::target_tmpdir();
    fs::create_dir_all(base).unwrap_or_else(|e| panic!("create {}: {e}", base.display()));
    loop {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{DIR_PREFIX}{}-{n}", std::process::id());
        let dir = base.join(&tag);
        let longest = dir.join(LONGEST_SOCKET);
        assert!(
            longest.as_os_str().len() < 100,
            "{} is too long for a unix socket address; use a shorter CARGO_TARGET_DIR",
            longest.display()
        );
        match fs::create_dir(&dir) {
            Ok(()) => return (dir, tag),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}

/// Remove the folders (and cgroups, mounts) of labs whose test process is
/// gone and that no process references any more. Kills nothing.
fn sweep_stale_labs() {
    let base = &crate::common::target_tmpdir();
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let dir = entry.path();
        if !processes_referencing(&dir).is_empty() {
            eprintln!(
                "DockerLab: {} belongs to a dead test process but processes still use it; left alone",
                dir.display()
            );
            continue;
        }
        let mut report = StopReport::default();
        unmount_under(&dir, &mut report);
        remove_cgroups(&name, &mut report);
        if let Err(e) = fs::remove_dir_all(&dir) {
            report
                .problems
                .push(format!("remove {}: {e}", dir.display()));
        }
        if !report.problems.is_empty() {
            eprintln!(
                "DockerLab: sweeping stale {}: {}",
                dir.display(),
                report.problems.join("; ")
            );
        }
    }
}

/// Kill what is left of the lab in `dir` (processes naming it and their
/// descendants), detach its mounts, remove its cgroups, then the folder.
fn reap(dir: &Path, tag: &str, report: &mut StopReport) {
    kill_leftovers(dir, report);
    unmount_under(dir, report);
    remove_cgroups(tag, report);
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => report
            .problems
            .push(format!("remove {}: {e}", dir.display())),
    }
}

/// Tear down what is left of a lab whose [`DockerLab`] value is gone (its
/// test process was killed): the teardown's last steps, from killing what
/// still names the folder to removing it. Panics unless `dir` is a lab
/// folder of this harness.
pub fn reap_lab_folder(dir: &Path) -> StopReport {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        dir.parent() == Some(crate::common::target_tmpdir().as_path())
            && name.starts_with(DIR_PREFIX),
        "{} is not a DockerLab folder",
        dir.display()
    );
    let mut report = StopReport::default();
    reap(dir, &name, &mut report);
    report
}

/// `GET /_ping` over a unix socket.
fn ping(socket: &Path) -> Result<(), String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let timeout = Some(Duration::from_secs(2));
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .map_err(|e| format!("send GET /_ping: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read answer to GET /_ping: {e}"))?;
    let status_ok = answer
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    if status_ok && answer.ends_with("OK") {
        Ok(())
    } else {
        Err(format!("unexpected answer to GET /_ping: {answer:?}"))
    }
}

/// The last `lines` lines of a file (or why it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Run `cmd` (stdout and stderr captured) for at most `timeout`, killing it
/// after that.
pub(crate) fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("start: {e}"))?;
    // Opened while the child is unreaped: it names exactly that process.
    let pidfd = Pidfd::open(child.id()).ok();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let result = if let Ok(out) = rx.recv_timeout(timeout) {
        out.map_err(|e| format!("wait: {e}"))
    } else {
        if let Some(fd) = &pidfd {
            let _ = fd.signal(libc::SIGKILL);
        }
        let out = rx.recv().ok().and_then(Result::ok);
        Err(format!(
            "still running after {timeout:?}: killed{}",
            out.map(|o| format!("; stderr: {}", String::from_utf8_lossy(&o.stderr).trim()))
                .unwrap_or_default()
        ))
    };
    let _ = waiter.join();
    result
}

/// A pidfd: signals the process it was opened for, never a recycled pid.
pub(crate) struct Pidfd(OwnedFd);

impl Pidfd {
    pub(crate) fn open(pid: u32) -> io::Result<Pidfd> {
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just gave us this descriptor; nobody else owns it.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: valid pidfd, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Whether the process has exited, waiting up to `timeout`.
    pub(crate) fn exited_within(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        r > 0
    }
}

/// One process as seen in /proc.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    /// NUL separators shown as spaces.
    pub cmdline: String,
    raw_cmdline: Vec<u8>,
}

fn read_proc(pid: u32) -> Option<ProcInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ");
    Some(ProcInfo {
        pid,
        ppid,
        cmdline,
        raw_cmdline: raw,
    })
}

/// Every process of the machine (that could be read).
pub fn processes() -> Vec<ProcInfo> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_proc)
        .collect()
}

fn references(p: &ProcInfo, needle: &[u8]) -> bool {
    !needle.is_empty() && p.raw_cmdline.windows(needle.len()).any(|w| w == needle)
}

/// Processes whose command line contains `path` (dockerd, its containerd,
/// the shims of a lab: they all name its folder).
pub fn processes_referencing(path: &Path) -> Vec<ProcInfo> {
    let needle = path.as_os_str().as_bytes();
    processes()
        .into_iter()
        .filter(|p| references(p, needle))
        .collect()
}

/// The lab's processes: those naming `dir` and all their descendants.
fn lab_processes(dir: &Path) -> Vec<ProcInfo> {
    let all = processes();
    let needle = dir.as_os_str().as_bytes();
    let me = std::process::id();
    let mut set: BTreeSet<u32> = all
        .iter()
        .filter(|p| references(p, needle) && p.pid != me)
        .map(|p| p.pid)
        .collect();
    loop {
        let before = set.len();
        for p in &all {
            if set.contains(&p.ppid) && p.pid != me {
                set.insert(p.pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    all.into_iter().filter(|p| set.contains(&p.pid)).collect()
}

/// Paths under /run/containerd/s/ of the listening sockets `pid` holds.
fn shim_sockets(pid: u32) -> Vec<PathBuf> {
    let mut inodes = BTreeSet::new();
    if let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(ino) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(ino.to_string());
                }
            }
        }
    }
    let table = fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (inode, path) = (cols.get(6)?, cols.get(7)?);
            (inodes.contains(*inode) && path.starts_with(SHIM_SOCKET_DIR))
                .then(|| PathBuf::from(path))
        })
        .collect()
}

/// SIGKILL what is left of a lab (see [`lab_processes`]), through pidfds,
/// then remove the sockets of killed shims.
fn kill_leftovers(dir: &Path, report: &mut StopReport) {
    let needle = dir.as_os_str().as_bytes();
    // Two rounds: a shim may start a process while the first round runs.
    for _ in 0..2 {
        let mut procs = lab_processes(dir);
        if procs.is_empty() {
            return;
        }
        // Containers' processes before their shims: a container's init can
        // die with its shim (parent-death signal) before it is signalled, and
        // the report then misses it.
        procs.sort_by_key(|p| p.cmdline.contains("containerd-shim"));
        let members: BTreeSet<u32> = procs.iter().map(|p| p.pid).collect();
        let mut victims = Vec::new();
        for p in procs {
            let Ok(fd) = Pidfd::open(p.pid) else {
                continue; // already gone
            };
            // The pidfd names whatever process has this pid now: check it
            // is still ours (and alive, so the pid cannot be reused since).
            let still_ours = read_proc(p.pid)
                .is_some_and(|now| references(&now, needle) || members.contains(&now.ppid));
            if !still_ours || fd.exited_within(Duration::ZERO) {
                continue;
            }
            let sockets = if p.cmdline.contains("containerd-shim") {
                shim_sockets(p.pid)
            } else {
                Vec::new()
            };
            match fd.signal(libc::SIGKILL) {
                Ok(()) => {
                    report.killed.push(format!("{} {}", p.pid, p.cmdline));
                    victims.push((p, fd, sockets));
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => report
                    .problems
                    .push(format!("SIGKILL {} ({}): {e}", p.pid, p.cmdline)),
            }
        }
        for (p, fd, sockets) in victims {
            if !fd.exited_within(Duration::from_secs(10)) {
                report.problems.push(format!(
                    "{} ({}) still alive 10 s after SIGKILL",
                    p.pid, p.cmdline
                ));
                continue;
            }
            for socket in sockets {
                let is_socket =
                    fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket());
                if is_socket {
                    match fs::remove_file(&socket) {
                        Ok(()) => report.removed_sockets.push(socket),
                        Err(e) => report
                            .problems
                            .push(format!("remove {}: {e}", socket.display())),
                    }
                }
            }
        }
    }
    let left = lab_processes(dir);
    if !left.is_empty() {
        report.problems.push(format!(
            "processes of the lab survived: {}",
            left.iter()
                .map(|p| format!("{} {}", p.pid, p.cmdline))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape_mount_path(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// (mount point, filesystem type) of every mount of our mount namespace.
fn mounts() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut halves = line.splitn(2, " - ");
            let left: Vec<&str> = halves.next()?.split(' ').collect();
            let fstype = halves.next()?.split(' ').next()?.to_string();
            Some((unescape_mount_path(left.get(4)?), fstype))
        })
        .collect()
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Detach every mount at or below `dir`, deepest first.
fn unmount_under(dir: &Path, report: &mut StopReport) {
    for _ in 0..5 {
        let mut points = mounts_under(dir);
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        points.dedup();
        for p in points {
            match nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => report.unmounted.push(p),
                // Already gone with its parent.
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                Err(e) => report.problems.push(format!("umount {}: {e}", p.display())),
            }
        }
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        report
            .problems
            .push(format!("still mounted under {}: {left:?}", dir.display()));
    }
}

/// How long a cgroup may stay busy after its processes were killed (until
/// their zombies are reaped by whoever inherited them).
const CGROUP_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Remove the cgroup `/<tag>` (and what runc left below it) from every
/// cgroup hierarchy.
fn remove_cgroups(tag: &str, report: &mut StopReport) {
    /// `dir` and its subfolders, deepest first.
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
    let roots: BTreeSet<PathBuf> = mounts()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .map(|(p, _)| p)
        .collect();
    let mut dirs = Vec::new();
    for root in roots {
        let dir = root.join(tag);
        if dir.is_dir() {
            post_order(&dir, &mut dirs);
        }
    }
    let deadline = Instant::now() + CGROUP_BUSY_TIMEOUT;
    for dir in dirs {
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    report
                        .problems
                        .push(format!("remove cgroup {}: {e}", dir.display()));
                    break;
                }
            }
        }
    }
}

/// Whether the cgroup `/<tag>` exists in some hierarchy.
pub fn cgroup_exists(tag: &str) -> bool {
    let tag = tag.trim_start_matches('/');
    mounts()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .any(|(p, _)| p.join(tag).is_dir())
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

fn parse_mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("bad MAC address {text:?}: {e}"));
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("bad MAC address {text:?}: not 6 bytes"))
}

/// Set IPv4 reverse-path filtering in `ns` to `value` (0 off, 1 strict, 2
/// loose) everywhere: `all`, `default` and every existing interface (the
/// effective value is the maximum of `all` and the interface's).
pub fn set_rp_filter(ns: &Ns, value: &str) {
    let names: Vec<String> = ns
        .run(|| {
            fs::read_dir("/proc/sys/net/ipv4/conf").map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
        })
        .unwrap_or_else(|e| panic!("lab: {e}"))
        .unwrap_or_else(|e| panic!("list /proc/sys/net/ipv4/conf in ns {}: {e}", ns.name()));
    for name in names {
        super::ok(ns.sysctl(&format!("net/ipv4/conf/{name}/rp_filter"), value));
    }
}

/// A `SocketAddr` of the container service port.
pub fn service(addr: impl Into<IpAddr>) -> SocketAddr {
    SocketAddr::new(addr.into(), SERVICE_PORT)
}

/// The outside world of recipe C, shared by both labs: `remote`
/// (198.51.100.10/24 on eth0, default via 198.51.100.1) behind a `router`
/// (198.51.100.1/24 on wan0; forwarding; strict rp_filter).
fn remote_and_router() -> (Ns, Ns) {
    use super::{net, ok};
    let router = ok(Ns::new("router"));
    let remote = ok(Ns::new("remote"));
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ] {
        ok(router.sysctl(key, "1"));
        ok(remote.sysctl(key, "0"));
    }
    ok(router.sysctl("net.ipv4.ip_forward", "1"));
    ok(router.veth("wan0", &remote, "eth0"));
    ok(router.link_up("wan0"));
    ok(remote.link_up("eth0"));
    ok(router.add_addr("wan0", net("198.51.100.1/24")));
    ok(remote.add_addr("eth0", net("198.51.100.10/24")));
    ok(remote.add_route(
        net("0.0.0.0/0"),
        Some(super::ip("198.51.100.1")),
        Some("eth0"),
        symroute_testkit::lab::MAIN_TABLE,
    ));
    (router, remote)
}

/// The docker host of recipe C: a namespace with strict rp_filter (the
/// RHEL/Fedora default), set before any interface exists so every one
/// inherits it.
fn strict_docker_host() -> Ns {
    let host = super::ok(Ns::new("dockerhost"));
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ] {
        super::ok(host.sysctl(key, "1"));
    }
    host
}

impl DockerLab {
    /// `docker network create --subnet SUBNET --gateway GATEWAY EXTRA... NAME`.
    pub fn network_create(&self, name: &str, subnet: &str, gateway: &str, extra: &[&str]) {
        let mut args = vec![
            "network",
            "create",
            "--subnet",
            subnet,
            "--gateway",
            gateway,
        ];
        args.extend_from_slice(extra);
        args.push(name);
        self.docker_ok(args);
    }

    /// Run a server container `name` on `first` with a fixed address,
    /// connect it to `second` with a fixed address, wait until it serves:
    /// its id.
    pub fn run_two(
        &self,
        name: &str,
        banner: Option<&str>,
        first: (&str, IpAddr),
        second: (&str, IpAddr),
    ) -> String {
        let ip = first.1.to_string();
        let id = self.run_server(name, banner, &["--network", first.0, "--ip", &ip]);
        self.docker_ok([
            "network",
            "connect",
            "--ip",
            &second.1.to_string(),
            second.0,
            &id,
        ]);
        id
    }
}

/// Lab recipe C: a container with a macvlan address on the LAN and a
/// bridge network, reached from another subnet.
///
/// ```text
/// remote 198.51.100.10 ── wan0 198.51.100.1  router  lan0 192.0.2.1 ──┐
///                                                                      │ (veth rlan, in brlan)
/// dockerhost: brlan 192.0.2.2/24, default via 192.0.2.1, strict rp_filter
///   docker network "lan": macvlan, parent brlan, 192.0.2.0/24, gateway 192.0.2.1
///   docker network "app_default": bridge 172.18.0.0/16, gateway 172.18.0.1
///   container "web": eth0 192.0.2.50 (lan), eth1 172.18.0.2 (app_default)
///                    default via 172.18.0.1 dev eth1 ("app_default" < "lan")
/// ```
///
/// A connection from remote to 192.0.2.50 arrives on the macvlan; the reply
/// leaves by the default route into app_default's bridge, where the docker
/// host's strict reverse-path filter drops it (192.0.2.50 lives behind
/// brlan). On-link clients (the router) are answered. Docker's NAT does not
/// apply (the source is not in app_default's subnet), so without strict
/// rp_filter in the docker host the asymmetric reply would get through:
/// [`set_rp_filter`] shows it.
pub mod macvlan {
    use std::net::{Ipv4Addr, SocketAddr};

    use symroute_testkit::lab::{MAIN_TABLE, Ns};

    use super::{DockerLab, remote_and_router, service, strict_docker_host};
    use crate::common::{ip, net, ok};

    /// The docker network of the macvlan.
    pub const LAN_NETWORK: &str = "lan";
    /// The bridge network whose name sorts first (gets the default route).
    pub const APP_NETWORK: &str = "app_default";
    /// The container's name.
    pub const WEB: &str = "web";
    /// The router's LAN address: the macvlan network's gateway.
    pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    /// The docker host's own LAN address (on brlan; reserved in Docker's
    /// IPAM with `--aux-address`).
    pub const HOST_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    /// web's macvlan address.
    pub const WEB_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
    /// app_default's gateway (the bridge in the docker host).
    pub const APP_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
    /// web's address on app_default.
    pub const WEB_APP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
    /// The remote client.
    pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    /// What web answers.
    pub const BANNER: &str = "hello from web";

    /// The built lab (dockerd running, networks created, no container yet).
    /// Dropping it stops dockerd first, then removes the namespaces.
    #[derive(Debug)]
    pub struct MacvlanLab {
        pub docker: DockerLab,
        pub router: Ns,
        pub remote: Ns,
    }

    impl MacvlanLab {
        pub fn build() -> MacvlanLab {
            let (router, remote) = remote_and_router();
            let host = strict_docker_host();
            ok(router.veth("lan0", &host, "rlan"));
            ok(host.bridge("brlan"));
            ok(host.set_master("rlan", "brlan"));
            for link in ["rlan", "brlan"] {
                ok(host.link_up(link));
            }
            ok(router.link_up("lan0"));
            ok(router.add_addr("lan0", net("192.0.2.1/24")));
            ok(host.add_addr("brlan", net("192.0.2.2/24")));
            ok(host.add_route(
                net("0.0.0.0/0"),
                Some(ip("192.0.2.1")),
                Some("brlan"),
                MAIN_TABLE,
            ));
            let docker = DockerLab::start_in(host);
            docker.image();
            docker.network_create(
                LAN_NETWORK,
                "192.0.2.0/24",
                "192.0.2.1",
                &[
                    "--driver",
                    "macvlan",
                    "--aux-address",
                    "dockerhost=192.0.2.2",
                    "--opt",
                    "parent=brlan",
                ],
            );
            docker.network_create(APP_NETWORK, "172.18.0.0/16", "172.18.0.1", &[]);
            MacvlanLab {
                docker,
                router,
                remote,
            }
        }

        /// Run "web" on lan (192.0.2.50), connect it to app_default
        /// (172.18.0.2), wait until it serves; its id.
        pub fn run_web(&self) -> String {
            self.docker.run_two(
                WEB,
                Some(BANNER),
                (LAN_NETWORK, WEB_LAN.into()),
                (APP_NETWORK, WEB_APP.into()),
            )
        }

        /// Where remote connects: 192.0.2.50:80.
        pub fn target(&self) -> SocketAddr {
            service(WEB_LAN)
        }
    }
}

/// Two bridge networks, the non-gateway one reached by routing (the seed's
/// routed variant with a real Docker): the router routes Docker's bridge
/// subnets to the docker host, which forwards to the container directly.
///
/// ```text
/// remote 198.51.100.10 ── wan0 198.51.100.1  router  up0 192.0.2.1 ── eth0 192.0.2.2 dockerhost
///   router: 172.18.0.0/16 and 172.19.0.0/16 via 192.0.2.2
///   dockerhost: default via 192.0.2.1, strict rp_filter,
///               iptables -I DOCKER-USER -i eth0 -j ACCEPT
///   docker network "back-tier": bridge 172.19.0.0/16, gateway 172.19.0.1
///   docker network "front-tier": bridge 172.18.0.0/16, gateway 172.18.0.1
///   container "web": eth0 172.19.0.4 (back-tier), eth1 172.18.0.2 (front-tier)
///                    default via 172.19.0.1 dev eth0 ("back-tier" < "front-tier")
/// ```
///
/// Docker's FORWARD chain (policy DROP; only published ports are accepted)
/// drops routed connections to container ports: the DOCKER-USER rule lets
/// what comes in on the uplink through, which is how a routed setup opens
/// them on Docker 20.10 (no `gateway_mode_ipv4=routed` before 27). Then
/// remote reaches 172.19.0.4 (the gateway network), but a connection to
/// 172.18.0.2 gets its reply sent by eth0 into back-tier's bridge, where the
/// docker host's strict rp_filter drops it (172.18.0.2 lives behind
/// front-tier's bridge). Docker's MASQUERADE does not touch it (source not in
/// back-tier's subnet), so without strict rp_filter it would get through.
pub mod routed {
    use std::net::{Ipv4Addr, SocketAddr};

    use symroute_testkit::lab::{MAIN_TABLE, Ns};

    use super::{DockerLab, remote_and_router, service, strict_docker_host};
    use crate::common::{ip, net, ok};

    /// The network whose name sorts first: the default route's.
    pub const BACK_NETWORK: &str = "back-tier";
    /// The network reached by routing whose replies go astray.
    pub const FRONT_NETWORK: &str = "front-tier";
    /// The container's name.
    pub const WEB: &str = "web";
    /// The router's address on the uplink.
    pub const ROUTER_UPLINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    /// The docker host's uplink address.
    pub const HOST_UPLINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    /// front-tier's gateway.
    pub const FRONT_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
    /// back-tier's gateway.
    pub const BACK_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 19, 0, 1);
    /// web's front-tier address.
    pub const WEB_FRONT: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
    /// web's back-tier address.
    pub const WEB_BACK: Ipv4Addr = Ipv4Addr::new(172, 19, 0, 4);
    /// The remote client.
    pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    /// What web answers.
    pub const BANNER: &str = "hello from web";
    /// Opens routed access to container ports in the docker host.
    pub const DOCKER_USER_RULE: &str = "-w -I DOCKER-USER -i eth0 -j ACCEPT";

    /// The built lab (dockerd running, networks created, no container yet).
    #[derive(Debug)]
    pub struct RoutedLab {
        pub docker: DockerLab,
        pub router: Ns,
        pub remote: Ns,
    }

    impl RoutedLab {
        pub fn build() -> RoutedLab {
            let (router, remote) = remote_and_router();
            let host = strict_docker_host();
            ok(router.veth("up0", &host, "eth0"));
            ok(router.link_up("up0"));
            ok(host.link_up("eth0"));
            ok(router.add_addr("up0", net("192.0.2.1/24")));
            ok(host.add_addr("eth0", net("192.0.2.2/24")));
            ok(host.add_route(
                net("0.0.0.0/0"),
                Some(ip("192.0.2.1")),
                Some("eth0"),
                MAIN_TABLE,
            ));
            for subnet in ["172.18.0.0/16", "172.19.0.0/16"] {
                ok(router.add_route(net(subnet), Some(ip("192.0.2.2")), Some("up0"), MAIN_TABLE));
            }
            let docker = DockerLab::start_in(host);
            ok(docker.ns().run_cmd("iptables", DOCKER_USER_RULE.split(' ')));
            docker.image();
            for (name, subnet, gateway) in [
                (BACK_NETWORK, "172.19.0.0/16", "172.19.0.1"),
                (FRONT_NETWORK, "172.18.0.0/16", "172.18.0.1"),
            ] {
                docker.network_create(name, subnet, gateway, &[]);
            }
            RoutedLab {
                docker,
                router,
                remote,
            }
        }

        /// Run "web" on back-tier (172.19.0.4), connect it to front-tier
        /// (172.18.0.2), wait until it serves; its id.
        pub fn run_web(&self) -> String {
            self.docker.run_two(
                WEB,
                Some(BANNER),
                (BACK_NETWORK, WEB_BACK.into()),
                (FRONT_NETWORK, WEB_FRONT.into()),
            )
        }

        /// remote's target on front-tier (asymmetric): 172.18.0.2:80.
        pub fn front_target(&self) -> SocketAddr {
            service(WEB_FRONT)
        }

        /// remote's target on back-tier (the gateway network): 172.19.0.4:80.
        pub fn back_target(&self) -> SocketAddr {
            service(WEB_BACK)
        }
    }
}
