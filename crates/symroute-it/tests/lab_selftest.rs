//! Self-test of the lab fixtures (`symroute_testkit::lab`). Needs root: every test
//! fails loudly, never skips, when not run as root. Everything happens in
//! anonymous namespaces created by the tests; the host is only read.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use symroute_linux::netns::Netns;
use symroute_testkit::lab::seed::{
    BANNER, BRIDGE_LINK_LOCAL, CTR_FRONT_ADDR, CTR_FRONT_ADDR6, FRONT_GATEWAY,
};
use symroute_testkit::lab::{self, LabError, MAIN_TABLE, Ns, SeedLab, SeedOptions};

/// The table and priority of the hand-made fix (lab recipe A).
const FIX_TABLE: u32 = 200;
const FIX_PRIORITY: u32 = 1000;
/// How long a probe that must fail is given.
const FAIL_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a probe that must succeed is given.
const OK_TIMEOUT: Duration = Duration::from_secs(5);

/// Labs are shared between threads (servers, parallel tests).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Ns>();
    send_sync::<SeedLab>();
};

fn require_root() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "lab_selftest must run as root (it creates network namespaces, veths and bridges); \
         effective uid is {uid}. Run: sudo -E cargo test --test lab_selftest"
    );
}

fn net(text: &str) -> IpNet {
    text.parse()
        .unwrap_or_else(|e| panic!("bad prefix {text}: {e}"))
}

fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("bad address {text}: {e}"))
}

fn ok<T>(result: Result<T, LabError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// (device, inode) of a namespace file, as seen by `stat(2)`.
fn ns_id(path: &str) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {path}: {e}"));
    (m.dev(), m.ino())
}

#[test]
fn ns_is_a_fresh_network_namespace() {
    require_root();
    let ns = ok(Ns::new("basic"));
    let path = ns.path();
    let path_text = path.to_string_lossy().into_owned();
    assert!(
        path_text.starts_with(&format!("/proc/{}/fd/", std::process::id())),
        "path {path_text} is not under our /proc/<pid>/fd"
    );

    // The path opens as a network namespace, distinct from the host's and
    // from this thread's.
    let opened = Netns::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let id = opened.id().unwrap_or_else(|e| panic!("{e}"));
    // The namespace the test process started in stands for the host's (PID 1
    // may be unreadable, e.g. a non-dumpable init in a sandbox).
    assert_ne!(
        id,
        ns_id("/proc/self/ns/net"),
        "lab namespace is the host's"
    );
    assert_ne!(
        id,
        ns_id("/proc/thread-self/ns/net"),
        "lab namespace is ours"
    );
    assert_eq!(ns.netns().id().unwrap_or_else(|e| panic!("{e}")), id);

    // Only lo, up, index 1.
    assert_eq!(ok(ns.link_index("lo")), 1);

    // A child process can open the path, and commands run inside it.
    let inode = ok(ns.run_cmd("stat", ["-L", "--format=%i", &path_text]));
    assert_eq!(inode.trim(), id.1.to_string(), "child sees another inode");
    let dev = ok(ns.run_cmd("cat", ["/proc/net/dev"]));
    let links: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(links, ["lo"], "a new namespace must hold only lo");
    let nsenter = std::process::Command::new("nsenter")
        .arg(format!("--net={path_text}"))
        .args(["cat", "/proc/net/dev"])
        .output()
        .unwrap_or_else(|e| panic!("nsenter: {e}"));
    assert!(
        nsenter.status.success(),
        "nsenter --net={path_text} failed: {}",
        String::from_utf8_lossy(&nsenter.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&nsenter.stdout), dev);

    // A failing command reports its status and stderr.
    let err = ns
        .run_cmd("sh", ["-c", "echo broken-on-purpose >&2; exit 3"])
        .expect_err("a command exiting 3 must fail");
    let text = err.to_string();
    assert!(
        text.contains("broken-on-purpose") && text.contains("in ns basic") && text.contains('3'),
        "unhelpful message: {text}"
    );
}

