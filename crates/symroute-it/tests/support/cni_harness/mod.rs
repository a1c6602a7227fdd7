//! A small CNI runtime for the `cni_*` tests: it runs real plugin binaries
//! (Debian's /usr/lib/cni bridge, macvlan, host-local, static and sbr, and
//! the symroute binary under test) the way containerd or Multus do, chaining
//! each ADD's result into the next plugin's `prevResult`, and builds the
//! namespaces they work on.
//!
//! Plugins run inside a lab namespace acting as the node ("host"), never in
//! the test's own namespace: the bridge plugin creates its bridge where it
//! runs and macvlan looks its master up there. CNI_NETNS is the pod
//! namespace's `/proc/<pid>/fd/<n>` path. Every namespace is anonymous and
//! goes with its `Ns`; every file goes in a scratch folder under
//! CARGO_TARGET_TMPDIR that is removed on drop.

#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Value, json};
use symroute_testkit::lab::{LabError, MAIN_TABLE, Ns, TcpServer};

pub mod scenarios;

/// Debian's containernetworking-plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";
/// The plugin under test: `symroute-cni`, the binary docs/cni.md installs
/// as /opt/cni/bin/symroute.
pub static SYMROUTE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| bin_string("symroute-cni"));
/// The `symroute` command, which is the same plugin when CNI_COMMAND is set.
pub static SYMROUTE_MAIN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| bin_string("symroute"));

fn bin_string(name: &str) -> String {
    symroute_testkit::workspace_bin(name).display().to_string()
}

/// Which chained plugin a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Symroute,
    Sbr,
}

impl Meta {
    pub fn name(self) -> &'static str {
        match self {
            Meta::Symroute => "symroute",
            Meta::Sbr => "sbr",
        }
    }
}

pub fn require_root() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "this test must run as root (it creates network namespaces and runs CNI plugins in them); \
         effective uid is {uid}. Run: sudo -E cargo test --test 'cni_*'"
    );
}

pub fn require_plugins() {
    for p in ["bridge", "macvlan", "host-local", "static", "sbr"] {
        let path = Path::new(PLUGIN_DIR).join(p);
        assert!(
            path.is_file(),
            "{} is missing: install Debian's containernetworking-plugins (scripts/test does)",
            path.display()
        );
    }
}

pub fn ok<T>(r: Result<T, LabError>) -> T {
    r.unwrap_or_else(|e| panic!("lab: {e}"))
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("bad prefix {s}: {e}"))
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

