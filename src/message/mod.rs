//! The message model (SPEC §2): [`Message`], [`BinaryHeader`], [`ProtoFields`],
//! [`OpCode`], [`Origin`], [`More`], plus [`TextHeaders`] and the message [`Pool`].

mod headers;
mod pool;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

pub use headers::{Iter as TextHeadersIter, MAX_SECTION_LEN, TextHeaders};
pub(crate) use pool::PoolRef;
pub use pool::{Allocation, Pool};

use crate::error::Status;

/// The operation a message carries (SPEC §2.2). Raw values 10–15 are invalid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// Asks for something (regular, request role).
    #[default]
    Request = 0,
    /// Answers a Request with the same message_id (regular, response role).
    Response = 1,
    /// One-way notification (regular, signal role).
    Signal = 2,
    /// Client app: open a connection to the address in `~connect_to`.
    HelloRequest = 3,
    /// Server app: accept the connection.
    HelloResponse = 4,
    /// Either peer: graceful close, queued after pending sends.
    ByeRequest = 5,
    /// Acknowledges a ByeRequest.
    ByeResponse = 6,
    /// App → own engine: abort the channel now. Never travels.
    ByeSignal = 7,
    /// Server app → own engine: start listening on `~listen_on`. Never travels.
    WelcomeRequest = 8,
    /// Engine → server app: the listener is ready (or failed). Never travels.
    WelcomeResponse = 9,
}

/// The kind of operation: see [`OpCode::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Request, Response, Signal.
    Regular,
    /// HelloRequest, HelloResponse.
    Hello,
    /// ByeRequest, ByeResponse, ByeSignal.
    Bye,
    /// WelcomeRequest, WelcomeResponse.
    Welcome,
}

/// The role of an operation: see [`OpCode::role`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `*Request`.
    Request,
    /// `*Response`.
    Response,
    /// `Signal`, `ByeSignal`.
    Signal,
}

impl OpCode {
    /// The opcode for a raw 4-bit value, `None` for 10–15 (and anything larger).
    pub const fn from_raw(raw: u8) -> Option<OpCode> {
        Some(match raw {
            0 => OpCode::Request,
            1 => OpCode::Response,
            2 => OpCode::Signal,
            3 => OpCode::HelloRequest,
            4 => OpCode::HelloResponse,
            5 => OpCode::ByeRequest,
            6 => OpCode::ByeResponse,
            7 => OpCode::ByeSignal,
            8 => OpCode::WelcomeRequest,
            9 => OpCode::WelcomeResponse,
            _ => return None,
        })
    }

    /// The raw value.
    pub const fn raw(self) -> u8 {
        self as u8
    }

    /// Regular, hello, bye or welcome.
    pub const fn kind(self) -> MessageKind {
        match self {
            OpCode::Request | OpCode::Response | OpCode::Signal => MessageKind::Regular,
            OpCode::HelloRequest | OpCode::HelloResponse => MessageKind::Hello,
            OpCode::ByeRequest | OpCode::ByeResponse | OpCode::ByeSignal => MessageKind::Bye,
            OpCode::WelcomeRequest | OpCode::WelcomeResponse => MessageKind::Welcome,
        }
    }

    /// Request, response or signal.
    pub const fn role(self) -> Role {
        match self {
            OpCode::Request
            | OpCode::HelloRequest
            | OpCode::ByeRequest
            | OpCode::WelcomeRequest => Role::Request,
            OpCode::Response
            | OpCode::HelloResponse
            | OpCode::ByeResponse
            | OpCode::WelcomeResponse => Role::Response,
            OpCode::Signal | OpCode::ByeSignal => Role::Signal,
        }
    }

    /// `true` for Request, Response and Signal: the only opcodes that may set `more`.
    pub const fn is_regular(self) -> bool {
        matches!(self.kind(), MessageKind::Regular)
    }

    /// `true` when this engine writes messages with this opcode on the wire
    /// (all but ByeSignal, WelcomeRequest and WelcomeResponse).
    ///
    /// A ByeSignal is never written by this engine (posting one aborts the
    /// channel locally), but one may *arrive*: the original tofu writes it when
    /// its application rejects a HelloRequest or aborts a channel, and it is
    /// delivered as the peer's abort (SPEC §3).
    pub const fn travels(self) -> bool {
        !matches!(
            self,
            OpCode::ByeSignal | OpCode::WelcomeRequest | OpCode::WelcomeResponse
        )
    }
}

