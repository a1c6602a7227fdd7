//! Lab fixtures: anonymous network namespaces wired together with veth pairs
//! and bridges, used by the integration tests and by `symroute demo`.
//!
//! Everything is configured through rtnetlink and `/proc/sys`, never by
//! running `ip`. Every namespace is anonymous (no `/run/netns` file): it lives
//! exactly as long as something holds it (the [`Ns`] value, its netlink
//! socket, sockets created inside it, processes running inside it). Dropping
//! the [`Ns`], or the process dying for any reason including `kill -9`,
//! removes it together with its interfaces, routes and firewall rules. Nothing
//! here touches the host's own namespace.
//!
//! Namespaces are entered only by throwaway threads (and by child processes
//! between `fork` and `exec`), so several labs can be built concurrently from
//! parallel test threads of one process.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::sched::{CloneFlags, setns, unshare};

use symroute_linux::netlink::{NetlinkError, NlSocket};
use symroute_linux::netns::{Netns, NetnsError};

mod links;
mod routing;
pub mod seed;
mod tcp;

pub use seed::{SeedLab, SeedOptions};
pub use tcp::TcpServer;

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

/// A lab operation that failed. Every variant names the namespace (by the
/// human name given to [`Ns::new`]) and the operation with its object, e.g.
/// `add address 172.18.0.2/16 to eth1 in ns ctr: File exists (os error 17)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The kernel (or the netlink transport) refused a request.
    #[error("{what} in ns {ns}: {source}")]
    Netlink {
        /// Namespace name.
        ns: String,
        /// The operation and its object.
        what: String,
        /// The underlying error.
        source: NetlinkError,
    },
    /// Opening or entering the namespace failed.
    #[error("{what} in ns {ns}: {source}")]
    Netns {
        /// Namespace name.
        ns: String,
        /// The operation and its object.
        what: String,
        /// The underlying error.
        source: NetnsError,
    },
    /// A system call, a file under `/proc/sys`, a socket or a process failed.
    #[error("{what} in ns {ns}: {source}")]
    Io {
        /// Namespace name.
        ns: String,
        /// The operation and its object.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Anything else: a command that exited unsuccessfully, a request the lab
    /// refuses before asking the kernel, an unexpected answer, a timeout.
    #[error("{what} in ns {ns}: {detail}")]
    Failed {
        /// Namespace name.
        ns: String,
        /// The operation and its object.
        what: String,
        /// What went wrong.
        detail: String,
    },
}

/// Whether `iptables` can be run (`iptables -V` succeeds). The demo falls
/// back to the routed (no NAT) seed when it cannot.
pub fn iptables_available() -> bool {
    tool_available("iptables")
}

/// Whether `ip6tables` can be run (`ip6tables -V` succeeds).
pub fn ip6tables_available() -> bool {
    tool_available("ip6tables")
}

fn tool_available(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An anonymous network namespace with a netlink socket bound to it.
///
/// The namespace stays alive while this value (or a socket or process inside
/// the namespace) exists, and disappears with it.
pub struct Ns {
    name: String,
    /// Reopened through `/proc/<pid>/fd/<anchor fd>`, so that its path is
    /// meaningful from any thread and to child processes.
    netns: Netns,
    /// The descriptor opened by the thread that created the namespace.
    anchor: Netns,
    nl: Mutex<NlSocket>,
}

impl fmt::Debug for Ns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ns")
            .field("name", &self.name)
            .field("path", &self.netns.path())
            .finish_non_exhaustive()
    }
}

