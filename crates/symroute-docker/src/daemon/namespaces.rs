//! The daemon's seam to network namespaces: open a container's namespace
//! (by `/proc/PID/ns/net` or the engine's `SandboxKey`), follow its link,
//! address, rule and route notifications, and reach its kernel only under the namespace's
//! writer lock (the one lock every symroute writer takes:
//! [`symroute_linux::lock`]).
//!
//! On Podman the namespace of a container that is starting can be opened
//! before the container is known ([`Namespaces::prepare`], from the
//! engine's namespace folder): its open then claims it, found by the
//! namespace's identity (nsfs device and inode), so the sockets' cost is paid
//! while Podman is still busy. Only files named as Podman names them, not
//! symlinks, at most [`EARLY_MAX`] at once, each closed after [`EARLY_TTL`]
//! unless claimed, or as soon as a handle in the same namespace is dropped.
//!
//! [`LinuxNamespaces`] is the real implementation over
//! [`symroute_linux::netns`], [`symroute_linux::lock`] and
//! [`symroute_linux::kernel`]; tests implement [`Namespaces`] over the fake
//! kernel, so the daemon's loop runs without root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netlink_sys::Socket;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::watch;
use symroute_core::kernel::Kernel;
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::lock::{self, LockError};
use symroute_linux::netlink::NlSocket;
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
    /// it holds in the namespace (so nothing keeps the namespace alive, not
    /// even one opened ahead of time for it).
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

    /// A file appeared in the engine's namespace folder: a start has begun,
    /// and the engine will take a while yet to say which container it is
    /// (Podman: about 130 ms). Open it now, in the background, so that the
    /// [`Namespaces::open`] of the container it turns out to be (the same
    /// namespace, whichever path leads there) finds it open. Nothing in it
    /// is read or changed until then; one no container claims is closed
    /// after [`EARLY_TTL`], or when the container managed in it lets go.
    fn prepare(&self, path: PathBuf) {
        let _ = path;
    }
}

/// How long a namespace opened by [`Namespaces::prepare`] waits to be
/// claimed (Podman's starts claim theirs 0.1-0.3 s after the file appears).
/// Until then the namespace is kept alive by the daemon: one whose start
/// failed and whose file is gone lives on that long.
pub const EARLY_TTL: Duration = Duration::from_secs(5);

/// At most this many namespaces are opened ahead of time at once, waiting
/// or being opened (more starts at once are opened when converged).
pub const EARLY_MAX: usize = 64;

/// Only files named as Podman names them (`netns-<uuid>`, netavark's and
/// its CNI backend's alike) are opened ahead of time: not iproute2's or
/// another tool's that share `/run/netns`.
pub const EARLY_PREFIX: &str = "netns-";

/// How long [`Namespaces::prepare`] waits for the engine to mount the
/// namespace on its new file (Podman creates the file, then mounts it).
const MOUNT_WAIT: Duration = Duration::from_millis(50);

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
#[derive(Debug, Clone)]
pub struct LinuxNamespaces {
    /// The daemon's protocol tag: its own adds, heard back on the watch
    /// socket, are not a reason to converge again.
    protocol: u8,
    /// How long one opened ahead of time waits ([`EARLY_TTL`]).
    ttl: Duration,
    early: Arc<Mutex<EarlyState>>,
}

/// The namespaces opened by [`Namespaces::prepare`], and those in use.
#[derive(Debug, Default)]
struct EarlyState {
    /// Opened, not claimed yet.
    waiting: Vec<Early>,
    /// Being opened by a background job.
    pending: usize,
    /// The namespaces open handles are in, and how many handles each:
    /// one opened ahead of time after its container's own open (that job
    /// was late) is not kept.
    live: HashMap<(u64, u64), usize>,
}

impl EarlyState {
    fn expire(&mut self, ttl: Duration) {
        self.waiting.retain(|e| e.at.elapsed() < ttl);
    }
}

/// A namespace opened before any container was known to be in it.
struct Early {
    id: (u64, u64),
    /// Keeps the namespace (and so its identity) alive until claimed.
    _netns: Netns,
    changes: NlSocket,
    notes: Socket,
    /// When it was asked for.
    at: Instant,
}

impl std::fmt::Debug for Early {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Early")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl LinuxNamespaces {
    /// Namespaces whose own changes are tagged `protocol`.
    pub fn new(protocol: u8) -> LinuxNamespaces {
        LinuxNamespaces::with_ttl(protocol, EARLY_TTL)
    }