/// Who wrote a message (SPEC §2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Origin {
    /// Written by an application, local or remote.
    #[default]
    Application = 0,
    /// A report or a returned message from the local engine.
    Engine = 1,
}

/// Whether more messages with the same message_id follow (streaming).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum More {
    /// The last (or only) message.
    #[default]
    Last = 0,
    /// More messages with the same message_id follow.
    More = 1,
}

/// The text header of a `channel_closed` report that says why the channel
/// ended (SPEC §5.6).
const CAUSE_HEADER: &str = "~cause";

/// The protocol bits of the binary header: opcode, origin, more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProtoFields {
    /// The operation.
    pub opcode: OpCode,
    /// Application or engine.
    pub origin: Origin,
    /// Streaming flag; only on regular messages.
    pub more: More,
}

/// The fixed part of every message (SPEC §2.1); 16 bytes on the wire with the two
/// lengths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BinaryHeader {
    /// The local channel number (0 = not yet assigned, only when opening).
    pub channel_number: u16,
    /// Opcode, origin, more.
    pub proto: ProtoFields,
    /// 0 = success, otherwise a [`Status`] code.
    pub status: u8,
    /// Correlation id; 0 when posted means "assign the next one".
    pub message_id: u64,
}

/// The channel number reserved for the engine.
pub const ENGINE_CHANNEL: u16 = u16::MAX;

static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(1);

/// The next value of the process-wide message_id counter (starts at 1).
pub fn next_message_id() -> u64 {
    NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed)
}

/// A tofu message: binary header, text headers, body.
///
/// A message taken from an engine (or a [`Pool`]) goes back to that pool when it is
/// dropped; one made with [`Message::new`] is simply freed, unless adopted with
/// `put`.
///
/// # Examples
///
/// ```
/// use tofu::{Message, OpCode};
///
/// let mut msg = Message::new();
/// msg.header.proto.opcode = OpCode::Signal;
/// msg.text_headers.append("topic", "weather")?;
/// msg.body.extend_from_slice(b"sunny");
/// assert!(msg.is_from_application());
/// # Ok::<(), tofu::Error>(())
/// ```
pub struct Message {
    /// The binary header.
    pub header: BinaryHeader,
    /// The text headers (at most 65535 bytes).
    pub text_headers: TextHeaders,
    /// The body (at most 65535 bytes to be posted).
    pub body: Vec<u8>,
    pool: Option<PoolRef>,
}

impl Message {
    /// A cleared standalone message: default header, no text headers, empty body.
    pub const fn new() -> Message {
        Message {
            header: BinaryHeader {
                channel_number: 0,
                proto: ProtoFields {
                    opcode: OpCode::Request,
                    origin: Origin::Application,
                    more: More::Last,
                },
                status: 0,
                message_id: 0,
            },
            text_headers: TextHeaders::new(),
            body: Vec::new(),
            pool: None,
        }
    }

    pub(crate) fn from_parts(text: Vec<u8>, body: Vec<u8>, pool: Option<PoolRef>) -> Message {
        Message {
            header: BinaryHeader::default(),
            text_headers: TextHeaders::from_buf(text),
            body,
            pool,
        }
    }

    /// An engine report (SPEC §5.6): a Signal from the engine about `channel_number`.
    pub(crate) fn report(channel_number: u16, status: Status, message_id: u64) -> Message {
        let mut m = Message::new();
        m.header.channel_number = channel_number;
        m.header.proto.opcode = OpCode::Signal;
        m.header.proto.origin = Origin::Engine;
        m.header.status = status as u8;
        m.header.message_id = message_id;
        m
    }

    /// The `channel_closed` report (SPEC §5.6), with `~cause` when the
    /// channel ended by a failure, a timeout or the peer's abort.
    pub(crate) fn closed_report(
        channel_number: u16,
        message_id: u64,
        cause: Option<Status>,
    ) -> Message {
        let mut m = Message::report(channel_number, Status::ChannelClosed, message_id);
        if let Some(cause) = cause {
            let _ = m.text_headers.append(CAUSE_HEADER, cause.name());
        }
        m
    }

