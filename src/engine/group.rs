//! [`ChannelGroup`]: post messages in, receive messages out (SPEC §5.2, §5.8, §5.9).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::limits::{Parked, charge_len};
use super::reactor::{FOLLOW_RECHECK, Lead, Led};
use super::shared::GroupQueue;
use super::{Command, Counters, Delivery, Engine, GroupShared};
use crate::address::Address;
use crate::error::{Error, PostError, Status};
use crate::message::{
    BinaryHeader, ENGINE_CHANNEL, MAX_SECTION_LEN, Message, More, OpCode, Origin, Role,
    next_message_id,
};

mod batch;
mod open;
mod receive_async;

/// How long `post` on channel 0 waits for the I/O thread to refill the reserve
/// of channel numbers (only in a burst of more than 64 opens at once).
const RESERVE_WAIT: Duration = Duration::from_secs(2);

/// The application's handle to a set of channels: [`post`](Self::post) messages
/// in, [`wait_receive`](Self::wait_receive) messages (and engine reports) out —
/// or, on an async executor, [`receive_async`](Self::receive_async) and
/// [`messages`](Self::messages).
///
/// Every channel belongs to exactly one group: the one that opened it, or for
/// accepted connections, the group of the listener. Dropping the group (or
/// [`destroy`](Self::destroy)) closes all its channels abortively.
///
/// `ChannelGroup` is `Send + Sync`: several threads may post into one group, and
/// a thread blocked in `wait_receive` can be woken from another.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tofu::{Engine, Options, Status};
///
/// let engine = Engine::new(Options::default())?;
/// let group = Arc::new(engine.create_group()?);
/// let waiter = {
///     let group = group.clone();
///     std::thread::spawn(move || group.wait_receive(None))
/// };
/// group.update_receiver(None)?; // wakes the waiter
/// let woken = waiter.join().unwrap()?.expect("a message");
/// assert!(woken.is_from_engine());
/// assert_eq!(woken.status(), Status::ReceiverUpdate);
/// assert!(group.wait_receive(Some(Duration::ZERO))?.is_none());
/// # Ok::<(), tofu::Error>(())
/// ```
pub struct ChannelGroup {
    engine: Engine,
    shared: Arc<GroupShared>,
    released: AtomicBool,
}

impl ChannelGroup {
    pub(super) fn new(engine: Engine, shared: Arc<GroupShared>) -> ChannelGroup {
        ChannelGroup {
            engine,
            shared,
            released: AtomicBool::new(false),
        }
    }

    /// Validates `msg` and hands it to the I/O thread.
    ///
    /// On success returns the final binary header: `origin = Application`,
    /// `status = 0`, the assigned `message_id` (when 0 was posted) and, for a
    /// WelcomeRequest/HelloRequest on channel 0, the new channel's number.
    ///
    /// # Errors
    ///
    /// A [`PostError`] holding the message and the reason (SPEC §5.2):
    /// `InvalidMessageId` (response role with id 0), `InvalidMoreUsage`,
    /// `InvalidOpCode` (WelcomeResponse, which only the engine sends),
    /// `InvalidChannelNumber`, `InvalidChannelGroup`, `WrongAddress` (Welcome/Hello
    /// without text headers), `InvalidHeadersLen`/`InvalidBodyLen` (over 65535
    /// bytes), `AllocationFailed` (channel 0: no channel number free, or
    /// [`Options::max_channels`](crate::Options) channels open),
    /// `PoolEmpty` (the channel's or the engine's outgoing queue is full:
    /// see below) and `ShutdownStarted`.
    ///
    /// # Outgoing limits
    ///
    /// The bytes queued for sending (16 + text headers + body per message,
    /// from `post` until the message is written to the socket or comes back)
    /// are limited per channel ([`Options::channel_send_limit`](crate::Options))
    /// and in the whole engine ([`Options::engine_send_limit`](crate::Options)).
    /// A post that would go over either is refused with
    /// [`Error::PoolEmpty`]: nothing was queued and the message comes back
    /// untouched. `post` never blocks; to wait for room, use
    /// [`post_timeout`](Self::post_timeout). [`Stats::queued_bytes`](crate::Stats)
    /// shows what is queued.
    ///
    /// # Examples
    ///
    /// ```
    /// use tofu::{Engine, Error, Message, OpCode, Options};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let group = engine.create_group()?;
    /// let mut msg = Message::new();
    /// msg.header.channel_number = 42; // not open
    /// msg.body.extend_from_slice(b"kept");
    /// let rejected = group.post(msg).unwrap_err();
    /// assert_eq!(rejected.error, Error::InvalidChannelNumber);
    /// assert_eq!(rejected.message.body, b"kept"); // the message comes back
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn post(&self, mut msg: Message) -> Result<BinaryHeader, PostError> {
        let engine = self.engine.shared();
        let group = self.shared.id;
        let reject = |error, message| Err(PostError { error, message });
        if let Err(error) = self.validate(&msg) {
            return reject(error, msg);
        }
        // Claim the channel (and the room in the outgoing limits) before
        // touching the message, so a rejection gives it back unchanged.
        let limits = &engine.limits;
        let number = match msg.header.channel_number {
            0 => {
                if !limits.take_slot() {
                    return reject(Error::AllocationFailed, msg);
                }
                match self.reserve_number() {
                    Some(n) => n,
                    None => {
                        limits.free_slot();
                        return reject(Error::AllocationFailed, msg);
                    }
                }
            }
            n => {
                // Charged first: once `acquire` counted the post, the I/O
                // thread waits for it, so it can no longer be refused.
                let len = charge_len(&msg);
                if limits.charge(n, len).is_err() {
                    Counters::add(&engine.counters.send_limit_refusals, 1);
                    return reject(Error::PoolEmpty, msg);
                }
                match engine.directory.acquire(n, group) {
                    Ok(()) => n,
                    Err(error) => {
                        limits.release(n, len, 1);
                        return reject(engine.closed_by_shutdown(error), msg);
                    }
                }
            }
        };
        stamp(&mut msg);
        let header = BinaryHeader {
            channel_number: number,
            ..msg.header
        };
        if msg.header.channel_number == 0 {
            engine.directory.open(number, group);
            msg.header.channel_number = number;
            let addr = Address::parse(&msg);
            engine.push(if msg.header.proto.opcode == OpCode::WelcomeRequest {
                Command::Listen { group, msg, addr }
            } else {
                Command::Connect { group, msg, addr }
            });
        } else {
            // Messages already waiting for this group mean more posts will
            // follow (a server working through requests): leave this one to
            // the I/O thread, which writes them together.
            let busy = !self.shared.queue.is_empty();
            self.engine.send(group, msg, busy);
        }
        Ok(header)
    }

