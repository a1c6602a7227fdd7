//! Network namespaces: opening a target, checking it really is one, telling
//! whether it is the host's, and running work inside it.
//!
//! `setns` changes only the calling thread, so every entry happens on a
//! throwaway thread that never runs anything else. A netlink socket opened
//! there stays bound to that namespace and can be used from any thread.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::netlink::{NetlinkError, NlSocket};

/// Errors about a namespace target.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a network namespace")]
    NotNetns { path: PathBuf },
    #[error(
        "{path} is the host's own network namespace (that of PID 1); refusing to change the host's routing (pass --allow-host-netns to override)"
    )]
    HostNamespace { path: PathBuf },
    #[error("entering network namespace {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("netlink socket in network namespace {path}: {source}")]
    Socket { path: PathBuf, source: NetlinkError },
    #[error("thread working in network namespace {path} panicked")]
    Thread { path: PathBuf },
}

/// nsfs's filesystem magic, from linux/magic.h.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// An opened network namespace.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Open `path` (e.g. /run/netns/web, /proc/1234/ns/net) and check that it
    /// is a network namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| NetnsError::Open {
            path: path.clone(),
            source: e.into(),
        })?;
        // The magic's type differs between libc targets; compare as i64.
        #[allow(
            clippy::unnecessary_cast,
            reason = "f_type is i64 on some targets only"
        )]
        let magic = fs.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC {
            return Err(NetnsError::NotNetns { path });
        }
        // NS_GET_NSTYPE tells a network namespace from the other kinds.
        // SAFETY: the ioctl takes no argument and only reads the fd.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(NetnsError::NotNetns { path });
        }
        Ok(Netns { path, file })
    }

    /// The namespace of process `pid`.
    pub fn of_pid(pid: u32) -> Result<Self, NetnsError> {
        Self::open(format!("/proc/{pid}/ns/net"))
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// (device, inode): a namespace's identity.
    pub fn id(&self) -> Result<(u64, u64), NetnsError> {
        let m = self.file.metadata().map_err(|source| NetnsError::Open {
            path: self.path.clone(),
            source,
        })?;
        Ok((m.dev(), m.ino()))
    }

    /// Whether this is the host's namespace: that of PID 1, or, where PID 1's
    /// cannot be read (some sandboxes hide it), the one symroute itself runs in.
    pub fn is_host(&self) -> Result<bool, NetnsError> {
        let me = self.id()?;
        let same = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()) == me).ok();
        match same("/proc/1/ns/net") {
            Some(true) => Ok(true),
            Some(false) => Ok(false),
            None => {
                let own = Path::new("/proc/self/ns/net");
                let m = std::fs::metadata(own).map_err(|source| NetnsError::Open {
                    path: own.to_path_buf(),
                    source,
                })?;
                Ok((m.dev(), m.ino()) == me)
            }
        }
    }

    /// Fail with [`NetnsError::HostNamespace`] if this is the host's namespace.
    pub fn refuse_host(&self) -> Result<(), NetnsError> {
        if self.is_host()? {
            return Err(NetnsError::HostNamespace {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Run `f` on a fresh thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let fd = self.fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                    path: self.path.clone(),
                    source,
                })?;
                Ok(f())
            })
            .join()
            .map_err(|_| NetnsError::Thread {
                path: self.path.clone(),
            })?
        })
    }

    /// A netlink socket bound to this namespace, made by the calling thread
    /// itself: it enters the namespace, opens the socket and returns at once
    /// (aborting the process if it cannot return, so nothing ever goes on
    /// inside the target). For short single-threaded processes such as the
    /// CNI plugin, which spares a thread per run; everything else uses
    /// [`Netns::socket`].
    pub fn socket_on_this_thread(&self) -> Result<NlSocket, NetnsError> {
        let home_path = Path::new("/proc/thread-self/ns/net");
        let home = File::open(home_path).map_err(|source| NetnsError::Open {
            path: home_path.to_path_buf(),
            source,
        })?;
        setns(self.fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            path: self.path.clone(),
            source,
        })?;
        let sock = NlSocket::new();
        if let Err(e) = setns(&home, CloneFlags::CLONE_NEWNET) {
            eprintln!("symroute: cannot return to the caller's network namespace: {e}");
            std::process::abort();
        }
        sock.map_err(|source| NetnsError::Socket {
            path: self.path.clone(),
            source,
        })
    }

    /// A netlink socket bound to this namespace.
    pub fn socket(&self) -> Result<NlSocket, NetnsError> {
        self.run(NlSocket::new)?
            .map_err(|source| NetnsError::Socket {
                path: self.path.clone(),
                source,
            })
    }
}

/// `_IO(0xb7, 0x3)` from linux/nsfs.h.
const NS_GET_NSTYPE: u64 = 0xb703;
