//! Two things symroute asks of Podman beyond what bollard does:
//!
//! - the host-side interface of a network, from Podman's own (libpod) API
//!   (`network_interface` of `GET /v{version}/libpod/networks/{name}/json`:
//!   netavark's bridge, e.g. `podman1`, or a macvlan's parent). The
//!   Engine-compatible network inspect leaves it out (its `Options` are empty);
//! - the newest containers and their states (`GET /containers/json?all=true&limit=N`),
//!   read loosely: Podman's states include some (`configured`, `stopped`,
//!   `initialized`) that bollard's strict enum refuses, and the whole list with it.
//!
//! Plain HTTP/1.0 GETs on the same socket.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::engine_api::Recent;
use crate::host::EngineHost;
use crate::model::{ContainerInfo, valid_id};

/// The longest answer read.
const MAX_ANSWER: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

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
    if !valid_name(name) || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Ok(None);
    }
    let v = get(host, &format!("/v{version}/libpod/networks/{name}/json")).await?;
    Ok(v.get("network_interface")
        .and_then(|i| i.as_str())
        .filter(|i| !i.is_empty())
        .map(str::to_string))
}

/// How long a list of the newest containers may take: Podman answers it
/// only when the start it waits for (the container's lock) is over.
const RECENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The running containers among the `limit` most recently created ones
/// (Engine-compatible list, `all=true&limit=N`: Podman sorts by creation
/// time and converts only those, each under its lock), each with what the
/// list says of it.
pub(crate) async fn recent_running(host: &EngineHost, limit: usize) -> Result<Vec<Recent>, String> {
    let v = get_within(
        host,
        &format!("/containers/json?all=true&limit={limit}"),
        RECENT_TIMEOUT,
    )
    .await?;
    running(&v)
}

/// The entries whose `State` is `running`; an id that is not a plain
/// engine id (ASCII letters and digits, at most 128) is left out.
fn running(v: &serde_json::Value) -> Result<Vec<Recent>, String> {
    let list = v.as_array().ok_or("the container list is not an array")?;
    Ok(list
        .iter()
        .filter(|c| c.get("State").and_then(|s| s.as_str()) == Some("running"))
        .filter_map(|c| {
            let id = c.get("Id").and_then(|i| i.as_str())?;
            valid_id(id).then(|| Recent {
                id: id.to_string(),
                listed: ContainerInfo::from_list_entry(c),
            })
        })
        .collect())
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
        assert!(!valid_name("../x") && !valid_name("") && !valid_name("a b"));
    }

    #[test]
    fn running_ids_reads_podman_states_bollard_refuses() {
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
        let ids = running(&v).map(|r| r.into_iter().map(|r| r.id).collect::<Vec<_>>());
        assert_eq!(ids, Ok(vec!["a1".to_string(), "f6".to_string()]));
        assert!(running(&serde_json::json!({"message": "no"})).is_err());
    }
}
