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

/// What a helper did with a message the application received.
#[derive(Debug)]
pub enum Handled {
    /// The helper's own business (a handshake, a report about its channel,
    /// its own heartbeat): consumed, nothing for the application.
    Mine,
    /// Not the helper's: the message, for the application to handle.
    NotMine(Message),
}

/// How a [`Reconnect`] waits between attempts and how long it waits on the
/// server. `Default` gives the values noted.
///
/// The wait before attempt *n* of a series (the attempts since the last
/// connection) is `initial_delay × 2ⁿ⁻¹`, at most `max_delay`; with
/// `jitter` each wait is drawn at random from its upper half, `[d/2, d]`, so
/// clients that lost the same server at the same moment come back spread
/// out, and the waits still grow from one attempt to the next. The very
/// first connect ([`Reconnect::new`]) does not wait.
///
/// ```
/// use std::time::Duration;
/// use tofu::ReconnectOptions;
/// let opts = ReconnectOptions {
///     initial_delay: Duration::from_millis(50),
///     max_attempts: Some(10),
///     ..ReconnectOptions::default()
/// };
/// assert_eq!(opts.max_delay, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectOptions {
    /// The wait before the first attempt after a lost connection (default
    /// 100 ms, as libzmq's `ZMQ_RECONNECT_IVL`; zero is raised to 1 ms).
    pub initial_delay: Duration,
    /// The longest wait between attempts (default 10 s; never below
    /// `initial_delay`).
    pub max_delay: Duration,
    /// Failed attempts in a row after which the helper gives up (default
    /// `None`: never; `Some(0)` counts as `Some(1)`).
    pub max_attempts: Option<u32>,
    /// Draw each wait from `[d/2, d]` instead of waiting exactly `d`
    /// (default `true`).
    pub jitter: bool,
    /// How long the server may take to answer a HelloRequest (or, at
    /// [`stop`](Reconnect::stop), a ByeRequest) before the helper aborts the
    /// channel (default 10 s; `None` waits forever). This also bounds a TCP
    /// connect to a host that does not answer at all, which the kernel
    /// would otherwise retry for minutes.
    pub handshake_timeout: Option<Duration>,
}

impl Default for ReconnectOptions {
    fn default() -> ReconnectOptions {
        ReconnectOptions {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: None,
            jitter: true,
            handshake_timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl ReconnectOptions {
    /// The wait before attempt `attempt` (1 for the first of a series),
    /// before jitter: `initial_delay × 2^(attempt-1)`, at most `max_delay`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = tofu::ReconnectOptions::default();
    /// assert_eq!(o.nominal_delay(1), Duration::from_millis(100));
    /// assert_eq!(o.nominal_delay(3), Duration::from_millis(400));
    /// assert_eq!(o.nominal_delay(60), Duration::from_secs(10));
    /// ```
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let initial = self.initial_delay.max(Duration::from_millis(1));
        let max = self.max_delay.max(initial);
        let doublings = attempt.saturating_sub(1).min(31);
        initial.saturating_mul(1 << doublings).min(max)
    }

    /// The wait before `attempt` with jitter applied for a random `unit` in
    /// `[0, 1)`: `d × (1 + unit) / 2`, or `d` without jitter.
    fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let d = self.nominal_delay(attempt);
        if self.jitter {
            d.mul_f64((1.0 + unit.clamp(0.0, 1.0)) / 2.0)
        } else {
            d
        }
    }
}

/// What a [`Reconnect`] tells the application, as a message in its group
/// ([`Reconnect::event`] reads it back).
///
/// Each is a Signal put in the group's receive queue with
/// [`ChannelGroup::update_receiver`] (status `receiver_update`, origin
/// `Application`, never sent anywhere), in order with everything else the
/// group receives. Its `message_id` is the helper's [`id`](Reconnect::id),
/// its channel number the channel concerned (0 when none), and its text
/// headers say what happened: `~reconnect` (`attempt`, `connected`,
/// `disconnected`, `gave_up`, `stopped`), `~attempt`, `~delay_us`, `~cause`
/// (a status name, as in a `channel_closed` report) and `~was_connected`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconnectEvent {
    /// A connect attempt started on `channel`: the `attempt`th since the
    /// last connection (1 = the first), after waiting `waited`.
    Attempt {
        /// 1 for the first attempt of a series.
        attempt: u32,
        /// The new channel's number.
        channel: u16,
        /// How long the helper waited before this attempt.
        waited: Duration,
    },
    /// The server answered: `channel` is connected (after `attempt`
    /// attempts). [`Reconnect::post`] sends on it from now on.
    Connected {
        /// The attempt that succeeded.
        attempt: u32,
        /// The connected channel's number (new on every connection).
        channel: u16,
    },
    /// `channel` closed — an attempt that failed, or a connection lost —
    /// and the helper tries again in `retry_in` (`None`: it does not; a
    /// [`GaveUp`](Self::GaveUp) or [`Stopped`](Self::Stopped) follows).
    Disconnected {
        /// The channel that closed (forget its number).
        channel: u16,
        /// Whether it had been connected (`false`: the attempt failed).
        was_connected: bool,
        /// How it ended, as in its `channel_closed` report
        /// ([`Message::close_cause`]); `None` for an orderly end. A
        /// server that did not answer within the handshake timeout reads
        /// `communication_failed`.
        cause: Option<Status>,
        /// The wait before the next attempt.
        retry_in: Option<Duration>,
    },
    /// `attempts` attempts in a row failed
    /// ([`ReconnectOptions::max_attempts`]): the helper stopped.
    GaveUp {
        /// Failed attempts in a row.
        attempts: u32,
    },
    /// The helper stopped on request ([`Reconnect::stop`]); its channel, if
    /// it had one, is closed.
    Stopped,
}

