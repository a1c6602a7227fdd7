//! Where the Engine API is, decided the way the docker CLI decides it:
//! `--docker-host`, else `DOCKER_HOST`, else the default socket. symroute
//! adds one step the CLI does not have: when neither is given and Docker's
//! socket is missing, Podman's rootful socket (`/run/podman/podman.sock`,
//! served by `podman system service` / `podman.socket`) is used.
//!
//! `unix://PATH` (or a bare absolute path) and plain-HTTP `tcp://HOST[:PORT]`
//! (`http://` too) are accepted. TLS (`DOCKER_TLS_VERIFY`, `DOCKER_TLS`,
//! `https://`) and `ssh://`, `fd://`, `npipe://` are refused with an error
//! saying so: symroute has no TLS or SSH configuration.

use std::path::Path;

use serde::Serialize;

use crate::client::DockerError;

/// Docker's default Engine API socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Podman's rootful Engine-compatible socket.
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";

/// The docker CLI's port for plain-HTTP `tcp://HOST` without a port.
pub const DEFAULT_TCP_PORT: u16 = 2375;

/// An Engine API endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "address", rename_all = "kebab-case")]
pub enum EngineHost {
    /// A unix socket's path.
    Unix(String),
    /// `HOST:PORT`, spoken to in plain HTTP.
    Tcp(String),
}

impl std::fmt::Display for EngineHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineHost::Unix(p) => write!(f, "unix://{p}"),
            EngineHost::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Why this endpoint was chosen (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostSource {
    /// `--docker-host`.
    Flag,
    /// `DOCKER_HOST`.
    Env,
    /// Docker's default socket, present (or nothing present at all).
    DockerDefault,
    /// Docker's socket missing, Podman's present.
    PodmanDefault,
}

impl HostSource {
    pub fn as_str(self) -> &'static str {
        match self {
            HostSource::Flag => "--docker-host",
            HostSource::Env => "DOCKER_HOST",
            HostSource::DockerDefault => "default",
            HostSource::PodmanDefault => "default (Docker's socket missing, Podman's found)",
        }
    }
}

/// The environment the decision reads, so it can be tested without
/// touching the process's.
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    pub docker_host: Option<String>,
    pub tls_verify: Option<String>,
    pub tls: Option<String>,
}

impl HostEnv {
    /// This process's `DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_TLS`.
    pub fn from_process() -> HostEnv {
        let var = |k: &str| std::env::var(k).ok();
        HostEnv {
            docker_host: var("DOCKER_HOST"),
            tls_verify: var("DOCKER_TLS_VERIFY"),
            tls: var("DOCKER_TLS"),
        }
    }

    /// The docker CLI turns TLS on when either is set to anything non-empty.
    fn wants_tls(&self) -> Option<&'static str> {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        if set(&self.tls_verify) {
            Some("DOCKER_TLS_VERIFY")
        } else if set(&self.tls) {
            Some("DOCKER_TLS")
        } else {
            None
        }
    }
}

/// Decide the endpoint: `flag`, else `env.docker_host`, else Docker's socket
/// when `exists` says it is there, else Podman's when it is, else Docker's
/// (whose absence the connect then reports).
pub fn resolve_with(
    flag: Option<&str>,
    env: &HostEnv,
    exists: impl Fn(&Path) -> bool,
) -> Result<(EngineHost, HostSource), DockerError> {
    let given = flag
        .filter(|s| !s.is_empty())
        .map(|s| (s, HostSource::Flag))
        .or_else(|| {
            env.docker_host
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| (s, HostSource::Env))
        });
    let Some((h, source)) = given else {
        if !exists(Path::new(DEFAULT_SOCKET)) && exists(Path::new(PODMAN_SOCKET)) {
            return Ok((
                EngineHost::Unix(PODMAN_SOCKET.into()),
                HostSource::PodmanDefault,
            ));
        }
        return Ok((
            EngineHost::Unix(DEFAULT_SOCKET.into()),
            HostSource::DockerDefault,
        ));
    };
    let host = parse(h, env)?;
    Ok((host, source))
}

/// [`resolve_with`] over this process's environment and file system.
pub fn resolve(flag: Option<&str>) -> Result<(EngineHost, HostSource), DockerError> {
    resolve_with(flag, &HostEnv::from_process(), Path::exists)
}

fn unsupported(h: &str, why: &str) -> DockerError {
    DockerError::Unsupported {
        host: h.to_string(),
        why: why.to_string(),
    }
}

/// One `-H`/`DOCKER_HOST` value.
fn parse(h: &str, env: &HostEnv) -> Result<EngineHost, DockerError> {
    if let Some(p) = h.strip_prefix("unix://") {
        // The CLI takes an empty path as the default socket.
        let p = if p.is_empty() { DEFAULT_SOCKET } else { p };
        if !p.starts_with('/') {
            return Err(unsupported(h, "a unix socket path must be absolute"));
        }
        return Ok(EngineHost::Unix(p.to_string()));
    }
    if h.starts_with('/') {
        return Ok(EngineHost::Unix(h.to_string()));
    }
    let rest = h
        .strip_prefix("tcp://")
        .or_else(|| h.strip_prefix("http://"));
    if let Some(rest) = rest {
        if let Some(var) = env.wants_tls() {
            return Err(unsupported(
                h,
                &format!(
                    "{var} asks for TLS, which symroute does not speak; use the engine's unix socket (unix:///var/run/docker.sock, unix:///run/podman/podman.sock)"
                ),
            ));
        }
        return tcp_addr(h, rest).map(EngineHost::Tcp);
    }
    let scheme = h.split("://").next().unwrap_or(h);
    let why = match scheme {
        "https" => "TLS is not supported; use the engine's unix socket".to_string(),
        "ssh" => {
            "ssh:// is not supported; run symroute on the engine's host and use its unix socket"
                .to_string()
        }
        "fd" => "fd:// is a daemon-side address, not a client one".to_string(),
        "npipe" => "named pipes are Windows only".to_string(),
        _ => "expected unix:///path, a path, or tcp://host[:port] (plain HTTP)".to_string(),
    };
    Err(unsupported(h, &why))
}

