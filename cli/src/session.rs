//! The client side of one channel: connect, post, wait for replies with a
//! deadline, close with the Bye handshake.

use std::time::{Duration, Instant};

use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Status};

use crate::fail::Failure;

/// One connected channel in its own group.
pub(crate) struct Session {
    engine: Engine,
    group: ChannelGroup,
    channel: u16,
    addr: Address,
    timeout: Duration,
}

impl Session {
    /// Connects to `addr` (a HelloRequest with `hello_headers`) and waits for
    /// the HelloResponse.
    ///
    /// # Errors
    ///
    /// [`Failure::Connect`] when the engine reports the connect failed or the
    /// server closes without accepting; [`Failure::Timeout`] when no answer
    /// comes within `timeout`.
    pub(crate) fn connect(
        engine: &Engine,
        addr: &Address,
        timeout: Duration,
    ) -> Result<Session, Failure> {
        let group = engine.create_group()?;
        let mut hello = new_message(engine)?;
        addr.format(&mut hello)
            .map_err(|e| Failure::Usage(format!("bad address {addr}: {e}")))?;
        let channel = group.post(hello)?.channel_number;
        let session = Session {
            engine: engine.clone(),
            group,
            channel,
            addr: addr.clone(),
            timeout,
        };
        let reply = session.wait("the HelloResponse", |m| {
            if m.is_from_engine() {
                let why = match m.status() {
                    Status::UdsPathNotFound => "no socket file at that path".to_string(),
                    Status::InvalidAddress => "the host name does not resolve".to_string(),
                    Status::ConnectFailed => match addr {
                        Address::TcpClient { host, .. }
                            if host.parse::<std::net::IpAddr>().is_err() =>
                        {
                            "does the host name resolve, and is a tofu server listening there?"
                                .to_string()
                        }
                        _ => "is a tofu server listening there?".to_string(),
                    },
                    Status::PeerDisconnected | Status::ChannelClosed => {
                        "the server closed the connection without accepting it".to_string()
                    }
                    s => s.to_string(),
                };
                return Err(Failure::Connect(format!(
                    "cannot connect to {addr}: {} ({why})",
                    m.status()
                )));
            }
            Ok(())
        })?;
        if reply.opcode() != OpCode::HelloResponse {
            return Err(Failure::Connect(format!(
                "cannot connect to {addr}: the server answered the HelloRequest with {:?}",
                reply.opcode()
            )));
        }
        Ok(session)
    }

    /// The address this session is connected to.
    pub(crate) fn addr(&self) -> &Address {
        &self.addr
    }

    /// A cleared message for this channel with `opcode`.
    pub(crate) fn message(&self, opcode: OpCode) -> Result<Message, Failure> {
        let mut m = new_message(&self.engine)?;
        m.header.channel_number = self.channel;
        m.header.proto.opcode = opcode;
        Ok(m)
    }

    /// Posts `msg`; returns its message_id.
    pub(crate) fn post(&self, msg: Message) -> Result<u64, Failure> {
        match self.group.post(msg) {
            Ok(h) => Ok(h.message_id),
            Err(e) => Err(Failure::Other(format!(
                "connection to {} lost (post rejected: {})",
                self.addr, e.error
            ))),
        }
    }

    /// Waits for the next application message, skipping the engine's
    /// informational reports (pool_empty, receiver_update). Any other message
    /// from the engine is a lost connection.
    pub(crate) fn wait_reply(&self, what: &str) -> Result<Message, Failure> {
        let addr = &self.addr;
        self.wait(what, |m| {
            if m.is_from_engine() {
                return Err(Failure::Other(format!(
                    "connection to {addr} lost while waiting for {what}: {}",
                    m.status()
                )));
            }
            Ok(())
        })
    }

    /// Waits for a response to `id`.
    pub(crate) fn wait_response(&self, id: u64) -> Result<Message, Failure> {
        let m = self.wait_reply("a Response")?;
        if m.opcode() != OpCode::Response || m.header.message_id != id {
            return Err(Failure::Other(format!(
                "unexpected reply from {}: {:?} with message_id {} (expected the Response to {id})",
                self.addr,
                m.opcode(),
                m.header.message_id
            )));
        }
        Ok(m)
    }

    /// Closes gracefully: ByeRequest, then waits for the channel_closed report.
    /// Everything posted before has reached the peer when this returns `Ok`.
    pub(crate) fn close(self) -> Result<(), Failure> {
        let bye = self.message(OpCode::ByeRequest)?;
        self.post(bye)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.group.wait_receive(Some(left))?.ok_or_else(|| {
                Failure::Timeout(format!(
                    "{} did not finish the Bye handshake within {:?}",
                    self.addr, self.timeout
                ))
            })?;
            if m.is_from_engine() && m.channel_number() == self.channel {
                match m.status() {
                    Status::ChannelClosed => return Ok(()),
                    Status::PoolEmpty | Status::ReceiverUpdate => {}
                    s => {
                        return Err(Failure::Other(format!(
                            "closing the connection to {} failed: {s}",
                            self.addr
                        )));
                    }
                }
            }
        }
    }

    /// Waits for the next message that is not an informational report;
    /// `check` decides whether it is acceptable.
    fn wait(
        &self,
        what: &str,
        check: impl Fn(&Message) -> Result<(), Failure>,
    ) -> Result<Message, Failure> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.group.wait_receive(Some(left))?.ok_or_else(|| {
                Failure::Timeout(format!(
                    "no answer from {}: waited {:?} for {what}",
                    self.addr, self.timeout
                ))
            })?;
            if m.is_from_engine()
                && matches!(m.status(), Status::PoolEmpty | Status::ReceiverUpdate)
            {
                continue;
            }
            check(&m)?;
            return Ok(m);
        }
    }
}

/// A message from the engine's pool (or a new one when the pool is empty).
pub(crate) fn new_message(engine: &Engine) -> Result<Message, Failure> {
    Ok(engine.get(Allocation::Always)?.unwrap_or_else(Message::new))
}
