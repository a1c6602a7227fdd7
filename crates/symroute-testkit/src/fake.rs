//! An in-memory [`Kernel`] for tests. **Not for production use**: nothing
//! here touches a real namespace.
//!
//! [`FakeKernel`] keeps a [`Snapshot`] and carries out [`Op`]s on it the way
//! the kernel treats the messages [`crate::kernel::NetlinkKernel`] sends:
//!
//! - `AddRule` goes out with `NLM_F_EXCL`: EEXIST when the kernel's
//!   `rule_exists()` finds the same rule (family, priority, table, protocol,
//!   no other selectors, and the same `from` prefix; as in the kernel, a new
//!   `from all` rule also matches an existing rule with a source). A new rule
//!   goes after every rule of its family with a lower or equal priority.
//! - `DelRule` removes the first rule (in list order) matching the attributes
//!   the message carries: family and priority always, table and protocol when
//!   non-zero, the source when there is one. Nothing matching: ENOENT. The
//!   message carries no other selectors, so it can match a rule that has some
//!   (a "delete" of a tagged `iif` rule can remove symroute's own `from`
//!   rule listed before it), and it always names a table, so it never
//!   matches a rule without one (blackhole, unreachable, goto).
//! - `AddRoute` goes out with `NLM_F_EXCL`. The route is validated first, as
//!   in `fib_create_info()` / `ip6_route_info_create()`: a device is needed
//!   (ENODEV), it must exist (ENODEV) and be up (ENETDOWN); a preferred
//!   source must be a local address (IPv6: not tentative) (EINVAL); a gateway
//!   without `onlink` that is not IPv6 link-local must be covered by a direct
//!   route through the same device in the route's table or, as the kernel's
//!   fallback lookup, in main (ENETUNREACH). Then EEXIST when a route with the
//!   same key (table, prefix, metric) exists. What is stored is what the
//!   message carries: unicast, scope link or universe (IPv6: universe), no
//!   multipath, IPv6 metric 0 read back as 1024.
//! - `DelRoute` removes the lowest-metric route matching table, prefix, and
//!   metric, protocol, device and gateway when given (a multipath route by its
//!   first hop, IPv6's by any of its hops); for IPv4 also the route type
//!   (the message's is unicast: a blackhole or unreachable route seeded into
//!   `state` never matches), the scope and the preferred source when given,
//!   as `fib_table_delete()` does; IPv6 ignores the type, as
//!   `ip6_route_del()` does. Nothing matching: ESRCH.
//!
//! Failures can be injected ([`FakeKernel::fail_at`]); every call to
//! [`Kernel::execute`] is logged. [`Kernel::route_get`] is not emulated:
//! diagnosis is tested against the real kernel.
//!
//! The `set_link_up`, `add_addr`, `remove_addr` and `remove_link` helpers
//! emulate what the kernel does to routes on those events: admin down deletes
//! every route of the link, up restores only main's connected routes, the
//! last IPv4 address gone flushes the link's IPv4 routes, a vanished link
//! takes its routes along; rules always stay.
//!
//! Simplifications: the rules of both families share one list, each family
//! kept in the kernel's order;
//! the gateway check looks in the route's table and main instead of doing a
//! full policy lookup; TOS, marks, expiry, nexthop objects and the `local`
//! table are not modelled.

use std::net::IpAddr;

use ipnet::IpNet;

use symroute_core::diff::Op;
use symroute_core::kernel::{Kernel, KernelError, RouteAnswer, RouteQuery, errno_error};
use symroute_core::model::{
    Family, IfAddr, Link, RT_TABLE_MAIN, Route, RouteType, Rule, Scope, Snapshot,
};

/// `proto kernel`: what the kernel tags its own routes and built-in rules with.
pub const RTPROT_KERNEL: u8 = 2;
/// The metric the kernel gives IPv6 prefix routes of addresses.
pub const IPV6_PREFIX_ROUTE_METRIC: u32 = 256;
/// The metric an IPv6 route added with metric 0 reads back with.
pub const IPV6_DEFAULT_METRIC: u32 = 1024;

