//! The Docker Engine API adapter (bollard): connect with version negotiation,
//! list, inspect, follow events. Everything it returns is symroute's own
//! types from [`crate::model`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bollard::Docker;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Serialize;

use crate::daemon::NetnsFolder;
use crate::engine_api::{Connector, EngineApi, EngineVersion, Recent};
use crate::host::{self, EngineHost, HostSource, PODMAN_SOCKET};
use crate::model::{ContainerInfo, InspectError};

/// Seconds before an API call gives up.
const API_TIMEOUT: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("Docker socket {path}: {message}")]
    Connect { path: String, message: String },
    #[error("Docker host {host:?}: {why}")]
    Unsupported { host: String, why: String },
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error("no such network: {0}")]
    NoSuchNetwork(String),
    #[error("Docker API {what}: {source}")]
    Api {
        what: String,
        source: bollard::errors::Error,
    },
    /// An engine that is not reached through bollard (another client, a
    /// test double) failed.
    #[error("engine {what}: {message}")]
    Engine { what: String, message: String },
    #[error(transparent)]
    Inspect(#[from] InspectError),
}

/// A Docker event symroute acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Start,
    Die,
    Destroy,
    Connect,
    Disconnect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    /// Container id.
    pub container: String,
    /// For connect and disconnect: the network's id (Docker) or name
    /// (Podman 5; none from Podman 4.3).
    pub network: Option<String>,
    /// The engine's timestamp, nanoseconds since the epoch.
    pub time_nano: i64,
}

/// Turn an Engine API event into one symroute acts on (None for the rest).
///
/// Both engines' shapes are read. Docker: a network event's `Actor.ID` is
/// the network id and `Attributes.container` the container. Podman: its
/// `Actor.ID` is the container, `Attributes.network` the network's name
/// (5.x; 4.3 does not name it), and a deleted container is `remove`, not
/// `destroy`.
pub fn event_from(m: &EventMessage) -> Option<Event> {
    let action = m.action.as_deref()?;
    let actor = m.actor.as_ref()?;
    let time_nano = m
        .time_nano
        .or_else(|| m.time.map(|t| t.saturating_mul(1_000_000_000)))
        .unwrap_or(0);
    let attr = |k: &str| {
        actor
            .attributes
            .as_ref()
            .and_then(|a| a.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let id = actor.id.clone().filter(|i| !i.is_empty());
    match m.typ {
        Some(EventMessageTypeEnum::CONTAINER) => {
            let kind = match action {
                "start" => EventKind::Start,
                "die" => EventKind::Die,
                "destroy" | "remove" => EventKind::Destroy,
                _ => return None,
            };
            Some(Event {
                kind,
                container: id?,
                network: None,
                time_nano,
            })
        }
        Some(EventMessageTypeEnum::NETWORK) => {
            let kind = match action {
                "connect" => EventKind::Connect,
                "disconnect" => EventKind::Disconnect,
                _ => return None,
            };
            let (container, network) = match attr("container") {
                // Docker
                Some(c) => (c, id),
                // Podman: Actor.ID is the container, whose name is
                // Attributes.name. A network event naming no container
                // either way is not understood.
                None if attr("name").is_some() => (id?, attr("network")),
                None => return None,
            };
            Some(Event {
                kind,
                container,
                network,
                time_nano,
            })
        }
        _ => None,
    }
}

/// A network, as Docker-aware diagnosis needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub internal: bool,
    pub enable_ipv6: bool,
    pub subnets: Vec<String>,
    pub options: BTreeMap<String, String>,
    /// The host-side interface as the engine itself names it (Podman's
    /// libpod `network_interface`), when known.
    pub engine_interface: Option<String>,
}

/// A connection to the Engine API.
#[derive(Clone)]
pub struct DockerClient {
    docker: Docker,
    host: EngineHost,
    source: HostSource,
}

fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let what = what.into();
    move |source| DockerError::Api { what, source }
}

