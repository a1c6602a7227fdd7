//! A small synchronous rtnetlink socket: one request, its acknowledgement or
//! its dump. Synchronous on purpose: symroute sends a handful of messages per
//! namespace, and a blocking socket bound to a namespace can be driven from any
//! thread without an async runtime.

use std::io;

use netlink_packet_core::{
    DecodeError, ErrorContext, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, Parseable,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkHeader, LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Errors of the netlink transport itself; callers wrap them with the object
/// they were working on.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel answered with an error code.
    #[error("{0}")]
    Kernel(io::Error),
    /// The socket failed (send, receive, creation).
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    /// The kernel sent something we could not decode.
    #[error("netlink decode: {0}")]
    Decode(String),
    /// The namespace changed while the kernel was dumping it, every time
    /// it was asked (`NLM_F_DUMP_INTR`: the dump may be inconsistent).
    #[error("the dump was interrupted by changes {DUMP_TRIES} times in a row")]
    Interrupted,
}

/// How many times a dump is asked for again when the kernel marks it
/// interrupted.
const DUMP_TRIES: usize = 3;
/// linux/netlink.h: the dump is inconsistent (the object list changed).
const NLM_F_DUMP_INTR: u16 = 0x10;
/// The largest datagram symroute reads. The kernel sizes link messages by
/// what the link carries (a container can give a link hundreds of
/// altnames); anything larger than this is refused, not truncated.
const MAX_DATAGRAM: usize = 4 << 20;

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

const RECV_BUF: usize = 64 * 1024;

