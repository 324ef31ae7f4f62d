//! Reading and writing: the system calls the channel cores ask for, and the
//! work lists that carry a channel over to the next loop iteration.
//!
//! Writes: every queued frame of a channel goes out in vectored writes; small
//! frames are copied into one slice, large bodies go as slices of their own
//! (not copied), and a write of one slice is a plain `write`. Reads go into one engine-wide buffer (`read_chunk` bytes per
//! system call); the core decodes every complete frame straight into a pool
//! message. Each channel reads at most
//! [`READ_BUDGET`] times before
//! the others get a turn.

use std::io::{self, IoSliceMut};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tracing::debug;

/// What a read into a large body also reads into the read buffer: the next
/// frame's header and text headers, with room for a few small frames, but
/// little of a large body (which then goes in place too).
const DIRECT_TAIL: usize = 256;

use super::super::core::backpressure::{self, Arm, READ_BUDGET};
use super::super::core::send::{IoVec, Released};
use super::super::core::{End, Flow};
use super::super::slab::Key;
use super::{Counters, Reactor, stream_of};
use crate::error::Status;
use crate::message::Message;
use crate::sys;

/// Which work list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum List {
    /// New messages to flush.
    Dirty = 1,
    /// Read budget spent with data left: read again next iteration.
    Again = 2,
    /// Waiting for pool messages: read once the pool refills.
    Starved = 4,
    /// Waiting for room in the stash budget.
    OverBudget = 8,
}

/// The work lists a channel is on (so it is on each at most once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Listed(u8);

impl Listed {
    pub(super) fn contains(self, list: List) -> bool {
        self.0 & list as u8 != 0
    }
}

/// Channels with work left for the next loop iteration. A channel is on a
/// list at most once (its [`Listed`] says so), so a list is bounded by the
/// number of open channels.
pub(super) struct WorkList {
    list: List,
    keys: Vec<Key>,
}

