//! Starts seen before the engine's event: the engine's network namespace
//! folder, watched with inotify.
//!
//! Podman's events can reach a subscriber up to 250 ms after the fact: with
//! its file events backend (the one there is without systemd) the service
//! follows its own events file by polling it every 250 ms. But Podman
//! creates a container's namespace file (`/run/netns/netns-<uuid>`) at the
//! beginning of the start (about 130 ms before its `start` event, measured
//! on Podman 4.3), under the container's lock. So when a file appears in
//! the folder the daemon asks libpod's list for the [`RECENT`] newest
//! containers (Podman sorts by creation and converts only those). Podman 4
//! answers it the moment the start is over (its event written, not yet
//! delivered): a running container the daemon does not know yet is then
//! handled as its `start` would be, but inspected with libpod's own
//! inspect, which Podman answers in half the time of the Engine-compatible
//! one ([`EngineApi::inspect_quick`]). Podman 5 answers the list at once,
//! the container starting not running yet: every container not running
//! when listed (starting, or created or stopped) is inspected right away
//! in the list's own task, the inspect waiting for a start to end (the
//! container's lock) while the event path goes on; one that answers
//! running is converged then, unless the event path has handled that
//! container since the inspect was asked for (its answer is older). The
//! event, when it comes, finds the container converged (one inspect, a
//! no-op apply). A container created long before its start (a restart) is
//! left to its event. Hints that come while a list is in flight ask for
//! one more list, of the [`RECENT_BURST`] newest, when it ends.
//!
//! Only a hint: nothing in the folder is read but the fact that it changed
//! and the names of the files created, each handed to
//! [`super::namespaces::Namespaces::prepare`], which opens the namespace
//! while Podman is still starting its container (a converge that follows
//! claims it, found by the namespace's identity, not by the name). At most
//! [`NAMES_MAX`] names per read of the folder; while a list is already due
//! the folder is not read, so the starts of a burst may be opened when they
//! are converged instead (slower, not different).
//! A list costs one request, plus one libpod inspect for each container in
//! it that is not running when listed, or running and neither managed, nor
//! left alone by the policy (network mode, label), nor waiting for a
//! retry. The folder is the engine's as the engine sees it: the API
//! socket's listener (`SO_PEERCRED`), when it is root and named `podman`
//! (the service) or `systemd` (socket activation), gives `/proc/<pid>/root`, so
//! a Podman in a mount namespace or a chroot of its own is followed too;
//! `/proc/<pid>` is held open, so a reused pid is never followed. Rootless
//! Podman and proxies are not watched (their events still are).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::debug;

use super::unix_nanos;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::DockerError;
use crate::engine_api::{EngineApi, EngineVersion};
use crate::model::ContainerInfo;

/// Where an engine creates its containers' namespace files, as this
/// process reaches them: a path, and what keeps it meaning the same
/// process (an open `/proc/<pid>` folder, so a pid reused later by another
/// process is never followed).
#[derive(Debug)]
pub struct NetnsFolder {
    path: PathBuf,
    _proc: Option<std::fs::File>,
}

impl NetnsFolder {
    /// A plain path (tests).
    pub fn at(path: impl Into<PathBuf>) -> NetnsFolder {
        NetnsFolder {
            path: path.into(),
            _proc: None,
        }
    }

