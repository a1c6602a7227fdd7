//! Three things symroute asks of Podman beyond what bollard does:
//!
//! - the host-side interface of a network, from Podman's own (libpod) API
//!   (`network_interface` of `GET /v{version}/libpod/networks/{name}/json`:
//!   netavark's bridge, e.g. `podman1`, or a macvlan's parent). The
//!   Engine-compatible network inspect leaves it out (its `Options` are empty);
//! - libpod's own inspect of a container
//!   (`GET /v{version}/libpod/containers/{id}/json`), for the daemon's hint:
//!   Podman answers it in half the time of the Engine-compatible one;
//! - the newest containers and their states (libpod's
//!   `GET /v{version}/libpod/containers/json?all=true&limit=N`), read loosely.
//!
//! Plain HTTP/1.0 GETs on the same socket.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::engine_api::Recent;
use crate::host::EngineHost;
use crate::model::ContainerInfo;

/// The longest answer read.
const MAX_ANSWER: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

/// An API version as Podman's router takes it in `/v{version}/libpod/...`:
/// `[0-9][0-9A-Za-z.-]*` ("5.8.6", a distribution's "4.9.4-rhel").
fn valid_version(v: &str) -> bool {
    v.chars().next().is_some_and(|c| c.is_ascii_digit())
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// A Podman network name as Podman allows it: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn valid_name(n: &str) -> bool {
    n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    path: &str,
) -> Result<Vec<u8>, String> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: podman\r\nAccept: application/json\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.take(MAX_ANSWER)
        .read_to_end(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    if out.len() as u64 >= MAX_ANSWER {
        return Err(format!("the answer is larger than {MAX_ANSWER} bytes"));
    }
    Ok(out)
}

/// Undo `Transfer-Encoding: chunked`.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        b = &b[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// The JSON body of a 200 answer.
fn body(answer: &[u8]) -> Result<serde_json::Value, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP status {status}"));
    }
    let raw = &answer[split + 4..];
    let raw = if head.contains("transfer-encoding: chunked") {
        dechunk(raw).ok_or("bad chunked body")?
    } else {
        raw.to_vec()
    };
    serde_json::from_slice(&raw).map_err(|e| e.to_string())
}

/// GET `path` from the engine at `host`, as JSON.
async fn get(host: &EngineHost, path: &str) -> Result<serde_json::Value, String> {
    get_within(host, path, TIMEOUT).await
}

/// [`get`], waiting up to `timeout` for the answer.
async fn get_within(
    host: &EngineHost,
    path: &str,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let answer = tokio::time::timeout(timeout, async {
        match host {
            EngineHost::Unix(p) => {
                exchange(
                    tokio::net::UnixStream::connect(p)
                        .await
                        .map_err(|e| e.to_string())?,
                    path,
                )
                .await
            }
            EngineHost::Tcp(a) => {
                exchange(
                    tokio::net::TcpStream::connect(a.as_str())
                        .await
                        .map_err(|e| e.to_string())?,
                    path,
                )
                .await
            }
        }
    })
    .await
    .map_err(|_| "timed out".to_string())??;
    body(&answer)
}

/// netavark's host-side interface of network `name` on the Podman at
/// `host` (libpod API `version`, e.g. "5.8.6"); None when not known.
pub(crate) async fn network_interface(
    host: &EngineHost,
    version: &str,
    name: &str,
) -> Result<Option<String>, String> {
    if !valid_name(name) || !valid_version(version) {
        return Ok(None);
    }
    let v = get(host, &format!("/v{version}/libpod/networks/{name}/json")).await?;
    Ok(v.get("network_interface")
        .and_then(|i| i.as_str())
        .filter(|i| !i.is_empty())
        .map(str::to_string))
}

/// libpod's inspect of container `id` (a plain engine id) on the Podman at
/// `host` (libpod API `version`), converted
/// ([`ContainerInfo::from_libpod_inspect`]). An error says why; the caller
/// then asks the Engine-compatible inspect.
pub(crate) async fn inspect(
    host: &EngineHost,
    version: &str,
    id: &str,
) -> Result<ContainerInfo, String> {
    if !valid_version(version) {
        return Err(format!("no libpod API version in {version:?}"));
    }
    if !valid_id(id) {
        return Err(format!("{id:?} is not a container id"));
    }
    let v = get(host, &format!("/v{version}/libpod/containers/{id}/json")).await?;
    let info = ContainerInfo::from_libpod_inspect(&v).map_err(|e| e.to_string())?;
    if info.id != id {
        return Err(format!("the answer is of container {:?}", info.id));
    }
    Ok(info)
}