    /// Like [`post`](Self::post), but when the outgoing queue is full
    /// (`PoolEmpty`) waits up to `timeout` for room instead of refusing at
    /// once. It sleeps until the I/O thread writes or gives back queued
    /// messages (no polling); every other rejection returns at once.
    ///
    /// # Errors
    ///
    /// As [`post`](Self::post); `PoolEmpty` when there was still no room
    /// after `timeout`. The message comes back in the [`PostError`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tofu::{Engine, Error, Message, Options};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let group = engine.create_group()?;
    /// let mut msg = Message::new();
    /// msg.header.channel_number = 42; // not open: refused at once
    /// let rejected = group.post_timeout(msg, Duration::from_secs(5)).unwrap_err();
    /// assert_eq!(rejected.error, Error::InvalidChannelNumber);
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn post_timeout(&self, msg: Message, timeout: Duration) -> Result<BinaryHeader, PostError> {
        let deadline = Instant::now().checked_add(timeout);
        let limits = &self.engine.shared().limits;
        let mut parked: Option<Parked> = None;
        let mut msg = msg;
        loop {
            match self.post(msg) {
                Err(e) if e.error == Error::PoolEmpty => msg = e.message,
                done => return done,
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Err(PostError {
                    error: Error::PoolEmpty,
                    message: msg,
                });
            }
            // Registered before every retry, so a release between a refusal
            // and the sleep is never missed: the first refusal registers and
            // retries at once, later ones sleep first.
            match &parked {
                None => limits.register(parked.insert(Parked::new())),
                Some(p) => {
                    p.park(left);
                    limits.register(p);
                }
            }
        }
    }

    fn validate(&self, msg: &Message) -> Result<(), Error> {
        let engine = self.engine.shared();
        if engine.is_shut_down() {
            return Err(Error::ShutdownStarted);
        }
        let h = &msg.header;
        let op = h.proto.opcode;
        if op == OpCode::WelcomeResponse {
            return Err(Error::InvalidOpCode);
        }
        if op.role() == Role::Response && h.message_id == 0 {
            return Err(Error::InvalidMessageId);
        }
        if h.proto.more == More::More && !op.is_regular() {
            return Err(Error::InvalidMoreUsage);
        }
        if msg.text_headers.byte_len() > MAX_SECTION_LEN {
            return Err(Error::InvalidHeadersLen);
        }
        if msg.body.len() > MAX_SECTION_LEN {
            return Err(Error::InvalidBodyLen);
        }
        let opens = matches!(op, OpCode::WelcomeRequest | OpCode::HelloRequest);
        if h.channel_number == 0 || opens {
            if h.channel_number != 0 || !opens {
                return Err(Error::InvalidChannelNumber);
            }
            if msg.text_headers.is_empty() {
                return Err(Error::WrongAddress);
            }
            return Ok(());
        }
        if h.channel_number == ENGINE_CHANNEL {
            return Err(Error::InvalidChannelNumber);
        }
        // Ownership is checked (and the message counted) in `post` itself.
        Ok(())
    }

