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

pub use seed::{SeedLab, SeedOptions};

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

    /// The interface index of link `name`.
    pub fn link_index(&self, name: &str) -> Result<u32, LabError> {
        Ok(self.get_link(name)?.header.index)
    }

    /// The MAC address of link `name`.
    pub fn link_mac(&self, name: &str) -> Result<[u8; 6], LabError> {
        let link = self.get_link(name)?;
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| {
                self.failed(
                    format!("read MAC address of {name}"),
                    "no 6-byte hardware address",
                )
            })
    }

    /// Set the MAC address of link `name`.
    pub fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), LabError> {
        let mut msg = LinkMessage::default();
        msg.header.index = self.link_index(name)?;
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        let text = mac.map(|b| format!("{b:02x}")).join(":");
        self.request(
            format!("set MAC address of {name} to {text}"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Create a veth pair: `name` in this namespace, `peer_name` directly in
    /// `peer` (which may be this namespace). Both ends start down.
    pub fn veth(&self, name: &str, peer: &Ns, peer_name: &str) -> Result<(), LabError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer_name.to_string()));
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(peer.anchor.fd().as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        // `peer` stays borrowed until the kernel has read the descriptor:
        // rtnetlink handles the request inside our sendmsg call.
        self.request(
            format!(
                "create veth {name} with peer {peer_name} in ns {}",
                peer.name
            ),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Create a bridge (down, STP off so ports forward at once).
    pub fn bridge(&self, name: &str) -> Result<(), LabError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Enslave `link` to `bridge`.
    pub fn set_master(&self, link: &str, bridge: &str) -> Result<(), LabError> {
        let bridge_index = self.link_index(bridge)?;
        let mut msg = LinkMessage::default();
        msg.header.index = self.link_index(link)?;
        msg.attributes.push(LinkAttribute::Controller(bridge_index));
        self.request(
            format!("enslave {link} to {bridge}"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    fn set_up(&self, name: &str, up: bool) -> Result<(), LabError> {
        let mut msg = LinkMessage::default();
        msg.header.index = self.link_index(name)?;
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        let state = if up { "up" } else { "down" };
        self.request(
            format!("set link {name} {state}"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Bring link `name` administratively up.
    pub fn link_up(&self, name: &str) -> Result<(), LabError> {
        self.set_up(name, true)
    }

    /// Bring link `name` administratively down.
    pub fn link_down(&self, name: &str) -> Result<(), LabError> {
        self.set_up(name, false)
    }

    /// Delete link `name` (for a veth, its peer goes too).
    pub fn del_link(&self, name: &str) -> Result<(), LabError> {
        let mut msg = LinkMessage::default();
        msg.header.index = self.link_index(name)?;
        self.request(
            format!("delete link {name}"),
            RouteNetlinkMessage::DelLink(msg),
            0,
        )
    }

    fn address_message(
        &self,
        link: &str,
        addr: IpNet,
        flags: AddressFlags,
    ) -> Result<AddressMessage, LabError> {
        let mut msg = AddressMessage::default();
        msg.header.index = self.link_index(link)?;
        msg.header.prefix_len = addr.prefix_len();
        msg.header.flags = AddressHeaderFlags::from_bits_truncate(flags.bits() as u8);
        match addr {
            IpNet::V4(net) => {
                msg.header.family = AddressFamily::Inet;
                msg.header.scope = if net.addr().is_loopback() {
                    AddressScope::Host
                } else {
                    AddressScope::Universe
                };
                msg.attributes.push(AddressAttribute::Local(addr.addr()));
                msg.attributes.push(AddressAttribute::Address(addr.addr()));
                if net.prefix_len() < 31 {
                    msg.attributes
                        .push(AddressAttribute::Broadcast(net.broadcast()));
                }
            }
            IpNet::V6(net) => {
                msg.header.family = AddressFamily::Inet6;
                msg.header.scope = if net.addr().is_loopback() {
                    AddressScope::Host
                } else if net.addr().is_unicast_link_local() {
                    AddressScope::Link
                } else {
                    AddressScope::Universe
                };
                msg.attributes.push(AddressAttribute::Address(addr.addr()));
            }
        }
        if !flags.is_empty() {
            msg.attributes.push(AddressAttribute::Flags(flags));
        }
        Ok(msg)
    }

    fn new_address(&self, link: &str, addr: IpNet, flags: AddressFlags) -> Result<(), LabError> {
        let msg = self.address_message(link, addr, flags)?;
        self.request(
            format!("add address {addr} to {link}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Add `addr` to `link`. IPv6 addresses are added with `nodad`, so they
    /// are usable at once.
    pub fn add_addr(&self, link: &str, addr: IpNet) -> Result<(), LabError> {
        let flags = match addr {
            IpNet::V4(_) => AddressFlags::empty(),
            IpNet::V6(_) => AddressFlags::Nodad,
        };
        self.new_address(link, addr, flags)
    }

    /// Add `addr` to `link` leaving duplicate address detection on: an IPv6
    /// address stays tentative (unusable for bind and `src`) until DAD is
    /// over, which needs the link up with carrier and `accept_dad` > 0.
    pub fn add_addr_dad(&self, link: &str, addr: IpNet) -> Result<(), LabError> {
        self.new_address(link, addr, AddressFlags::empty())
    }

    /// Remove `addr` from `link`.
    pub fn del_addr(&self, link: &str, addr: IpNet) -> Result<(), LabError> {
        let msg = self.address_message(link, addr, AddressFlags::empty())?;
        self.request(
            format!("delete address {addr} from {link}"),
            RouteNetlinkMessage::DelAddress(msg),
            0,
        )
    }

    /// The namespace's addresses that are still tentative (IPv6 DAD running).
    pub fn tentative_addresses(&self) -> Result<Vec<IpAddr>, LabError> {
        let answers = self
            .socket()
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .map_err(|source| self.nl_err("list addresses".into(), source))?;
        let mut out = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewAddress(msg) = answer else {
                continue;
            };
            let mut tentative = msg.header.flags.contains(AddressHeaderFlags::Tentative);
            let mut address = None;
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Flags(f) => {
                        tentative |= f.contains(AddressFlags::Tentative);
                    }
                    AddressAttribute::Address(a) => address = Some(*a),
                    _ => {}
                }
            }
            if let (true, Some(a)) = (tentative, address) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Wait until no address in the namespace is tentative, polling every
    /// 50 ms, failing after `timeout`.
    pub fn wait_no_tentative(&self, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let tentative = self.tentative_addresses()?;
            if tentative.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let list: Vec<String> = tentative.iter().map(ToString::to_string).collect();
                return Err(self.failed(
                    "wait for duplicate address detection".into(),
                    format!("still tentative after {timeout:?}: {}", list.join(", ")),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn route_message(
        &self,
        what: &str,
        dst: IpNet,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
        table: u32,
    ) -> Result<RouteMessage, LabError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match dst {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = header_table(table);
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(route_address(dst.addr())));
        }
        if let Some(gw) = gateway {
            if gw.is_ipv4() != dst.addr().is_ipv4() {
                return Err(self.failed(
                    what.to_string(),
                    "gateway and destination are of different families",
                ));
            }
            if let IpAddr::V6(v6) = gw
                && v6.is_unicast_link_local()
                && dev.is_none()
            {
                return Err(self.failed(what.to_string(), "a link-local gateway needs a device"));
            }
            msg.attributes
                .push(RouteAttribute::Gateway(route_address(gw)));
        }
        if let Some(dev) = dev {
            msg.attributes
                .push(RouteAttribute::Oif(self.link_index(dev)?));
        }
        msg.attributes.push(RouteAttribute::Table(table));
        Ok(msg)
    }

    /// Add a unicast route (`proto boot`, like `ip route add`) to `dst` in
    /// `table` ([`MAIN_TABLE`] is main). A route without gateway is on-link
    /// (scope link) and needs `dev`; an IPv6 link-local gateway needs `dev`.
    pub fn add_route(
        &self,
        dst: IpNet,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
        table: u32,
    ) -> Result<(), LabError> {
        let what = describe_route("add", dst, gateway, dev, table);
        let msg = self.route_message(&what, dst, gateway, dev, table)?;
        self.request(
            what,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Delete the route to `dst` in `table` (matching gateway and device
    /// when given).
    pub fn del_route(
        &self,
        dst: IpNet,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
        table: u32,
    ) -> Result<(), LabError> {
        let what = describe_route("delete", dst, gateway, dev, table);
        let mut msg = self.route_message(&what, dst, gateway, dev, table)?;
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        self.request(what, RouteNetlinkMessage::DelRoute(msg), 0)
    }

    fn rule_message(&self, from: IpNet, table: u32, priority: u32) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = match from {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.header.src_len = from.prefix_len();
        msg.header.action = RuleAction::ToTable;
        msg.header.table = header_table(table);
        if from.prefix_len() > 0 {
            msg.attributes.push(RuleAttribute::Source(from.addr()));
        }
        msg.attributes.push(RuleAttribute::Table(table));
        msg.attributes.push(RuleAttribute::Priority(priority));
        msg
    }

    /// Add the rule `priority <priority> from <from> lookup <table>` (an
    /// address converts to a host prefix). Fails with EEXIST on a duplicate.
    pub fn add_rule_from(
        &self,
        from: impl Into<IpNet>,
        table: u32,
        priority: u32,
    ) -> Result<(), LabError> {
        let from = from.into();
        self.request(
            format!("add rule priority {priority} from {from} lookup {table}"),
            RouteNetlinkMessage::NewRule(self.rule_message(from, table, priority)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Delete the rule `priority <priority> from <from> lookup <table>`.
    pub fn del_rule_from(
        &self,
        from: impl Into<IpNet>,
        table: u32,
        priority: u32,
    ) -> Result<(), LabError> {
        let from = from.into();
        self.request(
            format!("delete rule priority {priority} from {from} lookup {table}"),
            RouteNetlinkMessage::DelRule(self.rule_message(from, table, priority)),
            0,
        )
    }

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

    /// Listen on `addr` inside the namespace and answer every connection
    /// with `banner` and a newline, then close it. Serves on a background
    /// thread until the returned [`TcpServer`] is dropped.
    pub fn tcp_server(&self, addr: SocketAddr, banner: &str) -> Result<TcpServer, LabError> {
        let what = || format!("listen on tcp {addr}");
        let listener = self
            .run(|| TcpListener::bind(addr))?
            .map_err(|source| self.io_err(what(), source))?;
        let local = listener
            .local_addr()
            .map_err(|source| self.io_err(what(), source))?;
        listener
            .set_nonblocking(true)
            .map_err(|source| self.io_err(what(), source))?;
        let stop = Arc::new(AtomicBool::new(false));
        let reply = format!("{banner}\n");
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .spawn(move || serve(&listener, &flag, reply.as_bytes()))
            .map_err(|source| self.io_err(format!("start tcp server on {addr}"), source))?;
        Ok(TcpServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// Connect to `target` from inside the namespace, read until the server
    /// closes, and return what it sent. `timeout` bounds the connection and
    /// each read. A refused or timed-out connection is an error naming the
    /// target and the namespace.
    pub fn tcp_probe(&self, target: SocketAddr, timeout: Duration) -> Result<String, LabError> {
        let result = self.run(|| -> Result<String, (&'static str, io::Error)> {
            let mut stream =
                TcpStream::connect_timeout(&target, timeout).map_err(|e| ("connect", e))?;
            stream
                .set_read_timeout(Some(timeout))
                .map_err(|e| ("read", e))?;
            let mut text = String::new();
            stream.read_to_string(&mut text).map_err(|e| ("read", e))?;
            Ok(text)
        })?;
        result.map_err(|(stage, source)| self.io_err(format!("tcp {stage} to {target}"), source))
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

/// The header's u8 table field: the table itself when it fits, otherwise
/// unspecified (the u32 table attribute, always sent, carries it).
fn header_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC)
}

fn route_address(addr: IpAddr) -> RouteAddress {
    match addr {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn describe_route(
    verb: &str,
    dst: IpNet,
    gateway: Option<IpAddr>,
    dev: Option<&str>,
    table: u32,
) -> String {
    let mut text = format!("{verb} route {dst}");
    if let Some(gw) = gateway {
        text.push_str(&format!(" via {gw}"));
    }
    if let Some(dev) = dev {
        text.push_str(&format!(" dev {dev}"));
    }
    text.push_str(&format!(" table {table}"));
    text
}

/// Poll interval of the TCP server's accept loop (also its worst-case stop
/// latency).
const ACCEPT_POLL: Duration = Duration::from_millis(10);

fn serve(listener: &TcpListener, stop: &AtomicBool, reply: &[u8]) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => answer(stream, reply),
            // WouldBlock, or a transient failure (aborted connection, out of
            // descriptors): wait and try again.
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

fn answer(mut stream: TcpStream, reply: &[u8]) {
    // A client that vanished is not the server's problem: ignore failures.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = stream.write_all(reply);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// A TCP banner server running in a namespace (see [`Ns::tcp_server`]).
/// Dropping it stops the server and closes the listening socket.
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// The address it listens on (with the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The loop checks the flag at least every ACCEPT_POLL; a panic in
            // it has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

/// The seed topology of the field notes (lab recipe A): a client, a Docker
/// host (`dhost`) with two bridges and strict reverse-path filtering, and a
/// container (`ctr`) attached to both bridges whose default route leaves
/// through the back bridge. Replies to connections arriving on the front
/// bridge leave through the back one and are dropped by `dhost`: the bug
/// symroute fixes.
///
/// ```text
/// client                    dhost                                  ctr
/// c0 192.0.2.10/24 ──── eth0 192.0.2.98/24
///                           br-front 172.18.0.1/16 ── ctr-front ── eth1 172.18.0.2/16
///                           br-back  172.19.0.1/16 ── ctr-back ─── eth0 172.19.0.4/16
///                                                                  default via 172.19.0.1 dev eth0
/// ```
///
/// With [`SeedOptions::ipv6`]: c0 2001:db8:1::10/64 (default via
/// 2001:db8:1::98), dhost eth0 2001:db8:1::98/64, br-front 2001:db8:18::1/64
/// and fe80::1/64, br-back 2001:db8:19::1/64 and fe80::1/64, ctr eth1
/// 2001:db8:18::2/64, eth0 2001:db8:19::4/64 with `default via fe80::1 dev
/// eth0`. IPv6 has no `rp_filter` sysctl, so dhost gets the equivalent
/// `ip6tables -t raw -A PREROUTING -m rpfilter --invert -j DROP` when
/// `ip6tables` is available ([`SeedLab::ipv6_rpfilter`] tells).
pub mod seed {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::time::Duration;

    use ipnet::{IpNet, Ipv4Net, Ipv6Net};

    use super::{LabError, MAIN_TABLE, Ns, TcpServer, ip6tables_available};

    /// The client's address.
    pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    /// dhost's "public" address, the client's gateway and DNAT address.
    pub const DHOST_PUBLIC_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 98);
    /// br-front's address, ctr eth1's gateway.
    pub const FRONT_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
    /// br-back's address, ctr's default gateway.
    pub const BACK_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 19, 0, 1);
    /// ctr eth1's address (front network).
    pub const CTR_FRONT_ADDR: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
    /// ctr eth0's address (back network).
    pub const CTR_BACK_ADDR: Ipv4Addr = Ipv4Addr::new(172, 19, 0, 4);
    /// The port ctr's server listens on.
    pub const SERVICE_PORT: u16 = 80;
    /// The port dhost forwards to ctr's front address in the DNAT variant.
    pub const DNAT_PORT: u16 = 5000;
    /// What ctr's server answers (followed by a newline).
    pub const BANNER: &str = "hello from ctr";
    /// The client's IPv6 address.
    pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
    /// dhost eth0's IPv6 address, the client's IPv6 gateway.
    pub const DHOST_PUBLIC_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x98);
    /// br-front's IPv6 address.
    pub const FRONT_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 1);
    /// br-back's IPv6 address.
    pub const BACK_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 1);
    /// The link-local gateway address both bridges carry.
    pub const BRIDGE_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    /// ctr eth1's IPv6 address (front network).
    pub const CTR_FRONT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2);
    /// ctr eth0's IPv6 address (back network).
    pub const CTR_BACK_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 4);

    /// How long [`SeedLab::build`] waits for IPv6 duplicate address detection
    /// of the automatic link-local addresses.
    const DAD_TIMEOUT: Duration = Duration::from_secs(10);

    /// Variants of the seed.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct SeedOptions {
        /// Docker's default: dhost masquerades the bridge networks and DNATs
        /// tcp port 5000 to 172.18.0.2:80 (needs `iptables`). Without it
        /// ("routed"), the client reaches 172.18.0.2:80 directly through
        /// dhost and there is no NAT at all.
        pub dnat: bool,
        /// Add the IPv6 addresses and routes (always routed, no NAT).
        pub ipv6: bool,
    }

    /// The built seed. Dropping it stops the server and removes the three
    /// namespaces.
    #[derive(Debug)]
    pub struct SeedLab {
        /// ctr's banner server on port 80 (`[::]:80` dual-stack with IPv6,
        /// `0.0.0.0:80` otherwise).
        pub server: TcpServer,
        /// The outside client.
        pub client: Ns,
        /// The Docker host: forwarding, strict reverse-path filtering.
        pub dhost: Ns,
        /// The container, attached to both bridges.
        pub ctr: Ns,
        /// The variant built.
        pub options: SeedOptions,
        /// Whether dhost drops IPv6 packets failing the reverse-path check
        /// (ip6tables rpfilter rule installed).
        pub ipv6_rpfilter: bool,
    }

    /// `addr/prefix`; used in constants only, so a bad prefix length is a
    /// compile-time error.
    const fn v4(addr: Ipv4Addr, prefix: u8) -> IpNet {
        IpNet::V4(Ipv4Net::new_assert(addr, prefix))
    }

    /// IPv6 counterpart of [`v4`].
    const fn v6(addr: Ipv6Addr, prefix: u8) -> IpNet {
        IpNet::V6(Ipv6Net::new_assert(addr, prefix))
    }

    /// dhost's NAT in the DNAT variant, exactly as Docker 1.10 did it.
    const DNAT_RULES: [&str; 3] = [
        "-w -t nat -A POSTROUTING -s 172.18.0.0/16 ! -o br-front -j MASQUERADE",
        "-w -t nat -A POSTROUTING -s 172.19.0.0/16 ! -o br-back -j MASQUERADE",
        "-w -t nat -A PREROUTING -p tcp --dport 5000 -j DNAT --to-destination 172.18.0.2:80",
    ];

    /// IPv6 has no `rp_filter` sysctl: drop in dhost what fails the strict
    /// reverse-path check (source rules are honoured by it).
    const IP6_RPFILTER_RULE: &str = "-w -t raw -A PREROUTING -m rpfilter --invert -j DROP";

    const ANY4: IpNet = v4(Ipv4Addr::UNSPECIFIED, 0);
    const ANY6: IpNet = v6(Ipv6Addr::UNSPECIFIED, 0);

    impl SeedLab {
        /// Build the seed. With `dnat`, fails if `iptables` does not work
        /// (check [`super::iptables_available`] first to fall back to routed).
        pub fn build(options: SeedOptions) -> Result<SeedLab, LabError> {
            let client = Ns::new("client")?;
            let dhost = Ns::new("dhost")?;
            let ctr = Ns::new("ctr")?;

            // Deterministic filtering whatever the host's defaults (new
            // namespaces copy the host's IPv4 `all`/`default`): strict in
            // dhost, set before any interface exists so they all inherit it;
            // off in client and ctr.
            for key in [
                "net.ipv4.conf.all.rp_filter",
                "net.ipv4.conf.default.rp_filter",
            ] {
                dhost.sysctl(key, "1")?;
                client.sysctl(key, "0")?;
                ctr.sysctl(key, "0")?;
            }
            dhost.sysctl("net.ipv4.ip_forward", "1")?;

            client.veth("c0", &dhost, "eth0")?;
            dhost.bridge("br-front")?;
            dhost.bridge("br-back")?;
            ctr.veth("eth0", &dhost, "ctr-back")?;
            ctr.veth("eth1", &dhost, "ctr-front")?;
            dhost.set_master("ctr-back", "br-back")?;
            dhost.set_master("ctr-front", "br-front")?;

            let dhost_links = ["lo", "eth0", "br-front", "br-back", "ctr-front", "ctr-back"];
            for link in dhost_links {
                dhost.sysctl(&format!("net.ipv4.conf.{link}.rp_filter"), "1")?;
            }
            for link in dhost_links {
                dhost.link_up(link)?;
            }
            client.link_up("c0")?;
            ctr.link_up("eth0")?;
            ctr.link_up("eth1")?;

            client.add_addr("c0", const { v4(CLIENT_ADDR, 24) })?;
            dhost.add_addr("eth0", const { v4(DHOST_PUBLIC_ADDR, 24) })?;
            dhost.add_addr("br-front", const { v4(FRONT_GATEWAY, 16) })?;
            dhost.add_addr("br-back", const { v4(BACK_GATEWAY, 16) })?;
            ctr.add_addr("eth0", const { v4(CTR_BACK_ADDR, 16) })?;
            ctr.add_addr("eth1", const { v4(CTR_FRONT_ADDR, 16) })?;

            client.add_route(ANY4, Some(DHOST_PUBLIC_ADDR.into()), Some("c0"), MAIN_TABLE)?;
            ctr.add_route(ANY4, Some(BACK_GATEWAY.into()), Some("eth0"), MAIN_TABLE)?;

            let mut ipv6_rpfilter = false;
            if options.ipv6 {
                dhost.sysctl("net.ipv6.conf.all.forwarding", "1")?;
                ctr.sysctl("net.ipv6.bindv6only", "0")?;
                client.add_addr("c0", const { v6(CLIENT_ADDR6, 64) })?;
                dhost.add_addr("eth0", const { v6(DHOST_PUBLIC_ADDR6, 64) })?;
                dhost.add_addr("br-front", const { v6(FRONT_GATEWAY6, 64) })?;
                dhost.add_addr("br-front", const { v6(BRIDGE_LINK_LOCAL, 64) })?;
                dhost.add_addr("br-back", const { v6(BACK_GATEWAY6, 64) })?;
                dhost.add_addr("br-back", const { v6(BRIDGE_LINK_LOCAL, 64) })?;
                ctr.add_addr("eth1", const { v6(CTR_FRONT_ADDR6, 64) })?;
                ctr.add_addr("eth0", const { v6(CTR_BACK_ADDR6, 64) })?;
                client.add_route(
                    ANY6,
                    Some(DHOST_PUBLIC_ADDR6.into()),
                    Some("c0"),
                    MAIN_TABLE,
                )?;
                ctr.add_route(
                    ANY6,
                    Some(BRIDGE_LINK_LOCAL.into()),
                    Some("eth0"),
                    MAIN_TABLE,
                )?;
                if ip6tables_available() {
                    dhost.run_cmd("ip6tables", IP6_RPFILTER_RULE.split(' '))?;
                    ipv6_rpfilter = true;
                }
            }

            if options.dnat {
                for rule in DNAT_RULES {
                    dhost.run_cmd("iptables", rule.split(' '))?;
                }
            }

            let listen: SocketAddr = if options.ipv6 {
                (Ipv6Addr::UNSPECIFIED, SERVICE_PORT).into()
            } else {
                (Ipv4Addr::UNSPECIFIED, SERVICE_PORT).into()
            };
            let server = ctr.tcp_server(listen, BANNER)?;

            if options.ipv6 {
                // Neighbour discovery needs non-tentative link-local sources.
                for ns in [&client, &dhost, &ctr] {
                    ns.wait_no_tentative(DAD_TIMEOUT)?;
                }
            }

            Ok(SeedLab {
                server,
                client,
                dhost,
                ctr,
                options,
                ipv6_rpfilter,
            })
        }

        /// Where the client connects: 192.0.2.98:5000 with DNAT, otherwise
        /// 172.18.0.2:80 directly.
        pub fn client_target(&self) -> SocketAddr {
            if self.options.dnat {
                (DHOST_PUBLIC_ADDR, DNAT_PORT).into()
            } else {
                (CTR_FRONT_ADDR, SERVICE_PORT).into()
            }
        }

        /// Where the client connects over IPv6 (`[2001:db8:18::2]:80`, routed),
        /// when the seed was built with IPv6.
        pub fn client_target6(&self) -> Option<SocketAddr> {
            self.options
                .ipv6
                .then(|| (CTR_FRONT_ADDR6, SERVICE_PORT).into())
        }

        /// Connect from the client to [`SeedLab::client_target`] and return
        /// the banner.
        pub fn probe(&self, timeout: Duration) -> Result<String, LabError> {
            self.client.tcp_probe(self.client_target(), timeout)
        }

        /// Connect from the client to [`SeedLab::client_target6`] and return
        /// the banner.
        pub fn probe6(&self, timeout: Duration) -> Result<String, LabError> {
            let target = self.client_target6().ok_or_else(|| LabError::Failed {
                ns: self.client.name().to_string(),
                what: "IPv6 tcp probe".into(),
                detail: "the seed was built without IPv6".into(),
            })?;
            self.client.tcp_probe(target, timeout)
        }
    }
}
