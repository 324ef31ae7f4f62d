//! The batch API of [`ChannelGroup`]: [`post_batch`](ChannelGroup::post_batch),
//! [`post_batch_timeout`](ChannelGroup::post_batch_timeout) and
//! [`receive_many`](ChannelGroup::receive_many) — the same rules as `post`
//! and `wait_receive`, with one lock and one atomic operation per batch (per
//! run of one channel) instead of per message.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::{ChannelGroup, stamp};
use crate::engine::Counters;
use crate::engine::limits::{Parked, charge_len};
use crate::error::Error;
use crate::message::Message;

impl ChannelGroup {
    /// Posts every message of `msgs`, in order, as [`post`](Self::post)
    /// would one at a time, with less work per message: the messages of a
    /// run on one channel are charged to the outgoing limits and counted in
    /// the directory with one atomic operation each, and handed to the
    /// engine together — written by the calling thread in one vectored write
    /// when the socket is idle (SPEC §7), or queued with one lock and one
    /// wake-up of the I/O thread. Message ids are assigned as by `post`
    /// (set `message_id` before posting to know it).
    ///
    /// On success `msgs` is empty (its capacity is kept, for the next
    /// batch).
    ///
    /// # Errors
    ///
    /// The first rejection, as [`post`](Self::post) would give it: the
    /// messages before the rejected one were posted and are gone from
    /// `msgs`; the rejected message and every message after it stay in
    /// `msgs`, in order and untouched, and none of them was posted (so
    /// per-channel order holds when you retry). A refusal by the outgoing
    /// limits is [`Error::PoolEmpty`]; [`post_batch_timeout`](Self::post_batch_timeout)
    /// waits for room instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use tofu::{Engine, Error, Message, Options};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let group = engine.create_group()?;
    /// let mut batch: Vec<Message> = (0..3).map(|_| Message::new()).collect();
    /// for m in &mut batch {
    ///     m.header.channel_number = 42; // not open
    /// }
    /// assert_eq!(group.post_batch(&mut batch), Err(Error::InvalidChannelNumber));
    /// assert_eq!(batch.len(), 3); // nothing was posted, everything came back
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn post_batch(&self, msgs: &mut Vec<Message>) -> Result<(), Error> {
        // Accepted messages (from `sent` to `done`) go to the engine
        // together, whatever their channels: one lock, one write per
        // channel.
        let mut sent = 0;
        let mut done = 0;
        let result = loop {
            if done == msgs.len() {
                break Ok(());
            }
            if msgs[done].header.channel_number == 0 {
                // An open goes alone, after what was accepted before it.
                done -= self.send_accepted(msgs, sent..done);
                sent = done;
                match self.post(std::mem::take(&mut msgs[done])) {
                    Ok(_) => {
                        done += 1;
                        sent = done;
                        continue;
                    }
                    Err(e) => {
                        msgs[done] = e.message;
                        break Err(e.error);
                    }
                }
            }
            let (accepted, error) = self.accept_run(&mut msgs[done..]);
            done += accepted;
            if let Some(e) = error {
                break Err(e);
            }
        };
        done -= self.send_accepted(msgs, sent..done);
        // Opens posted alone left empty placeholders.
        msgs.drain(..done);
        result
    }

    /// Hands the accepted messages (counted and stamped) of `range` to the
    /// engine, taking them out of `msgs`; returns how many.
    fn send_accepted(&self, msgs: &mut Vec<Message>, range: Range<usize>) -> usize {
        let n = range.len();
        if n > 0 {
            self.engine.send_batch(self.shared.id, msgs.drain(range));
        }
        n
    }