/// What one plugin run did.
#[derive(Debug, Clone)]
pub struct PluginRun {
    pub plugin: String,
    pub command: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PluginRun {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "{} {}: stdout is not JSON ({e}): {:?}\nstderr: {}",
                self.plugin, self.command, self.stdout, self.stderr
            )
        })
    }

    /// The error code of a failed run's JSON error object.
    pub fn error_code(&self) -> Option<u64> {
        serde_json::from_str::<Value>(&self.stdout)
            .ok()?
            .get("code")?
            .as_u64()
    }

    pub fn describe(&self) -> String {
        format!(
            "{} {} exited {}\n--- stdout\n{}\n--- stderr\n{}",
            self.plugin, self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// A scratch folder removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

static SCRATCH_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = crate::common::target_tmpdir().as_path().join(format!(
            "cni-{name}-{}-{}",
            std::process::id(),
            SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runtime: where plugins run (`host`), their files, and how they are
/// called.
#[derive(Debug)]
pub struct Runtime {
    pub host: Ns,
    pub scratch: Scratch,
}

impl Runtime {
    pub fn new(name: &str) -> Runtime {
        let host = ok(Ns::new(format!("{name}-host")));
        // Deterministic IPv6 whatever the machine's defaults: no DAD delays.
        quiet_ipv6(&host);
        Runtime {
            host,
            scratch: Scratch::new(name),
        }
    }

    /// symroute's state folder for this runtime.
    pub fn data_dir(&self) -> PathBuf {
        self.scratch.path().join("symroute")
    }

    /// host-local's folder for this runtime.
    pub fn ipam_dir(&self) -> PathBuf {
        self.scratch.path().join("host-local")
    }

    /// The binary of plugin `kind`.
    pub fn binary(kind: &str) -> PathBuf {
        if kind == "symroute" {
            // SYMROUTE_CNI_BIN runs the scenarios against another build of
            // the plugin (e.g. the static one docs/cni.md installs).
            std::env::var_os("SYMROUTE_CNI_BIN")
                .map_or_else(|| PathBuf::from(&*SYMROUTE), PathBuf::from)
        } else if kind == "symroute-main" {
            PathBuf::from(&*SYMROUTE_MAIN)
        } else {
            Path::new(PLUGIN_DIR).join(kind)
        }
    }

    /// Run one plugin binary as a runtime does: CNI_* variables, the
    /// configuration on standard input, inside the host namespace.
    pub fn exec(&self, kind: &str, command: &str, env: &[(&str, &str)], stdin: &[u8]) -> PluginRun {
        let mut cmd = self.host.command(Self::binary(kind));
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", PLUGIN_DIR);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_stdin(&mut cmd, stdin, kind, command)
    }

    /// ADD/DEL/CHECK of one plugin for the attachment `att`.
    pub fn call(&self, kind: &str, command: &str, att: &Att, conf: &Value) -> PluginRun {
        let netns = att.netns.clone();
        self.exec(
            kind,
            command,
            &[
                ("CNI_CONTAINERID", att.container_id.as_str()),
                ("CNI_NETNS", netns.as_str()),
                ("CNI_IFNAME", att.ifname.as_str()),
            ],
            conf.to_string().as_bytes(),
        )
    }

    /// ADD a network configuration list: each plugin gets the previous
    /// one's result as prevResult. Returns the last result, or the failing
    /// run.
    pub fn add_list(&self, list: &Value, att: &Att) -> Result<Value, PluginRun> {
        let mut prev: Option<Value> = None;
        for plugin in plugins_of(list) {
            let conf = plugin_conf(list, &plugin, prev.as_ref());
            let run = self.call(kind_of(&plugin), "ADD", att, &conf);
            if run.code != 0 {
                return Err(run);
            }
            prev = Some(run.json());
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL a network configuration list in reverse order, each plugin with
    /// the cached result as prevResult, as runtimes do. Returns the runs.
    pub fn del_list(&self, list: &Value, att: &Att, cached: Option<&Value>) -> Vec<PluginRun> {
        let mut runs = Vec::new();
        for plugin in plugins_of(list).iter().rev() {
            let conf = plugin_conf(list, plugin, cached);
            runs.push(self.call(kind_of(plugin), "DEL", att, &conf));
        }
        runs
    }
}

/// Let IPv6 addresses be usable at once in `ns` and in every interface
/// created there later.
pub fn quiet_ipv6(ns: &Ns) {
    for key in [
        "net.ipv6.conf.all.accept_dad",
        "net.ipv6.conf.default.accept_dad",
    ] {
        ok(ns.sysctl(key, "0"));
    }
    for key in [
        "net.ipv6.conf.all.accept_ra",
        "net.ipv6.conf.default.accept_ra",
    ] {
        ok(ns.sysctl(key, "0"));
    }
}

fn run_with_stdin(cmd: &mut Command, stdin: &[u8], kind: &str, command: &str) -> PluginRun {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start plugin {kind}: {e}"));
    {
        let mut input = child.stdin.take().expect("piped stdin");
        // A plugin that exits early closes its end: not our failure.
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for plugin {kind}: {e}"));
    PluginRun {
        plugin: kind.to_string(),
        command: command.to_string(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn plugins_of(list: &Value) -> Vec<Value> {
    list["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("no plugins in {list}"))
        .clone()
}

fn kind_of(plugin: &Value) -> &str {
    plugin["type"]
        .as_str()
        .unwrap_or_else(|| panic!("plugin without type: {plugin}"))
}

/// One plugin's configuration in a list: the list's cniVersion and name,
/// its own keys, and prevResult.
pub fn plugin_conf(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    conf
}

/// The symroute entry (the second plugin) of a net1 list, as its own
/// configuration.
pub fn symroute_conf(list: &Value, prev: Option<&Value>) -> Value {
    plugin_conf(list, &list["plugins"][1], prev)
}

/// One interface's chain after the main plugin's ADD: its list, its
/// attachment, the main plugin's result, and symroute's configuration with
/// that result as prevResult.
#[derive(Debug, Clone)]
pub struct Chain {
    pub list: Value,
    pub att: Att,
    pub prev: Value,
    pub conf: Value,
}

/// One attachment: container, namespace path, interface.
#[derive(Debug, Clone)]
pub struct Att {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

impl Att {
    pub fn new(container_id: &str, pod: &Ns, ifname: &str) -> Att {
        Att {
            container_id: container_id.to_string(),
            netns: pod.path().display().to_string(),
            ifname: ifname.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------
// The pod lab
// ---------------------------------------------------------------------------

/// The client's address: on another subnet than both of the pod's.
pub const CLIENT: &str = "192.0.2.10";
pub const CLIENT6: &str = "2001:db8:2::10";
/// The router: 192.0.2.1 towards the client, 203.0.113.1 on the LAN that
/// net1 (macvlan on the host's `lan0`) joins.
pub const LAN_GW: &str = "203.0.113.1";
pub const LAN_GW6: &str = "2001:db8:113::1";
pub const LAN_GW_LL: &str = "fe80::1";
pub const LAN_NET: &str = "203.0.113.0/24";
pub const LAN_NET6: &str = "2001:db8:113::/64";
/// eth0's network: the host's bridge `cni0`, 198.51.100.1.
pub const POD_NET: &str = "198.51.100.0/24";
pub const POD_NET6: &str = "2001:db8:51::/64";
/// The pod's server port.
pub const PORT: u16 = 8080;
pub const BANNER: &str = "hello from the pod";

/// A node (`rt.host`) with a bridge network for eth0 and a LAN (`lan0`,
/// macvlan master) behind a router, a client beyond the router, and a pod.
///
/// ```text
/// client c0 192.0.2.10 ── r-cl 192.0.2.1  router  r-lan 203.0.113.1 ── lan0 (host, no address)
///                                                                        └─ macvlan net1 (pod)
/// host cni0 198.51.100.1 (bridge plugin) ── eth0 (pod), default route
/// ```
///
/// The host has no route to the client: a reply that leaves the pod by
/// eth0 dies there. So the client reaches net1's address only when replies
/// from it leave by net1.
#[derive(Debug)]
pub struct PodLab {
    pub rt: Runtime,
    pub router: Ns,
    pub client: Ns,
    pub pod: Ns,
    pub server: Option<TcpServer>,
}

impl PodLab {
    pub fn new(name: &str) -> PodLab {
        require_root();
        require_plugins();
        let rt = Runtime::new(name);
        let router = ok(Ns::new(format!("{name}-router")));
        let client = ok(Ns::new(format!("{name}-client")));
        let pod = ok(Ns::new(format!("{name}-pod")));
        for ns in [&router, &client, &pod] {
            quiet_ipv6(ns);
        }
        for ns in [&rt.host, &router, &client, &pod] {
            ok(ns.sysctl("net.ipv4.conf.all.rp_filter", "0"));
            ok(ns.sysctl("net.ipv4.conf.default.rp_filter", "0"));
        }
        ok(router.sysctl("net.ipv4.ip_forward", "1"));
        ok(router.sysctl("net.ipv6.conf.all.forwarding", "1"));
        ok(rt.host.veth("lan0", &router, "r-lan"));
        ok(router.veth("r-cl", &client, "c0"));
        ok(rt.host.link_up("lan0"));
        for l in ["r-lan", "r-cl"] {
            ok(router.link_up(l));
        }
        ok(client.link_up("c0"));
        ok(router.add_addr("r-lan", net("203.0.113.1/24")));
        ok(router.add_addr("r-lan", net("2001:db8:113::1/64")));
        ok(router.add_addr("r-lan", net("fe80::1/64")));
        ok(router.add_addr("r-cl", net("192.0.2.1/24")));
        ok(router.add_addr("r-cl", net("2001:db8:2::1/64")));
        ok(client.add_addr("c0", net("192.0.2.10/24")));
        ok(client.add_addr("c0", net("2001:db8:2::10/64")));
        ok(client.add_route(
            net("0.0.0.0/0"),
            Some(ip("192.0.2.1")),
            Some("c0"),
            MAIN_TABLE,
        ));
        ok(client.add_route(
            net("::/0"),
            Some(ip("2001:db8:2::1")),
            Some("c0"),
            MAIN_TABLE,
        ));
        ok(pod.sysctl("net.ipv6.bindv6only", "0"));
        let server = ok(pod.tcp_server(SocketAddr::from(([0u16; 8], PORT)), BANNER));
        PodLab {
            rt,
            router,
            client,
            pod,
            server: Some(server),
        }
    }

    pub fn att(&self, ifname: &str) -> Att {
        Att::new("pod1", &self.pod, ifname)
    }

    /// The eth0 network: bridge `cni0` with host-local, default route.
    pub fn eth0_list(&self, version: &str, ipv6: bool) -> Value {
        // isDefaultGateway adds the default route(s): no IPAM routes.
        let mut ranges = vec![json!([{"subnet": POD_NET}])];
        if ipv6 {
            ranges.push(json!([{"subnet": POD_NET6}]));
        }
        json!({
            "cniVersion": version,
            "name": "podnet",
            "plugins": [{
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": self.rt.ipam_dir(),
                    "ranges": ranges,
                }
            }]
        })
    }

    /// Attach eth0 (must succeed).
    pub fn attach_eth0(&self, version: &str, ipv6: bool) -> Value {
        self.rt
            .add_list(&self.eth0_list(version, ipv6), &self.att("eth0"))
            .unwrap_or_else(|r| panic!("eth0 ADD failed: {}", r.describe()))
    }

    /// A net1 list: macvlan on lan0 with `ipam`, then `meta` (symroute with
    /// the runtime's dataDir, or sbr) with `extra` keys.
    pub fn net1_list(&self, version: &str, ipam: Value, meta: Option<(Meta, Value)>) -> Value {
        let mut plugins = vec![json!({
            "type": "macvlan",
            "master": "lan0",
            "mode": "bridge",
            "ipam": ipam,
        })];
        if let Some((m, extra)) = meta {
            let mut p = json!({"type": m.name()});
            if m == Meta::Symroute {
                p["dataDir"] = json!(self.rt.data_dir());
            }
            if let Value::Object(map) = extra {
                for (k, v) in map {
                    p[k] = v;
                }
            }
            plugins.push(p);
        }
        json!({"cniVersion": version, "name": "lan", "plugins": plugins})
    }

    /// macvlan's ADD of `list`'s first plugin for `att` (must succeed);
    /// returns its result.
    pub fn macvlan_add(&self, list: &Value, att: &Att) -> Value {
        let run = self.rt.call(
            "macvlan",
            "ADD",
            att,
            &plugin_conf(list, &list["plugins"][0], None),
        );
        assert_eq!(run.code, 0, "{}", run.describe());
        run.json()
    }

    /// A 1.0.0 net1 list (macvlan with `ipam`, then symroute with `extra`
    /// keys) with macvlan's ADD done for `ifname`: ready for symroute.
    pub fn macvlan_chain(&self, ifname: &str, ipam: Value, extra: Value) -> Chain {
        let list = self.net1_list("1.0.0", ipam, Some((Meta::Symroute, extra)));
        let att = self.att(ifname);
        let prev = self.macvlan_add(&list, &att);
        let conf = symroute_conf(&list, Some(&prev));
        Chain {
            list,
            att,
            prev,
            conf,
        }
    }

    /// net1 from host-local on the LAN (203.0.113.50), chained with
    /// symroute with `extra` keys.
    pub fn net1_chain(&self, extra: Value) -> Chain {
        self.macvlan_chain("net1", self.lan_host_local(false), extra)
    }

    /// macvlan interfaces `ifaces` (name, symroute's `extra` keys) on the
    /// LAN with static addresses 203.0.113.50, .51, ...; each one's
    /// attachment and symroute configuration (prevResult from macvlan).
    pub fn static_chains(&self, ifaces: &[(&str, Value)]) -> Vec<(Att, Value)> {
        ifaces
            .iter()
            .enumerate()
            .map(|(i, (name, extra))| {
                let ipam = json!({"type": "static", "addresses": [
                    {"address": format!("203.0.113.{}/24", 50 + i), "gateway": LAN_GW}]});
                let c = self.macvlan_chain(name, ipam, extra.clone());
                (c.att, c.conf)
            })
            .collect()
    }

    /// host-local on the LAN: 203.0.113.50 up, gateway 203.0.113.1.
    pub fn lan_host_local(&self, ipv6: bool) -> Value {
        let mut ranges =
            vec![json!([{"subnet": LAN_NET, "rangeStart": "203.0.113.50", "gateway": LAN_GW}])];
        if ipv6 {
            ranges.push(
                json!([{"subnet": LAN_NET6, "rangeStart": "2001:db8:113::50", "gateway": LAN_GW6}]),
            );
        }
        json!({"type": "host-local", "dataDir": self.rt.ipam_dir(), "ranges": ranges})
    }

    /// Connect from the client to `addr`: the banner, or why not.
    pub fn probe(&self, addr: &str, timeout: Duration) -> Result<String, String> {
        let target = SocketAddr::new(ip(addr), PORT);
        self.client
            .tcp_probe(target, timeout)
            .map(|s| s.trim().to_string())
            .map_err(|e| e.to_string())
    }

    /// Reachable from the client (a few tries: a new link may need a moment
    /// for neighbour discovery).
    pub fn reaches(&self, addr: &str) -> Result<(), String> {
        let mut errors = Vec::new();
        for _ in 0..3 {
            match self.probe(addr, Duration::from_secs(2)) {
                Ok(b) if b == BANNER => return Ok(()),
                Ok(b) => errors.push(format!("unexpected answer {b:?}")),
                Err(e) => {
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                }
            }
        }
        Err(format!(
            "client {CLIENT} cannot reach {addr}:{PORT}: {}",
            errors.join(" | ")
        ))
    }

    /// Not reachable from the client: the reply is lost (timeout).
    pub fn blocked(&self, addr: &str) -> Result<(), String> {
        match self.probe(addr, Duration::from_millis(1500)) {
            Ok(_) => Err(format!(
                "client reached {addr} although replies should be lost"
            )),
            Err(e) if e.contains("timed out") => Ok(()),
            Err(e) => Err(format!("probe of {addr} failed, but not by a timeout: {e}")),
        }
    }
}
