//! How the commands reach a namespace: open it by path, tell whether it is
//! the host's, lock it, and get a [`Kernel`] for it. A trait, so ADD, DEL,
//! CHECK and GC run unchanged against the real namespaces
//! ([`LinuxNamespaces`]) and against a fake kernel without root
//! (crates/symroute-cni/tests/cni_fake.rs).
//!
//! The real implementation opens the path with `symroute_linux::netns`
//! (which checks it is an nsfs network namespace), refuses the host's with
//! [`Netns::refuse_host`], takes the one per-namespace lock every symroute
//! writer takes (`symroute_linux::lock`, a flock on the nsfs inode) and
//! opens a netlink socket in the namespace from the calling thread
//! ([`Netns::socket_on_this_thread`]: the plugin is a short single-threaded
//! process, so it spares a thread per run).
//!
//! Before opening, the path is `stat`ed: an nsfs file (`/proc/PID/ns/net`,
//! a bind mount under /run/netns) is a regular file, so anything else (a
//! FIFO, a device, a folder) is refused without an `open` that could block.

use std::path::Path;
use std::time::Duration;

use symroute_core::kernel::{Kernel, KernelError};
use symroute_core::model::Snapshot;
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::lock::{LockError, NsLock};
use symroute_linux::netns::{Netns, NetnsError};

use crate::error::{CniError, code};

/// Why a namespace path could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The path is missing, or no network namespace any more (an unmounted
    /// bind-mount point): for DEL and GC, the namespace is gone.
    #[error("{0}")]
    Vanished(String),
    /// Anything else (permissions, a FIFO, …).
    #[error("{0}")]
    Unusable(String),
}

/// Opens namespaces by path.
pub trait Namespaces {
    type Ns: Namespace;
    fn open(&self, path: &Path) -> Result<Self::Ns, OpenError>;
    /// STATUS: whether rtnetlink can be used on this node (an error text
    /// when not).
    fn netlink_usable(&self) -> Result<(), String> {
        Ok(())
    }
}

/// An opened network namespace.
pub trait Namespace {
    type Kernel: Kernel;
    /// Held while a command works in the namespace.
    type Lock<'a>
    where
        Self: 'a;
    fn path(&self) -> &Path;
    /// (device, inode): the namespace's identity (a path can be reused).
    fn id(&self) -> (u64, u64);
    /// An error (code 4) when this is the host's own namespace.
    fn refuse_host(&self) -> Result<(), CniError>;
    /// The per-namespace lock, waiting up to `timeout` (code 11 when busy).
    fn lock(&self, timeout: Duration) -> Result<Self::Lock<'_>, CniError>;
    /// A kernel handle working in this namespace.
    fn kernel(&self) -> Result<Self::Kernel, CniError>;
    /// Only the rules and routes (what DEL needs when ADD's record names the
    /// table and addresses); a kernel without a cheaper dump reads everything.
    fn rules_and_routes(k: &mut Self::Kernel) -> Result<Snapshot, KernelError> {
        k.snapshot()
    }
}

/// The machine's namespaces, through `symroute_linux`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxNamespaces;

/// A namespace opened by [`LinuxNamespaces`].
#[derive(Debug)]
pub struct LinuxNs {
    ns: Netns,
    id: (u64, u64),
}

fn open_error(path: &Path, e: &NetnsError) -> OpenError {
    let vanished = match e {
        NetnsError::Open { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        NetnsError::NotNetns { .. } => true,
        _ => false,
    };
    let text = format!("{}: {e}", path.display());
    if vanished {
        OpenError::Vanished(text)
    } else {
        OpenError::Unusable(text)
    }
}

impl Namespaces for LinuxNamespaces {
    type Ns = LinuxNs;

    fn open(&self, path: &Path) -> Result<LinuxNs, OpenError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OpenError::Vanished(format!("{}: {e}", path.display())));
            }
            Ok(m) if !m.file_type().is_file() => {
                return Err(OpenError::Unusable(format!(
                    "{} is not a network namespace (not an nsfs file)",
                    path.display()
                )));
            }
            _ => {}
        }
        let ns = Netns::open(path).map_err(|e| open_error(path, &e))?;
        let id = ns.id().map_err(|e| open_error(path, &e))?;
        Ok(LinuxNs { ns, id })
    }

    fn netlink_usable(&self) -> Result<(), String> {
        symroute_linux::netlink::NlSocket::new()
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl Namespace for LinuxNs {
    type Kernel = NetlinkKernel;
    type Lock<'a> = NsLock<'a>;

    fn path(&self) -> &Path {
        self.ns.path()
    }

    fn id(&self) -> (u64, u64) {
        self.id
    }

    fn refuse_host(&self) -> Result<(), CniError> {
        self.ns.refuse_host().map_err(|e| match e {
            NetnsError::HostNamespace { path, .. } => host_error(&path),
            other => CniError::with_details(
                code::BAD_ENV,
                format!(
                    "CNI_NETNS={}: cannot tell whether it is the host's namespace",
                    self.path().display()
                ),
                other.to_string(),
            ),
        })
    }

    fn lock(&self, timeout: Duration) -> Result<NsLock<'_>, CniError> {
        symroute_linux::lock::lock(&self.ns, timeout).map_err(|e| match e {
            LockError::Busy { .. } => CniError::new(code::TRY_AGAIN, e.to_string()),
            LockError::Io { .. } => CniError::new(code::IO, e.to_string()),
        })
    }

    fn kernel(&self) -> Result<NetlinkKernel, CniError> {
        let sock = self.ns.socket_on_this_thread().map_err(|e| {
            CniError::with_details(
                code::KERNEL,
                "netlink socket in the namespace",
                e.to_string(),
            )
        })?;
        Ok(NetlinkKernel::new(sock))
    }

    fn rules_and_routes(k: &mut NetlinkKernel) -> Result<Snapshot, KernelError> {
        k.rules_and_routes()
    }
}

/// The refusal of the host's namespace (code 4: CNI_NETNS names the wrong
/// namespace), in the CNI's words.
pub fn host_error(path: &Path) -> CniError {
    CniError::new(
        code::BAD_ENV,
        format!(
            "CNI_NETNS={} is the host's own network namespace: symroute does not change the host's routing",
            path.display()
        ),
    )
}
