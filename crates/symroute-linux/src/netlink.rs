//! A small synchronous rtnetlink socket: one request, its acknowledgement or
//! its dump. Synchronous on purpose: symroute sends a handful of messages per
//! namespace, and a blocking socket bound to a namespace can be driven from any
//! thread without an async runtime.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
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
}

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

/// A blocking NETLINK_ROUTE socket. It stays bound to the network namespace
/// of the thread that created it, whichever thread uses it later.
pub struct NlSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
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
        Ok(NlSocket {
            sock,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
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
    /// inner message to `each`.
    fn receive(
        &mut self,
        seq: u32,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), NetlinkError> {
        loop {
            let n = self
                .sock
                .recv(&mut &mut self.buf[..], 0)
                .map_err(NetlinkError::Socket)?;
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(NetlinkError::Decode("zero-length message".into()));
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue; // a late answer to an earlier request
                }
                match msg.payload {
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

    /// Send a dump request and collect every answer.
    pub fn dump(
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
