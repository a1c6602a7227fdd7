//! The long-lived namespace helper thread of `symroute_linux::netns`: sockets in many
//! namespaces without a thread per call, each socket really bound to its namespace,
//! and the helper back in the process's own namespace between jobs (so it keeps no
//! container's namespace alive). Needs root (it creates namespaces); fails loudly
//! without it.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use symroute_core::kernel::Kernel;
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::netns::Netns;
use symroute_testkit::lab::Ns;

fn require_root() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "netns_helper must run as root (it creates network namespaces); effective uid is {uid}"
    );
}

fn ns_of(path: &str) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.dev(), m.ino())
}

#[test]
fn sockets_in_many_namespaces_come_from_one_helper_thread_that_goes_home() {
    require_root();
    let home = ns_of("/proc/self/ns/net");
    let spaces: Vec<Ns> = (1..=40)
        .map(|i| {
            let ns = Ns::new(format!("helper{i}")).expect("namespace");
            ns.run_cmd("ip", ["link", "add", &format!("mark{i}"), "type", "bridge"])
                .unwrap_or_else(|e| panic!("{e}"));
            ns
        })
        .collect();
    let me = nix::unistd::gettid();
    let mut helpers = BTreeSet::new();
    for (i, ns) in spaces.iter().enumerate() {
        let netns = Netns::open(ns.path()).unwrap_or_else(|e| panic!("{e}"));
        let tid = netns
            .run_quick(|| nix::unistd::gettid().as_raw())
            .unwrap_or_else(|e| panic!("{e}"));
        helpers.insert(tid);
        let mut k = NetlinkKernel::new(netns.socket().unwrap_or_else(|e| panic!("{e}")));
        let snap = k.snapshot().unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = snap.links.iter().map(|l| l.name.as_str()).collect();
        let mine = format!("mark{}", i + 1);
        assert!(
            names.contains(&mine.as_str()),
            "the socket is bound to namespace {} (its marker bridge): {names:?}",
            i + 1
        );
        assert!(
            !names.iter().any(|n| n.starts_with("mark") && *n != mine),
            "no other namespace's marker: {names:?}"
        );
    }
    assert_eq!(
        helpers.len(),
        1,
        "one helper thread entered all 40 namespaces: {helpers:?}"
    );
    let helper = helpers.into_iter().next().unwrap_or_default();
    assert_ne!(helper, me.as_raw(), "never the caller's own thread");
    assert_eq!(
        ns_of(&format!("/proc/self/task/{helper}/ns/net")),
        home,
        "between jobs the helper is back in the process's namespace"
    );
    assert_eq!(
        ns_of("/proc/thread-self/ns/net"),
        home,
        "the caller never left it"
    );
}

#[test]
fn a_panicking_job_is_an_error_for_its_caller_and_the_helper_lives_on() {
    require_root();
    let ns = Ns::new("helper-ok").expect("namespace");
    let good = Netns::open(ns.path()).unwrap_or_else(|e| panic!("{e}"));
    // A panic inside the job is an error for that caller only.
    let e = good
        .run_quick(|| -> u32 { panic!("injected panic in the helper") })
        .expect_err("a panicking job is an error");
    assert!(e.to_string().contains("panicked"), "{e}");
    let v = good
        .run_quick(|| {
            std::fs::metadata("/proc/thread-self/ns/net")
                .map(|m| m.ino())
                .ok()
        })
        .unwrap_or_else(|e| panic!("the helper survived: {e}"));
    assert_eq!(
        v,
        good.id().ok().map(|i| i.1),
        "the job ran inside the namespace"
    );
    good.socket().unwrap_or_else(|e| panic!("{e}"));
}

/// A file in a test folder with a namespace bind-mounted on it, as Podman makes
/// `/run/netns/netns-<uuid>`: unmounted and removed on every path.
struct Mounted {
    file: std::path::PathBuf,
    mounted: bool,
}

impl Mounted {
    /// The empty file only (Podman creates it, then mounts).
    fn file(dir: &std::path::Path, name: &str) -> Mounted {
        let file = dir.join(name);
        std::fs::write(&file, b"").unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        Mounted {
            file,
            mounted: false,
        }
    }

    fn mount(&mut self, ns: &Ns) {
        nix::mount::mount(
            Some(&ns.path()),
            &self.file,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("bind-mount on {}: {e}", self.file.display()));
        self.mounted = true;
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.file, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// How many of this process's descriptors are namespace `id` (by identity: one opened
/// through a bind mount reads back as the mount's path).
fn held(id: (u64, u64)) -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| (m.dev(), m.ino()) == id))
            .count()
    })
}