impl WorkList {
    pub(super) fn new(list: List) -> WorkList {
        WorkList {
            list,
            keys: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, key: Key, listed: &mut Listed) {
        if !listed.contains(self.list) {
            listed.0 |= self.list as u8;
            self.keys.push(key);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Where a read loop stopped.
enum Stop {
    /// Nothing more to read now (would block, budget spent, or not readable).
    Done,
    Starved,
    /// Waiting for room in the stash budget.
    OverBudget,
    Closed,
}

impl Reactor {
    /// Runs `f` on every channel of a work list (taken off the list first),
    /// then hands the list's buffer back (unless `f` queued new work
    /// meanwhile), so that steady-state work does not allocate.
    fn drain(&mut self, which: fn(&mut Reactor) -> &mut WorkList, f: fn(&mut Reactor, Key)) {
        let list = which(self).list;
        let mut keys = std::mem::take(&mut which(self).keys);
        for &key in &keys {
            if let Some(s) = self.stream_mut(key) {
                s.listed.0 &= !(list as u8);
                let span = self.channel_span(key);
                let _entered = span.enter();
                f(self, key);
            }
        }
        keys.clear();
        let slot = &mut which(self).keys;
        if slot.is_empty() {
            *slot = keys;
        }
    }

    // ----- writing -----------------------------------------------------------

    /// [`flush_dirty`](Self::flush_dirty) for a posting thread: a channel
    /// whose socket was full when last written may have drained since (its
    /// reader goes on reading), so it is tried again — one system call at
    /// most, which on `WouldBlock` leaves it to the readiness event as
    /// before. Without this a stream into a small socket buffer (UDS: 208
    /// KiB) kept handing its writes to the I/O thread.
    pub(super) fn flush_dirty_eagerly(&mut self) {
        for i in 0..self.dirty.keys.len() {
            let key = self.dirty.keys[i];
            if let Some(s) = self.stream_mut(key) {
                if s.sock.is_some() && s.core.wants_write() {
                    s.writable = true;
                }
            }
        }
        self.flush_dirty();
    }

    pub(super) fn flush_dirty(&mut self) {
        self.drain(
            |r| &mut r.dirty,
            |r, key| {
                let _ = r.flush(key);
            },
        );
    }

    /// Writes queued frames until the queue is empty or the socket is full;
    /// `Break` when the channel closed.
    pub(super) fn flush(&mut self, key: Key) -> ControlFlow<()> {
        let mut sent_msgs = 0u64;
        let mut sent_bytes = 0u64;
        let mut writes = 0u64;
        let mut number = 0;
        let mut released = Released::default();
        // Written messages, back to the pool together after the writes.
        let mut spent = std::mem::take(&mut self.spent);
        let result = loop {
            let Some(s) = self.stream_mut(key) else {
                self.shared.pool.recycle_many(&mut spent);
                self.spent = spent;
                return ControlFlow::Break(());
            };
            if !s.writable || !s.core.wants_write() {
                break Ok(());
            }
            let Some(sock) = s.sock.as_mut() else {
                break Ok(());
            };
            let mut iov = IoVec::new();
            s.core.poll_transmit(&mut iov);
            writes += 1;
            let iov_len: usize = iov.as_slices().iter().map(|b| b.len()).sum();
            let written = sock.write_vectored(iov.as_slices());
            match written {
                Ok(0) => break Err(s.core.handle_write_failed(End::Failed)),
                Ok(n) => {
                    // A short write filled the socket: the next would only
                    // say `WouldBlock`, room brings a new event.
                    if sys::SHORT_IO_DRAINS && n < iov_len {
                        s.writable = false;
                    }
                    sent_bytes += n as u64;
                    sent_msgs += s.core.handle_written(n, &mut spent) as u64;
                    let r = s.core.take_released();
                    released.bytes += r.bytes;
                    released.messages += r.messages;
                    number = s.core.number();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.writable = false;
                    break Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("write failed: {e}");
                    break Err(s.core.handle_write_failed(end_of(&e)));
                }
            }
        };
        self.shared.pool.recycle_many(&mut spent);
        self.spent = spent;
        self.tally.messages_sent += sent_msgs;
        self.tally.bytes_sent += sent_bytes;
        self.tally.write_calls += writes;
        self.release(number, released);
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(close) => {
                self.close(key, close);
                ControlFlow::Break(())
            }
        }
    }

    // ----- reading -----------------------------------------------------------

    pub(super) fn continue_reads(&mut self) {
        self.drain(|r| &mut r.again, Reactor::read);
    }

    pub(super) fn resume_starved(&mut self) {
        if self.starved.is_empty() {
            return;
        }
        let pool = &self.shared.pool;
        if !self
            .refill
            .resume_now(pool.len(), pool.size(), Instant::now())
        {
            return;
        }
        // In order, and only while there is something to read into: once
        // the pool is dry again the rest keep their place (ahead of those
        // that starve now) without a system call each. (With 1,000 peers
        // and 16 messages, trying every one cost ~60 `peek`s per message.)
        let mut keys = std::mem::take(&mut self.starved.keys);
        let mut served = 0;
        for &key in &keys {
            let free = self.shared.pool.len();
            if let Some(s) = self.stream_mut(key) {
                if !backpressure::may_read(s.core.has_message(), free) {
                    break;
                }
                s.listed.0 &= !(List::Starved as u8);
                self.read(key);
            }
            served += 1;
        }
        keys.drain(..served);
        keys.append(&mut self.starved.keys);
        self.starved.keys = keys;
    }

    /// Channels that waited for stash budget read again once there is room.
    pub(super) fn resume_over_budget(&mut self) {
        if !self.over_budget.is_empty() && self.budget.has_room() {
            self.drain(|r| &mut r.over_budget, Reactor::read);
        }
    }

    /// How long to sleep while channels wait for pool messages (`None` = until
    /// an event), with the pool's notification armed to match. Called after
    /// `prepare_sleep`, so a message returned from now on wakes us.
    pub(super) fn refill_timeout(&mut self) -> Option<Duration> {
        if self.starved.is_empty() {
            return None;
        }
        let pool = &self.shared.pool;
        let now = Instant::now();
        match self.refill.arm(pool.size(), now) {
            Arm::Any => pool.arm(),
            Arm::At(mark) => pool.arm_at(mark),
        }
        self.refill.timeout(pool.len(), pool.size(), now)
    }

    /// Decodes the backlog, then reads the socket until it would block, the
    /// pool runs dry, or the read budget is spent.
    pub(super) fn read(&mut self, key: Key) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let stop = self.read_into(key, &mut buf);
        self.read_buf = buf;
        if let Stop::Done = stop {
            // Read to the end without running dry: the pool_empty episode is over.
            if let Some(group) = self.slab.get(key).map(|c| c.group) {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.pool_empty_reported = false;
                }
            }
        }
    }

    fn read_into(&mut self, key: Key, buf: &mut Vec<u8>) -> Stop {
        let Some(s) = stream_of(&mut self.slab, key) else {
            return Stop::Closed;
        };
        if s.listed.contains(List::Starved)
            || s.listed.contains(List::OverBudget)
            || s.sock.is_none()
        {
            return Stop::Closed;
        }
        if s.core.has_backlog() {
            let flow = s.core.handle_resume(&self.shared.pool, &mut self.budget);
            if let Some(stop) = self.after_decode(key, flow) {
                return stop;
            }
        }
        let mut received = 0u64;
        let mut in_place = 0u64;
        let mut reads = 0u64;
        let mut empty = 0u64;
        let mut budget = READ_BUDGET;
        let stop = loop {
            let Some(s) = stream_of(&mut self.slab, key) else {
                break Stop::Closed;
            };
            if !s.readable {
                break Stop::Done;
            }
            if budget == 0 {
                self.again.add(key, &mut s.listed);
                break Stop::Done;
            }
            budget -= 1;
            let pool = &self.shared.pool;
            if !backpressure::may_read(s.core.has_message(), pool.len()) && pool.grow() == 0 {
                // Leave the data in the kernel — but report pool_empty only if
                // data really waits.
                pool.arm();
                if !backpressure::may_read(s.core.has_message(), pool.len()) {
                    if sys::SHORT_IO_DRAINS && !s.read_closed {
                        // The socket is readable by an edge event not yet
                        // drained (a short read would have cleared it), and
                        // not at its end: data waits, no `peek` needed.
                        self.starve(key);
                        break Stop::Starved;
                    }
                    let sock = s.sock.as_ref().expect("connected stream");
                    match sock.peek() {
                        Ok(0) => break self.end(key, End::Eof),
                        Ok(_) => {
                            self.starve(key);
                            break Stop::Starved;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            s.readable = false;
                            empty += 1;
                            break Stop::Done;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            debug!(channel = s.core.number(), "read failed: {e}");
                            break self.end(key, end_of(&e));
                        }
                    }
                }
            }
            // A large body being filled: the socket writes its missing bytes
            // straight into the message (no copy), and the next frame's
            // header into the read buffer (`DIRECT_TAIL`), so that a large
            // next body goes in place too. Reading into a message never
            // stashes; the tail could, so an engine over its stash budget
            // reads no tail.
            let room = self.budget.has_room();
            let (got, want, direct) = match s.core.body_space() {
                Some(space) => {
                    let direct = space.len();
                    let tail = if room { DIRECT_TAIL.min(buf.len()) } else { 0 };
                    let sock = s.sock.as_mut().expect("connected stream");
                    let got = sock.read_vectored(&mut [
                        IoSliceMut::new(space),
                        IoSliceMut::new(&mut buf[..tail]),
                    ]);
                    (got, direct + tail, direct)
                }
                None => {
                    let mut want = buf.len();
                    if !room
                        && backpressure::read_may_stash(
                            s.core.has_message(),
                            s.core.has_backlog(),
                            pool.len(),
                            pool.capacity(),
                        )
                    {
                        // Over budget: read only what completes frames without
                        // stashing, as far as the kernel shows it (TCP can peek).
                        let sock = s.sock.as_ref().expect("connected stream");
                        want = match sock.peek_into(&mut buf[..]) {
                            Ok(0) => buf.len(), // end of stream: read it
                            Ok(k) => match s.core.rest_of_held_frame() {
                                Some(rest) if rest <= k => rest,
                                Some(_) => 0,
                                None => backpressure::complete_frames_len(&buf[..k]),
                            },
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                s.readable = false;
                                empty += 1;
                                break Stop::Done;
                            }
                            Err(_) => 0, // cannot peek here (UDS): wait for room
                        };
                        if want == 0 {
                            self.over_budget.add(key, &mut s.listed);
                            break Stop::OverBudget;
                        }
                    }
                    let sock = s.sock.as_mut().expect("connected stream");
                    (sock.read(&mut buf[..want]), want, 0)
                }
            };
            match got {
                Ok(0) => break self.end(key, End::Eof),
                Ok(n) => {
                    received += n as u64;
                    reads += 1;
                    // A short read emptied the socket: the next read would
                    // only say `WouldBlock`, new data brings a new event.
                    let drained = sys::SHORT_IO_DRAINS && n < want && !s.read_closed;
                    if drained {
                        s.readable = false;
                    }
                    let into_body = n.min(direct);
                    in_place += into_body as u64;
                    let flow = s.core.handle_read(
                        into_body,
                        buf,
                        n - into_body,
                        &self.shared.pool,
                        &mut self.budget,
                        self.now,
                    );
                    if let Some(stop) = self.after_decode(key, flow) {
                        break stop;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.readable = false;
                    empty += 1;
                    break Stop::Done;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(channel = s.core.number(), "read failed: {e}");
                    break self.end(key, end_of(&e));
                }
            }
        };
        self.tally.bytes_received += received;
        self.tally.read_calls += reads;
        Counters::add(&self.shared.counters.bytes_read_in_place, in_place);
        Counters::add(&self.shared.counters.empty_reads, empty);
        stop
    }

    /// Delivers what the core decoded and carries out its decision; `None`
    /// means "read on".
    fn after_decode(&mut self, key: Key, flow: Flow) -> Option<Stop> {
        self.deliver_from(key);
        match flow {
            Flow::Continue => None,
            Flow::Close(close) => {
                self.close_counted(key, close);
                Some(Stop::Closed)
            }
            Flow::Starved => {
                // The core armed the pool's notification and found it still
                // empty: wait for the refill.
                self.starve(key);
                Some(Stop::Starved)
            }
        }
    }

    /// The stream ended or failed while reading.
    fn end(&mut self, key: Key, end: End) -> Stop {
        if let Some(s) = self.stream_mut(key) {
            if end == End::Eof {
                debug!(channel = s.core.number(), "peer closed");
            }
            let close = s.core.handle_end(end);
            self.close_counted(key, close);
        }
        Stop::Closed
    }

    /// Reading stops until the pool refills; the group hears of it once per
    /// episode.
    fn starve(&mut self, key: Key) {
        let Some(ch) = self.slab.get_mut(key) else {
            return;
        };
        let (number, group) = (ch.number, ch.group);
        let super::State::Stream(s) = &mut ch.state else {
            return;
        };
        self.starved.add(key, &mut s.listed);
        let report = match self.groups.get_mut(&group) {
            Some(g) if !g.pool_empty_reported => {
                g.pool_empty_reported = true;
                true
            }
            _ => false,
        };
        if report {
            Counters::add(&self.shared.counters.pool_empty_events, 1);
            debug!(channel = number, "pool empty: reading paused");
            self.deliver(group, Message::report(number, Status::PoolEmpty, 0));
        }
    }
}

/// What an I/O error means for the channel.
pub(super) fn end_of(e: &io::Error) -> End {
    if sys::is_disconnect(e) {
        End::Disconnect
    } else {
        End::Failed
    }
}
