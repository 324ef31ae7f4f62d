//! One stream channel's protocol state machine (SPEC §5): its phase, the Bye
//! handshake, the send queue and the receiver.
//!
//! The reactor drives it with `handle_*` calls and carries out what the
//! `poll_*` calls give: slices to write ([`ChannelCore::poll_transmit`]) and
//! messages to deliver to the channel's group ([`ChannelCore::poll_delivery`]:
//! frames from the peer and posted messages given back). A [`Flow::Close`]
//! from a `handle_*` call closes the channel; the reactor delivers what is
//! queued first, then calls [`ChannelCore::give_back_unsent`].

use std::collections::VecDeque;
use std::time::Instant;

use crate::error::Status;
use crate::message::{Message, OpCode, Origin, Pool};

use super::backpressure::StashBudget;
use super::recv::{Decode, Receiver, Verdict};
use super::send::{IoVec, Released, SendQueue, write_is_full};
use super::{Cause, Close, End, Flow, Timeouts};

/// Where a channel's connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the host name lookup.
    Resolving,
    /// Non-blocking connect in progress.
    Connecting,
    /// Accepted; the first frame must be a HelloRequest. The application has
    /// not seen this channel yet.
    AwaitHello,
    /// Connected and greeted (or, on the client, connected).
    Open,
}

/// Where the Bye handshake stands (SPEC §5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bye {
    None,
    /// We queued a ByeRequest: nothing more may be posted.
    RequestQueued,
    /// Our ByeRequest is written: waiting for the ByeResponse.
    RequestWritten,
    /// We queued a ByeResponse.
    ResponseQueued,
    /// Our ByeResponse is written: waiting for the initiator to close.
    ResponseWritten,
}

/// What became of a posted message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Posted {
    /// Queued for writing: flush the channel.
    Queued,
    /// Given back (see [`ChannelCore::poll_delivery`]).
    GivenBack,
    /// Given back, and the channel closes (a ByeSignal).
    Close(Close),
}

/// A stream channel's state, without its socket.
pub(crate) struct ChannelCore {
    number: u16,
    phase: Phase,
    bye: Bye,
    /// message_id of the first message sent or received (for `channel_closed`).
    first_id: u64,
    send: SendQueue,
    recv: Receiver,
    /// Messages for the group, in order: frames read and messages given back.
    deliveries: VecDeque<Message>,
    /// Frames delivered since [`ChannelCore::take_received`].
    received: u64,
    timeouts: Timeouts,
    /// When the peer's silence ends the channel: the HelloRequest (while
    /// `AwaitHello`) or the ByeResponse (after our ByeRequest).
    deadline: Option<Instant>,
    /// The earliest deadline last handed to the reactor
    /// ([`ChannelCore::take_new_deadline`]); `None` once it fired.
    scheduled: Option<Instant>,
    /// With an idle timeout: when to look at the peer's silence next. Reads
    /// do not move it (no timer per read): they only note `last_heard`, and
    /// the check re-arms itself for `last_heard + idle` while the peer is
    /// not silent. It is also pulled forward to a phase deadline that is
    /// cleared (the hello came, the lookup ended), so the earliest deadline
    /// the reactor scheduled never moves later without firing.
    idle_at: Option<Instant>,
    /// When bytes last came from the peer (or the idle clock started).
    last_heard: Option<Instant>,
    /// Bytes written in all, and as of when the bye deadline was (re)armed:
    /// a ByeRequest still queued behind a backlog that keeps draining is not
    /// a silent peer (a slow link is not a reason to abort).
    written: u64,
    written_at_deadline: u64,
}

impl ChannelCore {
    /// A connecting channel with its HelloRequest queued (sent once connected).
    pub(crate) fn client(number: u16, hello: Message, timeouts: Timeouts) -> ChannelCore {
        let mut core = ChannelCore::new(number, Phase::Resolving, timeouts);
        core.first_id = hello.header.message_id;
        if let Err(msg) = core.send.push(hello, false) {
            core.give_back(msg, Status::InvalidMessage);
        }
        core
    }

    /// An accepted connection, waiting for the peer's HelloRequest (until
    /// the hello timeout after `now`).
    pub(crate) fn accepted(number: u16, timeouts: Timeouts, now: Instant) -> ChannelCore {
        let mut core = ChannelCore::new(number, Phase::AwaitHello, timeouts);
        core.set_deadline(timeouts.hello.map(|t| now + t));
        core.start_idle_clock(now);
        core
    }