    /// The folder of the rootful Podman (netavark's and its CNI backend's
    /// `/run/netns`) whose API socket's listener is process `pid` of user
    /// `uid`: the service itself, or systemd when socket-activated, under
    /// that process's root. Refused, with the reason: a listener that is not
    /// root (rootless Podman, a proxy of a user) or not named `podman` or
    /// `systemd` (a proxy in front of the engine: its root is not the
    /// engine's).
    pub fn of_listener(pid: u32, uid: u32) -> Result<NetnsFolder, String> {
        if uid != 0 {
            return Err(format!(
                "the socket's listener (pid {pid}) is user {uid}, not root: rootless Podman is not watched"
            ));
        }
        let proc =
            std::fs::File::open(format!("/proc/{pid}")).map_err(|e| format!("/proc/{pid}: {e}"))?;
        let fd = proc.as_raw_fd();
        let comm = std::fs::read_to_string(format!("/proc/self/fd/{fd}/comm"))
            .map_err(|e| format!("/proc/{pid}/comm: {e}"))?;
        let comm = comm.trim_end();
        if comm != "podman" && comm != "systemd" {
            return Err(format!(
                "the socket's listener (pid {pid}) is {:?}, not podman nor systemd",
                symroute_core::render::escape(comm)
            ));
        }
        Ok(NetnsFolder {
            path: PathBuf::from(format!("/proc/self/fd/{fd}/root/run/netns")),
            _proc: Some(proc),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An inotify watch on one folder: files created in it or moved into it.
pub(crate) struct FolderWatch {
    fd: AsyncFd<OwnedFd>,
}

impl FolderWatch {
    /// Watch `path` (a folder; a symlink to one is not followed).
    pub(crate) fn new(path: &Path) -> io::Result<FolderWatch> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the path"))?;
        // SAFETY: plain syscalls; the descriptor is owned right away.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW;
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd keeps its descriptor open for its whole life
        // and always returns the same one from as_raw_fd.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(FolderWatch { fd })
    }

    /// Wait for the next change and read everything pending: the names of
    /// the files created (at most [`NAMES_MAX`] per call), or `None` when
    /// the folder itself is gone (or the watch was dropped by the kernel):
    /// stop watching it.
    pub(crate) async fn changed(&self) -> io::Result<Option<Vec<OsString>>> {
        let mut buf = [0u8; 4096];
        loop {
            let mut guard = self.fd.readable().await?;
            let mut alive = true;
            let mut got = false;
            let mut names = Vec::new();
            loop {
                // SAFETY: reading into a buffer we own, of its own length.
                let n = unsafe {
                    libc::read(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                        break;
                    }
                    return Err(e);
                }
                let n = usize::try_from(n).unwrap_or(0);
                if n == 0 {
                    guard.clear_ready();
                    break;
                }
                got = true;
                let (gone, created) = read_events(&buf[..n.min(buf.len())]);
                alive &= !gone;
                let room = NAMES_MAX.saturating_sub(names.len());
                names.extend(created.into_iter().take(room));
            }
            if !alive {
                return Ok(None);
            }
            if got {
                return Ok(Some(names));
            }
        }
    }
}

/// The most file names one read of the folder's changes hands on.
pub const NAMES_MAX: usize = 16;

/// One read of inotify events: whether the watch is over (`IN_IGNORED`:
/// the folder was deleted or unmounted), and the names of the files created
/// or moved in, each a plain name (not empty, no `/`, not `.` or `..`).
/// `struct inotify_event` is wd (4), mask (4), cookie (4), len (4), then
/// `len` bytes of name, padded with NULs.
fn read_events(mut buf: &[u8]) -> (bool, Vec<OsString>) {
    use std::os::unix::ffi::OsStrExt;
    const HDR: usize = 16;
    let mut names = Vec::new();
    while buf.len() >= HDR {
        let mask = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let len = u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]);
        if mask & (libc::IN_IGNORED | libc::IN_UNMOUNT | libc::IN_DELETE_SELF) != 0 {
            return (true, names);
        }
        let step = HDR.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        if step > buf.len() {
            break;
        }
        if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 && mask & libc::IN_ISDIR == 0 {
            let name = buf[HDR..step].split(|b| *b == 0).next().unwrap_or_default();
            if !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') {
                names.push(std::ffi::OsStr::from_bytes(name).to_os_string());
            }
        }
        buf = &buf[step..];
    }
    (false, names)
}

/// How many of the newest containers a hint's list asks about: Podman
/// converts only those (each under its lock, 0.5 ms each measured on
/// Podman 4.3), not all it has; the one starting is the newest (and starts
/// that overlap it are asked for by the [`RECENT_BURST`] list that follows).
pub const RECENT: usize = 1;

