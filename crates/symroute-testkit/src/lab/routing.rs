//! Routes and rules of a lab namespace, through rtnetlink (never `ip`).

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the lab module, split by concern"
)]
use super::*;

impl Ns {
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
