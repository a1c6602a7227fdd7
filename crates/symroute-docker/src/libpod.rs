//! Two things symroute asks of Podman beyond what bollard does:
//!
//! - the host-side interface of a network, from Podman's own (libpod) API
//!   (`network_interface` of `GET /v{version}/libpod/networks/{name}/json`:
//!   netavark's bridge, e.g. `podman1`, or a macvlan's parent). The
//!   Engine-compatible network inspect leaves it out (its `Options` are empty);
//! - the newest containers, from two lists asked for at once: the
//!   Engine-compatible one (`GET /containers/json?all=true&limit=N`: names,
//!   labels, networks with their MAC addresses, addresses and gateways),
//!   read loosely (Podman's states include some, `configured`, `stopped`,
//!   `initialized`, that bollard's strict enum refuses, and the whole list
//!   with it), and libpod's (`GET /v{version}/libpod/containers/json`: pid,
//!   pod, the networks of the container's own namespace).
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

/// How long a list of the newest containers may take: Podman answers it
/// only when the start it waits for (the container's lock) is over.
const RECENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The running containers among the `limit` most recently created ones,
/// from two lists asked for at once (Podman sorts by creation time and
/// converts only those, each under its lock): the Engine-compatible one
/// (`/containers/json?all=true&limit=N`: names, labels, each network's MAC
/// address, addresses and gateways) and libpod's
/// (`/v{version}/libpod/containers/json?all=true&limit=N`: pid, pod, the
/// networks of the container's own namespace), joined by [`join`]. When
/// libpod's fails, the ids alone.
pub(crate) async fn recent_running(
    host: &EngineHost,
    limit: usize,
    version: &str,
) -> Result<Vec<Recent>, String> {
    tokio::time::timeout(RECENT_TIMEOUT, both_lists(host, limit, version))
        .await
        .map_err(|_| "timed out".to_string())?
}

/// How long libpod's list may take when asked again: the start it was
/// behind is over.
const AGAIN_TIMEOUT: Duration = Duration::from_secs(1);

async fn both_lists(host: &EngineHost, limit: usize, version: &str) -> Result<Vec<Recent>, String> {
    let compat_path = format!("/containers/json?all=true&limit={limit}");
    let libpod_path = format!("/v{version}/libpod/containers/json?all=true&limit={limit}");
    let compat = get_within(host, &compat_path, RECENT_TIMEOUT);
    let libpod = async {
        if !valid_version(version) {
            return Err(format!("no libpod API version in {version:?}"));
        }
        get_within(host, &libpod_path, RECENT_TIMEOUT).await
    };
    let (compat, libpod) = tokio::join!(compat, libpod);
    let compat = compat?;
    let mut libpod = libpod
        .inspect_err(
            |e| tracing::debug!(error = %e, "hint: libpod's list failed; containers are inspected"),
        )
        .ok();
    // Podman 5 answers libpod's list without waiting for the start to end
    // (the container not running yet, no pid): ask it again, now that the
    // compatible list, which waits, has answered.
    if libpod.as_ref().is_some_and(|l| behind(&compat, l)) {
        libpod = get_within(host, &libpod_path, AGAIN_TIMEOUT)
            .await
            .inspect_err(|e| tracing::debug!(error = %e, "hint: libpod's list failed; containers are inspected"))
            .ok();
    }
    join(&compat, libpod.as_ref())
}

/// Whether libpod's list was answered before a start the compatible one
/// waited for: an id running in the compatible list is not running in
/// libpod's.
fn behind(compat: &serde_json::Value, libpod: &serde_json::Value) -> bool {
    let running = |l: &serde_json::Value| -> Vec<String> {
        l.as_array()
            .into_iter()
            .flatten()
            .filter(|c| c.get("State").and_then(|s| s.as_str()) == Some("running"))
            .filter_map(|c| c.get("Id").and_then(|i| i.as_str()).map(str::to_string))
            .collect()
    };
    let done = running(libpod);
    running(compat).iter().any(|id| !done.contains(id))
}

