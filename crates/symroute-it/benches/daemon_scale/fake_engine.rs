//! A fake Docker Engine API over a unix socket, for the daemon-at-scale
//! benchmark: N running containers on three bridge networks, each pointing
//! at one real lab namespace.
//!
//! Every answer is shaped from a response recorded from Docker Engine
//! 28.5.2 (crates/symroute-docker/tests/fixtures/docker-28 and
//! containers-list.json next to this file, with their headers): the same
//! fields, with each container's id, name, networks, MAC and IP addresses,
//! `State.Pid` and `NetworkSettings.SandboxKey` filled in.
//!
//! `SandboxKey` is the lab namespace's path (`/proc/<bench pid>/fd/<fd>`, an
//! nsfs file like Docker's bind-mounted `/var/run/docker/netns/<id>`).
//! `State.Pid` is a pid no process can have (above the kernel's
//! `PID_MAX_LIMIT`), so the daemon's first choice, `/proc/PID/ns/net`, fails
//! and it opens the sandbox key: the one way to hand it a namespace without
//! a process in it, and one that can never point it at the host's.
//!
//! Served: `/_ping`, `/version`, `/containers/json` (`all`, and the
//! `label` and `status` filters), `/containers/{id}/json`,
//! `/networks/{id}` (by id or name) and `/events` (answered with its
//! headers, then idle: no event is ever sent, and the stream stays open
//! until the daemon closes it). Paths are accepted with or without the
//! `/v1.NN` prefix. One thread per connection, HTTP/1.1 keep-alive.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

const INSPECT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../symroute-docker/tests/fixtures/docker-28/container-web2.json"
));
const NETWORK: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../symroute-docker/tests/fixtures/docker-28/network-app_default.json"
));
const VERSION: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../symroute-docker/tests/fixtures/docker-28/version.json"
));
const LIST: &str = include_str!("containers-list.json");
const LIST_HEADERS: &str = include_str!("containers-list.headers");

/// No pid is ever this high (the kernel's PID_MAX_LIMIT is 4194304).
pub const NO_PID_BASE: u32 = 4_194_304;
/// The three networks every container is on.
pub const NETWORKS: usize = 3;

/// One fake container.
pub struct Container {
    pub index: usize,
    /// The lab namespace's path.
    pub sandbox_key: String,
    /// The MAC address of eth0..eth2 in that namespace, lower case.
    pub macs: [String; NETWORKS],
}

/// Network `k`'s name, subnet 10.k.0.0/16 and gateway 10.k.0.1.
pub fn network_name(k: usize) -> String {
    format!("scale-net{k}")
}

pub fn gateway(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, k as u8, 0, 1)
}

/// Container `i`'s address on network `k` (/16).
pub fn address(i: usize, k: usize) -> Ipv4Addr {
    let j = i + 2;
    Ipv4Addr::new(10, k as u8, (j / 256) as u8, (j % 256) as u8)
}

/// 64 hex digits, like Docker's ids, from a kind and an index.
fn hex_id(kind: u8, i: usize) -> String {
    let mut x = (u64::from(kind) << 56) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut s = String::with_capacity(64);
    for _ in 0..4 {
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        s.push_str(&format!("{x:016x}"));
    }
    s
}

pub fn container_id(i: usize) -> String {
    hex_id(1, i)
}

fn network_id(k: usize) -> String {
    hex_id(2, k)
}

/// What the benchmark reads about the requests served.
#[derive(Default)]
pub struct Stats {
    pub lists: AtomicU64,
    pub inspects: AtomicU64,
    pub events: AtomicU64,
    pub other: AtomicU64,
    /// When the last list and the last inspect were answered.
    pub last_list: Mutex<Option<Instant>>,
    pub last_inspect: Mutex<Option<Instant>>,
    /// Paths answered 404 (for the report).
    pub unknown: Mutex<Vec<String>>,
}

impl Stats {
    pub fn requests(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
            + self.inspects.load(Ordering::SeqCst)
            + self.events.load(Ordering::SeqCst)
            + self.other.load(Ordering::SeqCst)
    }
}

struct Engine {
    /// id → inspect body.
    inspect: HashMap<String, String>,
    /// id and name → network inspect body.
    networks: HashMap<String, String>,
    /// The list entries, each with its labels (for the label filter).
    list: Vec<Value>,
    headers: Vec<(String, String)>,
    stats: Arc<Stats>,
}

/// The fake engine, listening until dropped (its socket file is removed
/// then; connection threads end when their peer closes).
pub struct FakeEngine {
    socket: PathBuf,
    pub stats: Arc<Stats>,
}

