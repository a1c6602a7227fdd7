//! Rules seen in the kernel, from inside each new container namespace: a thread watches
//! the engine's netns folder (inotify, IN_CREATE), opens each new file as soon as the
//! engine has bind-mounted the namespace on it (the file exists a moment before; it is
//! tried every 50 µs until it is a network namespace), long before the container's
//! process starts, subscribes to the kernel's rule notifications there
//! (RTNLGRP_IPV4_RULE) and dumps the rules at each one; the time is taken when the
//! notification that completes the set (one rule per network) is read. CLOCK_REALTIME,
//! like the engine's event timestamps.
//!
//! A namespace whose rules are already complete at the first look (the watcher was late)
//! is counted ([`Seen::at_first_look`]); the folder itself must exist before the watch is
//! set (the benchmark starts one probe container first: dockerd and Podman 5.8 create it
//! with their first sandbox).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::rule::{RuleAttribute, RuleMessage};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use symroute_linux::netns::Netns;

use crate::realtime_ns;

/// linux/rtnetlink.h
const RTNLGRP_IPV4_RULE: u32 = 8;
/// Give up on one container after this long.
pub const CONTAINER_TIMEOUT: Duration = Duration::from_secs(20);

/// What the watcher saw for one new sandbox.
#[derive(Debug)]
pub struct Seen {
    /// The file's name in the netns folder.
    pub sandbox: String,
    /// CLOCK_REALTIME when the last expected rule was seen.
    pub at_ns: i64,
    /// The rules were already complete at the first look (so `at_ns` is late
    /// by up to the time it took to open the namespace).
    pub at_first_look: bool,
}

/// Watches the engine's netns folder; for each new namespace, waits for
/// `want` rules of protocol `tag` (set per measurement).
pub struct RuleWatcher {
    stop: Arc<AtomicBool>,
    config: Arc<Mutex<(u8, usize)>>,
    rx: mpsc::Receiver<Result<Seen, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn rule_count(dump: &[RouteNetlinkMessage], tag: u8) -> usize {
    dump.iter()
        .filter(|m| {
            matches!(m, RouteNetlinkMessage::NewRule(r) if r.attributes.iter().any(|a|
                matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == tag)))
        })
        .count()
}

pub fn wait_readable(fd: i32, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) > 0 }
}

/// Follow one sandbox until `want` rules tagged `tag` are there.
fn follow(path: &Path, tag: u8, want: usize, stop: &AtomicBool) -> Result<Seen, String> {
    let sandbox = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The file exists before dockerd bind-mounts the namespace on it.
    let deadline = Instant::now() + CONTAINER_TIMEOUT;
    let netns = loop {
        match Netns::open(path) {
            Ok(n) => break n,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(50)),
            Err(e) => return Err(format!("sandbox {sandbox}: {e}")),
        }
    };
    let notify = netns
        .run(|| -> io::Result<Socket> {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind_auto()?;
            s.add_membership(RTNLGRP_IPV4_RULE)?;
            s.set_non_blocking(true)?;
            Ok(s)
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("subscribe in {sandbox}: {e}"))?;
    let mut nl = netns.socket().map_err(|e| e.to_string())?;
    let mut dump = || {
        nl.dump(RouteNetlinkMessage::GetRule(RuleMessage::default()))
            .map(|d| rule_count(&d, tag))
            .map_err(|e| format!("dump rules of {sandbox}: {e}"))
    };
    let first = realtime_ns();
    if dump()? >= want {
        return Ok(Seen {
            sandbox,
            at_ns: first,
            at_first_look: true,
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if !wait_readable(notify.as_raw_fd(), 5) {
            continue;
        }
        let at_ns = realtime_ns();
        while notify.recv(&mut &mut buf[..], 0).is_ok() {}
        if dump()? >= want {
            return Ok(Seen {
                sandbox,
                at_ns,
                at_first_look: false,
            });
        }
    }
    Err(format!(
        "sandbox {sandbox}: {want} rules of protocol {tag} never appeared"
    ))
}

impl RuleWatcher {
    /// Watch `watch` for new files; open each as `open`/<name>.
    pub fn start(watch: PathBuf, open: PathBuf, tag: u8) -> RuleWatcher {
        let dir = watch;
        // SAFETY: plain system calls on a path we own.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        assert!(fd >= 0, "inotify_init1: {}", io::Error::last_os_error());
        // SAFETY: the kernel just gave us this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cpath = CString::new(dir.as_os_str().as_bytes()).expect("path");
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd =
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), cpath.as_ptr(), libc::IN_CREATE) };
        assert!(
            wd >= 0,
            "inotify on {}: {}",
            dir.display(),
            io::Error::last_os_error()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(Mutex::new((tag, 2)));
        let (tx, rx) = mpsc::channel();
        let (stop2, config2) = (stop.clone(), config.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stop2.load(Ordering::Relaxed) {
                if !wait_readable(fd.as_raw_fd(), 50) {
                    continue;
                }
                // SAFETY: reading into our buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    continue;
                }
                let mut names = Vec::new();
                let mut off = 0usize;
                let n = n as usize;
                while off + 16 <= n {
                    let len =
                        u32::from_ne_bytes(buf[off + 12..off + 16].try_into().expect("4")) as usize;
                    let raw = &buf[off + 16..off + 16 + len];
                    let name = raw.split(|b| *b == 0).next().unwrap_or_default();
                    names.push(String::from_utf8_lossy(name).into_owned());
                    off += 16 + len;
                }
                for name in names {
                    if name == "default" || name.is_empty() {
                        continue;
                    }
                    let (tag, want) = *config2.lock().expect("config");
                    let _ = tx.send(follow(&open.join(&name), tag, want, &stop2));
                }
            }
        });
        RuleWatcher {
            stop,
            config,
            rx,
            thread: Some(thread),
        }
    }

    pub fn expect(&self, tag: u8, want: usize) {
        *self.config.lock().expect("config") = (tag, want);
    }

    pub fn next(&self) -> Result<Seen, String> {
        self.rx
            .recv_timeout(CONTAINER_TIMEOUT + Duration::from_secs(5))
            .map_err(|e| format!("rule watcher: {e}"))?
    }
}

impl Drop for RuleWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
