//! symroute's pure core: what a namespace has ([`model::Snapshot`]), what
//! symroute wants there ([`plan`]), the difference ([`diff`]), and the engine
//! that carries it out through the [`kernel::Kernel`] seam with rollback.
//! No netlink, no namespaces, no runtime: everything here is tested without
//! root.

pub mod diagnose;
pub mod diff;
pub mod engine;
pub mod equal_defaults;
pub mod kernel;
pub mod model;
pub mod ownership;
pub mod plan;
pub mod render;
pub mod report;
pub mod request;
pub mod settings;