    fn new(number: u16, phase: Phase, timeouts: Timeouts) -> ChannelCore {
        ChannelCore {
            number,
            phase,
            bye: Bye::None,
            first_id: 0,
            send: SendQueue::default(),
            recv: Receiver::default(),
            deliveries: VecDeque::new(),
            received: 0,
            timeouts,
            deadline: None,
            scheduled: None,
            idle_at: None,
            last_heard: None,
            written: 0,
            written_at_deadline: 0,
        }
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
        self.written_at_deadline = self.written;
    }

    /// The phase deadline no longer applies. With an idle timeout, the
    /// idle check moves up to it instead, so that what the reactor
    /// scheduled stays the earliest deadline.
    fn clear_deadline(&mut self) {
        clear_deadline(&mut self.deadline, &mut self.idle_at);
    }

    /// With an idle timeout, the peer's silence counts from `now` (once: a
    /// fallback connect does not restart it).
    fn start_idle_clock(&mut self, now: Instant) {
        if let (Some(idle), None) = (self.timeouts.idle, self.idle_at) {
            self.last_heard = Some(now);
            self.idle_at = Some(now + idle);
        }
    }

    pub(crate) fn number(&self) -> u16 {
        self.number
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    #[cfg(test)]
    pub(crate) fn bye(&self) -> Bye {
        self.bye
    }

    pub(crate) fn first_id(&self) -> u64 {
        self.first_id
    }

    /// The application knows this channel (everything but an accepted
    /// connection before its HelloRequest is delivered).
    pub(crate) fn seen(&self) -> bool {
        self.phase != Phase::AwaitHello
    }

    /// Heap memory the channel keeps (queue and stash capacities), in
    /// entries and bytes: 0 for an idle channel that never grew.
    #[cfg(test)]
    pub(crate) fn heap_capacity(&self) -> usize {
        self.send.capacity() + self.recv.stash_capacity() + self.deliveries.capacity()
    }

    // ----- connecting --------------------------------------------------------

    /// A host-name lookup started at `now` (it must end within the lookup
    /// timeout).
    pub(crate) fn handle_resolving(&mut self, now: Instant) {
        self.phase = Phase::Resolving;
        self.set_deadline(self.timeouts.lookup.map(|t| now + t));
        self.start_idle_clock(now);
    }

    /// A non-blocking connect started at `now`.
    pub(crate) fn handle_connecting(&mut self, now: Instant) {
        self.phase = Phase::Connecting;
        self.clear_deadline();
        self.start_idle_clock(now);
    }

    /// The connect completed: the queued HelloRequest may go out.
    pub(crate) fn handle_connected(&mut self) {
        self.phase = Phase::Open;
    }

    // ----- sending -----------------------------------------------------------

    /// A message the application posted on this channel, at `now`.
    #[inline]
    pub(crate) fn handle_post(&mut self, msg: Message, now: Instant) -> Posted {
        if self.first_id == 0 {
            self.first_id = msg.header.message_id;
        }
        let op = msg.header.proto.opcode;
        if op == OpCode::ByeSignal {
            self.give_back(msg, Status::ChannelClosed);
            return Posted::Close(Close::new(Status::ChannelClosed, true, Cause::Abort));
        }
        if self.bye != Bye::None {
            // After a ByeRequest or ByeResponse nothing more is sent (SPEC §5.5).
            self.give_back(msg, Status::NotAllowed);
            return Posted::GivenBack;
        }
        if let Err(msg) = self.send.push(msg, true) {
            self.give_back(msg, Status::InvalidMessage);
            return Posted::GivenBack;
        }
        match op {
            OpCode::ByeRequest => {
                self.bye = Bye::RequestQueued;
                self.set_deadline(self.timeouts.bye.map(|t| now + t));
            }
            OpCode::ByeResponse => self.bye = Bye::ResponseQueued,
            _ => {}
        }
        Posted::Queued
    }

    /// Posts may be written through ([`encode_through`](Self::encode_through)):
    /// the channel is open, nothing is queued ahead of them, and no Bye has
    /// been posted.
    pub(crate) fn may_write_through(&self) -> bool {
        self.phase == Phase::Open && self.bye == Bye::None && self.send.is_empty()
    }

    /// A post on the write-through path (when
    /// [`may_write_through`](Self::may_write_through)), that fits in this
    /// write ([`write_is_full`](super::send::write_is_full)): its frame is
    /// encoded into `buf`, and the caller keeps the message until
    /// [`handle_written_through`](Self::handle_written_through). `false`
    /// (nothing encoded): the message takes the ordinary path
    /// ([`handle_post`](Self::handle_post)) instead: a Bye opcode, a large
    /// frame.
    #[inline]
    pub(crate) fn encode_through(&mut self, msg: &Message, buf: &mut Vec<u8>) -> bool {
        if msg.header.proto.opcode == OpCode::ByeSignal || !self.send.encode_through(msg, buf) {
            return false;
        }
        if self.first_id == 0 {
            self.first_id = msg.header.message_id;
        }
        true
    }

    /// One write of a write-through run: the messages at the front of
    /// `msgs`, while they are on the first one's channel, fit in `max`
    /// bytes ([`write_is_full`]) and may go through
    /// ([`encode_through`](Self::encode_through)), are encoded into `buf`
    /// and moved to `held` (each moved once: the others are only looked
    /// at, and stay in `msgs`). Returns whether the run is over (the next
    /// message is for another channel or takes the ordinary path, or none
    /// is left); `false`: the write was full, and the messages go on in
    /// the next one if this one is written whole.
    pub(crate) fn encode_write(
        &mut self,
        msgs: &mut std::vec::Drain<'_, Message>,
        buf: &mut Vec<u8>,
        held: &mut Vec<Message>,
        max: usize,
    ) -> bool {
        let Some(number) = msgs.as_slice().first().map(|m| m.header.channel_number) else {
            return true;
        };
        loop {
            let Some(m) = msgs.as_slice().first() else {
                return true;
            };
            if m.header.channel_number != number {
                return true;
            }
            if write_is_full(buf.len(), m, max) {
                return false;
            }
            if !self.encode_through(m, buf) {
                return true;
            }
            if let Some(m) = msgs.next() {
                held.push(m);
            }
        }
    }

    /// The socket took `n` bytes (0 when the write failed or would block)
    /// of the frames encoded from `held[from..]`: the messages written whole
    /// stay in `held` (for the pool); the rest are queued, in order, the
    /// write cursor inside the first. Returns how many were written whole.
    pub(crate) fn handle_written_through(
        &mut self,
        n: usize,
        held: &mut Vec<Message>,
        from: usize,
    ) -> usize {
        self.written += n as u64;
        let deliveries = &mut self.deliveries;
        self.send.through_written(n, held, from, &mut |msg| {
            given_back(deliveries, msg, Status::InvalidMessage);
        })
    }

    /// Frames wait and the connection is up.
    pub(crate) fn wants_write(&self) -> bool {
        !self.send.is_empty() && matches!(self.phase, Phase::Open | Phase::AwaitHello)
    }

    #[cfg(any(test, feature = "unstable"))]
    /// Frames queued and not completely written.
    pub(crate) fn queued(&self) -> usize {
        self.send.len()
    }

    /// Fills `iov` with what to write next (nothing unless
    /// [`wants_write`](Self::wants_write)).
    pub(crate) fn poll_transmit<'a>(&'a mut self, iov: &mut IoVec<'a>) {
        if self.wants_write() {
            self.send.prepare();
            let this: &'a Self = self;
            this.send.fill(iov);
        }
    }

