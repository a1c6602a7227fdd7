//! Network namespaces: opening a target, checking it really is one, telling
//! whether it is the host's, and running work inside it.
//!
//! `setns` changes only the calling thread, so every entry happens on a
//! throwaway thread that never runs anything else. A netlink socket opened
//! there stays bound to that namespace and can be used from any thread.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    /// The host's namespace (the initial network namespace). The text
    /// names no flag: each edge adds its own way to override.
    #[error(
        "{path} is the host's own network namespace (the initial network namespace, {how}); refusing to change the host's routing"
    )]
    HostNamespace { path: PathBuf, how: String },
    /// Neither the kernel nor PID 1 can tell whether `path` is the host's.
    #[error(
        "cannot tell whether {path} is the host's own network namespace (the initial one): kernel {release} gives the initial namespace no fixed inode (Linux 6.18 and later do) and /proc/1/ns/net cannot be read ({pid1}); refusing to change it"
    )]
    HostUndecidable {
        path: PathBuf,
        release: String,
        pid1: std::io::Error,
    },
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
        // Without blocking (a FIFO given as the path must not hang), and
        // checked to be nsfs before anything else is done with it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| NetnsError::Open {
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

    /// Whether this is the host's network namespace (the initial one).
    ///
    /// Decided by, in order: the fixed inode of the initial network
    /// namespace ([`PROC_NET_INIT_INO`]), which proves "host" on any kernel
    /// and, on kernels that have it (6.18 and later), its absence proves "not
    /// host"; then PID 1's namespace where it can be read. Where neither
    /// decides, [`NetnsError::HostUndecidable`]: never a guess from the
    /// namespace symroute itself runs in (`ip netns exec X symroute ...`
    /// would make every other namespace, the host's too, look foreign).
    pub fn is_host(&self) -> Result<bool, NetnsError> {
        let me = self.id()?;
        let release = kernel_release();
        let pid1 = std::fs::metadata("/proc/1/ns/net").map(|m| (m.dev(), m.ino()));
        match host_decision(me, parse_release(&release), pid1.as_ref().ok().copied()) {
            Some(host) => Ok(host),
            None => Err(NetnsError::HostUndecidable {
                path: self.path.clone(),
                release,
                pid1: pid1
                    .err()
                    .unwrap_or_else(|| std::io::Error::other("unreadable")),
            }),
        }
    }

    /// Fail with [`NetnsError::HostNamespace`] if this is the host's
    /// namespace, or [`NetnsError::HostUndecidable`] if that cannot be told.
    pub fn refuse_host(&self) -> Result<(), NetnsError> {
        if self.is_host()? {
            let (_, ino) = self.id()?;
            return Err(NetnsError::HostNamespace {
                path: self.path.clone(),
                how: if ino == PROC_NET_INIT_INO {
                    format!("inode {ino}")
                } else {
                    "that of PID 1".to_string()
                },
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

/// The inode of the initial network namespace on nsfs, `NET_NS_INIT_INO`
/// in linux/nsfs.h (`PROC_NET_INIT_INO` in linux/proc_ns.h): fixed since
/// Linux 6.18; earlier kernels numbered it like any other namespace.
/// Namespaces other than the initial ones get inodes from 0xF0000000 up
/// (`proc_alloc_inum`), so this number is never anyone else's.
pub const PROC_NET_INIT_INO: u64 = 0xEFFF_FFF9;

/// First kernel release whose initial network namespace has
/// [`PROC_NET_INIT_INO`].
const FIXED_INIT_INO_SINCE: (u32, u32) = (6, 18);

/// The running kernel's release (`uname -r`).
fn kernel_release() -> String {
    nix_uname_release().unwrap_or_else(|| "(unknown)".to_string())
}

fn nix_uname_release() -> Option<String> {
    // SAFETY: uname fills the struct it is given; it is zeroed first.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates every field.
    let c = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    Some(c.to_string_lossy().into_owned())
}

/// "6.18.44-fc-v657" → (6, 18).
fn parse_release(r: &str) -> Option<(u32, u32)> {
    let mut it = r.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Host or not, from the namespace's (dev, inode), the kernel's release and
/// PID 1's namespace (when readable); `None` when nothing decides.
fn host_decision(
    me: (u64, u64),
    release: Option<(u32, u32)>,
    pid1: Option<(u64, u64)>,
) -> Option<bool> {
    if me.1 == PROC_NET_INIT_INO {
        return Some(true);
    }
    if release.is_some_and(|r| r >= FIXED_INIT_INO_SINCE) {
        return Some(false);
    }
    pid1.map(|p| p == me)
}

/// `_IO(0xb7, 0x3)` from linux/nsfs.h.
const NS_GET_NSTYPE: u64 = 0xb703;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_decision_never_guesses() {
        let init = (4, PROC_NET_INIT_INO);
        let other = (4, 0xF000_0123);
        assert_eq!(host_decision(init, Some((5, 10)), None), Some(true));
        assert_eq!(host_decision(init, None, Some(other)), Some(true));
        assert_eq!(host_decision(other, Some((6, 18)), None), Some(false));
        assert_eq!(host_decision(other, Some((7, 0)), Some(other)), Some(false));
        assert_eq!(host_decision(other, Some((6, 17)), Some(other)), Some(true));
        assert_eq!(
            host_decision(other, Some((6, 17)), Some((4, 9))),
            Some(false)
        );
        assert_eq!(host_decision(other, Some((6, 17)), None), None);
        assert_eq!(host_decision(other, None, None), None);
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0"), Some((5, 4)));
        assert_eq!(parse_release("junk"), None);
    }
}
