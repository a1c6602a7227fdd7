//! symroute: make every reply in a multi-homed network namespace leave through
//! the interface its request arrived on, with per-interface routing tables and
//! `from <address>` rules, applied from the host.

pub mod cli;
pub mod cni;
pub mod daemon;
pub mod demo;
pub mod diagnose;
pub mod diff;
pub mod docker;
pub mod engine;
pub mod fake;
pub mod kernel;
pub mod lab;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod plan;
pub mod render;
pub mod report;
pub mod settings;
pub mod target;
