//! A client connection that comes back by itself: [`Reconnect`].
//!
//! Built on the public API only (a HelloRequest per attempt, the engine's
//! `channel_closed` reports, [`ChannelGroup::update_receiver`] for its news).
//! It has no thread and no timer of its own: the application keeps its
//! receive loop and feeds the helper what it receives
//! ([`Reconnect::handle`]), waits no longer than the helper's next deadline
//! ([`Reconnect::timeout`]) and lets it act when that passes
//! ([`Reconnect::poll`]) — or lets [`Reconnect::wait_receive`] do all three.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::engine::ChannelGroup;
use crate::error::{Error, PostError, Status};
use crate::message::{Allocation, BinaryHeader, Message, OpCode, TextHeaders};

mod event;
mod options;
mod rng;
mod state;

pub use event::ReconnectEvent;
pub use options::ReconnectOptions;
use rng::{Rng, seed};
pub use state::Handled;
use state::State;

/// Keeps one logical connection to an address on a group: connects, and
/// after a failure or the server's close connects again with exponential
/// backoff and jitter ([`ReconnectOptions`]), sending the same HelloRequest
/// text headers each time.
///
/// The helper has no thread: the application keeps its receive loop and
/// * passes every message it receives to [`handle`](Self::handle) (which
///   keeps the handshakes, the reports about its channel and the server's
///   ByeRequest, and gives everything else back),
/// * waits no longer than [`timeout`](Self::timeout), and
/// * calls [`poll`](Self::poll) after every wait, so the helper can start
///   an attempt or abort a handshake that takes too long —
///
/// or calls [`wait_receive`](Self::wait_receive), which does all three.
/// Several helpers (and a [`Heartbeat`](crate::Heartbeat)) can share one
/// group and one loop: offer each message to each in turn.
///
/// The helper tells the application every attempt, every connection with
/// its new channel number, every disconnection and giving up, as messages
/// in the group ([`ReconnectEvent`], read with [`event`](Self::event)).
/// [`post`](Self::post) sends on the current connection; while there is
/// none it hands the message straight back (`Error::ChannelClosed`), so
/// nothing is queued without bound and nothing is lost: messages that were
/// on a connection when it broke come back from the engine as usual
/// (`origin = Engine`, with the failure status), for the application to
/// send again or drop.
///
/// It stops on [`stop`](Self::stop) (a graceful close of the connection)
/// and when the engine shuts down. Dropping it leaves its channel as it is.
///
/// ```
/// use std::time::Duration;
/// use tofu::{Address, Engine, Options, Reconnect, ReconnectEvent, ReconnectOptions};
///
/// # let server_engine = Engine::new(Options::default())?;
/// # let server = server_engine.create_group()?;
/// # let port = tofu::testing::free_tcp_port()?;
/// # let mut welcome = server_engine.get(tofu::Allocation::Always)?.unwrap();
/// # Address::tcp_server("127.0.0.1", port).format(&mut welcome)?;
/// # server.post(welcome)?;
/// # server.wait_receive(Some(Duration::from_secs(5)))?.unwrap();
/// # let echo = std::thread::spawn(move || {
/// #     while let Ok(Some(mut m)) = server.wait_receive(Some(Duration::from_secs(5))) {
/// #         if m.is_from_engine() { continue }
/// #         m.header.proto.opcode = match m.opcode() {
/// #             tofu::OpCode::HelloRequest => tofu::OpCode::HelloResponse,
/// #             tofu::OpCode::Request => tofu::OpCode::Response,
/// #             tofu::OpCode::ByeRequest => tofu::OpCode::ByeResponse,
/// #             _ => continue,
/// #         };
/// #         let _ = server.post(m);
/// #     }
/// # });
/// let engine = Engine::new(Options::default())?;
/// let group = engine.create_group()?;
/// let mut hello = tofu::TextHeaders::new();
/// hello.append("client", "docs")?; // sent with every HelloRequest
/// let address = Address::tcp_client("127.0.0.1", port);
/// let mut link = Reconnect::new(&group, address, hello, ReconnectOptions::default())?;
///
/// let t = Some(Duration::from_secs(5));
/// let mut answered = false;
/// while !answered {
///     let msg = link.wait_receive(t)?.ok_or("timed out")?;
///     match link.event(&msg) {
///         Some(ReconnectEvent::Connected { channel, .. }) => {
///             println!("connected on channel {channel}");
///             let mut req = engine.get(tofu::Allocation::Always)?.unwrap();
///             req.body.extend_from_slice(b"ping");
///             link.post(req)?; // on the current channel
///         }
///         Some(other) => println!("{other:?}"),
///         None => answered = msg.opcode() == tofu::OpCode::Response,
///     }
/// }
/// link.stop()?;
/// loop {
///     let msg = link.wait_receive(t)?.ok_or("timed out")?;
///     if link.event(&msg) == Some(ReconnectEvent::Stopped) {
///         break;
///     }
/// }
/// # drop(link); drop(group); engine.shutdown(); server_engine.shutdown(); echo.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Reconnect<'g> {
    group: &'g ChannelGroup,
    id: u64,
    options: ReconnectOptions,
    /// The HelloRequest of every attempt (address and the caller's headers).
    hello: Message,
    state: State,
    /// Failed attempts since the last connection.
    failures: u32,
    /// The attempt under way (or the last one).
    attempt: u32,
    rng: Rng,
}