/// An in-memory namespace behaving like the kernel towards symroute's
/// messages. For tests only.
#[derive(Debug, Clone)]
pub struct FakeKernel {
    /// The namespace: links with their addresses, every rule in the kernel's
    /// list order, every route of every table but `local`.
    pub state: Snapshot,
    /// Every operation passed to [`Kernel::execute`], in call order, including
    /// the ones that failed: `log[n]` is call `n`.
    pub log: Vec<Op>,
    /// Make the Nth call to `execute` (0-based, counting every call, failed or
    /// not, rollback steps included) fail with `fail_errno` without changing
    /// anything.
    pub fail_at: Option<usize>,
    /// How many consecutive calls fail from `fail_at` on (default 1); 2 or more
    /// makes rollback steps fail too.
    pub fail_count: usize,
    /// The errno of injected failures (default EPERM).
    pub fail_errno: i32,
    /// Tentative addresses finish duplicate address detection once this many
    /// snapshots have been taken (None: they stay tentative).
    pub dad_settles_after: Option<usize>,
    /// Snapshots taken so far.
    pub snapshots: usize,
}

impl FakeKernel {
    /// A fake holding exactly `state`.
    pub fn new(state: Snapshot) -> Self {
        FakeKernel {
            state,
            log: Vec::new(),
            fail_at: None,
            fail_count: 1,
            fail_errno: libc::EPERM,
            dad_settles_after: None,
            snapshots: 0,
        }
    }

    /// A fresh namespace with these links, as the kernel sets it up: the
    /// built-in rules (0 local, 32766 main, 32767 default for IPv4; 0 local,
    /// 32766 main for IPv6) and main's connected routes of the links that are
    /// up.
    pub fn with_links(links: Vec<Link>) -> Self {
        let mut state = Snapshot {
            links,
            rules: builtin_rules(),
            routes: Vec::new(),
        };
        let indexes: Vec<u32> = state.links.iter().map(|l| l.index).collect();
        for index in indexes {
            add_connected_routes(&mut state, index);
        }
        FakeKernel::new(state)
    }

    /// Calls made to `execute` so far.
    pub fn calls(&self) -> usize {
        self.log.len()
    }

    /// Set a link administratively up or down, as `ip link set dev X up|down`.
    /// Down deletes every route through the link, in every table and family;
    /// up brings back main's connected routes only.
    pub fn set_link_up(&mut self, index: u32, up: bool) {
        let Some(link) = self.state.links.iter_mut().find(|l| l.index == index) else {
            panic!("fake kernel: no link {index}");
        };
        if link.up == up {
            return;
        }
        link.up = up;
        if up {
            add_connected_routes(&mut self.state, index);
        } else {
            flush_link_routes(&mut self.state, index, None);
        }
    }

    /// Add an address to a link, as `ip addr add`; a link that is up gets the
    /// connected route in main.
    pub fn add_addr(&mut self, index: u32, addr: IfAddr) {
        let link = self.link_mut(index);
        assert!(
            !link.addrs.iter().any(|a| a.net == addr.net),
            "fake kernel: {} already on link {index}",
            addr.net
        );
        link.addrs.push(addr);
        if link.up {
            add_connected_routes(&mut self.state, index);
        }
    }

