//! The benchmark's own view of the daemon's work with `--kernel-watch`: a
//! socket per lab namespace subscribed to its IPv4 rule notifications, and
//! one thread counting symroute's rules (RTM_NEWRULE / RTM_DELRULE tagged
//! 115) in each, until every namespace has its three.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use symroute_testkit::lab::Ns;

use super::TAG;

/// linux/rtnetlink.h, linux/fib_rules.h
const RTNLGRP_IPV4_RULE: u32 = 8;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const FRA_PROTOCOL: u16 = 21;

pub fn subscribe(ns: &Ns) -> Socket {
    ns.netns()
        .run_quick(|| -> io::Result<Socket> {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind_auto()?;
            s.add_membership(RTNLGRP_IPV4_RULE)?;
            s.set_non_blocking(true)?;
            Ok(s)
        })
        .expect("enter namespace")
        .expect("subscribe to rule notifications")
}

/// The change in tagged rules a datagram of rule notifications announces.
fn tagged_rule_delta(buf: &[u8]) -> i64 {
    let u16_at = |at: usize| {
        buf.get(at..at + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
    };
    let mut delta = 0;
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = buf
            .get(at..at + 4)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
        if len < 16 || at + len > buf.len() {
            break;
        }
        let kind = u16_at(at + 4).unwrap_or(0);
        // Attributes after nlmsghdr (16) and fib_rule_hdr (12).
        let mut a = at + 28;
        while a + 4 <= at + len {
            let alen = usize::from(u16_at(a).unwrap_or(0));
            if alen < 4 {
                break;
            }
            if u16_at(a + 2).unwrap_or(0) & 0x3fff == FRA_PROTOCOL && buf.get(a + 4) == Some(&TAG) {
                delta += match kind {
                    RTM_NEWRULE => 1,
                    RTM_DELRULE => -1,
                    _ => 0,
                };
            }
            a += (alen + 3) & !3;
        }
        at += (len + 3) & !3;
    }
    delta
}

/// Follow every namespace's rule notifications until each has `want`
/// tagged rules: when each got there (None: never, before `stop`).
pub fn watch_rules(
    socks: Vec<Socket>,
    want: i64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<Option<Instant>>, usize)> {
    std::thread::spawn(move || {
        let mut count = vec![0i64; socks.len()];
        let mut done: Vec<Option<Instant>> = vec![None; socks.len()];
        let mut overflows = 0;
        let mut left = socks.len();
        let mut buf = vec![0u8; 64 * 1024];
        let mut pfds: Vec<libc::pollfd> = socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        while left > 0 && !stop.load(Ordering::Relaxed) {
            // SAFETY: valid pollfds for sockets we own.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
            if n <= 0 {
                continue;
            }
            let now = Instant::now();
            for (i, p) in pfds.iter_mut().enumerate() {
                if p.revents == 0 {
                    continue;
                }
                p.revents = 0;
                loop {
                    match socks[i].recv(&mut &mut buf[..], 0) {
                        Ok(n) => count[i] += tagged_rule_delta(&buf[..n.min(buf.len())]),
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => overflows += 1,
                        Err(_) => break,
                    }
                }
                if count[i] >= want && done[i].is_none() {
                    done[i] = Some(now);
                    left -= 1;
                }
            }
        }
        (done, overflows)
    })
}
