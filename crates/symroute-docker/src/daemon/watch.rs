//! Kernel notifications from a managed namespace: link and address changes
//! (a link set down and up flushes symroute's routes; an address change
//! changes the plan). One netlink socket per namespace, subscribed to the
//! link and address groups, read through tokio's reactor: no polling.

use std::io;

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use symroute_linux::netns::{Netns, NetnsError};

// Multicast groups, from linux/rtnetlink.h.
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;

fn subscribed_socket() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    for g in [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR] {
        sock.add_membership(g)?;
    }
    sock.set_non_blocking(true)?;
    Ok(sock)
}

/// Open a subscribed socket inside `netns`.
pub fn open(netns: &Netns) -> Result<AsyncFd<Socket>, NetnsError> {
    let sock = netns
        .run(subscribed_socket)?
        .map_err(|source| NetnsError::Open {
            path: netns.path().to_path_buf(),
            source,
        })?;
    // SAFETY: the netlink Socket owns its descriptor, keeps it open for its
    // whole life and always returns the same one from as_raw_fd.
    unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }.map_err(|e| {
        NetnsError::Open {
            path: netns.path().to_path_buf(),
            source: io::Error::other(e.to_string()),
        }
    })
}

/// Send `id` on `tx` after every burst of notifications, until the socket
/// fails or the receiver is gone. Abort the task to stop watching (dropping
/// the socket releases the namespace).
pub async fn watch(fd: AsyncFd<Socket>, id: String, tx: mpsc::Sender<String>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(_) => return,
        };
        let mut got = false;
        loop {
            match guard.get_inner().recv(&mut &mut buf[..], 0) {
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                // The kernel dropped notifications (ENOBUFS): state changed,
                // which is all we need to know.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => got = true,
                Err(_) => return,
            }
        }
        if got && tx.send(id.clone()).await.is_err() {
            return;
        }
    }
}