    /// Remove an address from a link, as `ip addr del`. The connected route in
    /// main goes when no other address of the link is in the prefix; when the
    /// last IPv4 address goes, every IPv4 route through the link goes.
    pub fn remove_addr(&mut self, index: u32, net: IpNet) {
        let link = self.link_mut(index);
        let before = link.addrs.len();
        link.addrs.retain(|a| a.net != net);
        assert!(
            link.addrs.len() < before,
            "fake kernel: {net} not on link {index}"
        );
        let family = Family::of(&net.addr());
        let same_prefix_left = link.addrs.iter().any(|a| a.net.trunc() == net.trunc());
        let v4_left = link.addrs.iter().any(|a| a.family() == Family::V4);
        if family == Family::V4 && !v4_left {
            flush_link_routes(&mut self.state, index, Some(Family::V4));
        } else if !same_prefix_left {
            self.state.routes.retain(|r| {
                !(r.table == RT_TABLE_MAIN
                    && r.protocol == RTPROT_KERNEL
                    && r.oif == index
                    && r.dst == net.trunc())
            });
        }
    }

    /// Delete a link (or move it to another namespace): its routes go, rules
    /// stay.
    pub fn remove_link(&mut self, index: u32) {
        self.state.links.retain(|l| l.index != index);
        flush_link_routes(&mut self.state, index, None);
    }

    fn link_mut(&mut self, index: u32) -> &mut Link {
        self.state
            .links
            .iter_mut()
            .find(|l| l.index == index)
            .unwrap_or_else(|| panic!("fake kernel: no link {index}"))
    }

    fn injected_failure(&self, call: usize) -> bool {
        self.fail_at
            .is_some_and(|at| call >= at && call < at.saturating_add(self.fail_count.max(1)))
    }

    fn carry_out(&mut self, op: &Op) -> Result<(), i32> {
        match op {
            Op::AddRule(r) => add_rule(&mut self.state, r),
            Op::DelRule(r) => del_rule(&mut self.state, r),
            Op::AddRoute(r) => add_route(&mut self.state, r),
            Op::DelRoute(r) => del_route(&mut self.state, r),
        }
    }
}

impl Kernel for FakeKernel {
    fn snapshot(&mut self) -> Result<Snapshot, KernelError> {
        if self.dad_settles_after.is_some_and(|n| self.snapshots >= n) {
            for a in self.state.links.iter_mut().flat_map(|l| l.addrs.iter_mut()) {
                a.tentative = false;
            }
        }
        self.snapshots += 1;
        Ok(self.state.clone())
    }

    fn execute(&mut self, op: &Op) -> Result<(), KernelError> {
        let call = self.log.len();
        self.log.push(op.clone());
        let result = if self.injected_failure(call) {
            Err(self.fail_errno)
        } else {
            self.carry_out(op)
        };
        result.map_err(|errno| errno_error(&op.to_string(), errno))
    }

    fn route_get(&mut self, q: &RouteQuery) -> Result<RouteAnswer, KernelError> {
        Err(errno_error(
            &format!("route get {} (unsupported in fake)", q.dst),
            libc::EOPNOTSUPP,
        ))
    }
}

/// The rules a new namespace starts with, in list order.
pub fn builtin_rules() -> Vec<Rule> {
    let rule = |family, priority, table| Rule {
        family,
        priority,
        src: None,
        table,
        protocol: RTPROT_KERNEL,
        other_selectors: false,
    };
    vec![
        rule(Family::V4, 0, 255),
        rule(Family::V4, 32766, 254),
        rule(Family::V4, 32767, 253),
        rule(Family::V6, 0, 255),
        rule(Family::V6, 32766, 254),
    ]
}

/// The connected route main gets for an address (None for host addresses).
pub fn connected_route(index: u32, a: &IfAddr) -> Option<Route> {
    let family = a.family();
    if a.net.prefix_len() == family.host_prefix() {
        return None;
    }
    Some(Route {
        table: RT_TABLE_MAIN,
        dst: a.net.trunc(),
        gateway: None,
        oif: index,
        prefsrc: (family == Family::V4).then(|| a.addr()),
        scope: match family {
            Family::V4 => Scope::Link,
            Family::V6 => Scope::Universe,
        },
        kind: RouteType::UNICAST,
        metric: match family {
            Family::V4 => 0,
            Family::V6 => IPV6_PREFIX_ROUTE_METRIC,
        },
        onlink: false,
        protocol: RTPROT_KERNEL,
        multipath: Vec::new(),
    })
}

