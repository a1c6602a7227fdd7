//! Docker and Podman: the Engine API seam ([`EngineApi`]) and its bollard
//! implementation ([`DockerClient`]), what a container looks like to
//! symroute ([`model`]), the pure decisions made from it, engine-aware
//! diagnosis ([`diagnose`]) and the daemon ([`daemon`]).
//!
//! `model`, `diagnose` and `daemon` are public modules because callers
//! reach them by path (`symroute_docker::daemon::run`); everything else is
//! re-exported here.

mod client;
pub mod daemon;
pub mod diagnose;
mod engine_api;
mod explain;
pub mod model;

pub use client::{
    DEFAULT_SOCKET, DockerClient, DockerConnector, DockerError, Event, EventKind, NetworkInfo,
    event_from, socket_path,
};
pub use engine_api::{Connector, EngineApi, EngineVersion};
pub use explain::{DefaultChoice, Explanation};
pub use model::{ContainerInfo, Decision, decide, plan_request};
