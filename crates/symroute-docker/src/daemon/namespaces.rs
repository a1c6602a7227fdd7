//! The daemon's seam to network namespaces: open a container's namespace
//! (by `/proc/PID/ns/net` or the engine's `SandboxKey`), follow its link,
//! address, rule and route notifications, and reach its kernel only under the namespace's
//! writer lock (the one lock every symroute writer takes:
//! [`symroute_linux::lock`]).
//!
//! [`LinuxNamespaces`] is the real implementation over
//! [`symroute_linux::netns`], [`symroute_linux::lock`] and
//! [`symroute_linux::kernel`]; tests implement [`Namespaces`] over the fake
//! kernel, so the daemon's loop runs without root.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::watch;
use symroute_core::kernel::Kernel;
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::lock::{self, LockError};
use symroute_linux::netns::{Netns, NetnsError};

/// Why a namespace could not be reached or locked.
#[derive(Debug, thiserror::Error)]
pub enum NsAccessError {
    /// Not openable (the container died between inspect and here), not a
    /// namespace, or no socket could be opened in it.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Another writer holds the namespace's lock: try again shortly.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// None of the container's namespace paths could be tried.
    #[error("container {id}: no network namespace path (no pid, no SandboxKey)")]
    NoPath { id: String },
}

impl NsAccessError {
    /// Another writer holds the lock (not a failure of this namespace).
    pub fn is_busy(&self) -> bool {
        matches!(self, NsAccessError::Lock(LockError::Busy { .. }))
    }
}

/// Opens namespaces for the daemon.
pub trait Namespaces {
    type Handle: NsHandle;

    /// Open the namespace at the first of `paths` that opens, and follow its
    /// link, address, rule and route notifications: after each burst, `id` is sent on
    /// `notify`. Dropping the handle stops following and closes everything
    /// it holds in the namespace (so nothing keeps the namespace alive).
    fn open(
        &self,
        paths: &[String],
        id: &str,
        notify: mpsc::Sender<String>,
    ) -> Result<Self::Handle, NsAccessError>;

    /// Whether the first of `paths` that can be looked up still leads to
    /// `handle`'s namespace, so that it need not be opened again (a resync
    /// of a container that did not change keeps its handle and its
    /// watch). False when unsure: the caller then opens it.
    fn still_at(&self, handle: &Self::Handle, paths: &[String]) -> bool {
        let _ = (handle, paths);
        false
    }
}

/// An open namespace.
pub trait NsHandle {
    type Kernel: Kernel;

    /// The namespace's identity (nsfs device and inode): the same for every
    /// path to one namespace.
    fn id(&self) -> (u64, u64);

    /// The path it was opened by.
    fn path(&self) -> &str;

    /// Run `f` on the namespace's kernel with its writer lock held, waiting
    /// up to `wait` for another writer to let go.
    fn locked<T>(
        &mut self,
        wait: Duration,
        f: impl FnOnce(&mut Self::Kernel) -> T,
    ) -> Result<T, NsAccessError>;
}

/// The real namespaces of this machine.
#[derive(Debug, Clone, Copy)]
pub struct LinuxNamespaces {
    /// The daemon's protocol tag: its own adds, heard back on the watch
    /// socket, are not a reason to converge again.
    pub protocol: u8,
}

impl Default for LinuxNamespaces {
    fn default() -> Self {
        LinuxNamespaces {
            protocol: symroute_core::settings::Settings::default().protocol.get(),
        }
    }
}

/// A namespace opened by [`LinuxNamespaces`]: the namespace file (for the
/// lock), a netlink socket for changes and a task reading a subscribed one.
pub struct LinuxHandle {
    netns: Netns,
    path: String,
    id: (u64, u64),
    kernel: NetlinkKernel,
    watcher: JoinHandle<()>,
}

impl std::fmt::Debug for LinuxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxHandle")
            .field("path", &self.path)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for LinuxHandle {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Namespaces for LinuxNamespaces {
    type Handle = LinuxHandle;

    fn open(
        &self,
        paths: &[String],
        id: &str,
        notify: mpsc::Sender<String>,
    ) -> Result<LinuxHandle, NsAccessError> {
        let mut last = None;
        for path in paths {
            match open_one(path, id, self.protocol, notify.clone()) {
                Ok(h) => return Ok(h),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| NsAccessError::NoPath { id: id.to_string() }))
    }

    /// One `stat(2)` of the path (following `/proc/PID/ns/net` to the
    /// namespace's nsfs inode), where opening would take a descriptor, two
    /// netlink sockets made inside the namespace and a new watch.
    fn still_at(&self, handle: &LinuxHandle, paths: &[String]) -> bool {
        use std::os::unix::fs::MetadataExt;
        paths
            .iter()
            .find_map(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| (m.dev(), m.ino()) == handle.id)
    }
}

fn open_one(
    path: &str,
    id: &str,
    protocol: u8,
    notify: mpsc::Sender<String>,
) -> Result<LinuxHandle, NsAccessError> {
    let netns = Netns::open(path)?;
    let ns_id = netns.id()?;
    let sock = netns.socket()?;
    let watch_fd = watch::open(&netns)?;
    let watcher = tokio::spawn(watch::watch(watch_fd, id.to_string(), protocol, notify));
    Ok(LinuxHandle {
        netns,
        path: path.to_string(),
        id: ns_id,
        kernel: NetlinkKernel::new(sock),
        watcher,
    })
}

impl NsHandle for LinuxHandle {
    type Kernel = NetlinkKernel;

    fn id(&self) -> (u64, u64) {
        self.id
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn locked<T>(
        &mut self,
        wait: Duration,
        f: impl FnOnce(&mut NetlinkKernel) -> T,
    ) -> Result<T, NsAccessError> {
        let _held = lock::lock(&self.netns, wait)?;
        Ok(f(&mut self.kernel))
    }
}