impl FakeEngine {
    pub fn start(dir: &Path, containers: &[Container]) -> FakeEngine {
        let socket = dir.join("docker.sock");
        let listener = UnixListener::bind(&socket)
            .unwrap_or_else(|e| panic!("bind {}: {e}", socket.display()));
        let stats = Arc::new(Stats::default());
        let engine = Arc::new(build(containers, stats.clone()));
        std::thread::Builder::new()
            .name("fake-engine".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    let engine = engine.clone();
                    let _ = std::thread::Builder::new()
                        .name("fake-engine-conn".into())
                        .stack_size(256 * 1024)
                        .spawn(move || {
                            let _ = serve(&engine, conn);
                        });
                }
            })
            .expect("start the fake engine");
        FakeEngine { socket, stats }
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn template(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("recorded {what}: {e}"))
}

fn build(containers: &[Container], stats: Arc<Stats>) -> Engine {
    let inspect_t = template(INSPECT, "container inspect");
    let network_t = template(NETWORK, "network inspect");
    let list_t = template(LIST, "container list");
    let endpoint_t = inspect_t["NetworkSettings"]["Networks"]["app_default"].clone();
    let list_endpoint_t = list_t[0]["NetworkSettings"]["Networks"]["app_default"].clone();
    let mut inspect = HashMap::new();
    let mut list = Vec::new();
    let mut members: Vec<serde_json::Map<String, Value>> =
        vec![serde_json::Map::default(); NETWORKS];
    for c in containers {
        let id = container_id(c.index);
        let name = format!("scale-{}", c.index);
        let sandbox = hex_id(3, c.index);
        let pid = NO_PID_BASE + c.index as u32;
        let mut nets = serde_json::Map::new();
        let mut list_nets = serde_json::Map::new();
        for (k, member) in members.iter_mut().enumerate() {
            let endpoint = hex_id(4 + k as u8, c.index);
            let fill = |mut e: Value| {
                e["MacAddress"] = json!(c.macs[k]);
                e["NetworkID"] = json!(network_id(k));
                e["EndpointID"] = json!(endpoint);
                e["Gateway"] = json!(gateway(k).to_string());
                e["IPAddress"] = json!(address(c.index, k).to_string());
                e["IPPrefixLen"] = json!(16);
                e
            };
            let mut e = fill(endpoint_t.clone());
            e["DNSNames"] = json!([name, &id[..12]]);
            nets.insert(network_name(k), e);
            list_nets.insert(network_name(k), fill(list_endpoint_t.clone()));
            member.insert(
                id.clone(),
                json!({
                    "Name": name,
                    "EndpointID": endpoint,
                    "MacAddress": c.macs[k],
                    "IPv4Address": format!("{}/16", address(c.index, k)),
                    "IPv6Address": "",
                }),
            );
        }
        let mut v = inspect_t.clone();
        let old = v["Id"].as_str().unwrap_or_default().to_string();
        v["Id"] = json!(id);
        v["Name"] = json!(format!("/{name}"));
        v["State"]["Pid"] = json!(pid);
        v["HostConfig"]["NetworkMode"] = json!(network_name(0));
        v["Config"]["Hostname"] = json!(&id[..12]);
        v["NetworkSettings"]["SandboxID"] = json!(sandbox);
        v["NetworkSettings"]["SandboxKey"] = json!(c.sandbox_key);
        v["NetworkSettings"]["Networks"] = Value::Object(nets);
        for key in ["ResolvConfPath", "HostnamePath", "HostsPath", "LogPath"] {
            if let Some(p) = v[key].as_str() {
                v[key] = json!(p.replace(&old, &id));
            }
        }
        inspect.insert(id.clone(), v.to_string());
        let mut l = list_t[0].clone();
        l["Id"] = json!(id);
        l["Names"] = json!([format!("/{name}")]);
        l["HostConfig"]["NetworkMode"] = json!(network_name(0));
        l["NetworkSettings"]["Networks"] = Value::Object(list_nets);
        list.push(l);
    }
    let mut networks = HashMap::new();
    for (k, m) in members.into_iter().enumerate() {
        let mut n = network_t.clone();
        n["Name"] = json!(network_name(k));
        n["Id"] = json!(network_id(k));
        n["Driver"] = json!("bridge");
        n["IPAM"]["Config"] = json!([{
            "Subnet": format!("10.{k}.0.0/16"),
            "Gateway": gateway(k).to_string(),
        }]);
        n["Containers"] = Value::Object(m);
        let body = n.to_string();
        networks.insert(network_id(k), body.clone());
        networks.insert(network_name(k), body);
    }
    // The recorded headers, minus the ones that depend on the body.
    let headers = LIST_HEADERS
        .lines()
        .skip(1)
        .filter_map(|l| l.trim_end().split_once(": "))
        .filter(|(k, _)| !matches!(*k, "Date" | "Transfer-Encoding" | "Content-Length"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Engine {
        inspect,
        networks,
        list,
        headers,
        stats,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(x)) => {
                out.push(x);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

/// The `label` and `status` filters of `/containers/json` (every container
/// here is running).
fn keep(entry: &Value, filters: &Value) -> bool {
    let list = |key: &str| -> Vec<String> {
        match &filters[key] {
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    };
    let labels = &entry["Labels"];
    let labels_ok = list("label").iter().all(|f| match f.split_once('=') {
        Some((k, v)) => labels[k].as_str() == Some(v),
        None => labels.get(f).is_some(),
    });
    let status = list("status");
    labels_ok && (status.is_empty() || status.iter().any(|s| s == "running"))
}

fn write_answer(
    out: &mut UnixStream,
    engine: &Engine,
    status: &str,
    content_type: &str,
    body: &str,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in &engine.headers {
        if k == "Content-Type" {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        } else {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())
}

/// Answer one connection's requests until it closes.
fn serve(engine: &Engine, conn: UnixStream) -> io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut input = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if input.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        input.read_exact(&mut body)?;
        let (path, q) = target.split_once('?').unwrap_or((target, ""));
        // /v1.51/containers/json → /containers/json
        let path = match path.strip_prefix("/v1.") {
            Some(rest) => rest.find('/').map_or(path, |i| &rest[i..]),
            None => path,
        };
        let s = &engine.stats;
        let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
        let json = "application/json";
        match (method, seg.as_slice()) {
            ("GET" | "HEAD", ["_ping"]) => {
                s.other.fetch_add(1, Ordering::SeqCst);
                write_answer(
                    &mut out,
                    engine,
                    "200 OK",
                    "text/plain; charset=utf-8",
                    "OK",
                )?;
            }
            ("GET", ["version"]) => {
                s.other.fetch_add(1, Ordering::SeqCst);
                write_answer(&mut out, engine, "200 OK", json, VERSION.trim_end())?;
            }
            ("GET", ["containers", "json"]) => {
                let q = query(q);
                let filters: Value = q
                    .get("filters")
                    .and_then(|f| serde_json::from_str(f).ok())
                    .unwrap_or(Value::Null);
                let kept: Vec<&Value> = engine.list.iter().filter(|e| keep(e, &filters)).collect();
                let body = serde_json::to_string(&kept).unwrap_or_default();
                write_answer(&mut out, engine, "200 OK", json, &body)?;
                s.lists.fetch_add(1, Ordering::SeqCst);
                *s.last_list.lock().expect("stats") = Some(Instant::now());
            }
            ("GET", ["containers", id, "json"]) => {
                if let Some(body) = engine.inspect.get(*id) {
                    write_answer(&mut out, engine, "200 OK", json, body)?;
                    s.inspects.fetch_add(1, Ordering::SeqCst);
                    *s.last_inspect.lock().expect("stats") = Some(Instant::now());
                } else {
                    s.other.fetch_add(1, Ordering::SeqCst);
                    let msg = json!({"message": format!("No such container: {id}")});
                    write_answer(&mut out, engine, "404 Not Found", json, &msg.to_string())?;
                }
            }
            ("GET", ["networks", id]) => {
                s.other.fetch_add(1, Ordering::SeqCst);
                if let Some(body) = engine.networks.get(*id) {
                    write_answer(&mut out, engine, "200 OK", json, body)?;
                } else {
                    let msg = json!({"message": format!("network {id} not found")});
                    write_answer(&mut out, engine, "404 Not Found", json, &msg.to_string())?;
                }
            }
            ("GET", ["events"]) => {
                s.events.fetch_add(1, Ordering::SeqCst);
                let mut head = String::from("HTTP/1.1 200 OK\r\n");
                for (k, v) in &engine.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                out.write_all(head.as_bytes())?;
                out.flush()?;
                // Idle: no event, ever. Wait for the client to close.
                let mut sink = [0u8; 512];
                while input.read(&mut sink)? > 0 {}
                return Ok(());
            }
            _ => {
                s.other.fetch_add(1, Ordering::SeqCst);
                s.unknown
                    .lock()
                    .expect("stats")
                    .push(format!("{method} {target}"));
                let msg = json!({"message": "page not found"});
                write_answer(&mut out, engine, "404 Not Found", json, &msg.to_string())?;
            }
        }
    }
}
