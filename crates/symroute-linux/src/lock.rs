//! The per-namespace lock every writer takes (CLI apply and clean, the
//! daemon, every CNI attachment): an exclusive `flock(2)` on the namespace
//! file itself.
//!
//! Every path to one network namespace (`/run/netns/x`, `/proc/PID/ns/net`,
//! a Docker `SandboxKey`) opens the same nsfs inode, and flock locks belong
//! to the inode, so writers that reached the namespace by different paths
//! still exclude each other. No file is ever created next to the namespace
//! path, and the lock goes with the descriptor: a writer killed with
//! SIGKILL releases it.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another writer kept the namespace longer than the wait.
    #[error(
        "network namespace {path} is locked by another symroute writer for more than {waited:?}: try again"
    )]
    Busy { path: PathBuf, waited: Duration },
    #[error("lock network namespace {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Holds the namespace's lock for as long as it lives.
#[derive(Debug)]
pub struct NsLock<'a> {
    ns: &'a Netns,
}

impl Drop for NsLock<'_> {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor `ns` keeps open; unlocking cannot
        // fail in a way that matters (closing the descriptor unlocks too).
        unsafe {
            libc::flock(self.ns.fd().as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Lock `ns` exclusively, waiting up to `timeout`.
pub fn lock(ns: &Netns, timeout: Duration) -> Result<NsLock<'_>, LockError> {
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: flock only reads the descriptor, which `ns` keeps open.
        let rc = unsafe { libc::flock(ns.fd().as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(NsLock { ns });
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK | libc::EINTR) => {}
            _ => {
                return Err(LockError::Io {
                    path: ns.path().to_path_buf(),
                    source: err,
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(LockError::Busy {
                path: ns.path().to_path_buf(),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