/// Ids for helpers, process-wide.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl<'g> Reconnect<'g> {
    /// Makes the helper and starts the first attempt at once (the
    /// [`Attempt`](ReconnectEvent::Attempt) event is in the group when this
    /// returns). `headers` go with every HelloRequest, after `~connect_to`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAddress`] for a server address ([`Address::format`]
    /// writes only client addresses here), [`Error::InvalidHeadersLen`] when
    /// the headers do not fit, [`Error::ShutdownStarted`] after shutdown.
    /// A first attempt refused by `post` (the open-channel cap) is not an
    /// error: it counts as a failed attempt and is retried.
    pub fn new(
        group: &'g ChannelGroup,
        address: Address,
        headers: TextHeaders,
        options: ReconnectOptions,
    ) -> Result<Reconnect<'g>, Error> {
        if !matches!(
            address,
            Address::TcpClient { .. } | Address::UdsClient { .. }
        ) {
            return Err(Error::InvalidAddress);
        }
        let mut hello = Message::new();
        address.format(&mut hello)?;
        for (name, value) in headers.iter() {
            hello.text_headers.append(name, value)?;
        }
        if hello.text_headers.byte_len() > crate::message::MAX_SECTION_LEN {
            return Err(Error::InvalidHeadersLen);
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut link = Reconnect {
            group,
            id,
            options,
            hello,
            state: State::Done,
            failures: 0,
            attempt: 0,
            rng: Rng(seed(id)),
        };
        link.attempt(Duration::ZERO)?;
        Ok(link)
    }

    /// This helper's id: the `message_id` of its events.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The connected channel, if the helper has one now.
    pub fn channel(&self) -> Option<u16> {
        match self.state {
            State::Connected { channel } => Some(channel),
            _ => None,
        }
    }

    /// Whether the helper has stopped (on request, giving up, or shutdown):
    /// it does nothing more.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The event `msg` carries if this helper sent it.
    pub fn event(&self, msg: &Message) -> Option<ReconnectEvent> {
        match ReconnectEvent::from_message(msg) {
            Some((id, event)) if id == self.id => Some(event),
            _ => None,
        }
    }

    /// Posts `msg` on the current connection (its channel number is set
    /// here). To close the connection for good use [`stop`](Self::stop): a
    /// ByeRequest or ByeSignal posted here ends this connection only, and
    /// the helper connects again.
    ///
    /// # Errors
    ///
    /// Without a connection (connecting, waiting to retry, stopped, or
    /// closed an instant ago, its report not handled yet) the message comes
    /// straight back with [`Error::ChannelClosed`]; otherwise as
    /// [`ChannelGroup::post`]. A message `post` accepted can still come
    /// back later from the engine (`origin = Engine`, with the failure
    /// status) when the connection breaks before it is written.
    pub fn post(&self, mut msg: Message) -> Result<BinaryHeader, PostError> {
        match self.state {
            State::Connected { channel } => {
                msg.header.channel_number = channel;
                self.group.post(msg).map_err(|e| match e.error {
                    // Closed an instant ago; its report is on the way.
                    Error::InvalidChannelNumber | Error::InvalidChannelGroup => PostError {
                        error: Error::ChannelClosed,
                        message: e.message,
                    },
                    _ => e,
                })
            }
            _ => Err(PostError {
                error: Error::ChannelClosed,
                message: msg,
            }),
        }
    }

    /// How long the application may wait before it must call
    /// [`poll`](Self::poll) (`None`: until a message arrives). Pass it (or
    /// less) to [`ChannelGroup::wait_receive`].
    pub fn timeout(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// When the helper next has something to do on its own, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Connecting {
                deadline,
                aborted: false,
                ..
            }
            | State::Closing {
                deadline,
                aborted: false,
                ..
            } => deadline,
            State::Backoff { until, .. } => Some(until),
            _ => None,
        }
    }

    /// Acts on the time: starts the next attempt when its wait is over,
    /// aborts a handshake that took longer than the handshake timeout. Call
    /// it after every wait (a message or not).
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] when the engine shut down (the helper is
    /// then done).
    pub fn poll(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        match self.state {
            State::Backoff { until, waited } if until <= now => self.attempt(waited),
            State::Connecting {
                channel,
                deadline: Some(d),
                aborted: false,
            } if d <= now => {
                self.state = State::Connecting {
                    channel,
                    deadline: None,
                    aborted: true,
                };
                self.abort(channel)
            }
            State::Closing {
                channel,
                deadline: Some(d),
                aborted: false,
                was_connected,
            } if d <= now => {
                self.state = State::Closing {
                    channel,
                    deadline: None,
                    aborted: true,
                    was_connected,
                };
                self.abort(channel)
            }
            _ => Ok(()),
        }
    }

    /// Looks at a message the application received: keeps what is the
    /// helper's (the server's HelloResponse, ByeRequest and ByeResponse on
    /// its channel, the engine's reports about its channel and the
    /// handshake messages it gives back), gives back everything else — the
    /// application's own messages given back by the engine included.
    pub fn handle(&mut self, msg: Message) -> Handled {
        let (channel, connecting) = match self.state {
            State::Connecting { channel, .. } => (channel, true),
            State::Connected { channel } | State::Closing { channel, .. } => (channel, false),
            State::Backoff { .. } | State::Done => return Handled::NotMine(msg),
        };
        if msg.channel_number() != channel || msg.status() == Status::ReceiverUpdate {
            return Handled::NotMine(msg);
        }
        let op = msg.opcode();
        if msg.is_from_engine() {
            if op == OpCode::Signal && msg.status() == Status::ChannelClosed {
                let cause = match self.state {
                    State::Connecting { aborted: true, .. } => Some(Status::CommunicationFailed),
                    _ => msg.close_cause(),
                };
                self.closed(channel, cause);
                return Handled::Mine;
            }
            return match op {
                // Our handshake messages, given back at a close.
                OpCode::HelloRequest
                | OpCode::ByeRequest
                | OpCode::ByeResponse
                | OpCode::ByeSignal => Handled::Mine,
                _ => Handled::NotMine(msg),
            };
        }
        match op {
            OpCode::HelloResponse => {
                if connecting {
                    self.state = State::Connected { channel };
                    let attempt = self.attempt;
                    self.failures = 0;
                    self.tell(ReconnectEvent::Connected { attempt, channel });
                }
                // (Stopped while connecting: the abort is on its way.)
                Handled::Mine
            }
            OpCode::ByeRequest => {
                // The server closes: agree (the report follows, then the
                // next attempt).
                let mut answer = msg;
                answer.header.proto.opcode = OpCode::ByeResponse;
                let _ = self.group.post(answer);
                Handled::Mine
            }
            // A rejection or abort (the report follows), the answer to our
            // ByeRequest.
            OpCode::ByeSignal | OpCode::ByeResponse => Handled::Mine,
            _ => Handled::NotMine(msg),
        }
    }

    /// Waits up to `timeout` (`None`: forever) for a message that is not
    /// the helper's, doing the helper's work meanwhile
    /// ([`handle`](Self::handle), [`poll`](Self::poll), never waiting past
    /// [`timeout`](Self::timeout)). The helper's events come out here too.
    ///
    /// # Errors
    ///
    /// As [`ChannelGroup::wait_receive`]: [`Error::ShutdownStarted`] once
    /// the engine shuts down (the helper is then done).
    pub fn wait_receive(&mut self, timeout: Option<Duration>) -> Result<Option<Message>, Error> {
        let end = timeout.map(|t| Instant::now() + t);
        loop {
            self.poll()?;
            let left = end.map(|e| e.saturating_duration_since(Instant::now()));
            let wait = match (left, self.timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let got = self.group.wait_receive(wait);
            if got.is_err() {
                self.state = State::Done;
            }
            match got? {
                Some(msg) => {
                    if let Handled::NotMine(msg) = self.handle(msg) {
                        return Ok(Some(msg));
                    }
                }
                None if end.is_some_and(|e| Instant::now() >= e) => {
                    self.poll()?;
                    return Ok(None);
                }
                None => {}
            }
        }
    }

    /// Stops: closes the connection gracefully (a ByeRequest; an attempt in
    /// progress is aborted) and makes no more attempts. The
    /// [`Stopped`](ReconnectEvent::Stopped) event follows once the channel
    /// has closed (at once when there is none).
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] after shutdown (the helper is done all
    /// the same).
    pub fn stop(&mut self) -> Result<(), Error> {
        let deadline = self.options.handshake_timeout.map(|t| Instant::now() + t);
        match self.state {
            State::Connected { channel } => {
                self.state = State::Closing {
                    channel,
                    deadline,
                    aborted: false,
                    was_connected: true,
                };
                let mut bye = self.message()?;
                bye.header.channel_number = channel;
                bye.header.proto.opcode = OpCode::ByeRequest;
                match self.group.post(bye) {
                    Ok(_) => Ok(()),
                    Err(e) if e.error == Error::ShutdownStarted => self.shut_down(),
                    // Closed meanwhile: its report finishes the stop.
                    Err(_) => Ok(()),
                }
            }
            State::Connecting { channel, .. } => {
                self.state = State::Closing {
                    channel,
                    deadline: None,
                    aborted: true,
                    was_connected: false,
                };
                self.abort(channel)
            }
            State::Backoff { .. } => {
                self.state = State::Done;
                self.tell(ReconnectEvent::Stopped);
                Ok(())
            }
            State::Closing { .. } | State::Done => Ok(()),
        }
    }

    // ----- inside -------------------------------------------------------------

    /// Starts an attempt (after waiting `waited`).
    fn attempt(&mut self, waited: Duration) -> Result<(), Error> {
        self.attempt = self.failures + 1;
        let mut hello = self.message()?;
        hello.header = self.hello.header;
        hello.text_headers = self.hello.text_headers.clone();
        let deadline = self.options.handshake_timeout.map(|t| Instant::now() + t);
        match self.group.post(hello) {
            Ok(h) => {
                let channel = h.channel_number;
                self.state = State::Connecting {
                    channel,
                    deadline,
                    aborted: false,
                };
                self.tell(ReconnectEvent::Attempt {
                    attempt: self.attempt,
                    channel,
                    waited,
                });
                Ok(())
            }
            Err(e) if e.error == Error::ShutdownStarted => self.shut_down(),
            Err(e) => {
                // Refused at once (the open-channel cap): a failed attempt.
                self.tell(ReconnectEvent::Attempt {
                    attempt: self.attempt,
                    channel: 0,
                    waited,
                });
                self.closed(0, Some(e.error.status()));
                Ok(())
            }
        }
    }

    /// The helper's channel closed with `cause`: retry, give up or stop.
    fn closed(&mut self, channel: u16, cause: Option<Status>) {
        let was_connected = matches!(self.state, State::Connected { .. });
        if let State::Closing { was_connected, .. } = self.state {
            self.end(channel, was_connected, cause, ReconnectEvent::Stopped);
            return;
        }
        if was_connected {
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
        let limit = self.options.max_attempts.map(|m| m.max(1));
        if limit.is_some_and(|m| self.failures >= m) {
            let attempts = self.failures;
            self.end(
                channel,
                was_connected,
                cause,
                ReconnectEvent::GaveUp { attempts },
            );
            return;
        }
        let unit = self.rng.unit();
        let wait = self.options.delay(self.failures + 1, unit);
        self.state = State::Backoff {
            until: Instant::now() + wait,
            waited: wait,
        };
        self.tell(ReconnectEvent::Disconnected {
            channel,
            was_connected,
            cause,
            retry_in: Some(wait),
        });
    }

    /// The last close: no retry; `last` (stopped, gave up) follows it.
    fn end(
        &mut self,
        channel: u16,
        was_connected: bool,
        cause: Option<Status>,
        last: ReconnectEvent,
    ) {
        self.state = State::Done;
        self.tell(ReconnectEvent::Disconnected {
            channel,
            was_connected,
            cause,
            retry_in: None,
        });
        self.tell(last);
    }

    /// Aborts `channel` (its report follows).
    fn abort(&mut self, channel: u16) -> Result<(), Error> {
        let mut abort = self.message()?;
        abort.header.channel_number = channel;
        abort.header.proto.opcode = OpCode::ByeSignal;
        match self.group.post(abort) {
            Err(e) if e.error == Error::ShutdownStarted => self.shut_down(),
            // Closed meanwhile: its report is on its way.
            _ => Ok(()),
        }
    }

    fn shut_down(&mut self) -> Result<(), Error> {
        self.state = State::Done;
        Err(Error::ShutdownStarted)
    }

    fn message(&mut self) -> Result<Message, Error> {
        match self.group.engine().get(Allocation::Always) {
            Ok(m) => Ok(m.unwrap_or_default()),
            Err(e) => {
                self.state = State::Done;
                Err(e)
            }
        }
    }

    /// Puts an event in the group (nothing after shutdown).
    fn tell(&mut self, event: ReconnectEvent) {
        let Ok(mut msg) = self.message() else {
            return;
        };
        if event.write(self.id, &mut msg).is_ok() {
            let _ = self.group.update_receiver(Some(msg));
        }
    }
}
