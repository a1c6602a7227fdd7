//! Docker: the Engine API adapter, what a container looks like to symroute,
//! the pure decisions made from it, and Docker-aware diagnosis.

pub mod client;
pub mod daemon;
pub mod diagnose;
pub mod explain;
pub mod model;

pub use client::{DockerClient, DockerError, Event, EventKind};
pub use model::{ContainerInfo, Decision, decide, plan_request};
