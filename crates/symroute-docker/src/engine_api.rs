//! The seam between symroute and a container engine: what the daemon and
//! `diagnose --docker` ask of the Engine API, whoever serves it.
//!
//! [`DockerClient`](crate::DockerClient) (bollard, over the unix socket)
//! is the real implementation and serves Docker and Podman alike (Podman's
//! `podman system service` speaks the same Engine API). Tests implement the
//! trait with a scripted engine, so the daemon's loop runs without dockerd
//! and without root.
//!
//! Everything crosses the seam as symroute's own types
//! ([`ContainerInfo`], [`NetworkInfo`], [`Event`], [`EngineVersion`]); no
//! bollard type leaks into the daemon.

use std::future::Future;

use futures_util::stream::BoxStream;
use serde::Serialize;

use crate::client::{DockerError, Event, NetworkInfo};
use crate::daemon::NetnsFolder;
use crate::model::ContainerInfo;

/// Which engine answers, from `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineVersion {
    /// The engine component's name: "Docker Engine", "Podman Engine"
    /// (`Components[0].Name`; "Docker Engine" when the engine sends none).
    pub name: String,
    /// The engine's version, e.g. "20.10.24", "5.8.6".
    pub version: String,
    /// The API version the connection speaks, e.g. "1.41".
    pub api_version: String,
}

impl EngineVersion {
    /// Whether the engine is Podman (its Engine-compatible service).
    pub fn is_podman(&self) -> bool {
        self.name.to_ascii_lowercase().contains("podman")
    }
}

/// One of the newest containers ([`EngineApi::recent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    pub id: String,
    /// Running when listed; otherwise created, starting, or stopped.
    pub running: bool,
}

/// A connected Engine API.
///
/// Cloneable and `Send` so that work can move to other tasks (a resync off
/// the event path); every future is `Send` for the same reason.
pub trait EngineApi: Clone + Send + Sync + 'static {
    /// Where the engine is, for logs ("/var/run/docker.sock").
    fn endpoint(&self) -> String;

    /// How the endpoint was chosen, for the log ("--docker-host",
    /// "DOCKER_HOST", "default", ...).
    fn endpoint_source(&self) -> &'static str {
        "given"
    }

    /// Which engine it is and the API version in use.
    fn version(&self) -> impl Future<Output = Result<EngineVersion, DockerError>> + Send;

    /// Ids of the running containers.
    fn running(&self) -> impl Future<Output = Result<Vec<String>, DockerError>> + Send;

    /// The `limit` most recently created containers, each with whether it
    /// is running: what the daemon asks when the engine's namespace folder
    /// changed ([`EngineApi::netns_folder`]). By default the running ones.
    fn recent(
        &self,
        limit: usize,
        engine: &EngineVersion,
    ) -> impl Future<Output = Result<Vec<Recent>, DockerError>> + Send {
        let _ = (limit, engine);
        async {
            let ids = self.running().await?;
            Ok(ids
                .into_iter()
                .map(|id| Recent { id, running: true })
                .collect())
        }
    }

    /// Inspect a container by name or id; [`DockerError::NoSuchContainer`]
    /// when the engine does not know it (any more).
    fn inspect(&self, id: &str) -> impl Future<Output = Result<ContainerInfo, DockerError>> + Send;

    /// [`EngineApi::inspect`] the quickest way the engine has, for the
    /// daemon's hint (a start before its event): on Podman libpod's own
    /// inspect, which Podman answers in half the time of the compatible one.
    /// By default the same as [`EngineApi::inspect`].
    fn inspect_quick(
        &self,
        id: &str,
        engine: &EngineVersion,
    ) -> impl Future<Output = Result<ContainerInfo, DockerError>> + Send {
        let _ = engine;
        self.inspect(id)
    }

    /// Inspect a network by name or id; [`DockerError::NoSuchNetwork`] when
    /// unknown.
    fn network(&self, id: &str) -> impl Future<Output = Result<NetworkInfo, DockerError>> + Send;

    /// Podman only: the host-side interface netavark uses for the network
    /// named `network` (libpod's `network_interface`: a bridge such as
    /// `podman1`, or a macvlan's parent). `None` when unknown, and from
    /// engines that are not Podman.
    fn podman_interface(
        &self,
        network: &str,
        engine: &EngineVersion,
    ) -> impl Future<Output = Result<Option<String>, DockerError>> + Send {
        let _ = (network, engine);
        async { Ok(None) }
    }

    /// Where the engine creates its containers' network namespace files, when
    /// the daemon should watch it for starts sooner than the engine's events
    /// tell of them ([`crate::daemon`]'s hint: Podman's). `None`: not for
    /// this engine; `Some(Err(why))`: it would be, but cannot be followed.
    fn netns_folder(
        &self,
        engine: &EngineVersion,
    ) -> impl Future<Output = Option<Result<NetnsFolder, String>>> + Send {
        let _ = engine;
        async { None }
    }

    /// Container and network events from now on: start, die, destroy,
    /// connect, disconnect. The stream ends (or yields an error) when the
    /// engine goes away; the daemon then reconnects and resyncs.
    fn events(&self) -> BoxStream<'static, Result<Event, DockerError>>;
}

/// How the daemon (re)connects to an engine: once at start and after every
/// end of the event stream.
pub trait Connector: Send + Sync {
    type Api: EngineApi;

    fn connect(&self) -> impl Future<Output = Result<Self::Api, DockerError>> + Send;
}
