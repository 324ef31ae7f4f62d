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
//!
//! # Example: a server and a client in one engine
//!
//! ```
//! use std::time::Duration;
//! use tofu::{Address, Allocation, Engine, OpCode, Options, Status};
//!
//! let t = Some(Duration::from_secs(5));
//! let engine = Engine::new(Options::default())?;
//! let server = engine.create_group()?;
//! let client = engine.create_group()?;
//! let port = tofu::testing::free_tcp_port().unwrap();
//!
//! // Listen.
//! let mut welcome = engine.get(Allocation::Always)?.unwrap();
//! Address::tcp_server("127.0.0.1", port).format(&mut welcome)?;
//! server.post(welcome)?;
//! assert_eq!(server.wait_receive(t)?.unwrap().opcode(), OpCode::WelcomeResponse);
//!
//! // Connect; the server accepts by answering the HelloRequest.
//! let mut hello = engine.get(Allocation::Always)?.unwrap();
//! Address::tcp_client("127.0.0.1", port).format(&mut hello)?;
//! let ch = client.post(hello)?.channel_number;
//! let mut req = server.wait_receive(t)?.unwrap();
//! assert_eq!(req.opcode(), OpCode::HelloRequest);
//! req.header.proto.opcode = OpCode::HelloResponse;
//! server.post(req)?;
//! assert_eq!(client.wait_receive(t)?.unwrap().opcode(), OpCode::HelloResponse);
//!
//! // A request and its echo.
//! let mut ping = engine.get(Allocation::Always)?.unwrap();
//! ping.header.channel_number = ch;
//! ping.body.extend_from_slice(b"ping");
//! client.post(ping)?;
//! let mut got = server.wait_receive(t)?.unwrap();
//! got.header.proto.opcode = OpCode::Response;
//! server.post(got)?;
//! let pong = client.wait_receive(t)?.unwrap();
//! assert_eq!((pong.opcode(), pong.body.as_slice()), (OpCode::Response, &b"ping"[..]));
//!
//! // Abort the channel: the ByeSignal comes back, then the channel_closed report.
//! let mut bye = engine.get(Allocation::Always)?.unwrap();
//! bye.header.channel_number = ch;
//! bye.header.proto.opcode = OpCode::ByeSignal;
//! client.post(bye)?;
//! assert_eq!(client.wait_receive(t)?.unwrap().status(), Status::ChannelClosed);
//! let report = client.wait_receive(t)?.unwrap();
//! assert!(report.is_from_engine() && report.status() == Status::ChannelClosed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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

/// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
