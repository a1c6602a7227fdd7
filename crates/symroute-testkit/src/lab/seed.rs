//! The seed topology of the field notes (lab recipe A): a client, a Docker
//! host (`dhost`) with two bridges and strict reverse-path filtering, and a
//! container (`ctr`) attached to both bridges whose default route leaves
//! through the back bridge. Replies to connections arriving on the front
//! bridge leave through the back one and are dropped by `dhost`: the bug
//! symroute fixes.
//!
//! ```text
//! client                    dhost                                  ctr
//! c0 192.0.2.10/24 ──── eth0 192.0.2.98/24
//!                           br-front 172.18.0.1/16 ── ctr-front ── eth1 172.18.0.2/16
//!                           br-back  172.19.0.1/16 ── ctr-back ─── eth0 172.19.0.4/16
//!                                                                  default via 172.19.0.1 dev eth0
//! ```
//!
//! With [`SeedOptions::ipv6`]: c0 2001:db8:1::10/64 (default via
//! 2001:db8:1::98), dhost eth0 2001:db8:1::98/64, br-front 2001:db8:18::1/64
//! and fe80::1/64, br-back 2001:db8:19::1/64 and fe80::1/64, ctr eth1
//! 2001:db8:18::2/64, eth0 2001:db8:19::4/64 with `default via fe80::1 dev
//! eth0`. IPv6 has no `rp_filter` sysctl, so dhost gets the equivalent
//! `ip6tables -t raw -A PREROUTING -m rpfilter --invert -j DROP` when
//! `ip6tables` is available ([`SeedLab::ipv6_rpfilter`] tells).

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