/// `HOST[:PORT][/]` → `HOST:PORT`, the CLI's defaults filled in
/// (localhost, 2375).
fn tcp_addr(h: &str, rest: &str) -> Result<String, DockerError> {
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err(unsupported(h, "a tcp address is host[:port], nothing more"));
    }
    // [v6]:port, host:port, host, :port
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| unsupported(h, "unclosed [ in an IPv6 address"))?;
        (format!("[{addr}]"), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (rest.to_string(), None),
        }
    };
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host
    };
    let port = match port {
        None | Some("") => DEFAULT_TCP_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| unsupported(h, &format!("bad port {p:?}")))?,
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(host: Option<&str>) -> HostEnv {
        HostEnv {
            docker_host: host.map(str::to_string),
            ..HostEnv::default()
        }
    }

    fn none(_: &Path) -> bool {
        false
    }

    fn ok(flag: Option<&str>, e: &HostEnv) -> (EngineHost, HostSource) {
        resolve_with(flag, e, none).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn flag_then_env_then_default() {
        let e = env(Some("unix:///tmp/env.sock"));
        assert_eq!(
            ok(Some("unix:///run/podman/podman.sock"), &e),
            (
                EngineHost::Unix("/run/podman/podman.sock".into()),
                HostSource::Flag
            )
        );
        assert_eq!(
            ok(None, &e),
            (EngineHost::Unix("/tmp/env.sock".into()), HostSource::Env)
        );
        assert_eq!(
            ok(None, &env(Some(""))),
            (
                EngineHost::Unix(DEFAULT_SOCKET.into()),
                HostSource::DockerDefault
            )
        );
        assert_eq!(
            ok(Some("/x/d.sock"), &env(None)).0,
            EngineHost::Unix("/x/d.sock".into())
        );
        assert_eq!(
            ok(Some("unix://"), &env(None)).0,
            EngineHost::Unix(DEFAULT_SOCKET.into())
        );
    }

    #[test]
    fn podman_socket_only_when_docker_is_missing_and_nothing_is_given() {
        let only_podman = |p: &Path| p == Path::new(PODMAN_SOCKET);
        let both = |p: &Path| p == Path::new(PODMAN_SOCKET) || p == Path::new(DEFAULT_SOCKET);
        assert_eq!(
            resolve_with(None, &env(None), only_podman).ok(),
            Some((
                EngineHost::Unix(PODMAN_SOCKET.into()),
                HostSource::PodmanDefault
            ))
        );
        assert_eq!(
            resolve_with(None, &env(None), both).ok().map(|r| r.1),
            Some(HostSource::DockerDefault)
        );
        assert_eq!(
            resolve_with(Some("unix:///a.sock"), &env(None), only_podman)
                .ok()
                .map(|r| r.0),
            Some(EngineHost::Unix("/a.sock".into()))
        );
        assert_eq!(
            resolve_with(None, &env(Some("unix:///b.sock")), only_podman)
                .ok()
                .map(|r| r.0),
            Some(EngineHost::Unix("/b.sock".into()))
        );
        assert_eq!(
            resolve_with(None, &env(None), none).ok().map(|r| r.0),
            Some(EngineHost::Unix(DEFAULT_SOCKET.into())),
            "nothing there: Docker's socket, whose absence connect reports"
        );
    }

    #[test]
    fn tcp_is_plain_http_with_the_cli_defaults() {
        for (given, want) in [
            ("tcp://192.0.2.7:2375", "192.0.2.7:2375"),
            ("tcp://192.0.2.7", "192.0.2.7:2375"),
            ("tcp://:2380", "localhost:2380"),
            ("tcp://engine.example:2375/", "engine.example:2375"),
            ("http://[2001:db8::7]:2375", "[2001:db8::7]:2375"),
            ("tcp://[2001:db8::7]", "[2001:db8::7]:2375"),
        ] {
            assert_eq!(
                ok(Some(given), &env(None)).0,
                EngineHost::Tcp(want.into()),
                "{given}"
            );
        }
    }

    #[test]
    fn tls_ssh_and_odd_hosts_are_refused_with_the_reason() {
        let tls = HostEnv {
            tls_verify: Some("1".into()),
            ..HostEnv::default()
        };
        let e = resolve_with(Some("tcp://192.0.2.7:2376"), &tls, none)
            .expect_err("TLS refused")
            .to_string();
        assert!(e.contains("DOCKER_TLS_VERIFY") && e.contains("TLS"), "{e}");
        // A unix socket does not care about the TLS variables.
        assert!(resolve_with(Some("unix:///a.sock"), &tls, none).is_ok());
        for (h, word) in [
            ("https://192.0.2.7:2376", "TLS"),
            ("ssh://me@engine", "ssh://"),
            ("fd://", "fd://"),
            ("npipe:////./pipe/docker_engine", "Windows"),
            ("docker.sock", "expected"),
            ("unix://relative.sock", "absolute"),
            ("tcp://192.0.2.7:99999", "port"),
            ("tcp://192.0.2.7:2375/v1.41", "host[:port]"),
        ] {
            let e = resolve_with(Some(h), &env(None), none)
                .expect_err(h)
                .to_string();
            assert!(e.contains(word) && e.contains(h), "{h}: {e}");
        }
    }
}
