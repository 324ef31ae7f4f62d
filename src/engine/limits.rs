//! Outgoing limits and the open-channel cap (SPEC §5.7, §5.7a): what `post`
//! checks before it hands a message to the I/O thread.
//!
//! * **Queued bytes.** Every message posted on an open channel is *charged*
//!   its frame length (16 + text headers + body) to its channel and to the
//!   engine, and *released* exactly once, by the I/O thread, when it leaves
//!   the engine: completely written, given back to the application, or freed
//!   by a silent close. A post that would take a channel or the engine over
//!   its limit is refused; the message comes back untouched.
//! * **Open channels.** A *slot* is taken by `post` of a WelcomeRequest or
//!   HelloRequest and by the I/O thread for each accepted connection, and
//!   given back when the channel closes. At the cap `post` fails at once and
//!   listeners stop accepting (connections wait in the kernel's backlog)
//!   until a channel closes.
//! * **Waiting for room.** [`ChannelGroup::post_timeout`](crate::ChannelGroup)
//!   registers a [`Waiter`] and parks; the I/O thread unparks every
//!   registered waiter after it released bytes. Each waiter is registered at
//!   most once at a time, so the list is bounded by the threads blocked in
//!   `post_timeout`.
//!
//! Counters are atomics touched with one `fetch_add` per post and one
//! `fetch_sub` per write call or close; nothing here takes a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};
use std::time::Duration;

use crossbeam_queue::SegQueue;
use crossbeam_utils::sync::{Parker, Unparker};

use crate::message::Message;
use crate::wire::HEADER_LEN;

/// The longest frame: a limit is never below it, so every valid message fits
/// in an empty queue.
pub(crate) const MAX_FRAME_LEN: usize = HEADER_LEN + 2 * 65535;

/// Bytes a message is charged: its frame length.
pub(crate) fn charge_len(msg: &Message) -> usize {
    HEADER_LEN + msg.text_headers.byte_len() + msg.body.len()
}

/// Which limit refused a post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    Channel,
    Engine,
}

/// A thread blocked in `post_timeout`.
pub(crate) struct Waiter {
    unparker: Unparker,
    registered: AtomicBool,
}

/// The parking half of a [`Waiter`], owned by the waiting thread.
pub(crate) struct Parked {
    parker: Parker,
    waiter: Arc<Waiter>,
}

impl Parked {
    pub(crate) fn new() -> Parked {
        let parker = Parker::new();
        let waiter = Arc::new(Waiter {
            unparker: parker.unparker().clone(),
            registered: AtomicBool::new(false),
        });
        Parked { parker, waiter }
    }

    /// Sleeps until woken (or spuriously, or after `timeout`).
    pub(crate) fn park(&self, timeout: Duration) {
        self.parker.park_timeout(timeout);
    }
}

pub(crate) struct Limits {
    channel_limit: usize,
    engine_limit: usize,
    max_channels: usize,
    /// Bytes queued per channel number.
    per_channel: Box<[AtomicU32]>,
    bytes: AtomicUsize,
    messages: AtomicUsize,
    slots: AtomicUsize,
    waiters: SegQueue<Arc<Waiter>>,
}

impl Limits {
    /// Limits of `channel_limit` and `engine_limit` queued bytes (each at
    /// least [`MAX_FRAME_LEN`]; the channel one fits a `u32` with a frame to
    /// spare) and at most `max_channels` open channels.
    pub(crate) fn new(channel_limit: usize, engine_limit: usize, max_channels: usize) -> Limits {
        let most = (u32::MAX as usize) - MAX_FRAME_LEN;
        let channel_limit = channel_limit.clamp(MAX_FRAME_LEN, most);
        Limits {
            channel_limit,
            engine_limit: engine_limit.max(MAX_FRAME_LEN),
            max_channels,
            per_channel: (0..=u16::MAX as usize).map(|_| AtomicU32::new(0)).collect(),
            bytes: AtomicUsize::new(0),
            messages: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            waiters: SegQueue::new(),
        }
    }

    /// Charges one message of `len` bytes to `number` and to the engine, or
    /// refuses it (charging nothing) when either would go over its limit.
    pub(crate) fn charge(&self, number: u16, len: usize) -> Result<(), Full> {
        self.charge_many(number, len, 1)
    }

    /// Charges `messages` messages of `len` bytes in all to `number` and to
    /// the engine with one atomic add each (a batch), or refuses them all
    /// (charging nothing) when either would go over its limit.
    pub(crate) fn charge_many(&self, number: u16, len: usize, messages: usize) -> Result<(), Full> {
        if len > self.channel_limit {
            // Refused without touching the counter (which is 32 bits wide:
            // a batch could be longer than that).
            return Err(Full::Channel);
        }
        let chan = &self.per_channel[number as usize];
        // `len` is at most the channel limit, far below u32::MAX.
        let prev = chan.fetch_add(len as u32, Ordering::AcqRel) as usize;
        if prev + len > self.channel_limit {
            chan.fetch_sub(len as u32, Ordering::AcqRel);
            return Err(Full::Channel);
        }
        let prev = self.bytes.fetch_add(len, Ordering::AcqRel);
        if prev + len > self.engine_limit {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            chan.fetch_sub(len as u32, Ordering::AcqRel);
            return Err(Full::Engine);
        }
        self.messages.fetch_add(messages, Ordering::Relaxed);
        Ok(())
    }