    /// How the channel this `channel_closed` report is about ended: the
    /// failure, timeout or abort by the peer that closed it, or `None` when
    /// it ended in order (the Bye handshake completed, this side's
    /// ByeSignal, group destroy, shutdown) — and for every message that is
    /// not a `channel_closed` report (SPEC §5.6).
    ///
    /// ```
    /// # use tofu::{Message, Status};
    /// let msg = Message::new();
    /// assert_eq!(msg.close_cause(), None, "not a report");
    /// ```
    pub fn close_cause(&self) -> Option<Status> {
        if !self.is_from_engine()
            || self.status() != Status::ChannelClosed
            || self.opcode() != OpCode::Signal
        {
            return None;
        }
        let name = self.text_headers.get(CAUSE_HEADER)?;
        (1..=31u8)
            .map(Status::from_raw)
            .find(|s| s.name() == name)
            .or(Some(Status::UnknownError))
    }

    /// `true` when the local engine wrote or returned this message.
    pub fn is_from_engine(&self) -> bool {
        self.header.proto.origin == Origin::Engine
    }

    /// `true` when an application (local or remote) wrote this message.
    pub fn is_from_application(&self) -> bool {
        self.header.proto.origin == Origin::Application
    }

    /// `true` when more messages with the same message_id follow.
    pub fn has_more(&self) -> bool {
        self.header.proto.more == More::More
    }

    /// The status byte as a [`Status`].
    pub fn status(&self) -> Status {
        Status::from_raw(self.header.status)
    }

    /// The opcode.
    pub fn opcode(&self) -> OpCode {
        self.header.proto.opcode
    }

    /// The channel number.
    pub fn channel_number(&self) -> u16 {
        self.header.channel_number
    }

    /// Resets header, text headers and body, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.header = BinaryHeader::default();
        self.text_headers.clear();
        self.body.clear();
    }

    /// `true` when this message returns to a pool when dropped.
    pub fn is_pooled(&self) -> bool {
        self.pool.is_some()
    }

    pub(crate) fn pool(&self) -> Option<&PoolRef> {
        self.pool.as_ref()
    }

    /// Detaches the message from its pool, handing over its reference.
    pub(crate) fn take_pool(&mut self) -> Option<PoolRef> {
        self.pool.take()
    }

    pub(crate) fn set_pool(&mut self, pool: Option<PoolRef>) {
        self.pool = pool;
    }
}

impl Default for Message {
    fn default() -> Message {
        Message::new()
    }
}

impl Clone for Message {
    /// A copy with the same content; it returns to the same pool (if any) when
    /// dropped.
    fn clone(&self) -> Message {
        if let Some(pool) = &self.pool {
            // The copy's buffers join the pool when dropped: count them as the
            // pool's, or `Pool::outstanding` drifts.
            pool.adopt_clone();
        }
        Message {
            header: self.header,
            text_headers: self.text_headers.clone(),
            body: self.body.clone(),
            pool: self.pool.clone(),
        }
    }
}

impl PartialEq for Message {
    /// Compares content (header, text headers, body), not pool membership.
    fn eq(&self, other: &Message) -> bool {
        self.header == other.header
            && self.text_headers == other.text_headers
            && self.body == other.body
    }
}

impl Eq for Message {}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("header", &self.header)
            .field("text_headers", &self.text_headers)
            .field("body_len", &self.body.len())
            .field("pooled", &self.pool.is_some())
            .finish()
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.recycle(self.text_headers.take_buf(), std::mem::take(&mut self.body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_raw_round_trip() {
        for raw in 0..10u8 {
            assert_eq!(OpCode::from_raw(raw).unwrap().raw(), raw);
        }
        for raw in 10..=255u8 {
            assert_eq!(OpCode::from_raw(raw), None);
        }
    }

    #[test]
    fn kinds_and_roles() {
        assert!(OpCode::Signal.is_regular());
        assert!(!OpCode::HelloRequest.is_regular());
        assert_eq!(OpCode::ByeSignal.role(), Role::Signal);
        assert_eq!(OpCode::WelcomeResponse.role(), Role::Response);
        assert_eq!(OpCode::ByeResponse.kind(), MessageKind::Bye);
        assert!(!OpCode::ByeSignal.travels());
        assert!(!OpCode::WelcomeRequest.travels());
        assert!(OpCode::ByeRequest.travels());
    }

    #[test]
    fn defaults() {
        let m = Message::new();
        assert_eq!(m.header, BinaryHeader::default());
        assert_eq!(m.opcode(), OpCode::Request);
        assert!(m.is_from_application());
        assert!(!m.has_more());
        assert_eq!(m.status(), Status::Success);
        assert!(!m.is_pooled());
    }

    #[test]
    fn message_ids_increase() {
        let a = next_message_id();
        let b = next_message_id();
        assert!(a >= 1 && b > a);
    }
}