const EVENT: &str = "~reconnect";
const ATTEMPT: &str = "~attempt";
const DELAY: &str = "~delay_us";
const CAUSE: &str = "~cause";
const WAS_CONNECTED: &str = "~was_connected";

impl ReconnectEvent {
    /// Reads the event a [`Reconnect`] put in its group, with the id of the
    /// helper that sent it; `None` for every other message.
    ///
    /// ```
    /// let msg = tofu::Message::new();
    /// assert_eq!(tofu::ReconnectEvent::from_message(&msg), None);
    /// ```
    pub fn from_message(msg: &Message) -> Option<(u64, ReconnectEvent)> {
        if msg.status() != Status::ReceiverUpdate
            || msg.is_from_engine()
            || msg.opcode() != OpCode::Signal
        {
            return None;
        }
        let h = &msg.text_headers;
        let number = |name: &str| h.get(name).and_then(|v| v.parse::<u64>().ok());
        let attempt = number(ATTEMPT).unwrap_or(0).min(u32::MAX as u64) as u32;
        let delay = number(DELAY).map(Duration::from_micros);
        let channel = msg.channel_number();
        let event = match h.get(EVENT)? {
            "attempt" => ReconnectEvent::Attempt {
                attempt,
                channel,
                waited: delay.unwrap_or_default(),
            },
            "connected" => ReconnectEvent::Connected { attempt, channel },
            "disconnected" => ReconnectEvent::Disconnected {
                channel,
                was_connected: h.get(WAS_CONNECTED) == Some("true"),
                cause: h.get(CAUSE).map(status_named),
                retry_in: delay,
            },
            "gave_up" => ReconnectEvent::GaveUp { attempts: attempt },
            "stopped" => ReconnectEvent::Stopped,
            _ => return None,
        };
        Some((msg.header.message_id, event))
    }

    /// Writes the event into `msg` (a cleared message).
    fn write(&self, id: u64, msg: &mut Message) -> Result<(), Error> {
        msg.header.proto.opcode = OpCode::Signal;
        msg.header.message_id = id;
        let h = &mut msg.text_headers;
        let micros = |d: &Duration| d.as_micros().min(u64::MAX as u128).to_string();
        match self {
            ReconnectEvent::Attempt {
                attempt,
                channel,
                waited,
            } => {
                msg.header.channel_number = *channel;
                h.append(EVENT, "attempt")?;
                h.append(ATTEMPT, &attempt.to_string())?;
                h.append(DELAY, &micros(waited))?;
            }
            ReconnectEvent::Connected { attempt, channel } => {
                msg.header.channel_number = *channel;
                h.append(EVENT, "connected")?;
                h.append(ATTEMPT, &attempt.to_string())?;
            }
            ReconnectEvent::Disconnected {
                channel,
                was_connected,
                cause,
                retry_in,
            } => {
                msg.header.channel_number = *channel;
                h.append(EVENT, "disconnected")?;
                h.append(WAS_CONNECTED, if *was_connected { "true" } else { "false" })?;
                if let Some(cause) = cause {
                    h.append(CAUSE, cause.name())?;
                }
                if let Some(d) = retry_in {
                    h.append(DELAY, &micros(d))?;
                }
            }
            ReconnectEvent::GaveUp { attempts } => {
                h.append(EVENT, "gave_up")?;
                h.append(ATTEMPT, &attempts.to_string())?;
            }
            ReconnectEvent::Stopped => h.append(EVENT, "stopped")?,
        }
        Ok(())
    }
}