/// The daemon's namespaces opened ahead of time (`Namespaces::prepare`, for a file that
/// appears in Podman's namespace folder), in Podman's order: the file first, the
/// namespace mounted on it a moment later. It waits once however often it is prepared,
/// and is claimed by the open of the container by another path to the same namespace;
/// what its subscribed socket heard before the claim is thrown away, what happens after
/// is heard. Not opened: a file that never becomes a namespace, a symlink, a name that
/// is not Podman's. One never claimed is closed when its time is up, by its timer.
#[tokio::test(flavor = "current_thread")]
async fn a_namespace_opened_ahead_of_time_is_claimed_by_its_containers_open() {
    use std::time::Duration;
    use symroute_docker::daemon::{LinuxNamespaces, Namespaces, NsHandle};
    require_root();
    let ns = Ns::new("early").expect("namespace");
    ns.run_cmd("ip", ["link", "add", "mark-early", "type", "bridge"])
        .unwrap_or_else(|e| panic!("{e}"));
    let spare = Ns::new("early-spare").expect("namespace");
    let linked = Ns::new("early-linked").expect("namespace");
    let dir = std::env::temp_dir().join(format!("symroute-early-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("folder");
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(dir.clone());
    // Declared after the folder's guard: unmounted before it is removed.
    let mut file = Mounted::file(&dir, "netns-early");
    let _plain = Mounted::file(&dir, "netns-plain");
    let mut other = Mounted::file(&dir, "other-tool");
    other.mount(&linked);
    let link = dir.join("netns-link");
    std::os::unix::fs::symlink(linked.path(), &link).expect("symlink");
    let mut unclaimed = Mounted::file(&dir, "netns-unclaimed");
    unclaimed.mount(&spare);

    // Long enough for a loaded machine to get to the claim first.
    let ttl = Duration::from_secs(3);
    let n = LinuxNamespaces::with_ttl(115, ttl);
    let spare_ino = ns_of(&spare.path().to_string_lossy());
    let spare_before = held(spare_ino);
    let prepared = tokio::time::Instant::now();
    n.prepare(file.file.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    file.mount(&ns);
    n.prepare(file.file.clone());
    n.prepare(dir.join("netns-plain"));
    n.prepare(other.file.clone());
    n.prepare(link.clone());
    n.prepare(unclaimed.file.clone());
    // Longer than the wait for a mount (50 ms): every job has ended.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        n.waiting(),
        2,
        "netns-early (prepared twice, mounted late) and netns-unclaimed; not the plain file, the symlink or another tool's name"
    );
    assert_eq!(held(spare_ino), spare_before + 1, "netns-unclaimed is held");
    // A change before the claim: not news to the container's watch.
    ns.run_cmd("ip", ["link", "add", "before", "type", "bridge"])
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let anchor = std::fs::File::open(ns.path()).expect("another path to the namespace");
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&anchor));
    let mut h = n
        .open(std::slice::from_ref(&path), "c-early", tx)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        n.waiting(),
        1,
        "netns-early claimed; netns-unclaimed still waits (its time is not up)"
    );
    assert_eq!(h.id(), ns_of(&path), "the handle is that namespace's");
    let names = h
        .locked(Duration::from_secs(1), Kernel::snapshot)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .links
        .into_iter()
        .map(|l| l.name)
        .collect::<Vec<_>>();
    assert!(
        names.iter().any(|l| l == "mark-early"),
        "the claimed socket is bound to the namespace: {names:?}"
    );
    let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(
        quiet.is_err(),
        "the change made before the claim was thrown away, not heard: {quiet:?}"
    );
    ns.run_cmd("ip", ["link", "add", "after", "type", "bridge"])
        .unwrap_or_else(|e| panic!("{e}"));
    let heard = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    assert_eq!(
        heard.ok().flatten().as_deref(),
        Some("c-early"),
        "a change after the claim is heard by the container's watch"
    );
    // The unclaimed one's timer closes it; nothing here asks.
    tokio::time::sleep_until(prepared + ttl + Duration::from_millis(500)).await;
    assert_eq!(
        held(spare_ino),
        spare_before,
        "the namespace nobody claimed is closed when its time is up"
    );
    drop(h);
}
