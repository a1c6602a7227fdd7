//! Raw Engine API calls on a lab's socket (HTTP/1.0, one connection per
//! request), for what would otherwise spawn the docker CLI hundreds of
//! times (the churn test, the benchmark), and the daemon's `/metrics`
//! scrape. Shared by tests/docker_daemon.rs and benches/docker.rs.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use symroute_linux::netns::Netns;

/// The API version every call speaks (dockerd 20.10's).
pub const API_VERSION: &str = "v1.41";

/// One request: `(status, body)`.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let what = format!("{method} {path}");
    let mut s = UnixStream::connect(socket).map_err(|e| format!("{what}: connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| format!("{what}: {e}"))?;
    let body = body.map(ToString::to_string).unwrap_or_default();
    let req = format!(
        "{method} /{API_VERSION}{path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{what}: send: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("{what}: read: {e}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{what}: no HTTP head in {answer:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{what}: bad status line in {head:?}"))?;
    Ok((code, body.to_string()))
}

/// One request that must succeed (2xx): its body.
pub fn ok(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> String {
    match call(socket, method, path, body) {
        Ok((code, body)) if (200..300).contains(&code) => body,
        Ok((code, body)) => panic!("{method} {path}: HTTP {code}: {body}"),
        Err(e) => panic!("{e}"),
    }
}

/// Create a sleeping container on network `first` and connect it to
/// `second` while it is created (so both networks exist when it starts):
/// its id. Not started.
pub fn create_two(socket: &Path, image: &str, name: &str, first: &str, second: &str) -> String {
    let created = ok(
        socket,
        "POST",
        &format!("/containers/create?name={name}"),
        Some(&json!({
            "Image": image,
            "Cmd": ["/bin/sleep", "3600"],
            "HostConfig": { "NetworkMode": first },
            "NetworkingConfig": { "EndpointsConfig": { first: {} } },
        })),
    );
    let id = serde_json::from_str::<Value>(&created)
        .ok()
        .and_then(|v| v["Id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("create {name}: no Id in {created}"));
    ok(
        socket,
        "POST",
        &format!("/networks/{second}/connect"),
        Some(&json!({ "Container": id })),
    );
    id
}

pub fn start(socket: &Path, id: &str) {
    ok(socket, "POST", &format!("/containers/{id}/start"), None);
}

/// [`create_two`], then [`start`]: its id.
pub fn start_two(socket: &Path, image: &str, name: &str, first: &str, second: &str) -> String {
    let id = create_two(socket, image, name, first, second);
    start(socket, &id);
    id
}

/// The inspect answer.
pub fn inspect(socket: &Path, id: &str) -> Value {
    let body = ok(socket, "GET", &format!("/containers/{id}/json"), None);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("inspect {id}: {e}: {body}"))
}

/// The running container's init pid.
pub fn pid(socket: &Path, id: &str) -> u32 {
    let v = inspect(socket, id);
    let pid = v["State"]["Pid"].as_u64().unwrap_or(0);
    assert!(pid > 0, "container {id} not running: {}", v["State"]);
    u32::try_from(pid).expect("pid fits")
}

pub fn sandbox_key(socket: &Path, id: &str) -> String {
    inspect(socket, id)["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `docker rm -f`.
pub fn rm(socket: &Path, id: &str) {
    ok(socket, "DELETE", &format!("/containers/{id}?force=1"), None);
}

/// Remove containers, four clients at a time.
pub fn remove_all(socket: &Path, ids: &[String]) {
    let chunk = ids.len().div_ceil(4).max(1);
    std::thread::scope(|s| {
        for part in ids.chunks(chunk) {
            s.spawn(move || {
                for id in part {
                    rm(socket, id);
                }
            });
        }
    });
}

/// `GET /metrics` from inside `netns` (where the daemon listens): the body
/// of a 200 answer.
pub fn scrape(netns: &Netns, addr: SocketAddr) -> Result<String, String> {
    let answer = netns
        .run(move || -> io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("GET http://{addr}/metrics: {e}"))?;
    match answer.split_once("\r\n\r\n") {
        // HTTP/1.0 asked, HTTP/1.0 (or 1.1) answered.
        Some((head, body))
            if head.starts_with("HTTP/1.")
                && head.get(8..).is_some_and(|r| r.starts_with(" 200 ")) =>
        {
            Ok(body.to_string())
        }
        _ => Err(format!("unexpected answer: {answer:?}")),
    }
}

/// The value of the sample `name` (with its labels, if any) in a Prometheus
/// text exposition.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}
