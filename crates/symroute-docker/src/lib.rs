//! Docker and Podman: the Engine API seam ([`EngineApi`]) and its bollard
//! implementation ([`DockerClient`]), what a container looks like to
//! symroute ([`model`]), the pure decisions made from it, engine-aware
//! diagnosis ([`diagnose`]) and the daemon ([`daemon`]).
//!
//! `model`, `diagnose`, `host` and `daemon` are public modules because callers
//! reach them by path (`symroute_docker::daemon::run`); everything else is
//! re-exported here.

mod client;
pub mod daemon;
pub mod diagnose;
mod engine_api;
pub mod explain;
pub mod host;
mod libpod;
pub mod model;

pub use client::{
    DockerClient, DockerConnector, DockerError, Event, EventKind, NetworkInfo, event_from,
};
pub use engine_api::{Connector, EngineApi, EngineVersion, Recent};
pub use explain::{DefaultChoice, Explanation};
pub use host::{DEFAULT_SOCKET, EngineHost, HostSource, PODMAN_SOCKET};
pub use model::{ContainerInfo, Decision, decide, plan_request};