#[test]
fn sysctl_stays_in_the_namespace() {
    require_root();
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap_or_else(|e| panic!("read host ip_forward: {e}"));
    let ns = ok(Ns::new("sysctl"));
    let flipped = if host_before.trim() == "1" { "0" } else { "1" };
    ok(ns.sysctl("net.ipv4.ip_forward", flipped));
    assert_eq!(ok(ns.sysctl_get("net.ipv4.ip_forward")), flipped);
    let host_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap_or_else(|e| panic!("read host ip_forward: {e}"));
    assert_eq!(host_before, host_after, "the host's ip_forward changed");

    ok(ns.sysctl("net/ipv4/conf/lo/rp_filter", "2"));
    assert_eq!(ok(ns.sysctl_get("net.ipv4.conf.lo.rp_filter")), "2");
    let err = ns
        .sysctl("net.ipv4.conf.nosuchlink.rp_filter", "1")
        .expect_err("a sysctl of a missing link must fail");
    assert!(
        err.to_string()
            .contains("set sysctl net.ipv4.conf.nosuchlink.rp_filter=1 in ns sysctl"),
        "{err}"
    );
}

#[test]
fn links_addresses_routes_and_tcp() {
    require_root();
    let a = ok(Ns::new("a"));
    let b = ok(Ns::new("b"));
    ok(a.veth("va", &b, "vb"));
    assert!(a.link_index("vb").is_err(), "peer must not be in a");
    let vb = ok(b.link_index("vb"));
    assert!(vb > 1);
    let err = a
        .veth("va", &b, "vb2")
        .expect_err("a duplicate veth must fail");
    assert!(err.to_string().contains("create veth va"), "{err}");

    let mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
    ok(a.set_mac("va", mac));
    assert_eq!(ok(a.link_mac("va")), mac);

    ok(a.link_up("va"));
    ok(b.link_up("vb"));
    ok(a.add_addr("va", net("192.0.2.1/24")));
    ok(b.add_addr("vb", net("192.0.2.2/24")));
    ok(a.add_addr("va", net("2001:db8:a::1/64")));
    ok(b.add_addr("vb", net("2001:db8:a::2/64")));

    let err = a
        .add_addr("va", net("192.0.2.1/24"))
        .expect_err("a duplicate address must fail");
    assert!(
        err.to_string()
            .starts_with("add address 192.0.2.1/24 to va in ns a: File exists"),
        "{err}"
    );

    // Routes: a gateway route in main and in a numbered table (also above
    // 255), a device route, IPv6 via link-local.
    ok(a.add_route(
        net("198.51.100.0/24"),
        Some(ip("192.0.2.2")),
        None,
        MAIN_TABLE,
    ));
    ok(a.add_route(net("0.0.0.0/0"), Some(ip("192.0.2.2")), Some("va"), 100));
    ok(a.add_route(net("0.0.0.0/0"), Some(ip("192.0.2.2")), Some("va"), 1000));
    ok(a.add_route(net("203.0.113.0/24"), None, Some("va"), MAIN_TABLE));
    let err = a
        .add_route(net("203.0.113.0/24"), None, Some("va"), MAIN_TABLE)
        .expect_err("a duplicate route must fail");
    assert!(
        err.to_string()
            .starts_with("add route 203.0.113.0/24 dev va table 254 in ns a: File exists"),
        "{err}"
    );
    ok(a.add_route(net("2001:db8:b::/64"), Some(ip("fe80::1")), Some("va"), 100));
    let err = a
        .add_route(net("::/0"), Some(ip("fe80::1")), None, 100)
        .expect_err("a link-local gateway without device must fail");
    assert!(err.to_string().contains("needs a device"), "{err}");
    ok(a.del_route(net("203.0.113.0/24"), None, Some("va"), MAIN_TABLE));
    ok(a.add_rule_from(ip("192.0.2.1"), 100, 1000));
    ok(a.add_rule_from(net("2001:db8:a::/64"), 1000, 1001));
    assert!(a.add_rule_from(ip("192.0.2.1"), 100, 1000).is_err());
    ok(a.del_rule_from(ip("192.0.2.1"), 100, 1000));

    // TCP over the veth, both families, and over loopback.
    let server = ok(b.tcp_server("0.0.0.0:7".parse().expect("literal"), "banner b"));
    assert_eq!(server.local_addr().port(), 7);
    let got = ok(a.tcp_probe("192.0.2.2:7".parse().expect("literal"), OK_TIMEOUT));
    assert_eq!(got, "banner b\n");
    let server6 = ok(b.tcp_server("[2001:db8:a::2]:8".parse().expect("literal"), "six"));
    let got = ok(a.tcp_probe(server6.local_addr(), OK_TIMEOUT));
    assert_eq!(got, "six\n");
    let local = ok(a.tcp_server("127.0.0.1:0".parse().expect("literal"), "local"));
    let got = ok(a.tcp_probe(local.local_addr(), OK_TIMEOUT));
    assert_eq!(got, "local\n");

    // Refused connection: the error names target and namespace.
    drop(server);
    let err = a
        .tcp_probe("192.0.2.2:7".parse().expect("literal"), OK_TIMEOUT)
        .expect_err("the stopped server must refuse");
    let text = err.to_string();
    assert!(
        text.contains("tcp connect to 192.0.2.2:7 in ns a"),
        "{text}"
    );

    // Deleting addresses and links.
    ok(a.del_addr("va", net("192.0.2.1/24")));
    assert!(a.del_addr("va", net("192.0.2.1/24")).is_err());
    ok(a.link_down("va"));
    ok(b.del_link("vb"));
    assert!(a.link_index("va").is_err(), "deleting vb must remove va");
}