    /// The socket took `n` bytes of what [`poll_transmit`](Self::poll_transmit)
    /// gave; returns how many frames are now completely written, whose
    /// messages are appended to `spent` (to go back to their pool together).
    pub(crate) fn handle_written(&mut self, n: usize, spent: &mut Vec<Message>) -> usize {
        self.written += n as u64;
        let bye = &mut self.bye;
        self.send.advance(n, spent, |op| match op {
            OpCode::ByeRequest => *bye = Bye::RequestWritten,
            OpCode::ByeResponse => *bye = Bye::ResponseWritten,
            _ => {}
        })
    }

    /// Writing failed (or wrote nothing).
    pub(crate) fn handle_write_failed(&mut self, end: End) -> Close {
        let status = match end {
            End::Disconnect => Status::PeerDisconnected,
            End::Eof | End::Failed => Status::SendFailed,
        };
        Close::new(status, true, Cause::WriteFailed)
    }

    // ----- receiving ---------------------------------------------------------

    /// A frame is being filled: reading needs no new pool message.
    pub(crate) fn has_message(&self) -> bool {
        self.recv.has_message()
    }

    /// Stashed bytes or a complete header wait for pool messages.
    pub(crate) fn has_backlog(&self) -> bool {
        self.recv.has_backlog()
    }

