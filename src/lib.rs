//! # tofu
//!
//! Asynchronous, message-based, peer-to-peer messaging — the Rust implementation of
//! the Zig library *tofu*, wire-compatible with it.
//!
//! An application never touches sockets. It fills [`Message`]s and
//! [`post`](ChannelGroup::post)s them to a [`ChannelGroup`]; one I/O thread per
//! [`Engine`] does all socket work and hands back what arrives — including its own
//! reports (channel closed, pool empty, connect failed) — as messages from
//! [`wait_receive`](ChannelGroup::wait_receive). Addresses, commands, replies and
//! failures all travel as messages: *the message is the API*.
//!
//! This page is a short guide: [Concepts](#concepts), [a first server](#a-first-server),
//! [a first client](#a-first-client), [error handling](#error-handling),
//! [backpressure](#backpressure), [closing](#closing),
//! [reconnecting and liveness](#reconnecting-and-liveness),
//! [talking to the original](#talking-to-the-original), then the
//! [runnable examples](#examples).
//!
//! # Concepts
//!
//! * **Engine** ([`Engine`]): one I/O thread, the message pool and the channel
//!   table. A cheap `Clone` handle; [`Engine::shutdown`] or dropping the last
//!   handle stops it. Engines share nothing; a process may run several. A
//!   thread blocked in [`wait_receive`](ChannelGroup::wait_receive) runs the
//!   engine's event loop itself while no other thread does, and a lone
//!   [`post`](ChannelGroup::post) is written by the posting thread: the I/O
//!   thread does the rest, so a round trip wakes no engine thread at all.
//! * **Pool** ([`Pool`]): pre-allocated messages that are reused.
//!   [`Engine::get`] takes one; a message goes back to its pool when dropped. The
//!   engine reads from sockets only into pool messages (the pool grows from
//!   `initial_pool_msgs` up to `max_pool_msgs` for that), which bounds memory
//!   ([backpressure](#backpressure)).
//! * **Channel group** ([`ChannelGroup`]): your handle — [`post`](ChannelGroup::post)
//!   messages in, [`wait_receive`](ChannelGroup::wait_receive) messages out. It is
//!   `Send + Sync`. Every channel belongs to one group: the one that opened it or,
//!   for an accepted connection, the listener's group.
//! * **Channel**: a virtual connection with a 16-bit number, either a *listener* or
//!   an *I/O channel* (a connected stream). You open one by posting a
//!   `WelcomeRequest` (listen) or `HelloRequest` (connect) on channel 0; `post`
//!   returns the number the engine assigned. Numbers are local to the engine (the
//!   two ends of a connection usually differ) and must be forgotten once their
//!   `channel_closed` report arrives. [`ENGINE_CHANNEL`] (65535) is the engine's own.
//! * **Message** ([`Message`]): a fixed [`BinaryHeader`] (`channel_number`;
//!   `proto` = opcode, origin, more; `status`; `message_id`), optional
//!   [`TextHeaders`] (`name:value` lines; names starting with `~` belong to the
//!   engine, such as `~connect_to` and `~listen_on`, which [`Address::format`]
//!   writes) and an optional body. Text headers and body are at most 65535 bytes
//!   each ([`MAX_SECTION_LEN`]).
//! * **Opcodes and roles** ([`OpCode`], [`OpCode::role`]): `Request`, `Response`
//!   and `Signal` are the *regular* messages peers exchange, in both directions,
//!   in order per channel. A Response answers the Request with the same
//!   `message_id` (post a Request with id 0 and the engine assigns one; `post`
//!   returns it); a Signal is one-way. [`More::More`] on a regular message says
//!   more messages with the same `message_id` follow (streaming); the last one
//!   has [`More::Last`]. `Hello*` open connections, `Bye*` close them, `Welcome*`
//!   open listeners; `Welcome*` never leave the local engine, and neither does
//!   your `ByeSignal` (a peer's may arrive: see [closing](#closing)).
//! * **Origin and status** ([`Origin`], [`Status`]): `Application` means an
//!   application wrote the message (you or the peer; `post` always sends status
//!   0). `Engine` means your engine wrote it — a *report* (a Signal about a
//!   channel, or a `receiver_update` wake-up, see [closing](#closing)) or one of
//!   your messages *given back* — and `status` says why. Check
//!   [`Message::is_from_engine`] first.
//!
//! # A first server
//!
//! Listen with a `WelcomeRequest` carrying `~listen_on`; the engine answers with a
//! `WelcomeResponse`. Connections then arrive as `HelloRequest`s on new channels;
//! accept one by posting a `HelloResponse` on its channel — typically the same
//! message with its opcode changed. Answering in place keeps the channel and the
//! `message_id`, which is what a Response needs.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tofu::{Address, Allocation, ChannelGroup, Engine, OpCode, Options, Status};
//!
//! /// Echoes every request until another thread calls `update_receiver(None)`.
//! fn serve(group: &ChannelGroup) -> Result<(), tofu::Error> {
//!     loop {
//!         let Some(mut msg) = group.wait_receive(None)? else { continue };
//!         if msg.is_from_engine() {
//!             match msg.status() {
//!                 Status::ReceiverUpdate => return Ok(()), // asked to stop
//!                 status => println!("channel {}: {status}", msg.channel_number()),
//!             }
//!             continue;
//!         }
//!         msg.header.proto.opcode = match msg.opcode() {
//!             OpCode::HelloRequest => OpCode::HelloResponse, // accept the connection
//!             OpCode::Request => OpCode::Response,           // same channel, same id
//!             OpCode::ByeRequest => OpCode::ByeResponse,     // agree to close
//!             _ => continue,                                 // signals, responses
//!         };
//!         if let Err(e) = group.post(msg) {
//!             // e.message is the message, given back; e.error says why.
//!             eprintln!("channel {}: {}", e.message.channel_number(), e.error);
//!         }
//!     }
//! }
//!
//! let engine = Engine::new(Options::default())?;
//! let group = Arc::new(engine.create_group()?);
//! let port = tofu::testing::free_tcp_port()?;
//! let mut welcome = engine.get(Allocation::Always)?.expect("Always gives a message");
//! Address::tcp_server("127.0.0.1", port).format(&mut welcome)?;
//! group.post(welcome)?;
//! let ready = group.wait_receive(Some(Duration::from_secs(5)))?.ok_or("timed out")?;
//! if ready.status() != Status::Success {
//!     return Err(format!("cannot listen: {}", ready.status()).into());
//! }
//!
//! let server = {
//!     let group = group.clone();
//!     std::thread::spawn(move || serve(&group))
//! };
//! # let t = Some(Duration::from_secs(5));
//! # let client_engine = Engine::new(Options::default())?;
//! # let client = client_engine.create_group()?;
//! # let mut hello = client_engine.get(Allocation::Always)?.unwrap();
//! # Address::tcp_client("127.0.0.1", port).format(&mut hello)?;
//! # let ch = client.post(hello)?.channel_number;
//! # assert_eq!(client.wait_receive(t)?.unwrap().opcode(), OpCode::HelloResponse);
//! # let mut req = client_engine.get(Allocation::Always)?.unwrap();
//! # req.header.channel_number = ch;
//! # req.body.extend_from_slice(b"hi");
//! # client.post(req)?;
//! # assert_eq!(client.wait_receive(t)?.unwrap().body, b"hi");
//! // ... serve clients; later, from any thread, stop the server:
//! group.update_receiver(None)?;
//! server.join().expect("server thread")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # A first client
//!
//! Connect with a `HelloRequest` carrying `~connect_to` on channel 0. The engine
//! connects in the background and sends the HelloRequest as the first frame; the
//! server's `HelloResponse` says the connection is accepted. Anything posted on
//! the channel before that is queued behind the HelloRequest, in order.
//! Bound every wait: `wait_receive(Some(timeout))` returns `Ok(None)` when it
//! expires.
//!
//! ```
//! use std::time::Duration;
//! use tofu::{Address, Allocation, Engine, OpCode, Options, Status};
//! # let server_engine = Engine::new(Options::default())?;
//! # let server = server_engine.create_group()?;
//! # let port = tofu::testing::free_tcp_port()?;
//! # let mut welcome = server_engine.get(Allocation::Always)?.unwrap();
//! # Address::tcp_server("127.0.0.1", port).format(&mut welcome)?;
//! # server.post(welcome)?;
//! # let ready = server.wait_receive(Some(Duration::from_secs(5)))?.unwrap();
//! # assert_eq!(ready.status(), Status::Success);
//! # let echo = std::thread::spawn(move || -> Result<(), tofu::Error> {
//! #     while let Some(mut m) = server.wait_receive(Some(Duration::from_secs(5)))? {
//! #         if m.is_from_engine() {
//! #             if m.status() == Status::ChannelClosed { break }
//! #             continue;
//! #         }
//! #         m.header.proto.opcode = match m.opcode() {
//! #             OpCode::HelloRequest => OpCode::HelloResponse,
//! #             OpCode::Request => OpCode::Response,
//! #             OpCode::ByeRequest => OpCode::ByeResponse,
//! #             _ => continue,
//! #         };
//! #         server.post(m)?;
//! #     }
//! #     Ok(())
//! # });
//!
//! let t = Some(Duration::from_secs(5));
//! let engine = Engine::new(Options::default())?;
//! let group = engine.create_group()?;
//!
//! let mut hello = engine.get(Allocation::Always)?.expect("Always gives a message");
//! Address::tcp_client("127.0.0.1", port).format(&mut hello)?;
//! let ch = group.post(hello)?.channel_number;
//! let reply = group.wait_receive(t)?.ok_or("timed out")?;
//! if reply.is_from_engine() {
//!     return Err(format!("cannot connect: {}", reply.status()).into());
//! }
//! assert_eq!(reply.opcode(), OpCode::HelloResponse);
//!
//! // A Request (the default opcode); its Response carries the same message_id.
//! let mut req = engine.get(Allocation::Always)?.expect("Always gives a message");
//! req.header.channel_number = ch;
//! req.text_headers.append("op", "echo")?;
//! req.body.extend_from_slice(b"hello");
//! let id = group.post(req)?.message_id;
//! let resp = group.wait_receive(t)?.ok_or("timed out")?;
//! assert_eq!((resp.opcode(), resp.header.message_id), (OpCode::Response, id));
//! assert_eq!(resp.body, b"hello");
//!
//! // Close gracefully: the peer's ByeResponse, then the channel_closed report.
//! let mut bye = engine.get(Allocation::Always)?.expect("Always gives a message");
//! bye.header.channel_number = ch;
//! bye.header.proto.opcode = OpCode::ByeRequest;
//! group.post(bye)?;
//! assert_eq!(group.wait_receive(t)?.ok_or("timed out")?.opcode(), OpCode::ByeResponse);
//! let closed = group.wait_receive(t)?.ok_or("timed out")?;
//! assert!(closed.is_from_engine() && closed.status() == Status::ChannelClosed);
//! # echo.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Error handling
//!
//! Failures reach you in three ways, and nothing you post is silently lost:
//!
//! * **`post` rejects a message at once** with a [`PostError`]: the reason
//!   ([`Error`]) *and the message, given back* unchanged — fix and re-post it, or
//!   drop it. `?` turns a `PostError` into its `Error` (the message then returns
//!   to the pool).
//! * **Later failures come back as messages** with `origin = Engine` and a
//!   non-zero [`Status`]: a `HelloRequest` that could not connect returns with
//!   `connect_failed` (or `invalid_address`, `uds_path_not_found`), then the
//!   channel's `channel_closed` report; a `WelcomeRequest` that could not listen
//!   returns as a `WelcomeResponse` with `listen_failed` (or an address status);
//!   messages still queued when a channel dies return with the reason
//!   (`peer_disconnected`, `send_failed`, …), before its `channel_closed` report.
//!   Every posted message is either written to the socket or given back like this.
//! * **Calls return [`Error`]**: e.g. [`Error::ShutdownStarted`] once the engine
//!   has shut down. `Error` and `Status` convert both ways ([`Error::status`],
//!   [`Status::error`]).
//!
//! A non-zero status is not always a failure: `channel_closed` after your own
//! ByeRequest is the expected end. And since `post` always sends status 0,
//! application-level errors travel in the message itself (a text header, the body).
//!
//! ```
//! use std::time::Duration;
//! use tofu::{Address, Allocation, Engine, Error, OpCode, Options, PostError, Status};
//!
//! let t = Some(Duration::from_secs(5));
//! let engine = Engine::new(Options::default())?;
//! let group = engine.create_group()?;
//!
//! // Rejected by post: the reason and the message come back.
//! let mut msg = engine.get(Allocation::Always)?.expect("Always gives a message");
//! msg.body.extend_from_slice(b"precious");
//! let PostError { error, message } = group.post(msg).unwrap_err();
//! assert_eq!(error, Error::InvalidChannelNumber); // channel 0 is only for opening
//! assert_eq!(message.body, b"precious");
//!
//! // Accepted by post, failed later: the HelloRequest comes back, then the report.
//! let port = tofu::testing::free_tcp_port()?; // nobody listens there
//! let mut hello = engine.get(Allocation::Always)?.expect("Always gives a message");
//! Address::tcp_client("127.0.0.1", port).format(&mut hello)?;
//! let ch = group.post(hello)?.channel_number;
//! let back = group.wait_receive(t)?.ok_or("timed out")?;
//! assert!(back.is_from_engine());
//! assert_eq!((back.opcode(), back.status()), (OpCode::HelloRequest, Status::ConnectFailed));
//! assert_eq!(back.status().error(), Some(Error::ConnectFailed));
//! let report = group.wait_receive(t)?.ok_or("timed out")?;
//! assert!(report.is_from_engine());
//! assert_eq!((report.channel_number(), report.status()), (ch, Status::ChannelClosed));
//!
//! // After shutdown every call fails with ShutdownStarted.
//! engine.shutdown();
//! assert_eq!(group.wait_receive(t).unwrap_err(), Error::ShutdownStarted);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Backpressure
//!
//! Each engine's pool holds `initial_pool_msgs` messages at start and keeps at
//! most `max_pool_msgs` free ones ([`Options`]; defaults 16 and 64). The engine
//! reads from sockets only into messages it can take from the pool without
//! allocating — so every received message you still hold is one it cannot read
//! into. When the pool is empty the engine stops reading the sockets that need a
//! message, sends the groups concerned a `pool_empty` report, and resumes as soon
//! as messages come back (dropped, or given to [`Engine::put`]). Unread data
//! waits in the kernel, TCP flow control slows the sender, memory stays bounded,
//! and nothing is lost. [`Engine::stats`] counts these pauses
//! ([`Stats::pool_empty_events`]).
//!
//! For your own messages, [`Allocation::PoolOnly`] gives `None` when the pool is
//! empty — use it where you can wait or skip, so sending does not grow memory;
//! [`Allocation::Always`] never gives `None` (it allocates; the extra message joins
//! the pool on drop if there is room).
//!
//! Sending is bounded too: the bytes posted and not yet written are limited
//! per channel ([`Options::channel_send_limit`], 8 MiB) and in the whole
//! engine ([`Options::engine_send_limit`], 64 MiB). A post over a limit is
//! refused with [`Error::PoolEmpty`] and the message comes back in the
//! [`PostError`], untouched; [`ChannelGroup::post_timeout`] waits for room
//! instead (it sleeps until the engine has written or given back enough).
//! [`Stats::queued_bytes`] shows what waits.
//!
//! ```
//! # use std::time::Duration;
//! # use tofu::{Engine, Error, Message, Options};
//! # fn send_all(group: &tofu::ChannelGroup, ch: u16, batch: Vec<Message>) -> Result<(), Error> {
//! for mut m in batch {
//!     m.header.channel_number = ch;
//!     // Waits while the peer is slow; gives up (with the message) after 5 s.
//!     group
//!         .post_timeout(m, Duration::from_secs(5))
//!         .map_err(|e| e.error)?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ```
//! use std::time::Duration;
//! use tofu::{Address, Allocation, Engine, OpCode, Options, Status};
//!
//! let t = Some(Duration::from_secs(5));
//! let small = Options { initial_pool_msgs: 4, max_pool_msgs: 4, ..Options::default() };
//! let server_engine = Engine::new(small)?;
//!
//! // PoolOnly takes what the pool has; Always allocates when it is empty.
//! let all: Vec<_> = std::iter::from_fn(|| server_engine.get(Allocation::PoolOnly).ok()?).collect();
//! assert_eq!(all.len(), 4);
//! assert!(server_engine.get(Allocation::PoolOnly)?.is_none());
//! assert!(server_engine.get(Allocation::Always)?.is_some());
//! drop(all); // back to the pool
//!
//! # let server = server_engine.create_group()?;
//! # let port = tofu::testing::free_tcp_port()?;
//! # let mut welcome = server_engine.get(Allocation::Always)?.unwrap();
//! # Address::tcp_server("127.0.0.1", port).format(&mut welcome)?;
//! # server.post(welcome)?;
//! # assert_eq!(server.wait_receive(t)?.unwrap().status(), Status::Success);
//! # let client_engine = Engine::new(Options::default())?;
//! # let client = client_engine.create_group()?;
//! # let mut hello = client_engine.get(Allocation::Always)?.unwrap();
//! # Address::tcp_client("127.0.0.1", port).format(&mut hello)?;
//! # let ch = client.post(hello)?.channel_number;
//! # let mut accept = server.wait_receive(t)?.unwrap();
//! # accept.header.proto.opcode = OpCode::HelloResponse;
//! # server.post(accept)?;
//! # assert_eq!(client.wait_receive(t)?.unwrap().opcode(), OpCode::HelloResponse);
//! // A client sends 20 signals to this server (pool of 4)...
//! for i in 0..20u8 {
//!     let mut m = client_engine.get(Allocation::Always)?.expect("Always gives a message");
//!     m.header.channel_number = ch;
//!     m.header.proto.opcode = OpCode::Signal;
//!     m.body.push(i);
//!     client.post(m)?;
//! }
//! // ...and the server holds what it receives: reading pauses, it is told so.
//! let mut held = Vec::new();
//! loop {
//!     let m = server.wait_receive(t)?.ok_or("timed out")?;
//!     if m.is_from_engine() && m.status() == Status::PoolEmpty {
//!         break;
//!     }
//!     held.push(m);
//! }
//! assert!(held.len() <= 4);
//! // Letting them go lets the engine read on; nothing was lost.
//! let mut received = held.len();
//! held.clear();
//! while received < 20 {
//!     let m = server.wait_receive(t)?.ok_or("timed out")?;
//!     if m.is_from_application() {
//!         assert_eq!(m.body, [received as u8]); // in order
//!         received += 1;
//!     }
//! }
//! assert!(server_engine.stats().pool_empty_events >= 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Closing
//!
//! * **Graceful** — post a `ByeRequest`. It is queued behind everything posted
//!   before it, and the peer receives all of that first. The peer answers with a
//!   `ByeResponse`; then both groups get the `channel_closed` report (status
//!   `channel_closed`: the expected end, not a failure). Post nothing more on the
//!   channel after the ByeRequest.
//! * **Abort** — post a `ByeSignal`: handled at once, ahead of anything queued.
//!   The ByeSignal comes back (`origin = Engine`, status `channel_closed`), then
//!   every message still queued (same status), then the `channel_closed` report.
//!   The peer sees a disconnect. A ByeSignal also closes a listener, and on the
//!   server side rejects a `HelloRequest`.
//! * **The peer's abort** — a peer running the original Zig tofu aborts (or
//!   rejects your `HelloRequest`) by *writing* a ByeSignal. You receive it
//!   (`origin = Application`, opcode `ByeSignal`, the peer's `message_id` and
//!   text headers — a rejected HelloRequest comes back this way), then your
//!   queued messages (status `peer_disconnected`) and the `channel_closed`
//!   report with `~cause:peer_disconnected`; the connection is reset.
//! * **Everything** — dropping a group (or [`ChannelGroup::destroy`]) closes its
//!   channels abortively; [`Engine::shutdown`] closes all sockets and wakes every
//!   blocked `wait_receive` with [`Error::ShutdownStarted`].
//! * **Stopping a thread** blocked in `wait_receive(None)`: from another thread,
//!   [`ChannelGroup::update_receiver`]`(None)` queues a Signal with status
//!   `receiver_update` and `origin = Engine`; `update_receiver(Some(msg))` queues
//!   your `msg` (status `receiver_update`, `origin = Application`) to pass it work.
//!   Both arrive in order with everything else the group receives.
//!
//! ```
//! use std::time::Duration;
//! use tofu::{Address, Allocation, Engine, OpCode, Options, Status};
//!
//! let t = Some(Duration::from_secs(5));
//! let engine = Engine::new(Options::default())?;
//! let (server, client) = (engine.create_group()?, engine.create_group()?);
//! # let port = tofu::testing::free_tcp_port()?;
//! # let mut welcome = engine.get(Allocation::Always)?.unwrap();
//! # Address::tcp_server("127.0.0.1", port).format(&mut welcome)?;
//! # server.post(welcome)?;
//! # assert_eq!(server.wait_receive(t)?.unwrap().status(), Status::Success);
//! # let connect = || -> Result<(u16, u16), Box<dyn std::error::Error>> {
//! #     let mut hello = engine.get(Allocation::Always)?.unwrap();
//! #     Address::tcp_client("127.0.0.1", port).format(&mut hello)?;
//! #     let cch = client.post(hello)?.channel_number;
//! #     let mut accept = server.wait_receive(t)?.unwrap();
//! #     let sch = accept.channel_number();
//! #     accept.header.proto.opcode = OpCode::HelloResponse;
//! #     server.post(accept)?;
//! #     assert_eq!(client.wait_receive(t)?.unwrap().opcode(), OpCode::HelloResponse);
//! #     Ok((cch, sch))
//! # };
//! let msg = |ch: u16, op: OpCode| -> Result<tofu::Message, tofu::Error> {
//!     let mut m = engine.get(Allocation::Always)?.expect("Always gives a message");
//!     m.header.channel_number = ch;
//!     m.header.proto.opcode = op;
//!     Ok(m)
//! };
//!
//! // Graceful: a last Signal, then ByeRequest; the peer gets both, in order.
//! let (ch, peer) = connect()?;
//! client.post(msg(ch, OpCode::Signal)?)?;
//! client.post(msg(ch, OpCode::ByeRequest)?)?;
//! assert_eq!(server.wait_receive(t)?.ok_or("timed out")?.opcode(), OpCode::Signal);
//! let mut bye = server.wait_receive(t)?.ok_or("timed out")?;
//! assert_eq!(bye.opcode(), OpCode::ByeRequest);
//! bye.header.proto.opcode = OpCode::ByeResponse;
//! server.post(bye)?;
//! assert_eq!(client.wait_receive(t)?.ok_or("timed out")?.opcode(), OpCode::ByeResponse);
//! for (group, ch) in [(&client, ch), (&server, peer)] {
//!     let report = group.wait_receive(t)?.ok_or("timed out")?;
//!     assert!(report.is_from_engine());
//!     assert_eq!((report.channel_number(), report.status()), (ch, Status::ChannelClosed));
//!     assert_eq!(report.close_cause(), None, "ended in order");
//! }
//!
//! // Abort: the ByeSignal comes back, then the report; the peer sees a disconnect.
//! let (ch, peer) = connect()?;
//! client.post(msg(ch, OpCode::ByeSignal)?)?;
//! let back = client.wait_receive(t)?.ok_or("timed out")?;
//! assert_eq!((back.opcode(), back.status()), (OpCode::ByeSignal, Status::ChannelClosed));
//! assert_eq!(client.wait_receive(t)?.ok_or("timed out")?.status(), Status::ChannelClosed);
//! let report = server.wait_receive(t)?.ok_or("timed out")?;
//! assert_eq!((report.channel_number(), report.status()), (peer, Status::ChannelClosed));
//! assert_eq!(report.close_cause(), Some(Status::PeerDisconnected), "the peer aborted");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## How did my channel end?
//!
//! The `channel_closed` report is always the last message about a channel, and
//! [`Message::close_cause`] says how it ended:
//!
//! * `None` — in order: the Bye handshake completed (either side asked), your
//!   own `ByeSignal`, or your group was destroyed or the engine shut down.
//! * `Some(status)` — by a failure, a timeout or the peer's abort:
//!   `peer_disconnected` (the peer vanished, reset or sent a ByeSignal, also
//!   after your `ByeRequest` but before its answer: a crash is not a goodbye),
//!   `invalid_message` (it broke the framing), `connect_failed`,
//!   `send_failed` / `recv_failed`, `communication_failed` (your ByeRequest
//!   went unanswered for [`Options::bye_timeout`], or nothing arrived for
//!   [`Options::idle_timeout`]).
//!
//! Messages still queued come back before the report with the same status.
//! Accepted connections that never send their HelloRequest (within
//! [`Options::hello_timeout`]) are closed without a word to the application
//! and counted in [`Stats::hello_timeouts`].
//!
//! ```
//! use tofu::{Message, Status};
//!
//! fn on_engine_message(msg: &Message) {
//!     if msg.status() != Status::ChannelClosed || !msg.is_from_engine() {
//!         return;
//!     }
//!     match msg.close_cause() {
//!         None => println!("channel {} finished", msg.channel_number()),
//!         Some(cause) => println!("channel {} failed: {cause}", msg.channel_number()),
//!     }
//! }
//! # on_engine_message(&Message::new());
//! ```
//!
//! # Reconnecting and liveness
//!
//! The engine never reconnects on its own: a channel that closed is gone,
//! and its number must be forgotten. Two helpers, built on the public API,
//! keep a conversation going; neither has a thread. Your receive loop offers
//! them every message (`handle`, which answers [`Handled::Mine`] or gives
//! the message back as [`Handled::NotMine`]), waits no longer than their
//! `timeout()`, and calls their `poll()` after every wait. Several helpers
//! can share one group and one loop.
//!
//! * [`Reconnect`] keeps one logical connection to an address: it connects,
//!   and after a failure or the server's close connects again with
//!   exponential backoff and jitter ([`ReconnectOptions`]: 100 ms doubling
//!   to 10 s, each wait drawn from its upper half, a 10 s handshake
//!   timeout, no attempt limit by default), sending the same HelloRequest
//!   headers each time. It reports every attempt, every connection with its
//!   new channel number, every disconnection and giving up as
//!   [`ReconnectEvent`] messages in the group. [`Reconnect::post`] sends on
//!   the current connection and, while there is none, hands your message
//!   straight back (`ChannelClosed`) — nothing is queued without bound, and
//!   what was on a broken connection comes back from the engine as usual.
//!   What to send again after a reconnection (a request that was never
//!   answered) is the application's decision. [`Reconnect::wait_receive`]
//!   runs the loop for a client with one connection.
//! * [`Heartbeat`] posts a Signal with a header you name every interval on
//!   the channels you give it, and swallows the peer's. It is an ordinary
//!   Signal, so the original Zig tofu can be either peer.
//! * [`Options::idle_timeout`] (off by default) closes a channel from which
//!   nothing arrived for that long, with `~cause:communication_failed`: set
//!   it to a few heartbeat intervals on the side that must notice a hung
//!   peer or a cut link — no socket event reports either. With a
//!   `Reconnect`, that closure is followed by the next attempt.
//! * [`Options::tcp_keepalive`] (off by default, as in the original) lets
//!   the kernel probe an idle TCP connection; it needs no cooperation from
//!   the peer but takes minutes with the kernel's default probe counts.
//!
//! ```
//! use std::time::Duration;
//! use tofu::{Address, Engine, Handled, Heartbeat, Options, Reconnect, ReconnectEvent};
//!
//! let engine = Engine::new(Options {
//!     idle_timeout: Some(Duration::from_secs(3)), // the server beats every second
//!     ..Options::default()
//! })?;
//! let group = engine.create_group()?;
//! # let port = tofu::testing::free_tcp_port()?; // nothing listens: attempts fail
//! let address = Address::tcp_client("127.0.0.1", port);
//! let mut link = Reconnect::new(&group, address, tofu::TextHeaders::new(), Default::default())?;
//! let mut beats = Heartbeat::new(&group, "hb", Duration::from_secs(1))?;
//!
//! # let forever = 0..5; // (the doctest stops; nothing listens)
//! # #[cfg(any())]
//! let forever = 0..;
//! for _ in forever {
//!     let wait = [link.timeout(), beats.timeout()].into_iter().flatten().min();
//! #   let wait = wait.map(|w| w.min(Duration::from_millis(50)));
//!     let received = group.wait_receive(wait)?;
//!     link.poll()?;
//!     beats.poll()?;
//!     let Some(msg) = received else { continue };
//!     let Handled::NotMine(msg) = link.handle(msg) else { continue };
//!     let Handled::NotMine(msg) = beats.handle(msg) else { continue };
//!     match link.event(&msg) {
//!         Some(ReconnectEvent::Connected { channel, .. }) => beats.add(channel),
//!         Some(ReconnectEvent::GaveUp { .. }) => break,
//!         Some(event) => println!("{event:?}"),
//!         None => { /* the application's messages */ }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Talking to the original
//!
//! This crate speaks the wire protocol of the original Zig tofu since its
//! v0.0.10, when its proto byte took its current layout (opcode in bits 0–3,
//! origin, more, two engine-internal bits sent as 0): either side may be
//! either implementation, over TCP or Unix-domain sockets. The statuses
//! (0–31) and opcodes (0–9) are the original's numbers. `tests/original_edges.rs`
//! replays captures of the original at the edges of the protocol
//! (`tests/data/original-edges/`). What to know:
//!
//! * **Its rejections and aborts arrive as messages.** The original's
//!   documented way to reject a HelloRequest or abort a channel (change the
//!   opcode to ByeSignal, post it) writes that frame and leaves the connection
//!   open. This crate delivers it and closes the channel as after the peer's
//!   abort ([closing](#closing)). Our own ByeSignal never travels: an
//!   original peer sees a reset and reports a bare `channel_closed` — as when
//!   its own application aborts with the engine-internal bit 6 set.
//! * **Its text headers are kept as they are.** It checks nothing, so text
//!   headers from the network may be any bytes: they are delivered and, if you
//!   post the message back, sent unchanged. [`TextHeaders::as_bytes`] gives the
//!   section as received; [`TextHeaders::get`] and [`TextHeaders::iter`] skip
//!   lines that are not UTF-8 `name:value` (where its iterator stops at an
//!   empty name and returns a line without `:` as a name without value).
//! * **Its listener addresses work**: `tcp||PORT` (all IPv4 interfaces, as
//!   `tcp|0.0.0.0|PORT`), a host name (looked up off the I/O thread, the
//!   first address that binds is used), `uds|` (a fresh path in the temp
//!   dir). The WelcomeResponse's `~listen_on` names the address bound.
//! * **Closing**: the original resets every close. In a Bye handshake its
//!   side that reads the ByeResponse resets at once and its side that wrote
//!   one waits for the peer: this crate takes a reset right after its own
//!   ByeResponse as the normal end, and itself closes a completed handshake
//!   with a FIN (no data the peer has not read is destroyed).
//! * **Stricter on purpose**: a first frame that is not a HelloRequest
//!   (the original answers a Request before any hello), opcodes 10–15 (a
//!   single opcode-12 frame crashes the original), `more` on a frame that is
//!   not Request, Response or Signal (the original delivers a HelloRequest
//!   with `more`, then cannot answer it), and the opcodes that never travel
//!   (WelcomeRequest, WelcomeResponse) are invalid frames: the channel closes
//!   with `invalid_message` (silently when the application never saw it).
//! * **Latency**: the original sets no `TCP_NODELAY` and writes a frame in
//!   several sends, so in the direction it sends each small frame can wait
//!   ~40 ms for Nagle's algorithm (and the peer's delayed ACK). This crate
//!   sets `TCP_NODELAY` on its own sockets, which helps only the direction it
//!   sends in.
//!
//! # Examples
//!
//! Each runs both sides on loopback in one process, checks its own outcome and
//! finishes in seconds (`cargo run --example NAME`; `ci/examples.sh` runs them all):
//!
//! * `request_response` — several requests in flight, answers matched by
//!   `message_id`, application errors in a text header.
//! * `streaming` — one request answered by a stream of responses (`more`).
//! * `progress` — a long request: progress Signals, then the final Response.
//! * `heartbeat` — periodic Signals; a hung peer detected by silence and aborted,
//!   a crashed one by its disconnect.
//! * `reconnect` — a [`Reconnect`] client whose server crashes
//!   mid-conversation and comes back on the same port: backoff, a new
//!   channel, the unanswered request sent again, a graceful stop.
//! * `dual_listener` — one group listening on TCP and a Unix-domain socket at once.
//! * `shutdown` — `update_receiver` passes work to, and cleanly stops, a thread
//!   blocked in `wait_receive`.
//! * `echo_server` / `echo_client` — the same as two programs.
//!
//! # Cargo features
//!
//! * `unstable` — makes the `wire` module (the sans-IO frame codec) and the
//!   `unstable` module (the channel-core fuzz driver) public: exposes
//!   internals for fuzzing and benchmarks; no semver promise. Off by default.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