#[test]
fn ipv6_dad_can_be_left_on() {
    require_root();
    let a = ok(Ns::new("dad-a"));
    let b = ok(Ns::new("dad-b"));
    ok(a.veth("va", &b, "vb"));
    ok(a.sysctl("net.ipv6.conf.va.accept_dad", "1"));
    ok(a.link_up("va"));
    ok(b.link_up("vb"));
    let slow: IpNet = net("2001:db8:d::1/64");
    let fast: IpNet = net("2001:db8:d::2/64");
    ok(a.add_addr_dad("va", slow));
    ok(a.add_addr("va", fast));
    let tentative = ok(a.tentative_addresses());
    assert!(tentative.contains(&slow.addr()), "{tentative:?}");
    assert!(!tentative.contains(&fast.addr()), "{tentative:?}");
    ok(a.wait_no_tentative(Duration::from_secs(10)));
    assert!(ok(a.tentative_addresses()).is_empty());
}

/// Add the hand-made fix of lab recipe A in ctr: replies from the front
/// address go back through eth1.
fn fix_by_hand(lab: &SeedLab) {
    ok(lab
        .ctr
        .add_rule_from(IpAddr::from(CTR_FRONT_ADDR), FIX_TABLE, FIX_PRIORITY));
    ok(lab.ctr.add_route(
        net("0.0.0.0/0"),
        Some(FRONT_GATEWAY.into()),
        Some("eth1"),
        FIX_TABLE,
    ));
}

fn fix6_by_hand(lab: &SeedLab) {
    ok(lab
        .ctr
        .add_rule_from(IpAddr::from(CTR_FRONT_ADDR6), FIX_TABLE, FIX_PRIORITY));
    ok(lab.ctr.add_route(
        net("::/0"),
        Some(BRIDGE_LINK_LOCAL.into()),
        Some("eth1"),
        FIX_TABLE,
    ));
}

fn assert_probe_fails(lab: &SeedLab) {
    let target = lab.client_target();
    match lab.probe(FAIL_TIMEOUT) {
        Ok(text) => panic!(
            "probe to {target} succeeded before the fix ({text:?}): strict rp_filter in dhost should drop the reply leaving ctr via eth0"
        ),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(&target.to_string()) && text.contains("ns client"),
                "{text}"
            );
        }
    }
}

#[test]
fn seed_routed_fails_until_replies_leave_eth1() {
    require_root();
    let lab = ok(SeedLab::build(SeedOptions {
        dnat: false,
        ipv6: false,
    }));
    assert_eq!(
        lab.client_target(),
        SocketAddr::from((Ipv4Addr::new(172, 18, 0, 2), 80))
    );
    assert_eq!(
        ok(lab.dhost.sysctl_get("net.ipv4.conf.br-back.rp_filter")),
        "1"
    );
    assert_eq!(ok(lab.dhost.sysctl_get("net.ipv4.conf.all.rp_filter")), "1");
    assert_eq!(ok(lab.dhost.sysctl_get("net.ipv4.ip_forward")), "1");
    // The back tier is reachable (its replies leave the way they came).
    let back = ok(lab
        .client
        .tcp_probe("172.19.0.4:80".parse().expect("literal"), OK_TIMEOUT));
    assert_eq!(back.trim(), BANNER);
    assert!(
        lab.probe6(OK_TIMEOUT).is_err(),
        "no IPv6 without the option"
    );

    assert_probe_fails(&lab);
    fix_by_hand(&lab);
    let got = ok(lab.probe(OK_TIMEOUT));
    assert_eq!(got.trim(), BANNER);
}

