//! Links and addresses of a lab namespace: veths, bridges, MACs, addresses and DAD.

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the lab module, split by concern"
)]
use super::*;

impl Ns {
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
}