impl Ns {
    /// Create a new anonymous network namespace called `name` (the name only
    /// appears in messages) and bring its `lo` up.
    pub fn new(name: impl Into<String>) -> Result<Ns, LabError> {
        let name = name.into();
        let thread_name = name.clone();
        let creator = std::thread::Builder::new()
            .spawn(move || -> Result<(Netns, NlSocket), LabError> {
                let ns = thread_name;
                let what = "create network namespace";
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| LabError::Io {
                    ns: ns.clone(),
                    what: what.into(),
                    source: e.into(),
                })?;
                let anchor =
                    Netns::open("/proc/thread-self/ns/net").map_err(|source| LabError::Netns {
                        ns: ns.clone(),
                        what: what.into(),
                        source,
                    })?;
                let nl = NlSocket::new().map_err(|source| LabError::Netlink {
                    ns,
                    what: "open netlink socket".into(),
                    source,
                })?;
                Ok((anchor, nl))
            })
            .map_err(|source| LabError::Io {
                ns: name.clone(),
                what: "start thread to create network namespace".into(),
                source,
            })?;
        let (anchor, nl) = creator.join().map_err(|_| LabError::Failed {
            ns: name.clone(),
            what: "create network namespace".into(),
            detail: "thread panicked".into(),
        })??;
        let path = format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            anchor.fd().as_raw_fd()
        );
        let netns = Netns::open(&path).map_err(|source| LabError::Netns {
            ns: name.clone(),
            what: format!("reopen namespace as {path}"),
            source,
        })?;
        let ns = Ns {
            name,
            netns,
            anchor,
            nl: Mutex::new(nl),
        };
        ns.link_up("lo")?;
        Ok(ns)
    }

    /// The human name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace, for code that works on a [`Netns`].
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// `/proc/<our pid>/fd/<fd>`: a path that other processes (the symroute
    /// binary under test, `nsenter --net=...`) can open while this value
    /// lives. Opening it needs the same privileges as ptrace-reading us
    /// (root, or our own user).
    pub fn path(&self) -> PathBuf {
        self.netns.path().to_path_buf()
    }

    /// Run `f` with the namespace's netlink socket (for requests the lab has
    /// no helper for). The socket is locked meanwhile: `f` must not call
    /// other methods of this `Ns`.
    pub fn with_netlink<T>(&self, f: impl FnOnce(&mut NlSocket) -> T) -> T {
        f(&mut self.socket())
    }

    /// Run `f` on a throwaway thread that has entered the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
        self.netns.run(f).map_err(|source| LabError::Netns {
            ns: self.name.clone(),
            what: "enter namespace".into(),
            source,
        })
    }

    fn socket(&self) -> MutexGuard<'_, NlSocket> {
        // A panic while holding the lock cannot leave the socket in a state
        // worse than a failed request, so a poisoned lock is still usable.
        self.nl.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn request(&self, what: String, msg: RouteNetlinkMessage, flags: u16) -> Result<(), LabError> {
        self.socket()
            .request(msg, flags)
            .map_err(|source| self.nl_err(what, source))
    }

    fn nl_err(&self, what: String, source: NetlinkError) -> LabError {
        LabError::Netlink {
            ns: self.name.clone(),
            what,
            source,
        }
    }

    fn io_err(&self, what: String, source: io::Error) -> LabError {
        LabError::Io {
            ns: self.name.clone(),
            what,
            source,
        }
    }

    fn failed(&self, what: String, detail: impl Into<String>) -> LabError {
        LabError::Failed {
            ns: self.name.clone(),
            what,
            detail: detail.into(),
        }
    }

    fn get_link(&self, name: &str) -> Result<LinkMessage, LabError> {
        let what = || format!("look up link {name}");
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let answer = self
            .socket()
            .get(RouteNetlinkMessage::GetLink(msg))
            .map_err(|source| self.nl_err(what(), source))?;
        match answer {
            RouteNetlinkMessage::NewLink(link) => Ok(link),
            other => Err(self.failed(what(), format!("unexpected answer {other:?}"))),
        }
    }
}

impl Ns {
    /// Write a sysctl inside the namespace. `key` is dotted
    /// (`net.ipv4.conf.all.rp_filter`) or, for interface names containing
    /// dots, a path relative to `/proc/sys` (`net/ipv4/conf/eth0.5/rp_filter`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let path = sysctl_path(key);
        let what = format!("set sysctl {key}={value}");
        // /proc/sys/net shows the namespace of the thread that opens the file.
        self.run(|| std::fs::write(&path, value))?
            .map_err(|source| self.io_err(what, source))
    }

    /// Read a sysctl inside the namespace (trimmed). Keys as for [`Ns::sysctl`].
    pub fn sysctl_get(&self, key: &str) -> Result<String, LabError> {
        let path = sysctl_path(key);
        let text = self
            .run(|| std::fs::read_to_string(&path))?
            .map_err(|source| self.io_err(format!("read sysctl {key}"), source))?;
        Ok(text.trim().to_string())
    }

    /// A [`Command`] whose process runs inside this namespace (it enters it
    /// between `fork` and `exec`; only the network namespace changes). The
    /// command keeps its own duplicate of the namespace descriptor, so it
    /// stays valid even if this `Ns` is dropped first.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let fd: Result<OwnedFd, i32> = self
            .anchor
            .fd()
            .try_clone_to_owned()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EMFILE));
        let mut cmd = Command::new(program);
        // SAFETY: the hook runs in the forked child before exec and only makes
        // the setns system call (async-signal-safe) on a descriptor owned by
        // the closure, or builds an io::Error from an errno (no allocation).
        unsafe {
            cmd.pre_exec(move || match &fd {
                Ok(fd) => setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from),
                Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
            });
        }
        cmd
    }

    /// Run `program args...` inside the namespace, with stdin closed, and
    /// return its standard output. Fails with the exit status and standard
    /// error when it does not succeed.
    pub fn run_cmd<I, S>(&self, program: &str, args: I) -> Result<String, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut line = program.to_string();
        for arg in &args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        let what = format!("run `{line}`");
        let output = self
            .command(program)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| self.io_err(what.clone(), source))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(self.failed(what, format!("{}: {}", output.status, stderr.trim())));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    let rel = if key.contains('/') {
        key.trim_start_matches('/').to_string()
    } else {
        key.replace('.', "/")
    };
    PathBuf::from("/proc/sys").join(rel)
}