/// The running entries of the Engine-compatible list, each with what both
/// lists tell of it ([`Recent::listed`]) when libpod's entry of the same
/// id is running, gives a pid, is not a pod's member (`Pod` set, `IsInfra`
/// false), and names exactly the networks of the compatible one. Podman's compatible
/// list shows a container that shares another's namespace (`--network
/// container:X`, a pod's member) with that one's networks, MAC addresses
/// and all; libpod's gives it none. An id that is not a plain engine id
/// is left out.
fn join(
    compat: &serde_json::Value,
    libpod: Option<&serde_json::Value>,
) -> Result<Vec<Recent>, String> {
    let list = compat
        .as_array()
        .ok_or("the container list is not an array")?;
    let own = |id: &str| -> Option<(u32, Vec<String>)> {
        let e = libpod?
            .as_array()?
            .iter()
            .find(|e| e.get("Id").and_then(|i| i.as_str()) == Some(id))?;
        let pid = e
            .get("Pid")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)?;
        let in_pod = e
            .get("Pod")
            .and_then(|p| p.as_str())
            .is_some_and(|p| !p.is_empty());
        let infra = e.get("IsInfra").and_then(serde_json::Value::as_bool) == Some(true);
        let running = e.get("State").and_then(|s| s.as_str()) == Some("running");
        if (in_pod && !infra) || !running {
            return None;
        }
        let mut nets: Vec<String> = e
            .get("Networks")?
            .as_array()?
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect::<Option<_>>()?;
        nets.sort();
        Some((pid, nets))
    };
    Ok(list
        .iter()
        .filter(|c| c.get("State").and_then(|s| s.as_str()) == Some("running"))
        .filter_map(|c| {
            let id = c.get("Id").and_then(|i| i.as_str())?;
            if !valid_id(id) {
                return None;
            }
            let listed = ContainerInfo::from_list_entry(c).and_then(|mut info| {
                let (pid, nets) = own(id)?;
                let mut names: Vec<String> =
                    info.attachments.iter().map(|a| a.network.clone()).collect();
                names.sort();
                if nets.is_empty() || names != nets {
                    return None;
                }
                info.pid = Some(pid);
                Some(info)
            });
            Some(Recent {
                id: id.to_string(),
                listed,
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
        assert!(
            valid_version("5.8.6") && valid_version("4.9.4-rhel") && valid_version("5.0.0-dev")
        );
        assert!(
            !valid_version("")
                && !valid_version("v5")
                && !valid_version("5/../x")
                && !valid_version("5?a")
        );
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
        let ids = join(&v, None).map(|r| r.into_iter().map(|r| r.id).collect::<Vec<_>>());
        assert_eq!(ids, Ok(vec!["a1".to_string(), "f6".to_string()]));
        assert!(join(&serde_json::json!({"message": "no"}), None).is_err());
    }

    fn fixture(dir: &str, name: &str) -> serde_json::Value {
        let path = format!("{}/tests/fixtures/{dir}/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Recorded on Podman 4.3.1 and 5.8.6 (tests/fixtures/podman-*/shared-*):
    /// `web` on two networks, `side` with `--network container:web`, pod
    /// `p1` (its infra on two networks, and `member`), `hostnet`, `nonet`.
    /// Podman's compatible list shows side and member with the networks,
    /// MACs and addresses of the namespace they share.
    #[test]
    fn only_a_container_with_a_namespace_of_its_own_is_told_by_both_lists() {
        for dir in ["podman-4.3", "podman-5.8"] {
            let compat = fixture(dir, "shared-containers-list.json");
            let libpod = fixture(dir, "shared-libpod-containers-list.json");
            let got = join(&compat, Some(&libpod)).expect("joined");
            let name = |r: &Recent| -> String {
                compat
                    .as_array()
                    .and_then(|l| l.iter().find(|c| c["Id"] == r.id.as_str()))
                    .and_then(|c| c["Names"][0].as_str())
                    .unwrap_or("?")
                    .trim_start_matches('/')
                    .to_string()
            };
            assert_eq!(got.len(), 6, "{dir}: every running one, told or not");
            let mut told: Vec<String> = got
                .iter()
                .filter(|r| r.listed.is_some())
                .map(name)
                .collect();
            told.sort();
            assert_eq!(told.len(), 2, "{dir}: {told:?}");
            assert_eq!(told[1], "web", "{dir}");
            assert!(told[0].ends_with("-infra"), "{dir}: {told:?}");
            for r in got.iter().filter(|r| r.listed.is_some()) {
                let info = r.listed.as_ref().expect("told");
                let pid = libpod
                    .as_array()
                    .and_then(|l| l.iter().find(|e| e["Id"] == r.id.as_str()))
                    .and_then(|e| e["Pid"].as_u64());
                assert_eq!(info.pid.map(u64::from), pid, "{dir}: libpod's pid");
                assert_eq!(info.attachments.len(), 2, "{dir}");
                assert!(info.attachments.iter().all(|a| a.mac.is_some()), "{dir}");
            }
            // Without libpod's list, nothing is told.
            let alone = join(&compat, None).expect("joined");
            assert_eq!(alone.len(), 6);
            assert!(alone.iter().all(|r| r.listed.is_none()), "{dir}");
        }
    }

    #[test]
    fn libpod_entries_that_disagree_with_the_compatible_list_tell_nothing() {
        let compat = fixture("podman-4.3", "shared-containers-list.json");
        let libpod = fixture("podman-4.3", "shared-libpod-containers-list.json");
        let web = |l: &serde_json::Value| -> usize {
            l.as_array()
                .and_then(|a| {
                    a.iter()
                        .position(|c| c["Names"][0] == "web" || c["Names"][0] == "/web")
                })
                .expect("web is listed")
        };
        let (ci, li) = (web(&compat), web(&libpod));
        let id = compat[ci]["Id"].as_str().expect("id").to_string();
        let told = |libpod: &serde_json::Value| -> bool {
            join(&compat, Some(libpod))
                .expect("joined")
                .iter()
                .any(|r| r.id == id && r.listed.is_some())
        };
        assert!(told(&libpod));
        type Spoil = fn(&mut serde_json::Value);
        let cases: [(&str, Spoil); 7] = [
            ("one network fewer", |e| {
                e["Networks"] = serde_json::json!(["apps"]);
            }),
            ("no networks", |e| e["Networks"] = serde_json::json!([])),
            ("no pid", |e| e["Pid"] = 0.into()),
            ("a negative pid", |e| e["Pid"] = (-1).into()),
            ("a pod's member", |e| {
                e["Pod"] = "105813896d48".into();
                e["IsInfra"] = false.into();
            }),
            ("not running (yet)", |e| e["State"] = "initialized".into()),
            ("networks not names", |e| {
                e["Networks"] = serde_json::json!([1, 2]);
            }),
        ];
        for (what, spoil) in cases {
            let mut l = libpod.clone();
            spoil(&mut l[li]);
            assert!(!told(&l), "{what}");
        }
        // An infra container is a pod's owner: told.
        let mut l = libpod.clone();
        l[li]["Pod"] = "105813896d48".into();
        l[li]["IsInfra"] = true.into();
        assert!(told(&l));
    }

    #[test]
    fn a_libpod_list_that_has_not_seen_the_start_end_is_behind() {
        let compat =
            serde_json::json!([{"Id": "a1", "State": "running"}, {"Id": "b2", "State": "exited"}]);
        let before = serde_json::json!([{"Id": "a1", "State": "initialized", "Pid": 0}]);
        let after = serde_json::json!([{"Id": "a1", "State": "running", "Pid": 7}]);
        assert!(behind(&compat, &before));
        assert!(behind(&compat, &serde_json::json!([])));
        assert!(!behind(&compat, &after));
        assert!(!behind(&serde_json::json!([]), &before));
    }
}