/// Main's connected routes for every address of an up link (not DAD-failed),
/// one per prefix, unless already there.
fn add_connected_routes(state: &mut Snapshot, index: u32) {
    let Some(link) = state.link(index) else {
        return;
    };
    if !link.up || link.loopback {
        return;
    }
    let wanted: Vec<Route> = link
        .addrs
        .iter()
        .filter(|a| !a.dad_failed)
        .filter_map(|a| connected_route(index, a))
        .collect();
    for r in wanted {
        let present = state.routes.iter().any(|x| {
            x.table == r.table && x.dst == r.dst && x.oif == r.oif && x.protocol == r.protocol
        });
        if !present {
            state.routes.push(r);
        }
    }
}

/// Delete the routes through a link (of one family, or all); a multipath
/// route loses its next hops through it and goes when none is left.
fn flush_link_routes(state: &mut Snapshot, index: u32, family: Option<Family>) {
    state.routes.retain_mut(|r| {
        if family.is_some_and(|f| r.family() != f) {
            return true;
        }
        if r.oif == index {
            return false;
        }
        if !r.multipath.is_empty() {
            r.multipath.retain(|nh| nh.oif != index);
            return !r.multipath.is_empty();
        }
        true
    });
}

/// The kernel's `rule_exists()` for what symroute's message carries.
fn rule_exists(existing: &Rule, new: &Rule) -> bool {
    existing.family == new.family
        && existing.priority == new.priority
        && existing.table == new.table
        && existing.protocol == new.protocol
        && !existing.other_selectors
        // The family compare() only looks at the source when the new rule has
        // one: a new `from all` rule "exists" whatever the source of the old.
        && (new.src.is_none() || existing.src == new.src)
}

fn add_rule(state: &mut Snapshot, r: &Rule) -> Result<(), i32> {
    if r.table == 0 {
        return Err(libc::EINVAL);
    }
    if let Some(src) = r.src
        && Family::of(&src.addr()) != r.family
    {
        return Err(libc::EINVAL);
    }
    if state.rules.iter().any(|x| rule_exists(x, r)) {
        return Err(libc::EEXIST);
    }
    // The message carries no other selectors.
    let stored = Rule {
        other_selectors: false,
        ..r.clone()
    };
    let at = state
        .rules
        .iter()
        .position(|x| x.family == r.family && x.priority > r.priority)
        .unwrap_or(state.rules.len());
    state.rules.insert(at, stored);
    Ok(())
}

/// The kernel's `rule_find()` for what symroute's delete message carries.
fn rule_matches_delete(existing: &Rule, del: &Rule) -> bool {
    existing.family == del.family
        && existing.priority == del.priority
        && (del.table == 0 || existing.table == del.table)
        && (del.protocol == 0 || existing.protocol == del.protocol)
        && (del.src.is_none() || existing.src == del.src)
}

fn del_rule(state: &mut Snapshot, r: &Rule) -> Result<(), i32> {
    let at = state
        .rules
        .iter()
        .position(|x| rule_matches_delete(x, r))
        .ok_or(libc::ENOENT)?;
    state.rules.remove(at);
    Ok(())
}

/// The scope the netlink adapter puts in the message.
fn message_scope(r: &Route) -> Scope {
    match (r.family(), r.scope) {
        (Family::V4, Scope::Link) => Scope::Link,
        _ => Scope::Universe,
    }
}

/// What the kernel stores for an add message built from `r`.
fn stored_route(r: &Route) -> Route {
    let mut s = r.clone();
    s.kind = RouteType::UNICAST;
    s.scope = message_scope(r);
    s.multipath.clear();
    if r.family() == Family::V6 && s.metric == 0 {
        s.metric = IPV6_DEFAULT_METRIC;
    }
    s
}

