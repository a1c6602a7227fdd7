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