fn status_named(name: &str) -> Status {
    (1..=31u8)
        .map(Status::from_raw)
        .find(|s| s.name() == name)
        .unwrap_or(Status::UnknownError)
}

/// Where the helper stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A HelloRequest is out on `channel`; the server has until `deadline`.
    Connecting {
        channel: u16,
        deadline: Option<Instant>,
        /// We aborted it (handshake timeout): the report is on its way.
        aborted: bool,
    },
    Connected {
        channel: u16,
    },
    /// Waiting until `until` before the next attempt.
    Backoff {
        until: Instant,
        waited: Duration,
    },
    /// Stopping: our ByeRequest (or ByeSignal) is out on `channel`; the
    /// server has until `deadline` to answer.
    Closing {
        channel: u16,
        deadline: Option<Instant>,
        aborted: bool,
        was_connected: bool,
    },
    /// Stopped on request, gave up, or the engine shut down.
    Done,
}

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
            self.state = State::Done;
            self.tell(ReconnectEvent::Disconnected {
                channel,
                was_connected,
                cause,
                retry_in: None,
            });
            self.tell(ReconnectEvent::Stopped);
            return;
        }
        if was_connected {
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
        let limit = self.options.max_attempts.map(|m| m.max(1));
        if limit.is_some_and(|m| self.failures >= m) {
            self.state = State::Done;
            self.tell(ReconnectEvent::Disconnected {
                channel,
                was_connected,
                cause,
                retry_in: None,
            });
            self.tell(ReconnectEvent::GaveUp {
                attempts: self.failures,
            });
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

/// splitmix64: enough to spread waits, no dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    /// A random number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed that differs between helpers, processes and runs (the standard
/// library's randomly keyed hasher, over the id and the time).
fn seed(id: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(id);
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_backoff_doubles_up_to_the_maximum() {
        let o = ReconnectOptions {
            initial_delay: 100 * MS,
            max_delay: 1000 * MS,
            ..ReconnectOptions::default()
        };
        let waits: Vec<u128> = (1..=6).map(|n| o.nominal_delay(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(o.nominal_delay(u32::MAX), 1000 * MS, "no overflow");
        let zero = ReconnectOptions {
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..o
        };
        assert_eq!(zero.nominal_delay(1), MS, "never a busy loop");
    }

    #[test]
    fn jitter_stays_in_the_upper_half_so_waits_still_grow() {
        let o = ReconnectOptions::default();
        for n in 1..8 {
            let d = o.nominal_delay(n);
            assert_eq!(o.delay(n, 0.0), d / 2);
            assert!(o.delay(n, 0.999_999) <= d);
            // While the waits double, the shortest wait of the next attempt
            // is at least the longest of this one.
            if o.nominal_delay(n + 1) == 2 * d {
                assert!(o.delay(n + 1, 0.0) >= o.delay(n, 0.999_999));
            }
        }
        let exact = ReconnectOptions { jitter: false, ..o };
        assert_eq!(exact.delay(2, 0.3), 200 * MS);
    }

    #[test]
    fn events_read_back_as_written() {
        let events = [
            ReconnectEvent::Attempt {
                attempt: 3,
                channel: 7,
                waited: 1234 * Duration::from_micros(1),
            },
            ReconnectEvent::Connected {
                attempt: 3,
                channel: 7,
            },
            ReconnectEvent::Disconnected {
                channel: 7,
                was_connected: true,
                cause: Some(Status::PeerDisconnected),
                retry_in: Some(100 * MS),
            },
            ReconnectEvent::Disconnected {
                channel: 8,
                was_connected: false,
                cause: None,
                retry_in: None,
            },
            ReconnectEvent::GaveUp { attempts: 5 },
            ReconnectEvent::Stopped,
        ];
        for e in events {
            let mut m = Message::new();
            e.write(42, &mut m).unwrap();
            m.header.status = Status::ReceiverUpdate as u8; // as update_receiver does
            assert_eq!(ReconnectEvent::from_message(&m), Some((42, e)));
        }
    }

    #[test]
    fn the_random_units_are_spread() {
        let mut rng = Rng(seed(1));
        let units: Vec<f64> = (0..1000).map(|_| rng.unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        // Ten bins, each well filled.
        let mut bins = [0; 10];
        for u in &units {
            bins[(u * 10.0) as usize] += 1;
        }
        assert!(bins.iter().all(|&b| b > 50), "{bins:?}");
        assert_ne!(seed(1), seed(1), "a new seed every time");
    }
}
