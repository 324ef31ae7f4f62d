//! # tofu
//!
//! Asynchronous, message-based, peer-to-peer messaging — the Rust implementation of
//! the Zig library *tofu*, wire-compatible with it.
//!
//! An application never touches sockets. It fills [`Message`]s and
//! [`post`](ChannelGroup::post)s them to a [`ChannelGroup`]; one I/O thread per
//! [`Engine`] does all socket work and hands back what arrives — including its own
//! reports (channel closed, pool empty, connect failed) — as messages from
//! [`wait_receive`](ChannelGroup::wait_receive).
//!
//! * Open a listener with a `WelcomeRequest` carrying `~listen_on`, a connection
//!   with a `HelloRequest` carrying `~connect_to` ([`Address::format`] fills both).
//! * The server accepts by posting a `HelloResponse` on the new channel (or
//!   rejects with `ByeSignal`); then both peers exchange Request, Response and
//!   Signal messages, in order, per channel.
//! * Close gracefully with `ByeRequest`/`ByeResponse`, or abort with `ByeSignal`.
//! * The engine's bounded message [`Pool`] is the backpressure: when it is empty
//!   the engine stops reading until messages come back.
//! * Nothing posted is silently lost: every message is either written to the
//!   socket or comes back with `origin = Engine` and a non-zero [`Status`].
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod address;
mod engine;
mod error;
mod message;
mod sys;
pub mod testing;
pub mod wire;

pub use address::Address;
pub use engine::{
    ChannelGroup, DEFAULT_INITIAL_POOL_MSGS, DEFAULT_MAX_POOL_MSGS, Engine, Options, Stats,
};
pub use error::{Error, PostError, Status};
pub use message::{
    Allocation, BinaryHeader, ENGINE_CHANNEL, MAX_SECTION_LEN, Message, MessageKind, More, OpCode,
    Origin, Pool, ProtoFields, Role, TextHeaders, TextHeadersIter, next_message_id,
};
