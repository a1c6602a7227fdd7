//! Kernel notifications from a managed namespace: link and address changes
//! (a link set down and up flushes symroute's routes; an address change
//! changes the plan) and rule and route changes (a symroute rule or route
//! deleted by hand is put back at once, not at the next resync). One
//! netlink socket per namespace, subscribed to those groups, read through
//! tokio's reactor: no polling.
//!
//! One receive buffer serves every namespace's watch on a thread (the reads
//! never wait in between), so a managed namespace costs its socket and a
//! small task, not a buffer of its own.
//!
//! The daemon's own adds come back as notifications too; they are the one
//! kind ignored ([`relevant`]: a new rule or route carrying symroute's
//! protocol), so applying never triggers another apply. Its own deletes do
//! come back, and cost one converge that finds nothing to do.

use std::cell::RefCell;
use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use symroute_linux::netlink::NlSocket;
use symroute_linux::netns::{Netns, NetnsError};

// Multicast groups, from linux/rtnetlink.h (enum rtnetlink_groups).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV4_RULE: u32 = 8;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTNLGRP_IPV6_RULE: u32 = 19;

/// The groups every managed namespace's watch socket joins.
pub const GROUPS: [u32; 7] = [
    RTNLGRP_LINK,
    RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV6_IFADDR,
    RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV6_ROUTE,
    RTNLGRP_IPV4_RULE,
    RTNLGRP_IPV6_RULE,
];

// Message types, from linux/rtnetlink.h and linux/netlink.h.
const NLMSG_MIN_TYPE: u16 = 0x10;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
/// `FRA_PROTOCOL`, linux/fib_rules.h.
const FRA_PROTOCOL: u16 = 21;
/// `RT_TABLE_LOCAL`: the kernel's own local/broadcast routes, which follow
/// address changes (already heard) and are never symroute's.
const RT_TABLE_LOCAL: u8 = 255;

const NLMSG_HDRLEN: usize = 16;
/// `struct rtmsg` and `struct fib_rule_hdr` are both 12 bytes.
const RT_HDRLEN: usize = 12;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// The `FRA_PROTOCOL` attribute of a rule message's payload.
fn rule_protocol(payload: &[u8]) -> Option<u8> {
    let mut at = RT_HDRLEN;
    while at + 4 <= payload.len() {
        let len = usize::from(u16_at(payload, at)?);
        let kind = u16_at(payload, at + 2)? & 0x3fff;
        if len < 4 {
            return None;
        }
        if kind == FRA_PROTOCOL {
            return payload.get(at + 4).copied();
        }
        at += align4(len);
    }
    None
}

/// Whether one notification may call for a converge. Everything may,
/// except the echo of symroute's own adds (a new rule or route tagged with
/// `protocol`) and the kernel's local-table routes. Unparsable input counts
/// as relevant: a converge too many is harmless, a repair missed is not.
fn message_relevant(kind: u16, payload: &[u8], protocol: u8) -> bool {
    match kind {
        RTM_NEWROUTE | RTM_DELROUTE => {
            let (Some(table), Some(proto)) = (payload.get(4), payload.get(5)) else {
                return true;
            };
            if *table == RT_TABLE_LOCAL {
                return false;
            }
            !(kind == RTM_NEWROUTE && *proto == protocol)
        }
        RTM_NEWRULE => rule_protocol(payload) != Some(protocol),
        RTM_DELRULE => true,
        k => k >= NLMSG_MIN_TYPE,
    }
}

/// Whether a datagram of notifications (`buf`, as received) holds one that
/// may call for a converge.
pub fn relevant(buf: &[u8], protocol: u8) -> bool {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let (Some(len), Some(kind)) = (u32_at(buf, at), u16_at(buf, at + 4)) else {
            return true;
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return true;
        }
        if message_relevant(kind, &buf[at + NLMSG_HDRLEN..at + len], protocol) {
            return true;
        }
        at += align4(len);
    }
    false
}

/// [`GROUPS`] as `bind(2)`'s group mask (group `g` is bit `g - 1`; all of
/// them are below 32).
pub const GROUP_MASK: u32 = {
    let mut mask = 0;
    let mut i = 0;
    while i < GROUPS.len() {
        mask |= 1 << (GROUPS[i] - 1);
        i += 1;
    }
    mask
};

/// The groups are joined by the one `bind(2)`, not one `NETLINK_ADD_MEMBERSHIP`
/// each: the kernel recomputes its listener masks over every subscribed
/// netlink socket of the machine (all namespaces) at each join, so with a
/// thousand managed namespaces seven joins per socket cost seven passes
/// over a thousand sockets.
fn subscribed_socket() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind(&SocketAddr::new(0, GROUP_MASK))?;
    sock.set_non_blocking(true)?;
    Ok(sock)
}

/// Open, inside `netns`, the socket the daemon changes it through and a
/// subscribed one, in one trip to the namespace helper thread (each trip is
/// a hand-over between two threads, milliseconds on a busy machine).
pub fn sockets(netns: &Netns) -> Result<(NlSocket, Socket), NetnsError> {
    let (changes, notes) = netns.run_quick(|| (NlSocket::new(), subscribed_socket()))?;
    let changes = changes.map_err(|source| NetnsError::Socket {
        path: netns.path().to_path_buf(),
        source,
    })?;
    let notes = notes.map_err(|source| NetnsError::Open {
        path: netns.path().to_path_buf(),
        source,
    })?;
    Ok((changes, notes))
}