/// How many a list asks about when hints came while the previous one was
/// in flight (a burst of starts).
pub const RECENT_BURST: usize = 8;

/// The engine's answer to a list: each of the newest containers, with, for
/// one that was not running when listed (a start in progress), its inspect,
/// asked for right away in the list's own task (where waiting for the
/// start to end holds nothing up).
pub(crate) type Listed = Result<Vec<(String, Option<Early>)>, DockerError>;

/// A container inspected by the list's task: the answer, and the daemon's
/// clock ([`super::container::Daemon::touch`]) when it was asked for, so
/// that one older than what the event path has handled since is dropped.
pub(crate) struct Early {
    pub(crate) info: ContainerInfo,
    pub(crate) at: u64,
    /// When it answered (CLOCK_REALTIME ns).
    pub(crate) answered_ns: i64,
}

/// The list asked for after a hint: at most one in flight; a hint that
/// comes while it is asks for one more when it ends (the list in flight
/// may have been answered before that start began).
pub(crate) struct HintList {
    /// The engine the lists are asked of (libpod's API is versioned).
    engine: EngineVersion,
    /// The daemon's event-path clock.
    clock: Arc<AtomicU64>,
    running: Option<(JoinHandle<()>, oneshot::Receiver<Listed>)>,
    again: bool,
    /// When the list in flight was asked for (CLOCK_REALTIME ns).
    asked_ns: i64,
}

impl Drop for HintList {
    fn drop(&mut self) {
        if let Some((task, _)) = &self.running {
            task.abort();
        }
    }
}

impl HintList {
    pub(crate) fn new(engine: EngineVersion, clock: Arc<AtomicU64>) -> HintList {
        HintList {
            engine,
            clock,
            running: None,
            again: false,
            asked_ns: 0,
        }
    }

    /// Whether a list is in flight.
    pub(crate) fn in_flight(&self) -> bool {
        self.running.is_some()
    }

    /// Whether another list is already due when the one in flight ends:
    /// more hints until then change nothing (the folder need not be read).
    pub(crate) fn queued(&self) -> bool {
        self.again
    }

    /// A hint came: list now, or once the list in flight is answered.
    pub(crate) fn hint<A: EngineApi>(&mut self, api: &A) {
        if self.running.is_some() {
            self.again = true;
            return;
        }
        self.ask(api, RECENT);
    }

    fn ask<A: EngineApi>(&mut self, api: &A, limit: usize) {
        let (tx, rx) = oneshot::channel();
        self.asked_ns = unix_nanos();
        let api = api.clone();
        let engine = self.engine.clone();
        let clock = self.clock.clone();
        let task = tokio::spawn(async move {
            let listed = match api.recent(limit, &engine).await {
                Ok(list) => {
                    let mut out = Vec::with_capacity(list.len());
                    for r in list {
                        if r.running {
                            out.push((r.id, None));
                            continue;
                        }
                        // Not running when listed: a start in progress (Podman 5
                        // answers before it ends), or one created or stopped. Its
                        // inspect waits for a start to end; an answer that is not a
                        // running container, or none, is left to the events.
                        let at = clock.load(Ordering::SeqCst);
                        match api.inspect_quick(&r.id, &engine).await {
                            Ok(info) if info.running => {
                                let answered_ns = unix_nanos();
                                out.push((
                                    r.id,
                                    Some(Early {
                                        info,
                                        at,
                                        answered_ns,
                                    }),
                                ));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                debug!(container = %r.id, error = %e, "hint: cannot inspect a start in progress; its event will tell");
                            }
                        }
                    }
                    Ok(out)
                }
                Err(e) => Err(e),
            };
            let _ = tx.send(listed);
        });
        self.running = Some((task, rx));
    }

