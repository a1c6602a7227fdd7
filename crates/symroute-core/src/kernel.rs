//! The seam between the engine and a namespace's kernel: the [`Kernel`] trait
//! the engine talks through, the route lookup it asks, and the error every
//! kernel operation reports, naming the object it was working on.
//!
//! The real implementation (rtnetlink) lives in `symroute-linux`; the fake in
//! `symroute-testkit`. Nothing here does I/O.

use std::fmt;
use std::io;
use std::net::IpAddr;

use crate::diff::Op;
use crate::model::{RouteType, Snapshot};

/// Why the kernel (or the transport to it) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The kernel refused the request with an errno, and perhaps said why in
    /// an extended acknowledgement.
    Refused { errno: i32, message: Option<String> },
    /// The transport failed (socket creation, send, receive) or the answer
    /// could not be decoded.
    Transport(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Refused { errno, message } => {
                write!(f, "{}", io::Error::from_raw_os_error(*errno))?;
                if let Some(m) = message {
                    write!(f, " ({m})")?;
                }
                Ok(())
            }
            Cause::Transport(t) => f.write_str(t),
        }
    }
}

impl std::error::Error for Cause {}

/// A failed kernel operation, naming the object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {source}")]
pub struct KernelError {
    /// e.g. "add rule from 172.18.0.2/32 lookup 10001 priority 3000 protocol 115"
    pub what: String,
    #[source]
    pub source: Cause,
}

impl KernelError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self.source {
            Cause::Refused { errno, .. } => Some(errno),
            Cause::Transport(_) => None,
        }
    }

    /// A refusal with `errno`, for fakes and adapters.
    pub fn refused(what: impl Into<String>, errno: i32) -> KernelError {
        KernelError {
            what: what.into(),
            source: Cause::Refused {
                errno,
                message: None,
            },
        }
    }
}

/// A route lookup, as `ip route get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteQuery {
    pub dst: IpAddr,
    pub src: Option<IpAddr>,
    /// Input interface: ask as if the packet arrived there.
    pub iif: Option<u32>,
}

/// The kernel's answer to a [`RouteQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAnswer {
    pub oif: u32,
    pub gateway: Option<IpAddr>,
    pub prefsrc: Option<IpAddr>,
    /// The table whose route matched.
    pub table: u32,
    /// The kernel's route type (unicast, local, ...).
    pub kind: RouteType,
}

/// What the engine needs from a namespace's kernel.
pub trait Kernel {
    /// Links, addresses, rules and routes (all tables but `local`).
    fn snapshot(&mut self) -> Result<Snapshot, KernelError>;
    /// Carry out one change.
    fn execute(&mut self, op: &Op) -> Result<(), KernelError>;
    /// The route lookup `ip route get` does; no packet is sent.
    fn route_get(&mut self, q: &RouteQuery) -> Result<RouteAnswer, KernelError>;
}

/// Linux's errno values the engine reasons about (identical on every Linux
/// architecture symroute builds for).
pub mod errno {
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const ENETUNREACH: i32 = 101;
}

/// EEXIST, ENOENT, ESRCH: the object was already there or already gone.
pub fn is_already(e: &KernelError, op: &Op) -> bool {
    matches!(
        (e.errno(), op.is_add()),
        (Some(errno::EEXIST), true) | (Some(errno::ENOENT | errno::ESRCH), false)
    )
}

/// A [`KernelError`] for a kernel errno, for tests and fakes.
pub fn errno_error(what: &str, errno: i32) -> KernelError {
    KernelError::refused(what, errno)
}