    /// Like [`post_batch`](Self::post_batch), but when the outgoing queue is
    /// full waits up to `timeout` (in all) for room, as
    /// [`post_timeout`](Self::post_timeout) does, and goes on with the rest.
    ///
    /// # Errors
    ///
    /// As [`post_batch`](Self::post_batch); `PoolEmpty` when there was still
    /// no room after `timeout`. What was not posted stays in `msgs`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tofu::{Engine, Message, Options};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let group = engine.create_group()?;
    /// let mut nothing: Vec<Message> = Vec::new();
    /// group.post_batch_timeout(&mut nothing, Duration::from_secs(1))?;
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn post_batch_timeout(
        &self,
        msgs: &mut Vec<Message>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now().checked_add(timeout);
        let limits = &self.engine.shared().limits;
        let mut parked: Option<Parked> = None;
        loop {
            match self.post_batch(msgs) {
                Err(Error::PoolEmpty) => {}
                done => return done,
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Err(Error::PoolEmpty);
            }
            // As in `post_timeout`: registered before every retry.
            match &parked {
                None => limits.register(parked.insert(Parked::new())),
                Some(p) => {
                    p.park(left);
                    limits.register(p);
                }
            }
        }
    }

    /// Accepts the longest run at the front of `msgs` that can go together
    /// (valid messages on one open channel, not 0): charges it to the
    /// limits, counts it in the directory and stamps it. Returns how many
    /// were accepted and the error that ended the run early, if one did.
    fn accept_run(&self, msgs: &mut [Message]) -> (usize, Option<Error>) {
        /// Runs longer than this are accepted in several (the directory's
        /// in-flight count is 32 bits).
        const MAX_RUN: usize = 4096;
        if let Err(e) = self.validate(&msgs[0]) {
            return (0, Some(e));
        }
        let number = msgs[0].header.channel_number;
        let mut end = 1;
        let mut len = charge_len(&msgs[0]);
        let mut stop = None;
        while end < msgs.len().min(MAX_RUN) {
            let m = &msgs[end];
            if m.header.channel_number != number {
                break;
            }
            if let Err(e) = self.validate(m) {
                stop = Some(e);
                break;
            }
            len += charge_len(m);
            end += 1;
        }
        let engine = self.engine.shared();
        let limits = &engine.limits;
        if limits.charge_many(number, len, end).is_err() {
            // Not all of it fits: the prefix that does, one by one.
            let mut fits = 0;
            len = 0;
            for m in &msgs[..end] {
                let l = charge_len(m);
                if limits.charge(number, l).is_err() {
                    break;
                }
                len += l;
                fits += 1;
            }
            if fits < end {
                // (Room may have come back meanwhile: then all of it fit.)
                Counters::add(&engine.counters.send_limit_refusals, 1);
                stop = Some(Error::PoolEmpty);
                end = fits;
            }
            if end == 0 {
                return (0, stop);
            }
        }
        if let Err(e) = engine
            .directory
            .acquire_many(number, self.shared.id, end as u32)
        {
            limits.release(number, len, end);
            return (0, Some(engine.closed_by_shutdown(e)));
        }
        for m in &mut msgs[..end] {
            stamp(m);
        }
        (end, stop)
    }

    /// Waits as [`wait_receive`](Self::wait_receive) does for the first
    /// message, then takes every message already queued behind it, up to
    /// `max` in all, with one lock: appends them to `out` in order and
    /// returns how many (0 when the timeout expired, or `max` is 0). Fewer
    /// lock operations per message than `wait_receive` when messages come
    /// in bursts; `out`'s capacity is reused from call to call.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownStarted`] once the engine shuts down, as
    /// [`wait_receive`](Self::wait_receive) (messages queued before the
    /// shutdown are returned first).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tofu::{Engine, Options};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let group = engine.create_group()?;
    /// for _ in 0..3 {
    ///     group.update_receiver(None)?;
    /// }
    /// let mut got = Vec::new();
    /// assert_eq!(group.receive_many(&mut got, 64, Some(Duration::ZERO))?, 3);
    /// assert_eq!(got.len(), 3);
    /// assert_eq!(group.receive_many(&mut got, 64, Some(Duration::ZERO))?, 0);
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn receive_many(
        &self,
        out: &mut Vec<Message>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, Error> {
        if max == 0 {
            return Ok(0);
        }
        let Some(first) = self.wait_receive(timeout)? else {
            return Ok(0);
        };
        out.push(first);
        Ok(1 + self.shared.queue.take_many(out, max - 1))
    }
}