#[test]
fn seed_dnat_fails_until_replies_leave_eth1() {
    require_root();
    assert!(
        lab::iptables_available(),
        "iptables is not usable (`iptables -V` failed): install it (apt-get install -y iptables)"
    );
    let lab = ok(SeedLab::build(SeedOptions {
        dnat: true,
        ipv6: false,
    }));
    assert_eq!(
        lab.client_target(),
        SocketAddr::from((Ipv4Addr::new(192, 0, 2, 98), 5000))
    );
    let nat = ok(lab.dhost.run_cmd("iptables", ["-w", "-t", "nat", "-S"]));
    assert!(nat.contains("--to-destination 172.18.0.2:80"), "{nat}");
    assert!(nat.contains("MASQUERADE"), "{nat}");

    assert_probe_fails(&lab);
    fix_by_hand(&lab);
    let got = ok(lab.probe(OK_TIMEOUT));
    assert_eq!(got.trim(), BANNER);
}

#[test]
fn seed_ipv6_fails_until_replies_leave_eth1() {
    require_root();
    assert!(
        lab::ip6tables_available(),
        "ip6tables is not usable (`ip6tables -V` failed): install it (apt-get install -y iptables)"
    );
    let lab = ok(SeedLab::build(SeedOptions {
        dnat: false,
        ipv6: true,
    }));
    assert!(
        lab.ipv6_rpfilter,
        "ip6tables rpfilter rule missing in dhost"
    );
    let target6 = lab.client_target6().expect("built with IPv6");
    assert_eq!(
        target6,
        "[2001:db8:18::2]:80"
            .parse::<SocketAddr>()
            .expect("literal")
    );
    // The dual-stack server answers on ctr's back addresses of both families.
    let back6 = ok(lab
        .client
        .tcp_probe("[2001:db8:19::4]:80".parse().expect("literal"), OK_TIMEOUT));
    assert_eq!(back6.trim(), BANNER);

    match lab.probe6(FAIL_TIMEOUT) {
        Ok(text) => panic!("IPv6 probe succeeded before the fix: {text:?}"),
        Err(e) => assert!(e.to_string().contains(&target6.to_string()), "{e}"),
    }
    assert_probe_fails(&lab);

    fix6_by_hand(&lab);
    assert_eq!(ok(lab.probe6(OK_TIMEOUT)).trim(), BANNER);
    assert_probe_fails(&lab);
    fix_by_hand(&lab);
    assert_eq!(ok(lab.probe(OK_TIMEOUT)).trim(), BANNER);
}

/// Wait until `link` disappears from `observer` (its veth peer lived in a
/// namespace being destroyed; the kernel cleans up asynchronously).
fn wait_link_gone(observer: &Ns, link: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while observer.link_index(link).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{link} still exists in {}: the namespace holding its peer was not destroyed",
            observer.name()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dropping_removes_the_namespaces() {
    require_root();
    let observer = ok(Ns::new("observer"));

    // A lone Ns.
    let lone = ok(Ns::new("lone"));
    ok(observer.veth("o-lone", &lone, "peer"));
    drop(lone);
    wait_link_gone(&observer, "o-lone");

    // A whole seed, with its server, a finished probe and iptables runs.
    let lab = ok(SeedLab::build(SeedOptions {
        dnat: lab::iptables_available(),
        ipv6: false,
    }));
    fix_by_hand(&lab);
    assert_eq!(ok(lab.probe(OK_TIMEOUT)).trim(), BANNER);
    ok(observer.veth("o-client", &lab.client, "observer"));
    ok(observer.veth("o-dhost", &lab.dhost, "observer"));
    ok(observer.veth("o-ctr", &lab.ctr, "observer"));
    drop(lab);
    for link in ["o-client", "o-dhost", "o-ctr"] {
        wait_link_gone(&observer, link);
    }
}

#[test]
fn seed_failure_is_dhost_strict_rp_filter() {
    require_root();
    let lab = ok(SeedLab::build(SeedOptions {
        dnat: false,
        ipv6: false,
    }));
    assert_probe_fails(&lab);
    // The effective value is max(all, interface): loosen both on the bridge
    // the replies come back on, and the asymmetric reply gets through.
    ok(lab.dhost.sysctl("net.ipv4.conf.all.rp_filter", "0"));
    ok(lab.dhost.sysctl("net.ipv4.conf.br-back.rp_filter", "0"));
    assert_eq!(ok(lab.probe(OK_TIMEOUT)).trim(), BANNER);
}
