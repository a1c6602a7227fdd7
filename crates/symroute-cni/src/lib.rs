//! symroute as a chained CNI meta plugin (spec 0.3.0 to 1.1.0): ADD, DEL,
//! CHECK, VERSION, GC and STATUS for one interface of a container, after the
//! plugin that created it (bridge, macvlan, ipvlan, host-device, ...).
//!
//! The layers, outside in:
//! - [`runner`]: the process edge: `CNI_*` environment, standard input,
//!   panics, and the answer on standard output (result or error object);
//! - [`request`]: the request checked, and its one translation into the
//!   core's plan request for the interface ([`build_request`]);
//! - [`commands`]: ADD/DEL/CHECK/GC/STATUS, generic over the namespace
//!   access ([`ns::Namespaces`]) and so over the core's `Kernel`: the real
//!   one over `symroute_linux`, a fake one in tests without root;
//! - [`state`] (one record per attachment), [`teardown`] (what DEL and GC
//!   remove), [`log`], [`types`] (the wire format), [`error`].
//!
//! ADD plans the interface with `Selection::Only` through the core engine:
//! its own table from the band with its connected routes, its default route
//! via the gateway of prevResult (or the configuration's `gateways`) and
//! prevResult's other routes through it, plus one `from ADDR` rule per
//! address; or, with sbr's `table`, the rules only. Nothing in the main
//! table moves. The engine applies the difference and rolls back on
//! failure, so a repeated ADD changes nothing and a failed one leaves
//! nothing.
//!
//! The `symroute-cni` binary is the plugin; the `symroute` command is too
//! when run with CNI_COMMAND set and no subcommand.

pub mod commands;
pub mod error;
pub mod log;
pub mod ns;
pub mod request;
pub mod runner;
pub mod state;
pub mod teardown;
pub mod types;

pub use error::{CniError, code};
pub use request::{Built, build_request, valid_ifname};
pub use runner::{Command, Env, main_from_process, run, run_with};