    /// `messages` charged messages of `bytes` bytes in all left the engine
    /// from channel `number` (I/O thread; or `post`, undoing its charge).
    pub(crate) fn release(&self, number: u16, bytes: usize, messages: usize) {
        if messages == 0 {
            return;
        }
        let prev = self.per_channel[number as usize].fetch_sub(bytes as u32, Ordering::AcqRel);
        debug_assert!(prev as usize >= bytes, "released more than was charged");
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.messages.fetch_sub(messages, Ordering::Relaxed);
    }

    /// Bytes queued on `number`.
    #[cfg(test)]
    pub(crate) fn queued_on(&self, number: u16) -> usize {
        self.per_channel[number as usize].load(Ordering::Acquire) as usize
    }

    /// Bytes and messages queued in the engine.
    pub(crate) fn queued(&self) -> (usize, usize) {
        (
            self.bytes.load(Ordering::Acquire),
            self.messages.load(Ordering::Relaxed),
        )
    }

    /// Takes a slot for a new channel; `false` at the cap.
    pub(crate) fn take_slot(&self) -> bool {
        let prev = self.slots.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_channels {
            self.slots.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// A channel that held a slot closed (or never opened).
    pub(crate) fn free_slot(&self) {
        let prev = self.slots.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(prev > 0, "freed a slot nobody held");
    }

    /// `post_timeout` is about to park: after this, the next release wakes
    /// it. The caller must try again before parking (a release may have
    /// happened just before).
    pub(crate) fn register(&self, parked: &Parked) {
        if !parked.waiter.registered.swap(true, Ordering::AcqRel) {
            self.waiters.push(parked.waiter.clone());
        }
        // Pairs with the fence in `wake_waiters`: either this thread's retry
        // sees the released bytes, or the I/O thread sees the registration.
        fence(Ordering::SeqCst);
    }

    /// Wakes every registered waiter (after a release, or at shutdown).
    pub(crate) fn wake_waiters(&self) {
        fence(Ordering::SeqCst);
        while let Some(w) = self.waiters.pop() {
            w.registered.store(false, Ordering::Release);
            w.unparker.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_over_its_limit_refuses_and_charges_nothing() {
        let l = Limits::new(MAX_FRAME_LEN, usize::MAX, 10);
        l.charge(3, 100_000).unwrap();
        assert_eq!(l.charge(3, 40_000), Err(Full::Channel));
        assert_eq!(l.queued_on(3), 100_000);
        assert_eq!(l.queued(), (100_000, 1));
        // Other channels are not affected.
        l.charge(4, 100_000).unwrap();
        l.charge(3, MAX_FRAME_LEN - 100_000).unwrap();
        l.release(3, 100_000, 1);
        l.charge(3, 40_000).unwrap();
        assert_eq!(l.queued_on(3), MAX_FRAME_LEN - 100_000 + 40_000);
    }

    #[test]
    fn the_engine_limit_holds_across_channels() {
        let l = Limits::new(usize::MAX, 2 * MAX_FRAME_LEN, 10);
        l.charge(1, MAX_FRAME_LEN).unwrap();
        l.charge(2, MAX_FRAME_LEN).unwrap();
        assert_eq!(l.charge(3, 16), Err(Full::Engine));
        assert_eq!(l.queued_on(3), 0, "the channel charge is undone too");
        l.release(1, MAX_FRAME_LEN, 1);
        l.charge(3, 16).unwrap();
        assert_eq!(l.queued(), (MAX_FRAME_LEN + 16, 2));
    }

    #[test]
    fn limits_are_never_below_one_frame() {
        let l = Limits::new(0, 0, 1);
        l.charge(1, MAX_FRAME_LEN).unwrap();
        assert_eq!(l.charge(1, HEADER_LEN), Err(Full::Channel));
        assert_eq!(l.charge(2, HEADER_LEN), Err(Full::Engine));
    }

    #[test]
    fn slots_stop_at_the_cap() {
        let l = Limits::new(0, 0, 2);
        assert!(l.take_slot());
        assert!(l.take_slot());
        assert!(!l.take_slot());
        l.free_slot();
        assert!(l.take_slot());
    }

    #[test]
    fn a_release_wakes_a_registered_waiter_once() {
        let l = Limits::new(0, 0, 1);
        let parked = Parked::new();
        l.register(&parked);
        l.register(&parked);
        assert_eq!(l.waiters.len(), 1, "registered once");
        l.wake_waiters();
        assert!(l.waiters.is_empty());
        // The unpark left a token: this returns at once.
        parked.park(Duration::from_secs(60));
        l.register(&parked);
        assert_eq!(l.waiters.len(), 1, "registers again after a wake");
    }
}