impl DockerClient {
    /// Connect to `host` (else DOCKER_HOST, else the default socket:
    /// Docker's, or Podman's when only that one exists; see [`host`]) and
    /// negotiate the API version (dockerd 20.10 and Podman 4.3 speak 1.41).
    pub async fn connect(host: Option<&str>) -> Result<DockerClient, DockerError> {
        let (host, source) = host::resolve(host)?;
        let connect_err = |message: String| DockerError::Connect {
            path: host.to_string(),
            message,
        };
        let docker = match &host {
            EngineHost::Unix(socket) => {
                if !Path::new(socket).exists() {
                    let message = if source == HostSource::DockerDefault {
                        format!(
                            "no such socket, nor Podman's {PODMAN_SOCKET} (is dockerd running? for Podman: podman system service, or systemctl start podman.socket)"
                        )
                    } else {
                        "no such socket (is the engine running?)".to_string()
                    };
                    return Err(connect_err(message));
                }
                Docker::connect_with_unix(socket, API_TIMEOUT, bollard::API_DEFAULT_VERSION)
            }
            EngineHost::Tcp(addr) => Docker::connect_with_http(
                &format!("tcp://{addr}"),
                API_TIMEOUT,
                bollard::API_DEFAULT_VERSION,
            ),
        }
        .map_err(|e| connect_err(e.to_string()))?
        .negotiate_version()
        .await
        .map_err(|e| connect_err(e.to_string()))?;
        Ok(DockerClient {
            docker,
            host,
            source,
        })
    }

    /// Where the engine is.
    pub fn host(&self) -> &EngineHost {
        &self.host
    }

    /// How [`DockerClient::host`] was chosen.
    pub fn source(&self) -> HostSource {
        self.source
    }

    /// The socket's path, or `tcp://HOST:PORT`.
    pub fn socket(&self) -> String {
        match &self.host {
            EngineHost::Unix(p) => p.clone(),
            EngineHost::Tcp(_) => self.host.to_string(),
        }
    }

    /// The negotiated API version, e.g. "1.41".
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// Ids of the running containers.
    pub async fn running(&self) -> Result<Vec<String>, DockerError> {
        let opts = ListContainersOptionsBuilder::new().all(false).build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(api("list containers"))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Inspect a container by name or id.
    pub async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        match self.docker.inspect_container(id, None).await {
            Ok(c) => Ok(ContainerInfo::from_inspect(&c)?),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(DockerError::NoSuchContainer(id.to_string())),
            Err(e) => Err(api(format!("inspect container {id}"))(e)),
        }
    }

    /// Inspect a network by name or id.
    pub async fn network(&self, id: &str) -> Result<NetworkInfo, DockerError> {
        let n = match self.docker.inspect_network(id, None).await {
            Ok(n) => n,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Err(DockerError::NoSuchNetwork(id.to_string())),
            Err(e) => return Err(api(format!("inspect network {id}"))(e)),
        };
        Ok(NetworkInfo {
            id: n.id.unwrap_or_default(),
            name: n.name.unwrap_or_default(),
            driver: n.driver.unwrap_or_default(),
            internal: n.internal.unwrap_or(false),
            enable_ipv6: n.enable_ipv6.unwrap_or(false),
            subnets: n
                .ipam
                .and_then(|i| i.config)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.subnet)
                .collect(),
            options: n.options.unwrap_or_default().into_iter().collect(),
            engine_interface: None,
        })
    }

    /// Container and network events, from now on. The stream ends when
    /// dockerd goes away.
    pub fn events(&self) -> BoxStream<'static, Result<Event, DockerError>> {
        let mut filters: HashMap<&str, Vec<&str>> = HashMap::new();
        filters.insert("type", vec!["container", "network"]);
        filters.insert(
            "event",
            // "remove" is Podman's "destroy".
            vec!["start", "die", "destroy", "remove", "connect", "disconnect"],
        );
        let opts = EventsOptionsBuilder::new().filters(&filters).build();
        self.docker
            .events(Some(opts))
            .filter_map(|r| async move {
                match r {
                    Ok(m) => event_from(&m).map(Ok),
                    Err(e) => Some(Err(api("events")(e))),
                }
            })
            .boxed()
    }
}