/// How long a list of the newest containers may take: Podman 4 answers it
/// only when the start it waits for (the container's lock) is over.
const RECENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `limit` most recently created containers, each with whether it is
/// running: libpod's list (`/v{version}/libpod/containers/json?all=true&limit=N`:
/// Podman sorts by creation and converts only those; Podman 4 waits for a
/// start in progress to end, Podman 5 answers at once, the one starting
/// not running yet), or, without a libpod version, the running ones of the
/// Engine-compatible list (`/containers/json?all=true&limit=N`, read
/// loosely: Podman's states include some, `configured`, `stopped`,
/// `initialized`, that bollard's strict enum refuses, and the whole list
/// with it).
pub(crate) async fn recent(
    host: &EngineHost,
    limit: usize,
    version: &str,
) -> Result<Vec<Recent>, String> {
    let path = if valid_version(version) {
        format!("/v{version}/libpod/containers/json?all=true&limit={limit}")
    } else {
        format!("/containers/json?all=true&limit={limit}")
    };
    let v = get_within(host, &path, RECENT_TIMEOUT).await?;
    let all = entries(&v)?;
    Ok(if valid_version(version) {
        all
    } else {
        all.into_iter().filter(|r| r.running).collect()
    })
}

/// Each entry's `Id` and whether its `State` is `running` (libpod's and the
/// compatible list both say so); an id that is not a plain engine id
/// ([`valid_id`]) is left out.
fn entries(v: &serde_json::Value) -> Result<Vec<Recent>, String> {
    let list = v.as_array().ok_or("the container list is not an array")?;
    Ok(list
        .iter()
        .filter_map(|c| {
            let id = c
                .get("Id")
                .and_then(|i| i.as_str())
                .filter(|id| valid_id(id))?;
            Some(Recent {
                id: id.to_string(),
                running: c.get("State").and_then(|s| s.as_str()) == Some("running"),
            })
        })
        .collect())
}

/// A plain engine id: 1 to 128 ASCII letters and digits.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_plain_and_chunked() {
        let plain = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"network_interface\":\"podman1\"}";
        assert_eq!(
            body(plain)
                .ok()
                .and_then(|v| v["network_interface"].as_str().map(str::to_string)),
            Some("podman1".into())
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        assert_eq!(body(chunked).ok(), Some(serde_json::json!({"a": 1})));
        let missing = b"HTTP/1.0 404 Not Found\r\n\r\n{\"cause\":\"network not found\"}";
        assert!(body(missing).is_err_and(|e| e.contains("404")));
        assert!(valid_name("zlan") && valid_name("app_default.1"));
        assert!(
            valid_version("5.8.6") && valid_version("4.9.4-rhel") && valid_version("5.0.0-dev")
        );
        for bad in ["", "v5", "5/../x", "5?a", "5 6"] {
            assert!(!valid_version(bad), "{bad:?}");
        }
        assert!(!valid_name("../x") && !valid_name("") && !valid_name("a b"));
    }

    #[test]
    fn the_newest_are_read_with_podman_states_bollard_refuses() {
        let v = serde_json::json!([
            {"Id": "a1", "State": "running"},
            {"Id": "b2", "State": "configured"},
            {"Id": "c3", "State": "stopped"},
            {"Id": "d4", "State": "initialized"},
            {"Id": "../e5", "State": "running"},
            {"Id": "", "State": "running"},
            {"State": "running"},
            {"Id": "f6", "State": "running", "Names": ["/x"]}
        ]);
        let got = entries(&v).map(|l| l.into_iter().map(|r| (r.id, r.running)).collect::<Vec<_>>());
        let want = [
            ("a1", true),
            ("b2", false),
            ("c3", false),
            ("d4", false),
            ("f6", true),
        ];
        assert_eq!(
            got,
            Ok(want.iter().map(|(i, r)| (i.to_string(), *r)).collect())
        );
        assert!(entries(&serde_json::json!({"message": "no"})).is_err());
    }
}