fn is_local_addr(state: &Snapshot, a: &IpAddr) -> bool {
    state
        .links
        .iter()
        .flat_map(|l| l.addrs.iter())
        .any(|x| x.addr() == *a && !x.tentative && !x.dad_failed)
}

/// A direct route through `oif` covering `gw` in `table`.
fn covers_gateway(state: &Snapshot, table: u32, oif: u32, gw: &IpAddr) -> bool {
    state.routes.iter().any(|x| {
        x.table == table
            && x.kind.is_unicast()
            && x.gateway.is_none()
            && x.multipath.is_empty()
            && x.oif == oif
            && x.dst.contains(gw)
            && (x.family() == Family::V6 || x.scope != Scope::Universe)
    })
}

fn add_route(state: &mut Snapshot, r: &Route) -> Result<(), i32> {
    let new = stored_route(r);
    let family = new.family();
    if new.oif == 0 {
        return Err(libc::ENODEV);
    }
    let link = state.link(new.oif).ok_or(libc::ENODEV)?;
    if !link.up {
        return Err(libc::ENETDOWN);
    }
    if let Some(src) = new.prefsrc
        && (Family::of(&src) != family || !is_local_addr(state, &src))
    {
        return Err(libc::EINVAL);
    }
    if let Some(gw) = new.gateway {
        if Family::of(&gw) != family {
            return Err(libc::EINVAL);
        }
        let reachable = new.onlink
            || symroute_core::model::is_link_local_v6(&gw)
            || covers_gateway(state, new.table, new.oif, &gw)
            || covers_gateway(state, RT_TABLE_MAIN, new.oif, &gw);
        if !reachable {
            return Err(libc::ENETUNREACH);
        }
    }
    if state.routes.iter().any(|x| x.key() == new.key()) {
        return Err(libc::EEXIST);
    }
    state.routes.push(new);
    Ok(())
}

/// `fib_table_delete()` / `ip6_route_del()` for what symroute's delete message
/// carries.
fn route_matches_delete(existing: &Route, del: &Route) -> bool {
    // A multipath route is compared by its first hop (IPv4's
    // `fib_nh_match`) or by each of its sibling hops (IPv6).
    let hops: Vec<(u32, Option<std::net::IpAddr>)> = if existing.multipath.is_empty() {
        vec![(existing.oif, existing.gateway)]
    } else {
        let all = existing.multipath.iter().map(|h| (h.oif, h.gateway));
        match del.family() {
            Family::V4 => all.take(1).collect(),
            Family::V6 => all.collect(),
        }
    };
    let hop = hops.iter().any(|&(oif, gateway)| {
        (del.oif == 0 || oif == del.oif) && (del.gateway.is_none() || gateway == del.gateway)
    });
    let basic = existing.table == del.table
        && existing.dst == del.dst
        && (del.metric == 0 || existing.metric == del.metric)
        && (del.protocol == 0 || existing.protocol == del.protocol)
        && hop;
    match del.family() {
        Family::V6 => basic,
        Family::V4 => {
            basic
                && existing.kind.is_unicast()
                && existing.scope == message_scope(del)
                && (del.prefsrc.is_none() || existing.prefsrc == del.prefsrc)
        }
    }
}

fn del_route(state: &mut Snapshot, r: &Route) -> Result<(), i32> {
    // The kernel keeps a prefix's routes in metric order (IPv4's aliases by
    // priority in `fib_insert_alias()`, IPv6's leaf list in `fib6_add_rt2()`)
    // and deletes the first that matches: with metric 0 (not given), the
    // lowest-metric match, wherever it stands in this list.
    let at = state
        .routes
        .iter()
        .enumerate()
        .filter(|(_, x)| route_matches_delete(x, r))
        .min_by_key(|(_, x)| x.metric)
        .map(|(i, _)| i)
        .ok_or(libc::ESRCH)?;
    state.routes.remove(at);
    Ok(())
}