    /// A channel number from the I/O thread's reserve. When every number is in
    /// use it fails at once; in a burst that drains the
    /// reserve, waits (bounded) for the I/O thread to refill it.
    fn reserve_number(&self) -> Option<u16> {
        let engine = self.engine.shared();
        if let Some(n) = engine.directory.reserve.pop() {
            return Some(n);
        }
        // A burst drained the reserve: refill it here when the I/O thread
        // is not working (no hand-off, no wait).
        if let Some(n) = self.engine.refill_reserve() {
            return Some(n);
        }
        let deadline = Instant::now() + RESERVE_WAIT;
        // Every number in use: fail at once. Otherwise a burst drained the
        // reserve and the I/O thread refills it within a loop iteration.
        while Instant::now() < deadline
            && !engine.is_shut_down()
            && !engine.directory.is_exhausted()
        {
            engine.wake.wake_always();
            std::thread::yield_now();
            if let Some(n) = engine.directory.reserve.pop() {
                return Some(n);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        None
    }

    /// Waits for the next message (or engine report) for this group.
    ///
    /// `None` waits forever, `Some(Duration::ZERO)` polls. Returns `Ok(None)` when
    /// the timeout expires.
    ///
    /// While it waits with nothing queued, the calling thread runs the
    /// engine's event loop itself if no other thread does (SPEC §7): reads,
    /// writes and deliveries for every group happen on it, and the kernel
    /// wakes this thread, not the I/O thread, when its message arrives.
    /// [`Stats::waiter_polls`](crate::Stats) counts those polls.
    ///
    /// It mixes with [`receive_async`](Self::receive_async) on the same
    /// group (each message goes to one receiver); on an async executor use
    /// that instead, which never blocks the executor's thread. While an
    /// async receiver is pending anywhere in the engine, the I/O thread
    /// keeps the event loop (an async receiver cannot run it), so this
    /// thread usually waits on its queue instead of leading.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] once the engine shuts down, including for a
    /// thread blocked here at that moment.
    pub fn wait_receive(&self, timeout: Option<Duration>) -> Result<Option<Message>, Error> {
        let engine = self.engine.shared();
        if engine.is_shut_down() {
            self.wake_other_waiters();
            return Err(Error::ShutdownStarted);
        }
        let queue = &self.shared.queue;
        // `None`: forever (also for a timeout too long to represent).
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // `Options::receive_spin`: look without sleeping until then (never
        // past the deadline).
        let mut spin_until = engine.lead.spin_until(deadline);
        let mut looked_again = false;
        let got = loop {
            if let Some(d) = queue.try_pop() {
                break d;
            }
            match self
                .engine
                .lead_receive(&self.shared, deadline, spin_until)?
            {
                Led::Got(Some(d)) => break d,
                Led::Got(None) => return Ok(None),
                Led::Follow => {}
            }
            // Someone else polls and delivers to us. Counted first, then
            // one more look: a poller letting go from now on sees us and
            // polls on for us (or we see the slot free and lead after all).
            let _following = engine.lead.follow();
            if engine.lead.is_free() && !looked_again {
                looked_again = true;
                continue;
            }
            // Within the spin budget, watch the queue (and the slot: lead
            // if the poller lets go) instead of sleeping on it.
            if let Some(until) = spin_until {
                if let Some(d) = spin_on(queue, &engine.lead, until) {
                    break d;
                }
                if engine.lead.is_free() {
                    continue;
                }
                // Spent: from now on this call sleeps.
                spin_until = None;
            }
            // Briefly, then lead if the poller let go meanwhile (it may
            // have, just after we looked, to lease the slot out).
            let recheck = Instant::now() + FOLLOW_RECHECK;
            if let Some(d) = queue.pop_until(Some(deadline.map_or(recheck, |d| d.min(recheck)))) {
                break d;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            if engine.lead.is_free() {
                continue;
            }
            match queue.pop_until(deadline) {
                Some(d) => break d,
                None => return Ok(None),
            }
        };
        match got {
            Delivery::Message(msg) => Ok(Some(msg)),
            // The shutdown mark (it stays: every later receive gets it).
            Delivery::Shutdown => Err(Error::ShutdownStarted),
        }
    }

    /// The engine is shut down: marks this group's queue (if the I/O
    /// thread has not yet), which wakes every receiver blocked on it.
    fn wake_other_waiters(&self) {
        self.shared
            .push(Delivery::Shutdown, &self.engine.shared().wake);
    }

    /// Puts a `receiver_update` message into this group's receive queue (FIFO
    /// with everything else): `None` puts a Signal with `origin = Engine`,
    /// `Some(msg)` puts `msg` with `origin = Application`. Wakes a thread blocked
    /// in [`wait_receive`](Self::wait_receive) or passes it work.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] after shutdown.
    pub fn update_receiver(&self, msg: Option<Message>) -> Result<(), Error> {
        if self.engine.shared().is_shut_down() {
            return Err(Error::ShutdownStarted);
        }
        let msg = match msg {
            Some(mut m) => {
                m.header.status = Status::ReceiverUpdate as u8;
                m.header.proto.origin = Origin::Application;
                m
            }
            None => Message::report(ENGINE_CHANNEL, Status::ReceiverUpdate, 0),
        };
        self.shared
            .push(Delivery::Message(msg), &self.engine.shared().wake);
        Ok(())
    }

    /// The engine this group belongs to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Closes all the group's channels abortively, frees their queued messages,
    /// drains the receive queue into the pool, and returns once the I/O thread
    /// is done with the group. Dropping the group does the same.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] when the engine had already shut down (the
    /// group is released all the same).
    pub fn destroy(self) -> Result<(), Error> {
        self.release()
    }

    fn release(&self) -> Result<(), Error> {
        if self.released.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let engine = self.engine.shared();
        let result = if engine.is_shut_down() || engine.io_exited.load(Ordering::Acquire) {
            Err(Error::ShutdownStarted)
        } else {
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            engine.push(Command::DestroyGroup {
                group: self.shared.id,
                done: done_tx,
            });
            // Bounded waits: if the I/O thread exits meanwhile, stop waiting.
            while let Err(RecvTimeoutError::Timeout) =
                done_rx.recv_timeout(Duration::from_millis(50))
            {
                if engine.io_exited.load(Ordering::Acquire) {
                    break;
                }
            }
            Ok(())
        };
        self.shared.queue.clear();
        result
    }

    /// The next message (or engine report) for this group if one is there,
    /// without waiting: `Ok(None)` when there is none. The non-blocking
    /// sibling of [`wait_receive`](Self::wait_receive), the same as
    /// `wait_receive(Some(Duration::ZERO))`.
    ///
    /// With nothing queued and no other thread polling, the calling thread
    /// runs one non-blocking turn of the engine's event loop (reads, writes,
    /// deliveries) before it answers, so a loop of `try_receive` makes
    /// progress even when no other thread receives (the I/O thread also
    /// polls whenever no application thread does). It never sleeps.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] once the engine shuts down.
    ///
    /// # Examples
    ///
    /// ```
    /// use tofu::{Engine, Options, Status};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let group = engine.create_group()?;
    /// assert!(group.try_receive()?.is_none()); // nothing there: no wait
    /// group.update_receiver(None)?;
    /// let update = group.try_receive()?.expect("queued");
    /// assert_eq!(update.status(), Status::ReceiverUpdate);
    /// engine.shutdown();
    /// assert_eq!(group.try_receive().unwrap_err(), tofu::Error::ShutdownStarted);
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn try_receive(&self) -> Result<Option<Message>, Error> {
        self.wait_receive(Some(Duration::ZERO))
    }
}

impl Drop for ChannelGroup {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl fmt::Debug for ChannelGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelGroup")
            .field("id", &self.shared.id)
            .field("queued", &self.shared.queue.len())
            .finish()
    }
}

/// What `post` sets on every message it accepts: `origin = Application`,
/// `status = 0` and a `message_id` when 0 was posted.
fn stamp(msg: &mut Message) {
    msg.header.proto.origin = Origin::Application;
    msg.header.status = Status::Success as u8;
    if msg.header.message_id == 0 {
        msg.header.message_id = next_message_id();
    }
}

/// A follower's spin (`Options::receive_spin`): what its queue gets before
/// `until`, or `None` when the time is up or the poller became free (the
/// caller then leads).
fn spin_on(queue: &GroupQueue, lead: &Lead, until: Instant) -> Option<Delivery> {
    let _spinning = queue.spinning();
    loop {
        if let Some(d) = queue.try_pop() {
            return Some(d);
        }
        if lead.is_free() || Instant::now() >= until {
            return None;
        }
        std::hint::spin_loop();
    }
}