    /// The same, but namespaces opened ahead of time wait `ttl` (tests).
    pub fn with_ttl(protocol: u8, ttl: Duration) -> LinuxNamespaces {
        LinuxNamespaces {
            protocol,
            ttl,
            early: Arc::default(),
        }
    }

    /// How many namespaces opened ahead of time wait to be claimed.
    pub fn waiting(&self) -> usize {
        self.early.lock().map_or(0, |mut e| {
            e.expire(self.ttl);
            e.waiting.len()
        })
    }

    /// The sockets opened ahead of time in namespace `id`, if any.
    fn claim(&self, id: (u64, u64)) -> Option<(NlSocket, Socket)> {
        let mut early = self.early.lock().ok()?;
        early.expire(self.ttl);
        let i = early.waiting.iter().position(|e| e.id == id)?;
        let e = early.waiting.swap_remove(i);
        Some((e.changes, e.notes))
    }
}

/// Open `path` once the engine has mounted a namespace on it; its sockets.
/// A symlink is not followed (only the engine's own files are opened).
fn open_early(path: &Path, at: Instant) -> Option<Early> {
    let deadline = at + MOUNT_WAIT;
    let netns = loop {
        if std::fs::symlink_metadata(path)
            .ok()?
            .file_type()
            .is_symlink()
        {
            return None;
        }
        match Netns::open(path) {
            Ok(n) => break n,
            // The file exists a moment before the namespace is mounted on it.
            Err(NetnsError::NotNetns { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => return None,
        }
    };
    let id = netns.id().ok()?;
    let (changes, notes) = watch::sockets(&netns).ok()?;
    Some(Early {
        id,
        _netns: netns,
        changes,
        notes,
        at,
    })
}

impl Default for LinuxNamespaces {
    fn default() -> Self {
        LinuxNamespaces::new(symroute_core::settings::Settings::default().protocol.get())
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
    /// Where it counts as live ([`EarlyState::live`]).
    early: Arc<Mutex<EarlyState>>,
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
        if let Ok(mut e) = self.early.lock() {
            if let Some(n) = e.live.get_mut(&self.id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    e.live.remove(&self.id);
                }
            }
            // Nothing waits on behalf of a namespace let go of.
            let id = self.id;
            e.waiting.retain(|w| w.id != id);
        }
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
            match open_one(self, path, id, notify.clone()) {
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

    fn prepare(&self, path: PathBuf) {
        let podmans = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(EARLY_PREFIX));
        if !podmans {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A slot is taken before the job starts: work in flight is bounded too.
        match self.early.lock() {
            Ok(mut e) => {
                e.expire(self.ttl);
                if e.waiting.len() + e.pending >= EARLY_MAX {
                    return;
                }
                e.pending += 1;
            }
            Err(_) => return,
        }
        let at = Instant::now();
        let (early, ttl) = (self.early.clone(), self.ttl);
        let timers = rt.clone();
        rt.spawn_blocking(move || {
            let opened = open_early(&path, at);
            let Ok(mut e) = early.lock() else {
                return;
            };
            e.pending = e.pending.saturating_sub(1);
            let Some(x) = opened else {
                return;
            };
            if e.live.contains_key(&x.id) || e.waiting.iter().any(|w| w.id == x.id) {
                return;
            }
            e.waiting.push(x);
            drop(e);
            // Closed if never claimed.
            timers.spawn(async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(at + ttl)).await;
                if let Ok(mut e) = early.lock() {
                    e.expire(ttl);
                }
            });
        });
    }
}

fn open_one(
    ns: &LinuxNamespaces,
    path: &str,
    id: &str,
    notify: mpsc::Sender<String>,
) -> Result<LinuxHandle, NsAccessError> {
    let netns = Netns::open(path)?;
    let ns_id = netns.id()?;
    let (sock, notes) = match ns.claim(ns_id) {
        Some((sock, notes)) => {
            // What it heard before it was this container's is not news.
            watch::discard(&notes);
            debug!(container = %id, path = %path, "namespace opened ahead of time; claimed");
            (sock, notes)
        }
        None => watch::sockets(&netns)?,
    };
    let watch_fd = watch::register(&netns, notes)?;
    let watcher = tokio::spawn(watch::watch(watch_fd, id.to_string(), ns.protocol, notify));
    if let Ok(mut e) = ns.early.lock() {
        *e.live.entry(ns_id).or_default() += 1;
    }
    Ok(LinuxHandle {
        netns,
        path: path.to_string(),
        id: ns_id,
        kernel: NetlinkKernel::new(sock),
        watcher,
        early: ns.early.clone(),
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