    /// The answer of the list in flight (pending forever when none is),
    /// with when it was asked for; a queued hint is asked for next.
    pub(crate) async fn answer<A: EngineApi>(&mut self, api: &A) -> (Listed, i64) {
        let got = match &mut self.running {
            Some((_, rx)) => rx.await,
            None => std::future::pending().await,
        };
        self.running = None;
        let asked = self.asked_ns;
        if std::mem::take(&mut self.again) {
            self.ask(api, RECENT_BURST);
        }
        let got = got.unwrap_or_else(|_| {
            Err(DockerError::Engine {
                what: "list containers".into(),
                message: "the list task ended".into(),
            })
        });
        (got, asked)
    }
}

/// The next change of `watch`, pending forever when there is none.
pub(crate) async fn next(watch: &Option<FolderWatch>) -> io::Result<Option<Vec<OsString>>> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(mask: u32, name: &[u8]) -> Vec<u8> {
        let len = u32::try_from(name.len()).unwrap_or(0);
        let mut v = Vec::new();
        v.extend_from_slice(&1i32.to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(name);
        v
    }

    #[test]
    fn only_a_root_podman_or_systemd_listener_is_followed() {
        let me = std::process::id();
        let uid = unsafe { libc::geteuid() };
        // This test process is neither podman nor systemd.
        let refused = NetnsFolder::of_listener(me, 0).expect_err("not podman");
        assert!(refused.contains("not podman nor systemd"), "{refused}");
        let rootless = NetnsFolder::of_listener(me, 1000).expect_err("rootless");
        assert!(rootless.contains("user 1000, not root"), "{rootless}");
        let _ = uid;
        assert!(NetnsFolder::of_listener(u32::MAX, 0).is_err());
    }

    #[test]
    fn a_created_file_is_not_the_end_of_the_watch_an_ignored_one_is() {
        let mut created = event(libc::IN_CREATE, b"netns-1\0\0\0\0\0\0\0\0\0");
        assert_eq!(
            read_events(&created),
            (false, vec![OsString::from("netns-1")])
        );
        created.extend(event(libc::IN_IGNORED, b""));
        assert!(read_events(&created).0);
        assert!(read_events(&event(libc::IN_DELETE_SELF, b"")).0);
        // A truncated event is not read past its end.
        let mut cut = event(libc::IN_CREATE, b"netns-2\0");
        cut.truncate(20);
        assert_eq!(read_events(&cut), (false, vec![]));
    }

    #[test]
    fn only_plain_names_of_files_created_or_moved_in_are_handed_on() {
        let mut buf = Vec::new();
        for (mask, name) in [
            (libc::IN_CREATE, &b"netns-a\0"[..]),
            (libc::IN_MOVED_TO, b"netns-b\0\0\0"),
            (libc::IN_CREATE | libc::IN_ISDIR, b"folder\0"),
            (libc::IN_CREATE, b"..\0"),
            (libc::IN_CREATE, b".\0"),
            (libc::IN_CREATE, b"a/b\0"),
            (libc::IN_CREATE, b"\0\0\0\0"),
            (libc::IN_CREATE, b""),
            (libc::IN_ATTRIB, b"netns-c\0"),
        ] {
            buf.extend(event(mask, name));
        }
        let (gone, names) = read_events(&buf);
        assert!(!gone);
        assert_eq!(
            names,
            vec![OsString::from("netns-a"), OsString::from("netns-b")]
        );
    }

    #[tokio::test]
    async fn a_file_created_in_the_folder_wakes_the_watch() {
        let dir = std::env::temp_dir().join(format!("symroute-hint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let w = FolderWatch::new(&dir).expect("watch");
        std::fs::write(dir.join("netns-abc"), b"").expect("create");
        let names = w.changed().await.expect("changed").expect("alive");
        assert_eq!(names, vec![OsString::from("netns-abc")]);
        std::fs::create_dir(dir.join("sub")).expect("mkdir sub");
        let names = w.changed().await.expect("changed").expect("alive");
        assert!(
            names.is_empty(),
            "a folder is not a namespace file: {names:?}"
        );
        std::fs::remove_dir_all(&dir).expect("rm");
        assert!(w.changed().await.expect("changed").is_none());
    }
}