    #[cfg(any(test, feature = "unstable"))]
    /// Bytes read but not decoded yet.
    pub(crate) fn stashed(&self) -> usize {
        self.recv.stashed()
    }

    /// Where a read may put the missing part of a large body straight,
    /// with no copy ([`Receiver::body_space`](super::recv::Receiver::body_space)).
    pub(crate) fn body_space(&mut self) -> Option<&mut [u8]> {
        self.recv.body_space()
    }

    /// One read from the socket at `now`: `into_body` bytes went into
    /// [`body_space`](Self::body_space) (0 when it was not asked for), then
    /// the first `len` bytes of `buf`, the read buffer. Complete frames are
    /// decoded into messages from `pool`; what stays stashed is counted in
    /// `budget`. `buf` may come back as other memory of the same length
    /// (a large rest of the read is stashed by taking the buffer).
    pub(crate) fn handle_read(
        &mut self,
        into_body: usize,
        buf: &mut Vec<u8>,
        len: usize,
        pool: &Pool,
        budget: &mut StashBudget,
        now: Instant,
    ) -> Flow {
        if self.last_heard.is_some() && into_body + len > 0 {
            self.last_heard = Some(now);
        }
        let flow = self.decode_with(Some((into_body, buf, len)), pool);
        self.recv.settle(budget);
        flow
    }

    /// The pool has messages again: decode the backlog.
    pub(crate) fn handle_resume(&mut self, pool: &Pool, budget: &mut StashBudget) -> Flow {
        let flow = self.decode_with(None, pool);
        self.recv.settle(budget);
        flow
    }

    /// With a frame held back for want of a message: the bytes still to come
    /// before it is complete (reading exactly those stashes nothing new for
    /// long: the frame then decodes).
    pub(crate) fn rest_of_held_frame(&self) -> Option<usize> {
        self.recv.rest_of_held_frame()
    }

    /// The channel is gone: its stash leaves the budget.
    pub(crate) fn release_budget(&mut self, budget: &mut StashBudget) {
        self.recv.release(budget);
    }

    /// Runs the receiver on a read (`None`: on its backlog) with the
    /// protocol checking each frame it yields.
    fn decode_with(&mut self, read: Option<(usize, &mut Vec<u8>, usize)>, pool: &Pool) -> Flow {
        let mut close = None;
        let Self {
            recv,
            phase,
            bye,
            first_id,
            number,
            deliveries,
            received,
            deadline,
            idle_at,
            ..
        } = self;
        let mut on_frame = |msg: &mut Message| {
            let frames = Frames {
                phase,
                bye: *bye,
                first_id,
                number: *number,
                received,
                deadline,
                idle_at,
            };
            match frames.frame(msg) {
                Ok(()) => Verdict::Keep,
                Err((c, delivered)) => {
                    close = Some(c);
                    if delivered {
                        Verdict::KeepAndStop
                    } else {
                        Verdict::DropAndStop
                    }
                }
            }
        };
        let decoded = match read {
            Some((0, buf, len)) => recv.read(buf, len, pool, deliveries, &mut on_frame),
            Some((into_body, buf, len)) => {
                recv.read_direct(into_body, buf, len, pool, deliveries, &mut on_frame)
            }
            None => recv.resume(pool, deliveries, &mut on_frame),
        };
        self.flow(decoded, close)
    }

    fn flow(&self, decoded: Decode, close: Option<Close>) -> Flow {
        match decoded {
            Decode::Continue => Flow::Continue,
            Decode::Starved => Flow::Starved,
            Decode::Stop => Flow::Close(close.expect("a stop carries its close")),
            Decode::Invalid(e) => {
                tracing::debug!(channel = self.number, "invalid frame: {e}");
                Flow::Close(Close::new(e.status(), self.seen(), Cause::InvalidFrame))
            }
        }
    }

    /// The stream ended (read returned 0) or reading failed.
    ///
    /// After we wrote our ByeResponse, the end of the stream (or a reset: the
    /// original tofu resets every close) is the normal end of the handshake.
    /// After our ByeRequest, before its answer was read, it is not: the peer
    /// crashed or aborted (SPEC §5.5).
    pub(crate) fn handle_end(&mut self, end: End) -> Close {
        if !self.seen() {
            return Close::new(Status::PeerDisconnected, false, Cause::LeftBeforeHello);
        }
        let status = match end {
            _ if self.bye == Bye::ResponseWritten => Status::ChannelClosed,
            End::Eof | End::Disconnect => Status::PeerDisconnected,
            End::Failed => Status::RecvFailed,
        };
        Close::new(status, true, Cause::ReadEnded)
    }

