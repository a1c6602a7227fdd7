//! symroute's Linux adapter: a synchronous rtnetlink socket, the
//! [`kernel::NetlinkKernel`] that implements the core's `Kernel` seam over
//! it, and namespace targets opened, verified and entered safely.

pub mod config;
pub mod kernel;
pub mod lock;
pub mod netlink;
pub mod netns;
pub mod target;