// The trait delegates to the inherent methods (which callers without the
// trait in scope, like the CLI, use directly).
impl EngineApi for DockerClient {
    fn endpoint(&self) -> String {
        self.socket()
    }

    fn endpoint_source(&self) -> &'static str {
        self.source.as_str()
    }

    async fn version(&self) -> Result<EngineVersion, DockerError> {
        let v = self.docker.version().await.map_err(api("version"))?;
        let name = v
            .components
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Docker Engine".to_string());
        Ok(EngineVersion {
            name,
            version: v.version.unwrap_or_default(),
            api_version: self.api_version(),
        })
    }

    async fn running(&self) -> Result<Vec<String>, DockerError> {
        DockerClient::running(self).await
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        DockerClient::inspect(self, id).await
    }

    async fn network(&self, id: &str) -> Result<NetworkInfo, DockerError> {
        DockerClient::network(self, id).await
    }

    async fn podman_interface(
        &self,
        network: &str,
        engine: &EngineVersion,
    ) -> Result<Option<String>, DockerError> {
        if !engine.is_podman() {
            return Ok(None);
        }
        crate::libpod::network_interface(&self.host, &engine.version, network)
            .await
            .map_err(|message| DockerError::Engine {
                what: format!("libpod network inspect {network}"),
                message,
            })
    }

    async fn inspect_quick(
        &self,
        id: &str,
        engine: &EngineVersion,
    ) -> Result<ContainerInfo, DockerError> {
        if !engine.is_podman() {
            return self.inspect(id).await;
        }
        match crate::libpod::inspect(&self.host, &engine.version, id).await {
            Ok(info) => Ok(info),
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "libpod's inspect failed; asking the compatible one");
                self.inspect(id).await
            }
        }
    }

    async fn recent(
        &self,
        limit: usize,
        engine: &EngineVersion,
    ) -> Result<Vec<Recent>, DockerError> {
        crate::libpod::recent(&self.host, limit, &engine.version)
            .await
            .map_err(|message| DockerError::Engine {
                what: "list the newest containers".into(),
                message,
            })
    }

    async fn netns_folder(&self, engine: &EngineVersion) -> Option<Result<NetnsFolder, String>> {
        if !engine.is_podman() {
            return None;
        }
        let EngineHost::Unix(socket) = &self.host else {
            return Some(Err("the engine is reached over TCP".into()));
        };
        // The process listening on the socket: Podman's service, or (socket
        // activation) systemd, in the same root as the service it starts.
        let cred = match tokio::net::UnixStream::connect(socket).await {
            Ok(stream) => stream.peer_cred(),
            Err(e) => return Some(Err(format!("{socket}: {e}"))),
        };
        let cred = match cred {
            Ok(c) => c,
            Err(e) => return Some(Err(format!("{socket}: SO_PEERCRED: {e}"))),
        };
        let Some(pid) = cred
            .pid()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            return Some(Err(format!(
                "{socket}: its listener is in another pid namespace"
            )));
        };
        Some(NetnsFolder::of_listener(pid, cred.uid()))
    }

    fn events(&self) -> BoxStream<'static, Result<Event, DockerError>> {
        DockerClient::events(self)
    }
}

/// Connects a [`DockerClient`] to `--docker-host`, else DOCKER_HOST, else
/// the default socket (Docker's, else Podman's): the daemon's real
/// [`Connector`]. The default is looked for again on every reconnect.
#[derive(Debug, Clone, Default)]
pub struct DockerConnector {
    pub host: Option<String>,
}

impl Connector for DockerConnector {
    type Api = DockerClient;

    async fn connect(&self) -> Result<DockerClient, DockerError> {
        DockerClient::connect(self.host.as_deref()).await
    }
}