    // ----- time ----------------------------------------------------------------

    /// When [`handle_timeout`](Self::handle_timeout) is due, if ever: the
    /// earlier of the phase deadline (hello, lookup, bye) and the idle check.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.idle_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest deadline, when it changed since the reactor was last
    /// told (the reactor schedules it).
    pub(crate) fn take_new_deadline(&mut self) -> Option<Instant> {
        let next = self.poll_timeout();
        if next.is_some() && next != self.scheduled {
            self.scheduled = next;
            next
        } else {
            None
        }
    }

    /// Time passed: the close, when the peer kept silent past a deadline.
    /// `paused` says the reactor is not reading the channel for want of
    /// memory (pool or stash budget): bytes may wait in the kernel, so the
    /// peer is not silent.
    pub(crate) fn handle_timeout(&mut self, now: Instant, paused: bool) -> Option<Close> {
        let phase_due = self.deadline.is_some_and(|d| d <= now);
        let idle_due = self.idle_at.is_some_and(|d| d <= now);
        if !phase_due && !idle_due {
            return None;
        }
        // The reactor popped what it scheduled: the next deadline is new.
        self.scheduled = None;
        if phase_due {
            if let Some(close) = self.phase_timeout(now) {
                return Some(close);
            }
        }
        if idle_due {
            return self.idle_timeout(now, paused);
        }
        None
    }

    /// The idle check is due: the close when the peer has been silent for
    /// the idle timeout, else the check re-armed for when it could be.
    fn idle_timeout(&mut self, now: Instant, paused: bool) -> Option<Close> {
        let idle = self.timeouts.idle?;
        if paused {
            self.last_heard = Some(now);
        }
        let silent_until = self.last_heard.unwrap_or(now) + idle;
        if silent_until > now {
            self.idle_at = Some(silent_until);
            return None;
        }
        self.idle_at = None;
        tracing::debug!(channel = self.number, "nothing received for {idle:?}");
        Some(match self.phase {
            // The application never saw it: closed silently, as after the
            // hello timeout.
            Phase::AwaitHello => Close::new(Status::PeerDisconnected, false, Cause::IdleTimeout),
            Phase::Resolving | Phase::Connecting => {
                Close::new(Status::ConnectFailed, true, Cause::IdleTimeout)
            }
            Phase::Open => Close::new(Status::CommunicationFailed, true, Cause::IdleTimeout),
        })
    }

    /// The phase deadline passed.
    fn phase_timeout(&mut self, now: Instant) -> Option<Close> {
        self.deadline = None;
        match self.phase {
            Phase::AwaitHello => {
                let close = Close::new(Status::PeerDisconnected, false, Cause::HelloTimeout);
                return Some(close);
            }
            Phase::Resolving => {
                let close = Close::new(Status::ConnectFailed, true, Cause::LookupTimeout);
                return Some(close);
            }
            Phase::Connecting | Phase::Open => {}
        }
        if self.written != self.written_at_deadline {
            // Bytes went out since the deadline was set: the backlog before
            // the ByeRequest (or the request itself) is draining, the peer is
            // reading, only slowly. The timeout counts again from now, so the
            // peer has at least the bye timeout after the last byte.
            self.set_deadline(self.timeouts.bye.map(|t| now + t));
            return None;
        }
        // Our ByeRequest went unanswered: abort (SPEC §5.7a).
        Some(Close::new(
            Status::CommunicationFailed,
            true,
            Cause::ByeTimeout,
        ))
    }

    /// Frames delivered since the last call (for the statistics).
    pub(crate) fn take_received(&mut self) -> u64 {
        std::mem::take(&mut self.received)
    }

    // ----- delivering and closing -------------------------------------------

    /// The next message for the channel's group.
    pub(crate) fn poll_delivery(&mut self) -> Option<Message> {
        self.deliveries.pop_front()
    }

    /// Moves every message for the channel's group behind those in `to`,
    /// oldest first, as one block (a read's frames, into the group's queue).
    pub(crate) fn take_deliveries(&mut self, to: &mut VecDeque<Message>) {
        to.append(&mut self.deliveries);
    }