/// Make a subscribed socket (from [`sockets`]) readable by a [`watch`].
pub fn register(netns: &Netns, sock: Socket) -> Result<AsyncFd<Socket>, NetnsError> {
    // SAFETY: the netlink Socket owns its descriptor, keeps it open for its
    // whole life and always returns the same one from as_raw_fd.
    unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }.map_err(|e| {
        NetnsError::Open {
            path: netns.path().to_path_buf(),
            source: io::Error::other(e.to_string()),
        }
    })
}

/// Throw away what a subscribed socket has queued (the changes made before
/// its namespace was managed: the converge that follows reads the kernel
/// afresh, so none of them is a reason to converge again). The watch's own
/// read, its answer unused.
pub fn discard(sock: &Socket) {
    BUF.with_borrow_mut(|buf| drain(sock, buf, 0));
}

/// The receive buffer: netlink notifications are one message per
/// datagram, a few hundred bytes each (a link's is the largest, a few KiB).
const RECV_BUF: usize = 64 * 1024;

thread_local! {
    /// The receive buffer of every watch running on this thread.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Read everything `sock` has ready into `buf`: whether any of it may call
/// for a converge, and whether the socket is still usable.
fn drain(sock: &Socket, buf: &mut Vec<u8>, protocol: u8) -> (bool, bool) {
    if buf.len() < RECV_BUF {
        buf.resize(RECV_BUF, 0);
    }
    let mut got = false;
    loop {
        match sock.recv(&mut &mut buf[..], 0) {
            Ok(n) => got |= relevant(&buf[..n.min(buf.len())], protocol),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (got, true),
            // The kernel dropped notifications (ENOBUFS): state changed,
            // which is all we need to know.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => got = true,
            Err(_) => return (got, false),
        }
    }
}

/// Send `id` on `tx` after every burst of notifications that may call for a
/// converge ([`relevant`] to a writer tagging with `protocol`), until the
/// socket fails or the receiver is gone. Abort the task to stop watching
/// (dropping the socket releases the namespace).
pub async fn watch(fd: AsyncFd<Socket>, id: String, protocol: u8, tx: mpsc::Sender<String>) {
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        // No await while the buffer is borrowed: one borrow at a time.
        let (got, usable) = BUF.with_borrow_mut(|buf| drain(guard.get_inner(), buf, protocol));
        if !usable {
            return;
        }
        guard.clear_ready();
        if got && tx.send(id.clone()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: u8 = 115;

    fn msg(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(NLMSG_HDRLEN + payload.len()).unwrap_or(0);
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    /// `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    fn route(table: u8, proto: u8) -> Vec<u8> {
        vec![2, 0, 0, 0, table, proto, 0, 1, 0, 0, 0, 0]
    }

    /// `struct fib_rule_hdr` (table 10000 is in FRA_TABLE, not shown) with
    /// FRA_PRIORITY and, when given, FRA_PROTOCOL.
    fn rule(proto: Option<u8>) -> Vec<u8> {
        let mut p = vec![2, 0, 32, 0, 252, 0, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&6u16.to_ne_bytes());
        p.extend_from_slice(&3000u32.to_ne_bytes());
        if let Some(proto) = proto {
            p.extend_from_slice(&5u16.to_ne_bytes());
            p.extend_from_slice(&FRA_PROTOCOL.to_ne_bytes());
            p.extend_from_slice(&[proto, 0, 0, 0]);
        }
        p
    }

    #[test]
    fn own_adds_are_echoes_and_everything_else_counts() {
        // The echo of our own adds: nothing to do.
        assert!(!relevant(&msg(RTM_NEWRULE, &rule(Some(OURS))), OURS));
        assert!(!relevant(&msg(RTM_NEWROUTE, &route(100, OURS)), OURS));
        // A symroute rule or route deleted by hand: repair.
        assert!(relevant(&msg(RTM_DELRULE, &rule(Some(OURS))), OURS));
        assert!(relevant(&msg(RTM_DELROUTE, &route(100, OURS)), OURS));
        // Someone else's changes may change the plan.
        assert!(relevant(&msg(RTM_NEWRULE, &rule(Some(116))), OURS));
        assert!(relevant(&msg(RTM_NEWRULE, &rule(None)), OURS));
        assert!(relevant(&msg(RTM_NEWROUTE, &route(254, 4)), OURS));
        // The kernel's local table follows addresses: not on its own.
        assert!(!relevant(&msg(RTM_NEWROUTE, &route(255, 2)), OURS));
        // Links and addresses always count (RTM_NEWLINK 16, RTM_NEWADDR 20).
        assert!(relevant(&msg(16, &[0; 16]), OURS));
        assert!(relevant(&msg(20, &[0; 8]), OURS));
        // NLMSG_NOOP / NLMSG_DONE do not.
        assert!(!relevant(&msg(1, &[]), OURS));
    }

    #[test]
    fn the_bind_mask_has_exactly_the_groups() {
        // RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_RULE
        // | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE, and RTNLGRP_IPV6_RULE (19).
        assert_eq!(
            GROUP_MASK,
            0x1 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | (1 << 18)
        );
        assert!(GROUPS.iter().all(|g| (1..=32).contains(g)));
    }

    #[test]
    fn one_relevant_message_in_a_datagram_is_enough_and_garbage_counts() {
        let mut d = msg(RTM_NEWRULE, &rule(Some(OURS)));
        d.extend(msg(RTM_NEWROUTE, &route(100, OURS)));
        assert!(!relevant(&d, OURS));
        d.extend(msg(RTM_DELROUTE, &route(100, OURS)));
        assert!(relevant(&d, OURS));
        // A truncated header or a length past the end: converge, to be safe.
        let mut bad = msg(RTM_NEWRULE, &rule(Some(OURS)));
        bad[0] = 200;
        assert!(relevant(&bad, OURS));
        assert!(!relevant(&[], OURS));
    }
}