thread_local! {
    /// The receive buffer of every socket used on this thread (a request is
    /// received to its end before the next starts), so that a process
    /// holding many sockets, the daemon with one per managed container,
    /// does not hold a buffer per socket.
    static RECV: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A blocking NETLINK_ROUTE socket. It stays bound to the network namespace
/// of the thread that created it, whichever thread uses it later.
pub struct NlSocket {
    sock: Socket,
    seq: u32,
}

impl NlSocket {
    /// Open a socket in the calling thread's network namespace.
    pub fn new() -> Result<Self, NetlinkError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        sock.bind_auto().map_err(NetlinkError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        // Extended acks give the kernel's own message for EINVAL and friends;
        // not every kernel has them, so failure to enable is not fatal.
        let _ = sock.set_ext_ack(true);
        Ok(NlSocket { sock, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock.send(&out, 0).map_err(NetlinkError::Socket)?;
        Ok(self.seq)
    }

    /// Receive messages for `seq` until the request is finished, handing every
    /// inner message to `each`, into this thread's buffer (taken for the
    /// time of the request: a nested request would get a fresh one).
    fn receive(
        &mut self,
        seq: u32,
        each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), NetlinkError> {
        let mut buf = RECV.take();
        if buf.len() < RECV_BUF {
            buf = vec![0; RECV_BUF];
        }
        let r = self.receive_into(&mut buf, seq, each);
        // A buffer grown for one huge message is not kept.
        buf.truncate(RECV_BUF);
        buf.shrink_to(RECV_BUF);
        RECV.set(buf);
        r
    }

    fn receive_into(
        &mut self,
        buf: &mut Vec<u8>,
        seq: u32,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), NetlinkError> {
        let mut interrupted = false;
        loop {
            // The datagram's real size first: a message larger than the
            // buffer would otherwise be cut, and a dump end early unnoticed.
            let mut none: &mut [u8] = &mut [];
            let size = self
                .sock
                .recv(&mut none, libc::MSG_PEEK | libc::MSG_TRUNC)
                .map_err(NetlinkError::Socket)?;
            if size > buf.len() {
                if size > MAX_DATAGRAM {
                    return Err(NetlinkError::Decode(format!(
                        "a netlink datagram of {size} bytes (more than {MAX_DATAGRAM})"
                    )));
                }
                buf.resize(size, 0);
            }
            let n = self
                .sock
                .recv(&mut &mut buf[..], 0)
                .map_err(NetlinkError::Socket)?;
            let n = n.min(buf.len());
            let mut offset = 0;
            while offset < n {
                let bytes = &buf[offset..n];
                let msg = decode(bytes)?;
                // The length on the wire (a cleaned copy is shorter).
                let len = bytes
                    .get(0..4)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, |b| u32::from_ne_bytes(b) as usize);
                if len == 0 {
                    return Err(NetlinkError::Decode("zero-length message".into()));
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue; // a late answer to an earlier request
                }
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    // A dump's end can carry an error of its own.
                    NetlinkPayload::Done(d) if d.code < 0 => {
                        return Err(NetlinkError::Kernel(io::Error::from_raw_os_error(-d.code)));
                    }
                    NetlinkPayload::Done(_) if interrupted => {
                        return Err(NetlinkError::Interrupted);
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(NetlinkError::Kernel(io::Error::from_raw_os_error(
                                -code.get(),
                            ))),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        each(inner);
                        if msg.header.flags & netlink_packet_core::NLM_F_MULTIPART == 0 {
                            // A single answer (route get) ends the request.
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Send a change (new/del) and wait for its acknowledgement.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NetlinkError> {
        let seq = self.send(msg, flags | NLM_F_REQUEST | NLM_F_ACK)?;
        self.receive(seq, |_| {})
    }

    /// Send a dump request and collect every answer. A dump the kernel
    /// marks interrupted (the list changed under it) is asked for again, up
    /// to [`DUMP_TRIES`] times.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        for _ in 1..DUMP_TRIES {
            match self.dump_once(msg.clone()) {
                Err(NetlinkError::Interrupted) => {}
                other => return other,
            }
        }
        self.dump_once(msg)
    }

    fn dump_once(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut out = Vec::new();
        self.receive(seq, |m| out.push(m))?;
        Ok(out)
    }

    /// Send a request that is answered by one message (a route get).
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> Result<RouteNetlinkMessage, NetlinkError> {
        let seq = self.send(msg, NLM_F_REQUEST)?;
        let mut out = None;
        self.receive(seq, |m| out = Some(m))?;
        out.ok_or_else(|| NetlinkError::Decode("no answer to a get request".into()))
    }
}

/// The messages symroute reads, decoded only as far as it reads them.
///
/// Links carry dozens of attributes (statistics, `IFLA_LINKINFO` with a
/// parser per link kind, `IFLA_AF_SPEC`, ...) of which symroute uses two:
/// the name and the hardware address. Decoding the rest would cost time on
/// every dump, and an attribute that the crate cannot parse (a link kind a
/// container made, newer than the crate) would make the whole dump fail. So
/// a link message is decoded here, its header and those two attributes only;
/// addresses, rules and routes are decoded by netlink-packet-route. A
/// message of any other type is refused (symroute never asks for one, and
/// its notification sockets join only the link, address, rule and route
/// groups). This keeps the crate's decoders of the other message families
/// out of the binaries too (the CNI plugin's size, docs/benchmarks.md).
struct Decoded(RouteNetlinkMessage);

impl NetlinkDeserializable for Decoded {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        use RouteNetlinkMessage as M;
        use netlink_packet_route::{
            address::AddressMessage, route::RouteMessage, rule::RuleMessage,
        };
        let t = header.message_type;
        Ok(Decoded(match t {
            RTM_NEWLINK | RTM_DELLINK => {
                let link = decode_link(payload)?;
                if t == RTM_NEWLINK {
                    M::NewLink(link)
                } else {
                    M::DelLink(link)
                }
            }
            RTM_NEWADDR | RTM_DELADDR => {
                let a = AddressMessage::parse(payload).context("invalid address message")?;
                if t == RTM_NEWADDR {
                    M::NewAddress(a)
                } else {
                    M::DelAddress(a)
                }
            }
            RTM_NEWROUTE | RTM_DELROUTE => {
                let r = RouteMessage::parse(payload).context("invalid route message")?;
                if t == RTM_NEWROUTE {
                    M::NewRoute(r)
                } else {
                    M::DelRoute(r)
                }
            }
            RTM_NEWRULE | RTM_DELRULE => {
                let r = RuleMessage::parse(payload).context("invalid rule message")?;
                if t == RTM_NEWRULE {
                    M::NewRule(r)
                } else {
                    M::DelRule(r)
                }
            }
            other => {
                return Err(DecodeError::from(format!(
                    "unexpected message type {other}"
                )));
            }
        }))
    }
}

/// A link message's header, name and hardware address (see [`Decoded`]).
/// A name that is not UTF-8 is an error here (the caller then decodes a
/// cleaned copy, see [`sanitize`]).
fn decode_link(payload: &[u8]) -> Result<LinkMessage, DecodeError> {
    let header = LinkHeader::parse(payload).context("invalid link message header")?;
    let mut msg = LinkMessage::default();
    msg.header = header;
    let nlas = payload.get(LINK_HEADER_LEN..).unwrap_or_default();
    for nla in NlasIterator::new(nlas) {
        let nla = nla.context("invalid link attribute")?;
        match nla.kind() & NLA_TYPE_MASK {
            IFLA_IFNAME => {
                let v = nla.value();
                let v = v.strip_suffix(&[0]).unwrap_or(v);
                let name = std::str::from_utf8(v)
                    .map_err(|_| DecodeError::from("interface name is not UTF-8"))?;
                msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
            }
            IFLA_ADDRESS => msg
                .attributes
                .push(LinkAttribute::Address(nla.value().to_vec())),
            _ => {}
        }
    }
    Ok(msg)
}

/// Decode the first message of `bytes`. When it cannot be decoded (string
/// attributes must be UTF-8, and a container can give an interface an
/// alias, an altname or even a name that is not), decode a cleaned copy
/// instead: see [`sanitize`].
fn decode(bytes: &[u8]) -> Result<NetlinkMessage<RouteNetlinkMessage>, NetlinkError> {
    let msg = match NetlinkMessage::<Decoded>::deserialize(bytes) {
        Ok(m) => m,
        Err(e) => {
            let clean = sanitize(bytes).ok_or_else(|| NetlinkError::Decode(e.to_string()))?;
            NetlinkMessage::<Decoded>::deserialize(&clean)
                .map_err(|e| NetlinkError::Decode(e.to_string()))?
        }
    };
    let payload = match msg.payload {
        NetlinkPayload::InnerMessage(Decoded(m)) => NetlinkPayload::InnerMessage(m),
        NetlinkPayload::Done(d) => NetlinkPayload::Done(d),
        NetlinkPayload::Error(e) => NetlinkPayload::Error(e),
        NetlinkPayload::Noop => NetlinkPayload::Noop,
        NetlinkPayload::Overrun(o) => NetlinkPayload::Overrun(o),
        _ => NetlinkPayload::Noop,
    };
    Ok(NetlinkMessage::new(msg.header, payload))
}

/// linux/if_link.h: the size of `struct ifinfomsg`.
const LINK_HEADER_LEN: usize = 16;
const RTM_DELLINK: u16 = 17;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_DELRULE: u16 = 33;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWRULE: u16 = 32;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const FRA_IIFNAME: u16 = 3;
const FRA_OIFNAME: u16 = 17;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// What an interface name that is not UTF-8 is called in symroute: the valid
/// parts as they are (backslashes doubled), each other byte as `\xNN`, and
/// ` (not UTF-8)` after it. The space makes it a name no interface can have
/// (the kernel refuses whitespace in names), so it is never taken for a
/// name a user or a runtime gives, and never printed as a `dev` word; the
/// escapes keep two such names apart.
pub fn lossy_name(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push_str(NOT_UTF8_SUFFIX);
    out
}

/// The end of every [`lossy_name`].
pub const NOT_UTF8_SUFFIX: &str = " (not UTF-8)";

/// A copy of the message at the start of `bytes` that the crate can decode:
/// - a link keeps only IFLA_ADDRESS and IFLA_IFNAME (header flags are in the
///   fixed part); a name that is not UTF-8 becomes its [`lossy_name`]; the
///   alias, altnames and every other attribute symroute never reads go;
/// - an address keeps IFA_ADDRESS, IFA_LOCAL and IFA_FLAGS (IFA_LABEL, the
///   interface's name for IPv4, goes);
/// - a rule keeps every attribute; an `iif`/`oif` name that is not UTF-8
///   becomes its lossy form, so the rule still counts as having an
///   interface selector.
///
/// `None` for any other message, or one too short for its own header.
fn sanitize(bytes: &[u8]) -> Option<Vec<u8>> {
    let len = u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let ty = u16::from_ne_bytes(bytes.get(4..6)?.try_into().ok()?);
    let msg = bytes.get(..len)?;
    let fixed = match ty {
        RTM_NEWLINK => 16,
        RTM_NEWADDR => 8,
        RTM_NEWRULE => 12,
        _ => return None,
    };
    let mut out = msg.get(..16 + fixed)?.to_vec();
    let mut at = 16 + fixed;
    while at + 4 <= msg.len() {
        let rta_len = usize::from(u16::from_ne_bytes(msg[at..at + 2].try_into().ok()?));
        let rta_type = u16::from_ne_bytes(msg[at + 2..at + 4].try_into().ok()?);
        if rta_len < 4 || at + rta_len > msg.len() {
            break;
        }
        let payload = &msg[at + 4..at + rta_len];
        let kind = rta_type & NLA_TYPE_MASK;
        let keep: Option<Vec<u8>> = match (ty, kind) {
            (RTM_NEWLINK, IFLA_ADDRESS) => Some(payload.to_vec()),
            (RTM_NEWLINK, IFLA_IFNAME) | (RTM_NEWRULE, FRA_IIFNAME | FRA_OIFNAME) => {
                Some(utf8_or_lossy(payload))
            }
            (RTM_NEWLINK, _) => None,
            (RTM_NEWADDR, IFA_ADDRESS | IFA_LOCAL | IFA_FLAGS) => Some(payload.to_vec()),
            (RTM_NEWADDR, _) => None,
            _ => Some(payload.to_vec()),
        };
        if let Some(p) = keep {
            let l = u16::try_from(4 + p.len()).ok()?;
            out.extend_from_slice(&l.to_ne_bytes());
            out.extend_from_slice(&rta_type.to_ne_bytes());
            out.extend_from_slice(&p);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        at += rta_len.next_multiple_of(4);
    }
    let total = u32::try_from(out.len()).ok()?;
    out[0..4].copy_from_slice(&total.to_ne_bytes());
    Some(out)
}

/// A NUL-terminated string attribute as it is when UTF-8, else its
/// [`lossy_name`], NUL-terminated.
fn utf8_or_lossy(payload: &[u8]) -> Vec<u8> {
    let text = payload.strip_suffix(&[0]).unwrap_or(payload);
    if std::str::from_utf8(text).is_ok() {
        return payload.to_vec();
    }
    let mut v = lossy_name(text).into_bytes();
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_names_are_distinct_and_never_kernel_names() {
        let a = lossy_name(b"al\xff");
        assert_eq!(a, "al\\xff (not UTF-8)");
        assert_ne!(lossy_name(b"\\xff\xfe"), lossy_name(b"\xff\\xfe"));
        assert!(a.contains(' '));
    }

    #[test]
    fn a_link_message_with_a_bad_alias_and_name_decodes() {
        // nlmsghdr + ifinfomsg + IFLA_IFNAME "a\xff" + IFLA_IFALIAS "\xff\xfe"
        let mut m = vec![0u8; 32];
        m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        m[20..24].copy_from_slice(&7i32.to_ne_bytes()); // ifindex
        for (t, p) in [(IFLA_IFNAME, &b"a\xff\0"[..]), (20, &b"\xff\xfe\0"[..])] {
            m.extend_from_slice(&((4 + p.len()) as u16).to_ne_bytes());
            m.extend_from_slice(&t.to_ne_bytes());
            m.extend_from_slice(p);
            m.resize(m.len().next_multiple_of(4), 0);
        }
        let l = m.len() as u32;
        m[0..4].copy_from_slice(&l.to_ne_bytes());
        assert!(NetlinkMessage::<RouteNetlinkMessage>::deserialize(&m).is_err());
        let msg = decode(&m).expect("decoded leniently");
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = msg.payload else {
            panic!("not a link: {msg:?}");
        };
        let link = crate::kernel::parse_link(&link);
        assert_eq!((link.index, link.name.as_str()), (7, "a\\xff (not UTF-8)"));
    }

    /// nlmsghdr of type `t` + ifinfomsg for index 7 + the given attributes.
    fn link_msg(t: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut m = vec![0u8; 32];
        m[4..6].copy_from_slice(&t.to_ne_bytes());
        m[20..24].copy_from_slice(&7i32.to_ne_bytes());
        for (t, p) in attrs {
            m.extend_from_slice(&((4 + p.len()) as u16).to_ne_bytes());
            m.extend_from_slice(&t.to_ne_bytes());
            m.extend_from_slice(p);
            m.resize(m.len().next_multiple_of(4), 0);
        }
        let l = m.len() as u32;
        m[0..4].copy_from_slice(&l.to_ne_bytes());
        m
    }

    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_DATA: u16 = 2;
    const NLA_F_NESTED: u16 = 0x8000;

    fn nla(t: u16, p: &[u8]) -> Vec<u8> {
        let mut v = ((4 + p.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&t.to_ne_bytes());
        v.extend_from_slice(p);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn a_link_whose_link_info_the_crate_cannot_parse_still_decodes() {
        // IFLA_LINKINFO { IFLA_INFO_KIND "bond", IFLA_INFO_DATA { IFLA_BOND_MODE
        // with three bytes where one belongs } }: a container can make
        // links of kinds newer than the crate; their info must not fail a dump.
        let data = nla(1, &[1, 2, 3]);
        let mut info = nla(1, b"bond\0");
        info.extend(nla(IFLA_INFO_DATA | NLA_F_NESTED, &data));
        let m = link_msg(
            RTM_NEWLINK,
            &[
                (IFLA_IFNAME, b"bond0\0".to_vec()),
                (IFLA_ADDRESS, vec![2, 0, 0, 0, 0, 9]),
                (IFLA_LINKINFO | NLA_F_NESTED, info),
            ],
        );
        assert!(
            NetlinkMessage::<RouteNetlinkMessage>::deserialize(&m).is_err(),
            "the crate's full decoder refuses this message"
        );
        let msg = decode(&m).expect("decoded");
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = msg.payload else {
            panic!("not a link: {msg:?}");
        };
        let link = crate::kernel::parse_link(&link);
        assert_eq!((link.index, link.name.as_str()), (7, "bond0"));
        assert_eq!(link.mac.as_deref(), Some("02:00:00:00:00:09"));
    }

    #[test]
    fn a_deleted_link_decodes_and_other_message_types_are_refused() {
        let m = link_msg(RTM_DELLINK, &[(IFLA_IFNAME, b"x\0".to_vec())]);
        let msg = decode(&m).expect("decoded");
        assert!(matches!(
            msg.payload,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(_))
        ));
        // RTM_NEWNEIGH: never asked for.
        let m = link_msg(28, &[]);
        let e = decode(&m).unwrap_err().to_string();
        assert!(e.contains("unexpected message type 28"), "{e}");
    }
}