    /// Messages wait for the channel's group.
    pub(crate) fn has_deliveries(&self) -> bool {
        !self.deliveries.is_empty()
    }

    /// The channel closed: every message still queued comes back with the
    /// close's status (after what is already queued for delivery), or, on a
    /// silent close, is freed.
    pub(crate) fn give_back_unsent(&mut self, close: &Close) {
        let deliveries = &mut self.deliveries;
        for msg in self.send.drain() {
            if close.report {
                given_back(deliveries, msg, close.status);
            }
        }
    }

    /// Posted messages that left the send queue since the last call (written
    /// completely, or drained at the close): the reactor releases them from
    /// the outgoing limits. A post that was not queued
    /// ([`Posted::GivenBack`], [`Posted::Close`]) is not counted here.
    pub(crate) fn take_released(&mut self) -> Released {
        self.send.take_released()
    }

    fn give_back(&mut self, msg: Message, status: Status) {
        given_back(&mut self.deliveries, msg, status);
    }
}

/// A phase deadline no longer applies; a pending idle check moves up to it
/// (see `ChannelCore::idle_at`).
fn clear_deadline(deadline: &mut Option<Instant>, idle_at: &mut Option<Instant>) {
    if let (Some(old), Some(idle)) = (deadline.take(), idle_at.as_mut()) {
        *idle = (*idle).min(old);
    }
}

/// `msg` goes back to the application with `status`, from the engine.
fn given_back(deliveries: &mut VecDeque<Message>, mut msg: Message, status: Status) {
    msg.header.proto.origin = Origin::Engine;
    msg.header.status = status as u8;
    deliveries.push_back(msg);
}

/// The parts of a channel a decoded frame touches (borrowed apart from the
/// receiver that produced it).
struct Frames<'a> {
    phase: &'a mut Phase,
    bye: Bye,
    first_id: &'a mut u64,
    number: u16,
    received: &'a mut u64,
    deadline: &'a mut Option<Instant>,
    idle_at: &'a mut Option<Instant>,
}

impl Frames<'_> {
    /// One valid frame from the peer, at the back of the deliveries (where
    /// the receiver filled it). `Err` closes the channel, with whether the
    /// frame stays delivered.
    #[inline]
    fn frame(self, msg: &mut Message) -> Result<(), (Close, bool)> {
        let op = msg.header.proto.opcode;
        if *self.phase == Phase::AwaitHello {
            if op != OpCode::HelloRequest {
                tracing::debug!(
                    channel = self.number,
                    "first frame is {op:?}, not HelloRequest"
                );
                let close = Close::new(Status::InvalidMessage, false, Cause::NotHello);
                return Err((close, false));
            }
            *self.phase = Phase::Open;
            // The hello timeout no longer applies.
            clear_deadline(self.deadline, self.idle_at);
        }
        if *self.first_id == 0 {
            *self.first_id = msg.header.message_id;
        }
        msg.header.channel_number = self.number;
        msg.header.proto.origin = Origin::Application;
        // The initiator read the ByeResponse: close (SPEC §5.5). Both peers
        // sent a ByeRequest at once: neither may answer (nothing is sent after
        // a ByeRequest), and each has everything the other sent before its
        // request, so both close as after a completed handshake.
        let ends = self.bye == Bye::RequestWritten
            && matches!(op, OpCode::ByeResponse | OpCode::ByeRequest);
        *self.received += 1;
        if ends {
            return Err((
                Close::new(Status::ChannelClosed, true, Cause::Handshake),
                true,
            ));
        }
        if op == OpCode::ByeSignal {
            // The peer's abort (the original writes its application's
            // ByeSignal, then nothing more, and leaves the connection open):
            // delivered above, then closed as after a disconnect (SPEC §3).
            tracing::debug!(channel = self.number, "the peer aborted (ByeSignal)");
            let close = Close::new(Status::PeerDisconnected, true, Cause::PeerAbort);
            return Err((close, true));
        }
        Ok(())
    }
}

/// A message posted on a listener: only a ByeSignal or ByeRequest (which
/// close it) means something. Returns the status to give it back with and
/// whether the listener closes.
pub(crate) fn listener_post(op: OpCode) -> (Status, Option<Close>) {
    if matches!(op, OpCode::ByeSignal | OpCode::ByeRequest) {
        let close = Close::new(Status::ChannelClosed, true, Cause::Abort);
        (Status::ChannelClosed, Some(close))
    } else {
        (Status::NotAllowed, None)
    }
}