// Lets code written against the public paths (`tofu::...`) compile inside the
// crate too: the fuzz checks replayed by the unit tests in `fuzz_replay`.
extern crate self as tofu;

mod address;
mod engine;
mod error;
mod heartbeat;
mod message;
mod reconnect;
mod sys;
pub mod testing;
#[cfg(feature = "unstable")]
pub mod wire;
#[cfg(not(feature = "unstable"))]
#[allow(unreachable_pub, dead_code)] // public only with `unstable`
mod wire;

#[cfg(test)]
mod fuzz_replay;

/// Internals for fuzzing (feature `unstable`): no semver promise.
#[cfg(any(test, feature = "unstable"))]
pub mod unstable {
    /// Runs one fuzz input against two sans-IO channel cores back to back
    /// over in-memory pipes: the bytes script posts, partial writes, split
    /// reads, corruption, resets and pool starvation, and every step checks
    /// the core's invariants (nothing panics; every posted message ends
    /// exactly once; deliveries are valid frames, in order; no pool message
    /// leaks).
    ///
    /// # Panics
    ///
    /// When an invariant does not hold — that is the finding.
    pub fn fuzz_channel(data: &[u8]) {
        crate::engine::fuzz_channel(data);
    }
}

pub use address::Address;
pub use engine::{
    ChannelGroup, DEFAULT_INITIAL_POOL_MSGS, DEFAULT_MAX_POOL_MSGS, Engine, Options, Stats,
};
pub use error::{Error, PostError, Status};
pub use heartbeat::Heartbeat;
pub use message::{
    Allocation, BinaryHeader, ENGINE_CHANNEL, MAX_SECTION_LEN, Message, MessageKind, More, OpCode,
    Origin, Pool, ProtoFields, Role, TextHeaders, TextHeadersIter, next_message_id,
};
pub use reconnect::{Handled, Reconnect, ReconnectEvent, ReconnectOptions};

/// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
