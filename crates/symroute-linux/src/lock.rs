//! The per-namespace lock every writer takes (CLI apply and clean, the
//! daemon, every CNI attachment): an abstract unix socket bound in the
//! WRITER's own network namespace, named after the target namespace's
//! identity, `\0symroute/ns-lock/<st_dev>-<st_ino>`.
//!
//! `bind(2)` of an abstract name that another socket holds fails with
//! `EADDRINUSE`, so one writer at a time holds it; the name is released when
//! the holder's descriptor closes or the process dies (SIGKILL included). No
//! file is created anywhere, and nothing inside the target namespace can
//! hold it: abstract socket names belong to the network namespace of the
//! socket, and a container's processes bind in the container's namespace,
//! never in the host's. (An earlier version took `flock(2)` on the namespace
//! file itself; any process in the container could flock
//! `/proc/self/ns/net`, the same inode, and block every writer forever.)
//!
//! Writers exclude each other only when they run in the same network
//! namespace. All of symroute's writers run in the host's: the CLI, the CNI
//! plugin (runtimes run plugins in the host namespace) and the daemon (its
//! container runs with `--network host`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another writer kept the namespace longer than the wait.
    #[error(
        "network namespace {path}: the namespace's lock is held by another writer for more than {waited:?}: try again"
    )]
    Busy { path: PathBuf, waited: Duration },
    #[error("lock network namespace {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The interrupt flag was set while waiting.
    #[error("network namespace {path}: interrupted while waiting for the namespace's lock")]
    Interrupted { path: PathBuf },
}

/// Holds the namespace's lock for as long as it lives (the bound socket;
/// closing it releases the name).
#[derive(Debug)]
pub struct NsLock<'a> {
    _sock: OwnedFd,
    _ns: std::marker::PhantomData<&'a Netns>,
}

/// The abstract socket name for the namespace `(dev, ino)`, without the
/// leading NUL.
pub fn lock_name(id: (u64, u64)) -> String {
    format!("symroute/ns-lock/{}-{}", id.0, id.1)
}

/// `sockaddr_un` for the abstract name `name` and its length.
fn abstract_addr(name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays 0: the abstract namespace.
    let bytes = name.as_bytes();
    let n = bytes.len().min(addr.sun_path.len() - 1);
    for (d, s) in addr.sun_path[1..=n].iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + 1 + n;
    (addr, len as libc::socklen_t)
}

/// Lock `ns` exclusively, waiting up to `timeout`.
pub fn lock(ns: &Netns, timeout: Duration) -> Result<NsLock<'_>, LockError> {
    lock_interruptible(ns, timeout, None)
}

/// [`lock`], giving up with [`LockError::Interrupted`] as soon as
/// `interrupt` is set (checked between attempts, every few milliseconds).
pub fn lock_interruptible<'a>(
    ns: &'a Netns,
    timeout: Duration,
    interrupt: Option<&AtomicBool>,
) -> Result<NsLock<'a>, LockError> {
    let io = |source| LockError::Io {
        path: ns.path().to_path_buf(),
        source,
    };
    let id = ns
        .id()
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let (addr, len) = abstract_addr(&lock_name(id));
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // A timeout too large for the clock: wait without a deadline.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        // SAFETY: addr is a valid sockaddr_un of length len.
        let rc = unsafe { libc::bind(sock.as_raw_fd(), (&raw const addr).cast(), len) };
        if rc == 0 {
            return Ok(NsLock {
                _sock: sock,
                _ns: std::marker::PhantomData,
            });
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EADDRINUSE | libc::EINTR) => {}
            _ => return Err(io(err)),
        }
        if interrupt.is_some_and(|f| f.load(Ordering::SeqCst)) {
            return Err(LockError::Interrupted {
                path: ns.path().to_path_buf(),
            });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(LockError::Busy {
                path: ns.path().to_path_buf(),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_an_abstract_address() {
        let name = lock_name((u64::MAX, u64::MAX));
        let (addr, len) = abstract_addr(&name);
        assert_eq!(addr.sun_path[0], 0);
        assert_eq!(
            len as usize,
            size_of::<libc::sa_family_t>() + 1 + name.len()
        );
        assert!(name.len() < addr.sun_path.len() - 1);
    }
}
